/**
 * Region combinators. A region wraps a closed sub-graph (its body) into one node with its own
 * schedule; the executor runs the body in a scope of its own and frees everything inside it.
 *
 * - `checkpoint(f)`: forward keeps only the region's inputs; backward recomputes the body and
 *   runs its VJP.
 * - `chunked(M, { axis, combine })(f)`: runs the body once per piece of `axis` (pieces of
 *   ceil(L/M), the last may be shorter), combining pieces by concatenation or by summing.
 *   Backward is again a chunked region: per piece, recompute, VJP, write the input-gradient
 *   slice, and add the gradients of shared tensors (weights) into one buffer in place.
 *   With `gradientsInForward` (a scalar loss) the pieces' gradients are taken in the forward pass
 *   instead, and backward only scales them: nothing is recomputed.
 *
 * Tensors a body closes over (weights) become the region's shared inputs, so model code stays
 * plain closures: `chunked(4, { axis: 1 })((x) => mlp(x, w))(h)`.
 */
import { vjp } from "./autodiff.js"
import { accumulatorDType, isFloat } from "./dtype.js"
import { BadConfig, fmtShape, GraphError, ShapeError } from "./errors.js"
import { input, makeNode, type Node, peekNextId, Tensor, type TensorType } from "./graph.js"
import * as o from "./ops.js"
import type { Body, Combine, CustomVjp, RegionAttrs, RoutineSite } from "./region-types.js"
import { pieces } from "./region-types.js"
import { type AttrsOf, bareName, type RoutineDecl } from "./routines/declare.js"

export type { Body, Combine, CustomVjp, RegionAttrs } from "./region-types.js"

type Result = Tensor | readonly Tensor[]
type Fn<R extends Result> = (...args: Tensor[]) => R

const placeholder = (t: TensorType, name: string): Tensor => input(name, t.shape, t.dtype)
const withLength = (t: TensorType, axis: number, len: number): TensorType => ({
  shape: t.shape.map((d, i) => (i === axis ? len : d)),
  dtype: t.dtype,
})

interface Trace {
  placeholders: Tensor[]
  outputs: Tensor[]
  captured: Tensor[]
  returnsArray: boolean
}

const describe = (v: unknown): string =>
  v === null
    ? "null"
    : v === undefined
      ? "undefined (nothing)"
      : typeof v === "object"
        ? (v.constructor?.name ?? "an object")
        : `${typeof v} ${String(v)}`

/** Calls `f` on fresh placeholders and finds the outside tensors its result depends on. */
function trace(f: Fn<Result>, argTypes: readonly TensorType[], name: string): Trace {
  if (typeof f !== "function")
    throw new GraphError({ message: `${name}: the body must be a function of tensors, got ${describe(f)}` })
  const start = peekNextId()
  const placeholders = argTypes.map((t, i) => placeholder(t, `arg${i}`))
  const r = f(...placeholders)
  const outputs = Array.isArray(r) ? [...(r as readonly Tensor[])] : [r as Tensor]
  const bad = outputs.findIndex((t) => !(t instanceof Tensor))
  if (outputs.length === 0 || bad >= 0) {
    const got = Array.isArray(r)
      ? bad >= 0
        ? `an array whose item ${bad} is ${describe(outputs[bad])}`
        : "[]"
      : describe(r)
    throw new GraphError({
      message: `${name}: the body must return a tensor or a non-empty array of tensors, got ${got}; return what it computes, e.g. (x) => o.exp(x)`,
    })
  }
  const own = new Set(placeholders)
  const captured = new Set<Tensor>()
  const seen = new Set<Node>()
  const stack = [...outputs]
  while (stack.length > 0) {
    const t = stack.pop()!
    if (own.has(t)) continue
    if (t.node.id < start) {
      captured.add(t)
      continue
    }
    if (seen.has(t.node)) continue
    seen.add(t.node)
    stack.push(...t.node.inputs)
  }
  return {
    placeholders,
    outputs,
    returnsArray: Array.isArray(r),
    captured: [...captured].sort((a, b) => a.node.id - b.node.id || a.index - b.index),
  }
}

