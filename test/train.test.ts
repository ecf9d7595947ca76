// The main job: modes agree, the planner predicts the measured peak, resume reproduces, errors are clear.
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Cause, Effect, Exit, Layer } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { Backend } from "../src/core/backend.js"
import { cpuWithBfloat16, roundToBfloat16 } from "../src/backends/cpu/bfloat16.js"
import { cpuBackendLayer, makeCpuBackend } from "../src/backends/cpu/index.js"
import { decodeConfig, decodeConfigSync, type LlamaConfig } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import { llamaLoss, type Mode, modes } from "../src/models/llama.js"
import { precisions } from "../src/models/optimizer.js"
import { planStep } from "../src/models/planner.js"
import { type TrainOptions, train } from "../src/models/train.js"
import { rng } from "../src/core/random.js"
import { evaluate } from "../src/core/executor.js"
import { input } from "../src/core/graph.js"
import { rmsNorm, rope } from "../src/core/routines/basic.js"
import { OutOfMemory } from "../src/core/errors.js"
import { maxRelDiff } from "./helpers.js"

const model: LlamaConfig = decodeConfigSync({
  hidden_size: 32,
  intermediate_size: 80,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 64,
  max_position_embeddings: 64,
})
const random = rng(3)
// Something to learn: a fixed successor for every token, broken by 10% noise.
const successor = Int32Array.from({ length: 64 }, (_, i) => (i * 37 + 11) % 64)
const corpus = new Int32Array(4000)
for (let i = 1; i < corpus.length; i++)
  corpus[i] = random() < 0.1 ? Math.floor(random() * 64) : successor[corpus[i - 1]!]!
const base: TrainOptions = {
  model,
  mode: "vanilla",
  batch: 2,
  seq: 24,
  steps: 30,
  lr: 1e-2,
  warmup: 3,
  seed: 5,
  mlpChunks: 5,
  lmChunks: 7,
}
const batches = makeBatches({ tokens: corpus.subarray(0, 3000), batch: base.batch, seq: base.seq, seed: 9 }) // the rest is held out
const runTrain = (opts: TrainOptions, onStep?: Parameters<typeof train>[2]) =>
  Effect.runPromiseExit(train(opts, batches, onStep).pipe(Effect.provide(cpuBackendLayer())))
const ok = async (opts: TrainOptions, b = batches) => {
  const exit = await Effect.runPromiseExit(train(opts, b).pipe(Effect.provide(cpuBackendLayer())))
  if (Exit.isFailure(exit)) throw new Error(String(exit.cause))
  return exit.value
}

const dirs: string[] = []
const tempDir = async () => {
  const d = await mkdtemp(join(tmpdir(), "miniseq-"))
  dirs.push(d)
  return d
}
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})

