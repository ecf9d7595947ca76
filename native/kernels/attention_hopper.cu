// The "attention" routine's forward for Hopper (sm_90a): bf16, head dims 64 and 128, causal, GQA.
// The FA3 design, written for miniseq (attention_hopper.cuh holds the PTX building blocks):
//
// - One CTA of 3 warpgroups (384 threads) per (batch·head, block of BM = 128 queries), the
//   heaviest query blocks (the last ones, which see the most keys) launched first.
// - Warpgroup 0 is the producer: it gives its registers away (setmaxnreg 24) and one thread asks
//   the bulk tensor copy engine (TMA) for the Q tile once, then for K and V tiles of BN = 128 keys
//   into a 2-stage ring, each stage guarded by a "full" mbarrier (bytes arrived) and an "empty"
//   one (both consumers done with it). K and V are read through the kv head's own tensor map
//   (h / (H / Hkv)): grouped-query heads are never expanded.
// - Warpgroups 1 and 2 are consumers (setmaxnreg 240), 64 query rows each. Per key block:
//   S = Q·Kᵀ by wgmma m64n128k16 (both operands from shared memory), online softmax in fp32 in
//   base 2 (p = 2^(s·scale·log2 e − m)), P rounded to bf16 straight from the accumulator
//   registers into wgmma's register A operand, O += P·V by wgmma m64nDk16 with V read N-major
//   (imm-trans-b) from the same swizzled tile TMA wrote. Key blocks are walked from the diagonal
//   down, so only the first one needs the causal mask; blocks above the diagonal are never
//   loaded.
// - PIPELINED (the default variant): S of block j+1 is issued before P·V of block j, and the
//   softmax of block j+1 runs while P·V of block j is still in the tensor cores (FA3's
//   intra-warpgroup overlap); the two consumer warpgroups also overlap each other.
// - At the end o = acc / l (rows past S are computed, never stored) and lse = (m + log2 l)·ln 2
//   in fp32, the same definition as attention_mma.cu, so the backward is unchanged.
//
// Shared memory: Q 128×D + 2 stages × (K + V) 128×D bf16 = 80 KiB (D = 64), 160 KiB (D = 128),
// plus 1 KiB to align the 128-byte-swizzle atoms; one CTA per SM.
#include <cudaTypedefs.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "attention_hopper.cuh"
#include "attention_hopper_grid.cuh"
#include "attention_hopper_tiles.cuh"

namespace miniseq {
namespace attn {
namespace hopper {
PFN_cuTensorMapEncodeTiled_v12000 encodeFn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) == cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  });
  return fn;
}

