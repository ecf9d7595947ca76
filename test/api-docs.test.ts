// docs/api.md is generated from the doc comments (scripts/api-docs.mjs): it must match the code.
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"

describe("the API reference", () => {
  it("docs/api.md is what `npm run docs:api` writes from the current declarations", async () => {
    const r = await promisify(execFile)("node", ["scripts/api-docs.mjs", "--check"]).then(
      (x) => x.stdout,
      (e: { stderr?: string }) => e.stderr ?? String(e),
    )
    expect(r.trim()).toBe("docs/api.md is up to date")
  })
})
