/* Documents: what the worker does with a PDF — check it is one, ask the
 * isolated renderer (docrender.c) for its page count and sizes, the
 * rendered pages and the text layer, and parse what comes back. Every
 * parser here treats the renderer's output as hostile too: a renderer
 * that was taken over could send anything. */
#include "mmembed/document.h"
#include "mmembed/common.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void mm_doc_job_begin(mm_doc_job_t *j, mm_doc_renderer_t *r, const mm_doc_limits_t *lim)
{
    j->r = r;
    j->lim = lim;
    j->deadline_us = now_us() + (int64_t)(lim->budget * 1e6);
    j->render_ms = 0;
}

int mm_doc_sniff(const void *pdf, size_t len, char *err, size_t errlen)
{
    /* Stricter than Acrobat (which looks for %PDF- anywhere in the first
     * 1024 bytes): the header must come first, after at most a byte-order
     * mark and whitespace, so an HTML page that quotes "%PDF-" is a 415. */
    const unsigned char *p = pdf, *end = p + MM_MIN(len, (size_t)1024);
    if (end - p >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf) p += 3;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n' || *p == '\0')) p++;
    if (end - p >= 5 && memcmp(p, "%PDF-", 5) == 0) return MM_OK;
    return mm_errf(err, errlen, MM_E_UNSUPPORTED, "not a PDF (the data does not start with %%PDF-)");
}

/* ---------------------------------------------------------------- parsers */

/* The value after "Key:" on a line of pdfinfo's output. */
static const char *field(const char *line, const char *end, const char *key)
{
    size_t k = strlen(key);
    if ((size_t)(end - line) < k || memcmp(line, key, k) != 0) return NULL;
    line += k;
    while (line < end && *line == ' ') line++;
    return line;
}

static long num(const char *p, const char *end, const char **next)
{
    long v = 0;
    int any = 0;
    while (p < end && isdigit((unsigned char)*p) && v < 100000000) v = v * 10 + (*p++ - '0'), any = 1;
    *next = p;
    return any ? v : -1;
}

static double fnum(const char *p, const char *end, const char **next)
{
    char tmp[32];
    size_t n = 0;
    while (p < end && n < sizeof tmp - 1 && (isdigit((unsigned char)*p) || *p == '.')) tmp[n++] = *p++;
    tmp[n] = '\0';
    *next = p;
    if (!n) return -1;
    double v = strtod(tmp, NULL);
    return isfinite(v) ? v : -1;
}

int mm_doc_parse_info(const char *text, size_t len, mm_doc_info_t *info, char *err, size_t errlen)
{
    info->n_pages = -1;
    info->n_sizes = 0;
    memset(info->w_pt, 0, sizeof info->w_pt);
    memset(info->h_pt, 0, sizeof info->h_pt);
    int rot[MM_DOC_MAX_PAGES];
    memset(rot, 0, sizeof rot);
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        const char *v, *q;
        if ((v = field(p, eol, "Pages:"))) {
            info->n_pages = (int)num(v, eol, &q);
        } else if ((v = field(p, eol, "Page"))) {
            /* "Page    3 size:  595.276 x 841.89 pts (A4)" / "Page    3 rot:   90" */
            long pg = num(v, eol, &q);
            if (pg >= 1 && pg <= MM_DOC_MAX_PAGES) {
                const char *s;
                if ((s = field(q, eol, " size:"))) {
                    double w = fnum(s, eol, &q);
                    const char *x = field(q, eol, " x");
                    double h = x ? fnum(x, eol, &q) : -1;
                    if (w > 0 && h > 0) {
                        info->w_pt[pg - 1] = (float)w;
                        info->h_pt[pg - 1] = (float)h;
                        if (pg > info->n_sizes) info->n_sizes = (int)pg;
                    }
                } else if ((s = field(q, eol, " rot:"))) {
                    rot[pg - 1] = (int)num(s, eol, &q);
                }
            }
        }
        p = eol + 1;
    }
    if (info->n_pages < 0) return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "the renderer reported no page count");
    if (info->n_sizes > info->n_pages) info->n_sizes = info->n_pages;
    for (int i = 0; i < info->n_sizes; i++) {
        if (!(info->w_pt[i] > 0 && info->h_pt[i] > 0)) {   /* a gap in the list */
            info->n_sizes = i;
            break;
        }
        if (rot[i] % 180 == 90) {
            float t = info->w_pt[i];
            info->w_pt[i] = info->h_pt[i];
            info->h_pt[i] = t;
        }
    }
    return MM_OK;
}

