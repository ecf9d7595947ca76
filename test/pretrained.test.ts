// Hugging Face model folders: BF16/F16 decoded exactly (against the closed form of every bit
// pattern), single-file and sharded folders built by hand from the spec, a folder PyTorch wrote,
// every tensor checked against the config's shapes, and miniseq's own checkpoints read back.
import { readFileSync } from "node:fs"
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Cause, Effect, Exit } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { cpuBackendLayer } from "../src/backends/cpu/index.js"
import type { HostArray } from "../src/core/dtype.js"
import { BadCheckpoint, BadConfig } from "../src/core/errors.js"
import { evaluate } from "../src/core/executor.js"
import type { Tensor } from "../src/core/graph.js"
import { hfConfigJson, loadCheckpoint, saveCheckpoint } from "../src/models/checkpoint.js"
import { decodeConfigSync } from "../src/models/config.js"
import { llamaForward, parameterShapes } from "../src/models/llama.js"
import { loadPretrained } from "../src/models/pretrained.js"
import { widenHalf } from "../src/models/safetensors.js"

const dirs: string[] = []
const tempDir = async () => {
  const d = await mkdtemp(join(tmpdir(), "miniseq-hf-"))
  dirs.push(d)
  return d
}
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})

// ---------------------------------------------------------------------------------------------
// 16-bit floats, against their definitions

/** The value a 16-bit pattern means, from the format's definition, in float64. */
function halfValue(h: number, expBits: number, fracBits: number): number {
  const bias = 2 ** (expBits - 1) - 1
  const sign = h >> (expBits + fracBits) ? -1 : 1
  const exp = (h >> fracBits) & (2 ** expBits - 1)
  const frac = h & (2 ** fracBits - 1)
  if (exp === 2 ** expBits - 1) return frac === 0 ? sign * Infinity : NaN
  if (exp === 0) return sign * frac * 2 ** (1 - bias - fracBits) // subnormal (and ±0)
  return sign * (1 + frac / 2 ** fracBits) * 2 ** (exp - bias)
}

describe("BF16 and F16 widen to float32 exactly", () => {
  const every = new Uint8Array(2 * 65536)
  for (let h = 0; h < 65536; h++) {
    every[2 * h] = h & 0xff
    every[2 * h + 1] = h >> 8
  }
  for (const [tag, expBits, fracBits] of [
    ["BF16", 8, 7],
    ["F16", 5, 10],
  ] as const) {
    it(`${tag}: all 65 536 bit patterns equal the format's closed form (signed zeros, subnormals, infinities, NaN)`, () => {
      const got = widenHalf(every, tag)
      for (let h = 0; h < 65536; h++) {
        const want = halfValue(h, expBits, fracBits)
        if (Number.isNaN(want)) expect(Number.isNaN(got[h]!), `0x${h.toString(16)}`).toBe(true)
        else if (!Object.is(got[h]!, want)) expect(got[h], `0x${h.toString(16)}`).toBe(want)
      }
    })
  }
})

// ---------------------------------------------------------------------------------------------
// Folders built by hand

const tinyConfig = {
  model_type: "llama",
  architectures: ["LlamaForCausalLM"],
  hidden_size: 8,
  intermediate_size: 12,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  vocab_size: 16,
  max_position_embeddings: 32,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
}

/** Small multiples of 1/64: exact in BF16 and F16 alike, so a test knows every value. */
const knownValues = (name: string, n: number) =>
  Float64Array.from({ length: n }, (_, i) => (((i * 7 + name.length * 3) % 41) - 20) / 64)

/** float64 values (exactly representable) → the 2-byte patterns of `tag`, little-endian. */
function halfBytes(values: Float64Array, tag: "BF16" | "F16"): Uint8Array {
  const out = new Uint8Array(values.length * 2)
  const f = new Float32Array(1)
  const u = new Uint32Array(f.buffer)
  for (const [i, x] of values.entries()) {
    f[0] = x
    let h: number
    if (tag === "BF16") h = u[0]! >>> 16
    else {
      // Normal numbers only (the test values are): sign, exponent rebiased 127 → 15, top 10 fraction bits.
      const bits = u[0]!
      const exp = (bits >>> 23) & 0xff
      h = x === 0 ? (bits >>> 16) & 0x8000 : ((bits >>> 16) & 0x8000) | ((exp - 112) << 10) | ((bits >>> 13) & 0x3ff)
    }
    out[2 * i] = h & 0xff
    out[2 * i + 1] = h >> 8
  }
  return out
}

