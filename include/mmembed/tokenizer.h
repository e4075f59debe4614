/* Text tokenizer driven by a Hugging Face `tokenizer.json`.
 *
 * The pipeline is the one `tokenizers` runs, with the same results:
 *   added tokens (matched in the raw text) -> normalizer -> added tokens
 *   marked `normalized` -> pre-tokenizer -> model (BPE | WordPiece |
 *   WordLevel) -> truncation -> post-processor (BOS/EOS, CLS/SEP).
 *
 * Lifetimes: a tokenizer is loaded once (process lifetime, typically in the
 * master before fork) and is read-only afterwards, so forked workers share its
 * pages. Encoding keeps a bounded per-thread scratch (word cache, buffers)
 * that is never written into the tokenizer itself. */
#ifndef MMEMBED_TOKENIZER_H
#define MMEMBED_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct mm_tokenizer mm_tokenizer_t;

/* Load tokenizer.json at `path`. On success *out owns a new tokenizer (free
 * with mm_tokenizer_free) and 0 is returned. On failure *out is NULL, a
 * one-line reason is written to err and the status says why: MM_E_NOTFOUND
 * (cannot open), MM_E_INVALID (not JSON / malformed), MM_E_UNSUPPORTED (a
 * component type this implementation does not know), MM_E_NOMEM. */
int mm_tokenizer_load(const char *path, mm_tokenizer_t **out, char *err, size_t errlen);

/* Same as mm_tokenizer_load, from the JSON text json[0..len) (need not be
 * NUL-terminated). The text is not referenced after return. */
int mm_tokenizer_load_json(const char *json, size_t len, mm_tokenizer_t **out,
                           char *err, size_t errlen);

/* Free a tokenizer (NULL is fine). No thread may be encoding with it. */
void mm_tokenizer_free(mm_tokenizer_t *t);

/* Encode UTF-8 text[0..len) (need not be NUL-terminated) into ids[0..*n_out),
 * special tokens of the post-processor included (CLIP: 49406 ... 49407).
 * max_len > 0: truncate like HF `truncation=True, max_length=max_len`: the
 *   content is cut so that content + special tokens == max_len at most, and
 *   the special tokens (EOS) are kept. Work stops as soon as the kept tokens
 *   are known, so any input size works with cap >= max_len.
 * max_len <= 0: no truncation; the whole encoding must fit in cap.
 * Returns 0, MM_E_INVALID (invalid UTF-8, or max_len smaller than the special
 * tokens), MM_E_TOOBIG (the result does not fit in cap), MM_E_UNPROCESSABLE
 * (the model cannot represent the text, e.g. no unk token), MM_E_NOMEM.
 * Thread-safe for concurrent calls on one tokenizer. */
int mm_tokenizer_encode(const mm_tokenizer_t *t, const char *text, size_t len, int max_len,
                        int32_t *ids, int cap, int *n_out, char *err, size_t errlen);

/* Id of a token string (added tokens first, then the model vocabulary);
 * -1 if absent. */
int mm_tokenizer_token_id(const mm_tokenizer_t *t, const char *token);

/* Token string of an id (NUL-terminated, owned by the tokenizer); NULL if
 * the id is unknown. */
const char *mm_tokenizer_id_token(const mm_tokenizer_t *t, int id);

/* Number of distinct tokens: model vocabulary plus added tokens that are not
 * in it (HF get_vocab_size(with_added_tokens=True)). */
int mm_tokenizer_vocab_size(const mm_tokenizer_t *t);

/* First special id the post-processor puts before the content (CLIP
 * <|startoftext|>, BERT [CLS]); -1 if none. */
int mm_tokenizer_bos_id(const mm_tokenizer_t *t);

/* Last special id the post-processor puts after the content (CLIP
 * <|endoftext|>, BERT [SEP]); -1 if none. Models that pool at the EOS look
 * for this id. */
int mm_tokenizer_eos_id(const mm_tokenizer_t *t);

/* How many special tokens the post-processor adds to one sequence. */
int mm_tokenizer_num_special(const mm_tokenizer_t *t);

/* Free the calling thread's encode scratch (word cache and buffers). Optional:
 * for threads that end, and for leak checkers; the next encode recreates it. */
void mm_tokenizer_thread_cleanup(void);

#endif
