// The heart of MST's correctness: chunked(M)(f) has the same value and gradients as f, for any
// shapes and any M (1, S, > S, S % M ≠ 0), also nested with checkpoint both ways, and for a loss
// with its gradients taken in the forward pass.
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { valueAndGrad, vjp } from "../src/core/autodiff.js"
import type { DType } from "../src/core/dtype.js"
import { execute, type Feed, plan } from "../src/core/executor.js"
import { makeCountingBackend } from "../src/core/counting.js"
import { input, type Tensor } from "../src/core/graph.js"
import * as o from "../src/core/ops.js"
import { linear, swiglu } from "../src/core/routines/basic.js"
import { sumCrossEntropy, targetCount } from "../src/core/routines/cross-entropy.js"
import { checkpoint, chunked } from "../src/core/regions.js"
import { rng } from "../src/core/random.js"
import { maxRelDiff, propertyRuns, randomArray, run } from "./helpers.js"

const tolerance: Record<DType, number> = { float64: 1e-10, float32: 1e-5, int32: 0, bfloat16: 1e-2 }

/** Runs two losses over the same leaves and returns the worst relative difference of value and gradients. */
async function compare(
  ref: Tensor,
  test: Tensor,
  wrt: Record<string, Tensor>,
  feeds: Map<Tensor, Feed>,
): Promise<number> {
  const a = valueAndGrad(ref, wrt)
  const b = valueAndGrad(test, wrt)
  const names = Object.keys(wrt)
  const out = await run([a.value, ...names.map((n) => a.grads[n]!), b.value, ...names.map((n) => b.grads[n]!)], feeds)
  const half = names.length + 1
  let worst = 0
  for (let i = 0; i < half; i++) worst = Math.max(worst, maxRelDiff(out.values[i]!, out.values[half + i]!))
  return worst
}

function leaves(dtype: DType, shapes: Record<string, number[]>, seed: number) {
  const ts: Record<string, Tensor> = {}
  const feeds = new Map<Tensor, Feed>()
  Object.entries(shapes).forEach(([name, shape], i) => {
    const t = input(name, shape, dtype)
    ts[name] = t
    feeds.set(t, randomArray(dtype, t.size, seed + i, { std: 0.7 }))
  })
  return { ts, feeds }
}

const dims = fc.record({
  B: fc.integer({ min: 1, max: 2 }),
  S: fc.integer({ min: 1, max: 9 }),
  d: fc.integer({ min: 1, max: 4 }),
  I: fc.integer({ min: 1, max: 6 }),
  extraM: fc.integer({ min: 0, max: 11 }),
  seed: fc.integer({ min: 1, max: 1_000_000 }),
})
/** M over 1..S+2, so M = 1, M = S, M > S and S % M ≠ 0 all come up. */
const mOf = (S: number, extra: number) => 1 + (extra % (S + 2))

type Wrap = "chunked" | "chunked(checkpoint)" | "checkpoint(chunked)"
const wraps: Wrap[] = ["chunked", "chunked(checkpoint)", "checkpoint(chunked)"]
/** A scalar loss may also take its gradients in the forward pass. */
type LossWrap = Wrap | "chunked, gradients in forward" | "checkpoint(chunked, gradients in forward)"
const lossWraps: LossWrap[] = [...wraps, "chunked, gradients in forward", "checkpoint(chunked, gradients in forward)"]

function wrap<R extends Tensor>(
  how: LossWrap,
  M: number,
  combine: "concat" | "sum",
  f: (...a: Tensor[]) => R,
): (...a: Tensor[]) => R {
  const ch = (g: (...a: Tensor[]) => R, gradientsInForward = false) =>
    chunked(M, { axis: 1, combine, gradientsInForward })(g)
  if (how === "chunked") return ch(f)
  if (how === "chunked(checkpoint)") return ch(checkpoint(f))
  if (how === "chunked, gradients in forward") return ch(f, true)
  if (how === "checkpoint(chunked, gradients in forward)") return checkpoint(ch(f, true))
  return checkpoint(ch(f))
}

