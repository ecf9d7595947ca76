/**
 * The backend contract's argument checks, written once and applied to every backend by one
 * wrapper: `checkedBackend(impl)` checks each call against the table below (and each fused
 * routine call against its declaration in ./routines/registry.ts), then hands it to `impl`, which
 * only allocates and launches. What differs between backends is data: the float dtypes they
 * compute in are those of `impl.dtypes`.
 */
import type { BackendImpl, Buffer } from "./backend.js"
import { numel } from "./backend.js"
import { bytesPerElement, dtypeOf, isFloat } from "./dtype.js"
import { describe, type KernelChecks, kernelChecks } from "./kernel-checks.js"
import { LiveBuffers } from "./live-buffers.js"
import type { AnyRoutineCall } from "./routines/declare.js"
import { mapKernels, type RoutineName, routineTable } from "./routines/registry.js"

type Kernel = "write" | "fill" | "iota" | "unary" | "binary" | "where" | "cast" | "copy" | "reduce" | "matmul"
  | "gather" | "scatterAdd" | "takeAlong" | "putAlong"

const isInt32 = (v: number): boolean => Number.isInteger(v) && v >= -2147483648 && v <= 2147483647

/** Each kernel's checks on its arguments, given the backend's checks (`c`, naming the backend). */
const contract: { readonly [K in Kernel]: (c: KernelChecks, ...args: Parameters<BackendImpl[K]>) => void } = {
  write(c, buffer, data) {
    // bfloat16 has no host array: it is written from float32 (and rounded by the backend).
    const bf16 = buffer.dtype === "bfloat16"
    c.check(dtypeOf(data) === (bf16 ? "float32" : buffer.dtype), "write", () =>
      `buffer is ${buffer.dtype} but data is a ${data.constructor.name}${bf16 ? " (bfloat16 is written from a Float32Array)" : ""}`)
    c.check(data.length === buffer.size, "write", () => `buffer holds ${buffer.size} elements but data has ${data.length}`)
  },
  fill(c, out, value) {
    // An Int32Array would silently turn 0.5 into 0 and -Infinity into 0.
    if (out.dtype === "int32") c.check(isInt32(value), "fill", () => `${value} is not an int32`)
  },
  iota: (c, out, shape, axis) => c.iotaShape(out, shape, axis),
  unary(c, _op, x, out) {
    c.floatOnly("unary", x, out)
    c.sameDType("unary", x, out)
    c.sameSize("unary", x, out)
  },
  binary(c, op, a, b, out) {
    c.sameDType("binary", a, b)
    // Comparisons write 1/0 in whatever dtype out has; arithmetic keeps the operands' dtype.
    if (op !== "less" && op !== "equal") c.sameDType("binary", a, out)
    c.scalarOrSize("binary", out.size, a, b)
  },
  where(c, cond, a, b, out) {
    c.sameDType("where", a, b, out)
    c.scalarOrSize("where", out.size, cond, a, b)
  },
  cast: (c, x, out) => c.sameSize("cast", x, out),
  copy(c, src, srcView, dst, dstView) {
    c.sameDType("copy", src, dst)
    c.copyViews(src, srcView, dst, dstView)
  },
  reduce(c, _op, x, out, outer, axis, inner) {
    c.floatOnly("reduce", x, out) // (the CPU may sum float32 into float64)
    c.reduceSizes(x, out, outer, axis, inner)
  },
  matmul(c, a, b, out, spec) {
    c.floatOnly("matmul", a, b, out)
    c.sameDType("matmul", a, b)
    // bfloat16 operands may write (or accumulate into) a float32 out: a weight gradient.
    c.check(out.dtype === a.dtype || (a.dtype === "bfloat16" && out.dtype === "float32"), "matmul", () => matmulOutDType(a, out))
    c.matmulSizes(a, b, out, spec)
  },
  gather(c, table, idx, out, width) {
    c.counts("gather", { width })
    c.sameDType("gather", table, out)
    c.int32Only("gather", idx, "idx")
    c.rowPerIndex("gather", "out", out, idx, width)
    c.rowsOf("gather", "table", table, width)
  },
  scatterAdd(c, idx, src, out, width) {
    c.counts("scatterAdd", { width })
    c.sameDType("scatterAdd", src, out)
    c.int32Only("scatterAdd", idx, "idx")
    c.rowPerIndex("scatterAdd", "src", src, idx, width)
    c.rowsOf("scatterAdd", "out", out, width)
    c.notAliased("scatterAdd", src, out)
  },
  takeAlong(c, x, idx, out, width) {
    c.counts("takeAlong", { width })
    c.sameDType("takeAlong", x, out)
    c.int32Only("takeAlong", idx, "idx")
    c.onePerIndex("takeAlong", "out", out, idx)
    c.rowPerIndex("takeAlong", "x", x, idx, width)
  },
  putAlong(c, idx, src, out, width) {
    c.counts("putAlong", { width })
    c.sameDType("putAlong", src, out)
    c.int32Only("putAlong", idx, "idx")
    c.onePerIndex("putAlong", "src", src, idx)
    c.rowPerIndex("putAlong", "out", out, idx, width)
    c.notAliased("putAlong", src, out)
  },
}
const kernels = Object.keys(contract) as Kernel[]

