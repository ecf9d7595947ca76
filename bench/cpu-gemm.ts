/**
 * The GEMM at the shapes of issue 16's tiny config step (2048 tokens; d 128, I 384, 2 KV heads of
 * 32, vocab 256: forward x·Wᵀ, backward dY·W and dYᵀ·x), one thread: cpu-fast's native GEMM,
 * its WebAssembly GEMM, and torch.matmul with one thread (OpenBLAS here) when python3 has torch.
 *   npx tsx bench/cpu-gemm.ts
 * GFLOP/s of the median of timed runs (≥ 10 runs and ≥ 0.3 s) after warm-up; prints the load average.
 */
import { execFileSync } from "node:child_process"
import { loadavg } from "node:os"
import { makeFastCpuBackend } from "../src/backends/cpu-fast/index.js"
import type { BackendImpl } from "../src/core/backend.js"

// m, n, k, transA, transB
const shapes: Array<[number, number, number, boolean, boolean]> = [
  [2048, 128, 128, false, true], // q, o projections
  [2048, 64, 128, false, true], // k, v
  [2048, 384, 128, false, true], // gate, up
  [2048, 128, 384, false, true], // down
  [2048, 256, 128, false, true], // logits
  [2048, 128, 384, false, false], // dX of gate/up
  [2048, 384, 128, false, false], // dX of down
  [384, 128, 2048, true, false], // dW of gate/up
  [128, 384, 2048, true, false], // dW of down
  [128, 128, 2048, true, false], // dW of q, o
  [1024, 1024, 1024, false, false],
]
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")
console.log(`load average ${load()}`)

function time(run: () => void): number {
  for (let i = 0; i < 5; i++) run()
  const ts: number[] = []
  let total = 0
  while (ts.length < 10 || total < 300) {
    const t = performance.now()
    run()
    const dt = performance.now() - t
    ts.push(dt)
    total += dt
  }
  return ts.sort((a, b) => a - b)[ts.length >> 1]!
}

function gflops(be: BackendImpl): number[] {
  return shapes.map(([m, n, k, transA, transB]) => {
    const [a, b, c] = [m * k, k * n, m * n].map((len) => be.alloc("float32", len))
    be.write(
      a!,
      Float32Array.from({ length: m * k }, () => Math.random() - 0.5),
    )
    be.write(
      b!,
      Float32Array.from({ length: k * n }, () => Math.random() - 0.5),
    )
    const ms = time(() => be.matmul(a!, b!, c!, { batch: 1, m, n, k, transA, transB }))
    return (2 * m * n * k) / ms / 1e6
  })
}

const nativeBe = makeFastCpuBackend({ helper: "none" })
const wasmBe = makeFastCpuBackend({ helper: "none", native: false })
const native = nativeBe.gemmKernel.startsWith("native") ? gflops(nativeBe) : undefined
const wasm = gflops(wasmBe)
let torch: number[] | undefined
const script = `
import json, sys, time, torch
torch.set_num_threads(1)
out = []
for m, n, k, tA, tB in json.loads(sys.argv[1]):
    A = torch.rand(k, m).t() if tA else torch.rand(m, k)
    B = torch.rand(n, k).t() if tB else torch.rand(k, n)
    C = torch.empty(m, n)
    for _ in range(5): torch.matmul(A, B, out=C)
    ts, tot = [], 0.0
    while len(ts) < 10 or tot < 0.3:
        t0 = time.perf_counter(); torch.matmul(A, B, out=C); t = time.perf_counter() - t0; ts.append(t); tot += t
    ts.sort(); out.append(2 * m * n * k / ts[len(ts) // 2] / 1e9)
print(json.dumps({"torch": torch.__version__, "gflops": out}))
`
for (const python of [process.env.PYTHON, "python3", "/usr/bin/python3"])
  if (python !== undefined && torch === undefined)
    try {
      const r = JSON.parse(
        execFileSync(python, ["-c", script, JSON.stringify(shapes)], {
          encoding: "utf8",
          stdio: ["ignore", "pipe", "ignore"],
        }),
      )
      torch = r.gflops
      console.log(`torch ${r.torch}, 1 thread`)
    } catch {}
console.log(`cpu-fast GEMM: ${nativeBe.gemmKernel}; GFLOP/s, one thread`)
console.log(`${"m × n × k".padEnd(22)} ${"native".padStart(7)} ${"wasm".padStart(7)} ${"torch".padStart(7)}`)
for (const [i, [m, n, k, tA, tB]] of shapes.entries())
  console.log(
    `${`${m}×${n}×${k}${tA ? " Aᵀ" : ""}${tB ? " Bᵀ" : ""}`.padEnd(22)} ${(native?.[i]?.toFixed(1) ?? "-").padStart(7)} ${wasm[i]!.toFixed(1).padStart(7)} ${(torch?.[i]?.toFixed(1) ?? "-").padStart(7)}`,
  )
console.log(`load average after ${load()}`)
