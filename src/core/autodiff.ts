/**
 * Reverse-mode autodiff as a graph transform: the backward pass is more graph, built from the
 * VJP rules in `primitives.ts` (and `regions.ts` for regions), so every backend runs it and the
 * executor plans its memory like any other graph.
 */
import { isFloat, wider } from "./dtype.js"
import { GraphError } from "./errors.js"
import { type Node, schedule, type Tensor, withPhase } from "./graph.js"
import * as o from "./ops.js"
import { ruleOf, siteOf } from "./primitives.js"
import { regionVjp } from "./regions.js"

function nodeVjp(node: Node, cts: readonly (Tensor | undefined)[]): readonly (Tensor | undefined)[] {
  if (node.op === "region") return regionVjp(node as Node<"region">, cts)
  if (node.op === "input") return []
  const given = cts[0]
  if (given === undefined) return node.inputs.map(() => undefined)
  const ct = o.cast(given, node.results[0]!.dtype) // a wider (fp32) cotangent enters the rule in the op's dtype
  return ruleOf(node.op).vjp(ct, siteOf(node))
}

/**
 * Cotangents of `wrt` given cotangents of `outputs` (undefined where nothing depends on it).
 * The sweep stops at `wrt`: a region differentiates its body with respect to its parameters
 * without walking into the graph outside. `onFinal(k, g)` is called as soon as `wrt[k]`'s
 * cotangent is complete (its last reader differentiated), so what it builds on `g` comes right
 * after `g` in the schedule, not after the whole sweep.
 */
export function vjp(
  outputs: readonly Tensor[],
  cotangents: readonly Tensor[],
  wrt: readonly Tensor[],
  onFinal?: (k: number, g: Tensor) => void,
): (Tensor | undefined)[] {
  const targets = new Set(wrt)
  const nodes = schedule(outputs, targets)
  // Only tensors downstream of `wrt` can carry a gradient back to it.
  const live = new Set<Tensor>(targets)
  for (const n of nodes)
    if (n.inputs.some((i) => live.has(i))) for (const r of n.results) if (isFloat(r.dtype)) live.add(r)

  return withPhase("backward", () => {
    const ct = new Map<Tensor, Tensor>()
    const accumulate = (t: Tensor, g: Tensor) => {
      if (g.shape.length !== t.shape.length || g.shape.some((d, i) => d !== t.shape[i])) {
        throw new GraphError({ message: `internal: gradient ${g} does not match ${t}` })
      }
      // Gradients may be wider than their tensor (fp32 accumulators for bf16 weights): add in the wider type.
      const prev = ct.get(t)
      if (prev === undefined) return void ct.set(t, g)
      const d = wider(prev.dtype, g.dtype)
      ct.set(t, o.add(o.cast(prev, d), o.cast(g, d)))
    }
    outputs.forEach((t, i) => accumulate(t, cotangents[i]!))
    // For onFinal: how many reads of each of `wrt` are left to differentiate.
    const left = new Map<Tensor, number>()
    if (onFinal)
      for (const n of nodes) for (const i of n.inputs) if (targets.has(i)) left.set(i, (left.get(i) ?? 0) + 1)
    const read = (w: Tensor) => {
      const n = left.get(w)! - 1
      left.set(w, n)
      const g = ct.get(w)
      if (n === 0 && g !== undefined) onFinal!(wrt.indexOf(w), g)
    }
    for (let k = nodes.length - 1; k >= 0; k--) {
      const node = nodes[k]!
      const cts = node.results.map((r) => ct.get(r))
      if (cts.some((c) => c !== undefined)) {
        const grads = nodeVjp(node, cts)
        node.inputs.forEach((inp, i) => {
          const g = grads[i]
          if (g !== undefined && live.has(inp)) accumulate(inp, g)
        })
      }
      for (const inp of node.inputs) if (left.has(inp)) read(inp)
    }
    return wrt.map((w) => ct.get(w))
  })
}

export interface ValueAndGrad<K extends string> {
  readonly value: Tensor
  readonly grads: { readonly [P in K]: Tensor }
}

/**
 * The gradient of a scalar `loss` with respect to each tensor of `wrt` (zeros where the loss
 * does not depend on it). `onGradient` sees each gradient as soon as it is complete (`vjp`'s
 * onFinal); a zero gradient it does not see.
 */
export function valueAndGrad<K extends string>(
  loss: Tensor,
  wrt: { readonly [P in K]: Tensor },
  onGradient?: (name: K, g: Tensor) => void,
): ValueAndGrad<K> {
  if (loss.size !== 1 || !isFloat(loss.dtype)) {
    throw new GraphError({
      message: `valueAndGrad: the loss must be a float scalar, got ${loss}; reduce it with sum() or mean() first`,
    })
  }
  const names = Object.keys(wrt) as K[]
  const seed = withPhase("backward", () => o.full(loss.shape, 1, loss.dtype))
  const gs = vjp(
    [loss],
    [seed],
    names.map((n) => wrt[n]),
    onGradient && ((k, g) => onGradient(names[k]!, g)),
  )
  const grads = {} as { [P in K]: Tensor }
  names.forEach((n, i) => (grads[n] = gs[i] ?? withPhase("backward", () => o.zerosLike(wrt[n]))))
  return { value: loss, grads }
}

export const grad = <K extends string>(loss: Tensor, wrt: { readonly [P in K]: Tensor }) =>
  valueAndGrad(loss, wrt).grads
