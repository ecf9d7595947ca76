#!/usr/bin/env node
// Builds the fast CPU backend's native GEMM, native/cpu/build/miniseq_cpu.node (sgemm.cc, vexp.cc, attention.cc,
// cross-entropy.cc, reduce.cc, addon.cc),
// with the C++ compiler alone (no node-gyp: a few files, one command). Run by the package's
// `install` script and by `npm run build:cpu`. The micro-kernel is chosen at run time by cpuid
// (AVX-512, AVX2+FMA), so the file is not tied to the build machine's CPU.
//
// Without a compiler or Node's headers, or when the build fails, it prints one line saying so,
// records it in native/cpu/build/miniseq_cpu.json, and exits 0 (1 with --strict): cpu-fast then
// runs its WebAssembly GEMM.
//
// Environment: CXX (the compiler, default g++, then c++, clang++), NODE_INCLUDE (the folder with
// node_api.h), MINISEQ_SKIP_CPU_NATIVE=1 (don't build).
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { homedir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const here = dirname(fileURLToPath(import.meta.url))
const out = join(here, "build")
const addon = join(out, "miniseq_cpu.node")
const statusFile = join(out, "miniseq_cpu.json")
const strict = process.argv.includes("--strict")
const started = Date.now()

function finish(built, reason, extra = {}) {
  mkdirSync(out, { recursive: true })
  if (!built) rmSync(addon, { force: true })
  const seconds = Math.round((Date.now() - started) / 100) / 10
  writeFileSync(statusFile, `${JSON.stringify({ built, reason, seconds, ...extra }, null, 2)}\n`)
  if (built) console.log(`miniseq: native CPU GEMM built (native/cpu/build/miniseq_cpu.node) in ${seconds} s`)
  else console.log(`miniseq: native CPU GEMM not built (cpu-fast uses its WebAssembly GEMM): ${reason}`)
  process.exit(built || !strict ? 0 : 1)
}

/** The folder holding node_api.h: $NODE_INCLUDE, npm's nodedir, beside this node, or node-gyp's header cache. */
function nodeInclude() {
  const v = process.versions.node
  const candidates = [
    process.env.NODE_INCLUDE,
    process.env.npm_config_nodedir && join(process.env.npm_config_nodedir, "include", "node"),
    join(dirname(dirname(process.execPath)), "include", "node"),
    join(homedir(), ".cache", "node-gyp", v, "include", "node"),
    join(homedir(), "Library", "Caches", "node-gyp", v, "include", "node"),
  ]
  return candidates.find((c) => c && existsSync(join(c, "node_api.h")))
}

function compiler() {
  const names = process.env.CXX ? [process.env.CXX] : ["g++", "c++", "clang++"]
  return names.find((c) => spawnSync(c, ["--version"], { stdio: "ignore" }).status === 0)
}

if (process.env.MINISEQ_SKIP_CPU_NATIVE === "1") finish(false, "skipped (MINISEQ_SKIP_CPU_NATIVE=1)")
if (process.platform === "win32") finish(false, "not built on Windows (the build uses a g++-style command line)")
const cxx = compiler()
if (cxx === undefined) finish(false, "no C++ compiler found (looked for $CXX, g++, c++, clang++)")
const include = nodeInclude()
if (include === undefined)
  finish(false, "Node's headers (node_api.h) not found: set NODE_INCLUDE to the folder that holds them")
mkdirSync(out, { recursive: true })
const tmp = `${addon}.tmp`
const argv = [
  "-O3",
  "-std=c++17",
  "-fPIC",
  "-shared",
  "-fvisibility=hidden",
  `-I${include}`,
  ...(process.platform === "darwin" ? ["-undefined", "dynamic_lookup"] : []),
  join(here, "sgemm.cc"),
  join(here, "vexp.cc"),
  join(here, "attention.cc"),
  join(here, "cross-entropy.cc"),
  join(here, "reduce.cc"),
  join(here, "addon.cc"),
  "-o",
  tmp,
]
const r = spawnSync(cxx, argv, { encoding: "utf8", cwd: resolve(here, "..", "..") })
if (r.status !== 0) {
  rmSync(tmp, { force: true })
  const text = `${r.stderr ?? ""}${r.stdout ?? ""}${r.error ?? ""}`
  const line = text.split("\n").find((l) => /error/i.test(l)) ?? text.trim().split("\n").pop() ?? "?"
  finish(false, `${cxx} failed: ${line.trim().slice(0, 240)}`, { command: [cxx, ...argv].join(" ") })
}
// Renamed into place only once complete: a process that loads it never sees half a file.
renameSync(tmp, addon)
finish(true, "", { compiler: cxx, command: [cxx, ...argv].join(" ") })
