// Checkpoints that cannot lie: every tensor's checksum verified on load (any flipped byte of any of
// the three files is caught or changes nothing), non-finite state never saved nor loaded, temporaries
// of dead saves removed, older checkpoints still loaded, and a resume compares run, model and data.
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Cause, Effect, Exit } from "effect"
import fc from "fast-check"
import { crc32 } from "node:zlib"
import { afterAll, describe, expect, it } from "vitest"
import { cpuBackendLayer } from "../src/backends/cpu/index.js"
import { BadCheckpoint, NonFiniteLoss } from "../src/core/errors.js"
import {
  type CheckpointState,
  cleanCheckpointDir,
  crc32Portable,
  loadCheckpoint,
  matchRun,
  saveCheckpoint,
} from "../src/models/checkpoint.js"
import { decodeConfigSync } from "../src/models/config.js"
import { makeBatches } from "../src/models/data.js"
import { writeSafetensorsAtomic } from "../src/models/safetensors.js"
import { train } from "../src/models/train.js"

const dirs: string[] = []
const tempDir = async () => {
  const d = await mkdtemp(join(tmpdir(), "miniseq-ck-"))
  dirs.push(d)
  return d
}
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})

const shapes = { "a.weight": [2, 3], "b.weight": [4] }
const filled = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.7 + k) * 0.1)
const state: CheckpointState = {
  step: 6,
  run: { seed: 5, batch: 2, lr: 0.01, precision: "fp32" },
  model: { hidden_size: 8, rope_theta: 10000, tie_word_embeddings: false },
  data: { corpus: "data/corpus.txt", sha256: "ab".repeat(32), tokenizer: "byte" },
  parameters: { "a.weight": filled(6, 1), "b.weight": filled(4, 2) },
  m: { "a.weight": filled(6, 3), "b.weight": filled(4, 4) },
  v: { "a.weight": filled(6, 5).map(Math.abs), "b.weight": filled(4, 6).map(Math.abs) },
}
const expected = { run: state.run!, model: state.model!, data: state.data! }
const resume = (path: string) =>
  Effect.runPromiseExit(
    Effect.gen(function* () {
      const s = yield* loadCheckpoint(path, shapes)
      yield* matchRun(s, expected, path)
      return s
    }),
  )
const failure = (exit: Exit.Exit<unknown, unknown>) => (Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined)
const bits = (xs: Record<string, Float32Array>) =>
  Object.fromEntries(
    Object.entries(xs).map(([n, a]) => [n, Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length))]),
  )

