/* libFuzzer harness: tokenizer (src/text/tokenizer.c).
 *
 * The input is the text. It is encoded by three tokenizers loaded once:
 * CLIP's byte-level BPE from tests/fixtures/clip/tokenizer/tokenizer.json,
 * a BERT-style WordPiece pipeline and a Metaspace BPE with byte fallback
 * (both small inline definitions, so their normalizers, pre-tokenizers and
 * post-processors get fuzzed too). For each:
 *   - no truncation, into a buffer large enough for any expansion;
 *   - truncation at 77 (CLIP's context) and at a small length from a hash
 *     of the input, where encoding stops early.
 * HF truncation keeps the first content tokens, so a truncated encoding
 * must be a prefix of the full one with the same special tokens around it;
 * every id must be in the vocabulary; the statuses must agree (invalid
 * UTF-8 fails every call). FUZZ_TOKENIZER overrides the CLIP file path. */
#include "mmembed/common.h"
#include "mmembed/tokenizer.h"

#include "fuzz.h"

#include <string.h>

#ifndef FUZZ_CLIP_TOKENIZER
#define FUZZ_CLIP_TOKENIZER "tests/fixtures/clip/tokenizer/tokenizer.json"
#endif

#define CLIP_MAX_LEN 77
#define MAX_TEXT (64 * 1024)  /* longer inputs are cut: the fuzzer gains nothing from them */

/* BERT uncased in miniature: BertNormalizer (clean, CJK padding,
 * lowercase, accents stripped), BertPreTokenizer, WordPiece, [CLS] A [SEP]. */
static const char BERT_JSON[] =
    "{\"added_tokens\": ["
    "  {\"id\": 0, \"content\": \"[PAD]\", \"special\": true, \"normalized\": false,"
    "   \"single_word\": false, \"lstrip\": false, \"rstrip\": false},"
    "  {\"id\": 1, \"content\": \"[UNK]\", \"special\": true, \"normalized\": false,"
    "   \"single_word\": false, \"lstrip\": false, \"rstrip\": false},"
    "  {\"id\": 2, \"content\": \"[CLS]\", \"special\": true, \"normalized\": false,"
    "   \"single_word\": false, \"lstrip\": false, \"rstrip\": false},"
    "  {\"id\": 3, \"content\": \"[SEP]\", \"special\": true, \"normalized\": false,"
    "   \"single_word\": false, \"lstrip\": false, \"rstrip\": false},"
    "  {\"id\": 4, \"content\": \"[MASK]\", \"special\": true, \"normalized\": false,"
    "   \"single_word\": false, \"lstrip\": true, \"rstrip\": false}],"
    " \"normalizer\": {\"type\": \"BertNormalizer\", \"clean_text\": true,"
    "  \"handle_chinese_chars\": true, \"strip_accents\": null, \"lowercase\": true},"
    " \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"},"
    " \"post_processor\": {\"type\": \"BertProcessing\", \"sep\": [\"[SEP]\", 3], \"cls\": [\"[CLS]\", 2]},"
    " \"model\": {\"type\": \"WordPiece\", \"unk_token\": \"[UNK]\", \"continuing_subword_prefix\": \"##\","
    "  \"max_input_chars_per_word\": 20, \"vocab\": {"
    "   \"[PAD]\": 0, \"[UNK]\": 1, \"[CLS]\": 2, \"[SEP]\": 3, \"[MASK]\": 4,"
    "   \"a\": 5, \"photo\": 6, \"of\": 7, \"cat\": 8, \"dog\": 9, \"##s\": 10, \"##ing\": 11,"
    "   \"run\": 12, \"##n\": 13, \"play\": 14, \"##ed\": 15, \".\": 16, \",\": 17, \"!\": 18,"
    "   \"1\": 19, \"##1\": 20, \"\\u4e2d\": 21, \"\\u6587\": 22, \"e\": 23, \"##e\": 24, \"caf\": 25,"
    "   \"the\": 26, \"##a\": 27, \"##b\": 28, \"b\": 29}}}";

/* Llama-style: Metaspace (prepend at the start only), BPE with
 * byte_fallback and fused unknowns, no post-processor. */
