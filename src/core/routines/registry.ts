/**
 * The fused routines, one table: every routine a backend may run as one kernel instead of its
 * reference body. Each is declared beside its body (./basic.ts, ./cross-entropy.ts,
 * ./attention.ts, ./adamw.ts); this file only collects them and derives the kernel types, so a
 * backend's kernel for a routine that does not exist, or reading an input it does not have, does
 * not compile.
 */
import { adamwRoutine, sumOfSquaresRoutine } from "./adamw.js"
import { attentionRoutine, attentionVjpRoutine } from "./attention.js"
import * as basic from "./basic.js"
import { crossEntropyRoutine, crossEntropyVjpRoutine } from "./cross-entropy.js"
import type { AnyRoutineCall, RoutineCall, RoutineDecl } from "./declare.js"

type ByRoutineName<Ds extends readonly RoutineDecl[]> = { readonly [D in Ds[number] as D["name"]]: D }
const byName = <const Ds extends readonly RoutineDecl[]>(...decls: Ds): ByRoutineName<Ds> =>
  Object.fromEntries(decls.map((d) => [d.name, d])) as never

export const routineTable = byName(
  attentionRoutine,
  attentionVjpRoutine,
  crossEntropyRoutine,
  crossEntropyVjpRoutine,
  basic.logsumexpRoutine,
  basic.logsumexpVjpRoutine,
  basic.siluRoutine,
  basic.siluVjpRoutine,
  basic.siluMulRoutine,
  basic.siluMulVjpRoutine,
  basic.rmsNormRoutine,
  basic.rmsNormVjpRoutine,
  basic.ropeRoutine,
  basic.ropeVjpRoutine,
  adamwRoutine,
  sumOfSquaresRoutine,
)

export type RoutineName = keyof typeof routineTable
export const routineNames = Object.keys(routineTable) as RoutineName[]

/** A backend's kernel for routine K: it reads `call.inputs` and writes every `call.outputs` buffer. */
export type RoutineKernel<K extends RoutineName> = (call: RoutineCall<(typeof routineTable)[K]>) => void
/** The fused kernels a backend has; the executor runs the reference body of any other routine. */
export type RoutineKernels = { readonly [K in RoutineName]?: RoutineKernel<K> }

/** A kernel seen without its routine's names, for code that wraps every kernel alike. */
export type AnyRoutineKernel = (call: AnyRoutineCall) => void

/** The kernel a backend has for the routine called `name`, if any. */
export const kernelFor = (kernels: RoutineKernels | undefined, name: string): AnyRoutineKernel | undefined =>
  kernels?.[name as RoutineName] as AnyRoutineKernel | undefined

/** Every kernel of `kernels` passed through `wrap` (spies, timers, dtype adapters). */
export function mapKernels(
  kernels: RoutineKernels,
  wrap: (k: AnyRoutineKernel, name: RoutineName) => AnyRoutineKernel,
): RoutineKernels {
  const entries = Object.entries(kernels) as [RoutineName, AnyRoutineKernel][]
  return Object.fromEntries(entries.map(([name, k]) => [name, wrap(k, name)]))
}

/** The same kernel for each routine named (the counting backend's no-ops). */
export const sameKernel = (names: Iterable<string>, kernel: AnyRoutineKernel): RoutineKernels =>
  Object.fromEntries([...names].map((name) => [name, kernel]))
