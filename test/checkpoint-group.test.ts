// Checkpoint groups (llamaLoss's checkpointGroup K): K = 1 is today's graph; any K gives the
// vanilla graph's loss and gradients (float64) and K = 1's bits (float32), offloaded or not; the
// saved bytes fall by one region input per layer no longer a group's first; bad K is refused.
import { Effect, Exit, Layer } from "effect"
import { describe, expect, it } from "vitest"
import { Backend, type BackendImpl } from "../src/core/backend.js"
import { makeCpuBackend } from "../src/backends/cpu/index.js"
import { valueAndGrad } from "../src/core/autodiff.js"
import type { DType, HostArray } from "../src/core/dtype.js"
import { BadConfig } from "../src/core/errors.js"
import type { Feed } from "../src/core/executor.js"
import type { Tensor } from "../src/core/graph.js"
import { decodeConfigSync, presets } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import { llamaLoss, type Mode, type ModelOptions, parameterShapes } from "../src/models/llama.js"
import { precisions } from "../src/models/optimizer.js"
import { planStep } from "../src/models/planner.js"
import { inMode, type Offload } from "../src/models/step.js"
import { type TrainOptions, train } from "../src/models/train.js"
import { formatBytes } from "../src/cli/svg.js"
import { runCli } from "./cli-helpers.js"
import { planAndMeasure } from "./plan-measure.js"
import { intArray, maxRelDiff, randomArray, run } from "./helpers.js"

const L = 4
const model = decodeConfigSync({
  hidden_size: 16,
  intermediate_size: 40,
  num_hidden_layers: L,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 32,
  max_position_embeddings: 64,
})
const [B, S] = [2, 16]
const chunks = { mlpChunks: 2, lmChunks: 4 }
const checkpointModes = ["checkpoint", "mst+checkpoint"] as const
// 3 does not divide the 4 layers (groups of 3 and 1); 4 is one group of all.
const groups = [2, 3, L]

const weights = (dtype: DType): Record<string, HostArray> =>
  Object.fromEntries(
    Object.entries(parameterShapes(model)).map(([name, shape], i) => [
      name,
      randomArray(
        dtype,
        shape.reduce((a, b) => a * b, 1),
        100 + i,
        { std: 0.3 },
      ),
    ]),
  )
const tokens = intArray(B * S, 32, 7)
const targets = intArray(B * S, 32, 8)

/** The loss and every gradient, by name, on the CPU backend. */
async function lossAndGrads(opts: ModelOptions, dtype: DType) {
  const g = llamaLoss(model, B, S, { ...chunks, ...opts, dtype })
  const names = Object.keys(g.params)
  const { value, grads } = valueAndGrad(g.loss, g.params)
  const w = weights(dtype)
  const feeds = new Map<Tensor, Feed>([
    ...names.map((n) => [g.params[n]!, w[n]!] as [Tensor, Feed]),
    [g.tokens, tokens],
    [g.targets, targets],
    [g.count, new Float32Array([B * S])],
  ])
  const { values } = await run([value, ...names.map((n) => grads[n]!)], feeds)
  return { loss: values[0]!, grads: Object.fromEntries(names.map((n, i) => [n, values[i + 1]!])) }
}

describe("checkpointGroup: the numbers", () => {
  it("float64: loss and every gradient within 1e-12 of the vanilla graph's, for K = 1, 2, 3, L", async () => {
    const reference = await lossAndGrads({ mode: "vanilla" }, "float64")
    for (const mode of checkpointModes)
      for (const K of [1, ...groups]) {
        const got = await lossAndGrads({ mode, checkpointGroup: K }, "float64")
        const what = `${mode}, K = ${K}`
        // mst chunks the MLP and the loss: its sums run in another order than vanilla's.
        expect(maxRelDiff(got.loss, reference.loss), what).toBeLessThan(1e-12)
        for (const [n, g] of Object.entries(reference.grads))
          expect(maxRelDiff(got.grads[n]!, g), `${what}: ${n}`).toBeLessThan(1e-12)
      }
  })

  it("float32: K = 2, 3, L give K = 1's loss and gradients bitwise (the same ops in the same order)", async () => {
    for (const mode of checkpointModes) {
      const one = await lossAndGrads({ mode }, "float32")
      for (const K of groups) {
        const got = await lossAndGrads({ mode, checkpointGroup: K }, "float32")
        expect(got.loss, `${mode}, K = ${K}`).toEqual(one.loss)
        expect(got.grads, `${mode}, K = ${K}`).toEqual(one.grads)
      }
    }
  })
})

