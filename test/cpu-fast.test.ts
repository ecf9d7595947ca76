/**
 * The fast CPU backend beyond the conformance suite (which checks every kernel and routine of it
 * against the float64 reference): its WebAssembly module is the one its WAT assembles to, its
 * two-thread GEMM equals the one-thread GEMM bitwise, training on two threads equals training on
 * one bitwise, its SIMD exp rounds like Math.exp, buffers that do not fit its memory still give
 * the same losses, and training on it follows the reference's loss curve within float32 rounding.
 */
import { execFileSync } from "node:child_process"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { cpuBackendLayer } from "../src/backends/cpu/index.js"
import { fastCpuBackendLayer, makeFastCpuBackend } from "../src/backends/cpu-fast/index.js"
import { nodeHelper } from "../src/backends/cpu-fast/node-threads.js"
import { WasmGemm, wasmSimdMissing } from "../src/backends/cpu-fast/wasm-gemm.js"
import { rng } from "../src/core/random.js"
import { decodeConfigSync, presets } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import { train } from "../src/models/train.js"

/** Four steps of the tiny preset (batch 4 × 64, mst) on `layer`. */
function tinyRun(layer: ReturnType<typeof cpuBackendLayer>) {
  const model = decodeConfigSync(presets.tiny)
  const random = rng(1)
  const tokens = Int32Array.from({ length: 4 * 65 * 4 }, () => Math.floor(random() * model.vocab_size))
  return Effect.runPromise(
    train(
      { model, mode: "mst", batch: 4, seq: 64, steps: 4, lr: 3e-3, warmup: 1, seed: 1 },
      makeBatches({ tokens, batch: 4, seq: 64, seed: 1 }),
    ).pipe(Effect.provide(layer)),
  )
}

describe("cpu-fast", () => {
  it("runs its WebAssembly kernels here (no fallback notice but, where the addon is not built, the native GEMM's)", () => {
    expect(wasmSimdMissing()).toBeUndefined()
    // test/cpu-native.test.ts checks the addon is built wherever a compiler is.
    const notice = makeFastCpuBackend().notice
    if (notice !== undefined) expect(notice).toMatch(/^cpu-fast: products on the WebAssembly GEMM, not the native one/)
    expect(makeFastCpuBackend({ native: false }).notice).toBeUndefined()
  })

  it("kernels-wasm.ts is what scripts/build-wasm.mjs assembles from kernels.wat.mjs", () => {
    execFileSync(process.execPath, ["scripts/build-wasm.mjs", "--check"], { stdio: "pipe" })
  })

  it("the GEMM split over two threads equals the one-thread GEMM bitwise", async () => {
    const one = new WasmGemm(),
      two = new WasmGemm(nodeHelper)
    for (let i = 0; i < 100 && two.threads < 2; i++) await new Promise((r) => setTimeout(r, 20))
    expect(two.threads).toBe(2)
    const random = rng(3)
    for (const [m, n, k, transA, transB, accumulate] of [
      [130, 70, 300, false, false, true],
      [33, 170, 300, true, false, false],
      [90, 700, 61, false, true, true],
      [640, 600, 20, true, true, false],
    ] as const) {
      const spec = { batch: 2, m, n, k, transA, transB, accumulate }
      const A = Float32Array.from({ length: 2 * m * k }, () => random() - 0.5)
      const B = Float32Array.from({ length: 2 * k * n }, () => random() - 0.5)
      const [C1, C2] = [new Float32Array(2 * m * n).fill(1), new Float32Array(2 * m * n).fill(1)]
      one.matmul(A, B, C1, spec)
      two.matmul(A, B, C2, spec)
      expect(C2, `${m}×${n}×${k}`).toEqual(C1)
    }
    expect(two.helperChunks).toBeGreaterThan(0) // the helper did take part
  })

  it("two threads (GEMM row/column chunks, attention kv-head groups, exp runs) train bitwise like one", async () => {
    const two = makeFastCpuBackend({ helper: nodeHelper })
    for (let i = 0; i < 100 && two.threads() < 2; i++) await new Promise((r) => setTimeout(r, 20))
    expect(two.threads()).toBe(2)
    const [one, twoRun] = [
      await tinyRun(fastCpuBackendLayer(makeFastCpuBackend({ helper: "none" }))),
      await tinyRun(fastCpuBackendLayer(two)),
    ]
    expect(twoRun.records.map((r) => r.loss)).toEqual(one.records.map((r) => r.loss))
    expect(twoRun.parameters).toEqual(one.parameters)
    expect(two.helperChunks()).toBeGreaterThan(0)
  })

  it("buffers past the heap limit (JS arrays, copied per product) give the same losses", async () => {
    const small = makeFastCpuBackend({ helper: "none", heapBytes: 1 << 20 })
    const [full, spilled] = [
      await tinyRun(fastCpuBackendLayer(makeFastCpuBackend({ helper: "none" }))),
      await tinyRun(fastCpuBackendLayer(small)),
    ]
    const [a, b] = [full, spilled].map((r) => r.records.map((s) => s.loss))
    for (const [i, l] of b!.entries()) expect(Math.abs(l - a![i]!)).toBeLessThan(1e-6)
  })

  it("the SIMD exp rounds to float32 as Math.exp does (specials exact, the rest within 1 ulp)", () => {
    const g = new WasmGemm()
    const random = rng(7)
    const specials = [Number.NaN, Infinity, -Infinity, 0, -0, 88.72, 88.73, -87.3, -103.9, -104, 1e-30, 700, -700]
    const n = 1 << 16
    const x = g.heap.alloc(n)!,
      o = g.heap.alloc(n)!
    for (let i = 0; i < n; i++) x[i] = i < specials.length ? specials[i]! : (random() - 0.5) * 200
    expect(g.exp(x, o)).toBe(true)
    const want = Float32Array.from(x, Math.exp)
    const bits = (v: Float32Array) => new Int32Array(v.buffer.slice(v.byteOffset, v.byteOffset + 4 * v.length))
    for (let i = 0; i < specials.length; i++) expect(Object.is(o[i], want[i]), `exp(${x[i]})`).toBe(true)
    const [got, ref] = [bits(Float32Array.from(o)), bits(want)]
    let off = 0
    for (let i = specials.length; i < n; i++) {
      expect(Math.abs(got[i]! - ref[i]!), `exp(${x[i]}) = ${o[i]}, Math.exp: ${want[i]}`).toBeLessThanOrEqual(1)
      if (got[i] !== ref[i]) off++
    }
    expect(off).toBeLessThan(n / 1e4)
  })

  it("trains like the reference: the same losses within float32 rounding", async () => {
    const [ref, fast] = [await tinyRun(cpuBackendLayer()), await tinyRun(fastCpuBackendLayer())]
    const losses = (r: typeof ref) => r.records.map((s) => s.loss)
    for (const [i, l] of losses(fast).entries()) expect(Math.abs(l - losses(ref)[i]!)).toBeLessThan(1e-5)
  })
})
