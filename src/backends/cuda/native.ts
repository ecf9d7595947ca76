/**
 * The native addon (native/, built by `npm install` into build/Release/miniseq_cuda.node) and
 * its loader. The addon's `Device` takes buffer handles and plain numbers; every argument check
 * that needs the graph's view of a buffer (dtypes, shapes, aliasing) happens in cuda-backend.ts
 * before a call gets here, and the addon re-checks byte sizes so a bug cannot corrupt memory.
 */
import { existsSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import type { HostArray } from "../../core/dtype.js"
import { OutOfMemory } from "../../core/errors.js"

/** Codes shared with native/kernels/kernels.h (DType, UnaryOp, BinaryOp, ReduceOp). */
export const dtypeCode = { float32: 0, float64: 1, int32: 2, bfloat16: 3 } as const
export const unaryCode = { neg: 0, exp: 1, log: 2, sqrt: 3, recip: 4, sin: 5, cos: 6 } as const
export const binaryCode = { add: 0, sub: 1, mul: 2, div: 3, maximum: 4, less: 5, equal: 6 } as const
export const reduceCode = { sum: 0, max: 1 } as const

export interface NativeMemory {
  /** Bytes of live buffers (what was asked for). */
  readonly live: number
  readonly peak: number
  /** Bytes held from the driver: live buffers' size classes plus the cache. */
  readonly reserved: number
  /** Bytes of freed blocks kept for reuse. */
  readonly cached: number
  /** Pinned host staging held for transfers. */
  readonly pinned: number
  /** Size-class capacity of live buffers and kernel scratch, and its peak (what `heldBytes` plans). */
  readonly held: number
  readonly heldPeak: number
  /** Live host-tier bytes (`allocHost`) and their peak. */
  readonly hostLive: number
  readonly hostPeak: number
}

export interface NativeInfo {
  readonly ordinal: number
  readonly name: string
  readonly computeCapability: string
  readonly multiProcessors: number
  readonly totalMemory: number
  readonly freeMemory: number
  readonly l2Cache: number
  readonly cudaRuntime: number
  readonly cudaDriver: number
  readonly cublas: number
  readonly cublasPath: string
  readonly archs: string
  /** AdamW updates run on the host's cores so far (state in the host tier: `Device::adamwOnHost`). */
  readonly hostUpdates: number
}

type H = number
type D = number

/** native/src/addon.cc's Device; argument order as there. */
export interface NativeDevice {
  alloc(bytes: number): H
  /** A block of pinned, mapped host memory: the host tier. */
  allocHost(bytes: number): H
  free(h: H): void
  write(h: H, dtype: D, data: HostArray): void
  read(h: H, dtype: D, count: number): Promise<HostArray>
  sync(): Promise<void>
  fill(h: H, dtype: D, n: number, value: number): void
  randomNormal(h: H, dtype: D, n: number, key: number, std: number): void
  iota(h: H, dtype: D, outer: number, len: number, inner: number): void
  unary(op: number, dtype: D, x: H, out: H, n: number): void
  binary(op: number, inDtype: D, outDtype: D, a: H, aScalar: boolean, b: H, bScalar: boolean, out: H, n: number): void
  where(
    condDtype: D,
    dtype: D,
    c: H,
    cScalar: boolean,
    a: H,
    aScalar: boolean,
    b: H,
    bScalar: boolean,
    out: H,
    n: number,
  ): void
  cast(from: D, to: D, x: H, out: H, n: number): void
  /** params: [rank, srcOffset, dstOffset, shape…, srcStrides…, dstStrides…] */
  copy(elemBytes: number, src: H, dst: H, params: Float64Array): void
  reduce(op: number, dtype: D, x: H, out: H, outer: number, axis: number, inner: number): void
  matmul(
    a: H,
    b: H,
    out: H,
    abDtype: D,
    outDtype: D,
    batch: number,
    m: number,
    n: number,
    k: number,
    transA: boolean,
    transB: boolean,
    accumulate: boolean,
    tf32: boolean,
  ): void
  gather(elemBytes: number, table: H, rows: number, idx: H, n: number, out: H, width: number): void
  scatterAdd(dtype: D, idx: H, n: number, src: H, out: H, rows: number, width: number): void
  takeAlong(elemBytes: number, x: H, idx: H, n: number, out: H, width: number): void
  putAlong(elemBytes: number, idx: H, n: number, src: H, out: H, width: number): void
  // Fused routines (native/kernels/kernels.h; src/backends/cuda/fused.ts calls them). Every
  // operand has `dtype` except the int32 targets.
  crossEntropy(dtype: D, logits: H, targets: H, nll: H, n: number, v: number, ignoreIndex: number): void
  crossEntropyBackward(
    dtype: D,
    logits: H,
    targets: H,
    dnll: H,
    dlogits: H,
    n: number,
    v: number,
    ignoreIndex: number,
  ): void
  logsumexp(dtype: D, x: H, lse: H, rows: number, v: number): void
  logsumexpBackward(dtype: D, x: H, lse: H, g: H, dx: H, rows: number, v: number): void
  silu(dtype: D, x: H, y: H, n: number): void
  siluBackward(dtype: D, x: H, g: H, dx: H, n: number): void
  /** frequencies: d/2 of them (a scaled RoPE's) in place of θ^(−2i/d). */
  rope(
    dtype: D,
    x: H,
    y: H,
    rows: number,
    s: number,
    d: number,
    theta: number,
    offset: number,
    inverse: boolean,
    frequencies?: Float64Array,
  ): void
  siluMul(dtype: D, a: H, b: H, y: H, n: number): void
  siluMulBackward(dtype: D, a: H, b: H, g: H, da: H, db: H, n: number): void
  rmsNorm(dtype: D, x: H, w: H, y: H, rows: number, d: number, eps: number): void
  rmsNormBackward(dtype: D, x: H, w: H, g: H, dx: H, dw: H, rows: number, d: number, eps: number): void
  /** One parameter's AdamW step in place; master 0: none. lr … clip are one-float buffers. */
  adamw(
    paramType: D,
    gradType: D,
    stateType: D,
    param: H,
    grad: H,
    m: H,
    v: H,
    master: H,
    lr: H,
    correction1: H,
    correction2: H,
    clip: H,
    beta1: number,
    beta2: number,
    eps: number,
    decay: number,
    n: number,
    /** 1: on the host's cores (grad, m, v and master must be host-tier blocks); 0: the kernel. */
    onHost: number,
  ): void
  /** Σ x² of x [rows, cols] (rows 1: a vector) into the float32 scalar out, as sum(square(cast(x))) gives it unfused. */
  sumOfSquares(dtype: D, x: H, out: H, rows: number, cols: number): void
  /** lse (and dLse below) in the accumulator dtype: float32 for bfloat16 and float32, float64 for float64. */
  attention(dtype: D, q: H, k: H, v: H, o: H, lse: H, b: number, h: number, hkv: number, s: number, d: number): void
  /** dLse 0: no cotangent for lse. */
  attentionBackward(
    dtype: D,
    q: H,
    k: H,
    v: H,
    o: H,
    lse: H,
    dO: H,
    dLse: H,
    dq: H,
    dk: H,
    dv: H,
    b: number,
    h: number,
    hkv: number,
    s: number,
    d: number,
  ): void
  memory(): NativeMemory
  resetPeak(): void
  emptyCache(): void
  /** Caps the bytes the allocator holds from the driver; 0 lifts the cap. */
  setMemoryLimit(bytes: number): void
  /** Records a timing event tagged `id` (src/backends/cuda/profile.ts). */
  profileMark(id: number): void
  /** Waits for the stream; [id, ms since the previous mark, …] for every mark since the last call. */
  profileCollect(): Float64Array
  info(): NativeInfo
  pending(): number
  destroy(): void
}

export interface NativeModule {
  readonly Device: new (ordinal?: number) => NativeDevice
  readonly archs: string
  readonly cudaRuntimeBuiltWith: number
}

/** What the addon's errors carry besides the message (see native/src/device.h, Failure). */
export interface NativeError extends Error {
  readonly code?: string
  readonly requested?: number
  readonly alive?: number
  readonly total?: number
}

export type AddonLoad =
  | { readonly ok: true; readonly module: NativeModule; readonly path: string }
  | { readonly ok: false; readonly reason: string; readonly path: string }

/** Where the addon is: $MINISEQ_CUDA_ADDON, else build/Release beside this package's root. */
/**
 * Runs an allocation of `bytes` by the addon, turning its ERR_CUDA_OOM into the typed OutOfMemory
 * (with the addon's byte counts; `what` prefixes the message).
 */
export function allocating<A>(bytes: number, allocate: () => A, what = "", tier?: "host"): A {
  try {
    return allocate()
  } catch (e) {
    const err = e as NativeError
    if (err.code !== "ERR_CUDA_OOM") throw e
    throw new OutOfMemory({
      requested: err.requested ?? bytes,
      alive: err.alive ?? 0,
      limit: err.total ?? 0,
      ...(tier ? { tier } : {}),
      message: `${what}${err.message}`,
    })
  }
}

export function addonPath(): string {
  const fromEnv = process.env.MINISEQ_CUDA_ADDON
  if (fromEnv) return fromEnv
  return join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "build", "Release", "miniseq_cuda.node")
}

