// Attention keeps its log-sum-exp in float32 for bfloat16 inputs (bfloat16 emulated on the CPU).
import type { Layer } from "effect"
import { describe, expect, it } from "vitest"
import type { Backend } from "../src/core/backend.js"
import { cpuWithBfloat16, roundToBfloat16 } from "../src/backends/cpu/bfloat16.js"
import { valueAndGrad } from "../src/core/autodiff.js"
import { accumulatorDType, type DType } from "../src/core/dtype.js"
import type { Feed } from "../src/core/executor.js"
import { input, type Tensor } from "../src/core/graph.js"
import * as o from "../src/core/ops.js"
import { attention } from "../src/core/routines/attention.js"
import { maxRelDiff, randomArray } from "./helpers.js"
import { evalOn, expectClose, layerOf, reference } from "./backends/subjects.js"

describe("attention's log-sum-exp is float32 for bfloat16 inputs (bfloat16 emulated on the CPU)", () => {
  const [B, H, S, D] = [1, 2, 11, 4]
  // Integer q and one key vector for every position: each row's scores are one half-integer
  // (scale 1/2) in 11–13, exact in bfloat16, and the running sums count keys, so every step of
  // the bf16 reference is exact but lse's own rounding — which bfloat16 (lse 11–16) makes up to 0.03.
  const qData = Float32Array.from({ length: B * H * S * D }, (_, i) => 4 + ((i * 7) % 5))
  const kData = new Float32Array(B * S * D).fill(1)
  const vData = randomArray("float32", B * S * D, 3) as Float32Array
  roundToBfloat16(vData)
  const bf16 = layerOf(cpuWithBfloat16())

  it("declares and returns lse in float32, equal to a float64 logsumexp of the causal scores to float32 precision", async () => {
    const [q, k, v] = [
      input("q", [B, H, S, D], "bfloat16"),
      input("k", [B, 1, S, D], "bfloat16"),
      input("v", [B, 1, S, D], "bfloat16"),
    ]
    const lse = attention(q, k, v, { blockSize: 4 }).node.results[1]!
    expect(lse.dtype).toBe("float32")
    const [got] = await evalOn(
      bf16,
      [lse],
      new Map<Tensor, Feed>([
        [q, qData],
        [k, kData],
        [v, vData],
      ]),
    )
    expect(got).toBeInstanceOf(Float32Array)
    const want = new Float64Array(B * H * S)
    for (let row = 0; row < B * H * S; row++) {
      const r = row % S
      const s = Array.from({ length: r + 1 }, (_, c) => {
        let d = 0
        for (let j = 0; j < D; j++) d += qData[row * D + j]! * kData[c * D + j]!
        return d / Math.sqrt(D)
      })
      const m = Math.max(...s)
      want[row] = m + Math.log(s.reduce((a, x) => a + Math.exp(x - m), 0))
    }
    expect(maxRelDiff(got!, want)).toBeLessThan(1e-6)
    const asBf16 = Float32Array.from(want)
    roundToBfloat16(asBf16)
    expect(maxRelDiff(asBf16, want)).toBeGreaterThan(1e-3) // what a bfloat16 lse would be off by
  })

  it("its backward reads the float32 lse (and a float32 dLse) and matches float64 within bfloat16 rounding", async () => {
    const r = randomArray("float32", B * H * S * D, 4) as Float32Array,
      w = randomArray("float32", B * H * S, 5) as Float32Array
    const dataQ = randomArray("float32", B * H * S * D, 6) as Float32Array,
      dataK = randomArray("float32", B * S * D, 7) as Float32Array
    for (const a of [r, w, dataQ, dataK]) roundToBfloat16(a)
    const grads = async (dtype: DType, layer: Layer.Layer<Backend>) => {
      const [q, k, v] = [
        input("q", [B, H, S, D], dtype),
        input("k", [B, 1, S, D], dtype),
        input("v", [B, 1, S, D], dtype),
      ]
      const [rt, wt] = [input("r", [B, H, S, D], dtype), input("w", [B, H, S, 1], accumulatorDType(dtype))]
      const y = attention(q, k, v, { blockSize: 4 })
      // The loss reads o and lse, so the backward gets both cotangents (dLse in float32 for bf16).
      const loss = o.add(o.cast(o.sum(o.mul(y, rt)), wt.dtype), o.sum(o.mul(y.node.results[1]!, wt)))
      const g = valueAndGrad(loss, { q, k, v }).grads
      const host = (a: Float32Array) => (dtype === "float64" ? Float64Array.from(a) : a)
      const feeds = new Map<Tensor, Feed>([
        [q, host(dataQ)],
        [k, host(dataK)],
        [v, host(vData)],
        [rt, host(r)],
        [wt, host(w)],
      ])
      return evalOn(layer, [g.q!, g.k!, g.v!], feeds)
    }
    const got = await grads("bfloat16", bf16),
      want = await grads("float64", reference)
    got.forEach((g, i) => expectClose(`d${"qkv"[i]}`, g, want[i]!, 3e-2))
  })
})
