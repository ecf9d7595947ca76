/**
 * The training state on the device: each parameter's weights, AdamW moments and (mixed precision)
 * fp32 master copy, resident between steps. Started fresh or from the latest checkpoint.
 */
import { Effect } from "effect"
import { type BackendImpl, type Buffer, numel } from "../core/backend.js"
import type { DType, HostArray } from "../core/dtype.js"
import type { BadCheckpoint } from "../core/errors.js"
import { counterNormals } from "../core/random.js"
import { type CheckpointState, cleanCheckpointDir, latestCheckpoint, loadCheckpoint, matchRun } from "./checkpoint.js"
import { architecture, type LlamaConfig } from "./config.js"
import { parameterShapes, vectorInit } from "./llama.js"
import type { Precision } from "./optimizer.js"

/** One buffer per parameter name. */
export type PerParameter = Record<string, Buffer>

export interface TrainState {
  /** The step this state is after: 0 when fresh, the checkpoint's step when resumed. */
  readonly step: number
  readonly weights: PerParameter
  /** The fp32 master weights (mixed precision), which the bf16 `weights` are rounded from. */
  readonly master?: PerParameter
  readonly m: PerParameter
  readonly v: PerParameter
  /** Resumed: whether the checkpoint's tensors were verified against checksums ("none": a format-1 checkpoint). */
  readonly checksums?: "crc32" | "none"
}

/** The options that decide a run's numbers (its schedule among them): a resume must match them. */
export type RunIdentity = Readonly<{
  seed: number
  batch: number
  seq: number
  accumulation: number
  steps: number
  lr: number
  minLr: number
  warmup: number
  precision: string
}>

/** Where a run starts: the latest checkpoint in `checkpointDir`, else `initialParameters` or the seed's. */
export interface Start {
  readonly model: LlamaConfig
  readonly seed: number
  readonly initialParameters?: Readonly<Record<string, Float32Array>>
  readonly checkpointDir?: string
  /** Where the batches come from (e.g. corpus hash, tokenizer): recorded in checkpoints, matched on resume. */
  readonly data?: Readonly<Record<string, number | string>>
}

/** HF-style initialisation: N(0, 0.02) for matrices; norm weights and biases as `vectorInit` says. */
const initStd = 0.02

/** The row HF's initialisation zeroes: the embedding's padding row (nn.Embedding's padding_idx), if any. */
const zeroedRow = (c: LlamaConfig, name: string): number | null =>
  name === "model.embed_tokens.weight" ? architecture(c).padIndex : null

/** Parameter `name` as initialised on the host: its vector value, or stream `stream` of `counterNormals`. */
function hostInitial(c: LlamaConfig, name: string, shape: readonly number[], stream: number, seed: number) {
  const values = new Float32Array(numel(shape))
  if (shape.length === 1) return values.fill(vectorInit(c, name))
  counterNormals(values, seed, stream, initStd)
  const row = zeroedRow(c, name)
  if (row !== null) values.fill(0, row * shape[1]!, (row + 1) * shape[1]!)
  return values
}

/**
 * The seeded initial weights, on the host. Parameter i (in `parameterShapes` order) is stream i of
 * `counterNormals`, the stream a backend with `randomNormal` makes on the device: both start
 * from the same model.
 */
export function initialParameters(c: LlamaConfig, seed: number): Record<string, Float32Array> {
  return Object.fromEntries(
    Object.entries(parameterShapes(c)).map(([name, shape], i) => [name, hostInitial(c, name, shape, i, seed)]),
  )
}

/**
 * A fresh parameter in `dtype`: its normals made where the backend can (a billion normals take
 * minutes in JavaScript, milliseconds on a GPU), else on the host: the same values either way.
 */
function initialParameter(
  backend: BackendImpl,
  c: LlamaConfig,
  name: string,
  shape: readonly number[],
  stream: number,
  seed: number,
  dtype: DType,
  alloc = (d: DType, size: number): Buffer => backend.alloc(d, size),
): Buffer {
  if (shape.length === 1 || !backend.randomNormal)
    return upload(backend, hostInitial(c, name, shape, stream, seed), dtype, alloc)
  const b = alloc(dtype, numel(shape))
  backend.randomNormal(b, seed, stream, initStd)
  const row = zeroedRow(c, name)
  if (row !== null) {
    const width = shape[1]!
    const zeros = backend.alloc(dtype, width)
    backend.fill(zeros, 0)
    const line = (offset: number) => ({ shape: [width], strides: [1], offset })
    backend.copy(zeros, line(0), b, line(row * width))
    backend.free(zeros)
  }
  return b
}

