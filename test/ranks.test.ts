import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { makeCpuBackend } from "../src/backends/cpu/index.js"
import { contiguousStrides, numel } from "../src/core/backend.js"
import { valueAndGrad } from "../src/core/autodiff.js"
import { CollectiveError, ShapeError } from "../src/core/errors.js"
import { execute, type Feed, plan } from "../src/core/executor.js"
import { input, type Tensor } from "../src/core/graph.js"
import * as o from "../src/core/ops.js"
import { makeRankBackends, runRanks } from "../src/core/ranks.js"
import { checkpoint, chunked } from "../src/core/regions.js"
import type { MemoryKind } from "../src/core/memory.js"
import { crossEntropy } from "../src/core/routines/cross-entropy.js"
import { mapKernels } from "../src/core/routines/registry.js"
import { maxRelDiff, propertyRuns, randomArray, run } from "./helpers.js"

const cpu = () => makeCpuBackend({ fused: false })
const f64 = (n: number, seed: number) => randomArray("float64", n, seed) as Float64Array

/** A row-major index ↔ coordinates pair for `shape`. */
const coordsOf = (shape: readonly number[], flat: number): number[] => {
  const s = contiguousStrides(shape)
  return shape.map((_, k) => Math.floor(flat / s[k]!) % shape[k]!)
}
const flatOf = (shape: readonly number[], c: readonly number[]): number =>
  c.reduce((acc, ck, k) => acc + ck * contiguousStrides(shape)[k]!, 0)

/**
 * The all-to-all by its definition, element by element on the host: rank j's output block i
 * along the concat axis is rank i's part j along the split axis.
 */
function referenceAllToAll(xs: readonly Float64Array[], shape: readonly number[], split: number, concat: number) {
  const n = xs.length
  const part = shape.map((d, k) => (k === split ? d / n : d))
  const outShape = part.map((d, k) => (k === concat ? d * n : d))
  return xs.map((_, j) =>
    Float64Array.from({ length: numel(outShape) }, (_, flat) => {
      const c = coordsOf(outShape, flat)
      const i = Math.floor(c[concat]! / part[concat]!)
      const p = c.map((ck, k) => (k === concat ? ck - i * part[concat]! : ck))
      const src = p.map((pk, k) => (k === split ? pk + j * part[split]! : pk))
      return xs[i]![flatOf(shape, src)]!
    }),
  )
}

/** A random exchange: N ranks, a rank-2…4 shape whose split axis N divides, two axes. */
const exchanges = fc
  .record({
    n: fc.integer({ min: 1, max: 4 }),
    dims: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 2, maxLength: 4 }),
    split: fc.nat(),
    concat: fc.nat(),
    seed: fc.nat({ max: 1e6 }),
  })
  .map(({ n, dims, split, concat, seed }) => {
    const a = split % dims.length
    const shape = dims.map((d, k) => (k === a ? d * n : d))
    return { n, shape, split: a, concat: concat % dims.length, seed }
  })

describe("allToAll on N in-process ranks", () => {
  it("equals the all-to-all computed element by element on the host", async () => {
    await fc.assert(
      fc.asyncProperty(exchanges, async ({ n, shape, split, concat, seed }) => {
        const x = input("x", shape, "float64")
        const y = o.allToAll(x, { splitAxis: split, concatAxis: concat, ranks: n })
        const xs = Array.from({ length: n }, (_, r) => f64(x.size, seed + r))
        const got = await runRanks(cpu(), n, (r) => ({ outputs: [y], feeds: new Map([[x, xs[r]!]]) }))
        const want = referenceAllToAll(xs, shape, split, concat)
        got.forEach((g, r) => expect(Array.from(g.values[0]!)).toEqual(Array.from(want[r]!)))
      }),
      { numRuns: propertyRuns(40) },
    )
  })

  it("followed by the reverse exchange is the identity", async () => {
    await fc.assert(
      fc.asyncProperty(exchanges, async ({ n, shape, split, concat, seed }) => {
        const x = input("x", shape, "float64")
        const y = o.allToAll(x, { splitAxis: split, concatAxis: concat, ranks: n })
        const back = o.allToAll(y, { splitAxis: concat, concatAxis: split, ranks: n })
        const xs = Array.from({ length: n }, (_, r) => f64(x.size, seed + r))
        const got = await runRanks(cpu(), n, (r) => ({ outputs: [back], feeds: new Map([[x, xs[r]!]]) }))
        got.forEach((g, r) => expect(Array.from(g.values[0]!)).toEqual(Array.from(xs[r]!)))
      }),
      { numRuns: propertyRuns(25) },
    )
  })
})

