/* Tokenizer tests. Run from the repository root.
 *
 * The main check: every string of tests/fixtures/clip/tokens.json (ids made
 * by Hugging Face `tokenizers` from the same tokenizer.json) must give the
 * identical ids, untruncated and with max_length=77. Exact equality, no
 * tolerance: ids are integers. */
#include "mmembed/common.h"
#include "mmembed/tokenizer.h"
#include "check.h"

#include <json-c/json.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLIP_JSON "tests/fixtures/clip/tokenizer/tokenizer.json"
#define CLIP_TOKENS "tests/fixtures/clip/tokens.json"

static void print_ids(const char *label, const int32_t *ids, int n)
{
    fprintf(stderr, "    %s (%d):", label, n);
    for (int i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

static int same_ids(const int32_t *a, int na, json_object *want)
{
    if ((size_t)na != json_object_array_length(want))
        return 0;
    for (int i = 0; i < na; i++)
        if (a[i] != (int32_t)json_object_get_int(json_object_array_get_idx(want, (size_t)i)))
            return 0;
    return 1;
}

static void print_want(const char *label, json_object *want)
{
    int n = (int)json_object_array_length(want);
    int32_t *ids = malloc(sizeof *ids * (size_t)(n + 1));
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)json_object_get_int(json_object_array_get_idx(want, (size_t)i));
    print_ids(label, ids, n);
    free(ids);
}

/* Encode and compare with an expected list; returns 1 if identical. */
static int expect(const mm_tokenizer_t *t, const char *text, size_t len, int max_len,
                  const int32_t *want, int nwant)
{
    int32_t ids[512];
    int n = 0;
    char err[MM_ERRLEN] = "";
    int rc = mm_tokenizer_encode(t, text, len, max_len, ids, (int)MM_ARRAY_LEN(ids), &n, err, sizeof err);
    int ok = rc == MM_OK && n == nwant && !memcmp(ids, want, sizeof *ids * (size_t)n);
    if (!ok) {
        fprintf(stderr, "  mismatch for \"%.*s\" (max_len %d, rc %d %s)\n", (int)MM_MIN(len, 100), text,
                max_len, rc, err);
        print_ids("want", want, nwant);
        print_ids("got ", ids, n);
    }
    return ok;
}

/* ---------------------------------------------------------------------- */

static void test_fixture(const mm_tokenizer_t *t)
{
    json_object *root = json_object_from_file(CLIP_TOKENS);
    CHECK(root && json_object_is_type(root, json_type_array), "cannot read %s", CLIP_TOKENS);
    if (!root)
        return;
    size_t total = json_object_array_length(root);
    int good = 0, shown = 0;
    static int32_t ids[8192];
    for (size_t i = 0; i < total; i++) {
        json_object *it = json_object_array_get_idx(root, i), *text, *full, *t77;
        json_object_object_get_ex(it, "text", &text);
        json_object_object_get_ex(it, "ids", &full);
        json_object_object_get_ex(it, "ids77", &t77);
        const char *s = json_object_get_string(text);
        size_t len = (size_t)json_object_get_string_len(text);
        char err[MM_ERRLEN] = "";
        int n = 0, n77 = 0;
        int rc = mm_tokenizer_encode(t, s, len, 0, ids, (int)MM_ARRAY_LEN(ids), &n, err, sizeof err);
        int ok_full = rc == MM_OK && same_ids(ids, n, full);
        if (!ok_full && shown < 5) {
            fprintf(stderr, "  mismatch (untruncated) for \"%.120s\" rc=%d %s\n", s, rc, err);
            print_want("want", full);
            print_ids("got ", ids, n);
        }
        int32_t ids77[77];
        rc = mm_tokenizer_encode(t, s, len, 77, ids77, 77, &n77, err, sizeof err);
        int ok_77 = rc == MM_OK && same_ids(ids77, n77, t77);
        if (!ok_77 && shown < 5) {
            fprintf(stderr, "  mismatch (max_len 77) for \"%.120s\" rc=%d %s\n", s, rc, err);
            print_want("want", t77);
            print_ids("got ", ids77, n77);
        }
        if (!ok_full || !ok_77)
            shown++;
        good += ok_full && ok_77;
    }
    printf("tokenizer: %d/%zu identical\n", good, total);
    CHECK((size_t)good == total, "%zu strings differ from Hugging Face", total - (size_t)good);
    json_object_put(root);
}

static void test_basics(const mm_tokenizer_t *t)
{
    static const int32_t cat[] = { 49406, 320, 1125, 539, 320, 2368, 49407 };
    CHECK(expect(t, "a photo of a cat", 16, 0, cat, 7), "a photo of a cat");
    CHECK(expect(t, "a photo of a cat", 16, 77, cat, 7), "a photo of a cat, 77");
    /* not NUL-terminated: only len bytes count */
    CHECK(expect(t, "a photo of a cat and more", 16, 0, cat, 7), "length, not NUL, ends the text");
    /* truncation keeps EOS */
    static const int32_t cat5[] = { 49406, 320, 1125, 539, 49407 };
    CHECK(expect(t, "a photo of a cat", 16, 5, cat5, 5), "truncated to 5");
    static const int32_t only[] = { 49406, 49407 };
    CHECK(expect(t, "a photo of a cat", 16, 2, only, 2), "truncated to the specials");
    /* special tokens in the text map straight to their ids */
    static const int32_t sp[] = { 49406, 320, 49407, 2368, 49407 };
    CHECK(expect(t, "a<|endoftext|>cat", 17, 0, sp, 5), "special token inside text");

    CHECK(mm_tokenizer_token_id(t, "<|endoftext|>") == 49407, "token_id eos");
    CHECK(mm_tokenizer_token_id(t, "a</w>") == 320, "token_id a</w>");
    CHECK(mm_tokenizer_token_id(t, "no such token") == -1, "token_id absent");
    const char *s = mm_tokenizer_id_token(t, 2368);
    CHECK(s && !strcmp(s, "cat</w>"), "id_token 2368 = %s", s ? s : "(null)");
    CHECK(mm_tokenizer_id_token(t, 1 << 30) == NULL, "id_token out of range");
    CHECK(mm_tokenizer_vocab_size(t) == 49408, "vocab size %d", mm_tokenizer_vocab_size(t));
    CHECK(mm_tokenizer_bos_id(t) == 49406, "bos %d", mm_tokenizer_bos_id(t));
    CHECK(mm_tokenizer_eos_id(t) == 49407, "eos %d", mm_tokenizer_eos_id(t));
    CHECK(mm_tokenizer_num_special(t) == 2, "num special");

    int32_t ids[8];
    int n;
    char err[MM_ERRLEN] = "";
    int rc = mm_tokenizer_encode(t, "a photo of a cat", 16, 0, ids, 6, &n, err, sizeof err);
    CHECK(rc == MM_E_TOOBIG && err[0], "small buffer without truncation: rc %d", rc);
    rc = mm_tokenizer_encode(t, "a photo of a cat", 16, 1, ids, 8, &n, err, sizeof err);
    CHECK(rc == MM_E_INVALID, "max_len below the specials: rc %d", rc);
}

static void test_invalid_utf8(const mm_tokenizer_t *t)
{
    static const char *bad[] = {
        "\xff", "abc\x80", "\xc0\x80", "\xed\xa0\x80", "\xe2\x82", "\xf4\x90\x80\x80", "ok \xf0\x9f\x98",
    };
    for (size_t i = 0; i < MM_ARRAY_LEN(bad); i++) {
        int32_t ids[16];
        int n = 5;
        char err[MM_ERRLEN] = "";
        int rc = mm_tokenizer_encode(t, bad[i], strlen(bad[i]), 77, ids, 16, &n, err, sizeof err);
        CHECK(rc == MM_E_INVALID && n == 0 && strstr(err, "UTF-8"), "invalid UTF-8 #%zu: rc %d '%s'", i,
              rc, err);
    }
    /* a NUL byte is valid UTF-8 */
    int32_t ids[16];
    int n;
    CHECK(mm_tokenizer_encode(t, "a\0b", 3, 77, ids, 16, &n, NULL, 0) == MM_OK, "NUL in text");
}

static void test_bad_files(void)
{
    mm_tokenizer_t *t = (mm_tokenizer_t *)1;
    char err[MM_ERRLEN] = "";
    int rc = mm_tokenizer_load("tests/fixtures/nope/tokenizer.json", &t, err, sizeof err);
    CHECK(rc == MM_E_NOTFOUND && t == NULL && strstr(err, "nope"), "missing file: rc %d '%s'", rc, err);
    printf("  missing: %s\n", err);

    char path[] = "/tmp/mm_tok_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    FILE *f = fdopen(fd, "w");
    fputs("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0", f);
    fclose(f);
    rc = mm_tokenizer_load(path, &t, err, sizeof err);
    CHECK(rc == MM_E_INVALID && t == NULL && strstr(err, "JSON"), "truncated JSON: rc %d '%s'", rc, err);
    printf("  garbage: %s\n", err);
    remove(path);

    static const struct { const char *json; int rc; const char *msg; } cases[] = {
        { "not json at all", MM_E_INVALID, "JSON" },
        { "[1, 2]", MM_E_INVALID, "object" },
        { "{}", MM_E_INVALID, "model" },
        { "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}", MM_E_UNSUPPORTED, "Unigram" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}", MM_E_INVALID, "'b'" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
          " \"normalizer\": {\"type\": \"Precompiled\"}}", MM_E_UNSUPPORTED, "Precompiled" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
          " \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Removed\"}}",
          MM_E_UNSUPPORTED, "regex" },
    };
    for (size_t i = 0; i < MM_ARRAY_LEN(cases); i++) {
        err[0] = 0;
        rc = mm_tokenizer_load_json(cases[i].json, strlen(cases[i].json), &t, err, sizeof err);
        CHECK(rc == cases[i].rc && t == NULL && strstr(err, cases[i].msg), "bad json #%zu: rc %d '%s'", i, rc,
              err);
    }
}

