#include "device.h"

#include "../host/adamw.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace miniseq {

std::string cudaText(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

// ---------------------------------------------------------------------------------------------
// Caching allocator
// ---------------------------------------------------------------------------------------------

size_t CachingAllocator::sizeClass(size_t bytes) {
  const size_t small = size_t(1) << 20;
  if (bytes <= 512) return 512;
  if (bytes <= small) return (bytes + 511) / 512 * 512;
  size_t power = small;
  while (power * 2 <= bytes) power *= 2;
  // A 64th of the power of two, but never more than the driver's 2 MiB page: a 1 GiB buffer
  // then holds at most 2 MiB more than it asked for, not 16 (what the planner plans: heldBytes).
  const size_t step = std::min(power / 64, size_t(2) << 20);
  return (bytes + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t bytes, size_t* capacity) {
  const size_t cls = sizeClass(bytes);
  *capacity = cls;
  auto it = free_.find(cls);
  if (it != free_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= cls;
    return p;
  }
  if (limit_ != 0 && reserved_ + cls > limit_) {
    emptyCache();  // cached blocks of other classes count against the cap too
    if (reserved_ + cls > limit_) return nullptr;
  }
  void* p = nullptr;
  if (cudaMalloc(&p, cls) != cudaSuccess) {
    cudaGetLastError();  // an allocation failure is not sticky: clear it
    // Blocks cached in other classes may be what stands in the way.
    emptyCache();
    if (cudaMalloc(&p, cls) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
  }
  reserved_ += cls;
  return p;
}

void CachingAllocator::release(void* p, size_t capacity) {
  if (p == nullptr) return;
  free_[capacity].push_back(p);
  cached_ += capacity;
}

void CachingAllocator::emptyCache() {
  for (auto& [cls, blocks] : free_) {
    for (void* p : blocks) {
      cudaFree(p);  // waits for the device: blocks may still be in use by enqueued commands
      reserved_ -= cls;
    }
    blocks.clear();
  }
  cached_ = 0;
}

// ---------------------------------------------------------------------------------------------
// Pinned staging
// ---------------------------------------------------------------------------------------------

namespace {

// A recycled block of exactly `cls` bytes from a free list, or nullptr.
void* reuse(std::unordered_map<size_t, std::vector<void*>>& free, size_t cls) {
  auto it = free.find(cls);
  if (it == free.end() || it->second.empty()) return nullptr;
  void* p = it->second.back();
  it->second.pop_back();
  return p;
}

// Pinned host memory, or nullptr: when the driver refuses, `release` gives the caller's cached
// blocks back and the allocation is tried once more.
template <class Release>
void* allocPinned(size_t bytes, unsigned flags, Release release) {
  void* p = nullptr;
  if (cudaHostAlloc(&p, bytes, flags) == cudaSuccess) return p;
  cudaGetLastError();
  release();
  if (cudaHostAlloc(&p, bytes, flags) == cudaSuccess) return p;
  cudaGetLastError();
  return nullptr;
}

}  // namespace

void* PinnedPool::take(size_t bytes, size_t* capacity) {
  size_t cls = 4096;
  while (cls < bytes) cls *= 2;
  *capacity = cls;
  if (void* p = reuse(free_, cls)) {
    cached_ -= cls;
    return p;
  }
  void* p = allocPinned(cls, cudaHostAllocDefault, [this] { clear(); });
  if (p != nullptr) held_ += cls;
  return p;
}

void PinnedPool::give(void* p, size_t capacity) {
  if (cached_ + capacity > kMaxCached) {
    cudaFreeHost(p);
    held_ -= capacity;
    return;
  }
  free_[capacity].push_back(p);
  cached_ += capacity;
}

void PinnedPool::clear() {
  for (auto& [cls, list] : free_) {
    for (void* p : list) {
      cudaFreeHost(p);
      held_ -= cls;
    }
    list.clear();
  }
  cached_ = 0;
}

// Host-tier blocks round to 4 KiB pages: exact enough to reuse, no power-of-two waste on
// checkpoints of gigabytes.
void* HostTier::take(size_t bytes, size_t* capacity) {
  const size_t cls = (bytes + 4095) / 4096 * 4096;
  *capacity = cls;
  if (void* p = reuse(free_, cls)) return p;
  return allocPinned(cls, cudaHostAllocMapped | cudaHostAllocPortable, [this] { clear(); });
}

void HostTier::give(void* p, size_t capacity) { free_[capacity].push_back(p); }

void HostTier::clear() {
  for (auto& [cls, list] : free_) {
    for (void* p : list) cudaFreeHost(p);
    list.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// Device
// ---------------------------------------------------------------------------------------------

namespace {

// With the runtime linked statically, a machine without the NVIDIA driver answers
// cudaErrorInsufficientDriver; saying that libcuda itself is missing is the useful reason.
std::string driverMissing() {
  void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (h != nullptr) return "";
  const char* why = dlerror();
  return why ? why : "libcuda.so.1 not found";
}

}  // namespace

Device::Device(int ordinal) : ordinal_(ordinal) {
  if (const char* e = std::getenv("MINISEQ_OFFLOAD_STREAM")) overlap_ = std::string(e) != "0";
  try {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      cudaGetLastError();
      const std::string noDriver = driverMissing();
      if (!noDriver.empty())
        throw Failure("ERR_CUDA_NO_DRIVER", "no NVIDIA driver on this machine (" + noDriver + "); cudaGetDeviceCount: " + cudaText(status));
      throw Failure("ERR_CUDA_NO_DEVICE", "cudaGetDeviceCount failed: " + cudaText(status));
    }
    if (count == 0) throw Failure("ERR_CUDA_NO_DEVICE", "cudaGetDeviceCount found no CUDA device");
    if (ordinal < 0 || ordinal >= count)
      throw Failure("ERR_CUDA_NO_DEVICE", "CUDA device " + std::to_string(ordinal) + " asked for, but this machine has " +
                                              std::to_string(count));
    check(cudaSetDevice(ordinal), "cudaSetDevice");
    check(cudaGetDeviceProperties(&props_, ordinal), "cudaGetDeviceProperties");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaMalloc(reinterpret_cast<void**>(&errors_), sizeof(ErrorRecord)), "cudaMalloc (error record)");
    check(cudaMemsetAsync(errors_, 0, sizeof(ErrorRecord), stream_), "cudaMemsetAsync");
    launch_ = Launch{stream_, props_.multiProcessorCount, errors_};

    // One tiny launch proves the kernels were built for this GPU (sm_90 code, compute_90 PTX).
    cudaError_t probe = fill(launch_, I32, &errors_->code, 1, 0.0);
    if (probe == cudaSuccess) probe = cudaStreamSynchronize(stream_);
    if (probe != cudaSuccess) {
      cudaGetLastError();
      throw Failure("ERR_CUDA_ARCH", "miniseq's kernels (built for sm_90, with compute_90 PTX) do not run on " +
                                         std::string(props_.name) + " (compute capability " + std::to_string(props_.major) +
                                         "." + std::to_string(props_.minor) + "): " + cudaText(probe));
    }

    std::string why;
    if (!cublas_.load(why)) throw Failure("ERR_CUBLAS", why);
    cublasStatus s = cublas_.create(&cublasHandle_);
    if (s != 0) throw Failure("ERR_CUBLAS", "cublasCreate failed: " + cublas_.describe(s));
    s = cublas_.setStream(cublasHandle_, stream_);
    if (s != 0) throw Failure("ERR_CUBLAS", "cublasSetStream failed: " + cublas_.describe(s));
    cublas_.getVersion(cublasHandle_, &cublasVersion_);
  } catch (...) {
    release();
    throw;
  }
}

Device::~Device() {
  // Only what destroy() has not given back; after the runtime has shut down (process exit)
  // nothing should be called, so an undestroyed device is left to the driver's cleanup.
  if (!destroyed_) destroyed_ = true;
}

void Device::check(cudaError_t status, const char* what) const {
  if (status == cudaSuccess) return;
  cudaGetLastError();
  throw Failure("ERR_CUDA", std::string(what) + ": " + cudaText(status));
}

void Device::destroy() {
  if (destroyed_) return;
  release();
  destroyed_ = true;
}

void Device::release() {
  for (UpdateLane& lane : lanes_)
    if (lane.stream != nullptr) cudaStreamSynchronize(lane.stream);
  if (transfers_ != nullptr) cudaStreamSynchronize(transfers_);
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  for (auto& [h, b] : blocks_)
    if (b.pending != nullptr) giveEvent(b.pending);
  for (auto& [id, e] : marks_) cudaEventDestroy(e);
  marks_.clear();
  for (cudaEvent_t e : timingEvents_) cudaEventDestroy(e);
  timingEvents_.clear();
  if (cublasHandle_ != nullptr && cublas_.destroy != nullptr) cublas_.destroy(cublasHandle_);
  cublasHandle_ = nullptr;
  for (auto& [h, b] : blocks_) {
    if (b.ptr == nullptr) continue;
    if (b.host) cudaFreeHost(b.ptr);
    else memory_.release(b.ptr, b.capacity);
  }
  blocks_.clear();
  live_ = 0;
  hostLive_ = 0;
  hostTier_.clear();
  memory_.emptyCache();
  for (const PendingStaging& p : staging_) {
    pinned_.give(p.ptr, p.capacity);
    events_.push_back(p.event);
  }
  staging_.clear();
  pinned_.clear();
  for (const Updated& u : updated_) {
    cudaFreeHost(u.ptr);
    events_.push_back(u.done);
  }
  updated_.clear();
  for (UpdateLane& lane : lanes_) {
    if (lane.staging != nullptr) cudaFreeHost(lane.staging);
    lane.staging = nullptr;
    lane.bytes = 0;
  }
  if (updateScalars_ != nullptr) cudaFreeHost(updateScalars_);
  updateScalars_ = nullptr;
  for (cudaEvent_t e : slotDone_)
    if (e != nullptr) events_.push_back(e);
  slotDone_.clear();
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
  events_.clear();
  if (errors_ != nullptr) cudaFree(errors_);
  errors_ = nullptr;
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  stream_ = nullptr;
  if (transfers_ != nullptr) cudaStreamDestroy(transfers_);
  transfers_ = nullptr;
  for (UpdateLane& lane : lanes_) {
    if (lane.stream != nullptr) cudaStreamDestroy(lane.stream);
    lane.stream = nullptr;
  }
}

uint64_t Device::alloc(size_t bytes) {
  Block b{nullptr, bytes, 0};
  if (bytes > 0) {
    b.ptr = memory_.allocate(bytes, &b.capacity);
    if (b.ptr == nullptr) {
      size_t freeBytes = 0, total = 0;
      cudaMemGetInfo(&freeBytes, &total);
      cudaGetLastError();
      const size_t cap = memory_.limit();
      Failure f("ERR_CUDA_OOM", "cuda.alloc: out of device memory: asked for " + std::to_string(bytes) + " bytes with " +
                                    std::to_string(live_) + " bytes in live buffers (" +
                                    (cap != 0 ? "memory limit " + std::to_string(cap) + " bytes"
                                              : std::to_string(freeBytes) + " bytes free of " + std::to_string(total)) +
                                    ")");
      if (cap != 0) total = cap;
      f.requested = static_cast<double>(bytes);
      f.alive = static_cast<double>(live_);
      f.reserved = static_cast<double>(memory_.reserved());
      f.free = static_cast<double>(freeBytes);
      f.total = static_cast<double>(total);
      throw f;
    }
  }
  const uint64_t h = nextHandle_++;
  blocks_.emplace(h, b);
  live_ += bytes;
  held_ += b.capacity;
  if (live_ > peak_) peak_ = live_;
  if (held_ > heldPeak_) heldPeak_ = held_;
  return h;
}

uint64_t Device::allocHost(size_t bytes) {
  Block b{nullptr, bytes, 0, true};
  if (bytes > 0) {
    if (!updated_.empty()) collectUpdated((bytes + 4095) / 4096 * 4096);
    b.ptr = hostTier_.take(bytes, &b.capacity);
    if (b.ptr == nullptr) {
      Failure f("ERR_CUDA_OOM", "cuda.hostAlloc: no pinned host memory for " + std::to_string(bytes) + " bytes with " +
                                    std::to_string(hostLive_) + " bytes in live host-tier buffers");
      f.requested = static_cast<double>(bytes);
      f.alive = static_cast<double>(hostLive_);
      throw f;
    }
  }
  hostLive_ += bytes;
  if (hostLive_ > hostPeak_) hostPeak_ = hostLive_;
  const uint64_t h = nextHandle_++;
  blocks_.emplace(h, b);
  return h;
}

void Device::free(uint64_t handle) {
  auto it = blocks_.find(handle);
  if (it == blocks_.end()) throw Failure("ERR_CUDA_BUFFER", "cuda.free: buffer " + std::to_string(handle) + " is not live");
  if (it->second.updating) {
    // A host update may still read it: its memory waits for that, the compute stream does not.
    if (it->second.ptr != nullptr) updated_.push_back({it->second.ptr, it->second.capacity, it->second.pending});
    else giveEvent(it->second.pending);
    hostLive_ -= it->second.bytes;
    blocks_.erase(it);
    return;
  }
  awaitTransfer(it->second);  // its memory goes back for reuse by the compute stream
  if (it->second.host) {
    if (it->second.ptr != nullptr) hostTier_.give(it->second.ptr, it->second.capacity);
    hostLive_ -= it->second.bytes;
    blocks_.erase(it);
    return;
  }
  memory_.release(it->second.ptr, it->second.capacity);
  live_ -= it->second.bytes;
  held_ -= it->second.capacity;
  blocks_.erase(it);
}

const Block& Device::block(uint64_t handle, const char* kernel) {
  auto it = blocks_.find(handle);
  if (it == blocks_.end())
    throw Failure("ERR_CUDA_BUFFER", std::string("cuda.") + kernel + ": buffer " + std::to_string(handle) +
                                         " is not a live buffer of this device");
  Block& b = it->second;
  awaitTransfer(b);
  return b;
}

void Device::awaitTransfer(Block& b) {
  if (b.pending == nullptr) return;
  // The host goes on enqueueing; the compute stream waits on the GPU.
  check(cudaStreamWaitEvent(stream_, b.pending, 0), "cudaStreamWaitEvent");
  giveEvent(b.pending);
  b.pending = nullptr;
  b.updating = false;
}

void Device::transfer(uint64_t dstHandle, size_t dstOffset, uint64_t srcHandle, size_t srcOffset, size_t bytes) {
  Block& dst = blocks_.at(dstHandle);
  Block& src = blocks_.at(srcHandle);
  for (Block* b : {&dst, &src})
    if (b->updating) awaitTransfer(*b);  // a host update (another stream) goes first
  char* to = static_cast<char*>(dst.ptr) + dstOffset;
  const char* from = static_cast<const char*>(src.ptr) + srcOffset;
  if (!overlap_) {
    check(cudaMemcpyAsync(to, from, bytes, cudaMemcpyDefault, stream_), "cuda.copy");
    return;
  }
  if (transfers_ == nullptr) check(cudaStreamCreateWithFlags(&transfers_, cudaStreamNonBlocking), "cudaStreamCreate");
  afterCompute(transfers_);  // which wrote src, and last used dst's memory
  check(cudaMemcpyAsync(to, from, bytes, cudaMemcpyDefault, transfers_), "cuda.copy");
  for (Block* b : {&dst, &src}) {
    cudaEvent_t done = takeEvent();
    check(cudaEventRecord(done, transfers_), "cudaEventRecord");
    b->pending = done;
  }
}

namespace {

// One parameter's update, run on a CUDA driver thread when the update stream reaches it
// (cudaLaunchHostFunc), between the copies into the staging buffer and the copy of the new weights
// out of it. It makes no CUDA call, as such a function must not, and cannot fail.
struct HostUpdate {
  host::Storage param, grad, state;
  void* weights;         // the staging buffer: the weights in (without master weights), then out
  const float* scalars;  // lr, 1 − β₁ᵗ, 1 − β₂ᵗ, clip, copied into a pinned slot
  const void* g;
  void* m;
  void* v;
  float* master;
  double beta1, beta2, eps, decay;
  long long n;
};

void CUDART_CB runHostUpdate(void* data) {
  const HostUpdate* u = static_cast<const HostUpdate*>(data);
  const float* k = u->scalars;
  host::adamw(u->param, u->grad, u->state, u->weights, u->g, u->m, u->v, u->master,
              host::AdamWStep::of(u->beta1, u->beta2, u->eps, u->decay, k[0], k[1], k[2], k[3]), u->n);
  delete u;
}

host::Storage storageOf(DType d) { return d == BF16 ? host::Storage::BF16 : host::Storage::F32; }

}  // namespace

void Device::adamwOnHost(DType paramType, DType gradType, DType stateType, uint64_t paramHandle, uint64_t gradHandle, uint64_t mHandle,
                         uint64_t vHandle, uint64_t masterHandle, const float* const scalars[4], double beta1, double beta2, double eps,
                         double decay, long long n) {
  Block& param = blocks_.at(paramHandle);
  Block& grad = blocks_.at(gradHandle);
  Block& m = blocks_.at(mHandle);
  Block& v = blocks_.at(vHandle);
  Block* master = masterHandle == 0 ? nullptr : &blocks_.at(masterHandle);
  // The scalars go to a pinned slot of their own on the compute stream, in its order (so their
  // device buffers may be reused right after); a slot is taken again once its update has run.
  if (updateScalars_ == nullptr) {
    void* p = nullptr;
    check(cudaHostAlloc(&p, kUpdateSlots * 4 * sizeof(float), cudaHostAllocDefault), "cuda.adamw (host): scalars");
    updateScalars_ = static_cast<float*>(p);
    slotDone_.assign(kUpdateSlots, nullptr);
  }
  const size_t slot = nextSlot_++ % kUpdateSlots;
  if (slotDone_[slot] != nullptr) check(cudaEventSynchronize(slotDone_[slot]), "cuda.adamw (host): a scalar slot");
  float* k = updateScalars_ + 4 * slot;
  for (int i = 0; i < 4; i++) check(cudaMemcpyAsync(k + i, scalars[i], 4, cudaMemcpyDeviceToHost, stream_), "cuda.adamw (host): scalars");
  // The rest, on the next lane, after everything on the compute stream so far (it already waits
  // for the gradient's copy). Without the transfer stream (MINISEQ_OFFLOAD_STREAM=0): on the
  // compute stream itself.
  UpdateLane& lane = lanes_[nextLane_];
  nextLane_ ^= 1;
  cudaStream_t updates = stream_;
  if (overlap_) {
    if (lane.stream == nullptr) check(cudaStreamCreateWithFlags(&lane.stream, cudaStreamNonBlocking), "cudaStreamCreate");
    updates = lane.stream;
    afterCompute(updates);
  }
  const size_t bytes = static_cast<size_t>(n) * elementBytes(paramType);
  if (lane.bytes < bytes) {
    // Growing (the first step's larger parameters): once nothing uses the old buffer.
    if (lane.staging != nullptr) {
      check(cudaStreamSynchronize(updates), "cuda.adamw (host): staging");
      cudaFreeHost(lane.staging);
    }
    lane.staging = nullptr;
    lane.bytes = 0;
    if (cudaHostAlloc(&lane.staging, bytes, cudaHostAllocDefault) != cudaSuccess) {
      cudaGetLastError();
      lane.staging = nullptr;
      Failure f("ERR_CUDA_OOM", "cuda.adamw (host): no pinned host memory for " + std::to_string(bytes) +
                                    " bytes of staging (without MINISEQ_HOST_ADAMW=1 AdamW runs on the device)");
      f.requested = static_cast<double>(bytes);
      throw f;
    }
    lane.bytes = bytes;
  }
  char* staging = static_cast<char*>(lane.staging);
  // Without master weights the update starts from the weights themselves.
  if (master == nullptr) check(cudaMemcpyAsync(staging, param.ptr, bytes, cudaMemcpyDefault, updates), "cuda.adamw (host): weights in");
  auto* u = new HostUpdate{storageOf(paramType), storageOf(gradType), storageOf(stateType), staging, k, grad.ptr, m.ptr, v.ptr,
                           master == nullptr ? nullptr : static_cast<float*>(master->ptr), beta1, beta2, eps, decay, n};
  const cudaError_t launched = cudaLaunchHostFunc(updates, runHostUpdate, u);
  if (launched != cudaSuccess) delete u;
  check(launched, "cuda.adamw (host): cudaLaunchHostFunc");
  if (slotDone_[slot] == nullptr) slotDone_[slot] = takeEvent();
  check(cudaEventRecord(slotDone_[slot], updates), "cudaEventRecord");
  check(cudaMemcpyAsync(param.ptr, staging, bytes, cudaMemcpyDefault, updates), "cuda.adamw (host): weights out");
  if (updates != stream_) {
    // The weights' next use waits for the copy; the state's memory is not reused before it.
    for (Block* b : {&param, &grad, &m, &v, master}) {
      if (b == nullptr) continue;
      awaitTransfer(*b);
      b->pending = takeEvent();
      b->updating = b->host;
      check(cudaEventRecord(b->pending, updates), "cudaEventRecord");
    }
  }
  hostUpdates_++;
}

void Device::collectUpdated(size_t wanted) {
  size_t kept = 0;
  for (Updated& u : updated_) {
    const cudaError_t q = u.capacity == wanted ? cudaEventSynchronize(u.done) : cudaEventQuery(u.done);
    if (q == cudaSuccess) {
      hostTier_.give(u.ptr, u.capacity);
      giveEvent(u.done);
      wanted = 0;  // one is enough
    } else {
      if (q != cudaErrorNotReady) cudaGetLastError();
      updated_[kept++] = u;
    }
  }
  updated_.resize(kept);
}

void* Device::scratch(size_t bytes, size_t* capacity) {
  void* p = memory_.allocate(bytes, capacity);
  if (p != nullptr) {
    held_ += *capacity;
    if (held_ > heldPeak_) heldPeak_ = held_;
  }
  if (p == nullptr) {
    Failure f("ERR_CUDA_OOM", "cuda: out of device memory for " + std::to_string(bytes) + " bytes of scratch");
    f.requested = static_cast<double>(bytes);
    f.alive = static_cast<double>(live_);
    throw f;
  }
  return p;
}

void Device::profileMark(int id) {
  cudaEvent_t e = nullptr;
  if (!timingEvents_.empty()) {
    e = timingEvents_.back();
    timingEvents_.pop_back();
  } else {
    check(cudaEventCreate(&e), "cudaEventCreate (profile)");
  }
  check(cudaEventRecord(e, stream_), "cudaEventRecord (profile)");
  marks_.emplace_back(id, e);
}

std::vector<std::pair<int, float>> Device::profileCollect() {
  check(cudaStreamSynchronize(stream_), "cuda.profileCollect");
  std::vector<std::pair<int, float>> out;
  for (size_t i = 0; i < marks_.size(); i++) {
    float ms = 0;
    if (i > 0) check(cudaEventElapsedTime(&ms, marks_[i - 1].second, marks_[i].second), "cudaEventElapsedTime");
    out.emplace_back(marks_[i].first, ms);
  }
  for (auto& [id, e] : marks_) timingEvents_.push_back(e);
  marks_.clear();
  return out;
}

void Device::afterCompute(cudaStream_t other) {
  cudaEvent_t ready = takeEvent();
  check(cudaEventRecord(ready, stream_), "cudaEventRecord");
  check(cudaStreamWaitEvent(other, ready, 0), "cudaStreamWaitEvent");
  giveEvent(ready);  // the wait took the event's state as it is now: it may be recorded again
}

cudaEvent_t Device::takeEvent() {
  if (!events_.empty()) {
    cudaEvent_t e = events_.back();
    events_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
  return e;
}

void Device::collectStaging() {
  size_t kept = 0;
  for (const PendingStaging& p : staging_) {
    const cudaError_t q = cudaEventQuery(p.event);
    if (q == cudaSuccess) {
      pinned_.give(p.ptr, p.capacity);
      giveEvent(p.event);
    } else {
      if (q != cudaErrorNotReady) cudaGetLastError();
      staging_[kept++] = p;
    }
  }
  staging_.resize(kept);
}

void Device::write(const Block& dst, DType dtype, const void* data, size_t count) {
  const size_t bytes = count * elementBytes(dtype);
  if (bytes == 0) return;
  collectStaging();
  size_t capacity = 0;
  void* host = pinned_.take(bytes, &capacity);
  if (host == nullptr) {
    // No pinned memory to be had: a synchronous copy from ordinary memory.
    std::vector<uint16_t> converted;
    const void* from = data;
    if (dtype == BF16) {
      converted.resize(count);
      for (size_t i = 0; i < count; i++) converted[i] = host::toBf16(static_cast<const float*>(data)[i]);
      from = converted.data();
    }
    check(cudaStreamSynchronize(stream_), "cuda.write");
    check(cudaMemcpy(dst.ptr, from, bytes, cudaMemcpyDefault), "cuda.write: cudaMemcpy");
    return;
  }
  if (dtype == BF16) {
    uint16_t* out = static_cast<uint16_t*>(host);
    for (size_t i = 0; i < count; i++) out[i] = host::toBf16(static_cast<const float*>(data)[i]);
  } else {
    std::memcpy(host, data, bytes);
  }
  cudaEvent_t e = takeEvent();
  // Default: the destination may be a host-tier block (unified addressing tells them apart).
  const cudaError_t s = cudaMemcpyAsync(dst.ptr, host, bytes, cudaMemcpyDefault, stream_);
  if (s == cudaSuccess) cudaEventRecord(e, stream_);
  staging_.push_back({host, capacity, e});
  check(s, "cuda.write: cudaMemcpyAsync");
}

Transfer Device::beginRead(const Block* src, size_t bytes) {
  collectStaging();
  Transfer t;
  t.bytes = bytes;
  t.recordOffset = (bytes + 63) / 64 * 64;
  t.staging = pinned_.take(t.recordOffset + sizeof(ErrorRecord), &t.capacity);
  if (t.staging == nullptr) throw Failure("ERR_CUDA_OOM", "cuda.read: no pinned host memory for " + std::to_string(bytes) + " bytes");
  t.event = takeEvent();
  cudaError_t s = cudaSuccess;
  if (bytes > 0) s = cudaMemcpyAsync(t.staging, src->ptr, bytes, cudaMemcpyDefault, stream_);
  if (s == cudaSuccess)
    s = cudaMemcpyAsync(static_cast<char*>(t.staging) + t.recordOffset, errors_, sizeof(ErrorRecord), cudaMemcpyDeviceToHost, stream_);
  if (s == cudaSuccess) s = cudaMemsetAsync(errors_, 0, sizeof(ErrorRecord), stream_);
  if (s == cudaSuccess) s = cudaEventRecord(t.event, stream_);
  if (s != cudaSuccess) {
    // The copies may have been enqueued: keep the staging until the stream has passed them.
    staging_.push_back({t.staging, t.capacity, t.event});
    check(s, "cuda.read");
  }
  return t;
}

void Device::endRead(const Transfer& t) {
  if (destroyed_) {
    cudaFreeHost(t.staging);
    return;
  }
  pinned_.give(t.staging, t.capacity);
  giveEvent(t.event);
}

// Row-major to column-major. cuBLAS reads matrices column-major; a row-major r × c matrix with
// row stride c is, read column-major, its c × r transpose with leading dimension c. So we ask
// cuBLAS for the transpose of what we want:
//
//   out = op(a)·op(b)  (row-major m × n)   ⇔   outᵀ = op(b)ᵀ·op(a)ᵀ  (column-major n × m, ld n)
//
// and pass b as cuBLAS's first operand, a as its second:
// - b untransposed is row-major [k, n]: column-major that is n × k = op(b)ᵀ already → OP_N,
//   ld n. Transposed (b holds [n, k]) it reads as k × n = op(b), so cuBLAS must transpose it →
//   OP_T, ld k.
// - a untransposed is row-major [m, k]: column-major k × m = op(a)ᵀ → OP_N, ld k. Transposed
//   (a holds [k, m]) it reads as m × k = op(a) → OP_T, ld m.
// cuBLAS's (m, n, k) are then our (n, m, k), and each batch entry steps by the matrix sizes.
void Device::matmul(const Block& a, const Block& b, const Block& out, DType ab, DType outType, long long batch, long long m,
                    long long n, long long k, bool transA, bool transB, bool accumulate, bool tf32) {
  if (batch == 0 || m == 0 || n == 0) return;
  if (k == 0) {
    // An empty sum: out = 0, or out unchanged when accumulating.
    if (!accumulate) check(cudaMemsetAsync(out.ptr, 0, out.bytes, stream_), "cuda.matmul");
    return;
  }
  const long long lim = 2147483647LL;
  if (m > lim || n > lim || k > lim || batch > lim) throw Failure("ERR_CUDA_ARG", "cuda.matmul: a dimension exceeds 2^31 - 1");
  const int opFirst = transB ? CUBLAS_OP_T_ : CUBLAS_OP_N_;
  const int ldFirst = static_cast<int>(transB ? k : n);
  const int opSecond = transA ? CUBLAS_OP_T_ : CUBLAS_OP_N_;
  const int ldSecond = static_cast<int>(transA ? m : k);

  int abType = 0, cType = 0, compute = 0;
  const float alpha32 = 1.0f, beta32 = accumulate ? 1.0f : 0.0f;
  const double alpha64 = 1.0, beta64 = accumulate ? 1.0 : 0.0;
  const void* alpha = &alpha32;
  const void* beta = &beta32;
  switch (ab) {
    case F32:
      abType = cType = CUDA_R_32F_;
      compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32_ : CUBLAS_COMPUTE_32F_;
      break;
    case F64:
      abType = cType = CUDA_R_64F_;
      compute = CUBLAS_COMPUTE_64F_;
      alpha = &alpha64;
      beta = &beta64;
      break;
    case BF16:
      // bfloat16 products accumulate in float32; out is bfloat16, or float32 (a weight gradient).
      abType = CUDA_R_16BF_;
      cType = outType == F32 ? CUDA_R_32F_ : CUDA_R_16BF_;
      compute = CUBLAS_COMPUTE_32F_;
      break;
    default:
      throw Failure("ERR_CUDA_ARG", "cuda.matmul: unsupported dtype");
  }
  const cublasStatus s = cublas_.gemmStridedBatchedEx(
      cublasHandle_, opFirst, opSecond, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), alpha, b.ptr, abType,
      ldFirst, n * k, a.ptr, abType, ldSecond, m * k, beta, out.ptr, cType, static_cast<int>(n), m * n, static_cast<int>(batch),
      compute, CUBLAS_GEMM_DEFAULT_);
  if (s != 0) throw Failure("ERR_CUBLAS", "cuda.matmul: cublasGemmStridedBatchedEx failed: " + cublas_.describe(s));
}

}  // namespace miniseq
