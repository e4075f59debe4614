/* Dense layers: y = act(x · W^T + b), W in nn.Linear layout (N, K) but
 * stored pre-packed, plus a strided x · w^T for small operands.
 *
 * Why our own GEMM rather than sgemm: a BLAS call re-packs all of W on
 * every call (at 16 tokens OpenBLAS spent 44% of its time copying W), and
 * its kernel choice follows the environment (OPENBLAS_CORETYPE=Haswell is
 * preset in some sandboxes, halving throughput on AVX-512 machines). The
 * weight pack is built once per process anyway, so W is stored in the
 * layout the micro-kernel streams ("panels"), and the kernel ISA is picked
 * at run time (AVX-512F where the CPU has it, else AVX2+FMA).
 *
 * Packed layout: ceil(N/16) panels; panel p holds columns 16p..16p+15 of
 * y as K rows of 16 floats (k-major), zero-padded past N.
 *
 * Blocking (per thread; threads split the panels): x rows in blocks of MC
 * x K in blocks of KC, each block packed into the thread's scratch (L2);
 * each KC x 16 panel slice stays in L1 while every MR-row tile of the block
 * passes over it. Each output element
 * is one FMA chain over k in order, carried between K blocks through y,
 * then + b: the same arithmetic whatever M, the tile it falls in or the
 * thread count, so results do not depend on batching. */
#include "mmembed/nn.h"

#include <stdint.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MM_NN_AVX2 1
#endif

#define PANEL 16
#define KC 256   /* k per block: a panel slice is 16 KiB */
#define MC 192   /* x rows per block: MC*KC*4 = 192 KiB in L2 */
_Static_assert(MC * KC <= MM_NN_SCRATCH, "packed x block must fit the pool scratch");
_Static_assert(MC % 6 == 0 && MC % 8 == 0, "x blocks hold whole tiles");

/* ============================================================ packing == */

size_t mm_nn_packed_size(int N, int K)
{
    return (size_t)((N + PANEL - 1) / PANEL) * PANEL * (size_t)K;
}

void mm_nn_pack_row(float *packed, int K, int n, const float *row)
{
    float *p = packed + (size_t)(n / PANEL) * PANEL * K + n % PANEL;
    for (int k = 0; k < K; k++)
        p[(size_t)k * PANEL] = row[k];
}

void mm_nn_pack(float *packed, const float *w, int N, int K)
{
    memset(packed, 0, mm_nn_packed_size(N, K) * sizeof(float));
    for (int n = 0; n < N; n++)
        mm_nn_pack_row(packed, K, n, w + (size_t)n * K);
}

/* ============================================================ kernels == */

/* A micro-kernel computes an R x (16*NP) tile of y over k in [0, kc):
 *   first: start from 0, else from y;  last: add b and apply act.
 * ncols < 16*NP only in the last panel group of a matrix. */
typedef struct {
    float *y;
    int ldy;
    const float *x;  /* the tile's packed x: element (r, k) at x[k * MR + r] */
    const float *p;  /* panel of the tile's first column, at k0 */
    size_t pstride;  /* floats between consecutive panels (16*K) */
    int kc, first, last, ncols;
    const float *b;  /* at the tile's first column, or NULL */
    mm_act_t act;
} tile_t;

static void epilogue_act(const tile_t *t, int R)
{
    if (t->last && t->act != MM_ACT_NONE)
        for (int r = 0; r < R; r++)
            mm_nn_act(t->y + (size_t)r * t->ldy, (size_t)t->ncols, t->act);
}

#ifdef MM_NN_AVX2

/* ---- AVX2: 6 rows x 16 columns, 12 accumulators ---- */

#define A2_ROW(r)                                                               \
    do {                                                                        \
        __m256 xb = _mm256_broadcast_ss(xk + (r));                              \
        a##r##0 = _mm256_fmadd_ps(xb, w0, a##r##0);                             \
        a##r##1 = _mm256_fmadd_ps(xb, w1, a##r##1);                             \
    } while (0)

/* Always 16 columns: linear_part routes a partial last panel through a
 * scratch tile, so no masks stay live across the k loop (12 accumulators,
 * 2 panel vectors and the broadcast fill 15 of the 16 ymm registers). */
