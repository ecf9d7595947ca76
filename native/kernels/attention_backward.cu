// The "attention.vjp" routine: gradients of causal flash attention (FA2's backward), recomputing
// each block's probabilities P = exp(s·scale − lse) from the saved log-sum-exp.
//
// Three kernels, no float atomics, so every gradient is the same sum in the same order on every
// run:
// 1. delta: one warp per query row, Δ = Σ_d dO·O − dLse (the softmax's row term).
// 2. dK, dV: one CTA per (batch·kv head, block of BC keys), the first key blocks (which the most
//    queries see) launched first. K and V stay in shared memory; for every query head sharing
//    the kv head and every query block from the diagonal on, it loads Q, dO, lse and Δ, computes
//    S = Q·Kᵀ and dP = dO·Vᵀ, P and dS = P ⊙ (dP − Δ) into shared memory, then adds
//    dV += Pᵀ·dO and dK += dSᵀ·Q in registers. The sum over the group's query heads happens
//    right there, in the CTA.
// 3. dQ: one CTA per (batch·head, block of BR queries), Q, dO, lse, Δ in shared memory, walking
//    the key blocks up to the diagonal: S, dP and dS again, then dQ += dS·K in registers.
// lse and dLse are in the compute type (float32 for bfloat16, as the forward stores lse).
// dQ and dK carry the 1/√d scale once, at the end. SIMT, as the forward (attention.cu): for
// bfloat16 with a head dim that is a multiple of 16 up to 128, kernels 2 and 3 are the
// tensor-core ones of attention_mma_backward.cu instead, after the same delta kernel; on a
// compute capability 9.0 device with D = 64 or 128 they are the Hopper ones of
// attention_hopper_backward.cu (wgmma, TMA; MINISEQ_ATTN_WGMMA_BWD=0 turns them off).
#include "attention.cuh"

