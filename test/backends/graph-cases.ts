import { expect } from "vitest"
import { valueAndGrad } from "../../src/core/autodiff.js"
import type { DType } from "../../src/core/dtype.js"
import type { Feed } from "../../src/core/executor.js"
import { input, type Tensor } from "../../src/core/graph.js"
import * as o from "../../src/core/ops.js"
import { rng } from "../../src/core/random.js"
import { attention } from "../../src/core/routines/attention.js"
import { logsumexp, rmsNorm, rope, silu, softmax, swiglu } from "../../src/core/routines/basic.js"
import { crossEntropy } from "../../src/core/routines/cross-entropy.js"
import { intArray, randomArray } from "../helpers.js"
import { type Subject, evalOn, expectClose, layerOf, reference } from "./subjects.js"

// ---------------------------------------------------------------------------------------------
// Graph cases
// ---------------------------------------------------------------------------------------------

export interface Case {
  readonly name: string
  /** Shapes of the float inputs (float32 under test, float64 in the reference). */
  readonly inputs: readonly (readonly number[])[]
  /** Fixed int32 inputs. */
  readonly ints?: readonly { readonly shape: readonly number[]; readonly data: Int32Array }[]
  readonly build: (xs: readonly Tensor[], ints: readonly Tensor[], dtype: DType) => Tensor | readonly Tensor[]
  /** Inputs in [0.5, ∞) (log, sqrt, recip, div). */
  readonly positive?: boolean
  readonly std?: number
  /** Also compare the gradients of Σ_j Σ(y_j ⊙ r_j) with respect to every float input. */
  readonly grad?: boolean
  readonly tol?: number
}

const unaryCase = (name: string, f: (x: Tensor) => Tensor, opts: Partial<Case> = {}): Case => ({
  name,
  inputs: [[3, 37]],
  build: ([x]) => f(x!),
  grad: true,
  ...opts,
})
const binaryCase = (name: string, f: (a: Tensor, b: Tensor) => Tensor, opts: Partial<Case> = {}): Case => ({
  name,
  inputs: [
    [5, 13],
    [5, 13],
  ],
  build: ([a, b]) => f(a!, b!),
  grad: true,
  ...opts,
})

/** int32 values including zeros, negatives and magnitudes whose products overflow. */
const mixedInts = (n: number, seed: number): Int32Array => {
  const r = rng(seed)
  return Int32Array.from({ length: n }, (_, i) =>
    i % 7 === 0 ? 0 : i % 5 === 0 ? Math.floor((r() - 0.5) * 4e9) : Math.floor((r() - 0.5) * 2000),
  )
}

const matmulCases: Case[] = [false, true].flatMap((transA) =>
  [false, true].map((transB): Case => {
    const [m, n, k] = [130, 70, 33]
    return {
      name: `matmul 130×70×33, batch 2${transA ? ", transA" : ""}${transB ? ", transB" : ""}`,
      inputs: [transA ? [2, k, m] : [2, m, k], transB ? [2, n, k] : [2, k, n]],
      build: ([a, b]) => o.matmul(a!, b!, { transA, transB }),
      grad: true,
    }
  }),
)

