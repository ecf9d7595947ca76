/**
 * The fast CPU backend's WebAssembly module and its memory: the float32 GEMM of kernels.wat.mjs
 * and the elementwise kernels, over operands in the memory's heap (./heap.ts). An operand that
 * lives there is passed by address; one that does not (an ordinary JS array) is copied into heap
 * scratch for the call (a memcpy: O(mk + kn) against the O(mnk) product) and the result back.
 *
 * With a helper thread (`startHelper`, e.g. ./node-threads.ts in Node) a large product is cut
 * into chunks of rows, or of columns when there are more of them (./chunks.ts), that both threads
 * claim; this thread then waits for the helper's (Atomics). The kernel is the same on both, so the
 * result does not depend on the split: every output element is the same sum in the same order.
 *
 * Given the native kernels (`native`, ./native-gemm.ts), the products, the exp, the fused
 * attention, the cross-entropy and the sums run those instead, on the same memory and the same
 * chunks; the elementwise kernels stay the module's.
 */
import type { MatmulSpec } from "../../core/backend.js"
import { attentionTask, TASK } from "./attention-task.js"
import { type ChunkEnv, CLOSED, CTL, KIND, runChunk, serveJob } from "./chunks.js"
import { sharedMemory, WasmHeap, type WasmMemory } from "./heap.js"
import { kernelsWasm, kernelsWasmShared } from "./kernels-wasm.js"
import type { ExpKernel, GemmKernel, NativeGemm, NativeKernels } from "./native-gemm.js"

export type { WasmMemory } from "./heap.js"

type Kernel = (...args: number[]) => void
export interface GemmExports {
  gemm: Kernel
}
/** The binary ops with a SIMD kernel (`max` is the contract's `maximum`). */
export type SimdBinary = "add" | "sub" | "mul" | "div" | "max"
export type SimdUnary = "neg" | "sqrt" | "recip"
/** o[i] = exp(x[i]·scale − shift) (float32 out, float64 inside) over n elements; returns Σ of the float64 values. */
export type ExpAffine = (x: number, o: number, n: number, scale: number, shift: number) => number
type KernelExports = GemmExports & { expaffine: ExpAffine; copy4: Kernel } & Record<
    `${SimdBinary}_${"vv" | "vs" | "sv"}` | SimdUnary,
    Kernel
  >

// The slice of the WebAssembly API used here (this project's TypeScript libs do not declare it).
interface WasmApi {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object, imports: object) => { readonly exports: object }
  Memory: new (desc: { initial: number; maximum: number; shared?: boolean }) => WasmMemory
}
const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly

// The start of memory (bytes): the control words shared with the helper thread, then each
// thread's scratch (the edge tile, the packed A block, the packed B block), then the operands.
const T = [256, 512]
const AP = [1024, 1024 + 4 * 64 * 256]
const BP = [AP[1]! + 4 * 64 * 256, AP[1]! + 4 * 64 * 256 + 4 * 512 * 256]
const OPERANDS = BP[1]! + 4 * 512 * 256
// The control words and job kinds: ./chunks.ts.
/**
 * How long a thread spins on the control words before it sleeps (ms): a step posts its jobs in
 * quick succession, and a thread woken from Atomics.wait starts tens of microseconds late.
 */
const SPIN_MS = 0.2
/** The scratch addresses (and SPIN_MS) as source, for the helper thread. */
export const scratchWords = `const AP = ${JSON.stringify(AP)}, BP = ${JSON.stringify(BP)}, T = ${JSON.stringify(T)}, SPIN_MS = ${SPIN_MS};`
/** A product below this many multiply-adds runs on one thread (waking the helper costs ~10 µs). */
const SPLIT_MIN = 1 << 19
/** An exp over at least this many elements is split over two threads. */
const SPLIT_EXP = 1 << 14
/** Pages a shared memory may grow to (2 GiB: addresses stay positive as i32). */
const MAX_PAGES = 32768

/**
 * Starts a helper thread that instantiates `bytes` over the shared `memory` and serves jobs:
 * the protocol is `helperLoop` below, which the thread should run. `nativeGemm`: the native
 * GEMM's file (./native-gemm.ts), which the thread then loads and runs in place of the module's.
 */
