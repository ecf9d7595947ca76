/** The `miniseq` command line: train, plan, bench, generate. */
import { Console, Effect } from "effect"
import { Command } from "effect/cli"
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
import { benchCommand } from "./bench-command.js"
import { generateCommand } from "./generate-command.js"
import { version } from "./package-info.js"
import { planCommand } from "./plan-command.js"
import { cliServices, runMain } from "./node-services.js"
import { trainCommand } from "./train-command.js"

const miniseq = Command.make("miniseq").pipe(
  Command.withDescription("Mini-Sequence Transformer training: chunked MLP and LM head, exact memory plans"),
  Command.withSubcommands([trainCommand, planCommand, benchCommand, generateCommand]),
)

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

Command.run(miniseq, { version }).pipe(
  Effect.catchIf(isOurs, (e) =>
    Console.error(`miniseq: ${e._tag}: ${e.message}`).pipe(
      Effect.andThen(
        Effect.sync(() => {
          process.exitCode = 1
        }),
      ),
    ),
  ),
  Effect.provide(cliServices),
  runMain,
)
