/**
 * Fused CPU kernels for named routines. Each must equal its routine's reference body (the
 * conformance tests compare them); what it saves is memory: no N×V temporaries.
 */
import type { Buffer } from "../../core/backend.js"
import { checkTargets } from "../../core/indices.js"
import type { RoutineKernels } from "../../core/routines/registry.js"
import type { CpuBuffer, CpuData } from "./cpu-backend.js"

const data = (b: Buffer): CpuData => (b as CpuBuffer).data

/** log Σ_j exp(x_j) of one row, computed stably around the row's max. */
function rowLse(x: CpuData, base: number, V: number): number {
  let m = -Infinity
  for (let j = 0; j < V; j++) m = Math.max(m, x[base + j]!)
  if (m === -Infinity) return -Infinity
  let s = 0
  for (let j = 0; j < V; j++) s += Math.exp(x[base + j]! - m)
  return m + Math.log(s)
}

export const cpuRoutines: RoutineKernels = {
  /** logits [N, V], targets [N] → nll [N] (0 at ignored targets). */
  crossEntropy({ inputs: { logits, targets }, outputs: { nll }, shapes, attrs }) {
    const [N, V] = shapes.inputs.logits as [number, number]
    const x = data(logits),
      t = data(targets),
      out = data(nll)
    checkTargets("cpu.crossEntropy", t, V, attrs.ignoreIndex)
    for (let i = 0; i < N; i++) {
      const ti = t[i]!
      out[i] = ti === attrs.ignoreIndex ? 0 : rowLse(x, i * V, V) - x[i * V + ti]!
    }
  },

  /** dLogits = (softmax − onehot)·dNll. */
  "crossEntropy.vjp"({ inputs: { logits, targets, dNll }, outputs: { dLogits }, shapes, attrs }) {
    const [N, V] = shapes.inputs.logits as [number, number]
    const x = data(logits),
      t = data(targets),
      g = data(dNll),
      dx = data(dLogits)
    checkTargets("cpu.crossEntropy.vjp", t, V, attrs.ignoreIndex)
    for (let i = 0; i < N; i++) {
      const base = i * V
      const ti = t[i]!
      if (ti === attrs.ignoreIndex) {
        dx.fill(0, base, base + V)
        continue
      }
      const lse = rowLse(x, base, V)
      const gi = g[i]!
      for (let j = 0; j < V; j++) dx[base + j] = Math.exp(x[base + j]! - lse) * gi
      dx[base + ti] = dx[base + ti]! - gi
    }
  },
}
