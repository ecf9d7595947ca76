// Index kernels: gather / scatterAdd (rows of a table) and takeAlong / putAlong (one element per
// row). An index outside its bound is recorded in the ErrorRecord (the next read rejects with
// it) and the element it would have moved is skipped: gather and takeAlong write 0 there.
//
// scatterAdd is deterministic without atomics: one thread per column walks the indices in order
// 0, 1, 2, …, so every output element is the same sequence of rounded additions as in the CPU
// backend (bitwise equal in every dtype). Its parallelism is the row width, which is plenty for
// embedding-sized rows and slow for very narrow ones. The walk goes kScatterBatch indices at a
// time: their rows are loaded together and stored together (one memory round trip per batch,
// not per index), and an index repeating a row earlier in its batch adds into that row's slot.
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

constexpr int kScatterBatch = 16;

template <typename T>
__device__ __forceinline__ T addRounded(T a, T b) {  // one addition, rounded to T as the CPU does
  if constexpr (isInt<T>) return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
  else return convert<T>(convert<Compute<T>>(a) + convert<Compute<T>>(b));
}

// Every loop over a batch is unrolled with constant indices (the slot is matched, never used as
// an index), so the batch stays in registers.
template <typename T>
__global__ void scatterAddKernel(const int32_t* __restrict__ idx, long long n, const T* __restrict__ src, T* __restrict__ out,
                                 long long rows, long long width, ErrorRecord* errors) {
  MINISEQ_GRID_STRIDE(j, width) {
    for (long long i0 = 0; i0 < n; i0 += kScatterBatch) {
      const long long count = n - i0 < kScatterBatch ? n - i0 : kScatterBatch;
      int32_t row[kScatterBatch];  // -1: outside the table, skipped
      int slot[kScatterBatch];     // the first index of this batch with the same row
      T acc[kScatterBatch];
#pragma unroll
      for (int b = 0; b < kScatterBatch; b++) {
        if (b < count) {
          const int32_t r = idx[i0 + b];
          const bool ok = r >= 0 && r < rows;
          if (!ok && j == 0) reportIndex(errors, K_SCATTER_ADD, i0 + b, r, rows);
          row[b] = ok ? r : -1;
          slot[b] = b;
#pragma unroll
          for (int e = b - 1; e >= 0; e--) if (row[e] == row[b]) slot[b] = e;
          if (ok && slot[b] == b) acc[b] = out[static_cast<long long>(r) * width + j];
        }
      }
#pragma unroll
      for (int b = 0; b < kScatterBatch; b++) {
        if (b < count && row[b] >= 0) {
          const T v = src[(i0 + b) * width + j];
#pragma unroll
          for (int e = 0; e <= b; e++) if (e == slot[b]) acc[e] = addRounded(acc[e], v);
        }
      }
#pragma unroll
      for (int b = 0; b < kScatterBatch; b++) {
        if (b < count && row[b] >= 0 && slot[b] == b) out[static_cast<long long>(row[b]) * width + j] = acc[b];
      }
    }
  }
}

cudaError_t scatterAdd(const Launch& l, DType dtype, const int32_t* idx, long long n, const void* src, void* out,
                       long long rows, long long width) {
  if (n * width <= 0) return cudaSuccess;
  MINISEQ_DISPATCH(dtype, T, {
    scatterAddKernel<T><<<gridFor(l, width, 128), 128, 0, l.stream>>>(idx, n, static_cast<const T*>(src), static_cast<T*>(out),
                                                                       rows, width, l.errors);
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
