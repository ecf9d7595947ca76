// The micrograd-sized example: a two-layer network learns to separate two interleaved
// spirals. Build the graph once, differentiate it once, then run it every step.
//   npx tsx examples/micrograd.ts
import { Effect } from "effect"
import { cpuBackendLayer, evaluate, input, normal, ops as o, rng, valueAndGrad } from "miniseq"

const N = 200,
  H = 32,
  steps = 300,
  lr = 0.5
const random = rng(7)

// Data: two spirals, labels ±1.
const X = new Float64Array(N * 2),
  Y = new Float64Array(N)
for (let i = 0; i < N; i++) {
  const label = i % 2,
    t = 1.5 * Math.PI * (i / N) + 0.5
  const r = t / (2 * Math.PI)
  X[2 * i] = r * Math.cos(t + label * Math.PI) + 0.03 * (random() - 0.5)
  X[2 * i + 1] = r * Math.sin(t + label * Math.PI) + 0.03 * (random() - 0.5)
  Y[i] = label === 0 ? -1 : 1
}

// The model, as a pure graph: tanh MLP with a hinge loss.
const x = input("x", [N, 2], "float64"),
  y = input("y", [N, 1], "float64")
const params = {
  w1: input("w1", [2, H], "float64"),
  b1: input("b1", [H], "float64"),
  w2: input("w2", [H, H], "float64"),
  b2: input("b2", [H], "float64"),
  w3: input("w3", [H, 1], "float64"),
  b3: input("b3", [1], "float64"),
}
const h1 = o.tanh(o.add(o.matmul(x, params.w1), params.b1))
const h2 = o.tanh(o.add(o.matmul(h1, params.w2), params.b2))
const score = o.add(o.matmul(h2, params.w3), params.b3)
const loss = o.mean(o.relu(o.sub(1, o.mul(y, score))))
const { grads } = valueAndGrad(loss, params)
const names = Object.keys(params) as (keyof typeof params)[]

const values = Object.fromEntries(
  names.map((n) => {
    const p = params[n]
    return [n, Float64Array.from(normal(random, p.size, n.startsWith("b") ? 0 : 1 / Math.sqrt(p.shape[0]!)))]
  }),
) as Record<keyof typeof params, Float64Array>

const program = Effect.gen(function* () {
  for (let step = 0; step <= steps; step++) {
    const feeds = new Map([[x, X], [y, Y], ...names.map((n) => [params[n], values[n]] as const)])
    const out = yield* evaluate([loss, score, ...names.map((n) => grads[n])], feeds)
    const [lossValue, scores, ...gs] = out.values
    names.forEach((n, i) => values[n].forEach((v, j, a) => (a[j] = v - lr * gs[i]![j]!)))
    if (step % 50 === 0) {
      let correct = 0
      for (let i = 0; i < N; i++) if (Math.sign(scores![i]!) === Y[i]) correct++
      console.log(
        `step ${String(step).padStart(3)}  loss ${lossValue![0]!.toFixed(4)}  accuracy ${((100 * correct) / N).toFixed(1)}%`,
      )
    }
  }
})

Effect.runPromise(program.pipe(Effect.provide(cpuBackendLayer())))
