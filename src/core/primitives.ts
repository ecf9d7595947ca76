/**
 * The primitive ops, one row each: the shape rule (`infer`), the forward kernel call (`run`)
 * and the gradient rule (`vjp`) side by side. The table is a mapped type over the primitive
 * names, so a primitive without a gradient rule or a kernel does not compile.
 *
 * Elementwise primitives take operands of equal shape, or a scalar (shape []) operand;
 * `ops.ts` inserts explicit `broadcast` nodes for everything else.
 */
import type { BackendImpl, BinaryOp, Buffer, MatmulSpec, UnaryOp, View } from "./backend.js"
import { contiguousStrides, dense, numel } from "./backend.js"
import { type DType, isFloat } from "./dtype.js"
import { DTypeError, fmtShape, ShapeError } from "./errors.js"
import { makeNode, type Node, type NodeAttrs, type Primitive, type Tensor, type TensorType } from "./graph.js"
import * as o from "./ops.js"

type NoAttrs = Record<never, never>

export interface PrimitiveAttrs {
  neg: NoAttrs; exp: NoAttrs; log: NoAttrs; sqrt: NoAttrs; recip: NoAttrs; sin: NoAttrs; cos: NoAttrs
  add: NoAttrs; sub: NoAttrs; mul: NoAttrs; div: NoAttrs; maximum: NoAttrs; less: NoAttrs; equal: NoAttrs
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
}

type Cotangent = Tensor | undefined

export interface Rule<K extends Primitive> {
  infer(inputs: readonly Tensor[], attrs: PrimitiveAttrs[K]): TensorType
  /** Cotangents of the inputs, given the cotangent of the result (undefined: no gradient). */
  vjp(ct: Tensor, node: Node<K>): Cotangent[]
  /** Enqueue the kernel. `alias` rules run no kernel: the result shares input 0's buffer. */
  run?(b: BackendImpl, ins: readonly Buffer[], out: Buffer, node: Node<K>): void
  alias?: true
  /** Each result element depends only on the same element of the inputs: out may overwrite an input. */
  elementwise?: true
}

export type Rules = { readonly [K in Primitive]: Rule<K> }

// ---------- shape-rule helpers ----------

function fail(op: string, inputs: readonly TensorType[], why: string): never {
  throw new ShapeError({ op, shapes: inputs.map((t) => t.shape), message: `${op}: ${why} (got ${inputs.map((t) => fmtShape(t.shape)).join(" and ")})` })
}

function sameDType(op: string, inputs: readonly TensorType[]): DType {
  const d = inputs[0]!.dtype
  if (inputs.some((t) => t.dtype !== d)) {
    throw new DTypeError({ op, dtypes: inputs.map((t) => t.dtype), message: `${op}: operands must share a dtype (got ${inputs.map((t) => t.dtype).join(" and ")}); insert cast()` })
  }
  return d
}

function needFloat(op: string, t: TensorType): void {
  if (!isFloat(t.dtype)) throw new DTypeError({ op, dtypes: [t.dtype], message: `${op}: needs a float tensor, got ${t.dtype}; cast() it first` })
}

function checkAxis(op: string, t: TensorType, axis: number): void {
  if (!Number.isInteger(axis) || axis < 0 || axis >= t.shape.length) fail(op, [t], `axis ${axis} is out of range for rank ${t.shape.length}`)
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
  infer: ([x]) => { needFloat(op, x!); return x! },
  run: (b, [x], out) => b.unary(op, x!, out),
  vjp: (ct, n) => [vjp(ct, n.inputs[0]!, n.results[0]!)],
})

const binary = (op: BinaryOp, vjp: (ct: Tensor, a: Tensor, b: Tensor, y: Tensor) => Cotangent[]): Rule<BinaryOp> => ({
  elementwise: true,
  infer: (ins) => ({ shape: elementwiseShape(op, ins), dtype: sameDType(op, ins) }),
  run: (b, [x, y], out) => b.binary(op, x!, y!, out),
  vjp: (ct, n) => {
    const [a, b] = n.inputs as [Tensor, Tensor]
    return vjp(ct, a, b, n.results[0]!).map((g, i) => (g === undefined ? g : o.sumTo(g, n.inputs[i]!.shape)))
  },
})

const noGrad = (n: Node): Cotangent[] => n.inputs.map(() => undefined)

/** View of `shape` read through `strides` from `offset`. */
const view = (shape: readonly number[], strides: readonly number[], offset = 0): View => ({ shape, strides, offset })

