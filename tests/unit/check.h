/* What the unit tests share: CHECK (counts a check; a failed one prints
 * FAIL file:line: and a printf-style reason to stderr and counts a
 * failure), SKIP / SKIP_BROKEN (a part that cannot run here: printed and
 * counted, never silent), the counters, a clock, a cosine and slurp (a whole
 * file into memory). Each test's main ends with
 * `return check_summary("test_x");`: one line `test_x: N checks, N failed,
 * N skipped` and exit status 1 when anything failed. */
#ifndef MMEMBED_TEST_CHECK_H
#define MMEMBED_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int checks, failures, skips;

#define CHECK(cond, ...)                                         \
    do {                                                         \
        checks++;                                                \
        if (!(cond)) {                                           \
            failures++;                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fputc('\n', stderr);                                 \
        }                                                        \
    } while (0)

/* A part of a test that cannot run here: prints SKIP file:line: reason and
 * counts a skip. SKIP_BROKEN is for reasons that mean the machine is not set
 * up as the suite needs (ffmpeg cannot encode, a fixture model missing):
 * with CI=true in the environment it counts a failure instead. */
#define SKIP(...)                                                \
    do {                                                         \
        skips++;                                                 \
        fprintf(stdout, "SKIP %s:%d: ", __FILE__, __LINE__);     \
        fprintf(stdout, __VA_ARGS__);                            \
        fputc('\n', stdout);                                     \
    } while (0)

static inline int check_ci(void)
{
    const char *v = getenv("CI");
    return v && (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"));
}

#define SKIP_BROKEN(...)                                                       \
    do {                                                                       \
        if (check_ci()) {                                                      \
            checks++;                                                          \
            failures++;                                                        \
            fprintf(stderr, "FAIL %s:%d: (CI=true, cannot run here) ", __FILE__, \
                    __LINE__);                                                 \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        } else {                                                               \
            SKIP(__VA_ARGS__);                                                 \
        }                                                                      \
    } while (0)

/* The summary line every unit test ends with; its exit status. */
static inline int check_summary(const char *name)
{
    printf("%s: %d checks, %d failed, %d skipped\n", name, checks, failures, skips);
    return failures ? 1 : 0;
}

/* Whether /proc/cpuinfo's flags, capped by MMEMBED_CPU as src/nn/cpu.c
 * documents (avx2 < avx512 < avx512_bf16 < amx), say the CPU multiplies
 * dtype ("bf16", "q8" or "q4"; "f32" always) natively (q4: our own
 * kernels, AVX2 at least). The expectation comes from
 * the kernel's view of the CPU, not from mmembed's own cpuid report, so a
 * detection bug cannot hide itself. */
static inline int cpuinfo_flag(const char *flags, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = flags; (p = strstr(p, name)); p += n)
        if ((p == flags || p[-1] == ' ' || p[-1] == '\t') && (p[n] == ' ' || p[n] == '\n' || !p[n]))
            return 1;
    return 0;
}

static inline int cpuinfo_native(const char *dtype)
{
    if (!strcmp(dtype, "f32"))
        return 1;
    static char flags[8192];
    FILE *f = fopen("/proc/cpuinfo", "r");
    flags[0] = '\0';
    if (f) {
        while (fgets(flags, sizeof flags, f))
            if (!strncmp(flags, "flags", 5))
                break;
        fclose(f);
    }
    const char *cap = getenv("MMEMBED_CPU");
    int level = 4;
    if (cap && *cap)
        level = !strcmp(cap, "avx2") ? 1 : !strcmp(cap, "avx512") ? 2 : !strcmp(cap, "avx512_bf16") ? 3 : 4;
    const int avx512 = cpuinfo_flag(flags, "avx512f") && cpuinfo_flag(flags, "avx512dq") &&
                       cpuinfo_flag(flags, "avx512bw") && cpuinfo_flag(flags, "avx512vl");
    const int vnni = level >= 3 && avx512 && cpuinfo_flag(flags, "avx512_vnni");
    const int bf16 = vnni && cpuinfo_flag(flags, "avx512_bf16");
    const int amx = level >= 4 && bf16 && cpuinfo_flag(flags, "amx_bf16") && cpuinfo_flag(flags, "amx_tile") &&
                    cpuinfo_flag(flags, "amx_int8");
    if (!strcmp(dtype, "bf16"))
        return amx || bf16;
    if (!strcmp(dtype, "q8"))
        return amx || vnni;
    if (!strcmp(dtype, "q4"))
        return cpuinfo_flag(flags, "avx2") && cpuinfo_flag(flags, "fma");
    return 0;
}

/* Monotonic clock, seconds. */
static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Cosine of two n-float vectors, accumulated in double. */
static inline double cosine_ff(const float *a, const float *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / sqrt(aa * bb);
}

/* The file's bytes (malloc'd; *len its size), or NULL. */
static inline unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    *len = 0;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

#ifdef MMEMBED_ENCODER_H
/* The registry's dtype for one model asking for `want` (memory unknown),
 * for tests that include mmembed/encoder.h before this file. */
static inline int resolve_dtype(const char *want, mm_dtype_t *dt, char *why, size_t whylen)
{
    mm_enc_plan_t p = {.dir = "-", .want = want};
    char err[MM_ERRLEN];
    int rc = mm_encoder_plan(&p, 1, 0.5, 0, err, sizeof err);
    *dt = p.dt;
    snprintf(why, whylen, "%s", rc ? err : p.why);
    return rc;
}
#endif

#endif
