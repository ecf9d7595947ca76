/**
 * The training loop. A run prepares its state on the device, then each step is
 *   gradientPass   batches.batchAt(…) → loss + gradients   (executor.ts → primitives → kernels)
 *   optimizerPass  AdamW, in place: parameters and moments updated on the device
 *   checkpoint     every `checkpointEvery` steps and at the end, when a directory is given
 * and the final weights are scored on held-out batches. Parameters and optimizer state stay on
 * the backend between steps; only the loss, the gradient norm and checkpoints are read back.
 */
import { Effect } from "effect"
import { Backend, type BackendImpl } from "../core/backend.js"
import { type BadCheckpoint, BadConfig, DTypeError, NonFiniteLoss, OutOfMemory } from "../core/errors.js"
import { attempt, type ExecutionError } from "../core/executor.js"
import type { MemoryReport } from "../core/memory.js"
import { nonFiniteState, saveCheckpoint } from "./checkpoint.js"
import type { LlamaConfig } from "./config.js"
import type { Batch, Batches } from "./data.js"
import { type Mode, parameterShapes } from "./llama.js"
import { type AdamWOptions, defaultAdamW, type PrecisionName, precisions } from "./optimizer.js"
import { memoryAdvice } from "./planner.js"
import { fusedRoutines, type Offload, stepGraphs } from "./step.js"
import {
  type Gradients,
  gradientPass,
  type HeldOut,
  heldOutLoss,
  optimizerPass,
  type Trainer,
  type Update,
} from "./train-passes.js"
import { freeState, prepareState, readParameters, readState, type RunIdentity, type TrainState } from "./train-state.js"

export { initialParameters } from "./train-state.js"

/** What `train` runs: the model, how its memory is laid out (mode, M), the batch shape, the schedule and where checkpoints go. */
export interface TrainOptions {
  readonly model: LlamaConfig
  readonly mode: Mode
  readonly mlpChunks?: number | "auto"
  readonly lmChunks?: number | "auto"
  /** Checkpoint modes: layers per checkpoint region (`ModelOptions.checkpointGroup`, default 1). */
  readonly checkpointGroup?: number
  readonly batch: number
  readonly seq: number
  readonly steps: number
  /** Micro-batches per optimizer step (gradient accumulation). */
  readonly accumulation?: number
  readonly lr: number
  readonly minLr?: number
  readonly warmup?: number
  readonly adamw?: Partial<AdamWOptions>
  /**
   * fp32 (default); bf16-mixed: bf16 weights and activations, fp32 master weights, moments and
   * weight-gradient accumulators; bf16: everything bf16. bf16 needs a GPU backend.
   */
  readonly precision?: PrecisionName
  readonly seed: number
  /** Start from these weights (HF names, fp32) instead of the seeded initialisation. */
  readonly initialParameters?: Readonly<Record<string, Float32Array>>
  /** Batches never trained on, and how many of them to score the final parameters on. */
  readonly validation?: HeldOut
  /** Fail with OutOfMemory (carrying the M that would fit) instead of allocating past this many bytes. */
  readonly memoryLimit?: number
  /**
   * Keep the layer checkpoints and/or the optimizer's state and gradients in the backend's host
   * tier (pinned host memory on a GPU) instead of on the device. The numbers do not change.
   */
  readonly offload?: Offload
  /** Fail with OutOfMemory instead of offloading past this many bytes of host memory. */
  readonly hostMemoryLimit?: number
  /**
   * Read the final parameters back into `TrainResult.parameters` (default true). A benchmark of
   * an 8B model passes false: read back as float32 they are 32 GB of host memory.
   */
  readonly readBack?: boolean
  /** Where checkpoints go; a run finding one there resumes from it. */
  readonly checkpointDir?: string
  readonly checkpointEvery?: number
  /**
   * Where `batches` come from (e.g. `{ corpus, sha256, tokenizer }`): saved in each checkpoint, and a
   * resume with other values is refused, naming them.
   */
  readonly data?: Readonly<Record<string, number | string>>
}

/** One optimizer step, as `train` reports it to `onStep` and in `TrainResult.records`. */
export interface StepRecord {
  readonly step: number
  readonly loss: number
  readonly lr: number
  readonly gradNorm: number
  readonly tokensPerSecond: number
  /** The step's peak live bytes (the larger of the gradient and optimizer passes). */
  readonly peak: number
  readonly memory: MemoryReport
}

