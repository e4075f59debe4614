/* q4 dense layers: group-wise 4-bit weights times 8-bit activations, our
 * own kernels (oneDNN 2.6, Debian's, has no int4 weights).
 *
 * Weights. W (N, K) is cut into groups of 64 along K; group g of column n
 * stores 64 codes q in [0, 15] and w ~ cs[n] * gs[n, g] * (q - 8): a
 * symmetric 16-level grid (-8..7 steps) whose step is chosen per group to
 * minimise the squared error (the signed extreme lands on -8, as in
 * llama.cpp's Q4_0, then a few nearby steps are tried and the best kept with
 * its least-squares scale). gs is an int8 multiple of the column's scale cs
 * (f32, the largest group step / 127; of the multiples around the best
 * step the one with the least error is kept, and the codes are chosen for
 * it), as K-quants store 6-bit block scales under one f16. Cost: 4 bits +
 * 8 bits per 64 weights = 4.125 bits, 0.52 of q8's bytes. An int8 step
 * measured the same fidelity as an f16 one (a group's step is never far
 * below its column's largest), so the f16 byte went.
 *
 * Layout: columns in panels of 16, a panel's groups one after another, a
 * group as 8 steps of 64 bytes. In a step, byte 4c + i holds column c's
 * code for k = 8s + i in its low nibble and for k = 8s + 4 + i in its high
 * nibble (i < 4). One 64-byte load, an AND and a shift+AND give the two
 * operands of AVX512-VNNI's vpdpbusd (16 int32 lanes x 4 unsigned bytes):
 * exactly its "4 consecutive k per column lane" order, so there is no
 * shuffle in the inner loop; the weights' nibbles are the unsigned operand
 * and the activations (s8, broadcast 4 bytes at a time) the signed one.
 * AVX2 reads each step as two 32-byte halves (columns 0-7, 8-15) with
 * vpmaddubsw + vpmaddwd. The same 64-byte rows (16 columns x 4 k) are also
 * the B-tile row format of AMX-INT8, and a group (64 k) is one tile's
 * depth, so an AMX kernel could take this layout unchanged.
 *
 * Activations: one scale per row (token), s = max|x| / 127, codes
 * round(x / s) in [-127, 127]. With the weights' offset of 8 the product
 * of a group is sum q x - 8 sum x: the second term is per row and group,
 * computed once when x is quantized and used as the accumulator's start.
 * Per group: int32 accumulate (|acc| <= 64 * 8 * 127), times the group's
 * int8 step, summed in int32: every output is one exact integer,
 * sum_k x_k gs (q_k - 8) (|.| <= K * 127 * 1016 < 2^31 for K <= 16644;
 * beyond, only inputs of equal magnitude meeting extreme codes of one
 * sign could wrap it), then times the row's and the column's scale. The
 * VNNI, AVX2 and AMX tiles compute that same integer, so their results
 * are bit-identical whichever runs a row.
 *
 * Threads: parts take panel ranges (few rows) or row ranges (many); every
 * output is summed over k in the same order whichever tile or part computed
 * it, so results do not depend on the thread count or the batch. */
#include "q4.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define G64 MM_Q4_GROUP
#define PC MM_Q4_COLS
#define RCHUNK 64      /* rows per pass over a part's panels (the f32 scratch) */
#define ROWSPLIT_MIN 32 /* rows per thread before parts take rows instead of panels */
#define AMX_CHUNK 512   /* rows per pass of AMX over the panels (a multiple of 32) */
#define AMX_MIN_ROWS 32 /* rows before AMX pays for unpacking B (AMX vs VNNI GMAC/s: 195 / 186 at 32 rows, 230 / 186 at 50) */

static size_t up64(size_t n)
{
    return (n + 63) / 64 * 64;
}

static void die(const char *what)
{
    fprintf(stderr, "mmembed nn: q4 %s failed\n", what);
    abort();
}

void mm_nn_q4_layout(int N, int K, size_t hdr, mm_q4_layout_t *l)
{
    const size_t Np = (size_t)(N + PC - 1) / PC * PC, G = (size_t)(K + G64 - 1) / G64;
    l->data = up64(hdr);
    l->gscale = l->data + up64(Np * G * G64 / 2);
    l->cscale = l->gscale + up64(Np * G);
    l->end = l->cscale + up64(Np * 4);
}