describe("checkpoint integrity", () => {
  it("saves a checksum per tensor and format 2, and loads them verified", async () => {
    const dir = await tempDir()
    const path = await Effect.runPromise(saveCheckpoint(dir, state, shapes))
    const header = (await readFile(join(path, "model.safetensors"))).toString("latin1")
    expect(header).toMatch(/"crc32:a\.weight":"[0-9a-f]{8}"/)
    const trainerState = JSON.parse(await readFile(join(path, "trainer_state.json"), "utf8"))
    expect(trainerState).toMatchObject({ format: 2, step: 6, model: state.model, data: state.data })
    const exit = await resume(path)
    expect(Exit.isSuccess(exit) && exit.value.checksums).toBe("crc32")
  })

  it("every flipped byte of any of the three files is refused as a BadCheckpoint, or changes nothing loaded", async () => {
    const dir = await tempDir()
    const path = await Effect.runPromise(saveCheckpoint(dir, state, shapes))
    const files = ["model.safetensors", "optimizer.safetensors", "trainer_state.json"]
    const original = await Promise.all(files.map((f) => readFile(join(path, f))))
    const scratch = join(await tempDir(), "step-00000006")
    await mkdir(scratch)
    let caught = 0
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 2 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        fc.integer({ min: 1, max: 255 }),
        async (file, where, mask) => {
          await Promise.all(files.map((f, i) => writeFile(join(scratch, f), original[i]!)))
          const bytes = Buffer.from(original[file]!)
          const offset = Math.floor(where * bytes.length)
          bytes[offset]! ^= mask
          await writeFile(join(scratch, files[file]!), bytes)
          const exit = await resume(scratch)
          if (Exit.isFailure(exit)) {
            expect(failure(exit), `${files[file]} @${offset} ^${mask}`).toBeInstanceOf(BadCheckpoint)
            caught++
            return
          }
          // Not caught: then it is harmless (whitespace in the JSON, the "format": "pt" tag…).
          const s = exit.value
          expect(s.step).toBe(6)
          expect([bits(s.parameters), bits(s.m), bits(s.v)]).toEqual([
            bits(state.parameters),
            bits(state.m),
            bits(state.v),
          ])
        },
      ),
      { numRuns: 300 },
    )
    expect(caught).toBeGreaterThan(240)
  })

  it("every byte of every file, one bit flipped: caught (tensor data: named by its checksum) or loaded unchanged", async () => {
    const dir = await tempDir()
    const path = await Effect.runPromise(saveCheckpoint(dir, state, shapes))
    const harmless: string[] = []
    for (const name of ["model.safetensors", "optimizer.safetensors", "trainer_state.json"]) {
      const file = join(path, name)
      const original = await readFile(file)
      const dataStart = name.endsWith(".json") ? Infinity : 8 + Number(original.readBigUInt64LE(0))
      for (let offset = 0; offset < original.length; offset++) {
        const bytes = Buffer.from(original)
        bytes[offset]! ^= 1 << (offset % 8)
        await writeFile(file, bytes)
        const exit = await resume(path)
        const error = failure(exit) as BadCheckpoint | undefined
        if (offset >= dataStart) {
          expect(error).toBeInstanceOf(BadCheckpoint)
          expect(error!.message).toMatch(/tensor "([mv]\.)?[ab]\.weight" fails its checksum/)
          expect(error!.tensor).toMatch(/^([mv]\.)?[ab]\.weight$/)
        } else if (error !== undefined) expect(error, `${name} @${offset}`).toBeInstanceOf(BadCheckpoint)
        else {
          const tag = original.indexOf('"format":"pt"')
          harmless.push(
            `${name} @${offset - tag}: ${JSON.stringify(original.toString("latin1", offset - 6, offset + 2))}`,
          )
          const s = (exit as Exit.Success<CheckpointState>).value
          expect([s.step, bits(s.parameters), bits(s.m), bits(s.v)]).toEqual([
            6,
            bits(state.parameters),
            bits(state.m),
            bits(state.v),
          ])
        }
      }
      await writeFile(file, original)
    }
    // Only bytes nothing loaded depends on: those of the "format":"pt" tag transformers reads.
    expect(harmless.join("\n")).toMatch(/^(model\.safetensors @([1-9]|1[0-2]): .*\n?)*$/)
  })

  it("the portable CRC-32 (browsers, Node < 20.16) equals zlib's", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => crc32Portable(bytes) === crc32(bytes)))
  })

  it("loads a format-1 checkpoint (no checksums), unverified, and still refuses its non-finite tensors", async () => {
    const dir = await tempDir()
    const old = join(dir, "step-00000006")
    await mkdir(old)
    const t = (xs: Record<string, Float32Array>, prefix = "") =>
      Object.fromEntries(
        Object.entries(xs).map(([n, data]) => [
          `${prefix}${n}`,
          { dtype: "float32" as const, shape: shapes[n as keyof typeof shapes], data },
        ]),
      )
    const write = async (params: Record<string, Float32Array>) => {
      await writeSafetensorsAtomic(join(old, "model.safetensors"), t(params), { format: "pt", step: "6" })
      await writeSafetensorsAtomic(
        join(old, "optimizer.safetensors"),
        { ...t(state.m, "m."), ...t(state.v, "v.") },
        { step: "6" },
      )
    }
    await write(state.parameters)
    await writeFile(join(old, "trainer_state.json"), JSON.stringify({ step: 6, run: state.run }))
    const exit = await resume(old)
    expect(Exit.isSuccess(exit) && exit.value.checksums).toBe("none")
    const nan = { ...state.parameters, "b.weight": Float32Array.of(0, Number.NaN, 0, 0) }
    await write(nan)
    expect(String(failure(await resume(old)))).toMatch(
      /tensor "b\.weight" holds NaN at element 1; training had diverged/,
    )
    // Without its run options a trainer_state.json is refused, not skipped.
    await write(state.parameters)
    await writeFile(join(old, "trainer_state.json"), JSON.stringify({ step: 6 }))
    expect(String(failure(await resume(old)))).toMatch(/BadCheckpoint[\s\S]*has no "run" \(the run's options\)/)
    await writeFile(join(old, "trainer_state.json"), JSON.stringify({ step: 6, run: { seed: 5 } }))
    expect(String(failure(await resume(old)))).toMatch(/lacks the run options batch, lr, precision/)
  })

  it("never saves a non-finite weight or moment, and a failed save leaves no temporary folder", async () => {
    const dir = await tempDir()
    const bad = { ...state, m: { ...state.m, "a.weight": Float32Array.of(0, 0, Infinity, 0, 0, 0) } }
    const error = failure(await Effect.runPromiseExit(saveCheckpoint(dir, bad, shapes))) as BadCheckpoint
    expect(error).toBeInstanceOf(BadCheckpoint)
    expect(error.message).toContain('not saved: tensor "m.a.weight" holds Infinity at element 2')
    expect(await readdir(dir)).toEqual([])
  })

  it("removes the temporary folders of dead processes' saves, and leaves a live process's alone", async () => {
    const dir = await tempDir()
    const dead = join(dir, "step-00000004.tmp-99999999"),
      live = join(dir, `step-00000004.tmp-${process.ppid}`)
    for (const d of [dead, live]) {
      await mkdir(d)
      await writeFile(join(d, "model.safetensors"), "partial")
    }
    const removed = await Effect.runPromise(cleanCheckpointDir(dir))
    expect(removed).toEqual(["step-00000004.tmp-99999999"])
    expect(await readdir(dir)).toEqual([`step-00000004.tmp-${process.ppid}`])
  })
})

