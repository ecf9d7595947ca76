// A host check (no GPU, no CUDA headers) of the fused Hopper backward's dQ path: the index rules
// the kernel uses (native/kernels/attention_hopper_dq_layout.cuh, the same header) replayed on a
// byte array standing for shared memory, with wgmma's operand layouts as the PTX ISA gives them,
// against dQ = dS·K in float64. It checks the indexing (where dSᵀ is stored, where the operands
// are read, which dqAccum element each accumulator pair adds to), not the hardware.
//   g++ -std=c++17 -O1 bench/attention_hopper/dq_layout_check.cc -o /tmp/dq_layout_check && /tmp/dq_layout_check
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "../../native/kernels/attention_hopper_dq_layout.cuh"

using namespace miniseq::attn::hopper;

namespace {

uint16_t toBf16(float x) {  // round to nearest even, as __floats2bfloat162_rn
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}
float fromBf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
uint32_t pack(float lo, float hi) { return toBf16(lo) | (static_cast<uint32_t>(toBf16(hi)) << 16); }

// The 128-byte swizzle on an offset from a 1024-byte-aligned base: 16-byte chunk bits 4–6 XOR
// the 128-byte row bits 7–9 (TMA's CU_TENSOR_MAP_SWIZZLE_128B, wgmma's layout type 1).
uint32_t swizzled(uint32_t o) { return o ^ (((o >> 7) & 7) << 4); }

// wgmma's MN-major bf16 operand in the 128-byte swizzle (canonical layout ((8,8,m),(8,k)) :
// ((1 element, 16 B, LBO), (128 B, SBO))): the byte of element (mn, k) of a k16 slice.
uint32_t mnMajor(uint32_t start, uint32_t lbo, uint32_t sbo, int mn, int k) {
  return swizzled(start + (mn / 64) * lbo + (mn % 64) * 2 + (k / 8) * sbo + (k % 8) * 128);
}

// wgmma's K-major bf16 operand in the 128-byte swizzle (canonical ((8,m),(8,2k)) : ((128 B, SBO),
// (1 element, 16 B))), its start possibly 32-byte steps into a row: element (mn, k) of a k16 slice.
uint32_t kMajor(uint32_t start, uint32_t sbo, int mn, int k) { return swizzled(start + (mn / 8) * sbo + (mn % 8) * 128 + k * 2); }

struct Smem {
  std::vector<uint8_t> bytes = std::vector<uint8_t>(1 << 18, 0xFF);  // unwritten bytes read as NaN
  void st32(uint32_t a, uint32_t v) { std::memcpy(&bytes[a], &v, 4); }
  void st16(uint32_t a, uint16_t v) { std::memcpy(&bytes[a], &v, 2); }
  float ld(uint32_t a) const {
    uint16_t h;
    std::memcpy(&h, &bytes[a], 2);
    return fromBf16(h);
  }
};

int failures = 0;
void expect(bool ok, const char* what, double got) {
  std::printf("%s %s: %.3e\n", ok ? "ok  " : "FAIL", what, got);
  if (!ok) failures++;
}

// TMA's box [rows × 64 columns] bf16 per 64-column panel, panels `panel` bytes apart.
void tmaStore(Smem& m, uint32_t base, uint32_t panel, const std::vector<float>& x, int rows, int cols) {
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++) m.st16(base + swizzled((c / 64) * panel + r * 128 + (c % 64) * 2), toBf16(x[r * cols + c]));
}

// The forward's proven read (hardware run 1): V [128 keys × D] by TMA, read as P·V's N-major B.
void checkModelOnV(int D) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n01;
  std::vector<float> v(128 * D);
  for (auto& x : v) x = fromBf16(toBf16(n01(rng)));
  Smem m;
  tmaStore(m, 0, 128 * 128, v, 128, D);
  double worst = 0;
  for (int kk = 0; kk < 8; kk++)
    for (int k = 0; k < 16; k++)
      for (int n = 0; n < D; n++) worst = std::fmax(worst, std::fabs(m.ld(mnMajor(kk * 16 * 128, 128 * 128, 1024, n, k)) - v[(16 * kk + k) * D + n]));
  char what[96];
  std::snprintf(what, sizeof what, "the layout model reads TMA's V tile as P·V's B (D = %d), max |diff|", D);
  expect(worst == 0, what, worst);
}

