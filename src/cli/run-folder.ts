/**
 * The run folder (`--out`) before a run writes anything into it:
 * - it is made, and checked writable (a probe file written, fsynced and removed) before the first
 *   step, and the files miniseq will write there (run.json, steps.jsonl, the charts) are files if
 *   they exist, not folders;
 * - temporaries that interrupted writes of dead processes left there are removed;
 * - it is locked (`miniseq.lock`: pid, host, start) so that two runs cannot write into one folder;
 *   a lock whose process has died (kill -9, a crash) is taken over; the lock goes with the run.
 * Every failure is a one-line `WriteError` (or `BadConfig` for a folder in use) naming the path.
 */
import {
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs"
import { hostname } from "node:os"
import { join } from "node:path"
import { BadConfig, WriteError } from "../core/errors.js"
import { processAlive } from "../models/checkpoint.js"
import { writeAtomic, writeFailed } from "./run-record.js"

/** The files a run writes into its folder. */
export const runFiles = ["run.json", "steps.jsonl", "loss.svg", "memory.svg"] as const

const errCode = (e: unknown): string | undefined => (e as { code?: unknown } | null)?.code as string | undefined

/** `run.json.tmp-1234`, `.probe-1234`: a write in progress (or interrupted) by process 1234. */
const tempPid = (name: string): number | undefined => {
  const m = /(?:\.tmp-|^\.probe-)(\d+)$/.exec(name)
  return m === null ? undefined : Number(m[1])
}

/** Makes `out`, checks it and the run files in it can be written, and removes dead writers' temporaries. */
export function checkRunFolder(out: string): void {
  try {
    mkdirSync(out, { recursive: true })
  } catch (e) {
    throw writeFailed(out, e, "create the run folder")
  }
  for (const name of runFiles) {
    const path = join(out, name)
    let isFile = true
    try {
      isFile = lstatSync(path).isFile() || lstatSync(path).isSymbolicLink()
    } catch {
      continue // absent: it will be created
    }
    if (!isFile)
      throw new WriteError({
        path,
        message: `cannot write ${path}: it is a directory, not a file; move it away or choose another --out`,
      })
  }
  const probe = join(out, `.probe-${process.pid}`)
  try {
    writeAtomic(probe, "")
    rmSync(probe, { force: true })
  } catch (e) {
    rmSync(probe, { force: true })
    throw writeFailed(out, e, "write into the run folder")
  }
  for (const name of readdirSync(out)) {
    const pid = tempPid(name)
    if (pid !== undefined && pid !== process.pid && !processAlive(pid)) rmSync(join(out, name), { force: true })
  }
}

interface LockInfo {
  readonly pid: number
  readonly host: string
  readonly started: string
}

/**
 * Takes the run folder's lock, returning the function that gives it back. A lock held by a live
 * process (or one on another host, which cannot be checked) is a BadConfig naming it; one whose
 * process is gone is taken over.
 */
export function lockRunFolder(out: string): () => void {
  const lock = join(out, "miniseq.lock")
  const mine: LockInfo = { pid: process.pid, host: hostname(), started: new Date().toISOString() }
  const text = `${JSON.stringify(mine)}\n`
  for (let attempt = 0; attempt < 3; attempt++) {
    // Written whole under a temporary name, then linked into place: a lock is never seen half-written.
    const tmp = `${lock}.tmp-${process.pid}`
    try {
      writeFileSync(tmp, text)
      try {
        linkSync(tmp, lock)
      } catch (e) {
        // A file system without hard links: create it exclusively instead.
        if (errCode(e) === "EEXIST") throw e
        writeFileSync(lock, text, { flag: "wx" })
      } finally {
        rmSync(tmp, { force: true })
      }
      let released = false
      const release = () => {
        if (released) return
        released = true
        process.removeListener("exit", release)
        try {
          if ((JSON.parse(readFileSync(lock, "utf8")) as LockInfo).pid === process.pid) rmSync(lock, { force: true })
        } catch {
          // gone already
        }
      }
      process.on("exit", release) // a backstop: the run's finalizer releases it first
      return release
    } catch (e) {
      rmSync(tmp, { force: true })
      if (errCode(e) !== "EEXIST") throw writeFailed(lock, e, "create the lock")
    }
    let held: LockInfo | undefined
    try {
      held = JSON.parse(readFileSync(lock, "utf8")) as LockInfo
    } catch {
      held = undefined
    }
    const live =
      held === undefined
        ? Date.now() - safeMtime(lock) < 10_000 // unreadable but fresh: being written
        : held.host !== mine.host || held.pid === process.pid || processAlive(held.pid)
    if (live) {
      const who =
        held === undefined
          ? "another process"
          : `another miniseq train (pid ${held.pid}${held.host === mine.host ? "" : ` on ${held.host}`}, since ${held.started})`
      throw new BadConfig({
        field: "out",
        message: `--out ${out} is in use by ${who}: wait for it to finish or choose another --out; if no such run is going, delete ${lock}`,
      })
    }
    // Its process is gone: move the stale lock away (atomically, so only one taker wins) and retry.
    try {
      const stale = `${lock}.stale-${process.pid}`
      renameSync(lock, stale)
      rmSync(stale, { force: true })
    } catch {
      // someone else took it over first; the next attempt sees their lock
    }
  }
  throw new BadConfig({ field: "out", message: `--out ${out}: could not take its lock ${lock}; try again` })
}

const safeMtime = (path: string): number => {
  try {
    return statSync(path).mtimeMs
  } catch {
    return 0
  }
}
