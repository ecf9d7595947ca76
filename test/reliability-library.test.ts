// Misusing the library gives a typed error naming the value, what is allowed and the fix — never
// a TypeError from deep inside, a NaN loss or a wrong finite one.
import { Cause, Effect, Exit, type Layer } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { cpuBackendLayer, makeCpuBackend } from "../src/backends/cpu/index.js"
import { fastCpuBackendLayer } from "../src/backends/cpu-fast/index.js"
import type { Backend } from "../src/core/backend.js"
import { BadConfig, GraphError, ShapeError } from "../src/core/errors.js"
import { evaluate, type Feed } from "../src/core/executor.js"
import { input, type Tensor } from "../src/core/graph.js"
import * as o from "../src/core/ops.js"
import { checkpoint, chunked } from "../src/core/regions.js"
import { tokenCrossEntropy } from "../src/core/routines/cross-entropy.js"
import { decodeConfigSync } from "../src/models/config.js"
import type { Batch, Batches } from "../src/models/data.js"
import { train } from "../src/models/train.js"

function thrown(f: () => unknown): unknown {
  try {
    f()
  } catch (e) {
    return e
  }
  throw new Error("expected an error")
}

/** The typed failure of evaluating `outputs` (a defect or a success fails the test). */
async function failure(
  outputs: readonly Tensor[],
  feeds: ReadonlyMap<Tensor, unknown>,
  layer: Layer.Layer<Backend> = cpuBackendLayer(),
): Promise<unknown> {
  const exit = await Effect.runPromiseExit(
    evaluate(outputs, feeds as ReadonlyMap<Tensor, Feed>).pipe(Effect.provide(layer)),
  )
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  const failures = exit.cause.reasons.filter(Cause.isFailReason)
  expect(failures, String(exit.cause)).toHaveLength(1)
  return failures[0]!.error
}

describe("region bodies", () => {
  const x = input("x", [1, 4, 2])
  const bodies: Array<[string, () => unknown, string]> = [
    ["nothing", () => undefined, "got undefined (nothing)"],
    ["a number", () => 3, "got number 3"],
    ["null", () => null, "got null"],
    ["an empty array", () => [], "got []"],
    ["an array holding a non-tensor", () => [x, "y"], "got an array whose item 1 is string y"],
  ]
  for (const [what, body, says] of bodies) {
    it(`checkpoint(f) and chunked(M)(f) where f returns ${what}: GraphError`, () => {
      for (const [name, wrap] of [
        ["checkpoint", (f: () => unknown) => checkpoint(f as () => Tensor)(x)],
        ["chunked", (f: () => unknown) => chunked(2)(f as () => Tensor)(x)],
      ] as const) {
        const e = thrown(() => wrap(body)) as GraphError
        expect(e).toBeInstanceOf(GraphError)
        expect(e.message).toBe(
          `${name}: the body must return a tensor or a non-empty array of tensors, ${says}; return what it computes, e.g. (x) => o.exp(x)`,
        )
      }
    })
  }
  it("a body that is not a function", () => {
    expect((thrown(() => checkpoint(42 as never)(x)) as GraphError).message).toContain(
      "the body must be a function of tensors, got number 42",
    )
  })
})

describe("region options, checked when the region is declared", () => {
  it("an unknown combine, a bad axis, an unknown option", () => {
    const cases: Array<[object, string, string]> = [
      [{ combine: "mean" }, "combine", 'chunked: combine must be "concat" or "sum", got "mean"'],
      [{ axis: 1.5 }, "axis", "chunked: axis must be an integer (negative counts from the end), got 1.5"],
      [{ axis: Number.NaN }, "axis", "got NaN"],
      [{ gradientsInForward: "yes" }, "gradientsInForward", "gradientsInForward must be true or false, got yes"],
      [{ axes: 1 }, "axes", "unknown option axes; the options are axis, combine, gradientsInForward"],
    ]
    for (const [opts, field, says] of cases) {
      const e = thrown(() => chunked(2, opts as never)) as BadConfig
      expect(e).toBeInstanceOf(BadConfig)
      expect(e.field).toBe(field)
      expect(e.message).toContain(says)
    }
  })
  it("M < 1 or not an integer, for any such M", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.integer({ max: 0 }),
          fc.double().filter((m) => !Number.isInteger(m)),
        ),
        (M) => {
          const e = thrown(() => chunked(M)) as BadConfig
          expect(e).toBeInstanceOf(BadConfig)
          expect(e.message).toBe(`chunked: M must be a positive integer, got ${M}`)
        },
      ),
      { numRuns: 30 },
    )
  })
  it("an axis the arguments do not have is a ShapeError when the region is applied", () => {
    const e = thrown(() => chunked(2, { axis: 3 })((a) => a)(input("x", [1, 4, 2]))) as ShapeError
    expect(e).toBeInstanceOf(ShapeError)
    expect(e.message).toBe("chunked: argument 0 of shape [1, 4, 2] has no axis 3")
  })
})

