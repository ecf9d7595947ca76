/**
 * Which backend the page trains on: WebGPU through the browser's own `navigator.gpu` when it
 * offers an adapter, else the fast CPU backend (WebAssembly SIMD) — with the reason, so the page
 * can say why. Where the browser lacks WebAssembly SIMD the fast backend runs the reference
 * kernels and says so in one line (`cpuNotice`).
 *
 * In Node the WebGPU backend finds its adapter through Dawn; a bundler building for the browser
 * gets `miniseq/webgpu`'s browser entry instead, whose `acquireBrowserDevice` takes the adapter
 * from `navigator.gpu` (and miniseq's package.json tells the bundler to leave Dawn and Node's
 * modules out). `webGpuBackendOn` then builds the very backend that runs in Node.
 */
import { Effect, Layer } from "effect"
import { Backend, BackendUnavailable, makeFastCpuBackend } from "miniseq"
import { acquireBrowserDevice, type WebGpuBackend, webGpuBackendOn } from "miniseq/webgpu"

export interface BackendChoice {
  readonly kind: "webgpu" | "cpu"
  /** For the status line, e.g. "WebGPU (google swiftshader)". */
  readonly description: string
  /** Why the CPU backend runs instead of WebGPU; undefined when WebGPU runs. */
  readonly fallbackReason?: string
  /** The fast CPU backend's one-line notice when it runs short (no SIMD: reference kernels; no shared memory: one thread). */
  readonly cpuNotice?: string
}

export type BackendPreference = "auto" | "cpu"

const describeAdapter = (b: WebGpuBackend) => {
  const name = [b.info.vendor, b.info.architecture, b.info.device, b.info.description].filter((s) => s !== "").join(" ")
  return `WebGPU${name === "" ? "" : ` (${name})`}`
}

/**
 * The `Backend` layer for the page: WebGPU when the browser has it, otherwise the fast CPU backend.
 * It never fails; `onChoice` hears which one was built (and why not WebGPU) before training
 * starts. The WebGPU device is destroyed when the layer's scope closes (training is over).
 */
export function webgpuLayerForBrowser(
  onChoice: (choice: BackendChoice) => void,
  preference: BackendPreference = "auto",
): Layer.Layer<Backend> {
  const cpu = (fallbackReason: string) =>
    Layer.effect(
      Backend,
      Effect.sync(() => {
        const backend = makeFastCpuBackend()
        const description = backend.simd ? "CPU (WebAssembly SIMD)" : "CPU (reference kernels)"
        const notice = backend.notice
        onChoice({ kind: "cpu", description, fallbackReason, ...(notice === undefined ? {} : { cpuNotice: notice }) })
        return backend
      }),
    )
  if (preference === "cpu") return cpu("the page was opened with ?backend=cpu")

  const webgpu = Layer.effect(
    Backend,
    Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => webGpuBackendOn(await acquireBrowserDevice()),
        catch: (e) =>
          e instanceof BackendUnavailable
            ? e
            : new BackendUnavailable({
                backend: "webgpu",
                reason: `could not start the device: ${String(e)}`,
                message: `webgpu: ${String(e)}`,
              }),
      }).pipe(Effect.tap((b) => Effect.sync(() => onChoice({ kind: "webgpu", description: describeAdapter(b) })))),
      (b) => Effect.promise(() => b.destroy()),
    ),
  )
  return webgpu.pipe(Layer.catch((e) => cpu(e.reason)))
}
