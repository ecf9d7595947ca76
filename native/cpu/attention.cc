// See attention.h; the comments of attention-task.ts say why it is shaped this way (groups own
// their dK/dV rows, so threads never write the same element).
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "sgemm.h"
#include "vexp.h"

namespace miniseq_cpu {
namespace {

// C (+)= op(A)·op(B): A m × k, B k × n, C m × n (row-major, C's stride n), element pointers.
void mm(const float* a, const float* b, float* c, int m, int n, int k, bool tA, bool tB, bool acc) {
  sgemm(a, tA ? 1 : k, tA ? m : 1, b, tB ? 1 : n, tB ? k : 1, c, n, m, n, k, acc);
}

}  // namespace

void attentionTask(char* base, const int64_t* w) {
  const int H = static_cast<int>(w[2]), Hkv = static_cast<int>(w[3]), S = static_cast<int>(w[4]),
            D = static_cast<int>(w[5]);
  const bool causal = w[6] != 0, backward = w[0] != 0;
  auto at = [base](int64_t bytes) { return reinterpret_cast<float*>(base + bytes); };
  float *q = at(w[9]), *k = at(w[10]), *v = at(w[11]), *o = at(w[12]), *lse = at(w[13]);
  float *dO = w[14] == 0 ? nullptr : at(w[14]), *dLse = w[15] == 0 ? nullptr : at(w[15]);
  float *dq = at(w[16]), *dk = at(w[17]), *dv = at(w[18]);
  float *P = at(w[19]), *DP = at(w[20]), *zeros = at(w[21]);
  const double scale = 1 / std::sqrt(static_cast<double>(D));
  constexpr int ROWS = 64;
  for (int64_t grp = w[7]; grp < w[8]; grp++) {
    const int64_t b = grp / Hkv, g = grp % Hkv;
    const int64_t ko = (b * Hkv + g) * S * D;  // element offset of this kv head's rows
    if (backward) {
      std::memset(dk + ko, 0, sizeof(float) * S * D);
      std::memset(dv + ko, 0, sizeof(float) * S * D);
    }
    for (int h = 0; h < H; h++) {
      if ((h * Hkv) / H != g) continue;
      const int64_t qo = (b * H + h) * S * D, lo = (b * H + h) * S;
      for (int i0 = 0; i0 < S; i0 += ROWS) {
        const int r = std::min(ROWS, S - i0), nk = causal ? i0 + r : S;
        const int64_t rows = qo + static_cast<int64_t>(i0) * D;  // the block's first query row
        mm(q + rows, k + ko, P, r, nk, D, false, true, false);
        if (!backward) {
          for (int ii = 0; ii < r; ii++) {
            float* row = P + static_cast<int64_t>(ii) * nk;
            const int end = causal ? i0 + ii + 1 : S;
            double m = -std::numeric_limits<double>::infinity();
            for (int j = 0; j < end; j++) {
              const double s = row[j] * scale;
              m = std::isnan(s) || std::isnan(m) ? std::numeric_limits<double>::quiet_NaN() : std::max(m, s);
            }
            const double l = vexpAffine(row, row, end, scale, m);  // e = exp(s·x − m) in place
            for (int j = 0; j < end; j++) row[j] = static_cast<float>(row[j] / l);
            std::fill(row + end, row + nk, 0.0f);
            lse[lo + i0 + ii] = static_cast<float>(m + std::log(l));
          }
          mm(P, v + ko, o + rows, r, D, nk, false, false, false);
          continue;
        }
        for (int ii = 0; ii < r; ii++) {
          float* row = P + static_cast<int64_t>(ii) * nk;
          const int end = causal ? i0 + ii + 1 : S;
          vexpAffine(row, row, end, scale, lse[lo + i0 + ii]);
          std::fill(row + end, row + nk, 0.0f);
        }
        const float* dOb = dO == nullptr ? zeros : dO + rows;
        mm(P, dOb, dv + ko, nk, D, r, true, false, true);
        mm(dOb, v + ko, DP, r, nk, D, false, true, false);
        for (int ii = 0; ii < r; ii++) {
          const int i = i0 + ii;
          double delta = dLse == nullptr ? 0 : -static_cast<double>(dLse[lo + i]);
          const float *dOrow = dOb + static_cast<int64_t>(ii) * D, *orow = o + qo + static_cast<int64_t>(i) * D;
          for (int d = 0; d < D; d++) delta += static_cast<double>(dOrow[d]) * orow[d];
          const int64_t row = static_cast<int64_t>(ii) * nk;
          for (int j = 0; j < nk; j++) DP[row + j] = static_cast<float>(P[row + j] * (DP[row + j] - delta) * scale);
        }
        mm(DP, k + ko, dq + rows, r, D, nk, false, false, false);
        mm(DP, q + rows, dk + ko, nk, D, r, true, false, true);
      }
    }
  }
}

}  // namespace miniseq_cpu
