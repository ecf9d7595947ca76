/**
 * Fused causal flash attention for WebGPU, forward and backward, float32. Each kernel must agree
 * with the reference body in core/routines/attention.ts (the conformance suite compares them).
 *
 * q [B, H, S, D]; k, v [B, Hkv, S, D] (grouped-query: query head h reads kv head h / (H/Hkv));
 * key j is visible to query i iff j ≤ i; scale = 1/√D.
 *
 * Thread layout, shared by every kernel: a workgroup of T = 64 threads covers ROWS = 64/TPR rows
 * (query rows, or key rows for dK/dV), TPR ("threads per row", 1, 2, 4 or 8) threads per row.
 * Thread (r, t) keeps the row's elements d = t, t + TPR, t + 2·TPR, … in registers (DS = ⌈D/TPR⌉
 * ≤ 64 of them), so registers stay bounded as D grows to 512. A dot product of two rows is
 * summed by the TPR threads of the row through workgroup memory (`part`), each thread adding the
 * TPR partials in the same order, so the threads of a row agree bit for bit on every score.
 * The other operand of each product (a tile of keys, values, queries or output gradients) is
 * staged in workgroup memory, sized so that everything fits 16 KiB (WebGPU's compatibility
 * default): tile lengths shrink as D grows (see `attentionTiles`).
 *
 * - forward: one workgroup per (b·h, block of ROWS queries). It walks the key blocks that hold
 *   a key ≤ the block's last query (the blocks above the diagonal are never loaded), with an
 *   online softmax (running max m, running Σ l, accumulator in registers), and writes o and
 *   lse = m + log l.
 * - backward, three dispatches, no atomics (deterministic):
 *   1. delta[b, h, i] = Σ_d dO·o (− dLse when lse has a cotangent), one thread per row, into a
 *      scratch buffer;
 *   2. dQ: one workgroup per (b·h, block of ROWS queries), over the same key blocks as forward,
 *      recomputing P = exp(s − lse) and dS = P ⊙ (dP − delta);
 *   3. dK, dV: one workgroup per (b·kv-head, block of ROWS keys), looping over the H/Hkv query
 *      heads of the kv head and, for each, over the query blocks that hold a query ≥ the first
 *      key of the block (blocks entirely below the diagonal are skipped). The GQA sum over the
 *      heads of a group happens in registers, in a fixed order, with no scratch.
 */
import type { BackendImpl, Buffer } from "../../../core/backend.js"
import type { RoutineKernels } from "../../../core/routines/registry.js"
import { entry, f32Bits, paramsStruct, type RunKernel, storage } from "./common.js"

/** Threads per workgroup of every attention kernel. */
const T = 64
/** Workgroup memory each kernel may use, in floats (16 KiB: the compatibility-mode minimum). */
const SHARED_FLOATS = 4096
/** Longest tile (registers of the per-thread score arrays). */
const MAX_TILE = 32
/** The widest head the kernels take (TPR = 8 threads of 64 elements per row). */
export const MAX_HEAD_DIM = 512

export interface AttentionTiles {
  /** Threads per row and elements per thread. */
  readonly tpr: number
  readonly ds: number
  /** Rows (queries, or keys for dK/dV) per workgroup: T / tpr. */
  readonly rows: number
  /** Keys per tile of the forward kernel. */
  readonly fwdKeys: number
  /** Keys per tile of the dQ kernel. */
  readonly dqKeys: number
  /** Queries per tile of the dK/dV kernel. */
  readonly dkvQueries: number
}

/** The tile shapes for head width D (1 ≤ D ≤ MAX_HEAD_DIM). */
export function attentionTiles(D: number): AttentionTiles {
  let tpr = 1
  while (tpr * 64 < D) tpr *= 2
  const fit = (floats: number) => Math.max(1, Math.min(MAX_TILE, Math.floor(SHARED_FLOATS / floats)))
  return {
    tpr,
    ds: Math.ceil(D / tpr),
    rows: T / tpr,
    fwdKeys: fit(D + T), // a k-or-v tile + partial scores
    dqKeys: fit(2 * D + 2 * T), // k and v tiles + partial scores and partial dP
    dkvQueries: fit(2 * D + 2 * T + 2), // q and dO tiles + partials + lse and delta
  }
}

