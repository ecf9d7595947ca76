/**
 * The CPU backend against tiny naive references written here on plain number arrays, so a bug
 * would have to be made twice, differently, to slip through.
 */
import { describe, it, expect } from "vitest"
import fc from "fast-check"
import { Effect } from "effect"
import { Backend, type Buffer, type MatmulSpec, type View } from "../src/core/backend.js"
import { cpuBackendLayer, makeCpuBackend } from "../src/backends/cpu/index.js"
import { matmulNaive } from "../src/backends/cpu/matmul.js"
import { hostArray, type DType } from "../src/core/dtype.js"

const numRuns = Number(process.env.MINISEQ_PROPERTY_RUNS ?? 30)
const floats: DType[] = ["float32", "float64"]
const all: DType[] = ["float32", "float64", "int32"]

/** Deterministic generator so failures reproduce (mulberry32). */
function rng(seed: number) {
  let t = seed >>> 0
  const next = () => {
    t = (t + 0x6d2b79f5) >>> 0
    let r = Math.imul(t ^ (t >>> 15), 1 | t)
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296
  }
  return { next, int: (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)) }
}

/** Random values representable in dtype (small integers for int32). */
function randomValues(dtype: DType, n: number, seed: number): number[] {
  const r = rng(seed)
  const xs = Array.from({ length: n }, () => (dtype === "int32" ? r.int(-50, 50) : r.next() * 4 - 2))
  return Array.from(hostArray(dtype, n).map((_, i) => xs[i]!))
}

const backend = makeCpuBackend()
function upload(dtype: DType, values: readonly number[]): Buffer {
  const buf = backend.alloc(dtype, values.length)
  const host = hostArray(dtype, values.length)
  values.forEach((v, i) => {
    host[i] = v
  })
  backend.write(buf, host)
  return buf
}
async function download(buf: Buffer): Promise<number[]> {
  return Array.from(await backend.read(buf))
}
/** Round like a store into dtype would. */
const store = (dtype: DType, v: number): number => hostArray(dtype, 1).fill(v)[0]!

function expectClose(actual: readonly number[], expected: readonly number[], tol: (i: number) => number) {
  expect(actual.length).toBe(expected.length)
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!,
      e = expected[i]!
    if (Number.isNaN(e) || !Number.isFinite(e)) expect(a).toBe(e)
    else if (Math.abs(a - e) > tol(i)) expect.fail(`element ${i}: got ${a}, expected ${e} (tolerance ${tol(i)})`)
  }
}

const prod = (xs: readonly number[]) => xs.reduce((a, b) => a * b, 1)

// ---------------------------------------------------------------------------------------------

describe("buffers and memory", () => {
  it("counts live and peak bytes exactly", () => {
    const be = makeCpuBackend()
    expect(be.memory()).toMatchObject({ live: 0, peak: 0 })
    const a = be.alloc("float64", 10)
    expect(be.memory()).toMatchObject({ live: 80, peak: 80 })
    const b = be.alloc("float32", 3)
    const c = be.alloc("int32", 5)
    expect(be.memory()).toMatchObject({ live: 80 + 12 + 20, peak: 112 })
    be.free(a)
    expect(be.memory()).toMatchObject({ live: 32, peak: 112 })
    be.memory().resetPeak()
    expect(be.memory()).toMatchObject({ live: 32, peak: 32 })
    const d = be.alloc("float32", 0)
    be.free(b)
    be.free(c)
    be.free(d)
    expect(be.memory()).toMatchObject({ live: 0, peak: 32 })
  })

  it("free of a freed buffer throws, and so does any use after free", async () => {
    const be = makeCpuBackend()
    const a = be.alloc("float32", 4)
    be.free(a)
    expect(() => be.free(a)).toThrow(/freed/)
    expect(() => be.fill(a, 1)).toThrow(/not a live buffer/)
    await expect(be.read(a)).rejects.toThrow(/not a live buffer/)
    expect(be.memory().live).toBe(0)
  })

  it("rejects buffers of another backend instance", () => {
    const other = makeCpuBackend().alloc("float32", 2)
    expect(() => backend.fill(other, 0)).toThrow(/not a live buffer/)
  })

  it("write checks length and dtype; read returns a copy", async () => {
    const be = makeCpuBackend()
    const a = be.alloc("float32", 3)
    expect(() => be.write(a, new Float32Array(2))).toThrow(/3 elements but data has 2/)
    expect(() => be.write(a, new Float64Array(3))).toThrow(/float32/)
    expect(() => be.write(a, new Int32Array(3))).toThrow(/float32/)
    be.write(a, new Float32Array([1, 2, 3]))
    const host = await be.read(a)
    expect(host).toBeInstanceOf(Float32Array)
    host[0] = 99
    expect(Array.from(await be.read(a))).toEqual([1, 2, 3])
  })

  it("alloc rejects bad sizes", () => {
    expect(() => backend.alloc("float32", -1)).toThrow()
    expect(() => backend.alloc("float32", 1.5)).toThrow()
  })

  it("works as the Backend service", () => {
    const be = makeCpuBackend()
    const name = Effect.runSync(
      Effect.provide(
        Backend.use((b) => Effect.succeed(b.name)),
        cpuBackendLayer(be),
      ),
    )
    expect(name).toBe("cpu")
  })
})

