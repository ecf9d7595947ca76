/**
 * Backend conformance: one suite, run for every backend. Each case builds a graph with the core
 * ops, evaluates it in float32 on the backend under test, and compares it with the same graph
 * evaluated on the CPU backend in float64 (from the same float32 inputs). Cases cover every
 * primitive kernel, every routine (values and gradients), and edge sizes (1, odd, not a multiple
 * of the matmul tile, long reductions). A second part calls kernels directly for what graphs
 * cannot express (aliasing, negative strides, NaN, huge grids), checked against values computed
 * here; a third checks chunked(M) against unchunked on each backend.
 *
 * The WebGPU cases are skipped, with the reason printed, on a machine without an adapter —
 * except in CI (CI=true), where a missing adapter fails the suite: CI is expected to have Mesa's
 * llvmpipe. The CUDA cases likewise run where the addon finds a GPU (on the GPU machine,
 * scripts/cuda-device.sh runs this file bundled, with MINISEQ_CUDA=1 making a missing GPU fail).
 */
import { Effect, Layer } from "effect"
import fc from "fast-check"
import { afterAll, describe, expect, it } from "vitest"
import { Backend, type BackendImpl, type Buffer } from "../src/core/backend.js"
import { mapKernels } from "../src/core/routines/registry.js"
import { cpuWithBfloat16, roundToBfloat16 } from "../src/backends/cpu/bfloat16.js"
import { cpuBackendLayer, makeCpuBackend } from "../src/backends/cpu/index.js"
import { COMPAT_TILE, CORE_TILE, makeWebGpuBackend, type MatmulTile, tileName, type WebGpuBackend, webgpuBackendLayer } from "../src/backends/webgpu/index.js"
import { makeCudaBackend } from "../src/backends/cuda/index.js"
import { valueAndGrad } from "../src/core/autodiff.js"
import { accumulatorDType, type DType, hostArray, type HostArray } from "../src/core/dtype.js"
import { BackendUnavailable, DTypeError, OutOfMemory } from "../src/core/errors.js"
import { evaluate, type Feed } from "../src/core/executor.js"
import { input, type Tensor } from "../src/core/graph.js"
import * as o from "../src/core/ops.js"
import { rng } from "../src/core/random.js"
import { checkpoint, chunked } from "../src/core/regions.js"
import { attention } from "../src/core/routines/attention.js"
import { linear, logsumexp, rmsNorm, rope, silu, softmax, swiglu } from "../src/core/routines/basic.js"
import { crossEntropy, sumCrossEntropy, targetCount } from "../src/core/routines/cross-entropy.js"
import { intArray, maxRelDiff, propertyRuns, randomArray } from "./helpers.js"

process.env.EGL_PLATFORM ??= "surfaceless" // Mesa's EGL on a machine without a display

// ---------------------------------------------------------------------------------------------
// The backends under test
// ---------------------------------------------------------------------------------------------

interface Subject {
  readonly name: string
  readonly impl?: BackendImpl
  /** Why the backend cannot run here (its cases are skipped). */
  readonly unavailable?: string
}

const inCI = process.env.CI === "true" || process.env.CI === "1"
let webgpu: WebGpuBackend | undefined
let webgpuMissing: string | undefined
try {
  webgpu = await makeWebGpuBackend()
} catch (e) {
  webgpuMissing = e instanceof BackendUnavailable ? e.message : `webgpu failed to start: ${String(e)}`
  console.warn(`conformance: WebGPU cases ${inCI ? "FAIL (CI must provide an adapter)" : "skipped"}: ${webgpuMissing}`)
}
afterAll(async () => { await webgpu?.destroy() })

let cuda: BackendImpl & { destroy(): Promise<void> } | undefined
let cudaMissing: string | undefined
try {
  cuda = makeCudaBackend()
} catch (e) {
  if (!(e instanceof BackendUnavailable) || process.env.MINISEQ_CUDA === "1") throw e
  cudaMissing = e.reason
}
afterAll(async () => { await cuda?.destroy() })

const subjects: Subject[] = [
  { name: "cpu", impl: makeCpuBackend() },
  webgpu !== undefined ? { name: "webgpu", impl: webgpu } : { name: "webgpu", unavailable: webgpuMissing ?? "unknown" },
  cuda !== undefined ? { name: "cuda", impl: cuda } : { name: "cuda", unavailable: cudaMissing ?? "unknown" },
]

if (webgpu === undefined && inCI) {
  describe("webgpu in CI", () => {
    it("has a WebGPU adapter (CI is expected to provide Mesa llvmpipe)", () => {
      expect.fail(webgpuMissing)
    })
  })
}

/** The reference: CPU in float64, running every routine's reference body (no fused kernels). */
const reference = cpuBackendLayer(makeCpuBackend({ fused: false }))
const layerOf = (impl: BackendImpl) => Layer.succeed(Backend, impl)

async function evalOn(layer: Layer.Layer<Backend>, outputs: readonly Tensor[], feeds: ReadonlyMap<Tensor, Feed>): Promise<HostArray[]> {
  return (await Effect.runPromise(evaluate(outputs, feeds).pipe(Effect.provide(layer)))).values
}

/** Non-finite values must match exactly; finite ones within `tol` of the largest magnitude. */
function expectClose(what: string, got: HostArray, want: HostArray, tol: number): void {
  expect(got.length, `${what}: length`).toBe(want.length)
  const finite = (a: HostArray) => Array.from(a, (v) => (Number.isFinite(v) ? 0 : v))
  expect(finite(got), `${what}: non-finite values`).toEqual(finite(want))
  const keep = (a: HostArray) => Array.from(a, (v) => (Number.isFinite(v) ? v : 0))
  const err = maxRelDiff(keep(got), keep(want))
  if (!(err <= tol)) expect.fail(`${what}: max error ${err.toExponential(2)} relative to max-abs exceeds ${tol}`)
}

// ---------------------------------------------------------------------------------------------
// Graph cases
// ---------------------------------------------------------------------------------------------

interface Case {
  readonly name: string
  /** Shapes of the float inputs (float32 under test, float64 in the reference). */
  readonly inputs: readonly (readonly number[])[]
  /** Fixed int32 inputs. */
  readonly ints?: readonly { readonly shape: readonly number[]; readonly data: Int32Array }[]
  readonly build: (xs: readonly Tensor[], ints: readonly Tensor[], dtype: DType) => Tensor | readonly Tensor[]
  /** Inputs in [0.5, ∞) (log, sqrt, recip, div). */
  readonly positive?: boolean
  readonly std?: number
  /** Also compare the gradients of Σ_j Σ(y_j ⊙ r_j) with respect to every float input. */
  readonly grad?: boolean
  readonly tol?: number
}

