// What every kernel family shares: element types, conversions with the CPU backend's (that is,
// JavaScript's) rounding rules, grid sizing and dtype dispatch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels.h"

namespace miniseq {

using bf16 = __nv_bfloat16;

// The type arithmetic is done in: bfloat16 computes in float32 and rounds once on store.
template <typename T> struct ComputeT { using type = T; };
template <> struct ComputeT<bf16> { using type = float; };
template <typename T> using Compute = typename ComputeT<T>::type;

template <typename T> constexpr bool isInt = std::is_same_v<T, int32_t>;

// JavaScript's ToInt32, what storing a number into an Int32Array does: truncate toward zero,
// NaN and ±∞ become 0, out-of-range values wrap modulo 2^32.
__device__ __forceinline__ int32_t toInt32(double d) {
  if (!isfinite(d)) return 0;
  d = trunc(d);
  if (d >= -2147483648.0 && d <= 2147483647.0) return static_cast<int32_t>(d);
  double m = fmod(d, 4294967296.0);
  if (m < 0) m += 4294967296.0;
  return static_cast<int32_t>(static_cast<uint32_t>(m));
}

template <typename From> __device__ __forceinline__ double toDouble(From v) {
  if constexpr (std::is_same_v<From, bf16>) return static_cast<double>(__bfloat162float(v));
  else return static_cast<double>(v);
}

// Every conversion rounds to nearest even, like a typed-array store: float64 → float32,
// int32 → float32, anything → bfloat16 (in one rounding, from the source value).
template <typename To, typename From> __device__ __forceinline__ To convert(From v) {
  if constexpr (std::is_same_v<To, From>) return v;
  else if constexpr (std::is_same_v<To, int32_t>) return toInt32(toDouble(v));
  else if constexpr (std::is_same_v<To, bf16>) {
    if constexpr (std::is_same_v<From, float>) return __float2bfloat16_rn(v);
    else if constexpr (std::is_same_v<From, double>) return __double2bfloat16(v);
    else return __int2bfloat16_rn(v);
  } else if constexpr (std::is_same_v<From, bf16>) return static_cast<To>(__bfloat162float(v));
  else return static_cast<To>(v);
}

template <typename T> __device__ __forceinline__ Compute<T> load(const T* p, long long i) {
  return convert<Compute<T>>(p[i]);
}

// JavaScript's Math.max: NaN wins, and +0 beats -0.
template <typename C> __device__ __forceinline__ C jsMax(C a, C b) {
  if constexpr (isInt<C>) return a > b ? a : b;
  else {
    if (a != a) return a;
    if (b != b) return b;
    if (a == b) return signbit(a) ? b : a;
    return a > b ? a : b;
  }
}

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements: enough to fill the GPU, no more.
inline unsigned gridFor(const Launch& l, long long n, int threads = kThreads) {
  long long blocks = (n + threads - 1) / threads;
  long long cap = static_cast<long long>(l.smCount > 0 ? l.smCount : 132) * 16;
  if (blocks > cap) blocks = cap;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

#define MINISEQ_GRID_STRIDE(i, n) \
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<long long>(gridDim.x) * blockDim.x)

// Calls body with `using T = <element type of dtype>` in scope.
#define MINISEQ_DISPATCH(dtype, T, ...)            \
  switch (dtype) {                                 \
    case F32: { using T = float; __VA_ARGS__; break; }   \
    case F64: { using T = double; __VA_ARGS__; break; }  \
    case I32: { using T = int32_t; __VA_ARGS__; break; } \
    case BF16: { using T = bf16; __VA_ARGS__; break; }   \
    default: return cudaErrorInvalidValue;         \
  }

#define MINISEQ_DISPATCH_FLOAT(dtype, T, ...)      \
  switch (dtype) {                                 \
    case F32: { using T = float; __VA_ARGS__; break; }   \
    case F64: { using T = double; __VA_ARGS__; break; }  \
    case BF16: { using T = bf16; __VA_ARGS__; break; }   \
    default: return cudaErrorInvalidValue;         \
  }

// Plain bit copies by element size (copy, gather, takeAlong, putAlong don't look at values).
#define MINISEQ_DISPATCH_BYTES(bytes, T, ...)        \
  switch (bytes) {                                   \
    case 2: { using T = uint16_t; __VA_ARGS__; break; }  \
    case 4: { using T = uint32_t; __VA_ARGS__; break; }  \
    case 8: { using T = uint64_t; __VA_ARGS__; break; }  \
    default: return cudaErrorInvalidValue;           \
  }

// Records the first bad index; the addon reports it with the next read.
__device__ __forceinline__ void reportIndex(ErrorRecord* e, int kernel, long long position, long long value,
                                            long long bound) {
  if (atomicCAS(&e->code, 0, 1) == 0) {
    e->kernel = kernel;
    e->position = position;
    e->value = value;
    e->bound = bound;
  }
}

}  // namespace miniseq
