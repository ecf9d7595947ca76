// Elementwise binary ops and `where`. An operand of size 1 is a scalar every element sees
// (its index step is 0). float32 + − × ÷ are single IEEE operations, correctly rounded: the
// same results as the CPU backend, which computes in float64 and rounds on store. int32
// follows JavaScript's typed-array stores: + − × wrap modulo 2^32 (× like Math.imul), ÷
// truncates toward zero and division by zero gives 0. `less` and `equal` write 1 or 0 in the
// output's dtype.
#include "common.cuh"

namespace miniseq {

template <BinaryOp Op, typename C> __device__ __forceinline__ C arith(C a, C b) {
  if constexpr (isInt<C>) {
    const uint32_t ua = static_cast<uint32_t>(a), ub = static_cast<uint32_t>(b);
    if constexpr (Op == B_ADD) return static_cast<int32_t>(ua + ub);
    else if constexpr (Op == B_SUB) return static_cast<int32_t>(ua - ub);
    else if constexpr (Op == B_MUL) return static_cast<int32_t>(ua * ub);
    else if constexpr (Op == B_DIV) {
      if (b == 0) return 0;                        // ±∞ and NaN store as 0
      if (a == INT32_MIN && b == -1) return a;     // 2^31 wraps to -2^31
      return a / b;                                // C truncates toward zero, like the store
    } else return jsMax(a, b);
  } else {
    if constexpr (Op == B_ADD) return a + b;
    else if constexpr (Op == B_SUB) return a - b;
    else if constexpr (Op == B_MUL) return a * b;
    else if constexpr (Op == B_DIV) return a / b;
    else return jsMax(a, b);
  }
}

template <BinaryOp Op, typename T>
__global__ void arithKernel(const T* a, long long sa, const T* b, long long sb, T* out, long long n) {
  MINISEQ_GRID_STRIDE(i, n) out[i] = convert<T>(arith<Op>(load(a, i * sa), load(b, i * sb)));
}

template <BinaryOp Op, typename T, typename O>
__global__ void compareKernel(const T* a, long long sa, const T* b, long long sb, O* out, long long n) {
  MINISEQ_GRID_STRIDE(i, n) {
    const Compute<T> x = load(a, i * sa), y = load(b, i * sb);
    const bool r = Op == B_LESS ? x < y : x == y;
    out[i] = convert<O>(r ? 1 : 0);
  }
}

template <BinaryOp Op, typename T>
static void launchArith(const Launch& l, const void* a, long long sa, const void* b, long long sb, void* o, long long n) {
  arithKernel<Op, T><<<gridFor(l, n), kThreads, 0, l.stream>>>(static_cast<const T*>(a), sa, static_cast<const T*>(b), sb,
                                                                static_cast<T*>(o), n);
}

template <BinaryOp Op, typename T>
static cudaError_t launchCompare(const Launch& l, DType out, const void* a, long long sa, const void* b, long long sb,
                                 void* o, long long n) {
  MINISEQ_DISPATCH(out, O, {
    compareKernel<Op, T, O><<<gridFor(l, n), kThreads, 0, l.stream>>>(static_cast<const T*>(a), sa,
                                                                       static_cast<const T*>(b), sb, static_cast<O*>(o), n);
  });
  return cudaSuccess;
}

cudaError_t binary(const Launch& l, BinaryOp op, DType in, DType out, const void* a, bool aScalar, const void* b,
                   bool bScalar, void* o, long long n) {
  if (n <= 0) return cudaSuccess;
  const long long sa = aScalar ? 0 : 1, sb = bScalar ? 0 : 1;
  cudaError_t status = cudaSuccess;
  MINISEQ_DISPATCH(in, T, {
    switch (op) {
      case B_ADD: launchArith<B_ADD, T>(l, a, sa, b, sb, o, n); break;
      case B_SUB: launchArith<B_SUB, T>(l, a, sa, b, sb, o, n); break;
      case B_MUL: launchArith<B_MUL, T>(l, a, sa, b, sb, o, n); break;
      case B_DIV: launchArith<B_DIV, T>(l, a, sa, b, sb, o, n); break;
      case B_MAXIMUM: launchArith<B_MAXIMUM, T>(l, a, sa, b, sb, o, n); break;
      case B_LESS: status = launchCompare<B_LESS, T>(l, out, a, sa, b, sb, o, n); break;
      case B_EQUAL: status = launchCompare<B_EQUAL, T>(l, out, a, sa, b, sb, o, n); break;
      default: return cudaErrorInvalidValue;
    }
  });
  if (status != cudaSuccess) return status;
  return cudaGetLastError();
}

// out = cond ≠ 0 ? a : b. A NaN condition is ≠ 0, so it picks a (as in the CPU backend). The
// values are moved as bits, so T is an unsigned integer of the element's size.
template <typename C, typename T>
__global__ void whereKernel(const C* c, long long sc, const T* a, long long sa, const T* b, long long sb, T* out,
                            long long n) {
  MINISEQ_GRID_STRIDE(i, n) out[i] = load(c, i * sc) != Compute<C>(0) ? a[i * sa] : b[i * sb];
}

cudaError_t where(const Launch& l, DType cond, DType value, const void* c, bool cScalar, const void* a, bool aScalar,
                  const void* b, bool bScalar, void* o, long long n) {
  if (n <= 0) return cudaSuccess;
  const long long sc = cScalar ? 0 : 1, sa = aScalar ? 0 : 1, sb = bScalar ? 0 : 1;
  MINISEQ_DISPATCH(cond, C, {
    MINISEQ_DISPATCH_BYTES(elementBytes(value), T, {
      whereKernel<C, T><<<gridFor(l, n), kThreads, 0, l.stream>>>(static_cast<const C*>(c), sc, static_cast<const T*>(a), sa,
                                                                   static_cast<const T*>(b), sb, static_cast<T*>(o), n);
    });
  });
  return cudaGetLastError();
}

}  // namespace miniseq
