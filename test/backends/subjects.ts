/**
 * The backends under test (CPU always; WebGPU and CUDA where this machine has them) and the
 * float64 CPU reference every conformance case is compared with.
 */
import { Layer } from "effect"
import { afterAll, expect } from "vitest"
import { Backend, type BackendImpl, type Buffer } from "../../src/core/backend.js"
import { makeCpuBackend } from "../../src/backends/cpu/index.js"
import { makeFastCpuBackend } from "../../src/backends/cpu-fast/index.js"
import { makeWebGpuBackend, type WebGpuBackend } from "../../src/backends/webgpu/index.js"
import { makeCudaBackend } from "../../src/backends/cuda/index.js"
import { type DType, hostArray, type HostArray } from "../../src/core/dtype.js"
import { BackendUnavailable } from "../../src/core/errors.js"
import { maxRelDiff } from "../helpers.js"
import { evalOn, reference } from "./reference.js"

export { evalOn, reference }

process.env.EGL_PLATFORM ??= "surfaceless" // Mesa's EGL on a machine without a display

// ---------------------------------------------------------------------------------------------
// The backends under test
// ---------------------------------------------------------------------------------------------

export interface Subject {
  readonly name: string
  readonly impl?: BackendImpl
  /** Why the backend cannot run here (its cases are skipped). */
  readonly unavailable?: string
}

export const inCI = process.env.CI === "true" || process.env.CI === "1"
export let webgpu: WebGpuBackend | undefined
export let webgpuMissing: string | undefined
try {
  webgpu = await makeWebGpuBackend()
} catch (e) {
  webgpuMissing = e instanceof BackendUnavailable ? e.message : `webgpu failed to start: ${String(e)}`
  console.warn(`conformance: WebGPU cases ${inCI ? "FAIL (CI must provide an adapter)" : "skipped"}: ${webgpuMissing}`)
}
afterAll(async () => {
  await webgpu?.destroy()
})

export let cuda: (BackendImpl & { destroy(): Promise<void> }) | undefined
let cudaMissing: string | undefined
try {
  cuda = makeCudaBackend()
} catch (e) {
  if (!(e instanceof BackendUnavailable) || process.env.MINISEQ_CUDA === "1") throw e
  cudaMissing = e.reason
}
afterAll(async () => {
  await cuda?.destroy()
})

export const subjects: Subject[] = [
  { name: "cpu", impl: makeCpuBackend() },
  { name: "cpu-fast", impl: makeFastCpuBackend() },
  webgpu !== undefined ? { name: "webgpu", impl: webgpu } : { name: "webgpu", unavailable: webgpuMissing ?? "unknown" },
  cuda !== undefined ? { name: "cuda", impl: cuda } : { name: "cuda", unavailable: cudaMissing ?? "unknown" },
]

export const layerOf = (impl: BackendImpl) => Layer.succeed(Backend, impl)

/** Non-finite values must match exactly; finite ones within `tol` of the largest magnitude. */
export function expectClose(what: string, got: HostArray, want: HostArray, tol: number): void {
  expect(got.length, `${what}: length`).toBe(want.length)
  const finite = (a: HostArray) => Array.from(a, (v) => (Number.isFinite(v) ? 0 : v))
  expect(finite(got), `${what}: non-finite values`).toEqual(finite(want))
  const keep = (a: HostArray) => Array.from(a, (v) => (Number.isFinite(v) ? v : 0))
  const err = maxRelDiff(keep(got), keep(want))
  if (!(err <= tol)) expect.fail(`${what}: max error ${err.toExponential(2)} relative to max-abs exceeds ${tol}`)
}

/** A buffer on `b` holding `values` (bfloat16 takes float32 data). */
export function upload(b: BackendImpl, dtype: DType, values: ArrayLike<number>): Buffer {
  const buf = b.alloc(dtype, values.length)
  const host = hostArray(dtype, values.length)
  host.set(Array.from(values))
  b.write(buf, host)
  return buf
}
