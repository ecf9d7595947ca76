/**
 * Strided copy: dst[dstView(i)] = src[srcView(i)] for every index i of the views' shape.
 *
 * The host first simplifies the iteration space as the CPU backend does (drop size-1 dims,
 * merge dims contiguous with each other in both views), so most copies become rank 1 or 2.
 * A fully contiguous copy needs no shader at all (`copyBufferToBuffer`); anything else runs one
 * thread per element, which turns its linear index into coordinates, innermost dim first.
 * Elements are moved as raw 32-bit words, so one shader serves float32 and int32.
 */
import type { View } from "../../backend.js"
import { entry, paramsStruct, storage, WG } from "./common.js"

export const MAX_RANK = 8

export interface Simplified {
  readonly shape: number[]
  readonly src: number[]
  readonly dst: number[]
}

export function simplify(sv: View, dv: View): Simplified {
  const shape: number[] = [], src: number[] = [], dst: number[] = []
  for (let i = 0; i < sv.shape.length; i++) {
    const n = sv.shape[i]!
    if (n === 1) continue
    const last = shape.length - 1
    if (last >= 0 && src[last] === sv.strides[i]! * n && dst[last] === dv.strides[i]! * n) {
      // The previous dim steps over exactly one run of this one in both views: merge.
      shape[last] = shape[last]! * n
      src[last] = sv.strides[i]!
      dst[last] = dv.strides[i]!
    } else {
      shape.push(n); src.push(sv.strides[i]!); dst.push(dv.strides[i]!)
    }
  }
  return { shape, src, dst }
}

/** True when the simplified copy is one contiguous run in both buffers. */
export const isContiguous = (s: Simplified): boolean => s.shape.length === 0 || (s.shape.length === 1 && s.src[0] === 1 && s.dst[0] === 1)

/** Parameter words: shape, src strides, dst strides (each padded to 8), n, rank, offsets. */
export function copyParams(s: Simplified, srcOffset: number, dstOffset: number, n: number): number[] {
  const pad = (xs: number[], v: number) => [...xs, ...new Array<number>(MAX_RANK - xs.length).fill(v)]
  return [...pad(s.shape, 1), ...pad(s.src, 0), ...pad(s.dst, 0), n, s.shape.length, srcOffset, dstOffset]
}

export const copyWgsl = (): string =>
  paramsStruct([
    "shape: array<vec4<u32>, 2>", "src: array<vec4<i32>, 2>", "dst: array<vec4<i32>, 2>",
    "n: u32", "rank: u32", "srcOffset: i32", "dstOffset: i32",
  ]) + storage(1, "x", "u32") + storage(2, "out", "u32", true) + entry(`
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