describe("allReduce on N in-process ranks", () => {
  it("gives every rank the same sum, equal to the host's", async () => {
    for (const n of [1, 2, 3, 4]) {
      const x = input("x", [3, 5], "float64")
      const xs = Array.from({ length: n }, (_, r) => f64(x.size, 40 + r))
      const got = await runRanks(cpu(), n, (r) => ({ outputs: [o.allReduce(x)], feeds: new Map([[x, xs[r]!]]) }))
      const want = Float64Array.from({ length: x.size }, (_, k) => xs.reduce((s, a) => s + a[k]!, 0))
      expect(maxRelDiff(got[0]!.values[0]!, want)).toBeLessThan(1e-15)
      for (const g of got) expect(Array.from(g.values[0]!)).toEqual(Array.from(got[0]!.values[0]!))
    }
  })
})

/**
 * A head-mixing computation on [S, H, D]: z = x·W per token; within each head, u = (z zᵀ) z
 * mixes the tokens; the loss is Σ sin(u)·R / (1 + Σ x²), its product in M mini-sequences. `shard` makes it the Ulysses SPMD
 * program of one rank: x and R hold S/N tokens, an all-to-all hands each rank all tokens of H/N
 * heads and the reverse one hands the tokens back; Σ x² is all-reduced, and so is W's gradient.
 */
function headMixing(
  shape: { S: number; H: number; D: number },
  n: number | undefined,
  checkpointed: boolean,
  M = 1,
): { x: Tensor; w: Tensor; r: Tensor; outputs: Tensor[] } {
  const ranks = n ?? 1
  const x = input("x", [shape.S / ranks, shape.H, shape.D], "float64")
  const w = input("w", [shape.D, shape.D], "float64")
  const r = input("r", x.shape, "float64")
  const mix = (z: Tensor): Tensor => {
    const seqFirst = n === undefined ? z : o.allToAll(z, { splitAxis: 1, concatAxis: 0, ranks })
    const heads = o.permute(seqFirst, [1, 0, 2])
    const u = o.matmul(o.matmul(heads, heads, { transB: true }), heads)
    const back = o.permute(u, [1, 0, 2])
    return n === undefined ? back : o.allToAll(back, { splitAxis: 0, concatAxis: 1, ranks })
  }
  const z = o.reshape(o.matmul(o.reshape(x, [x.shape[0]! * shape.H, shape.D]), w), x.shape)
  const u = checkpointed ? checkpoint(mix)(z) : mix(z)
  const squares = o.sum(o.mul(x, x))
  const norm = o.add(1, n === undefined ? squares : o.allReduce(squares))
  // The local part runs on mini-sequences of this rank's tokens, as MST's MLP and loss do.
  const local = chunked(M, { axis: 0 })((ui: Tensor, ri: Tensor) => o.mul(o.sin(ui), ri))(u, r)
  const loss = o.div(o.sum(local), norm)
  const { value, grads } = valueAndGrad(loss, { x, w })
  const global = (t: Tensor) => (n === undefined ? t : o.allReduce(t))
  return { x, w, r, outputs: [global(value), grads.x!, global(grads.w!)] }
}

describe("fused kernels on ranks", () => {
  it("run on each rank: the fused cross-entropy of an allReduce is the host's", async () => {
    const n = 3
    const [rows, V] = [4, 5]
    const logits = input("logits", [rows, V], "float64")
    const targets = input("targets", [rows], "int32")
    const loss = crossEntropy(o.allReduce(logits), targets)
    const base = makeCpuBackend()
    let fusedCalls = 0
    const counted = {
      ...base,
      routines: mapKernels(base.routines!, (k) => (call) => {
        fusedCalls++
        k(call)
      }),
    }
    const xs = Array.from({ length: n }, (_, r) => f64(rows * V, 90 + r))
    const t = Int32Array.from({ length: rows }, (_, i) => (i * 3) % V)
    const got = await runRanks(counted, n, (r) => ({
      outputs: [loss],
      feeds: new Map<Tensor, Feed>([
        [logits, xs[r]!],
        [targets, t],
      ]),
    }))
    // The reference: the mean over rows of logsumexp(Σ_r x_r) − (Σ_r x_r)[target], on the host.
    const summed = Float64Array.from({ length: rows * V }, (_, k) => xs.reduce((acc, x) => acc + x[k]!, 0))
    let want = 0
    for (let i = 0; i < rows; i++) {
      const row = summed.subarray(i * V, (i + 1) * V)
      const m = Math.max(...row)
      want += m + Math.log(row.reduce((acc, v) => acc + Math.exp(v - m), 0)) - row[t[i]!]!
    }
    want /= rows
    for (const g of got) expect(Math.abs(g.values[0]![0]! - want)).toBeLessThan(1e-12 * Math.abs(want) + 1e-14)
    expect(fusedCalls).toBe(n)
  })
})

