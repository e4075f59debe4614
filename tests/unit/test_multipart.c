/* Unit tests for the multipart/form-data push parser (src/http/multipart.c).
 *
 * Every body is parsed once in one piece and then again in every chunk
 * size from 1 to its length and at random split points (zero-length
 * chunks included); the outcome must not depend on the chunking. A fuzz
 * loop mutates valid bodies and checks the same invariance plus "no
 * crash, every slice inside the chunk or the parser" (run the binary once
 * under -fsanitize=address,undefined). Ends with a throughput figure.
 *
 *   make build/tests/test_multipart && build/tests/test_multipart [fuzz-iterations]
 */
#include "mmembed/multipart.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_checks, g_failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        g_checks++;                                                                  \
        if (!(cond)) {                                                               \
            g_failures++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

#define CHECK_STR(a, b)                                                                   \
    do {                                                                                  \
        const char *a_ = (a), *b_ = (b);                                                  \
        g_checks++;                                                                       \
        if (strcmp(a_, b_)) {                                                             \
            g_failures++;                                                                 \
            fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__, a_, b_);    \
        }                                                                                 \
    } while (0)

/* ------------------------------------------------------------------ */
/* Harness: record what the callbacks see                              */
/* ------------------------------------------------------------------ */

#define MAXP 64

typedef struct {
    char name[MM_MULTIPART_FIELD_MAX], filename[MM_MULTIPART_FIELD_MAX];
    char ct[MM_MULTIPART_FIELD_MAX];
    int has_filename, ended;
    uint64_t size;
    char *data;
    size_t len, cap;
} rpart_t;

typedef struct {
    int rc;
    char err[MM_ERRLEN];
    unsigned nparts;
    rpart_t part[MAXP];
    char *tr; /* transcript of begin/end events */
    size_t trlen, trcap;
    /* checks done inside callbacks */
    const char *chunk;
    size_t chunklen;
    int bad; /* a slice outside the chunk and the parser, an empty slice, bad order */
    int in_part;
    const char *abort_name; /* on_part_begin fails for this name */
    int abort_data;         /* on_data fails once this many bytes of a part were seen */
} result_t;

static void grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    *buf = realloc(*buf, c);
    if (!*buf) {
        perror("realloc");
        exit(2);
    }
    *cap = c;
}

static void tr_add(result_t *r, const char *fmt, ...) MM_PRINTF(2, 3);
static void tr_add(result_t *r, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof tmp)
        n = sizeof tmp - 1;
    grow(&r->tr, &r->trcap, r->trlen + (size_t)n + 1);
    memcpy(r->tr + r->trlen, tmp, (size_t)n + 1);
    r->trlen += (size_t)n;
}

static void result_free(result_t *r)
{
    for (unsigned i = 0; i < MAXP; i++)
        free(r->part[i].data);
    free(r->tr);
    memset(r, 0, sizeof *r);
}

static int cb_begin(mm_multipart_t *p, const mm_multipart_part_t *part)
{
    result_t *r = p->user;
    if (r->in_part || part->index != r->nparts || part->size != 0)
        r->bad = 1;
    r->in_part = 1;
    if (r->nparts < MAXP) {
        rpart_t *rp = &r->part[r->nparts];
        snprintf(rp->name, sizeof rp->name, "%s", part->name);
        snprintf(rp->filename, sizeof rp->filename, "%s", part->filename);
        snprintf(rp->ct, sizeof rp->ct, "%s", part->content_type);
        rp->has_filename = part->has_filename;
    }
    r->nparts++;
    tr_add(r, "[B%u|%s|%s|%s|%d]", part->index, part->name, part->filename, part->content_type,
           part->has_filename);
    if (r->abort_name && !strcmp(part->name, r->abort_name))
        return mm_multipart_fail(p, MM_E_UNSUPPORTED, "field \"%s\" is not allowed", part->name);
    return 0;
}

static int cb_data(mm_multipart_t *p, const char *d, size_t n)
{
    result_t *r = p->user;
    const char *pb = (const char *)p, *pe = pb + sizeof *p;
    int in_chunk = d >= r->chunk && d + n <= r->chunk + r->chunklen;
    int in_parser = d >= pb && d + n <= pe;
    if (!n || !(in_chunk || in_parser) || !r->in_part)
        r->bad = 1;
    if (r->nparts && r->nparts <= MAXP) {
        rpart_t *rp = &r->part[r->nparts - 1];
        grow(&rp->data, &rp->cap, rp->len + n);
        memcpy(rp->data + rp->len, d, n);
        rp->len += n;
        if (r->abort_data && rp->len >= (size_t)r->abort_data)
            return MM_E_UNPROCESSABLE; /* no message: the parser supplies one */
    }
    return 0;
}

static int cb_end(mm_multipart_t *p, const mm_multipart_part_t *part)
{
    result_t *r = p->user;
    if (!r->in_part)
        r->bad = 1;
    r->in_part = 0;
    if (part->index < MAXP) {
        r->part[part->index].ended = 1;
        r->part[part->index].size = part->size;
        if (part->size != r->part[part->index].len)
            r->bad = 1;
    }
    tr_add(r, "[E%u|%llu]", part->index, (unsigned long long)part->size);
    return 0;
}

static const mm_multipart_callbacks_t CB = {cb_begin, cb_data, cb_end};

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Parse `in` with chunks of `k` bytes (0 = one piece), or of random sizes
 * in [0, k] if rng is set. */
