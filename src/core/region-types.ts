import type { DType } from "./dtype.js"
import type { Tensor } from "./graph.js"
import type { Attrs } from "./routines/declare.js"

/** A closed sub-graph: `outputs` depend only on `params` (and on constants). */
export interface Body {
  readonly params: readonly Tensor[]
  readonly outputs: readonly Tensor[]
}

/** How a region's per-piece results become its outputs. */
export type Combine = "concat" | "sum"

/** A hand-written backward rule: input cotangents from inputs, outputs and output cotangents. */
export type CustomVjp = (
  inputs: readonly Tensor[],
  outputs: readonly Tensor[],
  cotangents: readonly (Tensor | undefined)[],
) => readonly (Tensor | undefined)[]

/**
 * One node that runs a closed body, once or once per piece of a split axis.
 * `checkpoint` is a region with no split inputs (one piece); `chunked(M)` splits some inputs
 * along an axis into pieces of `chunk` elements (the last may be shorter).
 */
export interface RegionAttrs {
  /** "checkpoint", "chunked", or a routine's name (backends may run a fused kernel for it). */
  readonly name: string
  /** Per input: the axis it is split along, or null when every piece sees all of it. */
  readonly inAxes: readonly (number | null)[]
  /** Per output: concatenate the pieces along `outAxes[i]`, or sum them. */
  readonly combine: readonly Combine[]
  readonly outAxes: readonly (number | null)[]
  /** Length of the split axis (0 when nothing is split) and the length of a full piece. */
  readonly length: number
  readonly chunk: number
  /** The body for a piece of `len` elements (traced once per distinct length, then cached). */
  readonly bodyFor: (len: number) => Body
  readonly vjp?: CustomVjp | undefined
  /**
   * What the hand-written rule reads besides the output cotangents (default: inputs and outputs).
   * "cotangents": nothing else (a linear map such as RoPE), so the backward keeps neither the
   * inputs nor the outputs alive for it. "outputs": the outputs only. "inputs": the inputs only
   * (an embedding lookup's rule needs the token ids, not the rows it gathered).
   */
  readonly vjpReads?: "cotangents" | "outputs" | "inputs" | undefined
  /** Per output: the dtype "sum" pieces accumulate in when wider than the output (fp32 for bf16). */
  readonly accumulate?: readonly DType[] | undefined
  /** Set when the region is a routine a backend may run as one fused kernel. */
  readonly routine?: RoutineSite | undefined
  /**
   * Set when the body is a function of this key and the input types alone (a lazy routine: its
   * name and attributes): a counting run walks one such body per key and types and replays its
   * ledger events for the others (./region-replay.ts).
   */
  readonly replayKey?: string | undefined
}

/** A routine region as its kernel sees it (the declaration is in routines/registry.ts). */
export interface RoutineSite {
  /** The name of each input and output, position by position. */
  readonly inputs: readonly string[]
  readonly outputs: readonly string[]
  /** What the kernel is told besides its buffers (e.g. attention's block size). */
  readonly attrs: Attrs
  /** The declaration's executor directive: outputs may be written over inputs. */
  readonly elementwise: boolean
}

/** [start, length] of each piece of an axis of `length` split into pieces of `chunk`. */
export function pieces(length: number, chunk: number): Array<[number, number]> {
  if (length === 0) return [[0, 0]]
  const out: Array<[number, number]> = []
  for (let s = 0; s < length; s += chunk) out.push([s, Math.min(chunk, length - s)])
  return out
}
