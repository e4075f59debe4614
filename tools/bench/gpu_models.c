/* gpu_models — BERT, Qwen3 and Qwen2-VL on a compute backend
 * (mmembed/backend.h) through the encoder interface
 * (mm_encoder_runner_new_on): every fixture vector against the Hugging Face
 * f32 reference and against our CPU f32 path, and each input alone vs in
 * one batch.
 *
 *   gpu_models [--device cuda] [--dtypes f16,bf16,tf32] [--out FILE] FIXDIR
 *
 * FIXDIR is tests/fixtures (or its copy on the GPU machine: bert/,
 * qwen3/, qwen2vl/ as in the repository; gzipped checkpoints and the Qwen
 * tokenizer are unpacked into a temporary folder, as the unit tests do).
 * Per vector one line
 *   VEC <model> <dtype> <case> cos_hf <c> cos_cpu <c> alone_vs_batch <c>
 * (also to --out), then per model and dtype
 *   CHECK <model> <dtype> worst_hf <c> worst_cpu <c> worst_batch <c> ok|FAIL
 * Exits 1 when any vector's cosine to the reference or to our CPU f32 is
 * below 0.999 (f16, bf16; tf32 too), or alone vs batched below 0.9999.
 * `--device cpu` runs the same forward on the CPU backend (a self-check of
 * this tool: cos_cpu is then exactly 1). */
#include "mmembed/backend.h"
#include "mmembed/common.h"
#include "mmembed/encoder.h"
#include "mmembed/image.h"
#include "mmembed/nn.h"
#include "mmembed/preprocess.h"

#include <json-c/json.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIN_COS 0.999     /* GPU vs HF f32 and vs our CPU f32, per vector (issue 18) */
#define MIN_BATCH 0.9999  /* alone vs batched (issue 18) */
#define MAXV 64           /* vectors per fixture */
#define MAXD 4096         /* floats per vector */

static const char *device = "cuda";
static char dtypes[64] = "f16,bf16,tf32";
static FILE *detail;
static int failed;
static const char *fix;

static double cosine(const float *a, const float *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++)
        ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return ab / (sqrt(aa * bb) + 1e-300);
}

static json_object *jget(json_object *o, const char *k)
{
    json_object *v;
    return o && json_object_object_get_ex(o, k, &v) ? v : NULL;
}

static int floats(json_object *a, float *out, int n)
{
    if (!a || !json_object_is_type(a, json_type_array) || (int)json_object_array_length(a) != n)
        return -1;
    for (int i = 0; i < n; i++)
        out[i] = (float)json_object_get_double(json_object_array_get_idx(a, i));
    return 0;
}

/* dir: a copy of FIXDIR/src with .gz files unpacked (and the Qwen
 * tokenizer when tok); the caller removes it. */
static int stage(const char *src, int tok, char *dir)
{
    char cmd[2048];
    strcpy(dir, "/tmp/gpu-models-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(cmd, sizeof cmd, "cd '%s' && for f in %s/*; do case $f in *.gz) gzip -dc $f > %s/$(basename $f .gz);; "
             "*) ln -s \"$PWD/$f\" %s/;; esac; done%s%s%s", fix, src, dir, dir, tok ? " && gzip -dc qwen3/tokenizer.json.gz > " : "",
             tok ? dir : "", tok ? "/tokenizer.json" : "");
    return system(cmd);
}

static void unstage(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) { /* best effort */
    }
}

/* One fixture: n inputs and their reference vectors. */
typedef struct {
    const char *name;
    int n, dim;
    char label[MAXV][48];
    mm_input_t in[MAXV];
    mm_segment_t seg[MAXV][8];
    int32_t *ids[MAXV];
    float *ref;        /* (n, dim) */
} fixture_t;

/* Runs f on the CPU (f32, the reference path) and on the backend in each
 * dtype; prints and checks. */
