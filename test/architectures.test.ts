// The architectures (Llama, Mistral, Qwen2, Gemma-2) against independent references: golden
// fixtures made by scripts/golden/make_golden.py (transformers, or a plain-PyTorch float64 model
// of its semantics: each file says which), the KV-cached forward against the uncached one, the
// loss against cross-entropy of the forward's logits, and configs refused with the field named.
import { join } from "node:path"
import { Effect, Layer } from "effect"
import { valueAndGrad } from "../src/core/autodiff.js"
import { fastCpuBackendLayer, makeFastCpuBackend } from "../src/backends/cpu-fast/index.js"
import { BadConfig } from "../src/core/errors.js"
import { makeCpuBackend } from "../src/backends/cpu/index.js"
import { cpuWithBfloat16 } from "../src/backends/cpu/bfloat16.js"
import { describe, expect, it } from "vitest"
import { readSafetensors } from "../src/models/safetensors.js"
import { Backend, type BackendImpl } from "../src/core/backend.js"
import { counterNormals } from "../src/core/random.js"
import { makeBatches } from "../src/models/data.js"
import type { DType, HostArray } from "../src/core/dtype.js"
import type { Feed } from "../src/core/executor.js"
import type { Tensor } from "../src/core/graph.js"
import {
  architecture,
  decodeConfig,
  decodeConfigSync,
  type LlamaConfig,
  preset,
  presetNames,
  ropeInvFreq,
} from "../src/models/config.js"
import { llamaForward, llamaLoss, modes, parameterShapes } from "../src/models/llama.js"
import { initialParameters, train } from "../src/models/train.js"
import { gpuFusedRoutines } from "../src/cli/plan-command.js"
import { layerOf, webgpu } from "./backends/subjects.js"
import { intArray, maxRelDiff, randomArray, referenceCpu, run } from "./helpers.js"
import { asDType, feedsOf, golden, goldenDir, goldenNames, goldenTransformersDir, lossAndGrads } from "./golden.js"

/** A tiny model of each architecture, with every feature that differs from Llama switched on. */
const tinyBase = {
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 29,
  max_position_embeddings: 64,
  rms_norm_eps: 1e-6,
}
const tinyConfigs: Record<string, LlamaConfig> = {
  llama: decodeConfigSync({
    ...tinyBase,
    model_type: "llama",
    rope_theta: 500000,
    rope_scaling: {
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 16,
    },
  }),
  mistral: decodeConfigSync({ ...tinyBase, model_type: "mistral", sliding_window: 3 }),
  qwen2: decodeConfigSync({
    ...tinyBase,
    model_type: "qwen2",
    rope_theta: 1000000,
    use_sliding_window: false,
    tie_word_embeddings: true,
  }),
  gemma2: decodeConfigSync({
    ...tinyBase,
    model_type: "gemma2",
    head_dim: 8,
    query_pre_attn_scalar: 6,
    sliding_window: 3,
    attn_logit_softcapping: 2,
    final_logit_softcapping: 3,
  }),
}

const cpuFused = Object.keys(makeCpuBackend().routines ?? {})
const bf16Cpu = layerOf(cpuWithBfloat16())
// bfloat16 keeps 8 bits: the loss to ~1e-3 here, the gradients to ~0.1 of each tensor's largest
// (measured 1.3e-3 and 0.14, Qwen2's k bias the worst); a wrong mask or cast is far off both.
const [BF16_LOSS, BF16_GRADS] = [1e-2, 0.25]

/** Random weights (std 0.3: large enough that soft-caps and windows matter), by HF name. */
function randomWeights(c: LlamaConfig, dtype: DType, seed: number): Record<string, HostArray> {
  return Object.fromEntries(
    Object.entries(parameterShapes(c)).map(([name, shape], i) => [
      name,
      randomArray(
        dtype,
        shape.reduce((a, b) => a * b, 1),
        seed * 1000 + i,
        { std: 0.3 },
      ),
    ]),
  )
}

