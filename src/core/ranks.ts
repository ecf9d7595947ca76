/**
 * N ranks of an SPMD program in one process: how a sharded graph is checked against its
 * unsharded twin without several devices.
 *
 * Every rank has a backend of its own (its own live buffers and argument checks) over one shared
 * base backend, whose memory stands in for the N devices and whose `copy` and `add` kernels stand
 * in for the links between them. The collectives meet in a communicator: a rank's call deposits
 * its buffers; the last rank's call performs the exchange and writes every rank's output. A
 * rank's kernels that come after a collective whose round is not complete wait in that rank's
 * queue (kernels only enqueue), so nothing reads an output before the round completes.
 *
 * `runRanks` runs the graph on every rank in lockstep, one node at a time, and refuses ranks that
 * diverge: a different node at the same step, or a rank that finishes early.
 */
import type { AllToAllSpec, BackendImpl, Buffer } from "./backend.js"
import { allToAllShape, contiguousStrides, dense } from "./backend.js"
import { checkedBackend } from "./checked-backend.js"
import type { HostArray } from "./dtype.js"
import { BadConfig, CollectiveError, fmtShape } from "./errors.js"
import { type Binding, executeSteps, type Feed, type RunOptions, type RunResult } from "./executor.js"
import { checkFeeds, feedParts } from "./feeds.js"
import type { Node, Tensor } from "./graph.js"
import { LiveBuffers, type LiveMemory } from "./live-buffers.js"
import type { MemoryReport } from "./memory.js"
import type { RegionAttrs } from "./region-types.js"
import { mapKernels } from "./routines/registry.js"

/** One rank's kernels, run in order; those after a collective whose round is open wait. */
class RankQueue {
  private readonly waiting: (() => void)[] = []
  private blocked = false
  private draining = false

  enqueue(work: () => void): void {
    this.waiting.push(work)
    this.drain()
  }

  /** Hold back this rank's work until `resume`: its collective awaits the other ranks. */
  block(): void {
    this.blocked = true
  }

  resume(): void {
    this.blocked = false
    this.drain()
  }

  get idle(): boolean {
    return !this.blocked && this.waiting.length === 0
  }

  private drain(): void {
    // A round completed by this rank's own call resumes it from inside the loop below: no re-entry.
    if (this.draining) return
    this.draining = true
    try {
      while (!this.blocked && this.waiting.length > 0) this.waiting.shift()!()
    } finally {
      this.draining = false
    }
  }
}

type Call =
  | { readonly op: "allToAll"; readonly x: Buffer; readonly out: Buffer; readonly spec: AllToAllSpec }
  | { readonly op: "allReduce"; readonly x: Buffer; readonly out: Buffer }

const describeCall = (c: Call): string =>
  c.op === "allToAll"
    ? `allToAll of ${fmtShape(c.spec.shape)} ${c.x.dtype} (split ${c.spec.splitAxis}, concat ${c.spec.concatAxis})`
    : `allReduce of ${c.x.size} ${c.x.dtype} elements`

/** Where the N ranks' collectives meet: one round at a time, each rank's k-th call in round k. */
class Communicator {
  readonly queues: RankQueue[]
  private readonly calls = new Map<number, Call>()
  round = 0

  constructor(
    readonly size: number,
    readonly base: BackendImpl,
  ) {
    this.queues = Array.from({ length: size }, () => new RankQueue())
  }

  deposit(rank: number, call: Call): void {
    if (call.op === "allToAll" && call.spec.ranks !== this.size)
      throw new CollectiveError({
        ranks: [rank],
        step: this.round,
        message: `rank ${rank}: allToAll was built for ${call.spec.ranks} ranks but runs on ${this.size}; build the graph with ranks: ${this.size}`,
      })
    const [other, first] = [...this.calls][0] ?? []
    if (first !== undefined && describeCall(first) !== describeCall(call))
      throw new CollectiveError({
        ranks: [other!, rank],
        step: this.round,
        message: `collective round ${this.round}: rank ${other} called ${describeCall(first)} but rank ${rank} called ${describeCall(call)}; every rank must make the same collective calls on buffers of the same shape`,
      })
    this.calls.set(rank, call)
    this.queues[rank]!.block()
    if (this.calls.size < this.size) return
    const calls = Array.from({ length: this.size }, (_, r) => this.calls.get(r)!)
    this.calls.clear()
    this.round++
    if (calls[0]!.op === "allToAll") this.allToAll(calls as Extract<Call, { op: "allToAll" }>[])
    else this.allReduce(calls)
    this.queues.forEach((q) => q.resume())
  }

