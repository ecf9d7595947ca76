/**
 * Acquiring and releasing a WebGPU device through Dawn for Node (the `webgpu` package).
 *
 * Dawn picks a native backend: Vulkan on a Linux GPU machine (WebGPU "core"), or, on a machine
 * without a GPU, OpenGL ES over Mesa's llvmpipe software rasteriser ("compatibility", a subset of
 * WebGPU that GL can implement). `acquireDevice` tries a list of such configurations in order and
 * fails with the typed `BackendUnavailable` when none yields an adapter.
 */
/// <reference types="@webgpu/types" />
import { create, globals } from "webgpu"
import { BackendUnavailable } from "../../core/errors.js"

// The GPU* constants (GPUBufferUsage, GPUMapMode, …) are globals in a browser; in Node they live
// on `globals`. Only these go on globalThis: the GPU object `create()` returns must NOT be kept
// there, or Dawn's background thread keeps the process alive after the work is done.
Object.assign(globalThis, globals)

/** One way of asking Dawn for an adapter. */
export interface DeviceConfig {
  /** Dawn options for `create()`, e.g. ["backend=vulkan"] or ["backend=opengles"]. */
  readonly flags: readonly string[]
  readonly featureLevel: "core" | "compatibility"
}

export interface DeviceOptions {
  /**
   * Configurations to try, in order. Default: `MINISEQ_WEBGPU_FLAGS` (space-separated Dawn flags)
   * when set, else Dawn's default backend at feature level "core" (Vulkan on a GPU machine),
   * then OpenGL ES at "compatibility" (llvmpipe on a CPU-only machine or CI).
   */
  readonly configs?: readonly DeviceConfig[]
  readonly powerPreference?: GPUPowerPreference
}

/** What the backend needs from an acquired device. */
export interface GpuDevice {
  readonly device: GPUDevice
  readonly config: DeviceConfig
  readonly info: AdapterInfo
  /** Set by Dawn when the device is lost (destroyed, driver reset); work after that is dropped. */
  lost: string | undefined
  /** The first uncaptured WebGPU error (a validation error is a bug in a kernel). */
  error: string | undefined
  /** Keeps the GPU instance alive exactly as long as the device (see the module comment). */
  readonly gpu: GPU
}

export interface AdapterInfo {
  readonly vendor: string
  readonly architecture: string
  readonly device: string
  readonly description: string
  readonly flags: readonly string[]
  readonly featureLevel: string
}

export function defaultConfigs(): DeviceConfig[] {
  const env = process.env.MINISEQ_WEBGPU_FLAGS
  if (env !== undefined && env.trim() !== "") {
    const flags = env.trim().split(/\s+/)
    const gl = flags.some((f) => f.startsWith("backend=opengl"))
    return [{ flags, featureLevel: gl ? "compatibility" : "core" }]
  }
  return [
    { flags: [], featureLevel: "core" },
    { flags: ["backend=opengles"], featureLevel: "compatibility" },
  ]
}

/**
 * Limits the kernels want raised above WebGPU's defaults when the adapter allows it: the
 * largest buffer a kernel can bind is the largest tensor it can touch.
 */
const wantedLimits = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
] as const

/**
 * A device on an adapter already found (from Dawn here, or from a browser's `navigator.gpu`):
 * the kernels' limits raised as far as the adapter allows, loss and uncaptured errors recorded
 * so the backend can report them.
 */
export async function deviceOn(gpu: GPU, adapter: GPUAdapter, config: DeviceConfig): Promise<GpuDevice> {
  const requiredLimits: Record<string, number> = {}
  for (const name of wantedLimits) requiredLimits[name] = adapter.limits[name]
  const device = await adapter.requestDevice({ requiredLimits })
  const a = adapter.info
  const ctx: GpuDevice = {
    device,
    config,
    gpu,
    lost: undefined,
    error: undefined,
    info: {
      vendor: a.vendor,
      architecture: a.architecture,
      device: a.device,
      description: a.description,
      flags: config.flags,
      featureLevel: config.featureLevel,
    },
  }
  void device.lost.then((info) => {
    ctx.lost = `${info.reason}: ${info.message}`
  })
  device.addEventListener("uncapturederror", (ev) => {
    const message = (ev as GPUUncapturedErrorEvent).error.message
    if (ctx.error === undefined) {
      ctx.error = message
      console.error(`miniseq webgpu: ${message}`)
    }
  })
  return ctx
}

/** The default configuration that worked last in this process: tried first next time. */
let lastWorking: DeviceConfig | undefined

export async function acquireDevice(opts: DeviceOptions = {}): Promise<GpuDevice> {
  // Mesa's EGL needs to be told there is no display; harmless for other backends.
  process.env.EGL_PLATFORM ??= "surfaceless"
  const same = (a: DeviceConfig) => (b: DeviceConfig) =>
    a.flags.join(" ") === b.flags.join(" ") && a.featureLevel === b.featureLevel
  const defaults = defaultConfigs()
  const last = lastWorking !== undefined && defaults.some(same(lastWorking)) ? lastWorking : undefined
  const configs = opts.configs ?? (last === undefined ? defaults : [last, ...defaults.filter((c) => !same(last)(c))])
  const tried: string[] = []
  for (const config of configs) {
    const label = `[${config.flags.join(" ")}] ${config.featureLevel}`
    let gpu: GPU
    let adapter: GPUAdapter | null
    try {
      gpu = create([...config.flags])
      const request: GPURequestAdapterOptions & { featureLevel?: string } = { featureLevel: config.featureLevel }
      if (opts.powerPreference !== undefined) request.powerPreference = opts.powerPreference
      adapter = await gpu.requestAdapter(request)
    } catch (e) {
      tried.push(`${label}: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`)
      continue
    }
    if (adapter === null) {
      tried.push(`${label}: no adapter`)
      continue
    }
    // Dawn's "null" backend gives an adapter that computes nothing: only when asked for by name.
    if (adapter.info.device === "null-backend" && !config.flags.includes("backend=null")) {
      tried.push(`${label}: only the null backend`)
      continue
    }

    let ctx: GpuDevice
    try {
      ctx = await deviceOn(gpu, adapter, config)
    } catch (e) {
      tried.push(`${label}: requestDevice failed: ${e instanceof Error ? e.message : String(e)}`)
      continue
    }
    if (opts.configs === undefined) lastWorking = config
    return ctx
  }
  throw new BackendUnavailable({
    backend: "webgpu",
    reason: tried.join("; "),
    message:
      `webgpu: no WebGPU adapter found (tried ${tried.join("; ")}). On a GPU machine install the ` +
      `Vulkan driver (libvulkan.so.1); without a GPU install Mesa (llvmpipe, EGL, GLES) and run with ` +
      `EGL_PLATFORM=surfaceless; or pick Dawn flags with MINISEQ_WEBGPU_FLAGS. Otherwise use the CPU backend.`,
  })
}

export function releaseDevice(ctx: GpuDevice): void {
  ctx.device.destroy()
}
