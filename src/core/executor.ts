/**
 * The executor walks a graph in creation order, allocates each result, frees every buffer at
 * its last use, runs regions as loops over their pieces, and reports every byte to a
 * MemoryLedger. It never reads device memory, so a counting backend yields the same numbers.
 */
import { Effect } from "effect"
import type { BackendImpl, Buffer } from "./backend.js"
import { Backend, contiguousStrides, dense, numel } from "./backend.js"
import { computesNothing, makeCountingBackend } from "./counting.js"
import { bytesPerElement, type DType, dtypeOf, type HostArray } from "./dtype.js"
import { BadConfig, CollectiveError, DTypeError, GraphError, OutOfMemory, ShapeError } from "./errors.js"
import { type Node, type Primitive, schedule, type Tensor, type TensorType } from "./graph.js"
import { checkFeeds, feedParts } from "./feeds.js"
import { MemoryLedger, type MemoryKind, type MemoryReport, type Tier } from "./memory.js"
import { type OffloadOptions, type OffloadSchedule, offloadSchedule } from "./offload.js"
import { matmulSpec, ruleOf, type Site, siteOf } from "./primitives.js"
import { type Fresh, type Ledger, RecordingLedger, RegionReplay } from "./region-replay.js"
import { pieces, type RoutineSite } from "./region-types.js"
import { type AnyRoutineKernel, kernelFor } from "./routines/registry.js"

/** A buffer the executor counts and frees when its last user is done. */
interface Alloc {
  readonly buffer: Buffer
  readonly bytes: number
  kind: MemoryKind
  refs: number
  /** Owned by the caller: counted while the run lasts, never freed by the executor. */
  readonly external: boolean
  readonly tier: Tier
}

export interface Binding {
  readonly buffer: Buffer
  readonly kind: MemoryKind
}

export interface RunOptions {
  /** Fail with OutOfMemory instead of allocating past this many bytes. */
  readonly limit?: number
  /** Outputs to count as "gradients" (e.g. the values of valueAndGrad's `grads`). */
  readonly gradients?: readonly Tensor[]
  /**
   * Output → bound input whose buffer it may overwrite (an optimizer updating weights in place).
   * Honoured when the output comes from an elementwise op and nothing later reads the input;
   * otherwise the output gets a buffer of its own. Either way the returned buffer is the answer.
   */
  readonly inPlace?: ReadonlyMap<Tensor, Tensor>
  /**
   * Move saved activations and/or the requested gradients to the backend's host tier (see
   * ./offload.ts for when). Needs `hostAlloc`; the numbers computed do not change.
   */
  readonly offload?: OffloadOptions
  /** Fail with OutOfMemory instead of offloading past this many host-tier bytes. */
  readonly hostLimit?: number
}

export interface RunResult {
  /** One buffer per output; the caller owns them now. */
  readonly outputs: Buffer[]
  readonly memory: MemoryReport
}

/** A region's summed result that a piece's matmul writes (first piece) or adds (the others) straight into. */
interface Into {
  readonly acc: Alloc
  readonly first: boolean
}

/** A matmul may add its product into a wider accumulator (bf16 operands, fp32 weight gradient). */
const canAccumulateInto = (result: DType, acc: DType): boolean =>
  result === acc || (result === "bfloat16" && acc === "float32")

/**
 * Where a node's results go. Most get fresh buffers; three reuse one instead:
 * - accumulate: a matmul adds its product straight into a region's summed result (a weight
 *   gradient, piece by piece), so no per-piece product is ever alive;
 * - fusedInPlace: a fused elementwise routine (AdamW) writes over inputs nobody reads afterwards;
 * - overwrite: an elementwise primitive writes over a bound input nobody reads afterwards
 *   (w ← w − lr·update, see `RunOptions.inPlace`).
 */
type Placement =
  | { readonly kind: "fresh" }
  | { readonly kind: "accumulate"; readonly into: Into }
  | { readonly kind: "fusedInPlace"; readonly fused: FusedKernel; readonly donors: readonly Donor[] }
  | { readonly kind: "overwrite"; readonly donor: Alloc }
