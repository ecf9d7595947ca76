/**
 * A Llama-family decoder as a pure graph: token embedding, N × (RMSNorm → GQA attention with
 * RoPE → residual, RMSNorm → SwiGLU MLP → residual), final RMSNorm, LM head + cross-entropy.
 * Parameters carry their Hugging Face names, so checkpoints load into `transformers` as is.
 * The same layer computes Mistral (sliding window), Qwen2 (q/k/v biases) and Gemma-2 (GeGLU,
 * four (1 + w) norms per layer, √d embedding scale, soft-capped attention and logits, windows
 * on alternate layers): `architecture` in ./config.ts resolves what a config asks for.
 *
 * The training mode decides which regions wrap which blocks:
 *   vanilla          nothing: every intermediate the backward needs is saved
 *   checkpoint       each decoder layer is a checkpoint: only layer inputs are saved
 *                    (with checkpointGroup K, only every K-th layer's input: see `decoderLayers`)
 *   mst              the MLP (with its norm) and the LM head + loss run as chunked(M) regions
 *   mst+checkpoint   both, nested: chunked MLP inside checkpointed layers
 */
import { numel } from "../core/backend.js"
import { accumulatorDType, type DType } from "../core/dtype.js"
import { BadConfig, ShapeError } from "../core/errors.js"
import { input, type Tensor } from "../core/graph.js"
import * as o from "../core/ops.js"
import { attention } from "../core/routines/attention.js"
import {
  fusedRmsNorm,
  fusedRope,
  geluTanh,
  linear,
  rmsNorm as plainRmsNorm,
  rmsNormPlusOne,
  rope as plainRope,
  silu,
  softcap,
  swiglu,
} from "../core/routines/basic.js"
import { sumCrossEntropy } from "../core/routines/cross-entropy.js"
import { paddedEmbedding } from "../core/routines/embedding.js"
import { checkpoint, chunked } from "../core/regions.js"
import { type Architecture, architecture, headDim, type LlamaConfig, ropeInvFreq } from "./config.js"

/** How a training step lays out memory: nothing wrapped, layers recomputed, MLP and LM head chunked (MST), or both. */
export const modes = ["vanilla", "checkpoint", "mst", "mst+checkpoint"] as const
/** One of `modes`. */
export type Mode = (typeof modes)[number]

