// Malformed values for every numeric flag of train, plan and bench, and malformed config.json
// files: each is refused with exactly one line starting with "miniseq:", no stack trace, and a
// non-zero exit code — run in-process through the same command tree and reporting as the binary.
import { mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Exit, Option } from "effect"
import fc from "fast-check"
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest"
import { runMiniseq } from "../src/cli/commands.js"
import { tokensPerStep } from "../src/cli/limits.js"
import { loadModel } from "../src/cli/options.js"
import { exitCode } from "../src/cli/report.js"
import { BadConfig } from "../src/core/errors.js"
import { presets } from "../src/models/config.js"

/** Runs `miniseq ...args` in this process: its exit code and every line it wrote to stdout and stderr. */
async function miniseq(args: readonly string[]): Promise<{ code: number; stderr: string[]; stdout: string[] }> {
  const stderr: string[] = []
  const stdout: string[] = []
  const err = vi.spyOn(console, "error").mockImplementation((...xs: unknown[]) => {
    stderr.push(...xs.map(String).join(" ").split("\n"))
  })
  const log = vi.spyOn(console, "log").mockImplementation((...xs: unknown[]) => {
    stdout.push(...xs.map(String).join(" ").split("\n"))
  })
  try {
    const code = await Effect.runPromise(runMiniseq(args))
    return { code, stderr, stdout }
  } finally {
    err.mockRestore()
    log.mockRestore()
  }
}

const dirs: string[] = []
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})
afterEach(() => {
  vi.restoreAllMocks()
})

// ---- malformed values, by what a flag accepts ----

const huge = fc.oneof(
  fc.constantFrom("1e400", "9007199254740993", "1e16", "123456789012345678901234567890"),
  fc.double({ min: 2 ** 53 + 2, max: 1e300, noNaN: true }).map((x) => x.toExponential()),
)
const notANumber = fc.constantFrom("NaN", "nan", "Infinity", "-Infinity", "inf", "", " ", "0x", "1,5", "--", "1e")
const words = fc
  .string({ minLength: 1, maxLength: 8 })
  .filter((s) => !/^\s*[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$/i.test(s) && !s.startsWith("-") && s.trim() !== "auto")
const negative = fc.integer({ min: -1_000_000, max: -1 }).map(String)
const fraction = fc
  .double({ min: -1e6, max: 1e6, noNaN: true, noDefaultInfinity: true })
  .filter((x) => !Number.isInteger(x))
  .map(String)

/** Values no whole-number flag with a minimum of `min` accepts. */
const badCount = (min: number) =>
  fc.oneof(huge, notANumber, words, negative, fraction, fc.integer({ min: -1000, max: min - 1 }).map(String))
/** Values a positive real (--lr) does not take. */
const badPositiveReal = fc.oneof(notANumber, words, negative, fc.constantFrom("0", "-0", "1e400", "-1e-9"))
/** Values a size (--memory, --memory-limit) does not take. */
const badSize = fc.oneof(
  notANumber,
  words,
  negative,
  fc.constantFrom("0", "0.5", "12XB", "1e400", "5 GBB", "GiB", "-1GiB", "2EiB"),
)
const badChunks = fc.oneof(huge, notANumber, words, negative, fraction, fc.constant("0"))

const flagsOf = {
  train: {
    batch: badCount(1),
    seq: badCount(1),
    steps: badCount(1),
    accumulate: badCount(1),
    warmup: badCount(0),
    seed: fc.oneof(huge, notANumber, words, fraction),
    "checkpoint-every": badCount(1),
    lr: badPositiveReal,
    "memory-limit": badSize,
    "mlp-chunks": badChunks,
    "lm-chunks": badChunks,
  },
  plan: {
    seq: badCount(1),
    batch: badCount(1),
    granularity: badCount(1),
    ranks: badCount(1),
    memory: badSize,
    "mlp-chunks": badChunks,
    "lm-chunks": badChunks,
  },
  bench: {
    batch: badCount(1),
    steps: badCount(1),
    // A list of positive integers ("1,5") is a valid --seqs.
    seqs: fc
      .oneof(
        badCount(1),
        badCount(1).map((v) => `64,${v}`),
      )
      .filter((v) => !/^\d+(,\d+)*$/.test(v)),
    "mlp-chunks": badChunks,
    "lm-chunks": badChunks,
  },
} as const

let out = ""
beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), "miniseq-flags-"))
  dirs.push(out)
})

