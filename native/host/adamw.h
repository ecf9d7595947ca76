// AdamW on the host's cores: the update of native/kernels/optimizer.cu, element for element, for
// state that lives in host memory (`--offload optimizer` on a GPU: the moments and master weights
// stay where they are, and only the new weights cross the bus). The arithmetic is the kernel's op
// for op, each a float32 operation rounded to nearest (+, −, ×, ÷ and √ are exact-rounded in IEEE
// 754, and nothing here may fuse a multiply and an add: see the pragma), so the result is the
// GPU's bit for bit. No CUDA and no Node here: native/src/device.cc calls it, and
// native/host/adamw-check.cc lets the CPU tests compare it with the reference graph.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "bf16.h"
#include "pool.h"

// A fused multiply-add rounds once where the kernel (and the reference graph) round twice: none
// here (the builds pass -ffp-contract=off too). The loop vectorises only with -fno-math-errno (a
// √ that may set errno stops it; the builds pass it, and it changes no value) and with the
// vectoriser asked for by name: at -O2 its cheapest cost model will not add the aliasing check
// this loop needs (5× slower without). MINISEQ_HOST_SCALAR keeps the loop scalar, for the
// benchmark's comparison (bench/host-adamw.ts).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#ifdef MINISEQ_HOST_SCALAR
#pragma GCC optimize("fp-contract=off", "no-tree-vectorize")
#else
#pragma GCC optimize("fp-contract=off", "tree-vectorize")
#endif
#endif

namespace miniseq::host {

// The storage types a buffer of the update may have.
enum class Storage { F32, BF16 };

// One step's numbers: the constants as the kernel takes them (computed in double, stored as
// float32) and the four scalars it reads from device memory.
struct AdamWStep {
  float beta1, oneMinusBeta1, beta2, oneMinusBeta2, eps, decay;
  float lr, correction1, correction2, clip;
  static AdamWStep of(double beta1, double beta2, double eps, double decay, float lr, float c1, float c2, float clip) {
    return {static_cast<float>(beta1), static_cast<float>(1 - beta1), static_cast<float>(beta2), static_cast<float>(1 - beta2),
            static_cast<float>(eps), static_cast<float>(decay), lr, c1, c2, clip};
  }
};

template <typename T> inline float load(const T* p, long long i) {
  if constexpr (sizeof(T) == 2) return fromBf16(p[i]);
  else return p[i];
}
template <typename T> inline void store(T* p, long long i, float x) {
  if constexpr (sizeof(T) == 2) p[i] = toBf16(x);
  else p[i] = x;
}

// Elements [begin, end): weights from `master` (Master) or from `param`; the new weights go to
// `param` (and `master`), the moments in place. Decay: the weights' decoupled decay term. The
// two choices are template arguments so that the loop has no branch and vectorises.
template <bool Master, bool Decay, typename P, typename G, typename S>
__attribute__((always_inline)) inline void adamwLoop(P* __restrict param, const G* __restrict grad,
                                                     S* __restrict m, S* __restrict v, float* __restrict master, const AdamWStep k,
                                                     long long begin, long long end) {
  for (long long i = begin; i < end; i++) {
    const float g = load(grad, i) * k.clip;
    const float m1 = load(m, i) * k.beta1 + g * k.oneMinusBeta1;
    const float v1 = load(v, i) * k.beta2 + (g * g) * k.oneMinusBeta2;
    const float step = (m1 / k.correction1) / (__builtin_sqrtf(v1 / k.correction2) + k.eps);
    const float w = Master ? master[i] : load(param, i);
    const float update = Decay ? step + w * k.decay : step;
    const float w1 = w - update * k.lr;
    store(m, i, m1);
    store(v, i, v1);
    store(param, i, w1);
    if (Master) master[i] = w1;
  }
}

// The loop for this update's two choices. Always inlined, so that it compiles for the target of
// the function it is inlined into (adamwRangeAvx2's below).
template <typename P, typename G, typename S>
__attribute__((always_inline)) inline void adamwRangeFor(P* param, const G* grad, S* m, S* v, float* master, const AdamWStep& k,
                                                         long long begin, long long end) {
  const bool decay = k.decay > 0.0f;
  if (master != nullptr && decay) adamwLoop<true, true>(param, grad, m, v, master, k, begin, end);
  else if (master != nullptr) adamwLoop<true, false>(param, grad, m, v, master, k, begin, end);
  else if (decay) adamwLoop<false, true>(param, grad, m, v, master, k, begin, end);
  else adamwLoop<false, false>(param, grad, m, v, master, k, begin, end);
}

// (MINISEQ_HOST_NO_AVX2 leaves the AVX2 build out: the tests check both.)
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(MINISEQ_HOST_NO_AVX2)
#define MINISEQ_HOST_AVX2 1
// The same loop compiled for AVX2 (eight lanes; AVX2 alone, so no fused multiply-add can appear),
// chosen at run time where the processor has it.
template <typename P, typename G, typename S>
__attribute__((target("avx2"))) void adamwRangeAvx2(P* param, const G* grad, S* m, S* v, float* master,
                                                     const AdamWStep& k, long long begin, long long end) {
  adamwRangeFor(param, grad, m, v, master, k, begin, end);
}
inline bool hasAvx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}
#endif

template <typename P, typename G, typename S>
void adamwRange(P* param, const G* grad, S* m, S* v, float* master, const AdamWStep& k, long long begin,
                long long end) {
#ifdef MINISEQ_HOST_AVX2
  if (hasAvx2()) return adamwRangeAvx2(param, grad, m, v, master, k, begin, end);
#endif
  adamwRangeFor(param, grad, m, v, master, k, begin, end);
}

// The whole update over n elements, split in contiguous slices over up to `threads` threads
// (0: every core) of the shared pool; slices of less than 64K elements are not worth a thread.
template <typename P, typename G, typename S>
void adamw(P* param, const G* grad, S* m, S* v, float* master, const AdamWStep& k, long long n, unsigned threads) {
  if (threads == 0) threads = Pool::threads();
  const long long slices = std::max(1LL, std::min(static_cast<long long>(threads), n / 65536));
  if (slices == 1) return adamwRange(param, grad, m, v, master, k, 0, n);
  const long long per = (n + slices - 1) / slices;
  Pool::shared().run(slices, [&](long long s) {
    adamwRange(param, grad, m, v, master, k, s * per, std::min(n, (s + 1) * per));
  });
}

// The same with the storage types chosen at run time.
inline void adamw(Storage p, Storage g, Storage s, void* param, const void* grad, void* m, void* v, float* master,
                  const AdamWStep& k, long long n, unsigned threads = 0) {
  const auto run = [&](auto pt, auto gt, auto st) {
    using P = decltype(pt);
    using G = decltype(gt);
    using S = decltype(st);
    adamw(static_cast<P*>(param), static_cast<const G*>(grad), static_cast<S*>(m), static_cast<S*>(v),
          master, k, n, threads);
  };
  const auto withState = [&](auto pt, auto gt) {
    if (s == Storage::F32) run(pt, gt, float{});
    else run(pt, gt, uint16_t{});
  };
  const auto withGrad = [&](auto pt) {
    if (g == Storage::F32) withState(pt, float{});
    else withState(pt, uint16_t{});
  };
  if (p == Storage::F32) withGrad(float{});
  else withGrad(uint16_t{});
}

}  // namespace miniseq::host

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
