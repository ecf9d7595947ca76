/**
 * Index kernels: gather / scatterAdd (rows of a table) and takeAlong / putAlong (one element
 * per row). Values move as raw 32-bit words except in scatterAdd, which adds.
 *
 * A kernel cannot throw, and the host cannot look at the indices without a round trip to the
 * device, so an out-of-range index is not an error here (the CPU backend throws): gather and
 * takeAlong read 0 for it, scatterAdd and putAlong drop it.
 *
 * scatterAdd adds without atomics (WebGPU has no float atomics, and atomics would make the sum
 * order, hence the rounding, vary from run to run). Each thread owns one column of a block of
 * output rows, walks all indices in order and adds the ones that land in its block: every output
 * element is summed by one thread, in index order, so the result is deterministic. Blocks of
 * rows exist only to give the GPU enough threads when the width is small.
 */
import { entry, paramsStruct, storage, WG } from "./common.js"

/** Parameters: n (= out size), width, rows. */
export const gatherWgsl = (): string =>
  paramsStruct(["n: u32", "width: u32", "rows: u32"]) +
  storage(1, "table", "u32") +
  storage(2, "idx", "i32") +
  storage(3, "out", "u32", true) +
  entry(`
  let e = wid * ${WG}u + li;
  if (e >= p.n) { return; }
  let r = idx[e / p.width];
  var v = 0u;
  if (r >= 0 && u32(r) < p.rows) { v = table[u32(r) * p.width + e % p.width]; }
  out[e] = v;`)

/** Parameters: n (= out size), width. out[i] = x[i, idx[i]]. */
export const takeAlongWgsl = (): string =>
  paramsStruct(["n: u32", "width: u32"]) +
  storage(1, "x", "u32") +
  storage(2, "idx", "i32") +
  storage(3, "out", "u32", true) +
  entry(`
  let i = wid * ${WG}u + li;
  if (i >= p.n) { return; }
  let c = idx[i];
  var v = 0u;
  if (c >= 0 && u32(c) < p.width) { v = x[i * p.width + u32(c)]; }
  out[i] = v;`)

/** Parameters: n (= out size), width. out[i, j] = j == idx[i] ? src[i] : 0. */
export const putAlongWgsl = (): string =>
  paramsStruct(["n: u32", "width: u32"]) +
  storage(1, "idx", "i32") +
  storage(2, "src", "u32") +
  storage(3, "out", "u32", true) +
  entry(`
  let e = wid * ${WG}u + li;
  if (e >= p.n) { return; }
  let i = e / p.width;
  out[e] = select(0u, src[i], idx[i] == i32(e % p.width));`)

/**
 * Parameters: width, rows, count (indices), rowsPerBlock. Threads: width · blocks.
 * Zeroes its own slice of out, then adds src rows whose index falls into its block.
 */
export const scatterAddWgsl = (type: "f32" | "i32"): string =>
  paramsStruct(["width: u32", "rows: u32", "count: u32", "rowsPerBlock: u32"]) +
  storage(1, "idx", "i32") +
  storage(2, "src", type) +
  storage(3, "out", type, true) +
  entry(`
  let t = wid * ${WG}u + li;
  let j = t % p.width;
  let first = (t / p.width) * p.rowsPerBlock;
  if (first >= p.rows) { return; }
  let end = min(first + p.rowsPerBlock, p.rows);
  for (var r = first; r < end; r++) { out[r * p.width + j] = ${type}(0); }
  for (var i = 0u; i < p.count; i++) {
    let r = idx[i];
    if (r >= i32(first) && r < i32(end)) {
      let at = u32(r) * p.width + j;
      out[at] = out[at] + src[i * p.width + j];
    }
  }`)
