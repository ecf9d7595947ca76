// A command around adamw.h for the CPU tests (test/host-adamw.test.ts), which compile it with the
// C++ compiler and compare what it writes with the reference AdamW graph, bit for bit.
//
// stdin: int32 param, grad and state storage (0 float32, 1 bfloat16), int32 hasMaster, int32
// threads, int64 n; float64 beta1, beta2, eps, decay; float32 lr, correction1, correction2, clip;
// then param, grad, m, v (each n elements in its storage) and, with master weights, n float32.
// stdout: the new param, m, v (and master), in the same layout.
#include <cstdio>
#include <vector>

#include "adamw.h"

using miniseq::host::Storage;

namespace {
template <typename T> bool get(T* p, size_t n = 1) { return std::fread(p, sizeof(T), n, stdin) == n; }
size_t bytes(Storage s) { return s == Storage::F32 ? 4 : 2; }
}  // namespace

int main() {
  int32_t kinds[5];
  long long n;
  double hyper[4];
  float scalars[4];
  if (!get(kinds, 5) || !get(&n) || !get(hyper, 4) || !get(scalars, 4)) return 2;
  const Storage p = kinds[0] ? Storage::BF16 : Storage::F32, g = kinds[1] ? Storage::BF16 : Storage::F32,
                s = kinds[2] ? Storage::BF16 : Storage::F32;
  std::vector<char> param(n * bytes(p)), grad(n * bytes(g)), m(n * bytes(s)), v(n * bytes(s));
  std::vector<float> master(kinds[3] ? n : 0);
  if (!get(param.data(), param.size()) || !get(grad.data(), grad.size()) || !get(m.data(), m.size()) || !get(v.data(), v.size()) ||
      !get(master.data(), master.size()))
    return 2;
  const auto k = miniseq::host::AdamWStep::of(hyper[0], hyper[1], hyper[2], hyper[3], scalars[0], scalars[1], scalars[2], scalars[3]);
  miniseq::host::adamw(p, g, s, param.data(), grad.data(), m.data(), v.data(), kinds[3] ? master.data() : nullptr, k, n,
                       static_cast<unsigned>(kinds[4]));
  for (auto* out : {&param, &m, &v}) std::fwrite(out->data(), 1, out->size(), stdout);
  std::fwrite(master.data(), sizeof(float), master.size(), stdout);
  return 0;
}
