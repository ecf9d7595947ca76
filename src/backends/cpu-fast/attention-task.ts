/**
 * Fused float32 attention (forward or VJP) for a range of kv-head groups, on operands in the
 * WebAssembly memory: the same computation as ./attention.ts's kernels, written so that one thread
 * can run some groups and the helper thread the others. A group is (batch b, kv head g) with every
 * query head that reads it, so the dK/dV rows a group adds into are its own: threads never write
 * the same element, and each element is the same sum in the same order whatever the split.
 *
 * `attentionTask` is self-contained (no imports, no outer names) because its source also runs in
 * the helper thread (./node-threads.ts). Its arguments are int32 words (addresses in bytes):
 */
/** Indices of the words of an attention job. */
export const TASK = {
  backward: 0,
  B: 1,
  H: 2,
  Hkv: 3,
  S: 4,
  D: 5,
  causal: 6,
  g0: 7,
  g1: 8,
  q: 9,
  k: 10,
  v: 11,
  o: 12,
  lse: 13,
  dO: 14,
  dLse: 15,
  dq: 16,
  dk: 17,
  dv: 18,
  p: 19,
  dp: 20,
  zeros: 21,
  ap: 22,
  bp: 23,
  t: 24,
  words: 25,
} as const

/**
 * Runs groups [g0, g1) of the job `w` (the words of TASK; dO or dLse 0 when absent) with the GEMM
 * `gemm` over the float32 view `f` of the memory. Queries go 64 at a time against the keys they
 * see (causal: up to the block's last query); the softmax is float64 per row, as in ./attention.ts,
 * its exp the module's `expaffine` (kernels.wat.mjs).
 */
export function attentionTask(
  f: Float32Array,
  gemm: (...args: number[]) => void,
  w: ArrayLike<number>,
  expaffine: (x: number, o: number, n: number, scale: number, shift: number) => number,
): void {
  const [H, Hkv, S, D] = [w[2]!, w[3]!, w[4]!, w[5]!]
  const causal = w[6] !== 0
  const [q, k, v, o, lse, dO, dLse, dq, dk, dv] = [
    w[9]!,
    w[10]!,
    w[11]!,
    w[12]!,
    w[13]!,
    w[14]!,
    w[15]!,
    w[16]!,
    w[17]!,
    w[18]!,
  ]
  const [pAt, dpAt, zeros, ap, bp, t] = [w[19]!, w[20]!, w[21]!, w[22]!, w[23]!, w[24]!]
  const scale = 1 / Math.sqrt(D)
  const ROWS = 64
  // C (+)= op(A)·op(B) on addresses: A m × k, B k × n, C m × n (row-major, C's stride n).
  function mm(
    a: number,
    b: number,
    c: number,
    m: number,
    n: number,
    kk: number,
    tA: boolean,
    tB: boolean,
    acc: boolean,
  ) {
    gemm(
      a,
      tA ? 4 : 4 * kk,
      tA ? 4 * m : 4,
      b,
      tB ? 4 : 4 * n,
      tB ? 4 * kk : 4,
      c,
      4 * n,
      m,
      n,
      kk,
      acc ? 1 : 0,
      ap,
      bp,
      t,
    )
  }
  for (let grp = w[7]!; grp < w[8]!; grp++) {
    const b = Math.floor(grp / Hkv),
      g = grp % Hkv
    const ko = (b * Hkv + g) * S * D // element offset of this kv head's rows
    if (w[0] !== 0) {
      f.fill(0, (dk >> 2) + ko, (dk >> 2) + ko + S * D)
      f.fill(0, (dv >> 2) + ko, (dv >> 2) + ko + S * D)
    }
    for (let h = 0; h < H; h++) {
      if (Math.floor((h * Hkv) / H) !== g) continue
      const qo = (b * H + h) * S * D,
        lo = (b * H + h) * S
      for (let i0 = 0; i0 < S; i0 += ROWS) {
        const r = Math.min(ROWS, S - i0),
          nk = causal ? i0 + r : S
        const rowsAt = 4 * (qo + i0 * D) // byte offset of the block's first query row
        const P = pAt >> 2
        mm(q + rowsAt, k + 4 * ko, pAt, r, nk, D, false, true, false)
        if (w[0] === 0) {
          for (let ii = 0; ii < r; ii++) {
            const row = P + ii * nk,
              end = causal ? i0 + ii + 1 : S
            let m = -Infinity
            for (let j = 0; j < end; j++) m = Math.max(m, f[row + j]! * scale)
            const l = expaffine(4 * row, 4 * row, end, scale, m) // e = exp(s·x − m) in place, l = Σ e
            for (let j = 0; j < end; j++) f[row + j] = f[row + j]! / l
            f.fill(0, row + end, row + nk)
            f[(lse >> 2) + lo + i0 + ii] = m + Math.log(l)
          }
          mm(pAt, v + 4 * ko, o + rowsAt, r, D, nk, false, false, false)
          continue
        }
        for (let ii = 0; ii < r; ii++) {
          const row = P + ii * nk,
            end = causal ? i0 + ii + 1 : S,
            l = f[(lse >> 2) + lo + i0 + ii]!
          expaffine(4 * row, 4 * row, end, scale, l)
          f.fill(0, row + end, row + nk)
        }
        const dOAt = dO === 0 ? zeros : dO + rowsAt
        mm(pAt, dOAt, dv + 4 * ko, nk, D, r, true, false, true)
        mm(dOAt, v + 4 * ko, dpAt, r, nk, D, false, true, false)
        const DP = dpAt >> 2
        for (let ii = 0; ii < r; ii++) {
          const i = i0 + ii
          let delta = dLse === 0 ? 0 : -f[(dLse >> 2) + lo + i]!
          const dOrow = (dOAt >> 2) + ii * D,
            orow = (o >> 2) + qo + i * D
          for (let d = 0; d < D; d++) delta += f[dOrow + d]! * f[orow + d]!
          const row = ii * nk
          for (let j = 0; j < nk; j++) f[DP + row + j] = f[P + row + j]! * (f[DP + row + j]! - delta) * scale
        }
        mm(dpAt, k + 4 * ko, dq + rowsAt, r, D, nk, false, false, false)
        mm(dpAt, q + rowsAt, dk + 4 * ko, nk, D, r, true, false, true)
      }
    }
  }
}
