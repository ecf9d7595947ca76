// The CPU addon's exp for cpu-fast (the kernel behind its exp and its attention's softmax).
#pragma once
#include <cstdint>

namespace miniseq_cpu {

/**
 * o[i] = float32(exp(float64(x[i])·scale − shift)) over n elements; returns Σ of the float64
 * values. The algorithm of cpu-fast's WebAssembly `expaffine` (kernels.wat.mjs), in eight float64
 * lanes: clamp to ±708, k = round(x·log2 e), r = x − k·ln 2 (in two parts), e^r by a Taylor
 * series to r¹¹, times 2^k built from k's bits. Needs AVX-512 (`vexpAvailable`).
 */
double vexpAffine(const float* x, float* o, int64_t n, double scale, double shift);

/** As vexpAffine, but o[i] = float32(exp(…) · mul), one rounding; the sum is still of the exps. */
double vexpAffineTimes(const float* x, float* o, int64_t n, double scale, double shift, double mul);

/** max_i x[i] (NaN if any is NaN; −∞ for n = 0). */
float vmax(const float* x, int64_t n);

bool vexpAvailable();

}  // namespace miniseq_cpu
