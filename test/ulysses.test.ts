import { Effect } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { planAt } from "../src/cli/plan-command.js"
import { formatBytes } from "../src/cli/svg.js"
import { makeCpuBackend } from "../src/backends/cpu/index.js"
import { valueAndGrad } from "../src/core/autodiff.js"
import { BadConfig } from "../src/core/errors.js"
import { type Feed, plan } from "../src/core/executor.js"
import type { Tensor } from "../src/core/graph.js"
import { runRanks } from "../src/core/ranks.js"
import { decodeConfigSync, type LlamaConfig, preset } from "../src/models/config.js"
import { llamaLoss, type Mode, parameterShapes } from "../src/models/llama.js"
import { type Precision, precisions } from "../src/models/optimizer.js"
import { inputKinds, lossInputs, stepGraphs } from "../src/models/step.js"
import { globalCount, longestSequenceOnRanks, planRankStep, rankFeeds } from "../src/models/ulysses.js"
import { runCli } from "./cli-helpers.js"
import { intArray, maxRelDiff, propertyRuns, randomArray, referenceCpu, run } from "./helpers.js"

/** Tiny Llamas: 4 query and 4 KV heads (N = 1, 2, 4), and 6 query heads over 3 KV heads (N = 3, GQA). */
const tiny = (heads: number, kvHeads: number, extra: Record<string, unknown> = {}): LlamaConfig =>
  decodeConfigSync({
    model_type: "llama",
    hidden_size: 4 * heads,
    intermediate_size: 20,
    num_hidden_layers: 2,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    vocab_size: 23,
    max_position_embeddings: 64,
    rms_norm_eps: 1e-6,
    rope_theta: 100,
    ...extra,
  })
const fp64: Precision = { name: "fp64", param: "float64", state: "float64", master: false }
const [B, S] = [2, 12]

/** One global batch, a few targets ignored, and float64 weights near HF's scale. */
function problem(c: LlamaConfig, seed: number, b = B, s = S) {
  const tokens = intArray(b * s, c.vocab_size, seed)
  const targets = intArray(b * s, c.vocab_size, seed + 1).map((t, k) => (k % 5 === 3 ? -100 : t))
  const weights = Object.fromEntries(
    Object.entries(parameterShapes(c)).map(([name, shape], i) => {
      const n = shape.reduce((a, b) => a * b, 1)
      const w = randomArray("float64", n, seed + 10 + i, { std: shape.length === 1 ? 0.1 : 0.3 }) as Float64Array
      return [name, shape.length === 1 ? w.map((x) => 1 + x) : w]
    }),
  )
  return { tokens, targets, weights }
}

/** The single-rank loss and gradients on the whole batch (the reference). */
async function oneRank(c: LlamaConfig, mode: Mode, p: ReturnType<typeof problem>, chunks: number, b = B, s = S) {
  const g = llamaLoss(c, b, s, { mode, dtype: "float64", mlpChunks: chunks, lmChunks: chunks, attentionBlock: 4 })
  const names = Object.keys(g.params)
  const { value, grads } = valueAndGrad(g.loss, g.params)
  const feeds = new Map<Tensor, Feed>([
    [g.tokens, p.tokens],
    [g.targets, p.targets],
    [g.count, Float32Array.of(globalCount(p.targets))],
    ...names.map((n) => [g.params[n]!, p.weights[n]!] as const),
  ])
  const { values } = await run([value, ...names.map((n) => grads[n]!)], feeds, { layer: referenceCpu })
  return { names, values }
}

/** The same step on N in-process ranks, each fed its S/N tokens; the step's graphs are the trainer's. */
async function nRanks(
  c: LlamaConfig,
  mode: Mode,
  p: ReturnType<typeof problem>,
  n: number,
  chunks: number,
  b = B,
  s = S,
) {
  const opts = { mode, ranks: n, mlpChunks: chunks, lmChunks: chunks, attentionBlock: 4, precision: fp64 }
  const g = stepGraphs(c, b, s, opts).first
  const kinds = inputKinds(lossInputs(g.model))
  const planned = plan(g.outputs, kinds, { gradients: g.gradients })
  const results = await runRanks(makeCpuBackend({ fused: false }), n, (r) => {
    const feeds = rankFeeds(g.model, { tokens: p.tokens, targets: p.targets, B: b, S: s }, r, n)
    for (const name of g.names) feeds.set(g.model.params[name]!, p.weights[name]!)
    const withKinds = new Map([...feeds].map(([t, data]) => [t, { data: data as Float64Array, kind: kinds.get(t)! }]))
    return { outputs: g.outputs, feeds: withKinds, options: { gradients: g.gradients } }
  })
  return { names: g.names, results, planned }
}

