/**
 * Elementwise and reduction loops for float32 only. They compute exactly what the reference's
 * loops do (src/backends/cpu/cpu-backend.ts: float64 arithmetic, one rounding at the store; sums
 * in float64), so their results are bitwise the reference's. What differs is speed: the reference's
 * loops see Float32Array, Float64Array and Int32Array at one call site, so V8 compiles them for
 * all three (megamorphic element access); these only ever see Float32Array, and a broadcast
 * scalar gets its own loop instead of an index multiplied by 0.
 */
import type { BinaryOp, ReduceOp, UnaryOp } from "../../core/backend.js"

type F = Float32Array

/** out = op(x); false when op is not one of these (the caller runs the reference). */
export function unaryF32(op: UnaryOp, x: F, o: F): boolean {
  const n = o.length
  switch (op) {
    case "neg":
      for (let i = 0; i < n; i++) o[i] = -x[i]!
      return true
    case "exp":
      for (let i = 0; i < n; i++) o[i] = Math.exp(x[i]!)
      return true
    case "log":
      for (let i = 0; i < n; i++) o[i] = Math.log(x[i]!)
      return true
    case "sqrt":
      for (let i = 0; i < n; i++) o[i] = Math.sqrt(x[i]!)
      return true
    case "recip":
      for (let i = 0; i < n; i++) o[i] = 1 / x[i]!
      return true
    default:
      return false
  }
}

/** out = a op b with a and b each of out's size or one element; false when not handled here. */
export function binaryF32(op: BinaryOp, a: F, b: F, o: F): boolean {
  const n = o.length
  if (a.length === n && b.length === n) {
    switch (op) {
      case "add":
        for (let i = 0; i < n; i++) o[i] = a[i]! + b[i]!
        return true
      case "sub":
        for (let i = 0; i < n; i++) o[i] = a[i]! - b[i]!
        return true
      case "mul":
        for (let i = 0; i < n; i++) o[i] = a[i]! * b[i]!
        return true
      case "div":
        for (let i = 0; i < n; i++) o[i] = a[i]! / b[i]!
        return true
      case "maximum":
        for (let i = 0; i < n; i++) o[i] = Math.max(a[i]!, b[i]!)
        return true
      default:
        return false
    }
  }
  if (a.length === n) {
    const s = b[0]!
    switch (op) {
      case "add":
        for (let i = 0; i < n; i++) o[i] = a[i]! + s
        return true
      case "sub":
        for (let i = 0; i < n; i++) o[i] = a[i]! - s
        return true
      case "mul":
        for (let i = 0; i < n; i++) o[i] = a[i]! * s
        return true
      case "div":
        for (let i = 0; i < n; i++) o[i] = a[i]! / s
        return true
      default:
        return false
    }
  }
  if (b.length === n) {
    const s = a[0]!
    switch (op) {
      case "add":
        for (let i = 0; i < n; i++) o[i] = s + b[i]!
        return true
      case "sub":
        for (let i = 0; i < n; i++) o[i] = s - b[i]!
        return true
      case "mul":
        for (let i = 0; i < n; i++) o[i] = s * b[i]!
        return true
      case "div":
        for (let i = 0; i < n; i++) o[i] = s / b[i]!
        return true
      default:
        return false
    }
  }
  return false
}

/** The reference's sum over [outer, axis, inner] (float64 accumulation); max goes to the reference. */
export function reduceSumF32(op: ReduceOp, x: F, o: F, outer: number, axis: number, inner: number): boolean {
  if (op !== "sum") return false
  if (inner === 1) {
    for (let r = 0; r < outer; r++) {
      const base = r * axis
      let acc = 0
      for (let a = 0; a < axis; a++) acc += x[base + a]!
      o[r] = acc
    }
    return true
  }
  const acc = new Float64Array(inner)
  for (let r = 0; r < outer; r++) {
    acc.fill(0)
    for (let a = 0; a < axis; a++) {
      const base = (r * axis + a) * inner
      for (let j = 0; j < inner; j++) acc[j] = acc[j]! + x[base + j]!
    }
    o.set(acc, r * inner)
  }
  return true
}
