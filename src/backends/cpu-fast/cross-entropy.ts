/**
 * The fused cross-entropy for the fast CPU backend: the reference's kernels (../cpu/fused.ts),
 * run by the native addon where it is built and the operands are float32 in the heap (one float64
 * softmax per row, its exps in SIMD lanes: the reference's values up to float32 rounding), else
 * the reference's own.
 */
import type { Buffer } from "../../core/backend.js"
import { checkTargets } from "../../core/indices.js"
import type { RoutineKernels } from "../../core/routines/registry.js"
import type { CpuBuffer } from "../cpu/cpu-backend.js"
import type { WasmGemm } from "./wasm-gemm.js"

const data = (b: Buffer) => (b as CpuBuffer).data

export function crossEntropyKernels(gemm: WasmGemm | undefined, ref: RoutineKernels): RoutineKernels {
  const forward = ref.crossEntropy!
  const backward = ref["crossEntropy.vjp"]!
  return {
    crossEntropy(call) {
      const { inputs, outputs, shapes, attrs } = call
      const [N, V] = shapes.inputs.logits as [number, number]
      const [x, t, nll] = [data(inputs.logits), data(inputs.targets), data(outputs.nll)]
      if (x instanceof Float32Array && t instanceof Int32Array && nll instanceof Float32Array && gemm !== undefined) {
        checkTargets("cpu-fast.crossEntropy", t, V, attrs.ignoreIndex)
        if (gemm.crossEntropy(x, t, nll, undefined, N, V, attrs.ignoreIndex)) return
      }
      forward(call)
    },
    "crossEntropy.vjp"(call) {
      const { inputs, outputs, shapes, attrs } = call
      const [N, V] = shapes.inputs.logits as [number, number]
      const [x, t, g, dx] = [data(inputs.logits), data(inputs.targets), data(inputs.dNll), data(outputs.dLogits)]
      if (
        x instanceof Float32Array &&
        t instanceof Int32Array &&
        g instanceof Float32Array &&
        dx instanceof Float32Array &&
        gemm !== undefined
      ) {
        checkTargets("cpu-fast.crossEntropy.vjp", t, V, attrs.ignoreIndex)
        if (gemm.crossEntropy(x, t, dx, g, N, V, attrs.ignoreIndex)) return
      }
      backward(call)
    },
  }
}
