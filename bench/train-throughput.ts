/**
 * Training-step throughput of a model on a backend, side by side with the planner:
 *   npx tsx bench/train-throughput.ts [--backend cpu|webgpu|cuda] [--model tiny] [--batch 8] [--seq 128]
 *                                     [--steps 5] [--modes vanilla,mst] [--out file.json]
 * Tokens/s is the median over the steps after the first (which compiles kernels and warms the JIT).
 * Random tokens: throughput does not depend on the text.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { dirname } from "node:path"
import { Effect, type Layer } from "effect"
import type { Backend } from "../src/core/backend.js"
import { cpuBackendLayer } from "../src/backends/cpu/index.js"
import { cudaBackendLayer } from "../src/backends/cuda/index.js"
import { webgpuBackendLayer } from "../src/backends/webgpu/index.js"
import { rng } from "../src/core/random.js"
import { decodeConfigSync, presets, type PresetName } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import { type Mode, parameterCount } from "../src/models/llama.js"
import { train } from "../src/models/train.js"

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1]! : fallback
}
const backendName = arg("backend", "cpu")
const modelName = arg("model", "tiny") as PresetName
const [batch, seq, steps] = [Number(arg("batch", "8")), Number(arg("seq", "128")), Number(arg("steps", "5"))]
const modes = arg("modes", "vanilla,mst").split(",") as Mode[]
const out = arg("out", `bench/results/train-${backendName}-${modelName}.json`)

const model = decodeConfigSync(presets[modelName])
const layers: Record<string, () => Layer.Layer<Backend, unknown>> = {
  cpu: cpuBackendLayer,
  webgpu: () => webgpuBackendLayer(),
  cuda: () => cudaBackendLayer(),
}
const layer = (layers[backendName] ?? cpuBackendLayer)()
const random = rng(1)
const tokens = Int32Array.from({ length: batch * (seq + 1) * 8 }, () => Math.floor(random() * model.vocab_size))
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!

const rows = []
console.log(
  `${modelName} (${(parameterCount(model) / 1e6).toFixed(1)}M parameters), batch ${batch}×${seq}, ${backendName}, ${steps} steps\n${"mode".padEnd(15)} ${"tokens/s".padStart(10)} ${"step ms".padStart(9)} ${"peak MiB".padStart(9)} ${"loss".padStart(8)}`,
)
for (const mode of modes) {
  const batches = makeBatches({ tokens, batch, seq, seed: 1 })
  const result = await Effect.runPromise(
    train({ model, mode, batch, seq, steps, lr: 1e-3, warmup: 1, seed: 1 }, batches).pipe(Effect.provide(layer)),
  )
  const records = result.records
  const tps = median(records.slice(1).map((r) => r.tokensPerSecond))
  const row = {
    mode,
    tokensPerSecond: tps,
    stepMs: (1000 * batch * seq) / tps,
    peak: Math.max(...records.map((r) => r.peak)),
    losses: records.map((r) => r.loss),
  }
  rows.push(row)
  console.log(
    `${mode.padEnd(15)} ${tps.toFixed(0).padStart(10)} ${row.stepMs.toFixed(1).padStart(9)} ${(row.peak / 2 ** 20).toFixed(1).padStart(9)} ${records.at(-1)!.loss.toFixed(4).padStart(8)}`,
  )
}
mkdirSync(dirname(out), { recursive: true })
writeFileSync(
  out,
  JSON.stringify(
    { backend: backendName, model: modelName, config: model, batch, seq, steps, date: new Date().toISOString(), rows },
    null,
    2,
  ) + "\n",
)
console.log(`wrote ${out}`)
