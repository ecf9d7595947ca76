/**
 * WebGPU matmul throughput:
 *   npx tsx bench/webgpu-matmul.ts [--sizes 256,512,1024] [--tiles 64x64x16/8x8,128x128x8/16x16] [--out file.json]
 * Square m = n = k (batch 1, each transpose of b) and a batched attention-shaped product, random
 * float32 operands. Each timing records `reps` matmuls, submits them and waits for the device,
 * so launch overhead is amortised as in a real step. Median of several timings after warm-up.
 * Prints a table and writes bench/results/matmul-webgpu.json with the adapter's description.
 * Sizes stop growing once one matmul takes more than ~2 s (a software rasteriser).
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { makeWebGpuBackend, type MatmulTile, tileName } from "../src/backends/webgpu/index.js"
import type { MatmulSpec } from "../src/core/backend.js"

interface Row {
  tile: string
  shape: string
  batch: number
  m: number
  n: number
  k: number
  transB: boolean
  reps: number
  ms: number
  gflops: number
}

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}
const sizes = (arg("sizes") ?? "128,256,512,1024,2048,4096").split(",").map(Number)
const outFile = arg("out") ?? new URL("./results/matmul-webgpu.json", import.meta.url).pathname

/** "BMxBNxBK/TXxTY", e.g. 128x128x8/16x16 (default: the backend's choice for the device). */
const parseTile = (s: string): MatmulTile => {
  const [bm, bn, bk, tx, ty] = s.split(/[x/]/).map(Number)
  return { bm: bm!, bn: bn!, bk: bk!, tx: tx!, ty: ty! }
}
const tiles = arg("tiles")?.split(",").map(parseTile) ?? [undefined]

let backend = await makeWebGpuBackend()
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

async function measure(spec: MatmulSpec): Promise<Row> {
  const { batch, m, n, k } = spec
  const random = (len: number) => Float32Array.from({ length: len }, () => Math.random() * 2 - 1)
  const a = backend.alloc("float32", batch * m * k),
    b = backend.alloc("float32", batch * k * n),
    out = backend.alloc("float32", batch * m * n)
  backend.write(a, random(batch * m * k))
  backend.write(b, random(batch * k * n))
  const time = async (reps: number) => {
    await backend.sync()
    const t = performance.now()
    for (let r = 0; r < reps; r++) backend.matmul(a, b, out, spec)
    await backend.sync()
    return (performance.now() - t) / reps
  }
  // Warm-up (pipeline compile, clocks up), then pick reps so one timing lasts ~100 ms.
  const first = await time(1)
  const reps = Math.max(1, Math.min(200, Math.round(100 / Math.max(first, 0.01))))
  await time(reps)
  const times: number[] = []
  const budget = performance.now() + 1500
  while (times.length < 3 || (times.length < 15 && performance.now() < budget)) times.push(await time(reps))
  backend.free(a)
  backend.free(b)
  backend.free(out)
  const ms = median(times)
  const shape = batch > 1 ? `${batch}×${m}×${n}×${k}` : `${m}×${n}×${k}`
  return {
    tile: tileName(backend.matmulTile),
    shape,
    batch,
    m,
    n,
    k,
    transB: spec.transB,
    reps,
    ms,
    gflops: (2 * batch * m * n * k) / (ms * 1e6),
  }
}

const rows: Row[] = []
const print = (r: Row) =>
  console.log(
    `${r.tile.padStart(18)} ${r.shape.padStart(18)} ${String(r.transB).padStart(7)} ${r.ms.toFixed(3).padStart(10)} ${r.gflops.toFixed(1).padStart(9)}`,
  )
console.log(
  `adapter: ${backend.info.description || backend.info.device} (${backend.info.vendor || "?"}, ${backend.info.architecture || "?"}) flags [${backend.info.flags.join(" ")}] ${backend.info.featureLevel}`,
)
console.log(
  `${"tile".padStart(18)} ${"shape".padStart(18)} ${"transB".padStart(7)} ${"ms".padStart(10)} ${"GFLOP/s".padStart(9)}`,
)
for (const tile of tiles) {
  if (tile !== undefined) {
    await backend.destroy()
    backend = await makeWebGpuBackend({ matmulTile: tile })
  }
  let tooSlow = false
  for (const size of sizes) {
    if (tooSlow) break
    for (const transB of [false, true]) {
      const row = await measure({ batch: 1, m: size, n: size, k: size, transA: false, transB })
      rows.push(row)
      print(row)
      if (row.ms > 2000) tooSlow = true
    }
  }
  // Attention-shaped: many heads of S×S scores from S×64 queries and keys (q·kᵀ).
  if (!tooSlow)
    for (const S of [512, 1024]) {
      const row = await measure({ batch: 32, m: S, n: S, k: 64, transA: false, transB: true })
      rows.push(row)
      print(row)
    }
}

// Launch overhead: many tiny kernels (what a training step of small ops is bound by).
const tiny = backend.alloc("float32", 1024)
backend.fill(tiny, 1)
const launches = 2000
await backend.sync()
const t = performance.now()
for (let i = 0; i < launches; i++) backend.unary("neg", tiny, tiny)
await backend.sync()
const launchUs = ((performance.now() - t) / launches) * 1000
backend.free(tiny)
console.log(`dispatch overhead: ${launchUs.toFixed(1)} µs per tiny kernel (${launches} in a row, submitted in batches)`)

mkdirSync(new URL("./results/", import.meta.url), { recursive: true })
writeFileSync(
  outFile,
  JSON.stringify(
    {
      backend: backend.name,
      date: new Date().toISOString(),
      node: process.version,
      adapter: backend.info,
      method: "float32; reps matmuls per submit+wait, median of timings after warm-up; GFLOP/s = 2·batch·m·n·k / time",
      dispatchOverheadUs: launchUs,
      rows,
    },
    null,
    2,
  ) + "\n",
)
console.log(`wrote ${outFile}`)
await backend.destroy()
