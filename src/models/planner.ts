/**
 * The memory planner is the executor in counting mode: it runs the very graphs of a training
 * step on a backend that allocates nothing, so its numbers are the schedule's exact live bytes.
 */
import type { BackendImpl } from "../core/backend.js"
import { bytesPerElement } from "../core/dtype.js"
import { plan } from "../core/executor.js"
import type { MemoryReport } from "../core/memory.js"
import type { LlamaConfig } from "./config.js"
import type { Tensor } from "../core/graph.js"
import { type AdamWGraph, adamwOutputs } from "./optimizer.js"
import {
  adamwInputs,
  fusedRoutines,
  gradientInputs,
  hostInputs,
  inMode,
  inputKinds,
  type Offload,
  passOffload,
  type StepOptions,
  stepGraphs,
} from "./step.js"

/** What the plan depends on of a backend: its fused routines, its allocator's rounding, its kernels' scratch, its host tier. */
export type PlanTarget = Pick<
  BackendImpl,
  "routines" | "heldBytes" | "kernelScratchBytes" | "hostAlloc" | "hostOptimizer"
>

/** The planned memory of one training step: its peak, and each pass's report by kind. */
export interface StepPlan {
  /** The larger of the two passes: what the step needs (live bytes). */
  readonly peak: number
  /** The same with every buffer at its allocator size class: what the device must hold (≥ peak). */
  readonly held: number
  /** The larger of the two passes' host-tier peaks: what is offloaded (0 without `offload`). */
  readonly host: number
  /**
   * Bytes crossing the bus per step for offloading: the copies to the host and back, plus AdamW
   * reading and writing its offloaded inputs in place (each counted twice: state read and
   * written, gradients read by the norm and by the update). 0 without `offload`.
   */
  readonly bus: number
  readonly gradientPass: MemoryReport
  readonly optimizerPass: MemoryReport
  readonly chunks: { readonly mlp: number; readonly lm: number }
}

/** Plans one training step (forward + backward, then AdamW) for a backend's fused routines. */
export function planStep(c: LlamaConfig, B: number, S: number, opts: StepOptions, backend?: PlanTarget): StepPlan {
  const g = stepGraphs(c, B, S, { fused: fusedRoutines(backend), ...opts })
  const target = backend ? { for: backend } : {}
  const gradients = gradientInputs(g.first, g.adamw)
  const gradientPass = plan(g.first.outputs, inputKinds(gradients), {
    gradients: g.first.gradients,
    offload: passOffload(opts.offload),
    hostInputs: hostInputs(gradients, opts.offload),
    ...target,
  })
  const a = g.adamw
  const adamw = adamwInputs(a)
  const offloadedState = hostInputs(adamw, opts.offload)
  const updateOnHost = backend?.hostOptimizer === true && backend.routines?.adamw !== undefined
  const optimizerPass = plan(adamwOutputs(a), inputKinds(adamw), {
    inPlace: a.inPlace,
    hostInputs: offloadedState,
    ...target,
  })
  return {
    bus: gradientPass.host.moved + optimizerPass.host.moved + updateTraffic(a, offloadedState, updateOnHost),
    peak: Math.max(gradientPass.peak, optimizerPass.peak),
    held: Math.max(gradientPass.heldPeak, optimizerPass.heldPeak),
    host: Math.max(gradientPass.host.peak, optimizerPass.host.peak),
    gradientPass,
    optimizerPass,
    chunks: g.first.model.chunks,
  }
}

/**
 * The bytes AdamW moves over the bus with its state in the host tier. The norm reads no gradient:
 * the gradient pass took each one's Σ g² on the device, before it left. On the device AdamW reads
 * and writes its moments (and master weights) in place, each byte twice, and reads each gradient
 * once. On the host (`BackendImpl.hostOptimizer`, with a fused adamw) only the new weights cross
 * it, once (twice without master weights: the old ones go first). (With gradient accumulation the
 * later micro-batches' in-place sums over the bus are not counted here.)
 */
function updateTraffic(a: AdamWGraph, offloaded: ReadonlySet<Tensor>, onHost: boolean): number {
  const bytes = (ts: Iterable<Tensor>) => [...ts].reduce((n, t) => n + t.size * bytesPerElement[t.dtype], 0)
  const grads = new Set(Object.values(a.grads).filter((t) => offloaded.has(t)))
  const state = [...offloaded].filter((t) => !grads.has(t))
  if (!onHost || grads.size === 0) return 2 * bytes(state) + bytes(grads)
  const weights = Object.values(a.params)
  return (Object.keys(a.master).length > 0 ? 1 : 2) * bytes(weights)
}

/** What an automatic choice of offload considers, least offloaded first (the first that serves wins). */
export const offloadChoices: readonly Offload[] = [
  {},
  { checkpoints: true },
  { optimizer: true },
  { checkpoints: true, optimizer: true },
]

/**
 * The least offload (of `offloadChoices`) whose step fits `limit` device bytes and `hostLimit`
 * host bytes, with its plan; undefined when none does (or the backend has no host tier and the
 * step does not fit as it is).
 */
export function leastOffloadThatFits(
  c: LlamaConfig,
  B: number,
  S: number,
  opts: StepOptions,
  limit: number,
  hostLimit: number,
  backend?: PlanTarget,
): { offload: Offload; plan: StepPlan } | undefined {
  const choices = backend?.hostAlloc ? offloadChoices : [{}]
  for (const offload of choices) {
    const plan = planStep(c, B, S, { ...opts, offload }, backend)
    if (plan.held <= limit && plan.host <= hostLimit) return { offload, plan }
  }
  return undefined
}

