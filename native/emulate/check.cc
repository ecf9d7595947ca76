// Checks the fused-routine kernels, run on the CPU through host.h, against float64 references
// (scripts/cuda-emulate.sh builds and runs it). `check all` (default): cross-entropy, logsumexp,
// SiLU and attention in float32, bfloat16 and float64 over the shapes test/cuda.test.ts uses;
// `check race`: a few small cases, for ThreadSanitizer. Tolerances as in test/cuda.test.ts.
#include "kernels.h"
#include "attention.cuh"
#include <cuda_bf16.h>
#include <cstdio>
#include <cmath>
#include <random>
#include <vector>
#include <string>
#include <algorithm>
using namespace miniseq;

extern "C" cudaError_t emu_cudaGetLastError() { return cudaSuccess; }
extern "C" cudaError_t emu_cudaFuncSetAttribute(const void*, enum cudaFuncAttribute, int) { return cudaSuccess; }

// The Hopper kernels (sm_90a: wgmma, TMA) are not emulated: never available here, so the
// dispatch takes the mma.sync and SIMT kernels; the switches read as their defaults would
// (a backward variant that is not 0, so attentionScratch sizes the Hopper row stats).
namespace miniseq { namespace attn { namespace hopper {
bool forwardAvailable(long long, long long, long long, long long, std::initializer_list<const void*>) { return false; }
int forwardVariant() { return 5; }
int backwardVariant(long long) { return 7; }
long long fusedDqAccumBytes(long long B, long long H, long long S, long long D) { return B * H * ((S + 63) / 64 * 64) * D * 4; }
cudaError_t forward(const Launch&, const bf16*, const bf16*, const bf16*, bf16*, float*, long long, long long, long long, long long, long long, int) { return cudaErrorNotSupported; }
cudaError_t backward(const Launch&, const bf16*, const bf16*, const bf16*, const bf16*, const float*, bf16*, bf16*, bf16*, long long, long long, long long, long long, long long, int, float*) { return cudaErrorNotSupported; }
}}}

static ErrorRecord record{};
static Launch L{nullptr, 132, &record};
static int failures = 0;

static std::vector<double> randn(size_t n, unsigned seed, double scale = 1) {
  std::mt19937 g(seed); std::normal_distribution<double> d(0, scale);
  std::vector<double> v(n); for (auto& x : v) x = d(g); return v;
}
static float bf(double x) { return __bfloat162float(__float2bfloat16_rn(static_cast<float>(x))); }

// A device-side buffer in dtype dt, exactly sized (ASan sees overruns).
struct Buf {
  DType dt; size_t n; void* p;
  Buf(DType d, size_t n_) : dt(d), n(n_) { p = malloc(std::max<size_t>(1, n * elementBytes(d))); memset(p, 0xFF, std::max<size_t>(1, n * elementBytes(d))); }
  Buf(DType d, const std::vector<double>& v) : Buf(d, v.size()) { for (size_t i = 0; i < n; i++) set(i, v[i]); }
  ~Buf() { free(p); }
  void set(size_t i, double x) {
    if (dt == F32) static_cast<float*>(p)[i] = static_cast<float>(x);
    else if (dt == F64) static_cast<double*>(p)[i] = x;
    else if (dt == BF16) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(x));
    else static_cast<int32_t*>(p)[i] = static_cast<int32_t>(x);
  }
  double get(size_t i) const {
    if (dt == F32) return static_cast<float*>(p)[i];
    if (dt == F64) return static_cast<double*>(p)[i];
    if (dt == BF16) return __bfloat162float(static_cast<__nv_bfloat16*>(p)[i]);
    return static_cast<int32_t*>(p)[i];
  }
  std::vector<double> vec() const { std::vector<double> v(n); for (size_t i = 0; i < n; i++) v[i] = get(i); return v; }
};
// The values the kernel saw (rounded to the dtype).
static std::vector<double> seen(DType dt, const std::vector<double>& v) { Buf b(dt, v); return b.vec(); }

