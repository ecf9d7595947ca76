// The "attention" routine (src/core/routines/attention.ts): causal softmax(q·kᵀ/√d)·v with
// grouped-query heads, flash-attention style (the FA2 structure), so no S×S matrix exists.
//
// Forward: one CTA of 256 threads per (batch·head, block of BR queries), the heaviest query
// blocks (the last ones, which see the most keys) launched first. Its Q tile stays in shared
// memory; it walks the key blocks up to the diagonal, loading each K tile, computing the BR×BC
// scores (each thread a 4×4 piece, 16 FMAs per 8 shared loads), masking (key > query, or past the
// sequence), and updating each row's running max m and Σ exp(s − m) l with the online softmax;
// the probabilities go to shared memory, the V tile replaces K in the same buffer, and each
// thread adds P·V into its rows × columns of the output accumulator (rescaled by exp(m_old −
// m_new) first). At the end o = acc / l and lse = m + log l. The kv head of query head h is
// h / (H / Hkv): grouped-query attention reads the shared K and V, nothing is expanded.
//
// This is a plain SIMT implementation: float32 FMAs from shared memory, no tensor cores (mma /
// wgmma) and no asynchronous copies. It is exact-math flash attention, not a fast one: bfloat16
// inputs with a head dim that is a multiple of 16 up to 128 go to the tensor-core kernel
// (attention_mma.cu) instead; float32, float64 and other head dims stay here. On a compute
// capability 9.0 device, bf16 with D = 64 or 128 goes to the Hopper kernel (attention_hopper.cu:
// wgmma, TMA, warp-specialised; MINISEQ_ATTN_WGMMA=0 turns it off) before either.
//
// Numerics: float32 for float32 and bfloat16 inputs (float64 for float64), o rounded once on
// store; lse is stored in that compute type, not rounded to bf16 (the routine declares it so).
// The reference body rounds every intermediate to the input dtype.
#include "attention.cuh"

