// The limit a plan is compared with on CUDA: what the allocator holds plus what the driver has
// free, read now (src/backends/cuda/usable-memory.ts); checked against stand-in devices, no GPU.
import { Effect, Exit } from "effect"
import { describe, expect, it } from "vitest"
import {
  cudaReserve,
  type DeviceMemorySource,
  measuredCudaReserve,
  usableBeforeWarmUp,
  usableNow,
  usableUnderCap,
} from "../src/backends/cuda/usable-memory.js"
import { makeCpuBackend } from "../src/backends/cpu/index.js"
import { BadConfig } from "../src/core/errors.js"
import { availableMemory, refuseWhatCannotFit } from "../src/cli/memory-check.js"
import { maxSeq, planAt, type PlanArgs } from "../src/cli/plan-command.js"
import { decodeConfigSync, presets } from "../src/models/config.js"
import { precisions } from "../src/models/optimizer.js"

/** A device that reports fixed numbers, as CudaBackend's memoryInfo() and memory() do. */
const standIn = (reserved: number, free: number, total: number): DeviceMemorySource => ({
  memoryInfo: () => ({ free, total }),
  memory: () => ({ reserved }),
})

// The H100 80GB run (Llama3-8B mst+checkpoint, checkpoints offloaded) that a plan against the
// total let through: the allocator's reserved and the driver's free bytes when its step failed.
const h100 = { total: 85_017_493_504, reserved: 83_263_120_384, free: 1_027_801_088, planAt183296: 85_014_258_688 }

describe("the usable device memory", () => {
  it("is the allocator's reserved bytes plus the driver's free bytes, read when asked", () => {
    let free = 1000
    const device: DeviceMemorySource = { memoryInfo: () => ({ free, total: 5000 }), memory: () => ({ reserved: 300 }) }
    expect(usableNow(device)).toBe(1300)
    free = 400 // something else took memory since: the next reading says so
    expect(usableNow(device)).toBe(700)
    const run = standIn(h100.reserved, h100.free, h100.total)
    expect(usableNow(run)).toBe(84_290_921_472)
    // The plan that failed fits the total but not what was usable.
    expect(h100.planAt183296).toBeLessThanOrEqual(h100.total)
    expect(h100.planAt183296).toBeGreaterThan(usableNow(run))
  })

  it("the measured reserve is what that run's card kept outside the allocator", () => {
    expect(measuredCudaReserve).toBe(h100.total - (h100.reserved + h100.free))
    // The other reading (S = 180,224): 83,348,570,120 live, 946,012,160 free; reserved ≥ live, so
    // outside the allocator ≤ 722,911,224 bytes there: within 4 MiB of the measured reserve.
    const outsideAtMost = h100.total - (83_348_570_120 + 946_012_160)
    expect(outsideAtMost).toBeLessThanOrEqual(measuredCudaReserve)
    expect(measuredCudaReserve - outsideAtMost).toBeLessThan(4 * 2 ** 20)
  })

  it("before warm-up: the free bytes, but at most the card less the reserve", () => {
    const total = 85_017_493_504
    // At start the context already took 500 MB: what loads later is the reserve less that.
    expect(usableBeforeWarmUp(standIn(0, total - 500_000_000, total), measuredCudaReserve)).toBe(
      total - measuredCudaReserve,
    )
    // Another process holds 10 GB: the free bytes are the smaller bound.
    expect(usableBeforeWarmUp(standIn(0, total - 10e9, total), measuredCudaReserve)).toBe(total - 10e9)
    // Bytes our allocator already holds count as usable.
    expect(usableBeforeWarmUp(standIn(2e9, total - 12e9, total), measuredCudaReserve)).toBe(total - 10e9)
    expect(usableBeforeWarmUp(standIn(0, 100, 1000), 0)).toBe(100)
    expect(usableBeforeWarmUp(standIn(0, 100, 1000), 5000)).toBe(0)
  })

  it("under a cap: the smaller of the cap and what is usable", () => {
    expect(usableUnderCap(undefined, 84e9)).toBe(84e9)
    expect(usableUnderCap(40 * 2 ** 30, 84e9)).toBe(40 * 2 ** 30)
    expect(usableUnderCap(85e9, 84e9)).toBe(84e9)
  })
})

