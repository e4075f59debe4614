/* gpu_clip — the CLIP forward on a compute backend (mmembed/backend.h)
 * against the CPU path: fidelity and milliseconds per batch.
 *
 *   gpu_clip [--device cuda] [--dtypes f16,bf16,tf32] [--threads N] [--out FILE] fidelity FIXDIR
 *       FIXDIR = tests/fixtures/clip: clip-tiny's vectors on the backend vs the
 *       Hugging Face f32 references and vs our CPU f32 path, per vector
 *       (cosine, max |diff|), every text and image alone vs in one batch.
 *       Fails (exit 1) below cosine 0.999 to the references (f16, bf16) or
 *       0.9999 alone vs batched.
 *   gpu_clip [...] [--batches 1,8,64,256] [--cpu-batches 1,8] [--secs S] bench MODELDIR
 *       random images and 16-token texts: GPU vs CPU f32 vectors (cosine),
 *       then ms per batch on the backend (upload, forward, download, from
 *       pinned host memory) and on the CPU path.
 *
 *   gpu_clip [--dtypes ...] gemm M,K,N[;M,K,N...]
 *       the backend's dense layer alone on random operands: each dtype's
 *       product vs a double product of the same operands rounded as the GPU
 *       rounds them (so only the summation order differs), and an all-ones
 *       product (every output must be exactly K: a dropped K tail shows).
 *
 * Lines starting with RESULT / CHECK are for scripts. */
#include "mmembed/backend.h"
#include "mmembed/common.h"
#include "mmembed/model.h"
#include "mmembed/nn.h"
#include "mmembed/safetensors.h"

#include <json-c/json.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *device = "cuda";
static char dtypes[64] = "f16,bf16,tf32";
static char batches[64] = "1,8,64,256";
static char cpu_batches[64] = "1,8";
static int threads = 16;
static double secs = 0.5;
static FILE *detail; /* --out: every per-vector line */
static int failed;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static double cosine_ff(const float *a, const float *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++)
        ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return ab / (sqrt(aa * bb) + 1e-300);
}

static double cosine_fd(const float *a, const double *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++)
        ab += a[i] * b[i], aa += (double)a[i] * a[i], bb += b[i] * b[i];
    return ab / (sqrt(aa * bb) + 1e-300);
}