#define A2_LOAD(r)                                                              \
    do {                                                                        \
        const float *yr = t->y + (size_t)(r) * t->ldy;                          \
        a##r##0 = _mm256_loadu_ps(yr);                                          \
        a##r##1 = _mm256_loadu_ps(yr + 8);                                      \
    } while (0)

#define A2_STORE(r)                                                             \
    do {                                                                        \
        float *yr = t->y + (size_t)(r) * t->ldy;                                \
        __m256 s0 = a##r##0, s1 = a##r##1;                                      \
        if (t->last && t->b) {                                                  \
            s0 = _mm256_add_ps(s0, _mm256_loadu_ps(t->b));                      \
            s1 = _mm256_add_ps(s1, _mm256_loadu_ps(t->b + 8));                  \
        }                                                                       \
        _mm256_storeu_ps(yr, s0);                                               \
        _mm256_storeu_ps(yr + 8, s1);                                           \
    } while (0)

static inline __attribute__((always_inline)) void tile_avx2(const tile_t *t, const int R)
{
    const __m256 z = _mm256_setzero_ps();
    __m256 a00 = z, a01 = z, a10 = z, a11 = z, a20 = z, a21 = z;
    __m256 a30 = z, a31 = z, a40 = z, a41 = z, a50 = z, a51 = z;
    if (!t->first) {
        A2_LOAD(0);
        if (R > 1) A2_LOAD(1);
        if (R > 2) A2_LOAD(2);
        if (R > 3) A2_LOAD(3);
        if (R > 4) A2_LOAD(4);
        if (R > 5) A2_LOAD(5);
    }
    const float *xk = t->x, *p = t->p;
    for (int k = 0; k < t->kc; k++, xk += 6) {
        __m256 w0 = _mm256_loadu_ps(p + (size_t)k * 16);
        __m256 w1 = _mm256_loadu_ps(p + (size_t)k * 16 + 8);
        A2_ROW(0);
        if (R > 1) A2_ROW(1);
        if (R > 2) A2_ROW(2);
        if (R > 3) A2_ROW(3);
        if (R > 4) A2_ROW(4);
        if (R > 5) A2_ROW(5);
    }
    A2_STORE(0);
    if (R > 1) A2_STORE(1);
    if (R > 2) A2_STORE(2);
    if (R > 3) A2_STORE(3);
    if (R > 4) A2_STORE(4);
    if (R > 5) A2_STORE(5);
    epilogue_act(t, R);
}

static void tile_avx2_any(const tile_t *t, int R)
{
    switch (R) {
    case 6: tile_avx2(t, 6); break;
    case 5: tile_avx2(t, 5); break;
    case 4: tile_avx2(t, 4); break;
    case 3: tile_avx2(t, 3); break;
    case 2: tile_avx2(t, 2); break;
    default: tile_avx2(t, 1); break;
    }
}

/* ---- AVX-512F: 8 rows x 32 columns (two panels), 16 accumulators ---- */

#define A5_ROW(r)                                                               \
    do {                                                                        \
        __m512 xb = _mm512_set1_ps(xk[r]);                                      \
        a##r##0 = _mm512_fmadd_ps(xb, w0, a##r##0);                             \
        if (NP > 1) a##r##1 = _mm512_fmadd_ps(xb, w1, a##r##1);                 \
    } while (0)

#define A5_LOAD(r)                                                              \
    do {                                                                        \
        const float *yr = t->y + (size_t)(r) * t->ldy;                          \
        a##r##0 = _mm512_maskz_loadu_ps(k0m, yr);                               \
        if (NP > 1) a##r##1 = _mm512_maskz_loadu_ps(k1m, yr + 16);              \
    } while (0)

#define A5_STORE(r)                                                             \
    do {                                                                        \
        float *yr = t->y + (size_t)(r) * t->ldy;                                \
        __m512 s0 = a##r##0, s1 = a##r##1;                                      \
        if (t->last && t->b) {                                                  \
            s0 = _mm512_add_ps(s0, b0);                                         \
            s1 = _mm512_add_ps(s1, b1);                                         \
        }                                                                       \
        _mm512_mask_storeu_ps(yr, k0m, s0);                                     \
        if (NP > 1) _mm512_mask_storeu_ps(yr + 16, k1m, s1);                    \
    } while (0)

