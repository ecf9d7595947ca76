/**
 * The native float32 GEMM for cpu-fast in Node: native/cpu/build/miniseq_cpu.node (native/cpu/),
 * built by the package's install script where a C++ compiler exists (`npm run build:cpu` rebuilds
 * it). It has the WebAssembly kernel's signature over the same memory, so it replaces that kernel
 * call for call (the products of matmul and of the fused attention, on both threads). This file
 * imports nothing of Node (the browser build loads it): Node's modules are found at run time.
 *
 * Why native: WebAssembly SIMD is 128 bits wide with no fused multiply-add in Node 20 (~50
 * GFLOP/s a core here); the addon's AVX-512 kernel reaches ~200 (docs/cpu.md).
 */

/** The kernel: (a, rsA, csA, b, rsB, csB, c, ldc, m, n, k, accumulate, …) in bytes of the memory. */
export type GemmKernel = (...args: number[]) => void
/** o[i] = exp(x[i]·scale − shift) over n elements at byte addresses; returns Σ (the WebAssembly kernel's contract). */
export type ExpKernel = (x: number, o: number, n: number, scale: number, shift: number) => number
/** The kernels bound to one memory; expaffine and attention only where the CPU has AVX-512. */
export interface NativeKernels {
  readonly gemm: GemmKernel
  readonly expaffine?: ExpKernel
  /** ./attention-task.ts's `attentionTask` on the job's words (an Array), in C++. */
  readonly attention?: (words: ArrayLike<number>) => void
  /**
   * The reference's fused cross-entropy (../cpu/fused.ts) in C++: forward nll (g 0) or backward
   * dLogits; x, out, g are byte addresses, targets an Int32Array of N.
   */
  readonly crossEntropy?: (
    backward: number,
    x: number,
    targets: Int32Array,
    out: number,
    g: number,
    N: number,
    V: number,
    ignore: number,
  ) => void
  /** ./elementwise.ts's `reduceSumF32` (float64 sums, same order: bitwise) on byte addresses. */
  readonly reduceSum?: (x: number, o: number, outer: number, axis: number, inner: number) => void
}

export interface NativeGemm {
  /** The micro-kernel the CPU runs: "avx512" or "avx2". */
  readonly kernel: string
  /** Its tile, rows × columns: two threads split products at these multiples. */
  readonly tile: readonly [number, number]
  /** The addon's file (a helper thread loads it again). */
  readonly path: string
  /** The kernels over the memory that `f32` views from its start. */
  bind(f32: Float32Array): NativeKernels
}

/** The addon interface this file speaks (native/cpu/addon.cc's `abi`). */
const ABI = 1

interface Addon {
  abi?: number
  kernel: string
  tile: [number, number]
  bind(f32: Float32Array): NativeKernels
}
type NodeProcess = {
  env: Record<string, string | undefined>
  getBuiltinModule?: (id: string) => unknown
}
const nodeProcess = (globalThis as { process?: NodeProcess }).process

/** The addon's path: native/cpu/build/ of the package (this file is src/… or dist/backends/cpu-fast/). */
export const nativeGemmPath = (): string | undefined => {
  const urlModule = nodeProcess?.getBuiltinModule?.("node:url") as { fileURLToPath(u: URL): string } | undefined
  if (urlModule === undefined || !import.meta.url.startsWith("file:")) return undefined
  return urlModule.fileURLToPath(new URL("../../../native/cpu/build/miniseq_cpu.node", import.meta.url))
}

let cached: NativeGemm | string | undefined

/**
 * The native GEMM, or why not (a reason to show in one line). undefined outside Node, and when
 * MINISEQ_CPU_NATIVE=0 turns it off.
 */
export function loadNativeGemm(): NativeGemm | string | undefined {
  if (nodeProcess?.getBuiltinModule === undefined) return undefined
  if (nodeProcess.env.MINISEQ_CPU_NATIVE === "0") return undefined
  if (cached !== undefined) return cached
  const path = nativeGemmPath()
  const fs = nodeProcess.getBuiltinModule("node:fs") as { existsSync(p: string): boolean }
  const { createRequire } = nodeProcess.getBuiltinModule("node:module") as {
    createRequire(from: string): (id: string) => unknown
  }
  if (path === undefined) cached = "this build of miniseq is not loaded from files"
  else if (!fs.existsSync(path))
    cached = "the native GEMM is not built: it needs a C++ compiler at install; build it with `npm run build:cpu`"
  else
    try {
      const addon = createRequire(path)(path) as Addon
      cached =
        addon.abi !== ABI
          ? `the native GEMM at ${path} was built from other sources (interface ${addon.abi ?? "none"}, want ${ABI}): rebuild it with \`npm run build:cpu\``
          : addon.kernel === "none"
            ? "this CPU has neither AVX-512 nor AVX2+FMA"
            : { kernel: addon.kernel, tile: addon.tile, path, bind: (f32) => addon.bind(f32) }
    } catch (e) {
      cached = `the native GEMM failed to load: ${String((e as Error)?.message ?? e).split("\n")[0]}`
    }
  return cached
}