/* ============================================================ packing == */

/* The step of one group of 64 values (zero padded): among grids with the
 * extreme at -(8 + t/10) steps, the one whose least-squares step leaves
 * the smallest squared error (make_qx_quants in llama.cpp does the same). */
static float group_step(const float *v)
{
    float amax = 0.0f, m = 0.0f;
    for (int i = 0; i < G64; i++)
        if (fabsf(v[i]) > amax)
            amax = fabsf(v[i]), m = v[i];
    if (amax == 0.0f)
        return 0.0f;
    float best = -1.0f, step = m / -8.0f;
    for (int t = -9; t <= 9; t++) {
        const float inv = -(8.0f + 0.1f * (float)t) / m;
        double slx = 0, sll = 0;
        for (int i = 0; i < G64; i++) {
            int l = (int)lrintf(v[i] * inv);
            l = l < -8 ? -8 : l > 7 ? 7 : l;
            slx += (double)v[i] * l;
            sll += (double)l * l;
        }
        if (sll > 0 && slx * slx / sll > best) {
            best = (float)(slx * slx / sll);
            step = (float)(slx / sll);
        }
    }
    return step;
}

/* Squared error of v (64 values) coded on the grid of step d. */
static double group_err(const float *v, float d)
{
    const float inv = d != 0.0f ? 1.0f / d : 0.0f;
    double e = 0;
    for (int i = 0; i < G64; i++) {
        int q = (int)lrintf(v[i] * inv);
        q = q < -8 ? -8 : q > 7 ? 7 : q;
        const double r = v[i] - (double)d * q;
        e += r * r;
    }
    return e;
}

void mm_nn_q4_pack(void *blob, const mm_q4_layout_t *l, const float *w, int N, int K)
{
    const int G = (K + G64 - 1) / G64, Np = (N + PC - 1) / PC * PC;
    uint8_t *data = (uint8_t *)blob + l->data;
    int8_t *gs = (int8_t *)((char *)blob + l->gscale);
    float *cs = (float *)((char *)blob + l->cscale);
    float *step = malloc(sizeof(float) * (size_t)G), *v = malloc(sizeof(float) * (size_t)G * G64);
    if (!step || !v)
        die("packing allocation");
    memset(data, 0x88, (size_t)Np * G * G64 / 2); /* padding columns: code 8 = 0 */
    memset(gs, 0, (size_t)Np * G);
    for (int n = 0; n < Np; n++) {
        const int p = n / PC, c = n % PC;
        if (n >= N) {
            cs[n] = 0.0f;
            continue;
        }
        float smax = 0.0f;
        for (int g = 0; g < G; g++) {
            float *vg = v + (size_t)g * G64;
            for (int i = 0; i < G64; i++) {
                const int k = g * G64 + i;
                vg[i] = k < K ? w[(size_t)n * K + k] : 0.0f;
            }
            step[g] = group_step(vg);
            smax = fmaxf(smax, fabsf(step[g]));
        }
        cs[n] = smax > 0.0f ? smax / 127.0f : 1.0f;
        for (int g = 0; g < G; g++) {
            /* the step as stored (an int8 multiple of cs) is the one the
             * codes use: of the two multiples around the best step (and
             * one more on each side), the one with the least error */
            const float *vg = v + (size_t)g * G64;
            const int c0 = (int)lrintf(step[g] / cs[n]);
            int best = c0;
            double be = -1;
            for (int t = c0 - 1; t <= c0 + 1; t++) {
                if (t < -127 || t > 127)
                    continue;
                const double e = group_err(vg, (float)t * cs[n]);
                if (be < 0 || e < be)
                    be = e, best = t;
            }
            const float d = (float)best * cs[n], inv = d != 0.0f ? 1.0f / d : 0.0f;
            gs[((size_t)p * G + g) * PC + c] = (int8_t)best;
            uint8_t *grp = data + ((size_t)p * G + g) * (G64 / 2) * PC;
            for (int i = 0; i < G64; i++) {
                int q = (int)lrintf(vg[i] * inv);
                q = (q < -8 ? -8 : q > 7 ? 7 : q) + 8;
                const int s = i / 8, r = i % 8;
                uint8_t *byte = grp + s * 64 + c * 4 + r % 4;
                *byte = r < 4 ? (uint8_t)((*byte & 0xf0) | q) : (uint8_t)((*byte & 0x0f) | (q << 4));
            }
        }
    }
    free(step);
    free(v);
}

