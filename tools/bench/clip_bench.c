/* clip_bench — the mmembed side of tools/bench/bench_clip.sh: times our C
 * CLIP engine on the cases that tools/bench/ort_bench.js times with ONNX
 * Runtime, and writes the inputs both sides use plus our outputs for the
 * cross-check.
 *
 *   usage: clip_bench MODEL_DIR WORK_DIR [--threads 1,2] [--secs S]
 *                     [--min-runs N] [--max-runs N] [--no-time | --serve]
 *                     [--dtypes f32,bf16,q8,q4]
 *
 * --dtypes loads the model once per dtype (f32 always first: the check
 * outputs are its); --serve requests may name one ("run CASE TH K bf16"),
 * and stderr gets each dtype's worst cosine to f32 on the check inputs.
 *
 * Build: tools/bench/bench_clip.sh builds it against a libmmembed.a made by
 * the Makefile (its own B=build/bench/mm, the Makefile's CFLAGS and LDLIBS),
 * so the engine is compiled exactly as for the server.
 *
 * Writes into WORK_DIR (little-endian, raw):
 *   ids77.i32      32 x 77 token ids: <|startoftext|>, random ids below
 *                  49406, <|endoftext|> (49407) last
 *   ids16.i32      32 x 16, the same with EOS at position 15
 *   pixels.f32     8 x C x S x S, uniform in [-2, 2)
 *   check_lens.i32, check_ids.i32   CHECK_TEXTS sequences of mixed lengths
 *                  (packed, one batch in our engine)
 *   check_text.f32 our text embeddings for them (CHECK_TEXTS x dim)
 *   check_image.f32 our image embeddings for the first CHECK_IMAGES images
 *                  of pixels.f32 (one batch)
 *   meta.txt       dim, image size, channels
 * Then prints one line per dtype, case and thread count:
 *   RESULT ours-<dtype> <case> <threads> <ms per item> <ms per batch> <runs> <min ms per item>
 *               <CPU ms per item>
 * where ms per batch is the median wall time over the timed runs (after one warm-up
 * run; at least --min-runs, then until --secs have passed or --max-runs),
 * and CPU ms the median process CPU time (all threads): the same format as
 * ort_bench.js.
 * With --serve it prints "READY WORK_DIR openblas-core NAME" instead and answers timing
 * requests on stdin (see serve_loop), for ort_bench.js --ours. */
#include "mmembed/common.h"
#include "mmembed/model.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_NAME "clip_bench"
#include "bench_util.h"

/* OpenBLAS, where the engine links it: which kernel family it picked
 * (weak: the driver also links without it) */
extern char *openblas_get_corename(void) __attribute__((weak));

enum { CHECK_TEXTS = 6, CHECK_IMAGES = 3, MAX_TEXT = 32, MAX_IMAGE = 8, SOT = 49406, EOT = 49407 };

static const int check_lens[CHECK_TEXTS] = {2, 5, 16, 33, 76, 77};

static uint64_t rng = 0x243f6a8885a308d3ull;

typedef struct {
    const char *name;
    int n, len; /* len 0: image */
} bench_case_t;

static const bench_case_t cases[] = {
    {"image_b1", 1, 0}, {"image_b8", 8, 0},
    {"text16_b1", 1, 16}, {"text16_b32", 32, 16},
    {"text77_b1", 1, 77}, {"text77_b32", 32, 77},
};

#define NCASES (sizeof cases / sizeof cases[0])

typedef struct {
    const int32_t *const *p77, *const *p16;
    const int *l77, *l16;
    const float *pixels;
    float *out;
} inputs_t;

/* CPU time (all threads) of the last run_case, in ms */
static double last_cpu_ms;