int mm_doc_parse_ppm(const uint8_t *p, size_t len, int64_t max_pixels, int *w, int *h, const uint8_t **rgb,
                     size_t *used, char *err, size_t errlen)
{
    size_t i = 0;
    long v[3];
    if (len < 2 || p[0] != 'P' || p[1] != '6')
        return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "renderer output: not a PPM image");
    i = 2;
    for (int k = 0; k < 3; k++) {
        for (;;) {   /* whitespace and comments */
            while (i < len && isspace(p[i])) i++;
            if (i < len && p[i] == '#') {
                while (i < len && p[i] != '\n') i++;
                continue;
            }
            break;
        }
        long x = 0;
        int digits = 0;
        while (i < len && isdigit(p[i]) && digits < 9) x = x * 10 + (p[i++] - '0'), digits++;
        if (!digits || (i < len && isdigit(p[i])))
            return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "renderer output: bad PPM header");
        v[k] = x;
    }
    if (i >= len || !isspace(p[i])) return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "renderer output: bad PPM header");
    i++;
    if (v[0] < 1 || v[1] < 1 || v[2] != 255)
        return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "renderer output: PPM %ldx%ld maxval %ld", v[0], v[1], v[2]);
    if ((int64_t)v[0] * v[1] > max_pixels)
        return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "renderer output: a %ldx%ld page is over the pixel limit",
                       v[0], v[1]);
    size_t need = (size_t)v[0] * (size_t)v[1] * 3;
    if (len - i < need) return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "renderer output: PPM image cut short");
    *w = (int)v[0];
    *h = (int)v[1];
    *rgb = p + i;
    *used = i + need;
    return MM_OK;
}

int mm_doc_parse_pages(const char *spec, int n_pages, int *out, int max_out, int *n, char *err, size_t errlen)
{
    *n = 0;
    if (n_pages < 1) return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "the document has no pages");
    if (!spec || !*spec) {
        if (n_pages > max_out)
            return mm_errf(err, errlen, MM_E_TOOBIG,
                           "the document has %d pages; at most %d are rendered per request (choose them with "
                           "\"pages\", e.g. \"1-%d\")", n_pages, max_out, max_out);
        for (int i = 0; i < n_pages; i++) out[i] = i + 1;
        *n = n_pages;
        return MM_OK;
    }
    const char *p = spec;
    for (;;) {
        while (*p == ' ') p++;
        char *e;
        long a = strtol(p, &e, 10), b = a;
        if (e == p || a < 1) return mm_errf(err, errlen, MM_E_INVALID, "pages: expected a page number at \"%.20s\"", p);
        p = e;
        while (*p == ' ') p++;
        if (*p == '-') {
            p++;
            while (*p == ' ') p++;
            b = strtol(p, &e, 10);
            if (e == p || b < a) return mm_errf(err, errlen, MM_E_INVALID, "pages: bad range at \"%.20s\"", spec);
            p = e;
        }
        if (b > n_pages)
            return mm_errf(err, errlen, MM_E_INVALID, "pages: page %ld is past the end (the document has %d)",
                           b, n_pages);
        for (long pg = a; pg <= b; pg++) {
            int dup = 0;
            for (int i = 0; i < *n && !dup; i++) dup = out[i] == pg;
            if (dup) continue;
            if (*n >= max_out)
                return mm_errf(err, errlen, MM_E_TOOBIG, "pages: more than %d pages in one request", max_out);
            out[(*n)++] = (int)pg;
        }
        while (*p == ' ') p++;
        if (*p == '\0') break;
        if (*p != ',') return mm_errf(err, errlen, MM_E_INVALID, "pages: unexpected \"%.20s\"", p);
        p++;
    }
    return MM_OK;
}

int mm_doc_scale_to(double w_pt, double h_pt, int min_short, int64_t max_pixels)
{
    if (!(w_pt > 0 && h_pt > 0)) w_pt = h_pt = 1;
    double lo = MM_MIN(w_pt, h_pt), hi = MM_MAX(w_pt, h_pt), aspect = hi / lo;
    double s = min_short > 0 ? min_short : 1e9;
    if (max_pixels > 0) s = MM_MIN(s, sqrt((double)max_pixels / aspect));
    double l = floor(s * aspect);
    if (l > 65536) l = 65536;
    return l < 1 ? 1 : (int)l;
}