static void close(const std::string& what, const std::vector<double>& got, const std::vector<double>& want, double tol) {
  double scale = 0, diff = 0; size_t at = 0;
  for (size_t i = 0; i < want.size(); i++) {
    const double g = got[i], w = want[i];
    if (!std::isfinite(w) || !std::isfinite(g)) { if (!(g == w || (std::isnan(g) && std::isnan(w)))) { printf("FAIL %s: element %zu is %g, want %g\n", what.c_str(), i, g, w); failures++; return; } continue; }
    scale = std::max(scale, std::fabs(w));
    if (std::fabs(g - w) > diff) { diff = std::fabs(g - w); at = i; }
  }
  const double err = scale == 0 ? diff : diff / scale;
  if (!(err <= tol)) { printf("FAIL %s: error %.2e at %zu (%g vs %g) > %g\n", what.c_str(), err, at, got[at], want[at], tol); failures++; }
  else printf("ok   %s: %.1e\n", what.c_str(), err);
}
static const char* name(DType d) { return d == F32 ? "f32" : d == F64 ? "f64" : "bf16"; }
static double tolOf(DType d, double f32, double f64, double b16) { return d == F32 ? f32 : d == F64 ? f64 : b16; }

static void ce(DType dt, long long N, long long V, unsigned seed, double scale) {
  auto x = seen(dt, randn(N * V, seed, scale)); auto w = seen(dt, randn(N, seed + 1));
  std::mt19937 g(seed); std::vector<double> t(N);
  for (long long i = 0; i < N; i++) t[i] = (i % 4 == 1) ? -100 : static_cast<double>(g() % V);
  Buf bx(dt, x), bt(I32, t), bw(dt, w), bn(dt, N), bd(dt, N * V);
  if (crossEntropy(L, dt, bx.p, static_cast<int32_t*>(bt.p), N, V, -100, bn.p)) { puts("launch error"); failures++; }
  if (crossEntropyBackward(L, dt, bx.p, static_cast<int32_t*>(bt.p), bw.p, N, V, -100, bd.p)) { puts("launch error"); failures++; }
  std::vector<double> nll(N), dx(N * V);
  for (long long i = 0; i < N; i++) {
    double m = -INFINITY; for (long long j = 0; j < V; j++) m = std::max(m, x[i * V + j]);
    double s = 0; for (long long j = 0; j < V; j++) s += std::exp(x[i * V + j] - m);
    const double lse = m + std::log(s);
    const bool ig = t[i] == -100;
    nll[i] = ig ? 0 : lse - x[i * V + static_cast<long long>(t[i])];
    for (long long j = 0; j < V; j++) dx[i * V + j] = ig ? 0 : (std::exp(x[i * V + j] - lse) - (j == t[i] ? 1 : 0)) * w[i];
  }
  const std::string what = std::string("ce ") + name(dt) + " " + std::to_string(N) + "x" + std::to_string(V);
  close(what + " nll", bn.vec(), nll, tolOf(dt, 1e-5, 1e-12, 8e-3));
  close(what + " dlogits", bd.vec(), dx, tolOf(dt, 1e-5, 1e-12, 8e-3));
}

