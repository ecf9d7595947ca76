// One gradient pass planned and then run on the CPU backend, offloaded inputs in its host tier:
// what the offload and checkpoint-group tests compare (the plan must be the measurement).
import { makeCpuBackend } from "../src/backends/cpu/index.js"
import { execute, plan } from "../src/core/executor.js"
import type { MemoryReport } from "../src/core/memory.js"
import type { LlamaConfig } from "../src/models/config.js"
import {
  gradientInputs,
  hostInputs,
  inputKinds,
  memoryKind,
  passOffload,
  type StepOptions,
  stepGraphs,
} from "../src/models/step.js"

export interface PlannedAndMeasured {
  readonly planned: MemoryReport
  readonly measured: MemoryReport
  /** The backend's own count of live bytes: its device and host-tier peaks. */
  readonly backendPeak: number
  readonly backendHostPeak: number
}

/**
 * Plans the first gradient pass of a step, then runs it with deterministic inputs (tokens below
 * `vocab`, the target count `count`, small weights).
 */
export function planAndMeasure(
  model: LlamaConfig,
  B: number,
  S: number,
  options: StepOptions,
  feed: { readonly vocab: number; readonly count: number },
): PlannedAndMeasured {
  const offload = options.offload ?? {}
  const g = stepGraphs(model, B, S, options)
  const inputs = gradientInputs(g.first, g.adamw)
  const host = hostInputs(inputs, offload)
  const opts = { gradients: g.first.gradients, offload: passOffload(offload) }
  const cpu = makeCpuBackend()
  const planned = plan(g.first.outputs, inputKinds(inputs), { ...opts, hostInputs: host, for: cpu })
  const bindings = new Map(
    [...inputs].map(([t, i], k) => {
      const buffer = host.has(t) ? cpu.hostAlloc!(t.dtype, t.size) : cpu.alloc(t.dtype, t.size)
      const data =
        t.dtype === "int32"
          ? Int32Array.from({ length: t.size }, (_, j) => (j * 5 + k) % feed.vocab)
          : Float32Array.from({ length: t.size }, (_, j) => (i.holds === "count" ? feed.count : Math.sin(j + k) * 0.05))
      cpu.write(buffer, data)
      return [t, { buffer, kind: memoryKind(i) }] as const
    }),
  )
  cpu.memory().resetPeak()
  const measured = execute(cpu, g.first.outputs, bindings, opts).memory
  return { planned, measured, backendPeak: cpu.memory().peak, backendHostPeak: cpu.memory().hostPeak }
}
