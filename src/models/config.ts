/**
 * Llama-family model configs in Hugging Face's `config.json` vocabulary, decoded with Effect
 * Schema (unknown keys are ignored, so a real HF config file decodes as is).
 */
import { Effect, Schema } from "effect"
import { BadConfig } from "../core/errors.js"

const PositiveInt = Schema.Int.check(Schema.isGreaterThan(0))
const PositiveFinite = Schema.Finite.check(Schema.isGreaterThan(0))

/** A Hugging Face `config.json` of a Llama-family model (the fields miniseq reads), as an Effect Schema; `LlamaConfig` is also its type. */
export const LlamaConfig = Schema.Struct({
  /** llama (the default), mistral, qwen2 or gemma2; anything else is refused. */
  model_type: Schema.optional(Schema.String),
  hidden_size: PositiveInt,
  intermediate_size: PositiveInt,
  num_hidden_layers: PositiveInt,
  num_attention_heads: PositiveInt,
  /** HF's default: num_attention_heads (no grouping). */
  num_key_value_heads: PositiveInt,
  vocab_size: PositiveInt,
  /** Per-head width; HF derives hidden_size / num_attention_heads when absent (Gemma-2: 256). */
  head_dim: Schema.optional(PositiveInt),
  rope_theta: PositiveFinite.pipe(Schema.optional, Schema.withDecodingDefault(Effect.succeed(10000))),
  rms_norm_eps: PositiveFinite.pipe(Schema.optional, Schema.withDecodingDefault(Effect.succeed(1e-5))),
  max_position_embeddings: PositiveInt,
  tie_word_embeddings: Schema.Boolean.pipe(Schema.optional, Schema.withDecodingDefault(Effect.succeed(false))),
  /** null, or { rope_type (or type): "default" | "linear" | "llama3", factor, … } (see `ropeScaling`). */
  rope_scaling: Schema.optional(Schema.NullOr(Schema.Record(Schema.String, Schema.Unknown))),
  /** Biases on q/k/v/o (Llama's `attention_bias`); Qwen2 always has them on q/k/v. */
  attention_bias: Schema.optional(Schema.Boolean),
  mlp_bias: Schema.optional(Schema.Boolean),
  hidden_act: Schema.optional(Schema.String),
  /** Gemma-2's name for the MLP activation (it wins over hidden_act there, as in HF). */
  hidden_activation: Schema.optional(Schema.NullOr(Schema.String)),
  sliding_window: Schema.optional(Schema.NullOr(PositiveInt)),
  /** Qwen2: windows only when this is true, and only on layers ≥ max_window_layers. */
  use_sliding_window: Schema.optional(Schema.Boolean),
  max_window_layers: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
  /** Per-layer "full_attention" | "sliding_attention" (newer HF configs spell the pattern out). */
  layer_types: Schema.optional(Schema.Array(Schema.String)),
  query_pre_attn_scalar: Schema.optional(PositiveFinite),
  attn_logit_softcapping: Schema.optional(Schema.NullOr(PositiveFinite)),
  final_logit_softcapping: Schema.optional(Schema.NullOr(PositiveFinite)),
  /** Must be 0: miniseq trains without dropout. */
  attention_dropout: Schema.optional(Schema.Finite),
  /** Must be 1: every architecture here rotates the whole head. */
  partial_rotary_factor: Schema.optional(Schema.Finite),
  /**
   * The padding token: HF's embedding gives its row no gradient from the lookup (PyTorch's
   * padding_idx). Absent: HF's default (Gemma-2: 0, the others none); null: none.
   */
  pad_token_id: Schema.optional(Schema.NullOr(Schema.Int)),
})
export type LlamaConfig = typeof LlamaConfig.Type

/** The architectures miniseq computes exactly (HF `model_type`). */
export const modelTypes = ["llama", "mistral", "qwen2", "gemma2"] as const
/** One of `modelTypes`. */
export type ModelType = (typeof modelTypes)[number]

