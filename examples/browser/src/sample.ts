/**
 * Text from the model so far: greedy decoding with a full forward pass per token over a window of
 * the last `window` tokens. The forward is the Llama of `llamaLoss` without the loss (the same
 * parameters by Hugging Face name, the plain RMSNorm, RoPE, attention and SwiGLU of the library),
 * built once per window and evaluated on the Backend service. Kept in this one module so that a
 * KV-cache generator from the library can replace it.
 */
import { Effect } from "effect"
import {
  attention,
  evaluate,
  type Feed,
  headDim,
  input,
  type LlamaConfig,
  linear,
  ops as o,
  parameterInputs,
  rmsNorm,
  rope,
  swiglu,
  type Tensor,
} from "miniseq"

const splitHeads = (x: Tensor, heads: number, hd: number): Tensor => {
  const [B, S] = x.shape as [number, number]
  return o.permute(o.reshape(x, [B, S, heads, hd]), [0, 2, 1, 3])
}
const mergeHeads = (x: Tensor): Tensor => {
  const [B, H, S, hd] = x.shape as [number, number, number, number]
  return o.reshape(o.permute(x, [0, 2, 1, 3]), [B, S, H * hd])
}

export interface LogitsGraph {
  readonly params: Record<string, Tensor>
  /** [1, window] int32 */
  readonly tokens: Tensor
  /** [1, window, vocab]: the next-token logits at every position. */
  readonly logits: Tensor
}

/** The model's logits for one window of `window` tokens. */
export function logitsGraph(c: LlamaConfig, window: number): LogitsGraph {
  const params = parameterInputs(c)
  const p = (name: string) => params[name]!
  const hd = headDim(c)
  const tokens = input("tokens", [1, window], "int32")
  let x = o.gather(p("model.embed_tokens.weight"), tokens)
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const w = (n: string) => p(`model.layers.${i}.${n}`)
    const h = rmsNorm(x, w("input_layernorm.weight"), c.rms_norm_eps)
    const q = rope(splitHeads(linear(h, w("self_attn.q_proj.weight")), c.num_attention_heads, hd), c.rope_theta)
    const k = rope(splitHeads(linear(h, w("self_attn.k_proj.weight")), c.num_key_value_heads, hd), c.rope_theta)
    const v = splitHeads(linear(h, w("self_attn.v_proj.weight")), c.num_key_value_heads, hd)
    const x1 = o.add(x, linear(mergeHeads(attention(q, k, v)), w("self_attn.o_proj.weight")))
    const h2 = rmsNorm(x1, w("post_attention_layernorm.weight"), c.rms_norm_eps)
    x = o.add(x1, swiglu(h2, w("mlp.gate_proj.weight"), w("mlp.up_proj.weight"), w("mlp.down_proj.weight")))
  }
  const head = p(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight")
  const logits = linear(rmsNorm(x, p("model.norm.weight"), c.rms_norm_eps), head)
  return { params, tokens, logits }
}

const argmax = (xs: Float32Array, from: number, to: number): number => {
  let best = from
  for (let i = from + 1; i < to; i++) if (xs[i]! > xs[best]!) best = i
  return best - from
}

/**
 * `count` tokens after `prompt`, each the most likely next token given the last `window` tokens
 * (the prompt must hold at least `window`).
 */
export function greedyTokens(
  c: LlamaConfig,
  parameters: Readonly<Record<string, Float32Array>>,
  prompt: readonly number[],
  count: number,
  window: number,
) {
  return Effect.gen(function* () {
    if (prompt.length < window) throw new Error(`the prompt has ${prompt.length} tokens; the window needs ${window}`)
    const g = logitsGraph(c, window)
    const feeds = new Map<Tensor, Feed>(Object.entries(g.params).map(([n, t]) => [t, parameters[n]!]))
    const tokens = [...prompt]
    const V = c.vocab_size
    for (let i = 0; i < count; i++) {
      feeds.set(g.tokens, Int32Array.from(tokens.slice(-window)))
      const { values } = yield* evaluate([g.logits], feeds)
      tokens.push(argmax(values[0] as Float32Array, (window - 1) * V, window * V))
    }
    return tokens.slice(prompt.length)
  })
}
