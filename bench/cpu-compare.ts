/**
 * The CPU comparison of issue 16: the same small Llama trained through miniseq's reference CPU
 * backend (`cpu`), the fast CPU backend (`cpu-fast`) and, when `python3` with `torch` is on this
 * machine, an equivalent plain PyTorch Llama (bench/cpu_compare_torch.py), in one job.
 *   npx tsx bench/cpu-compare.ts [--steps 6] [--repeat 3] [--modes vanilla,mst] [--skip-reference]
 * Runners: cpu-fast (its default: two threads in Node, the native GEMM where built), cpu-fast-1t
 * (helper "none"), cpu-fast-wasm (the WebAssembly GEMM, two threads), cpu, pytorch
 * (torch on every core), pytorch-1t (one thread).
 * Config: d 128, I 384, 4 layers, 4 heads / 2 KV, vocab 256, batch 8 × 256, fp32, AdamW. Tokens/s
 * is the median over the steps after the first, then over --repeat rounds (each round runs every
 * runner once, PyTorch among them). Writes docs/results/cpu-compare.json with every run's figure
 * and the load average at its start.
 *
 * The runs are the same computation: PyTorch gets miniseq's initial weights and batches (files in a
 * temporary folder), a constant learning rate (no warmup, no decay: miniseq's minLr = lr), and
 * miniseq's AdamW (β 0.9/0.95, ε 1e-8, weight decay 0.1 on matrices, gradient norm clipped at 1).
 * Their losses should then agree to float32 rounding, step by step: the check that they do is printed.
 */
import { execFileSync } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { cpus, loadavg, tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, type Layer } from "effect"
import { cpuBackendLayer } from "../src/backends/cpu/index.js"
import { fastCpuBackendLayer, makeFastCpuBackend } from "../src/backends/cpu-fast/index.js"
import type { Backend } from "../src/core/backend.js"
import { rng } from "../src/core/random.js"
import { decodeConfigSync, presets } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import { type Mode, parameterShapes } from "../src/models/llama.js"
import { initialParameters, train } from "../src/models/train.js"

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1]! : fallback
}
const steps = Number(arg("steps", "6"))
const repeat = Number(arg("repeat", "3"))
// PyTorch on every core (its default here), and on one: with another process on a core, OpenBLAS's
// two threads wait on each other, so one thread is then PyTorch's better figure.
const torchThreads = [...new Set([cpus().length, 1])]
const modes = arg("modes", "vanilla,mst").split(",") as Mode[]
const [batch, seq] = [8, 256]
// The shipped tiny preset (4 heads / 2 KV, vocab 256) at the size.
const config = { ...presets.tiny, hidden_size: 128, intermediate_size: 384, num_hidden_layers: 4 }
const model = decodeConfigSync(config)
const random = rng(1)
const tokens = Int32Array.from({ length: batch * (seq + 1) * 8 }, () => Math.floor(random() * model.vocab_size))
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}
const [lr, seed] = [1e-3, 1]
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")
const loadBefore = load()

interface Row {
  readonly runner: string
  readonly mode: string
  readonly tokensPerSecond: number
  readonly stepMs: number
  readonly losses: number[]
  /** The 1-minute load average when the run started. */
  readonly load: number
}
const rows: Row[] = []
const show = (r: Row) =>
  console.log(
    `${r.runner.padEnd(13)} ${r.mode.padEnd(8)} ${r.tokensPerSecond.toFixed(0).padStart(9)} ${r.stepMs.toFixed(0).padStart(8)} ${r.load.toFixed(2).padStart(5)}  ${r.losses.map((l) => l.toFixed(4)).join(" ")}`,
  )