/** The attention head width: `head_dim`, else `hidden_size / num_attention_heads`. */
export const headDim = (c: LlamaConfig): number => c.head_dim ?? c.hidden_size / c.num_attention_heads

/**
 * HF's defaults for the optional fields a config may leave out, per model_type (each
 * transformers `*Config` class's keyword defaults). Filled in before decoding, so a missing
 * field means what it means in transformers.
 */
const hfDefaults: Record<ModelType, Readonly<Record<string, unknown>>> = {
  llama: { rope_theta: 10000, rms_norm_eps: 1e-6, max_position_embeddings: 2048, tie_word_embeddings: false },
  mistral: { rope_theta: 10000, rms_norm_eps: 1e-6, max_position_embeddings: 4096 * 32, tie_word_embeddings: false },
  qwen2: { rope_theta: 10000, rms_norm_eps: 1e-6, max_position_embeddings: 32768, tie_word_embeddings: false },
  gemma2: {
    rope_theta: 10000,
    rms_norm_eps: 1e-6,
    max_position_embeddings: 8192,
    tie_word_embeddings: true,
    head_dim: 256,
    pad_token_id: 0,
  },
}

/** Fields where null means "not set" (transformers writes an unset None so); elsewhere null means "off". */
const nullMeansAbsent = [
  "head_dim",
  "num_key_value_heads",
  "rope_theta",
  "rms_norm_eps",
  "max_position_embeddings",
  "tie_word_embeddings",
  "attention_bias",
  "mlp_bias",
  "hidden_act",
  "attention_dropout",
  "partial_rotary_factor",
  "use_sliding_window",
  "max_window_layers",
  "query_pre_attn_scalar",
  "layer_types",
]

/** The RoPE types miniseq computes (`rope_scaling.rope_type`). */
const ropeTypes = ["default", "linear", "llama3"] as const

/**
 * transformers 5 writes θ and the scaling as one `rope_parameters` ({ rope_type, rope_theta,
 * factor, … }); read it as rope_theta and rope_scaling. Per-layer-type parameters (a value per
 * "full_attention" / "sliding_attention") are refused: every layer here shares one RoPE.
 */
function unfoldRopeParameters(filled: Record<string, unknown>): void {
  const rp = filled.rope_parameters
  delete filled.rope_parameters
  if (rp === undefined || rp === null) return
  if (typeof rp !== "object" || Array.isArray(rp) || Object.values(rp).some((v) => typeof v === "object" && v !== null))
    throw bad(
      "rope_parameters",
      "only one set of RoPE parameters ({ rope_type, rope_theta, … }) is implemented, not one per layer type",
    )
  const { rope_theta, ...scaling } = rp as Record<string, unknown>
  const type = scaling.rope_type ?? scaling.type ?? "default"
  if (!ropeTypes.includes(type as never))
    throw bad(
      "rope_parameters.rope_type",
      `"${String(type)}" is not implemented; miniseq computes ${ropeTypes.join(", ")} (use one of those)`,
    )
  if (rope_theta !== undefined) {
    if (filled.rope_theta !== undefined && filled.rope_theta !== rope_theta)
      throw bad("rope_parameters.rope_theta", `${rope_theta} contradicts rope_theta ${filled.rope_theta}; keep one`)
    filled.rope_theta = rope_theta
  }
  if (Object.keys(scaling).length > 0) {
    if (filled.rope_scaling !== undefined && filled.rope_scaling !== null)
      throw bad("rope_parameters", "given beside rope_scaling; keep one")
    filled.rope_scaling = scaling
  }
}

/** A raw config with HF's defaults filled in where a field is absent. */
function withDefaults(raw: unknown): unknown {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return raw
  const r = raw as Record<string, unknown>
  const type = r.model_type
  const defaults = typeof type === "string" && type in hfDefaults ? hfDefaults[type as ModelType] : hfDefaults.llama
  const filled: Record<string, unknown> = { ...r }
  for (const k of nullMeansAbsent) if (filled[k] === null) delete filled[k]
  unfoldRopeParameters(filled)
  for (const [k, v] of Object.entries(defaults)) if (!(k in filled)) filled[k] = v
  if (!("num_key_value_heads" in filled)) filled.num_key_value_heads = r.num_attention_heads
  return filled
}

