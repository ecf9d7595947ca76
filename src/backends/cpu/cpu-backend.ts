/**
 * The CPU backend: every kernel of the contract in plain TypeScript over typed arrays.
 *
 * This is the reference backend. It favours clarity, but it is also the backend people train on
 * without a GPU, so the two hot kernels (`copy` and `matmul`) have fast paths. Arguments are
 * checked before they get here (src/core/checked-backend.ts); what is left to check is what only
 * the data shows: an index out of range throws a GraphError naming the kernel, the index and the range.
 */
import type { Buffer, BackendImpl, BinaryOp, ReduceOp, UnaryOp, View } from "../../core/backend.js"
import { iotaDims } from "../../core/backend.js"
import { checkedBackend } from "../../core/checked-backend.js"
import { indexOutOfRange } from "../../core/indices.js"
import { kernelChecks } from "../../core/kernel-checks.js"
import { LiveBuffers, type LiveMemory } from "../../core/live-buffers.js"
import { simplifyViews } from "../views.js"
import { cpuRoutines } from "./fused.js"
import { matmulBlocked, matmulNaive } from "./matmul.js"
import { hostArray } from "../../core/dtype.js"

export type CpuData = Float32Array | Float64Array | Int32Array
type FloatData = Float32Array | Float64Array

/** A CPU buffer is just its typed array. */
export interface CpuBuffer extends Buffer {
  readonly data: CpuData
}

export type CpuMemory = LiveMemory

export interface CpuBackend extends BackendImpl {
  /** The backend's own byte count, independent of the executor's accounting. */
  memory(): CpuMemory
}

const { fail } = kernelChecks("cpu", [])

const data = (b: Buffer): CpuData => (b as CpuBuffer).data
const floats = (b: Buffer): FloatData => data(b) as FloatData
const ints = (b: Buffer): Int32Array => data(b) as Int32Array

/** Index step of an elementwise operand: 0 for a broadcast scalar. */
const step = (x: CpuData, out: CpuData): number => (x.length === out.length ? 1 : 0)

/** Reads idx[i] and checks it addresses one of `bound` slots: indices are data, a bad one the caller's. */
function indexAt(kernel: string, idx: Int32Array, i: number, bound: number): number {
  const r = idx[i]!
  if (r < 0 || r >= bound)
    throw indexOutOfRange(`cpu.${kernel}`, r, i, bound, `every index must address one of the ${bound} rows (or slots)`)
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
  const buffers = new LiveBuffers()
  return checkedBackend<CpuBackend>(cpuKernels(opts, buffers), buffers)
}

/**
 * The reference kernels before `checkedBackend`: what `makeCpuBackend` wraps, and what the fast
 * CPU backend (../cpu-fast/) starts from, replacing the kernels it speeds up.
 */
