/**
 * The CUDA backend: every kernel of the contract on an NVIDIA GPU, through the native addon
 * (native/: CUDA kernels, a caching allocator, cuBLAS for matmul). Semantics are the CPU
 * backend's (src/backends/cpu/cpu-backend.ts), checked kernel by kernel in test/cuda-kernels.test.ts;
 * arguments are checked by the contract (src/core/checked-backend.ts); this file says where the
 * GPU differs.
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
import { iotaDims } from "../../core/backend.js"
import { checkedBackend } from "../../core/checked-backend.js"
import { bytesPerElement } from "../../core/dtype.js"
import { normalStreamKey } from "../../core/random.js"
import { BackendUnavailable } from "../../core/errors.js"
import { kernelChecks } from "../../core/kernel-checks.js"
import { simplifyViews } from "../views.js"
import { cudaHeldBytes, cudaHostOptimizer } from "./allocator.js"
import { cudaKernelScratch } from "./attention-scratch.js"
import { cudaRoutines } from "./fused.js"
import type { DeviceMemoryNow } from "./usable-memory.js"
import { type CudaProfiler, withProfiler } from "./profile.js"
import {
  allocating,
  binaryCode,
  dtypeCode,
  loadAddon,
  type NativeDevice,
  type NativeError,
  type NativeInfo,
  reduceCode,
  unaryCode,
} from "./native.js"

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
  /** Live buffers and kernel scratch at their size classes' capacity (the planner's `heldPeak` counts the buffers). */
  readonly held: number
  readonly heldPeak: number
  /** Bytes of live host-tier buffers (`hostAlloc`: pinned host memory), and their peak. */
  readonly hostLive: number
  readonly hostPeak: number
  resetPeak(): void
  /** Gives the allocator's cached blocks back to the driver. */
  emptyCache(): void
}

export type CudaDeviceInfo = NativeInfo

export interface CudaBackend extends BackendImpl {
  /** The device as it was when the backend started (its `freeMemory` is that moment's). */
  readonly device: CudaDeviceInfo
  /** How many AdamW updates ran on the host's cores (offloaded optimizer state) so far. */
  hostUpdates(): number
  memory(): CudaMemory
  /** cudaMemGetInfo now: the driver's free bytes and the card's total (see ./usable-memory.ts). */
  memoryInfo(): DeviceMemoryNow
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

// What only this backend can tell is wrong (a failed check is an executor bug, so a loud Error).
const { fail, check, sameDType } = kernelChecks("cuda", ["float32", "float64", "bfloat16"])

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
  const reads = new Set<Promise<unknown>>()
  const tf32 = opts.allowTF32 === true
  let destroyed = false
  if (opts.memoryLimit !== undefined) dev.setMemoryLimit(opts.memoryLimit)

  const handle = (b: Buffer): number => (b as CudaBuffer).handle
  const elem = (b: Buffer): number => bytesPerElement[b.dtype]
  const code = (b: Buffer): number => dtypeCode[b.dtype]

  function track<T>(p: Promise<T>): Promise<T> {
    reads.add(p)
    const done = () => {
      reads.delete(p)
    }
    p.then(done, done)
    return p
  }

  // The addon reads the same switch: the scratch its attention backward takes, the executor counts.
  const kernelScratchBytes = opts.fused === false ? undefined : cudaKernelScratch(process.env.MINISEQ_ATTN_WGMMA_BWD)

