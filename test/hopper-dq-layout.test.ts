// The fused Hopper backward's dQ indexing without a GPU: bench/attention_hopper/dq_layout_check.cc
// replays the kernel's own index rules (native/kernels/attention_hopper_dq_layout.cuh) on a byte
// array with wgmma's operand layouts, against dQ = dS·K in float64, and first checks that layout
// model on the forward's V tile (read correctly on an H100). Needs a C++ compiler (CI has g++;
// CI=true makes a missing one a failure).
import { execFileSync, spawnSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"

const cxx = process.env.CXX ?? "g++"
const missing = spawnSync(cxx, ["--version"]).status === 0 ? undefined : `no C++ compiler (${cxx})`
const inCI = process.env.CI === "true"
if (missing !== undefined && !inCI) console.warn(`test/hopper-dq-layout.test.ts skipped: ${missing}`)

describe.skipIf(missing !== undefined && !inCI)("the fused Hopper backward's dQ path (host replay)", () => {
  const dir = mkdtempSync(join(tmpdir(), "miniseq-dq-"))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it("stores dSᵀ, reads dS and K, and adds each dQ element where dS·K puts it", () => {
    if (missing !== undefined) throw new Error(`CI=true needs ${missing}`)
    const exe = join(dir, "dq_layout_check")
    execFileSync(cxx, ["-std=c++17", "-O1", "bench/attention_hopper/dq_layout_check.cc", "-o", exe])
    const run = spawnSync(exe, { encoding: "utf8" })
    expect(run.stdout).toContain("dq layout: PASS")
    expect(run.stdout).not.toContain("FAIL")
    // the model on V (D = 64, 128); D = 64 and 128, each split by keys and by columns (value and
    // coverage each); the bulk path's parts at D = 64 and 128 (value and float2 pairing each); the
    // model on Q; the K-major dS form at D = 64 and 128 (value and coverage each)
    expect(run.stdout.match(/^ok /gm)?.length).toBe(20)
    expect(run.status).toBe(0)
  }, 60_000)
})