static void lseAndSilu(DType dt, long long rows, long long V, unsigned seed) {
  auto x = seen(dt, randn(rows * V, seed, 3)); auto gr = seen(dt, randn(rows, seed + 1));
  Buf bx(dt, x), bl(dt, rows), bg(dt, gr), bd(dt, rows * V);
  logsumexp(L, dt, bx.p, rows, V, bl.p);
  logsumexpBackward(L, dt, bx.p, bl.p, bg.p, rows, V, bd.p);
  auto lk = bl.vec();
  std::vector<double> lse(rows), dx(rows * V);
  for (long long i = 0; i < rows; i++) {
    double m = -INFINITY; for (long long j = 0; j < V; j++) m = std::max(m, x[i * V + j]);
    double s = 0; for (long long j = 0; j < V; j++) s += std::exp(x[i * V + j] - m);
    lse[i] = m + std::log(s);
    for (long long j = 0; j < V; j++) dx[i * V + j] = std::exp(x[i * V + j] - lk[i]) * gr[i];  // the kernel's saved lse
  }
  const std::string what = std::string("lse ") + name(dt) + " " + std::to_string(rows) + "x" + std::to_string(V);
  close(what, bl.vec(), lse, tolOf(dt, 1e-6, 1e-13, 8e-3));
  close(what + " dx", bd.vec(), dx, tolOf(dt, 1e-6, 1e-13, 8e-3));
  // silu on the same x
  Buf by(dt, rows * V), bdx(dt, rows * V), bg2(dt, seen(dt, randn(rows * V, seed + 2)));
  auto g2 = bg2.vec();
  silu(L, dt, bx.p, by.p, rows * V);
  siluBackward(L, dt, bx.p, bg2.p, bdx.p, rows * V);
  std::vector<double> y(rows * V), dy(rows * V);
  for (long long i = 0; i < rows * V; i++) { const double s = 1 / (std::exp(-x[i]) + 1); y[i] = x[i] * s; dy[i] = g2[i] * s * (x[i] * (1 - s) + 1); }
  close(std::string("silu ") + name(dt), by.vec(), y, tolOf(dt, 1e-6, 1e-13, 8e-3));
  close(std::string("silu.vjp ") + name(dt), bdx.vec(), dy, tolOf(dt, 1e-6, 1e-13, 8e-3));
  // siluMul: silu(x)·b and its two gradients
  Buf bb(dt, seen(dt, randn(rows * V, seed + 3))), bm(dt, rows * V), bda(dt, rows * V), bdb(dt, rows * V);
  auto b = bb.vec();
  siluMul(L, dt, bx.p, bb.p, bm.p, rows * V);
  siluMulBackward(L, dt, bx.p, bb.p, bg2.p, bda.p, bdb.p, rows * V);
  std::vector<double> m(rows * V), da(rows * V), db(rows * V);
  for (long long i = 0; i < rows * V; i++) { const double s = 1 / (std::exp(-x[i]) + 1); m[i] = x[i] * s * b[i]; da[i] = g2[i] * b[i] * s * (x[i] * (1 - s) + 1); db[i] = g2[i] * x[i] * s; }
  close(std::string("siluMul ") + name(dt), bm.vec(), m, tolOf(dt, 1e-6, 1e-13, 8e-3));
  close(std::string("siluMul.vjp da ") + name(dt), bda.vec(), da, tolOf(dt, 1e-6, 1e-13, 8e-3));
  close(std::string("siluMul.vjp db ") + name(dt), bdb.vec(), db, tolOf(dt, 1e-6, 1e-13, 8e-3));
}

static void attnCheck(DType dt, long long B, long long H, long long Hkv, long long S, long long D, unsigned seed, bool withDLse) {
  const long long nq = B * H * S * D, nk = B * Hkv * S * D, nl = B * H * S;
  const DType lt = dt == F64 ? F64 : F32;  // lse and dLse are in the compute type (float32 for bf16)
  auto q = seen(dt, randn(nq, seed)), k = seen(dt, randn(nk, seed + 1)), v = seen(dt, randn(nk, seed + 2)), dO = seen(dt, randn(nq, seed + 3));
  auto dLse = seen(lt, randn(nl, seed + 4));
  Buf bq(dt, q), bk(dt, k), bv(dt, v), bo(dt, nq), bl(lt, nl), bdO(dt, dO), bdL(lt, dLse), bdq(dt, nq), bdk(dt, nk), bdv(dt, nk);
  if (attentionForward(L, dt, bq.p, bk.p, bv.p, bo.p, bl.p, B, H, Hkv, S, D)) { puts("fwd launch error"); failures++; }
  std::vector<char> scratch(attentionScratch(dt, B, H, S, D) + 1);
  if (attentionBackward(L, dt, bq.p, bk.p, bv.p, bo.p, bl.p, bdO.p, withDLse ? bdL.p : nullptr, bdq.p, bdk.p, bdv.p, B, H, Hkv, S, D, scratch.data())) { puts("bwd launch error"); failures++; }
  // reference (float64), backward from the kernel's saved o and lse, as the routine does
  const long long G = H / Hkv; const double sc = 1 / std::sqrt(static_cast<double>(D));
  std::vector<double> o(nq, 0), lse(nl), dq(nq, 0), dk(nk, 0), dv(nk, 0);
  auto ok = bo.vec(), lk = bl.vec();
  for (long long b = 0; b < B; b++) for (long long h = 0; h < H; h++) {
    const long long bh = b * H + h, kvh = b * Hkv + h / G;
    for (long long r = 0; r < S; r++) {
      std::vector<double> s(r + 1);
      for (long long c = 0; c <= r; c++) { double d_ = 0; for (long long d = 0; d < D; d++) d_ += q[(bh * S + r) * D + d] * k[(kvh * S + c) * D + d]; s[c] = d_ * sc; }
      const double m = *std::max_element(s.begin(), s.end()); double l = 0; for (double x : s) l += std::exp(x - m);
      lse[bh * S + r] = m + std::log(l);
      for (long long c = 0; c <= r; c++) for (long long d = 0; d < D; d++) o[(bh * S + r) * D + d] += std::exp(s[c] - lse[bh * S + r]) * v[(kvh * S + c) * D + d];
      double delta = 0; for (long long d = 0; d < D; d++) delta += dO[(bh * S + r) * D + d] * ok[(bh * S + r) * D + d];
      if (withDLse) delta -= dLse[bh * S + r];
      for (long long c = 0; c <= r; c++) {
        const double p = std::exp(s[c] - lk[bh * S + r]);
        double dp = 0; for (long long d = 0; d < D; d++) dp += dO[(bh * S + r) * D + d] * v[(kvh * S + c) * D + d];
        const double ds = p * (dp - delta);
        for (long long d = 0; d < D; d++) {
          dq[(bh * S + r) * D + d] += sc * ds * k[(kvh * S + c) * D + d];
          dk[(kvh * S + c) * D + d] += sc * ds * q[(bh * S + r) * D + d];
          dv[(kvh * S + c) * D + d] += p * dO[(bh * S + r) * D + d];
        }
      }
    }
  }
  char buf[200]; snprintf(buf, sizeof buf, "attention %s B=%lld H=%lld Hkv=%lld S=%lld D=%lld%s", name(dt), B, H, Hkv, S, D, withDLse ? " +dLse" : "");
  const double t = tolOf(dt, 2e-5, 1e-11, 1.5e-2);
  close(std::string(buf) + " o", bo.vec(), o, t);
  close(std::string(buf) + " lse", bl.vec(), lse, lt == F64 ? 1e-12 : 1e-5);  // float32 precision for bf16 too
  close(std::string(buf) + " dq", bdq.vec(), dq, t);
  close(std::string(buf) + " dk", bdk.vec(), dk, t);
  close(std::string(buf) + " dv", bdv.vec(), dv, t);
}

