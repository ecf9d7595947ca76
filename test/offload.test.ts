// Offload to the host tier: the same numbers with and without it, bitwise; the plan's device and
// host peaks equal what a run measures; checkpoints wait on the host between forward and backward.
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Exit, Layer } from "effect"
import { describe, expect, it } from "vitest"
import { Backend, type BackendImpl } from "../src/core/backend.js"
import { cpuWithBfloat16 } from "../src/backends/cpu/bfloat16.js"
import { makeCpuBackend } from "../src/backends/cpu/index.js"
import { makeFastCpuBackend } from "../src/backends/cpu-fast/index.js"
import { BadConfig } from "../src/core/errors.js"
import { offloadSchedule } from "../src/core/offload.js"
import { schedule } from "../src/core/graph.js"
import { decodeConfigSync } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import { type Mode, parameterShapes } from "../src/models/llama.js"
import { precisions } from "../src/models/optimizer.js"
import { leastOffloadThatFits, type PlanTarget, planStep } from "../src/models/planner.js"
import { gradientInputs, type Offload, stepGraphs } from "../src/models/step.js"
import { type TrainOptions, train } from "../src/models/train.js"
import { parseOffload } from "../src/cli/options.js"
import { planAndMeasure } from "./plan-measure.js"
import { planWithinHost } from "../src/cli/plan-command.js"

const model = decodeConfigSync({
  hidden_size: 32,
  intermediate_size: 80,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 64,
  max_position_embeddings: 128,
})
const tokens = Int32Array.from({ length: 3000 }, (_, i) => (i * 7 + (i >> 3)) % 64)
const choices: Offload[] = [{ checkpoints: true }, { optimizer: true }, { checkpoints: true, optimizer: true }]
const S = 48

const run = (
  backend: BackendImpl,
  opts: Partial<TrainOptions> & { mode: Mode },
  onStep?: Parameters<typeof train>[2],
) =>
  Effect.runPromise(
    train(
      { model, batch: 2, seq: S, steps: 3, lr: 1e-2, seed: 1, mlpChunks: 3, lmChunks: 5, ...opts },
      makeBatches({ tokens, batch: 2, seq: S, seed: 1 }),
      onStep,
    ).pipe(Effect.provide(Layer.succeed(Backend, backend))),
  )

describe("offload changes no number", () => {
  const cases = [
    { mode: "vanilla", precision: "fp32", backend: () => makeCpuBackend() },
    { mode: "checkpoint", precision: "fp32", backend: () => makeCpuBackend(), accumulation: 2 },
    { mode: "mst+checkpoint", precision: "bf16-mixed", backend: () => cpuWithBfloat16() },
    { mode: "mst", precision: "fp32", backend: () => makeFastCpuBackend() },
  ] as const
  for (const c of cases) {
    it(`${c.mode}, ${c.precision}, ${c.backend().name}${"accumulation" in c ? ", 2 micro-batches" : ""}: losses, norms and weights bitwise`, async () => {
      const opts = { mode: c.mode, precision: c.precision, accumulation: "accumulation" in c ? c.accumulation : 1 }
      const reference = await run(c.backend(), opts)
      for (const offload of choices) {
        const r = await run(c.backend(), { ...opts, offload })
        const what = JSON.stringify(offload)
        expect(
          r.records.map((x) => x.loss),
          what,
        ).toEqual(reference.records.map((x) => x.loss))
        expect(
          r.records.map((x) => x.gradNorm),
          what,
        ).toEqual(reference.records.map((x) => x.gradNorm))
        expect(r.parameters, what).toEqual(reference.parameters)
        expect(r.records[0]!.memory.host.peak, what).toBeGreaterThan(0)
      }
    })
  }
})

