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
 * the B-tile row format of AMX-INT8 and a group (64 k) is one tile's depth,
 * so the AMX kernel unpacks a step into two B rows with an AND and a shift.
 *
 * Activations: one scale per row (token), s = max|x| / 127, codes
 * round(x / s) in [-127, 127]. With the weights' offset of 8 the product
 * of a group is sum q x - 8 sum x: the second term is per row and group,
 * computed once when x is quantized and used as the accumulator's start
 * (VNNI, AVX2; the AMX tiles take q - 8 as signed bytes instead). Per
 * group: one exact int32 sum (|.| <= 64 * 8 * 127 < 2^24, exact in f32),
 * then acc = fma(sum, step, acc) in f32 over the groups in order (sum x
 * step < 2^24 is exact too, so each fma rounds once), then times the row's
 * and the column's scale. The VNNI, AVX2 and AMX tiles do exactly these
 * operations in this order, so their results are bit-identical whichever
 * runs a row (a row alone and in a batch give the same vector).
 *
 * Threads: parts take panel ranges (few rows) or row ranges (many); every
 * output is summed over k in the same order whichever tile or part computed
 * it, so results do not depend on the thread count or the batch. */
#include "q4.h"
#include "simd.h"

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
#define ROWSPLIT_MIN 32 /* rows per thread before parts take rows instead of panels (and 256 in all: below, panels split
                         * better: 77 rows on 2 threads, q4/q8 time 1.31-1.53 -> 1.08-1.34 over five layer shapes) */
#define AMX_CHUNK 512   /* rows per pass of AMX over the panels */
#define AMX_KSLICE 16   /* groups unpacked at a time (16 KB a panel; all of K measured 1.3x slower at K = 8960) */
#define AMX_PANELS 4    /* panels a row block goes through per slice (from 128 rows; range) */
#define AMX_MIN_ROWS 12 /* rows an AMX tile (16) computes at least; fewer go to VNNI (at 8, VNNI 164 GMAC/s vs AMX 133) */

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

/* Columns [n0, n1) of the pack (the padding columns past N included). */
static void pack_columns(void *blob, const mm_q4_layout_t *l, const float *w, int N, int K, int n0, int n1)
{
    const int G = (K + G64 - 1) / G64;
    uint8_t *data = (uint8_t *)blob + l->data;
    int8_t *gs = (int8_t *)((char *)blob + l->gscale);
    float *cs = (float *)((char *)blob + l->cscale);
    float *step = malloc(sizeof(float) * (size_t)G), *v = malloc(sizeof(float) * (size_t)G * G64);
    if (!step || !v)
        die("packing allocation");
    for (int n = n0; n < n1; n++) {
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

typedef struct {
    void *blob;
    const mm_q4_layout_t *l;
    const float *w;
    int N, K, n0, n1;
} pack_part_t;

static void *pack_part(void *arg)
{
    const pack_part_t *t = arg;
    pack_columns(t->blob, t->l, t->w, t->N, t->K, t->n0, t->n1);
    return NULL;
}

/* Every column is packed on its own (its codes, steps and scale are its
 * bytes alone), so a large matrix is cut into panel ranges over up to 16
 * threads of its own (the master packs before it forks: no pool there;
 * they end before this returns); the pack is the same whatever the split.
 * The step search costs ~40 ns a weight: ~1.5 min a thread for the 2B shape. */
void mm_nn_q4_pack(void *blob, const mm_q4_layout_t *l, const float *w, int N, int K)
{
    const int G = (K + G64 - 1) / G64, Np = (N + PC - 1) / PC * PC, P = Np / PC;
    memset((uint8_t *)blob + l->data, 0x88, (size_t)Np * G * G64 / 2); /* padding columns: code 8 = 0 */
    memset((int8_t *)((char *)blob + l->gscale), 0, (size_t)Np * G);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int T = (double)N * K < (1 << 20) ? 1 : (int)(cpus < 1 ? 1 : cpus > 16 ? 16 : cpus);
    T = T > P ? P : T;
    pack_part_t part[16];
    pthread_t th[16];
    int started = 0;
    for (int i = 0; i < T; i++) {
        part[i] = (pack_part_t){blob, l, w, N, K, (int)((long)P * i / T) * PC, (int)((long)P * (i + 1) / T) * PC};
        if (i > 0 && pthread_create(&th[i], NULL, pack_part, &part[i]) == 0)
            started |= 1 << i;
    }
    pack_part(&part[0]);
    for (int i = 1; i < T; i++) {
        if (started & (1 << i))
            pthread_join(th[i], NULL);
        else /* no thread: here */
            pack_part(&part[i]);
    }
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
    __m512 t[8];
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
        t[r] = _mm512_setzero_ps();
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
        const __m512 d = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(gs + (size_t)g * PC))));
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++)
            t[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a[r]), d, t[r]);
    }
    const __m512 cs = _mm512_loadu_ps(j->cs + (size_t)p * PC);
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
        _mm512_storeu_ps(out + (size_t)r * ldo, _mm512_mul_ps(_mm512_mul_ps(t[r], cs), _mm512_set1_ps(j->xs[r0 + r])));
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
    __m256 t[2][2];
