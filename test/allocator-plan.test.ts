// The plan counts what the allocator holds (size classes), and a fresh model can be made where
// it lives: a counter-based normal stream the host and the device both compute.
import { Effect, Layer } from "effect"
import { describe, expect, it } from "vitest"
import { Backend, type BackendImpl, numel } from "../src/core/backend.js"
import { makeCpuBackend } from "../src/backends/cpu/index.js"
import { cudaHeldBytes } from "../src/backends/cuda/allocator.js"
import { counterNormals, normalStreamKey } from "../src/core/random.js"
import { decodeConfigSync } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import { parameterShapes } from "../src/models/llama.js"
import { precisions } from "../src/models/optimizer.js"
import { planStep } from "../src/models/planner.js"
import { initialParameters, train } from "../src/models/train.js"

const MiB = 2 ** 20

describe("cudaHeldBytes (the CUDA allocator's size classes)", () => {
  it("rounds small requests to 512 B, then to a 64th of their power of two, at most 2 MiB", () => {
    const cases: [number, number][] = [
      [0, 0],
      [1, 512],
      [512, 512],
      [513, 1024],
      [MiB, MiB],
      [MiB + 1, MiB + 16384], // 1 MiB / 64
      [3 * MiB, 3 * MiB], // a multiple of 2 MiB / 64 = 32 KiB
      [64 * MiB + 1, 65 * MiB], // 64 MiB / 64 = 1 MiB
      [1024 * MiB + 1, 1026 * MiB], // a 64th would be 16 MiB: capped at 2 MiB
    ]
    for (const [bytes, held] of cases) expect(cudaHeldBytes(bytes), `${bytes}`).toBe(held)
  })

  it("never holds less than asked, nor more than 2 MiB or 1/64 + 512 B over", () => {
    const random = Math.random
    for (let i = 0; i < 2000; i++) {
      const bytes = Math.floor(2 ** (40 * random()))
      const held = cudaHeldBytes(bytes)
      expect(held).toBeGreaterThanOrEqual(bytes)
      expect(held - bytes).toBeLessThanOrEqual(Math.min(2 * MiB, Math.max(512, bytes / 64)))
    }
  })
})

describe("the plan with an allocator's rounding", () => {
  const model = decodeConfigSync({
    hidden_size: 32,
    intermediate_size: 80,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 64,
    max_position_embeddings: 64,
  })
  // The CPU backend with coarse size classes: the ledger then counts what such an allocator holds.
  const page = (bytes: number) => Math.ceil(bytes / 4096) * 4096
  const rounding: BackendImpl = { ...makeCpuBackend(), heldBytes: page }
  const tokens = Int32Array.from({ length: 600 }, (_, i) => (i * 7) % 64)

  for (const mode of ["vanilla", "mst+checkpoint"] as const) {
    it(`held = measured held peak, and held ≥ peak (${mode})`, async () => {
      const opts = { model, mode, batch: 2, seq: 24, steps: 1, lr: 1e-3, seed: 1 }
      const planned = planStep(model, 2, 24, { mode, precision: precisions.fp32 }, rounding)
      const r = await Effect.runPromise(
        train(opts, makeBatches({ tokens, batch: 2, seq: 24, seed: 1 })).pipe(
          Effect.provide(Layer.succeed(Backend, rounding)),
        ),
      )
      const heldPeak = Math.max(...r.records.map((x) => x.memory.heldPeak))
      expect(heldPeak).toBe(planned.held)
      expect(Math.max(...r.records.map((x) => x.peak))).toBe(planned.peak)
      expect(planned.held).toBeGreaterThan(planned.peak)
      // Without rounding the two are the same number.
      expect(planStep(model, 2, 24, { mode, precision: precisions.fp32 }, makeCpuBackend()).held).toBe(planned.peak)
    })
  }

  it("a memory limit applies to the held bytes", async () => {
    const opts = { model, mode: "vanilla" as const, batch: 2, seq: 24, steps: 1, lr: 1e-3, seed: 1 }
    const planned = planStep(model, 2, 24, { mode: "vanilla", precision: precisions.fp32 }, rounding)
    const run = (limit: number) =>
      Effect.runPromiseExit(
        train({ ...opts, memoryLimit: limit }, makeBatches({ tokens, batch: 2, seq: 24, seed: 1 })).pipe(
          Effect.provide(Layer.succeed(Backend, rounding)),
        ),
      )
    expect((await run(planned.held))._tag).toBe("Success")
    // Live bytes would fit here; what the allocator holds would not.
    expect((await run(planned.held - 1))._tag).toBe("Failure")
    expect(planned.peak).toBeLessThan(planned.held - 1)
  })
})