describe("fill and iota", () => {
  it.each(all)("fill %s", async (dtype) => {
    const a = backend.alloc(dtype, 7)
    backend.fill(a, -3)
    expect(await download(a)).toEqual(Array(7).fill(-3))
    if (dtype === "int32") expect(() => backend.fill(a, 0.5)).toThrow(/int32/)
    else {
      backend.fill(a, -Infinity)
      expect(await download(a)).toEqual(Array(7).fill(-Infinity))
    }
  })

  it.each(all)("iota %s for every axis of several shapes", async (dtype) => {
    for (const shape of [[5], [2, 3], [3, 1, 4], [2, 3, 2, 2], [4, 0, 3]]) {
      for (let axis = 0; axis < shape.length; axis++) {
        const out = backend.alloc(dtype, prod(shape))
        backend.iota(out, shape, axis)
        // Reference: unravel each flat index and take its coordinate along axis.
        const expected = Array.from({ length: prod(shape) }, (_, flat) => {
          let rest = flat
          const coord: number[] = []
          for (let d = shape.length - 1; d >= 0; d--) {
            coord[d] = rest % shape[d]!
            rest = Math.floor(rest / shape[d]!)
          }
          return coord[axis]!
        })
        expect(await download(out)).toEqual(expected)
      }
    }
    expect(() => backend.iota(backend.alloc(dtype, 6), [2, 3], 2)).toThrow(/axis/)
    expect(() => backend.iota(backend.alloc(dtype, 5), [2, 3], 0)).toThrow(/elements/)
  })
})