const cases: { n: number; c: LlamaConfig }[] = [
  { n: 1, c: tiny(4, 4) },
  { n: 2, c: tiny(4, 4) },
  { n: 4, c: tiny(4, 4) },
  { n: 3, c: tiny(6, 3) },
  {
    n: 2,
    c: tiny(4, 2, {
      rope_scaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 4,
      },
    }),
  },
]

describe("Ulysses: N ranks train as one", () => {
  for (const mode of ["vanilla", "mst+checkpoint"] as const)
    for (const [k, { n, c }] of cases.entries())
      it(`${mode}, N = ${n}, ${c.num_attention_heads} heads over ${c.num_key_value_heads} KV heads${k === 4 ? ", llama3 RoPE scaling" : ""}: the loss and every weight's gradient are one rank's`, async () => {
        const p = problem(c, 100 + k)
        const chunks = (S / n) % 2 === 0 ? 2 : 3
        const want = await oneRank(c, mode, p, chunks)
        const got = await nRanks(c, mode, p, n, chunks)
        expect(got.names).toEqual(want.names)
        for (const [r, result] of got.results.entries()) {
          expect(maxRelDiff(result.values[0]!, want.values[0]!), `loss on rank ${r}`).toBeLessThan(1e-10)
          want.names.forEach((name, i) =>
            expect(maxRelDiff(result.values[i + 1]!, want.values[i + 1]!), `${name} on rank ${r}`).toBeLessThan(1e-10),
          )
          // The plan of one rank is each rank's run: the executor's count and what its backend allocated.
          expect(result.memory).toEqual(got.planned)
          expect(result.allocated.peak).toBe(got.planned.peak)
        }
        // Not vacuous: the loss is a cross-entropy near log V, and gradients are not all zero.
        expect(want.values[0]![0]!).toBeGreaterThan(1)
        expect(want.values.slice(1).some((g) => g.some((x) => Math.abs(x) > 1e-6))).toBe(true)
      })
})

describe("Ulysses: random N that divide the KV heads", () => {
  it("give one rank's loss and gradients (fast-check over N, heads, B, S, mode and M)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          n: fc.constantFrom(1, 2, 3, 4, 6),
          group: fc.integer({ min: 1, max: 2 }),
          perRank: fc.integer({ min: 1, max: 3 }),
          mode: fc.constantFrom<Mode>("vanilla", "checkpoint", "mst", "mst+checkpoint"),
          seed: fc.nat({ max: 1000 }),
        }),
        async ({ n, group, perRank, mode, seed }) => {
          const c = tiny(n * group, n) // Hkv = N, H = group · N: the fewest heads N allows
          const s = n * perRank * 2 // 2·perRank tokens on each rank, split in M = 2 pieces
          const p = problem(c, seed, 1, s)
          const want = await oneRank(c, mode, p, 2, 1, s)
          const got = await nRanks(c, mode, p, n, 2, 1, s)
          for (const result of got.results)
            want.values.forEach((w, i) =>
              expect(maxRelDiff(result.values[i]!, w), got.names[i - 1]).toBeLessThan(1e-10),
            )
        },
      ),
      { numRuns: propertyRuns(6) },
    )
  })
})

