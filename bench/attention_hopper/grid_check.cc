// A host check (no GPU, no CUDA headers) of the Hopper dK/dV kernel's grid orders and of where its
// consumers find the staged row stats: the kernel's own index rules
// (native/kernels/attention_hopper_grid.cuh, the same header) replayed on the host.
//   g++ -std=c++17 -O1 bench/attention_hopper/grid_check.cc -o /tmp/grid_check && /tmp/grid_check
// 1. every order gives each (kv head, key block) to exactly one CTA, each kv head's blocks in
//    order heaviest first, and heads-outer / v1's order are the documented ones; the same for the
//    forward's and dQ kernel's (head, query block) grid;
// 2. the list schedule of the CTAs on 132 SMs (the block scheduler hands the next CTA to the first
//    SM free; a block's cost taken as its tile count) — printed, and the pairs must beat
//    heads-outer where heads-outer's tail is long (S = 8192, 8 kv heads of 4);
// 3. the row stats: for ragged S, the value a consumer thread reads for its accumulator element
//    is its query's delta and lse·log2 e, or 0 and +inf past S.
#include <cmath>
#include <cstdio>
#include <functional>
#include <queue>
#include <vector>

#include "../../native/kernels/attention_hopper_grid.cuh"

using namespace miniseq::attn::hopper::grid;

namespace {

int failures = 0;
void check(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAIL %s\n", what);
    failures++;
  }
}

bool ordersCoverOnce() {
  for (int heads = 1; heads <= 9; heads++)
    for (int nKB = 1; nKB <= 7; nKB++)
      for (int order : {kBlocksOuter, kHeadsOuter, kHeadPairs}) {
        std::vector<int> seen(heads * nKB, 0), lastBlock(heads, -1);
        for (unsigned cta = 0; cta < static_cast<unsigned>(heads * nKB); cta++) {
          const KvBlock b = kvBlockOf(cta, heads, nKB, order);
          if (b.bhkv < 0 || b.bhkv >= heads || b.nb < 0 || b.nb >= nKB) return false;
          if (b.nb != lastBlock[b.bhkv] + 1) return false;  // a head's blocks heaviest (0) first
          lastBlock[b.bhkv] = b.nb;
          seen[b.bhkv * nKB + b.nb]++;
          if (order == kHeadsOuter && (b.bhkv != static_cast<int>(cta) / nKB || b.nb != static_cast<int>(cta) % nKB)) return false;
          if (order == kBlocksOuter && (b.bhkv != static_cast<int>(cta) % heads || b.nb != static_cast<int>(cta) / heads)) return false;
          // pairs: CTA 2·nKB·p + r is head 2p + r % 2 (the pair's) — its heads are the pair's
          if (order == kHeadPairs && b.bhkv / 2 != static_cast<int>(cta / (2u * nKB))) return false;
        }
        for (int x : seen)
          if (x != 1) return false;
      }
  return true;
}

// The forward's and dQ kernel's grid: each (head, query block) once, each head's blocks from the
// last (the heaviest) down, heads-outer and v1's order as documented; and the kv head of a query
// head is its group's, for grouped-query and plain heads, over two batches.
bool queryBlocksCoverOnce() {
  for (int BH = 1; BH <= 9; BH++)
    for (int nM = 1; nM <= 7; nM++)
      for (int headsOuter : {0, 1, 2}) {
        std::vector<int> seen(BH * nM, 0), last(BH, nM);
        for (unsigned cta = 0; cta < static_cast<unsigned>(BH * nM); cta++) {
          const QueryBlock q = queryBlockOf(cta, BH, nM, headsOuter);
          if (q.bh < 0 || q.bh >= BH || q.mb < 0 || q.mb >= nM) return false;
          if (q.mb != last[q.bh] - 1) return false;  // a head's blocks heaviest (the last) first
          last[q.bh] = q.mb;
          seen[q.bh * nM + q.mb]++;
          const int c = static_cast<int>(cta);
          if (headsOuter != 0 && (q.bh != c / nM || q.mb != nM - 1 - c % nM)) return false;
          if (headsOuter == 0 && (q.bh != c % BH || q.mb != nM - 1 - c / BH)) return false;
        }
        for (int x : seen)
          if (x != 1) return false;
      }
  // query head g of kv head kv in batch b is b·H + kv·G + g (the dK/dV kernel's headOf)
  for (int H : {1, 4, 6, 8})
    for (int G : {1, 2, H})
      if (H % G == 0)
        for (int b = 0; b < 2; b++)
          for (int kv = 0; kv < H / G; kv++)
            for (int g = 0; g < G; g++)
              if (kvHeadOf(b * H + kv * G + g, H, G) != b * (H / G) + kv) return false;
  return true;
}