/** A safetensors file assembled by hand: header JSON, then each tensor's bytes in the order given. */
function safetensorsFile(tensors: [name: string, tag: string, shape: number[], bytes: Uint8Array][]): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } }
  let offset = 0
  for (const [name, tag, shape, bytes] of tensors) {
    header[name] = { dtype: tag, shape, data_offsets: [offset, offset + bytes.length] }
    offset += bytes.length
  }
  const json = new TextEncoder().encode(JSON.stringify(header))
  const out = new Uint8Array(8 + json.length + offset)
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true)
  out.set(json, 8)
  let at = 8 + json.length
  for (const [, , , bytes] of tensors) {
    out.set(bytes, at)
    at += bytes.length
  }
  return out
}

const shapesOf = (raw: object) => parameterShapes(decodeConfigSync(raw))
const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1)
const entries = (raw: object, tag: "BF16" | "F16", skip: string[] = []) =>
  Object.entries(shapesOf(raw))
    .filter(([n]) => !skip.includes(n))
    .map(([n, shape]): [string, string, number[], Uint8Array] => [
      n,
      tag,
      shape,
      halfBytes(knownValues(n, size(shape)), tag),
    ])

async function folder(config: object, files: Record<string, Uint8Array | string>): Promise<string> {
  const dir = await tempDir()
  await writeFile(join(dir, "config.json"), JSON.stringify(config))
  for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content)
  return dir
}

const failureOf = async (effect: Effect.Effect<unknown, unknown>) => {
  const exit = await Effect.runPromiseExit(effect)
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  return Cause.squash(exit.cause) as BadCheckpoint | BadConfig
}

