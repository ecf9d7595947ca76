/**
 * Fused CUDA kernels for named routines (their names, inputs and outputs are declared in
 * src/core/routines/registry.ts, which also checks each call's buffers against its shapes): the
 * executor runs one of these instead of a routine's reference body. Each must agree with that
 * body, and test/cuda-fused.test.ts compares them with the CPU backend in float64. Kernels (native/kernels):
 * crossEntropy, logsumexp: softmax.cu; silu, siluMul: activation.cu; rope: rope.cu; rmsNorm: norm.cu;
 * adamw: optimizer.cu; sumOfSquares (the gradient norm's part): reduce.cu; attention: attention.cu,
 * attention_mma.cu, attention_backward.cu, attention_mma_backward.cu (and each one's .vjp beside it).
 *
 * float32 and bfloat16 compute in float32, float64 in float64; results are rounded once (the
 * reference bodies round every intermediate to the dtype, so bfloat16 results differ from them
 * by bfloat16 rounding). Attention's lse (and dLse) is in that compute dtype, not rounded to
 * bfloat16. A cotangent whose dtype differs from its output's is cast to it first, as the
 * reference VJP does (into scratch this module allocates and frees: the executor does not
 * count it). Attention is causal only, head dims up to 256. bfloat16 with a head dim that is a
 * multiple of 16 up to 128 runs on tensor cores (mma.sync, the *_mma.cu kernels; on an NVIDIA
 * H200 at B = 1, H = 32, Hkv = 8, S = 8192: forward 235 TFLOP/s at D = 64 and 213 at D = 128,
 * backward 146 and 152; docs/cuda.md); float32, float64 and other head dims run on SIMT kernels
 * (no tensor cores, 9–24 TFLOP/s).
 */
import type { Buffer } from "../../core/backend.js"
import { numel } from "../../core/backend.js"
import { accumulatorDType, bytesPerElement, isFloat, type DType } from "../../core/dtype.js"
import { fmtShape as fmt } from "../../core/errors.js"
import { describe, kernelChecks } from "../../core/kernel-checks.js"
import type { ropeRoutine } from "../../core/routines/basic.js"
import type { AttrsOf } from "../../core/routines/declare.js"
import type { RoutineKernels } from "../../core/routines/registry.js"
import { cudaHostOptimizer } from "./allocator.js"
import { allocating, dtypeCode, type NativeDevice } from "./native.js"

/** The most pairs a scaled RoPE's table may have (native/kernels/kernels.h, kRopeMaxPairs). */
const ropeMaxPairs = 128

/** What the routines need from the backend that owns them. */
export interface FusedContext {
  readonly dev: NativeDevice
  /** The addon handle of a live buffer of this backend. */
  handle(b: Buffer): number
}

type Shape = readonly number[]
/** The attributes the rope routine declares (theta, offset, a scaled RoPE's invFreq). */
type RopeAttrs = AttrsOf<typeof ropeRoutine>
const list = (bufs: readonly Buffer[]): string => bufs.map(describe).join(", ")
const shapeList = (shapes: readonly Shape[]): string => shapes.map(fmt).join(", ")
const unlikeInputs = (outs: readonly Buffer[]): string => `outputs must match w, m, v (and master), got ${list(outs)}`

const { check, fail } = kernelChecks("cuda", ["float32", "float64", "bfloat16"])

const sameShape = (a: Shape | undefined, b: Shape | undefined): boolean =>
  a !== undefined && b !== undefined && a.length === b.length && a.every((d, i) => d === b[i])

function floatDType(kernel: string, dtype: DType, ...bufs: Buffer[]): void {
  check(isFloat(dtype), kernel, () => `unsupported dtype ${dtype} (float32, float64 or bfloat16 only)`)
  for (const b of bufs)
    check(b.dtype === dtype, kernel, () => `operands must be ${dtype}, got ${bufs.map(describe).join(", ")}`)
}

/** rows × V of a [..., V] shape (a scalar is one row of one). */
const rowsOf = (shape: Shape): [number, number] => [numel(shape.slice(0, -1)), shape.at(-1) ?? 1]

