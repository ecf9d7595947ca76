/**
 * One training step as graphs: the loss and its gradients (with or without an existing gradient
 * to add into, for gradient accumulation), and the AdamW update. Built once per shape and mode;
 * the trainer and the memory planner both run exactly these graphs.
 */
import { valueAndGrad } from "../core/autodiff.js"
import type { Tensor } from "../core/graph.js"
import type { OffloadOptions } from "../core/offload.js"
import { input, withPhase } from "../core/graph.js"
import type { MemoryKind } from "../core/memory.js"
import * as o from "../core/ops.js"
import type { LlamaConfig } from "./config.js"
import { checkpoints, llamaLoss, type LlamaGraph, type Mode, type ModelOptions, parameterShapes } from "./llama.js"
import {
  type AdamWGraph,
  adamwGraph,
  type AdamWOptions,
  defaultAdamW,
  gradientSquares,
  type Precision,
  precisions,
} from "./optimizer.js"

export interface GradientGraph {
  readonly model: LlamaGraph
  readonly names: readonly string[]
  /** Existing gradients this pass adds into (in place); absent on the first micro-batch. */
  readonly previous?: Record<string, Tensor>
  /** Loss first, then one gradient per name, then each gradient's Σ g² (the norm's shares). */
  readonly outputs: readonly Tensor[]
  readonly gradients: readonly Tensor[]
  readonly squares: readonly Tensor[]
  readonly inPlace: ReadonlyMap<Tensor, Tensor>
}

/** The graphs of one training step: the loss and its gradients (per micro-batch), and the AdamW update. */
export interface StepGraphs {
  readonly first: GradientGraph
  /** For micro-batches 2…A of gradient accumulation (built only when asked for). */
  readonly accumulate?: GradientGraph
  readonly adamw: AdamWGraph
}

function gradientGraph(c: LlamaConfig, B: number, S: number, opts: ModelOptions, accumulate: boolean): GradientGraph {
  const model = llamaLoss(c, B, S, opts)
  const names = Object.keys(model.params)
  // Each gradient's Σ g², for the norm AdamW clips by, as the fused adamw's step would take it.
  const square = (g: Tensor) => withPhase("backward", () => gradientSquares(g, opts.fused?.includes("adamw") ?? false))
  // On one rank without accumulation a gradient is final when the backward makes it: its Σ g² is
  // taken right then, while it is on the device, before an offloaded gradient leaves for the host
  // (so the norm never reads it back over the bus). Otherwise, of the final sums, at the end.
  const early: Record<string, Tensor> = {}
  const atOnce = opts.ranks === undefined && !accumulate
  const local = valueAndGrad(model.loss, model.params, atOnce ? (n, g) => void (early[n] = square(g)) : undefined)
  // Sharded over ranks, each rank's loss is its share: the loss and every weight's gradient are
  // their sums over the ranks, so every rank holds the full values.
  const sum = (t: Tensor) => (opts.ranks === undefined ? t : o.allReduce(t))
  const value = sum(local.value)
  const grads = Object.fromEntries(names.map((n) => [n, sum(local.grads[n]!)]))
  if (!accumulate) {
    const gradients = names.map((n) => grads[n]!)
    const squares = names.map((n) => early[n] ?? square(grads[n]!))
    return { model, names, outputs: [value, ...gradients, ...squares], gradients, squares, inPlace: new Map() }
  }
  const previous = Object.fromEntries(
    names.map((n) => [n, input(`grad.${n}`, model.params[n]!.shape, model.params[n]!.dtype)]),
  )
  const gradients = names.map((n) => o.add(previous[n]!, grads[n]!))
  const squares = gradients.map(square)
  const inPlace = new Map(gradients.map((g, i) => [g, previous[names[i]!]!] as const))
  return { model, names, previous, outputs: [value, ...gradients, ...squares], gradients, squares, inPlace }
}

/**
 * What a step keeps in the backend's host tier instead of the device:
 * - checkpoints: the values saved for the backward (the layer checkpoints in checkpoint modes),
 *   from their last forward use until shortly before their backward;
 * - optimizer: the AdamW moments and master weights for good, and each weight gradient from the
 *   moment it is computed; AdamW then runs on the device over them in place.
 */
export interface Offload {
  readonly checkpoints?: boolean
  /** With `checkpoints`: offload at most this many bytes of them, the longest-waiting first (default: all). */
  readonly checkpointBytes?: number
  readonly optimizer?: boolean
}

export const offloadNames = ["checkpoints", "optimizer"] as const satisfies readonly (keyof Offload)[]

/** What the executor moves during a gradient pass. */
export const passOffload = (o: Offload | undefined): OffloadOptions => ({
  activations: o?.checkpoints ?? false,
  ...(o?.checkpointBytes === undefined ? {} : { activationBytes: o.checkpointBytes }),
  gradients: o?.optimizer ?? false,
})

/** Whether this piece of the training state lives in the host tier. */
export const inHostTier = (o: Offload | undefined, holds: StepInput["holds"]): boolean =>
  (o?.optimizer ?? false) && (holds === "master" || holds === "m" || holds === "v" || holds === "gradients")

/** The inputs that live in the host tier: what a plan binds there. */
export const hostInputs = (inputs: ReadonlyMap<Tensor, StepInput>, o: Offload | undefined): Set<Tensor> =>
  new Set([...inputs].flatMap(([t, i]) => (inHostTier(o, i.holds) ? [t] : [])))

