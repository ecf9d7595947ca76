// Index kernels: gather / scatterAdd (rows of a table) and takeAlong / putAlong (one element per
// row). An index outside its bound is recorded in the ErrorRecord (the next read rejects with
// it) and the element it would have moved is skipped: gather and takeAlong write 0 there.
//
// scatterAdd is deterministic without atomics and in the CPU backend's order: the (row, index)
// pairs are sorted (a bitonic sort in global memory, O(n log² n)), then one thread per (run of
// equal rows, column) adds its run's source rows in index order: per output element the same
// rounded additions as the CPU's walk over i = 0, 1, 2, … (bitwise equal in every dtype). The
// parallelism is (distinct rows) × width, so it scales with the sequence, unlike a walk over i.
#include "common.cuh"

namespace miniseq {

template <typename T>
__global__ void gatherKernel(const T* __restrict__ table, long long rows, const int32_t* __restrict__ idx, long long n,
                             T* __restrict__ out, long long width, ErrorRecord* errors) {
  MINISEQ_GRID_STRIDE(e, n * width) {
    const long long i = e / width, j = e - i * width;
    const int32_t r = idx[i];
    if (r < 0 || r >= rows) {
      if (j == 0) reportIndex(errors, K_GATHER, i, r, rows);
      out[e] = T(0);
    } else {
      out[e] = table[static_cast<long long>(r) * width + j];
    }
  }
}

cudaError_t gather(const Launch& l, int elemBytes, const void* table, long long rows, const int32_t* idx, long long n,
                   void* out, long long width) {
  if (n * width <= 0) return cudaSuccess;
  MINISEQ_DISPATCH_BYTES(elemBytes, T, {
    gatherKernel<T><<<gridFor(l, n * width), kThreads, 0, l.stream>>>(static_cast<const T*>(table), rows, idx, n,
                                                                       static_cast<T*>(out), width, l.errors);
  });
  return cudaGetLastError();
}

template <typename T>
__device__ __forceinline__ T addRounded(T a, T b) {  // one addition, rounded to T as the CPU does
  if constexpr (isInt<T>) return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
  else return convert<T>(convert<Compute<T>>(a) + convert<Compute<T>>(b));
}

// A pair is row << 32 | index; an index outside the table becomes kSkipped, which sorts last.
constexpr unsigned long long kSkipped = ~0ull;
__device__ __forceinline__ long long rowOf(unsigned long long key) { return static_cast<long long>(key >> 32); }

__global__ void scatterKeysKernel(const int32_t* __restrict__ idx, long long n, long long padded, long long rows,
                                  unsigned long long* __restrict__ keys, ErrorRecord* errors) {
  MINISEQ_GRID_STRIDE(i, padded) {
    unsigned long long key = kSkipped;
    if (i < n) {
      const int32_t r = idx[i];
      if (r < 0 || r >= rows) reportIndex(errors, K_SCATTER_ADD, i, r, rows);
      else key = (static_cast<unsigned long long>(r) << 32) | static_cast<unsigned long long>(i);
    }
    keys[i] = key;
  }
}

// One compare-exchange step of the bitonic sort (padded is a power of two).
__global__ void bitonicStepKernel(unsigned long long* __restrict__ keys, long long padded, long long j, long long k) {
  MINISEQ_GRID_STRIDE(i, padded) {
    const long long l = i ^ j;
    if (l > i) {
      const unsigned long long a = keys[i], b = keys[l];
      if ((a > b) == ((i & k) == 0)) { keys[i] = b; keys[l] = a; }
    }
  }
}

template <typename T>
__global__ void scatterRunsKernel(const unsigned long long* __restrict__ keys, long long n, const T* __restrict__ src, T* __restrict__ out,
                                  long long width) {
  MINISEQ_GRID_STRIDE(e, n * width) {
    const long long p = e / width, j = e - p * width;
    const unsigned long long key = keys[p];
    if (key == kSkipped || (p > 0 && rowOf(keys[p - 1]) == rowOf(key))) continue;  // not the start of a run
    const long long row = rowOf(key);
    T acc = out[row * width + j];
    for (long long q = p; q < n && keys[q] != kSkipped && rowOf(keys[q]) == row; q++)
      acc = addRounded(acc, src[static_cast<long long>(keys[q] & 0xffffffffull) * width + j]);
    out[row * width + j] = acc;
  }
}

static long long pow2AtLeast(long long n) { long long p = 1; while (p < n) p *= 2; return p; }

long long scatterAddScratch(long long n) { return n <= 0 ? 0 : pow2AtLeast(n) * static_cast<long long>(sizeof(unsigned long long)); }

cudaError_t scatterAdd(const Launch& l, DType dtype, const int32_t* idx, long long n, const void* src, void* out,
                       long long rows, long long width, void* scratch) {
  if (n * width <= 0) return cudaSuccess;
  const long long padded = pow2AtLeast(n);
  auto* keys = static_cast<unsigned long long*>(scratch);
  scatterKeysKernel<<<gridFor(l, padded), kThreads, 0, l.stream>>>(idx, n, padded, rows, keys, l.errors);
  for (long long k = 2; k <= padded; k *= 2)
    for (long long j = k / 2; j > 0; j /= 2) bitonicStepKernel<<<gridFor(l, padded), kThreads, 0, l.stream>>>(keys, padded, j, k);
  MINISEQ_DISPATCH(dtype, T, {
    scatterRunsKernel<T><<<gridFor(l, n * width), kThreads, 0, l.stream>>>(keys, n, static_cast<const T*>(src), static_cast<T*>(out), width);
  });
  return cudaGetLastError();
}

template <typename T>
__global__ void takeAlongKernel(const T* __restrict__ x, const int32_t* __restrict__ idx, long long n, T* __restrict__ out,
                                long long width, ErrorRecord* errors) {
  MINISEQ_GRID_STRIDE(i, n) {
    const int32_t c = idx[i];
    if (c < 0 || c >= width) {
      reportIndex(errors, K_TAKE_ALONG, i, c, width);
      out[i] = T(0);
    } else {
      out[i] = x[i * width + c];
    }
  }
}

cudaError_t takeAlong(const Launch& l, int elemBytes, const void* x, const int32_t* idx, long long n, void* out, long long width) {
  if (n <= 0) return cudaSuccess;
  MINISEQ_DISPATCH_BYTES(elemBytes, T, {
    takeAlongKernel<T><<<gridFor(l, n), kThreads, 0, l.stream>>>(static_cast<const T*>(x), idx, n, static_cast<T*>(out), width,
                                                                  l.errors);
  });
  return cudaGetLastError();
}

template <typename T>
__global__ void putAlongKernel(const int32_t* __restrict__ idx, long long n, const T* __restrict__ src, T* __restrict__ out,
                               long long width, ErrorRecord* errors) {
  MINISEQ_GRID_STRIDE(i, n) {
    const int32_t c = idx[i];
    if (c < 0 || c >= width) reportIndex(errors, K_PUT_ALONG, i, c, width);
    else out[i * width + c] = src[i];
  }
}

cudaError_t putAlong(const Launch& l, int elemBytes, const int32_t* idx, long long n, const void* src, void* out, long long width) {
  if (n <= 0) return cudaSuccess;
  MINISEQ_DISPATCH_BYTES(elemBytes, T, {
    putAlongKernel<T><<<gridFor(l, n), kThreads, 0, l.stream>>>(idx, n, static_cast<const T*>(src), static_cast<T*>(out), width,
                                                                 l.errors);
  });
  return cudaGetLastError();
}

}  // namespace miniseq