/** Whether a mode wraps its decoder layers in checkpoint regions (and so takes `checkpointGroup`). */
export const checkpoints = (mode: Mode): boolean => mode === "checkpoint" || mode === "mst+checkpoint"

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
  /**
   * Shard the sequence over this many ranks (DeepSpeed-Ulysses, see ./ulysses.ts): the graph is
   * one rank's, holding S/N tokens; absent, the single-rank graph.
   */
  readonly ranks?: number
  /**
   * Checkpoint modes: wrap K consecutive layers in one checkpoint region, so that only every
   * K-th layer's input is saved (default 1: one region per layer). Each layer inside stays a
   * checkpoint of its own, so the group's recompute in the backward holds K layer inputs, not
   * K layers' activations.
   */
  readonly checkpointGroup?: number
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
  const arch = architecture(c)
  const d = c.hidden_size,
    hd = headDim(c)
  const [qOut, kvOut] = [c.num_attention_heads * hd, c.num_key_value_heads * hd]
  const shapes: Record<string, number[]> = { "model.embed_tokens.weight": [c.vocab_size, d] }
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}`
    shapes[`${p}.input_layernorm.weight`] = [d]
    shapes[`${p}.self_attn.q_proj.weight`] = [qOut, d]
    if (arch.qkvBias) shapes[`${p}.self_attn.q_proj.bias`] = [qOut]
    shapes[`${p}.self_attn.k_proj.weight`] = [kvOut, d]
    if (arch.qkvBias) shapes[`${p}.self_attn.k_proj.bias`] = [kvOut]
    shapes[`${p}.self_attn.v_proj.weight`] = [kvOut, d]
    if (arch.qkvBias) shapes[`${p}.self_attn.v_proj.bias`] = [kvOut]
    shapes[`${p}.self_attn.o_proj.weight`] = [d, qOut]
    if (arch.oBias) shapes[`${p}.self_attn.o_proj.bias`] = [d]
    shapes[`${p}.post_attention_layernorm.weight`] = [d]
    if (arch.gemmaNorms) {
      shapes[`${p}.pre_feedforward_layernorm.weight`] = [d]
      shapes[`${p}.post_feedforward_layernorm.weight`] = [d]
    }
    shapes[`${p}.mlp.gate_proj.weight`] = [c.intermediate_size, d]
    if (arch.mlpBias) shapes[`${p}.mlp.gate_proj.bias`] = [c.intermediate_size]
    shapes[`${p}.mlp.up_proj.weight`] = [c.intermediate_size, d]
    if (arch.mlpBias) shapes[`${p}.mlp.up_proj.bias`] = [c.intermediate_size]
    shapes[`${p}.mlp.down_proj.weight`] = [d, c.intermediate_size]
    if (arch.mlpBias) shapes[`${p}.mlp.down_proj.bias`] = [d]
  }
  shapes["model.norm.weight"] = [d]
  if (!c.tie_word_embeddings) shapes["lm_head.weight"] = [c.vocab_size, d]
  return shapes
}

/**
 * The value HF initialises a 1-D parameter to: RMSNorm weights 1, Gemma's (1 + w) norm weights
 * 0 (the identity either way), biases 0.
 */
export const vectorInit = (c: LlamaConfig, name: string): number =>
  name.endsWith(".bias") || architecture(c).gemmaNorms ? 0 : 1

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

/** What every layer of one graph shares: the config resolved, the weights, the ops chosen for the backend. */
interface Model {
  readonly c: LlamaConfig
  readonly arch: Architecture
  readonly p: (name: string) => Tensor
  readonly has: (name: string) => boolean
  readonly norm: (x: Tensor, w: Tensor) => Tensor
  /** RoPE for positions offset, offset + 1, … */
  readonly rope: (x: Tensor, offset: number) => Tensor
  readonly fusedSiluMul: boolean
  readonly attentionBlock: number
  /** The MLP (with its norms) as a chunked(M) region, or undefined to run it whole. */
  readonly mlpChunks?: number
  /** Sequence-sharded over `n` ranks: this rank's first global position, a bound scalar. */
  readonly ranks?: { readonly n: number; readonly offset: Tensor }
}

function model(c: LlamaConfig, params: Record<string, Tensor>, opts: ModelOptions | ForwardOptions): Model {
  const arch = architecture(c)
  const fused = new Set(opts.fused)
  const rmsNorm = fused.has("rmsNorm") ? fusedRmsNorm : plainRmsNorm
  const eps = c.rms_norm_eps ?? 1e-6
  const theta = c.rope_theta ?? 10000
  // Scaled frequencies (rope_scaling) go to the fused kernel as a table.
  const invFreq = arch.rope.type === "default" ? undefined : ropeInvFreq(c)
  return {
    c,
    arch,
    p: (name) => params[name]!,
    has: (name) => name in params,
    norm: arch.gemmaNorms ? (x, w) => rmsNormPlusOne(x, w, eps) : (x, w) => rmsNorm(x, w, eps),
    rope: (x, offset) =>
      fused.has("rope") ? fusedRope(x, theta, offset, invFreq) : plainRope(x, theta, offset, false, invFreq),
    fusedSiluMul: fused.has("siluMul"),
    attentionBlock: opts.attentionBlock ?? 64,
  }
}

/** One decoder layer's result, with the keys and values its attention saw (the KV cache, past ones first). */
interface LayerOut {
  readonly x: Tensor
  readonly k: Tensor
  readonly v: Tensor
}

/**
 * Decoder layer i on x [B, S, d] at positions offset…offset+S−1, after the cached keys and
 * values (`cache`, [B, Hkv, offset, hd]) when there are any. Every graph here builds its layers
 * with this one function.
 */
function decoderLayer(m: Model, i: number, x: Tensor, offset: number, cache?: { k: Tensor; v: Tensor }): LayerOut {
  const { c, arch } = m
  const hd = headDim(c)
  const w = (n: string) => m.p(`model.layers.${i}.${n}`)
  const proj = projection(m, i)
  const h = m.norm(x, w("input_layernorm.weight"))
  const q = m.rope(splitHeads(proj(h, "self_attn.q_proj"), c.num_attention_heads, hd), offset)
  const kNew = m.rope(splitHeads(proj(h, "self_attn.k_proj"), c.num_key_value_heads, hd), offset)
  const vNew = splitHeads(proj(h, "self_attn.v_proj"), c.num_key_value_heads, hd)
  const k = cache === undefined ? kNew : o.concat([cache.k, kNew], 2)
  const v = cache === undefined ? vNew : o.concat([cache.v, vNew], 2)
  const a = attention(q, k, v, {
    blockSize: m.attentionBlock,
    window: arch.windows[i]!,
    softcap: arch.attnSoftcap,
    scale: arch.attnScale,
  })
  const attnOut = proj(mergeHeads(a), "self_attn.o_proj")
  const x1 = o.add(x, arch.gemmaNorms ? m.norm(attnOut, w("post_attention_layernorm.weight")) : attnOut)
  return { x: o.add(x1, mlpBlock(m, i, x1, proj)), k, v }
}

/** Layer i's linear map `n` (".weight", and ".bias" where the model has one). */
const projection =
  (m: Model, i: number) =>
  (h: Tensor, n: string): Tensor => {
    const y = linear(h, m.p(`model.layers.${i}.${n}.weight`))
    return m.has(`model.layers.${i}.${n}.bias`) ? o.add(y, m.p(`model.layers.${i}.${n}.bias`)) : y
  }

/**
 * Decoder layer i of one rank of a sequence-sharded (Ulysses) graph, on its tokens x [B, S/N, d]:
 * the attention exchanges tokens for heads and back (`ulyssesAttention`); the rest is local.
 */
function ulyssesLayer(m: Model, i: number, x: Tensor): Tensor {
  const w = (n: string) => m.p(`model.layers.${i}.${n}`)
  const proj = projection(m, i)
  const attnOut = proj(ulyssesAttention(m, i, m.norm(x, w("input_layernorm.weight")), proj), "self_attn.o_proj")
  const x1 = o.add(x, m.arch.gemmaNorms ? m.norm(attnOut, w("post_attention_layernorm.weight")) : attnOut)
  return o.add(x1, mlpBlock(m, i, x1, proj))
}

/** The MLP (with its norms) on x1, as a chunked(M) region in MST modes. */
function mlpBlock(m: Model, i: number, x1: Tensor, proj: (h: Tensor, n: string) => Tensor): Tensor {
  const { arch } = m
  const w = (n: string) => m.p(`model.layers.${i}.${n}`)
  const mlp = (t: Tensor) => {
    const hh = m.norm(t, w(arch.gemmaNorms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight"))
    if (arch.activation === "silu" && !arch.mlpBias)
      return swiglu(hh, w("mlp.gate_proj.weight"), w("mlp.up_proj.weight"), w("mlp.down_proj.weight"), m.fusedSiluMul)
    const gate = proj(hh, "mlp.gate_proj")
    const act = arch.activation === "silu" ? silu(gate) : geluTanh(gate)
    const y = proj(o.mul(act, proj(hh, "mlp.up_proj")), "mlp.down_proj")
    return arch.gemmaNorms ? m.norm(y, w("post_feedforward_layernorm.weight")) : y
  }
  return m.mlpChunks === undefined ? mlp(x1) : chunked(m.mlpChunks, { axis: 1 })(mlp)(x1)
}

/**
 * Ulysses attention of one rank on its normed tokens h [B, S/N, d]: q, k, v projected locally and
 * rotated at the rank's global positions, an all-to-all to all S tokens of H/N query heads and
 * Hkv/N kv heads (rank j holds heads j·H/N…, whose kv heads are j·Hkv/N…, so GQA's grouping holds),
 * causal attention over the whole sequence, and the all-to-all back: [B, S/N, H·hd].
 */
function ulyssesAttention(m: Model, i: number, h: Tensor, proj: (h: Tensor, n: string) => Tensor): Tensor {
  const { c, arch } = m
  const { n, offset } = m.ranks!
  const hd = headDim(c)
  // The offset is a tensor, so RoPE runs as plain ops (the fused kernel takes a number).
  const invFreq = arch.rope.type === "default" ? undefined : ropeInvFreq(c)
  // [B, S/N, H·hd] → rotated → [B, S/N, H, hd] → (all-to-all) → [B, H/N, S, hd]
  const toHeads = (t: Tensor, heads: number, rotate: boolean) => {
    const local = splitHeads(t, heads, hd)
    const seqFirst = o.permute(
      rotate ? plainRope(local, c.rope_theta ?? 10000, offset, false, invFreq) : local,
      [0, 2, 1, 3],
    )
    return o.permute(o.allToAll(seqFirst, { splitAxis: 2, concatAxis: 1, ranks: n }), [0, 2, 1, 3])
  }
  const q = toHeads(proj(h, "self_attn.q_proj"), c.num_attention_heads, true)
  const k = toHeads(proj(h, "self_attn.k_proj"), c.num_key_value_heads, true)
  const v = toHeads(proj(h, "self_attn.v_proj"), c.num_key_value_heads, false)
  const a = attention(q, k, v, {
    blockSize: m.attentionBlock,
    window: arch.windows[i]!,
    softcap: arch.attnSoftcap,
    scale: arch.attnScale,
  })
  // [B, H/N, S, hd] → [B, S, H/N, hd] → (all-to-all) → [B, S/N, H, hd] → [B, S/N, H·hd]
  const back = o.allToAll(o.permute(a, [0, 2, 1, 3]), { splitAxis: 1, concatAxis: 2, ranks: n })
  const [B, local] = h.shape as [number, number]
  return o.reshape(back, [B, local, c.num_attention_heads * hd])
}

/**
 * The embedding of tokens [B, S]: rows of the table (× √d for Gemma-2, the factor rounded to the
 * dtype as in HF); with a padding token, its row gets no gradient from the lookup (as in HF).
 */
const embed = (m: Model, tokens: Tensor): Tensor => {
  const table = m.p("model.embed_tokens.weight")
  const pad = m.arch.padIndex
  const x = pad === null ? o.gather(table, tokens) : paddedEmbedding(table, tokens, pad)
  return m.arch.embedScale === 1 ? x : o.mul(x, m.arch.embedScale)
}

/** Final norm and LM head: logits [..., V], soft-capped when the config says (Gemma-2's final_logit_softcapping). */
const headLogits = (m: Model, h: Tensor): Tensor => {
  const head = m.p(m.c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight")
  const logits = linear(m.norm(h, m.p("model.norm.weight")), head)
  const cap = m.arch.finalSoftcap
  return cap === 0 ? logits : softcap(logits, cap)
}

function checkLength(c: LlamaConfig, B: number, S: number, allowBeyond: boolean | undefined): void {
  if (S > c.max_position_embeddings && !allowBeyond) {
    throw new ShapeError({
      op: "llama",
      shapes: [[B, S]],
      message: `sequence length ${S} exceeds the model's max_position_embeddings (${c.max_position_embeddings}); shorten --seq or raise max_position_embeddings in the config`,
    })
  }
}