static void parse(result_t *r, const char *boundary, const char *in, size_t n,
                  const mm_multipart_opts_t *o, size_t k, uint64_t *rng)
{
    mm_multipart_t p;
    const char *abort_name = r->abort_name;
    int abort_data = r->abort_data;
    int rc;

    result_free(r);
    r->abort_name = abort_name;
    r->abort_data = abort_data;
    rc = mm_multipart_init(&p, boundary, o, &CB, r);
    for (size_t off = 0; !rc && off <= n;) {
        size_t c = rng ? (size_t)(rnd(rng) % (k + 1)) : k ? k : n;
        if (c > n - off)
            c = n - off;
        r->chunk = in + off;
        r->chunklen = c;
        rc = mm_multipart_feed(&p, in + off, c);
        off += c;
        if (off == n)
            break;
    }
    if (rc) {
        /* sticky: later feeds and finish report the same */
        if (mm_multipart_feed(&p, "x", 1) != rc || mm_multipart_finish(&p) != rc)
            r->bad = 1;
    } else {
        rc = mm_multipart_finish(&p);
        if (mm_multipart_finish(&p) != rc)
            r->bad = 1;
    }
    r->rc = rc;
    snprintf(r->err, sizeof r->err, "%s", mm_multipart_error(&p));
    if (!rc && r->in_part)
        r->bad = 1;
}

static int same(const result_t *a, const result_t *b)
{
    if (a->rc != b->rc || strcmp(a->err, b->err) || a->bad || b->bad)
        return 0;
    if (a->trlen != b->trlen || (a->trlen && memcmp(a->tr, b->tr, a->trlen)))
        return 0;
    if (a->rc)
        return 1; /* data up to an error depends on where the chunks fall */
    if (a->nparts != b->nparts)
        return 0;
    for (unsigned i = 0; i < a->nparts && i < MAXP; i++) {
        const rpart_t *x = &a->part[i], *y = &b->part[i];
        if (x->len != y->len || (x->len && memcmp(x->data, y->data, x->len)) ||
            x->ended != y->ended)
            return 0;
    }
    return 1;
}

/* One-shot parse into `r`, then check that every chunk size 1..n and
 * `nrand` random splittings give the same result. */
static void parse_all(result_t *r, const char *b, const char *in, size_t n,
                      const mm_multipart_opts_t *o, int nrand)
{
    result_t t;
    int mismatches = 0;
    memset(&t, 0, sizeof t);
    parse(r, b, in, n, o, 0, NULL);
    for (size_t k = 1; k <= n; k++) {
        t.abort_name = r->abort_name;
        t.abort_data = r->abort_data;
        parse(&t, b, in, n, o, k, NULL);
        if (!same(r, &t) && mismatches++ < 3)
            fprintf(stderr, "  chunk size %zu: rc %d \"%s\" vs one-shot rc %d \"%s\"\n", k, t.rc,
                    t.err, r->rc, r->err);
    }
    for (int i = 0; i < nrand; i++) {
        t.abort_name = r->abort_name;
        t.abort_data = r->abort_data;
        parse(&t, b, in, n, o, 1 + rnd(&g_rng) % 64, &g_rng);
        if (!same(r, &t) && mismatches++ < 3)
            fprintf(stderr, "  random split %d: rc %d \"%s\" vs one-shot rc %d \"%s\"\n", i, t.rc,
                    t.err, r->rc, r->err);
    }
    CHECK(mismatches == 0);
    CHECK(!r->bad);
    result_free(&t);
}

static void parse_all_s(result_t *r, const char *b, const char *in, const mm_multipart_opts_t *o)
{
    parse_all(r, b, in, strlen(in), o, 300);
}

/* A growable byte buffer for building bodies. */
typedef struct {
    char *p;
    size_t n, cap;
} buf_t;

