// The safetensors reader/writer: bitwise round trips, a golden file built by hand from the spec,
// every malformed input refused as BadCheckpoint, atomic writes, and model/checkpoint matching.
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import fc from "fast-check"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { DType, HostArray } from "../src/core/dtype.js"
import { BadCheckpoint } from "../src/core/errors.js"
import {
  checkTensors,
  decodeSafetensors,
  encodeSafetensors,
  readSafetensors,
  type StoredTensor,
  writeSafetensorsAtomic,
} from "../src/models/safetensors.js"

const bytesOf = (a: HostArray): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength)

/** A file assembled by hand: u64 LE length prefix, header text as given, then data. */
function rawFile(header: string, data: ArrayLike<number> = []): Uint8Array {
  const json = new TextEncoder().encode(header)
  const out = new Uint8Array(8 + json.length + data.length)
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true)
  out.set(json, 8)
  out.set(Array.from(data), 8 + json.length)
  return out
}

function badCheckpoint(f: () => unknown): BadCheckpoint {
  let err: unknown
  try {
    f()
  } catch (e) {
    err = e
  }
  expect(err).toBeInstanceOf(BadCheckpoint)
  return err as BadCheckpoint
}

// ---------------------------------------------------------------------------------------------

const dtypeArb = fc.constantFrom<DType>("float32", "float64", "int32")
const itemsize: Record<DType, number> = { float32: 4, float64: 8, int32: 4, bfloat16: 2 }

/** A tensor whose payload is arbitrary bytes: NaNs with payloads, -0, infinities, subnormals. */
const tensorArb: fc.Arbitrary<StoredTensor> = fc
  .tuple(dtypeArb, fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }))
  .chain(([dtype, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1)
    return fc.uint8Array({ minLength: n * itemsize[dtype], maxLength: n * itemsize[dtype] }).map((raw) => {
      const buf = new Uint8Array(raw).buffer // fresh, aligned
      const data =
        dtype === "float32" ? new Float32Array(buf) : dtype === "float64" ? new Float64Array(buf) : new Int32Array(buf)
      return { dtype, shape, data }
    })
  })

const nameArb = fc
  .oneof(
    fc.string(),
    fc.string({ unit: "binary" }),
    fc.constantFrom("", "0", "10", "a.b.weight", "__proto__", "constructor"),
  )
  .filter((n) => n !== "__metadata__")

const tensorsArb = fc.uniqueArray(fc.tuple(nameArb, tensorArb), { selector: ([n]) => n, maxLength: 6 }).map((es) => {
  const r: Record<string, StoredTensor> = {}
  for (const [n, t] of es)
    Object.defineProperty(r, n, { value: t, enumerable: true, writable: true, configurable: true })
  return r
})

const metadataArb = fc.option(
  fc.uniqueArray(fc.tuple(fc.string(), fc.string()), { selector: ([k]) => k, maxLength: 4 }).map((es) => {
    const r: Record<string, string> = {}
    for (const [k, v] of es)
      Object.defineProperty(r, k, { value: v, enumerable: true, writable: true, configurable: true })
    return r
  }),
  { nil: undefined },
)

const sortedEntries = <T>(r: Record<string, T>): [string, T][] =>
  Object.entries(r).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))

