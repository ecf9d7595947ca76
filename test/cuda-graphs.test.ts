// Whole graphs on CUDA against the CPU backend in float64: a chunked LM head + cross-entropy
// training step and a chunked SwiGLU MLP.
import { Layer } from "effect"
import { describe, expect, it } from "vitest"
import { Backend } from "../src/core/backend.js"
import { valueAndGrad } from "../src/core/autodiff.js"
import type { DType } from "../src/core/dtype.js"
import type { Feed } from "../src/core/executor.js"
import { input, type Tensor } from "../src/core/graph.js"
import * as o from "../src/core/ops.js"
import { rng } from "../src/core/random.js"
import { checkpoint, chunked } from "../src/core/regions.js"
import { linear, swiglu } from "../src/core/routines/basic.js"
import { sumCrossEntropy, targetCount } from "../src/core/routines/cross-entropy.js"
import { cuda, evalOn, expectClose, hostOf, noGpu, normals, reference, roundBf16 } from "./backends/cuda-device.js"

// ---------------------------------------------------------------------------------------------
// Graphs: a training step on CUDA against the CPU backend in float64
// ---------------------------------------------------------------------------------------------

/**
 * One SGD step of a chunked LM head + cross-entropy: loss and the updated W, h's gradient. Built
 * twice (the dtype under test on CUDA, float64 on the CPU) over the same inputs.
 */
function lmHeadStep(dtype: DType, M: number, dims: { B: number; S: number; d: number; V: number }) {
  const { B, S, d, V } = dims
  const h = input("h", [B, S, d], dtype),
    W = input("W", [V, d], dtype),
    targets = input("targets", [B, S], "int32")
  const count = targetCount(targets, -100, dtype)
  const piece = (hh: Tensor, tt: Tensor) => sumCrossEntropy(linear(hh, W), tt)
  const loss = o.div(chunked(M, { axis: 1, combine: "sum" })(checkpoint(piece))(h, targets), count)
  const { value, grads } = valueAndGrad(loss, { h, W })
  const W1 = o.sub(W, o.mul(grads.W!, 0.5))
  return { inputs: { h, W, targets }, outputs: [value, W1, grads.h!] }
}

