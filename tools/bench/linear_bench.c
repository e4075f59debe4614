/* linear_bench — one dense layer (mm_nn_linear) per dtype: GMAC/s of bf16,
 * q8 and q4 and q4's time over q8's, at several row counts, on random
 * weights; the numbers behind issue 20's kernel work (q4.c).
 *
 *   . tools/bench/lib.sh; bench_build_driver linear_bench
 *   build/bench/linear_bench K N [THREADS] [ACT]
 *       ACT: gelu (default, the epilogue of an MLP's first layer) or none
 *       ROWS=1,16,32,256,1024 (the default) picks the row counts
 *
 * Each (rows, dtype) is the best of 5 rounds of at least 50 ms, the
 * dtypes timed one after another at each row count. A dtype the CPU does
 * not run natively is timed as what runs (f32), as mm_nn_lin_pack packs
 * it. Prints a header line, then "rows bf16 q8 q4 q4/q8" per row count. */
#include "mmembed/nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / 16777216.0f - 0.5f;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: linear_bench K N [THREADS] [gelu|none]   (ROWS=1,16,32,256,1024)\n");
        return 2;
    }
    const int K = atoi(argv[1]), N = atoi(argv[2]), th = argc > 3 ? atoi(argv[3]) : 1;
    const mm_act_t act = argc > 4 && !strcmp(argv[4], "none") ? MM_ACT_NONE : MM_ACT_GELU;
    if (K < 1 || N < 1 || th < 1) {
        fprintf(stderr, "linear_bench: K, N and THREADS must be positive\n");
        return 2;
    }
    int rows[16], nr = 0;
    const char *rl = getenv("ROWS") ? getenv("ROWS") : "1,16,32,256,1024";
    for (char *p = (char *)rl; *p && nr < 16;) {
        rows[nr] = (int)strtol(p, &p, 10);
        if (rows[nr] > 0)
            nr++;
        while (*p == ',' || *p == ' ')
            p++;
    }
    int maxm = 1;
    for (int i = 0; i < nr; i++)
        maxm = rows[i] > maxm ? rows[i] : maxm;
    mm_nn_set_threads(th);
    unsigned seed = 1;
    float *w = malloc(sizeof(float) * (size_t)N * K), *b = calloc((size_t)N, sizeof(float));
    float *x = malloc(sizeof(float) * (size_t)maxm * K), *y = malloc(sizeof(float) * (size_t)maxm * N);
    if (!w || !b || !x || !y)
        return 1;
    for (size_t i = 0; i < (size_t)N * K; i++)
        w[i] = frand(&seed) * 0.1f;
    for (size_t i = 0; i < (size_t)maxm * K; i++)
        x[i] = frand(&seed);
    static const mm_dtype_t dts[3] = {MM_DT_BF16, MM_DT_Q8, MM_DT_Q4};
    void *wp[3];
    for (int d = 0; d < 3; d++) {
        wp[d] = aligned_alloc(64, (mm_nn_lin_bytes(N, K, dts[d]) + 63) / 64 * 64);
        if (!wp[d])
            return 1;
        mm_nn_lin_pack(wp[d], w, N, K, dts[d]);
    }
    printf("K=%d N=%d threads=%d act=%s cpu=%s: GMAC/s bf16 q8 q4, q4/q8 time\n", K, N, th,
           act == MM_ACT_GELU ? "gelu" : "none", mm_nn_cpu()->isa);
    for (int i = 0; i < nr; i++) {
        const int M = rows[i];
        double g[3];
        for (int d = 0; d < 3; d++) {
            mm_nn_linear(y, N, x, K, wp[d], b, M, K, N, act); /* warm-up */
            double best = 1e30;
            for (int r = 0; r < 5; r++) {
                int it = 0;
                double t0 = now(), t;
                do {
                    mm_nn_linear(y, N, x, K, wp[d], b, M, K, N, act);
                    it++;
                } while ((t = now() - t0) < 0.05);
                best = t / it < best ? t / it : best;
            }
            g[d] = (double)M * N * K / best / 1e9;
        }
        printf("rows %5d  %7.1f %7.1f %7.1f   %.2f\n", M, g[0], g[1], g[2], g[1] / g[2]);
    }
    for (int d = 0; d < 3; d++)
        free(wp[d]);
    free(w), free(b), free(x), free(y);
    return 0;
}