/* ============================================================ kernels == */

typedef struct {
    float *y;
    const float *b;
    const uint8_t *w;   /* the panels */
    const int8_t *gs;   /* (Np/16, G, 16) */
    const float *cs;    /* (Np) */
    const int8_t *xq;   /* (M, Kp) activation codes */
    const int32_t *xo;  /* (M, G): -8 x the sum of a row's codes in each group */
    const float *xs;    /* (M): row scales */
    int ldy, M, K, N, G;
    mm_act_t act;
    int add, rowsplit, vnni, amx;
} q4_job_t;

static int32_t load4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* out (mr, 16), row stride ldo = the f32 products of rows x .. x + mr - 1
 * with panel p, times the rows' and the columns' scales. */
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma"), always_inline)) static inline
VNNI void tile_vnni(const q4_job_t *j, int p, int r0, const int mr, float *out, int ldo)
{
    const int G = j->G;
    const size_t Kp = (size_t)G * G64;
    const uint8_t *w = j->w + (size_t)p * G * (G64 / 2) * PC;
    const int8_t *gs = j->gs + (size_t)p * G * PC;
    const int8_t *x = j->xq + (size_t)r0 * Kp;
    const int32_t *xo = j->xo + (size_t)r0 * G;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512i t[8];
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
        t[r] = _mm512_setzero_si512();
    for (int g = 0; g < G; g++) {
        __m512i a[8];
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++)
            a[r] = _mm512_set1_epi32(xo[(size_t)r * G + g]);
        const int8_t *xg = x + (size_t)g * G64;
        const uint8_t *wg = w + (size_t)g * (G64 / 2) * PC;
#pragma GCC unroll 2
        for (int s = 0; s < G64 / 8; s++) {
            const __m512i raw = _mm512_loadu_si512(wg + s * 64);
            const __m512i lo = _mm512_and_si512(raw, m4), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
#pragma GCC unroll 8
            for (int r = 0; r < mr; r++) {
                a[r] = _mm512_dpbusd_epi32(a[r], lo, _mm512_set1_epi32(load4(xg + r * Kp + s * 8)));
                a[r] = _mm512_dpbusd_epi32(a[r], hi, _mm512_set1_epi32(load4(xg + r * Kp + s * 8 + 4)));
            }
        }
        const __m512i d = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(gs + (size_t)g * PC)));
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++)
            t[r] = _mm512_add_epi32(t[r], _mm512_mullo_epi32(a[r], d));
    }
    const __m512 cs = _mm512_loadu_ps(j->cs + (size_t)p * PC);
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
        _mm512_storeu_ps(out + (size_t)r * ldo,
                         _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(t[r]), cs), _mm512_set1_ps(j->xs[r0 + r])));
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")))
static void rows_vnni(const q4_job_t *j, int p, int r0, int r1, float *out, int ldo)
{
    int r = r0;
    for (; r + 8 <= r1; r += 8)
        tile_vnni(j, p, r, 8, out + (size_t)(r - r0) * ldo, ldo);
    if (r + 4 <= r1) {
        tile_vnni(j, p, r, 4, out + (size_t)(r - r0) * ldo, ldo);
        r += 4;
    }
    if (r + 2 <= r1) {
        tile_vnni(j, p, r, 2, out + (size_t)(r - r0) * ldo, ldo);
        r += 2;
    }
    if (r < r1)
        tile_vnni(j, p, r, 1, out + (size_t)(r - r0) * ldo, ldo);
}

/* AVX2: the same sums with vpmaddubsw (pairs of u8 x s8 to s16: at most
 * 2 x 15 x 127, and 8 of them still fit s16) and vpmaddwd by ones. */
