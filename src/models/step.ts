/**
 * One training step as graphs: the loss and its gradients (with or without an existing gradient
 * to add into, for gradient accumulation), and the AdamW update. Built once per shape and mode;
 * the trainer and the memory planner both run exactly these graphs.
 */
import { valueAndGrad } from "../core/autodiff.js"
import type { Tensor } from "../core/graph.js"
import { input } from "../core/graph.js"
import type { MemoryKind } from "../core/memory.js"
import * as o from "../core/ops.js"
import type { LlamaConfig } from "./config.js"
import { llamaLoss, type LlamaGraph, type ModelOptions, parameterShapes } from "./llama.js"
import { type AdamWGraph, adamwGraph, type AdamWOptions, defaultAdamW, type Precision, precisions } from "./optimizer.js"

export interface GradientGraph {
  readonly model: LlamaGraph
  readonly names: readonly string[]
  /** Existing gradients this pass adds into (in place); absent on the first micro-batch. */
  readonly previous?: Record<string, Tensor>
  /** Loss first, then one gradient per name. */
  readonly outputs: readonly Tensor[]
  readonly gradients: readonly Tensor[]
  readonly inPlace: ReadonlyMap<Tensor, Tensor>
}

export interface StepGraphs {
  readonly first: GradientGraph
  /** For micro-batches 2…A of gradient accumulation (built only when asked for). */
  readonly accumulate?: GradientGraph
  readonly adamw: AdamWGraph
}

function gradientGraph(c: LlamaConfig, B: number, S: number, opts: ModelOptions, accumulate: boolean): GradientGraph {
  const model = llamaLoss(c, B, S, opts)
  const names = Object.keys(model.params)
  const { value, grads } = valueAndGrad(model.loss, model.params)
  if (!accumulate) {
    const gradients = names.map((n) => grads[n]!)
    return { model, names, outputs: [value, ...gradients], gradients, inPlace: new Map() }
  }
  const previous = Object.fromEntries(names.map((n) => [n, input(`grad.${n}`, model.params[n]!.shape, model.params[n]!.dtype)]))
  const gradients = names.map((n) => o.add(previous[n]!, grads[n]!))
  const inPlace = new Map(gradients.map((g, i) => [g, previous[names[i]!]!] as const))
  return { model, names, previous, outputs: [value, ...gradients], gradients, inPlace }
}

export interface StepOptions extends ModelOptions {
  readonly accumulation?: number
  readonly precision?: Precision
}

/** The names of the routines a backend fuses: the graphs are built for them (`ModelOptions.fused`). */
export const fusedRoutines = (backend: { readonly routines?: Readonly<Record<string, unknown>> } | undefined): string[] =>
  Object.keys(backend?.routines ?? {})

export function stepGraphs(c: LlamaConfig, B: number, S: number, opts: StepOptions, adamw: AdamWOptions = defaultAdamW): StepGraphs {
  const precision = opts.precision ?? precisions.fp32
  const modelOpts = { ...opts, dtype: precision.param }
  const first = gradientGraph(c, B, S, modelOpts, false)
  const gradDTypes = Object.fromEntries(first.names.map((n, i) => [n, first.gradients[i]!.dtype]))
  return {
    first,
    ...((opts.accumulation ?? 1) > 1 ? { accumulate: gradientGraph(c, B, S, modelOpts, true) } : {}),
    adamw: adamwGraph(parameterShapes(c), adamw, precision, gradDTypes, opts.fused?.includes("adamw") ?? false),
  }
}

/** What each bound input of the gradient pass counts as, plus the optimizer state resident beside it. */
export function gradientInputs(g: GradientGraph, adamw: AdamWGraph): Map<Tensor, MemoryKind> {
  const m = g.model
  const kinds = new Map<Tensor, MemoryKind>([[m.tokens, "activations"], [m.targets, "activations"], [m.count, "activations"]])
  for (const n of g.names) {
    kinds.set(m.params[n]!, "weights")
    if (g.previous) kinds.set(g.previous[n]!, "gradients")
    kinds.set(adamw.m[n]!, "optimizer").set(adamw.v[n]!, "optimizer")
    if (adamw.master[n]) kinds.set(adamw.master[n], "optimizer")
  }
  return kinds
}

export function adamwInputs(a: AdamWGraph): Map<Tensor, MemoryKind> {
  const kinds = new Map<Tensor, MemoryKind>([[a.lr, "temporaries"], [a.correction1, "temporaries"], [a.correction2, "temporaries"]])
  for (const n of Object.keys(a.params)) {
    kinds.set(a.params[n]!, "weights").set(a.grads[n]!, "gradients").set(a.m[n]!, "optimizer").set(a.v[n]!, "optimizer")
    if (a.master[n]) kinds.set(a.master[n], "optimizer")
  }
  return kinds
}
