// The CPU addon's fused attention for cpu-fast: src/backends/cpu-fast/attention-task.ts in C++.
#pragma once
#include <cstdint>

namespace miniseq_cpu {

/** The job's words (attention-task.ts's TASK: 25 of them, addresses in bytes), in that order. */
constexpr int kAttentionWords = 25;

/**
 * Runs groups [w[7], w[8]) of the attention job `w` over the memory at `base`: the computation of
 * attention-task.ts, step for step (its float64 softmax arithmetic included), with sgemm for the
 * products and vexpAffine for the exps.
 */
void attentionTask(char* base, const int64_t* w);

}  // namespace miniseq_cpu
