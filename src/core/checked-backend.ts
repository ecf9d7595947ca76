/**
 * The backend contract's argument checks, written once and applied to every backend by one
 * wrapper: `checkedBackend(impl)` checks each call against the table below (and each fused
 * routine call against its declaration in ./routines/registry.ts), then hands it to `impl`, which
 * only allocates and launches. What differs between backends is data: the float dtypes they
 * compute in are those of `impl.dtypes`.
 */
import type { AllToAllSpec, BackendImpl, Buffer } from "./backend.js"
import { numel } from "./backend.js"
import { bytesPerElement, type DType, dtypeOf, type HostArray, isFloat } from "./dtype.js"
import { describe, type KernelChecks, kernelChecks } from "./kernel-checks.js"
import { LiveBuffers } from "./live-buffers.js"
import type { AnyRoutineCall } from "./routines/declare.js"
import { mapKernels, type RoutineName, routineTable } from "./routines/registry.js"

type Kernel =
  | "write"
  | "fill"
  | "iota"
  | "unary"
  | "binary"
  | "where"
  | "cast"
  | "copy"
  | "reduce"
  | "matmul"
  | "gather"
  | "scatterAdd"
  | "takeAlong"
  | "putAlong"

const isInt32 = (v: number): boolean => Number.isInteger(v) && v >= -2147483648 && v <= 2147483647

/** What the four index kernels share: a width, values moved in one dtype, int32 indices. */
function indexKernel(c: KernelChecks, kernel: string, idx: Buffer, values: Buffer, out: Buffer, width: number) {
  c.counts(kernel, { width })
  c.sameDType(kernel, values, out)
  c.int32Only(kernel, idx, "idx")
}

/** Each kernel's checks on its arguments, given the backend's checks (`c`, naming the backend). */
const contract: { readonly [K in Kernel]: (c: KernelChecks, ...args: Parameters<BackendImpl[K]>) => void } = {
  write(c, buffer, data) {
    // bfloat16 has no host array: it is written from float32 (and rounded by the backend).
    const bf16 = buffer.dtype === "bfloat16"
    c.check(dtypeOf(data) === (bf16 ? "float32" : buffer.dtype), "write", () => wrongData(buffer, data))
    c.check(data.length === buffer.size, "write", () => wrongLength(buffer, data))
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
    const widens = a.dtype === "bfloat16" && out.dtype === "float32"
    c.check(out.dtype === a.dtype || widens, "matmul", () => matmulOutDType(a, out))
    c.matmulSizes(a, b, out, spec)
  },
  gather(c, table, idx, out, width) {
    indexKernel(c, "gather", idx, table, out, width)
    c.rowPerIndex("gather", "out", out, idx, width)
    c.rowsOf("gather", "table", table, width)
  },
  scatterAdd(c, idx, src, out, width) {
    indexKernel(c, "scatterAdd", idx, src, out, width)
    c.rowPerIndex("scatterAdd", "src", src, idx, width)
    c.rowsOf("scatterAdd", "out", out, width)
    c.notAliased("scatterAdd", src, out)
  },
  takeAlong(c, x, idx, out, width) {
    indexKernel(c, "takeAlong", idx, x, out, width)
    c.onePerIndex("takeAlong", "out", out, idx)
    c.rowPerIndex("takeAlong", "x", x, idx, width)
  },
  putAlong(c, idx, src, out, width) {
    indexKernel(c, "putAlong", idx, src, out, width)
    c.onePerIndex("putAlong", "src", src, idx)
    c.rowPerIndex("putAlong", "out", out, idx, width)
    c.notAliased("putAlong", src, out)
  },
}
const kernels = Object.keys(contract) as Kernel[]

// Messages, out of the checks' way.
const wrongData = (b: Buffer, data: HostArray): string =>
  `buffer is ${b.dtype} but data is a ${data.constructor.name}` +
  (b.dtype === "bfloat16" ? " (bfloat16 is written from a Float32Array)" : "")
const wrongLength = (b: Buffer, data: HostArray): string =>
  `buffer holds ${b.size} elements but data has ${data.length}`
