/**
 * The fast CPU backend's WebAssembly SIMD kernels as WAT text (JS only writes out the unrolled
 * parts). scripts/build-wasm.mjs assembles it into kernels-wasm.ts. All pointers and strides are in
 * bytes; every float is float32.
 *
 * gemm(A, rsA, csA, B, rsB, csB, C, ldc, m, n, k, accumulate, Ap, Bp, T):
 *   C[i·ldc + j] (+)= Σ_p A[i·rsA + p·csA] · B[p·rsB + j·csB]   for i < m, j < n
 * It is the Goto/BLIS shape of src/backends/cpu/matmul.ts with 128-bit lanes: op(b) is packed
 * (KC × NC) into 8-wide column panels, op(a) (MC × KC) into 4-tall row panels, both k-major, and a
 * 4 × 8 micro-kernel keeps its 32 sums in eight f32x4 registers over the k block (4 splat loads,
 * 2 vector loads, 8 multiplies and 8 adds per step). Edge tiles are computed into the scratch tile
 * T and added from there. Sums run in float32 from p = 0 up, one block of KC at a time.
 *
 * Elementwise float32 kernels, four lanes at a time then a scalar tail:
 *   <op>_vv(a, b, o, n): o[i] = a[i] op b[i];  <op>_vs: o[i] = a[i] op b[0];  <op>_sv: a[0] op b[i]
 *   for op in add sub mul div max; neg / sqrt / recip (x, o, n).
 * Each is one IEEE float32 operation, correctly rounded: the same value as the reference's float64
 * operation rounded once to float32 (float64 is wide enough that the double rounding is exact).
 *
 * copy4(s, d, n0, n1, n2, n3, s0, s1, s2, s3, d0, d1, d2, d3): the strided copy of a rank-4 view
 * (byte strides; the innermost dim as four-float moves where both are contiguous, a splat where the
 * source stride is 0). A copy moves bits, so it is the reference's exactly.
 *
 * expaffine(x, o, n, scale, shift) → Σ e:  e = exp(x[i]·scale − shift) in float64, o[i] = e rounded
 * to float32, two lanes at a time; returns the float64 sum of the e. exp is e^r · 2^k with
 * k = round(x / ln 2) (by the 1.5·2^52 trick), r = x − k·ln 2 (|r| ≤ ln 2 / 2, ln 2 in two parts so k·ln2_hi is exact) and
 * e^r by its Taylor series to r^11/11! (truncation < 1e-14 relative): within a few float64 ulps
 * of Math.exp, so its float32 rounding is the reference's but for values within ~1e-15 of a
 * rounding boundary. Arguments are clamped to ±708, where e^x leaves float32's range anyway; NaN stays NaN.
 */
const MR = 4,
  NR = 8,
  KC = 256,
  MC = 64,
  NC = 512

// Byte lanes of i8x16.shuffle for 32-bit lanes: lane L of the first operand is L, of the second 4 + L.
const lanes = (...ls) => ls.flatMap((l) => [0, 1, 2, 3].map((b) => 4 * l + b)).join(" ")
const rows = [0, 1, 2, 3]
const cols = [0, 1]
const sums = rows.flatMap((r) => cols.map((c) => `$c${r}${c}`))