export type StartHelper = (memory: WasmMemory, bytes: Uint8Array, nativeGemm?: string) => void

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
 * The helper thread's side (run it in the thread, with the module's exports, the memory's control
 * words and ./chunks.ts's functions): wait for a job, claim and run its chunks; until told to exit.
 */
export function helperLoop(
  kernels: Pick<ChunkEnv, "gemm" | "expaffine" | "attention">,
  ctl: Int32Array,
  memory: WasmMemory,
  serve: typeof serveJob,
  run: typeof runChunk,
  scratch: { ap: number; bp: number; t: number; spinMs: number },
): void {
  const { spinMs, ...own } = scratch
  const env: ChunkEnv = { ...kernels, ...own, f32: new Float32Array(memory.buffer), who: 1 }
  Atomics.store(ctl, 2, 1) // READY
  let seen = Atomics.load(ctl, 0)
  for (;;) {
    // Spin a little (SPIN_MS) before sleeping: a woken thread starts late, by a good part of a
    // chunk of the native GEMM.
    const until = performance.now() + spinMs
    while (Atomics.load(ctl, 0) === seen && performance.now() < until) {}
    Atomics.wait(ctl, 0, seen)
    seen = Atomics.load(ctl, 0)
    if (Atomics.load(ctl, 3) === 3) return // EXIT
    // The memory may have grown since the last job: view all of it.
    if (env.f32.byteLength !== memory.buffer.byteLength) env.f32 = new Float32Array(memory.buffer)
    serve(ctl, seen, env, run)
  }
}

// When a WasmGemm is collected, its helper thread is told to exit (it holds the memory).
const helpers = new FinalizationRegistry<Int32Array>((ctl) => {
  ctl[CTL.KIND] = KIND.EXIT
  Atomics.store(ctl, CTL.JOB, (ctl[CTL.JOB]! + 1) & 0x7fff)
  Atomics.notify(ctl, CTL.JOB)
})

export interface WasmGemmOptions {
  /** Starts the helper thread (the memory must then be shared). */
  readonly startHelper?: StartHelper
  /** The most bytes the heap hands out (default: the memory's 2 GiB less the kernels' scratch). */
  readonly heapBytes?: number
  /** The native GEMM to run in place of the module's (used only over shared memory, which never moves). */
  readonly native?: NativeGemm
}

export class WasmGemm {
  /** Where buffers and scratch live; `heap.resident` when buffers may live there (shared memory). */
  readonly heap: WasmHeap
  private readonly kernels: KernelExports
  private readonly ctl: Int32Array | undefined
  private readonly env: ChunkEnv
  /** The GEMM that products run, and the exp: the native ones when given, else the module's. */
  private readonly gemm: GemmKernel
  private readonly expaffine: ExpKernel
  private readonly attentionJob: ChunkEnv["attention"]
  private readonly native: NativeKernels | undefined
  /** Two threads split a product into this many chunks, at multiples of these rows or columns. */
  private readonly split: { chunks: number; rows: number; cols: number }
  /** What runs the products: "native avx512", "native avx2" or "wasm simd128". */
  readonly gemmKernel: string
  private job = 0

