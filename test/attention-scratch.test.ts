// The fused Hopper attention backward (MINISEQ_ATTN_WGMMA_BWD's bit 8) sums dQ in fp32 device
// scratch, twice dQ's own size: the CUDA backend says so through kernelScratchBytes, and the
// executor (so the planner) counts it while attention.vjp runs. Checked without a GPU against
// the C++ sizing rule written out by hand (native/kernels/attention_backward.cu).
import { describe, expect, it } from "vitest"
import { cudaHeldBytes } from "../src/backends/cuda/allocator.js"
import {
  cudaKernelScratch,
  fusedBackwardExtraBytes,
  fusedBackwardSelected,
} from "../src/backends/cuda/attention-scratch.js"
import { valueAndGrad } from "../src/core/autodiff.js"
import type { BackendImpl } from "../src/core/backend.js"
import { plan } from "../src/core/executor.js"
import { input } from "../src/core/graph.js"
import * as o from "../src/core/ops.js"
import { attention } from "../src/core/routines/attention.js"
import { sameKernel } from "../src/core/routines/registry.js"
import { decodeConfigSync } from "../src/models/config.js"
import { precisions } from "../src/models/optimizer.js"
import { planStep } from "../src/models/planner.js"

describe("the switch", () => {
  it("selects the fused backward by bit 8 of a positive number, read as atoi reads it", () => {
    const cases: [string | undefined, boolean][] = [
      [undefined, false], // the defaults (7, or 3 from 16k tokens)
      ["", false],
      ["0", false], // the mma.sync kernels
      ["7", false],
      ["3", false],
      ["8", true],
      ["9", true],
      ["13", true],
      ["15", true],
      ["24", true],
      ["16", false],
      ["-9", false], // negative: the defaults, as backwardVariant() reads it
      ["9x", true], // atoi stops at the first non-digit
      ["x9", false], // atoi gives 0
    ]
    for (const [text, selected] of cases) expect(fusedBackwardSelected(text), String(text)).toBe(selected)
  })
})

describe("the scratch it adds", () => {
  it("is B·H·(S rounded up to 64)·D fp32 plus the padded row stats beyond delta's rows, for bf16 at D = 64 and 128 only", () => {
    // B = 1, H = 32, S = 8192, D = 64: row stats 2·32·8192·4 = 2,097,152 bytes, delta's
    // 32·8192·4 = 1,048,576 of them uncounted; dQ 32·8192·64·4.
    expect(fusedBackwardExtraBytes("bfloat16", 1, 32, 8192, 64)).toBe(2_097_152 - 1_048_576 + 67_108_864)
    // B = 2, H = 4, S = 3001, D = 128: rows 3001 → 3008: row stats 2·8·3008·4 = 192,512, delta
    // 8·3001·4 = 96,032; dQ 8·3008·128·4 = 12,320,768.
    expect(fusedBackwardExtraBytes("bfloat16", 2, 4, 3001, 128)).toBe(192_512 - 96_032 + 12_320_768)
    // S = 1: one 64-row tile per head: row stats 2·64·4 = 512, delta 4; dQ 64·64·4.
    expect(fusedBackwardExtraBytes("bfloat16", 1, 1, 1, 64)).toBe(512 - 4 + 16_384)
    // The fused kernel runs only for bf16 at D = 64 or 128: nothing else takes it.
    expect(fusedBackwardExtraBytes("float32", 1, 32, 8192, 64)).toBe(0)
    expect(fusedBackwardExtraBytes("bfloat16", 1, 32, 8192, 96)).toBe(0)
    expect(fusedBackwardExtraBytes("bfloat16", 1, 32, 8192, 256)).toBe(0)
  })

  it("the CUDA backend's hook charges it to attention.vjp's q alone, and only under the switch", () => {
    const hook = cudaKernelScratch("9")!
    const q = { shape: [2, 4, 3001, 128], dtype: "bfloat16" as const }
    const kv = { shape: [2, 1, 3001, 128], dtype: "bfloat16" as const }
    expect(hook("attention.vjp", { q, k: kv, v: kv })).toBe(192_512 - 96_032 + 12_320_768)
    expect(hook("attention", { q, k: kv, v: kv })).toBe(0)
    expect(hook("attention.vjp", { q: { ...q, dtype: "float32" }, k: kv, v: kv })).toBe(0)
    expect(cudaKernelScratch("7")).toBeUndefined()
    expect(cudaKernelScratch(undefined)).toBeUndefined()
  })
})

