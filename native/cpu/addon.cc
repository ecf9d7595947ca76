// miniseq_cpu.node: the fast CPU backend's native GEMM (sgemm.cc) over the WebAssembly memory.
//
//   abi                    this interface's version (src/backends/cpu-fast/native-gemm.ts checks
//                          it: an addon built from older sources is reported, not called)
//   kernel                 "avx512" | "avx2" | "none"
//   tile                   [rows, columns] of the GEMM's micro-kernel
//   bind(f32)              f32: a Float32Array over the whole memory (its buffer may be shared).
//                          Returns { gemm, expaffine } with the WebAssembly kernels' signatures,
//                          addresses and strides in bytes from the memory's start:
//                          gemm(a, rsA, csA, b, rsB, csB, c, ldc, m, n, k, accumulate) (the
//                          packing-scratch arguments that follow are ignored: each thread packs
//                          into its own); expaffine(x, o, n, scale, shift) → Σ (vexp.h) and
//                          attention(words) (attention.h: attention-task.ts's job) and
//                          crossEntropy(backward, x, targets, out, g, N, V, ignore) (targets an
//                          Int32Array of N; out nll or dLogits; g dNll, 0 forward), and
//                          reduceSum(x, o, outer, axis, inner) (reduce.h), these four only
//                          with AVX-512.
//
// A shared WebAssembly memory never moves when it grows (other threads hold it), so the address
// bound once stays valid; the function keeps a reference to the array so the memory outlives it.
// Plain Node-API (no C++ wrapper): the call is on the hot path, a few hundred per step.
#include <node_api.h>

#include <cstdint>
#include <initializer_list>

#include "attention.h"
#include "cross-entropy.h"
#include "reduce.h"
#include "sgemm.h"
#include "vexp.h"

namespace {

struct Bound {
  float* base;
  size_t length;  // in floats
  napi_ref keep;
  int users;  // the functions that hold it; the last one's finalizer frees it
};

#define CHECK(call)                                                \
  do {                                                             \
    if ((call) != napi_ok) {                                       \
      napi_throw_error(env, nullptr, "miniseq_cpu: " #call " failed"); \
      return nullptr;                                              \
    }                                                              \
  } while (0)

// The call's first `count` arguments as integers (count ≤ 12) and the start of the memory its
// function was bound to; false once `usage` or a Node-API failure has been thrown.
bool intArgs(napi_env env, napi_callback_info info, size_t count, int64_t* v, char** base, const char* usage) {
  size_t argc = count;
  napi_value argv[12];
  void* data = nullptr;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, &data) != napi_ok) {
    napi_throw_error(env, nullptr, "miniseq_cpu: napi_get_cb_info failed");
    return false;
  }
  if (argc < count) {
    napi_throw_type_error(env, nullptr, usage);
    return false;
  }
  for (size_t i = 0; i < count; i++) {
    if (napi_get_value_int64(env, argv[i], &v[i]) != napi_ok) {
      napi_throw_error(env, nullptr, "miniseq_cpu: napi_get_value_int64(env, argv[i], &v[i]) failed");
      return false;
    }
  }
  *base = reinterpret_cast<char*>(static_cast<Bound*>(data)->base);
  return true;
}

napi_value Gemm(napi_env env, napi_callback_info info) {
  int64_t v[12];
  char* base = nullptr;
  if (!intArgs(env, info, 12, v, &base,
               "miniseq_cpu gemm: expected 12 arguments (a, rsA, csA, b, rsB, csB, c, ldc, m, n, k, accumulate)"))
    return nullptr;
  const int m = static_cast<int>(v[8]), n = static_cast<int>(v[9]), k = static_cast<int>(v[10]);
  miniseq_cpu::sgemm(reinterpret_cast<const float*>(base + v[0]), v[1] / 4, v[2] / 4,
                     reinterpret_cast<const float*>(base + v[3]), v[4] / 4, v[5] / 4,
                     reinterpret_cast<float*>(base + v[6]), v[7] / 4, m, n, k, v[11] != 0);
  return nullptr;
}

napi_value ExpAffine(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  void* data = nullptr;
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, &data));
  if (argc < 5) {
    napi_throw_type_error(env, nullptr, "miniseq_cpu expaffine: expected 5 arguments (x, o, n, scale, shift)");
    return nullptr;
  }
  int64_t x, o, n;
  double scale, shift;
  CHECK(napi_get_value_int64(env, argv[0], &x));
  CHECK(napi_get_value_int64(env, argv[1], &o));
  CHECK(napi_get_value_int64(env, argv[2], &n));
  CHECK(napi_get_value_double(env, argv[3], &scale));
  CHECK(napi_get_value_double(env, argv[4], &shift));
  char* base = reinterpret_cast<char*>(static_cast<Bound*>(data)->base);
  const double sum = miniseq_cpu::vexpAffine(reinterpret_cast<const float*>(base + x),
                                             reinterpret_cast<float*>(base + o), n, scale, shift);
  napi_value result;
  CHECK(napi_create_double(env, sum, &result));
  return result;
}

napi_value Attention(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value words;
  void* data = nullptr;
  CHECK(napi_get_cb_info(env, info, &argc, &words, nullptr, &data));
  uint32_t length = 0;
  bool array = false;
  if (argc == 1) CHECK(napi_is_array(env, words, &array));
  if (array) CHECK(napi_get_array_length(env, words, &length));
  if (!array || length < miniseq_cpu::kAttentionWords) {
    napi_throw_type_error(env, nullptr, "miniseq_cpu attention: expected an array of the job's 25 words");
    return nullptr;
  }
  int64_t w[miniseq_cpu::kAttentionWords];
  for (uint32_t i = 0; i < miniseq_cpu::kAttentionWords; i++) {
    napi_value x;
    CHECK(napi_get_element(env, words, i, &x));
    CHECK(napi_get_value_int64(env, x, &w[i]));
  }
  miniseq_cpu::attentionTask(reinterpret_cast<char*>(static_cast<Bound*>(data)->base), w);
  return nullptr;
}

