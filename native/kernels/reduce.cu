// Sum and max over the middle axis of x viewed as [outer, axis, inner], into out [outer, inner].
//
// Every dtype accumulates in float64, as the CPU backend does: a reduction is bound by memory,
// so the wider adds cost nothing measurable, and a float32 sum then rounds once at the end, like
// the CPU backend's. Max propagates NaN (like Math.max); an empty axis gives 0 or -∞.
//
// Two shapes of kernel:
// - inner == 1 (a row per output, e.g. softmax's row sums): a block of 256 threads per row.
// - inner > 1: a block of 32 × 8 threads takes 32 neighbouring columns of one outer index; the
//   32 lanes read consecutive addresses, the 8 rows of threads split the axis.
// When that gives too few blocks to fill the GPU and the axis is long, the axis is cut into
// `splits` chunks whose float64 partials a second kernel combines in a fixed order, so results
// are reproducible run to run.
#include <algorithm>

#include "common.cuh"

namespace miniseq {

template <ReduceOp Op> __device__ __forceinline__ double initial() { return Op == R_SUM ? 0.0 : -INFINITY; }

template <ReduceOp Op> __device__ __forceinline__ double combine(double a, double b) {
  if constexpr (Op == R_SUM) return a + b;
  else {
    if (a != a) return a;
    if (b != b) return b;
    return b > a ? b : a;
  }
}

// All threads of the block pass their value; thread 0 gets the combination of all of them.
template <ReduceOp Op> __device__ double blockReduce(double v) {
  __shared__ double warps[32];
  for (int off = 16; off > 0; off >>= 1) v = combine<Op>(v, __shfl_down_sync(0xffffffffu, v, off));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warps[warp] = v;
  __syncthreads();
  const int nWarps = (blockDim.x + 31) >> 5;
  if (warp == 0) {
    v = lane < nWarps ? warps[lane] : initial<Op>();
    for (int off = 16; off > 0; off >>= 1) v = combine<Op>(v, __shfl_down_sync(0xffffffffu, v, off));
  }
  return v;
}

// An element as the reduction adds it: its value, or (Square: sumOfSquares) its square rounded
// to float32, as square(cast(x, float32)) computes it.
template <bool Square, typename T> __device__ __forceinline__ double element(T v) {
  if constexpr (Square) {
    const float f = convert<float>(v);
    return static_cast<double>(__fmul_rn(f, f));
  } else {
    return toDouble(v);
  }
}

template <ReduceOp Op, typename T, bool Square = false, typename O = T>
__global__ void rowReduce(const T* __restrict__ x, long long axis, long long chunk, int splits, O* __restrict__ out,
                          double* __restrict__ partial) {
  const long long row = blockIdx.x;
  const int s = blockIdx.y;
  const long long begin = s * chunk, end = min(axis, begin + chunk);
  const T* p = x + row * axis;
  double acc = initial<Op>();
  for (long long a = begin + threadIdx.x; a < end; a += blockDim.x) acc = combine<Op>(acc, element<Square>(p[a]));
  acc = blockReduce<Op>(acc);
  if (threadIdx.x == 0) {
    if (splits == 1) out[row] = convert<O>(acc);
    else partial[row * splits + s] = acc;
  }
}

template <ReduceOp Op, typename T>
__global__ void rowFinish(const double* __restrict__ partial, int splits, T* __restrict__ out) {
  const long long row = blockIdx.x;
  double acc = initial<Op>();
  for (int s = threadIdx.x; s < splits; s += blockDim.x) acc = combine<Op>(acc, partial[row * splits + s]);
  acc = blockReduce<Op>(acc);
  if (threadIdx.x == 0) out[row] = convert<T>(acc);
}

constexpr int kColX = 32, kColY = 8;

template <ReduceOp Op, typename T, bool Square = false, typename O = T>
__global__ void colReduce(const T* __restrict__ x, long long axis, long long inner, long long colBlocks, long long chunk,
                          int splits, O* __restrict__ out, double* __restrict__ partial) {
  const long long r = blockIdx.x / colBlocks, c = (blockIdx.x % colBlocks) * kColX + threadIdx.x;
  const int s = blockIdx.y;
  const long long begin = s * chunk, end = min(axis, begin + chunk);
  double acc = initial<Op>();
  if (c < inner)
    for (long long a = begin + threadIdx.y; a < end; a += kColY)
      acc = combine<Op>(acc, element<Square>(x[(r * axis + a) * inner + c]));
  __shared__ double rows[kColY][kColX + 1];
  rows[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < inner) {
    for (int y = 1; y < kColY; y++) acc = combine<Op>(acc, rows[y][threadIdx.x]);
    if (splits == 1) out[r * inner + c] = convert<O>(acc);
    else partial[(r * splits + s) * inner + c] = acc;
  }
}

template <ReduceOp Op, typename T>
__global__ void colFinish(const double* __restrict__ partial, long long outer, long long inner, int splits, T* __restrict__ out) {
  MINISEQ_GRID_STRIDE(i, outer * inner) {
    const long long r = i / inner, c = i % inner;
    double acc = initial<Op>();
    for (int s = 0; s < splits; s++) acc = combine<Op>(acc, partial[(r * splits + s) * inner + c]);
    out[i] = convert<T>(acc);
  }
}

struct Plan {
  bool rows;            // inner == 1
  long long colBlocks;  // blocks across inner (columns case)
  int splits;
  long long chunk;
};

static Plan plan(const Launch& l, long long outer, long long axis, long long inner) {
  Plan p{};
  p.rows = inner == 1;
  p.colBlocks = p.rows ? 1 : (inner + kColX - 1) / kColX;
  const long long blocks = p.rows ? outer : p.colBlocks * outer;
  const long long minChunk = p.rows ? 4096 : 512;  // elements each block should at least read
  const long long target = static_cast<long long>(l.smCount > 0 ? l.smCount : 132) * 4;
  long long splits = 1;
  if (blocks < target && axis > 2 * minChunk) {
    splits = (target + blocks - 1) / blocks;
    splits = std::min(splits, (axis + minChunk - 1) / minChunk);
    splits = std::min(splits, 1024LL);
  }
  p.splits = static_cast<int>(splits < 1 ? 1 : splits);
  p.chunk = (axis + p.splits - 1) / p.splits;
  return p;
}

long long reduceScratch(const Launch& l, long long outer, long long axis, long long inner) {
  const Plan p = plan(l, outer, axis, inner);
  return p.splits > 1 ? outer * inner * p.splits : 0;
}

template <ReduceOp Op, typename T, bool Square = false, typename O = T>
static void run(const Launch& l, const Plan& p, const T* x, O* out, long long outer, long long axis, long long inner,
                double* scratch) {
  if (p.rows) {
    const auto rows = rowReduce<Op, T, Square, O>;
    rows<<<dim3(static_cast<unsigned>(outer), p.splits), kThreads, 0, l.stream>>>(x, axis, p.chunk, p.splits, out, scratch);
    if (p.splits > 1) rowFinish<Op, O><<<static_cast<unsigned>(outer), kThreads, 0, l.stream>>>(scratch, p.splits, out);
  } else {
    const auto cols = colReduce<Op, T, Square, O>;
    cols<<<dim3(static_cast<unsigned>(p.colBlocks * outer), p.splits), dim3(kColX, kColY), 0, l.stream>>>(x, axis, inner, p.colBlocks,
                                                                                                       p.chunk, p.splits, out, scratch);
    if (p.splits > 1) colFinish<Op, O><<<gridFor(l, outer * inner), kThreads, 0, l.stream>>>(scratch, outer, inner, p.splits, out);
  }
}

cudaError_t reduce(const Launch& l, ReduceOp op, DType dtype, const void* x, void* out, long long outer, long long axis,
                   long long inner, double* scratch) {
  if (outer * inner <= 0) return cudaSuccess;
  const Plan p = plan(l, outer, axis, inner);
  if (p.splits > 1 && scratch == nullptr) return cudaErrorInvalidValue;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    const T* xs = static_cast<const T*>(x);
    T* o = static_cast<T*>(out);
    if (op == R_SUM) run<R_SUM, T>(l, p, xs, o, outer, axis, inner, scratch);
    else if (op == R_MAX) run<R_MAX, T>(l, p, xs, o, outer, axis, inner, scratch);
    else return cudaErrorInvalidValue;
  });
  return cudaGetLastError();
}

