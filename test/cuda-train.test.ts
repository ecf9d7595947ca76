/**
 * Training on the CUDA backend: the fused AdamW kernel against the CPU's reference body, and
 * mixed-precision (bf16 weights, fp32 master weights) training against the CPU with bfloat16
 * emulated. The GPU cases run where a GPU is (MINISEQ_CUDA=1 makes a missing one a failure, as
 * in test/cuda-fused.test.ts); elsewhere only the CPU-side checks run.
 */
import { Effect, Exit, Layer } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { Backend, type BackendImpl } from "../src/core/backend.js"
import type { DType } from "../src/core/dtype.js"
import { cpuWithBfloat16, roundToBfloat16 } from "../src/backends/cpu/bfloat16.js"
import { makeCpuBackend } from "../src/backends/cpu/index.js"
import { type CudaBackend, makeCudaBackend } from "../src/backends/cuda/index.js"
import type { NativeDevice } from "../src/backends/cuda/native.js"
import { withProfiler } from "../src/backends/cuda/profile.js"
import { BackendUnavailable } from "../src/core/errors.js"
import { valueAndGrad } from "../src/core/autodiff.js"
import { evaluate } from "../src/core/executor.js"
import { input, type Tensor } from "../src/core/graph.js"
import * as o from "../src/core/ops.js"
import { fusedRmsNorm, fusedRope, rmsNorm, rope, silu, siluMul } from "../src/core/routines/basic.js"
import { sumOfSquares } from "../src/core/routines/adamw.js"
import type { RoutineKernel } from "../src/core/routines/registry.js"
import { rng } from "../src/core/random.js"
import { decodeConfigSync, type LlamaConfig, presets, ropeInvFreq } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import { modes } from "../src/models/llama.js"
import { precisions } from "../src/models/optimizer.js"
import { planStep } from "../src/models/planner.js"
import { type TrainOptions, train } from "../src/models/train.js"
import { adamwStep, startState } from "./adamw-step.js"
import { golden, goldenNames, lossAndGrads } from "./golden.js"
import { maxRelDiff } from "./helpers.js"

const required = process.env.MINISEQ_CUDA === "1"
let cuda: CudaBackend | undefined
try {
  cuda = makeCudaBackend()
} catch (e) {
  if (!(e instanceof BackendUnavailable)) throw e
  if (required) throw e
}
afterAll(async () => {
  await cuda?.destroy()
})

describe("AdamW as one routine per parameter", () => {
  it("the routine form computes the unfused graph's update bitwise (CPU, fp32 and bf16-mixed)", async () => {
    const state = startState()
    for (const precision of ["fp32", "bf16-mixed"] as const) {
      const plain = await adamwStep(cpuWithBfloat16(), precision, false, state)
      const routine = await adamwStep(cpuWithBfloat16(), precision, true, state)
      expect(routine.read).toEqual(plain.read)
    }
  })

  it("a backend's fused adamw kernel is handed its outputs in place (the executor's donation)", async () => {
    const cpu = makeCpuBackend()
    const calls: boolean[] = []
    const adamw = ({ inputs: i, outputs: o }: Parameters<RoutineKernel<"adamw">>[0]) => {
      calls.push(o.w === i.w && o.m === i.m && o.v === i.v && o.master === i.master)
    }
    const spy: BackendImpl = { ...cpu, routines: { adamw } }
    const r = await adamwStep(spy, "fp32", true, startState())
    expect(calls).toEqual([true, true]) // each parameter's w, m, v written over themselves
    expect(r.inPlace).toBe(r.outputs)
  })
})

type FloatType = "float32" | "float64" | "bfloat16"

/**
 * y = f(inputs) on `backend`, and the gradient of Σ y·r for random r with respect to every
 * input: [y, ...gradients] read back, and the gradient tensors. Inputs are drawn by `draw` from
 * uniform [0, 1) and rounded to bf16, so every dtype sees exactly the same values.
 */
