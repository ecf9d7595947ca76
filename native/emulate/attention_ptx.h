// Host emulation of native/kernels/attention_ptx.cuh (scripts/cuda-emulate.sh copies it over
// attention_ptx.cuh in its work folder). Warp-collective ops (ldmatrix,
// mma) exchange operands through a per-warp table between two warp barriers; cp.async copies
// land at the thread's wait (EMU_COPY=issue: at issue), so a read before the wait sees 0xFF.
#pragma once
#include "common.cuh"
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
#include <vector>
namespace emuptx {
struct Exchange { uint32_t u[32][8]; const void* p[32]; };
inline Exchange ex[32];
struct Copy { void* dst; unsigned char bytes[16]; };
inline thread_local std::vector<Copy> pending;
inline thread_local std::deque<std::vector<Copy>> groups;
inline bool atIssue() { static const bool v = [] { const char* e = getenv("EMU_COPY"); return e && std::string(e) == "issue"; }(); return v; }
inline unsigned w() { return threadIdx.x / 32; }
inline unsigned lane() { return threadIdx.x % 32; }
inline void sync() { emu::cur->warps[w()]->wait(); }
inline float bf(uint32_t x, int hi) { uint32_t b = (hi ? (x >> 16) : (x & 0xffff)) << 16; float f; memcpy(&f, &b, 4); return f; }
inline void aligned(const void* p, const char* what) { if (reinterpret_cast<uintptr_t>(p) % 16) { fprintf(stderr, "%s misaligned\n", what); abort(); } }
}  // namespace emuptx
namespace miniseq { namespace attn {
inline void copyAsync16(void* dst, const void* src, bool valid) {
  emuptx::aligned(dst, "cp.async dst"); emuptx::aligned(src, "cp.async src");
  emuptx::Copy c; c.dst = dst;
  if (valid) memcpy(c.bytes, src, 16); else memset(c.bytes, 0, 16);
  if (emuptx::atIssue()) memcpy(dst, c.bytes, 16); else emuptx::pending.push_back(c);
}
inline void commitAsyncCopies() { emuptx::groups.push_back(std::move(emuptx::pending)); emuptx::pending.clear(); }
template <int PENDING> inline void waitAsyncCopies() {
  while (emuptx::groups.size() > PENDING) { for (auto& c : emuptx::groups.front()) memcpy(c.dst, c.bytes, 16); emuptx::groups.pop_front(); }
}
inline void loadMatrices(uint32_t (&m)[4], const bf16* row) {
  using namespace emuptx; aligned(row, "ldmatrix row");
  ex[w()].p[lane()] = row; sync();
  for (int i = 0; i < 4; i++) { const uint16_t* r = static_cast<const uint16_t*>(ex[w()].p[8 * i + lane() / 4]); m[i] = r[2 * (lane() % 4)] | (uint32_t(r[2 * (lane() % 4) + 1]) << 16); }
  sync();
}
inline void loadMatricesTransposed(uint32_t (&m)[4], const bf16* row) {
  using namespace emuptx; aligned(row, "ldmatrix row");
  ex[w()].p[lane()] = row; sync();
  const int t = lane() % 4, g = lane() / 4;
  for (int i = 0; i < 4; i++) {
    auto el = [&](int rr, int c) { return static_cast<const uint16_t*>(ex[w()].p[8 * i + rr])[c]; };
    m[i] = el(2 * t, g) | (uint32_t(el(2 * t + 1, g)) << 16);
  }
  sync();
}
inline void mma16x8x16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  using namespace emuptx;
  for (int i = 0; i < 4; i++) ex[w()].u[lane()][i] = a[i];
  ex[w()].u[lane()][4] = b0; ex[w()].u[lane()][5] = b1;
  sync();
  auto A = [&](int r, int k) { return bf(ex[w()].u[(r % 8) * 4 + (k % 8) / 2][r / 8 + 2 * (k / 8)], k % 2); };
  auto B = [&](int k, int n) { return bf(ex[w()].u[n * 4 + (k % 8) / 2][4 + k / 8], k % 2); };
  const int g = lane() / 4, t = lane() % 4;
  float out[4];
  for (int e = 0; e < 4; e++) { const int r = g + 8 * (e / 2), c = 2 * t + e % 2; float s = d[e]; for (int k = 0; k < 16; k++) s += A(r, k) * B(k, c); out[e] = s; }
  sync();
  for (int e = 0; e < 4; e++) d[e] = out[e];
}
}}  // namespace miniseq::attn
