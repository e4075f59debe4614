/* SentencePiece unigram tokenizer with the ids of the TF.js Universal
 * Sentence Encoder tokenizer (npm @energetic-ai/embeddings, lib/tokenizer.ts;
 * the same code as @tensorflow-models/universal-sentence-encoder).
 *
 * What that tokenizer does, step by step, and how it is done here:
 *
 *  1. str.normalize("NFKC") -> utf8proc_map(STABLE | COMPOSE | COMPAT).
 *  2. A non-empty result gets U+2581 in front, and every U+0020 becomes
 *     U+2581 (tabs, newlines and other spaces stay as they are).
 *  3. A lattice over code points: from each position i, every piece that is
 *     a prefix of the rest of the text (a trie walk there, a hash lookup of
 *     each length here); when none is, one edge (i, i+1) with id 0 and
 *     score 0 (unk).
 *  4. Viterbi, endPos ascending, and for each endPos the edges by startPos
 *     ascending:  score = piece score + best[startPos];
 *                 if (best[endPos] === 0 || score >= best[endPos]) take it.
 *     Kept as is, because it changes ids:
 *       - best[] starts at 0, and 0 also means "unset": a position no edge
 *         ends at still has best 0 (better than any real, negative path),
 *         and a path whose scores sum to exactly 0 (null-score pieces such
 *         as ":" or "://", or unks) is overwritten by the next edge;
 *       - ties go to the later edge (>=), i.e. the shorter last piece;
 *       - null scores count as 0.
 *  5. Backtracking from the end: push words[pos], pos -= length of that
 *     piece's string in UTF-16 code units (words[] defaults to id 0, so an
 *     unreached position yields id 0 and a step of vocab[0]'s length).
 *  6. Runs of id 0 collapse into one, then the list is reversed.
 * Duplicate pieces: the trie keeps the last one inserted, so does the hash.
 *
 * Memory: the piece table is built at load and read-only afterwards. Each
 * encode mallocs O(text) scratch (normalized text, offsets, Viterbi arrays)
 * and frees it before returning. */
#include "mmembed/unigram.h"
#include "mmembed/common.h"

#include <json-c/json.h>
#include <utf8proc.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest piece, in code points, that the lattice pass can track (one bit
 * per length in a uint64_t mask). SentencePiece vocabularies stay far below
 * (USE Lite: 16). */
#define MAX_PIECE_CP 64

typedef struct {
    uint32_t off;     /* into text */
    uint32_t len;     /* bytes */
    uint32_t u16len;  /* length in UTF-16 code units (the JS string .length) */
    double score;     /* log-probability; JSON null reads as 0 */
} piece_t;

struct mm_unigram {
    int n;            /* pieces */
    int reserved;     /* the first `reserved` pieces never match */
    int unk;          /* id of a character no piece starts with */
    int max_cp;       /* longest matchable piece in code points */
    piece_t *pieces;  /* (n) */
    char *text;       /* every piece, NUL-terminated, back to back */
    int32_t *slots;   /* (mask + 1) open-addressing table of ids, -1 empty */
    uint64_t mask;
};

/* ============================================================ hashing == */

static uint64_t fnv_step(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}
#define FNV_INIT 14695981039346656037ull

/* The id of the matchable piece s[0..n) whose hash is h, or -1. */
static int lookup(const mm_unigram_t *u, uint64_t h, const char *s, size_t n)
{
    for (uint64_t i = h & u->mask;; i = (i + 1) & u->mask) {
        int32_t id = u->slots[i];
        if (id < 0)
            return -1;
        const piece_t *p = &u->pieces[id];
        if (p->len == n && memcmp(u->text + p->off, s, n) == 0)
            return id;
    }
}

/* Inserts id, replacing an earlier piece with the same text (the trie's
 * last-insert-wins). */
static void insert(mm_unigram_t *u, int id)
{
    const piece_t *p = &u->pieces[id];
    const char *s = u->text + p->off;
    uint64_t h = fnv_step(FNV_INIT, (const unsigned char *)s, p->len);
    for (uint64_t i = h & u->mask;; i = (i + 1) & u->mask) {
        int32_t o = u->slots[i];
        if (o < 0 || (u->pieces[o].len == p->len && memcmp(u->text + u->pieces[o].off, s, p->len) == 0)) {
            u->slots[i] = id;
            return;
        }
    }
}

/* =============================================================== load == */

/* Code points and UTF-16 length of a UTF-8 string; -1 if invalid. */
static int count_cp(const char *s, size_t n, uint32_t *u16)
{
    int cps = 0;
    *u16 = 0;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
        if (k <= 0)
            return -1;
        i += (size_t)k;
        cps++;
        *u16 += c > 0xFFFF ? 2 : 1;
    }
    return cps;
}