/** What native/build.mjs recorded about the last build: build/miniseq_cuda.json beside the addon's folder. */
export interface BuildRecord {
  readonly built: boolean
  readonly reason?: string
  readonly nvcc?: string
}

const buildRecordPath = (addon: string): string => join(dirname(dirname(addon)), "miniseq_cuda.json")

/** The build record for the addon at `addon`; undefined when none was written, throws when it is unreadable. */
export function readBuildRecord(addon: string = addonPath()): BuildRecord | undefined {
  const file = buildRecordPath(addon)
  return existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as BuildRecord) : undefined
}

/** Why the addon at `path` is missing, in the build record's words. */
function missingReason(path: string): string {
  let r: BuildRecord | undefined
  try {
    r = readBuildRecord(path)
  } catch {
    return `unreadable build record ${buildRecordPath(path)}`
  }
  if (r === undefined) return "no build was recorded: run `npm run build:cuda`"
  return r.built
    ? "the build record says it was built, so it was removed since: run `npm run build:cuda`"
    : `at install: ${r.reason ?? "?"}`
}

let cached: AddonLoad | undefined

export function loadAddon(): AddonLoad {
  if (cached) return cached
  const path = addonPath()
  if (!existsSync(path)) {
    cached = { ok: false, path, reason: `native addon not built: ${path} is missing (${missingReason(path)})` }
    return cached
  }
  try {
    const module = createRequire(import.meta.url)(path) as NativeModule
    cached = { ok: true, module, path }
  } catch (e) {
    cached = { ok: false, path, reason: `native addon failed to load: ${(e as Error).message}` }
  }
  return cached
}
