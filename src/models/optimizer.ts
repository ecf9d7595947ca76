/**
 * AdamW with global-norm gradient clipping, as a graph that runs on the backend like any other:
 * parameters, gradients and moment estimates go in; the updated ones come out, written in place
 * over their inputs. The learning rate and bias corrections are scalar inputs, so the graph is
 * built once and fed each step. The arithmetic is fp32 whatever the storage dtypes.
 *
 * Per parameter the update is a dozen elementwise ops, each a pass over memory. A backend with a
 * fused "adamw" kernel runs the whole update as one pass instead (`fused`: the same ops become
 * the routine's reference body), writing weights, moments and master weights in place; with
 * `fused` each gradient's Σ g² for the norm is the routine "sumOfSquares" too (one read of the
 * gradient where the backend has the kernel, its reference body elsewhere).
 */
import type { DType } from "../core/dtype.js"
import type { Tensor } from "../core/graph.js"
import { input } from "../core/graph.js"
import * as o from "../core/ops.js"
import { adamw, adamwUpdate, plainSumOfSquares, sumOfSquares } from "../core/routines/adamw.js"

/** AdamW's hyper-parameters (the learning rate comes from the schedule). */
export interface AdamWOptions {
  readonly beta1: number
  readonly beta2: number
  readonly eps: number
  /** Decoupled weight decay, applied to matrices only (not to norm weights). */
  readonly weightDecay: number
  /** Clip the global gradient norm to this (Infinity: no clipping). */
  readonly maxGradNorm: number
}

/** β1 0.9, β2 0.95, ε 1e-8, weight decay 0.1, global-norm clipping at 1. */
export const defaultAdamW: AdamWOptions = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 1 }

/** How weights and optimizer state are stored. */
export interface Precision {
  readonly name: string
  /** The weights the model computes with. */
  readonly param: DType
  /** The AdamW moments. */
  readonly state: DType
  /** An fp32 master copy of the weights, updated by AdamW (mixed precision). */
  readonly master: boolean
}

/** The precisions a run can train in, by name: which dtype weights, master weights, moments and activations use. */
export const precisions = {
  fp32: { name: "fp32", param: "float32", state: "float32", master: false },
  /** bf16 weights and activations, fp32 master weights and moments. */
  "bf16-mixed": { name: "bf16-mixed", param: "bfloat16", state: "float32", master: true },
  /** Everything bf16 (weights, moments), no master copy. */
  bf16: { name: "bf16", param: "bfloat16", state: "bfloat16", master: false },
} as const satisfies Record<string, Precision>
/** "fp32", "bf16-mixed" or "bf16". */
export type PrecisionName = keyof typeof precisions

/** The AdamW update as a graph: its inputs (parameters, gradients, moments, scalars) and outputs. */
export interface AdamWGraph {
  readonly params: Record<string, Tensor>
  /** fp32 master weights (mixed precision only). */
  readonly master: Record<string, Tensor>
  readonly grads: Record<string, Tensor>
  /**
   * With `squaresGiven`: each gradient's Σ g² (fp32 scalars), made by the gradient pass as each
   * gradient is complete, so the norm need not read the gradients again; else empty.
   */
  readonly squares: Record<string, Tensor>
  readonly m: Record<string, Tensor>
  readonly v: Record<string, Tensor>
  /** Scalars fed each step: learning rate and the bias corrections 1 − β₁ᵗ, 1 − β₂ᵗ. */
  readonly lr: Tensor
  readonly correction1: Tensor
  readonly correction2: Tensor
  readonly newParams: Record<string, Tensor>
  readonly newMaster: Record<string, Tensor>
  readonly newM: Record<string, Tensor>
  readonly newV: Record<string, Tensor>
  /** The gradient norm before clipping. */
  readonly gradNorm: Tensor
  /** Every output → the input whose buffer it overwrites. */
  readonly inPlace: ReadonlyMap<Tensor, Tensor>
}

/** Σ g² of one gradient, the norm's share of it: one fused pass with the fused adamw (rank ≤ 2). */
export const gradientSquares = (g: Tensor, fused: boolean): Tensor =>
  fused && g.rank <= 2 ? sumOfSquares(g) : plainSumOfSquares(g)

