/* CLIPImageProcessor (Hugging Face transformers v5) in C.
 *
 * HF order: convert RGB → resize (uint8) → center crop (uint8, zero padded)
 * → rescale → normalize. The two backends differ in details we reproduce:
 *                 torchvision (default)            PIL
 *   resize        torch uint8 antialias kernel     Image.resize
 *   pad before    floor((crop - size) / 2)         ceil((crop - size) / 2)
 *   rescale+norm  fused in float32:                float64 x*f → float32,
 *                 (x - mean/f) / (std/f)           then (x - mean) / std
 *   LANCZOS       replaced by BICUBIC              LANCZOS
 * We resize only the pixels the crop keeps (mm_image_resize computes a
 * window of the virtual output) and fold rescale+normalize into a 256-entry
 * table per channel, which reproduces the float arithmetic exactly for
 * every uint8 value. */
#include "mmembed/preprocess.h"
#include "mmembed/common.h"
#include "mmembed/hfconfig.h"
#include "mmembed/image.h"

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EDGE 16384

/* ------------------------------------------------------------------ */
/* Configuration                                                       */
/* ------------------------------------------------------------------ */

void mm_preproc_default_clip(mm_preproc_t *p, int image_size)
{
    static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    static const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    memset(p, 0, sizeof *p);
    p->backend = MM_PREPROC_TORCHVISION;
    p->do_convert_rgb = 1;
    p->do_resize = 1;
    p->size_mode = MM_PREPROC_SIZE_SHORTEST;
    p->shortest_edge = image_size;
    p->resize_h = p->resize_w = image_size;
    p->resample = MM_RESAMPLE_BICUBIC;
    p->do_center_crop = 1;
    p->crop_h = p->crop_w = image_size;
    p->do_rescale = 1;
    p->rescale_factor = 1.0 / 255.0;
    p->do_normalize = 1;
    memcpy(p->mean, mean, sizeof mean);
    memcpy(p->std, std, sizeof std);
}

/* The value helpers below read one member v of the object c at key, with
 * the preprocessor's own leniency (an integral number is an integer, 0 / 1
 * are booleans, as Python reads them); the object-level lookups and every
 * error ("<file>: <where>.<key>: ...") are the config reader's
 * (mmembed/hfconfig.h). */

static int as_int(const mm_cfg_t *c, const char *key, struct json_object *v, int lo, int hi, int *dst, char *err,
                  size_t errlen)
{
    double d;
    if (json_object_is_type(v, json_type_int))
        d = (double)json_object_get_int64(v);
    else if (json_object_is_type(v, json_type_double))
        d = json_object_get_double(v);
    else
        return mm_cfg_errf(c, key, err, errlen, MM_E_INVALID, "must be an integer");
    if (d != (double)(long long)d || d < lo || d > hi)
        return mm_cfg_errf(c, key, err, errlen, MM_E_INVALID, "must be an integer in [%d, %d]", lo, hi);
    *dst = (int)d;
    return MM_OK;
}

static int as_num(const mm_cfg_t *c, const char *key, struct json_object *v, double *dst, char *err, size_t errlen)
{
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
        return mm_cfg_errf(c, key, err, errlen, MM_E_INVALID, "must be a number");
    *dst = json_object_get_double(v);
    return MM_OK;
}

static int opt_bool(const mm_cfg_t *c, const char *key, int *dst, char *err, size_t errlen)
{
    struct json_object *v = mm_cfg_get(c, key);
    if (!v)
        return MM_OK;
    if (!json_object_is_type(v, json_type_boolean) && !json_object_is_type(v, json_type_int))
        return mm_cfg_errf(c, key, err, errlen, MM_E_INVALID, "must be a boolean");
    *dst = json_object_get_boolean(v) ? 1 : 0;
    return MM_OK;
}

/* {"height": H, "width": W} or a bare integer (square). */
static int parse_hw(const mm_cfg_t *c, const char *key, struct json_object *v, int *h, int *w, char *err,
                    size_t errlen)
{
    if (!json_object_is_type(v, json_type_object)) {
        int n, rc = as_int(c, key, v, 1, MAX_EDGE, &n, err, errlen);
        if (rc == MM_OK)
            *h = *w = n;
        return rc;
    }
    const mm_cfg_t o = mm_cfg_view(c, v, key);
    struct json_object *jh = mm_cfg_get(&o, "height"), *jw = mm_cfg_get(&o, "width");
    if (!jh || !jw)
        return mm_cfg_errf(c, key, err, errlen, MM_E_UNSUPPORTED, "needs height and width");
    int rc = as_int(&o, "height", jh, 1, MAX_EDGE, h, err, errlen);
    return rc != MM_OK ? rc : as_int(&o, "width", jw, 1, MAX_EDGE, w, err, errlen);
}

