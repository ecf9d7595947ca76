/**
 * Routines: small compositions every transformer needs. Each is written as its reference
 * decomposition into primitives — the semantics, the fallback on a backend without a fused
 * kernel, and the oracle fused kernels are tested against.
 */
import { wider } from "../dtype.js"
import { ShapeError } from "../errors.js"
import type { Tensor } from "../graph.js"
import * as o from "../ops.js"
import { type CustomVjp, routine } from "../regions.js"
import { declareRoutine } from "./declare.js"

// How fused kernels see this file's routines (collected in ./registry.ts). A VJP reads the
// forward's inputs and outputs it needs, then the cotangents (y → dY); it writes gradients (x → dX).
export const logsumexpRoutine = declareRoutine()("logsumexp", { inputs: ["x"], outputs: ["lse"] })
export const logsumexpVjpRoutine = declareRoutine()("logsumexp.vjp", { inputs: ["x", "lse", "dLse"], outputs: ["dX"] })
type NormAttrs = { eps: number }
export const rmsNormRoutine = declareRoutine<NormAttrs>()("rmsNorm", { inputs: ["x", "w"], outputs: ["y"] })
export const rmsNormVjpRoutine = declareRoutine<NormAttrs>()("rmsNorm.vjp", {
  inputs: ["x", "w", "dY"],
  outputs: ["dX", "dW"],
})
export const siluRoutine = declareRoutine()("silu", { inputs: ["x"], outputs: ["y"] })
export const siluVjpRoutine = declareRoutine()("silu.vjp", { inputs: ["x", "y", "dY"], outputs: ["dX"] })
export const siluMulRoutine = declareRoutine()("siluMul", { inputs: ["a", "b"], outputs: ["y"] })
export const siluMulVjpRoutine = declareRoutine()("siluMul.vjp", { inputs: ["a", "b", "dY"], outputs: ["dA", "dB"] })
/** invFreq: a scaled RoPE's frequencies (rope_scaling), one per pair, in place of θ^(−2i/D). */
type RopeAttrs = { theta: number; offset: number; invFreq?: readonly number[] }
export const ropeRoutine = declareRoutine<RopeAttrs>()("rope", { inputs: ["x"], outputs: ["y"] })
export const ropeVjpRoutine = declareRoutine<RopeAttrs>()("rope.vjp", { inputs: ["dY"], outputs: ["dX"] })

/**
 * log Σ exp(x) over the last axis (kept with size 1). A routine with its own backward rule,
 * g·exp(x − lse), so it saves only its input and output — not the exp(x − max) intermediate.
 */
export const logsumexp: (x: Tensor) => Tensor = routine(
  logsumexpRoutine,
  (x: Tensor) => {
    const m = o.stopGradient(o.max(x, -1, true))
    return o.add(m, o.log(o.sum(o.exp(o.sub(x, m)), -1, true)))
  },
  ([x], [lse], [g]) => [o.mul(o.exp(o.sub(x!, lse!)), g!)],
)

export const softmax = (x: Tensor): Tensor => o.exp(o.sub(x, logsumexp(x)))
export const logSoftmax = (x: Tensor): Tensor => o.sub(x, logsumexp(x))

/** The dtype a routine computes in: at least float32 (bfloat16 values are widened first). */
const computeType = (t: Tensor): Tensor["dtype"] => wider(t.dtype, "float32")

/**
 * RMSNorm over the last axis: x / √(mean(x²) + eps) · weight. Normalised in at least float32
 * and cast back before the weight, as Hugging Face's LlamaRMSNorm does: a bfloat16 mean of
 * squares would keep three significant digits.
 */
export function rmsNorm(x: Tensor, weight: Tensor, eps = 1e-5): Tensor {
  const h = o.cast(x, computeType(x))
  const inv = o.rsqrt(o.add(o.mean(o.square(h), -1, true), eps))
  return o.mul(o.cast(o.mul(h, inv), x.dtype), weight)
}

/**
 * RMSNorm as the routine "rmsNorm" (and its backward, "rmsNorm.vjp", the VJP of the same body),
 * for a backend that fuses it: one kernel instead of a dozen elementwise passes. The backward
 * recomputes the normalisation from x, so only x and the weight are saved.
 */