/** The graph of a Llama's training loss, with its inputs (parameters by Hugging Face name, tokens, targets, count). */
export interface LlamaGraph {
  readonly params: Record<string, Tensor>
  /** [B, S] int32 inputs; targets are already shifted (−100 = ignore). */
  readonly tokens: Tensor
  readonly targets: Tensor
  /** The global number of non-ignored targets, an fp32 scalar input (exact across micro-batches). */
  readonly count: Tensor
  /**
   * Sharded over ranks only: this rank's first global position (rank · S/N), a float32 scalar
   * input, so that every rank runs the same graph.
   */
  readonly positionOffset?: Tensor
  /** float32 (float64 for a float64 model); sharded, this rank's share of the loss (the sum over ranks is the loss). */
  readonly loss: Tensor
  readonly chunks: { readonly mlp: number; readonly lm: number }
}

/** The training loss of a Llama-family model for a [B, S] batch, in the given mode. */
export function llamaLoss(c: LlamaConfig, B: number, S: number, opts: ModelOptions): LlamaGraph {
  checkLength(c, B, S, opts.allowBeyondMaxPosition)
  if (!modes.includes(opts.mode))
    throw new BadConfig({ field: "mode", message: `unknown mode "${opts.mode}"; choose one of: ${modes.join(", ")}` })
  const dtype = opts.dtype ?? "float32"
  const ranks = opts.ranks === undefined ? undefined : checkRanks(c, S, opts.ranks)
  const local = S / (ranks ?? 1) // the tokens this rank holds
  const auto = autoChunks(c, local)
  const chunks = {
    mlp: opts.mlpChunks === undefined || opts.mlpChunks === "auto" ? auto.mlp : opts.mlpChunks,
    lm: opts.lmChunks === undefined || opts.lmChunks === "auto" ? auto.lm : opts.lmChunks,
  }
  const mst = opts.mode === "mst" || opts.mode === "mst+checkpoint"
  const params = parameterInputs(c, dtype)
  const positionOffset = ranks === undefined ? undefined : input("positionOffset", [], "float32")
  const m: Model = {
    ...model(c, params, opts),
    ...(mst ? { mlpChunks: chunks.mlp } : {}),
    ...(positionOffset ? { ranks: { n: ranks!, offset: positionOffset } } : {}),
  }
  const tokens = input("tokens", [B, local], "int32")
  const targets = input("targets", [B, local], "int32")
  const count = input("count", [], "float32")

  const group = checkCheckpointGroup(opts.checkpointGroup, opts.mode)
  const x = decoderLayers(m, embed(m, tokens), checkpoints(opts.mode) ? group : 0)
  // Σ of token losses (per piece in MST) over one global target count, never a mean of means.
  // In MST each piece takes its gradients in the forward pass, while its logits are alive; the
  // loss is the result itself, so its cotangent is exactly 1 and scaling by it rounds nothing.
  // The count is cast to the sum's dtype (float64 for a float64 model; an integer, so exact).
  const wide = accumulatorDType(dtype)
  const perToken = o.div(1, o.cast(count, wide))
  const lmLoss = (h: Tensor, t: Tensor) => o.mul(sumCrossEntropy(headLogits(m, h), t), perToken)
  const loss = mst
    ? chunked(chunks.lm, { axis: 1, combine: "sum", gradientsInForward: true })(lmLoss)(x, targets)
    : lmLoss(x, targets)
  // fp32 whatever the weights, or fp64
  return { params, tokens, targets, count, ...(positionOffset && { positionOffset }), loss: o.cast(loss, wide), chunks }
}