/* one forward pass of case bc; returns its wall time in ms, or -1 */
static double run_case(mm_runner_t *r, const bench_case_t *bc, const inputs_t *in)
{
    double ca = cpu_now(), a = now();
    int rc;
    if (bc->len)
        rc = mm_model_encode_text(r, bc->len == 16 ? in->p16 : in->p77, bc->len == 16 ? in->l16 : in->l77,
                                  bc->n, in->out);
    else
        rc = mm_model_encode_image(r, in->pixels, bc->n, in->out);
    double b = now();
    last_cpu_ms = (cpu_now() - ca) * 1e3;
    if (rc) {
        fprintf(stderr, "clip_bench: %s: encode failed: %d\n", bc->name, rc);
        return -1;
    }
    return (b - a) * 1e3;
}

/* run_case for bench_time_case */
typedef struct {
    mm_runner_t *r;
    const bench_case_t *bc;
    const inputs_t *in;
} timed_t;

static double timed_run(void *ctx, double *cpu_ms)
{
    const timed_t *t = ctx;
    double ms = run_case(t->r, t->bc, t->in);
    *cpu_ms = last_cpu_ms;
    return ms;
}

/* --serve: line protocol on stdin/stdout for ort_bench.js --ours, which
 * alternates our runs with ONNX Runtime's so that both see the same noise:
 *   "run CASE THREADS K [DTYPE]"
 *                         -> "TIMES CASE THREADS w1/c1 .. wK/cK" (per run:
 *                            wall ms / process CPU ms, whole batch; one
 *                            untimed warm-up first whenever the runner is
 *                            new or the case has not run on it yet)
 *   "quit" or EOF         -> exit */
#define MAX_DT BENCH_MAX_DT

static int serve_loop(mm_model_t *const *models, const char *const *dts, int ndt, const inputs_t *in)
{
    char line[256];
    const char *names[NCASES];
    for (size_t i = 0; i < NCASES; i++)
        names[i] = cases[i].name;
    mm_runner_t *r[MAX_DT] = {0};
    int cur_threads = 0, warmed[MAX_DT][NCASES] = {{0}};
    while (fgets(line, sizeof line, stdin)) {
        int th, k, c, d;
        if (!strncmp(line, "quit", 4))
            break;
        if (bench_request(line, names, (int)NCASES, dts, ndt, &c, &th, &k, &d))
            continue;
        if (th != cur_threads) {
            for (int i = 0; i < ndt; i++) {
                mm_runner_free(r[i]);
                r[i] = NULL;
            }
            cur_threads = th;
            memset(warmed, 0, sizeof warmed);
        }
        if (!r[d] && !(r[d] = mm_runner_new(models[d], MAX_TEXT, MAX_IMAGE, th))) {
            fprintf(stderr, "clip_bench: runner: out of memory\n");
            return -1;
        }
        if (!warmed[d][c]) {
            if (run_case(r[d], &cases[c], in) < 0)
                return -1;
            warmed[d][c] = 1;
        }
        printf("TIMES %s %d", names[c], th);
        for (int i = 0; i < k; i++) {
            double ms = run_case(r[d], &cases[c], in);
            if (ms < 0)
                return -1;
            printf(" %.3f/%.3f", ms, last_cpu_ms);
        }
        printf("\n");
        fflush(stdout);
    }
    for (int i = 0; i < ndt; i++)
        mm_runner_free(r[i]);
    return 0;
}

/* Worst cosine between n D-vectors of a and b. */
static double worst_cos(const float *a, const float *b, int n, int D)
{
    double w = 1;
    for (int i = 0; i < n; i++) {
        double ab = 0, aa = 0, bb = 0;
        for (int j = 0; j < D; j++) {
            ab += (double)a[i * D + j] * b[i * D + j];
            aa += (double)a[i * D + j] * a[i * D + j];
            bb += (double)b[i * D + j] * b[i * D + j];
        }
        double c = ab / sqrt(aa * bb);
        w = c < w ? c : w;
    }
    return w;
}

