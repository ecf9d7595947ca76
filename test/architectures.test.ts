// The architectures (Llama, Mistral, Qwen2, Gemma-2) against independent references: the KV-cached
// forward against the uncached one, the loss against cross-entropy of the forward's logits.
import { describe, expect, it } from "vitest"
import type { DType, HostArray } from "../src/core/dtype.js"
import type { Feed } from "../src/core/executor.js"
import type { Tensor } from "../src/core/graph.js"
import { decodeConfigSync, type LlamaConfig } from "../src/models/config.js"
import { llamaForward, llamaLoss, parameterShapes } from "../src/models/llama.js"
import { intArray, maxRelDiff, randomArray, referenceCpu, run } from "./helpers.js"

/** A tiny model of each architecture, with every feature that differs from Llama switched on. */
const tinyBase = {
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 29,
  max_position_embeddings: 64,
  rms_norm_eps: 1e-6,
}
const tinyConfigs: Record<string, LlamaConfig> = {
  llama: decodeConfigSync({
    ...tinyBase,
    model_type: "llama",
    rope_theta: 500000,
    rope_scaling: {
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 16,
    },
  }),
  mistral: decodeConfigSync({ ...tinyBase, model_type: "mistral", sliding_window: 3 }),
  qwen2: decodeConfigSync({
    ...tinyBase,
    model_type: "qwen2",
    rope_theta: 1000000,
    use_sliding_window: false,
    tie_word_embeddings: true,
  }),
  gemma2: decodeConfigSync({
    ...tinyBase,
    model_type: "gemma2",
    head_dim: 8,
    query_pre_attn_scalar: 6,
    sliding_window: 3,
    attn_logit_softcapping: 2,
    final_logit_softcapping: 3,
  }),
}

/** Random weights (std 0.3: large enough that soft-caps and windows matter), by HF name. */
function randomWeights(c: LlamaConfig, dtype: DType, seed: number): Record<string, HostArray> {
  return Object.fromEntries(
    Object.entries(parameterShapes(c)).map(([name, shape], i) => [
      name,
      randomArray(
        dtype,
        shape.reduce((a, b) => a * b, 1),
        seed * 1000 + i,
        { std: 0.3 },
      ),
    ]),
  )
}

const feedsOf = (params: Record<string, Tensor>, weights: Record<string, HostArray>): [Tensor, Feed][] =>
  Object.entries(params).map(([name, t]) => [t, weights[name]!])

/** Logits of the tokens fed in pieces of the given lengths, each piece reading the previous piece's cache. */
async function cachedLogits(
  c: LlamaConfig,
  dtype: DType,
  tokens: Int32Array,
  pieces: number[],
  weights: Record<string, HostArray>,
) {
  const out: number[] = []
  let cache: HostArray[] = []
  let past = 0
  for (const T of pieces) {
    const g = llamaForward(c, 1, T, past, { dtype })
    const feeds = new Map<Tensor, Feed>([
      ...feedsOf(g.params, weights),
      [g.tokens, tokens.slice(past, past + T)],
      ...g.cacheIn.flatMap(
        (l, i) =>
          [
            [l.k, cache[2 * i]!],
            [l.v, cache[2 * i + 1]!],
          ] as [Tensor, Feed][],
      ),
    ])
    const cacheTensors = g.cacheOut.flatMap((l) => [l.k, l.v])
    const { values } = await run([g.logits, ...cacheTensors], feeds, { layer: referenceCpu })
    out.push(...values[0]!)
    cache = values.slice(1)
    past += T
  }
  return out
}

describe("llamaForward with a KV cache", () => {
  for (const [name, c] of Object.entries(tinyConfigs)) {
    for (const dtype of ["float64", "float32"] as const) {
      it(`${name} (${dtype}): logits fed in cached pieces equal one uncached forward`, async () => {
        const S = 9
        const tokens = intArray(S, c.vocab_size, 7)
        const weights = randomWeights(c, dtype, 3)
        const whole = await cachedLogits(c, dtype, tokens, [S], weights)
        const pieces = await cachedLogits(c, dtype, tokens, [4, 1, 3, 1], weights)
        expect(whole.length).toBe(S * c.vocab_size)
        expect(maxRelDiff(whole, pieces)).toBeLessThan(dtype === "float64" ? 1e-12 : 1e-5)
      })
    }
    it(`${name}: llamaLoss equals the cross-entropy of llamaForward's logits (float64, every mode)`, async () => {
      const S = 9
      const tokens = intArray(S, c.vocab_size, 11)
      const targets = Int32Array.from(intArray(S, c.vocab_size, 12), (t, i) => (i === 4 ? -100 : t))
      const weights = randomWeights(c, "float64", 5)
      const logits = await cachedLogits(c, "float64", tokens, [S], weights)
      let sum = 0
      let count = 0
      for (let s = 0; s < S; s++) {
        if (targets[s] === -100) continue
        const row = logits.slice(s * c.vocab_size, (s + 1) * c.vocab_size)
        const m = Math.max(...row)
        const lse = m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0))
        sum += lse - row[targets[s]!]!
        count++
      }
      for (const mode of ["vanilla", "checkpoint", "mst", "mst+checkpoint"] as const) {
        const g = llamaLoss(c, 1, S, { mode, dtype: "float64", mlpChunks: 2, lmChunks: 4 })
        const feeds = new Map<Tensor, Feed>([
          ...feedsOf(g.params, weights),
          [g.tokens, tokens],
          [g.targets, targets],
          [g.count, new Float32Array([count])],
        ])
        const { values } = await run([g.loss], feeds, { layer: referenceCpu })
        expect(Math.abs(values[0]![0]! - sum / count) / (sum / count)).toBeLessThan(1e-12)
      }
    })
  }
})
