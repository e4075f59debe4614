/* qwen2vl_bench — times our Qwen2-VL engine (src/model/qwen2vl.c, loaded
 * through the registry, mmembed/encoder.h) on the Ops-MM-embedding-v1-2B
 * shape that tools/mkqwen2vl.c writes with synthetic weights: ms per
 * 32-token text, per image at 256 and at 1280 visual tokens, per thread
 * count and dense-layer dtype, and the shared pack size per dtype
 * (issue 16, "Numbers to report").
 *
 *   usage: qwen2vl_bench MODEL_DIR [--model2 DIR2] [--pack-dir DIR]
 *                        [--threads 1,2] [--dtypes f32,bf16,q8,q4]
 *                        [--cases text32,image256,image1280]
 *                        [--min-runs N] [--max-runs N] [--secs S]
 *          qwen2vl_bench MODEL_DIR --serve [--dtypes bf16,q8]
 *
 * Build: make build/bench/qwen2vl_bench (the Makefile's CFLAGS, libmmembed.a).
 *
 * Full shape: MODEL_DIR written by `mkqwen2vl DIR TOKENIZER` (28 + 32
 * layers, ~4.4 GB bf16); the times printed are measured.
 * Cut down (the full shape is slow on a small machine: a 1280-token image is
 * ~11 TFLOP): MODEL_DIR and --model2 DIR2 written with two different
 * --layers (e.g. 1 and 2; 3 and 4 for q4, which keeps the first two decoder
 * layers q8: past them each layer added is a q4 one). Each run of a case
 * alternates between the two
 * models (medians of each), and the full shape is extrapolated linearly
 * in the layer counts, the decoder and the vision tower apart:
 *   text   t(L) = a + b L                  (decoder layers L)
 *   image  t = llm(T, L) + vit(D)          llm(T, L): the same decoder on a
 *                                          text of the image input's length T
 *                                          (timed too, case llm<T>), vit = the rest
 * each fitted through the two points and evaluated at _full_layers of
 * config.json (28, 32). Pack sizes: as loaded (mm_enc_info_t.weight_bytes;
 * with --model2 carried to the full depth by the growth per weight between
 * the two), and mm_encoder_pack_bytes's estimate from the checkpoint headers
 * of --pack-dir (default MODEL_DIR): point it at a full-shape folder,
 * `mkqwen2vl DIR TOKENIZER --header-only` is enough (sparse file). The
 * estimate counts embed_tokens and the 5-D patch convolution at 4 bytes a
 * weight; the loaded pack keeps embed_tokens in bf16 (see the table).
 *
 * Inputs: a text is 32 random ids below 151643 (ids only, no chat prompt);
 * an image is one input built by mm_encoder_chat_input (no instruction: the
 * default system prompt, then the image, no text), pixels uniform in
 * [-2, 2), 448 x 448 (32 x 32 patches, 256 tokens) or 896 x 1120 (64 x 80
 * patches, 1280 tokens). One warm-up per case and model, then at least
 * --min-runs (3) runs and until --secs (0) or --max-runs (50).
 *
 * Prints "RESULT <model-layers> <dtype> <case> <threads> <median ms> <runs> <min ms>"
 * per measurement, "FULL <dtype> <case> <threads> <ms>" per extrapolated
 * value (or measured one, on a full-depth MODEL_DIR), then a markdown table.
 *
 * Case text1024 (not in the default --cases): a 1,024-token text, i.e. one
 * language-model forward over 1,024 tokens (issue 17's thread scaling).
 *
 * --serve: for tools/bench/cpu_bench.py, which alternates our runs with
 * PyTorch's and ONNX Runtime's. Loads MODEL_DIR once per --dtypes entry,
 * prints "READY qwen2vl_bench L<layers>/V<blocks> CASE:T ..." (T: tokens
 * the decoder reads for each case; cases text32, text1024, image256,
 * image1280, and llm-image256 / llm-image1280: a text as long as that
 * image's input, the decoder's share of it), then answers stdin lines
 * "run CASE THREADS K [DTYPE]" with "TIMES CASE THREADS w1/c1 .. wK/cK"
 * (wall ms / process CPU ms per run; one untimed warm-up whenever the
 * runner is new or the case has not run on it yet), "vec CASE DTYPE" with
 * "VEC dim v1 .. vdim" (the output vector, one thread, for cross-checks),
 * "quit" or EOF to stop: the protocol of clip_bench.c. Texts are the first
 * len ids of one xorshift64 stream (seed below, each id % 151643), so a
 * peer can rebuild them. */
