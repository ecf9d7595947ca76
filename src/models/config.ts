/**
 * Llama-family model configs in Hugging Face's `config.json` vocabulary, decoded with Effect
 * Schema (unknown keys are ignored, so a real HF config file decodes as is).
 */
import { Effect, Schema } from "effect"
import { BadConfig } from "../core/errors.js"

const PositiveInt = Schema.Int.check(Schema.isGreaterThan(0))
const PositiveFinite = Schema.Finite.check(Schema.isGreaterThan(0))

/** A Hugging Face Llama `config.json` (the fields miniseq reads), as an Effect Schema; `LlamaConfig` is also its type. */
export const LlamaConfig = Schema.Struct({
  hidden_size: PositiveInt,
  intermediate_size: PositiveInt,
  num_hidden_layers: PositiveInt,
  num_attention_heads: PositiveInt,
  num_key_value_heads: PositiveInt,
  vocab_size: PositiveInt,
  /** Per-head width; HF derives hidden_size / num_attention_heads when absent. */
  head_dim: Schema.optional(PositiveInt),
  rope_theta: PositiveFinite.pipe(Schema.optional, Schema.withDecodingDefault(Effect.succeed(10000))),
  rms_norm_eps: PositiveFinite.pipe(Schema.optional, Schema.withDecodingDefault(Effect.succeed(1e-5))),
  max_position_embeddings: PositiveInt,
  tie_word_embeddings: Schema.Boolean.pipe(Schema.optional, Schema.withDecodingDefault(Effect.succeed(false))),
})
export type LlamaConfig = typeof LlamaConfig.Type

/** The attention head width: `head_dim`, else `hidden_size / num_attention_heads`. */
export const headDim = (c: LlamaConfig): number => c.head_dim ?? c.hidden_size / c.num_attention_heads

/** Decodes and cross-checks a config; every problem is a BadConfig naming the field. */
export function decodeConfig(raw: unknown): Effect.Effect<LlamaConfig, BadConfig> {
  return Schema.decodeUnknownEffect(LlamaConfig)(raw).pipe(
    Effect.mapError((e) => new BadConfig({ field: "config", message: `bad model config: ${e.message}` })),
    Effect.flatMap((c) => {
      const problem = checkConfig(c)
      return problem === undefined ? Effect.succeed(c) : Effect.fail(problem)
    }),
  )
}

/** `decodeConfig`, synchronously: throws `BadConfig` for a config that does not decode. */
export const decodeConfigSync = (raw: unknown): LlamaConfig => Effect.runSync(decodeConfig(raw))

function checkConfig(c: LlamaConfig): BadConfig | undefined {
  const bad = (field: string, message: string) =>
    new BadConfig({ field, message: `bad model config: ${field}: ${message}` })
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
  return undefined
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
  /** Mistral-7B v0.1. Differs: sliding-window attention (4096), which miniseq does not model (full causal). */
  "mistral-7b": {
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
  },
  /** Qwen2-7B. Differs: q/k/v projections carry biases (7 168 extra parameters per layer, ignored here). */
  "qwen2-7b": {
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
  },
  /**
   * Gemma2-9B's shapes. Differs: GeGLU instead of SwiGLU (same three matrices, so the same
   * memory), four norms per layer, logit soft-capping, alternating sliding-window layers and
   * scaled embeddings — modelled here as a Llama of the same shapes.
   */
  "gemma2-9b": {
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