/* A long input with max_len must cost little and equal the result for a
 * shorter prefix that already holds more than max_len tokens. */
static void test_long(const mm_tokenizer_t *t)
{
    const char *unit = "The quick brown fox jumps over the lazy dog. ";
    size_t ul = strlen(unit), total = 1 << 20;
    char *big = malloc(total + 1);
    for (size_t i = 0; i < total; i++)
        big[i] = unit[i % ul];
    int32_t a[77], b[77];
    int na = 0, nb = 0;
    char err[MM_ERRLEN] = "";
    double t0 = now_s();
    int rc = mm_tokenizer_encode(t, big, total, 77, a, 77, &na, err, sizeof err);
    double dt = now_s() - t0;
    CHECK(rc == MM_OK && na == 77 && a[76] == 49407, "1 MB with max_len 77: rc %d n %d %s", rc, na, err);
    rc = mm_tokenizer_encode(t, big, ul * 20, 77, b, 77, &nb, err, sizeof err);
    CHECK(rc == MM_OK && nb == na && !memcmp(a, b, sizeof a), "1 MB and a 900-byte prefix differ");
    printf("  1 MB text, max_len 77: %.2f ms\n", dt * 1e3);

    /* one 1 MB word: BPE must merge it whole (merges can span it) */
    memset(big, 'a', total);
    t0 = now_s();
    rc = mm_tokenizer_encode(t, big, total, 77, a, 77, &na, err, sizeof err);
    dt = now_s() - t0;
    CHECK(rc == MM_OK && na == 77 && a[76] == 49407, "1 MB word: rc %d n %d %s", rc, na, err);
    printf("  1 MB single word, max_len 77: %.2f ms\n", dt * 1e3);

    /* and without truncation, too small a buffer is an error, not a crash */
    rc = mm_tokenizer_encode(t, big, total, 0, a, 77, &na, err, sizeof err);
    CHECK(rc == MM_E_TOOBIG, "1 MB word without truncation into 77 ids: rc %d", rc);
    free(big);
}

