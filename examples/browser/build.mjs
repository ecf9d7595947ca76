#!/usr/bin/env node
/**
 * Bundles the browser lab (src/main.ts, its planner worker src/planner-worker.ts, and the parts of
 * miniseq they use) into examples/browser/dist/ with esbuild: minified ESM for the browser, with
 * source maps. esbuild is already a development dependency (Vite's too): nothing new to install. It imports
 * "miniseq" like any project would (here the package's own name resolves to this repository's
 * dist/: run `npm run build` first); the package's "browser" export condition and "browser" field
 * give the bundler the WebGPU backend on navigator.gpu and leave Dawn and Node's modules out.
 * Usage: node examples/browser/build.mjs   (then: node examples/browser/serve.mjs 8080)
 */
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { build } from "esbuild"

const here = fileURLToPath(new URL(".", import.meta.url))

const result = await build({
  entryPoints: [join(here, "src", "main.ts"), join(here, "src", "planner-worker.ts")],
  outdir: join(here, "dist"),
  bundle: true,
  platform: "browser",
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  tsconfig: join(here, "tsconfig.json"),
  metafile: true,
  logLevel: "warning",
})
// The page must not carry Dawn or Node's modules: a bundler gets the browser entries and stubs.
const nodeOnly = Object.keys(result.metafile.inputs).filter((f) =>
  /^node:|node_modules\/webgpu\/|(^|\/)dist\/backends\/cuda\//.test(f),
)
if (nodeOnly.length > 0) throw new Error(`the browser bundle includes Node-only modules: ${nodeOnly.join(", ")}`)
const sizes = Object.entries(result.metafile.outputs)
  .filter(([file]) => file.endsWith(".js"))
  .map(([file, o]) => `${file.split("/").at(-1)} ${(o.bytes / 1024).toFixed(0)} KiB`)
console.log(`built examples/browser/dist/: ${sizes.join(", ")} (minified)`)
