/**
 * CPU matmul throughput: npx tsx bench/matmul.ts [--backend cpu|cpu-fast]
 * Square m = n = k, batch 1, random operands; median of several timed runs after warm-up.
 * Prints a table and writes bench/results/matmul-<backend>.json (cpu, the reference, by default).
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { cpus } from "node:os"
import { makeCpuBackend } from "../src/backends/cpu/index.js"
import { makeFastCpuBackend } from "../src/backends/cpu-fast/index.js"
import type { DType } from "../src/core/dtype.js"

interface Row {
  size: number
  dtype: DType
  transB: boolean
  runs: number
  ms: number
  gflops: number
}

const backendArg = process.argv.indexOf("--backend")
const backend = process.argv[backendArg + 1] === "cpu-fast" && backendArg > 0 ? makeFastCpuBackend() : makeCpuBackend()
const sizes = [64, 128, 256, 512, 1024]
const dtypes: DType[] = ["float32", "float64"]
const rows: Row[] = []

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

for (const size of sizes) {
  for (const dtype of dtypes) {
    for (const transB of [false, true]) {
      const len = size * size
      const a = backend.alloc(dtype, len),
        b = backend.alloc(dtype, len),
        out = backend.alloc(dtype, len)
      const fillRandom = (buf: typeof a) => {
        const host = dtype === "float32" ? new Float32Array(len) : new Float64Array(len)
        for (let i = 0; i < len; i++) host[i] = Math.random() * 2 - 1
        backend.write(buf, host)
      }
      fillRandom(a)
      fillRandom(b)
      const spec = { batch: 1, m: size, n: size, k: size, transA: false, transB }
      const run = () => {
        const t = performance.now()
        backend.matmul(a, b, out, spec)
        return performance.now() - t
      }
      // Warm up (JIT tiers up) for at least ~200 ms or 3 runs, then time ≥ 5 runs or ~1 s.
      let warm = 0
      for (let i = 0; i < 3 || warm < 200; i++) warm += run()
      const times: number[] = []
      let total = 0
      while (times.length < 5 || (total < 1000 && times.length < 50)) {
        const t = run()
        times.push(t)
        total += t
      }
      const ms = median(times)
      rows.push({ size, dtype, transB, runs: times.length, ms, gflops: (2 * size ** 3) / (ms * 1e6) })
      backend.free(a)
      backend.free(b)
      backend.free(out)
    }
  }
}

const pad = (s: string | number, w: number) => String(s).padStart(w)
console.log(`${pad("size", 6)} ${pad("dtype", 8)} ${pad("transB", 7)} ${pad("ms", 10)} ${pad("GFLOP/s", 8)}`)
for (const r of rows)
  console.log(
    `${pad(r.size, 6)} ${pad(r.dtype, 8)} ${pad(String(r.transB), 7)} ${pad(r.ms.toFixed(3), 10)} ${pad(r.gflops.toFixed(2), 8)}`,
  )

mkdirSync(new URL("./results/", import.meta.url), { recursive: true })
const file = new URL(`./results/matmul-${backend.name}.json`, import.meta.url)
writeFileSync(
  file,
  JSON.stringify(
    {
      backend: backend.name,
      date: new Date().toISOString(),
      node: process.version,
      cpu: cpus()[0]?.model ?? "unknown",
      method: "square m=n=k, batch 1, transA false; median of timed runs after warm-up",
      rows,
    },
    null,
    2,
  ) + "\n",
)
console.log(`wrote ${file.pathname}`)
