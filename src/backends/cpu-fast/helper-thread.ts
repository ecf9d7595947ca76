/**
 * The helper thread's program and how to start it with a `worker_threads`-style Worker: the
 * module's `helperLoop` over the shared WebAssembly memory. This file imports nothing of Node, so
 * the browser build can load it; `autoHelper` finds Node's Worker at run time (none in a browser,
 * where a Worker needs a script file of its own: the browser build runs one thread).
 */
import { attentionTask } from "./attention-task.js"
import { runChunk, serveJob } from "./chunks.js"
import { helperLoop, type StartHelper, scratchWords } from "./wasm-gemm.js"

// The worker's whole program: instantiate the module over the memory, then serve jobs. helperLoop,
// attentionTask and ./chunks.ts's functions are passed as source so the worker needs no file of its own (nor a loader for
// TypeScript). __name: what a bundler that keeps function names may have written into that source.
const program = `
const { workerData } = require("node:worker_threads")
const { memory, bytes, nativeGemm } = workerData
const { exports } = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } })
const native = nativeGemm ? require(nativeGemm).bind(new Float32Array(memory.buffer)) : {}
const gemm = native.gemm ?? exports.gemm
const expaffine = native.expaffine ?? exports.expaffine
const ctl = new Int32Array(memory.buffer, 0, 64)
const __name = (f) => f
${scratchWords}
const attention = native.attention ? (f, g, w) => native.attention(w) : ${attentionTask.toString()}
const serveJob = ${serveJob.toString()}
const runChunk = ${runChunk.toString()}
;(${helperLoop.toString()})({ gemm, expaffine, attention }, ctl, memory, serveJob, runChunk,
  { ap: AP[1], bp: BP[1], t: T[1], spinMs: SPIN_MS })
`

/** The part of Node's Worker class used here. */
export type WorkerClass = new (
  source: string,
  opts: { eval: true; workerData: unknown },
) => {
  unref(): void
}

/** Starts helpers with `Worker`; a helper never keeps the process alive (unref), and dies with it. */
export const helperWith =
  (Worker: WorkerClass): StartHelper =>
  (memory, bytes, nativeGemm) => {
    new Worker(program, { eval: true, workerData: { memory, bytes, nativeGemm } }).unref()
  }

type Process = { getBuiltinModule?: (id: string) => { Worker?: WorkerClass } | undefined }

/** Node's helper when this runs in Node (20.16 or later), else undefined. */
export function autoHelper(): StartHelper | undefined {
  const Worker = (globalThis as { process?: Process }).process?.getBuiltinModule?.("node:worker_threads")?.Worker
  return Worker === undefined ? undefined : helperWith(Worker)
}
