// The README's snippet, runnable: plan the memory of a chunked LM head + loss at S = 4096.
//   npx tsx examples/quickstart.ts
import {
  chunked,
  input,
  makeCpuBackend,
  linear,
  ops as o,
  plan,
  sumCrossEntropy,
  targetCount,
  type Tensor,
  valueAndGrad,
} from "miniseq"

const h = input("h", [1, 4096, 64]) // [B, S, d]: symbolic, nothing runs yet
const W = input("lm_head", [32000, 64]) // [V, d], Hugging Face layout
const targets = input("targets", [1, 4096], "int32")

// Σ of token losses, one mini-sequence of S/8 tokens at a time (W is shared by every piece),
// divided once by the global number of non-ignored targets.
const pieceLoss = (x: Tensor, t: Tensor) => sumCrossEntropy(linear(x, W), t)
const loss = o.div(chunked(8, { axis: 1, combine: "sum" })(pieceLoss)(h, targets), targetCount(targets))

const { grads } = valueAndGrad(loss, { h, W }) // the backward pass is more graph

const report = plan(
  [loss, grads.h, grads.W],
  new Map([
    [h, "activations"],
    [W, "weights"],
    [targets, "activations"],
  ] as const),
  { gradients: [grads.h, grads.W], for: makeCpuBackend() },
)
console.log(`peak ${(report.peak / 2 ** 20).toFixed(1)} MiB`, report.atPeak)