describe("shapes", () => {
  const badDim = fc.oneof(
    fc.integer({ max: -1 }),
    fc.double().filter((d) => !Number.isInteger(d)),
    fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53),
  )
  it("input() and ops.full() with a negative, fractional, NaN or infinite dim: ShapeError naming it", () => {
    fc.assert(
      fc.property(fc.array(fc.nat(4), { maxLength: 3 }), badDim, fc.nat(3), (good, bad, at) => {
        const shape = [...good]
        shape.splice(Math.min(at, shape.length), 0, bad)
        const dim = shape.findIndex((d) => Object.is(d, bad))
        for (const [what, f] of [
          ['input "x"', () => input("x", shape)],
          ["full", () => o.full(shape, 1)],
          ["iota", () => o.iota(shape)],
        ] as const) {
          const e = thrown(f) as ShapeError
          expect(e).toBeInstanceOf(ShapeError)
          expect(e.message).toBe(
            `${what}: shape [${shape.map(String).join(", ")}] has ${String(bad)} at dim ${dim}; a shape is an array of non-negative integers, e.g. [2, 3]`,
          )
        }
      }),
      { numRuns: 30 },
    )
  })
  it("ops.full([-2]) and a shape that is not an array", () => {
    expect((thrown(() => o.full([-2], 0)) as ShapeError).message).toContain("shape [-2] has -2 at dim 0")
    expect((thrown(() => input("x", 3 as never)) as ShapeError).message).toContain("shape 3 is not an array")
  })
})

describe("feeds", () => {
  const a = input("a", [3])
  const y = o.exp(a)
  it("a plain array, null, a number, a Uint8Array or a wrong kind: GraphError saying what to pass", async () => {
    const cases: Array<[unknown, string]> = [
      [[1, 2, 3], "is a plain array of 3; pass a Float32Array of 3 values"],
      [null, "is null; pass a Float32Array of 3 values"],
      [7, "is number 7; pass a Float32Array"],
      [new Uint8Array(3), "is Uint8Array; pass a Float32Array"],
      [{ data: [1, 2, 3], kind: "activations" }, "is a plain array of 3"],
      [{ data: new Float32Array(3), kind: "scratch" }, "has kind scratch; a kind is one of weights, gradients"],
    ]
    for (const [feed, says] of cases) {
      const e = (await failure([y], new Map([[a, feed]]))) as GraphError
      expect(e).toBeInstanceOf(GraphError)
      expect(e.message).toContain(says)
    }
  })
  it("feeds that are not a Map", async () => {
    const e = (await failure([y], null as never)) as GraphError
    expect(e.message).toContain("evaluate: feeds must be a Map from input tensors to their values, got null")
  })
})

describe("indices at run time", () => {
  const table = input("table", [4, 2])
  const idx = input("idx", [3], "int32")
  const rows = o.gather(table, idx)
  for (const [name, layer] of [
    ["cpu", cpuBackendLayer],
    ["cpu-fast", fastCpuBackendLayer],
  ] as const) {
    it(`${name}: a gather index outside [0, rows) is a GraphError naming the index, its position and the range`, async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(fc.integer({ min: 4, max: 2 ** 31 - 1 }), fc.integer({ min: -(2 ** 31), max: -1 })),
          fc.nat(2),
          async (bad, at) => {
            const ids = Int32Array.from([0, 1, 2])
            ids[at] = bad
            const e = (await failure(
              [rows],
              new Map<Tensor, Feed>([
                [table, new Float32Array(8)],
                [idx, ids],
              ]),
              layer(),
            )) as GraphError
            expect(e).toBeInstanceOf(GraphError)
            expect(e.index).toEqual({ value: bad, position: at, bound: 4 })
            expect(e.message).toMatch(
              new RegExp(`^cpu\\.gather: index ${bad} at position ${at} is out of range \\[0, 4\\)`),
            )
          },
        ),
        { numRuns: 10 },
      )
    })
  }
})

