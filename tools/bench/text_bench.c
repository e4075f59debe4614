/* text_bench — the mmembed side of tools/bench/bench_text.sh: times our C
 * BERT encoder (include/mmembed/textmodel.h, the engine only: token ids in,
 * pooled vectors out, no tokenizer, no HTTP) on the cases that
 * tools/bench/ort_text_bench.js times with ONNX Runtime, and writes the
 * inputs both sides use plus our outputs for the cross-check.
 *
 *   usage: text_bench MODEL_DIR WORK_DIR [--threads 1,2] [--secs S]
 *                     [--min-runs N] [--max-runs N] [--no-time | --serve]
 *                     [--dtypes f32,bf16,q8,q4]
 *
 * Build: tools/bench/bench_text.sh builds it against a libmmembed.a made by
 * the Makefile (B=build/bench/mm, the Makefile's CFLAGS and LDLIBS).
 *
 * Writes into WORK_DIR (little-endian, raw):
 *   ids16.i32       32 x 16 token ids: [CLS]=101, 14 random ids in
 *                   [1000, vocab), [SEP]=102
 *   check_lens.i32, check_ids.i32   CHECK_TEXTS sequences of mixed lengths
 *                   (packed; one batch in our engine, one padded batch
 *                   with attention_mask in ORT)
 *   check_out.f32   our pooled vectors for them (CHECK_TEXTS x dim)
 *   meta.txt        dim
 * Then, per case and thread count (after one warm-up run, at least
 * --min-runs runs, then until --secs have passed or --max-runs):
 *   RESULT ours <case> <threads> <ms per item> <ms per batch> <runs> <min ms per item>
 *               <CPU ms per item>
 * (engine "ours-<dtype>" for each dtype when --dtypes names more than f32;
 * stderr gets "text_bench: PACK <dtype> <MB> MB" per dtype).
 * With --serve it prints "READY WORK_DIR openblas-core NAME" instead and
 * answers "run CASE THREADS K" with "TIMES CASE THREADS w1/c1 .. wK/cK"
 * (wall ms / process CPU ms per run, whole batch), "quit" or EOF to stop:
 * the protocol of tools/bench/clip_bench.c. */
#include "mmembed/common.h"
#include "mmembed/textmodel.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_NAME "text_bench"
#include "bench_util.h"

extern char *openblas_get_corename(void) __attribute__((weak));

enum { MAX_BATCH = 32, LEN = 16, CHECK_TEXTS = 6, CLS = 101, SEP = 102, MAX_CHECK_LEN = 64 };

static const int check_lens[CHECK_TEXTS] = {2, 5, 9, 16, 33, 64};

typedef struct {
    const char *name;
    int n;
} bench_case_t;

static const bench_case_t cases[] = {{"b1", 1}, {"b32", 32}};
#define NCASES (sizeof cases / sizeof cases[0])

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static const int32_t *ptrs[MAX_BATCH];
static int lens[MAX_BATCH];
static float *out;
static double last_cpu_ms;

/* one forward pass of case bc; wall ms, or -1 */
static double run_case(mm_tm_runner_t *r, const bench_case_t *bc)
{
    double ca = cpu_now(), a = now();
    int rc = mm_tm_encode(r, ptrs, lens, bc->n, out);
    double b = now();
    last_cpu_ms = (cpu_now() - ca) * 1e3;
    if (rc) {
        fprintf(stderr, "text_bench: %s: encode failed: %d\n", bc->name, rc);
        return -1;
    }
    return (b - a) * 1e3;
}

/* run_case for bench_time_case */
typedef struct {
    mm_tm_runner_t *r;
    const bench_case_t *bc;
} timed_t;

static double timed_run(void *ctx, double *cpu_ms)
{
    const timed_t *t = ctx;
    double ms = run_case(t->r, t->bc);
    *cpu_ms = last_cpu_ms;
    return ms;
}

#define MAX_DT BENCH_MAX_DT

