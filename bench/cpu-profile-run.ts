/**
 * One training run of issue 16's tiny config on cpu-fast, for profiling one step's time:
 *   node --cpu-prof --cpu-prof-dir=DIR --import tsx bench/cpu-profile-run.ts [--steps 8] [--threads 1|2] [--wasm]
 * then `node scripts/cpu-profile-summary.mjs DIR/<file>.cpuprofile` prints where the time went.
 */
import { Effect } from "effect"
import { fastCpuBackendLayer, makeFastCpuBackend } from "../src/backends/cpu-fast/index.js"
import { rng } from "../src/core/random.js"
import { decodeConfigSync, presets } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import { train } from "../src/models/train.js"

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1]! : fallback
}
const steps = Number(arg("steps", "8"))
const [batch, seq] = [8, 256]
const model = decodeConfigSync({ ...presets.tiny, hidden_size: 128, intermediate_size: 384, num_hidden_layers: 4 })
const random = rng(1)
const tokens = Int32Array.from({ length: batch * (seq + 1) * 8 }, () => Math.floor(random() * model.vocab_size))
const backend = makeFastCpuBackend({
  helper: arg("threads", "1") === "1" ? "none" : "auto",
  native: !process.argv.includes("--wasm"),
})
const { records } = await Effect.runPromise(
  train(
    { model, mode: "vanilla", batch, seq, steps, lr: 1e-3, minLr: 1e-3, warmup: 0, seed: 1 },
    makeBatches({ tokens, batch, seq, seed: 1 }),
  ).pipe(Effect.provide(fastCpuBackendLayer(backend))),
)
console.log(
  `${backend.gemmKernel}, ${backend.threads()} thread(s): tokens/s ${records.map((r) => r.tokensPerSecond.toFixed(0)).join(" ")}`,
)
