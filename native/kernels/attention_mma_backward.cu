// The "attention.vjp" routine on tensor cores: bfloat16, head dims a multiple of 16 up to 128
// (attention_backward.cu keeps its SIMT kernels for the rest, and computes Δ = Σ_d dO·O − dLse
// for both). FA2's backward split into two kernels, so that no gradient needs float atomics and
// every sum runs in the same order on every run. Both recompute P = exp(s·scale − lse) from the
// saved log-sum-exp (fp32), in base 2 as the forward (attention_mma.cu) does, and both keep their
// gradient accumulators in registers, in the mma C layout (lane l holds rows l/4 and l/4 + 8).
// dK and dQ carry the scale once, when stored.
#include "attention_mma.cuh"

namespace miniseq {
namespace attn {
namespace {

// dK, dV: one CTA of 8 warps per (batch·kv head, block of BC = 128 keys), the first key blocks
// (which the most queries see) launched first.
// - Warp w owns keys 16w .. 16w+15: its dK and dV accumulators (16 × DMAX fp32 each) live in
//   registers for the whole kernel. K and V stay in shared memory; their A fragments are re-read
//   per query block (registers are full).
// - The CTA walks every query head of the group (the sum over the group happens right here) and,
//   for each, every query block of BR = 32 from the diagonal on: Q, dO (and lse, Δ)
//   double-buffered, block i + 1 loading by cp.async while block i is used.
// - Per block each warp computes the products transposed, keys as rows: Sᵀ = K·Qᵀ and
//   dPᵀ = V·dOᵀ (16 × BR fp32), Pᵀ = 2^(sᵀ·scale·log2 e − lse·log2 e), dSᵀ = Pᵀ ⊙ (dPᵀ − Δ). Their
//   C layout is the A layout of dV += Pᵀ·dO and dK += dSᵀ·Q, so both go to bf16 A fragments in
//   registers; dO and Q are read transposed (ldmatrix .trans) as the B operands.
// - A warp skips a query block whose queries all come before its keys.
// Shared memory: K, V (128 rows each) + 2 × (Q, dO) (32 rows each), DMAX + 8 bf16 a row, and
// 2 × (lse, Δ) as fp32: 102 KiB at DMAX = 128, one CTA per SM; 54 KiB at DMAX = 64, two CTAs per
// SM (128 registers a thread, a few bytes spilled). Two CTAs are 10% faster than one from
// S = 8192 up, slower at 4096, where the heaviest CTA alone is as long as the whole grid's
// share of an SM (docs/cuda.md).
constexpr int kKeyBlock = 128, kDkdvQueryBlock = 32;

template <int DMAX>
__global__ void __launch_bounds__(kMmaThreads, DMAX <= 64 ? 2 : 1)
    dkdvMmaKernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const bf16* __restrict__ dO,
                  const float* __restrict__ lse, const float* __restrict__ delta, bf16* __restrict__ dk, bf16* __restrict__ dv, int H, int G,
                  long long S, int D, float scale, float scaleLog2, long long BHkv) {
  constexpr int BC = kKeyBlock, BR = kDkdvQueryBlock, P = kPitch<DMAX>;
  constexpr int DIM_STEPS = DMAX / 16, QUERY_TILES = BR / 8, DIM_TILES = DMAX / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem);
  bf16* sV = sK + BC * P;
  bf16* sQ = sV + BC * P;     // 2 buffers of BR rows
  bf16* sdO = sQ + 2 * BR * P;  // 2 buffers of BR rows
  float* sLse = reinterpret_cast<float*>(sdO + 2 * BR * P);  // 2 × BR, times log2 e
  float* sDelta = sLse + 2 * BR;                               // 2 × BR

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long kvh = blockIdx.x % BHkv;
  const long long k0 = (blockIdx.x / BHkv) * BC;
  const int Hkv = H / G;
  const long long firstHead = (kvh / Hkv) * H + (kvh % Hkv) * G;
  const long long warpKey0 = k0 + 16 * warp;
  const long long key[2] = {warpKey0 + lane / 4, warpKey0 + lane / 4 + 8};

