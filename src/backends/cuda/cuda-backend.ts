/**
 * The CUDA backend: every kernel of the contract on an NVIDIA GPU, through the native addon
 * (native/: CUDA kernels, a caching allocator, cuBLAS for matmul). Semantics are the CPU
 * backend's (src/backends/cpu/cpu-backend.ts), checked kernel by kernel in test/cuda.test.ts;
 * this file checks arguments the same way and says where the GPU differs.
 *
 * - Everything is enqueued on one CUDA stream, in call order; kernels return at once.
 * - `read` enqueues a copy into pinned host memory and resolves once a worker thread has seen
 *   it finish: it never blocks the JS thread. `write` copies the data into pinned staging
 *   first, so the caller may reuse its array at once.
 * - bfloat16 buffers are written from and read into Float32Array: the host rounds each float to
 *   bfloat16 (to nearest even) on write, and widens exactly on read. Every kernel computes
 *   bfloat16 in float32 and rounds once on store.
 * - Index kernels (gather, scatterAdd, takeAlong, putAlong) cannot throw at the call, as the CPU
 *   backend does, without waiting for the GPU: a bad index is recorded on the device and the
 *   next `read` or `synchronize` rejects naming it.
 * - float32 sums accumulate in float64, like the CPU backend. float32 matmul is exact float32
 *   (no TF32) unless `allowTF32`. exp/log/sin/cos use CUDA's float32 functions (≤ 2 ulp).
 * - `alloc` throws the typed `OutOfMemory` when the device has no memory left even after the
 *   allocator's cache is emptied.
 * - Named routines (cross-entropy, logsumexp, SiLU, causal attention, and their VJPs) run as fused
 *   kernels (./fused.ts) unless `fused: false`.
 */
import type { Buffer, BackendImpl, MatmulSpec, View } from "../../core/backend.js"
import { bytesPerElement, dtypeOf, type DType } from "../../core/dtype.js"
import { BackendUnavailable, OutOfMemory } from "../../core/errors.js"
import { describe, kernelChecks } from "../checks.js"
import { simplifyViews } from "../views.js"
import { cudaRoutines } from "./fused.js"
import { type CudaProfiler, withProfiler } from "./profile.js"
import { binaryCode, dtypeCode, loadAddon, type NativeDevice, type NativeError, type NativeInfo, reduceCode, unaryCode } from "./native.js"

export interface CudaBuffer extends Buffer {
  /** The addon's handle for the device block. */
  readonly handle: number
}

export interface CudaMemory {
  /** Bytes of buffers currently allocated (what was asked for, as the executor counts). */
  readonly live: number
  /** Most bytes allocated at once since creation or the last `resetPeak`. */
  readonly peak: number
  /** Bytes the allocator holds from the driver: live buffers rounded to their size class, plus its cache. */
  readonly reserved: number
  /** Bytes of freed blocks the allocator keeps for reuse. */
  readonly cached: number
  resetPeak(): void
  /** Gives the allocator's cached blocks back to the driver. */
  emptyCache(): void
}

export type CudaDeviceInfo = NativeInfo

export interface CudaBackend extends BackendImpl {
  readonly device: CudaDeviceInfo
  memory(): CudaMemory
  /** Resolves once every command enqueued so far has run (rejects with a recorded index error). */
  synchronize(): Promise<void>
  /** Waits for reads in flight, then gives the device's memory, stream and cuBLAS handle back. */
  destroy(): Promise<void>
  /** GPU time per operation between `start()` and `stop()` (./profile.ts). */
  readonly profiler: CudaProfiler
}

export interface CudaOptions {
  /** Which GPU (default 0). */
  readonly device?: number
  /**
   * Let float32 matmuls round their inputs to TF32 on the tensor cores: several times faster,
   * about 1e-3 relative error. Default false: float32 products are exact float32.
   */
  readonly allowTF32?: boolean
  /**
   * Run named routines with the fused kernels of ./fused.ts (default true); false runs their
   * reference bodies, primitive by primitive.
   */
  readonly fused?: boolean
  /**
   * Act as if the GPU had only this many bytes: the allocator holds no more from the driver
   * (buffers, fused-kernel scratch and its cache; cuBLAS's own workspace is outside it).
   */
  readonly memoryLimit?: number
}

