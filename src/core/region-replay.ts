/**
 * Counting runs only: a region whose body is a function of its `replayKey` and its input types
 * (see RegionAttrs) is walked once per distinct (key, input types, wanted results); every later
 * run of such a region replays the ledger events that walk made instead of tracing and walking
 * its body again. The events are replayed one by one through the same ledger, so the peaks, the
 * allocator's rounding, the allocation count and an OutOfMemory (at the same request, with the
 * same message) come out exactly as the walk's would. A planner's composed attention (one body
 * of S/64 key blocks per layer, forward, recomputation and backward) is walked once, not per layer.
 */
import type { DType } from "./dtype.js"
import { fmtShape } from "./errors.js"
import type { TensorType } from "./graph.js"
import { type MemoryKind, type MemoryLedger, memoryKinds, type Tier } from "./memory.js"
import type { RegionAttrs } from "./region-types.js"

/** What the executor reports its bytes to. */
export type Ledger = Pick<MemoryLedger, "add" | "remove" | "retag" | "move">

const ADD = 0
const REMOVE = 1
const RETAG = 2
const MOVE = 3
/** Added to an event's kind slot for the host tier. */
const HOST = 16
const slot = (kind: MemoryKind, tier: Tier) => memoryKinds.indexOf(kind) + (tier === "host" ? HOST : 0)
const kindAt = (k: number) => memoryKinds[k & (HOST - 1)]!
const tierAt = (k: number): Tier => (k & HOST ? "host" : "device")

/** A ledger that passes everything on and, while a body is being recorded, logs it. */
export class RecordingLedger implements Ledger {
  private readonly ops: number[] = []
  private readonly kinds: number[] = []
  private readonly bytes: number[] = []
  private recording = 0

  constructor(private readonly inner: Ledger) {}

  add(kind: MemoryKind, bytes: number, tier: Tier = "device"): void {
    this.inner.add(kind, bytes, tier)
    if (this.recording > 0) this.log(ADD, slot(kind, tier), bytes)
  }

  remove(kind: MemoryKind, bytes: number, tier: Tier = "device"): void {
    this.inner.remove(kind, bytes, tier)
    if (this.recording > 0) this.log(REMOVE, slot(kind, tier), bytes)
  }

  move(bytes: number): void {
    this.inner.move(bytes)
    if (this.recording > 0) this.log(MOVE, 0, bytes)
  }

  retag(from: MemoryKind, to: MemoryKind, bytes: number): void {
    this.inner.retag(from, to, bytes)
    // a retag's two kinds in one slot: from · 8 + to
    if (this.recording > 0) this.log(RETAG, memoryKinds.indexOf(from) * 8 + memoryKinds.indexOf(to), bytes)
  }

  private log(op: number, kind: number, bytes: number): void {
    this.ops.push(op)
    this.kinds.push(kind)
    this.bytes.push(bytes)
  }

  /** Starts logging (recordings nest: an outer one also gets an inner one's events); returns where this one starts. */
  start(): number {
    this.recording++
    return this.ops.length
  }

  /** Stops the recording that began at `from`, returning its events. */
  stop(from: number): Events {
    const events: Events = {
      ops: Uint8Array.from(this.ops.slice(from)),
      kinds: Uint8Array.from(this.kinds.slice(from)),
      bytes: Float64Array.from(this.bytes.slice(from)),
    }
    if (--this.recording === 0) {
      this.ops.length = 0
      this.kinds.length = 0
      this.bytes.length = 0
    }
    return events
  }

  /** Replays events as they were made (and logs them for any recording under way). */
  replay(e: Events): void {
    for (let i = 0; i < e.ops.length; i++) {
      const op = e.ops[i]!
      const k = e.kinds[i]!
      if (op === ADD) this.add(kindAt(k), e.bytes[i]!, tierAt(k))
      else if (op === REMOVE) this.remove(kindAt(k), e.bytes[i]!, tierAt(k))
      else if (op === MOVE) this.move(e.bytes[i]!)
      else this.retag(memoryKinds[k >> 3]!, memoryKinds[k & 7]!, e.bytes[i]!)
    }
  }
}