describe("SPMD gradients", () => {
  it("equal the unsharded graph's (float64), for random N, shapes, checkpointing and mini-sequences", async () => {
    const cases = fc.record({
      n: fc.integer({ min: 1, max: 4 }),
      s: fc.integer({ min: 1, max: 2 }),
      h: fc.integer({ min: 1, max: 2 }),
      D: fc.integer({ min: 1, max: 3 }),
      checkpointed: fc.boolean(),
      M: fc.integer({ min: 1, max: 3 }),
      seed: fc.nat({ max: 1e6 }),
    })
    await fc.assert(
      fc.asyncProperty(cases, async ({ n, s, h, D, checkpointed, M, seed }) => {
        const shape = { S: n * s, H: n * h, D }
        const one = headMixing(shape, undefined, checkpointed, M)
        const X = f64(one.x.size, seed)
        const W = f64(one.w.size, seed + 1)
        const R = f64(one.r.size, seed + 2)
        const single = await run(
          one.outputs,
          new Map([
            [one.x, X],
            [one.w, W],
            [one.r, R],
          ]),
        )
        const [loss, dX, dW] = single.values
        const spmd = headMixing(shape, n, checkpointed, M)
        const shard = (a: Float64Array, r: number) => a.slice(r * spmd.x.size, (r + 1) * spmd.x.size)
        const ranks = await runRanks(cpu(), n, (r) => ({
          outputs: spmd.outputs,
          feeds: new Map([
            [spmd.x, shard(X, r)],
            [spmd.w, W],
            [spmd.r, shard(R, r)],
          ]),
        }))
        for (const [r, got] of ranks.entries()) {
          expect(maxRelDiff(got.values[0]!, loss!)).toBeLessThan(1e-12)
          expect(maxRelDiff(got.values[1]!, shard(dX as Float64Array, r))).toBeLessThan(1e-12)
          expect(maxRelDiff(got.values[2]!, dW!)).toBeLessThan(1e-12)
        }
      }),
      { numRuns: propertyRuns(12) },
    )
  })

  it("allReduce's VJP all-reduces the cotangent: Σ_r sum(allReduce(x)) has gradient N on every rank", async () => {
    // L = Σ_r Σ_k y_k with y = Σ_i x_i: ∂L/∂x_i = N per element (an identity VJP would give 1).
    const n = 3
    const x = input("x", [2], "float64")
    const { grads } = valueAndGrad(o.sum(o.allReduce(x)), { x })
    const got = await runRanks(cpu(), n, (r) => ({ outputs: [grads.x!], feeds: new Map([[x, f64(2, r)]]) }))
    for (const g of got) expect(Array.from(g.values[0]!)).toEqual([n, n])
  })
})

describe("the plan of one rank", () => {
  it("equals what every rank's run measures, by the executor and by the rank's own allocations", async () => {
    for (const checkpointed of [false, true]) {
      const n = 3
      const g = headMixing({ S: 6, H: 3, D: 4 }, n, checkpointed, 2)
      const kinds = new Map<Tensor, MemoryKind>([
        [g.x, "activations"],
        [g.w, "weights"],
        [g.r, "activations"],
      ])
      const planned = plan(g.outputs, kinds, { gradients: g.outputs.slice(1) })
      const ranks = await runRanks(cpu(), n, (r) => ({
        outputs: g.outputs,
        feeds: new Map([...kinds].map(([t, kind]) => [t, { data: f64(t.size, r * 7 + t.size), kind }] as const)),
        options: { gradients: g.outputs.slice(1) },
      }))
      for (const got of ranks) {
        expect(got.memory).toEqual(planned)
        expect(got.allocated.peak).toBe(planned.peak)
      }
      expect(planned.allocations).toBeGreaterThan(0)
    }
  })
})

