// The "rope" routine and its VJP (src/core/routines/basic.ts): rotary position embedding in the
// rotate-half layout, on x [rows, S, D] (rows = batch·heads), in one pass instead of the
// reference body's slices, concatenation and products. One thread per (row, position, pair
// i < D/2) rotates (x_i, x_{i+D/2}) by angle = (s + offset)·θ^(−2i/D):
//   y_i = x_i·cos − x_{i+D/2}·sin,   y_{i+D/2} = x_{i+D/2}·cos + x_i·sin
// The VJP is the same rotation by −angle (inverse). The angle is computed as the reference
// computes it, in float32 (float64 for float64): exp(i·c) with c = −2·ln θ / D, then times the
// position; cos and sin are rounded to the dtype, as the reference casts them; the products
// are in float32 and rounded once on store.
#include <cmath>

#include "common.cuh"

namespace miniseq {
namespace {

template <typename T>
__global__ void ropeKernel(const T* __restrict__ x, T* __restrict__ y, long long pairs, long long S, long long D, Compute<T> coef,
                           Compute<T> offset, bool inverse) {
  using C = Compute<T>;
  const long long half = D / 2;
  MINISEQ_GRID_STRIDE(e, pairs) {
    const long long i = e % half, s = (e / half) % S, row = e / (half * S);
    const C angle = (C(s) + offset) * exp(C(i) * coef);
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
                 bool inverse) {
  if (d % 2 != 0) return cudaErrorInvalidValue;
  const long long pairs = rows * s * (d / 2);
  if (pairs <= 0) return cudaSuccess;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    using C = Compute<T>;
    ropeKernel<T><<<gridFor(l, pairs), kThreads, 0, l.stream>>>(static_cast<const T*>(x), static_cast<T*>(y), pairs, s, d,
                                                                 static_cast<C>((-2.0 / static_cast<double>(d)) * std::log(theta)),
                                                                 static_cast<C>(offset), inverse);
  });
  return cudaGetLastError();
}

}  // namespace miniseq
