// Host emulation of the CUDA execution model, enough for miniseq's fused-routine kernels to run
// on a machine without a GPU (scripts/cuda-emulate.sh): one std::thread per CUDA thread, blocks
// one after another, __syncthreads a block barrier, warp shuffles through a per-warp slot array
// between two warp barriers, dynamic shared memory malloc'd at exactly the launch's byte count
// (so AddressSanitizer sees an overrun) and filled with 0xFF (NaN) so unwritten reads show.
// Because the barriers are the only synchronization, ThreadSanitizer reports a missing
// __syncthreads as a data race. Included before each kernel file (g++ -include).
#pragma once
#define __shared__ static
#define __global__
#define __device__
#define __host__
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cmath>
#include <math.h>
#include <cstring>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <condition_variable>
#include <thread>
#include <vector>
#include <memory>
#include <array>
#undef __launch_bounds__
#define __launch_bounds__(...)

namespace emu {
struct Barrier {
  std::mutex m;
  std::condition_variable cv;
  int expected, arrived = 0;
  unsigned long gen = 0;
  explicit Barrier(int n) : expected(n) {}
  void wait() {
    std::unique_lock<std::mutex> lk(m);
    const unsigned long g = gen;
    if (++arrived == expected) { arrived = 0; gen++; cv.notify_all(); }
    else cv.wait(lk, [&] { return gen != g; });
  }
  void drop() {
    std::unique_lock<std::mutex> lk(m);
    expected--;
    if (arrived > 0 && arrived == expected) { arrived = 0; gen++; cv.notify_all(); }
  }
};
struct Block {
  dim3 idx, dim, grid;
  std::unique_ptr<Barrier> all;
  std::vector<std::unique_ptr<Barrier>> warps;
  std::vector<std::array<uint64_t, 32>> slots;
  unsigned char* smem = nullptr;
};
inline Block* cur = nullptr;
inline thread_local uint3 tid;
inline std::mutex atomics;
inline unsigned char* dynamicSmem() { return cur->smem; }
inline size_t smemCap = 232448;
inline long long launches = 0;

struct Cfg {
  dim3 grid, block;
  size_t smem;
  Cfg(dim3 g, dim3 b, size_t s = 0, cudaStream_t = nullptr) : grid(g), block(b), smem(s) {}
};

template <class... P, class... A> void launch(void (*kernel)(P...), Cfg c, A... args) {
  launches++;
  if (c.smem > smemCap) { fprintf(stderr, "launch asks for %zu bytes of dynamic smem > %zu\n", c.smem, smemCap); abort(); }
  const unsigned nt = c.block.x * c.block.y * c.block.z;
  if (nt > 1024 || nt % 32 != 0) { fprintf(stderr, "bad block size %u\n", nt); abort(); }
  for (unsigned bz = 0; bz < c.grid.z; bz++)
    for (unsigned by = 0; by < c.grid.y; by++)
      for (unsigned bx = 0; bx < c.grid.x; bx++) {
        Block b;
        b.idx = dim3(bx, by, bz); b.dim = c.block; b.grid = c.grid;
        b.all = std::make_unique<Barrier>(nt);
        for (unsigned w = 0; w < nt / 32; w++) b.warps.push_back(std::make_unique<Barrier>(32));
        b.slots.resize(nt / 32);
        b.smem = static_cast<unsigned char*>(malloc(c.smem ? c.smem : 1));
        memset(b.smem, 0xFF, c.smem ? c.smem : 1);
        cur = &b;
        std::vector<std::thread> ts;
        ts.reserve(nt);
        for (unsigned t = 0; t < nt; t++)
          ts.emplace_back([&, t] {
            tid = uint3{t % c.block.x, (t / c.block.x) % c.block.y, t / (c.block.x * c.block.y)};
            kernel(static_cast<P>(args)...);
            b.all->drop();
            b.warps[t / 32]->drop();
          });
        for (auto& th : ts) th.join();
        free(b.smem);
        cur = nullptr;
      }
}
}  // namespace emu

#define threadIdx (::emu::tid)
#define blockIdx (::emu::cur->idx)
#define blockDim (::emu::cur->dim)
#define gridDim (::emu::cur->grid)
inline void __syncthreads() { emu::cur->all->wait(); }
template <class T> inline T __shfl_xor_sync(unsigned, T v, int off) {
  const unsigned t = threadIdx.x + threadIdx.y * blockDim.x, w = t / 32, lane = t % 32;
  static_assert(sizeof(T) <= 8, "");
  std::memcpy(&emu::cur->slots[w][lane], &v, sizeof v);
  emu::cur->warps[w]->wait();
  T r;
  std::memcpy(&r, &emu::cur->slots[w][lane ^ off], sizeof r);
  emu::cur->warps[w]->wait();
  return r;
}
// Lane i gets lane i + off's value (its own where that is past the warp), as on the GPU.
template <class T> inline T __shfl_down_sync(unsigned, T v, int off) {
  const unsigned t = threadIdx.x + threadIdx.y * blockDim.x, w = t / 32, lane = t % 32;
  static_assert(sizeof(T) <= 8, "");
  std::memcpy(&emu::cur->slots[w][lane], &v, sizeof v);
  emu::cur->warps[w]->wait();
  T r = v;
  if (lane + off < 32) std::memcpy(&r, &emu::cur->slots[w][lane + off], sizeof r);
  emu::cur->warps[w]->wait();
  return r;
}
// A float32 product rounded to nearest (what the kernels write to keep it out of a fused
// multiply-add); the host computes float * float in float32 alone (-O1, no -ffast-math).
inline float __fmul_rn(float a, float b) { return a * b; }
inline int atomicCAS(int* p, int cmp, int val) { std::lock_guard<std::mutex> g(emu::atomics); const int old = *p; if (old == cmp) *p = val; return old; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
template <class T> inline cudaError_t emu_cudaFuncSetAttribute(T*, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize && value > 232448) return cudaErrorInvalidValue;
  return cudaSuccess;
}
