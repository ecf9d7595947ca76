/** `miniseq plan`: the memory of one training step in each mode, and the longest sequence that fits. */
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { makeCpuBackend } from "../backends/cpu/index.js"
import { cudaHeldBytes, cudaHostOptimizer } from "../backends/cuda/allocator.js"
import { cudaKernelScratch } from "../backends/cuda/attention-scratch.js"
import { BadConfig } from "../core/errors.js"
import { attempt } from "../core/executor.js"
import { type RoutineName, sameKernel } from "../core/routines/registry.js"
import type { LlamaConfig } from "../models/config.js"
import { checkCheckpointGroup, checkpoints, type Mode, modes } from "../models/llama.js"
import { type Precision, precisions } from "../models/optimizer.js"
import { fitHost, largestFitting, offloadChoices, planStep, type StepPlan } from "../models/planner.js"
import type { Offload } from "../models/step.js"
import {
  checkpointGroupFlag,
  chunksFlag,
  configFlag,
  describeOffload,
  loadModel,
  modelFlag,
  parseBytes,
  parseChunks,
  parseOffload,
  positive,
} from "./options.js"
import { checkSizes } from "./limits.js"
import { formatBytes } from "./svg.js"

const describePrecision = {
  bf16: "bf16 weights, activations and AdamW moments",
  "bf16-mixed": "bf16 weights and activations, fp32 master weights and AdamW moments",
  fp32: "fp32 weights, activations and AdamW moments",
} as const

/** The routines a GPU backend runs fused (flash attention, cross-entropy, …): plans for GPUs assume them. */
export const gpuFusedRoutines: readonly RoutineName[] = [
  "attention",
  "attention.vjp",
  "crossEntropy",
  "crossEntropy.vjp",
  "logsumexp",
  "logsumexp.vjp",
  "silu",
  "silu.vjp",
  "adamw",
  "sumOfSquares",
  "rmsNorm",
  "rmsNorm.vjp",
  "siluMul",
  "siluMul.vjp",
  "rope",
  "rope.vjp",
]

// A GPU plan counts each buffer as the CUDA allocator holds it (its size class, ≤ 2 MiB over),
// and the kernel scratch the CUDA backend would count under this process's switches.
const targetFor = (target: "cpu" | "gpu") => {
  if (target === "cpu") return makeCpuBackend()
  const kernelScratchBytes = cudaKernelScratch(process.env.MINISEQ_ATTN_WGMMA_BWD)
  return {
    routines: sameKernel(gpuFusedRoutines, () => {}),
    heldBytes: cudaHeldBytes,
    hostOptimizer: cudaHostOptimizer(),
    ...(kernelScratchBytes && { kernelScratchBytes }),
  }
}

export interface PlanArgs {
  model: LlamaConfig
  batch: number
  mlpChunks: number | "auto"
  lmChunks: number | "auto"
  target: "cpu" | "gpu"
  precision: Precision
  offload?: Offload
  /** --max-seq: the host memory offloaded bytes may take (default: no bound). */
  hostMemory?: number
  /** --ranks: plan one rank of N sharing the sequence (Ulysses); absent, one device. */
  ranks?: number
  /** --checkpoint-group: layers per checkpoint region in the checkpoint modes (default 1). */
  checkpointGroup?: number
}

export const planAt = (a: PlanArgs, mode: Mode, S: number): StepPlan =>
  planStep(
    a.model,
    a.batch,
    S,
    {
      mode,
      mlpChunks: a.mlpChunks,
      lmChunks: a.lmChunks,
      precision: a.precision,
      allowBeyondMaxPosition: true,
      ...(a.offload ? { offload: a.offload } : {}),
      ...(a.ranks === undefined ? {} : { ranks: a.ranks }),
      ...(a.checkpointGroup === undefined || !checkpoints(mode) ? {} : { checkpointGroup: a.checkpointGroup }),
    },
    targetFor(a.target),
  )

/** For --offload auto: the choice of `offloadChoices` with the longest S that fits (and its plan). */
export function maxSeqChoosingOffload(a: PlanArgs, mode: Mode, memory: number, step: number): MaxSeq {
  let best: MaxSeq | undefined
  for (const offload of offloadChoices) {
    const r = maxSeq({ ...a, offload }, mode, memory, step)
    if (best === undefined || r.seq > best.seq) best = r
  }
  return best!
}

/** The plan at S, with as many checkpoints offloaded as `hostMemory` holds (`fitHost` of the planner). */
export function planWithinHost(a: PlanArgs, mode: Mode, S: number): { plan: StepPlan; offload: Offload } {
  const { offload = {}, hostMemory = Infinity } = a
  return fitHost((o) => planAt({ ...a, offload: o }, mode, S), offload, hostMemory)
}

export interface MaxSeq {
  readonly seq: number
  readonly capped: boolean
  readonly plan?: StepPlan
  /** What the plan offloads (a checkpoint budget chosen to fit `hostMemory`, if any). */
  readonly offload: Offload
}

