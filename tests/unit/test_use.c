/* Universal Sentence Encoder Lite and its SentencePiece unigram tokenizer.
 * Run from the repository root.
 *
 * Always: the unigram tokenizer on a tiny vocabulary built to hit the
 * reference tokenizer's quirks (null scores, the "best == 0 means unset"
 * test, unreachable positions, duplicate pieces, unk runs, NFKC); the
 * expected ids were produced by the Tokenizer of npm @energetic-ai/embeddings
 * 0.2.0 on the same vocabulary.
 *
 * With models/use-lite (tools/use/setup.sh; otherwise this part prints SKIP
 * and passes): every sentence of tests/fixtures/use/reference.json (made by
 * tools/use/reference.js with the original TF.js graph on @tensorflow/tfjs's
 * CPU backend) must give the same ids and an embedding with cosine >= 0.9999
 * to the reference; batching must not change results; the semantic ordering
 * of the issue must hold. MM_USE_BENCH=1 also prints sentences/s. */
#include "mmembed/common.h"
#include "mmembed/unigram.h"
#include "mmembed/use.h"
#include "check.h"

#include <json-c/json.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MODEL_DIR "models/use-lite"
#define REFERENCE "tests/fixtures/use/reference.json"

static int same_ids(const int32_t *got, int n, const int32_t *want, int nw)
{
    if (n != nw)
        return 0;
    for (int i = 0; i < n; i++)
        if (got[i] != want[i])
            return 0;
    return 1;
}

/* ================================================= tiny vocabulary == */

static void test_unigram_quirks(void)
{
    static const char vocab[] =
        "[[\"\\ufffd\",0],[\"<s>\",0],[\"</s>\",0],[\"r3\",0],[\"r4\",0],[\"r5\",0],"
        "[\"\\u2581\",-2],[\"a\",-1],[\"b\",-1.5],[\"ab\",-2],[\"\\u2581ab\",-2.5],[\"c\",null],"
        "[\"cd\",-0.5],[\"d\",-3],[\"ab\",-0.1],[\"bcd\",-1],[\"\\u00e9\",-1],[\"xy\",-4],"
        "[\"\\u2581c\",null]]";
    char path[] = "/tmp/mm_test_unigram_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd < 0)
        return;
    FILE *f = fdopen(fd, "w");
    fputs(vocab, f);
    fclose(f);

    char err[MM_ERRLEN] = "";
    mm_unigram_t *u = NULL;
    int rc = mm_unigram_load(path, 6, 0, &u, err, sizeof err);
    unlink(path);
    CHECK(rc == 0, "load tiny vocab: %s", err);
    if (rc)
        return;
    CHECK(mm_unigram_size(u) == 19, "size %d", mm_unigram_size(u));
    CHECK(mm_unigram_piece(u, 10) && strcmp(mm_unigram_piece(u, 10), "\xe2\x96\x81" "ab") == 0, "piece 10");
    CHECK(mm_unigram_piece(u, 19) == NULL, "piece out of range");

    static const struct {
        const char *text;
        int n;
        int32_t ids[8];
    } cases[] = {
        { "ab", 2, { 6, 14 } },                         /* duplicate "ab": the later (14) wins */
        { "abcd", 3, { 6, 14, 12 } },
        { "a b", 4, { 6, 7, 6, 8 } },
        { "xyz", 2, { 6, 0 } },                         /* unreachable position -> id 0, merged */
        { "\xef\xac\x81", 2, { 6, 0 } },                /* NFKC: U+FB01 -> "fi", two unks -> one */
        { "cd c", 3, { 6, 12, 18 } },
        { "e\xcc\x81" "a", 3, { 6, 16, 7 } },          /* NFKC composes e + U+0301 */
        { "abx yb", 6, { 6, 14, 0, 6, 0, 8 } },
        { "c", 2, { 6, 11 } },                          /* "\u2581c" sums to 0: overwritten */
        { "zzxyzz", 2, { 6, 0 } },
        { "  ", 3, { 6, 6, 6 } },
        { "a\tb", 4, { 6, 7, 0, 8 } },                  /* a tab is not a space */
        { "\xf0\x9f\x98\x80" "ab", 3, { 6, 0, 14 } },  /* astral character */
    };
    for (size_t i = 0; i < MM_ARRAY_LEN(cases); i++) {
        int32_t ids[64];
        int n = -1;
        rc = mm_unigram_encode(u, cases[i].text, strlen(cases[i].text), ids, 64, &n, err, sizeof err);
        CHECK(rc == 0 && same_ids(ids, n, cases[i].ids, cases[i].n), "tiny vocab case %zu (\"%s\"): rc %d, %d ids",
              i, cases[i].text, rc, n);
    }
    /* truncated output, full count */
    int32_t two[2];
    int n = 0;
    rc = mm_unigram_encode(u, "abx yb", 6, two, 2, &n, err, sizeof err);
    CHECK(rc == 0 && n == 6 && two[0] == 6 && two[1] == 14, "cap 2: rc %d n %d", rc, n);
    rc = mm_unigram_encode(u, "", 0, two, 2, &n, err, sizeof err);
    CHECK(rc == 0 && n == 0, "empty text: rc %d n %d", rc, n);
    rc = mm_unigram_encode(u, "a\xff", 2, two, 2, &n, err, sizeof err);
    CHECK(rc == MM_E_INVALID, "invalid UTF-8: rc %d", rc);
    mm_unigram_free(u);

    CHECK(mm_unigram_load("/nonexistent/vocab.json", 6, 0, &u, err, sizeof err) == MM_E_NOTFOUND,
          "missing vocab");
}

