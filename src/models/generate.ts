/**
 * Text generation: one prefill pass over the prompt, then one `llamaForward` pass per new token
 * with the keys and values of every earlier position taken from a KV cache that stays on the
 * backend between steps (only the last position's logits are read back).
 *
 * Sampling, in transformers' order: logits / temperature → top-k → softmax → top-p → draw with a
 * seeded RNG (src/core/random.ts). Temperature 0 is greedy: the first largest logit.
 */
import { Effect } from "effect"
import { Backend, type BackendImpl, type Buffer, numel } from "../core/backend.js"
import { BadConfig, fmtShape, GraphError } from "../core/errors.js"
import { attempt, type Binding, type ExecutionError, execute } from "../core/executor.js"
import type { Tensor } from "../core/graph.js"
import { rng } from "../core/random.js"
import type { LlamaConfig } from "./config.js"
import { type ForwardGraph, llamaForward, parameterShapes } from "./llama.js"
import { fusedRoutines } from "./step.js"
import { upload } from "./train-state.js"

/** How the next token is drawn from the logits. */
export interface SamplingOptions {
  /** Divides the logits; 0 means greedy (argmax). Default 1. */
  readonly temperature?: number
  /** Keep only the k most likely tokens (ties with the k-th kept too); absent or 0: all. */
  readonly topK?: number
  /** Keep the smallest set of most likely tokens whose probabilities sum to at least p; absent or 1: all. */
  readonly topP?: number
}

/** What `generate` does: the sampling rules, how many tokens at most, the seed and where to stop. */
export interface GenerateOptions extends SamplingOptions {
  readonly maxNewTokens: number
  /** Seed of the draws: the same seed, prompt and weights give the same text. Default 1. */
  readonly seed?: number
  /** Stop when this id is drawn (it is not part of the result). */
  readonly eos?: number
}

/** The new tokens (EOS excluded) and why generation stopped. */
export interface Generated {
  readonly tokens: Int32Array
  readonly stopped: "eos" | "max-new-tokens"
}

const badOption = (field: string, message: string) => new BadConfig({ field, message })

/** Every sampling option checked: a BadConfig naming the flag and what it accepts, or undefined. */
export function checkSampling(o: GenerateOptions): BadConfig | undefined {
  const t = o.temperature ?? 1
  if (!(Number.isFinite(t) && t >= 0))
    return badOption("temperature", `--temperature must be a finite number ≥ 0 (0: greedy), got ${t}`)
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0))
    return badOption("top-k", `--top-k must be an integer ≥ 0 (0: no limit), got ${o.topK}`)
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1))
    return badOption("top-p", `--top-p must be in (0, 1] (1: no limit), got ${o.topP}`)
  if (!(Number.isInteger(o.maxNewTokens) && o.maxNewTokens >= 1))
    return badOption("max-new-tokens", `--max-new-tokens must be a positive integer, got ${o.maxNewTokens}`)
  if (o.seed !== undefined && !Number.isSafeInteger(o.seed))
    return badOption("seed", `--seed must be an integer, got ${o.seed}`)
  return undefined
}

/** The index of the first largest value. */
export function argmax(xs: ArrayLike<number>): number {
  let best = 0
  for (let i = 1; i < xs.length; i++) if (xs[i]! > xs[best]!) best = i
  return best
}

/**
 * The distribution the next token is drawn from, in float64: softmax(logits / T) restricted to
 * the top-k logits, then to the top-p nucleus, renormalised. T = 0 gives all mass to `argmax`.
 */
export function nextTokenDistribution(logits: ArrayLike<number>, o: SamplingOptions = {}): Float64Array {
  const n = logits.length
  const p = new Float64Array(n)
  const t = o.temperature ?? 1
  if (t === 0) {
    p[argmax(logits)] = 1
    return p
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b)
  const keep = new Uint8Array(n).fill(1)
  const k = o.topK ?? 0
  if (k > 0 && k < n) {
    const kth = logits[order[k - 1]!]!
    for (let i = 0; i < n; i++) if (logits[i]! < kth) keep[i] = 0
  }
  const top = logits[order[0]!]! / t
  let sum = 0
  for (let i = 0; i < n; i++) {
    p[i] = keep[i] ? Math.exp(logits[i]! / t - top) : 0
    sum += p[i]!
  }
  for (let i = 0; i < n; i++) p[i]! /= sum
  const topP = o.topP ?? 1
  if (topP < 1) {
    // The most likely tokens, in order, until their mass reaches p; the rest are dropped.
    let mass = 0
    let cut = n
    for (let j = 0; j < n; j++) {
      mass += p[order[j]!]!
      if (mass >= topP) {
        cut = j + 1
        break
      }
    }
    let kept = 0
    for (let j = 0; j < n; j++) {
      if (j >= cut) p[order[j]!] = 0
      else kept += p[order[j]!]!
    }
    for (let i = 0; i < n; i++) p[i]! /= kept
  }
  return p
}

/** Draws an index from `p` with one uniform number u ∈ [0, 1): the first index whose cumulative mass exceeds u. */
export function drawFrom(p: ArrayLike<number>, u: number): number {
  let c = 0
  let last = 0
  for (let i = 0; i < p.length; i++) {
    if (p[i]! <= 0) continue
    last = i
    c += p[i]!
    if (u < c) return i
  }
  return last // u beyond the rounded total: the last token with mass
}

