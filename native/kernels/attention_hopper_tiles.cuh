// What the Hopper attention kernels share above the PTX building blocks of attention_hopper.cuh:
// their shared-memory rings and mbarriers, the producer loops that fill them, and the dK/dV side
// of a key-block CTA (the dK/dV kernel of attention_hopper_backward.cu and the one-pass kernel of
// attention_hopper_backward_fused.cu are the same CTA up to dQ).
#pragma once
#include "attention_hopper.cuh"
#include "attention_hopper_grid.cuh"

namespace miniseq {
namespace attn {
namespace hopper {

// The dynamic shared memory from its first 1024-byte boundary (the 128-byte swizzle's atoms);
// kernels ask for 1 KiB more than their tiles.
__device__ __forceinline__ uint32_t alignedBase(const void* raw) { return (smem(raw) + 1023u) & ~1023u; }

// Thread 0 initialises a ring's barriers, then every thread waits for it: bars[0] for the resident
// tiles (one arrival: the producer's), then TENSORS groups of STAGES full barriers (one arrival
// each) and TENSORS groups of STAGES empty ones (256 arrivals: every consumer thread).
template <int STAGES, int TENSORS> __device__ __forceinline__ void initRing(uint64_t* bars) {
  if (threadIdx.x == 0) {
    barInit(smem(&bars[0]), 1);
    for (int s = 0; s < STAGES; s++) {
#pragma unroll
      for (int t = 0; t < TENSORS; t++) barInit(smem(&bars[1 + t * STAGES + s]), 1);
#pragma unroll
      for (int t = 0; t < TENSORS; t++) barInit(smem(&bars[1 + (TENSORS + t) * STAGES + s]), 256);
    }
    barInitFence();
  }
  __syncthreads();
}

// Two resident [128 × D] blocks of one head (K and V, or Q and dO) into a and b, on one barrier.
template <int D>
__device__ __forceinline__ void loadBlockPair(uint32_t a, const CUtensorMap* tmA, uint32_t b, const CUtensorMap* tmB, uint32_t bar, int row0, int head) {
  barArriveExpect(bar, 2 * 128 * D * 2);
#pragma unroll
  for (int p = 0; p < D / 64; p++) {
    tmaLoad3d(a + p * 128 * 128, tmA, bar, p * 64, row0, head);
    tmaLoad3d(b + p * 128 * 128, tmB, bar, p * 64, row0, head);
  }
}

// A query-block CTA's ring (the forward, ROWS = 128, and the dQ kernel, ROWS = 64): K tiles and V
// tiles of ROWS keys from `at` (all K stages, then all V), each with its own full and empty
// barrier: bars[0] the resident tiles, then fullK, fullV, emptyK, emptyV, STAGES each.
template <int D, int ROWS, int STAGES> struct KvRing {
  static constexpr int PANELS = D / 64;  // 128-byte column panels of a row
  static constexpr uint32_t TILE = ROWS * D * 2;
  uint32_t at;
  uint64_t* bars;
  __device__ __forceinline__ uint32_t k(int s) const { return at + s * TILE; }
  __device__ __forceinline__ uint32_t v(int s) const { return at + (STAGES + s) * TILE; }
  __device__ __forceinline__ uint32_t resident() const { return smem(&bars[0]); }
  __device__ __forceinline__ uint32_t fullK(int s) const { return smem(&bars[1 + s]); }
  __device__ __forceinline__ uint32_t fullV(int s) const { return smem(&bars[1 + STAGES + s]); }
  __device__ __forceinline__ uint32_t emptyK(int s) const { return smem(&bars[1 + 2 * STAGES + s]); }
  __device__ __forceinline__ uint32_t emptyV(int s) const { return smem(&bars[1 + 3 * STAGES + s]); }
  __device__ __forceinline__ void init() const { initRing<STAGES, 2>(bars); }

  // The producer thread's stream: key tiles nTiles − 1 down to 0 of kv head kvh (the diagonal
  // first), tile i into stage i % STAGES, K and V each once the consumers released that stage.
  __device__ __forceinline__ void produce(const CUtensorMap* tmK, const CUtensorMap* tmV, int nTiles, int kvh) const {
    for (int i = 0; i < nTiles; i++) {
      const int n = nTiles - 1 - i, s = i % STAGES;
      const uint32_t emptyParity = ((i / STAGES) & 1) ^ 1;
      barWait(emptyK(s), emptyParity);
      barArriveExpect(fullK(s), TILE);
#pragma unroll
      for (int p = 0; p < PANELS; p++) tmaLoad3d(k(s) + p * ROWS * 128, tmK, fullK(s), p * 64, n * ROWS, kvh);
      barWait(emptyV(s), emptyParity);
      barArriveExpect(fullV(s), TILE);
#pragma unroll
      for (int p = 0; p < PANELS; p++) tmaLoad3d(v(s) + p * ROWS * 128, tmV, fullV(s), p * 64, n * ROWS, kvh);
    }
  }
};

// A key-block CTA (one per batch·kv head and block of 128 keys): this CTA's block in the grid
// order (attention_hopper_grid.cuh's), and the tiles it walks from the diagonal down: tile i is
// query head g = i / perHead of the group, query tile qStart + i % perHead.
struct KeyBlockWork {
  int bhkv, n0, b, hkv, qStart, perHead, total;
  __device__ __forceinline__ int tileOf(int i) const { return qStart + i % perHead; }
  __device__ __forceinline__ int headOf(int g, int H, int G) const { return b * H + hkv * G + g; }  // query head g of the group
};
__device__ __forceinline__ KeyBlockWork keyBlockWork(int H, int G, int S, int BHkv, int order) {
  const int nKB = (S + 127) / 128;
  const grid::KvBlock kb = grid::kvBlockOf(blockIdx.x, BHkv, nKB, order);
  const int n0 = kb.nb * 128;
  const int Hkv = H / G, b = kb.bhkv / Hkv, hkv = kb.bhkv % Hkv;
  const int nQ = (S + 63) / 64, qStart = n0 / 64;
  const int perHead = nQ - qStart;
  return {kb.bhkv, n0, b, hkv, qStart, perHead, G * perHead};
}

// A key-block CTA's shared memory from base: K and V blocks of 128 keys, then a STAGES ring of
// (Q, dO) tiles of 64 queries (all Q stages, then all dO); bars[0] K and V, then STAGES full and
// STAGES empty barriers. Each stage also stages its tile's 64 delta and 64 lse·log2 e (stat[s]).
template <int D, int STAGES> struct KeyBlockTiles {
  static constexpr int PANELS = D / 64;
  static constexpr uint32_t KV = 128 * D * 2, QT = 64 * D * 2;  // a K (or V) block; a Q (or dO) tile
  static constexpr uint32_t BYTES = 2 * KV + 2 * STAGES * QT;    // from base
  static constexpr uint32_t kStatBytes = 2 * 64 * 4;             // a tile's delta and lse·log2 e
  uint32_t base;
  uint64_t* bars;
  float (*stat)[2 * 64];
  __device__ __forceinline__ uint32_t k() const { return base; }
  __device__ __forceinline__ uint32_t v() const { return base + KV; }
  __device__ __forceinline__ uint32_t q(int s) const { return base + 2 * KV + s * QT; }
  __device__ __forceinline__ uint32_t dO(int s) const { return base + 2 * KV + (STAGES + s) * QT; }
  __device__ __forceinline__ uint32_t barKV() const { return smem(&bars[0]); }
  __device__ __forceinline__ uint32_t full(int s) const { return smem(&bars[1 + s]); }
  __device__ __forceinline__ uint32_t empty(int s) const { return smem(&bars[1 + STAGES + s]); }
  __device__ __forceinline__ void init() const { initRing<STAGES, 1>(bars); }

  // The producer thread: K and V once, then each tile's Q and dO (TMA) and its row stats (two
  // 256-byte bulk copies) into stage i % STAGES on its full barrier, once the consumers released it.
  __device__ __forceinline__ void produce(const KeyBlockWork& w, const CUtensorMap* tmQ, const CUtensorMap* tmK, const CUtensorMap* tmV,
                                          const CUtensorMap* tmO, const float* delta, const float* lse2, int H, int G, int sPad) const {
    loadBlockPair<D>(k(), tmK, v(), tmV, barKV(), w.n0, w.bhkv);
    for (int i = 0; i < w.total; i++) {
      const int g = i / w.perHead, mq = w.tileOf(i), s = i % STAGES;
      const int bh = w.headOf(g, H, G);
      const long long row = grid::statTileStart(bh, sPad, mq);
      barWait(empty(s), ((i / STAGES) & 1) ^ 1);
      barArriveExpect(full(s), 2 * QT + kStatBytes);
#pragma unroll
      for (int p = 0; p < PANELS; p++) {
        tmaLoad3d(q(s) + p * 64 * 128, tmQ, full(s), p * 64, mq * 64, bh);
        tmaLoad3d(dO(s) + p * 64 * 128, tmO, full(s), p * 64, mq * 64, bh);
      }
      bulkLoad(smem(&stat[s][0]), delta + row, 256, full(s));
      bulkLoad(smem(&stat[s][64]), lse2 + row, 256, full(s));
    }
  }
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// o += A·B, m64nDk16, A bf16 fragments in registers, B N-major in shared memory.
template <int D> struct MmaRS;
template <> struct MmaRS<64> {
  static __device__ __forceinline__ void rs(float (&o)[32], const uint32_t (&a)[4], uint64_t d) { wgmmaRS64(o, a, d, 1); }
};
template <> struct MmaRS<128> {
  static __device__ __forceinline__ void rs(float (&o)[64], const uint32_t (&a)[4], uint64_t d) { wgmmaRS128(o, a, d, 1); }
};

// acc (64 × 64, fp32, accumulator layout) → bf16 A fragments of its 4 k16 slices.
__device__ __forceinline__ void fragmentsA(const float (&x)[32], uint32_t (&a)[4][4]) {
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
    a[kk][0] = packBf16(x[8 * kk + 0], x[8 * kk + 1]);
    a[kk][1] = packBf16(x[8 * kk + 2], x[8 * kk + 3]);
    a[kk][2] = packBf16(x[8 * kk + 4], x[8 * kk + 5]);
    a[kk][3] = packBf16(x[8 * kk + 6], x[8 * kk + 7]);
  }
}

// x = A·Bᵀ for a 64-row A and a 64-row B tile, both [rows × D] in 128-byte-swizzle panels
// (panel stride aPanel, bPanel bytes).
template <int D> __device__ __forceinline__ void productNT64(float (&x)[32], uint32_t a, uint32_t aPanel, uint32_t b, uint32_t bPanel) {
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
    const int p = kk / 4, k4 = kk % 4;
    wgmmaSS64(x, descriptor(a + p * aPanel + k4 * 32, 16, 1024), descriptor(b + p * bPanel + k4 * 32, 16, 1024), kk > 0 ? 1 : 0);
  }
}

// A key-block consumer thread's rows keyA, keyB = keyA + 8 of the tile's Sᵀ and dPᵀ (keys as M)
// and its query columns q0 + 8j + 2·q4 + {0, 1}; lse2 and delta point at the staged stats of its
// column pairs (+ 8j: chunk j's). mask: some query of the tile is before some key of these rows.
struct KeyRows {
  int keyA, keyB, q0, q4;
  bool mask;
};
// Pᵀ = 2^(Sᵀ·scaleLog2 − lse·log2 e) in st, 0 where the query is before the key; WITH_DS: also
// dSᵀ = Pᵀ ∘ (dPᵀ − delta) into dp in the same pass (fewer registers than scoreGradients after).
template <bool WITH_DS>
__device__ __forceinline__ void probabilities(float (&st)[32], float (&dp)[32], const KeyRows& k, const float* lse2, const float* delta,
                                              float scaleLog2) {
#pragma unroll
  for (int j = 0; j < 8; j++) {
    const float2 l2 = *reinterpret_cast<const float2*>(lse2 + 8 * j);
    float2 dl;
    if constexpr (WITH_DS) dl = *reinterpret_cast<const float2*>(delta + 8 * j);
#pragma unroll
    for (int r = 0; r < 2; r++)
#pragma unroll
      for (int e = 0; e < 2; e++) {
        const int idx = 4 * j + 2 * r + e;
        const int qi = k.q0 + 8 * j + 2 * k.q4 + e;
        float p = ex2(fmaf(st[idx], scaleLog2, -(e ? l2.y : l2.x)));
        if (k.mask && qi < (r ? k.keyB : k.keyA)) p = 0.f;
        st[idx] = p;
        if constexpr (WITH_DS) dp[idx] = p * (dp[idx] - (e ? dl.y : dl.x));
      }
  }
}
// dSᵀ = Pᵀ ∘ (dPᵀ − delta), into dp.
__device__ __forceinline__ void scoreGradients(const float (&st)[32], float (&dp)[32], const float* delta) {
#pragma unroll
  for (int j = 0; j < 8; j++) {
    const float2 dl = *reinterpret_cast<const float2*>(delta + 8 * j);
#pragma unroll
    for (int e = 0; e < 2; e++)
#pragma unroll
      for (int r = 0; r < 2; r++) dp[4 * j + 2 * r + e] = st[4 * j + 2 * r + e] * (dp[4 * j + 2 * r + e] - (e ? dl.y : dl.x));
  }
}

#endif

}  // namespace hopper
}  // namespace attn
}  // namespace miniseq
