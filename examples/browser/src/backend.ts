/**
 * Which backend the page trains on: WebGPU through the browser's own `navigator.gpu` when it
 * offers an adapter, else the CPU backend — with the reason, so the page can say why.
 *
 * In Node the WebGPU backend finds its adapter through Dawn (`acquireDevice`); here the adapter
 * comes from `navigator.gpu`, and `deviceOn` + `webGpuBackendOn` do the rest exactly as in Node.
 * The bundle stubs out the `webgpu` package (see build.mjs).
 */
/// <reference types="@webgpu/types" />
import { Effect, Layer } from "effect"
import { Backend } from "../../../src/core/backend.js"
import { makeCpuBackend } from "../../../src/backends/cpu/index.js"
import { deviceOn, type GpuDevice } from "../../../src/backends/webgpu/device.js"
import { type WebGpuBackend, webGpuBackendOn } from "../../../src/backends/webgpu/webgpu-backend.js"
import { BackendUnavailable } from "../../../src/core/errors.js"

export interface BackendChoice {
  readonly kind: "webgpu" | "cpu"
  /** For the status line, e.g. "WebGPU (google swiftshader)". */
  readonly description: string
  /** Why the CPU backend runs instead of WebGPU; undefined when WebGPU runs. */
  readonly fallbackReason?: string
}

export type BackendPreference = "auto" | "cpu"

const unavailable = (reason: string) => new BackendUnavailable({ backend: "webgpu", reason, message: `webgpu: ${reason}` })

/** A device from the browser's own WebGPU, wired up as the backend wires a Dawn device. */
async function acquireBrowserDevice(): Promise<GpuDevice> {
  // navigator.gpu exists only in secure contexts (https, localhost) of browsers with WebGPU on.
  const gpu: GPU | undefined = (navigator as Navigator & { gpu?: GPU }).gpu
  if (gpu === undefined) throw unavailable("this browser exposes no WebGPU (navigator.gpu is undefined)")
  const adapter = await gpu.requestAdapter()
  if (adapter === null) throw unavailable("navigator.gpu.requestAdapter() found no adapter (WebGPU is disabled or the GPU is blocklisted; Chromium: --enable-unsafe-webgpu)")
  return deviceOn(gpu, adapter, { flags: [], featureLevel: "core" })
}

const describeAdapter = (b: WebGpuBackend) => {
  const name = [b.info.vendor, b.info.architecture, b.info.device, b.info.description].filter((s) => s !== "").join(" ")
  return `WebGPU${name === "" ? "" : ` (${name})`}`
}

/**
 * The `Backend` layer for the page: WebGPU when the browser has it, otherwise the CPU backend.
 * It never fails; `onChoice` hears which one was built (and why not WebGPU) before training
 * starts. The WebGPU device is destroyed when the layer's scope closes (training is over).
 */
export function webgpuLayerForBrowser(onChoice: (choice: BackendChoice) => void, preference: BackendPreference = "auto"): Layer.Layer<Backend> {
  const cpu = (fallbackReason: string) =>
    Layer.effect(Backend, Effect.sync(() => {
      onChoice({ kind: "cpu", description: "CPU (plain TypeScript)", fallbackReason })
      return makeCpuBackend()
    }))
  if (preference === "cpu") return cpu("the page was opened with ?backend=cpu")

  const webgpu = Layer.effect(
    Backend,
    Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => webGpuBackendOn(await acquireBrowserDevice()),
        catch: (e) => (e instanceof BackendUnavailable ? e : unavailable(`could not start the device: ${e instanceof Error ? e.message : String(e)}`)),
      }).pipe(Effect.tap((b) => Effect.sync(() => onChoice({ kind: "webgpu", description: describeAdapter(b) })))),
      (b) => Effect.promise(() => b.destroy()),
    ),
  )
  return webgpu.pipe(Layer.catch((e) => cpu(e.reason)))
}
