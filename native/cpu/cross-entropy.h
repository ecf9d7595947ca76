// The CPU addon's fused cross-entropy for cpu-fast: src/backends/cpu/fused.ts's kernels in C++.
#pragma once
#include <cstdint>

namespace miniseq_cpu {

/** nll[i] = logsumexp(x[i, :]) − x[i, t[i]] (0 where t[i] = ignore); x is N × V. */
void crossEntropy(const float* x, const int32_t* t, float* nll, int N, int V, int ignore);

/** dx[i, :] = (softmax(x[i, :]) − onehot(t[i]))·g[i] (0 rows where t[i] = ignore). */
void crossEntropyVjp(const float* x, const int32_t* t, const float* g, float* dx, int N, int V, int ignore);

}  // namespace miniseq_cpu
