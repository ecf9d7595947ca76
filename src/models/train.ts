/**
 * The training loop. One step, end to end:
 *   batches.batchAt(step)            → tokens, targets (shifted), a pure function of the step
 *   execute(gradient graph)          → loss + gradients   (executor.ts → primitives → kernels)
 *   execute(AdamW graph, in place)   → parameters and moments updated on the device
 * Parameters and optimizer state stay on the backend between steps; only the loss, the
 * gradient norm and checkpoints are read back.
 */
import { Effect } from "effect"
import { Backend, type BackendImpl, type Buffer } from "../core/backend.js"
import type { DType, HostArray } from "../core/dtype.js"
import { BadCheckpoint, DTypeError, NonFiniteLoss, OutOfMemory } from "../core/errors.js"
import { attempt, type Binding, execute, type ExecutionError } from "../core/executor.js"
import type { Tensor } from "../core/graph.js"
import type { MemoryKind, MemoryReport } from "../core/memory.js"
import { fillNormal, rng } from "../core/random.js"
import { type CheckpointState, latestCheckpoint, loadCheckpoint, saveCheckpoint } from "./checkpoint.js"
import type { LlamaConfig } from "./config.js"
import type { Batch, Batches } from "./data.js"
import { type Mode, parameterShapes } from "./llama.js"
import { type AdamWOptions, adamwOutputs, defaultAdamW, learningRate, type PrecisionName, precisions } from "./optimizer.js"
import { suggestChunks } from "./planner.js"
import { fusedRoutines, type GradientGraph, stepGraphs } from "./step.js"

export interface TrainOptions {
  readonly model: LlamaConfig
  readonly mode: Mode
  readonly mlpChunks?: number | "auto"
  readonly lmChunks?: number | "auto"
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
  readonly validation?: { readonly batches: Batches; readonly count: number }
  /** Fail with OutOfMemory (carrying the M that would fit) instead of allocating past this many bytes. */
  readonly memoryLimit?: number
  /** Where checkpoints go; a run finding one there resumes from it. */
  readonly checkpointDir?: string
  readonly checkpointEvery?: number
}

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

export interface TrainResult {
  readonly records: readonly StepRecord[]
  readonly resumedFrom: number
  /** Final parameters, read back (HF names). */
  readonly parameters: Record<string, Float32Array>
  /** Mean loss of the final parameters on `validationBatches` held-out batches (when given). */
  readonly validationLoss?: number
}

type TrainError = ExecutionError | NonFiniteLoss | BadCheckpoint | DTypeError

/** HF-style initialisation: N(0, 0.02) for matrices, ones for norm weights, seeded. */
export function initialParameters(c: LlamaConfig, seed: number): Record<string, Float32Array> {
  const random = rng(seed)
  return Object.fromEntries(Object.entries(parameterShapes(c)).map(([name, shape]) => {
    const size = shape.reduce((a, b) => a * b, 1)
    return [name, shape.length === 1 ? new Float32Array(size).fill(1) : fillNormal(random, new Float32Array(size), 0.02)]
  }))
}

/** Host data onto the device; float32 data may go into a bfloat16 buffer (the backend rounds it). */
const upload = (b: BackendImpl, data: HostArray, dtype: DType = data instanceof Int32Array ? "int32" : "float32"): Buffer => {
  const buf = b.alloc(dtype, data.length)
  b.write(buf, data)
  return buf
}

const countTargets = (targets: Int32Array): number => targets.reduce((n, t) => (t === -100 ? n : n + 1), 0)

export function train(opts: TrainOptions, batches: Batches, onStep: (r: StepRecord) => void = () => {}): Effect.Effect<TrainResult, TrainError, Backend> {
  return trainLoop(opts, batches, onStep).pipe(
    Effect.catchTag("OutOfMemory", (e) => Effect.gen(function* () { return yield* Effect.fail(withSuggestion(e, opts, yield* Backend)) })),
  )
}

/** An OutOfMemory that also says which M (and mode) the planner finds would fit the limit. */
function withSuggestion(e: OutOfMemory, opts: TrainOptions, backend: BackendImpl): OutOfMemory {
  const fit = suggestChunks(opts.model, opts.batch, opts.seq, { mode: opts.mode, accumulation: opts.accumulation, precision: precisions[opts.precision ?? "fp32"] }, e.limit, backend)
  const hint = fit === undefined
    ? "no mode or M fits this limit at this batch and sequence length: shorten --seq or lower --batch"
    : `the planner finds --mode ${fit.mode} --mlp-chunks ${fit.mlp} --lm-chunks ${fit.lm} fits (${fit.peak} bytes)`
  return new OutOfMemory({ requested: e.requested, alive: e.alive, limit: e.limit, ...(fit ? { suggestedM: fit.lm } : {}), message: `${e.message}; ${hint}` })
}