  /** `new WasmGemm(startHelper)` (the first form) still works. */
  constructor(opts: StartHelper | WasmGemmOptions = {}) {
    const { startHelper, heapBytes, native } =
      typeof opts === "function" ? { startHelper: opts, heapBytes: undefined, native: undefined } : opts
    const pages = Math.ceil(OPERANDS / 65536) + 1
    const memory = sharedMemory(pages, MAX_PAGES)
    const shared = typeof memory !== "string"
    if (!shared && startHelper !== undefined)
      throw new Error(`cpu-fast: a helper thread needs shared memory: ${memory}`)
    const mem = shared ? memory : new wasm!.Memory({ initial: pages, maximum: 65536 })
    const bytes = decode(shared ? kernelsWasmShared : kernelsWasm)
    const module = new wasm!.Module(bytes)
    this.kernels = new wasm!.Instance(module, { env: { memory: mem } }).exports as unknown as KernelExports
    const limit = Math.min(MAX_PAGES * 65536 - 65536, OPERANDS + (heapBytes ?? Number.POSITIVE_INFINITY))
    this.heap = new WasmHeap(mem, OPERANDS, limit, shared)
    const nativeGemm = shared ? native : undefined
    const bound = nativeGemm?.bind(new Float32Array(mem.buffer))
    this.native = bound
    const gemm = bound?.gemm ?? this.kernels.gemm
    const expaffine = bound?.expaffine ?? this.kernels.expaffine
    this.gemm = gemm
    this.expaffine = expaffine
    const nativeAttention = bound?.attention
    // The module's GEMM: ~8 chunks at its 4 × 8 tile. The native one is ~4× faster, so a chunk
    // of it is shorter: 4 chunks (two a thread when both run), at its tile, so that no chunk repacks
    // a shared operand more than needed or computes a padded edge tile inside C.
    this.split =
      nativeGemm === undefined
        ? { chunks: 8, rows: 4, cols: 8 }
        : { chunks: 4, rows: nativeGemm.tile[0], cols: nativeGemm.tile[1] }
    this.attentionJob = nativeAttention === undefined ? attentionTask : (_f, _g, w) => nativeAttention(w)
    this.gemmKernel = nativeGemm === undefined ? "wasm simd128" : `native ${nativeGemm.kernel}`
    this.env = {
      f32: this.heap.f32,
      gemm,
      expaffine,
      attention: this.attentionJob,
      ap: AP[0]!,
      bp: BP[0]!,
      t: T[0]!,
      who: 0,
    }
    if (startHelper !== undefined) {
      this.ctl = new Int32Array(mem.buffer, 0, 64)
      startHelper(mem, bytes, nativeGemm?.path)
      helpers.register(this, this.ctl)
    }
  }

  /** Whether the helper thread has started (until then, everything runs on this thread). */
  get threads(): number {
    return this.ctl !== undefined && Atomics.load(this.ctl, CTL.READY) === 1 ? 2 : 1
  }

  /** How many chunks of shared jobs the helper thread has run (0 without one). */
  get helperChunks(): number {
    return this.ctl === undefined ? 0 : Atomics.load(this.ctl, CTL.HELPED)
  }

  /**
   * out (+)= op(a) · op(b) for every batch entry, all float32; false when the heap had no room
   * for the copies of operands that live outside it (the caller then runs another GEMM).
   */
  matmul(A: Float32Array, B: Float32Array, C: Float32Array, spec: MatmulSpec): boolean {
    const acc = spec.accumulate === true
    if (spec.k === 0) {
      if (!acc) C.fill(0)
      return true
    }
    const heap = this.heap
    const copies: Array<[number, number]> = []
    // An operand's address: its own, or that of a scratch copy (C's is copied in only to add to it).
    const place = (x: Float32Array, copyIn: boolean): number | undefined => {
      if (heap.owns(x)) return x.byteOffset
      const at = heap.scratch(x.length)
      if (at === undefined) return undefined
      if (copyIn) heap.f32.set(x, at >> 2)
      copies.push([at, x.length])
      return at
    }
    const aAt = place(A, true),
      bAt = place(B, true),
      cAt = place(C, acc)
    const done = aAt !== undefined && bAt !== undefined && cAt !== undefined
    if (done) {
      this.product(aAt, bAt, cAt, spec)
      if (!heap.owns(C)) C.set(heap.f32.subarray(cAt >> 2, (cAt >> 2) + C.length))
    }
    for (const [at, size] of copies) heap.releaseAt(at, size)
    return done
  }

