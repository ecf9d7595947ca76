// A tiny float64 Llama, one training step's loss and gradients on N in-process CPU ranks sharing
// the sequence (DeepSpeed-Ulysses; no GPU). For N = 1, 2, 4 it prints the loss every rank holds,
// the largest relative difference of any weight gradient from the single-rank graph on the whole
// batch, and one rank's planned peak beside what each rank's run measured.
//   npx tsx examples/ulysses-llama.ts
import {
  decodeConfigSync,
  type Feed,
  makeCpuBackend,
  type MemoryKind,
  plan,
  type Precision,
  randomFill,
  rankFeeds,
  runRanks,
  stepGraphs,
  type Tensor,
} from "miniseq"

const c = decodeConfigSync({
  model_type: "llama",
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  vocab_size: 61,
  max_position_embeddings: 256,
})
const fp64: Precision = { name: "fp64", param: "float64", state: "float64", master: false }
const [B, S] = [2, 64]
const tokens = randomFill({ shape: [B * S], dtype: "int32" }, 1, c.vocab_size) as Int32Array
const targets = (randomFill({ shape: [B * S], dtype: "int32" }, 2, c.vocab_size) as Int32Array).map((t, k) =>
  k % 7 === 0 ? -100 : t,
)
const kib = (bytes: number) => (bytes / 1024).toFixed(1)

/** One step's loss and gradients on n ranks (undefined: the single-rank graph on one rank). */
async function step(n: number | undefined) {
  const g = stepGraphs(c, B, S, { mode: "mst+checkpoint", precision: fp64, ...(n ? { ranks: n } : {}) }).first
  const weights = new Map(g.names.map((name, i) => [g.model.params[name]!, randomFill(g.model.params[name]!, 10 + i)]))
  const kind = (t: Tensor): MemoryKind => (weights.has(t) ? "weights" : "activations")
  const feedsOf = (r: number) => {
    const batch = n
      ? rankFeeds(g.model, { tokens, targets, B, S }, r, n)
      : new Map<Tensor, Feed>([
          [g.model.tokens, tokens],
          [g.model.targets, targets],
          [g.model.count, Float32Array.of(targets.filter((t) => t !== -100).length)],
        ])
    return new Map([...batch, ...weights].map(([t, data]) => [t, { data: data as Float64Array, kind: kind(t) }]))
  }
  const kinds = new Map([...feedsOf(0)].map(([t, f]) => [t, f.kind]))
  const planned = plan(g.outputs, kinds, { gradients: g.gradients })
  const ranks = await runRanks(makeCpuBackend({ fused: false }), n ?? 1, (r) => ({
    outputs: g.outputs,
    feeds: feedsOf(r),
    options: { gradients: g.gradients },
  }))
  return { planned, ranks }
}

const relDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let [scale, diff] = [0, 0]
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(a[i]!), Math.abs(b[i]!))
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!))
  }
  return diff / scale
}

const one = await step(undefined)
const reference = one.ranks[0]!.values
console.log(`single-rank graph: loss ${reference[0]![0]!.toPrecision(15)}, peak ${kib(one.planned.peak)} KiB`)
for (const n of [1, 2, 4]) {
  const { planned, ranks } = await step(n)
  const losses = ranks.map((r) => r.values[0]![0]!.toPrecision(15)).join(", ")
  const worst = Math.max(...ranks.flatMap((r) => r.values.slice(1).map((g, i) => relDiff(g, reference[i + 1]!))))
  const measured = ranks.map((r) => kib(r.memory.peak)).join(", ")
  console.log(
    `N=${n}: loss ${losses}; worst gradient rel. diff ${worst.toExponential(1)}; one rank planned ${kib(planned.peak)} KiB, ranks measured ${measured} KiB`,
  )
}