export const fusedRmsNorm = (x: Tensor, weight: Tensor, eps = 1e-5): Tensor =>
  routine(rmsNormRoutine, (a: Tensor, w: Tensor) => rmsNorm(a, w, eps), undefined, { eps })(x, weight)

/**
 * SiLU, x·σ(x), as a routine: its backward rule g·σ(x)·(1 + x·(1 − σ(x))) needs only x, so the
 * chain of intermediates inside σ is never saved (as a fused kernel would behave).
 */
export const silu: (x: Tensor) => Tensor = routine(
  siluRoutine,
  (x: Tensor) => o.mul(x, o.sigmoid(x)),
  ([x], _out, [g]) => {
    const s = o.sigmoid(x!)
    return [o.mul(g!, o.mul(s, o.add(o.mul(x!, o.sub(1, s)), 1)))]
  },
)

/** y = x · Wᵀ for a weight stored [out, in], as Hugging Face stores linear layers. */
export const linear = (x: Tensor, weight: Tensor): Tensor => o.matmul(x, weight, { transB: true })

/**
 * SwiGLU's product silu(a)·b as the routine "siluMul" (backward "siluMul.vjp", the VJP of the
 * same body), for a backend that fuses it: one pass, and silu(a) is never stored for backward.
 */
const siluTimes = (a: Tensor, b: Tensor): Tensor => o.mul(silu(a), b)
export const siluMul: (a: Tensor, b: Tensor) => Tensor = routine(siluMulRoutine, siluTimes)

/**
 * The Llama MLP: down(silu(gate(x)) ⊙ up(x)); its S×I intermediates are what MST chunks.
 * `fused`: the product as the "siluMul" routine.
 */
export const swiglu = (x: Tensor, gate: Tensor, up: Tensor, down: Tensor, fused = false): Tensor =>
  linear((fused ? siluMul : siluTimes)(linear(x, gate), linear(x, up)), down)

/**
 * Rotary position embedding on x [..., S, D] (D even), in the "rotate half" layout Hugging
 * Face Llama uses: x·cos + rotate_half(x)·sin, with angle(p, i) = (p + offset) · θ^(−2i/D).
 * The angles are computed in at least float32 and cos, sin cast to x's dtype, as Hugging Face
 * does: in bfloat16 a position past 256 would already be rounded (8191 to 8192). `inverse`
 * rotates by −angle: the transpose of the rotation, so RoPE's VJP. `offset` may be a scalar
 * tensor (a bound input), so that ranks holding different positions run one graph. `invFreq` replaces
 * θ^(−2i/D) with given frequencies (RoPE scaling: see `ropeInvFreq` in models/config.ts).
 */
export function rope(
  x: Tensor,
  theta = 10000,
  offset: number | Tensor = 0,
  inverse = false,
  invFreq?: readonly number[],
): Tensor {
  const [S, D] = [x.shape.at(-2)!, x.shape.at(-1)!]
  const half = D / 2
  const f = computeType(x)
  const pos = o.add(o.cast(o.iota([S, half], 0), f), typeof offset === "number" ? offset : o.cast(offset, f))
  const freq =
    invFreq === undefined
      ? o.exp(o.mul(o.cast(o.iota([S, half], 1), f), (-2 / D) * Math.log(theta)))
      : frequencyRow(invFreq, half, f)
  const angle = o.concat([o.mul(pos, freq), o.mul(pos, freq)], 1)
  const [cos, sin] = [o.cast(o.cos(angle), x.dtype), o.cast(inverse ? o.neg(o.sin(angle)) : o.sin(angle), x.dtype)]
  const rotated = o.concat([o.neg(o.slice(x, -1, half, D)), o.slice(x, -1, 0, half)], -1)
  return o.add(o.mul(x, cos), o.mul(rotated, sin))
}

/** Given frequencies as a [1, half] constant (one fill per entry: the graph has no other constants). */
function frequencyRow(invFreq: readonly number[], half: number, dtype: Tensor["dtype"]): Tensor {
  if (invFreq.length !== half)
    throw new ShapeError({
      op: "rope",
      shapes: [[invFreq.length], [half]],
      message: `rope: ${invFreq.length} frequencies given for a head of ${2 * half} (it needs ${half})`,
    })
  return o.concat(
    invFreq.map((v) => o.full([1, 1], v, dtype)),
    1,
  )
}