export const cases: Case[] = [
  // Unary (3 × 37: odd, not a multiple of the workgroup size)
  unaryCase("neg", o.neg),
  unaryCase("exp", o.exp),
  unaryCase("sin", o.sin),
  unaryCase("cos", o.cos),
  unaryCase("log", o.log, { positive: true }),
  unaryCase("sqrt", o.sqrt, { positive: true }),
  unaryCase("recip", o.recip, { positive: true }),
  { name: "sin and cos of large angles", inputs: [[257]], std: 300, build: ([x]) => [o.sin(x!), o.cos(x!)] },
  { name: "one element", inputs: [[1]], build: ([x]) => o.exp(x!), grad: true },

  // Binary, scalars and broadcasts
  binaryCase("add", o.add),
  binaryCase("sub", o.sub),
  binaryCase("mul", o.mul),
  binaryCase("maximum", o.maximum),
  binaryCase("div", o.div, { positive: true }),
  binaryCase("less (float)", o.less, { grad: false }),
  { name: "equal (float): x = rowmax(x)", inputs: [[6, 11]], build: ([x]) => o.equal(x!, o.max(x!, -1, true)) },
  {
    name: "number operands (one-element buffers)",
    inputs: [[4, 6]],
    build: ([x]) => o.sub(o.mul(x!, 2.5), 1),
    grad: true,
  },
  { name: "scalar tensor operand", inputs: [[4, 6], []], build: ([x, s]) => o.add(o.mul(x!, s!), s!), grad: true },
  {
    name: "broadcast both operands",
    inputs: [
      [3, 1],
      [1, 4],
    ],
    build: ([a, b]) => o.mul(a!, b!),
    grad: true,
  },
  {
    name: "where (int32 cond, scalar branch)",
    inputs: [
      [4, 6],
      [4, 6],
    ],
    ints: [{ shape: [4, 6], data: intArray(24, 2, 3) }],
    build: ([a, b], [c]) => [o.where(c!, a!, b!), o.where(c!, 0.5, a!)],
    grad: true,
  },
  {
    name: "where (float cond)",
    inputs: [
      [4, 6],
      [4, 6],
    ],
    build: ([a, b]) => o.where(o.less(a!, b!), a!, o.mul(b!, 3)),
    grad: true,
  },

  // int32 arithmetic: exact, wrapping modulo 2^32, division truncating (and x / 0 = 0)
  {
    name: "int32 add, sub, mul, div, maximum, less, equal",
    inputs: [],
    ints: [
      { shape: [97], data: mixedInts(97, 1) },
      { shape: [97], data: mixedInts(97, 2) },
    ],
    build: (_x, [a, b]) => [
      o.add(a!, b!),
      o.sub(a!, b!),
      o.mul(a!, b!),
      o.div(a!, b!),
      o.maximum(a!, b!),
      o.less(a!, b!),
      o.equal(a!, o.maximum(a!, b!)),
    ],
  },
  {
    name: "cast float → int32 (truncation) and int32 → float",
    inputs: [[50]],
    std: 20,
    ints: [{ shape: [50], data: mixedInts(50, 3) }],
    build: ([x], [i], dtype) => [o.cast(x!, "int32"), o.cast(i!, dtype)],
  },

  // Constants
  {
    name: "fill",
    inputs: [[5, 3]],
    build: ([x], _i, dtype) => [
      o.add(x!, o.full([5, 3], 1.5, dtype)),
      o.full([2, 2], -7, "int32"),
      o.zeros([3], dtype),
    ],
  },
  {
    name: "iota (int32 and float)",
    inputs: [],
    build: (_x, _i, dtype) => [o.iota([4, 5], 1, "int32"), o.iota([3, 4, 2], 1, dtype), o.iota([7], 0, "int32")],
  },

  // Copies (strided views)
  { name: "broadcast", inputs: [[3, 1, 5]], build: ([x]) => o.broadcastTo(x!, [2, 3, 4, 5]), grad: true },
  { name: "permute (rank 4)", inputs: [[2, 3, 4, 5]], build: ([x]) => o.permute(x!, [3, 1, 0, 2]), grad: true },
  {
    name: "permute (rank 8)",
    inputs: [[2, 2, 2, 2, 2, 2, 2, 3]],
    build: ([x]) => o.permute(x!, [7, 6, 5, 4, 3, 2, 1, 0]),
    grad: true,
  },
  { name: "transpose", inputs: [[37, 19]], build: ([x]) => o.transpose(x!), grad: true },
  { name: "slice", inputs: [[4, 9, 3]], build: ([x]) => o.slice(x!, 1, 2, 7), grad: true },
  { name: "pad", inputs: [[3, 5]], build: ([x]) => o.pad(x!, 1, 2, 1), grad: true },
  {
    name: "concat",
    inputs: [
      [2, 3, 4],
      [2, 5, 4],
    ],
    build: ([a, b]) => o.concat([a!, b!], 1),
    grad: true,
  },

  // Reductions: long contiguous rows, a long middle axis, the first axis, length-1 axes
  {
    name: "sum and max over a row of 1537",
    inputs: [[3, 1537]],
    build: ([x]) => [o.sum(x!, -1, true), o.max(x!, -1, true)],
    grad: true,
  },
  {
    name: "sum and max over a middle axis of 1100",
    inputs: [[4, 1100, 3]],
    build: ([x]) => [o.sum(x!, 1), o.max(x!, 1)],
    grad: true,
  },
  { name: "sum over the first axis", inputs: [[1000, 5]], build: ([x]) => o.sum(x!, 0), grad: true },
  {
    name: "reductions over an axis of length 1",
    inputs: [[5, 1, 3]],
    build: ([x]) => [o.sum(x!, 1), o.max(x!, 1)],
    grad: true,
  },
  { name: "sum of everything", inputs: [[37, 29]], build: ([x]) => o.sum(x!), grad: true },
  { name: "mean of one element", inputs: [[1]], build: ([x]) => o.mean(x!), grad: true },

  // Matmul: every transpose combination on sizes that are not multiples of the tile, and more
  ...matmulCases,
  {
    name: "matmul 1×1×1",
    inputs: [
      [1, 1],
      [1, 1],
    ],
    build: ([a, b]) => o.matmul(a!, b!),
    grad: true,
  },
  {
    name: "matmul 65×17 · 17×129",
    inputs: [
      [65, 17],
      [17, 129],
    ],
    build: ([a, b]) => o.matmul(a!, b!),
    grad: true,
  },
  {
    name: "matmul [2, 5, 7] · shared [7, 3]",
    inputs: [
      [2, 5, 7],
      [7, 3],
    ],
    build: ([a, b]) => o.matmul(a!, b!),
    grad: true,
  },
  {
    name: "matmul with k = 1000",
    inputs: [
      [3, 1000],
      [1000, 4],
    ],
    build: ([a, b]) => o.matmul(a!, b!),
    grad: true,
  },

  // Index kernels
  {
    name: "gather",
    inputs: [[7, 5]],
    ints: [{ shape: [3, 4], data: intArray(12, 7, 4) }],
    build: ([t], [i]) => o.gather(t!, i!),
    grad: true,
  },
  {
    name: "scatterAdd (repeated rows)",
    inputs: [[40, 3]],
    ints: [{ shape: [40], data: intArray(40, 6, 5) }],
    build: ([s], [i]) => o.scatterAdd(i!, s!, 6),
    grad: true,
  },
  {
    name: "takeAlong",
    inputs: [[9, 6]],
    ints: [{ shape: [9], data: intArray(9, 6, 6) }],
    build: ([x], [i]) => o.takeAlong(x!, i!),
    grad: true,
  },
  {
    name: "putAlong",
    inputs: [[9]],
    ints: [{ shape: [9], data: intArray(9, 6, 7) }],
    build: ([s], [i]) => o.putAlong(i!, s!, 6),
    grad: true,
  },

  // Routines, values and gradients
  { name: "logsumexp (V = 1001)", inputs: [[5, 1001]], std: 3, build: ([x]) => logsumexp(x!), grad: true },
  { name: "logsumexp (V = 1)", inputs: [[4, 1]], build: ([x]) => logsumexp(x!), grad: true },
  { name: "softmax", inputs: [[3, 7]], build: ([x]) => softmax(x!), grad: true },
  { name: "rmsNorm", inputs: [[2, 3, 8], [8]], build: ([x, w]) => rmsNorm(x!, w!), grad: true },
  { name: "rope", inputs: [[1, 2, 5, 8]], build: ([x]) => rope(x!, 10000, 3), grad: true },
  { name: "silu", inputs: [[4, 9]], std: 3, build: ([x]) => silu(x!), grad: true },
  {
    name: "swiglu",
    inputs: [
      [2, 3, 4],
      [6, 4],
      [6, 4],
      [4, 6],
    ],
    build: ([x, g, u, d]) => swiglu(x!, g!, u!, d!),
    grad: true,
  },
  {
    name: "attention",
    inputs: [
      [2, 2, 7, 4],
      [2, 2, 7, 4],
      [2, 2, 7, 4],
    ],
    build: ([q, k, v]) => attention(q!, k!, v!, { blockSize: 3 }),
    grad: true,
  },
  {
    name: "attention (GQA)",
    inputs: [
      [1, 4, 6, 4],
      [1, 2, 6, 4],
      [1, 2, 6, 4],
    ],
    build: ([q, k, v]) => attention(q!, k!, v!, { blockSize: 4 }),
    grad: true,
  },
  {
    // Longer than one 64-query block of the fast CPU kernel, and not a multiple of it.
    name: "attention (GQA, S = 150)",
    inputs: [
      [1, 4, 150, 8],
      [1, 2, 150, 8],
      [1, 2, 150, 8],
    ],
    build: ([q, k, v]) => attention(q!, k!, v!),
    grad: true,
  },
  {
    name: "crossEntropy with ignored targets",
    inputs: [[6, 5]],
    ints: [{ shape: [6], data: Int32Array.from([1, -100, 4, 0, -100, 2]) }],
    build: ([x], [t]) => crossEntropy(x!, t!),
    grad: true,
  },
  {
    name: "crossEntropy with ignored targets and weights",
    inputs: [
      [2, 6, 11],
      [2, 6],
    ],
    ints: [{ shape: [2, 6], data: Int32Array.from([1, -100, 4, 0, 10, 2, -100, -100, 3, 7, 9, 5]) }],
    build: ([x, w], [t]) => crossEntropy(x!, t!, { weights: w! }),
    grad: true,
  },
]

