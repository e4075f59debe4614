/* One HTTP request as the worker sees it through FastCGI, and the ways to
 * answer it. Handlers above this layer never touch libfcgi directly. */
#ifndef MMEMBED_HTTP_H
#define MMEMBED_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "mmembed/buf.h"
#include "mmembed/common.h"

/* Route ids (a request's r->route): they size the per-route counters in the
 * scoreboard's shared memory; paths, methods, metrics names and handlers
 * are in src/serve/router.c's table. */
enum { MM_ROUTE_HEALTH, MM_ROUTE_INFO, MM_ROUTE_METRICS, MM_ROUTE_STATUS, MM_ROUTE_EMBEDDINGS,
       MM_ROUTE_EMBED_TEXT, MM_ROUTE_EMBED_IMAGE, MM_ROUTE_EMBED_MULTIMODAL, MM_ROUTE_EMBED_VIDEO,
       MM_ROUTE_MODELS, MM_ROUTE_EMBED_DOCUMENT, MM_ROUTE_OTHER, MM_ROUTE_COUNT };

typedef struct mm_http_req {
    void *fcgi;                 /* FCGX_Request* */
    const char *method;         /* "GET", "POST", ... */
    const char *uri;            /* as sent, with query */
    char path[256];             /* decoded-free path part of uri */
    const char *query;          /* after '?', or "" */
    const char *content_type;   /* "" if none */
    const char *request_id;     /* from nginx ($request_id), or generated */
    const char *auth;           /* Authorization header, or "" */
    int64_t content_length;     /* -1 if unknown */
    int64_t body_read;          /* bytes consumed so far */
    int route;                  /* MM_ROUTE_* */
    const char *allow;          /* methods the route takes (405's Allow header); set by the router */
    const char *attempt_id;     /* nginx's own $request_id: the same on every upstream retry of one
                                   client request (the poison fingerprint); "" when absent */
    int status;                 /* set when answered; 0 before */
    int64_t start_us;
    char id_buf[40];
    char headers[160];          /* extra response header lines ("Name: v\r\n") */
    mm_buf_t out;               /* response body scratch */
#ifdef MM_TEST_HOOKS
    struct mm_http_mem *mem;    /* in-memory request (tests, fuzzers); NULL: FastCGI */
#endif
} mm_http_req_t;

#ifdef MM_TEST_HOOKS
/* Test-only: a request with no FastCGI behind it, so tests and fuzzers can
 * drive the real handlers (mm_embed_handle). The body is read from
 * body[0..len); what mm_http_respond writes (status line, headers, body)
 * is appended to `wire`, and `status` is set. The caller owns everything. */
typedef struct mm_http_mem {
    const char *body;
    size_t len, pos;
    mm_buf_t wire;
    int status;
} mm_http_mem_t;

/* Fill r as mm_http_req_init would from these params (content_length from
 * m->len, request_id "mem"); r->route is left for the caller to set. */
void mm_http_req_init_mem(mm_http_req_t *r, mm_http_mem_t *m, const char *method, const char *uri,
                          const char *content_type);
#endif

/* Fill the request fields from the FastCGI params of `fcgi`. */
void mm_http_req_init(mm_http_req_t *r, void *fcgi);
void mm_http_req_release(mm_http_req_t *r);
/* Read up to n body bytes; returns bytes read (0 at end), negative on error. */
long mm_http_read(mm_http_req_t *r, void *buf, size_t n);
/* Read the whole body into *out (malloc'd, NUL-terminated). Over `max`
 * bytes -> MM_E_TOOBIG (the rest is drained). */
int mm_http_read_body(mm_http_req_t *r, int64_t max, char **out, size_t *len);
/* Discard the remaining body (bounded by `max` bytes read). */
void mm_http_drain(mm_http_req_t *r, int64_t max);
/* Send a full response. `headers` is extra header lines, each ending in
 * "\r\n", or NULL. */
void mm_http_respond(mm_http_req_t *r, int status, const char *ctype, const char *headers,
                     const void *body, size_t len);
/* Send r->out as application/json. */
void mm_http_respond_json(mm_http_req_t *r, int status);
/* OpenAI-shaped JSON error: {"error":{"message","type","code"}}. `code` may
 * be NULL (derived from status). 503 adds Retry-After. */
void mm_http_error(mm_http_req_t *r, int status, const char *code, const char *fmt, ...) MM_PRINTF(4, 5);
/* Value of a query parameter into out (URL-decoded); 1 if present. */
int mm_http_query(const mm_http_req_t *r, const char *name, char *out, size_t cap);
/* The Retry-After seconds used for 503 answers (set once per process). */
void mm_http_set_retry_after(int seconds);
const char *mm_http_reason(int status);

#endif