static void bput(buf_t *b, const void *d, size_t n)
{
    grow(&b->p, &b->cap, b->n + n + 1);
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void bstr(buf_t *b, const char *s)
{
    bput(b, s, strlen(s));
}

/* ------------------------------------------------------------------ */
/* Content-Type boundary                                               */
/* ------------------------------------------------------------------ */

static void test_boundary(void)
{
    char b[MM_MULTIPART_BOUNDARY_MAX + 1], err[MM_ERRLEN];
    char long70[200], ct[300];
    static const struct {
        const char *ct, *want;
        int rc;
    } cases[] = {
        {"multipart/form-data; boundary=abc", "abc", 0},
        {"Multipart/Form-Data; BOUNDARY=\"a b:c\"", "a b:c", 0},
        {"multipart/form-data;boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
         "----WebKitFormBoundary7MA4YWxkTrZu0gW", 0},
        {"multipart/form-data; charset=utf-8; boundary=\"q(1)?=+_,-./:'\"", "q(1)?=+_,-./:'", 0},
        {"multipart/form-data; boundary=xyz; charset=utf-8", "xyz", 0},
        {"multipart/form-data; foo=\"; boundary=evil\"; boundary=good", "good", 0},
        {"multipart/form-data; foo=\"a\\\"; boundary=evil\"; Boundary=good", "good", 0},
        {"  multipart/form-data ; boundary = sp ;", "sp", 0},
        {"multipart/form-data;;boundary=x", "x", 0},
        {"multipart/form-data; boundary=\"esc\\aped\"", "escaped", 0},
        {"application/json", NULL, MM_E_UNSUPPORTED},
        {"multipart/mixed; boundary=x", NULL, MM_E_UNSUPPORTED},
        {"multipart/form-datax; boundary=x", NULL, MM_E_UNSUPPORTED},
        {"multipart", NULL, MM_E_UNSUPPORTED},
        {"", NULL, MM_E_UNSUPPORTED},
        {"multipart/form-data", NULL, MM_E_INVALID},
        {"multipart/form-data; charset=utf-8", NULL, MM_E_INVALID},
        {"multipart/form-data; boundary=", NULL, MM_E_INVALID},
        {"multipart/form-data; boundary=\"\"", NULL, MM_E_INVALID},
        {"multipart/form-data; boundary=\"abc \"", NULL, MM_E_INVALID},
        {"multipart/form-data; boundary=ab{c", NULL, MM_E_INVALID},
        {"multipart/form-data; boundary=\"ab\tc\"", NULL, MM_E_INVALID},
        {"multipart/form-data; boundary=\"abc", NULL, MM_E_INVALID},
        {"multipart/form-data; boundary=a; boundary=a", NULL, MM_E_INVALID},
        {"multipart/form-data; boundary", NULL, MM_E_INVALID},
        {"multipart/form-data boundary=abc", NULL, MM_E_INVALID},
        {"multipart/form-data; boundary=abc junk", NULL, MM_E_INVALID},
    };
    for (size_t i = 0; i < MM_ARRAY_LEN(cases); i++) {
        int rc = mm_multipart_boundary(cases[i].ct, b, sizeof b, err, sizeof err);
        if (rc != cases[i].rc)
            fprintf(stderr, "  boundary case %zu (%s): rc %d (%s)\n", i, cases[i].ct, rc, err);
        CHECK(rc == cases[i].rc);
        if (!rc && cases[i].want)
            CHECK_STR(b, cases[i].want);
        if (rc)
            CHECK(err[0] != '\0');
    }
    CHECK(mm_multipart_boundary(NULL, b, sizeof b, err, sizeof err) == MM_E_UNSUPPORTED);

    memset(long70, 'x', 70);
    long70[70] = '\0';
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%s", long70);
    CHECK(mm_multipart_boundary(ct, b, sizeof b, err, sizeof err) == 0);
    CHECK_STR(b, long70);
    CHECK(mm_multipart_boundary(ct, b, 70, err, sizeof err) == MM_ERR); /* caller's cap */
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=\"%sy\"", long70);
    CHECK(mm_multipart_boundary(ct, b, sizeof b, err, sizeof err) == MM_E_INVALID);
    CHECK(strstr(err, "70") != NULL);
    CHECK(mm_multipart_boundary(ct, b, sizeof b, NULL, 0) == MM_E_INVALID); /* err optional */

    /* init checks the boundary too */
    mm_multipart_t p;
    CHECK(mm_multipart_init(&p, "", NULL, NULL, NULL) == MM_E_INVALID);
    CHECK(mm_multipart_feed(&p, "x", 1) == MM_E_INVALID);
    CHECK(mm_multipart_init(&p, "a\r\nb", NULL, NULL, NULL) == MM_E_INVALID);
    CHECK(strstr(mm_multipart_error(&p), "illegal") != NULL);
    CHECK(mm_multipart_init(&p, long70, NULL, NULL, NULL) == 0);
    CHECK_STR(mm_multipart_error(&p), "");
}

/* ------------------------------------------------------------------ */
/* Well-formed bodies                                                  */
/* ------------------------------------------------------------------ */

#define WB "----WebKitFormBoundary7MA4YWxkTrZu0gW"

/* Binary payload full of near-delimiters that are all data. */
static void tricky_payload(buf_t *d, const char *bnd, int crlf)
{
    const char *nl = crlf ? "\r\n" : "\n";
    size_t bl = strlen(bnd);
    char tmp[512];

    bstr(d, "--");
    bstr(d, bnd); /* "--boundary" at the very start of a part: no line break before it */
    bstr(d, nl);
    for (int i = 0; i < 256; i++) {
        unsigned char c = (unsigned char)i;
        bput(d, &c, 1);
    }
    bput(d, "\0\0\0", 3);
    for (size_t k = 0; k < bl; k++) { /* every proper prefix of the delimiter */
        bstr(d, nl);
        bstr(d, "--");
        bput(d, bnd, k);
        bput(d, "\0", 1);
    }
    snprintf(tmp, sizeof tmp, "%s--%sX", nl, bnd); /* boundary + other byte */
    bstr(d, tmp);
    snprintf(tmp, sizeof tmp, "%s--%s-X", nl, bnd); /* one dash only */
    bstr(d, tmp);
    snprintf(tmp, sizeof tmp, "%s--%s \t X", nl, bnd); /* padding, then junk */
    bstr(d, tmp);
    snprintf(tmp, sizeof tmp, "%s--%s  -", nl, bnd); /* "--" must not follow padding */
    bstr(d, tmp);
    bstr(d, "-");
    snprintf(tmp, sizeof tmp, "%s--%s\rX", nl, bnd); /* CR, then not LF */
    bstr(d, tmp);
    snprintf(tmp, sizeof tmp, "%s--%s\r\r\n--%sZ", nl, bnd, bnd); /* CR that begins a delimiter */
    bstr(d, tmp);
    snprintf(tmp, sizeof tmp, "%s--%s%*s\r\n", nl, bnd, MM_MULTIPART_PAD_MAX + 1, "");
    bstr(d, tmp); /* more padding than the parser holds: data */
    snprintf(tmp, sizeof tmp, "\r\r\n\r\n-\r\n--\r\n-%s", crlf ? "" : "\n");
    bstr(d, tmp);
    if (crlf) { /* a bare-LF delimiter inside a CRLF body is data */
        snprintf(tmp, sizeof tmp, "\n--%s\n\n--%s--\n", bnd, bnd);
        bstr(d, tmp);
    }
    /* end on a delimiter prefix so the real delimiter follows it */
    bstr(d, nl);
    bstr(d, "--");
    bput(d, bnd, bl - 1);
}

