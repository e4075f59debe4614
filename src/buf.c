#include "mmembed/buf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mm_buf_init(mm_buf_t *b)
{
    memset(b, 0, sizeof *b);
}

void mm_buf_free(mm_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

void mm_buf_reset(mm_buf_t *b)
{
    b->len = 0;
    b->oom = 0;
    if (b->data) b->data[0] = '\0';
}

int mm_buf_reserve(mm_buf_t *b, size_t extra)
{
    if (b->oom) return MM_E_NOMEM;
    if (b->len + extra + 1 <= b->cap) return MM_OK;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = 1;
        return MM_E_NOMEM;
    }
    b->data = p;
    b->cap = cap;
    return MM_OK;
}

void mm_buf_append(mm_buf_t *b, const void *p, size_t n)
{
    if (mm_buf_reserve(b, n)) return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void mm_buf_puts(mm_buf_t *b, const char *s)
{
    mm_buf_append(b, s, strlen(s));
}

void mm_buf_printf(mm_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || mm_buf_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the well-formed UTF-8 sequence at s (1-4), or 0 if the bytes
 * there are not one (stray continuation, overlong form, surrogate, past
 * U+10FFFF, or cut short by the end of the string). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;   /* allowed range of the second byte */
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;        /* overlong */
        else if (c == 0xED) hi = 0x9F;   /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;        /* overlong */
        else if (c == 0xF4) hi = 0x8F;   /* past U+10FFFF */
    } else
        return 0;
    if (len > n || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

void mm_buf_json_str(mm_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (mm_buf_reserve(b, n + 2)) return;
    b->data[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            mm_buf_append(b, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            if (c == '\n') mm_buf_append(b, "\\n", 2);
            else if (c == '\t') mm_buf_append(b, "\\t", 2);
            else if (c == '\r') mm_buf_append(b, "\\r", 2);
            else mm_buf_append(b, e, 6);
        } else if (c < 0x80) {
            mm_buf_append(b, &s[i], 1);
        } else {
            /* text from a request may be any bytes: strict JSON parsers
             * reject invalid UTF-8, so each bad byte becomes U+FFFD */
            size_t k = utf8_seq((const unsigned char *)s + i, n - i);
            if (k == 0) {
                mm_buf_append(b, "\\ufffd", 6);
            } else {
                mm_buf_append(b, &s[i], k);
                i += k - 1;
            }
        }
    }
    mm_buf_append(b, "\"", 1);
}

void mm_buf_float(mm_buf_t *b, float v)
{
    if (!isfinite(v)) {
        mm_buf_puts(b, "0");   /* JSON has no NaN/Inf; models never produce them on sane input */
        return;
    }
    char tmp[40];
    double a = fabs((double)v);
    if (v == 0) {
        mm_buf_append(b, "0", 1);
        return;
    }
    if (a < 1e-4 || a >= 1e7) {   /* rare for embeddings: the libc way */
        int n = snprintf(tmp, sizeof tmp, "%.9g", (double)v);
        mm_buf_append(b, tmp, (size_t)n);
        return;
    }
    /* Nine significant digits always read back as the same float32 (2^-24
     * ulp > 1e-8 relative). Integer formatting instead of printf: response
     * bodies are mostly floats, and this is several times faster. */
    int e = (int)floor(log10(a));
    static const double p10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13};
    unsigned long long m = (unsigned long long)llround(a * p10[8 - e]);
    if (m >= 1000000000ULL) {   /* rounding carried into a tenth digit */
        m = (m + 5) / 10;
        e++;
    }
    char dig[10];
    for (int i = 8; i >= 0; i--, m /= 10) dig[i] = (char)('0' + m % 10);
    int nd = 9;
    while (nd > 1 && dig[nd - 1] == '0') nd--;
    char *o = tmp;
    if (v < 0) *o++ = '-';
    if (e < 0) {   /* 0.000ddd */
        *o++ = '0';
        *o++ = '.';
        for (int i = -1; i > e; i--) *o++ = '0';
        for (int i = 0; i < nd; i++) *o++ = dig[i];
    } else {       /* ddd.ddd */
        for (int i = 0; i <= e; i++) *o++ = i < nd ? dig[i] : '0';
        if (nd > e + 1) {
            *o++ = '.';
            for (int i = e + 1; i < nd; i++) *o++ = dig[i];
        }
    }
    mm_buf_append(b, tmp, (size_t)(o - tmp));
}
