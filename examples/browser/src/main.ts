/**
 * The lab: (1) what fits on a GPU, by the planner; (2) train the tiny Llama and watch its loss,
 * held-out loss, speed, memory and samples; (3) live bytes over one step, vanilla beside
 * mst+checkpoint. WebGPU when the browser has it, else the fast CPU backend, with a notice.
 *
 * Query parameters set first values: model (a preset, section 1); steps, batch, seq, lr, mode,
 * every and chunks (section 2); backend=cpu skips WebGPU. Tests read the page's state from `window.__miniseq`.
 */
import { Cause, Effect, Exit, Layer } from "effect"
import {
  Backend,
  BadConfig,
  byteTokenizer,
  decodeConfigSync,
  type LlamaConfig,
  makeBatches,
  makeFastCpuBackend,
  type Mode,
  modes,
  parameterCount,
  planStep,
  type PrecisionName,
  presetNames,
  presets,
  trainValSplit,
} from "miniseq"
import { type BackendChoice, type BackendPreference, webgpuLayerForBrowser } from "./backend.js"
import { formatBytes, formatTokens, kindColours, kindLabels, stackedBar, timelineChart } from "./charts.js"
import type { FitsAnswer, FitsQuestion } from "./fits.js"
import type { WorkerReply, WorkerRequest } from "./planner-worker.js"
import { drawLossPlot } from "./plot.js"
import { sampleText, sampling } from "./sample.js"
import { stepTimeline } from "./timeline.js"
import { type LabRun, trainInPage } from "./trainer.js"

/** What the end-to-end test reads. */
interface Progress {
  backend: BackendChoice["kind"] | undefined
  backendDescription: string | undefined
  fallbackReason: string | undefined
  cpuNotice: string | undefined
  /** Runs started since the page loaded. */
  runs: number
  running: boolean
  /** The latest run: its steps, held-out losses and samples; how it ended. */
  steps: Array<{ step: number; loss: number; tokensPerSecond: number; peak: number }>
  heldOut: Array<{ step: number; loss: number }>
  samples: Array<{ step: number; text: string }>
  plannedPeak: number | undefined
  ended: "done" | "stopped" | "failed" | undefined
  error: string | undefined
  /** The planner's latest answer shown in section 1, and whether a newer question is being planned. */
  fits: FitsAnswer | undefined
  fitsPending: boolean
  timelines: Record<"vanilla" | "mst+checkpoint", { peak: number; ledgerPeak: number; events: number }> | undefined
}

declare global {
  interface Window {
    __miniseq: Progress
  }
}

const progress: Progress = {
  backend: undefined,
  backendDescription: undefined,
  fallbackReason: undefined,
  cpuNotice: undefined,
  runs: 0,
  running: false,
  steps: [],
  heldOut: [],
  samples: [],
  plannedPeak: undefined,
  ended: undefined,
  error: undefined,
  fits: undefined,
  fitsPending: false,
  timelines: undefined,
}
window.__miniseq = progress

const element = <T extends HTMLElement>(id: string): T => {
  const e = document.getElementById(id)
  if (e === null) throw new Error(`index.html has no #${id}`)
  return e as T
}
const ui = {
  status: element("status"),
  notice: element("backend-notice"),
  fitsModel: element<HTMLSelectElement>("fits-model"),
  fitsMemory: element<HTMLInputElement>("fits-memory"),
  fitsPrecision: element<HTMLSelectElement>("fits-precision"),
  fitsBatch: element<HTMLInputElement>("fits-batch"),
  fitsSeq: element<HTMLInputElement>("fits-seq"),
  fitsConfigBox: element("fits-config-box"),
  fitsConfig: element<HTMLTextAreaElement>("fits-config"),
  fitsStatus: element("fits-status"),
  fitsBody: element("fits-table").querySelector("tbody")!,
  fitsLegend: element("fits-legend"),
  fitsError: element("fits-error"),
  mode: element<HTMLSelectElement>("train-mode"),
  chunks: element<HTMLSelectElement>("train-chunks"),
  seq: element<HTMLInputElement>("train-seq"),
  batch: element<HTMLInputElement>("train-batch"),
  steps: element<HTMLInputElement>("train-steps"),
  lr: element<HTMLInputElement>("train-lr"),
  every: element<HTMLInputElement>("train-every"),
  start: element<HTMLButtonElement>("start"),
  stop: element<HTMLButtonElement>("stop"),
  stats: element("stats"),
  peaks: element("peaks"),
  plot: element<HTMLCanvasElement>("loss-plot"),
  samples: element("samples"),
  sampleHint: element("sample-hint"),
  error: element("error"),
  sideSeq: element<HTMLInputElement>("side-seq"),
  sideBatch: element<HTMLInputElement>("side-batch"),
  sideCaption: element("side-caption"),
  sideVanilla: element("side-vanilla"),
  sideVanillaCaption: element("side-vanilla-caption"),
  sideMst: element("side-mst"),
  sideMstCaption: element("side-mst-caption"),
}