static void run(const mm_encoder_t *e, fixture_t *f)
{
    const int n = f->n, d = f->dim;
    float *cpu = calloc((size_t)n * d, sizeof(float)), *gpu = calloc((size_t)n * d, sizeof(float));
    float *one = calloc((size_t)d, sizeof(float));
    mm_enc_runner_t *r = mm_encoder_runner_new(e, 8, 4, 2);
    if (!cpu || !gpu || !one || !r || mm_encoder_encode(r, f->in, n, cpu)) {
        printf("CHECK %s cpu FAIL (the CPU f32 path did not run)\n", f->name);
        failed = 1;
        goto out;
    }
    char list[64], *save = NULL;
    snprintf(list, sizeof list, "%s", dtypes);
    for (char *dt = strtok_r(list, ",", &save); dt; dt = strtok_r(NULL, ",", &save)) {
        char err[MM_ERRLEN];
        mm_backend_t *be;
        if (mm_backend_open(device, 2, dt, &be, err, sizeof err)) {
            printf("CHECK %s %s FAIL (open %s: %s)\n", f->name, dt, device, err);
            failed = 1;
            continue;
        }
        mm_enc_runner_t *g = mm_encoder_runner_new_on(e, be, 8, 4);
        int rc = g ? mm_encoder_encode(g, f->in, n, gpu) : MM_E_NOMEM;
        double whf = 1, wcpu = 1, wb = 1;
        for (int i = 0; !rc && i < n; i++) {
            rc = mm_encoder_encode(g, &f->in[i], 1, one);
            const double chf = cosine(gpu + (size_t)i * d, f->ref + (size_t)i * d, d);
            const double ccpu = cosine(gpu + (size_t)i * d, cpu + (size_t)i * d, d);
            const double cb = cosine(gpu + (size_t)i * d, one, d);
            whf = fmin(whf, chf), wcpu = fmin(wcpu, ccpu), wb = fmin(wb, cb);
            printf("VEC %s %s %s cos_hf %.6f cos_cpu %.6f alone_vs_batch %.7f\n", f->name, dt, f->label[i], chf, ccpu,
                   cb);
            if (detail)
                fprintf(detail, "VEC %s %s %s cos_hf %.6f cos_cpu %.6f alone_vs_batch %.7f\n", f->name, dt,
                        f->label[i], chf, ccpu, cb);
        }
        const int ok = !rc && whf >= MIN_COS && wcpu >= MIN_COS && wb >= MIN_BATCH;
        printf("CHECK %s %s worst_hf %.6f worst_cpu %.6f worst_batch %.7f %s", f->name, dt, whf, wcpu, wb,
               ok ? "ok" : "FAIL");
        if (rc)
            printf(" (encode %d: %s)", rc, be->ops->error(be));
        printf("  [%s]\n", be->desc);
        failed |= !ok;
        mm_encoder_runner_free(g);
        mm_backend_close(be);
    }
out:
    mm_encoder_runner_free(r);
    free(cpu);
    free(gpu);
    free(one);
}

static void fixture_free(fixture_t *f)
{
    for (int i = 0; i < f->n; i++)
        free(f->ids[i]);
    free(f->ref);
}

/* BERT (bert-tiny, mean pooling) and Qwen3 (qwen3-tiny, last token): the
 * reference files' token ids and vectors. */
static void text_model(const char *name, const char *folder, int tok, const char *refpath, const char *field)
{
    char dir[64], err[MM_ERRLEN], path[1024];
    if (stage(folder, tok, dir)) {
        printf("CHECK %s stage FAIL\n", name);
        failed = 1;
        return;
    }
    mm_encoder_t *e = NULL;
    snprintf(path, sizeof path, "%s/%s", fix, refpath);
    json_object *ref = json_object_from_file(path);
    fixture_t *f = calloc(1, sizeof *f);
    if (!ref || !f || mm_encoder_load(dir, "f32", &e, err, sizeof err)) {
        printf("CHECK %s load FAIL (%s)\n", name, ref ? err : path);
        failed = 1;
        goto out;
    }
    f->name = name;
    f->dim = mm_encoder_info(e)->dim;
    f->ref = calloc((size_t)MAXV * f->dim, sizeof(float));
    for (int i = 0; f->ref && i < (int)json_object_array_length(ref) && f->n < MAXV; i++) {
        json_object *c = json_object_array_get_idx(ref, (size_t)i), *ids = jget(c, "ids");
        const int len = ids ? (int)json_object_array_length(ids) : 0;
        if (len < 1 || floats(jget(c, field), f->ref + (size_t)f->n * f->dim, f->dim))
            continue;
        int32_t *v = f->ids[f->n] = malloc(sizeof(int32_t) * (size_t)len);
        for (int k = 0; k < len; k++)
            v[k] = json_object_get_int(json_object_array_get_idx(ids, (size_t)k));
        f->seg[f->n][0] = (mm_segment_t){.kind = MM_SEG_TEXT, .ids = v, .n_ids = len};
        f->in[f->n] = (mm_input_t){.seg = f->seg[f->n], .n_seg = 1};
        snprintf(f->label[f->n], sizeof f->label[0], "#%d(%d)", i, len);
        f->n++;
    }
    run(e, f);
out:
    if (f)
        fixture_free(f);
    free(f);
    json_object_put(ref);
    mm_encoder_free(e);
    unstage(dir);
}

/* Qwen2-VL (qwen2vl-tiny): ref.json's cases — texts, images, text with
 * images — built as the unit test builds them (decode, smart_resize,
 * normalize, then mm_encoder_chat_input). */
