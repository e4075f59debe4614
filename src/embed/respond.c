/* Errors and the response shape every embedding route answers in. */
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "mmembed/base64.h"

int emb_failf(fail_t *f, int status, const char *code, const char *fmt, ...) MM_PRINTF(4, 5);
int emb_failf(fail_t *f, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof f->msg, fmt, ap);
    va_end(ap);
    f->status = status;
    f->code = code;
    return -1;
}


const text_opts_t emb_default_text_opts = {1, "", 0};

void emb_set_x_cache(mm_embed_t *e, mm_http_req_t *r, int use_cache, int hits, int n)
{
    if (use_cache && e->cache)
        snprintf(r->headers, sizeof r->headers, "X-Cache: %s\r\n", hits == n ? "hit" : "miss");
}

void emb_write_vec(mm_buf_t *b, const float *v, int d)
{
    mm_buf_reserve(b, (size_t)d * 14 + 2);
    mm_buf_puts(b, "[");
    for (int i = 0; i < d; i++) {
        if (i) mm_buf_append(b, ",", 1);
        mm_buf_float(b, v[i]);
    }
    mm_buf_puts(b, "]");
}

/* A vector fit to return: finite, and not all zero (it must normalize). */
int emb_vec_usable(const float *v, int d)
{
    double ss = 0;
    for (int i = 0; i < d; i++) {
        if (!isfinite(v[i])) return 0;
        ss += (double)v[i] * v[i];
    }
    return ss > 1e-30;
}

void emb_respond_fail(mm_http_req_t *r, const fail_t *f)
{
    mm_http_error(r, f->status ? f->status : 500, f->code, "%s", f->msg);
}

/* ---------------------------------------------------------------- responses */

void emb_begin_data(mm_buf_t *b, const entry_t *m, int dim)
{
    mm_buf_puts(b, "{\"model\":");
    mm_buf_json_str(b, m->name, strlen(m->name));
    mm_buf_printf(b, ",\"dim\":%d,\"data\":[", dim);
}

int emb_batch_refuse(mm_embed_t *e, mm_http_req_t *r, int have_memory)
{
    if (!have_memory) {
        mm_http_drain(r, e->conf->max_body_bytes);
        mm_http_error(r, 500, NULL, "out of memory");
        return 1;
    }
    if (e->n == 0) {
        mm_embed_handle(e, r, NULL);   /* the 404 of a server without models */
        return 1;
    }
    return 0;
}
