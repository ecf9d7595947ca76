// Memory, from the executor's own accounting: chunking bounds the peak, checkpoint saves only
// inputs, and the plan (counting backend) equals what a real CPU run allocates.
import { describe, expect, it } from "vitest"
import { makeCpuBackend } from "../src/backends/cpu/index.js"
import { valueAndGrad } from "../src/core/autodiff.js"
import { execute, plan, savedForBackward } from "../src/core/executor.js"
import { input, type Tensor } from "../src/core/graph.js"
import type { MemoryKind } from "../src/core/memory.js"
import * as o from "../src/core/ops.js"
import { swiglu } from "../src/core/routines/basic.js"
import { checkpoint, chunked } from "../src/core/regions.js"
import { randomArray } from "./helpers.js"

type Wrap = "none" | "checkpoint" | number

/** Forward + backward of Σ(MLP(x) ⊙ r) for a SwiGLU MLP with S×I intermediates. */
function mlpStep(B: number, S: number, d: number, I: number, wrap: Wrap) {
  const x = input("x", [B, S, d]),
    r = input("r", [B, S, d])
  const gate = input("gate", [I, d]),
    up = input("up", [I, d]),
    down = input("down", [d, I])
  const mlp = (h: Tensor) => swiglu(h, gate, up, down)
  const y = wrap === "none" ? mlp(x) : wrap === "checkpoint" ? checkpoint(mlp)(x) : chunked(wrap, { axis: 1 })(mlp)(x)
  const { value, grads } = valueAndGrad(o.sum(o.mul(y, r)), { x, gate, up, down })
  const outputs = [value, grads.x, grads.gate, grads.up, grads.down]
  const inputs = new Map<Tensor, MemoryKind>([
    [x, "activations"],
    [r, "activations"],
    [gate, "weights"],
    [up, "weights"],
    [down, "weights"],
  ])
  return { outputs, gradients: outputs.slice(1), inputs }
}

describe("chunked MLP memory", () => {
  const [B, S, d, I] = [1, 256, 16, 64]
  const bytes = 4
  const peakOf = (w: Wrap) => {
    const s = mlpStep(B, S, d, I, w)
    return plan(s.outputs, s.inputs, { gradients: s.gradients }).peak
  }

  it("stays under weights + gradients + a few S·d buffers + ceil(S/M)·I·bytes·8, and falls as M grows", () => {
    const fixed = 3 * I * d * bytes * 2 // weights and their gradients
    const Ms = [1, 2, 4, 8, 16, 64]
    const peaks = Ms.map((M) => peakOf(M))
    Ms.forEach((M, i) => {
      const chunk = Math.ceil(S / M)
      const bound = fixed + 6 * B * S * d * bytes + 8 * B * chunk * I * bytes
      expect(peaks[i]!).toBeLessThanOrEqual(bound)
    })
    for (let i = 1; i < peaks.length; i++) expect(peaks[i]!).toBeLessThan(peaks[i - 1]!)
    // The bound is tight enough to mean something: the unchunked block breaks the M = 16 bound.
    expect(peakOf("none")).toBeGreaterThan(fixed + 6 * B * S * d * bytes + 8 * B * Math.ceil(S / 16) * I * bytes)
  })

  it("checkpoint keeps only the region's inputs between forward and backward", () => {
    const ck = mlpStep(B, S, d, I, "checkpoint")
    const saved = [...savedForBackward(ck.outputs, new Set(ck.inputs.keys()))]
    expect(saved.length).toBeGreaterThan(0)
    expect(saved.every((t) => t.node.op === "input")).toBe(true)
    const plain = mlpStep(B, S, d, I, "none")
    const plainSaved = [...savedForBackward(plain.outputs, new Set(plain.inputs.keys()))]
    expect(plainSaved.some((t) => t.node.op !== "input" && t.shape.at(-1) === I)).toBe(true) // S×I intermediates
  })

  it("the plan equals the peak a CPU run measures, by the executor and by the backend's own count", () => {
    for (const w of ["none", "checkpoint", 1, 3, 8] as const) {
      const s = mlpStep(B, 40, d, I, w)
      const cpu = makeCpuBackend()
      const planned = plan(s.outputs, s.inputs, { gradients: s.gradients, for: cpu })
      const bindings = new Map(
        [...s.inputs].map(([t, kind], i) => {
          const buffer = cpu.alloc(t.dtype, t.size)
          cpu.write(buffer, randomArray(t.dtype, t.size, i))
          return [t, { buffer, kind }] as const
        }),
      )
      cpu.memory().resetPeak()
      const measured = execute(cpu, s.outputs, bindings, { gradients: s.gradients })
      expect(measured.memory).toEqual(planned)
      expect(cpu.memory().peak).toBe(planned.peak)
    }
  })
})
