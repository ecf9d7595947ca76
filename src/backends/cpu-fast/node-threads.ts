/**
 * The fast CPU backend's helper thread in Node: a `worker_threads` Worker that runs the GEMM's
 * `helperLoop` over the shared WebAssembly memory. Node only (browsers would need a Worker script
 * and cross-origin isolation for shared memory): the browser build uses one thread.
 */
import { Worker } from "node:worker_threads"
import { attentionTask } from "./attention-task.js"
import { controlWords, helperLoop, type StartHelper } from "./wasm-gemm.js"

// The worker's whole program: instantiate the module over the memory, then serve jobs. helperLoop
// and attentionTask are passed as source so the worker needs no file of its own (nor a loader for
// TypeScript). __name: what a bundler that keeps function names may have written into that source.
const program = `
const { workerData } = require("node:worker_threads")
const { memory, bytes } = workerData
const { exports } = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } })
const ctl = new Int32Array(memory.buffer, 0, 64)
const __name = (f) => f
${controlWords}
const attentionTask = ${attentionTask.toString()}
;(${helperLoop.toString()})(exports.gemm, exports.expaffine, ctl, memory, attentionTask)
`

/** Starts the helper; it never keeps the process alive (unref), and dies with it. */
export const nodeHelper: StartHelper = (memory, bytes) => {
  const worker = new Worker(program, { eval: true, workerData: { memory, bytes } })
  worker.unref()
}
