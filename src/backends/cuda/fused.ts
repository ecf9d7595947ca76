/**
 * Fused CUDA kernels for named routines (src/core/routines): the executor runs one of these
 * instead of a routine's reference body (see `runRegion`). Each must agree with that body, and
 * test/cuda.test.ts compares them with the CPU backend in float64.
 *
 * | routine              | inputs → outputs                                              | kernel            |
 * | -------------------- | ------------------------------------------------------------- | ----------------- |
 * | crossEntropy         | logits [N, V], targets int32 [N] → nll [N]                     | softmax.cu        |
 * | crossEntropy.vjp     | logits, targets, nll, dnll → dlogits                          | softmax.cu        |
 * | logsumexp            | x [..., V] → lse [..., 1]                                     | softmax.cu        |
 * | logsumexp.vjp        | x, lse, g → dx                                                | softmax.cu        |
 * | silu                 | x → y                                                         | activation.cu     |
 * | silu.vjp             | x, y, g → dx                                                  | activation.cu     |
 * | rope                 | x [..., S, D] → y                                             | rope.cu           |
 * | rope.vjp             | g → dx (the inverse rotation; nothing of the forward)         | rope.cu           |
 * | siluMul              | a, b → silu(a)·b                                              | activation.cu     |
 * | siluMul.vjp          | a, b, g → da, db                                              | activation.cu     |
 * | rmsNorm              | x [..., d], w [d] → y                                         | norm.cu           |
 * | rmsNorm.vjp          | x, w, g → dx, dw                                              | norm.cu           |
 * | adamw                | w, g, m, v, lr, 1−β₁ᵗ, 1−β₂ᵗ, clip (, master) → w, m, v (, master) | optimizer.cu |
 * | attention            | q [B, H, S, D], k, v [B, Hkv, S, D] → o, lse [B, H, S, 1] (fp32 for bf16) | attention.cu, attention_mma.cu |
 * | attention.vjp        | q, k, v, o, lse, dO (, dLse) → dq, dk, dv                     | attention_backward.cu, attention_mma_backward.cu |
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
import type { Buffer, FusedRoutine } from "../../core/backend.js"
import { accumulatorDType, bytesPerElement, isFloat, type DType } from "../../core/dtype.js"
import { OutOfMemory } from "../../core/errors.js"
import { dtypeCode, type NativeDevice, type NativeError } from "./native.js"

/** What the routines need from the backend that owns them. */
export interface FusedContext {
  readonly dev: NativeDevice
  /** The addon handle of a live buffer of this backend; throws naming `kernel` otherwise. */
  handle(kernel: string, b: Buffer): number
}

type Shapes = Parameters<FusedRoutine>[2]

function fail(kernel: string, message: string): never {
  throw new Error(`cuda.${kernel}: ${message}`)
}

function check(cond: boolean, kernel: string, message: () => string): void {
  if (!cond) fail(kernel, message())
}

const describe = (b: Buffer): string => `${b.dtype}[${b.size}]`
const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1)
const fmt = (shape: readonly number[] | undefined): string => `[${(shape ?? []).join(", ")}]`
const sameShape = (a: readonly number[] | undefined, b: readonly number[] | undefined): boolean =>
  a !== undefined && b !== undefined && a.length === b.length && a.every((d, i) => d === b[i])

function arity(kernel: string, inputs: readonly Buffer[], outputs: readonly Buffer[], shapes: Shapes, nIn: readonly number[], nOut: number): void {
  check(nIn.includes(inputs.length) && shapes.inputs.length === inputs.length, kernel,
    () => `takes ${nIn.join(" or ")} inputs, got ${inputs.length} (and ${shapes.inputs.length} input shapes)`)
  check(outputs.length === nOut && shapes.outputs.length === nOut, kernel, () => `writes ${nOut} outputs, got ${outputs.length}`)
  inputs.forEach((b, i) => check(b.size === numel(shapes.inputs[i]!), kernel, () => `input ${i} ${describe(b)} does not hold shape ${fmt(shapes.inputs[i])}`))
  outputs.forEach((b, i) => check(b.size === numel(shapes.outputs[i]!), kernel, () => `output ${i} ${describe(b)} does not hold shape ${fmt(shapes.outputs[i])}`))
}

function floatDType(kernel: string, dtype: DType, ...bufs: Buffer[]): void {
  check(isFloat(dtype), kernel, () => `unsupported dtype ${dtype} (float32, float64 or bfloat16 only)`)
  for (const b of bufs) check(b.dtype === dtype, kernel, () => `operands must be ${dtype}, got ${bufs.map(describe).join(", ")}`)
}

