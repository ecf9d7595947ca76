/**
 * The CPU backend's fast matmul (`matmulBlocked`) against its definition (`matmulNaive`), both
 * from src/backends/cpu/matmul.ts: random batch/m/n/k including 0 and 1, both transposes,
 * accumulate, float32 and float64.
 *
 * The two sum the same products in float64 from p = 0 up; the blocked path only splits the sum
 * at every KC = 256 of k (adding each block's sum to out, which rounds a float32 out once per
 * block). Hence:
 * - k ≤ 256: the same operations in the same order, so the results agree bitwise.
 * - any k: they agree within rounding, measured against scale = |out₀| + Σ_p |op(a)_ip·op(b)_pj|
 *   (what a sum's rounding error is proportional to; a plain relative error would be unbounded
 *   where terms cancel):
 *   float64: each side is within γ ≈ (terms added)·2⁻⁵³ of the exact sum, and a side adds at
 *   most k + ⌈k/256⌉ + 1 terms, so |fast − naive| ≤ 2·(k + ⌈k/256⌉ + 2)·2⁻⁵³·scale. For the
 *   k ≤ 700 drawn here that is ≤ 1.6e-13·scale, inside the ~1e-12 relative asked of float64.
 *   float32: inputs are exact in float64; the naive side rounds to float32 once, the blocked one
 *   once per 256-deep block, each within 2⁻²⁴ of a partial sum ≤ scale, so the bound is
 *   (2 + ⌈k/256⌉)·2⁻²⁴·scale (the float64 sums' error is far below that).
 */
import { describe, it, expect } from "vitest"
import fc from "fast-check"
import type { MatmulSpec } from "../src/core/backend.js"
import { makeCpuBackend } from "../src/backends/cpu/index.js"
import { matmulBlocked, matmulNaive } from "../src/backends/cpu/matmul.js"
import { propertyRuns } from "./helpers.js"

const numRuns = propertyRuns(100)
type Float = "float32" | "float64"
type FloatArray = Float32Array | Float64Array

/** Deterministic values in [-2, 2) (mulberry32), so a failure reproduces from its seed. */
function randomArray(dtype: Float, n: number, seed: number): FloatArray {
  let t = seed >>> 0
  const out = dtype === "float32" ? new Float32Array(n) : new Float64Array(n)
  for (let i = 0; i < n; i++) {
    t = (t + 0x6d2b79f5) >>> 0
    let r = Math.imul(t ^ (t >>> 15), 1 | t)
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r
    out[i] = (((r ^ (r >>> 14)) >>> 0) / 4294967296) * 4 - 2
  }
  return out
}

interface Case {
  readonly spec: MatmulSpec
  readonly dtype: Float
  readonly seed: number
}

/** Runs both paths on the same operands and the same starting out; returns both outs. */
function runBoth({ spec, dtype, seed }: Case) {
  const { batch, m, n, k } = spec
  const a = randomArray(dtype, batch * m * k, seed)
  const b = randomArray(dtype, batch * k * n, seed + 1)
  // Stale contents: overwritten without accumulate, added to with it.
  const out0 = randomArray(dtype, batch * m * n, seed + 2)
  if (out0.length > 0) out0[0] = -0 // the sign of zero survives an accumulate of nothing
  const fast = out0.slice(),
    naive = out0.slice()
  matmulBlocked(a, b, fast, spec)
  matmulNaive(a, b, naive, spec)
  return { a, b, out0, fast, naive }
}

const bits = (x: FloatArray): Uint8Array => new Uint8Array(x.buffer, x.byteOffset, x.byteLength)

/** |fast − naive| ≤ tol · scale elementwise, with the bound explained at the top. */
function expectWithinBound(c: Case): void {
  const { spec, dtype } = c
  const { a, b, out0, fast, naive } = runBoth(c)
  // scale = |out₀| (when accumulating) + Σ_p |a|·|b|, computed by the definition itself.
  const scale = Float64Array.from(out0, Math.abs)
  matmulNaive(Float64Array.from(a, Math.abs), Float64Array.from(b, Math.abs), scale, spec)
  const blocks = Math.ceil(spec.k / 256)
  const tol = dtype === "float32" ? (2 + blocks) * 2 ** -24 : 2 * (spec.k + blocks + 2) * 2 ** -53
  for (let i = 0; i < fast.length; i++) {
    const err = Math.abs(fast[i]! - naive[i]!)
    if (!(err <= tol * scale[i]!))
      expect.fail(`out[${i}]: fast ${fast[i]} naive ${naive[i]} differ by ${err} > ${tol} × ${scale[i]}`)
  }
}