/* image_mean / image_std: 3 numbers, or one number for all channels. */
static int parse_vec3(const mm_cfg_t *c, const char *key, float dst[3], char *err, size_t errlen)
{
    struct json_object *v = mm_cfg_get(c, key);
    double d[3];
    if (!v)
        return MM_OK;
    if (json_object_is_type(v, json_type_array)) {
        size_t n = json_object_array_length(v);
        if (n != 3 && n != 1)
            return mm_cfg_errf(c, key, err, errlen, MM_E_INVALID, "needs 3 values");
        for (size_t i = 0; i < 3; i++) {
            int rc = as_num(c, key, json_object_array_get_idx(v, n == 1 ? 0 : i), &d[i], err, errlen);
            if (rc != MM_OK)
                return rc;
        }
    } else {
        int rc = as_num(c, key, v, &d[0], err, errlen);
        if (rc != MM_OK)
            return rc;
        d[1] = d[2] = d[0];
    }
    for (int i = 0; i < 3; i++)
        dst[i] = (float)d[i]; /* HF builds float32 arrays from the values */
    return MM_OK;
}

/* Optional integer key of c in [1, 1e9] into *dst. */
static int opt_long(const mm_cfg_t *c, const char *key, long *dst, char *err, size_t errlen)
{
    int v, rc;
    if (!mm_cfg_has(c, key))
        return MM_OK;
    if ((rc = mm_cfg_int(c, key, 0, 1, 1000000000, &v, err, errlen)))
        return rc;
    *dst = v;
    return MM_OK;
}

/* Optional integer key of c in [lo, hi] (an integral number is one). */
static int opt_int(const mm_cfg_t *c, const char *key, int lo, int hi, int *dst, char *err, size_t errlen)
{
    struct json_object *v = mm_cfg_get(c, key);
    return v ? as_int(c, key, v, lo, hi, dst, err, errlen) : MM_OK;
}

/* Qwen2VLImageProcessor: named so, or carrying its keys. */
static int is_qwen2vl(const mm_cfg_t *root)
{
    const char *s = mm_cfg_str(root, "image_processor_type");
    return (s && !strncmp(s, "Qwen2VLImageProcessor", 21)) || mm_cfg_has(root, "min_pixels") ||
           mm_cfg_has(root, "max_pixels") || mm_cfg_has(root, "merge_size");
}

/* The Qwen2-VL keys, over the defaults of Qwen2VLImageProcessor. As its
 * __init__: min_pixels / max_pixels override size's shortest / longest
 * edge. */
static int parse_qwen2vl(const mm_cfg_t *root, mm_preproc_t *p, char *err, size_t errlen)
{
    mm_cfg_t sz;
    int rc;
    p->dynamic = 1;
    p->do_center_crop = 0;
    p->min_pixels = 56 * 56;
    p->max_pixels = 28 * 28 * 1280;
    p->patch_size = 14;
    p->temporal_patch_size = 2;
    p->merge_size = 2;
    mm_cfg_sub(root, "size", &sz);   /* absent or not an object: no keys */
    if ((rc = opt_long(&sz, "shortest_edge", &p->min_pixels, err, errlen)) ||
        (rc = opt_long(&sz, "longest_edge", &p->max_pixels, err, errlen)) ||
        (rc = opt_long(root, "min_pixels", &p->min_pixels, err, errlen)) ||
        (rc = opt_long(root, "max_pixels", &p->max_pixels, err, errlen)) ||
        (rc = opt_int(root, "patch_size", 1, 1024, &p->patch_size, err, errlen)) ||
        (rc = opt_int(root, "temporal_patch_size", 1, 16, &p->temporal_patch_size, err, errlen)) ||
        (rc = opt_int(root, "merge_size", 1, 16, &p->merge_size, err, errlen)))
        return rc;
    if (p->min_pixels > p->max_pixels)
        return mm_cfg_errf(root, "min_pixels", err, errlen, MM_E_INVALID, "%ld > max_pixels %ld", p->min_pixels,
                           p->max_pixels);
    return MM_OK;
}

