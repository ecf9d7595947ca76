// Hugging Face tokenizers through @huggingface/tokenizers: a byte-level BPE fixture whose
// encodings are worked out by hand (scripts/fixtures/make_tokenizer.py), BOS/EOS as its config
// says, documents separated by EOS, and every bad file or vocabulary a BadConfig.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Cause, Effect, Exit } from "effect"
import fc from "fast-check"
import { afterAll, describe, expect, it } from "vitest"
import { BadConfig } from "../src/core/errors.js"
import { readTokenizerFile } from "../src/models/pretrained.js"
import { byteTokenizer, checkVocabulary, corpusIds, hfTokenizer, promptIds } from "../src/models/tokenizer.js"

const fixture = join(import.meta.dirname, "fixtures", "tiny-tokenizer")
const json = JSON.parse(await readFile(join(fixture, "tokenizer.json"), "utf8"))
const config = JSON.parse(await readFile(join(fixture, "tokenizer_config.json"), "utf8"))
const tok = hfTokenizer(json, config)

const dirs: string[] = []
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})
const failure = async (e: Effect.Effect<unknown, unknown>) => {
  const exit = await Effect.runPromiseExit(e)
  return Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
}

describe("hfTokenizer", () => {
  it("encodes by the merges: 'the the' → t he Ġthe (ids 116, 256, 258), and 261 ids in all", () => {
    expect(Array.from(tok.encode("the the"))).toEqual([116, 256, 258])
    expect(Array.from(tok.encode("he"))).toEqual([256])
    expect(Array.from(tok.encode("a"))).toEqual([97]) // every byte is its own id
    expect(tok.vocabSize).toBe(261)
    expect([tok.bos, tok.eos, tok.eosText, tok.addBos]).toEqual([259, 260, "</s>", true])
  })

  it("a prompt starts with BOS; a corpus is documents cut at the EOS text, each BOS … EOS", () => {
    expect(Array.from(promptIds(tok, "the the"))).toEqual([259, 116, 256, 258])
    expect(Array.from(corpusIds(tok, "the the</s>he"))).toEqual([259, 116, 256, 258, 260, 259, 256, 260])
    expect(Array.from(corpusIds(tok, "he"))).toEqual([259, 256, 260]) // one document, still ended
  })

  it("add_bos_token: false in the config leaves BOS out; without a config there is neither BOS nor EOS", () => {
    const noBos = hfTokenizer(json, { ...config, add_bos_token: false })
    expect(Array.from(promptIds(noBos, "he"))).toEqual([256])
    expect(Array.from(corpusIds(noBos, "he</s>he"))).toEqual([256, 260, 256, 260])
    // Without add_bos_token, the post-processor's template decides (it puts <s> first).
    const { add_bos_token: _, ...rest } = config
    expect(hfTokenizer(json, rest).addBos).toBe(true)
    const bare = hfTokenizer(json)
    expect([bare.bos, bare.eos, bare.addBos]).toEqual([undefined, undefined, false])
    expect(Array.from(corpusIds(bare, "the"))).toEqual(Array.from(bare.encode("the")))
  })

  it("decodes what it encodes (byte-level BPE loses nothing, spaces are not cleaned up), special tokens included", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", maxLength: 24 }), (s) => {
        expect(tok.decode(tok.encode(s))).toBe(s)
      }),
      { numRuns: 200 },
    )
    expect(tok.decode([259, 116, 256, 258, 260])).toBe("<s>the the</s>")
    // As in transformers, clean_up_tokenization_spaces (here false) decides whether " ," decodes to ",".
    expect(tok.decode(tok.encode("a ,b"))).toBe("a ,b")
    expect(hfTokenizer(json, { ...config, clean_up_tokenization_spaces: true }).decode(tok.encode("a ,b"))).toBe("a,b")
    expect(() => tok.decode([261])).toThrow(/id 261 at position 0 is not an integer in \[0, 261\)/)
  })

  it("a vocabulary larger than the model's vocab_size is a BadConfig naming both sizes", () => {
    expect(checkVocabulary(tok, 261)).toBeUndefined()
    expect(checkVocabulary(tok, 300)).toBeUndefined() // padded embedding tables are fine
    const e = checkVocabulary(tok, 256)
    expect(e).toBeInstanceOf(BadConfig)
    expect(e!.message).toMatch(/has 261 tokens but the model's vocab_size is 256/)
    expect(checkVocabulary(byteTokenizer, 256)).toBeUndefined()
  })

  it("files that are no tokenizer, and an EOS missing from the vocabulary, are BadConfig", () => {
    expect(() => hfTokenizer({ vocab: {} }, {}, "x.json")).toThrow(/x\.json: is not a Hugging Face tokenizer\.json/)
    expect(() => hfTokenizer(json, { eos_token: "<eos>" })).toThrow(/eos_token "<eos>" is not in the vocabulary/)
  })
})

describe("readTokenizerFile", () => {
  it("reads tokenizer.json with the tokenizer_config.json beside it, and the file's SHA-256", async () => {
    const { tokenizer, sha256 } = await Effect.runPromise(readTokenizerFile(join(fixture, "tokenizer.json")))
    expect(Array.from(promptIds(tokenizer, "the"))).toEqual([259, 116, 256])
    expect(sha256).toMatch(/^[0-9a-f]{64}$/)
  })

  it("a missing or broken file is a BadConfig naming it and what --tokenizer takes", async () => {
    const dir = await mkdtemp(join(tmpdir(), "miniseq-tok-"))
    dirs.push(dir)
    const missing = await failure(readTokenizerFile(join(dir, "tokenizer.json")))
    expect(missing).toBeInstanceOf(BadConfig)
    expect((missing as BadConfig).message).toMatch(/does not exist; --tokenizer takes byte, cl100k_base or the path/)
    await writeFile(join(dir, "tokenizer.json"), "{ not json")
    expect(((await failure(readTokenizerFile(join(dir, "tokenizer.json")))) as BadConfig).message).toMatch(
      /is not valid JSON/,
    )
  })
})
