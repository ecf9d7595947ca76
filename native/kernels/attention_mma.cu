// The "attention" routine's forward on tensor cores: bfloat16, head dims a multiple of 16 up to
// 128 (attention.cu keeps its SIMT kernel for the rest). FA2's structure, mma.sync m16n8k16 with
// fp32 accumulators (attention_mma.cuh and attention_ptx.cuh hold the building blocks):
//
// - One CTA of 8 warps per (batch·head, block of BR = 128 queries), the heaviest query blocks
//   (the last ones, which see the most keys) launched first.
// - Warp w owns queries 16w .. 16w+15 of the block. Its Q fragments (DMAX/16 A operands) are read
//   from shared memory once, into registers. Its score tile S (16 × BC = 64), its output
//   accumulator (16 × DMAX) and its rows' running max m and sum l stay in registers, in the C
//   layout: lane l holds rows l/4 and l/4 + 8.
// - It walks the key blocks of BC = 64 up to the diagonal. K and V tiles come through shared
//   memory by cp.async, one buffer each: V_j loads while S = Q·K_jᵀ is computed, K_{j+1} while
//   O += P·V_j is. A warp skips a block none of whose keys its rows see.
// - Online softmax in base 2: m is the row max of s·scale·log2 e, p = 2^(s·scale·log2 e − m), and
//   a new max rescales the accumulator and l by 2^(m_old − m_new). Each lane sums l over its own
//   columns; the 4 lanes of the row add up their sums once, at the end.
// - P is rounded to bf16 from the S registers straight into the A fragments of P·V; V is read
//   transposed (ldmatrix .trans) as its B operand.
// - At the end o = acc / l and lse = (m + log2 l)·ln 2, stored as fp32 (a bf16 lse would move the
//   backward's P by up to 3%); rows past S are computed, never stored.
//
// Shared memory: Q (128 rows) + K (64) + V (64), DMAX + 8 bf16 a row: 68 KiB at DMAX = 128, one
// CTA per SM (219 registers a thread); 36 KiB at DMAX = 64, two CTAs per SM (122 registers).
#include "attention_mma.cuh"