const memo = <A>(make: (len: number) => A): ((len: number) => A) => {
  const cache = new Map<number, A>()
  return (len) => {
    let v = cache.get(len)
    if (v === undefined) cache.set(len, (v = make(len)))
    return v
  }
}

function regionNode(attrs: RegionAttrs, inputs: readonly Tensor[], outputTypes: readonly TensorType[]): Node<"region"> {
  return makeNode("region", inputs, attrs, outputTypes)
}

interface RegionSpec {
  name: string
  /** Split axis of every explicit argument, or null for a region that splits nothing. */
  axis: number | null
  M: number
  combine: Combine
  vjp?: CustomVjp | undefined
  vjpReads?: RegionAttrs["vjpReads"]
  routine?: RoutineSpec | undefined
}

/** A routine's declaration and the attributes this use of it gives its kernel. */
interface RoutineSpec {
  readonly decl: RoutineDecl
  readonly attrs: AttrsOf<RoutineDecl>
}

function buildRegion<R extends Result>(spec: RegionSpec, f: Fn<R>, args: readonly Tensor[]): R {
  const axes = args.map((a) => (spec.axis === null ? null : spec.axis < 0 ? spec.axis + a.rank : spec.axis))
  axes.forEach((ax, i) => {
    if (ax !== null && (ax < 0 || ax >= args[i]!.rank)) {
      throw new ShapeError({
        op: spec.name,
        shapes: args.map((a) => a.shape),
        message: `${spec.name}: argument ${i} of shape ${fmtShape(args[i]!.shape)} has no axis ${spec.axis}`,
      })
    }
  })
  const lengths = new Set(args.map((a, i) => (axes[i] === null ? -1 : a.shape[axes[i]!]!)).filter((l) => l >= 0))
  if (lengths.size > 1) {
    throw new ShapeError({
      op: spec.name,
      shapes: args.map((a) => a.shape),
      message: `${spec.name}: every argument must have the same length along axis ${spec.axis} (got ${[...lengths].join(", ")}); pass tensors that should not be split by closing over them`,
    })
  }
  const length = lengths.size === 0 ? 0 : [...lengths][0]!
  const chunk = length === 0 ? 0 : Math.ceil(length / Math.min(spec.M, length))
  const lens = [...new Set(pieces(length, chunk).map(([, l]) => l))]
  const traces = new Map(
    lens.map((len) => [
      len,
      trace(
        f as Fn<Result>,
        args.map((a, i) => (axes[i] === null ? a : withLength(a, axes[i]!, len))),
        spec.name,
      ),
    ]),
  )
  const first = traces.get(lens[0]!)!
  const captured = [...new Set([...traces.values()].flatMap((t) => t.captured))].sort(
    (a, b) => a.node.id - b.node.id || a.index - b.index,
  )

  const outAxes = first.outputs.map((t) =>
    spec.combine === "concat" && spec.axis !== null ? (spec.axis < 0 ? spec.axis + t.rank : spec.axis) : null,
  )
  const outputTypes = first.outputs.map((t, j): TensorType => {
    for (const [len, tr] of traces) {
      const u = tr.outputs[j]!
      const ax = outAxes[j] ?? null
      const expect = ax === null ? t.shape : withLength(t, ax, len).shape
      if (ax !== null && (ax >= u.rank || u.shape[ax] !== len)) {
        throw new ShapeError({
          op: spec.name,
          shapes: [u.shape],
          message: `${spec.name}: output ${j} of a ${len}-long piece has shape ${fmtShape(u.shape)}; combine "concat" needs its axis ${spec.axis} to be the piece length — use combine "sum" for reductions`,
        })
      }
      if (u.shape.length !== expect.length || u.shape.some((d, i) => d !== expect[i])) {
        throw new ShapeError({
          op: spec.name,
          shapes: [t.shape, u.shape],
          message: `${spec.name}: pieces give outputs of different shapes`,
        })
      }
    }
    if (outAxes[j] !== null) return withLength(t, outAxes[j]!, length)
    // Pieces summed across a split axis accumulate in at least fp32 (bf16 sums drift as M grows).
    return spec.axis === null ? t : { shape: t.shape, dtype: accumulatorDType(t.dtype) }
  })

  const attrs: RegionAttrs = {
    name: spec.name,
    inAxes: [...axes, ...captured.map(() => null)],
    combine: first.outputs.map(() => (spec.axis === null ? "sum" : spec.combine)),
    outAxes,
    length,
    chunk,
    bodyFor: (len) => {
      const tr = traces.get(len)
      if (tr === undefined)
        throw new ShapeError({
          op: spec.name,
          shapes: [],
          message: `${spec.name}: no body traced for pieces of ${len}`,
        })
      return { params: [...tr.placeholders, ...captured], outputs: tr.outputs }
    },
    vjp: spec.vjp,
    vjpReads: spec.vjpReads,
    routine: spec.routine && siteOf(spec.routine, args.length + captured.length, first.outputs.length),
  }
  const node = regionNode(attrs, [...args, ...captured], outputTypes)
  return (first.returnsArray ? node.results : node.results[0]) as unknown as R
}

