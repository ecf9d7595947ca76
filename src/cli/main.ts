/** The `miniseq` command line: train, plan, bench. */
import { Effect } from "effect"
import { CliOutput, Command } from "effect/cli"
import { benchCommand } from "./bench-command.js"
import { cliServices, runMain } from "./node-services.js"
import { version } from "./package-info.js"
import { planCommand } from "./plan-command.js"
import { presenter, reportFailures } from "./report.js"
import { trainCommand } from "./train-command.js"

const miniseq = Command.make("miniseq").pipe(
  Command.withDescription("Mini-Sequence Transformer training: chunked MLP and LM head, exact memory plans"),
  Command.withSubcommands([trainCommand, planCommand, benchCommand]),
)

// Every failure is reported once, as one line (report.ts): the runner logs nothing more.
runMain(
  Command.run(miniseq, { version }).pipe(
    reportFailures,
    Effect.provide(CliOutput.layerPresenter(presenter)),
    Effect.provide(cliServices),
  ),
  { disableErrorReporting: true },
)