/**
 * The decoder layers on x. group 0: plain layers; group K ≥ 1: each layer a checkpoint, and
 * for K > 1 every K consecutive ones (the last group may be shorter) wrapped in one more, so
 * the forward saves one input per group. Nested, not flat: the group's recompute in the
 * backward keeps its layers checkpointed (K layer inputs alive, then one layer's activations at
 * a time), where a flat group would hold all K layers' activations at once; for one more
 * forward per layer it plans twice the S (Llama3-8B, K = 4: 455,680 tokens vs 236,544).
 */
function decoderLayers(m: Model, x: Tensor, group: number): Tensor {
  const layer = (i: number) => (t: Tensor) => (m.ranks ? ulyssesLayer(m, i, t) : decoderLayer(m, i, t, 0).x)
  const one = (i: number) => (group === 0 ? layer(i) : checkpoint(layer(i)))
  const n = m.c.num_hidden_layers
  const size = Math.max(1, group)
  let h = x
  for (let first = 0; first < n; first += size) {
    const ids = Array.from({ length: Math.min(size, n - first) }, (_, k) => first + k)
    const layers = (t: Tensor) => ids.reduce((y, i) => one(i)(y), t)
    h = group > 1 ? checkpoint(layers)(h) : layers(h)
  }
  return h
}

