/**
 * cpu-fast's native kernels (native/cpu/, loaded by src/backends/cpu-fast/native-gemm.ts): built
 * wherever a C++ compiler is (CI has g++), the GEMM equal to a float64 product within float32
 * rounding at every transpose, edge tile and blocking boundary (and its AVX2 kernel too, forced
 * in a child process), the exp rounding like Math.exp, the backend choosing and reporting it,
 * and its products on two threads bitwise those on one. The conformance suite checks the
 * backend's primitives and routines (attention, cross-entropy) on it against the reference.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { describe, expect, it } from "vitest"
import { reduceSumF32 } from "../src/backends/cpu-fast/elementwise.js"
import { sharedMemory } from "../src/backends/cpu-fast/heap.js"
import { makeFastCpuBackend } from "../src/backends/cpu-fast/index.js"
import { loadNativeGemm, type NativeGemm, nativeGemmPath } from "../src/backends/cpu-fast/native-gemm.js"
import { rng } from "../src/core/random.js"

const compilerHere = ["g++", "c++", "clang++"].some(
  (c) => spawnSync(c, ["--version"], { stdio: "ignore" }).status === 0,
)
const x86 = process.arch === "x64"
const loaded = loadNativeGemm()
const native = typeof loaded === "object" ? loaded : undefined

/** A shared memory, a float32 view of it, and `native`'s kernels bound to it. */
function bound(g: NativeGemm, floats: number) {
  const memory = sharedMemory(Math.ceil((4 * floats) / 65536) + 1, 32768)
  if (typeof memory === "string") throw new Error(memory)
  const f32 = new Float32Array(memory.buffer)
  return { f32, kernels: g.bind(f32) }
}

/**
 * The largest |C − C64| / (Σ_p |a||b| · k · 2⁻²⁴) over C of op(A)·op(B) (+ C0 when accumulating):
 * the float32 rounding bound of a k-term sum, so ≤ 1 passes.
 */
function gemmError(
  gemm: (...a: number[]) => void,
  f32: Float32Array,
  [m, n, k, tA, tB, acc]: [number, number, number, boolean, boolean, boolean],
  random: () => number,
): number {
  const [A, B, C] = [0, m * k, m * k + k * n]
  for (let i = 0; i < m * k + k * n + m * n; i++) f32[i] = random() * 2 - 1
  const C0 = f32.slice(C, C + m * n)
  const [rsA, csA, rsB, csB] = [tA ? 1 : k, tA ? m : 1, tB ? 1 : n, tB ? k : 1]
  gemm(4 * A, 4 * rsA, 4 * csA, 4 * B, 4 * rsB, 4 * csB, 4 * C, 4 * n, m, n, k, acc ? 1 : 0)
  let worst = 0
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = acc ? C0[i * n + j]! : 0,
        mag = Math.abs(s)
      for (let p = 0; p < k; p++) {
        const ab = f32[A + i * rsA + p * csA]! * f32[B + p * rsB + j * csB]!
        s += ab
        mag += Math.abs(ab)
      }
      worst = Math.max(worst, Math.abs(f32[C + i * n + j]! - s) / (mag * (k + 1) * 2 ** -24 + 1e-30))
    }
  return worst
}

// Shapes across the kernel's tiles (12 × 32, 6 × 16), its blocks (KC 256, MC 192, NC 1024) and
// their edges, every transpose, with and without accumulation.
const shapes: Array<[number, number, number, boolean, boolean, boolean]> = [
  [1, 1, 1, false, false, false],
  [13, 33, 7, false, false, false],
  [12, 32, 256, false, true, true],
  [25, 70, 257, true, false, false],
  [200, 40, 300, true, true, true],
  [7, 1030, 19, false, false, true],
  [64, 96, 513, false, true, false],
]

