/* Unit tests for nn/ kernels, safetensors reading, the shared weight pack
 * and the CLIP towers against Hugging Face reference embeddings
 * (tests/fixtures/clip, made by tools/gen_clip_fixtures.py).
 * Run from the repository root. */
#include "mmembed/common.h"
#include "mmembed/encoder.h"
#include "mmembed/model.h"
#include "mmembed/nn.h"
#include "mmembed/safetensors.h"
#include "check.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIX "tests/fixtures/clip"

/* ============================================================ helpers == */



static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float frand(void) /* uniform [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / (1u << 24)) * 2.0 - 1.0);
}

static double cosine(const float *a, const double *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        ab += a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += b[i] * b[i];
    }
    return ab / sqrt(aa * bb);
}

static double max_abs_diff(const float *a, const double *b, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++)
        m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static void *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc((size_t)len + 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mm_test_model_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        exit(1);
    }
}

static void rm_tmp(const char *name)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    unlink(p);
}

/* ============================================================ kernels == */

/* bf16 and q8 dense layers against a double reference: shapes that take
 * the blocked brgemm path (N a multiple of 64, split over threads, more
 * rows than one chunk) and odd ones (plain layout, a row tail), bias,
 * GELU and the fused residual add (600 rows: q4's AMX chunk of 512 and a
 * tail of rows for VNNI, a part panel; K = 16500: q4's 258 groups, more
 * than one exact int32 sum of 256, AMX chunks of 32 rows, blocks of 32 and
 * 13 rows); threads and row chunks must not change a result. */
static void test_linear_dtypes(void)
{
    static const int shapes[][3] = {{150, 256, 384}, {7, 300, 153}, {1, 64, 128}, {70, 37, 24}, {600, 200, 152},
                                    {45, 16500, 20}};
    static const mm_dtype_t dts[] = {MM_DT_BF16, MM_DT_Q8, MM_DT_Q4};
    static const double min_cos[] = {0.9999, 0.999, 0.995}; /* per output matrix */
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int M = shapes[si][0], K = shapes[si][1], N = shapes[si][2];
        float *x = malloc(sizeof(float) * M * K), *w = malloc(sizeof(float) * N * K), *b = malloc(sizeof(float) * N);
        float *y = malloc(sizeof(float) * M * N), *y3 = malloc(sizeof(float) * M * N);
        double *ref = malloc(sizeof(double) * M * N), *refadd = malloc(sizeof(double) * M * N);
        for (int i = 0; i < M * K; i++)
            x[i] = frand();
        for (int i = 0; i < N * K; i++)
            w[i] = frand() * 0.1f;
        for (int i = 0; i < N; i++)
            b[i] = frand();
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double d = b[j];
                for (int k = 0; k < K; k++)
                    d += (double)x[i * K + k] * w[j * K + k];
                ref[i * N + j] = 0.5 * d * (1.0 + erf(d / sqrt(2.0)));
                refadd[i * N + j] = ref[i * N + j] + d;
            }
        for (size_t di = 0; di < 3; di++) {
            /* what the kernel's /proc/cpuinfo (capped by MMEMBED_CPU) says, not mmembed's cpuid */
            const int want = cpuinfo_native(mm_dtype_name(dts[di]));
            CHECK(mm_nn_dtype_native(dts[di]) == want, "kernels: %s native %d, /proc/cpuinfo says %d",
                  mm_dtype_name(dts[di]), mm_nn_dtype_native(dts[di]), want);
            if (!mm_nn_dtype_native(dts[di])) { /* e.g. MMEMBED_CPU=avx2: what runs is f32 */
                SKIP("kernels: %s not native on this CPU (%s)", mm_dtype_name(dts[di]), mm_nn_cpu()->isa);
                continue;
            }
            if (K > 4096 && dts[di] != MM_DT_Q4) /* q4's shape (oneDNN splits such a K over threads: bf16's sums
                                                  * then depend on the thread count) */
                continue;
            size_t bytes = mm_nn_lin_bytes(N, K, dts[di]);
            void *blob = aligned_alloc(64, bytes);
            mm_nn_lin_pack(blob, w, N, K, dts[di]);
            CHECK(mm_nn_lin_dtype(blob) == dts[di], "blob dtype");
            mm_nn_set_threads(1);
            mm_nn_linear(y, N, x, K, blob, b, M, K, N, MM_ACT_GELU);
            double c = cosine(y, ref, M * N);
            CHECK(c >= min_cos[di], "%s linear %dx%dx%d cosine %.6f (min %.4f)", mm_dtype_name(dts[di]), M, K, N, c,
                  min_cos[di]);
            mm_nn_set_threads(3);
            mm_nn_linear(y3, N, x, K, blob, b, M, K, N, MM_ACT_GELU);
            CHECK(!memcmp(y, y3, sizeof(float) * M * N), "%s linear %dx%dx%d: 3 threads differ from 1",
                  mm_dtype_name(dts[di]), M, K, N);
            /* the last row alone (another chunk size) */
            mm_nn_linear(y3, N, x + (size_t)(M - 1) * K, K, blob, b, 1, K, N, MM_ACT_GELU);
            double d1 = 0;
            for (int j = 0; j < N; j++)
                d1 = fmax(d1, fabs(y3[j] - y[(size_t)(M - 1) * N + j]));
            CHECK(d1 < 1e-5, "%s linear: last row alone differs by %g", mm_dtype_name(dts[di]), d1);
            if (dts[di] == MM_DT_Q4) { /* q4: every row alone (VNNI / AVX2 tiles) bit-equal to the batch (AMX
                                        * tiles where the CPU has them and M >= 64): the same int32 sums */
                int same = 1;
                for (int i = 0; i < M; i++) {
                    mm_nn_linear(y3, N, x + (size_t)i * K, K, blob, b, 1, K, N, MM_ACT_GELU);
                    same &= !memcmp(y3, y + (size_t)i * N, sizeof(float) * N);
                }
                CHECK(same, "q4 linear %dx%dx%d: a row alone differs from the batch", M, K, N);
            }
            mm_nn_linear_add(y, N, x, K, blob, b, M, K, N);
            c = cosine(y, refadd, M * N);
            CHECK(c >= min_cos[di], "%s linear_add %dx%dx%d cosine %.6f", mm_dtype_name(dts[di]), M, K, N, c);
            printf("kernels: %s linear %dx%dx%d cosine %.6f\n", mm_dtype_name(dts[di]), M, K, N, c);
            free(blob);
        }
        mm_nn_set_threads(1);
        free(x), free(w), free(b), free(y), free(y3), free(ref), free(refadd);
    }
}

/* q4 packs a large matrix over threads of its own (panel ranges): the
 * columns of a part must come out as a pack of those rows alone (one
 * thread) gives them: the first panel, the last, and the panels at each
 * possible split of up to 16 parts give the same products bit for bit. */
static void test_q4_pack_threads(void)
{
    if (!mm_nn_dtype_native(MM_DT_Q4)) {
        SKIP("q4 pack threads: q4 not native (%s)", mm_nn_cpu()->isa);
        return;
    }
    enum { N = 1040, K = 1100, M = 3 }; /* N x K > 2^20: packed over threads; 65 panels */
    const uint64_t saved = rng_state;   /* the later tests' inputs stay what they were */
    float *w = malloc(sizeof(float) * N * K), *x = malloc(sizeof(float) * M * K);
    float *y = malloc(sizeof(float) * M * N), y1[M * 16];
    for (int i = 0; i < N * K; i++)
        w[i] = frand() * 0.1f;
    for (int i = 0; i < M * K; i++)
        x[i] = frand();
    void *all = aligned_alloc(64, (mm_nn_lin_bytes(N, K, MM_DT_Q4) + 63) / 64 * 64);
    void *one = aligned_alloc(64, (mm_nn_lin_bytes(16, K, MM_DT_Q4) + 63) / 64 * 64);
    mm_nn_lin_pack(all, w, N, K, MM_DT_Q4);
    mm_nn_set_threads(1);
    mm_nn_linear(y, N, x, K, all, NULL, M, K, N, MM_ACT_NONE);
    int bad = 0, checked = 0;
    for (int p = 0; p < N / 16; p++) {
        int split = p == 0 || p == N / 16 - 1;
        for (int t = 2; t <= 16 && !split; t++)
            for (int i = 1; i < t && !split; i++)
                split = p == 65 * i / t || p + 1 == 65 * i / t;
        if (!split)
            continue;
        mm_nn_lin_pack(one, w + (size_t)p * 16 * K, 16, K, MM_DT_Q4);
        mm_nn_linear(y1, 16, x, K, one, NULL, M, K, 16, MM_ACT_NONE);
        for (int r = 0; r < M; r++)
            bad += memcmp(y1 + r * 16, y + (size_t)r * N + p * 16, sizeof(float) * 16) != 0;
        checked++;
    }
    CHECK(bad == 0 && checked > 10, "q4 pack over threads: %d of %d panels differ from their rows packed alone", bad,
          checked);
    free(w), free(x), free(y), free(all), free(one);
    rng_state = saved;
}