int mm_unigram_load(const char *path, int reserved, int unk_id, mm_unigram_t **out,
                    char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return mm_errf(err, errlen, MM_E_NOTFOUND, "%s: %s", path, strerror(errno));
    fclose(f);
    json_object *root = json_object_from_file(path);
    if (!root || !json_object_is_type(root, json_type_array)) {
        json_object_put(root);
        return mm_errf(err, errlen, MM_E_INVALID, "%s: not a JSON list of [piece, score]", path);
    }
    int rc = MM_E_NOMEM;
    size_t n = json_object_array_length(root);
    if (n == 0 || n > INT32_MAX / 4 || reserved < 0 || (size_t)reserved >= n || unk_id < 0 ||
        (size_t)unk_id >= n) {
        json_object_put(root);
        return mm_errf(err, errlen, MM_E_INVALID, "%s: %zu pieces, reserved %d, unk id %d", path, n,
                       reserved, unk_id);
    }
    mm_unigram_t *u = calloc(1, sizeof *u);
    if (!u)
        goto fail;
    u->n = (int)n;
    u->reserved = reserved;
    u->unk = unk_id;
    u->pieces = calloc(n, sizeof *u->pieces);
    if (!u->pieces)
        goto fail;

    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(root, i), *s, *sc;
        if (!json_object_is_type(e, json_type_array) || json_object_array_length(e) < 2 ||
            !json_object_is_type(s = json_object_array_get_idx(e, 0), json_type_string)) {
            rc = mm_errf(err, errlen, MM_E_INVALID, "%s: entry %zu is not [piece, score]", path, i);
            goto fail;
        }
        sc = json_object_array_get_idx(e, 1);
        if (sc && !json_object_is_type(sc, json_type_double) && !json_object_is_type(sc, json_type_int)) {
            rc = mm_errf(err, errlen, MM_E_INVALID, "%s: entry %zu: score is not a number or null", path, i);
            goto fail;
        }
        u->pieces[i].score = sc ? json_object_get_double(sc) : 0.0;
        u->pieces[i].len = (uint32_t)json_object_get_string_len(s);
        bytes += u->pieces[i].len + 1;
        if (bytes > UINT32_MAX) {
            rc = mm_errf(err, errlen, MM_E_INVALID, "%s: pieces too long", path);
            goto fail;
        }
    }
    u->text = malloc(bytes);
    if (!u->text)
        goto fail;
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)n)
        cap *= 2;
    u->mask = cap - 1;
    u->slots = malloc(cap * sizeof *u->slots);
    if (!u->slots)
        goto fail;
    memset(u->slots, 0xff, cap * sizeof *u->slots);

    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        piece_t *p = &u->pieces[i];
        const char *s = json_object_get_string(json_object_array_get_idx(json_object_array_get_idx(root, i), 0));
        memcpy(u->text + off, s, p->len);
        u->text[off + p->len] = '\0';
        p->off = (uint32_t)off;
        off += p->len + 1;
        int cps = count_cp(u->text + p->off, p->len, &p->u16len);
        if (cps < 0) {
            rc = mm_errf(err, errlen, MM_E_INVALID, "%s: piece %zu is not valid UTF-8", path, i);
            goto fail;
        }
        if (p->u16len == 0)
            p->u16len = 1; /* an empty piece would stall the backtracking */
        if ((int)i < reserved || cps == 0)
            continue; /* the trie skips reserved pieces; "" inserts nothing */
        if (cps > MAX_PIECE_CP) {
            rc = mm_errf(err, errlen, MM_E_INVALID, "%s: piece %zu is %d code points (at most %d)", path,
                         i, cps, MAX_PIECE_CP);
            goto fail;
        }
        if (cps > u->max_cp)
            u->max_cp = cps;
        insert(u, (int)i);
    }
    json_object_put(root);
    *out = u;
    return MM_OK;

fail:
    if (rc == MM_E_NOMEM)
        mm_errf(err, errlen, MM_E_NOMEM, "%s: out of memory", path);
    json_object_put(root);
    mm_unigram_free(u);
    return rc;
}

void mm_unigram_free(mm_unigram_t *u)
{
    if (!u)
        return;
    free(u->pieces);
    free(u->text);
    free(u->slots);
    free(u);
}

int mm_unigram_size(const mm_unigram_t *u)
{
    return u->n;
}

const char *mm_unigram_piece(const mm_unigram_t *u, int id)
{
    return id >= 0 && id < u->n ? u->text + u->pieces[id].off : NULL;
}

/* ============================================================= encode == */