describe.skipIf(noGpu)("cuda graphs against the CPU backend in float64", () => {
  const dims = { B: 2, S: 13, d: 24, V: 301 }
  const r = rng(11)
  const targets = Int32Array.from({ length: dims.B * dims.S }, (_, i) =>
    i % 5 === 3 ? -100 : Math.floor(r() * dims.V),
  )
  const hData = normals(dims.B * dims.S * dims.d, 1),
    WData = normals(dims.V * dims.d, 2, { scale: 0.3 })

  async function compare(dtype: DType, M: number, tol: number) {
    const test = lmHeadStep(dtype, M, dims),
      ref = lmHeadStep("float64", 1, dims)
    const cudaLayer = Layer.succeed(Backend, cuda!)
    const live0 = cuda!.memory().live
    const got = await evalOn(
      cudaLayer,
      test.outputs,
      new Map<Tensor, Feed>([
        [test.inputs.h, hostOf(dtype, hData)],
        [test.inputs.W, hostOf(dtype, WData)],
        [test.inputs.targets, targets],
      ]),
    )
    const want = await evalOn(
      reference,
      ref.outputs,
      new Map<Tensor, Feed>([
        [ref.inputs.h, Float64Array.from(hData)],
        [ref.inputs.W, Float64Array.from(WData)],
        [ref.inputs.targets, targets],
      ]),
    )
    expect(cuda!.memory().live).toBe(live0) // the executor gave every buffer back
    const names = ["loss", "W after one step", "dL/dh"]
    got.forEach((g, i) => expectClose(`${names[i]} (${dtype}, M = ${M})`, g, want[i]!, tol))
  }

  for (const M of [1, 4, 13, 20]) {
    it(`chunked LM head + cross-entropy SGD step, float32, M = ${M}`, () => compare("float32", M, 1e-5))
  }
  it("chunked LM head + cross-entropy SGD step, float64, M = 3", () => compare("float64", 3, 1e-12))

  it("chunked SwiGLU MLP, float32, values and gradients", async () => {
    const [B, S, d, I] = [2, 9, 16, 40]
    const build = (dtype: DType, M: number) => {
      const x = input("x", [B, S, d], dtype),
        gate = input("gate", [I, d], dtype),
        up = input("up", [I, d], dtype),
        down = input("down", [d, I], dtype)
      const rr = input("r", [B, S, d], dtype)
      const y = chunked(M, { axis: 1 })((hh: Tensor) => swiglu(hh, gate, up, down))(x)
      const { value, grads } = valueAndGrad(o.sum(o.mul(y, rr)), { x, gate, up, down })
      return { ins: [x, gate, up, down, rr], outs: [value, grads.x!, grads.gate!, grads.up!, grads.down!] }
    }
    const data = [B * S * d, I * d, I * d, d * I, B * S * d].map((n, i) => normals(n, 20 + i, { scale: 0.5 }))
    const t = build("float32", 4),
      f = build("float64", 1)
    const got = await evalOn(
      Layer.succeed(Backend, cuda!),
      t.outs,
      new Map(t.ins.map((x, i) => [x, hostOf("float32", data[i]!)] as [Tensor, Feed])),
    )
    const want = await evalOn(
      reference,
      f.outs,
      new Map(f.ins.map((x, i) => [x, Float64Array.from(data[i]!)] as [Tensor, Feed])),
    )
    got.forEach((g, i) => expectClose(`swiglu output ${i}`, g, want[i]!, 1e-5))
  })

  // The public MST code accumulates the LM head's weight gradient in bf16, and its error grows
  // with M (2.9e-3 at M = 1 to 1.4e-2 at M = 128). Ours accumulates pieces in fp32 and casts once.
  it("a bf16 chunked LM head's weight gradient does not drift as M grows (fp32 accumulation)", async () => {
    const [S, d, V] = [256, 32, 384]
    const hd = normals(S * d, 31),
      Wd = normals(V * d, 32, { scale: 0.3 })
    const t = Int32Array.from({ length: S }, (_, i) => (i * 37) % V)
    const gradW = async (dtype: DType, M: number, layer: Layer.Layer<Backend>, data: readonly Float32Array[]) => {
      const h = input("h", [1, S, d], dtype),
        W = input("W", [V, d], dtype),
        tg = input("t", [1, S], "int32")
      const loss = o.div(
        chunked(M, { axis: 1, combine: "sum" })((hh: Tensor, tt: Tensor) => sumCrossEntropy(linear(hh, W), tt))(h, tg),
        targetCount(tg, -100, dtype === "float64" ? "float64" : "float32"),
      )
      const g = valueAndGrad(loss, { W }).grads.W
      const feeds = new Map<Tensor, Feed>([
        [h, dtype === "float64" ? Float64Array.from(data[0]!) : data[0]!],
        [W, dtype === "float64" ? Float64Array.from(data[1]!) : data[1]!],
        [tg, t],
      ])
      return (await evalOn(layer, [o.cast(g, dtype === "float64" ? "float64" : "float32")], feeds))[0]!
    }
    const inputs = [roundBf16(hd), roundBf16(Wd)] // both sides see the same bf16-representable data
    const want = await gradW("float64", 1, reference, inputs)
    const relErr = (got: ArrayLike<number>) => {
      let num = 0,
        den = 0
      for (let i = 0; i < want.length; i++) {
        num += (got[i]! - want[i]!) ** 2
        den += want[i]! ** 2
      }
      return Math.sqrt(num / den)
    }
    const errs: number[] = []
    for (const M of [1, 8, 64, 128])
      errs.push(relErr(await gradW("bfloat16", M, Layer.succeed(Backend, cuda!), inputs)))
    console.log(
      `bf16 LM-head weight-gradient relative error by M = 1, 8, 64, 128: ${errs.map((e) => e.toExponential(2)).join(", ")}`,
    )
    expect(errs[0]!).toBeLessThan(2e-2)
    expect(errs.at(-1)!).toBeLessThan(1.5 * errs[0]! + 1e-3) // flat in M, not growing
  })

  it("a bfloat16 linear layer (cast in the graph) with float32 accumulation", async () => {
    const [n, d, V] = [33, 64, 50]
    const x = input("x", [n, d], "float32"),
      W = input("W", [V, d], "float32")
    const y = o.cast(linear(o.cast(x, "bfloat16"), o.cast(W, "bfloat16")), "float32")
    const xd = normals(n * d, 1),
      Wd = normals(V * d, 2)
    const [got] = await evalOn(
      Layer.succeed(Backend, cuda!),
      [y],
      new Map<Tensor, Feed>([
        [x, xd],
        [W, Wd],
      ]),
    )
    const xr = input("x", [n, d], "float64"),
      Wr = input("W", [V, d], "float64")
    const [want] = await evalOn(
      reference,
      [linear(xr, Wr)],
      new Map<Tensor, Feed>([
        [xr, Float64Array.from(roundBf16(xd))],
        [Wr, Float64Array.from(roundBf16(Wd))],
      ]),
    )
    expectClose("bf16 linear", got!, want!, 8e-3)
  })
})
