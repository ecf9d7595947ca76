/**
 * The Hugging Face safetensors format, written from the spec:
 *
 *   [8 bytes: header length N, u64 little-endian]
 *   [N bytes: UTF-8 JSON { name: { dtype, shape, data_offsets: [begin, end] }, __metadata__?: {..} }]
 *   [byte buffer: tensors contiguous, row-major, little-endian; offsets relative to its start]
 *
 * Decoding trusts nothing: every malformed file is refused with a BadCheckpoint that names the
 * path, the tensor at fault and what is wrong, never with a RangeError from deep inside.
 */
import { randomBytes } from "node:crypto"
import { type FileHandle, open, rename, rm } from "node:fs/promises"
import { dirname } from "node:path"
import { numel } from "../core/backend.js"
import { BadCheckpoint, fmtShape } from "../core/errors.js"
import { bytesPerElement, type DType, dtypeOf, type HostArray } from "../core/dtype.js"

/** One tensor of a safetensors file: dtype, shape and data. */
export interface StoredTensor {
  readonly dtype: DType
  readonly shape: readonly number[]
  readonly data: HostArray
  /** Read from a 16-bit float tensor ("BF16" or "F16"): `data` holds its values widened to float32, exactly. */
  readonly storedAs?: HalfTag
}

/** The 16-bit float tags miniseq reads by widening to float32 (every such value is a float32). */
export type HalfTag = "BF16" | "F16"

/** A decoded safetensors file: its tensors by name and its string metadata. */
export interface Safetensors {
  readonly tensors: Record<string, StoredTensor>
  readonly metadata: Record<string, string>
}

const METADATA_KEY = "__metadata__"

/** miniseq dtype -> safetensors dtype tag. */
const tagOf: Record<DType, string> = { float32: "F32", float64: "F64", int32: "I32", bfloat16: "BF16" }
const dtypeOfTag: Readonly<Record<string, DType>> = {
  F32: "float32",
  F64: "float64",
  I32: "int32",
  BF16: "float32",
  F16: "float32",
}
/** Bytes per element in the file (BF16 and F16 are 2, although they decode to float32). */
const fileItemsize: Readonly<Record<string, number>> = { F32: 4, F64: 8, I32: 4, BF16: 2, F16: 2 }
const isHalfTag = (tag: string): tag is HalfTag => tag === "BF16" || tag === "F16"
/** Tags the spec defines that miniseq cannot hold in a HostArray. */
const unsupportedTags = new Set([
  "BOOL",
  "U8",
  "I8",
  "U16",
  "I16",
  "U32",
  "U64",
  "I64",
  "F8_E4M3",
  "F8_E5M2",
  "F8_E8M0",
  "F6_E2M3",
  "F6_E3M2",
  "F4",
  "C64",
])
const supportedList = Object.keys(dtypeOfTag).join(", ")

// The format is little-endian; typed arrays use the host order, so big-endian hosts swap.
const hostIsLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

function swapBytes(bytes: Uint8Array, itemsize: number): void {
  for (let i = 0; i + itemsize <= bytes.length; i += itemsize) bytes.subarray(i, i + itemsize).reverse()
}

const isShape = (s: unknown): s is number[] =>
  Array.isArray(s) && s.every((d) => typeof d === "number" && Number.isSafeInteger(d) && d >= 0)

const arrayName = (data: unknown): string =>
  (data as { constructor?: { name?: string } } | null)?.constructor?.name ?? typeof data

// ---------------------------------------------------------------------------------------------
// Encoding

/** A file's layout before its bytes are joined: the padded header (length prefix included) and each tensor's bytes. */
interface Layout {
  readonly header: Uint8Array
  readonly parts: readonly { readonly bytes: Uint8Array; readonly itemsize: number }[]
  readonly size: number
}

/**
 * Lays tensors out (sorted by name, so equal inputs give equal bytes). The header is padded
 * with spaces so the byte buffer starts 8-byte aligned. Throws a plain Error naming the tensor
 * when a tensor is inconsistent: that is a bug in the caller, not a bad file.
 */
