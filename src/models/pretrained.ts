/**
 * Reading a Hugging Face model folder, as `save_pretrained` writes it:
 *   config.json                      the model config (decoded by config.ts)
 *   model.safetensors                every weight, or
 *   model.safetensors.index.json     { weight_map: { tensor: shard file } } and the shard files
 * Weights may be BF16, F16 or F32 (widened to float32 exactly) or F64 (rounded to float32).
 * Every tensor is checked against the shapes the config implies; a missing, extra or misshapen
 * tensor is a BadCheckpoint naming it. Node only (node:fs).
 */
import { createHash } from "node:crypto"
import { readFile, stat } from "node:fs/promises"
import { dirname, join } from "node:path"
import { Effect } from "effect"
import { BadCheckpoint, BadConfig } from "../core/errors.js"
import { firstNonFinite } from "./checkpoint.js"
import { decodeConfig, type LlamaConfig } from "./config.js"
import { parameterShapes } from "./llama.js"
import { checkTensors, readSafetensors, type StoredTensor } from "./safetensors.js"
import { hfTokenizer, type Tokenizer } from "./tokenizer.js"

/** What `loadPretrained` returns: the decoded config, its raw JSON and the weights by HF name. */
export interface Pretrained {
  readonly dir: string
  readonly config: LlamaConfig
  /** config.json as written (fields miniseq does not model, such as `architectures`, stay here). */
  readonly rawConfig: Readonly<Record<string, unknown>>
  readonly parameters: Record<string, Float32Array>
  /** How many tensors each file dtype held, e.g. { BF16: 20 }. */
  readonly storedDtypes: Readonly<Record<string, number>>
  /** The safetensors files read (one, or the shards of the index). */
  readonly files: readonly string[]
}

/** Tensors HF writes that are not parameters: old Llama checkpoints saved RoPE's inverse frequencies. */
const isBuffer = (name: string): boolean => name.endsWith(".rotary_emb.inv_freq")

const errCode = (e: unknown): string | undefined => (e as { code?: unknown } | null)?.code as string | undefined
const exists = (path: string) =>
  stat(path).then(
    () => true,
    (e) => (errCode(e) === "ENOENT" ? false : Promise.reject(e)),
  )
const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v)