#pragma GCC unroll 2
    for (int r = 0; r < mr; r++)
        t[r][0] = t[r][1] = _mm256_setzero_ps();
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
            const __m256 d =
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(gs + (size_t)g * PC + c * 8))));
#pragma GCC unroll 2
            for (int r = 0; r < mr; r++)
                t[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[r][c]), d, t[r][c]);
        }
    }
#pragma GCC unroll 2
    for (int c = 0; c < 2; c++) {
        const __m256 cs = _mm256_loadu_ps(j->cs + (size_t)p * PC + c * 8);
#pragma GCC unroll 2
        for (int r = 0; r < mr; r++)
            _mm256_storeu_ps(out + (size_t)r * ldo + c * 8,
                             _mm256_mul_ps(_mm256_mul_ps(t[r][c], cs), _mm256_set1_ps(j->xs[r0 + r])));
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

/* AMX-INT8 (Sapphire Rapids and later). A panel's groups are unpacked
 * once per row chunk into B tiles of the plain codes q in [0, 15] (a
 * step's two nibble halves are two B rows as they lie: 16 columns x 4 k,
 * 64 bytes; an AND and a shift, no multiply), and TDPBSUD (signed
 * activations x unsigned codes) gives one group's 16 x 16 sums of x q per
 * tile product. Each group's sums leave the tile (TILESTORED) and are
 * finished as tile_vnni finishes them: + the row's -8 sum x, times the
 * group's step, into f32 accumulators held in registers; so AMX and VNNI
 * results are bit-identical. One tile product per group and 16 rows, the
 * vector units busy with the previous group's epilogue meanwhile.
 * (Before: B held step (q - 8) as two int8 digits so the tiles summed over
 * the whole K, at twice the tile products and a multiply-heavy unpack:
 * 150-275 GMAC/s at 32-1024 rows on one core here, no better than VNNI.
 * Tried again with blocks of 32 rows x 2 digits (4 C tiles, one A load per
 * two products, C carried between K slices as exact int32): its tile loop
 * alone ran 970 GMAC/s at 1024 x 1536 x 1536, but the unpack (a multiply
 * per weight, once per panel and chunk of rows) left 172 / 229 / 551 / 530
 * / 385 GMAC/s at 16 / 32 / 256 / 1024 rows and K = 8960, against this
 * kernel's 461 / 501 / 562 / 528 / 484: not kept.) */
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

/* A thread's unpacked B tiles: one panel's (G, 16 rows, 64) codes. */
static _Thread_local struct {
    uint8_t *p;
    size_t cap;
} B;

static void *grow(void *p, size_t *cap, size_t want);

#define AMX __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,f16c,fma,amx-tile,amx-int8")))

/* Tiles 0-3: C (16 x 16 int32; groups in flight), 4-5: A (16 rows x 64
 * k), 6-7: B (16 x 4 k per 64-byte row). A constant: GCC 12 drops stores into a local config
 * that only _tile_loadconfig reads (it faulted). */
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

/* Unpacks groups [g0, g1) of panel p into B (1 KB a group: 16 rows of 64
 * codes q - 8). */
AMX static void unpack_amx(const q4_job_t *j, int p, int g0, int g1, uint8_t *bp)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f), e8 = _mm512_set1_epi8(8);
    const uint8_t *w = j->w + ((size_t)p * j->G + g0) * (G64 / 2) * PC;
    for (size_t s = 0; s < (size_t)(g1 - g0) * (G64 / 8); s++) {
        const __m512i raw = _mm512_loadu_si512(w + s * 64);
        _mm512_store_si512(bp + s * 128, _mm512_sub_epi8(_mm512_and_si512(raw, m4), e8));
        _mm512_store_si512(bp + s * 128 + 64, _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(raw, 4), m4), e8));
    }
}

/* Rows [r0, r0 + nr) (nr <= 16; the tile computes 16, the rows past M
 * being zeros, quantize) of panel p, groups [g0, g1) (unpacked in B), as
 * tile_vnni computes them: the f32 sums start from acc (16 x 16) unless
 * g0 = 0 and go back to it unless g1 = G; after the last group, through
 * bias, activation and the residual add into y, as mm_nn_bias_act_row does
 * element by element (so bit-identical to the VNNI rows, which go through
 * it). */