const fresh: Placement = { kind: "fresh" }
/** Per result of a fused routine: the input buffer it overwrites, or undefined for a fresh one. */
type Donor = Alloc | undefined

type KindOf = (t: Tensor) => MemoryKind

/** A routine's fused kernel and how it sees the region. */
interface FusedKernel {
  readonly kernel: AnyRoutineKernel
  readonly site: RoutineSite
}

/** How many readers each value has: the nodes that take it, and the caller for each output. */
function readers(nodes: readonly Node[], outputs: readonly Tensor[]): Map<Tensor, number> {
  const uses = new Map<Tensor, number>()
  const use = (t: Tensor) => uses.set(t, (uses.get(t) ?? 0) + 1)
  for (const n of nodes) n.inputs.forEach(use)
  outputs.forEach(use)
  return uses
}

const unboundInput = (node: Node<"input">): string => {
  const shape = node.results[0]!.shape
  const of = shape.length ? `of shape [${shape.join(", ")}] ` : ""
  return `input "${node.attrs.name}" ${of}was not given a value; bind it when running the graph`
}

class Executor {
  /** Everything allocated and not yet freed, so a failed run can give it all back. */
  readonly owned = new Set<Alloc>()
  /** Set for a run that computes nothing: keyed region bodies walked once, then replayed. */
  replay: RegionReplay<Alloc> | undefined
  constructor(
    readonly backend: BackendImpl,
    readonly ledger: Ledger,
    readonly bound: ReadonlyMap<Tensor, Alloc> = new Map(),
    readonly inPlace: ReadonlyMap<Tensor, Tensor> = new Map(),
  ) {}

  /**
   * A fresh buffer for `t`. It goes to the host tier when asked, or when `t` is an output written
   * over a host-tier input that could not take it in place (the optimizer's offloaded state stays
   * offloaded).
   */
  allocate(t: TensorType, kind: MemoryKind, tier: Tier = this.hostResult(t) ? "host" : "device"): Alloc {
    const size = numel(t.shape)
    const bytes = size * bytesPerElement[t.dtype]
    this.ledger.add(kind, bytes, tier)
    const buffer = tier === "host" ? this.hostAlloc(t.dtype, size) : this.backend.alloc(t.dtype, size)
    return this.own(buffer, bytes, kind, tier)
  }

  /** A buffer the executor made, counted already, freed by it when its last reader is done. */
  own(buffer: Buffer, bytes: number, kind: MemoryKind, tier: Tier): Alloc {
    const a: Alloc = { buffer, bytes, kind, refs: 1, external: false, tier }
    this.owned.add(a)
    return a
  }

  hostAlloc(dtype: DType, size: number): Buffer {
    if (this.backend.hostAlloc === undefined)
      throw new BadConfig({
        field: "offload",
        message: `the ${this.backend.name} backend has no host tier to offload to; run without offload, or on cpu, cpu-fast or cuda`,
      })
    return this.backend.hostAlloc(dtype, size)
  }

  hostResult(t: TensorType): boolean {
    const target = this.inPlace.get(t as Tensor)
    return target !== undefined && this.bound.get(target)?.tier === "host"
  }

  /** A buffer whose bytes a replayed body already counted (./region-replay.ts). */
  adopt({ dtype, size, kind }: Fresh): Alloc {
    return this.own(this.backend.alloc(dtype, size), size * bytesPerElement[dtype], kind, "device")
  }

  bind(b: Binding): Alloc {
    const bytes = b.buffer.size * bytesPerElement[b.buffer.dtype]
    const tier = b.buffer.tier ?? "device"
    this.ledger.add(b.kind, bytes, tier)
    return { buffer: b.buffer, bytes, kind: b.kind, refs: 1, external: true, tier }
  }

  retain(a: Alloc): Alloc {
    a.refs++
    return a
  }

  release(a: Alloc): void {
    if (--a.refs > 0) return
    this.ledger.remove(a.kind, a.bytes, a.tier)
    if (!a.external) {
      this.owned.delete(a)
      this.backend.free(a.buffer)
    }
  }

  /** After a failure: free whatever the interrupted run still held. */
  abandon(): void {
    for (const a of this.owned) this.backend.free(a.buffer)
    this.owned.clear()
  }

