/* Unit tests for the backend seam (mmembed/backend.h): CLIP on a CPU
 * backend the caller opened gives the default runner's bits (whose forward
 * is the same one on a CPU backend of its own), in every dense dtype this
 * CPU runs, whatever the batch split; device names resolve.
 * Every architecture's runner on a given backend (runner_new_on) is run on
 * a strict backend: the CPU backend's ops behind a wrapper whose memory is
 * not host memory to the runner (every input is uploaded, every result
 * downloaded), whose weights are copies, and which fails the test when an
 * op is handed a pointer it did not give out (a weight left on the host, a
 * host buffer) — what a GPU would fault on. Its vectors must be the CPU
 * runner's bits (every architecture has one forward, so what differs is
 * the host side: copies, uploads, downloads).
 * The CUDA backend's numbers are checked on a GPU by tools/bench/gpu_clip.c
 * (CLIP) and tools/bench/gpu_models.c (BERT, Qwen3, Qwen2-VL).
 * Run from the repository root. */
#include "mmembed/backend.h"
#include "mmembed/common.h"
#include "mmembed/encoder.h"
#include "mmembed/model.h"
#include "mmembed/nn.h"
#include "check.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TINY "tests/fixtures/clip/clip-tiny"

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

static void test_open(void)
{
    char err[MM_ERRLEN];
    mm_backend_t *be;
    int rc = mm_backend_open("tpu", 1, NULL, &be, err, sizeof err);
    CHECK(rc == MM_E_UNSUPPORTED && !be && strstr(err, "expected cpu"), "unknown device: %d %s", rc, err);
    rc = mm_backend_open("cuda:x", 1, NULL, &be, err, sizeof err);
    CHECK(rc == MM_E_UNSUPPORTED && strstr(err, "cuda:N"), "bad cuda index: %d %s", rc, err);
#ifndef MM_WITH_CUDA
    rc = mm_backend_open("cuda:0", 1, "f16", &be, err, sizeof err);
    CHECK(rc == MM_E_UNSUPPORTED && strstr(err, "GPU=1"), "cuda without the backend built: %d %s", rc, err);
#endif
    rc = mm_backend_open("cpu", 3, NULL, &be, err, sizeof err);
    CHECK(rc == MM_OK && be && !strcmp(be->ops->name, "cpu"), "cpu: %d %s", rc, err);
    mm_backend_close(be);
}

/* The tiny fixture model in dtype dt: CPU runner vs the backend forward on
 * the CPU backend, bit for bit (batch splits differ on purpose: results do
 * not depend on the batch). */
