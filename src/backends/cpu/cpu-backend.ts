/**
 * The CPU backend: every kernel of the contract in plain TypeScript over typed arrays.
 *
 * This is the reference backend. It favours clarity, but it is also the backend people train on
 * without a GPU, so the two hot kernels (`copy` and `matmul`) have fast paths. Every kernel checks
 * its arguments and throws a plain `Error` naming the kernel: a failed check here is a bug in the
 * executor, never a user error, so a loud crash is the most useful thing to do.
 */
import type { Buffer, BackendImpl, BinaryOp, ReduceOp, UnaryOp, View } from "../../core/backend.js"
import { describe, kernelChecks } from "../checks.js"
import { simplifyViews } from "../views.js"
import { cpuRoutines } from "./fused.js"
import { matmulBlocked, matmulNaive } from "./matmul.js"
import { bytesPerElement, dtypeOf, hostArray } from "../../core/dtype.js"

export type CpuData = Float32Array | Float64Array | Int32Array
type FloatData = Float32Array | Float64Array

/** A CPU buffer is just its typed array. */
export interface CpuBuffer extends Buffer {
  readonly data: CpuData
}

export interface CpuMemory {
  /** Bytes of buffers currently allocated. */
  readonly live: number
  /** Most bytes allocated at once since creation or the last `resetPeak`. */
  readonly peak: number
  resetPeak(): void
}

export interface CpuBackend extends BackendImpl {
  /** The backend's own byte count, independent of the executor's accounting. */
  memory(): CpuMemory
}

// ---------------------------------------------------------------------------------------------
// Argument checks
// ---------------------------------------------------------------------------------------------

const { fail, check, sameSize, scalarOrSize, sameDType, floatOnly, counts, iotaLayout, matmulSizes, reduceSizes, copyViews } = kernelChecks("cpu", ["float32", "float64"])

/** Index step of an elementwise operand: 0 for a broadcast scalar. */
const step = (x: CpuData, out: CpuData): number => (x.length === out.length ? 1 : 0)

/** Reads idx[i] and checks it addresses one of `bound` slots (a bad index is an executor bug). */
function indexAt(kernel: string, idx: Int32Array, i: number, bound: number): number {
  const r = idx[i]!
  if (r < 0 || r >= bound) fail(kernel, `index ${r} at position ${i} is out of range [0, ${bound})`)
  return r
}

// ---------------------------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------------------------

export interface CpuOptions {
  /** Run named routines (cross-entropy) with fused kernels; false runs their reference bodies. */
  readonly fused?: boolean
  /** Which matmul runs: the fast blocked GEMM (default) or its definition, the naive loop. */
  readonly matmul?: "blocked" | "naive"
}