/* Every activation of mm_act_t (mm_nn_act: 8 lanes at a time with a
 * vector tail) against its formula in double over [-12, 12], and the same
 * values through mm_nn_bias_act_row, which the dense layers' epilogues use:
 * the two agree bit for bit. */
static void test_activations(void)
{
    enum { N = 4801 };
    static float x[N], y[N], z[N];
    static const char *names[] = {"none", "quick_gelu", "gelu", "gelu_tanh", "relu", "silu"};
    for (int a = MM_ACT_NONE; a <= MM_ACT_SILU; a++) {
        for (int i = 0; i < N; i++)
            x[i] = y[i] = -12.0f + 24.0f * (float)i / (N - 1);
        mm_nn_act(y, N, (mm_act_t)a);
        double worst = 0;
        for (int i = 0; i < N; i++) {
            const double v = x[i];
            double r = v;
            switch (a) {
            case MM_ACT_QUICK_GELU: r = v / (1 + exp(-1.702 * v)); break;
            case MM_ACT_GELU: r = 0.5 * v * (1 + erf(v / sqrt(2.0))); break;
            case MM_ACT_GELU_TANH: r = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))); break;
            case MM_ACT_RELU: r = v > 0 ? v : 0; break;
            case MM_ACT_SILU: r = v / (1 + exp(-v)); break;
            }
            worst = fmax(worst, fabs(y[i] - r) / fmax(1.0, fabs(r)));
        }
        CHECK(worst < 2e-6, "activation %s: worst error %.3g", names[a], worst);
        for (int i = 0; i < N; i += 37) {
            int n = N - i < 37 ? N - i : 37;
            mm_nn_bias_act_row(z + i, x + i, NULL, n, (mm_act_t)a, 0);
        }
        CHECK(!memcmp(y, z, sizeof y), "activation %s: mm_nn_act and the epilogue differ", names[a]);
        printf("kernels: activation %-10s worst error %.2g\n", names[a], worst);
    }
}

static void test_kernels(void)
{
    /* activations vs libm over [-12, 12]. Tolerance: 4e-7 absolute plus
     * 4 ulp relative — the vector exp is ~1 ulp, the A&S erf 1.5e-7 abs. */
    double worst_q = 0, worst_g = 0;
    enum { N = 24001 };
    static float xs[N], q[N], g[N];
    for (int i = 0; i < N; i++)
        xs[i] = q[i] = g[i] = -12.0f + 24.0f * (float)i / (N - 1);
    mm_nn_act(q, N, MM_ACT_QUICK_GELU);
    mm_nn_act(g, N, MM_ACT_GELU);
    for (int i = 0; i < N; i++) {
        double x = xs[i];
        double rq = x / (1.0 + exp(-1.702 * x));
        double rg = 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
        worst_q = fmax(worst_q, fabs(q[i] - rq) / (4e-7 + 4.8e-7 * fabs(rq)));
        worst_g = fmax(worst_g, fabs(g[i] - rg) / (4e-7 + 4.8e-7 * fabs(rg)));
    }
    CHECK(worst_q <= 1.0, "quick_gelu off by %.2f x tolerance", worst_q);
    CHECK(worst_g <= 1.0, "gelu off by %.2f x tolerance", worst_g);

    /* softmax, including a tail (n % 8 != 0) and large inputs */
    float s[13];
    for (int i = 0; i < 13; i++)
        s[i] = 50.0f * frand();
    double ref[13], mx = -1e30, sum = 0;
    for (int i = 0; i < 13; i++)
        mx = fmax(mx, s[i]);
    for (int i = 0; i < 13; i++)
        sum += ref[i] = exp(s[i] - mx);
    mm_nn_softmax(s, 13);
    double err = 0;
    for (int i = 0; i < 13; i++)
        err = fmax(err, fabs(s[i] - ref[i] / sum));
    CHECK(err < 1e-6, "softmax max abs error %g (tolerance 1e-6)", err);

    /* layer norm vs double reference, row length with a tail */
    enum { M = 3, K = 37 };
    float x[M * K], y[M * K], w[K], b[K];
    for (int i = 0; i < M * K; i++)
        x[i] = 3.0f + frand();
    for (int i = 0; i < K; i++) {
        w[i] = 1.0f + 0.1f * frand();
        b[i] = 0.1f * frand();
    }
    mm_nn_layer_norm(y, x, w, b, M, K, 1e-5f);
    err = 0;
    for (int r = 0; r < M; r++) {
        double mean = 0, var = 0;
        for (int j = 0; j < K; j++)
            mean += x[r * K + j];
        mean /= K;
        for (int j = 0; j < K; j++)
            var += (x[r * K + j] - mean) * (x[r * K + j] - mean);
        var /= K;
        for (int j = 0; j < K; j++) {
            double e = (x[r * K + j] - mean) / sqrt(var + 1e-5) * w[j] + b[j];
            err = fmax(err, fabs(y[r * K + j] - e));
        }
    }
    CHECK(err < 1e-5, "layer_norm max abs error %g (tolerance 1e-5)", err);

    /* attention (causal, nq < nk, strided heads) vs a naive loop */
    enum { NK = 9, NQ = 5, HEADS = 2, HD = 6, DM = HEADS * HD, LD = 3 * DM };
    float qkv[NK * LD], out[NQ * DM], scratch[NQ * NK];
    for (int i = 0; i < NK * LD; i++)
        qkv[i] = frand();
    const float *qb = qkv + (NK - NQ) * LD; /* queries = the last NQ rows */
    mm_nn_attention(out, DM, qb, LD, qkv + DM, LD, qkv + 2 * DM, LD, NQ, NK, HEADS, HD, 1, scratch);
    err = 0;
    for (int h = 0; h < HEADS; h++)
        for (int i = 0; i < NQ; i++) {
            int pos = i + NK - NQ;
            double sc[NK], m = -1e30, z = 0;
            for (int j = 0; j <= pos; j++) {
                double d = 0;
                for (int t = 0; t < HD; t++)
                    d += qb[i * LD + h * HD + t] * qkv[j * LD + DM + h * HD + t];
                sc[j] = d / sqrt((double)HD);
                m = fmax(m, sc[j]);
            }
            for (int j = 0; j <= pos; j++)
                z += sc[j] = exp(sc[j] - m);
            for (int t = 0; t < HD; t++) {
                double o = 0;
                for (int j = 0; j <= pos; j++)
                    o += sc[j] / z * qkv[j * LD + 2 * DM + h * HD + t];
                err = fmax(err, fabs(out[i * DM + h * HD + t] - o));
            }
        }
    CHECK(err < 1e-5, "attention max abs error %g (tolerance 1e-5)", err);

    /* mm_nn_linear on packed weights with odd sizes (a column split that
     * ends off a 64-column block), bias and a fused activation, with 1 or 3
     * threads; a row alone must match it in a batch to rounding */
    enum { LM = 30, LK = 300, LN = 153 };
    static float bx[LM * LK], bw[LN * LK], bb[LN], by[LM * LN], by1[LN], lref[LM * LN];
    static _Alignas(64) unsigned char bp[64 + LN * LK * 4 + 64];
    for (int i = 0; i < LM * LK; i++)
        bx[i] = frand();
    for (int i = 0; i < LN * LK; i++)
        bw[i] = frand();
    for (int i = 0; i < LN; i++)
        bb[i] = frand();
    CHECK(mm_nn_lin_bytes(LN, LK, MM_DT_F32) <= sizeof bp, "packed size %zu", mm_nn_lin_bytes(LN, LK, MM_DT_F32));
    mm_nn_lin_pack(bp, bw, LN, LK, MM_DT_F32);
    CHECK(mm_nn_lin_dtype(bp) == MM_DT_F32, "blob dtype");
    for (int i = 0; i < LM; i++)
        for (int j = 0; j < LN; j++) {
            double d = bb[j];
            for (int k = 0; k < LK; k++)
                d += (double)bx[i * LK + k] * bw[j * LK + k];
            lref[i * LN + j] = (float)(d / (1.0 + exp(-1.702 * d)));
        }
    {
        float by3[LM * LN];
        for (int th = 1; th <= 3; th += 2) {
            mm_nn_set_threads(th);
            mm_nn_linear(by, LN, bx, LK, bp, bb, LM, LK, LN, MM_ACT_QUICK_GELU);
            err = 0;
            for (int i = 0; i < LM * LN; i++)
                err = fmax(err, fabs(by[i] - lref[i]));
            /* tolerance 2e-5 absolute: 300-term f32 sums of O(1) products */
            CHECK(err < 2e-5, "linear (%d threads) max abs error %g (tolerance 2e-5)", th, err);
            /* threads split whole columns: the same arithmetic, bit for bit */
            if (th == 1)
                memcpy(by3, by, sizeof by3);
            else
                CHECK(!memcmp(by3, by, sizeof by3), "linear: 3 threads differ from 1");
            /* oneDNN may block K differently for M = 1: rounding only
             * (tolerance 1e-5 absolute on O(1)-O(10) sums) */
            mm_nn_linear(by1, LN, bx + 17 * LK, LK, bp, bb, 1, LK, LN, MM_ACT_QUICK_GELU);
            err = 0;
            for (int j = 0; j < LN; j++)
                err = fmax(err, fabs(by1[j] - by[17 * LN + j]));
            CHECK(err < 1e-5, "linear: row 17 alone differs from in a batch by %g (tolerance 1e-5)", err);
            /* y += x W^T + b on top of the activations just computed */
            mm_nn_linear_add(by, LN, bx, LK, bp, bb, LM, LK, LN);
            err = 0;
            for (int i = 0; i < LM; i++)
                for (int jj = 0; jj < LN; jj++) {
                    double d = bb[jj], a = lref[i * LN + jj];
                    for (int k = 0; k < LK; k++)
                        d += (double)bx[i * LK + k] * bw[jj * LK + k];
                    err = fmax(err, fabs(by[i * LN + jj] - (a + d)));
                }
            CHECK(err < 4e-5, "linear_add (%d threads) max abs error %g (tolerance 4e-5)", th, err);
        }
        printf("kernels: linear (oneDNN) ok\n");
    }
    test_linear_dtypes();
    test_q4_pack_threads();
    mm_nn_set_threads(1);
    mm_nn_matmul_nt(by, 9, bx, LK, bw, LK, 7, 5, 13, 0.5f);
    err = 0;
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 5; j++) {
            double d = 0;
            for (int k = 0; k < 13; k++)
                d += (double)bx[i * LK + k] * bw[j * LK + k];
            err = fmax(err, fabs(by[i * 9 + j] - 0.5 * d));
        }
    CHECK(err < 1e-5, "matmul_nt max abs error %g (tolerance 1e-5)", err);

    float v[3] = {3, 0, 4};
    mm_nn_l2_normalize(v, 3);
    CHECK(fabsf(v[0] - 0.6f) < 1e-7f && fabsf(v[2] - 0.8f) < 1e-7f, "l2_normalize");
    printf("kernels: quick_gelu %.2f, gelu %.2f of tolerance\n", worst_q, worst_g);
}

