/* libFuzzer harness: multipart/form-data (src/http/multipart.c).
 *
 * Input: a Content-Type header value, "\n", then the body. The header goes
 * through mm_multipart_boundary; when it yields a boundary the body is
 * parsed three ways: in one piece, in random chunks (zero-length ones
 * included) and, for small bodies, one byte at a time. Each chunk is a
 * fresh heap copy freed right after the feed, so a slice that points
 * outside it, or a pointer the parser keeps, shows up under ASan.
 *
 * Invariants (the header's contract, as tests/unit/test_multipart.c checks
 * them): every chunking gives the same status, message and part headers,
 * and on success the same part bodies; slices are non-empty and lie in the
 * chunk or in the parser; part->size counts what on_data delivered; the
 * error is sticky. */
#include "mmembed/multipart.h"

#include "fuzz.h"

#include <string.h>

#define MAX_CT 512          /* longest Content-Type line looked for */
#define BYTEWISE_MAX 4096   /* feed bodies up to this size byte by byte */

typedef struct {
    int rc;
    char err[MM_ERRLEN];
    unsigned nparts;
    int in_part;
    uint64_t got;           /* body bytes of the current part seen in on_data */
    uint64_t headers;       /* hash of begin/end events */
    uint64_t data;          /* hash of all part bodies, in order */
    const char *chunk;
    size_t chunklen;
} run_t;

static int on_begin(mm_multipart_t *p, const mm_multipart_part_t *part)
{
    run_t *r = p->user;
    FUZZ_CHECK(!r->in_part, "part %u began inside part %u", part->index, r->nparts - 1);
    FUZZ_CHECK(part->index == r->nparts, "part index %u, expected %u", part->index, r->nparts);
    FUZZ_CHECK(part->size == 0, "new part has size %llu", (unsigned long long)part->size);
    FUZZ_CHECK(memchr(part->name, 0, sizeof part->name) && memchr(part->filename, 0, sizeof part->filename) &&
                   memchr(part->content_type, 0, sizeof part->content_type),
               "part strings not NUL-terminated");
    FUZZ_CHECK(part->name[0], "part %u has an empty name", part->index);
    r->in_part = 1;
    r->got = 0;
    r->nparts++;
    uint64_t h = fuzz_fnv(r->headers, "B", 1);
    h = fuzz_fnv(h, &part->index, sizeof part->index);
    h = fuzz_fnv(h, part->name, strlen(part->name) + 1);
    h = fuzz_fnv(h, part->filename, strlen(part->filename) + 1);
    h = fuzz_fnv(h, part->content_type, strlen(part->content_type) + 1);
    r->headers = fuzz_fnv(h, &part->has_filename, sizeof part->has_filename);
    return 0;
}

static int on_data(mm_multipart_t *p, const char *d, size_t n)
{
    run_t *r = p->user;
    const char *pb = (const char *)p, *pe = pb + sizeof *p;
    int in_chunk = d >= r->chunk && n <= r->chunklen && d - r->chunk <= (ptrdiff_t)(r->chunklen - n);
    int in_parser = d >= pb && d + n <= pe;
    FUZZ_CHECK(r->in_part, "on_data outside a part");
    FUZZ_CHECK(n > 0, "empty slice");
    FUZZ_CHECK(in_chunk || in_parser, "slice of %zu bytes outside the chunk and the parser", n);
    r->got += n;
    r->data = fuzz_fnv(r->data, d, n);  /* reads every byte: ASan checks the slice */
    return 0;
}

static int on_end(mm_multipart_t *p, const mm_multipart_part_t *part)
{
    run_t *r = p->user;
    FUZZ_CHECK(r->in_part, "part %u ended twice", part->index);
    FUZZ_CHECK(part->size == r->got, "part size %llu, delivered %llu", (unsigned long long)part->size,
               (unsigned long long)r->got);
    r->in_part = 0;
    r->data = fuzz_fnv(r->data, "|", 1);  /* part boundaries matter for the data */
    uint64_t h = fuzz_fnv(r->headers, "E", 1);
    h = fuzz_fnv(h, &part->index, sizeof part->index);
    r->headers = fuzz_fnv(h, &part->size, sizeof part->size);
    return 0;
}

static const mm_multipart_callbacks_t CB = {on_begin, on_data, on_end};

/* Parse body[0..n) in chunks: max_chunk 0 = one piece, else sizes drawn
 * from [0, max_chunk] (or exactly max_chunk when rng is NULL). */
