/** `miniseq train`: train a Llama on the shipped corpus with a progress bar, plots and the run's record (run-record.ts). */
import { existsSync } from "node:fs"
import { freemem } from "node:os"
import { join } from "node:path"
import { SingleBar } from "cli-progress"
import { Cause, Console, Effect, Exit, Option } from "effect"
import { Command, Flag } from "effect/cli"
import type { Layer } from "effect"
import { Backend } from "../core/backend.js"
import { cpuBackendLayer } from "../backends/cpu/index.js"
import { fastCpuBackendLayer } from "../backends/cpu-fast/index.js"
import { cudaReserve } from "../backends/cuda/usable-memory.js"
import { BackendUnavailable, BadConfig, WriteError } from "../core/errors.js"
import { attempt } from "../core/executor.js"
import { latestCheckpoint } from "../models/checkpoint.js"
import { DEFAULT_CORPUS_PATH, loadCorpus } from "../models/corpus.js"
import { makeBatches, trainValSplit } from "../models/data.js"
import { checkCheckpointGroup, modes } from "../models/llama.js"
import { precisions } from "../models/optimizer.js"
import { leastOffloadThatFits, planStep } from "../models/planner.js"
import { inMode } from "../models/step.js"
import { loadPretrained, readPretrainedConfig } from "../models/pretrained.js"
import { checkVocabulary, corpusIds } from "../models/tokenizer.js"
import { printSample } from "./generate-command.js"
import { chooseTokenizer, tokenizerFlag } from "./model-source.js"
import { ensureCudaAddon } from "./cuda-build.js"
import { type StepRecord, train } from "../models/train.js"
import {
  chunksFlag,
  checkpointGroupFlag,
  configFlag,
  describeOffload,
  loadModel,
  modeFlag,
  modelFlag,
  offloadFlag,
  parseBytes,
  parseChunks,
  parseOffload,
  positive,
} from "./options.js"
import { checkRunFolder, lockRunFolder } from "./run-folder.js"
import { checkpointStep, describeCorpus, History, previousStart, type RunInfo, writeRunFiles } from "./run-record.js"
import { CPU_MAX_ELEMENTS, checkSizes, integerAtLeast, seedFlag, tokensPerStep } from "./limits.js"
import { availableMemory, refuseWhatCannotFit } from "./memory-check.js"
import { formatBytes } from "./svg.js"