/** Activation recomputation: only the inputs survive the forward pass; backward recomputes. */
export function checkpoint<R extends Result>(f: Fn<R>, opts: { name?: string } = {}): Fn<R> {
  return (...args) => buildRegion({ name: opts.name ?? "checkpoint", axis: null, M: 1, combine: "sum" }, f, args)
}

export interface ChunkedOptions {
  /** The axis every argument is split along (the sequence axis). Default 1 ([B, S, …]). */
  readonly axis?: number
  /** "concat" reassembles per-token outputs; "sum" adds per-piece results (losses). */
  readonly combine?: Combine
  /**
   * For a region returning one scalar (a loss, combine "sum"): take each piece's gradients right
   * after its value, while its activations (the logits) are alive, instead of recomputing the
   * piece in backward. The VJP of a scalar is its gradient times the cotangent, so backward only
   * scales what the forward pass kept. Costs the gradients' memory from the forward pass on.
   */
  readonly gradientsInForward?: boolean
}

/**
 * Mini-sequences: split every argument along `axis` into M pieces and run `f` on one piece at
 * a time, forward and backward. Tensors `f` closes over are shared by every piece.
 */
export function chunked(M: number, opts: ChunkedOptions = {}) {
  if (!Number.isInteger(M) || M < 1)
    throw new BadConfig({ field: "M", message: `chunked: M must be a positive integer, got ${M}` })
  checkChunkedOptions(opts)
  return <R extends Result>(f: Fn<R>): Fn<R> =>
    (...args) => {
      if (args.length === 0)
        throw new ShapeError({
          op: "chunked",
          shapes: [],
          message: "chunked: pass the tensors to split as arguments (at least one)",
        })
      const r = buildRegion({ name: "chunked", axis: opts.axis ?? 1, M, combine: opts.combine ?? "concat" }, f, args)
      return (opts.gradientsInForward ? gradientsInForward(r) : r) as R
    }
}

/** Region options are checked when the region is declared, not when it first runs. */
function checkChunkedOptions(opts: ChunkedOptions): void {
  const bad = (field: string, message: string) => new BadConfig({ field, message: `chunked: ${message}` })
  if (opts === null || typeof opts !== "object") throw bad("options", `options must be an object, got ${String(opts)}`)
  const { axis, combine, gradientsInForward } = opts
  if (axis !== undefined && !Number.isSafeInteger(axis))
    throw bad("axis", `axis must be an integer (negative counts from the end), got ${String(axis)}`)
  if (combine !== undefined && combine !== "concat" && combine !== "sum")
    throw bad("combine", `combine must be "concat" or "sum", got ${JSON.stringify(combine) ?? String(combine)}`)
  if (gradientsInForward !== undefined && typeof gradientsInForward !== "boolean")
    throw bad("gradientsInForward", `gradientsInForward must be true or false, got ${String(gradientsInForward)}`)
  const known = ["axis", "combine", "gradientsInForward"]
  const unknown = Object.keys(opts).filter((k) => !known.includes(k))
  if (unknown.length > 0)
    throw bad(unknown[0]!, `unknown option ${unknown.join(", ")}; the options are ${known.join(", ")}`)
}