int mm_unigram_encode(const mm_unigram_t *u, const char *text, size_t len, int32_t *ids, int cap,
                      int *n_out, char *err, size_t errlen)
{
    *n_out = 0;
    if (len == 0)
        return MM_OK;
    if (len > (size_t)INT32_MAX / 4)
        return mm_errf(err, errlen, MM_E_INVALID, "text of %zu bytes is too long", len);

    /* 1. NFKC. utf8proc_map reads exactly len bytes (NULs included). */
    utf8proc_uint8_t *norm = NULL;
    utf8proc_ssize_t nn = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &norm,
                                       UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
    if (nn < 0)
        return mm_errf(err, errlen, nn == UTF8PROC_ERROR_NOMEM ? MM_E_NOMEM : MM_E_INVALID,
                       "text: %s", utf8proc_errmsg(nn));
    if (nn == 0) {
        free(norm);
        return MM_OK;
    }

    /* 2. U+2581 in front and for every space; count code points. */
    size_t spaces = 0, cps = 0;
    for (utf8proc_ssize_t i = 0; i < nn; i++) {
        spaces += norm[i] == ' ';
        cps += (norm[i] & 0xC0) != 0x80;
    }
    size_t n = cps + 1;                     /* symbols */
    size_t sbytes = (size_t)nn + 2 * spaces + 3;
    size_t need = sbytes + (n + 1) * (sizeof(uint32_t) + sizeof(double) + 2 * sizeof(int32_t)) +
                  n * sizeof(uint64_t) + 64;
    unsigned char *block = malloc(need);
    if (!block) {
        free(norm);
        return mm_errf(err, errlen, MM_E_NOMEM, "text: out of memory");
    }
    double *best = (double *)block;                       /* (n + 1) */
    uint64_t *lens = (uint64_t *)(best + n + 1);           /* (n) bit k-1: a piece of k cps at i */
    uint32_t *off = (uint32_t *)(lens + n);                /* (n + 1) byte offsets of symbols */
    int32_t *words = (int32_t *)(off + n + 1);             /* (n + 1) */
    int32_t *res = words + n + 1;                          /* (n + 1) backtracked ids */
    char *s = (char *)(res + n + 1);                       /* (sbytes) */

    static const char SEP[3] = { (char)0xE2, (char)0x96, (char)0x81 }; /* U+2581 */
    size_t w = 0, k = 0;
    memcpy(s, SEP, 3);
    off[k++] = 0;
    w = 3;
    for (utf8proc_ssize_t i = 0; i < nn; i++) {
        if ((norm[i] & 0xC0) != 0x80)
            off[k++] = (uint32_t)w;
        if (norm[i] == ' ') {
            memcpy(s + w, SEP, 3);
            w += 3;
        } else {
            s[w++] = (char)norm[i];
        }
    }
    off[n] = (uint32_t)w;
    free(norm);

    /* 3. The lattice: which piece lengths start at each position. */
    for (size_t i = 0; i < n; i++) {
        uint64_t h = FNV_INIT, m = 0;
        size_t kmax = MM_MIN((size_t)u->max_cp, n - i);
        for (size_t j = 1; j <= kmax; j++) {
            h = fnv_step(h, (const unsigned char *)s + off[i + j - 1], off[i + j] - off[i + j - 1]);
            if (lookup(u, h, s + off[i], off[i + j] - off[i]) >= 0)
                m |= 1ull << (j - 1);
        }
        lens[i] = m;
    }

    /* 4. Viterbi, in the reference's order and with its comparisons. */
    for (size_t e = 0; e <= n; e++) {
        best[e] = 0.0;
        words[e] = 0;
    }
    for (size_t e = 1; e <= n; e++) {
        size_t s0 = e > (size_t)u->max_cp ? e - (size_t)u->max_cp : 0;
        for (size_t b = s0; b < e; b++) {
            int id;
            double score;
            if (lens[b] == 0) {
                if (b + 1 != e)
                    continue;
                id = u->unk;
                score = 0.0;
            } else {
                if (!(lens[b] >> (e - b - 1) & 1))
                    continue;
                uint64_t h = fnv_step(FNV_INIT, (const unsigned char *)s + off[b], off[e] - off[b]);
                id = lookup(u, h, s + off[b], off[e] - off[b]);
                score = u->pieces[id].score;
            }
            double sc = score + best[b];
            if (best[e] == 0.0 || sc >= best[e]) {
                best[e] = sc;
                words[e] = id;
            }
        }
    }

    /* 5-6. Backtrack, collapse runs of id 0, reverse. */
    size_t r = 0;
    int prev_unk = 0;
    for (long long it = (long long)n; it > 0;) {
        int32_t id = words[it];
        if (!(prev_unk && id == 0))
            res[r++] = id;
        prev_unk = id == 0;
        it -= (long long)u->pieces[id].u16len;
    }
    for (size_t i = 0; i < r && (int)i < cap; i++)
        ids[i] = res[r - 1 - i];
    *n_out = r > INT32_MAX ? INT32_MAX : (int)r;
    free(block);
    return MM_OK;
}
