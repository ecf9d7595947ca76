import fc from "fast-check"
import { beforeAll, describe, expect, it } from "vitest"
import { loadCorpus } from "../src/models/corpus.js"
import { makeBatches, trainValSplit } from "../src/models/data.js"
import { bpeTokenizer, byteTokenizer, makeTokenizer, type Tokenizer } from "../src/models/tokenizer.js"

const corpus = loadCorpus()

describe("corpus", () => {
  it("loads the shipped Moby-Dick text", () => {
    expect(corpus.length).toBeGreaterThan(1_000_000)
    expect(corpus.startsWith("CHAPTER 1. Loomings.\n\nCall me Ishmael.")).toBe(true)
  })

  it("splits off the last 5% as validation", () => {
    const tokens = Int32Array.from({ length: 1000 }, (_, i) => i)
    const { train, val } = trainValSplit(tokens)
    expect([train.length, val.length]).toEqual([950, 50])
    expect(val[0]).toBe(950) // contiguous tail, nothing lost or duplicated
    expect(() => trainValSplit(tokens, 0)).toThrow(/valFraction must be in \(0, 1\)/)
  })
})

describe("byte tokenizer", () => {
  it("round-trips arbitrary unicode strings", () => {
    // unit "binary": any code point, astral planes and U+FEFF included (lone surrogates are not valid text).
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 200 }), (s) => {
        const ids = byteTokenizer.encode(s)
        expect(ids.every((id) => id >= 0 && id < 256)).toBe(true)
        expect(byteTokenizer.decode(ids)).toBe(s)
      }),
      { numRuns: 500 },
    )
  })

  it("decodes invalid UTF-8 to U+FFFD instead of throwing", () => {
    expect(byteTokenizer.decode([0x68, 0xff, 0xe2, 0x82])).toBe("h\uFFFD\uFFFD")
  })

  it("rejects ids outside the vocabulary", () => {
    expect(() => byteTokenizer.decode([256])).toThrow(/id 256 at position 0 is not an integer in \[0, 256\)/)
  })
})

describe("cl100k_base tokenizer", () => {
  let bpe: Tokenizer
  beforeAll(() => {
    const t0 = performance.now()
    bpe = bpeTokenizer("cl100k_base")
    console.log(`cl100k_base built in ${(performance.now() - t0).toFixed(0)} ms`)
  })

  it("is cached and reachable through makeTokenizer", () => {
    expect(makeTokenizer("cl100k_base")).toBe(bpe)
    expect(makeTokenizer("byte")).toBe(byteTokenizer)
  })

  it("has the full id space, specials included", () => {
    // 100256 BPE ranks + specials up to <|endofprompt|> = 100276 (tiktoken's n_vocab).
    expect(bpe.vocabSize).toBe(100277)
  })

  it("matches OpenAI's reference vectors", () => {
    // Vectors from openai/tiktoken's tests/test_encoding.py (test_simple, test_simple_regex, test_encode_surrogate_pairs).
    expect(Array.from(bpe.encode("hello world"))).toEqual([15339, 1917])
    expect(Array.from(bpe.encode("rer"))).toEqual([38149])
    expect(Array.from(bpe.encode("today\n \n"))).toEqual([31213, 27907])
    expect(Array.from(bpe.encode("👍"))).toEqual([9468, 239, 235])
    expect(bpe.decode([15339, 1917])).toBe("hello world")
  })

  it("treats special-token text as plain text", () => {
    const ids = bpe.encode("<|endoftext|>")
    expect(ids.includes(100257)).toBe(false)
    expect(bpe.decode(ids)).toBe("<|endoftext|>")
  })

  it("round-trips the whole corpus, with ids in range and ~4 chars per token", () => {
    const t0 = performance.now()
    const ids = bpe.encode(corpus)
    console.log(`cl100k_base: ${ids.length} corpus tokens, encoded in ${(performance.now() - t0).toFixed(0)} ms`)
    expect(ids.every((id) => id >= 0 && id < bpe.vocabSize)).toBe(true)
    expect(corpus.length / ids.length).toBeGreaterThan(3)
    expect(bpe.decode(ids)).toBe(corpus)
  })

  it("round-trips random corpus slices", () => {
    fc.assert(
      fc.property(fc.nat({ max: corpus.length - 1 }), fc.nat({ max: 2000 }), (at, len) => {
        const s = corpus.slice(at, at + len)
        expect(bpe.decode(bpe.encode(s))).toBe(s)
      }),
      { numRuns: 200 },
    )
  })
})