describe("round trip", () => {
  it("decode(encode(x)) is bitwise x, for any names, shapes, dtypes and payloads", () => {
    fc.assert(
      fc.property(tensorsArb, metadataArb, (tensors, metadata) => {
        const bytes = encodeSafetensors(tensors, metadata)
        const { tensors: back, metadata: meta } = decodeSafetensors(bytes)
        expect(sortedEntries(back).map(([n]) => n)).toEqual(sortedEntries(tensors).map(([n]) => n))
        for (const [name, t] of Object.entries(tensors)) {
          const got = Object.getOwnPropertyDescriptor(back, name)?.value as StoredTensor
          expect(got.dtype).toBe(t.dtype)
          expect(got.shape).toEqual(t.shape)
          expect(got.data.constructor).toBe(t.data.constructor)
          expect(bytesOf(got.data)).toEqual(bytesOf(t.data))
        }
        expect(sortedEntries(meta)).toEqual(sortedEntries(metadata ?? {}))
        // The byte buffer starts 8-byte aligned, and encoding is deterministic.
        expect(Number(new DataView(bytes.buffer).getBigUint64(0, true)) % 8).toBe(0)
        expect(encodeSafetensors(tensors, metadata)).toEqual(bytes)
      }),
      { numRuns: 300 },
    )
  })

  it("keeps NaN payloads, -0 and infinities bit for bit", () => {
    const f32 = new Float32Array(4)
    new Uint32Array(f32.buffer).set([0x7fc00001, 0xffa00000, 0x80000000, 0x7f800000])
    const f64 = new Float64Array([-0, Infinity, -Infinity, NaN])
    new DataView(f64.buffer).setUint32(24, 0xdeadbeef, true) // NaN with a payload
    const { tensors } = decodeSafetensors(
      encodeSafetensors({
        a: { dtype: "float32", shape: [4], data: f32 },
        b: { dtype: "float64", shape: [2, 2], data: f64 },
      }),
    )
    expect(bytesOf(tensors["a"]!.data)).toEqual(bytesOf(f32))
    expect(bytesOf(tensors["b"]!.data)).toEqual(bytesOf(f64))
    expect(Object.is(tensors["b"]!.data[0], -0)).toBe(true)
  })

  it("returns aligned copies even when the data sits at an odd offset in the input", () => {
    const file = encodeSafetensors({ x: { dtype: "float64", shape: [2], data: new Float64Array([1.5, -2.25]) } })
    const shifted = new Uint8Array(file.length + 3)
    shifted.set(file, 3)
    const input = shifted.subarray(3)
    const { tensors } = decodeSafetensors(input)
    expect(Array.from(tensors["x"]!.data)).toEqual([1.5, -2.25])
    input.fill(0) // the result must not alias the input
    expect(Array.from(tensors["x"]!.data)).toEqual([1.5, -2.25])
  })

  it("reads files whose tensors are laid out in another order than their names (as other writers do)", () => {
    const header =
      '{"a":{"dtype":"I32","shape":[1],"data_offsets":[4,8]},"b":{"dtype":"I32","shape":[],"data_offsets":[0,4]},"z":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]}}'
    const { tensors, metadata } = decodeSafetensors(rawFile(header, [7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]))
    expect(Array.from(tensors["a"]!.data)).toEqual([-1])
    expect(Array.from(tensors["b"]!.data)).toEqual([7])
    expect(tensors["b"]!.shape).toEqual([])
    expect(tensors["z"]!.data.length).toBe(0)
    expect(metadata).toEqual({})
  })
})

describe("golden bytes, built from the spec", () => {
  it("one F32 tensor [2] = [1, 2]", () => {
    const header = '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}' // 54 bytes
    expect(header.length).toBe(54)
    const expected = new Uint8Array([
      56,
      0,
      0,
      0,
      0,
      0,
      0,
      0, // header length 56 (54 padded to a multiple of 8), u64 LE
      ...Array.from(header, (c) => c.charCodeAt(0)),
      0x20,
      0x20, // two spaces of padding
      0x00,
      0x00,
      0x80,
      0x3f, // 1.0f LE
      0x00,
      0x00,
      0x00,
      0x40, // 2.0f LE
    ])
    const bytes = encodeSafetensors({ w: { dtype: "float32", shape: [2], data: new Float32Array([1, 2]) } })
    expect(bytes).toEqual(expected)
  })

  it("metadata first, then tensors sorted by name, I32 and F64 payloads little-endian", () => {
    const header =
      '{"__metadata__":{"format":"pt"},"a":{"dtype":"F64","shape":[],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[1,1],"data_offsets":[8,12]}}'
    const padded = header + " ".repeat((8 - (header.length % 8)) % 8)
    const expected = rawFile(padded, [0, 0, 0, 0, 0, 0, 0xf0, 0xbf /* -1.0 */, 0xfe, 0xff, 0xff, 0xff /* -2 */])
    const bytes = encodeSafetensors(
      {
        b: { dtype: "int32", shape: [1, 1], data: new Int32Array([-2]) },
        a: { dtype: "float64", shape: [], data: new Float64Array([-1]) },
      },
      { format: "pt" },
    )
    expect(bytes).toEqual(expected)
  })
})

