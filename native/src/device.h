// One CUDA device as miniseq uses it: a stream every command goes on, a caching allocator for
// device memory, a pool of pinned host staging buffers for transfers, and a cuBLAS handle bound
// to the stream. No N-API here (see addon.cc): this is plain C++ over the CUDA runtime.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "../host/bf16.h"
#include "../kernels/kernels.h"
#include "cublas.h"

namespace miniseq {

// A failure with a machine-readable code; the addon turns it into a JS Error with `code` (and,
// for ERR_CUDA_OOM, the byte counts as properties).
struct Failure : std::runtime_error {
  std::string code;
  double requested = -1, alive = -1, reserved = -1, free = -1, total = -1;
  Failure(std::string c, const std::string& message) : std::runtime_error(message), code(std::move(c)) {}
};

// "cudaErrorNoDevice: no CUDA-capable device is detected"
std::string cudaText(cudaError_t e);

// Device memory in size classes, each with a free list: a freed block goes back to its list and
// serves the next request of the same class without a cudaMalloc (which is slow and
// synchronizing). Every command runs on one stream, so a block freed after the commands that use
// it were enqueued can be handed to later commands at once: they run after those anyway.
class CachingAllocator {
 public:
  // Requests ≤ 1 MiB round up to 512 B; larger ones to a 64th of their power of two (≤ 1.6%
  // slack: with eighths, 1B-model steps held 10-30% more than they used, and a cap sized by the
  // planner did not fit). A training step asks for the same sizes every step, so the cache still
  // serves them.
  static size_t sizeClass(size_t bytes);
  // Returns nullptr when the device has no memory left even after emptying the cache.
  void* allocate(size_t bytes, size_t* capacity);
  void release(void* p, size_t capacity);
  // Gives every cached block back to the driver.
  void emptyCache();
  size_t reserved() const { return reserved_; }
  size_t cached() const { return cached_; }
  // Caps the bytes held from the driver (0: no cap), as if the GPU had only this much memory.
  void setLimit(size_t bytes) { limit_ = bytes; }
  size_t limit() const { return limit_; }

 private:
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t limit_ = 0;
  size_t reserved_ = 0;  // bytes held from cudaMalloc: in use + cached
  size_t cached_ = 0;
};

// Pinned (page-locked) host buffers in power-of-two classes, so transfers are real DMA that
// neither blocks the host nor serializes the stream. Keeps at most kMaxCached bytes around.
class PinnedPool {
 public:
  static constexpr size_t kMaxCached = size_t(256) << 20;
  void* take(size_t bytes, size_t* capacity);  // nullptr when pinned memory is refused
  void give(void* p, size_t capacity);
  void clear();
  size_t held() const { return held_; }

 private:
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0, held_ = 0;
};

struct Block {
  void* ptr;
  size_t bytes;       // what was asked for
  size_t capacity;    // its size class
  bool host = false;  // the host tier: pinned host memory that kernels reach over the bus
  // A copy on the transfer stream that reads or writes this block and may still run: the
  // compute stream waits for it before the block's next use or its memory's reuse.
  cudaEvent_t pending = nullptr;
  // `pending` is a host update (Device::adamwOnHost) still using this host-tier block: freed, its
  // memory waits for it in Device::updated_ instead of holding up the compute stream.
  bool updating = false;
};

// The host tier: pinned, mapped host buffers (with unified addressing, kernels and copies take
// their pointers as they take device ones), recycled by exact size, as a training step asks for
// the same sizes every step. Every command runs on the one stream, so a block freed after the
// commands that use it were enqueued can be handed to later commands at once.
class HostTier {
 public:
  void* take(size_t bytes, size_t* capacity);  // nullptr when pinned memory is refused
  void give(void* p, size_t capacity);
  void clear();

