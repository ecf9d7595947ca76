/** The `miniseq` command line: train, plan, bench, generate. */
import { Effect, Stdio } from "effect"
import { runMiniseq } from "./commands.js"
import { cliServices, runMain } from "./node-services.js"

// Every failure is reported once, as one line (report.ts): the runner logs nothing more.
runMain(
  Stdio.Stdio.use(({ args }) => args).pipe(
    Effect.flatMap(runMiniseq),
    Effect.flatMap((code) =>
      Effect.sync(() => {
        process.exitCode = code
      }),
    ),
    Effect.provide(cliServices),
  ),
  { disableErrorReporting: true },
)
