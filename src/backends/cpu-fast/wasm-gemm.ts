/**
 * The float32 matmul of the fast CPU backend: the WebAssembly SIMD GEMM of kernels.wat.mjs on one
 * thread. The operands live in JS typed arrays (the backend's buffers), so each call copies a and
 * b into the module's memory (a memcpy: O(mk + kn) against the O(mnk) product), runs the kernel
 * and copies the result back.
 */
import type { MatmulSpec } from "../../core/backend.js"
import { kernelsWasm } from "./kernels-wasm.js"

interface GemmExports {
  gemm(...args: number[]): void
}

// The slice of the WebAssembly API used here (this project's TypeScript libs do not declare it).
interface WasmMemory {
  readonly buffer: ArrayBuffer
  grow(pages: number): number
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object, imports: object) => { readonly exports: object }
  Memory: new (desc: { initial: number; maximum: number; shared?: boolean }) => WasmMemory
}
const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly

// Scratch at the start of memory (bytes): the edge tile, the packed A block, the packed B block.
const T = 0
const AP = 256
const BP = AP + 4 * 64 * 256
const OPERANDS = BP + 4 * 512 * 256

function decode(base64: string): Uint8Array {
  const bin = atob(base64)
  const bytes = new Uint8Array(bin.length)
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i)
  return bytes
}

/** Whether this runtime has WebAssembly with 128-bit SIMD (the reason when not). */
export function wasmSimdMissing(): string | undefined {
  if (wasm === undefined) return "this runtime has no WebAssembly"
  try {
    new wasm.Module(decode(kernelsWasm))
    return undefined
  } catch (e) {
    return `WebAssembly SIMD is not available: ${String(e)}`
  }
}

export class WasmGemm {
  private readonly memory = new wasm!.Memory({ initial: Math.ceil(OPERANDS / 65536) + 1, maximum: 65536 })
  private readonly kernels: GemmExports
  private f32 = new Float32Array(this.memory.buffer)

  constructor() {
    const module = new wasm!.Module(decode(kernelsWasm))
    this.kernels = new wasm!.Instance(module, { env: { memory: this.memory } }).exports as unknown as GemmExports
  }

  private reserve(bytes: number): void {
    const have = this.memory.buffer.byteLength
    if (bytes > have) {
      this.memory.grow(Math.ceil((bytes - have) / 65536))
      this.f32 = new Float32Array(this.memory.buffer)
    }
  }

  /** out (+)= op(a) · op(b) for every batch entry, all float32. */
  matmul(A: Float32Array, B: Float32Array, C: Float32Array, spec: MatmulSpec): void {
    const { batch, m, n, k, transA, transB } = spec
    const acc = spec.accumulate === true
    if (k === 0) {
      if (!acc) C.fill(0)
      return
    }
    const aAt = OPERANDS,
      bAt = aAt + 4 * A.length,
      cAt = bAt + 4 * B.length
    this.reserve(cAt + 4 * C.length)
    const f32 = this.f32
    f32.set(A, aAt >> 2)
    f32.set(B, bAt >> 2)
    if (acc) f32.set(C, cAt >> 2)
    const rsA = transA ? 4 : 4 * k,
      csA = transA ? 4 * m : 4
    const rsB = transB ? 4 : 4 * n,
      csB = transB ? 4 * k : 4
    for (let t = 0; t < batch; t++) {
      this.kernels.gemm(
        aAt + 4 * t * m * k,
        rsA,
        csA,
        bAt + 4 * t * k * n,
        rsB,
        csB,
        cAt + 4 * t * m * n,
        4 * n,
        m,
        n,
        k,
        acc ? 1 : 0,
        AP,
        BP,
        T,
      )
    }
    C.set(f32.subarray(cAt >> 2, (cAt >> 2) + C.length))
  }
}
