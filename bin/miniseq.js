#!/usr/bin/env node
// The `miniseq` command: the compiled CLI in dist/ (`npm run build` writes it; `npm install` in a
// clone of the repository and `npm pack` run the build).
import { existsSync } from "node:fs"

const main = new URL("../dist/cli/main.js", import.meta.url)
if (!existsSync(main)) {
  console.error("miniseq: dist/ is missing: run `npm run build` (or `npm install`) in the miniseq folder first")
  process.exit(1)
}
await import(main.href)
