/* Small helpers shared by the benchmark drivers (clip_bench.c,
 * text_bench.c, use_bench.c). Define BENCH_NAME before including. */
#ifndef MMEMBED_BENCH_UTIL_H
#define MMEMBED_BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mmembed/nn.h"

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

/* The drivers' command line: MODEL_DIR WORK_DIR [--threads 1,2] [--secs S]
 * [--min-runs N] [--max-runs N] [--no-time | --serve] [--dtypes LIST]. */
typedef struct {
    const char *model_dir, *work, *threads, *dtypes;
    double secs;
    int min_runs, max_runs, do_time, serve;
} bench_opts_t;

/* Returns 0, or 2 after printing the usage or the unknown argument. */
static inline int bench_args(int argc, char **argv, bench_opts_t *o)
{
    *o = (bench_opts_t){.threads = "1,2", .dtypes = "f32", .secs = 3.0, .min_runs = 3, .max_runs = 50, .do_time = 1};
    if (argc < 3) {
        fprintf(stderr, "usage: " BENCH_NAME " MODEL_DIR WORK_DIR [--threads 1,2] [--secs S] [--min-runs N] "
                        "[--max-runs N] [--no-time | --serve] [--dtypes f32,bf16,q8]\n");
        return 2;
    }
    o->model_dir = argv[1];
    o->work = argv[2];
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            o->threads = argv[++i];
        else if (!strcmp(argv[i], "--secs") && i + 1 < argc)
            o->secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--min-runs") && i + 1 < argc)
            o->min_runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-runs") && i + 1 < argc)
            o->max_runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-time"))
            o->do_time = 0;
        else if (!strcmp(argv[i], "--serve"))
            o->serve = 1;
        else if (!strcmp(argv[i], "--dtypes") && i + 1 < argc)
            o->dtypes = argv[++i];
        else {
            fprintf(stderr, BENCH_NAME ": unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (o->min_runs < 1)
        o->min_runs = 1;
    if (o->max_runs < o->min_runs)
        o->max_runs = o->min_runs;
    return 0;
}

/* Times one case: a warm-up run, then runs until min_runs and secs have
 * passed (or max_runs), and prints "RESULT <engine> <case> <threads> <ms
 * per item> <ms per batch> <runs> <min ms per item> <CPU ms per item>"
 * (medians but the min). run(ctx, &cpu_ms) returns one run's wall ms (< 0: failed).
 * Returns 0 or -1. */
static inline int bench_time_case(const bench_opts_t *o, const char *engine, const char *name, int th, int n,
                                  double (*run)(void *ctx, double *cpu_ms), void *ctx)
{
    double cpu, times[1000], cpus[1000];
    const int most = o->max_runs < 1000 ? o->max_runs : 1000;
    if (run(ctx, &cpu) < 0) /* warm-up */
        return -1;
    int runs = 0;
    double start = now();
    while (runs < most) {
        double ms = run(ctx, &cpus[runs]);
        if (ms < 0)
            return -1;
        times[runs++] = ms;
        if (runs >= o->min_runs && now() - start >= o->secs)
            break;
    }
    double med = median(times, runs), cmed = median(cpus, runs); /* sorts: times[0] is the fastest */
    printf("RESULT %s %s %d %.3f %.3f %d %.3f %.3f\n", engine, name, th, med / n, med, runs, times[0] / n, cmed / n);
    fflush(stdout);
    return 0;
}

/* --dtypes LIST: f32 first (the check outputs are its), then the others
 * of "f32,bf16,q8,q4" named in LIST, as mm_dtype_name strings. Returns how
 * many, or -1 after printing the unknown name. */
#define BENCH_MAX_DT MM_DT_COUNT
static inline int bench_dtypes(const char *list, const char *dts[BENCH_MAX_DT])
{
    int n = 0;
    dts[n++] = "f32";
    char buf[64];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        mm_dtype_t dt;
        if (mm_dtype_parse(t, &dt)) {
            fprintf(stderr, BENCH_NAME ": unknown dtype %s\n", t);
            return -1;
        }
        if (dt != MM_DT_F32 && n < BENCH_MAX_DT)
            dts[n++] = mm_dtype_name(dt);
    }
    return n;
}

/* A --serve request "run CASE THREADS K [DTYPE]": *c indexes names (the
 * cases), *d indexes dts (default the first). Returns 0, or -1 after
 * answering the ERROR line. */
static inline int bench_request(const char *line, const char *const *names, int nnames, const char *const *dts,
                                int ndt, int *c, int *th, int *k, int *d)
{
    char name[64], dt[16];
    snprintf(dt, sizeof dt, "%s", dts[0]);
    if (sscanf(line, "run %63s %d %d %15s", name, th, k, dt) < 3 || *th < 1 || *k < 1) {
        printf("ERROR bad request\n");
        fflush(stdout);
        return -1;
    }
    for (*c = 0; *c < nnames && strcmp(names[*c], name); ++*c)
        ;
    for (*d = 0; *d < ndt && strcmp(dts[*d], dt); ++*d)
        ;
    if (*c == nnames || *d == ndt) {
        printf("ERROR unknown case %s or dtype %s\n", name, dt);
        fflush(stdout);
        return -1;
    }
    return 0;
}

#endif