const unaryCase = (name: string, f: (x: Tensor) => Tensor, opts: Partial<Case> = {}): Case =>
  ({ name, inputs: [[3, 37]], build: ([x]) => f(x!), grad: true, ...opts })
const binaryCase = (name: string, f: (a: Tensor, b: Tensor) => Tensor, opts: Partial<Case> = {}): Case =>
  ({ name, inputs: [[5, 13], [5, 13]], build: ([a, b]) => f(a!, b!), grad: true, ...opts })

/** int32 values including zeros, negatives and magnitudes whose products overflow. */
const mixedInts = (n: number, seed: number): Int32Array => {
  const r = rng(seed)
  return Int32Array.from({ length: n }, (_, i) => (i % 7 === 0 ? 0 : i % 5 === 0 ? Math.floor((r() - 0.5) * 4e9) : Math.floor((r() - 0.5) * 2000)))
}

const matmulCases: Case[] = [false, true].flatMap((transA) => [false, true].map((transB): Case => {
  const [m, n, k] = [130, 70, 33]
  return {
    name: `matmul 130×70×33, batch 2${transA ? ", transA" : ""}${transB ? ", transB" : ""}`,
    inputs: [transA ? [2, k, m] : [2, m, k], transB ? [2, n, k] : [2, k, n]],
    build: ([a, b]) => o.matmul(a!, b!, { transA, transB }),
    grad: true,
  }
}))

const cases: Case[] = [
  // Unary (3 × 37: odd, not a multiple of the workgroup size)
  unaryCase("neg", o.neg), unaryCase("exp", o.exp), unaryCase("sin", o.sin), unaryCase("cos", o.cos),
  unaryCase("log", o.log, { positive: true }), unaryCase("sqrt", o.sqrt, { positive: true }), unaryCase("recip", o.recip, { positive: true }),
  { name: "sin and cos of large angles", inputs: [[257]], std: 300, build: ([x]) => [o.sin(x!), o.cos(x!)] },
  { name: "one element", inputs: [[1]], build: ([x]) => o.exp(x!), grad: true },

  // Binary, scalars and broadcasts
  binaryCase("add", o.add), binaryCase("sub", o.sub), binaryCase("mul", o.mul), binaryCase("maximum", o.maximum),
  binaryCase("div", o.div, { positive: true }),
  binaryCase("less (float)", o.less, { grad: false }),
  { name: "equal (float): x = rowmax(x)", inputs: [[6, 11]], build: ([x]) => o.equal(x!, o.max(x!, -1, true)) },
  { name: "number operands (one-element buffers)", inputs: [[4, 6]], build: ([x]) => o.sub(o.mul(x!, 2.5), 1), grad: true },
  { name: "scalar tensor operand", inputs: [[4, 6], []], build: ([x, s]) => o.add(o.mul(x!, s!), s!), grad: true },
  { name: "broadcast both operands", inputs: [[3, 1], [1, 4]], build: ([a, b]) => o.mul(a!, b!), grad: true },
  {
    name: "where (int32 cond, scalar branch)", inputs: [[4, 6], [4, 6]], ints: [{ shape: [4, 6], data: intArray(24, 2, 3) }],
    build: ([a, b], [c]) => [o.where(c!, a!, b!), o.where(c!, 0.5, a!)], grad: true,
  },
  { name: "where (float cond)", inputs: [[4, 6], [4, 6]], build: ([a, b]) => o.where(o.less(a!, b!), a!, o.mul(b!, 3)), grad: true },

  // int32 arithmetic: exact, wrapping modulo 2^32, division truncating (and x / 0 = 0)
  {
    name: "int32 add, sub, mul, div, maximum, less, equal", inputs: [],
    ints: [{ shape: [97], data: mixedInts(97, 1) }, { shape: [97], data: mixedInts(97, 2) }],
    build: (_x, [a, b]) => [o.add(a!, b!), o.sub(a!, b!), o.mul(a!, b!), o.div(a!, b!), o.maximum(a!, b!), o.less(a!, b!), o.equal(a!, o.maximum(a!, b!))],
  },
  {
    name: "cast float → int32 (truncation) and int32 → float", inputs: [[50]], std: 20, ints: [{ shape: [50], data: mixedInts(50, 3) }],
    build: ([x], [i], dtype) => [o.cast(x!, "int32"), o.cast(i!, dtype)],
  },

  // Constants
  { name: "fill", inputs: [[5, 3]], build: ([x], _i, dtype) => [o.add(x!, o.full([5, 3], 1.5, dtype)), o.full([2, 2], -7, "int32"), o.zeros([3], dtype)] },
  { name: "iota (int32 and float)", inputs: [], build: (_x, _i, dtype) => [o.iota([4, 5], 1, "int32"), o.iota([3, 4, 2], 1, dtype), o.iota([7], 0, "int32")] },

  // Copies (strided views)
  { name: "broadcast", inputs: [[3, 1, 5]], build: ([x]) => o.broadcastTo(x!, [2, 3, 4, 5]), grad: true },
  { name: "permute (rank 4)", inputs: [[2, 3, 4, 5]], build: ([x]) => o.permute(x!, [3, 1, 0, 2]), grad: true },
  { name: "permute (rank 8)", inputs: [[2, 2, 2, 2, 2, 2, 2, 3]], build: ([x]) => o.permute(x!, [7, 6, 5, 4, 3, 2, 1, 0]), grad: true },
  { name: "transpose", inputs: [[37, 19]], build: ([x]) => o.transpose(x!), grad: true },
  { name: "slice", inputs: [[4, 9, 3]], build: ([x]) => o.slice(x!, 1, 2, 7), grad: true },
  { name: "pad", inputs: [[3, 5]], build: ([x]) => o.pad(x!, 1, 2, 1), grad: true },
  { name: "concat", inputs: [[2, 3, 4], [2, 5, 4]], build: ([a, b]) => o.concat([a!, b!], 1), grad: true },

  // Reductions: long contiguous rows, a long middle axis, the first axis, length-1 axes
  { name: "sum and max over a row of 1537", inputs: [[3, 1537]], build: ([x]) => [o.sum(x!, -1, true), o.max(x!, -1, true)], grad: true },
  { name: "sum and max over a middle axis of 1100", inputs: [[4, 1100, 3]], build: ([x]) => [o.sum(x!, 1), o.max(x!, 1)], grad: true },
  { name: "sum over the first axis", inputs: [[1000, 5]], build: ([x]) => o.sum(x!, 0), grad: true },
  { name: "reductions over an axis of length 1", inputs: [[5, 1, 3]], build: ([x]) => [o.sum(x!, 1), o.max(x!, 1)], grad: true },
  { name: "sum of everything", inputs: [[37, 29]], build: ([x]) => o.sum(x!), grad: true },
  { name: "mean of one element", inputs: [[1]], build: ([x]) => o.mean(x!), grad: true },

  // Matmul: every transpose combination on sizes that are not multiples of the tile, and more
  ...matmulCases,
  { name: "matmul 1×1×1", inputs: [[1, 1], [1, 1]], build: ([a, b]) => o.matmul(a!, b!), grad: true },
  { name: "matmul 65×17 · 17×129", inputs: [[65, 17], [17, 129]], build: ([a, b]) => o.matmul(a!, b!), grad: true },
  { name: "matmul [2, 5, 7] · shared [7, 3]", inputs: [[2, 5, 7], [7, 3]], build: ([a, b]) => o.matmul(a!, b!), grad: true },
  { name: "matmul with k = 1000", inputs: [[3, 1000], [1000, 4]], build: ([a, b]) => o.matmul(a!, b!), grad: true },

  // Index kernels
  { name: "gather", inputs: [[7, 5]], ints: [{ shape: [3, 4], data: intArray(12, 7, 4) }], build: ([t], [i]) => o.gather(t!, i!), grad: true },
  { name: "scatterAdd (repeated rows)", inputs: [[40, 3]], ints: [{ shape: [40], data: intArray(40, 6, 5) }], build: ([s], [i]) => o.scatterAdd(i!, s!, 6), grad: true },
  { name: "takeAlong", inputs: [[9, 6]], ints: [{ shape: [9], data: intArray(9, 6, 6) }], build: ([x], [i]) => o.takeAlong(x!, i!), grad: true },
  { name: "putAlong", inputs: [[9]], ints: [{ shape: [9], data: intArray(9, 6, 7) }], build: ([s], [i]) => o.putAlong(i!, s!, 6), grad: true },

  // Routines, values and gradients
  { name: "logsumexp (V = 1001)", inputs: [[5, 1001]], std: 3, build: ([x]) => logsumexp(x!), grad: true },
  { name: "logsumexp (V = 1)", inputs: [[4, 1]], build: ([x]) => logsumexp(x!), grad: true },
  { name: "softmax", inputs: [[3, 7]], build: ([x]) => softmax(x!), grad: true },
  { name: "rmsNorm", inputs: [[2, 3, 8], [8]], build: ([x, w]) => rmsNorm(x!, w!), grad: true },
  { name: "rope", inputs: [[1, 2, 5, 8]], build: ([x]) => rope(x!, 10000, 3), grad: true },
  { name: "silu", inputs: [[4, 9]], std: 3, build: ([x]) => silu(x!), grad: true },
  { name: "swiglu", inputs: [[2, 3, 4], [6, 4], [6, 4], [4, 6]], build: ([x, g, u, d]) => swiglu(x!, g!, u!, d!), grad: true },
  { name: "attention", inputs: [[2, 2, 7, 4], [2, 2, 7, 4], [2, 2, 7, 4]], build: ([q, k, v]) => attention(q!, k!, v!, { blockSize: 3 }), grad: true },
  { name: "attention (GQA)", inputs: [[1, 4, 6, 4], [1, 2, 6, 4], [1, 2, 6, 4]], build: ([q, k, v]) => attention(q!, k!, v!, { blockSize: 4 }), grad: true },
  {
    name: "crossEntropy with ignored targets", inputs: [[6, 5]], ints: [{ shape: [6], data: Int32Array.from([1, -100, 4, 0, -100, 2]) }],
    build: ([x], [t]) => crossEntropy(x!, t!), grad: true,
  },
  {
    name: "crossEntropy with ignored targets and weights", inputs: [[2, 6, 11], [2, 6]],
    ints: [{ shape: [2, 6], data: Int32Array.from([1, -100, 4, 0, 10, 2, -100, -100, 3, 7, 9, 5]) }],
    build: ([x, w], [t]) => crossEntropy(x!, t!, { weights: w! }), grad: true,
  },
]

