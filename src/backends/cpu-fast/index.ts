/**
 * The fast CPU backend (`cpu-fast`): the reference CPU backend (../cpu/) with its hot kernels
 * replaced, behind the same contract and the same `checkedBackend`.
 *
 * - matmul in float32 runs the WebAssembly SIMD GEMM (./wasm-gemm.ts, kernels.wat.mjs): the same
 *   module in Node and in the browser, no native build. float64 keeps the reference's GEMM.
 * - Buffers are recycled: a freed typed array goes to a pool (by dtype and size) and a later
 *   alloc of the same kind takes it back, zeroed. Training allocates the same buffers every step,
 *   and fresh typed arrays (and the garbage collection they cause) cost the reference a fifth of
 *   its time.
 * Everything else is the reference's code. Where WebAssembly SIMD is missing, the backend says so
 * once (`notice`) and runs the reference kernels.
 *
 * Results are float32 sums in a different order than the reference's float64 ones: equal within
 * float32 rounding (the conformance suite checks it), not bitwise.
 */
import { Layer } from "effect"
import { Backend } from "../../core/backend.js"
import { checkedBackend } from "../../core/checked-backend.js"
import { hostArray } from "../../core/dtype.js"
import { LiveBuffers } from "../../core/live-buffers.js"
import { type CpuBackend, type CpuBuffer, type CpuData, cpuKernels } from "../cpu/cpu-backend.js"
import { WasmGemm, wasmSimdMissing } from "./wasm-gemm.js"

export interface FastCpuBackend extends CpuBackend {
  /** Why the fast kernels are not running (the reference kernels are), or undefined when they are. */
  readonly notice: string | undefined
}

export interface FastCpuOptions {
  /** Keep at most this many bytes of freed buffers for reuse (default 1 GiB). */
  readonly poolBytes?: number
}

/** The fast CPU backend; see the module comment. */
export function makeFastCpuBackend(opts: FastCpuOptions = {}): FastCpuBackend {
  const buffers = new LiveBuffers()
  const ref = cpuKernels({}, buffers)
  const missing = wasmSimdMissing()
  const gemm = missing === undefined ? new WasmGemm() : undefined
  const notice = missing === undefined ? undefined : `cpu-fast: running the reference kernels (${missing})`

  const poolLimit = opts.poolBytes ?? 2 ** 30
  const pool = new Map<string, CpuData[]>()
  let pooled = 0

  return checkedBackend<FastCpuBackend>(
    {
      ...ref,
      name: "cpu-fast",
      notice,
      alloc(dtype, size): CpuBuffer {
        const free = pool.get(`${dtype}:${size}`)
        const reused = free?.pop()
        if (reused === undefined) return { dtype, size, data: hostArray(dtype, size) as CpuData }
        pooled -= reused.byteLength
        reused.fill(0)
        return { dtype, size, data: reused }
      },
      free(buffer) {
        const { data } = buffer as CpuBuffer
        if (pooled + data.byteLength > poolLimit) return
        const key = `${buffer.dtype}:${buffer.size}`
        const free = pool.get(key)
        if (free === undefined) pool.set(key, [data])
        else free.push(data)
        pooled += data.byteLength
      },
      matmul(a, b, out, spec) {
        const [A, B, C] = [a, b, out].map((x) => (x as CpuBuffer).data)
        if (gemm !== undefined && A instanceof Float32Array && B instanceof Float32Array && C instanceof Float32Array)
          gemm.matmul(A, B, C, spec)
        else ref.matmul(a, b, out, spec)
      },
    },
    buffers,
  )
}

/** The fast CPU backend as the `Backend` service; prints its notice, if any, once. */
export function fastCpuBackendLayer(backend: FastCpuBackend = makeFastCpuBackend()): Layer.Layer<Backend> {
  if (backend.notice !== undefined) console.warn(backend.notice)
  return Layer.succeed(Backend, backend)
}
