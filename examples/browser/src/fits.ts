/**
 * "What fits on my GPU": for each mode, the longest sequence whose training step fits a memory
 * size, and the step's memory by kind at a chosen S. Every number is the planner's (`planStep`:
 * the executor running the step's graphs on the counting backend), planned for a GPU backend
 * that fuses every routine (flash attention, cross-entropy, …), as `miniseq plan` does.
 */
import {
  type ByKind,
  type LlamaConfig,
  largestFitting,
  type Mode,
  modes,
  type PrecisionName,
  planStep,
  precisions,
  routineNames,
  sameKernel,
} from "miniseq"

/** What the planner is asked: the model, the GPU's memory, the precision, the batch and the S to break down. */
export interface FitsQuestion {
  readonly model: LlamaConfig
  readonly memoryBytes: number
  readonly precision: PrecisionName
  readonly batch: number
  /** The S at which each mode's memory is shown by kind. */
  readonly seq: number
}

export interface ModeFit {
  readonly mode: Mode
  /** The longest S (a multiple of `granularity`) that fits; 0 when even `granularity` does not. */
  readonly maxSeq: number
  /** The search stopped at `maxSeqCap`, not at the memory. */
  readonly capped: boolean
  /** The step's peak at the chosen S, and what was alive at that moment, by kind (the larger pass). */
  readonly peak: number
  readonly atPeak: ByKind
  /** Which pass that peak is in: forward + backward, or AdamW (weights, gradients, moments and the update's temporaries). */
  readonly pass: "forward+backward" | "AdamW"
  readonly chunks: { readonly mlp: number; readonly lm: number }
}

export interface FitsAnswer {
  readonly question: FitsQuestion
  readonly granularity: number
  readonly fits: readonly ModeFit[]
  readonly milliseconds: number
}

/** The CLI's `--max-seq` defaults: multiples of 1024, up to 2^24 tokens. */
export const granularity = 1024
export const maxSeqCap = 2 ** 24

/** A GPU backend's fused routines: all of them (the planner needs only their names). */
const gpu = { routines: sameKernel(routineNames, () => {}) }

const planAt = (q: FitsQuestion, mode: Mode, S: number) =>
  planStep(q.model, q.batch, S, { mode, precision: precisions[q.precision], allowBeyondMaxPosition: true }, gpu)

/** Answers one question: a handful of plans per mode (doubling, then bisection). */
export function whatFits(q: FitsQuestion): FitsAnswer {
  const started = performance.now()
  const fits = modes.map((mode): ModeFit => {
    const longest = largestFitting((S) => planAt(q, mode, S).peak <= q.memoryBytes, granularity, maxSeqCap)
    const p = planAt(q, mode, q.seq)
    // The pass with the higher peak is what the step needs; show what was alive then.
    const gradient = p.gradientPass.peak >= p.optimizerPass.peak
    const atPeak = (gradient ? p.gradientPass : p.optimizerPass).atPeak
    const pass = gradient ? ("forward+backward" as const) : ("AdamW" as const)
    return { mode, maxSeq: longest.n, capped: longest.capped, peak: p.peak, atPeak, pass, chunks: p.chunks }
  })
  return { question: q, granularity, fits, milliseconds: performance.now() - started }
}
