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

/** murmur3's 32-bit finaliser: a bijection that spreads every input bit over the output. */
export const mix32 = (h: number): number => {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** The 32-bit key of stream `stream` (e.g. a parameter's index) under `seed`. */
export const normalStreamKey = (seed: number, stream: number): number =>
  mix32((seed >>> 0) ^ mix32((stream + 0x9e3779b9) >>> 0))

/**
 * Seeded normals · std from a counter-based generator: pair j of a stream comes from
 * (key, j) alone, so a device computes all of them at once (CUDA's `randomNormal` kernel makes
 * this very stream) and a tensor's values do not depend on any other tensor. Box–Muller in
 * float64; the typed array rounds each value (bfloat16 weights: these float32 values rounded).
 */
export function counterNormals<A extends { length: number; [i: number]: number }>(
  out: A,
  seed: number,
  stream: number,
  std = 1,
): A {
  const key = normalStreamKey(seed, stream)
  const n = out.length
  for (let j = 0; 2 * j < n; j++) {
    const x = mix32(j ^ key)
    const u1 = (mix32(x ^ 0x68e31da4) + 1) / 4294967296
    const u2 = mix32(x ^ 0xb5297a4d) / 4294967296
    const r = Math.sqrt(-2 * Math.log(u1)) * std
    const th = 6.283185307179586 * u2
    out[2 * j] = r * Math.cos(th)
    if (2 * j + 1 < n) out[2 * j + 1] = r * Math.sin(th)
  }
  return out
}