describe("counterNormals (the initialisation stream)", () => {
  const model = decodeConfigSync({
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    vocab_size: 20,
    max_position_embeddings: 16,
  })

  it("is N(0, std²): mean, variance and tails of 200k draws within their sampling error", () => {
    const n = 200_000
    const x = counterNormals(new Float64Array(n), 7, 3, 2)
    const mean = x.reduce((a, b) => a + b, 0) / n
    const variance = x.reduce((a, b) => a + (b - mean) ** 2, 0) / n
    expect(Math.abs(mean)).toBeLessThan((5 * 2) / Math.sqrt(n)) // 5 standard errors
    expect(Math.abs(variance / 4 - 1)).toBeLessThan(5 * Math.sqrt(2 / n))
    // P(|z| > 2) = 0.0455
    const tail = x.filter((v) => Math.abs(v) > 4).length / n
    expect(Math.abs(tail - 0.0455)).toBeLessThan(5 * Math.sqrt((0.0455 * 0.9545) / n))
  })

  it("each value depends only on (seed, stream, index): prefixes agree, streams and seeds differ", () => {
    const long = counterNormals(new Float32Array(1001), 1, 0, 1)
    const short = counterNormals(new Float32Array(300), 1, 0, 1)
    expect(long.subarray(0, 300)).toEqual(short)
    const other = counterNormals(new Float32Array(300), 1, 1, 1)
    const seeded = counterNormals(new Float32Array(300), 2, 0, 1)
    const corr = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + v * b[i]!, 0) / a.length
    expect(Math.abs(corr(short, other))).toBeLessThan(0.25)
    expect(Math.abs(corr(short, seeded))).toBeLessThan(0.25)
    expect(normalStreamKey(1, 0)).not.toBe(normalStreamKey(1, 1))
    expect(normalStreamKey(1, 0)).not.toBe(normalStreamKey(2, 0))
  })

  it("initialParameters: stream i for parameter i, ones for the norms", () => {
    const p = initialParameters(model, 5)
    Object.entries(parameterShapes(model)).forEach(([name, shape], i) => {
      const size = numel(shape)
      const want =
        shape.length === 1 ? new Float32Array(size).fill(1) : counterNormals(new Float32Array(size), 5, i, 0.02)
      expect(p[name], name).toEqual(want)
    })
  })

  it("a backend with randomNormal trains from the same model as one without", async () => {
    const cpu = makeCpuBackend()
    let calls = 0
    const onDevice: BackendImpl = {
      ...cpu,
      randomNormal(out, seed, stream, std) {
        calls++
        cpu.write(out, counterNormals(new Float32Array(out.size), seed, stream, std))
      },
    }
    const tokens = Int32Array.from({ length: 200 }, (_, i) => (i * 3) % 20)
    const opts = { model, mode: "vanilla" as const, batch: 1, seq: 8, steps: 2, lr: 1e-2, seed: 9 }
    const losses = async (b: BackendImpl) =>
      (
        await Effect.runPromise(
          train(opts, makeBatches({ tokens, batch: 1, seq: 8, seed: 1 })).pipe(
            Effect.provide(Layer.succeed(Backend, b)),
          ),
        )
      ).records.map((r) => r.loss)
    const a = await losses(onDevice)
    expect(calls).toBeGreaterThan(0)
    expect(a).toEqual(await losses(cpu))
  })
})
