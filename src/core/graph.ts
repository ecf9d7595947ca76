/**
 * The graph: immutable symbolic tensors. Building a graph only records nodes; nothing touches
 * a device until an executor runs it. Every node knows its inputs, its attributes and the
 * shape and dtype of each result, so shape errors surface while the graph is built.
 */
import { numel } from "./backend.js"
import type { DType } from "./dtype.js"
import { ShapeError } from "./errors.js"
import type { PrimitiveAttrs } from "./primitives.js"
import type { RegionAttrs } from "./region-types.js"

export type Primitive = keyof PrimitiveAttrs
export type Op = Primitive | "input" | "region"

export interface NodeAttrs extends PrimitiveAttrs {
  /** A leaf the caller binds at run time: a parameter, a data batch, a region's argument. */
  input: { readonly name: string }
  region: RegionAttrs
}

/** Forward nodes come from model code; backward nodes from `grad`. Values a backward node
 * reads from the forward pass are the "saved activations" of the memory report. */
export type Phase = "forward" | "backward"

export interface Node<K extends Op = Op> {
  readonly id: number
  readonly op: K
  readonly inputs: readonly Tensor[]
  readonly attrs: NodeAttrs[K]
  readonly results: readonly Tensor[]
  readonly phase: Phase
}

export interface TensorType {
  readonly shape: readonly number[]
  readonly dtype: DType
}

export class Tensor implements TensorType {
  constructor(
    readonly node: Node,
    readonly index: number,
    readonly shape: readonly number[],
    readonly dtype: DType,
  ) {}
  get rank(): number {
    return this.shape.length
  }
  get size(): number {
    return numel(this.shape)
  }
  toString(): string {
    return `Tensor(${this.node.op}#${this.node.id}, [${this.shape.join(", ")}], ${this.dtype})`
  }
}

let nextId = 0
let currentPhase: Phase = "forward"

/** Ids grow with creation, so creation order is a valid execution order. */
export const peekNextId = (): number => nextId

export function makeNode<K extends Op>(
  op: K,
  inputs: readonly Tensor[],
  attrs: NodeAttrs[K],
  types: readonly TensorType[],
): Node<K> {
  const results: Tensor[] = []
  const node: Node<K> = { id: nextId++, op, inputs, attrs, results, phase: currentPhase }
  types.forEach((t, i) => results.push(new Tensor(node as Node, i, [...t.shape], t.dtype)))
  return node
}

/** Runs `build` with new nodes tagged as `phase` (grad uses it to mark backward nodes). */
export function withPhase<A>(phase: Phase, build: () => A): A {
  const saved = currentPhase
  currentPhase = phase
  try {
    return build()
  } finally {
    currentPhase = saved
  }
}

/**
 * Throws a ShapeError unless `shape` is an array of non-negative whole numbers (`what` names
 * the op and its argument in the message).
 */
export function checkShape(op: string, what: string, shape: unknown): asserts shape is readonly number[] {
  const dims = Array.isArray(shape) ? (shape as unknown[]) : undefined
  const bad = dims === undefined ? undefined : dims.findIndex((d) => !(Number.isSafeInteger(d) && (d as number) >= 0))
  if (dims !== undefined && bad === -1) return
  const shown = dims === undefined ? String(shape) : `[${dims.map(String).join(", ")}]`
  const which = dims === undefined ? "is not an array" : `has ${String(dims[bad!])} at dim ${bad}`
  throw new ShapeError({
    op,
    shapes: [],
    message: `${what}: shape ${shown} ${which}; a shape is an array of non-negative integers, e.g. [2, 3]`,
  })
}

/** A leaf tensor, bound to data when the graph runs. */
export function input(name: string, shape: readonly number[], dtype: DType = "float32"): Tensor {
  checkShape("input", `input "${name}"`, shape)
  return makeNode("input", [], { name }, [{ shape, dtype }]).results[0]!
}

/**
 * The nodes needed to compute `outputs`, in execution (creation) order. The walk stops at
 * `stop` tensors: they are bound from outside (region parameters, caller-provided values).
 */
export function schedule(outputs: readonly Tensor[], stop: ReadonlySet<Tensor> = new Set()): Node[] {
  const seen = new Set<Node>()
  const stack: Tensor[] = outputs.filter((t) => !stop.has(t))
  while (stack.length > 0) {
    const t = stack.pop()!
    if (seen.has(t.node)) continue
    seen.add(t.node)
    for (const i of t.node.inputs) if (!stop.has(i) && !seen.has(i.node)) stack.push(i)
  }
  return [...seen].sort((a, b) => a.id - b.id)
}
