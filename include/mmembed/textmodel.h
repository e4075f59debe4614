/* textmodel — text-only embedding encoders loaded from Hugging Face folders
 * (src/model/bert.c, src/model/qwen3.c; shared parts in textcommon.c):
 *
 *   bert   BertModel-shaped encoders (all-MiniLM, bge, e5, gte-small/base
 *          ...): absolute positions, post-LN blocks, GELU FFN; pooling from
 *          the sentence-transformers files (modules.json -> Pooling config:
 *          mean or CLS), mean when there are none.
 *   qwen3  Qwen3Model decoders used as embedders (Qwen3-Embedding): RMSNorm,
 *          q/k norm, rotary, grouped-query causal attention, SwiGLU; pooled
 *          at the last token, which the caller makes the EOS
 *          (mm_tm_info.append_eos_id).
 *
 * Two lifetimes, like mmembed/model.h:
 *   mm_tm_t         loaded once in the master: config + every weight the
 *                   forward pass reads, converted to f32 (the token
 *                   embedding table stays in its checkpoint dtype) into one
 *                   sealed read-only MAP_SHARED memfd that forked workers
 *                   share. Never written after mm_tm_load returns.
 *   mm_tm_runner_t  one per worker (or thread): a compute backend (its own
 *                   CPU one, or the caller's: mm_tm_runner_new_on) and all
 *                   scratch there, allocated up front; mm_tm_encode never
 *                   allocates (the CPU backend sizes its attention scores
 *                   block once, at the first pass of the longest length).
 *
 * Inputs are token ids (text/tokenizer.h makes them, special tokens
 * included); outputs are pooled vectors, NOT normalized. */
#ifndef MMEMBED_TEXTMODEL_H
#define MMEMBED_TEXTMODEL_H

#include <stddef.h>
#include <stdint.h>

#include "mmembed/nn.h"

typedef struct mm_tm mm_tm_t;
typedef struct mm_tm_runner mm_tm_runner_t;
struct mm_backend;

enum { MM_TM_POOL_MEAN = 1, MM_TM_POOL_CLS, MM_TM_POOL_LAST };

/* Longest sequence a runner accepts, whatever the config allows (Qwen3
 * configs say 32768-40960; scratch grows with the longest sequence). */
#define MM_TM_MAX_TOKENS 8192

typedef struct {
    const char *name;   /* last path component of the model directory */
    const char *arch;   /* "bert" | "qwen3" */
    int dim;            /* hidden_size: floats per output vector */
    int max_tokens;     /* longest accepted sequence, special tokens included:
                         * min(max_position_embeddings, sentence-transformers
                         * max_seq_length when given, MM_TM_MAX_TOKENS) */
    int vocab_size;     /* valid ids are [0, vocab_size) */
    int pooling;        /* MM_TM_POOL_* */
    int append_eos_id;  /* -1, or the id the caller appends after the
                         * tokenizer's output when the tokenizer does not
                         * already end with it (qwen3: config eos_token_id,
                         * <|endoftext|> 151643) */
    int layers, heads;
    const char *dtype;  /* checkpoint dtype: "f32", "f16", "bf16" or "mixed" */
    const char *compute; /* dense layers' dtype: "f32", "bf16" or "q8" */
    int pack_cache;      /* 0 no pack cache, 1 mapped from it, 2 built and stored, -1 not stored */
} mm_tm_info_t;

/* 1 if dir/config.json names an architecture this module runs
 * (architectures Bert* / Qwen3* or model_type "bert" / "qwen3"), else 0.
 * Reads config.json only. */
int mm_tm_is_supported(const char *dir);

/* Loads the model in directory `dir` (config.json, model.safetensors or an
 * index + shards in F32/F16/BF16, optional modules.json + pooling config,
 * sentence_bert_config.json). Tensor names may carry the "bert." / "model."
 * prefix of the *For* heads, whose extra tensors are ignored. Call before
 * fork() so workers share the weights. On success *out is owned by the
 * caller (mm_tm_free). On failure *out is NULL, err holds one line naming
 * the file, key or tensor at fault, and the return is MM_E_NOTFOUND (no
 * config / checkpoint / tensor), MM_E_UNSUPPORTED (architecture, activation,
 * position type, dtype), MM_E_INVALID (bad config value, mis-shaped
 * tensor), MM_E_NOMEM or MM_ERR. */
int mm_tm_load(const char *dir, mm_tm_t **out, char *err, size_t errlen);

/* mm_tm_load with the dense layers packed in `dtype` (mm_dtype_t). */
int mm_tm_load_as(const char *dir, mm_dtype_t dtype, mm_tm_t **out, char *err, size_t errlen);

/* Unmaps the weights and frees the model (NULL is fine). Free its runners
 * first. */
void mm_tm_free(mm_tm_t *m);

/* Static facts; valid as long as the model. */
const mm_tm_info_t *mm_tm_info(const mm_tm_t *m);

/* Bytes of the shared weight mapping. */
size_t mm_tm_weight_bytes(const mm_tm_t *m);

/* Overrides the pooling (MM_TM_POOL_*) of a loaded model — before fork, or
 * for tests. Returns 0 or MM_E_INVALID. */
int mm_tm_set_pooling(mm_tm_t *m, int pooling);

/* Makes a run state with scratch for passes of up to max_batch sequences
 * (more are split into several passes) and up to max(info.max_tokens,
 * min(max_batch * max_tokens, 4096)) tokens per pass. Scratch is about
 * tokens * (2 hidden + 2 q_dim + 2 kv_dim) floats plus 512 rows of the
 * FFN width: ~280 MB of address space for Qwen3-0.6B at 8192 tokens, of
 * which a pass touches only the rows it uses. threads >= 1 sets the thread
 * count of nn's pool (dense layers) and OpenBLAS's (attention products),
 * both process-wide. Returns NULL when out of memory or
 * max_batch < 1. */
mm_tm_runner_t *mm_tm_runner_new(const mm_tm_t *m, int max_batch, int threads);

/* The same forward on a compute backend (mmembed/backend.h) the caller
 * opened and keeps open while the runner lives: the runner puts its own
 * copy of the weights there (a GPU reads f32 blobs: load the model with
 * dtype f32) and its scratch. On the CPU backend it computes the bits of
 * mm_tm_runner_new's runner. NULL when out of (device) memory. */
mm_tm_runner_t *mm_tm_runner_new_on(const mm_tm_t *m, struct mm_backend *be, int max_batch);

/* Frees a runner (NULL is fine). */
void mm_tm_runner_free(mm_tm_runner_t *r);

/* Encodes n sequences: ids[i] holds lens[i] ids (1..max_tokens, each in
 * [0, vocab_size)) exactly as the model must see them (qwen3: ending in
 * append_eos_id). Sequences are packed without padding, so a sequence's
 * vector does not depend on its batch beyond f32 rounding (~1e-6; BLAS
 * blocks differently for different row counts). Writes n * dim floats to
 * out, pooled, NOT normalized. Returns 0, MM_E_TOOBIG (a sequence longer
 * than max_tokens) or MM_E_INVALID (n < 0, empty sequence, id out of
 * range); nothing is written on error. */
int mm_tm_encode(mm_tm_runner_t *r, const int32_t *const *ids, const int *lens, int n,
                 float *out);

#endif
