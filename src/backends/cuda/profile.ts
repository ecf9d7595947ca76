/**
 * Where the GPU time of a run goes. While profiling is on, every kernel call of the backend and
 * every fused routine is bracketed by two CUDA timing events on the stream; `stop()` waits for
 * the GPU and sums, per operation ("matmul", "binary.mul", "attention.vjp", ...), the calls and
 * the milliseconds between each pair. The time between one operation's end and the next one's
 * start is the GPU waiting for the host to enqueue work: reported as "(gpu idle)".
 */
import type { BackendImpl } from "../../core/backend.js"
import { mapKernels } from "../../core/routines/registry.js"
import type { NativeDevice } from "./native.js"

export interface ProfileEntry {
  readonly name: string
  readonly calls: number
  readonly ms: number
}

export interface CudaProfiler {
  start(): void
  /** Waits for the GPU (blocking), then the entries by time, largest first. */
  stop(): ProfileEntry[]
}

const START = 0 // the mark before an operation; ids from 1 name what ends at the next mark

/** The backend with its kernels timed while `profiler.start()` … `stop()` runs. */
export function withProfiler<B extends BackendImpl>(
  backend: B,
  dev: NativeDevice,
): { backend: B; profiler: CudaProfiler } {
  let on = false
  const ids = new Map<string, number>()
  const names = ["(gpu idle)"]
  const idOf = (name: string) => {
    let id = ids.get(name)
    if (id === undefined) {
      id = names.length
      names.push(name)
      ids.set(name, id)
    }
    return id
  }
  function timed<A extends unknown[], R>(f: (...args: A) => R, name: (args: NoInfer<A>) => string): (...args: A) => R {
    return (...args) => {
      if (!on) return f(...args)
      dev.profileMark(START)
      const r = f(...args)
      dev.profileMark(idOf(name(args)))
      return r
    }
  }
  const b = backend as BackendImpl
  const fixed = (n: string) => () => n
  const wrapped: BackendImpl = {
    ...b,
    write: timed(b.write.bind(b), fixed("write")),
    fill: timed(b.fill.bind(b), fixed("fill")),
    iota: timed(b.iota.bind(b), fixed("iota")),
    unary: timed(b.unary.bind(b), ([op]) => `unary.${op}`),
    binary: timed(b.binary.bind(b), ([op]) => `binary.${op}`),
    where: timed(b.where.bind(b), fixed("where")),
    cast: timed(b.cast.bind(b), ([x, out]) => `cast ${x.dtype}→${out.dtype}`),
    copy: timed(b.copy.bind(b), fixed("copy")),
    reduce: timed(b.reduce.bind(b), ([op]) => `reduce.${op}`),
    matmul: timed(
      b.matmul.bind(b),
      ([a, , out, spec]) => `matmul ${a.dtype}→${out.dtype}${spec.accumulate ? " +=" : ""}`,
    ),
    gather: timed(b.gather.bind(b), fixed("gather")),
    scatterAdd: timed(b.scatterAdd.bind(b), fixed("scatterAdd")),
    takeAlong: timed(b.takeAlong.bind(b), fixed("takeAlong")),
    putAlong: timed(b.putAlong.bind(b), fixed("putAlong")),
    ...(b.routines ? { routines: mapKernels(b.routines, (f, n) => timed(f, fixed(n))) } : {}),
  }
  const profiler: CudaProfiler = {
    start() {
      dev.profileCollect() // drop marks from before
      on = true
    },
    stop() {
      on = false
      const marks = dev.profileCollect()
      const totals = new Map<number, { calls: number; ms: number }>()
      for (let i = 0; i < marks.length; i += 2) {
        const id = marks[i]!,
          ms = marks[i + 1]!
        if (i === 0) continue // the first mark has nothing before it
        const t = totals.get(id) ?? { calls: 0, ms: 0 }
        totals.set(id, { calls: t.calls + (id === START ? 0 : 1), ms: t.ms + ms })
      }
      return [...totals].map(([id, t]) => ({ name: names[id]!, ...t })).sort((x, y) => y.ms - x.ms)
    },
  }
  return { backend: { ...backend, ...wrapped }, profiler }
}