describe("elementwise", () => {
  const unaryRef: Record<string, (x: number) => number> = {
    neg: (x) => -x,
    exp: Math.exp,
    log: Math.log,
    sqrt: Math.sqrt,
    recip: (x) => 1 / x,
    sin: Math.sin,
    cos: Math.cos,
  }
  it.each(floats)("unary %s", async (dtype) => {
    const xs = [...randomValues(dtype, 13, 1).map(Math.abs), 0, -1, NaN, Infinity]
    for (const [op, f] of Object.entries(unaryRef)) {
      const x = upload(dtype, xs),
        out = backend.alloc(dtype, xs.length)
      backend.unary(op as never, x, out)
      expect(await download(out)).toEqual(xs.map((v) => store(dtype, f(v))))
      backend.unary(op as never, x, x) // in place
      expect(await download(x)).toEqual(xs.map((v) => store(dtype, f(v))))
    }
  })

  it("unary rejects int32 and mismatched operands", () => {
    const i = backend.alloc("int32", 3)
    expect(() => backend.unary("exp", i, i)).toThrow(/unsupported dtype int32/)
    expect(() => backend.unary("exp", backend.alloc("float32", 3), backend.alloc("float64", 3))).toThrow(/dtypes/)
    expect(() => backend.unary("exp", backend.alloc("float32", 3), backend.alloc("float32", 4))).toThrow(/sizes/)
  })

  const binaryRef: Record<string, (a: number, b: number, dtype: DType) => number> = {
    add: (a, b) => a + b,
    sub: (a, b) => a - b,
    mul: (a, b) => a * b,
    div: (a, b, d) => (d === "int32" ? (b === 0 ? 0 : Math.trunc(a / b)) : a / b),
    maximum: (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : a > b ? a : b),
    less: (a, b) => (a < b ? 1 : 0),
    equal: (a, b) => (a === b ? 1 : 0),
  }
  it.each(all)("binary %s (every op, also in place)", async (dtype) => {
    const as = [...randomValues(dtype, 20, 2), 3, 7, -7, 0]
    const bs = [...randomValues(dtype, 20, 3), 3, 2, 2, 0]
    bs[5] = as[5]! // some equal pairs
    for (const [op, f] of Object.entries(binaryRef)) {
      const a = upload(dtype, as),
        b = upload(dtype, bs),
        out = backend.alloc(dtype, as.length)
      const expected = as.map((x, i) => store(dtype, f(x, bs[i]!, dtype)))
      backend.binary(op as never, a, b, out)
      expect(await download(out), op).toEqual(expected)
      backend.binary(op as never, a, b, a)
      expect(await download(a), op).toEqual(expected)
    }
  })

  it("int32 arithmetic wraps like int32 and divides toward zero", async () => {
    const a = upload("int32", [2147483647, 65537, -7, 7, -2147483648])
    const b = upload("int32", [1, 65537, 2, -2, -1])
    const out = backend.alloc("int32", 5)
    backend.binary("add", a, b, out)
    expect((await download(out))[0]).toBe(-2147483648)
    backend.binary("mul", a, b, out)
    expect((await download(out))[1]).toBe(Math.imul(65537, 65537))
    backend.binary("div", a, b, out)
    expect((await download(out)).slice(2, 4)).toEqual([-3, -3])
  })

  it("less/equal write 1/0 in the output's dtype", async () => {
    const a = upload("float32", [1, 2, 3]),
      b = upload("float32", [2, 2, 2])
    const i = backend.alloc("int32", 3),
      f = backend.alloc("float64", 3)
    backend.binary("less", a, b, i)
    backend.binary("equal", a, b, f)
    expect(await download(i)).toEqual([1, 0, 0])
    expect(await download(f)).toEqual([0, 1, 0])
    expect(() => backend.binary("add", a, b, i)).toThrow(/dtypes/)
  })

  it.each(all)("where %s", async (dtype) => {
    const cs = [0, 1, -2, 0, 5]
    const as = randomValues(dtype, 5, 4),
      bs = randomValues(dtype, 5, 5)
    for (const condType of all) {
      const c = upload(condType, cs),
        a = upload(dtype, as),
        b = upload(dtype, bs),
        out = backend.alloc(dtype, 5)
      backend.where(c, a, b, out)
      expect(await download(out)).toEqual(cs.map((v, i) => (v !== 0 ? as[i]! : bs[i]!)))
    }
  })

  it("cast between every pair of dtypes; float → int32 truncates toward zero", async () => {
    const xs = [-2.7, -0.5, 0, 0.5, 2.7, 1e-9, 100.999]
    const expectedInt = [-2, 0, 0, 0, 2, 0, 100]
    for (const from of floats) {
      const out = backend.alloc("int32", xs.length)
      backend.cast(upload(from, xs), out)
      expect(await download(out)).toEqual(expectedInt)
    }
    const f32 = backend.alloc("float32", 1)
    backend.cast(upload("float64", [0.1]), f32)
    expect(await download(f32)).toEqual([Math.fround(0.1)])
    for (const from of all)
      for (const to of all) {
        const vs = randomValues(from, 9, 6)
        const out = backend.alloc(to, 9)
        backend.cast(upload(from, vs), out)
        expect(await download(out)).toEqual(vs.map((v) => store(to, to === "int32" ? Math.trunc(v) : v)))
      }
  })
})

// ---------------------------------------------------------------------------------------------