static void test_bitexact(mm_dtype_t dt)
{
    char err[MM_ERRLEN];
    mm_model_t *m;
    int rc = mm_model_load_as(TINY, dt, &m, err, sizeof err);
    CHECK(rc == MM_OK, "load %s: %s", mm_dtype_name(dt), err);
    if (rc)
        return;
    const mm_model_info_t *mi = mm_model_info(m);
    mm_backend_t *be;
    mm_model_dev_t *d = NULL;
    rc = mm_backend_open("cpu", 2, NULL, &be, err, sizeof err);
    if (rc == MM_OK)
        rc = mm_model_dev_new(m, be, &d, err, sizeof err);
    CHECK(rc == MM_OK, "dev model: %s", err);
    mm_runner_t *r = mm_runner_new(m, 8, 3, 2), *g = d ? mm_runner_new_dev(d, 3, 2) : NULL;
    CHECK(r && g, "runners");
    if (!r || !g)
        goto out;

    enum { NT = 11, NI = 5 };
    int32_t *ids[NT];
    int lens[NT];
    for (int i = 0; i < NT; i++) {
        lens[i] = i == NT - 1 ? mi->max_tokens : 2 + (int)(next() % 30);
        ids[i] = malloc(sizeof(int32_t) * (size_t)lens[i]);
        ids[i][0] = 49406;
        for (int j = 1; j < lens[i] - 1; j++)
            ids[i][j] = 256 + (int32_t)(next() % 40000);
        ids[i][lens[i] - 1] = 49407;
        if (i == 3 && lens[i] > 4)
            ids[i][lens[i] - 3] = 49407; /* pooled before the end: what the last block's causal keys see */
    }
    const size_t per = (size_t)mi->channels * mi->image_size * mi->image_size;
    float *pix = malloc(per * NI * sizeof(float));
    for (size_t i = 0; i < per * NI; i++)
        pix[i] = (float)((int)(next() % 4001) - 2000) / 1000.0f;
    const int D = mi->dim;
    float *a = calloc((size_t)(NT + NI) * D, sizeof(float)), *b = calloc((size_t)(NT + NI) * D, sizeof(float));

    rc = mm_model_encode_text(r, (const int32_t *const *)ids, lens, NT, a);
    rc |= mm_model_encode_text(g, (const int32_t *const *)ids, lens, NT, b);
    rc |= mm_model_encode_image(r, pix, NI, a + (size_t)NT * D);
    rc |= mm_model_encode_image(g, pix, NI, b + (size_t)NT * D);
    CHECK(rc == MM_OK, "encode %s: %d", mm_dtype_name(dt), rc);
    int text_same = !memcmp(a, b, (size_t)NT * D * sizeof(float));
    int image_same = !memcmp(a + (size_t)NT * D, b + (size_t)NT * D, (size_t)NI * D * sizeof(float));
    /* tolerance: none; the CPU backend runs the CPU path's kernels in its order */
    CHECK(text_same, "%s texts: the backend forward differs from the CPU forward", mm_dtype_name(dt));
    CHECK(image_same, "%s images: the backend forward differs from the CPU forward", mm_dtype_name(dt));
    printf("backend cpu, %s: texts %s, images %s\n", mm_dtype_name(dt), text_same ? "bit-exact" : "DIFFER",
           image_same ? "bit-exact" : "DIFFER");
    /* the vision tower's contracts hold on a dev runner too */
    CHECK(mm_model_encode_image(g, pix, -1, b) == MM_E_INVALID, "n < 0");
    int32_t bad = mi->vocab_size;
    int one = 1;
    const int32_t *bp = &bad;
    CHECK(mm_model_encode_text(g, &bp, &one, 1, b) == MM_E_INVALID, "id out of range");

    for (int i = 0; i < NT; i++)
        free(ids[i]);
    free(pix);
    free(a);
    free(b);
out:
    mm_runner_free(g);
    mm_runner_free(r);
    mm_model_dev_free(d);
    mm_backend_close(be);
    mm_model_free(m);
}

/* ============================================================ strict */

typedef struct {
    const char *p;
    size_t n;
    int kind;   /* 0 alloc, 1 constant, 2 dense */
} region_t;

typedef struct {
    mm_backend_t base;
    mm_backend_t *cpu;
    region_t *reg;
    int nreg, capreg;
    int violations;
    char first[200];
} strict_t;

static strict_t *S(mm_backend_t *be) { return (strict_t *)be; }

static void track(strict_t *s, const void *p, size_t n, int kind)
{
    if (s->nreg == s->capreg) {
        s->capreg = s->capreg ? 2 * s->capreg : 256;
        s->reg = realloc(s->reg, sizeof(region_t) * (size_t)s->capreg);
    }
    s->reg[s->nreg++] = (region_t){p, n, kind};
}

static int find(strict_t *s, const void *p)
{
    for (int i = s->nreg - 1; i >= 0; i--)
        if ((const char *)p >= s->reg[i].p && (const char *)p < s->reg[i].p + s->reg[i].n)
            return i;
    return -1;
}

static void untrack(strict_t *s, const void *p)
{
    for (int i = 0; i < s->nreg; i++)
        if (s->reg[i].p == p) {
            s->reg[i] = s->reg[--s->nreg];
            return;
        }
}

/* p (and, with last >= 0, p + last floats) inside memory the backend gave out */
static void need(strict_t *s, const char *op, const char *arg, const void *p, long last)
{
    int i = p ? find(s, p) : -1;
    if (i >= 0 && last > 0 && find(s, (const float *)p + last) != i)
        i = -1;
    if (i < 0) {
        if (!s->violations++)
            snprintf(s->first, sizeof s->first, "%s: %s %p is not backend memory", op, arg, p);
    }
}

static void *st_alloc(mm_backend_t *be, size_t bytes)
{
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    if (p)
        track(S(be), p, bytes ? bytes : 1, 0);
    return p;
}

static void st_free(mm_backend_t *be, void *p)
{
    untrack(S(be), p);
    free(p);
}

