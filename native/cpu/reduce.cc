// See reduce.h. Speed without reordering a sum: the float64 adds of different outputs are
// independent, so they run side by side (eight lanes of inner, or eight rows at once when inner
// is 1) while each output keeps its own order. No FMA can apply (only adds).
#include "reduce.h"

#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#pragma GCC target("avx512f")
#endif

namespace miniseq_cpu {

void reduceSum(const float* x, float* o, int64_t outer, int64_t axis, int64_t inner) {
  if (inner == 1) {
    constexpr int R = 8;  // rows summed side by side
    int64_t r = 0;
    for (; r + R <= outer; r += R) {
      double acc[R] = {0, 0, 0, 0, 0, 0, 0, 0};
      const float* base = x + r * axis;
      for (int64_t a = 0; a < axis; a++)
        for (int i = 0; i < R; i++) acc[i] += base[i * axis + a];
      for (int i = 0; i < R; i++) o[r + i] = static_cast<float>(acc[i]);
    }
    for (; r < outer; r++) {
      double acc = 0;
      for (int64_t a = 0; a < axis; a++) acc += x[r * axis + a];
      o[r] = static_cast<float>(acc);
    }
    return;
  }
  thread_local std::vector<double> acc;
  acc.resize(inner);
  for (int64_t r = 0; r < outer; r++) {
    double* s = acc.data();
    for (int64_t j = 0; j < inner; j++) s[j] = 0;
    for (int64_t a = 0; a < axis; a++) {
      const float* row = x + (r * axis + a) * inner;
      for (int64_t j = 0; j < inner; j++) s[j] += row[j];
    }
    for (int64_t j = 0; j < inner; j++) o[r * inner + j] = static_cast<float>(s[j]);
  }
}

}  // namespace miniseq_cpu
