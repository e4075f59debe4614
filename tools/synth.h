/* synth.h — what the synthetic-model generators (tools/mkclip.c,
 * tools/mkqwen2vl.c) share: a table of tensors, deterministic per-tensor
 * values, 16-bit conversions, and writing a model folder's files
 * (tokenizer copies, JSON texts, model.safetensors). Header-only: each
 * generator is one standalone program (`cc ... tools/mkX.c -lm`).
 *
 * Weights: every tensor gets its own PRNG stream seeded from its name, so
 * values do not depend on write order. Matrices uniform with std 0.02,
 * biases std 0.01, norm weights 1 +- 0.02, norm biases +- 0.02; SYN_CONST is
 * CLIP's logit_scale. */
#ifndef MMEMBED_TOOLS_SYNTH_H
#define MMEMBED_TOOLS_SYNTH_H

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { SYN_WEIGHT, SYN_BIAS, SYN_LN_W, SYN_LN_B, SYN_CONST } syn_kind_t;

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[5];
    syn_kind_t kind;
    size_t numel;
} syn_tensor_t;

static syn_tensor_t syn_tensors[1024];
static int syn_ntensors;
static const char *syn_tool = "synth";   /* the program's name, for messages */

static inline void syn_vadd(syn_kind_t kind, int ndim, const int64_t *d, const char *fmt, va_list ap)
{
    syn_tensor_t *t = &syn_tensors[syn_ntensors++];
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    t->ndim = ndim;
    t->kind = kind;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = d[i];
        t->numel *= (size_t)d[i];
    }
}

static inline void __attribute__((format(printf, 4, 5)))
syn_add(syn_kind_t kind, int ndim, const int64_t *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    syn_vadd(kind, ndim, d, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ numbers */

static inline uint64_t syn_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t syn_hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* f32 -> f16, round to nearest even (values here are small and finite) */
static inline uint16_t syn_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    int32_t e = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t m = x & 0x7fffff;
    if (e >= 31)
        return sign | 0x7c00;
    if (e <= 0) { /* subnormal or zero */
        if (e < -10)
            return sign;
        m |= 0x800000;
        int shift = 14 - e;
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return sign | (uint16_t)h;
    }
    uint32_t h = ((uint32_t)e << 10) | (m >> 13), rem = m & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++; /* may carry into the exponent: still correct */
    return sign | (uint16_t)h;
}

/* f32 -> bf16, round to nearest even (values here are small and finite) */
static inline uint16_t syn_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

static inline float syn_value(syn_kind_t k, uint64_t *s)
{
    /* uniform on [-1, 1) scaled by sqrt(3) has unit std */
    float u = (float)((double)(syn_splitmix(s) >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0) * 1.7320508f;
    switch (k) {
    case SYN_WEIGHT: return 0.02f * u;
    case SYN_BIAS: return 0.01f * u;
    case SYN_LN_W: return 1.0f + 0.02f * u;
    case SYN_LN_B: return 0.02f * u;
    default: return 2.6592f; /* logit_scale, as CLIPConfig initialises it */
    }
}

/* ------------------------------------------------------------ files */

/* copies from -> to; a name ending in .gz is read through gzip -dc */
static inline int syn_copy_file(const char *from, const char *to)
{
    size_t fl = strlen(from);
    int gz = fl > 3 && !strcmp(from + fl - 3, ".gz");
    FILE *in;
    if (gz) {
        char cmd[2200];
        snprintf(cmd, sizeof cmd, "gzip -dc '%s'", from);
        in = popen(cmd, "r");
    } else {
        in = fopen(from, "rb");
    }
    FILE *out = in ? fopen(to, "wb") : NULL;
    if (!in || !out) {
        fprintf(stderr, "%s: %s: %s\n", syn_tool, in ? to : from, strerror(errno));
        if (in)
            gz ? pclose(in) : fclose(in);
        return -1;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    int rin = gz ? pclose(in) : fclose(in);
    if (fclose(out) != 0 || rin != 0) {
        fprintf(stderr, "%s: copying %s to %s failed\n", syn_tool, from, to);
        return -1;
    }
    return 0;
}

/* DIR/tokenizer.json from TOK (gunzipped when it ends in .gz), and the
 * tokenizer_config.json that lies beside TOK, if any */
static inline int syn_copy_tokenizer(const char *tok, const char *dir)
{
    char to[1024], from[1024];
    snprintf(to, sizeof to, "%s/tokenizer.json", dir);
    if (syn_copy_file(tok, to))
        return -1;
    snprintf(from, sizeof from, "%s", tok);
    char *slash = strrchr(from, '/');
    snprintf(slash ? slash + 1 : from, sizeof from - (size_t)(slash ? slash + 1 - from : 0), "tokenizer_config.json");
    if (access(from, R_OK) != 0)
        return 0;
    snprintf(to, sizeof to, "%s/tokenizer_config.json", dir);
    return syn_copy_file(from, to);
}

static inline int syn_write_text(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "%s: %s: %s\n", syn_tool, path, strerror(errno));
        return -1;
    }
    return 0;
}

/* DIR/model.safetensors with every tensor of the table in a 16-bit dtype
 * ("F16" or "BF16", values through to16). header_only: the full header and
 * a hole for the data (a sparse file: enough to read sizes, not to load). */
static inline int syn_write_safetensors(const char *dir, const char *dtype, uint16_t (*to16)(float), int header_only)
{
    size_t cap = 1 << 20, len = 0, off = 0;
    char *h = malloc(cap);
    if (!h)
        return -1;
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < syn_ntensors; i++) {
        syn_tensor_t *t = &syn_tensors[i];
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name, dtype);
        for (int d = 0; d < t->ndim; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off, off + 2 * t->numel);
        off += 2 * t->numel;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8) /* keep the data block 8-byte aligned, as safetensors does */
        h[len++] = ' ';

    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "%s: %s: %s\n", syn_tool, path, strerror(errno));
        free(h);
        return -1;
    }
    unsigned char n8[8];
    for (int i = 0; i < 8; i++)
        n8[i] = (unsigned char)((uint64_t)len >> (8 * i));
    fwrite(n8, 1, 8, f);
    fwrite(h, 1, len, f);
    free(h);

    int bad = 0;
    if (header_only) {
        bad = fflush(f) != 0 || ftruncate(fileno(f), (off_t)(8 + len + off)) != 0;
    } else {
        static uint16_t buf[1 << 16];
        for (int i = 0; i < syn_ntensors && !bad; i++) {
            syn_tensor_t *t = &syn_tensors[i];
            uint64_t s = syn_hash_name(t->name);
            for (size_t done = 0; done < t->numel && !bad;) {
                size_t n = t->numel - done < (sizeof buf / 2) ? t->numel - done : (sizeof buf / 2);
                for (size_t j = 0; j < n; j++)
                    buf[j] = to16(syn_value(t->kind, &s));
                bad = fwrite(buf, 2, n, f) != n;
                done += n;
            }
        }
    }
    if (fclose(f) != 0 || bad) {
        fprintf(stderr, "%s: %s: %s\n", syn_tool, path, strerror(errno));
        return -1;
    }
    printf("%s: %s: %d tensors, %zu parameters, %.1f MB%s\n", syn_tool, path, syn_ntensors, off / 2,
           (double)(off + len + 8) / 1e6, header_only ? " (header only: sparse)" : "");
    return 0;
}

#endif