/**
 * `tile` is the kernel's tile length (BK or BQ) again, as a uniform: loops over a tile's rows run
 * to it, so compilers cannot unroll them (Mesa's GL compiler would take minutes to unroll 32 × 32
 * nested loops); the loops over a thread's D-slice keep constant bounds and their registers.
 */
const PARAMS = ["S: u32", "H: u32", "Hkv: u32", "blocks: u32", "groups: u32", "scale: f32", "tile: u32"]

/** Helpers of every kernel: a loop over this thread's elements of a row, and tile loads. */
function common(
  D: number,
  t: AttentionTiles,
): {
  forD: (body: string) => string
  load: (tile: string, src: string, base: string, n: string, len: number) => string
  header: string
} {
  const ragged = t.tpr * t.ds !== D
  const forD = (body: string) =>
    `for (var e = 0u; e < ${t.ds}u; e++) { let d = t + ${t.tpr}u * e;${ragged ? ` if (d >= ${D}u) { break; }` : ""} ${body} }`
  // Zero-fills the tile past n, so rows past S hold zeros (masked anyway, but never garbage).
  const load = (tile: string, src: string, base: string, n: string, len: number) =>
    `for (var x = li; x < ${len}u; x += ${T}u) { var val = 0.0; if (x < ${n}) { val = ${src}[${base} + x]; } ${tile}[x] = val; }`
  const header = `const D = ${D}u;\nconst TPR = ${t.tpr}u;\nconst ROWS = ${t.rows}u;\nconst LOW = -3.0e38; // below any score: exp(LOW − m) = 0\n`
  return { forD, load, header }
}

/** Bindings: q, k, v, o (out), lse (out). Workgroups: B·H·blocks, blocks = ⌈S / ROWS⌉. */
export function attentionForwardWgsl(D: number): string {
  const tl = attentionTiles(D)
  const { forD, load, header } = common(D, tl)
  const BK = tl.fwdKeys
  return (
    paramsStruct(PARAMS) +
    storage(1, "q", "f32") +
    storage(2, "k", "f32") +
    storage(3, "v", "f32") +
    storage(4, "o", "f32", true) +
    storage(5, "lse", "f32", true) +
    header +
    `
const BK = ${BK}u;
var<workgroup> tile: array<f32, ${BK * D}>;
var<workgroup> part: array<f32, ${T * BK}>;
` +
    entry(
      `
  if (wid >= p.groups) { return; } // uniform per workgroup
  let bh = wid / p.blocks;
  let blk = wid % p.blocks;
  let h = bh % p.H;
  let kvBase = ((bh / p.H) * p.Hkv + h / (p.H / p.Hkv)) * p.S * D;
  let r = li / TPR;
  let t = li % TPR;
  let i = blk * ROWS + r;
  let valid = i < p.S;
  let row = bh * p.S + i;
  var qr: array<f32, ${tl.ds}>;
  if (valid) { ${forD("qr[e] = q[row * D + d];")} }
  var acc: array<f32, ${tl.ds}>;
  var s: array<f32, ${BK}>;
  var m = LOW;
  var l = 0.0;
  // Key blocks holding a key ≤ the block's last query; the ones above the diagonal are skipped.
  let nKb = (min(blk * ROWS + ROWS, p.S) - 1u) / BK + 1u;
  for (var kb = 0u; kb < nKb; kb++) {
    let k0 = kb * BK;
    let n = min(BK, p.S - k0) * D;
    ${load("tile", "k", "kvBase + k0 * D", "n", BK * D)}
    workgroupBarrier();
    for (var j = 0u; j < p.tile; j++) {
      var dot = 0.0;
      ${forD("dot += qr[e] * tile[j * D + d];")}
      part[li * BK + j] = dot;
    }
    workgroupBarrier(); // partials written; every read of the k tile is done
    var bmax = LOW;
    for (var j = 0u; j < p.tile; j++) {
      var x = 0.0;
      for (var u = 0u; u < TPR; u++) { x += part[(r * TPR + u) * BK + j]; }
      s[j] = x * p.scale;
      if (k0 + j <= i && k0 + j < p.S) { bmax = max(bmax, s[j]); }
    }
    let mNew = max(m, bmax);
    let alpha = exp(m - mNew);
    var psum = 0.0;
    for (var j = 0u; j < p.tile; j++) {
      var pj = 0.0;
      if (k0 + j <= i && k0 + j < p.S) { pj = exp(s[j] - mNew); }
      s[j] = pj;
      psum += pj;
    }
    l = l * alpha + psum;
    m = mNew;
    ${forD("acc[e] *= alpha;")}
    ${load("tile", "v", "kvBase + k0 * D", "n", BK * D)}
    workgroupBarrier();
    for (var j = 0u; j < p.tile; j++) {
      let pj = s[j];
      ${forD("acc[e] += pj * tile[j * D + d];")}
    }
    workgroupBarrier(); // before the next block overwrites tile and part
  }
  if (valid) {
    ${forD("o[row * D + d] = acc[e] / l;")}
    if (t == 0u) { lse[row] = m + log(l); }
  }`,
      T,
    )
  )
}

