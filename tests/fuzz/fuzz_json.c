/* libFuzzer harness: JSON request decoding.
 *
 * The server parses request bodies with json-c and checks their shape in
 * src/embed/body.c. This harness repeats that
 * path on the input as a request body: read_json (tokener with depth 16,
 * only whitespace after the value, an object at the top) and the shape
 * checks of each route:
 *   /v1/embeddings     model, encoding_format, dimensions, input as a
 *                      string, string[], int[] or int[][];
 *   /embed/text        texts: string[];
 *   /embed/image       images: string or string[] of base64 / data: URIs,
 *                      decoded with mm_base64_decode (src/http/base64.c);
 *   /embed/multimodal  image, text, text_weight, image_weight.
 * Then every string and key of the document goes through mm_buf_json_str
 * (how names reach responses) and must read back as the same bytes, and
 * every finite number through mm_buf_float (src/buf.c), which must read
 * back as the same float32. */
#include "mmembed/base64.h"
#include "mmembed/buf.h"
#include "mmembed/common.h"
#include "mmembed/image.h"

#include "fuzz.h"

#include <json-c/json.h>
#include <math.h>
#include <string.h>

#define JSON_MAX_DEPTH 16   /* src/embed/internal.h */
#define MAX_ITEMS 64        /* limits.max_items */
#define MAX_TOKENS 77       /* CLIP's text context */
#define VOCAB 49408         /* CLIP's vocabulary */

/* src/embed/body.c read_json: NULL unless the body is one JSON object. */
static json_object *read_json(const char *body, size_t len)
{
    if (len == 0) return NULL;
    json_tokener *tok = json_tokener_new_ex(JSON_MAX_DEPTH);
    FUZZ_CHECK(tok, "out of memory");
    json_object *j = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    FUZZ_CHECK(used <= len, "parse end %zu past %zu", used, len);
    FUZZ_CHECK(!j || jerr == json_tokener_success, "object with error %d", (int)jerr);
    if (j && jerr == json_tokener_success)
        while (used < len && (body[used] == ' ' || body[used] == '\n' || body[used] == '\r' || body[used] == '\t'))
            used++;
    /* the error text goes to the client: it must exist for every code */
    FUZZ_CHECK(json_tokener_error_desc(jerr == json_tokener_continue ? json_tokener_error_parse_eof : jerr),
               "no description for %d", (int)jerr);
    if (!j || jerr != json_tokener_success || used < len || !json_object_is_type(j, json_type_object)) {
        json_object_put(j);
        return NULL;
    }
    return j;
}

/* jstr/jbool: absent or null is fine, another type is a 400 */
static int field_ok(json_object *j, const char *key, json_type type)
{
    json_object *v;
    if (!json_object_object_get_ex(j, key, &v) || json_object_is_type(v, json_type_null)) return 1;
    return json_object_is_type(v, type);
}

/* src/embed/body.c decode_b64_image */
static int decode_b64_image(const char *s, size_t len)
{
    if (len > 5 && !strncmp(s, "data:", 5)) {
        const char *comma = memchr(s, ',', len);
        if (!comma || !memmem(s, (size_t)(comma - s), ";base64", 7)) return -1;
        len -= (size_t)(comma + 1 - s);
        s = comma + 1;
    } else if (len > 8 && (!strncmp(s, "http://", 7) || !strncmp(s, "https://", 8))) {
        return -1;
    }
    size_t cap = len / 4 * 3 + 4;
    unsigned char *b = malloc(cap);
    FUZZ_CHECK(b, "out of memory");
    long n = mm_base64_decode(s, len, b);
    FUZZ_CHECK(n < 0 || (size_t)n <= cap, "decoded %ld bytes into %zu", n, cap);
    if (n >= 0) (void)mm_image_sniff(b, (size_t)n);
    free(b);
    return n < 0 ? -1 : 0;
}