/**
 * Logits [B, S, V] of tokens [B, S] fed in pieces of the given lengths, each piece reading the
 * previous piece's cache; on the reference CPU, or with `fused` on the CPU with its kernels.
 */
async function cachedLogits(
  c: LlamaConfig,
  dtype: DType,
  B: number,
  tokens: Int32Array,
  pieces: number[],
  weights: Record<string, HostArray>,
  fused?: readonly string[],
  attentionBlock = 64,
) {
  const S = tokens.length / B
  const V = c.vocab_size
  const out = new Float64Array(B * S * V)
  let cache: HostArray[] = []
  let past = 0
  for (const T of pieces) {
    const g = llamaForward(c, B, T, past, { dtype, attentionBlock, ...(fused ? { fused } : {}) })
    const piece = Int32Array.from({ length: B * T }, (_, i) => tokens[Math.floor(i / T) * S + past + (i % T)]!)
    const feeds = new Map<Tensor, Feed>([
      ...feedsOf(g.params, weights),
      [g.tokens, piece],
      ...g.cacheIn.flatMap(
        (l, i) =>
          [
            [l.k, cache[2 * i]!],
            [l.v, cache[2 * i + 1]!],
          ] as [Tensor, Feed][],
      ),
    ])
    const cacheTensors = g.cacheOut.flatMap((l) => [l.k, l.v])
    const layer = fused ? undefined : referenceCpu
    const { values } = await run([g.logits, ...cacheTensors], feeds, { layer })
    const logits = values[0]!
    for (let b = 0; b < B; b++) out.set(logits.subarray(b * T * V, (b + 1) * T * V), (b * S + past) * V)
    cache = values.slice(1)
    past += T
  }
  return out
}