/**
 * Builds the AdamW update for parameters of these shapes, with global-norm clipping. With
 * `squaresGiven` the norm comes from each gradient's Σ g² given as an input (`squares`) instead
 * of a pass over the gradients here.
 */
export function adamwGraph(
  shapes: Readonly<Record<string, readonly number[]>>,
  opts: AdamWOptions = defaultAdamW,
  precision: Precision = precisions.fp32,
  gradDTypes: Readonly<Record<string, DType>> = {},
  fused = false,
  squaresGiven = false,
): AdamWGraph {
  const names = Object.keys(shapes)
  const leaves = (prefix: string, dtype: (n: string) => DType) =>
    Object.fromEntries(names.map((n) => [n, input(`${prefix}${n}`, shapes[n]!, dtype(n))]))
  const params = leaves("", () => precision.param)
  const master = precision.master ? leaves("master.", () => "float32") : {}
  const grads = leaves("grad.", (n) => gradDTypes[n] ?? precision.param)
  const m = leaves("adam.m.", () => precision.state),
    v = leaves("adam.v.", () => precision.state)
  const lr = input("lr", [], "float32"),
    correction1 = input("correction1", [], "float32"),
    correction2 = input("correction2", [], "float32")

  // Σ g² per parameter (given, or a pass over each gradient), then the sum of those in name order.
  const squares = squaresGiven
    ? Object.fromEntries(names.map((n) => [n, input(`grad.squares.${n}`, [], "float32")]))
    : {}
  const squareOf = (n: string) => squares[n] ?? gradientSquares(grads[n]!, fused)
  const gradNorm = o.sqrt(names.map(squareOf).reduce((a, b) => o.add(a, b)))
  const clip = Number.isFinite(opts.maxGradNorm)
    ? o.div(opts.maxGradNorm, o.maximum(gradNorm, opts.maxGradNorm))
    : o.full([], 1, "float32")

  const newParams: Record<string, Tensor> = {},
    newMaster: Record<string, Tensor> = {},
    newM: Record<string, Tensor> = {},
    newV: Record<string, Tensor> = {}
  const inPlace = new Map<Tensor, Tensor>()
  for (const n of names) {
    const decay = shapes[n]!.length >= 2 ? opts.weightDecay : 0 // matrices only
    const attrs = { beta1: opts.beta1, beta2: opts.beta2, eps: opts.eps, weightDecay: decay }
    const run = fused ? adamw(attrs, precision) : adamwUpdate(attrs, precision)
    const args = [
      params[n]!,
      grads[n]!,
      m[n]!,
      v[n]!,
      lr,
      correction1,
      correction2,
      clip,
      ...(precision.master ? [master[n]!] : []),
    ]
    const [p, mm, vv, w32] = run(...args) as Tensor[]
    ;(newParams[n] = p!), (newM[n] = mm!), (newV[n] = vv!)
    inPlace.set(p!, params[n]!).set(mm!, m[n]!).set(vv!, v[n]!)
    if (w32 !== undefined) inPlace.set((newMaster[n] = w32), master[n]!)
  }
  return {
    params,
    master,
    grads,
    squares,
    m,
    v,
    lr,
    correction1,
    correction2,
    newParams,
    newMaster,
    newM,
    newV,
    gradNorm,
    inPlace,
  }
}

/** Every output of the AdamW graph: the norm, then per parameter its new weights, moments (and master). */
export const adamwOutputs = (a: AdamWGraph): Tensor[] => [
  a.gradNorm,
  ...Object.keys(a.params).flatMap((n) => [
    a.newParams[n]!,
    a.newM[n]!,
    a.newV[n]!,
    ...(a.newMaster[n] ? [a.newMaster[n]] : []),
  ]),
]

/** Linear warmup to `lr`, then cosine decay to `minLr` at `steps`. */
export interface Schedule {
  readonly lr: number
  readonly minLr: number
  readonly warmup: number
  readonly steps: number
}

/** Linear warmup to `lr`, then cosine decay to `minLr` at `steps` (step counts from 1). */
export function learningRate(s: Schedule, step: number): number {
  if (step <= s.warmup) return (s.lr * step) / Math.max(1, s.warmup)
  const progress = Math.min(1, (step - s.warmup) / Math.max(1, s.steps - s.warmup))
  return s.minLr + 0.5 * (s.lr - s.minLr) * (1 + Math.cos(Math.PI * progress))
}
