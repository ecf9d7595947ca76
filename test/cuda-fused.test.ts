// Every fused CUDA routine against the CPU backend's reference bodies in float64.
import { Layer } from "effect"
import { describe, expect, it } from "vitest"
import { Backend } from "../src/core/backend.js"
import { mapKernels } from "../src/core/routines/registry.js"
import { makeCudaBackend } from "../src/backends/cuda/index.js"
import { valueAndGrad } from "../src/core/autodiff.js"
import { accumulatorDType, type DType, type HostArray } from "../src/core/dtype.js"
import type { Feed } from "../src/core/executor.js"
import { input, type Tensor } from "../src/core/graph.js"
import * as o from "../src/core/ops.js"
import { rng } from "../src/core/random.js"
import { attention } from "../src/core/routines/attention.js"
import { logsumexp, silu } from "../src/core/routines/basic.js"
import { tokenCrossEntropy } from "../src/core/routines/cross-entropy.js"
import {
  arg,
  cuda,
  evalOn,
  expectClose,
  expectSame,
  hostOf,
  noGpu,
  normals,
  reference,
  roundBf16,
  runOn,
} from "./backends/cuda-device.js"

// ---------------------------------------------------------------------------------------------
// Fused routines: the CUDA kernels (src/backends/cuda/fused.ts) against the CPU backend running
// the routines' reference bodies in float64. Each case counts the fused calls, so it cannot pass
// by running the reference body on the GPU. bfloat16 cases feed the reference the same
// bfloat16-rounded inputs; its tolerances cover the rounding of the outputs (and of the saved
// o the backward reads; attention's lse is saved in float32). Cases marked [small] are the ones the device script also runs
// under compute-sanitizer.
// ---------------------------------------------------------------------------------------------

const fusedNames = [
  "adamw",
  "attention",
  "attention.vjp",
  "crossEntropy",
  "crossEntropy.vjp",
  "logsumexp",
  "logsumexp.vjp",
  "rmsNorm",
  "rmsNorm.vjp",
  "rope",
  "rope.vjp",
  "silu",
  "silu.vjp",
  "siluMul",
  "siluMul.vjp",
  "sumOfSquares",
] // adamw, rmsNorm, rope, siluMul, sumOfSquares: test/cuda-train.test.ts

/** The CUDA backend with its fused routines counted. */
function spied(): { layer: Layer.Layer<Backend>; calls: Map<string, number> } {
  const calls = new Map<string, number>()
  const routines = mapKernels(cuda!.routines ?? {}, (f, name) => (call) => {
    calls.set(name, (calls.get(name) ?? 0) + 1)
    f(call)
  })
  return { layer: Layer.succeed(Backend, { ...cuda!, routines }), calls }
}

interface FusedCase {
  /** The graph in `dtype`: its inputs (in the order of `data`) and outputs (named by `names`). */
  build(dtype: DType): { inputs: Tensor[]; outputs: Tensor[] }
  readonly data: readonly (Float32Array | Int32Array)[]
  readonly names: readonly string[]
  /** Routines that must have run fused. */
  readonly fused: readonly string[]
}

/** Runs the case on CUDA in `dtype` and on the CPU in float64; tol per output (or one for all). */
async function compareFused(
  what: string,
  dtype: DType,
  c: FusedCase,
  tol: number | readonly number[],
): Promise<HostArray[]> {
  const test = c.build(dtype),
    ref = c.build("float64")
  const { layer, calls } = spied()
  const live0 = cuda!.memory().live
  const feed = (t: Tensor, d: Float32Array | Int32Array, f64: boolean): Feed =>
    d instanceof Int32Array ? d : f64 ? Float64Array.from(dtype === "bfloat16" ? roundBf16(d) : d) : hostOf(t.dtype, d)
  const got = await evalOn(
    layer,
    test.outputs,
    new Map(test.inputs.map((t, i) => [t, feed(t, c.data[i]!, false)] as [Tensor, Feed])),
  )
  const want = await evalOn(
    reference,
    ref.outputs,
    new Map(ref.inputs.map((t, i) => [t, feed(t, c.data[i]!, true)] as [Tensor, Feed])),
  )
  expect(cuda!.memory().live, `${what}: live bytes after the run`).toBe(live0) // scratch and results all given back
  for (const name of c.fused) expect(calls.get(name) ?? 0, `${what}: calls of the fused ${name}`).toBe(1)
  got.forEach((g, i) => expectClose(`${what}: ${c.names[i]}`, g, want[i]!, typeof tol === "number" ? tol : tol[i]!))
  return got
}

