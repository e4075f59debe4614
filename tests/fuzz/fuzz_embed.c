/* libFuzzer harness: the real request handlers, mm_embed_handle (src/embed/).
 *
 * The tiny fixture models are loaded once, as a worker has them after fork
 * (clip: tests/fixtures/clip/clip-tiny, text + image; bert:
 * tests/fixtures/bert/bert-tiny, text only), with a small shared cache
 * attached. Each input is one request through the in-memory request mode of
 * src/http/request.c (MM_TEST_HOOKS), so JSON and multipart parsing, option
 * checks, base64, image decoding, tokenizing, the models, the cache and the
 * response writer all run exactly as in the server:
 *
 *     <route> <content type>\n<body>
 *
 * e.g. "/v1/embeddings application/json\n{\"input\":\"a cat\"}". An unknown
 * route takes the 404 path. In the body, "@BIG@" becomes 1 MiB of text and
 * "@HUGE@" 4 MiB (at most 4 expansions): option fields of megabytes
 * (instruction, model, input_type) without megabyte seeds. Numbers like
 * 2147483647 or 1e308 come from the dictionary (embed.dict).
 *
 * Invariants (FUZZ_CHECK): the handler answers exactly once; the status is
 * one the README documents for these routes (200, 400, 404, 413, 415, 422;
 * never 500 or a status nginx alone gives); the body is one JSON object:
 * an OpenAI-shaped error with message/type/code, or for 200 a data array
 * whose vectors hold only finite numbers. */
#include "mmembed/cache.h"
#include "mmembed/conf.h"
#include "mmembed/embed.h"
#include "mmembed/http.h"
#include "mmembed/log.h"
#include "mmembed/scoreboard.h"

#include "fuzz.h"

#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef MM_TEST_HOOKS
#error "fuzz_embed needs the objects built with -DMM_TEST_HOOKS (the in-memory request mode)"
#endif

static mm_conf_t conf;
static mm_embed_t *E;

static void add_model(const char *name, const char *dir, int is_default)
{
    mm_conf_model_t *m = &conf.models[conf.n_models++];
    snprintf(m->name, sizeof m->name, "%s", name);
    if (!realpath(dir, m->path)) {
        fprintf(stderr, "fuzz_embed: %s not found (run from the repository root)\n", dir);
        abort();
    }
    snprintf(m->dtype, sizeof m->dtype, "f32");
    snprintf(m->instruction, sizeof m->instruction, "query: ");
    m->is_default = is_default;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    mm_conf_defaults(&conf);
    conf.max_body_bytes = 8 << 20;
    conf.max_frames = 4;
    conf.default_frames = 2;
    conf.video_budget = 2.0;
    conf.log_level = 0;   /* errors only: keep the fuzzer's output readable */
    add_model("clip", "tests/fixtures/clip/clip-tiny", 1);
    add_model("bert", "tests/fixtures/bert/bert-tiny", 0);
    char err[MM_ERRLEN] = "";
    FUZZ_CHECK(mm_embed_load(&conf, &E, err, sizeof err) == MM_OK, "load: %s", err);
    FUZZ_CHECK(mm_embed_init_child(E, 1, err, sizeof err) == MM_OK, "init_child: %s", err);
    struct mm_cache *c = NULL;
    FUZZ_CHECK(mm_cache_create(&c, 1 << 20, mm_embed_max_dim(E), err, sizeof err) == MM_OK, "cache: %s", err);
    mm_embed_set_cache(E, c, 1);
    return 0;
}

static const struct {
    const char *path;
    int route;
    mm_embed_route_fn *fn;
} routes[] = {
    {"/v1/embeddings", MM_ROUTE_EMBEDDINGS, mm_embed_openai},
    {"/embed/text", MM_ROUTE_EMBED_TEXT, mm_embed_text},
    {"/embed/image", MM_ROUTE_EMBED_IMAGE, mm_embed_image},
    {"/embed/multimodal", MM_ROUTE_EMBED_MULTIMODAL, mm_embed_multimodal},
    {"/embed/video", MM_ROUTE_EMBED_VIDEO, mm_embed_video},
};

/* body with @BIG@ / @HUGE@ expanded (malloc'd, exact size so ASan sees overreads) */
static char *expand(const char *p, size_t n, size_t *out_len)
{
    static const struct { const char *tok; size_t len, size; } mac[] = {{"@BIG@", 5, 1 << 20}, {"@HUGE@", 6, 4 << 20}};
    size_t total = 0, uses = 0;
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        for (; k < MM_ARRAY_LEN(mac); k++)
            if (uses < 4 && n - i >= mac[k].len && !memcmp(p + i, mac[k].tok, mac[k].len)) break;
        if (k < MM_ARRAY_LEN(mac)) {
            total += mac[k].size, i += mac[k].len, uses++;
        } else {
            total++, i++;
        }
    }
    char *b = malloc(total ? total : 1), *o = b;
    FUZZ_CHECK(b, "out of memory");
    uses = 0;
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        for (; k < MM_ARRAY_LEN(mac); k++)
            if (uses < 4 && n - i >= mac[k].len && !memcmp(p + i, mac[k].tok, mac[k].len)) break;
        if (k < MM_ARRAY_LEN(mac)) {
            for (size_t j = 0; j < mac[k].size; j++) o[j] = "a b c d "[j & 7];   /* words: the tokenizer works */
            o += mac[k].size, i += mac[k].len, uses++;
        } else {
            *o++ = p[i++];
        }
    }
    *out_len = total;
    return b;
}