/** Decodes and cross-checks a config; every problem is a BadConfig naming the field. */
export function decodeConfig(raw: unknown): Effect.Effect<LlamaConfig, BadConfig> {
  return Effect.try({
    try: () => withDefaults(raw),
    catch: (e) => (e instanceof BadConfig ? e : bad("config", String(e))),
  }).pipe(
    Effect.flatMap((filled) => Schema.decodeUnknownEffect(LlamaConfig)(filled)),
    Effect.mapError((e) =>
      e instanceof BadConfig ? e : new BadConfig({ field: "config", message: `bad model config: ${e.message}` }),
    ),
    Effect.flatMap((c) => {
      const problem = checkConfig(c)
      return problem === undefined ? Effect.succeed(c) : Effect.fail(problem)
    }),
  )
}

/** `decodeConfig`, synchronously: throws `BadConfig` for a config that does not decode. */
export const decodeConfigSync = (raw: unknown): LlamaConfig => Effect.runSync(decodeConfig(raw))

const bad = (field: string, message: string) =>
  new BadConfig({ field, message: `bad model config: ${field}: ${message}` })

function checkConfig(c: LlamaConfig): BadConfig | undefined {
  if (c.num_attention_heads % c.num_key_value_heads !== 0) {
    return bad(
      "num_key_value_heads",
      `${c.num_key_value_heads} must divide num_attention_heads (${c.num_attention_heads})`,
    )
  }
  const hd = headDim(c)
  if (!Number.isInteger(hd) || hd % 2 !== 0) {
    return bad(
      "head_dim",
      `the head width ${hd} must be an even integer (RoPE rotates pairs); set head_dim or change hidden_size / num_attention_heads`,
    )
  }
  try {
    architecture(c)
  } catch (e) {
    if (e instanceof BadConfig) return e
    throw e
  }
  return undefined
}

/** RoPE's frequencies: θ, and HF's rope_scaling when it has one. */
export type RopeScaling =
  | { readonly type: "default" }
  | { readonly type: "linear"; readonly factor: number }
  | {
      readonly type: "llama3"
      readonly factor: number
      readonly lowFreqFactor: number
      readonly highFreqFactor: number
      readonly originalMaxPositionEmbeddings: number
    }

/** `rope_scaling` read as transformers reads it ("type" is the old name of "rope_type"); other rope types are refused. */
export function ropeScaling(c: LlamaConfig): RopeScaling {
  const rs = c.rope_scaling
  if (rs === undefined || rs === null) return { type: "default" }
  const type = rs.rope_type ?? rs.type ?? "default"
  const num = (key: string, positive = true): number => {
    const v = rs[key]
    if (typeof v !== "number" || !Number.isFinite(v) || (positive && v <= 0))
      throw bad(
        `rope_scaling.${key}`,
        `must be a positive number for rope_type "${String(type)}" (got ${JSON.stringify(v)})`,
      )
    return v
  }
  switch (type) {
    case "default":
      return { type: "default" }
    case "linear":
      return { type: "linear", factor: num("factor") }
    case "llama3": {
      const s = {
        type: "llama3",
        factor: num("factor"),
        lowFreqFactor: num("low_freq_factor"),
        highFreqFactor: num("high_freq_factor"),
        originalMaxPositionEmbeddings: num("original_max_position_embeddings"),
      } as const
      if (s.highFreqFactor <= s.lowFreqFactor)
        throw bad(
          "rope_scaling.high_freq_factor",
          `${s.highFreqFactor} must exceed low_freq_factor (${s.lowFreqFactor})`,
        )
      return s
    }
    default:
      throw bad(
        "rope_scaling.rope_type",
        `"${String(type)}" is not implemented; miniseq computes "default", "linear" and "llama3" (remove rope_scaling or use one of those)`,
      )
  }
}