/**
 * `planOf(offload)`, or, when its offloaded checkpoints would pass `hostMemory`, the plan with as
 * many bytes of them offloaded as fit there (the longest-waiting first), the rest on the device.
 * Offloaded bytes add to the host's peak about one for one: aim there, then correct the aim.
 * Where offloading part of them does not lower the device's peak, none are.
 */
export function fitHost(
  planOf: (o: Offload) => StepPlan,
  offload: Offload,
  hostMemory: number,
): { plan: StepPlan; offload: Offload } {
  const plan = planOf(offload)
  if (plan.host <= hostMemory || !offload.checkpoints) return { plan, offload }
  const { checkpointBytes: _, ...all } = offload
  const without: Offload = { ...all, checkpoints: false }
  const rest = planOf(without)
  let best = { plan: rest, offload: without }
  if (rest.host > hostMemory) return best
  let budget = hostMemory - rest.host
  for (let i = 0; i < 6 && budget > 0; i++) {
    const o = { ...all, checkpointBytes: budget }
    const p = planOf(o)
    if (p.host <= hostMemory) {
      if (p.held < best.plan.held) best = { plan: p, offload: o }
      break
    }
    budget -= p.host - hostMemory
  }
  return best
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
  backend?: PlanTarget,
): { mode: StepOptions["mode"]; mlp: number; lm: number; peak: number } | undefined {
  const counts = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512].filter((m) => m <= S)
  const modes: StepOptions["mode"][] =
    opts.mode === "mst" || opts.mode === "mst+checkpoint" ? [opts.mode, "mst+checkpoint"] : ["mst", "mst+checkpoint"]
  // The most frugal choice first: when even it does not fit, nothing does (and a large model answers at once).
  const most = counts.at(-1)!
  const frugal = { ...opts, mode: "mst+checkpoint" as const, mlpChunks: most, lmChunks: most }
  if (planStep(c, B, S, frugal, backend).held > limit) return undefined
  for (const mode of [...new Set(modes)]) {
    for (const lm of counts) {
      for (const mlp of counts.filter((m) => m <= lm)) {
        const peak = planStep(c, B, S, { ...inMode(opts, mode), mlpChunks: mlp, lmChunks: lm }, backend).held
        if (peak <= limit) return { mode, mlp, lm, peak }
      }
    }
  }
  return undefined
}

/**
 * The largest n (a multiple of `step`, at most `cap`) for which `fits(n)` holds, by doubling then
 * bisection; 0 when even `step` does not fit. `capped`: n = cap still fits (the search stopped
 * there, not the memory).
 */
export function largestFitting(
  fits: (n: number) => boolean,
  step: number,
  cap: number,
): { n: number; capped: boolean } {
  let lo = 0
  let hi = step
  while (hi <= cap && fits(hi)) {
    lo = hi
    if (hi === cap) return { n: cap, capped: true }
    hi = Math.min(hi * 2, cap)
  }
  while (hi - lo > step) {
    const mid = Math.floor((lo + hi) / 2 / step) * step
    if (fits(mid)) lo = mid
    else hi = mid
  }
  return { n: lo, capped: false }
}

/**
 * Why a step that needs more than `limit` bytes cannot run, and what would: the fewest
 * mini-sequences (and mode) that fit; else the longest sequence, or the largest batch, that fits
 * in mst+checkpoint; else that the weights, gradients and AdamW moments alone are too large.
 */
export function memoryAdvice(
  c: LlamaConfig,
  B: number,
  S: number,
  opts: StepOptions,
  limit: number,
  backend?: PlanTarget,
): { readonly fit?: { mode: StepOptions["mode"]; mlp: number; lm: number; peak: number }; readonly hint: string } {
  const fit = suggestChunks(c, B, S, opts, limit, backend)
  if (fit !== undefined)
    return {
      fit,
      hint: `the planner finds --mode ${fit.mode} --mlp-chunks ${fit.mlp} --lm-chunks ${fit.lm} fits (${fit.peak} bytes)`,
    }
  const frugal = { ...opts, mode: "mst+checkpoint" as const, mlpChunks: "auto" as const, lmChunks: "auto" as const }
  // Offloading, where the backend has a host tier and the run does not offload everything yet.
  const everything = { checkpoints: true, optimizer: true }
  const offloadsAll = opts.offload?.checkpoints && opts.offload.optimizer && opts.offload.checkpointBytes === undefined
  if (backend?.hostAlloc && !offloadsAll) {
    const p = planStep(c, B, S, { ...frugal, offload: everything }, backend)
    if (p.held <= limit)
      return {
        hint: `with --mode mst+checkpoint --offload checkpoints,optimizer it fits: ${p.held} bytes on the device, ${p.host} in host memory`,
      }
  }
  const peakAt = (b: number, s: number) => planStep(c, b, s, { ...frugal, allowBeyondMaxPosition: true }, backend).held
  const seq = S > 1 ? largestFitting((s) => peakAt(B, s) <= limit, 1, S - 1).n : 0
  const batch = B > 1 ? largestFitting((b) => peakAt(b, S) <= limit, 1, B - 1).n : 0
  const smaller = [...(batch > 0 ? [`--batch ${batch}`] : []), ...(seq > 0 ? [`--seq ${seq}`] : [])]
  if (smaller.length > 0)
    return {
      hint: `no mode or M fits at batch ${B} × ${S} tokens; with --mode mst+checkpoint, ${smaller.join(" or ")} fits`,
    }
  const p = planStep(c, 1, 1, frugal, backend).gradientPass.atPeak
  const state = p.weights + p.gradients + p.optimizer
  return {
    hint: `no mode, M, batch or sequence length fits: the weights, gradients and AdamW moments alone need ${(state / 2 ** 30).toFixed(1)} GiB; choose a smaller model`,
  }
}