static void build_form(buf_t *body, buf_t *payload, const char *bnd, int crlf)
{
    const char *nl = crlf ? "\r\n" : "\n";
    char tmp[1024];

    tricky_payload(payload, bnd, crlf);
    snprintf(tmp, sizeof tmp,
             "--%s%s"
             "Content-Disposition: form-data; name=\"model\"%s"
             "%s"
             "clip-vit-b32%s"
             "--%s%s"
             "content-disposition: FORM-DATA; name=text%s"
             "Content-Type: text/plain; charset=utf-8%s"
             "X-Other: ignored; name=\"nope\"%s"
             "%s"
             "a photo of a cat%s"
             "--%s%s"
             "Content-Disposition: form-data; name=\"image\"; filename=\"cat.bin\"%s"
             "Content-Type: application/octet-stream%s"
             "%s",
             bnd, nl, nl, nl, nl, bnd, nl, nl, nl, nl, nl, nl, bnd, nl, nl, nl, nl);
    bstr(body, tmp);
    bput(body, payload->p, payload->n);
    snprintf(tmp, sizeof tmp, "%s--%s--%s", nl, bnd, nl);
    bstr(body, tmp);
}

static void check_form(const result_t *r, const buf_t *payload)
{
    CHECK(r->rc == 0);
    CHECK(r->nparts == 3);
    CHECK_STR(r->part[0].name, "model");
    CHECK_STR(r->part[0].ct, "text/plain");
    CHECK(r->part[0].has_filename == 0);
    CHECK(r->part[0].len == 12 && !memcmp(r->part[0].data, "clip-vit-b32", 12));
    CHECK_STR(r->part[1].name, "text");
    CHECK_STR(r->part[1].ct, "text/plain; charset=utf-8");
    CHECK(r->part[1].len == 16 && !memcmp(r->part[1].data, "a photo of a cat", 16));
    CHECK_STR(r->part[2].name, "image");
    CHECK_STR(r->part[2].filename, "cat.bin");
    CHECK(r->part[2].has_filename == 1);
    CHECK_STR(r->part[2].ct, "application/octet-stream");
    CHECK(r->part[2].len == payload->n);
    CHECK(r->part[2].len == payload->n && !memcmp(r->part[2].data, payload->p, payload->n));
    CHECK(r->part[2].ended && r->part[2].size == payload->n);
}

static void test_simple_form(void)
{
    buf_t body = {0}, payload = {0};
    result_t r = {0};
    build_form(&body, &payload, WB, 1);
    parse_all(&r, WB, body.p, body.n, NULL, 2000);
    check_form(&r, &payload);
    /* a boundary with a space and every special character */
    free(body.p);
    free(payload.p);
    memset(&body, 0, sizeof body);
    memset(&payload, 0, sizeof payload);
    build_form(&body, &payload, "a b'()+_,-./:=?", 1);
    parse_all(&r, "a b'()+_,-./:=?", body.p, body.n, NULL, 500);
    check_form(&r, &payload);
    free(body.p);
    free(payload.p);
    result_free(&r);
}

static void test_bare_lf(void)
{
    buf_t body = {0}, payload = {0};
    result_t r = {0};
    build_form(&body, &payload, WB, 0);
    CHECK(memchr(body.p, '\r', 300) == NULL); /* headers use LF only */
    parse_all(&r, WB, body.p, body.n, NULL, 2000);
    check_form(&r, &payload);
    free(body.p);
    free(payload.p);

    /* LF header lines inside a CRLF body are fine */
    parse_all_s(&r, "b",
                "--b\r\nContent-Disposition: form-data; name=a\n\nx\r\n--b--", NULL);
    CHECK(r.rc == 0 && r.nparts == 1 && r.part[0].len == 1);
    /* the first boundary line decides: CRLF, so LF--b is data and the end
     * is missing */
    parse_all_s(&r, "b", "--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx\n--b--\n", NULL);
    CHECK(r.rc == MM_E_INVALID && strstr(r.err, "truncated"));
    result_free(&r);
}