describe("llamaForward with a KV cache", () => {
  for (const [name, c] of Object.entries(tinyConfigs)) {
    it(`${name}: float32 on the cpu-fast backend (its fused kernels) matches to 1e-5 in mst+checkpoint`, async () => {
      const g = await golden(name)
      const fused = Object.keys(fastCpu.routines ?? {})
      const opts = { mode: "mst+checkpoint", mlpChunks: 3, lmChunks: 4, fused } as const
      const got = await lossAndGrads(g, opts, "float32", fastCpuLayer)
      expect(Math.abs(got.loss - g.loss) / g.loss).toBeLessThan(1e-5)
      for (const [n, grad] of Object.entries(got.grads)) expect(maxRelDiff(grad, g.grads[n]!), n).toBeLessThan(1e-5)
    })

    it.skipIf(webgpu === undefined)(
      `${name}: float32 on WebGPU (its fused kernels where they apply, plain ops where not) matches to 2e-5`,
      async () => {
        const g = await golden(name)
        const gpu = webgpu!
        const opts = {
          mode: "mst+checkpoint",
          mlpChunks: 3,
          lmChunks: 4,
          fused: Object.keys(gpu.routines ?? {}),
        } as const
        const got = await lossAndGrads(g, opts, "float32", Layer.succeed(Backend, gpu as BackendImpl))
        expect(Math.abs(got.loss - g.loss) / g.loss).toBeLessThan(2e-5)
        for (const [n, grad] of Object.entries(got.grads)) expect(maxRelDiff(grad, g.grads[n]!), n).toBeLessThan(2e-5)
      },
    )

    it(`${name}: bfloat16 (emulated on the CPU) trains the same loss and gradients to bfloat16's precision`, async () => {
      const g = await golden(name)
      const opts = { mode: "mst+checkpoint", dtype: "bfloat16", mlpChunks: 3, lmChunks: 4 } as const
      const got = await lossAndGrads(g, opts, "float32", bf16Cpu)
      const errs = Object.entries(got.grads).map(([n, grad]) => maxRelDiff(grad, g.grads[n]!))
      expect(Math.abs(got.loss - g.loss) / g.loss).toBeLessThan(BF16_LOSS)
      expect(Math.max(...errs)).toBeLessThan(BF16_GRADS)
    })

    for (const dtype of ["float64", "float32"] as const) {
      it(`${name} (${dtype}): logits fed in cached pieces equal one uncached forward`, async () => {
        const [B, S] = [2, 9]
        const tokens = intArray(B * S, c.vocab_size, 7)
        const weights = randomWeights(c, dtype, 3)
        const whole = await cachedLogits(c, dtype, B, tokens, [S], weights)
        const pieces = await cachedLogits(c, dtype, B, tokens, [4, 1, 3, 1], weights)
        expect(maxRelDiff(whole, pieces)).toBeLessThan(dtype === "float64" ? 1e-12 : 1e-5)
        // key blocks of 2: with a window, whole blocks are hidden from some rows or skipped
        const blocked = await cachedLogits(c, dtype, B, tokens, [4, 1, 3, 1], weights, undefined, 2)
        expect(maxRelDiff(whole, blocked)).toBeLessThan(dtype === "float64" ? 1e-12 : 1e-5)
        if (dtype === "float32") {
          // with the CPU's fused kernels (fused attention for the uncached plain layers, fused RoPE, …)
          const fusedPieces = await cachedLogits(c, dtype, B, tokens, [4, 1, 3, 1], weights, cpuFused)
          expect(maxRelDiff(whole, fusedPieces)).toBeLessThan(1e-5)
        }
      })
    }
    it(`${name}: llamaLoss equals the cross-entropy of llamaForward's logits (float64, every mode)`, async () => {
      const S = 9
      const tokens = intArray(S, c.vocab_size, 11)
      const targets = Int32Array.from(intArray(S, c.vocab_size, 12), (t, i) => (i === 4 ? -100 : t))
      const weights = randomWeights(c, "float64", 5)
      const logits = await cachedLogits(c, "float64", 1, tokens, [S], weights)
      let sum = 0
      let count = 0
      for (let s = 0; s < S; s++) {
        if (targets[s] === -100) continue
        const row = logits.slice(s * c.vocab_size, (s + 1) * c.vocab_size)
        const m = Math.max(...row)
        const lse = m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0))
        sum += lse - row[targets[s]!]!
        count++
      }
      for (const mode of ["vanilla", "checkpoint", "mst", "mst+checkpoint"] as const) {
        const g = llamaLoss(c, 1, S, { mode, dtype: "float64", mlpChunks: 2, lmChunks: 4 })
        const feeds = new Map<Tensor, Feed>([
          ...feedsOf(g.params, weights),
          [g.tokens, tokens],
          [g.targets, targets],
          [g.count, new Float32Array([count])],
        ])
        const { values } = await run([g.loss], feeds, { layer: referenceCpu })
        expect(Math.abs(values[0]![0]! - sum / count) / (sum / count)).toBeLessThan(1e-12)
      }
    })
  }
})

const fastCpu = makeFastCpuBackend()
const fastCpuLayer = fastCpuBackendLayer(fastCpu)

