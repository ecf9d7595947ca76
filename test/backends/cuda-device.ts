import { afterAll, expect } from "vitest"
import type { BackendImpl, Buffer } from "../../src/core/backend.js"
import { makeCpuBackend } from "../../src/backends/cpu/index.js"
import { type CudaBackend, makeCudaBackend } from "../../src/backends/cuda/index.js"
import type { DType, HostArray } from "../../src/core/dtype.js"
import { BackendUnavailable } from "../../src/core/errors.js"
import { rng } from "../../src/core/random.js"
import { evalOn, reference } from "./reference.js"

export { evalOn, reference }

export const required = process.env.MINISEQ_CUDA === "1"
export let cuda: CudaBackend | undefined
export let missing: BackendUnavailable | undefined
try {
  cuda = makeCudaBackend()
} catch (e) {
  if (!(e instanceof BackendUnavailable)) throw e
  missing = e
  console.warn(`cuda: GPU cases ${required ? "FAIL (MINISEQ_CUDA=1)" : "skipped"}: ${e.reason}`)
}
export const noGpu = cuda === undefined
afterAll(async () => {
  await cuda?.destroy()
})

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

export const cpu = makeCpuBackend({ fused: false })

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)
/** Rounds to bfloat16 (nearest even), as the backend does on write. */
export function bf16(x: number): number {
  f32[0] = x
  const u = u32[0]!
  if ((u & 0x7fffffff) > 0x7f800000) return NaN
  u32[0] = (((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) << 16) >>> 0
  return f32[0]!
}
export const roundBf16 = (a: ArrayLike<number>): Float32Array => Float32Array.from(a, bf16)

export function normals(n: number, seed: number, opts: { positive?: boolean; scale?: number } = {}): Float32Array {
  const r = rng(seed)
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    // Box–Muller from the project's seeded generator.
    const v = Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()) * (opts.scale ?? 1)
    out[i] = opts.positive ? 0.5 + Math.abs(v) : v
  }
  return out
}

export function ints(n: number, below: number, seed: number): Int32Array {
  const r = rng(seed)
  return Int32Array.from({ length: n }, () => Math.floor(r() * below))
}

/** The host array a backend takes for a dtype (bfloat16 travels as float32). */
export function hostOf(dtype: DType, data: ArrayLike<number>): HostArray {
  switch (dtype) {
    case "float64":
      return Float64Array.from(data)
    case "int32":
      return Int32Array.from(data)
    default:
      return Float32Array.from(data)
  }
}

export interface Arg {
  readonly dtype: DType
  readonly data: ArrayLike<number>
}
export const arg = (dtype: DType, data: ArrayLike<number>): Arg => ({ dtype, data })

/**
 * Runs `f` on one backend with inputs uploaded and outputs allocated, and reads the outputs back.
 * Outputs start as NaN (or -1 for int32), so a kernel that skips elements shows.
 */
export async function runOn(
  b: BackendImpl,
  ins: readonly Arg[],
  outs: readonly { dtype: DType; size: number; init?: ArrayLike<number> }[],
  f: (ins: Buffer[], outs: Buffer[]) => void,
): Promise<HostArray[]> {
  const inBufs = ins.map((a) => {
    const buf = b.alloc(a.dtype, a.data.length)
    b.write(buf, hostOf(a.dtype, a.data))
    return buf
  })
  const outBufs = outs.map((s) => {
    const buf = b.alloc(s.dtype, s.size)
    b.write(buf, hostOf(s.dtype, s.init ?? new Array<number>(s.size).fill(s.dtype === "int32" ? -1 : NaN)))
    return buf
  })
  try {
    f(inBufs, outBufs)
    return await Promise.all(outBufs.map((x) => b.read(x)))
  } finally {
    for (const x of [...inBufs, ...outBufs]) b.free(x)
  }
}

/** The CPU backend has no bfloat16: it runs those cases in float32 on bfloat16-rounded inputs. */
export const cpuArg = (a: Arg): Arg => (a.dtype === "bfloat16" ? arg("float32", roundBf16(a.data)) : a)
export const cpuDType = (d: DType): DType => (d === "bfloat16" ? "float32" : d)

/** The same kernel call on CUDA and on the CPU backend. */
export async function both(
  ins: readonly Arg[],
  outs: readonly { dtype: DType; size: number; init?: ArrayLike<number> }[],
  f: (b: BackendImpl, ins: Buffer[], outs: Buffer[]) => void,
): Promise<{ gpu: HostArray[]; ref: HostArray[] }> {
  const gpu = await runOn(cuda!, ins, outs, (i, o) => f(cuda!, i, o))
  const ref = await runOn(
    cpu,
    ins.map(cpuArg),
    outs.map((s) => ({
      ...s,
      dtype: cpuDType(s.dtype),
      init: s.init === undefined ? undefined : s.dtype === "bfloat16" ? roundBf16(s.init) : s.init,
    })),
    (i, o) => f(cpu, i, o),
  )
  return { gpu, ref }
}

/** Equal element by element (NaN equals NaN, -0 equals 0). */
export function expectSame(what: string, got: ArrayLike<number>, want: ArrayLike<number>): void {
  expect(got.length, `${what}: length`).toBe(want.length)
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!,
      w = want[i]!
    if (!(g === w || (Number.isNaN(g) && Number.isNaN(w)))) expect.fail(`${what}: element ${i} is ${g}, want ${w}`)
  }
}

/** Non-finite values equal; finite ones within tol of the largest magnitude. */
export function expectClose(what: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: number): void {
  expect(got.length, `${what}: length`).toBe(want.length)
  let scale = 0,
    diff = 0,
    at = -1
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!,
      w = want[i]!
    if (!Number.isFinite(w) || !Number.isFinite(g)) {
      if (!(g === w || (Number.isNaN(g) && Number.isNaN(w)))) expect.fail(`${what}: element ${i} is ${g}, want ${w}`)
      continue
    }
    scale = Math.max(scale, Math.abs(w))
    if (Math.abs(g - w) > diff) {
      diff = Math.abs(g - w)
      at = i
    }
  }
  const err = scale === 0 ? diff : diff / scale
  // MINISEQ_CUDA_ERRORS=1 prints every comparison's error beside its tolerance (for tuning them).
  if (process.env.MINISEQ_CUDA_ERRORS) console.log(`error ${err.toExponential(2)} of ${tol}  ${what}`)
  if (!(err <= tol))
    expect.fail(`${what}: error ${err.toExponential(2)} (element ${at}: ${got[at]} vs ${want[at]}) exceeds ${tol}`)
}

export const floatTypes: readonly DType[] = ["float32", "float64", "bfloat16"]
export const allTypes: readonly DType[] = ["float32", "float64", "int32", "bfloat16"]