describe("the plan's device and host peaks are what a run measures", () => {
  for (const mode of ["vanilla", "checkpoint", "mst+checkpoint"] as const) {
    it(`${mode}: by the executor's ledger and by the backend's own count, tier by tier`, () => {
      for (const offload of choices) {
        const r = planAndMeasure(model, 2, S, { mode, mlpChunks: 3, lmChunks: 5, offload }, { vocab: 64, count: 96 })
        const what = `${mode} ${JSON.stringify(offload)}`
        expect(r.measured, what).toEqual(r.planned)
        expect(r.backendPeak, what).toBe(r.planned.peak)
        expect(r.backendHostPeak, what).toBe(r.planned.host.peak)
        expect(r.planned.host.peak, what).toBeGreaterThan(0)
      }
    })
  }

  it("through train(): each step's report is the plan of its larger pass, host tier included", async () => {
    for (const offload of choices) {
      const backend = cpuWithBfloat16()
      const step = { mode: "mst+checkpoint" as const, mlpChunks: 3, lmChunks: 5, precision: precisions["bf16-mixed"] }
      const p = planStep(model, 2, S, { ...step, offload }, backend)
      const r = await run(backend, { mode: "mst+checkpoint", precision: "bf16-mixed", offload })
      const larger = p.optimizerPass.peak > p.gradientPass.peak ? p.optimizerPass : p.gradientPass
      expect(r.records[0]!.memory).toEqual(larger)
      expect(Math.max(p.gradientPass.host.peak, p.optimizerPass.host.peak)).toBe(p.host)
    }
  })

  it("optimizer offload moves the moments, master weights and gradients off the device (closed form)", () => {
    const bytes = (per: number) =>
      Object.values(parameterShapes(model)).reduce((n, s) => n + s.reduce((a, b) => a * b, 1) * per, 0)
    const step = { mode: "mst+checkpoint" as const, precision: precisions["bf16-mixed"] }
    const on = planStep(model, 2, S, { ...step, offload: { optimizer: true } })
    const off = planStep(model, 2, S, step)
    // bf16-mixed: fp32 master, m and v stay on the host for good; the bf16 gradients join them.
    expect(on.gradientPass.atPeak.optimizer).toBe(0)
    expect(off.gradientPass.atPeak.optimizer).toBe(bytes(12))
    expect(on.optimizerPass.host.peak).toBe(bytes(12 + 2))
    // AdamW reads and writes the fp32 state in place over the bus and reads each gradient once
    // (the norm reads none: the gradient pass took each gradient's Σ g² before it left).
    expect(on.bus).toBe(2 * bytes(12) + bytes(2) + on.gradientPass.host.moved)
    expect(on.gradientPass.host.moved).toBe(bytes(2)) // each gradient copied once
    expect(off.host).toBe(0)
    expect(off.bus).toBe(0)
    // AdamW on the host's cores (CUDA's adamwOnHost): only the new bf16 weights cross the bus;
    // without master weights (bf16) the old ones cross first.
    const onHost: PlanTarget = { hostOptimizer: true, routines: { adamw: () => {} } }
    const host = planStep(model, 2, S, { ...step, offload: { optimizer: true } }, onHost)
    expect(host.bus).toBe(bytes(2) + host.gradientPass.host.moved)
    const bf16 = { ...step, precision: precisions.bf16, offload: { optimizer: true } }
    expect(planStep(model, 2, S, bf16, onHost).bus).toBe(2 * bytes(2) + host.gradientPass.host.moved)
    expect(planStep(model, 2, S, bf16).bus).toBe(2 * bytes(2 + 2) + bytes(2) + host.gradientPass.host.moved)
  })
})

