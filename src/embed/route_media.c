/* Image routes: POST /embed/image and POST /embed/multimodal. */
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "mmembed/image.h"
#include "mmembed/nn.h"

/* ---------------------------------------------------------------- /embed/image, /embed/multimodal */

typedef struct {
    const char *model;
    int normalize, return_parts, use_cache;
    double wt, wi;
    int n;                          /* images */
    const unsigned char **bufs;
    size_t *lens;
    const char **names;             /* filenames (multipart) or NULL */
    unsigned char **owned;          /* decoded base64 buffers */
    const char *text;               /* multimodal */
    size_t text_len;
    json_object *json;
    form_t form;
} media_req_t;

static void media_free(media_req_t *q)
{
    for (int i = 0; q->owned && i < q->n; i++) free(q->owned[i]);
    free(q->owned);
    free(q->bufs);
    free(q->lens);
    free(q->names);
    json_object_put(q->json);
    emb_form_free(&q->form);
}

static int alloc_images(media_req_t *q, int n, fail_t *f)
{
    q->bufs = calloc((size_t)n + 1, sizeof *q->bufs);
    q->lens = calloc((size_t)n + 1, sizeof *q->lens);
    q->names = calloc((size_t)n + 1, sizeof *q->names);
    q->owned = calloc((size_t)n + 1, sizeof *q->owned);
    if (!q->bufs || !q->lens || !q->names || !q->owned) return emb_failf(f, 500, NULL, "out of memory");
    return 0;
}

/* Collect model/normalize/images (and text for multimodal) from JSON or a form. */
static int read_media(mm_embed_t *e, mm_http_req_t *r, media_req_t *q, int multimodal, fail_t *f)
{
    memset(q, 0, sizeof *q);
    q->normalize = 1;
    q->use_cache = 1;
    q->wt = q->wi = 0.5;
    if (emb_is_multipart(r->content_type)) {
        if (emb_read_form(e, r, &q->form, f)) return -1;
        form_t *fm = &q->form;
        int files = 0;
        for (int i = 0; i < fm->n; i++) files += fm->parts[i].is_file;
        if (alloc_images(q, files, f)) return -1;
        for (int i = 0; i < fm->n; i++)
            if (fm->parts[i].is_file) {
                q->bufs[q->n] = (const unsigned char *)fm->parts[i].data.data;
                q->lens[q->n] = fm->parts[i].data.len;
                q->names[q->n] = fm->parts[i].filename;
                q->n++;
            }
        const part_t *p;
        if ((p = emb_form_field(fm, "model")) && p->data.len) q->model = p->data.data;
        if (emb_form_bool(fm, "normalize", &q->normalize, f) || emb_form_bool(fm, "return_parts", &q->return_parts, f) ||
            emb_form_bool(fm, "cache", &q->use_cache, f) || emb_form_number(fm, "text_weight", &q->wt, f) ||
            emb_form_number(fm, "image_weight", &q->wi, f))
            return -1;
        if (multimodal && (p = emb_form_field(fm, "text"))) {
            q->text = p->data.data ? p->data.data : "";
            q->text_len = p->data.len;
        }
        return 0;
    }
    if (!emb_is_json(r->content_type)) {
        mm_http_drain(r, e->conf->max_body_bytes);
        return emb_failf(f, 415, "unsupported_media_type",
                     "send multipart/form-data with file parts, or application/json with base64 images");
    }
    if (!(q->json = emb_read_json(e, r, f))) return -1;
    json_object *j = q->json, *arr, *v;
    if (emb_jstr(j, "model", &q->model, f) || emb_jbool(j, "normalize", &q->normalize, f) ||
        emb_jbool(j, "return_parts", &q->return_parts, f) || emb_jbool(j, "cache", &q->use_cache, f))
        return -1;
    const char *key = multimodal ? "image" : "images";
    if (!json_object_object_get_ex(j, key, &arr))
        return emb_failf(f, 400, "missing_images", multimodal ? "'image' (base64) is required" : "'images' is required");
    int single = json_object_is_type(arr, json_type_string);
    if (!single && !json_object_is_type(arr, json_type_array))
        return emb_failf(f, 400, "invalid_input", "'%s' must be %s", key,
                     multimodal ? "a base64 string" : "an array of base64 strings or data: URIs");
    int n = single ? 1 : (int)json_object_array_length(arr);
    if (n > e->max_items) return emb_failf(f, 413, "too_many_inputs", "%d images; limits.max_items is %d", n, e->max_items);
    if (alloc_images(q, n, f)) return -1;
    for (int i = 0; i < n; i++) {
        json_object *s = single ? arr : json_object_array_get_idx(arr, i);
        if (!json_object_is_type(s, json_type_string))
            return emb_failf(f, 400, "invalid_input", "images[%d] must be a base64 string", i);
        if (emb_decode_b64_image(json_object_get_string(s), (size_t)json_object_get_string_len(s), &q->owned[i],
                             &q->lens[i], i, f))
            return -1;
        q->bufs[i] = q->owned[i];
        q->n = i + 1;
    }
    if (multimodal) {
        if (json_object_object_get_ex(j, "text", &v)) {
            if (!json_object_is_type(v, json_type_string)) return emb_failf(f, 400, "invalid_input", "'text' must be a string");
            q->text = json_object_get_string(v);
            q->text_len = (size_t)json_object_get_string_len(v);
        }
        for (int k = 0; k < 2; k++) {
            const char *name = k ? "image_weight" : "text_weight";
            if (!json_object_object_get_ex(j, name, &v)) continue;
            double w = json_object_get_double(v);
            if (!(json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)) || !isfinite(w) ||
                w < 0 || w > MAX_WEIGHT)
                return emb_failf(f, 400, "invalid_parameter", "'%s' must be a number from 0 to %g", name, MAX_WEIGHT);
            *(k ? &q->wi : &q->wt) = w;
        }
    }
    return 0;
}