static inline __attribute__((always_inline, target("avx512f"))) void
tile_avx512(const tile_t *t, const int R, const int NP)
{
    const __m512 z = _mm512_setzero_ps();
    __m512 a00 = z, a01 = z, a10 = z, a11 = z, a20 = z, a21 = z, a30 = z, a31 = z;
    __m512 a40 = z, a41 = z, a50 = z, a51 = z, a60 = z, a61 = z, a70 = z, a71 = z;
    const int nc = t->ncols;
    const __mmask16 k0m = nc >= 16 ? 0xffff : (__mmask16)((1u << (nc > 0 ? nc : 0)) - 1);
    const __mmask16 k1m = nc >= 32 ? 0xffff : (nc <= 16 ? 0 : (__mmask16)((1u << (nc - 16)) - 1));
    if (!t->first) {
        A5_LOAD(0);
        if (R > 1) A5_LOAD(1);
        if (R > 2) A5_LOAD(2);
        if (R > 3) A5_LOAD(3);
        if (R > 4) A5_LOAD(4);
        if (R > 5) A5_LOAD(5);
        if (R > 6) A5_LOAD(6);
        if (R > 7) A5_LOAD(7);
    }
    const float *xk = t->x, *p0 = t->p, *p1 = t->p + t->pstride;
    for (int k = 0; k < t->kc; k++, xk += 8) {
        __m512 w0 = _mm512_loadu_ps(p0 + (size_t)k * 16);
        __m512 w1 = NP > 1 ? _mm512_loadu_ps(p1 + (size_t)k * 16) : z;
        A5_ROW(0);
        if (R > 1) A5_ROW(1);
        if (R > 2) A5_ROW(2);
        if (R > 3) A5_ROW(3);
        if (R > 4) A5_ROW(4);
        if (R > 5) A5_ROW(5);
        if (R > 6) A5_ROW(6);
        if (R > 7) A5_ROW(7);
    }
    __m512 b0 = z, b1 = z;
    if (t->last && t->b) {
        b0 = _mm512_maskz_loadu_ps(k0m, t->b);
        if (NP > 1)
            b1 = _mm512_maskz_loadu_ps(k1m, t->b + 16);
    }
    A5_STORE(0);
    if (R > 1) A5_STORE(1);
    if (R > 2) A5_STORE(2);
    if (R > 3) A5_STORE(3);
    if (R > 4) A5_STORE(4);
    if (R > 5) A5_STORE(5);
    if (R > 6) A5_STORE(6);
    if (R > 7) A5_STORE(7);
}

#define A5_CASE(r)                                  \
    case r:                                         \
        if (np > 1) tile_avx512(t, r, 2);           \
        else tile_avx512(t, r, 1);                  \
        break

static __attribute__((target("avx512f"))) void tile_avx512_any(const tile_t *t, int R, int np)
{
    switch (R) {
    A5_CASE(8); A5_CASE(7); A5_CASE(6); A5_CASE(5);
    A5_CASE(4); A5_CASE(3); A5_CASE(2);
    default:
        if (np > 1) tile_avx512(t, 1, 2);
        else tile_avx512(t, 1, 1);
        break;
    }
    epilogue_act(t, R);
}

#undef A2_ROW
#undef A2_LOAD
#undef A2_STORE
#undef A5_ROW
#undef A5_LOAD
#undef A5_STORE
#undef A5_CASE

#endif /* MM_NN_AVX2 */

/* Portable kernel: same contract, any R and NP. */
static void tile_scalar(const tile_t *t, int R, int np)
{
    for (int r = 0; r < R; r++)
        for (int c = 0; c < t->ncols && c < 16 * np; c++) {
            const float *p = t->p + (size_t)(c / 16) * t->pstride + c % 16;
            float *yr = t->y + (size_t)r * t->ldy;
            float s = t->first ? 0.0f : yr[c];
            for (int k = 0; k < t->kc; k++)
                s += t->x[(size_t)k * 6 + r] * p[(size_t)k * 16];
            yr[c] = t->last && t->b ? s + t->b[c] : s;
        }
    epilogue_act(t, R);
}

