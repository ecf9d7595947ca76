/**
 * Training checkpoints: one directory per step,
 *   step-00000100/model.safetensors      weights, Hugging Face names (loads in transformers)
 *   step-00000100/optimizer.safetensors  AdamW moments, "m.<name>" and "v.<name>"
 *   step-00000100/trainer_state.json     { step }
 * written under a temporary name and renamed into place only when complete, so an interrupted
 * run leaves either the previous checkpoint or the new one — never half of one.
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises"
import { join } from "node:path"
import { Effect } from "effect"
import { BadCheckpoint } from "../core/errors.js"
import { checkTensors, readSafetensors, type StoredTensor, writeSafetensorsAtomic } from "./safetensors.js"

/** What a checkpoint holds: the step, the run's identity, the fp32 parameters and AdamW moments. */
export interface CheckpointState {
  readonly step: number
  /** The options that decide the run's numbers (seed, batch, schedule…): a resume must match them. */
  readonly run?: Readonly<Record<string, number | string>>
  readonly parameters: Record<string, Float32Array>
  readonly m: Record<string, Float32Array>
  readonly v: Record<string, Float32Array>
}

const stepDir = (step: number) => `step-${String(step).padStart(8, "0")}`
const isStepDir = (name: string) => /^step-\d{8}$/.test(name)

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

const ioError = (path: string, e: unknown) =>
  e instanceof BadCheckpoint
    ? e
    : new BadCheckpoint({ path, message: `${path}: ${e instanceof Error ? e.message : String(e)}` })

/** Writes the state as a new step directory, then keeps only the newest two. */
export function saveCheckpoint(
  dir: string,
  state: CheckpointState,
  shapes: Record<string, readonly number[]> = {},
): Effect.Effect<string, BadCheckpoint> {
  const final = join(dir, stepDir(state.step))
  const tmp = `${final}.tmp-${process.pid}`
  return Effect.tryPromise({
    try: async () => {
      await mkdir(tmp, { recursive: true })
      await writeSafetensorsAtomic(join(tmp, "model.safetensors"), asTensors(state.parameters, shapes), {
        format: "pt",
        step: String(state.step),
      })
      await writeSafetensorsAtomic(
        join(tmp, "optimizer.safetensors"),
        { ...asTensors(state.m, shapes, "m."), ...asTensors(state.v, shapes, "v.") },
        { step: String(state.step) },
      )
      await writeFile(
        join(tmp, "trainer_state.json"),
        JSON.stringify({ step: state.step, run: state.run ?? {} }, null, 2) + "\n",
      )
      await rm(final, { recursive: true, force: true })
      await rename(tmp, final)
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

/** Loads a checkpoint for a model of these parameter shapes; any mismatch names the tensor. */
export function loadCheckpoint(
  path: string,
  shapes: Record<string, readonly number[]>,
): Effect.Effect<CheckpointState, BadCheckpoint> {
  return Effect.tryPromise({
    try: async () => {
      const statePath = join(path, "trainer_state.json")
      const raw = JSON.parse(await readFile(statePath, "utf8")) as {
        step?: unknown
        run?: Record<string, number | string>
      }
      if (typeof raw.step !== "number" || !Number.isInteger(raw.step) || raw.step < 0)
        throw new BadCheckpoint({ path: statePath, message: `${statePath}: "step" must be a non-negative integer` })
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
      const pick = (t: Record<string, StoredTensor>, prefix: string) =>
        Object.fromEntries(Object.keys(shapes).map((n) => [n, t[`${prefix}${n}`]!.data as Float32Array]))
      return {
        step: raw.step,
        run: raw.run ?? {},
        parameters: pick(model.tensors, ""),
        m: pick(opt.tensors, "m."),
        v: pick(opt.tensors, "v."),
      }
    },
    catch: (e) => ioError(path, e),
  })
}
