/**
 * The user-facing ops: thin wrappers over the primitives that add numpy-style broadcasting,
 * number operands, negative axes and keepDims. Everything here builds graph nodes.
 */
import { numel } from "./backend.js"
import type { DType } from "./dtype.js"
import { fmtShape, ShapeError } from "./errors.js"
import { checkShape, type Tensor } from "./graph.js"
import { apply } from "./primitives.js"

export type Operand = Tensor | number

const normAxis = (axis: number, rank: number): number => (axis < 0 ? axis + rank : axis)

/** A constant tensor (a `fill` node): costs a buffer of its size when it runs. */
export function full(shape: readonly number[], value: number, dtype: DType = "float32"): Tensor {
  checkShape("fill", "full", shape)
  return apply("fill", [], { value, shape: [...shape], dtype })
}
export const zeros = (shape: readonly number[], dtype: DType = "float32"): Tensor => full(shape, 0, dtype)
export const zerosLike = (t: Tensor): Tensor => zeros(t.shape, t.dtype)
export const scalar = (value: number, dtype: DType = "float32"): Tensor => full([], value, dtype)

/** Each element's index along `axis` (0, 1, 2, …). */
export function iota(shape: readonly number[], axis = 0, dtype: DType = "int32"): Tensor {
  checkShape("iota", "iota", shape)
  return apply("iota", [], { shape: [...shape], axis: normAxis(axis, shape.length), dtype })
}

/** The numpy broadcast of two shapes. */
export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const r = Math.max(a.length, b.length)
  const out: number[] = []
  for (let i = 0; i < r; i++) {
    const da = a[a.length - r + i] ?? 1
    const db = b[b.length - r + i] ?? 1
    if (da !== db && da !== 1 && db !== 1) {
      throw new ShapeError({
        op,
        shapes: [a, b],
        message: `${op}: shapes ${fmtShape(a)} and ${fmtShape(b)} do not broadcast (dim ${i}: ${da} vs ${db})`,
      })
    }
    out.push(da === 1 ? db : da)
  }
  return out
}

/** Stretch `t` to `shape` (numpy rules). Scalars stay scalars: kernels broadcast them for free. */
export function broadcastTo(t: Tensor, shape: readonly number[]): Tensor {
  if (t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i])) return t
  const lifted =
    t.shape.length < shape.length ? reshape(t, [...new Array(shape.length - t.shape.length).fill(1), ...t.shape]) : t
  return apply("broadcast", [lifted], { shape: [...shape] })
}

/** The adjoint of broadcastTo: sum `g` down to `shape`. */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  if (g.shape.length === shape.length && g.shape.every((d, i) => d === shape[i])) return g
  if (shape.length === 0) return reshape(sum(g), [])
  const lead = g.shape.length - shape.length
  let r = g
  for (let i = 0; i < g.shape.length; i++) {
    if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) r = apply("sum", [r], { axis: i })
  }
  return reshape(r, shape)
}

const asTensor = (x: Operand, like: Tensor): Tensor => (typeof x === "number" ? scalar(x, like.dtype) : x)

function elementwise(op: "add" | "sub" | "mul" | "div" | "maximum" | "less" | "equal", a: Operand, b: Operand): Tensor {
  if (typeof a === "number" && typeof b === "number")
    throw new ShapeError({ op, shapes: [], message: `${op}: at least one operand must be a tensor` })
  const ta = asTensor(a, (typeof a === "number" ? b : a) as Tensor)
  const tb = asTensor(b, ta)
  if (ta.shape.length === 0 || tb.shape.length === 0) return apply(op, [ta, tb], {})
  const shape = broadcastShapes(op, ta.shape, tb.shape)
  return apply(op, [broadcastTo(ta, shape), broadcastTo(tb, shape)], {})
}

export const add = (a: Operand, b: Operand): Tensor => elementwise("add", a, b)
export const sub = (a: Operand, b: Operand): Tensor => elementwise("sub", a, b)
export const mul = (a: Operand, b: Operand): Tensor => elementwise("mul", a, b)
export const div = (a: Operand, b: Operand): Tensor => elementwise("div", a, b)
export const maximum = (a: Operand, b: Operand): Tensor => elementwise("maximum", a, b)
/** 1 where a < b, else 0 (in the operands' dtype). */
export const less = (a: Operand, b: Operand): Tensor => elementwise("less", a, b)
export const equal = (a: Operand, b: Operand): Tensor => elementwise("equal", a, b)

export function where(cond: Tensor, a: Operand, b: Operand): Tensor {
  const like = typeof a !== "number" ? a : typeof b !== "number" ? b : cond
  const ta = typeof a === "number" ? scalar(a, like.dtype) : a
  const tb = typeof b === "number" ? scalar(b, like.dtype) : b
  const shape = [ta, tb].reduce(
    (s, t) => (t.shape.length === 0 ? s : broadcastShapes("where", s, t.shape)),
    [...cond.shape],
  )
  const fit = (t: Tensor) => (t.shape.length === 0 ? t : broadcastTo(t, shape))
  return apply("where", [fit(cond), fit(ta), fit(tb)], {})
}

