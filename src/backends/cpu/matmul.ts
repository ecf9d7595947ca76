/**
 * The CPU backend's matmul, twice: the definition, and the fast path the backend runs.
 *
 * Both compute the contract's `MatmulSpec` (src/core/backend.ts) on typed arrays whose sizes the
 * caller has checked: out[t] = op(a[t]) · op(b[t]), or out[t] += … with `accumulate`.
 * - `matmulNaive` is the semantics: a batched triple loop, one dot product per output element.
 *   Read it to know what matmul means; `makeCpuBackend({ matmul: "naive" })` runs it.
 * - `matmulBlocked` is the same product as a packed, register-blocked GEMM, about 5× faster in
 *   plain JS (measured on 128…512 squares). The backend uses it by default;
 *   test/cpu-matmul.test.ts checks it equals the definition (bitwise while k ≤ 256, within
 *   rounding beyond).
 */
import type { MatmulSpec } from "../../core/backend.js"

type FloatData = Float32Array | Float64Array

// ---------------------------------------------------------------------------------------------
// The definition
// ---------------------------------------------------------------------------------------------

/**
 * out[t][i][j] (+)= Σ_p op(a[t])[i][p] · op(b[t])[p][j], for every batch entry t.
 *
 * a holds [batch, m, k] ([batch, k, m] when transA), b holds [batch, k, n] ([batch, n, k] when
 * transB), out holds [batch, m, n], all row-major. The sum runs in float64 (JS numbers) from
 * p = 0 up, and is rounded to out's dtype once, when stored.
 */
