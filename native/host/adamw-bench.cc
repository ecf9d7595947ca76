// Times native/host/adamw.h on this machine's CPU (bench/host-adamw.ts builds and runs it): one
// bf16 parameter of N elements (bf16 weights, gradient and moments, no master weights, as
// `--precision bf16` offloads them), updated R times on T threads; prints the best ns per element.
//   adamw-bench N R T
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "adamw.h"

using namespace miniseq::host;

int main(int argc, char** argv) {
  if (argc < 4) return 2;
  const long long n = std::atoll(argv[1]);
  const int reps = std::atoi(argv[2]);
  const unsigned threads = static_cast<unsigned>(std::atoi(argv[3]));
  std::vector<uint16_t> w(n, toBf16(0.5f)), g(n, toBf16(1e-3f)), m(n, toBf16(1e-4f)), v(n, toBf16(1e-6f));
  const AdamWStep k = AdamWStep::of(0.9, 0.95, 1e-8, 0.1, 3e-4f, 0.1f, 0.05f, 0.9f);
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    const auto t = std::chrono::steady_clock::now();
    adamw(Storage::BF16, Storage::BF16, Storage::BF16, w.data(), g.data(), m.data(), v.data(), nullptr, k, n, threads);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
  }
  std::printf("%.4f\n", best / static_cast<double>(n) * 1e9);
  return 0;
}