describe("golden fixtures (scripts/golden/make_golden.py)", () => {
  it("cover every architecture", () => {
    expect(goldenNames.sort()).toEqual(["gemma2", "llama", "mistral", "qwen2"])
  })
  for (const name of goldenNames) {
    it(`${name}: parameter names and shapes are Hugging Face's, and RoPE's frequencies match`, async () => {
      const g = await golden(name)
      expect(g.generator.length).toBeGreaterThan(0)
      const shapes = parameterShapes(g.config)
      expect(Object.keys(shapes).sort()).toEqual(Object.keys(g.weights).sort())
      for (const [k, shape] of Object.entries(shapes))
        expect(g.weights[k]!.length).toBe(shape.reduce((a, b) => a * b, 1))
      expect(maxRelDiff(ropeInvFreq(g.config), g.invFreq)).toBeLessThan(1e-15)
      // transformers computes them in float32
      if (g.invFreqTransformers) expect(maxRelDiff(ropeInvFreq(g.config), g.invFreqTransformers)).toBeLessThan(1e-6)
    })

    it(`${name}: float64 logits on the CPU reference match to 1e-9`, async () => {
      const g = await golden(name)
      const f = llamaForward(g.config, g.B, g.S, 0, { dtype: "float64" })
      const feeds = new Map<Tensor, Feed>([...feedsOf(f.params, asDType(g.weights, "float64")), [f.tokens, g.tokens]])
      const { values } = await run([f.logits], feeds, { layer: referenceCpu })
      expect(maxRelDiff(values[0]!, g.logits)).toBeLessThan(1e-9)
    })

    for (const dtype of ["float64", "float32"] as const) {
      const tol = dtype === "float64" ? 1e-9 : 1e-5
      it(`${name}: ${dtype} loss and every gradient match to ${tol} in all four modes (M = 3 and 4, S = 11)`, async () => {
        const g = await golden(name)
        // key blocks of 4 (3 blocks for S = 11): rows whose window starts past a block, blocks skipped
        for (const [mode, attentionBlock] of [...modes.map((m) => [m, 64] as const), ["mst+checkpoint", 4] as const]) {
          // float64 on the reference CPU (every routine as its body); float32 with the CPU's fused kernels
          const fused = dtype === "float32" ? cpuFused : []
          const opts = { mode, dtype, mlpChunks: 3, lmChunks: 4, fused, attentionBlock }
          const got = await lossAndGrads(g, opts, dtype, dtype === "float64" ? referenceCpu : undefined)
          expect(Math.abs(got.loss - g.loss) / g.loss, `${mode} loss`).toBeLessThan(tol)
          for (const [n, grad] of Object.entries(got.grads))
            expect(maxRelDiff(grad, g.grads[n]!), `${mode} ${n}`).toBeLessThan(tol)
        }
      })
    }

    it(`${name}: the graph built for the GPU's fused routines, run as their bodies in float64, matches to 1e-9`, async () => {
      // What the CUDA backend runs, routine for routine (RoPE with a scaled table among them,
      // its backward the inverse rotation): here each routine is its reference body.
      const g = await golden(name)
      const opts = {
        mode: "mst+checkpoint",
        dtype: "float64",
        mlpChunks: 3,
        lmChunks: 4,
        fused: gpuFusedRoutines,
      } as const
      const got = await lossAndGrads(g, opts, "float64", referenceCpu)
      expect(Math.abs(got.loss - g.loss) / g.loss, "loss").toBeLessThan(1e-9)
      for (const [n, grad] of Object.entries(got.grads)) expect(maxRelDiff(grad, g.grads[n]!), n).toBeLessThan(1e-9)
    })
  }
})

// The same script run with transformers 5.17 itself (on the GPU machine): transformers' float64
// models still normalise in float32 (its RMSNorm casts to float32), so agreement is to float32's
// precision, not 1e-9. Gemma-2's tied embedding gradient there is the head's alone in row 0, its
// padding token (pad_token_id defaults to 0): the lookup sends no gradient to that row.
const transformersDir = goldenTransformersDir
describe("transformers' own numbers (fixtures/golden-transformers)", () => {
  for (const name of ["llama", "mistral", "qwen2", "gemma2"]) {
    it(`${name}: float64 loss, logits and gradients within 2e-6 of transformers 5.17`, async () => {
      const g = await golden(name, transformersDir)
      expect(g.generator).toMatch(/^transformers/)
      const f = llamaForward(g.config, g.B, g.S, 0, { dtype: "float64" })
      const fwd = new Map<Tensor, Feed>([...feedsOf(f.params, asDType(g.weights, "float64")), [f.tokens, g.tokens]])
      const logits = (await run([f.logits], fwd, { layer: referenceCpu })).values[0]!
      expect(maxRelDiff(logits, g.logits)).toBeLessThan(2e-6)
      const opts = { mode: "mst+checkpoint", dtype: "float64", mlpChunks: 3, lmChunks: 4 } as const
      const got = await lossAndGrads(g, opts, "float64", referenceCpu)
      expect(Math.abs(got.loss - g.loss) / g.loss).toBeLessThan(2e-6)
      if (name === "gemma2") expect(g.tokens.includes(0), "the batch holds the padding token").toBe(true)
      for (const [n, grad] of Object.entries(got.grads)) expect(maxRelDiff(grad, g.grads[n]!), n).toBeLessThan(2e-6)
    })
  }
})

