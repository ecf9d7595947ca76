/**
 * One parameter's AdamW step as a routine (src/models/optimizer.ts builds the whole optimizer
 * from it). The arithmetic is fp32 whatever the storage dtypes; results are cast back to them.
 */
import type { DType } from "../dtype.js"
import type { Tensor } from "../graph.js"
import * as o from "../ops.js"
import { routine } from "../regions.js"
import { declareRoutine } from "./declare.js"

export type AdamWAttrs = {
  readonly beta1: number
  readonly beta2: number
  readonly eps: number
  /** This parameter's decoupled weight decay. */
  readonly weightDecay: number
}

// How a fused kernel sees the step (collected in ./registry.ts): elementwise, so the executor
// hands it the weights, moments and master weights as outputs to write over in place.
export const adamwRoutine = declareRoutine<AdamWAttrs>()("adamw", {
  inputs: ["w", "g", "m", "v", "lr", "correction1", "correction2", "clip", "master?"],
  outputs: ["w", "m", "v", "master?"],
  elementwise: true,
})

const f32 = (t: Tensor): Tensor => o.cast(t, "float32")

/**
 * The update. In: weights (bf16 or fp32), the gradient, the moments, the scalars lr, 1 − β₁ᵗ,
 * 1 − β₂ᵗ and the clipping factor, and the fp32 master weights when mixed precision.
 * Out: new weights and moments in their storage dtypes `store` (and fp32 master weights).
 */
export function adamwUpdate(a: AdamWAttrs, store: { readonly param: DType; readonly state: DType }) {
  return (
    param: Tensor,
    grad: Tensor,
    m: Tensor,
    v: Tensor,
    lr: Tensor,
    correction1: Tensor,
    correction2: Tensor,
    clip: Tensor,
    master?: Tensor,
  ): Tensor[] => {
    const g = o.mul(f32(grad), clip)
    const m32 = o.add(o.mul(f32(m), a.beta1), o.mul(g, 1 - a.beta1))
    const v32 = o.add(o.mul(f32(v), a.beta2), o.mul(o.square(g), 1 - a.beta2))
    const step = o.div(o.div(m32, correction1), o.add(o.sqrt(o.div(v32, correction2)), a.eps))
    const w = master ?? f32(param)
    const w32 = o.sub(w, o.mul(a.weightDecay > 0 ? o.add(step, o.mul(w, a.weightDecay)) : step, lr))
    const stored = [o.cast(w32, store.param), o.cast(m32, store.state), o.cast(v32, store.state)]
    return master ? [...stored, w32] : stored
  }
}

/** AdamW's update has no gradient: training never differentiates through the optimizer. */
const noGradient = (inputs: readonly Tensor[]) => inputs.map(() => undefined)

/** The update as the routine "adamw": one fused kernel where the backend has it. */
export const adamw = (a: AdamWAttrs, store: Parameters<typeof adamwUpdate>[1]) =>
  routine(adamwRoutine, adamwUpdate(a, store), noGradient, a)

// The gradient norm's part for one parameter: Σ x², each square rounded to float32, summed.
export const sumOfSquaresRoutine = declareRoutine()("sumOfSquares", { inputs: ["x"], outputs: ["y"] })

/** Σ x² in float32 as plain ops: the routine's reference body. */
export const plainSumOfSquares = (x: Tensor): Tensor => o.sum(o.square(f32(x)))

/** Σ x² in float32, as the routine "sumOfSquares": one pass over x where the backend has it. */
export const sumOfSquares = (x: Tensor): Tensor => routine(sumOfSquaresRoutine, plainSumOfSquares, noGradient)(x)
