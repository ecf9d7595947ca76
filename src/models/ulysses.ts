/**
 * DeepSpeed-Ulysses sequence parallelism for the Llama graph: N ranks each hold S/N tokens of
 * every sequence; per layer an all-to-all hands each rank all S tokens of H/N query heads (and
 * Hkv/N kv heads) for attention and a second one hands the tokens back; the MLP, the LM head and
 * the loss stay local (chunked(M) in MST modes). The graph is `llamaLoss(c, B, S, { ranks: N })`,
 * one graph for every rank: a rank's place in the sequence is the bound input `positionOffset`.
 * This module cuts a batch into each rank's feeds and plans one rank of N.
 */
import type { Feed } from "../core/executor.js"
import { BadConfig } from "../core/errors.js"
import type { Tensor } from "../core/graph.js"
import type { LlamaConfig } from "./config.js"
import type { LlamaGraph } from "./llama.js"
import { largestFitting, type PlanTarget, planStep, type StepPlan } from "./planner.js"
import type { StepOptions } from "./step.js"

/** One global batch: [B, S] tokens and shifted targets (−100 = ignored), row-major. */
export interface GlobalBatch {
  readonly tokens: Int32Array
  readonly targets: Int32Array
  readonly B: number
  readonly S: number
}

/** The number of non-ignored targets of the whole batch: every rank's loss divides by it. */
export const globalCount = (targets: Int32Array): number => targets.reduce((n, t) => (t === -100 ? n : n + 1), 0)

/**
 * What rank `rank` of `ranks` is fed from the global batch: tokens and targets rank·S/N …
 * (rank+1)·S/N − 1 of every row, its first position, and the global target count.
 */
export function rankFeeds(g: LlamaGraph, batch: GlobalBatch, rank: number, ranks: number): Map<Tensor, Feed> {
  const { B, S } = batch
  const local = S / ranks
  if (g.positionOffset === undefined || g.tokens.shape[1] !== local || g.tokens.shape[0] !== B)
    throw new BadConfig({
      field: "ranks",
      message: `rankFeeds: the graph holds [${g.tokens.shape}] tokens per rank but a [${B}, ${S}] batch over ${ranks} ranks gives [${B}, ${local}]; build it with llamaLoss(c, ${B}, ${S}, { ranks: ${ranks} })`,
    })
  if (!(Number.isInteger(rank) && rank >= 0 && rank < ranks))
    throw new BadConfig({ field: "rank", message: `rank ${rank} is not one of 0…${ranks - 1}` })
  const cut = (a: Int32Array) =>
    Int32Array.from({ length: B * local }, (_, k) => a[Math.floor(k / local) * S + rank * local + (k % local)]!)
  return new Map<Tensor, Feed>([
    [g.tokens, cut(batch.tokens)],
    [g.targets, cut(batch.targets)],
    [g.positionOffset, Float32Array.of(rank * local)],
    [g.count, Float32Array.of(Math.max(1, globalCount(batch.targets)))],
  ])
}

/**
 * The plan of one rank's training step on `ranks` ranks: its graphs are every rank's, so this is
 * each rank's memory (weights, gradients and AdamW state replicated, activations for S/N tokens).
 */
export const planRankStep = (
  c: LlamaConfig,
  B: number,
  S: number,
  ranks: number,
  opts: StepOptions,
  backend?: PlanTarget,
): StepPlan => planStep(c, B, S, { ...opts, ranks }, backend)

/**
 * The longest S (a multiple of `step`, itself a multiple of N) whose step fits `limit` bytes
 * (held) on each of N ranks, searched up to `cap`; planned only.
 */
export function longestSequenceOnRanks(
  c: LlamaConfig,
  B: number,
  ranks: number,
  opts: StepOptions,
  limit: number,
  { step = 1024 * ranks, cap = 2 ** 24, backend }: { step?: number; cap?: number; backend?: PlanTarget } = {},
): { S: number; plan?: StepPlan; capped: boolean } {
  if (step % ranks !== 0)
    throw new BadConfig({
      field: "step",
      message: `the search step ${step} must be a multiple of ${ranks} ranks (each holds S/N tokens); pass a multiple of ${ranks}`,
    })
  const planAt = (S: number) => planRankStep(c, B, S, ranks, { ...opts, allowBeyondMaxPosition: true }, backend)
  const { n, capped } = largestFitting((S) => planAt(S).held <= limit, step, cap)
  return { S: n, capped, ...(n > 0 ? { plan: planAt(n) } : {}) }
}