// ---------------------------------------------------------------------------------------------

const entry = (dtype: unknown, shape: unknown, offsets: unknown) =>
  JSON.stringify({ dtype, shape, data_offsets: offsets })

describe("malformed files are BadCheckpoint", () => {
  it("file shorter than 8 bytes", () => {
    const e = badCheckpoint(() => decodeSafetensors(new Uint8Array(5), "ckpt.safetensors"))
    expect(e.path).toBe("ckpt.safetensors")
    expect(e.message).toMatch(/ckpt\.safetensors.*shorter than the 8-byte/)
  })

  it("header length beyond the file (including a huge u64)", () => {
    const f = rawFile("{}")
    new DataView(f.buffer).setBigUint64(0, 100n, true)
    expect(badCheckpoint(() => decodeSafetensors(f, "p")).message).toMatch(
      /p: header length 100 runs past the end of the file \(10 bytes\)/,
    )
    new DataView(f.buffer).setBigUint64(0, 0xffffffffffffffffn, true)
    expect(badCheckpoint(() => decodeSafetensors(f)).message).toMatch(/header length 18446744073709551615/)
  })

  it("header not UTF-8, not JSON, or not an object", () => {
    const notUtf8 = rawFile("{}")
    notUtf8[8] = 0xff
    expect(badCheckpoint(() => decodeSafetensors(notUtf8, "p")).message).toBe("p: header is not valid UTF-8")
    expect(badCheckpoint(() => decodeSafetensors(rawFile('{"a":'), "p")).message).toMatch(
      /^p: header is not valid JSON/,
    )
    expect(badCheckpoint(() => decodeSafetensors(rawFile(""), "p")).message).toMatch(/^p: header is not valid JSON/)
    for (const h of ["[]", "null", "3", '"x"']) {
      expect(badCheckpoint(() => decodeSafetensors(rawFile(h), "p")).message).toMatch(
        /^p: header must be a JSON object/,
      )
    }
  })

  it("bad __metadata__", () => {
    expect(badCheckpoint(() => decodeSafetensors(rawFile('{"__metadata__":[1]}'))).message).toMatch(
      /__metadata__ must be an object/,
    )
    expect(badCheckpoint(() => decodeSafetensors(rawFile('{"__metadata__":{"k":1}}'))).message).toMatch(
      /"k" must be a string/,
    )
  })

  const cases: [string, string, number[], RegExp][] = [
    ["entry not an object", "[1]", [], /header entry must be an object/],
    ["missing dtype", JSON.stringify({ shape: [1], data_offsets: [0, 4] }), [0, 0, 0, 0], /missing "dtype"/],
    ["missing shape", JSON.stringify({ dtype: "F32", data_offsets: [0, 4] }), [0, 0, 0, 0], /missing "shape"/],
    ["missing data_offsets", JSON.stringify({ dtype: "F32", shape: [1] }), [0, 0, 0, 0], /missing "data_offsets"/],
    ["non-string dtype", entry(4, [1], [0, 4]), [0, 0, 0, 0], /dtype must be a string/],
    [
      "unknown dtype",
      entry("Q7", [1], [0, 4]),
      [0, 0, 0, 0],
      /unknown dtype "Q7" \(supported: F32, F64, I32, BF16, F16\)/,
    ],
    [
      "unsupported dtype",
      entry("F8_E4M3", [4], [0, 4]),
      [0, 0, 0, 0],
      /dtype F8_E4M3 is not supported .*supported: F32, F64, I32, BF16, F16/,
    ],
    ["negative dim", entry("F32", [-1], [0, 4]), [0, 0, 0, 0], /shape \[-1\] must be a list of non-negative integers/],
    ["fractional dim", entry("F32", [1.5], [0, 4]), [0, 0, 0, 0], /shape \[1\.5\]/],
    ["shape not a list", entry("F32", "1", [0, 4]), [0, 0, 0, 0], /shape "1"/],
    [
      "offsets not a pair",
      entry("F32", [1], [0]),
      [0, 0, 0, 0],
      /data_offsets \[0\] must be two non-negative integers/,
    ],
    ["negative offset", entry("F32", [1], [-4, 0]), [0, 0, 0, 0], /must be two non-negative integers/],
    ["offsets reversed", entry("F32", [0], [4, 0]), [0, 0, 0, 0], /end before they begin/],
    ["byte length vs shape", entry("F32", [2, 3], [0, 8]), Array(8).fill(0), /hold 8 bytes but F32 \[2, 3\] needs 24/],
    [
      "truncated data",
      entry("F64", [2], [0, 16]),
      Array(10).fill(0),
      /run past the end of the byte buffer \(10 bytes\); the file is truncated/,
    ],
    [
      "gap at the start",
      entry("F32", [1], [4, 8]),
      Array(8).fill(0),
      /gap of 4 bytes after the start of the byte buffer/,
    ],
  ]
  for (const [what, e, data, msg] of cases) {
    it(`${what}: names the tensor`, () => {
      const err = badCheckpoint(() => decodeSafetensors(rawFile(`{"layer.0.w":${e}}`, data), "m.st"))
      expect(err.tensor).toBe("layer.0.w")
      expect(err.message).toMatch(/^m\.st: tensor "layer\.0\.w": /)
      expect(err.message).toMatch(msg)
    })
  }

  it("overlapping offsets name the tensor and the one it overlaps", () => {
    const h = `{"a":${entry("F32", [2], [0, 8])},"b":${entry("F32", [1], [4, 8])}}`
    const err = badCheckpoint(() => decodeSafetensors(rawFile(h, Array(8).fill(0))))
    expect(err.tensor).toBe("b")
    expect(err.message).toMatch(/tensor "b": data_offsets \[4, 8\] overlap tensor "a" \(ends at 8\)/)
  })

  it("gaps between tensors name both", () => {
    const h = `{"a":${entry("F32", [1], [0, 4])},"b":${entry("F32", [1], [8, 12])}}`
    const err = badCheckpoint(() => decodeSafetensors(rawFile(h, Array(12).fill(0))))
    expect(err.tensor).toBe("b")
    expect(err.message).toMatch(/tensor "b": .*gap of 4 bytes after tensor "a"/)
  })

  it("trailing bytes no tensor covers", () => {
    const h = `{"a":${entry("F32", [1], [0, 4])}}`
    expect(badCheckpoint(() => decodeSafetensors(rawFile(h, Array(6).fill(0)))).message).toMatch(/2 trailing bytes/)
    expect(badCheckpoint(() => decodeSafetensors(rawFile("{}", [1]))).message).toMatch(/1 trailing bytes/)
  })

  it("a file cut at any byte is BadCheckpoint, never another exception", () => {
    const file = encodeSafetensors(
      {
        emb: { dtype: "float32", shape: [3, 2], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
        ids: { dtype: "int32", shape: [2], data: new Int32Array([7, 8]) },
        z: { dtype: "float64", shape: [0], data: new Float64Array(0) },
      },
      { step: "12" },
    )
    for (let k = 0; k < file.length; k++) badCheckpoint(() => decodeSafetensors(file.subarray(0, k)))
    expect(Object.keys(decodeSafetensors(file).tensors)).toEqual(["emb", "ids", "z"])
  })

  it("corrupting any bytes either decodes or is BadCheckpoint", () => {
    const file = encodeSafetensors({
      a: { dtype: "float32", shape: [2], data: new Float32Array([1, 2]) },
      b: { dtype: "float64", shape: [1, 1], data: new Float64Array([3]) },
    })
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(file.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
        (edits) => {
          const f = new Uint8Array(file)
          for (const [i, v] of edits) f[i] = v
          try {
            decodeSafetensors(f)
          } catch (e) {
            expect(e).toBeInstanceOf(BadCheckpoint)
          }
        },
      ),
      { numRuns: 2000 },
    )
  })
})

