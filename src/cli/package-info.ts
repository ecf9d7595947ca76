/** The installed package's root folder and version (from its package.json), in src/cli/ and dist/cli/ alike. */
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

export const packageRoot = fileURLToPath(new URL("../../", import.meta.url))
export const version: string = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version
