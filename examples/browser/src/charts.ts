/** The lab's SVG charts, written as strings: a stacked bar of memory by kind, and live bytes over a step. */
import { type ByKind, memoryKinds } from "miniseq"

/** Bytes in binary units, 3 significant digits: 512 B, 1.50 KiB, 118 MiB, 15.0 GiB. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"]
  let p = 0
  while (p < units.length - 1 && n / 1024 ** p >= 999.5) p++
  const v = n / 1024 ** p
  return `${p === 0 ? v : v.toPrecision(3)} ${units[p]}`
}

/** Tokens with k/M suffixes for round binary multiples (1024 → 1k, 65536 → 64k). */
export function formatTokens(n: number): string {
  if (n >= 2 ** 20 && n % 2 ** 20 === 0) return `${n / 2 ** 20}M`
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024}k`
  return n.toLocaleString("en-US")
}

export const kindColours: Record<keyof ByKind, string> = {
  weights: "#2563eb",
  gradients: "#f59e0b",
  optimizer: "#8b5cf6",
  activations: "#10b981",
  temporaries: "#ef4444",
}
export const kindLabels: Record<keyof ByKind, string> = {
  weights: "weights",
  gradients: "gradients",
  optimizer: "optimizer",
  activations: "saved activations",
  temporaries: "temporaries",
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

/**
 * One horizontal bar of `byKind` on a scale of `scale` bytes (every bar of a chart shares it), with
 * a dashed line at `limit` (the GPU's memory).
 */
export function stackedBar(byKind: ByKind, scale: number, limit: number): string {
  const W = 100
  let x = 0
  const parts = memoryKinds
    .filter((k) => byKind[k] > 0)
    .map((k) => {
      const w = (byKind[k] / scale) * W
      const r = `<rect x="${x.toFixed(3)}" y="0" width="${w.toFixed(3)}" height="10" fill="${kindColours[k]}"><title>${esc(`${kindLabels[k]}: ${formatBytes(byKind[k])}`)}</title></rect>`
      x += w
      return r
    })
  const lx = ((limit / scale) * W).toFixed(3)
  return `<svg class="bar" viewBox="0 0 ${W} 10" preserveAspectRatio="none" role="img" aria-label="memory by kind">${parts.join("")}<line x1="${lx}" x2="${lx}" y1="0" y2="10" stroke="#111" stroke-width="0.6" stroke-dasharray="1.5 1" vector-effect="non-scaling-stroke"/></svg>`
}

/** Live bytes against the executor's allocations and frees; `optimizerStart` marks where AdamW begins. */
export function timelineChart(live: readonly number[], optimizerStart: number, scale: number, colour: string): string {
  const W = 600
  const H = 160
  const pad = { left: 64, right: 8, top: 8, bottom: 22 }
  const pw = W - pad.left - pad.right
  const ph = H - pad.top - pad.bottom
  const n = Math.max(2, live.length)
  const x = (i: number) => pad.left + (i / (n - 1)) * pw
  const y = (b: number) => pad.top + (1 - b / scale) * ph
  // A step line: live bytes hold until the next allocation or free.
  let d = `M${x(0).toFixed(1)},${y(live[0] ?? 0).toFixed(1)}`
  for (let i = 1; i < live.length; i++) d += `H${x(i).toFixed(1)}V${y(live[i]!).toFixed(1)}`
  const peak = live.reduce((m, b) => Math.max(m, b), 0)
  const grid = [0, 0.25, 0.5, 0.75, 1]
    .map((f) => {
      const yy = y(f * scale).toFixed(1)
      return `<line x1="${pad.left}" x2="${W - pad.right}" y1="${yy}" y2="${yy}" stroke="#e3e6ea"/><text x="${pad.left - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle">${formatBytes(f * scale)}</text>`
    })
    .join("")
  const ox = x(optimizerStart).toFixed(1)
  return (
    `<svg class="timeline" viewBox="0 0 ${W} ${H}" role="img" aria-label="live bytes over one training step">` +
    `<g font-size="11" fill="#5f6670">${grid}` +
    `<line x1="${ox}" x2="${ox}" y1="${pad.top}" y2="${pad.top + ph}" stroke="#9aa1aa" stroke-dasharray="3 3"/>` +
    `<text x="${pad.left}" y="${H - 6}">forward + backward →</text><text x="${ox}" y="${H - 6}" text-anchor="start"> AdamW</text></g>` +
    `<path d="${d}" fill="none" stroke="${colour}" stroke-width="1.5"/>` +
    `<line x1="${pad.left}" x2="${W - pad.right}" y1="${y(peak).toFixed(1)}" y2="${y(peak).toFixed(1)}" stroke="${colour}" stroke-dasharray="4 3" stroke-width="0.8"/>` +
    `</svg>`
  )
}