async function valueAndGrads(
  backend: BackendImpl,
  dtype: FloatType,
  seed: number,
  inputs: Record<string, { shape: number[]; draw: (u: number) => number }>,
  f: (t: Record<string, Tensor>) => Tensor,
) {
  const random = rng(seed)
  const data = (shape: readonly number[], draw: (u: number) => number) => {
    const v = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => draw(random()))
    roundToBfloat16(v)
    return dtype === "float64" ? Float64Array.from(v) : v
  }
  const names = Object.keys(inputs)
  const t = Object.fromEntries(names.map((n) => [n, input(n, inputs[n]!.shape, dtype)]))
  const y = f(t)
  const r = input("r", y.shape, dtype)
  const { grads } = valueAndGrad(o.sum(o.cast(o.mul(y, r), "float32")), t)
  const feeds = new Map([
    ...names.map((n) => [t[n]!, data(inputs[n]!.shape, inputs[n]!.draw)] as const),
    [r, data(y.shape, (u) => u - 0.5)] as const,
  ])
  const run = await Effect.runPromise(
    evaluate([y, ...names.map((n) => grads[n]!)], feeds).pipe(Effect.provide(Layer.succeed(Backend, backend))),
  )
  return { values: run.values, grads }
}

/** An RMSNorm of x [rows, d] with weight [d]: y, dx, dw. */
const normCase = async (
  backend: BackendImpl,
  dtype: FloatType,
  fused: boolean,
  rows: number,
  d: number,
  seed: number,
) =>
  (
    await valueAndGrads(
      backend,
      dtype,
      seed,
      { x: { shape: [rows, d], draw: (u) => (u - 0.5) * 4 }, w: { shape: [d], draw: (u) => 0.5 + u } },
      ({ x, w }) => (fused ? fusedRmsNorm : rmsNorm)(x!, w!, 1e-5),
    )
  ).values

/** silu(a)·b: y, da, db. */
const siluMulCase = async (backend: BackendImpl, dtype: FloatType, fused: boolean, n: number, seed: number) =>
  (
    await valueAndGrads(
      backend,
      dtype,
      seed,
      { a: { shape: [n], draw: (u) => (u - 0.5) * 8 }, b: { shape: [n], draw: (u) => (u - 0.5) * 8 } },
      ({ a, b }) => (fused ? siluMul(a!, b!) : o.mul(silu(a!), b!)),
    )
  ).values

/** RoPE of x [rows, S, D] at positions offset..: y and dx, and the dx tensor. */
async function ropeCase(
  backend: BackendImpl,
  dtype: FloatType,
  fused: boolean,
  shape: [number, number, number],
  offset: number,
  seed: number,
  invFreq?: readonly number[],
) {
  const { values, grads } = await valueAndGrads(
    backend,
    dtype,
    seed,
    { x: { shape, draw: (u) => u - 0.5 } },
    ({ x }) => (fused ? fusedRope(x!, 500000, offset, invFreq) : rope(x!, 500000, offset, false, invFreq)),
  )
  return { values, dx: grads.x! }
}

/** Llama 3.2's scaled RoPE frequencies (rope_scaling "llama3", factor 32) for a head of D. */
const llama3Frequencies = (D: number): number[] =>
  ropeInvFreq(decodeConfigSync({ ...presets["llama-3.2-1b"], head_dim: D }))

/** Σ x² of seeded values of `shape` in `dtype` on `backend`: the routine, or the unfused graph. */
async function sumOfSquaresCase(backend: BackendImpl, dtype: DType, shape: number[], fused: boolean) {
  const random = rng(shape.reduce((a, b) => a * b, 1))
  const x = input("x", shape, dtype)
  const y = fused ? sumOfSquares(x) : o.sum(o.square(o.cast(x, "float32")))
  const data = Float32Array.from({ length: x.size }, () => (random() - 0.5) * 0.1)
  const r = await Effect.runPromise(
    evaluate([y], new Map([[x, dtype === "float64" ? Float64Array.from(data) : data]])).pipe(
      Effect.provide(Layer.succeed(Backend, backend)),
    ),
  )
  return r.values[0]![0]!
}