#define AVX2 __attribute__((always_inline)) static inline
AVX2 void tile_avx2(const q4_job_t *j, int p, int r0, const int mr, float *out, int ldo)
{
    const int G = j->G;
    const size_t Kp = (size_t)G * G64;
    const uint8_t *w = j->w + (size_t)p * G * (G64 / 2) * PC;
    const int8_t *gs = j->gs + (size_t)p * G * PC;
    const int8_t *x = j->xq + (size_t)r0 * Kp;
    const int32_t *xo = j->xo + (size_t)r0 * G;
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    __m256i t[2][2];
#pragma GCC unroll 2
    for (int r = 0; r < mr; r++)
        t[r][0] = t[r][1] = _mm256_setzero_si256();
    for (int g = 0; g < G; g++) {
        __m256i a[2][2];
#pragma GCC unroll 2
        for (int r = 0; r < mr; r++)
            a[r][0] = a[r][1] = _mm256_set1_epi32(xo[(size_t)r * G + g]);
        const int8_t *xg = x + (size_t)g * G64;
        const uint8_t *wg = w + (size_t)g * (G64 / 2) * PC;
        for (int s0 = 0; s0 < G64 / 8; s0 += 4) {
            __m256i h[2][2];
#pragma GCC unroll 2
            for (int r = 0; r < mr; r++)
                h[r][0] = h[r][1] = _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int s = s0; s < s0 + 4; s++) {
#pragma GCC unroll 2
                for (int c = 0; c < 2; c++) {
                    const __m256i raw = _mm256_loadu_si256((const __m256i *)(wg + s * 64 + c * 32));
                    const __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
#pragma GCC unroll 2
                    for (int r = 0; r < mr; r++) {
                        h[r][c] = _mm256_add_epi16(h[r][c], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(load4(xg + r * Kp + s * 8))));
                        h[r][c] = _mm256_add_epi16(h[r][c], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(load4(xg + r * Kp + s * 8 + 4))));
                    }
                }
            }
#pragma GCC unroll 2
            for (int r = 0; r < mr; r++)
                for (int c = 0; c < 2; c++)
                    a[r][c] = _mm256_add_epi32(a[r][c], _mm256_madd_epi16(h[r][c], ones));
        }
#pragma GCC unroll 2
        for (int c = 0; c < 2; c++) {
            const __m256i d = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(gs + (size_t)g * PC + c * 8)));
#pragma GCC unroll 2
            for (int r = 0; r < mr; r++)
                t[r][c] = _mm256_add_epi32(t[r][c], _mm256_mullo_epi32(a[r][c], d));
        }
    }
#pragma GCC unroll 2
    for (int c = 0; c < 2; c++) {
        const __m256 cs = _mm256_loadu_ps(j->cs + (size_t)p * PC + c * 8);
#pragma GCC unroll 2
        for (int r = 0; r < mr; r++)
            _mm256_storeu_ps(out + (size_t)r * ldo + c * 8,
                             _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(t[r][c]), cs), _mm256_set1_ps(j->xs[r0 + r])));
    }
}

static void rows_avx2(const q4_job_t *j, int p, int r0, int r1, float *out, int ldo)
{
    int r = r0;
    for (; r + 2 <= r1; r += 2)
        tile_avx2(j, p, r, 2, out + (size_t)(r - r0) * ldo, ldo);
    if (r < r1)
        tile_avx2(j, p, r, 1, out + (size_t)(r - r0) * ldo, ldo);
}