const tiny = decodeConfigSync(presets.tiny)
const query = new URLSearchParams(location.search)
const preference: BackendPreference = query.get("backend") === "cpu" ? "cpu" : "auto"
// The CPU backend the page plans the side-by-side step for and samples text on.
const cpu = makeFastCpuBackend()
const cpuLayer = Layer.succeed(Backend, cpu)

// ---- reading the controls ----

/** A control's value as a number in [min, max] (an integer when asked), or a BadConfig naming the control. */
function numberIn(input: HTMLInputElement, what: string, min: number, max = Infinity, integer = true): number {
  const raw = input.value.trim()
  const n = Number(raw)
  const ok = raw !== "" && Number.isFinite(n) && n >= min && n <= max && (!integer || Number.isSafeInteger(n))
  if (!ok) {
    const kind = integer ? "a whole number" : "a number"
    const range = max === Infinity ? `${min} or more` : `from ${min} to ${max}`
    const message = `${what} must be ${kind} ${range}, got "${raw}"; change the field "${what}"`
    throw new BadConfig({ field: input.id, message })
  }
  return n
}

const chunksValue = (): number | "auto" => (ui.chunks.value === "auto" ? "auto" : Number(ui.chunks.value))

function readRun(): LabRun {
  return {
    model: tiny,
    mode: ui.mode.value as Mode,
    chunks: chunksValue(),
    seq: numberIn(ui.seq, "S", 2, tiny.max_position_embeddings),
    batch: numberIn(ui.batch, "Batch", 1, 64),
    steps: numberIn(ui.steps, "Steps", 1, 100_000),
    lr: numberIn(ui.lr, "Learning rate", 1e-6, 1, false),
    warmup: 5,
    seed: 1,
    every: numberIn(ui.every, "Sample every", 1),
  }
}

// ---- 1. what fits ----

const CUSTOM = "custom"
const worker = new Worker(new URL("./planner-worker.js", import.meta.url), { type: "module" })
let asked = 0
let inFlight = false
let waiting: FitsQuestion | undefined

function readFitsQuestion(): FitsQuestion {
  const gb = numberIn(ui.fitsMemory, "GPU memory", 0.001, 1e6, false)
  const batch = numberIn(ui.fitsBatch, "Batch", 1, 4096)
  const seq = numberIn(ui.fitsSeq, "S", 1, 2 ** 24)
  let model: LlamaConfig
  if (ui.fitsModel.value === CUSTOM) {
    let raw: unknown
    try {
      raw = JSON.parse(ui.fitsConfig.value)
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e)
      const message = `the pasted config.json is not JSON (${why}); paste the whole file, braces included`
      throw new BadConfig({ field: "config.json", message })
    }
    model = decodeConfigSync(raw)
  } else model = decodeConfigSync(presets[ui.fitsModel.value as keyof typeof presets])
  return {
    model,
    memoryBytes: Math.floor(gb * 2 ** 30),
    precision: ui.fitsPrecision.value as PrecisionName,
    batch,
    seq,
  }
}

