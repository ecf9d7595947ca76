/**
 * When the executor moves values to the host tier and back (`RunOptions.offload`), decided from
 * the schedule alone, so the plan and the run do exactly the same:
 * - an activation (a forward value a backward node reads) goes to the host after its last
 *   forward reader, and comes back one step ahead: just before the first backward reader of the
 *   activations that come back before it (its layer's successor in the backward), so a copy
 *   engine can bring it in while that layer computes;
 * - a requested gradient goes to the host once its last reader ran, and stays there (the
 *   optimizer reads it in place).
 * The device copy of a stored value is let go at the next store, and the host copy of a loaded
 * one at the next load, not at once, so that a copy engine's copy can overlap the next layer's
 * work (the CUDA backend copies between the tiers on a stream of its own).
 */
import { bytesPerElement } from "./dtype.js"
import type { Node, Tensor } from "./graph.js"

export interface OffloadOptions {
  /** Saved activations wait for the backward in the host tier. */
  readonly activations?: boolean
  /**
   * At most this many bytes of them (default: all): those stored first, which wait longest,
   * go; the rest stay on the device.
   */
  readonly activationBytes?: number
  /** The requested gradients (`RunOptions.gradients`) are handed back in the host tier. */
  readonly gradients?: boolean
}

export interface OffloadSchedule {
  /** Node index → the values stored to the host right after it runs. */
  readonly storeAfter: ReadonlyMap<number, readonly Tensor[]>
  /** Node index → the activations brought back right before it runs. */
  readonly loadBefore: ReadonlyMap<number, readonly Tensor[]>
  /** The first backward node: device copies still waiting to be let go are let go before it. */
  readonly firstBackward: number
}

const push = <K, V>(m: Map<K, V[]>, k: K, v: V) => {
  const list = m.get(k)
  if (list === undefined) m.set(k, [v])
  else list.push(v)
}

/** The stores and loads for `nodes` (a top-level schedule) that return `outputs`. */
export function offloadSchedule(
  nodes: readonly Node[],
  outputs: readonly Tensor[],
  gradients: readonly Tensor[],
  opts: OffloadOptions,
): OffloadSchedule {
  const index = new Map(nodes.map((n, i) => [n, i]))
  const lastForward = new Map<Tensor, number>()
  const firstBackward = new Map<Tensor, number>()
  const lastReader = new Map<Tensor, number>()
  nodes.forEach((n, i) => {
    for (const t of n.inputs) {
      lastReader.set(t, i)
      if (n.phase === "forward") lastForward.set(t, i)
      else if (!firstBackward.has(t)) firstBackward.set(t, i)
    }
  })
  const storeAfter = new Map<number, Tensor[]>()
  const loadBefore = new Map<number, Tensor[]>()
  const returned = new Set(outputs)

  if (opts.activations) {
    // Saved values produced here (not bound inputs, not outputs), stored after their last forward reader.
    let saved: { t: Tensor; stored: number; needed: number }[] = []
    for (const [t, needed] of firstBackward) {
      const producer = index.get(t.node)
      if (producer === undefined || t.node.phase !== "forward" || returned.has(t)) continue
      const stored = lastForward.get(t) ?? producer
      if (stored < needed - 1) saved.push({ t, stored, needed })
    }
    // Within the budget, the values that wait longest go first.
    const budget = opts.activationBytes ?? Infinity
    if (Number.isFinite(budget)) {
      saved.sort((a, b) => a.stored - b.stored || b.needed - a.needed)
      let total = 0
      saved = saved.filter((s) => {
        const bytes = s.t.size * bytesPerElement[s.t.dtype]
        if (total + bytes > budget) return false
        total += bytes
        return true
      })
    }
    saved.sort((a, b) => a.needed - b.needed)
    // Group by first backward reader; each group comes back before the previous group's reader.
    let previousNeeded = -1
    let loadAt = -1
    for (const s of saved) {
      if (s.needed !== previousNeeded) {
        loadAt = previousNeeded < 0 ? s.needed : previousNeeded
        previousNeeded = s.needed
      }
      push(storeAfter, s.stored, s.t)
      push(loadBefore, Math.min(s.needed, Math.max(loadAt, s.stored + 1)), s.t)
    }
  }
  if (opts.gradients) {
    for (const t of new Set(gradients)) {
      const producer = index.get(t.node)
      if (producer === undefined) continue
      push(storeAfter, Math.max(producer, lastReader.get(t) ?? producer), t)
    }
  }
  const backward = nodes.findIndex((n) => n.phase === "backward")
  return { storeAfter, loadBefore, firstBackward: backward < 0 ? nodes.length : backward }
}
