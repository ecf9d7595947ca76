/**
 * Fused attention for the fast CPU backend: the `attention` routine and its VJP as a handful of
 * matrix products per (batch, head) instead of the reference body's graph of block-wise kernels.
 *
 * Per head it takes 64 queries at a time against every key they see (all of them, or with the
 * causal mask only keys up to the block's last query: about half the work), forms that block's
 * scores with the backend's matmul (the WebAssembly GEMM in float32), takes the softmax row by row
 * in float64 and multiplies again. The mask is a loop bound, not a −∞ bias. Scratch: 64 × S
 * elements (two in the backward), the backend's own, like the GEMM's packing buffers. The backward
 * recomputes P from the saved log-sum-exp, as the reference does:
 *   dV += Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ⊙ (dP − Δ) with Δ = rowsum(dO ⊙ O) − dLse,
 *   dQ = scale·dS·K,  dK += scale·dSᵀ·Q   (the query heads that share a kv head add into it).
 */
import type { Buffer, MatmulSpec } from "../../core/backend.js"
import type { RoutineKernels } from "../../core/routines/registry.js"
import type { CpuBuffer } from "../cpu/cpu-backend.js"
import { TASK } from "./attention-task.js"

type FloatData = Float32Array | Float64Array
/** The backend's matmul on typed arrays (views into buffers). */
export type Matmul = (a: FloatData, b: FloatData, c: FloatData, spec: MatmulSpec) => void

/** Scratch of n elements of x's type (zeroed), and how to give it back. */
export type Scratch = (x: FloatData, n: number) => FloatData
export type Release = (x: FloatData) => void
/** Runs an attention job of ./attention-task.ts on float32 operands in the heap (false: not run). */
export type AttentionJob = (words: number[], operands: Float32Array[]) => boolean

const floats = (b: Buffer): FloatData => (b as CpuBuffer).data as FloatData
const plain: Scratch = (x, n) => (x instanceof Float32Array ? new Float32Array(n) : new Float64Array(n))
const mm = (m: number, n: number, k: number, transA: boolean, transB: boolean, accumulate = false): MatmulSpec => ({
  batch: 1,
  m,
  n,
  k,
  transA,
  transB,
  accumulate,
})

/** Queries per block: the scratch is ROWS × S, and a causal block only visits keys up to its last query. */
const ROWS = 64

/**
 * The words of an attention job (./attention-task.ts) for these operands, or undefined when one
 * is not float32 (the job's addresses are the views' byte offsets; `job` checks they are in the heap).
 */
function jobWords(
  backward: boolean,
  dims: readonly [number, number, number, number, number],
  causal: boolean,
  operands: ReadonlyArray<FloatData | undefined>,
): { words: number[]; operands: Float32Array[] } | undefined {
  const present = operands.filter((x): x is FloatData => x !== undefined)
  if (!present.every((x) => x instanceof Float32Array)) return undefined
  const words = new Array<number>(TASK.words).fill(0)
  ;[words[TASK.B], words[TASK.H], words[TASK.Hkv], words[TASK.S], words[TASK.D]] = dims
  words[TASK.backward] = backward ? 1 : 0
  words[TASK.causal] = causal ? 1 : 0
  const names = ["q", "k", "v", "o", "lse", "dO", "dLse", "dq", "dk", "dv"] as const
  names.forEach((name, i) => {
    words[TASK[name]] = operands[i]?.byteOffset ?? 0
  })
  return { words, operands: present as Float32Array[] }
}

/** One block of ROWS queries of one (batch, head): its rows, the keys it sees, and their offsets. */
interface QueryBlock {
  /** First query of the block, its number of queries, and the keys it sees (all, or causal: up to its last query). */
  readonly i0: number
  readonly r: number
  readonly nk: number
  /** Offset of this head's queries (q, o, dq), of its kv head (k, v, dk, dv), of its log-sum-exp. */
  readonly qo: number
  readonly lo: number
  readonly rows: (x: FloatData) => FloatData
  readonly keys: (x: FloatData) => FloatData
}

/** Visits every query block of [B, H, S, D] queries against [B, Hkv, S, D] keys, in the order both passes use. */
function forEachQueryBlock(
  B: number,
  H: number,
  Hkv: number,
  S: number,
  D: number,
  causal: boolean,
  visit: (blk: QueryBlock) => void,
) {
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const qo = (b * H + h) * S * D,
        ko = (b * Hkv + Math.floor((h * Hkv) / H)) * S * D,
        lo = (b * H + h) * S
      for (let i0 = 0; i0 < S; i0 += ROWS) {
        const r = Math.min(ROWS, S - i0),
          nk = causal ? i0 + r : S
        visit({
          i0,
          r,
          nk,
          qo,
          lo,
          rows: (x) => x.subarray(qo + i0 * D, qo + (i0 + r) * D),
          keys: (x) => x.subarray(ko, ko + nk * D),
        })
      }
    }
}

