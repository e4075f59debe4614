/* POST /embed/document: PDF pages rendered or read by the isolated renderer. */
#include <ctype.h>
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "mmembed/nn.h"
#include "mmembed/log.h"

/* ---------------------------------------------------------------- /embed/document */

enum { DOC_IMAGE = 1, DOC_TEXT = 2 };

typedef struct {
    const char *model, *pages;
    int mode, pool, return_text, normalize, use_cache;
    const unsigned char *pdf;
    size_t len;
    unsigned char *owned;
    json_object *json;
    form_t form;
} doc_req_t;

static int doc_mode(const char *s, int *out, fail_t *f)
{
    if (!strcmp(s, "image")) *out = DOC_IMAGE;
    else if (!strcmp(s, "text")) *out = DOC_TEXT;
    else if (!strcmp(s, "both")) *out = DOC_IMAGE | DOC_TEXT;
    else return emb_failf(f, 400, "invalid_parameter", "'mode' must be image, text or both");
    return 0;
}

static int doc_pooling(const char *s, int *out, fail_t *f)
{
    if (!strcmp(s, "none")) *out = 0;
    else if (!strcmp(s, "mean")) *out = 1;
    else return emb_failf(f, 400, "invalid_parameter", "'pooling' must be none or mean");
    return 0;
}

static int read_doc(mm_embed_t *e, mm_http_req_t *r, doc_req_t *q, fail_t *f)
{
    memset(q, 0, sizeof *q);
    q->normalize = q->use_cache = 1;
    const char *mode = NULL, *pool = NULL;
    if (emb_is_multipart(r->content_type)) {
        if (emb_read_form(e, r, &q->form, f)) return -1;
        form_t *fm = &q->form;
        for (int i = 0; i < fm->n; i++)
            if (fm->parts[i].is_file) {
                if (q->pdf) return emb_failf(f, 400, "too_many_documents", "send one document per request");
                q->pdf = (const unsigned char *)(fm->parts[i].data.data ? fm->parts[i].data.data : "");
                q->len = fm->parts[i].data.len;
            }
        const part_t *p;
        if ((p = emb_form_field(fm, "model")) && p->data.len) q->model = p->data.data;
        if ((p = emb_form_field(fm, "pages")) && p->data.len) q->pages = p->data.data;
        if ((p = emb_form_field(fm, "mode")) && p->data.len) mode = p->data.data;
        if ((p = emb_form_field(fm, "pooling")) && p->data.len) pool = p->data.data;
        const char *bools[] = {"return_text", "normalize", "cache"};
        int *dst[] = {&q->return_text, &q->normalize, &q->use_cache};
        for (int k = 0; k < 3; k++)
            if ((p = emb_form_field(fm, bools[k])) && emb_parse_bool(p->data.data ? p->data.data : "", dst[k]))
                return emb_failf(f, 400, "invalid_parameter", "field '%s' must be true or false", bools[k]);
    } else if (emb_is_json(r->content_type)) {
        if (!(q->json = emb_read_json(e, r, f))) return -1;
        json_object *j = q->json, *v;
        if (emb_jstr(j, "model", &q->model, f) || emb_jstr(j, "pages", &q->pages, f) || emb_jstr(j, "mode", &mode, f) ||
            emb_jstr(j, "pooling", &pool, f) || emb_jbool(j, "return_text", &q->return_text, f) ||
            emb_jbool(j, "normalize", &q->normalize, f) || emb_jbool(j, "cache", &q->use_cache, f))
            return -1;
        if (!json_object_object_get_ex(j, "document", &v) || !json_object_is_type(v, json_type_string))
            return emb_failf(f, 400, "missing_document", "'document' (a base64 PDF or data: URI) is required");
        if (emb_decode_b64_image(json_object_get_string(v), (size_t)json_object_get_string_len(v), &q->owned, &q->len, 0,
                             f))
            return -1;
        q->pdf = q->owned;
    } else {
        mm_http_drain(r, e->conf->max_body_bytes);
        return emb_failf(f, 415, "unsupported_media_type",
                     "send multipart/form-data with the PDF as a file part, or application/json with 'document'");
    }
    if (!q->pdf || !q->len) return emb_failf(f, 400, "missing_document", "no document was sent");
    if (mode && doc_mode(mode, &q->mode, f)) return -1;
    if (pool && doc_pooling(pool, &q->pool, f)) return -1;
    return 0;
}

