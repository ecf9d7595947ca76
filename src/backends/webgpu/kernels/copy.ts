/**
 * Strided copy: dst[dstView(i)] = src[srcView(i)] for every index i of the views' shape.
 *
 * The host first simplifies the iteration space as the CPU backend does (drop size-1 dims,
 * merge dims contiguous with each other in both views), so most copies become rank 1 or 2.
 * A fully contiguous copy needs no shader at all (`copyBufferToBuffer`); anything else runs one
 * thread per element, which turns its linear index into coordinates, innermost dim first.
 * Elements are moved as raw 32-bit words, so one shader serves float32 and int32.
 */
import type { View } from "../../../core/backend.js"
import { entry, paramsStruct, storage, WG } from "./common.js"

export const MAX_RANK = 8

import type { Simplified } from "../../views.js"

export { type Simplified, simplifyViews as simplify } from "../../views.js"

/** True when the simplified copy is one contiguous run in both buffers. */
export const isContiguous = (s: Simplified): boolean =>
  s.shape.length === 0 || (s.shape.length === 1 && s.src[0] === 1 && s.dst[0] === 1)

/** Parameter words: shape, src strides, dst strides (each padded to 8), n, rank, offsets. */
export function copyParams(s: Simplified, srcOffset: number, dstOffset: number, n: number): number[] {
  const pad = (xs: number[], v: number) => [...xs, ...new Array<number>(MAX_RANK - xs.length).fill(v)]
  return [...pad(s.shape, 1), ...pad(s.src, 0), ...pad(s.dst, 0), n, s.shape.length, srcOffset, dstOffset]
}

export const copyWgsl = (): string =>
  paramsStruct([
    "shape: array<vec4<u32>, 2>",
    "src: array<vec4<i32>, 2>",
    "dst: array<vec4<i32>, 2>",
    "n: u32",
    "rank: u32",
    "srcOffset: i32",
    "dstOffset: i32",
  ]) +
  storage(1, "x", "u32") +
  storage(2, "out", "u32", true) +
  entry(`
  let i = wid * ${WG}u + li;
  if (i >= p.n) { return; }
  var rest = i;
  var s = p.srcOffset;
  var d = p.dstOffset;
  for (var k = i32(p.rank) - 1; k >= 0; k--) {
    let n = p.shape[k / 4][k % 4];
    let c = i32(rest % n);
    rest = rest / n;
    s += c * p.src[k / 4][k % 4];
    d += c * p.dst[k / 4][k % 4];
  }
  out[u32(d)] = x[u32(s)];`)