const micro = `
  ;; C tile (4 × 8 at $c, row stride $ldc bytes) (+)= Ap panel · Bp panel over $kc
  (func $micro (param $kc i32) (param $ap i32) (param $bp i32) (param $c i32) (param $ldc i32) (param $beta i32)
    (local $a v128) (local $b0 v128) (local $b1 v128)
    ${sums.map((s) => `(local ${s} v128)`).join(" ")}
    (block $done
      (br_if $done (i32.eqz (local.get $kc)))
      (loop $k
        (local.set $b0 (v128.load (local.get $bp)))
        (local.set $b1 (v128.load offset=16 (local.get $bp)))
        ${rows
          .map(
            (r) => `(local.set $a (v128.load32_splat offset=${4 * r} (local.get $ap)))
        ${cols.map((c) => `(local.set $c${r}${c} (f32x4.add (local.get $c${r}${c}) (f32x4.mul (local.get $a) (local.get $b${c}))))`).join("\n        ")}`,
          )
          .join("\n        ")}
        (local.set $ap (i32.add (local.get $ap) (i32.const ${4 * MR})))
        (local.set $bp (i32.add (local.get $bp) (i32.const ${4 * NR})))
        (br_if $k (local.tee $kc (i32.sub (local.get $kc) (i32.const 1))))))
    (if (local.get $beta)
      (then
        ${rows
          .map(
            (
              r,
            ) => `${cols.map((c) => `(v128.store offset=${16 * c} (local.get $c) (f32x4.add (v128.load offset=${16 * c} (local.get $c)) (local.get $c${r}${c})))`).join(" ")}
        (local.set $c (i32.add (local.get $c) (local.get $ldc)))`,
          )
          .join("\n        ")})
      (else
        ${rows
          .map(
            (r) => `${cols.map((c) => `(v128.store offset=${16 * c} (local.get $c) (local.get $c${r}${c}))`).join(" ")}
        (local.set $c (i32.add (local.get $c) (local.get $ldc)))`,
          )
          .join("\n        ")})))`

const binaryOps = { add: "add", sub: "sub", mul: "mul", div: "div", max: "max" }
// How each operand is read: a vector (v) advances, a scalar (s) is read once and splat.
const operand = (name, kind, lane) =>
  kind === "v"
    ? lane === "v128"
      ? `(v128.load (local.get $${name}))`
      : `(f32.load (local.get $${name}))`
    : lane === "v128"
      ? `(local.get $${name}4)`
      : `(local.get $${name}1)`
const advance = (names) => names.map((x) => `(local.set $${x} (i32.add (local.get $${x}) (i32.const STEP)))`).join(" ")

/** One elementwise loop: `body(lane)` is the value stored at o for lane v128 or f32. */
const elementwise = (name, params, scalars, vectors, body) => `
  (func (export "${name}") ${params.map((p) => `(param $${p} i32)`).join(" ")} (param $o i32) (param $n i32)
    ${scalars.map((x) => `(local $${x}1 f32) (local $${x}4 v128)`).join(" ")}
    ${scalars.map((x) => `(local.set $${x}1 (f32.load (local.get $${x}))) (local.set $${x}4 (f32x4.splat (local.get $${x}1)))`).join(" ")}
    (block $e4 (loop $l4
      (br_if $e4 (i32.lt_s (local.get $n) (i32.const 4)))
      (v128.store (local.get $o) ${body("v128")})
      ${advance([...vectors, "o"]).replaceAll("STEP", "16")}
      (local.set $n (i32.sub (local.get $n) (i32.const 4)))
      (br $l4)))
    (block $e1 (loop $l1
      (br_if $e1 (i32.le_s (local.get $n) (i32.const 0)))
      (f32.store (local.get $o) ${body("f32")})
      ${advance([...vectors, "o"]).replaceAll("STEP", "4")}
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $l1))))`

const binaryKernels = Object.entries(binaryOps)
  .flatMap(([name, op]) =>
    ["vv", "vs", "sv"].map((kinds) => {
      const [ka, kb] = kinds
      const scalars = [ka === "s" ? "a" : undefined, kb === "s" ? "b" : undefined].filter((x) => x !== undefined)
      const vectors = [ka === "v" ? "a" : undefined, kb === "v" ? "b" : undefined].filter((x) => x !== undefined)
      return elementwise(
        `${name}_${kinds}`,
        ["a", "b"],
        scalars,
        vectors,
        (lane) => `(${lane === "v128" ? "f32x4" : "f32"}.${op} ${operand("a", ka, lane)} ${operand("b", kb, lane)})`,
      )
    }),
  )
  .join("\n")

