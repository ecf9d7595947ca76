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
// The compute (accumulator) type's bytes: float32 for float32 and bfloat16, float64 for float64.
inline int computeBytes(DType d) { return d == F64 ? 8 : 4; }

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
enum KernelId : int { K_NONE = 0, K_GATHER = 1, K_SCATTER_ADD = 2, K_TAKE_ALONG = 3, K_PUT_ALONG = 4, K_CROSS_ENTROPY = 5 };

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
// Seeded normals · std from a counter-based generator (src/core/random.ts counterNormals is the
// same stream on the host): element i depends only on key and i.
cudaError_t randomNormal(const Launch&, DType, void* out, long long n, uint32_t key, double std);
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
// Σ x² in float32 of x viewed as [rows, cols], bit for bit the unfused sum(square(cast(x, f32)))
// over the rows, then the columns (colSums: cols float32 when rows > 1; scratch:
// sumOfSquaresScratch() float64 elements).
long long sumOfSquaresScratch(const Launch&, long long rows, long long cols);
cudaError_t sumOfSquares(const Launch&, DType, const void* x, float* out, long long rows, long long cols, float* colSums,
                         double* scratch);

// Index kernels. `idx` is int32; rows/width bound the indices.
cudaError_t gather(const Launch&, int elemBytes, const void* table, long long rows, const int32_t* idx,
                   long long n, void* out, long long width);
// out must be zeroed by the caller. The (row, index) pairs are sorted in `scratch`
// (scatterAddScratch(n) bytes), so the sums are deterministic and added in the CPU backend's order.
long long scatterAddScratch(long long n);
cudaError_t scatterAdd(const Launch&, DType, const int32_t* idx, long long n, const void* src, void* out,
                       long long rows, long long width, void* scratch);
cudaError_t takeAlong(const Launch&, int elemBytes, const void* x, const int32_t* idx, long long n, void* out,
                      long long width);
// out must be zeroed by the caller.
cudaError_t putAlong(const Launch&, int elemBytes, const int32_t* idx, long long n, const void* src, void* out,
                     long long width);

// ---------------------------------------------------------------------------------------------
// Fused routines (src/core/routines): each equals its routine's reference body, computed in
// float32 for float32 and bfloat16 (float64 for float64) and rounded once on store. Operands
// of one call share a dtype; the TypeScript side casts a cotangent to it first, as the
// reference body does.
// ---------------------------------------------------------------------------------------------

// softmax.cu: one block per row of `v` logits; pass 1 is the row's running max and Σ exp(x − max)
// (a warp-shuffle then shared-memory reduction, in a fixed order), pass 2 writes.
// crossEntropy: nll[i] = logsumexp(x[i, :]) − x[i, t[i]], 0 where t[i] == ignore. A target
// outside [0, v) is recorded (K_CROSS_ENTROPY) and gives NaN.
cudaError_t crossEntropy(const Launch&, DType, const void* logits, const int32_t* targets, long long n, long long v,
                         long long ignore, void* nll);
// dlogits[i, :] = (softmax(x[i, :]) − onehot(t[i]))·dnll[i], a zero row where t[i] == ignore.
cudaError_t crossEntropyBackward(const Launch&, DType, const void* logits, const int32_t* targets, const void* dnll,
                                 long long n, long long v, long long ignore, void* dlogits);
// lse[i] = log Σ_j exp(x[i, j]) (−∞ for an empty or all −∞ row); dx = exp(x − lse)·g.
cudaError_t logsumexp(const Launch&, DType, const void* x, long long rows, long long v, void* lse);
cudaError_t logsumexpBackward(const Launch&, DType, const void* x, const void* lse, const void* g, long long rows,
                              long long v, void* dx);

// activation.cu: silu(x) = x·σ(x), σ(x) = 1 / (exp(−x) + 1); dx = g·σ·(1 + x·(1 − σ)).
cudaError_t silu(const Launch&, DType, const void* x, void* y, long long n);
cudaError_t siluBackward(const Launch&, DType, const void* x, const void* g, void* dx, long long n);
// y = silu(a)·b (SwiGLU's product); da = g·b·σ(a)·(1 + a·(1 − σ(a))), db = g·silu(a).
cudaError_t siluMul(const Launch&, DType, const void* a, const void* b, void* y, long long n);
cudaError_t siluMulBackward(const Launch&, DType, const void* a, const void* b, const void* g, void* da, void* db, long long n);

// norm.cu: y = (x·inv rounded)·w per row of [rows, d], inv = 1/√(mean(x²) + eps); the backward
// writes dx and dw (summed over rows, deterministically) and needs rmsNormScratch() bytes.
cudaError_t rmsNorm(const Launch&, DType, const void* x, const void* w, void* y, long long rows, long long d, double eps);
long long rmsNormScratch(const Launch&, DType, long long rows, long long d);
cudaError_t rmsNormBackward(const Launch&, DType, const void* x, const void* w, const void* g, void* dx, void* dw, long long rows,
                            long long d, double eps, void* scratch);

// rope.cu: rotary position embedding (rotate-half layout) of x [rows, s, d], d even, at
// positions offset..offset+s−1; inverse rotates by −angle (RoPE's VJP). y may alias x.
// frequencies: null for θ^(−2i/D), or d/2 of them (a scaled RoPE), at most kRopeMaxPairs.
constexpr long long kRopeMaxPairs = 128;
cudaError_t rope(const Launch&, DType, const void* x, void* y, long long rows, long long s, long long d, double theta, double offset,
                 bool inverse, const double* frequencies = nullptr);

// optimizer.cu: one parameter's AdamW step, in place. param and master (fp32, may be null) are
// the weights; the scalars lr, 1 − β₁ᵗ, 1 − β₂ᵗ and the clipping factor are device floats.
// float32 or bfloat16 storage for param, grad and the moments m, v.
cudaError_t adamw(const Launch&, DType paramType, DType gradType, DType stateType, void* param, const void* grad, void* m, void* v,
                  float* master, const float* lr, const float* correction1, const float* correction2, const float* clip, double beta1,
                  double beta2, double eps, double decay, long long n);

// attention.cu, attention_backward.cu: causal flash attention with grouped-query heads.
// q, o [b, h, s, d]; k, v [b, hkv, s, d] (h a multiple of hkv); lse and dLse [b, h, s] in the
// compute type (float for bfloat16 too, computeBytes); d ≤ 256; scale 1/√d. Backward needs attentionScratch() bytes of `scratch` (the rows' Σ dO·O − dLse);
// dLse may be null. dk and dv sum the query heads that share a kv head, without atomics.
constexpr long long kAttentionMaxHeadDim = 256;
cudaError_t attentionForward(const Launch&, DType, const void* q, const void* k, const void* v, void* o, void* lse,
                             long long b, long long h, long long hkv, long long s, long long d);
// For bf16 at d = 64 or 128 (where the Hopper backward may run) the per-row part is its padded
// row stats, 2·b·h·(s rounded up to 64)·4 bytes; d matters only for the fused Hopper backward
// (MINISEQ_ATTN_WGMMA_BWD's bit 8), whose fp32 dQ sum adds b·h·(s rounded up to 64)·d·4 bytes.
long long attentionScratch(DType, long long b, long long h, long long s, long long d);
cudaError_t attentionBackward(const Launch&, DType, const void* q, const void* k, const void* v, const void* o,
                              const void* lse, const void* dO, const void* dLse, void* dq, void* dk, void* dv,
                              long long b, long long h, long long hkv, long long s, long long d, void* scratch);

}  // namespace miniseq
