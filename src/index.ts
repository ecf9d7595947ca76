/**
 * miniseq for Node: everything in `portable.ts` (graphs, autodiff, regions, executor, planner,
 * the Llama model, configs, tokenizers, `train`, the CPU backend) plus reading and writing files:
 * safetensors, training checkpoints, Hugging Face model folders and tokenizer files, and text corpora. The WebGPU and CUDA backends are separate
 * entry points, `miniseq/webgpu` and `miniseq/cuda`, so importing `miniseq` loads neither Dawn nor
 * the native addon.
 */
export * from "./portable.js"
export { readSafetensors, writeSafetensorsAtomic } from "./models/safetensors.js"
export { hfConfigJson, latestCheckpoint, loadCheckpoint, saveCheckpoint } from "./models/checkpoint.js"
export {
  loadPretrained,
  type Pretrained,
  readPretrainedConfig,
  readTokenizerFile,
  type TokenizerFile,
} from "./models/pretrained.js"
export { DEFAULT_CORPUS_PATH, loadCorpus } from "./models/corpus.js"
export { nodeHelper } from "./backends/cpu-fast/node-threads.js"