/** Reference strided copy: unravel every flat index of the shape, no dim merging. */
function copyRef(src: readonly number[], sv: View, dst: readonly number[], dv: View): number[] {
  const out = [...dst]
  const total = prod(sv.shape)
  for (let flat = 0; flat < total; flat++) {
    let rest = flat,
      so = sv.offset,
      doff = dv.offset
    for (let d = sv.shape.length - 1; d >= 0; d--) {
      const c = rest % sv.shape[d]!
      rest = Math.floor(rest / sv.shape[d]!)
      so += c * sv.strides[d]!
      doff += c * dv.strides[d]!
    }
    out[doff] = src[so]!
  }
  return out
}
const contiguous = (shape: readonly number[], offset = 0): View => {
  const strides: number[] = []
  let s = 1
  for (let d = shape.length - 1; d >= 0; d--) {
    strides[d] = s
    s *= shape[d]!
  }
  return { shape, strides, offset }
}

describe("copy", () => {
  async function checkCopy(dtype: DType, srcSize: number, sv: View, dstSize: number, dv: View, seed = 7) {
    const sVals = randomValues(dtype, srcSize, seed),
      dVals = randomValues(dtype, dstSize, seed + 1)
    const s = upload(dtype, sVals),
      d = upload(dtype, dVals)
    backend.copy(s, sv, d, dv)
    expect(await download(d)).toEqual(copyRef(sVals, sv, dVals, dv))
    backend.free(s)
    backend.free(d)
  }

  it.each(all)("transpose, broadcast, slices, rank 0 and rank 6 (%s)", async (dtype) => {
    // 2-d transpose of a 3×5
    await checkCopy(dtype, 15, { shape: [5, 3], strides: [1, 5], offset: 0 }, 15, contiguous([5, 3]))
    // broadcast a row [7] over 4 rows, and a column over 100 columns (0 inner stride)
    await checkCopy(dtype, 7, { shape: [4, 7], strides: [0, 1], offset: 0 }, 28, contiguous([4, 7]))
    await checkCopy(dtype, 3, { shape: [3, 100], strides: [1, 0], offset: 0 }, 300, contiguous([3, 100]))
    // a long contiguous run (memcpy path) into an offset window of a bigger buffer
    await checkCopy(dtype, 500, contiguous([2, 200], 50), 1000, { shape: [2, 200], strides: [400, 1], offset: 3 })
    // reversed (negative stride) slice
    await checkCopy(dtype, 10, { shape: [10], strides: [-1], offset: 9 }, 10, contiguous([10]))
    // rank 0: one element
    await checkCopy(dtype, 5, { shape: [], strides: [], offset: 3 }, 4, { shape: [], strides: [], offset: 2 })
    // rank 6 permuted
    const shape6 = [2, 1, 3, 2, 2, 3]
    // rank 6 transposed view: dims of a contiguous [3, 2, 2, 1, 3, 2] read in the order `perm`
    const base = contiguous([3, 2, 2, 1, 3, 2])
    const perm = [5, 3, 0, 2, 4, 1]
    const permuted: View = {
      shape: perm.map((p) => [3, 2, 2, 1, 3, 2][p]!),
      strides: perm.map((p) => base.strides[p]!),
      offset: 0,
    }
    await checkCopy(dtype, 72, permuted, 72, contiguous(permuted.shape))
    await checkCopy(dtype, 72, contiguous(shape6), 72, contiguous(shape6))
    // empty shape touches nothing
    await checkCopy(dtype, 1, { shape: [0, 3], strides: [99, 99], offset: 99 }, 2, contiguous([0, 3]))
  })

  it("copies in place from a snapshot (overlapping shift)", async () => {
    const vals = [0, 1, 2, 3, 4, 5, 6, 7]
    const b = upload("float64", vals)
    backend.copy(b, { shape: [7], strides: [1], offset: 0 }, b, { shape: [7], strides: [1], offset: 1 })
    expect(await download(b)).toEqual([0, 0, 1, 2, 3, 4, 5, 6])
  })

  it("rejects out-of-bounds views, mismatched shapes and dtypes", () => {
    const s = backend.alloc("float32", 6),
      d = backend.alloc("float32", 6)
    expect(() => backend.copy(s, contiguous([2, 3], 1), d, contiguous([2, 3]))).toThrow(/reaches/)
    expect(() => backend.copy(s, { shape: [3], strides: [-1], offset: 1 }, d, contiguous([3]))).toThrow(/reaches/)
    expect(() => backend.copy(s, contiguous([2, 3]), d, contiguous([3, 2]))).toThrow(/differs/)
    expect(() => backend.copy(s, contiguous([6]), backend.alloc("int32", 6), contiguous([6]))).toThrow(/dtypes/)
  })

  // A random view: random dims, random (possibly zero or negative) strides, offset so it fits.
  const viewArb = fc.array(fc.record({ n: fc.integer({ min: 0, max: 4 }), s: fc.integer({ min: -3, max: 4 }) }), {
    minLength: 0,
    maxLength: 6,
  })
  it("matches the reference on random views of rank 0..6 (property)", async () => {
    await fc.assert(
      fc.asyncProperty(
        viewArb,
        fc.integer({ min: 0, max: 3 }),
        fc.nat({ max: 100 }),
        fc.constantFrom(...all),
        fc.boolean(),
        async (dims, slack, seed, dtype, permuteDst) => {
          const shape = dims.map((d) => d.n)
          let lo = 0,
            hi = 0
          dims.forEach((d) => {
            const r = (d.n - 1) * d.s
            if (d.n > 0) {
              if (r < 0) lo += r
              else hi += r
            }
          })
          const sv: View = { shape, strides: dims.map((d) => d.s), offset: -lo + slack }
          const srcSize = hi - lo + 1 + 2 * slack
          // Destination: an injective layout, contiguous or with its dims stored in reverse order.
          const order = shape.map((_, i) => i)
          if (permuteDst) order.reverse()
          const stored = contiguous(order.map((i) => shape[i]!))
          const strides: number[] = []
          order.forEach((dim, pos) => {
            strides[dim] = stored.strides[pos]!
          })
          const dv: View = { shape, strides, offset: slack }
          await checkCopy(dtype, srcSize, sv, prod(shape) + 2 * slack, dv, seed)
        },
      ),
      { numRuns },
    )
  })
})

