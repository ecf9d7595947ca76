// Generation: the sampler's distribution against closed forms (temperature, top-k, top-p, greedy),
// the draw against its definition and its frequencies, and the KV-cache loop against greedy
// generation by full recomputation (the whole sequence through llamaForward at every step).
import { Cause, Effect, Exit, type Layer } from "effect"
import { describe, expect, it } from "vitest"
import { cpuBackendLayer } from "../src/backends/cpu/index.js"
import { fastCpuBackendLayer } from "../src/backends/cpu-fast/index.js"
import type { Backend } from "../src/core/backend.js"
import type { HostArray } from "../src/core/dtype.js"
import type { Tensor } from "../src/core/graph.js"
import { BadConfig } from "../src/core/errors.js"
import { evaluate } from "../src/core/executor.js"
import { fillNormal, rng } from "../src/core/random.js"
import { decodeConfigSync, type LlamaConfig } from "../src/models/config.js"
import {
  argmax,
  checkSampling,
  drawFrom,
  type GenerateOptions,
  generate,
  nextTokenDistribution,
} from "../src/models/generate.js"
import { llamaForward, parameterShapes } from "../src/models/llama.js"

/** softmax(x / T) over the indices in `keep`, straight from the definition. */
function softmaxOver(x: number[], T: number, keep: number[]): number[] {
  const z = keep.reduce((s, i) => s + Math.exp(x[i]! / T), 0)
  return x.map((v, i) => (keep.includes(i) ? Math.exp(v / T) / z : 0))
}
const expectClose = (got: ArrayLike<number>, want: number[]) => {
  expect(got.length).toBe(want.length)
  for (let i = 0; i < want.length; i++) expect(got[i]!, `index ${i}`).toBeCloseTo(want[i]!, 12)
}