/** The BadConfig a config is refused with. */
const refusal = (raw: unknown): BadConfig => Effect.runSync(Effect.flip(decodeConfig(raw)))

/** miniseq's float64 gradients (reference CPU, mst+checkpoint) of config `c` on `weights` and one batch. */
async function gradsOf(
  c: LlamaConfig,
  weights: Record<string, HostArray>,
  tokens: Int32Array,
  targets: Int32Array,
  B: number,
): Promise<Record<string, HostArray>> {
  const model = llamaLoss(c, B, tokens.length / B, { mode: "mst+checkpoint", dtype: "float64", mlpChunks: 3 })
  const names = Object.keys(model.params)
  const { grads } = valueAndGrad(model.loss, model.params)
  const feeds = new Map<Tensor, Feed>([
    ...feedsOf(model.params, weights),
    [model.tokens, tokens],
    [model.targets, targets],
    [model.count, new Float32Array([targets.length])],
  ])
  const { values } = await run(
    names.map((n) => grads[n]!),
    feeds,
    { layer: referenceCpu },
  )
  return Object.fromEntries(names.map((n, i) => [n, values[i]!]))
}

// PyTorch's nn.Embedding(padding_idx=p), which transformers builds from pad_token_id: the
// lookup sends row p no gradient; a tied head still does. Checked against the same model
// without a padding token (untied: every other tensor and row unchanged, row p exactly 0; tied:
// row p is the gradient an untied copy of the head gets there).
describe("the padding token's embedding row (pad_token_id)", () => {
  const [B, S, pad] = [2, 7, 5]
  const tokens = Int32Array.from({ length: B * S }, (_, i) => (i % 3 === 0 ? pad : (i * 7) % 29))
  const targets = Int32Array.from({ length: B * S }, (_, i) => (i * 11 + 3) % 29)
  const d = tinyBase.hidden_size
  const rows = (a: HostArray, from: number, to: number) => Array.from(a.subarray(from * d, to * d))
  it("untied: the lookup gives row p nothing, every other gradient is unchanged", async () => {
    const plain = decodeConfigSync({ ...tinyBase, model_type: "mistral", sliding_window: 3 })
    const padded = decodeConfigSync({ ...tinyBase, model_type: "mistral", sliding_window: 3, pad_token_id: pad })
    const w = asDType(randomWeights(plain, "float64", 7), "float64")
    const [a, b] = [await gradsOf(plain, w, tokens, targets, B), await gradsOf(padded, w, tokens, targets, B)]
    const E = "model.embed_tokens.weight"
    expect(rows(a[E]!, pad, pad + 1).some((v) => v !== 0)).toBe(true)
    expect(rows(b[E]!, pad, pad + 1).every((v) => v === 0)).toBe(true)
    expect(rows(b[E]!, 0, pad)).toEqual(rows(a[E]!, 0, pad))
    expect(rows(b[E]!, pad + 1, 29)).toEqual(rows(a[E]!, pad + 1, 29))
    for (const n of Object.keys(a)) if (n !== E) expect(maxRelDiff(b[n]!, a[n]!), n).toBe(0)
  })
  it("tied (Gemma-2's default pad 0): row p is the head's gradient alone", async () => {
    const tied = tinyConfigs.gemma2!
    expect(architecture(tied).padIndex).toBe(0)
    const untied = decodeConfigSync({ ...tied, tie_word_embeddings: false, pad_token_id: null })
    const w = asDType(randomWeights(tied, "float64", 8), "float64")
    const E = "model.embed_tokens.weight"
    const withHead = { ...w, "lm_head.weight": w[E]! }
    const ids = tokens.map((t) => (t === pad ? 0 : t))
    const [t, u] = [await gradsOf(tied, w, ids, targets, B), await gradsOf(untied, withHead, ids, targets, B)]
    const sum = u[E]!.map((v, i) => v + u["lm_head.weight"]![i]!)
    expect(maxRelDiff(t[E]!.subarray(d), sum.subarray(d))).toBeLessThan(1e-12)
    expect(maxRelDiff(t[E]!.subarray(0, d), u["lm_head.weight"]!.subarray(0, d))).toBeLessThan(1e-12)
    expect(maxRelDiff(t[E]!.subarray(0, d), sum.subarray(0, d))).toBeGreaterThan(1e-3)
  })
})

