// Running the built `miniseq` command as a user would: exit code and everything it printed.
import { execFile, spawn } from "node:child_process"
import { promisify } from "node:util"

export const runCli = async (...args: string[]): Promise<{ code: number; out: string }> => {
  try {
    const { stdout, stderr } = await promisify(execFile)("node", ["bin/miniseq.js", ...args], { timeout: 120_000 })
    return { code: 0, out: stdout + stderr }
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string }
    return { code: err.code ?? 1, out: (err.stdout ?? "") + (err.stderr ?? "") }
  }
}

export interface Finished {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
  /** Seconds from the start (or from `onLine`'s signal) to the exit. */
  readonly seconds: number
  readonly timedOut: boolean
}

/**
 * Spawns `miniseq ...args`, killed (and marked timed out) after `deadline` seconds. `onLine`
 * hears each stdout or stderr line with the child, e.g. to send it a signal; `seconds` then
 * counts from that signal.
 */
export function spawnCli(
  args: readonly string[],
  deadline: number,
  onLine?: (line: string, child: ReturnType<typeof spawn>, mark: () => void) => void,
): Promise<Finished> {
  return new Promise((done) => {
    const child = spawn("node", ["bin/miniseq.js", ...args], { stdio: ["ignore", "pipe", "pipe"] })
    let started = performance.now()
    let stdout = ""
    let stderr = ""
    let timedOut = false
    const mark = () => {
      started = performance.now()
    }
    const timer = setTimeout(() => {
      timedOut = true
      child.kill("SIGKILL")
    }, deadline * 1000)
    const listen = (into: "out" | "err") => (chunk: Buffer) => {
      const text = chunk.toString()
      if (into === "out") stdout += text
      else stderr += text
      for (const line of text.split("\n")) if (line !== "") onLine?.(line, child, mark)
    }
    child.stdout!.on("data", listen("out"))
    child.stderr!.on("data", listen("err"))
    child.on("exit", (code, signal) => {
      clearTimeout(timer)
      done({ code, signal, stdout, stderr, seconds: (performance.now() - started) / 1000, timedOut })
    })
  })
}