describe("cross-entropy targets", () => {
  const V = 5
  const logits = input("logits", [3, V])
  const targets = input("targets", [3], "int32")
  const loss = o.sum(tokenCrossEntropy(logits, targets))
  const values = Float32Array.from({ length: 3 * V }, (_, i) => Math.sin(i))
  const feeds = (t: Int32Array) =>
    new Map<Tensor, Feed>([
      [logits, values],
      [targets, t],
    ])
  // Anything but [0, V) and the ignore index: ≥ V gave NaN, a negative a finite wrong loss.
  const badTarget = fc.oneof(
    fc.integer({ min: V, max: 2 ** 31 - 1 }),
    fc.integer({ min: -(2 ** 31), max: -1 }).filter((t) => t !== -100),
  )
  for (const fused of [true, false]) {
    it(`a target ≥ V or negative other than -100 is a GraphError (${fused ? "fused kernel" : "reference body"})`, async () => {
      await fc.assert(
        fc.asyncProperty(badTarget, fc.nat(2), async (bad, at) => {
          const t = Int32Array.from([1, -100, 4])
          t[at] = bad
          const e = (await failure([loss], feeds(t), cpuBackendLayer(makeCpuBackend({ fused })))) as GraphError
          expect(e).toBeInstanceOf(GraphError)
          expect(e.index).toEqual({ value: bad, position: at, bound: V })
          expect(e.message).toContain(`index ${bad} at position ${at} is out of range [0, ${V})`)
        }),
        { numRuns: 10 },
      )
    })
  }
  it("valid targets and the ignore index still give the float64 reference loss", async () => {
    const t = Int32Array.from([1, -100, 4])
    const exit = await Effect.runPromiseExit(evaluate([loss], feeds(t)).pipe(Effect.provide(cpuBackendLayer())))
    expect(Exit.isSuccess(exit)).toBe(true)
    const nll = (row: number, target: number) => {
      const xs = Array.from(values.subarray(row * V, row * V + V), Number)
      const m = Math.max(...xs)
      return m + Math.log(xs.reduce((s, x) => s + Math.exp(x - m), 0)) - xs[target]!
    }
    const got = Exit.isSuccess(exit) ? exit.value.values[0]![0]! : Number.NaN
    expect(got).toBeCloseTo(nll(0, 1) + nll(2, 4), 5)
  })
  it("the trainer refuses a batch with a target or token outside the vocabulary before running it", async () => {
    const model = decodeConfigSync({
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_key_value_heads: 1,
      vocab_size: 32,
      max_position_embeddings: 64,
    })
    for (const [field, value, says] of [
      ["targets", 32, "train: batch targets: index 32 at position 3 is out of range [0, 32)"],
      ["targets", -7, "train: batch targets: index -7 at position 3"],
      ["tokens", 40, "train: batch tokens: index 40 at position 3 is out of range [0, 32)"],
    ] as const) {
      const batchAt = (): Batch => {
        const b = {
          tokens: Int32Array.from({ length: 8 }, (_, i) => i),
          targets: Int32Array.from({ length: 8 }, (_, i) => i + 1),
          starts: Int32Array.from([0]),
        }
        b[field][3] = value
        return b
      }
      const batches: Batches = { batch: 1, seq: 8, windows: 1, batchAt }
      const opts = { model, mode: "mst" as const, batch: 1, seq: 8, steps: 1, lr: 1e-3, seed: 1 }
      // The fast CPU backend reads the ids too; the check comes first on every backend.
      const exit = await Effect.runPromiseExit(train(opts, batches).pipe(Effect.provide(fastCpuBackendLayer())))
      expect(Exit.isFailure(exit)).toBe(true)
      const failures = Exit.isFailure(exit) ? exit.cause.reasons.filter(Cause.isFailReason) : []
      expect(failures.map((f) => f.error)[0]).toBeInstanceOf(GraphError)
      expect((failures[0]!.error as GraphError).message).toContain(says)
    }
  })
})
