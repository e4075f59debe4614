/* Unit tests for the Qwen2-VL embedder (model/qwen2vl.c through the
 * encoder interface; media/preprocess.c's Qwen2-VL mode) against Hugging
 * Face transformers references (tests/fixtures/qwen2vl, made by
 * tools/gen_qwen2vl_fixtures.py): image grids and pixel values, prompt ids,
 * and Ops-MM-embedding-v1 vectors for text, images, text + image, several
 * images and another instruction, in f32, bf16 and q8, from checkpoints
 * with the Hub's key names and with transformers 5's. Run from the
 * repository root. */
#include "mmembed/common.h"
#include "mmembed/encoder.h"
#include "mmembed/image.h"
#include "mmembed/nn.h"
#include "mmembed/preprocess.h"
#include "mmembed/qwen2vl.h"
#include "check.h"

#include <json-c/json.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FX "tests/fixtures/qwen2vl"
#define TOKGZ "tests/fixtures/qwen3/tokenizer.json.gz"

/* Cosine to HF's f32 vectors (issue 16): f32 differs from PyTorch only in
 * summation order; bf16 / q8 round the dense layers' operands. */
#define MIN_COS_F32 0.9999
#define MIN_COS_BF16 0.999
#define MIN_COS_Q8 0.995
/* q4 (issue 20's group-wise 4-bit weights): issue 20's 0.99, measured
 * 1 - 2.1e-3 (the vision tower in 4 bits, the language model's 2 blocks
 * kept q8 by mm_encoder_text_dtype), 1 - 6.1e-3 with its block 1 in 4
 * bits too (MMEMBED_Q4_KEEP=1), 1 - 1.6e-2 when every matrix is 4-bit. */
#define MIN_COS_Q4 0.99
/* Pixel values: torchvision's uint8 resize is reproduced bit-exactly, so
 * only the f16 storage of the reference (2^-11 relative) separates them. */
#define MAX_PIX_DIFF 4e-3