static double maxdiff(const float *a, const float *b, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static void *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(n > 0 ? (size_t)n : 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return p;
}

/* A backend with m's weights and a runner on it, or a message and NULL. */
typedef struct {
    mm_backend_t *be;
    mm_model_dev_t *d;
    mm_runner_t *r;
} gdev_t;

static int dev_open(const mm_model_t *m, const char *dt, int max_text, int max_image, gdev_t *g)
{
    char err[MM_ERRLEN];
    memset(g, 0, sizeof *g);
    if (mm_backend_open(device, threads, dt, &g->be, err, sizeof err) ||
        mm_model_dev_new(m, g->be, &g->d, err, sizeof err)) {
        printf("CHECK FAILED %s %s: %s\n", device, dt, err);
        failed = 1;
        return -1;
    }
    if (!(g->r = mm_runner_new_dev(g->d, max_text, max_image))) {
        printf("CHECK FAILED %s %s: runner: %s\n", device, dt, g->be->ops->error(g->be));
        failed = 1;
        return -1;
    }
    return 0;
}

static void dev_close(gdev_t *g)
{
    mm_runner_free(g->r);
    mm_model_dev_free(g->d);
    mm_backend_close(g->be);
}

/* ============================================================ fidelity */

typedef struct {
    int n, dim;
    int32_t **ids;
    int *lens;
    double *emb; /* (n, dim) */
} texts_t;

typedef struct {
    int n, dim;
    float *pixels; /* (n, 3*224*224) */
    double *emb;
    char (*file)[64];
} images_t;

static int read_emb(json_object *e, double *dst, int dim)
{
    json_object *emb;
    if (!json_object_object_get_ex(e, "embedding", &emb) || (int)json_object_array_length(emb) != dim)
        return -1;
    for (int j = 0; j < dim; j++)
        dst[j] = json_object_get_double(json_object_array_get_idx(emb, j));
    return 0;
}

static int load_refs(const char *fix, int dim, texts_t *t, images_t *im)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/text_emb.json", fix);
    json_object *root = json_object_from_file(path);
    if (!root)
        return -1;
    t->n = (int)json_object_array_length(root), t->dim = dim;
    t->ids = calloc((size_t)t->n, sizeof *t->ids);
    t->lens = calloc((size_t)t->n, sizeof *t->lens);
    t->emb = calloc((size_t)t->n * dim, sizeof *t->emb);
    for (int i = 0; i < t->n; i++) {
        json_object *e = json_object_array_get_idx(root, i), *ids;
        json_object_object_get_ex(e, "ids77", &ids);
        t->lens[i] = (int)json_object_array_length(ids);
        t->ids[i] = malloc(sizeof(int32_t) * (size_t)t->lens[i]);
        for (int j = 0; j < t->lens[i]; j++)
            t->ids[i][j] = json_object_get_int(json_object_array_get_idx(ids, j));
        if (read_emb(e, t->emb + (size_t)i * dim, dim))
            return -1;
    }
    json_object_put(root);

    snprintf(path, sizeof path, "%s/image_emb.json", fix);
    if (!(root = json_object_from_file(path)))
        return -1;
    const size_t per = 3 * 224 * 224;
    im->n = (int)json_object_array_length(root), im->dim = dim;
    im->pixels = malloc(per * sizeof(float) * (size_t)im->n);
    im->emb = calloc((size_t)im->n * dim, sizeof *im->emb);
    im->file = calloc((size_t)im->n, sizeof *im->file);
    for (int i = 0; i < im->n; i++) {
        json_object *e = json_object_array_get_idx(root, i), *f;
        json_object_object_get_ex(e, "file", &f);
        snprintf(im->file[i], sizeof im->file[i], "%s", json_object_get_string(f));
        if (read_emb(e, im->emb + (size_t)i * dim, dim))
            return -1;
        size_t len;
        snprintf(path, sizeof path, "%s/pixels/%s.f16", fix, im->file[i]);
        void *raw = slurp(path, &len);
        if (!raw || len != per * 2) {
            free(raw);
            return -1;
        }
        mm_st_convert(MM_ST_F16, raw, im->pixels + per * (size_t)i, per);
        free(raw);
    }
    json_object_put(root);
    return 0;
}

/* One modality's comparison: got (batched) and alone vs the references
 * and vs the CPU f32 vectors. */
static void compare(const char *dt, const char *what, int n, int D, const float *got, const float *alone,
                    const float *cpu, const double *ref, char (*names)[64])
{
    double min_ref = 1, min_cpu = 1, min_bat = 1, max_d = 0, cpu_ref = 1;
    int worst = 0;
    for (int i = 0; i < n; i++) {
        const float *g = got + (size_t)i * D;
        double cr = cosine_fd(g, ref + (size_t)i * D, D), cc = cosine_ff(g, cpu + (size_t)i * D, D);
        double cb = cosine_ff(g, alone + (size_t)i * D, D), md = maxdiff(g, cpu + (size_t)i * D, D);
        cpu_ref = fmin(cpu_ref, cosine_fd(cpu + (size_t)i * D, ref + (size_t)i * D, D));
        if (cr < min_ref)
            min_ref = cr, worst = i;
        min_cpu = fmin(min_cpu, cc), min_bat = fmin(min_bat, cb), max_d = fmax(max_d, md);
        char name[80];
        if (names)
            snprintf(name, sizeof name, "%s", names[i]);
        else
            snprintf(name, sizeof name, "text %d", i);
        if (detail)
            fprintf(detail, "%s %s %-28s cos_hf %.7f cos_cpu %.7f max|diff|_cpu %.3g alone_vs_batch %.8f\n",
                    dt, what, name, cr, cc, md, cb);
        if (names) /* the images, every one on the console too */
            printf("  %-5s %-6s %-28s cos_hf %.7f cos_cpu %.7f max|diff|_cpu %.3g alone_vs_batch %.8f\n", dt,
                   what, name, cr, cc, md, cb);
    }
    printf("RESULT fidelity %s %s n=%d min_cos_hf %.7f (worst #%d) min_cos_cpu %.7f max|diff|_cpu %.3g "
           "min_alone_vs_batch %.8f (cpu f32 vs hf: %.7f)\n",
           dt, what, n, min_ref, worst, min_cpu, max_d, min_bat, cpu_ref);
    /* tolerances (issue 18): >= 0.999 to the HF f32 references (f16, bf16;
     * tf32 rounds products as f16 does); batching invariance >= 0.9999 */
    const double need = 0.999;
    if (min_ref < need || min_bat < 0.9999) {
        printf("CHECK FAILED %s %s: cos_hf %.7f (need %.4f), alone vs batch %.8f (need 0.9999)\n", dt, what,
               min_ref, need, min_bat);
        failed = 1;
    } else {
        printf("CHECK ok %s %s\n", dt, what);
    }
}

