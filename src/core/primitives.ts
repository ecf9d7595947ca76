/**
 * The primitive ops, one row each: the shape rule (`infer`), the forward kernel call (`run`)
 * and the gradient rule (`vjp`) side by side. The table is a mapped type over the primitive
 * names, so a primitive without a gradient rule or a kernel does not compile.
 *
 * Elementwise primitives take operands of equal shape, or a scalar (shape []) operand;
 * `ops.ts` inserts explicit `broadcast` nodes for everything else.
 */
import type { BackendImpl, BinaryOp, Buffer, MatmulSpec, UnaryOp, View } from "./backend.js"
import { allToAllShape, contiguousStrides, dense, numel } from "./backend.js"
import { type DType, isFloat } from "./dtype.js"
import { CollectiveError, DTypeError, fmtShape, ShapeError } from "./errors.js"
import { makeNode, type Node, type NodeAttrs, type Primitive, type Tensor, type TensorType } from "./graph.js"
import * as o from "./ops.js"

type NoAttrs = Record<never, never>

export interface PrimitiveAttrs {
  neg: NoAttrs
  exp: NoAttrs
  log: NoAttrs
  sqrt: NoAttrs
  recip: NoAttrs
  sin: NoAttrs
  cos: NoAttrs
  add: NoAttrs
  sub: NoAttrs
  mul: NoAttrs
  div: NoAttrs
  maximum: NoAttrs
  less: NoAttrs
  equal: NoAttrs
  where: NoAttrs
  reshape: { readonly shape: readonly number[] }
  /** Same rank; dims of size 1 stretch to `shape`. */
  broadcast: { readonly shape: readonly number[] }
  permute: { readonly perm: readonly number[] }
  slice: { readonly axis: number; readonly start: number; readonly end: number }
  pad: { readonly axis: number; readonly before: number; readonly after: number }
  concat: { readonly axis: number }
  /** Reductions keep the reduced axis with size 1. */
  sum: { readonly axis: number }
  max: { readonly axis: number }
  matmul: { readonly transA: boolean; readonly transB: boolean }
  gather: NoAttrs
  scatterAdd: { readonly rows: number }
  takeAlong: NoAttrs
  putAlong: { readonly width: number }
  cast: { readonly dtype: DType }
  fill: { readonly value: number; readonly shape: readonly number[]; readonly dtype: DType }
  iota: { readonly shape: readonly number[]; readonly axis: number; readonly dtype: DType }
  stopGradient: NoAttrs
  /** One rank's part of an exchange among `ranks` ranks (see `BackendImpl.allToAll`). */
  allToAll: { readonly splitAxis: number; readonly concatAxis: number; readonly ranks: number }
  /** The sum over all ranks. */
  allReduce: NoAttrs
}

type Cotangent = Tensor | undefined

/** How many tensors each primitive takes ("any": concat's list). */
const arity = {
  neg: 1,
  exp: 1,
  log: 1,
  sqrt: 1,
  recip: 1,
  sin: 1,
  cos: 1,
  add: 2,
  sub: 2,
  mul: 2,
  div: 2,
  maximum: 2,
  less: 2,
  equal: 2,
  where: 3,
  reshape: 1,
  broadcast: 1,
  permute: 1,
  slice: 1,
  pad: 1,
  concat: "any",
  sum: 1,
  max: 1,
  matmul: 2,
  gather: 2,
  scatterAdd: 2,
  takeAlong: 2,
  putAlong: 2,
  cast: 1,
  fill: 0,
  iota: 0,
  stopGradient: 1,
  allToAll: 1,
  allReduce: 1,
} as const satisfies { readonly [K in Primitive]: 0 | 1 | 2 | 3 | "any" }

/** A primitive's operands as a tuple of its arity, so rules destructure them without `!`. */
type Operands<K extends Primitive, T> = {
  0: readonly []
  1: readonly [T]
  2: readonly [T, T]
  3: readonly [T, T, T]
  any: readonly T[]
}[(typeof arity)[K]]

/** What a rule sees of its node: the operands, the result, the attributes. */
export interface Site<K extends Primitive> {
  readonly inputs: Operands<K, Tensor>
  readonly y: Tensor
  readonly attrs: PrimitiveAttrs[K]
}

