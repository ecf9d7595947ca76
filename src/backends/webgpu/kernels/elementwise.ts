/**
 * One thread per output element: unary, binary, where, cast, fill, iota.
 *
 * Operands of unary/binary/where hold out's size or one element; a per-operand step (1 or 0)
 * in the parameters makes a one-element operand a scalar every thread reads.
 *
 * The contract lets `out` alias an input (the executor adds into an accumulator in place).
 * WebGPU forbids binding one buffer both read-only and writable in a dispatch, so an aliased
 * operand gets no binding of its own: the shader reads it from `out`. Each thread reads its
 * element before writing it, so the result is the same.
 */
import type { BinaryOp, UnaryOp } from "../../../core/backend.js"
import { entry, floatHelpers, paramsStruct, type Scalar, storage, WG } from "./common.js"

export interface Operand {
  readonly type: Scalar
  /** The operand is `out` itself. */
  readonly aliased: boolean
}

/**
 * A shader computing `out[i] = expr`, where `expr` names the operands x0, x1, … (already read,
 * as `type`). Parameters: n, then one step per operand.
 */
export function elementwiseWgsl(operands: readonly Operand[], out: Scalar, expr: string, helpers = ""): string {
  const steps = operands.map((_, k) => `s${k}: u32`)
  let binding = 1
  let decls = ""
  const reads = operands.map((o, k) => {
    if (o.aliased) return `  let x${k} = out[i * p.s${k}];`
    decls += storage(binding++, `in${k}`, o.type)
    return `  let x${k} = in${k}[i * p.s${k}];`
  })
  decls += storage(binding, "out", out, true)
  return (
    paramsStruct(["n: u32", ...steps]) +
    decls +
    floatHelpers +
    helpers +
    entry(`
  let i = wid * ${WG}u + li;
  if (i >= p.n) { return; }
${reads.join("\n")}
  out[i] = ${expr};`)
  )
}

/** Range reduction to [−π, π] before sin/cos: GPU sin/cos are only accurate there. */
const angleHelper = /* wgsl */ `
fn reduceAngle(x: f32) -> f32 {
  // x − k·2π with 2π split in two parts (Cody–Waite): k·HI is exact for |k| < 2^16.
  let k = round(x * 0.15915494309189535);
  return (x - k * 6.28125) - k * 0.0019353071795864769;
}
`

export function unaryWgsl(op: UnaryOp, aliased: boolean): string {
  const exprs: Record<UnaryOp, string> = {
    neg: "-x0",
    exp: "exp(x0)",
    log: "log(x0)",
    sqrt: "sqrt(x0)",
    recip: "1.0 / x0",
    sin: "sin(reduceAngle(x0))",
    cos: "cos(reduceAngle(x0))",
  }
  return elementwiseWgsl([{ type: "f32", aliased }], "f32", exprs[op], angleHelper)
}

/** Binary ops; `less`/`equal` write 1 or 0 in out's type, which may differ from the operands'. */
export function binaryWgsl(
  op: BinaryOp,
  type: "f32" | "i32",
  out: "f32" | "i32",
  aliasA: boolean,
  aliasB: boolean,
): string {
  const one = out === "f32" ? "1.0" : "1"
  const zero = out === "f32" ? "0.0" : "0"
  const float = type === "f32"
  const exprs: Record<BinaryOp, string> = {
    add: "x0 + x1",
    sub: "x0 - x1",
    mul: "x0 * x1", // i32 wraps modulo 2^32, like Math.imul
    // i32: truncates toward zero; division by zero gives 0 (as the CPU backend's store does)
    div: float ? "x0 / x1" : "select(x0 / x1, 0, x1 == 0)",
    maximum: float ? "maxNan(x0, x1)" : "max(x0, x1)",
    less: `select(${zero}, ${one}, x0 < x1)`,
    equal: `select(${zero}, ${one}, x0 == x1)`,
  }
  return elementwiseWgsl(
    [
      { type, aliased: aliasA },
      { type, aliased: aliasB },
    ],
    out,
    exprs[op],
  )
}

/**
 * out = cond ≠ 0 ? a : b. All operands are moved as raw 32-bit words (the select does not care
 * about their type); `cond` is tested on its bits, so −0.0 counts as 0 and NaN as non-zero.
 */
export function whereWgsl(condFloat: boolean, alias: readonly [boolean, boolean, boolean]): string {
  const mask = condFloat ? "0x7fffffffu" : "0xffffffffu"
  const ops = alias.map((aliased) => ({ type: "u32" as const, aliased }))
  return elementwiseWgsl(ops, "u32", `select(x2, x1, (x0 & ${mask}) != 0u)`)
}

/** float32 → int32 truncates toward zero and wraps modulo 2^32 like JS's ToInt32 (NaN, ±∞ → 0). */
const toI32Helper = /* wgsl */ `
fn toI32(x: f32) -> i32 {
  let bits = bitcast<u32>(x);
  let e = i32((bits >> 23u) & 0xffu) - 127;
  if (e < 31) { return i32(x); } // |x| < 2^31: plain truncation is in range
  // Otherwise x is the integer m·2^(e−23); keep its low 32 bits (WGSL's i32() would saturate).
  let shift = e - 23;
  if (shift >= 32) { return 0; } // ±∞, NaN, |x| ≥ 2^55: the low 32 bits are zero
  let low = ((bits & 0x7fffffu) | 0x800000u) << u32(shift);
  return bitcast<i32>(select(low, 0u - low, (bits >> 31u) == 1u));
}
`

export function castWgsl(from: "f32" | "i32", to: "f32" | "i32"): string {
  const expr = from === to ? "x0" : to === "i32" ? "toI32(x0)" : "f32(x0)"
  return elementwiseWgsl([{ type: from, aliased: false }], to, expr, toI32Helper)
}

/** Parameters: n, the value's bit pattern. */
export const fillWgsl = (): string =>
  paramsStruct(["n: u32", "bits: u32"]) +
  storage(1, "out", "u32", true) +
  entry(`
  let i = wid * ${WG}u + li;
  if (i < p.n) { out[i] = p.bits; }`)

/** Parameters: n, len, inner: viewed as [outer, len, inner], the value is the middle index. */
export const iotaWgsl = (type: "f32" | "i32"): string =>
  paramsStruct(["n: u32", "len: u32", "inner: u32"]) +
  storage(1, "out", type, true) +
  entry(`
  let i = wid * ${WG}u + li;
  if (i < p.n) { out[i] = ${type}((i / p.inner) % p.len); }`)