const taylor = Array.from({ length: 12 }, (_, k) => 1 / [...Array(k).keys()].reduce((f, i) => f * (i + 1), 1))
const MAGIC = 1.5 * 2 ** 52
const f64x2 = (x) => `(f64x2.splat (f64.const ${x}))`
/**
 * exp on the f64x2 in local $x (or $y with suffix "y"), left in the same local: clamp (pmin/pmax,
 * one instruction each, keep a NaN, which flows through as NaN); t = x·log2 e + 1.5·2^52 rounds to
 * an integer k held in t's low mantissa bits; e^r by Horner; 2^k as the bits (2^51 + k + 1023) << 52,
 * where the shift drops the magic's bits and leaves k + 1023 as the exponent.
 */
const expConstants = {
  hi: 708,
  lo: -708,
  log2e: Math.LOG2E,
  magic: MAGIC,
  ln2hi: 0.6931471803691238,
  ln2lo: 1.9082149292705877e-10,
  ...Object.fromEntries(taylor.map((c, i) => [`c${i}`, c])),
}
/** A constant as a splat in place (`splat`), or from a local set once before a loop (`hoisted`). */
const splat = (name) => f64x2(expConstants[name])
const hoisted = (name) => `(local.get $K${name})`
const hoistedLocals = Object.keys(expConstants)
  .map((n) => `(local $K${n} v128)`)
  .join(" ")
const hoistConstants = Object.keys(expConstants)
  .map((n) => `(local.set $K${n} ${splat(n)})`)
  .join(" ")
const expSteps = (x, t, k, r, p, K) => [
  `(local.set ${x} (f64x2.pmax (f64x2.pmin (local.get ${x}) ${K("hi")}) ${K("lo")}))`,
  `(local.set ${t} (f64x2.add (f64x2.mul (local.get ${x}) ${K("log2e")}) ${K("magic")}))`,
  `(local.set ${k} (f64x2.sub (local.get ${t}) ${K("magic")}))`,
  `(local.set ${r} (f64x2.sub (local.get ${x}) (f64x2.mul (local.get ${k}) ${K("ln2hi")})))`,
  `(local.set ${r} (f64x2.sub (local.get ${r}) (f64x2.mul (local.get ${k}) ${K("ln2lo")})))`,
  `(local.set ${p} ${K("c11")})`,
  ...taylor
    .slice(0, 11)
    .map((_, i) => 10 - i)
    .map((i) => `(local.set ${p} (f64x2.add (f64x2.mul (local.get ${p}) (local.get ${r})) ${K(`c${i}`)}))`),
  `(local.set ${x} (f64x2.mul (local.get ${p}) (i64x2.shl (i64x2.add (local.get ${t}) (i64x2.splat (i64.const 1023))) (i32.const 52))))`,
]

