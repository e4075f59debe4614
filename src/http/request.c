#include "mmembed/http.h"

#include <fcgiapp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int retry_after = 1;

void mm_http_set_retry_after(int s)
{
    retry_after = s;
}

static const char *param(FCGX_Request *f, const char *name)
{
    const char *v = FCGX_GetParam(name, f->envp);
    return v ? v : "";
}

/* A request id fit for log lines and JSON: 1-64 bytes of letters, digits
 * and "-_.:". */
static int id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.' || c == ':'))
            return 0;
    }
    return 1;
}

void mm_http_req_init(mm_http_req_t *r, void *fcgi)
{
    FCGX_Request *f = fcgi;
    mm_buf_t keep = r->out;
    memset(r, 0, sizeof *r);
    r->out = keep;
    mm_buf_reset(&r->out);
    r->fcgi = f;
    r->method = param(f, "REQUEST_METHOD");
    r->uri = param(f, "REQUEST_URI");
    const char *q = strchr(r->uri, '?');
    size_t pl = q ? (size_t)(q - r->uri) : strlen(r->uri);
    if (pl >= sizeof r->path) pl = sizeof r->path - 1;
    memcpy(r->path, r->uri, pl);
    r->path[pl] = '\0';
    r->query = q ? q + 1 : "";
    r->content_type = param(f, "CONTENT_TYPE");
    r->auth = param(f, "HTTP_AUTHORIZATION");
    r->attempt_id = param(f, "MM_ATTEMPT_ID");
    const char *id = param(f, "REQUEST_ID");
    if (!id[0]) id = param(f, "HTTP_X_REQUEST_ID");
    if (!id_ok(id)) id = id_ok(r->attempt_id) ? r->attempt_id : "";   /* a client's odd id never reaches a log */
    if (!id[0]) {
        snprintf(r->id_buf, sizeof r->id_buf, "%08lx%08lx", (unsigned long)random(), (unsigned long)random());
        id = r->id_buf;
    }
    r->request_id = id;
    const char *cl = param(f, "CONTENT_LENGTH");
    r->content_length = cl[0] ? strtoll(cl, NULL, 10) : -1;
}

void mm_http_req_release(mm_http_req_t *r)
{
    mm_buf_reset(&r->out);
}

#ifdef MM_TEST_HOOKS
/* ---------------------------------------------------------------- in-memory requests (tests) */

void mm_http_req_init_mem(mm_http_req_t *r, mm_http_mem_t *m, const char *method, const char *uri,
                          const char *content_type)
{
    mm_buf_t keep = r->out;
    memset(r, 0, sizeof *r);
    r->out = keep;
    mm_buf_reset(&r->out);
    r->mem = m;
    r->method = method;
    r->uri = uri;
    const char *q = strchr(uri, '?');
    size_t pl = q ? (size_t)(q - uri) : strlen(uri);
    if (pl >= sizeof r->path) pl = sizeof r->path - 1;
    memcpy(r->path, uri, pl);
    r->path[pl] = '\0';
    r->query = q ? q + 1 : "";
    r->content_type = content_type;
    r->auth = "";
    r->request_id = "mem";
    r->content_length = (int64_t)m->len;
    m->pos = 0;
    m->status = 0;
}

static long mem_read(mm_http_req_t *r, void *buf, size_t n)
{
    mm_http_mem_t *m = r->mem;
    size_t left = m->len - m->pos;
    if (n > left) n = left;
    memcpy(buf, m->body + m->pos, n);
    m->pos += n;
    r->body_read += (int64_t)n;
    return (long)n;
}
#endif

long mm_http_read(mm_http_req_t *r, void *buf, size_t n)
{
#ifdef MM_TEST_HOOKS
    if (r->mem) return mem_read(r, buf, n);
#endif
    FCGX_Request *f = r->fcgi;
    if (n > (1u << 30)) n = 1u << 30;
    int got = FCGX_GetStr(buf, (int)n, f->in);
    if (got < 0) return MM_ERR;
    r->body_read += got;
    return got;
}

void mm_http_drain(mm_http_req_t *r, int64_t max)
{
    char tmp[16384];
    int64_t total = 0;
    long got;
    while (total < max && (got = mm_http_read(r, tmp, sizeof tmp)) > 0) total += got;
}

