/**
 * Long-context training on one GPU, side by side with PyTorch, in one command:
 *
 *   node long-context.mjs [--model llama-3.2-1b] [--precision bf16-mixed] [--seqs 4096,8192,16384,32768,65536]
 *       [--modes vanilla,checkpoint,mst,mst+checkpoint] [--steps 3] [--cap 40GiB|none] [--no-max-seq]
 *       [--pytorch python3] [--backend cuda|cpu] [--profile mode:S,...] [--out bench/results/long-context]
 *       [--offload checkpoints,optimizer] [--host-cap 110GiB]
 *       [--mlp-chunks auto|M] [--lm-chunks auto|M] [--checkpoint-group K]
 *
 * 1. Throughput: for every mode and S, `--steps` full training steps (forward, backward, AdamW)
 *    at batch 1 on random tokens; tokens/s is S over the median step time after the first. Peak
 *    memory is the executor's count and the device allocator's own (which also holds fused-kernel
 *    scratch). A (mode, S) the planner finds over the GPU's memory is not run.
 * 2. Largest S: under a memory cap (`--cap`, enforced by the allocator, as a smaller GPU would),
 *    the planner bisects the largest S per mode in multiples of 1024, and one real step at that S
 *    checks it trains within the cap. The cap keeps those steps short: attention is O(S²).
 *    `--cap none`: the whole card. Plans are compared with the memory a step can really use,
 *    read after a warm-up step (src/backends/cuda/usable-memory.ts), under the cap where that is less.
 * 3. PyTorch: bench/pytorch_baseline.py with the same model, precision, S and cap (HF Llama with
 *    SDPA attention, with and without gradient checkpointing), run from here, in the same job.
 *
 * 4. --profile mst+checkpoint:8192: where one step's GPU time goes, per operation (CUDA only).
 *
 * --offload: our runs keep what it names in pinned host memory (see `miniseq train --offload`);
 * --host-cap bounds those bytes in the largest-S searches (as many checkpoints offloaded as fit).
 *
 * Writes <out>.json (everything) and <out>.md (the tables printed).
 */
import { spawnSync } from "node:child_process"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { dirname } from "node:path"
import { Effect, Exit, Layer } from "effect"
import { Backend, type BackendImpl } from "../src/core/backend.js"
import { makeCpuBackend } from "../src/backends/cpu/index.js"
import { cpuWithBfloat16 } from "../src/backends/cpu/bfloat16.js"
import { type CudaBackend, makeCudaBackend, usableNow, usableUnderCap } from "../src/backends/cuda/index.js"
import { rng } from "../src/core/random.js"
import { decodeConfigSync, presets, type PresetName } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import { type Mode, parameterCount } from "../src/models/llama.js"
import { type PrecisionName, precisions } from "../src/models/optimizer.js"
import { fitHost, largestFitting, planStep, type StepPlan } from "../src/models/planner.js"
import { inMode, type Offload } from "../src/models/step.js"
import { parseOffload } from "../src/cli/options.js"
import { train } from "../src/models/train.js"

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1]! : fallback
}
const GiB = 2 ** 30
const modelName = arg("model", "llama-3.2-1b") as PresetName
const precision = arg("precision", "bf16-mixed") as PrecisionName
const seqs = arg("seqs", "4096,8192,16384,32768,65536")
  .split(",")
  .filter((s) => s !== "none")
  .map(Number) // "none": no sweep
const modes = arg("modes", "vanilla,checkpoint,mst,mst+checkpoint").split(",") as Mode[]
const steps = Number(arg("steps", "3"))
const capArg = arg("cap", "40")
const cap = capArg === "none" ? undefined : Number(capArg.replace(/GiB|GB/i, "")) * GiB
const maxSeq = !process.argv.includes("--no-max-seq")
const python = arg("pytorch", "")
const seqLimit = Number(arg("max-seq-limit", String(2 ** 20))) // the searches stop here
const backendName = arg("backend", "cuda")
const out = arg("out", "bench/results/long-context")
const profiles = arg("profile", "")
  .split(",")
  .filter((x) => x !== "")
  .map((x) => {
    const [m, s] = x.split(":")
    return { mode: m as Mode, seq: Number(s) }
  })