/* Encode speed on a long English-like text, untruncated. */
static void test_speed(const mm_tokenizer_t *t)
{
    static const char *words[] = {
        "the", "of", "and", "a", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on",
        "are", "as", "with", "his", "they", "I", "at", "be", "this", "have", "from", "or", "one",
        "had", "by", "word", "but", "not", "what", "all", "were", "we", "when", "your", "can",
        "said", "there", "use", "an", "each", "which", "she", "do", "how", "their", "if", "will",
        "up", "other", "about", "out", "many", "then", "them", "these", "so", "some", "her",
        "would", "make", "like", "him", "into", "time", "has", "look", "two", "more", "write",
        "go", "see", "number", "no", "way", "could", "people", "photograph", "mountain",
        "beautiful", "landscape", "sunset", "architecture", "photography", "illustration",
        "Wednesday", "extraordinary", "unbelievable", "cat's", "don't", "2024", "3.5", "(see",
        "below)", "e-mail", "New", "York,", "London.", "dog!", "quickly;",
    };
    size_t nw = MM_ARRAY_LEN(words), cap = 1 << 20, len = 0;
    char *text = malloc(cap + 64);
    unsigned x = 12345;
    while (len < cap) {
        x = x * 1103515245u + 12345u;
        const char *w = words[(x >> 8) % nw];
        size_t l = strlen(w);
        memcpy(text + len, w, l);
        len += l;
        text[len++] = ' ';
    }
    int32_t *ids = malloc(sizeof *ids * (cap + 8));
    char err[MM_ERRLEN] = "";
    for (int pass = 0; pass < 2; pass++) {
        int n = 0;
        double t0 = now_s();
        int rc = mm_tokenizer_encode(t, text, len, 0, ids, (int)cap + 8, &n, err, sizeof err);
        double dt = now_s() - t0;
        CHECK(rc == MM_OK, "speed text: rc %d %s", rc, err);
        printf("  speed (%s cache): %zu bytes -> %d tokens in %.1f ms = %.2f M tokens/s\n",
               pass ? "warm" : "cold", len, n, dt * 1e3, n / dt / 1e6);
    }
    free(ids);
    free(text);
}