/** Asks the worker; while it plans, only the newest question waits. */
function askFits(): void {
  let q: FitsQuestion
  try {
    q = readFitsQuestion()
  } catch (e) {
    ui.fitsError.textContent = e instanceof Error ? e.message : String(e)
    ui.fitsError.hidden = false
    return
  }
  ui.fitsError.hidden = true
  progress.fitsPending = true
  ui.fitsStatus.textContent = "Planning…"
  if (inFlight) waiting = q
  else post(q)
}
function post(q: FitsQuestion): void {
  inFlight = true
  worker.postMessage({ id: ++asked, question: q } satisfies WorkerRequest)
}
worker.onmessage = (e: MessageEvent<WorkerReply>) => {
  inFlight = false
  if (waiting !== undefined) {
    const q = waiting
    waiting = undefined
    post(q)
    return
  }
  progress.fitsPending = false
  if ("error" in e.data) {
    ui.fitsError.textContent = e.data.error
    ui.fitsError.hidden = false
    ui.fitsStatus.textContent = ""
    return
  }
  showFits(e.data.answer)
}

function showFits(a: FitsAnswer): void {
  progress.fits = a
  const q = a.question
  const scale = Math.max(q.memoryBytes, ...a.fits.map((f) => f.peak)) * 1.02
  ui.fitsBody.replaceChildren(
    ...a.fits.map((f) => {
      const tr = document.createElement("tr")
      tr.dataset.mode = f.mode
      tr.dataset.maxSeq = String(f.maxSeq)
      tr.dataset.peak = String(f.peak)
      const longest = f.maxSeq === 0 ? `none (${formatTokens(a.granularity)} does not fit)` : formatTokens(f.maxSeq)
      const over = f.peak > q.memoryBytes ? " ✗" : ""
      tr.innerHTML =
        `<td>${f.mode}</td><td class="num">${f.capped ? "≥ " : ""}${longest}</td>` +
        `<td class="num">${formatBytes(f.peak)}${over}${f.pass === "AdamW" ? '<br><span class="hint">in AdamW</span>' : ""}</td><td class="barcell">${stackedBar(f.atPeak, scale, q.memoryBytes)}</td>`
      return tr
    }),
  )
  const beyond =
    q.seq > q.model.max_position_embeddings
      ? ` S is past the model's max_position_embeddings (${q.model.max_position_embeddings}).`
      : ""
  ui.fitsStatus.textContent =
    `${parameterCount(q.model).toLocaleString("en-US")} parameters, batch ${q.batch}, ${q.precision}; S in multiples of ` +
    `${formatTokens(a.granularity)}, planned for a GPU backend (fused attention and cross-entropy) in ${Math.round(a.milliseconds)} ms.${beyond}`
}

function setUpFits(): void {
  const first = presetNames.find((n) => n === query.get("model")) ?? "llama3-8b"
  for (const name of presetNames) ui.fitsModel.add(new Option(name, name, name === first, name === first))
  ui.fitsModel.add(new Option("paste a config.json…", CUSTOM))
  ui.fitsConfig.value = JSON.stringify(presets["llama-3.2-1b"], null, 1)
  ui.fitsLegend.innerHTML = (Object.keys(kindColours) as Array<keyof typeof kindColours>)
    .map((k) => `<span><i style="background:${kindColours[k]}"></i>${kindLabels[k]}</span>`)
    .join("")
    .concat(`<span>┆ the GPU's memory</span>`)
  let timer: ReturnType<typeof setTimeout> | undefined
  const changed = () => {
    ui.fitsConfigBox.hidden = ui.fitsModel.value !== CUSTOM
    clearTimeout(timer)
    timer = setTimeout(askFits, 150)
  }
  for (const c of [ui.fitsModel, ui.fitsMemory, ui.fitsPrecision, ui.fitsBatch, ui.fitsSeq, ui.fitsConfig])
    c.addEventListener("input", changed)
  askFits()
}

// ---- 3. side by side ----

