/**
 * Cross-entropy with ignored targets and per-token weights, and the global normalisation that
 * makes chunked losses exact: per-piece sums divided by one global count of non-ignored targets
 * (never a mean of per-piece means).
 */
import type { Tensor } from "../graph.js"
import * as o from "../ops.js"
import { logsumexp } from "./basic.js"

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

/** Per-token −log softmax(logits)[target], weighted; 0 at ignored targets. logits [..., V], targets int32 [...]. */
export function tokenCrossEntropy(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const ignore = opts.ignoreIndex ?? IGNORE_INDEX
  const mask = targetMask(targets, ignore, logits.dtype)
  const safe = o.where(o.equal(targets, ignore), 0, targets) // an in-range index for ignored slots
  const lse = o.reshape(logsumexp(logits), targets.shape)
  const nll = o.mul(o.sub(lse, o.takeAlong(logits, safe)), mask)
  return opts.weights === undefined ? nll : o.mul(nll, opts.weights)
}

/** Σ of per-token losses over the whole batch: the piece-wise part of a chunked loss. */
export const sumCrossEntropy = (logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor =>
  o.sum(tokenCrossEntropy(logits, targets, opts))

/** The global divisor: the number of non-ignored targets, at least 1 so an all-ignored batch gives loss 0. */
export const targetCount = (targets: Tensor, ignoreIndex = IGNORE_INDEX, dtype: Tensor["dtype"] = "float32"): Tensor =>
  o.maximum(o.sum(targetMask(targets, ignoreIndex, dtype)), 1)

/** Mean cross-entropy over non-ignored targets (0 when every target is ignored). */
export const crossEntropy = (logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor =>
  o.div(sumCrossEntropy(logits, targets, opts), targetCount(targets, opts.ignoreIndex, logits.dtype))
