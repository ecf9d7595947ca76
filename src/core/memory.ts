/**
 * Exact accounting of live bytes, by kind, on the device and (for what is offloaded) in the host
 * tier. The executor reports every allocation and free here, so the peaks it prints are the true
 * high-water marks of the schedule it ran.
 */
import { OutOfMemory } from "./errors.js"

export const memoryKinds = ["weights", "gradients", "optimizer", "activations", "temporaries"] as const
export type MemoryKind = (typeof memoryKinds)[number]
export type ByKind = Record<MemoryKind, number>

const zeroByKind = (): ByKind => ({ weights: 0, gradients: 0, optimizer: 0, activations: 0, temporaries: 0 })

/** Where a buffer lives: device memory, or the host tier (see `BackendImpl.hostAlloc`). */
export type Tier = "device" | "host"

/** The host tier's share of a run: what was offloaded there. */
export interface HostReport {
  /** Highest total of live host-tier bytes. */
  readonly peak: number
  /** What was alive there, by kind, at that moment. */
  readonly atPeak: ByKind
  readonly peakByKind: ByKind
  /** Bytes copied between the tiers (to the host and back). */
  readonly moved: number
}

/** Live bytes by kind and their high-water marks: one per tier. */
class Tally {
  live = zeroByKind()
  total = 0
  peak = 0
  atPeak = zeroByKind()
  peakByKind = zeroByKind()

  add(kind: MemoryKind, bytes: number): void {
    this.live[kind] += bytes
    this.total += bytes
    if (this.live[kind] > this.peakByKind[kind]) this.peakByKind[kind] = this.live[kind]
    if (this.total > this.peak) {
      this.peak = this.total
      this.atPeak = { ...this.live }
    }
  }

  remove(kind: MemoryKind, bytes: number): void {
    this.live[kind] -= bytes
    this.total -= bytes
  }

  retag(from: MemoryKind, to: MemoryKind, bytes: number): void {
    this.live[from] -= bytes
    this.live[to] += bytes
    if (this.live[to] > this.peakByKind[to]) this.peakByKind[to] = this.live[to]
  }
}

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
  /** The host tier: all zero when nothing was offloaded. */
  readonly host: HostReport
}

export class MemoryLedger {
  private readonly device = new Tally()
  private readonly hostTier = new Tally()
  private allocations = 0
  private moved = 0
  private held = 0
  private heldPeak = 0

  /**
   * `limit` applies to the device's held bytes: `holds(bytes)` is what the allocator keeps for a
   * request. `hostLimit` applies to the host tier's live bytes.
   */
  constructor(
    private readonly limit = Infinity,
    private readonly holds: (bytes: number) => number = (bytes) => bytes,
    private readonly hostLimit = Infinity,
  ) {}

  /** Throws OutOfMemory before anything is allocated when `bytes` would pass the tier's limit. */
  add(kind: MemoryKind, bytes: number, tier: Tier = "device"): void {
    if (tier === "host") {
      if (this.hostTier.total + bytes > this.hostLimit) {
        throw new OutOfMemory({
          requested: bytes,
          alive: this.hostTier.total,
          limit: this.hostLimit,
          tier: "host",
          message: `out of host memory: offloading ${bytes} bytes with ${this.hostTier.total} offloaded and a host limit of ${this.hostLimit}`,
        })
      }
      this.allocations++
      this.hostTier.add(kind, bytes)
      return
    }
    const held = this.holds(bytes)
    if (this.held + held > this.limit) {
      const rounded = held === bytes ? "" : ` (${held} held by the allocator)`
      throw new OutOfMemory({
        requested: bytes,
        alive: this.device.total,
        limit: this.limit,
        message: `out of memory: asked for ${bytes} bytes${rounded} with ${this.device.total} alive and a limit of ${this.limit}; raise M for the chunked blocks, add checkpoint(), offload, or shorten the sequence`,
      })
    }
    this.allocations++
    this.held += held
    if (this.held > this.heldPeak) this.heldPeak = this.held
    this.device.add(kind, bytes)
  }

  remove(kind: MemoryKind, bytes: number, tier: Tier = "device"): void {
    if (tier === "host") {
      this.hostTier.remove(kind, bytes)
      return
    }
    this.held -= this.holds(bytes)
    this.device.remove(kind, bytes)
  }

  /** An offload copy of `bytes` between the tiers. */
  move(bytes: number): void {
    this.moved += bytes
  }

  /** A device buffer changes kind (a body's result handed to its caller). */
  retag(from: MemoryKind, to: MemoryKind, bytes: number): void {
    this.device.retag(from, to, bytes)
  }

  report(): MemoryReport {
    const d = this.device,
      h = this.hostTier
    return {
      peak: d.peak,
      heldPeak: this.heldPeak,
      atPeak: { ...d.atPeak },
      peakByKind: { ...d.peakByKind },
      liveAtEnd: d.total,
      allocations: this.allocations,
      host: { peak: h.peak, atPeak: { ...h.atPeak }, peakByKind: { ...h.peakByKind }, moved: this.moved },
    }
  }
}
