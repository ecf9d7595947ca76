/**
 * The passes of a training step, each one execution of a graph of step.ts on the device:
 *   gradientPass   forward + backward over the step's micro-batches, gradients summed in place
 *   optimizerPass  AdamW, in place over the weights and moments
 *   heldOutLoss    the loss alone, on batches never trained on
 * Each binds its inputs through the maps of step.ts, which the planner counts with too.
 */
import { Effect } from "effect"
import type { BackendImpl, Buffer } from "../core/backend.js"
import { NonFiniteLoss } from "../core/errors.js"
import { checkIndices, checkTargets } from "../core/indices.js"
import { IGNORE_INDEX } from "../core/routines/cross-entropy.js"
import { attempt, type Binding, type ExecutionError, execute, executeEffect } from "../core/executor.js"
import type { Tensor } from "../core/graph.js"
import type { MemoryReport } from "../core/memory.js"
import type { Batch, Batches } from "./data.js"
import { type AdamWOptions, adamwOutputs, learningRate } from "./optimizer.js"
import {
  adamwInputs,
  gradientInputs,
  lossInputs,
  memoryKind,
  type Offload,
  passOffload,
  type StateHolds,
  type StepGraphs,
  type StepInput,
  type ValueHolds,
} from "./step.js"
import { type PerParameter, type RunIdentity, type TrainState, upload } from "./train-state.js"

/** What every pass of a run shares. */
export interface Trainer {
  readonly backend: BackendImpl
  readonly graphs: StepGraphs
  readonly hyper: AdamWOptions
  readonly run: RunIdentity
  /** The executor's memory limits (device, host tier): a pass past one fails with OutOfMemory. */
  readonly limit: { readonly limit?: number; readonly hostLimit?: number }
  /** What lives in the host tier (the state's buffers were made there by `prepareState`); default: nothing. */
  readonly offload?: Offload
}

/**
 * Binds each input a pass's map lists to the buffer that holds it, with the memory kind that map
 * gives it: the same kinds the planner counts.
 */
function bindInputs(
  inputs: ReadonlyMap<Tensor, StepInput>,
  state: Partial<Record<StateHolds, PerParameter>>,
  values: Partial<Record<ValueHolds, Buffer>>,
): Map<Tensor, Binding> {
  const bindings = new Map<Tensor, Binding>()
  for (const [t, i] of inputs) {
    const buffer = "parameter" in i ? state[i.holds]?.[i.parameter] : values[i.holds]
    if (buffer === undefined) throw new Error(`training bound no buffer for ${t}, which holds ${i.holds}`)
    bindings.set(t, { buffer, kind: memoryKind(i) })
  }
  return bindings
}

const scalar = (backend: BackendImpl, x: number) => upload(backend, Float32Array.of(x))
const readScalar = (backend: BackendImpl, b: Buffer) =>
  Effect.promise(async () => ((await backend.read(b)) as Float32Array)[0]!)
const freeAll = (backend: BackendImpl, buffers: Iterable<Buffer>) => {
  for (const b of buffers) backend.free(b)
}

const countTargets = (targets: Int32Array): number => targets.reduce((n, t) => (t === -100 ? n : n + 1), 0)

/** A batch's ids, checked on the host before they go anywhere: no backend reads past its vocabulary. */
const checkBatch = (batch: Batch, g: { readonly params: Record<string, Tensor> }): void => {
  const vocab = g.params["model.embed_tokens.weight"]!.shape[0]!
  const fix = `a token id is below the model's vocab_size ${vocab}`
  checkIndices("train: batch tokens", batch.tokens, vocab, fix)
  checkTargets("train: batch targets", batch.targets, vocab, IGNORE_INDEX)
}

/** One batch on the device, with `count`, the number of targets its loss divides by. */
const batchValues = (backend: BackendImpl, batch: Batch, count: number) => ({
  tokens: upload(backend, batch.tokens),
  targets: upload(backend, batch.targets),
  count: scalar(backend, count),
})

export interface Gradients {
  /** The summed loss of the micro-batches (each normalised by the global target count). */
  readonly loss: number
  readonly grads: PerParameter
  /** Each gradient's Σ g² (fp32 scalars), from the last micro-batch: the norm's shares. */
  readonly squares: PerParameter
  /** The report of the micro-batch with the highest peak. */
  readonly memory: MemoryReport
}

