/** `miniseq bench`: measured peak memory and tokens/s against S for each mode, on the CPU backend. */
import { accessSync, constants, existsSync, mkdirSync, statSync } from "node:fs"
import { dirname } from "node:path"
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { cpuBackendLayer, makeCpuBackend } from "../backends/cpu/index.js"
import { BadConfig, WriteError } from "../core/errors.js"
import { attempt } from "../core/executor.js"
import { makeBatches } from "../models/data.js"
import { type Mode, modes } from "../models/llama.js"
import { planStep } from "../models/planner.js"
import { rng } from "../core/random.js"
import { train } from "../models/train.js"
import { CPU_MAX_ELEMENTS, checkSizes } from "./limits.js"
import { availableMemory, refuseWhatCannotFit } from "./memory-check.js"
import { writeAtomic, writeFailed } from "./run-record.js"
import { chunksFlag, configFlag, loadModel, modelFlag, parseChunks, positive } from "./options.js"
import { formatBytes, formatCount, lineChart } from "./svg.js"

interface Row {
  mode: Mode
  seq: number
  /** The step's peak (the larger of forward + backward and the AdamW update), measured and planned. */
  measuredPeak: number
  plannedPeak: number
  /** Forward + backward alone: where the modes differ (AdamW's peak does not depend on S). */
  gradientPassPeak: number
  tokensPerSecond: number
  chunks: { mlp: number; lm: number }
}

/** `path`'s folder exists (made if need be) and can be written, and `path` is not a folder. */
function writableFile(flag: string, path: string): Effect.Effect<void, WriteError> {
  return Effect.try({
    try: () => {
      mkdirSync(dirname(path), { recursive: true })
      accessSync(dirname(path), constants.W_OK)
      if (existsSync(path) && statSync(path).isDirectory())
        throw Object.assign(new Error("it is a directory"), { code: "EISDIR" })
    },
    catch: (e) => {
      const w = writeFailed(path, e)
      return new WriteError({ ...w, message: w.message.replace(/choose another --out$/, `choose another --${flag}`) })
    },
  })
}

