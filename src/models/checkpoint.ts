/**
 * Training checkpoints: one directory per step,
 *   step-00000100/model.safetensors      weights, Hugging Face names (loads in transformers)
 *   step-00000100/optimizer.safetensors  AdamW moments, "m.<name>" and "v.<name>"
 *   step-00000100/trainer_state.json     { format, step, run, model, data }
 *   step-00000100/config.json            the model config as transformers reads it (`hfConfigJson`)
 *
 * What a reader can rely on:
 * - Atomic: the step is written under `step-N.tmp-<pid>/` (every file fsynced), renamed into place
 *   only when complete, and the folder fsynced; an interrupted run leaves the previous checkpoint
 *   or the new one, never half of one. Temporaries of dead processes are removed (`cleanCheckpointDir`).
 * - Checked: every tensor's CRC-32 is in its file's `__metadata__` (`crc32:<tensor>`), verified on
 *   load; a CRC-32 catches every error within 32 consecutive bits, so every flipped byte is found.
 *   Non-finite weights or moments are never written and never loaded.
 * - Identified: trainer_state.json holds the run options, the whole model config and the data
 *   source; `matchRun` names whatever differs on resume.
 * A checkpoint of format 1 (before checksums: no `format` field) still loads, unverified:
 * `CheckpointState.checksums` says "none", and its first new save is of format 2.
 */
import { type FileHandle, mkdir, open, readdir, readFile, rename, rm } from "node:fs/promises"
import { dirname, join } from "node:path"
import { Effect } from "effect"
import { BadCheckpoint } from "../core/errors.js"
import {
  checkTensors,
  readSafetensors,
  type StoredTensor,
  syncDirectory,
  writeSafetensorsAtomic,
} from "./safetensors.js"

/** The trainer_state.json format this version writes. */
export const CHECKPOINT_FORMAT = 2

/** What a checkpoint holds: the step, the run's identity, the fp32 parameters and AdamW moments. */
export interface CheckpointState {
  readonly step: number
  /** The options that decide the run's numbers (seed, batch, schedule…): a resume must match them. */
  readonly run?: Readonly<Record<string, number | string>>
  /** The model config (Hugging Face names) the run trains; format-1 checkpoints have none. */
  readonly model?: Readonly<Record<string, unknown>>
  /** Where the batches come from (e.g. corpus hash and tokenizer); format-1 checkpoints have none. */
  readonly data?: Readonly<Record<string, number | string>>
  readonly parameters: Record<string, Float32Array>
  readonly m: Record<string, Float32Array>
  readonly v: Record<string, Float32Array>
  /** On load: "crc32" when every tensor was verified against its checksum, "none" for a format-1 checkpoint. */
  readonly checksums?: "crc32" | "none"
}

const stepDir = (step: number) => `step-${String(step).padStart(8, "0")}`
const isStepDir = (name: string) => /^step-\d{8}$/.test(name)
/** `step-00000100.tmp-1234` (a save in progress, or interrupted) or `.probe-1234`: left by process 1234. */
const tempDirPid = (name: string): number | undefined => {
  const m = /^(?:step-\d{8}\.tmp-|\.probe-)(\d+)$/.exec(name)
  return m === null ? undefined : Number(m[1])
}

// ---------------------------------------------------------------------------------------------
// Checksums and finiteness

const hostIsLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