/* Concurrent encodes use per-thread scratch and must agree. */
struct thr {
    const mm_tokenizer_t *t;
    int ok;
};

static void *thr_main(void *arg)
{
    struct thr *a = arg;
    static const int32_t cat[] = { 49406, 320, 1125, 539, 320, 2368, 49407 };
    a->ok = 1;
    for (int i = 0; i < 2000 && a->ok; i++) {
        int32_t ids[16];
        int n;
        if (mm_tokenizer_encode(a->t, "a photo of a cat", 16, 77, ids, 16, &n, NULL, 0) || n != 7 ||
            memcmp(ids, cat, sizeof cat))
            a->ok = 0;
    }
    mm_tokenizer_thread_cleanup();
    return NULL;
}

static void test_threads(const mm_tokenizer_t *t)
{
    pthread_t th[4];
    struct thr a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct thr){ t, 0 };
        pthread_create(&th[i], NULL, thr_main, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(a[i].ok, "thread %d", i);
    }
}

/* ---------------------------------------------------------------------- */
/* Components the CLIP file does not use, on small inline tokenizers. The
 * expected ids follow the semantics of tokenizers' Rust sources. */

static mm_tokenizer_t *load_inline(const char *json)
{
    mm_tokenizer_t *t = NULL;
    char err[MM_ERRLEN] = "";
    int rc = mm_tokenizer_load_json(json, strlen(json), &t, err, sizeof err);
    CHECK(rc == MM_OK, "inline tokenizer: rc %d %s", rc, err);
    return t;
}