const matmulOutDType = (a: Buffer, out: Buffer): string =>
  `out ${describe(out)} must have the operands' dtype ${a.dtype}` + (a.dtype === "bfloat16" ? " or float32" : "")
const notLive = (b: Buffer): string =>
  `buffer ${describe(b)} is not a live buffer of this backend (freed already, or never allocated here)`
const notAllocated = (b: Buffer): string => `buffer ${describe(b)} was freed already or never allocated by this backend`
const wrongShape = (name: string, b: Buffer, shape: readonly number[] | undefined): string =>
  `${name} ${describe(b)} does not hold shape [${(shape ?? []).join(", ")}]`
const isBuffer = (x: unknown): x is Buffer => typeof x === "object" && x !== null && "dtype" in x && "size" in x

/** A fused routine's call against its declaration: every required buffer there, each of its shape. */
function checkCall(c: KernelChecks, name: RoutineName, call: AnyRoutineCall, live: (k: string, b: Buffer) => void) {
  const decl = routineTable[name]
  for (const side of ["inputs", "outputs"] as const) {
    const declared: readonly string[] = decl[side]
    const given = call[side]
    const what = side === "inputs" ? "input" : "output"
    for (const n of declared) if (!n.endsWith("?")) c.check(n in given, name, () => `missing ${what} ${n}`)
    for (const [n, b] of Object.entries(given)) {
      c.check(declared.includes(n) || declared.includes(`${n}?`), name, () => `has no ${what} named ${n}`)
      live(name, b)
      const shape = call.shapes[side][n]
      c.check(shape !== undefined && b.size === numel(shape), name, () => wrongShape(n, b, shape))
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
  const run =
    <K extends Kernel>(k: K) =>
    (...args: Parameters<BackendImpl[K]>) => {
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
    ...(impl.hostAlloc && {
      hostAlloc(dtype: DType, size: number) {
        c.counts("hostAlloc", { size })
        c.check(dtype in bytesPerElement, "hostAlloc", () => `unknown dtype ${String(dtype)}`)
        const b = impl.hostAlloc!(dtype, size)
        buffers.add(b)
        return b
      },
    }),
    free(b) {
      c.check(buffers.has(b), "free", () => notAllocated(b))
      buffers.delete(b)
      impl.free(b)
    },
    async read(b) {
      live("read", b)
      return impl.read(b)
    },
    ...(impl.randomNormal && {
      randomNormal(out: Buffer, seed: number, stream: number, std: number) {
        live("randomNormal", out)
        c.floatOnly("randomNormal", out)
        c.check(
          Number.isSafeInteger(seed) && Number.isSafeInteger(stream) && stream >= 0 && Number.isFinite(std),
          "randomNormal",
          () => `seed ${seed} and stream ${stream} must be integers (stream ≥ 0) and std ${std} finite`,
        )
        impl.randomNormal!(out, seed, stream, std)
      },
    }),
    ...(impl.allToAll && {
      allToAll(x: Buffer, out: Buffer, spec: AllToAllSpec) {
        live("allToAll", x)
        live("allToAll", out)
        c.sameDType("allToAll", x, out)
        c.sameSize("allToAll", x, out)
        c.notAliased("allToAll", x, out)
        c.check(x.size === numel(spec.shape), "allToAll", () => wrongShape("x", x, spec.shape))
        impl.allToAll!(x, out, spec)
      },
    }),
    ...(impl.allReduce && {
      allReduce(x: Buffer, out: Buffer) {
        live("allReduce", x)
        live("allReduce", out)
        c.floatOnly("allReduce", x, out)
        c.sameDType("allReduce", x, out)
        c.sameSize("allReduce", x, out)
        c.notAliased("allReduce", x, out)
        impl.allReduce!(x, out)
      },
    }),
    ...(impl.routines && {
      routines: mapKernels(impl.routines, (kernel, name) => (call) => {
        checkCall(c, name, call, live)
        kernel(call)
      }),
    }),
  } satisfies BackendImpl as B
}
