// Packed, register-blocked float32 GEMM (see sgemm.h). The loops are the Goto/BLIS ones: for
// each NC-column block of B and KC-deep slice of k, pack B into NR-wide panels; for each MC-row
// block of A, pack A into MR-tall panels; then an MR × NR micro-kernel keeps its C tile in
// registers across the KC slice. Each thread packs into its own (thread_local) scratch.
//
// Every C element is the same sequence of fused multiply-adds whatever rows or columns the call
// covers (edge tiles run the full kernel on zero-padded panels), so splitting one product into
// row or column blocks over threads gives bitwise the result of one call.
#include "sgemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define MINISEQ_X86 1
#endif

namespace miniseq_cpu {
namespace {

constexpr int KC = 256;
constexpr int MC = 192;   // a multiple of both MRs (12, 6)
constexpr int NC = 1024;  // a multiple of both NRs (32, 16)

struct Scratch {
  float* a = nullptr;
  float* b = nullptr;
  Scratch() {
    a = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * MC * KC));
    b = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * KC * NC));
  }
  ~Scratch() {
    std::free(a);
    std::free(b);
  }
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

/** Packs rows [0, mc) × depth [0, kc) of A into MR-tall panels: panel r holds ap[p·MR + i]; short rows are zero. */
template <int MR>
void packA(const float* A, int64_t rsA, int64_t csA, int mc, int kc, float* ap) {
  for (int r = 0; r < mc; r += MR, ap += MR * kc) {
    const int rows = std::min(MR, mc - r);
    if (csA == 1) {
      for (int i = 0; i < rows; i++) {
        const float* a = A + (r + i) * rsA;
        for (int p = 0; p < kc; p++) ap[p * MR + i] = a[p];
      }
    } else {
      for (int p = 0; p < kc; p++) {
        const float* a = A + r * rsA + p * csA;
        for (int i = 0; i < rows; i++) ap[p * MR + i] = a[i * rsA];
      }
    }
    for (int i = rows; i < MR; i++)
      for (int p = 0; p < kc; p++) ap[p * MR + i] = 0.0f;
  }
}

/** Packs depth [0, kc) × columns [0, nc) of B into NR-wide panels: panel c holds bp[p·NR + j]; short columns are zero. */
template <int NR>
void packB(const float* B, int64_t rsB, int64_t csB, int kc, int nc, float* bp) {
  for (int c = 0; c < nc; c += NR, bp += NR * kc) {
    const int cols = std::min(NR, nc - c);
    if (csB == 1) {
      for (int p = 0; p < kc; p++) {
        const float* b = B + p * rsB + c;
        float* d = bp + p * NR;
        std::memcpy(d, b, sizeof(float) * cols);
        for (int j = cols; j < NR; j++) d[j] = 0.0f;
      }
    } else {
      for (int j = 0; j < cols; j++) {
        const float* b = B + (c + j) * csB;
        for (int p = 0; p < kc; p++) bp[p * NR + j] = b[p * rsB];
      }
      for (int j = cols; j < NR; j++)
        for (int p = 0; p < kc; p++) bp[p * NR + j] = 0.0f;
    }
  }
}

#ifdef MINISEQ_X86
// C tile (MR × 32) += Σ_p a[p] ⊗ b[p]; starts from C when load, else from zero.
template <int MR>
__attribute__((target("avx512f"))) void kernel512(int kc, const float* ap, const float* bp, float* c, int64_t ldc,
                                                  bool load) {
  __m512 acc[MR][2];
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++) {
    acc[i][0] = load ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
    acc[i][1] = load ? _mm512_loadu_ps(c + i * ldc + 16) : _mm512_setzero_ps();
  }
  for (int p = 0; p < kc; p++) {
    const __m512 b0 = _mm512_load_ps(bp + p * 32), b1 = _mm512_load_ps(bp + p * 32 + 16);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      const __m512 a = _mm512_set1_ps(ap[p * MR + i]);
      acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++) {
    _mm512_storeu_ps(c + i * ldc, acc[i][0]);
    _mm512_storeu_ps(c + i * ldc + 16, acc[i][1]);
  }
}