static void *st_host_alloc(mm_backend_t *be, size_t bytes)
{
    (void)be;
    return malloc(bytes ? bytes : 1);
}

static void st_host_free(mm_backend_t *be, void *p)
{
    (void)be;
    free(p);
}

static void st_upload(mm_backend_t *be, void *dst, const void *src, size_t bytes)
{
    need(S(be), "upload", "dst", dst, (long)(bytes / sizeof(float)) - 1);
    if (find(S(be), src) >= 0 && !S(be)->violations++)
        snprintf(S(be)->first, sizeof S(be)->first, "upload from backend memory");
    memcpy(dst, src, bytes);
}

static int st_download(mm_backend_t *be, void *dst, const void *src, size_t bytes)
{
    need(S(be), "download", "src", src, (long)(bytes / sizeof(float)) - 1);
    memcpy(dst, src, bytes);
    return S(be)->cpu->ops->sync(S(be)->cpu);
}

static int st_sync(mm_backend_t *be)
{
    return S(be)->cpu->ops->sync(S(be)->cpu);
}

static const char *st_error(const mm_backend_t *be)
{
    return ((const strict_t *)be)->first;
}

static const float *st_constant(mm_backend_t *be, const float *host, size_t n)
{
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64 + 64);
    memcpy(p, host, n * sizeof(float));
    track(S(be), p, n * sizeof(float), 1);
    return p;
}

static const void *st_dense(mm_backend_t *be, const void *blob)
{
    int N, K;
    mm_nn_lin_shape(blob, &N, &K);
    const size_t n = mm_nn_lin_bytes(N, K, mm_nn_lin_dtype(blob));
    void *p = aligned_alloc(64, n);
    memcpy(p, blob, n);
    track(S(be), p, n, 2);
    return p;
}

static void st_release(mm_backend_t *be, const float *p)
{
    st_free(be, (void *)p);
}

static void st_dense_free(mm_backend_t *be, const void *w)
{
    st_free(be, (void *)w);
}

static void seqs_need(strict_t *s, const char *op, const mm_seqs_t *q)
{
    need(s, op, "qoff", q->qoff, 0), need(s, op, "qlen", q->qlen, 0);
    need(s, op, "koff", q->koff, 0), need(s, op, "klen", q->klen, 0);
}

static void st_linear(mm_backend_t *be, float *y, int ldy, const float *x, int ldx, const void *w, const float *b,
                      int M, int K, int N, mm_act_t act, int add)
{
    strict_t *s = S(be);
    need(s, "linear", "y", y, (long)(M - 1) * ldy + N - 1), need(s, "linear", "x", x, (long)(M - 1) * ldx + K - 1);
    const int i = find(s, w);
    if ((i < 0 || s->reg[i].kind != 2) && !s->violations++)
        snprintf(s->first, sizeof s->first, "linear: weights %p are not a dense handle", w);
    if (b)
        need(s, "linear", "b", b, N - 1);
    s->cpu->ops->linear(s->cpu, y, ldy, x, ldx, w, b, M, K, N, act, add);
}

static void st_layer_norm(mm_backend_t *be, float *y, const float *x, const float *w, const float *b, int M, int N,
                          float eps)
{
    strict_t *s = S(be);
    need(s, "layer_norm", "y", y, (long)M * N - 1), need(s, "layer_norm", "x", x, (long)M * N - 1);
    need(s, "layer_norm", "w", w, N - 1), need(s, "layer_norm", "b", b, N - 1);
    s->cpu->ops->layer_norm(s->cpu, y, x, w, b, M, N, eps);
}

static void st_attention(mm_backend_t *be, float *out, int ldo, const float *q, int ldq, const float *k, int ldk,
                         const float *v, int ldv, const mm_seqs_t *sq, int heads, int hd, int causal)
{
    strict_t *s = S(be);
    need(s, "attention", "out", out, 0), need(s, "attention", "q", q, 0), need(s, "attention", "k", k, 0);
    need(s, "attention", "v", v, 0), seqs_need(s, "attention", sq);
    s->cpu->ops->attention(s->cpu, out, ldo, q, ldq, k, ldk, v, ldv, sq, heads, hd, causal);
}

