/**
 * Fused CPU kernels for named routines. Each must equal its routine's reference body (the
 * conformance tests compare them); what it saves is memory: no N×V temporaries.
 */
import type { FusedRoutine } from "../../core/backend.js"
import type { CpuBuffer, CpuData } from "./cpu-backend.js"

const data = (b: unknown): CpuData => (b as CpuBuffer).data

/** log Σ_j exp(x_j) of one row, computed stably around the row's max. */
function rowLse(x: CpuData, base: number, V: number): number {
  let m = -Infinity
  for (let j = 0; j < V; j++) m = Math.max(m, x[base + j]!)
  if (m === -Infinity) return -Infinity
  let s = 0
  for (let j = 0; j < V; j++) s += Math.exp(x[base + j]! - m)
  return m + Math.log(s)
}

/** crossEntropy: logits [N, V], targets [N] → nll [N] (0 at ignored targets). */
const crossEntropy: FusedRoutine = ([logits, targets], [nll], shapes, params) => {
  const [N, V] = shapes.inputs[0] as [number, number]
  const x = data(logits), t = data(targets), out = data(nll)
  const ignore = Number(params.ignoreIndex)
  for (let i = 0; i < N; i++) {
    const ti = t[i]!
    out[i] = ti === ignore ? 0 : rowLse(x, i * V, V) - x[i * V + ti]!
  }
}

/** crossEntropy.vjp: [logits, targets, nll, dnll] → dlogits = (softmax − onehot)·dnll. */
const crossEntropyVjp: FusedRoutine = ([logits, targets, , dnll], [dlogits], shapes, params) => {
  const [N, V] = shapes.inputs[0] as [number, number]
  const x = data(logits), t = data(targets), g = data(dnll), dx = data(dlogits)
  const ignore = Number(params.ignoreIndex)
  for (let i = 0; i < N; i++) {
    const base = i * V
    const ti = t[i]!
    if (ti === ignore) { dx.fill(0, base, base + V); continue }
    const lse = rowLse(x, base, V)
    const gi = g[i]!
    for (let j = 0; j < V; j++) dx[base + j] = Math.exp(x[base + j]! - lse) * gi
    dx[base + ti] = dx[base + ti]! - gi
  }
}

export const cpuRoutines: Readonly<Record<string, FusedRoutine>> = {
  crossEntropy,
  "crossEntropy.vjp": crossEntropyVjp,
}
