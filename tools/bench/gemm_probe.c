/* gemm_probe — what one core of this machine multiplies per second through
 * oneDNN's matmul, per dtype: f32, bf16 (brgemm: AMX or AVX512-BF16) and
 * u8 x s8 int8, weights in the layout oneDNN asks for, one thread. The
 * numbers behind issue 6's "bf16 is at most 2.2x f32 on Zen 4" finding.
 *
 *   cc -O2 -o build/bench/gemm_probe tools/bench/gemm_probe.c -ldnnl -lgomp
 *   build/bench/gemm_probe [K N [M ...]]      (default 768 3072 16 50 64 128 400)
 *
 * Prints "dtype M K N ms GFLOP/s kernel" per line (median of 30 runs). */
#include <dnnl.h>
#include <omp.h>
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

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void probe(dnnl_engine_t eng, dnnl_stream_t st, const char *name, dnnl_data_type_t sdt,
                  dnnl_data_type_t wdt, dnnl_data_type_t ddt, int M, int K, int N)
{
    dnnl_memory_desc_t a, w, c;
    dnnl_dims_t ad = {M, K}, wd = {K, N}, cd = {M, N};
    dnnl_memory_desc_init_by_tag(&a, 2, ad, sdt, dnnl_ab);
    dnnl_memory_desc_init_by_tag(&w, 2, wd, wdt, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&c, 2, cd, ddt, dnnl_ab);
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t p;
    dnnl_matmul_desc_init(&md, &a, &w, NULL, &c);
    if (dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL) != dnnl_success) {
        printf("%-5s %4d %5d %5d  not supported on this CPU\n", name, M, K, N);
        return;
    }
    const char *impl = "?";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    dnnl_primitive_create(&p, pd);
    const dnnl_memory_desc_t *wq = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    size_t wbytes = dnnl_memory_desc_get_size(wq);
    void *A = calloc((size_t)M * K, 4), *W = calloc(wbytes, 1), *C = calloc((size_t)M * N, 4);
    dnnl_memory_t ma, mw, mc;
    dnnl_memory_create(&ma, &a, eng, A);
    dnnl_memory_create(&mw, wq, eng, W);
    dnnl_memory_create(&mc, &c, eng, C);
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, mc}};
    double t[30];
    for (int i = 0; i < 3; i++)
        dnnl_primitive_execute(p, st, 3, args);
    for (int i = 0; i < 30; i++) {
        double t0 = now();
        dnnl_primitive_execute(p, st, 3, args);
        dnnl_stream_wait(st);
        t[i] = now() - t0;
    }
    qsort(t, 30, sizeof t[0], cmp);
    printf("%-5s %4d %5d %5d %8.3f ms %6.0f GFLOP/s  %s\n", name, M, K, N, t[15] * 1e3, 2.0 * M * K * N / t[15] / 1e9,
           impl);
    dnnl_memory_destroy(ma);
    dnnl_memory_destroy(mw);
    dnnl_memory_destroy(mc);
    dnnl_primitive_destroy(p);
    dnnl_primitive_desc_destroy(pd);
    free(A);
    free(W);
    free(C);
}

int main(int argc, char **argv)
{
    static const int def_m[] = {16, 50, 64, 128, 400};
    int K = argc > 2 ? atoi(argv[1]) : 768, N = argc > 2 ? atoi(argv[2]) : 3072;
    omp_set_num_threads(1);
    dnnl_engine_t eng;
    dnnl_stream_t st;
    dnnl_engine_create(&eng, dnnl_cpu, 0);
    dnnl_stream_create(&st, eng, dnnl_stream_default_flags);
    int nm = argc > 3 ? argc - 3 : 5;
    for (int i = 0; i < nm; i++) {
        int M = argc > 3 ? atoi(argv[3 + i]) : def_m[i];
        probe(eng, st, "f32", dnnl_f32, dnnl_f32, dnnl_f32, M, K, N);
        probe(eng, st, "bf16", dnnl_bf16, dnnl_bf16, dnnl_f32, M, K, N);
        probe(eng, st, "int8", dnnl_u8, dnnl_s8, dnnl_s32, M, K, N);
    }
    return 0;
}