  // Step i: query head firstHead + i / blocksPerHead, query block qb0 + i % blocksPerHead.
  const long long qb0 = k0 / BR, blocksPerHead = (S + BR - 1) / BR - qb0, steps = G * blocksPerHead;
  auto headOf = [&](long long i) { return firstHead + i / blocksPerHead; };
  auto rowOf = [&](long long i) { return (qb0 + i % blocksPerHead) * BR; };
  auto loadQueryBlock = [&](long long i, int buf) {
    const long long bh = headOf(i), r0 = rowOf(i);
    loadTileAsync<BR, DMAX>(sQ + buf * BR * P, q + bh * S * D, r0, S, D);
    loadTileAsync<BR, DMAX>(sdO + buf * BR * P, dO + bh * S * D, r0, S, D);
  };
  // Thread t < BR reads lse·log2 e and Δ of row t of step i's block (0 past the sequence).
  auto loadRowStats = [&](long long i, float& lseLog2, float& rowDelta) {
    const long long bh = headOf(i), r = rowOf(i) + threadIdx.x;
    lseLog2 = r < S ? lse[bh * S + r] * kLog2e : 0.f;
    rowDelta = r < S ? delta[bh * S + r] : 0.f;
  };

  loadTileAsync<BC, DMAX>(sK, k + kvh * S * D, k0, S, D);
  loadTileAsync<BC, DMAX>(sV, v + kvh * S * D, k0, S, D);
  loadQueryBlock(0, 0);
  commitAsyncCopies();
  if (threadIdx.x < BR) loadRowStats(0, sLse[threadIdx.x], sDelta[threadIdx.x]);