// rmsNorm and its backward against float64: y = (x·inv)·w, dx = inv·(g·w − n·mean(g·w·n)),
// dw = Σ_rows g·n. The rounding of n to the dtype before the weight is left out of the reference.
// The Hopper backward's padded row stats (attention.cuh's rowStatsBytes): for BH heads of S rows,
// delta [BH, sPad] then lse·log2 e [BH, sPad]; delta = Σ dO·O − dLse against float64, lse·log2 e
// the same fp32 product the kernels took before, bit for bit; the padding rows 0 and +inf.
static void rowStats(long long BH, long long S, long long D, unsigned seed, bool withDLse) {
  const long long sPad = (S + 63) / 64 * 64, rows = BH * S;
  Buf bo(BF16, randn(rows * D, seed)), bdO(BF16, randn(rows * D, seed + 1)), bl(F32, randn(rows, seed + 2, 3)), bdL(F32, randn(rows, seed + 3));
  if (attn::rowStatsBytes(BH, S) != 2 * BH * sPad * 4 || attn::rowStatsBytes(BH, S) % 256 != 0) { printf("FAIL rowStatsBytes(%lld, %lld)\n", BH, S); failures++; }
  Buf bs(F32, static_cast<size_t>(2 * BH * sPad));  // NaN-filled: every row must be written
  if (attn::launchRowStatsBf16(L, static_cast<const bf16*>(bo.p), static_cast<const bf16*>(bdO.p), withDLse ? static_cast<const float*>(bdL.p) : nullptr,
                               static_cast<const float*>(bl.p), static_cast<float*>(bs.p), BH, S, D)) { puts("row stats launch error"); failures++; }
  std::vector<double> got(BH * sPad), want(BH * sPad);
  long long badLse = 0, badPad = 0;
  const float* st = static_cast<const float*>(bs.p);
  const float* lse = static_cast<const float*>(bl.p);
  for (long long bh = 0; bh < BH; bh++)
    for (long long i = 0; i < sPad; i++) {
      const long long at = bh * sPad + i;
      got[at] = st[at];
      if (i >= S) {
        want[at] = 0;
        if (st[at] != 0.f || !(std::isinf(st[BH * sPad + at]) && st[BH * sPad + at] > 0)) badPad++;
        continue;
      }
      const long long r = bh * S + i;
      double d = 0;
      for (long long k = 0; k < D; k++) d += bdO.get(r * D + k) * bo.get(r * D + k);
      want[at] = withDLse ? d - bdL.get(r) : d;
      const float l2 = lse[r] * 1.4426950408889634f;
      if (std::memcmp(&l2, &st[BH * sPad + at], 4) != 0) badLse++;
    }
  const std::string what = "rowStats BH=" + std::to_string(BH) + " S=" + std::to_string(S) + " D=" + std::to_string(D);
  close(what + " delta", got, want, 1e-5);
  if (badLse || badPad) { printf("FAIL %s: %lld lse·log2 e rows differ, %lld padding rows wrong\n", what.c_str(), badLse, badPad); failures++; }
  else printf("ok   %s\n", what.c_str());
}