export function makeCpuBackend(opts: CpuOptions = {}): CpuBackend {
  // Buffers this instance allocated and has not freed: catches double frees, use after free and
  // buffers handed over from another backend.
  const alive = new WeakSet<Buffer>()
  let liveBytes = 0
  let peakBytes = 0

  const bytesOf = (b: Buffer): number => b.size * bytesPerElement[b.dtype]

  function dataOf(kernel: string, b: Buffer): CpuData {
    if (!alive.has(b)) fail(kernel, `buffer ${describe(b)} is not a live buffer of this backend (freed already, or never allocated here)`)
    return (b as CpuBuffer).data
  }
  const floatData = (kernel: string, b: Buffer): FloatData => dataOf(kernel, b) as FloatData
  function intData(kernel: string, b: Buffer, what: string): Int32Array {
    check(b.dtype === "int32", kernel, () => `${what} must be int32, got ${b.dtype}`)
    return dataOf(kernel, b) as Int32Array
  }

  return {
    name: "cpu",
    dtypes: ["float32", "float64", "int32"],
    ...(opts.fused === false ? {} : { routines: cpuRoutines }),

    memory: () => ({
      live: liveBytes,
      peak: peakBytes,
      resetPeak: () => { peakBytes = liveBytes },
    }),

    alloc(dtype, size) {
      counts("alloc", { size })
      check(dtype in bytesPerElement, "alloc", () => `unknown dtype ${String(dtype)}`)
      const buffer: CpuBuffer = { dtype, size, data: hostArray(dtype, size) }
      alive.add(buffer)
      liveBytes += bytesOf(buffer)
      peakBytes = Math.max(peakBytes, liveBytes)
      return buffer
    },

    free(buffer) {
      if (!alive.has(buffer)) fail("free", `buffer ${describe(buffer)} was freed already or never allocated by this backend`)
      alive.delete(buffer)
      liveBytes -= bytesOf(buffer)
    },

    write(buffer, data) {
      const d = dataOf("write", buffer)
      check(dtypeOf(data) === buffer.dtype, "write", () => `buffer is ${buffer.dtype} but data is a ${data.constructor.name}`)
      check(data.length === buffer.size, "write", () => `buffer holds ${buffer.size} elements but data has ${data.length}`)
      d.set(data)
    },

    async read(buffer) {
      // A copy, so later kernels cannot change what the caller holds. (async: a bad buffer rejects.)
      return dataOf("read", buffer).slice()
    },

    fill(out, value) {
      const o = dataOf("fill", out)
      if (out.dtype === "int32") {
        // An Int32Array would silently turn 0.5 into 0 and -Infinity into 0.
        check(Number.isInteger(value) && value >= -2147483648 && value <= 2147483647, "fill", () => `${value} is not an int32`)
      }
      o.fill(value)
    },

    iota(out, shape, axis) {
      const o = dataOf("iota", out)
      const { outer, len, inner } = iotaLayout(out, shape, axis)
      let i = 0
      for (let r = 0; r < outer; r++)
        for (let v = 0; v < len; v++)
          for (let j = 0; j < inner; j++) o[i++] = v
    },

    unary(op, x, out) {
      floatOnly("unary", x, out)
      sameDType("unary", x, out)
      sameSize("unary", x, out)
      unaryLoop(op, floatData("unary", x), floatData("unary", out))
    },

    binary(op, a, b, out) {
      sameDType("binary", a, b)
      // Comparisons write 1/0 in whatever dtype out has; arithmetic keeps the operands' dtype.
      if (op !== "less" && op !== "equal") sameDType("binary", a, out)
      scalarOrSize("binary", out.size, a, b)
      binaryLoop(op, dataOf("binary", a), dataOf("binary", b), dataOf("binary", out), a.dtype === "int32")
    },

    where(cond, a, b, out) {
      sameDType("where", a, b, out)
      scalarOrSize("where", out.size, cond, a, b)
      const c = dataOf("where", cond), x = dataOf("where", a), y = dataOf("where", b), o = dataOf("where", out)
      const [sc, sx, sy] = [step(c, o), step(x, o), step(y, o)]
      for (let i = 0; i < o.length; i++) o[i] = c[i * sc] !== 0 ? x[i * sx]! : y[i * sy]!
    },

    cast(x, out) {
      sameSize("cast", x, out)
      // TypedArray.set converts each element like a store does: float64 → float32 rounds to
      // nearest, float → int32 truncates toward zero (NaN → 0, out of range wraps modulo 2^32).
      dataOf("cast", out).set(dataOf("cast", x))
    },

    copy(src, srcView, dst, dstView) {
      sameDType("copy", src, dst)
      const s = dataOf("copy", src), d = dataOf("copy", dst)
      copyViews(src, srcView, dst, dstView)
      // Reading from a snapshot keeps an overlapping in-place copy well defined.
      copyStrided(src === dst ? s.slice() : s, srcView, d, dstView)
    },

    reduce(op, x, out, outer, axis, inner) {
      floatOnly("reduce", x, out)
      reduceSizes(x, out, outer, axis, inner)
      reduceLoop(op, floatData("reduce", x), floatData("reduce", out), outer, axis, inner)
    },

    matmul(a, b, out, spec) {
      floatOnly("matmul", a, b, out)
      sameDType("matmul", a, b, out)
      matmulSizes(a, b, out, spec)
      const A = floatData("matmul", a), B = floatData("matmul", b), C = floatData("matmul", out)
      if (opts.matmul === "naive") matmulNaive(A, B, C, spec)
      else matmulBlocked(A, B, C, spec)
    },

    gather(table, idx, out, width) {
      counts("gather", { width })
      sameDType("gather", table, out)
      const t = dataOf("gather", table), ix = intData("gather", idx, "idx"), o = dataOf("gather", out)
      check(out.size === idx.size * width, "gather", () => `out ${describe(out)} is not [${idx.size}, ${width}]`)
      check(width === 0 ? table.size === 0 : table.size % width === 0, "gather", () => `table ${describe(table)} is not rows × ${width}`)
      const rows = width === 0 ? 0 : table.size / width
      for (let i = 0; i < ix.length; i++) {
        const from = indexAt("gather", ix, i, rows) * width, to = i * width
        for (let j = 0; j < width; j++) o[to + j] = t[from + j]!
      }
    },

    scatterAdd(idx, src, out, width) {
      counts("scatterAdd", { width })
      sameDType("scatterAdd", src, out)
      const ix = intData("scatterAdd", idx, "idx"), s = dataOf("scatterAdd", src), o = dataOf("scatterAdd", out)
      check(src.size === idx.size * width, "scatterAdd", () => `src ${describe(src)} is not [${idx.size}, ${width}]`)
      check(width === 0 ? out.size === 0 : out.size % width === 0, "scatterAdd", () => `out ${describe(out)} is not rows × ${width}`)
      check(src !== out, "scatterAdd", () => "out must not alias src")
      const rows = width === 0 ? 0 : out.size / width
      o.fill(0)
      for (let i = 0; i < ix.length; i++) {
        const to = indexAt("scatterAdd", ix, i, rows) * width, from = i * width
        for (let j = 0; j < width; j++) o[to + j] = o[to + j]! + s[from + j]!
      }
    },

    takeAlong(x, idx, out, width) {
      counts("takeAlong", { width })
      sameDType("takeAlong", x, out)
      const xd = dataOf("takeAlong", x), ix = intData("takeAlong", idx, "idx"), o = dataOf("takeAlong", out)
      check(out.size === idx.size, "takeAlong", () => `out ${describe(out)} must have one element per index (${idx.size})`)
      check(x.size === idx.size * width, "takeAlong", () => `x ${describe(x)} is not [${idx.size}, ${width}]`)
      for (let i = 0; i < ix.length; i++) o[i] = xd[i * width + indexAt("takeAlong", ix, i, width)]!
    },

    putAlong(idx, src, out, width) {
      counts("putAlong", { width })
      sameDType("putAlong", src, out)
      const ix = intData("putAlong", idx, "idx"), s = dataOf("putAlong", src), o = dataOf("putAlong", out)
      check(src.size === idx.size, "putAlong", () => `src ${describe(src)} must have one element per index (${idx.size})`)
      check(out.size === idx.size * width, "putAlong", () => `out ${describe(out)} is not [${idx.size}, ${width}]`)
      check(src !== out, "putAlong", () => "out must not alias src")
      o.fill(0)
      for (let i = 0; i < ix.length; i++) o[i * width + indexAt("putAlong", ix, i, width)] = s[i]!
    },
  }
}