describe("Ulysses: refusals", () => {
  it("refuses N that does not divide S, naming both and the fix", () => {
    const c = tiny(4, 4)
    expect(() => llamaLoss(c, B, 10, { mode: "vanilla", ranks: 4 })).toThrow(BadConfig)
    expect(() => llamaLoss(c, B, 10, { mode: "vanilla", ranks: 4 })).toThrow(
      /4 ranks cannot share a sequence of 10 tokens: 10 % 4 = 2/,
    )
  })

  it("refuses N that does not divide the KV heads", () => {
    expect(() => llamaLoss(tiny(4, 2), B, 12, { mode: "vanilla", ranks: 4 })).toThrow(
      /4 ranks cannot share 2 KV heads.*num_key_value_heads/,
    )
    expect(() => llamaLoss(tiny(6, 3), B, 12, { mode: "vanilla", ranks: 2 })).toThrow(BadConfig)
  })

  it("refuses ranks that are not a whole number ≥ 1", () => {
    expect(() => llamaLoss(tiny(4, 4), B, 12, { mode: "vanilla", ranks: 0 })).toThrow(/whole number ≥ 1, got 0/)
  })

  it("refuses a batch cut for another graph", () => {
    const g = llamaLoss(tiny(4, 4), B, 12, { mode: "vanilla", ranks: 2 })
    const batch = { tokens: new Int32Array(B * 12), targets: new Int32Array(B * 12), B, S: 12 }
    expect(() => rankFeeds(g, batch, 0, 4)).toThrow(/build it with llamaLoss\(c, 2, 12, \{ ranks: 4 \}\)/)
    expect(() => rankFeeds(g, batch, 2, 2)).toThrow(/rank 2 is not one of 0…1/)
  })
})

describe("Ulysses: planning one rank of N", () => {
  it("activations shrink with N while the replicated state does not", () => {
    const c = tiny(4, 4)
    const opts = { mode: "mst+checkpoint" as const }
    const [one, four] = [planRankStep(c, 1, 64, 1, opts), planRankStep(c, 1, 64, 4, opts)]
    const state = (p: typeof one) => p.gradientPass.atPeak.weights + p.gradientPass.atPeak.optimizer
    expect(state(four)).toBe(state(one))
    expect(four.gradientPass.peak).toBeLessThan(one.gradientPass.peak)
  })

  it("finds a longer S on more ranks, each S a multiple of N whose plan fits and the next step's does not", () => {
    const c = tiny(4, 4, { max_position_embeddings: 1 << 20 })
    const limit = 4 * 2 ** 20
    const opts = { mode: "mst+checkpoint" as const }
    const found = [1, 2, 4].map((n) => longestSequenceOnRanks(c, 1, n, opts, limit, { step: 64 * n, cap: 1 << 16 }))
    found.forEach(({ S: s, plan: p, capped }, i) => {
      const n = [1, 2, 4][i]!
      expect(capped).toBe(false)
      expect(s % n).toBe(0)
      expect(p!.held).toBeLessThanOrEqual(limit)
      expect(planRankStep(c, 1, s + 64 * n, n, { ...opts, allowBeyondMaxPosition: true }).held).toBeGreaterThan(limit)
    })
    expect(found[1]!.S).toBeGreaterThan(found[0]!.S)
    expect(found[2]!.S).toBeGreaterThan(found[1]!.S)
  })
})

describe("miniseq plan --ranks", () => {
  it("prints one rank of N's plan, smaller than one device's, and refuses an S that N does not divide", async () => {
    const r = await runCli("plan", "--model", "tiny", "--seq", "256", "--ranks", "2", "--precision", "fp32")
    expect(r.code, r.out).toBe(0)
    expect(r.out).toMatch(/one rank of 2 sharing the sequence/)
    const args = {
      model: await Effect.runPromise(preset("tiny")),
      batch: 1,
      mlpChunks: "auto",
      lmChunks: "auto",
    } as const
    const at = (ranks?: number) =>
      planAt({ ...args, target: "gpu", precision: precisions.fp32, ...(ranks ? { ranks } : {}) }, "mst+checkpoint", 256)
    const [two, one] = [at(2), at()]
    expect(two.peak).toBeLessThan(one.peak)
    expect(r.out).toContain(`mst+checkpoint       256 ${formatBytes(two.peak).padStart(10)} `)
    const bad = await runCli("plan", "--model", "tiny", "--seq", "255", "--ranks", "2")
    expect(bad.code).not.toBe(0)
    expect(bad.out).toMatch(/--seq 255 is not a multiple of --ranks 2/)
  })
})
