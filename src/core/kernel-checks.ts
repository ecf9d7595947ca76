/**
 * The checks behind the backend contract (./checked-backend.ts applies them to every backend).
 * A failed check is a bug in the executor (or a hand-written caller), so it throws a plain Error
 * naming the backend and the kernel: a loud crash is the most useful thing to do.
 */
import type { DType } from "./dtype.js"
import type { Buffer, MatmulSpec, View } from "./backend.js"
import { numel } from "./backend.js"

const isCount = (n: number): boolean => Number.isSafeInteger(n) && n >= 0
export const describe = (b: Buffer): string => `${b.dtype}[${b.size}]`
const list = (bufs: readonly Buffer[]): string => bufs.map(describe).join(", ")
const fmt = (shape: readonly number[]): string => `[${shape.join(", ")}]`

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
      check(
        bufs.every((b) => b.size === size),
        kernel,
        () => `operands must have equal sizes, got ${list(bufs)}`,
      )
    },
    /** Elementwise operands hold out.size elements, or one (a scalar every element sees). */
    scalarOrSize(kernel: string, size: number, ...bufs: Buffer[]): void {
      check(
        bufs.every((b) => b.size === size || b.size === 1),
        kernel,
        () => `operands must hold ${size} elements or 1 (a scalar), got ${list(bufs)}`,
      )
    },
    sameDType(kernel: string, ...bufs: Buffer[]): void {
      const dtype = bufs[0]!.dtype
      check(
        bufs.every((b) => b.dtype === dtype),
        kernel,
        () => `operands must have equal dtypes, got ${list(bufs)}`,
      )
    },
    floatOnly(kernel: string, ...bufs: Buffer[]): void {
      for (const b of bufs) {
        check(floats.includes(b.dtype), kernel, () => `unsupported dtype ${b.dtype} (${floats.join(" or ")} only)`)
      }
    },
    int32Only(kernel: string, b: Buffer, what: string): void {
      check(b.dtype === "int32", kernel, () => `${what} must be int32, got ${b.dtype}`)
    },
    counts(kernel: string, values: Record<string, number>): void {
      for (const [n, v] of Object.entries(values))
        check(isCount(v), kernel, () => `${n} must be a non-negative integer, got ${v}`)
    },
    /** A view's shape and strides are integers and every element it touches lies inside the buffer. */
    checkView(kernel: string, what: string, v: View, size: number): void {
      check(
        v.shape.length === v.strides.length,
        kernel,
        () => `${what} has rank ${v.shape.length} but ${v.strides.length} strides`,
      )
      check(v.shape.every(isCount), kernel, () => `${what} shape ${fmt(v.shape)} must be non-negative integers`)
      check(
        v.strides.every(Number.isSafeInteger) && Number.isSafeInteger(v.offset),
        kernel,
        () => `${what} strides and offset must be integers`,
      )
      if (v.shape.some((n) => n === 0)) return // an empty view touches nothing
      let lo = v.offset,
        hi = v.offset
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
    /** iota's shape and axis against out. */
    iotaShape(out: Buffer, shape: readonly number[], axis: number): void {
      shared.counts("iota", Object.fromEntries(shape.map((n, i) => [`shape[${i}]`, n])))
      check(
        Number.isInteger(axis) && axis >= 0 && axis < shape.length,
        "iota",
        () => `axis ${axis} is out of range for rank ${shape.length}`,
      )
      check(
        numel(shape) === out.size,
        "iota",
        () => `shape ${fmt(shape)} has ${numel(shape)} elements but out holds ${out.size}`,
      )
    },
    /** matmul's sizes and aliasing. */
    matmulSizes(a: Buffer, b: Buffer, out: Buffer, { batch, m, n, k }: MatmulSpec): void {
      shared.counts("matmul", { batch, m, n, k })
      check(a.size === batch * m * k, "matmul", () => `a ${describe(a)} does not hold batch·m·k = ${batch}·${m}·${k}`)
      check(b.size === batch * k * n, "matmul", () => `b ${describe(b)} does not hold batch·k·n = ${batch}·${k}·${n}`)
      check(
        out.size === batch * m * n,
        "matmul",
        () => `out ${describe(out)} does not hold batch·m·n = ${batch}·${m}·${n}`,
      )
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
      const [s, d] = [srcView.shape, dstView.shape]
      check(
        s.length === d.length && s.every((n, i) => n === d[i]),
        "copy",
        () => `srcView shape ${fmt(srcView.shape)} differs from dstView shape ${fmt(dstView.shape)}`,
      )
    },
    /** A table of rows × width (gather's table, scatterAdd's out). */
    rowsOf(kernel: string, what: string, t: Buffer, width: number): void {
      check(
        width === 0 ? t.size === 0 : t.size % width === 0,
        kernel,
        () => `${what} ${describe(t)} is not rows × ${width}`,
      )
    },
    /** One row of `width` per index (gather's out, scatterAdd's src, takeAlong's x, putAlong's out). */
    rowPerIndex(kernel: string, what: string, b: Buffer, idx: Buffer, width: number): void {
      check(b.size === idx.size * width, kernel, () => `${what} ${describe(b)} is not [${idx.size}, ${width}]`)
    },
    /** One element per index (takeAlong's out, putAlong's src). */
    onePerIndex(kernel: string, what: string, b: Buffer, idx: Buffer): void {
      check(b.size === idx.size, kernel, () => `${what} ${describe(b)} must have one element per index (${idx.size})`)
    },
    notAliased(kernel: string, src: Buffer, out: Buffer): void {
      check(src !== out, kernel, () => "out must not alias src")
    },
  }
}

export type KernelChecks = ReturnType<typeof kernelChecks>