/* One /embed/image request on its way through parse -> encode -> respond.
 * Everything it points to lives until image_job_free. */
typedef struct {
    mm_http_req_t *r;
    media_req_t q;
    float *vecs;        /* (q.n, dim) */
    image_item_t it;    /* what the encode loop reads and fills */
} image_job_t;

static void image_job_free(image_job_t *t)
{
    media_free(&t->q);
    free(t->vecs);
    memset(t, 0, sizeof *t);
}

/* Parse: the body (multipart or JSON base64), its model and options. Returns
 * 0, or -1 with f set (the request is answered with it and leaves the batch). */
static int image_parse(mm_embed_t *e, image_job_t *t, fail_t *f)
{
    entry_t *m;
    if (read_media(e, t->r, &t->q, 0, f) || !(m = emb_pick_model_for(e, t->q.model, 0, 1, MM_MOD_IMAGE, f))) return -1;
    if (t->q.n == 0) return emb_failf(f, 400, "missing_images", "no image was sent (multipart file parts or JSON 'images')");
    if (t->q.n > e->max_items)
        return emb_failf(f, 413, "too_many_inputs", "%d images; limits.max_items is %d", t->q.n, e->max_items);
    if (!(t->vecs = malloc(sizeof(float) * (size_t)t->q.n * m->info->dim)))
        return emb_failf(f, 500, NULL, "out of memory");
    mm_image_budget_begin();   /* limits.image_budget: each request its own */
    t->it = (image_item_t){.m = m, .n = t->q.n, .bufs = t->q.bufs, .lens = t->q.lens, .use_cache = t->q.use_cache,
                           .out = t->vecs, .budget_left = mm_image_budget_left()};
    return 0;
}

