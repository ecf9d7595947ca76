// The command line with Hugging Face files: `train --init-from` a folder (its weights are what
// step 1 scores: checked against the library's loss on the same batch), its tokenizer.json with
// documents separated by EOS, and `generate` from the run and from the folder (checked against
// the library's greedy generation).
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { cpuBackendLayer } from "../src/backends/cpu/index.js"
import type { HostArray } from "../src/core/dtype.js"
import { evaluate } from "../src/core/executor.js"
import type { Tensor } from "../src/core/graph.js"
import { fillNormal, rng } from "../src/core/random.js"
import { decodeConfigSync } from "../src/models/config.js"
import { makeBatches, trainValSplit } from "../src/models/data.js"
import { generate } from "../src/models/generate.js"
import { llamaLoss, parameterShapes } from "../src/models/llama.js"
import { loadPretrained, readTokenizerFile } from "../src/models/pretrained.js"
import { encodeSafetensors } from "../src/models/safetensors.js"
import { corpusIds, promptIds } from "../src/models/tokenizer.js"
import { runCli as run } from "./cli-helpers.js"

const fixture = join(import.meta.dirname, "fixtures", "tiny-tokenizer")
const rawConfig = {
  model_type: "llama",
  architectures: ["LlamaForCausalLM"],
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  vocab_size: 261,
  max_position_embeddings: 64,
  tie_word_embeddings: true,
}
const config = decodeConfigSync(rawConfig)
const weights = Object.fromEntries(
  Object.entries(parameterShapes(config)).map(([n, shape], k) => {
    const a = new Float32Array(shape.reduce((x, y) => x * y, 1))
    return [n, shape.length === 1 ? a.fill(1) : fillNormal(rng(7 + k), a, 0.3)]
  }),
)
const corpusText = Array.from({ length: 30 }, (_, i) => `the whale ${i} he saw the sea`).join("</s>")

let root = ""
let hfDir = ""
let corpus = ""
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "miniseq-hfcli-"))
  hfDir = join(root, "hf")
  await mkdir(hfDir)
  await writeFile(join(hfDir, "config.json"), JSON.stringify(rawConfig))
  const tensors = Object.fromEntries(
    Object.entries(weights).map(([n, data]) => [
      n,
      { dtype: "float32" as const, shape: parameterShapes(config)[n]!, data },
    ]),
  )
  await writeFile(join(hfDir, "model.safetensors"), encodeSafetensors(tensors, { format: "pt" }))
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) await copyFile(join(fixture, f), join(hfDir, f))
  corpus = join(root, "corpus.txt")
  await writeFile(corpus, corpusText)
})
afterAll(async () => {
  await rm(root, { recursive: true, force: true })
})

const runWith = <A>(e: Effect.Effect<A, unknown, never>) => Effect.runPromise(e)

