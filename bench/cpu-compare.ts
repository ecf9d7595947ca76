/**
 * The CPU comparison of issue 16: the same small Llama trained through miniseq's reference CPU
 * backend (`cpu`), the fast CPU backend (`cpu-fast`) and, when `python3` with `torch` is on this
 * machine, an equivalent plain PyTorch Llama (bench/cpu_compare_torch.py), in one job.
 *   npx tsx bench/cpu-compare.ts [--steps 4] [--modes vanilla,mst] [--skip-reference]
 * Config: d 128, I 384, 4 layers, 4 heads / 2 KV, vocab 256, batch 8 × 256, fp32, AdamW. Tokens/s
 * is the median over the steps after the first. Writes docs/results/cpu-compare.json.
 */
import { execFileSync } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import { cpus } from "node:os"
import { Effect, type Layer } from "effect"
import { cpuBackendLayer } from "../src/backends/cpu/index.js"
import { fastCpuBackendLayer } from "../src/backends/cpu-fast/index.js"
import type { Backend } from "../src/core/backend.js"
import { rng } from "../src/core/random.js"
import { decodeConfigSync, presets } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import type { Mode } from "../src/models/llama.js"
import { train } from "../src/models/train.js"

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1]! : fallback
}
const steps = Number(arg("steps", "4"))
const modes = arg("modes", "vanilla,mst").split(",") as Mode[]
const [batch, seq] = [8, 256]
// The shipped tiny preset (4 heads / 2 KV, vocab 256) at the size.
const config = { ...presets.tiny, hidden_size: 128, intermediate_size: 384, num_hidden_layers: 4 }
const model = decodeConfigSync(config)
const random = rng(1)
const tokens = Int32Array.from({ length: batch * (seq + 1) * 8 }, () => Math.floor(random() * model.vocab_size))
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!

interface Row {
  readonly runner: string
  readonly mode: string
  readonly tokensPerSecond: number
  readonly stepMs: number
  readonly losses: number[]
}
const rows: Row[] = []
const show = (r: Row) =>
  console.log(
    `${r.runner.padEnd(9)} ${r.mode.padEnd(8)} ${r.tokensPerSecond.toFixed(0).padStart(9)} ${r.stepMs.toFixed(0).padStart(8)}  ${r.losses.map((l) => l.toFixed(4)).join(" ")}`,
  )

console.log(
  `d ${config.hidden_size}, I ${config.intermediate_size}, ${config.num_hidden_layers} layers, ${config.num_attention_heads} heads / ${config.num_key_value_heads} KV, vocab ${config.vocab_size}, batch ${batch}×${seq}, fp32, AdamW, ${steps} steps; ${cpus().length} × ${cpus()[0]?.model ?? "unknown CPU"}`,
)
console.log(`${"runner".padEnd(9)} ${"mode".padEnd(8)} ${"tokens/s".padStart(9)} ${"step ms".padStart(8)}  losses`)
const runners: Array<[string, () => Layer.Layer<Backend>]> = [
  ["cpu-fast", () => fastCpuBackendLayer()],
  ...(process.argv.includes("--skip-reference")
    ? []
    : [["cpu", () => cpuBackendLayer()] as [string, () => Layer.Layer<Backend>]]),
]
for (const mode of modes)
  for (const [runner, layer] of runners) {
    const batches = makeBatches({ tokens, batch, seq, seed: 1 })
    const { records } = await Effect.runPromise(
      train({ model, mode, batch, seq, steps, lr: 1e-3, warmup: 1, seed: 1 }, batches).pipe(Effect.provide(layer())),
    )
    const tps = median(records.slice(1).map((r) => r.tokensPerSecond))
    const row = {
      runner,
      mode,
      tokensPerSecond: tps,
      stepMs: (1000 * batch * seq) / tps,
      losses: records.map((r) => r.loss),
    }
    rows.push(row)
    show(row)
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
let torch: string | undefined
try {
  if (python === undefined) throw new Error("no python3 with torch on this machine")
  const line = execFileSync(
    python,
    ["bench/cpu_compare_torch.py", JSON.stringify(config), `${batch}`, `${seq}`, `${steps}`],
    {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    },
  )
  const r = JSON.parse(line.trim().split("\n").at(-1)!)
  torch = `torch ${r.torch}, ${r.threads} threads`
  const row = {
    runner: "pytorch",
    mode: "vanilla",
    tokensPerSecond: r.tokens_per_s,
    stepMs: r.step_ms,
    losses: r.losses,
  }
  rows.push(row)
  show(row)
} catch (e) {
  console.log(`pytorch: not run (${String(e).split("\n")[0]})`)
}

const tps = (runner: string, mode = "vanilla") =>
  rows.find((r) => r.runner === runner && r.mode === mode)?.tokensPerSecond
const ratios: Record<string, number> = {}
for (const [name, a, b] of [
  ["cpu-fast / cpu", "cpu-fast", "cpu"],
  ["cpu-fast / pytorch", "cpu-fast", "pytorch"],
  ["cpu / pytorch", "cpu", "pytorch"],
] as const) {
  const [x, y] = [tps(a), tps(b)]
  if (x !== undefined && y !== undefined) ratios[name] = x / y
}
for (const [name, r] of Object.entries(ratios)) console.log(`${name} (vanilla): ${r.toFixed(2)}×`)
mkdirSync("docs/results", { recursive: true })
const out = "docs/results/cpu-compare.json"
writeFileSync(
  out,
  `${JSON.stringify(
    {
      date: new Date().toISOString(),
      machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, torch },
      config,
      batch,
      seq,
      steps,
      rows,
      ratios,
    },
    null,
    2,
  )}\n`,
)
console.log(`wrote ${out}`)