/** B, H, Hkv, S, D from q's and k's shapes, checked as the routine checks them. */
type Dims = [B: number, H: number, Hkv: number, S: number, D: number]
function attentionDims(kernel: string, qs: Shape, ks: Shape, vs: Shape, causal: boolean): Dims {
  check(causal, kernel, () => "only causal attention has a fused kernel")
  check(
    qs.length === 4 && sameShape(ks, vs) && ks.length === 4,
    kernel,
    () => `q must be [B, H, S, D] and k, v [B, Hkv, S, D], got ${fmt(qs)}, ${fmt(ks)}, ${fmt(vs)}`,
  )
  const [B, H, S, D] = qs as [number, number, number, number]
  const Hkv = ks[1]!
  check(
    ks[0] === B && ks[2] === S && ks[3] === D && Hkv > 0 && H % Hkv === 0,
    kernel,
    () => `k, v ${fmt(ks)} do not match q ${fmt(qs)} (H a multiple of Hkv)`,
  )
  check(D <= 256, kernel, () => `head dim ${D} exceeds 256, the largest the fused kernel supports`)
  return [B, H, Hkv, S, D]
}

/** Rows and width of an RMSNorm: x [..., d] with weight [d], both of x's dtype. */
function normDims(
  kernel: string,
  xs: Shape,
  ws: Shape,
  x: Buffer,
  w: Buffer,
  ...more: Buffer[]
): [rows: number, d: number] {
  const d = ws[0] ?? 0
  check(
    ws.length === 1 && xs.at(-1) === d && d > 0,
    kernel,
    () => `x must be [..., d] and w [d], got ${fmt(xs)}, ${fmt(ws)}`,
  )
  floatDType(kernel, x.dtype, x, w, ...more)
  return [x.size / d, d]
}

/** Attention's lse is in q's accumulator dtype (float32 for bfloat16), as the routine declares. */
const lseDType = (kernel: string, q: Buffer, lse: Buffer): void =>
  check(
    lse.dtype === accumulatorDType(q.dtype),
    kernel,
    () => `lse ${describe(lse)} must be ${accumulatorDType(q.dtype)} for ${q.dtype} q`,
  )

const targetsInt32 = (kernel: string, targets: Buffer): void =>
  check(targets.dtype === "int32", kernel, () => `targets must be int32, got ${targets.dtype}`)

