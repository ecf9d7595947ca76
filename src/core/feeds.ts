/**
 * What `evaluate` accepts as the value of an input: a typed array of the input's dtype and size,
 * or `{ data, kind }` naming the memory kind it counts as. Anything else is a GraphError that
 * says what was given and what to pass.
 */
import { dtypeOf, type HostArray } from "./dtype.js"
import { GraphError } from "./errors.js"
import type { Tensor } from "./graph.js"
import { type MemoryKind, memoryKinds } from "./memory.js"

const isHostArray = (v: unknown): v is HostArray =>
  v instanceof Float32Array || v instanceof Float64Array || v instanceof Int32Array

const describe = (v: unknown): string =>
  v === null
    ? "null"
    : Array.isArray(v)
      ? `a plain array of ${v.length}`
      : typeof v === "object"
        ? (v.constructor?.name ?? "an object")
        : `${typeof v} ${String(v)}`

const hostArrayFor = (t: Tensor): string =>
  t.dtype === "float64" ? "Float64Array" : t.dtype === "int32" ? "Int32Array" : "Float32Array"

/** The data and memory kind of the feed for `t`, checked against its dtype and size. */
export function feedParts(t: Tensor, feed: unknown): { readonly data: HostArray; readonly kind: MemoryKind } {
  const wrapped = feed !== null && typeof feed === "object" && !ArrayBuffer.isView(feed) && !Array.isArray(feed)
  const data = wrapped ? (feed as { data?: unknown }).data : feed
  const kind = wrapped ? (feed as { kind?: unknown }).kind : "activations"
  const fix = `pass a ${hostArrayFor(t)} of ${t.size} values (e.g. ${hostArrayFor(t)}.from(values)) or { data, kind }`
  if (!isHostArray(data)) throw new GraphError({ message: `feed for ${t} is ${describe(data)}; ${fix}` })
  if (!memoryKinds.includes(kind as MemoryKind))
    throw new GraphError({
      message: `feed for ${t} has kind ${String(kind)}; a kind is one of ${memoryKinds.join(", ")}`,
    })
  // bfloat16 has no host array: its values travel as float32 and the backend rounds them.
  const fits = dtypeOf(data) === t.dtype || (t.dtype === "bfloat16" && data instanceof Float32Array)
  if (!fits || data.length !== t.size)
    throw new GraphError({
      message: `feed for ${t} has ${data.length} ${dtypeOf(data)} values; it needs ${t.size} ${t.dtype}`,
    })
  return { data, kind: kind as MemoryKind }
}

/** `evaluate`'s feeds must be a Map from input tensors to values. */
export function checkFeeds(feeds: unknown): void {
  if (!(feeds instanceof Map))
    throw new GraphError({
      message: `evaluate: feeds must be a Map from input tensors to their values, got ${describe(feeds)}; pass new Map([[x, Float32Array.from(values)]])`,
    })
}