/** The case's graph in `dtype`: inputs, the output tensors (values, then gradients). */
function instantiate(c: Case, dtype: DType) {
  const xs = c.inputs.map((s, i) => input(`x${i}`, s, dtype))
  const ints = (c.ints ?? []).map((f, i) => input(`i${i}`, f.shape, "int32"))
  const ys = [c.build(xs, ints, dtype)].flat() as Tensor[]
  const rs: Tensor[] = []
  let outputs = ys
  if (c.grad === true) {
    const loss = ys.map((y, j) => {
      const r = input(`r${j}`, y.shape, dtype)
      rs.push(r)
      return o.sum(o.mul(y, r))
    }).reduce((a, b) => o.add(a, b))
    const { grads } = valueAndGrad(loss, Object.fromEntries(xs.map((x, i) => [`x${i}`, x])))
    outputs = [...ys, ...xs.map((_, i) => grads[`x${i}`]!)]
  }
  return { xs, ints, rs, outputs }
}

async function checkCase(subject: Subject, c: Case, seed = 1): Promise<void> {
  const test = instantiate(c, "float32")
  const ref = instantiate(c, "float64")
  const floats = [...test.xs, ...test.rs].map((t, i) =>
    randomArray("float32", t.size, seed * 100 + i, { positive: c.positive === true && i < test.xs.length, std: c.std ?? 1 }) as Float32Array)
  const feeds = (g: typeof test, wide: boolean) => new Map<Tensor, Feed>([
    ...[...g.xs, ...g.rs].map((t, i) => [t, wide ? Float64Array.from(floats[i]!) : floats[i]!] as const),
    ...g.ints.map((t, i) => [t, c.ints![i]!.data] as const),
  ])
  const got = await evalOn(layerOf(subject.impl!), test.outputs, feeds(test, false))
  const want = await evalOn(reference, ref.outputs, feeds(ref, true))
  const values = test.outputs.length - (c.grad === true ? test.xs.length : 0) // then the gradients
  test.outputs.forEach((t, k) => {
    const what = `${c.name}: ${k < values ? `output ${k}` : `gradient of x${k - values}`}`
    if (t.dtype === "int32") expect(Array.from(got[k]!), what).toEqual(Array.from(want[k]!))
    else expectClose(what, got[k]!, want[k]!, c.tol ?? 1e-4)
  })
}