  /**
   * Runs the nodes `outputs` need, with `params` bound to `args`. Everything allocated inside
   * is freed by the time this returns, except the outputs (returned with one reference each).
   */
  *runGraph(
    outputs: readonly Tensor[],
    params: readonly Tensor[],
    args: readonly Alloc[],
    kindOf: KindOf,
    into: ReadonlyMap<Tensor, Into> = new Map(),
    offload?: (nodes: readonly Node[]) => OffloadSchedule,
  ): Steps<Alloc[]> {
    const nodes = schedule(outputs, new Set(params))
    const uses = readers(nodes, outputs)
    const moves = offload?.(nodes)
    const env = new Map<Tensor, Alloc>()
    /** One reader of `t` is done: after the last, its buffer is released. */
    const drop = (t: Tensor) => {
      const left = (uses.get(t) ?? 0) - 1
      uses.set(t, left)
      const a = env.get(t)
      if (left <= 0 && a !== undefined) {
        env.delete(t)
        this.release(a)
      }
    }
    const define = (t: Tensor, a: Alloc) => {
      env.set(t, a)
      if (!uses.get(t)) drop(t)
    }

    params.forEach((p, i) => define(p, this.retain(args[i]!)))
    /**
     * Device copies of stored values, let go at the next store, and host copies of loaded ones,
     * let go at the next load: so that a copy engine's copy may overlap the work in between.
     */
    let leaving: Alloc[] = []
    let arrived: Alloc[] = []
    const letGo = () => {
      leaving.forEach((a) => this.release(a))
      leaving = []
    }
    // In creation order: place each node's results, run it, then let go of what it read.
    for (const [i, node] of nodes.entries()) {
      if (node.op === "input") throw new GraphError({ message: unboundInput(node as Node<"input">) })
      yield node // between two nodes: where an interruptible run may pause, or ranks keep in step (./ranks.ts)
      if (moves !== undefined) {
        if (i === moves.firstBackward) letGo()
        const loads = moves.loadBefore.get(i)
        if (loads !== undefined) {
          arrived.forEach((a) => this.release(a))
          arrived = loads.flatMap((t) => this.load(env, t))
        }
      }
      const ins = node.inputs.map((t) => env.get(t)!)
      const outs = yield* this.run(node, ins, this.placementOf(node, uses, into), kindOf, uses)
      node.results.forEach((r, i) => {
        const out = outs[i]
        if (out !== undefined) define(r, out)
      })
      node.inputs.forEach(drop)
      const stores = moves?.storeAfter.get(i)
      if (stores !== undefined) {
        const stored = stores.flatMap((t) => this.store(env, t))
        letGo()
        leaving = stored
      }
    }
    letGo()
    arrived.forEach((a) => this.release(a))
    const result = outputs.map((t) => this.retain(env.get(t)!))
    outputs.forEach(drop)
    return result
  }

  /**
   * Copies `t`'s buffer to the host tier and points `t` at the copy; returns the device buffer to
   * let go of later. Nothing to do for a value still shared or bound, or gone already.
   */
  store(env: Map<Tensor, Alloc>, t: Tensor): Alloc[] {
    const device = env.get(t)
    if (device === undefined || device.external || device.refs !== 1 || device.tier === "host") return []
    const host = this.allocate(t, device.kind, "host")
    this.backend.copy(device.buffer, dense(t.shape), host.buffer, dense(t.shape))
    this.ledger.move(host.bytes)
    env.set(t, host)
    return [device]
  }

  /** Brings a stored `t` back to the device; returns its host copy, to let go of later. */
  load(env: Map<Tensor, Alloc>, t: Tensor): Alloc[] {
    const host = env.get(t)
    if (host === undefined || host.tier !== "host" || host.external) return []
    const device = this.allocate(t, host.kind, "device")
    this.backend.copy(host.buffer, dense(t.shape), device.buffer, dense(t.shape))
    this.ledger.move(device.bytes)
    env.set(t, device)
    return [host]
  }

