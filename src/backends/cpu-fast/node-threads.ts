/**
 * The fast CPU backend's helper thread in Node: a `worker_threads` Worker that runs the GEMM's
 * `helperLoop` over the shared WebAssembly memory (./helper-thread.ts). Node only (browsers would
 * need a Worker script and cross-origin isolation for shared memory): the browser build uses one
 * thread. `makeFastCpuBackend` starts it by itself in Node; this export names it explicitly.
 */
import { Worker } from "node:worker_threads"
import { helperWith } from "./helper-thread.js"
import type { StartHelper } from "./wasm-gemm.js"

/** Starts the helper; it never keeps the process alive (unref), and dies with it. */
export const nodeHelper: StartHelper = helperWith(Worker)
