// See vexp.h. Fused multiply-adds where the WebAssembly kernel multiplies then adds: at most one
// float64 rounding apart, so the float32 results agree with it (and with Math.exp) but for rare
// ties (test/cpu-native.test.ts measures how rare).
#include "vexp.h"

#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define MINISEQ_X86 1
#endif

namespace miniseq_cpu {
namespace {

#ifdef MINISEQ_X86
struct Constants {
  __m512d hi, lo, log2e, magic, ln2hi, ln2lo, c[12], scale, shift;
};

__attribute__((target("avx512f"))) inline __m512d exp8(__m512d x, const Constants& K) {
  // min/max with the constant first keep a NaN x (they return the second operand on NaN).
  x = _mm512_max_pd(K.lo, _mm512_min_pd(K.hi, x));
  const __m512d t = _mm512_fmadd_pd(x, K.log2e, K.magic);  // k in t's low mantissa bits
  const __m512d k = _mm512_sub_pd(t, K.magic);
  __m512d r = _mm512_fnmadd_pd(k, K.ln2hi, x);
  r = _mm512_fnmadd_pd(k, K.ln2lo, r);
  __m512d p = K.c[11];
  for (int i = 10; i >= 0; i--) p = _mm512_fmadd_pd(p, r, K.c[i]);
  const __m512i bits = _mm512_slli_epi64(_mm512_add_epi64(_mm512_castpd_si512(t), _mm512_set1_epi64(1023)), 52);
  return _mm512_mul_pd(p, _mm512_castsi512_pd(bits));
}

__attribute__((target("avx512f"))) double affine512(const float* x, float* o, int64_t n, double scale,
                                                    double shift, bool times, double mul) {
  const __m512d mulv = _mm512_set1_pd(mul);
#define out(e) _mm512_cvtpd_ps(times ? _mm512_mul_pd(e, mulv) : e)
  Constants K;
  K.hi = _mm512_set1_pd(708);
  K.lo = _mm512_set1_pd(-708);
  K.log2e = _mm512_set1_pd(1.4426950408889634);
  K.magic = _mm512_set1_pd(1.5 * 4503599627370496.0);
  K.ln2hi = _mm512_set1_pd(0.6931471803691238);
  K.ln2lo = _mm512_set1_pd(1.9082149292705877e-10);
  double f = 1;
  for (int i = 0; i < 12; i++) {
    if (i > 0) f *= i;
    K.c[i] = _mm512_set1_pd(1 / f);
  }
  const __m512d s = _mm512_set1_pd(scale), h = _mm512_set1_pd(shift);
  __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
  int64_t i = 0;
  // Two independent chains of eight the core can overlap.
  for (; i + 16 <= n; i += 16) {
    const __m512d a = _mm512_fmsub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), s, h);
    const __m512d b = _mm512_fmsub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)), s, h);
    const __m512d ea = exp8(a, K), eb = exp8(b, K);
    acc0 = _mm512_add_pd(acc0, ea);
    acc1 = _mm512_add_pd(acc1, eb);
    _mm256_storeu_ps(o + i, out(ea));
    _mm256_storeu_ps(o + i + 8, out(eb));
  }
  for (; i < n; i += 8) {
    const int left = n - i < 8 ? static_cast<int>(n - i) : 8;
    alignas(32) float in[8] = {0, 0, 0, 0, 0, 0, 0, 0}, last[8];
    std::memcpy(in, x + i, sizeof(float) * left);
    const __m512d e = exp8(_mm512_fmsub_pd(_mm512_cvtps_pd(_mm256_load_ps(in)), s, h), K);
    acc0 = _mm512_mask_add_pd(acc0, static_cast<__mmask8>((1u << left) - 1), acc0, e);
    _mm256_store_ps(last, out(e));
    std::memcpy(o + i, last, sizeof(float) * left);
  }
#undef out
  return _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
}

__attribute__((target("avx512f"))) float max512(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-__builtin_inff());
  __mmask16 nan = 0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    m = _mm512_max_ps(m, v);
  }
  float r = _mm512_reduce_max_ps(m);
  for (; i < n; i++) {
    if (x[i] != x[i]) nan = 1;
    r = x[i] > r ? x[i] : r;
  }
  return nan ? __builtin_nanf("") : r;
}
#endif

}  // namespace

bool vexpAvailable() {
#ifdef MINISEQ_X86
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

double vexpAffine(const float* x, float* o, int64_t n, double scale, double shift) {
#ifdef MINISEQ_X86
  return affine512(x, o, n, scale, shift, false, 1);
#else
  return 0;
#endif
}

double vexpAffineTimes(const float* x, float* o, int64_t n, double scale, double shift, double mul) {
#ifdef MINISEQ_X86
  return affine512(x, o, n, scale, shift, true, mul);
#else
  return 0;
#endif
}

float vmax(const float* x, int64_t n) {
#ifdef MINISEQ_X86
  return max512(x, n);
#else
  return 0;
#endif
}

}  // namespace miniseq_cpu