/* ============================================================ safetensors */

/* Writes a safetensors file from a header string and a data block. */
static int write_st(const char *path, const char *header, const void *data, size_t dlen)
{
    size_t hl = strlen(header);
    unsigned char *buf = malloc(8 + hl + dlen);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    memcpy(buf + 8 + hl, data, dlen);
    int rc = write_file(path, buf, 8 + hl + dlen);
    free(buf);
    return rc;
}

static void test_safetensors(void)
{
    char path[256], err[MM_ERRLEN];
    mm_st_t *st;
    const mm_st_tensor_t *t;
    /* a: F32 [2,3]; pos: I64 [3]; b: BF16 [2] = {1.0, -2.5}; h: F16 [1] = 0.5 */
    unsigned char data[24 + 24 + 4 + 2];
    float a[6] = {1, 2, 3, 4, 5, 6};
    int64_t pos[3] = {0, 1, 2};
    uint16_t bf[2] = {0x3f80, 0xc020}, h = 0x3800;
    memcpy(data, a, 24);
    memcpy(data + 24, pos, 24);
    memcpy(data + 48, bf, 4);
    memcpy(data + 52, &h, 2);
    snprintf(path, sizeof path, "%s/x.safetensors", tmpdir);
    write_st(path,
             "{\"__metadata__\":{\"format\":\"pt\"},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
             "\"pos\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[24,48]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[48,52]},"
             "\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[52,54]}}   ",
             data, sizeof data);
    int rc = mm_st_open(path, &st, err, sizeof err);
    CHECK(rc == MM_OK, "open crafted file: %s", err);
    if (rc == MM_OK) {
        CHECK(mm_st_count(st) == 4, "4 tensors, got %d", mm_st_count(st));
        CHECK(mm_st_get(st, "a", 2, (int64_t[]){2, 3}, &t, err, sizeof err) == MM_OK, "get a: %s", err);
        rc = mm_st_get(st, "a", 2, (int64_t[]){3, 2}, &t, err, sizeof err);
        CHECK(rc == MM_E_INVALID && strstr(err, "a: shape [2, 3]") && strstr(err, "[3, 2]"),
              "mis-shape error: %d %s", rc, err);
        rc = mm_st_get(st, "pos", 1, (int64_t[]){3}, &t, err, sizeof err);
        CHECK(rc == MM_E_UNSUPPORTED && strstr(err, "pos") && strstr(err, "I64"), "dtype error: %d %s", rc, err);
        rc = mm_st_get(st, "nope", 1, (int64_t[]){3}, &t, err, sizeof err);
        CHECK(rc == MM_E_NOTFOUND && strstr(err, "nope"), "missing error: %d %s", rc, err);
        float f[2];
        t = mm_st_find(st, "b");
        mm_st_convert(t->dtype, t->data, f, 2);
        CHECK(f[0] == 1.0f && f[1] == -2.5f, "bf16 convert %g %g", f[0], f[1]);
        t = mm_st_find(st, "h");
        mm_st_convert(t->dtype, t->data, f, 1);
        CHECK(f[0] == 0.5f, "f16 convert %g", f[0]);
        mm_st_close(st);
    }
    /* f16 conversion of every finite half, vector and scalar paths */
    static uint16_t all[65536];
    static float conv[65536];
    for (int i = 0; i < 65536; i++)
        all[i] = (uint16_t)i;
    mm_st_convert(MM_ST_F16, all, conv, 65536);
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        int e = (i >> 10) & 31, m = i & 1023;
        double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
        if (i & 0x8000)
            v = -v;
        if (e != 31 && conv[i] != (float)v)
            bad++;
    }
    mm_st_convert(MM_ST_F16, all + 1, conv, 7); /* scalar tail path alone */
    CHECK(bad == 0 && conv[0] == ldexp(1, -24), "f16 conversion: %d wrong", bad);

    /* corrupt: offsets past the data block */
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,240]}}", data, 24);
    rc = mm_st_open(path, &st, err, sizeof err);
    CHECK(rc == MM_E_INVALID && strstr(err, "a: data_offsets"), "corrupt offsets: %d %s", rc, err);
    /* corrupt: size disagrees with shape */
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,24]}}", data, 24);
    rc = mm_st_open(path, &st, err, sizeof err);
    CHECK(rc == MM_E_INVALID && strstr(err, "tensor a"), "corrupt size: %d %s", rc, err);
    /* corrupt: header length past the end */
    write_file(path, "\xff\xff\xff\x00\x00\x00\x00\x00{}", 10);
    rc = mm_st_open(path, &st, err, sizeof err);
    CHECK(rc == MM_E_INVALID && strstr(err, "header length"), "corrupt header: %d %s", rc, err);
    rm_tmp("x.safetensors");
}

/* ============================================================ fixtures == */

typedef struct {
    int n;
    int32_t *ids[64];
    int lens[64];
    double emb[64][64];
    int dim;
} text_ref_t;

static int load_text_ref(text_ref_t *tr)
{
    json_object *root = json_object_from_file(FIX "/text_emb.json");
    if (!root)
        return -1;
    tr->n = (int)json_object_array_length(root);
    if (tr->n > 64)
        tr->n = 64;
    for (int i = 0; i < tr->n; i++) {
        json_object *e = json_object_array_get_idx(root, i), *ids, *emb;
        json_object_object_get_ex(e, "ids77", &ids);
        json_object_object_get_ex(e, "embedding", &emb);
        tr->lens[i] = (int)json_object_array_length(ids);
        tr->ids[i] = malloc(sizeof(int32_t) * (size_t)tr->lens[i]);
        for (int j = 0; j < tr->lens[i]; j++)
            tr->ids[i][j] = json_object_get_int(json_object_array_get_idx(ids, j));
        tr->dim = (int)json_object_array_length(emb);
        for (int j = 0; j < tr->dim && j < 64; j++)
            tr->emb[i][j] = json_object_get_double(json_object_array_get_idx(emb, j));
    }
    json_object_put(root);
    return 0;
}

typedef struct {
    int n;
    float *pixels; /* n * 3*224*224 */
    double emb[16][64];
    char file[16][64];
    int dim;
} image_ref_t;