// ---------------------------------------------------------------------------------------------
// Argument checks (as the CPU backend's: a failed check is an executor bug, so a loud Error)
// ---------------------------------------------------------------------------------------------

const { fail, check, sameSize, scalarOrSize, sameDType, floatOnly, counts, iotaLayout, matmulSizes, reduceSizes, copyViews } = kernelChecks("cuda", ["float32", "float64", "bfloat16"])

/**
 * The copy's iteration space, simplified as the CPU backend does: size-1 dims dropped, and
 * neighbouring dims merged where they are contiguous with each other in both views. Returns the
 * addon's parameter block, or undefined when more than 8 dims remain.
 */
function copyParams(sv: View, dv: View): Float64Array | undefined {
  const { shape, src: ss, dst: ds } = simplifyViews(sv, dv)
  if (shape.length > 8) return undefined
  return Float64Array.from([shape.length, sv.offset, dv.offset, ...shape, ...ss, ...ds])
}

// ---------------------------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------------------------

/** What a failed device start says, by the addon's error code. */
const reasonPrefix: Record<string, string> = {
  ERR_CUDA_NO_DRIVER: "no GPU",
  ERR_CUDA_NO_DEVICE: "no GPU",
  ERR_CUDA_ARCH: "unsupported GPU",
  ERR_CUBLAS: "cuBLAS not loadable",
}

const unavailable = (reason: string): BackendUnavailable =>
  new BackendUnavailable({ backend: "cuda", reason, message: `cuda: backend unavailable: ${reason}` })

/**
 * Starts the backend on a GPU. Throws `BackendUnavailable` naming the exact reason: the addon
 * not built (and why, from the install), no driver or GPU (the CUDA error), kernels not built for
 * this GPU, or cuBLAS not loadable (the dlopen error).
 */
export function makeCudaBackend(opts: CudaOptions = {}): CudaBackend {
  const addon = loadAddon()
  if (!addon.ok) throw unavailable(addon.reason)
  let dev: NativeDevice
  try {
    dev = new addon.module.Device(opts.device ?? 0)
  } catch (e) {
    const err = e as NativeError
    throw unavailable(`${reasonPrefix[err.code ?? ""] ?? "CUDA start failed"}: ${err.message}`)
  }
  return backendOn(dev, opts)
}

