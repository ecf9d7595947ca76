// One Ulysses-shaped layer on N in-process CPU ranks (no GPU): each rank holds S/N tokens, an
// all-to-all hands it all tokens of H/N heads, a token-mixing product runs per head, and the
// reverse all-to-all hands the tokens back. Prints, for N = 1, 2, 4, 8, one rank's planned peak
// (the counting backend), what every rank's run measured, and the loss, which must not depend on N.
//   npx tsx examples/ulysses-ranks.ts
import { input, makeCpuBackend, type MemoryKind, ops as o, plan, runRanks, type Tensor, valueAndGrad } from "miniseq"

const [S, H, D] = [256, 8, 64]
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(2)

for (const n of [1, 2, 4, 8]) {
  const x = input("x", [S / n, H, D], "float64")
  const w = input("w", [D, D], "float64")
  const z = o.reshape(o.matmul(o.reshape(x, [(S / n) * H, D]), w), x.shape)
  const heads = o.permute(o.allToAll(z, { splitAxis: 1, concatAxis: 0, ranks: n }), [1, 0, 2])
  const mixed = o.matmul(o.matmul(heads, heads, { transB: true }), heads)
  const back = o.allToAll(o.permute(mixed, [1, 0, 2]), { splitAxis: 0, concatAxis: 1, ranks: n })
  const { value, grads } = valueAndGrad(o.sum(o.sin(back)), { x, w })
  // Every rank's loss and W's gradient are summed over the ranks; x's gradient stays sharded.
  const outputs = [o.allReduce(value), grads.x!, o.allReduce(grads.w!)]
  const kinds = new Map<Tensor, MemoryKind>([
    [x, "activations"],
    [w, "weights"],
  ])
  const planned = plan(outputs, kinds, { gradients: outputs.slice(1) })
  // The same global data whatever N: rank r holds tokens r·S/N … (r+1)·S/N − 1.
  const tokens = (r: number) => Float64Array.from({ length: x.size }, (_, i) => 0.01 * Math.sin(i + r * x.size))
  const weights = Float64Array.from({ length: D * D }, (_, i) => 0.05 * Math.cos(i))
  const ranks = await runRanks(makeCpuBackend(), n, (r) => ({
    outputs,
    feeds: new Map([
      [x, tokens(r)],
      [w, weights],
    ]),
    options: { gradients: outputs.slice(1) },
  }))
  const measured = ranks.map((r) => mib(r.memory.peak)).join(", ")
  console.log(
    `N=${n}: one rank planned ${mib(planned.peak)} MiB; ranks measured ${measured} MiB; loss ${ranks[0]!.values[0]![0]!.toPrecision(15)}`,
  )
}