  /** Where a node's results go: fresh buffers, unless one of three reuses applies (see Placement). */
  placementOf(node: Node, uses: ReadonlyMap<Tensor, number>, into: ReadonlyMap<Tensor, Into>): Placement {
    const result = node.results[0]!
    const sum = into.get(result)
    const fits = sum !== undefined && canAccumulateInto(result.dtype, sum.acc.buffer.dtype)
    if (node.op === "matmul" && fits && uses.get(result) === 1) {
      return { kind: "accumulate", into: sum }
    }
    if (node.op === "region") {
      const fused = this.fusedKernel(node as Node<"region">)
      const donors = fused?.site.elementwise ? node.results.map((r) => this.donorFor(node, uses, r)) : []
      const some = fused !== undefined && donors.some((d) => d !== undefined)
      return some ? { kind: "fusedInPlace", fused, donors } : fresh
    }
    const donor = ruleOf(node.op as Primitive).elementwise ? this.donorFor(node, uses, result) : undefined
    return donor !== undefined ? { kind: "overwrite", donor } : fresh
  }

  /** Runs `node` on `ins` into the buffers `placement` names; returns its results' buffers. */
  *run(
    node: Node,
    ins: readonly Alloc[],
    placement: Placement,
    kindOf: KindOf,
    uses: ReadonlyMap<Tensor, number>,
  ): Steps<(Alloc | undefined)[]> {
    const bufs = ins.map((a) => a.buffer)
    switch (placement.kind) {
      case "accumulate": {
        // The first piece's matmul writes the accumulator, the others add into it.
        const [a, b] = bufs as [Buffer, Buffer]
        const { acc, first } = placement.into
        this.backend.matmul(a, b, acc.buffer, matmulSpec(siteOf(node) as Site<"matmul">, !first))
        return [this.retain(acc)]
      }
      case "fusedInPlace": {
        const outs = node.results.map((r, j) => {
          const donor = placement.donors[j]
          return donor !== undefined ? this.retain(donor) : this.allocate(r, kindOf(r))
        })
        this.callFused(placement.fused, node as Node<"region">, ins, outs)
        return outs
      }
      case "overwrite":
        ruleOf(node.op as Primitive).run!(this.backend, bufs, placement.donor.buffer, siteOf(node))
        return [this.retain(placement.donor)]
      case "fresh": {
        const wanted = node.results.map((r) => (uses.get(r) ?? 0) > 0)
        return yield* this.runNode(node, ins, node.results.map(kindOf), wanted)
      }
    }
  }

  /** The bound input `out` may be written into (see `inPlace`), if this node is that input's last reader. */
  donorFor(node: Node, uses: ReadonlyMap<Tensor, number>, out: Tensor): Alloc | undefined {
    const target = this.inPlace.get(out)
    if (target === undefined) return undefined
    const donor = this.bound.get(target)
    const readsHere = node.inputs.filter((t) => t === target).length
    const fits = donor !== undefined && donor.buffer.dtype === out.dtype && donor.buffer.size === out.size
    return fits && (uses.get(target) ?? 0) === readsHere ? donor : undefined
  }

  *runNode(
    node: Node,
    ins: readonly Alloc[],
    kinds: readonly MemoryKind[],
    wanted: readonly boolean[],
  ): Steps<(Alloc | undefined)[]> {
    if (node.op === "region") return yield* this.runRegion(node as Node<"region">, ins, kinds, wanted)
    const rule = ruleOf(node.op as Primitive)
    if (rule.alias) return [this.retain(ins[0]!)]
    const out = this.allocate(node.results[0]!, kinds[0]!)
    rule.run!(
      this.backend,
      ins.map((a) => a.buffer),
      out.buffer,
      siteOf(node),
    )
    return [out]
  }