/** The tiny model's step at the section's own S and batch (replayed on the counting backend: instant at any S). */
function showTimelines(): void {
  let seq: number
  let batch: number
  try {
    seq = numberIn(ui.sideSeq, "S", 2, tiny.max_position_embeddings)
    batch = numberIn(ui.sideBatch, "Batch", 1, 256)
  } catch (e) {
    ui.sideCaption.textContent = e instanceof Error ? e.message : String(e)
    return
  }
  const [vanilla, mst] = (["vanilla", "mst+checkpoint"] as const).map((mode) =>
    stepTimeline(tiny, batch, seq, mode, cpu),
  ) as [ReturnType<typeof stepTimeline>, ReturnType<typeof stepTimeline>]
  const scale = Math.max(vanilla.peak, mst.peak) * 1.05
  ui.sideVanilla.innerHTML = timelineChart(vanilla.live, vanilla.optimizerStart, scale, "#ef4444")
  ui.sideMst.innerHTML = timelineChart(mst.live, mst.optimizerStart, scale, "#2563eb")
  ui.sideVanillaCaption.textContent = `vanilla: peak ${formatBytes(vanilla.peak)}`
  ui.sideMstCaption.textContent = `mst+checkpoint (M ${mst.chunks.mlp}/${mst.chunks.lm}): peak ${formatBytes(mst.peak)} (${(vanilla.peak / mst.peak).toFixed(2)}× less)`
  ui.sideCaption.textContent =
    `The tiny model at batch ${batch} × ${seq} tokens: live bytes after each allocation and free the executor makes in one ` +
    `training step (on the CPU backend's kernels; the same scale on both). The peaks are the executor's ledger's own.`
  const entry = (t: typeof vanilla) => ({ peak: t.peak, ledgerPeak: t.ledgerPeak, events: t.live.length })
  progress.timelines = { vanilla: entry(vanilla), "mst+checkpoint": entry(mst) }
}

// ---- 2. train and watch ----

let corpus: { train: Int32Array; val: Int32Array } | undefined
let stopper: AbortController | undefined

function showError(message: string): void {
  progress.error = message
  ui.error.textContent = message
  ui.error.hidden = false
}

function showBackend(choice: BackendChoice): void {
  progress.backend = choice.kind
  progress.backendDescription = choice.description
  progress.fallbackReason = choice.fallbackReason
  progress.cpuNotice = choice.cpuNotice
  ui.status.textContent = `Backend: ${choice.description}`
  if (choice.fallbackReason !== undefined) {
    const simd = choice.cpuNotice === undefined ? "" : ` ${choice.cpuNotice}.`
    ui.notice.textContent = `WebGPU is not available, so training runs on the CPU backend: ${choice.fallbackReason}.${simd}`
    ui.notice.hidden = false
  }
}

/** Each sample: 48 bytes after the first 32 of the held-out text, seeded by the step. */
const SAMPLE_TOKENS = 48
const SAMPLE_PROMPT = 32