  /** The GEMM on addresses in the memory. */
  private product(aAt: number, bAt: number, cAt: number, spec: MatmulSpec): void {
    const { batch, m, n, k, transA, transB } = spec
    const acc = spec.accumulate === true
    const rsA = transA ? 4 : 4 * k,
      csA = transA ? 4 * m : 4
    const rsB = transB ? 4 : 4 * n,
      csB = transB ? 4 * k : 4
    const split = this.threads === 2 && m * n * k >= SPLIT_MIN
    for (let t = 0; t < batch; t++) {
      const a = aAt + 4 * t * m * k,
        b = bAt + 4 * t * k * n,
        c = cAt + 4 * t * m * n
      if (!split) {
        this.gemm(a, rsA, csA, b, rsB, csB, c, 4 * n, m, n, k, acc ? 1 : 0, AP[0]!, BP[0]!, T[0]!)
        continue
      }
      // About split.chunks chunks of rows or of columns, each a multiple of the kernel's tile
      // (and at least 4 tiles: below that the chunks' fixed costs would outweigh the second core).
      const byRows = m >= n
      const { chunks: parts, rows, cols } = this.split
      const unit = byRows ? rows : cols
      const piece = Math.max(4 * unit, Math.ceil((byRows ? m : n) / parts / unit) * unit)
      const chunks = Math.ceil((byRows ? m : n) / piece)
      this.share(KIND.GEMM, [a, rsA, csA, b, rsB, csB, c, 4 * n, m, n, k, acc ? 1 : 0, byRows ? 1 : 0, piece], chunks)
    }
  }

  /**
   * Runs the fused attention job `words` (./attention-task.ts; its g0/g1 and scratch words are
   * filled in here) over all B·Hkv groups: shared with the helper thread when there is one. false when
   * an operand is outside the heap or the heap has no room for the scratch.
   */
  attention(words: number[], operands: Float32Array[]): boolean {
    const heap = this.heap
    if (!operands.every((x) => heap.owns(x))) return false
    const [B, Hkv, S, D] = [words[TASK.B]!, words[TASK.Hkv]!, words[TASK.S]!, words[TASK.D]!]
    const groups = B * Hkv
    const two = this.threads === 2 && groups >= 2
    const rows = Math.min(64, S)
    const scratch: number[] = []
    const sizes = [rows * S, rows * S, rows * D]
    for (let who = 0; who < (two ? 2 : 1); who++)
      for (const size of sizes) {
        const at = heap.scratch(size)
        if (at === undefined) {
          scratch.forEach((a, i) => heap.releaseAt(a, sizes[i % 3]!))
          return false
        }
        scratch.push(at)
      }
    heap.f32.fill(0, scratch[2]! >> 2, (scratch[2]! >> 2) + rows * D) // the zero dO
    if (two) heap.f32.fill(0, scratch[5]! >> 2, (scratch[5]! >> 2) + rows * D)
    const job = (who: number, g0: number, g1: number): number[] => {
      const w = [...words]
      w[TASK.g0] = g0
      w[TASK.g1] = g1
      w[TASK.p] = scratch[3 * who]!
      w[TASK.dp] = scratch[3 * who + 1]!
      w[TASK.zeros] = scratch[3 * who + 2]!
      ;[w[TASK.ap], w[TASK.bp], w[TASK.t]] = [AP[who]!, BP[who]!, T[who]!]
      return w
    }
    if (two) this.share(KIND.ATTENTION, [...job(0, 0, 0), ...scratch.slice(3, 6)], groups)
    else this.attentionJob(heap.f32, this.gemm, job(0, 0, groups), this.expaffine)
    scratch.forEach((a, i) => heap.releaseAt(a, sizes[i % 3]!))
    return true
  }

  /**
   * The fused cross-entropy (forward: out = nll, g undefined; backward: out = dLogits, g = dNll)
   * on the native kernel, for float32 x/out/g in the heap; false when not run (no native kernel,
   * or an operand outside the heap): the caller runs the reference's.
   */
  crossEntropy(
    x: Float32Array,
    targets: Int32Array,
    out: Float32Array,
    g: Float32Array | undefined,
    N: number,
    V: number,
    ignore: number,
  ): boolean {
    const ce = this.native?.crossEntropy
    const heap = this.heap
    if (ce === undefined || !(heap.owns(x) && heap.owns(out) && (g === undefined || heap.owns(g)))) return false
    ce(g === undefined ? 0 : 1, x.byteOffset, targets, out.byteOffset, g?.byteOffset ?? 0, N, V, ignore)
    return true
  }

  /** The reference's float32 sum over [outer, axis, inner] (bitwise) natively; false when not run. */
  reduceSum(x: Float32Array, o: Float32Array, outer: number, axis: number, inner: number): boolean {
    const reduce = this.native?.reduceSum
    if (reduce === undefined || !(this.heap.owns(x) && this.heap.owns(o))) return false
    reduce(x.byteOffset, o.byteOffset, outer, axis, inner)
    return true
  }

