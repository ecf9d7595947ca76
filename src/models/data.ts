/**
 * Training data: a train/validation split and a deterministic batch loader.
 *
 * The loader keeps no iterator state: `batchAt(step)` is a pure function of (seed, step). A run
 * resumed from a checkpoint at step k therefore sees exactly the batches k, k+1, ... that the
 * uninterrupted run would have seen — no data-loader state has to be saved.
 */
// Reading the corpus from disk lives in corpus.ts (node-only); this module runs in a browser too.
import { mix32, rng } from "../core/random.js"

/** A token stream cut into the part to train on and a held-out tail. */
export interface Split {
  readonly train: Int32Array
  readonly val: Int32Array
}

/**
 * The last `valFraction` of the tokens becomes validation, the rest training. A contiguous tail
 * (not random windows) keeps validation text unseen during training. Both are views, not copies.
 */
export function trainValSplit(tokens: Int32Array, valFraction = 0.05): Split {
  if (!(valFraction > 0 && valFraction < 1)) {
    throw new Error(`trainValSplit: valFraction must be in (0, 1), got ${valFraction}`)
  }
  const cut = tokens.length - Math.ceil(tokens.length * valFraction)
  return { train: tokens.subarray(0, cut), val: tokens.subarray(cut) }
}

/** One [batch, seq] batch: input tokens and next-token targets. */
export interface Batch {
  /** B·S input ids, row-major: row b is tokens[b·S .. (b+1)·S). */
  readonly tokens: Int32Array
  /** B·S next-token ids: targets[b·S + i] is the token after tokens[b·S + i]. */
  readonly targets: Int32Array
  /** B window start offsets into the source tokens (for debugging and tests). */
  readonly starts: Int32Array
}

/** Options of `makeBatches`. */
export interface BatchOptions {
  readonly tokens: Int32Array
  /** B: rows (sequences) per batch. */
  readonly batch: number
  /** S: tokens per row. */
  readonly seq: number
  readonly seed: number
}

/** Seeded batches by index: `batchAt(i)` is a pure function of `i`, so a resumed run sees the same data. */
export interface Batches {
  readonly batch: number
  readonly seq: number
  /** How many distinct windows of S+1 tokens the source holds. */
  readonly windows: number
  batchAt(step: number): Batch
}

// ---- a small seeded PRNG, keyed by (seed, step) ----

/** One 32-bit PRNG seed from (seed, step); both may be any safe integer, so mix their high and low words. */
function hashSeedStep(seed: number, step: number): number {
  let h = 0x2545f491
  for (const x of [seed, step]) {
    h = mix32(h ^ (x >>> 0)) // low 32 bits (>>> 0 wraps modulo 2^32, negatives included)
    h = mix32(h ^ (Math.floor(x / 2 ** 32) >>> 0)) // high bits
  }
  return h
}

// ---- the batch loader ----

function requirePositiveInt(what: string, value: number, hint: string): void {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new Error(`makeBatches: ${what} must be a positive integer, got ${value}; ${hint}`)
  }
}

/**
 * Random windows of S+1 tokens: row b of batchAt(step) is window w = tokens[start .. start+S], with
 * tokens = w[0..S) and targets = w[1..S]. The shift is done here, once, on the whole sequence, so
 * later chunking of the sequence dimension (Mini-Sequence Transformer) never has to look across chunks.
 */
export function makeBatches(opts: BatchOptions): Batches {
  const { tokens: source, batch, seq, seed } = opts
  requirePositiveInt("batch", batch, "pass the number of sequences per step, e.g. batch: 8")
  requirePositiveInt("seq", seq, "pass the sequence length in tokens, e.g. seq: 256")
  if (!Number.isSafeInteger(seed)) throw new Error(`makeBatches: seed must be an integer, got ${seed}`)
  if (source.length < seq + 1) {
    throw new Error(
      `makeBatches: the token stream has ${source.length} tokens, but seq = ${seq} needs at least ${seq + 1} ` +
        `(seq + 1, for the shifted targets); use a smaller seq or a longer corpus`,
    )
  }
  // Valid starts are 0 .. length-seq-1, so the window's last token (start+seq) is still in range.
  const windows = source.length - seq

  function batchAt(step: number): Batch {
    if (!Number.isSafeInteger(step) || step < 0) {
      throw new Error(`batchAt: step must be a non-negative integer, got ${step}`)
    }
    const random = rng(hashSeedStep(seed, step))
    const tokens = new Int32Array(batch * seq)
    const targets = new Int32Array(batch * seq)
    const starts = new Int32Array(batch)
    for (let b = 0; b < batch; b++) {
      // floor(u · n) with a 32-bit u: bias below n / 2^32, negligible for corpus-sized n.
      const start = Math.floor(random() * windows)
      starts[b] = start
      tokens.set(source.subarray(start, start + seq), b * seq)
      targets.set(source.subarray(start + 1, start + seq + 1), b * seq)
    }
    return { tokens, targets, starts }
  }

  return { batch, seq, windows, batchAt }
}
