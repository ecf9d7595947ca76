#!/usr/bin/env node
// Builds the CUDA backend's addon, build/Release/miniseq_cuda.node: when asked (`npm run
// build:cuda`), when `miniseq train --backend cuda` first needs it, and in CI wherever nvcc
// exists. A machine without nvcc, or a build that fails, prints one line saying why the CUDA
// backend is unavailable, records it in build/miniseq_cuda.json (the backend's
// BackendUnavailable reason quotes it), and exits 0 (1 with --strict).
//
// As the package's `install` script (--on-install) it compiles nothing unless
// MINISEQ_BUILD_CUDA=1: a plain `npm install` takes seconds, not minutes of nvcc. (The explicit
// install script also keeps npm from running `node-gyp rebuild` for binding.gyp by default.)
//
//   node native/build.mjs             node-gyp (binding.gyp), Node headers as npm/node-gyp find them
//   node native/build.mjs --direct    nvcc + g++ by hand, headers from --nodedir=DIR or $NODE_INCLUDE
//                                     (the GPU machine, which has no npm/node-gyp)
//   --strict                          exit 1 when the addon is not built (device scripts, CI checks)
//   --on-install                      npm's install step: build only with MINISEQ_BUILD_CUDA=1
//
// Environment: NVCC (the compiler to use), CUDA_HOME / CUDA_PATH (where nvcc lives),
// MINISEQ_SKIP_CUDA=1 (don't build), MINISEQ_BUILD_CUDA=1 (build at install).
import { spawn, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, realpathSync, rmSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { cpus } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..")
const buildDir = join(root, "build")
const addon = join(buildDir, "Release", "miniseq_cuda.node")
const statusFile = join(buildDir, "miniseq_cuda.json")
const logFile = join(buildDir, "miniseq_cuda-build.log")
const args = process.argv.slice(2)
const strict = args.includes("--strict")
const nodedirArg = args.find((a) => a.startsWith("--nodedir="))?.slice("--nodedir=".length)
const started = Date.now()
// Kept in memory and written at the end: `node-gyp rebuild` starts by deleting build/.
const log = []

// Keep these in step with binding.gyp (GENCODE, KERNELS).
const GENCODE = "arch=compute_90,code=[sm_90,compute_90]"
// wgmma / setmaxnreg kernels: sm_90a machine code only (chosen at run time on a 9.0 device).
const GENCODE_HOPPER = "arch=compute_90a,code=sm_90a"
const HOPPER = ["attention_hopper", "attention_hopper_backward", "attention_hopper_backward_fused"]
const FUSED = [
  "softmax",
  "activation",
  "optimizer",
  "norm",
  "rope",
  "attention",
  "attention_backward",
  "attention_mma",
  "attention_mma_backward",
]
const KERNELS = ["binary", "cast", "copy", "fill", "index", "reduce", "unary", ...FUSED]
const SOURCES = ["addon", "device", "cublas"]

function finish(built, reason, extra = {}) {
  mkdirSync(buildDir, { recursive: true })
  // What build/ holds must agree with the line printed: no addon, or log, left from an earlier build.
  if (!built) rmSync(addon, { force: true })
  if (log.length > 0) writeFileSync(logFile, log.join(""))
  else rmSync(logFile, { force: true })
  const seconds = Math.round((Date.now() - started) / 100) / 10
  writeFileSync(
    statusFile,
    JSON.stringify({ built, reason, seconds, log: existsSync(logFile) ? logFile : undefined, ...extra }, null, 2) +
      "\n",
  )
  if (built)
    console.log(
      `miniseq: CUDA backend built (${addon.slice(root.length + 1)}, sm_90 + compute_90 PTX, sm_90a for the Hopper attention) in ${seconds} s`,
    )
  else console.log(`miniseq: CUDA backend unavailable: ${reason}`)
  process.exit(built || !strict ? 0 : 1)
}

function findNvcc() {
  if (process.env.NVCC) return existsSync(process.env.NVCC) ? process.env.NVCC : undefined
  const candidates = []
  for (const env of ["CUDA_HOME", "CUDA_PATH"])
    if (process.env[env]) candidates.push(join(process.env[env], "bin", "nvcc"))
  const which = spawnSync("sh", ["-c", "command -v nvcc"], { encoding: "utf8" })
  if (which.status === 0 && which.stdout.trim()) candidates.push(which.stdout.trim())
  candidates.push("/usr/local/cuda/bin/nvcc")
  return candidates.find((c) => existsSync(c))
}

/** The toolkit folder: above nvcc's own folder, or, when nvcc is a wrapper script, where nvcc says it is. */
function cudaHomeOf(nvcc) {
  const above = dirname(dirname(realpathSync(nvcc)))
  if (existsSync(join(above, "include", "cuda_runtime_api.h"))) return above
  const dry = spawnSync(nvcc, ["--dryrun", "-c", "x.cu", "-o", "x.o"], { encoding: "utf8" })
  const top = /^#\$ TOP=(.*)$/m.exec(`${dry.stdout}${dry.stderr}`)?.[1]?.trim()
  return top ? realpathSync(top) : above
}

function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(
      dirname(process.execPath),
      "..",
      "lib",
      "node_modules",
      "npm",
      "node_modules",
      "node-gyp",
      "bin",
      "node-gyp.js",
    ),
    "/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js",
    "/usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js",
  ]
  return candidates.find((c) => c && existsSync(c))
}