const flags = {
  model: modelFlag,
  config: configFlag,
  mode: modeFlag,
  mlpChunks: chunksFlag("mlp-chunks", "MLP"),
  lmChunks: chunksFlag("lm-chunks", "LM head + loss"),
  checkpointGroup: checkpointGroupFlag("K > 1 needs --mode checkpoint or mst+checkpoint"),
  batch: Flag.Int("batch").pipe(Flag.withDefault(8), Flag.withDescription("sequences per micro-batch (default: 8)")),
  seq: Flag.Int("seq").pipe(Flag.withDefault(128), Flag.withDescription("tokens per sequence (default: 128)")),
  steps: Flag.Int("steps").pipe(Flag.withDefault(300), Flag.withDescription("optimizer steps (default: 300)")),
  accumulate: Flag.Int("accumulate").pipe(
    Flag.withDefault(1),
    Flag.withDescription("micro-batches per step (gradient accumulation) (default: 1)"),
  ),
  lr: Flag.Finite("lr").pipe(Flag.withDefault(3e-3), Flag.withDescription("peak learning rate (default: 3e-3)")),
  warmup: Flag.Int("warmup").pipe(
    Flag.withDefault(20),
    Flag.withDescription("linear warmup steps, then cosine decay to lr/10 (default: 20)"),
  ),
  seed: Flag.Int("seed").pipe(
    Flag.withDefault(1),
    Flag.withDescription("seed of the initial weights and the batch order (default: 1)"),
  ),
  tokenizer: tokenizerFlag(),
  initFrom: Flag.String("init-from").pipe(
    Flag.optional,
    Flag.withDescription(
      "start from a Hugging Face model folder (config.json + model.safetensors or its sharded index; BF16/F16/F32): its config is the model (default: none, a fresh model)",
    ),
  ),
  sample: Flag.Int("sample").pipe(
    Flag.withDefault(48),
    Flag.withDescription(
      "after training, print this many tokens the model writes after a held-out prompt; 0: none (default: 48)",
    ),
  ),
  corpus: Flag.String("corpus").pipe(
    Flag.optional,
    Flag.withDescription("a UTF-8 text file (default: the shipped Moby-Dick)"),
  ),
  out: Flag.String("out").pipe(
    Flag.withDefault("runs/latest"),
    Flag.withDescription(
      "run directory: checkpoints/, steps.jsonl, run.json, loss.svg, memory.svg; an existing checkpoint there is resumed (default: runs/latest)",
    ),
  ),
  checkpointEvery: Flag.Int("checkpoint-every").pipe(
    Flag.withDefault(100),
    Flag.withDescription(
      "save a checkpoint every N steps (and after the last); N ≥ --steps: only after the last (default: 100)",
    ),
  ),
  backend: Flag.Literals("backend", ["cpu-fast", "cpu", "webgpu", "cuda"] as const).pipe(
    Flag.withDefault("cpu-fast" as const),
    Flag.withDescription(
      "where the kernels run: cpu-fast (WebAssembly SIMD, products in native code where the install built it), cpu (the plain TypeScript reference), webgpu (Dawn) or cuda (the native addon) (default: cpu-fast)",
    ),
  ),
  precision: Flag.Literals("precision", ["fp32", "bf16-mixed", "bf16"] as const).pipe(
    Flag.withDefault("fp32" as const),
    Flag.withDescription(
      "fp32; bf16-mixed: bf16 weights and activations, fp32 master weights and moments; bf16: all bf16 (bf16 needs --backend cuda) (default: fp32)",
    ),
  ),
  offload: offloadFlag,
  hostMemoryLimit: Flag.String("host-memory-limit").pipe(
    Flag.optional,
    Flag.withDescription("with --offload: fail with OutOfMemory past this much offloaded host memory, e.g. 90GiB"),
  ),
  memoryLimit: Flag.String("memory-limit").pipe(
    Flag.optional,
    Flag.withDescription("fail with OutOfMemory (and the M that would fit) past this size, e.g. 12MiB"),
  ),
}

/**
 * The chosen backend's layer. WebGPU and CUDA are loaded only when chosen: Dawn for Node (the
 * optional `webgpu` package) need not be installed, nor the CUDA addon built, to train on the CPU.
 */
export function backendLayer(
  name: "cpu-fast" | "cpu" | "webgpu" | "cuda",
): Effect.Effect<Layer.Layer<Backend, BackendUnavailable>, BackendUnavailable> {
  if (name === "cpu-fast") return Effect.sync(() => fastCpuBackendLayer())
  if (name === "cpu") return Effect.succeed(cpuBackendLayer())
  if (name === "cuda")
    return ensureCudaAddon.pipe(
      Effect.andThen(Effect.promise(() => import("../backends/cuda/index.js"))),
      Effect.map((m) => m.cudaBackendLayer()),
    )
  return Effect.tryPromise({
    try: () => import("../backends/webgpu/index.js"),
    catch: (e) => {
      const reason = String(e).includes("'webgpu'")
        ? "Dawn for Node is not installed: run `npm install webgpu@0.6.2` (an optional peer dependency of miniseq)"
        : `could not load the WebGPU backend: ${String(e)}`
      return new BackendUnavailable({ backend: "webgpu", reason, message: `webgpu: backend unavailable: ${reason}` })
    },
  }).pipe(Effect.map((m) => m.webgpuBackendLayer()))
}

