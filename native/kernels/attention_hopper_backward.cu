// The "attention" routine's backward for Hopper (sm_90a): bf16, D = 64 and 128, causal, GQA, in
// the style of attention_hopper.cu (TMA on mbarriers, a producer warpgroup and two consumer
// warpgroups, wgmma for every product). Deterministic: two kernels, no atomics, every sum in a
// fixed order, like attention_mma_backward.cu (whose structure this follows):
//
// dK/dV kernel: one CTA per (batch·kv head, block of 128 keys); consumer c owns keys 64c .. 64c+63
// of the block, K and V stay in shared memory. The producer streams (Q, dO) tiles of 64 queries
// for every query head of the group and every query block at or below the diagonal into a
// 2-stage ring. Per tile, transposed so that keys are the M dimension:
//   Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ                (wgmma m64n64, both operands K-major in shared memory)
//   Pᵀ = 2^(Sᵀ·scale·log2 e − lse·log2 e) (masked: query < key, or past S)
//   dSᵀ = Pᵀ ∘ (dPᵀ − delta)
//   dV += Pᵀ·dO, dK += dSᵀ·Q              (wgmma m64nD, A from registers, B N-major)
// then dK ·= scale. dK and dV sum the query heads sharing the kv head in order: no atomics.
//
// dQ kernel: one CTA per (batch·head, block of 128 queries), consumer c owns 64 rows; Q and dO
// stay in shared memory, K and V tiles of 64 keys stream in from the diagonal down:
//   S = Q·Kᵀ, dP = dO·Vᵀ (m64n64), P and dS as above (masked: key > query), dQ += dS·K (m64nD,
//   K read N-major), then dQ ·= scale.
//
// delta = Σ dO·O − dLse and lse·log2 e per row come padded to 64 rows from attention_backward.cu's
// row-stats kernel (scratch); the producer copies each Q tile's 64 + 64 of them into shared
// memory with the tile (two 256-byte bulk copies on the same full barrier).
//
// Variants (backward()'s bits; attention_hopper.cu picks the default): 2 = the dK/dV kernel
// issues its four products as one batch (v1); without it, at D = 64, Sᵀ and dPᵀ are two groups
// and Pᵀ, dSᵀ are computed while the next product runs (measured slower, HOPPER-NOTES.md);
// 4 = v1's grid order (key blocks of every kv head, then the next block) instead of heads-outer;
// 8 = instead of both kernels, the one-pass kernel of attention_hopper_backward_fused.cu (dQ by
// fp32 atomic adds into dqAccum: not deterministic; bit 2 does not apply, bits 4 and 256 do);
// 16 (with 8) = its other split of dQ between the consumers: by columns at D = 64, by keys at
// D = 128;
// 32 (with 8) = its dQ parts added by one bulk reduce-add per tile from shared memory (FA3's
// way) instead of per-thread atomics, with the default splits (16 ignored); 64 (with 8) = Sᵀ and
// dPᵀ as two groups, Pᵀ computed while dPᵀ runs (D = 64 only, its default split; 16 ignored);
// 128 (with 8) = dS stored transposed and read K-major, no transposed A read (the default splits
// and atomics; 16, 32, 64 ignored); 256 (without 4) = the dK/dV and one-pass kernels' grid in
// pairs of kv heads (attention_hopper_grid.cuh; the dQ kernel stays heads-outer).
#include <cudaTypedefs.h>


#include "attention.cuh"
#include "attention_hopper.cuh"
#include "attention_hopper_grid.cuh"
#include "attention_hopper_tiles.cuh"

