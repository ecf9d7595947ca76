/**
 * The device scratch of the CUDA attention backward that the planner must count. The addon takes
 * `attentionScratch()` bytes (native/kernels/attention_backward.cu) for each attention.vjp call:
 * per-row values, O(S), not counted (docs/planner.md): delta's B·H·S rows in the compute type, or,
 * where the Hopper backward may run (bf16, D = 64 or 128), its padded row stats, delta and
 * lse·log2 e for B·H·(S rounded up to 64) rows each, in fp32. When MINISEQ_ATTN_WGMMA_BWD selects
 * the one-pass Hopper backward (its bit 8), an fp32 dQ sum of B·H·(S rounded up to 64)·D·4 bytes
 * follows the row stats: twice dQ's own bf16 size, so it is counted, with the row stats' bytes
 * beyond delta's B·H·S rows. These mirror the C++ rules exactly.
 */
import type { BackendImpl, KernelInputTypes } from "../../core/backend.js"
import type { DType } from "../../core/dtype.js"

/** native/kernels/attention.cuh's kFusedBackwardBit: the one-pass backward with fp32 atomic dQ. */
export const fusedBackwardBit = 8

/**
 * Whether MINISEQ_ATTN_WGMMA_BWD (its text, as the addon reads it with atoi) selects the fused
 * backward. Unset, empty or negative: the default variants, which do not; 0: the mma.sync kernels.
 */
export function fusedBackwardSelected(switchText: string | undefined): boolean {
  if (switchText === undefined || switchText === "") return false
  const v = Number.parseInt(switchText, 10)
  return Number.isFinite(v) && v > 0 && (v & fusedBackwardBit) !== 0
}

/** The scratch the fused backward adds to attention.vjp's for q [B, H, S, D] (0 where it does not run). */
export function fusedBackwardExtraBytes(dtype: DType, B: number, H: number, S: number, D: number): number {
  if (dtype !== "bfloat16" || (D !== 64 && D !== 128)) return 0
  const paddedRows = B * H * Math.ceil(S / 64) * 64
  const rowStats = 2 * paddedRows * 4 // delta and lse·log2 e, fp32 (attention.cuh's rowStatsBytes)
  const delta = B * H * S * 4
  return rowStats - delta + paddedRows * D * 4
}

/** The CUDA backend's `kernelScratchBytes` for this switch setting; undefined when nothing is counted. */
export function cudaKernelScratch(switchText: string | undefined): BackendImpl["kernelScratchBytes"] {
  if (!fusedBackwardSelected(switchText)) return undefined
  return (name: string, inputs: KernelInputTypes): number => {
    const q = inputs.q
    if (name !== "attention.vjp" || q === undefined || q.shape.length !== 4) return 0
    const [B, H, S, D] = q.shape as [number, number, number, number]
    return fusedBackwardExtraBytes(q.dtype, B, H, S, D)
  }
}