  float dkAcc[DIM_TILES][4], dvAcc[DIM_TILES][4];
  zero(dkAcc);
  zero(dvAcc);
  for (long long i = 0; i < steps; i++) {
    const int buf = static_cast<int>(i % 2);
    float nextLse = 0.f, nextDelta = 0.f;
    if (i + 1 < steps) {
      loadQueryBlock(i + 1, buf ^ 1);
      if (threadIdx.x < BR) loadRowStats(i + 1, nextLse, nextDelta);
    }
    commitAsyncCopies();  // possibly empty: the wait below always leaves exactly the newest group
    waitAsyncCopies<1>();
    __syncthreads();  // block i's Q, dO, lse, Δ are in buffer buf
    const long long r0 = rowOf(i);
    if (warpKey0 < S && r0 + BR - 1 >= warpKey0) {  // some query of the block sees some key of the warp
      const bf16* tQ = sQ + buf * BR * P;
      const bf16* tdO = sdO + buf * BR * P;
      const float* tLse = sLse + buf * BR;
      const float* tDelta = sDelta + buf * BR;
      float st[QUERY_TILES][4], dpt[QUERY_TILES][4];
      zero(st);
      zero(dpt);
#pragma unroll
      for (int kk = 0; kk < DIM_STEPS; kk++) {
        uint32_t kFrag[4], vFrag[4];
        loadFragmentA<DMAX>(kFrag, sK, 16 * warp, 16 * kk);
        loadFragmentA<DMAX>(vFrag, sV, 16 * warp, 16 * kk);
#pragma unroll
        for (int nn = 0; nn < QUERY_TILES / 2; nn++) {
          uint32_t b[4];
          loadFragmentsB<DMAX>(b, tQ, 16 * nn, 16 * kk);
          mma16x8x16(st[2 * nn], kFrag, b[0], b[1]);
          mma16x8x16(st[2 * nn + 1], kFrag, b[2], b[3]);
          loadFragmentsB<DMAX>(b, tdO, 16 * nn, 16 * kk);
          mma16x8x16(dpt[2 * nn], vFrag, b[0], b[1]);
          mma16x8x16(dpt[2 * nn + 1], vFrag, b[2], b[3]);
        }
      }
      const bool masked = r0 < warpKey0 + 15 || r0 + BR > S;  // a query before a key, or past the end
#pragma unroll
      for (int j = 0; j < QUERY_TILES; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int col = 8 * j + 2 * (lane % 4) + e % 2;
          const long long query = r0 + col;
          float p = exp2f(fmaf(st[j][e], scaleLog2, -tLse[col]));
          if (masked && (query < key[e / 2] || query >= S)) p = 0.f;
          st[j][e] = p;
          dpt[j][e] = p * (dpt[j][e] - tDelta[col]);
        }
      uint32_t pFrag[BR / 16][4], dsFrag[BR / 16][4];
      toFragmentsA<QUERY_TILES>(pFrag, st);
      toFragmentsA<QUERY_TILES>(dsFrag, dpt);
#pragma unroll
      for (int kk = 0; kk < BR / 16; kk++)
#pragma unroll
        for (int nn = 0; nn < DIM_TILES / 2; nn++) {
          uint32_t b[4];
          loadFragmentsBTransposed<DMAX>(b, tdO, 16 * kk, 16 * nn);
          mma16x8x16(dvAcc[2 * nn], pFrag[kk], b[0], b[1]);
          mma16x8x16(dvAcc[2 * nn + 1], pFrag[kk], b[2], b[3]);
          loadFragmentsBTransposed<DMAX>(b, tQ, 16 * kk, 16 * nn);
          mma16x8x16(dkAcc[2 * nn], dsFrag[kk], b[0], b[1]);
          mma16x8x16(dkAcc[2 * nn + 1], dsFrag[kk], b[2], b[3]);
        }
    }
    if (i + 1 < steps && threadIdx.x < BR) {  // nobody reads buffer buf ^ 1 during step i
      sLse[(buf ^ 1) * BR + threadIdx.x] = nextLse;
      sDelta[(buf ^ 1) * BR + threadIdx.x] = nextDelta;
    }
    __syncthreads();  // every warp is done with buffer buf before step i + 1 refills it
  }

#pragma unroll
  for (int h = 0; h < 2; h++) {
    if (key[h] >= S) continue;
    storeRow<DIM_TILES>(dk + kvh * S * D, key[h], D, dkAcc, h, scale);
    storeRow<DIM_TILES>(dv + kvh * S * D, key[h], D, dvAcc, h, 1.f);
  }
}

// dQ: one CTA of 8 warps per (batch·head, block of BR = 128 queries), the heaviest first.
// - Warp w owns queries 16w .. 16w+15: its dQ accumulator (16 × DMAX fp32) and its rows' lse and
//   Δ live in registers. Q and dO stay in shared memory (A fragments re-read per key block).
// - It walks the key blocks of BC = 64 up to the diagonal, K and V double-buffered: block j + 1
//   loads by cp.async while block j is used.
// - Per block: S = Q·Kᵀ and dP = dO·Vᵀ (16 × 64 fp32), P = 2^(s·scale·log2 e − lse·log2 e),
//   dS = P ⊙ (dP − Δ) rounded to bf16 A fragments, dQ += dS·K with K read transposed.
// - A warp skips a block none of whose keys its rows see.
// Shared memory: Q, dO (128 rows each) + 2 × (K, V) (64 rows each), DMAX + 8 bf16 a row:
// 136 KiB at DMAX = 128, one CTA per SM; 72 KiB at DMAX = 64, two CTAs per SM (128 registers,
// a few bytes spilled).
constexpr int kDqBR = 128, kDqBC = 64;

template <int DMAX>
__global__ void __launch_bounds__(kMmaThreads, DMAX <= 64 ? 2 : 1)
    dqMmaKernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const bf16* __restrict__ dO,
                const float* __restrict__ lse, const float* __restrict__ delta, bf16* __restrict__ dq, int H, int G, long long S, int D,
                float scale, float scaleLog2, long long BH) {
  constexpr int BR = kDqBR, BC = kDqBC, P = kPitch<DMAX>;
  constexpr int DIM_STEPS = DMAX / 16, KEY_TILES = BC / 8, DIM_TILES = DMAX / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sdO = sQ + BR * P;
  bf16* sK = sdO + BR * P;     // 2 buffers of BC rows
  bf16* sV = sK + 2 * BC * P;  // 2 buffers of BC rows

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
  const long long row[2] = {warpRow0 + lane / 4, warpRow0 + lane / 4 + 8};

  loadTileAsync<BR, DMAX>(sQ, q + bh * S * D, r0, S, D);
  loadTileAsync<BR, DMAX>(sdO, dO + bh * S * D, r0, S, D);
  loadTileAsync<BC, DMAX>(sK, kHead, 0, S, D);
  loadTileAsync<BC, DMAX>(sV, vHead, 0, S, D);
  commitAsyncCopies();
  float lseLog2[2], rowDelta[2];
#pragma unroll
  for (int h = 0; h < 2; h++) {
    lseLog2[h] = row[h] < S ? lse[bh * S + row[h]] * kLog2e : 0.f;
    rowDelta[h] = row[h] < S ? delta[bh * S + row[h]] : 0.f;
  }

  float dqAcc[DIM_TILES][4];
  zero(dqAcc);
  const long long nKB = (rEnd - 1) / BC + 1;
  for (long long kb = 0; kb < nKB; kb++) {
    const int buf = static_cast<int>(kb % 2);
    const long long k0 = kb * BC;
    if (kb + 1 < nKB) {
      loadTileAsync<BC, DMAX>(sK + (buf ^ 1) * BC * P, kHead, k0 + BC, S, D);
      loadTileAsync<BC, DMAX>(sV + (buf ^ 1) * BC * P, vHead, k0 + BC, S, D);
    }
    commitAsyncCopies();  // possibly empty: the wait below always leaves exactly the newest group
    waitAsyncCopies<1>();
    __syncthreads();  // block kb's K and V are in buffer buf (and Q, dO in place)
    if (k0 <= warpLastKey) {
      const bf16* tK = sK + buf * BC * P;
      const bf16* tV = sV + buf * BC * P;
      float s[KEY_TILES][4], dp[KEY_TILES][4];
      zero(s);
      zero(dp);
#pragma unroll
      for (int kk = 0; kk < DIM_STEPS; kk++) {
        uint32_t qFrag[4], oFrag[4];
        loadFragmentA<DMAX>(qFrag, sQ, 16 * warp, 16 * kk);
        loadFragmentA<DMAX>(oFrag, sdO, 16 * warp, 16 * kk);
#pragma unroll
        for (int nn = 0; nn < KEY_TILES / 2; nn++) {
          uint32_t b[4];
          loadFragmentsB<DMAX>(b, tK, 16 * nn, 16 * kk);
          mma16x8x16(s[2 * nn], qFrag, b[0], b[1]);
          mma16x8x16(s[2 * nn + 1], qFrag, b[2], b[3]);
          loadFragmentsB<DMAX>(b, tV, 16 * nn, 16 * kk);
          mma16x8x16(dp[2 * nn], oFrag, b[0], b[1]);
          mma16x8x16(dp[2 * nn + 1], oFrag, b[2], b[3]);
        }
      }
      // Keys past S come after every row before S; rows past S are not stored.
      const bool masked = k0 + BC - 1 > warpRow0;
#pragma unroll
      for (int j = 0; j < KEY_TILES; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const long long key = k0 + 8 * j + 2 * (lane % 4) + e % 2;
          float p = exp2f(fmaf(s[j][e], scaleLog2, -lseLog2[e / 2]));
          if (masked && key > row[e / 2]) p = 0.f;
          s[j][e] = p * (dp[j][e] - rowDelta[e / 2]);
        }
      uint32_t dsFrag[BC / 16][4];
      toFragmentsA<KEY_TILES>(dsFrag, s);
#pragma unroll
      for (int kk = 0; kk < BC / 16; kk++)
#pragma unroll
        for (int nn = 0; nn < DIM_TILES / 2; nn++) {
          uint32_t b[4];
          loadFragmentsBTransposed<DMAX>(b, tK, 16 * kk, 16 * nn);
          mma16x8x16(dqAcc[2 * nn], dsFrag[kk], b[0], b[1]);
          mma16x8x16(dqAcc[2 * nn + 1], dsFrag[kk], b[2], b[3]);
        }
    }
    __syncthreads();  // every warp is done with buffer buf before block kb + 2 refills it
  }

#pragma unroll
  for (int h = 0; h < 2; h++)
    if (row[h] < S) storeRow<DIM_TILES>(dq + bh * S * D, row[h], D, dqAcc, h, scale);
}