static void test_preamble_epilogue(void)
{
    result_t r = {0};
    const char *body =
        "This is the preamble. --b is not at a line start.\r\n"
        "--bx not a boundary\r\n"
        "--b- not one either\r\n"
        " --b\r\n"
        "\r\n"
        "--b \t \r\n"
        "Content-Disposition: form-data; name=\"one\"\r\n"
        "\r\n"
        "1\r\n"
        "--b\t\r\n"
        "Content-Disposition: form-data; name=\"two\"\r\n"
        "\r\n"
        "22\r\n"
        "--b--  \r\n"
        "This is the epilogue.\r\n"
        "--b\r\n"
        "Content-Disposition: garbage\r\n\r\n";
    parse_all_s(&r, "b", body, NULL);
    CHECK(r.rc == 0);
    CHECK(r.nparts == 2);
    CHECK_STR(r.part[0].name, "one");
    CHECK(r.part[0].len == 1 && r.part[0].data[0] == '1');
    CHECK_STR(r.part[1].name, "two");
    CHECK(r.part[1].len == 2 && !memcmp(r.part[1].data, "22", 2));

    /* preamble that looks like a partial boundary right before the real one */
    parse_all_s(&r, "bnd", "-\n--\n--bn\n--bnd\nContent-Disposition: form-data; name=x\n\n\n--bnd--",
                NULL);
    CHECK(r.rc == 0 && r.nparts == 1 && r.part[0].len == 0);

    /* an empty form: only the close delimiter */
    parse_all_s(&r, "b", "--b--\r\n", NULL);
    CHECK(r.rc == 0 && r.nparts == 0);
    result_free(&r);
}

static void test_filenames(void)
{
    result_t r = {0};
    parse_all_s(&r, "b",
                "--b\r\n"
                "Content-Disposition: form-data; name=\"f\"; filename*=UTF-8''na%C3%AFve%20file.txt;"
                " filename=\"naive file.txt\"\r\n\r\nA\r\n"
                "--b\r\n"
                "Content-Disposition: form-data; name=\"g\"; filename=\"plain.txt\"; "
                "filename*=utf-8'en'%E2%82%AC%2Frates.csv\r\n\r\nB\r\n"
                "--b\r\n"
                "Content-Disposition: form-data; name=\"h\"; filename*=iso-8859-1'fr'%E9t%E9.txt\r\n"
                "\r\nC\r\n"
                "--b\r\n"
                "Content-Disposition: form-data; name=\"i\"; filename*=KOI8-R''%C1; "
                "filename=\"fallback.txt\"\r\n\r\nD\r\n"
                "--b\r\n"
                "Content-Disposition: form-data; name=\"j\"; filename=\"my \\\"quoted\\\" "
                "file\\\\name;.txt\"\r\n\r\nE\r\n"
                "--b\r\n"
                "Content-Disposition: form-data; name=\"a;b=c\"; filename=\"\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n\r\n"
                "--b\r\n"
                "Content-Disposition: form-data;\r\n"
                "\tname=\"folded\"\r\n\r\nF\r\n"
                "--b--",
                NULL);
    CHECK(r.rc == 0);
    CHECK(r.nparts == 7);
    CHECK_STR(r.part[0].filename, "na\xc3\xafve file.txt");
    CHECK_STR(r.part[1].filename, "\xe2\x82\xac/rates.csv");
    CHECK_STR(r.part[2].filename, "\xc3\xa9t\xc3\xa9.txt");
    CHECK_STR(r.part[3].filename, "fallback.txt");
    CHECK_STR(r.part[4].filename, "my \"quoted\" file\\name;.txt");
    CHECK_STR(r.part[5].name, "a;b=c");
    CHECK_STR(r.part[5].filename, "");
    CHECK(r.part[5].has_filename == 1 && r.part[5].len == 0 && r.part[5].ended);
    CHECK_STR(r.part[6].name, "folded");
    for (unsigned i = 0; i < 5; i++)
        CHECK(r.part[i].has_filename && r.part[i].len == 1);

    static const struct {
        const char *cd;
        int rc;
        const char *msg;
    } bad[] = {
        {"form-data; name=\"f\"; filename*=UTF-8''%E2%82", MM_E_INVALID, "UTF-8"},
        {"form-data; name=\"f\"; filename*=UTF-8''%zz", MM_E_INVALID, "percent"},
        {"form-data; name=\"f\"; filename*=UTF-8''%4", MM_E_INVALID, "percent"},
        {"form-data; name=\"f\"; filename*=UTF-8''a%00b", MM_E_INVALID, "NUL"},
        {"form-data; name=\"f\"; filename*=noquotes", MM_E_INVALID, "filename*"},
        {"form-data; name=\"f\"; filename=\"unterminated", MM_E_INVALID, "malformed"},
        {"form-data; name=\"f\" junk", MM_E_INVALID, "malformed"},
        {"form-data; name=a; name=b", MM_E_INVALID, "repeats"},
        {"form-data; name=a; filename=x; filename=y", MM_E_INVALID, "repeats"},
        {"attachment; name=a", MM_E_INVALID, "not form-data"},
        {"form-data", MM_E_INVALID, "no Content-Disposition name"},
        {"form-data; filename=\"x.bin\"", MM_E_INVALID, "no Content-Disposition name"},
        {"form-data; name=\"\"", MM_E_INVALID, "no Content-Disposition name"},
    };
    for (size_t i = 0; i < MM_ARRAY_LEN(bad); i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "--b\r\nContent-Disposition: %s\r\n\r\ndata\r\n--b--\r\n", bad[i].cd);
        parse_all(&r, "b", body, strlen(body), NULL, 20);
        if (r.rc != bad[i].rc || !strstr(r.err, bad[i].msg))
            fprintf(stderr, "  bad disposition %zu: rc %d \"%s\"\n", i, r.rc, r.err);
        CHECK(r.rc == bad[i].rc && strstr(r.err, bad[i].msg));
        CHECK(r.nparts == 0); /* on_part_begin never ran */
    }

    /* 255 bytes fit, 256 do not */
    char body[2048], name[300];
    memset(name, 'n', 255);
    name[255] = '\0';
    snprintf(body, sizeof body, "--b\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n\r\n--b--",
             name);
    parse_all(&r, "b", body, strlen(body), NULL, 20);
    CHECK(r.rc == 0 && strlen(r.part[0].name) == 255);
    snprintf(body, sizeof body, "--b\r\nContent-Disposition: form-data; name=\"%sN\"\r\n\r\n\r\n--b--",
             name);
    parse_all(&r, "b", body, strlen(body), NULL, 20);
    CHECK(r.rc == MM_E_TOOBIG && strstr(r.err, "name longer than 255"));
    result_free(&r);
}