// A [heads, S, D] bf16 tensor as boxes of 64 columns × rows × 1 head, 128-byte swizzle, zeros past S.
bool makeTensorMap(CUtensorMap* map, const void* ptr, long long heads, long long S, int D, int rows) {
  auto encode = encodeFn();
  if (encode == nullptr) return false;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(D), static_cast<cuuint64_t>(S), static_cast<cuuint64_t>(heads)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(D) * 2, static_cast<cuuint64_t>(S) * D * 2};
  const cuuint32_t box[3] = {64, static_cast<cuuint32_t>(rows), 1};  // 64 bf16 = one 128-byte swizzle row
  const cuuint32_t elem[3] = {1, 1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void*>(ptr), dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

namespace {

constexpr int BM = 128, BN = 128, STAGES = 2, THREADS = 384;
constexpr int PANEL = 64;  // bf16 columns in one 128-byte swizzle row

// The Q tile, then the ring of K and V tiles (attention_hopper_tiles.cuh).
template <int D> struct Smem {
  static constexpr int PANELS = D / PANEL;  // 128-byte column panels of a row
  using Ring = KvRing<D, BN, STAGES>;
  static constexpr uint32_t Q = BM * D * 2;
  static constexpr size_t BYTES = Q + 2 * STAGES * Ring::TILE + 1024;
};

template <int D, bool PIPELINED>
__global__ void __launch_bounds__(THREADS, 1)
    forwardKernel(const __grid_constant__ CUtensorMap tmQ, const __grid_constant__ CUtensorMap tmK, const __grid_constant__ CUtensorMap tmV,
                  bf16* __restrict__ o, float* __restrict__ lse, int H, int G, int S, int BH, float scaleLog2, int headsOuter, int pingpong) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using L = Smem<D>;
  constexpr int OREG = D / 2;  // accumulator registers of a 64 × D tile per thread
  extern __shared__ uint8_t smemRaw[];
  __shared__ __align__(8) uint64_t bars[1 + 4 * STAGES];
  const uint32_t base = alignedBase(smemRaw);
  const uint32_t sQ = base;
  const typename L::Ring ring{base + L::Q, bars};

  const int nM = (S + BM - 1) / BM;
  // headsOuter: all query blocks of a head (heaviest first), then the next head, so the CTAs in
  // flight share one kv head's K and V in L2; else each query block of every head, then the next
  // block (v1's order).
  const grid::QueryBlock qb = grid::queryBlockOf(blockIdx.x, BH, nM, headsOuter);
  const int bh = qb.bh, kvh = grid::kvHeadOf(bh, H, G);
  const int m0 = qb.mb * BM;
  const int nBlocks = (min(m0 + BM, S) - 1) / BN + 1;  // key blocks 0 .. nBlocks − 1, walked from the last

  ring.init();

  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    regDealloc<24>();
    if (threadIdx.x == 0) {
      tmaPrefetchMap(&tmQ);
      tmaPrefetchMap(&tmK);
      tmaPrefetchMap(&tmV);
      barArriveExpect(ring.resident(), L::Q);
#pragma unroll
      for (int p = 0; p < L::PANELS; p++) tmaLoad3d(sQ + p * BM * 128, &tmQ, ring.resident(), p * PANEL, m0, bh);
      ring.produce(&tmK, &tmV, nBlocks, kvh);
    }
  } else {
    regAlloc<240>();
    const int c = wg - 1;                 // which 64 rows of the Q tile
    const int t = threadIdx.x % 128, w = t / 32, lane = t % 32, q4 = lane % 4;
    const int rowA = m0 + 64 * c + 16 * w + lane / 4, rowB = rowA + 8;

    float acc[OREG];
#pragma unroll
    for (int i = 0; i < OREG; i++) acc[i] = 0.f;
    float sc[64];
    uint32_t pf[BN / 16][4];
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

    // S = Q·Kᵀ for the K tile in stage s (issued, not waited for).
    auto issueS = [&](int s) {
      pin(sc);
      wgFence();
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        const int p = kk / 4, k4 = kk % 4;
        const uint64_t da = descriptor(sQ + p * BM * 128 + c * 64 * 128 + k4 * 32, 16, 1024);
        const uint64_t db = descriptor(ring.k(s) + p * BN * 128 + k4 * 32, 16, 1024);
        wgmmaSS128(sc, da, db, kk > 0 ? 1 : 0);
      }
      wgCommit();
    };
    // O += P·V for the V tile in stage s (issued, not waited for).
    auto issuePV = [&](int s) {
      pin(acc);
      wgFence();
#pragma unroll
      for (int kk = 0; kk < BN / 16; kk++) {
        const uint64_t db = descriptor(ring.v(s) + kk * 16 * 128, BN * 128, 1024);
        MmaRS<D>::rs(acc, pf[kk], db);
      }
      wgCommit();
    };
    // Masks (first block only), then the online softmax of sc: sc becomes p, returns the rescale factors.
    auto softmax = [&](bool mask, int n, float (&alpha)[2]) {
      if (mask) {
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const int col = n * BN + 8 * j + 2 * q4 + e;
            if (col > rowA) sc[4 * j + e] = -INFINITY;
            if (col > rowB) sc[4 * j + 2 + e] = -INFINITY;
          }
      }
#pragma unroll
      for (int r = 0; r < 2; r++) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < 16; j++) mx = fmaxf(mx, fmaxf(sc[4 * j + 2 * r], sc[4 * j + 2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mNew = fmaxf(m[r], mx * scaleLog2);
        const float b = mNew == -INFINITY ? 0.f : mNew;
        alpha[r] = ex2(m[r] - b);
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const float p = ex2(fmaf(sc[4 * j + 2 * r + e], scaleLog2, -b));
            sc[4 * j + 2 * r + e] = p;
            sum += p;
          }
        l[r] = l[r] * alpha[r] + sum;
        m[r] = mNew;
      }
    };
    auto rescale = [&](const float (&alpha)[2]) {
#pragma unroll
      for (int j = 0; j < OREG / 4; j++) {
        acc[4 * j] *= alpha[0];
        acc[4 * j + 1] *= alpha[0];
        acc[4 * j + 2] *= alpha[1];
        acc[4 * j + 3] *= alpha[1];
      }
    };
    auto pack = [&]() {
#pragma unroll
      for (int kk = 0; kk < BN / 16; kk++) {
        pf[kk][0] = packBf16(sc[8 * kk + 0], sc[8 * kk + 1]);
        pf[kk][1] = packBf16(sc[8 * kk + 2], sc[8 * kk + 3]);
        pf[kk][2] = packBf16(sc[8 * kk + 4], sc[8 * kk + 5]);
        pf[kk][3] = packBf16(sc[8 * kk + 6], sc[8 * kk + 7]);
      }
    };

    barWait(ring.resident(), 0);
    float alpha[2];
    if (PIPELINED) {
      // pingpong: the two consumers take turns to issue their products (named barriers 1 and 2),
      // so one's softmax runs while the other's GEMMs do. Each has nBlocks + 1 issue points;
      // consumer 1 opens consumer 0's first turn and skips its own last hand-over.
      auto turn = [&] {
        if (pingpong) asm volatile("bar.sync %0, 256;\n" ::"r"(1 + c) : "memory");
      };
      auto handOver = [&](bool last) {
        if (pingpong && !(last && c == 1)) asm volatile("bar.arrive %0, 256;\n" ::"r"(2 - c) : "memory");
      };
      if (pingpong && c == 1) asm volatile("bar.arrive 1, 256;\n" ::: "memory");
      // Block 0 (the diagonal one): S, softmax, P.
      barWait(ring.fullK(0), 0);
      turn();
      issueS(0);
      handOver(false);
      wgWait<0>();
      pin(sc);
      barArrive(ring.emptyK(0));
      softmax(true, nBlocks - 1, alpha);
      pack();
      for (int i = 1; i < nBlocks; i++) {
        const int s = i % STAGES, sp = (i - 1) % STAGES;
        barWait(ring.fullK(s), (i / STAGES) & 1);
        barWait(ring.fullV(sp), ((i - 1) / STAGES) & 1);
        turn();
        issueS(s);
        issuePV(sp);
        handOver(false);
        wgWait<1>();  // S of block i is done; P·V of block i − 1 may still run
        pin(sc);
        barArrive(ring.emptyK(s));
        softmax(false, nBlocks - 1 - i, alpha);
        wgWait<0>();
        pin(acc);
        barArrive(ring.emptyV(sp));
        rescale(alpha);
        pack();
      }
      const int sl = (nBlocks - 1) % STAGES;
      barWait(ring.fullV(sl), ((nBlocks - 1) / STAGES) & 1);
      turn();
      issuePV(sl);
      handOver(true);
      wgWait<0>();
      pin(acc);
      barArrive(ring.emptyV(sl));
    } else {
      for (int i = 0; i < nBlocks; i++) {
        const int s = i % STAGES;
        const uint32_t ph = (i / STAGES) & 1;
        barWait(ring.fullK(s), ph);
        issueS(s);
        wgWait<0>();
        pin(sc);
        barArrive(ring.emptyK(s));
        softmax(i == 0, nBlocks - 1 - i, alpha);
        rescale(alpha);
        pack();
        barWait(ring.fullV(s), ph);
        issuePV(s);
        wgWait<0>();
        pin(acc);
        barArrive(ring.emptyV(s));
      }
    }

    // Each lane summed l over its own columns; the 4 lanes of a row add theirs up.