static int run_fidelity(const char *fix)
{
    char dir[1024], err[MM_ERRLEN];
    snprintf(dir, sizeof dir, "%s/clip-tiny", fix);
    mm_model_t *m;
    if (mm_model_load_as(dir, MM_DT_F32, &m, err, sizeof err)) {
        fprintf(stderr, "gpu_clip: %s\n", err);
        return 1;
    }
    const mm_model_info_t *mi = mm_model_info(m);
    const int D = mi->dim;
    texts_t t;
    images_t im;
    if (load_refs(fix, D, &t, &im)) {
        fprintf(stderr, "gpu_clip: cannot read the references under %s\n", fix);
        return 1;
    }
    const size_t per = 3 * 224 * 224;
    float *cpu_t = calloc((size_t)t.n * D, 4), *cpu_i = calloc((size_t)im.n * D, 4);
    mm_runner_t *r = mm_runner_new(m, 64, 16, threads);
    if (mm_model_encode_text(r, (const int32_t *const *)t.ids, t.lens, t.n, cpu_t) ||
        mm_model_encode_image(r, im.pixels, im.n, cpu_i)) {
        fprintf(stderr, "gpu_clip: cpu encode failed\n");
        return 1;
    }
    mm_runner_free(r);
    printf("fidelity: %s, %d texts, %d images; CPU path f32, %d threads\n", dir, t.n, im.n, threads);

    float *bt = calloc((size_t)t.n * D, 4), *at = calloc((size_t)t.n * D, 4);
    float *bi = calloc((size_t)im.n * D, 4), *ai = calloc((size_t)im.n * D, 4);
    char list[64];
    snprintf(list, sizeof list, "%s", dtypes);
    for (char *save, *dt = strtok_r(list, ",", &save); dt; dt = strtok_r(NULL, ",", &save)) {
        gdev_t g;
        if (dev_open(m, dt, 256, 16, &g) == 0) {
            printf("backend: %s\n", g.be->desc);
            int rc = mm_model_encode_text(g.r, (const int32_t *const *)t.ids, t.lens, t.n, bt);
            for (int i = 0; i < t.n && !rc; i++)
                rc = mm_model_encode_text(g.r, (const int32_t *const *)&t.ids[i], &t.lens[i], 1, at + (size_t)i * D);
            if (!rc)
                rc = mm_model_encode_image(g.r, im.pixels, im.n, bi);
            for (int i = 0; i < im.n && !rc; i++)
                rc = mm_model_encode_image(g.r, im.pixels + per * i, 1, ai + (size_t)i * D);
            if (rc) {
                printf("CHECK FAILED %s: encode %d: %s\n", dt, rc, g.be->ops->error(g.be));
                failed = 1;
            } else {
                compare(dt, "text", t.n, D, bt, at, cpu_t, t.emb, NULL);
                compare(dt, "image", im.n, D, bi, ai, cpu_i, im.emb, im.file);
            }
        }
        dev_close(&g);
    }
    mm_model_free(m);
    return failed;
}

/* ============================================================ bench ==== */

static int parse_list(const char *s, int *v, int max)
{
    int n = 0;
    while (*s && n < max) {
        v[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c)
            break;
        s = c + 1;
    }
    return n;
}

/* Times fn over at least `secs` and 3 calls after one warm-up; ms per call. */
typedef int (*call_fn)(mm_runner_t *r, void *ctx, int n, float *out);

static double time_calls(call_fn fn, mm_runner_t *r, void *ctx, int n, float *out)
{
    if (fn(r, ctx, n, out))
        return -1;
    int calls = 0;
    double t0 = now(), t;
    do {
        if (fn(r, ctx, n, out))
            return -1;
        calls++;
        t = now();
    } while (calls < 3 || t - t0 < secs);
    return (t - t0) * 1e3 / calls;
}

typedef struct {
    const int32_t *const *ids;
    const int *lens;
} text_ctx_t;

static int call_images(mm_runner_t *r, void *ctx, int n, float *out)
{
    return mm_model_encode_image(r, ctx, n, out);
}

static int call_texts(mm_runner_t *r, void *ctx, int n, float *out)
{
    const text_ctx_t *t = ctx;
    return mm_model_encode_text(r, t->ids, t->lens, n, out);
}

static int run_bench(const char *dir)
{
    char err[MM_ERRLEN];
    mm_model_t *m;
    double t0 = now();
    if (mm_model_load_as(dir, MM_DT_F32, &m, err, sizeof err)) {
        fprintf(stderr, "gpu_clip: %s\n", err);
        return 1;
    }
    const mm_model_info_t *mi = mm_model_info(m);
    const int D = mi->dim;
    printf("bench: %s (f32 pack %.0f MiB, loaded in %.1f s)\n", dir, mm_model_weight_bytes(m) / 1048576.0,
           now() - t0);
    int bs[16], nb = parse_list(batches, bs, 16), cbs[16], ncb = parse_list(cpu_batches, cbs, 16), maxb = 1;
    for (int i = 0; i < nb; i++)
        maxb = MM_MAX(maxb, bs[i]);
    const int TB = MM_MAX(maxb, 512); /* texts: up to 512 per call */
    const size_t per = (size_t)mi->channels * mi->image_size * mi->image_size;

    /* inputs: random normalized pixels; 16-token texts (start, 14 words, end) */
    uint64_t s = 88172645463325252ull;
    float *pix = malloc(per * maxb * sizeof(float));
    for (size_t i = 0; i < per * maxb; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        pix[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 4.0 - 2.0);
    }
    int32_t **ids = malloc(sizeof(*ids) * TB);
    int *lens = malloc(sizeof(int) * TB);
    for (int i = 0; i < TB; i++) {
        lens[i] = 16;
        ids[i] = malloc(16 * sizeof(int32_t));
        ids[i][0] = 49406;
        for (int j = 1; j < 15; j++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            ids[i][j] = 256 + (int32_t)(s % 40000);
        }
        ids[i][15] = 49407;
    }
    text_ctx_t tc = {(const int32_t *const *)ids, lens};
    float *out = malloc(sizeof(float) * D * TB), *cpu = malloc(sizeof(float) * D * 16);

    /* the CPU path: vectors for the comparison, then ms per batch */
    mm_runner_t *r = mm_runner_new(m, 64, 64, threads);
    const int NC = 8;
    if (mm_model_encode_image(r, pix, NC, cpu) || mm_model_encode_text(r, tc.ids, lens, NC, cpu + (size_t)NC * D)) {
        fprintf(stderr, "gpu_clip: cpu encode failed\n");
        return 1;
    }
    for (int i = 0; i < ncb; i++) {
        double mi_ = time_calls(call_images, r, pix, cbs[i], out), mt = time_calls(call_texts, r, &tc, cbs[i], out);
        printf("RESULT bench cpu-f32 (%d threads) batch %4d: images %8.2f ms (%7.1f/s)  texts16 %8.2f ms (%8.1f/s)\n",
               threads, cbs[i], mi_, cbs[i] * 1e3 / mi_, mt, cbs[i] * 1e3 / mt);
    }
    mm_runner_free(r);

    char list[64];
    snprintf(list, sizeof list, "%s", dtypes);
    for (char *save, *dt = strtok_r(list, ",", &save); dt; dt = strtok_r(NULL, ",", &save)) {
        gdev_t g;
        t0 = now();
        if (dev_open(m, dt, TB, maxb, &g)) {
            dev_close(&g);
            continue;
        }
        printf("backend: %s (weights up and runner made in %.2f s)\n", g.be->desc, now() - t0);
        /* pinned input, as an executor's slots would be */
        float *hp = g.be->ops->host_alloc(g.be, per * maxb * sizeof(float));
        if (!hp) {
            printf("CHECK FAILED %s: pinned memory\n", dt);
            failed = 1;
            dev_close(&g);
            continue;
        }
        memcpy(hp, pix, per * maxb * sizeof(float));
        float *gv = malloc(sizeof(float) * D * 2 * NC);
        if (mm_model_encode_image(g.r, hp, NC, gv) || mm_model_encode_text(g.r, tc.ids, lens, NC, gv + (size_t)NC * D)) {
            printf("CHECK FAILED %s: encode: %s\n", dt, g.be->ops->error(g.be));
            failed = 1;
        } else {
            double ci = 1, ct = 1, di = 0, dtx = 0;
            for (int i = 0; i < NC; i++) {
                ci = fmin(ci, cosine_ff(gv + (size_t)i * D, cpu + (size_t)i * D, D));
                ct = fmin(ct, cosine_ff(gv + (size_t)(NC + i) * D, cpu + (size_t)(NC + i) * D, D));
                di = fmax(di, maxdiff(gv + (size_t)i * D, cpu + (size_t)i * D, D));
                dtx = fmax(dtx, maxdiff(gv + (size_t)(NC + i) * D, cpu + (size_t)(NC + i) * D, D));
            }
            printf("RESULT vs-cpu %s: images min cos %.7f max|diff| %.3g; texts16 min cos %.7f max|diff| %.3g\n", dt,
                   ci, di, ct, dtx);
            for (int i = 0; i < nb; i++) {
                double mi_ = time_calls(call_images, g.r, hp, bs[i], out);
                double mt = time_calls(call_texts, g.r, &tc, bs[i], out);
                printf("RESULT bench %s batch %4d: images %8.3f ms (%8.1f/s)  texts16 %8.3f ms (%9.1f/s)\n", dt, bs[i],
                       mi_, bs[i] * 1e3 / mi_, mt, bs[i] * 1e3 / mt);
            }
            double mt = time_calls(call_texts, g.r, &tc, 512, out);
            printf("RESULT bench %s batch  512: texts16 %8.3f ms (%9.1f/s)\n", dt, mt, 512 * 1e3 / mt);
        }
        free(gv);
        g.be->ops->host_free(g.be, hp);
        dev_close(&g);
    }
    mm_model_free(m);
    return failed;
}

