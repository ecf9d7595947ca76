/**
 * AdamW on the host's cores (native/host/adamw.h: what the CUDA backend runs when the optimizer is
 * offloaded) against the reference AdamW graph on the CPU backend, bit for bit: fp32, bf16-mixed
 * and bf16 storage, gradients in float32 and bfloat16, with weight decay (matrices) and without
 * (vectors), the clipping factor below 1, on one thread and on several, with the AVX2 loop and
 * without it. The header is compiled here through native/host/adamw-check.cc, with the CUDA
 * addon's flags, wherever a C++ compiler is (CI has g++); the GPU side
 * (the CUDA backend choosing it for host-tier state) is in test/cuda-train.test.ts.
 */
import { spawnSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { cpuWithBfloat16, roundToBfloat16 } from "../src/backends/cpu/bfloat16.js"
import type { DType } from "../src/core/dtype.js"
import { defaultAdamW, type PrecisionName, precisions } from "../src/models/optimizer.js"
import { adamwStep, type Shapes, startState, stepScalars } from "./adamw-step.js"

const cxx = ["g++", "c++", "clang++"].find((c) => spawnSync(c, ["--version"], { stdio: "ignore" }).status === 0)
const dir = mkdtempSync(join(tmpdir(), "miniseq-host-adamw-"))
const flags = ["-O2", "-std=c++17", "-ffp-contract=off", "-fno-math-errno", "-pthread"]
/** The check program built as the CUDA addon builds the header; `baseline`: without its AVX2 loop. */
function build(name: string, extra: string[]): string | undefined {
  const out = join(dir, name)
  if (cxx === undefined) return undefined
  const r = spawnSync(cxx, [...flags, ...extra, "native/host/adamw-check.cc", "-o", out], { stdio: "inherit" })
  return r.status === 0 ? out : undefined
}
const programs = { simd: build("adamw-check", []), baseline: build("adamw-check-baseline", ["-DMINISEQ_HOST_NO_AVX2"]) }
const built = programs.simd !== undefined && programs.baseline !== undefined
afterAll(() => rmSync(dir, { recursive: true, force: true }))

// 280,000 elements: four slices of the work on four threads; the vector gets no decay.
const shapes: Shapes = { "w.matrix": [400, 700], "w.norm": [700] }

/** float32 values as the storage holds them: bfloat16 as its 16 bits (rounded to nearest even). */
function stored(values: Float32Array, dtype: DType): Uint8Array {
  if (dtype === "float32")
    return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength))
  const rounded = Float32Array.from(values)
  roundToBfloat16(rounded)
  const bits = new Uint32Array(rounded.buffer)
  return new Uint8Array(Uint16Array.from(bits, (u) => u >>> 16).buffer)
}
function loaded(bytes: Uint8Array, dtype: DType): Float32Array {
  const copy = bytes.slice()
  if (dtype === "float32") return new Float32Array(copy.buffer)
  const halves = new Uint16Array(copy.buffer)
  return new Float32Array(Uint32Array.from(halves, (h) => (h << 16) >>> 0).buffer)
}

/** One parameter's update by the host AdamW, given the step's clipping factor. */
function hostUpdate(
  precision: PrecisionName,
  gradType: DType,
  state: Record<string, Float32Array>,
  name: string,
  clip: number,
  decay: number,
  threads: number,
  program: string,
): Float32Array[] {
  const p = precisions[precision]
  const n = state[`w.${name}`]!.length
  const code = (d: DType) => (d === "bfloat16" ? 1 : 0)
  const header = new DataView(new ArrayBuffer(5 * 4 + 8 + 4 * 8 + 4 * 4))
  ;[code(p.param), code(gradType), code(p.state), p.master ? 1 : 0, threads].forEach((k, i) =>
    header.setInt32(4 * i, k, true),
  )
  header.setBigInt64(20, BigInt(n), true)
  ;[defaultAdamW.beta1, defaultAdamW.beta2, defaultAdamW.eps, decay].forEach((x, i) =>
    header.setFloat64(28 + 8 * i, x, true),
  )
  ;[stepScalars.lr, stepScalars.correction1, stepScalars.correction2, clip].forEach((x, i) =>
    header.setFloat32(60 + 4 * i, x, true),
  )
  const w = state[`w.${name}`]!
  const parts = [
    new Uint8Array(header.buffer),
    stored(w, p.param),
    stored(state[`g.${name}`]!, gradType),
    stored(state[`m.${name}`]!, p.state),
    stored(state[`v.${name}`]!, p.state),
    ...(p.master ? [stored(w, "float32")] : []),
  ]
  const r = spawnSync(program, { input: Buffer.concat(parts), maxBuffer: 2 ** 28 })
  expect(r.status, String(r.stderr)).toBe(0)
  const out = new Uint8Array(r.stdout)
  const sizes: [DType, number][] = [
    [p.param, n],
    [p.state, n],
    [p.state, n],
    ...(p.master ? [["float32", n] as [DType, number]] : []),
  ]
  let at = 0
  return sizes.map(([dtype, count]) => {
    const bytes = count * (dtype === "bfloat16" ? 2 : 4)
    const x = loaded(out.subarray(at, at + bytes), dtype)
    at += bytes
    return x
  })
}

