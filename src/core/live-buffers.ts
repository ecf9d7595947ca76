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
  /** The same for host-tier buffers (`hostAlloc`), which `live` and `peak` leave out. */
  readonly hostLive: number
  readonly hostPeak: number
  resetPeak(): void
}

export class LiveBuffers {
  private readonly alive = new WeakSet<Buffer>()
  private liveBytes = 0
  private peakBytes = 0
  private hostLiveBytes = 0
  private hostPeakBytes = 0

  has(b: Buffer): boolean {
    return this.alive.has(b)
  }

  add(b: Buffer): void {
    this.alive.add(b)
    const bytes = b.size * bytesPerElement[b.dtype]
    if (b.tier === "host") {
      this.hostLiveBytes += bytes
      this.hostPeakBytes = Math.max(this.hostPeakBytes, this.hostLiveBytes)
    } else {
      this.liveBytes += bytes
      this.peakBytes = Math.max(this.peakBytes, this.liveBytes)
    }
  }

  delete(b: Buffer): void {
    this.alive.delete(b)
    const bytes = b.size * bytesPerElement[b.dtype]
    if (b.tier === "host") this.hostLiveBytes -= bytes
    else this.liveBytes -= bytes
  }

  memory(): LiveMemory {
    const resetPeak = () => {
      this.peakBytes = this.liveBytes
      this.hostPeakBytes = this.hostLiveBytes
    }
    return {
      live: this.liveBytes,
      peak: this.peakBytes,
      hostLive: this.hostLiveBytes,
      hostPeak: this.hostPeakBytes,
      resetPeak,
    }
  }
}
