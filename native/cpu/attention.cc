// See attention.h; the comments of attention-task.ts say why it is shaped this way (groups own
// their dK/dV rows, so threads never write the same element).
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <vector>

#include "sgemm.h"
#include "vexp.h"

// The softmax and dS loops in float64, vectorized by the compiler in 512-bit registers (the
// addon offers attention only where the CPU has AVX-512).
#if defined(__x86_64__) || defined(_M_X64)
#pragma GCC target("avx512f")
#endif

namespace miniseq_cpu {
namespace {

/** t (cols × rows) = x (rows × cols, row-major)ᵀ: K and V of a group, so the products that read them transposed read rows. */
void transpose(const float* x, float* t, int rows, int cols) {
  constexpr int B = 16;
  for (int i0 = 0; i0 < rows; i0 += B)
    for (int j0 = 0; j0 < cols; j0 += B)
      for (int i = i0; i < std::min(rows, i0 + B); i++)
        for (int j = j0; j < std::min(cols, j0 + B); j++) t[static_cast<int64_t>(j) * rows + i] = x[static_cast<int64_t>(i) * cols + j];
}

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
  // Kᵀ and Vᵀ of the group (D × S): Q·Kᵀ and dO·Vᵀ then pack B by rows, not by a strided gather
  // per query block and head.
  thread_local std::vector<float> kT, vT;
  kT.resize(static_cast<size_t>(S) * D);
  if (backward) vT.resize(static_cast<size_t>(S) * D);
  for (int64_t grp = w[7]; grp < w[8]; grp++) {
    const int64_t b = grp / Hkv, g = grp % Hkv;
    const int64_t ko = (b * Hkv + g) * S * D;  // element offset of this kv head's rows
    transpose(k + ko, kT.data(), S, D);
    if (backward) {
      transpose(v + ko, vT.data(), S, D);
      std::memset(dk + ko, 0, sizeof(float) * S * D);
      std::memset(dv + ko, 0, sizeof(float) * S * D);
    }
    for (int h = 0; h < H; h++) {
      if ((h * Hkv) / H != g) continue;
      const int64_t qo = (b * H + h) * S * D, lo = (b * H + h) * S;
      for (int i0 = 0; i0 < S; i0 += ROWS) {
        const int r = std::min(ROWS, S - i0), nk = causal ? i0 + r : S;
        const int64_t rows = qo + static_cast<int64_t>(i0) * D;  // the block's first query row
        // P = Q_block · Kᵀ[:, :nk] (Kᵀ's rows are S long).
        sgemm(q + rows, D, 1, kT.data(), S, 1, P, nk, r, nk, D, false);
        if (!backward) {
          for (int ii = 0; ii < r; ii++) {
            float* row = P + static_cast<int64_t>(ii) * nk;
            const int end = causal ? i0 + ii + 1 : S;
            // max_j (x_j · scale) = (max_j x_j) · scale: scale > 0, and rounding is monotonic.
            const double m = end == 0 ? -std::numeric_limits<double>::infinity() : vmax(row, end) * scale;
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
        sgemm(dOb, D, 1, vT.data(), S, 1, DP, nk, r, nk, D, false);  // dP = dO · Vᵀ[:, :nk]
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