/* ------------------------------------------------------------------ */
/* Malformed bodies and limits                                         */
/* ------------------------------------------------------------------ */

static void test_errors(void)
{
    result_t r = {0};
    static const struct {
        const char *body;
        const char *msg;
    } trunc[] = {
        {"--b\r\nContent-Disposition: form-data; name=a\r\n\r\ndata", "truncated"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\n\r\ndata\r\n--b", "truncated"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\n\r\ndata\r\n--b-", "truncated"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\n\r\ndata\r\n--b\r\n", "truncated"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\n", "truncated"},
        {"--b\r\nContent-Disposition: form-da", "truncated"},
        {"--b\r\n", "truncated"},
        {"--b", "no parts"},
        {"", "no parts"},
        {"hello world, this is not multipart at all\r\n\r\n", "no parts"},
        {"-b\r\n--c\r\n\r\n", "no parts"},
    };
    for (size_t i = 0; i < MM_ARRAY_LEN(trunc); i++) {
        parse_all_s(&r, "b", trunc[i].body, NULL);
        if (r.rc != MM_E_INVALID || !strstr(r.err, trunc[i].msg))
            fprintf(stderr, "  truncated %zu: rc %d \"%s\"\n", i, r.rc, r.err);
        CHECK(r.rc == MM_E_INVALID && strstr(r.err, trunc[i].msg));
    }

    static const struct {
        const char *body;
        int rc;
        const char *msg;
    } bad[] = {
        {"--b\r\nthis is not a header\r\n\r\nx\r\n--b--", MM_E_INVALID, "without ':'"},
        {"--b\r\n: no name\r\n\r\nx\r\n--b--", MM_E_INVALID, "empty header name"},
        {"--b\r\nBad Name: x\r\n\r\nx\r\n--b--", MM_E_INVALID, "bad header name"},
        {"--b\r\n Content-Disposition: form-data; name=a\r\n\r\nx\r\n--b--", MM_E_INVALID,
         "whitespace"},
        {"--b\r\nContent-Disposition: form-data; name=a\rX\r\n\r\nx\r\n--b--", MM_E_INVALID,
         "CR without LF"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\n\rX\r\n--b--", MM_E_INVALID,
         "CR without LF"},
        {"--b\r\nContent-Disposition: form-data; name=a\x01\r\n\r\nx\r\n--b--", MM_E_INVALID,
         "control character"},
        {"--b\r\nX: 1\r\n\r\nx\r\n--b--", MM_E_INVALID, "no Content-Disposition header"},
        {"--b\r\n\r\nx\r\n--b--", MM_E_INVALID, "no Content-Disposition header"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; "
         "name=b\r\n\r\nx\r\n--b--",
         MM_E_INVALID, "two Content-Disposition"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\nContent-Type:  \r\n\r\nx\r\n--b--",
         MM_E_INVALID, "empty Content-Type"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\nContent-Type: a/b\r\ncontent-type: "
         "c/d\r\n\r\nx\r\n--b--",
         MM_E_INVALID, "two Content-Type"},
    };
    for (size_t i = 0; i < MM_ARRAY_LEN(bad); i++) {
        parse_all_s(&r, "b", bad[i].body, NULL);
        if (r.rc != bad[i].rc || !strstr(r.err, bad[i].msg))
            fprintf(stderr, "  bad %zu: rc %d \"%s\"\n", i, r.rc, r.err);
        CHECK(r.rc == bad[i].rc && strstr(r.err, bad[i].msg));
    }

    /* garbage: random bytes never yield parts or crash */
    char junk[4096];
    uint64_t s = 42;
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)rnd(&s);
    parse_all(&r, "b", junk, sizeof junk, NULL, 50);
    CHECK(r.rc == MM_E_INVALID && strstr(r.err, "no parts"));

    /* a header line longer than the line buffer */
    buf_t b = {0};
    bstr(&b, "--b\r\nContent-Disposition: form-data; name=a\r\nX-Long: ");
    for (int i = 0; i < MM_MULTIPART_LINE_MAX; i++)
        bstr(&b, "v");
    bstr(&b, "\r\n\r\nx\r\n--b--");
    parse_all(&r, "b", b.p, b.n, NULL, 50);
    CHECK(r.rc == MM_E_TOOBIG && strstr(r.err, "header line longer than"));
    free(b.p);
    result_free(&r);
}

