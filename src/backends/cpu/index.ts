import { Layer } from "effect"
import { Backend } from "../../core/backend.js"
import { makeCpuBackend, type CpuBackend } from "./cpu-backend.js"

export { makeCpuBackend, type CpuBackend, type CpuBuffer, type CpuData, type CpuMemory } from "./cpu-backend.js"

/**
 * The CPU backend as the `Backend` service. Pass your own instance to keep a handle on it
 * (e.g. to read `memory()` after a run).
 */
export const cpuBackendLayer = (backend: CpuBackend = makeCpuBackend()): Layer.Layer<Backend> =>
  Layer.succeed(Backend, backend)