describe("encode refuses inconsistent tensors with a plain Error naming the tensor", () => {
  const enc = (t: unknown) => () => encodeSafetensors({ "blk.w": t as StoredTensor })
  it("length vs shape", () => {
    expect(enc({ dtype: "float32", shape: [2, 2], data: new Float32Array(3) })).toThrow(
      /"blk\.w" has 3 elements but shape \[2, 2\] needs 4/,
    )
  })
  it("dtype vs array type", () => {
    expect(enc({ dtype: "float64", shape: [1], data: new Float32Array(1) })).toThrow(
      /"blk\.w" is declared float64 but its data is a Float32Array/,
    )
    expect(enc({ dtype: "int32", shape: [1], data: new Float64Array(1) })).toThrow(/"blk\.w" is declared int32/)
  })
  it("bad shape and reserved name", () => {
    expect(enc({ dtype: "float32", shape: [-1], data: new Float32Array(0) })).toThrow(/"blk\.w" has shape \[-1\]/)
    expect(() =>
      encodeSafetensors({ __metadata__: { dtype: "float32", shape: [], data: new Float32Array(1) } }),
    ).toThrow(/reserved/)
  })
})

// ---------------------------------------------------------------------------------------------

describe("files", () => {
  let dir = ""
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "miniseq-st-"))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })
  const w: Record<string, StoredTensor> = { w: { dtype: "float32", shape: [2], data: new Float32Array([1, 2]) } }

  it("a file over 2 GiB (larger than one read or write call may move) round-trips, tensor by tensor", async () => {
    // A 1B model's bf16 weights or its optimizer state are such files; reading one whole failed.
    const n = 2 ** 29 + 3 // 2 GiB + 12 bytes of float32: one tensor larger than a single call
    const big = new Float32Array(n)
    for (const [i, v] of [
      [0, 1.5],
      [2 ** 28, -2],
      [2 ** 29 - 1, 3.25],
      [n - 1, 7],
    ] as const)
      big[i] = v
    const small = new Int32Array([5, 6, 7])
    const path = join(dir, "big.safetensors")
    await writeSafetensorsAtomic(path, {
      a: { dtype: "int32", shape: [3], data: small },
      b: { dtype: "float32", shape: [n], data: big },
    })
    const { tensors } = await readSafetensors(path)
    expect(Array.from(tensors["a"]!.data)).toEqual([5, 6, 7])
    const back = tensors["b"]!.data as Float32Array
    expect(back.length).toBe(n)
    for (const i of [0, 1, 2 ** 28, 2 ** 29 - 1, 2 ** 29, n - 1]) expect(back[i], `element ${i}`).toBe(big[i])
    // Every element, compared as bytes in 64 MiB windows (expect() per element would take minutes).
    const [x, y] = [bytesOf(big), bytesOf(back)]
    for (let at = 0; at < x.length; at += 1 << 26) {
      expect(Buffer.compare(x.subarray(at, at + (1 << 26)), y.subarray(at, at + (1 << 26))), `bytes from ${at}`).toBe(0)
    }
    await rm(path)
  }, 120_000)

  it("writes atomically, reads back, and leaves no temp files", async () => {
    const path = join(dir, "model.safetensors")
    await writeSafetensorsAtomic(path, w, { step: "1" })
    await writeSafetensorsAtomic(path, { w: { ...w["w"]!, data: new Float32Array([3, 4]) } }, { step: "2" })
    const back = await readSafetensors(path)
    expect(Array.from(back.tensors["w"]!.data)).toEqual([3, 4])
    expect(back.metadata).toEqual({ step: "2" })
    expect(await readdir(dir)).toEqual(["model.safetensors"])
  })

  it("when encoding fails, path is untouched and no temp file is left", async () => {
    const path = join(dir, "keep.safetensors")
    await writeSafetensorsAtomic(path, w)
    const before = await readFile(path)
    await expect(
      writeSafetensorsAtomic(path, { w: { dtype: "float32", shape: [5], data: new Float32Array(2) } }),
    ).rejects.toThrow(/"w" has 2 elements/)
    expect(await readFile(path)).toEqual(before)
    expect((await readdir(dir)).filter((n) => n.includes(".tmp-"))).toEqual([])
  })

  it("when the rename fails after the temp file is written, the temp file is removed", async () => {
    // `path` is a non-empty directory: the temp file is written and synced, then rename fails.
    const path = join(dir, "occupied")
    await mkdir(path)
    await writeFile(join(path, "inside"), "x")
    await expect(writeSafetensorsAtomic(path, w)).rejects.toThrow()
    expect(await readdir(path)).toEqual(["inside"])
    expect((await readdir(dir)).filter((n) => n.includes(".tmp-"))).toEqual([])
  })

  it("writing into a missing directory rejects and creates nothing", async () => {
    await expect(writeSafetensorsAtomic(join(dir, "nope", "m.safetensors"), w)).rejects.toThrow(/ENOENT/)
    expect((await readdir(dir)).filter((n) => n.includes("nope") || n.includes(".tmp-"))).toEqual([])
  })

  it("writing into a read-only directory rejects and leaves nothing behind", async () => {
    const ro = join(dir, "ro")
    await mkdir(ro)
    await chmod(ro, 0o555)
    try {
      const path = join(ro, "m.safetensors")
      const result = await writeSafetensorsAtomic(path, w).then(
        () => "ok",
        () => "failed",
      )
      // Root ignores permissions; otherwise the write must fail and leave the directory empty.
      if (result === "failed") expect(await readdir(ro)).toEqual([])
      else expect(await readdir(ro)).toEqual(["m.safetensors"])
    } finally {
      await chmod(ro, 0o755)
    }
  })

  it("a missing file is BadCheckpoint saying it does not exist", async () => {
    const path = join(dir, "absent.safetensors")
    const err = await readSafetensors(path).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(BadCheckpoint)
    expect((err as BadCheckpoint).message).toBe(`${path}: file does not exist`)
    expect((err as BadCheckpoint).path).toBe(path)
  })

  it("a corrupt file on disk is BadCheckpoint naming its path", async () => {
    const path = join(dir, "bad.safetensors")
    await writeFile(path, rawFile(`{"w":${entry("F32", [4], [0, 16])}}`, Array(8).fill(0)))
    const err = await readSafetensors(path).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(BadCheckpoint)
    expect((err as BadCheckpoint).message).toMatch(
      new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}: tensor "w": .*truncated`),
    )
  })
})

describe("checkTensors", () => {
  const loaded: Record<string, StoredTensor> = {
    "emb.weight": { dtype: "float32", shape: [10, 4], data: new Float32Array(40) },
    "head.bias": { dtype: "float32", shape: [10], data: new Float32Array(10) },
  }
  const spec = (s: Record<string, StoredTensor>) =>
    Object.fromEntries(Object.entries(s).map(([k, t]) => [k, { dtype: t.dtype, shape: t.shape }]))

  it("accepts an exact match", () => {
    expect(() => checkTensors(loaded, spec(loaded), "c.st")).not.toThrow()
  })

  it("names a missing tensor", () => {
    const e = badCheckpoint(() =>
      checkTensors(loaded, { ...spec(loaded), "ln.g": { dtype: "float32", shape: [4] } }, "c.st"),
    )
    expect(e.tensor).toBe("ln.g")
    expect(e.message).toMatch(/^c\.st: tensor "ln\.g" is missing from the checkpoint \(model expects float32 \[4\]\)/)
  })

  it("names an unexpected tensor", () => {
    const { "head.bias": _, ...fewer } = spec(loaded)
    const e = badCheckpoint(() => checkTensors(loaded, fewer, "c.st"))
    expect(e.tensor).toBe("head.bias")
    expect(e.message).toMatch(/tensor "head\.bias" is in the checkpoint but the model has no such tensor/)
  })

  it("shows both shapes on a shape mismatch", () => {
    const e = badCheckpoint(() =>
      checkTensors(loaded, { ...spec(loaded), "emb.weight": { dtype: "float32", shape: [12, 4] } }, "c.st"),
    )
    expect(e.tensor).toBe("emb.weight")
    expect(e.message).toMatch(/has shape \[10, 4\] in the checkpoint but the model expects \[12, 4\]/)
    const r = badCheckpoint(() =>
      checkTensors(loaded, { ...spec(loaded), "head.bias": { dtype: "float32", shape: [10, 1] } }, "c.st"),
    )
    expect(r.message).toMatch(/has shape \[10\] in the checkpoint but the model expects \[10, 1\]/)
  })

  it("names a dtype mismatch", () => {
    const e = badCheckpoint(() =>
      checkTensors(loaded, { ...spec(loaded), "head.bias": { dtype: "float64", shape: [10] } }, "c.st"),
    )
    expect(e.message).toMatch(/tensor "head\.bias" has dtype float32 in the checkpoint but the model expects float64/)
  })
})