/** [outer, axis, inner] sizes around `axis` — how reductions and concat see a tensor. */
export function around(shape: readonly number[], axis: number): [number, number, number] {
  return [numel(shape.slice(0, axis)), shape[axis]!, numel(shape.slice(axis + 1))]
}

function matmulDims(ins: readonly TensorType[], attrs: PrimitiveAttrs["matmul"]) {
  const [a, b] = ins as [TensorType, TensorType]
  if (a.shape.length < 2 || a.shape.length !== b.shape.length) fail("matmul", ins, "operands need the same rank ≥ 2 (batch dims first)")
  const r = a.shape.length
  const batchDims = a.shape.slice(0, r - 2)
  if (batchDims.some((d, i) => d !== b.shape[i])) fail("matmul", ins, "batch dims must match")
  const [m, ka] = attrs.transA ? [a.shape[r - 1]!, a.shape[r - 2]!] : [a.shape[r - 2]!, a.shape[r - 1]!]
  const [kb, n] = attrs.transB ? [b.shape[r - 1]!, b.shape[r - 2]!] : [b.shape[r - 2]!, b.shape[r - 1]!]
  if (ka !== kb) fail("matmul", ins, `inner dims differ (${ka} vs ${kb})`)
  return { batchDims, batch: numel(batchDims), m, n, k: ka }
}

