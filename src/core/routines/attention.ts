/**
 * Causal self-attention, flash-style: the keys are visited in blocks with an online softmax,
 * so no S×S score matrix is ever alive — only S×block at a time. The backward rule recomputes
 * each block's probabilities from the saved log-sum-exp instead of saving them.
 *
 * The log-sum-exp is kept in the accumulator dtype (float32 for bfloat16, as FlashAttention
 * does): bfloat16 would round it by up to 0.03 at lse ≈ 9–16, and the recomputed P by up to 3%.
 *
 * q [B, H, S, D]; k, v [B, Hkv, S, D] with H a multiple of Hkv (grouped-query attention).
 */
import { ShapeError } from "../errors.js"
import type { Tensor } from "../graph.js"
import { accumulatorDType } from "../dtype.js"
import * as o from "../ops.js"
import { pieces } from "../region-types.js"
import { lazyRoutine } from "../regions.js"
import { declareRoutine } from "./declare.js"

type AttentionAttrs = { blockSize: number; causal: boolean }
// How fused kernels see attention and its VJP (collected in ./registry.ts): the VJP gets the
// cotangents that flow, dO and dLse, or one of them.
export const attentionRoutine = declareRoutine<AttentionAttrs>()("attention", {
  inputs: ["q", "k", "v"],
  outputs: ["o", "lse"],
})
export const attentionVjpRoutine = declareRoutine<AttentionAttrs>()("attention.vjp", {
  inputs: ["q", "k", "v", "o", "lse", "dO?", "dLse?"],
  outputs: ["dQ", "dK", "dV"],
})

export interface AttentionOptions {
  /** Keys per block of the online softmax. */
  readonly blockSize?: number
}

/** Repeat each kv head for the query heads that share it: [B, Hkv, S, D] → [B, H, S, D]. */
function expandHeads(t: Tensor, heads: number): Tensor {
  const [B, Hkv, S, D] = t.shape as [number, number, number, number]
  if (Hkv === heads) return t
  const g = heads / Hkv
  return o.reshape(o.broadcastTo(o.reshape(t, [B, Hkv, 1, S, D]), [B, Hkv, g, S, D]), [B, heads, S, D])
}

/** The adjoint of expandHeads: sum the gradients of the query heads that share a kv head. */
function sumHeads(t: Tensor, kvHeads: number): Tensor {
  const [B, H, S, D] = t.shape as [number, number, number, number]
  if (H === kvHeads) return t
  return o.sum(o.reshape(t, [B, kvHeads, H / kvHeads, S, D]), 2)
}

/** Additive causal mask for queries 0..S−1 against keys start..start+len−1: 0 or −∞. */
function causalBias(S: number, start: number, len: number, dtype: Tensor["dtype"]): Tensor {
  const q = o.iota([S, len], 0)
  const k = o.add(o.iota([S, len], 1), start)
  return o.where(o.less(q, k), -Infinity, o.zeros([], dtype))
}

/** [start, length] of each key block (none when S = 0, where pieces() gives one empty piece). */
const blocks = (S: number, size: number): Array<[number, number]> => pieces(S, size).filter(([, len]) => len > 0)

/** Scores of every query against one key block, masked: [B, H, S, len]. */
function blockScores(q: Tensor, k: Tensor, start: number, len: number, scale: number): Tensor {
  const s = o.mul(o.matmul(q, o.slice(k, 2, start, start + len), { transB: true }), scale)
  return o.add(s, causalBias(q.shape[2]!, start, len, q.dtype))
}

