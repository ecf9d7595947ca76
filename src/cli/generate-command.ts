/** `miniseq generate`: continue a prompt with a trained run, a checkpoint or a Hugging Face model folder. */
import { Cause, Console, Effect, Exit } from "effect"
import { Command, Flag } from "effect/cli"
import type { Backend } from "../core/backend.js"
import type { ExecutionError } from "../core/executor.js"
import type { LlamaConfig } from "../models/config.js"
import { type GenerateOptions, generate } from "../models/generate.js"
import { checkVocabulary, promptIds, type Tokenizer } from "../models/tokenizer.js"
import { chooseTokenizer, loadModelSource, tokenizerFlag } from "./model-source.js"
import { backendLayer } from "./train-command.js"

const flags = {
  from: Flag.String("from").pipe(
    Flag.withDescription(
      "a run folder (its newest checkpoint), a checkpoint step folder or a Hugging Face model folder (config.json + model.safetensors)",
    ),
  ),
  prompt: Flag.String("prompt").pipe(Flag.withDescription("the text to continue")),
  maxNewTokens: Flag.Int("max-new-tokens").pipe(
    Flag.withDefault(64),
    Flag.withDescription("tokens to generate at most (stops earlier at EOS) (default: 64)"),
  ),
  temperature: Flag.Finite("temperature").pipe(
    Flag.withDefault(0.8),
    Flag.withDescription("divides the logits; 0: greedy (default: 0.8)"),
  ),
  topK: Flag.Int("top-k").pipe(
    Flag.withDefault(40),
    Flag.withDescription("draw from the k most likely tokens only; 0: all (default: 40)"),
  ),
  topP: Flag.Finite("top-p").pipe(
    Flag.withDefault(0.95),
    Flag.withDescription("draw from the fewest most likely tokens whose mass reaches p; 1: all (default: 0.95)"),
  ),
  seed: Flag.Int("seed").pipe(Flag.withDefault(1), Flag.withDescription("seed of the draws (default: 1)")),
  tokenizer: tokenizerFlag("the one the run trained with, else the folder's tokenizer.json, else byte"),
  backend: Flag.Literals("backend", ["cpu-fast", "cpu", "webgpu", "cuda"] as const).pipe(
    Flag.withDefault("cpu-fast" as const),
    Flag.withDescription("where the kernels run: cpu-fast, cpu, webgpu or cuda (default: cpu-fast)"),
  ),
}

/** The prompt continued: its ids through `generate`, decoded; the text and how many tokens came. */
export function continueText(
  config: LlamaConfig,
  parameters: Readonly<Record<string, Float32Array>>,
  tokenizer: Tokenizer,
  prompt: string,
  o: GenerateOptions,
): Effect.Effect<{ text: string; tokens: number; stopped: string; seconds: number }, ExecutionError, Backend> {
  return Effect.gen(function* () {
    const started = performance.now()
    const ids = promptIds(tokenizer, prompt)
    const eos = tokenizer.eos === undefined ? {} : { eos: tokenizer.eos }
    const out = yield* generate(config, parameters, ids, { ...o, ...eos })
    const seconds = (performance.now() - started) / 1000
    return { text: tokenizer.decode(out.tokens), tokens: out.tokens.length, stopped: out.stopped, seconds }
  })
}

const sampleOptions = { temperature: 0.8, topK: 40, topP: 0.95, seed: 1 }

export const generateCommand = Command.make("generate", flags, (f) =>
  Effect.gen(function* () {
    const source = yield* loadModelSource(f.from)
    const { tokenizer } = yield* chooseTokenizer(f.tokenizer, source.dir, source.trainedTokenizer)
    const mismatch = checkVocabulary(tokenizer, source.config.vocab_size)
    if (mismatch !== undefined) return yield* Effect.fail(mismatch)
    const options = {
      maxNewTokens: f.maxNewTokens,
      temperature: f.temperature,
      topK: f.topK,
      topP: f.topP,
      seed: f.seed,
    }
    const r = yield* continueText(source.config, source.parameters, tokenizer, f.prompt, options).pipe(
      Effect.provide(yield* backendLayer(f.backend)),
    )
    yield* Console.log(`${f.prompt}${r.text}`)
    yield* Console.error(
      `\n(${source.path}: ${r.tokens} tokens in ${r.seconds.toFixed(2)} s, ${r.stopped === "eos" ? "stopped at EOS" : "--max-new-tokens reached"}; tokenizer ${tokenizer.name}, temperature ${f.temperature}, top-k ${f.topK}, top-p ${f.topP}, seed ${f.seed})`,
    )
  }),
).pipe(
  Command.withDescription(
    "continue a prompt with a trained model (a run folder, a checkpoint or a Hugging Face folder), with a KV cache",
  ),
)

/**
 * The trained model's own words, as `miniseq train` ends: the first few words of the held-out
 * text continued by `count` tokens (temperature 0.8, top-k 40, top-p 0.95, seed 1). A sample
 * that cannot be made (a model with too few positions) is reported in a line; it never fails
 * the run.
 */
export const printSample = (
  model: LlamaConfig,
  parameters: Record<string, Float32Array>,
  tokenizer: Tokenizer,
  heldOut: Int32Array,
  count: number,
  out: string,
) =>
  Effect.gen(function* () {
    const words = tokenizer.decode(heldOut.subarray(0, 24)).trimStart()
    const prompt = words.includes(" ") ? words.slice(0, words.lastIndexOf(" ") + 1) : words
    if (prompt === "") return
    const room = model.max_position_embeddings - promptIds(tokenizer, prompt).length
    const exit = yield* Effect.exit(
      continueText(model, parameters, tokenizer, prompt, { ...sampleOptions, maxNewTokens: Math.min(count, room) }),
    )
    if (Exit.isSuccess(exit)) {
      const r = exit.value
      yield* Console.log(
        `\nsample (held-out prompt, then ${r.tokens} tokens in ${r.seconds.toFixed(1)} s; more: miniseq generate --from ${out} --prompt "…"):\n${JSON.stringify(prompt + r.text)}`,
      )
    } else yield* Console.log(`\nno sample: ${Cause.pretty(exit.cause).split("\n")[0]}`)
  })
