/**
 * The planner off the page's thread: a large model takes a second or more of plans, and the
 * inputs may change again meanwhile. The page posts a question with an id and keeps only the
 * answer to its latest one.
 */
import { type FitsQuestion, whatFits } from "./fits.js"

export type WorkerRequest = { readonly id: number; readonly question: FitsQuestion }
export type WorkerReply =
  | { readonly id: number; readonly answer: ReturnType<typeof whatFits> }
  | { readonly id: number; readonly error: string }

self.onmessage = (e: MessageEvent<WorkerRequest>) => {
  const { id, question } = e.data
  try {
    self.postMessage({ id, answer: whatFits(question) } satisfies WorkerReply)
  } catch (err) {
    self.postMessage({ id, error: err instanceof Error ? err.message : String(err) } satisfies WorkerReply)
  }
}