/**
 * K for `checkpointGroup`: a whole number ≥ 1, and other than 1 only in a mode that checkpoints
 * (no mode: the planner, which applies K to the modes that do).
 */
export function checkCheckpointGroup(k: number | undefined, mode?: Mode): number {
  if (k === undefined) return 1
  if (!(Number.isSafeInteger(k) && k >= 1))
    throw new BadConfig({
      field: "checkpointGroup",
      message: `checkpointGroup (--checkpoint-group) must be a whole number ≥ 1 of layers per checkpoint region, got ${k}; pass 1 for one region per layer`,
    })
  if (k !== 1 && mode !== undefined && !checkpoints(mode))
    throw new BadConfig({
      field: "checkpointGroup",
      message: `checkpointGroup (--checkpoint-group) ${k} groups checkpoint regions, but mode ${mode} has none; use --mode checkpoint or --mode mst+checkpoint, or drop --checkpoint-group`,
    })
  return k
}

/**
 * N, when N ranks can share the sequence: N must divide S (each rank holds S/N tokens) and the
 * KV heads (each attends with Hkv/N of them, and so H/N query heads).
 */
function checkRanks(c: LlamaConfig, S: number, n: number): number {
  const fix = "choose a number of ranks that divides both"
  if (!(Number.isSafeInteger(n) && n >= 1))
    throw new BadConfig({ field: "ranks", message: `ranks must be a whole number ≥ 1, got ${n}` })
  if (S % n !== 0)
    throw new BadConfig({
      field: "ranks",
      message: `${n} ranks cannot share a sequence of ${S} tokens: ${S} % ${n} = ${S % n}; each rank holds S/N tokens, so choose a sequence length that is a multiple of ${n} or ranks that divide ${S}`,
    })
  if (c.num_key_value_heads % n !== 0)
    throw new BadConfig({
      field: "ranks",
      message: `${n} ranks cannot share ${c.num_key_value_heads} KV heads (num_key_value_heads % ${n} = ${c.num_key_value_heads % n}); Ulysses gives each rank Hkv/N of them; ${fix} num_key_value_heads (${c.num_key_value_heads}) and S (${S})`,
    })
  return n
}