/* ============================================================ gemm ===== */

static float round_to(float x, const char *dt)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if (!strcmp(dt, "bf16")) {
        u = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000u;
    } else if (!strcmp(dt, "f16")) { /* normal range only: the test's values are */
        const int e = (int)((u >> 23) & 0xff) - 127;
        if (e >= -14) {
            const uint32_t drop = 13, half = 1u << (drop - 1);
            u = (u + half - 1 + ((u >> drop) & 1)) & ~((1u << drop) - 1);
        }
    } else if (!strcmp(dt, "tf32")) {
        u = (u + 0xfff + ((u >> 13) & 1)) & ~0x1fffu;
    }
    memcpy(&x, &u, 4);
    return x;
}

static int run_gemm(const char *shapes)
{
    char list[64], sl[512];
    snprintf(list, sizeof list, "%s", dtypes);
    unsigned seed = 12345;
    for (char *save, *dt = strtok_r(list, ",", &save); dt; dt = strtok_r(NULL, ",", &save)) {
        mm_backend_t *be;
        char err[MM_ERRLEN];
        if (mm_backend_open(device, threads, dt, &be, err, sizeof err)) {
            printf("CHECK FAILED gemm %s: %s\n", dt, err);
            failed = 1;
            continue;
        }
        snprintf(sl, sizeof sl, "%s", shapes);
        for (char *s2, *sh = strtok_r(sl, ";", &s2); sh; sh = strtok_r(NULL, ";", &s2)) {
            int M = 0, K = 0, N = 0;
            if (sscanf(sh, "%d,%d,%d", &M, &K, &N) != 3 || M < 1 || K < 1 || N < 1)
                continue;
            for (int ones = 0; ones < 2; ones++) {
                float *x = malloc(sizeof(float) * M * K), *w = malloc(sizeof(float) * N * K);
                float *y = malloc(sizeof(float) * M * N);
                for (size_t i = 0; i < (size_t)M * K; i++) {
                    seed = seed * 1103515245u + 12345u;
                    x[i] = ones ? 1.0f : ((float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f) * 2.0f;
                }
                for (size_t i = 0; i < (size_t)N * K; i++) {
                    seed = seed * 1103515245u + 12345u;
                    w[i] = ones ? 1.0f : ((float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f) * 0.05f;
                }
                void *blob = aligned_alloc(64, mm_nn_lin_bytes(N, K, MM_DT_F32));
                mm_nn_lin_pack(blob, w, N, K, MM_DT_F32);
                const void *dw = be->ops->dense(be, blob);
                float *dx = be->ops->alloc(be, sizeof(float) * M * K), *dy = be->ops->alloc(be, sizeof(float) * M * N);
                int rc = -1;
                if (dw && dx && dy) {
                    be->ops->upload(be, dx, x, sizeof(float) * M * K);
                    be->ops->linear(be, dy, N, dx, K, dw, NULL, M, K, N, MM_ACT_NONE, 0);
                    rc = be->ops->download(be, y, dy, sizeof(float) * M * N);
                }
                double maxrel = 0, maxabs = 0;
                long bad = 0;
                for (int i = 0; i < M && !rc; i++)
                    for (int j = 0; j < N; j++) {
                        double ref = 0, mag = 0;
                        for (int k = 0; k < K; k++) {
                            double p = (double)round_to(x[(size_t)i * K + k], dt) * round_to(w[(size_t)j * K + k], dt);
                            ref += p, mag += fabs(p);
                        }
                        double d = fabs(y[(size_t)i * N + j] - ref);
                        maxabs = fmax(maxabs, d);
                        maxrel = fmax(maxrel, d / (mag + 1e-30));
                        if (ones ? d != 0 : d / (mag + 1e-30) > 1e-4)
                            bad++;
                    }
                if (rc) {
                    printf("CHECK FAILED gemm %s %dx%dx%d: %s\n", dt, M, K, N, be->ops->error(be));
                    failed = 1;
                } else {
                    printf("RESULT gemm %-4s %s M=%d K=%d N=%d max|diff| %.3g max rel(to sum|p|) %.3g bad %ld\n", dt,
                           ones ? "ones  " : "random", M, K, N, maxabs, maxrel, bad);
                    if (bad)
                        failed = 1;
                }
                be->ops->free(be, dx);
                be->ops->free(be, dy);
                be->ops->dense_free(be, dw);
                free(blob), free(x), free(w), free(y);
            }
        }
        mm_backend_close(be);
    }
    return failed;
}

int main(int argc, char **argv)
{
    int i = 1;
    for (; i + 1 < argc && !strncmp(argv[i], "--", 2); i += 2) {
        if (!strcmp(argv[i], "--device"))
            device = argv[i + 1];
        else if (!strcmp(argv[i], "--dtypes"))
            snprintf(dtypes, sizeof dtypes, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--batches"))
            snprintf(batches, sizeof batches, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--cpu-batches"))
            snprintf(cpu_batches, sizeof cpu_batches, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--secs"))
            secs = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--out")) {
            if (!(detail = fopen(argv[i + 1], "w")))
                perror(argv[i + 1]);
        } else
            break;
    }
    if (i + 2 != argc || (strcmp(argv[i], "fidelity") && strcmp(argv[i], "bench") && strcmp(argv[i], "gemm"))) {
        fprintf(stderr, "usage: gpu_clip [--device cuda] [--dtypes f16,bf16,tf32] [--threads N] [--out FILE]\n"
                        "                [--batches 1,8,64,256] [--cpu-batches 1,8] [--secs S]\n"
                        "                fidelity tests/fixtures/clip | bench MODELDIR | gemm M,K,N[;M,K,N...]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    mm_nn_cpu();
    int rc = !strcmp(argv[i], "fidelity") ? run_fidelity(argv[i + 1])
             : !strcmp(argv[i], "gemm")   ? run_gemm(argv[i + 1])
                                          : run_bench(argv[i + 1]);
    if (detail)
        fclose(detail);
    return rc;
}
