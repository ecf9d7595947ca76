/**
 * Reductions of x viewed as [outer, axis, inner] over the middle axis into out [outer, inner].
 *
 * Two shapes of the problem, two kernels:
 * - Reducing a contiguous row (inner = 1, a long axis): one workgroup per row. Each thread folds
 *   a strided share of the row, then the workgroup combines the partial results in shared
 *   memory by halving (a tree), so a row of 10⁵ elements is read by 128 threads in parallel.
 * - Everything else: one thread per output, looping over the axis. Neighbouring threads read
 *   neighbouring elements (consecutive inner indices), so the loads coalesce.
 * Sums accumulate in float32 (the tree keeps the rounding error small); max lets NaN win.
 */
import type { ReduceOp } from "../../../core/backend.js"
import { entry, floatHelpers, paramsStruct, storage, WG } from "./common.js"

/** Threads per row in the row kernel (a power of two for the tree). */
export const ROW_WG = 128

/** Below this axis length a row kernel would leave most of its threads idle. */
export const ROW_MIN_AXIS = 64

const combine = (op: ReduceOp, a: string, b: string): string => (op === "sum" ? `${a} + ${b}` : `maxNan(${a}, ${b})`)
const empty = (op: ReduceOp): string => (op === "sum" ? "0.0" : "negInf()")

/** Parameters: outer, axis, inner. Workgroups: one per row (outer). */
export const reduceRowsWgsl = (op: ReduceOp): string =>
  paramsStruct(["outer: u32", "axis: u32", "inner: u32"]) +
  storage(1, "x", "f32") +
  storage(2, "out", "f32", true) +
  floatHelpers +
  `
var<workgroup> partial: array<f32, ${ROW_WG}>;
` +
  entry(
    `
  if (wid >= p.outer) { return; } // the same for the whole workgroup, so barriers stay uniform
  let base = wid * p.axis;
  var acc = ${empty(op)};
  for (var a = li; a < p.axis; a += ${ROW_WG}u) { acc = ${combine(op, "acc", "x[base + a]")}; }
  partial[li] = acc;
  workgroupBarrier();
  for (var half = ${ROW_WG / 2}u; half > 0u; half = half / 2u) {
    if (li < half) { partial[li] = ${combine(op, "partial[li]", "partial[li + half]")}; }
    workgroupBarrier();
  }
  if (li == 0u) { out[wid] = partial[0]; }`,
    ROW_WG,
  )

/** Parameters: outer, axis, inner. One thread per output element. */
export const reduceLoopWgsl = (op: ReduceOp): string =>
  paramsStruct(["outer: u32", "axis: u32", "inner: u32"]) +
  storage(1, "x", "f32") +
  storage(2, "out", "f32", true) +
  floatHelpers +
  entry(`
  let o = wid * ${WG}u + li;
  if (o >= p.outer * p.inner) { return; }
  let r = o / p.inner;
  let j = o % p.inner;
  var at = r * p.axis * p.inner + j;
  var acc = ${empty(op)};
  for (var a = 0u; a < p.axis; a++) {
    acc = ${combine(op, "acc", "x[at]")};
    at += p.inner;
  }
  out[o] = acc;`)
