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
#include "mmembed/base64.h"
#include "mmembed/image.h"
#include "mmembed/nn.h"
#include "mmembed/log.h"

/* ---------------------------------------------------------------- /embed/document */

enum { DOC_IMAGE = 1, DOC_TEXT = 2 };
enum { THUMB_MIN = 16, THUMB_MAX = 1024 };   /* `thumbnails`: the long side in pixels */

typedef struct {
    const char *model, *pages;
    int mode, pool, return_text, normalize, use_cache;
    int return_images;      /* each page item carries its rendered page as a PNG */
    int thumb;              /* > 0: each page item carries a PNG thumbnail of this long side */
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

static int doc_thumb(const char *s, long v, int *out, fail_t *f)
{
    char *end = NULL;
    if (s) v = strtol(s, &end, 10);
    if ((s && (!*s || *end)) || (v != 0 && (v < THUMB_MIN || v > THUMB_MAX)))
        return emb_failf(f, 400, "invalid_parameter",
                         "'thumbnails' must be 0 (none) or a thumbnail's long side in pixels, %d to %d", THUMB_MIN,
                         THUMB_MAX);
    *out = (int)v;
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
        const char *bools[] = {"return_text", "normalize", "cache", "return_images"};
        int *dst[] = {&q->return_text, &q->normalize, &q->use_cache, &q->return_images};
        for (int k = 0; k < 4; k++)
            if ((p = emb_form_field(fm, bools[k])) && emb_parse_bool(p->data.data ? p->data.data : "", dst[k]))
                return emb_failf(f, 400, "invalid_parameter", "field '%s' must be true or false", bools[k]);
        if ((p = emb_form_field(fm, "thumbnails")) && doc_thumb(p->data.data ? p->data.data : "", 0, &q->thumb, f))
            return -1;
    } else if (emb_is_json(r->content_type)) {
        if (!(q->json = emb_read_json(e, r, f))) return -1;
        json_object *j = q->json, *v;
        if (emb_jstr(j, "model", &q->model, f) || emb_jstr(j, "pages", &q->pages, f) || emb_jstr(j, "mode", &mode, f) ||
            emb_jstr(j, "pooling", &pool, f) || emb_jbool(j, "return_text", &q->return_text, f) ||
            emb_jbool(j, "normalize", &q->normalize, f) || emb_jbool(j, "cache", &q->use_cache, f) ||
            emb_jbool(j, "return_images", &q->return_images, f))
            return -1;
        if (json_object_object_get_ex(j, "thumbnails", &v) && !json_object_is_type(v, json_type_null)) {
            if (!json_object_is_type(v, json_type_int)) return doc_thumb("", 0, &q->thumb, f);
            int64_t t = json_object_get_int64(v);
            if (doc_thumb(NULL, t < 0 || t > THUMB_MAX ? -1 : (long)t, &q->thumb, f)) return -1;
        }
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

/* The JSON members a page item carries beside its vector: the rendered
 * size and, on request, the page as rendered (a lossless PNG: exactly the
 * pixels the model read) and a thumbnail scaled down from it. Both are
 * our own encoding of the renderer's pixels: nothing of the PDF reaches
 * the client. Appends to b; -1 with f set on failure. */
static int page_extras(const doc_req_t *q, const mm_doc_page_t *pg, mm_buf_t *b, fail_t *f)
{
    char err[MM_ERRLEN] = "";
    unsigned char *png = NULL, *small = NULL;
    size_t len = 0;
    int rc = -1, w = pg->width, h = pg->height;
    mm_buf_printf(b, "\"width\":%d,\"height\":%d,", w, h);
    if (q->return_images) {
        if (mm_image_encode_png(pg->rgb, w, h, (size_t)w * 3, 1, &png, &len, err, sizeof err)) goto done;
        mm_buf_puts(b, "\"image\":\"data:image/png;base64,");
        mm_base64_encode(b, png, len);
        mm_buf_puts(b, "\",");
        free(png);
        png = NULL;
    }
    if (q->thumb) {
        const unsigned char *src = pg->rgb;
        int tw = w, th = h;   /* never larger than the page as rendered */
        if (MM_MAX(w, h) > q->thumb) {
            if (w >= h) tw = q->thumb, th = MM_MAX(1, (int)lround((double)h * q->thumb / w));
            else th = q->thumb, tw = MM_MAX(1, (int)lround((double)w * q->thumb / h));
            if (!(small = malloc((size_t)tw * th * 3))) {
                snprintf(err, sizeof err, "out of memory");
                goto done;
            }
            int r = mm_image_resize(pg->rgb, w, h, (size_t)w * 3, tw, th, 0, 0, tw, th, small, (size_t)tw * 3,
                                    MM_RESAMPLE_BICUBIC, MM_RESIZE_PIL);
            if (r) {
                snprintf(err, sizeof err, "resize failed (%d)", r);
                goto done;
            }
            src = small;
        }
        if (mm_image_encode_png(src, tw, th, (size_t)tw * 3, 6, &png, &len, err, sizeof err)) goto done;
        mm_buf_puts(b, "\"thumbnail\":\"data:image/png;base64,");
        mm_base64_encode(b, png, len);
        mm_buf_puts(b, "\",");
    }
    rc = 0;
done:
    if (rc) emb_failf(f, 500, NULL, "page %d: encoding its image: %s", pg->page, err);
    free(png);
    free(small);
    return rc;
}

/* Render the selected pages, preprocess and encode them in chunks; page
 * vectors go through the shared cache keyed by the rendered pixels. */
static int doc_images(mm_embed_t *e, entry_t *m, mm_doc_job_t *j, const doc_req_t *q, const mm_doc_info_t *di,
                      const int *pages, int n, float *out, int *hits, mm_buf_t *frag, size_t *frag_off,
                      fail_t *f)
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
    /* no more pixels than the model can use: a fixed-size model's input,
     * twice over (antialiased text survives the resize); a model that takes
     * each image at its own size (Qwen2-VL) exactly its max_pixels (a US
     * Letter page at Ops-MM's 1,003,520 pixels is ~104 DPI); both within
     * limits.max_page_pixels */
    const int dynamic = m->info->image_dynamic;
    int64_t cap = e->conf->max_page_pixels;
    if (dynamic && m->pre && m->pre->max_pixels > 0 && m->pre->max_pixels < cap) cap = m->pre->max_pixels;
    for (int i = 0; i < n; i++) {
        int p = pages[i] - 1;
        double w = p < di->n_sizes ? di->w_pt[p] : 612, h = p < di->n_sizes ? di->h_pt[p] : 792;
        scale[i] = mm_doc_scale_to(w, h, dynamic ? 0 : 2 * m->info->image_size, cap);
    }
    int drc = mm_doc_render(j, q->pdf, q->len, pages, scale, n, &px, pg, err, sizeof err);
    if (drc != MM_OK) {
        doc_fail(f, drc, err);
        goto done;
    }
    for (int i = 0; i < n; i++) {   /* frag[frag_off[i], frag_off[i + 1]): page i's extra members */
        frag_off[i] = frag->len;
        if (page_extras(q, &pg[i], frag, f)) goto done;
    }
    frag_off[n] = frag->len;
    if (frag->oom) {
        emb_failf(f, 500, NULL, "out of memory for the page images");
        goto done;
    }
    if (m->info->chat) {   /* each page its own prompt at its own size, through the cache */
        long tokens = 0;
        for (int i = 0; i < n; i++) {
            const unsigned char *rgb = pg[i].rgb;
            const chat_item_t one = {.bufs = &rgb, .n_images = 1, .rgb_w = &pg[i].width, .rgb_h = &pg[i].height};
            /* emb_encode_chat adds its preprocess and model time to e->t_decode / e->t_model */
            if (emb_encode_chat(e, m, &one, &emb_default_text_opts, out + (size_t)i * m->info->dim, &tokens,
                                q->use_cache, hits, i, f))
                goto done;
        }
        rc = 0;
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
        int erc = nm ? mm_encoder_encode_pixels(m->run, e->pix, nm, e->tmp) : MM_OK;
        if (erc) {
            emb_encoder_fail(f, erc, "image encoder");   /* an executor's model: 503 / 504 */
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

/* ---------------------------------------------------------------- text chunks */

/* One piece of a page's text layer that the model takes whole. */
typedef struct {
    int page_i;             /* index into the request's pages[] */
    int no;                 /* chunk index within its page, from 0 */
    const char *text;       /* into the page text; not NUL-terminated */
    size_t len;
    long start, end;        /* code points into the page's text: [start, end) */
} doc_chunk_t;

typedef struct {
    doc_chunk_t *c;
    int n, cap;
    int32_t *ids;           /* (model's max tokens): the fit test's scratch */
    size_t *cut;            /* candidate chunk ends of the current page */
    size_t ncut, capcut;
} chunker_t;

static int is_sp(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static long cp_count(const char *s, size_t n)
{
    long k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

/* Does t[0..len) fit the model's max tokens untruncated? 1 yes, 0 no,
 * -1 failed (f set). The same tokenizer and limit /embed/text uses, so a
 * chunk that fits is embedded whole there too. */
static int chunk_fits(entry_t *m, chunker_t *ck, const char *t, size_t len, int page, fail_t *f)
{
    char err[MM_ERRLEN] = "";
    int n = 0, rc = mm_encoder_tokenize(m->enc, t, len, m->max_tokens, 0, ck->ids, &n, err, sizeof err);
    if (rc == MM_E_TOOBIG) return 0;
    if (rc) return emb_failf(f, 422, "unreadable_text", "page %d's text: %s", page, err), -1;
    return 1;
}

/* Cut one page's text s[0..len) into chunks of at most the model's max
 * tokens. Cuts fall before a run of whitespace (a token boundary for every
 * pre-tokenizer we load: whitespace/BERT, CLIP's regex, byte-level and
 * metaspace all start a new token there); a word too long for one chunk
 * alone is cut between code points. Each cut is the furthest candidate
 * that still fits, found by galloping then bisecting, so a chunk costs
 * O(log words) tokenizer runs, each stopping at the token limit. Trailing
 * whitespace stays with the last chunk, so the chunks concatenate to the
 * page text exactly. */
static int chunk_page(entry_t *m, chunker_t *ck, int page_i, int page, const char *s, size_t len, fail_t *f)
{
    size_t tail = len;
    while (tail > 0 && is_sp((unsigned char)s[tail - 1])) tail--;
    ck->ncut = 0;
    for (size_t i = 1; i <= len; i++) {
        if (i < tail ? !(is_sp((unsigned char)s[i]) && !is_sp((unsigned char)s[i - 1])) : i != len) continue;
        if (ck->ncut == ck->capcut) {
            size_t nc = ck->capcut ? 2 * ck->capcut : 256;
            size_t *x = realloc(ck->cut, nc * sizeof *x);
            if (!x) return emb_failf(f, 500, NULL, "out of memory");
            ck->cut = x, ck->capcut = nc;
        }
        ck->cut[ck->ncut++] = i;
    }
    size_t pos = 0, first = 0;   /* cut[first] is the first candidate past pos */
    long cp = 0;
    for (int no = 0; pos < len; no++) {
        while (first < ck->ncut && ck->cut[first] <= pos) first++;
        size_t end;
        int r = chunk_fits(m, ck, s + pos, ck->cut[first] - pos, page, f);
        if (r < 0) return -1;
        if (r) {   /* gallop: lo fits; hi (when < ncut) does not */
            size_t lo = first, hi = first + 1, step = 1;
            while (hi < ck->ncut && (r = chunk_fits(m, ck, s + pos, ck->cut[hi] - pos, page, f)) == 1)
                lo = hi, step *= 2, hi = MM_MIN(ck->ncut, lo + step);
            if (r < 0) return -1;
            while (hi - lo > 1) {
                size_t mid = lo + (hi - lo) / 2;
                if ((r = chunk_fits(m, ck, s + pos, ck->cut[mid] - pos, page, f)) < 0) return -1;
                if (r) lo = mid;
                else hi = mid;
            }
            end = ck->cut[lo];
        } else {   /* one word over the limit: the longest prefix of whole code points that fits */
            size_t lo = pos, hi = ck->cut[first];
            while (hi - lo > 1) {
                size_t mid = lo + (hi - lo) / 2;
                while (mid > lo && ((unsigned char)s[mid] & 0xC0) == 0x80) mid--;
                if (mid == lo) break;
                if ((r = chunk_fits(m, ck, s + pos, mid - pos, page, f)) < 0) return -1;
                if (r) lo = mid;
                else hi = mid;
            }
            end = lo;
            if (end == pos) {   /* not even one code point fits: take it anyway (the model truncates) */
                end = pos + 1;
                while (end < len && ((unsigned char)s[end] & 0xC0) == 0x80) end++;
            }
        }
        if (ck->n == ck->cap) {
            int nc = ck->cap ? 2 * ck->cap : 64;
            doc_chunk_t *x = realloc(ck->c, (size_t)nc * sizeof *x);
            if (!x) return emb_failf(f, 500, NULL, "out of memory");
            ck->c = x, ck->cap = nc;
        }
        long ncp = cp_count(s + pos, end - pos);
        ck->c[ck->n++] = (doc_chunk_t){page_i, no, s + pos, end - pos, cp, cp + ncp};
        cp += ncp;
        pos = end;
    }
    return 0;
}

static void chunker_free(chunker_t *ck)
{
    free(ck->c);
    free(ck->ids);
    free(ck->cut);
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
    mm_buf_t tbuf, frag;
    mm_buf_init(&tbuf);
    mm_buf_init(&frag);
    size_t *frag_off = NULL;
    chunker_t ck = {0};
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
    int n_img = (q.mode & DOC_IMAGE) ? n : 0, d = m->info->dim, hits = 0;
    if (n_img + 1 > e->max_vecs) {
        emb_failf(&f, 413, "too_many_inputs", "%d pages; at most %d per request here", n, e->max_vecs - 1);
        goto fail;
    }
    e->t_decode = e->t_model = 0;
    if ((q.mode & DOC_IMAGE) && !(frag_off = calloc((size_t)n + 1, sizeof *frag_off))) {
        emb_failf(&f, 500, NULL, "out of memory");
        goto fail;
    }
    if ((q.mode & DOC_IMAGE) && doc_images(e, m, &job, &q, &di, pages, n, e->vecs, &hits, &frag, frag_off, &f))
        goto fail;
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
        if (!(ck.ids = malloc(sizeof(int32_t) * (size_t)(m->info->max_tokens + 1)))) {
            emb_failf(&f, 500, NULL, "out of memory");
            goto fail;
        }
        for (int i = 0; i < n; i++) {
            size_t k = 0;
            while (k < tlens[i] && isspace((unsigned char)texts[i][k])) k++;
            if (k == tlens[i]) continue;   /* no text on this page: no text item */
            if (chunk_page(m, &ck, i, pages[i], texts[i], tlens[i], &f)) goto fail;
            if (n_img + ck.n + 1 > e->max_vecs) {
                emb_failf(&f, 413, "too_many_inputs",
                          "the pages' text makes more than %d chunks of %d tokens; at most %d vectors per request here "
                          "(choose fewer pages)", ck.n, m->max_tokens, e->max_vecs - 1);
                goto fail;
            }
        }
        if (!ck.n && q.mode == DOC_TEXT) {
            emb_failf(&f, 422, "no_text_layer", "the selected pages have no text layer (try mode=image)");
            goto fail;
        }
        /* one vector per chunk; every chunk fits the model's max tokens */
        const char **tt = calloc((size_t)ck.n + 1, sizeof *tt);
        size_t *tl = calloc((size_t)ck.n + 1, sizeof *tl);
        long tokens = 0;
        for (int c = 0; tt && tl && c < ck.n; c++) tt[c] = ck.c[c].text, tl[c] = ck.c[c].len;
        rc = tt && tl ? emb_encode_texts(e, m, tt, tl, ck.n, e->vecs + (size_t)n_img * d, &tokens, q.use_cache, &hits, &f)
                      : emb_failf(&f, 500, NULL, "out of memory");
        free(tt);
        free(tl);
        if (rc) goto fail;
    }
    int nv = n_img + ck.n;
    emb_set_x_cache(e, r, q.use_cache, hits, nv);
    size_t hl = strlen(r->headers);
    snprintf(r->headers + hl, sizeof r->headers - hl, "Server-Timing: render;dur=%.2f, decode;dur=%.2f, model;dur=%.2f\r\n",
             job.render_ms, e->t_decode, e->t_model);
    emb_begin_data(&r->out, m, d);
    int idx = 0;
    float *pooled = e->vecs + (size_t)nv * d;
    memset(pooled, 0, sizeof(float) * (size_t)d);
    for (int slot = 0; slot < nv; slot++) {
        const doc_chunk_t *c = slot < n_img ? NULL : &ck.c[slot - n_img];
        float *vec = e->vecs + (size_t)slot * d;
        mm_nn_l2_normalize(vec, d);   /* pooling averages unit vectors */
        for (int x = 0; x < d; x++) pooled[x] += vec[x];
        mm_buf_printf(&r->out, "%s{\"object\":\"embedding\",\"index\":%d,\"page\":%d,\"kind\":\"%s\",", idx ? "," : "",
                      idx, c ? pages[c->page_i] : pages[slot], c ? "text" : "image");
        idx++;
        if (!c) mm_buf_append(&r->out, frag.data + frag_off[slot], frag_off[slot + 1] - frag_off[slot]);
        if (c) {
            mm_buf_printf(&r->out, "\"chunk\":%d,\"start\":%ld,\"end\":%ld,", c->no, c->start, c->end);
            if (q.return_text) {
                mm_buf_puts(&r->out, "\"text\":");
                mm_buf_json_str(&r->out, c->text, c->len);
                mm_buf_puts(&r->out, ",");
            }
        }
        mm_buf_puts(&r->out, "\"embedding\":");
        emb_write_vec(&r->out, vec, d);
        mm_buf_puts(&r->out, "}");
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
    mm_buf_free(&frag);
    free(frag_off);
    chunker_free(&ck);
    doc_free(&q);
}