static int load_image_ref(image_ref_t *ir)
{
    json_object *root = json_object_from_file(FIX "/image_emb.json");
    if (!root)
        return -1;
    const size_t per = 3 * 224 * 224;
    ir->n = (int)json_object_array_length(root);
    if (ir->n > 16)
        ir->n = 16;
    ir->pixels = malloc(per * sizeof(float) * (size_t)ir->n);
    for (int i = 0; i < ir->n; i++) {
        json_object *e = json_object_array_get_idx(root, i), *f, *emb;
        json_object_object_get_ex(e, "file", &f);
        json_object_object_get_ex(e, "embedding", &emb);
        snprintf(ir->file[i], sizeof ir->file[i], "%s", json_object_get_string(f));
        ir->dim = (int)json_object_array_length(emb);
        for (int j = 0; j < ir->dim && j < 64; j++)
            ir->emb[i][j] = json_object_get_double(json_object_array_get_idx(emb, j));
        char path[256];
        size_t len;
        snprintf(path, sizeof path, FIX "/pixels/%s.f16", ir->file[i]);
        void *raw = read_file(path, &len);
        if (!raw || len != per * 2) {
            free(raw);
            json_object_put(root);
            return -1;
        }
        mm_st_convert(MM_ST_F16, raw, ir->pixels + per * (size_t)i, per);
        free(raw);
    }
    json_object_put(root);
    return 0;
}

static void test_fixture(const char *dir, const char *dtype, const text_ref_t *tr, const image_ref_t *ir)
{
    char err[MM_ERRLEN];
    mm_model_t *m;
    int rc = mm_model_load(dir, &m, err, sizeof err);
    CHECK(rc == MM_OK, "load %s: %s", dir, err);
    if (rc)
        return;
    const mm_model_info_t *info = mm_model_info(m);
    CHECK(info->dim == 24 && info->max_tokens == 77 && info->image_size == 224 && info->has_text &&
          info->has_vision && info->vocab_size == 49408 && info->channels == 3 && !strcmp(info->arch, "clip"),
          "info of %s", dir);
    CHECK(!strcmp(info->dtype, dtype), "dtype %s, want %s", info->dtype, dtype);
    CHECK(!strcmp(info->name, strrchr(dir, '/') + 1), "name %s", info->name);
    CHECK(mm_model_weight_bytes(m) >= 1790609 * 4, "weight bytes %zu", mm_model_weight_bytes(m));
    const int D = info->dim;
    CHECK(tr->dim == D && ir->dim == D, "fixture dims");

    /* text: all sequences in one call, then one at a time */
    mm_runner_t *r = mm_runner_new(m, 64, 4, 1);
    CHECK(r != NULL, "runner");
    if (!r) {
        mm_model_free(m);
        return;
    }
    float *batched = malloc(sizeof(float) * (size_t)D * 64), single[64];
    rc = mm_model_encode_text(r, (const int32_t *const *)tr->ids, tr->lens, tr->n, batched);
    CHECK(rc == MM_OK, "encode_text batch rc %d", rc);
    double min_cos = 1, max_abs = 0, max_bs = 0;
    for (int i = 0; i < tr->n; i++) {
        double c = cosine(batched + (size_t)i * D, tr->emb[i], D);
        min_cos = fmin(min_cos, c);
        max_abs = fmax(max_abs, max_abs_diff(batched + (size_t)i * D, tr->emb[i], D));
        /* tolerance: cosine >= 0.99999 to the f32 HF reference */
        CHECK(c >= 0.99999, "%s text %d cosine %.7f", dir, i, c);
        const int32_t *ids1 = tr->ids[i];
        rc = mm_model_encode_text(r, &ids1, &tr->lens[i], 1, single);
        CHECK(rc == MM_OK, "encode_text single rc %d", rc);
        for (int j = 0; j < D; j++)
            max_bs = fmax(max_bs, fabs(single[j] - batched[(size_t)i * D + j]));
    }
    /* identical: every kernel computes a row the same way whatever the batch */
    /* oneDNN's AVX-512 f32 kernels sum a row the same way whatever M; its
     * AVX2 ones (MMEMBED_CPU=avx2) block K by M: rounding-level differences */
    const double same = mm_nn_cpu()->avx512 ? 0.0 : 1e-5;
    CHECK(max_bs <= same, "text batched vs single differ by %g", max_bs);
    printf("%s text  (%d): min cosine %.9f  max abs diff %.3g  batch-vs-single %.3g\n",
           dir, tr->n, min_cos, max_abs, max_bs);

    /* images: 12 in one call (3 passes of 4), in one pass (runner of 16), singly */
    const size_t per = 3 * 224 * 224;
    float *ib = malloc(sizeof(float) * (size_t)D * (size_t)ir->n);
    float *ib16 = malloc(sizeof(float) * (size_t)D * (size_t)ir->n);
    rc = mm_model_encode_image(r, ir->pixels, ir->n, ib);
    CHECK(rc == MM_OK, "encode_image rc %d", rc);
    mm_runner_t *r16 = mm_runner_new(m, 1, 16, 1);
    rc = mm_model_encode_image(r16, ir->pixels, ir->n, ib16);
    CHECK(rc == MM_OK, "encode_image (16) rc %d", rc);
    min_cos = 1;
    max_abs = max_bs = 0;
    for (int i = 0; i < ir->n; i++) {
        double c = cosine(ib + (size_t)i * D, ir->emb[i], D);
        min_cos = fmin(min_cos, c);
        max_abs = fmax(max_abs, max_abs_diff(ib + (size_t)i * D, ir->emb[i], D));
        /* tolerance: cosine >= 0.99999 to the f32 HF reference */
        CHECK(c >= 0.99999, "%s image %s cosine %.7f", dir, ir->file[i], c);
        rc = mm_model_encode_image(r, ir->pixels + per * (size_t)i, 1, single);
        CHECK(rc == MM_OK, "encode_image single rc %d", rc);
        for (int j = 0; j < D; j++) {
            max_bs = fmax(max_bs, fabs(single[j] - ib[(size_t)i * D + j]));
            max_bs = fmax(max_bs, fabs(ib16[(size_t)i * D + j] - ib[(size_t)i * D + j]));
        }
    }
    CHECK(max_bs <= same, "image batched vs single differ by %g", max_bs);
    printf("%s image (%d): min cosine %.9f  max abs diff %.3g  batch-vs-single %.3g\n",
           dir, ir->n, min_cos, max_abs, max_bs);

    /* 3 threads, and a forked child using the pool the parent started:
     * identical (threads split output columns, never a sum) */
    mm_runner_t *r3 = mm_runner_new(m, 64, 16, 3);
    float *t3 = malloc(sizeof(float) * (size_t)D * 64), *i3 = malloc(sizeof(float) * (size_t)D * 16);
    rc = mm_model_encode_text(r3, (const int32_t *const *)tr->ids, tr->lens, tr->n, t3);
    rc |= mm_model_encode_image(r3, ir->pixels, ir->n, i3);
    CHECK(rc == MM_OK, "3-thread encode rc %d", rc);
    double d3 = 0;
    for (int i = 0; i < tr->n * D; i++)
        d3 = fmax(d3, fabs(t3[i] - batched[i]));
    for (int i = 0; i < ir->n * D; i++)
        d3 = fmax(d3, fabs(i3[i] - ib[i]));
    CHECK(d3 <= same, "3 threads vs 1 differ by %g", d3);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        float *tc = malloc(sizeof(float) * (size_t)D * 64);
        int crc = mm_model_encode_text(r3, (const int32_t *const *)tr->ids, tr->lens, tr->n, tc);
        double dc = 0;
        for (int i = 0; i < tr->n * D; i++)
            dc = fmax(dc, fabs(tc[i] - t3[i]));
        _exit(crc == MM_OK && dc <= same ? 0 : 1);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "forked child with a 3-thread runner: status %#x", status);
    printf("%s 3 threads vs 1: %.3g; forked child %s\n", dir, d3, status == 0 ? "ok" : "FAILED");
    free(t3);
    free(i3);
    mm_runner_free(r3);

    /* input validation */
    int32_t bad_id = 49408, ok_ids[78] = {0};
    const int32_t *pb = &bad_id, *pok = ok_ids;
    int one = 1, zero = 0, toolong = 78;
    CHECK(mm_model_encode_text(r, &pb, &one, 1, single) == MM_E_INVALID, "id out of range");
    CHECK(mm_model_encode_text(r, &pok, &zero, 1, single) == MM_E_INVALID, "empty sequence");
    CHECK(mm_model_encode_text(r, &pok, &toolong, 1, single) == MM_E_TOOBIG, "78 tokens");
    CHECK(mm_model_encode_text(r, &pok, &one, 0, single) == MM_OK, "n = 0");

    free(batched);
    free(ib);
    free(ib16);
    mm_runner_free(r16);
    mm_runner_free(r);
    mm_model_free(m);
}

/* ============================================================ dtypes ==== */

static double cos_dd(const double *a, const double *b, int D)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < D; i++) {
        ab += a[i] * b[i];
        aa += a[i] * a[i];
        bb += b[i] * b[i];
    }
    return ab / sqrt(aa * bb);
}

