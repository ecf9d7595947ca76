/** `miniseq plan`: the memory of one training step in each mode, and the longest sequence that fits. */
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { makeCpuBackend } from "../backends/cpu/index.js"
import { cudaHeldBytes } from "../backends/cuda/allocator.js"
import { cudaKernelScratch } from "../backends/cuda/attention-scratch.js"
import { attempt } from "../core/executor.js"
import { type RoutineName, sameKernel } from "../core/routines/registry.js"
import type { LlamaConfig } from "../models/config.js"
import { type Mode, modes } from "../models/llama.js"
import { type Precision, precisions } from "../models/optimizer.js"
import { largestFitting, planStep, type StepPlan } from "../models/planner.js"
import { chunksFlag, configFlag, loadModel, modelFlag, parseBytes, parseChunks, positive } from "./options.js"
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
}

export const planAt = (a: PlanArgs, mode: Mode, S: number): StepPlan =>
  planStep(
    a.model,
    a.batch,
    S,
    { mode, mlpChunks: a.mlpChunks, lmChunks: a.lmChunks, precision: a.precision, allowBeyondMaxPosition: true },
    targetFor(a.target),
  )

/**
 * The largest S (a multiple of `step`) whose step fits in `memory`: doubling, then bisection
 * over plans. The only bound is where a plan's byte counts stop being exact (one batch of logits
 * past 2^53 bytes): an S that still fits there is reported as "≥ S" (`capped`).
 */
export function maxSeq(
  a: PlanArgs,
  mode: Mode,
  memory: number,
  step: number,
): { seq: number; capped: boolean; plan?: StepPlan } {
  const plans = new Map<number, StepPlan>()
  const fits = (S: number) => {
    const p = planAt(a, mode, S)
    plans.set(S, p)
    return p.held <= memory
  }
  const { n, capped } = largestFitting(fits, step, exactSeqCap(a, step))
  const plan = n > 0 ? (plans.get(n) ?? planAt(a, mode, n)) : undefined
  return { seq: n, capped, ...(plan ? { plan } : {}) }
}

/** The largest multiple of `step` whose batch of logits (B·S·V fp32) stays below 2^53 bytes. */
export const exactSeqCap = (a: Pick<PlanArgs, "batch" | "model">, step: number): number =>
  Math.max(step, step * Math.floor(2 ** 53 / (4 * a.batch * a.model.vocab_size * step)))

const row = (mode: string, S: string, p: StepPlan) => {
  const k = p.gradientPass.atPeak
  return `${mode.padEnd(15)} ${S.padStart(8)} ${formatBytes(p.peak).padStart(10)} ${formatBytes(p.held).padStart(10)} │ ${formatBytes(p.gradientPass.peak).padStart(10)}: ${[k.weights, k.gradients, k.optimizer, k.activations, k.temporaries].map((b) => formatBytes(b).padStart(10)).join(" ")} │ ${formatBytes(p.optimizerPass.peak).padStart(10)} │ M ${p.chunks.mlp}/${p.chunks.lm}`
}
const header = `${"mode".padEnd(15)} ${"S".padStart(8)} ${"step peak".padStart(10)} ${"held".padStart(10)} │ ${"fwd+bwd".padStart(10)}: ${["weights", "grads", "optimizer", "saved", "temps"].map((h) => h.padStart(10)).join(" ")} │ ${"AdamW".padStart(10)} │ M mlp/lm`

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
    granularity: Flag.Int("granularity").pipe(
      Flag.withDefault(1024),
      Flag.withDescription("--max-seq searches multiples of this (default: 1024)"),
    ),
  },
  (f) =>
    Effect.gen(function* () {
      const model = yield* loadModel(f.model, f.config)
      yield* positive("seq", f.seq)
      yield* positive("batch", f.batch)
      yield* positive("granularity", f.granularity)
      // Read with --max-seq only, but checked always: a bad value is never silently ignored.
      const memory = yield* parseBytes(f.memory)
      yield* checkSizes(model, f.batch, f.maxSeq ? f.granularity : f.seq)
      const args: PlanArgs = {
        model,
        batch: f.batch,
        mlpChunks: yield* parseChunks("mlp-chunks", f.mlpChunks),
        lmChunks: yield* parseChunks("lm-chunks", f.lmChunks),
        target: f.target,
        precision: precisions[f.precision],
      }
      const what = `${Option.isSome(f.config) ? f.config.value : f.model}, batch ${f.batch}, ${describePrecision[f.precision]}, plan for ${f.target === "gpu" ? "a GPU backend (fused attention + cross-entropy)" : "the CPU backend"}`
      if (!f.maxSeq) {
        yield* Console.log(`one training step, ${what}, S = ${f.seq}:\n${header}`)
        for (const mode of modes)
          yield* Console.log(row(mode, String(f.seq), yield* attempt(() => planAt(args, mode, f.seq))))
        if (f.seq > model.max_position_embeddings)
          yield* Console.log(`note: S exceeds max_position_embeddings (${model.max_position_embeddings})`)
        return
      }
      yield* Console.log(
        `largest S that fits ${formatBytes(memory)}, ${what} (S in multiples of ${f.granularity}):\n${header}`,
      )
      const found: Partial<Record<Mode, number>> = {}
      for (const mode of modes) {
        const r = yield* attempt(() => maxSeq(args, mode, memory, f.granularity))
        found[mode] = r.seq
        yield* Console.log(
          r.plan
            ? row(mode, r.capped ? `≥${r.seq}` : String(r.seq), r.plan)
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
