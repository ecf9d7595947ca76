#!/usr/bin/env node
/**
 * A tiny static server for the browser example:
 *   /                 → examples/browser/index.html
 *   /dist/…           → the bundle build.mjs wrote
 *   /data/corpus.txt  → the repository's shipped corpus
 * Usage: node examples/browser/serve.mjs [port]   (0 or none: a random free port)
 * Listens on 127.0.0.1 only and prints the page's URL. Build first: node examples/browser/build.mjs
 */
import { readFile } from "node:fs/promises"
import { createServer } from "node:http"
import { extname, join, normalize, sep } from "node:path"
import { fileURLToPath } from "node:url"

const here = fileURLToPath(new URL(".", import.meta.url))
const repo = join(here, "..", "..")

const types = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
}

/** Maps a URL path onto a file under one of the served roots, or undefined (→ 404). */
function resolvePath(pathname) {
  const routes = [
    ["/data/corpus.txt", join(repo, "data", "corpus.txt")],
    ["/", join(here, "index.html")],
    ["/index.html", join(here, "index.html")],
  ]
  for (const [route, file] of routes) if (pathname === route) return file
  if (pathname.startsWith("/dist/")) {
    const dist = join(here, "dist")
    const file = normalize(join(dist, decodeURIComponent(pathname.slice("/dist/".length))))
    // Refuse anything that climbs out of dist/ ("..", encoded slashes).
    return file.startsWith(dist + sep) ? file : undefined
  }
  return undefined
}

/** Starts the server; resolves with it and its URL once it listens. */
export function serve(port = 0) {
  const server = createServer(async (req, res) => {
    const { pathname } = new URL(req.url ?? "/", "http://127.0.0.1")
    const file = req.method === "GET" || req.method === "HEAD" ? resolvePath(pathname) : undefined
    try {
      if (file === undefined) throw Object.assign(new Error("not found"), { code: "ENOENT" })
      const body = await readFile(file)
      res.writeHead(200, {
        "content-type": types[extname(file)] ?? "application/octet-stream",
        "cache-control": "no-store",
      })
      res.end(req.method === "HEAD" ? undefined : body)
    } catch (e) {
      const missing = e.code === "ENOENT" || e.code === "EISDIR"
      res.writeHead(missing ? 404 : 500, { "content-type": "text/plain; charset=utf-8" })
      res.end(missing ? `not found: ${pathname}\n` : `error: ${e.message}\n`)
    }
  })
  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, "127.0.0.1", () => {
      const { port: actual } = server.address()
      resolve({ server, url: `http://127.0.0.1:${actual}/` })
    })
  })
}

// Run as a script (not imported by the test): parse the port, serve until Ctrl-C.
if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === normalize(process.argv[1])) {
  const arg = process.argv[2] ?? "0"
  const port = Number(arg)
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`serve.mjs: port must be an integer in [0, 65535] (0 = random), got "${arg}"`)
    process.exit(2)
  }
  const { url } = await serve(port)
  console.log(url)
}