describe("loadPretrained", () => {
  it("one BF16 file, tied head: the config decoded and every weight exact", async () => {
    const dir = await folder(tinyConfig, { "model.safetensors": safetensorsFile(entries(tinyConfig, "BF16")) })
    const p = await Effect.runPromise(loadPretrained(dir))
    expect(p.config.hidden_size).toBe(8)
    expect(p.rawConfig["architectures"]).toEqual(["LlamaForCausalLM"])
    expect(p.storedDtypes).toEqual({ BF16: 11 })
    expect(Object.keys(p.parameters).sort()).toEqual(Object.keys(shapesOf(tinyConfig)).sort())
    expect(p.parameters["lm_head.weight"]).toBeUndefined()
    for (const [n, data] of Object.entries(p.parameters))
      expect(Array.from(data), n).toEqual(Array.from(knownValues(n, data.length)))
  })

  it("sharded: an F16 shard and a BF16 shard through model.safetensors.index.json, untied head", async () => {
    const config = { ...tinyConfig, tie_word_embeddings: false }
    const all = [...entries(config, "F16")]
    const first = all.filter(([n]) => n.startsWith("model.layers.0.self_attn"))
    const rest = entries(
      config,
      "BF16",
      first.map(([n]) => n),
    )
    const weight_map = Object.fromEntries([
      ...first.map(([n]) => [n, "model-00001-of-00002.safetensors"]),
      ...rest.map(([n]) => [n, "model-00002-of-00002.safetensors"]),
    ])
    const dir = await folder(config, {
      "model-00001-of-00002.safetensors": safetensorsFile(first),
      "model-00002-of-00002.safetensors": safetensorsFile(rest),
      "model.safetensors.index.json": JSON.stringify({ metadata: { total_size: 0 }, weight_map }),
    })
    const p = await Effect.runPromise(loadPretrained(dir))
    expect(p.files.map((f) => f.slice(dir.length + 1))).toEqual([
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
    ])
    expect(p.storedDtypes).toEqual({ F16: 4, BF16: 8 })
    expect(p.parameters["lm_head.weight"]!.length).toBe(16 * 8)
    for (const [n, data] of Object.entries(p.parameters))
      expect(Array.from(data), n).toEqual(Array.from(knownValues(n, data.length)))
  })

  it("a tied head that a writer kept is dropped when it equals the embedding, refused when it differs", async () => {
    const embed = knownValues("model.embed_tokens.weight", 128)
    const same: [string, string, number[], Uint8Array] = ["lm_head.weight", "BF16", [16, 8], halfBytes(embed, "BF16")]
    const ok = await folder(tinyConfig, {
      "model.safetensors": safetensorsFile([...entries(tinyConfig, "BF16"), same]),
    })
    expect((await Effect.runPromise(loadPretrained(ok))).parameters["lm_head.weight"]).toBeUndefined()
    const other = embed.map((x) => -x)
    const bad = await folder(tinyConfig, {
      "model.safetensors": safetensorsFile([
        ...entries(tinyConfig, "BF16"),
        ["lm_head.weight", "BF16", [16, 8], halfBytes(other, "BF16")],
      ]),
    })
    const e = await failureOf(loadPretrained(bad))
    expect(e).toBeInstanceOf(BadCheckpoint)
    expect((e as BadCheckpoint).tensor).toBe("lm_head.weight")
    expect(e.message).toMatch(/differs from "model\.embed_tokens\.weight".*tie_word_embeddings/)
  })

  it("missing, extra and misshapen tensors are BadCheckpoint naming the tensor (and its file)", async () => {
    const missing = await folder(tinyConfig, {
      "model.safetensors": safetensorsFile(entries(tinyConfig, "BF16", ["model.layers.0.mlp.up_proj.weight"])),
    })
    let e = (await failureOf(loadPretrained(missing))) as BadCheckpoint
    expect([e._tag, e.tensor]).toEqual(["BadCheckpoint", "model.layers.0.mlp.up_proj.weight"])
    expect(e.message).toMatch(/is missing from the checkpoint \(model expects float32 \[12, 8\]\)/)

    const extra = await folder(tinyConfig, {
      "model.safetensors": safetensorsFile([
        ...entries(tinyConfig, "BF16"),
        ["model.layers.0.self_attn.q_proj.bias", "BF16", [8], halfBytes(knownValues("b", 8), "BF16")],
      ]),
    })
    e = (await failureOf(loadPretrained(extra))) as BadCheckpoint
    expect(e.tensor).toBe("model.layers.0.self_attn.q_proj.bias")
    expect(e.path).toBe(join(extra, "model.safetensors"))
    expect(e.message).toMatch(/model has no such tensor/)

    const wrong = entries(tinyConfig, "BF16").map(([n, t, s, b]): [string, string, number[], Uint8Array] =>
      n === "model.layers.0.mlp.down_proj.weight" ? [n, t, [12, 8], b] : [n, t, s, b],
    )
    const misshapen = await folder(tinyConfig, { "model.safetensors": safetensorsFile(wrong) })
    e = (await failureOf(loadPretrained(misshapen))) as BadCheckpoint
    expect(e.tensor).toBe("model.layers.0.mlp.down_proj.weight")
    expect(e.message).toMatch(/has shape \[12, 8\] in the checkpoint but the model expects \[8, 12\]/)
  })

  it("architectures with more tensors: a Qwen2 folder needs its q/k/v biases, and names one that is missing", async () => {
    const qwen = { ...tinyConfig, model_type: "qwen2", architectures: ["Qwen2ForCausalLM"] }
    expect(Object.keys(shapesOf(qwen))).toContain("model.layers.0.self_attn.q_proj.bias")
    const ok = await folder(qwen, { "model.safetensors": safetensorsFile(entries(qwen, "BF16")) })
    const p = await Effect.runPromise(loadPretrained(ok))
    expect(p.config.model_type).toBe("qwen2")
    const bias = "model.layers.0.self_attn.k_proj.bias"
    expect(Array.from(p.parameters[bias]!)).toEqual(Array.from(knownValues(bias, 4)))
    const lacking = await folder(qwen, { "model.safetensors": safetensorsFile(entries(qwen, "BF16", [bias])) })
    const e = (await failureOf(loadPretrained(lacking))) as BadCheckpoint
    expect([e._tag, e.tensor]).toEqual(["BadCheckpoint", bias])
  })

  it("an index and its shards that disagree, and a shard outside the folder, are refused", async () => {
    const all = entries(tinyConfig, "BF16")
    const map = (file: string) => Object.fromEntries(all.map(([n]) => [n, file]))
    const lying = { ...map("a.safetensors"), "model.norm.weight": "b.safetensors" }
    const dir = await folder(tinyConfig, {
      "a.safetensors": safetensorsFile(all),
      "b.safetensors": safetensorsFile([]),
      "model.safetensors.index.json": JSON.stringify({ weight_map: lying }),
    })
    let e = (await failureOf(loadPretrained(dir))) as BadCheckpoint
    expect(e.tensor).toBe("model.norm.weight")
    expect(e.message).toMatch(
      /a\.safetensors: holds tensor "model\.norm\.weight", which .* does not place in this shard/,
    )

    const outside = await folder(tinyConfig, {
      "model.safetensors.index.json": JSON.stringify({ weight_map: map("../x.safetensors") }),
    })
    e = (await failureOf(loadPretrained(outside))) as BadCheckpoint
    expect(e.message).toMatch(/must name a file in this folder/)
  })

  it("no weights, no config, a config that does not decode: typed errors naming the fix", async () => {
    const empty = await folder(tinyConfig, {})
    expect((await failureOf(loadPretrained(empty))).message).toMatch(
      /holds neither model\.safetensors nor model\.safetensors\.index\.json/,
    )
    const noConfig = await tempDir()
    const e = await failureOf(loadPretrained(noConfig))
    expect(e).toBeInstanceOf(BadConfig)
    expect(e.message).toMatch(/config\.json does not exist/)
    const broken = await folder({ ...tinyConfig, hidden_size: "wide" }, {})
    const b = await failureOf(loadPretrained(broken))
    expect(b).toBeInstanceOf(BadConfig)
    expect(b.message).toMatch(/config\.json: bad model config/)
  })
})