/**
 * The chunked region behind `loss`, rebuilt so that each piece also returns its gradients for a
 * unit cotangent (split inputs' gradients concatenated, shared inputs' summed in fp32), with a
 * backward rule that multiplies them by the real cotangent.
 */
function gradientsInForward(loss: Result): Tensor {
  const node = (Array.isArray(loss) ? undefined : (loss as Tensor).node) as Node<"region"> | undefined
  if (node === undefined || node.results.length !== 1 || node.results[0]!.size !== 1) {
    throw new ShapeError({
      op: "chunked",
      shapes: node ? node.results.map((t) => t.shape) : [],
      message:
        "chunked: gradientsInForward needs a region that returns one scalar (a loss); drop the option for other regions",
    })
  }
  const a = node.attrs
  const grads = gradientLayout(node)
  const bodyFor = memo((len: number): Body => {
    const fwd = a.bodyFor(len)
    const value = fwd.outputs[0]!
    return {
      params: fwd.params,
      outputs: [value, ...pieceGradients(fwd, [value], [o.full(value.shape, 1, value.dtype)], grads.diff)],
    }
  })
  // Scaling by the cotangent after the cast to the input's dtype is exact when it is 1 (the
  // region is the loss itself), and only the input-sized gradient is kept for backward.
  const rule: CustomVjp = (_ins, outs, [ct]) => {
    const scaled: (Tensor | undefined)[] = node.inputs.map(() => undefined)
    grads.diff.forEach((i, k) => {
      scaled[i] = o.mul(outs[k + 1]!, o.cast(o.reshape(ct!, []), node.inputs[i]!.dtype))
    })
    return scaled
  }
  const attrs: RegionAttrs = {
    ...a,
    combine: [...a.combine, ...grads.combine],
    outAxes: [...a.outAxes, ...grads.outAxes],
    accumulate: [node.results[0]!.dtype, ...grads.accumulate],
    bodyFor,
    vjp: rule,
    vjpReads: "outputs",
  }
  return regionNode(attrs, node.inputs, [node.results[0]!, ...grads.types]).results[0]!
}

/**
 * The kernel's view of a routine region with `inputs` and `outputs` buffers: the declared names
 * in order (a trailing optional one may be absent).
 */
function siteOf({ decl, attrs }: RoutineSpec, inputs: number, outputs: number): RoutineSite {
  if (inputs > decl.inputs.length || outputs > decl.outputs.length) {
    throw new GraphError({ message: tooManyOperands(decl, inputs, outputs) })
  }
  const names = (declared: readonly string[], n: number) => declared.slice(0, n).map(bareName)
  const { elementwise } = decl
  return { inputs: names(decl.inputs, inputs), outputs: names(decl.outputs, outputs), attrs, elementwise }
}

const tooManyOperands = (decl: RoutineDecl, inputs: number, outputs: number): string =>
  `routine ${decl.name} declares ${decl.inputs.length} inputs and ${decl.outputs.length} outputs, ` +
  `got ${inputs} and ${outputs}` +
  " (a body must not close over tensors: pass them as arguments)"

/** The name of the cotangent of `name` (a VJP's input) or of its gradient (a VJP's output): o → dO. */
const adjointName = (name: string): string => `d${name[0]!.toUpperCase()}${name.slice(1)}`

/**
 * A routine with a hand-written backward rule (like flash attention's recompute-based backward),
 * or without one: its backward is then the VJP of its body, as the region "<name>.vjp". Its body
 * is the reference decomposition; a backend may run a fused kernel instead (`decl` says how that
 * kernel sees the region, `attrs` what it is told).
 */
export function routine<D extends RoutineDecl, R extends Result>(
  decl: D,
  f: Fn<R>,
  backward?: CustomVjp,
  attrs?: AttrsOf<D>,
  vjpReads?: RegionAttrs["vjpReads"],
): Fn<R> {
  const spec = { name: decl.name, axis: null, M: 1, combine: "sum" as const, vjp: backward, vjpReads }
  return (...args) => buildRegion({ ...spec, routine: { decl, attrs: attrs ?? {} } }, f, args)
}

