// fill and iota: kernels that write out without reading anything.
#include "common.cuh"

namespace miniseq {

template <typename T> __global__ void fillKernel(T* out, long long n, T value) {
  MINISEQ_GRID_STRIDE(i, n) out[i] = value;
}

cudaError_t fill(const Launch& l, DType dtype, void* out, long long n, double value) {
  if (n <= 0) return cudaSuccess;
  // The value is converted once, on the host, like TypedArray.fill does (the addon has already
  // refused a non-integer for int32).
  MINISEQ_DISPATCH(dtype, T, {
    T v;
    if constexpr (std::is_same_v<T, bf16>) v = __double2bfloat16(value);
    else if constexpr (std::is_same_v<T, float>) v = static_cast<float>(value);
    else v = static_cast<T>(value);
    fillKernel<T><<<gridFor(l, n), kThreads, 0, l.stream>>>(static_cast<T*>(out), n, v);
  });
  return cudaGetLastError();
}

template <typename T> __global__ void iotaKernel(T* out, long long n, long long len, long long inner) {
  MINISEQ_GRID_STRIDE(i, n) out[i] = convert<T>(static_cast<double>((i / inner) % len));
}

cudaError_t iota(const Launch& l, DType dtype, void* out, long long outer, long long len, long long inner) {
  long long n = outer * len * inner;
  if (n <= 0) return cudaSuccess;
  MINISEQ_DISPATCH(dtype, T, {
    iotaKernel<T><<<gridFor(l, n), kThreads, 0, l.stream>>>(static_cast<T*>(out), n, len, inner);
  });
  return cudaGetLastError();
}

}  // namespace miniseq