async function startRun(): Promise<void> {
  let run: LabRun
  try {
    run = readRun()
  } catch (e) {
    showError(e instanceof Error ? e.message : String(e))
    return
  }
  if (corpus === undefined) return showError("the corpus has not loaded yet")
  ui.error.hidden = true
  progress.runs++
  progress.running = true
  progress.steps = []
  progress.heldOut = []
  progress.samples = []
  progress.plannedPeak = undefined
  progress.ended = undefined
  progress.error = undefined
  ui.samples.replaceChildren()
  ui.start.disabled = true
  ui.stop.disabled = false
  stopper = new AbortController()

  const batches = makeBatches({ tokens: corpus.train, batch: run.batch, seq: run.seq, seed: run.seed })
  const validation = makeBatches({ tokens: corpus.val, batch: run.batch, seq: run.seq, seed: run.seed })
  const prompt = corpus.val.slice(0, SAMPLE_PROMPT)
  const draw = () => drawLossPlot(ui.plot, progress.steps, { totalSteps: run.steps, heldOut: progress.heldOut })
  draw()
  ui.stats.textContent = "Starting…"
  const started = performance.now()
  const showStats = () => {
    const s = progress.steps.at(-1)
    if (s === undefined) return
    const held = progress.heldOut.at(-1)
    ui.stats.textContent =
      `step ${s.step}/${run.steps} · loss ${s.loss.toFixed(3)}` +
      (held ? ` · held-out ${held.loss.toFixed(3)} (step ${held.step})` : "") +
      ` · ${Math.round(s.tokensPerSecond).toLocaleString("en-US")} tokens/s`
  }
  const hooks = {
    onStep: (s: Progress["steps"][number]) => {
      progress.steps.push(s)
      showStats()
      const planned = progress.plannedPeak
      ui.peaks.textContent =
        `measured peak ${formatBytes(s.peak)} (${s.peak.toLocaleString("en-US")} B)` +
        (planned === undefined ? "" : ` · planned ${formatBytes(planned)} (${planned.toLocaleString("en-US")} B)`)
      draw()
    },
    onCheck: async (step: number, heldOut: number, parameters: Record<string, Float32Array>) => {
      progress.heldOut.push({ step, loss: heldOut })
      showStats()
      const text = await Effect.runPromise(
        sampleText(tiny, parameters, prompt, SAMPLE_TOKENS, step).pipe(Effect.provide(cpuLayer)),
      )
      progress.samples.push({ step, text })
      const li = document.createElement("li")
      const b = document.createElement("b")
      b.textContent = `step ${step}, held-out loss ${heldOut.toFixed(3)}: `
      li.append(b, `…${byteTokenizer.decode(prompt.subarray(-16))}`)
      const generated = document.createElement("span")
      generated.className = "generated"
      generated.textContent = text
      li.append(generated)
      ui.samples.prepend(li)
      draw()
    },
  }
  const program = Effect.gen(function* () {
    const backend = yield* Backend
    const opts = { mode: run.mode, mlpChunks: run.chunks, lmChunks: run.chunks }
    progress.plannedPeak = planStep(run.model, run.batch, run.seq, opts, backend).peak
    yield* trainInPage(run, batches, validation, hooks)
  }).pipe(Effect.provide(webgpuLayerForBrowser(showBackend, preference)))
  const exit = await Effect.runPromiseExit(program, { signal: stopper.signal })
  const seconds = ((performance.now() - started) / 1000).toFixed(1)
  const n = progress.steps.length
  if (Exit.isSuccess(exit)) {
    progress.ended = "done"
    ui.status.textContent = `Backend: ${progress.backendDescription} — done: ${n} steps in ${seconds} s.`
  } else if (Cause.hasInterruptsOnly(exit.cause)) {
    progress.ended = "stopped"
    ui.status.textContent = `Backend: ${progress.backendDescription} — stopped after ${n} steps (${seconds} s). Press Start to train again.`
  } else {
    progress.ended = "failed"
    showError(Cause.pretty(exit.cause))
    ui.status.textContent = "Training failed."
  }
  progress.running = false
  ui.start.disabled = false
  ui.stop.disabled = true
}

function setUpTraining(): void {
  for (const m of modes) ui.mode.add(new Option(m, m, m === "mst", m === "mst"))
  const initial: Array<[HTMLInputElement | HTMLSelectElement, string]> = [
    [ui.steps, "steps"],
    [ui.batch, "batch"],
    [ui.seq, "seq"],
    [ui.lr, "lr"],
    [ui.mode, "mode"],
    [ui.every, "every"],
    [ui.chunks, "chunks"],
  ]
  for (const [control, name] of initial) {
    const v = query.get(name)
    if (v !== null) control.value = v
  }
  ui.start.addEventListener("click", () => {
    startRun().catch((e: unknown) => showError(e instanceof Error ? e.message : String(e)))
  })
  ui.stop.addEventListener("click", () => {
    ui.stop.disabled = true
    stopper?.abort()
  })
  drawLossPlot(ui.plot, [], { totalSteps: Number(ui.steps.value) || 300 })
  ui.sampleHint.textContent =
    `Samples: ${SAMPLE_TOKENS} bytes after the first ${SAMPLE_PROMPT} of the held-out text, by the library's generate ` +
    `(KV cache) at temperature ${sampling.temperature}, top-k ${sampling.topK}, seeded by the step.`
}

async function main(): Promise<void> {
  setUpFits()
  setUpTraining()
  for (const c of [ui.sideSeq, ui.sideBatch]) c.addEventListener("input", showTimelines)
  showTimelines()
  ui.start.disabled = true
  // Everything the page needs comes now: after this, no request leaves the page.
  const response = await fetch("data/corpus.txt")
  if (!response.ok) throw new Error(`GET data/corpus.txt: ${response.status} ${response.statusText}`)
  corpus = trainValSplit(byteTokenizer.encode(await response.text()))
  ui.start.disabled = false
  const params = parameterCount(tiny).toLocaleString("en-US")
  ui.status.textContent = `Ready. The tiny Llama: ${tiny.num_hidden_layers} layers, hidden ${tiny.hidden_size}, ${params} parameters.`
}

main().catch((e: unknown) => showError(e instanceof Error ? e.message : String(e)))