static const char *jstr(json_object *o, const char *k)
{
    json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

static json_object *jget(json_object *o, const char *k)
{
    json_object *v;
    return json_object_object_get_ex(o, k, &v) ? v : NULL;
}

/* A model folder with the fixture's files, gunzipped where stored so (the
 * checkpoints: their embedding tables are zero but for the rows the cases
 * read, 9.9 MB -> 160 KB), and the tokenizer the Qwen3 fixture keeps. */
static int stage(const char *src, char *dir)
{
    char cmd[1024];
    strcpy(dir, "/tmp/mmembed-q2vl-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    /* $PWD inside the shell: paths relative to the repository root */
    snprintf(cmd, sizeof cmd, "for f in " FX "/%s/*; do case $f in *.gz) gzip -dc $f > %s/$(basename $f .gz);; "
             "*) ln -s \"$PWD/$f\" %s/;; esac; done && gzip -dc " TOKGZ " > %s/tokenizer.json", src, dir, dir, dir);
    return system(cmd);
}

static void unstage(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) { /* best effort */
    }
}

/* ===================================================== images */

typedef struct {
    char name[64];
    int ok;             /* HF accepted it */
    int grid[3];
    int h, w;           /* our resized size */
    float *chw;         /* (3, h, w) ours */
} image_t;

static image_t imgs[32];
static int n_imgs;

static image_t *find_image(const char *name)
{
    for (int i = 0; i < n_imgs; i++)
        if (!strcmp(imgs[i].name, name))
            return &imgs[i];
    return NULL;
}

static void test_preprocess(json_object *ref, const mm_preproc_t *pre)
{
    size_t plen;
    unsigned char *pix16 = slurp(FX "/pixels.f16", &plen);
    CHECK(pix16 != NULL, "read pixels.f16");
    json_object *ims = jget(ref, "images");
    int grids_ok = 0, grids = 0, refused_ok = 0;
    double worst = 0, worst_sum = 0;
    json_object_object_foreach(ims, name, o)
    {
        image_t *im = &imgs[n_imgs++];
        snprintf(im->name, sizeof im->name, "%s", name);
        char path[256], err[MM_ERRLEN];
        snprintf(path, sizeof path, FX "/images/%s", name);
        size_t len;
        unsigned char *buf = slurp(path, &len);
        mm_image_t img = {0};
        int rc = buf ? mm_image_decode(buf, len, mm_preproc_min_edge(pre), 0, &img, err, sizeof err) : MM_E_NOTFOUND;
        free(buf);
        CHECK(rc == MM_OK, "%s: decode: %s", name, err);
        if (rc)
            continue;
        rc = mm_preproc_out_dims(pre, img.src_w, img.src_h, &im->h, &im->w);
        json_object *g = jget(o, "grid_thw");
        if (!g) {   /* HF refused it (aspect over 200) */
            CHECK(rc == MM_E_UNPROCESSABLE, "%s: HF refuses (%s), we say %d", name, jstr(o, "error"), rc);
            refused_ok += rc == MM_E_UNPROCESSABLE;
            mm_image_free(&img);
            continue;
        }
        im->ok = 1;
        for (int k = 0; k < 3; k++)
            im->grid[k] = json_object_get_int(json_object_array_get_idx(g, k));
        grids++;
        const int same = rc == MM_OK && im->grid[0] == 1 && im->grid[1] == im->h / 14 && im->grid[2] == im->w / 14;
        grids_ok += same;
        CHECK(same, "%s (%dx%d): grid (%d, %d, %d) from HF, ours %dx%d pixels (rc %d)", name, img.src_w, img.src_h,
              im->grid[0], im->grid[1], im->grid[2], im->h, im->w, rc);
        if (!same) {
            mm_image_free(&img);
            continue;
        }
        im->chw = malloc(sizeof(float) * 3 * im->h * im->w);
        CHECK(mm_preproc_run(pre, &img, im->chw) == MM_OK, "%s: preprocess", name);
        mm_image_free(&img);
        /* HF's pixel_values: rows of 1176 in merge-block order */
        const int rows = im->grid[1] * im->grid[2];
        float *pv = malloc(sizeof(float) * rows * 1176);
        CHECK(mm_qwen2vl_patchify(im->chw, 3, im->h, im->w, 14, 2, 2, pv) == rows, "%s: patchify", name);
        double sum = 0, asum = 0, wsum = 0, maxd = 0;
        const int off = json_object_get_int(jget(o, "offset"));
        for (size_t i = 0; i < (size_t)rows * 1176; i++) {
            const double v = pv[i];
            sum += v;
            asum += fabs(v);
            wsum += v * ((double)(i % 1009 + 1) / 1009.0);
            if (pix16 && ((size_t)off * 1176 + i + 1) * 2 <= plen) {
                const _Float16 *h = (const _Float16 *)pix16;
                maxd = fmax(maxd, fabs(v - (double)h[(size_t)off * 1176 + i]));
            }
        }
        const double rs = json_object_get_double(jget(o, "sum")), ra = json_object_get_double(jget(o, "abs_sum")),
                     rw = json_object_get_double(jget(o, "wsum"));
        const double ds = fmax(fabs(sum - rs), fmax(fabs(asum - ra), fabs(wsum - rw))) / fmax(1.0, ra);
        worst = fmax(worst, maxd);
        worst_sum = fmax(worst_sum, ds);
        CHECK(maxd <= MAX_PIX_DIFF, "%s: pixel values differ from HF's by %.3g", name, maxd);
        CHECK(ds < 1e-6, "%s: checksums (sum %.6f / %.6f, abs %.6f / %.6f, weighted %.6f / %.6f)", name, sum, rs, asum,
              ra, wsum, rw);
        free(pv);
    }
    printf("qwen2vl preprocess: %d/%d grids equal HF's, %d refused like HF; pixels max diff %.3g (f16 reference), "
           "checksums rel %.2g\n", grids_ok, grids, refused_ok, worst, worst_sum);
    free(pix16);
}

/* ===================================================== model */

/* One fixture case through the encoder interface: ids checked, vector
 * written to vec (normalized). Returns 0 or an MM_E_*. */
static int run_case(const mm_encoder_t *e, mm_enc_runner_t *r, json_object *c, float *vec, int *ids_equal)
{
    const char *text = jstr(c, "text"), *instr = jstr(c, "instruction");
    json_object *ci = jget(c, "images"), *rids = jget(c, "ids");
    const int ni = (int)json_object_array_length(ci);
    image_t *im[8];
    int vt = 0;
    for (int i = 0; i < ni; i++) {
        im[i] = find_image(json_object_get_string(json_object_array_get_idx(ci, i)));
        if (!im[i] || !im[i]->chw)
            return MM_E_NOTFOUND;
        vt += im[i]->h / 28 * (im[i]->w / 28);
    }
    int32_t ids[4096];
    mm_segment_t seg[17];
    int nseg = 0;
    char err[MM_ERRLEN];
    int rc = mm_encoder_chat_input(e, instr, strlen(instr), text, strlen(text), ni, vt, 1, ids, 4096, seg, &nseg, err, sizeof err);
    CHECK(rc == MM_OK, "%s: chat input: %s", jstr(c, "name"), err);
    if (rc)
        return rc;
    /* the ids HF's processor makes: each image's tokens as <|image_pad|> */
    int32_t full[8192];
    int n = 0;
    for (int s = 0; s < nseg; s++) {
        if (seg[s].kind == MM_SEG_TEXT) {
            memcpy(full + n, seg[s].ids, sizeof(int32_t) * seg[s].n_ids);
            n += seg[s].n_ids;
        } else {
            image_t *x = im[s / 2];
            for (int k = 0; k < x->h / 28 * (x->w / 28); k++)
                full[n++] = 151655;
            seg[s].pixels = x->chw;
            seg[s].channels = 3;
            seg[s].height = x->h;
            seg[s].width = x->w;
        }
    }
    *ids_equal = n == (int)json_object_array_length(rids);
    for (int i = 0; *ids_equal && i < n; i++)
        *ids_equal = full[i] == json_object_get_int(json_object_array_get_idx(rids, i));
    mm_input_t in = {.seg = seg, .n_seg = nseg};
    if ((rc = mm_encoder_encode(r, &in, 1, vec)))
        return rc;
    mm_nn_l2_normalize(vec, mm_encoder_info(e)->dim);
    return MM_OK;
}

static float *ref_vec(json_object *c, int dim)
{
    static float v[4096];
    json_object *a = jget(c, "vec");
    for (int i = 0; i < dim; i++)
        v[i] = (float)json_object_get_double(json_object_array_get_idx(a, i));
    return v;
}

static void test_model(json_object *ref, const char *folder, const char *dtype, double min_cos, int check_ids)
{
    char dir[64], err[MM_ERRLEN];
    if (stage(folder, dir)) {
        CHECK(0, "stage %s", folder);
        return;
    }
    mm_encoder_t *e = NULL;
    int rc = mm_encoder_load(dir, dtype, &e, err, sizeof err);
    CHECK(rc == MM_OK, "%s %s: load: %s", folder, dtype, err);
    if (rc) {
        unstage(dir);
        return;
    }
    const mm_enc_info_t *info = mm_encoder_info(e);
    CHECK(!strcmp(info->arch, "qwen2vl") && info->image_dynamic && info->chat && info->has_text && info->has_vision,
          "%s: info", folder);
    CHECK(mm_encoder_preproc(e) && mm_encoder_preproc(e)->dynamic, "%s: dynamic preprocessor", folder);
    if (strcmp(info->compute, dtype)) {
        SKIP("%s: %s runs as %s here (%s)", folder, dtype, info->compute, mm_encoder_dtype_reason(e));
        mm_encoder_free(e);
        unstage(dir);
        return;
    }
    mm_enc_runner_t *r = mm_encoder_runner_new(e, 4, 4, 2);
    CHECK(r != NULL, "runner");
    json_object *cases = jget(ref, "cases");
    const int nc = (int)json_object_array_length(cases), dim = info->dim;
    double worst = 1;
    const char *worst_name = "";
    int ids_ok = 0, run = 0;
    float vec[4096], text0[4096] = {0}, instr_text[4096] = {0};
    double kinds[4] = {1, 1, 1, 1};   /* worst cosine: text, image, text+image, several images */
    for (int i = 0; r && i < nc; i++) {
        json_object *c = json_object_array_get_idx(cases, i);
        const char *name = jstr(c, "name");
        int eq = 0;
        rc = run_case(e, r, c, vec, &eq);
        CHECK(rc == MM_OK, "%s %s: %s: encode %d", folder, dtype, name, rc);
        if (rc)
            continue;
        run++;
        ids_ok += eq;
        if (check_ids)
            CHECK(eq, "%s: ids differ from HF's", name);
        const double cs = cosine_ff(vec, ref_vec(c, dim), dim);
        CHECK(cs >= min_cos, "%s %s: %s: cosine %.6f < %g", folder, dtype, name, cs, min_cos);
        if (cs < worst) {
            worst = cs;
            worst_name = name;
        }
        const int ni = (int)json_object_array_length(jget(c, "images")), nt = strlen(jstr(c, "text")) > 0;
        const int k = ni == 0 ? 0 : ni > 1 ? 3 : nt ? 2 : 1;
        kinds[k] = fmin(kinds[k], cs);
        if (!strcmp(name, "text0"))
            memcpy(text0, vec, sizeof(float) * dim);
        if (!strcmp(name, "instr:text"))
            memcpy(instr_text, vec, sizeof(float) * dim);
    }
    /* another instruction moves the vector as HF's does */
    json_object *t0 = NULL, *it = NULL;
    for (int i = 0; i < nc; i++) {
        json_object *c = json_object_array_get_idx(cases, i);
        if (!strcmp(jstr(c, "name"), "text0"))
            t0 = c;
        if (!strcmp(jstr(c, "name"), "instr:text"))
            it = c;
    }
    if (t0 && it) {
        float a[4096];
        memcpy(a, ref_vec(t0, dim), sizeof(float) * dim);
        const double hf = cosine_ff(a, ref_vec(it, dim), dim), ours = cosine_ff(text0, instr_text, dim);
        CHECK(hf < 0.9999 && fabs(hf - ours) < 10 * (1 - min_cos) + 1e-4,
              "instruction: cosine(default, other) HF %.6f, ours %.6f", hf, ours);
        printf("%s %s: another instruction: cosine to the default's HF %.6f, ours %.6f\n", folder, dtype, hf, ours);
    }
    printf("%s %s: %d cases, ids equal %d/%d; worst cosine 1 - %.1e (%s); by kind (1 - worst cosine): text %.1e, "
           "image %.1e, text+image %.1e, several images %.1e; pack %zu bytes\n",
           folder, dtype, run, ids_ok, run, 1 - worst, worst_name, 1 - kinds[0], 1 - kinds[1], 1 - kinds[2],
           1 - kinds[3], info->weight_bytes);
    mm_encoder_runner_free(r);
    mm_encoder_free(e);
    unstage(dir);
}

static void test_preproc_forms(void)
{
    mm_preproc_t a, b;
    char err[MM_ERRLEN];
    CHECK(mm_preproc_load(FX "/qwen2vl-tiny/preprocessor_config.json", &a, err, sizeof err) == MM_OK, "v5 form: %s",
          err);
    CHECK(mm_preproc_load(FX "/qwen2vl-tiny-v5/preprocessor_config.json", &b, err, sizeof err) == MM_OK,
          "legacy form: %s", err);
    CHECK(a.dynamic && b.dynamic && a.min_pixels == b.min_pixels && a.max_pixels == b.max_pixels &&
              a.min_pixels == 28 * 28 * 4 && a.max_pixels == 28 * 28 * 20 && !a.do_center_crop,
          "both forms: min %ld/%ld max %ld/%ld", a.min_pixels, b.min_pixels, a.max_pixels, b.max_pixels);
    /* smart_resize corner cases (values from transformers 5's function) */
    int h, w;
    CHECK(mm_preproc_smart_resize(224, 224, 28, 3136, 15680, &h, &w) == 0 && h == 112 && w == 112, "224: %dx%d", h, w);
    CHECK(mm_preproc_smart_resize(17, 31, 28, 3136, 15680, &h, &w) == 0 && h == 56 && w == 84, "17x31: %dx%d", h, w);
    CHECK(mm_preproc_smart_resize(4, 1000, 28, 3136, 15680, &h, &w) == MM_E_UNPROCESSABLE, "aspect 250 refused");
    CHECK(mm_preproc_smart_resize(42, 70, 28, 56, 1 << 30, &h, &w) == 0 && h == 56 && w == 56,
          "half to even: 42 -> 56 (1.5 -> 2), 70 -> 56 (2.5 -> 2): %dx%d", h, w);
}

int main(void)
{
    json_object *ref = json_object_from_file(FX "/ref.json");
    if (!ref) {
        SKIP_BROKEN("no %s/ref.json (tools/gen_qwen2vl_fixtures.py)", FX);
        return check_summary("test_qwen2vl");
    }
    test_preproc_forms();
    mm_preproc_t pre;
    char err[MM_ERRLEN];
    CHECK(mm_preproc_load(FX "/qwen2vl-tiny/preprocessor_config.json", &pre, err, sizeof err) == MM_OK, "%s", err);
    test_preprocess(ref, &pre);
    test_model(ref, "qwen2vl-tiny", "f32", MIN_COS_F32, 1);
    test_model(ref, "qwen2vl-tiny-v5", "f32", MIN_COS_F32, 0);
    const char *dts[3] = {"bf16", "q8", "q4"};
    const double mins[3] = {MIN_COS_BF16, MIN_COS_Q8, MIN_COS_Q4};
    for (int d = 0; d < 3; d++) {
        if (d < 2 && !cpuinfo_native(dts[d])) {
            SKIP("%s: not native on this CPU", dts[d]);
            continue;
        }
        test_model(ref, "qwen2vl-tiny", dts[d], mins[d], 0);
    }
    /* the tiny language model's 2 blocks are both kept q8 by q4's mix: its
     * block 1 in 4 bits too (MMEMBED_Q4_KEEP=1) */
    setenv("MMEMBED_Q4_KEEP", "1", 1);
    test_model(ref, "qwen2vl-tiny", "q4", MIN_COS_Q4, 0);
    unsetenv("MMEMBED_Q4_KEEP");
    for (int i = 0; i < n_imgs; i++)
        free(imgs[i].chw);
    json_object_put(ref);
    return check_summary("test_qwen2vl");
}
