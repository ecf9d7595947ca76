/**
 * Tokenizers: text ⇄ integer ids for the model's embedding table.
 *
 * - `byteTokenizer`: the UTF-8 bytes themselves (vocab 256). No files, never fails, but long sequences.
 * - `bpeTokenizer("cl100k_base")`: OpenAI's byte-pair encoding (the GPT-4 one) via js-tiktoken,
 *   roughly 4 characters per token on English. Its ranks ship inside the npm package: nothing is
 *   downloaded at run time.
 */
import { Tiktoken, type TiktokenBPE } from "js-tiktoken/lite"
// Importing one ranks file (not the package root) loads only cl100k, not every encoding.
import cl100kRanks from "js-tiktoken/ranks/cl100k_base"

/** Text ⇄ token ids. */
export interface Tokenizer {
  readonly name: string
  /** Size of the id space: every id `encode` returns is in [0, vocabSize). Use it as the embedding table's row count. */
  readonly vocabSize: number
  encode(text: string): Int32Array
  decode(ids: ArrayLike<number>): string
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