 private:
  std::unordered_map<size_t, std::vector<void*>> free_;
};

// A device-to-host transfer in flight: staging holds the data, then (at recordOffset) a copy of
// the ErrorRecord taken right after it.
struct Transfer {
  void* staging = nullptr;
  size_t capacity = 0;
  size_t bytes = 0;
  size_t recordOffset = 0;
  cudaEvent_t event = nullptr;
  const ErrorRecord& record() const { return *reinterpret_cast<const ErrorRecord*>(static_cast<char*>(staging) + recordOffset); }
};

struct MemoryStats {
  // held: the size-class capacity of live buffers and scratch (what the planner's heldBytes counts).
  size_t live, peak, reserved, cached, pinned, held, heldPeak;
  // Live host-tier bytes and their peak (not part of live or held).
  size_t hostLive, hostPeak;
};

class Device {
 public:
  // Throws Failure: ERR_CUDA_NO_DRIVER, ERR_CUDA_NO_DEVICE, ERR_CUDA_ARCH, ERR_CUBLAS or ERR_CUDA.
  explicit Device(int ordinal);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // Waits for the stream and gives everything back. Later calls fail with ERR_CUDA_DESTROYED.
  void destroy();
  bool destroyed() const { return destroyed_; }

  uint64_t alloc(size_t bytes);
  void free(uint64_t handle);
  // The live block behind a handle; `kernel` names the caller in the error.
  // Orders the compute stream after any transfer still using it (see Block::pending).
  const Block& block(uint64_t handle, const char* kernel);

  // dst ← src, bytes at the given offsets, between the tiers, on the transfer stream: after the
  // work enqueued so far, overlapping what is enqueued next (MINISEQ_OFFLOAD_STREAM=0: on the
  // compute stream instead).
  void transfer(uint64_t dst, size_t dstOffset, uint64_t src, size_t srcOffset, size_t bytes);

  // A buffer in the host tier (see HostTier); free() takes it like any other.
  uint64_t allocHost(size_t bytes);

  uint64_t hostUpdates() const { return hostUpdates_; }  // adamwOnHost calls so far
  // AdamW on the host (native/host/adamw.h), bitwise the kernel's, enqueued and not waited for:
  // on one of two streams of its own, taken in turn (after everything on the compute stream so
  // far: the gradient's copy, the norm's clipping factor), the scalars (and, without master
  // weights, the weights) are copied into pinned staging, a host function updates m, v (and
  // master) where they are, and the new weights are copied back into `param`. The compute
  // stream waits for that only at the weights' next use, so the updates run while the next
  // step's forward starts on the layers already updated. `scalars`: lr, 1 − β₁ᵗ, 1 − β₂ᵗ, clip
  // (device float32 scalars).
  void adamwOnHost(DType paramType, DType gradType, DType stateType, uint64_t param, uint64_t grad, uint64_t m, uint64_t v,
                   uint64_t master, const float* const scalars[4], double beta1, double beta2, double eps, double decay, long long n);

  // Internal temporaries (reduction partials, copy snapshots): not counted as live.
  void* scratch(size_t bytes, size_t* capacity);
  void releaseScratch(void* p, size_t capacity) {
    memory_.release(p, capacity);
    held_ -= capacity;
  }

  // Host → device, through pinned staging recycled once the copy has run. `data` holds `count`
  // elements of the dtype, except for bfloat16, where it holds `count` floats that are rounded
  // to bfloat16 (to nearest even) on the host, halving what crosses the bus.
  void write(const Block& dst, DType dtype, const void* data, size_t count);
  // Enqueues device → staging copies of the first `bytes` of the block and of the ErrorRecord
  // (then clears the record); a worker waits on the event, the main thread ends it.
  Transfer beginRead(const Block* src, size_t bytes);
  void endRead(const Transfer& t);

  // out = op(a)·op(b) (+ out when accumulate) for row-major [batch, m, k]·[batch, k, n].
  void matmul(const Block& a, const Block& b, const Block& out, DType ab, DType outType, long long batch, long long m,
              long long n, long long k, bool transA, bool transB, bool accumulate, bool tf32);