let crcTable: Uint32Array | undefined
/** node:zlib's CRC-32 (Node ≥ 20.16), looked up at run time so that browser bundles need no zlib. */
const nativeCrc32 = (
  (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process?.getBuiltinModule?.(
    "node:zlib",
  ) as { crc32?: (data: Uint8Array) => number } | undefined
)?.crc32
/** CRC-32 (IEEE, as zlib and PNG) by table: what `tensorChecksum` uses where node:zlib's is missing. */
export function crc32Portable(bytes: Uint8Array): number {
  crcTable ??= Uint32Array.from({ length: 256 }, (_, n) => {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    return c
  })
  let c = 0xffffffff
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}

const crc32Bytes = (bytes: Uint8Array): number =>
  nativeCrc32 !== undefined ? nativeCrc32(bytes) >>> 0 : crc32Portable(bytes)

/** The CRC-32 of a tensor's bytes as the file stores them (little-endian), as 8 hex digits. */
export function tensorChecksum(data: StoredTensor["data"]): string {
  let bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  if (!hostIsLittleEndian) {
    bytes = bytes.slice()
    const size = data.BYTES_PER_ELEMENT
    for (let i = 0; i < bytes.length; i += size) bytes.subarray(i, i + size).reverse()
  }
  return crc32Bytes(bytes).toString(16).padStart(8, "0")
}

const CRC_PREFIX = "crc32:"

/** `__metadata__` entries holding each tensor's checksum. */
const checksumMetadata = (tensors: Record<string, StoredTensor>): Record<string, string> =>
  Object.fromEntries(Object.entries(tensors).map(([n, t]) => [`${CRC_PREFIX}${n}`, tensorChecksum(t.data)]))

/**
 * Checks every tensor against the checksum its file's metadata holds. With `required`, a file
 * without checksums is refused; without it, a file with none is accepted (format 1) and a file
 * with some must have them all. Returns whether checksums were there.
 */
export function verifyChecksums(
  tensors: Readonly<Record<string, StoredTensor>>,
  metadata: Readonly<Record<string, string>>,
  path: string,
  required: boolean,
): boolean {
  const stored = Object.keys(metadata).filter((k) => k.startsWith(CRC_PREFIX))
  if (stored.length === 0 && !required) return false
  const fail = (tensor: string | undefined, what: string): never => {
    throw new BadCheckpoint({ path, ...(tensor === undefined ? {} : { tensor }), message: `${path}: ${what}` })
  }
  if (stored.length === 0) fail(undefined, "holds no tensor checksums (crc32:<tensor> in __metadata__); it was altered")
  for (const key of stored) {
    const name = key.slice(CRC_PREFIX.length)
    if (!Object.hasOwn(tensors, name))
      fail(name, `has a checksum for tensor "${name}", which the file lacks; it was altered`)
  }
  for (const name of Object.keys(tensors).sort()) {
    const want = metadata[`${CRC_PREFIX}${name}`]
    if (want === undefined) fail(name, `tensor "${name}" has no checksum while the others do; the file was altered`)
    const got = tensorChecksum(tensors[name]!.data)
    if (got !== want)
      fail(
        name,
        `tensor "${name}" fails its checksum (crc32 ${got}, saved as ${want}): the file was damaged after it was written; ` +
          "move this step folder away to resume from the checkpoint before it",
      )
  }
  return true
}

/** The first non-finite value among these arrays: the array's name, the element and its value. */
export function firstNonFinite(
  arrays: Readonly<Record<string, ArrayLike<number>>>,
): { readonly name: string; readonly index: number; readonly value: number } | undefined {
  for (const name of Object.keys(arrays).sort()) {
    const xs = arrays[name]!
    for (let i = 0; i < xs.length; i++) {
      const x = xs[i]!
      if (x - x !== 0) return { name, index: i, value: x }
    }
  }
  return undefined
}

/** The state's weights and moments by the names their files use ("m.<name>", "v.<name>"). */
const allArrays = (s: Pick<CheckpointState, "parameters" | "m" | "v">): Record<string, Float32Array> => ({
  ...s.parameters,
  ...Object.fromEntries(Object.entries(s.m).map(([n, a]) => [`m.${n}`, a])),
  ...Object.fromEntries(Object.entries(s.v).map(([n, a]) => [`v.${n}`, a])),
})

/** The first non-finite weight or moment of a state (names as in the files: "m.<name>", "v.<name>"). */
export const nonFiniteState = (s: Pick<CheckpointState, "parameters" | "m" | "v">) => firstNonFinite(allArrays(s))

// ---------------------------------------------------------------------------------------------
// config.json, for transformers

/** transformers' model class for each `model_type` miniseq writes. */
const architectureOf: Readonly<Record<string, string>> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  gemma2: "Gemma2ForCausalLM",
}

