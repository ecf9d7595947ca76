#!/usr/bin/env node
/**
 * Bundles the browser example (src/main.ts and the parts of miniseq it uses) into
 * examples/browser/dist/main.js with esbuild: ESM for the browser, with a source map.
 * Usage: node examples/browser/build.mjs   (then: node examples/browser/serve.mjs 8080)
 */
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { build } from "esbuild"

const here = fileURLToPath(new URL(".", import.meta.url))

/**
 * Some modules the page imports also hold Node-only code it never calls: checkpoints and
 * safetensors files (node:fs, node:path, node:crypto) and Dawn for Node (the `webgpu` package,
 * native code; in the browser the device comes from navigator.gpu). Those imports resolve to an
 * empty module here, so loading the bundle works and such a function, if ever called, fails
 * with "… is not a function".
 */
const nodeOnlyStubs = {
  name: "node-only-stubs",
  setup(b) {
    b.onResolve({ filter: /^(node:.*|webgpu)$/ }, (args) => ({ path: args.path, namespace: "node-only" }))
    b.onLoad({ filter: /.*/, namespace: "node-only" }, () => ({ contents: "module.exports = {}", loader: "js" }))
  },
}

const result = await build({
  entryPoints: [join(here, "src", "main.ts")],
  outdir: join(here, "dist"),
  bundle: true,
  platform: "browser",
  format: "esm",
  target: "es2022",
  sourcemap: true,
  tsconfig: join(here, "tsconfig.json"),
  plugins: [nodeOnlyStubs],
  metafile: true,
  logLevel: "warning",
})
const bytes = Object.entries(result.metafile.outputs).find(([file]) => file.endsWith("main.js"))?.[1].bytes ?? 0
console.log(`built examples/browser/dist/main.js (${(bytes / 1024).toFixed(0)} KiB)`)
