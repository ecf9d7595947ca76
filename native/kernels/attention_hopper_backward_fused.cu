// The Hopper (sm_90a) attention backward in one pass over the tiles (FlashAttention-3's design,
// written for miniseq): dK, dV and dQ's contributions from the same S and dP, 5 products per
// tile pair instead of the deterministic pair of kernels' 7 (attention_hopper_backward.cu).
// Not deterministic: dQ is summed by fp32 atomic adds, in whatever order the CTAs reach them.
//
// One CTA per (batch·kv head, block of 128 keys), 3 warpgroups as the dK/dV kernel there: the
// producer streams (Q, dO) tiles of 64 queries of every query head of the group, from the
// diagonal down, into a 2-stage TMA ring; consumer c owns keys 64c .. 64c+63, K and V stay in
// shared memory. Per tile, with keys as the M dimension (the dK/dV kernel's proven path):
//   Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ (m64n64, shared memory), Pᵀ and dSᵀ in registers,
//   dV += Pᵀ·dO, dK += dSᵀ·Q (A from registers).
// New here, dQ_tile += dS·K with queries as M: dS is dSᵀ transposed, so each consumer stores its
// dSᵀ (bf16, the rounding dK uses) as rows of keys in the 128-byte swizzle TMA writes, and the
// product reads it as an MN-major A operand (imm-trans-a), K as an MN-major B (imm-trans-b, as V
// in the forward's P·V):
//   D = 128: both consumers' dSᵀ form one [128 keys × 64 queries] buffer (two, alternating by
//            tile, so one barrier per tile suffices, for both dQ splits); consumer c computes
//            dQ's columns 64c .. 64c+63 over all 128 keys (m64n64, 8 k16 steps);
//   D = 64:  consumer c computes the whole 64 × 64 dQ part of its own 64 keys (4 k16 steps);
//            the two consumers' parts meet in the atomic adds.
// The 64 × 64 fp32 part goes to dqAccum [b·h, S rounded up to 64, D] by red.global.add.v2.f32
// (zeroed before, by cudaMemsetAsync); a small kernel then writes dq = bf16(dqAccum · scale).
// delta (Σ dO·O − dLse) and lse·log2 e come padded from attention_backward.cu's row-stats kernel;
// the producer copies each tile's 64 + 64 of them with the tile (as the dK/dV kernel).
// Variants (template flags, chosen by backward()'s bits in attention_hopper_backward.cu): the
// other split of dQ (by columns at D = 64, m64n32; by keys at D = 128, m64n128), the part added
// by one bulk reduce-add per tile from shared memory, P computed while dP runs (D = 64), dS
// stored transposed and read K-major. The index rules are in attention_hopper_dq_layout.cuh.
// The CTA's grid decode, shared memory, barriers, producer and Pᵀ / dSᵀ are the dK/dV kernel's
// (attention_hopper_tiles.cuh): bits 4 and 256 choose its grid order as they do there.
#include <cudaTypedefs.h>

#include "attention.cuh"
#include "attention_hopper.cuh"
#include "attention_hopper_dq_layout.cuh"
#include "attention_hopper_grid.cuh"
#include "attention_hopper_tiles.cuh"