static void test_split_behaviors(void)
{
    /* NormalizedString::split doc example: "the-final--countdown" on '-' */
    static const struct { const char *b; int32_t ids[8]; int n; } cases[] = {
        { "Removed", { 0, 2, 3 }, 3 },
        { "Isolated", { 0, 1, 2, 1, 1, 3 }, 6 },
        { "MergedWithPrevious", { 4, 5, 1, 3 }, 4 },
        { "MergedWithNext", { 0, 6, 1, 7 }, 4 },
        { "Contiguous", { 0, 1, 2, 8, 3 }, 5 },
    };
    for (size_t i = 0; i < MM_ARRAY_LEN(cases); i++) {
        char json[1024];
        snprintf(json, sizeof json,
                 "{\"model\": {\"type\": \"WordLevel\", \"unk_token\": \"[UNK]\", \"vocab\": {\"the\": 0,"
                 " \"-\": 1, \"final\": 2, \"countdown\": 3, \"the-\": 4, \"final-\": 5, \"-final\": 6,"
                 " \"-countdown\": 7, \"--\": 8, \"[UNK]\": 9}},"
                 " \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \"-\"},"
                 " \"behavior\": \"%s\", \"invert\": false}}",
                 cases[i].b);
        mm_tokenizer_t *t = load_inline(json);
        if (!t)
            continue;
        CHECK(expect(t, "the-final--countdown", 20, 0, cases[i].ids, cases[i].n), "split %s", cases[i].b);
        mm_tokenizer_free(t);
    }
}

static void test_bert(void)
{
    const char *json =
        "{\"added_tokens\": ["
        " {\"id\": 0, \"content\": \"[PAD]\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
        "  \"normalized\": false, \"special\": true},"
        " {\"id\": 2, \"content\": \"[CLS]\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
        "  \"normalized\": false, \"special\": true},"
        " {\"id\": 3, \"content\": \"[SEP]\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
        "  \"normalized\": false, \"special\": true},"
        " {\"id\": 13, \"content\": \"[MASK]\", \"single_word\": false, \"lstrip\": true, \"rstrip\": false,"
        "  \"normalized\": false, \"special\": true}],"
        " \"normalizer\": {\"type\": \"BertNormalizer\", \"clean_text\": true, \"handle_chinese_chars\": true,"
        "  \"strip_accents\": null, \"lowercase\": true},"
        " \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"},"
        " \"post_processor\": {\"type\": \"TemplateProcessing\","
        "  \"single\": [{\"SpecialToken\": {\"id\": \"[CLS]\", \"type_id\": 0}},"
        "             {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}},"
        "             {\"SpecialToken\": {\"id\": \"[SEP]\", \"type_id\": 0}}],"
        "  \"pair\": [],"
        "  \"special_tokens\": {\"[CLS]\": {\"id\": \"[CLS]\", \"ids\": [2], \"tokens\": [\"[CLS]\"]},"
        "                     \"[SEP]\": {\"id\": \"[SEP]\", \"ids\": [3], \"tokens\": [\"[SEP]\"]}}},"
        " \"model\": {\"type\": \"WordPiece\", \"unk_token\": \"[UNK]\", \"continuing_subword_prefix\": \"##\","
        "  \"max_input_chars_per_word\": 100, \"vocab\": {\"[PAD]\": 0, \"[UNK]\": 1, \"[CLS]\": 2,"
        "  \"[SEP]\": 3, \"hello\": 4, \"world\": 5, \"!\": 6, \"un\": 7, \"##aff\": 8, \"##able\": 9,"
        "  \"caf\": 10, \"##e\": 11, \"\xe4\xb8\xad\": 12, \"[MASK]\": 13}}}";
    mm_tokenizer_t *t = load_inline(json);
    if (!t)
        return;
    /* ',' and 'x' are unknown whole words; café loses its accent; 中 is
     * padded into its own word; [MASK] eats the space on its left */
    const char *text = "Hello, World! unaffable caf\xc3\xa9 \xe4\xb8\xadx [MASK]\tWORLD";
    static const int32_t want[] = { 2, 4, 1, 5, 6, 7, 8, 9, 10, 11, 12, 1, 13, 5, 3 };
    CHECK(expect(t, text, strlen(text), 0, want, (int)MM_ARRAY_LEN(want)), "bert");
    static const int32_t want5[] = { 2, 4, 1, 5, 3 };
    CHECK(expect(t, text, strlen(text), 5, want5, 5), "bert truncated");
    CHECK(mm_tokenizer_bos_id(t) == 2 && mm_tokenizer_eos_id(t) == 3, "bert cls/sep");
    mm_tokenizer_free(t);
}

