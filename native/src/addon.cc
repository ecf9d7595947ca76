// The N-API face of the CUDA backend: a `Device` class whose methods take buffer handles
// (numbers) and plain numbers, check sizes, and enqueue kernels on the device's stream. `read`
// and `sync` return Promises: the copy is enqueued here, and a libuv worker thread waits for it,
// so the JS thread never blocks on the GPU. Types and meaning of every method: see
// src/backends/cuda/native.ts, which is what calls this.
#include <napi.h>

#include <cstring>
#include <memory>

#include "../kernels/kernels.h"
#include "device.h"

#ifndef MINISEQ_CUDA_ARCHS
#define MINISEQ_CUDA_ARCHS "sm_90,compute_90"
#endif

namespace miniseq {
namespace {

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

[[noreturn]] void typeError(const Napi::CallbackInfo& info, size_t i, const char* what) {
  throw Napi::TypeError::New(info.Env(), "miniseq_cuda: argument " + std::to_string(i) + " must be " + what);
}

double number(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsNumber()) typeError(info, i, "a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

long long count(const Napi::CallbackInfo& info, size_t i) {
  const double v = number(info, i);
  if (!(v >= 0 && v <= 9007199254740991.0) || v != static_cast<double>(static_cast<long long>(v)))
    typeError(info, i, "a non-negative integer");
  return static_cast<long long>(v);
}

bool flag(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsBoolean()) typeError(info, i, "a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

DType dtypeArg(const Napi::CallbackInfo& info, size_t i) {
  const long long d = count(info, i);
  if (d > BF16) typeError(info, i, "a dtype code (0 float32, 1 float64, 2 int32, 3 bfloat16)");
  return static_cast<DType>(d);
}

int elemBytesArg(const Napi::CallbackInfo& info, size_t i) {
  const long long b = count(info, i);
  if (b != 2 && b != 4 && b != 8) typeError(info, i, "an element size of 2, 4 or 8 bytes");
  return static_cast<int>(b);
}

Napi::Error toJs(Napi::Env env, const Failure& f) {
  Napi::Error e = Napi::Error::New(env, f.what());
  e.Set("code", Napi::String::New(env, f.code));
  if (f.requested >= 0) e.Set("requested", Napi::Number::New(env, f.requested));
  if (f.alive >= 0) e.Set("alive", Napi::Number::New(env, f.alive));
  if (f.reserved >= 0) e.Set("reserved", Napi::Number::New(env, f.reserved));
  if (f.free >= 0) e.Set("free", Napi::Number::New(env, f.free));
  if (f.total >= 0) e.Set("total", Napi::Number::New(env, f.total));
  return e;
}

const char* kernelName(int k) {
  switch (k) {
    case K_GATHER: return "gather";
    case K_SCATTER_ADD: return "scatterAdd";
    case K_TAKE_ALONG: return "takeAlong";
    case K_PUT_ALONG: return "putAlong";
    case K_CROSS_ENTROPY: return "crossEntropy";
    default: return "kernel";
  }
}

class DeviceWrap;

// ---------------------------------------------------------------------------------------------
// read / sync: the copy is already enqueued; a worker thread waits for it and fills the result.
// ---------------------------------------------------------------------------------------------

class TransferWorker : public Napi::AsyncWorker {
 public:
  TransferWorker(Napi::Env env, DeviceWrap* owner, Napi::Object ownerObject, Transfer t, DType dtype, size_t count, bool data);
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

 private:
  void finish();
  Napi::Promise::Deferred deferred_;
  DeviceWrap* owner_;
  Napi::ObjectReference ownerRef_;  // keeps the device alive while the transfer is in flight
  Napi::Reference<Napi::ArrayBuffer> result_;
  void* dest_ = nullptr;
  Transfer t_;
  DType dtype_;
  size_t count_;
  bool data_;
  int ordinal_;
  std::string code_ = "ERR_CUDA";
};

// ---------------------------------------------------------------------------------------------
// Device
// ---------------------------------------------------------------------------------------------

class DeviceWrap : public Napi::ObjectWrap<DeviceWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Device",
                       {
                           InstanceMethod<&DeviceWrap::Alloc>("alloc"),
                           InstanceMethod<&DeviceWrap::AllocHost>("allocHost"),
                           InstanceMethod<&DeviceWrap::Free>("free"),
                           InstanceMethod<&DeviceWrap::Write>("write"),
                           InstanceMethod<&DeviceWrap::Read>("read"),
                           InstanceMethod<&DeviceWrap::Sync>("sync"),
                           InstanceMethod<&DeviceWrap::Fill>("fill"),
                           InstanceMethod<&DeviceWrap::Iota>("iota"),
                           InstanceMethod<&DeviceWrap::RandomNormal>("randomNormal"),
                           InstanceMethod<&DeviceWrap::Unary>("unary"),
                           InstanceMethod<&DeviceWrap::Binary>("binary"),
                           InstanceMethod<&DeviceWrap::Where>("where"),
                           InstanceMethod<&DeviceWrap::Cast>("cast"),
                           InstanceMethod<&DeviceWrap::Copy>("copy"),
                           InstanceMethod<&DeviceWrap::Reduce>("reduce"),
                           InstanceMethod<&DeviceWrap::Matmul>("matmul"),
                           InstanceMethod<&DeviceWrap::Gather>("gather"),
                           InstanceMethod<&DeviceWrap::ScatterAdd>("scatterAdd"),
                           InstanceMethod<&DeviceWrap::TakeAlong>("takeAlong"),
                           InstanceMethod<&DeviceWrap::PutAlong>("putAlong"),
                           InstanceMethod<&DeviceWrap::CrossEntropy>("crossEntropy"),
                           InstanceMethod<&DeviceWrap::CrossEntropyBackward>("crossEntropyBackward"),
                           InstanceMethod<&DeviceWrap::Logsumexp>("logsumexp"),
                           InstanceMethod<&DeviceWrap::LogsumexpBackward>("logsumexpBackward"),
                           InstanceMethod<&DeviceWrap::Silu>("silu"),
                           InstanceMethod<&DeviceWrap::SiluBackward>("siluBackward"),
                           InstanceMethod<&DeviceWrap::SiluMul>("siluMul"),
                           InstanceMethod<&DeviceWrap::SiluMulBackward>("siluMulBackward"),
                           InstanceMethod<&DeviceWrap::Rope>("rope"),
                           InstanceMethod<&DeviceWrap::AdamW>("adamw"),
                           InstanceMethod<&DeviceWrap::SumOfSquares>("sumOfSquares"),
                           InstanceMethod<&DeviceWrap::RmsNorm>("rmsNorm"),
                           InstanceMethod<&DeviceWrap::RmsNormBackward>("rmsNormBackward"),
                           InstanceMethod<&DeviceWrap::Attention>("attention"),
                           InstanceMethod<&DeviceWrap::AttentionBackward>("attentionBackward"),
                           InstanceMethod<&DeviceWrap::Memory>("memory"),
                           InstanceMethod<&DeviceWrap::ResetPeak>("resetPeak"),
                           InstanceMethod<&DeviceWrap::EmptyCache>("emptyCache"),
                           InstanceMethod<&DeviceWrap::SetMemoryLimit>("setMemoryLimit"),
                           InstanceMethod<&DeviceWrap::ProfileMark>("profileMark"),
                           InstanceMethod<&DeviceWrap::ProfileCollect>("profileCollect"),
                           InstanceMethod<&DeviceWrap::Info>("info"),
                           InstanceMethod<&DeviceWrap::Pending>("pending"),
                           InstanceMethod<&DeviceWrap::Destroy>("destroy"),
                       });
  }

