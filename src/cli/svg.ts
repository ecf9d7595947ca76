/**
 * Dependency-free SVG charts for the CLI's static reports: a line chart (optionally log-log) and a
 * stacked bar chart. A charting library would be a heavy dependency for two small plots.
 *
 * Every number written goes through `num` (non-finite becomes 0, coordinates are clamped) and every
 * string through `esc`, so the output is well-formed XML with no NaN/undefined/Infinity in it.
 */

export type Format = (v: number) => string

export interface LineChartOptions {
  title: string
  xLabel: string
  yLabel: string
  /** Points are drawn in the order given; a non-finite point (or non-positive on a log axis) breaks the line. */
  series: { name: string; points: [number, number][] }[]
  logX?: boolean
  logY?: boolean
  /** Y tick labels (e.g. `formatBytes`); default `formatCount`. */
  format?: Format
  /** X tick labels; default `formatCount`. */
  xFormat?: Format
  width?: number
  height?: number
}

export interface StackedBarsOptions {
  title: string
  yLabel: string
  categories: string[]
  /** `values[i]` belongs to `categories[i]`; missing, non-finite and negative values count as 0. */
  stacks: { name: string; values: number[] }[]
  /** Y tick and total labels; default `formatCount`. */
  format?: Format
  width?: number
  height?: number
}

/** Okabe–Ito colour-blind-friendly palette (yellow last: it is faint on white). */
const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
const colour = (i: number): string => PALETTE[i % PALETTE.length]!
/** Beyond the palette, series are told apart by dashes too. */
const dash = (i: number): string | undefined => (i >= PALETTE.length ? "6 3" : undefined)