export interface Rule<K extends Primitive> {
  infer(inputs: Operands<K, Tensor>, attrs: PrimitiveAttrs[K]): TensorType
  /** Cotangents of the inputs, given the cotangent of the result (undefined: no gradient). */
  vjp(ct: Tensor, n: Site<K>): Cotangent[]
  /** Enqueue the kernel. `alias` rules run no kernel: the result shares input 0's buffer. */
  run?(b: BackendImpl, ins: Operands<K, Buffer>, out: Buffer, n: Site<K>): void
  alias?: true
  /** Each result element depends only on the same element of the inputs: out may overwrite an input. */
  elementwise?: true
}

export type Rules = { readonly [K in Primitive]: Rule<K> }

/** A rule and its site seen without the primitive's arity: how autodiff and the executor call them. */
export interface AnyRule {
  vjp(ct: Tensor, n: AnySite): Cotangent[]
  run?(b: BackendImpl, ins: readonly Buffer[], out: Buffer, n: AnySite): void
  alias?: true
  elementwise?: true
}
export type AnySite = Site<Primitive> & { readonly inputs: readonly Tensor[] }
export const ruleOf = (op: Primitive): AnyRule => rules[op] as unknown as AnyRule
export const siteOf = (n: Node): AnySite => ({ inputs: n.inputs, y: n.results[0] as Tensor, attrs: n.attrs }) as AnySite

// ---------- shape-rule helpers ----------

function fail(op: string, inputs: readonly TensorType[], why: string): never {
  throw new ShapeError({
    op,
    shapes: inputs.map((t) => t.shape),
    message: `${op}: ${why} (got ${inputs.map((t) => fmtShape(t.shape)).join(" and ")})`,
  })
}

function sameDType(op: string, inputs: readonly TensorType[]): DType {
  const d = inputs[0]!.dtype
  if (inputs.some((t) => t.dtype !== d)) {
    throw new DTypeError({
      op,
      dtypes: inputs.map((t) => t.dtype),
      message: `${op}: operands must share a dtype (got ${inputs.map((t) => t.dtype).join(" and ")}); insert cast()`,
    })
  }
  return d
}

function needFloat(op: string, t: TensorType): void {
  if (!isFloat(t.dtype))
    throw new DTypeError({
      op,
      dtypes: [t.dtype],
      message: `${op}: needs a float tensor, got ${t.dtype}; cast() it first`,
    })
}

function needIndices(op: string, t: TensorType): void {
  if (t.dtype !== "int32")
    throw new DTypeError({ op, dtypes: [t.dtype], message: `${op}: indices must be int32, got ${t.dtype}` })
}

function checkAxis(op: string, t: TensorType, axis: number): void {
  if (!Number.isInteger(axis) || axis < 0 || axis >= t.shape.length)
    fail(op, [t], `axis ${axis} is out of range for rank ${t.shape.length}`)
}

/** Result shape of elementwise operands: all equal, or scalars beside one shape. */
function elementwiseShape(op: string, inputs: readonly TensorType[]): readonly number[] {
  const full = inputs.find((t) => t.shape.length > 0)?.shape ?? []
  for (const t of inputs) {
    if (t.shape.length > 0 && (t.shape.length !== full.length || t.shape.some((d, i) => d !== full[i]))) {
      fail(op, inputs, "shapes must match (use ops.add etc., which broadcast, instead of the primitive)")
    }
  }
  return full
}

const unary = (op: UnaryOp, vjp: (ct: Tensor, x: Tensor, y: Tensor) => Tensor): Rule<UnaryOp> => ({
  elementwise: true,
  infer: ([x]) => {
    needFloat(op, x)
    return x
  },
  run: (b, [x], out) => b.unary(op, x, out),
  vjp: (ct, { inputs: [x], y }) => [vjp(ct, x, y)],
})

const binary = (op: BinaryOp, vjp: (ct: Tensor, a: Tensor, b: Tensor, y: Tensor) => Cotangent[]): Rule<BinaryOp> => ({
  elementwise: true,
  infer: (ins) => ({ shape: elementwiseShape(op, ins), dtype: sameDType(op, ins) }),
  run: (b, [x, y], out) => b.binary(op, x, y, out),
  vjp: (ct, { inputs, y }) => vjp(ct, ...inputs, y).map((g, i) => (g === undefined ? g : o.sumTo(g, inputs[i]!.shape))),
})

