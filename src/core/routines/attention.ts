/**
 * Causal self-attention, flash-style: the keys are visited in blocks with an online softmax,
 * so no S×S score matrix is ever alive — only S×block at a time. The backward rule recomputes
 * each block's probabilities from the saved log-sum-exp instead of saving them.
 *
 * The log-sum-exp is kept in the accumulator dtype (float32 for bfloat16, as FlashAttention
 * does): bfloat16 would round it by up to 0.03 at lse ≈ 9–16, and the recomputed P by up to 3%.
 *
 * q [B, H, Sq, D]; k, v [B, Hkv, Sk, D] with H a multiple of Hkv (grouped-query attention) and
 * Sq ≤ Sk: the queries are the last Sq positions (Sq < Sk with a KV cache). A sliding window,
 * a soft-cap on the scores or another scale make it the routine "generalAttention" (see
 * `attention` below).
 */
import { BadConfig, ShapeError } from "../errors.js"
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
type GeneralAttrs = { blockSize: number; window: number; softcap: number; scale: number }
/**
 * Attention with a query offset (a KV cache), a sliding window, a soft-cap or another scale.
 * Not in ./registry.ts on purpose: no backend has a kernel for it, so every backend runs its
 * body, and a fused "attention" kernel (which knows none of these) is never handed it.
 */