  explicit DeviceWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceWrap>(info) {
    const int ordinal = info.Length() > 0 && info[0].IsNumber() ? static_cast<int>(count(info, 0)) : 0;
    try {
      device_ = std::make_unique<Device>(ordinal);
    } catch (const Failure& f) {
      throw toJs(info.Env(), f);
    }
  }

  void endTransfer(const Transfer& t) {
    pending_--;
    if (device_) device_->endRead(t);
    else cudaFreeHost(t.staging);
  }

 private:
  friend class TransferWorker;

  Device& dev(Napi::Env env) {
    if (!device_ || device_->destroyed())
      throw toJs(env, Failure("ERR_CUDA_DESTROYED", "cuda: the device was destroyed (its Layer's scope closed)"));
    return *device_;
  }

  // The block behind argument i, checked to hold at least `bytes`.
  const Block& block(const Napi::CallbackInfo& info, size_t i, size_t bytes, const char* kernel) {
    const Block& b = dev(info.Env()).block(static_cast<uint64_t>(count(info, i)), kernel);
    if (b.bytes < bytes)
      throw toJs(info.Env(), Failure("ERR_CUDA_ARG", std::string("cuda.") + kernel + ": buffer of " + std::to_string(b.bytes) +
                                                         " bytes is used as " + std::to_string(bytes) + " bytes"));
    return b;
  }

  void launched(Napi::Env env, cudaError_t status, const char* kernel) {
    if (status == cudaSuccess) return;
    cudaGetLastError();
    throw toJs(env, Failure("ERR_CUDA", std::string("cuda.") + kernel + ": " + cudaText(status)));
  }

  // Runs f, turning a Failure into a JS exception.
  template <typename F> auto guarded(Napi::Env env, F&& f) {
    try {
      return f();
    } catch (const Failure& e) {
      throw toJs(env, e);
    }
  }

  // Runs launch(scratch) with `bytes` of device scratch (nullptr when none is needed), giving the
  // block back to the cache as soon as the kernels are enqueued: later users of it run after them
  // on the one stream.
  template <typename F> cudaError_t withScratch(Napi::Env env, Device& d, long long bytes, F&& launch) {
    size_t capacity = 0;
    void* scratch = bytes > 0 ? guarded(env, [&] { return d.scratch(static_cast<size_t>(bytes), &capacity); }) : nullptr;
    const cudaError_t s = launch(scratch);
    if (scratch != nullptr) d.releaseScratch(scratch, capacity);
    return s;
  }

  Napi::Value Alloc(const Napi::CallbackInfo& info) {
    const long long bytes = count(info, 0);
    Device& d = dev(info.Env());
    return Napi::Number::New(info.Env(), static_cast<double>(guarded(info.Env(), [&] { return d.alloc(static_cast<size_t>(bytes)); })));
  }

  // allocHost(bytes): a handle to a host-tier buffer (pinned host memory kernels reach over the bus).
  Napi::Value AllocHost(const Napi::CallbackInfo& info) {
    const long long bytes = count(info, 0);
    Device& d = dev(info.Env());
    return Napi::Number::New(info.Env(), static_cast<double>(guarded(info.Env(), [&] { return d.allocHost(static_cast<size_t>(bytes)); })));
  }

  void Free(const Napi::CallbackInfo& info) {
    Device& d = dev(info.Env());
    guarded(info.Env(), [&] { d.free(static_cast<uint64_t>(count(info, 0))); });
  }

  // write(handle, dtype, data): data is a typed array of the dtype (Float32Array for bfloat16).
  void Write(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 1);
    if (info.Length() < 3 || !info[2].IsTypedArray()) typeError(info, 2, "a typed array");
    Napi::TypedArray data = info[2].As<Napi::TypedArray>();
    const size_t n = data.ElementLength();
    const Block& b = block(info, 0, n * elementBytes(dtype), "write");
    if (b.bytes != n * elementBytes(dtype))
      throw toJs(info.Env(), Failure("ERR_CUDA_ARG", "cuda.write: buffer of " + std::to_string(b.bytes) + " bytes gets " + std::to_string(n) + " elements"));
    const void* src = static_cast<const char*>(data.ArrayBuffer().Data()) + data.ByteOffset();
    Device& d = dev(info.Env());
    guarded(info.Env(), [&] { d.write(b, dtype, src, n); });
  }