export const neg = (x: Tensor): Tensor => apply("neg", [x], {})
export const exp = (x: Tensor): Tensor => apply("exp", [x], {})
export const log = (x: Tensor): Tensor => apply("log", [x], {})
export const sqrt = (x: Tensor): Tensor => apply("sqrt", [x], {})
export const recip = (x: Tensor): Tensor => apply("recip", [x], {})
export const sin = (x: Tensor): Tensor => apply("sin", [x], {})
export const cos = (x: Tensor): Tensor => apply("cos", [x], {})
export const rsqrt = (x: Tensor): Tensor => recip(sqrt(x))
export const square = (x: Tensor): Tensor => mul(x, x)
export const sigmoid = (x: Tensor): Tensor => recip(add(exp(neg(x)), 1))
export const relu = (x: Tensor): Tensor => maximum(x, 0)
export const tanh = (x: Tensor): Tensor => sub(mul(sigmoid(mul(x, 2)), 2), 1)

/** Reshape; one dim may be -1 (inferred). Free: the result shares the input's buffer. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const known = numel(shape.filter((d) => d !== -1))
  const resolved = shape.map((d) => (d === -1 ? (known === 0 ? 0 : x.size / known) : d))
  if (resolved.length === x.shape.length && resolved.every((d, i) => d === x.shape[i])) return x
  return apply("reshape", [x], { shape: resolved })
}

export const permute = (x: Tensor, perm: readonly number[]): Tensor =>
  apply("permute", [x], { perm: perm.map((p) => normAxis(p, x.rank)) })

/** Swap two axes (the last two by default). */
export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  const perm = x.shape.map((_, i) => i)
  const [i, j] = [normAxis(a, x.rank), normAxis(b, x.rank)]
  ;[perm[i], perm[j]] = [perm[j]!, perm[i]!]
  return permute(x, perm)
}

export const slice = (x: Tensor, axis: number, start: number, end: number): Tensor =>
  apply("slice", [x], { axis: normAxis(axis, x.rank), start, end })
export const pad = (x: Tensor, axis: number, before: number, after: number): Tensor =>
  apply("pad", [x], { axis: normAxis(axis, x.rank), before, after })
export const concat = (xs: readonly Tensor[], axis: number): Tensor =>
  xs.length === 1 ? xs[0]! : apply("concat", xs, { axis: normAxis(axis, xs[0]?.rank ?? 1) })

function reduce(op: "sum" | "max", x: Tensor, axis: number | readonly number[] | undefined, keepDims: boolean): Tensor {
  const axes = (axis === undefined ? x.shape.map((_, i) => i) : typeof axis === "number" ? [axis] : axis).map((a) =>
    normAxis(a, x.rank),
  )
  let r = x
  for (const a of axes) r = apply(op, [r], { axis: a })
  return keepDims
    ? r
    : reshape(
        r,
        x.shape.filter((_, i) => !axes.includes(i)),
      )
}

/** Sum over `axis` (all axes when omitted). */
export const sum = (x: Tensor, axis?: number | readonly number[], keepDims = false): Tensor =>
  reduce("sum", x, axis, keepDims)
export const max = (x: Tensor, axis?: number | readonly number[], keepDims = false): Tensor =>
  reduce("max", x, axis, keepDims)
export function mean(x: Tensor, axis?: number | readonly number[], keepDims = false): Tensor {
  const s = sum(x, axis, keepDims)
  return div(s, x.size / Math.max(1, s.size))
}

/** Batched matrix product; a 2-D `b` is shared by every batch of `a`. */
export function matmul(a: Tensor, b: Tensor, flags: { transA?: boolean; transB?: boolean } = {}): Tensor {
  const attrs = { transA: flags.transA ?? false, transB: flags.transB ?? false }
  if (a.rank > 2 && b.rank === 2 && !attrs.transA) {
    const lead = a.shape.slice(0, -1)
    const y = apply("matmul", [reshape(a, [-1, a.shape.at(-1)!]), b], attrs)
    return reshape(y, [...lead, y.shape[1]!])
  }
  return apply("matmul", [a, b], attrs)
}

export const gather = (table: Tensor, indices: Tensor): Tensor => apply("gather", [table, indices], {})
export const scatterAdd = (indices: Tensor, src: Tensor, rows: number): Tensor =>
  apply("scatterAdd", [indices, src], { rows })
export const takeAlong = (x: Tensor, indices: Tensor): Tensor => apply("takeAlong", [x, indices], {})
export const putAlong = (indices: Tensor, src: Tensor, width: number): Tensor =>
  apply("putAlong", [indices, src], { width })
export const cast = (x: Tensor, dtype: DType): Tensor => (x.dtype === dtype ? x : apply("cast", [x], { dtype }))
/** The same values, with no gradient flowing back through them. */
export const stopGradient = (x: Tensor): Tensor => apply("stopGradient", [x], {})

export interface AllToAllOptions {
  /** The axis cut into `ranks` parts, part j sent to rank j (negative counts from the end). */
  readonly splitAxis: number
  /** The axis along which the parts received from ranks 0…N−1 are joined. */
  readonly concatAxis: number
  /** How many ranks take part; it must divide the split axis. */
  readonly ranks: number
}

/**
 * The all-to-all exchange of an SPMD program over `ranks` ranks: e.g. [B, S/N, H, D] with
 * splitAxis 2, concatAxis 1 becomes [B, S, H/N, D] (sequence-sharded to head-sharded, Ulysses).
 * Its gradient is the reverse exchange. Runs on rank backends (core/ranks.ts) and plans anywhere.
 */
export function allToAll(x: Tensor, { splitAxis, concatAxis, ranks }: AllToAllOptions): Tensor {
  return apply("allToAll", [x], {
    splitAxis: normAxis(splitAxis, x.rank),
    concatAxis: normAxis(concatAxis, x.rank),
    ranks,
  })
}

/** The sum of x over every rank, the same on each; its gradient all-reduces the cotangent. */
export const allReduce = (x: Tensor): Tensor => apply("allReduce", [x], {})