/* A retrieval set: up to max of the n vectors, skipping any whose cosine to
 * one already taken is above 0.999 (the fixtures hold the same picture in
 * several formats and repeated texts: their order is noise, not ranking). */
static int distinct(const double (*v)[64], int n, int D, int max, int *idx)
{
    int k = 0;
    for (int i = 0; i < n && k < max; i++) {
        int dup = 0;
        for (int j = 0; j < k && !dup; j++)
            dup = cos_dd(v[i], v[idx[j]], D) > 0.999;
        if (!dup)
            idx[k++] = i;
    }
    return k;
}

/* Ranking agreement: over every query and every pair of candidates whose
 * reference cosines differ by at least delta, how many pairs `got` orders
 * the other way (*pairs counts the pairs compared). The candidate that is
 * the query itself is skipped. Random-weight fixtures put many candidates
 * within 1e-4 of each other, where any rounding reorders them; the pairs a
 * ranking actually separates (by >= 0.01) are compared: those make up
 * about 95% of the pairs of the CLIP fixture's retrieval set. */
static int rank_flips(const double (*qw)[64], const double (*cw)[64], const double (*qg)[64],
                      const double (*cg)[64], const int *qi, int nq, const int *ci, int nc, int D, int self,
                      double delta, int *pairs)
{
    int flips = 0;
    for (int a = 0; a < nq; a++) {
        const int q = qi[a];
        for (int x = 0; x < nc; x++)
            for (int y = x + 1; y < nc; y++) {
                const int cx = ci[x], cy = ci[y];
                if (self && (cx == q || cy == q))
                    continue;
                double w = cos_dd(qw[q], cw[cx], D) - cos_dd(qw[q], cw[cy], D);
                if (fabs(w) < delta)
                    continue;
                double g = cos_dd(qg[q], cg[cx], D) - cos_dd(qg[q], cg[cy], D);
                (*pairs)++;
                flips += (w > 0) != (g > 0);
            }
    }
    return flips;
}

/* The ranking criterion for q4, on the pairs the bf16/q8 ranking
 * test compares: for each query q in qi, the candidates ci ranked by
 * cosine with the reference vectors and with ours (skipping the query
 * itself when self): the top 1 must be the same, unless the reference
 * itself cannot tell them apart (ours is within delta of its top 1: a
 * random-weight set has near-ties, 1e-4 apart, that even q8's rounding
 * swaps), and the top 5 share at least 4. Returns the number of queries
 * failing; *worst5 gets the smallest top-5 overlap, *ties the queries
 * whose top 1 changed within delta. */
static int topk_fails(const double (*qw)[64], const double (*cw)[64], const double (*qg)[64],
                      const double (*cg)[64], const int *qi, int nq, const int *ci, int nc, int D, int self,
                      double delta, int *worst5, int *ties)
{
    int fails = 0;
    *worst5 = 5, *ties = 0;
    for (int a = 0; a < nq; a++) {
        int rw[16] = {0}, rg[16] = {0}, n = 0;
        double sw[16] = {0}, sg[16] = {0}, ref[16] = {0};
        for (int b = 0; b < nc; b++) {
            if (self && ci[b] == qi[a])
                continue;
            sw[n] = cos_dd(qw[qi[a]], cw[ci[b]], D), sg[n] = cos_dd(qg[qi[a]], cg[ci[b]], D);
            ref[n] = sw[n];
            rw[n] = rg[n] = n;
            n++;
        }
        for (int i = 0; i < n; i++) /* selection sort, descending, both lists */
            for (int j = i + 1; j < n; j++) {
                if (sw[j] > sw[i]) {
                    double t = sw[i]; sw[i] = sw[j]; sw[j] = t;
                    int u = rw[i]; rw[i] = rw[j]; rw[j] = u;
                }
                if (sg[j] > sg[i]) {
                    double t = sg[i]; sg[i] = sg[j]; sg[j] = t;
                    int u = rg[i]; rg[i] = rg[j]; rg[j] = u;
                }
            }
        const int k = n < 5 ? n : 5;
        int overlap = 0;
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++)
                overlap += rw[i] == rg[j];
        overlap += 5 - k; /* fewer than 5 candidates: the missing ones agree */
        *worst5 = overlap < *worst5 ? overlap : *worst5;
        const int tie = rw[0] != rg[0] && sw[0] - ref[rg[0]] < delta;
        *ties += tie;
        const int fail = (rw[0] != rg[0] && !tie) || overlap < 4;
        fails += fail;
        if (rw[0] != rg[0] || overlap < 4)
            printf("  query %d: top 1 %d (reference) vs %d, which the reference puts %.4f below%s; top-5 overlap %d\n",
                   qi[a], ci[rw[0]], ci[rg[0]], sw[0] - ref[rg[0]], tie ? " (a tie)" : "", overlap);
    }
    return fails;
}

/* bf16, q8 and q4 against the Hugging Face f32 references: every vector's
 * cosine (bf16 >= 0.999, q8 >= 0.995, q4 >= 0.99), and the ranking of a
 * retrieval set (the first 16 texts against the 12 images, and against
 * each other): bf16/q8 keep the order of every pair the reference
 * separates by >= 0.01, and every dtype keeps each query's top 1 (up to
 * the reference's own ties within 0.01) and 4 of its top 5 (issue 20).
 * Under MMEMBED_CPU=avx2 bf16 and q8 fall back to f32.
 *
 * q4 here: this tower has 2 text blocks of width 32, and q4 keeps the first
 * two blocks of a text stack and its projection in q8
 * (mm_encoder_text_dtype), so its text is q8 throughout (0.9994; the
 * 4-bit text blocks meet 0.99 on the 12-block ViT-B/32 shape,
 * test_vitb32_dtypes) and its 4-bit layers are the vision tower's.
 * Measured on the text (worst of the 48 texts; weights rounded,
 * activations f32, tools/bench/q4_sensitivity.py): every matrix q4 0.930;
 * block 1 alone q4 0.987; groups of 32 or IQ4_NL's non-uniform levels
 * move those by < 0.005: 4-bit rows of 32 random weights carry ~0.5%
 * relative squared error, which this random 2-block tower turns into
 * ~1.3% cosine loss on its mean vector and more on the outliers. */