describe("cpu-fast native kernels", () => {
  it("are built and loaded wherever a C++ compiler is (x86-64)", () => {
    if (!(compilerHere && x86)) {
      // Nothing to build with: the backend must say so in one line, not fail.
      expect(typeof loaded === "string" || loaded === undefined).toBe(true)
      return
    }
    expect(loaded, `native GEMM at ${nativeGemmPath()}`).toBeTypeOf("object")
    expect(["avx512", "avx2"]).toContain(native!.kernel)
    const be = makeFastCpuBackend({ helper: "none" })
    expect(be.gemmKernel).toBe(`native ${native!.kernel}`)
    expect(be.notice).toBeUndefined()
    expect(makeFastCpuBackend({ helper: "none", native: false }).gemmKernel).toBe("wasm simd128")
  })

  it.runIf(native !== undefined)(
    "GEMM: within float32 rounding of the float64 product, every shape and transpose",
    () => {
      const { f32, kernels } = bound(native!, 3 * 1100 * 600)
      for (const [i, shape] of shapes.entries())
        expect(gemmError(kernels.gemm, f32, shape, rng(i + 1)), `${shape}`).toBeLessThanOrEqual(1)
    },
  )

  it.runIf(native !== undefined && x86)("GEMM: the AVX2+FMA kernel too (forced in a child process)", () => {
    const script = `
      const { loadNativeGemm } = await import(${JSON.stringify(new URL("../src/backends/cpu-fast/native-gemm.ts", import.meta.url).href)})
      const g = loadNativeGemm()
      process.stdout.write(JSON.stringify({ kernel: g.kernel, tile: g.tile }))`
    const out = execFileSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      env: { ...process.env, MINISEQ_CPU_SGEMM: "avx2" },
      encoding: "utf8",
    })
    const { kernel, tile } = JSON.parse(out) as { kernel: string; tile: number[] }
    if (kernel === "none") return // a CPU without AVX2: nothing to check
    expect(kernel).toBe("avx2")
    expect(tile).toEqual([6, 16])
    const check = `
      const { loadNativeGemm } = await import(${JSON.stringify(new URL("../src/backends/cpu-fast/native-gemm.ts", import.meta.url).href)})
      const { rng } = await import(${JSON.stringify(new URL("../src/core/random.ts", import.meta.url).href)})
      const g = loadNativeGemm()
      const memory = new WebAssembly.Memory({ initial: 200, maximum: 32768, shared: true })
      const f32 = new Float32Array(memory.buffer)
      const { gemm } = g.bind(f32)
      const gemmError = ${gemmError.toString()}
      const shapes = ${JSON.stringify(shapes)}
      process.stdout.write(JSON.stringify(shapes.map((s, i) => gemmError(gemm, f32, s, rng(i + 1)))))`
    const errors = JSON.parse(
      execFileSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", check], {
        env: { ...process.env, MINISEQ_CPU_SGEMM: "avx2" },
        encoding: "utf8",
      }),
    ) as number[]
    for (const [i, e] of errors.entries()) expect(e, `${shapes[i]}`).toBeLessThanOrEqual(1)
  })

  it.runIf(native?.bind !== undefined)(
    "exp: rounds to float32 as Math.exp does (specials exact, the rest within 1 ulp), Σ in float64",
    () => {
      const { f32, kernels } = bound(native!, 1 << 18)
      if (kernels.expaffine === undefined) return // no AVX-512: the WebAssembly exp runs (test/cpu-fast.test.ts)
      const specials = [Number.NaN, Infinity, -Infinity, 0, -0, 88.72, 88.73, -87.3, -103.9, -104, 1e-30, 700, -700]
      const n = 1 << 16
      const random = rng(7)
      for (let i = 0; i < n; i++) f32[i] = i < specials.length ? specials[i]! : (random() - 0.5) * 200
      kernels.expaffine(0, 4 * n, specials.length, 1, 0)
      for (let i = 0; i < specials.length; i++)
        expect(Object.is(f32[n + i], Math.fround(Math.exp(f32[i]!))), `exp(${f32[i]})`).toBe(true)
      // Away from the specials: an affine argument (scale, shift) and the returned Σ.
      const [scale, shift] = [0.37, 3.5]
      const sum = kernels.expaffine(4 * specials.length, 4 * (n + specials.length), n - specials.length, scale, shift)
      let off = 0,
        want = 0
      const bits = new Int32Array(f32.buffer)
      const w = new Float32Array(1),
        wb = new Int32Array(w.buffer)
      for (let i = specials.length; i < n; i++) {
        const e = Math.exp(f32[i]! * scale - shift)
        want += e
        w[0] = e
        const d = Math.abs(bits[n + i]! - wb[0]!)
        expect(d, `exp(${f32[i]}·${scale} − ${shift})`).toBeLessThanOrEqual(1)
        if (d !== 0) off++
      }
      expect(off).toBeLessThan(n / 1e4)
      expect(Math.abs(sum - want) / want).toBeLessThan(1e-12)
    },
  )

  it.runIf(native !== undefined)("reduceSum: bitwise the JS kernel's float64 sums (same order), every layout", () => {
    const { f32, kernels } = bound(native!, 1 << 20)
    if (kernels.reduceSum === undefined) return // no AVX-512: the JS kernel runs
    const random = rng(5)
    for (const [outer, axis, inner] of [
      [2048, 128, 1],
      [13, 7, 1],
      [1, 8, 32768],
      [3, 5, 17],
      [1, 1, 1],
      [9, 0, 1],
    ] as Array<[number, number, number]>) {
      const n = outer * axis * inner
      for (let i = 0; i < n; i++) f32[i] = (random() - 0.5) * 10 ** Math.floor(random() * 6)
      const want = new Float32Array(outer * inner)
      expect(reduceSumF32("sum", f32.subarray(0, n), want, outer, axis, inner)).toBe(true)
      kernels.reduceSum(0, 4 * n, outer, axis, inner)
      expect(f32.slice(n, n + outer * inner), `${outer}×${axis}×${inner}`).toEqual(want)
    }
  })

  it.runIf(native !== undefined)("products split over two threads equal one thread's bitwise", async () => {
    const one = makeFastCpuBackend({ helper: "none" }),
      two = makeFastCpuBackend()
    for (let i = 0; i < 100 && two.threads() < 2; i++) await new Promise((r) => setTimeout(r, 20))
    expect(two.threads()).toBe(2)
    const random = rng(3)
    for (const [m, n, k, transB] of [
      [2048, 128, 384, false],
      [128, 384, 2048, true],
      [300, 50, 70, false],
    ] as Array<[number, number, number, boolean]>) {
      const host = [m * k, k * n].map((len) => Float32Array.from({ length: len }, () => random() - 0.5))
      const results: Float32Array[] = []
      for (const be of [one, two]) {
        const [a, b, c] = [m * k, k * n, m * n].map((len) => be.alloc("float32", len))
        be.write(a!, host[0]!)
        be.write(b!, host[1]!)
        be.matmul(a!, b!, c!, { batch: 1, m, n, k, transA: false, transB })
        results.push((await be.read(c!)) as Float32Array)
      }
      expect(results[1], `${m}×${n}×${k}`).toEqual(results[0])
    }
    expect(two.helperChunks()).toBeGreaterThan(0)
  })
})