/* ============================================================ dispatch = */

enum { ISA_SCALAR, ISA_AVX2, ISA_AVX512 };
static int isa = -1; /* chosen on first use */

static void pick_isa(void)
{
    if (isa >= 0)
        return;
    isa = ISA_SCALAR;
#ifdef MM_NN_AVX2
    __builtin_cpu_init();
    isa = __builtin_cpu_supports("avx512f") ? ISA_AVX512 : ISA_AVX2;
#endif
}

int mm_nn_set_isa(const char *name)
{
    pick_isa();
    if (!name || !strcmp(name, "auto")) {
        isa = -1;
        pick_isa();
        return 0;
    }
#ifdef MM_NN_AVX2
    if (!strcmp(name, "avx2")) {
        isa = ISA_AVX2;
        return 0;
    }
    if (!strcmp(name, "avx512")) {
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("avx512f"))
            return -1;
        isa = ISA_AVX512;
        return 0;
    }
#endif
    if (!strcmp(name, "scalar")) {
        isa = ISA_SCALAR;
        return 0;
    }
    return -1;
}

const char *mm_nn_isa(void)
{
    pick_isa();
    return isa == ISA_AVX512 ? "avx512" : isa == ISA_AVX2 ? "avx2" : "scalar";
}

/* ============================================================ linear === */

typedef struct {
    float *y;
    const float *x, *wp, *b;
    int ldy, ldx, M, K, N;
    mm_act_t act;
    int accumulate; /* y += ... : the first K block starts from y, not 0 */
} linear_job_t;

static void linear_part(void *arg, int part, int nparts)
{
    const linear_job_t *j = arg;
    const int np = isa == ISA_AVX512 ? 2 : 1;   /* panels per tile */
    const int mr = isa == ISA_AVX512 ? 8 : 6;   /* rows per tile */
    const int groups = (j->N + 16 * np - 1) / (16 * np);
    const int g0 = (int)((long)groups * part / nparts), g1 = (int)((long)groups * (part + 1) / nparts);
    const size_t pstride = (size_t)PANEL * j->K;

    /* AVX2 and scalar kernels always write 16 columns: a partial last panel
     * accumulates in `edge` (16 wide, zero-padded bias) and is copied out */
    float edge[MC * 16], bpad[16] = {0};
    float *xp = mm_nn_scratch(part); /* MC x KC packed x block */
    const int npart = np == 1 && g1 == groups && j->N % 16 ? 1 : 0;
    if (npart && j->b)
        memcpy(bpad, j->b + (size_t)(groups - 1) * 16, (size_t)(j->N % 16) * sizeof(float));

    for (int m0 = 0; m0 < j->M; m0 += MC) {
        const int m1 = j->M - m0 < MC ? j->M : m0 + MC;
        if (npart && j->accumulate) /* the partial panel starts from y too */
            for (int i = m0; i < m1; i++) {
                float *e = edge + (size_t)(i - m0) * 16;
                memset(e, 0, 16 * sizeof(float));
                memcpy(e, j->y + (size_t)i * j->ldy + (size_t)(groups - 1) * 16, (size_t)(j->N % 16) * sizeof(float));
            }
        for (int k0 = 0; k0 < j->K; k0 += KC) {
            tile_t t = {.pstride = pstride, .act = j->act,
                        .kc = j->K - k0 < KC ? j->K - k0 : KC, .first = k0 == 0 && !j->accumulate,
                        .last = k0 + KC >= j->K};
            /* pack this x block tile by tile, k-major: the micro-kernel then
             * broadcasts from one sequential stream instead of mr rows whose
             * stride (K floats, often a multiple of 4 KiB) maps them all to
             * the same L1 set */
            for (int i = m0; i < m1; i += mr) {
                const int R = m1 - i < mr ? m1 - i : mr;
                float *dst = xp + (size_t)(i - m0) * KC;
                for (int r = 0; r < R; r++) {
                    const float *src = j->x + (size_t)(i + r) * j->ldx + k0;
                    for (int k = 0; k < t.kc; k++)
                        dst[(size_t)k * mr + r] = src[k];
                }
            }
            for (int g = g0; g < g1; g++) {
                const int col = g * 16 * np;
                const int edge_tile = npart && g == groups - 1;
                t.ncols = edge_tile ? 16 : (j->N - col < 16 * np ? j->N - col : 16 * np);
                t.p = j->wp + (size_t)g * np * pstride + (size_t)k0 * PANEL;
                t.b = !j->b ? NULL : edge_tile ? bpad : j->b + col;
                t.ldy = edge_tile ? 16 : j->ldy;
                for (int i = m0; i < m1; i += mr) {
                    const int R = m1 - i < mr ? m1 - i : mr;
                    t.y = edge_tile ? edge + (size_t)(i - m0) * 16 : j->y + (size_t)i * j->ldy + col;
                    t.x = xp + (size_t)(i - m0) * KC;
#ifdef MM_NN_AVX2
                    if (isa == ISA_AVX512)
                        tile_avx512_any(&t, R, t.ncols > 16 ? 2 : 1);
                    else if (isa == ISA_AVX2)
                        tile_avx2_any(&t, R);
                    else
#endif
                        tile_scalar(&t, R, np);
                }
            }
        }
        if (npart) /* the valid columns of the partial panel */
            for (int i = m0; i < m1; i++)
                memcpy(j->y + (size_t)i * j->ldy + (size_t)(groups - 1) * 16, edge + (size_t)(i - m0) * 16,
                       (size_t)(j->N % 16) * sizeof(float));
    }
}

