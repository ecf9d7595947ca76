/**
 * The command stream: kernels record dispatches into one command encoder, which is submitted in
 * batches (every `batchSize` commands, and before any host write or read). Submitting per
 * dispatch would cost a driver round trip each; never submitting would grow one giant encoder.
 *
 * Each dispatch gets its parameters (sizes, strides, flags) in a 256-byte slot of one uniform
 * buffer. The slots are staged on the host and uploaded with one `writeBuffer` just before the
 * batch is submitted; the queue runs that upload before the batch's commands, and after the
 * previous batch's, so one uniform buffer serves every batch.
 */
/// <reference types="@webgpu/types" />

/** Bytes of one parameter slot: WebGPU's largest possible minUniformBufferOffsetAlignment. */
export const SLOT_BYTES = 256
export const SLOT_WORDS = SLOT_BYTES / 4

/** A storage binding: a buffer and how many bytes of it the kernel may touch. */
export interface Binding {
  readonly buffer: GPUBuffer
  readonly bytes: number
}

/** Parameter words of a dispatch; floats and signed ints are stored by their bit pattern. */
export type Params = Uint32Array

/** Workgroup grid for `count` workgroups: WebGPU caps each dimension at 65535, so go 2-D. */
export function grid(count: number, maxPerDim: number): [number, number] {
  if (count <= maxPerDim) return [count, 1]
  const y = Math.ceil(count / maxPerDim)
  if (y > maxPerDim) throw new Error(`webgpu: ${count} workgroups do not fit a ${maxPerDim}×${maxPerDim} grid`)
  return [maxPerDim, y]
}

export class CommandStream {
  private encoder: GPUCommandEncoder | null = null
  private commands = 0
  private slots = 0
  private readonly staged: Uint32Array
  private readonly uniforms: GPUBuffer
  private readonly maxPerDim: number
  private readonly layouts = new WeakMap<GPUComputePipeline, GPUBindGroupLayout>()
  /** Dispatches recorded since creation (for tests and benchmarks). */
  dispatches = 0

  constructor(
    private readonly device: GPUDevice,
    private readonly batchSize = 128,
  ) {
    this.staged = new Uint32Array(batchSize * SLOT_WORDS)
    this.uniforms = device.createBuffer({
      size: batchSize * SLOT_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    })
    this.maxPerDim = device.limits.maxComputeWorkgroupsPerDimension
  }

  private enc(): GPUCommandEncoder {
    return (this.encoder ??= this.device.createCommandEncoder())
  }

  private counted(): void {
    if (++this.commands >= this.batchSize) this.flush()
  }

  /** Records one compute dispatch of `workgroups` workgroups (bindings after the params). */
  dispatch(pipeline: GPUComputePipeline, params: Params, bindings: readonly Binding[], workgroups: number): void {
    if (workgroups === 0) return
    if (params.length > SLOT_WORDS)
      throw new Error(`webgpu: ${params.length} parameter words exceed a slot of ${SLOT_WORDS}`)
    const slot = this.slots++
    this.staged.set(params, slot * SLOT_WORDS)
    const entries: GPUBindGroupEntry[] = [
      { binding: 0, resource: { buffer: this.uniforms, offset: slot * SLOT_BYTES, size: SLOT_BYTES } },
    ]
    bindings.forEach((b, i) => {
      // A zero-byte binding is invalid; kernels never index an empty operand, so bind 4 bytes.
      entries.push({
        binding: i + 1,
        resource: { buffer: b.buffer, offset: 0, size: Math.max(4, Math.ceil(b.bytes / 4) * 4) },
      })
    })
    let layout = this.layouts.get(pipeline)
    if (layout === undefined) this.layouts.set(pipeline, (layout = pipeline.getBindGroupLayout(0)))
    const group = this.device.createBindGroup({ layout, entries })
    const pass = this.enc().beginComputePass()
    pass.setPipeline(pipeline)
    pass.setBindGroup(0, group)
    const [x, y] = grid(workgroups, this.maxPerDim)
    pass.dispatchWorkgroups(x, y)
    pass.end()
    this.dispatches++
    this.counted() // slots ≤ commands, so the uniform buffer never overflows
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    if (bytes === 0) return
    this.enc().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes)
    this.counted()
  }

  clear(buffer: GPUBuffer, bytes: number): void {
    if (bytes === 0) return
    this.enc().clearBuffer(buffer, 0, Math.ceil(bytes / 4) * 4)
    this.counted()
  }

  /** Submits everything recorded so far. */
  flush(): void {
    if (this.encoder === null) return
    if (this.slots > 0) this.device.queue.writeBuffer(this.uniforms, 0, this.staged.buffer, 0, this.slots * SLOT_BYTES)
    this.device.queue.submit([this.encoder.finish()])
    this.encoder = null
    this.commands = 0
    this.slots = 0
  }

  /** Host → device, ordered after everything recorded so far. */
  write(buffer: GPUBuffer, data: ArrayBufferView): void {
    if (data.byteLength === 0) return
    this.flush()
    this.device.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, data.byteLength)
  }

  /** Device → host: copy into a mappable staging buffer, wait for the GPU, copy out. */
  async read(buffer: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    if (bytes === 0) return new ArrayBuffer(0)
    const size = Math.ceil(bytes / 4) * 4
    const staging = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST })
    this.enc().copyBufferToBuffer(buffer, 0, staging, 0, size)
    this.flush()
    try {
      await staging.mapAsync(GPUMapMode.READ)
      return staging.getMappedRange(0, size).slice(0, bytes)
    } finally {
      staging.destroy()
    }
  }

  /** Resolves when the GPU has finished everything submitted so far. */
  async sync(): Promise<void> {
    this.flush()
    await this.device.queue.onSubmittedWorkDone()
  }

  destroy(): void {
    this.encoder = null
    this.uniforms.destroy()
  }
}
