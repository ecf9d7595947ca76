// Why mini-sequences save memory, in the executor's own numbers. For a SwiGLU MLP block and an
// LM head + cross-entropy, run forward + backward on the CPU with and without chunked(M) and
// print the peak live bytes by kind. The counting backend's plan is checked against each run.
//   npx tsx examples/chunked-memory.ts [--json out.json]
import { writeFileSync } from "node:fs"
import {
  chunked,
  execute,
  input,
  linear,
  type MemoryKind,
  type MemoryReport,
  ops as o,
  plan,
  randomFill,
  makeCpuBackend,
  sumCrossEntropy,
  swiglu,
  targetCount,
  type Tensor,
  valueAndGrad,
} from "miniseq"

const d = 64,
  I = 224,
  V = 8192 // I ≈ 3.5·d as in Llama; a 8k vocabulary
type Block = "mlp" | "lm-head"

function step(block: Block, S: number, M: number | "none") {
  const h = input("h", [1, S, d])
  const wrap = <F extends (...a: Tensor[]) => Tensor>(f: F, combine: "concat" | "sum") =>
    M === "none" ? f : chunked(M, { axis: 1, combine })(f)
  const inputs = new Map<Tensor, MemoryKind>([[h, "activations"]])
  let loss: Tensor
  let weights: Record<string, Tensor>
  if (block === "mlp") {
    weights = { gate: input("gate", [I, d]), up: input("up", [I, d]), down: input("down", [d, I]) }
    const r = input("r", [1, S, d])
    inputs.set(r, "activations")
    loss = o.sum(o.mul(wrap((x) => swiglu(x, weights.gate!, weights.up!, weights.down!), "concat")(h), r))
  } else {
    weights = { lm_head: input("lm_head", [V, d]) }
    const targets = input("targets", [1, S], "int32")
    inputs.set(targets, "activations")
    // Σ of per-token losses per piece, divided once by the global count of targets.
    const pieceLoss = (x: Tensor, t: Tensor) => sumCrossEntropy(linear(x, weights.lm_head!), t)
    loss = o.div(wrap(pieceLoss, "sum")(h, targets), targetCount(targets))
  }
  for (const w of Object.values(weights)) inputs.set(w, "weights")
  const { value, grads } = valueAndGrad(loss, { h, ...weights })
  const gradients = Object.values(grads)
  return { outputs: [value, ...gradients], gradients, inputs }
}

function measure(block: Block, S: number, M: number | "none"): MemoryReport {
  const s = step(block, S, M)
  const cpu = makeCpuBackend()
  const planned = plan(s.outputs, s.inputs, { gradients: s.gradients, for: cpu })
  const bindings = new Map(
    [...s.inputs].map(([t, kind], i) => {
      const buffer = cpu.alloc(t.dtype, t.size)
      cpu.write(buffer, randomFill(t, i, V))
      return [t, { buffer, kind }] as const
    }),
  )
  const measured = execute(cpu, s.outputs, bindings, { gradients: s.gradients }).memory
  if (measured.peak !== planned.peak || cpu.memory().peak !== measured.peak)
    throw new Error(`plan ${planned.peak} ≠ measured ${measured.peak}`)
  return measured
}

const mib = (b: number) => (b / 2 ** 20).toFixed(2).padStart(8)
const rows: Array<Record<string, unknown>> = []
const header = `${"block".padEnd(8)} ${"S".padStart(5)} ${"M".padStart(5)} │ ${"peak MiB".padStart(8)} │ ${["weights", "grads", "saved", "temps"].map((k) => k.padStart(8)).join(" ")} │ vs none`
for (const block of ["mlp", "lm-head"] as const) {
  console.log(
    `\n${block === "mlp" ? `SwiGLU MLP (d=${d}, I=${I})` : `LM head + cross-entropy (d=${d}, V=${V})`}, forward + backward, float32, peak live bytes by kind at the peak:`,
  )
  console.log(header)
  for (const S of [512, 2048]) {
    let base = 0
    for (const M of ["none", 1, 2, 4, 8, 16] as const) {
      const m = measure(block, S, M)
      if (M === "none") base = m.peak
      const k = m.atPeak
      console.log(
        `${block.padEnd(8)} ${String(S).padStart(5)} ${String(M).padStart(5)} │ ${mib(m.peak)} │ ${[k.weights, k.gradients, k.activations, k.temporaries].map(mib).join(" ")} │ ${(base / m.peak).toFixed(2)}×`,
      )
      rows.push({ block, S, M, peak: m.peak, atPeak: m.atPeak })
    }
  }
}
console.log(
  "\nsaved = activations kept for backward (incl. the inputs); plan (counting backend) = measured (CPU) for every row.",
)
const jsonAt = process.argv.indexOf("--json")
if (jsonAt > 0) writeFileSync(process.argv[jsonAt + 1]!, JSON.stringify({ d, I, V, rows }, null, 2))