const ENTITIES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" }
/** XML-escapes text, dropping characters XML 1.0 forbids. */
export const esc = (s: string): string =>
  // biome-ignore lint/suspicious/noControlCharactersInRegex: these are the control characters XML forbids
  s.replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g, "").replace(/[&<>"']/g, (c) => ENTITIES[c]!)

/** A coordinate: finite, clamped, two decimals. */
const num = (v: number): string =>
  Number.isFinite(v) ? String(Math.round(Math.max(-1e6, Math.min(1e6, v)) * 100) / 100) : "0"
const clean = (v: number): number => Number(v.toPrecision(12))
const sig3 = (v: number): string => String(Number(v.toPrecision(3)))

type Attrs = Record<string, string | number | undefined>
function el(tag: string, attrs: Attrs, body?: string): string {
  let a = ""
  for (const [k, v] of Object.entries(attrs))
    if (v !== undefined) a += ` ${k}="${typeof v === "number" ? num(v) : esc(v)}"`
  return body === undefined ? `<${tag}${a}/>` : `<${tag}${a}>${body}</${tag}>`
}
const text = (attrs: Attrs, s: string): string => el("text", attrs, esc(s))

/** Bytes with binary units and 3 significant digits: 512 B, 1.5 KiB, 118 MiB, 1.5 GiB. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return String(n)
  if (n < 0) return `-${formatBytes(-n)}`
  const units = ["B", "KiB", "MiB", "GiB", "TiB"]
  let p = 0
  while (p < units.length - 1 && n / 1024 ** p >= 999.5) p++ // 3 digits: 1000 KiB shows as 0.977 MiB
  return `${sig3(n / 1024 ** p)} ${units[p]}`
}

/**
 * Counts with k/M/G/T suffixes and 3 significant digits: 512, 1k, 1.5M. A round binary multiple is
 * labelled in binary units (1024 → 1k, 65536 → 64k), anything else in decimal (1000 → 1k, 12345 → 12.3k).
 */
export function formatCount(n: number): string {
  if (!Number.isFinite(n)) return String(n)
  if (n < 0) return `-${formatCount(-n)}`
  if (n >= 1e15) {
    const [m, e] = n.toExponential(2).split("e")
    return `${Number(m)}e${Number(e)}`
  }
  if (n < 1000) return Number.isInteger(n) ? String(n) : sig3(n)
  let p = 1
  while (p < 4 && n >= 1000 ** (p + 1)) p++
  const suffix = ["", "k", "M", "G", "T"][p]!
  const binary = n / 1024 ** p
  if (Number(binary.toPrecision(3)) === binary) return `${binary}${suffix}`
  const decimal = Number((n / 1000 ** p).toPrecision(3))
  return decimal >= 1000 && p < 4 ? `${sig3(decimal / 1000)}${["", "k", "M", "G", "T"][p + 1]}` : `${decimal}${suffix}`
}

/** An axis: tick positions and labels as fractions 0..1 of its length, and a data → fraction map. */
interface Axis {
  ticks: { at: number; label: string }[]
  frac: (v: number) => number
}
const clamp01 = (f: number): number => (f >= 0 ? Math.min(1, f) : 0) // NaN → 0

function extent(values: number[]): [number, number] | undefined {
  if (values.length === 0) return undefined
  let lo = Infinity,
    hi = -Infinity
  for (const v of values) {
    lo = Math.min(lo, v)
    hi = Math.max(hi, v)
  }
  return [lo, hi]
}

function labels(ticks: number[], format: Format | undefined): string[] {
  if (format) return ticks.map(format)
  const ls = ticks.map(formatCount)
  return new Set(ls).size === ls.length ? ls : ticks.map((t) => String(clean(t)))
}

/** A linear axis with 1-2-5 ticks, its domain widened to whole ticks. */
function linearAxis(values: number[], format?: Format): Axis {
  let [lo, hi] = extent(values.filter(Number.isFinite)) ?? [0, 1]
  if (!(hi - lo > Math.max(1e-290, 1e-9 * Math.max(Math.abs(lo), Math.abs(hi))))) {
    // (near-)zero range: pad around the value
    const c = lo / 2 + hi / 2
    const pad = Math.abs(c) >= 1e-200 ? Math.abs(c) / 2 : 1
    lo = Math.max(-Number.MAX_VALUE, c - pad)
    hi = Math.min(Number.MAX_VALUE, c + pad)
  }
  const raw = hi / 5 - lo / 5 // avoids the overflow of (hi - lo) / 5
  // bytes step in whole binary units (20 GiB, not 18.6 GiB)
  const unit = format === formatBytes && raw >= 1024 ? 1024 ** Math.min(4, Math.floor(Math.log2(raw) / 10)) : 1
  const mag = 10 ** Math.floor(Math.log10(raw / unit))
  const r = raw / unit / mag
  const step = (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * mag * unit
  let d0 = Math.floor(lo / step) * step,
    d1 = Math.ceil(hi / step) * step
  let ticks: number[] = []
  if ([step, d0, d1].every(Number.isFinite) && step > 0) {
    const i0 = Math.round(d0 / step),
      n = Math.round(d1 / step) - i0
    for (let k = 0; k <= n && k <= 50; k++) ticks.push(clean((i0 + k) * step))
  } else {
    // overflow at the extremes of the double range: ticks at the data ends
    d0 = lo
    d1 = hi
    ticks = [lo, hi]
  }
  const frac = (v: number): number => clamp01((v / 2 - d0 / 2) / (d1 / 2 - d0 / 2))
  const ls = labels(ticks, format)
  return { frac, ticks: ticks.map((t, i) => ({ at: frac(t), label: ls[i]! })) }
}

/**
 * A log axis over positive values. Ticks sit at powers of 2 when every value is a power of 2 or the
 * axis shows bytes, else at powers of 10 (with 2× and 5× ticks when it spans at most two decades).
 */
function logAxis(values: number[], format?: Format): Axis {
  const base2 = values.length > 0 && (format === formatBytes || values.every((v) => Number.isInteger(Math.log2(v))))
  const lg = base2 ? Math.log2 : Math.log10
  const base = base2 ? 2 : 10
  const ext = extent(values.map(lg))
  let e0 = ext ? Math.floor(ext[0] + 1e-9) : 0,
    e1 = ext ? Math.ceil(ext[1] - 1e-9) : 1
  if (e0 >= e1) {
    e0 -= 1
    e1 += 1
  }
  const k = Math.max(1, Math.ceil((e1 - e0) / 10)) // at most ~10 major ticks
  e0 = Math.floor(e0 / k) * k
  e1 = Math.ceil(e1 / k) * k
  const frac = (v: number): number => clamp01((lg(v) - e0) / (e1 - e0))
  const ticks: { at: number; v: number; e: number }[] = []
  for (let e = e0; e <= e1; e += k) {
    ticks.push({ at: (e - e0) / (e1 - e0), v: clean(base ** e), e })
    // short spans get intermediate ticks: 2× and 5× a power of 10, 1.5× a power of 2
    const extra = e === e1 ? [] : !base2 && e1 - e0 <= 2 ? [2, 5] : base2 && k === 1 && e1 - e0 <= 3 ? [1.5] : []
    for (const m of extra) ticks.push({ at: (e + lg(m) - e0) / (e1 - e0), v: clean(m * base ** e), e })
  }
  const ls = labels(
    ticks.map((t) => t.v),
    format,
  )
  const label = (t: (typeof ticks)[number], i: number): string =>
    Number.isFinite(t.v) && t.v > 0 ? ls[i]! : base2 ? `2^${t.e}` : `1e${t.e}`
  return { frac, ticks: ticks.map((t, i) => ({ at: t.at, label: label(t, i) })) }
}

interface Box {
  l: number
  t: number
  w: number
  h: number
}

/** Background, title, grid, axes, tick labels and axis titles. */
function frame(
  W: number,
  H: number,
  b: Box,
  title: string,
  y: Axis,
  yLabel: string,
  x?: Axis,
  xLabel?: string,
): string {
  const out = [
    el("rect", { width: W, height: H, fill: "white" }),
    text({ x: W / 2, y: 24, "text-anchor": "middle", "font-size": 15, "font-weight": "bold" }, title),
  ]
  for (const t of y.ticks) {
    const py = b.t + (1 - t.at) * b.h
    out.push(el("line", { x1: b.l, x2: b.l + b.w, y1: py, y2: py, stroke: "#e4e4e4" }))
    out.push(text({ class: "tick-y", x: b.l - 6, y: py + 4, "text-anchor": "end", "font-size": 11 }, t.label))
  }
  for (const t of x?.ticks ?? []) {
    const px = b.l + t.at * b.w
    out.push(el("line", { x1: px, x2: px, y1: b.t, y2: b.t + b.h, stroke: "#e4e4e4" }))
    out.push(text({ class: "tick-x", x: px, y: b.t + b.h + 16, "text-anchor": "middle", "font-size": 11 }, t.label))
  }
  out.push(
    el("path", { d: `M${num(b.l)},${num(b.t)}V${num(b.t + b.h)}H${num(b.l + b.w)}`, fill: "none", stroke: "#333" }),
  )
  const yl = { x: 16, y: b.t + b.h / 2 }
  out.push(text({ ...yl, transform: `rotate(-90 ${num(yl.x)} ${num(yl.y)})`, "text-anchor": "middle" }, yLabel))
  if (xLabel !== undefined) out.push(text({ x: b.l + b.w / 2, y: H - 12, "text-anchor": "middle" }, xLabel))
  return out.join("\n")
}

const svg = (W: number, H: number, body: string): string =>
  `<svg xmlns="http://www.w3.org/2000/svg" width="${num(W)}" height="${num(H)}" viewBox="0 0 ${num(W)} ${num(H)}" ` +
  `font-family="sans-serif" font-size="12">\n${body}\n</svg>\n`
const size = (v: number | undefined, dflt: number): number =>
  v !== undefined && Number.isFinite(v) ? Math.min(1e5, Math.max(200, v)) : dflt
/** Right margin wide enough for the legend (≈7 px per character at 12 px). */
const legendWidth = (names: string[], W: number): number =>
  names.length === 0 ? 0 : Math.min(W * 0.35, Math.max(90, 40 + 7 * Math.max(...names.map((n) => n.length))))

export function lineChart(o: LineChartOptions): string {
  const W = size(o.width, 720),
    H = size(o.height, 420)
  const ok = (v: number, log?: boolean): boolean => Number.isFinite(v) && (!log || v > 0)
  const valid = (p: [number, number]): boolean => ok(p[0], o.logX) && ok(p[1], o.logY)
  const all = o.series.flatMap((s) => s.points.filter(valid))
  const axis = (vs: number[], log?: boolean, f?: Format): Axis => (log ? logAxis(vs, f) : linearAxis(vs, f))
  const xa = axis(
    all.map((p) => p[0]),
    o.logX,
    o.xFormat,
  )
  const ya = axis(
    all.map((p) => p[1]),
    o.logY,
    o.format,
  )
  const lw = legendWidth(
    o.series.map((s) => s.name),
    W,
  )
  const b: Box = { l: 78, t: 44, w: Math.max(20, W - 78 - 24 - lw), h: Math.max(20, H - 44 - 56) }
  const px = (x: number): number => b.l + xa.frac(x) * b.w
  const py = (y: number): number => b.t + (1 - ya.frac(y)) * b.h

  const out = [frame(W, H, b, o.title, ya, o.yLabel, xa, o.xLabel)]
  o.series.forEach((s, i) => {
    const runs: [number, number][][] = [[]]
    for (const p of s.points) {
      if (valid(p)) runs[runs.length - 1]!.push(p)
      else if (runs[runs.length - 1]!.length > 0) runs.push([])
    }
    const markAll = runs.reduce((n, r) => n + r.length, 0) <= 50
    const g = [el("title", {}, esc(s.name))]
    for (const run of runs) {
      const pts = run.map(([x, y]) => `${num(px(x))},${num(py(y))}`).join(" ")
      if (run.length >= 2)
        g.push(
          el("polyline", {
            points: pts,
            fill: "none",
            stroke: colour(i),
            "stroke-width": 2,
            "stroke-dasharray": dash(i),
          }),
        )
      if (markAll || run.length === 1)
        for (const [x, y] of run) g.push(el("circle", { cx: px(x), cy: py(y), r: 3, fill: colour(i) }))
    }
    out.push(el("g", { class: "series" }, g.join("")))
    const ly = b.t + 8 + i * 20,
      lx = W - lw - 4
    out.push(
      el("line", {
        x1: lx,
        x2: lx + 20,
        y1: ly,
        y2: ly,
        stroke: colour(i),
        "stroke-width": 2,
        "stroke-dasharray": dash(i),
      }),
    )
    if (markAll) out.push(el("circle", { cx: lx + 10, cy: ly, r: 3, fill: colour(i) }))
    out.push(text({ class: "legend", x: lx + 26, y: ly + 4 }, s.name))
  })
  return svg(W, H, out.join("\n"))
}

export function stackedBars(o: StackedBarsOptions): string {
  const W = size(o.width, 720),
    H = size(o.height, 420)
  const fmt = o.format ?? formatCount
  const value = (s: { values: number[] }, c: number): number => {
    const v = s.values[c]
    return v !== undefined && Number.isFinite(v) && v > 0 ? v : 0
  }
  const totals = o.categories.map((_, c) =>
    Math.min(
      Number.MAX_VALUE,
      o.stacks.reduce((a, s) => a + value(s, c), 0),
    ),
  )
  const ya = linearAxis([0, Math.max(0, ...totals) * 1.08 || 1], o.format) // headroom for the total labels
  const lw = legendWidth(
    o.stacks.map((s) => s.name),
    W,
  )
  const catLen = Math.max(0, ...o.categories.map((c) => c.length))
  const w = Math.max(20, W - 78 - 24 - lw)
  const band = w / Math.max(1, o.categories.length)
  const rotate = band < catLen * 6.5 + 8
  const bottom = rotate ? Math.min(H * 0.35, 24 + catLen * 5.5) : 40
  const b: Box = { l: 78, t: 44, w, h: Math.max(20, H - 44 - bottom) }
  const py = (y: number): number => b.t + (1 - ya.frac(y)) * b.h

  const out = [frame(W, H, b, o.title, ya, o.yLabel)]
  const bw = band * 0.6
  o.categories.forEach((cat, c) => {
    const x = b.l + c * band + (band - bw) / 2
    let acc = 0
    o.stacks.forEach((s, i) => {
      const v = value(s, c)
      if (v === 0) return
      const y0 = py(acc),
        y1 = py((acc += v))
      out.push(
        el(
          "rect",
          { x, y: y1, width: bw, height: Math.max(0, y0 - y1), fill: colour(i), stroke: "white", "stroke-width": 0.5 },
          el("title", {}, esc(`${s.name} · ${cat}: ${fmt(v)}`)),
        ),
      )
    })
    const total = totals[c]!
    if (Number.isFinite(total))
      out.push(
        text({ class: "total", x: x + bw / 2, y: py(total) - 5, "text-anchor": "middle", "font-size": 11 }, fmt(total)),
      )
    const cx = x + bw / 2,
      cy = b.t + b.h + 16
    out.push(
      rotate
        ? text(
            {
              class: "category",
              x: cx,
              y: cy,
              "text-anchor": "end",
              "font-size": 11,
              transform: `rotate(-35 ${num(cx)} ${num(cy)})`,
            },
            cat,
          )
        : text({ class: "category", x: cx, y: cy, "text-anchor": "middle", "font-size": 11 }, cat),
    )
  })
  // Legend top-down in the order the segments stack visually (last stack on top).
  o.stacks.forEach((s, i) => {
    const ly = b.t + 8 + (o.stacks.length - 1 - i) * 20,
      lx = W - lw - 4
    out.push(el("rect", { x: lx + 4, y: ly - 6, width: 12, height: 12, fill: colour(i) }))
    out.push(text({ class: "legend", x: lx + 26, y: ly + 4 }, s.name))
  })
  return svg(W, H, out.join("\n"))
}
