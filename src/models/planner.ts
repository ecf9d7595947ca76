/**
 * The memory planner is the executor in counting mode: it runs the very graphs of a training
 * step on a backend that allocates nothing, so its numbers are the schedule's exact live bytes.
 */
import type { BackendImpl } from "../core/backend.js"
import { plan } from "../core/executor.js"
import type { MemoryReport } from "../core/memory.js"
import type { LlamaConfig } from "./config.js"
import { adamwOutputs } from "./optimizer.js"
import { adamwInputs, fusedRoutines, gradientInputs, inputKinds, type StepOptions, stepGraphs } from "./step.js"

/** The planned memory of one training step: its peak, and each pass's report by kind. */
export interface StepPlan {
  /** The larger of the two passes: what the step needs. */
  readonly peak: number
  readonly gradientPass: MemoryReport
  readonly optimizerPass: MemoryReport
  readonly chunks: { readonly mlp: number; readonly lm: number }
}

/** Plans one training step (forward + backward, then AdamW) for a backend's fused routines. */
export function planStep(
  c: LlamaConfig,
  B: number,
  S: number,
  opts: StepOptions,
  backend?: Pick<BackendImpl, "routines">,
): StepPlan {
  const g = stepGraphs(c, B, S, { fused: fusedRoutines(backend), ...opts })
  const target = backend ? { for: backend } : {}
  const gradientInputKinds = inputKinds(gradientInputs(g.first, g.adamw))
  const gradientPass = plan(g.first.outputs, gradientInputKinds, { gradients: g.first.gradients, ...target })
  const a = g.adamw
  const optimizerPass = plan(adamwOutputs(a), inputKinds(adamwInputs(a)), { inPlace: a.inPlace, ...target })
  return {
    peak: Math.max(gradientPass.peak, optimizerPass.peak),
    gradientPass,
    optimizerPass,
    chunks: g.first.model.chunks,
  }
}

/**
 * The fewest mini-sequences (powers of two for the MLP and the LM head, in MST modes) whose
 * step fits `limit` bytes — the hint an OutOfMemory carries. Undefined when none fits.
 */
export function suggestChunks(
  c: LlamaConfig,
  B: number,
  S: number,
  opts: StepOptions,
  limit: number,
  backend?: Pick<BackendImpl, "routines">,
): { mode: StepOptions["mode"]; mlp: number; lm: number; peak: number } | undefined {
  const counts = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512].filter((m) => m <= S)
  const modes: StepOptions["mode"][] =
    opts.mode === "mst" || opts.mode === "mst+checkpoint" ? [opts.mode, "mst+checkpoint"] : ["mst", "mst+checkpoint"]
  for (const mode of [...new Set(modes)]) {
    for (const lm of counts) {
      for (const mlp of counts.filter((m) => m <= lm)) {
        const peak = planStep(c, B, S, { ...opts, mode, mlpChunks: mlp, lmChunks: lm }, backend).peak
        if (peak <= limit) return { mode, mlp, lm, peak }
      }
    }
  }
  return undefined
}