/**
 * The config.json a checkpoint folder holds, so that transformers' `from_pretrained(folder)`
 * loads it as is: the model config's fields, with `model_type` ("llama" unless the config names
 * another), `architectures` (the config's, else the class for that type) and `torch_dtype` (the
 * weights' dtype in model.safetensors: miniseq saves float32).
 */
export function hfConfigJson(
  model: Readonly<Record<string, unknown>>,
  torchDtype = "float32",
): Record<string, unknown> {
  const modelType = typeof model["model_type"] === "string" ? model["model_type"] : "llama"
  const architectures = Array.isArray(model["architectures"])
    ? model["architectures"]
    : [architectureOf[modelType] ?? "LlamaForCausalLM"]
  return { architectures, model_type: modelType, ...model, torch_dtype: torchDtype }
}

// ---------------------------------------------------------------------------------------------
// Files

const asTensors = (
  arrays: Record<string, Float32Array>,
  shapes: Record<string, readonly number[]>,
  prefix = "",
): Record<string, StoredTensor> =>
  Object.fromEntries(
    Object.entries(arrays).map(([n, data]) => [
      `${prefix}${n}`,
      { dtype: "float32" as const, shape: shapes[n] ?? [data.length], data },
    ]),
  )

const errCode = (e: unknown): string | undefined => (e as { code?: unknown } | null)?.code as string | undefined

const describeIoError = (e: unknown): string => {
  const code = errCode(e)
  const text = e instanceof Error ? e.message : String(e)
  if (code === "ENOSPC") return `no space left on the device (${text}); free some space or train into another directory`
  if (code === "EACCES" || code === "EPERM" || code === "EROFS") return `not writable (${text})`
  return text
}

const ioError = (path: string, e: unknown, doing = "") =>
  e instanceof BadCheckpoint ? e : new BadCheckpoint({ path, message: `${path}: ${doing}${describeIoError(e)}` })