/** Per-token cross-entropy weighted by w (so every row has its own dnll); outputs nll, dlogits. */
function ceCase(
  N: number,
  V: number,
  seed: number,
  opts: { ignore?: (i: number) => boolean; scale?: number } = {},
): FusedCase {
  const r = rng(seed)
  const targets = Int32Array.from({ length: N }, (_, i) =>
    opts.ignore?.(i) ? -100 : Math.min(V - 1, Math.floor(r() * V)),
  )
  return {
    build: (dtype) => {
      const logits = input("logits", [N, V], dtype),
        t = input("targets", [N], "int32"),
        w = input("w", [N], dtype)
      const nll = tokenCrossEntropy(logits, t)
      const { grads } = valueAndGrad(o.sum(o.mul(nll, w)), { logits })
      return { inputs: [logits, t, w], outputs: [nll, grads.logits!] }
    },
    data: [normals(N * V, seed, { scale: opts.scale ?? 2 }), targets, normals(N, seed + 1)],
    names: ["nll", "dlogits"],
    fused: ["crossEntropy", "crossEntropy.vjp"],
  }
}

function lseCase(shape: readonly number[], seed: number, negInfEvery = 0): FusedCase {
  const n = shape.reduce((a, b) => a * b, 1),
    rows = n / shape.at(-1)!
  const x = normals(n, seed, { scale: 3 })
  if (negInfEvery > 0) for (let i = 1; i < n; i += negInfEvery) x[i] = -Infinity // never a whole row
  return {
    build: (dtype) => {
      const xs = input("x", shape, dtype),
        w = input("w", [...shape.slice(0, -1), 1], dtype)
      const lse = logsumexp(xs)
      const { grads } = valueAndGrad(o.sum(o.mul(lse, w)), { x: xs })
      return { inputs: [xs, w], outputs: [lse, grads.x!] }
    },
    data: [x, normals(rows, seed + 1)],
    names: ["lse", "dx"],
    fused: ["logsumexp", "logsumexp.vjp"],
  }
}

function siluCase(shape: readonly number[], seed: number): FusedCase {
  const n = shape.reduce((a, b) => a * b, 1)
  const x = normals(n, seed, { scale: 6 })
  x[0] = 100
  x[1] = -100
  x[2] = 0
  return {
    build: (dtype) => {
      const xs = input("x", shape, dtype),
        w = input("w", shape, dtype)
      const y = silu(xs)
      const { grads } = valueAndGrad(o.sum(o.mul(y, w)), { x: xs })
      return { inputs: [xs, w], outputs: [y, grads.x!] }
    },
    data: [x, normals(n, seed + 1)],
    names: ["y", "dx"],
    fused: ["silu", "silu.vjp"],
  }
}

/** Causal attention weighted by r; outputs o, dq, dk, dv (dk, dv summed over the group's heads). */
function attentionCase(B: number, H: number, Hkv: number, S: number, D: number, seed: number): FusedCase {
  return {
    build: (dtype) => {
      const q = input("q", [B, H, S, D], dtype),
        k = input("k", [B, Hkv, S, D], dtype),
        v = input("v", [B, Hkv, S, D], dtype)
      const r = input("r", [B, H, S, D], dtype)
      const out = attention(q, k, v)
      const { grads } = valueAndGrad(o.sum(o.mul(out, r)), { q, k, v })
      return { inputs: [q, k, v, r], outputs: [out, grads.q!, grads.k!, grads.v!] }
    },
    data: [
      normals(B * H * S * D, seed),
      normals(B * Hkv * S * D, seed + 1),
      normals(B * Hkv * S * D, seed + 2),
      normals(B * H * S * D, seed + 3),
    ],
    names: ["o", "dq", "dk", "dv"],
    fused: ["attention", "attention.vjp"],
  }
}

/**
 * Causal attention and its VJP in float64, written out directly: the oracle for the lse
 * cotangent, which the public `attention()` (it returns o alone) never produces.
 */