/** What `train` returns once every step ran (and the held-out batches were scored). */
export interface TrainResult {
  readonly records: readonly StepRecord[]
  readonly resumedFrom: number
  /** Resumed: "crc32" when every tensor matched its checksum, "none" for an older checkpoint that has none. */
  readonly resumedChecksums?: "crc32" | "none"
  /** Final parameters, read back (HF names); empty with `readBack: false`. */
  readonly parameters: Record<string, Float32Array>
  /** Mean loss of the final parameters on `validationBatches` held-out batches (when given). */
  readonly validationLoss?: number
}

type TrainError = ExecutionError | NonFiniteLoss | BadCheckpoint | DTypeError

/**
 * Trains `opts.model` for `opts.steps` optimizer steps on `batches`, on the `Backend` the caller
 * provides (`Effect.provide(cpuBackendLayer())`, `webgpuBackendLayer()`, `cudaBackendLayer()`).
 * Parameters and AdamW moments stay on the device; only the loss, the gradient norm and
 * checkpoints are read back. `onStep` hears each step's record as soon as it is done. With
 * `checkpointDir`, a run that finds a checkpoint there resumes from it (its options must match)
 * and reproduces the uninterrupted run exactly. Fails with the executor's typed errors
 * (`OutOfMemory` with the mode and M that would fit, `ShapeError`, …), `NonFiniteLoss`,
 * `BadCheckpoint` or `DTypeError` (a precision the backend cannot store).
 */
export function train(
  opts: TrainOptions,
  batches: Batches,
  onStep: (r: StepRecord) => void = () => {},
): Effect.Effect<TrainResult, TrainError, Backend> {
  return Effect.gen(function* () {
    const t = yield* setUp(opts, yield* Backend)
    const hostState = opts.offload?.optimizer ?? false
    const state = yield* prepareState(t.backend, t.graphs.first.names, precisionOf(opts), opts, t.run, hostState)
    // The state is given back however the run ends (an OutOfMemory step included), so the same
    // process can retry smaller.
    return yield* Effect.gen(function* () {
      const records: StepRecord[] = []
      for (let step = state.step + 1; step <= opts.steps; step++) {
        const started = performance.now()
        const gradients = yield* gradientPass(t, state, step, microBatches(batches, step, t.run.accumulation))
        const update = yield* optimizerPass(t, state, step, gradients)
        const record = stepRecord(t, step, started, gradients, update)
        records.push(record)
        onStep(record)
        yield* aTurnForTheEventLoop
        yield* checkpoint(t, state, opts, step, record.loss)
      }
      const validationLoss = yield* heldOutLoss(t, state, opts.validation)
      const parameters = opts.readBack === false ? {} : yield* readParameters(t.backend, state)
      const resumedFrom = state.step
      return {
        records,
        resumedFrom,
        ...(state.checksums === undefined ? {} : { resumedChecksums: state.checksums }),
        parameters,
        ...(validationLoss === undefined ? {} : { validationLoss }),
      }
    }).pipe(Effect.ensuring(Effect.sync(() => freeState(t.backend, state))))
  }).pipe(
    Effect.catchTag("OutOfMemory", (e) =>
      Effect.gen(function* () {
        return yield* Effect.fail(withSuggestion(e, opts, yield* Backend))
      }),
    ),
  )
}

const precisionOf = (opts: TrainOptions) => precisions[opts.precision ?? "fp32"]

/** The run's graphs, built for this backend's fused routines, once its dtypes allow the precision. */
function setUp(opts: TrainOptions, backend: BackendImpl): Effect.Effect<Trainer, ExecutionError> {
  return Effect.gen(function* () {
    const precision = precisionOf(opts)
    if (!backend.dtypes.includes(precision.param)) {
      const message =
        `precision ${precision.name} needs ${precision.param} buffers, which the` +
        ` ${backend.name} backend does not have; train with --precision fp32, or on the cuda backend`
      return yield* Effect.fail(new DTypeError({ op: "train", dtypes: [precision.param], message }))
    }
    const run = runIdentity(opts)
    const hyper = { ...defaultAdamW, ...opts.adamw }
    const { mode, mlpChunks, lmChunks, checkpointGroup } = opts
    const fused = fusedRoutines(backend)
    const group = checkpointGroup === undefined ? {} : { checkpointGroup }
    const stepOpts = { mode, mlpChunks, lmChunks, ...group, accumulation: run.accumulation, precision, fused }
    const graphs = yield* attempt(() => stepGraphs(opts.model, opts.batch, opts.seq, stepOpts, hyper))
    const limit = {
      ...(opts.memoryLimit === undefined ? {} : { limit: opts.memoryLimit }),
      ...(opts.hostMemoryLimit === undefined ? {} : { hostLimit: opts.hostMemoryLimit }),
    }
    const offload = opts.offload ?? {}
    if ((offload.checkpoints || offload.optimizer) && backend.hostAlloc === undefined) {
      const message = `the ${backend.name} backend has no host tier to offload to; train without --offload, or on cpu, cpu-fast or cuda`
      return yield* Effect.fail(new BadConfig({ field: "offload", message }))
    }
    return { backend, graphs, hyper, run, limit, offload }
  })
}