function layout(tensors: Readonly<Record<string, StoredTensor>>, metadata?: Readonly<Record<string, string>>): Layout {
  const names = Object.keys(tensors).sort()
  // Built by hand rather than with JSON.stringify(object): objects put integer-like keys
  // ("0", "10") first, which would break the sorted order.
  const entries: string[] = []
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw new Error(`safetensors: metadata "${k}" must be a string, got ${typeof v}`)
    }
    entries.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(Object.fromEntries(Object.entries(metadata)))}`)
  }
  const parts: { bytes: Uint8Array; itemsize: number }[] = []
  let offset = 0
  for (const name of names) {
    if (name === METADATA_KEY) throw new Error(`safetensors: "${METADATA_KEY}" is reserved and cannot name a tensor`)
    const t = tensors[name]!
    if (!(t.dtype in tagOf)) throw new Error(`safetensors: tensor "${name}" has unknown dtype ${String(t.dtype)}`)
    if (!isShape(t.shape)) {
      throw new Error(
        `safetensors: tensor "${name}" has shape ${JSON.stringify(t.shape)}; dims must be non-negative integers`,
      )
    }
    if (dtypeOf(t.data) !== t.dtype) {
      throw new Error(`safetensors: tensor "${name}" is declared ${t.dtype} but its data is a ${arrayName(t.data)}`)
    }
    if (t.data.length !== numel(t.shape)) {
      throw new Error(
        `safetensors: tensor "${name}" has ${t.data.length} elements but shape ${fmtShape(t.shape)} needs ` +
          `${numel(t.shape)}`,
      )
    }
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
    parts.push({ bytes, itemsize: bytesPerElement[t.dtype] })
    const end = offset + bytes.length
    entries.push(
      `${JSON.stringify(name)}:{"dtype":"${tagOf[t.dtype]}","shape":${JSON.stringify(t.shape)},"data_offsets":[${offset},${end}]}`,
    )
    offset = end
  }
  const json = new TextEncoder().encode(`{${entries.join(",")}}`)
  const headerLen = Math.ceil(json.length / 8) * 8
  const header = new Uint8Array(8 + headerLen)
  new DataView(header.buffer).setBigUint64(0, BigInt(headerLen), true)
  header.set(json, 8)
  header.fill(0x20, 8 + json.length) // spaces: JSON parsers skip them
  return { header, parts, size: header.length + offset }
}

/** A tensor's bytes as the file holds them: little-endian (a copy on a big-endian host). */
function fileOrder(part: Layout["parts"][number]): Uint8Array {
  if (hostIsLittleEndian) return part.bytes
  const copy = part.bytes.slice()
  swapBytes(copy, part.itemsize)
  return copy
}

/** Serialises tensors into one array (`writeSafetensorsAtomic` streams them to a file instead). */
export function encodeSafetensors(
  tensors: Readonly<Record<string, StoredTensor>>,
  metadata?: Readonly<Record<string, string>>,
): Uint8Array {
  const { header, parts, size } = layout(tensors, metadata)
  const out = new Uint8Array(size)
  out.set(header, 0)
  let at = header.length
  for (const part of parts) {
    out.set(fileOrder(part), at)
    at += part.bytes.length
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Decoding

interface Entry {
  readonly name: string
  readonly tag: string
  readonly dtype: DType
  readonly shape: number[]
  readonly begin: number
  readonly end: number
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v)

/** Parses and checks one header entry; `fail` throws. */
function parseEntry(
  name: string,
  raw: unknown,
  bufferLen: number,
  fail: (message: string, tensor?: string) => never,
): Entry {
  const bad = (what: string): never => fail(`tensor "${name}": ${what}`, name)
  if (!isPlainObject(raw)) return bad(`header entry must be an object, got ${JSON.stringify(raw)}`)
  for (const field of ["dtype", "shape", "data_offsets"]) {
    if (!(field in raw)) return bad(`header entry is missing "${field}"`)
  }
  const tag = raw["dtype"]
  if (typeof tag !== "string") return bad(`dtype must be a string, got ${JSON.stringify(tag)}`)
  const dtype = dtypeOfTag[tag]
  if (dtype === undefined) {
    return bad(
      unsupportedTags.has(tag)
        ? `dtype ${tag} is not supported by miniseq (supported: ${supportedList}); convert the checkpoint`
        : `unknown dtype ${JSON.stringify(tag)} (supported: ${supportedList})`,
    )
  }
  const shape = raw["shape"]
  if (!isShape(shape)) return bad(`shape ${JSON.stringify(shape)} must be a list of non-negative integers`)
  const offsets = raw["data_offsets"]
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    return bad(`data_offsets ${JSON.stringify(offsets)} must be two non-negative integers [begin, end]`)
  }
  const [begin, end] = offsets as [number, number]
  if (begin > end) return bad(`data_offsets [${begin}, ${end}] end before they begin`)
  const expected = numel(shape) * fileItemsize[tag]!
  if (end - begin !== expected) {
    return bad(
      `data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${tag} ${fmtShape(shape)} needs ${expected}`,
    )
  }
  if (end > bufferLen) {
    return bad(
      `data_offsets [${begin}, ${end}] run past the end of the byte buffer (${bufferLen} bytes); the file is truncated`,
    )
  }
  return { name, tag, dtype, shape, begin, end }
}

type Fail = (message: string, tensor?: string) => never

const failer =
  (path: string): Fail =>
  (message, tensor) => {
    throw new BadCheckpoint({ path, ...(tensor === undefined ? {} : { tensor }), message: `${path}: ${message}` })
  }

/** The header's length from the file's first 8 bytes, checked against the file's size. */
function headerLength(first8: Uint8Array, fileSize: number, fail: Fail): number {
  if (fileSize < 8) fail(`file is ${fileSize} bytes, shorter than the 8-byte header length; not a safetensors file`)
  const len = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true)
  if (len > BigInt(fileSize - 8)) {
    fail(
      `header length ${len} runs past the end of the file (${fileSize} bytes); the file is truncated or not safetensors`,
    )
  }
  return Number(len)
}

/** Parses the JSON header and checks that its tensors tile the byte buffer of `bufferLen` bytes exactly. */
function parseHeader(
  headerBytes: Uint8Array,
  bufferLen: number,
  fail: Fail,
): { entries: Entry[]; metadata: Record<string, string> } {
  let text = ""
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes)
  } catch {
    fail("header is not valid UTF-8")
  }
  let header: unknown
  try {
    header = JSON.parse(text)
  } catch (e) {
    fail(`header is not valid JSON (${e instanceof Error ? e.message : String(e)})`)
  }
  if (!isPlainObject(header)) fail(`header must be a JSON object, got ${JSON.stringify(header)?.slice(0, 40)}`)
  const headerObj = header as Record<string, unknown>

  const metadata: Record<string, string> = {}
  const rawMeta = headerObj[METADATA_KEY]
  if (rawMeta !== undefined) {
    if (!isPlainObject(rawMeta)) fail(`${METADATA_KEY} must be an object of strings`)
    for (const [k, v] of Object.entries(rawMeta as Record<string, unknown>)) {
      if (typeof v !== "string")
        fail(`${METADATA_KEY} value for ${JSON.stringify(k)} must be a string, got ${JSON.stringify(v)}`)
      Object.defineProperty(metadata, k, { value: v, enumerable: true, writable: true, configurable: true })
    }
  }

  const entries = Object.entries(headerObj)
    .filter(([name]) => name !== METADATA_KEY)
    .map(([name, raw]) => parseEntry(name, raw, bufferLen, fail))

  // The spec requires the tensors to tile the byte buffer exactly: no gaps, no overlaps.
  const byOffset = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end)
  let covered = 0
  let prev: Entry | undefined
  for (const e of byOffset) {
    if (e.begin < covered) {
      fail(
        `tensor "${e.name}": data_offsets [${e.begin}, ${e.end}] overlap tensor "${prev?.name}" (ends at ${covered})`,
        e.name,
      )
    }
    if (e.begin > covered) {
      const after = prev === undefined ? "the start of the byte buffer" : `tensor "${prev.name}" (ends at ${covered})`
      fail(
        `tensor "${e.name}": data_offsets [${e.begin}, ${e.end}] leave a gap of ${e.begin - covered} bytes after ${after}`,
        e.name,
      )
    }
    covered = e.end
    prev = e
  }
  if (covered !== bufferLen) {
    fail(
      `byte buffer has ${bufferLen - covered} trailing bytes after the last tensor (ends at ${covered}) that no tensor covers`,
    )
  }
  return { entries, metadata }
}

/** One tensor from its own fresh copy of the file's bytes (aligned for any typed array; swapped in place on a big-endian host). */
function tensorOf(e: Entry, copy: Uint8Array): StoredTensor {
  if (isHalfTag(e.tag)) return { dtype: e.dtype, shape: e.shape, data: widenHalf(copy, e.tag), storedAs: e.tag }
  const size = bytesPerElement[e.dtype]
  if (!hostIsLittleEndian) swapBytes(copy, size)
  const n = copy.length / size
  const data =
    e.dtype === "float32"
      ? new Float32Array(copy.buffer, 0, n)
      : e.dtype === "float64"
        ? new Float64Array(copy.buffer, 0, n)
        : new Int32Array(copy.buffer, 0, n)
  return { dtype: e.dtype, shape: e.shape, data }
}

/**
 * Parses a safetensors file held in memory. Every malformed input throws BadCheckpoint naming
 * `path` (and the tensor at fault where there is one). Tensor data is copied out, so the arrays
 * are aligned and do not alias `bytes`. F32, F64 and I32 tensors are read as they are; BF16 and
 * F16 tensors are widened to float32 exactly (`storedAs` says which they were).
 */
export function decodeSafetensors(bytes: Uint8Array, path = "<memory>"): Safetensors {
  const fail = failer(path)
  const dataStart = 8 + headerLength(bytes.subarray(0, 8), bytes.length, fail)
  const { entries, metadata } = parseHeader(bytes.subarray(8, dataStart), bytes.length - dataStart, fail)
  const tensors = Object.fromEntries(
    entries.map((e): [string, StoredTensor] => [
      e.name,
      tensorOf(e, bytes.slice(dataStart + e.begin, dataStart + e.end)),
    ]),
  )
  return { tensors, metadata }
}

/**
 * 16-bit floats (little-endian bytes) → float32, bit by bit so every value, NaN payloads and
 * subnormals included, comes out exact. bfloat16 is the top half of a float32; IEEE half has a
 * 5-bit exponent (bias 15) and a 10-bit fraction, whose subnormals are normal in float32.
 */
export function widenHalf(bytes: Uint8Array, tag: HalfTag): Float32Array {
  const n = bytes.length >> 1
  const out = new Float32Array(n)
  // Bytes are read one by one (so any host order works); the words go in through a view of the same host order.
  const bits = new Uint32Array(out.buffer)
  for (let i = 0; i < n; i++) {
    const h = bytes[2 * i]! | (bytes[2 * i + 1]! << 8)
    bits[i] = tag === "BF16" ? (h << 16) >>> 0 : halfToFloatBits(h)
  }
  return out
}

function halfToFloatBits(h: number): number {
  const sign = (h & 0x8000) << 16
  const exp = (h >> 10) & 0x1f
  let frac = h & 0x3ff
  if (exp === 0x1f) return (sign | 0x7f800000 | (frac << 13)) >>> 0 // infinities and NaNs
  if (exp !== 0) return (sign | ((exp - 15 + 127) << 23) | (frac << 13)) >>> 0
  if (frac === 0) return sign >>> 0 // ±0
  // A subnormal half, frac · 2^-24: shift the leading one into the implicit bit.
  let e = -14
  while ((frac & 0x400) === 0) {
    frac <<= 1
    e--
  }
  return (sign | ((e + 127) << 23) | ((frac & 0x3ff) << 13)) >>> 0
}

// ---------------------------------------------------------------------------------------------
// Files

const errCode = (e: unknown): string | undefined => (e as { code?: unknown } | null)?.code as string | undefined

/**
 * One read or write call moves at most this many bytes: Node refuses a single call over 2 GiB,
 * and a 7B model's tensors, or its optimizer file, are larger.
 */
const IO_CHUNK = 1 << 30

async function writeAll(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < bytes.length; ) {
    const { bytesWritten } = await handle.write(bytes, done, Math.min(IO_CHUNK, bytes.length - done), position + done)
    done += bytesWritten
  }
}

async function readAll(handle: FileHandle, into: Uint8Array, position: number): Promise<number> {
  let done = 0
  while (done < into.length) {
    const { bytesRead } = await handle.read(into, done, Math.min(IO_CHUNK, into.length - done), position + done)
    if (bytesRead === 0) break // the file ended early
    done += bytesRead
  }
  return done
}

/**
 * Writes a checkpoint so that `path` holds either the old file or the complete new one, never
 * a torn write: temp file in the same directory (rename is atomic only within a filesystem),
 * fsync, rename over `path`, fsync the directory so the rename itself survives a crash. The
 * tensors are written one after another, never joined in memory: a file may be larger than
 * any one array can be.
 */
export async function writeSafetensorsAtomic(
  path: string,
  tensors: Readonly<Record<string, StoredTensor>>,
  metadata?: Readonly<Record<string, string>>,
): Promise<void> {
  const { header, parts } = layout(tensors, metadata) // before touching disk: bad input writes nothing
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`
  let created = false
  try {
    const handle = await open(tmp, "wx")
    created = true
    try {
      await writeAll(handle, header, 0)
      let at = header.length
      for (const part of parts) {
        await writeAll(handle, fileOrder(part), at)
        at += part.bytes.length
      }
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(tmp, path)
  } catch (e) {
    if (created) await rm(tmp, { force: true }).catch(() => undefined)
    throw e
  }
  await syncDirectory(dirname(path))
}