  /**
   * A region: its body once, or once per piece with inputs sliced and outputs combined. A body
   * computes only the results in `wanted` (a forward-only run skips gradients taken in forward);
   * the others come back undefined. A fused kernel computes them all.
   */
  *runRegion(
    node: Node<"region">,
    ins: readonly Alloc[],
    kinds: readonly MemoryKind[],
    wanted: readonly boolean[],
  ): Steps<(Alloc | undefined)[]> {
    const a = node.attrs
    const parts = pieces(a.length, a.chunk)
    const temporaries = () => "temporaries" as const
    const fused = this.fusedKernel(node)
    if (fused !== undefined) {
      const outs = node.results.map((r, j) => this.allocate(r, kinds[j]!))
      this.callFused(fused, node, ins, outs)
      return outs
    }
    const keep = node.results.flatMap((_, j) => (wanted[j] ? [j] : []))
    const scatter = (outs: readonly Alloc[]): (Alloc | undefined)[] =>
      node.results.map((_, j) => (keep.includes(j) ? outs[keep.indexOf(j)] : undefined))
    if (parts.length === 1) {
      const walk = () => {
        const body = a.bodyFor(parts[0]![1])
        return this.runGraph(
          keep.map((j) => body.outputs[j]!),
          body.params,
          ins,
          temporaries,
        )
      }
      // A counting run replays a keyed body it walked before (./region-replay.ts).
      const outs = yield* this.replay ? this.replay.run(a, node.inputs, keep, ins, walk) : walk()
      return scatter(
        outs.map((out, k) => {
          const j = keep[k]!
          let al = out
          if (al.buffer.dtype !== node.results[j]!.dtype) {
            // a bf16 piece summed into an fp32 result
            al = this.castTo(out, node.results[j]!.shape, node.results[j]!.dtype)
            this.release(out)
          }
          // A fresh result changes owner from the body to the caller; an alias keeps its kind.
          if (al.refs === 1 && !al.external && al.kind !== kinds[j]) {
            this.ledger.retag(al.kind, kinds[j]!, al.bytes)
            al.kind = kinds[j]!
          }
          return al
        }),
      )
    }
    // A "sum" result needs no zeroing: the first piece writes it, the others add into it.
    const results = keep.map((j) => {
      const r = node.results[j]!
      return this.allocate(
        a.combine[j] === "sum" ? { shape: r.shape, dtype: a.accumulate?.[j] ?? r.dtype } : r,
        kinds[j]!,
      )
    })
    for (const [start, len] of parts) {
      const first = start === 0
      const body = a.bodyFor(len)
      const sliced: Alloc[] = []
      const pieceIns = ins.map((al, i) => {
        const axis = a.inAxes[i]
        if (axis === null || axis === undefined) return al
        const s = this.slice(al, node.inputs[i]!, axis, start, len)
        sliced.push(s)
        return s
      })
      const into = new Map(
        keep.flatMap((j, k) =>
          a.combine[j] === "sum" ? [[body.outputs[j]!, { acc: results[k]!, first }] as const] : [],
        ),
      )
      const outs = yield* this.runGraph(
        keep.map((j) => body.outputs[j]!),
        body.params,
        pieceIns,
        temporaries,
        into,
      )
      sliced.forEach((s) => this.release(s))
      outs.forEach((al, k) => {
        const j = keep[k]!
        const acc = results[k]!
        if (al === acc) {
          // already accumulated in place by its matmul
        } else if (a.combine[j] === "sum" && first) {
          if (al.buffer.dtype === acc.buffer.dtype)
            this.backend.copy(al.buffer, dense(body.outputs[j]!.shape), acc.buffer, dense(body.outputs[j]!.shape))
          else this.backend.cast(al.buffer, acc.buffer)
        } else if (a.combine[j] === "sum") {
          const piece =
            al.buffer.dtype === acc.buffer.dtype ? al : this.castTo(al, body.outputs[j]!.shape, acc.buffer.dtype)
          this.backend.binary("add", acc.buffer, piece.buffer, acc.buffer) // in place: one accumulator for all pieces
          if (piece !== al) this.release(piece)
        } else {
          const shape = node.results[j]!.shape
          const strides = contiguousStrides(shape)
          const pieceShape = body.outputs[j]!.shape
          this.backend.copy(al.buffer, dense(pieceShape), acc.buffer, {
            shape: pieceShape,
            strides,
            offset: start * strides[a.outAxes[j]!]!,
          })
        }
        this.release(al)
      })
    }
    // Accumulators wider than their result (fp32 sums of bf16 gradients) are cast once, here.
    return scatter(
      results.map((acc, k) => {
        const j = keep[k]!
        if (acc.buffer.dtype === node.results[j]!.dtype) return acc
        const out = this.allocate(node.results[j]!, kinds[j]!)
        this.backend.cast(acc.buffer, out.buffer)
        this.release(acc)
        return out
      }),
    )
  }

