/**
 * The WebGPU backend: every kernel of the contract as a WGSL compute shader.
 *
 * Kernels get arguments checked by the contract (src/core/checked-backend.ts), pick a pipeline
 * variant, and record a dispatch; nothing runs until the command stream is submitted
 * (in batches, and before every host write or read). dtypes: float32 and int32 — WGSL has no
 * 64-bit floats, so float64 is refused at allocation.
 */
/// <reference types="@webgpu/types" />
import type { Buffer, BackendImpl, BinaryOp, MatmulSpec, ReduceOp, UnaryOp, View } from "../../core/backend.js"
import { iotaDims, numel } from "../../core/backend.js"
import { checkedBackend } from "../../core/checked-backend.js"
import { bytesPerElement, hostArray } from "../../core/dtype.js"
import { DTypeError, OutOfMemory } from "../../core/errors.js"
import { kernelChecks } from "../../core/kernel-checks.js"
import { LiveBuffers } from "../../core/live-buffers.js"
import { BufferPool } from "./buffers.js"
import { type Binding, CommandStream } from "./commands.js"
import { acquireDevice, type AdapterInfo, type DeviceOptions, type GpuDevice, releaseDevice } from "./device.js"
import { f32Bits, WG, wgslType, words } from "./kernels/common.js"
import { copyParams, copyWgsl, isContiguous, MAX_RANK, simplify } from "./kernels/copy.js"
import { binaryWgsl, castWgsl, fillWgsl, iotaWgsl, unaryWgsl, whereWgsl } from "./kernels/elementwise.js"
import { gatherWgsl, putAlongWgsl, scatterAddWgsl, takeAlongWgsl } from "./kernels/indexing.js"
import { COMPAT_TILE, CORE_TILE, type MatmulTile, matmulWgsl, tileName } from "./kernels/matmul.js"
import { reduceLoopWgsl, reduceRowsWgsl, ROW_MIN_AXIS } from "./kernels/reduce.js"
import { fusedRoutines } from "./kernels/fused.js"
import type { Scratch } from "./kernels/attention.js"
import { PipelineCache } from "./pipelines.js"

/** A WebGPU buffer: the pooled GPUBuffer (possibly larger) and the bytes it logically holds. */
export interface WebGpuBuffer extends Buffer {
  readonly gpu: GPUBuffer
  readonly bytes: number
}

export interface WebGpuMemory {
  /** Bytes of buffers currently allocated (as the executor counts them). */
  readonly live: number
  /** Most bytes allocated at once since creation or the last `resetPeak`. */
  readonly peak: number
  /** Bytes of device memory the pool holds, in use or idle (≥ live: size classes round up). */
  readonly reserved: number
  resetPeak(): void
}

export interface WebGpuBackend extends BackendImpl {
  readonly info: AdapterInfo
  /** The largest buffer a kernel can bind, in bytes; bigger tensors are refused at alloc. */
  readonly maxBufferBytes: number
  /** The device's limits (as granted: the adapter's best for the few limits kernels care about). */
  readonly limits: GPUSupportedLimits
  /** The matmul tile shape in use. */
  readonly matmulTile: MatmulTile
  memory(): WebGpuMemory
  /** Kernel dispatches recorded and pipelines compiled so far. */
  stats(): { readonly dispatches: number; readonly pipelines: number }
  /** Submits recorded work without waiting for it. */
  flush(): void
  /** Resolves when the device has finished all recorded work (for timing). */
  sync(): Promise<void>
  /** Gives idle pooled buffers back to the driver. */
  trim(): void
  /** Waits for outstanding work, then destroys the device; the backend is unusable afterwards. */
  destroy(): Promise<void>
}

export interface WebGpuOptions extends DeviceOptions {
  /** Commands recorded per submit (default 128). */
  readonly batchSize?: number
  /**
   * Matmul tile shape. Default: CORE_TILE (256 threads) on a WebGPU core device, COMPAT_TILE
   * (64 threads) on a compatibility one.
   */
  readonly matmulTile?: MatmulTile
  /** Run named routines (logsumexp, crossEntropy, attention) with fused kernels (default true). */
  readonly fusedRoutines?: boolean
}