describe("the four modes train identically", () => {
  it("same loss curve over 30 steps (≤ 1e-4 relative) and the same parameters, with M that does not divide S", async () => {
    const validation = {
      batches: makeBatches({ tokens: corpus.subarray(3000), batch: 2, seq: 24, seed: 77 }),
      count: 4,
    }
    const results = await Promise.all(modes.map((mode) => ok({ ...base, mode, validation })))
    const [vanilla, ...others] = results
    const losses = vanilla!.records.map((r) => r.loss)
    expect(losses.length).toBe(30)
    expect(losses.at(-1)!).toBeLessThan(losses[0]! - 0.3) // it learns
    expect(vanilla!.validationLoss!).toBeLessThan(losses[0]! - 0.3) // and it generalises to held-out windows
    for (const r of others)
      expect(Math.abs(r.validationLoss! - vanilla!.validationLoss!) / vanilla!.validationLoss!).toBeLessThan(1e-4)
    for (const r of others) {
      expect(
        maxRelDiff(
          r.records.map((x) => x.loss),
          losses,
        ),
      ).toBeLessThan(1e-4)
      for (const name of Object.keys(vanilla!.parameters))
        expect(maxRelDiff(r.parameters[name]!, vanilla!.parameters[name]!)).toBeLessThan(1e-3)
    }
  })

  it("gradient accumulation over 2 micro-batches of 1 equals one batch of 2", async () => {
    // Micro-batch k of step s is batchAt((s−1)·A + k): feed the same rows both ways.
    const rows = makeBatches({ tokens: corpus, batch: 1, seq: 24, seed: 9 })
    const paired = {
      batch: 2,
      seq: 24,
      windows: rows.windows,
      batchAt: (s: number) => {
        const [a, b] = [rows.batchAt(2 * s), rows.batchAt(2 * s + 1)]
        return {
          tokens: Int32Array.from([...a.tokens, ...b.tokens]),
          targets: Int32Array.from([...a.targets, ...b.targets]),
          starts: Int32Array.from([...a.starts, ...b.starts]),
        }
      },
    }
    const once = await Effect.runPromise(
      train({ ...base, steps: 5, mode: "mst" }, paired).pipe(Effect.provide(cpuBackendLayer())),
    )
    const twice = await Effect.runPromise(
      train({ ...base, batch: 1, accumulation: 2, steps: 5, mode: "mst" }, rows).pipe(
        Effect.provide(cpuBackendLayer()),
      ),
    )
    expect(
      maxRelDiff(
        twice.records.map((r) => r.loss),
        once.records.map((r) => r.loss),
      ),
    ).toBeLessThan(1e-5)
    // The norm AdamW clips by is of the summed gradients (their squares from the last micro-batch).
    expect(
      maxRelDiff(
        twice.records.map((r) => r.gradNorm),
        once.records.map((r) => r.gradNorm),
      ),
    ).toBeLessThan(1e-5)
  })
})

describe("the planner is the executor in counting mode", () => {
  it("predicts the measured peak of a real CPU step within 5% (exactly, in fact), across modes and lengths", async () => {
    for (const seq of [16, 40]) {
      for (const mode of modes) {
        const predicted = planStep(model, 2, seq, { mode, mlpChunks: 3, lmChunks: 4 }, makeCpuBackend()).peak
        const cpu = makeCpuBackend()
        const b = makeBatches({ tokens: corpus, batch: 2, seq, seed: 1 })
        const r = await Effect.runPromise(
          train({ ...base, mode, seq, steps: 1, mlpChunks: 3, lmChunks: 4 }, b).pipe(
            Effect.provide(cpuBackendLayer(cpu)),
          ),
        )
        const measured = r.records[0]!.peak
        expect(Math.abs(predicted - measured) / measured).toBeLessThan(0.05)
        expect(predicted).toBe(measured)
        expect(cpu.memory().peak).toBeGreaterThanOrEqual(measured) // the backend also held the upload staging
      }
    }
  })

  it("measures the plan kind by kind (fp32, bf16-mixed): training binds by the planner's maps", async () => {
    for (const precision of ["fp32", "bf16-mixed"] as const) {
      for (const mode of modes) {
        const backend = cpuWithBfloat16()
        const chunks = { mlpChunks: 3, lmChunks: 4 }
        const step = { mode, ...chunks, precision: precisions[precision] }
        const { gradientPass, optimizerPass } = planStep(model, 2, 24, step, backend)
        const opts = { ...base, mode, precision, steps: 1, ...chunks }
        const layer = Layer.succeed(Backend, backend)
        const r = await Effect.runPromise(train(opts, batches).pipe(Effect.provide(layer)))
        const larger = optimizerPass.peak > gradientPass.peak ? optimizerPass : gradientPass
        expect(r.records[0]!.memory).toEqual(larger)
      }
    }
  })

  it("MST needs less memory than vanilla, and mst+checkpoint least of all, for a large vocabulary", () => {
    const big = { ...model, vocab_size: 8192, max_position_embeddings: 512 }
    const peak = (mode: Mode) => planStep(big, 1, 512, { mode }, makeCpuBackend()).peak
    expect(peak("mst")).toBeLessThan(peak("vanilla"))
    expect(peak("mst+checkpoint")).toBeLessThan(peak("checkpoint"))
  })
})

