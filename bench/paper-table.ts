/**
 * The paper's headline table from bench/long-context.ts results: for each model and precision,
 * each mode's longest S planned and trained on one card (under the --cap the runs used), and
 * tokens/s at 8k and 32k, beside PyTorch + transformers with and without gradient checkpointing
 * from the same jobs.
 *
 *   npx tsx bench/paper-table.ts --card h100 [--pytorch-max-seq BASELINE.json ...] RESULT.json [RESULT.json ...]
 *
 * --pytorch-max-seq: PyTorch's longest S from a later bench/pytorch_baseline.py --max-seq run of the
 * same model (its "model" field says which), in place of the one inside that model's RESULT.json.
 *
 * Writes docs/results/paper-<card>.json (rows {model, precision, mode, planned, trained,
 * tokens_per_s_8k, tokens_per_s_32k}) and prints the markdown table for docs/paper.md.
 */
import { readFileSync, writeFileSync } from "node:fs"

interface Row {
  mode: string
  seq: number
  status: string
  tokensPerSecond?: number
}
interface Limit {
  mode: string
  planned: number
  trained?: Row & { stepMs?: number; devicePeak?: number; deviceHeldPeak?: number; startSeconds?: number }
  firstOom?: number
}
interface TorchRow {
  mode: string
  seq: number
  status: string
  tokens_per_s?: number
}
interface Result {
  model: string
  precision: string
  device: string
  cap: number
  rows: Row[]
  limits: Limit[]
  fullCardPlan: Record<string, number>
  pytorch?: {
    sweep?: { rows: TorchRow[]; transformers: string | null; torch: string }
    maxSeq?: { max_seq: { mode: string; max_seq: number; first_oom: number | null }[] }
  }
}

const args = process.argv.slice(2)
const valued = new Set(["--card", "--pytorch-max-seq"])
const values = (flag: string) => args.flatMap((a, i) => (a === flag && i + 1 < args.length ? [args[i + 1]!] : []))
const card = values("--card")[0] ?? "gpu"
const files = args.filter((a, i) => !valued.has(a) && !valued.has(args[i - 1] ?? ""))
const results = files.map((f) => JSON.parse(readFileSync(f, "utf8")) as Result)
type MaxSeq = NonNullable<NonNullable<Result["pytorch"]>["maxSeq"]>
const laterBaselines = new Map(
  values("--pytorch-max-seq").map((f) => {
    const b = JSON.parse(readFileSync(f, "utf8")) as MaxSeq & { model: string }
    return [b.model, b] as const
  }),
)

const out: Record<string, unknown>[] = []
const lines = [
  "| model | precision | framework, mode | planned S | trained S | tokens/s at 8k | tokens/s at 32k |",
  "|---|---|---|---:|---:|---:|---:|",
]
const fmt = (x: number | undefined) => (x === undefined ? "-" : Math.round(x).toLocaleString("en-US"))
for (const r of results) {
  for (const l of r.limits) {
    const at = (S: number) => r.rows.find((x) => x.mode === l.mode && x.seq === S && x.status === "ok")?.tokensPerSecond
    const row = {
      model: r.model,
      precision: r.precision,
      mode: l.mode,
      planned: l.planned,
      trained: l.trained?.seq ?? 0,
      first_oom: l.firstOom ?? null,
      tokens_per_s_8k: at(8192) ?? null,
      tokens_per_s_32k: at(32768) ?? null,
      step_s_at_trained: l.trained?.stepMs === undefined ? null : l.trained.stepMs / 1000,
      start_s: l.trained?.startSeconds ?? null,
      device: r.device,
      cap_bytes: r.cap,
    }
    out.push(row)
    lines.push(
      `| ${r.model} | ${r.precision} | miniseq ${l.mode} | ${fmt(l.planned)} | ${fmt(row.trained)} | ${fmt(at(8192))} | ${fmt(at(32768))} |`,
    )
  }
  const torchAt = (mode: string, S: number) =>
    r.pytorch?.sweep?.rows.find((x) => x.mode === mode && x.seq === S && x.status === "ok")?.tokens_per_s
  for (const t of (laterBaselines.get(r.model) ?? r.pytorch?.maxSeq)?.max_seq ?? []) {
    const row = {
      model: r.model,
      precision: r.precision,
      mode: `pytorch ${t.mode}`,
      planned: null,
      trained: t.max_seq,
      first_oom: t.first_oom,
      tokens_per_s_8k: torchAt(t.mode, 8192) ?? null,
      tokens_per_s_32k: torchAt(t.mode, 32768) ?? null,
      device: r.device,
      cap_bytes: r.cap,
    }
    out.push(row)
    lines.push(
      `| ${r.model} | ${r.precision} | PyTorch + transformers ${t.mode} | - | ${fmt(t.max_seq)} | ${fmt(row.tokens_per_s_8k ?? undefined)} | ${fmt(row.tokens_per_s_32k ?? undefined)} |`,
    )
  }
}
const file = `docs/results/paper-${card}.json`
writeFileSync(
  file,
  JSON.stringify({ command: `npx tsx bench/paper-table.ts ${args.join(" ")}`, rows: out }, null, 2) + "\n",
)
console.log(lines.join("\n"))
console.log(`\nwrote ${file}`)
