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
 * - float32 elementwise kernels and sums (./elementwise.ts): the reference's arithmetic, bitwise,
 *   in loops V8 compiles for Float32Array alone.
 * - attention and its VJP as one fused kernel (./attention.ts): a few matrix products per head.
 * Everything else is the reference's code (with its fused cross-entropy). Where WebAssembly SIMD is missing, the backend says so
 * once (`notice`) and runs the reference kernels.
 *
 * Results are float32 sums in a different order than the reference's float64 ones: equal within
 * float32 rounding (the conformance suite checks it), not bitwise.
 */
import { Layer } from "effect"
import { Backend, type Buffer, type MatmulSpec } from "../../core/backend.js"
import { checkedBackend } from "../../core/checked-backend.js"
import { hostArray } from "../../core/dtype.js"
import { LiveBuffers } from "../../core/live-buffers.js"
import { type CpuBackend, type CpuBuffer, type CpuData, cpuKernels } from "../cpu/cpu-backend.js"
import { matmulBlocked } from "../cpu/matmul.js"
import { attentionKernels } from "./attention.js"
import { binaryF32, reduceSumF32, unaryF32 } from "./elementwise.js"
import { type StartHelper, WasmGemm, wasmSimdMissing } from "./wasm-gemm.js"

type FloatData = Float32Array | Float64Array
const floats = (b: Buffer): FloatData => (b as CpuBuffer).data as FloatData

export interface FastCpuBackend extends CpuBackend {
  /** Why the fast kernels are not running (the reference kernels are), or undefined when they are. */
  readonly notice: string | undefined
}

export interface FastCpuOptions {
  /**
   * Starts the GEMM's helper thread for the second core (Node: `nodeHelper` from
   * ./node-threads.ts, which the CLI passes); without it everything runs on the calling thread.
   */
  readonly helper?: StartHelper
  /** Keep at most this many bytes of freed buffers for reuse (default 1 GiB). */
  readonly poolBytes?: number
}

/** The fast CPU backend; see the module comment. */
export function makeFastCpuBackend(opts: FastCpuOptions = {}): FastCpuBackend {
  const buffers = new LiveBuffers()
  const ref = cpuKernels({}, buffers)
  const missing = wasmSimdMissing()
  const gemm = missing === undefined ? new WasmGemm(opts.helper) : undefined
  const notice = missing === undefined ? undefined : `cpu-fast: running the reference kernels (${missing})`

  // The matmul on typed arrays: the WebAssembly GEMM for float32, the reference GEMM otherwise.
  const matmulData = (A: FloatData, B: FloatData, C: FloatData, spec: MatmulSpec): void => {
    if (gemm !== undefined && A instanceof Float32Array && B instanceof Float32Array && C instanceof Float32Array)
      gemm.matmul(A, B, C, spec)
    else matmulBlocked(A, B, C, spec)
  }

  const poolLimit = opts.poolBytes ?? 2 ** 30
  const pool = new Map<string, CpuData[]>()
  let pooled = 0

  return checkedBackend<FastCpuBackend>(
    {
      ...ref,
      name: "cpu-fast",
      routines: { ...ref.routines, ...attentionKernels(matmulData) },
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
      unary(op, x, out) {
        const [X, O] = [x, out].map((v) => (v as CpuBuffer).data)
        if (!(X instanceof Float32Array && O instanceof Float32Array && unaryF32(op, X, O))) ref.unary(op, x, out)
      },
      binary(op, a, b, out) {
        const [A, B, O] = [a, b, out].map((v) => (v as CpuBuffer).data)
        const f32 = A instanceof Float32Array && B instanceof Float32Array && O instanceof Float32Array
        if (!(f32 && binaryF32(op, A, B, O))) ref.binary(op, a, b, out)
      },
      reduce(op, x, out, outer, axis, inner) {
        const [X, O] = [x, out].map((v) => (v as CpuBuffer).data)
        const f32 = X instanceof Float32Array && O instanceof Float32Array
        if (!(f32 && reduceSumF32(op, X, O, outer, axis, inner))) ref.reduce(op, x, out, outer, axis, inner)
      },
      matmul: (a, b, out, spec) => matmulData(floats(a), floats(b), floats(out), spec),
    },
    buffers,
  )
}

/** The fast CPU backend as the `Backend` service; prints its notice, if any, once. */
export function fastCpuBackendLayer(backend: FastCpuBackend = makeFastCpuBackend()): Layer.Layer<Backend> {
  if (backend.notice !== undefined) console.warn(backend.notice)
  return Layer.succeed(Backend, backend)
}
