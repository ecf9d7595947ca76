// The gradient norm's shares, Σ g² per gradient, are taken by the gradient pass as each gradient
// is complete: right after the node that makes it (so an offloaded gradient is read on the
// device, before it leaves for the host), and AdamW's norm reads no gradient.
import { describe, expect, it } from "vitest"
import { schedule, type Tensor } from "../src/core/graph.js"
import { offloadSchedule } from "../src/core/offload.js"
import { decodeConfigSync } from "../src/models/config.js"
import { type Mode, modes } from "../src/models/llama.js"
import { precisions } from "../src/models/optimizer.js"
import { stepGraphs } from "../src/models/step.js"
import { intArray, randomArray, referenceCpu, run } from "./helpers.js"

const model = decodeConfigSync({
  hidden_size: 16,
  intermediate_size: 40,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 32,
  max_position_embeddings: 64,
})
const S = 12
const graphs = (mode: Mode, fused: string[] = []) =>
  stepGraphs(model, 2, S, { mode, mlpChunks: 3, lmChunks: 2, precision: precisions.fp32, fused })

describe("the gradient norm's Σ g², taken as each gradient is made", () => {
  for (const mode of modes)
    it(`${mode}: each Σ g² comes right after its gradient, and with optimizer offload the gradient leaves right after it`, () => {
      const g = graphs(mode, ["adamw", "sumOfSquares"]).first
      const nodes = schedule(g.outputs)
      const at = new Map(nodes.map((n, i) => [n, i]))
      // Fused (sumOfSquares): between a gradient's node and its Σ g² run only other gradients' Σ g²
      // (one checkpoint region makes a whole layer's weight gradients at once) and the cotangent
      // sums of that same node's other inputs (the residual's), never the rest of the backward.
      const isSquare = new Set(g.squares.map((t) => t.node))
      g.gradients.forEach((grad, i) => {
        const between = nodes.slice(at.get(grad.node)! + 1, at.get(g.squares[i]!.node)!)
        expect(at.get(g.squares[i]!.node)!, g.names[i]).toBeGreaterThan(at.get(grad.node)!)
        const others = between.filter((n) => !isSquare.has(n))
        expect(others.length, g.names[i]).toBeLessThanOrEqual(grad.node.inputs.length)
        expect(
          others.every((n) => n.op === "add" || n.op === "cast"),
          g.names[i],
        ).toBe(true)
      })
      const stores = offloadSchedule(nodes, g.outputs, g.gradients, { gradients: true }).storeAfter
      const storedAt = new Map<Tensor, number>()
      for (const [i, ts] of stores) for (const t of ts) storedAt.set(t, i)
      // A gradient several weights share (one node makes a whole layer's) leaves after the last of their squares.
      for (const grad of g.gradients) {
        const readers = nodes.flatMap((n, i) => (n.inputs.includes(grad) ? [i] : []))
        expect(storedAt.get(grad)).toBe(Math.max(at.get(grad.node)!, ...readers))
        expect(storedAt.get(grad)! - at.get(grad.node)!).toBeLessThanOrEqual(g.gradients.length)
      }
    })

  it("AdamW's norm reads no gradient: it sums the squares the gradient pass gave it", () => {
    const a = graphs("mst+checkpoint").adamw
    const read = new Set(schedule([a.gradNorm]).flatMap((n) => n.inputs))
    for (const name of Object.keys(a.grads)) {
      expect(read.has(a.grads[name]!), name).toBe(false)
      expect(read.has(a.squares[name]!), name).toBe(true)
    }
  })

  for (const tied of [false, true])
    it(`each square is Σ g² of its gradient (float32, reference CPU, against a float64 sum in JavaScript)${tied ? ", tied embeddings: the square waits for both uses" : ""}`, async () => {
      const c = decodeConfigSync({ ...model, tie_word_embeddings: tied })
      const g = stepGraphs(c, 2, S, {
        mode: "mst+checkpoint",
        mlpChunks: 3,
        lmChunks: 2,
        precision: precisions.fp32,
      }).first
      const feeds = new Map<Tensor, Float64Array | Int32Array | Float32Array>()
      Object.values(g.model.params).forEach((p, i) =>
        feeds.set(p, randomArray("float32", p.size, 10 + i, { std: 0.2 }) as Float32Array),
      )
      feeds.set(g.model.tokens, intArray(2 * S, model.vocab_size, 3))
      feeds.set(g.model.targets, intArray(2 * S, model.vocab_size, 4))
      feeds.set(g.model.count, Float32Array.of(2 * S))
      const { values } = await run(g.outputs, feeds, { layer: referenceCpu })
      const n = g.names.length
      for (let i = 0; i < n; i++) {
        const grad = values[1 + i]!
        const want = Array.from(grad).reduce((s, x) => s + x * x, 0)
        expect(want, g.names[i]).toBeGreaterThan(0)
        expect(Math.abs(values[1 + n + i]![0]! - want) / want, g.names[i]).toBeLessThan(1e-5)
      }
    })
})
