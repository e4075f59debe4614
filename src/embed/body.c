/* Request bodies: JSON objects, multipart forms collected in memory,
 * typed field readers and base64 images. */
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "mmembed/base64.h"

/* ---------------------------------------------------------------- request bodies */

int emb_is_json(const char *ct)
{
    return !ct[0] || strncasecmp(ct, "application/json", 16) == 0;
}

int emb_is_multipart(const char *ct)
{
    return strncasecmp(ct, "multipart/form-data", 19) == 0;
}

/* Parse a JSON object body. */
json_object *emb_read_json(mm_embed_t *e, mm_http_req_t *r, fail_t *f)
{
    char *body;
    size_t len;
    int rc = mm_http_read_body(r, e->conf->max_body_bytes, &body, &len);
    if (rc == MM_E_TOOBIG) {
        emb_failf(f, 413, "payload_too_large", "request body is over limits.max_body_bytes (%lld)",
              (long long)e->conf->max_body_bytes);
        return NULL;
    }
    if (rc) {
        emb_failf(f, 400, "bad_request", "could not read the request body");
        return NULL;
    }
    if (len == 0) {
        free(body);
        emb_failf(f, 400, "empty_body", "the request body is empty; send a JSON object");
        return NULL;
    }
    json_tokener *tok = json_tokener_new_ex(JSON_MAX_DEPTH);
    json_object *j = tok ? json_tokener_parse_ex(tok, body, (int)len) : NULL;
    enum json_tokener_error jerr = tok ? json_tokener_get_error(tok) : json_tokener_error_size;
    size_t used = tok ? json_tokener_get_parse_end(tok) : 0;
    if (tok) json_tokener_free(tok);
    if (j && jerr == json_tokener_success)
        while (used < len && (body[used] == ' ' || body[used] == '\n' || body[used] == '\r' || body[used] == '\t'))
            used++;
    free(body);
    if (!j || jerr != json_tokener_success || used < len) {
        json_object_put(j);
        if (j && jerr == json_tokener_success)
            emb_failf(f, 400, "invalid_json", "request body has trailing data after the JSON value (at byte %zu)", used);
        else
            emb_failf(f, 400, "invalid_json", "request body is not valid JSON: %s (at byte %zu)",
                  json_tokener_error_desc(jerr == json_tokener_continue ? json_tokener_error_parse_eof : jerr), used);
        return NULL;
    }
    if (!json_object_is_type(j, json_type_object)) {
        json_object_put(j);
        emb_failf(f, 400, "invalid_json", "request body must be a JSON object");
        return NULL;
    }
    return j;
}


