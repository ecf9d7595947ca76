// `plan --max-seq` finds the true largest S that fits: against brute force over every multiple,
// against the closed form of a step whose peak is affine in S (far beyond 2^25), and a search
// that reaches the bound where plans stop being exact says "≥ S", not the bound as the answer.
import { describe, expect, it } from "vitest"
import { exactSeqCap, maxSeq, type PlanArgs, planAt } from "../src/cli/plan-command.js"
import { decodeConfigSync, presets } from "../src/models/config.js"
import { precisions } from "../src/models/optimizer.js"
import { runCli } from "./cli-helpers.js"

const tiny = decodeConfigSync(presets.tiny)
const args = (over: Partial<PlanArgs> = {}): PlanArgs => ({
  model: tiny,
  batch: 1,
  mlpChunks: 2,
  lmChunks: 4,
  target: "gpu",
  precision: precisions.fp32,
  ...over,
})

describe("plan --max-seq", () => {
  it("equals brute force over every multiple of the granularity (auto M, so the peak is not affine)", () => {
    const a = args({ mlpChunks: "auto", lmChunks: "auto" })
    const step = 64
    for (const mode of ["vanilla", "mst+checkpoint"] as const) {
      // A GPU plan must fit what the allocator holds: `held` is the number searched.
      const peaks = Array.from({ length: 48 }, (_, k) => planAt(a, mode, (k + 1) * step).held)
      // A memory between two plans' peaks, so the answer is neither the first nor the last multiple.
      const memory = Math.floor((peaks[29]! + peaks[30]!) / 2)
      const brute = peaks.reduce((best, p, k) => (p <= memory ? (k + 1) * step : best), 0)
      expect(brute).toBeGreaterThan(step)
      expect(brute).toBeLessThan(48 * step)
      const found = maxSeq(a, mode, memory, step)
      expect(found.seq, mode).toBe(brute)
      expect(found.capped).toBe(false)
      expect(found.plan?.held).toBe(planAt(a, mode, brute).held)
    }
  })

  it("is the largest fitting S far past 2^25, at most the closed form of the affine live peak", () => {
    // tiny, gpu target, mst, M = 2/4: peak(S) = p0 + (S - S0)/64 · d for S ≥ 128 (checked below).
    // The search fits `held` (≥ peak: size classes), so its answer is at most the affine one,
    // and exactly where held stops fitting.
    const a = args()
    const step = 64
    const [S0, p0] = [128, planAt(a, "mst", 128).peak]
    const d = planAt(a, "mst", S0 + step).peak - p0
    for (const k of [2, 100, 5000]) expect(planAt(a, "mst", S0 + k * step).peak).toBe(p0 + k * d)
    for (const memory of [2 ** 36, 2 ** 40, 3.5 * 2 ** 40]) {
      const closed = S0 + step * Math.floor((memory - p0) / d)
      expect(planAt(a, "mst", closed).peak).toBe(p0 + ((closed - S0) / step) * d) // still affine there
      const found = maxSeq(a, "mst", memory, step)
      expect(found.seq).toBeLessThanOrEqual(closed)
      expect(found.seq).toBeGreaterThan(closed * 0.98) // size classes are ≤ 1/64 over, ≤ 2 MiB
      expect(planAt(a, "mst", found.seq).held).toBeLessThanOrEqual(memory)
      expect(planAt(a, "mst", found.seq + step).held).toBeGreaterThan(memory)
      expect(found.capped).toBe(false)
    }
    expect(maxSeq(a, "mst", 2 ** 40, step).seq).toBeGreaterThan(2 ** 25)
  })

  it("nothing fits: S = 0 and no plan", () => {
    const found = maxSeq(args(), "vanilla", 1000, 64)
    expect(found).toEqual({ seq: 0, capped: false, offload: {} })
  })

  it("where plans stop being exact (a batch of logits past 2^53 bytes) an S that still fits is reported as ≥ S", async () => {
    const huge = { ...tiny, vocab_size: 2 ** 40 }
    const a = args({ model: huge })
    const cap = exactSeqCap(a, 1)
    expect(cap).toBe(2 ** 53 / (4 * 2 ** 40))
    const found = maxSeq(a, "mst+checkpoint", 2 ** 60, 1)
    expect(found).toMatchObject({ seq: cap, capped: true })
    const r = await runCli("plan", "--model", "tiny", "--max-seq", "--memory", "2TiB", "--granularity", "64")
    expect(r.code, r.out).toBe(0)
    const vanilla = Number(/\nvanilla\s+(\d+) /.exec(r.out)?.[1])
    expect(vanilla).toBeGreaterThan(2 ** 25) // the old search stopped at 2^24 and called it the answer
    expect(vanilla % 64).toBe(0)
  })
})