describe("the next-token distribution", () => {
  const logits = [0.3, -1.2, 2.0, 0.7, 2.0 - 1e-3, -0.4]
  const all = [0, 1, 2, 3, 4, 5]

  it("temperature T: softmax(logits / T)", () => {
    for (const T of [0.25, 0.7, 1, 3])
      expectClose(nextTokenDistribution(logits, { temperature: T }), softmaxOver(logits, T, all))
  })

  it("temperature 0 is greedy: all mass on the first largest logit", () => {
    expect(Array.from(nextTokenDistribution(logits, { temperature: 0 }))).toEqual([0, 0, 1, 0, 0, 0])
    expect(argmax([1, 3, 3, 2])).toBe(1)
  })

  it("top-k keeps the k largest logits (and ties with the k-th), renormalised", () => {
    expectClose(nextTokenDistribution(logits, { topK: 2 }), softmaxOver(logits, 1, [2, 4]))
    expectClose(nextTokenDistribution(logits, { topK: 3, temperature: 0.5 }), softmaxOver(logits, 0.5, [2, 3, 4]))
    expectClose(nextTokenDistribution([1, 2, 2, 0], { topK: 2 }), softmaxOver([1, 2, 2, 0], 1, [1, 2]))
    expectClose(nextTokenDistribution([1, 2, 2, 0], { topK: 1 }), softmaxOver([1, 2, 2, 0], 1, [1, 2])) // a tie
    expectClose(nextTokenDistribution(logits, { topK: 0 }), softmaxOver(logits, 1, all))
    expectClose(nextTokenDistribution(logits, { topK: 99 }), softmaxOver(logits, 1, all))
  })

  it("top-p keeps the fewest most likely tokens whose mass reaches p", () => {
    const probs = [0.15, 0.5, 0.05, 0.3]
    const l = probs.map(Math.log)
    expectClose(nextTokenDistribution(l, { topP: 0.4 }), [0, 1, 0, 0])
    expectClose(nextTokenDistribution(l, { topP: 0.7 }), [0, 0.5 / 0.8, 0, 0.3 / 0.8])
    expectClose(nextTokenDistribution(l, { topP: 0.9 }), [0.15 / 0.95, 0.5 / 0.95, 0, 0.3 / 0.95])
    expectClose(nextTokenDistribution(l, { topP: 1 }), probs)
    // top-k first, then top-p over what is left: k = 3 → {0.5, 0.3, 0.15}/0.95; p = 0.8 needs 0.5/0.95 + 0.3/0.95.
    expectClose(nextTokenDistribution(l, { topK: 3, topP: 0.8 }), [0, 0.5 / 0.8, 0, 0.3 / 0.8])
  })

  it("draws the first index whose cumulative mass passes u, never one without mass", () => {
    const p = [0.2, 0, 0.5, 0.3, 0]
    expect([0, 0.19, 0.2, 0.69, 0.7, 0.999999].map((u) => drawFrom(p, u))).toEqual([0, 0, 2, 2, 3, 3])
    expect(drawFrom([0.5, 0.5 - 1e-12, 0], 0.9999999999999)).toBe(1) // past the rounded total: the last with mass
  })

  it("draws with the distribution's frequencies (20 000 seeded draws, each within 4.5 σ)", () => {
    const p = nextTokenDistribution(logits, { temperature: 0.8, topK: 4 })
    const random = rng(7)
    const n = 20000
    const counts = new Array<number>(p.length).fill(0)
    for (let i = 0; i < n; i++) counts[drawFrom(p, random())]!++
    for (let i = 0; i < p.length; i++) {
      const sigma = Math.sqrt(n * p[i]! * (1 - p[i]!))
      expect(Math.abs(counts[i]! - n * p[i]!), `token ${i}`).toBeLessThanOrEqual(4.5 * sigma + 1e-9)
    }
    expect(counts[1]).toBe(0) // outside the top 4
  })

  it("refuses bad options with a BadConfig naming the flag", () => {
    const base = { maxNewTokens: 4 }
    for (const [o, flag] of [
      [{ temperature: -1 }, "temperature"],
      [{ temperature: Number.NaN }, "temperature"],
      [{ topK: 1.5 }, "top-k"],
      [{ topP: 0 }, "top-p"],
      [{ topP: 1.5 }, "top-p"],
      [{ maxNewTokens: 0 }, "max-new-tokens"],
      [{ seed: 0.5 }, "seed"],
    ] as const) {
      const e = checkSampling({ ...base, ...o })
      expect(e, flag).toBeInstanceOf(BadConfig)
      expect(e!.field).toBe(flag)
      expect(e!.message).toMatch(new RegExp(`--${flag}`))
    }
    expect(checkSampling({ maxNewTokens: 1, temperature: 0, topK: 0, topP: 1 })).toBeUndefined()
  })
})

// ---------------------------------------------------------------------------------------------

const config = decodeConfigSync({
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 40,
  max_position_embeddings: 48,
})
/** Weights large enough that the logits differ clearly (greedy is then well defined). */
const weightsFor = (c: LlamaConfig): Record<string, Float32Array> =>
  Object.fromEntries(
    Object.entries(parameterShapes(c)).map(([n, shape], k) => {
      const a = new Float32Array(shape.reduce((x, y) => x * y, 1))
      // Norm weights are 1 (Gemma's are 1 + w: 0 there gives the same), biases small.
      const norm = n.endsWith("norm.weight")
      return [n, norm ? a.fill(c.model_type === "gemma2" ? 0 : 1) : fillNormal(rng(100 + k), a, 0.4)]
    }),
  )
const parameters = weightsFor(config)
/** Architectures whose attention differs: a sliding window shorter than the text, soft-caps. */
const others: Record<string, LlamaConfig> = {
  mistral: decodeConfigSync({ ...config, model_type: "mistral", sliding_window: 3 }),
  gemma2: decodeConfigSync({
    ...config,
    model_type: "gemma2",
    head_dim: 4,
    query_pre_attn_scalar: 6,
    sliding_window: 3,
    attn_logit_softcapping: 2,
    final_logit_softcapping: 3,
  }),
  qwen2: decodeConfigSync({ ...config, model_type: "qwen2", use_sliding_window: false }),
}
const prompt = Int32Array.of(3, 17, 5, 29, 8)

const run = <A>(e: Effect.Effect<A, unknown, Backend>, layer: Layer.Layer<Backend> = cpuBackendLayer()) =>
  Effect.runPromise(e.pipe(Effect.provide(layer)))