namespace miniseq {
namespace attn {
namespace hopper {
// From attention_hopper.cu.
bool makeTensorMap(CUtensorMap* map, const void* ptr, long long heads, long long S, int D, int rows);
// From attention_hopper_backward_fused.cu.
cudaError_t fusedBackward(const Launch& l, const bf16* q, const bf16* k, const bf16* v, const bf16* dO, const float* lse2, const float* delta,
                          bf16* dq, bf16* dk, bf16* dv, float* dqAccum, long long B, long long H, long long Hkv, long long S, long long D,
                          int headsOuter, bool otherSplit, bool bulk, bool overlapP, bool dsKMajor);

namespace {

constexpr int THREADS = 384, STAGES = 2;

template <int D> using KvTiles = KeyBlockTiles<D, STAGES>;
template <int D> constexpr size_t kKvSmemBytes = KvTiles<D>::BYTES + 1024;

template <int D, bool OVERLAP>
__global__ void __launch_bounds__(THREADS, 1)
    dkdvKernel(const __grid_constant__ CUtensorMap tmQ, const __grid_constant__ CUtensorMap tmK, const __grid_constant__ CUtensorMap tmV,
               const __grid_constant__ CUtensorMap tmO, const float* __restrict__ lse2, const float* __restrict__ delta, bf16* __restrict__ dk,
               bf16* __restrict__ dv, int H, int G, int S, int sPad, int BHkv, float scale, float scaleLog2, int headsOuter) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int OREG = D / 2;
  extern __shared__ uint8_t smemRaw[];
  __shared__ __align__(8) uint64_t bars[1 + 2 * STAGES];
  __shared__ __align__(16) float sStat[STAGES][2 * 64];  // per stage: the tile's delta, then its lse·log2 e
  const KvTiles<D> tiles{alignedBase(smemRaw), bars, sStat};

  // headsOuter: the grid order (attention_hopper_grid.cuh). Blocks-outer (bit 4, the default
  // below 8k tokens): heaviest first over the whole grid; heads-outer (the default from 16k): the
  // CTAs in flight read the same Q and dO rows from L2; the pairs (bit 256, the default from 8k):
  // nearly as local, and the heavy blocks of the last heads do not start in the last wave.
  const KeyBlockWork work = keyBlockWork(H, G, S, BHkv, headsOuter);
  const int n0 = work.n0;

