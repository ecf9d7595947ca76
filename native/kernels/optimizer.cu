// The "adamw" routine (src/models/optimizer.ts): one parameter's AdamW update in one pass over
// memory, instead of the dozen elementwise kernels of its reference body. Every thread reads its
// element's weight (or fp32 master weight), gradient and moments, and writes the new ones in
// place. The arithmetic is the reference body's, op for op, each rounded to float32 (the _rn
// intrinsics keep the compiler from fusing a multiply and an add), so the fused update equals
// the unfused one bitwise.
#include "common.cuh"

namespace miniseq {
namespace {

struct AdamWConstants {
  float beta1, oneMinusBeta1, beta2, oneMinusBeta2, eps, decay;
};

template <typename P, typename G, typename S>
__global__ void adamwKernel(P* __restrict__ param, const G* __restrict__ grad, S* __restrict__ m, S* __restrict__ v, float* __restrict__ master,
                            const float* __restrict__ lrPtr, const float* __restrict__ c1Ptr, const float* __restrict__ c2Ptr,
                            const float* __restrict__ clipPtr, AdamWConstants k, long long n) {
  const float lr = *lrPtr, c1 = *c1Ptr, c2 = *c2Ptr, clip = *clipPtr;
  MINISEQ_GRID_STRIDE(i, n) {
    const float g = __fmul_rn(convert<float>(grad[i]), clip);
    const float m1 = __fadd_rn(__fmul_rn(convert<float>(m[i]), k.beta1), __fmul_rn(g, k.oneMinusBeta1));
    const float v1 = __fadd_rn(__fmul_rn(convert<float>(v[i]), k.beta2), __fmul_rn(__fmul_rn(g, g), k.oneMinusBeta2));
    const float step = __fdiv_rn(__fdiv_rn(m1, c1), __fadd_rn(__fsqrt_rn(__fdiv_rn(v1, c2)), k.eps));
    const float w = master != nullptr ? master[i] : convert<float>(param[i]);
    const float update = k.decay > 0.0f ? __fadd_rn(step, __fmul_rn(w, k.decay)) : step;
    const float w1 = __fsub_rn(w, __fmul_rn(update, lr));
    m[i] = convert<S>(m1);
    v[i] = convert<S>(v1);
    param[i] = convert<P>(w1);
    if (master != nullptr) master[i] = w1;
  }
}

// float32 or bfloat16 storage; anything else is refused.
#define MINISEQ_DISPATCH_STORAGE(dtype, T, ...)         \
  switch (dtype) {                                      \
    case F32: { using T = float; __VA_ARGS__; break; }  \
    case BF16: { using T = bf16; __VA_ARGS__; break; }  \
    default: return cudaErrorInvalidValue;              \
  }

}  // namespace

cudaError_t adamw(const Launch& l, DType paramType, DType gradType, DType stateType, void* param, const void* grad, void* m, void* v,
                  float* master, const float* lr, const float* correction1, const float* correction2, const float* clip, double beta1,
                  double beta2, double eps, double decay, long long n) {
  if (n <= 0) return cudaSuccess;
  // Constants as the reference graph has them: computed in double, stored as float32 operands.
  const AdamWConstants k{static_cast<float>(beta1), static_cast<float>(1 - beta1), static_cast<float>(beta2), static_cast<float>(1 - beta2),
                         static_cast<float>(eps), static_cast<float>(decay)};
  MINISEQ_DISPATCH_STORAGE(paramType, P, MINISEQ_DISPATCH_STORAGE(gradType, G, MINISEQ_DISPATCH_STORAGE(stateType, S, {
    adamwKernel<P, G, S><<<gridFor(l, n), kThreads, 0, l.stream>>>(static_cast<P*>(param), static_cast<const G*>(grad), static_cast<S*>(m),
                                                                    static_cast<S*>(v), master, lr, correction1, correction2, clip, k, n);
  })));
  return cudaGetLastError();
}

}  // namespace miniseq