AMX static void block_amx(const q4_job_t *j, int p, int r0, int nr, int g0, int g1, const uint8_t *bp, float *acc)
{
    const int G = g1 - g0;
    const size_t Kp = (size_t)j->G * G64;
    const int8_t *gs = j->gs + ((size_t)p * j->G + g0) * PC;
    const int8_t *x = j->xq + (size_t)r0 * Kp + (size_t)g0 * G64;
    int32_t c[2][16][16] __attribute__((aligned(64)));
    /* the 16 rows' f32 sums as 16 named registers: an array of them stayed
     * on the stack (GCC 12), a load and a store each per group */
#define Q4_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define Q4_INIT(r) __m512 t##r = g0 ? _mm512_load_ps(acc + r * 16) : _mm512_setzero_ps();
    Q4_ROWS(Q4_INIT)
#undef Q4_INIT
    if (g1 == j->G) /* the next block's output lines, for writing: a panel's 16 columns are one line a row, a
                     * row apart (strided, which the hardware prefetchers do not follow; measured 25% of the time
                     * in the stores at 1024 x 5120 without) */
        for (int r = r0 + 16; r < r0 + 32 && r < j->M; r++)
            _mm_prefetch((const char *)(j->y + (size_t)r * j->ldy + (size_t)p * PC), _MM_HINT_ET0);
    /* Group g's product goes to C tile g % 4 from A tile 4 + g % 2 and B
     * tile 6 + g % 2, issued two groups ahead of its epilogue: the tile
     * unit's latency (a product, then its store) is hidden behind two
     * other products. */
#define Q4_ISSUE(cn, an, bn, gg)                                                                                       \
    do {                                                                                                               \
        _tile_loadd(an, x + (size_t)(gg) * G64, (long)Kp);                                                             \
        _tile_loadd(bn, bp + (size_t)(gg) * 1024, 64);                                                                  \
        _tile_zero(cn);                                                                                                \
        _tile_dpbssd(cn, an, bn);                                                                                      \
    } while (0)
    Q4_ISSUE(0, 4, 6, 0);
    if (G > 1)
        Q4_ISSUE(1, 5, 7, 1);
    for (int g = 0; g < G; g++) {
        const int n = g + 2;
        if (n < G)
            switch (n & 3) {
            case 0: Q4_ISSUE(0, 4, 6, n); break;
            case 1: Q4_ISSUE(1, 5, 7, n); break;
            case 2: Q4_ISSUE(2, 4, 6, n); break;
            default: Q4_ISSUE(3, 5, 7, n); break;
            }
        switch (g & 3) {
        case 0: _tile_stored(0, c[0], 64); break;
        case 1: _tile_stored(1, c[1], 64); break;
        case 2: _tile_stored(2, c[0], 64); break;
        default: _tile_stored(3, c[1], 64); break;
        }
        const __m512 d = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(gs + (size_t)g * PC))));
        const int32_t(*cg)[16] = c[g & 1];
#define Q4_FMA(r) t##r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cg[r])), d, t##r);
        Q4_ROWS(Q4_FMA)
#undef Q4_FMA
    }
#undef Q4_ISSUE
    /* to acc when more slices of K are to come, else to a local copy for
     * the epilogue's loop over the rows */
    float tl[16][16] __attribute__((aligned(64)));
    float *to = g1 < j->G ? acc : tl[0];
#define Q4_STORE(r) _mm512_store_ps(to + r * 16, t##r);
    Q4_ROWS(Q4_STORE)
#undef Q4_STORE
#undef Q4_ROWS
    if (g1 < j->G) /* more slices of K to come */
        return;
    const __m512 cs = _mm512_loadu_ps(j->cs + (size_t)p * PC);
    const int c0 = p * PC, nc = j->N - c0 < PC ? j->N - c0 : PC;
    const float *b = j->b ? j->b + c0 : NULL;
    for (int r = 0; r < nr; r++) {
        float *y = j->y + (size_t)(r0 + r) * j->ldy + c0;
        const __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_load_ps(tl[r]), cs), _mm512_set1_ps(j->xs[r0 + r]));
        if (nc < PC) { /* the last panel's columns past N */
            float o[PC];
            _mm512_storeu_ps(o, v);
            mm_nn_bias_act_row(y, o, b, nc, j->act, j->add);
            continue;
        }
        __m512 u = b ? _mm512_add_ps(v, _mm512_loadu_ps(b)) : v;
        u = act16(u, j->act);
        if (j->add)
            u = _mm512_add_ps(u, _mm512_loadu_ps(y));
        _mm512_storeu_ps(y, u);
    }
}

/* ============================================================ driving == */