/** Parameters: rows, width. Bindings: o, dO, [dLse], delta (out). One thread per row. */
export const attentionDeltaWgsl = (withDlse: boolean): string =>
  paramsStruct(["rows: u32", "width: u32"]) +
  storage(1, "o", "f32") +
  storage(2, "g", "f32") +
  (withDlse ? storage(3, "dlse", "f32") : "") +
  storage(withDlse ? 4 : 3, "delta", "f32", true) +
  entry(
    `
  let row = wid * ${T}u + li;
  if (row >= p.rows) { return; }
  let base = row * p.width;
  var s = 0.0;
  for (var d = 0u; d < p.width; d++) { s += g[base + d] * o[base + d]; }
  ${withDlse ? "s -= dlse[row];" : ""}
  delta[row] = s;`,
    T,
  )

/** Bindings: q, k, v, dO, lse, delta, dq (out). Workgroups: B·H·blocks, blocks = ⌈S / ROWS⌉. */
export function attentionDqWgsl(D: number): string {
  const tl = attentionTiles(D)
  const { forD, load, header } = common(D, tl)
  const BK = tl.dqKeys
  return (
    paramsStruct(PARAMS) +
    storage(1, "q", "f32") +
    storage(2, "k", "f32") +
    storage(3, "v", "f32") +
    storage(4, "g", "f32") +
    storage(5, "lse", "f32") +
    storage(6, "delta", "f32") +
    storage(7, "dq", "f32", true) +
    header +
    `
const BK = ${BK}u;
var<workgroup> kt: array<f32, ${BK * D}>;
var<workgroup> vt: array<f32, ${BK * D}>;
var<workgroup> part: array<f32, ${T * BK}>;
var<workgroup> partd: array<f32, ${T * BK}>;
` +
    entry(
      `
  if (wid >= p.groups) { return; }
  let bh = wid / p.blocks;
  let blk = wid % p.blocks;
  let h = bh % p.H;
  let kvBase = ((bh / p.H) * p.Hkv + h / (p.H / p.Hkv)) * p.S * D;
  let r = li / TPR;
  let t = li % TPR;
  let i = blk * ROWS + r;
  let valid = i < p.S;
  let row = bh * p.S + i;
  var qr: array<f32, ${tl.ds}>;
  var gr: array<f32, ${tl.ds}>;
  var acc: array<f32, ${tl.ds}>;
  var lseI = 0.0;
  var deltaI = 0.0;
  if (valid) {
    ${forD("qr[e] = q[row * D + d]; gr[e] = g[row * D + d];")}
    lseI = lse[row];
    deltaI = delta[row];
  }
  var ds: array<f32, ${BK}>;
  let nKb = (min(blk * ROWS + ROWS, p.S) - 1u) / BK + 1u;
  for (var kb = 0u; kb < nKb; kb++) {
    let k0 = kb * BK;
    let n = min(BK, p.S - k0) * D;
    ${load("kt", "k", "kvBase + k0 * D", "n", BK * D)}
    ${load("vt", "v", "kvBase + k0 * D", "n", BK * D)}
    workgroupBarrier();
    for (var j = 0u; j < p.tile; j++) {
      var dot = 0.0;
      var dotd = 0.0;
      ${forD("dot += qr[e] * kt[j * D + d]; dotd += gr[e] * vt[j * D + d];")}
      part[li * BK + j] = dot;
      partd[li * BK + j] = dotd;
    }
    workgroupBarrier();
    for (var j = 0u; j < p.tile; j++) {
      var x = 0.0;
      var y = 0.0;
      for (var u = 0u; u < TPR; u++) { x += part[(r * TPR + u) * BK + j]; y += partd[(r * TPR + u) * BK + j]; }
      var dsj = 0.0;
      if (k0 + j <= i && k0 + j < p.S) { dsj = exp(x * p.scale - lseI) * (y - deltaI); }
      ds[j] = dsj;
    }
    for (var j = 0u; j < p.tile; j++) {
      let dsj = ds[j];
      ${forD("acc[e] += dsj * kt[j * D + d];")}
    }
    workgroupBarrier();
  }
  if (valid) { ${forD("dq[row * D + d] = acc[e] * p.scale;")} }`,
      T,
    )
  )
}

