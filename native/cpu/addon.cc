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

napi_value Gemm(napi_env env, napi_callback_info info) {
  size_t argc = 12;
  napi_value argv[12];
  void* data = nullptr;
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, &data));
  if (argc < 12) {
    napi_throw_type_error(env, nullptr, "miniseq_cpu gemm: expected 12 arguments (a, rsA, csA, b, rsB, csB, c, ldc, m, n, k, accumulate)");
    return nullptr;
  }
  int64_t v[12];
  for (int i = 0; i < 12; i++) CHECK(napi_get_value_int64(env, argv[i], &v[i]));
  const Bound* b = static_cast<Bound*>(data);
  char* base = reinterpret_cast<char*>(b->base);
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
  size_t argc = 5;
  napi_value argv[5];
  void* data = nullptr;
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, &data));
  if (argc < 5) {
    napi_throw_type_error(env, nullptr, "miniseq_cpu reduceSum: expected (x, o, outer, axis, inner)");
    return nullptr;
  }
  int64_t v[5];
  for (int i = 0; i < 5; i++) CHECK(napi_get_value_int64(env, argv[i], &v[i]));
  char* base = reinterpret_cast<char*>(static_cast<Bound*>(data)->base);
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
  Bound* b = new Bound{static_cast<float*>(data), length, nullptr, 1};
  CHECK(napi_create_reference(env, arg, 1, &b->keep));
  napi_value kernels, gemm;
  CHECK(napi_create_object(env, &kernels));
  CHECK(napi_create_function(env, "gemm", NAPI_AUTO_LENGTH, Gemm, b, &gemm));
  CHECK(napi_set_named_property(env, kernels, "gemm", gemm));
  CHECK(napi_add_finalizer(env, gemm, b, Release, nullptr, nullptr));
  if (miniseq_cpu::vexpAvailable()) {
    napi_value exp;
    CHECK(napi_create_function(env, "expaffine", NAPI_AUTO_LENGTH, ExpAffine, b, &exp));
    CHECK(napi_set_named_property(env, kernels, "expaffine", exp));
    b->users++;
    CHECK(napi_add_finalizer(env, exp, b, Release, nullptr, nullptr));
    napi_value attention;
    CHECK(napi_create_function(env, "attention", NAPI_AUTO_LENGTH, Attention, b, &attention));
    CHECK(napi_set_named_property(env, kernels, "attention", attention));
    b->users++;
    CHECK(napi_add_finalizer(env, attention, b, Release, nullptr, nullptr));
    napi_value ce;
    CHECK(napi_create_function(env, "crossEntropy", NAPI_AUTO_LENGTH, CrossEntropy, b, &ce));
    CHECK(napi_set_named_property(env, kernels, "crossEntropy", ce));
    b->users++;
    CHECK(napi_add_finalizer(env, ce, b, Release, nullptr, nullptr));
    napi_value reduce;
    CHECK(napi_create_function(env, "reduceSum", NAPI_AUTO_LENGTH, ReduceSum, b, &reduce));
    CHECK(napi_set_named_property(env, kernels, "reduceSum", reduce));
    b->users++;
    CHECK(napi_add_finalizer(env, reduce, b, Release, nullptr, nullptr));
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
