/**
 * The memory planner is the executor in counting mode: it runs the very graphs of a training
 * step on a backend that allocates nothing, so its numbers are the schedule's exact live bytes.
 */
import type { BackendImpl } from "../backends/backend.js"
import { plan } from "../core/executor.js"
import type { MemoryReport } from "../core/memory.js"
import type { LlamaConfig } from "./config.js"
import type { ModelOptions } from "./llama.js"
import { adamwInputs, gradientInputs, stepGraphs } from "./step.js"

export interface StepPlan {
  /** The larger of the two passes: what the step needs. */
  readonly peak: number
  readonly gradientPass: MemoryReport
  readonly optimizerPass: MemoryReport
  readonly chunks: { readonly mlp: number; readonly lm: number }
}

/** Plans one training step (forward + backward, then AdamW) for a backend's fused routines. */
export function planStep(c: LlamaConfig, B: number, S: number, opts: ModelOptions, backend?: Pick<BackendImpl, "routines">): StepPlan {
  const g = stepGraphs(c, B, S, opts)
  const gradientPass = plan(g.first.outputs, gradientInputs(g.first, g.adamw), { gradients: g.first.gradients, ...(backend ? { for: backend } : {}) })
  const a = g.adamw
  const names = Object.keys(a.params)
  const outputs = [a.gradNorm, ...names.flatMap((n) => [a.newParams[n]!, a.newM[n]!, a.newV[n]!])]
  const optimizerPass = plan(outputs, adamwInputs(a), { inPlace: a.inPlace, ...(backend ? { for: backend } : {}) })
  return { peak: Math.max(gradientPass.peak, optimizerPass.peak), gradientPass, optimizerPass, chunks: g.first.model.chunks }
}