/* AMX-INT8 (Sapphire Rapids and later). A panel is unpacked once per
 * range into B tiles (a step's two nibble halves are two B rows as they
 * lie: 16 columns x 4 k, 64 bytes) holding gs (q - 8), |.| <= 1016, as two
 * int8 digits (low in [-32, 31], high in [-16, 16], value = 64 high +
 * low), so TDPBSSD sums both over the whole K with no per-group step:
 * 64 C_high + C_low is tile_vnni's integer. Twice the tile products of a
 * plain int8 B, but no per-group epilogue (storing each group's 16 x 16
 * sums to scale them measured half the speed). 2 row blocks of 16 share
 * the B tiles; under 32 rows the unpacking does not pay and VNNI runs. */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* -1: not asked in this process yet (a forked child asks again: the
 * kernel's permission is per process). Asking twice is harmless. */
static _Atomic int amx_perm = -1;
static pthread_once_t amx_atfork_once = PTHREAD_ONCE_INIT;

static void amx_forked(void)
{
    amx_perm = -1;
}

static void amx_atfork(void)
{
    (void)pthread_atfork(NULL, NULL, amx_forked);
}

/* Whether this process may use AMX tiles (oneDNN asks too). */
static int amx_allowed(void)
{
    pthread_once(&amx_atfork_once, amx_atfork);
    int p = amx_perm;
    if (p < 0)
        amx_perm = p = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return p;
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg_t;

/* A thread's unpacked B tiles: (G, 2 panels, 16 rows, 64) codes. */
static _Thread_local struct {
    uint8_t *p;
    size_t cap;
} B;

static void *grow(void *p, size_t *cap, size_t want);

#define AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma,amx-tile,amx-int8")))

/* Tiles 0-3: C (16 x 16 int32; 2 row blocks x 2 panels), 4-5: A (16 rows
 * x 64 k), 6-7: B (16 x 4 k per 64-byte row). A
 * constant: GCC 12 drops stores into a local config that only
 * _tile_loadconfig reads (it faulted). */
static const tilecfg_t tilecfg __attribute__((aligned(64))) = {
    .palette = 1, .colsb = {64, 64, 64, 64, 64, 64, 64, 64}, .rows = {16, 16, 16, 16, 16, 16, 16, 16}};

AMX static void amx_config(void)
{
    _tile_loadconfig(&tilecfg);
}

AMX static void amx_release(void)
{
    _tile_release();
}

/* Rows [r0, r1) (a multiple of 16) of panel p, as tile_vnni computes
 * them (the same int32 sum, the same f32 operations after it), through
 * bias, activation and residual add into y (mm_nn_bias_act_row is per
 * element: 16 columns at a time give what a whole row gives). */
AMX static void panel_amx(const q4_job_t *j, int p, int r0, int r1)
{
    const int G = j->G;
    const size_t Kp = (size_t)G * G64;
    const __m512i m4 = _mm512_set1_epi8(0x0f), e8 = _mm512_set1_epi8(8), c32 = _mm512_set1_epi16(32),
                  c63 = _mm512_set1_epi16(63);
    /* byte 4c + i of a B row <- byte 0 of dword c: each column's step 4 times */
    const __m512i rep = _mm512_set4_epi32(0x0c0c0c0c, 0x08080808, 0x04040404, 0x00000000);
    B.p = grow(B.p, &B.cap, (size_t)G * 2048);
    const uint8_t *w = j->w + (size_t)p * G * (G64 / 2) * PC;
    for (int g = 0; g < G; g++) {
        const __m512i d8 = _mm512_shuffle_epi8(
            _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(j->gs + ((size_t)p * G + g) * PC))), rep);
        const __m512i dlo = _mm512_cvtepi8_epi16(_mm512_castsi512_si256(d8)),
                      dhi = _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(d8, 1));
        int8_t *lo = (int8_t *)B.p + (size_t)g * 2048, *hi = lo + 1024;
        for (int s = 0; s < G64 / 8; s++) {
            const __m512i raw = _mm512_loadu_si512(w + (size_t)g * (G64 / 2) * PC + s * 64);
            for (int h = 0; h < 2; h++) { /* the two B rows of a step: k 8s..8s+3, 8s+4..8s+7 */
                const __m512i v = _mm512_sub_epi8(_mm512_and_si512(h ? _mm512_srli_epi16(raw, 4) : raw, m4), e8);
                for (int half = 0; half < 2; half++) { /* columns 0-7, 8-15 */
                    const __m512i q = _mm512_cvtepi8_epi16(half ? _mm512_extracti64x4_epi64(v, 1)
                                                                : _mm512_castsi512_si256(v));
                    const __m512i wv = _mm512_mullo_epi16(q, half ? dhi : dlo); /* |step (q - 8)| <= 1016 */
                    const __m512i l = _mm512_sub_epi16(_mm512_and_si512(_mm512_add_epi16(wv, c32), c63), c32);
                    const __m512i u = _mm512_srai_epi16(_mm512_sub_epi16(wv, l), 6);
                    _mm256_storeu_si256((__m256i *)(lo + (2 * s + h) * 64 + half * 32), _mm512_cvtepi16_epi8(l));
                    _mm256_storeu_si256((__m256i *)(hi + (2 * s + h) * 64 + half * 32), _mm512_cvtepi16_epi8(u));
                }
            }
        }
    }
    int32_t c[2][2][16][16] __attribute__((aligned(64))); /* [row block][low, high digit] */
    float o[16] __attribute__((aligned(64)));
    const __m512 cs = _mm512_loadu_ps(j->cs + (size_t)p * PC);
    const int c0 = p * PC, nc = j->N - c0 < PC ? j->N - c0 : PC;
    for (int r = r0; r < r1; r += 32) {
        const int nb = r + 32 <= r1 ? 2 : 1;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int g = 0; g < G; g++) {
            const int8_t *a = j->xq + (size_t)r * Kp + (size_t)g * G64;
            const uint8_t *b = B.p + (size_t)g * 2048;
            _tile_loadd(4, a, (long)Kp);
            _tile_loadd(6, b, 64);
            _tile_loadd(7, b + 1024, 64);
            _tile_dpbssd(0, 4, 6);
            _tile_dpbssd(1, 4, 7);
            if (nb == 2) {
                _tile_loadd(5, a + 16 * Kp, (long)Kp);
                _tile_dpbssd(2, 5, 6);
                _tile_dpbssd(3, 5, 7);
            }
        }
        _tile_stored(0, c[0][0], 64);
        _tile_stored(1, c[0][1], 64);
        if (nb == 2) {
            _tile_stored(2, c[1][0], 64);
            _tile_stored(3, c[1][1], 64);
        }
        for (int i = 0; i < 16 * nb; i++) {
            const __m512i t = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(c[i / 16][1][i % 16]), 6),
                                               _mm512_load_si512(c[i / 16][0][i % 16]));
            _mm512_store_ps(o, _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(t), cs), _mm512_set1_ps(j->xs[r + i])));
            mm_nn_bias_act_row(j->y + (size_t)(r + i) * j->ldy + c0, o, j->b ? j->b + c0 : NULL, nc, j->act, j->add);
        }
    }
}