static void test_limits(void)
{
    result_t r = {0};
    mm_multipart_opts_t o = {0};
    const char *three =
        "--b\r\nContent-Disposition: form-data; name=a\r\n\r\n0123456789\r\n"
        "--b\r\nContent-Disposition: form-data; name=b\r\n\r\n01234\r\n"
        "--b\r\nContent-Disposition: form-data; name=c\r\nContent-Type: application/octet-stream"
        "\r\n\r\n\r\n"
        "--b--\r\n";

    o.max_parts = 3;
    parse_all_s(&r, "b", three, &o);
    CHECK(r.rc == 0 && r.nparts == 3);
    o.max_parts = 2;
    parse_all_s(&r, "b", three, &o);
    CHECK(r.rc == MM_E_TOOBIG && strstr(r.err, "max_parts") && r.nparts == 2);
    CHECK(r.part[1].ended); /* both allowed parts were complete */

    o.max_parts = 0;
    o.max_part_bytes = 10;
    parse_all_s(&r, "b", three, &o);
    CHECK(r.rc == 0);
    o.max_part_bytes = 9;
    parse_all_s(&r, "b", three, &o);
    CHECK(r.rc == MM_E_TOOBIG && strstr(r.err, "max_part_bytes") && strstr(r.err, "\"a\""));
    CHECK(r.part[0].len <= 9); /* nothing beyond the limit was delivered */

    /* headers of part c: 38 + 2 + 38 + 2 + 2 = 82 bytes, the largest */
    o.max_part_bytes = 0;
    o.max_header_bytes = 82;
    parse_all_s(&r, "b", three, &o);
    CHECK(r.rc == 0);
    o.max_header_bytes = 81;
    parse_all_s(&r, "b", three, &o);
    CHECK(r.rc == MM_E_TOOBIG && strstr(r.err, "part 2: headers larger than max_header_bytes"));
    /* max_header_bytes also bounds a flood of short header lines */
    buf_t b = {0};
    bstr(&b, "--b\r\nContent-Disposition: form-data; name=a\r\n");
    for (int i = 0; i < 10000; i++)
        bstr(&b, "X: y\r\n");
    bstr(&b, "\r\nx\r\n--b--");
    o.max_header_bytes = 16384;
    parse_all(&r, "b", b.p, b.n, &o, 20);
    CHECK(r.rc == MM_E_TOOBIG && strstr(r.err, "max_header_bytes"));
    free(b.p);
    result_free(&r);
}

static void test_callbacks(void)
{
    result_t r = {0};
    const char *body = "--b\r\nContent-Disposition: form-data; name=ok\r\n\r\nfine\r\n"
                       "--b\r\nContent-Disposition: form-data; name=evil\r\n\r\nnope\r\n"
                       "--b--";
    r.abort_name = "evil";
    parse_all_s(&r, "b", body, NULL);
    CHECK(r.rc == MM_E_UNSUPPORTED);
    CHECK_STR(r.err, "field \"evil\" is not allowed");
    CHECK(r.nparts == 2 && r.part[0].ended && r.part[1].len == 0);
    r.abort_name = NULL;
    r.abort_data = 3;
    parse_all_s(&r, "b", body, NULL);
    CHECK(r.rc == MM_E_UNPROCESSABLE && strstr(r.err, "on_data"));
    CHECK(r.nparts == 1);
    r.abort_data = 0;

    /* no callbacks at all: parse and check only */
    mm_multipart_t p;
    CHECK(mm_multipart_init(&p, "b", NULL, NULL, NULL) == 0);
    CHECK(mm_multipart_feed(&p, body, strlen(body)) == 0);
    CHECK(mm_multipart_finish(&p) == 0);
    CHECK(mm_multipart_feed(&p, NULL, 0) == 0);
    result_free(&r);
}

/* ------------------------------------------------------------------ */
/* Fuzz                                                                */
/* ------------------------------------------------------------------ */