static void st_gather_add(mm_backend_t *be, float *y, int ldy, const float *a, int lda, const int *ia, const float *b,
                          int ldb, const int *ib, int n, int width)
{
    strict_t *s = S(be);
    need(s, "gather_add", "y", y, (long)(n - 1) * ldy + width - 1), need(s, "gather_add", "a", a, 0);
    need(s, "gather_add", "ia", ia, n - 1);
    if (b)
        need(s, "gather_add", "b", b, 0), need(s, "gather_add", "ib", ib, n - 1);
    s->cpu->ops->gather_add(s->cpu, y, ldy, a, lda, ia, b, ldb, ib, n, width);
}

static void st_patchify(mm_backend_t *be, float *dst, const float *pixels, int n, int C, int size, int patch)
{
    strict_t *s = S(be);
    need(s, "patchify", "dst", dst, 0), need(s, "patchify", "pixels", pixels, (long)n * C * size * size - 1);
    s->cpu->ops->patchify(s->cpu, dst, pixels, n, C, size, patch);
}

static void st_attention_gqa(mm_backend_t *be, float *out, int ldo, const float *q, int ldq, const float *k, int ldk,
                             const float *v, int ldv, const mm_seqs_t *sq, int heads, int kv_heads, int hd,
                             int causal)
{
    strict_t *s = S(be);
    need(s, "attention_gqa", "out", out, 0), need(s, "attention_gqa", "q", q, 0);
    need(s, "attention_gqa", "k", k, 0), need(s, "attention_gqa", "v", v, 0), seqs_need(s, "attention_gqa", sq);
    s->cpu->ops->attention_gqa(s->cpu, out, ldo, q, ldq, k, ldk, v, ldv, sq, heads, kv_heads, hd, causal);
}

static void st_add_layer_norm(mm_backend_t *be, float *x, int ld, const float *r, int ldr, const float *w,
                              const float *b, int M, int N, float eps)
{
    strict_t *s = S(be);
    need(s, "add_layer_norm", "x", x, (long)(M - 1) * ld + N - 1);
    if (r)
        need(s, "add_layer_norm", "r", r, (long)(M - 1) * ldr + N - 1);
    need(s, "add_layer_norm", "w", w, N - 1), need(s, "add_layer_norm", "b", b, N - 1);
    s->cpu->ops->add_layer_norm(s->cpu, x, ld, r, ldr, w, b, M, N, eps);
}

static void st_rms_norm(mm_backend_t *be, float *y, int ldy, const float *x, int ldx, const float *w, int M,
                        int groups, int N, float eps)
{
    strict_t *s = S(be);
    need(s, "rms_norm", "y", y, (long)(M - 1) * ldy + (long)groups * N - 1);
    need(s, "rms_norm", "x", x, (long)(M - 1) * ldx + (long)groups * N - 1), need(s, "rms_norm", "w", w, N - 1);
    s->cpu->ops->rms_norm(s->cpu, y, ldy, x, ldx, w, M, groups, N, eps);
}

static void st_rope(mm_backend_t *be, float *x, int ld, int M, int heads, int hd, const float *c, const float *sn)
{
    strict_t *s = S(be);
    need(s, "rope", "x", x, (long)(M - 1) * ld + (long)heads * hd - 1);
    need(s, "rope", "cos", c, (long)M * (hd / 2) - 1), need(s, "rope", "sin", sn, (long)M * (hd / 2) - 1);
    s->cpu->ops->rope(s->cpu, x, ld, M, heads, hd, c, sn);
}

static void st_swiglu(mm_backend_t *be, float *y, int ldy, const float *gu, int ldgu, int M, int N)
{
    strict_t *s = S(be);
    need(s, "swiglu", "y", y, (long)(M - 1) * ldy + N - 1), need(s, "swiglu", "gu", gu, (long)(M - 1) * ldgu + 2 * N - 1);
    s->cpu->ops->swiglu(s->cpu, y, ldy, gu, ldgu, M, N);
}

static void st_act(mm_backend_t *be, float *x, size_t n, int act)
{
    need(S(be), "act", "x", x, (long)n - 1);
    S(be)->cpu->ops->act(S(be)->cpu, x, n, act);
}

static void st_add(mm_backend_t *be, float *y, const float *x, size_t n)
{
    need(S(be), "add", "y", y, (long)n - 1), need(S(be), "add", "x", x, (long)n - 1);
    S(be)->cpu->ops->add(S(be)->cpu, y, x, n);
}

