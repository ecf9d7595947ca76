/**
 * What a browser bundle gets instead of Node's modules and Dawn (the `browser` field of miniseq's
 * package.json maps `node:fs`, `node:fs/promises`, `node:path`, `node:crypto`, `node:url`,
 * `node:module` and `webgpu` here). Some shared files also hold Node-only code — reading and
 * writing checkpoints and safetensors files, Dawn's device — that a page never calls; calling it
 * anyway fails with an error that says so.
 */
const nodeOnly =
  (name: string) =>
  (..._args: unknown[]): never => {
    throw new Error(`miniseq: ${name} is Node-only (files, Dawn); it is not available in a browser bundle`)
  }

// node:fs, node:fs/promises
export const open = nodeOnly("open")
export const readFile = nodeOnly("readFile")
export const writeFile = nodeOnly("writeFile")
export const rename = nodeOnly("rename")
export const rm = nodeOnly("rm")
export const mkdir = nodeOnly("mkdir")
export const readdir = nodeOnly("readdir")
export const readFileSync = nodeOnly("readFileSync")
export const existsSync = (_path: unknown): boolean => false
// node:path
export const join = (...parts: string[]): string => parts.join("/")
export const dirname = (path: string): string => path.replace(/\/[^/]*$/, "")
// node:crypto, node:module
export const randomBytes = nodeOnly("randomBytes")
export const createRequire = nodeOnly("createRequire")
// node:url: a URL's path is the best a page can do.
export const fileURLToPath = (url: string | URL): string => new URL(url).pathname
// webgpu (Dawn for Node): in a browser the device comes from navigator.gpu.
export const create = nodeOnly("webgpu's create (Dawn for Node)")
export const globals = {}
