#!/usr/bin/env node
// Where a `node --cpu-prof` profile's time went: self time by function (with its file), the top
// entries, as a share of all samples. Usage: node scripts/cpu-profile-summary.mjs FILE [--top 30]
import { readFileSync } from "node:fs"

const file = process.argv[2]
const top = Number(process.argv[process.argv.indexOf("--top") + 1] || 30)
const prof = JSON.parse(readFileSync(file, "utf8"))
const byId = new Map(prof.nodes.map((n) => [n.id, n]))
const self = new Map()
const dt = prof.timeDeltas
for (let i = 0; i < prof.samples.length; i++) {
  const n = byId.get(prof.samples[i])
  const { functionName, url, lineNumber } = n.callFrame
  const key = `${functionName || "(anonymous)"} ${url.split("/").slice(-2).join("/")}:${lineNumber + 1}`
  self.set(key, (self.get(key) ?? 0) + (dt[i] ?? 0))
}
const total = [...self.values()].reduce((a, b) => a + b, 0)
console.log(`total ${(total / 1000).toFixed(0)} ms sampled`)
for (const [k, v] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top))
  console.log(`${((100 * v) / total).toFixed(1).padStart(5)}%  ${(v / 1000).toFixed(0).padStart(6)} ms  ${k}`)