int main(int argc, char **argv)
{
    bench_opts_t o;
    if (bench_args(argc, argv, &o))
        return 2;
    char err[MM_ERRLEN];
    mm_model_t *models[MAX_DT], *m;
    const char *dts[MAX_DT];
    const int ndt = bench_dtypes(o.dtypes, dts);
    if (ndt < 0)
        return 2;
    for (int d = 0; d < ndt; d++) {
        mm_dtype_t dt;
        mm_dtype_parse(dts[d], &dt);
        double t0 = now();
        if (mm_model_load_as(o.model_dir, dt, &models[d], err, sizeof err)) {
            fprintf(stderr, "clip_bench: %s\n", err);
            return 1;
        }
        const mm_model_info_t *mi = mm_model_info(models[d]);
        fprintf(stderr, "clip_bench: %s (%s) loaded in %.0f ms (pack %.1f MB, source %s, dim %d)\n", mi->name,
                dts[d], (now() - t0) * 1e3, mm_model_weight_bytes(models[d]) / 1e6, mi->dtype, mi->dim);
    }
    m = models[0];
    const mm_model_info_t *info = mm_model_info(m);
    if (!info->has_text || !info->has_vision || info->max_tokens < 77) {
        fprintf(stderr, "clip_bench: need a CLIP model with both towers and 77 positions\n");
        return 1;
    }
    const int D = info->dim;
    const size_t per = (size_t)info->channels * info->image_size * info->image_size;

    /* ---- inputs, shared with ort_bench.js through WORK_DIR */
    int32_t *ids77 = malloc(sizeof(int32_t) * MAX_TEXT * 77), *ids16 = malloc(sizeof(int32_t) * MAX_TEXT * 16);
    float *pixels = malloc(sizeof(float) * per * MAX_IMAGE), *out = malloc(sizeof(float) * D * MAX_TEXT);
    if (!ids77 || !ids16 || !pixels || !out)
        return 1;
    for (int s = 0; s < MAX_TEXT; s++) {
        int32_t *row = ids77 + s * 77;
        row[0] = SOT;
        for (int i = 1; i < 76; i++)
            row[i] = (int32_t)(bench_u32(&rng) % SOT);
        row[76] = EOT;
        memcpy(ids16 + s * 16, row, sizeof(int32_t) * 15);
        ids16[s * 16 + 15] = EOT;
    }
    for (size_t i = 0; i < per * MAX_IMAGE; i++)
        pixels[i] = (float)(bench_u32(&rng) >> 8) * (4.0f / 16777216.0f) - 2.0f;

    /* check set: mixed lengths, prefixes of the ids77 rows ending in EOT */
    int32_t check_ids[CHECK_TEXTS * 77];
    const int32_t *check_ptr[CHECK_TEXTS];
    int check_n = 0;
    for (int s = 0; s < CHECK_TEXTS; s++) {
        int len = check_lens[s];
        memcpy(check_ids + check_n, ids77 + (s + 1) * 77, sizeof(int32_t) * (size_t)(len - 1));
        check_ids[check_n + len - 1] = EOT;
        check_ptr[s] = check_ids + check_n;
        check_n += len;
    }
    char meta[256];
    int ml = snprintf(meta, sizeof meta, "dim %d\nimage_size %d\nchannels %d\n", D, info->image_size,
                      info->channels);

    mm_runner_t *r = mm_runner_new(m, MAX_TEXT, MAX_IMAGE, 1);
    if (!r) {
        fprintf(stderr, "clip_bench: runner: out of memory\n");
        return 1;
    }
    float check_text[CHECK_TEXTS * 1024], check_image[CHECK_IMAGES * 1024];
    if (D > 1024)
        return 1;
    int rc = mm_model_encode_text(r, check_ptr, check_lens, CHECK_TEXTS, check_text);
    if (!rc)
        rc = mm_model_encode_image(r, pixels, CHECK_IMAGES, check_image);
    mm_runner_free(r);
    if (rc) {
        fprintf(stderr, "clip_bench: encode failed: %d\n", rc);
        return 1;
    }
    for (int d = 1; d < ndt; d++) { /* fidelity of each dtype to f32 on the check inputs */
        float t2[CHECK_TEXTS * 1024], i2[CHECK_IMAGES * 1024];
        mm_runner_t *r2 = mm_runner_new(models[d], MAX_TEXT, MAX_IMAGE, 1);
        if (!r2 || mm_model_encode_text(r2, check_ptr, check_lens, CHECK_TEXTS, t2) ||
            mm_model_encode_image(r2, pixels, CHECK_IMAGES, i2)) {
            fprintf(stderr, "clip_bench: %s encode failed\n", dts[d]);
            return 1;
        }
        mm_runner_free(r2);
        fprintf(stderr, "clip_bench: FIDELITY %s vs f32: text worst cosine %.6f, image worst cosine %.6f\n", dts[d],
                worst_cos(t2, check_text, CHECK_TEXTS, D), worst_cos(i2, check_image, CHECK_IMAGES, D));
    }
    if (write_file(o.work, "ids77.i32", ids77, sizeof(int32_t) * MAX_TEXT * 77) ||
        write_file(o.work, "ids16.i32", ids16, sizeof(int32_t) * MAX_TEXT * 16) ||
        write_file(o.work, "pixels.f32", pixels, sizeof(float) * per * MAX_IMAGE) ||
        write_file(o.work, "check_lens.i32", check_lens, sizeof check_lens) ||
        write_file(o.work, "check_ids.i32", check_ids, sizeof(int32_t) * (size_t)check_n) ||
        write_file(o.work, "check_text.f32", check_text, sizeof(float) * CHECK_TEXTS * (size_t)D) ||
        write_file(o.work, "check_image.f32", check_image, sizeof(float) * CHECK_IMAGES * (size_t)D) ||
        write_file(o.work, "meta.txt", meta, (size_t)ml))
        return 1;
    fprintf(stderr, "clip_bench: inputs and check outputs written to %s\n", o.work);

    /* ---- timings */
    const int32_t *p77[MAX_TEXT], *p16[MAX_TEXT];
    int l77[MAX_TEXT], l16[MAX_TEXT];
    for (int s = 0; s < MAX_TEXT; s++) {
        p77[s] = ids77 + s * 77;
        p16[s] = ids16 + s * 16;
        l77[s] = 77;
        l16[s] = 16;
    }
    inputs_t in = {p77, p16, l77, l16, pixels, out};
    if (o.serve) {
        printf("READY %s openblas-core %s\n", o.work, openblas_get_corename ? openblas_get_corename() : "none");
        fflush(stdout);
        if (serve_loop(models, dts, ndt, &in))
            return 1;
    } else if (o.do_time) {
        for (const char *tp = o.threads; *tp;) {
            int th = atoi(tp);
            tp = strchr(tp, ',') ? strchr(tp, ',') + 1 : tp + strlen(tp);
            if (th < 1)
                continue;
            for (int d = 0; d < ndt; d++) {
                timed_t t = {.in = &in, .r = mm_runner_new(models[d], MAX_TEXT, MAX_IMAGE, th)};
                if (!t.r) {
                    fprintf(stderr, "clip_bench: runner: out of memory\n");
                    return 1;
                }
                char engine[32];
                snprintf(engine, sizeof engine, "ours-%s", dts[d]);
                for (size_t c = 0; c < NCASES; c++) {
                    t.bc = &cases[c];
                    if (bench_time_case(&o, engine, cases[c].name, th, cases[c].n, timed_run, &t))
                        return 1;
                }
                mm_runner_free(t.r);
            }
        }
    }
    free(ids77);
    free(ids16);
    free(pixels);
    free(out);
    for (int d = 0; d < ndt; d++)
        mm_model_free(models[d]);
    return 0;
}
