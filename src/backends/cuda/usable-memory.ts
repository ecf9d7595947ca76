/**
 * The device memory a training step can really use: what plans are compared with on CUDA.
 *
 * Not the card's total (cudaMemGetInfo's `total`): part of the card is never ours. The CUDA
 * context, cuBLAS's workspace, and the kernel modules (cuBLAS's and ours) the driver loads
 * lazily, on a kernel's first launch, all take device memory outside our allocator. On an H100
 * 80GB (cuBLAS 13, driver 580) that was 726,572,032 bytes once a step had run: the allocator
 * reserved 83,263,120,384 bytes and the driver had 1,027,801,088 free of 85,017,493,504, so a
 * plan against the total (Llama3-8B mst+checkpoint, checkpoints offloaded, S = 183,296, held
 * 85,014,258,688 B) failed in its first step, while the plan equalled the step's live bytes.
 *
 * So the usable limit is read from the device *now*: what our allocator holds (live buffers at
 * their size classes and its cache, all of which it may hand out again) plus what the driver
 * has free. Read after warm-up (a step at the same model and mode has run once) it has already
 * lost what loads lazily. Before any kernel ran, `usableBeforeWarmUp` takes a measured reserve
 * off the card instead (overridable with MINISEQ_CUDA_RESERVE).
 */
import { Effect } from "effect"
import { BadConfig } from "../../core/errors.js"

/** cudaMemGetInfo now: bytes the driver has free and the card's total. */
export interface DeviceMemoryNow {
  readonly free: number
  readonly total: number
}

/** What the limit is read from: a CudaBackend, or a stand-in with the same two methods. */
export interface DeviceMemorySource {
  memoryInfo(): DeviceMemoryNow
  memory(): { readonly reserved: number }
}

/**
 * Bytes of the card outside our allocator once a step has run: the CUDA context, cuBLAS's
 * workspace and the kernel modules loaded on first use. Measured on an H100 80GB (cuBLAS 13,
 * driver 580): total 85,017,493,504 − (reserved 83,263,120,384 + free 1,027,801,088). Another
 * card, driver or cuBLAS takes a different amount; MINISEQ_CUDA_RESERVE overrides it.
 */
export const measuredCudaReserve = 726_572_032

/** The environment variable that replaces `measuredCudaReserve` (bytes, or a size such as 1GiB). */
export const cudaReserveVariable = "MINISEQ_CUDA_RESERVE"

/** After warm-up: the allocator's reserved bytes plus the driver's free bytes, read now. */
export function usableNow(source: DeviceMemorySource): number {
  return source.memory().reserved + source.memoryInfo().free
}

/**
 * Before any step ran: the usable bytes now, but never more than the card less `reserve` (what
 * will load lazily has not yet been taken from the free bytes; the context, which is already
 * there, counts in the reserve too, so no start-up reading is needed to split the two).
 */
export function usableBeforeWarmUp(source: DeviceMemorySource, reserve: number): number {
  return Math.max(0, Math.min(usableNow(source), source.memoryInfo().total - reserve))
}

/** The limit under an allocator cap (`memoryLimit`): the cap binds only where it is below what is usable. */
export const usableUnderCap = (cap: number | undefined, usable: number): number =>
  cap === undefined ? usable : Math.min(cap, usable)

/**
 * MINISEQ_CUDA_RESERVE: bytes ("700000000", "1.5e9") or a size ("512MiB", "1GB"; GB = GiB = 2^30);
 * unset or empty: the measured reserve. 0 is allowed (trust the driver's free bytes as they are).
 */
export function cudaReserve(
  value: string | undefined = process.env[cudaReserveVariable],
): Effect.Effect<number, BadConfig> {
  if (value === undefined || value.trim() === "") return Effect.succeed(measuredCudaReserve)
  const m = /^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmgt]i?b?)?\s*$/i.exec(value)
  const units: Record<string, number> = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }
  const bytes = m === null ? NaN : Number(m[1]) * (m[2] ? units[m[2][0]!.toLowerCase()]! : 1)
  return Number.isFinite(bytes) && bytes <= 2 ** 50
    ? Effect.succeed(Math.floor(bytes))
    : Effect.fail(
        new BadConfig({
          field: cudaReserveVariable,
          message: `${cudaReserveVariable} must be the device bytes to keep out of plans: a number of bytes ≥ 0 such as 730000000, or a size such as 700MiB or 1GB (GB = GiB = 2^30), got "${value}"; unset it to use the measured ${measuredCudaReserve} bytes`,
        }),
      )
}
