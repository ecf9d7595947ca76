/**
 * Indices only the data shows: a gathered row and a cross-entropy target must address one of
 * `bound` slots. Checked on the host where the values are (the CPU kernels, the trainer's
 * batches), each failure a GraphError naming the value, its position and the range.
 */
import { GraphError } from "./errors.js"

/** The GraphError for idx[position] = value outside [0, bound). */
export function indexOutOfRange(op: string, value: number, position: number, bound: number, fix: string): GraphError {
  return new GraphError({
    index: { value, position, bound },
    message: `${op}: index ${value} at position ${position} is out of range [0, ${bound}); ${fix}`,
  })
}

/** Throws unless every index is in [0, bound). */
export function checkIndices(op: string, idx: ArrayLike<number>, bound: number, fix: string): void {
  for (let i = 0; i < idx.length; i++) {
    const v = idx[i]!
    if (!(v >= 0 && v < bound)) throw indexOutOfRange(op, v, i, bound, fix)
  }
}

/** Throws unless every target is in [0, vocab) or is the ignore index. */
export function checkTargets(op: string, targets: ArrayLike<number>, vocab: number, ignoreIndex: number): void {
  for (let i = 0; i < targets.length; i++) {
    const v = targets[i]!
    if (v !== ignoreIndex && !(v >= 0 && v < vocab))
      throw indexOutOfRange(
        op,
        v,
        i,
        vocab,
        `a target is a token id below the vocabulary size ${vocab}, or ${ignoreIndex} to ignore the position`,
      )
  }
}
