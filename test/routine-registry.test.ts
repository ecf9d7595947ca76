// Every routine region, forward and backward, hands its kernel the names its declaration lists
// (src/core/routines/registry.ts): checked by the contract on a backend that fuses every routine
// and computes nothing, so the GPU-only kernels' calls are checked without a GPU.
import { describe, expect, it } from "vitest"
import { valueAndGrad } from "../src/core/autodiff.js"
import { checkedBackend } from "../src/core/checked-backend.js"
import { makeCountingBackend } from "../src/core/counting.js"
import { execute } from "../src/core/executor.js"
import { input, type Tensor } from "../src/core/graph.js"
import * as o from "../src/core/ops.js"
import { attention } from "../src/core/routines/attention.js"
import { fusedRmsNorm, fusedRope, logsumexp, silu, siluMul } from "../src/core/routines/basic.js"
import { sumCrossEntropy } from "../src/core/routines/cross-entropy.js"
import { mapKernels, routineNames, sameKernel } from "../src/core/routines/registry.js"
import { adamwGraph, adamwOutputs } from "../src/models/optimizer.js"

describe("the routine registry", () => {
  it("names every fused call's buffers as declared, for every routine and its VJP", () => {
    const called = new Set<string>()
    const counting = makeCountingBackend()
    const backend = checkedBackend({ ...counting, routines: sameKernel(routineNames, () => {}) })
    const routines = mapKernels(backend.routines!, (k, n) => (call) => {
      called.add(n)
      k(call)
    })
    const spied = { ...backend, routines }
    const kind = "activations" as const
    const bind = (t: Tensor) => [t, { buffer: spied.alloc(t.dtype, t.size), kind }] as const

    const [x, w, head] = [input("x", [1, 2, 4, 8]), input("w", [8]), input("head", [5, 8])]
    const targets = input("t", [8], "int32")
    const h = fusedRope(fusedRmsNorm(x, w), 10000, 0)
    const a = attention(h, h, h)
    const y = o.add(siluMul(a, silu(a)), logsumexp(a))
    const loss = sumCrossEntropy(o.matmul(o.reshape(y, [8, 8]), head, { transB: true }), targets)
    const { value, grads } = valueAndGrad(loss, { x, w, head })
    execute(spied, [value, grads.x, grads.w, grads.head], new Map([x, w, head, targets].map(bind)))

    const opt = adamwGraph({ w: [4, 4] }, undefined, undefined, {}, true)
    const state = [opt.params, opt.grads, opt.m, opt.v].flatMap((r) => Object.values(r))
    const scalars = [opt.lr, opt.correction1, opt.correction2]
    execute(spied, adamwOutputs(opt), new Map([...state, ...scalars].map(bind)), { inPlace: opt.inPlace })

    expect([...called].sort()).toEqual([...routineNames].sort())
  })
})