/**
 * The largest S (a multiple of `step`) whose step fits in `memory` (and its offloaded bytes in
 * `hostMemory`): doubling, then bisection over plans. The only bound is where a plan's byte
 * counts stop being exact (one batch of logits past 2^53 bytes): an S that still fits there is
 * reported as "≥ S" (`capped`).
 */
export function maxSeq(a: PlanArgs, mode: Mode, memory: number, step: number): MaxSeq {
  const plans = new Map<number, { plan: StepPlan; offload: Offload }>()
  const fits = (S: number) => {
    const p = planWithinHost(a, mode, S)
    plans.set(S, p)
    return p.plan.held <= memory && p.plan.host <= (a.hostMemory ?? Infinity)
  }
  const { n, capped } = largestFitting(fits, step, exactSeqCap(a, step))
  const found = n > 0 ? (plans.get(n) ?? planWithinHost(a, mode, n)) : undefined
  return { seq: n, capped, offload: found?.offload ?? a.offload ?? {}, ...(found ? { plan: found.plan } : {}) }
}

/** The largest multiple of `step` whose batch of logits (B·S·V fp32) stays below 2^53 bytes. */
export const exactSeqCap = (a: Pick<PlanArgs, "batch" | "model">, step: number): number =>
  Math.max(step, step * Math.floor(2 ** 53 / (4 * a.batch * a.model.vocab_size * step)))

const row = (mode: string, S: string, p: StepPlan, offload?: Offload) => {
  const k = p.gradientPass.atPeak
  const off = offload === undefined ? "" : ` │ ${describeOffload(offload).slice(", offload ".length) || "none"}`
  return `${mode.padEnd(15)} ${S.padStart(8)} ${formatBytes(p.peak).padStart(10)} ${formatBytes(p.held).padStart(10)} ${formatBytes(p.host).padStart(10)} ${formatBytes(p.bus).padStart(10)} │ ${formatBytes(p.gradientPass.peak).padStart(10)}: ${[k.weights, k.gradients, k.optimizer, k.activations, k.temporaries].map((b) => formatBytes(b).padStart(10)).join(" ")} │ ${formatBytes(p.optimizerPass.peak).padStart(10)} │ M ${p.chunks.mlp}/${p.chunks.lm}${off}`
}
const header = `${"mode".padEnd(15)} ${"S".padStart(8)} ${"step peak".padStart(10)} ${"held".padStart(10)} ${"host".padStart(10)} ${"bus/step".padStart(10)} │ ${"fwd+bwd".padStart(10)}: ${["weights", "grads", "optimizer", "saved", "temps"].map((h) => h.padStart(10)).join(" ")} │ ${"AdamW".padStart(10)} │ M mlp/lm`
const autoHeader = `${header} │ offload`