/** View of `shape` read through `strides` from `offset`. */
const view = (shape: readonly number[], strides: readonly number[], offset = 0): View => ({ shape, strides, offset })

/** [outer, axis, inner] sizes around `axis` — how reductions and concat see a tensor. */
export function around(shape: readonly number[], axis: number): [number, number, number] {
  return [numel(shape.slice(0, axis)), shape[axis]!, numel(shape.slice(axis + 1))]
}

function matmulDims(ins: readonly [TensorType, TensorType], attrs: PrimitiveAttrs["matmul"]) {
  const [a, b] = ins
  if (a.shape.length < 2 || a.shape.length !== b.shape.length)
    fail("matmul", ins, "operands need the same rank ≥ 2 (batch dims first)")
  const r = a.shape.length
  const batchDims = a.shape.slice(0, r - 2)
  if (batchDims.some((d, i) => d !== b.shape[i])) fail("matmul", ins, "batch dims must match")
  const [m, ka] = attrs.transA ? [a.shape[r - 1]!, a.shape[r - 2]!] : [a.shape[r - 2]!, a.shape[r - 1]!]
  const [kb, n] = attrs.transB ? [b.shape[r - 1]!, b.shape[r - 2]!] : [b.shape[r - 2]!, b.shape[r - 1]!]
  if (ka !== kb) fail("matmul", ins, `inner dims differ (${ka} vs ${kb})`)
  return { batchDims, batch: numel(batchDims), m, n, k: ka }
}

/** The kernel's view of a matmul node. */
export function matmulSpec(n: Pick<Site<"matmul">, "inputs" | "attrs">, accumulate = false): MatmulSpec {
  const { batch, m, n: cols, k } = matmulDims(n.inputs, n.attrs)
  return { batch, m, n: cols, k, transA: n.attrs.transA, transB: n.attrs.transB, accumulate }
}

/** The backend's collective kernel, or a CollectiveError: a backend alone is not one rank of several. */
function collective<K extends "allToAll" | "allReduce">(b: BackendImpl, op: K): NonNullable<BackendImpl[K]> {
  const kernel = b[op]
  if (kernel === undefined)
    throw new CollectiveError({
      message: `${op}: the ${b.name} backend is not a rank of a multi-rank run; run the graph with runRanks (N ranks in process), or plan() it for one rank`,
    })
  return kernel.bind(b) as NonNullable<BackendImpl[K]>
}

function allToAllType([x]: readonly [TensorType], { splitAxis, concatAxis, ranks }: PrimitiveAttrs["allToAll"]) {
  checkAxis("allToAll", x, splitAxis)
  checkAxis("allToAll", x, concatAxis)
  if (!(Number.isSafeInteger(ranks) && ranks >= 1))
    fail("allToAll", [x], `ranks must be a whole number ≥ 1, got ${ranks}`)
  const len = x.shape[splitAxis]!
  if (len % ranks !== 0)
    fail(
      "allToAll",
      [x],
      `split axis ${splitAxis} of length ${len} does not divide into ${ranks} ranks; use a rank count that divides it, or pad the axis to a multiple of ${ranks}`,
    )
  return { shape: allToAllShape({ shape: x.shape, splitAxis, concatAxis, ranks }), dtype: x.dtype }
}

// ---------- the table ----------

