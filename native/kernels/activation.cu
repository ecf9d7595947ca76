// The "silu" routine and its VJP (src/core/routines/basic.ts) as single elementwise kernels: the
// reference body's chain exp(−x) → +1 → 1/· → ·x (and the backward's seven ops) in registers,
// in the reference's order of operations, float32 for float32 and bfloat16 (float64 for
// float64), rounded once on store.
#include "common.cuh"

namespace miniseq {
namespace {

template <typename C> __device__ __forceinline__ C sigmoid(C x) { return C(1) / (exp(-x) + C(1)); }

template <typename T> __global__ void siluKernel(const T* __restrict__ x, T* __restrict__ y, long long n) {
  MINISEQ_GRID_STRIDE(i, n) {
    const Compute<T> v = load(x, i);
    y[i] = convert<T>(v * sigmoid(v));
  }
}

// g·σ·(x·(1 − σ) + 1), as the routine's backward rule writes it.
template <typename T> __global__ void siluBackwardKernel(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ dx, long long n) {
  using C = Compute<T>;
  MINISEQ_GRID_STRIDE(i, n) {
    const C v = load(x, i);
    const C s = sigmoid(v);
    dx[i] = convert<T>(load(g, i) * (s * (v * (C(1) - s) + C(1))));
  }
}

}  // namespace

cudaError_t silu(const Launch& l, DType dtype, const void* x, void* y, long long n) {
  if (n <= 0) return cudaSuccess;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    siluKernel<T><<<gridFor(l, n), kThreads, 0, l.stream>>>(static_cast<const T*>(x), static_cast<T*>(y), n);
  });
  return cudaGetLastError();
}

cudaError_t siluBackward(const Launch& l, DType dtype, const void* x, const void* g, void* dx, long long n) {
  if (n <= 0) return cudaSuccess;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    siluBackwardKernel<T><<<gridFor(l, n), kThreads, 0, l.stream>>>(static_cast<const T*>(x), static_cast<const T*>(g),
                                                                     static_cast<T*>(dx), n);
  });
  return cudaGetLastError();
}

}  // namespace miniseq
