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

namespace miniseq {

// murmur3's 32-bit finaliser: a bijection that mixes every input bit into every output bit.
__device__ __forceinline__ uint32_t mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

// Pair j of the stream: two words from (key, j), Box–Muller in double (as the host does), each
// value rounded to float first so bfloat16 weights equal the host's float32 normals rounded.
template <typename T> __global__ void randomNormalKernel(T* out, long long n, uint32_t key, double std) {
  const long long pairs = (n + 1) / 2;
  MINISEQ_GRID_STRIDE(j, pairs) {
    const uint32_t x = mix32(static_cast<uint32_t>(j) ^ key);
    const uint32_t a = mix32(x ^ 0x68e31da4u), b = mix32(x ^ 0xb5297a4du);
    const double u1 = (static_cast<double>(a) + 1.0) / 4294967296.0;
    const double u2 = static_cast<double>(b) / 4294967296.0;
    const double r = sqrt(-2.0 * log(u1)) * std, th = 6.283185307179586 * u2;
    const double v[2] = {r * cos(th), r * sin(th)};
    for (int k = 0; k < 2 && 2 * j + k < n; k++) {
      if constexpr (std::is_same_v<T, double>) out[2 * j + k] = v[k];
      else if constexpr (std::is_same_v<T, float>) out[2 * j + k] = static_cast<float>(v[k]);
      else out[2 * j + k] = __float2bfloat16_rn(static_cast<float>(v[k]));
    }
  }
}

cudaError_t randomNormal(const Launch& l, DType dtype, void* out, long long n, uint32_t key, double std) {
  if (n <= 0) return cudaSuccess;
  const long long pairs = (n + 1) / 2;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    randomNormalKernel<T><<<gridFor(l, pairs), kThreads, 0, l.stream>>>(static_cast<T*>(out), n, key, std);
  });
  return cudaGetLastError();
}

}  // namespace miniseq
