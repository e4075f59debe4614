#include "mmembed/base64.h"

static const char enc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;   /* '-' and '_': URL-safe alphabet too */
    if (c == '/' || c == '_') return 63;
    return -1;
}

long mm_base64_decode(const char *src, size_t len, unsigned char *dst)
{
    unsigned acc = 0;
    int bits = 0, pad = 0;
    long n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
        if (c == '=') {
            pad++;
            continue;
        }
        if (pad) return -1;   /* data after padding */
        int v = val(c);
        if (v < 0) return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            dst[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (bits >= 6 || pad > 2) return -1;  /* a lone 6-bit group cannot end a byte */
    return n;
}

void mm_base64_encode(mm_buf_t *b, const void *p, size_t n)
{
    const unsigned char *s = p;
    if (mm_buf_reserve(b, (n + 2) / 3 * 4)) return;
    char *o = b->data + b->len;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        *o++ = enc[v >> 18];
        *o++ = enc[(v >> 12) & 63];
        *o++ = enc[(v >> 6) & 63];
        *o++ = enc[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
        *o++ = enc[v >> 18];
        *o++ = enc[(v >> 12) & 63];
        *o++ = i + 1 < n ? enc[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}
