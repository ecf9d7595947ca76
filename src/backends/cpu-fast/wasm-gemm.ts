/**
 * The float32 matmul of the fast CPU backend: the WebAssembly SIMD GEMM of kernels.wat.mjs. The
 * operands live in JS typed arrays (the backend's buffers), so each call copies a and b into the
 * module's memory (a memcpy: O(mk + kn) against the O(mnk) product), runs the kernel and copies
 * the result back.
 *
 * With a helper thread (`startHelper`, e.g. ./node-threads.ts in Node) the memory is shared and a
 * large product is split in two halves (rows, or columns when there are more of them): the helper
 * runs one while this thread runs the other, then this thread waits for it (Atomics). The kernel
 * is the same on both, so the result does not depend on the split: every output element is the
 * same sum in the same order.
 */
import type { MatmulSpec } from "../../core/backend.js"
import { kernelsWasm, kernelsWasmShared } from "./kernels-wasm.js"

export interface GemmExports {
  gemm(...args: number[]): void
}

// The slice of the WebAssembly API used here (this project's TypeScript libs do not declare it).
export interface WasmMemory {
  readonly buffer: ArrayBuffer
  grow(pages: number): number
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object, imports: object) => { readonly exports: object }
  Memory: new (desc: { initial: number; maximum: number; shared?: boolean }) => WasmMemory
}
const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly

// The start of memory (bytes): the control words shared with the helper thread, then each
// thread's scratch (the edge tile, the packed A block, the packed B block), then the operands.
const CTL = 0
const T = [256, 512]
const AP = [1024, 1024 + 4 * 64 * 256]
const BP = [AP[1]! + 4 * 64 * 256, AP[1]! + 4 * 64 * 256 + 4 * 512 * 256]
const OPERANDS = BP[1]! + 4 * 512 * 256
// Control words (int32 indices): the job the helper is asked to run, the last job it finished,
// whether it has started, and the job's 15 gemm arguments.
const JOB = 0,
  DONE = 1,
  READY = 2,
  ARGS = 4
/** The control words' indices as source, for a helper thread that runs `helperLoop`'s source. */
export const controlWords = `const JOB = ${JOB}, DONE = ${DONE}, READY = ${READY}, ARGS = ${ARGS};`
/** A product below this many multiply-adds runs on one thread (waking the helper costs ~10 µs). */
const SPLIT_MIN = 1 << 19

/**
 * Starts a helper thread that instantiates `bytes` over the shared `memory` and serves jobs:
 * the protocol is `helperLoop` below, which the thread should run.
 */
export type StartHelper = (memory: WasmMemory, bytes: Uint8Array) => void

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

/**
 * The helper thread's side (run it in the thread, with the module's exports and the memory's
 * control words): wait for a job, run it, say it is done; forever.
 */
export function helperLoop(gemm: GemmExports["gemm"], ctl: Int32Array): void {
  Atomics.store(ctl, READY, 1)
  let seen = Atomics.load(ctl, JOB)
  for (;;) {
    Atomics.wait(ctl, JOB, seen)
    seen = Atomics.load(ctl, JOB)
    gemm(...ctl.subarray(ARGS, ARGS + 15))
    Atomics.store(ctl, DONE, seen)
    Atomics.notify(ctl, DONE)
  }
}

export class WasmGemm {
  private readonly memory: WasmMemory
  private readonly kernels: GemmExports
  private f32: Float32Array
  private readonly ctl: Int32Array | undefined
  private job = 0

  constructor(startHelper?: StartHelper) {
    const shared = startHelper !== undefined
    const pages = Math.ceil(OPERANDS / 65536) + 1
    // A shared memory reserves its maximum up front: 1 GiB of address space, not of RAM.
    this.memory = new wasm!.Memory({ initial: pages, maximum: shared ? 16384 : 65536, shared })
    const bytes = decode(shared ? kernelsWasmShared : kernelsWasm)
    const module = new wasm!.Module(bytes)
    this.kernels = new wasm!.Instance(module, { env: { memory: this.memory } }).exports as unknown as GemmExports
    this.f32 = new Float32Array(this.memory.buffer)
    if (shared) {
      this.ctl = new Int32Array(this.memory.buffer, CTL, 64)
      startHelper(this.memory, bytes)
    }
  }

  /** Whether the helper thread has started (until then, everything runs on this thread). */
  get threads(): number {
    return this.ctl !== undefined && Atomics.load(this.ctl, READY) === 1 ? 2 : 1
  }

  private reserve(bytes: number): void {
    const have = this.memory.buffer.byteLength
    if (bytes > have) this.memory.grow(Math.ceil((bytes - have) / 65536))
    // A shared memory's buffer is a new, longer SharedArrayBuffer after the grow.
    if (this.f32.byteLength !== this.memory.buffer.byteLength) this.f32 = new Float32Array(this.memory.buffer)
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
    const split = this.threads === 2 && m * n * k >= SPLIT_MIN
    for (let t = 0; t < batch; t++) {
      const a = aAt + 4 * t * m * k,
        b = bAt + 4 * t * k * n,
        c = cAt + 4 * t * m * n
      // gemm's arguments for rows × cols of this product (C's row stride stays n).
      const args = (a: number, b: number, c: number, rows: number, cols: number, who: number) =>
        [a, rsA, csA, b, rsB, csB, c, 4 * n, rows, cols, k, acc ? 1 : 0, AP[who]!, BP[who]!, T[who]!] as const
      if (!split) {
        this.kernels.gemm(...args(a, b, c, m, n, 0))
        continue
      }
      // Two halves: by rows (a multiple of the 4-row tile) or by columns (of the 8-column tile).
      const byRows = m >= n
      const half = byRows ? Math.ceil(m / 8) * 4 : Math.ceil(n / 16) * 8
      const mine = byRows ? args(a, b, c, half, n, 0) : args(a, b, c, m, half, 0)
      const theirs = byRows
        ? args(a + half * rsA, b, c + 4 * half * n, m - half, n, 1)
        : args(a, b + half * csB, c + 4 * half, m, n - half, 1)
      this.run(theirs)
      this.kernels.gemm(...mine)
      this.wait()
    }
    C.set(f32.subarray(cAt >> 2, (cAt >> 2) + C.length))
  }

  /** Hands gemm(args) to the helper. */
  private run(args: readonly number[]): void {
    const ctl = this.ctl!
    ctl.set(args, ARGS)
    this.job = (this.job + 1) | 0
    Atomics.store(ctl, JOB, this.job)
    Atomics.notify(ctl, JOB)
  }

  /** Blocks until the helper has finished the last job. */
  private wait(): void {
    const ctl = this.ctl!
    for (;;) {
      const done = Atomics.load(ctl, DONE)
      if (done === this.job) return
      Atomics.wait(ctl, DONE, done)
    }
  }
}
