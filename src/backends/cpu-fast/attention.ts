/**
 * Fused attention for the fast CPU backend: the `attention` routine and its VJP as a handful of
 * matrix products per (batch, head) instead of the reference body's graph of block-wise kernels.
 *
 * Per head it forms the whole S × S score matrix (S ≤ a few thousand on a CPU: 4·S² bytes of
 * scratch), takes the softmax row by row in float64 and multiplies with the backend's matmul (the
 * WebAssembly GEMM in float32). The causal mask is a loop bound, not a −∞ bias. The backward
 * recomputes P from the saved log-sum-exp, as the reference does:
 *   dV += Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ⊙ (dP − Δ) with Δ = rowsum(dO ⊙ O) − dLse,
 *   dQ = scale·dS·K,  dK += scale·dSᵀ·Q   (the query heads that share a kv head add into it).
 */
import type { Buffer, MatmulSpec } from "../../core/backend.js"
import type { RoutineKernels } from "../../core/routines/registry.js"
import type { CpuBuffer } from "../cpu/cpu-backend.js"

type FloatData = Float32Array | Float64Array
/** The backend's matmul on typed arrays (views into buffers). */
export type Matmul = (a: FloatData, b: FloatData, c: FloatData, spec: MatmulSpec) => void

const floats = (b: Buffer): FloatData => (b as CpuBuffer).data as FloatData
const like = (x: FloatData, n: number): FloatData =>
  x instanceof Float32Array ? new Float32Array(n) : new Float64Array(n)
const mm = (m: number, n: number, k: number, transA: boolean, transB: boolean, accumulate = false): MatmulSpec => ({
  batch: 1,
  m,
  n,
  k,
  transA,
  transB,
  accumulate,
})

export function attentionKernels(matmul: Matmul): RoutineKernels {
  return {
    attention({ inputs, outputs, shapes, attrs }) {
      const [B, H, S, D] = shapes.inputs.q as [number, number, number, number]
      const Hkv = shapes.inputs.k![1]!
      const [q, k, v, o, lse] = [inputs.q, inputs.k, inputs.v, outputs.o, outputs.lse].map(floats) as FloatData[]
      const scale = 1 / Math.sqrt(D)
      const P = like(q!, S * S)
      for (let b = 0; b < B; b++)
        for (let h = 0; h < H; h++) {
          const qo = (b * H + h) * S * D,
            ko = (b * Hkv + Math.floor((h * Hkv) / H)) * S * D
          const kv = (x: FloatData) => x.subarray(ko, ko + S * D)
          matmul(q!.subarray(qo, qo + S * D), kv(k!), P, mm(S, S, D, false, true))
          for (let i = 0; i < S; i++) {
            const row = i * S,
              end = attrs.causal ? i + 1 : S
            let m = -Infinity
            for (let j = 0; j < end; j++) m = Math.max(m, P[row + j]! * scale)
            let l = 0
            for (let j = 0; j < end; j++) {
              const e = Math.exp(P[row + j]! * scale - m)
              P[row + j] = e
              l += e
            }
            for (let j = 0; j < end; j++) P[row + j] = P[row + j]! / l
            P.fill(0, row + end, row + S)
            lse![(b * H + h) * S + i] = m + Math.log(l)
          }
          matmul(P, kv(v!), o!.subarray(qo, qo + S * D), mm(S, D, S, false, false))
        }
    },

    "attention.vjp"({ inputs, outputs, shapes, attrs }) {
      const [B, H, S, D] = shapes.inputs.q as [number, number, number, number]
      const Hkv = shapes.inputs.k![1]!
      const [q, k, v, o, lse] = [inputs.q, inputs.k, inputs.v, inputs.o, inputs.lse].map(floats) as FloatData[]
      const dOut = inputs.dO === undefined ? undefined : floats(inputs.dO)
      const dLse = inputs.dLse === undefined ? undefined : floats(inputs.dLse)
      const [dq, dk, dv] = [outputs.dQ, outputs.dK, outputs.dV].map(floats) as FloatData[]
      dk!.fill(0)
      dv!.fill(0)
      const scale = 1 / Math.sqrt(D)
      const P = like(q!, S * S),
        dP = like(q!, S * S),
        zeros = like(q!, S * D)
      for (let b = 0; b < B; b++)
        for (let h = 0; h < H; h++) {
          const qo = (b * H + h) * S * D,
            ko = (b * Hkv + Math.floor((h * Hkv) / H)) * S * D,
            lo = (b * H + h) * S
          const qh = (x: FloatData) => x.subarray(qo, qo + S * D)
          const kv = (x: FloatData) => x.subarray(ko, ko + S * D)
          const dO = dOut === undefined ? zeros : qh(dOut)
          matmul(qh(q!), kv(k!), P, mm(S, S, D, false, true))
          for (let i = 0; i < S; i++) {
            const row = i * S,
              end = attrs.causal ? i + 1 : S,
              l = lse![lo + i]!
            for (let j = 0; j < end; j++) P[row + j] = Math.exp(P[row + j]! * scale - l)
            P.fill(0, row + end, row + S)
          }
          matmul(P, dO, kv(dv!), mm(S, D, S, true, false, true))
          matmul(dO, kv(v!), dP, mm(S, S, D, false, true))
          for (let i = 0; i < S; i++) {
            let delta = dLse === undefined ? 0 : -dLse[lo + i]!
            for (let d = 0; d < D; d++) delta += dO[i * D + d]! * o![qo + i * D + d]!
            const row = i * S
            for (let j = 0; j < S; j++) dP[row + j] = P[row + j]! * (dP[row + j]! - delta) * scale
          }
          matmul(dP, kv(k!), qh(dq!), mm(S, D, S, false, false))
          matmul(dP, qh(q!), kv(dk!), mm(S, D, S, true, false, true))
        }
    },
  }
}