console.log(
  `d ${config.hidden_size}, I ${config.intermediate_size}, ${config.num_hidden_layers} layers, ${config.num_attention_heads} heads / ${config.num_key_value_heads} KV, vocab ${config.vocab_size}, batch ${batch}×${seq}, fp32, AdamW, lr ${lr} constant, ${steps} steps; ${cpus().length} × ${cpus()[0]?.model ?? "unknown CPU"}; load average ${loadBefore}`,
)
console.log(`cpu-fast products: ${makeFastCpuBackend({ helper: "none" }).gemmKernel}`)
console.log(
  `${"runner".padEnd(13)} ${"mode".padEnd(8)} ${"tokens/s".padStart(9)} ${"step ms".padStart(8)} ${"load".padStart(5)}  losses`,
)
const runners: Array<[string, () => Layer.Layer<Backend>]> = [
  // The default: two threads in Node (the helper starts within ~50 ms: during step 1, untimed).
  ["cpu-fast", () => fastCpuBackendLayer()],
  ["cpu-fast-1t", () => fastCpuBackendLayer(makeFastCpuBackend({ helper: "none" }))],
  // Products on the WebAssembly GEMM instead of the native one (where that is built): two threads.
  ["cpu-fast-wasm", () => fastCpuBackendLayer(makeFastCpuBackend({ native: false }))],
  ...(process.argv.includes("--skip-reference")
    ? []
    : [["cpu", () => cpuBackendLayer()] as [string, () => Layer.Layer<Backend>]]),
]
/** One training run of `runner` in `mode`: its row (tokens/s the median of the steps after the first). */
async function runMiniseq(runner: string, layer: () => Layer.Layer<Backend>, mode: Mode): Promise<Row> {
  const batches = makeBatches({ tokens, batch, seq, seed })
  const load = loadavg()[0]!
  const { records } = await Effect.runPromise(
    train({ model, mode, batch, seq, steps, lr, minLr: lr, warmup: 0, seed }, batches).pipe(Effect.provide(layer())),
  )
  const tps = median(records.slice(1).map((r) => r.tokensPerSecond))
  return {
    runner,
    mode,
    tokensPerSecond: tps,
    stepMs: (1000 * batch * seq) / tps,
    losses: records.map((r) => r.loss),
    load,
  }
}