const { check, fail } = kernelChecks("webgpu", ["float32"])

/** Acquires a device (failing with BackendUnavailable when there is none) and builds the backend. */
export async function makeWebGpuBackend(opts: WebGpuOptions = {}): Promise<WebGpuBackend> {
  return webGpuBackendOn(await acquireDevice(opts), opts)
}

/** The backend on an already acquired device; it owns the device from now on. */
export function webGpuBackendOn(ctx: GpuDevice, opts: WebGpuOptions = {}): WebGpuBackend {
  const device = ctx.device
  const maxBufferBytes = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize)
  const pool = new BufferPool(device, device.limits.maxBufferSize)
  const stream = new CommandStream(device, opts.batchSize ?? 128)
  const pipelines = new PipelineCache(device, (message) => {
    ctx.error ??= message
    console.error(`miniseq webgpu: ${message}`)
  })
  const tile = opts.matmulTile ?? (ctx.config.featureLevel === "core" ? CORE_TILE : COMPAT_TILE)
  const buffers = new LiveBuffers()
  let destroyed = false

  function gpuOf(kernel: string, b: Buffer): WebGpuBuffer {
    if (destroyed) fail(kernel, "the backend was destroyed")
    return b as WebGpuBuffer
  }
  const bind = (kernel: string, b: Buffer): Binding => {
    const g = gpuOf(kernel, b)
    return { buffer: g.gpu, bytes: g.bytes }
  }

  /**
   * An input of a non-elementwise kernel. If it is `out` itself, the kernel gets a snapshot
   * copy instead (one buffer cannot be bound read-only and writable at once, and the CPU
   * backend reads inputs as they were before the kernel). The snapshot goes back to the pool
   * right away: commands run in order, so its next user's writes come after this kernel.
   */
  function input(kernel: string, b: Buffer, out: Buffer): Binding {
    const g = bind(kernel, b)
    if (b !== out) return g
    const copy = pool.acquire(Math.max(4, g.bytes))
    stream.copy(g.buffer, 0, copy, 0, g.bytes)
    pool.release(copy)
    return { buffer: copy, bytes: g.bytes }
  }

  const run = (
    key: string,
    source: () => string,
    params: readonly number[],
    bindings: readonly Binding[],
    workgroups: number,
  ) => stream.dispatch(pipelines.get(key, source), words(params), bindings, workgroups)
  const perElement = (n: number) => Math.ceil(n / WG)
  /** Index step of an elementwise operand: 0 for a broadcast scalar. */
  const step = (x: Buffer, out: Buffer) => (x.size === out.size ? 1 : 0)

  // Fused kernels' scratch goes through the checked backend, so it counts in `memory()`.
  const scratch: Scratch = {
    alloc: (dtype, size) => checked.alloc(dtype, size),
    free: (b) => checked.free(b),
    fill: (b, value) => checked.fill(b, value),
  }
  const backend: WebGpuBackend = {
    name: "webgpu",
    dtypes: ["float32", "int32"],
    // Fused kernels the executor runs instead of a routine's reference body.
    routines:
      opts.fusedRoutines === false ? undefined : fusedRoutines(run, (b) => bind("routine", b), scratch, device.limits),
    info: ctx.info,
    maxBufferBytes,
    matmulTile: tile,
    limits: device.limits,

    memory: () => ({ ...buffers.memory(), reserved: pool.reservedBytes }),
    stats: () => ({ dispatches: stream.dispatches, pipelines: pipelines.size }),
    flush: () => stream.flush(),
    sync: () => stream.sync(),
    trim: () => pool.trim(),
    async destroy() {
      if (destroyed) return
      try {
        if (ctx.lost === undefined) await stream.sync()
      } finally {
        destroyed = true
        pool.trim()
        stream.destroy()
        releaseDevice(ctx)
      }
    },

    alloc(dtype, size) {
      if (destroyed) fail("alloc", "the backend was destroyed")
      if (dtype === "float64") {
        throw new DTypeError({
          op: "webgpu.alloc",
          dtypes: [dtype],
          message:
            "webgpu: float64 is not supported (WGSL has no 64-bit floats); build the graph in float32, or use the CPU backend for float64",
        })
      }
      check(dtype === "float32" || dtype === "int32", "alloc", () => `unknown dtype ${String(dtype)}`)
      const bytes = size * bytesPerElement[dtype]
      if (bytes > maxBufferBytes) {
        throw new OutOfMemory({
          requested: bytes,
          alive: buffers.memory().live,
          limit: maxBufferBytes,
          message: `webgpu: a ${dtype}[${size}] tensor needs ${bytes} bytes, more than the ${maxBufferBytes} bytes one WebGPU buffer can bind on this device (maxStorageBufferBindingSize); split the work into more mini-sequences (raise M of chunked) or use shorter sequences`,
        })
      }
      return { dtype, size, bytes, gpu: pool.acquire(Math.max(4, bytes)) } satisfies WebGpuBuffer
    },

    free(buffer) {
      if (!destroyed) pool.release((buffer as WebGpuBuffer).gpu)
    },

    write: (buffer, data) => stream.write(gpuOf("write", buffer).gpu, data),

    async read(buffer) {
      const g = gpuOf("read", buffer)
      const bytes = await stream.read(g.gpu, g.bytes)
      if (ctx.error !== undefined) fail("read", `an earlier kernel failed on the device: ${ctx.error}`)
      if (ctx.lost !== undefined) fail("read", `the device was lost: ${ctx.lost}`)
      const out = hostArray(buffer.dtype, buffer.size)
      new Uint8Array(out.buffer).set(new Uint8Array(bytes))
      return out
    },

    fill(out, value) {
      const o = bind("fill", out)
      const bits = out.dtype === "int32" ? value >>> 0 : f32Bits(value)
      if (bits === 0)
        stream.clear(o.buffer, o.bytes) // zeros (also int 0): no shader needed
      else run("fill", fillWgsl, [out.size, bits], [o], perElement(out.size))
    },

    iota(out, shape, axis) {
      const o = bind("iota", out)
      const { len, inner } = iotaDims(shape, axis)
      const size = out.size
      if (size === 0) return
      const type = wgslType(out.dtype)
      run(`iota:${type}`, () => iotaWgsl(type), [size, len, inner], [o], perElement(size))
    },

    unary(op: UnaryOp, x, out) {
      const alias = x === out
      const ins = alias ? [] : [bind("unary", x)]
      run(
        `unary:${op}:${alias}`,
        () => unaryWgsl(op, alias),
        [out.size, 1],
        [...ins, bind("unary", out)],
        perElement(out.size),
      )
    },

    binary(op: BinaryOp, a, b, out) {
      const [ta, to] = [wgslType(a.dtype), wgslType(out.dtype)]
      const [aliasA, aliasB] = [a === out, b === out]
      const ins = [...(aliasA ? [] : [bind("binary", a)]), ...(aliasB ? [] : [bind("binary", b)])]
      run(
        `binary:${op}:${ta}:${to}:${aliasA}:${aliasB}`,
        () => binaryWgsl(op, ta, to, aliasA, aliasB),
        [out.size, step(a, out), step(b, out)],
        [...ins, bind("binary", out)],
        perElement(out.size),
      )
    },

    where(cond, a, b, out) {
      const operands = [cond, a, b]
      const alias = operands.map((x) => x === out) as [boolean, boolean, boolean]
      const ins = operands.filter((x) => x !== out).map((x) => bind("where", x))
      const condFloat = cond.dtype !== "int32"
      run(
        `where:${condFloat}:${alias.join(":")}`,
        () => whereWgsl(condFloat, alias),
        [out.size, ...operands.map((x) => step(x, out))],
        [...ins, bind("where", out)],
        perElement(out.size),
      )
    },

    cast(x, out) {
      const [i, o] = [bind("cast", x), bind("cast", out)]
      if (x.dtype === out.dtype) {
        if (x !== out) stream.copy(i.buffer, 0, o.buffer, 0, o.bytes)
        return
      }
      const [from, to] = [wgslType(x.dtype), wgslType(out.dtype)]
      run(`cast:${from}:${to}`, () => castWgsl(from, to), [out.size, 1], [i, o], perElement(out.size))
    },

    copy(src, srcView: View, dst, dstView: View) {
      const n = numel(srcView.shape)
      if (n === 0) return
      const s = simplify(srcView, dstView)
      check(
        s.shape.length <= MAX_RANK,
        "copy",
        () => `views of rank ${s.shape.length} after merging contiguous dims (at most ${MAX_RANK} supported)`,
      )
      const [i, o] = [input("copy", src, dst), bind("copy", dst)]
      if (isContiguous(s))
        stream.copy(i.buffer, srcView.offset * 4, o.buffer, dstView.offset * 4, n * 4) // a plain memcpy
      else run("copy", copyWgsl, copyParams(s, srcView.offset, dstView.offset, n), [i, o], perElement(n))
    },

    reduce(op: ReduceOp, x, out, outer, axis, inner) {
      if (op !== "sum" && op !== "max") fail("reduce", `unknown op ${String(op)}`)
      if (out.size === 0) return
      if (axis === 0) {
        backend.fill(out, op === "sum" ? 0 : -Infinity)
        return
      } // the empty sum / max
      const [i, o] = [bind("reduce", x), bind("reduce", out)]
      if (inner === 1 && axis >= ROW_MIN_AXIS)
        run(`reduceRows:${op}`, () => reduceRowsWgsl(op), [outer, axis, inner], [i, o], outer)
      else run(`reduceLoop:${op}`, () => reduceLoopWgsl(op), [outer, axis, inner], [i, o], perElement(out.size))
    },

    matmul(a, b, out, spec: MatmulSpec) {
      const { batch, m, n, k, transA, transB } = spec
      const o = bind("matmul", out)
      const accumulate = spec.accumulate === true
      if (out.size === 0) return
      if (k === 0) {
        if (!accumulate) stream.clear(o.buffer, o.bytes)
        return
      } // an empty sum of products
      const [tilesM, tilesN] = [Math.ceil(m / tile.bm), Math.ceil(n / tile.bn)]
      run(
        `matmul:${transA}:${transB}:${accumulate}:${tileName(tile)}`,
        () => matmulWgsl(transA, transB, accumulate, tile),
        [batch, m, n, k, tilesM, tilesN],
        [bind("matmul", a), bind("matmul", b), o],
        batch * tilesM * tilesN,
      )
    },

    gather(table, idx, out, width) {
      const o = bind("gather", out)
      if (out.size === 0) return
      run(
        "gather",
        gatherWgsl,
        [out.size, width, table.size / width],
        [input("gather", table, out), input("gather", idx, out), o],
        perElement(out.size),
      )
    },

    scatterAdd(idx, src, out, width) {
      const o = bind("scatterAdd", out)
      if (out.size === 0) return
      if (idx.size === 0) {
        stream.clear(o.buffer, o.bytes)
        return
      }
      const rows = out.size / width
      // Enough row blocks for ~16k threads, so a narrow table still fills the GPU.
      const rowsPerBlock = Math.ceil(rows / Math.min(rows, Math.ceil(16384 / width)))
      const threads = width * Math.ceil(rows / rowsPerBlock)
      const type = wgslType(out.dtype)
      run(
        `scatterAdd:${type}`,
        () => scatterAddWgsl(type),
        [width, rows, idx.size, rowsPerBlock],
        [input("scatterAdd", idx, out), bind("scatterAdd", src), o],
        perElement(threads),
      )
    },

    takeAlong(x, idx, out, width) {
      const o = bind("takeAlong", out)
      if (out.size === 0) return
      run(
        "takeAlong",
        takeAlongWgsl,
        [out.size, width],
        [input("takeAlong", x, out), input("takeAlong", idx, out), o],
        perElement(out.size),
      )
    },

    putAlong(idx, src, out, width) {
      const o = bind("putAlong", out)
      if (out.size === 0) return
      run(
        "putAlong",
        putAlongWgsl,
        [out.size, width],
        [input("putAlong", idx, out), bind("putAlong", src), o],
        perElement(out.size),
      )
    },
  }
  const checked = checkedBackend(backend, buffers)
  return checked
}
