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
import type { Layer } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import type { Backend, BackendImpl, Buffer } from "../src/core/backend.js"
import { valueAndGrad } from "../src/core/autodiff.js"
import type { Feed } from "../src/core/executor.js"
import { input, type Tensor } from "../src/core/graph.js"
import * as o from "../src/core/ops.js"
import { rng } from "../src/core/random.js"
import { checkpoint, chunked } from "../src/core/regions.js"
import { linear, swiglu } from "../src/core/routines/basic.js"
import { sumCrossEntropy, targetCount } from "../src/core/routines/cross-entropy.js"
import { maxRelDiff, propertyRuns, randomArray } from "./helpers.js"
import { evalOn, expectClose, layerOf, subjects, upload } from "./backends/subjects.js"
import { cases, checkCase } from "./backends/graph-cases.js"

// ---------------------------------------------------------------------------------------------
// Direct kernel calls: what graphs cannot express, checked against values computed here
// ---------------------------------------------------------------------------------------------

const download = async (b: BackendImpl, buf: Buffer): Promise<number[]> => Array.from(await b.read(buf))
const f32 = (xs: readonly number[]): number[] => Array.from(Float32Array.from(xs))

function kernelTests(b: BackendImpl): void {
  it("elementwise kernels may write into an input (out aliases a, b, or both)", async () => {
    const [a, c] = [
      [1.5, -2, 3.25, 4],
      [0.5, 0.25, -1, 8],
    ]
    const x = upload(b, "float32", a),
      y = upload(b, "float32", c)
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
    const x = upload(b, "float32", [1, 2, 3, 4, 5]),
      two = upload(b, "float32", [2])
    const out = b.alloc("float32", 5),
      bits = b.alloc("int32", 5)
    b.binary("div", two, x, out)
    expect(await download(b, out)).toEqual(f32([2, 1, 2 / 3, 0.5, 0.4]))
    b.binary("less", x, two, bits)
    expect(await download(b, bits)).toEqual([1, 0, 0, 0, 0])
    const ints = upload(b, "int32", [3, -1, 2, 2, 0]),
      twoInt = upload(b, "int32", [2])
    b.binary("equal", ints, twoInt, out)
    expect(await download(b, out)).toEqual([0, 0, 1, 1, 0])
    const yes = upload(b, "float32", [1])
    b.where(yes, x, two, out)
    expect(await download(b, out)).toEqual([1, 2, 3, 4, 5])
    for (const buf of [x, two, out, bits, ints, twoInt, yes]) b.free(buf)
  })

  it("int32: division by zero gives 0, INT_MIN / −1 wraps, float → int32 casts wrap like ToInt32", async () => {
    const a = upload(b, "int32", [7, -7, 5, -2147483648, 0]),
      d = upload(b, "int32", [2, 2, 0, -1, 0])
    const q = b.alloc("int32", 5)
    b.binary("div", a, d, q)
    expect(await download(b, q)).toEqual([3, -3, 0, -2147483648, 0])
    const values = [1.9, -1.9, 3e9, -3e9, NaN, Infinity, -0.5, 2147483648, 1e20]
    const x = upload(b, "float32", values),
      i = b.alloc("int32", values.length)
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
    const big = upload(
      b,
      "int32",
      Array.from({ length: 600 }, (_, k) => k),
    )
    const out = b.alloc("int32", n)
    b.copy(big, { shape, strides, offset: 3 }, out, {
      shape,
      strides: shape.map((_, k) => shape.slice(k + 1).reduce((p, q) => p * q, 1)),
      offset: 0,
    })
    const expected: number[] = []
    const walk = (dim: number, at: number) => {
      if (dim === shape.length) {
        expected.push(at)
        return
      }
      for (let c = 0; c < shape[dim]!; c++) walk(dim + 1, at + c * strides[dim]!)
    }
    walk(0, 3)
    expect(await download(b, out)).toEqual(expected)
    for (const buf of [src, dst, big, out]) b.free(buf)
  })

  it("NaN wins maximum and max; empty reductions and k = 0 matmuls give their identities", async () => {
    const x = upload(b, "float32", [1, NaN, 3, -1, 2, 0]),
      y = upload(b, "float32", [5, 0, NaN, -2, 1, 0])
    const out = b.alloc("float32", 6)
    b.binary("maximum", x, y, out)
    expect(await download(b, out)).toEqual([5, NaN, NaN, -1, 2, 0])
    const row = upload(b, "float32", [...new Array(100).fill(1), NaN, ...new Array(99).fill(2)]),
      m = b.alloc("float32", 1)
    b.reduce("max", row, m, 1, 200, 1)
    expect(await download(b, m)).toEqual([NaN])
    const empty = b.alloc("float32", 0),
      sums = b.alloc("float32", 6)
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
    const a = randomArray("float32", m * k, 21) as Float32Array,
      bt = randomArray("float32", n * k, 22) as Float32Array
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
    const count = 300,
      width = 3
    const idx = Int32Array.from({ length: count }, (_, i) => (i * 7) % 2)
    const src = randomArray("float32", count * width, 9, { std: 100 }) as Float32Array
    const i = upload(b, "int32", idx),
      s = upload(b, "float32", src),
      out = b.alloc("float32", 2 * width)
    b.scatterAdd(i, s, out, width)
    const expected = new Float32Array(2 * width)
    for (let r = 0; r < count; r++)
      for (let j = 0; j < width; j++) expected[idx[r]! * width + j]! += src[r * width + j]!
    expect(await download(b, out)).toEqual(Array.from(expected))
    for (const buf of [i, s, out]) b.free(buf)
  })

  it("a kernel over more than 65535 workgroups (a 2-D grid) reaches every element", async () => {
    const n = 4_300_000
    const data = Float32Array.from({ length: n }, (_, k) => k % 1000)
    const x = b.alloc("float32", n),
      y = b.alloc("float32", n)
    b.write(x, data)
    b.unary("neg", x, y)
    const got = await b.read(y)
    let bad = -1
    for (let k = 0; k < n && bad < 0; k++) if (got[k] !== -data[k]!) bad = k
    expect(bad, `first wrong element (of ${n})`).toBe(-1)
    b.free(x)
    b.free(y)
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
    b.free(fidx)
    b.free(out)
  })
}