const model = decodeConfigSync(presets[modelName])
const offload: Offload = Effect.runSync(parseOffload(arg("offload", "none")))
const hostCap = Number(arg("host-cap", "Infinity").replace(/GiB|GB/i, "")) * GiB
// The model's layout, as `miniseq train` takes it: mini-sequences (a number or "auto") and, in the
// checkpoint modes, layers per checkpoint region (`inMode` drops it for the others).
const pieces = (name: string): number | "auto" => {
  const v = arg(name, "auto")
  return v === "auto" ? v : Number(v)
}
const group = Number(arg("checkpoint-group", "1"))
const asked = {
  mlpChunks: pieces("mlp-chunks"),
  lmChunks: pieces("lm-chunks"),
  ...(group === 1 ? {} : { checkpointGroup: group }),
}
const layout = (mode: Mode) => inMode({ ...asked, mode }, mode)

// ---------------------------------------------------------------------------------------------
// Our side
// ---------------------------------------------------------------------------------------------

interface Device {
  readonly backend: BackendImpl
  /** Bytes the device has (or the cap). */
  readonly total: number
  /**
   * What a step can use, read now: the allocator's reserved bytes plus the driver's free bytes,
   * under the cap. Less than `total` by the CUDA context, cuBLAS and loaded kernels, so read it
   * after a warm-up step (`warmUp`).
   */
  usable(): number
  readonly name: string
  /** Allocator peak since the last reset, and what it holds from the driver. */
  memory(): { peak: number; reserved: number; heldPeak: number; live: number; hostPeak: number }
  reset(): void
  readonly profiler?: CudaBackend["profiler"]
  close(): Promise<void>
}

function openDevice(limit?: number): Device {
  if (backendName === "cpu") {
    // a dry run of this script (bf16 emulated), for checking it without a GPU
    const cpu = makeCpuBackend()
    return {
      backend: cpuWithBfloat16(cpu),
      total: limit ?? 64 * GiB,
      usable: () => limit ?? 64 * GiB,
      name: "cpu",
      memory: () => ({
        peak: cpu.memory().peak,
        reserved: cpu.memory().live,
        heldPeak: cpu.memory().peak,
        live: cpu.memory().live,
        hostPeak: cpu.memory().hostPeak,
      }),
      reset: () => cpu.memory().resetPeak(),
      close: async () => {},
    }
  }
  const cuda: CudaBackend = makeCudaBackend(limit === undefined ? {} : { memoryLimit: limit })
  return {
    backend: cuda,
    total: limit ?? cuda.device.totalMemory,
    usable: () => usableUnderCap(limit, usableNow(cuda)),
    name: cuda.device.name,
    profiler: cuda.profiler,
    memory: () => {
      const m = cuda.memory()
      return {
        peak: m.peak,
        reserved: m.reserved,
        heldPeak: m.heldPeak,
        live: m.live,
        hostPeak: m.hostPeak,
      }
    },
    reset: () => {
      cuda.memory().emptyCache()
      cuda.memory().resetPeak()
    },
    close: () => cuda.destroy(),
  }
}