describe("training never saves what it cannot resume from", () => {
  const model = decodeConfigSync({
    hidden_size: 16,
    intermediate_size: 32,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    vocab_size: 32,
    max_position_embeddings: 32,
  })
  const tokens = Int32Array.from({ length: 600 }, (_, i) => (i * 7) % 32)
  const batches = makeBatches({ tokens, batch: 1, seq: 16, seed: 1 })
  const base = { model, mode: "mst" as const, batch: 1, seq: 16, steps: 3, lr: 1e-2, warmup: 0, seed: 1 }
  const run = (opts: Partial<Parameters<typeof train>[0]>) =>
    Effect.runPromiseExit(train({ ...base, ...opts }, batches).pipe(Effect.provide(cpuBackendLayer())))

  it("an update that makes the weights non-finite under a finite loss is a NonFiniteLoss, and nothing is saved", async () => {
    const dir = await tempDir()
    const exit = await run({ lr: 1e39, checkpointDir: dir, checkpointEvery: 1 }) // lr overflows fp32
    const error = failure(exit) as NonFiniteLoss
    expect(error).toBeInstanceOf(NonFiniteLoss)
    expect(error.step).toBe(1)
    expect(Number.isFinite(error.loss)).toBe(true)
    expect(error.tensor).toBeDefined()
    expect(error.message).toMatch(/the update of step 1 left (weight|AdamW moment) ".+" (NaN|-?Infinity)/)
    expect(error.message).toContain("train into another directory with a lower --lr")
    expect(await readdir(dir)).toEqual([])
  })

  it("a resume compares the whole model config and the data source", async () => {
    const dir = await tempDir()
    const data = { corpus: "a.txt", sha256: "00".repeat(32), tokenizer: "byte" }
    expect(Exit.isSuccess(await run({ steps: 2, checkpointDir: dir, data }))).toBe(true)
    const rope = await run({ steps: 2, checkpointDir: dir, data, model: { ...model, rope_theta: 500000 } })
    expect(String(failure(rope))).toMatch(
      /belongs to a run with model rope_theta 10000; this run has model rope_theta 500000/,
    )
    const other = await run({
      steps: 2,
      checkpointDir: dir,
      data: { ...data, corpus: "b.txt", sha256: "11".repeat(32) },
    })
    expect(String(failure(other))).toMatch(
      /data corpus a\.txt, data sha256 0{64}; this run has data corpus b\.txt, data sha256 1{64}/,
    )
    const bpe = await run({ steps: 2, checkpointDir: dir, data: { ...data, tokenizer: "cl100k_base" } })
    expect(String(failure(bpe))).toMatch(/data tokenizer byte; this run has data tokenizer cl100k_base/)
    const same = await run({ steps: 2, checkpointDir: dir, data })
    expect(Exit.isSuccess(same) && same.value).toMatchObject({ resumedFrom: 2, resumedChecksums: "crc32" })
  })
})