const expKernel = `
  (func $exp2 (param $x v128) (result v128)
    (local $t v128) (local $k v128) (local $r v128) (local $p v128)
    ${expSteps("$x", "$t", "$k", "$r", "$p", splat).join("\n    ")}
    (local.get $x))

  (func (export "expaffine") (param $x i32) (param $o i32) (param $n i32) (param $scale f64) (param $shift f64) (result f64)
    (local $s v128) (local $h v128) (local $acc v128) (local $e v128) (local $e2 v128) (local $v v128)
    (local $t v128) (local $k v128) (local $r v128) (local $p v128)
    (local $t2 v128) (local $k2 v128) (local $r2 v128) (local $p2 v128)
    ${hoistedLocals}
    ${hoistConstants}
    (local.set $s (f64x2.splat (local.get $scale)))
    (local.set $h (f64x2.splat (local.get $shift)))
    (block $e4 (loop $l4
      (br_if $e4 (i32.lt_s (local.get $n) (i32.const 4)))
      (local.set $v (v128.load (local.get $x)))
      (local.set $e (f64x2.sub (f64x2.mul (f64x2.promote_low_f32x4 (local.get $v)) (local.get $s)) (local.get $h)))
      (local.set $e2 (f64x2.sub (f64x2.mul (f64x2.promote_low_f32x4 (i8x16.shuffle ${lanes(2, 3, 0, 1)} (local.get $v) (local.get $v))) (local.get $s)) (local.get $h)))
      ;; two independent chains, interleaved, that the CPU can overlap
      ${(() => {
        const a = expSteps("$e", "$t", "$k", "$r", "$p", hoisted)
        const b = expSteps("$e2", "$t2", "$k2", "$r2", "$p2", hoisted)
        return a.map((line, i) => `${line}\n      ${b[i]}`).join("\n      ")
      })()}
      (local.set $acc (f64x2.add (local.get $acc) (local.get $e)))
      (local.set $acc (f64x2.add (local.get $acc) (local.get $e2)))
      (v128.store (local.get $o) (i8x16.shuffle ${lanes(0, 1, 4, 5)} (f32x4.demote_f64x2_zero (local.get $e)) (f32x4.demote_f64x2_zero (local.get $e2))))
      (local.set $x (i32.add (local.get $x) (i32.const 16)))
      (local.set $o (i32.add (local.get $o) (i32.const 16)))
      (local.set $n (i32.sub (local.get $n) (i32.const 4)))
      (br $l4)))
    (block $e2 (loop $l2
      (br_if $e2 (i32.lt_s (local.get $n) (i32.const 2)))
      (local.set $e (call $exp2 (f64x2.sub (f64x2.mul (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $x))) (local.get $s)) (local.get $h))))
      (local.set $acc (f64x2.add (local.get $acc) (local.get $e)))
      (v128.store64_lane 0 (local.get $o) (f32x4.demote_f64x2_zero (local.get $e)))
      (local.set $x (i32.add (local.get $x) (i32.const 8)))
      (local.set $o (i32.add (local.get $o) (i32.const 8)))
      (local.set $n (i32.sub (local.get $n) (i32.const 2)))
      (br $l2)))
    (if (i32.eq (local.get $n) (i32.const 1))
      (then
        (local.set $e (f64x2.replace_lane 1 (call $exp2 (f64x2.sub (f64x2.mul (f64x2.promote_low_f32x4 (v128.load32_zero (local.get $x))) (local.get $s)) (local.get $h))) (f64.const 0)))
        (local.set $acc (f64x2.add (local.get $acc) (local.get $e)))
        (v128.store32_lane 0 (local.get $o) (f32x4.demote_f64x2_zero (local.get $e)))))
    (f64.add (f64x2.extract_lane 0 (local.get $acc)) (f64x2.extract_lane 1 (local.get $acc))))`