/** The kernel's view of a matmul node. */
export function matmulSpec(n: Node<"matmul">, accumulate = false): MatmulSpec {
  const { batch, m, n: cols, k } = matmulDims(n.inputs, n.attrs)
  return { batch, m, n: cols, k, transA: n.attrs.transA, transB: n.attrs.transB, accumulate }
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
    run: (b, [c, x, y], out) => b.where(c!, x!, y!, out),
    vjp: (ct, n) => {
      const [c, a, b] = n.inputs as [Tensor, Tensor, Tensor]
      return [undefined, o.sumTo(o.where(c, ct, 0), a.shape), o.sumTo(o.where(c, 0, ct), b.shape)]
    },
  },

  reshape: {
    infer: ([x], { shape }) => {
      if (shape.some((d) => !Number.isInteger(d) || d < 0) || numel(shape) !== x!.size) fail("reshape", [x!, { shape, dtype: x!.dtype }], `cannot reshape ${x!.size} elements to ${fmtShape(shape)}`)
      return { shape, dtype: x!.dtype }
    },
    alias: true,
    vjp: (ct, n) => [o.reshape(ct, n.inputs[0]!.shape)],
  },
  broadcast: {
    infer: ([x], { shape }) => {
      const ok = x!.shape.length === shape.length && x!.shape.every((d, i) => d === shape[i] || d === 1)
      if (!ok) fail("broadcast", [x!, { shape, dtype: x!.dtype }], `cannot broadcast to ${fmtShape(shape)} (same rank, size-1 dims stretch)`)
      return { shape, dtype: x!.dtype }
    },
    run: (b, [x], out, n) => {
      const inShape = n.inputs[0]!.shape
      const s = contiguousStrides(inShape).map((st, i) => (inShape[i] === 1 ? 0 : st))
      b.copy(x!, view(n.attrs.shape, s), out, dense(n.attrs.shape))
    },
    vjp: (ct, n) => [o.sumTo(ct, n.inputs[0]!.shape)],
  },
  permute: {
    infer: ([x], { perm }) => {
      const r = x!.shape.length
      if (perm.length !== r || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) fail("permute", [x!], `[${perm.join(", ")}] is not a permutation of ${r} axes`)
      return { shape: perm.map((p) => x!.shape[p]!), dtype: x!.dtype }
    },
    run: (b, [x], out, n) => {
      const s = contiguousStrides(n.inputs[0]!.shape)
      const shape = n.results[0]!.shape
      b.copy(x!, view(shape, n.attrs.perm.map((p) => s[p]!)), out, dense(shape))
    },
    vjp: (ct, n) => {
      const inv = new Array<number>(n.attrs.perm.length)
      n.attrs.perm.forEach((p, i) => (inv[p] = i))
      return [o.permute(ct, inv)]
    },
  },
  slice: {
    infer: ([x], { axis, start, end }) => {
      checkAxis("slice", x!, axis)
      if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= x!.shape[axis]!)) {
        fail("slice", [x!], `range ${start}:${end} is outside axis ${axis} of length ${x!.shape[axis]}`)
      }
      return { shape: x!.shape.map((d, i) => (i === axis ? end - start : d)), dtype: x!.dtype }
    },
    run: (b, [x], out, n) => {
      const s = contiguousStrides(n.inputs[0]!.shape)
      const shape = n.results[0]!.shape
      b.copy(x!, view(shape, s, n.attrs.start * s[n.attrs.axis]!), out, dense(shape))
    },
    vjp: (ct, n) => [o.pad(ct, n.attrs.axis, n.attrs.start, n.inputs[0]!.shape[n.attrs.axis]! - n.attrs.end)],
  },
  pad: {
    infer: ([x], { axis, before, after }) => {
      checkAxis("pad", x!, axis)
      if (!(Number.isInteger(before) && Number.isInteger(after) && before >= 0 && after >= 0)) fail("pad", [x!], "padding must be non-negative integers")
      return { shape: x!.shape.map((d, i) => (i === axis ? d + before + after : d)), dtype: x!.dtype }
    },
    run: (b, [x], out, n) => {
      const outStrides = contiguousStrides(n.results[0]!.shape)
      const inShape = n.inputs[0]!.shape
      b.fill(out, 0)
      b.copy(x!, dense(inShape), out, view(inShape, outStrides, n.attrs.before * outStrides[n.attrs.axis]!))
    },
    vjp: (ct, n) => [o.slice(ct, n.attrs.axis, n.attrs.before, n.attrs.before + n.inputs[0]!.shape[n.attrs.axis]!)],
  },
  concat: {
    infer: (ins, { axis }) => {
      if (ins.length === 0) throw new ShapeError({ op: "concat", shapes: [], message: "concat: needs at least one tensor" })
      const first = ins[0]!
      checkAxis("concat", first, axis)
      const dtype = sameDType("concat", ins)
      for (const t of ins) {
        if (t.shape.length !== first.shape.length || t.shape.some((d, i) => i !== axis && d !== first.shape[i])) fail("concat", ins, `shapes must match except along axis ${axis}`)
      }
      return { shape: first.shape.map((d, i) => (i === axis ? ins.reduce((s, t) => s + t.shape[axis]!, 0) : d)), dtype }
    },
    run: (b, ins, out, n) => {
      const outStrides = contiguousStrides(n.results[0]!.shape)
      let at = 0
      n.inputs.forEach((t, i) => {
        b.copy(ins[i]!, dense(t.shape), out, view(t.shape, outStrides, at * outStrides[n.attrs.axis]!))
        at += t.shape[n.attrs.axis]!
      })
    },
    vjp: (ct, n) => {
      let at = 0
      return n.inputs.map((t) => o.slice(ct, n.attrs.axis, at, (at += t.shape[n.attrs.axis]!)))
    },
  },

  sum: {
    infer: ([x], { axis }) => { checkAxis("sum", x!, axis); return { shape: x!.shape.map((d, i) => (i === axis ? 1 : d)), dtype: x!.dtype } },
    run: (b, [x], out, n) => b.reduce("sum", x!, out, ...around(n.inputs[0]!.shape, n.attrs.axis)),
    vjp: (ct, n) => [o.broadcastTo(ct, n.inputs[0]!.shape)],
  },
  // Ties share nothing out: every maximal element receives the full gradient.
  max: {
    infer: ([x], { axis }) => { checkAxis("max", x!, axis); needFloat("max", x!); return { shape: x!.shape.map((d, i) => (i === axis ? 1 : d)), dtype: x!.dtype } },
    run: (b, [x], out, n) => b.reduce("max", x!, out, ...around(n.inputs[0]!.shape, n.attrs.axis)),
    vjp: (ct, n) => {
      const x = n.inputs[0]!
      const isMax = o.equal(x, o.broadcastTo(n.results[0]!, x.shape))
      return [o.mul(isMax, o.broadcastTo(ct, x.shape))]
    },
  },

  matmul: {
    infer: (ins, attrs) => {
      const d = matmulDims(ins, attrs)
      needFloat("matmul", ins[0]!)
      return { shape: [...d.batchDims, d.m, d.n], dtype: sameDType("matmul", ins) }
    },
    run: (b, [x, y], out, n) => b.matmul(x!, y!, out, matmulSpec(n)),
    // C = op(A)·op(B): dA = dC·op(B)ᵀ and dB = op(A)ᵀ·dC, written back through each flag.
    vjp: (ct, n) => {
      const [a, b] = n.inputs as [Tensor, Tensor]
      const { transA, transB } = n.attrs
      const dA = transA ? o.matmul(b, ct, { transA: transB, transB: true }) : o.matmul(ct, b, { transA: false, transB: !transB })
      const dB = transB ? o.matmul(ct, a, { transA: true, transB: transA }) : o.matmul(a, ct, { transA: !transA, transB: false })
      return [dA, dB]
    },
  },

  gather: {
    infer: ([table, idx]) => {
      if (table!.shape.length !== 2) fail("gather", [table!, idx!], "table must be [rows, width]")
      if (idx!.dtype !== "int32") throw new DTypeError({ op: "gather", dtypes: [idx!.dtype], message: `gather: indices must be int32, got ${idx!.dtype}` })
      return { shape: [...idx!.shape, table!.shape[1]!], dtype: table!.dtype }
    },
    run: (b, [t, i], out, n) => b.gather(t!, i!, out, n.inputs[0]!.shape[1]!),
    vjp: (ct, n) => [o.scatterAdd(n.inputs[1]!, ct, n.inputs[0]!.shape[0]!), undefined],
  },
  scatterAdd: {
    infer: ([idx, src], { rows }) => {
      if (idx!.dtype !== "int32") throw new DTypeError({ op: "scatterAdd", dtypes: [idx!.dtype], message: `scatterAdd: indices must be int32, got ${idx!.dtype}` })
      if (src!.shape.length !== idx!.shape.length + 1 || idx!.shape.some((d, i) => d !== src!.shape[i])) fail("scatterAdd", [idx!, src!], "src must be [...indices.shape, width]")
      return { shape: [rows, src!.shape[src!.shape.length - 1]!], dtype: src!.dtype }
    },
    run: (b, [i, s], out, n) => b.scatterAdd(i!, s!, out, n.results[0]!.shape[1]!),
    vjp: (ct, n) => [undefined, o.gather(ct, n.inputs[0]!)],
  },
  takeAlong: {
    infer: ([x, idx]) => {
      if (idx!.dtype !== "int32") throw new DTypeError({ op: "takeAlong", dtypes: [idx!.dtype], message: `takeAlong: indices must be int32, got ${idx!.dtype}` })
      if (x!.shape.length !== idx!.shape.length + 1 || idx!.shape.some((d, i) => d !== x!.shape[i])) fail("takeAlong", [x!, idx!], "x must be [...indices.shape, width]")
      return { shape: idx!.shape, dtype: x!.dtype }
    },
    run: (b, [x, i], out, n) => b.takeAlong(x!, i!, out, n.inputs[0]!.shape.at(-1)!),
    vjp: (ct, n) => [o.putAlong(n.inputs[1]!, ct, n.inputs[0]!.shape.at(-1)!), undefined],
  },
  putAlong: {
    infer: ([idx, src], { width }) => {
      if (idx!.dtype !== "int32") throw new DTypeError({ op: "putAlong", dtypes: [idx!.dtype], message: `putAlong: indices must be int32, got ${idx!.dtype}` })
      if (src!.shape.length !== idx!.shape.length || idx!.shape.some((d, i) => d !== src!.shape[i])) fail("putAlong", [idx!, src!], "src must have the indices' shape")
      return { shape: [...idx!.shape, width], dtype: src!.dtype }
    },
    run: (b, [i, s], out, n) => b.putAlong(i!, s!, out, n.attrs.width),
    vjp: (ct, n) => [undefined, o.takeAlong(ct, n.inputs[0]!)],
  },

  cast: {
    elementwise: true,
    infer: ([x], { dtype }) => ({ shape: x!.shape, dtype }),
    run: (b, [x], out) => b.cast(x!, out),
    vjp: (ct, n) => [isFloat(n.inputs[0]!.dtype) ? o.cast(ct, n.inputs[0]!.dtype) : undefined],
  },
  fill: {
    infer: (_ins, { shape, dtype }) => ({ shape, dtype }),
    run: (b, _ins, out, n) => b.fill(out, n.attrs.value),
    vjp: () => [],
  },
  iota: {
    infer: (_ins, { shape, axis, dtype }) => { if (shape.length > 0) checkAxis("iota", { shape, dtype }, axis); return { shape, dtype } },
    run: (b, _ins, out, n) => b.iota(out, n.attrs.shape, n.attrs.axis),
    vjp: () => [],
  },
  stopGradient: {
    infer: ([x]) => x!,
    alias: true,
    vjp: (_ct, n) => noGrad(n),
  },
}

/** Builds a primitive node after checking its shapes and dtypes. */
export function apply<K extends Primitive>(op: K, inputs: readonly Tensor[], attrs: PrimitiveAttrs[K]): Tensor {
  const type = (rules[op] as Rule<K>).infer(inputs, attrs)
  return makeNode(op, inputs, attrs as NodeAttrs[K], [type]).results[0]!
}
