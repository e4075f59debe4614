/* libFuzzer harness: base64 and data: URI decoding (src/http/base64.c).
 *
 * The input is used three ways:
 *  1. as base64 text: mm_base64_decode into a buffer of exactly the
 *     documented capacity (len / 4 * 3 + 3), after stripping a data: URI
 *     prefix the way src/embed/body.c does for JSON images; a success must
 *     re-encode and decode to the same bytes;
 *  2. as raw bytes: encode → decode must give them back, and the encoding
 *     has the canonical length and alphabet;
 *  3. the encoding with whitespace spread through it (the decoder skips
 *     it) and with its padding dropped (padding is optional) decodes the
 *     same. */
#include "mmembed/base64.h"
#include "mmembed/buf.h"

#include "fuzz.h"

#include <string.h>

/* Decode s[0..len) into a fresh buffer of the documented capacity. */
static long decode(const char *s, size_t len, unsigned char **out)
{
    size_t cap = len / 4 * 3 + 3;
    *out = malloc(cap);
    FUZZ_CHECK(*out, "out of memory");
    long n = mm_base64_decode(s, len, *out);
    FUZZ_CHECK(n >= -1 && (n < 0 || (size_t)n <= cap), "decoded %ld bytes into %zu", n, cap);
    return n;
}

/* src/embed/body.c decode_b64_image: a "data:" URI must say ";base64" before
 * its comma; what follows the comma is the payload. Returns 0 when the
 * URI is refused. */
static int strip_data_uri(const char **s, size_t *len)
{
    if (*len > 5 && !strncmp(*s, "data:", 5)) {
        const char *comma = memchr(*s, ',', *len);
        if (!comma || !memmem(*s, (size_t)(comma - *s), ";base64", 7)) return 0;
        *len -= (size_t)(comma + 1 - *s);
        *s = comma + 1;
    }
    return 1;
}

static void expect_decodes_to(const char *s, size_t len, const unsigned char *want, size_t n,
                              const char *what)
{
    unsigned char *got;
    long m = decode(s, len, &got);
    FUZZ_CHECK(m == (long)n, "%s: decoded %ld bytes, want %zu", what, m, n);
    FUZZ_CHECK(!n || !memcmp(got, want, n), "%s: decoded bytes differ", what);
    free(got);
}

static void encode_check(const unsigned char *p, size_t n, mm_buf_t *b)
{
    mm_buf_reset(b);
    mm_base64_encode(b, p, n);
    FUZZ_CHECK(!b->oom, "out of memory");
    FUZZ_CHECK(b->len == (n + 2) / 3 * 4, "encoded %zu bytes to %zu chars", n, b->len);
    FUZZ_CHECK(!b->data || b->data[b->len] == '\0', "encoding not NUL-terminated");
    for (size_t i = 0; i < b->len; i++) {
        char c = b->data[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
                 c == '/' || (c == '=' && i + 2 >= b->len);
        FUZZ_CHECK(ok, "byte %zu of the encoding is 0x%02x", i, (unsigned char)c);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mm_buf_t enc, ws;
    mm_buf_init(&enc);
    mm_buf_init(&ws);

    /* 1. the input as (maybe data: URI) base64 text */
    const char *s = (const char *)data;
    size_t len = size;
    if (strip_data_uri(&s, &len)) {
        unsigned char *dec;
        long n = decode(s, len, &dec);
        if (n >= 0) {
            encode_check(dec, (size_t)n, &enc);
            expect_decodes_to(enc.data ? enc.data : "", enc.len, dec, (size_t)n, "re-encoded input");
        }
        free(dec);
    }

    /* 2. the input as raw bytes */
    encode_check(data, size, &enc);
    expect_decodes_to(enc.data ? enc.data : "", enc.len, data, size, "round trip");

    /* 3. whitespace inserted at input-derived places, then padding dropped */
    uint64_t rng = fuzz_fnv(FUZZ_FNV_INIT, data, size);
    static const char space[] = " \n\r\t";
    for (size_t i = 0; i < enc.len; i++) {
        if (fuzz_rng(&rng) % 8 == 0) mm_buf_append(&ws, &space[fuzz_rng(&rng) % 4], 1);
        mm_buf_append(&ws, &enc.data[i], 1);
    }
    FUZZ_CHECK(!ws.oom, "out of memory");
    expect_decodes_to(ws.data ? ws.data : "", ws.len, data, size, "with whitespace");
    size_t unpadded = enc.len;
    while (unpadded && enc.data[unpadded - 1] == '=') unpadded--;
    expect_decodes_to(enc.data ? enc.data : "", unpadded, data, size, "without padding");

    mm_buf_free(&enc);
    mm_buf_free(&ws);
    return 0;
}