// ---------------------------------------------------------------------------------------------
// Direct kernel calls: what graphs cannot express, checked against values computed here
// ---------------------------------------------------------------------------------------------

function upload(b: BackendImpl, dtype: DType, values: ArrayLike<number>): Buffer {
  const buf = b.alloc(dtype, values.length)
  const host = hostArray(dtype, values.length)
  host.set(Array.from(values))
  b.write(buf, host)
  return buf
}
const download = async (b: BackendImpl, buf: Buffer): Promise<number[]> => Array.from(await b.read(buf))
const f32 = (xs: readonly number[]): number[] => Array.from(Float32Array.from(xs))

function kernelTests(b: BackendImpl): void {
  it("elementwise kernels may write into an input (out aliases a, b, or both)", async () => {
    const [a, c] = [[1.5, -2, 3.25, 4], [0.5, 0.25, -1, 8]]
    const x = upload(b, "float32", a), y = upload(b, "float32", c)
    b.binary("add", x, y, x) // x += y
    expect(await download(b, x)).toEqual(f32(a.map((v, i) => v + c[i]!)))
    b.binary("mul", x, y, y) // y = x · y
    expect(await download(b, y)).toEqual(f32(a.map((v, i) => (v + c[i]!) * c[i]!)))
    b.binary("sub", y, y, y)
    expect(await download(b, y)).toEqual([0, 0, 0, 0])
    b.unary("neg", x, x)
    expect(await download(b, x)).toEqual(f32(a.map((v, i) => -(v + c[i]!))))
    const cond = upload(b, "int32", [1, 0, 0, 1])
    b.where(cond, y, x, x) // x = cond ? 0 : x
    expect(await download(b, x)).toEqual(f32([0, -(a[1]! + c[1]!), -(a[2]! + c[2]!), 0]))
    for (const buf of [x, y, cond]) b.free(buf)
  })

  it("one-element operands are scalars; less/equal write into any out dtype", async () => {
    const x = upload(b, "float32", [1, 2, 3, 4, 5]), two = upload(b, "float32", [2])
    const out = b.alloc("float32", 5), bits = b.alloc("int32", 5)
    b.binary("div", two, x, out)
    expect(await download(b, out)).toEqual(f32([2, 1, 2 / 3, 0.5, 0.4]))
    b.binary("less", x, two, bits)
    expect(await download(b, bits)).toEqual([1, 0, 0, 0, 0])
    const ints = upload(b, "int32", [3, -1, 2, 2, 0]), twoInt = upload(b, "int32", [2])
    b.binary("equal", ints, twoInt, out)
    expect(await download(b, out)).toEqual([0, 0, 1, 1, 0])
    const yes = upload(b, "float32", [1])
    b.where(yes, x, two, out)
    expect(await download(b, out)).toEqual([1, 2, 3, 4, 5])
    for (const buf of [x, two, out, bits, ints, twoInt, yes]) b.free(buf)
  })

  it("int32: division by zero gives 0, INT_MIN / −1 wraps, float → int32 casts wrap like ToInt32", async () => {
    const a = upload(b, "int32", [7, -7, 5, -2147483648, 0]), d = upload(b, "int32", [2, 2, 0, -1, 0])
    const q = b.alloc("int32", 5)
    b.binary("div", a, d, q)
    expect(await download(b, q)).toEqual([3, -3, 0, -2147483648, 0])
    const values = [1.9, -1.9, 3e9, -3e9, NaN, Infinity, -0.5, 2147483648, 1e20]
    const x = upload(b, "float32", values), i = b.alloc("int32", values.length)
    b.cast(x, i)
    expect(await download(b, i)).toEqual(Array.from(Int32Array.from(Float32Array.from(values))))
    for (const buf of [a, d, q, x, i]) b.free(buf)
  })

  it("copy: negative and zero strides, rank 8, and an overlapping copy within one buffer", async () => {
    const src = upload(b, "float32", [0, 1, 2, 3, 4, 5])
    const dst = b.alloc("float32", 6)
    b.copy(src, { shape: [2, 3], strides: [-3, -1], offset: 5 }, dst, { shape: [2, 3], strides: [3, 1], offset: 0 })
    expect(await download(b, dst)).toEqual([5, 4, 3, 2, 1, 0])
    b.copy(src, { shape: [3, 2], strides: [0, 2], offset: 1 }, dst, { shape: [3, 2], strides: [1, 3], offset: 0 })
    expect(await download(b, dst)).toEqual([1, 1, 1, 3, 3, 3])
    b.copy(src, { shape: [5], strides: [1], offset: 0 }, src, { shape: [5], strides: [1], offset: 1 }) // shift right by one
    expect(await download(b, src)).toEqual([0, 0, 1, 2, 3, 4])
    // Rank 8 with strides that cannot be merged: compare with a naive odometer.
    const shape = [2, 3, 2, 2, 3, 2, 2, 2]
    const n = shape.reduce((p, q) => p * q, 1)
    const strides = [200, 1, 50, 7, 20, 3, 90, 11] // no two dims merge; the view reaches element 3 + 403
    const big = upload(b, "int32", Array.from({ length: 600 }, (_, k) => k))
    const out = b.alloc("int32", n)
    b.copy(big, { shape, strides, offset: 3 }, out, { shape, strides: shape.map((_, k) => shape.slice(k + 1).reduce((p, q) => p * q, 1)), offset: 0 })
    const expected: number[] = []
    const walk = (dim: number, at: number) => {
      if (dim === shape.length) { expected.push(at); return }
      for (let c = 0; c < shape[dim]!; c++) walk(dim + 1, at + c * strides[dim]!)
    }
    walk(0, 3)
    expect(await download(b, out)).toEqual(expected)
    for (const buf of [src, dst, big, out]) b.free(buf)
  })

  it("NaN wins maximum and max; empty reductions and k = 0 matmuls give their identities", async () => {
    const x = upload(b, "float32", [1, NaN, 3, -1, 2, 0]), y = upload(b, "float32", [5, 0, NaN, -2, 1, 0])
    const out = b.alloc("float32", 6)
    b.binary("maximum", x, y, out)
    expect(await download(b, out)).toEqual([5, NaN, NaN, -1, 2, 0])
    const row = upload(b, "float32", [...new Array(100).fill(1), NaN, ...new Array(99).fill(2)]), m = b.alloc("float32", 1)
    b.reduce("max", row, m, 1, 200, 1)
    expect(await download(b, m)).toEqual([NaN])
    const empty = b.alloc("float32", 0), sums = b.alloc("float32", 6)
    b.reduce("sum", empty, sums, 2, 0, 3)
    expect(await download(b, sums)).toEqual([0, 0, 0, 0, 0, 0])
    b.reduce("max", empty, sums, 2, 0, 3)
    expect(await download(b, sums)).toEqual(new Array(6).fill(-Infinity))
    b.matmul(empty, empty, out, { batch: 1, m: 2, n: 3, k: 0, transA: false, transB: false })
    expect(await download(b, out)).toEqual([0, 0, 0, 0, 0, 0])
    b.fill(out, 1)
    b.matmul(empty, empty, out, { batch: 1, m: 2, n: 3, k: 0, transA: false, transB: false, accumulate: true })
    expect(await download(b, out)).toEqual([1, 1, 1, 1, 1, 1])
    for (const buf of [x, y, out, row, m, empty, sums]) b.free(buf)
  })

  it("matmul with accumulate adds the product into out", async () => {
    const [m, n, k] = [70, 3, 5] // two row tiles of the WebGPU kernel
    const a = randomArray("float32", m * k, 21) as Float32Array, bt = randomArray("float32", n * k, 22) as Float32Array
    const c0 = randomArray("float32", m * n, 23) as Float32Array
    const [A, B, C] = [upload(b, "float32", a), upload(b, "float32", bt), upload(b, "float32", c0)]
    b.matmul(A, B, C, { batch: 1, m, n, k, transA: false, transB: true, accumulate: true })
    const want = Float64Array.from({ length: m * n }, (_, e) => {
      const [i, j] = [Math.floor(e / n), e % n]
      let s = c0[e]!
      for (let p = 0; p < k; p++) s += a[i * k + p]! * bt[j * k + p]!
      return s
    })
    expectClose("out + a·bᵀ", await b.read(C), want, 1e-6)
    for (const buf of [A, B, C]) b.free(buf)
  })

  it("scatterAdd sums duplicates in index order (deterministic, float32 like a sequential loop)", async () => {
    const count = 300, width = 3
    const idx = Int32Array.from({ length: count }, (_, i) => (i * 7) % 2)
    const src = randomArray("float32", count * width, 9, { std: 100 }) as Float32Array
    const i = upload(b, "int32", idx), s = upload(b, "float32", src), out = b.alloc("float32", 2 * width)
    b.scatterAdd(i, s, out, width)
    const expected = new Float32Array(2 * width)
    for (let r = 0; r < count; r++) for (let j = 0; j < width; j++) expected[idx[r]! * width + j]! += src[r * width + j]!
    expect(await download(b, out)).toEqual(Array.from(expected))
    for (const buf of [i, s, out]) b.free(buf)
  })

  it("a kernel over more than 65535 workgroups (a 2-D grid) reaches every element", async () => {
    const n = 4_300_000
    const data = Float32Array.from({ length: n }, (_, k) => k % 1000)
    const x = b.alloc("float32", n), y = b.alloc("float32", n)
    b.write(x, data)
    b.unary("neg", x, y)
    const got = await b.read(y)
    let bad = -1
    for (let k = 0; k < n && bad < 0; k++) if (got[k] !== -data[k]!) bad = k
    expect(bad, `first wrong element (of ${n})`).toBe(-1)
    b.free(x); b.free(y)
  })

  it("refuses misuse: freed buffers, float indices, mismatched sizes", async () => {
    const x = upload(b, "float32", [1, 2, 3])
    const fidx = upload(b, "float32", [0])
    const out = b.alloc("float32", 3)
    expect(() => b.gather(x, fidx, out, 3)).toThrow(/idx must be int32/)
    expect(() => b.binary("add", x, out, b.alloc("float32", 2))).toThrow(/3 elements or 1|2 elements or 1/)
    b.free(x)
    expect(() => b.unary("exp", x, out)).toThrow(/not a live buffer/)
    expect(() => b.free(x)).toThrow(/freed already/)
    b.free(fidx); b.free(out)
  })
}

