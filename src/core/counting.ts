/**
 * A backend that allocates nothing and computes nothing. Running a graph on it walks the exact
 * schedule a real backend would run and so yields the exact memory plan, in milliseconds.
 * Give it the names of the fused routines of the backend being planned for, its allocator's
 * rounding (`heldBytes`) and its kernels' scratch (`kernelScratchBytes`).
 */
import { hostArray } from "./dtype.js"
import type { BackendImpl, Buffer } from "./backend.js"
import { sameKernel } from "./routines/registry.js"

export function makeCountingBackend(
  fused: Iterable<string> = [],
  heldBytes?: (bytes: number) => number,
  kernelScratchBytes?: BackendImpl["kernelScratchBytes"],
): BackendImpl {
  const nothing = () => {}
  return {
    name: "counting",
    ...(heldBytes && { heldBytes }),
    ...(kernelScratchBytes && { kernelScratchBytes }),
    dtypes: ["float32", "float64", "bfloat16", "int32"],
    // Plan for the backend you will run: its fused routines change what is allocated.
    routines: sameKernel(fused, nothing),
    alloc: (dtype, size): Buffer => ({ dtype, size }),
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
  }
}
