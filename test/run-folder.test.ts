// The run folder as the command line meets it: --out that cannot be written, run.json a folder, a
// full disk, two runs into one folder, a corpus changed on resume — each one line, no stack — and
// kill -9 at random moments (inside a checkpoint save too): the resume finishes bitwise equal to an
// uninterrupted run.
import { execFile, spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises"
import { hostname, tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { afterAll, describe, expect, it } from "vitest"
import { runCli } from "./cli-helpers.js"

const run = runCli
const dirs: string[] = []
const mounts: string[] = []
afterAll(async () => {
  for (const m of mounts) await promisify(execFile)("umount", [m]).catch(() => undefined)
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})
const fresh = async () => {
  const d = await mkdtemp(join(tmpdir(), "miniseq-out-"))
  dirs.push(d)
  return d
}
/** A small tmpfs at a fresh folder (root only, e.g. CI containers); undefined where it cannot be mounted. */
const tmpfs = async (options: string): Promise<string | undefined> => {
  const at = await fresh()
  try {
    await promisify(execFile)("mount", ["-t", "tmpfs", "-o", options, "tmpfs", at])
    mounts.push(at)
    return at
  } catch {
    return undefined
  }
}
const short = ["train", "--steps", "2", "--batch", "1", "--seq", "32", "--warmup", "1"]
const oneLine = (r: { code: number; out: string }, text: string | RegExp) => {
  expect(r.code, r.out).not.toBe(0)
  expect(r.out).toMatch(text)
  expect(r.out).not.toMatch(/\n\s+at /)
}

describe("writing the run folder fails with one line", () => {
  it("run.json a folder, an --out under a file, a read-only --out: refused before the first step", async () => {
    const out = await fresh()
    await mkdir(join(out, "run.json"))
    const cases: Array<[string, RegExp]> = [
      [out, /miniseq: WriteError: cannot write .*run\.json: it is a directory, not a file; move it away/],
      [join(out, "run.json", "x", "..", "..", "..", "f"), /./], // replaced below by a path under a file
    ]
    await writeFile(join(out, "afile"), "")
    cases[1] = [join(out, "afile", "run"), /miniseq: WriteError: cannot create the run folder .*afile\/run/]
    const readOnly = await tmpfs("size=1m,ro")
    if (readOnly)
      cases.push([readOnly, /miniseq: WriteError: cannot write into the run folder .*: the file system is read-only/])
    const results = await Promise.all(cases.map(([o]) => run(...short, "--out", o)))
    results.forEach((r, i) => oneLine(r, cases[i]![1]))
    expect(await readdir(out)).toEqual(["afile", "run.json"]) // nothing trained, nothing written
  })

  it("a full disk: the save fails with one line, leaves no temporary folder, and run.json says so", async (ctx) => {
    const full = await tmpfs("size=120k")
    if (full === undefined) return ctx.skip() // needs root for the mount
    const r = await run(...short, "--out", full)
    oneLine(r, /miniseq: BadCheckpoint: .*step-00000002: cannot save the checkpoint: no space left on the device/)
    expect(await readdir(join(full, "checkpoints"))).toEqual([])
    expect(JSON.parse(await readFile(join(full, "run.json"), "utf8"))).toMatchObject({ status: "failed", steps: 2 })
  })

  it("two runs into one --out: the second is refused naming the first; a dead run's lock is taken over", async () => {
    const out = await fresh()
    // A lock held by a live process (this test's parent) on this host.
    await writeFile(join(out, "miniseq.lock"), JSON.stringify({ pid: process.ppid, host: hostname(), started: "now" }))
    oneLine(
      await run(...short, "--out", out),
      new RegExp(
        `miniseq: BadConfig: --out ${out} is in use by another miniseq train \\(pid ${process.ppid}, since now\\)`,
      ),
    )
    // A dead run's lock, and the temporary folder of its interrupted save.
    await writeFile(join(out, "miniseq.lock"), JSON.stringify({ pid: 99999999, host: hostname(), started: "then" }))
    await mkdir(join(out, "checkpoints", "step-00000002.tmp-99999999"), { recursive: true })
    const ok = await run(...short, "--out", out)
    expect(ok.code, ok.out).toBe(0)
    expect((await readdir(out)).sort()).toEqual(["checkpoints", "loss.svg", "memory.svg", "run.json", "steps.jsonl"])
    expect(await readdir(join(out, "checkpoints"))).toEqual(["step-00000002"])
    // Another corpus is another run.
    const corpus = join(out, "other.txt")
    await writeFile(corpus, "a different text ".repeat(400))
    oneLine(
      await run(...short, "--out", out, "--corpus", corpus),
      /belongs to a run with data corpus shipped, data sha256 [0-9a-f]{64}; this run has data corpus .*other\.txt/,
    )
  })
})

describe("kill -9 at random moments", () => {
  it("inside a checkpoint save and between steps: the resumed run ends bitwise equal to an uninterrupted one", async () => {
    const [ref, out] = [await fresh(), await fresh()]
    const args = (o: string) => [...short.slice(0, 2), "12", ...short.slice(3), "--checkpoint-every", "1", "--out", o]
    const reference = run(...args(ref))
    const kills: string[] = []
    const killed = async (when: "in a save" | number) => {
      const child = spawn("node", ["bin/miniseq.js", ...args(out)], { stdio: "ignore" })
      const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)))
      let running = true
      void exited.then(() => {
        running = false
      })
      const ckpt = join(out, "checkpoints")
      const steps = join(out, "steps.jsonl")
      if (when === "in a save") {
        // The moment a save's temporary folder appears.
        while (running && !(existsSync(ckpt) && (await readdir(ckpt)).some((n) => /^step-\d+\.tmp-/.test(n))))
          await new Promise((r) => setImmediate(r))
      } else {
        const lines = async () => (existsSync(steps) ? (await readFile(steps, "utf8")).split("\n").length - 1 : 0)
        const start = await lines()
        while (running && (await lines()) <= start) await new Promise((r) => setTimeout(r, 5))
        await new Promise((r) => setTimeout(r, when))
      }
      child.kill("SIGKILL")
      await exited
      const left = existsSync(ckpt) ? (await readdir(ckpt)).filter((n) => /^step-\d+\.tmp-/.test(n)) : []
      kills.push(
        `${when}: ${left.length > 0 ? "inside a save" : "between"}, after ${(await readdir(ckpt)).sort().join(" ")}`,
      )
    }
    await killed("in a save")
    for (const ms of [Math.random() * 40, Math.random() * 80]) await killed(Math.round(ms))
    const resumed = await run(...args(out))
    expect(resumed.code, `${resumed.out}\n${kills.join("\n")}`).toBe(0)
    expect((await reference).code).toBe(0)
    expect(await readdir(join(out, "checkpoints")), kills.join("\n")).toEqual(["step-00000011", "step-00000012"])
    for (const file of ["model.safetensors", "optimizer.safetensors", "trainer_state.json"]) {
      const [a, b] = await Promise.all([ref, out].map((d) => readFile(join(d, "checkpoints", "step-00000012", file))))
      expect(a!.equals(b!), `${file} after ${kills.join("; ")}`).toBe(true)
    }
    const losses = async (d: string) =>
      JSON.parse(await readFile(join(d, "run.json"), "utf8")).records.map((r: { loss: number }) => r.loss)
    expect(await losses(out)).toEqual(await losses(ref))
    expect(existsSync(join(out, "miniseq.lock"))).toBe(false)
  })
})