static int parse_root(const mm_cfg_t *root, mm_preproc_t *p, char *err, size_t errlen)
{
    struct json_object *v;
    int rc;

    if ((rc = opt_bool(root, "do_convert_rgb", &p->do_convert_rgb, err, errlen)) ||
        (rc = opt_bool(root, "do_resize", &p->do_resize, err, errlen)) ||
        (rc = opt_bool(root, "do_center_crop", &p->do_center_crop, err, errlen)) ||
        (rc = opt_bool(root, "do_rescale", &p->do_rescale, err, errlen)) ||
        (rc = opt_bool(root, "do_normalize", &p->do_normalize, err, errlen)))
        return rc;

    if (is_qwen2vl(root)) {
        if ((rc = parse_qwen2vl(root, p, err, errlen)))
            return rc;
    } else if ((v = mm_cfg_get(root, "size"))) {
        const mm_cfg_t sz = mm_cfg_view(root, v, "size");
        if (!json_object_is_type(v, json_type_object)) {
            /* legacy int: CLIP's get_size_dict(default_to_square=False) */
            if ((rc = as_int(root, "size", v, 1, MAX_EDGE, &p->shortest_edge, err, errlen)))
                return rc;
            p->size_mode = MM_PREPROC_SIZE_SHORTEST;
        } else if (mm_cfg_has(&sz, "longest_edge") || mm_cfg_has(&sz, "max_height") || mm_cfg_has(&sz, "max_width")) {
            return mm_cfg_errf(root, "size", err, errlen, MM_E_UNSUPPORTED,
                               "longest_edge / max_* are not supported");
        } else if (mm_cfg_has(&sz, "shortest_edge")) {
            if ((rc = as_int(&sz, "shortest_edge", mm_cfg_get(&sz, "shortest_edge"), 1, MAX_EDGE, &p->shortest_edge,
                             err, errlen)))
                return rc;
            p->size_mode = MM_PREPROC_SIZE_SHORTEST;
        } else {
            if ((rc = parse_hw(root, "size", v, &p->resize_h, &p->resize_w, err, errlen)))
                return rc;
            p->size_mode = MM_PREPROC_SIZE_EXACT;
        }
    }
    if ((v = mm_cfg_get(root, "resample"))) {
        if ((rc = as_int(root, "resample", v, 0, 5, &p->resample, err, errlen)))
            return rc;
        if (p->resample == MM_RESAMPLE_NEAREST)
            return mm_cfg_errf(root, "resample", err, errlen, MM_E_UNSUPPORTED, "0 (nearest) is not supported");
    }
    if ((v = mm_cfg_get(root, "crop_size")) &&
        (rc = parse_hw(root, "crop_size", v, &p->crop_h, &p->crop_w, err, errlen)))
        return rc;
    if ((v = mm_cfg_get(root, "rescale_factor")) &&
        (rc = as_num(root, "rescale_factor", v, &p->rescale_factor, err, errlen)))
        return rc;
    if ((rc = parse_vec3(root, "image_mean", p->mean, err, errlen)) ||
        (rc = parse_vec3(root, "image_std", p->std, err, errlen)))
        return rc;
    for (int i = 0; i < 3; i++)
        if (p->std[i] == 0.0f)
            return mm_cfg_errf(root, "image_std", err, errlen, MM_E_INVALID, "must not be 0");
    return MM_OK;
}

/* mm_preproc_parse with `name` (the file) in errors. */
static int parse_named(const char *name, const char *json, size_t len, mm_preproc_t *p, char *err, size_t errlen)
{
    mm_preproc_default_clip(p, 224);
    if (!json || len == 0 || len > (1u << 24))
        return mm_errf(err, errlen, MM_E_INVALID, "%s: empty or too large", name);
    mm_cfg_file_t *f;
    int rc = mm_cfg_parse(name, json, len, &f, err, errlen);
    if (rc)
        return rc;
    const mm_cfg_t root = mm_cfg_root(f);
    rc = parse_root(&root, p, err, errlen);
    mm_cfg_close(f);
    return rc;
}

int mm_preproc_parse(const char *json, size_t len, mm_preproc_t *p, char *err, size_t errlen)
{
    return parse_named("preprocessor config", json, len, p, err, errlen);
}

