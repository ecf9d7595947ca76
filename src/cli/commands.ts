/** The `miniseq` command tree, and running it on arguments with every failure reported as one line. */
import { Effect } from "effect"
import { CliOutput, Command } from "effect/cli"
import { benchCommand } from "./bench-command.js"
import { generateCommand } from "./generate-command.js"
import { cliServices } from "./node-services.js"
import { version } from "./package-info.js"
import { planCommand } from "./plan-command.js"
import { exitCode, presenter } from "./report.js"
import { trainCommand } from "./train-command.js"

export const miniseq = Command.make("miniseq").pipe(
  Command.withDescription(
    "Mini-Sequence Transformer training: chunked MLP and LM head, exact memory plans. Errors are one line; MINISEQ_DEBUG=1 adds stack traces",
  ),
  Command.withSubcommands([trainCommand, planCommand, benchCommand, generateCommand]),
)

/** `miniseq ...args`: its exit code, having printed what it prints (parse errors and failures as one line). */
export const runMiniseq = (args: readonly string[]) =>
  Command.runWith(miniseq, { version })(args).pipe(
    exitCode,
    Effect.provide(CliOutput.layerPresenter(presenter)),
    Effect.provide(cliServices),
  )