/** A targets-style ignore index from the region's params (the routine's default otherwise). */
function ignoreIndex(params: Readonly<Record<string, number | boolean | string>>): number {
  const v = params.ignoreIndex
  return typeof v === "number" ? v : -100
}

export function cudaRoutines(ctx: FusedContext): Readonly<Record<string, FusedRoutine>> {
  const { dev } = ctx
  const code = (d: DType): number => dtypeCode[d]

  /** Device scratch the routine frees itself once its kernels are enqueued (one stream: safe). */
  function scratch(kernel: string, dtype: DType, size: number): number {
    try {
      return dev.alloc(size * bytesPerElement[dtype])
    } catch (e) {
      const err = e as NativeError
      if (err.code !== "ERR_CUDA_OOM") throw e
      throw new OutOfMemory({ requested: err.requested ?? size * bytesPerElement[dtype], alive: err.alive ?? 0, limit: err.total ?? 0,
        message: `cuda.${kernel}: ${err.message}` })
    }
  }

  /**
   * Runs `f` with b's handle, or with a copy cast to `dtype` when b has another dtype (a cotangent
   * wider or narrower than its output, cast in as the reference VJP casts it).
   */
  function as(kernel: string, b: Buffer, dtype: DType, temps: number[]): number {
    const h = ctx.handle(kernel, b)
    if (b.dtype === dtype) return h
    check(isFloat(b.dtype), kernel, () => `a cotangent must be a float, got ${describe(b)}`)
    const t = scratch(kernel, dtype, b.size)
    temps.push(t)
    dev.cast(code(b.dtype), code(dtype), h, t, b.size)
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

  const crossEntropy: FusedRoutine = (inputs, outputs, shapes, params) => {
    const k = "crossEntropy"
    arity(k, inputs, outputs, shapes, [2], 1)
    const [logits, targets] = inputs as [Buffer, Buffer]
    const [nll] = outputs as [Buffer]
    const [N, V] = shapes.inputs[0] as [number, number]
    check(shapes.inputs[0]!.length === 2 && sameShape(shapes.inputs[1], [N]), k, () => `logits must be [N, V] and targets [N], got ${fmt(shapes.inputs[0])}, ${fmt(shapes.inputs[1])}`)
    check(targets.dtype === "int32", k, () => `targets must be int32, got ${targets.dtype}`)
    floatDType(k, logits.dtype, logits, nll)
    dev.crossEntropy(code(logits.dtype), ctx.handle(k, logits), ctx.handle(k, targets), ctx.handle(k, nll), N, V, ignoreIndex(params))
  }

  const crossEntropyVjp: FusedRoutine = (inputs, outputs, shapes, params) => {
    const k = "crossEntropy.vjp"
    arity(k, inputs, outputs, shapes, [4], 1)
    const [logits, targets, , dnll] = inputs as [Buffer, Buffer, Buffer, Buffer]
    const [dlogits] = outputs as [Buffer]
    const [N, V] = shapes.inputs[0] as [number, number]
    check(shapes.inputs[0]!.length === 2 && sameShape(shapes.inputs[1], [N]) && dnll.size === N, k,
      () => `logits must be [N, V], targets and dnll [N], got ${fmt(shapes.inputs[0])}, ${fmt(shapes.inputs[1])}, ${fmt(shapes.inputs[3])}`)
    check(targets.dtype === "int32", k, () => `targets must be int32, got ${targets.dtype}`)
    floatDType(k, logits.dtype, logits, dlogits)
    withTemps((temps) => {
      const g = as(k, dnll, logits.dtype, temps)
      dev.crossEntropyBackward(code(logits.dtype), ctx.handle(k, logits), ctx.handle(k, targets), g, ctx.handle(k, dlogits), N, V, ignoreIndex(params))
    })
  }

  /** rows × V of a [..., V] shape (a scalar is one row of one). */
  const rowsOf = (shape: readonly number[]): [number, number] => {
    const V = shape.at(-1) ?? 1
    return [numel(shape.slice(0, -1)), V]
  }

  const logsumexp: FusedRoutine = (inputs, outputs, shapes) => {
    const k = "logsumexp"
    arity(k, inputs, outputs, shapes, [1], 1)
    const [x] = inputs as [Buffer]
    const [lse] = outputs as [Buffer]
    floatDType(k, x.dtype, x, lse)
    const [rows, V] = rowsOf(shapes.inputs[0]!)
    check(lse.size === rows, k, () => `lse ${describe(lse)} must hold one value per row (${rows})`)
    dev.logsumexp(code(x.dtype), ctx.handle(k, x), ctx.handle(k, lse), rows, V)
  }

  const logsumexpVjp: FusedRoutine = (inputs, outputs, shapes) => {
    const k = "logsumexp.vjp"
    arity(k, inputs, outputs, shapes, [3], 1)
    const [x, lse, g] = inputs as [Buffer, Buffer, Buffer]
    const [dx] = outputs as [Buffer]
    floatDType(k, x.dtype, x, dx)
    const [rows, V] = rowsOf(shapes.inputs[0]!)
    check(lse.size === rows && g.size === rows, k, () => `lse and g must hold one value per row (${rows}), got ${describe(lse)}, ${describe(g)}`)
    withTemps((temps) => {
      dev.logsumexpBackward(code(x.dtype), ctx.handle(k, x), as(k, lse, x.dtype, temps), as(k, g, x.dtype, temps), ctx.handle(k, dx), rows, V)
    })
  }

  const silu: FusedRoutine = (inputs, outputs, shapes) => {
    const k = "silu"
    arity(k, inputs, outputs, shapes, [1], 1)
    const [x] = inputs as [Buffer]
    const [y] = outputs as [Buffer]
    floatDType(k, x.dtype, x, y)
    check(y.size === x.size, k, () => `y ${describe(y)} must be x's size (${x.size})`)
    dev.silu(code(x.dtype), ctx.handle(k, x), ctx.handle(k, y), x.size)
  }

  const siluVjp: FusedRoutine = (inputs, outputs, shapes) => {
    const k = "silu.vjp"
    arity(k, inputs, outputs, shapes, [3], 1)
    const [x, , g] = inputs as [Buffer, Buffer, Buffer]
    const [dx] = outputs as [Buffer]
    floatDType(k, x.dtype, x, dx)
    check(g.size === x.size && dx.size === x.size, k, () => `g and dx must be x's size (${x.size}), got ${describe(g)}, ${describe(dx)}`)
    withTemps((temps) => dev.siluBackward(code(x.dtype), ctx.handle(k, x), as(k, g, x.dtype, temps), ctx.handle(k, dx), x.size))
  }

  /** RoPE forward (inverse false) or its VJP (true): x or g [..., S, D] in, y or dx out. */
  const rope = (inverse: boolean): FusedRoutine => (inputs, outputs, shapes, params) => {
    const k = inverse ? "rope.vjp" : "rope"
    arity(k, inputs, outputs, shapes, [1], 1)
    const [x] = inputs as [Buffer]
    const [y] = outputs as [Buffer]
    const shape = shapes.outputs[0]!
    const [S, D] = [shape.at(-2) ?? 0, shape.at(-1) ?? 0]
    check(shape.length >= 2 && D % 2 === 0 && D > 0, k, () => `x must be [..., S, D] with D even, got ${fmt(shape)}`)
    check(isFloat(y.dtype) && x.size === y.size, k, () => `x ${describe(x)} and y ${describe(y)} must be floats of one size`)
    withTemps((temps) => dev.rope(code(y.dtype), as(k, x, y.dtype, temps), ctx.handle(k, y), y.size / (S * D), S, D, Number(params.theta), Number(params.offset), inverse))
  }

  const siluMul: FusedRoutine = (inputs, outputs, shapes) => {
    const k = "siluMul"
    arity(k, inputs, outputs, shapes, [2], 1)
    const [a, b] = inputs as [Buffer, Buffer]
    const [y] = outputs as [Buffer]
    floatDType(k, a.dtype, a, b, y)
    check(b.size === a.size && y.size === a.size, k, () => `a, b and y must have one size, got ${[a, b, y].map(describe).join(", ")}`)
    dev.siluMul(code(a.dtype), ctx.handle(k, a), ctx.handle(k, b), ctx.handle(k, y), a.size)
  }

  const siluMulVjp: FusedRoutine = (inputs, outputs, shapes) => {
    const k = "siluMul.vjp"
    arity(k, inputs, outputs, shapes, [3], 2)
    const [a, b, g] = inputs as [Buffer, Buffer, Buffer]
    const [da, db] = outputs as [Buffer, Buffer]
    floatDType(k, a.dtype, a, b, da, db)
    check([b, g, da, db].every((x) => x.size === a.size), k, () => `every operand must be a's size (${a.size})`)
    withTemps((temps) => dev.siluMulBackward(code(a.dtype), ctx.handle(k, a), ctx.handle(k, b), as(k, g, a.dtype, temps), ctx.handle(k, da), ctx.handle(k, db), a.size))
  }

  /** Rows and width of an RMSNorm: x [..., d] with weight [d], both of x's dtype. */
  function normDims(kernel: string, shapes: Shapes, x: Buffer, w: Buffer, ...more: Buffer[]): [number, number] {
    const [xs, ws] = shapes.inputs
    const d = ws?.[0] ?? 0
    check(ws?.length === 1 && xs !== undefined && xs.at(-1) === d && d > 0, kernel, () => `x must be [..., d] and w [d], got ${fmt(xs)}, ${fmt(ws)}`)
    floatDType(kernel, x.dtype, x, w, ...more)
    return [x.size / d, d]
  }

  const rmsNorm: FusedRoutine = (inputs, outputs, shapes, params) => {
    const k = "rmsNorm"
    arity(k, inputs, outputs, shapes, [2], 1)
    const [x, w] = inputs as [Buffer, Buffer]
    const [y] = outputs as [Buffer]
    const [rows, d] = normDims(k, shapes, x, w, y)
    dev.rmsNorm(code(x.dtype), ctx.handle(k, x), ctx.handle(k, w), ctx.handle(k, y), rows, d, Number(params.eps))
  }

  const rmsNormVjp: FusedRoutine = (inputs, outputs, shapes, params) => {
    const k = "rmsNorm.vjp"
    arity(k, inputs, outputs, shapes, [3], 2)
    const [x, w, g] = inputs as [Buffer, Buffer, Buffer]
    const [dx, dw] = outputs as [Buffer, Buffer]
    const [rows, d] = normDims(k, shapes, x, w, dx, dw)
    check(g.size === x.size, k, () => `g ${describe(g)} must be x's size (${x.size})`)
    withTemps((temps) => dev.rmsNormBackward(code(x.dtype), ctx.handle(k, x), ctx.handle(k, w), as(k, g, x.dtype, temps), ctx.handle(k, dx), ctx.handle(k, dw), rows, d, Number(params.eps)))
  }

  /** One parameter's AdamW update (src/models/optimizer.ts); the executor hands it outputs that alias their inputs. */
  const adamw: FusedRoutine = (inputs, outputs, shapes, params) => {
    const k = "adamw"
    arity(k, inputs, outputs, shapes, [8, 9], inputs.length - 5)
    const [w, g, m, v, lr, c1, c2, clip, master] = inputs as Buffer[]
    const [wOut, mOut, vOut, masterOut] = outputs as Buffer[]
    const storage = (b: Buffer) => b.dtype === "float32" || b.dtype === "bfloat16"
    check([w, g, m, v].every((b) => storage(b!) && b!.size === w!.size), k, () => `w, g, m, v must be float32 or bfloat16 of one size, got ${[w, g, m, v].map((b) => describe(b!)).join(", ")}`)
    check([lr, c1, c2, clip].every((b) => b!.dtype === "float32" && b!.size === 1), k, () => "lr, the corrections and clip must be float32 scalars")
    check(master === undefined || (master.dtype === "float32" && master.size === w!.size), k, () => `master weights must be float32 [${w!.size}]`)
    // The kernel updates in place: each output must be its input's buffer, or first get a copy of it.
    const pairs: [Buffer, Buffer | undefined][] = [[w!, wOut], [m!, mOut], [v!, vOut], ...(master ? [[master, masterOut] as [Buffer, Buffer | undefined]] : [])]
    for (const [input, out] of pairs) {
      if (out === undefined || out.dtype !== input.dtype || out.size !== input.size) fail(k, `outputs must match w, m, v (and master), got ${outputs.map(describe).join(", ")}`)
      if (out !== input) dev.cast(code(input.dtype), code(input.dtype), ctx.handle(k, input), ctx.handle(k, out), input.size) // a plain copy
    }
    const h = (b: Buffer | undefined) => (b === undefined ? 0 : ctx.handle(k, b))
    dev.adamw(code(w!.dtype), code(g!.dtype), code(m!.dtype), h(wOut), h(g), h(mOut), h(vOut), h(masterOut), h(lr), h(c1), h(c2), h(clip),
      Number(params.beta1), Number(params.beta2), Number(params.eps), Number(params.weightDecay), w!.size)
  }

  /** B, H, Hkv, S, D from q's and k's shapes, checked as the routine checks them. */
  function attentionDims(kernel: string, shapes: Shapes, params: Readonly<Record<string, number | boolean | string>>): [number, number, number, number, number] {
    check(params.causal !== false, kernel, () => "only causal attention has a fused kernel")
    const [qs, ks, vs] = shapes.inputs
    check(qs?.length === 4 && sameShape(ks, vs) && ks?.length === 4, kernel, () => `q must be [B, H, S, D] and k, v [B, Hkv, S, D], got ${fmt(qs)}, ${fmt(ks)}, ${fmt(vs)}`)
    const [B, H, S, D] = qs as [number, number, number, number]
    const Hkv = ks![1]!
    check(ks![0] === B && ks![2] === S && ks![3] === D && Hkv > 0 && H % Hkv === 0, kernel,
      () => `k, v ${fmt(ks)} do not match q ${fmt(qs)} (H a multiple of Hkv)`)
    check(D <= 256, kernel, () => `head dim ${D} exceeds 256, the largest the fused kernel supports`)
    return [B, H, Hkv, S, D]
  }

  /** Attention's lse is in q's accumulator dtype (float32 for bfloat16), as the routine declares. */
  const lseDType = (kernel: string, q: Buffer, lse: Buffer): void =>
    check(lse.dtype === accumulatorDType(q.dtype), kernel, () => `lse ${describe(lse)} must be ${accumulatorDType(q.dtype)} for ${q.dtype} q`)

  const attention: FusedRoutine = (inputs, outputs, shapes, params) => {
    const k = "attention"
    arity(k, inputs, outputs, shapes, [3], 2)
    const [B, H, Hkv, S, D] = attentionDims(k, shapes, params)
    const [q, kk, v] = inputs as [Buffer, Buffer, Buffer]
    const [o, lse] = outputs as [Buffer, Buffer]
    floatDType(k, q.dtype, q, kk, v, o)
    lseDType(k, q, lse)
    dev.attention(code(q.dtype), ctx.handle(k, q), ctx.handle(k, kk), ctx.handle(k, v), ctx.handle(k, o), ctx.handle(k, lse), B, H, Hkv, S, D)
  }

  /**
   * Inputs [q, k, v, o, lse] then the cotangents that exist: dO and dLse, or one of them. One
   * cotangent is dO when it has o's shape (with D = 1 both have the same shape; it is then taken
   * as dO, the only one the public `attention()` can give, as it returns o alone).
   */
  const attentionVjp: FusedRoutine = (inputs, outputs, shapes, params) => {
    const k = "attention.vjp"
    arity(k, inputs, outputs, shapes, [6, 7], 3)
    const [B, H, Hkv, S, D] = attentionDims(k, shapes, params)
    const [q, kk, v, o, lse] = inputs as [Buffer, Buffer, Buffer, Buffer, Buffer]
    const [dq, dk, dv] = outputs as [Buffer, Buffer, Buffer]
    floatDType(k, q.dtype, q, kk, v, o, dq, dk, dv)
    lseDType(k, q, lse)
    let dO: Buffer | undefined, dLse: Buffer | undefined
    if (inputs.length === 7) [dO, dLse] = [inputs[5], inputs[6]]
    else if (sameShape(shapes.inputs[5], shapes.inputs[3])) dO = inputs[5]
    else dLse = inputs[5]
    check(dO === undefined || dO.size === q.size, k, () => `dO ${describe(dO!)} must have o's size ${q.size}`)
    check(dLse === undefined || dLse.size === B * H * S, k, () => `dLse ${describe(dLse!)} must have lse's size ${B * H * S}`)
    withTemps((temps) => {
      let hdO: number
      if (dO !== undefined) hdO = as(k, dO, q.dtype, temps)
      else {
        hdO = scratch(k, q.dtype, q.size)
        temps.push(hdO)
        dev.fill(hdO, code(q.dtype), q.size, 0)
      }
      const hdLse = dLse === undefined ? 0 : as(k, dLse, lse.dtype, temps)
      dev.attentionBackward(code(q.dtype), ctx.handle(k, q), ctx.handle(k, kk), ctx.handle(k, v), ctx.handle(k, o), ctx.handle(k, lse),
        hdO, hdLse, ctx.handle(k, dq), ctx.handle(k, dk), ctx.handle(k, dv), B, H, Hkv, S, D)
    })
  }

  return {
    crossEntropy,
    "crossEntropy.vjp": crossEntropyVjp,
    logsumexp,
    "logsumexp.vjp": logsumexpVjp,
    silu,
    "silu.vjp": siluVjp,
    siluMul,
    "siluMul.vjp": siluMulVjp,
    rope: rope(false),
    "rope.vjp": rope(true),
    adamw,
    rmsNorm,
    "rmsNorm.vjp": rmsNormVjp,
    attention,
    "attention.vjp": attentionVjp,
  }
}
