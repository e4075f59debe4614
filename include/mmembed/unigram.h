/* unigram — SentencePiece unigram tokenizer, as the TF.js Universal Sentence
 * Encoder packages run it (npm @energetic-ai/embeddings, and
 * @tensorflow-models/universal-sentence-encoder before it), with the same
 * ids, quirks included.
 *
 * Vocabulary: a JSON list of [piece, score] pairs (vocab.json of those
 * packages); a piece's id is its index, its score a log-probability (null is
 * read as 0, as JavaScript's `null + x` does). The first `reserved` entries
 * (<unk>-like "\uFFFD", <s>, </s>, ...) never match text; a character that
 * starts no piece becomes unk_id.
 *
 * Encoding (src/text/unigram.c says which quirks of the reference it keeps):
 *   NFKC -> prefix U+2581 and replace every ' ' (only U+0020) by U+2581 ->
 *   Viterbi over code points, maximizing the sum of piece scores ->
 *   consecutive unk ids merged into one.
 *
 * Lifetimes: loaded once, read-only afterwards (forked workers share it);
 * mm_unigram_encode is thread-safe and mallocs its scratch per call
 * (proportional to the text; no state is kept between calls). */
#ifndef MMEMBED_UNIGRAM_H
#define MMEMBED_UNIGRAM_H

#include <stddef.h>
#include <stdint.h>

typedef struct mm_unigram mm_unigram_t;

/* Loads the piece list at `path` (JSON, see above). `reserved` leading
 * pieces are excluded from matching; `unk_id` (< number of pieces) is the id
 * of a character no piece starts with. Returns 0 with *out owning the
 * tokenizer, or MM_E_NOTFOUND (cannot open), MM_E_INVALID (not a list of
 * [string, number|null] pairs, or bad reserved/unk_id), MM_E_NOMEM, with a
 * one-line reason in err. */
int mm_unigram_load(const char *path, int reserved, int unk_id, mm_unigram_t **out,
                    char *err, size_t errlen);

/* Frees a tokenizer (NULL is fine). */
void mm_unigram_free(mm_unigram_t *u);

/* Encodes UTF-8 text[0..len) (need not be NUL-terminated). The segmentation
 * is always computed over the whole text (the best path is global); the
 * first MM_MIN(cap, total) ids are written to ids[] and *n_out receives the
 * total count, which may exceed cap (snprintf-style; cap 0 with ids NULL
 * just counts). An empty text gives 0 ids. Returns 0, MM_E_INVALID (invalid
 * UTF-8) or MM_E_NOMEM, with a reason in err. */
int mm_unigram_encode(const mm_unigram_t *u, const char *text, size_t len, int32_t *ids, int cap,
                      int *n_out, char *err, size_t errlen);

/* Number of pieces (ids are 0 .. size-1). */
int mm_unigram_size(const mm_unigram_t *u);

/* The piece of an id (UTF-8, NUL-terminated, owned by the tokenizer), or
 * NULL when id is out of range. */
const char *mm_unigram_piece(const mm_unigram_t *u, int id);

#endif