static void image_respond(mm_embed_t *e, image_job_t *t)
{
    mm_http_req_t *r = t->r;
    const entry_t *m = t->it.m;
    const int d = m->info->dim;
    emb_set_x_cache(e, r, t->q.use_cache, t->it.hits, t->q.n);
    size_t hl = strlen(r->headers); /* decode + preprocess and model time, for clients and benchmarks */
    snprintf(r->headers + hl, sizeof r->headers - hl, "Server-Timing: decode;dur=%.2f, model;dur=%.2f\r\n",
             t->it.t_decode, t->it.t_model);
    emb_begin_data(&r->out, m, d);
    for (int i = 0; i < t->q.n; i++) {
        float *vec = t->vecs + (size_t)i * d;
        if (t->q.normalize) mm_nn_l2_normalize(vec, d);
        mm_buf_printf(&r->out, "%s{\"index\":%d,", i ? "," : "", i);
        if (t->q.names[i]) {
            mm_buf_puts(&r->out, "\"filename\":");
            mm_buf_json_str(&r->out, t->q.names[i], strlen(t->q.names[i]));
            mm_buf_puts(&r->out, ",");
        }
        mm_buf_puts(&r->out, "\"embedding\":");
        emb_write_vec(&r->out, vec, d);
        mm_buf_puts(&r->out, "}");
    }
    mm_buf_puts(&r->out, "]}\n");
    mm_http_respond_json(r, 200);
}

void mm_embed_image_batch(mm_embed_t *e, mm_http_req_t *const *rs, int n)
{
    image_job_t *jobs = calloc((size_t)MM_MAX(n, 1), sizeof *jobs);
    image_item_t **items = calloc((size_t)MM_MAX(n, 1), sizeof *items);
    int k = 0;
    for (int i = 0; i < n; i++) {
        fail_t f = {0};
        if (emb_batch_refuse(e, rs[i], jobs && items)) continue;
        image_job_t *t = &jobs[k];
        t->r = rs[i];
        if (image_parse(e, t, &f)) {
            emb_respond_fail(rs[i], &f);
            image_job_free(t);
            continue;
        }
        items[k++] = &t->it;
    }
    if (k) emb_encode_image_items(e, items, k);
    for (int i = 0; i < k; i++) {
        if (jobs[i].it.failed) emb_respond_fail(jobs[i].r, &jobs[i].it.f);
        else image_respond(e, &jobs[i]);
        image_job_free(&jobs[i]);
    }
    free(items);
    free(jobs);
}

void mm_embed_image(mm_embed_t *e, mm_http_req_t *r)
{
    mm_embed_image_batch(e, &r, 1);
}

/* A chat-prompted model (Qwen2-VL) reads the text and every image in ONE
 * sequence: the vector is its joint embedding, not a weighted mean. With
 * return_parts, the text alone and the images alone come too. */
static void multimodal_sequence(mm_embed_t *e, mm_http_req_t *r, entry_t *m, media_req_t *q)
{
    fail_t f = {0};
    const int d = m->info->dim, has_text = q->text && q->text_len;
    if (!has_text && q->n == 0) {
        emb_failf(&f, 400, "missing_input", "send a 'text', one or more images, or both");
        goto fail;
    }
    if (q->n > e->max_items) {
        emb_failf(&f, 413, "too_many_inputs", "%d images; limits.max_items is %d", q->n, e->max_items);
        goto fail;
    }
    text_opts_t o = emb_default_text_opts;
    const char *instr = NULL;
    if (q->json && emb_jstr(q->json, "instruction", &instr, &f)) goto fail;
    if (instr) {
        o.prefix = instr;
        o.prefix_len = strlen(instr);
    }
    float *fv = e->vecs, *tv = e->vecs + d, *iv = e->vecs + 2 * (size_t)d;
    long tokens = 0;
    int hits = 0, parts = 1;
    e->t_decode = e->t_model = 0;
    chat_item_t it = {.text = q->text, .text_len = q->text_len, .bufs = q->bufs, .lens = q->lens, .n_images = q->n};
    if (emb_encode_chat(e, m, &it, &o, fv, &tokens, q->use_cache, &hits, 0, &f)) goto fail;
    if (q->return_parts && has_text && q->n) {
        long t2 = 0;
        chat_item_t ti = {.text = q->text, .text_len = q->text_len}, ii = it;
        ii.text = NULL;
        ii.text_len = 0;
        if (emb_encode_chat(e, m, &ti, &o, tv, &t2, q->use_cache, &hits, 0, &f) ||
            emb_encode_chat(e, m, &ii, &o, iv, &t2, q->use_cache, &hits, 0, &f))
            goto fail;
        parts = 3;
        if (q->normalize) {
            mm_nn_l2_normalize(tv, d);
            mm_nn_l2_normalize(iv, d);
        }
    }
    emb_set_x_cache(e, r, q->use_cache, hits, parts);
    if (q->normalize) mm_nn_l2_normalize(fv, d);
    mm_buf_t *b = &r->out;
    emb_begin_data(b, m, d);
    mm_buf_puts(b, "{\"index\":0,\"object\":\"embedding\",\"embedding\":");
    emb_write_vec(b, fv, d);
    if (parts == 3) {
        mm_buf_puts(b, ",\"text_embedding\":");
        emb_write_vec(b, tv, d);
        mm_buf_puts(b, ",\"image_embedding\":");
        emb_write_vec(b, iv, d);
    }
    mm_buf_printf(b, "}],\"fusion\":\"sequence\",\"images\":%d,\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}\n",
                  q->n, tokens, tokens);
    mm_http_respond_json(r, 200);
    return;
fail:
    emb_respond_fail(r, &f);
}