function forward(q: Tensor, kIn: Tensor, vIn: Tensor, blockSize: number): Tensor[] {
  const [B, H, S, D] = q.shape as [number, number, number, number]
  const [k, v] = [expandHeads(kIn, H), expandHeads(vIn, H)]
  const scale = 1 / Math.sqrt(D)
  let m = o.full([B, H, S, 1], -Infinity, q.dtype) // running max
  let l = o.zeros([B, H, S, 1], q.dtype) // running Σ exp(s − m)
  let acc = o.zeros([B, H, S, D], q.dtype) // running Σ exp(s − m)·v
  for (const [start, len] of blocks(S, blockSize)) {
    const s = blockScores(q, k, start, len, scale)
    const mNew = o.maximum(m, o.max(s, -1, true))
    const p = o.exp(o.sub(s, mNew))
    const rescale = o.exp(o.sub(m, mNew)) // block 0 always holds key 0, so mNew is finite
    l = o.add(o.mul(l, rescale), o.sum(p, -1, true))
    acc = o.add(o.mul(acc, rescale), o.matmul(p, o.slice(v, 2, start, start + len)))
    m = mNew
  }
  const wide = accumulatorDType(q.dtype) // lse = m + log l is not rounded to q's dtype (see the top)
  return [o.div(acc, l), o.add(o.cast(m, wide), o.log(o.cast(l, wide)))]
}

function backward(
  q: Tensor,
  kIn: Tensor,
  vIn: Tensor,
  out: Tensor,
  lse: Tensor,
  dOut: Tensor | undefined,
  dLse: Tensor | undefined,
  blockSize: number,
): Tensor[] {
  const [, H, S, D] = q.shape as [number, number, number, number]
  const Hkv = kIn.shape[1]!
  const [k, v] = [expandHeads(kIn, H), expandHeads(vIn, H)]
  const scale = 1 / Math.sqrt(D)
  const dO = dOut ?? o.zerosLike(out)
  // dS = P ⊙ (dP − rowsum(dO ⊙ O) + dLse)
  let delta = o.sum(o.mul(dO, out), -1, true)
  if (dLse !== undefined) delta = o.sub(delta, o.cast(dLse, delta.dtype))
  let dq = o.zerosLike(q)
  const dks: Tensor[] = []
  const dvs: Tensor[] = []
  for (const [start, len] of blocks(S, blockSize)) {
    const kj = o.slice(k, 2, start, start + len)
    const vj = o.slice(v, 2, start, start + len)
    // s − lse in lse's (wider) dtype, so its precision is not rounded away; then P in q's.
    const p = o.cast(o.exp(o.sub(o.cast(blockScores(q, k, start, len, scale), lse.dtype), lse)), q.dtype)
    dvs.push(o.matmul(p, dO, { transA: true }))
    const ds = o.mul(p, o.sub(o.matmul(dO, vj, { transB: true }), delta))
    dq = o.add(dq, o.mul(o.matmul(ds, kj), scale))
    dks.push(o.mul(o.matmul(ds, q, { transA: true }), scale))
  }
  return [dq, sumHeads(o.concat(dks, 2), Hkv), sumHeads(o.concat(dvs, 2), Hkv)]
}

/** Causal attention; returns [B, H, S, D]. */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const blockSize = opts.blockSize ?? 64
  if (
    q.rank !== 4 ||
    k.rank !== 4 ||
    v.rank !== 4 ||
    k.shape.some((d, i) => d !== v.shape[i]) ||
    q.shape[0] !== k.shape[0] ||
    q.shape[2] !== k.shape[2] ||
    q.shape[3] !== k.shape[3] ||
    q.shape[1]! % k.shape[1]! !== 0
  ) {
    throw new ShapeError({
      op: "attention",
      shapes: [q.shape, k.shape, v.shape],
      message: `attention: q must be [B, H, S, D] and k, v [B, Hkv, S, D] with H a multiple of Hkv (got q [${q.shape}], k [${k.shape}], v [${v.shape}])`,
    })
  }
  const run = lazyRoutine(
    attentionRoutine,
    (qq, kk, vv) => forward(qq!, kk!, vv!, blockSize),
    ([qq, kk, vv], [out, lse], [dOut, dLse]) => backward(qq!, kk!, vv!, out!, lse!, dOut, dLse, blockSize),
    ([qq]) => [qq!, { shape: [...qq!.shape.slice(0, 3), 1], dtype: accumulatorDType(qq!.dtype) }],
    { blockSize, causal: true },
  )
  return run(q, k, v)[0]!
}
