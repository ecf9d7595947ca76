// The WebGPU backend's own behaviour: its limits, pooling and fused kernels (the shared suite
// in conformance.test.ts checks its values), and what happens without an adapter.
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { mapKernels } from "../src/core/routines/registry.js"
import {
  COMPAT_TILE,
  CORE_TILE,
  makeWebGpuBackend,
  type MatmulTile,
  tileName,
  type WebGpuBackend,
  webgpuBackendLayer,
} from "../src/backends/webgpu/index.js"
import { valueAndGrad } from "../src/core/autodiff.js"
import { BackendUnavailable, DTypeError, OutOfMemory } from "../src/core/errors.js"
import { evaluate, type Feed } from "../src/core/executor.js"
import { input, type Tensor } from "../src/core/graph.js"
import * as o from "../src/core/ops.js"
import { chunked } from "../src/core/regions.js"
import { attention } from "../src/core/routines/attention.js"
import { logsumexp } from "../src/core/routines/basic.js"
import { crossEntropy } from "../src/core/routines/cross-entropy.js"
import { intArray, randomArray } from "./helpers.js"
import { type Subject, evalOn, expectClose, inCI, layerOf, upload, webgpu, webgpuMissing } from "./backends/subjects.js"
import { type Case, checkCase } from "./backends/graph-cases.js"

if (webgpu === undefined && inCI) {
  describe("webgpu in CI", () => {
    it("has a WebGPU adapter (CI is expected to provide Mesa llvmpipe)", () => {
      expect.fail(webgpuMissing)
    })
  })
}

