// Where the fused Hopper backward (attention_hopper_backward_fused.cu) puts and finds the pieces
// of its dQ path, as plain index arithmetic shared by the kernel and a host check
// (bench/attention_hopper/dq_layout_check.cc, which replays them against the wgmma operand
// layouts of the PTX ISA and a float64 dS·K):
// - dSᵀ in shared memory: [128 keys × 64 queries] bf16, rows of 128 bytes in the 128-byte
//   swizzle (16-byte chunk j of row r at chunk j ^ (r % 8)), as TMA writes a [rows × 64] box;
// - the operands of dQ += dS·K: dS read MN-major (A, imm-trans-a), K MN-major (B, imm-trans-b);
// - dQ's fp32 accumulator pairs → elements of dqAccum [b·h, S rounded up to 64, D].
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define MINISEQ_HD __host__ __device__ __forceinline__
#else
#define MINISEQ_HD inline
#endif

namespace miniseq {
namespace attn {
namespace hopper {
namespace dq {

// Byte offset in the dSᵀ buffer of the bf16 pair of row `row` (a key of the block), 16-byte
// chunk `chunk` (queries 8·chunk ..), lane quarter q4 (queries 8·chunk + 2·q4, + 1).
MINISEQ_HD uint32_t dsPairOffset(int row, int chunk, int q4) {
  return static_cast<uint32_t>(row * 128 + ((chunk ^ (row & 7)) << 4) + 4 * q4);
}

// The 128-byte swizzle on an offset from a 1024-byte-aligned base (what TMA writes).
MINISEQ_HD uint32_t swizzle128(uint32_t o) { return o ^ (((o >> 7) & 7) << 4); }

// The K-major form (bit 128, no transposed read): dS itself, rows = the tile's 64 queries, keys
// contiguous, as TMA would write a [64 × 128] tile: two 64-key panels of 64 rows × 128 bytes,
// kDsPanel apart. The byte of element (query, key), and the k16 step kk's start of it as A
// (splitColumns: all 128 keys; the key split: consumer c's panel).
constexpr uint32_t kDsPanel = 64 * 128;
MINISEQ_HD uint32_t dsKMajorOffset(int query, int key) { return (key / 64) * kDsPanel + swizzle128(query * 128 + (key % 64) * 2); }
MINISEQ_HD uint32_t dsKMajorOperandOffset(bool splitColumns, int c, int kk) {
  const int k16 = splitColumns ? kk : 4 * c + kk;  // which 16 of the block's 128 keys
  return (k16 / 4) * kDsPanel + (k16 % 4) * 32;
}

// The k16 step kk's start (bytes) of dS as A: splitColumns reads all 128 keys (kk < 8), the key
// split consumer c's own 64 (kk < 4).
MINISEQ_HD uint32_t dsOperandOffset(bool splitColumns, int c, int kk) { return (splitColumns ? 0 : c * 64 * 128) + kk * 16 * 128; }

// The k16 step kk's start (bytes, from the K block, [128 keys × D] in 64-column panels kKPanel
// apart: LBO) of K as B: splitColumns consumer c's D / 2 columns over all keys (D = 64: half-way
// into the panel's 128-byte rows), the key split its own keys over every column.
constexpr uint32_t kKPanel = 128 * 128;
MINISEQ_HD uint32_t kOperandOffset(int D, bool splitColumns, int c, int kk) {
  const int col = c * D / 2;
  return (splitColumns ? (col / 64) * kKPanel + (col % 64) * 2 : c * 64 * 128) + kk * 16 * 128;
}

// The element of dqAccum that accumulator pair (j, r) of lane `lane` in warp w adds to: row
// 16w + lane / 4 + 8r of the tile at query q0, column 8j + 2·(lane % 4) (+ c·D/2 under
// splitColumns) — the lane's first pair's element plus a step that is the same for every lane.
MINISEQ_HD long long dqAccumBase(long long bh, int sPad, int q0, int w, int lane, int D, bool splitColumns, int c) {
  return (bh * sPad + q0 + 16 * w + lane / 4) * D + (splitColumns ? c * D / 2 : 0) + 2 * (lane % 4);
}
MINISEQ_HD int dqAccumStep(int D, int j, int r) { return 8 * j + 8 * r * D; }

// The bulk path (bit 32) instead: each consumer's 64 × 64 fp32 part goes to shared memory in
// thread order (value i of thread t at float (i / 4)·512 + 4t + i % 4: 16-byte stores, no bank
// conflicts), then one bulk add puts those 16 KiB onto part p of query tile `tile` in dqAccum,
// laid out as [b·h, tiles, D / 64 parts, 4096]: the column split's consumer c owns part c, the
// key split's two consumers both add to the only part.
MINISEQ_HD int partFloat(int t, int i) { return (i / 4) * 512 + 4 * t + (i % 4); }
MINISEQ_HD long long partBase(long long bh, int tiles, int parts, int tile, int p) { return ((bh * tiles + tile) * parts + p) * 4096LL; }
// Element (row rl, column d) of a query tile's dQ: its part, and its float in the part (the
// thread and value whose accumulator holds row rl, column d % 64).
MINISEQ_HD int partOfColumn(int d) { return d / 64; }
MINISEQ_HD int partFloatOf(int rl, int d) {
  const int col = d % 64, w = rl / 16, r = (rl / 8) % 2, g = rl % 8, j = col / 8, q4 = (col % 8) / 2, e = col % 2;
  return partFloat(32 * w + 4 * g + q4, 4 * j + 2 * r + e);
}

}  // namespace dq
}  // namespace hopper
}  // namespace attn
}  // namespace miniseq
