/**
 * Whether the CUDA backend runs here, and if not, why: without the addon or without a GPU,
 * `BackendUnavailable` must name the exact reason (not built and why; no driver/GPU with the CUDA
 * error; cuBLAS not loadable), and the GPU cases skip, printing why (MINISEQ_CUDA=1 makes a
 * missing GPU fail). The GPU cases are the other cuda-*.test.ts files: kernels one by one
 * (cuda-kernels), whole graphs (cuda-graphs), fused routines (cuda-fused), training
 * (cuda-train) and opt-in timings (cuda-timings); test/backends/cuda-device.ts holds the device
 * they share and their helpers.
 */
import { Effect } from "effect"
import { existsSync } from "node:fs"
import { describe, expect, it } from "vitest"
import { Backend } from "../src/core/backend.js"
import { addonPath, cudaBackendLayer, readBuildRecord } from "../src/backends/cuda/index.js"
import { cudaRoutines } from "../src/backends/cuda/fused.js"
import type { NativeDevice } from "../src/backends/cuda/native.js"
import { gpuFusedRoutines } from "../src/cli/plan-command.js"
import { BackendUnavailable } from "../src/core/errors.js"
import { cuda, missing, required } from "./backends/cuda-device.js"

describe("cuda availability", () => {
  it("says exactly why it cannot run, or runs", () => {
    if (cuda !== undefined) {
      expect(cuda.name).toBe("cuda")
      console.log(
        `cuda: ${cuda.device.name} (sm ${cuda.device.computeCapability}, ${cuda.device.multiProcessors} SMs, ` +
          `${(cuda.device.totalMemory / 2 ** 30).toFixed(0)} GiB), CUDA runtime ${cuda.device.cudaRuntime}, driver ${cuda.device.cudaDriver}, ` +
          `cuBLAS ${cuda.device.cublas} from ${cuda.device.cublasPath}`,
      )
      return
    }
    const e = missing!
    expect(e.backend).toBe("cuda")
    expect(e.message).toMatch(/^cuda: backend unavailable: /)
    if (!existsSync(addonPath())) {
      // Not built: the reason quotes what the install recorded.
      expect(e.reason).toMatch(
        /^native addon not built: .*miniseq_cuda\.node is missing \((at install: .+|no build was recorded: .+)\)$/,
      )
      const r = readBuildRecord()
      if (r !== undefined && !r.built) expect(e.reason.includes(r.reason!)).toBe(true)
    } else {
      // Built: the reason is the driver's, the device's or cuBLAS's own words.
      expect(e.reason).toMatch(
        /^(no GPU: (no NVIDIA driver on this machine \(.+\); cudaGetDeviceCount: cudaError\w+: .+|cudaGetDeviceCount failed: cudaError\w+: .+|.+)|unsupported GPU: .+cudaError\w+: .+|cuBLAS not loadable: .+|native addon failed to load: .+)$/,
      )
    }
  })

  // The kernels are compiled wherever nvcc is, GPU or not, so that a change that breaks them fails
  // here (npm install itself stays green: the other backends must install everywhere).
  it("where the install found nvcc, the addon was built", () => {
    const r = readBuildRecord()
    if (r === undefined) return // no install step has run (a bundle on the GPU machine builds its own)
    if (r.nvcc === undefined) return // no toolkit at install time: nothing was compiled
    if (!r.built)
      expect.fail(
        `the CUDA addon did not build with ${r.nvcc}: ${r.reason}; ` +
          "fix the build and run `npm run build:cuda`, or install with MINISEQ_SKIP_CUDA=1 to leave CUDA out",
      )
  })

  it("the Layer fails with the same BackendUnavailable, or provides the backend and releases it", async () => {
    const program = Effect.gen(function* () {
      return (yield* Backend).name
    }).pipe(Effect.provide(cudaBackendLayer()))
    if (cuda === undefined) {
      const err = await Effect.runPromise(Effect.flip(program))
      expect(err).toBeInstanceOf(BackendUnavailable)
      expect(err.reason).toBe(missing!.reason)
    } else {
      expect(await Effect.runPromise(program)).toBe("cuda")
    }
  })

  it("has a GPU when MINISEQ_CUDA=1", () => {
    if (required && cuda === undefined) expect.fail(`MINISEQ_CUDA=1 but: ${missing!.reason}`)
  })

  it("fuses exactly the routines GPU memory plans assume (no GPU needed)", () => {
    const names = Object.keys(cudaRoutines({ dev: {} as NativeDevice, handle: () => 0 })).sort()
    expect(names).toEqual([...gpuFusedRoutines].sort())
  })
})
