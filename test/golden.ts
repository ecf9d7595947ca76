// The golden fixtures (scripts/golden/make_golden.py) and miniseq's numbers on them: shared by
// the architecture tests and the GPU backends' suites.
import { readdirSync } from "node:fs"
import { join } from "node:path"
import type { Layer } from "effect"
import { valueAndGrad } from "../src/core/autodiff.js"
import type { Backend } from "../src/core/backend.js"
import type { DType, HostArray } from "../src/core/dtype.js"
import type { Feed } from "../src/core/executor.js"
import type { Tensor } from "../src/core/graph.js"
import { decodeConfigSync } from "../src/models/config.js"
import { llamaLoss, type ModelOptions } from "../src/models/llama.js"
import { readSafetensors } from "../src/models/safetensors.js"
import { run } from "./helpers.js"

/** Where the fixtures are, from the repository root (where tests run, bundled or not). */
export const goldenDir = join(process.cwd(), "test", "fixtures", "golden")
export const goldenTransformersDir = join(process.cwd(), "test", "fixtures", "golden-transformers")
export const goldenNames = readdirSync(goldenDir)
  .filter((f) => f.endsWith(".safetensors") && f !== "rope.safetensors")
  .map((f) => f.replace(/\.safetensors$/, ""))

export const feedsOf = (params: Record<string, Tensor>, weights: Record<string, HostArray>): [Tensor, Feed][] =>
  Object.entries(params).map(([name, t]) => [t, weights[name]!])

/** A golden fixture: the config, weights, inputs, and the reference's logits, loss and gradients. */
export async function golden(name: string, dir = goldenDir) {
  const { tensors, metadata } = await readSafetensors(join(dir, `${name}.safetensors`))
  const named = (prefix: string) =>
    Object.fromEntries(
      Object.entries(tensors)
        .filter(([k]) => k.startsWith(prefix))
        .map(([k, t]) => [k.slice(prefix.length), t.data]),
    )
  const tokens = tensors.tokens!
  return {
    generator: metadata.generator!,
    config: decodeConfigSync(JSON.parse(metadata.config!)),
    loss: Number(metadata.loss),
    weights: named("weight."),
    grads: named("grad."),
    logits: tensors.logits!.data,
    invFreq: tensors.inv_freq!.data,
    invFreqTransformers: tensors.inv_freq_transformers?.data,
    tokens: tokens.data as Int32Array,
    targets: tensors.targets!.data as Int32Array,
    B: tokens.shape[0]!,
    S: tokens.shape[1]!,
  }
}

/** The weights as the dtype asked for (fixtures store float32 values, exact in either). */
export const asDType = (w: Record<string, HostArray>, dtype: DType): Record<string, HostArray> =>
  Object.fromEntries(
    Object.entries(w).map(([k, v]) => [k, dtype === "float64" ? Float64Array.from(v) : Float32Array.from(v)]),
  )

/**
 * miniseq's loss and every parameter gradient on a fixture's weights (given to the graph as
 * `weightDType`) and batch, with the global target count the trainer feeds.
 */
export async function lossAndGrads(
  g: Awaited<ReturnType<typeof golden>>,
  opts: ModelOptions,
  weightDType: DType,
  layer?: Layer.Layer<Backend>,
): Promise<{ loss: number; grads: Record<string, HostArray> }> {
  const count = g.targets.filter((t) => t !== -100).length
  const model = llamaLoss(g.config, g.B, g.S, opts)
  const names = Object.keys(model.params)
  const { value, grads } = valueAndGrad(model.loss, model.params)
  const feeds = new Map<Tensor, Feed>([
    ...feedsOf(model.params, asDType(g.weights, weightDType)),
    [model.tokens, g.tokens],
    [model.targets, g.targets],
    [model.count, new Float32Array([count])],
  ])
  const { values } = await run([value, ...names.map((n) => grads[n]!)], feeds, layer === undefined ? {} : { layer })
  return { loss: values[0]![0]!, grads: Object.fromEntries(names.map((n, i) => [n, values[i + 1]!])) }
}