/* ---------------------------------------------------------------- renderer runs */

static int run_tool(mm_doc_job_t *j, mm_doc_run_t *run, const void *pdf, size_t len, mm_buf_t *out, char *err,
                    size_t errlen)
{
    int64_t t0 = now_us();
    double left = (j->deadline_us - t0) / 1e6;
    if (left <= 0.01)
        return mm_errf(err, errlen, MM_E_TIMEOUT, "rendering the document took longer than limits.render_budget (%gs)",
                       j->lim->budget);
    run->seconds = left;
    run->memory = j->lim->memory;
    mm_doc_result_t res;
    int rc = mm_doc_run(j->r, run, pdf, len, out, &res, err, errlen);
    j->render_ms += (now_us() - t0) / 1e3;
    if (rc != MM_OK) return rc;
    /* the first line of stderr, for the client: poppler's own words */
    char *nl = strchr(res.stderr_text, '\n');
    if (nl) *nl = '\0';
    switch (res.end) {
    case MM_DOC_END_EXIT:
        if (res.code == 0) return MM_OK;
        if (strstr(res.stderr_text, "page count 0") || strstr(res.stderr_text, "first page (1) can not be after"))
            return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "the PDF has no pages");
        if (strstr(res.stderr_text, "password"))
            return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "the PDF is encrypted (it needs a password)");
        return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "the PDF could not be read%s%s",
                       res.stderr_text[0] ? ": " : "", res.stderr_text);
    case MM_DOC_END_TIMEOUT:
        return mm_errf(err, errlen, MM_E_TIMEOUT, "rendering the document took longer than limits.render_budget (%gs)",
                       j->lim->budget);
    case MM_DOC_END_OUTPUT:
        return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "the renderer's output was larger than the pages can be");
    case MM_DOC_END_SIGNAL:
        if (res.code == 24 /* SIGXCPU */ || res.code == 9)
            return mm_errf(err, errlen, MM_E_TIMEOUT, "rendering the document ran out of CPU time (limits.render_budget)");
        if (res.code == 6 || res.code == 11)   /* abort (often a failed allocation), segfault */
            return mm_errf(err, errlen, MM_E_UNPROCESSABLE,
                           "the renderer failed on this PDF (signal %d; over limits.render_memory or a malformed file)",
                           res.code);
        return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "the renderer failed on this PDF (signal %d)", res.code);
    default:
        return mm_errf(err, errlen, MM_ERR, "the document renderer could not be started%s%s",
                       res.stderr_text[0] ? ": " : "", res.stderr_text);
    }
}

int mm_doc_info(mm_doc_job_t *j, const void *pdf, size_t len, int last_page, mm_doc_info_t *info, char *err,
                size_t errlen)
{
    if ((int64_t)len > j->lim->max_pdf_bytes)
        return mm_errf(err, errlen, MM_E_TOOBIG, "the PDF has %zu bytes; limits.max_pdf_bytes is %lld", len,
                       (long long)j->lim->max_pdf_bytes);
    int rc = mm_doc_sniff(pdf, len, err, errlen);
    if (rc != MM_OK) return rc;
    if (last_page < 1) last_page = 1;
    if (last_page > MM_DOC_MAX_PAGES) last_page = MM_DOC_MAX_PAGES;
    mm_doc_run_t run = {.tool = MM_DOC_TOOL_INFO, .first = 1, .last = last_page, .max_out = 64 * (int64_t)last_page + 65536};
    mm_buf_t out;
    mm_buf_init(&out);
    rc = run_tool(j, &run, pdf, len, &out, err, errlen);
    if (rc == MM_OK) rc = mm_doc_parse_info(out.data ? out.data : "", out.len, info, err, errlen);
    mm_buf_free(&out);
    if (rc == MM_OK && info->n_pages < 1) rc = mm_errf(err, errlen, MM_E_UNPROCESSABLE, "the PDF has no pages");
    return rc;
}

