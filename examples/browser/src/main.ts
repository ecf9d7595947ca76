/**
 * The browser example: train the tiny Llama on the shipped corpus, on WebGPU when the browser
 * has it (else the CPU backend, with a notice saying why), and plot the loss live.
 *
 * Query parameters: steps, batch, seq, lr, warmup, seed, mode (vanilla | checkpoint | mst |
 * mst+checkpoint) and backend (auto | cpu), e.g. ?steps=20&batch=2&seq=64.
 * Tests read progress from `window.__miniseq`.
 */
import { Cause, Effect, Exit } from "effect"
import {
  byteTokenizer,
  decodeConfigSync,
  makeBatches,
  type Mode,
  modes,
  parameterCount,
  presets,
  type StepRecord,
  train,
  trainValSplit,
} from "miniseq"
import { type BackendChoice, type BackendPreference, webgpuLayerForBrowser } from "./backend.js"
import { drawLossPlot } from "./plot.js"

/** What the end-to-end test reads. */
interface Progress {
  backend: BackendChoice["kind"] | undefined
  backendDescription: string | undefined
  fallbackReason: string | undefined
  steps: Array<{ step: number; loss: number; tokensPerSecond: number }>
  done: boolean
  error: string | undefined
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
  steps: [],
  done: false,
  error: undefined,
}
window.__miniseq = progress

const element = <T extends HTMLElement>(id: string): T => {
  const e = document.getElementById(id)
  if (e === null) throw new Error(`index.html has no #${id}`)
  return e as T
}
const ui = {
  info: element("info"),
  start: element<HTMLButtonElement>("start"),
  status: element("status"),
  notice: element("backend-notice"),
  plot: element<HTMLCanvasElement>("loss-plot"),
  stats: element("stats"),
  error: element("error"),
}

// ---- settings from the query string ----

const query = new URLSearchParams(location.search)

function positiveInt(name: string, fallback: number): number {
  const raw = query.get(name)
  if (raw === null) return fallback
  const n = Number(raw)
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`?${name}= must be a positive integer, got "${raw}"`)
  return n
}
function positiveNumber(name: string, fallback: number): number {
  const raw = query.get(name)
  if (raw === null) return fallback
  const n = Number(raw)
  if (!(Number.isFinite(n) && n > 0)) throw new Error(`?${name}= must be a positive number, got "${raw}"`)
  return n
}
function oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
  const raw = query.get(name)
  if (raw === null) return fallback
  if (!(allowed as readonly string[]).includes(raw))
    throw new Error(`?${name}= must be one of ${allowed.join(", ")}, got "${raw}"`)
  return raw as T
}

const model = decodeConfigSync(presets.tiny)

function readSettings() {
  const seq = positiveInt("seq", 64)
  if (seq > model.max_position_embeddings)
    throw new Error(
      `?seq= must be at most ${model.max_position_embeddings} (the model's max_position_embeddings), got ${seq}`,
    )
  return {
    // Defaults sized for the CPU fallback: 60 steps of 4×64 tokens take well under a minute.
    steps: positiveInt("steps", 60),
    batch: positiveInt("batch", 4),
    seq,
    lr: positiveNumber("lr", 1e-2),
    warmup: positiveInt("warmup", 5),
    seed: positiveInt("seed", 1),
    mode: oneOf<Mode>("mode", modes, "mst"),
    backend: oneOf<BackendPreference>("backend", ["auto", "cpu"], "auto"),
  }
}

// ---- the page ----

function showError(message: string): void {
  progress.error = message
  ui.error.textContent = message
  ui.error.hidden = false
  ui.status.textContent = "Training failed."
}

function showBackend(choice: BackendChoice): void {
  progress.backend = choice.kind
  progress.backendDescription = choice.description
  progress.fallbackReason = choice.fallbackReason
  ui.status.textContent = `Backend: ${choice.description}`
  if (choice.fallbackReason !== undefined) {
    ui.notice.textContent = `WebGPU is not available, so training runs on the CPU backend (slower): ${choice.fallbackReason}.`
    ui.notice.hidden = false
  }
}

async function run(settings: ReturnType<typeof readSettings>): Promise<void> {
  ui.status.textContent = "Fetching the corpus…"
  const response = await fetch("data/corpus.txt")
  if (!response.ok) throw new Error(`GET data/corpus.txt: ${response.status} ${response.statusText}`)
  const text = await response.text()
  // Byte-level tokens, like `miniseq train --tokenizer byte`; the last 5% is held out.
  const split = trainValSplit(byteTokenizer.encode(text))
  const batches = makeBatches({ tokens: split.train, batch: settings.batch, seq: settings.seq, seed: settings.seed })

  ui.status.textContent = "Starting the backend…"
  const points: Array<{ step: number; loss: number }> = []
  const onStep = (r: StepRecord) => {
    points.push({ step: r.step, loss: r.loss })
    progress.steps.push({ step: r.step, loss: r.loss, tokensPerSecond: r.tokensPerSecond })
    ui.stats.textContent = `step ${r.step}/${settings.steps} · loss ${r.loss.toFixed(3)} · ${Math.round(r.tokensPerSecond).toLocaleString("en-US")} tokens/s`
    drawLossPlot(ui.plot, points, { totalSteps: settings.steps })
  }
  const options = {
    model,
    mode: settings.mode,
    batch: settings.batch,
    seq: settings.seq,
    steps: settings.steps,
    lr: settings.lr,
    warmup: settings.warmup,
    seed: settings.seed,
  }
  const started = performance.now()
  const exit = await Effect.runPromiseExit(
    train(options, batches, onStep).pipe(Effect.provide(webgpuLayerForBrowser(showBackend, settings.backend))),
  )
  if (Exit.isFailure(exit)) throw new Error(Cause.pretty(exit.cause))
  const seconds = (performance.now() - started) / 1000
  const first = points[0]?.loss ?? NaN
  const last = points.at(-1)?.loss ?? NaN
  ui.status.textContent = `Backend: ${progress.backendDescription} — done: ${points.length} steps in ${seconds.toFixed(1)} s, loss ${first.toFixed(3)} → ${last.toFixed(3)}.`
}

function main(): void {
  let settings: ReturnType<typeof readSettings>
  try {
    settings = readSettings()
  } catch (e) {
    showError(e instanceof Error ? e.message : String(e))
    ui.start.disabled = true
    return
  }
  const params = parameterCount(model)
  ui.info.textContent =
    `Model: tiny Llama — ${model.num_hidden_layers} layers, hidden ${model.hidden_size}, ${model.num_attention_heads} heads, ` +
    `byte vocabulary (${model.vocab_size}), ${params.toLocaleString("en-US")} parameters. ` +
    `Training: ${settings.steps} steps of ${settings.batch}×${settings.seq} tokens, mode ${settings.mode}, AdamW lr ${settings.lr}.`
  drawLossPlot(ui.plot, [], { totalSteps: settings.steps })
  ui.start.addEventListener("click", () => {
    ui.start.disabled = true
    run(settings).then(
      () => {
        progress.done = true
      },
      (e: unknown) => {
        showError(e instanceof Error ? e.message : String(e))
        progress.done = true
      },
    )
  })
}

main()