describe("when checkpoints move", () => {
  it("each layer's saved input goes to the host after its forward and comes back one layer ahead of its backward", () => {
    const L = model.num_hidden_layers
    const g = stepGraphs(model, 1, S, { mode: "checkpoint" })
    const nodes = schedule(g.first.outputs, new Set(gradientInputs(g.first, g.adamw).keys()))
    const moves = offloadSchedule(nodes, g.first.outputs, [], { activations: true })
    const stored = [...moves.storeAfter.values()].flat()
    const loaded = [...moves.loadBefore.values()].flat()
    // Every stored value comes back exactly once, after it was stored.
    expect(new Set(loaded)).toEqual(new Set(stored))
    expect(loaded.length).toBe(stored.length)
    const storedAt = new Map([...moves.storeAfter].flatMap(([i, ts]) => ts.map((t) => [t, i] as const)))
    const loadedAt = new Map([...moves.loadBefore].flatMap(([i, ts]) => ts.map((t) => [t, i] as const)))
    for (const t of stored) expect(loadedAt.get(t)!).toBeGreaterThan(storedAt.get(t)!)
    // The layers' inputs ([1, S, d] residual streams) are among them.
    const streams = stored.filter((t) => t.shape.join() === `1,${S},${model.hidden_size}`)
    expect(streams.length).toBeGreaterThanOrEqual(L)
    // Brought back before the backward node one ahead of the one that needs it.
    const firstReader = (t: (typeof stored)[number]) =>
      nodes.findIndex((n) => n.phase === "backward" && n.inputs.includes(t))
    const readers = [...new Set(stored.map(firstReader))].sort((a, b) => a - b)
    for (const t of stored) {
      const k = readers.indexOf(firstReader(t))
      expect(loadedAt.get(t)).toBe(k === 0 ? readers[0] : readers[k - 1])
    }
  })

  it("in checkpoint mode at long S the device keeps a few layers' checkpoints, not all of them", () => {
    const deep = { ...model, num_hidden_layers: 12, max_position_embeddings: 4096 }
    const step = { mode: "checkpoint" as const }
    const off = planStep(deep, 1, 2048, step)
    const on = planStep(deep, 1, 2048, { ...step, offload: { checkpoints: true, optimizer: true } })
    const checkpoint = 2048 * deep.hidden_size * 4
    const batch = 2 * 2048 * 4 + 4 // tokens, targets and the target count (bound, kind "activations")
    expect(off.gradientPass.peakByKind.activations).toBeGreaterThanOrEqual(12 * checkpoint)
    // At most four at once: e.g. in the forward the one being made, its input, and the one whose
    // copy to the host may still run; in the backward the layer's own and the next one, prefetched.
    expect(on.gradientPass.peakByKind.activations).toBeLessThanOrEqual(4 * checkpoint + batch + 16) // + saved scalars
    expect(on.gradientPass.host.peakByKind.activations).toBeGreaterThanOrEqual(12 * checkpoint)
    expect(on.held).toBeLessThan(off.held)
  })
})

describe("a checkpoint budget", () => {
  it("offloads the longest-waiting checkpoints first, within the budget's bytes", () => {
    const g = stepGraphs(model, 1, S, { mode: "checkpoint" })
    const nodes = schedule(g.first.outputs, new Set(gradientInputs(g.first, g.adamw).keys()))
    const storedAt = (o: ReturnType<typeof offloadSchedule>) =>
      new Map([...o.storeAfter].flatMap(([i, ts]) => ts.map((t) => [t, i] as const)))
    const all = storedAt(offloadSchedule(nodes, g.first.outputs, [], { activations: true }))
    const bytes = (t: { size: number }) => 4 * t.size
    const earliest = [...all].sort((a, b) => a[1] - b[1])
    const budget = bytes(earliest[0]![0]) + bytes(earliest[1]![0]) + 3
    const some = storedAt(offloadSchedule(nodes, g.first.outputs, [], { activations: true, activationBytes: budget }))
    expect(some.size).toBe(2)
    expect([...some.keys()].reduce((n, t) => n + bytes(t), 0)).toBeLessThanOrEqual(budget)
    const lastPicked = Math.max(...some.values())
    for (const [t, i] of all) if (!some.has(t)) expect(i).toBeGreaterThanOrEqual(lastPicked)
    // and the plan offloads exactly those bytes at most
    const p = planStep(model, 1, S, { mode: "checkpoint", offload: { checkpoints: true, checkpointBytes: budget } })
    expect(p.gradientPass.host.peakByKind.activations).toBeLessThanOrEqual(budget)
    expect(p.gradientPass.host.peakByKind.activations).toBeGreaterThan(0)
  })

  it("plan --host-memory: as many checkpoints as the host holds, the rest on the device", () => {
    const deep = { ...model, num_hidden_layers: 12, max_position_embeddings: 4096 }
    const args = {
      model: deep,
      batch: 1,
      mlpChunks: "auto" as const,
      lmChunks: "auto" as const,
      target: "cpu" as const,
      precision: precisions.fp32,
    }
    const both = { checkpoints: true, optimizer: true }
    const full = planWithinHost({ ...args, offload: both }, "checkpoint", 2048)
    const none = planWithinHost({ ...args, offload: { optimizer: true } }, "checkpoint", 2048)
    expect(full.plan.host).toBeGreaterThan(none.plan.host)
    const hostMemory = Math.floor((full.plan.host + none.plan.host) / 2)
    const r = planWithinHost({ ...args, offload: both, hostMemory }, "checkpoint", 2048)
    expect(r.plan.host).toBeLessThanOrEqual(hostMemory)
    expect(r.offload.checkpointBytes).toBeGreaterThan(0)
    expect(r.plan.held).toBeLessThan(none.plan.held)
    expect(r.plan.held).toBeGreaterThan(full.plan.held)
    // what it reports is the plan of the offload it chose
    const again = planStep(
      deep,
      1,
      2048,
      { mode: "checkpoint", precision: precisions.fp32, offload: r.offload },
      makeCpuBackend(),
    )
    expect(again).toEqual(r.plan)
  })
})