/* ============================================================ driving == */

/* A thread's f32 products before the epilogue (grown, never shrunk). */
static _Thread_local struct {
    float *p;
    size_t cap;
} Y;

/* The calling thread's quantized activations (grown, never shrunk). */
static _Thread_local struct {
    int8_t *q;
    int32_t *o;
    float *s;
    size_t qcap, ocap, scap;
} X;

void mm_nn_q4_thread_free(void)
{
    free(Y.p);
    free(B.p);
    free(X.q);
    free(X.o);
    free(X.s);
    memset(&Y, 0, sizeof Y);
    memset(&B, 0, sizeof B);
    memset(&X, 0, sizeof X);
}

static void *grow(void *p, size_t *cap, size_t want)
{
    if (want <= *cap)
        return p;
    mm_nn_thread_exit_arm();   /* freed when the thread ends (mm_nn_q4_thread_free) */
    free(p);
    p = aligned_alloc(64, up64(want));
    if (!p)
        die("scratch allocation");
    *cap = want;
    return p;
}

/* Panels [p0, p1) of rows [r0, r1), RCHUNK rows at a time: the products
 * into the thread's scratch, then bias, activation and the residual add. */
static void range(const q4_job_t *j, int p0, int p1, int r0, int r1)
{
    const int c0 = p0 * PC, c1 = p1 * PC < j->N ? p1 * PC : j->N, ldo = (p1 - p0) * PC;
    /* AMX: whole 16-row blocks, a panel at a time (its B tiles unpacked
     * once per AMX_CHUNK rows), straight into y */
    const int ma = j->amx && r1 - r0 >= AMX_MIN_ROWS ? (r1 - r0) / 16 * 16 : 0;
    if (ma) {
        amx_config();
        for (int a = r0; a < r0 + ma; a += AMX_CHUNK) { /* a chunk's activations stay in L2 over the panels */
            const int b = a + AMX_CHUNK < r0 + ma ? a + AMX_CHUNK : r0 + ma;
            for (int p = p0; p < p1; p++)
                panel_amx(j, p, a, b);
        }
        amx_release();
        r0 += ma;
    }
    Y.p = grow(Y.p, &Y.cap, sizeof(float) * RCHUNK * (size_t)ldo);
    for (int m0 = r0; m0 < r1; m0 += RCHUNK) {
        const int m1 = m0 + RCHUNK < r1 ? m0 + RCHUNK : r1;
        for (int p = p0; p < p1; p++) {
            if (j->vnni)
                rows_vnni(j, p, m0, m1, Y.p + (size_t)(p - p0) * PC, ldo);
            else
                rows_avx2(j, p, m0, m1, Y.p + (size_t)(p - p0) * PC, ldo);
        }
        for (int m = m0; m < m1; m++)
            mm_nn_bias_act_row(j->y + (size_t)m * j->ldy + c0, Y.p + (size_t)(m - m0) * ldo, j->b ? j->b + c0 : NULL,
                               c1 - c0, j->act, j->add);
    }
}

