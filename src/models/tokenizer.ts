/**
 * Tokenizers: text ⇄ integer ids for the model's embedding table.
 *
 * - `byteTokenizer`: the UTF-8 bytes themselves (vocab 256). No files, never fails, but long sequences.
 * - `bpeTokenizer("cl100k_base")`: OpenAI's byte-pair encoding (the GPT-4 one) via js-tiktoken,
 *   roughly 4 characters per token on English. Its ranks ship inside the npm package: nothing is
 *   downloaded at run time.
 * - `hfTokenizer(tokenizer.json, tokenizer_config.json)`: any Hugging Face tokenizer, through
 *   `@huggingface/tokenizers` (pure JavaScript, no native code, works offline), with BOS and EOS
 *   as its config says.
 */
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers"
import { Tiktoken, type TiktokenBPE } from "js-tiktoken/lite"
import { BadConfig } from "../core/errors.js"
// Importing one ranks file (not the package root) loads only cl100k, not every encoding.
import cl100kRanks from "js-tiktoken/ranks/cl100k_base"

/** Text ⇄ token ids. */
export interface Tokenizer {
  readonly name: string
  /** Size of the id space: every id `encode` returns is in [0, vocabSize). Use it as the embedding table's row count. */
  readonly vocabSize: number
  /** The text's ids, with no special tokens added. */
  encode(text: string): Int32Array
  decode(ids: ArrayLike<number>): string
  /** The id that starts a sequence, where the tokenizer's config puts one there (`addBos`). */
  readonly bos?: number
  /** The id that ends a document: between documents in training data, and where generation stops. */
  readonly eos?: number
  /** The EOS token's text, e.g. "</s>": a corpus is split into documents where it occurs. */
  readonly eosText?: string
  /** Whether a sequence starts with `bos` (tokenizer_config.json's add_bos_token, else the post-processor's template). */
  readonly addBos?: boolean
}

/** The tokenizers `makeTokenizer` knows. */
export type TokenizerName = "byte" | "cl100k_base"

function checkIds(name: string, ids: ArrayLike<number>, vocabSize: number): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new RangeError(`${name}.decode: id ${id} at position ${i} is not an integer in [0, ${vocabSize})`)
    }
  }
}

const utf8Encoder = new TextEncoder()
// fatal: false turns invalid byte sequences (e.g. a sampled model's half of a multi-byte char) into U+FFFD
// instead of throwing; ignoreBOM keeps a leading U+FEFF, so encode/decode round-trips every string.
const utf8Decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true })

/** The UTF-8 bytes as tokens (vocabulary 256): no files, never fails. */
export const byteTokenizer: Tokenizer = {
  name: "byte",
  vocabSize: 256,
  encode: (text) => Int32Array.from(utf8Encoder.encode(text)),
  decode(ids) {
    checkIds("byte", ids, 256)
    return utf8Decoder.decode(Uint8Array.from(ids))
  },
}

/**
 * The id space of a tiktoken encoding: one past the largest id, BPE or special.
 * For cl100k_base that is 100277: ranks 0..100255, specials up to <|endofprompt|> = 100276
 * (ids 100261..100275 are unused, as in OpenAI's own `n_vocab`).
 */
function vocabSizeOf(bpe: TiktokenBPE): number {
  let maxId = -1
  // js-tiktoken packs ranks as lines "<prefix> <first id> <base64 token> <base64 token> ...", ids consecutive.
  for (const line of bpe.bpe_ranks.split("\n")) {
    const fields = line.split(" ")
    if (fields.length < 3) continue
    const firstId = Number.parseInt(fields[1]!, 10)
    maxId = Math.max(maxId, firstId + (fields.length - 2) - 1)
  }
  for (const id of Object.values(bpe.special_tokens)) maxId = Math.max(maxId, id)
  return maxId + 1
}

const bpeRanks: Record<"cl100k_base", TiktokenBPE> = { cl100k_base: cl100kRanks }
// Building the rank tables takes ~0.25 s, so do it once per encoding, on first use.
const bpeCache = new Map<string, Tokenizer>()

/** OpenAI's cl100k_base byte-pair encoding (100 277 ids), from the ranks js-tiktoken ships. */
export function bpeTokenizer(name: "cl100k_base"): Tokenizer {
  const cached = bpeCache.get(name)
  if (cached) return cached
  const ranks = bpeRanks[name]
  if (!ranks)
    throw new Error(`bpeTokenizer: unknown encoding "${String(name)}"; available: ${Object.keys(bpeRanks).join(", ")}`)
  const tiktoken = new Tiktoken(ranks)
  const vocabSize = vocabSizeOf(ranks)
  const tokenizer: Tokenizer = {
    name,
    vocabSize,
    // allowedSpecial = disallowedSpecial = []: text such as "<|endoftext|>" is encoded as ordinary
    // characters rather than throwing or becoming a control token, so any text round-trips.
    encode: (text) => Int32Array.from(tiktoken.encode(text, [], [])),
    decode(ids) {
      checkIds(name, ids, vocabSize)
      // Ids with no token (the unused gap) decode to nothing; split UTF-8 decodes to U+FFFD.
      return tiktoken.decode(Array.from(ids))
    },
  }
  bpeCache.set(name, tokenizer)
  return tokenizer
}

