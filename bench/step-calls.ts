/**
 * What one training step asks of a backend: its calls by kernel, per mode, for a model shape
 * planned for the GPU (the CUDA backend's fused routines), on a backend that computes nothing.
 * On a GPU each call is a launch (or an allocation) the host must issue, so this counts the
 * host's share of a step without a GPU: where tiny kernels pile up, the GPU waits for the host.
 *
 *   npx tsx bench/step-calls.ts [--model llama-3.2-1b] [--seq 8192] [--modes vanilla,checkpoint,mst,mst+checkpoint]
 *       [--precision bf16-mixed] [--out bench/results/step-calls]
 *
 * Prints a table and writes <out>.json. The first step traces the graphs and is not counted;
 * the second is. ("ms" is the host's time to walk that step here, with nothing computed.)
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { dirname } from "node:path"
import { Effect, Layer } from "effect"
import { gpuFusedRoutines } from "../src/cli/plan-command.js"
import { Backend, type BackendImpl } from "../src/core/backend.js"
import { makeCountingBackend } from "../src/core/counting.js"
import type { RoutineKernels } from "../src/core/routines/registry.js"
import { presets } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import type { Mode } from "../src/models/llama.js"
import { type TrainOptions, train } from "../src/models/train.js"

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1]! : fallback
}
const modelName = arg("model", "llama-3.2-1b")
const seq = Number(arg("seq", "8192"))
const modes = arg("modes", "vanilla,checkpoint,mst,mst+checkpoint").split(",") as Mode[]
const precision = arg("precision", "bf16-mixed") as NonNullable<TrainOptions["precision"]>
const out = arg("out", "bench/results/step-calls")
const model = (presets as Record<string, (typeof presets)[keyof typeof presets]>)[modelName]
if (model === undefined) {
  console.error(`step-calls: no model "${modelName}"; choose one of: ${Object.keys(presets).join(", ")}`)
  process.exit(2)
}

/** A backend that computes nothing and counts every call by kernel name (routines as "routine name"). */
function countingCalls(): { backend: BackendImpl; counts: Map<string, number> } {
  const counts = new Map<string, number>()
  const tally = (k: string) => counts.set(k, (counts.get(k) ?? 0) + 1)
  const inner = makeCountingBackend(gpuFusedRoutines)
  const routines = Object.fromEntries(
    Object.entries(inner.routines ?? {}).map(([name, kernel]) => [
      name,
      (call: never) => {
        tally(`routine ${name}`)
        return (kernel as (c: never) => void)(call)
      },
    ]),
  ) as RoutineKernels
  // A wrapper is not the counting backend itself, so the executor walks every region body
  // instead of replaying recorded ones (./src/core/region-replay.ts): every call is made.
  const backend = new Proxy(inner, {
    get(target, key, receiver) {
      if (key === "routines") return routines
      // The loss is checked for being finite: read back ones, not the counting backend's zeros.
      if (key === "read")
        return async (b: { dtype: string; size: number }) => {
          tally("read")
          return b.dtype === "float64" ? new Float64Array(b.size).fill(1) : new Float32Array(b.size).fill(1)
        }
      const value = Reflect.get(target, key, receiver)
      if (typeof value !== "function" || typeof key !== "string") return value
      return (...args: unknown[]) => {
        tally(key)
        return value.apply(target, args)
      }
    },
  })
  return { backend, counts }
}

interface Row {
  mode: Mode
  calls: number
  launches: number
  ms: number
  byKernel: Record<string, number>
}
const rows: Row[] = []
for (const mode of modes) {
  const { backend, counts } = countingCalls()
  const tokens = Int32Array.from({ length: seq * 4 }, (_, i) => (i * 7919) % model.vocab_size)
  let counted: Map<string, number> | undefined
  let started = 0
  let ms = 0
  await Effect.runPromise(
    train(
      { model, batch: 1, seq, steps: 2, lr: 1e-4, seed: 1, mode, precision, readBack: false },
      makeBatches({ tokens, batch: 1, seq, seed: 1 }),
      (r) => {
        if (r.step === 1) {
          counts.clear()
          started = performance.now()
        } else {
          ms = performance.now() - started
          counted = new Map(counts)
        }
      },
    ).pipe(Effect.provide(Layer.succeed(Backend, backend))),
  )
  const byKernel = Object.fromEntries([...counted!].sort((a, b) => b[1] - a[1]))
  const calls = [...counted!.values()].reduce((a, b) => a + b, 0)
  // alloc and free are not launches (the CUDA allocator reuses its pool); everything else is.
  const launches = calls - (counted!.get("alloc") ?? 0) - (counted!.get("free") ?? 0)
  rows.push({ mode, calls, launches, ms, byKernel })
  console.error(`${mode}: ${calls} calls`)
}

const top = (r: Row) =>
  Object.entries(r.byKernel)
    .filter(([k]) => k !== "alloc" && k !== "free")
    .slice(0, 6)
    .map(([k, v]) => `${k} ${v}`)
    .join(", ")
console.log(
  `\n${modelName}, S = ${seq}, ${precision}, batch 1, planned for the GPU's fused routines: one step's backend calls\n`,
)
console.log("| mode | calls | of them launches | host ms (nothing computed) | most launched |")
console.log("|---|---:|---:|---:|---|")
for (const r of rows) console.log(`| ${r.mode} | ${r.calls} | ${r.launches} | ${r.ms.toFixed(0)} | ${top(r)} |`)
mkdirSync(dirname(out), { recursive: true })
writeFileSync(
  `${out}.json`,
  `${JSON.stringify({ model: modelName, seq, precision, date: new Date().toISOString(), rows }, null, 2)}\n`,
)
console.log(`\nwrote ${out}.json`)
