// The package as a user gets it: `npm pack`, then install the tarball into a new project and use
// it from plain Node (no TypeScript loader) and from TypeScript with strict flags.
//
// Offline on purpose: the project's lockfile is made from this repository's package-lock.json
// (the entries that miniseq's dependencies and peer dependency pull in), so `npm ci --offline`
// installs from the npm cache that `npm ci`/`npm install` here just filled, as in CI.
import { execFile } from "node:child_process"
import { existsSync } from "node:fs"
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

const exec = promisify(execFile)
const repo = resolve(import.meta.dirname, "..")
const pkg = JSON.parse(await readFile(join(repo, "package.json"), "utf8")) as {
  name: string
  version: string
  dependencies: Record<string, string>
  peerDependencies: Record<string, string>
  peerDependenciesMeta: Record<string, { optional?: boolean }>
}
const requiredPeers = Object.keys(pkg.peerDependencies).filter((n) => pkg.peerDependenciesMeta[n]?.optional !== true)
const effectVersion = (
  JSON.parse(await readFile(join(repo, "node_modules", "effect", "package.json"), "utf8")) as { version: string }
).version

let dir = ""
let project = ""
let packed: string[] = []
let installSeconds = 0

interface LockEntry {
  version: string
  resolved?: string
  integrity?: string
  dependencies?: Record<string, string>
  peerDependencies?: Record<string, string>
  peerDependenciesMeta?: Record<string, { optional?: boolean }>
  [k: string]: unknown
}

/** The lock entries (hoisted, as in this repository) that `names` need, transitively. */
function closure(lock: Record<string, LockEntry>, names: string[]): Record<string, LockEntry> {
  const out: Record<string, LockEntry> = {}
  const queue = [...names]
  while (queue.length > 0) {
    const name = queue.pop()!
    const key = `node_modules/${name}`
    if (out[key] !== undefined) continue
    const entry = lock[key]
    if (entry === undefined) throw new Error(`package-lock.json has no hoisted ${key}`)
    const { dev: _d, devOptional: _o, peer: _p, ...kept } = entry
    out[key] = kept as LockEntry
    const optionalPeers = new Set(
      Object.entries(entry.peerDependenciesMeta ?? {})
        .filter(([, m]) => m.optional)
        .map(([n]) => n),
    )
    queue.push(
      ...Object.keys(entry.dependencies ?? {}),
      ...Object.keys(entry.peerDependencies ?? {}).filter((n) => !optionalPeers.has(n)),
    )
  }
  return out
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "miniseq-pack-"))
  // `npm pack` runs `prepare` (the build), as publishing does.
  const { stdout } = await exec("npm", ["pack", "--json", "--pack-destination", dir], { cwd: repo, maxBuffer: 1 << 24 })
  const info = JSON.parse(stdout.slice(stdout.indexOf("["))) as Array<{
    filename: string
    integrity: string
    files: Array<{ path: string }>
  }>
  const tarball = info[0]!
  packed = tarball.files.map((f) => f.path)

  project = join(dir, "consumer")
  await mkdir(project)
  const dependencies = { miniseq: `file:../${tarball.filename}`, effect: effectVersion }
  await writeFile(
    join(project, "package.json"),
    JSON.stringify({ name: "consumer", version: "1.0.0", type: "module", private: true, dependencies }, null, 2),
  )
  const repoLock = JSON.parse(await readFile(join(repo, "package-lock.json"), "utf8")) as {
    packages: Record<string, LockEntry>
  }
  const needed = closure(repoLock.packages, [...Object.keys(pkg.dependencies), ...requiredPeers])
  const lock = {
    name: "consumer",
    version: "1.0.0",
    lockfileVersion: 3,
    requires: true,
    packages: {
      "": { name: "consumer", version: "1.0.0", dependencies },
      "node_modules/miniseq": {
        version: pkg.version,
        resolved: `file:../${tarball.filename}`,
        integrity: tarball.integrity,
        license: "MIT",
        hasInstallScript: true,
        dependencies: pkg.dependencies,
        peerDependencies: pkg.peerDependencies,
        peerDependenciesMeta: pkg.peerDependenciesMeta,
        bin: { miniseq: "bin/miniseq.js" },
        engines: { node: ">=20" },
      },
      ...needed,
    },
  }
  await writeFile(join(project, "package-lock.json"), JSON.stringify(lock, null, 2))
  const started = performance.now()
  await exec("npm", ["ci", "--offline", "--engine-strict", "--no-audit", "--no-fund"], {
    cwd: project,
    maxBuffer: 1 << 24,
  })
  installSeconds = (performance.now() - started) / 1000
  console.log(`package: npm ci of the tarball (${packed.length} files) took ${installSeconds.toFixed(1)} s`)
}, 120_000)

afterAll(async () => {
  if (dir !== "") await rm(dir, { recursive: true, force: true })
})