// ---------------------------------------------------------------------------------------------
// chunked(M) equals unchunked, on each backend in float32
// ---------------------------------------------------------------------------------------------

/** float32 tolerance of the chunked-vs-unchunked property (relative to max-abs). */
const CHUNK_TOL = 1e-5

async function chunkGap(layer: Layer.Layer<Backend>, ref: Tensor, test: Tensor, wrt: Record<string, Tensor>, feeds: Map<Tensor, Feed>): Promise<number> {
  const a = valueAndGrad(ref, wrt)
  const b = valueAndGrad(test, wrt)
  const names = Object.keys(wrt)
  const out = await evalOn(layer, [a.value, ...names.map((n) => a.grads[n]!), b.value, ...names.map((n) => b.grads[n]!)], feeds)
  const half = names.length + 1
  let worst = 0
  for (let i = 0; i < half; i++) worst = Math.max(worst, maxRelDiff(out[i]!, out[half + i]!))
  return worst
}

function leaves(shapes: Record<string, number[]>, seed: number) {
  const ts: Record<string, Tensor> = {}
  const feeds = new Map<Tensor, Feed>()
  Object.entries(shapes).forEach(([name, shape], i) => {
    const t = input(name, shape, "float32")
    ts[name] = t
    feeds.set(t, randomArray("float32", t.size, seed + i, { std: 0.7 }))
  })
  return { ts, feeds }
}

/** M over 1..S+2, so M = 1, M = S, M > S and S % M ≠ 0 all come up. */
const mOf = (S: number, extra: number) => 1 + (extra % (S + 2))
const withCheckpoint = fc.constantFrom("chunked", "chunked(checkpoint)")
const seedArb = fc.integer({ min: 1, max: 1_000_000 })

