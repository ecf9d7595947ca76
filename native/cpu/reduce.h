// The CPU addon's float32 sum for cpu-fast: the reference's arithmetic (elementwise.ts's
// reduceSumF32), bitwise: every output is the same float64 sum in the same order, rounded once.
#pragma once
#include <cstdint>

namespace miniseq_cpu {

/** o[r, j] = Σ_a x[r, a, j] over x viewed as [outer, axis, inner], in float64, a ascending. */
void reduceSum(const float* x, float* o, int64_t outer, int64_t axis, int64_t inner);

}  // namespace miniseq_cpu