describe("miniseq train --init-from and generate", () => {
  it("trains from the folder's weights with its tokenizer.json; step 1's loss is the library's loss of those weights", async () => {
    const out = join(root, "run")
    const args = ["--steps", "2", "--batch", "2", "--seq", "16", "--warmup", "1", "--corpus", corpus, "--out", out]
    const r = await run("train", "--init-from", hfDir, ...args, "--sample", "6")
    expect(r.code, r.out).toBe(0)
    expect(r.out).toContain(`miniseq train: ${hfDir}`)
    expect(r.out).toContain(`tokenizer ${join(hfDir, "tokenizer.json")}`)
    expect(r.out).toMatch(/sample \(held-out prompt, then \d+ tokens/)

    // The reference: the same batch (documents cut at </s>, each <s> … </s>), the folder's weights.
    const { tokenizer } = await runWith(readTokenizerFile(join(hfDir, "tokenizer.json")))
    const ids = corpusIds(tokenizer, corpusText)
    expect(ids[0]).toBe(259) // <s>
    expect(Array.from(ids).filter((t) => t === 260).length).toBe(30) // one </s> per document
    const batch = makeBatches({ tokens: trainValSplit(ids).train, batch: 2, seq: 16, seed: 1 }).batchAt(0)
    const g = llamaLoss(config, 2, 16, { mode: "vanilla" })
    const feeds = new Map<Tensor, HostArray>(Object.entries(g.params).map(([n, t]) => [t, weights[n]!]))
    feeds.set(g.tokens, batch.tokens)
    feeds.set(g.targets, batch.targets)
    feeds.set(g.count, Float32Array.of(32))
    const [want] = (await runWith(evaluate([g.loss], feeds).pipe(Effect.provide(cpuBackendLayer())))).values
    const first = JSON.parse((await readFile(join(out, "steps.jsonl"), "utf8")).split("\n")[0]!)
    expect(first.step).toBe(1)
    expect(Math.abs(first.loss - want![0]!) / want![0]!).toBeLessThan(1e-5)

    // run.json records where the weights came from, not the weights (a 1B model's would not fit a string).
    const record = await readFile(join(out, "run.json"), "utf8")
    expect(JSON.parse(record).options.initialParameters).toBeUndefined()
    expect(record).not.toContain(String(weights["model.embed_tokens.weight"]![1]))

    // The checkpoint is a Hugging Face folder too, and records where it started.
    const step = join(out, "checkpoints", "step-00000002")
    const state = JSON.parse(await readFile(join(step, "trainer_state.json"), "utf8"))
    expect(state.data).toMatchObject({ initFrom: hfDir, tokenizer: join(hfDir, "tokenizer.json") })
    expect(state.data.tokenizerSha256).toMatch(/^[0-9a-f]{64}$/)
    expect(JSON.parse(await readFile(join(step, "config.json"), "utf8"))).toMatchObject({
      model_type: "llama",
      architectures: ["LlamaForCausalLM"],
      torch_dtype: "float32",
      vocab_size: 261,
    })

    // generate --from the run: its newest checkpoint, the tokenizer it trained with; greedy is
    // what the library's generate writes with the checkpoint's weights.
    const gen = await run(
      "generate",
      "--from",
      out,
      "--prompt",
      "the whale",
      "--max-new-tokens",
      "8",
      "--temperature",
      "0",
    )
    expect(gen.code, gen.out).toBe(0)
    const trained = await runWith(loadPretrained(step))
    const greedy = await runWith(
      generate(trained.config, trained.parameters, promptIds(tokenizer, "the whale"), {
        maxNewTokens: 8,
        temperature: 0,
        eos: 260,
      }).pipe(Effect.provide(cpuBackendLayer())),
    )
    expect(gen.out.split("\n")[0]).toBe(`the whale${tokenizer.decode(greedy.tokens)}`.split("\n")[0])
    expect(gen.out).toContain(`${step}: ${greedy.tokens.length} tokens`)
  })

  it("a resume needs only the folder's config.json (its weights are not read again); another folder is refused", async () => {
    const copy = join(root, "hf-copy")
    await mkdir(copy)
    for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
      await copyFile(join(hfDir, f), join(copy, f))
    const out = join(root, "run-resume")
    const args = [
      "train",
      "--steps",
      "2",
      "--batch",
      "2",
      "--seq",
      "16",
      "--corpus",
      corpus,
      "--out",
      out,
      "--sample",
      "0",
    ]
    const first = await run(...args, "--init-from", copy)
    expect(first.code, first.out).toBe(0)
    await rm(join(copy, "model.safetensors"))
    const again = await run(...args, "--init-from", copy)
    expect(again.code, again.out).toBe(0)
    expect(again.out).toContain("resumed from the checkpoint of step 2")
    const other = await run(...args, "--init-from", hfDir)
    expect(other.code).not.toBe(0)
    expect(other.out).toMatch(/belongs to a run with data initFrom .*hf-copy.*; this run has data initFrom .*hf\b/)
  })

  it("generate --from a Hugging Face folder uses the tokenizer.json beside it; a seed reproduces a sample", async () => {
    const args = ["generate", "--from", hfDir, "--prompt", "he", "--max-new-tokens", "6", "--seed", "4"]
    const [a, b] = [await run(...args), await run(...args)]
    expect(a.code, a.out).toBe(0)
    expect(a.out).toBe(b.out.replace(/in \d+\.\d+ s/, a.out.match(/in \d+\.\d+ s/)![0]))
    expect(a.out).toContain(`tokenizer ${join(hfDir, "tokenizer.json")}`)
  })

  it("refuses what cannot work, in one line naming the fix", async () => {
    const cases: Array<[string[], string]> = [
      [
        ["train", "--init-from", hfDir, "--model", "tiny-bpe"],
        "takes the model from its config.json; leave out --model and --config",
      ],
      [
        ["train", "--init-from", hfDir, "--tokenizer", "cl100k_base"],
        "has 100277 tokens but the model's vocab_size is 261",
      ],
      [["train", "--init-from", join(root, "nowhere")], "config.json does not exist"],
      [
        ["train", "--tokenizer", join(root, "none.json")],
        "does not exist; --tokenizer takes byte, cl100k_base or the path",
      ],
      [["generate", "--from", root, "--prompt", "x"], "is neither a run folder (with checkpoints/)"],
      [["generate", "--from", hfDir, "--prompt", "x", "--top-p", "2"], "--top-p must be in (0, 1]"],
    ]
    const results = await Promise.all(cases.map(([args]) => run(...args)))
    results.forEach((r, i) => {
      expect(r.code, cases[i]![0].join(" ")).not.toBe(0)
      expect(r.out).toContain(cases[i]![1])
      expect(r.out).not.toMatch(/\n\s+at /)
    })
  })
})
