/**
 * Where a command's model and tokenizer come from: a run folder (its newest checkpoint), a
 * checkpoint step folder, or a Hugging Face model folder; and `--tokenizer` as a built-in name
 * or the path of a tokenizer.json.
 */
import { existsSync } from "node:fs"
import { readFile } from "node:fs/promises"
import { join } from "node:path"
import { Effect, Option } from "effect"
import { Flag } from "effect/cli"
import { BadCheckpoint, BadConfig } from "../core/errors.js"
import { latestCheckpoint, loadCheckpoint } from "../models/checkpoint.js"
import { decodeConfig, type LlamaConfig } from "../models/config.js"
import { parameterShapes } from "../models/llama.js"
import { loadPretrained, readTokenizerFile } from "../models/pretrained.js"
import { makeTokenizer, type Tokenizer } from "../models/tokenizer.js"

/** `--tokenizer`; `byDefault` says what is used without it. */
export const tokenizerFlag = (byDefault = "the --init-from folder's tokenizer.json, else byte") =>
  Flag.String("tokenizer").pipe(
    Flag.optional,
    Flag.withDescription(
      `byte (256), cl100k_base (100k BPE; use --model tiny-bpe) or the path of a Hugging Face tokenizer.json (default: ${byDefault})`,
    ),
  )

/** A tokenizer and what identifies it in a run's data record. */
export interface ChosenTokenizer {
  readonly tokenizer: Tokenizer
  /** For a tokenizer.json, the file's SHA-256: a resume with another file is refused. */
  readonly sha256?: string
}

/**
 * `--tokenizer`: "byte", "cl100k_base" or a tokenizer.json path. Without the flag, `fallback`
 * (e.g. the tokenizer a run trained with), else the model folder's tokenizer.json, else byte.
 */
export function chooseTokenizer(
  flag: Option.Option<string>,
  modelDir?: string,
  fallback?: string,
): Effect.Effect<ChosenTokenizer, BadConfig> {
  const name = Option.getOrUndefined(flag) ?? fallback
  if (name === "byte" || name === "cl100k_base") return Effect.sync(() => ({ tokenizer: makeTokenizer(name) }))
  if (name !== undefined) return readTokenizerFile(name)
  const beside = modelDir === undefined ? undefined : join(modelDir, "tokenizer.json")
  if (beside !== undefined && existsSync(beside)) return readTokenizerFile(beside)
  return Effect.sync(() => ({ tokenizer: makeTokenizer("byte") }))
}

/** A model to run: config, float32 weights and, for a miniseq checkpoint, the tokenizer it trained with. */
export interface ModelSource {
  readonly path: string
  readonly config: LlamaConfig
  readonly parameters: Record<string, Float32Array>
  readonly trainedTokenizer?: string
  /** The folder a tokenizer.json would sit in. */
  readonly dir: string
}

/** trainer_state.json's model config and tokenizer name, where the folder has one. */
async function trainerState(dir: string): Promise<{ model?: unknown; tokenizer?: string } | undefined> {
  const text = await readFile(join(dir, "trainer_state.json"), "utf8").catch(() => undefined)
  if (text === undefined) return undefined
  try {
    const raw = JSON.parse(text) as { model?: unknown; data?: { tokenizer?: unknown } }
    const tokenizer = typeof raw.data?.tokenizer === "string" ? raw.data.tokenizer : undefined
    return { model: raw.model, ...(tokenizer === undefined ? {} : { tokenizer }) }
  } catch {
    return undefined // loadCheckpoint names what is wrong with it
  }
}

/**
 * `--from RUN_OR_DIR`: a run folder (its checkpoints/' newest step), a step folder, or a Hugging
 * Face model folder (config.json + safetensors). A miniseq checkpoint is read with its checksums
 * verified; one written before checkpoints held config.json is read from trainer_state.json.
 */
export function loadModelSource(from: string): Effect.Effect<ModelSource, BadConfig | BadCheckpoint> {
  return Effect.gen(function* () {
    const runCheckpoints = join(from, "checkpoints")
    let dir = from
    if (existsSync(runCheckpoints)) {
      const latest = yield* latestCheckpoint(runCheckpoints)
      if (latest === undefined)
        return yield* Effect.fail(
          new BadCheckpoint({
            path: runCheckpoints,
            message: `${runCheckpoints} holds no checkpoint yet; train first (miniseq train --out ${from})`,
          }),
        )
      dir = latest
    }
    const state = yield* Effect.promise(() => trainerState(dir))
    if (state?.model !== undefined) {
      const config = yield* decodeConfig(state.model)
      const loaded = yield* loadCheckpoint(dir, parameterShapes(config))
      return {
        path: dir,
        dir,
        config,
        parameters: loaded.parameters,
        ...(state.tokenizer === undefined ? {} : { trainedTokenizer: state.tokenizer }),
      }
    }
    if (!existsSync(join(dir, "config.json")))
      return yield* Effect.fail(
        new BadConfig({
          field: "from",
          message: `${from} is neither a run folder (with checkpoints/), a checkpoint step folder nor a Hugging Face model folder (with config.json)`,
        }),
      )
    const p = yield* loadPretrained(dir)
    return { path: dir, dir, config: p.config, parameters: p.parameters }
  })
}
