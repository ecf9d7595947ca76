// miniseq's logits and loss for a token sequence, from a model folder (a Hugging Face folder or a
// miniseq checkpoint step), as JSON on stdout: what check_from_pretrained.py compares with
// transformers. Needs `npm run build` first.
//
//   node scripts/golden/miniseq-forward.mjs FOLDER --tokens 1,2,3 [--dtype float32|float64]
import { Effect } from "effect"
import {
  cpuBackendLayer,
  evaluate,
  fastCpuBackendLayer,
  llamaForward,
  llamaLoss,
  loadPretrained,
} from "../../dist/index.js"

const [folder, ...rest] = process.argv.slice(2)
const flag = (name, fallback) => {
  const i = rest.indexOf(`--${name}`)
  return i >= 0 ? rest[i + 1] : fallback
}
if (folder === undefined || flag("tokens") === undefined) {
  console.error("usage: node scripts/golden/miniseq-forward.mjs FOLDER --tokens 1,2,3 [--dtype float32|float64]")
  process.exit(2)
}
const dtype = flag("dtype", "float32")
const ids = Int32Array.from(flag("tokens").split(",").map(Number))
const T = ids.length

const model = await Effect.runPromise(loadPretrained(folder))
const c = model.config
const weights = (name) => (dtype === "float64" ? Float64Array.from(model.parameters[name]) : model.parameters[name])

// Logits of every position.
const f = llamaForward(c, 1, T, 0, { dtype })
const forwardFeeds = new Map(Object.entries(f.params).map(([n, t]) => [t, weights(n)]))
forwardFeeds.set(f.tokens, ids)
// The loss as transformers computes it with labels = input_ids: the mean over the T − 1 next tokens.
const g = llamaLoss(c, 1, T, { mode: "vanilla", dtype })
const targets = new Int32Array(T).fill(-100)
targets.set(ids.subarray(1), 0)
const lossFeeds = new Map(Object.entries(g.params).map(([n, t]) => [t, weights(n)]))
lossFeeds.set(g.tokens, ids)
lossFeeds.set(g.targets, targets)
lossFeeds.set(g.count, Float32Array.of(T - 1))

// float64 on the reference backend (every routine as its body); float32 on cpu-fast, whose
// kernels are tested against it: a 1B model's float32 forward took minutes on the reference.
const layer = dtype === "float64" ? cpuBackendLayer() : fastCpuBackendLayer()
const run = (outputs, feeds) => Effect.runPromise(evaluate(outputs, feeds).pipe(Effect.provide(layer)))
const [logits] = (await run([f.logits], forwardFeeds)).values
const [loss] = (await run([g.loss], lossFeeds)).values
const V = c.vocab_size
const rows = Array.from({ length: T }, (_, t) => Array.from(logits.subarray(t * V, (t + 1) * V)))
console.log(JSON.stringify({ dtype, vocab_size: V, logits: rows, loss: loss[0] }))