static void test_metaspace_bytefallback(void)
{
    /* Llama-style: Metaspace (prepend first), BPE with byte_fallback */
    const char *json =
        "{\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\xe2\x96\x81\","
        "  \"prepend_scheme\": \"first\", \"split\": true},"
        " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"byte_fallback\": true,"
        "  \"fuse_unk\": true, \"vocab\": {\"<unk>\": 0, \"<0x21>\": 1, \"\xe2\x96\x81\": 2, \"h\": 3,"
        "  \"i\": 4, \"hi\": 5, \"\xe2\x96\x81hi\": 6},"
        "  \"merges\": [[\"h\", \"i\"], [\"\xe2\x96\x81\", \"hi\"]]}}";
    mm_tokenizer_t *t = load_inline(json);
    if (!t)
        return;
    /* "hi hi!?": ▁hi | ▁hi!? -> 6, 6 then '!' by byte fallback, '?' unk */
    static const int32_t want[] = { 6, 6, 1, 0 };
    CHECK(expect(t, "hi hi!?", 7, 0, want, 4), "metaspace + byte fallback");
    mm_tokenizer_free(t);
}

static void test_whitespace_digits(void)
{
    const char *json =
        "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Strip\","
        "  \"strip_left\": true, \"strip_right\": true}, {\"type\": \"Lowercase\"}]},"
        " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Whitespace\"},"
        "  {\"type\": \"Digits\", \"individual_digits\": true}]},"
        " \"post_processor\": {\"type\": \"BertProcessing\", \"sep\": [\"</s>\", 2], \"cls\": [\"<s>\", 1]},"
        " \"model\": {\"type\": \"WordLevel\", \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2,"
        "  \"hello\": 3, \",\": 4, \"world\": 5, \"!!\": 6, \"1\": 7, \"2\": 8, \"x\": 9}}}";
    mm_tokenizer_t *t = load_inline(json);
    if (!t)
        return;
    /* \w+ keeps "x12" whole, Digits then isolates each digit; "?" is <unk> */
    static const int32_t want[] = { 1, 3, 4, 5, 6, 9, 7, 8, 0, 2 };
    CHECK(expect(t, "  Hello, WORLD!! x12 ?\n", 23, 0, want, (int)MM_ARRAY_LEN(want)), "whitespace+digits");
    mm_tokenizer_free(t);
}

int main(void)
{
    mm_tokenizer_t *t = NULL;
    char err[MM_ERRLEN] = "";
    double t0 = now_s();
    int rc = mm_tokenizer_load(CLIP_JSON, &t, err, sizeof err);
    if (rc) {
        fprintf(stderr, "FAIL: load %s: %s\n", CLIP_JSON, err);
        return 1;
    }
    printf("  load: %.1f ms\n", (now_s() - t0) * 1e3);

    test_fixture(t);
    test_basics(t);
    test_invalid_utf8(t);
    test_bad_files();
    test_long(t);
    test_threads(t);
    test_speed(t);
    test_split_behaviors();
    test_bert();
    test_metaspace_bytefallback();
    test_whitespace_digits();

    mm_tokenizer_free(t);
    mm_tokenizer_thread_cleanup();
    return check_summary("test_tokenizer");
}