describe("checkpoints and resume", () => {
  it("an interrupted run, resumed, reproduces the uninterrupted one bitwise", async () => {
    const whole = await ok({ ...base, steps: 12, mode: "mst" })
    const dir = await tempDir()
    const opts = { ...base, steps: 12, mode: "mst" as const, checkpointDir: dir, checkpointEvery: 4 }
    const interrupted = await runTrain(opts, (r) => {
      if (r.step === 7) throw new Error("killed")
    })
    expect(Exit.isFailure(interrupted)).toBe(true)
    expect((await readdir(dir)).sort()).toEqual(["step-00000004"]) // step 7 never reached a checkpoint
    const resumed = await ok(opts)
    expect(resumed.resumedFrom).toBe(4)
    expect(resumed.records.map((r) => r.loss)).toEqual(whole.records.slice(4).map((r) => r.loss))
    for (const name of Object.keys(whole.parameters)) expect(resumed.parameters[name]).toEqual(whole.parameters[name])
    expect((await readdir(dir)).sort()).toEqual(["step-00000008", "step-00000012"])
    const state = JSON.parse(await readFile(join(dir, "step-00000012", "trainer_state.json"), "utf8"))
    expect(state.step).toBe(12)
  })

  it("refuses to resume with other options or another model, naming what differs", async () => {
    const dir = await tempDir()
    await ok({ ...base, steps: 2, checkpointDir: dir })
    const otherSeed = await runTrain({ ...base, steps: 4, seed: 6, checkpointDir: dir })
    expect(String(Exit.isFailure(otherSeed) ? otherSeed.cause : "")).toMatch(/BadCheckpoint[\s\S]*seed 5[\s\S]*seed 6/)
    const wider = await runTrain({ ...base, steps: 2, model: { ...model, intermediate_size: 96 }, checkpointDir: dir })
    expect(String(Exit.isFailure(wider) ? wider.cause : "")).toContain('tensor "model.layers.0.mlp.down_proj.weight"')
  })
})