namespace miniseq {
namespace attn {
namespace {

template <typename T, int DMAX, int BR, int BC, int TY>
__global__ void __launch_bounds__(16 * TY)
    forwardKernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o, Compute<T>* __restrict__ lse,
                  int H, int G, long long S, int D, Compute<T> scale, long long BH) {
  using A = Compute<T>;
  constexpr int NT = 16 * TY, LD = kLd<DMAX>, PL = BC + 1, RI = BR / TY, CJ = BC / 16, DJ = DMAX / 16;
  static_assert(BR % TY == 0 && BC % 16 == 0 && DMAX % 16 == 0, "tile shapes");
  extern __shared__ __align__(16) unsigned char smem[];
  A* sQ = reinterpret_cast<A*>(smem);
  A* sKV = sQ + BR * LD;
  A* sP = sKV + BC * LD;

  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const long long nQB = (S + BR - 1) / BR;
  const long long bh = blockIdx.x % BH;
  const long long qb = nQB - 1 - blockIdx.x / BH;
  const long long kvh = (bh / H) * (H / G) + (bh % H) / G;
  const T* kp = k + kvh * S * D;
  const T* vp = v + kvh * S * D;
  const long long r0 = qb * BR, rEnd = min(r0 + BR, S);

  loadRows<T, BR, DMAX, NT>(sQ, q + bh * S * D, r0, S, D);

  A m[RI], l[RI], acc[RI][DJ];
  long long lim[RI];  // the last key row r may see: min(r, S − 1) (rows past S see every key)
#pragma unroll
  for (int i = 0; i < RI; i++) {
    m[i] = A(-INFINITY);
    l[i] = A(0);
    lim[i] = min(r0 + ty + TY * i, S - 1);
#pragma unroll
    for (int j = 0; j < DJ; j++) acc[i][j] = A(0);
  }

  const long long nKB = (rEnd - 1) / BC + 1;
  for (long long kb = 0; kb < nKB; kb++) {
    const long long k0 = kb * BC;
    __syncthreads();  // the last step's P·V is done with sKV and sP
    loadRows<T, BC, DMAX, NT>(sKV, kp, k0, S, D);
    __syncthreads();

    A s[RI][CJ];
#pragma unroll
    for (int i = 0; i < RI; i++)
#pragma unroll
      for (int j = 0; j < CJ; j++) s[i][j] = A(0);
#pragma unroll 4
    for (int d = 0; d < D; d++) {
      A qv[RI], kv[CJ];
#pragma unroll
      for (int i = 0; i < RI; i++) qv[i] = sQ[(ty + TY * i) * LD + d];
#pragma unroll
      for (int j = 0; j < CJ; j++) kv[j] = sKV[(tx + 16 * j) * LD + d];
#pragma unroll
      for (int i = 0; i < RI; i++)
#pragma unroll
        for (int j = 0; j < CJ; j++) s[i][j] += qv[i] * kv[j];
    }

#pragma unroll
    for (int i = 0; i < RI; i++) {
      A mx = A(-INFINITY);
#pragma unroll
      for (int j = 0; j < CJ; j++) {
        const long long c = k0 + tx + 16 * j;
        s[i][j] = c <= lim[i] ? s[i][j] * scale : A(-INFINITY);
        mx = s[i][j] > mx ? s[i][j] : mx;
      }
      mx = rowMax16(mx);
      const A mNew = mx > m[i] ? mx : m[i];
      const A base = mNew == A(-INFINITY) ? A(0) : mNew;  // key 0 is in every row's first block, so only defensive
      const A alpha = exp(m[i] - base);
      A sum = A(0);
#pragma unroll
      for (int j = 0; j < CJ; j++) {
        const A p = exp(s[i][j] - base);
        sP[(ty + TY * i) * PL + tx + 16 * j] = p;
        sum += p;
      }
      sum = rowSum16(sum);
      l[i] = l[i] * alpha + sum;
#pragma unroll
      for (int j = 0; j < DJ; j++) acc[i][j] *= alpha;
      m[i] = mNew;
    }
    __syncthreads();  // P written, K no longer needed
    loadRows<T, BC, DMAX, NT>(sKV, vp, k0, S, D);
    __syncthreads();

    const int cEnd = static_cast<int>(min(static_cast<long long>(BC), rEnd - k0));
#pragma unroll 4
    for (int c = 0; c < cEnd; c++) {
      A pv[RI], vv[DJ];
#pragma unroll
      for (int i = 0; i < RI; i++) pv[i] = sP[(ty + TY * i) * PL + c];
#pragma unroll
      for (int j = 0; j < DJ; j++) vv[j] = sKV[c * LD + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < RI; i++)
#pragma unroll
        for (int j = 0; j < DJ; j++) acc[i][j] += pv[i] * vv[j];
    }
  }

#pragma unroll
  for (int i = 0; i < RI; i++) {
    const long long r = r0 + ty + TY * i;
    if (r >= S) continue;
    T* orow = o + (bh * S + r) * D;
#pragma unroll
    for (int j = 0; j < DJ; j++) {
      const int d = tx + 16 * j;
      if (d < D) orow[d] = convert<T>(acc[i][j] / l[i]);
    }
    if (tx == 0) lse[bh * S + r] = m[i] + log(l[i]);
  }
}

template <typename T, int DMAX>
cudaError_t forward(const Launch& l, const T* q, const T* k, const T* v, T* o, Compute<T>* lse, long long B, long long H, long long Hkv,
                    long long S, long long D) {
  using A = Compute<T>;
  using Tiles = ForwardTiles<A, DMAX>;
  constexpr int BR = Tiles::BR, BC = Tiles::BC, TY = Tiles::TY, LD = kLd<DMAX>;
  const size_t smem = (static_cast<size_t>(BR) * LD + static_cast<size_t>(BC) * LD + static_cast<size_t>(BR) * (BC + 1)) * sizeof(A);
  const long long BH = B * H, nQB = (S + BR - 1) / BR;
  if (BH * nQB > kMaxGrid) return cudaErrorInvalidValue;
  auto kernel = forwardKernel<T, DMAX, BR, BC, TY>;
  cudaError_t e = allowSmem(kernel, smem);
  if (e != cudaSuccess) return e;
  kernel<<<static_cast<unsigned>(BH * nQB), 16 * TY, smem, l.stream>>>(q, k, v, o, lse, static_cast<int>(H), static_cast<int>(H / Hkv), S,
                                                                      static_cast<int>(D), static_cast<A>(1.0 / sqrt(static_cast<double>(D))), BH);
  return cudaGetLastError();
}

}  // namespace
}  // namespace attn

cudaError_t attentionForward(const Launch& l, DType dtype, const void* q, const void* k, const void* v, void* o, void* lse, long long b,
                             long long h, long long hkv, long long s, long long d) {
  if (hkv <= 0 || h % hkv != 0 || d > kAttentionMaxHeadDim || h > 2147483647LL) return cudaErrorInvalidValue;
  if (b * h * s == 0) return cudaSuccess;
  if (dtype == BF16 && attn::hopper::forwardVariant() != 0 && attn::hopper::forwardAvailable(d, b, h, s, {q, k, v, o}))
    return attn::hopper::forward(l, static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v), static_cast<bf16*>(o),
                                 static_cast<float*>(lse), b, h, hkv, s, d, attn::hopper::forwardVariant());
  if (dtype == BF16 && attn::useTensorCores(d, {q, k, v}))
    return attn::forwardTensorCores(l, static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v),
                                    static_cast<bf16*>(o), static_cast<float*>(lse), b, h, hkv, s, d);
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    const T* qs = static_cast<const T*>(q);
    const T* ks = static_cast<const T*>(k);
    const T* vs = static_cast<const T*>(v);
    T* os = static_cast<T*>(o);
    Compute<T>* ls = static_cast<Compute<T>*>(lse);
    if (d <= 64) return attn::forward<T, 64>(l, qs, ks, vs, os, ls, b, h, hkv, s, d);
    if (d <= 128) return attn::forward<T, 128>(l, qs, ks, vs, os, ls, b, h, hkv, s, d);
    return attn::forward<T, 256>(l, qs, ks, vs, os, ls, b, h, hkv, s, d);
  });
  return cudaGetLastError();
}

}  // namespace miniseq