// ---------------------------------------------------------------------------------------------

describe("reduce", () => {
  function reduceRef(op: "sum" | "max", x: readonly number[], outer: number, axis: number, inner: number): number[] {
    const out: number[] = []
    for (let o = 0; o < outer; o++)
      for (let i = 0; i < inner; i++) {
        let acc = op === "sum" ? 0 : -Infinity
        for (let a = 0; a < axis; a++) {
          const v = x[(o * axis + a) * inner + i]!
          acc = op === "sum" ? acc + v : Number.isNaN(v) || Number.isNaN(acc) ? NaN : Math.max(acc, v)
        }
        out[o * inner + i] = acc
      }
    return out
  }

  it.each(floats)("sum and max over [outer, axis, inner] (%s), including empty axes", async (dtype) => {
    const shapes = [
      [1, 1, 1],
      [1, 7, 1],
      [3, 5, 1],
      [1, 5, 4],
      [2, 3, 6],
      [4, 0, 3],
      [2, 0, 1],
      [0, 3, 2],
      [3, 130, 2],
    ]
    for (const [outer, axis, inner] of shapes as [number, number, number][]) {
      const xs = randomValues(dtype, outer * axis * inner, outer + axis + inner)
      for (const op of ["sum", "max"] as const) {
        const x = upload(dtype, xs),
          out = backend.alloc(dtype, outer * inner)
        backend.reduce(op, x, out, outer, axis, inner)
        const expected = reduceRef(op, xs, outer, axis, inner).map((v) => store(dtype, v))
        expectClose(await download(out), expected, () => (dtype === "float32" ? 1e-5 * axis : 1e-12 * axis))
      }
    }
  })

  it("max propagates NaN; sum of float32 may accumulate into float64", async () => {
    const x = upload("float32", [1, NaN, 3, 4, 5, 6])
    const out = backend.alloc("float32", 2)
    backend.reduce("max", x, out, 2, 3, 1)
    expect(await download(out)).toEqual([NaN, 6])
    backend.reduce("max", x, out, 1, 3, 2)
    expect(await download(out)).toEqual([5, NaN])
    const wide = backend.alloc("float64", 1)
    backend.reduce("sum", upload("float32", [0.1, 0.2]), wide, 1, 2, 1)
    expect(await download(wide)).toEqual([Math.fround(0.1) + Math.fround(0.2)])
  })

  it("rejects int32 and wrong sizes", () => {
    expect(() => backend.reduce("sum", backend.alloc("int32", 4), backend.alloc("int32", 2), 2, 2, 1)).toThrow(
      /unsupported dtype/,
    )
    expect(() => backend.reduce("sum", backend.alloc("float32", 4), backend.alloc("float32", 3), 2, 2, 1)).toThrow(
      /out/,
    )
  })
})

