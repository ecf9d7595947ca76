/**
 * Argument checks every backend runs on its kernels' inputs, with the same messages. A failed
 * check is a bug in the executor (or a hand-written caller), so it throws a plain Error naming
 * the backend and the kernel: a loud crash is the most useful thing to do.
 */
import type { DType } from "../core/dtype.js"
import type { Buffer, View } from "./backend.js"

const isCount = (n: number): boolean => Number.isSafeInteger(n) && n >= 0
export const describe = (b: Buffer): string => `${b.dtype}[${b.size}]`

/** The checks for one backend (`name` prefixes messages) computing in these float dtypes. */
export function kernelChecks(name: string, floats: readonly DType[]) {
  function fail(kernel: string, message: string): never {
    throw new Error(`${name}.${kernel}: ${message}`)
  }
  function check(cond: boolean, kernel: string, message: () => string): void {
    if (!cond) fail(kernel, message())
  }
  return {
    fail,
    check,
    sameSize(kernel: string, ...bufs: Buffer[]): void {
      const size = bufs[0]!.size
      check(bufs.every((b) => b.size === size), kernel, () => `operands must have equal sizes, got ${bufs.map(describe).join(", ")}`)
    },
    /** Elementwise operands hold out.size elements, or one (a scalar every element sees). */
    scalarOrSize(kernel: string, size: number, ...bufs: Buffer[]): void {
      check(bufs.every((b) => b.size === size || b.size === 1), kernel, () => `operands must hold ${size} elements or 1 (a scalar), got ${bufs.map(describe).join(", ")}`)
    },
    sameDType(kernel: string, ...bufs: Buffer[]): void {
      const dtype = bufs[0]!.dtype
      check(bufs.every((b) => b.dtype === dtype), kernel, () => `operands must have equal dtypes, got ${bufs.map(describe).join(", ")}`)
    },
    floatOnly(kernel: string, ...bufs: Buffer[]): void {
      for (const b of bufs) check(floats.includes(b.dtype), kernel, () => `unsupported dtype ${b.dtype} (${floats.join(" or ")} only)`)
    },
    int32Only(kernel: string, b: Buffer, what: string): void {
      check(b.dtype === "int32", kernel, () => `${what} must be int32, got ${b.dtype}`)
    },
    counts(kernel: string, values: Record<string, number>): void {
      for (const [n, v] of Object.entries(values)) check(isCount(v), kernel, () => `${n} must be a non-negative integer, got ${v}`)
    },
    /** A view's shape and strides are integers and every element it touches lies inside the buffer. */
    checkView(kernel: string, what: string, v: View, size: number): void {
      check(v.shape.length === v.strides.length, kernel, () => `${what} has rank ${v.shape.length} but ${v.strides.length} strides`)
      check(v.shape.every(isCount), kernel, () => `${what} shape [${v.shape.join(", ")}] must be non-negative integers`)
      check(v.strides.every(Number.isSafeInteger) && Number.isSafeInteger(v.offset), kernel, () => `${what} strides and offset must be integers`)
      if (v.shape.some((n) => n === 0)) return // an empty view touches nothing
      let lo = v.offset, hi = v.offset
      v.shape.forEach((n, i) => {
        const reach = (n - 1) * v.strides[i]!
        if (reach < 0) lo += reach
        else hi += reach
      })
      check(lo >= 0 && hi < size, kernel, () => `${what} reaches elements [${lo}, ${hi}] of a buffer of ${size}`)
    },
  }
}
