import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { formatBytes, formatCount, lineChart, stackedBars } from "../src/cli/svg.js"

/** Throws unless `s` is one well-formed XML element: matched tags, quoted attributes, escaped text. */
function checkWellFormed(s: string): void {
  const textOk = /^(?:[^<>&]|&(?:amp|lt|gt|quot|apos);)*$/
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"]*")*)\s*(\/?)>/y
  const stack: string[] = []
  let roots = 0
  let i = 0
  while (i < s.length) {
    const lt = s.indexOf("<", i)
    const chunk = s.slice(i, lt < 0 ? s.length : lt)
    if (!textOk.test(chunk)) throw new Error(`bad text ${JSON.stringify(chunk)}`)
    if (chunk.trim() !== "" && stack.length === 0) throw new Error(`text outside the root: ${chunk}`)
    if (lt < 0) break
    tag.lastIndex = lt
    const m = tag.exec(s)
    if (!m) throw new Error(`bad tag at ${lt}: ${s.slice(lt, lt + 60)}`)
    const [whole, close, name, attrs, selfClose] = m
    for (const [, v] of attrs!.matchAll(/="([^"]*)"/g))
      if (!textOk.test(v!)) throw new Error(`bad attribute value ${v}`)
    const names = [...attrs!.matchAll(/([\w:-]+)="/g)].map((a) => a[1])
    if (new Set(names).size !== names.length) throw new Error(`duplicate attribute in ${whole}`)
    if (close) {
      if (stack.pop() !== name) throw new Error(`unmatched </${name}>`)
    } else if (!selfClose) {
      if (stack.length === 0) roots++
      stack.push(name!)
    } else if (stack.length === 0) roots++
    i = lt + whole.length
  }
  if (stack.length > 0) throw new Error(`unclosed <${stack.join("> <")}>`)
  if (roots !== 1) throw new Error(`${roots} root elements`)
}

const texts = (svg: string, cls: string): string[] =>
  [...svg.matchAll(new RegExp(`<text class="${cls}"[^>]*>([^<]*)</text>`, "g"))].map((m) => m[1]!)
const noBadNumbers = (svg: string): boolean => !/NaN|undefined|Infinity|null/.test(svg)

describe("formatters", () => {
  it("formatBytes uses binary units with 3 significant digits", () => {
    expect(formatBytes(0)).toBe("0 B")
    expect(formatBytes(512)).toBe("512 B")
    expect(formatBytes(1024)).toBe("1 KiB")
    expect(formatBytes(1536)).toBe("1.5 KiB")
    expect(formatBytes(123456789)).toBe("118 MiB")
    expect(formatBytes(1.5 * 2 ** 30)).toBe("1.5 GiB")
    expect(formatBytes(2 ** 40)).toBe("1 TiB")
    expect(formatBytes(5000 * 2 ** 40)).toBe("5000 TiB")
    expect(formatBytes(1023.9 * 1024)).toBe("1 MiB")
    expect(formatBytes(1000 * 1024)).toBe("0.977 MiB")
  })

  it("formatCount uses k/M suffixes", () => {
    expect(formatCount(0)).toBe("0")
    expect(formatCount(512)).toBe("512")
    expect(formatCount(1024)).toBe("1k")
    expect(formatCount(2048)).toBe("2k")
    expect(formatCount(65536)).toBe("64k")
    expect(formatCount(1000)).toBe("1k")
    expect(formatCount(12345)).toBe("12.3k")
    expect(formatCount(2 ** 20)).toBe("1M")
    expect(formatCount(1_500_000)).toBe("1.5M")
    expect(formatCount(999_999)).toBe("1M")
    expect(formatCount(-2000)).toBe("-2k")
    expect(formatCount(0.25)).toBe("0.25")
    expect(formatCount(3e20)).toBe("3e20")
  })
})

describe("lineChart", () => {
  const basic = lineChart({
    title: "Loss",
    xLabel: "step",
    yLabel: "loss",
    series: [
      {
        name: "vanilla",
        points: [
          [0, 3],
          [5, 1],
          [10, 0],
        ],
      },
      {
        name: "mst",
        points: [
          [0, 10],
          [10, 5],
        ],
      },
    ],
  })

  it("is a well-formed SVG document with a white background", () => {
    expect(basic.startsWith('<svg xmlns="http://www.w3.org/2000/svg" ')).toBe(true)
    expect(basic).toContain('font-family="sans-serif"')
    expect(basic).toMatch(/<rect width="720" height="420" fill="white"\/>/)
    checkWellFormed(basic)
  })

  it("puts 1-2-5 ticks on a linear axis", () => {
    expect(texts(basic, "tick-x")).toEqual(["0", "2", "4", "6", "8", "10"])
    expect(texts(basic, "tick-y")).toEqual(["0", "2", "4", "6", "8", "10"])
  })

  it("puts powers of 2 on a log axis of powers of 2", () => {
    const xs = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
    const svg = lineChart({
      title: "t",
      xLabel: "x",
      yLabel: "y",
      logX: true,
      series: [{ name: "a", points: xs.map((x) => [x, x / 100]) }],
    })
    expect(texts(svg, "tick-x")).toEqual(["512", "1k", "2k", "4k", "8k", "16k", "32k", "64k"])
  })

  it("puts powers of 10 on a general log axis, and formats bytes", () => {
    const svg = lineChart({
      title: "t",
      xLabel: "x",
      yLabel: "y",
      logX: true,
      series: [
        {
          name: "a",
          points: [
            [3, 1],
            [4e5, 2],
          ],
        },
      ],
    })
    expect(texts(svg, "tick-x")).toEqual(["1", "10", "100", "1k", "10k", "100k", "1M"])
    const bytes = lineChart({
      title: "t",
      xLabel: "x",
      yLabel: "y",
      logY: true,
      format: formatBytes,
      series: [
        {
          name: "a",
          points: [
            [1, 2 ** 20],
            [2, 2 ** 30],
          ],
        },
      ],
    })
    expect(texts(bytes, "tick-y")).toEqual([
      "1 MiB",
      "2 MiB",
      "4 MiB",
      "8 MiB",
      "16 MiB",
      "32 MiB",
      "64 MiB",
      "128 MiB",
      "256 MiB",
      "512 MiB",
      "1 GiB",
    ])
  })

  it("escapes text", () => {
    const svg = lineChart({
      title: `a & b <c> "d"`,
      xLabel: "<x>",
      yLabel: "y'",
      series: [{ name: "s&<>", points: [[1, 1]] }],
    })
    checkWellFormed(svg)
    expect(svg).toContain("a &amp; b &lt;c&gt; &quot;d&quot;")
    expect(svg).toContain("&lt;x&gt;")
    expect(texts(svg, "legend")).toEqual(["s&amp;&lt;&gt;"])
    expect(svg).not.toContain("<c>")
  })

  it("has a legend entry per series, with distinct colours", () => {
    const names = ["one", "two", "three", "four"]
    const svg = lineChart({
      title: "t",
      xLabel: "x",
      yLabel: "y",
      series: names.map((name, i) => ({
        name,
        points: [
          [0, i],
          [1, i + 1],
        ],
      })),
    })
    expect(texts(svg, "legend")).toEqual(names)
    const strokes = [...svg.matchAll(/<polyline [^>]*stroke="([^"]+)"/g)].map((m) => m[1])
    expect(new Set(strokes).size).toBe(4)
  })

  it("marks small series, draws single points, and breaks lines at non-finite points", () => {
    const one = lineChart({ title: "t", xLabel: "x", yLabel: "y", series: [{ name: "a", points: [[1, 1]] }] })
    expect(one.match(/<circle/g)?.length).toBe(2) // the point and its legend marker
    const gap = lineChart({
      title: "t",
      xLabel: "x",
      yLabel: "y",
      series: [
        {
          name: "a",
          points: [
            [0, 0],
            [1, 1],
            [2, NaN],
            [3, 3],
            [4, 4],
            [5, Infinity],
          ],
        },
      ],
    })
    expect(gap.match(/<polyline/g)?.length).toBe(2)
    expect(gap.match(/<circle/g)?.length).toBe(4 + 1)
    const many = lineChart({
      title: "t",
      xLabel: "x",
      yLabel: "y",
      series: [{ name: "a", points: Array.from({ length: 60 }, (_, i): [number, number] => [i, i * i]) }],
    })
    expect(many).not.toContain("<circle") // no markers, in the plot or the legend
  })

  it("never writes NaN, undefined or Infinity and stays well-formed", () => {
    const value = fc.oneof(
      fc.double(),
      fc.constantFrom(0, 1, -1, 5, 1e-300, 5e-324, 1e300, -1e300, Number.MAX_VALUE, -Number.MAX_VALUE, 512, 65536),
      fc.integer({ min: -1000, max: 1000 }),
    )
    const series = fc.array(
      fc.record({
        name: fc.constantFrom("a", "b&c", "<x>", '"q"', ""),
        points: fc.array(fc.tuple(value, value), { maxLength: 60 }),
      }),
      { maxLength: 10 },
    )
    fc.assert(
      fc.property(series, fc.boolean(), fc.boolean(), fc.boolean(), (series, logX, logY, bytes) => {
        const svg = lineChart({
          title: "t",
          xLabel: "x",
          yLabel: "y",
          series,
          logX,
          logY,
          ...(bytes ? { format: formatBytes } : {}),
        })
        checkWellFormed(svg)
        expect(noBadNumbers(svg)).toBe(true)
        // equal values on every point: a zero range
        const flat = lineChart({
          title: "t",
          xLabel: "x",
          yLabel: "y",
          logX,
          logY,
          series: series.map((s) => ({ ...s, points: s.points.map(([x]) => [x, 7] as [number, number]) })),
        })
        expect(noBadNumbers(flat)).toBe(true)
      }),
      { numRuns: 300 },
    )
  })
})

describe("stackedBars", () => {
  const bars = stackedBars({
    title: "Memory <peak>",
    yLabel: "bytes",
    categories: ["vanilla", "mst"],
    stacks: [
      { name: "weights", values: [2 ** 30, 2 ** 30] },
      { name: "activations", values: [3 * 2 ** 30, 2 ** 29] },
    ],
    format: formatBytes,
  })

  it("is well-formed, with a legend, category labels and totals", () => {
    expect(bars.startsWith('<svg xmlns="http://www.w3.org/2000/svg" ')).toBe(true)
    checkWellFormed(bars)
    expect(bars).toContain("Memory &lt;peak&gt;")
    expect(texts(bars, "legend").sort()).toEqual(["activations", "weights"])
    expect(texts(bars, "category")).toEqual(["vanilla", "mst"])
    expect(texts(bars, "total")).toEqual(["4 GiB", "1.5 GiB"])
    expect(bars.match(/<rect [^>]*><title>/g)?.length).toBe(4)
  })

  it("puts nice ticks on the y axis", () => {
    const svg = stackedBars({
      title: "t",
      yLabel: "y",
      categories: ["a", "b"],
      stacks: [{ name: "s", values: [4, 9] }],
    })
    expect(texts(svg, "tick-y")).toEqual(["0", "2", "4", "6", "8", "10"])
  })

  it("never writes NaN, undefined or Infinity and stays well-formed", () => {
    const value = fc.oneof(
      fc.double(),
      fc.constantFrom(0, 1, 1e-300, Number.MAX_VALUE, -3),
      fc.integer({ min: -10, max: 1e6 }),
    )
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom("a", "b & c", "<d>", "a rather long category name"), { maxLength: 12 }),
        fc.array(fc.record({ name: fc.constantFrom("x", "y<", 'z"'), values: fc.array(value, { maxLength: 14 }) }), {
          maxLength: 10,
        }),
        fc.boolean(),
        (categories, stacks, bytes) => {
          const svg = stackedBars({
            title: "t",
            yLabel: "y",
            categories,
            stacks,
            ...(bytes ? { format: formatBytes } : {}),
          })
          checkWellFormed(svg)
          expect(noBadNumbers(svg)).toBe(true)
        },
      ),
      { numRuns: 300 },
    )
  })
})
