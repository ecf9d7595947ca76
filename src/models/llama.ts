/**
 * A Llama-family decoder as a pure graph: token embedding, N × (RMSNorm → GQA attention with
 * RoPE → residual, RMSNorm → SwiGLU MLP → residual), final RMSNorm, LM head + cross-entropy.
 * Parameters carry their Hugging Face names, so checkpoints load into `transformers` as is.
 *
 * The training mode decides which regions wrap which blocks:
 *   vanilla          nothing: every intermediate the backward needs is saved
 *   checkpoint       each decoder layer is a checkpoint: only layer inputs are saved
 *   mst              the MLP (with its norm) and the LM head + loss run as chunked(M) regions
 *   mst+checkpoint   both, nested: chunked MLP inside checkpointed layers
 */
import { numel } from "../core/backend.js"
import { BadConfig, ShapeError } from "../core/errors.js"
import type { DType } from "../core/dtype.js"
import { input, type Tensor } from "../core/graph.js"
import * as o from "../core/ops.js"
import { attention } from "../core/routines/attention.js"
import {
  fusedRmsNorm,
  fusedRope,
  linear,
  rmsNorm as plainRmsNorm,
  rope as plainRope,
  swiglu,
} from "../core/routines/basic.js"
import { sumCrossEntropy } from "../core/routines/cross-entropy.js"
import { checkpoint, chunked } from "../core/regions.js"
import { headDim, type LlamaConfig } from "./config.js"

/** How a training step lays out memory: nothing wrapped, layers recomputed, MLP and LM head chunked (MST), or both. */
export const modes = ["vanilla", "checkpoint", "mst", "mst+checkpoint"] as const
/** One of `modes`. */
export type Mode = (typeof modes)[number]

/** How `llamaLoss` builds the graph: the mode, M for the MLP and the LM head, dtype and the fused routines to use. */
export interface ModelOptions {
  readonly mode: Mode
  /** Mini-sequences for the MLP and for the LM head; "auto" applies `autoChunks`. */
  readonly mlpChunks?: number | "auto"
  readonly lmChunks?: number | "auto"
  /** Keys per block of the attention's online softmax. */
  readonly attentionBlock?: number
  readonly dtype?: DType
  /**
   * The routines the backend runs as fused kernels (its `routines`' names). RMSNorm ("rmsNorm"),
   * SwiGLU's product ("siluMul") and RoPE ("rope") become routines only where they are fused;
   * elsewhere their plain ops keep less alive for backward.
   */
  readonly fused?: readonly string[]
  /** Planning only: allow S beyond max_position_embeddings (as with RoPE scaling). */
  readonly allowBeyondMaxPosition?: boolean
}

/**
 * The shortest piece worth making: max(32, d/2) tokens. A piece's matmuls are [P × d]·[d × N];
 * much shorter than d, they stream the whole weight (and, in backward, its fp32 gradient
 * accumulator) for little work, and cost more time than they save memory.
 */
export const minPiece = (c: LlamaConfig): number => Math.max(32, Math.floor(c.hidden_size / 2))

/**
 * The automatic M: split until a piece's intermediate is no wider than the hidden state it
 * came from — M = ⌈I/d⌉ for the MLP (S×I → S×d) and M = ⌈V/d⌉ for the LM head (S×V → S×d) —
 * but never into pieces shorter than `minPiece`. For Llama3-8B that is M = 4 and M = 32 from
 * S = 64k on (fewer, longer pieces below).
 */
export function autoChunks(c: LlamaConfig, S: number): { mlp: number; lm: number } {
  const most = Math.max(1, Math.ceil(S / minPiece(c)))
  return {
    mlp: Math.max(1, Math.min(most, Math.ceil(c.intermediate_size / c.hidden_size))),
    lm: Math.max(1, Math.min(most, Math.ceil(c.vocab_size / c.hidden_size))),
  }
}