static void norm(DType dt, long long rows, long long d, unsigned seed) {
  const std::vector<double> x = seen(dt, randn(rows * d, seed)), w = seen(dt, randn(d, seed + 1, 0.5)), g = seen(dt, randn(rows * d, seed + 2));
  std::vector<double> y(rows * d), dx(rows * d), dw(d, 0.0);
  for (long long r = 0; r < rows; r++) {
    double ss = 0, dot = 0;
    for (long long j = 0; j < d; j++) ss += x[r * d + j] * x[r * d + j];
    const double inv = 1 / std::sqrt(ss / d + 1e-5);
    for (long long j = 0; j < d; j++) { const double n = x[r * d + j] * inv; y[r * d + j] = n * w[j]; dot += g[r * d + j] * w[j] * n; dw[j] += g[r * d + j] * n; }
    for (long long j = 0; j < d; j++) dx[r * d + j] = inv * (g[r * d + j] * w[j] - x[r * d + j] * inv * dot / d);
  }
  Buf bx(dt, x), bw(dt, w), bg(dt, g), by(dt, rows * d), bdx(dt, rows * d), bdw(dt, d);
  std::vector<unsigned char> scratch(static_cast<size_t>(rmsNormScratch(L, dt, rows, d)) + 1);
  rmsNorm(L, dt, bx.p, bw.p, by.p, rows, d, 1e-5);
  rmsNormBackward(L, dt, bx.p, bw.p, bg.p, bdx.p, bdw.p, rows, d, 1e-5, scratch.data());
  const std::string what = " " + std::string(name(dt)) + " [" + std::to_string(rows) + ", " + std::to_string(d) + "]";
  close("rmsNorm" + what, by.vec(), y, tolOf(dt, 1e-5, 1e-12, 1.5e-2));
  close("rmsNorm.vjp dx" + what, bdx.vec(), dx, tolOf(dt, 1e-5, 1e-12, 2e-2));
  close("rmsNorm.vjp dw" + what, bdw.vec(), dw, tolOf(dt, 1e-5, 1e-12, 2e-2));
}

// rope (and its inverse, the VJP) against float64 rotations of x [rows, S, D]; scaled: with a
// table of frequencies in place of θ^(−2i/D) (here θ^(−2i/D) divided by 1 + i, any table will do).
static void ropeCheck(DType dt, long long rows, long long S, long long D, double offset, unsigned seed, bool scaled = false) {
  const std::vector<double> x = seen(dt, randn(rows * S * D, seed));
  const long long half = D / 2;
  std::vector<double> table(half);
  for (long long i = 0; i < half; i++) table[i] = std::pow(500000.0, -2.0 * i / D) / (scaled ? 1.0 + i : 1.0);
  std::vector<double> y(x.size()), back(x.size());
  for (long long r = 0; r < rows; r++)
    for (long long s = 0; s < S; s++)
      for (long long i = 0; i < half; i++) {
        const double angle = (s + offset) * table[i], c = std::cos(angle), sn = std::sin(angle);
        const long long at = (r * S + s) * D + i;
        y[at] = x[at] * c - x[at + half] * sn;
        y[at + half] = x[at + half] * c + x[at] * sn;
        back[at] = x[at] * c + x[at + half] * sn;
        back[at + half] = x[at + half] * c - x[at] * sn;
      }
  Buf bx(dt, x), by(dt, x.size()), bb(dt, x.size());
  rope(L, dt, bx.p, by.p, rows, S, D, 500000, offset, false, scaled ? table.data() : nullptr);
  rope(L, dt, bx.p, bb.p, rows, S, D, 500000, offset, true, scaled ? table.data() : nullptr);
  const std::string what = " " + std::string(name(dt)) + " [" + std::to_string(rows) + ", " + std::to_string(S) + ", " +
                           std::to_string(D) + "]" + (scaled ? " scaled" : "");
  close("rope" + what, by.vec(), y, tolOf(dt, 1e-4, 1e-12, 2e-2));
  close("rope.vjp" + what, bb.vec(), back, tolOf(dt, 1e-4, 1e-12, 2e-2));
}

