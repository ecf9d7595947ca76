/**
 * Training in the page, step by step: the passes `train` runs (forward + backward, then AdamW),
 * so that between steps the page can score held-out batches, read the weights back to sample
 * text, and stop. The run's numbers are `train`'s: the same graphs, state, schedule and seed.
 */
import { Effect } from "effect"
import {
  attempt,
  Backend,
  type Batches,
  defaultAdamW,
  freeState,
  fusedRoutines,
  gradientPass,
  heldOutLoss,
  type LlamaConfig,
  type Mode,
  optimizerPass,
  prepareState,
  precisions,
  readParameters,
  type RunIdentity,
  stepGraphs,
  type Trainer,
} from "miniseq"

export interface LabRun {
  readonly model: LlamaConfig
  readonly mode: Mode
  /** M for both the MLP and the LM head + loss ("auto": the library's choice). */
  readonly chunks: number | "auto"
  readonly batch: number
  readonly seq: number
  readonly steps: number
  readonly lr: number
  readonly warmup: number
  readonly seed: number
  /** Held-out loss and a text sample every this many steps (and after the last). */
  readonly every: number
}

export interface LabStep {
  readonly step: number
  readonly loss: number
  readonly tokensPerSecond: number
  /** The step's measured peak: the executor's ledger on the device, the larger pass. */
  readonly peak: number
}

export interface LabHooks {
  readonly onStep: (s: LabStep) => void
  /** Every `every` steps: the held-out loss and the weights as they are now (HF names, fp32). */
  readonly onCheck: (step: number, heldOut: number, parameters: Record<string, Float32Array>) => Promise<void>
}

/** Runs `opts.steps` steps on the Backend service; interrupting the fiber stops it between two nodes. */
export function trainInPage(opts: LabRun, batches: Batches, validation: Batches, hooks: LabHooks) {
  return Effect.gen(function* () {
    const backend = yield* Backend
    const precision = precisions.fp32
    const run: RunIdentity = {
      seed: opts.seed,
      batch: opts.batch,
      seq: opts.seq,
      accumulation: 1,
      steps: opts.steps,
      lr: opts.lr,
      minLr: opts.lr / 10,
      warmup: opts.warmup,
      precision: precision.name,
    }
    const stepOpts = {
      mode: opts.mode,
      mlpChunks: opts.chunks,
      lmChunks: opts.chunks,
      precision,
      fused: fusedRoutines(backend),
    }
    const graphs = yield* attempt(() => stepGraphs(opts.model, opts.batch, opts.seq, stepOpts, defaultAdamW))
    const t: Trainer = { backend, graphs, hyper: defaultAdamW, run, limit: {} }
    const state = yield* prepareState(
      backend,
      graphs.first.names,
      precision,
      { model: opts.model, seed: opts.seed },
      run,
    )
    const heldOut = { batches: validation, count: 2 }
    yield* Effect.gen(function* () {
      for (let step = 1; step <= opts.steps; step++) {
        const started = performance.now()
        const g = yield* gradientPass(t, state, step, [batches.batchAt(step - 1)])
        const u = yield* optimizerPass(t, state, step, g)
        const seconds = (performance.now() - started) / 1000
        const peak = Math.max(g.memory.peak, u.memory.peak)
        hooks.onStep({ step, loss: g.loss, tokensPerSecond: (opts.batch * opts.seq) / seconds, peak })
        if (step % opts.every === 0 || step === opts.steps) {
          const loss = yield* heldOutLoss(t, state, heldOut)
          const parameters = yield* readParameters(backend, state)
          yield* Effect.promise(() => hooks.onCheck(step, loss ?? Number.NaN, parameters))
        }
        // A turn for the event loop: the page redraws, and Stop is heard, between steps.
        yield* Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 0)))
      }
    }).pipe(Effect.ensuring(Effect.sync(() => freeState(backend, state))))
  })
}
