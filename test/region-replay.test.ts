// A counting run replays a keyed region body (the composed attention's, forward and backward)
// instead of walking it again (src/core/region-replay.ts). The reference is the slow walk itself:
// the same counting backend copied, which the executor does not know as one that computes
// nothing, so it walks every body. The two must give byte-identical MemoryReports (and the same
// OutOfMemory) for models whose attention is the composed routine, in every mode.
import { describe, expect, it } from "vitest"
import { cudaHeldBytes } from "../src/backends/cuda/allocator.js"
import type { BackendImpl } from "../src/core/backend.js"
import { makeCountingBackend } from "../src/core/counting.js"
import { OutOfMemory } from "../src/core/errors.js"
import { execute, type RunOptions } from "../src/core/executor.js"
import type { Tensor } from "../src/core/graph.js"
import type { MemoryKind } from "../src/core/memory.js"
import { gpuFusedRoutines } from "../src/cli/plan-command.js"
import { decodeConfigSync, type LlamaConfig } from "../src/models/config.js"
import { modes } from "../src/models/llama.js"
import { precisions } from "../src/models/optimizer.js"
import { gradientInputs, inputKinds, stepGraphs } from "../src/models/step.js"

const tiny = {
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 8,
  vocab_size: 96,
  max_position_embeddings: 4096,
}
// windows of 40 tokens against key blocks of 64: some blocks hidden from some queries, some skipped
const configs: Record<string, LlamaConfig> = {
  mistral: decodeConfigSync({ ...tiny, model_type: "mistral", sliding_window: 40 }),
  gemma2: decodeConfigSync({ ...tiny, model_type: "gemma2", sliding_window: 40, query_pre_attn_scalar: 8 }),
}

/** The gradient pass of one step on a counting backend; `walk` hides that it counts, so every body is walked. */
function gradientPass(c: LlamaConfig, S: number, mode: (typeof modes)[number], walk: boolean, opts: RunOptions = {}) {
  const fused = [...gpuFusedRoutines]
  const g = stepGraphs(c, 1, S, { mode, fused, mlpChunks: 3, lmChunks: 5, precision: precisions.bf16 })
  const counting = makeCountingBackend(fused, cudaHeldBytes)
  let allocs = 0
  const alloc = counting.alloc
  const backend: BackendImpl = walk ? { ...counting } : counting
  const counted: BackendImpl["alloc"] = (dtype, size) => {
    allocs++
    return alloc(dtype, size)
  }
  Object.assign(backend, { alloc: counted })
  const kinds: Map<Tensor, MemoryKind> = inputKinds(gradientInputs(g.first, g.adamw))
  const bindings = new Map([...kinds].map(([t, kind]) => [t, { buffer: alloc(t.dtype, t.size), kind }] as const))
  const run = () => execute(backend, g.first.outputs, bindings, { gradients: g.first.gradients, ...opts })
  return { run, allocs: () => allocs }
}

describe("replayed region bodies (counting runs)", () => {
  for (const [name, c] of Object.entries(configs)) {
    it(`${name}: the same MemoryReport as walking every body, in all four modes, at S = 100, 256, 320`, () => {
      for (const S of [100, 256, 320])
        for (const mode of modes) {
          const fast = gradientPass(c, S, mode, false)
          const slow = gradientPass(c, S, mode, true)
          const [a, b] = [fast.run().memory, slow.run().memory]
          expect(a, `${mode} S = ${S}`).toEqual(b)
          // the fast run made fewer buffers: bodies were replayed, not walked
          expect(fast.allocs(), `${mode} S = ${S}`).toBeLessThan(slow.allocs())
        }
    })
  }

  it("runs out of memory at the same request, with the same message", () => {
    const c = configs.gemma2!
    const peak = gradientPass(c, 256, "mst+checkpoint", false).run().memory.heldPeak
    const failure = (walk: boolean): OutOfMemory => {
      try {
        gradientPass(c, 256, "mst+checkpoint", walk, { limit: peak - 1 }).run()
      } catch (e) {
        if (e instanceof OutOfMemory) return e
        throw e
      }
      throw new Error("it fit")
    }
    const [a, b] = [failure(false), failure(true)]
    expect(a.message).toBe(b.message)
    expect([a.requested, a.alive]).toEqual([b.requested, b.alive])
  })
})
