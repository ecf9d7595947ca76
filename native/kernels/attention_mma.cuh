// What the tensor-core (bf16) attention kernels share: attention_mma.cu (forward) and
// attention_mma_backward.cu (dK/dV and dQ). attention.cu and attention_backward.cu send bf16
// inputs here when the head dim is a multiple of 16 up to 128 (useTensorCores, attention.cuh).
//
// Every kernel runs 8 warps, and each warp owns 16 rows of one side of the product (queries in
// the forward and dQ, keys in dK/dV): its accumulators stay in registers in the mma C layout
// (attention_ptx.cuh), so a row's values sit in the 4 lanes of a group, and row statistics
// (max, sum) reduce over those 4 lanes with two shuffles.
//
// Tiles live in shared memory as bf16, DMAX columns (64 or 128: the head dim rounded up, zero
// beyond D) padded by 8 to a row pitch of DMAX + 8 elements: the 8 rows one ldmatrix reads at
// one column then start 4 banks apart and cover all 32 banks. They arrive by cp.async.
//
// Operand fragments come four ways:
// - A from a row-major tile (Q, dO; K, V in dK/dV): loadFragmentA.
// - B from a tile whose rows are B's columns (K for Q·Kᵀ, Q for K·Qᵀ): loadFragmentsB.
// - B from a tile whose rows are B's rows (V for P·V, K for dS·K): loadFragmentsBTransposed,
//   ldmatrix .trans doing the transpose.
// - A from an fp32 accumulator (P, dS): toFragmentsA, because the C layout of two adjacent
//   8-column tiles is the A layout of one 16-column k-step.
#pragma once
#include "attention.cuh"
#include "attention_ptx.cuh"

namespace miniseq {
namespace attn {

constexpr int kMmaThreads = 256;  // 8 warps
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int DMAX> constexpr int kPitch = DMAX + 8;

// tile[r][c] = src[(row0 + r)·D + c] for r < ROWS, c < DMAX, zero past the sequence or the head
// dim. Asynchronous (cp.async, 16 bytes = 8 elements a copy); the caller commits and waits.
template <int ROWS, int DMAX>
__device__ __forceinline__ void loadTileAsync(bf16* tile, const bf16* __restrict__ src, long long row0, long long S, int D) {
  constexpr int PIECES = DMAX / 8, TOTAL = ROWS * PIECES;
  static_assert(TOTAL % kMmaThreads == 0, "every thread copies the same number of pieces");
#pragma unroll
  for (int i = 0; i < TOTAL / kMmaThreads; i++) {
    const int e = threadIdx.x + i * kMmaThreads;
    const int r = e / PIECES, c = (e % PIECES) * 8;
    const long long gr = row0 + r;
    const bool valid = gr < S && c < D;
    copyAsync16(tile + r * kPitch<DMAX> + c, valid ? src + gr * D + c : src, valid);
  }
}

// The A fragment of the 16×16 block at (row0, col0) of a row-major tile. Matrices 0..3 are the
// blocks (rows 0–7, cols 0–7), (8–15, 0–7), (0–7, 8–15), (8–15, 8–15): a0..a3.
template <int DMAX> __device__ __forceinline__ void loadFragmentA(uint32_t (&a)[4], const bf16* tile, int row0, int col0) {
  const int lane = threadIdx.x % 32;
  loadMatrices(a, tile + (row0 + lane % 16) * kPitch<DMAX> + col0 + (lane / 16) * 8);
}

// B fragments of the two 8-column n-tiles n0 and n0 + 8 at k-step k0, from a tile whose row n
// holds B's column n (b[0], b[1] for n-tile n0; b[2], b[3] for n0 + 8).
template <int DMAX> __device__ __forceinline__ void loadFragmentsB(uint32_t (&b)[4], const bf16* tile, int n0, int k0) {
  const int lane = threadIdx.x % 32;
  loadMatrices(b, tile + (n0 + lane % 8 + (lane / 16) * 8) * kPitch<DMAX> + k0 + ((lane / 8) % 2) * 8);
}

// The same fragments from a tile whose row k holds B's row k: read transposed.
template <int DMAX> __device__ __forceinline__ void loadFragmentsBTransposed(uint32_t (&b)[4], const bf16* tile, int k0, int n0) {
  const int lane = threadIdx.x % 32;
  loadMatricesTransposed(b, tile + (k0 + lane % 8 + ((lane / 8) % 2) * 8) * kPitch<DMAX> + n0 + (lane / 16) * 8);
}

__device__ __forceinline__ uint32_t packBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

// The 16 × 8·N fp32 accumulator c as bf16 A fragments, one per k-step of 16 columns.
template <int N> __device__ __forceinline__ void toFragmentsA(uint32_t (&a)[N / 2][4], const float (&c)[N][4]) {
#pragma unroll
  for (int kk = 0; kk < N / 2; kk++) {
    a[kk][0] = packBf16(c[2 * kk][0], c[2 * kk][1]);
    a[kk][1] = packBf16(c[2 * kk][2], c[2 * kk][3]);
    a[kk][2] = packBf16(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a[kk][3] = packBf16(c[2 * kk + 1][2], c[2 * kk + 1][3]);
  }
}

template <int N> __device__ __forceinline__ void zero(float (&c)[N][4]) {
#pragma unroll
  for (int j = 0; j < N; j++) c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.f;
}

// A row's max and sum over the 4 lanes of its group.
__device__ __forceinline__ float groupMax(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float groupSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Stores row `row` of a 16 × 8·N accumulator tile (half = 0: c0, c1; half = 1: c2, c3) times
// `factor` as bf16 into out[row·D + ...], two elements (one 32-bit store) per n-tile.
template <int N>
__device__ __forceinline__ void storeRow(bf16* __restrict__ out, long long row, int D, const float (&c)[N][4], int half, float factor) {
  const int col = 2 * (threadIdx.x % 4);
#pragma unroll
  for (int j = 0; j < N; j++) {
    if (8 * j + col < D) {
      const uint32_t v = packBf16(c[j][2 * half] * factor, c[j][2 * half + 1] * factor);
      memcpy(out + row * D + 8 * j + col, &v, sizeof v);
    }
  }
}

}  // namespace attn
}  // namespace miniseq
