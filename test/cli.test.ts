// The command line as a user meets it: bad arguments are one clear line and a non-zero exit;
// a short training run writes its record and plots, and running it again resumes.
import { spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { runCli } from "./cli-helpers.js"

const run = runCli

const dirs: string[] = []
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})

describe("miniseq CLI", () => {
  it("rejects bad arguments with one line naming the flag and the fix", async () => {
    const cases: Array<[string[], string]> = [
      [
        ["train", "--seq", "abc"],
        'miniseq: --seq must be a whole number (e.g. 8), got "abc"; run `miniseq train --help`',
      ],
      [
        ["train", "--mlp-chunks", "0"],
        'miniseq: BadConfig: --mlp-chunks must be a positive integer or "auto", got "0"',
      ],
      [
        ["train", "--seq", "5000"],
        "miniseq: ShapeError: sequence length 5000 exceeds the model's max_position_embeddings (1024)",
      ],
      [["train", "--tokenizer", "cl100k_base"], "pick a model with a larger vocabulary (e.g. --model tiny-bpe)"],
      [["plan", "--model", "nope"], 'miniseq: BadConfig: unknown model "nope"; choose one of: tiny,'],
      [
        ["plan", "--max-seq", "--memory", "lots"],
        '--memory must be a size of at least one byte such as 80GB, 512MiB or 1.5e9 (GB = GiB = 2^30), got "lots"',
      ],
      [
        ["train", "--memory-limit", "4MiB", "--steps", "1", "--out", join(tmpdir(), `miniseq-oom-${process.pid}`)],
        "miniseq: OutOfMemory: out of memory: asked for",
      ],
      [["plan", "--config", "/nonexistent/config.json"], "miniseq: BadConfig: cannot read /nonexistent/config.json"],
    ]
    const results = await Promise.all(cases.map(([args]) => run(...args)))
    results.forEach((r, i) => {
      expect(r.code, cases[i]![0].join(" ")).not.toBe(0)
      expect(r.out).toContain(cases[i]![1])
      expect(r.out).not.toMatch(/\n\s+at /) // a message, not a stack trace
    })
  })

  it("--help describes every flag, with its default", async () => {
    for (const command of ["train", "plan", "bench"]) {
      const r = await run(command, "--help")
      expect(r.code).toBe(0)
      const flags = r.out
        .slice(r.out.indexOf("FLAGS\n") + 6, r.out.indexOf("GLOBAL FLAGS"))
        .trim()
        .split("\n")
      expect(flags.length).toBeGreaterThan(5)
      for (const line of flags) {
        const m = /^--([a-z-]+) (?:string|integer|number|choice)?\s+(\S.*)$/.exec(line.trim())
        expect(m, `${command}: ${line}`).not.toBeNull()
        // Flags without a default are optional (--config, --corpus, --memory-limit,
        // --host-memory-limit) or off (--max-seq).
        if (!["config", "corpus", "memory-limit", "host-memory-limit", "max-seq"].includes(m![1]!))
          expect(m![2], `${command} --${m![1]}`).toContain("(default: ")
      }
    }
  })

  it("plans every mode, and finds the longest sequence that fits", async () => {
    const r = await run("plan", "--model", "tiny", "--seq", "256", "--target", "cpu", "--precision", "fp32")
    expect(r.code).toBe(0)
    for (const mode of ["vanilla", "checkpoint", "mst", "mst+checkpoint"])
      expect(r.out).toMatch(new RegExp(`\\n${mode.replace("+", "\\+")}\\s+256 `))
    const m = await run(
      "plan",
      "--model",
      "tiny-bpe",
      "--max-seq",
      "--memory",
      "1GiB",
      "--granularity",
      "256",
      "--precision",
      "fp32",
    )
    expect(m.code).toBe(0)
    const seq = (mode: string) => Number(new RegExp(`\\n${mode.replace("+", "\\+")}\\s+(\\d+) `).exec(m.out)?.[1])
    expect(seq("mst")).toBeGreaterThan(seq("vanilla"))
    expect(seq("mst+checkpoint")).toBeGreaterThanOrEqual(seq("mst"))
  })

  it("trains, writes run.json and the plots, and resumes instead of starting over", async () => {
    const out = await mkdtemp(join(tmpdir(), "miniseq-cli-"))
    dirs.push(out)
    const args = [
      "train",
      "--steps",
      "4",
      "--batch",
      "2",
      "--seq",
      "32",
      "--warmup",
      "1",
      "--checkpoint-every",
      "2",
      "--out",
      out,
    ]
    const first = await run(...args)
    expect(first.code, first.out).toBe(0)
    expect(first.out).toMatch(/loss \d+\.\d+ \(step 1\) → \d+\.\d+ \(step 4\)/)
    expect((await readdir(out)).sort()).toEqual(["checkpoints", "loss.svg", "memory.svg", "run.json", "steps.jsonl"])
    const record = JSON.parse(await readFile(join(out, "run.json"), "utf8"))
    expect(record.records.map((r: { step: number }) => r.step)).toEqual([1, 2, 3, 4])
    expect(record).toMatchObject({
      status: "completed",
      model: "tiny",
      backend: "cpu-fast",
      precision: "fp32",
      tokenizer: "byte",
      steps: 4,
    })
    expect(record.miniseq).toBe(JSON.parse(await readFile("package.json", "utf8")).version)
    expect(record.corpus.path).toMatch(/data\/corpus\.txt$/)
    expect(record.corpus.sha256).toMatch(/^[0-9a-f]{64}$/)
    expect(Date.parse(record.started)).not.toBeNaN()
    expect(await readFile(join(out, "loss.svg"), "utf8")).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/)
    const again = await run(...args.map((a) => (a === "4" ? "6" : a)))
    expect(again.code).not.toBe(0) // a longer schedule is a different run
    expect(again.out).toContain("belongs to a run with steps 4")
    const same = await run(...args)
    expect(same.code, same.out).toBe(0)
    expect(same.out).toContain("resumed from the checkpoint of step 4")
    // Re-running the finished run keeps its history: the same records, the same chart.
    const after = JSON.parse(await readFile(join(out, "run.json"), "utf8"))
    expect(after.records).toEqual(record.records)
    expect(after.started).toBe(record.started)
    expect(await readFile(join(out, "loss.svg"), "utf8")).toContain("<polyline")
    expect((await readFile(join(out, "steps.jsonl"), "utf8")).trim().split("\n")).toHaveLength(4)
  })

  it("an interrupted run leaves a complete run.json, and its resume restores the earlier records", async () => {
    const out = await mkdtemp(join(tmpdir(), "miniseq-cli-"))
    dirs.push(out)
    const args = [
      "bin/miniseq.js",
      "train",
      "--steps",
      "40",
      "--batch",
      "2",
      "--seq",
      "32",
      "--warmup",
      "1",
      "--checkpoint-every",
      "3",
      "--out",
      out,
    ]
    const steps = join(out, "steps.jsonl")
    const lines = async () => (existsSync(steps) ? (await readFile(steps, "utf8")).trim().split("\n").length : 0)
    const child = spawn("node", args, { stdio: "ignore" })
    const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)))
    while ((await lines()) < 4) await new Promise((r) => setTimeout(r, 50))
    child.kill("SIGINT")
    expect(await exited).not.toBe(0)
    const interrupted = JSON.parse(await readFile(join(out, "run.json"), "utf8"))
    expect(interrupted.status).toBe("interrupted")
    const done = interrupted.records.map((r: { step: number }) => r.step)
    expect(done.length).toBeGreaterThanOrEqual(4)
    expect(done).toEqual(Array.from({ length: done.length }, (_, i) => i + 1))
    expect(done.length).toBeLessThan(40)

    const resumed = await run(...args.slice(1))
    expect(resumed.code, resumed.out).toBe(0)
    const whole = JSON.parse(await readFile(join(out, "run.json"), "utf8"))
    expect(whole.status).toBe("completed")
    expect(whole.records.map((r: { step: number }) => r.step)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1))
    // The steps up to the checkpoint it resumed from are the interrupted run's own records.
    const from = whole.resumedFrom as number
    expect(from).toBeGreaterThanOrEqual(3)
    expect(whole.records.slice(0, from)).toEqual(interrupted.records.slice(0, from))
  })

  it("a failed run writes its record; titles and headers name the --config file", async () => {
    const out = await mkdtemp(join(tmpdir(), "miniseq-cli-"))
    dirs.push(out)
    const config = join(out, "my-config.json")
    await writeFile(
      config,
      JSON.stringify({
        hidden_size: 64,
        intermediate_size: 192,
        num_hidden_layers: 1,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        vocab_size: 256,
        rope_theta: 10000,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 1024,
        tie_word_embeddings: false,
      }),
    )
    const failed = await run(
      "train",
      "--config",
      config,
      "--memory-limit",
      "1MiB",
      "--steps",
      "2",
      "--out",
      join(out, "oom"),
    )
    expect(failed.code).not.toBe(0)
    const record = JSON.parse(await readFile(join(out, "oom", "run.json"), "utf8"))
    expect(record).toMatchObject({ status: "failed", model: config, steps: 0 })
    expect(record.error).toContain("OutOfMemory")
    const trained = await run(
      "train",
      "--config",
      config,
      "--steps",
      "2",
      "--batch",
      "1",
      "--seq",
      "32",
      "--out",
      join(out, "ok"),
    )
    expect(trained.code, trained.out).toBe(0)
    expect(trained.out).toContain(`miniseq train: ${config},`)
    expect(await readFile(join(out, "ok", "loss.svg"), "utf8")).toContain(
      `training loss (${config}, mst, cpu-fast, fp32)`,
    )
    const plan = await run("plan", "--config", config, "--seq", "256")
    expect(plan.out).toContain(`one training step, ${config},`)
    const bench = await run(
      "bench",
      "--config",
      config,
      "--seqs",
      "32",
      "--modes",
      "mst",
      "--steps",
      "1",
      "--json",
      join(out, "b.json"),
      "--svg",
      join(out, "b.svg"),
    )
    expect(bench.out).toContain(`miniseq bench: ${config} `)
  })
})