  /** Runs a fused kernel, counting the scratch the backend says it takes as temporaries while it runs. */
  callFused(fused: FusedKernel, node: Node<"region">, ins: readonly Alloc[], outs: readonly Alloc[]): void {
    const inputs = Object.fromEntries(
      fused.site.inputs.map((name, i) => [name, { shape: node.inputs[i]!.shape, dtype: node.inputs[i]!.dtype }]),
    )
    const scratch = this.backend.kernelScratchBytes?.(node.attrs.name, inputs) ?? 0
    if (scratch > 0) this.ledger.add("temporaries", scratch)
    callKernel(fused, node, ins, outs)
    if (scratch > 0) this.ledger.remove("temporaries", scratch)
  }

  /** The backend's kernel for this routine region, if it has one and the region runs in one piece. */
  fusedKernel(node: Node<"region">): FusedKernel | undefined {
    const { routine: site, name, length, chunk } = node.attrs
    const kernel = site && kernelFor(this.backend.routines, name)
    return kernel && pieces(length, chunk).length === 1 ? { kernel, site } : undefined
  }

  castTo(al: Alloc, shape: readonly number[], dtype: DType): Alloc {
    const out = this.allocate({ shape, dtype }, "temporaries")
    this.backend.cast(al.buffer, out.buffer)
    return out
  }

  slice(al: Alloc, t: Tensor, axis: number, start: number, len: number): Alloc {
    const pieceShape = t.shape.map((d, i) => (i === axis ? len : d))
    const out = this.allocate({ shape: pieceShape, dtype: t.dtype }, "temporaries")
    const strides = contiguousStrides(t.shape)
    this.backend.copy(
      al.buffer,
      { shape: pieceShape, strides, offset: start * strides[axis]! },
      out.buffer,
      dense(pieceShape),
    )
    return out
  }
}

/** Runs a routine's fused kernel: the region's buffers and shapes handed over by name. */
function callKernel(
  { kernel, site }: FusedKernel,
  node: Node<"region">,
  ins: readonly Alloc[],
  outs: readonly Alloc[],
): void {
  const named = <T>(names: readonly string[], xs: readonly T[]) => Object.fromEntries(names.map((n, i) => [n, xs[i]!]))
  const shapes = (names: readonly string[], ts: readonly Tensor[]) =>
    named(
      names,
      ts.map((t) => t.shape),
    )
  kernel({
    inputs: named(
      site.inputs,
      ins.map((a) => a.buffer),
    ),
    outputs: named(
      site.outputs,
      outs.map((a) => a.buffer),
    ),
    shapes: { inputs: shapes(site.inputs, node.inputs), outputs: shapes(site.outputs, node.results) },
    attrs: site.attrs,
  })
}

/** The forward values the backward pass reads: what "saved activations" means. */
export function savedForBackward(outputs: readonly Tensor[], bound: ReadonlySet<Tensor> = new Set()): Set<Tensor> {
  const saved = new Set<Tensor>()
  for (const n of schedule(outputs, bound)) {
    if (n.phase === "backward") for (const i of n.inputs) if (i.node.phase === "forward") saved.add(i)
  }
  return saved
}

/** Which kind a top-level value counts as: a requested gradient, a value saved for backward, or a temporary. */
function kindRule(
  outputs: readonly Tensor[],
  bound: ReadonlySet<Tensor>,
  gradients: readonly Tensor[],
): (t: Tensor) => MemoryKind {
  const grads = new Set(gradients)
  const saved = savedForBackward(outputs, bound)
  return (t) => (grads.has(t) ? "gradients" : saved.has(t) ? "activations" : "temporaries")
}

/**
 * Runs `outputs` on `backend` with the given bound tensors (parameters, data). Plain and
 * synchronous: kernels only enqueue. Throws the typed errors of `errors.ts`.
 */