static void st_add_rows(mm_backend_t *be, float *y, int ldy, const float *a, int lda, const int *ia, int n, int width)
{
    strict_t *s = S(be);
    need(s, "add_rows", "y", y, (long)(n - 1) * ldy + width - 1), need(s, "add_rows", "a", a, width - 1);
    if (ia)
        need(s, "add_rows", "ia", ia, n - 1);
    s->cpu->ops->add_rows(s->cpu, y, ldy, a, lda, ia, n, width);
}

static void st_mean_rows(mm_backend_t *be, float *y, int ldy, const float *x, int ldx, const mm_seqs_t *sq, int width)
{
    strict_t *s = S(be);
    need(s, "mean_rows", "y", y, (long)(sq->n - 1) * ldy + width - 1), need(s, "mean_rows", "x", x, 0);
    seqs_need(s, "mean_rows", sq);
    s->cpu->ops->mean_rows(s->cpu, y, ldy, x, ldx, sq, width);
}

static void st_close(mm_backend_t *be)
{
    mm_backend_close(S(be)->cpu);
    free(S(be)->reg);
    free(be);
}

static const mm_backend_ops_t strict_ops = {
    .name = "strict", .close = st_close,
    .alloc = st_alloc, .free = st_free, .host_alloc = st_host_alloc, .host_free = st_host_free,
    .upload = st_upload, .download = st_download, .sync = st_sync, .error = st_error,
    .constant = st_constant, .dense = st_dense, .release = st_release, .dense_free = st_dense_free,
    .linear = st_linear, .layer_norm = st_layer_norm, .attention = st_attention, .gather_add = st_gather_add,
    .patchify = st_patchify, .attention_gqa = st_attention_gqa, .add_layer_norm = st_add_layer_norm,
    .rms_norm = st_rms_norm, .rope = st_rope, .swiglu = st_swiglu, .act = st_act, .add = st_add,
    .add_rows = st_add_rows, .mean_rows = st_mean_rows,
};

static strict_t *strict_open(int threads)
{
    char err[MM_ERRLEN];
    strict_t *s = calloc(1, sizeof *s);
    if (!s || mm_backend_open("cpu", threads, NULL, &s->cpu, err, sizeof err)) {
        free(s);
        return NULL;
    }
    s->base.ops = &strict_ops;
    s->base.host_memory = 0;   /* the runner must upload and download, as on a GPU */
    snprintf(s->base.desc, sizeof s->base.desc, "strict over %.100s", s->cpu->desc);
    return s;
}

/* A fixture folder with its .gz files unpacked (and the Qwen tokenizer). */
static int stage(const char *src, int tok, char *dir)
{
    char cmd[1024];
    strcpy(dir, "/tmp/mmembed-be-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(cmd, sizeof cmd, "for f in %s/*; do case $f in *.gz) gzip -dc $f > %s/$(basename $f .gz);; "
             "*) ln -s \"$PWD/$f\" %s/;; esac; done%s%s%s", src, dir, dir,
             tok ? " && gzip -dc tests/fixtures/qwen3/tokenizer.json.gz > " : "", tok ? dir : "",
             tok ? "/tokenizer.json" : "");
    return system(cmd);
}

static void unstage(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) { /* best effort */
    }
}

/* One model folder in dtype dt through the encoder interface: the CPU
 * runner vs a runner on the strict backend, bit for bit, every op's
 * pointers backend memory. Inputs: texts of 1 .. max_tokens ids (and for
 * a chat model, prompts with one and two images of different sizes). */