// The sum of squares of x viewed as [rows, cols] (rows = 1 for a vector) in float32, as the graph
// computes it unfused: sum(square(cast(x, float32))) one axis at a time, the rows first (into
// the float32 column sums `colSums`), then the columns. The same plans and the same order of
// float64 adds, so the result is that graph's bit for bit, from one read of x.
long long sumOfSquaresScratch(const Launch& l, long long rows, long long cols) {
  return std::max(rows > 1 ? reduceScratch(l, 1, rows, cols) : 0, reduceScratch(l, 1, cols, 1));
}

cudaError_t sumOfSquares(const Launch& l, DType dtype, const void* x, float* out, long long rows, long long cols, float* colSums,
                         double* scratch) {
  const Plan last = plan(l, 1, cols, 1);
  const Plan first = rows > 1 ? plan(l, 1, rows, cols) : last;
  if ((first.splits > 1 || last.splits > 1) && scratch == nullptr) return cudaErrorInvalidValue;
  if (rows > 1 && colSums == nullptr) return cudaErrorInvalidValue;
  MINISEQ_DISPATCH_FLOAT(dtype, T, {
    const T* xs = static_cast<const T*>(x);
    if (rows == 1) {
      run<R_SUM, T, true, float>(l, last, xs, out, 1, cols, 1, scratch);
    } else {
      run<R_SUM, T, true, float>(l, first, xs, colSums, 1, rows, cols, scratch);
      run<R_SUM, float>(l, last, colSums, out, 1, cols, 1, scratch);
    }
  });
  return cudaGetLastError();
}

}  // namespace miniseq