describe.skipIf(webgpu === undefined)("webgpu backend specifics", () => {
  it("refuses float64 with a DTypeError that says to use float32", () => {
    const e = (() => {
      try {
        webgpu!.alloc("float64", 4)
      } catch (err) {
        return err
      }
    })()
    expect(e).toBeInstanceOf(DTypeError)
    expect((e as DTypeError).message).toMatch(/float64 is not supported.*float32/)
  })

  it("refuses a tensor larger than one buffer binding with OutOfMemory, suggesting more mini-sequences", () => {
    const size = Math.floor(webgpu!.maxBufferBytes / 4) + 1
    const e = (() => {
      try {
        webgpu!.alloc("float32", size)
      } catch (err) {
        return err
      }
    })()
    expect(e).toBeInstanceOf(OutOfMemory)
    expect((e as OutOfMemory).message).toMatch(/maxStorageBufferBindingSize.*raise M/)
  })

  it("pools freed buffers: a second allocation of the same size class reserves nothing new", () => {
    const before = webgpu!.memory()
    const a = webgpu!.alloc("float32", 12000)
    const reserved = webgpu!.memory().reserved
    expect(webgpu!.memory().live).toBe(before.live + 12000 * 4)
    webgpu!.free(a)
    const b = webgpu!.alloc("int32", 11500) // 46 000 bytes: the same size class as 48 000 (49 152)
    expect(webgpu!.memory().reserved).toBe(reserved)
    webgpu!.free(b)
    expect(webgpu!.memory().live).toBe(before.live)
  })

  it("runs logsumexp as one fused kernel", async () => {
    const x = input("x", [3, 50], "float32")
    const data = randomArray("float32", 150, 4) as Float32Array
    const before = webgpu!.stats().dispatches
    const [lse] = await evalOn(layerOf(webgpu!), [logsumexp(x)], new Map([[x, data]]))
    expect(webgpu!.stats().dispatches - before).toBe(1)
    const want = Array.from({ length: 3 }, (_, r) =>
      Math.log(data.slice(r * 50, r * 50 + 50).reduce((s, v) => s + Math.exp(v), 0)),
    )
    expectClose("lse", lse!, Float64Array.from(want), 1e-6)
  })

  it("fused crossEntropy and its VJP agree with the reference bodies on the same device, in fewer kernels", async () => {
    const unfused = await makeWebGpuBackend({ fusedRoutines: false })
    try {
      expect(Object.keys(webgpu!.routines ?? {}).sort()).toEqual([
        "attention",
        "attention.vjp",
        "crossEntropy",
        "crossEntropy.vjp",
        "logsumexp",
      ])
      expect(unfused.routines).toBeUndefined()
      const [N, V] = [37, 300]
      const logits = input("logits", [N, V], "float32")
      const targets = input("targets", [N], "int32")
      const { value, grads } = valueAndGrad(crossEntropy(logits, targets), { logits })
      const t = intArray(N, V, 8).map((v, i) => (i % 5 === 0 ? -100 : v))
      const feeds = new Map<Tensor, Feed>([
        [logits, randomArray("float32", N * V, 7, { std: 3 })],
        [targets, t],
      ])
      const count = async (be: WebGpuBackend) => {
        const before = be.stats().dispatches
        const values = await evalOn(layerOf(be), [value, grads.logits], feeds)
        return { values, dispatches: be.stats().dispatches - before }
      }
      const [fused, plain] = [await count(webgpu!), await count(unfused)]
      expectClose("loss", fused.values[0]!, plain.values[0]!, 1e-5)
      expectClose("dlogits", fused.values[1]!, plain.values[1]!, 1e-5)
      expect(fused.dispatches).toBeLessThan(plain.dispatches)
    } finally {
      await unfused.destroy()
    }
  })

  // The graph cases run the device's default tile; the other shapes must agree too.
  const tiles: MatmulTile[] = [CORE_TILE, COMPAT_TILE, { bm: 32, bn: 16, bk: 4, tx: 4, ty: 8 }]
  for (const tile of tiles) {
    it(`matmul with tile ${tileName(tile)}: every transpose, batch 2, ragged edges, accumulate`, async () => {
      if (webgpu!.limits.maxComputeInvocationsPerWorkgroup < tile.tx * tile.ty)
        return expect.fail(`device allows fewer than ${tile.tx * tile.ty} threads`)
      const be = await makeWebGpuBackend({ matmulTile: tile })
      try {
        expect(be.matmulTile).toEqual(tile)
        const [batch, m, n, k] = [2, 130, 70, 33]
        for (const transA of [false, true])
          for (const transB of [false, true])
            for (const accumulate of [false, true]) {
              const a = randomArray("float32", batch * m * k, 31) as Float32Array,
                bm = randomArray("float32", batch * k * n, 32) as Float32Array
              const c0 = randomArray("float32", batch * m * n, 33) as Float32Array
              const [A, B, C] = [upload(be, "float32", a), upload(be, "float32", bm), upload(be, "float32", c0)]
              be.matmul(A, B, C, { batch, m, n, k, transA, transB, accumulate })
              const want = Float64Array.from({ length: batch * m * n }, (_, e) => {
                const [t, i, j] = [Math.floor(e / (m * n)), Math.floor(e / n) % m, e % n]
                let s = accumulate ? c0[e]! : 0
                for (let p = 0; p < k; p++)
                  s +=
                    a[t * m * k + (transA ? p * m + i : i * k + p)]! * bm[t * k * n + (transB ? j * k + p : p * n + j)]!
                return s
              })
              expectClose(`transA ${transA}, transB ${transB}, accumulate ${accumulate}`, await be.read(C), want, 1e-5)
              for (const buf of [A, B, C]) be.free(buf)
            }
      } finally {
        await be.destroy()
      }
    })
  }

  it("webgpuBackendLayer acquires a device for the scope and runs a graph on it", async () => {
    const x = input("x", [4], "float32")
    const program = evaluate([o.mul(x, 3)], new Map([[x, Float32Array.from([1, 2, 3, 4])]])).pipe(
      Effect.provide(webgpuBackendLayer()),
    )
    const { values } = await Effect.runPromise(program)
    expect(Array.from(values[0]!)).toEqual([3, 6, 9, 12])
  })
})

// ---------------------------------------------------------------------------------------------
// Fused flash attention on WebGPU: every case must really run the fused kernels
// ---------------------------------------------------------------------------------------------

/** The backend with every fused routine wrapped to count its calls. */
function spied(be: WebGpuBackend): { subject: Subject; calls: Map<string, number>; dispatches: Map<string, number[]> } {
  const calls = new Map<string, number>()
  const dispatches = new Map<string, number[]>() // per call, the kernels it dispatched
  const routines = mapKernels(be.routines ?? {}, (f, name) => (call) => {
    calls.set(name, (calls.get(name) ?? 0) + 1)
    const before = be.stats().dispatches
    f(call)
    dispatches.set(name, [...(dispatches.get(name) ?? []), be.stats().dispatches - before])
  })
  return { subject: { name: "webgpu (spied)", impl: { ...be, routines } }, calls, dispatches }
}

/** Which results of the attention region the loss reads: o (the usual), o and lse, or lse alone. */
type AttnOutputs = "o" | "o+lse" | "lse"

interface AttnCase {
  readonly name: string
  /** [B, H, Hkv, S, D] */
  readonly dims: readonly [number, number, number, number, number]
  readonly blockSize?: number
  readonly outputs?: AttnOutputs
  /** Run attention inside chunked(M) over the batch axis (pieces of uneven length). */
  readonly chunks?: number
}

