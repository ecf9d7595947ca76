// The "silu" and "siluMul" routines and their VJPs (src/core/routines/basic.ts) as single
// elementwise kernels: the reference body's chain exp(−x) → +1 → 1/· → ·x (and the backward's
// seven ops) in registers, in the reference's order of operations, float32 for float32 and
// bfloat16 (float64 for float64), rounded once on store. siluMul is SwiGLU's product
// silu(a)·b: one pass instead of two, and silu(a) is never stored.
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

// y = silu(a)·b
template <typename T> __global__ void siluMulKernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y, long long n) {
  MINISEQ_GRID_STRIDE(i, n) {
    const Compute<T> v = load(a, i);
    y[i] = convert<T>(v * sigmoid(v) * load(b, i));
  }
}

// da = g·b·σ·(a·(1 − σ) + 1), db = g·a·σ
template <typename T>
__global__ void siluMulBackwardKernel(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ g, T* __restrict__ da,
                                      T* __restrict__ db, long long n) {
  using C = Compute<T>;
  MINISEQ_GRID_STRIDE(i, n) {
    const C v = load(a, i), s = sigmoid(v), gi = load(g, i);
    da[i] = convert<T>(gi * load(b, i) * (s * (v * (C(1) - s) + C(1))));
    db[i] = convert<T>(gi * (v * s));
  }
}

}  // namespace

cudaError_t siluMul(const Launch& l, DType dtype, const void* a, const void* b, void* y, long long n) {
  if (n <= 0) return cudaSuccess;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    siluMulKernel<T><<<gridFor(l, n), kThreads, 0, l.stream>>>(static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(y), n);
  });
  return cudaGetLastError();
}

cudaError_t siluMulBackward(const Launch& l, DType dtype, const void* a, const void* b, const void* g, void* da, void* db, long long n) {
  if (n <= 0) return cudaSuccess;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    siluMulBackwardKernel<T><<<gridFor(l, n), kThreads, 0, l.stream>>>(static_cast<const T*>(a), static_cast<const T*>(b),
                                                                        static_cast<const T*>(g), static_cast<T*>(da), static_cast<T*>(db), n);
  });
  return cudaGetLastError();
}

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
