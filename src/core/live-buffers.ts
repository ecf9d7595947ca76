/**
 * The buffers a backend allocated and has not freed, and their bytes: what catches double frees,
 * use after free and buffers handed over from another backend (./checked-backend.ts), and what a
 * backend without its own allocator statistics reports as its memory.
 */
import type { Buffer } from "./backend.js"
import { bytesPerElement } from "./dtype.js"

export interface LiveMemory {
  /** Bytes of buffers currently allocated. */
  readonly live: number
  /** Most bytes allocated at once since creation or the last `resetPeak`. */
  readonly peak: number
  resetPeak(): void
}

export class LiveBuffers {
  private readonly alive = new WeakSet<Buffer>()
  private liveBytes = 0
  private peakBytes = 0

  has(b: Buffer): boolean {
    return this.alive.has(b)
  }

  add(b: Buffer): void {
    this.alive.add(b)
    this.liveBytes += b.size * bytesPerElement[b.dtype]
    this.peakBytes = Math.max(this.peakBytes, this.liveBytes)
  }

  delete(b: Buffer): void {
    this.alive.delete(b)
    this.liveBytes -= b.size * bytesPerElement[b.dtype]
  }

  memory(): LiveMemory {
    const resetPeak = () => {
      this.peakBytes = this.liveBytes
    }
    return { live: this.liveBytes, peak: this.peakBytes, resetPeak }
  }
}