describe("makeBatches", () => {
  const tokens = byteTokenizer.encode(corpus.slice(0, 50_000))
  const B = 4
  const S = 64

  it("is a pure function of (seed, step)", () => {
    const a = makeBatches({ tokens, batch: B, seq: S, seed: 7 })
    const b = makeBatches({ tokens, batch: B, seq: S, seed: 7 })
    // Out of order and repeated: no hidden iterator state.
    for (const step of [0, 5, 3, 5, 1_000_000, 2 ** 40]) {
      expect(b.batchAt(step)).toEqual(a.batchAt(step))
    }
  })

  it("shifts targets by one within each row's window", () => {
    const { tokens: x, targets: y, starts } = makeBatches({ tokens, batch: B, seq: S, seed: 1 }).batchAt(3)
    expect([x.length, y.length, starts.length]).toEqual([B * S, B * S, B])
    for (let b = 0; b < B; b++) {
      const start = starts[b]!
      for (let i = 0; i < S; i++) {
        expect(x[b * S + i]).toBe(tokens[start + i])
        expect(y[b * S + i]).toBe(tokens[start + i + 1])
        if (i + 1 < S) expect(y[b * S + i]).toBe(x[b * S + i + 1])
      }
    }
  })

  it("differs across steps and seeds, and covers the whole stream", () => {
    const batches = makeBatches({ tokens, batch: B, seq: S, seed: 0 })
    const firstStarts = new Set<number>()
    for (let step = 0; step < 50; step++) {
      firstStarts.add(batches.batchAt(step).starts[0]!)
    }
    expect(firstStarts.size).toBeGreaterThan(45)
    expect(makeBatches({ tokens, batch: B, seq: S, seed: 1 }).batchAt(0).starts).not.toEqual(batches.batchAt(0).starts)
    // Starts spread over the valid range [0, windows).
    const all = Array.from({ length: 200 }, (_, step) => Array.from(batches.batchAt(step).starts)).flat()
    expect(Math.min(...all)).toBeGreaterThanOrEqual(0)
    expect(Math.max(...all)).toBeLessThan(batches.windows)
    expect(Math.max(...all)).toBeGreaterThan(0.9 * batches.windows)
  })

  it("uses the very last token when the stream is exactly S+1 long", () => {
    const tiny = Int32Array.from([10, 11, 12, 13, 14])
    const batch = makeBatches({ tokens: tiny, batch: 2, seq: 4, seed: 0 }).batchAt(0)
    expect(Array.from(batch.tokens)).toEqual([10, 11, 12, 13, 10, 11, 12, 13])
    expect(Array.from(batch.targets)).toEqual([11, 12, 13, 14, 11, 12, 13, 14])
  })

  it("rejects bad arguments with messages that say what to change", () => {
    const tiny = new Int32Array(10)
    expect(() => makeBatches({ tokens: tiny, batch: 1, seq: 10, seed: 0 })).toThrow(
      /has 10 tokens, but seq = 10 needs at least 11 .*use a smaller seq or a longer corpus/,
    )
    expect(() => makeBatches({ tokens, batch: 0, seq: S, seed: 0 })).toThrow(/batch must be a positive integer, got 0/)
    expect(() => makeBatches({ tokens, batch: 2.5, seq: S, seed: 0 })).toThrow(/batch must be a positive integer/)
    expect(() => makeBatches({ tokens, batch: B, seq: -1, seed: 0 })).toThrow(/seq must be a positive integer, got -1/)
    expect(() => makeBatches({ tokens, batch: B, seq: S, seed: Number.NaN })).toThrow(/seed must be an integer/)
    expect(() => makeBatches({ tokens, batch: B, seq: S, seed: 0 }).batchAt(-1)).toThrow(
      /step must be a non-negative integer/,
    )
  })
})
