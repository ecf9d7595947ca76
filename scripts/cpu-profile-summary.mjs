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

// --callers NAME: for functions whose name contains NAME, their self time by caller chain (3 up).
const ci = process.argv.indexOf("--callers")
if (ci > 0) {
  const want = process.argv[ci + 1]
  const parent = new Map()
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const name = (id) => {
    const f = byId.get(id).callFrame
    return `${f.functionName || "(anon)"}@${f.url.split("/").pop()}`
  }
  const chains = new Map()
  for (let i = 0; i < prof.samples.length; i++) {
    const id = prof.samples[i]
    if (!byId.get(id).callFrame.functionName.includes(want)) continue
    const chain = []
    for (let p = parent.get(id), d = 0; p !== undefined && d < 3; p = parent.get(p), d++) chain.push(name(p))
    const key = chain.join(" < ")
    chains.set(key, (chains.get(key) ?? 0) + (dt[i] ?? 0))
  }
  console.log(`callers of *${want}*:`)
  for (const [k, v] of [...chains.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15))
    console.log(`${(v / 1000).toFixed(0).padStart(6)} ms  ${k}`)
}