function chunkTests(layer: Layer.Layer<Backend>): void {
  it("SwiGLU MLP", async () => {
    const dims = fc.record({ B: fc.integer({ min: 1, max: 2 }), S: fc.integer({ min: 1, max: 9 }), d: fc.integer({ min: 1, max: 5 }), I: fc.integer({ min: 1, max: 7 }), extraM: fc.nat(11), seed: seedArb, how: withCheckpoint })
    await fc.assert(fc.asyncProperty(dims, async ({ B, S, d, I, extraM, seed, how }) => {
      const { ts, feeds } = leaves({ x: [B, S, d], gate: [I, d], up: [I, d], down: [d, I], r: [B, S, d] }, seed)
      const { x, gate, up, down, r } = ts as Record<string, Tensor>
      const mlp = (h: Tensor) => swiglu(h, gate!, up!, down!)
      const wrapped = chunked(mOf(S, extraM), { axis: 1 })(how === "chunked" ? mlp : checkpoint(mlp))
      const ref = o.sum(o.mul(mlp(x!), r!))
      const test = o.sum(o.mul(wrapped(x!), r!))
      expect(await chunkGap(layer, ref, test, { x: x!, gate: gate!, up: up!, down: down! }, feeds)).toBeLessThan(CHUNK_TOL)
    }), { numRuns: propertyRuns(4) })
  })

  it("LM head + cross-entropy with ignored targets and token weights", async () => {
    const dims = fc.record({
      B: fc.integer({ min: 1, max: 2 }), S: fc.integer({ min: 1, max: 9 }), d: fc.integer({ min: 1, max: 5 }), V: fc.integer({ min: 2, max: 11 }),
      extraM: fc.nat(11), seed: seedArb, ignoreRate: fc.constantFrom(0, 0.3, 1), how: withCheckpoint,
    })
    await fc.assert(fc.asyncProperty(dims, async ({ B, S, d, V, extraM, seed, ignoreRate, how }) => {
      const { ts, feeds } = leaves({ h: [B, S, d], W: [V, d], w: [B, S] }, seed)
      const { h, W, w } = ts as Record<string, Tensor>
      const targets = input("targets", [B, S], "int32")
      const random = rng(seed)
      feeds.set(targets, Int32Array.from({ length: B * S }, () => (random() < ignoreRate ? -100 : Math.floor(random() * V))))
      const count = targetCount(targets, -100, "float32")
      const pieceLoss = (hh: Tensor, tt: Tensor, ww: Tensor) => sumCrossEntropy(linear(hh, W!), tt, { weights: ww })
      const wrapped = chunked(mOf(S, extraM), { axis: 1, combine: "sum" })(how === "chunked" ? pieceLoss : checkpoint(pieceLoss))
      const ref = o.div(pieceLoss(h!, targets, w!), count)
      const test = o.div(wrapped(h!, targets, w!), count)
      expect(await chunkGap(layer, ref, test, { h: h!, W: W!, w: w! }, feeds)).toBeLessThan(CHUNK_TOL)
    }), { numRuns: propertyRuns(4) })
  })
}

// ---------------------------------------------------------------------------------------------
// The suite, once per backend
// ---------------------------------------------------------------------------------------------

for (const subject of subjects) {
  const title = subject.unavailable === undefined ? subject.name : `${subject.name} (skipped: ${subject.unavailable})`
  describe.skipIf(subject.unavailable !== undefined)(title, () => {
    describe("graphs in float32 match the CPU in float64", () => {
      for (const c of cases) it(c.name, () => checkCase(subject, c))
    })
    describe("kernels called directly", () => kernelTests(subject.impl!))
    describe("chunked(M) equals unchunked (float32)", () => chunkTests(layerOf(subject.impl!)))
  })
}

describe.skipIf(webgpu === undefined)("webgpu backend specifics", () => {
  it("refuses float64 with a DTypeError that says to use float32", () => {
    const e = (() => { try { webgpu!.alloc("float64", 4) } catch (err) { return err } })()
    expect(e).toBeInstanceOf(DTypeError)
    expect((e as DTypeError).message).toMatch(/float64 is not supported.*float32/)
  })

  it("refuses a tensor larger than one buffer binding with OutOfMemory, suggesting more mini-sequences", () => {
    const size = Math.floor(webgpu!.maxBufferBytes / 4) + 1
    const e = (() => { try { webgpu!.alloc("float32", size) } catch (err) { return err } })()
    expect(e).toBeInstanceOf(OutOfMemory)
    expect((e as OutOfMemory).message).toMatch(/maxStorageBufferBindingSize.*raise M/)
  })

  it("pools freed buffers: a second allocation of the same size class reserves nothing new", () => {
    const before = webgpu!.memory()
    const a = webgpu!.alloc("float32", 12000)
    const reserved = webgpu!.memory().reserved
    expect(webgpu!.memory().live).toBe(before.live + 12000 * 4)
    webgpu!.free(a)
    const b = webgpu!.alloc("int32", 11500) // 46 000 bytes: the same size class as 48 000 (49 152)
    expect(webgpu!.memory().reserved).toBe(reserved)
    webgpu!.free(b)
    expect(webgpu!.memory().live).toBe(before.live)
  })

  it("runs logsumexp as one fused kernel", async () => {
    const x = input("x", [3, 50], "float32")
    const data = randomArray("float32", 150, 4) as Float32Array
    const before = webgpu!.stats().dispatches
    const [lse] = await evalOn(layerOf(webgpu!), [logsumexp(x)], new Map([[x, data]]))
    expect(webgpu!.stats().dispatches - before).toBe(1)
    const want = Array.from({ length: 3 }, (_, r) => Math.log(data.slice(r * 50, r * 50 + 50).reduce((s, v) => s + Math.exp(v), 0)))
    expectClose("lse", lse!, Float64Array.from(want), 1e-6)
  })

  it("fused crossEntropy and its VJP agree with the reference bodies on the same device, in fewer kernels", async () => {
    const unfused = await makeWebGpuBackend({ fusedRoutines: false })
    try {
      expect(Object.keys(webgpu!.routines ?? {}).sort()).toEqual(["attention", "attention.vjp", "crossEntropy", "crossEntropy.vjp", "logsumexp"])
      expect(unfused.routines).toBeUndefined()
      const [N, V] = [37, 300]
      const logits = input("logits", [N, V], "float32")
      const targets = input("targets", [N], "int32")
      const { value, grads } = valueAndGrad(crossEntropy(logits, targets), { logits })
      const t = intArray(N, V, 8).map((v, i) => (i % 5 === 0 ? -100 : v))
      const feeds = new Map<Tensor, Feed>([[logits, randomArray("float32", N * V, 7, { std: 3 })], [targets, t]])
      const count = async (be: WebGpuBackend) => {
        const before = be.stats().dispatches
        const values = await evalOn(layerOf(be), [value, grads.logits], feeds)
        return { values, dispatches: be.stats().dispatches - before }
      }
      const [fused, plain] = [await count(webgpu!), await count(unfused)]
      expectClose("loss", fused.values[0]!, plain.values[0]!, 1e-5)
      expectClose("dlogits", fused.values[1]!, plain.values[1]!, 1e-5)
      expect(fused.dispatches).toBeLessThan(plain.dispatches)
    } finally { await unfused.destroy() }
  })

  // The graph cases run the device's default tile; the other shapes must agree too.
  const tiles: MatmulTile[] = [CORE_TILE, COMPAT_TILE, { bm: 32, bn: 16, bk: 4, tx: 4, ty: 8 }]
  for (const tile of tiles) {
    it(`matmul with tile ${tileName(tile)}: every transpose, batch 2, ragged edges, accumulate`, async () => {
      if (webgpu!.limits.maxComputeInvocationsPerWorkgroup < tile.tx * tile.ty) return expect.fail(`device allows fewer than ${tile.tx * tile.ty} threads`)
      const be = await makeWebGpuBackend({ matmulTile: tile })
      try {
        expect(be.matmulTile).toEqual(tile)
        const [batch, m, n, k] = [2, 130, 70, 33]
        for (const transA of [false, true]) for (const transB of [false, true]) for (const accumulate of [false, true]) {
          const a = randomArray("float32", batch * m * k, 31) as Float32Array, bm = randomArray("float32", batch * k * n, 32) as Float32Array
          const c0 = randomArray("float32", batch * m * n, 33) as Float32Array
          const [A, B, C] = [upload(be, "float32", a), upload(be, "float32", bm), upload(be, "float32", c0)]
          be.matmul(A, B, C, { batch, m, n, k, transA, transB, accumulate })
          const want = Float64Array.from({ length: batch * m * n }, (_, e) => {
            const [t, i, j] = [Math.floor(e / (m * n)), Math.floor(e / n) % m, e % n]
            let s = accumulate ? c0[e]! : 0
            for (let p = 0; p < k; p++) s += a[t * m * k + (transA ? p * m + i : i * k + p)]! * bm[t * k * n + (transB ? j * k + p : p * n + j)]!
            return s
          })
          expectClose(`transA ${transA}, transB ${transB}, accumulate ${accumulate}`, await be.read(C), want, 1e-5)
          for (const buf of [A, B, C]) be.free(buf)
        }
      } finally { await be.destroy() }
    })
  }

  it("webgpuBackendLayer acquires a device for the scope and runs a graph on it", async () => {
    const x = input("x", [4], "float32")
    const program = evaluate([o.mul(x, 3)], new Map([[x, Float32Array.from([1, 2, 3, 4])]])).pipe(Effect.provide(webgpuBackendLayer()))
    const { values } = await Effect.runPromise(program)
    expect(Array.from(values[0]!)).toEqual([3, 6, 9, 12])
  })
})

