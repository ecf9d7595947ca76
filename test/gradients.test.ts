// Every primitive and routine's gradient rule against central finite differences, in float64.
import { describe, expect, it } from "vitest"
import * as o from "../src/core/ops.js"
import { attention } from "../src/core/routines/attention.js"
import { logsumexp, rmsNorm, rope, softmax, swiglu } from "../src/core/routines/basic.js"
import { crossEntropy } from "../src/core/routines/cross-entropy.js"
import { checkpoint, chunked } from "../src/core/regions.js"
import { grad } from "../src/core/autodiff.js"
import { input, type Tensor } from "../src/core/graph.js"
import type { GradCase } from "./helpers.js"
import { gradientError, intArray, randomArray, referenceCpu, run } from "./helpers.js"

const unary = (f: (x: Tensor) => Tensor, positive = false): GradCase => ({
  shapes: [[3, 4]],
  build: ([x]) => f(x!),
  positive,
})
const binary = (
  f: typeof o.add,
  shapes: number[][] = [
    [3, 4],
    [3, 4],
  ],
): GradCase => ({ shapes, build: ([a, b]) => f(a!, b!) })

const cases: Record<string, GradCase> = {
  neg: unary(o.neg),
  exp: unary(o.exp),
  log: unary(o.log, true),
  sqrt: unary(o.sqrt, true),
  recip: unary(o.recip, true),
  sin: unary(o.sin),
  cos: unary(o.cos),
  add: binary(o.add),
  sub: binary(o.sub),
  mul: binary(o.mul),
  div: {
    shapes: [
      [3, 4],
      [3, 4],
    ],
    build: ([a, b]) => o.div(a!, b!),
    positive: true,
  },
  maximum: binary(o.maximum),
  "add (broadcast)": binary(o.add, [[3, 4], [4]]),
  "mul (broadcast both)": binary(o.mul, [
    [3, 1],
    [1, 4],
  ]),
  "mul (scalar)": binary(o.mul, [[3, 4], []]),
  where: {
    shapes: [
      [2, 5],
      [2, 5],
    ],
    fixed: [{ shape: [2, 5], data: intArray(10, 2, 3) }],
    build: ([a, b], [c]) => o.where(c!, a!, b!),
  },
  reshape: { shapes: [[2, 6]], build: ([x]) => o.mul(o.reshape(x!, [3, 4]), o.reshape(x!, [3, 4])) },
  broadcast: { shapes: [[3, 1]], build: ([x]) => o.broadcastTo(x!, [2, 3, 4]) },
  permute: { shapes: [[2, 3, 4]], build: ([x]) => o.permute(x!, [2, 0, 1]) },
  slice: { shapes: [[4, 5]], build: ([x]) => o.slice(x!, 1, 1, 4) },
  pad: { shapes: [[2, 3]], build: ([x]) => o.pad(x!, 0, 1, 2) },
  concat: {
    shapes: [
      [2, 3],
      [2, 2],
    ],
    build: ([a, b]) => o.concat([a!, b!], 1),
  },
  sum: { shapes: [[3, 4, 2]], build: ([x]) => o.sum(x!, 1) },
  max: { shapes: [[3, 5]], build: ([x]) => o.max(x!, -1) },
  matmul: {
    shapes: [
      [2, 3, 4],
      [2, 4, 5],
    ],
    build: ([a, b]) => o.matmul(a!, b!),
  },
  "matmul transA": {
    shapes: [
      [2, 4, 3],
      [2, 4, 5],
    ],
    build: ([a, b]) => o.matmul(a!, b!, { transA: true }),
  },
  "matmul transB": {
    shapes: [
      [3, 4],
      [5, 4],
    ],
    build: ([a, b]) => o.matmul(a!, b!, { transB: true }),
  },
  "matmul transA transB": {
    shapes: [
      [4, 3],
      [5, 4],
    ],
    build: ([a, b]) => o.matmul(a!, b!, { transA: true, transB: true }),
  },
  gather: {
    shapes: [[5, 3]],
    fixed: [{ shape: [2, 4], data: intArray(8, 5, 4) }],
    build: ([t], [i]) => o.gather(t!, i!),
  },
  scatterAdd: {
    shapes: [[6, 3]],
    fixed: [{ shape: [6], data: intArray(6, 4, 5) }],
    build: ([s], [i]) => o.scatterAdd(i!, s!, 4),
  },
  takeAlong: {
    shapes: [[4, 6]],
    fixed: [{ shape: [4], data: intArray(4, 6, 6) }],
    build: ([x], [i]) => o.takeAlong(x!, i!),
  },
  putAlong: {
    shapes: [[4]],
    fixed: [{ shape: [4], data: intArray(4, 6, 7) }],
    build: ([s], [i]) => o.putAlong(i!, s!, 6),
  },

  logsumexp: { shapes: [[3, 7]], build: ([x]) => logsumexp(x!) },
  softmax: { shapes: [[3, 7]], build: ([x]) => softmax(x!) },
  rmsNorm: { shapes: [[2, 3, 8], [8]], build: ([x, w]) => rmsNorm(x!, w!) },
  rope: { shapes: [[1, 2, 5, 8]], build: ([x]) => rope(x!, 10000, 3) },
  swiglu: {
    shapes: [
      [2, 3, 4],
      [6, 4],
      [6, 4],
      [4, 6],
    ],
    build: ([x, g, u, d]) => swiglu(x!, g!, u!, d!),
  },
  attention: {
    shapes: [
      [2, 2, 7, 4],
      [2, 2, 7, 4],
      [2, 2, 7, 4],
    ],
    build: ([q, k, v]) => attention(q!, k!, v!, { blockSize: 3 }),
  },
  "attention (GQA)": {
    shapes: [
      [1, 4, 6, 4],
      [1, 2, 6, 4],
      [1, 2, 6, 4],
    ],
    build: ([q, k, v]) => attention(q!, k!, v!, { blockSize: 4 }),
  },
  crossEntropy: {
    shapes: [[6, 5]],
    fixed: [{ shape: [6], data: Int32Array.from([1, -100, 4, 0, -100, 2]) }],
    build: ([x], [t]) => crossEntropy(x!, t!),
  },
  "crossEntropy (weights)": {
    shapes: [[6, 5], [6]],
    fixed: [{ shape: [6], data: Int32Array.from([1, -100, 4, 0, 3, 2]) }],
    build: ([x, w], [t]) => crossEntropy(x!, t!, { weights: w! }),
  },
  checkpoint: {
    shapes: [
      [3, 4],
      [4, 4],
    ],
    build: ([x, w]) => checkpoint((a) => o.exp(o.matmul(a!, w!)))(x!),
  },
  "chunked concat (uneven)": {
    shapes: [
      [2, 5, 3],
      [3, 3],
    ],
    build: ([x, w]) => chunked(2, { axis: 1 })((a) => o.sin(o.matmul(a!, w!)))(x!),
  },
  "chunked sum": {
    shapes: [[2, 5, 3], [3]],
    build: ([x, w]) => chunked(3, { axis: 1, combine: "sum" })((a) => o.sum(o.mul(o.exp(a!), w!)))(x!),
  },
}