describe("MINISEQ_CUDA_RESERVE", () => {
  const parse = (v: string | undefined) => Effect.runSync(cudaReserve(v))
  it("reads bytes or a size; unset or empty keeps the measured reserve", () => {
    expect(parse(undefined)).toBe(measuredCudaReserve)
    expect(parse("  ")).toBe(measuredCudaReserve)
    expect(parse("0")).toBe(0)
    expect(parse("730000000")).toBe(730_000_000)
    expect(parse("1.5e9")).toBe(1_500_000_000)
    expect(parse("512MiB")).toBe(512 * 2 ** 20)
    expect(parse("1GB")).toBe(2 ** 30)
    expect(parse("64k")).toBe(64 * 1024)
  })

  it("a bad value is a BadConfig naming the variable, the value and what is allowed", () => {
    for (const bad of ["-5", "abc", "1e400", "12 bananas", "0x10"]) {
      const e = Effect.runSync(Effect.flip(cudaReserve(bad)))
      expect(e, bad).toBeInstanceOf(BadConfig)
      expect(e.field).toBe("MINISEQ_CUDA_RESERVE")
      expect(e.message).toContain(`"${bad}"`)
      expect(e.message).toContain("700MiB")
    }
  })
})

describe("plans against the usable limit (tiny model, the GPU target, no GPU)", () => {
  const args: PlanArgs = {
    model: decodeConfigSync(presets.tiny),
    batch: 1,
    mlpChunks: "auto",
    lmChunks: "auto",
    target: "gpu",
    precision: precisions.bf16,
  }
  const S = 4096
  const held = planAt(args, "mst+checkpoint", S).held

  it("plan --max-seq: a limit one byte below S's plan gives a shorter S", () => {
    // At exactly S's plan, S fits; the planner's own plan at S + 1024 does not.
    const atPlan = maxSeq(args, "mst+checkpoint", held, 1024)
    expect(planAt(args, "mst+checkpoint", atPlan.seq).held).toBeLessThanOrEqual(held)
    expect(planAt(args, "mst+checkpoint", atPlan.seq + 1024).held).toBeGreaterThan(held)
    expect(atPlan.seq).toBeGreaterThanOrEqual(S)
    // The card's total less the reserve, as the bench and the CLI now compare with.
    const total = held + measuredCudaReserve - 1
    const usable = usableBeforeWarmUp(standIn(0, total, total), measuredCudaReserve)
    expect(usable).toBe(held - 1)
    const below = maxSeq(args, "mst+checkpoint", usable, 1024)
    expect(below.seq).toBeLessThan(S)
    expect(planAt(args, "mst+checkpoint", below.seq).held).toBeLessThanOrEqual(usable)
    expect(planAt(args, "mst+checkpoint", below.seq + 1024).held).toBeGreaterThan(usable)
  })

  it("train's check refuses a step between the usable limit and the card's total", () => {
    const plan = planAt(args, "mst+checkpoint", S)
    // A card the tiny plan nearly fills, with a reserve of half the plan: the whole card holds it, the usable part does not.
    const reserve = Math.round(plan.held / 2)
    const total = plan.held + reserve / 2
    const device = { ...makeCpuBackend(), ...standIn(0, total, total) }
    const available = availableMemory("cuda", device, reserve)!
    expect(available.bytes).toBe(total - reserve)
    expect(available.bytes).toBeLessThan(plan.held)
    expect(available.what).toContain("MINISEQ_CUDA_RESERVE")
    const opts = { mode: "mst+checkpoint" as const, precision: precisions.bf16 }
    const refused = Effect.runSyncExit(refuseWhatCannotFit(plan, available, args.model, 1, S, opts, makeCpuBackend()))
    expect(Exit.isFailure(refused)).toBe(true)
    // With no reserve (the old start-up free bytes), the same step was let through.
    const old = availableMemory("cuda", device, 0)!
    expect(old.bytes).toBe(total)
    expect(
      Exit.isSuccess(Effect.runSyncExit(refuseWhatCannotFit(plan, old, args.model, 1, S, opts, makeCpuBackend()))),
    ).toBe(true)
    // A backend that cannot say its memory: no check rather than a guess.
    expect(availableMemory("cuda", makeCpuBackend())).toBeUndefined()
  })
})