#pragma unroll
    for (int r = 0; r < 2; r++) {
      l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
      l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    const float inv[2] = {1.f / l[0], 1.f / l[1]};
    const int rows[2] = {rowA, rowB};
#pragma unroll
    for (int r = 0; r < 2; r++) {
      if (rows[r] >= S) continue;
      bf16* orow = o + (static_cast<long long>(bh) * S + rows[r]) * D;
#pragma unroll
      for (int j = 0; j < D / 8; j++) {
        const uint32_t v = packBf16(acc[4 * j + 2 * r] * inv[r], acc[4 * j + 2 * r + 1] * inv[r]);
        *reinterpret_cast<uint32_t*>(orow + 8 * j + 2 * q4) = v;
      }
      if (q4 == 0) lse[static_cast<long long>(bh) * S + rows[r]] = (m[r] + log2f(l[r])) * 0.69314718055994531f;
    }
  }
#endif
}

template <int D, bool PIPELINED>
cudaError_t launch(const Launch& l, const bf16* q, const bf16* k, const bf16* v, bf16* o, float* lse, long long B, long long H, long long Hkv,
                   long long S, int headsOuter, int pingpong) {
  CUtensorMap mq, mk, mv;
  if (!makeTensorMap(&mq, q, B * H, S, D, BM) || !makeTensorMap(&mk, k, B * Hkv, S, D, BN) || !makeTensorMap(&mv, v, B * Hkv, S, D, BN))
    return cudaErrorNotSupported;
  auto kernel = forwardKernel<D, PIPELINED>;
  const size_t bytes = Smem<D>::BYTES;
  cudaError_t attr = allowSmemOnce(kernel, bytes);
  if (attr != cudaSuccess) return attr;
  const long long nM = (S + BM - 1) / BM;
  kernel<<<static_cast<unsigned>(B * H * nM), THREADS, bytes, l.stream>>>(mq, mk, mv, o, lse, static_cast<int>(H), static_cast<int>(H / Hkv),
                                                                          static_cast<int>(S), static_cast<int>(B * H),
                                                                          static_cast<float>(1.4426950408889634 / sqrt(static_cast<double>(D))), headsOuter, pingpong);
  return cudaGetLastError();
}

}  // namespace