const attnResults = (y: Tensor, outputs: AttnOutputs): Tensor[] => {
  const lse = y.node.results[1]!
  return outputs === "o" ? [y] : outputs === "lse" ? [lse] : [y, lse]
}

const attnCase = (a: AttnCase): Case => {
  const [B, H, Hkv, S, D] = a.dims
  const outputs = a.outputs ?? "o"
  const f = (q: Tensor, k: Tensor, v: Tensor) =>
    attnResults(attention(q, k, v, { blockSize: a.blockSize ?? 16 }), outputs)
  return {
    name: a.name,
    inputs: [
      [B, H, S, D],
      [B, Hkv, S, D],
      [B, Hkv, S, D],
    ],
    grad: true,
    tol: 1e-4,
    build: ([q, k, v]) => (a.chunks === undefined ? f(q!, k!, v!) : chunked(a.chunks, { axis: 0 })(f)(q!, k!, v!)),
  }
}

const attentionCases: AttnCase[] = [
  { name: "S = 1, D = 16", dims: [1, 2, 2, 1, 16] },
  {
    name: "S = 37 (not a multiple of any block), D = 16, GQA H = 4, Hkv = 2, o and lse",
    dims: [1, 4, 2, 37, 16],
    outputs: "o+lse",
  },
  { name: "S = 150 (> 2 query blocks), D = 16, GQA H = 4, Hkv = 1", dims: [1, 4, 1, 150, 16], blockSize: 64 },
  { name: "S = 70, D = 64, MHA, B = 2", dims: [2, 2, 2, 70, 64] },
  { name: "S = 45, D = 64, GQA H = 4, Hkv = 1, lse alone", dims: [1, 4, 1, 45, 64], outputs: "lse" },
  { name: "S = 33, D = 75 (ragged per-thread slices), GQA H = 4, Hkv = 2", dims: [1, 4, 2, 33, 75], blockSize: 8 },
  { name: "S = 40, D = 256 (Gemma 2), GQA H = 4, Hkv = 2, o and lse", dims: [1, 4, 2, 40, 256] },
  {
    name: "chunked(2) over B = 3 (pieces of 2 and 1), S = 19, D = 32, GQA H = 4, Hkv = 2",
    dims: [3, 4, 2, 19, 32],
    chunks: 2,
  },
]

describe.skipIf(webgpu === undefined)("webgpu fused attention matches the CPU reference in float64", () => {
  for (const a of attentionCases) {
    it(a.name, async () => {
      const { subject, calls } = spied(webgpu!)
      await checkCase(subject, attnCase(a))
      // The fused kernels ran (once per chunk), not the reference body.
      const pieces = a.chunks === undefined ? 1 : Math.ceil(a.dims[0] / Math.ceil(a.dims[0] / a.chunks))
      expect(calls.get("attention"), "fused forward calls").toBe(a.chunks === undefined ? 1 : 2 * pieces) // chunked backward recomputes
      expect(calls.get("attention.vjp"), "fused backward calls").toBe(pieces)
    })
  }

  it("runs the forward as one kernel and the backward as three (delta, dQ, dK/dV)", async () => {
    const [B, H, Hkv, S, D] = [1, 4, 2, 50, 32]
    const [q, k, v] = [
      input("q", [B, H, S, D], "float32"),
      input("k", [B, Hkv, S, D], "float32"),
      input("v", [B, Hkv, S, D], "float32"),
    ]
    const feeds = new Map<Tensor, Feed>([
      [q, randomArray("float32", q.size, 51)],
      [k, randomArray("float32", k.size, 52)],
      [v, randomArray("float32", v.size, 53)],
    ])
    const { subject, dispatches } = spied(webgpu!)
    const y = attention(q, k, v)
    const { grads } = valueAndGrad(o.sum(y), { q, k, v })
    await evalOn(layerOf(subject.impl!), [y, grads.q!, grads.k!, grads.v!], feeds)
    expect(dispatches.get("attention")).toEqual([1])
    expect(dispatches.get("attention.vjp")).toEqual([3])
  })
})

describe("webgpu without an adapter", () => {
  it("the layer fails with BackendUnavailable, saying why and what to do", async () => {
    const layer = webgpuBackendLayer({ configs: [{ flags: ["adapter=no-such-gpu"], featureLevel: "compatibility" }] })
    // flip: the layer's failure becomes the value (and a success would fail this test).
    const e = await Effect.runPromise(Effect.flip(Effect.provide(Effect.void, layer)))
    expect(e).toBeInstanceOf(BackendUnavailable)
    expect(e.reason).toMatch(/adapter=no-such-gpu/) // names the configuration it tried
    expect(e.message).toMatch(/CPU backend/)
  })
})