/**
 * A routine whose result types are known up front, so its body is traced only if it ever runs
 * (a backend with the fused kernel never needs it: planning a 64k-token attention stays cheap).
 * Its body must not close over tensors.
 */
export function lazyRoutine<D extends RoutineDecl>(
  decl: D,
  f: Fn<readonly Tensor[]>,
  backward: CustomVjp,
  resultTypes: (args: readonly Tensor[]) => TensorType[],
  attrs: AttrsOf<D>,
): Fn<readonly Tensor[]> {
  const name = decl.name
  return (...args) => {
    const types = resultTypes(args)
    const bodyFor = memo((): Body => {
      const tr = trace(f, args, name)
      if (tr.captured.length > 0)
        throw new GraphError({ message: `routine ${name} must not close over tensors; pass them as arguments` })
      tr.outputs.forEach((t, j) => {
        const want = types[j]
        if (
          want === undefined ||
          t.dtype !== want.dtype ||
          t.shape.length !== want.shape.length ||
          t.shape.some((d, i) => d !== want.shape[i])
        ) {
          throw new GraphError({
            message: `routine ${name}: result ${j} is ${t}, but its declared type is ${want ? `[${want.shape.join(", ")}] ${want.dtype}` : "missing"}`,
          })
        }
      })
      return { params: tr.placeholders, outputs: tr.outputs }
    })
    const region: RegionAttrs = {
      name,
      inAxes: args.map(() => null),
      combine: types.map(() => "sum"),
      outAxes: types.map(() => null),
      length: 0,
      chunk: 0,
      bodyFor,
      vjp: backward,
      routine: siteOf({ decl, attrs }, args.length, types.length),
      // the body is f of the arguments' types, and f is the routine's given its attributes
      replayKey: `${name}${JSON.stringify(attrs)}`,
    }
    return regionNode(region, args, types).results
  }
}

const zerosFor = (t: Tensor): Tensor => o.zeros(t.shape, t.dtype)

/**
 * How a region's gradients come out, for its float inputs `diff`: split inputs get theirs slice
 * by slice (concatenated), shared inputs (weights) sum over the pieces. Each has its input's
 * dtype, but a shared input's pieces are summed in an fp32 accumulator and cast once at the end,
 * so bf16 sums never drift with M.
 */
function gradientLayout(node: Node<"region">) {
  const a = node.attrs
  const diff = node.inputs.flatMap((t, i) => (isFloat(t.dtype) ? [i] : []))
  return {
    diff,
    combine: diff.map((i): Combine => (a.inAxes[i] === null ? "sum" : "concat")),
    outAxes: diff.map((i) => a.inAxes[i]!),
    accumulate: diff.map((i) => accumulatorDType(node.inputs[i]!.dtype)),
    types: diff.map((i) => node.inputs[i]!),
  }
}

/** One piece's gradients for the body params `diff`, given its outputs' cotangents (zeros where none flows). */
const pieceGradients = (
  piece: Body,
  outputs: readonly Tensor[],
  cts: readonly Tensor[],
  diff: readonly number[],
): Tensor[] =>
  vjp(
    outputs,
    cts,
    diff.map((i) => piece.params[i]!),
  ).map((t, k) => t ?? zerosFor(piece.params[diff[k]!]!))

