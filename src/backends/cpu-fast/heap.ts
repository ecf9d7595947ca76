/**
 * The WebAssembly memory of the fast CPU backend, and the allocator that places float32 buffers in
 * it. A buffer that lives in the module's memory is an operand of the SIMD kernels as it is (its
 * byte offset is the pointer): no copy in or out per call, and a helper thread sees it too.
 *
 * That needs a shared memory: growing a shared memory never detaches the views already handed out
 * (the old SharedArrayBuffer still covers its old length), while growing an unshared one would
 * invalidate every buffer. Where shared memory is missing (a browser page without cross-origin
 * isolation) the heap only serves short-lived scratch (`scratch`), and buffers stay JS arrays.
 *
 * Allocation: exact-size free lists over a bump pointer. Training allocates the same sizes every
 * step, so after the first step every allocation is a free-list pop. Past `limit` bytes, `alloc`
 * returns undefined and the caller makes an ordinary array (the kernels then copy it in and out).
 */
export interface WasmMemory {
  readonly buffer: ArrayBuffer
  grow(pages: number): number
}
interface WasmApi {
  Memory: new (desc: { initial: number; maximum: number; shared?: boolean }) => WasmMemory
}
const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly

const PAGE = 65536
/** Buffers start on 64-byte boundaries (a cache line; SIMD loads want 16). */
const ALIGN = 64
const roundUp = (n: number, to: number): number => Math.ceil(n / to) * to

/** A shared WebAssembly memory of `initial` pages, or the reason there is none. */
export function sharedMemory(initial: number, maximum: number): WasmMemory | string {
  if (typeof SharedArrayBuffer === "undefined") return "no SharedArrayBuffer (the page is not cross-origin isolated)"
  try {
    return new wasm!.Memory({ initial, maximum, shared: true })
  } catch (e) {
    return `no shared WebAssembly memory (${String(e)})`
  }
}

export class WasmHeap {
  /** The SharedArrayBuffers this memory has had (one more after each grow): what `owns` checks. */
  private readonly buffers = new WeakSet<ArrayBufferLike>()
  private readonly freeLists = new Map<number, number[]>()
  private top: number
  private f32view: Float32Array

  /**
   * @param memory the module's memory; buffers go in it only when it is shared (`resident`)
   * @param base the first byte the heap may use (below it: the kernels' fixed scratch)
   * @param limit the end of the heap (an address: base plus the most bytes it hands out)
   */
  constructor(
    readonly memory: WasmMemory,
    base: number,
    private readonly limit: number,
    readonly resident: boolean,
  ) {
    this.top = roundUp(base, ALIGN)
    this.f32view = new Float32Array(memory.buffer)
    this.buffers.add(memory.buffer)
  }

  /** The whole memory as float32 (a fresh view after a grow). */
  get f32(): Float32Array {
    if (this.f32view.buffer !== this.memory.buffer) {
      this.f32view = new Float32Array(this.memory.buffer)
      this.buffers.add(this.memory.buffer)
    }
    return this.f32view
  }

  /** Whether `x` is a view into this memory (so its byteOffset is its address). */
  owns(x: ArrayBufferView): boolean {
    return this.buffers.has(x.buffer)
  }

  /**
   * A float32 buffer of `size` elements in the memory; undefined past the limit or when not
   * `resident`. Not zeroed (as a GPU allocation is not): a reused buffer holds what it last held.
   * The contract does not promise zeros and every kernel writes all of its output; zeroing cost
   * a tenth of a training step.
   */
  alloc(size: number): Float32Array | undefined {
    if (!this.resident) return undefined
    const at = this.take(4 * size)
    return at === undefined ? undefined : new Float32Array(this.f32.buffer, at, size)
  }

  /** Gives back a buffer from `alloc`. */
  release(x: Float32Array): void {
    this.releaseAt(x.byteOffset, x.length)
  }

  /**
   * The address of scratch for `size` float32 during one kernel call (not zeroed), or undefined
   * past the limit; give it back with `releaseAt`. An address, not a view: in an unshared memory
   * a later grow would detach a view (the bytes stay).
   */
  scratch(size: number): number | undefined {
    return this.take(4 * size)
  }

  /** Gives back `size` float32 at `at` (from `scratch`, or a buffer's byteOffset). */
  releaseAt(at: number, size: number): void {
    const bytes = roundUp(Math.max(4 * size, 1), ALIGN)
    const list = this.freeLists.get(bytes)
    if (list === undefined) this.freeLists.set(bytes, [at])
    else list.push(at)
  }

  private take(bytes: number): number | undefined {
    const rounded = roundUp(Math.max(bytes, 1), ALIGN)
    const reused = this.freeLists.get(rounded)?.pop()
    if (reused !== undefined) return reused
    if (this.top + rounded > this.limit) return undefined
    const at = this.top
    const end = at + rounded
    const have = this.memory.buffer.byteLength
    if (end > have) {
      try {
        this.memory.grow(Math.ceil((end - have) / PAGE))
      } catch {
        return undefined // the memory's maximum or the machine's RAM: the caller falls back
      }
    }
    this.top = end
    return at
  }
}
