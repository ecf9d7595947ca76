import { type HostArray, hostArray } from "./dtype.js"
import type { TensorType } from "./graph.js"

/** A small seeded PRNG (mulberry32), so data, initialisation and tests are reproducible. */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Standard normal samples (Box–Muller), written into `out` (a typed array: fine for a billion). */
export function fillNormal<A extends { length: number; [i: number]: number }>(
  random: () => number,
  out: A,
  std = 1,
): A {
  const n = out.length
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(random(), 1e-12)
    const r = Math.sqrt(-2 * Math.log(u)) * std
    const th = 2 * Math.PI * random()
    out[i] = r * Math.cos(th)
    if (i + 1 < n) out[i + 1] = r * Math.sin(th)
  }
  return out
}

export const normal = (random: () => number, n: number, std = 1): number[] =>
  fillNormal(random, new Array<number>(n), std)

/** Seeded data for a tensor: normals · std for floats, integers in [0, intBelow) for int32. */
export function randomFill(t: TensorType, seed: number, intBelow = 2, std = 0.1): HostArray {
  const random = rng(seed)
  const a = hostArray(
    t.dtype,
    t.shape.reduce((x, y) => x * y, 1),
  )
  if (t.dtype === "int32") for (let i = 0; i < a.length; i++) a[i] = Math.floor(random() * intBelow)
  else fillNormal(random, a, std)
  return a
}
