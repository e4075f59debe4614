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
        } else {
            mm_buf_append(b, &s[i], 1);
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
    char tmp[32];
    /* %.9g always round-trips a float32; try shorter first */
    for (int prec = 6; prec <= 9; prec++) {
        int n = snprintf(tmp, sizeof tmp, "%.*g", prec, (double)v);
        if ((float)strtod(tmp, NULL) == v || prec == 9) {
            mm_buf_append(b, tmp, (size_t)n);
            return;
        }
    }
}