void mm_embed_multimodal(mm_embed_t *e, mm_http_req_t *r)
{
    fail_t f = {0};
    media_req_t q;
    entry_t *m;
    if (read_media(e, r, &q, 1, &f) || !(m = emb_pick_model_for(e, q.model, 1, 1, 0, &f))) goto fail;
    if (m->info->chat) {
        multimodal_sequence(e, r, m, &q);
        media_free(&q);
        return;
    }
    if (!q.text || !q.text_len) {
        emb_failf(&f, 400, "missing_text", "a non-empty 'text' is required");
        goto fail;
    }
    if (q.n != 1) {
        emb_failf(&f, 400, "missing_image", q.n ? "send exactly one image" : "an 'image' is required");
        goto fail;
    }
    if (q.wt + q.wi <= 0) {
        emb_failf(&f, 400, "invalid_parameter", "text_weight + image_weight must be positive");
        goto fail;
    }
    int d = m->info->dim;
    float *tv = e->vecs, *iv = e->vecs + d, *fv = e->vecs + 2 * (size_t)d;
    long tokens = 0;
    const char *texts[1] = {q.text};
    size_t tl[1] = {q.text_len};
    int hits = 0;
    if (emb_encode_texts(e, m, texts, tl, 1, tv, &tokens, q.use_cache, &hits, &f) ||
        emb_encode_images(e, m, q.bufs, q.lens, 1, iv, q.use_cache, &hits, &f))
        goto fail;
    emb_set_x_cache(e, r, q.use_cache, hits, 2);
    mm_nn_l2_normalize(tv, d);
    mm_nn_l2_normalize(iv, d);
    for (int i = 0; i < d; i++) fv[i] = (float)(q.wt * tv[i] + q.wi * iv[i]);
    if (!emb_vec_usable(fv, d)) {
        emb_failf(&f, 422, "degenerate_embedding",
              "the weighted text and image vectors cancel out (a zero or non-finite vector); change the weights");
        goto fail;
    }
    if (q.normalize) mm_nn_l2_normalize(fv, d);
    /* the same list shape as every other route: one item, its parts inside */
    mm_buf_t *b = &r->out;
    emb_begin_data(b, m, d);
    mm_buf_puts(b, "{\"index\":0,\"object\":\"embedding\",\"embedding\":");
    emb_write_vec(b, fv, d);
    if (q.return_parts) {
        mm_buf_puts(b, ",\"text_embedding\":");
        emb_write_vec(b, tv, d);
        mm_buf_puts(b, ",\"image_embedding\":");
        emb_write_vec(b, iv, d);
    }
    mm_buf_printf(b, "}],\"weights\":{\"text\":%g,\"image\":%g},\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}\n",
                  q.wt, q.wi, tokens, tokens);
    mm_http_respond_json(r, 200);
    media_free(&q);
    return;
fail:
    media_free(&q);
    emb_respond_fail(r, &f);
}

