/**
 * How the command line reports what went wrong: one line on stderr that starts with `miniseq:`,
 * and a non-zero exit code. Stack traces are for developers: only with MINISEQ_DEBUG=1.
 */
import { Cause, Console, Effect } from "effect"
import { CliError, CliOutput } from "effect/cli"
import {
  BackendUnavailable,
  BadCheckpoint,
  BadConfig,
  DTypeError,
  GraphError,
  NonFiniteLoss,
  OutOfMemory,
  ShapeError,
  WriteError,
} from "../core/errors.js"

/** MINISEQ_DEBUG=1 (any value but "" and "0") adds the stack trace to every failure. */
export const debugging = (env: NodeJS.ProcessEnv = process.env): boolean =>
  env.MINISEQ_DEBUG !== undefined && env.MINISEQ_DEBUG !== "" && env.MINISEQ_DEBUG !== "0"

/** A message as one line: its line breaks become "; ". */
export const oneLine = (text: string): string =>
  text
    .split(/\s*\n\s*/)
    .filter((l) => l.length > 0)
    .join("; ")

/** Our typed errors already say what went wrong and what to do: print that, not a stack. */
const ours = [
  BadConfig,
  BadCheckpoint,
  NonFiniteLoss,
  OutOfMemory,
  ShapeError,
  DTypeError,
  GraphError,
  BackendUnavailable,
  WriteError,
]
const isOurs = (e: unknown): e is { _tag: string; message: string } => ours.some((C) => e instanceof C)

const helpHint = (commandPath: readonly string[]) =>
  `run \`${commandPath.join(" ")} --help\` for ${commandPath.length > 1 ? "the flags" : "the commands"}`

/** What a value of each flag type looks like, for the flag-parse line. */
const typeWords: Record<string, string> = {
  integer: "a whole number (e.g. 8)",
  number: "a finite number (e.g. 3e-3)",
}

const didYouMean = (names: readonly string[]) => (names.length > 0 ? ` (did you mean ${names.join(" or ")}?)` : "")

/** One parse error in words: `expected` says what a value of its flag looks like, when known. */
function describeParseError(e: CliError.CliError, expected: string | undefined): string {
  if (e._tag === "UnrecognizedOption") return `unknown flag ${e.option}${didYouMean(e.suggestions)}`
  if (e._tag === "UnknownSubcommand")
    return `unknown command "${e.subcommand}"${didYouMean(e.suggestions)}; the commands are train, plan and bench`
  if (e._tag === "InvalidValue" && e.kind === "flag") {
    // effect/cli reports a repeated flag as the value "<n> occurrences".
    const repeated = /^(\d+) occurrences$/.exec(e.value)
    if (repeated) return `--${e.option} was given ${repeated[1]} times; give it once`
    if (e.value === "") return `--${e.option} needs a value${expected ? `: ${expected}` : ""}`
    if (expected !== undefined)
      return `--${e.option} must be ${expected}${beyondExact(e.value) ? " of at most 2^53 - 1" : ""}, got ${JSON.stringify(e.value)}`
  }
  return oneLine(e.message)
}

/** A whole number too large for a float64 to hold exactly ("9007199254740993", "1e400"). */
const beyondExact = (text: string): boolean => {
  const n = Number(text)
  return /^\s*[-+]?\d+(e\+?\d+)?\s*$/i.test(text) && !Number.isSafeInteger(n)
}

/**
 * One flag-parse error as a line: the flag, the value, what it accepts, where the help is.
 * `flagTypes` (flag name → "integer", "number", …, from the command's help) words a bad value.
 */
export function parseErrorLine(
  commandPath: readonly string[],
  errors: readonly CliError.CliError[],
  flagTypes: ReadonlyMap<string, string> = new Map(),
): string {
  const first = errors[0]
  const expected =
    first?._tag === "InvalidValue" && first.kind === "flag" ? typeWords[flagTypes.get(first.option) ?? ""] : undefined
  const what = first === undefined ? "invalid invocation" : describeParseError(first, expected)
  const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : ""
  return `miniseq: ${what}${more}; ${helpHint(commandPath)}`
}

/** Help and the version as effect/cli prints them; a bad invocation as one line, without the help. */
export const presenter: CliOutput.Presenter = {
  present: (event) =>
    event._tag === "InvalidInvocation"
      ? Console.error(
          parseErrorLine(event.commandPath, event.errors, new Map(event.helpDoc.flags.map((f) => [f.name, f.type]))),
        )
      : CliOutput.defaultPresenter.present(event),
}

/** The line a failure prints: a typed error's tag and message, or an internal error's first line. */
export function failureLine(error: unknown): string {
  if (isOurs(error)) return `miniseq: ${error._tag}: ${oneLine(error.message)}`
  const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error)
  return `miniseq: internal error: ${oneLine(message)} (a bug in miniseq: set MINISEQ_DEBUG=1 to see the stack trace)`
}

/**
 * Runs a command and gives its exit code: 0, or 1 after reporting its failure on stderr (help
 * and parse errors effect/cli has presented already). An interruption passes through to the
 * runner (exit code 130).
 */
export const exitCode = <A, E, R>(program: Effect.Effect<A, E, R>): Effect.Effect<number, E, R> =>
  program.pipe(
    Effect.as(0),
    Effect.catchCause((cause) => {
      if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause)
      const error = Cause.squash(cause)
      if (CliError.isCliError(error))
        return Effect.succeed(error._tag === "ShowHelp" && error.errors.length === 0 ? 0 : 1)
      return Console.error(failureLine(error)).pipe(
        Effect.andThen(debugging() ? Console.error(Cause.pretty(cause)) : Effect.void),
        Effect.as(1),
      )
    }),
  )
