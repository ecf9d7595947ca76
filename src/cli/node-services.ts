/**
 * What `effect/cli` needs from Node, and `runMain`, in a few lines of our own.
 *
 * `@effect/platform-node` provides the same, but it also brings an HTTP client (undici), a
 * WebSocket library and `engines: node >= 22.19`, none of which miniseq uses. The CLI needs only
 * the arguments, standard output and error, the terminal's width, and an entry point that turns
 * SIGINT/SIGTERM into an interruption (so finalizers — the run record — still run) and failures
 * into a non-zero exit code.
 */
import { Effect, FileSystem, Layer, Path, Runtime, Sink, Stdio, Stream, Terminal } from "effect"
import { ChildProcessSpawner } from "effect/process"

const write = (stream: NodeJS.WriteStream) => (chunk: string | Uint8Array) =>
  Effect.sync(() => {
    stream.write(chunk)
  })

const stdio = Stdio.make({
  args: Effect.sync(() => process.argv.slice(2)),
  stdinIsTerminal: Effect.sync(() => process.stdin.isTTY === true),
  stdoutIsTerminal: Effect.sync(() => process.stdout.isTTY === true),
  stderrIsTerminal: Effect.sync(() => process.stderr.isTTY === true),
  stdout: () => Sink.forEach(write(process.stdout)),
  stderr: () => Sink.forEach(write(process.stderr)),
  stdin: Stream.empty,
})

const terminal = Terminal.make({
  columns: Effect.sync(() => process.stdout.columns ?? 0),
  rows: Effect.sync(() => process.stdout.rows ?? 0),
  size: Effect.die("miniseq's CLI does not follow the terminal's size"),
  readInput: Effect.die("miniseq's CLI reads no keys"),
  readLine: Effect.die("miniseq's CLI reads no input"),
  display: (text) => write(process.stdout)(text),
})

/** The services `Command.run` asks for. miniseq's commands read files themselves: no FileSystem, no child processes. */
export const cliServices = Layer.mergeAll(
  FileSystem.layerNoop({}),
  Path.layer,
  Layer.succeed(Stdio.Stdio, stdio),
  Layer.succeed(Terminal.Terminal, terminal),
  Layer.succeed(
    ChildProcessSpawner.ChildProcessSpawner,
    ChildProcessSpawner.make(() => Effect.die("miniseq's CLI starts no processes")),
  ),
)

/** Runs the CLI: SIGINT/SIGTERM interrupt it (finalizers run), and the exit code follows its outcome. */
export const runMain = Runtime.makeRunMain(({ fiber, teardown }) => {
  let signalled = false
  const onSignal = () => {
    // A second Ctrl-C does not wait for the finalizers.
    if (signalled) process.exit(130)
    signalled = true
    fiber.interruptUnsafe(fiber.id)
  }
  fiber.addObserver((exit) => {
    process.removeListener("SIGINT", onSignal)
    process.removeListener("SIGTERM", onSignal)
    teardown(exit, (code) => {
      if (signalled || code !== 0) process.exit(code)
    })
  })
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
})
