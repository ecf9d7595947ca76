/**
 * The fast CPU backend (`cpu-fast`): the reference CPU backend (../cpu/) with its hot kernels
 * replaced, behind the same contract and the same `checkedBackend`.
 *
 * - float32 buffers live in the WebAssembly module's (shared) memory (./heap.ts), so the SIMD
 *   kernels take them by address, without copies, and a helper thread can work on them.
 * - matmul in float32 runs the WebAssembly SIMD GEMM (./wasm-gemm.ts, kernels.wat.mjs): the same
 *   module in Node and in the browser, no native build; in Node, where the install built it, the
 *   native GEMM (./native-gemm.ts: AVX-512 or AVX2+FMA) instead, on the same memory. float64
 *   keeps the reference's GEMM.
 * - Buffers are recycled: a freed buffer goes back to the heap's free list (or, outside the heap,
 *   to a pool by dtype and size) and a later alloc of the same size takes it back, zeroed.
 *   Training allocates the same buffers every step, and fresh typed arrays (and the garbage
 *   collection they cause) cost the reference a fifth of its time.
 * - float32 add/sub/mul/div/maximum, neg/sqrt/recip as SIMD kernels, bitwise the reference's
 *   (one correctly rounded float32 operation each); the other float32 elementwise kernels and sums
 *   (./elementwise.ts): the reference's arithmetic, bitwise, in loops V8 compiles for Float32Array.
 * - attention and its VJP as one fused kernel (./attention.ts): a few matrix products per head.
 * - the fused cross-entropy: the reference's (../cpu/fused.ts), in C++ where the addon is built
 *   (./cross-entropy.ts).
 * Everything else is the reference's code. Where WebAssembly SIMD is
 * missing, the backend says so once (`notice`) and runs the reference kernels; where shared memory
 * is missing (a page without cross-origin isolation), it says so and keeps buffers as JS arrays,
 * copied in and out of the module's memory per product, on one thread.
 *
 * Results are float32 sums in a different order than the reference's float64 ones: equal within
 * float32 rounding (the conformance suite checks it), not bitwise.
 */
import { Layer } from "effect"
import { Backend, type Buffer, type MatmulSpec } from "../../core/backend.js"
import { checkedBackend } from "../../core/checked-backend.js"
import { type DType, hostArray } from "../../core/dtype.js"
import { LiveBuffers } from "../../core/live-buffers.js"
import { type CpuBackend, type CpuBuffer, type CpuData, cpuKernels } from "../cpu/cpu-backend.js"
import { matmulBlocked } from "../cpu/matmul.js"
import { simplifyViews } from "../views.js"
import { attentionKernels } from "./attention.js"
import { crossEntropyKernels } from "./cross-entropy.js"
import { binaryF32, reduceSumF32, unaryF32 } from "./elementwise.js"
import { autoHelper } from "./helper-thread.js"
import { loadNativeGemm } from "./native-gemm.js"
import { type SimdBinary, type SimdUnary, type StartHelper, WasmGemm, wasmSimdMissing } from "./wasm-gemm.js"

type FloatData = Float32Array | Float64Array
const floats = (b: Buffer): FloatData => (b as CpuBuffer).data as FloatData

export interface FastCpuBackend extends CpuBackend {
  /** Whether the WebAssembly SIMD kernels run (else the reference kernels do). */
  readonly simd: boolean
  /** What the backend runs short of (no SIMD: the reference kernels; no shared memory: one thread), or undefined. */
  readonly notice: string | undefined
  /** Threads the kernels run on now: 2 once the helper thread has started, else 1. */
  threads(): number
  /** Chunks of shared work (docs/cpu.md: two threads) the helper thread has run so far. */
  helperChunks(): number
  /** What runs float32 products: "native avx512", "native avx2", "wasm simd128" or "reference". */
  readonly gemmKernel: string
}

export interface FastCpuOptions {
  /**
   * The helper thread for the second core (blocks of large products, attention's kv-head groups): "auto"
   * (default) starts Node's where this runs in Node with shared memory; "none" runs everything on
   * the calling thread; or a function that starts one (e.g. `nodeHelper` of ./node-threads.ts).
   * Results are bitwise the same either way.
   */
  readonly helper?: StartHelper | "auto" | "none"
  /** Keep at most this many bytes of freed buffers outside the module's memory for reuse (default 1 GiB). */
  readonly poolBytes?: number
  /** Place at most this many bytes of buffers in the module's memory (default ~2 GiB); the rest are JS arrays. */
  readonly heapBytes?: number
  /**
   * Run float32 products on the native GEMM where it is built (default true, in Node; the
   * environment's MINISEQ_CPU_NATIVE=0 turns it off too); false: the WebAssembly GEMM.
   */
  readonly native?: boolean
}

const simdBinary: Partial<Record<string, SimdBinary>> = {
  add: "add",
  sub: "sub",
  mul: "mul",
  div: "div",
  maximum: "max",
}
const simdUnary: Partial<Record<string, SimdUnary>> = { neg: "neg", sqrt: "sqrt", recip: "recip" }