int mm_doc_render(mm_doc_job_t *j, const void *pdf, size_t len, const int *pages, const int *scale_to, int n,
                  mm_buf_t *out, mm_doc_page_t *pages_out, char *err, size_t errlen)
{
    mm_buf_reset(out);
    size_t *offs = calloc((size_t)n + 1, sizeof *offs);
    if (!offs) return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    int rc = MM_OK;
    for (int i = 0; i < n && rc == MM_OK;) {
        int k = i + 1;   /* a run: consecutive pages at one scale */
        while (k < n && pages[k] == pages[k - 1] + 1 && scale_to[k] == scale_to[i]) k++;
        size_t start = out->len;
        int64_t px = 0;
        /* pdftoppm may round the short side up by a pixel: (s + 2)^2 bounds a page */
        for (int q = i; q < k; q++) px += (int64_t)(scale_to[q] + 2) * (scale_to[q] + 2);
        mm_doc_run_t run = {.tool = MM_DOC_TOOL_PPM, .first = pages[i], .last = pages[k - 1], .scale_to = scale_to[i],
                            .max_out = px * 3 + 64 * (int64_t)(k - i)};
        rc = run_tool(j, &run, pdf, len, out, err, errlen);
        size_t pos = start;
        for (int q = i; q < k && rc == MM_OK; q++) {
            size_t used;
            int64_t cap = (int64_t)(scale_to[q] + 2) * (scale_to[q] + 2);
            rc = mm_doc_parse_ppm((const uint8_t *)out->data + pos, out->len - pos, MM_MIN(cap, j->lim->max_page_pixels),
                                  &pages_out[q].width, &pages_out[q].height, &pages_out[q].rgb, &used, err, errlen);
            pages_out[q].page = pages[q];
            /* pdftoppm answers an allocation failure with a 1x1 page and
             * exit status 0: the long side must be what was asked */
            int lo = MM_MAX(pages_out[q].width, pages_out[q].height);
            if (rc == MM_OK && (lo < scale_to[q] - 2 || lo > scale_to[q] + 2))
                rc = mm_errf(err, errlen, MM_E_UNPROCESSABLE,
                             "the renderer gave page %d as %dx%d pixels instead of a %d-pixel long side (out of "
                             "memory: limits.render_memory)", pages[q], pages_out[q].width, pages_out[q].height,
                             scale_to[q]);
            offs[q] = (size_t)(pages_out[q].rgb - (const uint8_t *)out->data);
            pos += used;
        }
        if (rc == MM_OK && pos != out->len)
            rc = mm_errf(err, errlen, MM_E_UNPROCESSABLE, "renderer output: unexpected bytes after the pages");
        i = k;
    }
    /* out->data may have moved while it grew: point into its final place */
    for (int q = 0; q < n && rc == MM_OK; q++) pages_out[q].rgb = (const uint8_t *)out->data + offs[q];
    free(offs);
    return rc;
}

int mm_doc_text(mm_doc_job_t *j, const void *pdf, size_t len, const int *pages, int n, mm_buf_t *out,
                const char **texts, size_t *lens, char *err, size_t errlen)
{
    mm_buf_reset(out);
    size_t *offs = calloc((size_t)n + 1, sizeof *offs);
    if (!offs) return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    int rc = MM_OK;
    for (int i = 0; i < n && rc == MM_OK;) {
        int k = i + 1;
        while (k < n && pages[k] == pages[k - 1] + 1) k++;
        size_t start = out->len;
        mm_doc_run_t run = {.tool = MM_DOC_TOOL_TEXT, .first = pages[i], .last = pages[k - 1],
                            .max_out = (int64_t)(k - i) * (4 << 20)};
        rc = run_tool(j, &run, pdf, len, out, err, errlen);
        /* pdftotext ends every page with a form feed */
        size_t pos = start;
        for (int q = i; q < k && rc == MM_OK; q++) {
            const char *ff = memchr(out->data + pos, '\f', out->len - pos);
            if (!ff) {
                rc = mm_errf(err, errlen, MM_E_UNPROCESSABLE, "renderer output: page %d's text is missing", pages[q]);
                break;
            }
            offs[q] = pos;
            lens[q] = (size_t)(ff - (out->data + pos));
            pos = (size_t)(ff - out->data) + 1;
        }
        i = k;
    }
    for (int q = 0; q < n && rc == MM_OK; q++) texts[q] = out->data + offs[q];
    free(offs);
    return rc;
}
