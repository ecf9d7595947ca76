/**
 * The shipped corpus on disk. Node-only (node:fs), kept apart from data.ts so the batch loader
 * also bundles for the browser, where the page fetches the same file over HTTP.
 */
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

/** data/corpus.txt (Moby-Dick, public domain; see data/README.md), found relative to this file so any cwd works. */
export const DEFAULT_CORPUS_PATH = fileURLToPath(new URL("../../data/corpus.txt", import.meta.url))

/** A UTF-8 text file's contents (default: the shipped corpus). Node only. */
export function loadCorpus(path: string = DEFAULT_CORPUS_PATH): string {
  return readFileSync(path, "utf8")
}