for (const dtype of ["float64", "float32"] as const) {
  describe(`chunked(M) equals unchunked (${dtype})`, () => {
    for (const how of wraps) {
      it(`SwiGLU MLP, ${how}`, async () => {
        await fc.assert(
          fc.asyncProperty(dims, async ({ B, S, d, I, extraM, seed }) => {
            const M = mOf(S, extraM)
            const { ts, feeds } = leaves(
              dtype,
              { x: [B, S, d], gate: [I, d], up: [I, d], down: [d, I], r: [B, S, d] },
              seed,
            )
            const { x, gate, up, down, r } = ts as Record<string, Tensor>
            const mlp = (h: Tensor) => swiglu(h, gate!, up!, down!)
            const ref = o.sum(o.mul(mlp(x!), r!))
            const test = o.sum(o.mul(wrap(how, M, "concat", mlp)(x!), r!))
            expect(await compare(ref, test, { x: x!, gate: gate!, up: up!, down: down! }, feeds)).toBeLessThan(
              tolerance[dtype],
            )
          }),
          { numRuns: propertyRuns(dtype === "float64" ? 25 : 10) },
        )
      })
    }

    for (const how of lossWraps) {
      it(`LM head + cross-entropy with ignored targets and token weights, ${how}`, async () => {
        const lmDims = fc.record({
          B: fc.integer({ min: 1, max: 2 }),
          S: fc.integer({ min: 1, max: 9 }),
          d: fc.integer({ min: 1, max: 4 }),
          V: fc.integer({ min: 2, max: 9 }),
          extraM: fc.integer({ min: 0, max: 11 }),
          seed: fc.integer({ min: 1, max: 1_000_000 }),
          ignoreRate: fc.constantFrom(0, 0.3, 1),
          ignoreFirstChunk: fc.boolean(),
        })
        await fc.assert(
          fc.asyncProperty(lmDims, async ({ B, S, d, V, extraM, seed, ignoreRate, ignoreFirstChunk }) => {
            const M = mOf(S, extraM)
            const { ts, feeds } = leaves(dtype, { h: [B, S, d], W: [V, d], w: [B, S] }, seed)
            const { h, W, w } = ts as Record<string, Tensor>
            // Token weights are positive, as real ones are: weights of both signs can cancel the
            // loss to nearly 0, where float32's relative error means nothing.
            feeds.set(w!, randomArray(dtype, w!.size, seed + 7, { positive: true }))
            const targets = input("targets", [B, S], "int32")
            const random = rng(seed)
            const firstChunk = Math.ceil(S / Math.min(M, S))
            const t = Int32Array.from({ length: B * S }, (_, i) =>
              random() < ignoreRate || (ignoreFirstChunk && i % S < firstChunk) ? -100 : Math.floor(random() * V),
            )
            feeds.set(targets, t)
            const count = targetCount(targets, -100, dtype)
            const pieceLoss = (hh: Tensor, tt: Tensor, ww: Tensor) =>
              sumCrossEntropy(linear(hh, W!), tt, { weights: ww })
            const ref = o.div(pieceLoss(h!, targets, w!), count)
            const test = o.div(wrap(how, M, "sum", pieceLoss)(h!, targets, w!), count)
            expect(await compare(ref, test, { h: h!, W: W!, w: w! }, feeds)).toBeLessThan(tolerance[dtype])
          }),
          { numRuns: propertyRuns(dtype === "float64" ? 25 : 10) },
        )
      })
    }
  })
}

