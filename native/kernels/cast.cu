// Conversions between every pair of dtypes, with typed-array store semantics (common.cuh's
// convert): float → int32 truncates toward zero (NaN → 0, out of range wraps modulo 2^32), the
// rest round to nearest even. float64 → bfloat16 rounds once, from the float64 value.
#include "common.cuh"

namespace miniseq {

template <typename From, typename To> __global__ void castKernel(const From* x, To* out, long long n) {
  MINISEQ_GRID_STRIDE(i, n) out[i] = convert<To>(x[i]);
}

cudaError_t cast(const Launch& l, DType from, DType to, const void* x, void* out, long long n) {
  if (n <= 0) return cudaSuccess;
  MINISEQ_DISPATCH(from, F, {
    MINISEQ_DISPATCH(to, T, {
      castKernel<F, T><<<gridFor(l, n), kThreads, 0, l.stream>>>(static_cast<const F*>(x), static_cast<T*>(out), n);
    });
  });
  return cudaGetLastError();
}

}  // namespace miniseq