describe("checkpointGroup: the plan", () => {
  it("K = 1 is today's graph: the same plan as no checkpointGroup, in every mode", () => {
    for (const mode of ["vanilla", "checkpoint", "mst", "mst+checkpoint"] as const)
      for (const offload of [{}, { checkpoints: true, optimizer: true }])
        expect(planStep(model, B, S, { mode, ...chunks, checkpointGroup: 1, offload })).toEqual(
          planStep(model, B, S, { mode, ...chunks, offload }),
        )
  })

  it("the saved bytes fall by one layer input (B·S·d·4) per layer that no longer starts a group", () => {
    const input = B * S * model.hidden_size * 4
    const regions = (K: number) => Math.ceil(L / K)
    for (const mode of checkpointModes) {
      const at = (K: number, offload: Offload = {}) =>
        planStep(model, B, S, { mode, ...chunks, checkpointGroup: K, offload }).gradientPass
      // What the rest of the graph saves (the embedding's indices, the LM head's, …): K = 1's saves less L inputs.
      const rest = at(1).peakByKind.activations - L * input
      const offloadedRest = at(1, { checkpoints: true }).host.peak - L * input
      expect(rest).toBeGreaterThan(0)
      for (const K of [1, ...groups]) {
        expect(at(K).peakByKind.activations, `${mode}, K = ${K}`).toBe(rest + regions(K) * input)
        expect(at(K, { checkpoints: true }).host.peak, `${mode}, K = ${K}, offloaded`).toBe(
          offloadedRest + regions(K) * input,
        )
      }
    }
  })

  it("nested: the backward recomputes a group with its layers checkpointed, so the peak grows by at most K − 1 layer inputs", () => {
    // A flat group (its layers plain inside) would hold all K layers' activations at once instead.
    const input = B * S * model.hidden_size * 4
    for (const mode of checkpointModes) {
      const peak = (K: number) => planStep(model, B, S, { mode, ...chunks, checkpointGroup: K }).gradientPass.peak
      for (const K of groups) expect(peak(K), `${mode}, K = ${K}`).toBeLessThanOrEqual(peak(1) + (K - 1) * input)
    }
  })

  it("plan = what a run measures (by the ledger and the backend's count), offloaded or not", () => {
    for (const mode of checkpointModes)
      for (const K of [2, 3])
        for (const offload of [{}, { checkpoints: true }, { checkpoints: true, optimizer: true }] as Offload[]) {
          const r = planAndMeasure(
            model,
            B,
            S,
            { mode, ...chunks, checkpointGroup: K, offload },
            { vocab: 32, count: 32 },
          )
          const what = `${mode}, K = ${K}, ${JSON.stringify(offload)}`
          expect(r.measured, what).toEqual(r.planned)
          expect(r.backendPeak, what).toBe(r.planned.peak)
          expect(r.backendHostPeak, what).toBe(r.planned.host.peak)
        }
  })
})

describe("checkpointGroup: training", () => {
  const corpus = Int32Array.from({ length: 2000 }, (_, i) => (i * 7 + (i >> 3)) % 32)
  const trainWith = (backend: BackendImpl, opts: Partial<TrainOptions> & { mode: Mode }) =>
    Effect.runPromise(
      train(
        { model, batch: B, seq: S, steps: 3, lr: 1e-2, seed: 1, ...chunks, ...opts },
        makeBatches({ tokens: corpus, batch: B, seq: S, seed: 1 }),
      ).pipe(Effect.provide(Layer.succeed(Backend, backend))),
    )
  const numbers = (r: Awaited<ReturnType<typeof trainWith>>) => ({
    losses: r.records.map((x) => x.loss),
    norms: r.records.map((x) => x.gradNorm),
    parameters: r.parameters,
  })

  it("K = 2 trains K = 1's numbers bitwise, with and without offload (checkpoints, optimizer)", async () => {
    for (const mode of checkpointModes) {
      const reference = numbers(await trainWith(makeCpuBackend(), { mode }))
      for (const offload of [{}, { checkpoints: true, optimizer: true }]) {
        const r = await trainWith(makeCpuBackend(), { mode, checkpointGroup: 2, offload })
        expect(numbers(r), `${mode} ${JSON.stringify(offload)}`).toEqual(reference)
        if (offload.checkpoints) expect(r.records[0]!.memory.host.peak).toBeGreaterThan(0)
      }
    }
  })
})

