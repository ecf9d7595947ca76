import { Effect, Layer } from "effect"
import { BackendUnavailable } from "../../core/errors.js"
import { Backend } from "../../core/backend.js"
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
  Layer.effect(
    Backend,
    Effect.acquireRelease(
      Effect.tryPromise({
        try: () => makeWebGpuBackend(opts),
        catch: (e) =>
          e instanceof BackendUnavailable
            ? e
            : new BackendUnavailable({
                backend: "webgpu",
                reason: String(e),
                message: `webgpu: could not start the device: ${String(e)}`,
              }),
      }),
      (backend) => Effect.promise(() => backend.destroy()),
    ),
  )