/**
 * RoPE's inverse frequencies θ^(−2i/D), i < D/2, with the config's scaling applied, as
 * transformers computes them (in float64 here): linear divides each by the factor; llama3 keeps
 * the high frequencies (wavelength < original context / high_freq_factor), divides the low ones
 * (wavelength > original / low_freq_factor) by the factor and blends the band between.
 */
export function ropeInvFreq(c: LlamaConfig): number[] {
  const D = headDim(c)
  const base = Array.from({ length: D / 2 }, (_, i) => 1 / (c.rope_theta ?? 10000) ** ((2 * i) / D))
  const s = ropeScaling(c)
  if (s.type === "default") return base
  if (s.type === "linear") return base.map((f) => f / s.factor)
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor
  return base.map((f) => {
    const wavelen = (2 * Math.PI) / f
    if (wavelen < highWavelen) return f
    if (wavelen > lowWavelen) return f / s.factor
    const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
    return ((1 - smooth) * f) / s.factor + smooth * f
  })
}

/** Everything about a config that changes the math, resolved with HF's defaults for its model_type. */
export interface Architecture {
  readonly modelType: ModelType
  readonly activation: "silu" | "gelu_tanh"
  /** Biases on q, k, v (Qwen2; Llama with attention_bias) and on o (Llama with attention_bias). */
  readonly qkvBias: boolean
  readonly oBias: boolean
  readonly mlpBias: boolean
  /** Gemma-2: norms weigh by (1 + w), and each sub-block's output is normed before its residual. */
  readonly gemmaNorms: boolean
  /** The embedding is multiplied by this (Gemma-2: √hidden_size). */
  readonly embedScale: number
  /** The row of the embedding the lookup sends no gradient to (`pad_token_id`), or null. */
  readonly padIndex: number | null
  /** Attention scores are multiplied by this (1/√head_dim; Gemma-2: query_pre_attn_scalar^−½). */
  readonly attnScale: number
  /** 0: none. */
  readonly attnSoftcap: number
  readonly finalSoftcap: number
  /** Per layer: the sliding window, 0 for full causal attention. */
  readonly windows: readonly number[]
  readonly rope: RopeScaling
}

const activations: Record<string, Architecture["activation"]> = {
  silu: "silu",
  swish: "silu",
  gelu_pytorch_tanh: "gelu_tanh",
}