describe("the gradient norm's sum of squares as one routine", () => {
  it("its reference body is the unfused graph, bit for bit (CPU, bf16 emulated)", async () => {
    for (const shape of [[700], [40, 70]])
      expect(await sumOfSquaresCase(cpuWithBfloat16(), "bfloat16", shape, true)).toBe(
        await sumOfSquaresCase(cpuWithBfloat16(), "bfloat16", shape, false),
      )
  })
  it.skipIf(cuda === undefined)(
    "on CUDA one read of x gives the unfused graph's sum bit for bit (vectors, matrices, split reductions)",
    async () => {
      for (const dtype of ["float32", "bfloat16"] as const)
        for (const shape of [[700], [300000], [400, 700], [20000, 64], [1, 5000]]) {
          const what = `${dtype} [${shape.join(", ")}]`
          const fused = await sumOfSquaresCase(cuda!, dtype, shape, true)
          expect(fused, what).toBe(await sumOfSquaresCase(cuda!, dtype, shape, false))
          const reference = await sumOfSquaresCase(makeCpuBackend(), "float64", shape, false)
          expect(Math.abs(fused - reference) / reference, what).toBeLessThan(dtype === "float32" ? 1e-6 : 1e-2)
        }
    },
  )
})

describe("RoPE as one routine", () => {
  it("the routine form gives the plain ops' value and gradient, and its backward reads only the cotangent (CPU, float64)", async () => {
    for (const invFreq of [undefined, llama3Frequencies(8)]) {
      const plain = await ropeCase(makeCpuBackend(), "float64", false, [3, 17, 8], 5, 6, invFreq)
      const routine = await ropeCase(makeCpuBackend(), "float64", true, [3, 17, 8], 5, 6, invFreq)
      const what = invFreq ? "scaled" : "θ^(−2i/D)"
      routine.values.forEach((v, i) =>
        expect(maxRelDiff(v, plain.values[i]!), `${what} output ${i}`).toBeLessThan(1e-14),
      )
      const backward = routine.dx.node as { op: string; attrs: { name: string }; inputs: readonly unknown[] }
      expect(`${backward.op} ${backward.attrs.name} with ${backward.inputs.length} input`).toBe(
        "region rope.vjp with 1 input",
      )
    }
  })

  it("a scaled RoPE's frequencies change the rotation (the table is not ignored)", async () => {
    const plain = await ropeCase(makeCpuBackend(), "float64", true, [1, 9, 8], 0, 6)
    const scaled = await ropeCase(makeCpuBackend(), "float64", true, [1, 9, 8], 0, 6, llama3Frequencies(8))
    expect(maxRelDiff(scaled.values[0]!, plain.values[0]!)).toBeGreaterThan(1e-3)
  })
})

describe("SwiGLU's product as one routine", () => {
  it("the routine form gives the plain ops' value and gradients (CPU, float64)", async () => {
    const plain = await siluMulCase(makeCpuBackend(), "float64", false, 300, 4)
    const routine = await siluMulCase(makeCpuBackend(), "float64", true, 300, 4)
    routine.forEach((v, i) => expect(maxRelDiff(v, plain[i]!), `output ${i}`).toBeLessThan(1e-14))
  })
})

describe("RMSNorm as one routine", () => {
  it("the routine form gives the plain ops' value and gradients (CPU, float64)", async () => {
    const plain = await normCase(makeCpuBackend(), "float64", false, 7, 24, 1)
    const routine = await normCase(makeCpuBackend(), "float64", true, 7, 24, 1)
    routine.forEach((v, i) => expect(maxRelDiff(v, plain[i]!), `output ${i}`).toBeLessThan(1e-14))
  })
})

