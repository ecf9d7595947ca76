/**
 * The backend contract: every backend (CPU, WebGPU, CUDA, and the counting-only planner)
 * implements these ~25 kernels and nothing else. Kernels only enqueue work on buffers the
 * executor allocated; the executor never reads device memory to decide what to do next, so
 * the same schedule can run against a backend that allocates nothing (the memory plan).
 *
 * Conventions shared by every kernel:
 * - Buffers are flat, contiguous, row-major; shapes live in the graph, not in the buffer.
 * - `out` is always written by the kernel; it may alias an input for elementwise kernels.
 * - Elementwise operands hold out's size or 1 element (a scalar every element sees); any other
 *   broadcast is an explicit `copy` with 0 strides.
 * Every backend is wrapped by `checkedBackend` (./checked-backend.ts), which checks each call
 * against these rules once for all of them; the fused routines' interfaces are in
 * ./routines/registry.ts.
 */
import { Context, Effect, Layer } from "effect"
import { BackendUnavailable } from "./errors.js"
import type { DType, HostArray } from "./dtype.js"
import type { RoutineKernels } from "./routines/registry.js"

/** An opaque handle to device memory. Backends extend it with their own storage. */
export interface Buffer {
  readonly dtype: DType
  /** Number of elements. */
  readonly size: number
  /** "host": made by `hostAlloc`, in host memory the device reaches over the bus (absent: device memory). */
  readonly tier?: "host"
}

export type UnaryOp = "neg" | "exp" | "log" | "sqrt" | "recip" | "sin" | "cos"
/** `less` and `equal` write 1 or 0 in the output's dtype. */
export type BinaryOp = "add" | "sub" | "mul" | "div" | "maximum" | "less" | "equal"
export type ReduceOp = "sum" | "max"

/** A strided window into a flat buffer: element at index i lives at offset + Σ i_k·strides_k. */
export interface View {
  readonly shape: readonly number[]
  readonly strides: readonly number[]
  readonly offset: number
}

/**
 * Batched matrix product out[b] = op(a[b]) · op(b[b]) with op = transpose when the flag is set.
 * a holds [batch, m, k] (or [batch, k, m] when transA), b holds [batch, k, n] (or [batch, n, k]
 * when transB), out holds [batch, m, n].
 */
export interface MatmulSpec {
  readonly batch: number
  readonly m: number
  readonly n: number
  readonly k: number
  readonly transA: boolean
  readonly transB: boolean
  /**
   * out += product instead of out = product: how a weight gradient accumulates in place. With
   * accumulate, out may be float32 while a and b are bfloat16.
   */
  readonly accumulate?: boolean
}

export interface BackendImpl {
  readonly name: string
  /** The element types its buffers can hold (int32 always, for indices); kernels compute in its floats. */
  readonly dtypes: readonly DType[]
  /** Fused kernels for routines (./routines/registry.ts); any other runs its reference body. */
  readonly routines?: RoutineKernels
  alloc(dtype: DType, size: number): Buffer
  free(buffer: Buffer): void
  /** Host → device. `data.length` equals `buffer.size`; bfloat16 buffers take float32 data (rounded). */
  write(buffer: Buffer, data: HostArray): void
  /** Device → host; the only way data comes back, and it is explicit and async (bfloat16 → float32). */
  read(buffer: Buffer): Promise<HostArray>

  fill(out: Buffer, value: number): void
  /** out (of `shape`) holds each element's index along `axis`. */
  iota(out: Buffer, shape: readonly number[], axis: number): void
  unary(op: UnaryOp, x: Buffer, out: Buffer): void
  binary(op: BinaryOp, a: Buffer, b: Buffer, out: Buffer): void
  /** out = cond ≠ 0 ? a : b */
  where(cond: Buffer, a: Buffer, b: Buffer, out: Buffer): void
  /** Converts between dtypes (float → int32 truncates toward zero). */
  cast(x: Buffer, out: Buffer): void
  /** For every index i of `dstView.shape` (= srcView.shape): dst[dstView(i)] = src[srcView(i)]. */
  copy(src: Buffer, srcView: View, dst: Buffer, dstView: View): void
  /** x viewed as [outer, axis, inner] is reduced over the middle axis into out [outer, inner]. */
  reduce(op: ReduceOp, x: Buffer, out: Buffer, outer: number, axis: number, inner: number): void
  matmul(a: Buffer, b: Buffer, out: Buffer, spec: MatmulSpec): void
  /** out[i, :] = table[idx[i], :] for a table of rows × width. */
  gather(table: Buffer, idx: Buffer, out: Buffer, width: number): void
  /** out = 0, then out[idx[i], :] += src[i, :] (the adjoint of gather). */
  scatterAdd(idx: Buffer, src: Buffer, out: Buffer, width: number): void
  /** out[i] = x[i, idx[i]] for x of rows × width. */
  takeAlong(x: Buffer, idx: Buffer, out: Buffer, width: number): void
  /** out = 0, then out[i, idx[i]] = src[i] (the adjoint of takeAlong). */
  putAlong(idx: Buffer, src: Buffer, out: Buffer, width: number): void