static int on_begin(mm_multipart_t *p, const mm_multipart_part_t *part)
{
    form_t *fm = p->user;
    if (fm->n == fm->cap) return mm_multipart_fail(p, MM_E_TOOBIG, "too many parts");
    part_t *x = &fm->parts[fm->n++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", part->name);
    snprintf(x->filename, sizeof x->filename, "%s", part->filename);
    snprintf(x->ctype, sizeof x->ctype, "%s", part->content_type);
    x->is_file = part->has_filename || strncasecmp(part->content_type, "text/plain", 10) != 0;
    return 0;
}

static int on_data(mm_multipart_t *p, const char *d, size_t n)
{
    form_t *fm = p->user;
    fm->total += (int64_t)n;
    if (fm->total > fm->max_total)
        return mm_multipart_fail(p, MM_E_TOOBIG, "form data is over limits.max_body_bytes");
    part_t *x = &fm->parts[fm->n - 1];
    mm_buf_append(&x->data, d, n);
    return x->data.oom ? mm_multipart_fail(p, MM_E_NOMEM, "out of memory") : 0;
}

void emb_form_free(form_t *fm)
{
    for (int i = 0; i < fm->n; i++) mm_buf_free(&fm->parts[i].data);
    free(fm->parts);
    memset(fm, 0, sizeof *fm);
}

int emb_read_form(mm_embed_t *e, mm_http_req_t *r, form_t *fm, fail_t *f)
{
    char boundary[MM_MULTIPART_BOUNDARY_MAX + 1], err[MM_ERRLEN];
    memset(fm, 0, sizeof *fm);
    int rc = mm_multipart_boundary(r->content_type, boundary, sizeof boundary, err, sizeof err);
    if (rc) {
        mm_http_drain(r, e->conf->max_body_bytes);
        return emb_failf(f, mm_status_http(rc), NULL, "%s", err);
    }
    fm->cap = e->conf->max_parts;
    fm->parts = calloc((size_t)fm->cap, sizeof *fm->parts);
    fm->max_total = e->conf->max_body_bytes;
    if (!fm->parts) return emb_failf(f, 500, NULL, "out of memory");
    mm_multipart_t *mp = malloc(sizeof *mp);
    char *chunk = malloc(65536);
    if (!mp || !chunk) {
        free(mp);
        free(chunk);
        return emb_failf(f, 500, NULL, "out of memory");
    }
    mm_multipart_opts_t opts = {.max_parts = (size_t)e->conf->max_parts, .max_header_bytes = 8192,
                                .max_part_bytes = (uint64_t)e->conf->max_body_bytes};
    mm_multipart_callbacks_t cb = {.on_part_begin = on_begin, .on_data = on_data};
    mm_multipart_init(mp, boundary, &opts, &cb, fm);
    long got;
    rc = 0;
    while ((got = mm_http_read(r, chunk, 65536)) > 0)
        if ((rc = mm_multipart_feed(mp, chunk, (size_t)got)) != 0) break;
    if (rc == 0) rc = mm_multipart_finish(mp);
    if (rc) {
        emb_failf(f, mm_status_http(rc), rc == MM_E_TOOBIG ? "payload_too_large" : "invalid_multipart", "multipart: %s",
              mm_multipart_error(mp));
        mm_http_drain(r, e->conf->max_body_bytes);
    }
    free(mp);
    free(chunk);
    return rc ? -1 : 0;
}

const part_t *emb_form_field(const form_t *fm, const char *name)
{
    for (int i = 0; i < fm->n; i++)
        if (!fm->parts[i].is_file && strcmp(fm->parts[i].name, name) == 0) return &fm->parts[i];
    return NULL;
}

/* "true"/"false"/"1"/"0" form values and JSON booleans. */
int emb_parse_bool(const char *s, int *out)
{
    if (!strcasecmp(s, "true") || !strcmp(s, "1") || !strcasecmp(s, "on") || !strcasecmp(s, "yes")) *out = 1;
    else if (!strcasecmp(s, "false") || !strcmp(s, "0") || !strcasecmp(s, "off") || !strcasecmp(s, "no")) *out = 0;
    else return -1;
    return 0;
}

int emb_jbool(json_object *j, const char *key, int *out, fail_t *f)
{
    json_object *v;
    if (!json_object_object_get_ex(j, key, &v) || json_object_is_type(v, json_type_null)) return 0;
    if (!json_object_is_type(v, json_type_boolean)) return emb_failf(f, 400, "invalid_parameter", "'%s' must be a boolean", key);
    *out = json_object_get_boolean(v);
    return 0;
}

int emb_jstr(json_object *j, const char *key, const char **out, fail_t *f)
{
    json_object *v;
    *out = NULL;
    if (!json_object_object_get_ex(j, key, &v) || json_object_is_type(v, json_type_null)) return 0;
    if (!json_object_is_type(v, json_type_string)) return emb_failf(f, 400, "invalid_parameter", "'%s' must be a string", key);
    *out = json_object_get_string(v);
    return 0;
}

/* Decode a base64 string or data: URI into a malloc'd buffer. */
int emb_decode_b64_image(const char *s, size_t len, unsigned char **out, size_t *olen, int idx, fail_t *f)
{
    if (len > 5 && strncmp(s, "data:", 5) == 0) {
        const char *comma = memchr(s, ',', len);
        if (!comma || !memmem(s, (size_t)(comma - s), ";base64", 7))
            return emb_failf(f, 400, "invalid_image", "images[%d]: a data: URI must be base64 encoded", idx);
        len -= (size_t)(comma + 1 - s);
        s = comma + 1;
    } else if (len > 8 && (strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0)) {
        return emb_failf(f, 400, "remote_images_disabled",
                     "images[%d]: image URLs are not fetched; send the bytes inline (base64 or multipart)", idx);
    }
    unsigned char *b = malloc(len / 4 * 3 + 4);
    if (!b) return emb_failf(f, 500, NULL, "out of memory");
    long n = mm_base64_decode(s, len, b);
    if (n < 0) {
        free(b);
        return emb_failf(f, 400, "invalid_base64", "images[%d] is not valid base64", idx);
    }
    *out = b;
    *olen = (size_t)n;
    return 0;
}

int emb_form_bool(const form_t *fm, const char *name, int *out, fail_t *f)
{
    const part_t *p = emb_form_field(fm, name);
    if (p && emb_parse_bool(p->data.data ? p->data.data : "", out))
        return emb_failf(f, 400, "invalid_parameter", "field '%s' must be true or false", name);
    return 0;
}

int emb_form_number(const form_t *fm, const char *name, double *out, fail_t *f)
{
    const part_t *p = emb_form_field(fm, name);
    if (!p) return 0;
    char *end;
    double v = strtod(p->data.data ? p->data.data : "", &end);
    if (!p->data.len || *end || !isfinite(v) || v < 0 || v > MAX_WEIGHT)
        return emb_failf(f, 400, "invalid_parameter", "field '%s' must be a number from 0 to %g", name, MAX_WEIGHT);
    *out = v;
    return 0;
}

int emb_form_int(const form_t *fm, const char *name, int *out, fail_t *f)
{
    const part_t *p = emb_form_field(fm, name);
    if (!p) return 0;
    char *end;
    long v = strtol(p->data.data ? p->data.data : "", &end, 10);
    if (!p->data.len || *end || v < 1 || v > 100000)
        return emb_failf(f, 400, "invalid_parameter", "field '%s' must be a positive integer", name);
    *out = (int)v;
    return 0;
}

