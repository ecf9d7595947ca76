/** Before a run allocates: the planned step against the memory the machine (or the GPU) has. */
import { freemem } from "node:os"
import { Effect } from "effect"
import {
  cudaReserveVariable,
  type DeviceMemorySource,
  measuredCudaReserve,
  usableBeforeWarmUp,
} from "../backends/cuda/usable-memory.js"
import type { BackendImpl } from "../core/backend.js"
import { OutOfMemory } from "../core/errors.js"
import type { LlamaConfig } from "../models/config.js"
import { memoryAdvice, type StepPlan } from "../models/planner.js"
import type { StepOptions } from "../models/step.js"
import { formatBytes } from "./svg.js"

/** Memory a step may use, and whether it is the host's own RAM (where offloaded bytes live too). */
export interface Available {
  readonly bytes: number
  readonly what: string
  readonly hostRam: boolean
}

/**
 * What the backend can give: on the GPU, what a step can use before any kernel ran (the free
 * bytes, at most the card less `cudaReserve` for what loads lazily: ../backends/cuda/usable-memory.ts),
 * else the host's available RAM (or the cgroup's limit).
 */
export function availableMemory(
  backendFlag: string,
  backend: BackendImpl,
  cudaReserve: number = measuredCudaReserve,
): Available | undefined {
  if (backendFlag === "cuda") {
    const source = backend as Partial<DeviceMemorySource>
    if (source.memoryInfo === undefined || source.memory === undefined) return undefined
    const bytes = usableBeforeWarmUp(source as DeviceMemorySource, cudaReserve)
    const what = `the GPU's usable memory (free now, at most the card less ${formatBytes(cudaReserve)} kept for the CUDA context, cuBLAS and kernels loaded on first use; ${cudaReserveVariable} sets it)`
    return { bytes, what, hostRam: false }
  }
  if (backendFlag === "webgpu") return undefined // WebGPU does not say how much memory its device has
  const constrained = process.constrainedMemory?.() ?? 0
  const limited = constrained > 0 && constrained < freemem()
  return {
    bytes: limited ? constrained : freemem(),
    what: limited ? "this process's memory limit" : "this machine's available RAM",
    hostRam: true,
  }
}

/** Fails with OutOfMemory and the planner's advice when the planned step does not fit `available`. */
export function refuseWhatCannotFit(
  plan: StepPlan,
  available: Available | undefined,
  model: LlamaConfig,
  batch: number,
  seq: number,
  opts: StepOptions,
  backend: BackendImpl,
): Effect.Effect<void, OutOfMemory> {
  // Offloaded bytes live in host RAM: beside the GPU's memory, or in the same RAM on the CPU.
  const onCpu = available?.hostRam ?? false
  const ram = freemem()
  if (plan.host > 0 && !onCpu && plan.host > ram) {
    const message = `offloading this step needs ${formatBytes(plan.host)} of host memory (the planner) but this machine's available RAM is ${formatBytes(ram)}, so nothing was allocated; offload less (--offload), or shorten the sequence`
    return Effect.fail(new OutOfMemory({ requested: plan.host, alive: 0, limit: ram, tier: "host", message }))
  }
  const needs = onCpu ? plan.held + plan.host : plan.held
  // What the allocator must hold (each buffer at its size class), not only the live bytes.
  if (available === undefined || needs <= available.bytes) return Effect.void
  return Effect.suspend(() => {
    const limit = available.bytes
    const { fit, hint } = memoryAdvice(model, batch, seq, opts, limit, backend)
    const message =
      `this step needs ${formatBytes(needs)} (the planner, --mode ${opts.mode}) but ${available.what} is ${formatBytes(limit)}` +
      `, so nothing was allocated; ${hint}`
    return Effect.fail(
      new OutOfMemory({ requested: needs, alive: 0, limit, ...(fit ? { suggestedM: fit.lm } : {}), message }),
    )
  })
}
