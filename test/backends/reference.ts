/**
 * What every backend's tests compare with: the CPU backend in float64 running each routine's
 * reference body (no fused kernels), and the one way they evaluate a graph on a backend.
 */
import { Effect, type Layer } from "effect"
import type { Backend } from "../../src/core/backend.js"
import { cpuBackendLayer, makeCpuBackend } from "../../src/backends/cpu/index.js"
import type { HostArray } from "../../src/core/dtype.js"
import { evaluate, type Feed } from "../../src/core/executor.js"
import type { Tensor } from "../../src/core/graph.js"

export const reference = cpuBackendLayer(makeCpuBackend({ fused: false }))

export async function evalOn(
  layer: Layer.Layer<Backend>,
  outputs: readonly Tensor[],
  feeds: ReadonlyMap<Tensor, Feed>,
): Promise<HostArray[]> {
  return (await Effect.runPromise(evaluate(outputs, feeds).pipe(Effect.provide(layer)))).values
}