static void doc_free(doc_req_t *q)
{
    free(q->owned);
    json_object_put(q->json);
    emb_form_free(&q->form);
}

static int doc_fail(fail_t *f, int rc, const char *err)
{
    const char *code = rc == MM_E_UNSUPPORTED ? "not_a_pdf"
                       : rc == MM_E_TOOBIG    ? "document_too_large"
                       : rc == MM_E_TIMEOUT   ? "render_budget_exceeded"
                       : rc == MM_E_INVALID   ? "invalid_pages"
                       : strstr(err, "encrypted") ? "encrypted_document"
                       : rc == MM_ERR         ? "renderer_failed"
                                              : "unreadable_document";
    int status = rc == MM_ERR ? 503 : mm_status_http(rc);
    if (rc == MM_E_TIMEOUT) status = 422;
    return emb_failf(f, status, code, "%s", err);
}

/* Render the selected pages, preprocess and encode them in chunks; page
 * vectors go through the shared cache keyed by the rendered pixels. */
static int doc_images(mm_embed_t *e, entry_t *m, mm_doc_job_t *j, const doc_req_t *q, const mm_doc_info_t *di,
                      const int *pages, int n, float *out, int *hits, fail_t *f)
{
    char err[MM_ERRLEN] = "";
    int *scale = malloc(sizeof(int) * (size_t)n);
    mm_doc_page_t *pg = malloc(sizeof *pg * (size_t)n);
    mm_buf_t px;
    mm_buf_init(&px);
    int rc = -1;
    if (!scale || !pg) {
        emb_failf(f, 500, NULL, "out of memory");
        goto done;
    }
    /* no more pixels than the model can use: its input size, twice over
     * (antialiased text survives the resize), within max_page_pixels */
    for (int i = 0; i < n; i++) {
        int p = pages[i] - 1;
        double w = p < di->n_sizes ? di->w_pt[p] : 612, h = p < di->n_sizes ? di->h_pt[p] : 792;
        scale[i] = mm_doc_scale_to(w, h, 2 * m->info->image_size, e->conf->max_page_pixels);
    }
    int drc = mm_doc_render(j, q->pdf, q->len, pages, scale, n, &px, pg, err, sizeof err);
    if (drc != MM_OK) {
        doc_fail(f, drc, err);
        goto done;
    }
    size_t per = (size_t)m->info->channels * m->info->image_size * m->info->image_size;
    int d = m->info->dim;
    mm_cache_key_t ck;
    char kind[48];
    for (int base = 0; base < n; base += IMG_CHUNK) {
        int k = MM_MIN(IMG_CHUNK, n - base), nm = 0;
        double t0 = emb_ms_now();
        for (int i = base; i < base + k; i++) {
            snprintf(kind, sizeof kind, "docpage:%dx%d", pg[i].width, pg[i].height);
            if (q->use_cache && e->cache) {
                emb_input_key(e, m->name, kind, pg[i].rgb, (size_t)pg[i].width * pg[i].height * 3, &ck);
                if (mm_cache_get(e->cache, &ck, out + (size_t)i * d, d) == 1) {
                    ++*hits;
                    continue;
                }
            }
            if (mm_preproc_from_rgb(m->pre, pg[i].rgb, pg[i].width, pg[i].height, (size_t)pg[i].width * 3,
                                    e->pix + (size_t)nm * per)) {
                emb_failf(f, 422, "invalid_page", "page %d: preprocessing failed", pages[i]);
                goto done;
            }
            e->miss[nm++] = i;
        }
        double t1 = emb_ms_now();
        if (nm && mm_encoder_encode_pixels(m->run, e->pix, nm, e->tmp)) {
            emb_failf(f, 500, NULL, "image encoder failed");
            goto done;
        }
        e->t_decode += t1 - t0;
        e->t_model += emb_ms_now() - t1;
        for (int x = 0; x < nm; x++) {
            int i = e->miss[x];
            memcpy(out + (size_t)i * d, e->tmp + (size_t)x * d, sizeof(float) * (size_t)d);
            if (q->use_cache && e->cache) {
                snprintf(kind, sizeof kind, "docpage:%dx%d", pg[i].width, pg[i].height);
                emb_input_key(e, m->name, kind, pg[i].rgb, (size_t)pg[i].width * pg[i].height * 3, &ck);
                mm_cache_put(e->cache, &ck, out + (size_t)i * d, d);
            }
        }
    }
    rc = 0;
done:
    mm_buf_free(&px);
    free(scale);
    free(pg);
    return rc;
}

