/**
 * The token embedding with a padding row, as PyTorch's `nn.Embedding(padding_idx=p)` computes
 * it (Hugging Face builds every decoder's `embed_tokens` so, with `pad_token_id`): the lookup is a
 * plain gather, but the lookup sends no gradient to row p. Only the lookup: a tied LM head that
 * reads the same table still gives row p its gradient.
 */
import type { Tensor } from "../graph.js"
import * as o from "../ops.js"
import { routine } from "../regions.js"
import { declareRoutine } from "./declare.js"

/** How the padded embedding is seen as a region (no backend has a kernel for it). */
export const paddedEmbeddingRoutine = declareRoutine<{ padIndex: number }>()("paddedEmbedding", {
  inputs: ["table", "tokens"],
  outputs: ["y"],
})

/**
 * Rows of `table` [V, d] for `tokens` [...]; the gradient is the gather's (a scatter-add of the
 * cotangent), with the positions that hold `padIndex` left out. The backward reads the tokens
 * only, so nothing gathered is kept for it.
 */
export const paddedEmbedding = (table: Tensor, tokens: Tensor, padIndex: number): Tensor =>
  routine(
    paddedEmbeddingRoutine,
    (t: Tensor, ids: Tensor) => o.gather(t, ids),
    ([t, ids], _out, [g]) => {
      const isPad = o.reshape(o.equal(ids!, padIndex), [...ids!.shape, 1])
      return [o.scatterAdd(ids!, o.where(isPad, 0, g!), t!.shape[0]!), undefined]
    },
    { padIndex },
    "inputs",
  )(table, tokens)