  /**
   * Optional: out = seeded normals · std, the stream `counterNormals` (./random.ts) makes on the
   * host, so a big model is initialised where it lives. Where absent, the trainer makes them on
   * the host and writes them.
   */
  randomNormal?(out: Buffer, seed: number, stream: number, std: number): void
  /**
   * Optional: the bytes the allocator holds for a request of `bytes` (its size class). The
   * planner counts every buffer at this size (`heldPeak`); where absent, at exactly `bytes`.
   */
  heldBytes?(bytes: number): number
  /**
   * Optional: a buffer in the host tier, memory beside the device (pinned host memory a GPU reaches
   * over the bus), for what is offloaded: saved activations between forward and backward, weight
   * gradients and the optimizer's state. Every kernel, `copy`, `write`, `read` and `free` take it
   * like any other buffer. Where absent, nothing can be offloaded.
   */
  hostAlloc?(dtype: DType, size: number): Buffer
  /**
   * Optional: true where the fused adamw runs on the host's cores when its moments and gradient
   * are in the host tier, so the new weights cross the bus instead of the state (the planner's
   * bus count follows). Where absent, such state is read and written over the bus.
   */
  readonly hostOptimizer?: boolean
  /**
   * Optional: the bytes of device scratch the fused kernel of routine `name` takes while it
   * runs, beyond its outputs, for these inputs (by input name). The executor counts them as
   * temporaries for the length of the call, so the planner does too; where absent, none.
   */
  kernelScratchBytes?(name: string, inputs: KernelInputTypes): number
  /**
   * Optional, for a backend that is one rank of an SPMD program (./ranks.ts): x (of
   * `spec.shape`) is split along `splitAxis` into `spec.ranks` parts, part j goes to rank j, and
   * out holds the parts received from ranks 0…N−1 concatenated along `concatAxis`. Where absent,
   * a graph with collectives does not run.
   */
  allToAll?(x: Buffer, out: Buffer, spec: AllToAllSpec): void
  /** Optional, as `allToAll`: out = the sum of x over all ranks, the same on every rank. */
  allReduce?(x: Buffer, out: Buffer): void
}

/** An all-to-all as a kernel sees it: the input's shape and the exchange. */
export interface AllToAllSpec {
  readonly shape: readonly number[]
  readonly splitAxis: number
  readonly concatAxis: number
  readonly ranks: number
}

/** The shape an all-to-all writes: the split axis shrinks N-fold, the concat axis grows N-fold. */
export function allToAllShape(spec: AllToAllSpec): number[] {
  const { shape, splitAxis, concatAxis, ranks } = spec
  const out = shape.map((d, i) => (i === splitAxis ? d / ranks : d))
  out[concatAxis] = out[concatAxis]! * ranks
  return out
}

/** A fused kernel's inputs as `kernelScratchBytes` sees them: shape and dtype by input name. */
export type KernelInputTypes = Readonly<Record<string, { readonly shape: readonly number[]; readonly dtype: DType }>>

/** The backend as an Effect service: provide it with a backend's `Layer`. */
export class Backend extends Context.Service<Backend, BackendImpl>()("miniseq/Backend") {}

/**
 * A backend whose device is a scoped resource, as the `Backend` service: `make` starts it when
 * the layer is built, `destroy` gives it back when the layer's scope closes. A start that fails
 * with anything but `BackendUnavailable` is reported as one, naming the backend.
 */
export const scopedBackendLayer = <B extends BackendImpl & { destroy(): Promise<void> }>(
  backend: string,
  make: () => B | Promise<B>,
): Layer.Layer<Backend, BackendUnavailable> =>
  Layer.effect(
    Backend,
    Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => make(),
        catch: (e) =>
          e instanceof BackendUnavailable
            ? e
            : new BackendUnavailable({
                backend,
                reason: String(e),
                message: `${backend}: could not start the device: ${String(e)}`,
              }),
      }),
      (started) => Effect.promise(() => started.destroy()),
    ),
  )

/** Row-major strides of a contiguous shape. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length)
  let s = 1
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s
    s *= shape[i]!
  }
  return strides
}

export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1)

/** A contiguous row-major view of `shape` starting at `offset`. */
export const dense = (shape: readonly number[], offset = 0): View => ({
  shape,
  strides: contiguousStrides(shape),
  offset,
})

interface IotaDims {
  readonly outer: number
  readonly len: number
  readonly inner: number
}

/** iota's out viewed as [outer, len, inner]: each element's value is its middle index. */
export function iotaDims(shape: readonly number[], axis: number): IotaDims {
  const size = numel(shape),
    len = shape[axis]!,
    inner = numel(shape.slice(axis + 1))
  return { outer: len * inner === 0 ? 0 : size / (len * inner), len, inner }
}