static void route_openai(json_object *j)
{
    json_object *v, *input;
    if (!field_ok(j, "model", json_type_string) || !field_ok(j, "encoding_format", json_type_string)) return;
    if (json_object_object_get_ex(j, "dimensions", &v) && !json_object_is_type(v, json_type_null) &&
        (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 1 || json_object_get_int64(v) > 512))
        return;
    if (!json_object_object_get_ex(j, "input", &input)) return;
    int n = 0, ids_mode = 0;
    if (json_object_is_type(input, json_type_string)) {
        n = 1;
    } else if (json_object_is_type(input, json_type_array)) {
        n = (int)json_object_array_length(input);
        if (n == 0) return;
        json_object *first = json_object_array_get_idx(input, 0);
        if (json_object_is_type(first, json_type_int)) ids_mode = 1, n = 1;
        else if (json_object_is_type(first, json_type_array)) ids_mode = 2;
    } else {
        return;
    }
    if (n > MAX_ITEMS) return;
    for (int i = 0; i < n; i++) {
        if (ids_mode) {
            json_object *seq = ids_mode == 1 ? input : json_object_array_get_idx(input, (size_t)i);
            if (!json_object_is_type(seq, json_type_array)) return;
            int len = (int)json_object_array_length(seq);
            if (len == 0 || len > MAX_TOKENS) return;
            for (int k = 0; k < len; k++) {
                json_object *t = json_object_array_get_idx(seq, (size_t)k);
                int64_t id = json_object_is_type(t, json_type_int) ? json_object_get_int64(t) : -1;
                if (id < 0 || id >= VOCAB) return;
            }
        } else {
            json_object *t = json_object_is_type(input, json_type_string)
                                 ? input
                                 : json_object_array_get_idx(input, (size_t)i);
            if (!json_object_is_type(t, json_type_string)) return;
            const char *s = json_object_get_string(t);
            int len = json_object_get_string_len(t);
            FUZZ_CHECK(s && len >= 0 && s[len] == '\0', "string of %d bytes not terminated", len);
        }
    }
}

static void route_text(json_object *j)
{
    json_object *arr;
    if (!json_object_object_get_ex(j, "texts", &arr) || !json_object_is_type(arr, json_type_array)) return;
    int n = (int)json_object_array_length(arr);
    if (n == 0 || n > MAX_ITEMS) return;
    for (int i = 0; i < n; i++) {
        json_object *t = json_object_array_get_idx(arr, (size_t)i);
        if (!json_object_is_type(t, json_type_string)) return;
        (void)fuzz_fnv(FUZZ_FNV_INIT, json_object_get_string(t), (size_t)json_object_get_string_len(t));
    }
}

static void route_media(json_object *j, int multimodal)
{
    json_object *arr, *v;
    if (!field_ok(j, "model", json_type_string) || !field_ok(j, "normalize", json_type_boolean) ||
        !field_ok(j, "return_parts", json_type_boolean))
        return;
    if (!json_object_object_get_ex(j, multimodal ? "image" : "images", &arr)) return;
    int single = json_object_is_type(arr, json_type_string);
    if (!single && !json_object_is_type(arr, json_type_array)) return;
    int n = single ? 1 : (int)json_object_array_length(arr);
    if (n > MAX_ITEMS) return;
    for (int i = 0; i < n; i++) {
        json_object *s = single ? arr : json_object_array_get_idx(arr, (size_t)i);
        if (!json_object_is_type(s, json_type_string)) return;
        if (decode_b64_image(json_object_get_string(s), (size_t)json_object_get_string_len(s))) return;
    }
    if (!multimodal) return;
    if (json_object_object_get_ex(j, "text", &v) && !json_object_is_type(v, json_type_string)) return;
    for (int k = 0; k < 2; k++) {
        if (!json_object_object_get_ex(j, k ? "image_weight" : "text_weight", &v)) continue;
        double w = json_object_get_double(v);
        if (!(json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)) || !isfinite(w) ||
            w < 0)
            return;
    }
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static int utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], lo = 0x80, hi = 0xBF;
        size_t len;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else return 0;
        if (i + len > n || s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        i += len;
    }
    return 1;
}