// C tile (MR × 16) with 256-bit registers.
template <int MR>
__attribute__((target("avx2,fma"))) void kernel256(int kc, const float* ap, const float* bp, float* c, int64_t ldc,
                                                   bool load) {
  __m256 acc[MR][2];
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++) {
    acc[i][0] = load ? _mm256_loadu_ps(c + i * ldc) : _mm256_setzero_ps();
    acc[i][1] = load ? _mm256_loadu_ps(c + i * ldc + 8) : _mm256_setzero_ps();
  }
  for (int p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_load_ps(bp + p * 16), b1 = _mm256_load_ps(bp + p * 16 + 8);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      const __m256 a = _mm256_broadcast_ss(ap + p * MR + i);
      acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++) {
    _mm256_storeu_ps(c + i * ldc, acc[i][0]);
    _mm256_storeu_ps(c + i * ldc + 8, acc[i][1]);
  }
}
#endif

using Kernel = void (*)(int, const float*, const float*, float*, int64_t, bool);

template <int MR, int NR>
void blocked(Kernel kernel, const float* A, int64_t rsA, int64_t csA, const float* B, int64_t rsB, int64_t csB,
             float* C, int64_t ldc, int m, int n, int k, bool accumulate) {
  Scratch& s = scratch();
  alignas(64) float tile[MR * NR];
  for (int jc = 0; jc < n; jc += NC) {
    const int nc = std::min(NC, n - jc);
    for (int pc = 0; pc < k; pc += KC) {
      const int kc = std::min(KC, k - pc);
      const bool load = accumulate || pc > 0;
      packB<NR>(B + pc * rsB + jc * csB, rsB, csB, kc, nc, s.b);
      for (int ic = 0; ic < m; ic += MC) {
        const int mc = std::min(MC, m - ic);
        packA<MR>(A + ic * rsA + pc * csA, rsA, csA, mc, kc, s.a);
        for (int jr = 0; jr < nc; jr += NR) {
          const int cols = std::min(NR, nc - jr);
          const float* bp = s.b + (jr / NR) * NR * kc;
          for (int ir = 0; ir < mc; ir += MR) {
            const int rows = std::min(MR, mc - ir);
            const float* ap = s.a + (ir / MR) * MR * kc;
            float* c = C + (ic + ir) * ldc + jc + jr;
            if (rows == MR && cols == NR) {
              kernel(kc, ap, bp, c, ldc, load);
              continue;
            }
            // An edge tile: the full kernel on a copy, then its valid part back.
            if (load)
              for (int i = 0; i < rows; i++) std::memcpy(tile + i * NR, c + i * ldc, sizeof(float) * cols);
            kernel(kc, ap, bp, tile, NR, load);
            for (int i = 0; i < rows; i++) std::memcpy(c + i * ldc, tile + i * NR, sizeof(float) * cols);
          }
        }
      }
    }
  }
}

enum class Isa { none, avx2, avx512 };

Isa detect() {
#ifdef MINISEQ_X86
  if (const char* forced = std::getenv("MINISEQ_CPU_SGEMM")) {
    if (std::strcmp(forced, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? Isa::avx2 : Isa::none;
    if (std::strcmp(forced, "none") == 0) return Isa::none;
  }
  if (__builtin_cpu_supports("avx512f")) return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::none;
}

const Isa isa = detect();

}  // namespace

void sgemmTile(int* rows, int* cols) {
  *rows = isa == Isa::avx512 ? 12 : isa == Isa::avx2 ? 6 : 1;
  *cols = isa == Isa::avx512 ? 32 : isa == Isa::avx2 ? 16 : 1;
}

const char* sgemmKernel() { return isa == Isa::avx512 ? "avx512" : isa == Isa::avx2 ? "avx2" : "none"; }

void sgemm(const float* A, int64_t rsA, int64_t csA, const float* B, int64_t rsB, int64_t csB, float* C,
           int64_t ldc, int m, int n, int k, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int i = 0; i < m; i++) std::memset(C + i * ldc, 0, sizeof(float) * n);
    return;
  }
#ifdef MINISEQ_X86
  if (isa == Isa::avx512) return blocked<12, 32>(kernel512<12>, A, rsA, csA, B, rsB, csB, C, ldc, m, n, k, accumulate);
  if (isa == Isa::avx2) return blocked<6, 16>(kernel256<6>, A, rsA, csA, B, rsB, csB, C, ldc, m, n, k, accumulate);
#endif
  // Portable: the same sums in p order, one element at a time (the JS side prefers WebAssembly here).
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      float s = accumulate ? C[i * ldc + j] : 0.0f;
      for (int p = 0; p < k; p++) s += A[i * rsA + p * csA] * B[p * rsB + j * csB];
      C[i * ldc + j] = s;
    }
}

}  // namespace miniseq_cpu