#include "mmembed/common.h"
#include "mmembed/encoder.h"

#include <json-c/json.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_NAME "qwen2vl_bench"
#include "bench_util.h"

/* the Qwen2-VL-2B shape (tools/mkqwen2vl.c), for the pack extrapolation */
enum { HID = 1536, KV_DIM = 256, FFN = 8960, V_DIM = 1280 };

enum { MAXM = 2, NCASE = 4, ID_LIMIT = 151643, MAX_T = 2048, MAX_RUNS = 1000 };

typedef struct {
    const char *name;
    int vt, h, w; /* vt 0: text */
    int len;      /* text: tokens */
} qcase_t;

static const qcase_t cases[NCASE] = {{"text32", 0, 0, 0, 32},
                                     {"image256", 256, 448, 448, 0},
                                     {"image1280", 1280, 896, 1120, 0},
                                     {"text1024", 0, 0, 0, 1024}};

typedef struct {
    const char *dir;
    int layers, vis, full_layers, full_vis;
    mm_encoder_t *e;
    mm_enc_runner_t *r;
} qmodel_t;

static uint64_t rng = 0x452821e638d01377ull;

static int read_layers(qmodel_t *m)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", m->dir);
    json_object *c = json_object_from_file(path), *v, *x;
    if (!c) {
        fprintf(stderr, BENCH_NAME ": cannot read %s\n", path);
        return -1;
    }
    m->layers = json_object_object_get_ex(c, "num_hidden_layers", &v) ? json_object_get_int(v) : 0;
    m->vis = json_object_object_get_ex(c, "vision_config", &v) && json_object_object_get_ex(v, "depth", &x)
                 ? json_object_get_int(x) : 0;
    m->full_layers = m->layers;
    m->full_vis = m->vis;
    if (json_object_object_get_ex(c, "_full_layers", &v)) {
        if (json_object_object_get_ex(v, "text", &x))
            m->full_layers = json_object_get_int(x);
        if (json_object_object_get_ex(v, "vision", &x))
            m->full_vis = json_object_get_int(x);
    }
    json_object_put(c);
    return 0;
}

/* one model's inputs for every case */
typedef struct {
    mm_input_t in[NCASE];
    mm_segment_t seg[NCASE][3];
    int32_t ids[NCASE][256];
    int T[NCASE];                 /* sequence length the decoder reads */
    mm_input_t llm[NCASE];        /* a text of length T[c] (images only) */
    mm_segment_t llm_seg[NCASE];
} inputs_t;

static int32_t text_ids[MAX_T];
static float *pixels[NCASE];

static int make_inputs(const mm_encoder_t *e, inputs_t *p)
{
    char err[256];
    for (int c = 0; c < NCASE; c++) {
        const qcase_t *q = &cases[c];
        if (!q->vt) {
            p->seg[c][0] = (mm_segment_t){.kind = MM_SEG_TEXT, .ids = text_ids, .n_ids = q->len};
            p->in[c] = (mm_input_t){p->seg[c], 1};
            p->T[c] = q->len;
            continue;
        }
        int nseg = 0;
        if (mm_encoder_chat_input(e, NULL, 0, NULL, 0, 1, q->vt, 0, p->ids[c], 256, p->seg[c], &nseg, err,
                                  sizeof err)) {
            fprintf(stderr, BENCH_NAME ": chat input: %s\n", err);
            return -1;
        }
        p->T[c] = q->vt;
        for (int s = 0; s < nseg; s++) {
            if (p->seg[c][s].kind == MM_SEG_IMAGE)
                p->seg[c][s] = (mm_segment_t){.kind = MM_SEG_IMAGE, .pixels = pixels[c], .channels = 3,
                                              .height = q->h, .width = q->w};
            else
                p->T[c] += p->seg[c][s].n_ids;
        }
        p->in[c] = (mm_input_t){p->seg[c], nseg};
        p->llm_seg[c] = (mm_segment_t){.kind = MM_SEG_TEXT, .ids = text_ids, .n_ids = p->T[c]};
        p->llm[c] = (mm_input_t){&p->llm_seg[c], 1};
    }
    return 0;
}

static float out[4096];
static double last_cpu_ms;

static double run_once(mm_enc_runner_t *r, const mm_input_t *in)
{
    double ca = cpu_now(), a = now();
    int rc = mm_encoder_encode(r, in, 1, out);
    double b = now();
    last_cpu_ms = (cpu_now() - ca) * 1e3;
    if (rc) {
        fprintf(stderr, BENCH_NAME ": encode failed: %d\n", rc);
        return -1;
    }
    return (b - a) * 1e3;
}

