/**
 * AdamW with global-norm gradient clipping, as a graph that runs on the backend like any other:
 * parameters, gradients and the fp32 moment estimates go in; the updated ones come out, written
 * in place over their inputs. The learning rate and bias corrections are scalar inputs, so the
 * graph is built once and fed each step.
 */
import type { Tensor } from "../core/graph.js"
import { input } from "../core/graph.js"
import * as o from "../core/ops.js"

export interface AdamWOptions {
  readonly beta1: number
  readonly beta2: number
  readonly eps: number
  /** Decoupled weight decay, applied to matrices only (not to norm weights). */
  readonly weightDecay: number
  /** Clip the global gradient norm to this (Infinity: no clipping). */
  readonly maxGradNorm: number
}

export const defaultAdamW: AdamWOptions = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 1 }

export interface AdamWGraph {
  readonly params: Record<string, Tensor>
  readonly grads: Record<string, Tensor>
  readonly m: Record<string, Tensor>
  readonly v: Record<string, Tensor>
  /** Scalars fed each step: learning rate and the bias corrections 1 − β₁ᵗ, 1 − β₂ᵗ. */
  readonly lr: Tensor
  readonly correction1: Tensor
  readonly correction2: Tensor
  readonly newParams: Record<string, Tensor>
  readonly newM: Record<string, Tensor>
  readonly newV: Record<string, Tensor>
  /** The gradient norm before clipping. */
  readonly gradNorm: Tensor
  /** Every output → the input whose buffer it overwrites. */
  readonly inPlace: ReadonlyMap<Tensor, Tensor>
}

export function adamwGraph(shapes: Readonly<Record<string, readonly number[]>>, opts: AdamWOptions = defaultAdamW): AdamWGraph {
  const names = Object.keys(shapes)
  const leaves = (prefix: string) => Object.fromEntries(names.map((n) => [n, input(`${prefix}${n}`, shapes[n]!, "float32")]))
  const params = leaves(""), grads = leaves("grad."), m = leaves("adam.m."), v = leaves("adam.v.")
  const lr = input("lr", [], "float32"), correction1 = input("correction1", [], "float32"), correction2 = input("correction2", [], "float32")

  const gradNorm = o.sqrt(names.map((n) => o.sum(o.square(grads[n]!))).reduce((a, b) => o.add(a, b)))
  const clip = Number.isFinite(opts.maxGradNorm) ? o.div(opts.maxGradNorm, o.maximum(gradNorm, opts.maxGradNorm)) : undefined

  const newParams: Record<string, Tensor> = {}, newM: Record<string, Tensor> = {}, newV: Record<string, Tensor> = {}
  const inPlace = new Map<Tensor, Tensor>()
  for (const n of names) {
    const g = clip === undefined ? grads[n]! : o.mul(grads[n]!, clip)
    newM[n] = o.add(o.mul(m[n]!, opts.beta1), o.mul(g, 1 - opts.beta1))
    newV[n] = o.add(o.mul(v[n]!, opts.beta2), o.mul(o.square(g), 1 - opts.beta2))
    const step = o.div(o.div(newM[n], correction1), o.add(o.sqrt(o.div(newV[n], correction2)), opts.eps))
    const decay = shapes[n]!.length >= 2 && opts.weightDecay > 0 ? o.add(step, o.mul(params[n]!, opts.weightDecay)) : step
    newParams[n] = o.sub(params[n]!, o.mul(decay, lr))
    inPlace.set(newParams[n], params[n]!).set(newM[n], m[n]!).set(newV[n], v[n]!)
  }
  return { params, grads, m, v, lr, correction1, correction2, newParams, newM, newV, gradNorm, inPlace }
}

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
