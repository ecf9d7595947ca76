// A behaviour snapshot for refactors: the exact plans (bytes by kind) of many training steps and the
// exact losses and final weights (SHA-256) of short CPU runs, as JSON on stdout. Run it before and after
// a change that must not change behaviour, and diff the two outputs:
//   npx tsx scripts/behaviour-snapshot.ts > before.json   (change the code)
//   npx tsx scripts/behaviour-snapshot.ts > after.json && diff before.json after.json
import { createHash } from "node:crypto"
import { Effect, Layer } from "effect"
import { Backend } from "../src/core/backend.js"
import { cpuWithBfloat16 } from "../src/backends/cpu/bfloat16.js"
import { makeCpuBackend } from "../src/backends/cpu/index.js"
import { gpuFusedRoutines } from "../src/cli/plan-command.js"
import { decodeConfigSync, presets } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import { modes } from "../src/models/llama.js"
import { precisions } from "../src/models/optimizer.js"
import { planStep } from "../src/models/planner.js"
import { train } from "../src/models/train.js"
import { rng } from "../src/core/random.js"

const gpu = { routines: Object.fromEntries(gpuFusedRoutines.map((n) => [n, () => {}])) }
const targets = { cpu: makeCpuBackend(), gpu } as const
const plans: Record<string, unknown> = {}
for (const name of ["tiny", "tiny-bpe", "llama-3.2-1b", "llama3-8b"] as const) {
  const model = presets[name]
  for (const precision of ["fp32", "bf16-mixed", "bf16"] as const) {
    for (const S of [1000, 8192]) {
      for (const mode of modes) {
        for (const [t, backend] of Object.entries(targets)) {
          if (t === "cpu" && name !== "tiny") continue
          const p = planStep(
            model,
            1,
            S,
            { mode, precision: precisions[precision], allowBeyondMaxPosition: true },
            backend,
          )
          plans[`${name} ${precision} S=${S} ${mode} ${t}`] = {
            peak: p.peak,
            chunks: p.chunks,
            gradient: p.gradientPass,
            optimizer: p.optimizerPass,
          }
        }
      }
    }
  }
}

const model = decodeConfigSync({
  hidden_size: 32,
  intermediate_size: 80,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 64,
  max_position_embeddings: 64,
})
const random = rng(3)
const corpus = new Int32Array(3000)
for (let i = 1; i < corpus.length; i++) corpus[i] = Math.floor(random() * 64)
const runs: Record<string, unknown> = {}
for (const precision of ["fp32", "bf16-mixed", "bf16"] as const) {
  for (const mode of modes) {
    for (const accumulation of [1, 2]) {
      const batches = makeBatches({ tokens: corpus, batch: 2, seq: 24, seed: 9 })
      const layer =
        precision === "fp32" ? Layer.succeed(Backend, makeCpuBackend()) : Layer.succeed(Backend, cpuWithBfloat16())
      const r = await Effect.runPromise(
        train(
          {
            model,
            mode,
            precision,
            accumulation,
            batch: 2,
            seq: 24,
            steps: 6,
            lr: 1e-2,
            warmup: 2,
            seed: 5,
            mlpChunks: 5,
            lmChunks: 7,
          },
          batches,
        ).pipe(Effect.provide(layer)),
      )
      const hash = createHash("sha256")
      for (const k of Object.keys(r.parameters).sort()) hash.update(k).update(new Uint8Array(r.parameters[k]!.buffer))
      runs[`${precision} ${mode} accumulate=${accumulation}`] = {
        losses: r.records.map((s) => s.loss),
        gradNorms: r.records.map((s) => s.gradNorm),
        peaks: r.records.map((s) => s.peak),
        weights: hash.digest("hex"),
      }
    }
  }
}
console.log(JSON.stringify({ plans, runs }, null, 1))