/** The fast CPU backend; see the module comment. */
export function makeFastCpuBackend(opts: FastCpuOptions = {}): FastCpuBackend {
  const buffers = new LiveBuffers()
  const ref = cpuKernels({}, buffers)
  const missing = wasmSimdMissing()
  const shared = typeof SharedArrayBuffer !== "undefined"
  const helper =
    opts.helper === "none"
      ? undefined
      : opts.helper === undefined || opts.helper === "auto"
        ? shared
          ? autoHelper()
          : undefined
        : opts.helper
  const loaded = missing === undefined && opts.native !== false ? loadNativeGemm() : undefined
  const native = typeof loaded === "string" ? undefined : loaded
  const gemm =
    missing === undefined ? new WasmGemm({ startHelper: helper, heapBytes: opts.heapBytes, native }) : undefined
  const heap = gemm?.heap
  const notice =
    missing !== undefined
      ? `cpu-fast: running the reference kernels (${missing})`
      : heap?.resident === false
        ? "cpu-fast: one thread, buffers copied into the WebAssembly memory per product (no shared memory: the page is not cross-origin isolated)"
        : typeof loaded === "string"
          ? `cpu-fast: products on the WebAssembly GEMM, not the native one (${loaded})`
          : undefined

  // The matmul on typed arrays: the WebAssembly GEMM for float32, the reference GEMM otherwise.
  const matmulData = (A: FloatData, B: FloatData, C: FloatData, spec: MatmulSpec): void => {
    const f32 = A instanceof Float32Array && B instanceof Float32Array && C instanceof Float32Array
    if (!(f32 && gemm?.matmul(A, B, C, spec))) matmulBlocked(A, B, C, spec)
  }
  // Scratch for the fused attention: in the heap when it has room, so its products need no copies.
  const scratch = (like: FloatData, size: number): FloatData =>
    (like instanceof Float32Array ? heap?.alloc(size)?.fill(0) : undefined) ??
    (like instanceof Float32Array ? new Float32Array(size) : new Float64Array(size))
  const release = (x: FloatData): void => {
    if (x instanceof Float32Array && heap?.owns(x)) heap.release(x)
  }

  const poolLimit = opts.poolBytes ?? 2 ** 30
  const pool = new Map<string, CpuData[]>()
  let pooled = 0

  const alloc = (dtype: DType, size: number): CpuBuffer => {
    const resident = dtype === "float32" ? heap?.alloc(size) : undefined
    if (resident !== undefined) return { dtype, size, data: resident }
    const free = pool.get(`${dtype}:${size}`)
    const reused = free?.pop()
    if (reused === undefined) return { dtype, size, data: hostArray(dtype, size) as CpuData }
    pooled -= reused.byteLength
    reused.fill(0)
    return { dtype, size, data: reused }
  }

  return checkedBackend<FastCpuBackend>(
    {
      ...ref,
      name: "cpu-fast",
      routines: {
        ...ref.routines,
        ...crossEntropyKernels(gemm, ref.routines ?? {}),
        ...attentionKernels(
          matmulData,
          scratch,
          release,
          (words, operands) => gemm?.attention(words, operands) ?? false,
        ),
      },
      notice,
      simd: missing === undefined,
      threads: () => gemm?.threads ?? 1,
      helperChunks: () => gemm?.helperChunks ?? 0,
      gemmKernel: gemm?.gemmKernel ?? "reference",
      alloc,
      // The host tier is the same memory here: offloading on the CPU moves nothing, only counts.
      hostAlloc: (dtype, size): CpuBuffer => ({ ...alloc(dtype, size), tier: "host" }),
      free(buffer) {
        const { data } = buffer as CpuBuffer
        if (data instanceof Float32Array && heap?.owns(data)) return heap.release(data)
        if (pooled + data.byteLength > poolLimit) return
        const key = `${buffer.dtype}:${buffer.size}`
        const free = pool.get(key)
        if (free === undefined) pool.set(key, [data])
        else free.push(data)
        pooled += data.byteLength
      },
      unary(op, x, out) {
        const [X, O] = [x, out].map((v) => (v as CpuBuffer).data)
        if (!(X instanceof Float32Array && O instanceof Float32Array)) return ref.unary(op, x, out)
        const simd = simdUnary[op]
        if (simd !== undefined && gemm?.unary(simd, X, O)) return
        if (op === "exp" && gemm?.exp(X, O)) return
        if (!unaryF32(op, X, O)) ref.unary(op, x, out)
      },
      binary(op, a, b, out) {
        const [A, B, O] = [a, b, out].map((v) => (v as CpuBuffer).data)
        if (!(A instanceof Float32Array && B instanceof Float32Array && O instanceof Float32Array))
          return ref.binary(op, a, b, out)
        const simd = simdBinary[op]
        if (simd !== undefined && gemm?.binary(simd, A, B, O)) return
        if (!binaryF32(op, A, B, O)) ref.binary(op, a, b, out)
      },
      reduce(op, x, out, outer, axis, inner) {
        const [X, O] = [x, out].map((v) => (v as CpuBuffer).data)
        const f32 = X instanceof Float32Array && O instanceof Float32Array
        if (f32 && op === "sum" && gemm?.reduceSum(X, O, outer, axis, inner)) return
        if (!(f32 && reduceSumF32(op, X, O, outer, axis, inner))) ref.reduce(op, x, out, outer, axis, inner)
      },
      matmul: (a, b, out, spec) => matmulData(floats(a), floats(b), floats(out), spec),
      copy(src, srcView, dst, dstView) {
        const [S, D] = [src, dst].map((v) => (v as CpuBuffer).data)
        // An in-place copy (src = dst) may overlap itself: the reference reads from a snapshot.
        if (src !== dst && S instanceof Float32Array && D instanceof Float32Array && gemm !== undefined) {
          if (srcView.shape.some((n) => n === 0)) return
          const { shape, src: ss, dst: ds } = simplifyViews(srcView, dstView)
          if (gemm.copy(S, srcView.offset, D, dstView.offset, shape, ss, ds)) return
        }
        ref.copy(src, srcView, dst, dstView)
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
