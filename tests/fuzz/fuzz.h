/* Helpers shared by the libFuzzer harnesses in tests/fuzz/.
 *
 * A harness may only fail through FUZZ_CHECK (or a sanitizer): the message
 * names the broken invariant and abort() makes libFuzzer save the input as
 * a crash. Everything here is deterministic in the input, so a saved crash
 * replays exactly. */
#ifndef MMEMBED_FUZZ_H
#define MMEMBED_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond, ...)                                                     \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__,  \
                    #cond);                                                       \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
            abort();                                                              \
        }                                                                         \
    } while (0)

/* FNV-1a over a byte range, continuing from h (start with FUZZ_FNV_INIT). */
#define FUZZ_FNV_INIT 0xcbf29ce484222325ull

static inline uint64_t fuzz_fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

/* xorshift64: chunk sizes and other choices derived from the input, so the
 * same input always takes the same path. */
static inline uint64_t fuzz_rng(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* A heap copy of p[0..n) with no slack, so ASan sees any read past the end
 * (the fuzzer's own buffer may be followed by readable bytes). NULL only
 * when out of memory; n == 0 still gives a unique pointer. */
static inline void *fuzz_dup(const void *p, size_t n)
{
    void *d = malloc(n ? n : 1);
    if (d && n) memcpy(d, p, n);
    return d;
}

#endif