static void test_dtypes(const char *dir, const text_ref_t *tr, const image_ref_t *ir)
{
    static const char *names[] = {"bf16", "q8", "q4"};
    static const double bound[] = {0.999, 0.995, 0.99};
    static double tg[64][64], ig[16][64], twant[64][64];
    const mm_cpu_t *cpu = mm_nn_cpu();
    for (int i = 0; i < tr->n; i++)
        memcpy(twant[i], tr->emb[i], sizeof twant[i]);
    for (int di = 0; di < 3; di++) {
        char why[MM_PLAN_WHY + MM_ERRLEN], err[MM_ERRLEN];
        mm_dtype_t dt;
        CHECK(resolve_dtype(names[di], &dt, why, sizeof why) == 0, "resolve %s", names[di]);
        const int native = cpuinfo_native(names[di]);   /* the kernel's view, not ours */
        CHECK(native ? dt != MM_DT_F32 : dt == MM_DT_F32, "%s on %s resolved to %s (%s)", names[di], cpu->isa,
              mm_dtype_name(dt), why);
        printf("dtype %s on CPU %s%s -> %s: %s\n", names[di], cpu->isa, cpu->forced ? " (MMEMBED_CPU)" : "",
               mm_dtype_name(dt), why);
        mm_model_t *m;
        int rc = mm_model_load_as(dir, dt, &m, err, sizeof err);
        CHECK(rc == MM_OK, "load %s as %s: %s", dir, names[di], err);
        if (rc)
            continue;
        CHECK(!strcmp(mm_model_info(m)->compute, mm_dtype_name(dt)), "info compute %s", mm_model_info(m)->compute);
        const int D = mm_model_info(m)->dim;
        mm_runner_t *r = mm_runner_new(m, 64, 16, 1), *r3 = mm_runner_new(m, 64, 16, 3);
        float *t = malloc(sizeof(float) * 64 * D), *im = malloc(sizeof(float) * 16 * D);
        float *t3 = malloc(sizeof(float) * 64 * D), *im3 = malloc(sizeof(float) * 16 * D);
        rc = mm_model_encode_text(r, (const int32_t *const *)tr->ids, tr->lens, tr->n, t) |
             mm_model_encode_image(r, ir->pixels, ir->n, im) |
             mm_model_encode_text(r3, (const int32_t *const *)tr->ids, tr->lens, tr->n, t3) |
             mm_model_encode_image(r3, ir->pixels, ir->n, im3);
        CHECK(rc == MM_OK, "%s encode rc %d", names[di], rc);
        double worst_t = 1, worst_i = 1, gap = 1;
        for (int i = 0; i < tr->n; i++) {
            for (int j = 0; j < D; j++)
                tg[i][j] = t[(size_t)i * D + j];
            worst_t = fmin(worst_t, cos_dd(tg[i], tr->emb[i], D));
        }
        for (int i = 0; i < ir->n; i++) {
            for (int j = 0; j < D; j++)
                ig[i][j] = im[(size_t)i * D + j];
            worst_i = fmin(worst_i, cos_dd(ig[i], ir->emb[i], D));
        }
        const double bt = bound[di];
        CHECK(worst_t >= bt && worst_i >= bound[di], "%s: worst cosine text %.6f image %.6f (min %.3f, %.3f)",
              names[di], worst_t, worst_i, bt, bound[di]);
        int qi[16], ci[16];
        const int nq = distinct(twant, tr->n, D, 16, qi), nc = distinct(ir->emb, ir->n, D, 16, ci);
        int p_ti = 0, p_tt = 0;
        const double delta = 1e-2;
        int ch_ti = rank_flips(twant, ir->emb, tg, ig, qi, nq, ci, nc, D, 0, delta, &p_ti);
        int ch_tt = rank_flips(twant, twant, tg, tg, qi, nq, qi, nq, D, 1, delta, &p_tt);
        (void)gap;
        int w5_ti, w5_tt, tie_ti, tie_tt;
        const int tk_ti = topk_fails(twant, ir->emb, tg, ig, qi, nq, ci, nc, D, 0, delta, &w5_ti, &tie_ti);
        const int tk_tt = topk_fails(twant, twant, tg, tg, qi, nq, qi, nq, D, 1, delta, &w5_tt, &tie_tt);
        if (di < 2)
            CHECK(ch_ti == 0 && ch_tt == 0 && p_ti > 50 && p_tt > 200,
                  "%s: ranking: %d of %d text->image and %d of %d text->text pairs (gap >= %g) reordered", names[di],
                  ch_ti, p_ti, ch_tt, p_tt, delta);
        CHECK(tk_ti == 0 && tk_tt == 0, "%s: top 1 / top 5 changed for %d text->image and %d text->text queries "
              "(smallest top-5 overlap %d, %d)", names[di], tk_ti, tk_tt, w5_ti, w5_tt);
        printf("%s %s: top 1 kept (%d + %d swapped within a reference tie < %g) and top-5 overlap >= 4 for %d queries "
               "(smallest overlap %d text->image, %d text->text)\n", dir, names[di], tie_ti, tie_tt, delta, nq,
               w5_ti, w5_tt);
        CHECK(!memcmp(t, t3, sizeof(float) * (size_t)tr->n * D) && !memcmp(im, im3, sizeof(float) * (size_t)ir->n * D),
              "%s: 3 threads differ from 1", names[di]);
        printf("%s %s: worst cosine to HF f32: text %.6f image %.6f; ranking of %d texts vs %d images and vs each "
               "other: %d of %d and %d of %d pairs apart by >= %g reordered; pack %zu bytes\n", dir, names[di],
               worst_t, worst_i, nq, nc, ch_ti, p_ti, ch_tt, p_tt, delta, mm_model_weight_bytes(m));
        free(t), free(im), free(t3), free(im3);
        mm_runner_free(r);
        mm_runner_free(r3);
        mm_model_free(m);
    }
}

/* q4 with fewer text blocks kept in q8 (MMEMBED_Q4_KEEP): the tiny tower's
 * text then has 4-bit blocks, so the 4-bit path of a text tower is checked
 * against HF here too, at the values measured (issue 20's 0.99 is met by
 * the default mix, test_dtypes; these guard the kernels and show what the
 * mix buys): keep 1 (block 1 in 4 bits) 0.9879, keep 0 (both) 0.928 on the
 * text; the pack shrinks with each block given up. */
static void test_q4_keep(const char *dir, const text_ref_t *tr)
{
    if (!mm_nn_dtype_native(MM_DT_Q8)) {
        SKIP("q4 keep: the kept blocks are f32 without native q8 (%s)", mm_nn_cpu()->isa);
        return;
    }
    static const struct { const char *keep; double bound; } runs[] = {{"2", 0.99}, {"1", 0.985}, {"0", 0.92}};
    size_t prev = 0;
    for (size_t k = 0; k < MM_ARRAY_LEN(runs); k++) {
        setenv("MMEMBED_Q4_KEEP", runs[k].keep, 1);
        CHECK(mm_encoder_q4_keep() == atoi(runs[k].keep), "keep %s read as %d", runs[k].keep, mm_encoder_q4_keep());
        char err[MM_ERRLEN];
        mm_model_t *m;
        int rc = mm_model_load_as(dir, MM_DT_Q4, &m, err, sizeof err);
        CHECK(rc == MM_OK, "load q4 keep %s: %s", runs[k].keep, err);
        if (rc)
            continue;
        const int D = mm_model_info(m)->dim;
        mm_runner_t *r = mm_runner_new(m, 64, 16, 1);
        float *t = malloc(sizeof(float) * 64 * D);
        rc = mm_model_encode_text(r, (const int32_t *const *)tr->ids, tr->lens, tr->n, t);
        CHECK(rc == MM_OK, "encode rc %d", rc);
        double worst = 1;
        for (int i = 0; i < tr->n; i++) {
            double g[64];
            for (int j = 0; j < D; j++)
                g[j] = t[(size_t)i * D + j];
            worst = fmin(worst, cos_dd(g, tr->emb[i], D));
        }
        const size_t bytes = mm_model_weight_bytes(m);
        CHECK(worst >= runs[k].bound, "q4 keep %s: worst text cosine %.6f (min %.3f)", runs[k].keep, worst,
              runs[k].bound);
        CHECK(k == 0 || bytes < prev, "q4 keep %s: pack %zu bytes, keep %s %zu", runs[k].keep, bytes,
              runs[k - (k > 0)].keep, prev);
        printf("%s q4, %s text blocks in q8: worst text cosine to HF f32 %.6f; pack %zu bytes\n", dir, runs[k].keep,
               worst, bytes);
        prev = bytes;
        free(t);
        mm_runner_free(r);
        mm_model_free(m);
    }
    unsetenv("MMEMBED_Q4_KEEP");
    CHECK(mm_encoder_q4_keep() == MM_Q4_KEEP_BLOCKS, "keep without the variable: %d", mm_encoder_q4_keep());
}

/* The same bounds on the ViT-B/32 shape (models/clip-vit-b32-synthetic,
 * made by `make default-model`), against our f32 (which matches HF on the
 * fixtures): 4 images and 8 texts of mixed lengths, cosine per vector and
 * the text -> image / text -> text pairs f32 separates by >= 0.01. Skipped
 * under ASan (minutes of ViT forwards) and without the model folder. */
#define VIT_DIR "models/clip-vit-b32-synthetic"

