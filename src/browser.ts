/**
 * miniseq for browsers (the `browser` condition of `miniseq`'s exports, which bundlers pick):
 * everything in `portable.ts`, without the Node-only file I/O of `index.ts`. Train on WebGPU with
 * `webgpuBackendLayer` from `miniseq/webgpu` (its browser entry takes the device from
 * `navigator.gpu`) or on the CPU with `fastCpuBackendLayer` (WebAssembly SIMD) or `cpuBackendLayer`.
 */
export * from "./portable.js"

// The lab (examples/browser) drives a run step by step — to score held-out text and sample text
// while it trains, and to stop it between steps — and replays a step's schedule to draw its live
// bytes. These are the very pieces `train` and the planner are made of.
export { largestFitting } from "./models/planner.js"
export { adamwInputs, fusedRoutines, gradientInputs, inputKinds } from "./models/step.js"
export { gradientPass, heldOutLoss, optimizerPass, type Trainer } from "./models/train-passes.js"
export {
  freeState,
  prepareState,
  readParameters,
  type RunIdentity,
  type TrainState,
} from "./models/train-state.js"
export { sameKernel } from "./core/routines/registry.js"
