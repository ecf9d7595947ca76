// A Node-free door to miniseq's attention kernels for bench/attention_hopper/run.py: extern "C"
// functions on raw device pointers (PyTorch tensors' data_ptr()), built into libminiseq_attn.so
// together with native/kernels/attention*.cu (see build.sh).
#include "../../native/kernels/attention.cuh"

using namespace miniseq;

extern "C" {

// impl 0: the mma.sync kernel (attention_mma.cu); 100: whatever attentionForward dispatches to
// (MINISEQ_ATTN_WGMMA decides); otherwise the Hopper kernel's variant impl (1: pipelined, 2:
// unpipelined, + 4: v1's grid order).
int ms_attn_forward(int impl, const void* q, const void* k, const void* v, void* o, void* lse, long long b, long long h, long long hkv,
                    long long s, long long d, void* stream) {
  Launch l{static_cast<cudaStream_t>(stream), 132, nullptr};
  cudaError_t e;
  if (impl == 0)
    e = attn::forwardTensorCores(l, static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v), static_cast<bf16*>(o),
                                 static_cast<float*>(lse), b, h, hkv, s, d);
  else if (impl == 100)
    e = attentionForward(l, BF16, q, k, v, o, lse, b, h, hkv, s, d);
  else {
    if (!attn::hopper::forwardAvailable(d, b, h, s, {q, k, v, o})) return -1;
    e = attn::hopper::forward(l, static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v), static_cast<bf16*>(o),
                              static_cast<float*>(lse), b, h, hkv, s, d, impl);
  }
  return static_cast<int>(e);
}

// The explicit variants' scratch: the Hopper backward's padded row stats (a multiple of 256
// bytes, room for the mma.sync kernels' compact delta too), then the fused variant's fp32 dQ sum
// (kept for every variant, so one buffer serves them all).
static long long dqAccumOffset(long long b, long long h, long long s) { return attn::rowStatsBytes(b * h, s); }
long long ms_attn_scratch(long long b, long long h, long long s, long long d) {
  const long long explicitBytes = dqAccumOffset(b, h, s) + attn::hopper::fusedDqAccumBytes(b, h, s, d);
  const long long dispatchBytes = attentionScratch(BF16, b, h, s, d);
  return explicitBytes > dispatchBytes ? explicitBytes : dispatchBytes;
}

// impl 0: the mma.sync backward; 100: whatever attentionBackward dispatches to; otherwise the
// Hopper backward's variant (attention_hopper_backward.cu; with bit 8 the fused one of
// attention_hopper_backward_fused.cu); delta (compact for impl 0, padded with lse for the Hopper
// ones) from attention_backward.cu's kernels.
// scratch: ms_attn_scratch(b, h, s, d) bytes.
int ms_attn_backward(int impl, const void* q, const void* k, const void* v, const void* o, const void* lse, const void* dO, void* dq, void* dk, void* dv,
                     long long b, long long h, long long hkv, long long s, long long d, void* scratch, void* stream) {
  Launch l{static_cast<cudaStream_t>(stream), 132, nullptr};
  if (impl == 100) return static_cast<int>(attentionBackward(l, BF16, q, k, v, o, lse, dO, nullptr, dq, dk, dv, b, h, hkv, s, d, scratch));
  float* delta = static_cast<float*>(scratch);
  const bf16 *qs = static_cast<const bf16*>(q), *ks = static_cast<const bf16*>(k), *vs = static_cast<const bf16*>(v), *gs = static_cast<const bf16*>(dO);
  bf16 *dqs = static_cast<bf16*>(dq), *dks = static_cast<bf16*>(dk), *dvs = static_cast<bf16*>(dv);
  const bf16* os = static_cast<const bf16*>(o);
  cudaError_t e;
  if (impl == 0) {
    if ((e = attn::launchDeltaBf16(l, os, gs, nullptr, delta, b * h * s, d)) != cudaSuccess) return static_cast<int>(e);
    return static_cast<int>(attn::backwardTensorCores(l, qs, ks, vs, gs, static_cast<const float*>(lse), delta, dqs, dks, dvs, b, h, hkv, s, d));
  }
  if (!attn::hopper::forwardAvailable(d, b, h, s, {q, k, v, dO, dq, dk, dv, scratch})) return -1;
  if ((e = attn::launchRowStatsBf16(l, os, gs, nullptr, static_cast<const float*>(lse), delta, b * h, s, d)) != cudaSuccess) return static_cast<int>(e);
  float* dqAccum = reinterpret_cast<float*>(static_cast<char*>(scratch) + dqAccumOffset(b, h, s));
  return static_cast<int>(attn::hopper::backward(l, qs, ks, vs, gs, delta, dqs, dks, dvs, b, h, hkv, s, d, impl, dqAccum));
}

int ms_sync() { return static_cast<int>(cudaDeviceSynchronize()); }
const char* ms_error_string(int e) { return cudaGetErrorString(static_cast<cudaError_t>(e)); }
}