static void test_vitb32_dtypes(void)
{
#if defined(__SANITIZE_ADDRESS__)
    SKIP("ViT-B/32 dtypes: minutes of ViT forwards under ASan (the release unit run covers them)");
    return;
#endif
    if (access(VIT_DIR "/config.json", R_OK) != 0) {
        SKIP_BROKEN("ViT-B/32 dtypes: no " VIT_DIR " (make default-model)");
        return;
    }
    enum { NI = 4, NT = 8, DMAX = 1024 };
    static const int lens[NT] = {2, 5, 9, 16, 23, 40, 64, 77};
    static int32_t ids[NT][77];
    const int32_t *ip[NT];
    for (int t = 0; t < NT; t++) {
        ids[t][0] = 49406;
        for (int i = 1; i < lens[t] - 1; i++)
            ids[t][i] = (int32_t)((frand() + 1.0f) * 20000.0f);
        ids[t][lens[t] - 1] = 49407;
        ip[t] = ids[t];
    }
    const size_t per = 3 * 224 * 224;
    float *px = malloc(sizeof(float) * per * NI);
    for (size_t i = 0; i < per * NI; i++)
        px[i] = frand() * 2.0f;
    static float vt[4][NT][DMAX], vi[4][NI][DMAX];
    static const mm_dtype_t dts[4] = {MM_DT_F32, MM_DT_BF16, MM_DT_Q8, MM_DT_Q4};
    /* q4: issue 20's 0.99 on text and images (measured 0.9907 and 0.9936,
     * ten of the text tower's 12 blocks in 4 bits; before its first two
     * blocks and its projection stayed q8, mm_encoder_text_dtype, text
     * measured 0.978) */
    static const double bound[4] = {1, 0.999, 0.995, 0.99}, bound_text[4] = {1, 0.999, 0.995, 0.99};
    int D = 0;
    for (int d = 0; d < 4; d++) {
        const int want = cpuinfo_native(mm_dtype_name(dts[d]));
        CHECK(mm_nn_dtype_native(dts[d]) == want, "ViT-B/32 %s: native %d, /proc/cpuinfo says %d",
              mm_dtype_name(dts[d]), mm_nn_dtype_native(dts[d]), want);
        if (!mm_nn_dtype_native(dts[d])) {
            SKIP("ViT-B/32 %s: not native on this CPU (%s)", mm_dtype_name(dts[d]), mm_nn_cpu()->isa);
            continue;
        }
        char err[MM_ERRLEN];
        mm_model_t *m;
        int rc = mm_model_load_as(VIT_DIR, dts[d], &m, err, sizeof err);
        CHECK(rc == MM_OK, "load ViT-B/32 as %s: %s", mm_dtype_name(dts[d]), err);
        if (rc)
            continue;
        D = mm_model_info(m)->dim;
        float *out = malloc(sizeof(float) * (size_t)D * NT);
        mm_runner_t *r = mm_runner_new(m, NT, NI, 1);
        rc = mm_model_encode_text(r, ip, lens, NT, out);
        for (int t = 0; t < NT; t++)
            memcpy(vt[d][t], out + (size_t)t * D, sizeof(float) * (size_t)D);
        rc |= mm_model_encode_image(r, px, NI, out);
        for (int i = 0; i < NI; i++)
            memcpy(vi[d][i], out + (size_t)i * D, sizeof(float) * (size_t)D);
        CHECK(rc == MM_OK && D <= DMAX, "ViT-B/32 %s encode rc %d", mm_dtype_name(dts[d]), rc);
        free(out);
        mm_runner_free(r);
        mm_model_free(m);
        if (d == 0)
            continue;
        double wt = 1, wi = 1;
        for (int t = 0; t < NT; t++)
            wt = fmin(wt, cosine_ff(vt[d][t], vt[0][t], D));
        for (int i = 0; i < NI; i++)
            wi = fmin(wi, cosine_ff(vi[d][i], vi[0][i], D));
        int pairs = 0, flips = 0;
        for (int q = 0; q < NT; q++) { /* text -> image, then text -> text */
            for (int x = 0; x < NI + NT; x++)
                for (int y = x + 1; y < NI + NT; y++) {
                    if ((x < NI) != (y < NI) || (x >= NI && (x - NI == q || y - NI == q)))
                        continue;
                    const float *rx = x < NI ? vi[0][x] : vt[0][x - NI], *ry = y < NI ? vi[0][y] : vt[0][y - NI];
                    const float *gx = x < NI ? vi[d][x] : vt[d][x - NI], *gy = y < NI ? vi[d][y] : vt[d][y - NI];
                    double w = cosine_ff(vt[0][q], rx, D) - cosine_ff(vt[0][q], ry, D);
                    if (fabs(w) < 0.01)
                        continue;
                    double g = cosine_ff(vt[d][q], gx, D) - cosine_ff(vt[d][q], gy, D);
                    pairs++;
                    flips += (w > 0) != (g > 0);
                }
        }
        CHECK(wt >= bound_text[d] && wi >= bound[d], "ViT-B/32 %s vs f32: worst cosine text %.6f image %.6f (min %.3f, %.3f)",
              mm_dtype_name(dts[d]), wt, wi, bound_text[d], bound[d]);
        /* q4: 2 or 3 of the 180 pairs at the 0.01 edge reorder (the count
         * moved 2 -> 3 when both layer norms became one kernel summing in
         * double: rounding, not the quantizer); bf16/q8 keep every one */
        CHECK(flips <= (dts[d] == MM_DT_Q4 ? 3 : 0), "ViT-B/32 %s: %d of %d ranked pairs reordered", mm_dtype_name(dts[d]),
              flips, pairs);
        printf("ViT-B/32 %s vs f32: worst cosine text %.6f image %.6f; %d of %d ranked pairs reordered\n",
               mm_dtype_name(dts[d]), wt, wi, flips, pairs);
    }
    free(px);
}

/* ============================================================ dtype policy */

/* auto steps down bf16/f32 -> q8 -> q4 as the memory budget shrinks (forced
 * with the avail argument and MMEMBED_MEM_AVAILABLE), jointly for several
 * models, and refuses a budget not even q4 fits, naming the sizes. */
static void test_dtype_policy(void)
{
    char err[MM_ERRLEN];
    size_t b[MM_DT_COUNT];
    CHECK(mm_encoder_pack_bytes(FIX "/clip-tiny", b, err, sizeof err) == MM_OK, "pack bytes: %s", err);
    const int q8 = mm_nn_dtype_native(MM_DT_Q8);
    /* without native q8 (MMEMBED_CPU=avx2) q4's kept text blocks are f32: this 2-block tower's q4 pack then
     * outgrows q8's, which that CPU does not run anyway */
    CHECK(b[MM_DT_F32] > b[MM_DT_BF16] && b[MM_DT_BF16] > b[MM_DT_Q8] && (q8 ? b[MM_DT_Q8] : b[MM_DT_F32]) > b[MM_DT_Q4],
          "sizes %zu %zu %zu %zu", b[0], b[1], b[2], b[3]);
    mm_model_t *m;
    if (mm_model_load_as(FIX "/clip-tiny", MM_DT_Q4, &m, err, sizeof err) == MM_OK) { /* the estimate within 10% */
        const double r = (double)b[MM_DT_Q4] / (double)mm_model_weight_bytes(m);
        CHECK(r > 0.9 && r < 1.1, "q4 pack estimate %zu vs %zu", b[MM_DT_Q4], mm_model_weight_bytes(m));
        mm_model_free(m);
    }
    /* q4's q8 blocks: the first two of a text stack, whatever its depth, and CLIP's text projection */
    static const struct { int b, n; mm_dtype_t q4; } blocks[] = {
        {0, 2, MM_DT_Q8}, {1, 2, MM_DT_Q8}, {-1, 2, MM_DT_Q8}, {1, 3, MM_DT_Q8}, {2, 3, MM_DT_Q4},
        {1, 12, MM_DT_Q8}, {2, 12, MM_DT_Q4}, {11, 12, MM_DT_Q4}, {1, 28, MM_DT_Q8}, {2, 28, MM_DT_Q4},
        {27, 28, MM_DT_Q4}, {0, 1, MM_DT_Q8}, {8, 9, MM_DT_Q4}};
    const mm_dtype_t kept = mm_nn_dtype_native(MM_DT_Q8) ? MM_DT_Q8 : MM_DT_F32; /* e.g. MMEMBED_CPU=avx2: f32 */
    for (size_t i = 0; i < MM_ARRAY_LEN(blocks); i++) {
        const mm_dtype_t want = blocks[i].q4 == MM_DT_Q8 ? kept : MM_DT_Q4;
        CHECK(mm_encoder_text_dtype(MM_DT_Q4, blocks[i].b, blocks[i].n) == want, "q4 block %d of %d: %s",
              blocks[i].b, blocks[i].n, mm_dtype_name(mm_encoder_text_dtype(MM_DT_Q4, blocks[i].b, blocks[i].n)));
        for (int d = MM_DT_F32; d <= MM_DT_Q8; d++)
            CHECK(mm_encoder_text_dtype((mm_dtype_t)d, blocks[i].b, blocks[i].n) == (mm_dtype_t)d, "%s block %d",
                  mm_dtype_name((mm_dtype_t)d), blocks[i].b);
    }
    const mm_dtype_t top = mm_nn_dtype_native(MM_DT_BF16) ? MM_DT_BF16 : MM_DT_F32;
    struct { size_t avail; mm_dtype_t want; } cases[] = {
        {0, top},                                   /* unknown memory: the best native */
        {4 * b[top], top},                          /* fits half */
        {2 * MM_MAX(b[MM_DT_Q8], b[MM_DT_Q4]) + 2, q8 ? MM_DT_Q8 : MM_DT_Q4},
        {2 * b[MM_DT_Q4] + 2, MM_DT_Q4},
    };
    for (size_t i = 0; i < MM_ARRAY_LEN(cases); i++) {
        mm_enc_plan_t p = {.dir = "clip-tiny", .want = "auto"};
        memcpy(p.bytes, b, sizeof b);
        CHECK(mm_encoder_plan(&p, 1, 0.5, cases[i].avail, err, sizeof err) == MM_OK, "plan: %s", err);
        CHECK(p.dt == cases[i].want, "avail %zu: %s, expected %s (%s)", cases[i].avail, mm_dtype_name(p.dt),
              mm_dtype_name(cases[i].want), p.why);
        printf("policy: avail %zu -> %s: %s\n", cases[i].avail, mm_dtype_name(p.dt), p.why);
    }
    /* too small even for q4: an error naming the sizes */
    mm_enc_plan_t p = {.dir = "clip-tiny", .want = "auto"};
    memcpy(p.bytes, b, sizeof b);
    CHECK(mm_encoder_plan(&p, 1, 0.5, b[MM_DT_Q4], err, sizeof err) == MM_E_TOOBIG && strstr(err, "MiB") &&
          strstr(err, "clip-tiny"), "too small: %s", err);
    printf("policy: too small: %s\n", err);
    /* two models share one budget: the larger steps down first; a
     * configured dtype is kept and counted */
    mm_enc_plan_t two[2] = {{.dir = "big", .want = "auto"}, {.dir = "fixed", .want = "q4"}};
    for (int d = 0; d < MM_DT_COUNT; d++)
        two[0].bytes[d] = 4 * b[d], two[1].bytes[d] = b[d];
    CHECK(mm_encoder_plan(two, 2, 0.5, 2 * (4 * b[MM_DT_Q4] + b[MM_DT_Q4]) + 2, err, sizeof err) == MM_OK &&
          two[0].dt == MM_DT_Q4 && two[1].dt == MM_DT_Q4, "two: %s %s (%s)", mm_dtype_name(two[0].dt),
          mm_dtype_name(two[1].dt), err);
    CHECK(mm_encoder_plan(two, 2, 0.5, 2 * 4 * b[MM_DT_Q4], err, sizeof err) == MM_E_TOOBIG, "two too small");
    /* the environment override */
    setenv("MMEMBED_MEM_AVAILABLE", "3G", 1);
    CHECK(mm_encoder_mem_available() == (size_t)3 << 30, "MMEMBED_MEM_AVAILABLE=3G: %zu", mm_encoder_mem_available());
    setenv("MMEMBED_MEM_AVAILABLE", "12345", 1);
    CHECK(mm_encoder_mem_available() == 12345, "MMEMBED_MEM_AVAILABLE=12345");
    unsetenv("MMEMBED_MEM_AVAILABLE");
    CHECK(mm_encoder_mem_available() > 0, "MemAvailable");
    mm_enc_plan_t bad = {.dir = "x", .want = "q3"};
    CHECK(mm_encoder_plan(&bad, 1, 0.5, 0, err, sizeof err) == MM_E_INVALID, "q3 refused");
}

