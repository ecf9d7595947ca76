import { afterAll, describe, expect, it } from "vitest"
import type { MatmulSpec, View } from "../src/core/backend.js"
import { type CudaBackend, makeCudaBackend } from "../src/backends/cuda/index.js"
import type { DType } from "../src/core/dtype.js"
import { OutOfMemory } from "../src/core/errors.js"
import { counterNormals, rng } from "../src/core/random.js"
import { cudaHeldBytes } from "../src/backends/cuda/allocator.js"
import {
  allTypes,
  arg,
  both,
  cpu,
  cuda,
  expectClose,
  expectSame,
  floatTypes,
  hostOf,
  ints,
  noGpu,
  normals,
  roundBf16,
  runOn,
} from "./backends/cuda-device.js"

let tf32: CudaBackend | undefined
afterAll(async () => {
  await tf32?.destroy()
})

// ---------------------------------------------------------------------------------------------
// Kernels against the CPU backend
// ---------------------------------------------------------------------------------------------

describe.skipIf(noGpu)("cuda kernels", () => {
  it("write/read round trips every dtype; bfloat16 rounds to nearest even on write", async () => {
    const data = [0, -0, 1, -1.5, 3.14159, 1e-30, 65504.5, Infinity, -Infinity, NaN, 1 + 2 ** -8, 1 + 3 * 2 ** -9]
    for (const dtype of ["float32", "float64"] as const) {
      const [got] = await runOn(cuda!, [], [{ dtype, size: data.length, init: data }], () => {})
      expectSame(dtype, got!, hostOf(dtype, data))
    }
    const [i32] = await runOn(
      cuda!,
      [],
      [{ dtype: "int32", size: 4, init: [0, -1, 2147483647, -2147483648] }],
      () => {},
    )
    expectSame("int32", i32!, [0, -1, 2147483647, -2147483648])
    const [b] = await runOn(cuda!, [], [{ dtype: "bfloat16", size: data.length, init: data }], () => {})
    expect(b).toBeInstanceOf(Float32Array)
    expectSame("bfloat16", b!, roundBf16(data))
  })

  it("checks buffers: wrong host type, freed buffers, reads after free", async () => {
    const buf = cuda!.alloc("float32", 3)
    expect(() => cuda!.write(buf, new Float64Array(3))).toThrow(
      /cuda\.write: buffer is float32 but data is a Float64Array/,
    )
    expect(() => cuda!.write(buf, new Float32Array(2))).toThrow(/holds 3 elements but data has 2/)
    cuda!.free(buf)
    expect(() => cuda!.free(buf)).toThrow(/freed already/)
    let rejected = ""
    await cuda!.read(buf).catch((e: Error) => {
      rejected = e.message
    })
    expect(rejected).toMatch(/cuda\.read: buffer float32\[3\] is not a live buffer/)
    const i = cuda!.alloc("int32", 1)
    expect(() => cuda!.fill(i, 0.5)).toThrow(/0\.5 is not an int32/)
    cuda!.free(i)
  })

  it("fill and iota", async () => {
    for (const dtype of allTypes) {
      const value = dtype === "int32" ? -7 : -2.71828
      const { gpu, ref } = await both(
        [],
        [
          { dtype, size: 1031 },
          { dtype, size: 3 * 4 * 5 },
          { dtype, size: 7 },
        ],
        (b, _i, [f, io1, io2]) => {
          b.fill(f!, value)
          b.iota(io1!, [3, 4, 5], 1)
          b.iota(io2!, [7], 0)
        },
      )
      gpu.forEach((g, i) => expectSame(`${dtype} output ${i}`, g, dtype === "bfloat16" ? roundBf16(ref[i]!) : ref[i]!))
    }
  })

  it("unary ops (float32 to a few ulp, sqrt/recip/neg exactly; float64; bfloat16)", async () => {
    const ops = ["neg", "exp", "log", "sqrt", "recip", "sin", "cos"] as const
    for (const dtype of floatTypes) {
      for (const op of ops) {
        const positive = op === "log" || op === "sqrt" || op === "recip"
        const x = normals(1000, 7, { positive, scale: op === "sin" || op === "cos" ? 30 : 2 })
        const {
          gpu: [g],
          ref: [r],
        } = await both([arg(dtype, x)], [{ dtype, size: x.length }], (b, [xb], [ob]) => b.unary(op, xb!, ob!))
        const want = dtype === "bfloat16" ? roundBf16(r!) : r!
        const exact = op === "neg" || op === "sqrt" || op === "recip"
        if (dtype === "bfloat16") expectClose(`${op} ${dtype}`, g!, want, exact ? 0 : 8e-3)
        else if (exact) expectSame(`${op} ${dtype}`, g!, want)
        else expectClose(`${op} ${dtype}`, g!, want, dtype === "float32" ? 5e-7 : 1e-15)
      }
    }
  })

  it("binary ops exactly, with scalar operands, NaN and ±0, in every dtype", async () => {
    const ops = ["add", "sub", "mul", "div", "maximum", "less", "equal"] as const
    const a = normals(513, 1),
      b = normals(513, 2)
    a[3] = NaN
    b[4] = NaN
    a[5] = 0
    b[5] = -0
    b[6] = 0
    a[7] = b[7]!
    for (const dtype of ["float32", "float64"] as const) {
      for (const op of ops) {
        for (const [sa, sb] of [
          [false, false],
          [true, false],
          [false, true],
        ] as const) {
          const A = sa ? a.subarray(0, 1) : a,
            B = sb ? b.subarray(8, 9) : b
          const outDtype: DType = op === "less" || op === "equal" ? "int32" : dtype
          const {
            gpu: [g],
            ref: [r],
          } = await both([arg(dtype, A), arg(dtype, B)], [{ dtype: outDtype, size: 513 }], (be, [x, y], [z]) =>
            be.binary(op, x!, y!, z!),
          )
          expectSame(`${op} ${dtype} scalars ${sa}/${sb}`, g!, r!)
        }
      }
    }
    // bfloat16: computed in float32 on the rounded inputs, rounded once.
    for (const op of ops) {
      const outDtype: DType = op === "less" || op === "equal" ? "float32" : "bfloat16"
      const {
        gpu: [g],
        ref: [r],
      } = await both([arg("bfloat16", a), arg("bfloat16", b)], [{ dtype: outDtype, size: 513 }], (be, [x, y], [z]) =>
        be.binary(op, x!, y!, z!),
      )
      expectSame(`${op} bfloat16`, g!, outDtype === "bfloat16" ? roundBf16(r!) : r!)
    }
    // int32: wrapping + − ×, truncating ÷ with x / 0 = 0 and INT_MIN / -1 wrapping.
    const r = rng(5)
    const ia = Int32Array.from({ length: 300 }, (_, i) =>
      i % 7 === 0 ? 0 : i % 5 === 0 ? Math.floor((r() - 0.5) * 4e9) : Math.floor((r() - 0.5) * 2000),
    )
    const ib = Int32Array.from({ length: 300 }, (_, i) =>
      i % 11 === 0 ? 0 : i % 3 === 0 ? Math.floor((r() - 0.5) * 4e9) : Math.floor((r() - 0.5) * 50),
    )
    ia[1] = -2147483648
    ib[1] = -1
    ia[2] = 2147483647
    ib[2] = 1
    for (const op of ops) {
      for (const outDtype of op === "less" || op === "equal"
        ? (["int32", "float32", "bfloat16"] as const)
        : (["int32"] as const)) {
        const {
          gpu: [g],
          ref: [rr],
        } = await both([arg("int32", ia), arg("int32", ib)], [{ dtype: outDtype, size: 300 }], (be, [x, y], [z]) =>
          be.binary(op, x!, y!, z!),
        )
        expectSame(`${op} int32 → ${outDtype}`, g!, rr!)
      }
    }
  })

  it("where with float, int and NaN conditions and scalar branches", async () => {
    const c = normals(257, 3).map((v, i) => (i % 3 === 0 ? 0 : i === 10 ? NaN : v))
    const a = normals(257, 4),
      b = normals(257, 5)
    for (const dtype of allTypes) {
      const A = dtype === "int32" ? ints(257, 100, 1) : a,
        B = dtype === "int32" ? ints(257, 100, 2) : b
      for (const [cs, as, bs] of [
        [false, false, false],
        [true, false, false],
        [false, true, false],
        [false, false, true],
      ] as const) {
        for (const condType of ["float32", "int32"] as const) {
          const C = condType === "int32" ? Int32Array.from(c, (v) => (Number.isNaN(v) ? 1 : Math.trunc(v * 2))) : c
          const {
            gpu: [g],
            ref: [r],
          } = await both(
            [
              arg(condType, cs ? C.subarray(0, 1) : C),
              arg(dtype, as ? A.subarray(2, 3) : A),
              arg(dtype, bs ? B.subarray(2, 3) : B),
            ],
            [{ dtype, size: 257 }],
            (be, [x, y, z], [w]) => be.where(x!, y!, z!, w!),
          )
          expectSame(`where ${condType}/${dtype} ${cs}${as}${bs}`, g!, r!)
        }
      }
    }
  })

  it("cast between every pair of dtypes with typed-array store rules", async () => {
    const special = [
      0,
      -0,
      0.5,
      -0.5,
      1.5,
      -2.5,
      2.5,
      1e10,
      -3e9,
      2147483647.9,
      -2147483648.7,
      4294967296 + 5,
      NaN,
      Infinity,
      -Infinity,
      1 + 2 ** -9,
      3.999,
    ]
    const x = [...special, ...normals(200, 9, { scale: 1000 })]
    for (const from of allTypes) {
      for (const to of allTypes) {
        const src = from === "int32" ? Int32Array.from(x) : x
        const {
          gpu: [g],
          ref: [r],
        } = await both([arg(from, src)], [{ dtype: to, size: x.length }], (be, [a], [b]) => be.cast(a!, b!))
        // The CPU reference runs bfloat16 as float32: round its result where the target is bfloat16.
        expectSame(`cast ${from} → ${to}`, g!, to === "bfloat16" ? roundBf16(r!) : r!)
      }
    }
  })

  it("strided copy: permutes, broadcasts (0 strides), negative strides, offsets, rank 8 and in place", async () => {
    const cases: { n: number; src: View; dst: View; dstSize: number }[] = [
      // transpose 37×19
      {
        n: 37 * 19,
        src: { shape: [19, 37], strides: [1, 19], offset: 0 },
        dst: { shape: [19, 37], strides: [37, 1], offset: 0 },
        dstSize: 703,
      },
      // broadcast a row of 5 to 4×5, and a scalar to 3×7
      {
        n: 5,
        src: { shape: [4, 5], strides: [0, 1], offset: 0 },
        dst: { shape: [4, 5], strides: [5, 1], offset: 0 },
        dstSize: 20,
      },
      {
        n: 1,
        src: { shape: [3, 7], strides: [0, 0], offset: 0 },
        dst: { shape: [3, 7], strides: [7, 1], offset: 0 },
        dstSize: 21,
      },
      // reversed rows, into a window of a larger buffer
      {
        n: 60,
        src: { shape: [6, 10], strides: [-10, 1], offset: 50 },
        dst: { shape: [6, 10], strides: [12, 1], offset: 13 },
        dstSize: 100,
      },
      // rank 8 that does not merge
      {
        n: 2 ** 7 * 3,
        src: { shape: [3, 2, 2, 2, 2, 2, 2, 2], strides: [1, 3, 6, 12, 24, 48, 96, 192], offset: 0 },
        dst: { shape: [3, 2, 2, 2, 2, 2, 2, 2], strides: [128, 64, 32, 16, 8, 4, 2, 1], offset: 0 },
        dstSize: 384,
      },
      // rank 10, contiguous: merges into one memcpy
      {
        n: 1024,
        src: { shape: [2, 2, 2, 2, 2, 2, 2, 2, 2, 2], strides: [512, 256, 128, 64, 32, 16, 8, 4, 2, 1], offset: 0 },
        dst: { shape: [2, 2, 2, 2, 2, 2, 2, 2, 2, 2], strides: [512, 256, 128, 64, 32, 16, 8, 4, 2, 1], offset: 0 },
        dstSize: 1024,
      },
      // one element, size-1 dims only
      {
        n: 9,
        src: { shape: [1, 1], strides: [4, 4], offset: 8 },
        dst: { shape: [1, 1], strides: [1, 1], offset: 2 },
        dstSize: 3,
      },
      // rows of 16 contiguous on both sides (16-byte units): a head transpose [5, 3, 16] → [3, 5, 16],
      // reversed rows, and an offset of one element that leaves the 16-byte units
      {
        n: 240,
        src: { shape: [3, 5, 16], strides: [16, 48, 1], offset: 0 },
        dst: { shape: [3, 5, 16], strides: [80, 16, 1], offset: 0 },
        dstSize: 240,
      },
      {
        n: 96,
        src: { shape: [6, 16], strides: [-16, 1], offset: 80 },
        dst: { shape: [6, 16], strides: [32, 1], offset: 16 },
        dstSize: 208,
      },
      {
        n: 241,
        src: { shape: [3, 5, 16], strides: [16, 48, 1], offset: 1 },
        dst: { shape: [3, 5, 16], strides: [80, 16, 1], offset: 0 },
        dstSize: 240,
      },
    ]
    for (const dtype of allTypes) {
      for (const [ci, c] of cases.entries()) {
        const data = dtype === "int32" ? ints(c.n, 1000, ci) : normals(c.n, ci)
        const {
          gpu: [g],
          ref: [r],
        } = await both([arg(dtype, data)], [{ dtype, size: c.dstSize }], (be, [s], [d]) =>
          be.copy(s!, c.src, d!, c.dst),
        )
        expectSame(`copy case ${ci} ${dtype}`, g!, dtype === "bfloat16" ? roundBf16(r!) : r!)
      }
      // In place, overlapping: shift a buffer by 3 within itself.
      const data = dtype === "int32" ? ints(50, 1000, 99) : normals(50, 99)
      const {
        gpu: [g],
        ref: [r],
      } = await both([], [{ dtype, size: 50, init: data }], (be, _i, [d]) =>
        be.copy(d!, { shape: [40], strides: [1], offset: 0 }, d!, { shape: [40], strides: [1], offset: 3 }),
      )
      expectSame(`in-place copy ${dtype}`, g!, dtype === "bfloat16" ? roundBf16(r!) : r!)
    }
  })

  it("reduce sum and max over [outer, axis, inner], long axes split across blocks, NaN and empty axes", async () => {
    const shapes: [number, number, number][] = [
      [3, 1537, 1],
      [4, 1100, 3],
      [1, 1000, 5],
      [5, 1, 3],
      [1, 200_000, 1],
      [1, 50_000, 3],
      [2, 0, 3],
      [64, 33, 70],
      [1000, 7, 1],
    ]
    for (const dtype of floatTypes) {
      for (const [outer, axis, inner] of shapes) {
        const x = normals(outer * axis * inner, outer + axis + inner)
        if (x.length > 10) x[7] = NaN // one NaN: its max is NaN, its sum too
        for (const op of ["sum", "max"] as const) {
          const {
            gpu: [g],
            ref: [r],
          } = await both([arg(dtype, x)], [{ dtype, size: outer * inner }], (be, [a], [b]) =>
            be.reduce(op, a!, b!, outer, axis, inner),
          )
          const what = `${op} ${dtype} [${outer}, ${axis}, ${inner}]`
          // Both accumulate in float64 and round once; only the order of the additions differs.
          if (dtype === "bfloat16") expectClose(what, g!, roundBf16(r!), 8e-3)
          else if (op === "max") expectSame(what, g!, r!)
          else expectClose(what, g!, r!, dtype === "float32" ? 1.2e-7 : 1e-14)
        }
      }
    }
  })

  it("matmul: every transpose combination, batches, odd sizes, accumulate, k = 0", async () => {
    const shapes: [number, number, number, number][] = [
      [1, 1, 1, 1],
      [3, 33, 17, 65],
      [2, 130, 70, 33],
      [1, 5, 7, 1000],
      [1, 256, 384, 512],
    ]
    for (const dtype of ["float32", "float64", "bfloat16"] as const) {
      for (const [batch, m, n, k] of shapes) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            for (const accumulate of [false, true]) {
              const a = normals(batch * m * k, m + k),
                b = normals(batch * k * n, n + k + 1),
                c = normals(batch * m * n, m + n)
              const spec: MatmulSpec = { batch, m, n, k, transA, transB, accumulate }
              // bfloat16 products accumulate into float32 outputs (a weight gradient) and bfloat16 ones.
              for (const outDtype of dtype === "bfloat16" ? (["float32", "bfloat16"] as const) : [dtype]) {
                const {
                  gpu: [g],
                  ref: [r],
                } = await both(
                  [arg(dtype, a), arg(dtype, b)],
                  [{ dtype: outDtype, size: batch * m * n, init: c }],
                  (be, [x, y], [z]) => be.matmul(x!, y!, z!, spec),
                )
                const what = `matmul ${dtype}→${outDtype} ${batch}×${m}×${n}×${k} ${transA ? "T" : "N"}${transB ? "T" : "N"}${accumulate ? " +=" : ""}`
                // float32 accumulation over k = 1000 terms: ~1e-4 absolute on outputs of ~50 (seen on the H200).
                const tol = dtype === "float64" ? 1e-13 : outDtype === "bfloat16" ? 8e-3 : 1e-5
                expectClose(what, g!, outDtype === "bfloat16" ? roundBf16(r!) : r!, tol)
              }
            }
          }
        }
      }
    }
    // k = 0: an empty sum, so out = 0 (or out unchanged with accumulate).
    for (const accumulate of [false, true]) {
      const {
        gpu: [g],
        ref: [r],
      } = await both(
        [arg("float32", []), arg("float32", [])],
        [{ dtype: "float32", size: 6, init: [1, 2, 3, 4, 5, 6] }],
        (be, [x, y], [z]) =>
          be.matmul(x!, y!, z!, { batch: 1, m: 2, n: 3, k: 0, transA: false, transB: false, accumulate }),
      )
      expectSame(`matmul k = 0 ${accumulate}`, g!, r!)
    }
  })

  it("matmul with allowTF32 stays within TF32 rounding", async () => {
    tf32 ??= makeCudaBackend({ allowTF32: true })
    const [m, n, k] = [256, 192, 320]
    const a = normals(m * k, 1),
      b = normals(k * n, 2)
    const spec: MatmulSpec = { batch: 1, m, n, k, transA: false, transB: true }
    const [g] = await runOn(
      tf32,
      [arg("float32", a), arg("float32", b)],
      [{ dtype: "float32", size: m * n }],
      ([x, y], [z]) => tf32!.matmul(x!, y!, z!, spec),
    )
    const [r] = await runOn(
      cpu,
      [arg("float32", a), arg("float32", b)],
      [{ dtype: "float32", size: m * n }],
      ([x, y], [z]) => cpu.matmul(x!, y!, z!, spec),
    )
    expectClose("tf32 matmul", g!, r!, 5e-3)
  })

  it("gather, scatterAdd (bitwise the CPU's order), takeAlong, putAlong", async () => {
    const rows = 37,
      width = 19,
      n = 300
    const idx = ints(n, rows, 4)
    const cols = ints(n, width, 5)
    for (const dtype of allTypes) {
      const table = dtype === "int32" ? ints(rows * width, 1 << 30, 1) : normals(rows * width, 1)
      const src = dtype === "int32" ? ints(n * width, 1 << 30, 2) : normals(n * width, 2)
      const one = dtype === "int32" ? ints(n, 1000, 3) : normals(n, 3)
      const { gpu, ref } = await both(
        [arg(dtype, table), arg("int32", idx), arg(dtype, src), arg("int32", cols), arg(dtype, one)],
        [
          { dtype, size: n * width },
          { dtype, size: rows * width },
          { dtype, size: n },
          { dtype, size: n * width },
        ],
        (be, [t, i, s, c, v], [g, sa, ta, pa]) => {
          be.gather(t!, i!, g!, width)
          be.scatterAdd(i!, s!, sa!, width)
          be.takeAlong(s!, c!, ta!, width)
          be.putAlong(c!, v!, pa!, width)
        },
      )
      const names = ["gather", "scatterAdd", "takeAlong", "putAlong"]
      gpu.forEach((g, i) => {
        // bfloat16 scatterAdd rounds after every addition on the GPU; the float32 reference does not.
        if (dtype === "bfloat16" && i === 1) expectClose(`${names[i]} ${dtype}`, g, ref[i]!, 2e-2)
        else expectSame(`${names[i]} ${dtype}`, g, dtype === "bfloat16" ? roundBf16(ref[i]!) : ref[i]!)
      })
    }
  })

  it("a bad index is reported by the next read, once", async () => {
    const table = cuda!.alloc("float32", 10),
      idx = cuda!.alloc("int32", 3),
      out = cuda!.alloc("float32", 6)
    cuda!.write(table, normals(10, 1))
    cuda!.write(idx, Int32Array.from([1, 4, 7]))
    cuda!.gather(table, idx, out, 2)
    let message = ""
    await cuda!.read(out).catch((e: Error) => {
      message = e.message
    })
    expect(message).toMatch(/^cuda\.gather: index 7 at position 2 is out of range \[0, 5\)/)
    expect((await cuda!.read(out)).length).toBe(6) // the record was cleared
    expect(() => cuda!.takeAlong(out, idx, idx, 2)).toThrow(/cuda\.takeAlong: operands must have equal dtypes/)
    for (const b of [table, idx, out]) cuda!.free(b)
  })

  it("counts live and peak bytes, reuses freed blocks, and throws OutOfMemory past the device", async () => {
    const mem0 = cuda!.memory()
    cuda!.memory().resetPeak()
    const a = cuda!.alloc("float32", 1000),
      b = cuda!.alloc("bfloat16", 1000)
    expect(cuda!.memory().live - mem0.live).toBe(6000)
    cuda!.free(a)
    const c = cuda!.alloc("float32", 1000) // the freed block, from the cache
    expect(cuda!.memory().peak - mem0.live).toBe(6000)
    cuda!.free(b)
    cuda!.free(c)
    expect(cuda!.memory().live).toBe(mem0.live)
    let oom: unknown
    try {
      cuda!.alloc("float32", 2 ** 48)
    } catch (e) {
      oom = e
    }
    expect(oom).toBeInstanceOf(OutOfMemory)
    expect((oom as OutOfMemory).requested).toBe(2 ** 50)
    expect((oom as OutOfMemory).message).toMatch(/out of device memory/)
  })

  it("holds each buffer at cudaHeldBytes, the size class the planner counts", () => {
    const before = cuda!.memory().held
    const sizes = [1, 100, 129, 4096, 300_000, 5_000_000, 70_000_000]
    const bufs = sizes.map((n) => cuda!.alloc("float32", n))
    expect(cuda!.memory().held - before).toBe(sizes.reduce((s, n) => s + cudaHeldBytes(4 * n), 0))
    for (const b of bufs) cuda!.free(b)
    expect(cuda!.memory().held).toBe(before)
  })

  it("the host tier: pinned buffers that write, read, copy both ways and feed kernels in place; counted apart", async () => {
    const mem0 = cuda!.memory()
    cuda!.memory().resetPeak()
    const n = 3_000_001
    const data = normals(n, 5)
    const host = cuda!.hostAlloc!("float32", n)
    expect(host.tier).toBe("host")
    cuda!.write(host, data)
    expect(await cuda!.read(host)).toEqual(data)
    expect(cuda!.memory().hostLive - mem0.hostLive).toBe(4 * n)
    expect(cuda!.memory().live).toBe(mem0.live) // not device memory
    // device ← host, host ← device (the offload copies), and a kernel writing host memory in place
    const dev = cuda!.alloc("float32", n)
    const view = { shape: [n], strides: [1], offset: 0 }
    cuda!.copy(host, view, dev, view)
    expect(await cuda!.read(dev)).toEqual(data)
    cuda!.binary("mul", dev, dev, dev)
    const back = cuda!.hostAlloc!("float32", n)
    cuda!.copy(dev, view, back, view)
    const squared = Float32Array.from(data, (x) => x * x)
    expect(await cuda!.read(back)).toEqual(squared)
    cuda!.binary("add", back, host, back) // in place over the bus
    expect(await cuda!.read(back)).toEqual(Float32Array.from(data, (x, i) => squared[i]! + x))
    // a strided copy out of host memory (the copy kernel reading over the bus)
    const half = cuda!.alloc("float32", 1_500_000)
    cuda!.copy(host, { shape: [1_500_000], strides: [2], offset: 1 }, half, {
      shape: [1_500_000],
      strides: [1],
      offset: 0,
    })
    const odd = (await cuda!.read(half)) as Float32Array
    expect(odd[0]).toBe(data[1])
    expect(odd[1_499_999]).toBe(data[2_999_999])
    expect(cuda!.memory().hostPeak - mem0.hostLive).toBe(8 * n)
    for (const b of [host, back, dev, half]) cuda!.free(b)
    expect(cuda!.memory().hostLive).toBe(mem0.hostLive)
    expect(cuda!.memory().live).toBe(mem0.live)
    // A copy between the tiers runs on the transfer stream: freeing its source at once and
    // overwriting the reused memory must not reach the copy, nor reading its destination miss it.
    for (let round = 0; round < 4; round++) {
      const src = cuda!.alloc("float32", n)
      cuda!.write(src, data)
      const dst = cuda!.hostAlloc!("float32", n)
      cuda!.copy(src, view, dst, view)
      cuda!.free(src)
      const reuse = cuda!.alloc("float32", n) // the same size class: the block just freed
      cuda!.fill(reuse, round)
      const into = cuda!.alloc("float32", n)
      cuda!.copy(dst, view, into, view) // host → device, then a kernel reads it at once
      cuda!.binary("add", into, reuse, into)
      expect(await cuda!.read(dst)).toEqual(data)
      expect(await cuda!.read(into)).toEqual(Float32Array.from(data, (x) => x + round))
      for (const b of [dst, reuse, into]) cuda!.free(b)
    }
    // freed host blocks are reused for the same size
    const again = cuda!.hostAlloc!("float32", n)
    cuda!.write(again, data)
    expect(await cuda!.read(again)).toEqual(data)
    cuda!.free(again)
  })

  it("randomNormal makes the host's counterNormals stream (float32 within 1 ulp; bfloat16 its rounding)", async () => {
    const n = 1_000_003
    const host = counterNormals(new Float32Array(n), 12345, 7, 0.02)
    const f32 = cuda!.alloc("float32", n)
    cuda!.randomNormal!(f32, 12345, 7, 0.02)
    const got = (await cuda!.read(f32)) as Float32Array
    let differ = 0
    for (let i = 0; i < n; i++) {
      if (got[i] === host[i]) continue
      differ++
      expect(Math.abs(got[i]! - host[i]!)).toBeLessThanOrEqual(Math.abs(host[i]!) * 2 ** -23)
    }
    expect(differ).toBeLessThan(n / 1000) // libm and CUDA's double log/cos/sin round alike but for rare ties
    const b16 = cuda!.alloc("bfloat16", n)
    cuda!.randomNormal!(b16, 12345, 7, 0.02)
    const gotB = (await cuda!.read(b16)) as Float32Array
    const want = roundBf16(Array.from(got))
    expect(gotB).toEqual(want)
    cuda!.free(f32)
    cuda!.free(b16)
  })
})