function attentionReference(
  dims: readonly [number, number, number, number, number],
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dO: ArrayLike<number> | undefined,
  dLse: ArrayLike<number> | undefined,
) {
  const [B, H, Hkv, S, D] = dims
  const G = H / Hkv,
    scale = 1 / Math.sqrt(D)
  const out = new Float64Array(B * H * S * D),
    lse = new Float64Array(B * H * S)
  const dq = new Float64Array(B * H * S * D),
    dk = new Float64Array(B * Hkv * S * D),
    dv = new Float64Array(B * Hkv * S * D)
  const dot = (a: ArrayLike<number>, i: number, b: ArrayLike<number>, j: number) => {
    let s = 0
    for (let d = 0; d < D; d++) s += a[i + d]! * b[j + d]!
    return s
  }
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const bh = b * H + h,
        kvh = b * Hkv + Math.floor(h / G)
      for (let r = 0; r < S; r++) {
        const qi = (bh * S + r) * D
        const s = Array.from({ length: r + 1 }, (_, c) => dot(q, qi, k, (kvh * S + c) * D) * scale)
        const m = Math.max(...s)
        const l = s.reduce((acc, x) => acc + Math.exp(x - m), 0)
        lse[bh * S + r] = m + Math.log(l)
        const p = s.map((x) => Math.exp(x - lse[bh * S + r]!))
        for (let c = 0; c <= r; c++)
          for (let d = 0; d < D; d++) out[qi + d] = out[qi + d]! + p[c]! * v[(kvh * S + c) * D + d]!
        const delta = (dO ? dot(dO, qi, out, qi) : 0) - (dLse ? dLse[bh * S + r]! : 0)
        for (let c = 0; c <= r; c++) {
          const kc = (kvh * S + c) * D
          const ds = p[c]! * ((dO ? dot(dO, qi, v, kc) : 0) - delta)
          for (let d = 0; d < D; d++) {
            dq[qi + d] = dq[qi + d]! + scale * ds * k[kc + d]!
            dk[kc + d] = dk[kc + d]! + scale * ds * q[qi + d]!
            if (dO) dv[kc + d] = dv[kc + d]! + p[c]! * dO[qi + d]!
          }
        }
      }
    }
  }
  return { out, lse, dq, dk, dv }
}

