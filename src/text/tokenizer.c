/* Hugging Face `tokenizer.json`, re-implemented to give the ids `tokenizers`
 * gives.
 *
 * The pipeline mirrors tokenizers/src/tokenizer/mod.rs (encode_single_sequence):
 *   1. added tokens that are not `normalized` are cut out of the raw text;
 *   2. every other piece goes through the normalizer (NFC, Lowercase, ...);
 *   3. added tokens that are `normalized` are cut out of the normalized text;
 *   4. the pre-tokenizer splits what is left into words (Split, ByteLevel, ...);
 *   5. the model turns each word into ids (BPE, WordPiece, WordLevel);
 *   6. truncation, then the post-processor adds BOS/EOS (CLS/SEP).
 *
 * Differences in how it is done, not in what comes out:
 *   - No offsets are tracked: only ids are produced.
 *   - Steps 4-5 stream: each pre-tokenizer stage hands its pieces straight to
 *     the next stage, and the last one to the model, so encoding stops as soon
 *     as truncation knows which tokens stay (a 1 MB text with max_len 77 only
 *     normalizes the text and tokenizes the first words).
 *   - HF regexes run on Oniguruma; here PCRE2 (UTF+UCP) runs them after a
 *     rewrite of the escapes whose meaning differs (\s \S \w \W \h \H), and
 *     the match loop follows Oniguruma's rule for empty matches.
 *
 * Memory: the tokenizer is built at load and only read afterwards, so forked
 * workers share its pages. Everything an encode writes lives in a per-thread
 * scratch (buffers that grow to the largest input seen and a bounded word
 * cache), created on first use. */
#include "mmembed/tokenizer.h"
#include "mmembed/common.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>
#include <json-c/json.h>

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ====================================================================== */
/* Small helpers: growable arrays, byte buffers, UTF-8                     */
/* ====================================================================== */

/* Grow the array *pp (of elements of size el) to hold at least `need`.
 * The pointer is passed by address as void * and copied with memcpy so the
 * helper works for any element type without aliasing tricks. */
static int grow(void *pp, size_t *cap, size_t need, size_t el)
{
    if (need <= *cap)
        return MM_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / el)
            return MM_E_NOMEM;
        c *= 2;
    }
    void *p;
    memcpy(&p, pp, sizeof p);
    void *q = realloc(p, c * el);
    if (!q)
        return MM_E_NOMEM;
    memcpy(pp, &q, sizeof q);
    *cap = c;
    return MM_OK;
}

typedef struct {
    char *p;
    size_t n, cap;
} sbuf_t;

static int sb_reserve(sbuf_t *b, size_t extra)
{
    if (extra > SIZE_MAX - b->n - 1)
        return MM_E_NOMEM;
    return grow(&b->p, &b->cap, b->n + extra + 1, 1);
}

static int sb_put(sbuf_t *b, const void *s, size_t n)
{
    if (sb_reserve(b, n))
        return MM_E_NOMEM;
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    return MM_OK;
}