// ---------------------------------------------------------------------------------------------
// A folder PyTorch wrote (scripts/fixtures/make_torch_checkpoint.py)

describe("a folder saved with PyTorch", () => {
  const dir = join(import.meta.dirname, "fixtures", "hf-tiny-torch")
  const expected = JSON.parse(readFileSync(join(dir, "expected.json"), "utf8")) as {
    tokens: number[]
    logits: number[]
    weights: Record<string, number[]>
  }

  it("loads every BF16 weight of both shards as PyTorch reads it", async () => {
    const p = await Effect.runPromise(loadPretrained(dir))
    expect(p.storedDtypes).toEqual({ BF16: Object.keys(expected.weights).length })
    expect(Object.keys(p.parameters).sort()).toEqual(Object.keys(expected.weights).sort())
    for (const [n, values] of Object.entries(expected.weights)) expect(Array.from(p.parameters[n]!), n).toEqual(values)
  })

  it("its logits in float64 equal the plain-PyTorch float64 Llama's (≤ 1e-12 of the largest)", async () => {
    const p = await Effect.runPromise(loadPretrained(dir))
    const T = expected.tokens.length
    const g = llamaForward(p.config, 1, T, 0, { dtype: "float64" })
    const feeds = new Map<Tensor, HostArray>(
      Object.entries(g.params).map(([n, t]) => [t, Float64Array.from(p.parameters[n]!)]),
    )
    feeds.set(g.tokens, Int32Array.from(expected.tokens))
    const [logits] = (await Effect.runPromise(evaluate([g.logits], feeds).pipe(Effect.provide(cpuBackendLayer()))))
      .values
    const scale = Math.max(...expected.logits.map(Math.abs))
    const worst = Math.max(...expected.logits.map((x, i) => Math.abs(x - logits![i]!)))
    expect(logits!.length).toBe(expected.logits.length)
    expect(worst / scale).toBeLessThan(1e-12)
  })
})

// ---------------------------------------------------------------------------------------------
// miniseq's checkpoints are Hugging Face folders

describe("checkpoint folders hold config.json", () => {
  const config = decodeConfigSync({ ...tinyConfig, tie_word_embeddings: false })
  const shapes = parameterShapes(config)
  const parameters = Object.fromEntries(
    Object.entries(shapes).map(([n, s]) => [n, Float32Array.from(knownValues(n, size(s)))]),
  )
  const zeros = Object.fromEntries(Object.entries(parameters).map(([n, a]) => [n, new Float32Array(a.length)]))
  const state = { step: 3, run: { seed: 1 }, model: config, parameters, m: zeros, v: zeros }

  it("with model_type, architectures and torch_dtype, and loadPretrained reads the folder back exactly", async () => {
    const path = await Effect.runPromise(saveCheckpoint(await tempDir(), state, shapes))
    const written = JSON.parse(await readFile(join(path, "config.json"), "utf8"))
    expect(written).toMatchObject({
      model_type: "llama",
      architectures: ["LlamaForCausalLM"],
      torch_dtype: "float32",
      hidden_size: 8,
      tie_word_embeddings: false,
    })
    const back = await Effect.runPromise(loadPretrained(path))
    expect(back.config).toEqual(config)
    expect(back.storedDtypes).toEqual({ F32: Object.keys(shapes).length })
    for (const [n, a] of Object.entries(parameters)) expect(back.parameters[n], n).toEqual(a)
  })

  it("names the architecture of another model_type, and keeps architectures a config gives", () => {
    expect(hfConfigJson({ model_type: "qwen2" })["architectures"]).toEqual(["Qwen2ForCausalLM"])
    expect(hfConfigJson({ model_type: "gemma2", architectures: ["X"] })["architectures"]).toEqual(["X"])
    expect(hfConfigJson({ hidden_size: 8 })).toEqual({
      architectures: ["LlamaForCausalLM"],
      model_type: "llama",
      hidden_size: 8,
      torch_dtype: "float32",
    })
  })

  it("a config.json altered after the save is a BadCheckpoint on resume", async () => {
    const path = await Effect.runPromise(saveCheckpoint(await tempDir(), state, shapes))
    const file = join(path, "config.json")
    await writeFile(file, (await readFile(file, "utf8")).replace('"hidden_size": 8', '"hidden_size": 9'))
    const e = await failureOf(loadCheckpoint(path, shapes))
    expect(e).toBeInstanceOf(BadCheckpoint)
    expect(e.message).toMatch(/config\.json: does not match the model config in trainer_state\.json/)
  })
})