  // Throws Failure(ERR_CUDA) naming `what` when status is not cudaSuccess.
  void check(cudaError_t status, const char* what) const;

  const Launch& launch() const { return launch_; }
  cudaStream_t stream() const { return stream_; }
  int ordinal() const { return ordinal_; }
  const cudaDeviceProp& props() const { return props_; }
  const Cublas& cublas() const { return cublas_; }
  int cublasVersion() const { return cublasVersion_; }

  MemoryStats memory() const {
    return {live_, peak_, memory_.reserved(), memory_.cached(), pinned_.held(), held_, heldPeak_, hostLive_, hostPeak_};
  }
  void resetPeak() {
    peak_ = live_;
    heldPeak_ = held_;
    hostPeak_ = hostLive_;
  }
  void emptyCache() { memory_.emptyCache(); }
  void setMemoryLimit(size_t bytes) { memory_.setLimit(bytes); }

  // Profiling: a timing event recorded on the stream, tagged with the caller's id. Two marks
  // around an operation bracket its GPU time; collect() waits for the stream and returns the
  // (id, ms since the previous mark) of every mark since the last collect.
  void profileMark(int id);
  std::vector<std::pair<int, float>> profileCollect();

 private:
  void release();
  void collectStaging();
  cudaEvent_t takeEvent();
  void giveEvent(cudaEvent_t e) { events_.push_back(e); }
  // Orders the compute stream after the transfer still using `b`, if any (a GPU-side wait).
  void awaitTransfer(Block& b);
  // Orders `other` after everything enqueued on the compute stream so far (a GPU-side wait).
  void afterCompute(cudaStream_t other);

  int ordinal_ = 0;
  bool destroyed_ = false;
  cudaDeviceProp props_{};
  cudaStream_t stream_ = nullptr;
  cudaStream_t transfers_ = nullptr;  // copies between the tiers (see transfer)
  bool overlap_ = true;
  uint64_t hostUpdates_ = 0;
  // adamwOnHost's two lanes, taken in turn: a stream for the copies and host functions and a
  // staging buffer for the weights (pinned, grown to the largest parameter and kept). Everything
  // that uses a lane's buffer is on its stream, in order; with two, one parameter's weights cross
  // the bus while the next one is updated.
  struct UpdateLane {
    cudaStream_t stream = nullptr;
    void* staging = nullptr;
    size_t bytes = 0;
  };
  UpdateLane lanes_[2];
  int nextLane_ = 0;
  // Each update's four scalars, in a pinned ring of slots (slotDone_: the event after the update
  // that used the slot last).
  static constexpr size_t kUpdateSlots = 1024;
  float* updateScalars_ = nullptr;
  std::vector<cudaEvent_t> slotDone_;
  size_t nextSlot_ = 0;
  // Freed host-tier blocks a host update may still use, with its event: their memory goes back
  // to the host tier once it has run.
  struct Updated {
    void* ptr;
    size_t capacity;
    cudaEvent_t done;
  };
  std::vector<Updated> updated_;
  void collectUpdated(size_t wanted);
  ErrorRecord* errors_ = nullptr;
  Launch launch_{};
  Cublas cublas_;
  cublasHandle cublasHandle_ = nullptr;
  int cublasVersion_ = 0;

  CachingAllocator memory_;
  PinnedPool pinned_;
  HostTier hostTier_;
  size_t hostLive_ = 0, hostPeak_ = 0;
  std::unordered_map<uint64_t, Block> blocks_;
  uint64_t nextHandle_ = 1;
  size_t live_ = 0, peak_ = 0, held_ = 0, heldPeak_ = 0;

  struct PendingStaging {
    void* ptr;
    size_t capacity;
    cudaEvent_t event;
  };
  std::vector<PendingStaging> staging_;  // host → device copies not known to be done
  std::vector<cudaEvent_t> events_;
  std::vector<std::pair<int, cudaEvent_t>> marks_;
  std::vector<cudaEvent_t> timingEvents_;
};

}  // namespace miniseq
