/**
 * Fused kernels for named routines. Each must equal its routine's reference body (the
 * conformance suite compares them); what it saves is memory and passes over memory: no N×V
 * intermediates such as exp(x − max), one kernel instead of a dozen.
 *
 * All three work row by row, one workgroup per row of V logits, around the same core: the row's
 * max and Σ exp(x − max), each reduced by the workgroup's threads with a shared-memory tree.
 * - "logsumexp":         x [..., V] → lse [..., 1]
 * - "crossEntropy":      logits [N, V], targets [N] → nll [N] = lse − x[target] (0 if ignored)
 * - "crossEntropy.vjp":  logits, targets, nll, dnll → dlogits = (softmax − onehot(target))·dnll
 *
 * Plus causal flash attention, "attention" and "attention.vjp" (kernels in attention.ts), when
 * the device has the 8 storage buffers and 16 KiB of workgroup memory they need.
 */
import type { Buffer, FusedRoutine } from "../../../core/backend.js"
import { attentionFits, attentionRoutines, type Bind, type Scratch } from "./attention.js"
import { entry, floatHelpers, paramsStruct, type RunKernel, storage } from "./common.js"

const THREADS = 128

const tree = (op: (a: string, b: string) => string) => `
  for (var half = ${THREADS / 2}u; half > 0u; half = half / 2u) {
    if (li < half) { partial[li] = ${op("partial[li]", "partial[li + half]")}; }
    workgroupBarrier();
  }`

/** Sets `lse` for the row starting at `base` (p.width wide); every thread gets the value. */
const rowLse = /* wgsl */ `
  var m = negInf();
  for (var v = li; v < p.width; v += ${THREADS}u) { m = maxNan(m, x[base + v]); }
  partial[li] = m;
  workgroupBarrier();
  ${tree((a, b) => `maxNan(${a}, ${b})`)}
  let rowMax = partial[0];
  workgroupBarrier(); // everyone has read the max before partial is reused
  var s = 0.0;
  for (var v = li; v < p.width; v += ${THREADS}u) { s += exp(x[base + v] - rowMax); }
  partial[li] = s;
  workgroupBarrier();
  ${tree((a, b) => `${a} + ${b}`)}
  let lse = rowMax + log(partial[0]);`

const shared = `var<workgroup> partial: array<f32, ${THREADS}>;\n`

/** Parameters: rows, width. Workgroups: one per row. */
export const logsumexpWgsl = (): string =>
  paramsStruct(["rows: u32", "width: u32"]) + storage(1, "x", "f32") + storage(2, "out", "f32", true) + floatHelpers + shared + entry(`
  if (wid >= p.rows) { return; } // uniform per workgroup
  let base = wid * p.width;
  ${rowLse}
  if (li == 0u) { out[wid] = lse; }`, THREADS)

/** Parameters: rows, width, ignore (i32). An out-of-range target gives NaN (the CPU would throw). */
export const crossEntropyWgsl = (): string =>
  paramsStruct(["rows: u32", "width: u32", "ignore: i32"]) + storage(1, "x", "f32") + storage(2, "targets", "i32") + storage(3, "out", "f32", true) + floatHelpers + shared + entry(`
  if (wid >= p.rows) { return; }
  let base = wid * p.width;
  ${rowLse}
  if (li == 0u) {
    let t = targets[wid];
    var nll = 0.0;
    if (t != p.ignore) {
      var bits = 0x7fc00000u; // NaN
      nll = bitcast<f32>(bits);
      if (t >= 0 && u32(t) < p.width) { nll = lse - x[base + u32(t)]; }
    }
    out[wid] = nll;
  }`, THREADS)

