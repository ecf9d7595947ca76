import type { Layer } from "effect"
import { type Backend, scopedBackendLayer } from "../../core/backend.js"
import type { BackendUnavailable } from "../../core/errors.js"
import { makeWebGpuBackend, type WebGpuOptions } from "./webgpu-backend.js"

export {
  makeWebGpuBackend,
  webGpuBackendOn,
  type WebGpuBackend,
  type WebGpuBuffer,
  type WebGpuMemory,
  type WebGpuOptions,
} from "./webgpu-backend.js"
export { COMPAT_TILE, CORE_TILE, type MatmulTile, tileName } from "./kernels/matmul.js"
export { acquireDevice, type AdapterInfo, type DeviceConfig, defaultConfigs, type DeviceOptions } from "./device.js"

/**
 * The WebGPU backend as the `Backend` service. The device is a scoped resource: acquired when
 * the layer is built, destroyed when its scope closes (e.g. when `Effect.provide` finishes).
 * Fails with `BackendUnavailable` when this machine offers no WebGPU adapter.
 */
export const webgpuBackendLayer = (opts: WebGpuOptions = {}): Layer.Layer<Backend, BackendUnavailable> =>
  scopedBackendLayer("webgpu", () => makeWebGpuBackend(opts))
