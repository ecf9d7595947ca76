// bfloat16 <-> float32 on the host, as the GPU converts (__float2bfloat16_rn): to nearest even,
// NaN a quiet NaN. Written without branches so that loops over them run in SIMD lanes
// (native/host/adamw.h); the CUDA addon's transfers use them too (native/src/device.h).
#pragma once
#include <cstdint>
#include <cstring>

namespace miniseq::host {

inline uint16_t toBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

inline float fromBf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace miniseq::host
