// Row-softmax routines: crossEntropy, crossEntropy.vjp, logsumexp, logsumexp.vjp
// (src/core/routines/cross-entropy.ts and basic.ts; src/backends/cpu/fused.ts is the readable
// model). No N×V temporaries: each reads its logits once per pass.
//
// One block of threads per row. Pass 1: every thread keeps a running (max m, Σ exp(x − m)) over
// its strided share of the row (one read of the logits); the pairs are merged across the warp by
// shuffles, then across warps through shared memory, always in the same order, so the result
// does not depend on timing. Pass 2 writes: the row's nll (one thread), or a gradient row.
// Loads are 16-byte vectors when the row length allows it (V a multiple of 4 float32 / 8
// bfloat16 / 2 float64 elements: every row then starts 16-byte aligned).
//
// float32 and bfloat16 compute in float32 (expf/logf), float64 in float64; one rounding on store.
// Where they differ from the reference bodies (all edge cases):
// - a row that is all −∞ (or empty) has lse −∞, as the CPU's fused kernel, where the reference
//   body's max-shift gives NaN; a NaN anywhere in a row gives NaN; a +∞ gives NaN (as the CPU).
// - an ignored target gives nll 0 (and a zero gradient row) even when its row holds NaN, as the
//   CPU's fused kernel (the reference multiplies by the 0 mask, which keeps a NaN).
#include "common.cuh"

