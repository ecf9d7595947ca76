// See cross-entropy.h. The reference's arithmetic (float64 per row, stable around the row's max,
// one rounding to float32 per output), with the exps in eight float64 lanes (vexp.h): the sums
// differ from the reference's in order only.
#include "cross-entropy.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "vexp.h"

namespace miniseq_cpu {
namespace {

/** log Σ_j exp(x_j) of one row; `scratch` holds V floats for the exps. */
double rowLse(const float* x, int V, float* scratch) {
  const double m = vmax(x, V);
  if (m == -std::numeric_limits<double>::infinity()) return m;
  return m + std::log(vexpAffine(x, scratch, V, 1, m));
}

}  // namespace

void crossEntropy(const float* x, const int32_t* t, float* nll, int N, int V, int ignore) {
  thread_local std::vector<float> scratch;
  scratch.resize(V);
  for (int i = 0; i < N; i++) {
    const float* row = x + static_cast<int64_t>(i) * V;
    nll[i] = t[i] == ignore ? 0.0f : static_cast<float>(rowLse(row, V, scratch.data()) - row[t[i]]);
  }
}

void crossEntropyVjp(const float* x, const int32_t* t, const float* g, float* dx, int N, int V, int ignore) {
  for (int i = 0; i < N; i++) {
    const int64_t base = static_cast<int64_t>(i) * V;
    if (t[i] == ignore) {
      std::memset(dx + base, 0, sizeof(float) * V);
      continue;
    }
    const double lse = rowLse(x + base, V, dx + base);  // dx's row as the scratch, overwritten next
    const double gi = g[i];
    vexpAffineTimes(x + base, dx + base, V, 1, lse, gi);
    dx[base + t[i]] = static_cast<float>(dx[base + t[i]] - gi);
  }
}

}  // namespace miniseq_cpu