// ---------------------------------------------------------------------------------------------
// Elementwise and reduction loops (one loop per op, so the op is chosen once, not per element)
// ---------------------------------------------------------------------------------------------

function unaryLoop(op: UnaryOp, x: FloatData, o: FloatData): void {
  const n = o.length
  switch (op) {
    case "neg": for (let i = 0; i < n; i++) o[i] = -x[i]!; return
    case "exp": for (let i = 0; i < n; i++) o[i] = Math.exp(x[i]!); return
    case "log": for (let i = 0; i < n; i++) o[i] = Math.log(x[i]!); return
    case "sqrt": for (let i = 0; i < n; i++) o[i] = Math.sqrt(x[i]!); return
    case "recip": for (let i = 0; i < n; i++) o[i] = 1 / x[i]!; return
    case "sin": for (let i = 0; i < n; i++) o[i] = Math.sin(x[i]!); return
    case "cos": for (let i = 0; i < n; i++) o[i] = Math.cos(x[i]!); return
    default: fail("unary", `unknown op ${String(op)}`)
  }
}

/**
 * JS computes in float64 and the store rounds: exact float32 semantics for + − × ÷ (float64 has
 * enough bits that double rounding cannot happen). For int32, + and − are exact in float64 and
 * the store wraps modulo 2^32; × needs Math.imul because the exact product can exceed 2^53; ÷
 * truncates toward zero on store, and division by zero stores 0 (Infinity and NaN become 0).
 */