/** fsync of a folder, so a rename in it survives a crash; a no-op where the platform cannot. */
export async function syncDirectory(dir: string): Promise<void> {
  let handle: FileHandle | undefined
  try {
    handle = await open(dir, "r")
    await handle.sync()
  } catch (e) {
    // Some platforms (Windows) and filesystems cannot fsync a directory; the file is in place.
    const code = errCode(e)
    if (
      !(
        process.platform === "win32" ||
        code === "EINVAL" ||
        code === "ENOTSUP" ||
        code === "EISDIR" ||
        code === "EPERM"
      )
    )
      throw e
  } finally {
    await handle?.close()
  }
}

/**
 * Reads and decodes a checkpoint, tensor by tensor from the file (never the whole file in one
 * array: a model file may be larger than any array); an unreadable or missing file is a
 * BadCheckpoint too.
 */
export async function readSafetensors(path: string): Promise<Safetensors> {
  const fail = failer(path)
  const cannot = (e: unknown): never => {
    const code = errCode(e)
    throw new BadCheckpoint({
      path,
      message:
        code === "ENOENT"
          ? `${path}: file does not exist`
          : code === "EISDIR"
            ? `${path}: is a directory, not a safetensors file`
            : `${path}: cannot read file (${e instanceof Error ? e.message : String(e)})`,
    })
  }
  const handle = await open(path, "r").catch(cannot)
  try {
    const { size } = await handle.stat().catch(cannot)
    const first8 = new Uint8Array(8)
    await readAll(handle, first8, 0).catch(cannot)
    const dataStart = 8 + headerLength(first8, size, fail)
    const headerBytes = new Uint8Array(dataStart - 8)
    await readAll(handle, headerBytes, 8).catch(cannot)
    const { entries, metadata } = parseHeader(headerBytes, size - dataStart, fail)
    const tensors: Record<string, StoredTensor> = {}
    for (const e of entries) {
      const copy = new Uint8Array(e.end - e.begin)
      const got = await readAll(handle, copy, dataStart + e.begin).catch(cannot)
      if (got !== copy.length)
        fail(`tensor "${e.name}": the file ended while reading it (it changed while being read?)`, e.name)
      tensors[e.name] = tensorOf(e, copy)
    }
    return { tensors, metadata }
  } finally {
    await handle.close()
  }
}