  tiles.init();
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    regDealloc<24>();
    if (threadIdx.x == 0) tiles.produce(work, &tmQ, &tmK, &tmV, &tmO, delta, lse2, H, G, sPad);
  } else {
    regAlloc<240>();
    const int c = wg - 1;
    const int t = threadIdx.x % 128, w = t / 32, lane = t % 32, q4 = lane % 4;
    const int keyA = n0 + 64 * c + 16 * w + lane / 4, keyB = keyA + 8;  // this thread's two rows (keys)
    const int keyMin = n0 + 64 * c;
    float dK[OREG], dV[OREG];
#pragma unroll
    for (int i = 0; i < OREG; i++) dK[i] = dV[i] = 0.f;
    float st[32], dp[32];
    uint32_t pa[4][4], da[4][4];
    const uint32_t aK = tiles.k() + c * 64 * 128, aV = tiles.v() + c * 64 * 128;
    barWait(tiles.barKV(), 0);
    for (int i = 0; i < work.total; i++) {
      const int mq = work.tileOf(i), s = i % STAGES;
      const int q0 = mq * 64;
      // This thread's query columns 8j + 2·q4 + {0, 1} of the tile: their delta and lse (base 2),
      // 0 and +inf past S (so P = 0 and dS = 0 there).
      const float* tileDelta = &sStat[s][grid::statColumn(0, q4, 0)];  // + 8j: chunk j's pair
      const float* tileLse2 = &sStat[s][64 + grid::statColumn(0, q4, 0)];
      if constexpr (OVERLAP) {  // D = 64 only: at D = 128 keeping P alive across dV's product spills
        barWait(tiles.full(s), (i / STAGES) & 1);
        // Sᵀ and dPᵀ issued as two groups: Pᵀ is computed while dPᵀ is still in the tensor cores,
        // and dSᵀ while dV += Pᵀ·dO is.
        pin(st);
        pin(dp);
        wgFence();
        productNT64<D>(st, aK, 128 * 128, tiles.q(s), 64 * 128);
        wgCommit();
        productNT64<D>(dp, aV, 128 * 128, tiles.dO(s), 64 * 128);
        wgCommit();
        wgWait<1>();
        pin(st);
        const KeyRows rows{keyA, keyB, q0, q4, q0 < keyMin + 63};  // mask: some query of the tile is before some key of these rows
        probabilities<false>(st, dp, rows, tileLse2, tileDelta, scaleLog2);
        fragmentsA(st, pa);
        pin(dV);
        wgFence();
  #pragma unroll
        for (int kk = 0; kk < 4; kk++) MmaRS<D>::rs(dV, pa[kk], descriptor(tiles.dO(s) + kk * 16 * 128, 64 * 128, 1024));
        wgCommit();
        wgWait<1>();  // dPᵀ done; dV may still run
        pin(dp);
        scoreGradients(st, dp, tileDelta);
        fragmentsA(dp, da);
        pin(dK);
        wgFence();
  #pragma unroll
        for (int kk = 0; kk < 4; kk++) MmaRS<D>::rs(dK, da[kk], descriptor(tiles.q(s) + kk * 16 * 128, 64 * 128, 1024));
        wgCommit();
        wgWait<0>();
        pin(dV);
        pin(dK);
      } else {
        barWait(tiles.full(s), (i / STAGES) & 1);
        pin(st);
        pin(dp);
        wgFence();
        productNT64<D>(st, aK, 128 * 128, tiles.q(s), 64 * 128);
        productNT64<D>(dp, aV, 128 * 128, tiles.dO(s), 64 * 128);
        wgCommit();
        wgWait<0>();
        pin(st);
        pin(dp);
        const KeyRows rows{keyA, keyB, q0, q4, q0 < keyMin + 63};
        probabilities<true>(st, dp, rows, tileLse2, tileDelta, scaleLog2);  // Pᵀ and dSᵀ in one pass
        fragmentsA(st, pa);
        fragmentsA(dp, da);
        pin(dV);
        pin(dK);
        wgFence();
  #pragma unroll
        for (int kk = 0; kk < 4; kk++) MmaRS<D>::rs(dV, pa[kk], descriptor(tiles.dO(s) + kk * 16 * 128, 64 * 128, 1024));
  #pragma unroll
        for (int kk = 0; kk < 4; kk++) MmaRS<D>::rs(dK, da[kk], descriptor(tiles.q(s) + kk * 16 * 128, 64 * 128, 1024));
        wgCommit();
        wgWait<0>();
        pin(dV);
        pin(dK);
      }
      barArrive(tiles.empty(s));
    }
    const int keys[2] = {keyA, keyB};
#pragma unroll
    for (int r = 0; r < 2; r++) {
      if (keys[r] >= S) continue;
      const long long off = (static_cast<long long>(work.bhkv) * S + keys[r]) * D;
#pragma unroll
      for (int j = 0; j < D / 8; j++) {
        *reinterpret_cast<uint32_t*>(dk + off + 8 * j + 2 * q4) = packBf16(dK[4 * j + 2 * r] * scale, dK[4 * j + 2 * r + 1] * scale);
        *reinterpret_cast<uint32_t*>(dv + off + 8 * j + 2 * q4) = packBf16(dV[4 * j + 2 * r], dV[4 * j + 2 * r + 1]);
      }
    }
  }
#endif
}

// Q and dO blocks of 128 queries (resident), then the ring of K and V tiles of 64 keys.
template <int D> using QRing = KvRing<D, 64, STAGES>;
template <int D> constexpr uint32_t kQBlockBytes = 128 * D * 2;
template <int D> constexpr size_t kQSmemBytes = 2 * kQBlockBytes<D> + 2 * STAGES * QRing<D>::TILE + 1024;

template <int D>
__global__ void __launch_bounds__(THREADS, 1)
    dqKernel(const __grid_constant__ CUtensorMap tmQ, const __grid_constant__ CUtensorMap tmK, const __grid_constant__ CUtensorMap tmV,
             const __grid_constant__ CUtensorMap tmO, const float* __restrict__ lse2, const float* __restrict__ delta, bf16* __restrict__ dq, int H,
             int G, int S, int sPad, int BH, float scale, float scaleLog2, int headsOuter) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int OREG = D / 2;
  extern __shared__ uint8_t smemRaw[];
  __shared__ __align__(8) uint64_t bars[1 + 4 * STAGES];
  const uint32_t base = alignedBase(smemRaw);
  const uint32_t sQ = base, sO = base + kQBlockBytes<D>;
  const QRing<D> ring{base + 2 * kQBlockBytes<D>, bars};

  const int nM = (S + 127) / 128;
  const grid::QueryBlock qb = grid::queryBlockOf(blockIdx.x, BH, nM, headsOuter);
  const int bh = qb.bh, kvh = grid::kvHeadOf(bh, H, G);
  const int m0 = qb.mb * 128;
  const int nBlocks = (min(m0 + 128, S) - 1) / 64 + 1;

