/**
 * Exact accounting of live device bytes, by kind. The executor reports every allocation and
 * free here, so the peak it prints is the true high-water mark of the schedule it ran.
 */
import { OutOfMemory } from "./errors.js"

export const memoryKinds = ["weights", "gradients", "optimizer", "activations", "temporaries"] as const
export type MemoryKind = (typeof memoryKinds)[number]
export type ByKind = Record<MemoryKind, number>

const zeroByKind = (): ByKind => ({ weights: 0, gradients: 0, optimizer: 0, activations: 0, temporaries: 0 })

export interface MemoryReport {
  /** Highest total of live bytes. */
  readonly peak: number
  /**
   * Highest total of what the allocator holds for the live buffers (each at the backend's
   * `heldBytes`, its size class): what must fit on the device. Equals `peak` where the backend
   * rounds nothing.
   */
  readonly heldPeak: number
  /** What was alive, by kind, at that moment. */
  readonly atPeak: ByKind
  /** Each kind's own high-water mark (they need not peak together). */
  readonly peakByKind: ByKind
  /** Bytes still alive when the run ended (bound inputs and returned outputs). */
  readonly liveAtEnd: number
  readonly allocations: number
}

export class MemoryLedger {
  private live = zeroByKind()
  private total = 0
  private peak = 0
  private atPeak = zeroByKind()
  private peakByKind = zeroByKind()
  private allocations = 0
  private held = 0
  private heldPeak = 0

  /** `limit` applies to the held bytes: `holds(bytes)` is what the allocator keeps for a request. */
  constructor(
    private readonly limit = Infinity,
    private readonly holds: (bytes: number) => number = (bytes) => bytes,
  ) {}

  /** Throws OutOfMemory before anything is allocated when `bytes` would pass the limit. */
  add(kind: MemoryKind, bytes: number): void {
    const held = this.holds(bytes)
    if (this.held + held > this.limit) {
      const rounded = held === bytes ? "" : ` (${held} held by the allocator)`
      throw new OutOfMemory({
        requested: bytes,
        alive: this.total,
        limit: this.limit,
        message: `out of memory: asked for ${bytes} bytes${rounded} with ${this.total} alive and a limit of ${this.limit}; raise M for the chunked blocks, add checkpoint(), or shorten the sequence`,
      })
    }
    this.allocations++
    this.held += held
    if (this.held > this.heldPeak) this.heldPeak = this.held
    this.live[kind] += bytes
    this.total += bytes
    if (this.live[kind] > this.peakByKind[kind]) this.peakByKind[kind] = this.live[kind]
    if (this.total > this.peak) {
      this.peak = this.total
      this.atPeak = { ...this.live }
    }
  }

  remove(kind: MemoryKind, bytes: number): void {
    this.held -= this.holds(bytes)
    this.live[kind] -= bytes
    this.total -= bytes
  }

  retag(from: MemoryKind, to: MemoryKind, bytes: number): void {
    this.live[from] -= bytes
    this.live[to] += bytes
    if (this.live[to] > this.peakByKind[to]) this.peakByKind[to] = this.live[to]
  }

  report(): MemoryReport {
    return {
      peak: this.peak,
      heldPeak: this.heldPeak,
      atPeak: { ...this.atPeak },
      peakByKind: { ...this.peakByKind },
      liveAtEnd: this.total,
      allocations: this.allocations,
    }
  }
}
