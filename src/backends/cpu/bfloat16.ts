/**
 * bfloat16 storage on the CPU, emulated: a bfloat16 buffer is a float32 array whose every value
 * is rounded to bfloat16 (round to nearest, ties to even) each time a kernel writes it. The
 * arithmetic stays float32, as on a GPU, which also computes in float32 and rounds on store.
 *
 * This lets the mixed-precision training path (bf16 weights, fp32 master weights and moments)
 * run, and be tested, on a machine without a GPU.
 */
import type { BackendImpl, Buffer } from "../../core/backend.js"
import { type AnyRoutineKernel, mapKernels } from "../../core/routines/registry.js"
import { type CpuBackend, type CpuBuffer, makeCpuBackend } from "./cpu-backend.js"

/** A bfloat16 buffer: its values live in a float32 buffer of the wrapped backend. */
interface Bf16Buffer extends Buffer {
  readonly dtype: "bfloat16"
  readonly inner: Buffer
}

/** Rounds float32 values to the nearest bfloat16, in place (NaN stays NaN). */
export function roundToBfloat16(values: Float32Array): void {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length)
  for (let i = 0; i < bits.length; i++) {
    const u = bits[i]!
    if ((u & 0x7fffffff) > 0x7f800000) continue // NaN: rounding could turn it into infinity
    bits[i] = ((u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000) >>> 0
  }
}

/** The CPU backend with bfloat16 buffers as well. */
export function cpuWithBfloat16(backend: CpuBackend = makeCpuBackend()): BackendImpl {
  const isBf16 = (b: Buffer): b is Bf16Buffer => b.dtype === "bfloat16"
  const raw = (b: Buffer): Buffer => (isBf16(b) ? b.inner : b)
  /** After a kernel wrote `outs`: round those that are bfloat16 to bfloat16. */
  const rounded = (...outs: Buffer[]): void => {
    for (const o of outs) if (isBf16(o)) roundToBfloat16((o.inner as CpuBuffer).data as Float32Array)
  }
  const rawAll = (bufs: Readonly<Record<string, Buffer>>) =>
    Object.fromEntries(Object.entries(bufs).map(([n, b]) => [n, raw(b)]))
  const routine =
    (f: AnyRoutineKernel): AnyRoutineKernel =>
    (call) => {
      f({ ...call, inputs: rawAll(call.inputs), outputs: rawAll(call.outputs) })
      rounded(...Object.values(call.outputs))
    }

  return {
    name: `${backend.name}+bf16`,
    dtypes: [...backend.dtypes, "bfloat16"],
    ...(backend.routines ? { routines: mapKernels(backend.routines, routine) } : {}),
    alloc: (dtype, size) =>
      dtype === "bfloat16"
        ? ({ dtype, size, inner: backend.alloc("float32", size) } satisfies Bf16Buffer)
        : backend.alloc(dtype, size),
    hostAlloc: (dtype, size) =>
      dtype === "bfloat16"
        ? ({ dtype, size, inner: backend.hostAlloc!("float32", size), tier: "host" } satisfies Bf16Buffer)
        : backend.hostAlloc!(dtype, size),
    free: (b) => backend.free(raw(b)),
    write: (b, data) => {
      backend.write(raw(b), data)
      rounded(b)
    },
    read: (b) => backend.read(raw(b)),
    fill: (out, value) => {
      backend.fill(raw(out), value)
      rounded(out)
    },
    iota: (out, shape, axis) => {
      backend.iota(raw(out), shape, axis)
      rounded(out)
    },
    unary: (op, x, out) => {
      backend.unary(op, raw(x), raw(out))
      rounded(out)
    },
    binary: (op, a, b, out) => {
      backend.binary(op, raw(a), raw(b), raw(out))
      rounded(out)
    },
    where: (c, a, b, out) => {
      backend.where(raw(c), raw(a), raw(b), raw(out))
      rounded(out)
    },
    cast: (x, out) => {
      backend.cast(raw(x), raw(out))
      rounded(out)
    },
    copy: (src, sv, dst, dv) => {
      backend.copy(raw(src), sv, raw(dst), dv)
      rounded(dst)
    },
    reduce: (op, x, out, outer, axis, inner) => {
      backend.reduce(op, raw(x), raw(out), outer, axis, inner)
      rounded(out)
    },
    matmul: (a, b, out, spec) => {
      backend.matmul(raw(a), raw(b), raw(out), spec)
      rounded(out)
    },
    gather: (t, idx, out, width) => {
      backend.gather(raw(t), idx, raw(out), width)
      rounded(out)
    },
    scatterAdd: (idx, src, out, width) => {
      backend.scatterAdd(idx, raw(src), raw(out), width)
      rounded(out)
    },
    takeAlong: (x, idx, out, width) => {
      backend.takeAlong(raw(x), idx, raw(out), width)
      rounded(out)
    },
    putAlong: (idx, src, out, width) => {
      backend.putAlong(idx, raw(src), raw(out), width)
      rounded(out)
    },
  }
}