/** Runs a command, appending its output to the log; resolves with its exit code. */
function run(cmd, argv, env = process.env) {
  return new Promise((done) => {
    const child = spawn(cmd, argv, { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] })
    const chunks = []
    child.stdout.on("data", (d) => chunks.push(d))
    child.stderr.on("data", (d) => chunks.push(d))
    child.on("error", (e) => {
      chunks.push(Buffer.from(String(e)))
      done({ code: 127, out: Buffer.concat(chunks).toString() })
    })
    child.on("close", (code) => {
      const out = Buffer.concat(chunks).toString()
      log.push(`$ ${cmd} ${argv.join(" ")}\n${out}\n`)
      done({ code: code ?? 1, out })
    })
  })
}

/** The first line of a failed build's output worth showing. */
const firstError = (out) => {
  const lines = out.split("\n").map((l) => l.trim())
  const line =
    lines.find((l) => /error:|fatal|not found|No such file/i.test(l)) ??
    lines.find((l) => /ERR!/.test(l)) ??
    lines.filter(Boolean).pop()
  return (line ?? "?").slice(0, 240)
}

async function viaNodeGyp(cudaHome) {
  const nodeGyp = findNodeGyp()
  if (nodeGyp === undefined)
    return {
      ok: false,
      reason: "node-gyp not found (it ships with npm); try: node native/build.mjs --direct --nodedir=DIR",
    }
  const env = { ...process.env, MINISEQ_CUDA_HOME: cudaHome }
  // Node's own headers, never a download: --nodedir, npm's nodedir setting, or the headers
  // installed beside this node binary (where Debian's and the official builds put them).
  const local = dirname(dirname(process.execPath))
  const nodedir =
    nodedirArg ??
    process.env.npm_config_nodedir ??
    (existsSync(join(local, "include", "node", "common.gypi")) ? local : undefined)
  const extra = nodedir ? [`--nodedir=${nodedir}`] : []
  const r = await run(process.execPath, [nodeGyp, "rebuild", "--jobs", "max", ...extra], env)
  return r.code === 0
    ? { ok: true }
    : { ok: false, reason: `node-gyp build failed: ${firstError(r.out)} (full log: ${logFile})` }
}

