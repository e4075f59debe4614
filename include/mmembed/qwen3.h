/* qwen3 — the Qwen3 decoder stack (src/model/qwen3.c) on input rows the
 * caller made, at positions the caller chose: what a vision-language model
 * needs to feed it image embeddings beside text tokens. mm_tm_encode
 * (textmodel.h) is this with embed_tokens rows and positions 0..len-1.
 *
 * The model and runner are textmodel.h's (mm_tm_load_as / the registry,
 * mm_tm_runner_new); both functions answer MM_E_UNSUPPORTED for a model
 * of another architecture. */
#ifndef MMEMBED_QWEN3_H
#define MMEMBED_QWEN3_H

#include <stdint.h>

typedef struct mm_tm mm_tm_t;
typedef struct mm_tm_runner mm_tm_runner_t;

/* x (n, hidden) = embed_tokens[ids], in f32 (converted from the table's
 * checkpoint dtype). Returns 0, MM_E_INVALID (an id outside [0, vocab))
 * or MM_E_UNSUPPORTED; nothing is written on error. */
int mm_qwen3_embed_ids(const mm_tm_t *m, const int32_t *ids, int n, float *x);

/* Runs the decoder (every layer, then the final RMSNorm) over n sequences
 * laid back to back: x (sum lens, hidden) their input rows, pos (sum lens)
 * each row's rotary position in [0, max_tokens) (any order; attention stays
 * causal by row order). Writes out (n, hidden), pooled by the model's
 * pooling (the last row for Qwen3-Embedding), NOT normalized. The caller
 * keeps x and pos. Returns 0, MM_E_INVALID (n < 0, an empty sequence, a
 * position out of range), MM_E_TOOBIG (a sequence longer than max_tokens)
 * or MM_E_UNSUPPORTED; nothing is written on error. Passes are split as
 * for mm_tm_encode, so with the same rows and positions the vectors are
 * bit-identical to it. */
int mm_qwen3_forward_embeds(mm_tm_runner_t *r, const float *x, const int32_t *pos, const int *lens, int n,
                            float *out);

#endif
