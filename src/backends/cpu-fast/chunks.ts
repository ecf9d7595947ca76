/**
 * How the two threads share a job: the job is cut into chunks (row or column blocks of a product,
 * kv-head groups of attention, runs of an exp), and each thread claims the next chunk until none
 * is left. On a machine where another process holds a core, the helper thread may get no time
 * for a while; then the calling thread simply claims more chunks, instead of waiting for a fixed
 * half. Every chunk is computed the same way whoever runs it, so results do not depend on the split.
 *
 * Both functions are self-contained (no imports, no outer names): their source also runs in the
 * helper thread (./helper-thread.ts).
 *
 * Control words (int32 indices into the memory's first 256 bytes): JOB 0 (the job's number,
 * 15 bits), READY 2, KIND 3, CLAIM 4 (job << 16 | next chunk), FIN 5 (chunks finished), TOTAL 6,
 * HELPED 7 (chunks the helper has run, ever), ARGS 8… (the job's arguments, 56 words).
 */
export const CTL = { JOB: 0, READY: 2, KIND: 3, CLAIM: 4, FIN: 5, TOTAL: 6, HELPED: 7, ARGS: 8 } as const
/** Job kinds. */
export const KIND = { GEMM: 0, ATTENTION: 1, EXP: 2, EXIT: 3 } as const
/** CLAIM's chunk field once a job is closed (no chunk number reaches it). */
export const CLOSED = 0xffff

/** What a thread runs chunks with: the memory as float32, the module's kernels, its own scratch. */
export interface ChunkEnv {
  f32: Float32Array
  gemm: (...args: number[]) => void
  expaffine: (x: number, o: number, n: number, scale: number, shift: number) => number
  attention: (
    f: Float32Array,
    gemm: (...args: number[]) => void,
    w: ArrayLike<number>,
    expaffine: (x: number, o: number, n: number, scale: number, shift: number) => number,
  ) => void
  /** This thread's packing scratch: the A block, the B block, the edge tile (addresses). */
  ap: number
  bp: number
  t: number
  /** 0 for the calling thread, 1 for the helper (which scratch of an attention job is its own). */
  who: number
}

/**
 * Chunk c of a job. GEMM args: the 12 first gemm arguments (A, rsA, csA, B, rsB, csB, C, ldc,
 * m, n, k, accumulate), then byRows (1: chunks of rows, 0: of columns) and the chunk's size.
 * EXP: x, o, n, chunk size. ATTENTION: the words of ./attention-task.ts (one group per chunk),
 * then the helper's P, dP and zero-dO scratch.
 */
export function runChunk(kind: number, a: ArrayLike<number>, c: number, env: ChunkEnv): void {
  if (kind === 0) {
    const [A, rsA, csA, B, rsB, csB, C, ldc, m, n, k, acc, byRows, piece] = Array.from(a).slice(0, 14) as number[]
    const from = c * piece!
    if (byRows === 1) {
      const rows = Math.min(piece!, m! - from)
      env.gemm(
        A! + from * rsA!,
        rsA!,
        csA!,
        B!,
        rsB!,
        csB!,
        C! + from * ldc!,
        ldc!,
        rows,
        n!,
        k!,
        acc!,
        env.ap,
        env.bp,
        env.t,
      )
    } else {
      const cols = Math.min(piece!, n! - from)
      env.gemm(
        A!,
        rsA!,
        csA!,
        B! + from * csB!,
        rsB!,
        csB!,
        C! + 4 * from,
        ldc!,
        m!,
        cols,
        k!,
        acc!,
        env.ap,
        env.bp,
        env.t,
      )
    }
  } else if (kind === 2) {
    const from = c * a[3]!
    env.expaffine(a[0]! + 4 * from, a[1]! + 4 * from, Math.min(a[3]!, a[2]! - from), 1, 0)
  } else {
    const w = Array.from(a).slice(0, 25)
    w[7] = c // g0
    w[8] = c + 1 // g1
    if (env.who === 1) {
      w[19] = a[25]!
      w[20] = a[26]!
      w[21] = a[27]!
    }
    w[22] = env.ap
    w[23] = env.bp
    w[24] = env.t
    env.attention(env.f32, env.gemm, w, env.expaffine)
  }
}

/**
 * Claims and runs chunks of job `job` until none is left (or the job is no longer the current
 * one); counts each finished chunk in FIN. The claim is a compare-exchange on CLAIM, which holds
 * the job's number: a thread that read an older job's arguments can never claim a newer job's chunk.
 */
export function serveJob(ctl: Int32Array, job: number, env: ChunkEnv, run: typeof runChunk): void {
  const kind = ctl[3]!,
    total = ctl[6]!
  const args = Array.from(ctl.subarray(8, 64))
  for (;;) {
    const w = Atomics.load(ctl, 4)
    if (w >>> 16 !== job || (w & 0xffff) >= total) return
    if (Atomics.compareExchange(ctl, 4, w, w + 1) !== w) continue
    run(kind, args, w & 0xffff, env)
    if (env.who === 1) Atomics.add(ctl, 7, 1)
    Atomics.add(ctl, 5, 1)
    Atomics.notify(ctl, 5)
  }
}