/** Without node-gyp: compile each .cu and .cc file, then link, all by hand. */
async function direct(cudaHome, nvcc) {
  const nodeInclude = nodedirArg ? join(nodedirArg, "include", "node") : process.env.NODE_INCLUDE
  if (!nodeInclude || !existsSync(join(nodeInclude, "node_api.h")))
    return {
      ok: false,
      reason: `Node's headers not found (node_api.h): pass --nodedir=DIR or set NODE_INCLUDE (got ${nodeInclude ?? "neither"})`,
    }
  const require = createRequire(import.meta.url)
  const napiInclude = resolve(root, require("node-addon-api").include_dir)
  const obj = join(buildDir, "direct")
  mkdirSync(obj, { recursive: true })
  mkdirSync(dirname(addon), { recursive: true })
  const cxx = process.env.CXX ?? "g++"
  const jobs = [
    ...[...KERNELS, ...HOPPER].map((k) => [
      nvcc,
      [
        "-c",
        "-O3",
        "-std=c++17",
        "-Xcompiler",
        "-fPIC",
        "-gencode",
        HOPPER.includes(k) ? GENCODE_HOPPER : GENCODE,
        `native/kernels/${k}.cu`,
        "-o",
        join(obj, `${k}.o`),
      ],
    ]),
    ...SOURCES.map((s) => [
      cxx,
      [
        "-c",
        "-O2",
        "-std=c++17",
        "-ffp-contract=off",
        "-fno-math-errno",
        "-fPIC",
        "-fexceptions",
        "-DNAPI_VERSION=8",
        "-DNAPI_CPP_EXCEPTIONS",
        `-I${nodeInclude}`,
        `-I${napiInclude}`,
        `-I${join(cudaHome, "include")}`,
        `native/src/${s}.cc`,
        "-o",
        join(obj, `${s}.o`),
      ],
    ]),
  ]
  // Everything compiles in parallel, a core each.
  const width = Math.max(1, cpus().length)
  const results = []
  for (let i = 0; i < jobs.length; i += width)
    results.push(...(await Promise.all(jobs.slice(i, i + width).map(([c, a]) => run(c, a)))))
  const bad = results.find((r) => r.code !== 0)
  if (bad) return { ok: false, reason: `compile failed: ${firstError(bad.out)} (full log: ${logFile})` }
  const link = await run(cxx, [
    "-shared",
    "-o",
    addon,
    ...[...KERNELS, ...HOPPER].map((k) => join(obj, `${k}.o`)),
    ...SOURCES.map((s) => join(obj, `${s}.o`)),
    `-L${join(cudaHome, "lib64")}`,
    `-L${join(cudaHome, "targets", "x86_64-linux", "lib")}`,
    "-lcudart_static",
    "-ldl",
    "-lrt",
    "-lpthread",
  ])
  return link.code === 0
    ? { ok: true }
    : { ok: false, reason: `link failed: ${firstError(link.out)} (full log: ${logFile})` }
}

async function main() {
  if (args.includes("--on-install") && process.env.MINISEQ_BUILD_CUDA !== "1") {
    if (!existsSync(addon))
      console.log(
        "miniseq: CUDA backend not built at install: `miniseq train --backend cuda` builds it on first use (or now: `npm run build:cuda` in the miniseq folder)",
      )
    process.exit(0)
  }
  if (process.env.MINISEQ_SKIP_CUDA === "1") finish(false, "skipped (MINISEQ_SKIP_CUDA=1 at install time)")
  const nvcc = findNvcc()
  if (nvcc === undefined)
    finish(
      false,
      "nvcc not found (looked at $NVCC, $CUDA_HOME/bin, $CUDA_PATH/bin, PATH, /usr/local/cuda/bin); install the CUDA toolkit and run `npm run build:cuda`",
    )
  const cudaHome = cudaHomeOf(nvcc)
  const staticRt = [
    join(cudaHome, "lib64", "libcudart_static.a"),
    join(cudaHome, "targets", "x86_64-linux", "lib", "libcudart_static.a"),
  ]
  if (!staticRt.some((p) => existsSync(p)))
    finish(false, `libcudart_static.a not found under ${cudaHome} (nvcc is ${nvcc})`)
  rmSync(addon, { force: true })
  rmSync(logFile, { force: true })
  const mode = args.includes("--direct") ? "direct" : "node-gyp"
  const r = mode === "direct" ? await direct(cudaHome, nvcc) : await viaNodeGyp(cudaHome)
  if (r.ok && existsSync(addon)) finish(true, "", { mode, nvcc })
  rmSync(addon, { force: true })
  finish(false, r.ok ? `the build reported success but ${addon} is missing` : r.reason, { mode, nvcc })
}

main().catch((e) => finish(false, `build script failed: ${String(e?.message ?? e)}`))
