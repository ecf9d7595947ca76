// What attention.cu (forward) and attention_backward.cu share: tile shapes, the shared-memory
// tile loader, and the 16-lane row reductions. See attention.cu for the design.
#pragma once
#include "common.cuh"

namespace miniseq {
namespace attn {

// Thread layout of every attention kernel: 16 × TY threads, thread (ty, tx) = threadIdx.x / 16,
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

}  // namespace attn
}  // namespace miniseq