const runIdentity = (opts: TrainOptions): RunIdentity => ({
  seed: opts.seed,
  batch: opts.batch,
  seq: opts.seq,
  accumulation: opts.accumulation ?? 1,
  steps: opts.steps,
  lr: opts.lr,
  minLr: opts.minLr ?? opts.lr / 10,
  warmup: opts.warmup ?? 0,
  precision: precisionOf(opts).name,
})

/** Step `step`'s micro-batches: a pure function of the step, so a resumed run sees the same data. */
const microBatches = (batches: Batches, step: number, accumulation: number): Batch[] =>
  Array.from({ length: accumulation }, (_, k) => batches.batchAt((step - 1) * accumulation + k))

/** What `onStep` is told: the step's loss, learning rate, gradient norm, speed and peak memory. */
function stepRecord(t: Trainer, step: number, started: number, g: Gradients, update: Update): StepRecord {
  const memory = update.memory.peak > g.memory.peak ? update.memory : g.memory
  const seconds = (performance.now() - started) / 1000
  const tokensPerSecond = (t.run.accumulation * t.run.batch * t.run.seq) / seconds
  const { lr, gradNorm } = update
  return { step, loss: g.loss, lr, gradNorm, tokensPerSecond, peak: memory.peak, memory }
}

/** Progress bars redraw, and Ctrl-C interrupts, between steps. */
const aTurnForTheEventLoop = Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 0)))

/**
 * Saves the state after `step` when due (every `checkpointEvery` steps, and the last), atomically.
 * A weight or moment the update left non-finite is a NonFiniteLoss: nothing is saved, the last
 * good checkpoint stays the newest.
 */
function checkpoint(
  t: Trainer,
  s: TrainState,
  opts: TrainOptions,
  step: number,
  loss: number,
): Effect.Effect<void, BadCheckpoint | NonFiniteLoss> {
  const every = opts.checkpointEvery ?? 0
  const due = step === opts.steps || (every > 0 && step % every === 0)
  const dir = opts.checkpointDir
  if (dir === undefined || !due) return Effect.void
  return Effect.gen(function* () {
    const state = yield* readState(t.backend, s)
    const bad = nonFiniteState(state)
    if (bad !== undefined) {
      const what = bad.name.startsWith("m.") || bad.name.startsWith("v.") ? "AdamW moment" : "weight"
      const message =
        `the update of step ${step} left ${what} "${bad.name}" ${bad.value} (element ${bad.index}) although the loss was ${loss};` +
        ` the checkpoint of step ${step} was not saved and the last one saved is kept. --lr and --warmup are part of the run,` +
        " so resuming repeats this: train into another directory with a lower --lr or more --warmup steps"
      return yield* Effect.fail(new NonFiniteLoss({ step, loss, tensor: bad.name, message }))
    }
    const data = opts.data === undefined ? {} : { data: opts.data }
    yield* saveCheckpoint(dir, { step, run: t.run, model: opts.model, ...data, ...state }, parameterShapes(opts.model))
  })
}

/**
 * An OutOfMemory that also says what would fit: on the device, which M (and mode, and offload)
 * the planner finds fits the limit; in host memory, what to offload less of.
 */
function withSuggestion(e: OutOfMemory, opts: TrainOptions, backend: BackendImpl): OutOfMemory {
  if (e.tier === "host") {
    const hint =
      "offload less: keep some checkpoints on the device (--offload checkpoints:SIZE,optimizer) or the optimizer's state; `miniseq plan --max-seq --offload auto --host-memory SIZE` finds what fits both memories"
    return new OutOfMemory({
      requested: e.requested,
      alive: e.alive,
      limit: e.limit,
      tier: "host",
      message: `${e.message}; ${hint}`,
    })
  }
  const stepOpts = {
    mode: opts.mode,
    ...(opts.checkpointGroup === undefined ? {} : { checkpointGroup: opts.checkpointGroup }),
    accumulation: opts.accumulation,
    precision: precisionOf(opts),
    ...(opts.offload ? { offload: opts.offload } : {}),
  }
  const { fit, hint } = memoryAdvice(opts.model, opts.batch, opts.seq, stepOpts, e.limit, backend)
  const { requested, alive, limit } = e
  const message = `${e.message}; ${hint}`
  return new OutOfMemory({ requested, alive, limit, ...(fit ? { suggestedM: fit.lm } : {}), message })
}