// Routines for their backward rules only: no backend fuses them (so they are not in
// ./registry.ts), but as regions with a hand-written VJP they save one tensor for backward
// instead of every intermediate of their bodies (S×I for GeGLU, S×V for soft-capped logits).
/** How the GELU routine is seen as a region (no backend has a kernel for it). */
export const geluTanhRoutine = declareRoutine()("geluTanh", { inputs: ["x"], outputs: ["y"] })
/** How the soft-cap routine is seen as a region (no backend has a kernel for it). */
export const softcapRoutine = declareRoutine<{ cap: number }>()("softcap", { inputs: ["x"], outputs: ["y"] })

const GELU_C = Math.sqrt(2 / Math.PI)
const geluInner = (x: Tensor): Tensor => o.mul(o.add(x, o.mul(o.mul(o.square(x), x), 0.044715)), GELU_C)

/**
 * GELU with the tanh approximation (PyTorch's approximate="tanh", HF's gelu_pytorch_tanh):
 * ½x(1 + tanh(u)), u = √(2/π)(x + 0.044715x³). Gemma-2's MLP activation. Its backward,
 * ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²) with t = tanh(u), reads only x.
 */
export const geluTanh: (x: Tensor) => Tensor = routine(
  geluTanhRoutine,
  (x: Tensor) => o.mul(o.mul(x, 0.5), o.add(o.tanh(geluInner(x)), 1)),
  ([x], _out, [g]) => {
    const t = o.tanh(geluInner(x!))
    const du = o.mul(o.add(o.mul(o.square(x!), 3 * 0.044715), 1), GELU_C)
    const d = o.add(o.mul(o.add(t, 1), 0.5), o.mul(o.mul(o.mul(x!, 0.5), o.sub(1, o.square(t))), du))
    return [o.mul(g!, d)]
  },
)

/**
 * Soft-capping, cap·tanh(x / cap) (Gemma-2's final_logit_softcapping). Its backward,
 * g·(1 − (y / cap)²), reads only the output.
 */
export const softcap = (x: Tensor, cap: number): Tensor =>
  routine(
    softcapRoutine,
    (a: Tensor) => o.mul(o.tanh(o.div(a, cap)), cap),
    (_in, [y], [g]) => [o.mul(g!, o.sub(1, o.square(o.div(y!, cap))))],
    { cap },
    "outputs",
  )(x)

/** How Gemma's RMSNorm is seen as a region (no backend has a kernel for it). */
export const rmsNormPlusOneRoutine = declareRoutine<NormAttrs>()("rmsNormPlusOne", {
  inputs: ["x", "w"],
  outputs: ["y"],
})

/**
 * Gemma's RMSNorm: x / √(mean(x²) + eps) · (1 + weight), all in at least float32 and cast back
 * at the end, as Hugging Face's Gemma2RMSNorm does (Llama's casts before the weight). The
 * weights are stored as offsets from 1, so zeros are the identity. A routine so that its
 * backward (the VJP of this body) recomputes from x and keeps only x and the weight.
 */
export const rmsNormPlusOne = (x: Tensor, weight: Tensor, eps = 1e-6): Tensor =>
  routine(
    rmsNormPlusOneRoutine,
    (a: Tensor, w: Tensor) => {
      const f = computeType(a)
      const h = o.cast(a, f)
      const inv = o.rsqrt(o.add(o.mean(o.square(h), -1, true), eps))
      return o.cast(o.mul(o.mul(h, inv), o.add(o.cast(w, f), 1)), a.dtype)
    },
    undefined,
    { eps },
  )(x, weight)

/**
 * RoPE as the routine "rope", for a backend that fuses it: one pass instead of the slices,
 * concatenation and products. Its backward, the routine "rope.vjp", is the inverse rotation of
 * the cotangent alone (the map is linear), so nothing of the forward is kept for it.
 */
export function fusedRope(x: Tensor, theta = 10000, offset = 0, invFreq?: readonly number[]): Tensor {
  const params = { theta, offset, ...(invFreq && { invFreq }) }
  const inverse: CustomVjp = (_in, _out, [g]) => [rope(g!, theta, offset, true, invFreq)]
  return routine(ropeRoutine, (a: Tensor) => rope(a, theta, offset, false, invFreq), inverse, params, "cotangents")(x)
}