// ---------------------------------------------------------------------------------------------
// chunked(M) equals unchunked, on each backend in float32
// ---------------------------------------------------------------------------------------------

/** float32 tolerance of the chunked-vs-unchunked property (relative to max-abs). */
const CHUNK_TOL = 1e-5

async function chunkGap(
  layer: Layer.Layer<Backend>,
  ref: Tensor,
  test: Tensor,
  wrt: Record<string, Tensor>,
  feeds: Map<Tensor, Feed>,
): Promise<number> {
  const a = valueAndGrad(ref, wrt)
  const b = valueAndGrad(test, wrt)
  const names = Object.keys(wrt)
  const out = await evalOn(
    layer,
    [a.value, ...names.map((n) => a.grads[n]!), b.value, ...names.map((n) => b.grads[n]!)],
    feeds,
  )
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
    const dims = fc.record({
      B: fc.integer({ min: 1, max: 2 }),
      S: fc.integer({ min: 1, max: 9 }),
      d: fc.integer({ min: 1, max: 5 }),
      I: fc.integer({ min: 1, max: 7 }),
      extraM: fc.nat(11),
      seed: seedArb,
      how: withCheckpoint,
    })
    await fc.assert(
      fc.asyncProperty(dims, async ({ B, S, d, I, extraM, seed, how }) => {
        const { ts, feeds } = leaves({ x: [B, S, d], gate: [I, d], up: [I, d], down: [d, I], r: [B, S, d] }, seed)
        const { x, gate, up, down, r } = ts as Record<string, Tensor>
        const mlp = (h: Tensor) => swiglu(h, gate!, up!, down!)
        const wrapped = chunked(mOf(S, extraM), { axis: 1 })(how === "chunked" ? mlp : checkpoint(mlp))
        const ref = o.sum(o.mul(mlp(x!), r!))
        const test = o.sum(o.mul(wrapped(x!), r!))
        expect(await chunkGap(layer, ref, test, { x: x!, gate: gate!, up: up!, down: down! }, feeds)).toBeLessThan(
          CHUNK_TOL,
        )
      }),
      { numRuns: propertyRuns(4) },
    )
  })

  it("LM head + cross-entropy with ignored targets and token weights", async () => {
    const dims = fc.record({
      B: fc.integer({ min: 1, max: 2 }),
      S: fc.integer({ min: 1, max: 9 }),
      d: fc.integer({ min: 1, max: 5 }),
      V: fc.integer({ min: 2, max: 11 }),
      extraM: fc.nat(11),
      seed: seedArb,
      ignoreRate: fc.constantFrom(0, 0.3, 1),
      how: withCheckpoint,
    })
    await fc.assert(
      fc.asyncProperty(dims, async ({ B, S, d, V, extraM, seed, ignoreRate, how }) => {
        const { ts, feeds } = leaves({ h: [B, S, d], W: [V, d], w: [B, S] }, seed)
        const { h, W, w } = ts as Record<string, Tensor>
        // Token weights are ≥ 0, as loss weights are: with signs mixed, the summed loss can cancel
        // to near 0, and a float32 reordering then exceeds any tolerance relative to it (a rare
        // fast-check case did: 1.49e-5 against 1e-5).
        feeds.set(w!, Float32Array.from(feeds.get(w!) as Float32Array, Math.abs))
        const targets = input("targets", [B, S], "int32")
        const random = rng(seed)
        feeds.set(
          targets,
          Int32Array.from({ length: B * S }, () => (random() < ignoreRate ? -100 : Math.floor(random() * V))),
        )
        const count = targetCount(targets, -100, "float32")
        const pieceLoss = (hh: Tensor, tt: Tensor, ww: Tensor) => sumCrossEntropy(linear(hh, W!), tt, { weights: ww })
        const wrapped = chunked(mOf(S, extraM), { axis: 1, combine: "sum" })(
          how === "chunked" ? pieceLoss : checkpoint(pieceLoss),
        )
        const ref = o.div(pieceLoss(h!, targets, w!), count)
        const test = o.div(wrapped(h!, targets, w!), count)
        expect(await chunkGap(layer, ref, test, { h: h!, W: W!, w: w! }, feeds)).toBeLessThan(CHUNK_TOL)
      }),
      { numRuns: propertyRuns(4) },
    )
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