  // read(handle, dtype, count): Promise of a Float32Array / Float64Array / Int32Array
  // (Float32Array for bfloat16, widened on the host).
  Napi::Value Read(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 1);
    const long long n = count(info, 2);
    const size_t bytes = static_cast<size_t>(n) * elementBytes(dtype);
    const Block& b = block(info, 0, bytes, "read");
    return startTransfer(info, &b, bytes, dtype, static_cast<size_t>(n), true);
  }

  // sync(): Promise resolved once everything enqueued so far has run (rejects with a recorded
  // index error or a CUDA error, like read).
  Napi::Value Sync(const Napi::CallbackInfo& info) { return startTransfer(info, nullptr, 0, F32, 0, false); }

  Napi::Value startTransfer(const Napi::CallbackInfo& info, const Block* b, size_t bytes, DType dtype, size_t n, bool data) {
    Device& d = dev(info.Env());
    Transfer t = guarded(info.Env(), [&] { return d.beginRead(b, bytes); });
    pending_++;
    auto* w = new TransferWorker(info.Env(), this, Value(), t, dtype, n, data);
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  void Fill(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 1);
    const long long n = count(info, 2);
    const double value = number(info, 3);
    const Block& out = block(info, 0, n * elementBytes(dtype), "fill");
    launched(info.Env(), fill(dev(info.Env()).launch(), dtype, out.ptr, n, value), "fill");
  }

  // randomNormal(out, dtype, n, key, std): the counter-based normals of src/core/random.ts.
  void RandomNormal(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 1);
    const long long n = count(info, 2);
    const double key = number(info, 3), std = number(info, 4);
    if (!(key >= 0 && key <= 4294967295.0 && key == static_cast<double>(static_cast<uint32_t>(key))))
      throw Napi::RangeError::New(info.Env(), "cuda.randomNormal: the key must be a 32-bit unsigned integer");
    const Block& out = block(info, 0, n * elementBytes(dtype), "randomNormal");
    launched(info.Env(), randomNormal(dev(info.Env()).launch(), dtype, out.ptr, n, static_cast<uint32_t>(key), std),
             "randomNormal");
  }

  void Iota(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 1);
    const long long outer = count(info, 2), len = count(info, 3), inner = count(info, 4);
    const Block& out = block(info, 0, outer * len * inner * elementBytes(dtype), "iota");
    launched(info.Env(), iota(dev(info.Env()).launch(), dtype, out.ptr, outer, len, inner), "iota");
  }

  // unary(op, dtype, x, out, n)
  void Unary(const Napi::CallbackInfo& info) {
    const long long op = count(info, 0);
    const DType dtype = dtypeArg(info, 1);
    const long long n = count(info, 4);
    const size_t bytes = n * elementBytes(dtype);
    const Block& x = block(info, 2, bytes, "unary");
    const Block& out = block(info, 3, bytes, "unary");
    launched(info.Env(), unary(dev(info.Env()).launch(), static_cast<UnaryOp>(op), dtype, x.ptr, out.ptr, n), "unary");
  }

  // binary(op, inDtype, outDtype, a, aScalar, b, bScalar, out, n)
  void Binary(const Napi::CallbackInfo& info) {
    const long long op = count(info, 0);
    const DType in = dtypeArg(info, 1), outType = dtypeArg(info, 2);
    const bool aScalar = flag(info, 4), bScalar = flag(info, 6);
    const long long n = count(info, 8);
    const Block& a = block(info, 3, (aScalar ? 1 : n) * elementBytes(in), "binary");
    const Block& b = block(info, 5, (bScalar ? 1 : n) * elementBytes(in), "binary");
    const Block& out = block(info, 7, n * elementBytes(outType), "binary");
    launched(info.Env(), binary(dev(info.Env()).launch(), static_cast<BinaryOp>(op), in, outType, a.ptr, aScalar, b.ptr, bScalar, out.ptr, n),
             "binary");
  }

  // where(condDtype, dtype, cond, cScalar, a, aScalar, b, bScalar, out, n)
  void Where(const Napi::CallbackInfo& info) {
    const DType condType = dtypeArg(info, 0), dtype = dtypeArg(info, 1);
    const bool cScalar = flag(info, 3), aScalar = flag(info, 5), bScalar = flag(info, 7);
    const long long n = count(info, 9);
    const Block& c = block(info, 2, (cScalar ? 1 : n) * elementBytes(condType), "where");
    const Block& a = block(info, 4, (aScalar ? 1 : n) * elementBytes(dtype), "where");
    const Block& b = block(info, 6, (bScalar ? 1 : n) * elementBytes(dtype), "where");
    const Block& out = block(info, 8, n * elementBytes(dtype), "where");
    launched(info.Env(), where(dev(info.Env()).launch(), condType, dtype, c.ptr, cScalar, a.ptr, aScalar, b.ptr, bScalar, out.ptr, n),
             "where");
  }

  // cast(from, to, x, out, n)
  void Cast(const Napi::CallbackInfo& info) {
    const DType from = dtypeArg(info, 0), to = dtypeArg(info, 1);
    const long long n = count(info, 4);
    const Block& x = block(info, 2, n * elementBytes(from), "cast");
    const Block& out = block(info, 3, n * elementBytes(to), "cast");
    launched(info.Env(), cast(dev(info.Env()).launch(), from, to, x.ptr, out.ptr, n), "cast");
  }

  // copy(elemBytes, src, dst, params): params is a Float64Array
  // [rank, srcOffset, dstOffset, shape…, srcStrides…, dstStrides…] of an already simplified view
  // (the TS side merges dims). When src is dst, src is snapshotted first.
  void Copy(const Napi::CallbackInfo& info) {
    const int eb = elemBytesArg(info, 0);
    if (info.Length() < 4 || !info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
      typeError(info, 3, "a Float64Array");
    Napi::Float64Array p = info[3].As<Napi::Float64Array>();
    const long long rank = p.ElementLength() > 0 ? static_cast<long long>(p[0]) : -1;
    if (rank < 0 || rank > kMaxRank || p.ElementLength() != static_cast<size_t>(3 + 3 * rank))
      throw toJs(info.Env(), Failure("ERR_CUDA_ARG", "cuda.copy: malformed view parameters (rank ≤ 8)"));
    CopyParams c{};
    c.rank = static_cast<int>(rank);
    c.srcOffset = static_cast<long long>(p[1]);
    c.dstOffset = static_cast<long long>(p[2]);
    c.count = 1;
    long long sLo = c.srcOffset, sHi = c.srcOffset, dLo = c.dstOffset, dHi = c.dstOffset;
    for (int k = 0; k < c.rank; k++) {
      c.shape[k] = static_cast<long long>(p[3 + k]);
      c.srcStride[k] = static_cast<long long>(p[3 + rank + k]);
      c.dstStride[k] = static_cast<long long>(p[3 + 2 * rank + k]);
      c.count *= c.shape[k];
      const long long rs = (c.shape[k] - 1) * c.srcStride[k], rd = (c.shape[k] - 1) * c.dstStride[k];
      (rs < 0 ? sLo : sHi) += rs;
      (rd < 0 ? dLo : dHi) += rd;
    }
    if (c.count == 0) return;
    const Block& src = block(info, 1, 0, "copy");
    const Block& dst = block(info, 2, 0, "copy");
    if (sLo < 0 || dLo < 0 || static_cast<size_t>(sHi + 1) * eb > src.bytes || static_cast<size_t>(dHi + 1) * eb > dst.bytes)
      throw toJs(info.Env(), Failure("ERR_CUDA_ARG", "cuda.copy: view reaches outside its buffer"));
    Device& d = dev(info.Env());
    const void* from = src.ptr;
    void* snapshot = nullptr;
    size_t snapshotCapacity = 0;
    if (src.ptr == dst.ptr) {
      // Reading from a snapshot keeps an overlapping in-place copy well defined.
      snapshot = guarded(info.Env(), [&] { return d.scratch(src.bytes, &snapshotCapacity); });
      d.check(cudaMemcpyAsync(snapshot, src.ptr, src.bytes, cudaMemcpyDefault, d.stream()), "cuda.copy");
      from = snapshot;
    }
    cudaError_t s;
    if (c.rank == 1 && c.srcStride[0] == 1 && c.dstStride[0] == 1 && src.host != dst.host) {
      // Between the tiers (offloading): on the transfer stream, overlapping the compute.
      guarded(info.Env(), [&] {
        d.transfer(static_cast<uint64_t>(count(info, 2)), c.dstOffset * eb, static_cast<uint64_t>(count(info, 1)),
                   c.srcOffset * eb, c.count * eb);
      });
      s = cudaSuccess;
    } else if (c.rank == 1 && c.srcStride[0] == 1 && c.dstStride[0] == 1) {
      s = cudaMemcpyAsync(static_cast<char*>(dst.ptr) + c.dstOffset * eb, static_cast<const char*>(from) + c.srcOffset * eb,
                          c.count * eb, cudaMemcpyDefault, d.stream());
    } else {
      s = copy(d.launch(), eb, from, dst.ptr, c);
    }
    // The snapshot goes back to the cache now: later users of it run after this copy.
    if (snapshot != nullptr) d.releaseScratch(snapshot, snapshotCapacity);
    launched(info.Env(), s, "copy");
  }

  // reduce(op, dtype, x, out, outer, axis, inner)
  void Reduce(const Napi::CallbackInfo& info) {
    const long long op = count(info, 0);
    const DType dtype = dtypeArg(info, 1);
    const long long outer = count(info, 4), axis = count(info, 5), inner = count(info, 6);
    const Block& x = block(info, 2, outer * axis * inner * elementBytes(dtype), "reduce");
    const Block& out = block(info, 3, outer * inner * elementBytes(dtype), "reduce");
    Device& d = dev(info.Env());
    const long long scratchBytes = reduceScratch(d.launch(), outer, axis, inner) * static_cast<long long>(sizeof(double));
    launched(info.Env(), withScratch(info.Env(), d, scratchBytes, [&](void* scratch) {
      return reduce(d.launch(), static_cast<ReduceOp>(op), dtype, x.ptr, out.ptr, outer, axis, inner, static_cast<double*>(scratch));
    }), "reduce");
  }

  // sumOfSquares(dtype, x, out, rows, cols): Σ x² of x [rows, cols] into the float32 scalar out.
  void SumOfSquares(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const long long rows = count(info, 3), cols = count(info, 4);
    const Block& x = block(info, 1, rows * cols * elementBytes(dtype), "sumOfSquares");
    const Block& out = block(info, 2, 4, "sumOfSquares");
    Device& d = dev(info.Env());
    // One scratch block: the float64 partials, then the float32 column sums.
    const long long partials = sumOfSquaresScratch(d.launch(), rows, cols) * static_cast<long long>(sizeof(double));
    const long long bytes = partials + (rows > 1 ? cols * static_cast<long long>(sizeof(float)) : 0);
    launched(info.Env(), withScratch(info.Env(), d, bytes, [&](void* scratch) {
      char* base = static_cast<char*>(scratch);
      return sumOfSquares(d.launch(), dtype, x.ptr, static_cast<float*>(out.ptr), rows, cols,
                          rows > 1 ? reinterpret_cast<float*>(base + partials) : nullptr, reinterpret_cast<double*>(base));
    }), "sumOfSquares");
  }

  // matmul(a, b, out, abDtype, outDtype, batch, m, n, k, transA, transB, accumulate, tf32)
  void Matmul(const Napi::CallbackInfo& info) {
    const DType ab = dtypeArg(info, 3), outType = dtypeArg(info, 4);
    const long long batch = count(info, 5), m = count(info, 6), n = count(info, 7), k = count(info, 8);
    const bool transA = flag(info, 9), transB = flag(info, 10), accumulate = flag(info, 11), tf32 = flag(info, 12);
    const Block& a = block(info, 0, batch * m * k * elementBytes(ab), "matmul");
    const Block& b = block(info, 1, batch * k * n * elementBytes(ab), "matmul");
    const Block& out = block(info, 2, batch * m * n * elementBytes(outType), "matmul");
    Device& d = dev(info.Env());
    guarded(info.Env(), [&] { d.matmul(a, b, out, ab, outType, batch, m, n, k, transA, transB, accumulate, tf32); });
  }

  // gather(elemBytes, table, rows, idx, n, out, width)
  void Gather(const Napi::CallbackInfo& info) {
    const int eb = elemBytesArg(info, 0);
    const long long rows = count(info, 2), n = count(info, 4), width = count(info, 6);
    const Block& table = block(info, 1, rows * width * eb, "gather");
    const Block& idx = block(info, 3, n * 4, "gather");
    const Block& out = block(info, 5, n * width * eb, "gather");
    launched(info.Env(), gather(dev(info.Env()).launch(), eb, table.ptr, rows, static_cast<const int32_t*>(idx.ptr), n, out.ptr, width),
             "gather");
  }

  // scatterAdd(dtype, idx, n, src, out, rows, width): out = 0, then out[idx[i], :] += src[i, :]
  void ScatterAdd(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const long long n = count(info, 2), rows = count(info, 5), width = count(info, 6);
    const Block& idx = block(info, 1, n * 4, "scatterAdd");
    const Block& src = block(info, 3, n * width * elementBytes(dtype), "scatterAdd");
    const Block& out = block(info, 4, rows * width * elementBytes(dtype), "scatterAdd");
    Device& d = dev(info.Env());
    d.check(cudaMemsetAsync(out.ptr, 0, rows * width * elementBytes(dtype), d.stream()), "cuda.scatterAdd");
    launched(info.Env(), withScratch(info.Env(), d, scatterAddScratch(n), [&](void* scratch) {
      return scatterAdd(d.launch(), dtype, static_cast<const int32_t*>(idx.ptr), n, src.ptr, out.ptr, rows, width, scratch);
    }), "scatterAdd");
  }

  // takeAlong(elemBytes, x, idx, n, out, width): out[i] = x[i, idx[i]]
  void TakeAlong(const Napi::CallbackInfo& info) {
    const int eb = elemBytesArg(info, 0);
    const long long n = count(info, 3), width = count(info, 5);
    const Block& x = block(info, 1, n * width * eb, "takeAlong");
    const Block& idx = block(info, 2, n * 4, "takeAlong");
    const Block& out = block(info, 4, n * eb, "takeAlong");
    launched(info.Env(), takeAlong(dev(info.Env()).launch(), eb, x.ptr, static_cast<const int32_t*>(idx.ptr), n, out.ptr, width),
             "takeAlong");
  }

  // putAlong(elemBytes, idx, n, src, out, width): out = 0, then out[i, idx[i]] = src[i]
  void PutAlong(const Napi::CallbackInfo& info) {
    const int eb = elemBytesArg(info, 0);
    const long long n = count(info, 2), width = count(info, 5);
    const Block& idx = block(info, 1, n * 4, "putAlong");
    const Block& src = block(info, 3, n * eb, "putAlong");
    const Block& out = block(info, 4, n * width * eb, "putAlong");
    Device& d = dev(info.Env());
    d.check(cudaMemsetAsync(out.ptr, 0, n * width * eb, d.stream()), "cuda.putAlong");
    launched(info.Env(), putAlong(d.launch(), eb, static_cast<const int32_t*>(idx.ptr), n, src.ptr, out.ptr, width), "putAlong");
  }

  // -------------------------------------------------------------------------------------------
  // Fused routines (kernels.h says what each computes). Every operand of a call has `dtype`
  // except the int32 targets; cuda/fused.ts has cast cotangents to it already.
  // -------------------------------------------------------------------------------------------

  // An ignore index no int32 target can equal when it is not an int32 itself.
  static long long ignoreArg(const Napi::CallbackInfo& info, size_t i) {
    const double v = number(info, i);
    if (v == static_cast<double>(static_cast<int32_t>(v)) && v >= -2147483648.0 && v <= 2147483647.0) return static_cast<long long>(v);
    return static_cast<long long>(1) << 40;
  }

  // crossEntropy(dtype, logits, targets, nll, n, v, ignoreIndex)
  void CrossEntropy(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const long long n = count(info, 4), v = count(info, 5), ignore = ignoreArg(info, 6);
    const size_t eb = elementBytes(dtype);
    const Block& x = block(info, 1, n * v * eb, "crossEntropy");
    const Block& t = block(info, 2, n * 4, "crossEntropy");
    const Block& out = block(info, 3, n * eb, "crossEntropy");
    launched(info.Env(), crossEntropy(dev(info.Env()).launch(), dtype, x.ptr, static_cast<const int32_t*>(t.ptr), n, v, ignore, out.ptr),
             "crossEntropy");
  }

  // crossEntropyBackward(dtype, logits, targets, dnll, dlogits, n, v, ignoreIndex)
  void CrossEntropyBackward(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const long long n = count(info, 5), v = count(info, 6), ignore = ignoreArg(info, 7);
    const size_t eb = elementBytes(dtype);
    const Block& x = block(info, 1, n * v * eb, "crossEntropy.vjp");
    const Block& t = block(info, 2, n * 4, "crossEntropy.vjp");
    const Block& g = block(info, 3, n * eb, "crossEntropy.vjp");
    const Block& dx = block(info, 4, n * v * eb, "crossEntropy.vjp");
    launched(info.Env(), crossEntropyBackward(dev(info.Env()).launch(), dtype, x.ptr, static_cast<const int32_t*>(t.ptr), g.ptr, n, v, ignore, dx.ptr),
             "crossEntropy.vjp");
  }

  // logsumexp(dtype, x, lse, rows, v)
  void Logsumexp(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const long long rows = count(info, 3), v = count(info, 4);
    const size_t eb = elementBytes(dtype);
    const Block& x = block(info, 1, rows * v * eb, "logsumexp");
    const Block& out = block(info, 2, rows * eb, "logsumexp");
    launched(info.Env(), logsumexp(dev(info.Env()).launch(), dtype, x.ptr, rows, v, out.ptr), "logsumexp");
  }

  // logsumexpBackward(dtype, x, lse, g, dx, rows, v)
  void LogsumexpBackward(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const long long rows = count(info, 5), v = count(info, 6);
    const size_t eb = elementBytes(dtype);
    const Block& x = block(info, 1, rows * v * eb, "logsumexp.vjp");
    const Block& lse = block(info, 2, rows * eb, "logsumexp.vjp");
    const Block& g = block(info, 3, rows * eb, "logsumexp.vjp");
    const Block& dx = block(info, 4, rows * v * eb, "logsumexp.vjp");
    launched(info.Env(), logsumexpBackward(dev(info.Env()).launch(), dtype, x.ptr, lse.ptr, g.ptr, rows, v, dx.ptr), "logsumexp.vjp");
  }

  // silu(dtype, x, y, n)
  void Silu(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const long long n = count(info, 3);
    const size_t bytes = n * elementBytes(dtype);
    const Block& x = block(info, 1, bytes, "silu");
    const Block& y = block(info, 2, bytes, "silu");
    launched(info.Env(), silu(dev(info.Env()).launch(), dtype, x.ptr, y.ptr, n), "silu");
  }

  // siluBackward(dtype, x, g, dx, n)
  void SiluBackward(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const long long n = count(info, 4);
    const size_t bytes = n * elementBytes(dtype);
    const Block& x = block(info, 1, bytes, "silu.vjp");
    const Block& g = block(info, 2, bytes, "silu.vjp");
    const Block& dx = block(info, 3, bytes, "silu.vjp");
    launched(info.Env(), siluBackward(dev(info.Env()).launch(), dtype, x.ptr, g.ptr, dx.ptr, n), "silu.vjp");
  }

  // rope(dtype, x, y, rows, s, d, theta, offset, inverse[, frequencies]): frequencies, a
  // Float64Array of d/2 (a scaled RoPE's), replace θ^(−2i/d)
  void Rope(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const long long rows = count(info, 3), s = count(info, 4), d = count(info, 5);
    const size_t bytes = rows * s * d * elementBytes(dtype);
    const Block& x = block(info, 1, bytes, "rope");
    const Block& y = block(info, 2, bytes, "rope");
    const double* frequencies = nullptr;
    if (info.Length() > 9 && !info[9].IsUndefined()) {
      if (!info[9].IsTypedArray() || info[9].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
          static_cast<long long>(info[9].As<Napi::Float64Array>().ElementLength()) != d / 2 || d / 2 > kRopeMaxPairs)
        typeError(info, 9, ("a Float64Array of d/2 = " + std::to_string(d / 2) + " frequencies (at most " +
                            std::to_string(kRopeMaxPairs) + ")").c_str());
      frequencies = info[9].As<Napi::Float64Array>().Data();
    }
    launched(info.Env(),
             rope(dev(info.Env()).launch(), dtype, x.ptr, y.ptr, rows, s, d, number(info, 6), number(info, 7), flag(info, 8), frequencies),
             "rope");
  }

  // siluMul(dtype, a, b, y, n)
  void SiluMul(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const long long n = count(info, 4);
    const size_t bytes = n * elementBytes(dtype);
    const Block& a = block(info, 1, bytes, "siluMul");
    const Block& b = block(info, 2, bytes, "siluMul");
    const Block& y = block(info, 3, bytes, "siluMul");
    launched(info.Env(), siluMul(dev(info.Env()).launch(), dtype, a.ptr, b.ptr, y.ptr, n), "siluMul");
  }

  // siluMulBackward(dtype, a, b, g, da, db, n)
  void SiluMulBackward(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const long long n = count(info, 6);
    const size_t bytes = n * elementBytes(dtype);
    const Block& a = block(info, 1, bytes, "siluMul.vjp");
    const Block& b = block(info, 2, bytes, "siluMul.vjp");
    const Block& g = block(info, 3, bytes, "siluMul.vjp");
    const Block& da = block(info, 4, bytes, "siluMul.vjp");
    const Block& db = block(info, 5, bytes, "siluMul.vjp");
    launched(info.Env(), siluMulBackward(dev(info.Env()).launch(), dtype, a.ptr, b.ptr, g.ptr, da.ptr, db.ptr, n), "siluMul.vjp");
  }

  // rmsNorm(dtype, x, w, y, rows, d, eps)
  void RmsNorm(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const long long rows = count(info, 4), d = count(info, 5);
    const size_t eb = elementBytes(dtype);
    const Block& x = block(info, 1, rows * d * eb, "rmsNorm");
    const Block& w = block(info, 2, d * eb, "rmsNorm");
    const Block& y = block(info, 3, rows * d * eb, "rmsNorm");
    launched(info.Env(), rmsNorm(dev(info.Env()).launch(), dtype, x.ptr, w.ptr, y.ptr, rows, d, number(info, 6)), "rmsNorm");
  }

  // rmsNormBackward(dtype, x, w, g, dx, dw, rows, d, eps)
  void RmsNormBackward(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const long long rows = count(info, 6), d = count(info, 7);
    const size_t eb = elementBytes(dtype);
    const Block& x = block(info, 1, rows * d * eb, "rmsNorm.vjp");
    const Block& w = block(info, 2, d * eb, "rmsNorm.vjp");
    const Block& g = block(info, 3, rows * d * eb, "rmsNorm.vjp");
    const Block& dx = block(info, 4, rows * d * eb, "rmsNorm.vjp");
    const Block& dw = block(info, 5, d * eb, "rmsNorm.vjp");
    Device& dv = dev(info.Env());
    launched(info.Env(), withScratch(info.Env(), dv, rmsNormScratch(dv.launch(), dtype, rows, d), [&](void* scratch) {
      return rmsNormBackward(dv.launch(), dtype, x.ptr, w.ptr, g.ptr, dx.ptr, dw.ptr, rows, d, number(info, 8), scratch);
    }), "rmsNorm.vjp");
  }

  // adamw(paramType, gradType, stateType, param, grad, m, v, master (0: none), lr, c1, c2, clip,
  //       beta1, beta2, eps, decay, n, onHost (1: Device::adamwOnHost))
  void AdamW(const Napi::CallbackInfo& info) {
    const DType p = dtypeArg(info, 0), g = dtypeArg(info, 1), s = dtypeArg(info, 2);
    const long long n = count(info, 16);
    const Block& param = block(info, 3, n * elementBytes(p), "adamw");
    const Block& grad = block(info, 4, n * elementBytes(g), "adamw");
    const Block& m = block(info, 5, n * elementBytes(s), "adamw");
    const Block& v = block(info, 6, n * elementBytes(s), "adamw");
    const Block* masterBlock = count(info, 7) == 0 ? nullptr : &block(info, 7, n * 4, "adamw");
    float* master = masterBlock == nullptr ? nullptr : static_cast<float*>(masterBlock->ptr);
    const auto scalar = [&](size_t i) { return static_cast<const float*>(block(info, i, 4, "adamw").ptr); };
    Device& dv = dev(info.Env());
    // State offloaded to the host tier (`--offload optimizer`), and the caller asks: the update
    // runs where that state lives.
    if (count(info, 17) == 1) {
      if (!(grad.host && m.host && v.host && (masterBlock == nullptr || masterBlock->host)) || param.host)
        throw toJs(info.Env(), Failure("ERR_CUDA_ARG",
                                       "cuda.adamw: on the host takes grad, m, v (and master) in the host tier and the weights on the device"));
      const float* const scalars[4] = {scalar(8), scalar(9), scalar(10), scalar(11)};
      const auto handle = [&](size_t i) { return static_cast<uint64_t>(count(info, i)); };
      dv.adamwOnHost(p, g, s, handle(3), handle(4), handle(5), handle(6), handle(7), scalars, number(info, 12), number(info, 13),
                     number(info, 14), number(info, 15), n);
      return;
    }
    launched(info.Env(),
             adamw(dev(info.Env()).launch(), p, g, s, param.ptr, grad.ptr, m.ptr, v.ptr, master, scalar(8), scalar(9), scalar(10), scalar(11),
                   number(info, 12), number(info, 13), number(info, 14), number(info, 15), n),
             "adamw");
  }

  // Attention's sizes from arguments first.. first + 4: b, h, hkv, s, d.
  struct AttentionShape {
    long long b, h, hkv, s, d;
  };
  AttentionShape attentionShape(const Napi::CallbackInfo& info, size_t first, const char* kernel) {
    const AttentionShape a{count(info, first), count(info, first + 1), count(info, first + 2), count(info, first + 3), count(info, first + 4)};
    if (a.hkv == 0 || a.h % a.hkv != 0 || a.h > 2147483647LL)
      throw toJs(info.Env(), Failure("ERR_CUDA_ARG", std::string("cuda.") + kernel + ": " + std::to_string(a.h) +
                                                         " query heads are not a multiple of " + std::to_string(a.hkv) + " kv heads"));
    if (a.d > kAttentionMaxHeadDim)
      throw toJs(info.Env(), Failure("ERR_CUDA_ARG", std::string("cuda.") + kernel + ": head dim " + std::to_string(a.d) + " exceeds " +
                                                         std::to_string(kAttentionMaxHeadDim)));
    return a;
  }

  // attention(dtype, q, k, v, o, lse, b, h, hkv, s, d): lse in the compute type (float32 for bf16).
  void Attention(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const AttentionShape a = attentionShape(info, 6, "attention");
    const size_t eb = elementBytes(dtype), qBytes = a.b * a.h * a.s * a.d * eb, kvBytes = a.b * a.hkv * a.s * a.d * eb;
    const Block& q = block(info, 1, qBytes, "attention");
    const Block& k = block(info, 2, kvBytes, "attention");
    const Block& v = block(info, 3, kvBytes, "attention");
    const Block& o = block(info, 4, qBytes, "attention");
    const Block& lse = block(info, 5, a.b * a.h * a.s * computeBytes(dtype), "attention");
    launched(info.Env(), attentionForward(dev(info.Env()).launch(), dtype, q.ptr, k.ptr, v.ptr, o.ptr, lse.ptr, a.b, a.h, a.hkv, a.s, a.d),
             "attention");
  }

  // attentionBackward(dtype, q, k, v, o, lse, dO, dLse, dq, dk, dv, b, h, hkv, s, d): dLse 0 for none;
  // lse and dLse in the compute type, as the forward writes lse.
  void AttentionBackward(const Napi::CallbackInfo& info) {
    const DType dtype = dtypeArg(info, 0);
    const AttentionShape a = attentionShape(info, 11, "attention.vjp");
    const size_t eb = elementBytes(dtype), qBytes = a.b * a.h * a.s * a.d * eb, kvBytes = a.b * a.hkv * a.s * a.d * eb;
    const size_t rowBytes = a.b * a.h * a.s * computeBytes(dtype);
    const Block& q = block(info, 1, qBytes, "attention.vjp");
    const Block& k = block(info, 2, kvBytes, "attention.vjp");
    const Block& v = block(info, 3, kvBytes, "attention.vjp");
    const Block& o = block(info, 4, qBytes, "attention.vjp");
    const Block& lse = block(info, 5, rowBytes, "attention.vjp");
    const Block& dO = block(info, 6, qBytes, "attention.vjp");
    const void* dLse = count(info, 7) == 0 ? nullptr : block(info, 7, rowBytes, "attention.vjp").ptr;
    const Block& dq = block(info, 8, qBytes, "attention.vjp");
    const Block& dk = block(info, 9, kvBytes, "attention.vjp");
    const Block& dv = block(info, 10, kvBytes, "attention.vjp");
    Device& d = dev(info.Env());
    launched(info.Env(), withScratch(info.Env(), d, attentionScratch(dtype, a.b, a.h, a.s, a.d), [&](void* scratch) {
      return attentionBackward(d.launch(), dtype, q.ptr, k.ptr, v.ptr, o.ptr, lse.ptr, dO.ptr, dLse, dq.ptr, dk.ptr, dv.ptr,
                               a.b, a.h, a.hkv, a.s, a.d, scratch);
    }), "attention.vjp");
  }

  Napi::Value Memory(const Napi::CallbackInfo& info) {
    const MemoryStats m = dev(info.Env()).memory();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("live", static_cast<double>(m.live));
    o.Set("peak", static_cast<double>(m.peak));
    o.Set("reserved", static_cast<double>(m.reserved));
    o.Set("cached", static_cast<double>(m.cached));
    o.Set("pinned", static_cast<double>(m.pinned));
    o.Set("held", static_cast<double>(m.held));
    o.Set("heldPeak", static_cast<double>(m.heldPeak));
    o.Set("hostLive", static_cast<double>(m.hostLive));
    o.Set("hostPeak", static_cast<double>(m.hostPeak));
    return o;
  }

  void ResetPeak(const Napi::CallbackInfo& info) { dev(info.Env()).resetPeak(); }
  void EmptyCache(const Napi::CallbackInfo& info) { dev(info.Env()).emptyCache(); }
  // profileMark(id); profileCollect() → Float64Array [id, ms since the previous mark, ...]
  void ProfileMark(const Napi::CallbackInfo& info) {
    const int id = static_cast<int>(count(info, 0));
    Device& d = dev(info.Env());
    guarded(info.Env(), [&] { d.profileMark(id); });
  }
  Napi::Value ProfileCollect(const Napi::CallbackInfo& info) {
    Device& d = dev(info.Env());
    const std::vector<std::pair<int, float>> marks = guarded(info.Env(), [&] { return d.profileCollect(); });
    Napi::Float64Array out = Napi::Float64Array::New(info.Env(), marks.size() * 2);
    for (size_t i = 0; i < marks.size(); i++) {
      out[2 * i] = marks[i].first;
      out[2 * i + 1] = marks[i].second;
    }
    return out;
  }

  // setMemoryLimit(bytes): 0 lifts the cap.
  void SetMemoryLimit(const Napi::CallbackInfo& info) {
    const double bytes = info[0].As<Napi::Number>().DoubleValue();
    if (!(bytes >= 0)) throw Napi::RangeError::New(info.Env(), "setMemoryLimit: bytes must be ≥ 0");
    dev(info.Env()).setMemoryLimit(static_cast<size_t>(bytes));
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Device& d = dev(info.Env());
    const cudaDeviceProp& p = d.props();
    int runtime = 0, driver = 0;
    cudaRuntimeGetVersion(&runtime);
    cudaDriverGetVersion(&driver);
    size_t freeBytes = 0, total = 0;
    cudaMemGetInfo(&freeBytes, &total);
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("ordinal", static_cast<double>(d.ordinal()));
    o.Set("name", std::string(p.name));
    o.Set("computeCapability", std::to_string(p.major) + "." + std::to_string(p.minor));
    o.Set("multiProcessors", static_cast<double>(p.multiProcessorCount));
    o.Set("totalMemory", static_cast<double>(total));
    o.Set("freeMemory", static_cast<double>(freeBytes));
    o.Set("l2Cache", static_cast<double>(p.l2CacheSize));
    o.Set("cudaRuntime", static_cast<double>(runtime));
    o.Set("cudaDriver", static_cast<double>(driver));
    o.Set("cublas", static_cast<double>(d.cublasVersion()));
    o.Set("cublasPath", d.cublas().path);
    o.Set("archs", MINISEQ_CUDA_ARCHS);
    o.Set("hostUpdates", static_cast<double>(d.hostUpdates()));
    return o;
  }

  Napi::Value Pending(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pending_); }

  void Destroy(const Napi::CallbackInfo& info) {
    if (pending_ > 0)
      throw toJs(info.Env(), Failure("ERR_CUDA_BUSY", "cuda.destroy: " + std::to_string(pending_) + " reads are still in flight"));
    if (device_) device_->destroy();
  }

  std::unique_ptr<Device> device_;
  int pending_ = 0;
};