// scatterAdd against the CPU's walk over i = 0, 1, 2, … (rounding to the dtype after each
// addition): bitwise equal. Repeated rows, a row missing, a bad index (skipped and recorded).
static void scatterCheck(DType dt, long long n, long long rows, long long width, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<double> idx(n);
  for (auto& r : idx) r = static_cast<double>(g() % (rows - 1));  // row rows − 1 never appears
  if (n > 3) idx[n / 2] = static_cast<double>(rows + 5);
  const std::vector<double> src = seen(dt, randn(n * width, seed + 1));
  Buf bi(I32, idx), bs(dt, src), bo(dt, std::vector<double>(rows * width, 0.0));
  std::vector<char> scratch(scatterAddScratch(n) + 1);
  record = ErrorRecord{};
  if (scatterAdd(L, dt, static_cast<int32_t*>(bi.p), n, bs.p, bo.p, rows, width, scratch.data())) { puts("scatterAdd launch error"); failures++; }
  std::vector<double> want(rows * width, 0.0);
  for (long long i = 0; i < n; i++) {
    const long long r = static_cast<long long>(idx[i]);
    if (r < 0 || r >= rows) continue;
    for (long long j = 0; j < width; j++) {
      double& o = want[r * width + j];
      if (dt == F32) o = static_cast<float>(static_cast<float>(o) + static_cast<float>(src[i * width + j]));
      else if (dt == BF16) o = bf(static_cast<float>(o) + static_cast<float>(src[i * width + j]));
      else o += src[i * width + j];
    }
  }
  const std::string what = std::string("scatterAdd ") + name(dt) + " n=" + std::to_string(n) + " rows=" + std::to_string(rows) + " width=" + std::to_string(width);
  close(what, bo.vec(), want, 0);
  if (n > 3 && (record.code != 1 || record.kernel != K_SCATTER_ADD || record.position != n / 2)) { printf("FAIL %s: bad index not recorded\n", what.c_str()); failures++; }
}