namespace miniseq {
namespace attn {
namespace {

constexpr int kForwardBR = 128, kForwardBC = 64;

template <int DMAX>
__global__ void __launch_bounds__(kMmaThreads, DMAX <= 64 ? 2 : 1)
    forwardMmaKernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, bf16* __restrict__ o,
                     float* __restrict__ lse, int H, int G, long long S, int D, float scaleLog2, long long BH) {
  constexpr int BR = kForwardBR, BC = kForwardBC, P = kPitch<DMAX>;
  constexpr int DIM_STEPS = DMAX / 16, KEY_TILES = BC / 8, DIM_TILES = DMAX / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sK = sQ + BR * P;
  bf16* sV = sK + BC * P;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long nQB = (S + BR - 1) / BR;
  const long long bh = blockIdx.x % BH;
  const long long qb = nQB - 1 - blockIdx.x / BH;
  const long long kvh = (bh / H) * (H / G) + (bh % H) / G;
  const bf16* kHead = k + kvh * S * D;
  const bf16* vHead = v + kvh * S * D;
  const long long r0 = qb * BR, rEnd = min(r0 + BR, S);
  const long long warpRow0 = r0 + 16 * warp;
  const long long warpLastKey = min(warpRow0 + 15, S - 1);
  // This lane's two rows and the last key each sees: min(row, S − 1), so rows past S see keys.
  const long long row[2] = {warpRow0 + lane / 4, warpRow0 + lane / 4 + 8};
  const long long lastKey[2] = {min(row[0], S - 1), min(row[1], S - 1)};

  loadTileAsync<BR, DMAX>(sQ, q + bh * S * D, r0, S, D);
  loadTileAsync<BC, DMAX>(sK, kHead, 0, S, D);
  commitAsyncCopies();
  waitAsyncCopies<0>();
  __syncthreads();
  uint32_t qFrag[DIM_STEPS][4];
#pragma unroll
  for (int kk = 0; kk < DIM_STEPS; kk++) loadFragmentA<DMAX>(qFrag[kk], sQ, 16 * warp, 16 * kk);

  float acc[DIM_TILES][4];
  zero(acc);
  // m is finite after the first block: key 0 is in it, and every row sees key 0.
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  uint32_t pFrag[BC / 16][4];

  const long long nKB = (rEnd - 1) / BC + 1;
  for (long long kb = 0; kb < nKB; kb++) {
    const long long k0 = kb * BC;
    loadTileAsync<BC, DMAX>(sV, vHead, k0, S, D);
    commitAsyncCopies();
    const bool sees = k0 <= warpLastKey;  // the same for the whole warp
    if (sees) {
      float s[KEY_TILES][4];
      zero(s);
#pragma unroll
      for (int kk = 0; kk < DIM_STEPS; kk++)
#pragma unroll
        for (int nn = 0; nn < KEY_TILES / 2; nn++) {
          uint32_t b[4];
          loadFragmentsB<DMAX>(b, sK, 16 * nn, 16 * kk);
          mma16x8x16(s[2 * nn], qFrag[kk], b[0], b[1]);
          mma16x8x16(s[2 * nn + 1], qFrag[kk], b[2], b[3]);
        }
      if (k0 + BC - 1 > warpRow0 || k0 + BC > S) {  // the block crosses the diagonal or the end
#pragma unroll
        for (int j = 0; j < KEY_TILES; j++)
#pragma unroll
          for (int e = 0; e < 4; e++)
            if (k0 + 8 * j + 2 * (lane % 4) + e % 2 > lastKey[e / 2]) s[j][e] = -INFINITY;
      }
#pragma unroll
      for (int h = 0; h < 2; h++) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < KEY_TILES; j++) mx = fmaxf(mx, fmaxf(s[j][2 * h], s[j][2 * h + 1]));
        const float mNew = fmaxf(m[h], groupMax(mx) * scaleLog2);
        const float alpha = exp2f(m[h] - mNew);
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < KEY_TILES; j++)
#pragma unroll
          for (int e = 2 * h; e < 2 * h + 2; e++) {
            s[j][e] = exp2f(fmaf(s[j][e], scaleLog2, -mNew));
            sum += s[j][e];
          }
        l[h] = l[h] * alpha + sum;
        m[h] = mNew;
#pragma unroll
        for (int j = 0; j < DIM_TILES; j++) {
          acc[j][2 * h] *= alpha;
          acc[j][2 * h + 1] *= alpha;
        }
      }
      toFragmentsA<KEY_TILES>(pFrag, s);
    }
    waitAsyncCopies<0>();
    __syncthreads();  // V_j has landed; every warp is done with K_j
    if (kb + 1 < nKB) {
      loadTileAsync<BC, DMAX>(sK, kHead, k0 + BC, S, D);
      commitAsyncCopies();
    }
    if (sees) {
#pragma unroll
      for (int kk = 0; kk < BC / 16; kk++)
#pragma unroll
        for (int nn = 0; nn < DIM_TILES / 2; nn++) {
          uint32_t b[4];
          loadFragmentsBTransposed<DMAX>(b, sV, 16 * kk, 16 * nn);
          mma16x8x16(acc[2 * nn], pFrag[kk], b[0], b[1]);
          mma16x8x16(acc[2 * nn + 1], pFrag[kk], b[2], b[3]);
        }
    }
    waitAsyncCopies<0>();
    __syncthreads();  // K_{j+1} has landed; every warp is done with V_j
  }

#pragma unroll
  for (int h = 0; h < 2; h++) {
    const float sum = groupSum(l[h]);
    if (row[h] >= S) continue;
    storeRow<DIM_TILES>(o + bh * S * D, row[h], D, acc, h, 1.f / sum);
    if (lane % 4 == 0) lse[bh * S + row[h]] = (m[h] + log2f(sum)) * kLn2;
  }
}

template <int DMAX>
cudaError_t launchForward(const Launch& l, const bf16* q, const bf16* k, const bf16* v, bf16* o, float* lse, long long B, long long H,
                          long long Hkv, long long S, long long D) {
  const size_t smem = static_cast<size_t>(kForwardBR + 2 * kForwardBC) * kPitch<DMAX> * sizeof(bf16);
  const long long BH = B * H, nQB = (S + kForwardBR - 1) / kForwardBR;
  if (BH * nQB > kMaxGrid) return cudaErrorInvalidValue;
  auto kernel = forwardMmaKernel<DMAX>;
  cudaError_t e = allowSmem(kernel, smem);
  if (e != cudaSuccess) return e;
  const float scaleLog2 = static_cast<float>(kLog2e / sqrt(static_cast<double>(D)));
  kernel<<<static_cast<unsigned>(BH * nQB), kMmaThreads, smem, l.stream>>>(q, k, v, o, lse, static_cast<int>(H), static_cast<int>(H / Hkv),
                                                                          S, static_cast<int>(D), scaleLog2, BH);
  return cudaGetLastError();
}

}  // namespace

cudaError_t forwardTensorCores(const Launch& l, const bf16* q, const bf16* k, const bf16* v, bf16* o, float* lse, long long B, long long H,
                               long long Hkv, long long S, long long D) {
  if (D <= 64) return launchForward<64>(l, q, k, v, o, lse, B, H, Hkv, S, D);
  return launchForward<128>(l, q, k, v, o, lse, B, H, Hkv, S, D);
}

}  // namespace attn
}  // namespace miniseq