interface Row {
  readonly mode: Mode
  readonly seq: number
  readonly status: "ok" | "OOM" | "over memory (planned)"
  readonly planned: number
  readonly tokensPerSecond?: number
  readonly stepMs?: number
  readonly stepTimes?: number[]
  readonly peak?: number
  readonly devicePeak?: number
  readonly deviceReserved?: number
  /** The allocator's peak of size-class capacity (buffers and kernel scratch): what the plan (`planned`) predicts, less scratch. */
  readonly deviceHeldPeak?: number
  /** What this run offloaded (`--offload`, with the checkpoint budget a --host-cap search chose). */
  readonly offload?: Offload
  /** The plan's host-tier peak, and the allocator's own peak of live host-tier bytes. */
  readonly hostPlanned?: number
  readonly hostPeak?: number
  /** Live bytes on the device after the run ended (0: a failed step gave everything back). */
  readonly liveAfter?: number
  readonly losses?: number[]
  /** Seconds from calling train() to the end of the first step, less that step: setting up and initialising the model. */
  readonly startSeconds?: number
  readonly error?: string
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!

/** The plan of one step at `seq` with `o` offloaded. */
const planOf = (dev: Device, mode: Mode, seq: number, o: Offload): StepPlan =>
  planStep(
    model,
    1,
    seq,
    { ...layout(mode), precision: precisions[precision], allowBeyondMaxPosition: true, offload: o },
    dev.backend,
  )

/** The plan at `seq` under --offload, with as many checkpoints offloaded as --host-cap holds. */
const plannedWithinHost = (dev: Device, mode: Mode, seq: number) =>
  fitHost((o) => planOf(dev, mode, seq, o), offload, hostCap)

async function measure(
  dev: Device,
  mode: Mode,
  seq: number,
  n: number,
  profileAfter?: number,
  runOffload: Offload = offload,
): Promise<Row> {
  const plan = planOf(dev, mode, seq, runOffload)
  const planned = plan.held
  const hostPlanned = plan.host
  if (planned > dev.usable()) return { mode, seq, status: "over memory (planned)", planned, offload: runOffload }
  const random = rng(seq)
  const tokens = Int32Array.from({ length: 2 * (seq + 1) }, () => Math.floor(random() * model.vocab_size))
  // One batch for every step, as the PyTorch baseline does, so that the loss curves compare.
  const stream = makeBatches({ tokens, batch: 1, seq, seed: 1 })
  const batches = { ...stream, batchAt: () => stream.batchAt(0) }
  const long = { ...model, max_position_embeddings: Math.max(model.max_position_embeddings, seq) } // RoPE extrapolates
  dev.reset()
  const started = performance.now()
  let firstStepEnd: number | undefined
  const exit = await Effect.runPromiseExit(
    train(
      {
        model: long,
        ...layout(mode),
        batch: 1,
        seq,
        steps: n,
        lr: 1e-4,
        warmup: 1,
        seed: 1,
        precision,
        offload: runOffload,
        readBack: false, // an 8B model's weights as float32 would be 32 GB of host memory
        memoryLimit: dev.total, // the model is initialised on the device (randomNormal)
      },
      batches,
      // With profileAfter: profile the steps after that one (the first compiles and warms up).
      (r) => {
        if (r.step === 1) firstStepEnd = performance.now()
        if (r.step === profileAfter) dev.profiler?.start()
      },
    ).pipe(Effect.provide(Layer.succeed(Backend, dev.backend))),
  )
  const {
    peak: devicePeak,
    reserved: deviceReserved,
    heldPeak: deviceHeldPeak,
    live: liveAfter,
    hostPeak,
  } = dev.memory()
  const host = { offload: runOffload, hostPlanned, hostPeak }
  if (Exit.isFailure(exit)) {
    const text = String(exit.cause)
    if (!text.includes("OutOfMemory")) throw new Error(`${mode} S=${seq}: ${text}`)
    const error = text.split("\n")[0]!.slice(0, 400)
    return { mode, seq, status: "OOM", planned, devicePeak, deviceReserved, deviceHeldPeak, liveAfter, error, ...host }
  }
  const records = exit.value.records
  const times = records.map((r) => seq / r.tokensPerSecond)
  const dt = median(times.length > 1 ? times.slice(1) : times)
  const startSeconds = firstStepEnd === undefined ? undefined : (firstStepEnd - started) / 1000 - times[0]!
  return {
    startSeconds,
    mode,
    seq,
    status: "ok",
    planned,
    tokensPerSecond: seq / dt,
    stepMs: 1000 * dt,
    stepTimes: times,
    peak: Math.max(...records.map((r) => r.peak)),
    devicePeak,
    deviceReserved,
    deviceHeldPeak,
    liveAfter,
    ...host,
    losses: records.map((r) => r.loss),
  }
}

/** The largest multiple of 1024 (up to --max-seq-limit) whose planned step fits `limit` and --host-cap. */
function plannedMaxSeq(dev: Device, mode: Mode, limit: number): number {
  const fits = (S: number) => {
    const p = plannedWithinHost(dev, mode, S).plan
    return p.held <= limit && p.host <= hostCap
  }
  return largestFitting(fits, 1024, Math.floor(seqLimit / 1024) * 1024).n
}

const log = (s: string) => console.log(s)
const capText = cap === undefined ? "the whole card" : `a ${(cap / GiB).toFixed(1)} GiB cap`
const gib = (b: number | undefined) => (b === undefined ? "-" : (b / GiB).toFixed(1))
const tps = (r: Row | undefined) =>
  r === undefined
    ? "-"
    : r.status === "ok"
      ? `${r.tokensPerSecond!.toFixed(0)} (${gib(r.devicePeak)})`
      : r.status === "OOM"
        ? "OOM"
        : "over"

log(
  `${modelName} (${(parameterCount(model) / 1e9).toFixed(2)}B parameters), precision ${precision}, batch 1, ${steps} steps per point`,
)
/**
 * One short step at `mode`, so that what loads on first use (cuBLAS's workspace, its kernels
 * and ours) has been taken from the device before `usable()` is read.
 */
async function warmUp(dev: Device, mode: Mode): Promise<void> {
  if (backendName === "cpu") return // nothing loads lazily there; usable() is the total
  const before = dev.usable()
  const r = await measure(dev, mode, 1024, 1)
  log(`  warm-up ${mode} S=1024: ${r.status}; usable ${gib(before)} → ${gib(dev.usable())} GiB`)
}

const full = openDevice()
log(`device: ${full.name}, ${gib(full.total)} GiB total, ${gib(full.usable())} GiB usable before any step`)
const rows: Row[] = []
for (const seq of seqs) {
  for (const mode of modes) {
    const r = await measure(full, mode, seq, steps)
    rows.push(r)
    log(`  ${mode.padEnd(15)} S=${String(seq).padStart(6)}: ${tps(r)}  planned ${gib(r.planned)} GiB`)
  }
}
const profiled: { mode: Mode; seq: number; stepMs?: number; entries: { name: string; calls: number; ms: number }[] }[] =
  []
for (const p of profiles) {
  const r = await measure(full, p.mode, p.seq, 2, 1)
  const entries = full.profiler?.stop() ?? []
  const total = entries.reduce((s, e) => s + e.ms, 0)
  profiled.push({
    mode: p.mode,
    seq: p.seq,
    stepMs: r.stepTimes === undefined ? undefined : 1000 * r.stepTimes[1]!,
    entries,
  })
  log(
    `\nprofile of one ${p.mode} step at S=${p.seq} (${r.stepTimes === undefined ? r.status : `${(1000 * r.stepTimes[1]!).toFixed(0)} ms wall`}, ${total.toFixed(0)} ms on the GPU incl. idle):`,
  )
  for (const e of entries.slice(0, 30))
    log(
      `  ${e.name.padEnd(34)} ${String(e.calls).padStart(7)} calls ${e.ms.toFixed(1).padStart(9)} ms ${((100 * e.ms) / total).toFixed(1).padStart(5)}%`,
    )
}
// The whole card's plan against what a step can use once every mode's kernels have run.
for (const mode of modes) if (!rows.some((r) => r.mode === mode && r.status === "ok")) await warmUp(full, mode)
const fullUsable = full.usable()
log(`usable after warm-up: ${gib(fullUsable)} GiB of ${gib(full.total)} GiB (${fullUsable} of ${full.total} bytes)`)
const fullCardPlan = Object.fromEntries(modes.map((m) => [m, plannedMaxSeq(full, m, fullUsable)]))
await full.close()

/** Per mode: the planner's largest S under the cap, the largest S a real step trained at, and the smallest that did not. */
interface Limit {
  readonly mode: Mode
  readonly planned: number
  readonly trained?: Row
  readonly firstOom?: number
}
const limits: Limit[] = []
if (maxSeq) {
  const capped = openDevice(cap)
  for (const mode of modes) {
    // A fresh device (its own cuBLAS handle): warm it up before reading what it can use.
    await warmUp(capped, mode)
    const usable = capped.usable()
    log(`  ${mode}: planning against ${gib(usable)} GiB (${usable} bytes: min(cap, usable))`)
    const planned = plannedMaxSeq(capped, mode, usable)
    // The plan counts the allocator's size classes but not kernel scratch: where a real step at
    // the planned S does not fit, step down 1024 tokens at a time, in this same process (an
    // OutOfMemory step gives back all it took).
    let S = planned,
      trained: Row | undefined,
      firstOom: number | undefined
    for (let tries = 0; S >= 1024 && tries < 4 && trained === undefined; tries++) {
      const r = await measure(capped, mode, S, 1, undefined, plannedWithinHost(capped, mode, S).offload)
      log(
        `  largest S under ${capText}, ${mode}: planned ${planned}, one step at ${S}: ${r.status} (${gib(r.devicePeak)} GiB live, ${gib(r.deviceHeldPeak)} GiB held (plan ${gib(r.planned)}), host ${gib(r.hostPeak)} GiB (plan ${gib(r.hostPlanned)}), ${gib(r.deviceReserved)} GiB reserved after${r.stepMs === undefined ? "" : `, ${(r.stepMs / 1000).toFixed(1)} s`}${r.startSeconds === undefined ? "" : `, start ${r.startSeconds.toFixed(1)} s`}); live after: ${gib(r.liveAfter)} GiB${r.error === undefined ? "" : `\n    ${r.error}`}`,
      )
      if (r.status === "ok") trained = r
      else {
        firstOom = S
        S -= 1024
      }
    }
    limits.push({ mode, planned, ...(trained ? { trained } : {}), ...(firstOom === undefined ? {} : { firstOom }) })
  }
  await capped.close()
}

// Our side first, so a run stopped during the PyTorch baseline keeps it.
mkdirSync(dirname(out), { recursive: true })
writeFileSync(
  `${out}-ours.json`,
  JSON.stringify(
    {
      model: modelName,
      precision,
      offload,
      hostCap,
      layout: layout("mst+checkpoint"),
      device: full.name,
      cap,
      fullUsable,
      rows,
      limits,
      fullCardPlan,
    },
    null,
    2,
  ) + "\n",
)

// ---------------------------------------------------------------------------------------------
// PyTorch, same job
// ---------------------------------------------------------------------------------------------

interface TorchRow {
  mode: string
  seq: number
  status: string
  tokens_per_s?: number
  step_ms?: number
  peak_reserved_gib?: number
  peak_allocated_gib?: number
}
interface TorchRun {
  rows: TorchRow[]
  max_seq: { mode: string; max_seq: number; first_oom: number | null; probes: TorchRow[] }[]
  gpu: string
  torch: string
  transformers: string | null
  implementation: string
}
function pytorch(extra: string[], file: string): TorchRun | undefined {
  if (python === "") return undefined
  const args = [
    "bench/pytorch_baseline.py",
    "--model",
    modelName,
    "--modes",
    "vanilla,checkpoint",
    "--out",
    file,
    "--max-seq-limit",
    String(seqLimit),
    ...(precision === "bf16-mixed" ? ["--master-fp32"] : []),
    ...(precision === "fp32" ? ["--dtype", "fp32"] : []),
    ...(backendName === "cpu" ? ["--device", "cpu"] : []),
    ...extra,
  ]
  log(`$ ${python} ${args.join(" ")}`)
  const r = spawnSync(python, args, { stdio: "inherit" })
  if (r.status !== 0) {
    log(`PyTorch baseline failed (exit ${r.status})`)
    return undefined
  }
  return JSON.parse(readFileSync(file, "utf8")) as TorchRun
}
mkdirSync(dirname(out), { recursive: true })
const torchSweep =
  seqs.length > 0 ? pytorch(["--seqs", seqs.join(","), "--steps", String(steps)], `${out}-pytorch.json`) : undefined
const torchLimits =
  maxSeq && backendName === "cuda"
    ? pytorch(
        [
          "--seqs",
          "1024",
          "--steps",
          "1",
          "--max-seq",
          ...(cap === undefined ? [] : ["--memory-gb", String(cap / GiB)]),
        ],
        `${out}-pytorch-max-seq.json`,
      )
    : undefined

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

const lines: string[] = []
const torchAt = (mode: string, seq: number) => torchSweep?.rows.find((r) => r.mode === mode && r.seq === seq)
const torchCell = (r: TorchRow | undefined) =>
  r === undefined
    ? "-"
    : r.status === "ok"
      ? `${r.tokens_per_s!.toFixed(0)} (${r.peak_reserved_gib?.toFixed(1) ?? "-"})`
      : r.status
const ours = (mode: Mode, seq: number) => rows.find((r) => r.mode === mode && r.seq === seq)
lines.push(`${modelName}, ${precision}, batch 1, on ${full.name}; tokens/s (peak GiB on the device)`, "")
lines.push(
  `| S | ${modes.map((m) => `miniseq ${m}`).join(" | ")} | PyTorch vanilla | PyTorch checkpoint |`,
  `|---|${modes.map(() => "---|").join("")}---|---|`,
)
for (const seq of seqs)
  lines.push(
    `| ${seq} | ${modes.map((m) => tps(ours(m, seq))).join(" | ")} | ${torchCell(torchAt("vanilla", seq))} | ${torchCell(torchAt("checkpoint", seq))} |`,
  )
const ratio = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined ? "-" : `${(a / b).toFixed(2)}×`
const at = 8192
if (seqs.includes(at)) {
  lines.push(
    "",
    `At S = ${at}:`,
    `- miniseq vanilla / PyTorch vanilla: ${ratio(ours("vanilla", at)?.tokensPerSecond, torchAt("vanilla", at)?.tokens_per_s)}`,
    `- miniseq checkpoint / PyTorch checkpoint: ${ratio(ours("checkpoint", at)?.tokensPerSecond, torchAt("checkpoint", at)?.tokens_per_s)}`,
    `- miniseq mst+checkpoint / PyTorch checkpoint: ${ratio(ours("mst+checkpoint", at)?.tokensPerSecond, torchAt("checkpoint", at)?.tokens_per_s)}`,
    `- miniseq mst / miniseq vanilla: ${ratio(ours("mst", at)?.tokensPerSecond, ours("vanilla", at)?.tokensPerSecond)}; mst+checkpoint / checkpoint: ${ratio(ours("mst+checkpoint", at)?.tokensPerSecond, ours("checkpoint", at)?.tokensPerSecond)}`,
  )
}
if (limits.length > 0) {
  lines.push(
    "",
    `Largest S that trains under ${capText} (multiples of 1024; miniseq: planned, then real steps down from there):`,
    "",
    "| framework, mode | trained | did not fit | planned | one step | peak GiB (ours: live; PyTorch: reserved) |",
    "|---|---|---|---|---|---|",
  )
  // Our cap is on what the allocator holds, so a step that trained stayed under it; what it
  // still holds after the step (deviceReserved) may be less than the live peak, so not shown.
  for (const l of limits)
    lines.push(
      `| miniseq ${l.mode} | ${l.trained?.seq ?? "-"} | ${l.firstOom ?? "-"} | ${l.planned} | ${l.trained?.stepMs === undefined ? "-" : `${(l.trained.stepMs / 1000).toFixed(1)} s`} | ${gib(l.trained?.devicePeak)} |`,
    )
  for (const l of torchLimits?.max_seq ?? []) {
    const probe = l.probes.find((p) => p.seq === l.max_seq && p.status === "ok")
    lines.push(
      `| PyTorch ${l.mode} | ${l.max_seq} | ${l.first_oom ?? "-"} | - | ${probe?.step_ms === undefined ? "-" : `${(probe.step_ms / 1000).toFixed(1)} s`} | ${probe?.peak_reserved_gib?.toFixed(1) ?? "-"} |`,
    )
  }
  const trainedAt = (m: Mode) => limits.find((l) => l.mode === m)?.trained?.seq
  const ck = torchLimits?.max_seq.find((l) => l.mode === "checkpoint")
  lines.push(
    "",
    `trained S, mst+checkpoint / miniseq vanilla: ${ratio(trainedAt("mst+checkpoint"), trainedAt("vanilla"))}; mst+checkpoint / PyTorch checkpoint: ${ratio(trainedAt("mst+checkpoint"), ck?.max_seq)}`,
  )
}
lines.push(
  "",
  `Planned largest S on the whole card (${gib(fullUsable)} GiB usable after warm-up, of ${gib(full.total)} GiB): ${modes.map((m) => `${m} ${fullCardPlan[m]}`).join(", ")}`,
)
log("\n" + lines.join("\n"))
writeFileSync(`${out}.md`, lines.join("\n") + "\n")
writeFileSync(
  `${out}.json`,
  JSON.stringify(
    {
      model: modelName,
      config: model,
      precision,
      steps,
      cap,
      device: full.name,
      deviceBytes: full.total,
      usableBytes: fullUsable,
      date: new Date().toISOString(),
      rows,
      limits,
      fullCardPlan,
      profiled,
      pytorch: { sweep: torchSweep, maxSeq: torchLimits },
    },
    null,
    2,
  ) + "\n",
)
log(`wrote ${out}.md and ${out}.json`)