static void linear_run(linear_job_t *j)
{
    if (j->M <= 0 || j->N <= 0)
        return;
    pick_isa();
    if ((double)j->M * j->N * j->K < 5e5) /* a pool wake-up would cost more than it saves */
        linear_part(j, 0, 1);
    else
        mm_nn_parallel(linear_part, j);
}

void mm_nn_linear(float *y, int ldy, const float *x, int ldx, const float *wp, const float *b,
                  int M, int K, int N, mm_act_t act)
{
    linear_job_t j = {.y = y, .x = x, .wp = wp, .b = b, .ldy = ldy, .ldx = ldx,
                      .M = M, .K = K, .N = N, .act = act};
    linear_run(&j);
}

void mm_nn_linear_add(float *y, int ldy, const float *x, int ldx, const float *wp, const float *b,
                      int M, int K, int N)
{
    linear_job_t j = {.y = y, .x = x, .wp = wp, .b = b, .ldy = ldy, .ldx = ldx,
                      .M = M, .K = K, .N = N, .act = MM_ACT_NONE, .accumulate = 1};
    linear_run(&j);
}

/* ============================================================ x · w^T == */

/* For operands that are not packed weights (attention scores): each output
 * is a dot product of two rows, 4 x-rows by 3 w-rows at a time. */

#ifdef MM_NN_AVX2

static const int32_t lane_mask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static inline __m256i mask8(int n) /* first n (0..8) lanes */
{
    n = n < 0 ? 0 : (n > 8 ? 8 : n);
    return _mm256_loadu_si256((const __m256i *)(lane_mask + 8 - n));
}

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define D_STEP(r, xv)                                                         \
    do {                                                                      \
        a##r##0 = _mm256_fmadd_ps(xv, w0, a##r##0);                           \
        if (C > 1) a##r##1 = _mm256_fmadd_ps(xv, w1, a##r##1);                \
        if (C > 2) a##r##2 = _mm256_fmadd_ps(xv, w2, a##r##2);                \
    } while (0)