// ---------------------------------------------------------------------------------------------
// Matching a checkpoint to a model

/**
 * Refuses a checkpoint that does not hold exactly the tensors a model expects (e.g. one saved
 * from another model config). Throws BadCheckpoint naming the first offending tensor, checking
 * expected names in sorted order, then unexpected extras.
 */
export function checkTensors(
  loaded: Readonly<Record<string, StoredTensor>>,
  expected: Readonly<Record<string, { readonly dtype: DType; readonly shape: readonly number[] }>>,
  path: string,
): void {
  const fail = (tensor: string, what: string): never => {
    throw new BadCheckpoint({ path, tensor, message: `${path}: tensor "${tensor}" ${what}` })
  }
  const has = (r: object, k: string): boolean => Object.hasOwn(r, k)
  for (const name of Object.keys(expected).sort()) {
    const want = expected[name]!
    if (!has(loaded, name)) {
      fail(
        name,
        `is missing from the checkpoint (model expects ${want.dtype} ${fmtShape(want.shape)}); was it saved from another model config?`,
      )
    }
    const got = loaded[name]!
    if (got.dtype !== want.dtype) {
      fail(name, `has dtype ${got.dtype} in the checkpoint but the model expects ${want.dtype}`)
    }
    if (got.shape.length !== want.shape.length || got.shape.some((d, i) => d !== want.shape[i])) {
      fail(
        name,
        `has shape ${fmtShape(got.shape)} in the checkpoint but the model expects ${fmtShape(want.shape)}; was it saved from another model config?`,
      )
    }
  }
  for (const name of Object.keys(loaded).sort()) {
    if (!has(expected, name))
      fail(name, `is in the checkpoint but the model has no such tensor; was it saved from another model config?`)
  }
}
