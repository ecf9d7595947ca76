// miniseq_cpu.node: the fast CPU backend's native GEMM (sgemm.cc) over the WebAssembly memory.
//
//   kernel                 "avx512" | "avx2" | "none"
//   bind(f32)              f32: a Float32Array over the whole memory (its buffer may be shared).
//                          Returns gemm(a, rsA, csA, b, rsB, csB, c, ldc, m, n, k, accumulate),
//                          the WebAssembly kernel's signature: addresses and strides in bytes
//                          from the memory's start (the packing-scratch arguments that follow
//                          are ignored: each thread packs into its own).
//
// A shared WebAssembly memory never moves when it grows (other threads hold it), so the address
// bound once stays valid; the function keeps a reference to the array so the memory outlives it.
// Plain Node-API (no C++ wrapper): the call is on the hot path, a few hundred per step.
#include <node_api.h>

#include <cstdint>

#include "sgemm.h"

namespace {

struct Bound {
  float* base;
  size_t length;  // in floats
  napi_ref keep;
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

void Release(napi_env env, void* data, void*) {
  Bound* b = static_cast<Bound*>(data);
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
  Bound* b = new Bound{static_cast<float*>(data), length, nullptr};
  CHECK(napi_create_reference(env, arg, 1, &b->keep));
  napi_value fn;
  CHECK(napi_create_function(env, "gemm", NAPI_AUTO_LENGTH, Gemm, b, &fn));
  CHECK(napi_add_finalizer(env, fn, b, Release, nullptr, nullptr));
  return fn;
}

}  // namespace

NAPI_MODULE_INIT() {
  napi_value kernel, bind;
  CHECK(napi_create_string_utf8(env, miniseq_cpu::sgemmKernel(), NAPI_AUTO_LENGTH, &kernel));
  CHECK(napi_create_function(env, "bind", NAPI_AUTO_LENGTH, Bind, nullptr, &bind));
  CHECK(napi_set_named_property(env, exports, "kernel", kernel));
  CHECK(napi_set_named_property(env, exports, "bind", bind));
  return exports;
}
