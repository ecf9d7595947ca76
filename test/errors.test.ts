// Every typed error the core raises, for the bad input it names, with a message that says the fix.
import { Effect, Exit } from "effect"
import { describe, expect, it } from "vitest"
import { cpuBackendLayer } from "../src/backends/cpu/index.js"
import { valueAndGrad } from "../src/core/autodiff.js"
import { evaluate, plan } from "../src/core/executor.js"
import { input } from "../src/core/graph.js"
import * as o from "../src/core/ops.js"
import { attention } from "../src/core/routines/attention.js"
import { chunked } from "../src/core/regions.js"
import { BadConfig, DTypeError, GraphError, OutOfMemory, ShapeError } from "../src/core/errors.js"
import { apply } from "../src/core/primitives.js"

function thrown(f: () => unknown): unknown {
  try {
    f()
  } catch (e) {
    return e
  }
  throw new Error("expected an error")
}

describe("ShapeError", () => {
  it("names the op and both shapes when shapes do not broadcast", () => {
    const e = thrown(() => o.add(input("a", [2, 3]), input("b", [4])))
    expect(e).toBeInstanceOf(ShapeError)
    expect((e as ShapeError).message).toBe("add: shapes [2, 3] and [4] do not broadcast (dim 1: 3 vs 4)")
    expect((e as ShapeError).shapes).toEqual([[2, 3], [4]])
  })
  it("a primitive given the wrong number of operands (its rule sees a tuple of its arity)", () => {
    const e = thrown(() => apply("add", [input("a", [2])], {})) as ShapeError
    expect(e).toBeInstanceOf(ShapeError)
    expect(e.message).toBe("add: takes 2 operands, got 1")
    expect((thrown(() => apply("where", [input("c", [2]), input("a", [2])], {})) as ShapeError).message).toBe(
      "where: takes 3 operands, got 2",
    )
  })
  it("matmul with different inner dims", () => {
    const e = thrown(() => o.matmul(input("a", [2, 3]), input("b", [4, 5]))) as ShapeError
    expect(e._tag).toBe("ShapeError")
    expect(e.message).toContain("matmul: inner dims differ (3 vs 4)")
  })
  it("reshape to a different element count", () => {
    expect((thrown(() => o.reshape(input("a", [2, 3]), [4, 2])) as ShapeError).message).toContain(
      "cannot reshape 6 elements to [4, 2]",
    )
  })
  it("slice out of range", () => {
    expect((thrown(() => o.slice(input("a", [2, 3]), 1, 1, 5)) as ShapeError).message).toContain(
      "range 1:5 is outside axis 1 of length 3",
    )
  })
  it("chunked arguments of different lengths along the split axis", () => {
    const e = thrown(() =>
      chunked(2)((a, b) => o.add(a, b))(input("a", [1, 4, 2]), input("b", [1, 5, 2])),
    ) as ShapeError
    expect(e).toBeInstanceOf(ShapeError)
    expect(e.message).toContain("same length along axis 1 (got 4, 5)")
  })
  it("chunked concat of an output that is not per-token", () => {
    const e = thrown(() => chunked(2, { axis: 1 })((a) => o.sum(a))(input("a", [1, 4, 2]))) as ShapeError
    expect(e.message).toContain('use combine "sum" for reductions')
  })
  it("attention with heads that do not group", () => {
    const e = thrown(() =>
      attention(input("q", [1, 3, 4, 2]), input("k", [1, 2, 4, 2]), input("v", [1, 2, 4, 2])),
    ) as ShapeError
    expect(e.message).toContain("H a multiple of Hkv")
  })
})

describe("DTypeError", () => {
  it("mixed dtypes say to cast", () => {
    const e = thrown(() => o.add(input("a", [2], "float32"), input("b", [2], "float64"))) as DTypeError
    expect(e).toBeInstanceOf(DTypeError)
    expect(e.message).toBe("add: operands must share a dtype (got float32 and float64); insert cast()")
  })
  it("float indices", () => {
    expect((thrown(() => o.gather(input("t", [4, 2]), input("i", [3], "float32"))) as DTypeError).message).toContain(
      "indices must be int32",
    )
  })
  it("matmul of integers", () => {
    expect(thrown(() => o.matmul(input("a", [2, 2], "int32"), input("b", [2, 2], "int32")))).toBeInstanceOf(DTypeError)
  })
})

describe("BadConfig", () => {
  it("chunked(M) needs a positive integer M", () => {
    for (const M of [0, -1, 1.5]) {
      const e = thrown(() => chunked(M)) as BadConfig
      expect(e).toBeInstanceOf(BadConfig)
      expect(e.field).toBe("M")
      expect(e.message).toBe(`chunked: M must be a positive integer, got ${M}`)
    }
  })
})

describe("GraphError", () => {
  it("an input with no value names the input", async () => {
    const a = input("tokens", [3])
    const exit = await Effect.runPromiseExit(evaluate([o.exp(a)], new Map()).pipe(Effect.provide(cpuBackendLayer())))
    expect(Exit.isFailure(exit)).toBe(true)
    const err = Exit.isFailure(exit) ? exit.cause : undefined
    expect(String(err)).toContain('input "tokens" of shape [3] was not given a value')
  })
  it("valueAndGrad of a non-scalar", () => {
    const e = thrown(() => valueAndGrad(input("y", [3]), {})) as GraphError
    expect(e).toBeInstanceOf(GraphError)
    expect(e.message).toContain("the loss must be a float scalar")
  })
  it("a feed of the wrong size", async () => {
    const a = input("x", [3])
    const exit = await Effect.runPromiseExit(
      evaluate([o.exp(a)], new Map([[a, new Float32Array(2)]])).pipe(Effect.provide(cpuBackendLayer())),
    )
    expect(String(Exit.isFailure(exit) ? exit.cause : "")).toContain("has 2 float32 values; it needs 3 float32")
  })
})

describe("OutOfMemory", () => {
  const x = input("x", [1, 64, 8])
  const w = input("w", [32, 8])
  const y = o.sum(o.exp(o.matmul(x, w, { transB: true }))) // a [64, 32] intermediate
  const inputs = new Map([
    [x, "activations" as const],
    [w, "weights" as const],
  ])

  it("reports the request, what is alive and the limit, before allocating", () => {
    const need = plan([y], inputs).peak
    expect(() => plan([y], inputs, { limit: need })).not.toThrow()
    const e = thrown(() => plan([y], inputs, { limit: need - 1 })) as OutOfMemory
    expect(e).toBeInstanceOf(OutOfMemory)
    expect(e.limit).toBe(need - 1)
    expect(e.alive + e.requested).toBeGreaterThan(need - 1)
    expect(e.message).toContain("raise M for the chunked blocks")
  })

  it("is a typed failure of evaluate, and the buffers are given back", async () => {
    const { makeCpuBackend } = await import("../src/backends/cpu/index.js")
    const cpu = makeCpuBackend()
    const exit = await Effect.runPromiseExit(
      evaluate(
        [y],
        new Map([
          [x, new Float32Array(x.size)],
          [w, new Float32Array(w.size)],
        ]),
        { limit: 4096 },
      ).pipe(Effect.provide(cpuBackendLayer(cpu))),
    )
    expect(Exit.isFailure(exit)).toBe(true)
    if (Exit.isFailure(exit)) expect(String(exit.cause)).toContain("OutOfMemory")
    expect(cpu.memory().live).toBe(0)
  })
})
