/** miniseq's core: build graphs, differentiate them, chunk and checkpoint them, run them. */
export * from "./dtype.js"
export * from "./errors.js"
export { input, type Node, type Phase, Tensor, type TensorType } from "./graph.js"
export * as ops from "./ops.js"
export { grad, valueAndGrad, vjp } from "./autodiff.js"
export { checkpoint, chunked, type ChunkedOptions, routine } from "./regions.js"
export {
  attempt,
  type Binding,
  evaluate,
  execute,
  type Feed,
  plan,
  savedForBackward,
  type RunOptions,
  type RunResult,
} from "./executor.js"
export {
  makeRankBackends,
  type RankBackend,
  type RankProgram,
  type RankResult,
  runRanks,
} from "./ranks.js"
export { type ByKind, type MemoryKind, memoryKinds, type MemoryReport } from "./memory.js"
export * from "./routines/basic.js"
export * from "./routines/cross-entropy.js"
export * from "./routines/attention.js"
export { normal, randomFill, rng } from "./random.js"