static void qwen2vl(void)
{
    char dir[64], err[MM_ERRLEN], path[1024];
    if (stage("qwen2vl/qwen2vl-tiny", 1, dir)) {
        printf("CHECK qwen2vl stage FAIL\n");
        failed = 1;
        return;
    }
    mm_encoder_t *e = NULL;
    snprintf(path, sizeof path, "%s/qwen2vl/ref.json", fix);
    json_object *ref = json_object_from_file(path);
    fixture_t *f = calloc(1, sizeof *f);
    float *chw[MAXV * 3] = {0};
    int nchw = 0;
    if (!ref || !f || mm_encoder_load(dir, "f32", &e, err, sizeof err)) {
        printf("CHECK qwen2vl load FAIL (%s)\n", ref ? err : path);
        failed = 1;
        goto out;
    }
    const mm_preproc_t *pre = mm_encoder_preproc(e);
    f->name = "qwen2vl";
    f->dim = mm_encoder_info(e)->dim;
    f->ref = calloc((size_t)MAXV * f->dim, sizeof(float));
    json_object *cases = jget(ref, "cases");
    for (int i = 0; f->ref && i < (int)json_object_array_length(cases) && f->n < MAXV; i++) {
        json_object *c = json_object_array_get_idx(cases, (size_t)i), *ci = jget(c, "images");
        const char *text = json_object_get_string(jget(c, "text")), *instr = json_object_get_string(jget(c, "instruction"));
        const int ni = (int)json_object_array_length(ci);
        if (ni > 3 || floats(jget(c, "vec"), f->ref + (size_t)f->n * f->dim, f->dim))
            continue;
        int hw[3][2], vt = 0, bad = 0;
        float *px[3] = {0};
        for (int k = 0; k < ni; k++) {
            snprintf(path, sizeof path, "%s/qwen2vl/images/%s", fix, json_object_get_string(json_object_array_get_idx(ci, (size_t)k)));
            FILE *fp = fopen(path, "rb");
            unsigned char *buf = NULL;
            long len = 0;
            if (fp && !fseek(fp, 0, SEEK_END) && (len = ftell(fp)) > 0 && !fseek(fp, 0, SEEK_SET) &&
                (buf = malloc((size_t)len)) && fread(buf, 1, (size_t)len, fp) != (size_t)len)
                len = 0;
            if (fp)
                fclose(fp);
            mm_image_t img = {0};
            if (!buf || len <= 0 || mm_image_decode(buf, (size_t)len, mm_preproc_min_edge(pre), 0, &img, err, sizeof err) ||
                mm_preproc_out_dims(pre, img.src_w, img.src_h, &hw[k][0], &hw[k][1])) {
                bad = 1;
            } else {
                px[k] = chw[nchw++] = malloc(sizeof(float) * 3 * hw[k][0] * hw[k][1]);
                bad = !px[k] || mm_preproc_run(pre, &img, px[k]) != MM_OK;
                vt += hw[k][0] / 28 * (hw[k][1] / 28);
            }
            free(buf);
            mm_image_free(&img);
            if (bad)
                break;
        }
        int32_t *ids = f->ids[f->n] = malloc(sizeof(int32_t) * 4096);
        int nseg = 0;
        if (bad || !ids ||
            mm_encoder_chat_input(e, instr, strlen(instr), text, strlen(text), ni, vt, 1, ids, 4096, f->seg[f->n],
                                  &nseg, err, sizeof err)) {
            printf("CHECK qwen2vl case %d FAIL (input: %s)\n", i, err);
            failed = 1;
            free(ids);
            f->ids[f->n] = NULL;
            continue;
        }
        for (int s = 0; s < nseg; s++)
            if (f->seg[f->n][s].kind == MM_SEG_IMAGE) {
                const int k = s / 2;
                f->seg[f->n][s] = (mm_segment_t){.kind = MM_SEG_IMAGE, .pixels = px[k], .channels = 3,
                                                 .height = hw[k][0], .width = hw[k][1]};
            }
        f->in[f->n] = (mm_input_t){.seg = f->seg[f->n], .n_seg = nseg};
        snprintf(f->label[f->n], sizeof f->label[0], "%.47s", json_object_get_string(jget(c, "name")));
        f->n++;
    }
    run(e, f);
out:
    for (int i = 0; i < nchw; i++)
        free(chw[i]);
    if (f)
        fixture_free(f);
    free(f);
    json_object_put(ref);
    mm_encoder_free(e);
    unstage(dir);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc)
            device = argv[++i];
        else if (!strcmp(argv[i], "--dtypes") && i + 1 < argc)
            snprintf(dtypes, sizeof dtypes, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            detail = fopen(argv[++i], "w");
        else if (argv[i][0] != '-' && !fix)
            fix = argv[i];
        else {
            fprintf(stderr, "usage: gpu_models [--device cuda] [--dtypes f16,bf16,tf32] [--out FILE] FIXDIR\n");
            return 2;
        }
    }
    if (!fix) {
        fprintf(stderr, "usage: gpu_models [--device cuda] [--dtypes f16,bf16,tf32] [--out FILE] FIXDIR\n");
        return 2;
    }
    char abs[1024];
    if (fix[0] != '/' && getcwd(abs, sizeof abs)) {   /* stage() changes into FIXDIR */
        static char full[2048];
        snprintf(full, sizeof full, "%s/%s", abs, fix);
        fix = full;
    }
    mm_nn_cpu();
    text_model("bert", "bert/bert-tiny", 0, "bert/bert_ref.json", "mean");
    text_model("qwen3", "qwen3/qwen3-tiny", 1, "qwen3/qwen3_ref.json", "last");
    qwen2vl();
    if (detail)
        fclose(detail);
    printf("gpu_models: %s\n", failed ? "FAIL" : "all vectors within bounds");
    return failed;
}