export function cudaRoutines(ctx: FusedContext): RoutineKernels {
  const { dev } = ctx
  const h = ctx.handle
  const code = (d: DType): number => dtypeCode[d]

  /** Device scratch the routine frees itself once its kernels are enqueued (one stream: safe). */
  function scratch(kernel: string, dtype: DType, size: number): number {
    const bytes = size * bytesPerElement[dtype]
    return allocating(bytes, () => dev.alloc(bytes), `cuda.${kernel}: `)
  }

  /**
   * b's handle, or that of a copy cast to `dtype` when b has another dtype (a cotangent wider or
   * narrower than its output, cast in as the reference VJP casts it).
   */
  function as(kernel: string, b: Buffer, dtype: DType, temps: number[]): number {
    if (b.dtype === dtype) return h(b)
    check(isFloat(b.dtype), kernel, () => `a cotangent must be a float, got ${describe(b)}`)
    const t = scratch(kernel, dtype, b.size)
    temps.push(t)
    dev.cast(code(b.dtype), code(dtype), h(b), t, b.size)
    return t
  }

  /** Runs the body, then frees the scratch it took (after enqueueing, so later work reuses it). */
  function withTemps(f: (temps: number[]) => void): void {
    const temps: number[] = []
    try {
      f(temps)
    } finally {
      for (const t of temps) dev.free(t)
    }
  }

  /** RoPE forward (inverse false) or its VJP (true): x or dY [..., S, D] in, y or dX out. */
  function rope(k: string, x: Buffer, y: Buffer, shape: Shape, attrs: RopeAttrs, inverse: boolean) {
    const { theta, offset, invFreq } = attrs
    const [S, D] = [shape.at(-2) ?? 0, shape.at(-1) ?? 0]
    check(shape.length >= 2 && D % 2 === 0 && D > 0, k, () => `x must be [..., S, D] with D even, got ${fmt(shape)}`)
    check(
      invFreq === undefined || (invFreq.length === D / 2 && D / 2 <= ropeMaxPairs),
      k,
      () => `a scaled RoPE needs D/2 = ${D / 2} frequencies (D ≤ ${2 * ropeMaxPairs}), got ${invFreq?.length}`,
    )
    const frequencies = invFreq && Float64Array.from(invFreq)
    check(
      isFloat(y.dtype) && x.size === y.size,
      k,
      () => `x ${describe(x)} and y ${describe(y)} must be floats of one size`,
    )
    withTemps((temps) =>
      dev.rope(
        code(y.dtype),
        as(k, x, y.dtype, temps),
        h(y),
        y.size / (S * D),
        S,
        D,
        theta,
        offset,
        inverse,
        frequencies,
      ),
    )
  }

  return {
    crossEntropy({ inputs: { logits, targets }, outputs: { nll }, shapes: { inputs: s }, attrs }) {
      const k = "crossEntropy"
      const [N, V] = s.logits as [number, number]
      check(
        s.logits.length === 2 && sameShape(s.targets, [N]),
        k,
        () => `logits must be [N, V] and targets [N], got ${fmt(s.logits)}, ${fmt(s.targets)}`,
      )
      targetsInt32(k, targets)
      floatDType(k, logits.dtype, logits, nll)
      dev.crossEntropy(code(logits.dtype), h(logits), h(targets), h(nll), N, V, attrs.ignoreIndex)
    },

    "crossEntropy.vjp"({ inputs: { logits, targets, dNll }, outputs: { dLogits }, shapes: { inputs: s }, attrs }) {
      const k = "crossEntropy.vjp"
      const [N, V] = s.logits as [number, number]
      check(
        s.logits.length === 2 && sameShape(s.targets, [N]) && dNll.size === N,
        k,
        () => `logits must be [N, V], targets and dNll [N], got ${shapeList([s.logits, s.targets, s.dNll])}`,
      )
      targetsInt32(k, targets)
      floatDType(k, logits.dtype, logits, dLogits)
      withTemps((temps) => {
        const g = as(k, dNll, logits.dtype, temps)
        const ignore = attrs.ignoreIndex
        dev.crossEntropyBackward(code(logits.dtype), h(logits), h(targets), g, h(dLogits), N, V, ignore)
      })
    },

    logsumexp({ inputs: { x }, outputs: { lse }, shapes }) {
      const k = "logsumexp"
      floatDType(k, x.dtype, x, lse)
      const [rows, V] = rowsOf(shapes.inputs.x)
      check(lse.size === rows, k, () => `lse ${describe(lse)} must hold one value per row (${rows})`)
      dev.logsumexp(code(x.dtype), h(x), h(lse), rows, V)
    },

    "logsumexp.vjp"({ inputs: { x, lse, dLse }, outputs: { dX }, shapes }) {
      const k = "logsumexp.vjp"
      floatDType(k, x.dtype, x, dX)
      const [rows, V] = rowsOf(shapes.inputs.x)
      check(
        lse.size === rows && dLse.size === rows,
        k,
        () => `lse and dLse must hold one value per row (${rows}), got ${describe(lse)}, ${describe(dLse)}`,
      )
      withTemps((temps) => {
        const [hl, hg] = [as(k, lse, x.dtype, temps), as(k, dLse, x.dtype, temps)]
        dev.logsumexpBackward(code(x.dtype), h(x), hl, hg, h(dX), rows, V)
      })
    },

    silu({ inputs: { x }, outputs: { y } }) {
      const k = "silu"
      floatDType(k, x.dtype, x, y)
      check(y.size === x.size, k, () => `y ${describe(y)} must be x's size (${x.size})`)
      dev.silu(code(x.dtype), h(x), h(y), x.size)
    },

    "silu.vjp"({ inputs: { x, dY }, outputs: { dX } }) {
      const k = "silu.vjp"
      floatDType(k, x.dtype, x, dX)
      check(
        dY.size === x.size && dX.size === x.size,
        k,
        () => `dY and dX must be x's size (${x.size}), got ${describe(dY)}, ${describe(dX)}`,
      )
      withTemps((temps) => dev.siluBackward(code(x.dtype), h(x), as(k, dY, x.dtype, temps), h(dX), x.size))
    },

    rope: ({ inputs: { x }, outputs: { y }, shapes, attrs }) => rope("rope", x, y, shapes.outputs.y, attrs, false),
    "rope.vjp": ({ inputs: { dY }, outputs: { dX }, shapes, attrs }) =>
      rope("rope.vjp", dY, dX, shapes.outputs.dX, attrs, true),

    siluMul({ inputs: { a, b }, outputs: { y } }) {
      const k = "siluMul"
      floatDType(k, a.dtype, a, b, y)
      check(
        b.size === a.size && y.size === a.size,
        k,
        () => `a, b and y must have one size, got ${[a, b, y].map(describe).join(", ")}`,
      )
      dev.siluMul(code(a.dtype), h(a), h(b), h(y), a.size)
    },

    "siluMul.vjp"({ inputs: { a, b, dY }, outputs: { dA, dB } }) {
      const k = "siluMul.vjp"
      floatDType(k, a.dtype, a, b, dA, dB)
      check(
        [b, dY, dA, dB].every((x) => x.size === a.size),
        k,
        () => `every operand must be a's size (${a.size})`,
      )
      withTemps((temps) =>
        dev.siluMulBackward(code(a.dtype), h(a), h(b), as(k, dY, a.dtype, temps), h(dA), h(dB), a.size),
      )
    },

    rmsNorm({ inputs: { x, w }, outputs: { y }, shapes: { inputs: s }, attrs }) {
      const [rows, d] = normDims("rmsNorm", s.x, s.w, x, w, y)
      dev.rmsNorm(code(x.dtype), h(x), h(w), h(y), rows, d, attrs.eps)
    },

    "rmsNorm.vjp"({ inputs: { x, w, dY }, outputs: { dX, dW }, shapes: { inputs: s }, attrs }) {
      const k = "rmsNorm.vjp"
      const [rows, d] = normDims(k, s.x, s.w, x, w, dX, dW)
      check(dY.size === x.size, k, () => `dY ${describe(dY)} must be x's size (${x.size})`)
      withTemps((temps) =>
        dev.rmsNormBackward(code(x.dtype), h(x), h(w), as(k, dY, x.dtype, temps), h(dX), h(dW), rows, d, attrs.eps),
      )
    },

    /** One parameter's AdamW update; the executor hands it outputs that alias their inputs. */
    adamw({ inputs, outputs, attrs }) {
      const k = "adamw"
      const { w, g, m, v, lr, correction1, correction2, clip, master } = inputs
      const storage = (b: Buffer) => b.dtype === "float32" || b.dtype === "bfloat16"
      check(
        [w, g, m, v].every((b) => storage(b) && b.size === w.size),
        k,
        () => `w, g, m, v must be float32 or bfloat16 of one size, got ${list([w, g, m, v])}`,
      )
      check(
        [lr, correction1, correction2, clip].every((b) => b.dtype === "float32" && b.size === 1),
        k,
        () => "lr, the corrections and clip must be float32 scalars",
      )
      check(
        master === undefined || (master.dtype === "float32" && master.size === w.size),
        k,
        () => `master weights must be float32 [${w.size}]`,
      )
      check(
        (master === undefined) === (outputs.master === undefined),
        k,
        () => "master weights go in and come out together",
      )
      // The kernel updates in place: each output must be its input's buffer, or first get a copy of it.
      const pairs: [Buffer, Buffer | undefined][] = [
        [w, outputs.w],
        [m, outputs.m],
        [v, outputs.v],
      ]
      if (master) pairs.push([master, outputs.master])
      for (const [input, out] of pairs) {
        if (out === undefined || out.dtype !== input.dtype) return fail(k, unlikeInputs(Object.values(outputs)))
        const c = code(input.dtype)
        if (out !== input) dev.cast(c, c, h(input), h(out), input.size) // a plain copy
      }
      const hm = (b: Buffer | undefined) => (b === undefined ? 0 : h(b))
      const { beta1, beta2, eps, weightDecay } = attrs
      // With its state offloaded (`--offload optimizer`) the update may run where the state is.
      const state = [g, outputs.m, outputs.v, outputs.master]
      const onHost = cudaHostOptimizer() && state.every((b) => b === undefined || b.tier === "host")
      dev.adamw(
        code(w.dtype),
        code(g.dtype),
        code(m.dtype),
        h(outputs.w),
        h(g),
        h(outputs.m),
        h(outputs.v),
        hm(outputs.master),
        h(lr),
        h(correction1),
        h(correction2),
        h(clip),
        beta1,
        beta2,
        eps,
        weightDecay,
        w.size,
        onHost ? 1 : 0,
      )
    },

    /** The gradient norm's Σ g² for one parameter (a vector or a matrix), in one read of it. */
    sumOfSquares({ inputs: { x }, outputs: { y }, shapes: { inputs: s } }) {
      const k = "sumOfSquares"
      const shape = s.x
      check(
        shape.length === 1 || shape.length === 2,
        k,
        () => `x must be a vector or a matrix, got [${shape.join(", ")}]`,
      )
      check(y.dtype === "float32" && y.size === 1, k, () => `y must be one float32, got ${describe(y)}`)
      const [rows, cols] = shape.length === 1 ? [1, shape[0]!] : [shape[0]!, shape[1]!]
      dev.sumOfSquares(code(x.dtype), h(x), h(y), rows, cols)
    },

    attention({ inputs: { q, k: kk, v }, outputs: { o, lse }, shapes: { inputs: s }, attrs }) {
      const k = "attention"
      const [B, H, Hkv, S, D] = attentionDims(k, s.q, s.k, s.v, attrs.causal)
      floatDType(k, q.dtype, q, kk, v, o)
      lseDType(k, q, lse)
      dev.attention(code(q.dtype), h(q), h(kk), h(v), h(o), h(lse), B, H, Hkv, S, D)
    },

    /** The cotangents that flow: dO and dLse, or one of them (a missing dO is zeros). */
    "attention.vjp"({
      inputs: { q, k: kk, v, o, lse, dO, dLse },
      outputs: { dQ, dK, dV },
      shapes: { inputs: s },
      attrs,
    }) {
      const k = "attention.vjp"
      const [B, H, Hkv, S, D] = attentionDims(k, s.q, s.k, s.v, attrs.causal)
      floatDType(k, q.dtype, q, kk, v, o, dQ, dK, dV)
      lseDType(k, q, lse)
      check(dO === undefined || dO.size === q.size, k, () => `dO ${describe(dO!)} must have o's size ${q.size}`)
      check(
        dLse === undefined || dLse.size === B * H * S,
        k,
        () => `dLse ${describe(dLse!)} must have lse's size ${B * H * S}`,
      )
      withTemps((temps) => {
        let hdO: number
        if (dO !== undefined) hdO = as(k, dO, q.dtype, temps)
        else {
          hdO = scratch(k, q.dtype, q.size)
          temps.push(hdO)
          dev.fill(hdO, code(q.dtype), q.size, 0)
        }
        const hdLse = dLse === undefined ? 0 : as(k, dLse, lse.dtype, temps)
        dev.attentionBackward(
          code(q.dtype),
          h(q),
          h(kk),
          h(v),
          h(o),
          h(lse),
          hdO,
          hdLse,
          h(dQ),
          h(dK),
          h(dV),
          B,
          H,
          Hkv,
          S,
          D,
        )
      })
    },
  }
}