static void part(void *arg, int part, int nparts)
{
    const q4_job_t *j = arg;
    const int P = (j->N + PC - 1) / PC;
    if (j->rowsplit) {
        const int a = (int)((long)j->M * part / nparts), b = (int)((long)j->M * (part + 1) / nparts);
        if (a < b)
            range(j, 0, P, a, b);
        return;
    }
    const int a = (int)((long)P * part / nparts), b = (int)((long)P * (part + 1) / nparts);
    if (a < b)
        range(j, a, b, 0, j->M);
}

/* Quantizes x (M, K) row by row into X: codes, -8 x group sums, scales. */
static void quantize(q4_job_t *j, const float *x, int ldx)
{
    const int G = j->G, Kp = G * G64, K = j->K;
    X.q = grow(X.q, &X.qcap, (size_t)j->M * Kp);
    X.o = grow(X.o, &X.ocap, sizeof(int32_t) * (size_t)j->M * G);
    X.s = grow(X.s, &X.scap, sizeof(float) * (size_t)j->M);
    for (int m = 0; m < j->M; m++) {
        const float *xr = x + (size_t)m * ldx;
        int8_t *q = X.q + (size_t)m * Kp;
        int k = 0;
        __m256 vm = _mm256_setzero_ps();
        const __m256 sign = _mm256_set1_ps(-0.0f);
        for (; k + 8 <= K; k += 8)
            vm = _mm256_max_ps(vm, _mm256_andnot_ps(sign, _mm256_loadu_ps(xr + k)));
        float t[8], amax = 0.0f;
        _mm256_storeu_ps(t, vm);
        for (int i = 0; i < 8; i++)
            amax = t[i] > amax ? t[i] : amax;
        for (; k < K; k++)
            amax = fabsf(xr[k]) > amax ? fabsf(xr[k]) : amax;
        const float s = amax > 0.0f ? amax / 127.0f : 1.0f, inv = 1.0f / s;
        X.s[m] = s;
        k = 0;
        const __m256 vi = _mm256_set1_ps(inv);
        for (; k + 16 <= K; k += 16) { /* round to nearest even, as lrintf below */
            __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + k), vi));
            __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + k + 8), vi));
            __m128i w = _mm_packs_epi16(_mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1)),
                                        _mm_packs_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
            _mm_storeu_si128((__m128i *)(q + k), w);
        }
        for (; k < K; k++)
            q[k] = (int8_t)lrintf(xr[k] * inv);
        memset(q + K, 0, (size_t)(Kp - K));
        for (int g = 0; g < G; g++) {
            int32_t sum = 0;
            for (int i = 0; i < G64; i++)
                sum += q[g * G64 + i];
            X.o[(size_t)m * G + g] = -8 * sum;
        }
    }
    j->xq = X.q;
    j->xo = X.o;
    j->xs = X.s;
}

void mm_nn_q4_linear(float *y, int ldy, const float *x, int ldx, const void *blob, const mm_q4_layout_t *l,
                     const float *b, int M, int K, int N, mm_act_t act, int add)
{
    if (M <= 0 || N <= 0)
        return;
    const mm_cpu_t *cpu = mm_nn_cpu();
    q4_job_t j = {.y = y, .b = b, .ldy = ldy, .M = M, .K = K, .N = N, .G = (K + G64 - 1) / G64, .act = act,
                  .add = add, .vnni = cpu->avx512_vnni, .amx = cpu->amx && amx_allowed(),
                  .w = (const uint8_t *)blob + l->data, .gs = (const int8_t *)((const char *)blob + l->gscale),
                  .cs = (const float *)((const char *)blob + l->cscale)};
    quantize(&j, x, ldx);
    const int threads = mm_nn_threads(), panels = (N + PC - 1) / PC;
    if (threads == 1 || (double)M * N * K < 5e5) { /* a pool wake-up would cost more */
        range(&j, 0, panels, 0, M);
        return;
    }
    j.rowsplit = M >= threads * ROWSPLIT_MIN || panels < 2 * threads;
    mm_nn_parallel(part, &j);
}