describe("configs are honoured or refused", () => {
  const base = { ...tinyBase }
  it("takes HF's defaults for missing optional fields", () => {
    const { num_key_value_heads: _kv, rms_norm_eps: _eps, max_position_embeddings: _max, ...bare } = base
    const llama = decodeConfigSync(bare)
    expect([llama.num_key_value_heads, llama.rms_norm_eps, llama.max_position_embeddings]).toEqual([4, 1e-6, 2048])
    const gemma = decodeConfigSync({ ...bare, model_type: "gemma2" })
    expect([gemma.head_dim, gemma.tie_word_embeddings, gemma.max_position_embeddings]).toEqual([256, true, 8192])
    const g = architecture(gemma)
    expect([g.activation, g.attnSoftcap, g.finalSoftcap, g.attnScale, g.embedScale]).toEqual([
      "gelu_tanh",
      50,
      30,
      1 / 16,
      4,
    ])
    expect(g.windows).toEqual([4096, 0])
    // the padding row: Gemma-2's default 0, null for none, negative from the end; others none
    expect(g.padIndex).toBe(0)
    expect(architecture(decodeConfigSync({ ...bare, model_type: "gemma2", pad_token_id: null })).padIndex).toBe(null)
    expect(architecture(decodeConfigSync({ ...bare, pad_token_id: -1 })).padIndex).toBe(28)
    expect(architecture(llama).padIndex).toBe(null)
    expect(architecture(decodeConfigSync({ ...bare, model_type: "mistral" })).windows).toEqual([4096, 4096])
    expect(architecture(decodeConfigSync({ ...bare, model_type: "mistral", sliding_window: null })).windows).toEqual([
      0, 0,
    ])
    // Qwen2: windows only with use_sliding_window, from layer max_window_layers on
    const qwen = { ...bare, model_type: "qwen2", num_hidden_layers: 3, sliding_window: 5 }
    expect(architecture(decodeConfigSync(qwen)).windows).toEqual([0, 0, 0])
    expect(architecture(decodeConfigSync({ ...qwen, use_sliding_window: true, max_window_layers: 1 })).windows).toEqual(
      [0, 5, 5],
    )
    expect(architecture(decodeConfigSync(qwen)).qkvBias).toBe(true)
    // newer configs spell the pattern out
    const typed = { ...qwen, layer_types: ["sliding_attention", "full_attention", "sliding_attention"] }
    expect(architecture(decodeConfigSync(typed)).windows).toEqual([5, 0, 5])
  })

  it("decodes the published Llama-3.2-1B config.json, honouring its llama3 RoPE scaling", () => {
    const published = {
      architectures: ["LlamaForCausalLM"],
      attention_bias: false,
      attention_dropout: 0.0,
      bos_token_id: 128000,
      eos_token_id: 128001,
      head_dim: 64,
      hidden_act: "silu",
      hidden_size: 2048,
      initializer_range: 0.02,
      intermediate_size: 8192,
      max_position_embeddings: 131072,
      mlp_bias: false,
      model_type: "llama",
      num_attention_heads: 32,
      num_hidden_layers: 16,
      num_key_value_heads: 8,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
      rope_scaling: {
        factor: 32.0,
        high_freq_factor: 4.0,
        low_freq_factor: 1.0,
        original_max_position_embeddings: 8192,
        rope_type: "llama3",
      },
      rope_theta: 500000.0,
      tie_word_embeddings: true,
      torch_dtype: "bfloat16",
      transformers_version: "4.45.0.dev0",
      use_cache: true,
      vocab_size: 128256,
    }
    const c = decodeConfigSync(published)
    expect(architecture(c).rope.type).toBe("llama3")
    expect(Effect.runSync(preset("llama-3.2-1b")).rope_scaling).toEqual(published.rope_scaling)
  })

  it("computes RoPE scaling's frequencies as the reference does (llama3, linear, none)", async () => {
    const { tensors, metadata } = await readSafetensors(join(goldenDir, "rope.safetensors"))
    expect(Object.keys(tensors).length).toBeGreaterThanOrEqual(4)
    for (const [name, t] of Object.entries(tensors)) {
      const config = JSON.parse(metadata[name]!) as Record<string, unknown>
      const c = decodeConfigSync({ ...base, num_attention_heads: 1, num_key_value_heads: 1, ...config })
      expect(maxRelDiff(ropeInvFreq(c), t.data), name).toBeLessThan(1e-15)
    }
  })

  it("reads transformers 5's rope_parameters as rope_theta and rope_scaling, and an unset None as absent", () => {
    const scaling = { factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }
    const old = decodeConfigSync({ ...base, rope_theta: 500000, rope_scaling: { rope_type: "llama3", ...scaling } })
    const v5 = decodeConfigSync({ ...base, rope_parameters: { rope_type: "llama3", rope_theta: 500000, ...scaling } })
    expect(v5.rope_theta).toBe(500000)
    expect(ropeInvFreq(v5)).toEqual(ropeInvFreq(old))
    expect(decodeConfigSync({ ...base, rope_parameters: { rope_type: "default", rope_theta: 1e6 } }).rope_theta).toBe(
      1e6,
    )
    const nulls = decodeConfigSync({ ...base, head_dim: null, num_key_value_heads: null, model_type: "mistral" })
    expect([nulls.head_dim, nulls.num_key_value_heads]).toEqual([undefined, 4])
  })

  it("refuses every field that would change the math and is not implemented, naming it", () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ model_type: "phi3" }, "model_type"],
      [{ rope_scaling: { rope_type: "yarn", factor: 4 } }, "rope_scaling.rope_type"],
      [{ rope_scaling: { type: "dynamic", factor: 2 } }, "rope_scaling.rope_type"],
      [{ rope_scaling: { rope_type: "linear" } }, "rope_scaling.factor"],
      [
        { rope_scaling: { rope_type: "llama3", factor: 8, high_freq_factor: 4, original_max_position_embeddings: 8 } },
        "rope_scaling.low_freq_factor",
      ],
      [{ hidden_act: "gelu" }, "hidden_act"],
      [{ model_type: "gemma2", hidden_activation: "relu" }, "hidden_activation"],
      [{ attention_dropout: 0.1 }, "attention_dropout"],
      [{ partial_rotary_factor: 0.5 }, "partial_rotary_factor"],
      [{ model_type: "qwen2", mlp_bias: true }, "mlp_bias"],
      [{ model_type: "mistral", attention_bias: true }, "attention_bias"],
      [{ sliding_window: 16 }, "sliding_window"],
      [{ attn_logit_softcapping: 50 }, "attn_logit_softcapping"],
      [{ model_type: "mistral", layer_types: ["full_attention", "chunked_attention"] }, "layer_types"],
      [{ model_type: "mistral", layer_types: ["full_attention"] }, "layer_types"],
      [{ num_key_value_heads: 3 }, "num_key_value_heads"],
      [{ pad_token_id: 29 }, "pad_token_id"],
      [{ pad_token_id: -30 }, "pad_token_id"],
      [{ rope_parameters: { full_attention: { rope_type: "default", rope_theta: 1e4 } } }, "rope_parameters"],
      [{ rope_theta: 1e4, rope_parameters: { rope_theta: 1e6 } }, "rope_parameters.rope_theta"],
      [{ rope_parameters: { rope_type: "yarn", factor: 4 } }, "rope_parameters.rope_type"],
    ]
    for (const [extra, field] of cases) {
      const e = refusal({ ...base, ...extra })
      expect(e, JSON.stringify(extra)).toBeInstanceOf(BadConfig)
      expect(e.field, JSON.stringify(extra)).toBe(field)
      expect(e.message).toContain(field)
    }
  })

  it("every preset decodes and resolves", () => {
    for (const name of presetNames) expect(() => architecture(Effect.runSync(preset(name)))).not.toThrow()
  })

  it("a fresh model starts as HF initialises it: norms at the identity, biases 0", () => {
    const qwen = initialParameters(tinyConfigs.qwen2!, 1)
    expect([...qwen["model.layers.0.self_attn.q_proj.bias"]!].every((v) => v === 0)).toBe(true)
    expect([...qwen["model.layers.0.input_layernorm.weight"]!].every((v) => v === 1)).toBe(true)
    const gemma = initialParameters(tinyConfigs.gemma2!, 1)
    for (const n of [
      "input_layernorm",
      "post_attention_layernorm",
      "pre_feedforward_layernorm",
      "post_feedforward_layernorm",
    ])
      expect(
        [...gemma[`model.layers.1.${n}.weight`]!].every((v) => v === 0),
        n,
      ).toBe(true) // (1 + w): the identity
    expect([...gemma["model.norm.weight"]!].every((v) => v === 0)).toBe(true)
    // nn.Embedding(padding_idx=0): the padding row starts at 0, the others do not
    const E = gemma["model.embed_tokens.weight"]!
    const d = tinyBase.hidden_size
    expect([...E.subarray(0, d)].every((v) => v === 0)).toBe(true)
    expect([...E.subarray(d, 2 * d)].some((v) => v !== 0)).toBe(true)
    expect([...qwen["model.embed_tokens.weight"]!.subarray(0, d)].some((v) => v !== 0)).toBe(true)
  })

  it("a backend that makes the normals itself zeroes the same padding row", async () => {
    const cpu = makeCpuBackend()
    const onDevice: BackendImpl = {
      ...cpu,
      randomNormal(out, seed, stream, std) {
        cpu.write(out, counterNormals(new Float32Array(out.size), seed, stream, std))
      },
    }
    const tokens = Int32Array.from({ length: 200 }, (_, i) => (i * 3) % 29)
    const model = tinyConfigs.gemma2!
    const opts = { model, mode: "vanilla" as const, batch: 1, seq: 8, steps: 1, lr: 1e-2, seed: 4 }
    const first = async (b: BackendImpl) =>
      (
        await Effect.runPromise(
          train(opts, makeBatches({ tokens, batch: 1, seq: 8, seed: 1 })).pipe(
            Effect.provide(Layer.succeed(Backend, b)),
          ),
        )
      ).records[0]!.loss
    expect(await first(onDevice)).toBe(await first(cpu))
  })

  it("Llama's attention_bias and mlp_bias add HF's bias parameters", () => {
    const c = decodeConfigSync({ ...base, attention_bias: true, mlp_bias: true })
    const names = Object.keys(parameterShapes(c))
    for (const n of ["q_proj", "k_proj", "v_proj", "o_proj"])
      expect(names).toContain(`model.layers.0.self_attn.${n}.bias`)
    for (const n of ["gate_proj", "up_proj", "down_proj"]) expect(names).toContain(`model.layers.1.mlp.${n}.bias`)
  })
})