  ring.init();
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    regDealloc<24>();
    if (threadIdx.x == 0) {
      loadBlockPair<D>(sQ, &tmQ, sO, &tmO, ring.resident(), m0, bh);
      ring.produce(&tmK, &tmV, nBlocks, kvh);
    }
  } else {
    regAlloc<240>();
    const int c = wg - 1;
    const int t = threadIdx.x % 128, w = t / 32, lane = t % 32, q4 = lane % 4;
    const int rowA = m0 + 64 * c + 16 * w + lane / 4, rowB = rowA + 8;
    const int rowMin = m0 + 64 * c;
    const long long rowBase = static_cast<long long>(bh) * S, statBase = static_cast<long long>(bh) * sPad;
    // Rows past S are never stored: 0 for them, as before.
    const float l2A = rowA < S ? lse2[statBase + rowA] : 0.f, l2B = rowB < S ? lse2[statBase + rowB] : 0.f;
    const float dlA = rowA < S ? delta[statBase + rowA] : 0.f, dlB = rowB < S ? delta[statBase + rowB] : 0.f;
    float dQ[OREG];
#pragma unroll
    for (int i = 0; i < OREG; i++) dQ[i] = 0.f;
    float st[32], dp[32];
    uint32_t da[4][4];
    const uint32_t aQ = sQ + c * 64 * 128, aO = sO + c * 64 * 128;
    barWait(ring.resident(), 0);
    for (int i = 0; i < nBlocks; i++) {
      const int n = nBlocks - 1 - i, s = i % STAGES;
      const uint32_t par = (i / STAGES) & 1;
      barWait(ring.fullK(s), par);
      pin(st);
      pin(dp);
      wgFence();
      productNT64<D>(st, aQ, 128 * 128, ring.k(s), 64 * 128);
      wgCommit();
      barWait(ring.fullV(s), par);
      productNT64<D>(dp, aO, 128 * 128, ring.v(s), 64 * 128);
      wgCommit();
      wgWait<1>();  // S done: P while dP is still in the tensor cores
      pin(st);
      const bool mask = n * 64 + 63 > rowMin;
#pragma unroll
      for (int j = 0; j < 8; j++)
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const int idx = 4 * j + 2 * r + e;
            const int col = n * 64 + 8 * j + 2 * q4 + e;
            float p = ex2(fmaf(st[idx], scaleLog2, -(r ? l2B : l2A)));
            if (mask && col > (r ? rowB : rowA)) p = 0.f;
            st[idx] = p;
          }
      wgWait<0>();
      pin(dp);
      barArrive(ring.emptyV(s));
#pragma unroll
      for (int idx = 0; idx < 32; idx++) dp[idx] = st[idx] * (dp[idx] - ((idx & 2) ? dlB : dlA));
      fragmentsA(dp, da);
      pin(dQ);
      wgFence();
#pragma unroll
      for (int kk = 0; kk < 4; kk++) MmaRS<D>::rs(dQ, da[kk], descriptor(ring.k(s) + kk * 16 * 128, 64 * 128, 1024));
      wgCommit();
      wgWait<0>();
      pin(dQ);
      barArrive(ring.emptyK(s));
    }
    const int rows[2] = {rowA, rowB};
#pragma unroll
    for (int r = 0; r < 2; r++) {
      if (rows[r] >= S) continue;
      const long long off = (rowBase + rows[r]) * D;
#pragma unroll
      for (int j = 0; j < D / 8; j++)
        *reinterpret_cast<uint32_t*>(dq + off + 8 * j + 2 * q4) = packBf16(dQ[4 * j + 2 * r] * scale, dQ[4 * j + 2 * r + 1] * scale);
    }
  }
#endif
}