function binaryLoop(op: BinaryOp, a: CpuData, b: CpuData, o: CpuData, int: boolean): void {
  const n = o.length
  const [p, q] = [step(a, o), step(b, o)]
  switch (op) {
    case "add": for (let i = 0; i < n; i++) o[i] = a[i * p]! + b[i * q]!; return
    case "sub": for (let i = 0; i < n; i++) o[i] = a[i * p]! - b[i * q]!; return
    case "mul":
      if (int) for (let i = 0; i < n; i++) o[i] = Math.imul(a[i * p]!, b[i * q]!)
      else for (let i = 0; i < n; i++) o[i] = a[i * p]! * b[i * q]!
      return
    case "div": for (let i = 0; i < n; i++) o[i] = a[i * p]! / b[i * q]!; return
    case "maximum": for (let i = 0; i < n; i++) o[i] = Math.max(a[i * p]!, b[i * q]!); return // NaN wins
    case "less": for (let i = 0; i < n; i++) o[i] = a[i * p]! < b[i * q]! ? 1 : 0; return
    case "equal": for (let i = 0; i < n; i++) o[i] = a[i * p]! === b[i * q]! ? 1 : 0; return
    default: fail("binary", `unknown op ${String(op)}`)
  }
}

/** Sums accumulate in float64 whatever the dtype; max propagates NaN like `maximum`. */
function reduceLoop(op: ReduceOp, x: FloatData, o: FloatData, outer: number, axis: number, inner: number): void {
  if (op !== "sum" && op !== "max") fail("reduce", `unknown op ${String(op)}`)
  const sum = op === "sum"
  const empty = sum ? 0 : -Infinity
  if (inner === 1) {
    // Reducing the last axis: each output is one contiguous run.
    for (let r = 0; r < outer; r++) {
      const base = r * axis
      let acc = empty
      if (sum) for (let a = 0; a < axis; a++) acc += x[base + a]!
      else for (let a = 0; a < axis; a++) { const v = x[base + a]!; if (v > acc || v !== v) acc = v; if (acc !== acc) break }
      o[r] = acc
    }
    return
  }
  // Otherwise walk x in memory order, folding each row of `inner` into a float64 accumulator row.
  const acc = new Float64Array(inner)
  for (let r = 0; r < outer; r++) {
    acc.fill(empty)
    for (let a = 0; a < axis; a++) {
      const base = (r * axis + a) * inner
      if (sum) for (let j = 0; j < inner; j++) acc[j] = acc[j]! + x[base + j]!
      // Once NaN, `v > NaN` is false, so a NaN accumulator stays NaN.
      else for (let j = 0; j < inner; j++) { const v = x[base + j]!, m = acc[j]!; if (v > m || v !== v) acc[j] = v }
    }
    o.set(acc, r * inner)
  }
}

// ---------------------------------------------------------------------------------------------
// Strided copy
// ---------------------------------------------------------------------------------------------

/**
 * dst[dstView(i)] = src[srcView(i)] for every index i. First simplify the iteration space:
 * drop size-1 dims and merge neighbouring dims that are contiguous with each other in both views
 * (a contiguous [a, b, c] becomes [a·b·c]). Then an odometer walks the outer dims and a plain
 * loop does the innermost one, which after merging is usually long and stride-1.
 */
function copyStrided(s: CpuData, sv: View, d: CpuData, dv: View): void {
  if (sv.shape.some((n) => n === 0)) return
  const { shape, src: ss, dst: ds } = simplifyViews(sv, dv)
  const rank = shape.length
  if (rank === 0) { d[dv.offset] = s[sv.offset]!; return }

  const n = shape[rank - 1]!, sStep = ss[rank - 1]!, dStep = ds[rank - 1]!
  const outerRank = rank - 1
  const counter = new Array<number>(outerRank).fill(0)
  let sp = sv.offset, dp = dv.offset
  for (;;) {
    // Innermost run.
    if (sStep === 1 && dStep === 1) {
      if (n >= 64) d.set(s.subarray(sp, sp + n), dp) // same dtype, so this is a memcpy
      else for (let j = 0; j < n; j++) d[dp + j] = s[sp + j]!
    } else if (sStep === 0 && dStep === 1) {
      d.fill(s[sp]!, dp, dp + n) // broadcasting one value along a contiguous run
    } else {
      for (let j = 0; j < n; j++) d[dp + j * dStep] = s[sp + j * sStep]!
    }
    // Odometer over the outer dims: bump the last one, carry into earlier ones.
    let dim = outerRank - 1
    for (; dim >= 0; dim--) {
      counter[dim]!++
      sp += ss[dim]!
      dp += ds[dim]!
      if (counter[dim]! < shape[dim]!) break
      counter[dim] = 0
      sp -= ss[dim]! * shape[dim]!
      dp -= ds[dim]! * shape[dim]!
    }
    if (dim < 0) return
  }
}
