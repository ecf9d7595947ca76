/**
 * Which backend the page trains on: WebGPU through the browser's own `navigator.gpu` when it
 * offers an adapter, else the CPU backend — with the reason, so the page can say why.
 *
 * The repository's WebGPU backend acquires its device through Dawn for Node (`acquireDevice` in
 * src/backends/webgpu/device.ts calls the `webgpu` package's `create()`), so here the device
 * comes from `navigator.gpu` instead and is handed to `webGpuBackendOn`, which takes any
 * already acquired device. The bundle stubs out the `webgpu` package (see build.mjs).
 */
/// <reference types="@webgpu/types" />
import { Effect, Layer } from "effect"
import { Backend } from "../../../src/backends/backend.js"
import { makeCpuBackend } from "../../../src/backends/cpu/index.js"
import type { GpuDevice } from "../../../src/backends/webgpu/device.js"
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

// The limits the kernels want raised above WebGPU's defaults, as acquireDevice asks Dawn for:
// the largest buffer a kernel can bind is the largest tensor it can touch.
const wantedLimits = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
] as const

const unavailable = (reason: string) => new BackendUnavailable({ backend: "webgpu", reason, message: `webgpu: ${reason}` })

/** A device from the browser, wired up the way acquireDevice wires a Dawn device. */
async function acquireBrowserDevice(): Promise<GpuDevice> {
  // navigator.gpu exists only in secure contexts (https, localhost) of browsers with WebGPU on.
  const gpu: GPU | undefined = (navigator as Navigator & { gpu?: GPU }).gpu
  if (gpu === undefined) throw unavailable("this browser exposes no WebGPU (navigator.gpu is undefined)")
  const adapter = await gpu.requestAdapter()
  if (adapter === null) throw unavailable("navigator.gpu.requestAdapter() found no adapter (WebGPU is disabled or the GPU is blocklisted; Chromium: --enable-unsafe-webgpu)")
  const requiredLimits: Record<string, number> = {}
  for (const name of wantedLimits) requiredLimits[name] = adapter.limits[name]
  const device = await adapter.requestDevice({ requiredLimits })
  const a = adapter.info
  const ctx: GpuDevice = {
    device, gpu, lost: undefined, error: undefined,
    config: { flags: [], featureLevel: "core" },
    info: { vendor: a.vendor, architecture: a.architecture, device: a.device, description: a.description, flags: [], featureLevel: "core" },
  }
  void device.lost.then((info) => { ctx.lost = `${info.reason}: ${info.message}` })
  device.addEventListener("uncapturederror", (ev) => {
    const message = (ev as GPUUncapturedErrorEvent).error.message
    if (ctx.error === undefined) {
      ctx.error = message
      console.error(`miniseq webgpu: ${message}`)
    }
  })
  return ctx
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