bool forwardAvailable(long long d, long long b, long long h, long long s, std::initializer_list<const void*> ptrs) {
  if (d != 64 && d != 128) return false;
  if (b * h * ((s + BM - 1) / BM) > 2147483647LL || s > 2147483647LL || b * h > 2147483647LL) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  // sm_90a machine code runs on compute capability 9.0 only; checked once per device.
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  static int cc[64] = {0};
  if (dev < 0 || dev >= 64) return false;
  if (cc[dev] == 0) {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    cc[dev] = major * 10 + minor + 1;  // + 1: 0 means not asked yet
  }
  return cc[dev] == 91 && encodeFn() != nullptr;
}

cudaError_t forward(const Launch& l, const bf16* q, const bf16* k, const bf16* v, bf16* o, float* lse, long long B, long long H, long long Hkv,
                    long long S, long long D, int variant) {
  const bool pipelined = (variant & 2) == 0;
  const int headsOuter = (variant & 4) == 0, pingpong = (variant & 8) != 0;
  if (D == 64)
    return pipelined ? launch<64, true>(l, q, k, v, o, lse, B, H, Hkv, S, headsOuter, pingpong)
                     : launch<64, false>(l, q, k, v, o, lse, B, H, Hkv, S, headsOuter, 0);
  if (D == 128)
    return pipelined ? launch<128, true>(l, q, k, v, o, lse, B, H, Hkv, S, headsOuter, pingpong)
                     : launch<128, false>(l, q, k, v, o, lse, B, H, Hkv, S, headsOuter, 0);
  return cudaErrorInvalidValue;
}

// The variants attentionForward / attentionBackward take on a 9.0 device when the switches are
// unset: the fastest of those the device runs measured correct (HOPPER-NOTES.md, H100, run 2).
// Forward: pipelined, v1's grid order (heads-outer measured slower at every S). Backward: the
// dK/dV kernel without the overlap (the overlapped one measured slower), v1's grid order below
// 16k tokens, heads-outer from 16k (4–5% faster at 32k, where Q and dO no longer fit in L2). The
// kv-head pairs order (259) is not a default: faster than 7 at 8k in run 4, slower in run 5.
constexpr int kDefaultForward = 5, kDefaultBackward = 7, kDefaultBackwardLong = 3;
constexpr long long kLongSequence = 16384;

int readSwitch(const char* name, int unset) {
  const char* e = std::getenv(name);
  if (e == nullptr || *e == 0) return unset;
  return std::atoi(e);
}

// MINISEQ_ATTN_WGMMA: unset takes this kernel (kDefaultForward); 0 keeps the mma.sync kernel;
// another number picks that variant (forward(): bit 2 unpipelined, bit 4 v1's grid order, bit 8
// ping-pong between the consumers).
int forwardVariant() {
  static int v = readSwitch("MINISEQ_ATTN_WGMMA", kDefaultForward);
  return v;
}

// MINISEQ_ATTN_WGMMA_BWD: the same for the backward (bit 2 the dK/dV kernel without the overlap,
// bit 4 v1's grid order, bit 256 the pairs order); unset: kDefaultBackward, kDefaultBackwardLong
// from kLongSequence.
int backwardVariant(long long s) {
  static int v = readSwitch("MINISEQ_ATTN_WGMMA_BWD", -1);
  if (v >= 0) return v;
  return s >= kLongSequence ? kDefaultBackwardLong : kDefaultBackward;
}

}  // namespace hopper
}  // namespace attn
}  // namespace miniseq