TransferWorker::TransferWorker(Napi::Env env, DeviceWrap* owner, Napi::Object ownerObject, Transfer t, DType dtype, size_t count,
                               bool data)
    : Napi::AsyncWorker(env, "miniseq.cuda.read"),
      deferred_(Napi::Promise::Deferred::New(env)),
      owner_(owner),
      ownerRef_(Napi::Persistent(ownerObject)),
      t_(t),
      dtype_(dtype),
      count_(count),
      data_(data),
      ordinal_(owner->device_->ordinal()) {
  if (data_) {
    const size_t hostBytes = count * (dtype == BF16 ? 4 : elementBytes(dtype));
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, hostBytes);
    dest_ = ab.Data();
    result_ = Napi::Persistent(ab);
  }
}

void TransferWorker::Execute() {
  cudaSetDevice(ordinal_);
  const cudaError_t s = cudaEventSynchronize(t_.event);
  if (s != cudaSuccess) {
    SetError("cuda: a command failed on the device: " + cudaText(s));
    return;
  }
  const ErrorRecord& r = t_.record();
  if (r.code != 0) {
    code_ = "ERR_CUDA_INDEX";
    SetError(std::string("cuda.") + kernelName(r.kernel) + ": index " + std::to_string(r.value) + " at position " +
             std::to_string(r.position) + " is out of range [0, " + std::to_string(r.bound) +
             ") (found on the device; reported by the next read or sync)");
    return;
  }
  if (!data_ || count_ == 0) return;
  if (dtype_ == BF16) {
    const uint16_t* from = static_cast<const uint16_t*>(t_.staging);
    float* to = static_cast<float*>(dest_);
    for (size_t i = 0; i < count_; i++) to[i] = host::fromBf16(from[i]);
  } else {
    std::memcpy(dest_, t_.staging, t_.bytes);
  }
}

