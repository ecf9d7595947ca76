/**
 * A backend that allocates nothing and computes nothing. Running a graph on it walks the exact
 * schedule a real backend would run and so yields the exact memory plan, in milliseconds.
 * Give it the names of the fused routines of the backend being planned for, its allocator's
 * rounding (`heldBytes`) and its kernels' scratch (`kernelScratchBytes`).
 */
import { hostArray } from "./dtype.js"
import type { BackendImpl, Buffer } from "./backend.js"
import { sameKernel } from "./routines/registry.js"

/** The backends made here: they compute nothing, so a run on one may replay region bodies (./region-replay.ts). */
const countingOnly = new WeakSet<BackendImpl>()
export const computesNothing = (b: BackendImpl): boolean => countingOnly.has(b)

export function makeCountingBackend(
  fused: Iterable<string> = [],
  heldBytes?: (bytes: number) => number,
  kernelScratchBytes?: BackendImpl["kernelScratchBytes"],
): BackendImpl {
  const nothing = () => {}
  const backend: BackendImpl = {
    name: "counting",
    ...(heldBytes && { heldBytes }),
    ...(kernelScratchBytes && { kernelScratchBytes }),
    dtypes: ["float32", "float64", "bfloat16", "int32"],
    // Plan for the backend you will run: its fused routines change what is allocated.
    routines: sameKernel(fused, nothing),
    alloc: (dtype, size): Buffer => ({ dtype, size }),
    hostAlloc: (dtype, size): Buffer => ({ dtype, size, tier: "host" }),
    free: nothing,
    write: nothing,
    read: async (b) => hostArray(b.dtype, 0),
    fill: nothing,
    iota: nothing,
    unary: nothing,
    binary: nothing,
    where: nothing,
    cast: nothing,
    copy: nothing,
    reduce: nothing,
    matmul: nothing,
    gather: nothing,
    scatterAdd: nothing,
    takeAlong: nothing,
    putAlong: nothing,
    // One rank of N: the exchange's buffers are the executor's, counted like any other.
    allToAll: nothing,
    allReduce: nothing,
  }
  countingOnly.add(backend)
  return backend
}
