#!/usr/bin/env node
/**
 * Bundles the browser example (src/main.ts and the parts of miniseq it uses) into
 * examples/browser/dist/main.js with esbuild: ESM for the browser, with a source map. It imports
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
  entryPoints: [join(here, "src", "main.ts")],
  outdir: join(here, "dist"),
  bundle: true,
  platform: "browser",
  format: "esm",
  target: "es2022",
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
const bytes = Object.entries(result.metafile.outputs).find(([file]) => file.endsWith("main.js"))?.[1].bytes ?? 0
console.log(`built examples/browser/dist/main.js (${(bytes / 1024).toFixed(0)} KiB)`)