void TransferWorker::finish() {
  owner_->endTransfer(t_);
  ownerRef_.Reset();
}

void TransferWorker::OnOK() {
  Napi::Env env = Env();
  finish();
  if (!data_) {
    deferred_.Resolve(env.Undefined());
    return;
  }
  Napi::ArrayBuffer ab = result_.Value();
  Napi::Value out;
  switch (dtype_) {
    case F64: out = Napi::Float64Array::New(env, count_, ab, 0); break;
    case I32: out = Napi::Int32Array::New(env, count_, ab, 0); break;
    default: out = Napi::Float32Array::New(env, count_, ab, 0); break;
  }
  result_.Reset();
  deferred_.Resolve(out);
}

void TransferWorker::OnError(const Napi::Error& e) {
  finish();
  result_.Reset();
  Napi::Object o = e.Value();
  o.Set("code", Napi::String::New(Env(), code_));
  deferred_.Reject(o);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Device", DeviceWrap::Define(env));
  exports.Set("archs", Napi::String::New(env, MINISEQ_CUDA_ARCHS));
  exports.Set("cudaRuntimeBuiltWith", Napi::Number::New(env, CUDART_VERSION));
  return exports;
}

}  // namespace
}  // namespace miniseq

static Napi::Object InitMiniseqCuda(Napi::Env env, Napi::Object exports) { return miniseq::Init(env, exports); }

NODE_API_MODULE(miniseq_cuda, InitMiniseqCuda)