const copyKernel = `
  (func (export "copy4") (param $s i32) (param $d i32) (param $n0 i32) (param $n1 i32) (param $n2 i32) (param $n3 i32)
      (param $s0 i32) (param $s1 i32) (param $s2 i32) (param $s3 i32) (param $d0 i32) (param $d1 i32) (param $d2 i32) (param $d3 i32)
    (local $i0 i32) (local $i1 i32) (local $i2 i32) (local $j i32) (local $sp i32) (local $dp i32) (local $v v128)
    (local.set $i0 (i32.const 0))
    (block $e0 (loop $l0 (br_if $e0 (i32.ge_s (local.get $i0) (local.get $n0)))
      (local.set $i1 (i32.const 0))
      (block $e1 (loop $l1 (br_if $e1 (i32.ge_s (local.get $i1) (local.get $n1)))
        (local.set $i2 (i32.const 0))
        (block $e2 (loop $l2 (br_if $e2 (i32.ge_s (local.get $i2) (local.get $n2)))
          (local.set $sp (i32.add (local.get $s) (i32.add (i32.mul (local.get $i0) (local.get $s0))
            (i32.add (i32.mul (local.get $i1) (local.get $s1)) (i32.mul (local.get $i2) (local.get $s2))))))
          (local.set $dp (i32.add (local.get $d) (i32.add (i32.mul (local.get $i0) (local.get $d0))
            (i32.add (i32.mul (local.get $i1) (local.get $d1)) (i32.mul (local.get $i2) (local.get $d2))))))
          (local.set $j (local.get $n3))
          (if (i32.and (i32.eq (local.get $s3) (i32.const 4)) (i32.eq (local.get $d3) (i32.const 4)))
            (then (block $ev (loop $lv (br_if $ev (i32.lt_s (local.get $j) (i32.const 4)))
              (v128.store (local.get $dp) (v128.load (local.get $sp)))
              (local.set $sp (i32.add (local.get $sp) (i32.const 16)))
              (local.set $dp (i32.add (local.get $dp) (i32.const 16)))
              (local.set $j (i32.sub (local.get $j) (i32.const 4)))
              (br $lv)))))
          (if (i32.and (i32.eqz (local.get $s3)) (i32.eq (local.get $d3) (i32.const 4)))
            (then
              (local.set $v (v128.load32_splat (local.get $sp)))
              (block $es (loop $ls (br_if $es (i32.lt_s (local.get $j) (i32.const 4)))
                (v128.store (local.get $dp) (local.get $v))
                (local.set $dp (i32.add (local.get $dp) (i32.const 16)))
                (local.set $j (i32.sub (local.get $j) (i32.const 4)))
                (br $ls)))))
          (block $et (loop $lt (br_if $et (i32.le_s (local.get $j) (i32.const 0)))
            (i32.store (local.get $dp) (i32.load (local.get $sp)))
            (local.set $sp (i32.add (local.get $sp) (local.get $s3)))
            (local.set $dp (i32.add (local.get $dp) (local.get $d3)))
            (local.set $j (i32.sub (local.get $j) (i32.const 1)))
            (br $lt)))
          (local.set $i2 (i32.add (local.get $i2) (i32.const 1)))
          (br $l2)))
        (local.set $i1 (i32.add (local.get $i1) (i32.const 1)))
        (br $l1)))
      (local.set $i0 (i32.add (local.get $i0) (i32.const 1)))
      (br $l0))))`

const unaryKernels = [
  ["neg", (x, lane) => `(${lane === "v128" ? "f32x4" : "f32"}.neg ${x})`],
  ["sqrt", (x, lane) => `(${lane === "v128" ? "f32x4" : "f32"}.sqrt ${x})`],
  [
    "recip",
    (x, lane) => (lane === "v128" ? `(f32x4.div (f32x4.splat (f32.const 1)) ${x})` : `(f32.div (f32.const 1) ${x})`),
  ],
]
  .map(([name, f]) => elementwise(name, ["a"], [], ["a"], (lane) => f(operand("a", "v", lane), lane)))
  .join("\n")

/**
 * Packs w (4 or 8) full lines whose k runs are contiguous (line r at $at + r·$ls, depth p at +4p):
 * P[p·w + r] = line r at depth p. Four depths at a time, each group of four lines transposed as a
 * 4 × 4 block in registers; the last kc mod 4 depths one float at a time.
 */