static void sb_free(sbuf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* Length of a UTF-8 sequence from its (valid) lead byte. */
static inline size_t u8len(unsigned char b)
{
    return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

/* Decode one code point of valid UTF-8. */
static inline int32_t u8dec(const char *s, size_t *len)
{
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80) {
        *len = 1;
        return u[0];
    }
    if (u[0] < 0xE0) {
        *len = 2;
        return ((int32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    }
    if (u[0] < 0xF0) {
        *len = 3;
        return ((int32_t)(u[0] & 0x0F) << 12) | ((int32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    }
    *len = 4;
    return ((int32_t)(u[0] & 0x07) << 18) | ((int32_t)(u[1] & 0x3F) << 12) |
           ((int32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
}

static inline size_t u8enc(int32_t c, char *o)
{
    unsigned char *u = (unsigned char *)o;
    if (c < 0x80) {
        u[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        u[0] = (unsigned char)(0xC0 | (c >> 6));
        u[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        u[0] = (unsigned char)(0xE0 | (c >> 12));
        u[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        u[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    u[0] = (unsigned char)(0xF0 | (c >> 18));
    u[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    u[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    u[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

static int sb_putcp(sbuf_t *b, int32_t c)
{
    if (sb_reserve(b, 4))
        return MM_E_NOMEM;
    b->n += u8enc(c, b->p + b->n);
    return MM_OK;
}

/* Strict UTF-8 check (no overlongs, no surrogates, <= U+10FFFF), the set of
 * strings a Rust &str may hold. Returns 1 if valid, else 0 and *bad. */
static int u8valid(const char *s, size_t n, size_t *bad)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, u + i, 8);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        unsigned char b = u[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned char lo = 0x80, hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF)
            k = 1;
        else if (b >= 0xE0 && b <= 0xEF) {
            k = 2;
            if (b == 0xE0)
                lo = 0xA0;
            if (b == 0xED)
                hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            k = 3;
            if (b == 0xF0)
                lo = 0x90;
            if (b == 0xF4)
                hi = 0x8F;
        } else {
            *bad = i;
            return 0;
        }
        if (i + k >= n) {
            *bad = i;
            return 0;
        }
        if (u[i + 1] < lo || u[i + 1] > hi) {
            *bad = i;
            return 0;
        }
        for (size_t j = 2; j <= k; j++)
            if ((u[i + j] & 0xC0) != 0x80) {
                *bad = i;
                return 0;
            }
        i += k + 1;
    }
    return 1;
}

/* Start of the code point that ends at byte i (i > 0). */
static inline size_t u8prev(const char *s, size_t i)
{
    do
        i--;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80);
    return i;
}

/* ====================================================================== */
/* Unicode predicates (the Rust std / unicode_categories ones HF uses)     */
/* ====================================================================== */

/* Unicode White_Space: Rust char::is_whitespace, Oniguruma and Rust regex \s. */
static int is_ws(int32_t c)
{
    if (c <= 0x20)
        return c == 0x20 || (c >= 0x09 && c <= 0x0D);
    if (c < 0x85)
        return 0;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static int cat_is_punct(utf8proc_category_t k)
{
    return k == UTF8PROC_CATEGORY_PC || k == UTF8PROC_CATEGORY_PD || k == UTF8PROC_CATEGORY_PS ||
           k == UTF8PROC_CATEGORY_PE || k == UTF8PROC_CATEGORY_PI || k == UTF8PROC_CATEGORY_PF ||
           k == UTF8PROC_CATEGORY_PO;
}

/* BertPreTokenizer / Punctuation: ASCII punctuation (which includes symbols
 * such as $ + < = > ^ ` | ~) or any Unicode P* category. */
static int is_bert_punct(int32_t c)
{
    if (c < 0x80)
        return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
               (c >= 123 && c <= 126);
    return cat_is_punct(utf8proc_category(c));
}

/* Regex \w as Rust regex and Oniguruma define it (UTS #18): Alphabetic, Mark,
 * Decimal_Number, Connector_Punctuation, Join_Control. Alphabetic is taken as
 * L* + Nl plus the enclosed letters that are Other_Alphabetic. */
static int is_word(int32_t c)
{
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9) ||
        (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
        (c >= 0x1F170 && c <= 0x1F189))
        return 1;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}

/* Rust char::is_numeric (Digits pre-tokenizer): Nd, Nl, No. */
static int is_numeric(int32_t c)
{
    if (c < 0x80)
        return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

/* BertNormalizer: control characters (C* categories but \t \n \r). */
static int is_bert_control(int32_t c)
{
    if (c == '\t' || c == '\n' || c == '\r')
        return 0;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CS:
        return 1;
    default:
        return 0;
    }
}

static int is_cjk(int32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* ====================================================================== */
/* Hash tables: string -> int32 (vocab), id pair -> (rank, new id) (merges) */
/* ====================================================================== */

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = mix64(h ^ w);
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    if (n)
        memcpy(&w, s, n);
    return mix64(h ^ w ^ ((uint64_t)n << 59));
}

typedef struct {
    uint32_t off, len; /* into pool; strings are NUL-terminated there */
    int32_t val;
    uint32_t hash;
} sent_t;

typedef struct {
    char *pool;
    size_t pool_n, pool_cap;
    sent_t *ent;
    size_t n, ent_cap;
    uint32_t *slot; /* entry index + 1; 0 = empty */
    size_t mask;    /* slot count - 1 (power of two) */
} stab_t;

static long stab_lookup(const stab_t *t, const char *s, size_t n, uint32_t h, size_t *slot_out)
{
    if (!t->slot) {
        *slot_out = 0;
        return -1;
    }
    size_t i = h & t->mask;
    for (;;) {
        uint32_t e = t->slot[i];
        if (!e) {
            *slot_out = i;
            return -1;
        }
        const sent_t *en = &t->ent[e - 1];
        if (en->hash == h && en->len == n && memcmp(t->pool + en->off, s, n) == 0) {
            *slot_out = i;
            return (long)(e - 1);
        }
        i = (i + 1) & t->mask;
    }
}

static int stab_rehash(stab_t *t, size_t nslots)
{
    uint32_t *ns = calloc(nslots, sizeof *ns);
    if (!ns)
        return MM_E_NOMEM;
    free(t->slot);
    t->slot = ns;
    t->mask = nslots - 1;
    for (size_t k = 0; k < t->n; k++) {
        size_t i = t->ent[k].hash & t->mask;
        while (t->slot[i])
            i = (i + 1) & t->mask;
        t->slot[i] = (uint32_t)(k + 1);
    }
    return MM_OK;
}

/* Insert or overwrite (a repeated key keeps the last value, as a JSON map or
 * a Rust HashMap collect does). */
static int stab_put(stab_t *t, const char *s, size_t n, int32_t val)
{
    if (n > UINT32_MAX / 2 || t->n >= UINT32_MAX / 2)
        return MM_E_NOMEM;
    if (!t->slot || (t->n + 1) * 2 > t->mask + 1) {
        size_t ns = t->slot ? (t->mask + 1) * 2 : 64;
        while ((t->n + 1) * 2 > ns)
            ns *= 2;
        if (stab_rehash(t, ns))
            return MM_E_NOMEM;
    }
    uint32_t h = (uint32_t)hash_bytes(s, n);
    size_t slot;
    long e = stab_lookup(t, s, n, h, &slot);
    if (e >= 0) {
        t->ent[e].val = val;
        return MM_OK;
    }
    if (t->pool_n + n + 1 > UINT32_MAX)
        return MM_E_NOMEM;
    if (grow(&t->pool, &t->pool_cap, t->pool_n + n + 1, 1) ||
        grow(&t->ent, &t->ent_cap, t->n + 1, sizeof *t->ent))
        return MM_E_NOMEM;
    memcpy(t->pool + t->pool_n, s, n);
    t->pool[t->pool_n + n] = 0;
    t->ent[t->n] = (sent_t){ (uint32_t)t->pool_n, (uint32_t)n, val, h };
    t->pool_n += n + 1;
    t->n++;
    t->slot[slot] = (uint32_t)t->n;
    return MM_OK;
}

/* 1 and *val if present, else 0. */
static inline int stab_get(const stab_t *t, const char *s, size_t n, int32_t *val)
{
    size_t slot;
    long e = stab_lookup(t, s, n, (uint32_t)hash_bytes(s, n), &slot);
    if (e < 0)
        return 0;
    *val = t->ent[e].val;
    return 1;
}

static void stab_free(stab_t *t)
{
    free(t->pool);
    free(t->ent);
    free(t->slot);
    memset(t, 0, sizeof *t);
}

typedef struct {
    uint64_t *key; /* (left id << 32) | right id; UINT64_MAX = empty */
    int32_t *rank, *nid;
    size_t mask, n;
} pmap_t;

static int pmap_init(pmap_t *m, size_t expect)
{
    size_t ns = 64;
    while (ns < expect * 2)
        ns *= 2;
    m->key = malloc(ns * sizeof *m->key);
    m->rank = malloc(ns * sizeof *m->rank);
    m->nid = malloc(ns * sizeof *m->nid);
    if (!m->key || !m->rank || !m->nid)
        return MM_E_NOMEM;
    memset(m->key, 0xFF, ns * sizeof *m->key);
    m->mask = ns - 1;
    m->n = 0;
    return MM_OK;
}

/* Insert or overwrite: HF builds its merge map with a HashMap collect, so a
 * pair listed twice keeps the later rank. */
static void pmap_put(pmap_t *m, int32_t a, int32_t b, int32_t rank, int32_t nid)
{
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = mix64(k) & m->mask;
    while (m->key[i] != UINT64_MAX && m->key[i] != k)
        i = (i + 1) & m->mask;
    if (m->key[i] == UINT64_MAX)
        m->n++;
    m->key[i] = k;
    m->rank[i] = rank;
    m->nid[i] = nid;
}

static inline int pmap_get(const pmap_t *m, int32_t a, int32_t b, int32_t *rank, int32_t *nid)
{
    if (!m->key)
        return 0;
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = mix64(k) & m->mask;
    for (;;) {
        uint64_t x = m->key[i];
        if (x == k) {
            *rank = m->rank[i];
            *nid = m->nid[i];
            return 1;
        }
        if (x == UINT64_MAX)
            return 0;
        i = (i + 1) & m->mask;
    }
}

static void pmap_free(pmap_t *m)
{
    free(m->key);
    free(m->rank);
    free(m->nid);
    memset(m, 0, sizeof *m);
}

/* ====================================================================== */
/* Tokenizer structures                                                    */
/* ====================================================================== */

/* A pattern to split or replace on. */
enum { PAT_REGEX, PAT_LITERAL, PAT_WS, PAT_PUNCT, PAT_DIGIT };

typedef struct {
    int kind;
    pcre2_code *re;   /* PAT_REGEX */
    uint32_t minlen;  /* PAT_REGEX: no match is shorter (PCRE2_INFO_MINLENGTH) */
    char *lit;        /* PAT_LITERAL */
    size_t lit_n;
} pat_t;

/* Normalizer steps; Sequence and BertNormalizer are flattened into these. */
enum {
    N_NFC, N_NFD, N_NFKC, N_NFKD, N_LOWER, N_REPLACE, N_STRIP, N_STRIP_MN,
    N_PREPEND, N_APPEND, N_BERT_CLEAN, N_CJK, N_BYTELEVEL
};

typedef struct {
    int kind;
    pat_t pat;        /* N_REPLACE */
    char *str;        /* N_REPLACE content, N_PREPEND / N_APPEND text */
    size_t str_n;
    int left, right;  /* N_STRIP */
} nstep_t;

/* Split behaviours (SplitDelimiterBehavior). */
enum { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };

/* Pre-tokenizer stages; every HF pre-tokenizer is one or two of these:
 * optional transform of the piece, optional split, optional transform of
 * each resulting piece. */
enum { PRE_NONE, PRE_SPACE, PRE_META };
enum { POST_NONE, POST_BYTEMAP };
enum { PS_ALWAYS, PS_FIRST, PS_NEVER };

#define MAX_STAGES 16

typedef struct {
    int pre, post;
    int split, behavior, invert;
    pat_t pat;
    char repl[8]; /* Metaspace replacement (UTF-8) */
    size_t repl_n;
    int scheme;   /* Metaspace prepend scheme */
} pstage_t;

enum { M_BPE, M_WORDPIECE, M_WORDLEVEL };

#define CID_N 0x400 /* covers the byte-level alphabet (up to U+0143) */

typedef struct {
    char *content;     /* as written in tokenizer.json */
    size_t len;
    char *ncontent;    /* normalized form, for `normalized` tokens */
    size_t nlen;
    int32_t id;
    int single_word, lstrip, rstrip, normalized, special;
} atok_t;

/* Leftmost-longest matcher over added tokens: token indices bucketed by first
 * byte, longest first inside a bucket. */
typedef struct {
    uint32_t *order;
    uint32_t start[257];
    int any;
} amatch_t;

struct mm_tokenizer {
    uint64_t serial; /* tells tokenizers apart in the per-thread word cache */

    nstep_t *norm;
    int n_norm;

    pstage_t pre[MAX_STAGES];
    int n_pre;

    int model;
    stab_t vocab;
    pmap_t merges;
    char *cprefix; size_t cprefix_n;   /* continuing_subword_prefix */
    char *eow; size_t eow_n;           /* end_of_word_suffix */
    int has_unk; int32_t unk_id;       /* unk_id -1: named but not in vocab */
    char *unk_token;
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t bf_id[256];                /* "<0xXX>" ids for byte_fallback, -1 if absent */
    int32_t cid[4][CID_N];             /* BPE: id of one code point < CID_N, decorated
                                        * [with prefix | 2 * with suffix]; -1 absent */
    int32_t n_ranks;                   /* highest merge rank + 1 */
    int ranks_ordered;                 /* no merge forms a pair ranked before it */
    int max_chars;                     /* WordPiece max_input_chars_per_word */
    size_t max_key;                    /* longest vocab key, bytes */

    atok_t *added;
    int n_added;
    amatch_t raw_set, norm_set;
    stab_t added_map;

    int32_t *post_pre, *post_suf;
    int n_post_pre, n_post_suf;

    char bl[256][2];                   /* ByteLevel: byte -> UTF-8 of its char */
    unsigned char bl_n[256];

    const char **id_str;               /* id -> token string */
    int32_t n_ids;                     /* max id + 1 */
    int vocab_size;
};

/* ====================================================================== */
/* Per-thread scratch                                                      */
/* ====================================================================== */

typedef struct { int32_t id, prev, next, dead; } sym_t;
typedef struct { int32_t rank, pos, nid; } hent_t;
typedef struct { int32_t pos, next; } bnode_t;

/* Word cache: bounded, cleared when full (HF keeps 10k words). */
#define WC_SLOTS 16384u
#define WC_ARENA (2u << 20)
#define WC_MAXKEY 255u

typedef struct {
    sbuf_t nb[2];                      /* normalizer ping-pong */
    int32_t *u32; size_t u32_cap;      /* utf8proc code points */
    sbuf_t st_in[MAX_STAGES], st_out[MAX_STAGES];
    sbuf_t tmp;
    sym_t *sym; size_t sym_cap;
    hent_t *heap; size_t heap_cap;
    int32_t *bhead; size_t bhead_cap;  /* rank -> newest node, long words */
    bnode_t *bnode; size_t bnode_cap;
    int32_t *bpos; size_t bpos_cap;
    int32_t *wid; size_t wid_cap;
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
    uint32_t *wc_slot;                 /* arena offset / 8 + 1; 0 = empty */
    unsigned char *wc_arena;
    size_t wc_used;
    uint32_t wc_count;
} scratch_t;

static _Thread_local scratch_t *tls_scratch;

/* Frees the buffers that grow with the input (not the matcher state or the
 * word cache) and leaves them empty, to grow again on the next encode. */
static void scratch_release(scratch_t *sc)
{
    for (int i = 0; i < 2; i++)
        sb_free(&sc->nb[i]);
    for (int i = 0; i < MAX_STAGES; i++) {
        sb_free(&sc->st_in[i]);
        sb_free(&sc->st_out[i]);
    }
    sb_free(&sc->tmp);
    free(sc->u32);
    free(sc->sym);
    free(sc->heap);
    free(sc->bhead);
    free(sc->bnode);
    free(sc->bpos);
    free(sc->wid);
    sc->u32 = NULL;
    sc->sym = NULL;
    sc->heap = NULL;
    sc->bhead = NULL;
    sc->bnode = NULL;
    sc->bpos = NULL;
    sc->wid = NULL;
    sc->u32_cap = sc->sym_cap = sc->heap_cap = sc->bhead_cap = sc->bnode_cap = sc->bpos_cap = 0;
    sc->wid_cap = 0;
}

static void scratch_free(scratch_t *sc)
{
    if (!sc)
        return;
    scratch_release(sc);
    pcre2_match_data_free(sc->md);
    pcre2_match_context_free(sc->mc);
    pcre2_jit_stack_free(sc->js);
    free(sc->wc_slot);
    free(sc->wc_arena);
    free(sc);
}

static scratch_t *scratch_new(void)
{
    scratch_t *sc = calloc(1, sizeof *sc);
    if (!sc)
        return NULL;
    sc->md = pcre2_match_data_create(1, NULL);
    sc->mc = pcre2_match_context_create(NULL);
    sc->js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    sc->wc_slot = calloc(WC_SLOTS, sizeof *sc->wc_slot);
    sc->wc_arena = malloc(WC_ARENA);
    if (!sc->md || !sc->mc || !sc->wc_slot || !sc->wc_arena) {
        scratch_free(sc);
        return NULL;
    }
    if (sc->js)
        pcre2_jit_stack_assign(sc->mc, NULL, sc->js);
    return sc;
}

void mm_tokenizer_thread_cleanup(void)
{
    scratch_free(tls_scratch);
    tls_scratch = NULL;
}

/* Buffers grow to the largest input seen; past this much they are given
 * back after the encode, so one huge request does not pin a worker's memory
 * (the word cache is fixed-size and stays). */
#define SCRATCH_KEEP (8u << 20)

static void scratch_trim(scratch_t *sc)
{
    size_t held = sc->nb[0].cap + sc->nb[1].cap + sc->tmp.cap + sc->u32_cap * sizeof *sc->u32 +
                  sc->sym_cap * sizeof *sc->sym + sc->heap_cap * sizeof *sc->heap +
                  sc->bhead_cap * sizeof *sc->bhead + sc->bnode_cap * sizeof *sc->bnode +
                  sc->bpos_cap * sizeof *sc->bpos + sc->wid_cap * sizeof *sc->wid;
    for (int i = 0; i < MAX_STAGES; i++)
        held += sc->st_in[i].cap + sc->st_out[i].cap;
    if (held > SCRATCH_KEEP)
        scratch_release(sc);
}

static scratch_t *scratch_get(void)
{
    if (!tls_scratch)
        tls_scratch = scratch_new();
    return tls_scratch;
}

/* Cache entry, 8-aligned in the arena:
 *   u64 serial | u32 hash | u16 key len | u16 id count | key | pad4 | i32 ids */
static int wc_get(scratch_t *sc, uint64_t serial, uint32_t h, const char *w, size_t n,
                  const int32_t **ids, int *k)
{
    uint32_t i = h & (WC_SLOTS - 1);
    for (;;) {
        uint32_t e = sc->wc_slot[i];
        if (!e)
            return 0;
        const unsigned char *p = sc->wc_arena + (size_t)(e - 1) * 8;
        uint64_t s;
        uint32_t eh;
        uint16_t kl, ni;
        memcpy(&s, p, 8);
        memcpy(&eh, p + 8, 4);
        memcpy(&kl, p + 12, 2);
        memcpy(&ni, p + 14, 2);
        if (s == serial && eh == h && kl == n && memcmp(p + 16, w, n) == 0) {
            *ids = (const int32_t *)(const void *)(p + 16 + ((n + 3) & ~(size_t)3));
            *k = ni;
            return 1;
        }
        i = (i + 1) & (WC_SLOTS - 1);
    }
}

static void wc_put(scratch_t *sc, uint64_t serial, uint32_t h, const char *w, size_t n,
                   const int32_t *ids, int k)
{
    if (k > UINT16_MAX)
        return;
    size_t sz = 16 + ((n + 3) & ~(size_t)3) + (size_t)k * 4;
    sz = (sz + 7) & ~(size_t)7;
    if (sc->wc_used + sz > WC_ARENA || sc->wc_count + 1 > WC_SLOTS / 2) {
        memset(sc->wc_slot, 0, WC_SLOTS * sizeof *sc->wc_slot);
        sc->wc_used = 0;
        sc->wc_count = 0;
    }
    unsigned char *p = sc->wc_arena + sc->wc_used;
    uint16_t kl = (uint16_t)n, ni = (uint16_t)k;
    memcpy(p, &serial, 8);
    memcpy(p + 8, &h, 4);
    memcpy(p + 12, &kl, 2);
    memcpy(p + 14, &ni, 2);
    memcpy(p + 16, w, n);
    memcpy(p + 16 + ((n + 3) & ~(size_t)3), ids, (size_t)k * 4);
    uint32_t i = h & (WC_SLOTS - 1);
    while (sc->wc_slot[i])
        i = (i + 1) & (WC_SLOTS - 1);
    sc->wc_slot[i] = (uint32_t)(sc->wc_used / 8 + 1);
    sc->wc_used += sz;
    sc->wc_count++;
}

/* ====================================================================== */
/* Regex: PCRE2 with Oniguruma's meaning                                   */
/* ====================================================================== */

/* Oniguruma (and Rust regex) \s is White_Space; PCRE2+UCP \s adds U+180E. */
#define RX_WS "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}" \
              "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
/* UTS #18 \w (Oniguruma, Rust regex); PCRE2+UCP \w is [\p{L}\p{N}_]. */
#define RX_WORD "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}"

/* Rewrite the escapes whose meaning differs between Oniguruma and PCRE2.
 * Inside a class, the negated forms are left to PCRE2 (they cannot be
 * expressed without nesting; no known tokenizer uses them). */
static int rx_translate(const char *p, size_t n, sbuf_t *o)
{
    int in_class = 0;
    size_t body = 0;
    for (size_t i = 0; i < n;) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            const char *rep = NULL;
            switch (p[i + 1]) {
            case 's': rep = in_class ? RX_WS : "[" RX_WS "]"; break;
            case 'S': rep = in_class ? NULL : "[^" RX_WS "]"; break;
            case 'w': rep = in_class ? RX_WORD : "[" RX_WORD "]"; break;
            case 'W': rep = in_class ? NULL : "[^" RX_WORD "]"; break;
            case 'h': rep = in_class ? "0-9a-fA-F" : "[0-9a-fA-F]"; break;
            case 'H': rep = in_class ? NULL : "[^0-9a-fA-F]"; break;
            default: break;
            }
            if (rep ? sb_put(o, rep, strlen(rep)) : sb_put(o, p + i, 2))
                return MM_E_NOMEM;
            i += 2;
            continue;
        }
        if (in_class) {
            if (c == '[' && i + 1 < n && p[i + 1] == ':') {
                const char *end = memmem(p + i + 2, n - i - 2, ":]", 2);
                if (end) {
                    size_t k = (size_t)(end - p) + 2 - i;
                    if (sb_put(o, p + i, k))
                        return MM_E_NOMEM;
                    i += k;
                    continue;
                }
            }
            if (c == ']' && i > body)
                in_class = 0;
        } else if (c == '[') {
            in_class = 1;
            body = i + 1;
            if (body < n && p[body] == '^')
                body++;
        }
        if (sb_put(o, &c, 1))
            return MM_E_NOMEM;
        i++;
    }
    return MM_OK;
}

static int rx_compile(pat_t *p, const char *pat, size_t n, char *err, size_t errlen)
{
    sbuf_t b = { 0 };
    if (rx_translate(pat, n, &b)) {
        sb_free(&b);
        return MM_E_NOMEM;
    }
    int ec;
    PCRE2_SIZE eo;
    p->kind = PAT_REGEX;
    p->re = pcre2_compile((PCRE2_SPTR)(b.p ? b.p : ""), b.n, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    sb_free(&b);
    if (!p->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return mm_errf(err, errlen, MM_E_UNSUPPORTED, "tokenizer.json: regex '%.*s': %s",
                       (int)MM_MIN(n, 80), pat, (const char *)msg);
    }
    pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* else the interpreter runs it */
    if (pcre2_pattern_info(p->re, PCRE2_INFO_MINLENGTH, &p->minlen))
        p->minlen = 0;
    return MM_OK;
}

static void pat_free(pat_t *p)
{
    pcre2_code_free(p->re);
    free(p->lit);
    memset(p, 0, sizeof *p);
}

/* Iterates the matches of a pattern left to right, non-overlapping. For
 * regexes this is Oniguruma's find_iter: an empty match right where the
 * previous match ended is skipped by stepping one character. */
typedef struct {
    const pat_t *p;
    const char *s;
    size_t n, pos;
    int has_last;
    size_t last_end;
} pit_t;

static int pit_next(pit_t *it, scratch_t *sc, size_t *ms, size_t *me)
{
    switch (it->p->kind) {
    case PAT_REGEX:
        for (;;) {
            if (it->pos > it->n || it->n - it->pos < it->p->minlen)
                return 0;
            int rc = pcre2_match(it->p->re, (PCRE2_SPTR)it->s, it->n, it->pos, PCRE2_NO_UTF_CHECK,
                                 sc->md, sc->mc);
            if (rc == PCRE2_ERROR_NOMATCH)
                return 0;
            if (rc < 0)
                return MM_E_UNPROCESSABLE;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(sc->md);
            size_t s = ov[0], e = ov[1];
            if (e < s)
                e = s; /* \K in a lookahead; never in tokenizer patterns */
            if (s == e && it->has_last && it->last_end == e) {
                it->pos = e < it->n ? e + u8len((unsigned char)it->s[e]) : it->n + 1;
                continue;
            }
            it->pos = e;
            it->has_last = 1;
            it->last_end = e;
            *ms = s;
            *me = e;
            return 1;
        }
    case PAT_LITERAL: {
        if (!it->p->lit_n || it->pos >= it->n)
            return 0;
        const char *f = memmem(it->s + it->pos, it->n - it->pos, it->p->lit, it->p->lit_n);
        if (!f)
            return 0;
        *ms = (size_t)(f - it->s);
        *me = *ms + it->p->lit_n;
        it->pos = *me;
        return 1;
    }
    default:
        /* a character predicate: every matching character is its own match */
        while (it->pos < it->n) {
            size_t l;
            int32_t c = u8dec(it->s + it->pos, &l);
            int hit = it->p->kind == PAT_WS      ? is_ws(c)
                      : it->p->kind == PAT_PUNCT ? is_bert_punct(c)
                                                 : is_numeric(c);
            it->pos += l;
            if (hit) {
                *ms = it->pos - l;
                *me = it->pos;
                return 1;
            }
        }
        return 0;
    }
}

/* ====================================================================== */
/* Normalizers                                                             */
/* ====================================================================== */

#define NORM_SAME 2 /* a step left the text as it was: no copy made */

/* One region through utf8proc. */
static int nf_region(scratch_t *sc, utf8proc_option_t opts, const char *s, size_t n, sbuf_t *d)
{
    size_t need = n + 8;
    utf8proc_ssize_t r;
    for (;;) {
        if (grow(&sc->u32, &sc->u32_cap, need, sizeof *sc->u32))
            return MM_E_NOMEM;
        r = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, sc->u32,
                               (utf8proc_ssize_t)sc->u32_cap, opts);
        if (r < 0)
            return MM_E_INVALID;
        if ((size_t)r <= sc->u32_cap)
            break;
        need = (size_t)r;
    }
    r = utf8proc_normalize_utf32(sc->u32, r, opts);
    if (r < 0)
        return MM_E_INVALID;
    if (sb_reserve(d, (size_t)r * 4))
        return MM_E_NOMEM;
    for (utf8proc_ssize_t i = 0; i < r; i++)
        d->n += u8enc(sc->u32[i], d->p + d->n);
    return MM_OK;
}

/* Unicode normal form. Code points below `lim` (NFC U+0300, NFD U+00C0,
 * NFKC/NFKD U+00A0) are left as they are by the form, are starters, and
 * never compose with what precedes them (checked over all of Unicode with
 * utf8proc), so they cut the text into independent regions: only each run
 * of code points >= lim, with the one starter in front of it, goes through
 * utf8proc; the rest is copied (or, if there is no such run, not even that). */
static int nf_apply(scratch_t *sc, utf8proc_option_t opts, int32_t lim, const char *s, size_t n,
                    sbuf_t *d)
{
    size_t i = 0, prev = 0, copied = 0;
    int touched = 0;
    while (i < n) {
        size_t l;
        if ((unsigned char)s[i] < 0x80 || u8dec(s + i, &l) < lim) {
            prev = i;
            i += u8len((unsigned char)s[i]);
            continue;
        }
        size_t rs = i > copied ? prev : i, j = i + l;
        while (j < n && (unsigned char)s[j] >= 0x80 && u8dec(s + j, &l) >= lim)
            j += l;
        int rc;
        if (sb_put(d, s + copied, rs - copied))
            return MM_E_NOMEM;
        if ((rc = nf_region(sc, opts, s + rs, j - rs, d)))
            return rc;
        touched = 1;
        copied = i = j;
    }
    if (!touched)
        return NORM_SAME;
    return sb_put(d, s + copied, n - copied);
}

/* Rust char::to_lowercase: the simple mapping, except U+0130 which lowers
 * to two code points (SpecialCasing's only unconditional multi-char one). */
static int lower_apply(const char *s, size_t n, sbuf_t *d)
{
    size_t q = 0;
    while (q < n && (unsigned char)s[q] < 0x80 && !(s[q] >= 'A' && s[q] <= 'Z'))
        q++;
    if (q == n)
        return NORM_SAME;
    if (sb_reserve(d, n + n / 2 + 4))
        return MM_E_NOMEM;
    for (size_t i = 0; i < n;) {
        unsigned char b = (unsigned char)s[i];
        if (b < 0x80) {
            if (sb_reserve(d, 1))
                return MM_E_NOMEM;
            d->p[d->n++] = (char)(b >= 'A' && b <= 'Z' ? b + 32 : b);
            i++;
            continue;
        }
        size_t l;
        int32_t c = u8dec(s + i, &l);
        i += l;
        if (c == 0x130) {
            if (sb_putcp(d, 'i') || sb_putcp(d, 0x307))
                return MM_E_NOMEM;
        } else if (sb_putcp(d, utf8proc_tolower(c))) {
            return MM_E_NOMEM;
        }
    }
    return MM_OK;
}

static int nstep_apply(const mm_tokenizer_t *t, const nstep_t *st, scratch_t *sc,
                       const char *s, size_t n, sbuf_t *d)
{
    switch (st->kind) {
    case N_NFC: return nf_apply(sc, UTF8PROC_STABLE | UTF8PROC_COMPOSE, 0x300, s, n, d);
    case N_NFD: return nf_apply(sc, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE, 0xC0, s, n, d);
    case N_NFKC:
        return nf_apply(sc, UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT, 0xA0, s, n, d);
    case N_NFKD:
        return nf_apply(sc, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, 0xA0, s, n, d);
    case N_LOWER: return lower_apply(s, n, d);
    case N_REPLACE: {
        pit_t it = { .p = &st->pat, .s = s, .n = n };
        size_t prev = 0, ms, me;
        int rc;
        while ((rc = pit_next(&it, sc, &ms, &me)) > 0) {
            if (sb_put(d, s + prev, ms - prev) || sb_put(d, st->str, st->str_n))
                return MM_E_NOMEM;
            prev = me;
        }
        if (rc < 0)
            return rc;
        return sb_put(d, s + prev, n - prev);
    }
    case N_STRIP: {
        size_t a = 0, b = n, l;
        if (st->left)
            while (a < b && is_ws(u8dec(s + a, &l)))
                a += l;
        if (st->right)
            while (b > a) {
                size_t p = u8prev(s, b);
                if (!is_ws(u8dec(s + p, &l)))
                    break;
                b = p;
            }
        return sb_put(d, s + a, b - a);
    }
    case N_STRIP_MN:
        for (size_t i = 0, l; i < n; i += l) {
            int32_t c = u8dec(s + i, &l);
            if ((c < 0x300 || utf8proc_category(c) != UTF8PROC_CATEGORY_MN) && sb_put(d, s + i, l))
                return MM_E_NOMEM;
        }
        return MM_OK;
    case N_PREPEND:
        if (n && sb_put(d, st->str, st->str_n))
            return MM_E_NOMEM;
        return sb_put(d, s, n);
    case N_APPEND:
        if (sb_put(d, s, n))
            return MM_E_NOMEM;
        return n ? sb_put(d, st->str, st->str_n) : MM_OK;
    case N_BERT_CLEAN:
        for (size_t i = 0, l; i < n; i += l) {
            int32_t c = u8dec(s + i, &l);
            if (c == 0 || c == 0xFFFD || is_bert_control(c))
                continue;
            if (c == '\t' || c == '\n' || c == '\r' || is_ws(c)) {
                if (sb_put(d, " ", 1))
                    return MM_E_NOMEM;
            } else if (sb_put(d, s + i, l)) {
                return MM_E_NOMEM;
            }
        }
        return MM_OK;
    case N_CJK:
        for (size_t i = 0, l; i < n; i += l) {
            int32_t c = u8dec(s + i, &l);
            int pad = is_cjk(c);
            if ((pad && sb_put(d, " ", 1)) || sb_put(d, s + i, l) || (pad && sb_put(d, " ", 1)))
                return MM_E_NOMEM;
        }
        return MM_OK;
    case N_BYTELEVEL:
        for (size_t i = 0; i < n; i++) {
            unsigned char b = (unsigned char)s[i];
            if (sb_put(d, t->bl[b], t->bl_n[b]))
                return MM_E_NOMEM;
        }
        return MM_OK;
    }
    return MM_ERR;
}

/* Run the normalizer over s[0..n); the result is in scratch (or s itself).
 * Steps alternate between the two scratch buffers; a step that changed
 * nothing keeps its input where it is. */
static int normalize(const mm_tokenizer_t *t, scratch_t *sc, const char *s, size_t n,
                     const char **os, size_t *on)
{
    int which = 0;
    for (int k = 0; k < t->n_norm; k++) {
        sbuf_t *d = &sc->nb[which];
        d->n = 0;
        int rc = nstep_apply(t, &t->norm[k], sc, s, n, d);
        if (rc == NORM_SAME)
            continue;
        if (rc)
            return rc;
        s = d->p ? d->p : "";
        n = d->n;
        which ^= 1;
    }
    *os = s;
    *on = n;
    return MM_OK;
}

/* ====================================================================== */
/* Encoding state, models                                                  */
/* ====================================================================== */

#define ENC_STOP 1 /* truncation has all it needs; unwinds like an error */

typedef struct {
    const mm_tokenizer_t *t;
    scratch_t *sc;
    int32_t *ids;   /* content ids (after the post-processor's prefix) */
    int n, limit;
    int truncating; /* reaching limit ends the work (else exceeding it fails) */
    int cap;
    char *err;
    size_t errlen;
} enc_t;

static int emit(enc_t *e, int32_t id)
{
    if (e->n >= e->limit) {
        if (e->truncating)
            return ENC_STOP;
        return mm_errf(e->err, e->errlen, MM_E_TOOBIG,
                       "text has more tokens than the id buffer holds (%d)", e->cap);
    }
    e->ids[e->n++] = id;
    return e->truncating && e->n >= e->limit ? ENC_STOP : MM_OK;
}

static int emit_many(enc_t *e, const int32_t *ids, int k)
{
    for (int i = 0; i < k; i++) {
        int rc = emit(e, ids[i]);
        if (rc)
            return rc;
    }
    return MM_OK;
}

static int unk_missing(enc_t *e)
{
    if (!e->t->has_unk)
        return mm_errf(e->err, e->errlen, MM_E_UNPROCESSABLE,
                       "tokenizer has no unknown token for text outside its vocabulary");
    return mm_errf(e->err, e->errlen, MM_E_UNPROCESSABLE,
                   "tokenizer unknown token '%s' is not in the vocabulary", e->t->unk_token);
}

/* Vocab lookup of pre + s + suf (any of them may be empty). */
static int vocab_get3(enc_t *e, const char *pre, size_t pn, const char *s, size_t n,
                      const char *suf, size_t sn, int32_t *id)
{
    if (!pn && !sn)
        return stab_get(&e->t->vocab, s, n, id);
    sbuf_t *b = &e->sc->tmp;
    b->n = 0;
    if (sb_put(b, pre, pn) || sb_put(b, s, n) || sb_put(b, suf, sn))
        return MM_E_NOMEM;
    return stab_get(&e->t->vocab, b->p, b->n, id);
}

static void heap_push(hent_t *h, size_t *n, hent_t x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].rank < x.rank || (h[p].rank == x.rank && h[p].pos < x.pos))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static hent_t heap_pop(hent_t *h, size_t *n)
{
    hent_t top = h[0], x = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && (h[c + 1].rank < h[c].rank || (h[c + 1].rank == h[c].rank && h[c + 1].pos < h[c].pos)))
            c++;
        if (x.rank < h[c].rank || (x.rank == h[c].rank && x.pos < h[c].pos))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = x;
    return top;
}

/* Word::merge_all with a binary heap of (rank, position): HF's algorithm. */
static int merge_heap(enc_t *e, int32_t ns)
{
    const mm_tokenizer_t *t = e->t;
    scratch_t *sc = e->sc;
    if (grow(&sc->heap, &sc->heap_cap, (size_t)ns * 2 + 2, sizeof *sc->heap))
        return MM_E_NOMEM;
    size_t hn = 0;
    int32_t rank, nid;
    for (int32_t i = 0; i + 1 < ns; i++)
        if (pmap_get(&t->merges, sc->sym[i].id, sc->sym[i + 1].id, &rank, &nid))
            heap_push(sc->heap, &hn, (hent_t){ rank, i, nid });
    while (hn) {
        hent_t top = heap_pop(sc->heap, &hn);
        sym_t *a = &sc->sym[top.pos];
        if (a->dead || a->next < 0)
            continue;
        sym_t *b = &sc->sym[a->next];
        /* a stale entry: the pair at this position changed since */
        if (!pmap_get(&t->merges, a->id, b->id, &rank, &nid) || nid != top.nid)
            continue;
        a->id = top.nid;
        b->dead = 1;
        a->next = b->next;
        if (a->next >= 0)
            sc->sym[a->next].prev = top.pos;
        if (hn + 2 > sc->heap_cap && grow(&sc->heap, &sc->heap_cap, hn + 2, sizeof *sc->heap))
            return MM_E_NOMEM;
        if (a->prev >= 0 && pmap_get(&t->merges, sc->sym[a->prev].id, a->id, &rank, &nid))
            heap_push(sc->heap, &hn, (hent_t){ rank, a->prev, nid });
        if (a->next >= 0 && pmap_get(&t->merges, a->id, sc->sym[a->next].id, &rank, &nid))
            heap_push(sc->heap, &hn, (hent_t){ rank, top.pos, nid });
    }
    return MM_OK;
}

static int cmp_i32(const void *x, const void *y)
{
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return (a > b) - (a < b);
}

static int bucket_push(scratch_t *sc, size_t *nn, int32_t rank, int32_t pos)
{
    if (grow(&sc->bnode, &sc->bnode_cap, *nn + 1, sizeof *sc->bnode))
        return MM_E_NOMEM;
    sc->bnode[*nn] = (bnode_t){ pos, sc->bhead[rank] };
    sc->bhead[rank] = (int32_t)*nn;
    (*nn)++;
    return MM_OK;
}

/* The same merges in the same order for long words, without a heap: when
 * no merge forms a pair ranked before itself (ranks_ordered), the heap pops
 * every pair of rank r, leftmost first, before anything of rank > r, and
 * none of rank r appears meanwhile. So: one bucket of positions per rank,
 * taken in rank order, each sorted by position. Far fewer cache misses than
 * a heap of millions of entries (a 1 MB word: ~8x faster). */
static int merge_buckets(enc_t *e, int32_t ns)
{
    const mm_tokenizer_t *t = e->t;
    scratch_t *sc = e->sc;
    if (t->n_ranks <= 0)
        return MM_OK;
    if (grow(&sc->bhead, &sc->bhead_cap, (size_t)t->n_ranks, sizeof *sc->bhead))
        return MM_E_NOMEM;
    memset(sc->bhead, 0xFF, (size_t)t->n_ranks * sizeof *sc->bhead);
    size_t nn = 0;
    int32_t rank, nid, lo = t->n_ranks;
    for (int32_t i = ns - 1; i >= 1; i--) /* newest-first lists: push right to left */
        if (pmap_get(&t->merges, sc->sym[i - 1].id, sc->sym[i].id, &rank, &nid)) {
            if (bucket_push(sc, &nn, rank, i - 1))
                return MM_E_NOMEM;
            lo = MM_MIN(lo, rank);
        }
    for (int32_t r = lo; r < t->n_ranks; r++) {
        if (sc->bhead[r] < 0)
            continue;
        size_t k = 0;
        for (int32_t x = sc->bhead[r]; x >= 0; x = sc->bnode[x].next) {
            if (grow(&sc->bpos, &sc->bpos_cap, k + 1, sizeof *sc->bpos))
                return MM_E_NOMEM;
            sc->bpos[k++] = sc->bnode[x].pos;
        }
        sc->bhead[r] = -1;
        /* lists are newest first: one filled left to right comes out
         * descending, the initial one (pushed right to left) ascending */
        int up = 1, down = 1;
        for (size_t q = 1; q < k && (up || down); q++) {
            up &= sc->bpos[q - 1] <= sc->bpos[q];
            down &= sc->bpos[q - 1] >= sc->bpos[q];
        }
        if (!up && down) {
            for (size_t q = 0; q < k / 2; q++) {
                int32_t tmp = sc->bpos[q];
                sc->bpos[q] = sc->bpos[k - 1 - q];
                sc->bpos[k - 1 - q] = tmp;
            }
        } else if (!up) {
            qsort(sc->bpos, k, sizeof *sc->bpos, cmp_i32);
        }
        for (size_t q = 0; q < k; q++) {
            int32_t p = sc->bpos[q];
            sym_t *a = &sc->sym[p];
            if (a->dead || a->next < 0)
                continue;
            sym_t *b = &sc->sym[a->next];
            if (!pmap_get(&t->merges, a->id, b->id, &rank, &nid) || rank != r)
                continue; /* stale */
            a->id = nid;
            b->dead = 1;
            a->next = b->next;
            if (a->next >= 0)
                sc->sym[a->next].prev = p;
            /* ranks_ordered: both new pairs rank after r */
            if (a->prev >= 0 && pmap_get(&t->merges, sc->sym[a->prev].id, a->id, &rank, &nid) &&
                bucket_push(sc, &nn, rank, a->prev))
                return MM_E_NOMEM;
            if (a->next >= 0 && pmap_get(&t->merges, a->id, sc->sym[a->next].id, &rank, &nid) &&
                bucket_push(sc, &nn, rank, p))
                return MM_E_NOMEM;
        }
    }
    return MM_OK;
}

#ifndef MM_TOK_BUCKET_MIN
#define MM_TOK_BUCKET_MIN 4096 /* symbols; shorter words use the heap */
#endif

/* BPE::merge_word: characters to symbols (with prefix/suffix, byte fallback,
 * unk), then Word::merge_all: always the lowest-rank pair, leftmost first.
 * Result in sc->wid[0..*k). */
static int bpe_merge(enc_t *e, const char *w, size_t n, int *k)
{
    const mm_tokenizer_t *t = e->t;
    scratch_t *sc = e->sc;
    if (grow(&sc->sym, &sc->sym_cap, n + 1, sizeof *sc->sym))
        return MM_E_NOMEM;
    int32_t ns = 0;
    int unk_pending = 0;
#define PUSH_SYM(x) (sc->sym[ns] = (sym_t){ (x), ns - 1, ns + 1, 0 }, ns++)
    for (size_t i = 0; i < n;) {
        size_t l;
        int32_t cp = u8dec(w + i, &l), id = -1;
        int first = i == 0, last = i + l >= n, rc = 0;
        if (cp < CID_N)
            rc = (id = t->cid[!first + 2 * last][cp]) >= 0;
        if (!rc) /* also leaves the decorated piece in sc->tmp for byte fallback */
            rc = vocab_get3(e, t->cprefix, first ? 0 : t->cprefix_n, w + i, l, t->eow,
                            last ? t->eow_n : 0, &id);
        if (rc < 0)
            return rc;
        if (rc) {
            if (unk_pending) {
                PUSH_SYM(t->unk_id);
                unk_pending = 0;
            }
            PUSH_SYM(id);
            i += l;
            continue;
        }
        if (t->byte_fallback) {
            /* HF spells the decorated piece as <0xXX> bytes; a pending unk is
             * not flushed first (it lands after them), as in merge_word */
            const char *pc = w + i;
            size_t pl = l;
            if ((!first && t->cprefix_n) || (last && t->eow_n)) {
                pc = sc->tmp.p; /* vocab_get3 left the decorated piece here */
                pl = sc->tmp.n;
            }
            size_t j = 0;
            while (j < pl && t->bf_id[(unsigned char)pc[j]] >= 0)
                j++;
            if (j == pl) {
                if (grow(&sc->sym, &sc->sym_cap, (size_t)ns + pl + n + 1, sizeof *sc->sym))
                    return MM_E_NOMEM;
                for (j = 0; j < pl; j++)
                    PUSH_SYM(t->bf_id[(unsigned char)pc[j]]);
                i += l;
                continue;
            }
        }
        if (t->has_unk) {
            if (t->unk_id < 0)
                return unk_missing(e);
            if (unk_pending && !t->fuse_unk)
                PUSH_SYM(t->unk_id);
            unk_pending = 1;
        }
        i += l;
    }
    if (unk_pending)
        PUSH_SYM(t->unk_id);
#undef PUSH_SYM
    if (ns > 0)
        sc->sym[ns - 1].next = -1;

    if (ns > 1) {
        int rc = ns >= MM_TOK_BUCKET_MIN && t->ranks_ordered ? merge_buckets(e, ns) : merge_heap(e, ns);
        if (rc)
            return rc;
    }
    if (grow(&sc->wid, &sc->wid_cap, (size_t)ns + 1, sizeof *sc->wid))
        return MM_E_NOMEM;
    int m = 0;
    for (int32_t i = 0; i < ns; i++)
        if (!sc->sym[i].dead)
            sc->wid[m++] = sc->sym[i].id;
    *k = m;
    return MM_OK;
}

static int bpe_word(enc_t *e, const char *w, size_t n)
{
    const mm_tokenizer_t *t = e->t;
    int32_t id;
    if (t->ignore_merges && stab_get(&t->vocab, w, n, &id))
        return emit(e, id);
    uint32_t h = 0;
    if (n <= WC_MAXKEY) {
        const int32_t *ids;
        int k;
        h = (uint32_t)(hash_bytes(w, n) ^ t->serial);
        if (wc_get(e->sc, t->serial, h, w, n, &ids, &k))
            return emit_many(e, ids, k);
    }
    int k = 0, rc = bpe_merge(e, w, n, &k);
    if (rc)
        return rc;
    if (n <= WC_MAXKEY)
        wc_put(e->sc, t->serial, h, w, n, e->sc->wid, k);
    return emit_many(e, e->sc->wid, k);
}

/* WordPiece::tokenize: greedy longest match from the left, "##" on every
 * piece but the first; one unknown piece makes the whole word unk. */
static int wordpiece_word(enc_t *e, const char *w, size_t n)
{
    const mm_tokenizer_t *t = e->t;
    scratch_t *sc = e->sc;
    size_t chars = 0;
    for (size_t i = 0; i < n; i += u8len((unsigned char)w[i]))
        chars++;
    int bad = chars > (size_t)t->max_chars;
    int m = 0;
    for (size_t start = 0; !bad && start < n;) {
        size_t end = n;
        int32_t id = -1;
        while (start < end) {
            size_t pn = start ? t->cprefix_n : 0;
            if (pn + (end - start) <= t->max_key) {
                int rc = vocab_get3(e, t->cprefix, pn, w + start, end - start, "", 0, &id);
                if (rc < 0)
                    return rc;
                if (rc)
                    break;
            }
            id = -1;
            end = u8prev(w, end);
            if (end < start)
                end = start;
        }
        if (id < 0) {
            bad = 1;
            break;
        }
        if (grow(&sc->wid, &sc->wid_cap, (size_t)m + 1, sizeof *sc->wid))
            return MM_E_NOMEM;
        sc->wid[m++] = id;
        start = end;
    }
    if (bad) {
        if (!t->has_unk || t->unk_id < 0)
            return unk_missing(e);
        return emit(e, t->unk_id);
    }
    return emit_many(e, sc->wid, m);
}

static int model_word(enc_t *e, const char *w, size_t n)
{
    if (!n)
        return MM_OK;
    switch (e->t->model) {
    case M_BPE:
        return bpe_word(e, w, n);
    case M_WORDPIECE:
        return wordpiece_word(e, w, n);
    default: {
        int32_t id;
        if (stab_get(&e->t->vocab, w, n, &id))
            return emit(e, id);
        if (!e->t->has_unk || e->t->unk_id < 0)
            return unk_missing(e);
        return emit(e, e->t->unk_id);
    }
    }
}

/* ====================================================================== */
/* Pre-tokenizer stages (streaming)                                        */
/* ====================================================================== */

static int stage_run(enc_t *e, int i, const char *s, size_t n, int at_start);

/* A piece produced by stage i: its output transform, then stage i + 1. */
static int stage_out(enc_t *e, int i, const char *s, size_t n, int at_start)
{
    const mm_tokenizer_t *t = e->t;
    if (t->pre[i].post == POST_BYTEMAP) {
        sbuf_t *b = &e->sc->st_out[i];
        b->n = 0;
        if (sb_reserve(b, 2 * n))
            return MM_E_NOMEM;
        for (size_t k = 0; k < n; k++) {
            unsigned char c = (unsigned char)s[k];
            memcpy(b->p + b->n, t->bl[c], t->bl_n[c]);
            b->n += t->bl_n[c];
        }
        s = b->p;
        n = b->n;
    }
    return stage_run(e, i + 1, s, n, at_start);
}

/* NormalizedString::split's behaviours, fed one (offsets, is_match) segment
 * at a time; it holds back at most one segment. Empty pieces are dropped. */
typedef struct {
    enc_t *e;
    int stage, behavior, at_start;
    const char *base;
    int have, prev_match;
    size_t as, ae;
    int am;
} comb_t;

static int comb_emit(comb_t *c, size_t a, size_t b)
{
    if (a == b)
        return MM_OK;
    return stage_out(c->e, c->stage, c->base + a, b - a, c->at_start && a == 0);
}

static int comb_push(comb_t *c, size_t s, size_t e, int m)
{
    int rc = MM_OK;
    switch (c->behavior) {
    case B_REMOVED:
        return m ? MM_OK : comb_emit(c, s, e);
    case B_ISOLATED:
        return comb_emit(c, s, e);
    case B_CONTIGUOUS:
    case B_MERGED_PREV: {
        int join = c->behavior == B_CONTIGUOUS ? m == c->prev_match : (m && !c->prev_match);
        c->prev_match = m;
        if (join && c->have) {
            c->ae = e;
            return MM_OK;
        }
        if (c->have)
            rc = comb_emit(c, c->as, c->ae);
        c->have = 1;
        c->as = s;
        c->ae = e;
        return rc;
    }
    case B_MERGED_NEXT:
        if (c->have && c->am && !m) {
            c->have = 0;
            return comb_emit(c, c->as, e);
        }
        if (c->have)
            rc = comb_emit(c, c->as, c->ae);
        c->have = 1;
        c->as = s;
        c->ae = e;
        c->am = m;
        return rc;
    }
    return MM_ERR;
}

static int split_piece(enc_t *e, int i, const char *s, size_t n, int at_start)
{
    const pstage_t *st = &e->t->pre[i];
    comb_t c = { .e = e, .stage = i, .behavior = st->behavior, .at_start = at_start, .base = s };
    pit_t it = { .p = &st->pat, .s = s, .n = n };
    size_t prev = 0, ms, me;
    int rc;
    while ((rc = pit_next(&it, e->sc, &ms, &me)) > 0) {
        if (prev != ms && (rc = comb_push(&c, prev, ms, st->invert)))
            return rc;
        if ((rc = comb_push(&c, ms, me, !st->invert)))
            return rc;
        prev = me;
    }
    if (rc < 0)
        return mm_errf(e->err, e->errlen, rc, "tokenizer: regex match failed");
    if (prev != n && (rc = comb_push(&c, prev, n, st->invert)))
        return rc;
    return c.have ? comb_emit(&c, c.as, c.ae) : MM_OK;
}

static int stage_run(enc_t *e, int i, const char *s, size_t n, int at_start)
{
    const mm_tokenizer_t *t = e->t;
    if (i == t->n_pre)
        return model_word(e, s, n);
    if (!n)
        return MM_OK;
    const pstage_t *st = &t->pre[i];
    sbuf_t *b = &e->sc->st_in[i];
    if (st->pre == PRE_SPACE && s[0] != ' ') {
        b->n = 0;
        if (sb_put(b, " ", 1) || sb_put(b, s, n))
            return MM_E_NOMEM;
        s = b->p;
        n = b->n;
    } else if (st->pre == PRE_META) {
        /* spaces become the replacement, then maybe one in front */
        int starts = s[0] == ' ' || (n >= st->repl_n && !memcmp(s, st->repl, st->repl_n));
        int add = !starts && (st->scheme == PS_ALWAYS || (st->scheme == PS_FIRST && at_start));
        b->n = 0;
        if (add && sb_put(b, st->repl, st->repl_n))
            return MM_E_NOMEM;
        for (size_t k = 0, a = 0; k <= n; k++) {
            if (k == n || s[k] == ' ') {
                if (sb_put(b, s + a, k - a) || (k < n && sb_put(b, st->repl, st->repl_n)))
                    return MM_E_NOMEM;
                a = k + 1;
            }
        }
        s = b->p;
        n = b->n;
    }
    if (!st->split)
        return stage_out(e, i, s, n, at_start);
    return split_piece(e, i, s, n, at_start);
}

/* ====================================================================== */
/* Added tokens, encode                                                    */
/* ====================================================================== */

/* Next added token in s[from..n): leftmost, then longest. */
static int amatch_find(const mm_tokenizer_t *t, const amatch_t *m, int norm, const char *s,
                       size_t n, size_t from, size_t *ms, size_t *me, int *tok)
{
    if (!m->any)
        return 0;
    for (size_t i = from; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        for (uint32_t k = m->start[b]; k < m->start[b + 1]; k++) {
            const atok_t *a = &t->added[m->order[k]];
            const char *c = norm ? a->ncontent : a->content;
            size_t l = norm ? a->nlen : a->len;
            if (l <= n - i && !memcmp(s + i, c, l)) {
                *ms = i;
                *me = i + l;
                *tok = (int)m->order[k];
                return 1;
            }
        }
    }
    return 0;
}

static int32_t cp_before(const char *s, size_t i)
{
    size_t l;
    return u8dec(s + u8prev(s, i), &l);
}

static int enc_piece(enc_t *e, const char *s, size_t n, int at_start);

/* AddedVocabulary::find_matches + split: added tokens become ids, the text
 * between them goes on (raw text to the normalizer, normalized text to the
 * pre-tokenizer). */
static int split_added(enc_t *e, int norm, const char *s, size_t n, int at_start)
{
    const mm_tokenizer_t *t = e->t;
    const amatch_t *m = norm ? &t->norm_set : &t->raw_set;
    size_t from = 0, done = 0, ms, me;
    int k, rc;
    while (amatch_find(t, m, norm, s, n, from, &ms, &me, &k)) {
        const atok_t *a = &t->added[k];
        size_t start = ms, stop = me, l;
        from = me;
        if (ms < done)
            continue; /* inside what an rstrip already took */
        if (a->single_word) {
            int left_ok = start == 0 || !is_word(cp_before(s, start));
            int right_ok = stop == n || !is_word(u8dec(s + stop, &l));
            if (!left_ok || !right_ok)
                continue;
        }
        if (a->lstrip) {
            while (start > done && is_ws(cp_before(s, start)))
                start = u8prev(s, start);
        }
        if (a->rstrip) {
            while (stop < n && is_ws(u8dec(s + stop, &l)))
                stop += l;
        }
        if (done < start) {
            rc = norm ? stage_run(e, 0, s + done, start - done, at_start && done == 0)
                      : enc_piece(e, s + done, start - done, at_start && done == 0);
            if (rc)
                return rc;
        }
        if ((rc = emit(e, a->id)))
            return rc;
        done = stop;
    }
    if (done < n)
        return norm ? stage_run(e, 0, s + done, n - done, at_start && done == 0)
                    : enc_piece(e, s + done, n - done, at_start && done == 0);
    return MM_OK;
}

/* A raw piece between non-normalized added tokens. */
static int enc_piece(enc_t *e, const char *s, size_t n, int at_start)
{
    const char *ns;
    size_t nn;
    int rc = normalize(e->t, e->sc, s, n, &ns, &nn);
    if (rc)
        return rc == MM_E_NOMEM ? rc : mm_errf(e->err, e->errlen, rc, "tokenizer: normalization failed");
    return split_added(e, 1, ns, nn, at_start);
}

int mm_tokenizer_encode(const mm_tokenizer_t *t, const char *text, size_t len, int max_len,
                        int32_t *ids, int cap, int *n_out, char *err, size_t errlen)
{
    if (n_out)
        *n_out = 0;
    if (!t || !n_out || (!text && len) || (!ids && cap > 0) || cap < 0)
        return mm_errf(err, errlen, MM_E_INVALID, "tokenizer: bad arguments");
    size_t bad;
    if (!u8valid(text, len, &bad))
        return mm_errf(err, errlen, MM_E_INVALID, "text is not valid UTF-8 (at byte %zu)", bad);
    int nspec = t->n_post_pre + t->n_post_suf;
    if (max_len > 0 && max_len < nspec)
        return mm_errf(err, errlen, MM_E_INVALID,
                       "max length %d is smaller than the %d special tokens", max_len, nspec);
    if (cap < nspec)
        return mm_errf(err, errlen, MM_E_TOOBIG, "id buffer too small for the special tokens");
    scratch_t *sc = scratch_get();
    if (!sc)
        return mm_errf(err, errlen, MM_E_NOMEM, "tokenizer: out of memory");

    enc_t e = { .t = t, .sc = sc, .ids = ids + t->n_post_pre, .cap = cap, .err = err,
                .errlen = errlen };
    e.limit = cap - nspec;
    if (max_len > 0 && max_len - nspec <= e.limit) {
        e.limit = max_len - nspec;
        e.truncating = 1;
    }
    int rc = e.truncating && e.limit == 0 ? ENC_STOP : split_added(&e, 0, text ? text : "", len, 1);
    scratch_trim(sc);
    if (rc < 0) {
        if (rc == MM_E_NOMEM)
            mm_errf(err, errlen, rc, "tokenizer: out of memory");
        return rc;
    }
    if (t->n_post_pre)
        memcpy(ids, t->post_pre, (size_t)t->n_post_pre * sizeof *ids);
    if (t->n_post_suf)
        memcpy(ids + t->n_post_pre + e.n, t->post_suf, (size_t)t->n_post_suf * sizeof *ids);
    *n_out = e.n + nspec;
    return MM_OK;
}

/* ====================================================================== */
/* Loading tokenizer.json                                                  */
/* ====================================================================== */

typedef struct {
    mm_tokenizer_t *t;
    char *err;
    size_t errlen;
} load_t;

static json_object *jget(json_object *o, const char *k)
{
    json_object *v;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, k, &v) ||
        json_object_is_type(v, json_type_null))
        return NULL;
    return v;
}

static const char *jstr(json_object *o, const char *k, size_t *n)
{
    json_object *v = jget(o, k);
    if (!v || !json_object_is_type(v, json_type_string))
        return NULL;
    if (n)
        *n = (size_t)json_object_get_string_len(v);
    return json_object_get_string(v);
}

static int jbool(json_object *o, const char *k, int def)
{
    json_object *v = jget(o, k);
    return v && json_object_is_type(v, json_type_boolean) ? json_object_get_boolean(v) : def;
}

static int jint(json_object *o, const char *k, int64_t *out)
{
    json_object *v = jget(o, k);
    if (!v || !json_object_is_type(v, json_type_int))
        return 0;
    *out = json_object_get_int64(v);
    return 1;
}

static char *dupn(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

static int bad(load_t *L, const char *what)
{
    return mm_errf(L->err, L->errlen, MM_E_INVALID, "tokenizer.json: %s", what);
}

static int unsupported(load_t *L, const char *part, const char *type)
{
    return mm_errf(L->err, L->errlen, MM_E_UNSUPPORTED, "tokenizer.json: %s type '%s' is not supported",
                   part, type);
}

static int nomem(load_t *L)
{
    return mm_errf(L->err, L->errlen, MM_E_NOMEM, "tokenizer.json: out of memory");
}

/* {"Regex": "..."} or {"String": "..."} */
static int parse_pattern(load_t *L, json_object *o, pat_t *p)
{
    size_t n;
    const char *s;
    if ((s = jstr(o, "Regex", &n))) {
        p->kind = PAT_REGEX;
        return rx_compile(p, s, n, L->err, L->errlen);
    }
    if ((s = jstr(o, "String", &n))) {
        p->kind = PAT_LITERAL;
        p->lit = dupn(s, n);
        p->lit_n = n;
        return p->lit ? MM_OK : nomem(L);
    }
    return bad(L, "pattern is neither Regex nor String");
}

static int add_nstep(load_t *L, int kind, nstep_t **out)
{
    mm_tokenizer_t *t = L->t;
    nstep_t *n = realloc(t->norm, (size_t)(t->n_norm + 1) * sizeof *n);
    if (!n)
        return nomem(L);
    t->norm = n;
    *out = &n[t->n_norm++];
    memset(*out, 0, sizeof **out);
    (*out)->kind = kind;
    return MM_OK;
}

static int parse_normalizer(load_t *L, json_object *o, int depth)
{
    const char *type = jstr(o, "type", NULL);
    nstep_t *st;
    int rc;
    if (!type)
        return bad(L, "normalizer without a type");
    if (depth > 8)
        return bad(L, "normalizers nested too deep");
    if (!strcmp(type, "Sequence")) {
        json_object *a = jget(o, "normalizers");
        if (!a || !json_object_is_type(a, json_type_array))
            return bad(L, "Sequence normalizer without a list");
        for (size_t i = 0; i < json_object_array_length(a); i++)
            if ((rc = parse_normalizer(L, json_object_array_get_idx(a, i), depth + 1)))
                return rc;
        return MM_OK;
    }
    static const struct { const char *name; int kind; } simple[] = {
        { "NFC", N_NFC }, { "NFD", N_NFD }, { "NFKC", N_NFKC }, { "NFKD", N_NFKD },
        { "Lowercase", N_LOWER }, { "StripAccents", N_STRIP_MN }, { "ByteLevel", N_BYTELEVEL },
    };
    for (size_t i = 0; i < MM_ARRAY_LEN(simple); i++)
        if (!strcmp(type, simple[i].name))
            return add_nstep(L, simple[i].kind, &st);
    if (!strcmp(type, "Replace")) {
        size_t n;
        const char *c = jstr(o, "content", &n);
        json_object *p = jget(o, "pattern");
        if (!c || !p)
            return bad(L, "Replace normalizer needs pattern and content");
        if ((rc = add_nstep(L, N_REPLACE, &st)))
            return rc;
        if (!(st->str = dupn(c, n)))
            return nomem(L);
        st->str_n = n;
        return parse_pattern(L, p, &st->pat);
    }
    if (!strcmp(type, "Strip")) {
        if ((rc = add_nstep(L, N_STRIP, &st)))
            return rc;
        st->left = jbool(o, "strip_left", 1);
        st->right = jbool(o, "strip_right", 1);
        return MM_OK;
    }
    if (!strcmp(type, "Prepend") || !strcmp(type, "Append")) {
        int pre = type[0] == 'P';
        size_t n;
        const char *c = jstr(o, pre ? "prepend" : "append", &n);
        if (!c)
            return bad(L, "Prepend/Append normalizer without its text");
        if ((rc = add_nstep(L, pre ? N_PREPEND : N_APPEND, &st)))
            return rc;
        if (!(st->str = dupn(c, n)))
            return nomem(L);
        st->str_n = n;
        return MM_OK;
    }
    if (!strcmp(type, "BertNormalizer")) {
        int lower = jbool(o, "lowercase", 1);
        int strip = jbool(o, "strip_accents", lower); /* null: follows lowercase */
        if (jbool(o, "clean_text", 1) && (rc = add_nstep(L, N_BERT_CLEAN, &st)))
            return rc;
        if (jbool(o, "handle_chinese_chars", 1) && (rc = add_nstep(L, N_CJK, &st)))
            return rc;
        if (strip && ((rc = add_nstep(L, N_NFD, &st)) || (rc = add_nstep(L, N_STRIP_MN, &st))))
            return rc;
        if (lower && (rc = add_nstep(L, N_LOWER, &st)))
            return rc;
        return MM_OK;
    }
    return unsupported(L, "normalizer", type);
}

static int parse_behavior(load_t *L, json_object *o, int def, int *out)
{
    const char *b = jstr(o, "behavior", NULL);
    static const char *names[] = { "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                   "Contiguous" };
    if (!b) {
        if (def < 0)
            return bad(L, "Split without a behavior");
        *out = def;
        return MM_OK;
    }
    for (int i = 0; i < (int)MM_ARRAY_LEN(names); i++)
        if (!strcmp(b, names[i])) {
            *out = i;
            return MM_OK;
        }
    return unsupported(L, "split behavior", b);
}

static int add_stage(load_t *L, pstage_t **out)
{
    mm_tokenizer_t *t = L->t;
    if (t->n_pre >= MAX_STAGES)
        return bad(L, "too many pre-tokenizers");
    *out = &t->pre[t->n_pre++];
    memset(*out, 0, sizeof **out);
    return MM_OK;
}

static const char GPT2_RE[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int parse_pretok(load_t *L, json_object *o, int depth)
{
    const char *type = jstr(o, "type", NULL);
    pstage_t *st = NULL;
    int rc;
    if (!type)
        return bad(L, "pre_tokenizer without a type");
    if (depth > 8)
        return bad(L, "pre_tokenizers nested too deep");
    if (!strcmp(type, "Sequence")) {
        json_object *a = jget(o, "pretokenizers");
        if (!a || !json_object_is_type(a, json_type_array))
            return bad(L, "Sequence pre_tokenizer without a list");
        for (size_t i = 0; i < json_object_array_length(a); i++)
            if ((rc = parse_pretok(L, json_object_array_get_idx(a, i), depth + 1)))
                return rc;
        return MM_OK;
    }
    if ((rc = add_stage(L, &st)))
        return rc;
    if (!strcmp(type, "Split")) {
        json_object *p = jget(o, "pattern");
        if (!p)
            return bad(L, "Split without a pattern");
        st->split = 1;
        st->invert = jbool(o, "invert", 0);
        if ((rc = parse_behavior(L, o, -1, &st->behavior)))
            return rc;
        return parse_pattern(L, p, &st->pat);
    }
    if (!strcmp(type, "ByteLevel")) {
        st->pre = jbool(o, "add_prefix_space", 1) ? PRE_SPACE : PRE_NONE;
        st->post = POST_BYTEMAP;
        st->split = jbool(o, "use_regex", 1);
        st->behavior = B_ISOLATED;
        st->pat.kind = PAT_REGEX;
        return st->split ? rx_compile(&st->pat, GPT2_RE, strlen(GPT2_RE), L->err, L->errlen) : MM_OK;
    }
    if (!strcmp(type, "Whitespace")) {
        static const char re[] = "\\w+|[^\\w\\s]+";
        st->split = 1;
        st->invert = 1;
        st->behavior = B_REMOVED;
        st->pat.kind = PAT_REGEX;
        return rx_compile(&st->pat, re, strlen(re), L->err, L->errlen);
    }
    if (!strcmp(type, "WhitespaceSplit") || !strcmp(type, "BertPreTokenizer")) {
        st->split = 1;
        st->behavior = B_REMOVED;
        st->pat.kind = PAT_WS;
        if (type[0] == 'W')
            return MM_OK;
        if ((rc = add_stage(L, &st)))
            return rc;
        st->split = 1;
        st->behavior = B_ISOLATED;
        st->pat.kind = PAT_PUNCT;
        return MM_OK;
    }
    if (!strcmp(type, "Punctuation")) {
        st->split = 1;
        st->pat.kind = PAT_PUNCT;
        return parse_behavior(L, o, B_ISOLATED, &st->behavior);
    }
    if (!strcmp(type, "Digits")) {
        st->split = 1;
        st->pat.kind = PAT_DIGIT;
        st->behavior = jbool(o, "individual_digits", 0) ? B_ISOLATED : B_CONTIGUOUS;
        return MM_OK;
    }
    if (!strcmp(type, "CharDelimiterSplit")) {
        size_t n;
        const char *d = jstr(o, "delimiter", &n);
        if (!d || !n)
            return bad(L, "CharDelimiterSplit without a delimiter");
        st->split = 1;
        st->behavior = B_REMOVED;
        st->pat.kind = PAT_LITERAL;
        st->pat.lit_n = n;
        return (st->pat.lit = dupn(d, n)) ? MM_OK : nomem(L);
    }
    if (!strcmp(type, "Metaspace")) {
        size_t n = 0;
        const char *r = jstr(o, "replacement", &n);
        if (!r) {
            r = "\xE2\x96\x81"; /* U+2581 */
            n = 3;
        }
        if (!n || n >= sizeof st->repl)
            return bad(L, "Metaspace replacement must be one character");
        memcpy(st->repl, r, n);
        st->repl_n = n;
        const char *ps = jstr(o, "prepend_scheme", NULL);
        if (ps)
            st->scheme = !strcmp(ps, "first") ? PS_FIRST : !strcmp(ps, "never") ? PS_NEVER : PS_ALWAYS;
        else
            st->scheme = jbool(o, "add_prefix_space", 1) ? PS_ALWAYS : PS_NEVER;
        st->pre = PRE_META;
        st->split = jbool(o, "split", 1);
        st->behavior = B_MERGED_NEXT;
        st->pat.kind = PAT_LITERAL;
        st->pat.lit_n = n;
        return (st->pat.lit = dupn(r, n)) ? MM_OK : nomem(L);
    }
    return unsupported(L, "pre_tokenizer", type);
}

static int parse_vocab_map(load_t *L, json_object *v)
{
    mm_tokenizer_t *t = L->t;
    if (!v || !json_object_is_type(v, json_type_object))
        return bad(L, "model vocab is not a map");
    struct json_object_iterator it = json_object_iter_begin(v), end = json_object_iter_end(v);
    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        const char *k = json_object_iter_peek_name(&it);
        json_object *val = json_object_iter_peek_value(&it);
        if (!json_object_is_type(val, json_type_int))
            return bad(L, "vocab id is not an integer");
        int64_t id = json_object_get_int64(val);
        if (id < 0 || id > INT32_MAX / 2)
            return bad(L, "vocab id out of range");
        size_t n = strlen(k);
        if (stab_put(&t->vocab, k, n, (int32_t)id))
            return nomem(L);
        if (n > t->max_key)
            t->max_key = n;
    }
    return MM_OK;
}

static int vocab_id(load_t *L, const char *s, size_t n, int32_t *id)
{
    if (stab_get(&L->t->vocab, s, n, id))
        return MM_OK;
    return mm_errf(L->err, L->errlen, MM_E_INVALID, "tokenizer.json: merge token '%.*s' is not in the vocab",
                   (int)MM_MIN(n, 60), s);
}

static int parse_merges(load_t *L, json_object *a)
{
    mm_tokenizer_t *t = L->t;
    size_t nm = a ? json_object_array_length(a) : 0;
    if (a && !json_object_is_type(a, json_type_array))
        return bad(L, "BPE merges is not a list");
    if (pmap_init(&t->merges, nm))
        return nomem(L);
    sbuf_t b = { 0 };
    int rc = MM_OK;
    for (size_t i = 0; i < nm && !rc; i++) {
        json_object *m = json_object_array_get_idx(a, i);
        const char *l, *r;
        size_t ln, rn;
        if (json_object_is_type(m, json_type_string)) {
            /* legacy "a b": exactly one space */
            const char *s = json_object_get_string(m);
            size_t n = (size_t)json_object_get_string_len(m);
            const char *sp = memchr(s, ' ', n);
            if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp - s) - 1)) {
                rc = bad(L, "BPE merge is not \"left right\"");
                break;
            }
            l = s;
            ln = (size_t)(sp - s);
            r = sp + 1;
            rn = n - ln - 1;
        } else if (json_object_is_type(m, json_type_array) && json_object_array_length(m) == 2 &&
                   json_object_is_type(json_object_array_get_idx(m, 0), json_type_string) &&
                   json_object_is_type(json_object_array_get_idx(m, 1), json_type_string)) {
            json_object *x = json_object_array_get_idx(m, 0), *y = json_object_array_get_idx(m, 1);
            l = json_object_get_string(x);
            ln = (size_t)json_object_get_string_len(x);
            r = json_object_get_string(y);
            rn = (size_t)json_object_get_string_len(y);
        } else {
            rc = bad(L, "BPE merge is neither \"a b\" nor [\"a\", \"b\"]");
            break;
        }
        int32_t a_id = 0, b_id = 0, n_id = 0;
        if ((rc = vocab_id(L, l, ln, &a_id)) || (rc = vocab_id(L, r, rn, &b_id)))
            break;
        size_t skip = MM_MIN(t->cprefix_n, rn);
        b.n = 0;
        if (sb_put(&b, l, ln) || sb_put(&b, r + skip, rn - skip)) {
            rc = nomem(L);
            break;
        }
        if ((rc = vocab_id(L, b.p, b.n, &n_id)))
            break;
        pmap_put(&t->merges, a_id, b_id, (int32_t)i, n_id);
    }
    sb_free(&b);
    return rc;
}

/* Whether no merge can form a pair ranked before itself: every pair (a, b)
 * must rank after all merges that produce a or b. True of trained BPE; lets
 * long words use merge_buckets. */
static int check_rank_order(load_t *L)
{
    mm_tokenizer_t *t = L->t;
    const pmap_t *m = &t->merges;
    int32_t maxid = -1, maxrank = -1;
    for (size_t i = 0; i < t->vocab.n; i++)
        maxid = MM_MAX(maxid, t->vocab.ent[i].val);
    int32_t *made = malloc(((size_t)maxid + 1) * sizeof *made);
    if (!made)
        return nomem(L);
    memset(made, 0xFF, ((size_t)maxid + 1) * sizeof *made);
    for (size_t i = 0; i <= m->mask; i++)
        if (m->key[i] != UINT64_MAX) {
            made[m->nid[i]] = MM_MAX(made[m->nid[i]], m->rank[i]);
            maxrank = MM_MAX(maxrank, m->rank[i]);
        }
    t->ranks_ordered = 1;
    for (size_t i = 0; i <= m->mask && t->ranks_ordered; i++)
        if (m->key[i] != UINT64_MAX) {
            int32_t a = (int32_t)(m->key[i] >> 32), b = (int32_t)(m->key[i] & 0xFFFFFFFFu);
            if (made[a] >= m->rank[i] || made[b] >= m->rank[i])
                t->ranks_ordered = 0;
        }
    t->n_ranks = maxrank + 1;
    free(made);
    return MM_OK;
}

static int parse_model(load_t *L, json_object *m)
{
    mm_tokenizer_t *t = L->t;
    int rc;
    if (!m)
        return bad(L, "no model");
    const char *type = jstr(m, "type", NULL);
    json_object *v = jget(m, "vocab");
    if (!type) /* older files: HF tells the model apart by its fields */
        type = jget(m, "merges") ? "BPE"
               : v && json_object_is_type(v, json_type_array) ? "Unigram"
               : jget(m, "max_input_chars_per_word") ? "WordPiece" : "WordLevel";
    if (!strcmp(type, "BPE"))
        t->model = M_BPE;
    else if (!strcmp(type, "WordPiece"))
        t->model = M_WORDPIECE;
    else if (!strcmp(type, "WordLevel"))
        t->model = M_WORDLEVEL;
    else
        return unsupported(L, "model", type);
    if ((rc = parse_vocab_map(L, v)))
        return rc;

    size_t n;
    const char *s = jstr(m, "continuing_subword_prefix", &n);
    if (!s && t->model == M_WORDPIECE) {
        s = "##";
        n = 2;
    }
    if (s && n && !(t->cprefix = dupn(s, n)))
        return nomem(L);
    t->cprefix_n = s ? n : 0;
    if ((s = jstr(m, "end_of_word_suffix", &n)) && n) {
        if (!(t->eow = dupn(s, n)))
            return nomem(L);
        t->eow_n = n;
    }
    s = jstr(m, "unk_token", &n);
    if (!s && t->model != M_BPE) { /* the serde defaults */
        s = t->model == M_WORDPIECE ? "[UNK]" : "<unk>";
        n = strlen(s);
    }
    t->unk_id = -1;
    if (s) {
        t->has_unk = 1;
        if (!(t->unk_token = dupn(s, n)))
            return nomem(L);
        if (!stab_get(&t->vocab, s, n, &t->unk_id))
            t->unk_id = -1;
    }
    t->byte_fallback = jbool(m, "byte_fallback", 0);
    t->fuse_unk = jbool(m, "fuse_unk", 0);
    t->ignore_merges = jbool(m, "ignore_merges", 0);
    int64_t mc = 100;
    jint(m, "max_input_chars_per_word", &mc);
    t->max_chars = (int)MM_MAX(0, MM_MIN(mc, INT_MAX));
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        if (!stab_get(&t->vocab, name, 6, &t->bf_id[b]))
            t->bf_id[b] = -1;
    }
    if (t->model != M_BPE)
        return MM_OK;
    if ((rc = parse_merges(L, jget(m, "merges"))) || (rc = check_rank_order(L)))
        return rc;
    sbuf_t b = { 0 };
    for (int k = 0; k < 4; k++)
        for (int32_t c = 0; c < CID_N; c++) {
            char u[4];
            b.n = 0;
            if (sb_put(&b, t->cprefix, (k & 1) ? t->cprefix_n : 0) || sb_put(&b, u, u8enc(c, u)) ||
                sb_put(&b, t->eow, (k & 2) ? t->eow_n : 0)) {
                sb_free(&b);
                return nomem(L);
            }
            if (!stab_get(&t->vocab, b.p, b.n, &t->cid[k][c]))
                t->cid[k][c] = -1;
        }
    sb_free(&b);
    return MM_OK;
}

static int parse_added(load_t *L, json_object *a)
{
    mm_tokenizer_t *t = L->t;
    if (!a)
        return MM_OK;
    if (!json_object_is_type(a, json_type_array))
        return bad(L, "added_tokens is not a list");
    size_t n = json_object_array_length(a);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added)
        return nomem(L);
    for (size_t i = 0; i < n; i++) {
        json_object *o = json_object_array_get_idx(a, i);
        size_t len;
        const char *c = jstr(o, "content", &len);
        int64_t id;
        if (!c || !jint(o, "id", &id) || id < 0 || id > INT32_MAX / 2)
            return bad(L, "added token without content or id");
        if (!len)
            continue;
        atok_t *k = &t->added[t->n_added++];
        if (!(k->content = dupn(c, len)))
            return nomem(L);
        k->len = len;
        k->id = (int32_t)id;
        k->special = jbool(o, "special", 0);
        k->single_word = jbool(o, "single_word", 0);
        k->lstrip = jbool(o, "lstrip", 0);
        k->rstrip = jbool(o, "rstrip", 0);
        k->normalized = jbool(o, "normalized", !k->special);
        if (stab_put(&t->added_map, c, len, k->id))
            return nomem(L);
    }
    return MM_OK;
}

typedef struct { unsigned char first; size_t len; uint32_t idx; } asort_t;

static int asort_cmp(const void *x, const void *y)
{
    const asort_t *a = x, *b = y;
    if (a->first != b->first)
        return a->first < b->first ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1; /* longest first */
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static int build_matcher(load_t *L, amatch_t *m, int norm)
{
    mm_tokenizer_t *t = L->t;
    asort_t *v = calloc((size_t)t->n_added + 1, sizeof *v);
    m->order = calloc((size_t)t->n_added + 1, sizeof *m->order);
    if (!v || !m->order) {
        free(v);
        return nomem(L);
    }
    size_t k = 0;
    for (int i = 0; i < t->n_added; i++) {
        const atok_t *a = &t->added[i];
        if (a->normalized != norm)
            continue;
        const char *c = norm ? a->ncontent : a->content;
        size_t l = norm ? a->nlen : a->len;
        if (!l)
            continue;
        v[k++] = (asort_t){ (unsigned char)c[0], l, (uint32_t)i };
    }
    qsort(v, k, sizeof *v, asort_cmp);
    memset(m->start, 0, sizeof m->start);
    for (size_t i = 0; i < k; i++) {
        m->order[i] = v[i].idx;
        m->start[v[i].first + 1]++;
    }
    for (int b = 0; b < 256; b++)
        m->start[b + 1] += m->start[b];
    m->any = k > 0;
    free(v);
    return MM_OK;
}

/* Added tokens marked `normalized` are matched in normalized text, so their
 * content is normalized too (refresh_added_tokens). */
static int normalize_added(load_t *L)
{
    mm_tokenizer_t *t = L->t;
    scratch_t *sc = NULL;
    for (int i = 0; i < t->n_added; i++) {
        atok_t *a = &t->added[i];
        if (!a->normalized)
            continue;
        if (!sc && !(sc = scratch_new()))
            return nomem(L);
        const char *s;
        size_t n;
        int rc = normalize(t, sc, a->content, a->len, &s, &n);
        if (rc) {
            scratch_free(sc);
            return rc == MM_E_NOMEM ? nomem(L) : bad(L, "cannot normalize an added token");
        }
        if (!(a->ncontent = dupn(s, n))) {
            scratch_free(sc);
            return nomem(L);
        }
        a->nlen = n;
    }
    scratch_free(sc);
    return MM_OK;
}

static int push_ids(load_t *L, int32_t **arr, int *n, const int32_t *ids, int k, int front)
{
    int32_t *p = realloc(*arr, (size_t)(*n + k + 1) * sizeof *p);
    if (!p)
        return nomem(L);
    if (front) {
        memmove(p + k, p, (size_t)*n * sizeof *p);
        memcpy(p, ids, (size_t)k * sizeof *p);
    } else {
        memcpy(p + *n, ids, (size_t)k * sizeof *p);
    }
    *arr = p;
    *n += k;
    return MM_OK;
}

/* ["[CLS]", 101] */
static int parse_pair_id(load_t *L, json_object *o, const char *k, int32_t *id)
{
    json_object *a = jget(o, k), *x;
    if (!a || !json_object_is_type(a, json_type_array) || json_object_array_length(a) != 2 ||
        !json_object_is_type(x = json_object_array_get_idx(a, 1), json_type_int))
        return mm_errf(L->err, L->errlen, MM_E_INVALID, "tokenizer.json: post_processor %s is not [token, id]", k);
    *id = (int32_t)json_object_get_int64(x);
    return MM_OK;
}

/* The ids of one special token of a TemplateProcessing. */
static int template_ids(load_t *L, json_object *specials, const char *name, int32_t *buf, int *k)
{
    json_object *sp = jget(specials, name), *ids = jget(sp, "ids");
    if (!ids || !json_object_is_type(ids, json_type_array))
        return mm_errf(L->err, L->errlen, MM_E_INVALID,
                       "tokenizer.json: template special token '%s' has no ids", name);
    size_t n = json_object_array_length(ids);
    if (n > 16)
        return bad(L, "template special token with too many ids");
    for (size_t i = 0; i < n; i++)
        buf[i] = (int32_t)json_object_get_int64(json_object_array_get_idx(ids, i));
    *k = (int)n;
    return MM_OK;
}

/* A processor wraps what the ones before it produced: its prefix goes in
 * front of theirs and its suffix after. */
static int parse_post(load_t *L, json_object *o, int depth)
{
    mm_tokenizer_t *t = L->t;
    const char *type = jstr(o, "type", NULL);
    int rc;
    if (!type)
        return bad(L, "post_processor without a type");
    if (depth > 8)
        return bad(L, "post_processors nested too deep");
    if (!strcmp(type, "Sequence")) {
        json_object *a = jget(o, "processors");
        if (!a || !json_object_is_type(a, json_type_array))
            return bad(L, "Sequence post_processor without a list");
        for (size_t i = 0; i < json_object_array_length(a); i++)
            if ((rc = parse_post(L, json_object_array_get_idx(a, i), depth + 1)))
                return rc;
        return MM_OK;
    }
    if (!strcmp(type, "ByteLevel"))
        return MM_OK; /* offsets only */
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        int32_t cls, sep;
        if ((rc = parse_pair_id(L, o, "cls", &cls)) || (rc = parse_pair_id(L, o, "sep", &sep)))
            return rc;
        if ((rc = push_ids(L, &t->post_pre, &t->n_post_pre, &cls, 1, 1)))
            return rc;
        return push_ids(L, &t->post_suf, &t->n_post_suf, &sep, 1, 0);
    }
    if (!strcmp(type, "TemplateProcessing")) {
        json_object *single = jget(o, "single"), *specials = jget(o, "special_tokens");
        int32_t pre[64], suf[64], buf[16];
        int npre = 0, nsuf = 0, seen = 0, k;
        if (!single)
            return bad(L, "TemplateProcessing without a single template");
        if (json_object_is_type(single, json_type_string)) {
            /* "[CLS] $A [SEP]" as the Python constructor takes it */
            char *s = dupn(json_object_get_string(single), (size_t)json_object_get_string_len(single));
            if (!s)
                return nomem(L);
            rc = MM_OK;
            for (char *save = NULL, *w = strtok_r(s, " ", &save); w && !rc; w = strtok_r(NULL, " ", &save)) {
                char *colon = strrchr(w, ':');
                if (colon && colon != w)
                    *colon = 0;
                if (w[0] == '$') {
                    if (seen++)
                        rc = unsupported(L, "post_processor template", "two sequences");
                    continue;
                }
                if (!(rc = template_ids(L, specials, w, buf, &k))) {
                    int *cnt = seen ? &nsuf : &npre;
                    int32_t *dst = seen ? suf : pre;
                    if (*cnt + k > 64)
                        rc = bad(L, "template too long");
                    else
                        for (int i = 0; i < k; i++)
                            dst[(*cnt)++] = buf[i];
                }
            }
            free(s);
            if (rc)
                return rc;
        } else if (json_object_is_type(single, json_type_array)) {
            for (size_t i = 0; i < json_object_array_length(single); i++) {
                json_object *it = json_object_array_get_idx(single, i), *sp;
                if (jget(it, "Sequence")) {
                    if (seen++)
                        return unsupported(L, "post_processor template", "two sequences");
                    continue;
                }
                const char *name = jstr(sp = jget(it, "SpecialToken"), "id", NULL);
                if (!sp || !name)
                    return bad(L, "template item is neither Sequence nor SpecialToken");
                if ((rc = template_ids(L, specials, name, buf, &k)))
                    return rc;
                int *cnt = seen ? &nsuf : &npre;
                int32_t *dst = seen ? suf : pre;
                if (*cnt + k > 64)
                    return bad(L, "template too long");
                for (int j = 0; j < k; j++)
                    dst[(*cnt)++] = buf[j];
            }
        } else {
            return bad(L, "TemplateProcessing single is neither a list nor a string");
        }
        if (!seen)
            return unsupported(L, "post_processor template", "without $A");
        if ((rc = push_ids(L, &t->post_pre, &t->n_post_pre, pre, npre, 1)))
            return rc;
        return push_ids(L, &t->post_suf, &t->n_post_suf, suf, nsuf, 0);
    }
    return unsupported(L, "post_processor", type);
}

static void build_bytelevel(mm_tokenizer_t *t)
{
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        int32_t c = keep ? b : 256 + extra++;
        char u[4];
        t->bl_n[b] = (unsigned char)u8enc(c, u);
        memcpy(t->bl[b], u, t->bl_n[b]);
    }
}

static int build_id_table(load_t *L)
{
    mm_tokenizer_t *t = L->t;
    int32_t max = -1;
    for (size_t i = 0; i < t->vocab.n; i++)
        max = MM_MAX(max, t->vocab.ent[i].val);
    for (int i = 0; i < t->n_added; i++)
        max = MM_MAX(max, t->added[i].id);
    t->n_ids = max + 1;
    t->id_str = calloc((size_t)t->n_ids + 1, sizeof *t->id_str);
    if (!t->id_str)
        return nomem(L);
    for (size_t i = 0; i < t->vocab.n; i++)
        t->id_str[t->vocab.ent[i].val] = t->vocab.pool + t->vocab.ent[i].off;
    for (int i = 0; i < t->n_added; i++)
        t->id_str[t->added[i].id] = t->added[i].content;
    /* distinct token strings: the vocab plus added contents not in it */
    size_t extra = 0;
    for (size_t i = 0; i < t->added_map.n; i++) {
        const sent_t *en = &t->added_map.ent[i];
        int32_t id;
        if (!stab_get(&t->vocab, t->added_map.pool + en->off, en->len, &id))
            extra++;
    }
    t->vocab_size = (int)(t->vocab.n + extra);
    return MM_OK;
}

static atomic_uint_fast64_t g_serial;

static int build(load_t *L, json_object *root)
{
    mm_tokenizer_t *t = L->t;
    int rc;
    if (!json_object_is_type(root, json_type_object))
        return bad(L, "top level is not an object");
    t->serial = atomic_fetch_add(&g_serial, 1) + 1;
    build_bytelevel(t);
    json_object *o;
    if ((rc = parse_model(L, jget(root, "model"))) || (rc = parse_added(L, jget(root, "added_tokens"))))
        return rc;
    if ((o = jget(root, "normalizer")) && (rc = parse_normalizer(L, o, 0)))
        return rc;
    if ((rc = normalize_added(L)) || (rc = build_matcher(L, &t->raw_set, 0)) ||
        (rc = build_matcher(L, &t->norm_set, 1)))
        return rc;
    if ((o = jget(root, "pre_tokenizer")) && (rc = parse_pretok(L, o, 0)))
        return rc;
    if ((o = jget(root, "post_processor")) && (rc = parse_post(L, o, 0)))
        return rc;
    return build_id_table(L);
}

int mm_tokenizer_load_json(const char *json, size_t len, mm_tokenizer_t **out, char *err, size_t errlen)
{
    if (!out)
        return mm_errf(err, errlen, MM_E_INVALID, "tokenizer: bad arguments");
    *out = NULL;
    if (!json || len > INT_MAX)
        return mm_errf(err, errlen, MM_E_INVALID, "tokenizer.json: no text or too large");
    json_tokener *tk = json_tokener_new();
    if (!tk)
        return mm_errf(err, errlen, MM_E_NOMEM, "tokenizer.json: out of memory");
    json_object *root = json_tokener_parse_ex(tk, json, (int)len);
    enum json_tokener_error je = json_tokener_get_error(tk);
    json_tokener_free(tk);
    if (!root) {
        return mm_errf(err, errlen, MM_E_INVALID, "tokenizer.json: not valid JSON (%s)",
                       je == json_tokener_continue ? "unexpected end" : json_tokener_error_desc(je));
    }
    mm_tokenizer_t *t = calloc(1, sizeof *t);
    if (!t) {
        json_object_put(root);
        return mm_errf(err, errlen, MM_E_NOMEM, "tokenizer.json: out of memory");
    }
    load_t L = { t, err, errlen };
    int rc = build(&L, root);
    json_object_put(root);
    if (rc) {
        mm_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return MM_OK;
}

int mm_tokenizer_load(const char *path, mm_tokenizer_t **out, char *err, size_t errlen)
{
    if (!out || !path)
        return mm_errf(err, errlen, MM_E_INVALID, "tokenizer: bad arguments");
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return mm_errf(err, errlen, errno == ENOENT ? MM_E_NOTFOUND : MM_ERR,
                       "cannot open tokenizer '%s': %s", path, strerror(errno));
    sbuf_t b = { 0 };
    char chunk[65536];
    size_t got;
    int rc = MM_OK;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (sb_put(&b, chunk, got)) {
            rc = MM_E_NOMEM;
            break;
        }
    if (!rc && ferror(f))
        rc = MM_ERR;
    fclose(f);
    if (rc) {
        sb_free(&b);
        return mm_errf(err, errlen, rc, "cannot read tokenizer '%s'", path);
    }
    char inner[MM_ERRLEN] = "";
    rc = mm_tokenizer_load_json(b.p ? b.p : "", b.n, out, inner, sizeof inner);
    sb_free(&b);
    if (rc)
        return mm_errf(err, errlen, rc, "%s: %s", path, inner);
    return MM_OK;
}

void mm_tokenizer_free(mm_tokenizer_t *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->n_norm; i++) {
        pat_free(&t->norm[i].pat);
        free(t->norm[i].str);
    }
    free(t->norm);
    for (int i = 0; i < t->n_pre; i++)
        pat_free(&t->pre[i].pat);
    stab_free(&t->vocab);
    pmap_free(&t->merges);
    free(t->cprefix);
    free(t->eow);
    free(t->unk_token);
    for (int i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].ncontent);
    }
    free(t->added);
    free(t->raw_set.order);
    free(t->norm_set.order);
    stab_free(&t->added_map);
    free(t->post_pre);
    free(t->post_suf);
    free(t->id_str);
    free(t);
}

/* ====================================================================== */
/* Accessors                                                               */
/* ====================================================================== */

int mm_tokenizer_token_id(const mm_tokenizer_t *t, const char *token)
{
    int32_t id;
    if (!t || !token)
        return -1;
    size_t n = strlen(token);
    if (stab_get(&t->added_map, token, n, &id) || stab_get(&t->vocab, token, n, &id))
        return id;
    return -1;
}

const char *mm_tokenizer_id_token(const mm_tokenizer_t *t, int id)
{
    if (!t || id < 0 || id >= t->n_ids)
        return NULL;
    return t->id_str[id];
}

int mm_tokenizer_vocab_size(const mm_tokenizer_t *t)
{
    return t ? t->vocab_size : 0;
}

int mm_tokenizer_bos_id(const mm_tokenizer_t *t)
{
    return t && t->n_post_pre ? t->post_pre[0] : -1;
}

int mm_tokenizer_eos_id(const mm_tokenizer_t *t)
{
    return t && t->n_post_suf ? t->post_suf[t->n_post_suf - 1] : -1;
}

int mm_tokenizer_num_special(const mm_tokenizer_t *t)
{
    return t ? t->n_post_pre + t->n_post_suf : 0;
}