// The makespan of the list schedule, over the ideal (total work / SMs): 1 is no tail.
double efficiency(int heads, int G, long long S, int order, int sms = 132) {
  const int nQ = static_cast<int>((S + 63) / 64), nKB = static_cast<int>((S + 127) / 128);
  std::priority_queue<double, std::vector<double>, std::greater<double>> free;
  for (int i = 0; i < sms; i++) free.push(0);
  double total = 0, end = 0;
  for (unsigned cta = 0; cta < static_cast<unsigned>(heads * nKB); cta++) {
    const KvBlock b = kvBlockOf(cta, heads, nKB, order);
    const double cost = G * (nQ - 2 * b.nb);
    const double t = free.top() + cost;
    free.pop();
    free.push(t);
    total += cost;
    end = std::fmax(end, t);
  }
  return total / sms / end;
}

bool statsRead(long long S) {
  const int bhCount = 3;
  const long long sPad = (S + 63) / 64 * 64;
  // What the row-stats kernel writes (attention_backward.cu): value v(bh, i) for i < S, padding past.
  auto deltaOf = [](int bh, long long i) { return 1000.0 * bh + static_cast<double>(i); };
  std::vector<double> delta(bhCount * sPad), lse2(bhCount * sPad);
  for (int bh = 0; bh < bhCount; bh++)
    for (long long i = 0; i < sPad; i++) {
      delta[bh * sPad + i] = i < S ? deltaOf(bh, i) : 0.0;
      lse2[bh * sPad + i] = i < S ? -deltaOf(bh, i) : INFINITY;
    }
  const int nQ = static_cast<int>((S + 63) / 64);
  for (int bh = 0; bh < bhCount; bh++)
    for (int mq = 0; mq < nQ; mq++) {
      // the producer's two 256-byte copies: in bounds, 256-byte aligned in floats of 4 bytes
      const long long start = statTileStart(bh, sPad, mq);
      if (start % 64 != 0 || start + 64 > bhCount * sPad) return false;
      double staged[128];
      for (int k = 0; k < 64; k++) {
        staged[k] = delta[start + k];
        staged[64 + k] = lse2[start + k];
      }
      for (int t = 0; t < 128; t++) {
        const int q4 = (t % 32) % 4;
        for (int j = 0; j < 8; j++)
          for (int e = 0; e < 2; e++) {
            const int col = statColumn(j, q4, e);
            if (col < 0 || col >= 64 || (e == 0 && col % 2 != 0)) return false;  // the pair at an 8-byte boundary
            const long long qi = 64LL * mq + 8 * j + 2 * q4 + e;  // the accumulator's query column
            const double wantD = qi < S ? deltaOf(bh, qi) : 0.0, wantL = qi < S ? -deltaOf(bh, qi) : INFINITY;
            if (staged[col] != wantD || staged[64 + col] != wantL) return false;
          }
      }
    }
  return true;
}

}  // namespace

int main() {
  check(ordersCoverOnce(), "grid orders: each (kv head, key block) once, heaviest first per head");
  if (failures == 0) std::printf("ok   grid orders cover every block once\n");
  const bool queries = queryBlocksCoverOnce();
  check(queries, "query-block grid: each (head, query block) once, heaviest first per head");
  if (queries) std::printf("ok   query-block grid covers every block once\n");
  struct Case {
    int heads, G;
    long long S;
  };
  for (Case c : {Case{8, 4, 4096}, Case{8, 4, 8192}, Case{8, 4, 32768}, Case{32, 1, 8192}, Case{2, 4, 8192}})
    std::printf("schedule kv heads %d × group %d, S = %lld: blocks-outer %.3f, heads-outer %.3f, pairs %.3f\n", c.heads, c.G, c.S,
                efficiency(c.heads, c.G, c.S, kBlocksOuter), efficiency(c.heads, c.G, c.S, kHeadsOuter), efficiency(c.heads, c.G, c.S, kHeadPairs));
  const double ho = efficiency(8, 4, 8192, kHeadsOuter), pairs = efficiency(8, 4, 8192, kHeadPairs);
  check(pairs > ho + 0.1, "pairs' schedule at S = 8192, 8 kv heads: not shorter than heads-outer's");
  if (pairs > ho + 0.1) std::printf("ok   pairs shorten the 8k schedule\n");
  bool stats = true;
  for (long long S : {1LL, 3LL, 63LL, 64LL, 65LL, 130LL, 257LL}) stats = stats && statsRead(S);
  check(stats, "staged row stats: a thread reads another query's value");
  if (stats) std::printf("ok   staged row stats read by the right threads\n");
  std::printf("grid: %s\n", failures == 0 ? "PASS" : "FAIL");
  return failures == 0 ? 0 : 1;
}
