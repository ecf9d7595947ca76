/**
 * One training run of issue 16's tiny config on cpu-fast, for profiling one step's time:
 *   node --cpu-prof --cpu-prof-dir=DIR --import tsx bench/cpu-profile-run.ts [--steps 8] [--threads 1|2] [--wasm]
 * then `node scripts/cpu-profile-summary.mjs DIR/<file>.cpuprofile` prints where the time went.
 * --ops: also time every backend call (kernel, op and size) after step 1, and print the table per step.
 */
import { Effect } from "effect"
import { fastCpuBackendLayer, makeFastCpuBackend } from "../src/backends/cpu-fast/index.js"
import { rng } from "../src/core/random.js"
import { decodeConfigSync, presets } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import { mapKernels } from "../src/core/routines/registry.js"
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
// --ops: every backend call timed, by method, op (the first argument when a string) and size.
const times = new Map<string, { ms: number; calls: number }>()
let timing = false
const timed = <F extends (...a: never[]) => unknown>(key: (...a: Parameters<F>) => string, f: F): F =>
  ((...a: Parameters<F>) => {
    if (!timing) return f(...a)
    const t = performance.now()
    const r = f(...a)
    const k = key(...a)
    const e = times.get(k) ?? { ms: 0, calls: 0 }
    e.ms += performance.now() - t
    e.calls++
    times.set(k, e)
    return r
  }) as F
const size = (x: unknown) => (x as { size?: number } | undefined)?.size ?? 0
const ops = process.argv.includes("--ops")
if (ops) {
  const b = backend as unknown as Record<string, unknown>
  for (const m of [
    "unary",
    "binary",
    "reduce",
    "copy",
    "matmul",
    "gather",
    "scatterAdd",
    "takeAlong",
    "putAlong",
    "where",
    "cast",
    "fill",
    "alloc",
    "free",
    "iota",
  ]) {
    const f = b[m] as ((...a: never[]) => unknown) | undefined
    if (typeof f !== "function") continue
    b[m] = timed(
      (...a: unknown[]) =>
        m === "matmul"
          ? `matmul ${JSON.stringify(a[3])}`
          : m === "alloc"
            ? `alloc ${a[1]}`
            : m === "reduce"
              ? `reduce ${a[0]} ${a.slice(3, 6).join("×")}`
              : `${m}${typeof a[0] === "string" ? ` ${a[0]}` : ""} ${size(typeof a[0] === "string" ? a[1] : a[0])}`,
      f.bind(backend),
    )
  }
  b.routines = mapKernels(backend.routines ?? {}, (k, name) => timed(() => `routine ${name}`, k))
}
const { records } = await Effect.runPromise(
  train(
    { model, mode: "vanilla", batch, seq, steps, lr: 1e-3, minLr: 1e-3, warmup: 0, seed: 1 },
    makeBatches({ tokens, batch, seq, seed: 1 }),
    () => {
      timing = ops
    },
  ).pipe(Effect.provide(fastCpuBackendLayer(backend))),
)
console.log(
  `${backend.gemmKernel}, ${backend.threads()} thread(s): tokens/s ${records.map((r) => r.tokensPerSecond.toFixed(0)).join(" ")}`,
)
if (ops) {
  const per = steps - 1
  const all = [...times.entries()].sort((a, b) => b[1].ms - a[1].ms)
  const total = all.reduce((s, [, v]) => s + v.ms, 0)
  console.log(`backend calls: ${(total / per).toFixed(1)} ms a step (steps 2–${steps})`)
  for (const [k, v] of all.slice(0, Number(process.env.OPS_TOP ?? 45)))
    console.log(`${(v.ms / per).toFixed(2).padStart(7)} ms ${String(v.calls / per).padStart(5)}×  ${k}`)
}