describe("mixed precision (bfloat16 emulated on the CPU)", () => {
  const bf16Layer = () => Layer.succeed(Backend, cpuWithBfloat16())
  const okBf16 = async (opts: TrainOptions, onStep?: Parameters<typeof train>[2]) => {
    const exit = await Effect.runPromiseExit(train(opts, batches, onStep).pipe(Effect.provide(bf16Layer())))
    if (Exit.isFailure(exit)) throw new Error(String(exit.cause))
    return exit.value
  }
  const isBf16 = (xs: Float32Array) => {
    const r = xs.slice()
    roundToBfloat16(r)
    return r.every((x, i) => x === xs[i])
  }

  it("rounds to the nearest bfloat16, ties to even", () => {
    const x = Float32Array.of(
      1 + 2 ** -8,
      1 + 3 * 2 ** -8,
      1 + 2 ** -8 + 2 ** -20,
      -2.5,
      3.4028234663852886e38,
      Infinity,
      NaN,
      1e-45,
    )
    roundToBfloat16(x)
    // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷ (even wins), the largest float32 is past bfloat16's
    // largest finite value, and the smallest float32 subnormal is below half of bfloat16's.
    expect([...x]).toEqual([1, 1 + 2 ** -6, 1 + 2 ** -7, -2.5, Infinity, Infinity, NaN, 0])
  })

  it("RoPE and RMSNorm on bf16 inputs stay within bf16 rounding of float64, at positions past 256 too", async () => {
    const S = 8200,
      D = 8
    const data = Float32Array.from({ length: S * D }, (_, i) => Math.sin(i * 0.37) + 0.5)
    roundToBfloat16(data) // exact bf16 values, so both runs see the same input
    const run = async (dtype: "bfloat16" | "float64", layer: Layer.Layer<Backend>) => {
      const x = input("x", [1, 1, S, D], dtype),
        w = input("w", [D], dtype)
      const feeds = new Map([
        [x, dtype === "float64" ? Float64Array.from(data) : data],
        [w, dtype === "float64" ? new Float64Array(D).fill(1.5) : new Float32Array(D).fill(1.5)],
      ])
      return (await Effect.runPromise(evaluate([rope(x, 500000), rmsNorm(x, w)], feeds).pipe(Effect.provide(layer))))
        .values
    }
    const [ropeBf16, normBf16] = await run("bfloat16", Layer.succeed(Backend, cpuWithBfloat16()))
    const [ropeF64, normF64] = await run("float64", cpuBackendLayer())
    const worst = (a: ArrayLike<number>, b: ArrayLike<number>) => {
      let w = 0
      for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i]! - b[i]!))
      return w
    }
    // |values| ≤ 1.5·√2, so a few bf16 roundings (2⁻⁸ relative each) stay below 0.03.
    expect(worst(ropeBf16!, ropeF64!)).toBeLessThan(0.03)
    expect(worst(normBf16!, normF64!)).toBeLessThan(0.03)
  })

  it("bf16-mixed follows the fp32 loss curve, in every mode, and keeps fp32 master weights", async () => {
    const fp32 = await ok({ ...base, steps: 20 })
    const mixed = await Promise.all(modes.map((mode) => okBf16({ ...base, steps: 20, mode, precision: "bf16-mixed" })))
    for (const r of mixed) {
      expect(
        maxRelDiff(
          r.records.map((x) => x.loss),
          fp32.records.map((x) => x.loss),
        ),
      ).toBeLessThan(2e-2)
      expect(r.records.at(-1)!.loss).toBeLessThan(r.records[0]!.loss - 0.3)
      // The returned weights are the fp32 master copy: updates smaller than a bf16 step survive in it.
      expect(isBf16(r.parameters["model.layers.0.mlp.up_proj.weight"]!)).toBe(false)
    }
    const pure = await okBf16({ ...base, steps: 20, precision: "bf16" })
    expect(isBf16(pure.parameters["model.layers.0.mlp.up_proj.weight"]!)).toBe(true) // no master copy
    expect(
      maxRelDiff(
        pure.records.map((x) => x.loss),
        fp32.records.map((x) => x.loss),
      ),
    ).toBeLessThan(5e-2)
  })

  it("an interrupted bf16-mixed run, resumed from its fp32 master checkpoint, reproduces the uninterrupted one bitwise", async () => {
    const opts = { ...base, steps: 8, mode: "mst+checkpoint" as const, precision: "bf16-mixed" as const }
    const whole = await okBf16(opts)
    const dir = await tempDir()
    await expect(
      okBf16({ ...opts, checkpointDir: dir, checkpointEvery: 4 }, (r) => {
        if (r.step === 6) throw new Error("killed")
      }),
    ).rejects.toThrow()
    const resumed = await okBf16({ ...opts, checkpointDir: dir, checkpointEvery: 4 })
    expect(resumed.resumedFrom).toBe(4)
    expect(resumed.records.map((r) => r.loss)).toEqual(whole.records.slice(4).map((r) => r.loss))
    for (const name of Object.keys(whole.parameters)) expect(resumed.parameters[name]).toEqual(whole.parameters[name])
    const fp32Resume = await Effect.runPromiseExit(
      train({ ...opts, precision: "fp32", checkpointDir: dir }, batches).pipe(Effect.provide(bf16Layer())),
    )
    expect(String(Exit.isFailure(fp32Resume) ? fp32Resume.cause : "")).toMatch(
      /BadCheckpoint[\s\S]*precision bf16-mixed[\s\S]*precision fp32/,
    )
  })

  it("a backend without bfloat16 buffers says so and names the fix", async () => {
    const exit = await runTrain({ ...base, steps: 1, precision: "bf16-mixed" })
    expect(String(Exit.isFailure(exit) ? exit.cause : "")).toMatch(
      /DTypeError[\s\S]*cpu backend does not have[\s\S]*--precision fp32/,
    )
  })
})