describe("the packed package", () => {
  it("ships compiled JavaScript, declarations, the CLI, the corpus and the CUDA sources — no TypeScript sources, tests or docs", () => {
    for (const f of [
      "package.json",
      "README.md",
      "LICENSE",
      "CHANGELOG.md",
      "bin/miniseq.js",
      "dist/index.js",
      "dist/index.d.ts",
      "dist/browser.js",
      "dist/backends/webgpu/index.js",
      "dist/backends/webgpu/browser.js",
      "dist/backends/cuda/index.js",
      "data/corpus.txt",
      "native/build.mjs",
      "native/host/adamw.h",
      "native/host/bf16.h",
      "native/host/pool.h",
      "binding.gyp",
    ]) {
      expect(packed, f).toContain(f)
    }
    const stray = packed.filter(
      (f) => /^(src|test|docs|examples|scripts|bench|\.ci)\//.test(f) || (f.endsWith(".ts") && !f.endsWith(".d.ts")),
    )
    expect(stray).toEqual([])
  })

  it("installs in seconds with one copy of effect, no tsx, no Dawn and no CUDA build", async () => {
    expect(installSeconds).toBeLessThan(20)
    const copies: string[] = []
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        if (!e.isDirectory()) continue
        const p = join(d, e.name)
        if (e.name === "effect" && d.endsWith("node_modules")) copies.push(p)
        if (e.name === "node_modules" || d.endsWith("node_modules") || e.name.startsWith("@")) await walk(p)
      }
    }
    await walk(join(project, "node_modules"))
    expect(copies).toEqual([join(project, "node_modules", "effect")])
    expect(existsSync(join(project, "node_modules", "tsx"))).toBe(false)
    expect(existsSync(join(project, "node_modules", "webgpu"))).toBe(false)
    expect(existsSync(join(project, "node_modules", "miniseq", "build"))).toBe(false)
  })

  it("imports from plain Node and trains two steps on the CPU", async () => {
    const script = `
      import { Effect } from "effect"
      import { byteTokenizer, cpuBackendLayer, makeBatches, planStep, presets, train, trainValSplit, loadCorpus } from "miniseq"
      import { cudaBackendLayer } from "miniseq/cuda"
      // Dawn for Node is an optional peer dependency, not installed here.
      const webgpu = await import("miniseq/webgpu").then(() => "loaded", (e) => String(e))
      const tokens = trainValSplit(byteTokenizer.encode(loadCorpus().slice(0, 20000))).train
      const batches = makeBatches({ tokens, batch: 1, seq: 32, seed: 1 })
      const opts = { model: presets.tiny, mode: "mst", batch: 1, seq: 32, steps: 2, lr: 1e-3, seed: 1 }
      const r = await Effect.runPromise(train(opts, batches).pipe(Effect.provide(cpuBackendLayer())))
      const plan = planStep(presets.tiny, 1, 32, { mode: "mst" })
      console.log(JSON.stringify({ steps: r.records.length, finite: r.records.every((x) => Number.isFinite(x.loss)), planned: plan.peak > 0,
        cuda: typeof cudaBackendLayer, webgpu: webgpu.includes("Cannot find package 'webgpu'") }))
    `
    await writeFile(join(project, "use.mjs"), script)
    const { stdout } = await exec(process.execPath, ["use.mjs"], { cwd: project })
    expect(JSON.parse(stdout.trim())).toEqual({ steps: 2, finite: true, planned: true, cuda: "function", webgpu: true })
  })

  it("runs the miniseq command as compiled JavaScript", async () => {
    const { stdout } = await exec(
      join(project, "node_modules", ".bin", "miniseq"),
      ["plan", "--model", "tiny", "--seq", "256"],
      { cwd: project },
    )
    expect(stdout).toContain("one training step, tiny")
  })

  it("says which package to install for --backend webgpu (Dawn is an optional peer dependency)", async () => {
    const args = [
      "train",
      "--backend",
      "webgpu",
      "--steps",
      "1",
      "--batch",
      "1",
      "--seq",
      "16",
      "--out",
      join(dir, "run-webgpu"),
    ]
    const r = await exec(join(project, "node_modules", ".bin", "miniseq"), args, { cwd: project }).then(
      () => "",
      (e: { stderr?: string }) => e.stderr ?? "",
    )
    expect(r).toContain(
      "miniseq: BackendUnavailable: webgpu: backend unavailable: Dawn for Node is not installed: run `npm install webgpu@0.6.2`",
    )
  })

  it("bundles for the browser with no Node module and no Dawn, and type-checks with the browser condition", async () => {
    const source = `
      import { Effect } from "effect"
      import { byteTokenizer, cpuBackendLayer, makeBatches, presets, train, trainValSplit } from "miniseq"
      import { acquireBrowserDevice, webgpuBackendLayer } from "miniseq/webgpu"
      const batches = makeBatches({ tokens: trainValSplit(byteTokenizer.encode("hello ".repeat(100))).train, batch: 1, seq: 16, seed: 1 })
      const opts = { model: presets.tiny, mode: "mst" as const, batch: 1, seq: 16, steps: 1, lr: 1e-3, seed: 1 }
      const layer = navigator.gpu === undefined ? cpuBackendLayer() : webgpuBackendLayer()
      void Effect.runPromise(train(opts, batches).pipe(Effect.provide(layer))).then((r) => console.log(r.records.length, acquireBrowserDevice))
    `
    await writeFile(join(project, "page.ts"), source)
    const esbuild = join(repo, "node_modules", ".bin", "esbuild")
    await exec(
      esbuild,
      [
        "page.ts",
        "--bundle",
        "--platform=browser",
        "--format=esm",
        "--outfile=page.js",
        "--metafile=meta.json",
        "--log-level=warning",
      ],
      { cwd: project },
    )
    const inputs = Object.keys(
      (JSON.parse(await readFile(join(project, "meta.json"), "utf8")) as { inputs: Record<string, unknown> }).inputs,
    )
    expect(inputs).toContain("node_modules/miniseq/dist/backends/webgpu/browser.js")
    expect(
      inputs.filter((f) =>
        /^node:|node_modules\/webgpu\/|miniseq\/dist\/(index|backends\/webgpu\/index|backends\/cuda\/.*)\.js$/.test(f),
      ),
    ).toEqual([])
    const tsconfig = {
      compilerOptions: {
        target: "ES2022",
        module: "ESNext",
        moduleResolution: "bundler",
        customConditions: ["browser"],
        strict: true,
        noEmit: true,
        skipLibCheck: false,
        exactOptionalPropertyTypes: true,
        noPropertyAccessFromIndexSignature: true,
        lib: ["ES2022", "DOM"],
        types: [],
      },
      files: ["page.ts"],
    }
    await writeFile(join(project, "tsconfig.browser.json"), JSON.stringify(tsconfig, null, 2))
    const tsc = join(repo, "node_modules", ".bin", "tsc")
    const r = await exec(tsc, ["-p", "tsconfig.browser.json"], { cwd: project }).then(
      () => "",
      (e: { stdout?: string }) => e.stdout ?? String(e),
    )
    expect(r).toBe("")
  })

  it("type-checks a TypeScript consumer under strict flags, its declarations included", async () => {
    const source = `
      import { Effect } from "effect"
      import {
        byteTokenizer, cpuBackendLayer, decodeConfigSync, evaluate, input, makeBatches, ops as o, planStep, presets,
        readSafetensors, type StepRecord, train, type TrainOptions, trainValSplit,
      } from "miniseq"
      import { webgpuBackendLayer } from "miniseq/webgpu"
      import { cudaBackendLayer } from "miniseq/cuda"

      // The README's snippet.
      const x = input("x", [3])
      const y = o.mul(x, 2)
      const feeds = new Map([[x, Float32Array.of(1, 2, 3)]])
      for (const layer of [cpuBackendLayer(), webgpuBackendLayer(), cudaBackendLayer()]) {
        const { values } = await Effect.runPromise(evaluate([y], feeds).pipe(Effect.provide(layer)))
        console.log(values[0])
      }

      const model = decodeConfigSync({ ...presets.tiny, num_hidden_layers: 1 })
      const opts: TrainOptions = { model, mode: "mst+checkpoint", batch: 1, seq: 32, steps: 2, lr: 1e-3, seed: 1 }
      const batches = makeBatches({ tokens: trainValSplit(byteTokenizer.encode("hello ".repeat(100))).train, batch: 1, seq: 32, seed: 1 })
      const onStep = (r: StepRecord): void => console.log(r.step, r.loss)
      const result = await Effect.runPromise(train(opts, batches, onStep).pipe(Effect.provide(cpuBackendLayer())))
      const peak: number = planStep(model, 1, 32, { mode: "mst" }).peak
      const file: Promise<unknown> = readSafetensors("model.safetensors")
      console.log(result.records.length, peak, file)
    `
    await writeFile(join(project, "use.ts"), source)
    const tsconfig = {
      compilerOptions: {
        target: "ES2022",
        module: "NodeNext",
        moduleResolution: "NodeNext",
        strict: true,
        noEmit: true,
        skipLibCheck: false,
        noUncheckedIndexedAccess: true,
        noPropertyAccessFromIndexSignature: true,
        exactOptionalPropertyTypes: true,
        // DOM for effect's own declarations (CryptoKey, Storage) and @webgpu/types', which skipLibCheck: false checks too.
        noImplicitOverride: true,
        noImplicitReturns: true,
        lib: ["ES2022", "DOM"],
        types: ["node"],
        typeRoots: [join(repo, "node_modules", "@types")],
      },
      files: ["use.ts"],
    }
    await writeFile(join(project, "tsconfig.json"), JSON.stringify(tsconfig, null, 2))
    const tsc = join(repo, "node_modules", ".bin", "tsc")
    const r = await exec(tsc, ["-p", "."], { cwd: project }).then(
      () => "",
      (e: { stdout?: string }) => e.stdout ?? String(e),
    )
    expect(r).toBe("")
  })
})