describe("checkpointGroup: refusals", () => {
  const refusal = (f: () => unknown) => {
    try {
      f()
    } catch (e) {
      return e
    }
    return undefined
  }
  it("K < 1 or not whole: a BadConfig naming checkpointGroup and --checkpoint-group, and the fix", () => {
    for (const K of [0, -1, 1.5, Number.NaN]) {
      const e = refusal(() => llamaLoss(model, B, S, { mode: "checkpoint", checkpointGroup: K }))
      expect(e, String(K)).toBeInstanceOf(BadConfig)
      expect((e as BadConfig).field).toBe("checkpointGroup")
      expect((e as BadConfig).message).toContain(`--checkpoint-group) must be a whole number ≥ 1`)
      expect((e as BadConfig).message).toContain(`got ${K}`)
    }
  })

  it("K > 1 in a mode without checkpoints: refused, naming the modes that have them; K = 1 is allowed", () => {
    for (const mode of ["vanilla", "mst"] as const) {
      const e = refusal(() => llamaLoss(model, B, S, { mode, checkpointGroup: 2 }))
      expect(e, mode).toBeInstanceOf(BadConfig)
      expect((e as BadConfig).message).toContain(
        `but mode ${mode} has none; use --mode checkpoint or --mode mst+checkpoint`,
      )
      expect(refusal(() => llamaLoss(model, B, S, { mode, checkpointGroup: 1 }))).toBeUndefined()
    }
  })

  it("train() refuses it before anything runs; inMode drops K for the modes without checkpoints", async () => {
    const exit = await Effect.runPromiseExit(
      train(
        { model, batch: B, seq: S, steps: 1, lr: 1e-2, seed: 1, mode: "mst", checkpointGroup: 2 },
        makeBatches({ tokens: Int32Array.from({ length: 200 }, (_, i) => i % 32), batch: B, seq: S, seed: 1 }),
      ).pipe(Effect.provide(Layer.succeed(Backend, makeCpuBackend()))),
    )
    expect(Exit.isFailure(exit) && String(exit.cause)).toContain("checkpointGroup (--checkpoint-group) 2")
    const opts = { mode: "checkpoint" as const, checkpointGroup: 2 }
    expect(inMode(opts, "mst")).toEqual({ mode: "mst" })
    expect(inMode(opts, "mst+checkpoint")).toEqual({ mode: "mst+checkpoint", checkpointGroup: 2 })
  })
})

describe("checkpointGroup: the CLI (the built command)", () => {
  it("plan --checkpoint-group 2 plans the checkpoint modes with K = 2 (planStep's numbers); bad K is refused", async () => {
    const r = await runCli(
      "plan",
      "--model",
      "tiny",
      "--seq",
      "256",
      "--target",
      "cpu",
      "--precision",
      "fp32",
      "--checkpoint-group",
      "2",
    )
    expect(r.code, r.out).toBe(0)
    expect(r.out).toContain("2 layers per checkpoint region")
    expect(r.out).not.toMatch(/\n(vanilla|mst) /)
    const tiny = decodeConfigSync(presets.tiny)
    for (const mode of checkpointModes) {
      const p = planStep(tiny, 1, 256, { mode, checkpointGroup: 2, precision: precisions.fp32 }, makeCpuBackend())
      expect(r.out).toMatch(new RegExp(`\\n${mode.replace("+", "\\+")}\\s+256\\s+${formatBytes(p.peak)} `))
    }
    const refused = await Promise.all([
      runCli("plan", "--checkpoint-group", "0"),
      runCli("train", "--mode", "mst", "--checkpoint-group", "2", "--steps", "1"),
    ])
    expect(refused[0]!.out).toContain(
      "checkpointGroup (--checkpoint-group) must be a whole number ≥ 1 of layers per checkpoint region, got 0; pass 1 for one region per layer",
    )
    expect(refused[1]!.out).toContain(
      "miniseq: BadConfig: checkpointGroup (--checkpoint-group) 2 groups checkpoint regions, but mode mst has none",
    )
    for (const x of refused) expect(x.code).not.toBe(0)
  })
})