export const rules: Rules = {
  neg: unary("neg", (ct) => o.neg(ct)),
  exp: unary("exp", (ct, _x, y) => o.mul(ct, y)),
  log: unary("log", (ct, x) => o.div(ct, x)),
  sqrt: unary("sqrt", (ct, _x, y) => o.div(o.mul(ct, 0.5), y)),
  recip: unary("recip", (ct, _x, y) => o.neg(o.mul(ct, o.mul(y, y)))),
  sin: unary("sin", (ct, x) => o.mul(ct, o.cos(x))),
  cos: unary("cos", (ct, x) => o.neg(o.mul(ct, o.sin(x)))),

  add: binary("add", (ct) => [ct, ct]),
  sub: binary("sub", (ct) => [ct, o.neg(ct)]),
  mul: binary("mul", (ct, a, b) => [o.mul(ct, b), o.mul(ct, a)]),
  div: binary("div", (ct, _a, b, y) => [o.div(ct, b), o.neg(o.div(o.mul(ct, y), b))]),
  // The larger operand takes the gradient; a tie sends it to `a`.
  maximum: binary("maximum", (ct, a, b) => {
    const bWins = o.less(a, b)
    return [o.where(bWins, 0, ct), o.where(bWins, ct, 0)]
  }),
  less: binary("less", () => [undefined, undefined]),
  equal: binary("equal", () => [undefined, undefined]),

  where: {
    elementwise: true,
    infer: (ins) => ({ shape: elementwiseShape("where", ins), dtype: sameDType("where", ins.slice(1)) }),
    run: (b, [c, x, y], out) => b.where(c, x, y, out),
    vjp: (ct, { inputs: [c, a, b] }) => [
      undefined,
      o.sumTo(o.where(c, ct, 0), a.shape),
      o.sumTo(o.where(c, 0, ct), b.shape),
    ],
  },

  reshape: {
    infer: ([x], { shape }) => {
      if (shape.some((d) => !Number.isInteger(d) || d < 0) || numel(shape) !== x.size)
        fail("reshape", [x, { shape, dtype: x.dtype }], `cannot reshape ${x.size} elements to ${fmtShape(shape)}`)
      return { shape, dtype: x.dtype }
    },
    alias: true,
    vjp: (ct, { inputs: [x] }) => [o.reshape(ct, x.shape)],
  },
  broadcast: {
    infer: ([x], { shape }) => {
      const ok = x.shape.length === shape.length && x.shape.every((d, i) => d === shape[i] || d === 1)
      if (!ok)
        fail(
          "broadcast",
          [x, { shape, dtype: x.dtype }],
          `cannot broadcast to ${fmtShape(shape)} (same rank, size-1 dims stretch)`,
        )
      return { shape, dtype: x.dtype }
    },
    run: (b, [x], out, { inputs: [t], attrs: { shape } }) => {
      const s = contiguousStrides(t.shape).map((st, i) => (t.shape[i] === 1 ? 0 : st))
      b.copy(x, view(shape, s), out, dense(shape))
    },
    vjp: (ct, { inputs: [x] }) => [o.sumTo(ct, x.shape)],
  },
  permute: {
    infer: ([x], { perm }) => {
      const r = x.shape.length
      if (perm.length !== r || [...perm].sort((a, b) => a - b).some((p, i) => p !== i))
        fail("permute", [x], `[${perm.join(", ")}] is not a permutation of ${r} axes`)
      return { shape: perm.map((p) => x.shape[p]!), dtype: x.dtype }
    },
    run: (b, [x], out, { inputs: [t], y, attrs: { perm } }) => {
      const s = contiguousStrides(t.shape)
      b.copy(
        x,
        view(
          y.shape,
          perm.map((p) => s[p]!),
        ),
        out,
        dense(y.shape),
      )
    },
    vjp: (ct, { attrs: { perm } }) => {
      const inv = new Array<number>(perm.length)
      perm.forEach((p, i) => (inv[p] = i))
      return [o.permute(ct, inv)]
    },
  },
  slice: {
    infer: ([x], { axis, start, end }) => {
      checkAxis("slice", x, axis)
      if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= x.shape[axis]!)) {
        fail("slice", [x], `range ${start}:${end} is outside axis ${axis} of length ${x.shape[axis]}`)
      }
      return { shape: x.shape.map((d, i) => (i === axis ? end - start : d)), dtype: x.dtype }
    },
    run: (b, [x], out, { inputs: [t], y, attrs: { axis, start } }) => {
      const s = contiguousStrides(t.shape)
      b.copy(x, view(y.shape, s, start * s[axis]!), out, dense(y.shape))
    },
    vjp: (ct, { inputs: [x], attrs: { axis, start, end } }) => [o.pad(ct, axis, start, x.shape[axis]! - end)],
  },
  pad: {
    infer: ([x], { axis, before, after }) => {
      checkAxis("pad", x, axis)
      if (!(Number.isInteger(before) && Number.isInteger(after) && before >= 0 && after >= 0))
        fail("pad", [x], "padding must be non-negative integers")
      return { shape: x.shape.map((d, i) => (i === axis ? d + before + after : d)), dtype: x.dtype }
    },
    run: (b, [x], out, { inputs: [t], y, attrs: { axis, before } }) => {
      const outStrides = contiguousStrides(y.shape)
      b.fill(out, 0)
      b.copy(x, dense(t.shape), out, view(t.shape, outStrides, before * outStrides[axis]!))
    },
    vjp: (ct, { inputs: [x], attrs: { axis, before } }) => [o.slice(ct, axis, before, before + x.shape[axis]!)],
  },
  concat: {
    infer: (ins, { axis }) => {
      const first = ins[0]
      if (first === undefined)
        throw new ShapeError({ op: "concat", shapes: [], message: "concat: needs at least one tensor" })
      checkAxis("concat", first, axis)
      const dtype = sameDType("concat", ins)
      for (const t of ins) {
        if (t.shape.length !== first.shape.length || t.shape.some((d, i) => i !== axis && d !== first.shape[i]))
          fail("concat", ins, `shapes must match except along axis ${axis}`)
      }
      return { shape: first.shape.map((d, i) => (i === axis ? ins.reduce((s, t) => s + t.shape[axis]!, 0) : d)), dtype }
    },
    run: (b, ins, out, { inputs, y, attrs: { axis } }) => {
      const outStrides = contiguousStrides(y.shape)
      let at = 0
      inputs.forEach((t, i) => {
        b.copy(ins[i]!, dense(t.shape), out, view(t.shape, outStrides, at * outStrides[axis]!))
        at += t.shape[axis]!
      })
    },
    vjp: (ct, { inputs, attrs: { axis } }) => {
      let at = 0
      return inputs.map((t) => o.slice(ct, axis, at, (at += t.shape[axis]!)))
    },
  },

  sum: {
    infer: ([x], { axis }) => {
      checkAxis("sum", x, axis)
      return { shape: x.shape.map((d, i) => (i === axis ? 1 : d)), dtype: x.dtype }
    },
    run: (b, [x], out, { inputs: [t], attrs: { axis } }) => b.reduce("sum", x, out, ...around(t.shape, axis)),
    vjp: (ct, { inputs: [x] }) => [o.broadcastTo(ct, x.shape)],
  },
  // Ties share nothing out: every maximal element receives the full gradient.
  max: {
    infer: ([x], { axis }) => {
      checkAxis("max", x, axis)
      needFloat("max", x)
      return { shape: x.shape.map((d, i) => (i === axis ? 1 : d)), dtype: x.dtype }
    },
    run: (b, [x], out, { inputs: [t], attrs: { axis } }) => b.reduce("max", x, out, ...around(t.shape, axis)),
    vjp: (ct, { inputs: [x], y }) => {
      const isMax = o.equal(x, o.broadcastTo(y, x.shape))
      return [o.mul(isMax, o.broadcastTo(ct, x.shape))]
    },
  },

  matmul: {
    infer: (ins, attrs) => {
      const d = matmulDims(ins, attrs)
      needFloat("matmul", ins[0])
      return { shape: [...d.batchDims, d.m, d.n], dtype: sameDType("matmul", ins) }
    },
    run: (b, [x, y], out, n) => b.matmul(x, y, out, matmulSpec(n)),
    // C = op(A)·op(B): dA = dC·op(B)ᵀ and dB = op(A)ᵀ·dC, written back through each flag.
    vjp: (ct, { inputs: [a, b], attrs: { transA, transB } }) => {
      const dA = transA
        ? o.matmul(b, ct, { transA: transB, transB: true })
        : o.matmul(ct, b, { transA: false, transB: !transB })
      const dB = transB
        ? o.matmul(ct, a, { transA: true, transB: transA })
        : o.matmul(a, ct, { transA: !transA, transB: false })
      return [dA, dB]
    },
  },

  gather: {
    infer: ([table, idx]) => {
      if (table.shape.length !== 2) fail("gather", [table, idx], "table must be [rows, width]")
      needIndices("gather", idx)
      return { shape: [...idx.shape, table.shape[1]!], dtype: table.dtype }
    },
    run: (b, [t, i], out, { inputs: [table] }) => b.gather(t, i, out, table.shape[1]!),
    vjp: (ct, { inputs: [table, idx] }) => [o.scatterAdd(idx, ct, table.shape[0]!), undefined],
  },
  scatterAdd: {
    infer: ([idx, src], { rows }) => {
      needIndices("scatterAdd", idx)
      if (src.shape.length !== idx.shape.length + 1 || idx.shape.some((d, i) => d !== src.shape[i]))
        fail("scatterAdd", [idx, src], "src must be [...indices.shape, width]")
      return { shape: [rows, src.shape[src.shape.length - 1]!], dtype: src.dtype }
    },
    run: (b, [i, s], out, { y }) => b.scatterAdd(i, s, out, y.shape[1]!),
    vjp: (ct, { inputs: [idx] }) => [undefined, o.gather(ct, idx)],
  },
  takeAlong: {
    infer: ([x, idx]) => {
      needIndices("takeAlong", idx)
      if (x.shape.length !== idx.shape.length + 1 || idx.shape.some((d, i) => d !== x.shape[i]))
        fail("takeAlong", [x, idx], "x must be [...indices.shape, width]")
      return { shape: idx.shape, dtype: x.dtype }
    },
    run: (b, [x, i], out, { inputs: [t] }) => b.takeAlong(x, i, out, t.shape.at(-1)!),
    vjp: (ct, { inputs: [x, idx] }) => [o.putAlong(idx, ct, x.shape.at(-1)!), undefined],
  },
  putAlong: {
    infer: ([idx, src], { width }) => {
      needIndices("putAlong", idx)
      if (src.shape.length !== idx.shape.length || idx.shape.some((d, i) => d !== src.shape[i]))
        fail("putAlong", [idx, src], "src must have the indices' shape")
      return { shape: [...idx.shape, width], dtype: src.dtype }
    },
    run: (b, [i, s], out, { attrs: { width } }) => b.putAlong(i, s, out, width),
    vjp: (ct, { inputs: [idx] }) => [undefined, o.takeAlong(ct, idx)],
  },

  cast: {
    elementwise: true,
    infer: ([x], { dtype }) => ({ shape: x.shape, dtype }),
    run: (b, [x], out) => b.cast(x, out),
    vjp: (ct, { inputs: [x] }) => [isFloat(x.dtype) ? o.cast(ct, x.dtype) : undefined],
  },
  fill: {
    infer: (_ins, { shape, dtype }) => ({ shape, dtype }),
    run: (b, _ins, out, { attrs: { value } }) => b.fill(out, value),
    vjp: () => [],
  },
  iota: {
    infer: (_ins, { shape, axis, dtype }) => {
      if (shape.length > 0) checkAxis("iota", { shape, dtype }, axis)
      return { shape, dtype }
    },
    run: (b, _ins, out, { attrs: { shape, axis } }) => b.iota(out, shape, axis),
    vjp: () => [],
  },
  stopGradient: {
    infer: ([x]) => x,
    alias: true,
    vjp: () => [undefined],
  },

  // The exchange is a permutation of the N ranks' elements, so its adjoint is its inverse: the
  // reverse all-to-all (split where it concatenated, concatenate where it split).
  allToAll: {
    infer: allToAllType,
    run: (b, [x], out, { inputs: [t], attrs }) => collective(b, "allToAll")(x, out, { shape: t.shape, ...attrs }),
    vjp: (ct, { attrs: { splitAxis, concatAxis, ranks } }) => [
      o.allToAll(ct, { splitAxis: concatAxis, concatAxis: splitAxis, ranks }),
    ],
  },
  // An SPMD program's loss is the sum of every rank's loss, L = Σ_r L_r, and y = Σ_i x_i is the
  // same on every rank r, so ∂L/∂x_i = Σ_r ∂L_r/∂y_r: the all-reduce of the cotangents. The
  // identity would be right only for a loss counted once (not summed over ranks), where every
  // rank's cotangent is already the whole one.
  allReduce: {
    infer: ([x]) => {
      needFloat("allReduce", x)
      return x
    },
    run: (b, [x], out) => collective(b, "allReduce")(x, out),
    vjp: (ct) => [o.allReduce(ct)],
  },
}

/** Builds a primitive node after checking its operand count, shapes and dtypes. */
export function apply<K extends Primitive>(op: K, inputs: readonly Tensor[], attrs: PrimitiveAttrs[K]): Tensor {
  const n = arity[op] as number | "any"
  if (n !== "any" && inputs.length !== n) {
    throw new ShapeError({
      op,
      shapes: inputs.map((t) => t.shape),
      message: `${op}: takes ${n} operands, got ${inputs.length}`,
    })
  }
  const type = (rules[op] as Rule<K>).infer(inputs as unknown as Operands<K, Tensor>, attrs)
  return makeNode(op, inputs, attrs as NodeAttrs[K], [type]).results[0] as Tensor
}