interface Events {
  readonly ops: Uint8Array
  readonly kinds: Uint8Array
  readonly bytes: Float64Array
}

/** Where each result of a walked body came from: one of its inputs, a buffer it made, or an earlier result. */
type Origin = { readonly input: number } | { readonly fresh: Fresh } | { readonly sameAs: number }

interface Recorded {
  readonly events: Events
  readonly origins: readonly Origin[]
}

/** A buffer a body made and handed out: its element type and count, its kind. */
export interface Fresh {
  readonly dtype: DType
  readonly size: number
  readonly kind: MemoryKind
}

/** What the replay needs of the executor's buffers (its `Alloc`s). */
export interface ReplayHost<A> {
  retain(a: A): A
  /** A buffer for a result whose allocation is among the replayed events: made, not counted again. */
  adopt(f: Fresh): A
  /** A walked result as a Fresh, with its owners' count and whether the caller owns it. */
  describe(a: A): Fresh & { readonly refs: number; readonly external: boolean }
}

const typeKey = (t: TensorType): string => `${t.dtype}${fmtShape(t.shape)}`

/** One counting run's recorded bodies. */
export class RegionReplay<A> {
  private readonly recorded = new Map<string, Recorded | null>()

  constructor(
    readonly ledger: RecordingLedger,
    private readonly host: ReplayHost<A>,
  ) {}

  /**
   * The results of a one-piece region: replayed when a body of the same key was walked, else
   * walked (by `walk`) and recorded. `keep` are the results wanted, `types` the inputs' types.
   */
  *run<Y>(
    attrs: RegionAttrs,
    types: readonly TensorType[],
    keep: readonly number[],
    ins: readonly A[],
    walk: () => Generator<Y, A[], void>,
  ): Generator<Y, A[], void> {
    if (attrs.replayKey === undefined) return yield* walk()
    const key = `${attrs.replayKey}|${types.map(typeKey).join(",")}|${keep.join(",")}`
    const known = this.recorded.get(key)
    if (known === null) return yield* walk()
    if (known !== undefined) {
      this.ledger.replay(known.events)
      return this.resultsOf(known.origins, ins)
    }
    const from = this.ledger.start()
    let outs: A[]
    try {
      outs = yield* walk()
    } catch (e) {
      this.ledger.stop(from) // the run fails: nothing is kept
      throw e
    }
    const events = this.ledger.stop(from)
    const origins = this.originsOf(outs, ins)
    this.recorded.set(key, origins === undefined ? null : { events, origins })
    return outs
  }

  private resultsOf(origins: readonly Origin[], ins: readonly A[]): A[] {
    const outs: A[] = []
    for (const o of origins) {
      if ("input" in o) outs.push(this.host.retain(ins[o.input]!))
      else if ("fresh" in o) outs.push(this.host.adopt(o.fresh))
      else outs.push(this.host.retain(outs[o.sameAs]!))
    }
    return outs
  }

  /** How a walk's results came about; undefined when a replay could not rebuild them exactly. */
  private originsOf(outs: readonly A[], ins: readonly A[]): Origin[] | undefined {
    const origins: Origin[] = []
    for (const [k, a] of outs.entries()) {
      const inputs = ins.flatMap((b, i) => (b === a ? [i] : []))
      const earlier = outs.indexOf(a)
      if (inputs.length > 1) return undefined // which input it is would be ambiguous
      if (inputs.length === 1) origins.push({ input: inputs[0]! })
      else if (earlier < k) origins.push({ sameAs: earlier })
      else {
        const d = this.host.describe(a)
        const copies = outs.filter((b) => b === a).length
        if (d.external || d.refs !== copies) return undefined
        origins.push({ fresh: { dtype: d.dtype, size: d.size, kind: d.kind } })
      }
    }
    return origins
  }
}