namespace miniseq {
namespace attn {
namespace {

// Σ_d dO·O of one row, summed by a whole warp (every lane gets it).
template <typename T> __device__ __forceinline__ Compute<T> rowDot(const T* __restrict__ o, const T* __restrict__ dO, long long row, int D, int lane) {
  using A = Compute<T>;
  A s = A(0);
  for (int d = lane; d < D; d += 32) s += load(dO, row * D + d) * load(o, row * D + d);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  return s;
}

template <typename T>
__global__ void deltaKernel(const T* __restrict__ o, const T* __restrict__ dO, const Compute<T>* __restrict__ dLse, Compute<T>* __restrict__ delta,
                            long long rows, int D) {
  const long long row = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;  // whole warps
  const Compute<T> s = rowDot(o, dO, row, D, lane);
  if (lane == 0) delta[row] = dLse == nullptr ? s : s - dLse[row];
}

// The Hopper backward's padded rows (attention.cuh's rowStatsBytes): one warp per padded row
// (bh, i < sPad); past S, delta = 0 and lse·log2 e = +inf.
__global__ void rowStatsKernel(const bf16* __restrict__ o, const bf16* __restrict__ dO, const float* __restrict__ dLse, const float* __restrict__ lse,
                               float* __restrict__ stats, long long BH, long long S, long long sPad, int D) {
  const long long row = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (row >= BH * sPad) return;  // whole warps
  const long long i = row % sPad, src = row / sPad * S + i;
  float* delta = stats;
  float* lse2 = stats + BH * sPad;
  if (i >= S) {
    if (lane == 0) {
      delta[row] = 0.f;
      lse2[row] = INFINITY;
    }
    return;
  }
  const float s = rowDot(o, dO, src, D, lane);
  if (lane == 0) {
    delta[row] = dLse == nullptr ? s : s - dLse[src];
    lse2[row] = lse[src] * 1.4426950408889634f;
  }
}

template <typename T>
cudaError_t launchDelta(const Launch& l, const T* o, const T* dO, const Compute<T>* dLse, Compute<T>* delta, long long rows, long long D) {
  if ((rows + 7) / 8 > kMaxGrid) return cudaErrorInvalidValue;
  deltaKernel<T><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, l.stream>>>(o, dO, dLse, delta, rows, static_cast<int>(D));
  return cudaGetLastError();
}

// S = Q·Kᵀ and dP = dO·Vᵀ for thread (ty, tx)'s rows ty + TY·i and columns tx + 16·j.
template <typename A, int DMAX, int TY, int RI, int CJ>
__device__ __forceinline__ void scoresAndDp(const A* sQ, const A* sdO, const A* sK, const A* sV, int D, int ty, int tx, A (&s)[RI][CJ],
                                            A (&dp)[RI][CJ]) {
  constexpr int LD = kLd<DMAX>;
#pragma unroll
  for (int i = 0; i < RI; i++)
#pragma unroll
    for (int j = 0; j < CJ; j++) s[i][j] = dp[i][j] = A(0);
#pragma unroll 2
  for (int d = 0; d < D; d++) {
    A qv[RI], ov[RI], kv[CJ], vv[CJ];
#pragma unroll
    for (int i = 0; i < RI; i++) {
      qv[i] = sQ[(ty + TY * i) * LD + d];
      ov[i] = sdO[(ty + TY * i) * LD + d];
    }
#pragma unroll
    for (int j = 0; j < CJ; j++) {
      kv[j] = sK[(tx + 16 * j) * LD + d];
      vv[j] = sV[(tx + 16 * j) * LD + d];
    }
#pragma unroll
    for (int i = 0; i < RI; i++)
#pragma unroll
      for (int j = 0; j < CJ; j++) {
        s[i][j] += qv[i] * kv[j];
        dp[i][j] += ov[i] * vv[j];
      }
  }
}

// lse and Δ of query rows row0.. into shared memory (0 past the sequence).
template <typename T, int BR, int NT>
__device__ __forceinline__ void loadRowStats(Compute<T>* sL, Compute<T>* sD, const Compute<T>* lse, const Compute<T>* delta, long long row0,
                                             long long S) {
  for (int r = threadIdx.x; r < BR; r += NT) {
    const long long gr = row0 + r;
    sL[r] = gr < S ? lse[gr] : Compute<T>(0);
    sD[r] = gr < S ? delta[gr] : Compute<T>(0);
  }
}

// P = exp(S·scale − lse) (0 where the key is after the query, or the query is past S) and
// dS = P ∘ (dP − Δ) for thread (ty, tx)'s rows r0 + ty + TY·i and keys k0 + tx + 16·j, into
// the [rows × PL] tiles sdS and, with STORE_P (the dK/dV kernel), sP.
template <typename A, int TY, int RI, int CJ, int PL, bool STORE_P>
__device__ __forceinline__ void probabilitiesAndDs(const A (&s)[RI][CJ], const A (&dp)[RI][CJ], const A* sL, const A* sD, A* sP, A* sdS, long long r0,
                                                   long long k0, long long S, A scale, int ty, int tx) {
#pragma unroll
  for (int i = 0; i < RI; i++) {
    const int rl = ty + TY * i;
    const long long r = r0 + rl;
    const A L = sL[rl], Dl = sD[rl];
#pragma unroll
    for (int j = 0; j < CJ; j++) {
      const int cl = tx + 16 * j;
      const bool ok = r < S && k0 + cl <= r;
      const A p = ok ? exp(s[i][j] * scale - L) : A(0);
      if (STORE_P) sP[rl * PL + cl] = p;
      sdS[rl * PL + cl] = p * (dp[i][j] - Dl);
    }
  }
}

template <typename T, int DMAX, int BR, int BC, int TY>
__global__ void __launch_bounds__(16 * TY)
    dkdvKernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dO,
               const Compute<T>* __restrict__ lse, const Compute<T>* __restrict__ delta, T* __restrict__ dk, T* __restrict__ dv, int H, int G,
               long long S, int D, Compute<T> scale, long long BHkv) {
  using A = Compute<T>;
  constexpr int NT = 16 * TY, LD = kLd<DMAX>, PL = BC + 1, RI = BR / TY, CJ = BC / 16, CI = BC / TY, DJ = DMAX / 16;
  static_assert(BR % TY == 0 && BC % TY == 0 && BC % 16 == 0 && DMAX % 16 == 0, "tile shapes");
  extern __shared__ __align__(16) unsigned char smem[];
  A* sK = reinterpret_cast<A*>(smem);
  A* sV = sK + BC * LD;
  A* sQ = sV + BC * LD;
  A* sdO = sQ + BR * LD;
  A* sP = sdO + BR * LD;
  A* sdS = sP + BR * PL;
  A* sL = sdS + BR * PL;
  A* sD = sL + BR;

  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const long long kvh = blockIdx.x % BHkv;
  const long long kb = blockIdx.x / BHkv;
  const int Hkv = H / G;
  const long long b = kvh / Hkv;
  const int hk = static_cast<int>(kvh % Hkv);
  const long long k0 = kb * BC;
  loadRows<T, BC, DMAX, NT>(sK, k + kvh * S * D, k0, S, D);
  loadRows<T, BC, DMAX, NT>(sV, v + kvh * S * D, k0, S, D);

  A aK[CI][DJ], aV[CI][DJ];
#pragma unroll
  for (int i = 0; i < CI; i++)
#pragma unroll
    for (int j = 0; j < DJ; j++) aK[i][j] = aV[i][j] = A(0);

  const long long nQB = (S + BR - 1) / BR;
  for (int g = 0; g < G; g++) {
    const long long bh = b * H + static_cast<long long>(hk) * G + g;
    const T* qp = q + bh * S * D;
    const T* op = dO + bh * S * D;
    for (long long qb = k0 / BR; qb < nQB; qb++) {
      const long long r0 = qb * BR;
      __syncthreads();  // the last step is done with sQ, sdO, sP, sdS
      loadRows<T, BR, DMAX, NT>(sQ, qp, r0, S, D);
      loadRows<T, BR, DMAX, NT>(sdO, op, r0, S, D);
      loadRowStats<T, BR, NT>(sL, sD, lse + bh * S, delta + bh * S, r0, S);
      __syncthreads();

      A s[RI][CJ], dp[RI][CJ];
      scoresAndDp<A, DMAX, TY, RI, CJ>(sQ, sdO, sK, sV, D, ty, tx, s, dp);
      probabilitiesAndDs<A, TY, RI, CJ, PL, true>(s, dp, sL, sD, sP, sdS, r0, k0, S, scale, ty, tx);
      __syncthreads();

      const int rCnt = static_cast<int>(min(static_cast<long long>(BR), S - r0));
#pragma unroll 2
      for (int rr = 0; rr < rCnt; rr++) {
        A pv[CI], dsv[CI], ov[DJ], qv[DJ];
#pragma unroll
        for (int i = 0; i < CI; i++) {
          pv[i] = sP[rr * PL + ty + TY * i];
          dsv[i] = sdS[rr * PL + ty + TY * i];
        }
#pragma unroll
        for (int j = 0; j < DJ; j++) {
          ov[j] = sdO[rr * LD + tx + 16 * j];
          qv[j] = sQ[rr * LD + tx + 16 * j];
        }
#pragma unroll
        for (int i = 0; i < CI; i++)
#pragma unroll
          for (int j = 0; j < DJ; j++) {
            aV[i][j] += pv[i] * ov[j];
            aK[i][j] += dsv[i] * qv[j];
          }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < CI; i++) {
    const long long c = k0 + ty + TY * i;
    if (c >= S) continue;
#pragma unroll
    for (int j = 0; j < DJ; j++) {
      const int d = tx + 16 * j;
      if (d < D) {
        dk[(kvh * S + c) * D + d] = convert<T>(aK[i][j] * scale);
        dv[(kvh * S + c) * D + d] = convert<T>(aV[i][j]);
      }
    }
  }
}

template <typename T, int DMAX, int BR, int BC, int TY>
__global__ void __launch_bounds__(16 * TY)
    dqKernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dO,
             const Compute<T>* __restrict__ lse, const Compute<T>* __restrict__ delta, T* __restrict__ dq, int H, int G, long long S, int D,
             Compute<T> scale, long long BH) {
  using A = Compute<T>;
  constexpr int NT = 16 * TY, LD = kLd<DMAX>, PL = BC + 1, RI = BR / TY, CJ = BC / 16, DJ = DMAX / 16;
  static_assert(BR % TY == 0 && BC % 16 == 0 && DMAX % 16 == 0, "tile shapes");
  extern __shared__ __align__(16) unsigned char smem[];
  A* sK = reinterpret_cast<A*>(smem);
  A* sV = sK + BC * LD;
  A* sQ = sV + BC * LD;
  A* sdO = sQ + BR * LD;
  A* sdS = sdO + BR * LD;
  A* sL = sdS + BR * PL;
  A* sD = sL + BR;

  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const long long nQB = (S + BR - 1) / BR;
  const long long bh = blockIdx.x % BH;
  const long long qb = nQB - 1 - blockIdx.x / BH;
  const long long kvh = (bh / H) * (H / G) + (bh % H) / G;
  const T* kp = k + kvh * S * D;
  const T* vp = v + kvh * S * D;
  const long long r0 = qb * BR, rEnd = min(r0 + BR, S);
  loadRows<T, BR, DMAX, NT>(sQ, q + bh * S * D, r0, S, D);
  loadRows<T, BR, DMAX, NT>(sdO, dO + bh * S * D, r0, S, D);
  loadRowStats<T, BR, NT>(sL, sD, lse + bh * S, delta + bh * S, r0, S);

  A aQ[RI][DJ];
#pragma unroll
  for (int i = 0; i < RI; i++)
#pragma unroll
    for (int j = 0; j < DJ; j++) aQ[i][j] = A(0);

  const long long nKB = (rEnd - 1) / BC + 1;
  for (long long kb = 0; kb < nKB; kb++) {
    const long long k0 = kb * BC;
    __syncthreads();  // the last step is done with sK, sV, sdS
    loadRows<T, BC, DMAX, NT>(sK, kp, k0, S, D);
    loadRows<T, BC, DMAX, NT>(sV, vp, k0, S, D);
    __syncthreads();

    A s[RI][CJ], dp[RI][CJ];
    scoresAndDp<A, DMAX, TY, RI, CJ>(sQ, sdO, sK, sV, D, ty, tx, s, dp);
    probabilitiesAndDs<A, TY, RI, CJ, PL, false>(s, dp, sL, sD, nullptr, sdS, r0, k0, S, scale, ty, tx);
    __syncthreads();

    const int cEnd = static_cast<int>(min(static_cast<long long>(BC), rEnd - k0));
#pragma unroll 4
    for (int c = 0; c < cEnd; c++) {
      A dsv[RI], kv[DJ];
#pragma unroll
      for (int i = 0; i < RI; i++) dsv[i] = sdS[(ty + TY * i) * PL + c];
#pragma unroll
      for (int j = 0; j < DJ; j++) kv[j] = sK[c * LD + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < RI; i++)
#pragma unroll
        for (int j = 0; j < DJ; j++) aQ[i][j] += dsv[i] * kv[j];
    }
  }

#pragma unroll
  for (int i = 0; i < RI; i++) {
    const long long r = r0 + ty + TY * i;
    if (r >= S) continue;
#pragma unroll
    for (int j = 0; j < DJ; j++) {
      const int d = tx + 16 * j;
      if (d < D) dq[(bh * S + r) * D + d] = convert<T>(aQ[i][j] * scale);
    }
  }
}

template <typename T, int DMAX>
cudaError_t backward(const Launch& l, const T* q, const T* k, const T* v, const T* o, const Compute<T>* lse, const T* dO,
                     const Compute<T>* dLse, T* dq, T* dk, T* dv, long long B, long long H, long long Hkv, long long S, long long D,
                     Compute<T>* delta) {
  using A = Compute<T>;
  using Tiles = BackwardTiles<A, DMAX>;
  constexpr int BR = Tiles::BR, BC = Tiles::BC, TY = Tiles::TY, LD = kLd<DMAX>, PL = BC + 1;
  const long long BH = B * H, BHkv = B * Hkv, rows = BH * S;
  const long long nQB = (S + BR - 1) / BR, nKB = (S + BC - 1) / BC;
  if (BH * nQB > kMaxGrid || BHkv * nKB > kMaxGrid) return cudaErrorInvalidValue;
  const int iH = static_cast<int>(H), G = static_cast<int>(H / Hkv), iD = static_cast<int>(D);
  const A scale = static_cast<A>(1.0 / sqrt(static_cast<double>(D)));

  cudaError_t e = launchDelta<T>(l, o, dO, dLse, delta, rows, D);
  if (e != cudaSuccess) return e;

  const size_t kv = 2 * static_cast<size_t>(BC) * LD, qo = 2 * static_cast<size_t>(BR) * LD, stats = 2 * static_cast<size_t>(BR);
  const size_t smemKV = (kv + qo + 2 * static_cast<size_t>(BR) * PL + stats) * sizeof(A);
  auto kvKernel = dkdvKernel<T, DMAX, BR, BC, TY>;
  if ((e = allowSmem(kvKernel, smemKV)) != cudaSuccess) return e;
  kvKernel<<<static_cast<unsigned>(BHkv * nKB), 16 * TY, smemKV, l.stream>>>(q, k, v, dO, lse, delta, dk, dv, iH, G, S, iD, scale, BHkv);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;

  const size_t smemQ = (kv + qo + static_cast<size_t>(BR) * PL + stats) * sizeof(A);
  auto qKernel = dqKernel<T, DMAX, BR, BC, TY>;
  if ((e = allowSmem(qKernel, smemQ)) != cudaSuccess) return e;
  qKernel<<<static_cast<unsigned>(BH * nQB), 16 * TY, smemQ, l.stream>>>(q, k, v, dO, lse, delta, dq, iH, G, S, iD, scale, BH);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launchDeltaBf16(const Launch& l, const bf16* o, const bf16* dO, const float* dLse, float* delta, long long rows, long long D) {
  return launchDelta<bf16>(l, o, dO, dLse, delta, rows, D);
}

cudaError_t launchRowStatsBf16(const Launch& l, const bf16* o, const bf16* dO, const float* dLse, const float* lse, float* stats, long long BH,
                               long long S, long long D) {
  const long long sPad = rowStatsPad(S), rows = BH * sPad;
  if ((rows + 7) / 8 > kMaxGrid) return cudaErrorInvalidValue;
  rowStatsKernel<<<static_cast<unsigned>((rows + 7) / 8), 256, 0, l.stream>>>(o, dO, dLse, lse, stats, BH, S, sPad, static_cast<int>(D));
  return cudaGetLastError();
}

}  // namespace attn

namespace {
// Where the Hopper backward may run (bf16, D = 64 or 128, MINISEQ_ATTN_WGMMA_BWD not 0), the
// scratch holds its padded row stats (attention.cuh's rowStatsBytes, a multiple of 256 bytes,
// at least delta's compact rows, which the other kernels read when the pointers or the device
// rule it out); the fused one (its bit) sums dQ in fp32 after them.
bool mayUseHopper(DType dtype, long long s, long long d) { return dtype == BF16 && (d == 64 || d == 128) && attn::hopper::backwardVariant(s) != 0; }
bool usesDqAccum(DType dtype, long long s, long long d) {
  return mayUseHopper(dtype, s, d) && (attn::hopper::backwardVariant(s) & attn::hopper::kFusedBackwardBit) != 0;
}
long long deltaBytes(DType dtype, long long b, long long h, long long s) { return b * h * s * computeBytes(dtype); }
}  // namespace

long long attentionScratch(DType dtype, long long b, long long h, long long s, long long d) {
  if (!mayUseHopper(dtype, s, d)) return deltaBytes(dtype, b, h, s);
  const long long stats = attn::rowStatsBytes(b * h, s);
  return usesDqAccum(dtype, s, d) ? stats + attn::hopper::fusedDqAccumBytes(b, h, s, d) : stats;
}

cudaError_t attentionBackward(const Launch& l, DType dtype, const void* q, const void* k, const void* v, const void* o, const void* lse,
                              const void* dO, const void* dLse, void* dq, void* dk, void* dv, long long b, long long h, long long hkv,
                              long long s, long long d, void* scratch) {
  if (hkv <= 0 || h % hkv != 0 || d > kAttentionMaxHeadDim || h > 2147483647LL) return cudaErrorInvalidValue;
  if (b * h * s == 0) return cudaSuccess;
  if (scratch == nullptr) return cudaErrorInvalidValue;
  if (dtype == BF16 && attn::useTensorCores(d, {q, k, v, dO})) {
    const bf16 *qs = static_cast<const bf16*>(q), *ks = static_cast<const bf16*>(k), *vs = static_cast<const bf16*>(v);
    const bf16* gs = static_cast<const bf16*>(dO);
    const float* ls = static_cast<const float*>(lse);
    const bf16* os = static_cast<const bf16*>(o);
    const float* gl = static_cast<const float*>(dLse);
    float* delta = static_cast<float*>(scratch);
    if (mayUseHopper(dtype, s, d) && attn::hopper::forwardAvailable(d, b, h, s, {q, k, v, dO, dq, dk, dv, scratch})) {
      const cudaError_t e = attn::launchRowStatsBf16(l, os, gs, gl, ls, delta, b * h, s, d);
      if (e != cudaSuccess) return e;
      return attn::hopper::backward(
          l, qs, ks, vs, gs, delta, static_cast<bf16*>(dq), static_cast<bf16*>(dk), static_cast<bf16*>(dv), b, h, hkv, s, d,
          attn::hopper::backwardVariant(s),
          usesDqAccum(dtype, s, d) ? reinterpret_cast<float*>(static_cast<char*>(scratch) + attn::rowStatsBytes(b * h, s)) : nullptr);
    }
    const cudaError_t e = attn::launchDelta<bf16>(l, os, gs, gl, delta, b * h * s, d);
    if (e != cudaSuccess) return e;
    return attn::backwardTensorCores(l, qs, ks, vs, gs, ls, delta, static_cast<bf16*>(dq), static_cast<bf16*>(dk), static_cast<bf16*>(dv), b, h,
                                     hkv, s, d);
  }
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    using A = Compute<T>;
    const T *qs = static_cast<const T*>(q), *ks = static_cast<const T*>(k), *vs = static_cast<const T*>(v);
    const T *os = static_cast<const T*>(o), *gs = static_cast<const T*>(dO);
    const A *ls = static_cast<const A*>(lse), *gl = static_cast<const A*>(dLse);
    T *dqs = static_cast<T*>(dq), *dks = static_cast<T*>(dk), *dvs = static_cast<T*>(dv);
    A* delta = static_cast<A*>(scratch);
    if (d <= 64) return attn::backward<T, 64>(l, qs, ks, vs, os, ls, gs, gl, dqs, dks, dvs, b, h, hkv, s, d, delta);
    if (d <= 128) return attn::backward<T, 128>(l, qs, ks, vs, os, ls, gs, gl, dqs, dks, dvs, b, h, hkv, s, d, delta);
    return attn::backward<T, 256>(l, qs, ks, vs, os, ls, gs, gl, dqs, dks, dvs, b, h, hkv, s, d, delta);
  });
  return cudaGetLastError();
}

}  // namespace miniseq
