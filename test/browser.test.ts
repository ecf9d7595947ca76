// End to end: the browser lab (examples/browser) in real headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core). Twice: with WebGPU enabled — on a machine
// without a GPU Chromium's adapter is SwiftShader, its software Vulkan — and without it, where
// the page must fall back to the fast CPU backend and say why. The numbers the page shows are
// checked against the library's, computed here in Node.
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type BrowserContext, chromium, type Page } from "playwright-core"
import { Effect } from "effect"
import * as lib from "miniseq"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { sampleText } from "../examples/browser/src/sample.js"
import { makeFastCpuBackend } from "../src/backends/cpu-fast/index.js"
import { gpuFusedRoutines } from "../src/cli/plan-command.js"
import { sameKernel } from "../src/core/routines/registry.js"
import { decodeConfigSync, presets } from "../src/models/config.js"
import { modes } from "../src/models/llama.js"
import { precisions } from "../src/models/optimizer.js"
import { largestFitting, planStep } from "../src/models/planner.js"

const CHROMIUM = "/usr/bin/chromium"
const repo = join(import.meta.dirname, "..")
const example = join(repo, "examples", "browser")
/** Where the screenshots go (runs/ is git-ignored). */
const output = join(repo, "runs", "browser-test")
const missing = existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is missing (apt-get install chromium)`
const inCI = process.env.CI === "true"
if (missing !== undefined && !inCI) console.warn(`test/browser.test.ts skipped: ${missing}`)

// This machine's network is closed: without the background-networking flags Chromium keeps
// trying (and failing) to reach Google's services. Playwright adds --headless itself.
const baseArgs = [
  "--no-sandbox",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
]

type ByKind = Record<"weights" | "gradients" | "optimizer" | "activations" | "temporaries", number>
interface Progress {
  backend: "webgpu" | "cpu" | undefined
  backendDescription: string | undefined
  fallbackReason: string | undefined
  runs: number
  running: boolean
  steps: Array<{ step: number; loss: number; tokensPerSecond: number; peak: number }>
  heldOut: Array<{ step: number; loss: number }>
  samples: Array<{ step: number; text: string }>
  plannedPeak: number | undefined
  ended: "done" | "stopped" | "failed" | undefined
  error: string | undefined
  fits:
    | {
        question: { memoryBytes: number; batch: number; seq: number; precision: string }
        granularity: number
        fits: Array<{ mode: string; maxSeq: number; capped: boolean; peak: number; atPeak: ByKind }>
      }
    | undefined
  fitsPending: boolean
  timelines: Record<"vanilla" | "mst+checkpoint", { peak: number; ledgerPeak: number; events: number }> | undefined
}

let server: ChildProcess | undefined
let url = ""
const profiles: string[] = []

interface Lab {
  context: BrowserContext
  page: Page
  problems: string[]
  /** URLs requested after the page said it was ready. */
  lateRequests: string[]
}

/** Opens the lab in a fresh Chromium profile and waits until it is ready (the corpus is loaded). */
async function openLab(query: string, extraArgs: readonly string[]): Promise<Lab> {
  const profile = mkdtempSync(join(tmpdir(), "miniseq-chromium-"))
  profiles.push(profile)
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...baseArgs, ...extraArgs],
    viewport: { width: 900, height: 900 },
  })
  const page = context.pages()[0] ?? (await context.newPage())
  const problems: string[] = []
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`))
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error: ${m.text()}`)
  })
  let ready = false
  const lateRequests: string[] = []
  page.on("request", (r) => {
    if (ready) lateRequests.push(r.url())
  })
  await page.goto(`${url}${query}`)
  await page.locator("#start:enabled").waitFor({ timeout: 20_000 })
  ready = true
  return { context, page, problems, lateRequests }
}

const progressOf = (page: Page) => page.evaluate(() => (globalThis as unknown as { __miniseq: Progress }).__miniseq)

/** Presses Start and waits until the run ends (done, stopped or failed). */
async function trainToEnd(page: Page): Promise<Progress> {
  await page.click("#start")
  await page.waitForFunction(
    () => {
      const p = (globalThis as unknown as { __miniseq: Progress }).__miniseq
      return p.running === false && p.ended !== undefined
    },
    null,
    { timeout: 50_000, polling: 200 },
  )
  return progressOf(page)
}

/** Starts a long run and stops it once `steps` steps are done; checks it stays stopped. */
async function stopAfter(page: Page, steps: number): Promise<void> {
  await page.click("#start")
  await page.waitForFunction(
    (n) => (globalThis as unknown as { __miniseq: Progress }).__miniseq.steps.length >= n,
    steps,
    { timeout: 20_000, polling: 100 },
  )
  await page.click("#stop")
  await page.waitForFunction(
    () => (globalThis as unknown as { __miniseq: Progress }).__miniseq.ended === "stopped",
    null,
    { timeout: 10_000, polling: 100 },
  )
  const stopped = await progressOf(page)
  expect(stopped.error).toBeUndefined()
  expect(stopped.steps.length).toBeLessThan(1000)
  await page.waitForTimeout(300)
  expect((await progressOf(page)).steps.length).toBe(stopped.steps.length) // it really stopped
  expect(await page.locator("#start").isEnabled()).toBe(true)
  expect(await page.locator("#status").textContent()).toContain("stopped")
}

/** Waits until the page shows the planner's answer for this memory and S. */
async function waitForFits(page: Page, memoryBytes: number, seq: number): Promise<void> {
  await page.waitForFunction(
    ([bytes, s]) => {
      const p = (globalThis as unknown as { __miniseq: Progress }).__miniseq
      return !p.fitsPending && p.fits?.question.memoryBytes === bytes && p.fits.question.seq === s
    },
    [memoryBytes, seq] as const,
    { timeout: 30_000, polling: 200 },
  )
}

/** Waits until `selector`'s text contains `text`. */
const waitForText = (page: Page, selector: string, text: string) =>
  page.locator(selector, { hasText: text }).waitFor({ timeout: 5_000 })

/** Section 1's table as the page shows it: each row's mode, longest S and peak at S. */
async function fitsRows(page: Page) {
  const rows = await page.locator("#fits-table tbody tr").all()
  return Promise.all(
    rows.map(async (tr) => ({
      mode: (await tr.getAttribute("data-mode")) ?? undefined,
      maxSeq: Number(await tr.getAttribute("data-max-seq")),
      peak: Number(await tr.getAttribute("data-peak")),
    })),
  )
}

function expectLearned(p: Progress, steps: number): void {
  expect(p.error).toBeUndefined()
  expect(p.ended).toBe("done")
  const losses = p.steps.map((s) => s.loss)
  expect(losses.length).toBe(steps)
  for (const loss of losses) expect(Number.isFinite(loss)).toBe(true)
  expect(losses.at(-1)!).toBeLessThan(losses[0]!)
  // The measured peak (the executor's ledger on the device) is the plan's, every step.
  for (const s of p.steps) expect(s.peak).toBe(p.plannedPeak)
  expect(p.heldOut.length).toBeGreaterThan(0)
  for (const h of p.heldOut) expect(Number.isFinite(h.loss)).toBe(true)
  // A sample after every check, 48 generated bytes each.
  expect(p.samples.map((s) => s.step)).toEqual(p.heldOut.map((h) => h.step))
  for (const s of p.samples) expect(new TextEncoder().encode(s.text).length).toBeGreaterThanOrEqual(40)
}

const report = (name: string, p: Progress, seconds: number) => {
  const s = p.steps
  console.log(
    `browser (${name}): ${p.backendDescription}, ${s.length} steps, loss ${s[0]?.loss.toFixed(3)} → ${s.at(-1)?.loss.toFixed(3)}, ` +
      `held-out ${p.heldOut.at(-1)?.loss.toFixed(3)}, ${Math.round(s.at(-1)?.tokensPerSecond ?? 0)} tokens/s, ${seconds.toFixed(1)} s; ` +
      `last sample ${JSON.stringify(p.samples.at(-1)?.text)}`,
  )
}

/** `miniseq plan --max-seq`'s answer, computed here: the CLI's GPU routines, multiples of 1024 up to 2^24. */
function libraryFits(config: unknown, memory: number, batch: number, seq: number) {
  const c = decodeConfigSync(config)
  const gpu = { routines: sameKernel(gpuFusedRoutines, () => {}) }
  const planAt = (mode: (typeof modes)[number], S: number) =>
    planStep(c, batch, S, { mode, precision: precisions.bf16, allowBeyondMaxPosition: true }, gpu)
  return modes.map((mode) => ({
    mode,
    maxSeq: largestFitting((S) => planAt(mode, S).peak <= memory, 1024, 2 ** 24).n,
    peak: planAt(mode, seq).peak,
  }))
}

/** The library's own run of the page's settings, in Node on the fast CPU backend, and a sample from its weights. */
async function trainInNode(o: {
  mode: "mst"
  batch: number
  seq: number
  steps: number
  lr: number
  warmup: number
  seed: number
}) {
  const model = lib.decodeConfigSync(lib.presets.tiny)
  const split = lib.trainValSplit(lib.byteTokenizer.encode(readFileSync(join(repo, "data", "corpus.txt"), "utf8")))
  const batches = lib.makeBatches({ tokens: split.train, batch: o.batch, seq: o.seq, seed: o.seed })
  // The page's kernels: a browser has no native addon, so Node runs cpu-fast's WebAssembly ones
  // too (with the native GEMM the losses differ in float32 summation order, ~3e-5 by step 40).
  const layer = lib.fastCpuBackendLayer(lib.makeFastCpuBackend({ native: false }))
  const result = await Effect.runPromise(lib.train({ model, ...o }, batches).pipe(Effect.provide(layer)))
  return {
    losses: result.records.map((r) => r.loss),
    sample: (step: number) =>
      Effect.runPromise(
        sampleText(model, result.parameters, split.val.slice(0, 32), 48, step).pipe(Effect.provide(layer)),
      ),
  }
}

describe.skipIf(missing !== undefined && !inCI)("the browser lab in headless Chromium", () => {
  beforeAll(async () => {
    if (missing !== undefined) throw new Error(`CI=true needs the browser: ${missing}`)
    execFileSync(process.execPath, [join(example, "build.mjs")], { stdio: "inherit" })
    const child = spawn(process.execPath, [join(example, "serve.mjs"), "0"], { stdio: ["ignore", "pipe", "inherit"] })
    server = child
    // serve.mjs prints its URL (random port on 127.0.0.1) once it listens.
    url = await new Promise<string>((resolve, reject) => {
      let out = ""
      child.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString()
        if (out.includes("\n")) resolve(out.trim())
      })
      child.once("exit", (code) => reject(new Error(`serve.mjs exited with ${code} before printing its URL`)))
    })
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/)
    mkdirSync(output, { recursive: true })
  }, 30_000)

  afterAll(() => {
    server?.kill()
    for (const dir of profiles) rmSync(dir, { recursive: true, force: true })
  })

  // The same batches (batch, seq, seed) in both runs: step 1's loss, before any update, must agree.
  const shape = "batch=2&seq=32"
  let webgpuFirstLoss: number | undefined

  it("trains on WebGPU when Chromium offers it (--enable-unsafe-webgpu), with no notice, and samples text", async () => {
    const started = performance.now()
    // SwiftShader runs about 100–200 tokens/s here, hence few, small steps.
    // model=tiny: section 1 plans the tiny model first (quick), leaving SwiftShader the cores.
    const lab = await openLab(`?model=tiny&steps=1000&every=2&${shape}`, ["--enable-unsafe-webgpu"])
    try {
      // Stop after a step (the device is given back), then train again without a reload.
      await stopAfter(lab.page, 1)
      await lab.page.fill("#train-steps", "4")
      const p = await trainToEnd(lab.page)
      expect(p.runs).toBe(2)
      // The planner, as the library answers it: the tiny model on 1 GiB, memory by kind at S = 1024.
      await lab.page.fill("#fits-memory", "1")
      await lab.page.fill("#fits-seq", "1024")
      await waitForFits(lab.page, 2 ** 30, 1024)
      expect(await fitsRows(lab.page)).toEqual(libraryFits(presets.tiny, 2 ** 30, 1, 1024))
      report("WebGPU enabled", p, (performance.now() - started) / 1000)
      expect(p.backend, `fell back to the CPU: ${p.fallbackReason}`).toBe("webgpu")
      expect(await lab.page.locator("#backend-notice").isVisible()).toBe(false)
      expect(await lab.page.locator("#status").textContent()).toContain("WebGPU")
      expectLearned(p, 4)
      expect(await lab.page.locator("#samples li").count()).toBe(p.samples.length)
      expect(lab.problems).toEqual([])
      expect(lab.lateRequests).toEqual([])
      webgpuFirstLoss = p.steps[0]!.loss
    } finally {
      await lab.context.close()
    }
  }, 90_000)

  it("on the CPU fallback: plans a preset as the library does, draws the step's ledger, trains, stops and trains again", async () => {
    const started = performance.now()
    // model=tiny: the page's first plan is quick; the test then picks the preset it checks.
    const lab = await openLab(`?model=tiny&${shape}`, ["--disable-gpu"])
    const { page } = lab
    try {
      // 1. What fits: llama-3.2-1b on a 24 GiB GPU, bf16, batch 1, memory by kind at S = 4096.
      const memory = 24 * 2 ** 30
      await page.selectOption("#fits-model", "llama-3.2-1b")
      await page.fill("#fits-memory", "24")
      await page.fill("#fits-seq", "4096")
      await waitForFits(page, memory, 4096)
      const rows = await fitsRows(page)
      const texts = await page.locator("#fits-table tbody tr").allTextContents()
      const expected = libraryFits(presets["llama-3.2-1b"], memory, 1, 4096)
      expect(rows).toEqual(expected)
      // The table's text shows those numbers: the longest S in k tokens.
      for (const [i, text] of texts.entries()) expect(text).toContain(`${expected[i]!.maxSeq / 1024}k`)
      expect(expected.at(-1)!.maxSeq).toBeGreaterThan(expected[0]!.maxSeq) // mst+checkpoint beats vanilla
      // The bars' kinds add up to the peak of the larger pass.
      for (const f of (await progressOf(page)).fits!.fits) {
        const sum = Object.values(f.atPeak).reduce((a, b) => a + b, 0)
        expect(sum).toBe(f.peak)
      }

      // A pasted config.json (a 4-layer llama-3.2-1b) on 8 GiB is planned the same way; bad input is named.
      const pasted = { ...presets["llama-3.2-1b"], num_hidden_layers: 4 }
      await page.selectOption("#fits-model", "custom")
      await page.fill("#fits-config", JSON.stringify(pasted))
      await page.fill("#fits-memory", "8")
      await waitForFits(page, 8 * 2 ** 30, 4096)
      const pastedRows = await fitsRows(page)
      expect(pastedRows).toEqual(libraryFits(pasted, 8 * 2 ** 30, 1, 4096))
      const fitsError = page.locator("#fits-error")
      await page.fill("#fits-config", "{ not json")
      await fitsError.waitFor({ state: "visible", timeout: 5_000 })
      expect(await fitsError.textContent()).toContain("the pasted config.json is not JSON")
      await page.fill("#fits-config", JSON.stringify({ ...pasted, hidden_size: -3 }))
      await waitForText(page, "#fits-error", "hidden_size")
      await page.fill("#fits-memory", "-1")
      await waitForText(page, "#fits-error", 'GPU memory must be a number from 0.001 to 1000000, got "-1"')

      // 3. Side by side: the page's timelines peak where the planner says (its CPU kernels), and
      //    the highest point drawn is the executor ledger's peak.
      const timelines = (await progressOf(page)).timelines!
      const tiny = decodeConfigSync(presets.tiny)
      const cpu = makeFastCpuBackend()
      for (const mode of ["vanilla", "mst+checkpoint"] as const) {
        const planned = planStep(tiny, 4, 1024, { mode }, cpu).peak
        expect(timelines[mode].ledgerPeak).toBe(planned)
        expect(timelines[mode].peak).toBe(planned)
      }
      expect(timelines["mst+checkpoint"].peak).toBeLessThan(timelines.vanilla.peak / 2)

      // 2. Train: start a long run, stop it, start again without a reload.
      await page.fill("#train-steps", "1000")
      await stopAfter(page, 3)

      await page.fill("#train-steps", "40")
      await page.fill("#train-every", "20")
      const p = await trainToEnd(page)
      report("no WebGPU", p, (performance.now() - started) / 1000)
      expect(p.runs).toBe(2)
      expect(p.backend).toBe("cpu")
      expect(p.backendDescription).toContain("WebAssembly SIMD")
      const notice = page.locator("#backend-notice")
      expect(await notice.isVisible()).toBe(true)
      expect(await notice.textContent()).toContain("CPU backend")
      expect(await notice.textContent()).toContain(p.fallbackReason)
      expectLearned(p, 40)
      expect(p.heldOut.map((h) => h.step)).toEqual([20, 40])
      // The page's run is the library's `train` (same passes, schedule, seed and batches), and its
      // last sample is the library's `generate` on the weights `train` ends with.
      const library = await trainInNode({ mode: "mst", batch: 2, seq: 32, steps: 40, lr: 0.01, warmup: 5, seed: 1 })
      const worst = Math.max(...p.steps.map((s, i) => Math.abs(s.loss - library.losses[i]!)))
      console.log(`browser: the page's losses against train() in Node: largest difference ${worst}`)
      expect(worst).toBeLessThan(1e-5)
      expect(p.samples.at(-1)!.text).toBe(await library.sample(40))
      expect(await page.locator("#samples li").count()).toBe(2)
      expect(await page.locator("#peaks").textContent()).toContain(`${p.plannedPeak!.toLocaleString("en-US")} B`)
      if (webgpuFirstLoss !== undefined)
        expect(Math.abs(p.steps[0]!.loss - webgpuFirstLoss)).toBeLessThan(1e-3 * webgpuFirstLoss)
      await page.screenshot({ path: join(output, "lab.png"), fullPage: true })

      // A phone-sized screen: nothing wider than the viewport.
      await page.setViewportSize({ width: 390, height: 844 })
      const overflow = await page.evaluate("document.documentElement.scrollWidth")
      expect(overflow).toBeLessThanOrEqual(390)
      await page.screenshot({ path: join(output, "lab-phone.png"), fullPage: true })
      console.log(`browser: screenshots in ${output}`)

      expect(lab.problems).toEqual([])
      // Nothing after load: the corpus and the worker came with the page.
      expect(lab.lateRequests).toEqual([])
    } finally {
      await lab.context.close()
    }
  }, 90_000)
})
