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
import type { Buffer } from "../../../core/backend.js"
import type { RoutineKernels } from "../../../core/routines/registry.js"
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
  paramsStruct(["rows: u32", "width: u32"]) +
  storage(1, "x", "f32") +
  storage(2, "out", "f32", true) +
  floatHelpers +
  shared +
  entry(
    `
  if (wid >= p.rows) { return; } // uniform per workgroup
  let base = wid * p.width;
  ${rowLse}
  if (li == 0u) { out[wid] = lse; }`,
    THREADS,
  )

/** Parameters: rows, width, ignore (i32). An out-of-range target gives NaN (the CPU would throw). */
export const crossEntropyWgsl = (): string =>
  paramsStruct(["rows: u32", "width: u32", "ignore: i32"]) +
  storage(1, "x", "f32") +
  storage(2, "targets", "i32") +
  storage(3, "out", "f32", true) +
  floatHelpers +
  shared +
  entry(
    `
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
  }`,
    THREADS,
  )

/** Parameters: rows, width, ignore (i32). dlogits[r, v] = (exp(x − lse) − [v = target])·g. */
export const crossEntropyVjpWgsl = (): string =>
  paramsStruct(["rows: u32", "width: u32", "ignore: i32"]) +
  storage(1, "x", "f32") +
  storage(2, "targets", "i32") +
  storage(3, "g", "f32") +
  storage(4, "dx", "f32", true) +
  floatHelpers +
  shared +
  entry(
    `
  if (wid >= p.rows) { return; }
  let base = wid * p.width;
  ${rowLse}
  // An ignored row gets coefficient 0, as in the reference body. (Skipping it before rowLse
  // would be a branch on loaded data ahead of barriers, which WGSL's uniformity rules forbid.)
  let t = targets[wid];
  let gr = select(g[wid], 0.0, t == p.ignore);
  for (var v = li; v < p.width; v += ${THREADS}u) {
    dx[base + v] = exp(x[base + v] - lse) * gr - select(0.0, gr, i32(v) == t);
  }`,
    THREADS,
  )

function float32(name: string, ...bufs: (Buffer | undefined)[]): void {
  for (const b of bufs)
    if (b !== undefined && b.dtype !== "float32") throw new Error(`webgpu.${name}: float32 only, got ${b.dtype}`)
}

/**
 * The fused routines, dispatching through the backend's `run` and binding through its `bind`;
 * `scratch` allocates a kernel's internal buffers, and `limits` decides whether attention fits.
 * (Names, sizes and shapes are checked by the contract before a kernel runs.)
 */
export function fusedRoutines(
  run: RunKernel,
  bind: Bind,
  scratch?: Scratch,
  limits?: Parameters<typeof attentionFits>[0],
): RoutineKernels {
  const kernels: RoutineKernels = {
    logsumexp({ inputs: { x }, outputs: { lse }, shapes }) {
      float32("logsumexp", x, lse)
      const width = shapes.inputs.x.at(-1) ?? 1
      run("logsumexp", logsumexpWgsl, [lse.size, width], [bind(x), bind(lse)], lse.size)
    },
    crossEntropy({ inputs: { logits, targets }, outputs: { nll }, shapes, attrs }) {
      const [N, V] = shapes.inputs.logits as [number, number]
      float32("crossEntropy", logits, nll)
      const bindings = [bind(logits), bind(targets), bind(nll)]
      run("crossEntropy", crossEntropyWgsl, [N, V, attrs.ignoreIndex], bindings, N)
    },
    "crossEntropy.vjp"({ inputs: { logits, targets, dNll }, outputs: { dLogits }, shapes, attrs }) {
      const [N, V] = shapes.inputs.logits as [number, number]
      float32("crossEntropy.vjp", logits, dNll, dLogits)
      const bindings = [bind(logits), bind(targets), bind(dNll), bind(dLogits)]
      run("crossEntropy.vjp", crossEntropyVjpWgsl, [N, V, attrs.ignoreIndex], bindings, N)
    },
  }
  const attention =
    scratch !== undefined && limits !== undefined && attentionFits(limits) ? attentionRoutines(run, bind, scratch) : {}
  return { ...kernels, ...attention }
}