/** The reference: every step runs the whole sequence from scratch, no cache, and takes the argmax. */
async function greedyByRecomputation(n: number, c = config, w = parameters): Promise<number[]> {
  const ids = Array.from(prompt)
  for (let i = 0; i < n; i++) {
    const g = llamaForward(c, 1, ids.length, 0)
    const feeds = new Map<Tensor, HostArray>(Object.entries(g.params).map(([name, t]) => [t, w[name]!]))
    feeds.set(g.tokens, Int32Array.from(ids))
    const [logits] = (await run(evaluate([g.logits], feeds))).values
    ids.push(argmax(logits!.subarray((ids.length - 1) * c.vocab_size)))
  }
  return ids.slice(prompt.length)
}

describe("generate (KV cache)", () => {
  const greedy: GenerateOptions = { maxNewTokens: 12, temperature: 0 }

  it("greedy with the cache equals greedy by full recomputation, on cpu and cpu-fast", async () => {
    const want = await greedyByRecomputation(12)
    for (const layer of [cpuBackendLayer(), fastCpuBackendLayer()]) {
      const got = await run(generate(config, parameters, prompt, greedy), layer)
      expect(Array.from(got.tokens)).toEqual(want)
      expect(got.stopped).toBe("max-new-tokens")
    }
    expect(new Set(want).size).toBeGreaterThan(1) // not a degenerate model repeating one token
  })

  for (const [name, c] of Object.entries(others)) {
    it(`${name}: greedy with the cache equals full recomputation (window 3 < the text, soft-caps)`, async () => {
      const w = weightsFor(c)
      const want = await greedyByRecomputation(10, c, w)
      const got = await run(generate(c, w, prompt, { maxNewTokens: 10, temperature: 0 }))
      expect(Array.from(got.tokens)).toEqual(want)
      expect(new Set(want).size).toBeGreaterThan(1)
    })
  }

  it("sampling is reproducible with a seed, and another seed draws other tokens", async () => {
    const o = { maxNewTokens: 16, temperature: 1.5, topK: 20, topP: 0.95 }
    const a = await run(generate(config, parameters, prompt, { ...o, seed: 5 }))
    const b = await run(generate(config, parameters, prompt, { ...o, seed: 5 }))
    const c = await run(generate(config, parameters, prompt, { ...o, seed: 6 }))
    expect(Array.from(a.tokens)).toEqual(Array.from(b.tokens))
    expect(Array.from(a.tokens)).not.toEqual(Array.from(c.tokens))
  })

  it("stops at EOS, which is not part of the result", async () => {
    const [first, second] = await greedyByRecomputation(2)
    const atFirst = await run(generate(config, parameters, prompt, { ...greedy, eos: first! }))
    expect([Array.from(atFirst.tokens), atFirst.stopped]).toEqual([[], "eos"])
    if (second !== first) {
      const atSecond = await run(generate(config, parameters, prompt, { ...greedy, eos: second! }))
      expect([Array.from(atSecond.tokens), atSecond.stopped]).toEqual([[first], "eos"])
    }
  })

  it("an empty prompt or more positions than the model has is a BadConfig; a missing weight a GraphError", async () => {
    const failure = async (p: Int32Array, o: GenerateOptions, w: Record<string, Float32Array> = parameters) => {
      const exit = await Effect.runPromiseExit(generate(config, w, p, o).pipe(Effect.provide(cpuBackendLayer())))
      return Exit.isFailure(exit) ? (Cause.squash(exit.cause) as BadConfig) : undefined
    }
    expect((await failure(new Int32Array(0), greedy))?.field).toBe("prompt")
    const long = await failure(prompt, { ...greedy, maxNewTokens: 44 })
    expect(long?.message).toMatch(
      /5 tokens \+ --max-new-tokens 44 = 49 positions, past the model's max_position_embeddings \(48\)/,
    )
    const { "model.norm.weight": _, ...missing } = parameters
    const e = await failure(prompt, greedy, missing)
    expect(e?.message).toMatch(/generate: weight "model\.norm\.weight" is missing; the model needs 16 \(\[16\]\)/)
  })
})