function trainLoop(opts: TrainOptions, batches: Batches, onStep: (r: StepRecord) => void): Effect.Effect<TrainResult, TrainError, Backend> {
  return Effect.gen(function* () {
    const backend = yield* Backend
    const A = opts.accumulation ?? 1
    const hyper = { ...defaultAdamW, ...opts.adamw }
    const precision = precisions[opts.precision ?? "fp32"]
    if (!backend.dtypes.includes(precision.param)) {
      return yield* Effect.fail(new DTypeError({ op: "train", dtypes: [precision.param], message: `precision ${precision.name} needs ${precision.param} buffers, which the ${backend.name} backend does not have; train with --precision fp32, or on the cuda backend` }))
    }
    const graphs = yield* attempt(() => stepGraphs(opts.model, opts.batch, opts.seq, { mode: opts.mode, mlpChunks: opts.mlpChunks, lmChunks: opts.lmChunks, accumulation: A, precision, fused: fusedRoutines(backend) }, hyper))
    const names = graphs.first.names
    const adam = graphs.adamw

    // State: resume from the latest checkpoint, or start fresh.
    const run = { seed: opts.seed, batch: opts.batch, seq: opts.seq, accumulation: A, steps: opts.steps, lr: opts.lr, minLr: opts.minLr ?? opts.lr / 10, warmup: opts.warmup ?? 0, precision: precision.name }
    const found = opts.checkpointDir === undefined ? undefined : yield* latestCheckpoint(opts.checkpointDir)
    const state: CheckpointState = found === undefined
      ? { step: 0, run, parameters: opts.initialParameters ?? initialParameters(opts.model, opts.seed), m: {}, v: {} }
      : yield* loadCheckpoint(found, parameterShapes(opts.model))
    const differs = Object.entries(run).filter(([k, v]) => state.run?.[k] !== undefined && state.run[k] !== v)
    if (found !== undefined && differs.length > 0) {
      return yield* Effect.fail(new BadCheckpoint({ path: found, message: `${found} belongs to a run with ${differs.map(([k]) => `${k} ${state.run![k]}`).join(", ")}; this run has ${differs.map(([k, v]) => `${k} ${v}`).join(", ")}. Resume with the same options, or train into another directory` }))
    }
    // A checkpoint holds fp32 weights: the master copy under mixed precision, which the bf16
    // weights the model computes with are rounded from.
    const moment = (saved: Float32Array | undefined, n: string): Buffer => {
      if (saved !== undefined) return upload(backend, saved, precision.state)
      const b = backend.alloc(precision.state, state.parameters[n]!.length)
      backend.fill(b, 0)
      return b
    }
    const params = Object.fromEntries(names.map((n) => [n, upload(backend, state.parameters[n]!, precision.param)]))
    const master = precision.master ? Object.fromEntries(names.map((n) => [n, upload(backend, state.parameters[n]!, "float32")])) : undefined
    const m = Object.fromEntries(names.map((n) => [n, moment(state.m[n], n)]))
    const v = Object.fromEntries(names.map((n) => [n, moment(state.v[n], n)]))
    const readAll = (bufs: Record<string, Buffer>) =>
      Effect.promise(async () => Object.fromEntries(await Promise.all(names.map(async (n) => [n, (await backend.read(bufs[n]!)) as Float32Array] as const))))
    const scalar = (x: number) => upload(backend, Float32Array.of(x))
    const readScalar = (b: Buffer) => Effect.promise(async () => ((await backend.read(b)) as Float32Array)[0]!)
    /** One batch on the device, bound to a loss graph with the current weights. */
    const bindBatch = (g: GradientGraph, batch: Batch, count: number) => {
      const data = [upload(backend, batch.tokens), upload(backend, batch.targets), scalar(count)]
      const bindings = new Map<Tensor, Binding>([
        [g.model.tokens, { buffer: data[0]!, kind: "activations" }],
        [g.model.targets, { buffer: data[1]!, kind: "activations" }],
        [g.model.count, { buffer: data[2]!, kind: "activations" }],
      ])
      for (const n of names) bindings.set(g.model.params[n]!, { buffer: params[n]!, kind: "weights" })
      return { data, bindings }
    }

    const limit = opts.memoryLimit === undefined ? {} : { limit: opts.memoryLimit }
    const records: StepRecord[] = []
    const schedule = { lr: opts.lr, minLr: opts.minLr ?? opts.lr / 10, warmup: opts.warmup ?? 0, steps: opts.steps }
    for (let step = state.step + 1; step <= opts.steps; step++) {
      const started = performance.now()
      const micro = Array.from({ length: A }, (_, k) => batches.batchAt((step - 1) * A + k))
      const count = Math.max(1, micro.reduce((n, b) => n + countTargets(b.targets), 0)) // global over the micro-batches
      let grads: Buffer[] | undefined
      let loss = 0
      let worst: MemoryReport | undefined
      for (const batch of micro) {
        const g: GradientGraph = grads === undefined ? graphs.first : graphs.accumulate!
        const { data, bindings } = bindBatch(g, batch, count)
        names.forEach((n, i) => {
          // The optimizer state is resident during the pass: bound (and counted), never read.
          bindings.set(adam.m[n]!, { buffer: m[n]!, kind: "optimizer" }).set(adam.v[n]!, { buffer: v[n]!, kind: "optimizer" })
          if (master) bindings.set(adam.master[n]!, { buffer: master[n]!, kind: "optimizer" })
          if (g.previous) bindings.set(g.previous[n]!, { buffer: grads![i]!, kind: "gradients" })
        })
        const run = yield* attempt(() => execute(backend, g.outputs, bindings, { gradients: g.gradients, inPlace: g.inPlace, ...limit }))
        data.forEach((b) => backend.free(b))
        const [lossBuffer, ...gradBuffers] = run.outputs
        loss += yield* readScalar(lossBuffer!)
        backend.free(lossBuffer!)
        // Accumulated gradients not written in place replace their predecessors.
        grads?.forEach((b, i) => { if (b !== gradBuffers[i]) backend.free(b) })
        grads = gradBuffers
        if (worst === undefined || run.memory.peak > worst.peak) worst = run.memory
      }
      if (!Number.isFinite(loss)) {
        grads!.forEach((b) => backend.free(b))
        return yield* Effect.fail(new NonFiniteLoss({ step, loss, message: `loss is ${loss} at step ${step}; parameters were not updated and no checkpoint was written. Lower --lr or add --warmup steps` }))
      }

      // AdamW, in place over parameters and moments.
      const lr = learningRate(schedule, step)
      const scalars = [scalar(lr), scalar(1 - hyper.beta1 ** step), scalar(1 - hyper.beta2 ** step)]
      const bindings = new Map<Tensor, Binding>([
        [adam.lr, { buffer: scalars[0]!, kind: "temporaries" }],
        [adam.correction1, { buffer: scalars[1]!, kind: "temporaries" }],
        [adam.correction2, { buffer: scalars[2]!, kind: "temporaries" }],
      ])
      type Resident = [Record<string, Tensor>, Record<string, Buffer>, MemoryKind] // graph inputs, their buffers, their kind
      const resident: Resident[] = [[adam.params, params, "weights"], [adam.m, m, "optimizer"], [adam.v, v, "optimizer"], ...(master ? [[adam.master, master, "optimizer"] as Resident] : [])]
      for (const [tensors, buffers, kind] of resident) for (const n of names) bindings.set(tensors[n]!, { buffer: buffers[n]!, kind })
      names.forEach((n, i) => bindings.set(adam.grads[n]!, { buffer: grads![i]!, kind: "gradients" }))
      const outputs = adamwOutputs(adam) // the norm, then per parameter: weights, m, v (and master)
      const update = yield* attempt(() => execute(backend, outputs, bindings, { inPlace: adam.inPlace, ...limit }))
      const [normBuffer, ...updated] = update.outputs
      const gradNorm = yield* readScalar(normBuffer!)
      // Outputs that could not be written in place replace their inputs.
      const perParameter = resident.length
      names.forEach((n, i) => resident.forEach(([, buffers], j) => {
        const b = updated[perParameter * i + j]!
        if (b !== buffers[n]) { backend.free(buffers[n]!); buffers[n] = b }
      }))
      ;[normBuffer!, ...scalars, ...grads!].forEach((b) => backend.free(b))

      const memory = update.memory.peak > worst!.peak ? update.memory : worst!
      const seconds = (performance.now() - started) / 1000
      const record: StepRecord = { step, loss, lr, gradNorm, tokensPerSecond: (A * opts.batch * opts.seq) / seconds, peak: memory.peak, memory }
      records.push(record)
      onStep(record)
      // Give the event loop a turn: progress bars redraw, and Ctrl-C interrupts between steps.
      yield* Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 0)))

      const every = opts.checkpointEvery ?? 0
      if (opts.checkpointDir !== undefined && (step === opts.steps || (every > 0 && step % every === 0))) {
        yield* saveCheckpoint(opts.checkpointDir, { step, run, parameters: yield* readAll(master ?? params), m: yield* readAll(m), v: yield* readAll(v) }, parameterShapes(opts.model))
      }
    }
    // Held-out loss: the same graph's forward part only (the executor schedules what `loss` needs).
    let validationLoss: number | undefined
    if (opts.validation !== undefined && opts.validation.count > 0) {
      const g = graphs.first
      let total = 0
      for (let i = 0; i < opts.validation.count; i++) {
        const batch = opts.validation.batches.batchAt(i)
        const { data, bindings } = bindBatch(g, batch, Math.max(1, countTargets(batch.targets)))
        const run = yield* attempt(() => execute(backend, [g.model.loss], bindings, limit))
        total += yield* readScalar(run.outputs[0]!)
        ;[...data, run.outputs[0]!].forEach((b) => backend.free(b))
      }
      validationLoss = total / opts.validation.count
    }
    const parameters = yield* readAll(master ?? params)
    for (const bufs of [params, m, v, ...(master ? [master] : [])]) for (const n of names) backend.free(bufs[n]!)
    return { records, resumedFrom: state.step, parameters, ...(validationLoss === undefined ? {} : { validationLoss }) }
  })
}