/** The math of a config; a field that would change it in a way miniseq does not compute is a BadConfig naming it. */
export function architecture(c: LlamaConfig): Architecture {
  const modelType = (c.model_type ?? "llama") as ModelType
  if (!modelTypes.includes(modelType))
    throw bad(
      "model_type",
      `"${c.model_type}" is not implemented; miniseq computes ${modelTypes.join(", ")} (a config of another architecture would train something else)`,
    )
  const gemma = modelType === "gemma2"
  const actName = (
    gemma ? (c.hidden_activation ?? c.hidden_act ?? "gelu_pytorch_tanh") : (c.hidden_act ?? "silu")
  ) as string
  const activation = activations[actName]
  if (activation === undefined)
    throw bad(
      gemma && c.hidden_activation != null ? "hidden_activation" : "hidden_act",
      `"${actName}" is not implemented; use ${Object.keys(activations).join(", ")}`,
    )
  if (c.attention_dropout !== undefined && c.attention_dropout !== 0)
    throw bad(
      "attention_dropout",
      `${c.attention_dropout} is not implemented (miniseq trains without dropout); set it to 0`,
    )
  if (c.partial_rotary_factor !== undefined && c.partial_rotary_factor !== 1)
    throw bad(
      "partial_rotary_factor",
      `${c.partial_rotary_factor} is not implemented; these architectures rotate whole heads (1)`,
    )
  const refuse = (field: keyof LlamaConfig, why: string) => {
    if (c[field] !== undefined && c[field] !== null && c[field] !== false) throw bad(field, why)
  }
  if (modelType !== "llama") refuse("mlp_bias", `MLP biases are not part of ${modelType}; remove mlp_bias`)
  if (modelType === "mistral" || modelType === "qwen2")
    refuse("attention_bias", `${modelType} has no attention_bias option in transformers; remove it`)
  if (!gemma) {
    for (const f of ["query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping"] as const)
      refuse(f, `only gemma2 uses ${f}; remove it or set model_type to gemma2`)
  }
  const L = c.num_hidden_layers
  // HF's Mistral, Qwen2 and Gemma-2 default to a 4096-token window; null turns it off.
  const window = c.sliding_window === undefined ? (modelType === "llama" ? 0 : 4096) : (c.sliding_window ?? 0)
  const pattern = (sliding: (i: number) => boolean): number[] =>
    Array.from({ length: L }, (_, i) => (sliding(i) ? window : 0))
  let windows: number[]
  if (c.layer_types !== undefined && modelType !== "llama") {
    if (c.layer_types.length !== L)
      throw bad("layer_types", `has ${c.layer_types.length} entries; num_hidden_layers is ${L}`)
    windows = c.layer_types.map((t, i) => {
      if (t === "full_attention") return 0
      if (t === "sliding_attention") {
        if (window === 0) throw bad("sliding_window", `layer ${i} is "sliding_attention" but sliding_window is not set`)
        return window
      }
      throw bad(`layer_types`, `entry ${i} "${t}" is not implemented; use "full_attention" or "sliding_attention"`)
    })
  } else if (modelType === "mistral") windows = pattern(() => window > 0)
  else if (modelType === "qwen2")
    windows = pattern((i) => (c.use_sliding_window ?? false) && window > 0 && i >= (c.max_window_layers ?? 28))
  else if (gemma)
    windows = pattern((i) => window > 0 && i % 2 === 0) // layers 0, 2, 4, … slide
  else {
    refuse("sliding_window", "Llama has no sliding window; remove it or set model_type to mistral")
    refuse("layer_types", "Llama has no per-layer attention types; remove layer_types")
    windows = pattern(() => false)
  }
  const attnBias = c.attention_bias ?? false
  const V = c.vocab_size
  const pad = c.pad_token_id ?? null
  // PyTorch's padding_idx counts a negative index from the end, as Python indexing does.
  if (pad !== null && (pad < -V || pad >= V))
    throw bad("pad_token_id", `${pad} is not a row of the ${V}-token embedding; use 0 … ${V - 1} or null`)
  return {
    modelType,
    activation,
    qkvBias: modelType === "qwen2" || attnBias,
    oBias: attnBias,
    mlpBias: c.mlp_bias ?? false,
    gemmaNorms: gemma,
    embedScale: gemma ? Math.sqrt(c.hidden_size) : 1,
    padIndex: pad === null ? null : pad < 0 ? V + pad : pad,
    attnScale: 1 / Math.sqrt(gemma ? (c.query_pre_attn_scalar ?? 256) : headDim(c)),
    attnSoftcap: gemma ? (c.attn_logit_softcapping === undefined ? 50 : (c.attn_logit_softcapping ?? 0)) : 0,
    finalSoftcap: gemma ? (c.final_logit_softcapping === undefined ? 30 : (c.final_logit_softcapping ?? 0)) : 0,
    windows,
    rope: ropeScaling(c),
  }
}

/**
 * Presets. The tiny default trains on a CPU in minutes; the others are the shapes of the real
 * models (as in their HF config.json), for planning memory and for GPU runs.
 */
/** The CPU default: byte-level vocabulary, two layers. */
const tiny = {
  hidden_size: 64,
  intermediate_size: 192,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 256,
  rope_theta: 10000,
  rms_norm_eps: 1e-5,
  max_position_embeddings: 1024,
  tie_word_embeddings: false,
} as const