/** Parameters: rows, width, ignore (i32). dlogits[r, v] = (exp(x − lse) − [v = target])·g. */
export const crossEntropyVjpWgsl = (): string =>
  paramsStruct(["rows: u32", "width: u32", "ignore: i32"]) + storage(1, "x", "f32") + storage(2, "targets", "i32") + storage(3, "g", "f32") + storage(4, "dx", "f32", true) + floatHelpers + shared + entry(`
  if (wid >= p.rows) { return; }
  let base = wid * p.width;
  ${rowLse}
  // An ignored row gets coefficient 0, as in the reference body. (Skipping it before rowLse
  // would be a branch on loaded data ahead of barriers, which WGSL's uniformity rules forbid.)
  let t = targets[wid];
  let gr = select(g[wid], 0.0, t == p.ignore);
  for (var v = li; v < p.width; v += ${THREADS}u) {
    dx[base + v] = exp(x[base + v] - lse) * gr - select(0.0, gr, i32(v) == t);
  }`, THREADS)

function float32(name: string, ...bufs: (Buffer | undefined)[]): void {
  for (const b of bufs) if (b !== undefined && b.dtype !== "float32") throw new Error(`webgpu.${name}: float32 only, got ${b.dtype}`)
}

/**
 * The fused routines, dispatching through the backend's `run` and binding through its `bind`;
 * `scratch` allocates a kernel's internal buffers, and `limits` decides whether attention fits.
 */
export function fusedRoutines(run: RunKernel, bind: Bind, scratch?: Scratch, limits?: Parameters<typeof attentionFits>[0]): Record<string, FusedRoutine> {
  const logsumexp: FusedRoutine = ([x], [out], shapes) => {
    const shape = shapes.inputs[0]
    if (x === undefined || out === undefined || shape === undefined || shape.length === 0) throw new Error("webgpu.logsumexp: expects x [..., V] and lse [..., 1]")
    float32("logsumexp", x, out)
    const width = shape[shape.length - 1]!
    if (x.size !== out.size * width) throw new Error(`webgpu.logsumexp: x of ${x.size} elements is not ${out.size} rows of ${width}`)
    run("logsumexp", logsumexpWgsl, [out.size, width], [bind(x), bind(out)], out.size)
  }

  /** [N, V] from the logits' shape, checked against the targets. */
  const rowsOf = (name: string, logits: Buffer | undefined, targets: Buffer | undefined, shape: readonly number[] | undefined): [number, number] => {
    if (logits === undefined || targets === undefined || shape?.length !== 2) throw new Error(`webgpu.${name}: expects logits [N, V] and targets [N]`)
    const [N, V] = shape as [number, number]
    if (targets.dtype !== "int32" || targets.size !== N || logits.size !== N * V) throw new Error(`webgpu.${name}: logits [${N}, ${V}] and targets int32[${N}] expected, got ${logits.dtype}[${logits.size}], ${targets.dtype}[${targets.size}]`)
    return [N, V]
  }

  const crossEntropy: FusedRoutine = ([logits, targets], [nll], shapes, params) => {
    const [N, V] = rowsOf("crossEntropy", logits, targets, shapes.inputs[0])
    float32("crossEntropy", logits, nll)
    if (nll?.size !== N) throw new Error(`webgpu.crossEntropy: nll must hold ${N} elements`)
    run("crossEntropy", crossEntropyWgsl, [N, V, Number(params.ignoreIndex)], [bind(logits!), bind(targets!), bind(nll)], N)
  }

  const crossEntropyVjp: FusedRoutine = ([logits, targets, , dnll], [dlogits], shapes, params) => {
    const [N, V] = rowsOf("crossEntropy.vjp", logits, targets, shapes.inputs[0])
    float32("crossEntropy.vjp", logits, dnll, dlogits)
    if (dnll?.size !== N || dlogits?.size !== N * V) throw new Error(`webgpu.crossEntropy.vjp: expects dnll [${N}] and dlogits [${N}, ${V}]`)
    run("crossEntropy.vjp", crossEntropyVjpWgsl, [N, V, Number(params.ignoreIndex)], [bind(logits!), bind(targets!), bind(dnll), bind(dlogits)], N)
  }

  const attention = scratch !== undefined && limits !== undefined && attentionFits(limits) ? attentionRoutines(run, bind, scratch) : {}
  return { logsumexp, crossEntropy, "crossEntropy.vjp": crossEntropyVjp, ...attention }
}