function backendOn(dev: NativeDevice, opts: CudaOptions): CudaBackend {
  const alive = new WeakSet<Buffer>()
  const reads = new Set<Promise<unknown>>()
  const tf32 = opts.allowTF32 === true
  let destroyed = false
  if (opts.memoryLimit !== undefined) dev.setMemoryLimit(opts.memoryLimit)

  function handle(kernel: string, b: Buffer): number {
    if (!alive.has(b)) fail(kernel, `buffer ${describe(b)} is not a live buffer of this backend (freed already, or never allocated here)`)
    return (b as CudaBuffer).handle
  }
  function intHandle(kernel: string, b: Buffer, what: string): number {
    check(b.dtype === "int32", kernel, () => `${what} must be int32, got ${b.dtype}`)
    return handle(kernel, b)
  }
  const elem = (b: Buffer): number => bytesPerElement[b.dtype]
  const code = (b: Buffer): number => dtypeCode[b.dtype]

  function track<T>(p: Promise<T>): Promise<T> {
    reads.add(p)
    const done = () => { reads.delete(p) }
    p.then(done, done)
    return p
  }

  const backend: Omit<CudaBackend, "profiler"> = {
    name: "cuda",
    dtypes: ["float32", "float64", "bfloat16", "int32"],
    ...(opts.fused === false ? {} : { routines: cudaRoutines({ dev, handle }) }),
    device: dev.info(),

    memory() {
      const m = dev.memory()
      return { live: m.live, peak: m.peak, reserved: m.reserved, cached: m.cached, resetPeak: () => dev.resetPeak(), emptyCache: () => dev.emptyCache() }
    },

    synchronize: () => track(dev.sync()),

    async destroy() {
      if (destroyed) return
      destroyed = true
      await Promise.allSettled([...reads])
      dev.destroy()
    },

    alloc(dtype, size) {
      counts("alloc", { size })
      check(dtype in bytesPerElement, "alloc", () => `unknown dtype ${String(dtype)}`)
      let h: number
      try {
        h = dev.alloc(size * bytesPerElement[dtype])
      } catch (e) {
        const err = e as NativeError
        if (err.code !== "ERR_CUDA_OOM") throw e
        throw new OutOfMemory({ requested: err.requested ?? size * bytesPerElement[dtype], alive: err.alive ?? 0, limit: err.total ?? 0, message: err.message })
      }
      const buffer: CudaBuffer = { dtype, size, handle: h }
      alive.add(buffer)
      return buffer
    },

    free(buffer) {
      if (!alive.has(buffer)) fail("free", `buffer ${describe(buffer)} was freed already or never allocated by this backend`)
      alive.delete(buffer)
      dev.free((buffer as CudaBuffer).handle)
    },

    write(buffer, data) {
      const h = handle("write", buffer)
      const want: DType = buffer.dtype === "bfloat16" ? "float32" : buffer.dtype
      check(dtypeOf(data) === want, "write", () => `buffer is ${buffer.dtype} but data is a ${data.constructor.name}${buffer.dtype === "bfloat16" ? " (bfloat16 is written from a Float32Array)" : ""}`)
      check(data.length === buffer.size, "write", () => `buffer holds ${buffer.size} elements but data has ${data.length}`)
      dev.write(h, code(buffer), data)
    },

    async read(buffer) {
      const h = handle("read", buffer)
      return track(dev.read(h, code(buffer), buffer.size))
    },

    fill(out, value) {
      const h = handle("fill", out)
      if (out.dtype === "int32") check(Number.isInteger(value) && value >= -2147483648 && value <= 2147483647, "fill", () => `${value} is not an int32`)
      dev.fill(h, code(out), out.size, value)
    },

    iota(out, shape, axis) {
      const h = handle("iota", out)
      const { outer, len, inner } = iotaLayout(out, shape, axis)
      dev.iota(h, code(out), outer, len, inner)
    },

    unary(op, x, out) {
      floatOnly("unary", x, out)
      sameDType("unary", x, out)
      sameSize("unary", x, out)
      const opCode = unaryCode[op]
      check(opCode !== undefined, "unary", () => `unknown op ${String(op)}`)
      dev.unary(opCode, code(x), handle("unary", x), handle("unary", out), out.size)
    },

    binary(op, a, b, out) {
      sameDType("binary", a, b)
      if (op !== "less" && op !== "equal") sameDType("binary", a, out)
      scalarOrSize("binary", out.size, a, b)
      const opCode = binaryCode[op]
      check(opCode !== undefined, "binary", () => `unknown op ${String(op)}`)
      dev.binary(opCode, code(a), code(out), handle("binary", a), a.size !== out.size, handle("binary", b), b.size !== out.size, handle("binary", out), out.size)
    },

    where(cond, a, b, out) {
      sameDType("where", a, b, out)
      scalarOrSize("where", out.size, cond, a, b)
      dev.where(code(cond), code(out), handle("where", cond), cond.size !== out.size, handle("where", a), a.size !== out.size,
        handle("where", b), b.size !== out.size, handle("where", out), out.size)
    },

    cast(x, out) {
      sameSize("cast", x, out)
      dev.cast(code(x), code(out), handle("cast", x), handle("cast", out), out.size)
    },

    copy(src, srcView, dst, dstView) {
      sameDType("copy", src, dst)
      const s = handle("copy", src), d = handle("copy", dst)
      copyViews(src, srcView, dst, dstView)
      if (srcView.shape.some((n) => n === 0)) return
      const params = copyParams(srcView, dstView)
      if (params === undefined) return fail("copy", `views of rank ${srcView.shape.length} stay above rank 8 after merging contiguous dims`)
      // The addon snapshots src first when it is dst, like the CPU backend.
      dev.copy(elem(src), s, d, params)
    },

    reduce(op, x, out, outer, axis, inner) {
      floatOnly("reduce", x, out)
      sameDType("reduce", x, out)
      reduceSizes(x, out, outer, axis, inner)
      const opCode = reduceCode[op]
      check(opCode !== undefined, "reduce", () => `unknown op ${String(op)}`)
      dev.reduce(opCode, code(x), handle("reduce", x), handle("reduce", out), outer, axis, inner)
    },

    matmul(a, b, out, spec: MatmulSpec) {
      const { batch, m, n, k, transA, transB } = spec
      floatOnly("matmul", a, b, out)
      sameDType("matmul", a, b)
      // bfloat16 operands may write (or accumulate into) a float32 out: a weight gradient.
      check(out.dtype === a.dtype || (a.dtype === "bfloat16" && out.dtype === "float32"), "matmul",
        () => `out ${describe(out)} must have the operands' dtype ${a.dtype}${a.dtype === "bfloat16" ? " or float32" : ""}`)
      matmulSizes(a, b, out, spec)
      dev.matmul(handle("matmul", a), handle("matmul", b), handle("matmul", out), code(a), code(out), batch, m, n, k,
        transA, transB, spec.accumulate === true, tf32)
    },

    gather(table, idx, out, width) {
      counts("gather", { width })
      sameDType("gather", table, out)
      const t = handle("gather", table), ix = intHandle("gather", idx, "idx"), o = handle("gather", out)
      check(out.size === idx.size * width, "gather", () => `out ${describe(out)} is not [${idx.size}, ${width}]`)
      check(width === 0 ? table.size === 0 : table.size % width === 0, "gather", () => `table ${describe(table)} is not rows × ${width}`)
      const rows = width === 0 ? 0 : table.size / width
      dev.gather(elem(table), t, rows, ix, idx.size, o, width)
    },

    scatterAdd(idx, src, out, width) {
      counts("scatterAdd", { width })
      sameDType("scatterAdd", src, out)
      const ix = intHandle("scatterAdd", idx, "idx"), s = handle("scatterAdd", src), o = handle("scatterAdd", out)
      check(src.size === idx.size * width, "scatterAdd", () => `src ${describe(src)} is not [${idx.size}, ${width}]`)
      check(width === 0 ? out.size === 0 : out.size % width === 0, "scatterAdd", () => `out ${describe(out)} is not rows × ${width}`)
      check(src !== out, "scatterAdd", () => "out must not alias src")
      const rows = width === 0 ? 0 : out.size / width
      dev.scatterAdd(code(out), ix, idx.size, s, o, rows, width)
    },

    takeAlong(x, idx, out, width) {
      counts("takeAlong", { width })
      sameDType("takeAlong", x, out)
      const xs = handle("takeAlong", x), ix = intHandle("takeAlong", idx, "idx"), o = handle("takeAlong", out)
      check(out.size === idx.size, "takeAlong", () => `out ${describe(out)} must have one element per index (${idx.size})`)
      check(x.size === idx.size * width, "takeAlong", () => `x ${describe(x)} is not [${idx.size}, ${width}]`)
      dev.takeAlong(elem(x), xs, ix, idx.size, o, width)
    },

    putAlong(idx, src, out, width) {
      counts("putAlong", { width })
      sameDType("putAlong", src, out)
      const ix = intHandle("putAlong", idx, "idx"), s = handle("putAlong", src), o = handle("putAlong", out)
      check(src.size === idx.size, "putAlong", () => `src ${describe(src)} must have one element per index (${idx.size})`)
      check(out.size === idx.size * width, "putAlong", () => `out ${describe(out)} is not [${idx.size}, ${width}]`)
      check(src !== out, "putAlong", () => "out must not alias src")
      dev.putAlong(elem(src), ix, idx.size, s, o, width)
    },
  }
  // Every kernel goes through the profiler's wrapper, which costs one test while it is off.
  const { backend: timed, profiler } = withProfiler(backend, dev)
  return { ...timed, profiler }
}
