// The "rmsNorm" routine (src/core/routines/basic.ts) and its VJP as fused kernels: the
// reference body's dozen elementwise passes over [rows, d] become one pass forward and two
// backward. Arithmetic in float32 for float32 and bfloat16 (float64 for float64), as the
// reference normalises in at least float32; results rounded once on store.
//
// Forward, one CTA per row: Σ x² (a block reduction), inv = 1/√(Σ x²/d + eps), then
// y = (x·inv rounded to the dtype)·w, as the reference casts before the weight.
// Backward, with n = x·inv and dn = g·w:
//   dx = inv·(dn − n·Σ(dn·n)/d)            (per row: two block reductions)
//   dw = Σ over rows of g·(n rounded)      (across rows: no atomics, so it is deterministic)
// The backward grid is a fixed number of CTAs, each walking rows r ≡ blockIdx.x (mod grid) and
// adding its rows' g·n into its own slice of `partials` [grid, d]; a second kernel sums each
// column of the partials in CTA order.
#include "common.cuh"

namespace miniseq {
namespace {

constexpr int kNormThreads = 256;

// The sum of v over the CTA, returned to every thread (`red` holds one value per warp).
template <typename A> __device__ __forceinline__ A blockSum(A v, A* red) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // the last call's readers are done with red
  if (lane == 0) red[warp] = v;
  __syncthreads();
  A total = A(0);
#pragma unroll
  for (int w = 0; w < kNormThreads / 32; w++) total += red[w];
  return total;
}

template <typename T, typename A>
__device__ __forceinline__ A rowInv(const T* __restrict__ row, long long d, A eps, A* red) {
  A ss = A(0);
  for (long long j = threadIdx.x; j < d; j += kNormThreads) {
    const A h = load(row, j);
    ss += h * h;
  }
  return A(1) / sqrt(blockSum(ss, red) / A(d) + eps);
}

template <typename T>
__global__ void __launch_bounds__(kNormThreads) rmsNormKernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y, long long d,
                                                              Compute<T> eps) {
  using A = Compute<T>;
  __shared__ A red[kNormThreads / 32];
  const T* row = x + blockIdx.x * d;
  const A inv = rowInv(row, d, eps, red);
  for (long long j = threadIdx.x; j < d; j += kNormThreads) {
    const T n = convert<T>(load(row, j) * inv);
    y[blockIdx.x * d + j] = convert<T>(convert<A>(n) * load(w, j));
  }
}

template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    rmsNormBackwardKernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ g, T* __restrict__ dx,
                          Compute<T>* __restrict__ partials, long long rows, long long d, Compute<T> eps) {
  using A = Compute<T>;
  __shared__ A red[kNormThreads / 32];
  extern __shared__ __align__(16) unsigned char smem[];
  A* dwAcc = reinterpret_cast<A*>(smem);  // this CTA's Σ g·n, column j owned by thread j % 256
  for (long long j = threadIdx.x; j < d; j += kNormThreads) dwAcc[j] = A(0);
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    const T* gr = g + r * d;
    const A inv = rowInv(xr, d, eps, red);
    A dot = A(0);
    for (long long j = threadIdx.x; j < d; j += kNormThreads) {
      const A n = load(xr, j) * inv, gj = load(gr, j);
      dot += gj * load(w, j) * n;
      dwAcc[j] += gj * convert<A>(convert<T>(n));
    }
    const A mean = blockSum(dot, red) / A(d);
    for (long long j = threadIdx.x; j < d; j += kNormThreads) {
      const A n = load(xr, j) * inv;
      dx[r * d + j] = convert<T>(inv * (load(gr, j) * load(w, j) - n * mean));
    }
  }
  for (long long j = threadIdx.x; j < d; j += kNormThreads) partials[blockIdx.x * d + j] = dwAcc[j];
}

template <typename T>
__global__ void columnSumKernel(const Compute<T>* __restrict__ partials, int parts, long long d, T* __restrict__ dw) {
  MINISEQ_GRID_STRIDE(j, d) {
    Compute<T> s = 0;
    for (int b = 0; b < parts; b++) s += partials[b * d + j];
    dw[j] = convert<T>(s);
  }
}

}  // namespace

cudaError_t rmsNorm(const Launch& l, DType dtype, const void* x, const void* w, void* y, long long rows, long long d, double eps) {
  if (rows <= 0 || d <= 0) return cudaSuccess;
  if (rows > 2147483647LL) return cudaErrorInvalidValue;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    rmsNormKernel<T><<<static_cast<unsigned>(rows), kNormThreads, 0, l.stream>>>(static_cast<const T*>(x), static_cast<const T*>(w),
                                                                                  static_cast<T*>(y), d, static_cast<Compute<T>>(eps));
  });
  return cudaGetLastError();
}

// CTAs of the backward: two per SM (at most one per row).
static int backwardParts(const Launch& l, long long rows) {
  const long long parts = static_cast<long long>(l.smCount > 0 ? l.smCount : 132) * 2;
  return static_cast<int>(rows < parts ? (rows < 1 ? 1 : rows) : parts);
}

long long rmsNormScratch(const Launch& l, DType dtype, long long rows, long long d) {
  return static_cast<long long>(backwardParts(l, rows)) * d * (dtype == F64 ? 8 : 4);
}

cudaError_t rmsNormBackward(const Launch& l, DType dtype, const void* x, const void* w, const void* g, void* dx, void* dw, long long rows,
                            long long d, double eps, void* partials) {
  if (d <= 0) return cudaSuccess;
  const int parts = backwardParts(l, rows);
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    using A = Compute<T>;
    const size_t smem = static_cast<size_t>(d) * sizeof(A);
    if (smem > 48 * 1024) {
      const cudaError_t e = cudaFuncSetAttribute(rmsNormBackwardKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
      if (e != cudaSuccess) return e;
    }
    rmsNormBackwardKernel<T><<<parts, kNormThreads, smem, l.stream>>>(static_cast<const T*>(x), static_cast<const T*>(w),
                                                                      static_cast<const T*>(g), static_cast<T*>(dx), static_cast<A*>(partials),
                                                                      rows, d, static_cast<A>(eps));
    columnSumKernel<T><<<gridFor(l, d), kThreads, 0, l.stream>>>(static_cast<const A*>(partials), parts, d, static_cast<T*>(dw));
  });
  return cudaGetLastError();
}

}  // namespace miniseq