namespace miniseq {
namespace {

// The running statistics of part of a row: max m and s = Σ exp(x − m). m is never NaN; a NaN in
// the row makes s NaN.
template <typename A> struct Stats {
  A m;
  A s;
};

template <typename A> __device__ __forceinline__ Stats<A> emptyStats() { return {A(-INFINITY), A(0)}; }

template <typename A> __device__ __forceinline__ void push(Stats<A>& st, A x) {
  if (x > st.m) {
    // A +∞ makes the row NaN, as exp(∞ − ∞) does in the two-pass form.
    st.s = x == A(INFINITY) ? A(NAN) : st.s * exp(st.m - x) + A(1);
    st.m = x;
  } else if (x != A(-INFINITY)) {
    st.s += exp(x - st.m);  // NaN lands here
  }
}

template <typename A> __device__ __forceinline__ Stats<A> merge(Stats<A> a, Stats<A> b) {
  const A m = a.m > b.m ? a.m : b.m;
  const A sa = a.m == m ? a.s : a.s * exp(a.m - m);
  const A sb = b.m == m ? b.s : b.s * exp(b.m - m);
  return {m, sa + sb};
}

// log Σ exp: −∞ for an empty or all −∞ row (s is 0 there, or NaN if the row held a NaN).
template <typename A> __device__ __forceinline__ A finish(Stats<A> st) {
  return st.m == A(-INFINITY) ? st.m + st.s : st.m + log(st.s);
}

// Every thread of the block passes its statistics and gets the whole row's.
template <typename A> __device__ Stats<A> blockStats(Stats<A> st) {
  __shared__ Stats<A> warps[32];
  for (int off = 16; off > 0; off >>= 1) {
    const Stats<A> o{__shfl_xor_sync(0xffffffffu, st.m, off), __shfl_xor_sync(0xffffffffu, st.s, off)};
    st = merge(st, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nWarps = blockDim.x >> 5;
  if (lane == 0) warps[warp] = st;
  __syncthreads();
  if (warp == 0) {
    st = lane < nWarps ? warps[lane] : emptyStats<A>();
    for (int off = 16; off > 0; off >>= 1) {
      const Stats<A> o{__shfl_xor_sync(0xffffffffu, st.m, off), __shfl_xor_sync(0xffffffffu, st.s, off)};
      st = merge(st, o);
    }
    if (lane == 0) warps[0] = st;
  }
  __syncthreads();
  return warps[0];
}

// Elements per 16-byte vector.
template <typename T> constexpr int kVec = 16 / static_cast<int>(sizeof(T));

// f(j, x_j) for this thread's share of a row: vectors of kVec<T> elements when Vec.
template <typename T, bool Vec, typename F> __device__ __forceinline__ void forRow(const T* row, long long V, F&& f) {
  if constexpr (Vec) {
    constexpr int W = kVec<T>;
    const uint4* p = reinterpret_cast<const uint4*>(row);
    for (long long q = threadIdx.x; q < V / W; q += blockDim.x) {
      const uint4 raw = p[q];
      const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int k = 0; k < W; k++) f(q * W + k, convert<Compute<T>>(e[k]));
    }
  } else {
    for (long long j = threadIdx.x; j < V; j += blockDim.x) f(j, load(row, j));
  }
}

// out[j] = f(j, x_j) for this thread's share of a row (the same share forRow visits).
template <typename T, bool Vec, typename F> __device__ __forceinline__ void mapRow(const T* row, T* out, long long V, F&& f) {
  if constexpr (Vec) {
    constexpr int W = kVec<T>;
    const uint4* p = reinterpret_cast<const uint4*>(row);
    uint4* o = reinterpret_cast<uint4*>(out);
    for (long long q = threadIdx.x; q < V / W; q += blockDim.x) {
      const uint4 raw = p[q];
      const T* e = reinterpret_cast<const T*>(&raw);
      uint4 res;
      T* r = reinterpret_cast<T*>(&res);
#pragma unroll
      for (int k = 0; k < W; k++) r[k] = convert<T>(f(q * W + k, convert<Compute<T>>(e[k])));
      o[q] = res;
    }
  } else {
    for (long long j = threadIdx.x; j < V; j += blockDim.x) out[j] = convert<T>(f(j, load(row, j)));
  }
}

template <typename T, bool Vec> __device__ __forceinline__ Compute<T> rowLse(const T* row, long long V) {
  using A = Compute<T>;
  Stats<A> st = emptyStats<A>();
  forRow<T, Vec>(row, V, [&](long long, A x) { push(st, x); });
  return finish(blockStats(st));
}

template <typename T, bool Vec>
__global__ void crossEntropyKernel(const T* __restrict__ x, const int32_t* __restrict__ targets, long long V, long long ignore,
                                   T* __restrict__ nll, ErrorRecord* errors) {
  using A = Compute<T>;
  const long long i = blockIdx.x;
  const T* row = x + i * V;
  const A lse = rowLse<T, Vec>(row, V);
  if (threadIdx.x != 0) return;
  const int32_t t = targets[i];
  A out;
  if (t == ignore) out = A(0);
  else if (t < 0 || t >= V) {
    reportIndex(errors, K_CROSS_ENTROPY, i, t, V);
    out = A(NAN);
  } else out = lse - load(row, t);
  nll[i] = convert<T>(out);
}

template <typename T, bool Vec>
__global__ void crossEntropyBackwardKernel(const T* __restrict__ x, const int32_t* __restrict__ targets, const T* __restrict__ dnll,
                                           long long V, long long ignore, T* __restrict__ dx, ErrorRecord* errors) {
  using A = Compute<T>;
  const long long i = blockIdx.x;
  const T* row = x + i * V;
  T* out = dx + i * V;
  const int32_t t = targets[i];
  if (t == ignore) {  // the same branch for the whole block
    mapRow<T, Vec>(row, out, V, [](long long, A) { return A(0); });
    return;
  }
  const A lse = rowLse<T, Vec>(row, V);
  const A g = load(dnll, i);
  if (t < 0 || t >= V) {
    if (threadIdx.x == 0) reportIndex(errors, K_CROSS_ENTROPY, i, t, V);
    mapRow<T, Vec>(row, out, V, [](long long, A) { return A(NAN); });
    return;
  }
  // p·g − g at the target, as the CPU's fused kernel (p·g, then − g).
  mapRow<T, Vec>(row, out, V, [&](long long j, A xj) {
    const A pg = exp(xj - lse) * g;
    return j == t ? pg - g : pg;
  });
}

template <typename T, bool Vec>
__global__ void logsumexpKernel(const T* __restrict__ x, long long V, T* __restrict__ lse) {
  const long long i = blockIdx.x;
  const Compute<T> r = rowLse<T, Vec>(x + i * V, V);
  if (threadIdx.x == 0) lse[i] = convert<T>(r);
}

template <typename T, bool Vec>
__global__ void logsumexpBackwardKernel(const T* __restrict__ x, const T* __restrict__ lse, const T* __restrict__ g, long long V,
                                        T* __restrict__ dx) {
  using A = Compute<T>;
  const long long i = blockIdx.x;
  const A l = load(lse, i), gi = load(g, i);
  mapRow<T, Vec>(x + i * V, dx + i * V, V, [&](long long, A xj) { return exp(xj - l) * gi; });
}

// Threads per row: enough for the row's vectors, a warp at least; 1024 for long rows when there
// are too few rows to fill the GPU with blocks.
template <typename T> unsigned rowThreads(const Launch& l, long long rows, long long V, bool vec) {
  const long long work = vec ? V / kVec<T> : V;
  const long long sms = l.smCount > 0 ? l.smCount : 132;
  if (work >= 64 * 1024 && rows < 2 * sms) return 1024;
  long long t = (work + 31) / 32 * 32;
  return static_cast<unsigned>(std::max(32LL, std::min(256LL, t)));
}

template <typename T> bool vectorized(long long V) { return V > 0 && V % kVec<T> == 0; }

constexpr long long kMaxGrid = 2147483647LL;

}  // namespace

cudaError_t crossEntropy(const Launch& l, DType dtype, const void* logits, const int32_t* targets, long long n, long long v,
                         long long ignore, void* nll) {
  if (n <= 0) return cudaSuccess;
  if (n > kMaxGrid) return cudaErrorInvalidValue;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    const bool vec = vectorized<T>(v);
    const unsigned threads = rowThreads<T>(l, n, v, vec);
    const T* x = static_cast<const T*>(logits);
    T* o = static_cast<T*>(nll);
    if (vec) crossEntropyKernel<T, true><<<static_cast<unsigned>(n), threads, 0, l.stream>>>(x, targets, v, ignore, o, l.errors);
    else crossEntropyKernel<T, false><<<static_cast<unsigned>(n), threads, 0, l.stream>>>(x, targets, v, ignore, o, l.errors);
  });
  return cudaGetLastError();
}