/* =========================================================== model == */

typedef struct {
    const char *text;
    size_t len;
    int32_t *ids;
    int n_ids;
    float *emb;
} ref_t;

static int find(ref_t *refs, int n, const char *text)
{
    for (int i = 0; i < n; i++)
        if (strcmp(refs[i].text, text) == 0)
            return i;
    return -1;
}

static void bench(const mm_use_t *m, const char *const *texts, const size_t *lens, int nref)
{
    const int D = mm_use_dim(m);
    float *out = malloc((size_t)32 * D * sizeof *out);
    const char *batch[32];
    size_t blens[32];
    for (int i = 0; i < 32; i++) { /* the first four sentences: short, like queries */
        batch[i] = texts[i % 4];
        blens[i] = lens[i % 4];
    }
    char err[MM_ERRLEN];
    (void)nref;
    for (int bs = 1; bs <= 32; bs *= 32) {
        int iters = bs == 1 ? 400 : 25, done = 0;
        mm_use_embed(m, batch, blens, bs, out, err, sizeof err); /* warm */
        double t0 = now_s();
        for (int it = 0; it < iters; it++, done += bs)
            mm_use_embed(m, batch, blens, bs, out, err, sizeof err);
        double dt = now_s() - t0;
        printf("  bench: batch %2d: %.0f sentences/s (%.3f ms per call)\n", bs, done / dt, dt / iters * 1e3);
    }
    free(out);
}