/** The case's graph in `dtype`: inputs, the output tensors (values, then gradients). */
export function instantiate(c: Case, dtype: DType) {
  const xs = c.inputs.map((s, i) => input(`x${i}`, s, dtype))
  const ints = (c.ints ?? []).map((f, i) => input(`i${i}`, f.shape, "int32"))
  const ys = [c.build(xs, ints, dtype)].flat() as Tensor[]
  const rs: Tensor[] = []
  let outputs = ys
  if (c.grad === true) {
    const loss = ys
      .map((y, j) => {
        const r = input(`r${j}`, y.shape, dtype)
        rs.push(r)
        return o.sum(o.mul(y, r))
      })
      .reduce((a, b) => o.add(a, b))
    const { grads } = valueAndGrad(loss, Object.fromEntries(xs.map((x, i) => [`x${i}`, x])))
    outputs = [...ys, ...xs.map((_, i) => grads[`x${i}`]!)]
  }
  return { xs, ints, rs, outputs }
}

export async function checkCase(subject: Subject, c: Case, seed = 1): Promise<void> {
  const test = instantiate(c, "float32")
  const ref = instantiate(c, "float64")
  const floats = [...test.xs, ...test.rs].map(
    (t, i) =>
      randomArray("float32", t.size, seed * 100 + i, {
        positive: c.positive === true && i < test.xs.length,
        std: c.std ?? 1,
      }) as Float32Array,
  )
  const feeds = (g: typeof test, wide: boolean) =>
    new Map<Tensor, Feed>([
      ...[...g.xs, ...g.rs].map((t, i) => [t, wide ? Float64Array.from(floats[i]!) : floats[i]!] as const),
      ...g.ints.map((t, i) => [t, c.ints![i]!.data] as const),
    ])
  const got = await evalOn(layerOf(subject.impl!), test.outputs, feeds(test, false))
  const want = await evalOn(reference, ref.outputs, feeds(ref, true))
  const values = test.outputs.length - (c.grad === true ? test.xs.length : 0) // then the gradients
  test.outputs.forEach((t, k) => {
    const what = `${c.name}: ${k < values ? `output ${k}` : `gradient of x${k - values}`}`
    if (t.dtype === "int32") expect(Array.from(got[k]!), what).toEqual(Array.from(want[k]!))
    else expectClose(what, got[k]!, want[k]!, c.tol ?? 1e-4)
  })
}