describe("a malformed value for any numeric flag", () => {
  for (const command of ["train", "plan", "bench"] as const) {
    it(`${command}: exit code 1, one stderr line starting with "miniseq:" that names the flag, no stack trace, quickly`, async () => {
      // Every flag in turn, a few malformed values each (10 in-process runs: milliseconds each).
      for (const [flag, values] of Object.entries(flagsOf[command]) as Array<[string, fc.Arbitrary<string>]>) {
        await fc.assert(
          fc.asyncProperty(values, async (value) => {
            const extra =
              command === "plan"
                ? ["--max-seq"]
                : command === "train"
                  ? ["--out", join(out, "never")]
                  : ["--json", join(out, "b.json"), "--svg", join(out, "b.svg")]
            const started = performance.now()
            const r = await miniseq([command, ...extra, `--${flag}=${value}`])
            const seconds = (performance.now() - started) / 1000
            const lines = r.stderr.filter((l) => l.trim() !== "")
            expect(r.code, `${command} --${flag}=${JSON.stringify(value)}: ${lines.join(" / ")}`).toBe(1)
            expect(lines, `${command} --${flag}=${JSON.stringify(value)}`).toHaveLength(1)
            expect(lines[0]).toMatch(/^miniseq: /)
            expect(lines[0]).toContain(`--${flag}`)
            expect(lines[0]).not.toMatch(/\bat .*\.(js|ts):\d+/)
            expect(r.stdout.join("\n")).not.toMatch(/USAGE|FLAGS/) // not the whole help
            expect(seconds).toBeLessThan(5)
          }),
          { numRuns: 10 },
        )
      }
    })
  }

  it("the line names what is allowed and how to fix it, for the cases the issue met", async () => {
    const cases: Array<[string[], string]> = [
      [["train", "--warmup", "-5"], "miniseq: BadConfig: --warmup must be a non-negative integer, got -5"],
      [["train", "--checkpoint-every", "0"], "pass a value of at least --steps"],
      [["bench", "--steps", "0"], "miniseq: BadConfig: --steps must be a positive integer, got 0"],
      [["bench", "--batch", "0"], "miniseq: BadConfig: --batch must be a positive integer, got 0"],
      [["train", "--seq", "abc"], 'miniseq: --seq must be a whole number (e.g. 8), got "abc"'],
      [["train", "--seed", "9007199254740993"], "--seed must be a whole number (e.g. 8) of at most 2^53 - 1"],
      [["train", "--lr", "fast"], 'miniseq: --lr must be a finite number (e.g. 3e-3), got "fast"'],
      [
        ["train", "--batchh", "2"],
        "miniseq: unknown flag --batchh (did you mean --batch?); run `miniseq train --help`",
      ],
      [["train", "--memory-limit", "12XB"], 'got "12XB"'],
      [["trian"], 'miniseq: unknown command "trian" (did you mean train?); the commands are train, plan and bench'],
      [["train", "--seq"], "miniseq: --seq needs a value: a whole number (e.g. 8)"],
      [["train", "--seq", "1", "--seq", "2"], "miniseq: --seq was given 2 times; give it once"],
      [["train", "extra"], 'miniseq: Unexpected positional argument: "extra"; run `miniseq train --help`'],
    ]
    for (const [args, line] of cases) {
      const r = await miniseq(args)
      expect(r.code, args.join(" ")).toBe(1)
      expect(r.stderr.filter((l) => l !== "")).toHaveLength(1)
      expect(r.stderr.join("\n")).toContain(line)
    }
  })

  it("bench: --json under a file, or --svg a folder, is a WriteError before the first point runs", async () => {
    const file = join(out, "a-file")
    await writeFile(file, "")
    for (const [flag, args] of [
      ["json", ["--json", join(file, "b.json"), "--svg", join(out, "b.svg")]],
      ["svg", ["--json", join(out, "b.json"), "--svg", out]],
    ] as const) {
      const started = performance.now()
      const r = await miniseq(["bench", "--seqs", "16", "--modes", "mst", "--steps", "1", ...args])
      expect(performance.now() - started).toBeLessThan(3000)
      expect(r.code).toBe(1)
      expect(r.stdout).toEqual([]) // no point ran
      expect(r.stderr.filter((l) => l !== "")).toHaveLength(1)
      expect(r.stderr[0]).toMatch(new RegExp(`^miniseq: WriteError: cannot write .*; choose another --${flag}$`))
    }
  })

  it("--accumulate 1e9 is refused at once, with the largest that fits the corpus", async () => {
    const started = performance.now()
    const r = await miniseq(["train", "--accumulate", "1000000000", "--out", join(out, "never")])
    expect(performance.now() - started).toBeLessThan(5000)
    expect(r.code).toBe(1)
    const m = /pass --accumulate (\d+) or less/.exec(r.stderr.join("\n"))
    expect(m, r.stderr.join("\n")).not.toBeNull()
    // The largest count it offers is the corpus's training tokens over batch × seq: that one is allowed, one more is not.
    const tokens = Number(/the corpus's (\d+) training tokens/.exec(r.stderr.join("\n"))![1])
    const most = Number(m![1])
    expect(most).toBe(Math.floor(tokens / (8 * 128)))
    expect(Exit.isSuccess(Effect.runSyncExit(tokensPerStep(most, 8, 128, tokens)))).toBe(true)
    expect(Exit.isFailure(Effect.runSyncExit(tokensPerStep(most + 1, 8, 128, tokens)))).toBe(true)
  })

  it("--seed 2^53 - 1 (the largest) and -(2^53 - 1) train; one past is one line", async () => {
    for (const seed of [Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER]) {
      const r = await miniseq([
        "train",
        "--seed",
        String(seed),
        ...["--steps", "1", "--batch", "1", "--seq", "16", "--out", join(out, `seed${seed}`)],
      ])
      expect(r.code, r.stderr.join("\n")).toBe(0)
      expect(r.stdout.join("\n")).toMatch(/held-out loss .*: \d+\.\d+/)
    }
    const past = await miniseq(["train", "--seed", "9007199254740992", "--out", join(out, "never")])
    expect(past.code).toBe(1)
    expect(past.stderr.filter((l) => l !== "")).toHaveLength(1)
  })

  it("vocab_size 1e12 is one line naming vocab_size, for plan and for train", async () => {
    const config = join(out, "huge-vocab.json")
    await writeFile(config, JSON.stringify({ ...presets.tiny, vocab_size: 1e12 }))
    for (const args of [
      ["plan", "--config", config],
      ["train", "--config", config, "--out", join(out, "never")],
    ]) {
      const r = await miniseq(args)
      expect(r.code).toBe(1)
      expect(r.stderr.filter((l) => l !== "")).toHaveLength(1)
      expect(r.stderr[0]).toMatch(/^miniseq: BadConfig: .*vocab_size 1000000000000/)
    }
    // 2^53 bytes of training state (16 bytes a parameter): refused even by the planner.
    const wide = join(out, "wide.json")
    await writeFile(wide, JSON.stringify({ ...presets.tiny, vocab_size: 2 ** 40, hidden_size: 2 ** 12 }))
    const r = await miniseq(["plan", "--config", wide, "--seq", "1"])
    expect(r.stderr[0]).toMatch(/^miniseq: BadConfig: .*more than 2\^53 bytes/)
  })
})

describe("an internal error (a bug)", () => {
  const run = async (env: string | undefined) => {
    const saved = process.env.MINISEQ_DEBUG
    if (env === undefined) delete process.env.MINISEQ_DEBUG
    else process.env.MINISEQ_DEBUG = env
    const printed: string[] = []
    const err = vi.spyOn(console, "error").mockImplementation((...xs: unknown[]) => {
      printed.push(xs.map(String).join(" "))
    })
    try {
      const code = await Effect.runPromise(exitCode(Effect.die(new TypeError("x.y is not a function"))))
      return { code, printed }
    } finally {
      err.mockRestore()
      if (saved === undefined) delete process.env.MINISEQ_DEBUG
      else process.env.MINISEQ_DEBUG = saved
    }
  }
  it("is one line saying it is a bug; MINISEQ_DEBUG=1 adds the stack trace", async () => {
    for (const env of [undefined, "", "0"]) {
      const r = await run(env)
      expect(r.code).toBe(1)
      expect(r.printed).toEqual([
        "miniseq: internal error: TypeError: x.y is not a function (a bug in miniseq: set MINISEQ_DEBUG=1 to see the stack trace)",
      ])
    }
    const debug = await run("1")
    expect(debug.code).toBe(1)
    expect(debug.printed[0]).toMatch(/^miniseq: internal error: TypeError: x.y is not a function/)
    expect(debug.printed.slice(1).join("\n")).toMatch(/TypeError: x.y is not a function\n\s+at /)
  })
})

// ---- malformed config.json files ----

const required = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"] as const
// (num_key_value_heads and max_position_embeddings take transformers' defaults when absent.)
const numeric = [
  ...required,
  "num_key_value_heads",
  "max_position_embeddings",
  "head_dim",
  "rope_theta",
  "rms_norm_eps",
] as const
const INF_TEXT = "1e400 in the file"
const NEG_INF_TEXT = "-1e400 in the file"
type Mutation = { field: string; change: "delete" | "type" | "range"; value?: unknown }

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.constantFrom(...required).map((field): Mutation => ({ field, change: "delete" })),
  fc
    .tuple(
      fc.constantFrom(...numeric, "tie_word_embeddings"),
      fc.oneof(fc.string(), fc.array(fc.integer(), { maxLength: 2 }), fc.constant({})),
    )
    .map(([field, value]): Mutation => ({ field, change: "type", value })),
  // null means "unset" in transformers' configs: a BadConfig only where the field is required.
  fc.constantFrom(...required).map((field): Mutation => ({ field, change: "type", value: null })),
  fc
    .tuple(
      fc.constantFrom(...numeric),
      fc.oneof(
        fc.constantFrom(0, -1, -0.5, INF_TEXT, NEG_INF_TEXT),
        fc.integer({ max: 0 }),
        fc.double({ max: -1e-9, noNaN: true }),
      ),
    )
    .map(([field, value]): Mutation => ({ field, change: "range", value })),
  // Whole-number fields given a fraction (rope_theta and rms_norm_eps may be fractions).
  fc
    .tuple(
      fc.constantFrom(...required, "head_dim"),
      fc.double({ min: 1.01, max: 1e6, noNaN: true }).filter((x) => !Number.isInteger(x)),
    )
    .map(([field, value]): Mutation => ({ field, change: "range", value })),
)

describe("a malformed config.json", () => {
  it("is a BadConfig naming a field it changed, in one line", async () => {
    const file = join(out, "config.json")
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(mutation, { minLength: 1, maxLength: 3, selector: (m) => m.field }),
        async (ms) => {
          const raw: Record<string, unknown> = { ...presets["llama-3.2-1b"] }
          for (const m of ms) {
            if (m.change === "delete") delete raw[m.field]
            else raw[m.field] = m.value
          }
          // JSON writes ±1e400 as null, like a real file that held a non-number.
          await writeFile(file, JSON.stringify(raw))
          // flip: the failure is the value (a config that loads fails this test).
          const error = await Effect.runPromise(Effect.flip(loadModel("tiny", Option.some(file))))
          expect(error, JSON.stringify(ms)).toBeInstanceOf(BadConfig)
          const bad = error as BadConfig
          expect(
            ms.map((m) => m.field),
            `${bad.field}: ${bad.message}`,
          ).toContain(bad.field)
          expect(bad.message).toContain(bad.field)
          expect(bad.message).toContain(file)
          expect(bad.message).not.toContain("\n")
        },
      ),
      { numRuns: 50 },
    )
  })
})
