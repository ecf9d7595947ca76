#!/usr/bin/env node
/**
 * Writes docs/api.md, the API reference, from the declarations `npm run build` emits (dist/**.d.ts):
 * every symbol each entry point of package.json's `exports` exports, with its declaration and
 * its doc comment. `npm run docs:api` builds and runs it; `--check` exits 1 when docs/api.md is
 * not what it would write (test/api-docs.test.ts runs that).
 *
 * Why a script of our own: TypeDoc and API Extractor drive the TypeScript compiler's JavaScript
 * API, which TypeScript 7 (the native compiler this project builds with) does not provide. The
 * declarations tsc writes are regular enough to read directly — each top-level statement starts
 * at column 0, doc comments sit right above it — so following `export … from` chains from each
 * entry point and printing what they reach is about 150 lines, with nothing to install.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import { dirname, join, relative, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..")
const out = join(root, "docs", "api.md")
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"))

/** Strips comments and string literals, so brackets can be counted. */
const code = (s) =>
  s
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/\/\/.*$/gm, "")
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`/g, '""')
const depth = (s) => {
  let d = 0
  for (const c of code(s))
    if ("{([".includes(c)) d++
    else if ("})]".includes(c)) d--
  return d
}

/** A .d.ts file as top-level statements, each with the doc comment right above it. */
function statements(file) {
  const lines = readFileSync(file, "utf8").split("\n")
  const result = []
  let doc = ""
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]
    if (line.startsWith("/**")) {
      let j = i
      while (!lines[j].includes("*/")) j++
      doc = lines.slice(i, j + 1).join("\n")
      i = j
      continue
    }
    if (line.trim() === "" || line.startsWith("//") || line.startsWith("import ")) {
      if (!line.startsWith("//")) doc = ""
      continue
    }
    let text = line
    let d = depth(line)
    while ((d > 0 || !/[;}]\s*$/.test(text)) && i + 1 < lines.length) {
      i++
      text += `\n${lines[i]}`
      d += depth(lines[i])
    }
    result.push({ text, doc })
    doc = ""
  }
  return result
}

const kindOf = (text) =>
  /^(?:export )?(?:declare )?(?:abstract )?(function|const|let|class|interface|type|enum|namespace)\s/.exec(text)?.[1]
const nameOf = (text) =>
  /^(?:export )?(?:declare )?(?:abstract )?(?:function|const|let|class|interface|type|enum|namespace)\s+([A-Za-z_$][\w$]*)/.exec(
    text,
  )?.[1]

const parsed = new Map()
/** The file's declarations (exported or not) and its export statements. */
function parse(file) {
  if (parsed.has(file)) return parsed.get(file)
  const decls = new Map()
  const exports = []
  for (const s of statements(file)) {
    const name = nameOf(s.text)
    if (name !== undefined) {
      const d = decls.get(name) ?? { name, kind: kindOf(s.text), texts: [], doc: "", file, exported: false }
      d.texts.push(s.text.replace(/^export /, "").replace(/^declare /, ""))
      if (d.doc === "" && s.doc !== "") d.doc = s.doc
      if (s.text.startsWith("export ")) d.exported = true
      decls.set(name, d)
      continue
    }
    const star = /^export \* (?:as (\w+) )?from "(.+)";/.exec(s.text)
    if (star) {
      exports.push({ star: true, as: star[1], from: star[2] })
      continue
    }
    const list = /^export (type )?\{([^}]*)\}(?: from "(.+)")?;/.exec(s.text)
    if (list) {
      const names = list[2]
        .split(",")
        .map((x) => x.trim())
        .filter(Boolean)
        .map((x) => {
          const [orig, alias] = x.replace(/^type /, "").split(/\s+as\s+/)
          return { orig, alias: alias ?? orig }
        })
      exports.push({ star: false, names, from: list[3] })
    }
  }
  const r = { decls, exports }
  parsed.set(file, r)
  return r
}

const target = (file, spec) => {
  const base = resolve(dirname(file), spec)
  for (const f of [base.replace(/\.js$/, ".d.ts"), join(base, "index.d.ts")]) if (existsSync(f)) return f
  throw new Error(`${relative(root, file)}: cannot resolve ${spec}`)
}

/** Every name `file` exports → its declaration (a namespace export carries the file it names). */
function exported(file, seen = new Set()) {
  const all = new Map()
  if (seen.has(file)) return all
  seen.add(file)
  const { decls, exports } = parse(file)
  for (const d of decls.values()) if (d.exported) all.set(d.name, d)
  for (const e of exports) {
    if (e.star && e.as) {
      all.set(e.as, {
        name: e.as,
        kind: "namespace",
        texts: [],
        doc: "",
        file: target(file, e.from),
        members: exported(target(file, e.from)),
      })
      continue
    }
    const from = e.from === undefined ? file : target(file, e.from)
    const theirs =
      e.from === undefined ? new Map([...decls.values()].map((d) => [d.name, d])) : exported(from, new Set(seen))
    if (e.star) {
      for (const [n, d] of theirs) if (n !== "default") all.set(n, d)
      continue
    }
    for (const { orig, alias } of e.names) {
      const d = theirs.get(orig)
      if (d === undefined) throw new Error(`${relative(root, file)}: ${orig} not found in ${relative(root, from)}`)
      all.set(alias, d)
    }
  }
  return all
}

/** A doc comment as Markdown: the text without the comment's frame. */
const docText = (doc) =>
  doc
    .replace(/^\s*\/\*\*\s?/, "")
    .replace(/\s*\*\/\s*$/, "")
    .split("\n")
    .map((l) => l.replace(/^\s*\* ?/, ""))
    .join("\n")
    .trim()

const sections = [
  ["function", "Functions"],
  ["const", "Values"],
  ["class", "Classes"],
  ["interface", "Interfaces"],
  ["type", "Types"],
  ["enum", "Enums"],
  ["namespace", "Namespaces"],
]
const anchor = (entry, name) => `${entry}-${name}`.toLowerCase().replace(/[^a-z0-9-]/g, "-")

function renderEntry(entry, file) {
  const symbols = [...exported(file)].sort(([a], [b]) => a.localeCompare(b))
  const lines = [`## \`${entry}\``, "", `From \`${relative(root, file)}\`: ${symbols.length} exports.`, ""]
  const undocumented = []
  for (const [kind, title] of sections) {
    const here = symbols.filter(([, d]) => (d.kind === "let" ? "const" : d.kind) === kind)
    if (here.length === 0) continue
    lines.push(`### ${title}`, "", here.map(([n]) => `[\`${n}\`](#${anchor(entry, n)})`).join(" · "), "")
    for (const [name, d] of here) {
      lines.push(`<a id="${anchor(entry, name)}"></a>`, `#### \`${name}\``, "")
      if (d.kind === "namespace") {
        lines.push(
          `\`import { ${name} } from "${entry}"\`: ${[...d.members.keys()]
            .sort()
            .map((m) => `\`${name}.${m}\``)
            .join(", ")}.`,
          "",
        )
        for (const [m, md] of [...d.members].sort(([a], [b]) => a.localeCompare(b))) {
          lines.push(`- \`${name}.${m}\`${md.doc ? `: ${docText(md.doc).split("\n").join(" ")}` : ""}`)
        }
        lines.push("")
        continue
      }
      const text = d.texts.join("\n").replace(/^\s*\/\*\*[\s\S]*?\*\/\n?/gm, (c) => c) // members keep their doc comments
      lines.push("```ts", text, "```", "")
      if (d.doc) lines.push(docText(d.doc), "")
      else undocumented.push(name)
      if (name !== d.name) lines.push(`(exported as \`${name}\`; declared as \`${d.name}\`)`, "")
    }
  }
  return { text: lines.join("\n"), undocumented }
}

