/**
 * Limits on what a flag or a config may ask for, checked before anything is allocated: counts
 * that are whole numbers a float64 holds exactly, steps that read at most the corpus once, and
 * model sizes whose byte counts stay exact (below 2^53) and whose tensors a typed array can hold.
 */
import { Effect } from "effect"
import { numel } from "../core/backend.js"
import { BadConfig } from "../core/errors.js"
import type { LlamaConfig } from "../models/config.js"
import { parameterShapes } from "../models/llama.js"

const fail = (field: string, message: string) => Effect.fail(new BadConfig({ field, message }))

/** A whole-number flag in [min, Number.MAX_SAFE_INTEGER]; `fix` says what to pass instead. */
export function integerAtLeast(flag: string, value: number, min: number, fix = ""): Effect.Effect<number, BadConfig> {
  if (Number.isSafeInteger(value) && value >= min) return Effect.succeed(value)
  const allowed = min === 1 ? "a positive integer" : min === 0 ? "a non-negative integer" : `an integer ≥ ${min}`
  const range = Number.isInteger(value) && value > 0 ? ` (at most 2^53 - 1 = ${Number.MAX_SAFE_INTEGER})` : ""
  return fail(flag, `--${flag} must be ${allowed}${range}, got ${value}${fix ? `; ${fix}` : ""}`)
}

/** A seed: any integer a float64 holds exactly. */
export function seedFlag(value: number): Effect.Effect<number, BadConfig> {
  return Number.isSafeInteger(value)
    ? Effect.succeed(value)
    : fail("seed", `--seed must be an integer between -(2^53 - 1) and 2^53 - 1, got ${value}`)
}

/**
 * One optimizer step reads --accumulate micro-batches of --batch × --seq tokens, all held at
 * once: more tokens than the training text has would read it more than once per step (and
 * --accumulate 1e9 would hold a billion batches), so it is refused with the largest that fits.
 * A single micro-batch is never refused here: the memory check judges it.
 */
export function tokensPerStep(
  accumulate: number,
  batch: number,
  seq: number,
  trainTokens: number,
): Effect.Effect<void, BadConfig> {
  // One micro-batch is always allowed (the memory check judges its size).
  const most = Math.max(1, Math.floor(trainTokens / (batch * seq)))
  if (accumulate <= most) return Effect.void
  const perStep = accumulate * batch * seq
  return fail(
    "accumulate",
    `--accumulate ${accumulate} × --batch ${batch} × --seq ${seq} = ${perStep} tokens per step is more than the corpus's ${trainTokens} training tokens; pass --accumulate ${most} or less (or a smaller --batch/--seq)`,
  )
}

/** Bytes a float64 counts exactly: beyond, plans and offsets would be rounded. */
const EXACT_BYTES = 2 ** 53
/** The longest typed array V8 gives (Node 20): the CPU backends hold a tensor in one. */
export const CPU_MAX_ELEMENTS = 2 ** 32

const configField = (name: string, c: LlamaConfig): string =>
  name.includes("embed_tokens") || name.startsWith("lm_head")
    ? `vocab_size ${c.vocab_size} × hidden_size ${c.hidden_size}`
    : name.includes("mlp")
      ? `intermediate_size ${c.intermediate_size} × hidden_size ${c.hidden_size}`
      : `hidden_size ${c.hidden_size}`

/**
 * Refuses a model (at batch × seq) whose sizes no run could hold: fp32 training state (weights,
 * gradients and two AdamW moments, 16 bytes a parameter) or one step's logits past 2^53 bytes,
 * or — with `maxElements` (the CPU backends) — a tensor longer than a typed array can be.
 */
export function checkSizes(
  c: LlamaConfig,
  batch: number,
  seq: number,
  maxElements = Number.MAX_SAFE_INTEGER,
): Effect.Effect<void, BadConfig> {
  const shapes = Object.entries(parameterShapes(c))
  const parameters = shapes.reduce((n, [, s]) => n + numel(s), 0)
  if (parameters * 16 > EXACT_BYTES) {
    return fail(
      "vocab_size",
      `bad model config: ${parameters.toExponential(2)} parameters (vocab_size ${c.vocab_size}, hidden_size ${c.hidden_size}, intermediate_size ${c.intermediate_size}, ${c.num_hidden_layers} layers) need ${(parameters * 16).toExponential(2)} bytes of training state, more than 2^53 bytes (8 PiB); choose a smaller model`,
    )
  }
  const logits = batch * seq * c.vocab_size
  if (logits * 4 > EXACT_BYTES) {
    // The field named is the larger factor: the tokens of the batch, or the vocabulary.
    return fail(
      batch * seq > c.vocab_size ? "batch" : "vocab_size",
      `batch ${batch} × seq ${seq} × vocab_size ${c.vocab_size} logits need more than 2^53 bytes; choose a smaller --batch, --seq or vocabulary`,
    )
  }
  for (const [name, shape] of shapes) {
    if (numel(shape) > maxElements) {
      return fail(
        name.includes("mlp")
          ? "intermediate_size"
          : name.includes("embed") || name.startsWith("lm_head")
            ? "vocab_size"
            : "hidden_size",
        `bad model config: ${name} (${configField(name, c)}) has ${numel(shape)} elements; the CPU backends hold at most ${maxElements} in one tensor; choose a smaller model or --backend cuda`,
      )
    }
  }
  return Effect.void
}
