/**
 * What the CUDA allocator holds for a request (native/src/device.cc, CachingAllocator::sizeClass):
 * up to 1 MiB, multiples of 512 B; above, steps of a 64th of the request's power of two, at most
 * 2 MiB. The planner counts buffers at this size so that its answer is what the device must hold.
 * And where AdamW runs for offloaded state, which decides what crosses the bus.
 */
const MiB = 2 ** 20

export function cudaHeldBytes(bytes: number): number {
  if (bytes <= 0) return 0
  if (bytes <= 512) return 512
  if (bytes <= MiB) return Math.ceil(bytes / 512) * 512
  let power = MiB
  while (power * 2 <= bytes) power *= 2
  const step = Math.min(power / 64, 2 * MiB)
  return Math.ceil(bytes / step) * step
}

/**
 * Whether AdamW runs on the host's cores when its state is offloaded (native/src/device.cc,
 * `Device::adamwOnHost`): with MINISEQ_HOST_ADAMW=1. By default it stays on the GPU, reading the
 * state over the bus, which measured faster on an H100 host (docs/offload.md).
 */
export const cudaHostOptimizer = (): boolean => process.env.MINISEQ_HOST_ADAMW === "1"