// ---------------------------------------------------------------------------------------------
// Fused flash attention on WebGPU: every case must really run the fused kernels
// ---------------------------------------------------------------------------------------------

/** The backend with every fused routine wrapped to count its calls. */
function spied(be: WebGpuBackend): { subject: Subject; calls: Map<string, number>; dispatches: Map<string, number[]> } {
  const calls = new Map<string, number>()
  const dispatches = new Map<string, number[]>() // per call, the kernels it dispatched
  const routines = mapKernels(be.routines ?? {}, (f, name) => (call) => {
    calls.set(name, (calls.get(name) ?? 0) + 1)
    const before = be.stats().dispatches
    f(call)
    dispatches.set(name, [...(dispatches.get(name) ?? []), be.stats().dispatches - before])
  })
  return { subject: { name: "webgpu (spied)", impl: { ...be, routines } }, calls, dispatches }
}

/** Which results of the attention region the loss reads: o (the usual), o and lse, or lse alone. */
type AttnOutputs = "o" | "o+lse" | "lse"

interface AttnCase {
  readonly name: string
  /** [B, H, Hkv, S, D] */
  readonly dims: readonly [number, number, number, number, number]
  readonly blockSize?: number
  readonly outputs?: AttnOutputs
  /** Run attention inside chunked(M) over the batch axis (pieces of uneven length). */
  readonly chunks?: number
}

const attnResults = (y: Tensor, outputs: AttnOutputs): Tensor[] => {
  const lse = y.node.results[1]!
  return outputs === "o" ? [y] : outputs === "lse" ? [lse] : [y, lse]
}

const attnCase = (a: AttnCase): Case => {
  const [B, H, Hkv, S, D] = a.dims
  const outputs = a.outputs ?? "o"
  const f = (q: Tensor, k: Tensor, v: Tensor) => attnResults(attention(q, k, v, { blockSize: a.blockSize ?? 16 }), outputs)
  return {
    name: a.name, inputs: [[B, H, S, D], [B, Hkv, S, D], [B, Hkv, S, D]], grad: true, tol: 1e-4,
    build: ([q, k, v]) => (a.chunks === undefined ? f(q!, k!, v!) : chunked(a.chunks, { axis: 0 })(f)(q!, k!, v!)),
  }
}

const attentionCases: AttnCase[] = [
  { name: "S = 1, D = 16", dims: [1, 2, 2, 1, 16] },
  { name: "S = 37 (not a multiple of any block), D = 16, GQA H = 4, Hkv = 2, o and lse", dims: [1, 4, 2, 37, 16], outputs: "o+lse" },
  { name: "S = 150 (> 2 query blocks), D = 16, GQA H = 4, Hkv = 1", dims: [1, 4, 1, 150, 16], blockSize: 64 },
  { name: "S = 70, D = 64, MHA, B = 2", dims: [2, 2, 2, 70, 64] },
  { name: "S = 45, D = 64, GQA H = 4, Hkv = 1, lse alone", dims: [1, 4, 1, 45, 64], outputs: "lse" },
  { name: "S = 33, D = 75 (ragged per-thread slices), GQA H = 4, Hkv = 2", dims: [1, 4, 2, 33, 75], blockSize: 8 },
  { name: "S = 40, D = 256 (Gemma 2), GQA H = 4, Hkv = 2, o and lse", dims: [1, 4, 2, 40, 256] },
  { name: "chunked(2) over B = 3 (pieces of 2 and 1), S = 19, D = 32, GQA H = 4, Hkv = 2", dims: [3, 4, 2, 19, 32], chunks: 2 },
]