/** Forward and backward over `micro`, the step's micro-batches, adding each one's gradients into the last. */
export function gradientPass(
  t: Trainer,
  s: TrainState,
  step: number,
  micro: readonly Batch[],
): Effect.Effect<Gradients, ExecutionError | NonFiniteLoss> {
  return Effect.gen(function* () {
    const { backend, graphs } = t
    // The loss divides by the targets of all micro-batches, so their sum is the batch's mean loss.
    const count = Math.max(
      1,
      micro.reduce((n, b) => n + countTargets(b.targets), 0),
    )
    let grads: PerParameter | undefined
    let squares: PerParameter | undefined
    let loss = 0
    let worst: MemoryReport | undefined
    for (const batch of micro) {
      const g = grads === undefined ? graphs.first : graphs.accumulate!
      yield* attempt(() => checkBatch(batch, g.model))
      const values = batchValues(backend, batch, count)
      const bindings = bindInputs(gradientInputs(g, graphs.adamw), { ...s, gradients: grads }, values)
      const options = { gradients: g.gradients, inPlace: g.inPlace, offload: passOffload(t.offload), ...t.limit }
      const previous = [...Object.values(grads ?? {}), ...Object.values(squares ?? {})]
      const run = yield* executeEffect(backend, g.outputs, bindings, options).pipe(
        Effect.ensuring(Effect.sync(() => freeAll(backend, Object.values(values)))),
        // A failed micro-batch (OutOfMemory) leaves nothing behind: the gradients it would add to go too.
        Effect.onError(() => Effect.sync(() => freeAll(backend, previous))),
      )
      const [lossBuffer, ...rest] = run.outputs
      loss += yield* readScalar(backend, lossBuffer!)
      backend.free(lossBuffer!)
      const next = Object.fromEntries(g.names.map((n, i) => [n, rest[i]!]))
      // Accumulated gradients not written in place replace their predecessors; only the last
      // micro-batch's squares (of the summed gradients) count.
      if (grads) for (const n of g.names) if (grads[n] !== next[n]) backend.free(grads[n]!)
      if (squares) freeAll(backend, Object.values(squares))
      grads = next
      squares = Object.fromEntries(g.names.map((n, i) => [n, rest[g.names.length + i]!]))
      if (worst === undefined || run.memory.peak > worst.peak) worst = run.memory
    }
    if (!Number.isFinite(loss)) {
      freeAll(backend, [...Object.values(grads!), ...Object.values(squares!)])
      const message =
        `loss is ${loss} at step ${step}; parameters were not updated` +
        " and no checkpoint was written. --lr and --warmup are part of the run, so resuming repeats this:" +
        " train into another directory with a lower --lr or more --warmup steps"
      return yield* Effect.fail(new NonFiniteLoss({ step, loss, message }))
    }
    return { loss, grads: grads!, squares: squares!, memory: worst! }
  })
}

export interface Update {
  readonly lr: number
  /** The gradient norm before clipping. */
  readonly gradNorm: number
  readonly memory: MemoryReport
}

/** AdamW at `step`, in place over the weights and moments; frees the gradients and their squares. */
export function optimizerPass(
  t: Trainer,
  s: TrainState,
  step: number,
  { grads, squares }: Pick<Gradients, "grads" | "squares">,
): Effect.Effect<Update, ExecutionError> {
  return Effect.gen(function* () {
    const {
      backend,
      graphs: { adamw: a },
      hyper,
    } = t
    const lr = learningRate(t.run, step)
    const values = {
      lr: scalar(backend, lr),
      correction1: scalar(backend, 1 - hyper.beta1 ** step),
      correction2: scalar(backend, 1 - hyper.beta2 ** step),
    }
    const bindings = bindInputs(adamwInputs(a), { ...s, gradients: grads, squares }, values)
    // What the pass uses up, however it ends: its scalars, the gradients and their squares.
    const spent = [...Object.values(values), ...Object.values(grads), ...Object.values(squares)]
    const outputs = adamwOutputs(a)
    const options = { inPlace: a.inPlace, ...t.limit }
    const update = yield* attempt(() => execute(backend, outputs, bindings, options)).pipe(
      Effect.onError(() => Effect.sync(() => freeAll(backend, spent))),
    )
    const result = new Map(outputs.map((o, i) => [o, update.outputs[i]!]))
    const normBuffer = result.get(a.gradNorm)!
    const gradNorm = yield* readScalar(backend, normBuffer)
    // Outputs that could not be written in place replace their inputs.
    const replace = (buffers: PerParameter, updated: Record<string, Tensor>) => {
      for (const n of Object.keys(buffers)) {
        const b = result.get(updated[n]!)!
        if (b !== buffers[n]) {
          backend.free(buffers[n]!)
          buffers[n] = b
        }
      }
    }
    replace(s.weights, a.newParams)
    replace(s.m, a.newM)
    replace(s.v, a.newV)
    if (s.master) replace(s.master, a.newMaster)
    freeAll(backend, [normBuffer, ...spent])
    return { lr, gradNorm, memory: update.memory }
  })
}

/** Batches never trained on, and how many of them to score the weights on. */
export interface HeldOut {
  readonly batches: Batches
  readonly count: number
}

/** The mean loss of the weights on `count` held-out batches, by the forward part alone (none: undefined). */
export function heldOutLoss(
  t: Trainer,
  s: TrainState,
  held: HeldOut | undefined,
): Effect.Effect<number | undefined, ExecutionError> {
  return Effect.gen(function* () {
    if (held === undefined || !(held.count > 0)) return undefined
    const {
      backend,
      graphs: { first: g },
    } = t
    let total = 0
    for (let i = 0; i < held.count; i++) {
      const batch = held.batches.batchAt(i)
      yield* attempt(() => checkBatch(batch, g.model))
      const values = batchValues(backend, batch, Math.max(1, countTargets(batch.targets)))
      const bindings = bindInputs(lossInputs(g.model), s, values)
      const run = yield* executeEffect(backend, [g.model.loss], bindings, t.limit).pipe(
        Effect.ensuring(Effect.sync(() => freeAll(backend, Object.values(values)))),
      )
      total += yield* readScalar(backend, run.outputs[0]!)
      backend.free(run.outputs[0]!)
    }
    return total / held.count
  })
}