export function attentionKernels(
  matmul: Matmul,
  like: Scratch = plain,
  release: Release = () => {},
  job: AttentionJob = () => false,
): RoutineKernels {
  return {
    attention({ inputs, outputs, shapes, attrs }) {
      const [B, H, S, D] = shapes.inputs.q as [number, number, number, number]
      const Hkv = shapes.inputs.k![1]!
      const [q, k, v, o, lse] = [inputs.q, inputs.k, inputs.v, outputs.o, outputs.lse].map(floats) as FloatData[]
      const fast = jobWords(false, [B, H, Hkv, S, D], attrs.causal === true, [q, k, v, o, lse])
      if (fast !== undefined && job(fast.words, fast.operands)) return
      const scale = 1 / Math.sqrt(D)
      const scratch = like(q!, Math.min(ROWS, S) * S)
      forEachQueryBlock(B, H, Hkv, S, D, attrs.causal === true, ({ i0, r, nk, lo, rows, keys }) => {
        const P = scratch.subarray(0, r * nk)
        matmul(rows(q!), keys(k!), P, mm(r, nk, D, false, true))
        for (let ii = 0; ii < r; ii++) {
          const row = ii * nk,
            end = attrs.causal ? i0 + ii + 1 : S
          let m = -Infinity
          for (let j = 0; j < end; j++) m = Math.max(m, P[row + j]! * scale)
          let l = 0
          for (let j = 0; j < end; j++) {
            const e = Math.exp(P[row + j]! * scale - m)
            P[row + j] = e
            l += e
          }
          for (let j = 0; j < end; j++) P[row + j] = P[row + j]! / l
          P.fill(0, row + end, row + nk)
          lse![lo + i0 + ii] = m + Math.log(l)
        }
        matmul(P, keys(v!), rows(o!), mm(r, D, nk, false, false))
      })
      release(scratch)
    },

    "attention.vjp"({ inputs, outputs, shapes, attrs }) {
      const [B, H, S, D] = shapes.inputs.q as [number, number, number, number]
      const Hkv = shapes.inputs.k![1]!
      const [q, k, v, o, lse] = [inputs.q, inputs.k, inputs.v, inputs.o, inputs.lse].map(floats) as FloatData[]
      const dOut = inputs.dO === undefined ? undefined : floats(inputs.dO)
      const dLse = inputs.dLse === undefined ? undefined : floats(inputs.dLse)
      const [dq, dk, dv] = [outputs.dQ, outputs.dK, outputs.dV].map(floats) as FloatData[]
      const operands = [q, k, v, o, lse, dOut, dLse, dq, dk, dv]
      const fast = jobWords(true, [B, H, Hkv, S, D], attrs.causal === true, operands)
      if (fast !== undefined && job(fast.words, fast.operands)) return
      dk!.fill(0)
      dv!.fill(0)
      const scale = 1 / Math.sqrt(D)
      const block = Math.min(ROWS, S) * S
      const [pScratch, dpScratch] = [like(q!, block), like(q!, block)]
      const zeros = like(q!, Math.min(ROWS, S) * D)
      forEachQueryBlock(B, H, Hkv, S, D, attrs.causal === true, ({ i0, r, nk, qo, lo, rows, keys }) => {
        const dO = dOut === undefined ? zeros.subarray(0, r * D) : rows(dOut)
        const [P, dP] = [pScratch.subarray(0, r * nk), dpScratch.subarray(0, r * nk)]
        matmul(rows(q!), keys(k!), P, mm(r, nk, D, false, true))
        for (let ii = 0; ii < r; ii++) {
          const row = ii * nk,
            end = attrs.causal ? i0 + ii + 1 : S,
            l = lse![lo + i0 + ii]!
          for (let j = 0; j < end; j++) P[row + j] = Math.exp(P[row + j]! * scale - l)
          P.fill(0, row + end, row + nk)
        }
        matmul(P, dO, keys(dv!), mm(nk, D, r, true, false, true))
        matmul(dO, keys(v!), dP, mm(r, nk, D, false, true))
        for (let ii = 0; ii < r; ii++) {
          const i = i0 + ii
          let delta = dLse === undefined ? 0 : -dLse[lo + i]!
          for (let d = 0; d < D; d++) delta += dO[ii * D + d]! * o![qo + i * D + d]!
          const row = ii * nk
          for (let j = 0; j < nk; j++) dP[row + j] = P[row + j]! * (dP[row + j]! - delta) * scale
        }
        matmul(dP, keys(k!), rows(dq!), mm(r, D, nk, false, false))
        matmul(dP, rows(q!), keys(dk!), mm(nk, D, r, true, false, true))
      })
      for (const x of [pScratch, dpScratch, zeros]) release(x)
    },
  }
}
