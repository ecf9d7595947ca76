/**
 * The part of miniseq's public API that runs anywhere JavaScript does (Node and browsers): graphs,
 * autodiff, regions, the executor and planner, the Llama model, configs, tokenizers, batching,
 * `train`, the safetensors format in memory, and the CPU backend. `index.ts` (Node) adds file I/O;
 * `browser.ts` is exactly this.
 */
export * from "./core/index.js"
export {
  Backend,
  type AllToAllSpec,
  type BackendImpl,
  type BinaryOp,
  type Buffer,
  contiguousStrides,
  type KernelInputTypes,
  type MatmulSpec,
  numel,
  type ReduceOp,
  type UnaryOp,
  type View,
} from "./core/backend.js"
export { checkedBackend } from "./core/checked-backend.js"
export { type RoutineKernel, type RoutineKernels, type RoutineName, routineNames } from "./core/routines/registry.js"
export { makeCountingBackend } from "./core/counting.js"
export {
  cpuBackendLayer,
  type CpuBackend,
  type CpuBuffer,
  type CpuData,
  type CpuMemory,
  makeCpuBackend,
} from "./backends/cpu/index.js"
export {
  type FastCpuBackend,
  type FastCpuOptions,
  fastCpuBackendLayer,
  makeFastCpuBackend,
} from "./backends/cpu-fast/index.js"

// Models: configs and presets, the Llama graph, the optimizer, one training step.
export {
  type Architecture,
  architecture,
  decodeConfig,
  decodeConfigSync,
  headDim,
  LlamaConfig,
  type ModelType,
  modelTypes,
  preset,
  type PresetName,
  presetNames,
  presets,
  ropeInvFreq,
  type RopeScaling,
  ropeScaling,
} from "./models/config.js"
export {
  autoChunks,
  type ForwardGraph,
  type ForwardOptions,
  type LayerCache,
  llamaForward,
  type LlamaGraph,
  llamaLoss,
  minPiece,
  type Mode,
  type ModelOptions,
  modes,
  parameterCount,
  parameterInputs,
  parameterShapes,
  vectorInit,
} from "./models/llama.js"
export {
  type AdamWGraph,
  adamwGraph,
  type AdamWOptions,
  adamwOutputs,
  defaultAdamW,
  learningRate,
  type Precision,
  type PrecisionName,
  precisions,
  type Schedule,
} from "./models/optimizer.js"
export { type Offload, type StepGraphs, type StepOptions, stepGraphs } from "./models/step.js"
export { leastOffloadThatFits, offloadChoices, planStep, type StepPlan, suggestChunks } from "./models/planner.js"
export {
  type GlobalBatch,
  globalCount,
  longestSequenceOnRanks,
  planRankStep,
  rankFeeds,
} from "./models/ulysses.js"

// Data: tokenizers, train/validation split, seeded batches.
export {
  bpeTokenizer,
  byteTokenizer,
  checkVocabulary,
  corpusIds,
  hfTokenizer,
  makeTokenizer,
  promptIds,
  type Tokenizer,
  type TokenizerName,
} from "./models/tokenizer.js"
export { type Batch, type Batches, type BatchOptions, makeBatches, type Split, trainValSplit } from "./models/data.js"

// Training.
export { initialParameters, type StepRecord, train, type TrainOptions, type TrainResult } from "./models/train.js"
export type { HeldOut } from "./models/train-passes.js"

// Generation: sampling rules and the KV-cache loop.
export {
  argmax,
  checkSampling,
  drawFrom,
  type GenerateOptions,
  type Generated,
  generate,
  nextTokenDistribution,
  type SamplingOptions,
} from "./models/generate.js"

// The safetensors format, in memory (reading and writing files: `readSafetensors`, `writeSafetensorsAtomic`, Node only).
export {
  checkTensors,
  decodeSafetensors,
  encodeSafetensors,
  type HalfTag,
  type Safetensors,
  type StoredTensor,
  widenHalf,
} from "./models/safetensors.js"
export type { CheckpointState } from "./models/checkpoint.js"