// ---------------------------------------------------------------------------------------------

describe("matmul", () => {
  /**
   * The definition (`matmulNaive`, the triple loop) in float64, plus Σ|a||b| per output (the
   * definition on |a| and |b|) for a rounding tolerance.
   */
  function matmulRef(a: readonly number[], b: readonly number[], s: MatmulSpec): { value: number[]; scale: number[] } {
    const value = new Float64Array(s.batch * s.m * s.n),
      scale = new Float64Array(value.length)
    matmulNaive(Float64Array.from(a), Float64Array.from(b), value, s)
    matmulNaive(Float64Array.from(a, Math.abs), Float64Array.from(b, Math.abs), scale, s)
    return { value: Array.from(value), scale: Array.from(scale) }
  }
  async function checkMatmul(dtype: DType, spec: MatmulSpec, seed: number) {
    const av = randomValues(dtype, spec.batch * spec.m * spec.k, seed)
    const bv = randomValues(dtype, spec.batch * spec.k * spec.n, seed + 1)
    const a = upload(dtype, av),
      b = upload(dtype, bv),
      out = backend.alloc(dtype, spec.batch * spec.m * spec.n)
    backend.fill(out, 12345) // stale contents must not leak into the result
    backend.matmul(a, b, out, spec)
    const ref = matmulRef(av, bv, spec)
    // Rounding bounds: float64 sums of k terms (here and in the reference); float32 output is
    // rounded once per 256-deep block of k plus once at the end.
    const tol = dtype === "float32" ? (2 + Math.ceil(spec.k / 256)) * 2 ** -24 : 2 * (spec.k + 2) * 2 ** -53
    expectClose(await download(out), ref.value, (i) => tol * ref.scale[i]! + 1e-300)
    backend.free(a)
    backend.free(b)
    backend.free(out)
  }
  const transCombos = [
    [false, false],
    [false, true],
    [true, false],
    [true, true],
  ] as const

  it.each(floats)("edge sizes, batches and all four transposition combos (%s)", async (dtype) => {
    const sizes: [number, number, number, number][] = [
      [1, 1, 1, 1],
      [1, 1, 5, 1],
      [1, 5, 1, 1],
      [1, 1, 1, 9],
      [2, 3, 5, 7],
      [3, 4, 4, 4],
      [1, 17, 9, 33],
      [2, 65, 67, 63],
      [1, 1, 300, 1],
      [1, 67, 260, 258],
      [2, 5, 0, 3],
      [1, 0, 4, 3],
      [2, 3, 4, 0],
      [0, 3, 3, 3],
    ]
    let seed = 100
    for (const [batch, m, n, k] of sizes)
      for (const [transA, transB] of transCombos) {
        await checkMatmul(dtype, { batch, m, n, k, transA, transB }, seed++)
      }
  })

  it("matches the naive triple loop on random shapes (property)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          batch: fc.integer({ min: 1, max: 3 }),
          m: fc.integer({ min: 1, max: 40 }),
          n: fc.integer({ min: 1, max: 40 }),
          k: fc.integer({ min: 1, max: 40 }),
          transA: fc.boolean(),
          transB: fc.boolean(),
        }),
        fc.constantFrom(...floats),
        fc.nat({ max: 1000 }),
        (spec, dtype, seed) => checkMatmul(dtype, spec, seed),
      ),
      { numRuns },
    )
  })

  it("exact on small integers", async () => {
    const a = upload("float32", [1, 2, 3, 4, 5, 6]) // 2×3
    const b = upload("float32", [7, 8, 9, 10, 11, 12]) // 3×2
    const out = backend.alloc("float32", 4)
    backend.matmul(a, b, out, { batch: 1, m: 2, n: 2, k: 3, transA: false, transB: false })
    expect(await download(out)).toEqual([58, 64, 139, 154])
  })

  it("rejects int32, mixed dtypes, wrong sizes and aliasing", () => {
    const spec = { batch: 1, m: 2, n: 2, k: 2, transA: false, transB: false }
    const i = () => backend.alloc("int32", 4),
      f = () => backend.alloc("float32", 4)
    expect(() => backend.matmul(i(), i(), i(), spec)).toThrow(/unsupported dtype int32/)
    expect(() => backend.matmul(f(), backend.alloc("float64", 4), f(), spec)).toThrow(/dtypes/)
    expect(() => backend.matmul(f(), backend.alloc("float32", 5), f(), spec)).toThrow(/b float32\[5\]/)
    const a = f()
    expect(() => backend.matmul(a, f(), a, spec)).toThrow(/alias/)
  })
})