typedef struct {
    int min_runs, max_runs;
    double secs;
} topts_t;

/* times in[m] on models[m] for every m, alternating run by run; med[m] gets
 * the median ms. Prints one RESULT line per model. */
static int time_alt(const topts_t *o, qmodel_t *ms, int nm, const mm_input_t *const *in, const char *dt,
                    const char *name, int th, double *med)
{
    static double t[MAXM][MAX_RUNS];
    for (int m = 0; m < nm; m++)
        if (run_once(ms[m].r, in[m]) < 0) /* warm-up */
            return -1;
    int runs = 0;
    double start = now();
    while (runs < o->max_runs && runs < MAX_RUNS) {
        for (int m = 0; m < nm; m++)
            if ((t[m][runs] = run_once(ms[m].r, in[m])) < 0)
                return -1;
        runs++;
        if (runs >= o->min_runs && now() - start >= o->secs)
            break;
    }
    for (int m = 0; m < nm; m++) {
        med[m] = median(t[m], runs);
        printf("RESULT L%d/V%d %s %s %d %.1f %d %.1f\n", ms[m].layers, ms[m].vis, dt, name, th, med[m], runs,
               t[m][0]);
    }
    fflush(stdout);
    return 0;
}

/* the inputs every case reads: random ids, uniform pixels; 0 or -1 */
static int make_data(void)
{
    for (int i = 0; i < MAX_T; i++)
        text_ids[i] = (int32_t)(bench_u32(&rng) % ID_LIMIT);
    for (int c = 0; c < NCASE; c++) {
        if (!cases[c].vt)
            continue;
        size_t n = (size_t)3 * cases[c].h * cases[c].w;
        if (!(pixels[c] = malloc(n * sizeof(float))))
            return -1;
        for (size_t i = 0; i < n; i++)
            pixels[c][i] = (float)(bench_u32(&rng) >> 8) * (4.0f / 16777216.0f) - 2.0f;
    }
    return 0;
}

/* --serve (see the header): every case plus llm-<image case> */
enum { NSERVE = NCASE + 2 };

