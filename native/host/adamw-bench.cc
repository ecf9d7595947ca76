// Times native/host/adamw.h on this machine's CPU (bench/host-adamw.ts builds and runs it): P
// bf16 parameters of N elements each (bf16 weights, gradient and moments, no master weights, as
// `--precision bf16` offloads them), all updated R times on T threads, one update call per
// parameter as a step makes them; prints the best ns per element.
//   adamw-bench N R T [P]
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
  const long long params = argc > 4 ? std::atoll(argv[4]) : 1;
  std::vector<uint16_t> w(n * params, toBf16(0.5f)), g(n * params, toBf16(1e-3f)), m(n * params, toBf16(1e-4f)),
      v(n * params, toBf16(1e-6f));
  const AdamWStep k = AdamWStep::of(0.9, 0.95, 1e-8, 0.1, 3e-4f, 0.1f, 0.05f, 0.9f);
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    const auto t = std::chrono::steady_clock::now();
    for (long long p = 0; p < params; p++)
      adamw(Storage::BF16, Storage::BF16, Storage::BF16, w.data() + p * n, g.data() + p * n, m.data() + p * n, v.data() + p * n,
            nullptr, k, n, threads);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
  }
  std::printf("%.4f\n", best / static_cast<double>(n * params) * 1e9);
  return 0;
}