export function execute(
  backend: BackendImpl,
  outputs: readonly Tensor[],
  bindings: ReadonlyMap<Tensor, Binding>,
  opts: RunOptions = {},
): RunResult {
  const steps = executeSteps(backend, outputs, bindings, opts)
  for (;;) {
    const r = steps.next()
    if (r.done) return r.value
  }
}

/**
 * The executor's work as a generator: each `yield` is a point between two nodes (also inside
 * region pieces) and names the node about to run.
 */
export type Steps<A> = Generator<Node, A, void>

/** `execute` one node at a time: what `executeInterruptible` and the lockstep ranks (./ranks.ts) drive. */
export function* executeSteps(
  backend: BackendImpl,
  outputs: readonly Tensor[],
  bindings: ReadonlyMap<Tensor, Binding>,
  opts: RunOptions,
): Steps<RunResult> {
  const ledger = new MemoryLedger(opts.limit, backend.heldBytes, opts.hostLimit)
  const bound = new Map<Tensor, Alloc>()
  // region replay (./region-replay.ts): only where nothing is computed, so skipping a body skips no work
  const tap = computesNothing(backend) ? new RecordingLedger(ledger) : undefined
  const ex = new Executor(backend, tap ?? ledger, bound, opts.inPlace)
  if (tap !== undefined)
    ex.replay = new RegionReplay(tap, {
      retain: (a) => ex.retain(a),
      adopt: (f) => ex.adopt(f),
      describe: (a) => ({
        dtype: a.buffer.dtype,
        size: a.buffer.size,
        kind: a.kind,
        refs: a.refs,
        external: a.external,
      }),
    })
  const params = [...bindings.keys()]
  for (const [t, b] of bindings) {
    if (b.buffer.dtype !== t.dtype || b.buffer.size !== t.size) {
      throw new GraphError({
        message: `binding for ${t} holds ${b.buffer.size} ${b.buffer.dtype} elements; it needs ${t.size} ${t.dtype}`,
      })
    }
  }
  const args = params.map((t) => ex.bind(bindings.get(t)!))
  params.forEach((t, i) => bound.set(t, args[i]!))
  let outs: Alloc[]
  try {
    const gradients = opts.gradients ?? []
    const offload = opts.offload
    const moves =
      offload?.activations || offload?.gradients
        ? (nodes: readonly Node[]) => offloadSchedule(nodes, outputs, gradients, offload)
        : undefined
    outs = yield* ex.runGraph(outputs, params, args, kindRule(outputs, new Set(params), gradients), new Map(), moves)
  } catch (e) {
    ex.abandon()
    throw e
  }
  args.forEach((a) => ex.release(a))
  const memory = ledger.report()
  return { outputs: outs.map((a) => a.buffer), memory }
}

/** Thrown into a run whose AbortSignal fired: it gives back what it allocated and stops between two nodes. */
class Aborted extends Error {}

/**
 * `execute`, giving the event loop a turn whenever it has run for `sliceMs` (default 100 ms)
 * without one, so a signal handler or a timer runs even inside a long step. Once `signal` is
 * aborted the run stops before its next node, frees everything it allocated and rejects.
 * The same nodes run in the same order as `execute`: the results are identical.
 */
export async function executeInterruptible(
  backend: BackendImpl,
  outputs: readonly Tensor[],
  bindings: ReadonlyMap<Tensor, Binding>,
  opts: RunOptions & { readonly signal?: AbortSignal; readonly sliceMs?: number } = {},
): Promise<RunResult> {
  const steps = executeSteps(backend, outputs, bindings, opts)
  const slice = opts.sliceMs ?? 100
  let since = performance.now()
  let r = steps.next()
  while (!r.done) {
    if (performance.now() - since >= slice) {
      await new Promise<void>((resolve) => setTimeout(resolve, 0))
      since = performance.now()
    }
    r = opts.signal?.aborted ? steps.throw(new Aborted("the run was interrupted")) : steps.next()
  }
  return r.value
}

/**
 * `execute` as an Effect that interrupting its fiber stops between two nodes (Ctrl-C inside a
 * long step), having freed what it allocated. Typed errors are failures; anything else a defect.
 */