  const backend: Omit<CudaBackend, "profiler"> = {
    name: "cuda",
    dtypes: ["float32", "float64", "bfloat16", "int32"],
    ...(opts.fused === false ? {} : { routines: cudaRoutines({ dev, handle }) }),
    ...(kernelScratchBytes && { kernelScratchBytes }),
    device: dev.info(),

    hostUpdates: () => dev.info().hostUpdates,

    memoryInfo() {
      // The addon's info() calls cudaMemGetInfo on every call.
      const i = dev.info()
      return { free: i.freeMemory, total: i.totalMemory }
    },

    memory() {
      const m = dev.memory()
      return {
        live: m.live,
        peak: m.peak,
        reserved: m.reserved,
        cached: m.cached,
        held: m.held,
        heldPeak: m.heldPeak,
        hostLive: m.hostLive,
        hostPeak: m.hostPeak,
        resetPeak: () => dev.resetPeak(),
        emptyCache: () => dev.emptyCache(),
      }
    },

    synchronize: () => track(dev.sync()),

    async destroy() {
      if (destroyed) return
      destroyed = true
      await Promise.allSettled([...reads])
      dev.destroy()
    },

    alloc(dtype, size) {
      const bytes = size * bytesPerElement[dtype]
      return { dtype, size, handle: allocating(bytes, () => dev.alloc(bytes)) } satisfies CudaBuffer
    },

    // Pinned host memory the kernels reach over the bus (unified addressing): every kernel takes it.
    hostAlloc(dtype, size) {
      const bytes = size * bytesPerElement[dtype]
      return {
        dtype,
        size,
        handle: allocating(bytes, () => dev.allocHost(bytes), "", "host"),
        tier: "host",
      } satisfies CudaBuffer
    },
    hostOptimizer: cudaHostOptimizer(),
    free: (buffer) => dev.free(handle(buffer)),
    write: (buffer, data) => dev.write(handle(buffer), code(buffer), data),
    read: async (buffer) => track(dev.read(handle(buffer), code(buffer), buffer.size)),
    fill: (out, value) => dev.fill(handle(out), code(out), out.size, value),
    randomNormal: (out, seed, stream, std) =>
      dev.randomNormal(handle(out), code(out), out.size, normalStreamKey(seed, stream), std),
    heldBytes: cudaHeldBytes,

    iota(out, shape, axis) {
      const { outer, len, inner } = iotaDims(shape, axis)
      dev.iota(handle(out), code(out), outer, len, inner)
    },

    unary(op, x, out) {
      const opCode = unaryCode[op]
      check(opCode !== undefined, "unary", () => `unknown op ${String(op)}`)
      dev.unary(opCode, code(x), handle(x), handle(out), out.size)
    },

    binary(op, a, b, out) {
      const opCode = binaryCode[op]
      check(opCode !== undefined, "binary", () => `unknown op ${String(op)}`)
      dev.binary(
        opCode,
        code(a),
        code(out),
        handle(a),
        a.size !== out.size,
        handle(b),
        b.size !== out.size,
        handle(out),
        out.size,
      )
    },

    where(cond, a, b, out) {
      dev.where(
        code(cond),
        code(out),
        handle(cond),
        cond.size !== out.size,
        handle(a),
        a.size !== out.size,
        handle(b),
        b.size !== out.size,
        handle(out),
        out.size,
      )
    },

    cast: (x, out) => dev.cast(code(x), code(out), handle(x), handle(out), out.size),

    copy(src, srcView, dst, dstView) {
      const s = handle(src),
        d = handle(dst)
      if (srcView.shape.some((n) => n === 0)) return
      const params = copyParams(srcView, dstView)
      if (params === undefined)
        return fail("copy", `views of rank ${srcView.shape.length} stay above rank 8 after merging contiguous dims`)
      // The addon snapshots src first when it is dst, like the CPU backend.
      dev.copy(elem(src), s, d, params)
    },

    reduce(op, x, out, outer, axis, inner) {
      sameDType("reduce", x, out) // its kernels write the dtype they read
      const opCode = reduceCode[op]
      check(opCode !== undefined, "reduce", () => `unknown op ${String(op)}`)
      dev.reduce(opCode, code(x), handle(x), handle(out), outer, axis, inner)
    },

    matmul(a, b, out, spec: MatmulSpec) {
      const { batch, m, n, k, transA, transB } = spec
      dev.matmul(
        handle(a),
        handle(b),
        handle(out),
        code(a),
        code(out),
        batch,
        m,
        n,
        k,
        transA,
        transB,
        spec.accumulate === true,
        tf32,
      )
    },

    gather(table, idx, out, width) {
      const rows = width === 0 ? 0 : table.size / width
      dev.gather(elem(table), handle(table), rows, handle(idx), idx.size, handle(out), width)
    },

    scatterAdd(idx, src, out, width) {
      const rows = width === 0 ? 0 : out.size / width
      dev.scatterAdd(code(out), handle(idx), idx.size, handle(src), handle(out), rows, width)
    },

    takeAlong: (x, idx, out, width) => dev.takeAlong(elem(x), handle(x), handle(idx), idx.size, handle(out), width),
    putAlong: (idx, src, out, width) => dev.putAlong(elem(src), handle(idx), idx.size, handle(src), handle(out), width),
  }
  // Every kernel goes through the profiler's wrapper, which costs one test while it is off; the
  // contract's checks come before both.
  const { backend: timed, profiler } = withProfiler(backend, dev)
  return checkedBackend({ ...timed, profiler })
}