const entries = Object.entries(pkg.exports)
  .filter(([k]) => k !== "./package.json")
  .map(([k, v]) => [k === "." ? pkg.name : `${pkg.name}/${k.slice(2)}`, join(root, v.types)])
for (const [, file] of entries)
  if (!existsSync(file)) {
    console.error(`api-docs: ${relative(root, file)} is missing: run \`npm run build\` first`)
    process.exit(1)
  }

const rendered = entries.map(([entry, file]) => ({ entry, ...renderEntry(entry, file) }))
const text = [
  "# API reference",
  "",
  `miniseq ${pkg.version}. Generated by \`npm run docs:api\` (scripts/api-docs.mjs) from the declarations \`npm run build\` writes, that is from the`,
  "doc comments in `src/`: edit those, not this file. A guide to using the API: [library.md](library.md).",
  "",
  `Entry points: ${rendered.map((r) => `[\`${r.entry}\`](#${r.entry.replace(/[^a-z0-9]/g, "")})`).join(" · ")}. In a browser bundle \`miniseq\` and`,
  "`miniseq/webgpu` resolve to their `browser` builds: the same API without file I/O (`readSafetensors`, `writeSafetensorsAtomic`,",
  "`saveCheckpoint`, `loadCheckpoint`, `latestCheckpoint`, `loadCorpus`), and `webgpuBackendLayer` on `navigator.gpu`.",
  "",
  ...rendered.map((r) => r.text),
].join("\n")

if (process.argv.includes("--check")) {
  const current = existsSync(out) ? readFileSync(out, "utf8") : ""
  if (current !== text) {
    console.error("docs/api.md is out of date: run `npm run docs:api`")
    process.exit(1)
  }
  console.log("docs/api.md is up to date")
} else {
  writeFileSync(out, text)
  const undocumented = rendered.flatMap((r) => r.undocumented.map((n) => `${r.entry}:${n}`))
  console.log(
    `wrote ${relative(root, out)}: ${rendered.map((r) => r.entry).join(", ")}; ${undocumented.length} symbols without a doc comment${undocumented.length ? ` (${undocumented.join(", ")})` : ""}`,
  )
}
