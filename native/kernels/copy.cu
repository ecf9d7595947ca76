// Strided copy, rank ≤ 8: dst[dstView(i)] = src[srcView(i)] for every index i of the shape.
// Strides may be 0 (broadcast) or negative. The addon has already merged contiguous dims and
// dropped size-1 ones (so a plain contiguous copy never gets here: it is a cudaMemcpyAsync), and
// snapshots src when it is dst. Each thread turns its linear index into coordinates, last dim
// fastest, so consecutive threads write consecutive elements of a contiguous destination.
#include "common.cuh"

namespace miniseq {

// Index arithmetic in 32 bits when everything fits (64-bit division is several times slower).
template <typename I> struct Strides {
  int rank;
  I count;
  I shape[kMaxRank];
  I src[kMaxRank];
  I dst[kMaxRank];
  I srcOffset;
  I dstOffset;
};

template <typename T, typename I> __global__ void copyKernel(const T* __restrict__ src, T* __restrict__ dst, Strides<I> p) {
  for (I i = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; i < p.count; i += static_cast<I>(gridDim.x) * blockDim.x) {
    I rest = i, s = p.srcOffset, d = p.dstOffset;
#pragma unroll
    for (int k = kMaxRank - 1; k >= 0; k--) {
      if (k < p.rank) {
        const I c = rest % p.shape[k];
        rest /= p.shape[k];
        s += c * p.src[k];
        d += c * p.dst[k];
      }
    }
    dst[d] = src[s];
  }
}

template <typename I> static Strides<I> narrow(const CopyParams& c) {
  Strides<I> p{};
  p.rank = c.rank;
  p.count = static_cast<I>(c.count);
  for (int k = 0; k < c.rank; k++) {
    p.shape[k] = static_cast<I>(c.shape[k]);
    p.src[k] = static_cast<I>(c.srcStride[k]);
    p.dst[k] = static_cast<I>(c.dstStride[k]);
  }
  p.srcOffset = static_cast<I>(c.srcOffset);
  p.dstOffset = static_cast<I>(c.dstOffset);
  return p;
}

// Every offset the views reach lies in [offset - Σ|negative reach|, offset + Σ positive reach]:
// if all of those and the count fit in int32, 32-bit arithmetic cannot overflow.
static bool fits32(const CopyParams& c) {
  const long long lim = 2147483647LL;
  if (c.count > 2000000000LL) return false;  // headroom for the grid-stride step past the end
  long long sHi = c.srcOffset, sLo = c.srcOffset, dHi = c.dstOffset, dLo = c.dstOffset;
  for (int k = 0; k < c.rank; k++) {
    const long long rs = (c.shape[k] - 1) * c.srcStride[k], rd = (c.shape[k] - 1) * c.dstStride[k];
    (rs < 0 ? sLo : sHi) += rs;
    (rd < 0 ? dLo : dHi) += rd;
    if (c.shape[k] > lim || c.srcStride[k] > lim || c.srcStride[k] < -lim || c.dstStride[k] > lim || c.dstStride[k] < -lim)
      return false;
  }
  return sHi <= lim && dHi <= lim && sLo >= -lim && dLo >= -lim;
}

// A copy whose last dim is contiguous on both sides, in whole 16-byte units at 16-byte aligned
// addresses (attention's head transposes: rows of 64 bf16), runs over those units instead: one
// 16-byte load and store per thread, and an eighth of the index arithmetic for bf16.
static bool asVectors(const CopyParams& c, int elemBytes, const void* src, const void* dst, CopyParams& v) {
  const int last = c.rank - 1;
  if (last < 0 || elemBytes >= 16 || 16 % elemBytes != 0 || c.srcStride[last] != 1 || c.dstStride[last] != 1) return false;
  const long long per = 16 / elemBytes;
  if (reinterpret_cast<uintptr_t>(src) % 16 || reinterpret_cast<uintptr_t>(dst) % 16) return false;
  if (c.shape[last] % per || c.srcOffset % per || c.dstOffset % per) return false;
  for (int k = 0; k < last; k++) if (c.srcStride[k] % per || c.dstStride[k] % per) return false;
  v = c;
  v.count /= per;
  v.shape[last] /= per;
  for (int k = 0; k < last; k++) { v.srcStride[k] /= per; v.dstStride[k] /= per; }
  v.srcOffset /= per;
  v.dstOffset /= per;
  return true;
}

template <typename T> static void launchCopy(const Launch& l, const void* src, void* dst, const CopyParams& c) {
  const T* s = static_cast<const T*>(src);
  T* d = static_cast<T*>(dst);
  if (fits32(c)) copyKernel<T, int><<<gridFor(l, c.count), kThreads, 0, l.stream>>>(s, d, narrow<int>(c));
  else copyKernel<T, long long><<<gridFor(l, c.count), kThreads, 0, l.stream>>>(s, d, narrow<long long>(c));
}

cudaError_t copy(const Launch& l, int elemBytes, const void* src, void* dst, const CopyParams& c) {
  if (c.count <= 0) return cudaSuccess;
  if (c.rank < 0 || c.rank > kMaxRank) return cudaErrorInvalidValue;
  CopyParams v;
  if (asVectors(c, elemBytes, src, dst, v)) launchCopy<uint4>(l, src, dst, v);
  else MINISEQ_DISPATCH_BYTES(elemBytes, T, { launchCopy<T>(l, src, dst, c); });
  return cudaGetLastError();
}

}  // namespace miniseq
