/** Strided views, simplified the same way by every backend before a copy. */
import type { View } from "../core/backend.js"

export interface Simplified {
  readonly shape: number[]
  /** Strides of the source and destination views over `shape`. */
  readonly src: number[]
  readonly dst: number[]
}

/**
 * The copy's iteration space with size-1 dims dropped and neighbouring dims merged where they
 * are contiguous with each other in both views (a contiguous [a, b, c] becomes [a·b·c]), so the
 * innermost loop is usually long and stride-1.
 */
export function simplifyViews(sv: View, dv: View): Simplified {
  const shape: number[] = [],
    src: number[] = [],
    dst: number[] = []
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
      shape.push(n)
      src.push(sv.strides[i]!)
      dst.push(dv.strides[i]!)
    }
  }
  return { shape, src, dst }
}
