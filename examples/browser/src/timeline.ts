/**
 * Live bytes over one training step, as the executor allocates and frees them: the step's two
 * passes (forward + backward, then AdamW) run on the counting backend, with each allocation and
 * free it is asked for recorded. The executor's ledger counts the same buffers, so the highest
 * point of the timeline is the ledger's peak (`ledgerPeak`, which the page checks it against).
 */
import {
  adamwInputs,
  adamwOutputs,
  type Binding,
  type BackendImpl,
  bytesPerElement,
  execute,
  fusedRoutines,
  gradientInputs,
  inputKinds,
  type LlamaConfig,
  type MemoryKind,
  type Mode,
  makeCountingBackend,
  stepGraphs,
  type Tensor,
} from "miniseq"

export interface StepTimeline {
  readonly mode: Mode
  /** Live bytes after each allocation or free, in the order the executor made them. */
  readonly live: readonly number[]
  /** Where the AdamW pass starts in `live`. */
  readonly optimizerStart: number
  readonly peak: number
  /** The executor's ledger's peak for the same step (the larger pass): equals `peak`. */
  readonly ledgerPeak: number
  readonly chunks: { readonly mlp: number; readonly lm: number }
}

const bytesOf = (t: Tensor) => t.size * bytesPerElement[t.dtype]

/** Runs one pass on a recording counting backend, appending its live bytes to `live`. */
function recordPass(
  fused: readonly string[],
  outputs: readonly Tensor[],
  inputs: ReadonlyMap<Tensor, MemoryKind>,
  opts: Parameters<typeof execute>[3],
  live: number[],
): number {
  const counting = makeCountingBackend(fused)
  // Bound inputs (weights, moments, the batch) are alive throughout: the pass starts from them.
  let bytes = [...inputs.keys()].reduce((n, t) => n + bytesOf(t), 0)
  live.push(bytes)
  const sizes = new Map<object, number>()
  const recording: BackendImpl = {
    ...counting,
    alloc(dtype, size) {
      const buffer = counting.alloc(dtype, size)
      sizes.set(buffer, size * bytesPerElement[dtype])
      bytes += size * bytesPerElement[dtype]
      live.push(bytes)
      return buffer
    },
    free(buffer) {
      bytes -= sizes.get(buffer) ?? 0
      live.push(bytes)
    },
  }
  const bindings = new Map<Tensor, Binding>(
    [...inputs].map(([t, kind]) => [t, { buffer: counting.alloc(t.dtype, t.size), kind }]),
  )
  return execute(recording, outputs, bindings, opts).memory.peak
}

/** One step of `model` at batch × seq in `mode`, planned for a backend with these fused routines. */
export function stepTimeline(
  model: LlamaConfig,
  batch: number,
  seq: number,
  mode: Mode,
  backend: Pick<BackendImpl, "routines">,
  chunks: { readonly mlp: number | "auto"; readonly lm: number | "auto" } = { mlp: "auto", lm: "auto" },
): StepTimeline {
  const fused = fusedRoutines(backend)
  const g = stepGraphs(model, batch, seq, { mode, mlpChunks: chunks.mlp, lmChunks: chunks.lm, fused })
  const live: number[] = []
  const gradientPeak = recordPass(
    fused,
    g.first.outputs,
    inputKinds(gradientInputs(g.first, g.adamw)),
    { gradients: g.first.gradients },
    live,
  )
  const optimizerStart = live.length
  const a = g.adamw
  const optimizerPeak = recordPass(fused, adamwOutputs(a), inputKinds(adamwInputs(a)), { inPlace: a.inPlace }, live)
  return {
    mode,
    live,
    optimizerStart,
    peak: live.reduce((m, b) => Math.max(m, b), 0),
    ledgerPeak: Math.max(gradientPeak, optimizerPeak),
    chunks: g.first.model.chunks,
  }
}