template <int DMAX>
cudaError_t launchBackward(const Launch& l, const bf16* q, const bf16* k, const bf16* v, const bf16* dO, const float* lse, const float* delta,
                           bf16* dq, bf16* dk, bf16* dv, long long B, long long H, long long Hkv, long long S, long long D) {
  constexpr int BR = kDkdvQueryBlock;
  const long long BH = B * H, BHkv = B * Hkv;
  const long long nKB = (S + kKeyBlock - 1) / kKeyBlock, nQB = (S + kDqBR - 1) / kDqBR;
  if (BHkv * nKB > kMaxGrid || BH * nQB > kMaxGrid) return cudaErrorInvalidValue;
  const int iH = static_cast<int>(H), G = static_cast<int>(H / Hkv), iD = static_cast<int>(D);
  const double scale = 1.0 / sqrt(static_cast<double>(D));
  const float fScale = static_cast<float>(scale), scaleLog2 = static_cast<float>(scale * 1.4426950408889634);

  const size_t smemKV = static_cast<size_t>(2 * kKeyBlock + 4 * BR) * kPitch<DMAX> * sizeof(bf16) + 4 * BR * sizeof(float);
  auto kvKernel = dkdvMmaKernel<DMAX>;
  cudaError_t e = allowSmem(kvKernel, smemKV);
  if (e != cudaSuccess) return e;
  kvKernel<<<static_cast<unsigned>(BHkv * nKB), kMmaThreads, smemKV, l.stream>>>(q, k, v, dO, lse, delta, dk, dv, iH, G, S, iD, fScale,
                                                                                  scaleLog2, BHkv);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;

  const size_t smemQ = static_cast<size_t>(2 * kDqBR + 4 * kDqBC) * kPitch<DMAX> * sizeof(bf16);
  auto qKernel = dqMmaKernel<DMAX>;
  if ((e = allowSmem(qKernel, smemQ)) != cudaSuccess) return e;
  qKernel<<<static_cast<unsigned>(BH * nQB), kMmaThreads, smemQ, l.stream>>>(q, k, v, dO, lse, delta, dq, iH, G, S, iD, fScale, scaleLog2,
                                                                              BH);
  return cudaGetLastError();
}

}  // namespace

cudaError_t backwardTensorCores(const Launch& l, const bf16* q, const bf16* k, const bf16* v, const bf16* dO, const float* lse,
                                const float* delta, bf16* dq, bf16* dk, bf16* dv, long long B, long long H, long long Hkv, long long S,
                                long long D) {
  if (D <= 64) return launchBackward<64>(l, q, k, v, dO, lse, delta, dq, dk, dv, B, H, Hkv, S, D);
  return launchBackward<128>(l, q, k, v, dO, lse, delta, dq, dk, dv, B, H, Hkv, S, D);
}

}  // namespace attn
}  // namespace miniseq