/** Host data onto the device; float32 data may go into a bfloat16 buffer (the backend rounds it). */
export const upload = (
  b: BackendImpl,
  data: HostArray,
  dtype: DType = data instanceof Int32Array ? "int32" : "float32",
  alloc = (d: DType, size: number): Buffer => b.alloc(d, size),
): Buffer => {
  const buf = alloc(dtype, data.length)
  b.write(buf, data)
  return buf
}

/**
 * The latest checkpoint in `start.checkpointDir`, made by a run with the same options, model and
 * data, or a fresh start. The folder is made, checked writable and rid of dead saves' temporaries first.
 */
function startingPoint(start: Start, run: RunIdentity): Effect.Effect<CheckpointState | undefined, BadCheckpoint> {
  return Effect.gen(function* () {
    const dir = start.checkpointDir
    if (dir !== undefined) yield* cleanCheckpointDir(dir)
    const found = dir === undefined ? undefined : yield* latestCheckpoint(dir)
    if (found === undefined)
      return start.initialParameters
        ? ({ step: 0, run, parameters: start.initialParameters, m: {}, v: {} } satisfies CheckpointState)
        : undefined // fresh: initialised on the backend
    const state = yield* loadCheckpoint(found, parameterShapes(start.model))
    yield* matchRun(state, { run, model: start.model, ...(start.data ? { data: start.data } : {}) }, found)
    return state
  })
}

/** The run's starting point, uploaded in the precision's dtypes (fresh moments are zeros). */
export function prepareState(
  backend: BackendImpl,
  names: readonly string[],
  precision: Precision,
  start: Start,
  run: RunIdentity,
  /** The moments and master weights go to the backend's host tier (optimizer offload). */
  hostState = false,
): Effect.Effect<TrainState, BadCheckpoint> {
  const shapes = parameterShapes(start.model)
  const streams = new Map(Object.keys(shapes).map((n, i) => [n, i]))
  return Effect.map(startingPoint(start, run), (saved) => {
    const perParameter = (buffer: (n: string) => Buffer): PerParameter =>
      Object.fromEntries(names.map((n) => [n, buffer(n)]))
    const onDevice = (d: DType, size: number): Buffer => backend.alloc(d, size)
    const stateAlloc =
      hostState && backend.hostAlloc ? (d: DType, size: number) => backend.hostAlloc!(d, size) : onDevice
    const moment = (values: Float32Array | undefined, n: string): Buffer => {
      if (values !== undefined) return upload(backend, values, precision.state, stateAlloc)
      const b = stateAlloc(precision.state, numel(shapes[n]!))
      backend.fill(b, 0)
      return b
    }
    // A checkpoint holds fp32 weights: the master copy under mixed precision.
    const parameter = (n: string, dtype: DType, alloc = onDevice): Buffer =>
      saved === undefined
        ? initialParameter(backend, start.model, n, shapes[n]!, streams.get(n)!, start.seed, dtype, alloc)
        : upload(backend, saved.parameters[n]!, dtype, alloc)
    const weights = perParameter((n) => parameter(n, precision.param))
    const master = precision.master ? perParameter((n) => parameter(n, "float32", stateAlloc)) : undefined
    const m = perParameter((n) => moment(saved?.m[n], n))
    const v = perParameter((n) => moment(saved?.v[n], n))
    const checksums = saved?.checksums === undefined ? {} : { checksums: saved.checksums }
    return { step: saved?.step ?? 0, weights, ...(master ? { master } : {}), m, v, ...checksums }
  })
}

/** One buffer after another, so a backend's staging for reads holds one parameter, not the model. */
const readAll = (backend: BackendImpl, buffers: PerParameter): Effect.Effect<Record<string, Float32Array>> =>
  Effect.promise(async () => {
    const out: Record<string, Float32Array> = {}
    for (const [n, b] of Object.entries(buffers)) out[n] = (await backend.read(b)) as Float32Array
    return out
  })

/** The fp32 weights, read back: the master copy under mixed precision. */
export const readParameters = (backend: BackendImpl, s: TrainState) => readAll(backend, s.master ?? s.weights)

/** The state read back as a checkpoint holds it: fp32 weights (the master copy) and moments. */
export function readState(backend: BackendImpl, s: TrainState) {
  return Effect.gen(function* () {
    const parameters = yield* readParameters(backend, s)
    const m = yield* readAll(backend, s.m)
    const v = yield* readAll(backend, s.v)
    return { parameters, m, v }
  })
}

export function freeState(backend: BackendImpl, s: TrainState): void {
  for (const buffers of [s.weights, s.m, s.v, ...(s.master ? [s.master] : [])]) {
    for (const b of Object.values(buffers)) backend.free(b)
  }
}