static void test_strict(const char *folder, int tok, mm_dtype_t dt)
{
    char dir[64], err[MM_ERRLEN];
    if (stage(folder, tok, dir)) {
        CHECK(0, "stage %s", folder);
        return;
    }
    mm_encoder_t *e = NULL;
    int rc = mm_encoder_load(dir, mm_dtype_name(dt), &e, err, sizeof err);
    CHECK(rc == MM_OK, "%s %s: load: %s", folder, mm_dtype_name(dt), err);
    strict_t *s = strict_open(2);
    mm_enc_runner_t *r = e ? mm_encoder_runner_new(e, 5, 3, 2) : NULL;
    mm_enc_runner_t *g = e && s ? mm_encoder_runner_new_on(e, &s->base, 3, 2) : NULL;
    CHECK(r && g, "%s: runners", folder);
    if (!r || !g)
        goto out;
    const mm_enc_info_t *in = mm_encoder_info(e);
    enum { N = 12 };
    static int32_t ids[N][512];
    static float pix[2][3 * 56 * 112];
    mm_segment_t seg[N][8];
    mm_input_t inp[N];
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < sizeof pix[0] / sizeof(float); i++)
            pix[k][i] = (float)((int)(next() % 4001) - 2000) / 1000.0f;
    const int vocab = in->vocab_size < 40000 ? in->vocab_size : 40000;
    int n = 0;
    for (int i = 0; i < N; i++) {
        int len = i == 0 ? in->max_tokens : 1 + (int)(next() % 60);
        len = len > in->max_tokens ? in->max_tokens : len > 512 ? 512 : len;
        for (int j = 0; j < len; j++)
            ids[i][j] = 256 + (int32_t)(next() % (uint32_t)(vocab - 256));
        if (in->chat && i % 4 == 1) {
            const int ni = 1 + (i / 4) % 2;
            int nseg;
            rc = mm_encoder_chat_input(e, NULL, 0, "two cats", 8, ni, ni * 8, 0, ids[i], 512, seg[i], &nseg, err,
                                       sizeof err);
            CHECK(rc == MM_OK, "chat input: %s", err);
            for (int k = 0; k < nseg; k++)
                if (seg[i][k].kind == MM_SEG_IMAGE)   /* 56 x 112, then 56 x 56 */
                    seg[i][k] = (mm_segment_t){.kind = MM_SEG_IMAGE, .pixels = pix[k > 1], .channels = 3,
                                               .height = 56, .width = k > 1 ? 56 : 112};
            inp[n++] = (mm_input_t){.seg = seg[i], .n_seg = nseg};
            continue;
        }
        seg[i][0] = (mm_segment_t){.kind = MM_SEG_TEXT, .ids = ids[i], .n_ids = len};
        inp[n++] = (mm_input_t){.seg = seg[i], .n_seg = 1};
    }
    const size_t bytes = (size_t)n * in->dim * sizeof(float);
    float *a = calloc(1, bytes), *b = calloc(1, bytes);
    rc = mm_encoder_encode(r, inp, n, a);
    CHECK(rc == MM_OK, "%s: cpu encode %d", folder, rc);
    rc = mm_encoder_encode(g, inp, n, b);
    CHECK(rc == MM_OK, "%s: strict encode %d", folder, rc);
    const int same = !memcmp(a, b, bytes);
    /* tolerance: none; the strict backend runs the CPU backend's kernels in the runner's order */
    CHECK(same, "%s %s: the runner on a backend differs from the CPU runner", folder, mm_dtype_name(dt));
    CHECK(s->violations == 0, "%s %s: %d ops got memory the backend did not give out; first: %s", folder,
          mm_dtype_name(dt), s->violations, s->first);
    printf("strict backend, %s %s (%s): %d inputs %s, %d pointer violations\n", in->arch, mm_dtype_name(dt),
           in->compute, n, same ? "bit-exact" : "DIFFER", s->violations);
    free(a);
    free(b);
out:
    mm_encoder_runner_free(g);
    mm_encoder_runner_free(r);
    if (s) {
        CHECK(s->nreg == 0, "%s: %d backend regions left after the runner was freed", folder, s->nreg);
        mm_backend_close(&s->base);
    }
    mm_encoder_free(e);
    unstage(dir);
}

int main(void)
{
    test_open();
    for (int dt = 0; dt < MM_DT_COUNT; dt++) {
        if (!mm_nn_lin_supported((mm_dtype_t)dt)) {
            SKIP("%s: not supported on this CPU", mm_dtype_name((mm_dtype_t)dt));
            continue;
        }
        test_bitexact((mm_dtype_t)dt);
        test_strict("tests/fixtures/bert/bert-tiny", 0, (mm_dtype_t)dt);
        test_strict("tests/fixtures/qwen3/qwen3-tiny", 1, (mm_dtype_t)dt);
        test_strict("tests/fixtures/qwen2vl/qwen2vl-tiny", 1, (mm_dtype_t)dt);
        test_strict(TINY, 0, (mm_dtype_t)dt);
    }
    return check_summary("test_backend");
}