/**
 * Bindings: q, k, v, dO, lse, delta, dk (out), dv (out). Workgroups: B·Hkv·blocks, blocks =
 * ⌈S / ROWS⌉ key blocks.
 */
export function attentionDkvWgsl(D: number): string {
  const tl = attentionTiles(D)
  const { forD, load, header } = common(D, tl)
  const BQ = tl.dkvQueries
  return (
    paramsStruct(PARAMS) +
    storage(1, "q", "f32") +
    storage(2, "k", "f32") +
    storage(3, "v", "f32") +
    storage(4, "g", "f32") +
    storage(5, "lse", "f32") +
    storage(6, "delta", "f32") +
    storage(7, "dkOut", "f32", true) +
    storage(8, "dvOut", "f32", true) +
    header +
    `
const BQ = ${BQ}u;
var<workgroup> qt: array<f32, ${BQ * D}>;
var<workgroup> gt: array<f32, ${BQ * D}>;
var<workgroup> lt: array<f32, ${BQ}>;
var<workgroup> dt: array<f32, ${BQ}>;
var<workgroup> part: array<f32, ${T * BQ}>;
var<workgroup> partd: array<f32, ${T * BQ}>;
` +
    entry(
      `
  if (wid >= p.groups) { return; }
  let bkv = wid / p.blocks; // b·Hkv + kv head
  let blk = wid % p.blocks;
  let b = bkv / p.Hkv;
  let group = p.H / p.Hkv;
  let h0 = (bkv % p.Hkv) * group; // the first query head reading this kv head
  let r = li / TPR;
  let t = li % TPR;
  let j = blk * ROWS + r; // this row's key
  let valid = j < p.S;
  let krow = bkv * p.S + j;
  var kr: array<f32, ${tl.ds}>;
  var vr: array<f32, ${tl.ds}>;
  if (valid) { ${forD("kr[e] = k[krow * D + d]; vr[e] = v[krow * D + d];")} }
  var dk: array<f32, ${tl.ds}>;
  var dv: array<f32, ${tl.ds}>;
  var pp: array<f32, ${BQ}>;
  var dsv: array<f32, ${BQ}>;
  // Query blocks holding a query ≥ the block's first key; the ones below the diagonal are skipped.
  let qbStart = (blk * ROWS) / BQ;
  let nQb = (p.S + BQ - 1u) / BQ;
  for (var hg = 0u; hg < group; hg++) {
    let bh = b * p.H + h0 + hg;
    for (var qb = qbStart; qb < nQb; qb++) {
      let q0 = qb * BQ;
      let nq = min(BQ, p.S - q0);
      let base = (bh * p.S + q0) * D;
      ${load("qt", "q", "base", "nq * D", BQ * D)}
      ${load("gt", "g", "base", "nq * D", BQ * D)}
      if (li < BQ) {
        var lv = 0.0;
        var dl = 0.0;
        if (li < nq) { lv = lse[bh * p.S + q0 + li]; dl = delta[bh * p.S + q0 + li]; }
        lt[li] = lv;
        dt[li] = dl;
      }
      workgroupBarrier();
      for (var ii = 0u; ii < p.tile; ii++) {
        var dot = 0.0;
        var dotd = 0.0;
        ${forD("dot += kr[e] * qt[ii * D + d]; dotd += vr[e] * gt[ii * D + d];")}
        part[li * BQ + ii] = dot;
        partd[li * BQ + ii] = dotd;
      }
      workgroupBarrier();
      for (var ii = 0u; ii < p.tile; ii++) {
        var x = 0.0;
        var y = 0.0;
        for (var u = 0u; u < TPR; u++) { x += part[(r * TPR + u) * BQ + ii]; y += partd[(r * TPR + u) * BQ + ii]; }
        let qi = q0 + ii;
        var pv = 0.0;
        var dsi = 0.0;
        if (j <= qi && qi < p.S) {
          pv = exp(x * p.scale - lt[ii]);
          dsi = pv * (y - dt[ii]);
        }
        pp[ii] = pv;
        dsv[ii] = dsi;
      }
      for (var ii = 0u; ii < p.tile; ii++) {
        let pv = pp[ii];
        let dsi = dsv[ii];
        ${forD("dv[e] += pv * gt[ii * D + d]; dk[e] += dsi * qt[ii * D + d];")}
      }
      workgroupBarrier(); // before the next block overwrites the tiles
    }
  }
  if (valid) { ${forD("dkOut[krow * D + d] = dk[e] * p.scale; dvOut[krow * D + d] = dv[e];")} }`,
      T,
    )
  )
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

export type Bind = (b: Buffer) => { readonly buffer: GPUBuffer; readonly bytes: number }
/** What the backward pass needs for its scratch buffers (delta, and zeros for a missing dO). */
export type Scratch = Pick<BackendImpl, "alloc" | "free" | "fill">

/** Whether the device can run these kernels: 8 storage buffers, 16 KiB of workgroup memory, 64 threads. */
export function attentionFits(
  limits: Pick<
    GPUSupportedLimits,
    | "maxStorageBuffersPerShaderStage"
    | "maxComputeWorkgroupStorageSize"
    | "maxComputeInvocationsPerWorkgroup"
    | "maxComputeWorkgroupSizeX"
  >,
): boolean {
  return (
    limits.maxStorageBuffersPerShaderStage >= 8 &&
    limits.maxComputeWorkgroupStorageSize >= SHARED_FLOATS * 4 &&
    limits.maxComputeInvocationsPerWorkgroup >= T &&
    limits.maxComputeWorkgroupSizeX >= T
  )
}

interface Dims {
  readonly B: number
  readonly H: number
  readonly Hkv: number
  readonly S: number
  readonly D: number
}

/** B, H, Hkv, S, D from q's and k's shapes (the contract checked the buffers hold them). */
type Shape = readonly number[]

function dimsOf(name: string, q: Shape, k: Shape, v: Shape, causal: boolean): Dims {
  if (q.length !== 4 || k.length !== 4 || v.length !== 4) {
    throw new Error(`webgpu.${name}: expects q [B, H, S, D] and k, v [B, Hkv, S, D]`)
  }
  const [B, H, S, D] = q as [number, number, number, number]
  const Hkv = k[1]!
  if (k[0] !== B || k[2] !== S || k[3] !== D || k.some((n, i) => n !== v[i]) || Hkv === 0 || H % Hkv !== 0) {
    throw new Error(`webgpu.${name}: q [${q}] does not match k [${k}] and v [${v}]`)
  }
  if (!causal) throw new Error(`webgpu.${name}: only causal attention is fused`)
  if (D < 1 || D > MAX_HEAD_DIM) throw new Error(`webgpu.${name}: head width ${D} is outside 1..${MAX_HEAD_DIM}`)
  return { B, H, Hkv, S, D }
}

function float32(name: string, ...bufs: (Buffer | undefined)[]): void {
  for (const b of bufs) {
    if (b !== undefined && b.dtype !== "float32") {
      throw new Error(`webgpu.${name}: float32 only, got ${b.dtype}`)
    }
  }
}

/** The fused "attention" and "attention.vjp" routines. */
export function attentionRoutines(run: RunKernel, bind: Bind, scratch: Scratch): RoutineKernels {
  const paramsFor = ({ H, Hkv, S, D }: Dims, blocks: number, groups: number, tile: number) => [
    S,
    H,
    Hkv,
    blocks,
    groups,
    f32Bits(1 / Math.sqrt(D)),
    tile,
  ]

  return {
    attention({ inputs: { q, k, v }, outputs: { o, lse }, shapes: { inputs: s }, attrs }) {
      const dims = dimsOf("attention", s.q, s.k, s.v, attrs.causal)
      const { B, H, S, D } = dims
      float32("attention", q, k, v, o, lse)
      const tiles = attentionTiles(D)
      const blocks = Math.ceil(S / tiles.rows)
      const groups = B * H * blocks
      run(
        `attention:${D}`,
        () => attentionForwardWgsl(D),
        paramsFor(dims, blocks, groups, tiles.fwdKeys),
        [bind(q), bind(k), bind(v), bind(o), bind(lse)],
        groups,
      )
    },

    /** The cotangents that flow: dO and dLse, or one of them. */
    "attention.vjp"({ inputs: { q, k, v, o, lse, dO, dLse }, outputs: { dQ, dK, dV }, shapes: { inputs: s }, attrs }) {
      const dims = dimsOf("attention.vjp", s.q, s.k, s.v, attrs.causal)
      const { B, H, Hkv, S, D } = dims
      float32("attention.vjp", q, k, v, o, lse, dQ, dK, dV, dO, dLse)
      const rows = B * H * S

      // Scratch goes back to the backend's pool as soon as its last dispatch is recorded: commands
      // run in order, so whoever gets the buffer next writes it after these kernels read it.
      const delta = scratch.alloc("float32", rows)
      let zeros: Buffer | undefined
      if (dO === undefined) {
        zeros = scratch.alloc("float32", rows * D)
        scratch.fill(zeros, 0)
      }
      const dOut = dO ?? zeros!
      try {
        const withDlse = dLse !== undefined
        run(
          `attention.delta:${withDlse}`,
          () => attentionDeltaWgsl(withDlse),
          [rows, D],
          [bind(o), bind(dOut), ...(withDlse ? [bind(dLse)] : []), bind(delta)],
          Math.ceil(rows / T),
        )
        const tiles = attentionTiles(D)
        const blocks = Math.ceil(S / tiles.rows)
        const reads = [bind(q), bind(k), bind(v), bind(dOut), bind(lse), bind(delta)]
        const [qGroups, kvGroups] = [B * H * blocks, B * Hkv * blocks]
        run(
          `attention.dq:${D}`,
          () => attentionDqWgsl(D),
          paramsFor(dims, blocks, qGroups, tiles.dqKeys),
          [...reads, bind(dQ)],
          qGroups,
        )
        const kvParams = paramsFor(dims, blocks, kvGroups, tiles.dkvQueries)
        run(`attention.dkv:${D}`, () => attentionDkvWgsl(D), kvParams, [...reads, bind(dK), bind(dV)], kvGroups)
      } finally {
        scratch.free(delta)
        if (zeros !== undefined) scratch.free(zeros)
      }
    },
  }
}