describe("gradients accumulate and scale linearly", () => {
  const scale = fc.double({ min: -3, max: 3, noNaN: true }).filter((c) => Math.abs(c) > 1e-3)

  it("vjp(c·R) = c·vjp(R) through a chunked MLP", async () => {
    await fc.assert(
      fc.asyncProperty(dims, scale, async ({ B, S, d, I, extraM, seed }, c) => {
        const { ts, feeds } = leaves(
          "float64",
          { x: [B, S, d], gate: [I, d], up: [I, d], down: [d, I], r: [B, S, d] },
          seed,
        )
        const { x, gate, up, down, r } = ts as Record<string, Tensor>
        const y = chunked(mOf(S, extraM), { axis: 1 })((h: Tensor) => swiglu(h, gate!, up!, down!))(x!)
        const [g] = vjp([y], [r!], [gate!])
        const [gScaled] = vjp([y], [o.mul(r!, c)], [gate!])
        const [gv, gsv] = (await run([g!, gScaled!], feeds)).values as [Float64Array, Float64Array]
        expect(
          maxRelDiff(
            gsv,
            gv.map((e) => e * c),
          ),
        ).toBeLessThan(1e-12)
      }),
      { numRuns: propertyRuns(20) },
    )
  })

  it("a weight shared by two chunked blocks gets G1 + G2, and a gradient added to G0 gives G0 + G", async () => {
    await fc.assert(
      fc.asyncProperty(dims, fc.integer({ min: 1, max: 12 }), async ({ B, S, d, I, extraM, seed }, M2) => {
        const { ts, feeds } = leaves(
          "float64",
          {
            x1: [B, S, d],
            x2: [B, S, d],
            gate: [I, d],
            up: [I, d],
            down: [d, I],
            r1: [B, S, d],
            r2: [B, S, d],
            g0: [I, d],
          },
          seed,
        )
        const { x1, x2, gate, up, down, r1, r2, g0 } = ts as Record<string, Tensor>
        const mlp = (h: Tensor) => swiglu(h, gate!, up!, down!)
        const l1 = o.sum(o.mul(chunked(mOf(S, extraM), { axis: 1 })(mlp)(x1!), r1!))
        const l2 = o.sum(o.mul(chunked(M2, { axis: 1 })(mlp)(x2!), r2!))
        const both = valueAndGrad(o.add(l1, l2), { gate: gate!, down: down! }).grads
        const one = valueAndGrad(l1, { gate: gate!, down: down! }).grads
        const two = valueAndGrad(l2, { gate: gate!, down: down! }).grads
        const accumulated = o.add(g0!, both.gate) // a later micro-batch adds into the existing gradient
        const [bg, bd, g1, d1, g2, d2, acc] = (
          await run([both.gate, both.down, one.gate, one.down, two.gate, two.down, accumulated], feeds)
        ).values as Float64Array[]
        expect(
          maxRelDiff(
            bg!,
            g1!.map((e, i) => e + g2![i]!),
          ),
        ).toBeLessThan(1e-12)
        expect(
          maxRelDiff(
            bd!,
            d1!.map((e, i) => e + d2![i]!),
          ),
        ).toBeLessThan(1e-12)
        const g0v = feeds.get(g0!) as Float64Array
        expect(
          maxRelDiff(
            acc!,
            bg!.map((e, i) => e + g0v[i]!),
          ),
        ).toBeLessThan(1e-15)
      }),
      { numRuns: propertyRuns(20) },
    )
  })
})

describe("gradients taken in the forward pass", () => {
  const lmLoss = (B: number, S: number, d: number, V: number) => {
    const h = input("h", [B, S, d], "float64"),
      W = input("W", [V, d], "float64"),
      targets = input("targets", [B, S], "int32")
    const piece = (hh: Tensor, tt: Tensor) => sumCrossEntropy(linear(hh, W), tt)
    return {
      h,
      W,
      targets,
      loss: (gradientsInForward: boolean) =>
        chunked(4, { axis: 1, combine: "sum", gradientsInForward })(piece)(h, targets),
    }
  }

  it("a forward-only run computes none of them: the same plan as without the option", () => {
    const { h, W, targets, loss } = lmLoss(1, 64, 8, 50)
    const inputs = new Map<Tensor, "activations" | "weights">([
      [h, "activations"],
      [W, "weights"],
      [targets, "activations"],
    ])
    expect(plan([loss(true)], inputs).peak).toBe(plan([loss(false)], inputs).peak)
    // With backward, the forward pass holds W's fp32 gradient sum (and h's gradient) instead.
    const withGrads = (on: boolean) => {
      const l = loss(on)
      return plan([l, ...Object.values(valueAndGrad(l, { h, W }).grads)], inputs).peak
    }
    expect(withGrads(true)).toBeGreaterThan(plan([loss(true)], inputs).peak)
  })

  it("backward recomputes nothing: the logits matmul runs once per piece, not twice", () => {
    const { h, W, targets, loss } = lmLoss(1, 64, 8, 50)
    const matmuls = (on: boolean) => {
      const g = valueAndGrad(loss(on), { h, W })
      let n = 0
      const counting = makeCountingBackend()
      const backend = {
        ...counting,
        matmul: () => {
          n++
        },
      }
      const bind = (t: Tensor) => [t, { buffer: backend.alloc(t.dtype, t.size), kind: "activations" as const }] as const
      execute(backend, [g.value, g.grads.h!, g.grads.W!], new Map([bind(h), bind(W), bind(targets)]))
      return n
    }
    // 4 pieces × (logits, dh, dW); without the option backward recomputes each piece's logits.
    expect(matmuls(true)).toBe(12)
    expect(matmuls(false)).toBe(16)
  })

  it("a region that does not return one scalar is refused, naming the fix", () => {
    const x = input("x", [1, 6, 3], "float64")
    expect(() => chunked(2, { axis: 1, gradientsInForward: true })((t: Tensor) => o.mul(t, 2))(x)).toThrow(
      /gradientsInForward needs a region that returns one scalar/,
    )
  })
})
