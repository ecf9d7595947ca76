/**
 * Pooled device memory. Creating a GPUBuffer is slow (a driver call and zeroing), and a training
 * step allocates and frees the same sizes over and over, so freed buffers go back to a pool keyed
 * by size class and the next request of that class reuses one.
 *
 * Reusing a buffer that pending (not yet executed) commands still read is safe: commands run in
 * submission order, so the old reads happen before any new writes. Host writes are the one
 * exception (`queue.writeBuffer` jumps ahead of unsubmitted commands), which is why the backend
 * submits pending work before every write.
 */
/// <reference types="@webgpu/types" />

/**
 * Size classes: four per power of two, so a buffer wastes less than 25% of what it reserves,
 * yet a few classes cover every size a model asks for. Small buffers share one 256-byte class.
 */
export function sizeClass(bytes: number): number {
  if (bytes <= 256) return 256
  const top = 2 ** Math.floor(Math.log2(bytes - 1)) // largest power of two below bytes
  const step = top / 4
  return Math.ceil(bytes / step) * step
}

export class BufferPool {
  private readonly free = new Map<number, GPUBuffer[]>()
  /** Bytes held by the pool's idle buffers. */
  idleBytes = 0
  /** Bytes of all buffers this pool created and has not destroyed. */
  reservedBytes = 0

  constructor(
    private readonly device: GPUDevice,
    private readonly maxBufferSize: number,
  ) {}

  acquire(bytes: number): GPUBuffer {
    const size = Math.min(sizeClass(bytes), Math.max(bytes, this.maxBufferSize))
    const reuse = this.free.get(size)?.pop()
    if (reuse !== undefined) {
      this.idleBytes -= size
      return reuse
    }
    this.reservedBytes += size
    return this.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    })
  }

  release(buffer: GPUBuffer): void {
    const list = this.free.get(buffer.size)
    if (list === undefined) this.free.set(buffer.size, [buffer])
    else list.push(buffer)
    this.idleBytes += buffer.size
  }

  /** Destroys every idle buffer (gives the memory back to the driver). */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy()
    this.free.clear()
    this.reservedBytes -= this.idleBytes
    this.idleBytes = 0
  }
}