// ---------------------------------------------------------------------------------------------

describe("gather / scatterAdd / takeAlong / putAlong", () => {
  it.each(all)("gather and its adjoint scatterAdd (%s)", async (dtype) => {
    const rows = 5,
      width = 3
    const tableVals = randomValues(dtype, rows * width, 8)
    const idxVals = [4, 0, 0, 2, 4, 4, 1]
    const table = upload(dtype, tableVals),
      idx = upload("int32", idxVals)
    const out = backend.alloc(dtype, idxVals.length * width)
    backend.gather(table, idx, out, width)
    expect(await download(out)).toEqual(idxVals.flatMap((r) => tableVals.slice(r * width, r * width + width)))

    const srcVals = randomValues(dtype, idxVals.length * width, 9)
    const acc = backend.alloc(dtype, rows * width)
    backend.fill(acc, 7) // must be zeroed first
    backend.scatterAdd(idx, upload(dtype, srcVals), acc, width)
    const expected = Array<number>(rows * width).fill(0)
    idxVals.forEach((r, i) => {
      for (let j = 0; j < width; j++) expected[r * width + j] = expected[r * width + j]! + srcVals[i * width + j]!
    })
    expectClose(
      await download(acc),
      expected.map((v) => store(dtype, v)),
      () => (dtype === "float32" ? 1e-5 : 1e-12),
    )
  })

  it.each(all)("takeAlong and its adjoint putAlong (%s)", async (dtype) => {
    const rows = 4,
      width = 6
    const xVals = randomValues(dtype, rows * width, 10)
    const idxVals = [5, 0, 3, 3]
    const x = upload(dtype, xVals),
      idx = upload("int32", idxVals)
    const out = backend.alloc(dtype, rows)
    backend.takeAlong(x, idx, out, width)
    expect(await download(out)).toEqual(idxVals.map((c, i) => xVals[i * width + c]!))

    const srcVals = randomValues(dtype, rows, 11)
    const put = backend.alloc(dtype, rows * width)
    backend.fill(put, 7)
    backend.putAlong(idx, upload(dtype, srcVals), put, width)
    const expected = Array<number>(rows * width).fill(0)
    idxVals.forEach((c, i) => {
      expected[i * width + c] = srcVals[i]!
    })
    expect(await download(put)).toEqual(expected)
  })

  it("rejects out-of-range and non-int32 indices", () => {
    const table = backend.alloc("float32", 6) // 3 rows × 2
    const out = backend.alloc("float32", 2)
    expect(() => backend.gather(table, upload("int32", [3]), out, 2)).toThrow(
      /index 3 at position 0 is out of range \[0, 3\)/,
    )
    expect(() => backend.gather(table, upload("int32", [-1]), out, 2)).toThrow(/out of range/)
    expect(() => backend.gather(table, upload("float32", [0]), out, 2)).toThrow(/idx must be int32/)
    expect(() => backend.takeAlong(table, upload("int32", [0, 1, 2]), backend.alloc("float32", 3), 2)).toThrow(
      /out of range \[0, 2\)/,
    )
    expect(() => backend.scatterAdd(upload("int32", [3]), out, table, 2)).toThrow(/out of range/)
    expect(() => backend.putAlong(upload("int32", [0, 2, 0]), backend.alloc("float32", 3), table, 2)).toThrow(
      /out of range/,
    )
  })
})