/* A thread's AMX row blocks' f32 sums between slices of K. */
static _Thread_local struct {
    float *p;
    size_t cap;
} A;

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
    free(A.p);
    free(B.p);
    free(X.q);
    free(X.o);
    free(X.s);
    memset(&Y, 0, sizeof Y);
    memset(&A, 0, sizeof A);
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

/* Panels [p0, p1) of rows [r0, r1). AMX (where the CPU has it): blocks of
 * 16 rows (a last one of at least AMX_MIN_ROWS too), AMX_CHUNK rows at a
 * time (their activations stay in L2), a panel unpacked once per chunk and
 * its outputs finished in the tile epilogue. The rest (all rows without
 * AMX): VNNI or AVX2 tiles, RCHUNK rows at a time into the thread's
 * scratch, then bias, activation and the residual add a row at a time. */
static void range(const q4_job_t *j, int p0, int p1, int r0, int r1)
{
    if (j->amx && r1 - r0 >= AMX_MIN_ROWS) {
        const int ra = r1 - r0 < 16 || (r1 - r0) % 16 >= AMX_MIN_ROWS ? r1 : r0 + (r1 - r0) / 16 * 16;
        amx_config();
        for (int a = r0; a < ra; a += AMX_CHUNK) {
            const int e = a + AMX_CHUNK < ra ? a + AMX_CHUNK : ra;
            /* panels a block's slice of activations (16 KB) serves from L1 before the next block: 4 from 128
             * rows (1.0-1.3x faster at K >= 1280), else 1 (4 measured 1.2x slower at 32 rows: the 4 panels'
             * digits outgrow L1, and there are only 2 blocks to share them) */
            const int pg = e - a >= 128 ? AMX_PANELS : 1;
            if (j->G > AMX_KSLICE)
                A.p = grow(A.p, &A.cap, sizeof(float) * 256 * (size_t)pg * (size_t)((e - a + 15) / 16));
            B.p = grow(B.p, &B.cap, (size_t)pg * AMX_KSLICE * 1024);
            for (int p = p0; p < p1; p += pg) {
                const int np = p1 - p < pg ? p1 - p : pg;
                for (int g0 = 0; g0 < j->G; g0 += AMX_KSLICE) {
                    const int g1 = g0 + AMX_KSLICE < j->G ? g0 + AMX_KSLICE : j->G;
                    for (int q = 0; q < np; q++)
                        unpack_amx(j, p + q, g0, g1, B.p + (size_t)q * AMX_KSLICE * 1024);
                    for (int m = a; m < e; m += 16)
                        for (int q = 0; q < np; q++)
                            block_amx(j, p + q, m, e - m < 16 ? e - m : 16, g0, g1, B.p + (size_t)q * AMX_KSLICE * 1024,
                                      A.p + ((size_t)(m - a) / 16 * (size_t)pg + (size_t)q) * 256);
                }
            }
        }
        amx_release();
        r0 = ra;
    }
    if (r0 >= r1)
        return;
    const int c0 = p0 * PC, c1 = p1 * PC < j->N ? p1 * PC : j->N, ldo = (p1 - p0) * PC;
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
    if (j->rowsplit) { /* whole blocks of 16 rows a part (AMX tiles), the tail to the last */
        const int blocks = j->M / 16, a = (int)((long)blocks * part / nparts) * 16,
                  b = part == nparts - 1 ? j->M : (int)((long)blocks * (part + 1) / nparts) * 16;
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
    const int G = j->G, Kp = G * G64, K = j->K, Mp = (j->M + 15) / 16 * 16;
    /* rows up to a multiple of 16: an AMX tile reads 16 (zero codes) */
    X.q = grow(X.q, &X.qcap, (size_t)Mp * Kp);
    X.o = grow(X.o, &X.ocap, sizeof(int32_t) * (size_t)Mp * G);
    X.s = grow(X.s, &X.scap, sizeof(float) * (size_t)Mp);
    memset(X.q + (size_t)j->M * Kp, 0, (size_t)(Mp - j->M) * Kp);
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
        const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
        for (int g = 0; g < G; g++) { /* sum of the 64 codes: pairs (u8 1 x s8), then to int32, then across */
            const __m256i a = _mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i *)(q + g * G64)));
            const __m256i b = _mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i *)(q + g * G64 + 32)));
            const __m256i c = _mm256_madd_epi16(_mm256_add_epi16(a, b), ones16);
            __m128i h = _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
            X.o[(size_t)m * G + g] = -8 * _mm_cvtsi128_si32(h);
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
    j.rowsplit = (M >= threads * ROWSPLIT_MIN && M >= 256) || panels < 2 * threads;
    mm_nn_parallel(part, &j);
}
