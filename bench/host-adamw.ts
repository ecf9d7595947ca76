/**
 * AdamW on the host's cores (native/host/adamw.h, what `MINISEQ_HOST_ADAMW=1` runs for offloaded
 * optimizer state on CUDA), timed on this machine's CPU: ns per element and GB/s for a bf16
 * parameter, the build the CUDA addon uses (SIMD: AVX2 where the processor has it) against the
 * same loop kept scalar, on one thread and on every core.
 *
 *   npx tsx bench/host-adamw.ts [--elements 50000000] [--reps 5] [--out bench/results/host-adamw]
 *
 * Prints a table and writes <out>.json. Needs a C++ compiler (g++, c++ or clang++).
 */
import { spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { cpus, tmpdir } from "node:os"
import { dirname, join } from "node:path"

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1]! : fallback
}
const elements = Number(arg("elements", "50000000"))
const reps = Number(arg("reps", "5"))
const out = arg("out", "bench/results/host-adamw")

const cxx = ["g++", "c++", "clang++"].find((c) => spawnSync(c, ["--version"], { stdio: "ignore" }).status === 0)
if (cxx === undefined) {
  console.error("host-adamw: no C++ compiler found (looked for g++, c++, clang++)")
  process.exit(1)
}
// The CUDA addon's flags (native/build.mjs); "scalar" keeps the compiler from vectorising the loop.
const flags = ["-O2", "-std=c++17", "-ffp-contract=off", "-fno-math-errno", "-pthread"]
const builds = { simd: [] as string[], scalar: ["-DMINISEQ_HOST_SCALAR", "-DMINISEQ_HOST_NO_AVX2"] }
const dir = mkdtempSync(join(tmpdir(), "miniseq-host-adamw-bench-"))
const bytesPerElement = 10 // bf16: gradient, m, v, weights read; m, v, weights written (2 B each, 5 of 7 counted once)
const rows: { build: string; threads: number; parameters: string; nsPerElement: number; gbPerSecond: number }[] = []
try {
  for (const [build, extra] of Object.entries(builds)) {
    const program = join(dir, build)
    const c = spawnSync(cxx, [...flags, ...extra, "native/host/adamw-bench.cc", "-o", program], { stdio: "inherit" })
    if (c.status !== 0) throw new Error(`host-adamw: ${cxx} failed for the ${build} build`)
    // One large parameter on one thread and on every core; then, on every core, 64 parameters of
    // 1M elements, one call each as a step makes them (where a call's own cost shows).
    const runs: [number, number, number][] = [
      [elements, 1, 1],
      [elements, cpus().length, 1],
      [1_000_000, cpus().length, 64],
    ]
    for (const [n, threads, params] of runs) {
      const r = spawnSync(program, [String(n), String(reps), String(threads), String(params)], { encoding: "utf8" })
      if (r.status !== 0) throw new Error(`host-adamw: the ${build} run on ${threads} threads failed: ${r.stderr}`)
      const ns = Number(r.stdout.trim())
      rows.push({
        build,
        threads,
        parameters: `${params} × ${n.toLocaleString("en-US")}`,
        nsPerElement: ns,
        gbPerSecond: bytesPerElement / ns,
      })
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true })
}
const cpu = cpus()[0]?.model ?? "unknown CPU"
const lines = [
  `AdamW on the host, bf16 state, best of ${reps}, on ${cpus().length} × ${cpu}`,
  "",
  "| build | threads | parameters × elements | ns per element | GB/s (10 B per element) |",
  "|---|---:|---|---:|---:|",
  ...rows.map(
    (r) =>
      `| ${r.build} | ${r.threads} | ${r.parameters} | ${r.nsPerElement.toFixed(3)} | ${r.gbPerSecond.toFixed(1)} |`,
  ),
]
console.log(lines.join("\n"))
mkdirSync(dirname(out), { recursive: true })
writeFileSync(
  `${out}.json`,
  `${JSON.stringify({ cpu, cores: cpus().length, elements, reps, compiler: cxx, flags, rows }, null, 2)}\n`,
)
console.log(`wrote ${out}.json`)
