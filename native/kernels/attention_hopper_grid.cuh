// Which (kv head, key block) a CTA of the Hopper dK/dV and one-pass kernels
// (attention_hopper_backward.cu, attention_hopper_backward_fused.cu) takes, which (head, query
// block) a forward or dQ CTA takes, and where a consumer thread finds its queries' delta and
// lse·log2 e in the tile's staged row stats: plain index arithmetic shared by the kernels and a
// host check (bench/attention_hopper/grid_check.cc, run by test/hopper-grid.test.ts).
#pragma once

#if defined(__CUDACC__)
#define MINISEQ_GRID_HD __host__ __device__ __forceinline__
#else
#define MINISEQ_GRID_HD inline
#endif

namespace miniseq {
namespace attn {
namespace hopper {
namespace grid {

// The dK/dV and one-pass kernels' grid orders over bhkvCount kv heads × nKB key blocks of 128
// (block 0, the one the most queries see, is the heaviest):
enum Order {
  kBlocksOuter = 0,  // v1 (bit 4): each key block of every kv head, then the next — heaviest first overall
  kHeadsOuter = 1,   // the default: all key blocks of a kv head, heaviest first, then the next head
  kHeadPairs = 2,    // bit 256: pairs of kv heads, each pair's blocks heaviest first, both heads side by side
};

struct KvBlock {
  int bhkv, nb;
};

MINISEQ_GRID_HD KvBlock kvBlockOf(unsigned cta, int bhkvCount, int nKB, int order) {
  if (order == kHeadPairs) {
    // The last pair of an odd count is one head.
    const int pair = static_cast<int>(cta / (2u * nKB)), inPair = pair < bhkvCount / 2 ? 2 : 1;
    const int r = static_cast<int>(cta - static_cast<unsigned>(pair) * 2u * nKB);
    return {2 * pair + r % inPair, r / inPair};
  }
  if (order == kHeadsOuter) return {static_cast<int>(cta / nKB), static_cast<int>(cta % nKB)};
  return {static_cast<int>(cta % bhkvCount), static_cast<int>(cta / bhkvCount)};
}

// The forward's and the dQ kernel's grid over BH heads × nM query blocks of 128, the heaviest (the
// last, which sees the most keys) first: headsOuter (any non-zero), all blocks of a head, then the
// next head; else each block of every head, then the next block (v1's order). kvHeadOf: the kv
// head (batch·Hkv + head) that query head bh (batch·H + head) reads, G query heads per kv head.
struct QueryBlock {
  int bh, mb;
};
MINISEQ_GRID_HD QueryBlock queryBlockOf(unsigned cta, int BH, int nM, int headsOuter) {
  const int bh = headsOuter ? static_cast<int>(cta / nM) : static_cast<int>(cta % BH);
  return {bh, nM - 1 - (headsOuter ? static_cast<int>(cta % nM) : static_cast<int>(cta / BH))};
}
MINISEQ_GRID_HD int kvHeadOf(int bh, int H, int G) { return (bh / H) * (H / G) + (bh % H) / G; }

// The row stats (attention.cuh's rowStatsBytes): query row i of head bh is float bh·sPad + i of
// delta and of lse·log2 e; a Q tile mq is the 64 floats from bh·sPad + 64·mq of each, staged as
// [delta 0..63, lse·log2 e 0..63]. A consumer thread's accumulator element 4j + 2r + e is query
// column 8j + 2·q4 + e of the tile (wgmma's layout), so it reads staged float statColumn(j, q4, e)
// (+ 64 for lse·log2 e): the pair e = 0, 1 adjacent, 8-byte aligned.
MINISEQ_GRID_HD long long statTileStart(int bh, long long sPad, int mq) { return bh * sPad + 64LL * mq; }
MINISEQ_GRID_HD int statColumn(int j, int q4, int e) { return 8 * j + 2 * q4 + e; }

}  // namespace grid
}  // namespace hopper
}  // namespace attn
}  // namespace miniseq