export const planCommand = Command.make(
  "plan",
  {
    model: modelFlag,
    config: configFlag,
    seq: Flag.Int("seq").pipe(Flag.withDefault(4096), Flag.withDescription("sequence length to plan (default: 4096)")),
    batch: Flag.Int("batch").pipe(Flag.withDefault(1), Flag.withDescription("sequences per batch (default: 1)")),
    mlpChunks: chunksFlag("mlp-chunks", "MLP"),
    lmChunks: chunksFlag("lm-chunks", "LM head + loss"),
    precision: Flag.Literals("precision", ["bf16", "bf16-mixed", "fp32"] as const).pipe(
      Flag.withDefault("bf16" as const),
      Flag.withDescription(
        "bf16: bf16 weights and AdamW moments; bf16-mixed: bf16 weights with fp32 master weights and moments; fp32: everything fp32 (default: bf16)",
      ),
    ),
    target: Flag.Literals("target", ["gpu", "cpu"] as const).pipe(
      Flag.withDefault("gpu" as const),
      Flag.withDescription("gpu: fused attention and cross-entropy; cpu: the CPU backend's kernels (default: gpu)"),
    ),
    maxSeq: Flag.Boolean("max-seq").pipe(
      Flag.withDefault(false),
      Flag.withDescription("find the largest S that fits --memory in each mode (default: false)"),
    ),
    memory: Flag.String("memory").pipe(
      Flag.withDefault("80GB"),
      Flag.withDescription("device memory for --max-seq (default: 80GB)"),
    ),
    offload: Flag.String("offload").pipe(
      Flag.withDefault("none"),
      Flag.withDescription(
        'what waits in host memory: "checkpoints" (or "checkpoints:SIZE", at most that much), "optimizer", both comma-separated, "none", or (with --max-seq) "auto": in each mode the choice with the longest S (default: none)',
      ),
    ),
    hostMemory: Flag.String("host-memory").pipe(
      Flag.optional,
      Flag.withDescription("with --max-seq: the host memory offloaded bytes may take, e.g. 120GB (default: no bound)"),
    ),
    granularity: Flag.Int("granularity").pipe(
      Flag.withDefault(1024),
      Flag.withDescription("--max-seq searches multiples of this (default: 1024)"),
    ),
    checkpointGroup: checkpointGroupFlag("K > 1 plans those modes only"),
    ranks: Flag.Int("ranks").pipe(
      Flag.optional,
      Flag.withDescription(
        "plan one of N devices sharing the sequence (Ulysses): S/N tokens each, weights and AdamW state on every one (default: one device)",
      ),
    ),
  },
  (f) =>
    Effect.gen(function* () {
      const model = yield* loadModel(f.model, f.config)
      yield* positive("seq", f.seq)
      yield* positive("batch", f.batch)
      yield* positive("granularity", f.granularity)
      const group = yield* attempt(() => checkCheckpointGroup(f.checkpointGroup))
      // K changes only the modes that checkpoint: the others' rows would repeat K = 1's.
      const planned = group === 1 ? modes : modes.filter(checkpoints)
      const ranks = Option.isSome(f.ranks) ? yield* positive("ranks", f.ranks.value) : undefined
      if (ranks !== undefined && (f.maxSeq ? f.granularity : f.seq) % ranks !== 0)
        return yield* Effect.fail(
          new BadConfig({
            field: "ranks",
            message: f.maxSeq
              ? `--granularity ${f.granularity} is not a multiple of --ranks ${ranks}: every S searched must split into ${ranks} equal shares; pass a --granularity that ${ranks} divides`
              : `--seq ${f.seq} is not a multiple of --ranks ${ranks}: each rank holds S/N tokens; pass a --seq that ${ranks} divides`,
          }),
        )
      // Read with --max-seq only, but checked always: a bad value is never silently ignored.
      const memory = yield* parseBytes(f.memory)
      const auto = f.offload.trim() === "auto"
      if (auto && !f.maxSeq)
        return yield* Effect.fail(
          new BadConfig({
            field: "offload",
            message: `--offload auto chooses per mode for the longest S: use it with --max-seq, or name what to offload`,
          }),
        )
      const offload = auto ? undefined : yield* parseOffload(f.offload)
      const hostMemory = Option.isSome(f.hostMemory) ? yield* parseBytes(f.hostMemory.value, "host-memory") : undefined
      yield* checkSizes(model, f.batch, f.maxSeq ? f.granularity : f.seq)
      const args: PlanArgs = {
        model,
        batch: f.batch,
        mlpChunks: yield* parseChunks("mlp-chunks", f.mlpChunks),
        lmChunks: yield* parseChunks("lm-chunks", f.lmChunks),
        target: f.target,
        precision: precisions[f.precision],
        ...(offload ? { offload } : {}),
        ...(hostMemory === undefined ? {} : { hostMemory }),
        ...(ranks === undefined ? {} : { ranks }),
        ...(group === 1 ? {} : { checkpointGroup: group }),
      }
      const offloaded = auto ? ", offload chosen per mode" : describeOffload(offload ?? {})
      const hostBound = hostMemory === undefined ? "" : ` and ${formatBytes(hostMemory)} of host memory`
      const onRanks = ranks === undefined ? "" : `, one rank of ${ranks} sharing the sequence`
      const grouped = group === 1 ? "" : `, ${group} layers per checkpoint region`
      const what = `${Option.isSome(f.config) ? f.config.value : f.model}, batch ${f.batch}, ${describePrecision[f.precision]}${offloaded}${grouped}, plan for ${f.target === "gpu" ? "a GPU backend (fused attention + cross-entropy)" : "the CPU backend"}${onRanks}`
      if (!f.maxSeq) {
        yield* Console.log(`one training step, ${what}, S = ${f.seq}:\n${header}`)
        for (const mode of planned)
          yield* Console.log(row(mode, String(f.seq), yield* attempt(() => planAt(args, mode, f.seq))))
        if (f.seq > model.max_position_embeddings)
          yield* Console.log(`note: S exceeds max_position_embeddings (${model.max_position_embeddings})`)
        return
      }
      yield* Console.log(
        `largest S that fits ${formatBytes(memory)}${hostBound}, ${what} (S in multiples of ${f.granularity}):\n${auto || hostMemory !== undefined ? autoHeader : header}`,
      )
      const found: Partial<Record<Mode, number>> = {}
      for (const mode of planned) {
        const r = yield* attempt(() =>
          auto ? maxSeqChoosingOffload(args, mode, memory, f.granularity) : maxSeq(args, mode, memory, f.granularity),
        )
        found[mode] = r.seq
        yield* Console.log(
          r.plan
            ? row(
                mode,
                r.capped ? `≥${r.seq}` : String(r.seq),
                r.plan,
                auto || hostMemory !== undefined ? r.offload : undefined,
              )
            : `${mode.padEnd(15)} nothing fits: even S = ${f.granularity} needs more than ${formatBytes(memory)}`,
        )
      }
      if (found.vanilla && found["mst+checkpoint"]) {
        yield* Console.log(
          `mst+checkpoint / vanilla = ${(found["mst+checkpoint"] / found.vanilla).toFixed(1)}×; mst+checkpoint / checkpoint = ${(found["mst+checkpoint"] / (found.checkpoint ?? 1)).toFixed(1)}×`,
        )
      }
    }),
).pipe(Command.withDescription("plan the memory of a training step (the executor in counting mode)"))