/* "run CASE THREADS K [DTYPE]" (see clip_bench.c) */
static int serve_loop(mm_tm_t *const *models, const char *const *dts, int ndt)
{
    char line[256];
    const char *names[NCASES];
    for (size_t i = 0; i < NCASES; i++)
        names[i] = cases[i].name;
    mm_tm_runner_t *r[MAX_DT] = {0};
    int cur_threads = 0, warmed[MAX_DT][NCASES] = {{0}};
    while (fgets(line, sizeof line, stdin)) {
        int th, k, c, d;
        if (!strncmp(line, "quit", 4))
            break;
        if (bench_request(line, names, (int)NCASES, dts, ndt, &c, &th, &k, &d))
            continue;
        if (th != cur_threads) {
            for (int i = 0; i < ndt; i++) {
                mm_tm_runner_free(r[i]);
                r[i] = NULL;
            }
            cur_threads = th;
            memset(warmed, 0, sizeof warmed);
        }
        if (!r[d] && !(r[d] = mm_tm_runner_new(models[d], MAX_BATCH, th))) {
            fprintf(stderr, "text_bench: runner: out of memory\n");
            return -1;
        }
        if (!warmed[d][c]) {
            if (run_case(r[d], &cases[c]) < 0)
                return -1;
            warmed[d][c] = 1;
        }
        printf("TIMES %s %d", names[c], th);
        for (int i = 0; i < k; i++) {
            double ms = run_case(r[d], &cases[c]);
            if (ms < 0)
                return -1;
            printf(" %.3f/%.3f", ms, last_cpu_ms);
        }
        printf("\n");
        fflush(stdout);
    }
    for (int i = 0; i < ndt; i++)
        mm_tm_runner_free(r[i]);
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts_t o;
    if (bench_args(argc, argv, &o))
        return 2;
    char err[MM_ERRLEN];
    mm_tm_t *models[MAX_DT], *m;
    const char *dts[MAX_DT];
    const int ndt = bench_dtypes(o.dtypes, dts);
    if (ndt < 0)
        return 2;
    double t0 = now();
    for (int d = 0; d < ndt; d++) {
        mm_dtype_t dt;
        mm_dtype_parse(dts[d], &dt);
        if (mm_tm_load_as(o.model_dir, dt, &models[d], err, sizeof err)) {
            fprintf(stderr, "text_bench: %s\n", err);
            return 1;
        }
        fprintf(stderr, "text_bench: PACK %s %.1f MB\n", dts[d], mm_tm_weight_bytes(models[d]) / 1e6);
    }
    m = models[0];
    const mm_tm_info_t *info = mm_tm_info(m);
    fprintf(stderr, "text_bench: %s loaded in %.0f ms (%s, %d layers, %d heads, dim %d, %s, pooling %d, %.1f MB)\n",
            info->name, (now() - t0) * 1e3, info->arch, info->layers, info->heads, info->dim, info->dtype,
            info->pooling, mm_tm_weight_bytes(m) / 1e6);
    if (info->max_tokens < MAX_CHECK_LEN || info->vocab_size <= 1000) {
        fprintf(stderr, "text_bench: need >= %d positions and a vocabulary > 1000\n", MAX_CHECK_LEN);
        return 1;
    }
    const int D = info->dim;

    /* ---- inputs, shared with ort_text_bench.js through WORK_DIR */
    static int32_t ids[MAX_BATCH * LEN];
    for (int s = 0; s < MAX_BATCH; s++) {
        int32_t *row = ids + s * LEN;
        row[0] = CLS;
        for (int i = 1; i < LEN - 1; i++)
            row[i] = 1000 + (int32_t)(bench_u32(&rng) % (uint32_t)(info->vocab_size - 1000));
        row[LEN - 1] = SEP;
        ptrs[s] = row;
        lens[s] = LEN;
    }
    static int32_t check_ids[CHECK_TEXTS * MAX_CHECK_LEN];
    const int32_t *check_ptr[CHECK_TEXTS];
    int check_n = 0;
    for (int s = 0; s < CHECK_TEXTS; s++) {
        int len = check_lens[s];
        int32_t *row = check_ids + check_n;
        row[0] = CLS;
        for (int i = 1; i < len - 1; i++)
            row[i] = 1000 + (int32_t)(bench_u32(&rng) % (uint32_t)(info->vocab_size - 1000));
        row[len - 1] = SEP;
        check_ptr[s] = row;
        check_n += len;
    }
    out = malloc(sizeof(float) * (size_t)D * MAX_BATCH);
    float *check_out = malloc(sizeof(float) * (size_t)D * CHECK_TEXTS);
    if (!out || !check_out)
        return 1;
    mm_tm_runner_t *r = mm_tm_runner_new(m, MAX_BATCH, 1);
    if (!r) {
        fprintf(stderr, "text_bench: runner: out of memory\n");
        return 1;
    }
    int rc = mm_tm_encode(r, check_ptr, check_lens, CHECK_TEXTS, check_out);
    mm_tm_runner_free(r);
    if (rc) {
        fprintf(stderr, "text_bench: check encode failed: %d\n", rc);
        return 1;
    }
    for (int d = 1; d < ndt; d++) { /* each dtype's fidelity to f32 on the check texts */
        float *o2 = malloc(sizeof(float) * (size_t)D * CHECK_TEXTS);
        mm_tm_runner_t *r2 = mm_tm_runner_new(models[d], MAX_BATCH, 1);
        if (!o2 || !r2 || mm_tm_encode(r2, check_ptr, check_lens, CHECK_TEXTS, o2))
            return 1;
        double worst = 1;
        for (int i = 0; i < CHECK_TEXTS; i++) {
            double ab = 0, aa = 0, bb = 0;
            for (int j = 0; j < D; j++) {
                ab += (double)o2[i * D + j] * check_out[i * D + j];
                aa += (double)o2[i * D + j] * o2[i * D + j];
                bb += (double)check_out[i * D + j] * check_out[i * D + j];
            }
            worst = fmin(worst, ab / sqrt(aa * bb));
        }
        fprintf(stderr, "text_bench: FIDELITY %s vs f32: worst cosine %.6f over %d texts\n", dts[d], worst,
                CHECK_TEXTS);
        mm_tm_runner_free(r2);
        free(o2);
    }
    char meta[64];
    int ml = snprintf(meta, sizeof meta, "dim %d\n", D);
    if (write_file(o.work, "ids16.i32", ids, sizeof ids) ||
        write_file(o.work, "check_lens.i32", check_lens, sizeof check_lens) ||
        write_file(o.work, "check_ids.i32", check_ids, sizeof(int32_t) * (size_t)check_n) ||
        write_file(o.work, "check_out.f32", check_out, sizeof(float) * (size_t)D * CHECK_TEXTS) ||
        write_file(o.work, "meta.txt", meta, (size_t)ml))
        return 1;
    fprintf(stderr, "text_bench: inputs and check outputs written to %s\n", o.work);

    if (o.serve) {
        printf("READY %s openblas-core %s\n", o.work, openblas_get_corename ? openblas_get_corename() : "none");
        fflush(stdout);
        if (serve_loop(models, dts, ndt))
            return 1;
    } else if (o.do_time) {
        for (const char *tp = o.threads; *tp;) {
            int th = atoi(tp);
            tp = strchr(tp, ',') ? strchr(tp, ',') + 1 : tp + strlen(tp);
            if (th < 1)
                continue;
            for (int d = 0; d < ndt; d++) {
                timed_t t = {.r = mm_tm_runner_new(models[d], MAX_BATCH, th)};
                if (!t.r)
                    return 1;
                char engine[32];
                snprintf(engine, sizeof engine, ndt > 1 ? "ours-%s" : "ours", dts[d]);
                for (size_t c = 0; c < NCASES; c++) {
                    t.bc = &cases[c];
                    if (bench_time_case(&o, engine, cases[c].name, th, cases[c].n, timed_run, &t))
                        return 1;
                }
                mm_tm_runner_free(t.r);
            }
        }
    }
    free(check_out);
    free(out);
    for (int d = 0; d < ndt; d++)
        mm_tm_free(models[d]);
    return 0;
}