describe("bad input is a clear error and loses nothing", () => {
  it("running out of memory names the request and the mode and M that would fit, and that advice works", async () => {
    const wide = { ...model, vocab_size: 4096, max_position_embeddings: 64 }
    const tokens = Int32Array.from(corpus, (t) => t * 61)
    const b = makeBatches({ tokens, batch: 2, seq: 48, seed: 1 })
    const opts = { ...base, model: wide, seq: 48, steps: 1, mode: "vanilla" as const }
    const vanilla = planStep(wide, 2, 48, { mode: "vanilla" }, makeCpuBackend()).peak
    const best = planStep(wide, 2, 48, { mode: "mst", mlpChunks: 1, lmChunks: 16 }, makeCpuBackend()).peak
    const limit = Math.floor((vanilla + best) / 2)
    const exit = await Effect.runPromiseExit(
      train({ ...opts, memoryLimit: limit }, b).pipe(Effect.provide(cpuBackendLayer())),
    )
    expect(Exit.isFailure(exit)).toBe(true)
    const failure = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
    expect(failure).toBeInstanceOf(OutOfMemory)
    const oom = failure as OutOfMemory
    expect(oom.limit).toBe(limit)
    const hint = /--mode (\S+) --mlp-chunks (\d+) --lm-chunks (\d+) fits/.exec(oom.message)
    expect(hint, oom.message).not.toBeNull()
    const advised = await ok(
      { ...opts, mode: hint![1] as Mode, mlpChunks: Number(hint![2]), lmChunks: Number(hint![3]), memoryLimit: limit },
      b,
    )
    expect(advised.records[0]!.peak).toBeLessThanOrEqual(limit)
  })

  it("a run that runs out of memory anywhere gives back every byte, so the same backend can retry", async () => {
    const cpu = makeCpuBackend()
    const layer = Layer.succeed(Backend, cpu)
    const opts = { ...base, steps: 2, accumulation: 2, mode: "vanilla" as const }
    const validation = { batches, count: 1 }
    const peak = planStep(model, base.batch, base.seq, { mode: "vanilla", accumulation: 2 }, cpu).peak
    // Limits from far below the step's peak to just above it: the step fails in the first or the
    // accumulating micro-batch, in the optimizer pass, or not at all.
    let failures = 0
    for (const fraction of [0.05, 0.2, 0.4, 0.6, 0.8, 0.9, 0.97, 1.0, 1.1]) {
      const memoryLimit = Math.floor(peak * fraction)
      const exit = await Effect.runPromiseExit(
        train({ ...opts, memoryLimit, validation }, batches).pipe(Effect.provide(layer)),
      )
      if (Exit.isFailure(exit)) {
        failures++
        expect(Cause.squash(exit.cause)).toBeInstanceOf(OutOfMemory)
      }
      expect(cpu.memory().live, `live bytes after a run with limit ${fraction}·peak`).toBe(0)
    }
    expect(failures).toBeGreaterThan(2)
    // The same backend then trains the full run.
    expect((await Effect.runPromise(train(opts, batches).pipe(Effect.provide(layer)))).records).toHaveLength(2)
    expect(cpu.memory().live).toBe(0)
  })

  it("a non-finite loss stops training before the update, keeping the last good checkpoint", async () => {
    const dir = await tempDir()
    const saved: Buffer[] = []
    // lr 1e10 makes step 1's update blow the weights up, so step 2's loss is NaN.
    const exploding = await runTrain(
      { ...base, steps: 4, lr: 1e10, warmup: 0, checkpointDir: dir, checkpointEvery: 1 },
      async () => {},
    )
    const cause = String(Exit.isFailure(exploding) ? exploding.cause : "")
    expect(cause).toContain("NonFiniteLoss: loss is NaN at step 2")
    expect(cause).toContain("parameters were not updated")
    expect(await readdir(dir)).toEqual(["step-00000001"])
    saved.push(await readFile(join(dir, "step-00000001", "model.safetensors")))
    expect(saved[0]!.length).toBeGreaterThan(0)
  })

  it("a sequence longer than the model allows", () => {
    expect(() => llamaLoss(model, 1, 65, { mode: "mst" })).toThrow(
      /sequence length 65 exceeds the model's max_position_embeddings \(64\)/,
    )
  })

  it("a bad config names the field", async () => {
    const bad = await Effect.runPromiseExit(decodeConfig({ ...model, num_key_value_heads: 3 }))
    expect(String(Exit.isFailure(bad) ? bad.cause : "")).toContain(
      "num_key_value_heads: 3 must divide num_attention_heads (4)",
    )
    const missing = await Effect.runPromiseExit(decodeConfig({ hidden_size: 8 }))
    expect(String(Exit.isFailure(missing) ? missing.cause : "")).toMatch(/BadConfig[\s\S]*intermediate_size/)
  })
})