/** The VJP of a region is another region: per piece, recompute the body and run its VJP. */
export function regionVjp(node: Node<"region">, cts: readonly (Tensor | undefined)[]): (Tensor | undefined)[] {
  const a = node.attrs
  const withCt = cts.flatMap((c, j) => (c === undefined ? [] : [j]))
  const grads = gradientLayout(node)
  const diff = grads.diff
  if (diff.length === 0) return node.inputs.map(() => undefined)

  let attrs: RegionAttrs
  let inputs: Tensor[]
  if (a.vjp !== undefined) {
    // Hand-written rule: it reads the inputs, the saved outputs and the output cotangents (with
    // vjpReads "outputs" no inputs, with "inputs" no outputs, with "cotangents" only the cotangents).
    const custom = a.vjp
    const readsInputs = a.vjpReads === undefined || a.vjpReads === "inputs"
    const readsOutputs = a.vjpReads === undefined || a.vjpReads === "outputs"
    inputs = [...(readsInputs ? node.inputs : []), ...(readsOutputs ? node.results : []), ...withCt.map((j) => cts[j]!)]
    const body = memo((): Body => {
      const inPh = readsInputs ? node.inputs.map((t, i) => placeholder(t, `in${i}`)) : []
      const outPh = readsOutputs ? node.results.map((t, j) => placeholder(t, `out${j}`)) : []
      const ctPh = withCt.map((j) => placeholder({ shape: node.results[j]!.shape, dtype: cts[j]!.dtype }, `ct${j}`))
      const ctAt = node.results.map((_, j) => {
        const k = withCt.indexOf(j)
        return k < 0 ? undefined : o.cast(ctPh[k]!, node.results[j]!.dtype)
      })
      const g = custom(inPh, outPh, ctAt)
      return { params: [...inPh, ...outPh, ...ctPh], outputs: diff.map((i) => g[i] ?? zerosFor(node.inputs[i]!)) }
    })
    attrs = {
      name: `${a.name}.vjp`,
      inAxes: inputs.map(() => null),
      combine: diff.map(() => "sum"),
      outAxes: diff.map(() => null),
      length: 0,
      chunk: 0,
      bodyFor: body,
      routine: a.routine && vjpSite(a.routine, diff, withCt, readsInputs, readsOutputs),
    }
  } else {
    inputs = [...node.inputs, ...withCt.map((j) => cts[j]!)]
    const bodyFor = memo((len: number): Body => {
      const fwd = a.bodyFor(len)
      // A cotangent may be wider than the piece's output (an fp32 sum of bf16 pieces): cast it in.
      const ctPh = withCt.map((j) => placeholder({ shape: fwd.outputs[j]!.shape, dtype: cts[j]!.dtype }, `ct${j}`))
      const outputs = withCt.map((j) => fwd.outputs[j]!)
      return {
        params: [...fwd.params, ...ctPh],
        outputs: pieceGradients(
          fwd,
          outputs,
          withCt.map((j, k) => o.cast(ctPh[k]!, outputs[k]!.dtype)),
          diff,
        ),
      }
    })
    attrs = {
      name: `${a.name}.vjp`,
      // A "concat" output's cotangent is split like the output; a "sum" output's is shared.
      inAxes: [...a.inAxes, ...withCt.map((j) => (a.combine[j] === "concat" ? a.outAxes[j]! : null))],
      combine: grads.combine,
      outAxes: grads.outAxes,
      length: a.length,
      chunk: a.chunk,
      bodyFor,
      routine: a.routine && vjpSite(a.routine, diff, withCt, true, false),
    }
  }
  // A keyed body's VJP is keyed too: it is fixed by the forward's key, the cotangents that flow and the inputs differentiated.
  const replayKey = a.replayKey && `${a.replayKey}.vjp(${withCt})(${diff})`
  const bwd = regionNode({ ...attrs, accumulate: grads.accumulate, replayKey }, inputs, grads.types)
  const out: (Tensor | undefined)[] = node.inputs.map(() => undefined)
  diff.forEach((i, k) => (out[i] = bwd.results[k]))
  return out
}

/**
 * How the kernel of a routine's VJP sees it: the forward's inputs and outputs it reads, then the
 * cotangents that flow (o → dO); it writes the gradients of the float inputs (q → dQ).
 */
function vjpSite(
  fwd: RoutineSite,
  diff: readonly number[],
  withCt: readonly number[],
  readsInputs: boolean,
  readsOutputs: boolean,
): RoutineSite {
  const cotangents = withCt.map((j) => adjointName(fwd.outputs[j]!))
  const inputs = [...(readsInputs ? fwd.inputs : []), ...(readsOutputs ? fwd.outputs : []), ...cotangents]
  const outputs = diff.map((i) => adjointName(fwd.inputs[i]!))
  return { inputs, outputs, attrs: fwd.attrs, elementwise: false }
}
