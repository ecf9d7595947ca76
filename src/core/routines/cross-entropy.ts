/**
 * Cross-entropy with ignored targets and per-token weights, and the global normalisation that
 * makes chunked losses exact: per-piece sums divided by one global count of non-ignored targets
 * (never a mean of per-piece means).
 */
import { accumulatorDType } from "../dtype.js"
import type { Tensor } from "../graph.js"
import * as o from "../ops.js"
import { routine } from "../regions.js"
import { logsumexp } from "./basic.js"
import { declareRoutine } from "./declare.js"

// How fused kernels see cross-entropy and its VJP (collected in ./registry.ts).
export const crossEntropyRoutine = declareRoutine<{ ignoreIndex: number }>()("crossEntropy", {
  inputs: ["logits", "targets"],
  outputs: ["nll"],
})
export const crossEntropyVjpRoutine = declareRoutine<{ ignoreIndex: number }>()("crossEntropy.vjp", {
  inputs: ["logits", "targets", "nll", "dNll"],
  outputs: ["dLogits"],
})

export const IGNORE_INDEX = -100

export interface CrossEntropyOptions {
  /** Targets equal to this contribute nothing (default −100, as in PyTorch). */
  readonly ignoreIndex?: number
  /** Per-token weights, shaped like the targets. */
  readonly weights?: Tensor
}

/** 1 for targets that count, 0 for ignored ones, in `dtype`. */
export const targetMask = (targets: Tensor, ignoreIndex = IGNORE_INDEX, dtype: Tensor["dtype"] = "float32"): Tensor =>
  o.cast(o.sub(1, o.equal(targets, ignoreIndex)), dtype)

/** An in-range index where the target is ignored (its loss is masked to 0 anyway). */
const safeTargets = (targets: Tensor, ignoreIndex: number): Tensor => o.where(o.equal(targets, ignoreIndex), 0, targets)

/**
 * The routine "crossEntropy": logits [N, V], targets int32 [N] → per-token −log softmax[target],
 * 0 where ignored. Its backward rule, (softmax − onehot(target))·g, needs only the logits, so
 * a fused kernel holds just the logits and their gradient (two N×V buffers).
 */
function tokenNll(ignoreIndex: number): (logits: Tensor, targets: Tensor) => Tensor {
  return routine(
    crossEntropyRoutine,
    (logits: Tensor, targets: Tensor) => {
      const lse = o.reshape(logsumexp(logits), targets.shape)
      return o.mul(
        o.sub(lse, o.takeAlong(logits, safeTargets(targets, ignoreIndex))),
        targetMask(targets, ignoreIndex, logits.dtype),
      )
    },
    ([logits, targets], _out, [g]) => {
      const coef = o.mul(g!, targetMask(targets!, ignoreIndex, logits!.dtype)) // [N]
      const p = o.exp(o.sub(logits!, logsumexp(logits!)))
      const [, V] = logits!.shape as [number, number]
      return [
        o.sub(o.mul(p, o.reshape(coef, [-1, 1])), o.putAlong(safeTargets(targets!, ignoreIndex), coef, V)),
        undefined,
      ]
    },
    { ignoreIndex },
  )
}

/** Per-token −log softmax(logits)[target], weighted; 0 at ignored targets. logits [..., V], targets int32 [...]. */
export function tokenCrossEntropy(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const V = logits.shape.at(-1)!
  const nll = o.reshape(
    tokenNll(opts.ignoreIndex ?? IGNORE_INDEX)(o.reshape(logits, [-1, V]), o.reshape(targets, [-1])),
    targets.shape,
  )
  return opts.weights === undefined ? nll : o.mul(nll, opts.weights)
}

/**
 * Σ of per-token losses over the whole batch: the piece-wise part of a chunked loss. The sum is
 * at least float32: a bfloat16 sum of thousands of losses would keep only its top 8 bits.
 */
export const sumCrossEntropy = (logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor =>
  o.sum(o.cast(tokenCrossEntropy(logits, targets, opts), accumulatorDType(logits.dtype)))

/** The global divisor: the number of non-ignored targets, at least 1 so an all-ignored batch gives loss 0. */
export const targetCount = (targets: Tensor, ignoreIndex = IGNORE_INDEX, dtype: Tensor["dtype"] = "float32"): Tensor =>
  o.maximum(o.sum(targetMask(targets, ignoreIndex, dtype)), 1)

/** Mean cross-entropy over non-ignored targets (0 when every target is ignored). */
export const crossEntropy = (logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor =>
  o.div(sumCrossEntropy(logits, targets, opts), targetCount(targets, opts.ignoreIndex, logits.dtype))