  /** Rank i's part j lands in rank j's block i: one strided copy per pair. */
  private allToAll(calls: readonly Extract<Call, { op: "allToAll" }>[]): void {
    const { shape, splitAxis, concatAxis, ranks } = calls[0]!.spec
    const part = shape.map((d, i) => (i === splitAxis ? d / ranks : d))
    const inStrides = contiguousStrides(shape)
    const outStrides = contiguousStrides(allToAllShape(calls[0]!.spec))
    calls.forEach((from, i) =>
      calls.forEach((to, j) =>
        this.base.copy(
          from.x,
          { shape: part, strides: inStrides, offset: j * part[splitAxis]! * inStrides[splitAxis]! },
          to.out,
          { shape: part, strides: outStrides, offset: i * part[concatAxis]! * outStrides[concatAxis]! },
        ),
      ),
    )
  }

  /** Summed once in rank order into rank 0's output, then copied: every rank gets the same bits. */
  private allReduce(calls: readonly Call[]): void {
    const [first, ...rest] = calls
    const all = dense([first!.x.size])
    this.base.copy(first!.x, all, first!.out, all)
    for (const c of rest) this.base.binary("add", first!.out, c.x, first!.out)
    for (const c of rest) this.base.copy(first!.out, all, c.out, all)
  }
}

/** One rank's backend: the base's kernels through the rank's queue, and the collectives. */
export interface RankBackend extends BackendImpl {
  readonly rank: number
  readonly ranks: number
  /** The bytes this rank allocated: live now and at the peak (independent of the executor's count). */
  memory(): LiveMemory
  /** No kernel of this rank waits for a collective round. */
  readonly idle: boolean
}

type Enqueued = "fill" | "iota" | "unary" | "binary" | "where" | "cast" | "copy" | "reduce" | "matmul"
type EnqueuedIndex = "gather" | "scatterAdd" | "takeAlong" | "putAlong"
const enqueued: readonly (Enqueued | EnqueuedIndex)[] = [
  "fill",
  "iota",
  "unary",
  "binary",
  "where",
  "cast",
  "copy",
  "reduce",
  "matmul",
  "gather",
  "scatterAdd",
  "takeAlong",
  "putAlong",
]

function rankKernels(base: BackendImpl, comm: Communicator, rank: number): BackendImpl {
  const queue = comm.queues[rank]!
  const later =
    (f: (...args: never[]) => void) =>
    (...args: never[]) =>
      queue.enqueue(() => f(...args))
  const kernels = Object.fromEntries(enqueued.map((k) => [k, later(base[k].bind(base) as (...a: never[]) => void)]))
  return {
    ...(kernels as unknown as Pick<BackendImpl, Enqueued | EnqueuedIndex>),
    name: `${base.name} rank ${rank} of ${comm.size}`,
    dtypes: base.dtypes,
    ...(base.heldBytes && { heldBytes: base.heldBytes.bind(base) }),
    ...(base.kernelScratchBytes && { kernelScratchBytes: base.kernelScratchBytes.bind(base) }),
    ...(base.routines && { routines: mapKernels(base.routines, (k) => (call) => queue.enqueue(() => k(call))) }),
    ...(base.randomNormal && {
      randomNormal: (out: Buffer, seed: number, stream: number, std: number) =>
        queue.enqueue(() => base.randomNormal!(out, seed, stream, std)),
    }),
    ...(base.hostAlloc && { hostAlloc: base.hostAlloc.bind(base) }),
    alloc: (dtype, size) => base.alloc(dtype, size),
    free: (b) => queue.enqueue(() => base.free(b)),
    write: (b, data) => {
      const copy = data.slice() // the caller may reuse its array before the write runs
      queue.enqueue(() => base.write(b, copy))
    },
    read: async (b) => {
      if (!queue.idle)
        throw new CollectiveError({
          ranks: [rank],
          step: comm.round,
          message: `rank ${rank}: a buffer was read while the rank waits for collective round ${comm.round}; every rank must reach the same collective before any result is read`,
        })
      return base.read(b)
    },
    allToAll: (x, out, spec) => queue.enqueue(() => comm.deposit(rank, { op: "allToAll", x, out, spec })),
    allReduce: (x, out) => queue.enqueue(() => comm.deposit(rank, { op: "allReduce", x, out })),
  }
}

/**
 * `n` rank backends over one `base` backend (whose memory they share) and one communicator.
 * Each checks its calls like any backend and refuses another rank's buffers.
 */
export function makeRankBackends(base: BackendImpl, n: number): RankBackend[] {
  if (!(Number.isSafeInteger(n) && n >= 1))
    throw new BadConfig({ field: "ranks", message: `ranks must be a whole number ≥ 1, got ${n}` })
  const comm = new Communicator(n, base)
  return Array.from({ length: n }, (_, rank) => {
    const buffers = new LiveBuffers()
    const checked = checkedBackend(rankKernels(base, comm, rank), buffers)
    const queue = comm.queues[rank]!
    const rb = Object.assign(checked, { rank, ranks: n, memory: () => buffers.memory() })
    // A getter (Object.assign would copy its value once): idle changes as rounds complete.
    return Object.defineProperty(rb, "idle", { get: () => queue.idle }) as RankBackend
  })
}

