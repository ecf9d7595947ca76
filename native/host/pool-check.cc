// Checks native/host/pool.h (test/host-adamw.test.ts builds it, under ThreadSanitizer where the
// compiler has it): callers on several threads at once, each job's tasks run exactly once, and
// every job has ended when its run returns. Prints "ok" or what went wrong.
//   pool-check CALLERS JOBS
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "pool.h"

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const int callers = std::atoi(argv[1]), jobs = std::atoi(argv[2]);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < callers; c++)
    threads.emplace_back([&, c] {
      for (int j = 0; j < jobs; j++) {
        const long long count = 1 + (c * 7 + j * 13) % 37;
        std::vector<int> ran(count, 0);  // on this stack: the pool must be done with it on return
        miniseq::host::Pool::shared().run(count, [&](long long i) { ran[i]++; });
        for (long long i = 0; i < count; i++)
          if (ran[i] != 1) failures++;
      }
    });
  for (auto& t : threads) t.join();
  if (failures.load() != 0) {
    std::printf("%d tasks did not run exactly once\n", failures.load());
    return 1;
  }
  std::printf("ok\n");
  return 0;
}