describe("offload and checkpoints", () => {
  it("a run interrupted without offload resumes with it, and back: the same bits as the uninterrupted run", async () => {
    const opts = { mode: "checkpoint" as const, precision: "bf16-mixed" as const, steps: 8 }
    const whole = await run(cpuWithBfloat16(), opts)
    const dir = await mkdtemp(join(tmpdir(), "miniseq-offload-"))
    const saving = { ...opts, checkpointDir: dir, checkpointEvery: 2 }
    const stopAt = (step: number) => (r: { step: number }) => {
      if (r.step === step) throw new Error("killed")
    }
    try {
      // steps 1–3 without offload (saved at 2), 3–5 offloaded (saved at 4), the rest without
      await expect(run(cpuWithBfloat16(), saving, stopAt(3))).rejects.toThrow()
      const both = { checkpoints: true, optimizer: true }
      await expect(run(cpuWithBfloat16(), { ...saving, offload: both }, stopAt(5))).rejects.toThrow()
      const last = await run(cpuWithBfloat16(), saving)
      expect(last.resumedFrom).toBe(4)
      expect(last.records.map((r) => r.loss)).toEqual(whole.records.slice(4).map((r) => r.loss))
      expect(last.parameters).toEqual(whole.parameters)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe("--offload auto: the least offload that fits", () => {
  it("picks none, then checkpoints or the optimizer, then both, as the limit tightens; none without a host tier", () => {
    const step = { mode: "mst" as const, mlpChunks: 3, lmChunks: 5, precision: precisions.fp32 }
    const cpu = makeCpuBackend()
    const held = (offload: Offload) => planStep(model, 2, S, { ...step, offload }, cpu).held
    const all = { checkpoints: true, optimizer: true }
    const sizes = [{}, { checkpoints: true }, { optimizer: true }, all].map(held)
    expect(Math.min(...sizes)).toBe(held(all))
    const pick = (limit: number, backend: BackendImpl = cpu) =>
      leastOffloadThatFits(model, 2, S, step, limit, Infinity, backend)?.offload
    expect(pick(sizes[0]!)).toEqual({})
    // just under "none": the first of the others, in order, that fits
    const under = sizes[0]! - 1
    const first = [{ checkpoints: true }, { optimizer: true }, all].find((o) => held(o) <= under)
    expect(pick(under)).toEqual(first)
    const order = [{}, { checkpoints: true }, { optimizer: true }, all]
    for (const limit of [...sizes, held(all) + 1, sizes[0]! + 1])
      expect(pick(limit), `limit ${limit}`).toEqual(order.find((o) => held(o) <= limit))
    expect(pick(held(all) - 1)).toBeUndefined()
    // a host limit rules out what would not fit there
    expect(leastOffloadThatFits(model, 2, S, step, held(all), 0, cpu)).toBeUndefined()
    const { hostAlloc: _, ...noHost } = cpu
    expect(pick(under, noHost as BackendImpl)).toBeUndefined()
  })
})

describe("bad input", () => {
  it("a backend without a host tier refuses offload with a BadConfig naming it", async () => {
    const { hostAlloc: _, ...noHost } = makeCpuBackend()
    const exit = await Effect.runPromiseExit(
      train(
        { model, mode: "vanilla", batch: 1, seq: 8, steps: 1, lr: 1e-3, seed: 1, offload: { optimizer: true } },
        makeBatches({ tokens, batch: 1, seq: 8, seed: 1 }),
      ).pipe(Effect.provide(Layer.succeed(Backend, { ...noHost, name: "nohost" } as BackendImpl))),
    )
    expect(Exit.isFailure(exit)).toBe(true)
    const error = Exit.isFailure(exit) ? (exit.cause as unknown as { reasons?: unknown[] }) : undefined
    expect(JSON.stringify(error)).toMatch(/nohost backend has no host tier/)
  })

  it("a step that fits only when offloaded: the OutOfMemory says which --offload fits, before allocating", async () => {
    const step = { mode: "mst+checkpoint" as const, precision: precisions.fp32 }
    const cpu = makeCpuBackend()
    const offloaded = planStep(model, 2, S, { ...step, offload: { checkpoints: true, optimizer: true } }, cpu).held
    const frugal = planStep(model, 2, S, { ...step, mlpChunks: 32, lmChunks: 32 }, cpu).held
    expect(offloaded).toBeLessThan(frugal)
    const limit = Math.floor((offloaded + frugal) / 2)
    const exit = await Effect.runPromiseExit(
      train(
        { model, mode: "vanilla", batch: 2, seq: S, steps: 1, lr: 1e-3, seed: 1, memoryLimit: limit },
        makeBatches({ tokens, batch: 2, seq: S, seed: 1 }),
      ).pipe(Effect.provide(Layer.succeed(Backend, cpu))),
    )
    expect(String(Exit.isFailure(exit) ? exit.cause : "")).toMatch(
      /OutOfMemory[\s\S]*with --mode mst\+checkpoint --offload checkpoints,optimizer it fits/,
    )
  })

  it("past a host memory limit: an OutOfMemory of the host tier, saying to offload less; the device's advice is not given", async () => {
    const cpu = makeCpuBackend()
    const offload = { checkpoints: true, optimizer: true }
    const p = planStep(model, 2, S, { mode: "checkpoint", precision: precisions.fp32, offload }, cpu)
    const train1 = (hostMemoryLimit: number) =>
      Effect.runPromiseExit(
        train(
          { model, mode: "checkpoint", batch: 2, seq: S, steps: 1, lr: 1e-3, seed: 1, offload, hostMemoryLimit },
          makeBatches({ tokens, batch: 2, seq: S, seed: 1 }),
        ).pipe(Effect.provide(Layer.succeed(Backend, cpu))),
      )
    expect((await train1(p.host))._tag).toBe("Success") // the plan's host peak is exactly enough
    const exit = await train1(p.host - 1)
    expect(Exit.isFailure(exit)).toBe(true)
    const text = String(Exit.isFailure(exit) ? exit.cause : "")
    expect(text).toMatch(
      /out of host memory: offloading \d+ bytes with \d+ offloaded and a host limit of \d+; offload less/,
    )
    expect(text).not.toMatch(/the planner finds --mode/)
    expect(cpu.memory().live).toBe(0) // everything given back
    expect(cpu.memory().hostLive).toBe(0)
  })

  it("--offload takes none or a list of checkpoints, optimizer", () => {
    const parse = (s: string) => Effect.runSync(Effect.result(parseOffload(s)))
    expect(parse("none")).toMatchObject({ success: {} })
    expect(parse("checkpoints,optimizer")).toMatchObject({ success: { checkpoints: true, optimizer: true } })
    expect(parse(" optimizer ")).toMatchObject({ success: { optimizer: true } })
    expect(parse("checkpoints:2MiB,optimizer")).toMatchObject({
      success: { checkpoints: true, checkpointBytes: 2 ** 21, optimizer: true },
    })
    for (const bad of [
      "",
      "activations",
      "checkpoints,weights",
      "none,optimizer",
      "optimizer:1GiB",
      "checkpoints:lots",
    ]) {
      const r = parse(bad)
      expect(r._tag, bad).toBe("Failure")
      const e = (r as { failure: BadConfig }).failure
      expect(e).toBeInstanceOf(BadConfig)
      expect(e.field).toBe("offload")
      if (!bad.startsWith("checkpoints:"))
        expect(e.message).toMatch(/--offload takes "none" or a comma-separated list of checkpoints, optimizer/)
    }
  })
})