/** What one rank runs: the same graph on every rank (built once or once per rank), its own data. */
export interface RankProgram {
  readonly outputs: readonly Tensor[]
  readonly feeds: ReadonlyMap<Tensor, Feed>
  readonly options?: RunOptions
}

/** One rank's run: its outputs read back and its memory, as counted and as allocated. */
export interface RankResult {
  /** The outputs, read back. */
  readonly values: HostArray[]
  /** The executor's count, as for any run. */
  readonly memory: MemoryReport
  /** What the rank's backend itself saw allocated. */
  readonly allocated: LiveMemory
}

/** What must agree between ranks at a step: the op, its attributes and its operands' types. */
function signature(n: Node): string {
  const types = (ts: readonly Tensor[]) => ts.map((t) => `${fmtShape(t.shape)} ${t.dtype}`).join(", ")
  const a = n.attrs as unknown
  const attrs =
    n.op === "region"
      ? (({ name, length, chunk }: RegionAttrs) => `${name} length ${length} chunk ${chunk}`)(a as RegionAttrs)
      : JSON.stringify(a)
  return `${n.op} ${attrs} (${types(n.inputs)}) → (${types(n.results)})`
}

const diverged = (rank: number, step: number, expected: string, got: string): CollectiveError =>
  new CollectiveError({
    ranks: [rank],
    step,
    message: `rank ${rank} diverged from rank 0 at step ${step}: rank 0 ${expected} but rank ${rank} ${got}; every rank must run the same graph, only its data may differ`,
  })

/** Drives the ranks' runs one node each per step, checking they run the same nodes. */
function lockstep(runs: readonly Generator<Node, RunResult, void>[]): RunResult[] {
  for (let step = 0; ; step++) {
    const at = runs.map((r) => r.next())
    const lead = at[0]!
    const what = (r: IteratorResult<Node, RunResult>) => (r.done ? "finished" : `runs ${signature(r.value)}`)
    at.forEach((r, rank) => {
      if (rank > 0 && (r.done !== lead.done || (!r.done && signature(r.value) !== signature(lead.value as Node))))
        throw diverged(rank, step, what(lead), what(r))
    })
    if (lead.done) return at.map((r) => r.value as RunResult)
  }
}

/**
 * Runs `program(rank)` on each of `n` ranks over `base` in lockstep and reads the outputs back.
 * Throws a CollectiveError when ranks diverge, and the executor's typed errors otherwise.
 */
export async function runRanks(
  base: BackendImpl,
  n: number,
  program: (rank: number) => RankProgram,
): Promise<RankResult[]> {
  const backends = makeRankBackends(base, n)
  const programs = backends.map((_, rank) => program(rank))
  const bindings = programs.map(() => new Map<Tensor, Binding>())
  const runs: Generator<Node, RunResult, void>[] = []
  const freeBindings = () => bindings.forEach((bs, r) => bs.forEach((b) => backends[r]!.free(b.buffer)))
  let results: RunResult[]
  try {
    programs.forEach(({ feeds }, r) => {
      checkFeeds(feeds)
      for (const [t, feed] of feeds) {
        const { data, kind } = feedParts(t, feed)
        const buffer = backends[r]!.alloc(t.dtype, t.size)
        backends[r]!.write(buffer, data)
        bindings[r]!.set(t, { buffer, kind })
      }
    })
    programs.forEach((p, r) => runs.push(executeSteps(backends[r]!, p.outputs, bindings[r]!, p.options ?? {})))
    results = lockstep(runs)
  } catch (e) {
    // Stop the other ranks' runs, so each gives back what it allocated.
    for (const run of runs)
      try {
        run.throw(e)
      } catch {}
    freeBindings()
    throw e
  }
  const waiting = backends.find((b) => !b.idle)
  if (waiting !== undefined)
    throw new CollectiveError({
      ranks: [waiting.rank],
      message: `rank ${waiting.rank} still waits for a collective round after the run; some rank made fewer collective calls`,
    })
  const out: RankResult[] = []
  for (const [r, result] of results.entries()) {
    const b = backends[r]!
    const values: HostArray[] = []
    for (const buf of result.outputs) values.push(await b.read(buf))
    const inputs = new Set([...bindings[r]!.values()].map((x) => x.buffer))
    for (const buf of new Set(result.outputs)) if (!inputs.has(buf)) b.free(buf)
    out.push({ values, memory: result.memory, allocated: b.memory() })
  }
  freeBindings()
  return out
}