describe.skipIf(webgpu === undefined)("webgpu fused attention matches the CPU reference in float64", () => {
  for (const a of attentionCases) {
    it(a.name, async () => {
      const { subject, calls } = spied(webgpu!)
      await checkCase(subject, attnCase(a))
      // The fused kernels ran (once per chunk), not the reference body.
      const pieces = a.chunks === undefined ? 1 : Math.ceil(a.dims[0] / Math.ceil(a.dims[0] / a.chunks))
      expect(calls.get("attention"), "fused forward calls").toBe(a.chunks === undefined ? 1 : 2 * pieces) // chunked backward recomputes
      expect(calls.get("attention.vjp"), "fused backward calls").toBe(pieces)
    })
  }

  it("runs the forward as one kernel and the backward as three (delta, dQ, dK/dV)", async () => {
    const [B, H, Hkv, S, D] = [1, 4, 2, 50, 32]
    const [q, k, v] = [input("q", [B, H, S, D], "float32"), input("k", [B, Hkv, S, D], "float32"), input("v", [B, Hkv, S, D], "float32")]
    const feeds = new Map<Tensor, Feed>([[q, randomArray("float32", q.size, 51)], [k, randomArray("float32", k.size, 52)], [v, randomArray("float32", v.size, 53)]])
    const { subject, dispatches } = spied(webgpu!)
    const y = attention(q, k, v)
    const { grads } = valueAndGrad(o.sum(y), { q, k, v })
    await evalOn(layerOf(subject.impl!), [y, grads.q!, grads.k!, grads.v!], feeds)
    expect(dispatches.get("attention")).toEqual([1])
    expect(dispatches.get("attention.vjp")).toEqual([3])
  })
})

describe("attention's log-sum-exp is float32 for bfloat16 inputs (bfloat16 emulated on the CPU)", () => {
  const [B, H, S, D] = [1, 2, 11, 4]
  // Integer q and one key vector for every position: each row's scores are one half-integer
  // (scale 1/2) in 11–13, exact in bfloat16, and the running sums count keys, so every step of
  // the bf16 reference is exact but lse's own rounding — which bfloat16 (lse 11–16) makes up to 0.03.
  const qData = Float32Array.from({ length: B * H * S * D }, (_, i) => 4 + ((i * 7) % 5))
  const kData = new Float32Array(B * S * D).fill(1)
  const vData = randomArray("float32", B * S * D, 3) as Float32Array
  roundToBfloat16(vData)
  const bf16 = layerOf(cpuWithBfloat16())

  it("declares and returns lse in float32, equal to a float64 logsumexp of the causal scores to float32 precision", async () => {
    const [q, k, v] = [input("q", [B, H, S, D], "bfloat16"), input("k", [B, 1, S, D], "bfloat16"), input("v", [B, 1, S, D], "bfloat16")]
    const lse = attention(q, k, v, { blockSize: 4 }).node.results[1]!
    expect(lse.dtype).toBe("float32")
    const [got] = await evalOn(bf16, [lse], new Map<Tensor, Feed>([[q, qData], [k, kData], [v, vData]]))
    expect(got).toBeInstanceOf(Float32Array)
    const want = new Float64Array(B * H * S)
    for (let row = 0; row < B * H * S; row++) {
      const r = row % S
      const s = Array.from({ length: r + 1 }, (_, c) => { let d = 0; for (let j = 0; j < D; j++) d += qData[row * D + j]! * kData[c * D + j]!; return d / Math.sqrt(D) })
      const m = Math.max(...s)
      want[row] = m + Math.log(s.reduce((a, x) => a + Math.exp(x - m), 0))
    }
    expect(maxRelDiff(got!, want)).toBeLessThan(1e-6)
    const asBf16 = Float32Array.from(want)
    roundToBfloat16(asBf16)
    expect(maxRelDiff(asBf16, want)).toBeGreaterThan(1e-3) // what a bfloat16 lse would be off by
  })

  it("its backward reads the float32 lse (and a float32 dLse) and matches float64 within bfloat16 rounding", async () => {
    const r = randomArray("float32", B * H * S * D, 4) as Float32Array, w = randomArray("float32", B * H * S, 5) as Float32Array
    const dataQ = randomArray("float32", B * H * S * D, 6) as Float32Array, dataK = randomArray("float32", B * S * D, 7) as Float32Array
    for (const a of [r, w, dataQ, dataK]) roundToBfloat16(a)
    const grads = async (dtype: DType, layer: Layer.Layer<Backend>) => {
      const [q, k, v] = [input("q", [B, H, S, D], dtype), input("k", [B, 1, S, D], dtype), input("v", [B, 1, S, D], dtype)]
      const [rt, wt] = [input("r", [B, H, S, D], dtype), input("w", [B, H, S, 1], accumulatorDType(dtype))]
      const y = attention(q, k, v, { blockSize: 4 })
      // The loss reads o and lse, so the backward gets both cotangents (dLse in float32 for bf16).
      const loss = o.add(o.cast(o.sum(o.mul(y, rt)), wt.dtype), o.sum(o.mul(y.node.results[1]!, wt)))
      const g = valueAndGrad(loss, { q, k, v }).grads
      const host = (a: Float32Array) => (dtype === "float64" ? Float64Array.from(a) : a)
      const feeds = new Map<Tensor, Feed>([[q, host(dataQ)], [k, host(dataK)], [v, host(vData)], [rt, host(r)], [wt, host(w)]])
      return evalOn(layer, [g.q!, g.k!, g.v!], feeds)
    }
    const got = await grads("bfloat16", bf16), want = await grads("float64", reference)
    got.forEach((g, i) => expectClose(`d${"qkv"[i]}`, g, want[i]!, 3e-2))
  })
})

describe("webgpu without an adapter", () => {
  it("the layer fails with BackendUnavailable, saying why and what to do", async () => {
    const layer = webgpuBackendLayer({ configs: [{ flags: ["adapter=no-such-gpu"], featureLevel: "compatibility" }] })
    // flip: the layer's failure becomes the value (and a success would fail this test).
    const e = await Effect.runPromise(Effect.flip(Effect.provide(Effect.void, layer)))
    expect(e).toBeInstanceOf(BackendUnavailable)
    expect(e.reason).toMatch(/adapter=no-such-gpu/) // names the configuration it tried
    expect(e.message).toMatch(/CPU backend/)
  })
})
