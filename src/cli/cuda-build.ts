/**
 * The CUDA addon is built when it is first asked for, not at install: `miniseq train --backend
 * cuda` runs native/build.mjs once (nvcc, a minute or two) and every later run reuses
 * build/Release/miniseq_cuda.node. Without nvcc, the build records why and the backend's
 * `BackendUnavailable` says so; `npm run build:cuda` (or `node native/build.mjs --strict` in the
 * installed package's folder) builds it by hand.
 */
import { spawnSync } from "node:child_process"
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { Console, Effect } from "effect"

import { packageRoot } from "./package-info.js"

export const buildScript = fileURLToPath(new URL("../../native/build.mjs", import.meta.url))

/** Builds the addon unless it is there (or $MINISEQ_CUDA_ADDON names one); never fails: the layer reports what is missing. */
export const ensureCudaAddon: Effect.Effect<void> = Effect.gen(function* () {
  const { addonPath } = yield* Effect.promise(() => import("../backends/cuda/index.js"))
  if (process.env.MINISEQ_CUDA_ADDON || existsSync(addonPath()) || !existsSync(buildScript)) return
  yield* Console.log(
    "miniseq: the CUDA backend is not built yet: building it once now (node native/build.mjs; later runs reuse it)",
  )
  yield* Effect.sync(() => spawnSync(process.execPath, [buildScript], { cwd: packageRoot, stdio: "inherit" }))
})