const packTransposed = (w) => {
  const groups = Array.from({ length: w / 4 }, (_, g) => g)
  const line = (r) => (r === 0 ? "(local.get $at)" : `(i32.add (local.get $at) (local.get $l${r}))`)
  const block = (g) => {
    const [a, b, c, d] = [0, 1, 2, 3].map((i) => `(v128.load ${line(4 * g + i)})`)
    return `(local.set $t0 (i8x16.shuffle ${lanes(0, 4, 1, 5)} ${a} ${b}))
        (local.set $t1 (i8x16.shuffle ${lanes(2, 6, 3, 7)} ${a} ${b}))
        (local.set $t2 (i8x16.shuffle ${lanes(0, 4, 1, 5)} ${c} ${d}))
        (local.set $t3 (i8x16.shuffle ${lanes(2, 6, 3, 7)} ${c} ${d}))
        (v128.store offset=${16 * g} (local.get $o) (i8x16.shuffle ${lanes(0, 1, 4, 5)} (local.get $t0) (local.get $t2)))
        (v128.store offset=${16 * g + 4 * w} (local.get $o) (i8x16.shuffle ${lanes(2, 3, 6, 7)} (local.get $t0) (local.get $t2)))
        (v128.store offset=${16 * g + 8 * w} (local.get $o) (i8x16.shuffle ${lanes(0, 1, 4, 5)} (local.get $t1) (local.get $t3)))
        (v128.store offset=${16 * g + 12 * w} (local.get $o) (i8x16.shuffle ${lanes(2, 3, 6, 7)} (local.get $t1) (local.get $t3)))`
  }
  const rs = Array.from({ length: w }, (_, r) => r)
  return `(func $packT${w} (param $at i32) (param $ls i32) (param $kc i32) (param $o i32)
    (local $p i32) (local $t0 v128) (local $t1 v128) (local $t2 v128) (local $t3 v128)
    ${rs
      .slice(1)
      .map((r) => `(local $l${r} i32)`)
      .join(" ")}
    ${rs
      .slice(1)
      .map((r) => `(local.set $l${r} (i32.mul (local.get $ls) (i32.const ${r})))`)
      .join(" ")}
    (block $e4 (loop $l4
      (br_if $e4 (i32.gt_s (i32.add (local.get $p) (i32.const 4)) (local.get $kc)))
      ${groups.map(block).join("\n      ")}
      (local.set $o (i32.add (local.get $o) (i32.const ${16 * w})))
      (local.set $at (i32.add (local.get $at) (i32.const 16)))
      (local.set $p (i32.add (local.get $p) (i32.const 4)))
      (br $l4)))
    (block $e1 (loop $l1
      (br_if $e1 (i32.ge_s (local.get $p) (local.get $kc)))
      ${rs.map((r) => `(f32.store offset=${4 * r} (local.get $o) (f32.load ${line(r)}))`).join(" ")}
      (local.set $o (i32.add (local.get $o) (i32.const ${4 * w})))
      (local.set $at (i32.add (local.get $at) (i32.const 4)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $l1))))`
}

