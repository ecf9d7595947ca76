// The "rope" routine and its VJP (src/core/routines/basic.ts): rotary position embedding in the
// rotate-half layout, on x [rows, S, D] (rows = batch·heads), in one pass instead of the
// reference body's slices, concatenation and products. One thread per (row, position, pair
// i < D/2) rotates (x_i, x_{i+D/2}) by angle = (s + offset)·f_i, with f_i = θ^(−2i/D) or, for a
// scaled RoPE (rope_scaling), the frequency given for pair i:
//   y_i = x_i·cos − x_{i+D/2}·sin,   y_{i+D/2} = x_{i+D/2}·cos + x_i·sin
// The VJP is the same rotation by −angle (inverse). The angle is computed as the reference
// computes it, in float32 (float64 for float64): f_i = exp(i·c) with c = −2·ln θ / D, or the
// given frequency rounded to that type, then times the position; cos and sin are rounded to the
// dtype, as the reference casts them; the products are in float32 and rounded once on store.
#include <cmath>

#include "common.cuh"

namespace miniseq {
namespace {

// The given frequencies travel as a kernel parameter (a few hundred bytes): no buffer to manage.
struct Frequencies {
  int count;  // 0: θ^(−2i/D), computed
  double f[kRopeMaxPairs];
};

template <typename T>
__global__ void ropeKernel(const T* __restrict__ x, T* __restrict__ y, long long pairs, long long S, long long D, Compute<T> coef,
                           Compute<T> offset, bool inverse, Frequencies given) {
  using C = Compute<T>;
  const long long half = D / 2;
  MINISEQ_GRID_STRIDE(e, pairs) {
    const long long i = e % half, s = (e / half) % S, row = e / (half * S);
    const C angle = (C(s) + offset) * (given.count > 0 ? static_cast<C>(given.f[i]) : exp(C(i) * coef));
    const C c = convert<C>(convert<T>(cos(angle)));
    const C sn = convert<C>(convert<T>(inverse ? -sin(angle) : sin(angle)));
    const long long at = (row * S + s) * D + i;
    const C a = load(x, at), b = load(x, at + half);
    y[at] = convert<T>(a * c - b * sn);
    y[at + half] = convert<T>(b * c + a * sn);
  }
}

}  // namespace

cudaError_t rope(const Launch& l, DType dtype, const void* x, void* y, long long rows, long long s, long long d, double theta, double offset,
                 bool inverse, const double* frequencies) {
  if (d % 2 != 0) return cudaErrorInvalidValue;
  Frequencies given{};
  if (frequencies != nullptr) {
    if (d / 2 > kRopeMaxPairs) return cudaErrorInvalidValue;
    given.count = static_cast<int>(d / 2);
    for (long long i = 0; i < d / 2; i++) given.f[i] = frequencies[i];
  }
  const long long pairs = rows * s * (d / 2);
  if (pairs <= 0) return cudaSuccess;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    using C = Compute<T>;
    ropeKernel<T><<<gridFor(l, pairs), kThreads, 0, l.stream>>>(static_cast<const T*>(x), static_cast<T*>(y), pairs, s, d,
                                                                 static_cast<C>((-2.0 / static_cast<double>(d)) * std::log(theta)),
                                                                 static_cast<C>(offset), inverse, given);
  });
  return cudaGetLastError();
}

}  // namespace miniseq