/* mm_buf_json_str must give a JSON string literal that reads back as s
 * when s is valid UTF-8, and a valid literal (bad bytes as U+FFFD) when not. */
static void check_json_str(const char *s, size_t n, mm_buf_t *b)
{
    if (!utf8_valid((const unsigned char *)s, n)) {
        mm_buf_reset(b);
        mm_buf_json_str(b, s, n);
        FUZZ_CHECK(!b->oom && b->len >= 2, "out of memory");
        FUZZ_CHECK(utf8_valid((const unsigned char *)b->data, b->len), "mm_buf_json_str wrote invalid UTF-8");
        json_tokener *tk = json_tokener_new();
        FUZZ_CHECK(tk, "out of memory");
        json_object *o = json_tokener_parse_ex(tk, b->data, (int)b->len);
        int ok = o && json_tokener_get_error(tk) == json_tokener_success && json_object_is_type(o, json_type_string);
        json_tokener_free(tk);
        json_object_put(o);
        FUZZ_CHECK(ok, "mm_buf_json_str of invalid UTF-8 is not a JSON string: %.*s", (int)MM_MIN(b->len, 200),
                   b->data);
        return;
    }
    mm_buf_reset(b);
    mm_buf_json_str(b, s, n);
    FUZZ_CHECK(!b->oom && b->len >= 2, "out of memory");
    json_tokener *tok = json_tokener_new();
    FUZZ_CHECK(tok, "out of memory");
    json_object *o = json_tokener_parse_ex(tok, b->data, (int)b->len);
    int ok = o && json_tokener_get_error(tok) == json_tokener_success && json_tokener_get_parse_end(tok) == b->len &&
             json_object_is_type(o, json_type_string) && (size_t)json_object_get_string_len(o) == n &&
             !memcmp(json_object_get_string(o), s, n);
    json_tokener_free(tok);
    json_object_put(o);
    FUZZ_CHECK(ok, "mm_buf_json_str of %zu bytes does not read back: %.*s", n, (int)MM_MIN(b->len, 200),
               b->data);
}

/* mm_buf_float: shortest text that reads back as the same float32 */
static void check_float(double d, mm_buf_t *b)
{
    float f = (float)d;
    if (!isfinite(f)) return;
    mm_buf_reset(b);
    mm_buf_float(b, f);
    FUZZ_CHECK(!b->oom && b->len > 0, "out of memory");
    char *end;
    float back = (float)strtod(b->data, &end);  /* as a client reads it: double, then float32 */
    FUZZ_CHECK(*end == '\0' && back == f, "mm_buf_float(%.9g) wrote \"%s\"", (double)f, b->data);
}

/* depth: containers from the top one (1) down to this value */
static void walk(json_object *o, mm_buf_t *b, int depth)
{
    json_type t = json_object_get_type(o);
    FUZZ_CHECK(depth <= JSON_MAX_DEPTH || (t != json_type_object && t != json_type_array),
               "container nested %d deep", depth);
    switch (t) {
    case json_type_object: {
        json_object_object_foreach(o, key, val) {
            check_json_str(key, strlen(key), b);
            walk(val, b, depth + 1);
        }
        break;
    }
    case json_type_array: {
        size_t n = json_object_array_length(o);
        for (size_t i = 0; i < n; i++) walk(json_object_array_get_idx(o, i), b, depth + 1);
        break;
    }
    case json_type_string:
        check_json_str(json_object_get_string(o), (size_t)json_object_get_string_len(o), b);
        break;
    case json_type_double:
    case json_type_int:
        check_float(json_object_get_double(o), b);
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > INT32_MAX) return 0;
    json_object *j = read_json((const char *)data, size);
    if (!j) return 0;
    route_openai(j);
    route_text(j);
    route_media(j, 0);
    route_media(j, 1);
    mm_buf_t b;
    mm_buf_init(&b);
    walk(j, &b, 1);
    mm_buf_free(&b);
    json_object_put(j);
    return 0;
}
