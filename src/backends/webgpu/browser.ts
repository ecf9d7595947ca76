/**
 * `miniseq/webgpu` for browsers (the `browser` condition of the package's exports): the same
 * backend, with its device taken from the page's own `navigator.gpu` instead of Dawn for Node.
 * Bundlers that honour the `browser` field of miniseq's package.json replace the Node-only
 * modules (Dawn, node:fs, …) that some shared files import with empty ones.
 */
/// <reference types="@webgpu/types" />
import { Effect, type Layer } from "effect"
import { type Backend, scopedBackendLayer } from "../../core/backend.js"
import { BackendUnavailable } from "../../core/errors.js"
import { type DeviceConfig, deviceOn, type GpuDevice } from "./device.js"
import { type WebGpuBackend, webGpuBackendOn, type WebGpuOptions } from "./webgpu-backend.js"

export {
  type WebGpuBackend,
  type WebGpuBuffer,
  type WebGpuMemory,
  type WebGpuOptions,
  webGpuBackendOn,
} from "./webgpu-backend.js"
export { COMPAT_TILE, CORE_TILE, type MatmulTile, tileName } from "./kernels/matmul.js"
export { type AdapterInfo, type DeviceConfig, deviceOn, type GpuDevice } from "./device.js"

/** Options for the browser: `powerPreference` is passed to `requestAdapter`; Dawn's `configs` do not apply. */
export type BrowserWebGpuOptions = Omit<WebGpuOptions, "configs">

const unavailable = (reason: string) =>
  new BackendUnavailable({ backend: "webgpu", reason, message: `webgpu: ${reason}` })

/**
 * A device from `navigator.gpu`: a "core" adapter, else a "compatibility" one. Fails with
 * `BackendUnavailable` (saying which) when the browser has no WebGPU or offers no adapter.
 */
export async function acquireBrowserDevice(opts: BrowserWebGpuOptions = {}): Promise<GpuDevice> {
  // navigator.gpu exists only in secure contexts (https, localhost) of browsers with WebGPU on.
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu
  if (gpu === undefined) throw unavailable("this browser exposes no WebGPU (navigator.gpu is undefined)")
  const power = opts.powerPreference === undefined ? {} : { powerPreference: opts.powerPreference }
  for (const featureLevel of ["core", "compatibility"] as const) {
    const adapter = await gpu.requestAdapter({ ...power, featureLevel })
    const config: DeviceConfig = { flags: [], featureLevel }
    if (adapter !== null) return deviceOn(gpu, adapter, config)
  }
  throw unavailable(
    "navigator.gpu.requestAdapter() found no adapter (WebGPU is disabled or the GPU is blocklisted; Chromium: --enable-unsafe-webgpu)",
  )
}

/** Acquires a device from `navigator.gpu` and builds the backend on it. */
export async function makeWebGpuBackend(opts: BrowserWebGpuOptions = {}): Promise<WebGpuBackend> {
  return webGpuBackendOn(await acquireBrowserDevice(opts), opts)
}

/**
 * The WebGPU backend as the `Backend` service, on the browser's device. The device is a scoped
 * resource: acquired when the layer is built, destroyed when its scope closes. Fails with
 * `BackendUnavailable` when the browser offers no WebGPU adapter.
 */
export const webgpuBackendLayer = (opts: BrowserWebGpuOptions = {}): Layer.Layer<Backend, BackendUnavailable> =>
  scopedBackendLayer("webgpu", () => makeWebGpuBackend(opts))