export function cpuKernels(opts: CpuOptions, buffers: LiveBuffers): CpuBackend {
  return {
    name: "cpu",
    dtypes: ["float32", "float64", "int32"],
    ...(opts.fused === false ? {} : { routines: cpuRoutines }),

    memory: () => buffers.memory(),

    alloc: (dtype, size): CpuBuffer => ({ dtype, size, data: hostArray(dtype, size) }),
    // The host tier is the same memory here: offloading on the CPU moves nothing, only counts.
    hostAlloc: (dtype, size): CpuBuffer => ({ dtype, size, data: hostArray(dtype, size), tier: "host" }),
    free() {},
    write: (buffer, values) => data(buffer).set(values),
    // A copy, so later kernels cannot change what the caller holds.
    read: async (buffer) => data(buffer).slice(),

    fill: (out, value) => data(out).fill(value),

    iota(out, shape, axis) {
      const o = data(out)
      const { outer, len, inner } = iotaDims(shape, axis)
      let i = 0
      for (let r = 0; r < outer; r++) for (let v = 0; v < len; v++) for (let j = 0; j < inner; j++) o[i++] = v
    },

    unary: (op, x, out) => unaryLoop(op, floats(x), floats(out)),
    binary: (op, a, b, out) => binaryLoop(op, data(a), data(b), data(out), a.dtype === "int32"),

    where(cond, a, b, out) {
      const c = data(cond),
        x = data(a),
        y = data(b),
        o = data(out)
      const [sc, sx, sy] = [step(c, o), step(x, o), step(y, o)]
      for (let i = 0; i < o.length; i++) o[i] = c[i * sc] !== 0 ? x[i * sx]! : y[i * sy]!
    },

    // TypedArray.set converts each element like a store does: float64 → float32 rounds to
    // nearest, float → int32 truncates toward zero (NaN → 0, out of range wraps modulo 2^32).
    cast: (x, out) => data(out).set(data(x)),

    // Reading from a snapshot keeps an overlapping in-place copy well defined.
    copy: (src, srcView, dst, dstView) =>
      copyStrided(src === dst ? data(src).slice() : data(src), srcView, data(dst), dstView),

    reduce: (op, x, out, outer, axis, inner) => reduceLoop(op, floats(x), floats(out), outer, axis, inner),

    matmul(a, b, out, spec) {
      const A = floats(a),
        B = floats(b),
        C = floats(out)
      if (opts.matmul === "naive") matmulNaive(A, B, C, spec)
      else matmulBlocked(A, B, C, spec)
    },

    gather(table, idx, out, width) {
      const t = data(table),
        ix = ints(idx),
        o = data(out)
      const rows = width === 0 ? 0 : table.size / width
      for (let i = 0; i < ix.length; i++) {
        const from = indexAt("gather", ix, i, rows) * width,
          to = i * width
        for (let j = 0; j < width; j++) o[to + j] = t[from + j]!
      }
    },

    scatterAdd(idx, src, out, width) {
      const ix = ints(idx),
        s = data(src),
        o = data(out)
      const rows = width === 0 ? 0 : out.size / width
      o.fill(0)
      for (let i = 0; i < ix.length; i++) {
        const to = indexAt("scatterAdd", ix, i, rows) * width,
          from = i * width
        for (let j = 0; j < width; j++) o[to + j] = o[to + j]! + s[from + j]!
      }
    },

    takeAlong(x, idx, out, width) {
      const xd = data(x),
        ix = ints(idx),
        o = data(out)
      for (let i = 0; i < ix.length; i++) o[i] = xd[i * width + indexAt("takeAlong", ix, i, width)]!
    },

    putAlong(idx, src, out, width) {
      const ix = ints(idx),
        s = data(src),
        o = data(out)
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
    case "neg":
      for (let i = 0; i < n; i++) o[i] = -x[i]!
      return
    case "exp":
      for (let i = 0; i < n; i++) o[i] = Math.exp(x[i]!)
      return
    case "log":
      for (let i = 0; i < n; i++) o[i] = Math.log(x[i]!)
      return
    case "sqrt":
      for (let i = 0; i < n; i++) o[i] = Math.sqrt(x[i]!)
      return
    case "recip":
      for (let i = 0; i < n; i++) o[i] = 1 / x[i]!
      return
    case "sin":
      for (let i = 0; i < n; i++) o[i] = Math.sin(x[i]!)
      return
    case "cos":
      for (let i = 0; i < n; i++) o[i] = Math.cos(x[i]!)
      return
    default:
      fail("unary", `unknown op ${String(op)}`)
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
    case "add":
      for (let i = 0; i < n; i++) o[i] = a[i * p]! + b[i * q]!
      return
    case "sub":
      for (let i = 0; i < n; i++) o[i] = a[i * p]! - b[i * q]!
      return
    case "mul":
      if (int) for (let i = 0; i < n; i++) o[i] = Math.imul(a[i * p]!, b[i * q]!)
      else for (let i = 0; i < n; i++) o[i] = a[i * p]! * b[i * q]!
      return
    case "div":
      for (let i = 0; i < n; i++) o[i] = a[i * p]! / b[i * q]!
      return
    case "maximum":
      for (let i = 0; i < n; i++) o[i] = Math.max(a[i * p]!, b[i * q]!)
      return // NaN wins
    case "less":
      for (let i = 0; i < n; i++) o[i] = a[i * p]! < b[i * q]! ? 1 : 0
      return
    case "equal":
      for (let i = 0; i < n; i++) o[i] = a[i * p]! === b[i * q]! ? 1 : 0
      return
    default:
      fail("binary", `unknown op ${String(op)}`)
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
      else
        for (let a = 0; a < axis; a++) {
          const v = x[base + a]!
          if (v > acc || Number.isNaN(v)) acc = v
          if (Number.isNaN(acc)) break
        }
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
      else
        for (let j = 0; j < inner; j++) {
          const v = x[base + j]!,
            m = acc[j]!
          if (v > m || Number.isNaN(v)) acc[j] = v
        }
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
  if (rank === 0) {
    d[dv.offset] = s[sv.offset]!
    return
  }

  const n = shape[rank - 1]!,
    sStep = ss[rank - 1]!,
    dStep = ds[rank - 1]!
  const outerRank = rank - 1
  const counter = new Array<number>(outerRank).fill(0)
  let sp = sv.offset,
    dp = dv.offset
  for (;;) {
    // Innermost run.
    if (sStep === 1 && dStep === 1) {
      if (n >= 64)
        d.set(s.subarray(sp, sp + n), dp) // same dtype, so this is a memcpy
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
