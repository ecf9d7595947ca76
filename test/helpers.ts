import { Effect, type Layer } from "effect"
import type { Backend } from "../src/core/backend.js"
import { cpuBackendLayer, makeCpuBackend } from "../src/backends/cpu/index.js"
import { type DType, type HostArray, hostArray } from "../src/core/dtype.js"
import { evaluate, type Feed, type RunOptions } from "../src/core/executor.js"
import { input, type Tensor } from "../src/core/graph.js"
import { valueAndGrad } from "../src/core/autodiff.js"
import { normal, rng } from "../src/core/random.js"

export const propertyRuns = (base: number): number =>
  Math.max(1, Math.round(base * Number(process.env.MINISEQ_PROPERTY_SCALE ?? 1)))

const fusedCpu = cpuBackendLayer()
/** The CPU backend without fused kernels: every routine runs its reference body. */
export const referenceCpu = cpuBackendLayer(makeCpuBackend({ fused: false }))

export async function run(
  outputs: readonly Tensor[],
  feeds: ReadonlyMap<Tensor, Feed>,
  opts: RunOptions & { layer?: Layer.Layer<Backend> } = {},
) {
  return Effect.runPromise(evaluate(outputs, feeds, opts).pipe(Effect.provide(opts.layer ?? fusedCpu)))
}

export function randomArray(
  dtype: DType,
  n: number,
  seed: number,
  opts: { positive?: boolean; std?: number } = {},
): HostArray {
  const a = hostArray(dtype, n)
  const r = rng(seed)
  const xs = normal(r, n, opts.std ?? 1)
  for (let i = 0; i < n; i++) a[i] = opts.positive ? 0.5 + Math.abs(xs[i]!) : xs[i]!
  return a
}

export function intArray(n: number, below: number, seed: number): Int32Array {
  const r = rng(seed)
  return Int32Array.from({ length: n }, () => Math.floor(r() * below))
}

export const maxRelDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let scale = 0
  let diff = 0
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(a[i]!), Math.abs(b[i]!))
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!))
  }
  return scale === 0 ? diff : diff / scale
}

export interface GradCase {
  /** Shapes of the differentiable inputs. */
  readonly shapes: readonly (readonly number[])[]
  /** Fixed (non-differentiated) inputs: index tensors, masks. */
  readonly fixed?: readonly { readonly shape: readonly number[]; readonly data: HostArray }[]
  readonly build: (xs: readonly Tensor[], fixed: readonly Tensor[]) => Tensor
  readonly positive?: boolean
}

/**
 * Compares the analytic gradient of Σ(build(x) ⊙ R) with central differences along random
 * directions, in float64. Returns the worst relative error.
 */
export async function gradientError(c: GradCase, seed = 1, layer?: Layer.Layer<Backend>): Promise<number> {
  const xs = c.shapes.map((s, i) => input(`x${i}`, s, "float64"))
  const fixed = (c.fixed ?? []).map((f, i) =>
    input(`f${i}`, f.shape, f.data instanceof Int32Array ? "int32" : "float64"),
  )
  const y = c.build(xs, fixed)
  const rT = input("r", y.shape, "float64")
  const { sum, mul } = await import("../src/core/ops.js")
  const loss = sum(mul(y, rT))
  const { grads } = valueAndGrad(loss, Object.fromEntries(xs.map((x, i) => [`x${i}`, x])))
  const data = xs.map((x, i) => randomArray("float64", x.size, seed * 31 + i, { positive: c.positive }) as Float64Array)
  const r = randomArray("float64", rT.size, seed * 97) as Float64Array
  const feeds = (vals: readonly Float64Array[]) =>
    new Map<Tensor, Feed>([
      ...xs.map((x, i) => [x, vals[i]!] as const),
      ...fixed.map((f, i) => [f, c.fixed![i]!.data] as const),
      [rT, r],
    ])
  const gradOut = await run(
    xs.map((_, i) => grads[`x${i}`]!),
    feeds(data),
    { layer },
  )
  let worst = 0
  const h = 1e-5
  for (let d = 0; d < 3; d++) {
    const dirs = xs.map((x, i) => randomArray("float64", x.size, seed * 1000 + d * 10 + i) as Float64Array)
    const shifted = (sign: number) => data.map((v, i) => v.map((e, j) => e + sign * h * dirs[i]![j]!))
    const [plus] = (await run([loss], feeds(shifted(1)), { layer })).values
    const [minus] = (await run([loss], feeds(shifted(-1)), { layer })).values
    const numeric = (plus![0]! - minus![0]!) / (2 * h)
    let analytic = 0
    gradOut.values.forEach((g, i) => g.forEach((e, j) => (analytic += e * dirs[i]![j]!)))
    worst = Math.max(worst, Math.abs(numeric - analytic) / Math.max(1, Math.abs(numeric), Math.abs(analytic)))
  }
  return worst
}
