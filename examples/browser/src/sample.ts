/**
 * Text from the model so far: the library's `generate` (a KV cache over `llamaForward`), seeded,
 * on whichever Backend the caller provides. The page samples at a temperature below 1 with a
 * top-k cut, so a small model's text reads as text rather than one repeated word.
 */
import { Effect } from "effect"
import { byteTokenizer, generate, type LlamaConfig } from "miniseq"

/** How the page draws each token (the test draws the same way). */
export const sampling = { temperature: 0.8, topK: 40 } as const

/** `count` bytes after `prompt`, drawn with `sampling` and `seed`, decoded as text. */
export const sampleText = (
  c: LlamaConfig,
  parameters: Readonly<Record<string, Float32Array>>,
  prompt: Int32Array,
  count: number,
  seed: number,
) =>
  generate(c, parameters, prompt, { maxNewTokens: count, seed, ...sampling }).pipe(
    Effect.map((g) => byteTokenizer.decode(g.tokens)),
  )