static void fuzz(long iters)
{
    static const char *dict[] = {"\r", "\n", "\r\n", "-", "--", "--b", "\r\n--b", "\r\n--b--",
                                 "\n--b\n", "\"", ";", ":", "\\", " ", "\t", "%", "'", "=",
                                 "\r\n\r\n", "name=", "filename*=UTF-8''", "\0", "\xff",
                                 "Content-Disposition: form-data; name=z\r\n"};
    buf_t base[3] = {{0}}, pay = {0};
    result_t a = {0}, c = {0};
    uint64_t s = 12345;
    char *m = NULL;
    size_t mcap = 0;
    long ok = 0, diffs = 0;

    build_form(&base[0], &pay, "b", 1);
    free(pay.p);
    memset(&pay, 0, sizeof pay);
    build_form(&base[1], &pay, "b", 0);
    bstr(&base[2], "preamble\r\n--b \r\nContent-Disposition: form-data; name=\"f\"; "
                   "filename*=UTF-8''%C3%A9; filename=\"a\\\"b\"\r\nContent-Type: image/png\r\n"
                   "\r\n\x89PNG\r\n\x1a\n\0\0\r\n--b\r\nContent-Disposition: form-data;\r\n name=q\r\n\r\n"
                   "\r\n--b--\r\nepilogue");

    for (long it = 0; it < iters; it++) {
        const buf_t *src = &base[rnd(&s) % 3];
        size_t n = src->n;
        grow(&m, &mcap, n + 4096);
        memcpy(m, src->p, n);
        int nmut = 1 + (int)(rnd(&s) % 4);
        for (int k = 0; k < nmut; k++) {
            size_t at = n ? rnd(&s) % (n + 1) : 0;
            switch (rnd(&s) % 6) {
            case 0: /* flip a byte */
                if (at < n)
                    m[at] = (char)rnd(&s);
                break;
            case 1: { /* insert a token */
                const char *t = dict[rnd(&s) % MM_ARRAY_LEN(dict)];
                size_t tl = strlen(t) ? strlen(t) : 1;
                if (n + tl + 1 > mcap)
                    break;
                memmove(m + at + tl, m + at, n - at);
                memcpy(m + at, t, tl);
                n += tl;
                break;
            }
            case 2: { /* delete a range */
                size_t dl = rnd(&s) % 16;
                if (at + dl > n)
                    dl = n - at;
                memmove(m + at, m + at + dl, n - at - dl);
                n -= dl;
                break;
            }
            case 3: { /* duplicate a range */
                size_t dl = rnd(&s) % 64;
                if (at + dl > n)
                    dl = n - at;
                if (n + dl + 1 > mcap)
                    break;
                memmove(m + at + dl, m + at, n - at);
                n += dl;
                break;
            }
            case 4: /* truncate */
                if (rnd(&s) % 4 == 0)
                    n = at;
                break;
            default: /* a run of one byte */
                if (at < n)
                    memset(m + at, "\r\n- "[rnd(&s) % 4], MM_MIN(n - at, (size_t)(rnd(&s) % 8)));
                break;
            }
        }
        mm_multipart_opts_t o = {0};
        if (rnd(&s) % 4 == 0) {
            o.max_parts = rnd(&s) % 4;
            o.max_header_bytes = rnd(&s) % 200;
            o.max_part_bytes = rnd(&s) % 600;
        }
        parse(&a, "b", m, n, &o, 0, NULL);
        parse(&c, "b", m, n, &o, 1 + rnd(&s) % 32, &s);
        if (!same(&a, &c)) {
            if (diffs++ < 3) {
                fprintf(stderr, "  fuzz %ld: one-shot rc %d \"%s\" / chunked rc %d \"%s\" (bad %d/%d)\n",
                        it, a.rc, a.err, c.rc, c.err, a.bad, c.bad);
                FILE *f = fopen("/tmp/multipart_fuzz_fail.bin", "wb");
                if (f) {
                    fwrite(m, 1, n, f);
                    fclose(f);
                }
            }
        }
        ok += a.rc == 0;
    }
    CHECK(diffs == 0);
    printf("fuzz: %ld iterations, %ld parsed cleanly, %ld chunking mismatches\n", iters, ok, diffs);
    result_free(&a);
    result_free(&c);
    for (int i = 0; i < 3; i++)
        free(base[i].p);
    free(pay.p);
    free(m);
}

/* ------------------------------------------------------------------ */
/* Throughput                                                          */
/* ------------------------------------------------------------------ */

static int bench_data(mm_multipart_t *p, const char *d, size_t n)
{
    uint64_t *sum = p->user;
    *sum += n + (unsigned char)d[n - 1];
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double bench_one(const buf_t *body, const char *bnd, uint64_t want)
{
    const mm_multipart_callbacks_t cb = {NULL, bench_data, NULL};
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        mm_multipart_t p;
        uint64_t sum = 0;
        int rc = mm_multipart_init(&p, bnd, NULL, &cb, &sum);
        double t0 = now();
        for (size_t off = 0; !rc && off < body->n; off += 65536)
            rc = mm_multipart_feed(&p, body->p + off, MM_MIN((size_t)65536, body->n - off));
        if (!rc)
            rc = mm_multipart_finish(&p);
        double t = now() - t0;
        CHECK(rc == 0);
        CHECK(sum >= want);
        if (t < best)
            best = t;
    }
    return body->n / best / 1e6;
}

static void bench(void)
{
    const size_t N = 50u << 20;
    const char *bnd = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
    buf_t b = {0};
    uint64_t s = 7;

    /* random binary (a CR every 256 bytes on average) */
    bstr(&b, "--");
    bstr(&b, bnd);
    bstr(&b, "\r\nContent-Disposition: form-data; name=\"video\"; filename=\"v.mp4\"\r\n"
             "Content-Type: video/mp4\r\n\r\n");
    size_t h = b.n;
    grow(&b.p, &b.cap, h + N + 256);
    for (size_t i = 0; i < N; i += 8) {
        uint64_t x = rnd(&s);
        memcpy(b.p + h + i, &x, 8);
    }
    b.n = h + N;
    bstr(&b, "\r\n--");
    bstr(&b, bnd);
    bstr(&b, "--\r\n");
    double bin = bench_one(&b, bnd, N);

    /* adversarial: nothing but delimiter prefixes that fail late */
    b.n = h;
    char unit[64];
    int ul = snprintf(unit, sizeof unit, "\r\n--%.*sX", (int)strlen(bnd) - 1, bnd);
    while (b.n + (size_t)ul <= h + N)
        bput(&b, unit, (size_t)ul);
    bstr(&b, "\r\n--");
    bstr(&b, bnd);
    bstr(&b, "--\r\n");
    double adv = bench_one(&b, bnd, N - (size_t)ul);

    printf("throughput (50 MB body, 64 KiB chunks): random binary %.0f MB/s, "
           "all near-delimiters %.0f MB/s\n", bin, adv);
    free(b.p);
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 300000;
    test_boundary();
    test_simple_form();
    test_bare_lf();
    test_preamble_epilogue();
    test_filenames();
    test_errors();
    test_limits();
    test_callbacks();
    fuzz(iters);
    if (!getenv("MM_NO_BENCH"))
        bench();
    printf("test_multipart: %d checks, %d failures\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
