import type { Layer } from "effect"
import { type Backend, scopedBackendLayer } from "../../core/backend.js"
import type { BackendUnavailable } from "../../core/errors.js"
import { makeCudaBackend, type CudaOptions } from "./cuda-backend.js"

export {
  makeCudaBackend,
  type CudaBackend,
  type CudaBuffer,
  type CudaDeviceInfo,
  type CudaMemory,
  type CudaOptions,
} from "./cuda-backend.js"
export { addonPath, loadAddon, readBuildRecord } from "./native.js"
export {
  cudaReserve,
  cudaReserveVariable,
  type DeviceMemoryNow,
  type DeviceMemorySource,
  measuredCudaReserve,
  usableBeforeWarmUp,
  usableNow,
  usableUnderCap,
} from "./usable-memory.js"

/**
 * The CUDA backend as the `Backend` service. The device is a scoped resource: started when the
 * layer is built, given back (memory, stream, cuBLAS handle) when its scope closes. Fails with
 * `BackendUnavailable` whose reason says exactly why: the addon was not built (and what the
 * install said), no driver or GPU (the CUDA error), or cuBLAS could not be loaded (the dlopen
 * error).
 */
export const cudaBackendLayer = (opts: CudaOptions = {}): Layer.Layer<Backend, BackendUnavailable> =>
  scopedBackendLayer("cuda", () => makeCudaBackend(opts))
