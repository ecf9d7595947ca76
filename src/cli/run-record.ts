/**
 * A run's history in its directory (`--out`), kept whole across re-runs, resumes and interruptions:
 *
 *   steps.jsonl   one JSON line per step, appended as each step finishes
 *   run.json      what ran (backend, precision, tokenizer, corpus and its hash, miniseq version,
 *                 dates, options, plans), how it ended, and every step's record from step 1
 *   loss.svg      the loss of every step; memory.svg the planner's peak by mode
 *
 * A resumed run keeps the records up to its checkpoint's step (later ones were never saved in a
 * checkpoint, so those steps run again and replace them). run.json and the charts are written
 * when the run completes, fails or is interrupted, each through a temporary file and a rename, so
 * a reader never sees half of one.
 */
import { createHash } from "node:crypto"
import {
  appendFileSync,
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs"
import { dirname, join } from "node:path"
import { WriteError } from "../core/errors.js"
import { memoryKinds } from "../core/memory.js"
import { modes } from "../models/llama.js"
import type { StepPlan } from "../models/planner.js"
import type { StepRecord } from "../models/train.js"
import { version } from "./package-info.js"
import { formatBytes, lineChart, stackedBars } from "./svg.js"

/** A step's record as stored: the `StepRecord` without its full memory report (`peak` stays). */
export type StoredRecord = Omit<StepRecord, "memory">

export const stored = ({ memory: _m, ...r }: StepRecord): StoredRecord => r

/** The file operations `writeAtomic` uses: node:fs's, or (in tests) ones that fail. */
export interface WriteOps {
  readonly open: (path: string) => number
  readonly write: (fd: number, text: string) => void
  readonly fsync: (fd: number) => void
  readonly rename: (from: string, to: string) => void
}

export const fsOps: WriteOps = {
  open: (path) => openSync(path, "w"),
  write: (fd, text) => {
    const bytes = Buffer.from(text)
    let at = 0
    while (at < bytes.length) at += writeSync(fd, bytes, at)
  },
  fsync: fsyncSync,
  rename: renameSync,
}

const errCode = (e: unknown): string | undefined => (e as { code?: unknown } | null)?.code as string | undefined

/** The one-line error for a failed write of `path`: what, why (ENOSPC, EACCES, …), and the fix. */
export function writeFailed(path: string, e: unknown, doing = "write"): WriteError {
  if (e instanceof WriteError && e.path === path && doing === "write") return e
  const code = errCode(e)
  const reason =
    code === "ENOSPC"
      ? "no space left on the device"
      : code === "EACCES" || code === "EPERM"
        ? "permission denied"
        : code === "EROFS"
          ? "the file system is read-only"
          : code === "EISDIR"
            ? "it is a directory"
            : e instanceof Error
              ? e.message
              : String(e)
  const fix = code === "ENOSPC" ? "free some space or choose another --out" : "choose another --out"
  return new WriteError({ path, ...(code ? { code } : {}), message: `cannot ${doing} ${path}: ${reason}; ${fix}` })
}

/**
 * Writes `text` to `path` so that `path` holds the old file or the whole new one: a temporary file
 * in the same folder, fsync, rename, fsync of the folder. A failure removes the temporary file and
 * throws a WriteError naming `path`.
 */
export function writeAtomic(path: string, text: string, ops: WriteOps = fsOps): void {
  const tmp = `${path}.tmp-${process.pid}`
  let fd: number | undefined
  try {
    fd = ops.open(tmp)
    ops.write(fd, text)
    ops.fsync(fd)
    closeSync(fd)
    fd = undefined
    ops.rename(tmp, path)
  } catch (e) {
    if (fd !== undefined) closeSync(fd)
    rmSync(tmp, { force: true })
    throw writeFailed(path, e)
  }
  syncFolder(dirname(path))
}

/** fsync of a folder, so a rename in it survives a crash (a no-op where the platform cannot). */
function syncFolder(dir: string): void {
  let fd: number | undefined
  try {
    fd = openSync(dir, "r")
    fsyncSync(fd)
  } catch {
    // Windows and some file systems cannot fsync a folder; the file itself is in place.
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

/** The records of `steps.jsonl`; a last line cut short (the process was killed mid-write) is dropped. */
export function readSteps(file: string): StoredRecord[] {
  if (!existsSync(file)) return []
  const out: StoredRecord[] = []
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (line.trim() === "") continue
    try {
      out.push(JSON.parse(line) as StoredRecord)
    } catch {
      break
    }
  }
  return out
}

/** The step a checkpoint directory name holds (`step-00000100` → 100); 0 for none. */
export const checkpointStep = (path: string | undefined): number => {
  const m = path === undefined ? null : /step-(\d+)$/.exec(path)
  return m === null ? 0 : Number(m[1])
}

/**
 * The run's step records: those kept from earlier invocations (up to `resumeStep`, the step of
 * the checkpoint this run resumes from) and each new one, appended to steps.jsonl as it comes.
 */
export class History {
  readonly file: string
  private recordsSoFar: StoredRecord[]
  /** Whether steps.jsonl still holds lines past the kept records (rewritten before the first append). */
  private stale: boolean
  /** Steps recorded by this invocation. */
  added = 0

  constructor(dir: string, resumeStep: number) {
    this.file = join(dir, "steps.jsonl")
    const earlier = readSteps(this.file)
    this.recordsSoFar = earlier.filter((r) => r.step <= resumeStep)
    this.stale = existsSync(this.file) && this.recordsSoFar.length !== earlier.length
  }

  get records(): readonly StoredRecord[] {
    return this.recordsSoFar
  }

  /** Records a step and appends it to steps.jsonl; a failed write throws a WriteError naming the file. */
  add(record: StepRecord): void {
    const r = stored(record)
    if (this.stale || this.recordsSoFar.some((x) => x.step >= r.step)) {
      this.recordsSoFar = this.recordsSoFar.filter((x) => x.step < r.step)
      writeAtomic(this.file, this.recordsSoFar.map((x) => `${JSON.stringify(x)}\n`).join(""))
      this.stale = false
    }
    this.recordsSoFar.push(r)
    try {
      mkdirSync(dirname(this.file), { recursive: true })
      appendFileSync(this.file, `${JSON.stringify(r)}\n`)
    } catch (e) {
      throw writeFailed(this.file, e)
    }
    this.added++
  }
}

export interface Corpus {
  /** The file read; "shipped" marks the corpus in the package's data/ folder. */
  readonly path: string
  readonly sha256: string
  readonly bytes: number
}

export function describeCorpus(path: string): Corpus {
  const bytes = readFileSync(path)
  return { path, sha256: createHash("sha256").update(bytes).digest("hex"), bytes: bytes.length }
}

/** What identifies a run: everything run.json says besides its records and outcome. */
export interface RunInfo {
  /** The preset's name, or the --config path. */
  readonly model: string
  readonly backend: string
  readonly precision: string
  readonly mode: string
  readonly tokenizer: string
  readonly corpus: Corpus
  readonly batch: number
  readonly seq: number
  /** The options given to `train()` (the model's config included). */
  readonly options: Readonly<Record<string, unknown>>
  readonly plans: Readonly<Record<string, StepPlan>>
  /** When the run first started (ISO 8601); a resume keeps the first invocation's date. */
  readonly started: string
}

/** When the run recorded in `dir`/run.json first started, if it says. */
export function previousStart(dir: string): string | undefined {
  try {
    const started = (JSON.parse(readFileSync(join(dir, "run.json"), "utf8")) as { started?: unknown }).started
    return typeof started === "string" ? started : undefined
  } catch {
    return undefined
  }
}

export type Outcome =
  | { readonly status: "completed"; readonly resumedFrom: number; readonly validationLoss?: number }
  | { readonly status: "interrupted" | "failed"; readonly error?: string }

/** Writes run.json, loss.svg and memory.svg for the whole run, each atomically; a failure is a WriteError. */
export function writeRunFiles(dir: string, info: RunInfo, history: History, outcome: Outcome): void {
  try {
    mkdirSync(dir, { recursive: true })
  } catch (e) {
    throw writeFailed(dir, e)
  }
  const records = history.records
  const { plans, ...rest } = info
  const record = {
    miniseq: version,
    ...rest,
    updated: new Date().toISOString(),
    ...outcome,
    steps: records.length,
    records,
    plans,
  }
  writeAtomic(join(dir, "run.json"), `${JSON.stringify(record, null, 2)}\n`)
  const what = `${info.model}, ${info.mode}, ${info.backend}, ${info.precision}`
  writeAtomic(
    join(dir, "loss.svg"),
    lineChart({
      title: `training loss (${what})`,
      xLabel: "step",
      yLabel: "loss",
      series: [{ name: "loss", points: records.map((r) => [r.step, r.loss]) }],
    }),
  )
  writeAtomic(
    join(dir, "memory.svg"),
    stackedBars({
      title: `peak memory of one step (${info.model}, B=${info.batch}, S=${info.seq}, ${info.precision})`,
      yLabel: "bytes",
      categories: [...modes],
      format: formatBytes,
      stacks: memoryKinds.map((kind) => ({
        name: kind,
        values: modes.map((mode) => plans[mode]?.gradientPass.atPeak[kind] ?? 0),
      })),
    }),
  )
}
