// End to end: examples/browser trains the tiny model in real headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core). Twice: with WebGPU enabled — on a machine
// without a GPU Chromium's adapter is SwiftShader, its software Vulkan — and without it, where
// the page must fall back to the CPU backend and say why.
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { chromium } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

const CHROMIUM = "/usr/bin/chromium"
const example = join(import.meta.dirname, "..", "examples", "browser")
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

interface Progress {
  backend: "webgpu" | "cpu" | undefined
  backendDescription: string | undefined
  fallbackReason: string | undefined
  steps: Array<{ step: number; loss: number; tokensPerSecond: number }>
  done: boolean
  error: string | undefined
}

interface Run {
  progress: Progress
  notice: { visible: boolean; text: string }
  status: string
  problems: string[]
  seconds: number
}

let server: ChildProcess | undefined
let url = ""
const profiles: string[] = []

/** Opens the page in a fresh Chromium profile, presses Start, waits for the run to finish. */
async function trainInBrowser(query: string, extraArgs: readonly string[]): Promise<Run> {
  const profile = mkdtempSync(join(tmpdir(), "miniseq-chromium-"))
  profiles.push(profile)
  const started = performance.now()
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...baseArgs, ...extraArgs],
  })
  try {
    const page = context.pages()[0] ?? (await context.newPage())
    const problems: string[] = []
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`))
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console error: ${m.text()}`)
    })
    await page.goto(`${url}${query}`)
    await page.click("#start")
    await page.waitForFunction(() => (globalThis as unknown as { __miniseq: Progress }).__miniseq.done, null, {
      timeout: 60_000,
      polling: 250,
    })
    const progress = await page.evaluate(() => (globalThis as unknown as { __miniseq: Progress }).__miniseq)
    const notice = page.locator("#backend-notice")
    return {
      progress,
      notice: { visible: await notice.isVisible(), text: (await notice.textContent()) ?? "" },
      status: (await page.locator("#status").textContent()) ?? "",
      problems,
      seconds: (performance.now() - started) / 1000,
    }
  } finally {
    await context.close()
  }
}

function expectLearned(run: Run, minSteps: number): void {
  expect(run.problems).toEqual([])
  expect(run.progress.error).toBeUndefined()
  const losses = run.progress.steps.map((s) => s.loss)
  expect(losses.length).toBeGreaterThanOrEqual(minSteps)
  for (const loss of losses) expect(Number.isFinite(loss)).toBe(true)
  expect(losses.at(-1)!).toBeLessThan(losses[0]!)
}

const report = (name: string, run: Run) => {
  const s = run.progress.steps
  console.log(
    `browser (${name}): ${run.progress.backendDescription}, ${s.length} steps, loss ${s[0]?.loss.toFixed(3)} → ${s.at(-1)?.loss.toFixed(3)}, ` +
      `${Math.round(s.at(-1)?.tokensPerSecond ?? 0)} tokens/s, ${run.seconds.toFixed(1)} s with the browser's start`,
  )
}

describe.skipIf(missing !== undefined && !inCI)("the browser example in headless Chromium", () => {
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
  }, 30_000)

  afterAll(() => {
    server?.kill()
    for (const dir of profiles) rmSync(dir, { recursive: true, force: true })
  })

  // The same batches (batch, seq, seed) in both runs: step 1's loss, before any update, must agree.
  const shape = "batch=2&seq=32&seed=1"
  let webgpuFirstLoss: number | undefined

  it("trains on WebGPU when Chromium offers it (--enable-unsafe-webgpu), with no notice", async () => {
    // SwiftShader runs about 100 tokens/s here, hence few, small steps.
    const run = await trainInBrowser(`?steps=8&${shape}`, ["--enable-unsafe-webgpu"])
    report("WebGPU enabled", run)
    expect(run.progress.backend, `fell back to the CPU: ${run.progress.fallbackReason}`).toBe("webgpu")
    expect(run.notice.visible).toBe(false)
    expect(run.status).toContain("WebGPU")
    expectLearned(run, 8)
    webgpuFirstLoss = run.progress.steps[0]!.loss
  }, 60_000)

  it("falls back to the CPU backend with a visible notice when there is no WebGPU", async () => {
    const run = await trainInBrowser(`?steps=40&${shape}`, ["--disable-gpu"])
    report("no WebGPU", run)
    expect(run.progress.backend).toBe("cpu")
    expect(run.notice.visible).toBe(true)
    expect(run.notice.text).toContain("CPU backend")
    expect(run.notice.text).toContain(run.progress.fallbackReason)
    expect(run.status).toContain("CPU")
    expectLearned(run, 40)
    if (webgpuFirstLoss !== undefined)
      expect(Math.abs(run.progress.steps[0]!.loss - webgpuFirstLoss)).toBeLessThan(1e-3 * webgpuFirstLoss)
  }, 60_000)
})