napi_value CrossEntropy(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  void* data = nullptr;
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, &data));
  bool typed = false;
  if (argc == 8) CHECK(napi_is_typedarray(env, argv[2], &typed));
  napi_typedarray_type type = napi_int8_array;
  size_t length = 0;
  void* targets = nullptr;
  if (typed) CHECK(napi_get_typedarray_info(env, argv[2], &type, &length, &targets, nullptr, nullptr));
  int64_t v[8] = {0};
  for (int i : {0, 1, 3, 4, 5, 6, 7})
    if (argc == 8) CHECK(napi_get_value_int64(env, argv[i], &v[i]));
  if (!typed || type != napi_int32_array || static_cast<int64_t>(length) < v[5]) {
    napi_throw_type_error(env, nullptr,
                          "miniseq_cpu crossEntropy: expected (backward, x, targets: Int32Array of N, out, g, N, V, ignore)");
    return nullptr;
  }
  char* base = reinterpret_cast<char*>(static_cast<Bound*>(data)->base);
  auto at = [base](int64_t bytes) { return reinterpret_cast<float*>(base + bytes); };
  const int N = static_cast<int>(v[5]), V = static_cast<int>(v[6]), ignore = static_cast<int>(v[7]);
  const int32_t* t = static_cast<const int32_t*>(targets);
  if (v[0] != 0) miniseq_cpu::crossEntropyVjp(at(v[1]), t, at(v[4]), at(v[3]), N, V, ignore);
  else miniseq_cpu::crossEntropy(at(v[1]), t, at(v[3]), N, V, ignore);
  return nullptr;
}

napi_value ReduceSum(napi_env env, napi_callback_info info) {
  int64_t v[5];
  char* base = nullptr;
  if (!intArgs(env, info, 5, v, &base, "miniseq_cpu reduceSum: expected (x, o, outer, axis, inner)")) return nullptr;
  miniseq_cpu::reduceSum(reinterpret_cast<const float*>(base + v[0]), reinterpret_cast<float*>(base + v[1]), v[2],
                         v[3], v[4]);
  return nullptr;
}

void Release(napi_env env, void* data, void*) {
  Bound* b = static_cast<Bound*>(data);
  if (--b->users > 0) return;
  napi_delete_reference(env, b->keep);
  delete b;
}

// kernels[name] = fn over b's memory; b lives until the last function bound to it is collected.
napi_status addKernel(napi_env env, napi_value kernels, const char* name, napi_callback fn, Bound* b) {
  napi_value f;
  napi_status s = napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, b, &f);
  if (s == napi_ok) s = napi_set_named_property(env, kernels, name, f);
  if (s != napi_ok) return s;
  b->users++;
  return napi_add_finalizer(env, f, b, Release, nullptr, nullptr);
}

napi_value Bind(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg;
  CHECK(napi_get_cb_info(env, info, &argc, &arg, nullptr, nullptr));
  bool typed = false;
  if (argc == 1) CHECK(napi_is_typedarray(env, arg, &typed));
  napi_typedarray_type type = napi_int8_array;
  size_t length = 0;
  void* data = nullptr;
  if (typed) CHECK(napi_get_typedarray_info(env, arg, &type, &length, &data, nullptr, nullptr));
  if (!typed || type != napi_float32_array || data == nullptr) {
    napi_throw_type_error(env, nullptr, "miniseq_cpu bind: expected a Float32Array over the memory");
    return nullptr;
  }
  Bound* b = new Bound{static_cast<float*>(data), length, nullptr, 0};
  CHECK(napi_create_reference(env, arg, 1, &b->keep));
  napi_value kernels;
  CHECK(napi_create_object(env, &kernels));
  CHECK(addKernel(env, kernels, "gemm", Gemm, b));
  if (miniseq_cpu::vexpAvailable()) {
    CHECK(addKernel(env, kernels, "expaffine", ExpAffine, b));
    CHECK(addKernel(env, kernels, "attention", Attention, b));
    CHECK(addKernel(env, kernels, "crossEntropy", CrossEntropy, b));
    CHECK(addKernel(env, kernels, "reduceSum", ReduceSum, b));
  }
  return kernels;
}

}  // namespace

NAPI_MODULE_INIT() {
  napi_value kernel, bind;
  CHECK(napi_create_string_utf8(env, miniseq_cpu::sgemmKernel(), NAPI_AUTO_LENGTH, &kernel));
  CHECK(napi_create_function(env, "bind", NAPI_AUTO_LENGTH, Bind, nullptr, &bind));
  CHECK(napi_set_named_property(env, exports, "kernel", kernel));
  napi_value abi;
  CHECK(napi_create_int32(env, 1, &abi));
  CHECK(napi_set_named_property(env, exports, "abi", abi));
  int rows = 1, cols = 1;
  miniseq_cpu::sgemmTile(&rows, &cols);
  napi_value tile, r, c;
  CHECK(napi_create_array_with_length(env, 2, &tile));
  CHECK(napi_create_int32(env, rows, &r));
  CHECK(napi_create_int32(env, cols, &c));
  CHECK(napi_set_element(env, tile, 0, r));
  CHECK(napi_set_element(env, tile, 1, c));
  CHECK(napi_set_named_property(env, exports, "tile", tile));
  CHECK(napi_set_named_property(env, exports, "bind", bind));
  return exports;
}