export function matmulNaive(A: FloatData, B: FloatData, C: FloatData, spec: MatmulSpec): void {
  const { batch, m, n, k, transA, transB } = spec
  // k = 0 is an empty sum: out = 0, or out left as it is (not even -0 turned into +0).
  if (k === 0 && spec.accumulate) return
  for (let t = 0; t < batch; t++) {
    const a = t * m * k,
      b = t * k * n,
      c = t * m * n
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let sum = 0
        for (let p = 0; p < k; p++) {
          const aip = transA ? A[a + p * m + i]! : A[a + i * k + p]!
          const bpj = transB ? B[b + j * k + p]! : B[b + p * n + j]!
          sum += aip * bpj
        }
        const o = c + i * n + j
        C[o] = spec.accumulate ? C[o]! + sum : sum
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The fast path
// ---------------------------------------------------------------------------------------------

/*
 * The classic blocked GEMM (Goto / BLIS) shape, scaled down to what plain JS can exploit:
 * - op(b) is packed block by block (KC rows × NC cols) into NR-wide column panels, and op(a)
 *   (MC rows × KC) into MR-tall row panels, both k-major. Packing turns any transposition into
 *   stride-1 reads, and keeps the working set in cache.
 * - A 4×4 micro-kernel then keeps 16 running sums in locals (registers) over the whole k block:
 *   each step loads 4 + 4 values and does 16 multiply-adds, instead of one load/store per
 *   multiply-add of the naive i-k-j loop.
 * - Panels are always float64, whatever the dtype: measured as fast as float32 panels on V8
 *   (JS arithmetic is float64 anyway, so this saves a conversion per load) and it means a float32
 *   matmul rounds once per KC block of k, not once per multiply-add.
 * Block sizes were picked by timing 256…1024 squares; within ±20% of each other, as expected
 * when the micro-kernel rather than memory is the bottleneck.
 *
 * Against the definition: each output sums its KC-deep blocks from p = 0 up, like matmulNaive,
 * and adds each block's sum to out. So for k ≤ KC the two agree bitwise; beyond, the float64
 * sum is split at block boundaries (and a float32 out rounded once per block).
 */
const MR = 4
const NR = 4
const KC = 256
const MC = 64
const NC = 256

const roundUp = (x: number, to: number): number => Math.ceil(x / to) * to

// Packing scratch, kept between calls so a training loop does not allocate per step. One pair
// serves every backend instance: a matmul runs synchronously to the end, so none overlap.
let packA: Float64Array = new Float64Array(0)
let packB: Float64Array = new Float64Array(0)
const scratch = (have: Float64Array, need: number): Float64Array =>
  have.length >= need ? have : new Float64Array(need)

/** The same product as `matmulNaive`, as a packed, register-blocked GEMM. */
export function matmulBlocked(A: FloatData, B: FloatData, C: FloatData, spec: MatmulSpec): void {
  const { batch, m, n, k, transA, transB } = spec
  const kc = Math.min(KC, k)
  packA = scratch(packA, roundUp(Math.min(MC, m), MR) * kc)
  packB = scratch(packB, roundUp(Math.min(NC, n), NR) * kc)
  // Element (i, p) of op(a) lives at i·rsA + p·csA; element (p, j) of op(b) at p·rsB + j·csB.
  const rsA = transA ? 1 : k,
    csA = transA ? m : 1
  const rsB = transB ? 1 : n,
    csB = transB ? k : 1
  if (!spec.accumulate) C.fill(0)
  for (let t = 0; t < batch; t++) {
    gemm(A, t * m * k, rsA, csA, B, t * k * n, rsB, csB, C, t * m * n, m, n, k, packA, packB)
  }
}

/** C[cOff…] (m × n, row-major) += op(a) · op(b) for one batch entry. */
function gemm(
  A: FloatData,
  aOff: number,
  rsA: number,
  csA: number,
  B: FloatData,
  bOff: number,
  rsB: number,
  csB: number,
  C: FloatData,
  cOff: number,
  m: number,
  n: number,
  k: number,
  Ap: Float64Array,
  Bp: Float64Array,
): void {
  for (let j0 = 0; j0 < n; j0 += NC) {
    const nc = Math.min(NC, n - j0)
    for (let p0 = 0; p0 < k; p0 += KC) {
      const kc = Math.min(KC, k - p0)
      packPanels(B, bOff + p0 * rsB + j0 * csB, csB, rsB, nc, kc, NR, Bp)
      for (let i0 = 0; i0 < m; i0 += MC) {
        const mc = Math.min(MC, m - i0)
        packPanels(A, aOff + i0 * rsA + p0 * csA, rsA, csA, mc, kc, MR, Ap)
        for (let jb = 0; jb < nc; jb += NR) {
          const cols = Math.min(NR, nc - jb)
          for (let ib = 0; ib < mc; ib += MR) {
            const rows = Math.min(MR, mc - ib)
            microKernel(kc, Ap, ib * kc, Bp, jb * kc, C, cOff + (i0 + ib) * n + j0 + jb, n, rows, cols)
          }
        }
      }
    }
  }
}

/**
 * Packs a `lines × kc` block (element (l, p) at base + l·lineStride + p·kStride) into panels of
 * `w` lines, each stored k-major: panel[p·w + r] = line r at depth p. Lines past the end are
 * zero-padded so the micro-kernel never needs a bounds check.
 */
function packPanels(
  X: FloatData,
  base: number,
  lineStride: number,
  kStride: number,
  lines: number,
  kc: number,
  w: number,
  P: Float64Array,
): void {
  let o = 0
  for (let l0 = 0; l0 < lines; l0 += w) {
    const used = Math.min(w, lines - l0)
    for (let p = 0; p < kc; p++) {
      const at = base + l0 * lineStride + p * kStride
      let r = 0
      for (; r < used; r++) P[o++] = X[at + r * lineStride]!
      for (; r < w; r++) P[o++] = 0
    }
  }
}

/** C tile (rows × cols ≤ 4 × 4, at co with row stride ldc) += Ap panel · Bp panel over kc. */
function microKernel(
  kc: number,
  Ap: Float64Array,
  ao: number,
  Bp: Float64Array,
  bo: number,
  C: FloatData,
  co: number,
  ldc: number,
  rows: number,
  cols: number,
): void {
  let c00 = 0,
    c01 = 0,
    c02 = 0,
    c03 = 0,
    c10 = 0,
    c11 = 0,
    c12 = 0,
    c13 = 0
  let c20 = 0,
    c21 = 0,
    c22 = 0,
    c23 = 0,
    c30 = 0,
    c31 = 0,
    c32 = 0,
    c33 = 0
  for (let p = 0; p < kc; p++) {
    const a0 = Ap[ao]!,
      a1 = Ap[ao + 1]!,
      a2 = Ap[ao + 2]!,
      a3 = Ap[ao + 3]!
    const b0 = Bp[bo]!,
      b1 = Bp[bo + 1]!,
      b2 = Bp[bo + 2]!,
      b3 = Bp[bo + 3]!
    ao += 4
    bo += 4
    c00 += a0 * b0
    c01 += a0 * b1
    c02 += a0 * b2
    c03 += a0 * b3
    c10 += a1 * b0
    c11 += a1 * b1
    c12 += a1 * b2
    c13 += a1 * b3
    c20 += a2 * b0
    c21 += a2 * b1
    c22 += a2 * b2
    c23 += a2 * b3
    c30 += a3 * b0
    c31 += a3 * b1
    c32 += a3 * b2
    c33 += a3 * b3
  }
  if (rows === 4 && cols === 4) {
    let o = co
    C[o] = C[o]! + c00
    C[o + 1] = C[o + 1]! + c01
    C[o + 2] = C[o + 2]! + c02
    C[o + 3] = C[o + 3]! + c03
    o += ldc
    C[o] = C[o]! + c10
    C[o + 1] = C[o + 1]! + c11
    C[o + 2] = C[o + 2]! + c12
    C[o + 3] = C[o + 3]! + c13
    o += ldc
    C[o] = C[o]! + c20
    C[o + 1] = C[o + 1]! + c21
    C[o + 2] = C[o + 2]! + c22
    C[o + 3] = C[o + 3]! + c23
    o += ldc
    C[o] = C[o]! + c30
    C[o + 1] = C[o + 1]! + c31
    C[o + 2] = C[o + 2]! + c32
    C[o + 3] = C[o + 3]! + c33
    return
  }
  // Edge tile: the padded sums beyond rows/cols are zero and are simply not stored.
  const tile = [c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33]
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) C[co + r * ldc + c] = C[co + r * ldc + c]! + tile[r * 4 + c]!
  }
}