/** The held-out batches' seed: the next one, or the one before for the largest (so every seed works). */
const heldOutSeed = (seed: number): number => (seed < Number.MAX_SAFE_INTEGER ? seed + 1 : seed - 1)

/** After Ctrl-C: nothing of the interrupted step was saved; where the same command resumes. */
const sayHowToResume = (checkpointDir: string) =>
  latestCheckpoint(checkpointDir).pipe(
    Effect.map(checkpointStep),
    Effect.orElseSucceed(() => 0),
    Effect.flatMap((step) => {
      const quote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`)
      const command = `miniseq ${process.argv.slice(2).map(quote).join(" ")}`
      const from =
        step > 0 ? `resumes from the checkpoint of step ${step}` : "starts over (no checkpoint was saved yet)"
      return Console.error(`\nminiseq: interrupted; nothing half-done was saved. The same command ${from}: ${command}`)
    }),
  )

export const trainCommand = Command.make("train", flags, (f) =>
  Effect.gen(function* () {
    const initFrom = Option.getOrUndefined(f.initFrom)
    if (initFrom !== undefined && (Option.isSome(f.config) || f.model !== "tiny"))
      return yield* Effect.fail(
        new BadConfig({
          field: "init-from",
          message: `--init-from ${initFrom} takes the model from its config.json; leave out --model and --config`,
        }),
      )
    // The folder's config now; its weights below, unless the run resumes from a checkpoint.
    const pretrained = initFrom === undefined ? undefined : yield* readPretrainedConfig(initFrom)
    const model = pretrained?.config ?? (yield* loadModel(f.model, f.config))
    const [mlpChunks, lmChunks] = [
      yield* parseChunks("mlp-chunks", f.mlpChunks),
      yield* parseChunks("lm-chunks", f.lmChunks),
    ]
    for (const [flag, v] of [
      ["batch", f.batch],
      ["seq", f.seq],
      ["steps", f.steps],
      ["accumulate", f.accumulate],
    ] as const)
      yield* positive(flag, v)
    if (!(Number.isInteger(f.sample) && f.sample >= 0))
      return yield* Effect.fail(
        new BadConfig({ field: "sample", message: `--sample must be an integer ≥ 0 (0: no sample), got ${f.sample}` }),
      )
    yield* integerAtLeast("warmup", f.warmup, 0, "pass 0 for no warmup")
    yield* integerAtLeast(
      "checkpoint-every",
      f.checkpointEvery,
      1,
      "to save only after the last step, pass a value of at least --steps",
    )
    yield* seedFlag(f.seed)
    yield* checkSizes(
      model,
      f.batch,
      f.seq,
      f.backend === "cpu" || f.backend === "cpu-fast" ? CPU_MAX_ELEMENTS : undefined,
    )
    // Every flag is checked before anything starts (the progress bar, the backend).
    const checkpointGroup = yield* attempt(() => checkCheckpointGroup(f.checkpointGroup, f.mode))
    const group = checkpointGroup === 1 ? {} : { checkpointGroup }
    const autoOffload = f.offload.trim() === "auto"
    const askedOffload = autoOffload ? {} : yield* parseOffload(f.offload)
    // Read before the GPU starts, so that a bad value fails first (MINISEQ_CUDA_RESERVE).
    const reserve = f.backend === "cuda" ? yield* cudaReserve() : undefined
    const memoryLimit = Option.isSome(f.memoryLimit)
      ? yield* parseBytes(f.memoryLimit.value, "memory-limit")
      : undefined
    const hostMemoryLimit = Option.isSome(f.hostMemoryLimit)
      ? yield* parseBytes(f.hostMemoryLimit.value, "host-memory-limit")
      : undefined
    if (!(f.lr > 0))
      return yield* Effect.fail(new BadConfig({ field: "lr", message: `--lr must be positive, got ${f.lr}` }))
    const chosen = yield* chooseTokenizer(f.tokenizer, initFrom)
    const tokenizer = chosen.tokenizer
    const mismatch = checkVocabulary(tokenizer, model.vocab_size)
    if (mismatch !== undefined) return yield* Effect.fail(mismatch)
    const text = yield* Effect.try({
      try: () => loadCorpus(Option.getOrUndefined(f.corpus)),
      catch: (e) => new BadConfig({ field: "corpus", message: String(e instanceof Error ? e.message : e) }),
    })
    const split = trainValSplit(corpusIds(tokenizer, text))
    yield* tokensPerStep(f.accumulate, f.batch, f.seq, split.train.length)
    // Score the final model on held-out text (when the corpus's last 5% holds a sequence).
    const validation =
      split.val.length > f.seq
        ? {
            batches: makeBatches({ tokens: split.val, batch: f.batch, seq: f.seq, seed: heldOutSeed(f.seed) }),
            count: 8,
          }
        : undefined
    const batches = yield* Effect.try({
      try: () => makeBatches({ tokens: split.train, batch: f.batch, seq: f.seq, seed: f.seed }),
      catch: (e) => new BadConfig({ field: "seq", message: String(e instanceof Error ? e.message : e) }),
    })

    const modelName = initFrom ?? (Option.isSome(f.config) ? f.config.value : f.model)
    const corpusPath = Option.getOrElse(f.corpus, () => DEFAULT_CORPUS_PATH)
    const corpus = yield* Effect.try({
      try: () => describeCorpus(corpusPath),
      catch: (e) => new BadConfig({ field: "corpus", message: String(e instanceof Error ? e.message : e) }),
    })
    const checkpointDir = join(f.out, "checkpoints")
    // Before the first step: --out writable, its run files files, dead writers' temporaries gone, and locked.
    yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          checkRunFolder(f.out)
          return lockRunFolder(f.out)
        },
        catch: (e) =>
          e instanceof WriteError || e instanceof BadConfig ? e : new WriteError({ path: f.out, message: String(e) }),
      }),
      (release) => Effect.sync(release),
    )
    // The run's earlier records, up to the checkpoint it resumes from (none for a fresh run).
    const latest = yield* latestCheckpoint(checkpointDir)
    const history = new History(f.out, checkpointStep(latest))
    const initialParameters =
      initFrom !== undefined && latest === undefined ? (yield* loadPretrained(initFrom)).parameters : undefined
    // A resumed run keeps the date it first started.
    const started =
      history.records.length > 0 ? (previousStart(f.out) ?? new Date().toISOString()) : new Date().toISOString()

    // Everything below runs with the chosen backend provided (and given back at the end).
    return yield* Effect.gen(function* () {
      const backend = yield* Backend
      const precision = f.precision
      const available = availableMemory(f.backend, backend, reserve)
      const stepBase = { mode: f.mode, mlpChunks, lmChunks, ...group, precision: precisions[precision] }
      // --offload auto: the least offload whose step fits the device (or --memory-limit) and the host's RAM.
      const limit = memoryLimit ?? (f.backend === "cuda" ? available?.bytes : undefined)
      const offload = !autoOffload
        ? askedOffload
        : limit === undefined
          ? {}
          : ((yield* attempt(() =>
              leastOffloadThatFits(model, f.batch, f.seq, stepBase, limit, hostMemoryLimit ?? freemem(), backend),
            ))?.offload ?? {})
      // What each mode would need for this exact step, from the planner (the executor, counting).
      const plans = yield* attempt(() =>
        Object.fromEntries(
          modes.map((mode) => [mode, planStep(model, f.batch, f.seq, { ...inMode(stepBase, mode), offload }, backend)]),
        ),
      )
      // Refuse, with the planner's advice, a step that cannot fit the machine — before allocating.
      const stepOpts = { mode: f.mode, ...group, accumulation: f.accumulate, precision: precisions[precision], offload }
      yield* refuseWhatCannotFit(plans[f.mode]!, available, model, f.batch, f.seq, stepOpts, backend)
      yield* Console.log(
        `miniseq train: ${modelName}, mode ${f.mode}${checkpointGroup === 1 ? "" : ` (${checkpointGroup} layers per checkpoint region)`}, batch ${f.batch}×${f.seq}${f.accumulate > 1 ? `×${f.accumulate}` : ""}, ${f.steps} steps, tokenizer ${tokenizer.name}, ${backend.name} backend, ${precision}${autoOffload ? `, --offload auto:${describeOffload(offload).slice(",".length) || " none"}` : describeOffload(offload)}`,
      )

      const bar = new SingleBar({
        format: "step {value}/{total} │ loss {loss} │ {tps} tok/s │ peak {peak} │ {eta_formatted} left",
        hideCursor: true,
        noTTYOutput: true,
        notTTYSchedule: 5000,
      })
      bar.start(f.steps, 0, { loss: "-", tps: "-", peak: "-" })
      const onStep = (r: StepRecord) => {
        history.add(r)
        bar.update(r.step, { loss: r.loss.toFixed(4), tps: Math.round(r.tokensPerSecond), peak: formatBytes(r.peak) })
      }
      const options = {
        ...(memoryLimit === undefined ? {} : { memoryLimit }),
        ...(hostMemoryLimit === undefined ? {} : { hostMemoryLimit }),
        ...(validation === undefined ? {} : { validation }),
        model,
        ...(initialParameters === undefined ? {} : { initialParameters }),
        mode: f.mode,
        mlpChunks,
        lmChunks,
        ...group,
        batch: f.batch,
        seq: f.seq,
        steps: f.steps,
        accumulation: f.accumulate,
        lr: f.lr,
        warmup: f.warmup,
        seed: f.seed,
        precision,
        offload,
        checkpointDir,
        checkpointEvery: f.checkpointEvery,
        // What the batches come from: a resume with another corpus or tokenizer is refused.
        data: {
          corpus: Option.isSome(f.corpus) ? f.corpus.value : "shipped",
          sha256: corpus.sha256,
          tokenizer: tokenizer.name,
          ...(chosen.sha256 === undefined ? {} : { tokenizerSha256: chosen.sha256 }),
          ...(initFrom === undefined ? {} : { initFrom }),
        },
      }
      const info: RunInfo = {
        model: modelName,
        backend: backend.name,
        precision,
        mode: f.mode,
        tokenizer: tokenizer.name,
        corpus,
        batch: f.batch,
        seq: f.seq,
        // The record says where the weights came from (data.initFrom), never the weights themselves.
        options: { ...withoutWeights(options), validation: validation?.count ?? 0 },
        plans,
        started,
      }
      // A failed or interrupted run still leaves run.json and the charts for every step so far —
      // unless this invocation ran no step and an earlier record is there (e.g. a resume with
      // mismatched options): that one is kept as it is.
      const onEnd = <A, E>(exit: Exit.Exit<A, E>) =>
        Effect.gen(function* () {
          if (Exit.isSuccess(exit)) return
          const interrupted = Cause.hasInterruptsOnly(exit.cause)
          if (interrupted) yield* Effect.sync(() => bar.stop()).pipe(Effect.andThen(sayHowToResume(checkpointDir)))
          if (history.added === 0 && existsSync(join(f.out, "run.json"))) return
          const error = interrupted ? undefined : Cause.pretty(exit.cause).split("\n")[0]
          const how = `run ${interrupted ? "interrupted" : "failed"} after step ${history.records.at(-1)?.step ?? 0}`
          try {
            writeRunFiles(f.out, info, history, {
              status: interrupted ? "interrupted" : "failed",
              ...(error === undefined ? {} : { error }),
            })
            console.error(`\nminiseq: ${how}; wrote ${join(f.out, "run.json")} (${history.records.length} steps)`)
          } catch (e) {
            console.error(`\nminiseq: ${how}; ${e instanceof Error ? e.message : String(e)}`)
          }
        })
      const result = yield* train(options, batches, onStep).pipe(
        // A steps.jsonl that cannot be appended to stops the run with its WriteError, not a stack.
        Effect.catchDefect((d) => (d instanceof WriteError ? Effect.fail(d) : Effect.die(d))),
        Effect.ensuring(Effect.sync(() => bar.stop())),
        Effect.onExit(onEnd),
      )
      const records = history.records

      if (result.resumedFrom > 0)
        yield* Console.log(
          `resumed from the checkpoint of step ${result.resumedFrom}${result.resumedChecksums === "none" ? " (an older checkpoint without checksums: its shapes, values and run options were checked, not its bytes; the next save has them)" : ""}`,
        )
      if (records.length > 0) {
        const first = records[0]!,
          last = records.at(-1)!
        const tps = records.reduce((s, r) => s + r.tokensPerSecond, 0) / records.length
        yield* Console.log(
          `loss ${first.loss.toFixed(4)} (step ${first.step}) → ${last.loss.toFixed(4)} (step ${last.step}); ${Math.round(tps)} tokens/s on average`,
        )
        if (result.validationLoss !== undefined)
          yield* Console.log(
            `held-out loss (8 batches of the last 5% of the corpus, never trained on): ${result.validationLoss.toFixed(4)}`,
          )
        yield* Console.log(
          `measured peak of this run (${f.mode}): ${formatBytes(Math.max(...records.map((r) => r.peak)))} — the planner said ${formatBytes(plans[f.mode]!.peak)}`,
        )
      }
      yield* Console.log(
        "\npeak memory of one step, by mode (planner): forward + backward by kind, then the AdamW update",
      )
      for (const mode of modes) {
        const p = plans[mode]!
        const k = p.gradientPass.atPeak
        yield* Console.log(
          `  ${mode.padEnd(15)} ${formatBytes(p.gradientPass.peak).padStart(10)}   weights ${formatBytes(k.weights)}, grads ${formatBytes(k.gradients)}, optimizer ${formatBytes(k.optimizer)}, saved ${formatBytes(k.activations)}, temps ${formatBytes(k.temporaries)} │ AdamW ${formatBytes(p.optimizerPass.peak)}`,
        )
      }
      const fb = (m: (typeof modes)[number]) => plans[m]!.gradientPass.peak
      yield* Console.log(
        `  forward + backward: vanilla / mst = ${(fb("vanilla") / fb("mst")).toFixed(2)}×, checkpoint / mst+checkpoint = ${(fb("checkpoint") / fb("mst+checkpoint")).toFixed(2)}×`,
      )

      const outcome = {
        status: "completed" as const,
        resumedFrom: result.resumedFrom,
        ...(result.validationLoss === undefined ? {} : { validationLoss: result.validationLoss }),
      }
      yield* Effect.try({
        try: () => writeRunFiles(f.out, info, history, outcome),
        catch: (e) => (e instanceof WriteError ? e : new WriteError({ path: f.out, message: String(e) })),
      })
      yield* Console.log(
        `\nwrote ${join(f.out, "run.json")} (${records.length} steps), steps.jsonl, loss.svg, memory.svg and checkpoints/ (run the same command again to resume)`,
      )
      if (f.sample > 0) yield* printSample(model, result.parameters, tokenizer, split.val, f.sample, f.out)
    }).pipe(Effect.provide(yield* backendLayer(f.backend)))
  }).pipe(Effect.scoped),
).pipe(
  Command.withDescription(
    "train a Llama-family model with MST (the fast CPU backend by default; --backend cpu, webgpu or cuda)",
  ),
)

/** Training options as run.json records them: without `initialParameters` (a model's weights, gigabytes as JSON). */
function withoutWeights<O extends { readonly initialParameters?: unknown }>(options: O): Omit<O, "initialParameters"> {
  const { initialParameters: _, ...rest } = options
  return rest
}