namespace miniseq {
namespace attn {
namespace hopper {
// From attention_hopper.cu.
bool makeTensorMap(CUtensorMap* map, const void* ptr, long long heads, long long S, int D, int rows);

namespace {

constexpr int THREADS = 384, STAGES = 2;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// dQ part (+)= dS·K, m64nNk16, K MN-major in shared memory, dS MN-major (TA = 1) or K-major (0).
template <int N> struct DqMma;
template <> struct DqMma<32> {
  template <int TA> static __device__ __forceinline__ void ss(float (&o)[16], uint64_t a, uint64_t b, int acc) { wgmmaSS32T<TA>(o, a, b, acc); }
};
template <> struct DqMma<64> {
  template <int TA> static __device__ __forceinline__ void ss(float (&o)[32], uint64_t a, uint64_t b, int acc) { wgmmaSS64T<TA>(o, a, b, acc); }
};
template <> struct DqMma<128> {
  template <int TA> static __device__ __forceinline__ void ss(float (&o)[64], uint64_t a, uint64_t b, int acc) { wgmmaSS128T<TA>(o, a, b, acc); }
};

#endif

template <int D> using FusedTiles = KeyBlockTiles<D, STAGES>;

// After the key-block tiles (FusedTiles: K, V, the (Q, dO) ring):
template <int D, bool SPLIT_COLUMNS, bool BULK> struct FusedSmem {
  static constexpr uint32_t DS = 128 * 64 * 2;  // dSᵀ of the block's 128 keys × 64 queries
  // Two, alternating by tile: the warps of a warpgroup do not wait for each other at wgmma, so
  // one warp may store tile i + 1's dSᵀ while another's part of tile i's dQ product still reads
  // the buffer; the next store into a buffer comes after a barrier all its readers passed.
  static constexpr int DS_BUFFERS = 2;
  static constexpr uint32_t DQ = 64 * 64 * 4;                    // a consumer's fp32 dQ part (BULK: 2 each)
  static constexpr uint32_t DS_AT = FusedTiles<D>::BYTES, DQ_AT = DS_AT + DS_BUFFERS * DS;
  static constexpr size_t BYTES = DQ_AT + (BULK ? 4 * DQ : 0) + 1024;
};

// SPLIT_COLUMNS: dQ split by columns between the consumers (D / 2 each), over all 128 keys; else
// by keys, each consumer all D columns of its own 64 keys' part. BULK (64 × 64 parts only): the
// part goes through shared memory and one bulk add per tile instead of 16 atomics per thread.
// OVERLAP_P (D = 64): Sᵀ and dPᵀ committed as two groups, Pᵀ computed while dPᵀ runs.
// DS_KMAJOR: dS stored transposed (2-byte stores) and read K-major, no transposed A read.
template <int D, bool SPLIT_COLUMNS, bool BULK, bool OVERLAP_P, bool DS_KMAJOR>
__global__ void __launch_bounds__(THREADS, 1)
    fusedKernel(const __grid_constant__ CUtensorMap tmQ, const __grid_constant__ CUtensorMap tmK, const __grid_constant__ CUtensorMap tmV,
                const __grid_constant__ CUtensorMap tmO, const float* __restrict__ lse2, const float* __restrict__ delta, bf16* __restrict__ dk,
                bf16* __restrict__ dv, float* __restrict__ dqAccum, int H, int G, int S, int sPad, int BHkv, float scale, float scaleLog2,
                int headsOuter) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using L = FusedSmem<D, SPLIT_COLUMNS, BULK>;
  constexpr int OREG = D / 2;
  constexpr int QN = SPLIT_COLUMNS ? D / 2 : D;  // dQ columns per consumer
  static_assert(!BULK || QN == 64, "the bulk path moves 64 × 64 parts");
  extern __shared__ uint8_t smemRaw[];
  __shared__ __align__(8) uint64_t bars[1 + 2 * STAGES];
  __shared__ __align__(16) float sStat[STAGES][2 * 64];  // per stage: the tile's delta, then its lse·log2 e
  const uint32_t base = alignedBase(smemRaw);
  const FusedTiles<D> tiles{base, bars, sStat};
  auto sDS = [&](int i) { return base + L::DS_AT + (i & 1) * L::DS; };

