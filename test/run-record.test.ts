// The run's history on disk (src/cli/run-record.ts): steps.jsonl survives a cut-off last line,
// a resume keeps the records up to its checkpoint, and run.json is replaced whole or not at all.
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { hostname } from "node:os"
import { checkRunFolder, lockRunFolder } from "../src/cli/run-folder.js"
import {
  checkpointStep,
  fsOps,
  History,
  readSteps,
  type WriteOps,
  writeAtomic,
  writeRunFiles,
} from "../src/cli/run-record.js"
import { BadConfig, WriteError } from "../src/core/errors.js"
import type { StepRecord } from "../src/models/train.js"

const dirs: string[] = []
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})
const fresh = async () => {
  const d = await mkdtemp(join(tmpdir(), "miniseq-record-"))
  dirs.push(d)
  return d
}

const record = (step: number, loss = 5 - step / 10): StepRecord => ({
  step,
  loss,
  lr: 1e-3,
  gradNorm: 1,
  tokensPerSecond: 100,
  peak: 1000,
  memory: { peak: 1000 } as StepRecord["memory"],
})
const info = {
  model: "tiny",
  backend: "cpu",
  precision: "fp32",
  mode: "mst",
  tokenizer: "byte",
  corpus: { path: "corpus.txt", sha256: "0".repeat(64), bytes: 1 },
  batch: 1,
  seq: 8,
  options: {},
  plans: {},
  started: "2026-12-07T00:00:00.000Z",
}

describe("the run record", () => {
  it("reads steps.jsonl up to a last line cut short", async () => {
    const dir = await fresh()
    await writeFile(
      join(dir, "steps.jsonl"),
      `${JSON.stringify({ step: 1, loss: 5 })}\n${JSON.stringify({ step: 2, loss: 4 })}\n{"step": 3, "lo`,
    )
    expect(readSteps(join(dir, "steps.jsonl")).map((r) => r.step)).toEqual([1, 2])
  })

  it("a resume keeps the records up to its checkpoint and replaces the later ones", async () => {
    const dir = await fresh()
    const first = new History(dir, 0)
    for (let s = 1; s <= 7; s++) first.add(record(s))
    const resumed = new History(dir, checkpointStep(join(dir, "checkpoints", "step-00000005")))
    expect(resumed.records.map((r) => r.step)).toEqual([1, 2, 3, 4, 5])
    resumed.add(record(6, 0.5))
    expect(readSteps(resumed.file).map((r) => [r.step, r.loss])).toEqual([
      [1, 4.9],
      [2, 4.8],
      [3, 4.7],
      [4, 4.6],
      [5, 4.5],
      [6, 0.5],
    ])
    expect(resumed.records[0]).not.toHaveProperty("memory")
  })

  it("a fresh run (no checkpoint) starts an empty history", async () => {
    const dir = await fresh()
    const old = new History(dir, 0)
    old.add(record(1))
    const again = new History(dir, 0)
    expect(again.records).toEqual([])
    again.add(record(1, 9))
    expect(readSteps(again.file).map((r) => r.loss)).toEqual([9])
  })

  it("writes run.json and the charts through temporary files, leaving none behind", async () => {
    const dir = await fresh()
    const h = new History(dir, 0)
    h.add(record(1))
    writeRunFiles(dir, info, h, { status: "interrupted" })
    expect((await readdir(dir)).sort()).toEqual(["loss.svg", "memory.svg", "run.json", "steps.jsonl"])
    const r = JSON.parse(await readFile(join(dir, "run.json"), "utf8"))
    expect(r).toMatchObject({ status: "interrupted", steps: 1, model: "tiny", started: info.started })
    expect(typeof r.miniseq).toBe("string")
  })

  it("a failed write (disk full, fsync error, rename onto a folder) is a WriteError; the old file stays whole", async () => {
    const dir = await fresh()
    const path = join(dir, "run.json")
    writeAtomic(path, "old\n")
    const failing = (at: keyof WriteOps, code: string): WriteOps => ({
      ...fsOps,
      [at]: () => {
        throw Object.assign(new Error(`${code}: simulated`), { code })
      },
    })
    for (const [at, code, reason] of [
      ["write", "ENOSPC", "no space left on the device; free some space"],
      ["fsync", "EIO", "EIO: simulated"],
      ["rename", "EISDIR", "it is a directory"],
      ["open", "EACCES", "permission denied"],
    ] as const) {
      let error: unknown
      try {
        writeAtomic(path, "new\n", failing(at, code))
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(WriteError)
      expect((error as WriteError).message).toContain(`cannot write ${path}: ${reason}`)
      expect((error as WriteError).message).toMatch(/choose another --out$/)
      expect(await readFile(path, "utf8")).toBe("old\n")
      expect(await readdir(dir)).toEqual(["run.json"])
    }
  })

  it("checks --out before the first step: run files must be files, and dead writers' temporaries go", async () => {
    const dir = await fresh()
    await writeFile(join(dir, "run.json.tmp-99999999"), "partial")
    await writeFile(join(dir, `loss.svg.tmp-${process.ppid}`), "a live writer's")
    checkRunFolder(dir)
    expect((await readdir(dir)).sort()).toEqual([`loss.svg.tmp-${process.ppid}`])
    await mkdir(join(dir, "steps.jsonl"))
    expect(() => checkRunFolder(dir)).toThrow(/cannot write .*steps\.jsonl: it is a directory, not a file/)
    await writeFile(join(dir, "file"), "")
    expect(() => checkRunFolder(join(dir, "file", "out"))).toThrow(WriteError)
  })

  it("locks the run folder: a live holder is named, a dead one's lock is taken over, release removes it", async () => {
    const dir = await fresh()
    const lock = join(dir, "miniseq.lock")
    const release = lockRunFolder(dir)
    const held = JSON.parse(await readFile(lock, "utf8"))
    expect(held).toMatchObject({ pid: process.pid, host: hostname() })
    let error: unknown
    try {
      lockRunFolder(dir)
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(BadConfig)
    expect(String((error as BadConfig).message)).toContain(
      `is in use by another miniseq train (pid ${process.pid}, since`,
    )
    release()
    expect(await readdir(dir)).toEqual([])
    await writeFile(lock, JSON.stringify({ pid: 99999999, host: hostname(), started: "then" }))
    const again = lockRunFolder(dir)
    expect(JSON.parse(await readFile(lock, "utf8")).pid).toBe(process.pid)
    again()
    await writeFile(lock, JSON.stringify({ pid: 1, host: "elsewhere", started: "then" }))
    expect(() => lockRunFolder(dir)).toThrow(/pid 1 on elsewhere/)
  })
})