describe("the CUDA profiler's bookkeeping (a stand-in device)", () => {
  it("pairs each kernel's start and end marks, names them, and counts the gaps as GPU idle", () => {
    // The stand-in's clock: the k-th mark comes k ms after the one before it.
    let marks: number[] = []
    const dev = {
      profileMark: (id: number) => {
        marks.push(id)
      },
      profileCollect: () => {
        const out = Float64Array.from(marks.flatMap((id, k) => [id, k]))
        marks = []
        return out
      },
    } as unknown as NativeDevice
    const cpu = makeCpuBackend()
    const { backend, profiler } = withProfiler(cpu, dev)
    const [a, b, c] = [backend.alloc("float32", 4), backend.alloc("float32", 4), backend.alloc("float32", 4)]
    backend.fill(a, 1) // not profiled: before start()
    profiler.start()
    backend.binary("add", a, a, b) // marks 0 (start), 1 (end: 1 ms)
    backend.binary("mul", b, b, c) // marks 2 (start: 2 ms idle), 3 (end: 3 ms)
    backend.binary("add", c, c, a) // marks 4 (4 ms idle), 5 (5 ms)
    const entries = profiler.stop()
    expect(entries).toEqual([
      { name: "binary.add", calls: 2, ms: 6 },
      { name: "(gpu idle)", calls: 0, ms: 6 },
      { name: "binary.mul", calls: 1, ms: 3 },
    ])
    backend.binary("add", a, a, b) // not profiled: after stop()
    expect(marks).toEqual([])
  })
})

describe.skipIf(cuda === undefined)("every architecture on CUDA (the golden fixtures)", () => {
  for (const name of goldenNames) {
    it(`${name}: float32, mst+checkpoint, the fused kernels where they apply: loss and every gradient within 2e-5`, async () => {
      const g = await golden(name)
      const opts = {
        mode: "mst+checkpoint",
        mlpChunks: 3,
        lmChunks: 4,
        fused: Object.keys(cuda!.routines ?? {}),
      } as const
      const got = await lossAndGrads(g, opts, "float32", Layer.succeed(Backend, cuda! as BackendImpl))
      expect(Math.abs(got.loss - g.loss) / g.loss).toBeLessThan(2e-5)
      for (const [n, grad] of Object.entries(got.grads)) expect(maxRelDiff(grad, g.grads[n]!), n).toBeLessThan(2e-5)
    })
  }
})

