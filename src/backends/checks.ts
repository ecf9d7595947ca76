/**
 * Argument checks every backend runs on its kernels' inputs, with the same messages. A failed
 * check is a bug in the executor (or a hand-written caller), so it throws a plain Error naming
 * the backend and the kernel: a loud crash is the most useful thing to do.
 */
import type { DType } from "../core/dtype.js"
import type { Buffer, MatmulSpec, View } from "../core/backend.js"

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
  const shared = {
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
  return {
    ...shared,
    /** iota's shape and axis; returns out viewed as [outer, len, inner] (the value is the middle index). */
    iotaLayout(out: Buffer, shape: readonly number[], axis: number): { outer: number; len: number; inner: number } {
      shared.counts("iota", Object.fromEntries(shape.map((n, i) => [`shape[${i}]`, n])))
      check(Number.isInteger(axis) && axis >= 0 && axis < shape.length, "iota", () => `axis ${axis} is out of range for rank ${shape.length}`)
      const size = shape.reduce((a, b) => a * b, 1)
      check(size === out.size, "iota", () => `shape [${shape.join(", ")}] has ${size} elements but out holds ${out.size}`)
      const len = shape[axis]!
      const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1)
      return { outer: len * inner === 0 ? 0 : size / (len * inner), len, inner }
    },
    /** matmul's sizes and aliasing (dtype rules differ by backend and stay with each). */
    matmulSizes(a: Buffer, b: Buffer, out: Buffer, { batch, m, n, k }: MatmulSpec): void {
      shared.counts("matmul", { batch, m, n, k })
      check(a.size === batch * m * k, "matmul", () => `a ${describe(a)} does not hold batch·m·k = ${batch}·${m}·${k}`)
      check(b.size === batch * k * n, "matmul", () => `b ${describe(b)} does not hold batch·k·n = ${batch}·${k}·${n}`)
      check(out.size === batch * m * n, "matmul", () => `out ${describe(out)} does not hold batch·m·n = ${batch}·${m}·${n}`)
      check(out !== a && out !== b, "matmul", () => "out must not alias an input")
    },
    /** reduce's [outer, axis, inner] against the buffers. */
    reduceSizes(x: Buffer, out: Buffer, outer: number, axis: number, inner: number): void {
      shared.counts("reduce", { outer, axis, inner })
      check(x.size === outer * axis * inner, "reduce", () => `x ${describe(x)} is not [${outer}, ${axis}, ${inner}]`)
      check(out.size === outer * inner, "reduce", () => `out ${describe(out)} is not [${outer}, ${inner}]`)
      check(x !== out, "reduce", () => "out must not alias x")
    },
    /** copy's two views: inside their buffers and of one shape. */
    copyViews(src: Buffer, srcView: View, dst: Buffer, dstView: View): void {
      shared.checkView("copy", "srcView", srcView, src.size)
      shared.checkView("copy", "dstView", dstView, dst.size)
      check(
        srcView.shape.length === dstView.shape.length && srcView.shape.every((n, i) => n === dstView.shape[i]),
        "copy",
        () => `srcView shape [${srcView.shape.join(", ")}] differs from dstView shape [${dstView.shape.join(", ")}]`,
      )
    },
  }
}