  // The dK/dV kernel's grid orders (attention_hopper_grid.cuh), the pairs of kv heads included.
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
    const int rowA = 64 * c + 16 * w + lane / 4;  // this thread's two key rows in the block: rowA, rowA + 8
    const int keyA = n0 + rowA, keyB = keyA + 8;
    const int keyMin = n0 + 64 * c;
    float dK[OREG], dV[OREG];
#pragma unroll
    for (int i = 0; i < OREG; i++) dK[i] = dV[i] = 0.f;
    float st[32], dp[32];
    uint32_t pa[4][4], da[4][4];
    const uint32_t aK = tiles.k() + c * 64 * 128, aV = tiles.v() + c * 64 * 128;
    barWait(tiles.barKV(), 0);
    for (int i = 0; i < work.total; i++) {
      const int g = i / work.perHead, mq = work.tileOf(i), s = i % STAGES;
      const int bh = work.headOf(g, H, G);
      const int q0 = mq * 64;
      // This thread's query columns 8j + 2·q4 + {0, 1} of the tile: their delta and lse (base 2),
      // 0 and +inf past S (so P = 0 and dS = 0 there).
      const float* tileDelta = &sStat[s][grid::statColumn(0, q4, 0)];  // + 8j: chunk j's pair
      const float* tileLse2 = &sStat[s][64 + grid::statColumn(0, q4, 0)];
      barWait(tiles.full(s), (i / STAGES) & 1);
      const KeyRows rows{keyA, keyB, q0, q4, q0 < keyMin + 63};  // mask: some query of the tile is before some key of these rows
      pin(st);
      pin(dp);
      wgFence();
      productNT64<D>(st, aK, 128 * 128, tiles.q(s), 64 * 128);
      if constexpr (OVERLAP_P) wgCommit();
      productNT64<D>(dp, aV, 128 * 128, tiles.dO(s), 64 * 128);
      wgCommit();
      if constexpr (OVERLAP_P) {
        wgWait<1>();  // Sᵀ done: Pᵀ while dPᵀ is still in the tensor cores
        pin(st);
        probabilities<false>(st, dp, rows, tileLse2, tileDelta, scaleLog2);
        wgWait<0>();
        pin(dp);
        scoreGradients(st, dp, tileDelta);
      } else {
        wgWait<0>();
        pin(st);
        pin(dp);
        probabilities<true>(st, dp, rows, tileLse2, tileDelta, scaleLog2);  // Pᵀ and dSᵀ in one pass
      }
      fragmentsA(st, pa);
      fragmentsA(dp, da);
      // dSᵀ into shared memory, rows = keys, in the 128-byte swizzle: the 16-byte chunk j of row
      // r sits at chunk j ^ (r % 8). da[kk] holds chunks 2kk (a0: row rowA, a1: rowA + 8) and
      // 2kk + 1 (a2, a3); rowA % 8 = (rowA + 8) % 8.
      const uint32_t ds = sDS(i);
#pragma unroll
      for (int kk = 0; kk < 4; kk++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          if constexpr (DS_KMAJOR) {
            // each bf16 on its own: key rowA (+ 8), queries 8(2kk + h) + 2·q4 (+ 1)
            const int query = 8 * (2 * kk + h) + 2 * q4;
#pragma unroll
            for (int r = 0; r < 2; r++) {
              const uint32_t pair = da[kk][2 * h + r];
              stShared16(ds + dq::dsKMajorOffset(query, rowA + 8 * r), static_cast<uint16_t>(pair & 0xFFFF));
              stShared16(ds + dq::dsKMajorOffset(query + 1, rowA + 8 * r), static_cast<uint16_t>(pair >> 16));
            }
          } else {
            stShared32(ds + dq::dsPairOffset(rowA, 2 * kk + h, q4), da[kk][2 * h]);
            stShared32(ds + dq::dsPairOffset(rowA + 8, 2 * kk + h, q4), da[kk][2 * h + 1]);
          }
        }
      fenceProxyAsync();
      // The column split reads both consumers' rows (barrier 3, 256 threads); the key split only
      // its own (barrier 1 + c).
      if (SPLIT_COLUMNS)
        namedBarSync(3, 256);
      else
        namedBarSync(1 + c, 128);
      // dQ is this tile's alone (its first product overwrites it): not live across tiles.
      float dQ[QN / 2];
      pin(dV);
      pin(dK);
      wgFence();
#pragma unroll
      for (int kk = 0; kk < 4; kk++) MmaRS<D>::rs(dV, pa[kk], descriptor(tiles.dO(s) + kk * 16 * 128, 64 * 128, 1024));
#pragma unroll
      for (int kk = 0; kk < 4; kk++) MmaRS<D>::rs(dK, da[kk], descriptor(tiles.q(s) + kk * 16 * 128, 64 * 128, 1024));
      // Split by columns: dQ[:, c·D/2 ..] = dS [64 × 128 keys] · K[128 keys, those columns];
      // by keys: dS [64 × this consumer's 64 keys] · K[those keys, D].
#pragma unroll
      for (int kk = 0; kk < (SPLIT_COLUMNS ? 8 : 4); kk++) {
        const uint64_t bK = descriptor(tiles.k() + dq::kOperandOffset(D, SPLIT_COLUMNS, c, kk), dq::kKPanel, 1024);
        if constexpr (DS_KMAJOR)
          DqMma<QN>::template ss<0>(dQ, descriptor(ds + dq::dsKMajorOperandOffset(SPLIT_COLUMNS, c, kk), 16, 1024), bK, kk > 0 ? 1 : 0);
        else
          DqMma<QN>::template ss<1>(dQ, descriptor(ds + dq::dsOperandOffset(SPLIT_COLUMNS, c, kk), 64 * 128, 1024), bK, kk > 0 ? 1 : 0);
      }
      wgCommit();
      wgWait<0>();
      pin(dV);
      pin(dK);
      pin(dQ);
      barArrive(tiles.empty(s));
      if constexpr (BULK) {
        // Buffer i % 2 of this consumer was last read by the bulk add of tile i − 2, which thread 0
        // waited for before the previous tile's barrier.
        const uint32_t buf = base + L::DQ_AT + (2 * c + (i & 1)) * L::DQ;
#pragma unroll
        for (int v = 0; v < 8; v++) stShared128(buf + 4 * dq::partFloat(t, 4 * v), dQ[4 * v], dQ[4 * v + 1], dQ[4 * v + 2], dQ[4 * v + 3]);
        if (t == 0) bulkWaitRead0();  // tile i − 1's add has read the other buffer
        fenceProxyAsync();
        namedBarSync(4 + c, 128);
        if (t == 0) {
          bulkReduceAddF32(dqAccum + dq::partBase(bh, sPad / 64, D / 64, mq, SPLIT_COLUMNS ? c : 0), buf, L::DQ);
          bulkCommit();
        }
      } else {
        // dQ's accumulator rows are the tile's queries 16w + g (+ 8), columns 8j + 2·q4 (+ 1).
        float* dst = dqAccum + dq::dqAccumBase(bh, sPad, q0, w, lane, D, SPLIT_COLUMNS, c);
#pragma unroll
        for (int j = 0; j < QN / 8; j++)
#pragma unroll
          for (int r = 0; r < 2; r++) redAddF32x2(dst + dq::dqAccumStep(D, j, r), dQ[4 * j + 2 * r], dQ[4 * j + 2 * r + 1]);
      }
    }
    if (BULK && t == 0) bulkWait0();  // the last adds complete before the CTA ends
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

// dq[row, col .. col + 3] = bf16(read(row, col) · scale) for every row = bh·S + s < rows and
// every 4 columns, a grid-stride loop (read returns the 4 fp32 sums of that row and those columns).
template <typename Read> __device__ __forceinline__ void writeDq(bf16* __restrict__ dq, long long rows, int D, float scale, Read read) {
  const int quads = D / 4;
  const long long n = rows * quads;
  for (long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long row = e / quads;
    const int col = static_cast<int>(e % quads) * 4;
    const float4 x = read(row, col);
    uint2 out;
    out.x = packBf16(x.x * scale, x.y * scale);
    out.y = packBf16(x.z * scale, x.w * scale);
    *reinterpret_cast<uint2*>(dq + row * D + col) = out;
  }
}

// dq[bh, s, :] = bf16(dqAccum[bh, s, :] · scale) for s < S (dqAccum's rows padded to sPad).
__global__ void dqFromAccumKernel(const float* __restrict__ acc, bf16* __restrict__ dq, long long rows, int S, int sPad, int D, float scale) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  writeDq(dq, rows, D, scale, [&](long long row, int col) {
    const long long bh = row / S, s = row % S;
    return *reinterpret_cast<const float4*>(acc + (bh * sPad + s) * D + col);
  });
#endif
}

// The same from the bulk path's layout ([b·h, tiles, D / 64 parts, 4096], dq_layout.cuh).
__global__ void dqFromPartsKernel(const float* __restrict__ acc, bf16* __restrict__ dq, long long rows, int S, int sPad, int D, float scale) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  writeDq(dq, rows, D, scale, [&](long long row, int col) {
    const long long bh = row / S;
    const int s = static_cast<int>(row % S);
    const float* part = acc + dq::partBase(bh, sPad / 64, D / 64, s / 64, dq::partOfColumn(col));
    // columns col, col + 1 are consecutive floats of the part, and so are col + 2, col + 3
    const float2 x = *reinterpret_cast<const float2*>(part + dq::partFloatOf(s % 64, col));
    const float2 y = *reinterpret_cast<const float2*>(part + dq::partFloatOf(s % 64, col + 2));
    return make_float4(x.x, x.y, y.x, y.y);
  });
#endif
}

template <int D, bool SPLIT_COLUMNS, bool BULK, bool OVERLAP_P = false, bool DS_KMAJOR = false>
cudaError_t launchFused(const Launch& l, const bf16* q, const bf16* k, const bf16* v, const bf16* dO, const float* lse2, const float* delta, bf16* dq,
                        bf16* dk, bf16* dv, float* dqAccum, long long B, long long H, long long Hkv, long long S, int headsOuter) {
  CUtensorMap mq64, mo64, mk128, mv128;
  if (!makeTensorMap(&mq64, q, B * H, S, D, 64) || !makeTensorMap(&mo64, dO, B * H, S, D, 64) || !makeTensorMap(&mk128, k, B * Hkv, S, D, 128) ||
      !makeTensorMap(&mv128, v, B * Hkv, S, D, 128))
    return cudaErrorNotSupported;
  const double scale = 1.0 / sqrt(static_cast<double>(D));
  const float fScale = static_cast<float>(scale), scaleLog2 = static_cast<float>(scale * 1.4426950408889634);
  using L = FusedSmem<D, SPLIT_COLUMNS, BULK>;
  auto kernel = fusedKernel<D, SPLIT_COLUMNS, BULK, OVERLAP_P, DS_KMAJOR>;
  cudaError_t e = allowSmemOnce(kernel, L::BYTES);
  if (e != cudaSuccess) return e;
  const long long sPad = (S + 63) / 64 * 64;
  e = cudaMemsetAsync(dqAccum, 0, static_cast<size_t>(B * H * sPad * D) * sizeof(float), l.stream);
  if (e != cudaSuccess) return e;
  const int iH = static_cast<int>(H), G = static_cast<int>(H / Hkv), iS = static_cast<int>(S);
  const long long nKB = (S + 127) / 128;
  kernel<<<static_cast<unsigned>(B * Hkv * nKB), THREADS, L::BYTES, l.stream>>>(
      mq64, mk128, mv128, mo64, lse2, delta, dk, dv, dqAccum, iH, G, iS, static_cast<int>(sPad), static_cast<int>(B * Hkv), fScale, scaleLog2,
      headsOuter);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  const long long quads = B * H * S * (D / 4);
  const unsigned blocks = static_cast<unsigned>(std::min<long long>((quads + 255) / 256, 132LL * 16));
  if (BULK)
    dqFromPartsKernel<<<blocks, 256, 0, l.stream>>>(dqAccum, dq, B * H * S, iS, static_cast<int>(sPad), D, fScale);
  else
    dqFromAccumKernel<<<blocks, 256, 0, l.stream>>>(dqAccum, dq, B * H * S, iS, static_cast<int>(sPad), D, fScale);
  return cudaGetLastError();
}

}  // namespace

long long fusedDqAccumBytes(long long B, long long H, long long S, long long D) { return B * H * ((S + 63) / 64 * 64) * D * 4; }

cudaError_t fusedBackward(const Launch& l, const bf16* q, const bf16* k, const bf16* v, const bf16* dO, const float* lse2, const float* delta,
                          bf16* dq, bf16* dk, bf16* dv, float* dqAccum, long long B, long long H, long long Hkv, long long S, long long D,
                          int headsOuter, bool otherSplit, bool bulk, bool overlapP, bool dsKMajor) {
  if (dqAccum == nullptr || reinterpret_cast<uintptr_t>(dqAccum) % 16 != 0) return cudaErrorInvalidValue;
  // Default: dQ split by keys at D = 64 (no barrier between the consumers), by columns at
  // D = 128 (half the atomics, fewer registers); otherSplit swaps them; bulk keeps the defaults;
  // overlapP is built for D = 64's default split only (at D = 128 it spills 156 bytes: ignored).
  // dsKMajor: the default splits and atomics only (16, 32, 64 ignored).
  if (D == 64) {
    if (dsKMajor) return launchFused<64, false, false, false, true>(l, q, k, v, dO, lse2, delta, dq, dk, dv, dqAccum, B, H, Hkv, S, headsOuter);
    if (overlapP)
      return bulk ? launchFused<64, false, true, true>(l, q, k, v, dO, lse2, delta, dq, dk, dv, dqAccum, B, H, Hkv, S, headsOuter)
                  : launchFused<64, false, false, true>(l, q, k, v, dO, lse2, delta, dq, dk, dv, dqAccum, B, H, Hkv, S, headsOuter);
    if (bulk) return launchFused<64, false, true>(l, q, k, v, dO, lse2, delta, dq, dk, dv, dqAccum, B, H, Hkv, S, headsOuter);
    return otherSplit ? launchFused<64, true, false>(l, q, k, v, dO, lse2, delta, dq, dk, dv, dqAccum, B, H, Hkv, S, headsOuter)
                      : launchFused<64, false, false>(l, q, k, v, dO, lse2, delta, dq, dk, dv, dqAccum, B, H, Hkv, S, headsOuter);
  }
  if (D == 128) {
    if (dsKMajor) return launchFused<128, true, false, false, true>(l, q, k, v, dO, lse2, delta, dq, dk, dv, dqAccum, B, H, Hkv, S, headsOuter);
    if (bulk) return launchFused<128, true, true>(l, q, k, v, dO, lse2, delta, dq, dk, dv, dqAccum, B, H, Hkv, S, headsOuter);
    return otherSplit ? launchFused<128, false, false>(l, q, k, v, dO, lse2, delta, dq, dk, dv, dqAccum, B, H, Hkv, S, headsOuter)
                      : launchFused<128, true, false>(l, q, k, v, dO, lse2, delta, dq, dk, dv, dqAccum, B, H, Hkv, S, headsOuter);
  }
  return cudaErrorInvalidValue;
}

}  // namespace hopper
}  // namespace attn
}  // namespace miniseq