void mm_embed_document(mm_embed_t *e, mm_http_req_t *r)
{
    fail_t f = {0};
    doc_req_t q;
    entry_t *m = NULL;
    static mm_doc_info_t di;   /* 32 KiB: off the request thread's stack */
    int *pages = NULL;
    const char **texts = NULL;
    size_t *tlens = NULL;
    mm_buf_t tbuf;
    mm_buf_init(&tbuf);
    char err[MM_ERRLEN] = "";
    if (read_doc(e, r, &q, &f)) goto fail;
    int need_text = q.mode ? (q.mode & DOC_TEXT) != 0 : 0, need_vision = q.mode ? (q.mode & DOC_IMAGE) != 0 : 0;
    if (!(m = emb_pick_model_for(e, q.model, need_text, need_vision, need_vision || !q.mode ? MM_MOD_IMAGE : MM_MOD_TEXT,
                             &f)))
        goto fail;
    if (!q.mode) q.mode = m->info->has_vision ? DOC_IMAGE : DOC_TEXT;   /* the default follows the model */
    if (((q.mode & DOC_IMAGE) && !m->info->has_vision) || ((q.mode & DOC_TEXT) && !m->info->has_text)) {
        emb_failf(&f, 422, "mode_not_supported", "model '%s' cannot embed %s", m->name,
              (q.mode & DOC_IMAGE) && !m->info->has_vision ? "page images" : "page text");
        goto fail;
    }
    if (e->doc.fd < 0) {
        emb_failf(&f, 503, "renderer_unavailable", "this worker has no document renderer; retry shortly");
        goto fail;
    }
    mm_doc_limits_t lim = {e->conf->max_pages, e->conf->max_page_pixels, e->conf->render_budget,
                           e->conf->max_pdf_bytes, e->conf->render_memory};
    mm_doc_job_t job;
    mm_doc_job_begin(&job, &e->doc, &lim);
    /* the highest page the selection names (to size pdfinfo's page list) */
    int maxp = lim.max_pages, n = 0, rc;
    if (!(pages = malloc(sizeof(int) * (size_t)(lim.max_pages + 1)))) {
        emb_failf(&f, 500, NULL, "out of memory");
        goto fail;
    }
    if (q.pages && *q.pages) {
        rc = mm_doc_parse_pages(q.pages, 1 << 30, pages, lim.max_pages, &n, err, sizeof err);
        if (rc) {
            doc_fail(&f, rc, err);
            goto fail;
        }
        for (int i = 0; i < n; i++) maxp = MM_MAX(maxp, pages[i]);
    }
    if ((rc = mm_doc_info(&job, q.pdf, q.len, maxp, &di, err, sizeof err)) ||
        (rc = mm_doc_parse_pages(q.pages, di.n_pages, pages, lim.max_pages, &n, err, sizeof err))) {
        doc_fail(&f, rc, err);
        goto fail;
    }
    int both = q.mode == (DOC_IMAGE | DOC_TEXT), nv = both ? 2 * n : n, d = m->info->dim, hits = 0;
    if (nv + 1 > e->max_vecs) {
        emb_failf(&f, 413, "too_many_inputs", "%d pages; at most %d per request here", n, (e->max_vecs - 1) / 2);
        goto fail;
    }
    e->t_decode = e->t_model = 0;
    if ((q.mode & DOC_IMAGE) && doc_images(e, m, &job, &q, &di, pages, n, e->vecs, &hits, &f)) goto fail;
    int n_text = 0;
    if (q.mode & DOC_TEXT) {
        texts = calloc((size_t)n, sizeof *texts);
        tlens = calloc((size_t)n, sizeof *tlens);
        if (!texts || !tlens) {
            emb_failf(&f, 500, NULL, "out of memory");
            goto fail;
        }
        if ((rc = mm_doc_text(&job, q.pdf, q.len, pages, n, &tbuf, texts, tlens, err, sizeof err))) {
            doc_fail(&f, rc, err);
            goto fail;
        }
        for (int i = 0; i < n; i++) {
            size_t k = 0;
            while (k < tlens[i] && isspace((unsigned char)texts[i][k])) k++;
            if (k < tlens[i]) n_text++;
            else tlens[i] = 0;   /* no text on this page: no text item */
        }
        if (!n_text && q.mode == DOC_TEXT) {
            emb_failf(&f, 422, "no_text_layer", "the selected pages have no text layer (try mode=image)");
            goto fail;
        }
        /* one vector per page with text; the model's truncation applies */
        const char **tt = calloc((size_t)n_text + 1, sizeof *tt);
        size_t *tl = calloc((size_t)n_text + 1, sizeof *tl);
        long tokens = 0;
        int k = 0;
        for (int i = 0; tt && tl && i < n; i++)
            if (tlens[i]) tt[k] = texts[i], tl[k++] = tlens[i];
        rc = tt && tl ? emb_encode_texts(e, m, tt, tl, n_text, e->vecs + (size_t)(both ? n : 0) * d, &tokens, q.use_cache,
                                     &hits, &f)
                      : emb_failf(&f, 500, NULL, "out of memory");
        free(tt);
        free(tl);
        if (rc) goto fail;
    }
    emb_set_x_cache(e, r, q.use_cache, hits, nv);
    size_t hl = strlen(r->headers);
    snprintf(r->headers + hl, sizeof r->headers - hl, "Server-Timing: render;dur=%.2f, decode;dur=%.2f, model;dur=%.2f\r\n",
             job.render_ms, e->t_decode, e->t_model);
    emb_begin_data(&r->out, m, d);
    int idx = 0, ti = 0;
    float *pooled = e->vecs + (size_t)nv * d;
    memset(pooled, 0, sizeof(float) * (size_t)d);
    for (int pass = 0; pass < 2; pass++) {
        int kind = pass ? DOC_TEXT : DOC_IMAGE;
        if (!(q.mode & kind)) continue;
        for (int i = 0; i < n; i++) {
            if (kind == DOC_TEXT && !tlens[i]) continue;
            int slot = kind == DOC_IMAGE ? i : (both ? n : 0) + ti++;
            float *vec = e->vecs + (size_t)slot * d;
            mm_nn_l2_normalize(vec, d);   /* pooling averages unit vectors */
            for (int x = 0; x < d; x++) pooled[x] += vec[x];
            mm_buf_printf(&r->out, "%s{\"object\":\"embedding\",\"index\":%d,\"page\":%d,\"kind\":\"%s\",", idx ? "," : "",
                          idx, pages[i], kind == DOC_IMAGE ? "image" : "text");
            idx++;
            if (q.return_text && texts) {
                mm_buf_puts(&r->out, "\"text\":");
                mm_buf_json_str(&r->out, texts[i], tlens[i]);
                mm_buf_puts(&r->out, ",");
            }
            mm_buf_puts(&r->out, "\"embedding\":");
            emb_write_vec(&r->out, vec, d);
            mm_buf_puts(&r->out, "}");
        }
    }
    mm_buf_printf(&r->out, "],\"pages\":%d", di.n_pages);
    if (q.pool && idx) {
        mm_nn_l2_normalize(pooled, d);
        mm_buf_puts(&r->out, ",\"document\":{\"pooling\":\"mean\",\"embedding\":");
        emb_write_vec(&r->out, pooled, d);
        mm_buf_puts(&r->out, "}");
    }
    mm_buf_puts(&r->out, "}\n");
    mm_http_respond_json(r, 200);
    goto out;
fail:
    if (f.status >= 500 && f.status != 503) mm_log_warn("req=%s /embed/document: %s", r->request_id, f.msg);
    emb_respond_fail(r, &f);
out:
    free(pages);
    free(texts);
    free(tlens);
    mm_buf_free(&tbuf);
    doc_free(&q);
}

