/**
 * Tiled matmul: out[b] = op(a[b]) · op(b[b]).
 *
 * Each workgroup computes one BM×BN tile of the output. It walks k in steps of BK: its
 * threads copy a BM×BK block of op(a) and a BK×BN block of op(b) into workgroup (shared)
 * memory, wait at a barrier, and then every thread updates its TM×TN sub-tile with values read
 * from shared memory. Each loaded value is reused by many threads, and each thread keeps its
 * TM·TN running sums in registers: the two things that make a GPU matmul fast.
 *
 * Transposition only changes how a block is loaded: consecutive threads load elements that are
 * consecutive in memory (coalesced), whichever way the matrix is stored. Shared blocks are
 * stored k-major with one padding column, so both the stores and the reads avoid bank conflicts.
 * Out-of-range elements are loaded as 0, so ragged edges need no special case.
 *
 * The register tile is unrolled by this generator (plain scalar `let`s and `var`s), so every
 * compiler keeps the sums in registers rather than in an indexed local array.
 */
/**
 * The tile shape: a workgroup of tx × ty threads computes a bm × bn tile of the output, each
 * thread a (bm/ty) × (bn/tx) block of it, walking k in steps of bk.
 */
export interface MatmulTile {
  readonly bm: number
  readonly bn: number
  readonly bk: number
  readonly tx: number
  readonly ty: number
}

/**
 * For a GPU (WebGPU core): 64×64 tiles, 256 threads of 4×4 outputs each. The fastest of the
 * shapes tried on an H200 through Vulkan (bench/webgpu-matmul.ts --tiles …): ~18 TFLOP/s at
 * 4096³, against ~14 for 128×128 tiles of 8×8 per thread and ~5 for 64 threads of 8×8.
 */
export const CORE_TILE: MatmulTile = { bm: 64, bn: 64, bk: 8, tx: 16, ty: 16 }
/**
 * For WebGPU compatibility (OpenGL ES, e.g. llvmpipe): 64 threads of 8×8 outputs each, within
 * compatibility's 128 threads per workgroup; a CPU rasteriser also prefers fewer, longer threads.
 */
export const COMPAT_TILE: MatmulTile = { bm: 64, bn: 64, bk: 16, tx: 8, ty: 8 }

export const tileName = (t: MatmulTile): string => `${t.bm}x${t.bn}x${t.bk}/${t.tx}x${t.ty}`

/**
 * Parameters: batch, m, n, k, tilesM, tilesN. Workgroups: batch · tilesM · tilesN.
 * `accumulate` adds the product into out (out += a·b) instead of overwriting it.
 */
export function matmulWgsl(
  transA: boolean,
  transB: boolean,
  accumulate: boolean,
  tile: MatmulTile = COMPAT_TILE,
): string {
  const { bm: BM, bn: BN, bk: BK, tx: TX, ty: TY } = tile
  const [TM, TN, THREADS] = [BM / TY, BN / TX, TX * TY]
  if (!Number.isInteger(TM) || !Number.isInteger(TN))
    throw new Error(`webgpu: matmul tile ${tileName(tile)} does not split into threads`)
  // Row strides of the shared blocks: +1 column so consecutive k hit different banks.
  const [AS, BS] = [BM + 1, BN + 1]
  const range = (n: number) => Array.from({ length: n }, (_, i) => i)
  // Loading: element e of a block; consecutive e must be consecutive in memory.
  // op(a) element (i, q) of this tile lives at a[(row0+i)·k + t+q], or a[(t+q)·m + row0+i] when transA.
  const loadA = transA
    ? `let q = e / ${BM}u; let i = e % ${BM}u; let gi = row0 + i; let gq = t + q;
      var v = 0.0; if (gi < p.m && gq < p.k) { v = a[aBase + gq * p.m + gi]; }`
    : `let i = e / ${BK}u; let q = e % ${BK}u; let gi = row0 + i; let gq = t + q;
      var v = 0.0; if (gi < p.m && gq < p.k) { v = a[aBase + gi * p.k + gq]; }`
  // op(b) element (q, j) lives at b[(t+q)·n + col0+j], or b[(col0+j)·k + t+q] when transB.
  const loadB = transB
    ? `let j = e / ${BK}u; let q = e % ${BK}u; let gj = col0 + j; let gq = t + q;
      var v = 0.0; if (gj < p.n && gq < p.k) { v = b[bBase + gj * p.k + gq]; }`
    : `let q = e / ${BN}u; let j = e % ${BN}u; let gj = col0 + j; let gq = t + q;
      var v = 0.0; if (gj < p.n && gq < p.k) { v = b[bBase + gq * p.n + gj]; }`

  // Thread (tx, ty) owns rows ty + TY·r and columns tx + TX·c of the tile: neighbouring threads
  // read neighbouring shared-memory words and write neighbouring output columns.
  const sums = range(TM)
    .flatMap((r) => range(TN).map((c) => `var c${r}_${c} = 0.0;`))
    .join(" ")
  const aRegs = range(TM)
    .map((r) => `let a${r} = As[q * ${AS}u + ty + ${TY * r}u];`)
    .join(" ")
  const bRegs = range(TN)
    .map((c) => `let b${c} = Bs[q * ${BS}u + tx + ${TX * c}u];`)
    .join(" ")
  const fmas = range(TM)
    .map((r) =>
      range(TN)
        .map((c) => `c${r}_${c} = fma(a${r}, b${c}, c${r}_${c});`)
        .join(" "),
    )
    .join("\n      ")
  const stores = range(TM)
    .map((r) => {
      const row = `let gr${r} = row0 + ty + ${TY * r}u;`
      const cols = range(TN).map((c) => {
        const at = `cBase + gr${r} * p.n + col0 + tx + ${TX * c}u`
        return `if (gr${r} < p.m && col0 + tx + ${TX * c}u < p.n) { out[${at}] = ${accumulate ? `out[${at}] + ` : ""}c${r}_${c}; }`
      })
      return [row, ...cols].join("\n  ")
    })
    .join("\n  ")

  return /* wgsl */ `
struct Params { batch: u32, m: u32, n: u32, k: u32, tilesM: u32, tilesN: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> As: array<f32, ${BK * AS}>;
var<workgroup> Bs: array<f32, ${BK * BS}>;

@compute @workgroup_size(${TX}, ${TY})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let wid = wg.x + wg.y * nwg.x;
  if (wid >= p.batch * p.tilesM * p.tilesN) { return; } // uniform per workgroup
  let tileN = wid % p.tilesN;
  let tileM = (wid / p.tilesN) % p.tilesM;
  let batch = wid / (p.tilesN * p.tilesM);
  let row0 = tileM * ${BM}u;
  let col0 = tileN * ${BN}u;
  let aBase = batch * p.m * p.k;
  let bBase = batch * p.k * p.n;
  let cBase = batch * p.m * p.n;
  let tx = lid.x;
  let ty = lid.y;
  ${sums}
  for (var t = 0u; t < p.k; t += ${BK}u) {
    for (var e = li; e < ${BM * BK}u; e += ${THREADS}u) {
      ${loadA}
      As[q * ${AS}u + i] = v;
    }
    for (var e = li; e < ${BK * BN}u; e += ${THREADS}u) {
      ${loadB}
      Bs[q * ${BS}u + j] = v;
    }
    workgroupBarrier();
    for (var q = 0u; q < ${BK}u; q++) {
      ${aRegs}
      ${bRegs}
      ${fmas}
    }
    workgroupBarrier();
  }
  ${stores}
}`
}
