// What attention.cu (forward) and attention_backward.cu share: tile shapes, the shared-memory
// tile loader, and the 16-lane row reductions of the SIMT kernels (see attention.cu for their
// design), and the entry points of the bf16 tensor-core kernels they hand over to.
#pragma once
#include <initializer_list>

#include "common.cuh"

namespace miniseq {
namespace attn {

// Thread layout of every SIMT attention kernel: 16 × TY threads, thread (ty, tx) = threadIdx.x / 16,
// threadIdx.x % 16. A score tile [rows, BC] gives thread (ty, tx) rows ty + TY·i and columns
// tx + 16·j; an accumulator [rows, DMAX] gives it rows ty + TY·i and columns tx + 16·j. A warp
// is two values of ty, so the 16 threads of one row are half a warp (shuffles by xor 8, 4, 2, 1).
//
// Tiles live in shared memory in the compute type (float32 for float32 and bfloat16, float64 for
// float64), rows padded to DMAX + 1 (and BC + 1) elements so that 16 threads reading 16
// different rows at one column hit 16 different banks.
//
// Sizes (float32 compute, DMAX = 256, the largest): forward Q + K/V (one buffer, K then V) + P =
// 148 KiB; backward K + V + Q + dO + P + dS = 209 KiB (one CTA per SM, H100/H200 allow 227).
// float64 halves the rows to stay within the same bytes.
template <typename A, int DMAX> struct ForwardTiles;
template <int DMAX> struct ForwardTiles<float, DMAX> { static constexpr int BR = 64, BC = 64, TY = 16; };
template <int DMAX> struct ForwardTiles<double, DMAX> { static constexpr int BR = 32, BC = 32, TY = 16; };

// BR query rows per step, BC keys per CTA (dK/dV) or per step (dQ).
template <typename A, int DMAX> struct BackwardTiles;
template <int DMAX> struct BackwardTiles<float, DMAX> { static constexpr int BR = 32, BC = 64, TY = DMAX > 128 ? 32 : 16; };
template <int DMAX> struct BackwardTiles<double, DMAX> { static constexpr int BR = 16, BC = 32, TY = 16; };

template <int DMAX> constexpr int kLd = DMAX + 1;

// dst[r][c] = src[(row0 + r)·D + c] for r < ROWS, c < DMAX; 0 past the sequence or the head dim,
// so padded rows and columns add nothing.
template <typename T, int ROWS, int DMAX, int NT>
__device__ __forceinline__ void loadRows(Compute<T>* __restrict__ dst, const T* __restrict__ src, long long row0, long long S, int D) {
  constexpr int LD = kLd<DMAX>;
  for (int e = threadIdx.x; e < ROWS * DMAX; e += NT) {
    const int r = e / DMAX, c = e % DMAX;
    const long long gr = row0 + r;
    dst[r * LD + c] = (gr < S && c < D) ? load(src, gr * D + c) : Compute<T>(0);
  }
}

template <typename A> __device__ __forceinline__ A rowMax16(A v) {
#pragma unroll
  for (int off = 8; off > 0; off >>= 1) {
    const A o = __shfl_xor_sync(0xffffffffu, v, off);
    v = o > v ? o : v;
  }
  return v;
}

template <typename A> __device__ __forceinline__ A rowSum16(A v) {
#pragma unroll
  for (int off = 8; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Kernels with more than 48 KiB of dynamic shared memory must say so first.
template <typename K> cudaError_t allowSmem(K kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

constexpr long long kMaxGrid = 2147483647LL;

// The bf16 tensor-core kernels (attention_mma.cu, attention_mma_backward.cu) take head dims that
// are multiples of 16 up to 128, and read q, k, v (and dO) in 16-byte pieces, so these must be
// 16-byte aligned (device allocations always are).
inline bool useTensorCores(long long d, std::initializer_list<const void*> inputs) {
  if (d <= 0 || d % 16 != 0 || d > 128) return false;
  for (const void* p : inputs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}
cudaError_t forwardTensorCores(const Launch& l, const bf16* q, const bf16* k, const bf16* v, bf16* o, float* lse, long long B, long long H,
                               long long Hkv, long long S, long long D);
// dq, dk, dv from delta = Σ dO·O − dLse per query row (attention_backward.cu computes it).
cudaError_t backwardTensorCores(const Launch& l, const bf16* q, const bf16* k, const bf16* v, const bf16* dO, const float* lse,
                                const float* delta, bf16* dq, bf16* dk, bf16* dv, long long B, long long H, long long Hkv, long long S,
                                long long D);

// delta = Σ dO·O − dLse per row (dLse may be null), for the bf16 backward kernels.
cudaError_t launchDeltaBf16(const Launch& l, const bf16* o, const bf16* dO, const float* dLse, float* delta, long long rows, long long D);

// The Hopper backward's per-row inputs (rowStatsBytes(BH, S) bytes, 16-byte aligned): delta
// [BH, sPad] then lse·log2 e [BH, sPad], sPad = S rounded up to 64, with delta = 0 and
// lse·log2 e = +inf on the padding rows, so a kernel copies each tile of 64 rows of either one as
// one aligned, in-bounds 256-byte run, and rows past S give P = 0 and dS = 0.
inline long long rowStatsPad(long long S) { return (S + 63) / 64 * 64; }
inline long long rowStatsBytes(long long BH, long long S) { return 2 * BH * rowStatsPad(S) * 4; }
cudaError_t launchRowStatsBf16(const Launch& l, const bf16* o, const bf16* dO, const float* dLse, const float* lse, float* stats, long long BH,
                               long long S, long long D);

// The Hopper (sm_90a) forward of attention_hopper.cu: wgmma, TMA, warp-specialised warpgroups.
// bf16, D = 64 or 128, on a compute capability 9.0 device; forwardVariant() reads
// MINISEQ_ATTN_WGMMA once (unset: this kernel's default variant, 0: the mma.sync one, another
// number: that variant, see attention_hopper.cu).
namespace hopper {
bool forwardAvailable(long long d, long long b, long long h, long long s, std::initializer_list<const void*> ptrs);
int forwardVariant();
cudaError_t forward(const Launch& l, const bf16* q, const bf16* k, const bf16* v, bf16* o, float* lse, long long B, long long H, long long Hkv,
                    long long S, long long D, int variant);
// The backward of attention_hopper_backward.cu (dK/dV kernel + dQ kernel, deterministic);
// backwardVariant(s) reads MINISEQ_ATTN_WGMMA_BWD once (the same rules; unset: a default that
// depends on the sequence length s). A variant with kFusedBackwardBit runs the one-pass kernel
// of attention_hopper_backward_fused.cu instead: dQ summed by fp32 atomics (not deterministic)
// in dqAccum, fusedDqAccumBytes(B, H, S, D) bytes, 16-byte aligned (its contents on entry do
// not matter; it is zeroed on the stream first).
constexpr int kFusedBackwardBit = 8;
int backwardVariant(long long s);
long long fusedDqAccumBytes(long long B, long long H, long long S, long long D);
// stats: launchRowStatsBf16's rows (delta and lse·log2 e, padded), not the graph's lse.
cudaError_t backward(const Launch& l, const bf16* q, const bf16* k, const bf16* v, const bf16* dO, const float* stats, bf16* dq, bf16* dk,
                     bf16* dv, long long B, long long H, long long Hkv, long long S, long long D, int variant = 1, float* dqAccum = nullptr);
}  // namespace hopper

}  // namespace attn
}  // namespace miniseq