static int serve(const char *dir, const char *dtypes)
{
    qmodel_t m = {.dir = dir};
    if (read_layers(&m) || make_data())
        return 1;
    const char *dts[MM_DT_COUNT];
    mm_encoder_t *es[MM_DT_COUNT];
    int ndt = 0;
    char dbuf[64], err[MM_ERRLEN];
    snprintf(dbuf, sizeof dbuf, "%s", dtypes);
    for (char *save = NULL, *t = strtok_r(dbuf, ",", &save); t && ndt < MM_DT_COUNT; t = strtok_r(NULL, ",", &save))
        dts[ndt++] = t;
    if (!ndt)
        return 2;
    for (int d = 0; d < ndt; d++) {
        double t0 = now();
        if (mm_encoder_load(dir, dts[d], &es[d], err, sizeof err)) {
            fprintf(stderr, BENCH_NAME ": %s: %s\n", dir, err);
            return 1;
        }
        const mm_enc_info_t *info = mm_encoder_info(es[d]);
        fprintf(stderr, BENCH_NAME ": %s (%s, runs %s: %s) loaded in %.0f ms, pack %.1f MB\n", dir, dts[d],
                info->compute, mm_encoder_dtype_reason(es[d]), (now() - t0) * 1e3, info->weight_bytes / 1e6);
        if (strcmp(info->compute, dts[d]))
            fprintf(stderr, BENCH_NAME ": WARNING: asked for %s, runs %s\n", dts[d], info->compute);
    }
    static inputs_t inp;
    if (make_inputs(es[0], &inp))
        return 1;
    const char *names[NSERVE];
    const mm_input_t *ins[NSERVE];
    int T[NSERVE], ns = 0;
    static char lnames[NCASE][32];
    for (int c = 0; c < NCASE; c++) {
        names[ns] = cases[c].name;
        ins[ns] = &inp.in[c];
        T[ns++] = inp.T[c];
    }
    for (int c = 0; c < NCASE && ns < NSERVE; c++) {
        if (!cases[c].vt)
            continue;
        snprintf(lnames[c], sizeof lnames[c], "llm-%s", cases[c].name);
        names[ns] = lnames[c];
        ins[ns] = &inp.llm[c];
        T[ns++] = inp.T[c];
    }
    printf("READY " BENCH_NAME " L%d/V%d", m.layers, m.vis);
    for (int i = 0; i < ns; i++)
        printf(" %s:%d", names[i], T[i]);
    printf("\n");
    fflush(stdout);
    mm_enc_runner_t *r[MM_DT_COUNT] = {0};
    int cur = 0, warmed[MM_DT_COUNT][NSERVE] = {{0}}, rc = 0;
    char line[256];
    while (!rc && fgets(line, sizeof line, stdin)) {
        int th, k, c, d;
        if (!strncmp(line, "quit", 4))
            break;
        if (!strncmp(line, "vec ", 4)) { /* "vec CASE DTYPE" -> "VEC dim v1 .. vdim" (one thread) */
            char req[128], name[64], dt[16] = "";
            snprintf(name, sizeof name, "?");
            sscanf(line, "vec %63s %15s", name, dt);
            snprintf(req, sizeof req, "run %s 1 1 %s", name, dt[0] ? dt : dts[0]);
            if (bench_request(req, names, ns, dts, ndt, &c, &th, &k, &d))
                continue;
            mm_enc_runner_t *r1 = mm_encoder_runner_new(es[d], 1, 1, 1);
            const int dim = mm_encoder_info(es[d])->dim;
            if (!r1 || dim > (int)(sizeof out / sizeof out[0]) || run_once(r1, ins[c]) < 0) {
                fprintf(stderr, BENCH_NAME ": vec %s failed\n", names[c]);
                rc = 1;
            } else {
                printf("VEC %d", dim);
                for (int i = 0; i < dim; i++)
                    printf(" %.6g", out[i]);
                printf("\n");
                fflush(stdout);
            }
            mm_encoder_runner_free(r1);
            continue;
        }
        if (bench_request(line, names, ns, dts, ndt, &c, &th, &k, &d))
            continue;
        if (th != cur) {
            for (int i = 0; i < ndt; i++) {
                mm_encoder_runner_free(r[i]);
                r[i] = NULL;
            }
            cur = th;
            memset(warmed, 0, sizeof warmed);
        }
        if (!r[d] && !(r[d] = mm_encoder_runner_new(es[d], 1, 1, th))) {
            fprintf(stderr, BENCH_NAME ": runner: out of memory\n");
            rc = 1;
            break;
        }
        if (!warmed[d][c]) {
            if (run_once(r[d], ins[c]) < 0) {
                rc = 1;
                break;
            }
            warmed[d][c] = 1;
        }
        printf("TIMES %s %d", names[c], th);
        for (int i = 0; i < k && !rc; i++) {
            double ms = run_once(r[d], ins[c]);
            if (ms < 0)
                rc = 1;
            else
                printf(" %.3f/%.3f", ms, last_cpu_ms);
        }
        printf("\n");
        fflush(stdout);
    }
    for (int d = 0; d < ndt; d++) {
        mm_encoder_runner_free(r[d]);
        mm_encoder_free(es[d]);
    }
    for (int c = 0; c < NCASE; c++)
        free(pixels[c]);
    return rc;
}