static void check_answer(const mm_http_mem_t *m, int route)
{
    const char *w = m->wire.data ? m->wire.data : "";
    size_t wl = m->wire.len;
    FUZZ_CHECK(m->status != 0, "no answer (route %d)", route);
    FUZZ_CHECK(wl >= 7 && !memcmp(w, "Status:", 7), "answer does not start with a status line");
    /* exactly one answer: no second "Status:" header block after the first body */
    const char *hdr_end = memmem(w, wl, "\r\n\r\n", 4);
    FUZZ_CHECK(hdr_end, "no end of headers");
    const char *body = hdr_end + 4;
    size_t bl = wl - (size_t)(body - w);
    const char *cl = memmem(w, (size_t)(hdr_end - w), "Content-Length: ", 16);
    FUZZ_CHECK(cl && strtoull(cl + 16, NULL, 10) == bl, "Content-Length does not match the %zu body bytes "
               "(answered twice?)", bl);
    const int s = m->status;
    FUZZ_CHECK(s == 200 || s == 400 || s == 404 || s == 413 || s == 415 || s == 422,
               "status %d on route %d: %.*s", s, route, (int)(bl < 400 ? bl : 400), body);
    FUZZ_CHECK(memmem(w, (size_t)(hdr_end - w), "Content-Type: application/json", 30), "not JSON");
    json_tokener *tok = json_tokener_new_ex(64);
    FUZZ_CHECK(tok, "out of memory");
    json_object *j = json_tokener_parse_ex(tok, body, (int)bl);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    FUZZ_CHECK(j && json_object_is_type(j, json_type_object), "status %d body is not a JSON object: %.*s", s,
               (int)(bl < 400 ? bl : 400), body);
    while (used < bl && (body[used] == '\n' || body[used] == ' ')) used++;
    FUZZ_CHECK(used == bl, "bytes after the JSON body");
    json_object *v, *x;
    if (s != 200) {
        FUZZ_CHECK(json_object_object_get_ex(j, "error", &v) && json_object_is_type(v, json_type_object),
                   "error answer without an error object");
        FUZZ_CHECK(json_object_object_get_ex(v, "message", &x) && json_object_get_string_len(x) > 0, "no message");
        FUZZ_CHECK(json_object_object_get_ex(v, "type", &x) && json_object_is_type(x, json_type_string), "no type");
        FUZZ_CHECK(json_object_object_get_ex(v, "code", &x) && json_object_is_type(x, json_type_string), "no code");
    } else {
        /* a data array of vectors, or (multimodal, video) one fused "embedding" */
        int has_data = json_object_object_get_ex(j, "data", &v) && json_object_is_type(v, json_type_array);
        FUZZ_CHECK(has_data || (json_object_object_get_ex(j, "embedding", &x) && json_object_is_type(x, json_type_array)),
                   "200 with neither a data array nor an embedding");
        size_t n = has_data ? json_object_array_length(v) : 0;
        FUZZ_CHECK(n > 0 || !has_data, "200 with no vectors");
        for (size_t i = 0; i < n; i++) {
            json_object *it = json_object_array_get_idx(v, i), *emb;
            if (!json_object_object_get_ex(it, "embedding", &emb) || !json_object_is_type(emb, json_type_array))
                continue;   /* base64 encoding_format: a string */
            size_t d = json_object_array_length(emb);
            FUZZ_CHECK(d > 0, "empty vector %zu", i);
            for (size_t k = 0; k < d; k++) {
                json_object *f = json_object_array_get_idx(emb, k);
                FUZZ_CHECK(json_object_is_type(f, json_type_double) || json_object_is_type(f, json_type_int),
                           "vector %zu[%zu] is not a number", i, k);
                FUZZ_CHECK(isfinite(json_object_get_double(f)), "vector %zu[%zu] not finite", i, k);
            }
        }
        if (json_object_object_get_ex(j, "embedding", &v) && json_object_is_type(v, json_type_array))
            for (size_t k = 0; k < json_object_array_length(v); k++)
                FUZZ_CHECK(isfinite(json_object_get_double(json_object_array_get_idx(v, k))), "fused [%zu]", k);
    }
    json_object_put(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    const char *nl = memchr(p, '\n', size);
    if (!nl || nl - p > 200) return 0;
    char line[201];
    memcpy(line, p, (size_t)(nl - p));
    line[nl - p] = '\0';
    char *sp = strchr(line, ' ');
    const char *ctype = sp ? sp + 1 : "";
    if (sp) *sp = '\0';
    int route = MM_ROUTE_OTHER;
    mm_embed_route_fn *fn = NULL;
    for (size_t i = 0; i < MM_ARRAY_LEN(routes); i++)
        if (!strcmp(line, routes[i].path)) route = routes[i].route, fn = routes[i].fn;

    size_t blen;
    char *body = expand(nl + 1, size - (size_t)(nl + 1 - p), &blen);
    mm_http_mem_t m = {.body = body, .len = blen};
    mm_buf_init(&m.wire);
    static mm_http_req_t r;   /* r.out keeps its capacity between requests, as in a worker */
    mm_http_req_init_mem(&r, &m, "POST", line, ctype);
    r.route = route;
    mm_embed_handle(E, &r, fn);
    if (getenv("FUZZ_EMBED_VERBOSE"))   /* replaying seeds: what each one was answered */
        fprintf(stderr, "%s %d: %.*s\n", line, m.status, (int)(m.wire.len < 300 ? m.wire.len : 300),
                m.wire.data ? m.wire.data : "");
    check_answer(&m, route);
    mm_http_req_release(&r);
    mm_buf_free(&m.wire);
    free(body);
    return 0;
}
