import { describe, it } from "vitest"
import { accumulatorDType, type DType } from "../src/core/dtype.js"
import { cuda, noGpu } from "./backends/cuda-device.js"

// ---------------------------------------------------------------------------------------------
// Opt-in timings (MINISEQ_CUDA_PERF=1): a smoke check that the big paths run at GPU speed, not a
// benchmark.
// ---------------------------------------------------------------------------------------------

describe.skipIf(noGpu || process.env.MINISEQ_CUDA_PERF !== "1")("cuda timings", () => {
  async function time(label: string, reps: number, work: number, unit: string, f: () => void): Promise<void> {
    f()
    await cuda!.synchronize()
    const t0 = performance.now()
    for (let i = 0; i < reps; i++) f()
    await cuda!.synchronize()
    const s = (performance.now() - t0) / 1000 / reps
    console.log(`cuda timing: ${label}: ${(s * 1e3).toFixed(3)} ms, ${(work / s / 1e12).toFixed(2)} ${unit}`)
  }

  it("matmul, copy, reduce, elementwise and launch overhead", async () => {
    const n = 8192
    const a = cuda!.alloc("bfloat16", n * n),
      b = cuda!.alloc("bfloat16", n * n),
      c = cuda!.alloc("float32", n * n)
    cuda!.fill(a, 0.01)
    cuda!.fill(b, 0.02)
    const spec = { batch: 1, m: n, n, k: n, transA: false, transB: true }
    await time(`bf16 matmul ${n}³ → fp32`, 10, 2 * n ** 3, "TFLOP/s", () => cuda!.matmul(a, b, c, spec))
    const c16 = cuda!.alloc("bfloat16", n * n)
    await time(`bf16 matmul ${n}³ → bf16`, 10, 2 * n ** 3, "TFLOP/s", () => cuda!.matmul(a, b, c16, spec))
    const f1 = cuda!.alloc("float32", 4096 * 4096),
      f2 = cuda!.alloc("float32", 4096 * 4096),
      f3 = cuda!.alloc("float32", 4096 * 4096)
    cuda!.fill(f1, 1)
    cuda!.fill(f2, 2)
    await time("fp32 matmul 4096³ (exact)", 5, 2 * 4096 ** 3, "TFLOP/s", () =>
      cuda!.matmul(f1, f2, f3, { batch: 1, m: 4096, n: 4096, k: 4096, transA: false, transB: false }),
    )
    const big = 1 << 28 // 1 GiB of float32
    const x = cuda!.alloc("float32", big),
      y = cuda!.alloc("float32", big)
    cuda!.fill(x, 1.5)
    await time("contiguous copy 1 GiB", 5, 2 * 4 * big, "TB/s", () =>
      cuda!.copy(x, { shape: [big], strides: [1], offset: 0 }, y, { shape: [big], strides: [1], offset: 0 }),
    )
    await time("transpose copy 16384² fp32", 5, 2 * 4 * big, "TB/s", () =>
      cuda!.copy(x, { shape: [16384, 16384], strides: [1, 16384], offset: 0 }, y, {
        shape: [16384, 16384],
        strides: [16384, 1],
        offset: 0,
      }),
    )
    await time("binary add 1 GiB fp32", 5, 3 * 4 * big, "TB/s", () => cuda!.binary("add", x, x, y))
    await time("unary exp 1 GiB fp32", 5, 2 * 4 * big, "TB/s", () => cuda!.unary("exp", x, y))
    const rows = cuda!.alloc("float32", 2048)
    await time("row sum [2048, 131072] fp32", 5, 4 * big, "TB/s", () => cuda!.reduce("sum", x, rows, 2048, 131072, 1))
    const cols = cuda!.alloc("float32", 4096)
    await time("column sum [1, 65536, 4096] fp32", 5, 4 * big, "TB/s", () =>
      cuda!.reduce("sum", x, cols, 1, 65536, 4096),
    )
    const s1 = cuda!.alloc("float32", 1)
    // work 1e6 per call and "T" in the unit: the number printed is millions of calls per second.
    await time("fill of 1 element (launch overhead)", 20000, 1e6, "M calls/s", () => cuda!.fill(s1, 0))
    for (const buf of [a, b, c, c16, f1, f2, f3, x, y, rows, cols, s1]) cuda!.free(buf)
    console.log(
      `cuda memory after the timings: ${JSON.stringify({ ...cuda!.memory(), resetPeak: undefined, emptyCache: undefined })}`,
    )
    cuda!.memory().emptyCache()
  })

  it("fused routines: cross-entropy over a 32k vocabulary, causal attention (tensor cores for bf16, SIMT otherwise)", async () => {
    const routines = cuda!.routines!
    const [N, V] = [8192, 32000]
    const logits = cuda!.alloc("bfloat16", N * V),
      targets = cuda!.alloc("int32", N),
      nll = cuda!.alloc("bfloat16", N)
    const dnll = cuda!.alloc("bfloat16", N),
      dlogits = cuda!.alloc("bfloat16", N * V)
    cuda!.fill(logits, 0.01)
    cuda!.fill(targets, 7)
    cuda!.fill(dnll, 1)
    const ce = { inputs: { logits, targets }, shapes: { logits: [N, V], targets: [N] }, attrs: { ignoreIndex: -100 } }
    await time(`crossEntropy bf16 ${N}×${V}`, 10, 2 * N * V, "TB/s", () =>
      routines.crossEntropy!({
        inputs: ce.inputs,
        outputs: { nll },
        shapes: { inputs: ce.shapes, outputs: { nll: [N] } },
        attrs: ce.attrs,
      }),
    )
    const backward = `crossEntropy.vjp bf16 ${N}×${V} (reads twice, writes once)`
    await time(backward, 10, 3 * 2 * N * V, "TB/s", () =>
      routines["crossEntropy.vjp"]!({
        inputs: { ...ce.inputs, nll, dNll: dnll },
        outputs: { dLogits: dlogits },
        attrs: ce.attrs,
        shapes: { inputs: { ...ce.shapes, nll: [N], dNll: [N] }, outputs: { dLogits: [N, V] } },
      }),
    )
    for (const b of [logits, targets, nll, dnll, dlogits]) cuda!.free(b)

    // bfloat16 at D = 64 (Llama-3.2-1B's heads: H = 32, Hkv = 8) and 128 runs on tensor cores,
    // bfloat16 at D = 256 and float32 on the SIMT kernels.
    const attnShapes: [DType, number, number][] = [
      // dtype, S, D
      ["bfloat16", 8192, 64],
      ["bfloat16", 8192, 128],
      ["bfloat16", 4096, 64],
      ["bfloat16", 4096, 128],
      ["bfloat16", 2048, 256],
      ["float32", 4096, 64],
      ["float32", 4096, 128],
      ["float32", 2048, 256],
    ]
    for (const [dtype, S, D] of attnShapes) {
      const [B, H, Hkv] = [1, 32, 8]
      const reps = dtype === "bfloat16" && D <= 128 ? 10 : 3
      const q = cuda!.alloc(dtype, B * H * S * D),
        k = cuda!.alloc(dtype, B * Hkv * S * D),
        v = cuda!.alloc(dtype, B * Hkv * S * D)
      const out = cuda!.alloc(dtype, B * H * S * D),
        lse = cuda!.alloc(accumulatorDType(dtype), B * H * S)
      const dq = cuda!.alloc(dtype, B * H * S * D),
        dk = cuda!.alloc(dtype, B * Hkv * S * D),
        dv = cuda!.alloc(dtype, B * Hkv * S * D)
      for (const [x, val] of [
        [q, 0.01],
        [k, 0.02],
        [v, 0.03],
      ] as const)
        cuda!.fill(x, val)
      const qs = [B, H, S, D],
        ks = [B, Hkv, S, D],
        ls = [B, H, S, 1]
      // Causal: half of the S×S scores. Forward 2 matmuls, backward counted as 5 (it does 7: S and dP twice).
      const fwdFlops = (2 * 2 * B * H * S * S * D) / 2
      const attrs = { causal: true, blockSize: 64 },
        inShapes = { q: qs, k: ks, v: ks }
      await time(`attention ${dtype} B=${B} H=${H} Hkv=${Hkv} S=${S} D=${D} forward`, reps, fwdFlops, "TFLOP/s", () =>
        routines.attention!({
          inputs: { q, k, v },
          outputs: { o: out, lse },
          attrs,
          shapes: { inputs: inShapes, outputs: { o: qs, lse: ls } },
        }),
      )
      await time(
        `attention ${dtype} B=${B} H=${H} Hkv=${Hkv} S=${S} D=${D} backward`,
        reps,
        2.5 * fwdFlops,
        "TFLOP/s",
        () =>
          routines["attention.vjp"]!({
            inputs: { q, k, v, o: out, lse, dO: out },
            outputs: { dQ: dq, dK: dk, dV: dv },
            attrs,
            shapes: { inputs: { ...inShapes, o: qs, lse: ls, dO: qs }, outputs: { dQ: qs, dK: ks, dV: ks } },
          }),
      )
      for (const b of [q, k, v, out, lse, dq, dk, dv]) cuda!.free(b)
    }
    cuda!.memory().emptyCache()
  })
})