describe("refusals", () => {
  it("a rank count that does not divide the split axis is a ShapeError naming both", () => {
    const x = input("x", [2, 6, 4])
    expect(() => o.allToAll(x, { splitAxis: 1, concatAxis: 2, ranks: 4 })).toThrow(ShapeError)
    expect(() => o.allToAll(x, { splitAxis: 1, concatAxis: 2, ranks: 4 })).toThrow(/length 6 does not divide into 4/)
  })

  it("a graph built for 4 ranks run on 2 is a CollectiveError", async () => {
    const x = input("x", [8], "float64")
    const y = o.allToAll(x, { splitAxis: 0, concatAxis: 0, ranks: 4 })
    const go = runRanks(cpu(), 2, () => ({ outputs: [y], feeds: new Map([[x, f64(8, 1)]]) }))
    await expect(go).rejects.toThrow(CollectiveError)
    await expect(runRanks(cpu(), 2, () => ({ outputs: [y], feeds: new Map([[x, f64(8, 1)]]) }))).rejects.toThrow(
      /built for 4 ranks but runs on 2/,
    )
  })

  it("a rank that runs another node, or finishes early, diverged: a CollectiveError naming it and the step", async () => {
    const program = (r: number, len: number, extra: boolean) => {
      const x = input("x", [len], "float64")
      const y = o.allReduce(o.exp(x))
      return { outputs: [extra ? o.exp(y) : y], feeds: new Map([[x, f64(len, r)]]) }
    }
    const shape = runRanks(cpu(), 3, (r) => program(r, r === 2 ? 5 : 4, false))
    await expect(shape).rejects.toThrow(CollectiveError)
    await expect(runRanks(cpu(), 3, (r) => program(r, r === 2 ? 5 : 4, false))).rejects.toThrow(
      /rank 2 diverged from rank 0 at step 0/,
    )
    await expect(runRanks(cpu(), 2, (r) => program(r, 4, r === 0))).rejects.toThrow(/rank 1 finished/)
  })

  it("collective calls of different shapes in one round are a CollectiveError naming both ranks", () => {
    const base = cpu()
    const [a, b] = makeRankBackends(base, 2)
    const xa = a!.alloc("float64", 4)
    const xb = b!.alloc("float64", 6)
    a!.allReduce!(xa, a!.alloc("float64", 4))
    expect(() => b!.allReduce!(xb, b!.alloc("float64", 6))).toThrow(
      /round 0: rank 0 called allReduce of 4 float64 elements but rank 1 called allReduce of 6/,
    )
  })

  it("a rank's reads are refused while its collective round is open; its later kernels wait for the round", async () => {
    const [a, b] = makeRankBackends(cpu(), 2)
    const [xa, ya, za] = [a!.alloc("float64", 2), a!.alloc("float64", 2), a!.alloc("float64", 2)]
    const [xb, yb] = [b!.alloc("float64", 2), b!.alloc("float64", 2)]
    a!.write(xa, Float64Array.of(1, 2))
    b!.write(xb, Float64Array.of(10, 20))
    a!.allReduce!(xa, ya)
    a!.binary("mul", ya, ya, za) // must see the sum, not the fresh buffer
    await expect(a!.read(za)).rejects.toThrow(CollectiveError)
    expect([a!.idle, b!.idle]).toEqual([false, true])
    b!.allReduce!(xb, yb)
    expect([a!.idle, b!.idle]).toEqual([true, true])
    expect(Array.from(await a!.read(za))).toEqual([121, 484])
    expect(Array.from(await b!.read(yb))).toEqual([11, 22])
  })

  it("a collective on a backend that is not a rank is a CollectiveError saying how to run it", () => {
    const base = cpu()
    const x = input("x", [2], "float64")
    const buffer = base.alloc("float64", 2)
    expect(() => execute(base, [o.allReduce(x)], new Map([[x, { buffer, kind: "activations" }]]))).toThrow(
      /cpu backend is not a rank of a multi-rank run; run the graph with runRanks/,
    )
  })
})