// The gradient norm's fused sum of squares against the unfused graph's kernels (the squares
// rounded to float32, then reduce() over the rows and over the columns): the same bits.
static void squares(DType dt, long long rows, long long cols, unsigned seed) {
  const long long n = rows * cols;
  auto x = seen(dt, randn(n, seed, 0.1));
  Buf bx(dt, x), out(F32, 1), sq(F32, n), col(F32, cols), out2(F32, 1);
  std::vector<double> scratch(std::max<long long>(1, sumOfSquaresScratch(L, rows, cols)));
  std::vector<float> colSums(cols);
  sumOfSquares(L, dt, bx.p, static_cast<float*>(out.p), rows, cols, colSums.data(), scratch.data());
  for (long long i = 0; i < n; i++) { const float f = static_cast<float>(x[i]); sq.set(i, f * f); }
  std::vector<double> plain(std::max<long long>({1, reduceScratch(L, 1, rows, cols), reduceScratch(L, 1, cols, 1)}));
  if (rows > 1) {
    reduce(L, R_SUM, F32, sq.p, col.p, 1, rows, cols, plain.data());
    reduce(L, R_SUM, F32, col.p, out2.p, 1, cols, 1, plain.data());
  } else {
    reduce(L, R_SUM, F32, sq.p, out2.p, 1, cols, 1, plain.data());
  }
  double want = 0;
  for (long long i = 0; i < n; i++) want += x[i] * x[i];
  const std::string what = std::string("sumOfSquares ") + name(dt) + " [" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
  if (static_cast<float*>(out.p)[0] != static_cast<float*>(out2.p)[0]) {
    printf("FAIL %s: %.9g, the unfused kernels %.9g\n", what.c_str(), out.get(0), out2.get(0)); failures++; return;
  }
  close(what, out.vec(), {want}, 1e-6);
}

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "all";
  if (which == "all" || which == "ce") {
    for (DType dt : {F32, BF16, F64}) {
      ce(dt, 37, 1001, 1, 2); ce(dt, 3, 4096, 2, 30); ce(dt, 4, 1004, 3, 2); ce(dt, 5, 7, 4, 2); ce(dt, 1, 70001, 5, 2);
      lseAndSilu(dt, 15, 1001, 6); lseAndSilu(dt, 4, 1, 7); lseAndSilu(dt, 2, 4096, 8);
    }
    // out of range target
    Buf bx(F32, randn(30, 9)), bt(I32, std::vector<double>{1, 10, -100}), bn(F32, 3);
    record = ErrorRecord{};
    crossEntropy(L, F32, bx.p, static_cast<int32_t*>(bt.p), 3, 10, -100, bn.p);
    if (record.code != 1 || record.kernel != K_CROSS_ENTROPY || record.position != 1 || record.value != 10 || record.bound != 10 || !std::isnan(bn.get(1))) { puts("FAIL bad-target record"); failures++; }
    else puts("ok   bad target recorded");
  }
  if (which == "all" || which == "norm")
    for (DType dt : {F32, BF16, F64}) {
      norm(dt, 1, 64, 31); norm(dt, 37, 1000, 32); norm(dt, 300, 512, 33); norm(dt, 5, 2048, 34);
      ropeCheck(dt, 1, 1, 8, 0, 41); ropeCheck(dt, 4, 77, 64, 3, 42); ropeCheck(dt, 2, 130, 128, 0, 43);
      ropeCheck(dt, 1, 1, 8, 0, 44, true); ropeCheck(dt, 4, 77, 64, 3, 45, true); ropeCheck(dt, 2, 130, 256, 5, 46, true);
    }
  if (which == "all" || which == "reduce")
    for (DType dt : {F32, BF16, F64}) { squares(dt, 1, 700, 71); squares(dt, 1, 30000, 72); squares(dt, 400, 70, 73); squares(dt, 5000, 40, 74); squares(dt, 1, 1, 75); }
  if (which == "all" || which == "index")
    for (DType dt : {F32, BF16, F64}) { scatterCheck(dt, 1, 3, 5, 51); scatterCheck(dt, 300, 37, 19, 52); scatterCheck(dt, 1000, 4, 64, 53); scatterCheck(dt, 517, 2000, 3, 54); }
  if (which == "race") {
    scatterCheck(F32, 70, 9, 8, 55);
    norm(F32, 3, 300, 35);
    ce(F32, 3, 1001, 1, 2); ce(F32, 2, 4096, 2, 2); lseAndSilu(F32, 2, 1001, 6);
    attnCheck(F32, 1, 2, 1, 70, 64, 21, true); attnCheck(F64, 1, 2, 1, 40, 64, 21, false); attnCheck(F32, 1, 2, 1, 33, 256, 21, false); attnCheck(F32, 1, 2, 2, 65, 128, 21, false);
  }
  if (which == "all" || which == "attn") {
    struct C { long long B, H, Hkv, S, D; };
    for (C c : {C{1, 1, 1, 1, 64}, C{2, 2, 2, 77, 64}, C{1, 4, 2, 100, 64}, C{1, 4, 1, 130, 32}, C{1, 2, 1, 70, 256}, C{1, 2, 2, 129, 128}, C{1, 2, 1, 50, 80}})
      for (DType dt : {F32, BF16, F64}) attnCheck(dt, c.B, c.H, c.Hkv, c.S, c.D, 21, c.S == 77 || c.S == 50);
    // Ragged S (1, 63, 65, 130: S % 4 ≠ 0 and a last partial tile), one full tile, D = 64 and 128.
    rowStats(1, 1, 64, 61, false); rowStats(3, 63, 64, 62, true); rowStats(2, 64, 128, 63, false); rowStats(2, 65, 64, 64, true); rowStats(5, 130, 128, 65, true);
  }
  printf("%lld launches, %d failures\n", emu::launches, failures);
  return failures ? 1 : 0;
}