/** Built-in model configs by name (`tiny` trains in minutes on a CPU; the others are real models' shapes for the planner). */
export const presets = {
  tiny,
  /** tiny with the 100k cl100k_base vocabulary: the LM head dominates memory. */
  "tiny-bpe": { ...tiny, vocab_size: 100277, max_position_embeddings: 4096 },
  "llama-3.2-1b": {
    hidden_size: 2048,
    intermediate_size: 8192,
    num_hidden_layers: 16,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    head_dim: 64,
    vocab_size: 128256,
    rope_theta: 500000,
    rms_norm_eps: 1e-5,
    max_position_embeddings: 131072,
    tie_word_embeddings: true,
    /** Llama 3.2's long-context RoPE (its config.json). */
    rope_scaling: {
      rope_type: "llama3",
      factor: 32,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    },
  },
  "llama3-8b": {
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    vocab_size: 128256,
    rope_theta: 500000,
    rms_norm_eps: 1e-5,
    max_position_embeddings: 8192,
    tie_word_embeddings: false,
  },
  "llama2-7b": {
    hidden_size: 4096,
    intermediate_size: 11008,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    vocab_size: 32000,
    rope_theta: 10000,
    rms_norm_eps: 1e-5,
    max_position_embeddings: 4096,
    tie_word_embeddings: false,
  },
  /** Mistral-7B v0.1: Llama's layer with sliding-window attention (4096 tokens) in every layer. */
  "mistral-7b": {
    model_type: "mistral",
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    vocab_size: 32000,
    rope_theta: 10000,
    rms_norm_eps: 1e-5,
    max_position_embeddings: 32768,
    tie_word_embeddings: false,
    sliding_window: 4096,
  },
  /** Qwen2-7B: q/k/v projections carry biases; no sliding window (use_sliding_window false). */
  "qwen2-7b": {
    model_type: "qwen2",
    hidden_size: 3584,
    intermediate_size: 18944,
    num_hidden_layers: 28,
    num_attention_heads: 28,
    num_key_value_heads: 4,
    vocab_size: 152064,
    rope_theta: 1000000,
    rms_norm_eps: 1e-6,
    max_position_embeddings: 32768,
    tie_word_embeddings: false,
    use_sliding_window: false,
    sliding_window: 131072,
    max_window_layers: 28,
  },
  /**
   * Gemma-2-9B: GeGLU (tanh GELU), four (1 + w) norms per layer, embedding × √d, scores scaled
   * by query_pre_attn_scalar^−½ and soft-capped at 50, logits at 30, and a 4096-token window on
   * every other layer (0, 2, …).
   */
  "gemma2-9b": {
    model_type: "gemma2",
    hidden_size: 3584,
    intermediate_size: 14336,
    num_hidden_layers: 42,
    num_attention_heads: 16,
    num_key_value_heads: 8,
    head_dim: 256,
    vocab_size: 256000,
    rope_theta: 10000,
    rms_norm_eps: 1e-6,
    max_position_embeddings: 8192,
    tie_word_embeddings: true,
    hidden_activation: "gelu_pytorch_tanh",
    query_pre_attn_scalar: 256,
    sliding_window: 4096,
    attn_logit_softcapping: 50,
    final_logit_softcapping: 30,
  },
} as const satisfies Record<string, LlamaConfig>

/** The name of a built-in preset. */
export type PresetName = keyof typeof presets
/** Every preset's name, in `presets` order. */
export const presetNames = Object.keys(presets) as PresetName[]

/** The preset called `name`, decoded; fails with `BadConfig` naming the known presets. */
export function preset(name: string): Effect.Effect<LlamaConfig, BadConfig> {
  if (!(name in presets)) {
    return Effect.fail(
      new BadConfig({
        field: "model",
        message: `unknown model "${name}"; choose one of: ${presetNames.join(", ")} (or pass --config config.json)`,
      }),
    )
  }
  return decodeConfig(presets[name as PresetName])
}