/** The first of $PYTHON, python3, /usr/bin/python3 that imports torch (Debian's python3-torch lives under /usr/bin). */
const python = [process.env.PYTHON, "python3", "/usr/bin/python3"].find((p) => {
  if (p === undefined) return false
  try {
    execFileSync(p, ["-c", "import torch"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})
/** miniseq's initial weights (params.json + params.bin) and the steps' batches (batches.bin) for PyTorch. */
function writeRunData(dir: string): void {
  const init = initialParameters(model, seed)
  const shapes = parameterShapes(model)
  const manifest: Record<string, [number, readonly number[]]> = {}
  let offset = 0
  for (const [name, values] of Object.entries(init)) {
    manifest[name] = [offset, shapes[name]!]
    offset += values.length
  }
  const flat = new Float32Array(offset)
  for (const [name, values] of Object.entries(init)) flat.set(values, manifest[name]![0])
  writeFileSync(join(dir, "params.bin"), flat)
  writeFileSync(join(dir, "params.json"), JSON.stringify(manifest))
  const batches = makeBatches({ tokens, batch, seq, seed })
  const ids = new Int32Array(steps * 2 * batch * seq)
  for (let s = 0; s < steps; s++) {
    const b = batches.batchAt(s) // step s + 1 trains on batchAt(s)
    ids.set(b.tokens, 2 * s * batch * seq)
    ids.set(b.targets, (2 * s + 1) * batch * seq)
  }
  writeFileSync(join(dir, "batches.bin"), ids)
}

let torch: string | undefined
const dataDir = mkdtempSync(join(tmpdir(), "miniseq-cpu-compare-"))
/** One PyTorch run (bench/cpu_compare_torch.py) on the same weights and batches, or why it did not run. */
function runTorch(threads: number): Row | string {
  try {
    if (python === undefined) throw new Error("no python3 with torch on this machine")
    const load = loadavg()[0]!
    const line = execFileSync(
      python,
      [
        "bench/cpu_compare_torch.py",
        JSON.stringify(model),
        `${batch}`,
        `${seq}`,
        `${steps}`,
        `${lr}`,
        dataDir,
        `${threads}`,
      ],
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
    )
    const r = JSON.parse(line.trim().split("\n").at(-1)!)
    torch = `torch ${r.torch}`
    return {
      runner: threads === cpus().length ? "pytorch" : `pytorch-${threads}t`,
      mode: "vanilla",
      tokensPerSecond: r.tokens_per_s,
      stepMs: r.step_ms,
      losses: r.losses,
      load,
    }
  } catch (e) {
    return String(e).split("\n")[0]!
  }
}

// Rounds: every runner once per round, PyTorch between the miniseq runs, so that a change in the
// machine's load (other people's jobs) falls on all of them alike; each runner's figure is its
// median over the rounds.
const samples: Row[] = []
let torchMissing: string | undefined
try {
  writeRunData(dataDir)
  for (let round = 1; round <= repeat; round++) {
    console.log(`round ${round}/${repeat}`)
    for (const mode of modes)
      for (const [runner, layer] of runners) {
        const row = await runMiniseq(runner, layer, mode)
        samples.push(row)
        show(row)
        if (mode === modes[0] && runner === runners[0]![0] && torchMissing === undefined)
          for (const threads of torchThreads) {
            const t = runTorch(threads)
            if (typeof t === "string") torchMissing = t
            else {
              samples.push(t)
              show(t)
            }
          }
      }
  }
} finally {
  rmSync(dataDir, { recursive: true, force: true })
}
if (torchMissing !== undefined) console.log(`pytorch: not run (${torchMissing})`)
const loadAfter = load()
console.log(`load average after: ${loadAfter}`)
console.log(`median over ${repeat} round(s):`)
for (const [runner, mode] of [...new Set(samples.map((r) => `${r.runner} ${r.mode}`))].map((k) => k.split(" "))) {
  const mine = samples.filter((r) => r.runner === runner && r.mode === mode)
  const tps = median(mine.map((r) => r.tokensPerSecond))
  const row = {
    ...mine[0]!,
    tokensPerSecond: tps,
    stepMs: (1000 * batch * seq) / tps,
    load: median(mine.map((r) => r.load)),
  }
  rows.push(row)
  show(row)
}

const tps = (runner: string, mode = "vanilla") =>
  rows.find((r) => r.runner === runner && r.mode === mode)?.tokensPerSecond
const ratios: Record<string, number> = {}
for (const [name, a, b] of [
  ["cpu-fast / cpu", "cpu-fast", "cpu"],
  ["cpu-fast / pytorch", "cpu-fast", "pytorch"],
  ["cpu-fast-1t / pytorch", "cpu-fast-1t", "pytorch"],
  ["cpu-fast / pytorch-1t", "cpu-fast", "pytorch-1t"],
  ["cpu / pytorch", "cpu", "pytorch"],
] as const) {
  const [x, y] = [tps(a), tps(b)]
  if (x !== undefined && y !== undefined) ratios[name] = x / y
}
const bestTorch = Math.max(...["pytorch", "pytorch-1t"].map((r) => tps(r) ?? 0))
if (bestTorch > 0 && tps("cpu-fast") !== undefined) ratios["cpu-fast / best pytorch"] = tps("cpu-fast")! / bestTorch
for (const [name, r] of Object.entries(ratios)) console.log(`${name} (vanilla): ${r.toFixed(2)}×`)
mkdirSync("docs/results", { recursive: true })
const out = "docs/results/cpu-compare.json"
writeFileSync(
  out,
  `${JSON.stringify(
    {
      date: new Date().toISOString(),
      machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, torch },
      loadAverage: { before: loadBefore, after: loadAfter },
      config,
      lr,
      batch,
      seq,
      steps,
      repeat,
      rows,
      samples,
      ratios,
    },
    null,
    2,
  )}\n`,
)
console.log(`wrote ${out}`)