export const generalAttentionRoutine = declareRoutine<GeneralAttrs>()("generalAttention", {
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
  /** Sliding window: a query sees itself and the window − 1 keys before it (Mistral, Gemma-2). */
  readonly window?: number
  /** Scores become cap·tanh(score / cap) before the mask (Gemma-2's attn_logit_softcapping). */
  readonly softcap?: number
  /** The score scale (default 1/√D; Gemma-2: query_pre_attn_scalar^−½). */
  readonly scale?: number
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

/** What the general routine adds to plain causal attention (see `attention`). */
interface Features {
  /** Keys a query sees: itself and the window − 1 before it (0: all earlier keys). */
  readonly window: number
  /** Scores become cap·tanh(score / cap) before the mask (0: none). */
  readonly softcap: number
  readonly scale: number
}

/**
 * The general routine's mask value. Finite, unlike the plain routine's −∞: with a window, a
 * whole key block can be hidden from some query, and a row whose running max is still this value
 * gets exp(0) there, then a rescale factor exp(NEG − max) = 0 once a visible key comes (every
 * query sees at least itself), so nothing of it stays. Fits bfloat16 and float32.
 */
const NEG = -1e30

/**
 * Additive mask for queries at positions offset…offset+S−1 against keys start…start+len−1:
 * 0 where the key is visible (not in the future, and inside the window if there is one), else
 * `hidden` (−∞ for plain causal attention).
 */
function maskBias(
  S: number,
  offset: number,
  start: number,
  len: number,
  window: number,
  hidden: number,
  dtype: Tensor["dtype"],
): Tensor {
  const q = o.add(o.iota([S, len], 0), offset)
  const k = o.add(o.iota([S, len], 1), start)
  const future = o.less(q, k) // 1 where k > q
  // … or k ≤ q − window: the two never hold at once, so their sum is 0 or 1
  const masked = window > 0 ? o.add(future, o.less(o.add(k, window - 1), q)) : future
  return o.where(masked, hidden, o.zeros([], dtype))
}

/** [start, length] of each key block (none when S = 0, where pieces() gives one empty piece). */
const blocks = (S: number, size: number): Array<[number, number]> => pieces(S, size).filter(([, len]) => len > 0)

/** Queries 0…Sq−1 sit at positions offset…; a key block nobody sees (past every query, or before every window) is skipped. */
const seen = (start: number, len: number, Sq: number, offset: number, window: number): boolean =>
  start <= Sq - 1 + offset && (window === 0 || start + len - 1 > offset - window)

/** Scores of every query against one key block, before the mask. */
const rawScores = (q: Tensor, k: Tensor, start: number, len: number, scale: number): Tensor =>
  o.mul(o.matmul(q, o.slice(k, 2, start, start + len), { transB: true }), scale)

/** Scores of every query against one key block, masked: [B, H, S, len] (the plain routine). */
function blockScores(q: Tensor, k: Tensor, start: number, len: number, scale: number): Tensor {
  return o.add(rawScores(q, k, start, len, scale), maskBias(q.shape[2]!, 0, start, len, 0, -Infinity, q.dtype))
}

/** The general routine's scores: scaled, soft-capped, then masked (the order Gemma-2 uses). */
function featureScores(q: Tensor, k: Tensor, start: number, len: number, f: Features): { s: Tensor; capped?: Tensor } {
  const [Sq, Sk] = [q.shape[2]!, k.shape[2]!]
  const raw = rawScores(q, k, start, len, f.scale)
  const capped = f.softcap > 0 ? o.tanh(o.div(raw, f.softcap)) : undefined
  const s = capped === undefined ? raw : o.mul(capped, f.softcap)
  return { s: o.add(s, maskBias(Sq, Sk - Sq, start, len, f.window, NEG, q.dtype)), capped }
}

type Scores = (q: Tensor, k: Tensor, start: number, len: number) => { s: Tensor; capped?: Tensor }

function forward(q: Tensor, kIn: Tensor, vIn: Tensor, blockSize: number, scores?: Scores, f?: Features): Tensor[] {
  const [B, H, S, D] = q.shape as [number, number, number, number]
  const Sk = kIn.shape[2]!
  const [k, v] = [expandHeads(kIn, H), expandHeads(vIn, H)]
  const scale = f?.scale ?? 1 / Math.sqrt(D)
  const score: Scores = scores ?? ((qq, kk, start, len) => ({ s: blockScores(qq, kk, start, len, scale) }))
  let m = o.full([B, H, S, 1], -Infinity, q.dtype) // running max
  let l = o.zeros([B, H, S, 1], q.dtype) // running Σ exp(s − m)
  let acc = o.zeros([B, H, S, D], q.dtype) // running Σ exp(s − m)·v
  for (const [start, len] of blocks(Sk, blockSize)) {
    if (f !== undefined && !seen(start, len, S, Sk - S, f.window)) continue
    const { s } = score(q, k, start, len)
    const mNew = o.maximum(m, o.max(s, -1, true))
    const p = o.exp(o.sub(s, mNew))
    const rescale = o.exp(o.sub(m, mNew)) // the first block's max is finite (a key, or NEG), so mNew is
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
  scores?: Scores,
  f?: Features,
): Tensor[] {
  const [B, H, S, D] = q.shape as [number, number, number, number]
  const [Hkv, Sk] = [kIn.shape[1]!, kIn.shape[2]!]
  const [k, v] = [expandHeads(kIn, H), expandHeads(vIn, H)]
  const scale = f?.scale ?? 1 / Math.sqrt(D)
  const score: Scores = scores ?? ((qq, kk, start, len) => ({ s: blockScores(qq, kk, start, len, scale) }))
  const dO = dOut ?? o.zerosLike(out)
  // dS = P ⊙ (dP − rowsum(dO ⊙ O) + dLse)
  let delta = o.sum(o.mul(dO, out), -1, true)
  if (dLse !== undefined) delta = o.sub(delta, o.cast(dLse, delta.dtype))
  let dq = o.zerosLike(q)
  const dks: Tensor[] = []
  const dvs: Tensor[] = []
  for (const [start, len] of blocks(Sk, blockSize)) {
    if (f !== undefined && !seen(start, len, S, Sk - S, f.window)) {
      dks.push(o.zeros([B, H, len, D], q.dtype))
      dvs.push(o.zeros([B, H, len, D], q.dtype))
      continue
    }
    const kj = o.slice(k, 2, start, start + len)
    const vj = o.slice(v, 2, start, start + len)
    const { s, capped } = score(q, k, start, len)
    // s − lse in lse's (wider) dtype, so its precision is not rounded away; then P in q's.
    const p = o.cast(o.exp(o.sub(o.cast(s, lse.dtype), lse)), q.dtype)
    dvs.push(o.matmul(p, dO, { transA: true }))
    let ds = o.mul(p, o.sub(o.matmul(dO, vj, { transB: true }), delta))
    if (capped !== undefined) ds = o.mul(ds, o.sub(1, o.square(capped))) // d(c·tanh(x/c))/dx = 1 − tanh²
    dq = o.add(dq, o.mul(o.matmul(ds, kj), scale))
    dks.push(o.mul(o.matmul(ds, q, { transA: true }), scale))
  }
  return [dq, sumHeads(o.concat(dks, 2), Hkv), sumHeads(o.concat(dvs, 2), Hkv)]
}

/**
 * Causal attention; returns [B, H, Sq, D]. Queries are the last Sq positions of the Sk keys
 * (Sq < Sk: new tokens against a KV cache). Plain attention (Sq = Sk, no window that hides
 * anything, no soft-cap, scale 1/√D) is the routine "attention", which backends fuse; anything
 * else is the routine "generalAttention", which no backend fuses yet: every backend runs its
 * body, the same online-softmax loop from primitives, and its hand-written backward.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const blockSize = opts.blockSize ?? 64
  if (
    q.rank !== 4 ||
    k.rank !== 4 ||
    v.rank !== 4 ||
    k.shape.some((d, i) => d !== v.shape[i]) ||
    q.shape[0] !== k.shape[0] ||
    q.shape[2]! > k.shape[2]! ||
    q.shape[3] !== k.shape[3] ||
    q.shape[1]! % k.shape[1]! !== 0
  ) {
    throw new ShapeError({
      op: "attention",
      shapes: [q.shape, k.shape, v.shape],
      message: `attention: q must be [B, H, Sq, D] and k, v [B, Hkv, Sk, D] with H a multiple of Hkv and Sq ≤ Sk (got q [${q.shape}], k [${k.shape}], v [${v.shape}])`,
    })
  }
  const [Sq, Sk, D] = [q.shape[2]!, k.shape[2]!, q.shape[3]!]
  const window = opts.window ?? 0
  const softcap = opts.softcap ?? 0
  const scale = opts.scale ?? 1 / Math.sqrt(D)
  for (const [name, value] of [
    ["window", window],
    ["softcap", softcap],
  ] as const) {
    if (!(Number.isFinite(value) && value >= 0 && (name !== "window" || Number.isInteger(value))))
      throw new BadConfig({
        field: name,
        message: `attention: ${name} ${value} must be ${name === "window" ? "a non-negative integer" : "finite and ≥ 0"} (0 turns it off)`,
      })
  }
  const types = ([qq]: readonly Tensor[]) => [
    qq!,
    { shape: [...qq!.shape.slice(0, 3), 1], dtype: accumulatorDType(qq!.dtype) },
  ]
  const plain = Sq === Sk && (window === 0 || window >= Sk) && softcap === 0 && scale === 1 / Math.sqrt(D)
  if (plain) {
    const run = lazyRoutine(
      attentionRoutine,
      (qq, kk, vv) => forward(qq!, kk!, vv!, blockSize),
      ([qq, kk, vv], [out, lse], [dOut, dLse]) => backward(qq!, kk!, vv!, out!, lse!, dOut, dLse, blockSize),
      types,
      { blockSize, causal: true },
    )
    return run(q, k, v)[0]!
  }
  const f: Features = { window: window >= Sk ? 0 : window, softcap, scale }
  const score: Scores = (qq, kk, start, len) => featureScores(qq, kk, start, len, f)
  const run = lazyRoutine(
    generalAttentionRoutine,
    (qq, kk, vv) => forward(qq!, kk!, vv!, blockSize, score, f),
    ([qq, kk, vv], [out, lse], [dOut, dLse]) => backward(qq!, kk!, vv!, out!, lse!, dOut, dLse, blockSize, score, f),
    types,
    { blockSize, ...f },
  )
  return run(q, k, v)[0]!
}