int mm_preproc_load(const char *path, mm_preproc_t *p, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return mm_errf(err, errlen, MM_E_NOTFOUND, "cannot open %s", path);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    int rc = MM_OK;
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        if (cap >= (1u << 24)) {
            rc = mm_errf(err, errlen, MM_E_INVALID, "%s: too large", path);
            break;
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (!buf)
        rc = mm_errf(err, errlen, MM_E_NOMEM, "out of memory reading %s", path);
    else if (ferror(f))
        rc = mm_errf(err, errlen, MM_E_NOTFOUND, "cannot read %s", path);
    fclose(f);
    if (rc == MM_OK)
        rc = parse_named(path, buf, n, p, err, errlen);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Geometry                                                            */
/* ------------------------------------------------------------------ */

int mm_preproc_min_edge(const mm_preproc_t *p)
{
    if (!p->do_resize || p->dynamic)   /* dynamic: the whole image counts; decode it at full size */
        return 0;
    if (p->size_mode == MM_PREPROC_SIZE_SHORTEST)
        return p->shortest_edge;
    return MM_MAX(p->resize_h, p->resize_w);
}

/* Python's round() of a float: half to even, as nearbyint in the default
 * rounding mode; floor / ceil / sqrt on the same doubles as Python. */
int mm_preproc_smart_resize(int h, int w, int factor, long min_pixels, long max_pixels, int *oh, int *ow)
{
    if (h <= 0 || w <= 0 || factor <= 0)
        return MM_E_UNPROCESSABLE;
    if ((double)MM_MAX(h, w) / (double)MM_MIN(h, w) > 200)
        return MM_E_UNPROCESSABLE;
    const double f = factor;
    long hb = (long)nearbyint(h / f) * factor, wb = (long)nearbyint(w / f) * factor;
    if (hb * wb > max_pixels) {
        double beta = sqrt((double)h * (double)w / (double)max_pixels);
        hb = MM_MAX((long)factor, (long)floor(h / beta / f) * factor);
        wb = MM_MAX((long)factor, (long)floor(w / beta / f) * factor);
    } else if (hb * wb < min_pixels) {
        double beta = sqrt((double)min_pixels / ((double)h * (double)w));
        hb = (long)ceil(h * beta / f) * factor;
        wb = (long)ceil(w * beta / f) * factor;
    }
    if (hb > MAX_EDGE || wb > MAX_EDGE)
        return MM_E_UNPROCESSABLE;
    *oh = (int)hb;
    *ow = (int)wb;
    return MM_OK;
}

/* HF get_resize_output_image_size(default_to_square=False) for shortest
 * edge: short → N, long → int(N * long / short) (true division, truncated).
 * Dynamic: smart_resize (0 x 0 when it refuses). */
static void resize_dims(const mm_preproc_t *p, int w, int h, int *rh, int *rw)
{
    if (p->dynamic) {
        if (mm_preproc_smart_resize(h, w, p->patch_size * p->merge_size, p->min_pixels, p->max_pixels, rh, rw))
            *rh = *rw = 0;
    } else if (!p->do_resize) {
        *rh = h;
        *rw = w;
    } else if (p->size_mode == MM_PREPROC_SIZE_EXACT) {
        *rh = p->resize_h;
        *rw = p->resize_w;
    } else {
        int s = MM_MIN(w, h), l = MM_MAX(w, h), n = p->shortest_edge;
        int nl = (int)((double)((long long)n * l) / (double)s);
        if (w <= h) {
            *rw = n;
            *rh = nl;
        } else {
            *rh = n;
            *rw = nl;
        }
    }
}

int mm_preproc_out_dims(const mm_preproc_t *p, int src_w, int src_h, int *out_h, int *out_w)
{
    if (src_w <= 0 || src_h <= 0)
        return MM_E_INVALID;
    if (p->dynamic)
        return mm_preproc_smart_resize(src_h, src_w, p->patch_size * p->merge_size, p->min_pixels,
                                       p->max_pixels, out_h, out_w);
    if (p->do_center_crop) {
        *out_h = p->crop_h;
        *out_w = p->crop_w;
        return MM_OK;
    }
    resize_dims(p, src_w, src_h, out_h, out_w);
    return (*out_h > 0 && *out_w > 0) ? MM_OK : MM_E_INVALID;
}

/* HF center_crop along one axis: offset of the crop in the resized image;
 * negative when the image is padded (by the pad before it). */
static int crop_offset(int backend, int size, int crop)
{
    if (crop <= size)
        return (size - crop) / 2;
    return backend == MM_PREPROC_PIL ? -((crop - size + 1) / 2) : -((crop - size) / 2);
}

/* uint8 → normalized float, per channel, with the backend's arithmetic */
static void make_lut(const mm_preproc_t *p, float lut[3][256])
{
    float f = (float)p->rescale_factor;
    for (int c = 0; c < 3; c++) {
        float mean = p->mean[c], std = p->std[c];
        if (p->backend != MM_PREPROC_PIL && p->do_rescale && p->do_normalize) {
            /* torch: mean * (1/f) and std * (1/f) as float32 tensors */
            float inv = (float)(1.0 / p->rescale_factor);
            mean = mean * inv;
            std = std * inv;
        }
        for (int v = 0; v < 256; v++) {
            float x;
            if (p->backend == MM_PREPROC_PIL) {
                x = p->do_rescale ? (float)((double)v * p->rescale_factor) : (float)v;
                if (p->do_normalize)
                    x = (x - mean) / std;
            } else if (p->do_normalize) {
                x = ((float)v - mean) / std;
            } else {
                x = p->do_rescale ? (float)v * f : (float)v;
            }
            lut[c][v] = x;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Run                                                                 */
/* ------------------------------------------------------------------ */

static int run(const mm_preproc_t *p, const unsigned char *rgb, int w, int h, size_t stride,
               int src_w, int src_h, float *out)
{
    if (!p || !rgb || !out || w <= 0 || h <= 0 || src_w <= 0 || src_h <= 0 || stride < (size_t)w * 3)
        return MM_E_INVALID;

    /* geometry: resized size, output size, and the window of the resized
     * image that lands in the output */
    int rh, rw, oh, ow, offy = 0, offx = 0;
    resize_dims(p, src_w, src_h, &rh, &rw);
    if (rh <= 0 || rw <= 0)
        return p->dynamic ? MM_E_UNPROCESSABLE : MM_E_INVALID;
    if (p->do_center_crop) {
        oh = p->crop_h;
        ow = p->crop_w;
        offy = crop_offset(p->backend, rh, oh);
        offx = crop_offset(p->backend, rw, ow);
    } else {
        oh = rh;
        ow = rw;
    }
    int vy0 = MM_MAX(0, offy), vy1 = MM_MIN(rh, offy + oh);
    int vx0 = MM_MAX(0, offx), vx1 = MM_MIN(rw, offx + ow);
    int vh = vy1 - vy0, vw = vx1 - vx0;
    if (vh <= 0 || vw <= 0) /* nothing of the image lands in the output */
        vy0 = vy1 = vx0 = vx1 = vh = vw = 0;

    /* resize only that window (or read it in place when sizes match) */
    unsigned char *buf = NULL;
    const unsigned char *win = NULL;
    size_t wstride = 0;
    if (vh > 0 && vw > 0) {
        if (rw == w && rh == h) {
            win = rgb + (size_t)vy0 * stride + (size_t)vx0 * 3;
            wstride = stride;
        } else {
            wstride = (size_t)vw * 3;
            if (!(buf = malloc(wstride * (size_t)vh)))
                return MM_E_NOMEM;
            int pil = p->backend == MM_PREPROC_PIL;
            /* HF's torchvision backend has no lanczos and uses bicubic */
            int filter = !pil && p->resample == MM_RESAMPLE_LANCZOS ? MM_RESAMPLE_BICUBIC : p->resample;
            int rc = mm_image_resize(rgb, w, h, stride, rw, rh, vx0, vy0, vw, vh, buf, wstride,
                                     filter, pil ? MM_RESIZE_PIL : MM_RESIZE_TORCHVISION);
            if (rc != MM_OK) {
                free(buf);
                return rc;
            }
            win = buf;
        }
    }

    float lut[3][256];
    make_lut(p, lut);

    /* output (3, oh, ow); rows/columns outside the window are zero padding */
    for (int c = 0; c < 3; c++) {
        float *o = out + (size_t)c * oh * ow;
        float pad = lut[c][0];
        for (int y = 0; y < oh; y++) {
            float *orow = o + (size_t)y * ow;
            int ry = y + offy;
            if (ry < vy0 || ry >= vy1) {
                for (int x = 0; x < ow; x++)
                    orow[x] = pad;
                continue;
            }
            const unsigned char *s = win + (size_t)(ry - vy0) * wstride;
            int xa = vx0 - offx, xb = vx1 - offx; /* output columns with pixels */
            for (int x = 0; x < xa; x++)
                orow[x] = pad;
            for (int x = xa; x < xb; x++)
                orow[x] = lut[c][s[(size_t)(x - xa) * 3 + c]];
            for (int x = MM_MAX(xb, xa); x < ow; x++)
                orow[x] = pad;
        }
    }
    free(buf);
    return MM_OK;
}

int mm_preproc_run(const mm_preproc_t *p, const mm_image_t *img, float *out)
{
    if (!img || !img->rgb)
        return MM_E_INVALID;
    int sw = img->src_w > 0 ? img->src_w : img->w, sh = img->src_h > 0 ? img->src_h : img->h;
    return run(p, img->rgb, img->w, img->h, (size_t)img->w * 3, sw, sh, out);
}

int mm_preproc_from_rgb(const mm_preproc_t *p, const unsigned char *rgb, int w, int h,
                        size_t stride, float *out)
{
    return run(p, rgb, w, h, stride, w, h, out);
}
