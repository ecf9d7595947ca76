/**
 * CPU matmul throughput: npx tsx bench/matmul.ts [--backend cpu|cpu-fast] [--threads 1|2]
 * Square m = n = k, batch 1, random operands; median of several timed runs after warm-up.
 * --threads (cpu-fast only): 2 (its default in Node: the helper thread takes half of each large
 * product) or 1. Prints a table and writes docs/results/matmul-<backend>[-1t].json (cpu, the
 * reference, by default), with the load average before and after.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { cpus, loadavg } from "node:os"
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

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1] : undefined
}
const fast = arg("backend") === "cpu-fast"
const oneThread = arg("threads") === "1"
const fastBackend = fast ? makeFastCpuBackend({ helper: oneThread ? "none" : "auto" }) : undefined
const backend = fastBackend ?? makeCpuBackend()
// The helper thread starts asynchronously: time only once it runs.
for (let i = 0; i < 100 && fastBackend !== undefined && !oneThread && fastBackend.threads() < 2; i++)
  await new Promise((r) => setTimeout(r, 20))
const threads = fastBackend?.threads() ?? 1
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")
const loadBefore = load()
console.log(`${backend.name}, ${threads} thread(s), load average ${loadBefore}`)
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

mkdirSync(new URL("../docs/results/", import.meta.url), { recursive: true })
const name = fast && oneThread ? `${backend.name}-1t` : backend.name
const file = new URL(`../docs/results/matmul-${name}.json`, import.meta.url)
writeFileSync(
  file,
  JSON.stringify(
    {
      backend: backend.name,
      date: new Date().toISOString(),
      node: process.version,
      cpu: cpus()[0]?.model ?? "unknown",
      cores: cpus().length,
      threads,
      loadAverage: { before: loadBefore, after: load() },
      method: "square m=n=k, batch 1, transA false; median of timed runs after warm-up",
      rows,
    },
    null,
    2,
  ) + "\n",
)
console.log(`wrote ${file.pathname}`)
