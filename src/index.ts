export * from "./core/index.js"
export { Backend, type BackendImpl, type Buffer } from "./core/backend.js"
export { cpuBackendLayer, makeCpuBackend } from "./backends/cpu/index.js"
export { makeCountingBackend } from "./core/counting.js"