static void test_model(void)
{
    if (access(MODEL_DIR "/config.json", F_OK) != 0) {
        SKIP_BROKEN(MODEL_DIR " not found (run tools/use/setup.sh): model checks skipped");
        return;
    }
    char err[MM_ERRLEN] = "";
    mm_use_t *m = NULL;
    double t0 = now_s();
    int rc = mm_use_load(MODEL_DIR, &m, err, sizeof err);
    CHECK(rc == 0, "load %s: %s", MODEL_DIR, err);
    if (rc)
        return;
    printf("  load: %.1f ms\n", (now_s() - t0) * 1e3);
    const int D = mm_use_dim(m);
    CHECK(D == 512, "dim %d", D);
    CHECK(mm_use_max_tokens(m) == 128, "max tokens %d", mm_use_max_tokens(m));

    json_object *root = json_object_from_file(REFERENCE), *sent;
    CHECK(root && json_object_object_get_ex(root, "sentences", &sent), "read %s", REFERENCE);
    if (!root || !json_object_object_get_ex(root, "sentences", &sent)) {
        json_object_put(root);
        mm_use_free(m);
        return;
    }
    int n = (int)json_object_array_length(sent);
    ref_t *refs = calloc((size_t)n, sizeof *refs);
    const char **texts = calloc((size_t)n, sizeof *texts);
    size_t *lens = calloc((size_t)n, sizeof *lens);
    float *out = malloc((size_t)n * D * sizeof *out);
    float *one = malloc((size_t)D * sizeof *one);
    for (int i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(sent, (size_t)i), *t, *ids, *emb;
        json_object_object_get_ex(e, "text", &t);
        json_object_object_get_ex(e, "ids", &ids);
        json_object_object_get_ex(e, "embedding", &emb);
        refs[i].text = texts[i] = json_object_get_string(t);
        refs[i].len = lens[i] = (size_t)json_object_get_string_len(t);
        refs[i].n_ids = (int)json_object_array_length(ids);
        refs[i].ids = malloc((size_t)refs[i].n_ids * sizeof(int32_t) + 1);
        for (int j = 0; j < refs[i].n_ids; j++)
            refs[i].ids[j] = json_object_get_int(json_object_array_get_idx(ids, (size_t)j));
        refs[i].emb = malloc((size_t)D * sizeof(float));
        CHECK((int)json_object_array_length(emb) == D, "sentence %d: reference dim", i);
        for (int j = 0; j < D; j++)
            refs[i].emb[j] = (float)json_object_get_double(json_object_array_get_idx(emb, (size_t)j));
    }

    /* ids: exact. The reference ids are the whole text's; the model clips to
     * max_tokens (the graph's ClipToMaxLength). */
    for (int i = 0; i < n; i++) {
        int32_t ids[128];
        int k = -1;
        rc = mm_use_tokenize(m, refs[i].text, refs[i].len, ids, 128, &k, err, sizeof err);
        int want = MM_MIN(refs[i].n_ids, 128);
        CHECK(rc == 0 && same_ids(ids, k, refs[i].ids, want), "sentence %d (\"%.40s\"): ids differ (%d vs %d)", i,
              refs[i].text, k, want);
    }

    /* embeddings: cosine >= 0.9999 against TF.js, every sentence */
    t0 = now_s();
    rc = mm_use_embed(m, texts, lens, n, out, err, sizeof err);
    double dt = now_s() - t0;
    CHECK(rc == 0, "embed batch: %s", err);
    double worst = 1, worst_batch = 1, maxdiff = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        double c = cosine_ff(out + (size_t)i * D, refs[i].emb, D);
        worst = MM_MIN(worst, c);
        for (int j = 0; j < D; j++)
            maxdiff = MM_MAX(maxdiff, fabs((double)out[(size_t)i * D + j] - refs[i].emb[j]));
        CHECK(c >= 0.9999, "sentence %d (\"%.40s\"): cosine %.7f < 0.9999", i, refs[i].text, c);
        /* the same text alone: batching must not change it (1e-6: GEMM
         * blocking may differ with the row count) */
        int rc1 = mm_use_embed(m, &texts[i], &lens[i], 1, one, err, sizeof err);
        double cb = rc1 ? 0 : cosine_ff(one, out + (size_t)i * D, D);
        worst_batch = MM_MIN(worst_batch, cb);
        CHECK(cb >= 1 - 1e-6, "sentence %d alone vs in the batch: cosine %.9f", i, cb);
    }
    printf("  fidelity: %d sentences, worst cosine vs TF.js 1 - %.2e, max |diff| %.2e; "
           "worst single vs batch 1 - %.2e (batch of %d: %.1f ms)\n",
           n, 1 - worst, maxdiff, 1 - worst_batch, n, dt * 1e3);

    /* semantic ordering from the issue */
    int cat = find(refs, n, "The cat sits on the mat"), fel = find(refs, n, "A feline rests on the carpet"),
        dog = find(refs, n, "Dogs are loyal animals"), sun = find(refs, n, "The weather is sunny today");
    CHECK(cat >= 0 && fel >= 0 && dog >= 0 && sun >= 0, "semantic sentences in the fixture");
    if (rc == 0 && cat >= 0 && fel >= 0 && dog >= 0 && sun >= 0) {
        const float *c = out + (size_t)cat * D;
        double s_fel = cosine_ff(c, out + (size_t)fel * D, D), s_dog = cosine_ff(c, out + (size_t)dog * D, D),
               s_sun = cosine_ff(c, out + (size_t)sun * D, D);
        printf("  semantic: sim(cat, feline) %.4f, sim(cat, dogs) %.4f, sim(cat, weather) %.4f\n", s_fel, s_dog,
               s_sun);
        CHECK(s_fel > s_dog && s_fel > s_sun, "semantic ordering");
    }

    /* unit norm (the vectors were compared with the TF.js references above;
     * this is the normalization alone: |norm^2 - 1| < 1e-5, f32 rounding) */
    for (int i = 0; rc == 0 && i < n; i++) {
        double s = 0;
        for (int j = 0; j < D; j++)
            s += (double)out[(size_t)i * D + j] * out[(size_t)i * D + j];
        CHECK(fabs(s - 1) < 1e-5, "sentence %d: norm^2 %.7f", i, s);
    }

    /* errors: an empty text (the reference throws), invalid UTF-8 */
    const char *bad[2] = { "fine", "" };
    size_t bl[2] = { 4, 0 };
    err[0] = '\0';
    rc = mm_use_embed(m, bad, bl, 2, out, err, sizeof err);
    CHECK(rc == MM_E_INVALID && strstr(err, "input 1"), "empty text: rc %d (%s)", rc, err);
    bad[1] = "caf\xc3";
    bl[1] = 4;
    rc = mm_use_embed(m, bad, bl, 2, out, err, sizeof err);
    CHECK(rc == MM_E_INVALID, "invalid UTF-8: rc %d (%s)", rc, err);

    /* more texts than one chunk (1,024 tokens): 40 copies of the 128-token
     * sentence + the short ones, all equal to their single runs */
    {
        int big = 48, lng = -1;
        for (int i = 0; i < n; i++)
            if (refs[i].n_ids >= 128)
                lng = i;
        const char **bt = malloc((size_t)big * sizeof *bt);
        size_t *bln = malloc((size_t)big * sizeof *bln);
        float *bo = malloc((size_t)big * D * sizeof *bo);
        for (int i = 0; i < big; i++) {
            int src = (i % 6 == 5 || lng < 0) ? i % 4 : lng;
            bt[i] = texts[src];
            bln[i] = lens[src];
        }
        rc = mm_use_embed(m, bt, bln, big, bo, err, sizeof err);
        CHECK(rc == 0, "big batch: %s", err);
        double w = 1;
        for (int i = 0; rc == 0 && i < big; i++) {
            int src = (i % 6 == 5 || lng < 0) ? i % 4 : lng;
            w = MM_MIN(w, cosine_ff(bo + (size_t)i * D, out + (size_t)src * D, D));
        }
        CHECK(w >= 1 - 1e-6, "big batch vs singles: worst cosine %.9f", w);
        free(bt);
        free(bln);
        free(bo);
    }

    const char *be = getenv("MM_USE_BENCH");
    if (be && *be && strcmp(be, "0") != 0)
        bench(m, texts, lens, n);

    for (int i = 0; i < n; i++) {
        free(refs[i].ids);
        free(refs[i].emb);
    }
    free(refs);
    free(texts);
    free(lens);
    free(out);
    free(one);
    json_object_put(root);
    mm_use_free(m);
}

int main(void)
{
    test_unigram_quirks();
    test_model();
    return check_summary("test_use");
}