/** How `llamaForward` builds its graph. */
export interface ForwardOptions {
  readonly dtype?: DType
  /** The routines the backend fuses (as in `ModelOptions`). */
  readonly fused?: readonly string[]
  readonly attentionBlock?: number
  /** Allow past + T beyond max_position_embeddings (RoPE extrapolates; HF allows it too). */
  readonly allowBeyondMaxPosition?: boolean
}

/** One layer's cached keys and values, [B, Hkv, positions, hd]. */
export interface LayerCache {
  readonly k: Tensor
  readonly v: Tensor
}

/** The graph of `llamaForward`. */
export interface ForwardGraph {
  readonly params: Record<string, Tensor>
  /** [B, T] int32: the new tokens. */
  readonly tokens: Tensor
  /** Inputs "cache.<layer>.k" / ".v", [B, Hkv, past, hd] in the model's dtype; [] when past = 0. */
  readonly cacheIn: LayerCache[]
  /** [B, T, V], float32 (float64 for a float64 model). */
  readonly logits: Tensor
  /** Each layer's keys and values for positions 0…past+T−1: the next call's cacheIn. */
  readonly cacheOut: LayerCache[]
}

/**
 * Logits for new tokens [B, T] at positions past … past+T−1, given each layer's cached keys and
 * values ([B, Hkv, past, hd], absent when past = 0); returns the logits [B, T, V] (float32) and
 * the cache with past+T. The layers are `llamaLoss`'s (one layer function); attention runs as
 * the fused "attention" routine when past = 0 and nothing else differs from plain causal
 * attention, else as "generalAttention" (plain ops on every backend).
 */
export function llamaForward(
  c: LlamaConfig,
  B: number,
  T: number,
  past: number,
  opts: ForwardOptions = {},
): ForwardGraph {
  if (!Number.isInteger(past) || past < 0 || !Number.isInteger(T) || T < 1)
    throw new ShapeError({
      op: "llamaForward",
      shapes: [[B, T]],
      message: `llamaForward: T must be an integer ≥ 1 and past an integer ≥ 0 (got T = ${T}, past = ${past})`,
    })
  checkLength(c, B, past + T, opts.allowBeyondMaxPosition)
  const dtype = opts.dtype ?? "float32"
  const params = parameterInputs(c, dtype)
  const m = model(c, params, opts)
  const hd = headDim(c)
  const tokens = input("tokens", [B, T], "int32")
  const cacheIn: LayerCache[] =
    past === 0
      ? []
      : Array.from({ length: c.num_hidden_layers }, (_, i) => ({
          k: input(`cache.${i}.k`, [B, c.num_key_value_heads, past, hd], dtype),
          v: input(`cache.${i}.v`, [B, c.num_key_value_heads, past, hd], dtype),
        }))
  const cacheOut: LayerCache[] = []
  let x = embed(m, tokens)
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const out = decoderLayer(m, i, x, past, cacheIn[i])
    cacheOut.push({ k: out.k, v: out.v })
    x = out.x
  }
  return { params, tokens, cacheIn, logits: o.cast(headLogits(m, x), accumulatorDType(dtype)), cacheOut }
}