export const executeEffect = (
  backend: BackendImpl,
  outputs: readonly Tensor[],
  bindings: ReadonlyMap<Tensor, Binding>,
  opts: RunOptions = {},
): Effect.Effect<RunResult, ExecutionError> =>
  Effect.promise((signal) =>
    executeInterruptible(backend, outputs, bindings, { ...opts, signal }).then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    ),
  ).pipe(
    Effect.flatMap((r) =>
      "error" in r ? (isExecutionError(r.error) ? Effect.fail(r.error) : Effect.die(r.error)) : Effect.succeed(r.value),
    ),
  )

export interface PlanOptions extends RunOptions {
  /**
   * The backend to plan for: its fused routine names, its allocator's rounding and its kernels'
   * scratch (default: none fused, exact bytes, no scratch).
   */
  readonly for?: Pick<BackendImpl, "routines" | "heldBytes" | "kernelScratchBytes">
  /** Inputs that live in the host tier (offloaded optimizer state and gradients). */
  readonly hostInputs?: ReadonlySet<Tensor>
}

/** The memory plan: the same schedule on a backend that allocates nothing. */
export function plan(
  outputs: readonly Tensor[],
  inputs: ReadonlyMap<Tensor, MemoryKind>,
  opts: PlanOptions = {},
): MemoryReport {
  const counting = makeCountingBackend(
    Object.keys(opts.for?.routines ?? {}),
    opts.for?.heldBytes,
    opts.for?.kernelScratchBytes,
  )
  const bindings = new Map(
    [...inputs].map(([t, kind]) => {
      const host = opts.hostInputs?.has(t) ?? false
      const buffer = host ? counting.hostAlloc!(t.dtype, t.size) : counting.alloc(t.dtype, t.size)
      return [t, { buffer, kind }] as const
    }),
  )
  return execute(counting, outputs, bindings, opts).memory
}

export type ExecutionError = ShapeError | DTypeError | OutOfMemory | GraphError | BadConfig | CollectiveError

const isExecutionError = (e: unknown): e is ExecutionError =>
  e instanceof ShapeError ||
  e instanceof DTypeError ||
  e instanceof OutOfMemory ||
  e instanceof GraphError ||
  e instanceof BadConfig ||
  e instanceof CollectiveError

/** Runs a synchronous step, turning our typed errors into typed failures (anything else is a defect). */
export const attempt = <A>(f: () => A): Effect.Effect<A, ExecutionError> =>
  Effect.suspend(() => {
    try {
      return Effect.succeed(f())
    } catch (e) {
      return isExecutionError(e) ? Effect.fail(e) : Effect.die(e)
    }
  })

export type Feed = HostArray | { readonly data: HostArray; readonly kind: MemoryKind }

export interface Evaluated {
  readonly values: HostArray[]
  readonly memory: MemoryReport
}

/**
 * Uploads `feeds`, runs `outputs` on the Backend service, reads the outputs back and frees
 * everything. The simplest way to run a graph; training loops keep buffers on the device.
 */
export function evaluate(
  outputs: readonly Tensor[],
  feeds: ReadonlyMap<Tensor, Feed>,
  opts: RunOptions = {},
): Effect.Effect<Evaluated, ExecutionError, Backend> {
  return Effect.gen(function* () {
    const backend = yield* Backend
    const bindings = new Map<Tensor, Binding>()
    const result = yield* attempt(() => {
      checkFeeds(feeds)
      for (const [t, feed] of feeds) {
        const { data, kind } = feedParts(t, feed)
        const buffer = backend.alloc(t.dtype, t.size)
        backend.write(buffer, data)
        bindings.set(t, { buffer, kind })
      }
      return execute(backend, outputs, bindings, opts)
    }).pipe(
      Effect.ensuring(
        Effect.sync(() => {
          for (const b of bindings.values()) backend.free(b.buffer)
        }),
      ),
    )
    const values: HostArray[] = []
    for (const b of result.outputs) values.push(yield* Effect.promise(() => backend.read(b)))
    // An output may be a bound input itself (or appear twice): free each buffer once.
    const inputs = new Set([...bindings.values()].map((b) => b.buffer))
    for (const b of new Set(result.outputs)) if (!inputs.has(b)) backend.free(b)
    return { values, memory: result.memory }
  })
}
