/**
 * A small stand-in for vitest's describe/it/expect, so test/cuda.test.ts, cuda-train.test.ts
 * and conformance.test.ts can run as bundled scripts on the GPU machine, which has Node but no
 * node_modules (scripts/cuda-device.sh bundles them with esbuild, aliasing "vitest" to this
 * file). Only what those tests use.
 * SHIM_FILTER=regexp runs only the tests whose full name matches it. Ends with vitest-like
 * "N passed, N failed, N skipped" and exit code 1 on any failure.
 */
import assert from "node:assert/strict"

type Fn = () => unknown
interface Case {
  readonly name: string
  readonly fn: Fn
  readonly skip: boolean
}

const cases: Case[] = []
const after: Fn[] = []
const stack: { name: string; skip: boolean }[] = []
const filter = new RegExp(process.env.SHIM_FILTER ?? "")

function suite(name: string, fn: () => void, skip: boolean): void {
  stack.push({ name, skip: skip || stack.some((s) => s.skip) })
  try {
    fn()
  } finally {
    stack.pop()
  }
}

export const describe = Object.assign((name: string, fn: () => void) => suite(name, fn, false), {
  skipIf: (cond: boolean) => (name: string, fn: () => void) => suite(name, fn, cond),
  skip: (name: string, fn: () => void) => suite(name, fn, true),
})

export const it = (name: string, fn: Fn): void => {
  cases.push({ name: [...stack.map((s) => s.name), name].join(" > "), fn, skip: stack.some((s) => s.skip) })
}
export const test = it
export const afterAll = (fn: Fn): void => {
  after.push(fn)
}

export function expect(actual: unknown, message?: string) {
  const m = (s: string) => (message ? `${message}: ${s}` : s)
  return {
    toBe: (want: unknown) => assert.ok(Object.is(actual, want), m(`expected ${String(actual)} to be ${String(want)}`)),
    toEqual: (want: unknown) => assert.deepStrictEqual(actual, want, m("not equal")),
    toBeLessThan: (want: number) => assert.ok((actual as number) < want, m(`expected ${String(actual)} < ${want}`)),
    toBeGreaterThan: (want: number) => assert.ok((actual as number) > want, m(`expected ${String(actual)} > ${want}`)),
    toMatch: (re: RegExp) => assert.match(String(actual), re, m(`${JSON.stringify(actual)} does not match ${re}`)),
    toBeUndefined: () => assert.ok(actual === undefined, m(`expected ${String(actual)} to be undefined`)),
    toBeInstanceOf: (c: abstract new (...a: never[]) => unknown) =>
      assert.ok(actual instanceof c, m(`${String(actual)} is not a ${c.name}`)),
    toThrow: (re?: RegExp) =>
      re ? assert.throws(actual as () => unknown, re) : assert.throws(actual as () => unknown),
  }
}
expect.fail = (message?: string): never => {
  throw new assert.AssertionError({ message: message ?? "failed" })
}

// Run once every test module has registered its cases.
setTimeout(async () => {
  let passed = 0,
    failed = 0,
    skipped = 0
  const t0 = performance.now()
  for (const c of cases) {
    if (c.skip || !filter.test(c.name)) {
      skipped++
      continue
    }
    const t = performance.now()
    try {
      await c.fn()
      passed++
      console.log(`ok   ${(performance.now() - t).toFixed(0).padStart(6)} ms  ${c.name}`)
    } catch (e) {
      failed++
      console.log(
        `FAIL ${c.name}\n     ${String((e as Error)?.stack ?? e)
          .split("\n")
          .slice(0, 8)
          .join("\n     ")}`,
      )
    }
  }
  for (const f of after) await f()
  console.log(
    `\n${passed} passed, ${failed} failed, ${skipped} skipped (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
  )
  process.exitCode = failed > 0 ? 1 : 0
}, 0)