describe("the executor counts a fused kernel's scratch", () => {
  // q [1, 4, 128, 64], k and v [1, 2, 128, 64] in bf16; loss = Σ attention(q, k, v).
  const [q, k, v] = [
    input("q", [1, 4, 128, 64], "bfloat16"),
    input("k", [1, 2, 128, 64], "bfloat16"),
    input("v", [1, 2, 128, 64], "bfloat16"),
  ]
  const { value, grads } = valueAndGrad(o.sum(o.cast(attention(q, k, v), "float32")), { q, k, v })
  const inputs = new Map([q, k, v].map((t) => [t, "activations" as const]))
  const target = (scratch?: BackendImpl["kernelScratchBytes"]) => ({
    routines: sameKernel(["attention", "attention.vjp"], () => {}),
    ...(scratch && { kernelScratchBytes: scratch }),
  })
  const planWith = (scratch?: BackendImpl["kernelScratchBytes"]) =>
    plan([value, grads.q, grads.k, grads.v], inputs, { for: target(scratch) })

  it("once, for the length of the call, then gives it back", () => {
    const none = planWith()
    const big = (bytes: number) => (name: string) => (name === "attention.vjp" ? bytes : 0)
    const a = planWith(big(2 ** 40))
    const b = planWith(big(2 ** 41))
    // Far above everything else, the scratch sets the peak: the two peaks differ by exactly
    // the difference of the two scratch sizes (added once, not per piece or per input).
    expect(b.peak - a.peak).toBe(2 ** 40)
    // What was live beside it at the call is at most the peak without it.
    expect(a.peak - 2 ** 40).toBeGreaterThan(0)
    expect(a.peak - 2 ** 40).toBeLessThanOrEqual(none.peak)
    expect(a.atPeak.temporaries).toBeGreaterThanOrEqual(2 ** 40)
    expect(a.liveAtEnd).toBe(none.liveAtEnd)
    expect(a.allocations).toBe(none.allocations + 1)
  })

  it("the CUDA hook under MINISEQ_ATTN_WGMMA_BWD=9: fp32 dQ, 4·128·64·4 = 131,072 bytes, and 2,048 of row stats, while the vjp runs", () => {
    const none = planWith()
    const fused = planWith(cudaKernelScratch("9"))
    expect(fused.allocations).toBe(none.allocations + 1)
    expect(fused.peak).toBeGreaterThanOrEqual(none.peak)
    expect(fused.peak).toBeLessThanOrEqual(none.peak + 131_072 + 2 * 4 * 128 * 4 - 4 * 128 * 4)
    expect(fused.liveAtEnd).toBe(none.liveAtEnd)
  })
})

describe("the GPU plan of a bf16 training step", () => {
  // Head dim 64 (256 / 4), two layers: two attention.vjp calls, one at a time.
  const model = decodeConfigSync({
    hidden_size: 256,
    intermediate_size: 512,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 128,
    max_position_embeddings: 256,
  })
  const gpu = (scratch?: BackendImpl["kernelScratchBytes"]) => ({
    routines: sameKernel(["attention", "attention.vjp"], () => {}),
    heldBytes: cudaHeldBytes,
    ...(scratch && { kernelScratchBytes: scratch }),
  })
  for (const mode of ["vanilla", "mst+checkpoint"] as const) {
    it(`counts one call's scratch at a time (${mode})`, () => {
      const opts = { mode, precision: precisions.bf16 }
      const none = planStep(model, 1, 256, opts, gpu())
      const fused = planStep(model, 1, 256, opts, gpu(cudaKernelScratch("9")))
      const extra = fusedBackwardExtraBytes("bfloat16", 1, 4, 256, 64)
      expect(extra).toBe(262_144 + 2 * 4 * 256 * 4 - 4 * 256 * 4) // dQ, then the row stats beyond delta
      expect(fused.gradientPass.allocations).toBe(none.gradientPass.allocations + 2)
      expect(fused.peak).toBeGreaterThanOrEqual(none.peak)
      expect(fused.peak).toBeLessThanOrEqual(none.peak + extra)
      expect(fused.held).toBeLessThanOrEqual(none.held + cudaHeldBytes(extra))
      expect(fused.optimizerPass.peak).toBe(none.optimizerPass.peak)
    })
  }
})