/** `ModelOptions` plus gradient accumulation, the precision and what is offloaded. */
export interface StepOptions extends ModelOptions {
  readonly accumulation?: number
  readonly precision?: Precision
  readonly offload?: Offload
}

/**
 * The same options in another mode: `checkpointGroup` goes with the checkpoint modes only, so a
 * comparison across modes (plans of each, the advice on what fits) drops it for the others.
 */
export function inMode<T extends StepOptions>(opts: T, mode: Mode): T {
  if (checkpoints(mode) || opts.checkpointGroup === undefined) return { ...opts, mode }
  const { checkpointGroup: _, ...rest } = opts
  return { ...rest, mode } as T
}

/** The names of the routines a backend fuses: the graphs are built for them (`ModelOptions.fused`). */
export const fusedRoutines = (
  backend: { readonly routines?: Readonly<Record<string, unknown>> } | undefined,
): string[] => Object.keys(backend?.routines ?? {})

/** Builds one training step's graphs for a model, batch and sequence length. */
export function stepGraphs(
  c: LlamaConfig,
  B: number,
  S: number,
  opts: StepOptions,
  adamw: AdamWOptions = defaultAdamW,
): StepGraphs {
  const precision = opts.precision ?? precisions.fp32
  const modelOpts = { ...opts, dtype: precision.param }
  const first = gradientGraph(c, B, S, modelOpts, false)
  const gradDTypes = Object.fromEntries(first.names.map((n, i) => [n, first.gradients[i]!.dtype]))
  return {
    first,
    ...((opts.accumulation ?? 1) > 1 ? { accumulate: gradientGraph(c, B, S, modelOpts, true) } : {}),
    // The norm from the gradient pass's Σ g² per gradient: the gradients are read once, by the update.
    adamw: adamwGraph(parameterShapes(c), adamw, precision, gradDTypes, opts.fused?.includes("adamw") ?? false, true),
  }
}

/**
 * What a bound input of a step's graphs holds: one parameter's share of the training state (its
 * weights, fp32 master copy, AdamW moments or accumulated gradient), or one of the step's own values.
 */
export type StepInput = { readonly holds: StateHolds; readonly parameter: string } | { readonly holds: ValueHolds }
export type StateHolds = "weights" | "master" | "m" | "v" | "gradients" | "squares"
/** Values bound afresh for each pass. */
export type ValueHolds = "tokens" | "targets" | "count" | "positions" | "lr" | "correction1" | "correction2"

/** The memory kind each held thing counts as: the planner counts by it, the trainer binds by it. */
const kindOf: Readonly<Record<StepInput["holds"], MemoryKind>> = {
  tokens: "activations",
  targets: "activations",
  count: "activations",
  positions: "activations",
  weights: "weights",
  gradients: "gradients",
  squares: "gradients",
  master: "optimizer",
  m: "optimizer",
  v: "optimizer",
  lr: "temporaries",
  correction1: "temporaries",
  correction2: "temporaries",
}

export const memoryKind = (i: StepInput): MemoryKind => kindOf[i.holds]

/** Each input's memory kind: what a plan binds its inputs with. */
export const inputKinds = (inputs: ReadonlyMap<Tensor, StepInput>): Map<Tensor, MemoryKind> =>
  new Map([...inputs].map(([t, i]) => [t, memoryKind(i)]))

/** The inputs of the loss alone (held-out evaluation): the batch and the weights. */
export function lossInputs(m: LlamaGraph): Map<Tensor, StepInput> {
  const inputs = new Map<Tensor, StepInput>([
    [m.tokens, { holds: "tokens" }],
    [m.targets, { holds: "targets" }],
    [m.count, { holds: "count" }],
  ])
  if (m.positionOffset) inputs.set(m.positionOffset, { holds: "positions" })
  for (const [parameter, t] of Object.entries(m.params)) inputs.set(t, { holds: "weights", parameter })
  return inputs
}

/** One parameter's optimizer state, resident during either pass. */
function addOptimizerState(inputs: Map<Tensor, StepInput>, a: AdamWGraph, parameter: string): void {
  inputs.set(a.m[parameter]!, { holds: "m", parameter }).set(a.v[parameter]!, { holds: "v", parameter })
  if (a.master[parameter]) inputs.set(a.master[parameter], { holds: "master", parameter })
}

/**
 * The inputs of a gradient pass: the loss's, the gradients it adds into (accumulation), and the
 * optimizer state resident beside it (bound, and so counted, but never read).
 */
export function gradientInputs(g: GradientGraph, a: AdamWGraph): Map<Tensor, StepInput> {
  const inputs = lossInputs(g.model)
  for (const parameter of g.names) {
    if (g.previous) inputs.set(g.previous[parameter]!, { holds: "gradients", parameter })
    addOptimizerState(inputs, a, parameter)
  }
  return inputs
}

/** The inputs of the AdamW pass: the step's scalars, and each parameter's weights, gradient and state. */
export function adamwInputs(a: AdamWGraph): Map<Tensor, StepInput> {
  const inputs = new Map<Tensor, StepInput>([
    [a.lr, { holds: "lr" }],
    [a.correction1, { holds: "correction1" }],
    [a.correction2, { holds: "correction2" }],
  ])
  for (const parameter of Object.keys(a.params)) {
    inputs.set(a.params[parameter]!, { holds: "weights", parameter })
    inputs.set(a.grads[parameter]!, { holds: "gradients", parameter })
    if (a.squares[parameter]) inputs.set(a.squares[parameter], { holds: "squares", parameter })
    addOptimizerState(inputs, a, parameter)
  }
  return inputs
}