/** config.json of a model folder, parsed (decoding is `decodeConfig`'s). */
async function readConfigJson(dir: string): Promise<Record<string, unknown>> {
  const path = join(dir, "config.json")
  let text: string
  try {
    text = await readFile(path, "utf8")
  } catch (e) {
    const why = errCode(e) === "ENOENT" ? "does not exist" : `cannot be read (${String(e)})`
    throw new BadConfig({
      field: "config",
      message: `${path} ${why}: a Hugging Face model folder holds config.json beside its weights (save_pretrained writes both)`,
    })
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (e) {
    throw new BadConfig({
      field: "config",
      message: `${path} is not valid JSON (${e instanceof Error ? e.message : String(e)})`,
    })
  }
  if (!isPlainObject(raw)) throw new BadConfig({ field: "config", message: `${path} must hold a JSON object` })
  return raw
}

/** The shard files of an index and the tensors each must hold, checked against each other. */
async function readIndex(indexPath: string): Promise<Map<string, string[]>> {
  const fail = (message: string, tensor?: string): never => {
    throw new BadCheckpoint({
      path: indexPath,
      ...(tensor === undefined ? {} : { tensor }),
      message: `${indexPath}: ${message}`,
    })
  }
  let raw: unknown
  try {
    raw = JSON.parse(await readFile(indexPath, "utf8"))
  } catch (e) {
    return fail(`cannot be read as JSON (${e instanceof Error ? e.message : String(e)})`)
  }
  const map = isPlainObject(raw) ? raw["weight_map"] : undefined
  if (!isPlainObject(map)) return fail(`has no "weight_map" object ({ "tensor name": "shard file" })`)
  const shards = new Map<string, string[]>()
  for (const [tensor, file] of Object.entries(map)) {
    // A shard is a file in this folder: no other folder may be reached through the index.
    if (typeof file !== "string" || file === "" || /[/\\]/.test(file) || file === "." || file === "..")
      fail(
        `weight_map gives tensor "${tensor}" the file ${JSON.stringify(file)}; it must name a file in this folder`,
        tensor,
      )
    shards.set(file as string, [...(shards.get(file as string) ?? []), tensor])
  }
  return shards
}

/** Every tensor of the folder's safetensors files, by name, with the file each came from. */
async function readWeights(dir: string): Promise<{ tensors: Map<string, [StoredTensor, string]>; files: string[] }> {
  const indexPath = join(dir, "model.safetensors.index.json")
  const single = join(dir, "model.safetensors")
  const tensors = new Map<string, [StoredTensor, string]>()
  if (!(await exists(indexPath))) {
    if (!(await exists(single)))
      throw new BadCheckpoint({
        path: dir,
        message: `${dir}: holds neither model.safetensors nor model.safetensors.index.json; save the model with save_pretrained(dir, safe_serialization=True)`,
      })
    const file = await readSafetensors(single)
    for (const [n, t] of Object.entries(file.tensors)) tensors.set(n, [t, single])
    return { tensors, files: [single] }
  }
  const shards = await readIndex(indexPath)
  const files: string[] = []
  for (const [shard, names] of [...shards].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const path = join(dir, shard)
    const file = await readSafetensors(path)
    files.push(path)
    const listed = new Set(names)
    for (const n of names.sort()) {
      if (!Object.hasOwn(file.tensors, n))
        throw new BadCheckpoint({
          path,
          tensor: n,
          message: `${path}: tensor "${n}" is missing, although ${indexPath} places it in this shard`,
        })
    }
    for (const [n, t] of Object.entries(file.tensors)) {
      if (!listed.has(n))
        throw new BadCheckpoint({
          path,
          tensor: n,
          message: `${path}: holds tensor "${n}", which ${indexPath} does not place in this shard; the index and the shards disagree`,
        })
      tensors.set(n, [t, path])
    }
  }
  return { tensors, files }
}

/** A weight as float32: F32 as it is, BF16/F16 already widened, F64 rounded; integers refused. */
function asFloat32(name: string, t: StoredTensor, path: string): Float32Array {
  if (t.data instanceof Float32Array) return t.data
  if (t.data instanceof Float64Array) return Float32Array.from(t.data)
  throw new BadCheckpoint({
    path,
    tensor: name,
    message: `${path}: tensor "${name}" is ${t.dtype}; weights must be floating point (BF16, F16, F32 or F64)`,
  })
}

/**
 * Loads a Hugging Face model folder: config.json, then model.safetensors or the shards of
 * model.safetensors.index.json. With `tie_word_embeddings`, an `lm_head.weight` in the files
 * (some writers keep it) must equal the embedding and is dropped. Fails with BadConfig (the
 * config) or BadCheckpoint (a file, naming the tensor at fault).
 */
export function loadPretrained(dir: string): Effect.Effect<Pretrained, BadConfig | BadCheckpoint> {
  return Effect.gen(function* () {
    const { config, rawConfig } = yield* readPretrainedConfig(dir)
    return yield* Effect.tryPromise({ try: () => readParameters(dir, rawConfig, config), catch: failure(dir) })
  })
}

const failure = (dir: string) => (e: unknown) =>
  e instanceof BadCheckpoint || e instanceof BadConfig
    ? e
    : new BadCheckpoint({ path: dir, message: `${dir}: cannot read the model (${String(e)})` })

/** A model folder's config.json alone, decoded (no weights read): what `loadPretrained` starts with. */
export function readPretrainedConfig(
  dir: string,
): Effect.Effect<{ config: LlamaConfig; rawConfig: Record<string, unknown> }, BadConfig | BadCheckpoint> {
  return Effect.gen(function* () {
    const rawConfig = yield* Effect.tryPromise({ try: () => readConfigJson(dir), catch: failure(dir) })
    const config = yield* decodeConfig(rawConfig).pipe(
      Effect.mapError((e) => new BadConfig({ field: e.field, message: `${join(dir, "config.json")}: ${e.message}` })),
    )
    return { config, rawConfig }
  })
}

/** The weights of the folder, as float32, checked against the config's shapes. */
async function readParameters(dir: string, raw: Record<string, unknown>, config: LlamaConfig): Promise<Pretrained> {
  const { tensors, files } = await readWeights(dir)
  const parameters: Record<string, Float32Array> = {}
  const loaded: Record<string, StoredTensor> = {}
  const storedDtypes: Record<string, number> = {}
  const fileOf: Record<string, string> = {}
  for (const [name, [t, path]] of [...tensors].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (isBuffer(name)) continue
    const data = asFloat32(name, t, path)
    const tag = t.storedAs ?? { float32: "F32", float64: "F64", int32: "I32", bfloat16: "BF16" }[t.dtype]
    storedDtypes[tag] = (storedDtypes[tag] ?? 0) + 1
    parameters[name] = data
    loaded[name] = { dtype: "float32", shape: t.shape, data }
    fileOf[name] = path
  }
  const head = "lm_head.weight",
    embed = "model.embed_tokens.weight"
  if (config.tie_word_embeddings && Object.hasOwn(parameters, head)) {
    const a = parameters[head]!,
      b = parameters[embed]
    const same = b !== undefined && a.length === b.length && a.every((x, i) => Object.is(x, b[i]))
    if (!same)
      throw new BadCheckpoint({
        path: fileOf[head]!,
        tensor: head,
        message: `${fileOf[head]}: tensor "${head}" differs from "${embed}" although config.json sets tie_word_embeddings: true; set it to false to keep a separate head`,
      })
    delete parameters[head]
    delete loaded[head]
  }
  const expected = Object.fromEntries(
    Object.entries(parameterShapes(config)).map(([n, shape]) => [n, { dtype: "float32" as const, shape }]),
  )
  // Each problem is named with the file its tensor is in (the folder, for a tensor no file has).
  for (const n of Object.keys(expected).sort())
    if (Object.hasOwn(loaded, n)) checkTensors({ [n]: loaded[n]! }, { [n]: expected[n]! }, fileOf[n]!)
  for (const n of Object.keys(loaded).sort())
    if (!Object.hasOwn(expected, n)) checkTensors({ [n]: loaded[n]! }, {}, fileOf[n]!)
  checkTensors(loaded, expected, dir)
  const bad = firstNonFinite(parameters)
  if (bad !== undefined)
    throw new BadCheckpoint({
      path: fileOf[bad.name]!,
      tensor: bad.name,
      message: `${fileOf[bad.name]}: tensor "${bad.name}" holds ${bad.value} at element ${bad.index}; a model to train from must be finite`,
    })
  return { dir, config, rawConfig: raw, parameters, storedDtypes, files }
}

/** A tokenizer read from a file, and the SHA-256 of that file (a resume must use the same one). */
export interface TokenizerFile {
  readonly tokenizer: Tokenizer
  readonly sha256: string
}

/**
 * Reads a Hugging Face tokenizer.json and the tokenizer_config.json beside it (where BOS and EOS
 * are named; without it the tokenizer has neither). Fails with BadConfig naming the file.
 */
export function readTokenizerFile(path: string): Effect.Effect<TokenizerFile, BadConfig> {
  return Effect.tryPromise({
    try: async () => {
      let bytes: Buffer
      try {
        bytes = await readFile(path)
      } catch (e) {
        const why = errCode(e) === "ENOENT" ? "does not exist" : `cannot be read (${String(e)})`
        throw new BadConfig({
          field: "tokenizer",
          message: `${path} ${why}; --tokenizer takes byte, cl100k_base or the path of a Hugging Face tokenizer.json`,
        })
      }
      const parse = (text: string, file: string): unknown => {
        try {
          return JSON.parse(text)
        } catch (e) {
          throw new BadConfig({
            field: "tokenizer",
            message: `${file} is not valid JSON (${e instanceof Error ? e.message : String(e)})`,
          })
        }
      }
      const configPath = join(dirname(path), "tokenizer_config.json")
      const configText = await readFile(configPath, "utf8").catch((e) =>
        errCode(e) === "ENOENT" ? undefined : Promise.reject(e),
      )
      const config = configText === undefined ? {} : parse(configText, configPath)
      const tokenizer = hfTokenizer(parse(bytes.toString("utf8"), path), config, path)
      return { tokenizer, sha256: createHash("sha256").update(bytes).digest("hex") }
    },
    catch: (e) =>
      e instanceof BadConfig ? e : new BadConfig({ field: "tokenizer", message: `${path}: ${String(e)}` }),
  })
}