template <int D>
cudaError_t launchBackward(const Launch& l, const bf16* q, const bf16* k, const bf16* v, const bf16* dO, const float* lse2, const float* delta,
                           bf16* dq, bf16* dk, bf16* dv, long long B, long long H, long long Hkv, long long S, int headsOuter, bool overlap) {
  CUtensorMap mq64, mo64, mk128, mv128, mq128, mo128, mk64, mv64;
  if (!makeTensorMap(&mq64, q, B * H, S, D, 64) || !makeTensorMap(&mo64, dO, B * H, S, D, 64) || !makeTensorMap(&mk128, k, B * Hkv, S, D, 128) ||
      !makeTensorMap(&mv128, v, B * Hkv, S, D, 128) || !makeTensorMap(&mq128, q, B * H, S, D, 128) ||
      !makeTensorMap(&mo128, dO, B * H, S, D, 128) || !makeTensorMap(&mk64, k, B * Hkv, S, D, 64) || !makeTensorMap(&mv64, v, B * Hkv, S, D, 64))
    return cudaErrorNotSupported;
  const double scale = 1.0 / sqrt(static_cast<double>(D));
  const float fScale = static_cast<float>(scale), scaleLog2 = static_cast<float>(scale * 1.4426950408889634);
  auto kv = overlap && D == 64 ? dkdvKernel<D, D == 64> : dkdvKernel<D, false>;
  auto dqk = dqKernel<D>;
  cudaError_t attr = allowSmemOnce(kv, kKvSmemBytes<D>);
  if (attr == cudaSuccess) attr = allowSmemOnce(dqk, kQSmemBytes<D>);
  if (attr != cudaSuccess) return attr;
  const int iH = static_cast<int>(H), G = static_cast<int>(H / Hkv), iS = static_cast<int>(S), sPad = static_cast<int>(rowStatsPad(S));
  const long long nKB = (S + 127) / 128, nQB = (S + 127) / 128;
  kv<<<static_cast<unsigned>(B * Hkv * nKB), THREADS, kKvSmemBytes<D>, l.stream>>>(mq64, mk128, mv128, mo64, lse2, delta, dk, dv, iH, G, iS, sPad,
                                                                                      static_cast<int>(B * Hkv), fScale, scaleLog2, headsOuter);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  dqk<<<static_cast<unsigned>(B * H * nQB), THREADS, kQSmemBytes<D>, l.stream>>>(mq128, mk64, mv64, mo128, lse2, delta, dq, iH, G, iS, sPad,
                                                                                   static_cast<int>(B * H), fScale, scaleLog2, headsOuter);
  return cudaGetLastError();
}

}  // namespace

cudaError_t backward(const Launch& l, const bf16* q, const bf16* k, const bf16* v, const bf16* dO, const float* stats, bf16* dq, bf16* dk,
                     bf16* dv, long long B, long long H, long long Hkv, long long S, long long D, int variant, float* dqAccum) {
  // variant bits: 2 the dK/dV kernel without the overlap (v1), 4 v1's grid order, 256 (without 4)
  // the dK/dV and one-pass kernels' grid in pairs of kv heads, 8 the one-pass
  // kernel (with 16: its other dQ split, by columns at D = 64, by keys at D = 128; with 32: dQ
  // through shared memory and a bulk add per tile, the default splits; with 64: Pᵀ while dPᵀ
  // runs, D = 64; with 128: dS stored transposed, read K-major)
  // The grid order (attention_hopper_grid.cuh): v1's (bit 4), else the pairs of kv heads (bit
  // 256; the dK/dV and one-pass kernels: the dQ kernel reads any non-zero as heads-outer),
  // else heads-outer.
  const int headsOuter = (variant & 4) != 0 ? grid::kBlocksOuter : (variant & 256) != 0 ? grid::kHeadPairs : grid::kHeadsOuter;
  // stats: delta's padded rows, then lse·log2 e's (attention.cuh's rowStatsBytes)
  const float* delta = stats;
  const float* lse2 = stats + B * H * rowStatsPad(S);
  if (variant & kFusedBackwardBit)
    return fusedBackward(l, q, k, v, dO, lse2, delta, dq, dk, dv, dqAccum, B, H, Hkv, S, D, headsOuter, (variant & 16) != 0, (variant & 32) != 0,
                         (variant & 64) != 0, (variant & 128) != 0);
  const bool overlap = (variant & 2) == 0;
  if (D == 64) return launchBackward<64>(l, q, k, v, dO, lse2, delta, dq, dk, dv, B, H, Hkv, S, headsOuter, overlap);
  if (D == 128) return launchBackward<128>(l, q, k, v, dO, lse2, delta, dq, dk, dv, B, H, Hkv, S, headsOuter, overlap);
  return cudaErrorInvalidValue;
}

}  // namespace hopper
}  // namespace attn
}  // namespace miniseq