/* ============================================================ read-only pack */

/* The pack must be mapped without write permission, shared, and a write from
 * a (forked) worker must fault rather than corrupt its siblings. */
static void test_readonly(void)
{
    char err[MM_ERRLEN];
    mm_model_t *m;
    if (mm_model_load(FIX "/clip-tiny", &m, err, sizeof err)) {
        CHECK(0, "load: %s", err);
        return;
    }
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    void *addr = NULL;
    int found = 0, writable = 0, shared = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (!strstr(line, "memfd:mmembed-weights:clip-tiny"))
            continue;
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3)
            continue;
        found++;
        writable |= perms[1] == 'w';
        shared |= perms[3] == 's';
        addr = (void *)lo;
        CHECK(hi - lo == mm_model_weight_bytes(m), "mapping size %lu vs %zu", hi - lo, mm_model_weight_bytes(m));
    }
    if (f)
        fclose(f);
    CHECK(found == 1 && !writable, "weight pack mappings: %d, writable %d", found, writable);
    if (addr) {
        /* sealed: not even mprotect can make it writable (shared map only) */
        int mp = mprotect(addr, 4096, PROT_READ | PROT_WRITE);
        CHECK(!shared || mp != 0, "mprotect(PROT_WRITE) on the sealed pack succeeded");
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGSEGV, SIG_DFL);
            *(volatile float *)addr = 1.0f;
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && (WTERMSIG(status) == SIGSEGV || WTERMSIG(status) == SIGBUS),
              "child writing the pack was not killed (status %#x)", status);
        printf("weight pack: %zu bytes, mapped r--%c, write from child -> signal %d\n",
               mm_model_weight_bytes(m), shared ? 's' : 'p', WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    mm_model_free(m);
}

/* ============================================================ bad folders */

/* Copies clip-tiny's config.json into tmpdir with `edit` applied, and links
 * the checkpoint next to it. */
static void make_variant(void (*edit)(json_object *root), int link_weights)
{
    json_object *root = json_object_from_file(FIX "/clip-tiny/config.json");
    edit(root);
    char p[256], target[PATH_MAX];
    snprintf(p, sizeof p, "%s/config.json", tmpdir);
    json_object_to_file(p, root);
    json_object_put(root);
    snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
    unlink(p);
    if (link_weights && realpath(FIX "/clip-tiny/model.safetensors", target))
        CHECK(symlink(target, p) == 0, "symlink: %s", strerror(errno));
}

static void edit_hidden(json_object *root)
{
    json_object *tc;
    json_object_object_get_ex(root, "text_config", &tc);
    json_object_object_add(tc, "hidden_size", json_object_new_int(64));
}

static void edit_layers(json_object *root)
{
    json_object *vc;
    json_object_object_get_ex(root, "vision_config", &vc);
    json_object_object_add(vc, "num_hidden_layers", json_object_new_int(3));
}

static void edit_arch(json_object *root)
{
    json_object *a = json_object_new_array();
    json_object_array_add(a, json_object_new_string("BertModel"));
    json_object_object_add(root, "architectures", a);
    json_object_object_add(root, "model_type", json_object_new_string("bert"));
}

static void edit_act(json_object *root)
{
    json_object *vc;
    json_object_object_get_ex(root, "vision_config", &vc);
    json_object_object_add(vc, "hidden_act", json_object_new_string("silu"));
}

static void edit_none(json_object *root)
{
    (void)root;
}

static void test_bad_folders(void)
{
    char err[MM_ERRLEN];
    mm_model_t *m = NULL;
    int rc;

    rc = mm_model_load(tmpdir, &m, err, sizeof err); /* empty directory */
    CHECK(rc == MM_E_NOTFOUND && m == NULL && strstr(err, "config.json"), "missing config: %d %s", rc, err);
    printf("missing config.json  -> %d: %s\n", rc, err);

    make_variant(edit_hidden, 1);
    rc = mm_model_load(tmpdir, &m, err, sizeof err);
    CHECK(rc == MM_E_INVALID && m == NULL && strstr(err, "text_model.embeddings.token_embedding.weight") &&
          strstr(err, "[49408, 32]") && strstr(err, "[49408, 64]"), "mis-shape: %d %s", rc, err);
    printf("wrong hidden_size    -> %d: %s\n", rc, err);

    make_variant(edit_layers, 1);
    rc = mm_model_load(tmpdir, &m, err, sizeof err);
    CHECK(rc == MM_E_NOTFOUND && m == NULL && strstr(err, "vision_model.encoder.layers.2."),
          "missing tensor: %d %s", rc, err);
    printf("missing tensor       -> %d: %s\n", rc, err);

    make_variant(edit_arch, 1);
    rc = mm_model_load(tmpdir, &m, err, sizeof err);
    CHECK(rc == MM_E_UNSUPPORTED && m == NULL && strstr(err, "BertModel") && strstr(err, "bert"),
          "unsupported arch: %d %s", rc, err);
    printf("unsupported arch     -> %d: %s\n", rc, err);

    make_variant(edit_act, 1);
    rc = mm_model_load(tmpdir, &m, err, sizeof err);
    CHECK(rc == MM_E_UNSUPPORTED && strstr(err, "silu"), "unsupported act: %d %s", rc, err);
    printf("unsupported act      -> %d: %s\n", rc, err);

    make_variant(edit_none, 0);
    rc = mm_model_load(tmpdir, &m, err, sizeof err);
    CHECK(rc == MM_E_NOTFOUND && strstr(err, "model.safetensors"), "no checkpoint: %d %s", rc, err);
    printf("no checkpoint        -> %d: %s\n", rc, err);

    /* sanity: the unedited copy loads (so the failures above are the edits) */
    make_variant(edit_none, 1);
    rc = mm_model_load(tmpdir, &m, err, sizeof err);
    CHECK(rc == MM_OK, "unedited copy: %s", err);
    mm_model_free(m);

    rm_tmp("config.json");
    rm_tmp("model.safetensors");
}

/* ============================================================ main ===== */

int main(void)
{
    make_tmpdir();
    test_kernels();
    test_activations();
    test_safetensors();

    static text_ref_t tr;
    static image_ref_t ir;
    if (load_text_ref(&tr) || load_image_ref(&ir)) {
        fprintf(stderr, "cannot read fixtures under " FIX " (run from the repository root)\n");
        return 1;
    }
    test_fixture(FIX "/clip-tiny", "f16", &tr, &ir);
    test_fixture(FIX "/clip-tiny-bf16", "bf16", &tr, &ir);
    test_dtypes(FIX "/clip-tiny", &tr, &ir);
    test_q4_keep(FIX "/clip-tiny", &tr);
    test_dtype_policy();
    test_vitb32_dtypes();
    test_readonly();
    test_bad_folders();

    for (int i = 0; i < tr.n; i++)
        free(tr.ids[i]);
    free(ir.pixels);
    rmdir(tmpdir);
    return check_summary("test_model");
}
