// The built `miniseq` as a user runs it: bad values never hang, a step that cannot fit the
// machine is refused before anything is allocated, and Ctrl-C inside a long step stops it at
// once and says how to resume. Each case is spawned with a deadline of its own.
import { existsSync } from "node:fs"
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { spawnCli as miniseq } from "./cli-helpers.js"

const lines = (text: string) => text.split("\n").filter((l) => l.trim() !== "")

let dir = ""
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "miniseq-reliability-"))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe("miniseq train, spawned", () => {
  it("a bad --memory-limit (12XB, 0, abc, 1e400) exits non-zero with one line, and never hangs", async () => {
    const values = ["12XB", "0", "abc", "1e400"]
    const runs = await Promise.all(
      values.map((v) => miniseq(["train", "--memory-limit", v, "--out", join(dir, `never-${v}`)], 30)),
    )
    runs.forEach((r, i) => {
      expect(r.timedOut, values[i]).toBe(false)
      expect(r.code, values[i]).toBe(1)
      expect(lines(r.stderr)).toEqual([
        `miniseq: BadConfig: --memory-limit must be a size of at least one byte such as 80GB, 512MiB or 1.5e9 (GB = GiB = 2^30), got "${values[i]}"`,
      ])
      expect(r.stdout).toBe("") // no progress bar was started
    })
    // Nothing was created for a run that never started.
    expect(existsSync(join(dir, "never-0"))).toBe(false)
  })

  it("a step whose plan exceeds the host's RAM is refused before allocating, with the planner's advice", async () => {
    const out = join(dir, "huge-batch")
    const r = await miniseq(["train", "--batch", "1000000", "--steps", "1", "--out", out], 60)
    expect(r.timedOut).toBe(false)
    expect(r.code).toBe(1)
    const [line, ...rest] = lines(r.stderr)
    expect(rest).toEqual([])
    expect(line).toMatch(
      /^miniseq: OutOfMemory: this step needs [\d.]+ TiB \(the planner, --mode mst\) but (this machine's available RAM|this process's memory limit) is [\d.]+ [GMT]iB, so nothing was allocated; /,
    )
    // The advice is a batch (or sequence length) the planner found to fit.
    const advice = /--batch (\d+) or --seq (\d+) fits/.exec(line!)
    expect(advice, line).not.toBeNull()
    expect(Number(advice![1])).toBeLessThan(1000000)
    // No step ran: no checkpoint, no step records.
    const left = existsSync(out) ? await readdir(out) : []
    expect(left).not.toContain("checkpoints")
    expect(left).not.toContain("steps.jsonl")
  })

  it("llama3-8b on the CPU is refused in seconds (it once thrashed the machine for 16 minutes)", async () => {
    const r = await miniseq(["train", "--model", "llama3-8b", "--out", join(dir, "8b")], 120)
    expect(r.timedOut).toBe(false)
    expect(r.code).toBe(1)
    expect(lines(r.stderr)).toHaveLength(1)
    expect(r.stderr).toMatch(
      /^miniseq: OutOfMemory: this step needs \d+ GiB .* so nothing was allocated; .*the weights, gradients and AdamW moments alone need [\d.]+ GiB; choose a smaller model/,
    )
  })

  it("Ctrl-C inside a long step stops it within ~2 s, saves nothing half-done, and says how to resume", async () => {
    // A model whose one step takes about a minute on the reference CPU backend of a 2-core
    // machine (4096 tokens at 57 tokens/s), so the signal, 2 s in, lands inside the first step.
    const config = join(dir, "slow.json")
    await writeFile(
      config,
      JSON.stringify({
        hidden_size: 256,
        intermediate_size: 1024,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 4,
        vocab_size: 256,
        max_position_embeddings: 1024,
      }),
    )
    const out = join(dir, "interrupted")
    const args = ["train", "--config", config, "--backend", "cpu", "--batch", "8", "--seq", "512", "--steps", "3"]
    let signalledAt = 0
    const r = await miniseq([...args, "--out", out], 90, (line, child, mark) => {
      if (!line.startsWith("miniseq train:") || signalledAt > 0) return
      signalledAt = performance.now()
      // Set-up (graphs, initial weights) takes well under a second; then the step is running.
      setTimeout(() => {
        mark()
        child.kill("SIGINT")
      }, 2000)
    })
    expect(r.timedOut).toBe(false)
    expect(signalledAt).toBeGreaterThan(0)
    expect(r.code).toBe(130)
    expect(r.seconds, `stopped ${r.seconds.toFixed(2)} s after SIGINT`).toBeLessThan(3)
    expect(r.stderr).toContain(
      "miniseq: interrupted; nothing half-done was saved. The same command starts over (no checkpoint was saved yet): miniseq train --config",
    )
    expect(r.stderr).not.toMatch(/\n\s+at /)
    // The run's record says so; no step finished and no checkpoint (or temporary) was left.
    const record = JSON.parse(await readFile(join(out, "run.json"), "utf8"))
    expect(record.status).toBe("interrupted")
    expect(record.records).toEqual([])
    const checkpoints = existsSync(join(out, "checkpoints")) ? await readdir(join(out, "checkpoints")) : []
    expect(checkpoints).toEqual([])
  })

  it("a flag-parse error and an out-of-range seed are one line, without the help or a stack", async () => {
    const [parse, seed] = await Promise.all([
      miniseq(["train", "--seq", "abc"], 30),
      miniseq(["train", "--seed", "-9007199254740993"], 30),
    ])
    expect(lines(parse.stderr)).toEqual([
      'miniseq: --seq must be a whole number (e.g. 8), got "abc"; run `miniseq train --help` for the flags',
    ])
    expect(parse.stdout).toBe("") // not the whole help
    expect(seed.code).toBe(1)
    expect(lines(seed.stderr)).toHaveLength(1)
    expect(seed.stderr).toMatch(/^miniseq: .*--seed/)
  })
})