/** Every parameter's Hugging Face name and shape (weights are [out, in] as in nn.Linear). */
export function parameterShapes(c: LlamaConfig): Record<string, number[]> {
  const d = c.hidden_size,
    hd = headDim(c)
  const shapes: Record<string, number[]> = { "model.embed_tokens.weight": [c.vocab_size, d] }
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}`
    shapes[`${p}.input_layernorm.weight`] = [d]
    shapes[`${p}.self_attn.q_proj.weight`] = [c.num_attention_heads * hd, d]
    shapes[`${p}.self_attn.k_proj.weight`] = [c.num_key_value_heads * hd, d]
    shapes[`${p}.self_attn.v_proj.weight`] = [c.num_key_value_heads * hd, d]
    shapes[`${p}.self_attn.o_proj.weight`] = [d, c.num_attention_heads * hd]
    shapes[`${p}.post_attention_layernorm.weight`] = [d]
    shapes[`${p}.mlp.gate_proj.weight`] = [c.intermediate_size, d]
    shapes[`${p}.mlp.up_proj.weight`] = [c.intermediate_size, d]
    shapes[`${p}.mlp.down_proj.weight`] = [d, c.intermediate_size]
  }
  shapes["model.norm.weight"] = [d]
  if (!c.tie_word_embeddings) shapes["lm_head.weight"] = [c.vocab_size, d]
  return shapes
}

/** The model's number of parameters. */
export const parameterCount = (c: LlamaConfig): number =>
  Object.values(parameterShapes(c)).reduce((n, s) => n + numel(s), 0)

/** Symbolic parameters, one input per HF name. */
export function parameterInputs(c: LlamaConfig, dtype: DType = "float32"): Record<string, Tensor> {
  return Object.fromEntries(
    Object.entries(parameterShapes(c)).map(([name, shape]) => [name, input(name, shape, dtype)]),
  )
}

/** [B, S, H·hd] → [B, H, S, hd] */
const splitHeads = (x: Tensor, heads: number, hd: number): Tensor => {
  const [B, S] = x.shape as [number, number]
  return o.permute(o.reshape(x, [B, S, heads, hd]), [0, 2, 1, 3])
}
/** [B, H, S, hd] → [B, S, H·hd] */
const mergeHeads = (x: Tensor): Tensor => {
  const [B, H, S, hd] = x.shape as [number, number, number, number]
  return o.reshape(o.permute(x, [0, 2, 1, 3]), [B, S, H * hd])
}

/** The graph of a Llama's training loss, with its inputs (parameters by Hugging Face name, tokens, targets, count). */
export interface LlamaGraph {
  readonly params: Record<string, Tensor>
  /** [B, S] int32 inputs; targets are already shifted (−100 = ignore). */
  readonly tokens: Tensor
  readonly targets: Tensor
  /** The global number of non-ignored targets, an fp32 scalar input (exact across micro-batches). */
  readonly count: Tensor
  readonly loss: Tensor
  readonly chunks: { readonly mlp: number; readonly lm: number }
}

/** The training loss of a Llama for a [B, S] batch, in the given mode. */
export function llamaLoss(c: LlamaConfig, B: number, S: number, opts: ModelOptions): LlamaGraph {
  if (S > c.max_position_embeddings && !opts.allowBeyondMaxPosition) {
    throw new ShapeError({
      op: "llama",
      shapes: [[B, S]],
      message: `sequence length ${S} exceeds the model's max_position_embeddings (${c.max_position_embeddings}); shorten --seq or raise max_position_embeddings in the config`,
    })
  }
  if (!modes.includes(opts.mode))
    throw new BadConfig({ field: "mode", message: `unknown mode "${opts.mode}"; choose one of: ${modes.join(", ")}` })
  const dtype = opts.dtype ?? "float32"
  const auto = autoChunks(c, S)
  const chunks = {
    mlp: opts.mlpChunks === undefined || opts.mlpChunks === "auto" ? auto.mlp : opts.mlpChunks,
    lm: opts.lmChunks === undefined || opts.lmChunks === "auto" ? auto.lm : opts.lmChunks,
  }
  const mst = opts.mode === "mst" || opts.mode === "mst+checkpoint"
  const perLayerCheckpoint = opts.mode === "checkpoint" || opts.mode === "mst+checkpoint"
  const fused = new Set(opts.fused)
  const rmsNorm = fused.has("rmsNorm") ? fusedRmsNorm : plainRmsNorm
  const rope = fused.has("rope") ? fusedRope : plainRope
  const params = parameterInputs(c, dtype)
  const p = (name: string): Tensor => params[name]!
  const hd = headDim(c)
  const tokens = input("tokens", [B, S], "int32")
  const targets = input("targets", [B, S], "int32")
  const count = input("count", [], "float32")

  function layer(i: number, x: Tensor): Tensor {
    const w = (n: string) => p(`model.layers.${i}.${n}`)
    const h = rmsNorm(x, w("input_layernorm.weight"), c.rms_norm_eps)
    const q = rope(splitHeads(linear(h, w("self_attn.q_proj.weight")), c.num_attention_heads, hd), c.rope_theta)
    const k = rope(splitHeads(linear(h, w("self_attn.k_proj.weight")), c.num_key_value_heads, hd), c.rope_theta)
    const v = splitHeads(linear(h, w("self_attn.v_proj.weight")), c.num_key_value_heads, hd)
    const a = attention(q, k, v, { blockSize: opts.attentionBlock ?? 64 })
    const x1 = o.add(x, linear(mergeHeads(a), w("self_attn.o_proj.weight")))
    const mlp = (t: Tensor) =>
      swiglu(
        rmsNorm(t, w("post_attention_layernorm.weight"), c.rms_norm_eps),
        w("mlp.gate_proj.weight"),
        w("mlp.up_proj.weight"),
        w("mlp.down_proj.weight"),
        fused.has("siluMul"),
      )
    return o.add(x1, mst ? chunked(chunks.mlp, { axis: 1 })(mlp)(x1) : mlp(x1))
  }

  let x = o.gather(p("model.embed_tokens.weight"), tokens)
  for (let i = 0; i < c.num_hidden_layers; i++) {
    x = perLayerCheckpoint ? checkpoint((t: Tensor) => layer(i, t))(x) : layer(i, x)
  }
  const head = p(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight")
  // Σ of token losses (per piece in MST) over one global target count, never a mean of means.
  // In MST each piece takes its gradients in the forward pass, while its logits are alive; the
  // loss is the result itself, so its cotangent is exactly 1 and scaling by it rounds nothing.
  const perToken = o.div(1, count)
  const lmLoss = (h: Tensor, t: Tensor) =>
    o.mul(sumCrossEntropy(linear(rmsNorm(h, p("model.norm.weight"), c.rms_norm_eps), head), t), perToken)
  const loss = mst
    ? chunked(chunks.lm, { axis: 1, combine: "sum", gradientsInForward: true })(lmLoss)(x, targets)
    : lmLoss(x, targets)
  return { params, tokens, targets, count, loss: o.cast(loss, "float32"), chunks } // the loss is fp32 whatever the weights
}