  /**
   * o = a op b on float32 views into the heap, each of o's length or (a or b) one element; false
   * when an operand is not in the heap (the caller runs its own loop).
   */
  binary(op: SimdBinary, a: Float32Array, b: Float32Array, o: Float32Array): boolean {
    const heap = this.heap
    if (!(heap.owns(a) && heap.owns(b) && heap.owns(o))) return false
    const n = o.length
    const kinds =
      a.length === n
        ? b.length === n
          ? "vv"
          : b.length === 1
            ? "vs"
            : ""
        : a.length === 1 && b.length === n
          ? "sv"
          : ""
    if (kinds === "") return false
    this.kernels[`${op}_${kinds}`](a.byteOffset, b.byteOffset, o.byteOffset, n)
    return true
  }

  /** o = exp(x) on float32 views into the heap of one length (see kernels.wat.mjs); false when not in the heap. */
  exp(x: Float32Array, o: Float32Array): boolean {
    const heap = this.heap
    if (!(heap.owns(x) && heap.owns(o) && x.length === o.length)) return false
    const n = o.length
    // exp is compute-bound (~4 ns an element): a long one is worth sharing, in runs of 8192.
    if (this.threads === 2 && n >= SPLIT_EXP)
      this.share(KIND.EXP, [x.byteOffset, o.byteOffset, n, 8192], Math.ceil(n / 8192))
    else this.expaffine(x.byteOffset, o.byteOffset, n, 1, 0)
    return true
  }

  /**
   * The strided copy of float32 buffers in the heap, by the view's element offset and the
   * simplified shape and strides (../views.ts) of rank ≤ 4; false when not handled here.
   */
  copy(
    src: Float32Array,
    s0: number,
    dst: Float32Array,
    d0: number,
    shape: number[],
    ss: number[],
    ds: number[],
  ): boolean {
    const heap = this.heap
    if (shape.length > 4 || !(heap.owns(src) && heap.owns(dst))) return false
    const pad = 4 - shape.length
    const n = [...Array(pad).fill(1), ...shape],
      sb = [...Array(pad).fill(0), ...ss.map((x) => 4 * x)],
      db = [...Array(pad).fill(0), ...ds.map((x) => 4 * x)]
    this.kernels.copy4(src.byteOffset + 4 * s0, dst.byteOffset + 4 * d0, ...n, ...sb, ...db)
    return true
  }

  /** o = op(x) on float32 views into the heap of one length; false when not in the heap. */
  unary(op: SimdUnary, x: Float32Array, o: Float32Array): boolean {
    const heap = this.heap
    if (!(heap.owns(x) && heap.owns(o) && x.length === o.length)) return false
    this.kernels[op](x.byteOffset, o.byteOffset, o.length)
    return true
  }
  /**
   * Runs a job of `chunks` chunks on both threads (./chunks.ts): posts it, claims chunks here
   * until none is left, waits for the chunks the helper claimed, then closes the job.
   */
  private share(kind: number, args: readonly number[], chunks: number): void {
    const ctl = this.ctl!
    ctl[CTL.KIND] = kind
    ctl.set(args, CTL.ARGS)
    ctl[CTL.TOTAL] = chunks
    Atomics.store(ctl, CTL.FIN, 0)
    this.job = (this.job + 1) & 0x7fff
    Atomics.store(ctl, CTL.CLAIM, this.job << 16)
    Atomics.store(ctl, CTL.JOB, this.job)
    Atomics.notify(ctl, CTL.JOB)
    this.env.f32 = this.heap.f32
    serveJob(ctl, this.job, this.env, runChunk)
    const until = performance.now() + SPIN_MS
    for (;;) {
      const fin = Atomics.load(ctl, CTL.FIN)
      if (fin >= chunks) break
      // The helper's last chunk is usually moments from done: spin first, then sleep.
      if (performance.now() < until) continue
      Atomics.wait(ctl, CTL.FIN, fin)
    }
    Atomics.store(ctl, CTL.CLAIM, (this.job << 16) | CLOSED)
  }
}