#define D_STORE(r)                                                            \
    do {                                                                      \
        float *cr = c + (size_t)(r) * ldc;                                    \
        cr[0] = scale * hsum8(a##r##0);                                       \
        if (C > 1) cr[1] = scale * hsum8(a##r##1);                            \
        if (C > 2) cr[2] = scale * hsum8(a##r##2);                            \
    } while (0)

static inline __attribute__((always_inline)) void
dot_tile(float *c, int ldc, const float *x, int ldx, const float *w, int ldw,
         float scale, int K, const int R, const int C)
{
    const __m256 z = _mm256_setzero_ps();
    __m256 a00 = z, a01 = z, a02 = z, a10 = z, a11 = z, a12 = z;
    __m256 a20 = z, a21 = z, a22 = z, a30 = z, a31 = z, a32 = z;
    const float *w0p = w, *w1p = w + (size_t)ldw, *w2p = w + 2 * (size_t)ldw;
    const float *x0p = x, *x1p = x + (size_t)ldx, *x2p = x + 2 * (size_t)ldx, *x3p = x + 3 * (size_t)ldx;
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 w0 = _mm256_loadu_ps(w0p + k);
        __m256 w1 = C > 1 ? _mm256_loadu_ps(w1p + k) : z;
        __m256 w2 = C > 2 ? _mm256_loadu_ps(w2p + k) : z;
        D_STEP(0, _mm256_loadu_ps(x0p + k));
        if (R > 1) D_STEP(1, _mm256_loadu_ps(x1p + k));
        if (R > 2) D_STEP(2, _mm256_loadu_ps(x2p + k));
        if (R > 3) D_STEP(3, _mm256_loadu_ps(x3p + k));
    }
    if (k < K) { /* masked lanes load as 0 and add exactly 0 */
        __m256i m = mask8(K - k);
        __m256 w0 = _mm256_maskload_ps(w0p + k, m);
        __m256 w1 = C > 1 ? _mm256_maskload_ps(w1p + k, m) : z;
        __m256 w2 = C > 2 ? _mm256_maskload_ps(w2p + k, m) : z;
        D_STEP(0, _mm256_maskload_ps(x0p + k, m));
        if (R > 1) D_STEP(1, _mm256_maskload_ps(x1p + k, m));
        if (R > 2) D_STEP(2, _mm256_maskload_ps(x2p + k, m));
        if (R > 3) D_STEP(3, _mm256_maskload_ps(x3p + k, m));
    }
    D_STORE(0);
    if (R > 1) D_STORE(1);
    if (R > 2) D_STORE(2);
    if (R > 3) D_STORE(3);
}

#undef D_STEP
#undef D_STORE

#define DT(R, C) dot_tile(c, ldc, x, ldx, w, ldw, scale, K, R, C)

static void dot_tile_any(float *c, int ldc, const float *x, int ldx, const float *w, int ldw,
                         float scale, int K, int R, int C)
{
    switch (R * 4 + C) {
    case 4 * 4 + 3: DT(4, 3); break;
    case 4 * 4 + 2: DT(4, 2); break;
    case 4 * 4 + 1: DT(4, 1); break;
    case 3 * 4 + 3: DT(3, 3); break;
    case 3 * 4 + 2: DT(3, 2); break;
    case 3 * 4 + 1: DT(3, 1); break;
    case 2 * 4 + 3: DT(2, 3); break;
    case 2 * 4 + 2: DT(2, 2); break;
    case 2 * 4 + 1: DT(2, 1); break;
    case 1 * 4 + 3: DT(1, 3); break;
    case 1 * 4 + 2: DT(1, 2); break;
    default: DT(1, 1); break;
    }
}

#undef DT

#else

static void dot_tile_any(float *c, int ldc, const float *x, int ldx, const float *w, int ldw,
                         float scale, int K, int R, int C)
{
    for (int r = 0; r < R; r++)
        for (int j = 0; j < C; j++) {
            float s = 0.0f;
            for (int k = 0; k < K; k++)
                s += x[(size_t)r * ldx + k] * w[(size_t)j * ldw + k];
            c[(size_t)r * ldc + j] = scale * s;
        }
}

#endif

void mm_nn_matmul_nt(float *c, int ldc, const float *x, int ldx, const float *w, int ldw,
                     int M, int N, int K, float scale)
{
    for (int n = 0; n < N; n += 3) {
        int C = N - n < 3 ? N - n : 3;
        for (int i = 0; i < M; i += 4) {
            int R = M - i < 4 ? M - i : 4;
            dot_tile_any(c + (size_t)i * ldc + n, ldc, x + (size_t)i * ldx, ldx,
                         w + (size_t)n * ldw, ldw, scale, K, R, C);
        }
    }
}