export const wat = (shared) => `(module
  (import "env" "memory" (memory 1 65536 ${shared ? "shared" : ""}))
  ${micro}
  ${binaryKernels}
  ${unaryKernels}
  ${expKernel}
  ${copyKernel}

  ${packTransposed(4)}
  ${packTransposed(8)}

  ;; Packs a lines × kc block (element (l, p) at $x + l·$ls + p·$ks, bytes) into panels of $w
  ;; lines ($w = 4 or 8), each k-major: P[p·w + r] = line r at depth p; missing lines are 0.
  (func $pack (param $x i32) (param $ls i32) (param $ks i32) (param $lines i32) (param $kc i32) (param $w i32) (param $o i32)
    (local $l0 i32) (local $used i32) (local $p i32) (local $at i32) (local $r i32)
    (block $end (loop $panels
      (br_if $end (i32.ge_s (local.get $l0) (local.get $lines)))
      (local.set $used (select (local.get $w) (i32.sub (local.get $lines) (local.get $l0))
        (i32.le_s (local.get $w) (i32.sub (local.get $lines) (local.get $l0)))))
      (local.set $p (i32.const 0))
      (local.set $at (i32.add (local.get $x) (i32.mul (local.get $l0) (local.get $ls))))
      (if (i32.and (i32.eq (local.get $ks) (i32.const 4)) (i32.and (i32.ne (local.get $ls) (i32.const 4)) (i32.eq (local.get $used) (local.get $w))))
        (then
          (if (i32.eq (local.get $w) (i32.const 8))
            (then (call $packT8 (local.get $at) (local.get $ls) (local.get $kc) (local.get $o)))
            (else (call $packT4 (local.get $at) (local.get $ls) (local.get $kc) (local.get $o))))
          (local.set $o (i32.add (local.get $o) (i32.shl (i32.mul (local.get $w) (local.get $kc)) (i32.const 2)))))
        (else
      (if (i32.and (i32.eq (local.get $ls) (i32.const 4)) (i32.eq (local.get $used) (local.get $w)))
        (then
          (if (i32.eq (local.get $w) (i32.const 8))
            (then (block $e8 (loop $l8
              (br_if $e8 (i32.ge_s (local.get $p) (local.get $kc)))
              (v128.store (local.get $o) (v128.load (local.get $at)))
              (v128.store offset=16 (local.get $o) (v128.load offset=16 (local.get $at)))
              (local.set $o (i32.add (local.get $o) (i32.const 32)))
              (local.set $at (i32.add (local.get $at) (local.get $ks)))
              (local.set $p (i32.add (local.get $p) (i32.const 1)))
              (br $l8))))
            (else (block $e4 (loop $l4
              (br_if $e4 (i32.ge_s (local.get $p) (local.get $kc)))
              (v128.store (local.get $o) (v128.load (local.get $at)))
              (local.set $o (i32.add (local.get $o) (i32.const 16)))
              (local.set $at (i32.add (local.get $at) (local.get $ks)))
              (local.set $p (i32.add (local.get $p) (i32.const 1)))
              (br $l4))))))
        (else (block $eg (loop $lg
          (br_if $eg (i32.ge_s (local.get $p) (local.get $kc)))
          (local.set $r (i32.const 0))
          (block $er (loop $lr
            (br_if $er (i32.ge_s (local.get $r) (local.get $w)))
            (f32.store (local.get $o) (select
              (f32.load (i32.add (local.get $at) (i32.mul (local.get $r) (local.get $ls))))
              (f32.const 0)
              (i32.lt_s (local.get $r) (local.get $used))))
            (local.set $o (i32.add (local.get $o) (i32.const 4)))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $lr)))
          (local.set $at (i32.add (local.get $at) (local.get $ks)))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (br $lg)))))
))
      (local.set $l0 (i32.add (local.get $l0) (local.get $w)))
      (br $panels))))

  (func (export "gemm") (param $A i32) (param $rsA i32) (param $csA i32) (param $B i32) (param $rsB i32) (param $csB i32)
      (param $C i32) (param $ldc i32) (param $m i32) (param $n i32) (param $k i32) (param $acc i32)
      (param $Ap i32) (param $Bp i32) (param $T i32)
    (local $j0 i32) (local $nc i32) (local $p0 i32) (local $kc i32) (local $i0 i32) (local $mc i32)
    (local $jb i32) (local $ib i32) (local $cols i32) (local $rows i32) (local $beta i32) (local $ct i32)
    (local $r i32) (local $q i32) (local $src i32) (local $dst i32)
    (block $ej (loop $lj
      (br_if $ej (i32.ge_s (local.get $j0) (local.get $n)))
      (local.set $nc (select (i32.const ${NC}) (i32.sub (local.get $n) (local.get $j0)) (i32.le_s (i32.const ${NC}) (i32.sub (local.get $n) (local.get $j0)))))
      (local.set $p0 (i32.const 0))
      (block $ep (loop $lp
        (br_if $ep (i32.ge_s (local.get $p0) (local.get $k)))
        (local.set $kc (select (i32.const ${KC}) (i32.sub (local.get $k) (local.get $p0)) (i32.le_s (i32.const ${KC}) (i32.sub (local.get $k) (local.get $p0)))))
        (local.set $beta (i32.or (local.get $acc) (i32.ne (local.get $p0) (i32.const 0))))
        (call $pack (i32.add (local.get $B) (i32.add (i32.mul (local.get $p0) (local.get $rsB)) (i32.mul (local.get $j0) (local.get $csB))))
          (local.get $csB) (local.get $rsB) (local.get $nc) (local.get $kc) (i32.const ${NR}) (local.get $Bp))
        (local.set $i0 (i32.const 0))
        (block $ei (loop $li
          (br_if $ei (i32.ge_s (local.get $i0) (local.get $m)))
          (local.set $mc (select (i32.const ${MC}) (i32.sub (local.get $m) (local.get $i0)) (i32.le_s (i32.const ${MC}) (i32.sub (local.get $m) (local.get $i0)))))
          (call $pack (i32.add (local.get $A) (i32.add (i32.mul (local.get $i0) (local.get $rsA)) (i32.mul (local.get $p0) (local.get $csA))))
            (local.get $rsA) (local.get $csA) (local.get $mc) (local.get $kc) (i32.const ${MR}) (local.get $Ap))
          (local.set $jb (i32.const 0))
          (block $ejb (loop $ljb
            (br_if $ejb (i32.ge_s (local.get $jb) (local.get $nc)))
            (local.set $cols (select (i32.const ${NR}) (i32.sub (local.get $nc) (local.get $jb)) (i32.le_s (i32.const ${NR}) (i32.sub (local.get $nc) (local.get $jb)))))
            (local.set $ib (i32.const 0))
            (block $eib (loop $lib
              (br_if $eib (i32.ge_s (local.get $ib) (local.get $mc)))
              (local.set $rows (select (i32.const ${MR}) (i32.sub (local.get $mc) (local.get $ib)) (i32.le_s (i32.const ${MR}) (i32.sub (local.get $mc) (local.get $ib)))))
              ;; the tile's first element in C
              (local.set $ct (i32.add (local.get $C) (i32.add
                (i32.mul (i32.add (local.get $i0) (local.get $ib)) (local.get $ldc))
                (i32.shl (i32.add (local.get $j0) (local.get $jb)) (i32.const 2)))))
              (if (i32.and (i32.eq (local.get $rows) (i32.const ${MR})) (i32.eq (local.get $cols) (i32.const ${NR})))
                (then (call $micro (local.get $kc)
                  (i32.add (local.get $Ap) (i32.shl (i32.mul (local.get $ib) (local.get $kc)) (i32.const 2)))
                  (i32.add (local.get $Bp) (i32.shl (i32.mul (local.get $jb) (local.get $kc)) (i32.const 2)))
                  (local.get $ct) (local.get $ldc) (local.get $beta)))
                (else
                  (call $micro (local.get $kc)
                    (i32.add (local.get $Ap) (i32.shl (i32.mul (local.get $ib) (local.get $kc)) (i32.const 2)))
                    (i32.add (local.get $Bp) (i32.shl (i32.mul (local.get $jb) (local.get $kc)) (i32.const 2)))
                    (local.get $T) (i32.const ${4 * NR}) (i32.const 0))
                  (local.set $r (i32.const 0))
                  (block $er (loop $lr
                    (br_if $er (i32.ge_s (local.get $r) (local.get $rows)))
                    (local.set $q (i32.const 0))
                    (block $eq (loop $lq
                      (br_if $eq (i32.ge_s (local.get $q) (local.get $cols)))
                      (local.set $src (i32.add (local.get $T) (i32.shl (i32.add (i32.mul (local.get $r) (i32.const ${NR})) (local.get $q)) (i32.const 2))))
                      (local.set $dst (i32.add (local.get $ct) (i32.add (i32.mul (local.get $r) (local.get $ldc)) (i32.shl (local.get $q) (i32.const 2)))))
                      (f32.store (local.get $dst) (select
                        (f32.add (f32.load (local.get $dst)) (f32.load (local.get $src)))
                        (f32.load (local.get $src))
                        (local.get $beta)))
                      (local.set $q (i32.add (local.get $q) (i32.const 1)))
                      (br $lq)))
                    (local.set $r (i32.add (local.get $r) (i32.const 1)))
                    (br $lr)))))
              (local.set $ib (i32.add (local.get $ib) (i32.const ${MR})))
              (br $lib)))
            (local.set $jb (i32.add (local.get $jb) (i32.const ${NR})))
            (br $ljb)))
          (local.set $i0 (i32.add (local.get $i0) (i32.const ${MC})))
          (br $li)))
        (local.set $p0 (i32.add (local.get $p0) (i32.const ${KC})))
        (br $lp)))
      (local.set $j0 (i32.add (local.get $j0) (i32.const ${NC})))
      (br $lj))))
)
`

/** Scratch the gemm needs (bytes): the A block, the B block, the edge tile. */
export const gemmScratch = { ap: 4 * MC * KC, bp: 4 * NC * KC, t: 4 * MR * NR }