/** Writes `text` to `path` durably: a temporary file, fsync, rename, fsync of the folder. */
export async function writeTextAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`
  let handle: FileHandle | undefined
  try {
    handle = await open(tmp, "w")
    await handle.writeFile(text)
    await handle.sync()
    await handle.close()
    handle = undefined
    await rename(tmp, path)
  } catch (e) {
    await handle?.close().catch(() => undefined)
    await rm(tmp, { force: true }).catch(() => undefined)
    throw e
  }
  await syncDirectory(dirname(path))
}

/** Whether process `pid` is alive on this machine (EPERM: alive, someone else's). */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return errCode(e) === "EPERM"
  }
}

/**
 * Makes `dir` and checks it is writable (a probe file, written, fsynced and removed), then removes
 * the temporaries that interrupted saves left there: `step-N.tmp-<pid>/` of processes that are no
 * longer alive (a live process's save in progress is left alone). Returns the names removed.
 */
export function cleanCheckpointDir(dir: string): Effect.Effect<readonly string[], BadCheckpoint> {
  return Effect.tryPromise({
    try: async () => {
      await mkdir(dir, { recursive: true }).catch((e) => Promise.reject(ioError(dir, e, "cannot create the folder: ")))
      const probe = join(dir, `.probe-${process.pid}`)
      try {
        const handle = await open(probe, "w")
        await handle.sync().finally(() => handle.close())
      } catch (e) {
        throw ioError(dir, e, "cannot write checkpoints here: ")
      } finally {
        await rm(probe, { force: true })
      }
      const stale = (await readdir(dir)).filter((n) => {
        const pid = tempDirPid(n)
        return pid !== undefined && pid !== process.pid && !processAlive(pid)
      })
      await Promise.all(stale.map((n) => rm(join(dir, n), { recursive: true, force: true })))
      return stale
    },
    catch: (e) => ioError(dir, e),
  })
}

/**
 * Writes the state as a new step directory, then keeps only the newest two. Refuses (writing
 * nothing) a state with a non-finite weight or moment. A failed save removes its temporary folder.
 */
export function saveCheckpoint(
  dir: string,
  state: CheckpointState,
  shapes: Record<string, readonly number[]> = {},
): Effect.Effect<string, BadCheckpoint> {
  const final = join(dir, stepDir(state.step))
  const tmp = `${final}.tmp-${process.pid}`
  return Effect.tryPromise({
    try: async () => {
      const bad = nonFiniteState(state)
      if (bad !== undefined)
        throw new BadCheckpoint({
          path: final,
          tensor: bad.name,
          message: `${final}: not saved: tensor "${bad.name}" holds ${bad.value} at element ${bad.index}`,
        })
      const model = asTensors(state.parameters, shapes)
      const optimizer = { ...asTensors(state.m, shapes, "m."), ...asTensors(state.v, shapes, "v.") }
      const step = String(state.step)
      const trainerState = {
        format: CHECKPOINT_FORMAT,
        step: state.step,
        run: state.run ?? {},
        model: state.model ?? {},
        data: state.data ?? {},
      }
      try {
        await rm(tmp, { recursive: true, force: true })
        await mkdir(tmp, { recursive: true })
        await writeSafetensorsAtomic(join(tmp, "model.safetensors"), model, {
          format: "pt",
          step,
          ...checksumMetadata(model),
        })
        await writeSafetensorsAtomic(join(tmp, "optimizer.safetensors"), optimizer, {
          step,
          ...checksumMetadata(optimizer),
        })
        await writeTextAtomic(join(tmp, "trainer_state.json"), `${JSON.stringify(trainerState, null, 2)}\n`)
        if (state.model !== undefined)
          await writeTextAtomic(join(tmp, "config.json"), `${JSON.stringify(hfConfigJson(state.model), null, 2)}\n`)
        await rm(final, { recursive: true, force: true })
        await rename(tmp, final)
      } catch (e) {
        await rm(tmp, { recursive: true, force: true }).catch(() => undefined)
        throw ioError(final, e, "cannot save the checkpoint: ")
      }
      await syncDirectory(dir)
      const old = (await readdir(dir)).filter(isStepDir).sort().slice(0, -2)
      await Promise.all(old.map((d) => rm(join(dir, d), { recursive: true, force: true })))
      return final
    },
    catch: (e) => ioError(final, e),
  })
}

/** The newest complete checkpoint in `dir` (temporary directories are ignored), if any. */
export function latestCheckpoint(dir: string): Effect.Effect<string | undefined, BadCheckpoint> {
  return Effect.tryPromise({
    try: async () => {
      const names = await readdir(dir).catch((e: NodeJS.ErrnoException) =>
        e.code === "ENOENT" ? [] : Promise.reject(e),
      )
      const last = names.filter(isStepDir).sort().at(-1)
      return last === undefined ? undefined : join(dir, last)
    },
    catch: (e) => ioError(dir, e),
  })
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v)

/** trainer_state.json, checked field by field: unknown fields and missing ones are refused. */
function parseTrainerState(text: string, statePath: string) {
  const fail = (what: string): never => {
    throw new BadCheckpoint({ path: statePath, message: `${statePath}: ${what}` })
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (e) {
    return fail(`is not valid JSON (${e instanceof Error ? e.message : String(e)})`)
  }
  if (!isPlainObject(raw)) return fail("must be a JSON object")
  const format = raw["format"] ?? 1
  if (format !== 1 && format !== CHECKPOINT_FORMAT)
    return fail(`has format ${JSON.stringify(format)}; this miniseq reads formats 1 and ${CHECKPOINT_FORMAT}`)
  const allowed = format === 1 ? ["step", "run"] : ["format", "step", "run", "model", "data"]
  const extra = Object.keys(raw).filter((k) => !allowed.includes(k))
  if (extra.length > 0)
    return fail(`has unknown field ${JSON.stringify(extra[0])} (format ${format} has ${allowed.join(", ")})`)
  const step = raw["step"]
  if (typeof step !== "number" || !Number.isInteger(step) || step < 0)
    return fail(`"step" must be a non-negative integer`)
  const record = (key: string, required: boolean): Record<string, number | string> | undefined => {
    const v = raw[key as never] as unknown
    if (v === undefined && !required) return undefined
    if (!isPlainObject(v) || Object.keys(v).length === 0)
      return fail(`has no "${key}" (the run's options): it cannot be checked against this run`)
    return v as Record<string, number | string>
  }
  const run = record("run", true)!
  for (const [k, v] of Object.entries(run))
    if (typeof v !== "number" && typeof v !== "string") fail(`run option "${k}" must be a number or a string`)
  const object = (key: string): Record<string, never> | undefined => {
    if (format === 1) return undefined
    const v = raw[key as never] as unknown
    return isPlainObject(v) ? (v as Record<string, never>) : fail(`"${key}" must be an object`)
  }
  const model = object("model")
  const data = object("data")
  return { format, step, run, ...(model ? { model } : {}), ...(data ? { data } : {}) }
}