describe.skipIf(!built)("AdamW on the host (native/host/adamw.h)", () => {
  const cases: [PrecisionName, DType][] = [
    ["fp32", "float32"],
    ["bf16-mixed", "float32"],
    ["bf16-mixed", "bfloat16"],
    ["bf16", "float32"],
    ["bf16", "bfloat16"],
  ]
  for (const [precision, gradType] of cases) {
    it(`${precision}, ${gradType} gradients: the reference graph's update, bit for bit (SIMD and baseline builds, 1 and 4 threads)`, async () => {
      const state = startState(shapes, 5)
      const want = await adamwStep(cpuWithBfloat16(), precision, false, state, { shapes, gradDType: gradType })
      const norm = want.read[0]![0]!
      const clip = Math.fround(stepScalars.maxGradNorm / Math.max(norm, stepScalars.maxGradNorm))
      expect(clip).toBeLessThan(1) // the clipping is exercised
      const perParameter = precisions[precision].master ? 4 : 3
      Object.keys(shapes).forEach((name, k) => {
        const decay = shapes[name]!.length >= 2 ? defaultAdamW.weightDecay : 0
        const expected = want.read.slice(1 + k * perParameter, 1 + (k + 1) * perParameter)
        for (const [build, program] of Object.entries(programs))
          for (const threads of [1, 4]) {
            const got = hostUpdate(precision, gradType, state, name, clip, decay, threads, program!)
            got.forEach((x, i) => {
              const e = expected[i]!
              expect(x.length).toBe(e.length)
              const differs = x.findIndex((v, j) => !Object.is(v, e[j]))
              expect(differs, `${name} output ${i} (w, m, v, master), ${build} build, ${threads} threads`).toBe(-1)
            })
          }
      })
    })
  }
})

it("a C++ compiler builds the host AdamW wherever CI runs", () => {
  // CI always has g++ (it builds cpu-fast's kernels too); elsewhere the cases above say skipped.
  if (process.env.CI === "true") expect(built).toBe(true)
})

describe.skipIf(cxx === undefined)("the host's thread pool (native/host/pool.h)", () => {
  it("runs each task of every job once, with callers on four threads at once over eight threads (ThreadSanitizer where the compiler has it)", () => {
    const out = join(dir, "pool-check")
    const source = "native/host/pool-check.cc"
    const base = ["-O1", "-g", "-std=c++17", "-pthread", source, "-o", out]
    // ThreadSanitizer where it builds and runs here (some kernels' address layouts stop it at start).
    const tsan =
      spawnSync(cxx!, ["-fsanitize=thread", ...base], { stdio: "ignore" }).status === 0 &&
      spawnSync(out, ["1", "1"], { encoding: "utf8" }).stdout.trim() === "ok"
    if (!tsan) expect(spawnSync(cxx!, base, { stdio: "inherit" }).status).toBe(0)
    const r = spawnSync(out, ["4", "2000"], {
      encoding: "utf8",
      env: { ...process.env, MINISEQ_HOST_THREADS: "8", TSAN_OPTIONS: "halt_on_error=1" },
    })
    expect(`${r.stdout}${r.stderr}`.trim()).toBe("ok")
    expect(r.status).toBe(0)
  })
})
