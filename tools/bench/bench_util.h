/* Small helpers shared by the benchmark drivers (clip_bench.c,
 * text_bench.c, use_bench.c). Define BENCH_NAME before including. */
#ifndef MMEMBED_BENCH_UTIL_H
#define MMEMBED_BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* seconds on a clock: CLOCK_MONOTONIC (wall) or CLOCK_PROCESS_CPUTIME_ID */
static inline double clk(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline double now(void) { return clk(CLOCK_MONOTONIC); }
static inline double cpu_now(void) { return clk(CLOCK_PROCESS_CPUTIME_ID); }

/* xorshift64: deterministic inputs, the same on every run */
static inline uint32_t bench_u32(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 32);
}

static inline int write_file(const char *dir, const char *name, const void *p, size_t bytes)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, bytes, f) != bytes || fclose(f) != 0) {
        fprintf(stderr, BENCH_NAME ": cannot write %s\n", path);
        if (f && !ferror(f))
            fclose(f);
        return -1;
    }
    return 0;
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* sorts v[0..n) and returns its median */
static inline double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif
