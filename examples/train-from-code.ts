// Training from code with the public API, as a project that depends on miniseq would:
// a preset model, a tokenizer, seeded batches, `train` on the CPU backend with a step callback,
// the planner's prediction beside the measured peak, and the final weights saved as safetensors.
//   npx tsx examples/train-from-code.ts [corpus.txt]
import { Effect } from "effect"
import {
  byteTokenizer,
  cpuBackendLayer,
  loadCorpus,
  makeBatches,
  makeCpuBackend,
  parameterShapes,
  planStep,
  presets,
  type StepRecord,
  train,
  type TrainOptions,
  trainValSplit,
  writeSafetensorsAtomic,
} from "miniseq"

const text = loadCorpus(process.argv[2]) // default: the shipped Moby-Dick
const split = trainValSplit(byteTokenizer.encode(text))
const opts: TrainOptions = {
  model: presets.tiny,
  mode: "mst",
  batch: 4,
  seq: 64,
  steps: 20,
  lr: 3e-3,
  warmup: 5,
  seed: 1,
}
const batches = makeBatches({ tokens: split.train, batch: opts.batch, seq: opts.seq, seed: opts.seed })
const validation = { batches: makeBatches({ tokens: split.val, batch: opts.batch, seq: opts.seq, seed: 2 }), count: 4 }

const onStep = (r: StepRecord) => {
  if (r.step % 5 === 0) console.log(`step ${r.step}: loss ${r.loss.toFixed(4)}, peak ${r.peak} bytes`)
}
const result = await Effect.runPromise(
  train({ ...opts, validation }, batches, onStep).pipe(Effect.provide(cpuBackendLayer())),
)

const planned = planStep(opts.model, opts.batch, opts.seq, { mode: opts.mode }, makeCpuBackend())
console.log(
  `held-out loss ${result.validationLoss?.toFixed(4)}; measured peak ${Math.max(...result.records.map((r) => r.peak))} bytes, planned ${planned.peak}`,
)

const shapes = parameterShapes(opts.model)
const tensors = Object.fromEntries(
  Object.entries(result.parameters).map(([name, data]) => [
    name,
    { dtype: "float32" as const, shape: shapes[name]!, data },
  ]),
)
await writeSafetensorsAtomic("model.safetensors", tensors, { format: "pt" })
console.log(`wrote model.safetensors (${Object.keys(tensors).length} tensors, Hugging Face names)`)
