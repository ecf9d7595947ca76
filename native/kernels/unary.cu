// Elementwise unary ops on float dtypes. float32 uses CUDA's single-precision functions
// (expf, logf, sinf, cosf: within 2 ulp; sqrtf and the reciprocal are correctly rounded, since
// the build keeps IEEE division and square root). The CPU backend computes in float64 and
// rounds, so transcendental results can differ from it in the last bit or two.
#include "common.cuh"

namespace miniseq {

template <UnaryOp Op, typename C> __device__ __forceinline__ C apply(C x) {
  if constexpr (Op == U_NEG) return -x;
  else if constexpr (Op == U_EXP) return exp(x);
  else if constexpr (Op == U_LOG) return log(x);
  else if constexpr (Op == U_SQRT) return sqrt(x);
  else if constexpr (Op == U_RECIP) return C(1) / x;
  else if constexpr (Op == U_SIN) return sin(x);
  else return cos(x);
}

template <UnaryOp Op, typename T> __global__ void unaryKernel(const T* x, T* out, long long n) {
  MINISEQ_GRID_STRIDE(i, n) out[i] = convert<T>(apply<Op>(load(x, i)));
}

template <UnaryOp Op, typename T> static void launch(const Launch& l, const void* x, void* out, long long n) {
  unaryKernel<Op, T><<<gridFor(l, n), kThreads, 0, l.stream>>>(static_cast<const T*>(x), static_cast<T*>(out), n);
}

cudaError_t unary(const Launch& l, UnaryOp op, DType dtype, const void* x, void* out, long long n) {
  if (n <= 0) return cudaSuccess;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    switch (op) {
      case U_NEG: launch<U_NEG, T>(l, x, out, n); break;
      case U_EXP: launch<U_EXP, T>(l, x, out, n); break;
      case U_LOG: launch<U_LOG, T>(l, x, out, n); break;
      case U_SQRT: launch<U_SQRT, T>(l, x, out, n); break;
      case U_RECIP: launch<U_RECIP, T>(l, x, out, n); break;
      case U_SIN: launch<U_SIN, T>(l, x, out, n); break;
      case U_COS: launch<U_COS, T>(l, x, out, n); break;
      default: return cudaErrorInvalidValue;
    }
  });
  return cudaGetLastError();
}

}  // namespace miniseq
