/**
 * Every way miniseq refuses input is one of these typed errors. Each message names the
 * problem and the fix; the fields carry the same facts for programs.
 */
import { Data } from "effect"

/** Shapes that do not fit an op. */
export class ShapeError extends Data.TaggedError("ShapeError")<{
  readonly op: string
  readonly shapes: ReadonlyArray<ReadonlyArray<number>>
  readonly message: string
}> {}

/** An op given a dtype it does not accept, or mismatched dtypes. */
export class DTypeError extends Data.TaggedError("DTypeError")<{
  readonly op: string
  readonly dtypes: ReadonlyArray<string>
  readonly message: string
}> {}

/** An allocation that would exceed the memory limit. */
export class OutOfMemory extends Data.TaggedError("OutOfMemory")<{
  readonly requested: number
  readonly alive: number
  readonly limit: number
  /** The smallest number of mini-sequences that would fit, when the caller could work it out. */
  readonly suggestedM?: number
  /** "host": the host tier (offloaded bytes) ran out, not the device. */
  readonly tier?: "host"
  readonly message: string
}> {}

/** A backend that cannot run here (no adapter, no GPU, no native build). */
export class BackendUnavailable extends Data.TaggedError("BackendUnavailable")<{
  readonly backend: string
  readonly reason: string
  readonly message: string
}> {}

/** Training diverged: a non-finite loss, or (with `tensor`) a weight or moment the update made non-finite. */
export class NonFiniteLoss extends Data.TaggedError("NonFiniteLoss")<{
  readonly step: number
  readonly loss: number
  /** The weight ("<name>") or AdamW moment ("m.<name>", "v.<name>") found non-finite before a save. */
  readonly tensor?: string
  readonly message: string
}> {}

export class BadCheckpoint extends Data.TaggedError("BadCheckpoint")<{
  readonly path: string
  readonly tensor?: string
  readonly message: string
}> {}

export class BadConfig extends Data.TaggedError("BadConfig")<{
  readonly field: string
  readonly message: string
}> {}

/** A file miniseq must write (run.json, a chart, steps.jsonl, the run folder's lock) could not be written. */
export class WriteError extends Data.TaggedError("WriteError")<{
  readonly path: string
  /** The system's error code (ENOSPC, EACCES, EISDIR, …), when there is one. */
  readonly code?: string
  readonly message: string
}> {}

/**
 * A graph misused: a value missing or of the wrong kind at run time, a region given a wrong
 * argument or body, an index (a gathered row, a cross-entropy target) outside its range.
 */
export class GraphError extends Data.TaggedError("GraphError")<{
  /** For an index out of range: the value, where it was, and the range [0, bound) it must be in. */
  readonly index?: { readonly value: number; readonly position: number; readonly bound: number }
  readonly message: string
}> {}

/**
 * Ranks of an SPMD program that do not agree: a rank that ran a different node or none, a
 * collective round whose calls differ in op, shape or dtype, a graph built for another number
 * of ranks, or a collective on a backend that has no ranks.
 */
export class CollectiveError extends Data.TaggedError("CollectiveError")<{
  /** The ranks involved (the one that diverged first), when known. */
  readonly ranks?: ReadonlyArray<number>
  /** The lockstep step (node) or collective round where it happened, when known. */
  readonly step?: number
  readonly message: string
}> {}

export const fmtShape = (s: ReadonlyArray<number>): string => `[${s.join(", ")}]`