describe("gradient rules match finite differences (float64)", () => {
  for (const [name, c] of Object.entries(cases)) {
    it(name, async () => {
      expect(await gradientError(c)).toBeLessThan(1e-7)
    })
  }
})

// The routines again with every fused kernel off: their reference bodies must be right too.
describe("reference bodies of routines match finite differences (float64, no fused kernels)", () => {
  for (const name of ["logsumexp", "swiglu", "attention (GQA)", "crossEntropy", "crossEntropy (weights)"]) {
    it(name, async () => {
      expect(await gradientError(cases[name]!, 2, referenceCpu)).toBeLessThan(1e-7)
    })
  }
})

// Rules a finite difference cannot see, checked against their closed forms.
describe("gradient rules with closed forms", () => {
  const x = input("x", [5], "float64")
  const r = input("r", [5], "float64")
  const xs = randomArray("float64", 5, 11)
  const rs = randomArray("float64", 5, 12)
  const feeds = new Map([
    [x, xs],
    [r, rs],
  ])

  it("cast passes the gradient through, cast back to the input dtype", async () => {
    const g = grad(o.sum(o.mul(o.cast(o.cast(x, "float32"), "float64"), r)), { x }).x
    const [gv] = (await run([g], feeds)).values
    expect(g.dtype).toBe("float64")
    expect([...gv!]).toEqual([...Float32Array.from(rs)]) // the cotangent flows back through float32
  })

  it("stopGradient blocks the gradient: d/dx (stop(x²) + x)·r = r", async () => {
    const g = grad(o.sum(o.mul(o.add(o.stopGradient(o.mul(x, x)), x), r)), { x }).x
    const [gv] = (await run([g], feeds)).values
    expect([...gv!]).toEqual([...rs])
  })

  it("indices get no gradient, and a loss that ignores a parameter gives it zeros", async () => {
    const unused = input("unused", [2, 3], "float64")
    const g = grad(o.sum(o.mul(x, r)), { x, unused })
    const [gu] = (await run([g.unused], feeds)).values
    expect([...gu!]).toEqual([0, 0, 0, 0, 0, 0])
  })
})