/**
 * A checkpoint's config.json (for transformers) must say what its trainer_state.json's model
 * says; checkpoints written before config.json existed have none, which is fine.
 */
async function checkConfigJson(configPath: string, model: Readonly<Record<string, unknown>>): Promise<void> {
  let text: string
  try {
    text = await readFile(configPath, "utf8")
  } catch (e) {
    if (errCode(e) === "ENOENT") return
    throw ioError(configPath, e)
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    parsed = undefined
  }
  if (JSON.stringify(parsed) !== JSON.stringify(hfConfigJson(model)))
    throw new BadCheckpoint({
      path: configPath,
      message: `${configPath}: does not match the model config in trainer_state.json; it was altered (transformers would load another model)`,
    })
}

/**
 * Loads a checkpoint for a model of these parameter shapes. Any mismatch, damaged byte (checksum),
 * non-finite value or inconsistency between the three files is a BadCheckpoint naming the file and
 * the tensor; `matchRun` then compares its run, model and data with the resuming run's.
 */
export function loadCheckpoint(
  path: string,
  shapes: Record<string, readonly number[]>,
): Effect.Effect<CheckpointState, BadCheckpoint> {
  return Effect.tryPromise({
    try: async () => {
      const statePath = join(path, "trainer_state.json")
      const text = await readFile(statePath, "utf8").catch((e) => Promise.reject(ioError(statePath, e)))
      const raw = parseTrainerState(text, statePath)
      const expect = (prefix: string) =>
        Object.fromEntries(
          Object.entries(shapes).map(([n, shape]) => [`${prefix}${n}`, { dtype: "float32" as const, shape }]),
        )
      const modelPath = join(path, "model.safetensors"),
        optPath = join(path, "optimizer.safetensors")
      const model = await readSafetensors(modelPath)
      checkTensors(model.tensors, expect(""), modelPath)
      const opt = await readSafetensors(optPath)
      checkTensors(opt.tensors, { ...expect("m."), ...expect("v.") }, optPath)
      const required = raw.format !== 1
      const verified = [
        verifyChecksums(model.tensors, model.metadata, modelPath, required),
        verifyChecksums(opt.tensors, opt.metadata, optPath, required),
      ]
      if (verified[0] !== verified[1])
        throw new BadCheckpoint({
          path: verified[0] ? optPath : modelPath,
          message: `${verified[0] ? optPath : modelPath}: holds no checksums while the other file does; it was altered`,
        })
      for (const [file, meta] of [
        [modelPath, model.metadata],
        [optPath, opt.metadata],
      ] as const) {
        if (meta.step !== String(raw.step))
          throw new BadCheckpoint({
            path: file,
            message: `${file}: holds step ${meta.step ?? "?"} but trainer_state.json says ${raw.step}; the checkpoint is inconsistent`,
          })
      }
      if (raw.model !== undefined) await checkConfigJson(join(path, "config.json"), raw.model)
      const pick = (t: Record<string, StoredTensor>, prefix: string) =>
        Object.fromEntries(Object.keys(shapes).map((n) => [n, t[`${prefix}${n}`]!.data as Float32Array]))
      const state = {
        step: raw.step,
        run: raw.run,
        ...(raw.model ? { model: raw.model } : {}),
        ...(raw.data ? { data: raw.data } : {}),
        parameters: pick(model.tensors, ""),
        m: pick(opt.tensors, "m."),
        v: pick(opt.tensors, "v."),
        checksums: verified[0] ? ("crc32" as const) : ("none" as const),
      }
      const bad = nonFiniteState(state)
      if (bad !== undefined) {
        const file = bad.name.startsWith("m.") || bad.name.startsWith("v.") ? optPath : modelPath
        throw new BadCheckpoint({
          path: file,
          tensor: bad.name,
          message: `${file}: tensor "${bad.name}" holds ${bad.value} at element ${bad.index}; training had diverged when it was saved: resume from an earlier checkpoint or start anew`,
        })
      }
      return state
    },
    catch: (e) => ioError(path, e),
  })
}

