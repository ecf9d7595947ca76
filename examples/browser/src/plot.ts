/** The live loss plot on a <canvas>: the training loss as a line, the held-out loss as dots; redrawn whole after every step. */

export interface PlotOptions {
  /** The x axis always spans steps 1..totalSteps, so the line grows toward the right edge. */
  readonly totalSteps: number
  /** Held-out losses, drawn as orange dots. */
  readonly heldOut?: readonly { step: number; loss: number }[]
}

/** Round tick values covering [lo, hi]: steps of 1, 2 or 5 × 10^k, about `count` of them. */
function ticks(lo: number, hi: number, count: number): number[] {
  const raw = (hi - lo) / Math.max(1, count)
  const magnitude = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? raw
  const out: number[] = []
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)))
  return out
}

export function drawLossPlot(
  canvas: HTMLCanvasElement,
  points: readonly { step: number; loss: number }[],
  opts: PlotOptions,
): void {
  // Draw at the screen's pixel density so lines stay sharp on high-DPI displays.
  const dpr = window.devicePixelRatio || 1
  const width = canvas.clientWidth
  const height = canvas.clientHeight
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr)
    canvas.height = Math.round(height * dpr)
  }
  const ctx = canvas.getContext("2d")
  if (ctx === null) return
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0)
  ctx.clearRect(0, 0, width, height)

  const pad = { left: 48, right: 16, top: 16, bottom: 36 }
  const plotW = width - pad.left - pad.right
  const plotH = height - pad.top - pad.bottom
  const heldOut = opts.heldOut ?? []
  const losses = [...points, ...heldOut].map((p) => p.loss).filter(Number.isFinite)
  // The y range: 0 up to a little above the highest loss seen (ln 256 ≈ 5.5 before the first step).
  const yMax = losses.length === 0 ? 6 : Math.max(...losses) * 1.05
  const yMin = losses.length === 0 ? 0 : Math.max(0, Math.min(...losses) - 0.25 * (yMax - Math.min(...losses)))
  const xMax = Math.max(2, opts.totalSteps)
  const x = (step: number) => pad.left + ((step - 1) / (xMax - 1)) * plotW
  const y = (loss: number) => pad.top + (1 - (loss - yMin) / (yMax - yMin || 1)) * plotH

  // Grid and labels.
  ctx.font = "12px system-ui, sans-serif"
  ctx.strokeStyle = "#e3e6ea"
  ctx.fillStyle = "#5f6670"
  ctx.lineWidth = 1
  ctx.textAlign = "right"
  ctx.textBaseline = "middle"
  for (const v of ticks(yMin, yMax, 5)) {
    ctx.beginPath()
    ctx.moveTo(pad.left, y(v))
    ctx.lineTo(pad.left + plotW, y(v))
    ctx.stroke()
    ctx.fillText(v.toFixed(v % 1 === 0 ? 0 : 1), pad.left - 6, y(v))
  }
  ctx.textAlign = "center"
  ctx.textBaseline = "top"
  for (const s of ticks(1, xMax, 6).filter((s) => s >= 1)) ctx.fillText(String(s), x(s), pad.top + plotH + 6)
  ctx.fillText("step", pad.left + plotW / 2, pad.top + plotH + 20)
  ctx.save()
  ctx.translate(12, pad.top + plotH / 2)
  ctx.rotate(-Math.PI / 2)
  ctx.fillText("loss", 0, -6)
  ctx.restore()
  ctx.strokeStyle = "#9aa1aa"
  ctx.strokeRect(pad.left, pad.top, plotW, plotH)

  // The held-out dots, then the loss line with a dot on the latest step.
  ctx.fillStyle = "#ea580c"
  for (const p of heldOut) {
    if (!Number.isFinite(p.loss)) continue
    ctx.beginPath()
    ctx.arc(x(p.step), y(p.loss), 4.5, 0, 2 * Math.PI)
    ctx.fill()
  }
  if (points.length === 0) return
  ctx.strokeStyle = "#2563eb"
  ctx.lineWidth = 2
  ctx.lineJoin = "round"
  ctx.beginPath()
  points.forEach((p, i) => (i === 0 ? ctx.moveTo(x(p.step), y(p.loss)) : ctx.lineTo(x(p.step), y(p.loss))))
  ctx.stroke()
  const last = points[points.length - 1]!
  ctx.fillStyle = "#2563eb"
  ctx.beginPath()
  ctx.arc(x(last.step), y(last.loss), 3.5, 0, 2 * Math.PI)
  ctx.fill()
}
