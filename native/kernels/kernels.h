// The launch API of miniseq's CUDA kernels: plain host functions that enqueue one kernel (or a
// short sequence) on a stream and return the launch status. The addon (native/src) validates
// every argument before it calls these; the kernels trust what they are given, except indices,
// which are data and are checked on the device (see ErrorRecord).
//
// Semantics follow the CPU reference backend (src/backends/cpu/cpu-backend.ts) exactly where
// the hardware allows; each family's .cu file says where and why it differs.
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

namespace miniseq {

// The codes the TypeScript side uses for src/core/dtype.ts's DType.
enum DType : int { F32 = 0, F64 = 1, I32 = 2, BF16 = 3 };

inline int elementBytes(DType d) { return d == F64 ? 8 : d == BF16 ? 2 : 4; }

// Kernels that read indices record the first out-of-range one here instead of touching memory
// they must not. The record lives in device memory and is read back (and cleared) with the next
// `read`, which then rejects naming the kernel, the index and its position.
struct ErrorRecord {
  int code;      // 0: no error; 1: index out of range
  int kernel;    // a KernelId
  long long position;
  long long value;
  long long bound;
};
enum KernelId : int { K_NONE = 0, K_GATHER = 1, K_SCATTER_ADD = 2, K_TAKE_ALONG = 3, K_PUT_ALONG = 4 };

struct Launch {
  cudaStream_t stream;
  int smCount;           // multiprocessors: sizes grids and reduction splits
  ErrorRecord* errors;   // device pointer
};

enum UnaryOp : int { U_NEG = 0, U_EXP, U_LOG, U_SQRT, U_RECIP, U_SIN, U_COS };
enum BinaryOp : int { B_ADD = 0, B_SUB, B_MUL, B_DIV, B_MAXIMUM, B_LESS, B_EQUAL };
enum ReduceOp : int { R_SUM = 0, R_MAX };

constexpr int kMaxRank = 8;

// dst[doff + Σ i_k·dstStride_k] = src[soff + Σ i_k·srcStride_k] for every index i of `shape`.
struct CopyParams {
  int rank;
  long long count;  // Π shape
  long long shape[kMaxRank];
  long long srcStride[kMaxRank];
  long long dstStride[kMaxRank];
  long long srcOffset;
  long long dstOffset;
};

cudaError_t fill(const Launch&, DType, void* out, long long n, double value);
// out viewed as [outer, len, inner] holds the middle index.
cudaError_t iota(const Launch&, DType, void* out, long long outer, long long len, long long inner);
cudaError_t unary(const Launch&, UnaryOp, DType, const void* x, void* out, long long n);
// a and b have dtype `in`, out has `out` (equal unless op is less/equal); a scalar operand
// (size 1) is seen by every element.
cudaError_t binary(const Launch&, BinaryOp, DType in, DType out, const void* a, bool aScalar,
                   const void* b, bool bScalar, void* o, long long n);
cudaError_t where(const Launch&, DType cond, DType value, const void* c, bool cScalar, const void* a,
                  bool aScalar, const void* b, bool bScalar, void* o, long long n);
cudaError_t cast(const Launch&, DType from, DType to, const void* x, void* out, long long n);
cudaError_t copy(const Launch&, int elemBytes, const void* src, void* dst, const CopyParams&);

// Reductions over the middle axis of [outer, axis, inner]. Long axes with few outputs are split
// across blocks into float64 partials (`scratch`, reduceScratch() elements), then combined in a
// fixed order: the result does not depend on timing.
long long reduceScratch(const Launch&, long long outer, long long axis, long long inner);
cudaError_t reduce(const Launch&, ReduceOp, DType, const void* x, void* out, long long outer,
                   long long axis, long long inner, double* scratch);

// Index kernels. `idx` is int32; rows/width bound the indices.
cudaError_t gather(const Launch&, int elemBytes, const void* table, long long rows, const int32_t* idx,
                   long long n, void* out, long long width);
// out must be zeroed by the caller; one thread per column walks the indices in order, so the
// sums are deterministic and added in the CPU backend's order.
cudaError_t scatterAdd(const Launch&, DType, const int32_t* idx, long long n, const void* src, void* out,
                       long long rows, long long width);
cudaError_t takeAlong(const Launch&, int elemBytes, const void* x, const int32_t* idx, long long n, void* out,
                      long long width);
// out must be zeroed by the caller.
cudaError_t putAlong(const Launch&, int elemBytes, const int32_t* idx, long long n, const void* src, void* out,
                     long long width);

}  // namespace miniseq
