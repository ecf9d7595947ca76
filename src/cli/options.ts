/** Flags shared by the subcommands, and turning them into a model config. */
import { readFile } from "node:fs/promises"
import { Effect, Option } from "effect"
import { Flag } from "effect/cli"
import { BadConfig } from "../core/errors.js"
import { decodeConfig, type LlamaConfig, preset, presetNames } from "../models/config.js"
import { type Mode, modes } from "../models/llama.js"
import { type Offload, offloadNames } from "../models/step.js"
import { integerAtLeast } from "./limits.js"
import { oneLine } from "./report.js"
import { formatBytes } from "./svg.js"

export const modelFlag = Flag.String("model").pipe(
  Flag.withDefault("tiny"),
  Flag.withDescription(`model preset: ${presetNames.join(", ")} (default: tiny)`),
)
export const configFlag = Flag.String("config").pipe(
  Flag.optional,
  Flag.withDescription("a Hugging Face config.json instead of a preset"),
)
export const modeFlag = Flag.Literals("mode", modes).pipe(
  Flag.withDefault("mst" as Mode),
  Flag.withDescription("vanilla | checkpoint | mst | mst+checkpoint (default: mst)"),
)
export const chunksFlag = (name: string, what: string) =>
  Flag.String(name).pipe(
    Flag.withDefault("auto"),
    Flag.withDescription(`mini-sequences for the ${what}: a positive integer or "auto" (default: auto)`),
  )
/** --checkpoint-group for `train` and `plan`; `note` says what K > 1 does to that command. */
export const checkpointGroupFlag = (note: string) =>
  Flag.Int("checkpoint-group").pipe(
    Flag.withDefault(1),
    Flag.withDescription(
      `layers per checkpoint region in the checkpoint modes: only every K-th layer's input is saved, for one more forward of recompute; ${note} (default: 1)`,
    ),
  )

/** The model config from --config (a JSON file) or else --model (a preset). */
export function loadModel(model: string, config: Option.Option<string>): Effect.Effect<LlamaConfig, BadConfig> {
  if (Option.isNone(config)) return preset(model)
  return Effect.tryPromise({
    try: async () => JSON.parse(await readFile(config.value, "utf8")) as unknown,
    catch: (e) =>
      new BadConfig({
        field: "config",
        message: `cannot read ${config.value}: ${oneLine(e instanceof Error ? e.message : String(e))}`,
      }),
  }).pipe(Effect.flatMap((raw) => decodeConfig(raw).pipe(Effect.mapError((e) => namingTheField(e, config.value)))))
}

/**
 * A schema failure reads "Expected number\n  at [\"hidden_size\"]": as one line that names the
 * field (in `field` too) and the file.
 */
export function namingTheField(e: BadConfig, file: string): BadConfig {
  const at = /\bat \["([^"]+)"\]/.exec(e.message)
  if (e.field !== "config" || at === null) return new BadConfig({ field: e.field, message: oneLine(e.message) })
  const field = at[1]!
  const problem = oneLine(e.message.slice(0, at.index).replace(/^bad model config:\s*/, ""))
  return new BadConfig({ field, message: `bad model config ${file}: ${field}: ${problem}` })
}

export function parseChunks(flag: string, value: string): Effect.Effect<number | "auto", BadConfig> {
  if (value === "auto") return Effect.succeed("auto")
  const n = value.trim() === "" ? NaN : Number(value)
  return Number.isSafeInteger(n) && n >= 1
    ? Effect.succeed(n)
    : Effect.fail(
        new BadConfig({ field: flag, message: `--${flag} must be a positive integer or "auto", got "${value}"` }),
      )
}

export const positive = (flag: string, value: number): Effect.Effect<number, BadConfig> =>
  integerAtLeast(flag, value, 1)

/** "80GB", "80GiB", "512MB", "1.5e9" → bytes (GB and GiB both mean 2^30, as GPU specs do). */
export function parseBytes(text: string, flag = "memory"): Effect.Effect<number, BadConfig> {
  const m = /^\s*([\d.]+(?:e\d+)?)\s*([kmgt]i?b?)?\s*$/i.exec(text)
  const units: Record<string, number> = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }
  const value = m === null ? NaN : Number(m[1]) * (m[2] ? units[m[2][0]!.toLowerCase()]! : 1)
  return Number.isFinite(value) && value >= 1 && value <= 2 ** 60
    ? Effect.succeed(Math.floor(value))
    : Effect.fail(
        new BadConfig({
          field: flag,
          message: `--${flag} must be a size of at least one byte such as 80GB, 512MiB or 1.5e9 (GB = GiB = 2^30), got "${text}"`,
        }),
      )
}

export const offloadFlag = Flag.String("offload").pipe(
  Flag.withDefault("none"),
  Flag.withDescription(
    'what waits in host memory instead of on the device: "checkpoints" (saved activations between forward and backward; "checkpoints:20GiB": at most that much of them), "optimizer" (AdamW moments, master weights and gradients), both comma-separated, "auto" (the least that makes the step fit the device, or --memory-limit), or "none" (default: none)',
  ),
)

/** "none", "checkpoints", "checkpoints:20GiB", "optimizer" or "checkpoints,optimizer" → what is offloaded. */
export function parseOffload(value: string): Effect.Effect<Offload, BadConfig> {
  const parts = value
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p !== "")
  if (parts.length === 1 && parts[0] === "none") return Effect.succeed({})
  const bad = new BadConfig({
    field: "offload",
    message: `--offload takes "none" or a comma-separated list of ${offloadNames.join(", ")} (checkpoints may take a size: "checkpoints:20GiB"); got "${value}"`,
  })
  const names = parts.map((p) => p.split(":")[0]!)
  if (parts.length === 0 || names.some((n) => !(offloadNames as readonly string[]).includes(n))) return Effect.fail(bad)
  return Effect.gen(function* () {
    let checkpointBytes: number | undefined
    for (const p of parts) {
      const [name, size, extra] = p.split(":")
      if (size === undefined) continue
      if (name !== "checkpoints" || extra !== undefined) return yield* Effect.fail(bad)
      checkpointBytes = yield* parseBytes(size, "offload")
    }
    const on = Object.fromEntries(names.map((n) => [n, true])) as Offload
    return checkpointBytes === undefined ? on : { ...on, checkpointBytes }
  })
}

/** ", offload checkpoints+optimizer" for a run's first line; "" when nothing is offloaded. */
export const describeOffload = (o: Offload): string => {
  const parts = offloadNames
    .filter((n) => o[n])
    .map((n) =>
      n === "checkpoints" && o.checkpointBytes !== undefined ? `${n} ≤ ${formatBytes(o.checkpointBytes)}` : n,
    )
  return parts.length ? `, offload ${parts.join("+")}` : ""
}