describe.skipIf(noGpu)("cuda fused routines against the CPU reference bodies in float64", () => {
  it("registers every fused routine, and none with fused: false", async () => {
    expect(Object.keys(cuda!.routines ?? {}).sort()).toEqual([...fusedNames].sort())
    const plain = makeCudaBackend({ fused: false })
    expect(plain.routines).toBe(undefined)
    await plain.destroy()
  })

  // crossEntropy: rows of odd lengths (scalar loads) and of multiples of 16 bytes (vector loads),
  // a single row, tiny and long rows, ignored targets, rows where every target is ignored.
  const ceCases: [string, FusedCase][] = [
    ["N = 37, V = 1001 (odd), every 4th target ignored [small]", ceCase(37, 1001, 1, { ignore: (i) => i % 4 === 1 })],
    ["N = 1, V = 50257 (one long row, odd)", ceCase(1, 50257, 2)],
    ["N = 64, V = 4096 (vector loads), logits of std 30", ceCase(64, 4096, 3, { scale: 30 })],
    ["N = 16, V = 1004 (vectors for float32, not bfloat16)", ceCase(16, 1004, 4, { ignore: (i) => i === 0 })],
    ["N = 8, V = 32000", ceCase(8, 32000, 5)],
    ["N = 5, V = 7 (shorter than a warp), all ignored but one [small]", ceCase(5, 7, 6, { ignore: (i) => i !== 2 })],
  ]
  for (const [name, c] of ceCases) {
    it(`crossEntropy float32: ${name}`, async () => {
      await compareFused(`crossEntropy float32 ${name}`, "float32", c, 1e-5)
    })
    it(`crossEntropy bfloat16: ${name}`, async () => {
      await compareFused(`crossEntropy bfloat16 ${name}`, "bfloat16", c, 8e-3)
    })
  }
  it("crossEntropy float64: N = 37, V = 1001 and N = 16, V = 1004", async () => {
    await compareFused("crossEntropy float64 (odd)", "float64", ceCases[0]![1], 1e-12)
    await compareFused("crossEntropy float64 (vectors)", "float64", ceCases[3]![1], 1e-12)
  })

  it("crossEntropy reports an out-of-range target at the next read [small]", async () => {
    const [N, V] = [3, 10]
    const f = cuda!.routines!.crossEntropy!
    let message = ""
    await runOn(
      cuda!,
      [arg("float32", normals(N * V, 1)), arg("int32", [1, 10, -100])],
      [{ dtype: "float32", size: N }],
      ([logits, targets], [nll]) =>
        f({
          inputs: { logits: logits!, targets: targets! },
          outputs: { nll: nll! },
          shapes: { inputs: { logits: [N, V], targets: [N] }, outputs: { nll: [N] } },
          attrs: { ignoreIndex: -100 },
        }),
    ).catch((e: Error) => {
      message = e.message
    })
    expect(message).toMatch(/^cuda\.crossEntropy: index 10 at position 1 is out of range \[0, 10\)/)
  })

  const lseCases: [string, readonly number[], number][] = [
    ["[3, 5, 1001] with −∞ entries [small]", [3, 5, 1001], 7],
    ["[4, 1]", [4, 1], 0],
    ["[2, 4096] (vector loads)", [2, 4096], 0],
    ["[1, 65537] (one long row: 1024 threads)", [1, 65537], 0],
  ]
  for (const [name, shape, negInf] of lseCases) {
    it(`logsumexp float32 / bfloat16 / float64: ${name}`, async () => {
      const c = lseCase(shape, 11, negInf)
      await compareFused(`logsumexp float32 ${name}`, "float32", c, 1e-5)
      // dx = exp(x − lse)·w reads the lse that was stored in bf16: |Δlse| ≤ 2⁻⁹·|lse| (lse ≈ 7–15
      // here) moves dx by that much relatively — the same cause as attention's bf16 tolerance.
      await compareFused(`logsumexp bfloat16 ${name}`, "bfloat16", c, [8e-3, 5e-2])
      await compareFused(`logsumexp float64 ${name}`, "float64", c, 1e-12)
    })
  }

  it("silu float32 / bfloat16 / float64: [7, 333] with ±100 and 0 [small]", async () => {
    const c = siluCase([7, 333], 12)
    await compareFused("silu float32", "float32", c, 1e-6)
    await compareFused("silu bfloat16", "bfloat16", c, 8e-3)
    await compareFused("silu float64", "float64", c, 1e-13)
  })

  // attention: S = 1, S not a multiple of any block, several blocks, D = 32, 64, 80, 128, 256,
  // MHA and GQA with 2 and 1 kv heads. bfloat16 with D a multiple of 16 up to 128 runs the
  // tensor-core kernels (query blocks of 128, key blocks of 64 and 128, dK/dV query steps of 32),
  // everything else the SIMT ones.
  const attnCases: [string, [number, number, number, number, number]][] = [
    ["S = 1, D = 64 [small]", [1, 1, 1, 1, 64]],
    ["MHA B = 2, H = 2, S = 77, D = 64 [small]", [2, 2, 2, 77, 64]],
    ["GQA H = 4, Hkv = 2, S = 100, D = 64", [1, 4, 2, 100, 64]],
    ["MQA H = 4, Hkv = 1, S = 130, D = 32", [1, 4, 1, 130, 32]],
    ["GQA H = 4, Hkv = 2, S = 70, D = 256 [small]", [1, 4, 2, 70, 256]],
    ["MQA H = 4, Hkv = 1, S = 33, D = 256", [1, 4, 1, 33, 256]],
    ["MHA H = 2, S = 129, D = 128", [1, 2, 2, 129, 128]],
    ["GQA H = 2, Hkv = 1, S = 50, D = 80 (not a multiple of 16)", [1, 2, 1, 50, 80]],
    ["GQA H = 4, Hkv = 2, S = 300, D = 128 (many blocks)", [1, 4, 2, 300, 128]],
    ["GQA H = 8, Hkv = 2, S = 200, D = 128 [small]", [1, 8, 2, 200, 128]],
  ]
  for (const [name, [B, H, Hkv, S, D]] of attnCases) {
    it(`attention float32: ${name}`, async () => {
      await compareFused(`attention float32 ${name}`, "float32", attentionCase(B, H, Hkv, S, D, 21), 5e-6) // seen: ≤ 1.1e-6
    })
  }
  for (const [name, [B, H, Hkv, S, D]] of [0, 1, 2, 4, 6, 7, 8, 9].map((i) => attnCases[i]!)) {
    // bfloat16: o rounded once (≤ 2⁻⁹ relative) plus P rounded to bf16 for the tensor cores; the
    // gradients also go through bf16 dS and the saved bf16 o (lse stays float32). Seen on the H200:
    // o ≤ 2.9e-3, dq/dk/dv ≤ 5.2e-3. A bf16 lse (as before) moved them by up to 3%.
    it(`attention bfloat16: ${name}`, async () => {
      await compareFused(
        `attention bfloat16 ${name}`,
        "bfloat16",
        attentionCase(B, H, Hkv, S, D, 22),
        [8e-3, 1.5e-2, 1.5e-2, 1.5e-2],
      )
    })
  }
  for (const [name, [B, H, Hkv, S, D]] of [attnCases[2]!, attnCases[5]!]) {
    it(`attention float64: ${name}`, async () => {
      await compareFused(`attention float64 ${name}`, "float64", attentionCase(B, H, Hkv, S, D, 23), 1e-11)
    })
  }

  it("attention gradients are bitwise the same run to run (no atomics), float32 and bfloat16 [small]", async () => {
    const c = attentionCase(1, 4, 2, 100, 64, 24)
    for (const dtype of ["float32", "bfloat16"] as const) {
      const t = c.build(dtype)
      const feeds = new Map(t.inputs.map((x, i) => [x, c.data[i]!] as [Tensor, Feed]))
      const first = await evalOn(Layer.succeed(Backend, cuda!), t.outputs, feeds)
      const second = await evalOn(Layer.succeed(Backend, cuda!), t.outputs, feeds)
      first.forEach((g, i) => expectSame(`run-to-run ${dtype} ${c.names[i]}`, second[i]!, g))
    }
  })

  it("attention.vjp with cotangents for lse: dO and dLse, dLse alone, a float32 dO for bfloat16 q, lse in float32 [small]", async () => {
    const dims = [1, 4, 2, 45, 64] as const
    const [B, H, Hkv, S, D] = dims
    const [nq, nk, nl] = [B * H * S * D, B * Hkv * S * D, B * H * S]
    const [q, k, v, dO, dLse] = [normals(nq, 31), normals(nk, 32), normals(nk, 33), normals(nq, 34), normals(nl, 35)]
    const routines = cuda!.routines!
    const shapes = { q: [B, H, S, D], kv: [B, Hkv, S, D], lse: [B, H, S, 1] }
    for (const dtype of ["float32", "bfloat16"] as const) {
      const rq = dtype === "bfloat16" ? roundBf16(q) : q,
        rk = dtype === "bfloat16" ? roundBf16(k) : k,
        rv = dtype === "bfloat16" ? roundBf16(v) : v
      const tol = dtype === "bfloat16" ? 1.5e-2 : 5e-6 // as the attention bfloat16 cases above
      const lseType = accumulatorDType(dtype) // float32 for bfloat16 too
      const ctSets: (readonly ("dO" | "dLse")[])[] = [["dO", "dLse"], ["dLse"], ["dO"]]
      for (const cts of ctSets) {
        const want = attentionReference(
          dims,
          rq,
          rk,
          rv,
          cts.includes("dO") ? dO : undefined,
          cts.includes("dLse") ? dLse : undefined,
        )
        // float32 cotangents: dO is cast to bfloat16 for bfloat16 q, as the reference VJP does; dLse has lse's dtype.
        const ctArgs = cts.map((c) => (c === "dO" ? arg("float32", dO) : arg("float32", dLse)))
        const ctShapes = Object.fromEntries(cts.map((c) => [c, c === "dO" ? shapes.q : shapes.lse]))
        const got = await runOn(
          cuda!,
          [arg(dtype, q), arg(dtype, k), arg(dtype, v), ...ctArgs],
          [
            { dtype, size: nq },
            { dtype: lseType, size: nl },
            { dtype, size: nq },
            { dtype, size: nk },
            { dtype, size: nk },
          ],
          ([qb, kb, vb, ...ctb], [ob, lb, dqb, dkb, dvb]) => {
            const attrs = { causal: true, blockSize: 64 }
            const fwd = { q: qb!, k: kb!, v: vb! },
              fwdShapes = { q: shapes.q, k: shapes.kv, v: shapes.kv }
            const ct = Object.fromEntries(cts.map((c, i) => [c, ctb[i]!]))
            routines.attention!({
              inputs: fwd,
              outputs: { o: ob!, lse: lb! },
              attrs,
              shapes: { inputs: fwdShapes, outputs: { o: shapes.q, lse: shapes.lse } },
            })
            const gradShapes = { dQ: shapes.q, dK: shapes.kv, dV: shapes.kv }
            routines["attention.vjp"]!({
              inputs: { ...fwd, o: ob!, lse: lb!, ...ct },
              outputs: { dQ: dqb!, dK: dkb!, dV: dvb! },
              attrs,
              shapes: { inputs: { ...fwdShapes, o: shapes.q, lse: shapes.lse, ...ctShapes }, outputs: gradShapes },
            })
          },
        )
        const what = `attention.vjp ${dtype} with ${cts.join(" and ")}`
        expectClose(`${what}: o`, got[0]!, want.out, dtype === "bfloat16" ? 1.5e-2 : 2e-5)
        expectClose(`${what}: lse`, got[1]!, want.lse, 1e-5) // fp32 for bfloat16 too: not rounded to bf16's 8e-3
        expectClose(`${what}: dq`, got[2]!, want.dq, tol)
        expectClose(`${what}: dk`, got[3]!, want.dk, tol)
        if (cts.includes("dO")) expectClose(`${what}: dv`, got[4]!, want.dv, tol)
        else expectSame(`${what}: dv`, got[4]!, new Float32Array(nk)) // no dO: v has no gradient
      }
    }
  })
})
