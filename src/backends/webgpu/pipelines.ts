/**
 * Compiled compute pipelines, one per distinct kernel variant (kernel, dtype, flags). Compiling
 * WGSL takes milliseconds to tens of milliseconds, so each variant is compiled once per device.
 */
/// <reference types="@webgpu/types" />

export class PipelineCache {
  private readonly pipelines = new Map<string, GPUComputePipeline>()

  /** @param onError called with the first compile error of a kernel (a bug in its generator). */
  constructor(
    private readonly device: GPUDevice,
    private readonly onError: (message: string) => void,
  ) {}

  /** The pipeline for `key`, compiling `source()` the first time. */
  get(key: string, source: () => string): GPUComputePipeline {
    let pipeline = this.pipelines.get(key)
    if (pipeline !== undefined) return pipeline
    const code = source()
    const module = this.device.createShaderModule({ label: key, code })
    // Compile errors arrive asynchronously; report them with the kernel's name and source.
    void module.getCompilationInfo().then((info) => {
      const errors = info.messages.filter((m) => m.type === "error")
      if (errors.length > 0) {
        const lines = code.split("\n")
        this.onError(
          `kernel ${key} does not compile:\n` +
            errors
              .map((m) => `  line ${m.lineNum}: ${m.message}\n    ${lines[m.lineNum - 1]?.trim() ?? ""}`)
              .join("\n"),
        )
      }
    })
    pipeline = this.device.createComputePipeline({
      label: key,
      layout: "auto",
      compute: { module, entryPoint: "main" },
    })
    this.pipelines.set(key, pipeline)
    return pipeline
  }

  get size(): number {
    return this.pipelines.size
  }
}