/* the line through (x0, y0), (x1, y1) at x */
static double lin(double x0, double y0, double x1, double y1, double x)
{
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: " BENCH_NAME " MODEL_DIR [--model2 DIR2] [--pack-dir DIR] [--threads 1,2] "
                        "[--dtypes f32,bf16,q8,q4] [--cases text32,image256,image1280,text1024] [--min-runs N] "
                        "[--max-runs N] [--secs S] [--serve]\n");
        return 2;
    }
    qmodel_t ms[MAXM] = {{.dir = argv[1]}};
    int nm = 1;
    const char *threads = "1,2", *dtypes = "f32,bf16,q8", *pack_dir = argv[1], *case_list = "text32,image256,image1280";
    topts_t o = {3, 50, 0};
    int serve_mode = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--serve"))
            serve_mode = 1;
        else if (!strcmp(argv[i], "--model2") && i + 1 < argc)
            ms[1].dir = argv[++i], nm = 2;
        else if (!strcmp(argv[i], "--pack-dir") && i + 1 < argc)
            pack_dir = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = argv[++i];
        else if (!strcmp(argv[i], "--dtypes") && i + 1 < argc)
            dtypes = argv[++i];
        else if (!strcmp(argv[i], "--cases") && i + 1 < argc)
            case_list = argv[++i];
        else if (!strcmp(argv[i], "--min-runs") && i + 1 < argc)
            o.min_runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-runs") && i + 1 < argc)
            o.max_runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--secs") && i + 1 < argc)
            o.secs = atof(argv[++i]);
        else {
            fprintf(stderr, BENCH_NAME ": unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (serve_mode) {
        if (nm != 1) {
            fprintf(stderr, BENCH_NAME ": --serve takes one model\n");
            return 2;
        }
        return serve(argv[1], dtypes);
    }
    nm = nm > MAXM ? MAXM : nm;
    if (o.min_runs < 1)
        o.min_runs = 1;
    if (o.max_runs < o.min_runs)
        o.max_runs = o.min_runs;
    for (int m = 0; m < nm; m++)
        if (read_layers(&ms[m]))
            return 1;
    const int extrap = nm == 2;
    if (extrap && (ms[0].layers == ms[1].layers || ms[0].vis == ms[1].vis)) {
        fprintf(stderr, BENCH_NAME ": the two models need different decoder layers and vision blocks\n");
        return 2;
    }
    if (!extrap && (ms[0].layers != ms[0].full_layers || ms[0].vis != ms[0].full_vis))
        fprintf(stderr, BENCH_NAME ": %s has %d/%d of %d/%d layers: times are for the cut-down model "
                        "(give --model2 to extrapolate)\n", ms[0].dir, ms[0].layers, ms[0].vis, ms[0].full_layers,
                ms[0].full_vis);
    int want[NCASE];
    for (int c = 0; c < NCASE; c++)
        want[c] = strstr(case_list, cases[c].name) != NULL;

    /* pack size per dtype, from the checkpoint headers */
    char err[MM_ERRLEN];
    size_t bytes[MM_DT_COUNT];
    if (mm_encoder_pack_bytes(pack_dir, bytes, err, sizeof err)) {
        fprintf(stderr, BENCH_NAME ": %s\n", err);
        return 1;
    }
    for (int d = 0; d < MM_DT_COUNT; d++)
        printf("PACK %s %s %.1f MB\n", pack_dir, mm_dtype_name((mm_dtype_t)d), bytes[d] / 1e6);

    /* inputs */
    if (make_data())
        return 1;

    /* results[dtype][threads index][case] */
    static double full[MM_DT_COUNT][8][NCASE];
    int thl[8], nth = 0;
    for (const char *tp = threads; *tp && nth < 8;) {
        int th = atoi(tp);
        tp = strchr(tp, ',') ? strchr(tp, ',') + 1 : tp + strlen(tp);
        if (th >= 1)
            thl[nth++] = th;
    }
    const char *dts[MM_DT_COUNT];
    int ndt = 0;
    char dbuf[64];
    snprintf(dbuf, sizeof dbuf, "%s", dtypes);
    for (char *save = NULL, *t = strtok_r(dbuf, ",", &save); t && ndt < MM_DT_COUNT; t = strtok_r(NULL, ",", &save))
        dts[ndt++] = t;
    static inputs_t inp[MAXM];
    size_t loaded[MM_DT_COUNT][MAXM];
    double loaded_full[MM_DT_COUNT];
    for (int d = 0; d < ndt; d++) {
        for (int m = 0; m < nm; m++) {
            double t0 = now();
            if (mm_encoder_load(ms[m].dir, dts[d], &ms[m].e, err, sizeof err)) {
                fprintf(stderr, BENCH_NAME ": %s: %s\n", ms[m].dir, err);
                return 1;
            }
            const mm_enc_info_t *info = mm_encoder_info(ms[m].e);
            loaded[d][m] = info->weight_bytes;
            fprintf(stderr, BENCH_NAME ": %s (%s, runs %s: %s) loaded in %.0f ms, pack %.1f MB\n", ms[m].dir, dts[d],
                    info->compute, mm_encoder_dtype_reason(ms[m].e), (now() - t0) * 1e3, info->weight_bytes / 1e6);
            if (strcmp(info->compute, dts[d]))
                fprintf(stderr, BENCH_NAME ": WARNING: asked for %s, runs %s\n", dts[d], info->compute);
            if (make_inputs(ms[m].e, &inp[m]))
                return 1;
        }
        if (extrap) {
            /* the pack's growth per weight of a decoder layer / vision block
             * (matrices; biases and norms are a rounding error), carried to
             * the full depth */
            const double pt = 2.0 * HID * HID + 2.0 * KV_DIM * HID + 3.0 * FFN * HID, pv = 12.0 * V_DIM * V_DIM;
            const double per = ((double)loaded[d][1] - (double)loaded[d][0]) /
                               ((ms[1].layers - ms[0].layers) * pt + (ms[1].vis - ms[0].vis) * pv);
            loaded_full[d] = (double)loaded[d][0] + per * ((ms[0].full_layers - ms[0].layers) * pt +
                                                           (ms[0].full_vis - ms[0].vis) * pv);
            printf("PACKLOADED %s L%d/V%d %.1f MB, L%d/V%d %.1f MB, full depth %.1f MB (%.3f bytes per weight)\n",
                   dts[d], ms[0].layers, ms[0].vis, loaded[d][0] / 1e6, ms[1].layers, ms[1].vis, loaded[d][1] / 1e6,
                   loaded_full[d] / 1e6, per);
        } else {
            loaded_full[d] = (double)loaded[d][0];
        }
        for (int ti = 0; ti < nth; ti++) {
            const int th = thl[ti];
            for (int m = 0; m < nm; m++)
                if (!(ms[m].r = mm_encoder_runner_new(ms[m].e, 1, 1, th))) {
                    fprintf(stderr, BENCH_NAME ": runner: out of memory\n");
                    return 1;
                }
            for (int c = 0; c < NCASE; c++) {
                if (!want[c])
                    continue;
                const mm_input_t *in[MAXM] = {&inp[0].in[c], &inp[1].in[c]};
                double med[MAXM], lmed[MAXM];
                if (time_alt(&o, ms, nm, in, dts[d], cases[c].name, th, med))
                    return 1;
                if (!extrap) {
                    full[d][ti][c] = med[0];
                    if (ms[0].layers == ms[0].full_layers && ms[0].vis == ms[0].full_vis)
                        printf("FULL %s %s %d %.1f\n", dts[d], cases[c].name, th, med[0]); /* measured */
                    continue;
                }
                const double Lf = ms[0].full_layers, Vf = ms[0].full_vis;
                if (!cases[c].vt) {
                    full[d][ti][c] = lin(ms[0].layers, med[0], ms[1].layers, med[1], Lf);
                } else {
                    char lname[32];
                    snprintf(lname, sizeof lname, "llm%d", inp[0].T[c]);
                    const mm_input_t *lin_in[MAXM] = {&inp[0].llm[c], &inp[1].llm[c]};
                    if (time_alt(&o, ms, nm, lin_in, dts[d], lname, th, lmed))
                        return 1;
                    double llm = lin(ms[0].layers, lmed[0], ms[1].layers, lmed[1], Lf);
                    double vit = lin(ms[0].vis, med[0] - lmed[0], ms[1].vis, med[1] - lmed[1], Vf);
                    full[d][ti][c] = llm + vit;
                    printf("FULLPART %s %s %d decoder %.1f vision %.1f\n", dts[d], cases[c].name, th, llm, vit);
                }
                printf("FULL %s %s %d %.1f\n", dts[d], cases[c].name, th, full[d][ti][c]);
                fflush(stdout);
            }
            for (int m = 0; m < nm; m++) {
                mm_encoder_runner_free(ms[m].r);
                ms[m].r = NULL;
            }
        }
        for (int m = 0; m < nm; m++) {
            mm_encoder_free(ms[m].e);
            ms[m].e = NULL;
        }
    }

    printf("\n%s ms per input (%s)\n\n| dtype | threads |", extrap ? "Extrapolated full-shape" : "Measured",
           extrap ? "two cut-down models, medians" : "medians");
    for (int c = 0; c < NCASE; c++)
        if (want[c])
            printf(" %s |", cases[c].name);
    printf(" pack MB (loaded%s) | pack MB (header estimate) |\n|---|---|", extrap ? ", extrapolated" : "");
    for (int c = 0; c < NCASE; c++)
        if (want[c])
            printf("---|");
    printf("---|---|\n");
    for (int d = 0; d < ndt; d++)
        for (int ti = 0; ti < nth; ti++) {
            mm_dtype_t dt = MM_DT_F32;
            mm_dtype_parse(dts[d], &dt);
            printf("| %s | %d |", dts[d], thl[ti]);
            for (int c = 0; c < NCASE; c++)
                if (want[c])
                    printf(" %.0f |", full[d][ti][c]);
            printf(" %.0f | %.0f |\n", loaded_full[d] / 1e6, bytes[dt] / 1e6);
        }
    for (int c = 0; c < NCASE; c++)
        free(pixels[c]);
    return 0;
}