export const benchCommand = Command.make(
  "bench",
  {
    model: modelFlag,
    config: configFlag,
    seqs: Flag.String("seqs").pipe(
      Flag.withDefault("64,128,256"),
      Flag.withDescription("comma-separated sequence lengths (default: 64,128,256)"),
    ),
    modes: Flag.String("modes").pipe(
      Flag.withDefault(modes.join(",")),
      Flag.withDescription("comma-separated modes (default: vanilla,checkpoint,mst,mst+checkpoint)"),
    ),
    batch: Flag.Int("batch").pipe(Flag.withDefault(1), Flag.withDescription("sequences per batch (default: 1)")),
    steps: Flag.Int("steps").pipe(
      Flag.withDefault(2),
      Flag.withDescription("steps per point; tokens/s is the last step's (default: 2)"),
    ),
    mlpChunks: chunksFlag("mlp-chunks", "MLP"),
    lmChunks: chunksFlag("lm-chunks", "LM head + loss"),
    json: Flag.String("json").pipe(
      Flag.withDefault("bench/results/bench-cpu.json"),
      Flag.withDescription("where to write the measurements (JSON) (default: bench/results/bench-cpu.json)"),
    ),
    svg: Flag.String("svg").pipe(
      Flag.withDefault("bench/results/bench-cpu.svg"),
      Flag.withDescription("where to write the chart (SVG) (default: bench/results/bench-cpu.svg)"),
    ),
  },
  (f) =>
    Effect.gen(function* () {
      const model = yield* loadModel(f.model, f.config)
      const name = Option.isSome(f.config) ? f.config.value : f.model
      yield* positive("batch", f.batch)
      yield* positive("steps", f.steps)
      const seqs = f.seqs.split(",").map((s) => (s.trim() === "" ? NaN : Number(s)))
      if (seqs.some((s) => !Number.isSafeInteger(s) || s < 1))
        return yield* Effect.fail(
          new BadConfig({
            field: "seqs",
            message: `--seqs must be positive integers separated by commas, got "${f.seqs}"`,
          }),
        )
      const chosen = f.modes.split(",") as Mode[]
      const unknown = chosen.filter((m) => !modes.includes(m))
      if (unknown.length > 0)
        return yield* Effect.fail(
          new BadConfig({
            field: "modes",
            message: `unknown mode(s) ${unknown.join(", ")}; choose from ${modes.join(", ")}`,
          }),
        )
      const [mlpChunks, lmChunks] = [
        yield* parseChunks("mlp-chunks", f.mlpChunks),
        yield* parseChunks("lm-chunks", f.lmChunks),
      ]
      // Where the results go must be writable before the first point runs (a bench may take hours).
      for (const [flag, path] of [
        ["json", f.json],
        ["svg", f.svg],
      ] as const)
        yield* writableFile(flag, path)
      for (const seq of seqs) yield* checkSizes(model, f.batch, seq, CPU_MAX_ELEMENTS)
      // Every point's plan before the first allocates: refuse, with the planner's advice, what cannot fit.
      const backend = makeCpuBackend()
      const available = availableMemory("cpu", backend)
      for (const seq of seqs)
        for (const mode of chosen) {
          const planned = yield* attempt(() => planStep(model, f.batch, seq, { mode, mlpChunks, lmChunks }, backend))
          yield* refuseWhatCannotFit(planned, available, model, f.batch, seq, { mode }, backend)
        }
      const random = rng(1)
      const tokens = Int32Array.from({ length: Math.max(...seqs) * f.batch * 4 + 1 }, () =>
        Math.floor(random() * model.vocab_size),
      )

      yield* Console.log(
        `miniseq bench: ${name} (V = ${model.vocab_size}), batch ${f.batch}, CPU backend, ${f.steps} steps per point\n${"mode".padEnd(15)} ${"S".padStart(6)} ${"measured peak".padStart(14)} ${"planned".padStart(11)} ${"fwd+bwd".padStart(11)} ${"tokens/s".padStart(9)}`,
      )
      const rows: Row[] = []
      let optimizerPeak = 0
      for (const seq of seqs) {
        for (const mode of chosen) {
          const batches = makeBatches({ tokens, batch: f.batch, seq, seed: 1 })
          const opts = { model, mode, mlpChunks, lmChunks, batch: f.batch, seq, steps: f.steps, lr: 1e-3, seed: 1 }
          const r = yield* train(opts, batches).pipe(Effect.provide(cpuBackendLayer()))
          const last = r.records.at(-1)!
          const planned = yield* attempt(() =>
            planStep(model, f.batch, seq, { mode, mlpChunks, lmChunks }, makeCpuBackend()),
          )
          const row: Row = {
            mode,
            seq,
            measuredPeak: Math.max(...r.records.map((x) => x.peak)),
            plannedPeak: planned.peak,
            gradientPassPeak: planned.gradientPass.peak,
            tokensPerSecond: last.tokensPerSecond,
            chunks: planned.chunks,
          }
          rows.push(row)
          optimizerPeak = planned.optimizerPass.peak
          yield* Console.log(
            `${mode.padEnd(15)} ${String(seq).padStart(6)} ${formatBytes(row.measuredPeak).padStart(14)} ${formatBytes(row.plannedPeak).padStart(11)} ${formatBytes(row.gradientPassPeak).padStart(11)} ${Math.round(row.tokensPerSecond).toString().padStart(9)}`,
          )
        }
      }
      yield* Effect.try({
        try: () => {
          writeAtomic(
            f.json,
            JSON.stringify(
              {
                model: name,
                config: model,
                batch: f.batch,
                backend: "cpu",
                date: new Date().toISOString(),
                optimizerPeak,
                rows,
              },
              null,
              2,
            ) + "\n",
          )
          writeAtomic(
            f.svg,
            lineChart({
              title: `peak memory, forward + backward — ${name} (V = ${formatCount(model.vocab_size)}), batch ${f.batch}, CPU`,
              xLabel: "sequence length S",
              yLabel: "peak live bytes",
              logX: true,
              logY: true,
              format: formatBytes,
              // A step's peak is the larger of these curves and the AdamW update's (the same in every mode).
              series: [
                ...chosen.map((mode) => ({
                  name: mode,
                  points: rows
                    .filter((r) => r.mode === mode)
                    .map((r) => [r.seq, r.gradientPassPeak] as [number, number]),
                })),
                { name: "AdamW update", points: seqs.map((seq) => [seq, optimizerPeak] as [number, number]) },
              ],
            }),
          )
        },
        catch: (e) => (e instanceof WriteError ? e : new WriteError({ path: f.json, message: String(e) })),
      })
      yield* Console.log(`wrote ${f.json} and ${f.svg}`)
    }),
).pipe(Command.withDescription("measure peak memory and tokens/s against S for each mode (CPU backend)"))