static void parse(run_t *r, const char *boundary, const mm_multipart_opts_t *o, const char *body,
                  size_t n, size_t max_chunk, uint64_t *rng)
{
    mm_multipart_t *p = malloc(sizeof *p);
    FUZZ_CHECK(p, "out of memory");
    memset(r, 0, sizeof *r);
    r->headers = r->data = FUZZ_FNV_INIT;
    int rc = mm_multipart_init(p, boundary, o, &CB, r);
    FUZZ_CHECK(rc == 0, "init refused boundary \"%s\" that mm_multipart_boundary returned: %s", boundary,
               mm_multipart_error(p));
    for (size_t off = 0; !rc && off < n;) {
        size_t c = !max_chunk ? n : rng ? (size_t)(fuzz_rng(rng) % (max_chunk + 1)) : max_chunk;
        if (c > n - off) c = n - off;
        char *chunk = fuzz_dup(body + off, c);
        FUZZ_CHECK(chunk, "out of memory");
        r->chunk = chunk;
        r->chunklen = c;
        rc = mm_multipart_feed(p, chunk, c);
        free(chunk);
        r->chunk = NULL;
        r->chunklen = 0;
        off += c;
    }
    if (rc) {
        FUZZ_CHECK(rc < 0, "positive status %d", rc);
        FUZZ_CHECK(mm_multipart_feed(p, "x", 1) == rc, "error not sticky on feed");
        FUZZ_CHECK(mm_multipart_finish(p) == rc, "error not sticky on finish");
    } else {
        rc = mm_multipart_finish(p);
        FUZZ_CHECK(mm_multipart_finish(p) == rc, "finish not idempotent");
        FUZZ_CHECK(rc || !r->in_part, "success with a part still open");
    }
    FUZZ_CHECK(rc == 0 || mm_multipart_error(p)[0], "error %d without a message", rc);
    r->rc = rc;
    snprintf(r->err, sizeof r->err, "%s", mm_multipart_error(p));
    free(p);
}

static void same(const run_t *a, const run_t *b, const char *how)
{
    FUZZ_CHECK(a->rc == b->rc, "%s: status %d vs one-shot %d (\"%s\" / \"%s\")", how, b->rc, a->rc, b->err,
               a->err);
    FUZZ_CHECK(!strcmp(a->err, b->err), "%s: message \"%s\" vs one-shot \"%s\"", how, b->err, a->err);
    FUZZ_CHECK(a->headers == b->headers && a->nparts == b->nparts, "%s: part headers differ", how);
    /* data up to an error depends on where the chunks fall */
    FUZZ_CHECK(a->rc || a->data == b->data, "%s: part bodies differ", how);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *nl = memchr(in, '\n', size < MAX_CT ? size : MAX_CT);
    size_t ctlen = nl ? (size_t)(nl - in) : (size < MAX_CT ? size : MAX_CT);
    char ct[MAX_CT + 1], boundary[MM_MULTIPART_BOUNDARY_MAX + 1], err[MM_ERRLEN];
    memcpy(ct, in, ctlen);
    ct[ctlen] = '\0';

    int rc = mm_multipart_boundary(ct, boundary, sizeof boundary, err, sizeof err);
    if (rc) {
        FUZZ_CHECK(rc == MM_E_INVALID || rc == MM_E_UNSUPPORTED, "boundary status %d", rc);
        return 0;
    }
    size_t blen = strlen(boundary);
    FUZZ_CHECK(blen >= 1 && blen <= MM_MULTIPART_BOUNDARY_MAX, "boundary of %zu bytes", blen);
    if (!nl) return 0;

    const char *body = nl + 1;
    size_t n = size - (size_t)(body - in);
    uint64_t rng = fuzz_fnv(FUZZ_FNV_INIT, data, size);

    /* A quarter of the inputs run under small limits, so the limit paths
     * are fuzzed too; the limits are the same for every chunking. */
    mm_multipart_opts_t o = {0};
    if (rng % 4 == 0) {
        o.max_parts = fuzz_rng(&rng) % 5;
        o.max_header_bytes = fuzz_rng(&rng) % 300;
        o.max_part_bytes = fuzz_rng(&rng) % 1000;
    }

    run_t one, other;
    parse(&one, boundary, &o, body, n, 0, NULL);
    parse(&other, boundary, &o, body, n, 1 + fuzz_rng(&rng) % 64, &rng);
    same(&one, &other, "random chunks");
    if (n <= BYTEWISE_MAX) {
        parse(&other, boundary, &o, body, n, 1, NULL);
        same(&one, &other, "byte by byte");
    }
    return 0;
}