static const char META_JSON[] =
    "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": ["
    "   {\"type\": \"NFKC\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \"\\t\"}, \"content\": \" \"}]},"
    " \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\","
    "  \"prepend_scheme\": \"first\", \"split\": true},"
    " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"byte_fallback\": true, \"fuse_unk\": true,"
    "  \"vocab\": {\"<unk>\": 0, \"<0x00>\": 1, \"<0x0A>\": 2, \"<0x21>\": 3, \"<0xC3>\": 4, \"<0xA9>\": 5,"
    "   \"\\u2581\": 6, \"a\": 7, \"b\": 8, \"c\": 9, \"ab\": 10, \"\\u2581a\": 11, \"\\u2581ab\": 12,"
    "   \"abc\": 13, \"\\u2581abc\": 14, \"t\": 15, \"h\": 16, \"e\": 17, \"th\": 18, \"the\": 19,"
    "   \"\\u2581the\": 20},"
    "  \"merges\": [[\"a\", \"b\"], [\"\\u2581\", \"a\"], [\"\\u2581a\", \"b\"], [\"ab\", \"c\"],"
    "   [\"\\u2581ab\", \"c\"], [\"t\", \"h\"], [\"th\", \"e\"], [\"\\u2581\", \"the\"]]}}";

static struct {
    const char *name;
    mm_tokenizer_t *t;
    int vocab, nspecial, bos, eos;
} g_tok[3];

static mm_tokenizer_t *load(const char *name, const char *path, const char *json)
{
    mm_tokenizer_t *t = NULL;
    char err[MM_ERRLEN] = "";
    int rc = path ? mm_tokenizer_load(path, &t, err, sizeof err)
                  : mm_tokenizer_load_json(json, strlen(json), &t, err, sizeof err);
    if (rc) {
        fprintf(stderr, "fuzz_tokenizer: cannot load the %s tokenizer%s%s: %s\n", name, path ? " " : "",
                path ? path : "", err);
        exit(1);
    }
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *clip = getenv("FUZZ_TOKENIZER");
    g_tok[0].name = "clip";
    g_tok[0].t = load("clip", clip && *clip ? clip : FUZZ_CLIP_TOKENIZER, NULL);
    g_tok[1].name = "bert";
    g_tok[1].t = load("bert", NULL, BERT_JSON);
    g_tok[2].name = "metaspace";
    g_tok[2].t = load("metaspace", NULL, META_JSON);
    for (size_t i = 0; i < MM_ARRAY_LEN(g_tok); i++) {
        g_tok[i].vocab = mm_tokenizer_vocab_size(g_tok[i].t);
        g_tok[i].nspecial = mm_tokenizer_num_special(g_tok[i].t);
        g_tok[i].bos = mm_tokenizer_bos_id(g_tok[i].t);
        g_tok[i].eos = mm_tokenizer_eos_id(g_tok[i].t);
    }
    return 0;
}

static void check_ids(int k, const int32_t *ids, int n, const char *what)
{
    for (int i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < g_tok[k].vocab && mm_tokenizer_id_token(g_tok[k].t, ids[i]),
                   "%s %s: id %d at %d not in the vocabulary (%d)", g_tok[k].name, what, ids[i], i,
                   g_tok[k].vocab);
}

/* Encode with truncation at max_len and compare with the full encoding
 * (full == NULL when it did not fit in its buffer). */
static void truncated(int k, const char *text, size_t len, int max_len, int full_rc, const int32_t *full,
                      int nfull)
{
    const mm_tokenizer_t *t = g_tok[k].t;
    int32_t *ids = malloc((size_t)max_len * sizeof *ids);  /* exactly cap: ASan checks the bound */
    int n = -1;
    char err[MM_ERRLEN] = "";
    FUZZ_CHECK(ids, "out of memory");
    int rc = mm_tokenizer_encode(t, text, len, max_len, ids, max_len, &n, err, sizeof err);
    if (full_rc == MM_E_INVALID || full_rc == MM_E_UNPROCESSABLE)
        FUZZ_CHECK(rc == full_rc, "%s max_len %d: status %d, untruncated %d", g_tok[k].name, max_len, rc,
                   full_rc);
    if (rc) {
        FUZZ_CHECK(rc == MM_E_INVALID || rc == MM_E_UNPROCESSABLE || rc == MM_E_NOMEM,
                   "%s max_len %d: unexpected status %d (%s)", g_tok[k].name, max_len, rc, err);
        FUZZ_CHECK(full_rc != 0, "%s max_len %d: status %d (%s), but the full encoding worked", g_tok[k].name,
                   max_len, rc, err);
        free(ids);
        return;
    }
    FUZZ_CHECK(n >= g_tok[k].nspecial && n <= max_len, "%s max_len %d: %d tokens", g_tok[k].name, max_len, n);
    check_ids(k, ids, n, "truncated");
    if (full_rc == 0) {
        if (nfull <= max_len) {
            FUZZ_CHECK(n == nfull && !memcmp(ids, full, (size_t)n * sizeof *ids),
                       "%s max_len %d: %d tokens differ from the full %d", g_tok[k].name, max_len, n, nfull);
        } else {
            /* content prefix, then the same trailing specials as the full encoding */
            int tail = g_tok[k].eos >= 0 ? g_tok[k].nspecial - (g_tok[k].bos >= 0) : 0;
            FUZZ_CHECK(n == max_len, "%s: truncated to %d, not max_len %d (full %d)", g_tok[k].name, n, max_len,
                       nfull);
            FUZZ_CHECK(!memcmp(ids, full, (size_t)(n - tail) * sizeof *ids),
                       "%s max_len %d: truncated content is not a prefix of the full encoding", g_tok[k].name,
                       max_len);
            FUZZ_CHECK(!tail || !memcmp(ids + n - tail, full + nfull - tail, (size_t)tail * sizeof *ids),
                       "%s max_len %d: trailing special tokens differ", g_tok[k].name, max_len);
        }
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    size_t len = size < MAX_TEXT ? size : MAX_TEXT;
    uint64_t h = fuzz_fnv(FUZZ_FNV_INIT, data, len);

    for (int k = 0; k < (int)MM_ARRAY_LEN(g_tok); k++) {
        /* normalizers can grow the text: NFKC turns U+FDFA (3 bytes) into
         * 18 letters, which byte fallback may split into 33 tokens */
        int cap = (int)(32 * len) + 64;
        int32_t *full = malloc((size_t)cap * sizeof *full);
        int nfull = -1;
        char err[MM_ERRLEN] = "";
        FUZZ_CHECK(full, "out of memory");
        int rc = mm_tokenizer_encode(g_tok[k].t, text, len, 0, full, cap, &nfull, err, sizeof err);
        if (rc) {
            FUZZ_CHECK(rc == MM_E_INVALID || rc == MM_E_UNPROCESSABLE || rc == MM_E_TOOBIG || rc == MM_E_NOMEM,
                       "%s: unexpected status %d (%s)", g_tok[k].name, rc, err);
            FUZZ_CHECK(rc != MM_E_TOOBIG, "%s: %zu bytes did not fit in %d tokens", g_tok[k].name, len, cap);
        } else {
            FUZZ_CHECK(nfull >= g_tok[k].nspecial && nfull <= cap, "%s: %d tokens", g_tok[k].name, nfull);
            check_ids(k, full, nfull, "full");
            FUZZ_CHECK(g_tok[k].bos < 0 || full[0] == g_tok[k].bos, "%s: first id %d, not bos %d",
                       g_tok[k].name, full[0], g_tok[k].bos);
            FUZZ_CHECK(g_tok[k].eos < 0 || full[nfull - 1] == g_tok[k].eos, "%s: last id %d, not eos %d",
                       g_tok[k].name, full[nfull - 1], g_tok[k].eos);
        }
        truncated(k, text, len, CLIP_MAX_LEN, rc, full, nfull);
        int small = g_tok[k].nspecial + 1 + (int)((h >> (8 * k)) % 6);
        truncated(k, text, len, small, rc, full, nfull);
        free(full);
    }
    return 0;
}