// The forward's and the dK/dV kernel's proven K-major read: Q [64 × D] by TMA as S = Q·Kᵀ's A
// (gemmNT64: panel p at p·64·128, k16 step k4 at 32·k4 bytes into the row, SBO 1024).
void checkModelOnQ(int D) {
  std::mt19937 rng(5);
  std::normal_distribution<float> n01;
  std::vector<float> q(64 * D);
  for (auto& x : q) x = fromBf16(toBf16(n01(rng)));
  Smem m;
  tmaStore(m, 0, 64 * 128, q, 64, D);
  double worst = 0;
  for (int kk = 0; kk < D / 16; kk++)
    for (int mm = 0; mm < 64; mm++)
      for (int k = 0; k < 16; k++) worst = std::fmax(worst, std::fabs(m.ld(kMajor((kk / 4) * 64 * 128 + (kk % 4) * 32, 1024, mm, k)) - q[mm * D + 16 * kk + k]));
  char what[96];
  std::snprintf(what, sizeof what, "the layout model reads TMA's Q tile as S's K-major A (D = %d), max |diff|", D);
  expect(worst == 0, what, worst);
}

// One tile pair: the block's 128 keys × the 64 queries at q0 of head bh. kMajorDs: dS stored
// transposed (dsKMajorOffset) and read K-major (bit 128).
void checkDq(int D, bool splitColumns, bool kMajorDs = false) {
  const int sPad = 192, q0 = 64, bhs = 3, bh = 1, QN = splitColumns ? D / 2 : D;
  std::mt19937 rng(11 + D + splitColumns);
  std::normal_distribution<float> n01;
  std::vector<float> dsT(128 * 64), k(128 * D);  // dSᵀ [keys × queries], K [keys × D], bf16 values
  for (auto& x : dsT) x = fromBf16(toBf16(n01(rng)));
  for (auto& x : k) x = fromBf16(toBf16(n01(rng)));
  Smem m;
  const uint32_t sK = 0, ds = 64 * 1024;  // both 1024-byte aligned, as in the kernel
  tmaStore(m, sK, dq::kKPanel, k, 128, D);

  // Each consumer thread holds its rows of dSᵀ in the accumulator layout, packs them as the
  // kernel's fragmentsA does and stores them with dsPairOffset.
  for (int c = 0; c < 2; c++)
    for (int t = 0; t < 128; t++) {
      const int w = t / 32, lane = t % 32, q4 = lane % 4, rowA = 64 * c + 16 * w + lane / 4;
      float x[32];
      for (int j = 0; j < 8; j++)
        for (int r = 0; r < 2; r++)
          for (int e = 0; e < 2; e++) x[4 * j + 2 * r + e] = dsT[(rowA + 8 * r) * 64 + 8 * j + 2 * q4 + e];
      uint32_t da[4][4];
      for (int kk = 0; kk < 4; kk++)
        for (int i = 0; i < 4; i++) da[kk][i] = pack(x[8 * kk + 2 * i], x[8 * kk + 2 * i + 1]);
      for (int kk = 0; kk < 4; kk++)
        for (int h = 0; h < 2; h++) {
          if (kMajorDs) {
            const int query = 8 * (2 * kk + h) + 2 * q4;
            for (int r = 0; r < 2; r++) {
              const uint32_t pair = da[kk][2 * h + r];
              m.st16(ds + dq::dsKMajorOffset(query, rowA + 8 * r), static_cast<uint16_t>(pair & 0xFFFF));
              m.st16(ds + dq::dsKMajorOffset(query + 1, rowA + 8 * r), static_cast<uint16_t>(pair >> 16));
            }
          } else {
            m.st32(ds + dq::dsPairOffset(rowA, 2 * kk + h, q4), da[kk][2 * h]);
            m.st32(ds + dq::dsPairOffset(rowA + 8, 2 * kk + h, q4), da[kk][2 * h + 1]);
          }
        }
    }

  // Each consumer's product (A MN-major with LBO 64·128, B with LBO kKPanel, SBO 1024 both),
  // spread over its threads in the accumulator layout, then added where dqAccumBase/Step say.
  std::vector<double> acc(static_cast<size_t>(bhs) * sPad * D, 0.0);
  std::vector<int> hits(acc.size(), 0);
  // The bulk path (64 × 64 parts): the same values in thread order, added part by part.
  const bool bulk = QN == 64 && !kMajorDs;
  std::vector<double> parts(acc.size(), 0.0);
  const int steps = splitColumns ? 8 : 4;
  for (int c = 0; c < 2; c++) {
    std::vector<double> part(64 * QN, 0.0);
    for (int kk = 0; kk < steps; kk++)
      for (int mm = 0; mm < 64; mm++)
        for (int n = 0; n < QN; n++)
          for (int kx = 0; kx < 16; kx++)
            part[mm * QN + n] += static_cast<double>(kMajorDs ? m.ld(kMajor(ds + dq::dsKMajorOperandOffset(splitColumns, c, kk), 1024, mm, kx))
                                                              : m.ld(mnMajor(ds + dq::dsOperandOffset(splitColumns, c, kk), 64 * 128, 1024, mm, kx))) *
                                 m.ld(mnMajor(sK + dq::kOperandOffset(D, splitColumns, c, kk), dq::kKPanel, 1024, n, kx));
    for (int t = 0; t < 128; t++) {
      const int w = t / 32, lane = t % 32;
      const long long base = dq::dqAccumBase(bh, sPad, q0, w, lane, D, splitColumns, c);
      for (int j = 0; j < QN / 8; j++)
        for (int r = 0; r < 2; r++)
          for (int e = 0; e < 2; e++) {
            const long long i = base + dq::dqAccumStep(D, j, r) + e;
            const double value = part[(16 * w + lane / 4 + 8 * r) * QN + 8 * j + 2 * (lane % 4) + e];
            acc[i] += value;
            hits[i]++;
            if (bulk) parts[dq::partBase(bh, sPad / 64, D / 64, q0 / 64, splitColumns ? c : 0) + dq::partFloat(t, 4 * j + 2 * r + e)] += value;
          }
    }
  }

  // dQ[q][d] = Σ over the 128 keys of dS[q][key]·K[key][d], in float64.
  double worst = 0, scale = 0;
  long long wrongHits = 0;
  for (size_t i = 0; i < acc.size(); i++) {
    const long long row = static_cast<long long>(i) / D, d = static_cast<long long>(i) % D;
    const bool inTile = row / sPad == bh && row % sPad >= q0 && row % sPad < q0 + 64;
    double ref = 0;
    if (inTile)
      for (int key = 0; key < 128; key++) ref += static_cast<double>(dsT[key * 64 + (row % sPad - q0)]) * k[key * D + d];
    worst = std::fmax(worst, std::fabs(acc[i] - ref));
    scale = std::fmax(scale, std::fabs(ref));
    // Split by columns, one consumer adds to each element of the tile; by keys, both do.
    if (hits[i] != (inTile ? (splitColumns ? 1 : 2) : 0)) wrongHits++;
  }
  char what[128];
  if (bulk) {
    // dqFromPartsKernel's reading: each (row, column) through partOfColumn / partFloatOf, two
    // columns per float2.
    double worstParts = 0;
    long long notPaired = 0;
    for (int rl = 0; rl < 64; rl++)
      for (int d = 0; d < D; d++) {
        const long long at = dq::partBase(bh, sPad / 64, D / 64, q0 / 64, dq::partOfColumn(d)) + dq::partFloatOf(rl, d);
        double ref = 0;
        for (int key = 0; key < 128; key++) ref += static_cast<double>(dsT[key * 64 + rl]) * k[key * D + d];
        worstParts = std::fmax(worstParts, std::fabs(parts[at] - ref));
        if (d % 2 == 0 && dq::partFloatOf(rl, d + 1) != dq::partFloatOf(rl, d) + 1) notPaired++;
      }
    std::snprintf(what, sizeof what, "dQ tile, D = %d, bulk parts read back as dq: max |diff| / max |dS·K|", D);
    expect(worstParts / scale < 1e-12, what, worstParts / scale);
    std::snprintf(what, sizeof what, "  column pairs not adjacent in the part (the float2 reads)");
    expect(notPaired == 0, what, static_cast<double>(notPaired));
  }
  std::snprintf(what, sizeof what, "dQ tile, D = %d, dQ split by %s%s: max |dqAccum - dS·K| / max |dS·K|", D, splitColumns ? "columns" : "keys",
                kMajorDs ? ", dS K-major" : "");
  expect(worst / scale < 1e-12, what, worst / scale);
  std::snprintf(what, sizeof what, "  elements added to by the wrong number of consumers (inside the tile) or at all (outside)");
  expect(wrongHits == 0, what, static_cast<double>(wrongHits));
}

}  // namespace

int main() {
  checkModelOnV(64);
  checkModelOnV(128);
  checkModelOnQ(64);
  checkModelOnQ(128);
  checkDq(64, false);
  checkDq(64, true);  // m64n32: B half-way into the 128-byte rows (the layout model's assumption)
  checkDq(128, true);
  checkDq(128, false);
  checkDq(64, false, true);
  checkDq(128, true, true);
  std::printf(failures == 0 ? "dq layout: PASS\n" : "dq layout: FAIL\n");
  return failures == 0 ? 0 : 1;
}