/** Binds a forward graph's inputs: the weights, the new tokens and the cache of earlier positions. */
function forwardBindings(g: ForwardGraph, weights: Record<string, Buffer>, tokens: Buffer, cache: Buffer[]) {
  const bindings = new Map<Tensor, Binding>()
  for (const [name, t] of Object.entries(g.params)) bindings.set(t, { buffer: weights[name]!, kind: "weights" })
  bindings.set(g.tokens, { buffer: tokens, kind: "activations" })
  g.cacheIn.forEach((layer, i) => {
    bindings.set(layer.k, { buffer: cache[2 * i]!, kind: "activations" })
    bindings.set(layer.v, { buffer: cache[2 * i + 1]!, kind: "activations" })
  })
  return bindings
}

/**
 * Runs one forward pass of `ids` after `cache` (the keys and values of `past` positions), frees
 * the old cache and returns the new one and the last position's logits.
 */
function step(
  backend: BackendImpl,
  c: LlamaConfig,
  weights: Record<string, Buffer>,
  ids: Int32Array,
  past: number,
  cache: Buffer[],
  fused: string[],
): Effect.Effect<{ logits: Float32Array; cache: Buffer[] }, ExecutionError> {
  return Effect.gen(function* () {
    const g = yield* attempt(() => llamaForward(c, 1, ids.length, past, { fused }))
    const tokens = upload(backend, ids)
    const outputs = [g.logits, ...g.cacheOut.flatMap((l) => [l.k, l.v])]
    const run = yield* attempt(() => execute(backend, outputs, forwardBindings(g, weights, tokens, cache))).pipe(
      Effect.ensuring(Effect.sync(() => backend.free(tokens))),
    )
    const [logitsBuffer, ...next] = run.outputs
    for (const b of cache) backend.free(b)
    const all = yield* Effect.promise(() => backend.read(logitsBuffer!))
    backend.free(logitsBuffer!)
    const V = c.vocab_size
    return { logits: Float32Array.from(all.subarray(all.length - V)), cache: next }
  })
}

/**
 * Continues `prompt` (at least one id) by up to `maxNewTokens` tokens on the Backend service, with
 * the model's weights (float32, HF names) uploaded once and the KV cache kept on the device.
 * Stops early at `eos`. Fails with BadConfig for bad options, an empty prompt or prompt + new
 * tokens past max_position_embeddings, GraphError for a missing or misshapen weight, and the
 * executor's other errors.
 */
export function generate(
  c: LlamaConfig,
  parameters: Readonly<Record<string, Float32Array>>,
  prompt: Int32Array,
  o: GenerateOptions,
): Effect.Effect<Generated, ExecutionError, Backend> {
  return Effect.gen(function* () {
    const problem = checkSampling(o)
    if (problem !== undefined) return yield* Effect.fail(problem)
    if (prompt.length === 0)
      return yield* Effect.fail(
        badOption("prompt", "the prompt has no tokens; give --prompt some text (or use a tokenizer that adds BOS)"),
      )
    const total = prompt.length + o.maxNewTokens
    if (total > c.max_position_embeddings)
      return yield* Effect.fail(
        badOption(
          "max-new-tokens",
          `the prompt's ${prompt.length} tokens + --max-new-tokens ${o.maxNewTokens} = ${total} positions, past the model's max_position_embeddings (${c.max_position_embeddings}); lower --max-new-tokens or shorten the prompt`,
        ),
      )
    for (const [name, shape] of Object.entries(parameterShapes(c))) {
      const got = parameters[name]
      if (got === undefined || got.length !== numel(shape))
        return yield* Effect.fail(
          new GraphError({
            message: `generate: weight "${name}" ${got === undefined ? "is missing" : `has ${got.length} values`}; the model needs ${numel(shape)} (${fmtShape(shape)})`,
          }),
        )
    }
    const backend = yield* Backend
    const fused = fusedRoutines(backend)
    const weights: Record<string, Buffer> = {}
    let cache: Buffer[] = []
    const random = rng(o.seed ?? 1)
    const out: number[] = []
    return yield* Effect.gen(function* () {
      for (const [name, data] of Object.entries(parameters)) weights[name] = upload(backend, data)
      let r = yield* step(backend, c, weights, prompt, 0, cache, fused)
      cache = r.cache
      for (;;) {
        const next = drawFrom(nextTokenDistribution(r.logits, o), random())
        if (next === o.eos) return { tokens: Int32Array.from(out), stopped: "eos" as const }
        out.push(next)
        if (out.length === o.maxNewTokens) return { tokens: Int32Array.from(out), stopped: "max-new-tokens" as const }
        r = yield* step(backend, c, weights, Int32Array.of(next), prompt.length + out.length - 1, cache, fused)
        cache = r.cache
      }
    }).pipe(
      Effect.ensuring(
        Effect.sync(() => {
          for (const b of [...Object.values(weights), ...cache]) backend.free(b)
        }),
      ),
    )
  })
}