const specOf = (maxMn: number, maxK: number) =>
  fc.record({
    batch: fc.integer({ min: 0, max: 3 }),
    m: fc.integer({ min: 0, max: maxMn }),
    n: fc.integer({ min: 0, max: maxMn }),
    k: fc.integer({ min: 0, max: maxK }),
    transA: fc.boolean(),
    transB: fc.boolean(),
    accumulate: fc.boolean(),
  })
const caseOf = (maxMn: number, maxK: number): fc.Arbitrary<Case> =>
  fc.record({ spec: specOf(maxMn, maxK), dtype: fc.constantFrom<Float>("float32", "float64"), seed: fc.nat() })

/** Degenerate sizes fast-check may or may not draw: every 0 and 1, each flag combination. */
const edgeExamples: [Case][] = []
for (const [batch, m, n, k] of [
  [0, 2, 2, 2],
  [1, 0, 3, 2],
  [1, 3, 0, 2],
  [2, 3, 2, 0],
  [1, 1, 1, 1],
  [2, 1, 5, 1],
  [1, 5, 1, 3],
] as const) {
  for (const dtype of ["float32", "float64"] as const) {
    for (const accumulate of [false, true]) {
      edgeExamples.push([
        {
          spec: { batch, m, n, k, transA: accumulate, transB: !accumulate, accumulate },
          dtype,
          seed: batch + m + n + k,
        },
      ])
    }
  }
}

describe("CPU matmul: the fast path equals the definition", () => {
  it("bitwise for k ≤ 256 (property)", () => {
    fc.assert(
      fc.property(caseOf(40, 256), (c) => {
        const { fast, naive } = runBoth(c)
        expect(bits(fast)).toEqual(bits(naive))
      }),
      { numRuns, examples: edgeExamples },
    )
  })

  it("within the rounding bound for k up to 700, across 256-deep blocks (property)", () => {
    fc.assert(fc.property(caseOf(9, 700), expectWithinBound), { numRuns, examples: edgeExamples })
  })

  it("across every block edge (m > 64, n > 256, k = 256; n > 256, k = 513), batched, accumulating", () => {
    for (const dtype of ["float32", "float64"] as const) {
      for (const [transA, transB] of [
        [false, false],
        [false, true],
        [true, false],
        [true, true],
      ] as const) {
        const spec = { batch: 2, m: 67, n: 260, k: 256, transA, transB, accumulate: true }
        const { fast, naive } = runBoth({ spec, dtype, seed: 7 })
        expect(bits(fast)).toEqual(bits(naive))
        expectWithinBound({ spec: { ...spec, batch: 1, m: 9, k: 513 }, dtype, seed: 8 })
      }
    }
  })
})

describe("makeCpuBackend({ matmul })", () => {
  it("runs the naive definition when asked, with the same argument checks", async () => {
    const spec = { batch: 1, m: 2, n: 2, k: 3, transA: false, transB: false }
    for (const matmul of ["naive", "blocked"] as const) {
      const backend = makeCpuBackend({ matmul })
      const a = backend.alloc("float64", 6),
        b = backend.alloc("float64", 6),
        out = backend.alloc("float64", 4)
      backend.write(a, Float64Array.of(1, 2, 3, 4, 5, 6))
      backend.write(b, Float64Array.of(7, 8, 9, 10, 11, 12))
      backend.matmul(a, b, out, spec)
      expect(Array.from(await backend.read(out))).toEqual([58, 64, 139, 154])
      backend.matmul(a, b, out, { ...spec, accumulate: true })
      expect(Array.from(await backend.read(out))).toEqual([116, 128, 278, 308])
      expect(() => backend.matmul(a, b, backend.alloc("float64", 5), spec)).toThrow(/matmul/)
    }
  })
})