int mm_http_read_body(mm_http_req_t *r, int64_t max, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (r->content_length > max) {
        mm_http_drain(r, r->content_length);
        return MM_E_TOOBIG;
    }
    size_t cap = r->content_length > 0 ? (size_t)r->content_length + 1 : 65536;
    char *b = malloc(cap);
    if (!b) return MM_E_NOMEM;
    size_t n = 0;
    for (;;) {
        if (n + 1 >= cap) {
            if ((int64_t)cap > max + 1) break;
            char *nb = realloc(b, cap * 2);
            if (!nb) { free(b); return MM_E_NOMEM; }
            b = nb;
            cap *= 2;
        }
        long got = mm_http_read(r, b + n, cap - n - 1);
        if (got < 0) { free(b); return MM_E_INVALID; }
        if (got == 0) break;
        n += (size_t)got;
        if ((int64_t)n > max) {
            free(b);
            mm_http_drain(r, INT64_MAX);
            return MM_E_TOOBIG;
        }
    }
    b[n] = '\0';
    *out = b;
    *len = n;
    return MM_OK;
}

const char *mm_http_reason(int s)
{
    switch (s) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

void mm_http_respond(mm_http_req_t *r, int status, const char *ctype, const char *headers,
                     const void *body, size_t len)
{
    FCGX_Request *f = r->fcgi;
    r->status = status;
    char head[512];
    int n = snprintf(head, sizeof head, "Status: %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
                     status, mm_http_reason(status), ctype, len, headers ? headers : "", r->headers);
    if (n < 0 || n >= (int)sizeof head) {   /* never: the extra headers are short; drop them rather than overread */
        n = snprintf(head, sizeof head, "Status: %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n", status,
                     mm_http_reason(status), ctype, len);
    }
#ifdef MM_TEST_HOOKS
    if (r->mem) {
        r->mem->status = status;
        mm_buf_append(&r->mem->wire, head, (size_t)(n < (int)sizeof head ? n : (int)sizeof head - 1));
        if (len) mm_buf_append(&r->mem->wire, body, len);
        return;
    }
#endif
    FCGX_PutStr(head, n, f->out);
    if (len) FCGX_PutStr(body, (int)len, f->out);
}

void mm_http_respond_json(mm_http_req_t *r, int status)
{
    mm_http_respond(r, status, "application/json", NULL, r->out.data ? r->out.data : "", r->out.len);
}

static const char *type_for(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "overloaded_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static const char *code_for(int status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "missing_api_key";
    case 403: return "invalid_api_key";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 413: return "payload_too_large";
    case 415: return "unsupported_media_type";
    case 422: return "unprocessable_input";
    case 429: return "rate_limited";
    case 503: return "busy";
    case 504: return "timeout";
    default: return "internal_error";
    }
}

void mm_http_error(mm_http_req_t *r, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mm_buf_reset(&r->out);
    mm_buf_puts(&r->out, "{\"error\":{\"message\":");
    mm_buf_json_str(&r->out, msg, strlen(msg));
    mm_buf_printf(&r->out, ",\"type\":\"%s\",\"code\":\"%s\"}}\n", type_for(status), code ? code : code_for(status));
    char hdr[64] = "";
    if (status == 503) snprintf(hdr, sizeof hdr, "Retry-After: %d\r\n", retry_after);
    if (status == 405) snprintf(hdr, sizeof hdr, "Allow: %s\r\n", r->allow ? r->allow : "GET, HEAD");
    mm_http_respond(r, status, "application/json", hdr, r->out.data, r->out.len);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int mm_http_query(const mm_http_req_t *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = r->query;
    while (*p) {
        const char *amp = strchr(p, '&');
        const char *end = amp ? amp : p + strlen(p);
        if ((size_t)(end - p) >= nl && strncmp(p, name, nl) == 0 && (p[nl] == '=' || p + nl == end)) {
            const char *v = p[nl] == '=' ? p + nl + 1 : end;
            size_t o = 0;
            while (v < end && o + 1 < cap) {
                if (*v == '%' && v + 2 < end + 0 + 1 && hexval(v[1]) >= 0 && hexval(v[2]) >= 0) {
                    out[o++] = (char)(hexval(v[1]) * 16 + hexval(v[2]));
                    v += 3;
                } else {
                    out[o++] = *v == '+' ? ' ' : *v;
                    v++;
                }
            }
            out[o] = '\0';
            return 1;
        }
        p = amp ? amp + 1 : end;
    }
    return 0;
}
