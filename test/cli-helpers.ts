// Running the built `miniseq` command as a user would: exit code and everything it printed.
import { execFile } from "node:child_process"
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