cudaError_t crossEntropyBackward(const Launch& l, DType dtype, const void* logits, const int32_t* targets, const void* dnll,
                                 long long n, long long v, long long ignore, void* dlogits) {
  if (n <= 0 || v <= 0) return cudaSuccess;
  if (n > kMaxGrid) return cudaErrorInvalidValue;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    const bool vec = vectorized<T>(v);
    const unsigned threads = rowThreads<T>(l, n, v, vec);
    const T* x = static_cast<const T*>(logits);
    const T* g = static_cast<const T*>(dnll);
    T* o = static_cast<T*>(dlogits);
    if (vec) crossEntropyBackwardKernel<T, true><<<static_cast<unsigned>(n), threads, 0, l.stream>>>(x, targets, g, v, ignore, o, l.errors);
    else crossEntropyBackwardKernel<T, false><<<static_cast<unsigned>(n), threads, 0, l.stream>>>(x, targets, g, v, ignore, o, l.errors);
  });
  return cudaGetLastError();
}

cudaError_t logsumexp(const Launch& l, DType dtype, const void* x, long long rows, long long v, void* lse) {
  if (rows <= 0) return cudaSuccess;
  if (rows > kMaxGrid) return cudaErrorInvalidValue;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    const bool vec = vectorized<T>(v);
    const unsigned threads = rowThreads<T>(l, rows, v, vec);
    const T* xs = static_cast<const T*>(x);
    T* o = static_cast<T*>(lse);
    if (vec) logsumexpKernel<T, true><<<static_cast<unsigned>(rows), threads, 0, l.stream>>>(xs, v, o);
    else logsumexpKernel<T, false><<<static_cast<unsigned>(rows), threads, 0, l.stream>>>(xs, v, o);
  });
  return cudaGetLastError();
}

cudaError_t logsumexpBackward(const Launch& l, DType dtype, const void* x, const void* lse, const void* g, long long rows,
                              long long v, void* dx) {
  if (rows <= 0 || v <= 0) return cudaSuccess;
  if (rows > kMaxGrid) return cudaErrorInvalidValue;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    const bool vec = vectorized<T>(v);
    const unsigned threads = rowThreads<T>(l, rows, v, vec);
    const T* xs = static_cast<const T*>(x);
    const T* ls = static_cast<const T*>(lse);
    const T* gs = static_cast<const T*>(g);
    T* o = static_cast<T*>(dx);
    if (vec) logsumexpBackwardKernel<T, true><<<static_cast<unsigned>(rows), threads, 0, l.stream>>>(xs, ls, gs, v, o);
    else logsumexpBackwardKernel<T, false><<<static_cast<unsigned>(rows), threads, 0, l.stream>>>(xs, ls, gs, v, o);
  });
  return cudaGetLastError();
}

}  // namespace miniseq