const matmulOutDType = (a: Buffer, out: Buffer): string =>
  `out ${describe(out)} must have the operands' dtype ${a.dtype}${a.dtype === "bfloat16" ? " or float32" : ""}`
const notLive = (b: Buffer): string =>
  `buffer ${describe(b)} is not a live buffer of this backend (freed already, or never allocated here)`
const notAllocated = (b: Buffer): string => `buffer ${describe(b)} was freed already or never allocated by this backend`
const isBuffer = (x: unknown): x is Buffer => typeof x === "object" && x !== null && "dtype" in x && "size" in x

/** A fused routine's call against its declaration: every required buffer there, each of its shape. */
function checkCall(c: KernelChecks, name: RoutineName, call: AnyRoutineCall, live: (kernel: string, b: Buffer) => void): void {
  const decl = routineTable[name]
  for (const side of ["inputs", "outputs"] as const) {
    const declared: readonly string[] = decl[side]
    const given = call[side]
    for (const n of declared) if (!n.endsWith("?")) c.check(n in given, name, () => `missing ${side.slice(0, -1)} ${n}`)
    for (const [n, b] of Object.entries(given)) {
      c.check(declared.includes(n) || declared.includes(`${n}?`), name, () => `has no ${side.slice(0, -1)} named ${n}`)
      live(name, b)
      const shape = call.shapes[side][n]
      c.check(shape !== undefined && b.size === numel(shape), name, () => `${n} ${describe(b)} does not hold shape [${shape ?? []}]`)
    }
  }
}

/**
 * `impl` behind the contract's checks. It keeps the set of live buffers (`buffers`: pass one to
 * read its byte counts), so `impl` never sees a freed buffer or one of another backend.
 */
export function checkedBackend<B extends BackendImpl>(impl: B, buffers: LiveBuffers = new LiveBuffers()): B {
  const c = kernelChecks(impl.name, impl.dtypes.filter(isFloat))
  const live = (kernel: string, b: Buffer): void => c.check(buffers.has(b), kernel, () => notLive(b))
  const run = <K extends Kernel>(k: K) => (...args: Parameters<BackendImpl[K]>) => {
    for (const a of args) if (isBuffer(a)) live(k, a)
    contract[k](c, ...args)
    return (impl[k] as (...a: typeof args) => void)(...args)
  }
  return {
    ...impl,
    ...Object.fromEntries(kernels.map((k) => [k, run(k)])),
    alloc(dtype, size) {
      c.counts("alloc", { size })
      c.check(dtype in bytesPerElement, "alloc", () => `unknown dtype ${String(dtype)}`)
      const b = impl.alloc(dtype, size)
      buffers.add(b)
      return b
    },
    free(b) {
      c.check(buffers.has(b), "free", () => notAllocated(b))
      buffers.delete(b)
      impl.free(b)
    },
    async read(b) {
      live("read", b)
      return impl.read(b)
    },
    ...(impl.routines && {
      routines: mapKernels(impl.routines, (kernel, name) => (call) => { checkCall(c, name, call, live); kernel(call) }),
    }),
  } satisfies BackendImpl as B
}
