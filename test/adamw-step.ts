/**
 * One AdamW step of the optimizer graph (src/models/optimizer.ts) on a backend, from a given
 * state, every output read back: shared by the tests that compare an AdamW (the fused kernel on
 * CUDA, the host one, the routine form) with the reference body.
 */
import type { BackendImpl, Buffer } from "../src/core/backend.js"
import type { DType } from "../src/core/dtype.js"
import { type Binding, execute } from "../src/core/executor.js"
import type { Tensor } from "../src/core/graph.js"
import { rng } from "../src/core/random.js"
import { adamwGraph, adamwOutputs, defaultAdamW, type PrecisionName, precisions } from "../src/models/optimizer.js"

export type Shapes = Readonly<Record<string, readonly number[]>>
export const smallShapes: Shapes = { "w.matrix": [33, 17], "w.norm": [17] }
/** The step's scalars: lr, 1 − β₁ᵗ and 1 − β₂ᵗ at step 3; the clipping bound is 0.5. */
export const stepScalars = { lr: 3e-3, correction1: 1 - 0.9 ** 3, correction2: 1 - 0.95 ** 3, maxGradNorm: 0.5 }

const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1)

/** Weights, fp32 gradients and moments (v ≥ 0) for every parameter, seeded. */
export function startState(shapes: Shapes = smallShapes, seed = 11): Record<string, Float32Array> {
  const random = rng(seed)
  const values = (n: number, scale: number) => Float32Array.from({ length: n }, () => (random() - 0.5) * scale)
  const s: Record<string, Float32Array> = {}
  for (const [n, shape] of Object.entries(shapes)) {
    const size = sizeOf(shape)
    s[`w.${n}`] = values(size, 0.2)
    s[`g.${n}`] = values(size, 0.05)
    s[`m.${n}`] = values(size, 0.01)
    s[`v.${n}`] = Float32Array.from(values(size, 1e-3), Math.abs)
  }
  return s
}

/**
 * Runs one AdamW step (the routine form when `fused`) on `backend`; `offloaded` binds the
 * gradients, moments and master weights in its host tier, as `--offload optimizer` does.
 */
export async function adamwStep(
  backend: BackendImpl,
  precision: PrecisionName,
  fused: boolean,
  state: Record<string, Float32Array>,
  opts: { shapes?: Shapes; offloaded?: boolean; gradDType?: DType } = {},
) {
  const shapes = opts.shapes ?? smallShapes
  const p = precisions[precision]
  const names = Object.keys(shapes)
  const gradDType = opts.gradDType ?? "float32"
  const a = adamwGraph(
    shapes,
    { ...defaultAdamW, maxGradNorm: stepScalars.maxGradNorm },
    p,
    Object.fromEntries(names.map((n) => [n, gradDType])),
    fused,
  )
  const bufs: Buffer[] = []
  const put = (data: Float32Array, dtype: Buffer["dtype"], host = false) => {
    const b = host ? backend.hostAlloc!(dtype, data.length) : backend.alloc(dtype, data.length)
    backend.write(b, data)
    bufs.push(b)
    return b
  }
  const scalar = (x: number): Binding => ({ buffer: put(Float32Array.of(x), "float32"), kind: "temporaries" })
  const bindings = new Map<Tensor, Binding>([
    [a.lr, scalar(stepScalars.lr)],
    [a.correction1, scalar(stepScalars.correction1)],
    [a.correction2, scalar(stepScalars.correction2)],
  ])
  const inputs: Record<string, Buffer> = {}
  const host = opts.offloaded === true
  for (const n of names) {
    const bind = (
      t: Tensor,
      name: string,
      data: string,
      dtype: Buffer["dtype"],
      kind: Binding["kind"],
      tier = false,
    ) => {
      const buffer = put(state[`${data}.${n}`]!, dtype, tier)
      inputs[`${name}.${n}`] = buffer
      bindings.set(t, { buffer, kind })
    }
    bind(a.params[n]!, "w", "w", p.param, "weights")
    bind(a.grads[n]!, "g", "g", gradDType, "gradients", host)
    bind(a.m[n]!, "m", "m", p.state, "optimizer", host)
    bind(a.v[n]!, "v", "v", p.state, "optimizer", host)
    if (p.master) bind(a.master[n]!, "master", "w", "float32", "optimizer", host) // the master copy starts as the weights
  }
  const run = execute(backend, adamwOutputs(a), bindings, { inPlace: a.inPlace })
  const read = await Promise.all(
    run.outputs.map(async (b) => Float32Array.from((await backend.read(b)) as Float32Array)),
  )
  const inPlace = run.outputs.slice(1).filter((b) => Object.values(inputs).includes(b)).length
  for (const b of run.outputs) if (!bufs.includes(b)) backend.free(b)
  for (const b of bufs) backend.free(b)
  return { read, inPlace, outputs: run.outputs.length - 1 }
}