/** What a resuming run must share with its checkpoint. */
export interface RunMatch {
  readonly run: Readonly<Record<string, number | string>>
  readonly model: Readonly<Record<string, unknown>>
  readonly data?: Readonly<Record<string, number | string>>
}

/**
 * Refuses (BadCheckpoint) a checkpoint made by another run: any run option that differs or is
 * missing, any field of the model config, any field of the data source. Format-1 checkpoints
 * recorded neither model nor data: only their run options are compared.
 */
export function matchRun(state: CheckpointState, expected: RunMatch, path: string): Effect.Effect<void, BadCheckpoint> {
  const show = (v: unknown) => (v === undefined ? "(none)" : typeof v === "string" ? v : JSON.stringify(v))
  const diffs = (
    what: string,
    theirs: Readonly<Record<string, unknown>> | undefined,
    ours: Readonly<Record<string, unknown>>,
  ) => {
    if (theirs === undefined) return []
    const keys = [...new Set([...Object.keys(theirs), ...Object.keys(ours)])].sort()
    return keys
      .filter((k) => JSON.stringify(theirs[k]) !== JSON.stringify(ours[k]))
      .map((k) => ({ what, k, theirs: show(theirs[k]), ours: show(ours[k]) }))
  }
  const missing = Object.keys(expected.run).filter((k) => state.run?.[k] === undefined)
  if (state.run === undefined || missing.length > 0) {
    const message = `${path}: trainer_state.json lacks the run options ${missing.join(", ")}; it cannot be checked against this run. Train into another directory`
    return Effect.fail(new BadCheckpoint({ path, message }))
  }
  const all = [
    ...diffs("", state.run, expected.run),
    ...diffs("model ", state.model, expected.model),
    ...diffs("data ", state.data, expected.data ?? {}),
  ]
  if (all.length === 0) return Effect.void
  const theirs = all.map((d) => `${d.what}${d.k} ${d.theirs}`).join(", ")
  const ours = all.map((d) => `${d.what}${d.k} ${d.ours}`).join(", ")
  const message = `${path} belongs to a run with ${theirs}; this run has ${ours}. Resume with the same options, or train into another directory`
  return Effect.fail(new BadCheckpoint({ path, message }))
}