describe.skipIf(cuda === undefined)("cuda training", () => {
  it("fused rope and rope.vjp against the CPU in float64 (odd S, offsets, head dims 8, 64, 128, scaled frequencies)", async () => {
    for (const [shape, offset, scaled] of [
      [[1, 1, 8], 0, false],
      [[4, 77, 64], 3, false],
      [[2, 130, 128], 0, false],
      [[1, 1, 8], 0, true],
      [[4, 77, 64], 3, true],
      [[2, 130, 128], 0, true],
    ] as const) {
      const invFreq = scaled ? llama3Frequencies(shape[2]) : undefined
      const want = await ropeCase(makeCpuBackend(), "float64", false, [...shape], offset, shape[1], invFreq)
      for (const [dtype, tol] of [
        ["float64", 1e-12],
        ["float32", 1e-4],
        ["bfloat16", 2e-2],
      ] as const) {
        const got = await ropeCase(cuda!, dtype, true, [...shape], offset, shape[1], invFreq)
        got.values.forEach((v, i) =>
          expect(
            maxRelDiff(v, want.values[i]!),
            `${dtype} [${shape}]${scaled ? " scaled" : ""} output ${i} (y, dx)`,
          ).toBeLessThan(tol),
        )
      }
    }
  })

  it("fused siluMul and siluMul.vjp against the CPU in float64", async () => {
    for (const n of [1, 1000, 70001]) {
      const want = await siluMulCase(makeCpuBackend(), "float64", false, n, n)
      for (const [dtype, tol] of [
        ["float64", 1e-13],
        ["float32", 1e-6],
        ["bfloat16", 1e-2],
      ] as const) {
        const got = await siluMulCase(cuda!, dtype, true, n, n)
        got.forEach((v, i) =>
          expect(maxRelDiff(v, want[i]!), `${dtype} n=${n} output ${i} (y, da, db)`).toBeLessThan(tol),
        )
      }
    }
  })

  it("fused rmsNorm and rmsNorm.vjp against the CPU in float64 (one row, many rows, odd widths)", async () => {
    for (const [rows, d] of [
      [1, 64],
      [37, 1000],
      [300, 2048],
      [1030, 96],
    ] as const) {
      const want = await normCase(makeCpuBackend(), "float64", false, rows, d, rows)
      for (const [dtype, tol] of [
        ["float64", 1e-12],
        ["float32", 2e-5],
        ["bfloat16", 2e-2],
      ] as const) {
        const got = await normCase(cuda!, dtype, true, rows, d, rows)
        got.forEach((v, i) =>
          expect(maxRelDiff(v, want[i]!), `${dtype} [${rows}, ${d}] output ${i} (y, dx, dw)`).toBeLessThan(tol),
        )
      }
    }
  })

  it("fused AdamW equals the CPU reference body bitwise, in place (fp32, bf16-mixed, bf16)", async () => {
    const state = startState()
    for (const precision of ["fp32", "bf16-mixed", "bf16"] as const) {
      const want = await adamwStep(cpuWithBfloat16(), precision, false, state)
      const got = await adamwStep(cuda!, precision, true, state)
      expect(got.inPlace, `${precision}: outputs written in place`).toBe(got.outputs)
      got.read.forEach((x, i) => expect(maxRelDiff(x, want.read[i]!), `${precision} output ${i}`).toBe(0))
    }
  })

  it("with its state in the host tier AdamW runs on the host's cores or over the bus, bitwise the same (fp32, bf16-mixed, bf16)", async () => {
    // 280,000 elements: the host update splits them over threads; the vector gets no decay.
    const shapes = { "w.matrix": [400, 700], "w.norm": [700] }
    const state = startState(shapes, 5)
    const was = process.env.MINISEQ_HOST_ADAMW
    try {
      for (const precision of ["fp32", "bf16-mixed", "bf16"] as const) {
        const want = await adamwStep(cpuWithBfloat16(), precision, false, state, { shapes })
        for (const [flag, updates] of [
          ["1", 2],
          ["0", 0],
        ] as const) {
          process.env.MINISEQ_HOST_ADAMW = flag
          const before = cuda!.hostUpdates()
          const got = await adamwStep(cuda!, precision, true, state, { shapes, offloaded: true })
          const what = `${precision}, MINISEQ_HOST_ADAMW=${flag}`
          expect(cuda!.hostUpdates() - before, `${what}: host updates`).toBe(updates)
          expect(got.inPlace, `${what}: outputs written in place`).toBe(got.outputs)
          got.read.forEach((x, i) => expect(maxRelDiff(x, want.read[i]!), `${what} output ${i}`).toBe(0))
        }
      }
    } finally {
      if (was === undefined) delete process.env.MINISEQ_HOST_ADAMW
      else process.env.MINISEQ_HOST_ADAMW = was
    }
  })

  const model: LlamaConfig = decodeConfigSync({
    hidden_size: 64,
    intermediate_size: 160,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 96,
    max_position_embeddings: 128,
  })
  const tokens = Int32Array.from({ length: 6000 }, (_, i) => (i * 37 + (i >> 4)) % 96)
  const base: TrainOptions = {
    model,
    mode: "vanilla",
    batch: 2,
    seq: 48,
    steps: 15,
    lr: 5e-3,
    warmup: 2,
    seed: 3,
    mlpChunks: 5,
    lmChunks: 7,
  }
  const on = async (backend: BackendImpl, opts: TrainOptions) => {
    const exit = await Effect.runPromiseExit(
      train(opts, makeBatches({ tokens, batch: 2, seq: 48, seed: 1 })).pipe(
        Effect.provide(Layer.succeed(Backend, backend)),
      ),
    )
    if (Exit.isFailure(exit)) throw new Error(String(exit.cause))
    return exit.value
  }

  it("bf16-mixed training follows the CPU's emulated bf16 run in every mode, and the planner equals the executor's count", async () => {
    const reference = await on(cpuWithBfloat16(), { ...base, precision: "bf16-mixed" })
    for (const mode of modes) {
      const opts: TrainOptions = { ...base, mode, precision: "bf16-mixed" }
      const r = await on(cuda!, opts)
      const losses = r.records.map((x) => x.loss)
      expect(
        maxRelDiff(
          losses,
          reference.records.map((x) => x.loss),
        ),
        `${mode} loss curve`,
      ).toBeLessThan(2e-2)
      expect(losses.at(-1)!).toBeLessThan(losses[0]! - 0.3)
      const planned = planStep(
        model,
        2,
        48,
        { mode, mlpChunks: 5, lmChunks: 7, precision: precisions["bf16-mixed"] },
        cuda!,
      ).peak
      expect(Math.max(...r.records.map((x) => x.peak)), `${mode} planned peak`).toBe(planned)
    }
  })

  it("offload (checkpoints, optimizer, both) changes no bit, and the device and host peaks the allocator counts are the plan's", async () => {
    for (const mode of ["checkpoint", "mst+checkpoint"] as const) {
      const opts: TrainOptions = { ...base, mode, steps: 4, precision: "bf16-mixed" }
      const reference = await on(cuda!, opts)
      const choices = [{ checkpoints: true }, { optimizer: true }, { checkpoints: true, optimizer: true }]
      // The last twice: AdamW over the bus, then on the host's cores (MINISEQ_HOST_ADAMW=1).
      for (const [k, offload] of [...choices, choices[2]!].entries()) {
        const host = k === choices.length
        const what = `${mode} ${JSON.stringify(offload)}${host ? " AdamW on the host" : ""}`
        const before = cuda!.memory()
        cuda!.memory().resetPeak()
        if (host) process.env.MINISEQ_HOST_ADAMW = "1"
        const updates = cuda!.hostUpdates()
        const r = await on(cuda!, { ...opts, offload }).finally(() => {
          delete process.env.MINISEQ_HOST_ADAMW
        })
        expect(cuda!.hostUpdates() > updates, what).toBe(host)
        expect(
          r.records.map((x) => x.loss),
          what,
        ).toEqual(reference.records.map((x) => x.loss))
        expect(r.parameters, what).toEqual(reference.parameters)
        const step = { mode, mlpChunks: 5, lmChunks: 7, precision: precisions["bf16-mixed"], offload }
        const planned = planStep(model, 2, 48, step, cuda!)
        expect(Math.max(...r.records.map((x) => x.peak)), `${what} device`).toBe(planned.peak)
        expect(Math.max(...r.records.map((x) => x.memory.host.peak)), `${what} host`).toBe(planned.host)
        // The allocator's own count of host-tier bytes: the state held between steps plus what a pass offloads.
        const after = cuda!.memory()
        expect(after.hostLive, what).toBe(before.hostLive)
        expect(after.hostPeak - before.hostLive, `${what} host, by the allocator`).toBe(planned.host)
      }
    }
  })

  it("a memory limit on the device gives OutOfMemory naming the mode and M that fit", async () => {
    // Between what vanilla needs and what mst+checkpoint in 16 pieces needs: only the latter fits.
    // (This tiny model's weights and moments dominate, so the two differ by a few percent.)
    const peakOf = (mode: TrainOptions["mode"], m: number) =>
      planStep(model, 2, 48, { mode, mlpChunks: m, lmChunks: m, precision: precisions["bf16-mixed"] }, cuda!).peak
    const need = peakOf("vanilla", 1)
    const fits = peakOf("mst+checkpoint", 16)
    expect(fits).toBeLessThan(need)
    const limit = Math.floor((need + fits) / 2)
    const small = makeCudaBackend({ memoryLimit: limit })
    try {
      const exit = await Effect.runPromiseExit(
        train({ ...base, steps: 1, precision: "bf16-mixed" }, makeBatches({ tokens, batch: 2, seq: 48, seed: 1 })).pipe(
          Effect.provide(Layer.succeed(Backend, small as BackendImpl)),
        ),
      )
      expect(String(Exit.isFailure(exit) ? exit.cause : "")).toMatch(/OutOfMemory[\s\S]*the planner finds --mode mst/)
    } finally {
      await small.destroy()
    }
  })
})