/** The tokenizer called `name`. */
export function makeTokenizer(name: TokenizerName): Tokenizer {
  switch (name) {
    case "byte":
      return byteTokenizer
    case "cl100k_base":
      return bpeTokenizer(name)
    default:
      throw new Error(`makeTokenizer: unknown tokenizer "${String(name)}"; use "byte" or "cl100k_base"`)
  }
}

// ---------------------------------------------------------------------------------------------
// Special tokens around sequences and documents

/** A prompt's ids: BOS first where the tokenizer adds one, then the text. */
export function promptIds(t: Tokenizer, text: string): Int32Array {
  const ids = t.encode(text)
  if (!t.addBos || t.bos === undefined) return ids
  const out = new Int32Array(ids.length + 1)
  out[0] = t.bos
  out.set(ids, 1)
  return out
}

/**
 * A training text's ids. With an EOS token, the text is cut into documents where the EOS text
 * occurs, and each document is BOS (as the tokenizer adds it) + its ids + EOS, so the model learns
 * where documents end. Without one (the byte and cl100k tokenizers), the plain ids.
 */
export function corpusIds(t: Tokenizer, text: string): Int32Array {
  if (t.eos === undefined) return t.encode(text)
  const documents = t.eosText === undefined ? [text] : text.split(t.eosText)
  const parts = documents.filter((d) => d.trim() !== "").map((d) => promptIds(t, d))
  const out = new Int32Array(parts.reduce((n, p) => n + p.length + 1, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    out[at + p.length] = t.eos
    at += p.length + 1
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Hugging Face tokenizer.json

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)

/** A special token of tokenizer_config.json: a string, or { content: string }. */
const tokenText = (v: unknown): string | undefined =>
  typeof v === "string" ? v : isObject(v) && typeof v["content"] === "string" ? v["content"] : undefined

/** Whether the post-processor's template for one sequence starts with this special token. */
function templateStartsWith(json: Record<string, unknown>, token: string): boolean {
  const post = json["post_processor"]
  const steps = isObject(post)
    ? post["type"] === "TemplateProcessing"
      ? [post]
      : post["type"] === "Sequence" && Array.isArray(post["processors"])
        ? post["processors"]
        : []
    : []
  return steps.some((p: unknown) => {
    if (!isObject(p) || !Array.isArray(p["single"])) return false
    const first = p["single"][0] as unknown
    return isObject(first) && isObject(first["SpecialToken"]) && first["SpecialToken"]["id"] === token
  })
}

/**
 * A Hugging Face tokenizer from its tokenizer.json and (optionally) tokenizer_config.json, both
 * parsed. BOS and EOS are the config's `bos_token` / `eos_token`; whether a sequence starts with
 * BOS is its `add_bos_token`, else whether the post-processor's template puts BOS first (as
 * Llama's do). A file the library cannot read is a BadConfig naming `name`.
 */
export function hfTokenizer(json: unknown, config: unknown = {}, name = "tokenizer.json"): Tokenizer {
  const bad = (message: string) => new BadConfig({ field: "tokenizer", message: `${name}: ${message}` })
  if (!isObject(json) || !isObject(json["model"]))
    throw bad('is not a Hugging Face tokenizer.json (it has no "model" object); pass the tokenizer.json of a model')
  const cfg = isObject(config) ? config : {}
  let hf: HfTokenizer
  try {
    hf = new HfTokenizer(json, cfg)
  } catch (e) {
    throw bad(`@huggingface/tokenizers cannot read it (${e instanceof Error ? e.message : String(e)})`)
  }
  let maxId = -1
  for (const id of hf.get_vocab(true).values()) maxId = Math.max(maxId, id)
  const vocabSize = maxId + 1
  const idOf = (field: "bos_token" | "eos_token") => {
    const text = tokenText(cfg[field])
    if (text === undefined) return {}
    const id = hf.token_to_id(text)
    if (id === undefined) throw bad(`tokenizer_config.json's ${field} ${JSON.stringify(text)} is not in the vocabulary`)
    return { id, text }
  }
  const bos = idOf("bos_token"),
    eos = idOf("eos_token")
  const addBos =
    bos.id !== undefined &&
    (typeof cfg["add_bos_token"] === "boolean" ? cfg["add_bos_token"] : templateStartsWith(json, bos.text!))
  return {
    name,
    vocabSize,
    ...(bos.id === undefined ? {} : { bos: bos.id }),
    ...(eos.id === undefined ? {} : { eos: eos.id, eosText: eos.text! }),
    addBos,
    encode: (text) => Int32Array.from(hf.encode(text, { add_special_tokens: false }).ids),
    decode(ids) {
      checkIds(name, ids, vocabSize)
      // The library refuses an empty list; nothing decodes to "".
      return ids.length === 0 ? "" : hf.decode(Array.from(ids), { skip_special_tokens: false })
    },
  }
}

/**
 * A tokenizer fits a model when every id it makes has a row in the embedding table:
 * `tokenizer.vocabSize ≤ vocab_size`. Fewer is fine (checkpoints pad their tables, e.g. Qwen2's
 * 151 646 ids in 152 064 rows); more is a BadConfig naming both sizes.
 */
export function checkVocabulary(t: Tokenizer, vocabSize: number): BadConfig | undefined {
  if (t.vocabSize <= vocabSize) return undefined
  return new BadConfig({
    field: "tokenizer",
    message: `tokenizer ${t.name} has ${t.vocabSize} tokens but the model's vocab_size is ${vocabSize}; use the model's own tokenizer, or pick a model with a larger vocabulary (e.g. --model tiny-bpe)`,
  })
}
