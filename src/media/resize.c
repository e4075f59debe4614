/* Antialiased resampling of RGB8 images, bit-exact with the two
 * implementations Hugging Face image processors use.
 *
 * Both follow Pillow's ImagingResample geometry: for each output pixel the
 * filter is centred at (x + 0.5) * scale in input coordinates, its support
 * widened by the downscale factor, the weights normalised to sum to 1 and
 * quantised to fixed point; a horizontal pass then a vertical pass, each
 * rounding and clipping to uint8. They differ only in the quantisation:
 *  - MM_RESIZE_PIL: Pillow's Image.resize, 22 fractional bits.
 *  - MM_RESIZE_TORCHVISION: torch's uint8 antialias kernel (ported from
 *    Pillow-SIMD) as torchvision's resize uses it: int16 weights with the
 *    largest precision that keeps the axis' largest weight below 2^15.
 * The last bit of rounding differs between the two in ~1% of pixels, so
 * matching the right one is what makes the output bit-exact. */
#include "mmembed/image.h"
#include "mmembed/common.h"

#include <math.h>
#include <stdint.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)
#define MM_PI 3.14159265358979323846

typedef struct {
    double (*fn)(double x);
    double support;
} filter_t;

static double filter_box(double x)
{
    return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
}

static double filter_bilinear(double x)
{
    if (x < 0.0)
        x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double filter_hamming(double x)
{
    if (x < 0.0)
        x = -x;
    if (x == 0.0)
        return 1.0;
    if (x >= 1.0)
        return 0.0;
    x *= MM_PI;
    return sin(x) / x * (0.54f + 0.46f * cos(x)); /* float constants, as PIL */
}

/* Keys' cubic convolution with a = -0.5, as PIL. */
static double filter_bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0)
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

static double sinc(double x)
{
    if (x == 0.0)
        return 1.0;
    x *= MM_PI;
    return sin(x) / x;
}

static double filter_lanczos(double x)
{
    if (-3.0 <= x && x < 3.0)
        return sinc(x) * sinc(x / 3.0);
    return 0.0;
}

static const filter_t *filter_for(int code)
{
    static const filter_t box = {filter_box, 0.5}, bilinear = {filter_bilinear, 1.0},
                          hamming = {filter_hamming, 1.0}, bicubic = {filter_bicubic, 2.0},
                          lanczos = {filter_lanczos, 3.0};
    switch (code) {
    case MM_RESAMPLE_BOX: return &box;
    case MM_RESAMPLE_BILINEAR: return &bilinear;
    case MM_RESAMPLE_HAMMING: return &hamming;
    case MM_RESAMPLE_BICUBIC: return &bicubic;
    case MM_RESAMPLE_LANCZOS: return &lanczos;
    default: return NULL;
    }
}

/* One axis of coefficients for output positions [o0, o0+n) of out_size,
 * input in_size: bounds[2*i] = first input index, bounds[2*i+1] = tap count,
 * kk[i*ksize ..] = fixed-point weights with `prec` fractional bits. */
typedef struct {
    int ksize, prec;
    int *bounds;   /* (n, 2) */
    int32_t *kk;   /* (n, ksize) */
} coeffs_t;

static void coeffs_free(coeffs_t *c)
{
    free(c->bounds);
    free(c->kk);
    c->bounds = NULL;
    c->kk = NULL;
}

typedef struct {
    const filter_t *f;
    int in_size;
    double scale, filterscale, support;
} axis_t;

/* Normalised weights of output position xx into w[]; returns the tap count
 * and the first input index in *xmin (PIL precompute_coeffs; torch's
 * _compute_indices_min_size_weights_aa is the same computation). */
static int axis_weights(const axis_t *a, int xx, double *w, int *xmin_out)
{
    double center = (xx + 0.5) * a->scale, ww = 0.0, ss = 1.0 / a->filterscale;
    /* (int) truncates toward zero; negative values clamp to 0 below */
    int xmin = (int)(center - a->support + 0.5);
    if (xmin < 0)
        xmin = 0;
    int xmax = (int)(center + a->support + 0.5);
    if (xmax > a->in_size)
        xmax = a->in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; x++) {
        w[x] = a->f->fn((x + xmin - center + 0.5) * ss);
        ww += w[x];
    }
    if (ww != 0.0)
        for (int x = 0; x < xmax; x++)
            w[x] /= ww;
    *xmin_out = xmin;
    return xmax;
}

static int coeffs_make(int in_size, int out_size, int o0, int n, const filter_t *f, int flavor,
                       coeffs_t *c)
{
    axis_t a = {f, in_size, (double)in_size / out_size, 0, 0};
    a.filterscale = a.scale < 1.0 ? 1.0 : a.scale;
    a.support = f->support * a.filterscale;
    int ksize = (int)ceil(a.support) * 2 + 1, xmin;
    double *w = malloc((size_t)ksize * sizeof *w);

    c->ksize = ksize;
    c->bounds = malloc((size_t)n * 2 * sizeof *c->bounds);
    c->kk = malloc((size_t)n * (size_t)ksize * sizeof *c->kk);
    if (!w || !c->bounds || !c->kk) {
        free(w);
        coeffs_free(c);
        return MM_E_NOMEM;
    }

    if (flavor == MM_RESIZE_PIL) {
        c->prec = PRECISION_BITS;
    } else {
        /* torch: the largest precision that keeps the axis' largest weight
         * (over every output position, not just the window) below 2^15 */
        double wmax = 0.0;
        for (int xx = 0; xx < out_size; xx++) {
            int taps = axis_weights(&a, xx, w, &xmin);
            for (int x = 0; x < taps; x++)
                if (w[x] > wmax)
                    wmax = w[x];
        }
        for (c->prec = 0; c->prec < PRECISION_BITS; c->prec++)
            if ((int)(0.5 + wmax * (1 << (c->prec + 1))) >= (1 << 15))
                break;
    }

    for (int i = 0; i < n; i++) {
        int taps = axis_weights(&a, o0 + i, w, &xmin);
        int32_t *k = c->kk + (size_t)i * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < taps ? w[x] * (1 << c->prec) : 0.0;
            /* both round half away from zero when quantising */
            k[x] = (int32_t)(v < 0 ? v - 0.5 : v + 0.5);
        }
        c->bounds[2 * i] = xmin;
        c->bounds[2 * i + 1] = taps;
    }
    free(w);
    return MM_OK;
}

static inline unsigned char clip8(int32_t v, int prec)
{
    if (v < 0)
        return 0;
    v >>= prec;
    return v > 255 ? 255 : (unsigned char)v;
}

/* Horizontal pass: rows x n output pixels from src rows [0, rows).
 * Each output pixel is three dot products over the interleaved span
 * p[3*xmin .. 3*(xmin+taps)). With the weights repeated per channel (k3)
 * and zero-padded to a multiple of 24, the AVX2 kernel does it as one
 * 24-lane multiply-add loop (GCC 12 does not vectorise this at -O2, and
 * its generic vector extensions widen bytes one by one). Integer sums do
 * not depend on order, so every path is bit-identical to the plain loop.
 * row is scratch of sw*3 + OVERREAD bytes. */
#define LANES 24

#if defined(__AVX2__)
/* a padded read ends before p + roundup(3*taps, 24) <= row end + 21 */
#define OVERREAD LANES

/* 24 lanes = 3 x 8 int32: widen 8 pixel bytes, multiply by 8 weights;
 * lane l of the 24 holds channel l % 3. */
static inline void dot3(const unsigned char *p, const int32_t *k, int taps, int32_t s[3])
{
    int len = (taps * 3 + LANES - 1) / LANES * LANES;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0;
    for (int j = 0; j < len; j += LANES) {
        __m256i p0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + j)));
        __m256i p1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + j + 8)));
        __m256i p2 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + j + 16)));
        a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(p0, _mm256_loadu_si256((const __m256i *)(k + j))));
        a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(p1, _mm256_loadu_si256((const __m256i *)(k + j + 8))));
        a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(p2, _mm256_loadu_si256((const __m256i *)(k + j + 16))));
    }
    int32_t acc[LANES];
    _mm256_storeu_si256((__m256i *)acc, a0);
    _mm256_storeu_si256((__m256i *)(acc + 8), a1);
    _mm256_storeu_si256((__m256i *)(acc + 16), a2);
    for (int l = 0; l < LANES; l += 3) {
        s[0] += acc[l];
        s[1] += acc[l + 1];
        s[2] += acc[l + 2];
    }
}

/* acc[0..n) += s[0..n) * ky; returns how many were done (a multiple of 8) */
static inline int madd_row(int32_t *acc, const unsigned char *s, int32_t ky, int n)
{
    __m256i k = _mm256_set1_epi32(ky);
    int x = 0;
    for (; x + 8 <= n; x += 8) {
        __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(s + x)));
        __m256i a = _mm256_loadu_si256((const __m256i *)(acc + x));
        _mm256_storeu_si256((__m256i *)(acc + x), _mm256_add_epi32(a, _mm256_mullo_epi32(v, k)));
    }
    return x;
}
#else
#define OVERREAD 0

static inline void dot3(const unsigned char *p, const int32_t *k, int taps, int32_t s[3])
{
    int32_t s0 = 0, s1 = 0, s2 = 0;
    for (int x = 0; x < 3 * taps; x += 3) {
        s0 += p[x] * k[x];
        s1 += p[x + 1] * k[x];
        s2 += p[x + 2] * k[x];
    }
    s[0] += s0;
    s[1] += s1;
    s[2] += s2;
}

static inline int madd_row(int32_t *acc, const unsigned char *s, int32_t ky, int n)
{
    (void)acc;
    (void)s;
    (void)ky;
    (void)n;
    return 0;
}
#endif

static void pass_horizontal(const unsigned char *src, size_t sstride, int avail, int sw, int rows,
                            const coeffs_t *c, const int32_t *k3, int klen, int n,
                            unsigned char *row, unsigned char *dst, size_t dstride)
{
#if OVERREAD
    memset(row + (size_t)sw * 3, 0, OVERREAD);
#endif
    for (int y = 0; y < rows; y++) {
        const unsigned char *s = src + (size_t)y * sstride;
#if OVERREAD
        /* the padded reads run up to OVERREAD bytes past the row: harmless
         * (zero weights) inside the buffer, so only rows near its end
         * (avail rows from src) go through the zero-padded copy */
        if ((size_t)(avail - 1 - y) * sstride < OVERREAD) {
            memcpy(row, s, (size_t)sw * 3);
            s = row;
        }
#else
        (void)avail;
        (void)sw;
        (void)row;
#endif
        unsigned char *d = dst + (size_t)y * dstride;
        for (int i = 0; i < n; i++) {
            const unsigned char *p = s + (size_t)c->bounds[2 * i] * 3;
            int32_t sum[3] = {1 << (c->prec - 1), 1 << (c->prec - 1), 1 << (c->prec - 1)};
            dot3(p, k3 + (size_t)i * klen, c->bounds[2 * i + 1], sum);
            d[3 * i + 0] = clip8(sum[0], c->prec);
            d[3 * i + 1] = clip8(sum[1], c->prec);
            d[3 * i + 2] = clip8(sum[2], c->prec);
        }
    }
}

/* Weights repeated for the 3 channels, each output padded with zeros to
 * klen = a multiple of LANES. */
static int32_t *weights_x3(const coeffs_t *c, int n, int *klen)
{
    *klen = (c->ksize * 3 + LANES - 1) / LANES * LANES;
    int32_t *k3 = calloc((size_t)n * *klen, sizeof *k3);
    if (!k3)
        return NULL;
    for (int i = 0; i < n; i++)
        for (int x = 0; x < c->bounds[2 * i + 1]; x++)
            for (int ch = 0; ch < 3; ch++)
                k3[(size_t)i * *klen + 3 * x + ch] = c->kk[(size_t)i * c->ksize + x];
    return k3;
}

/* n output rows of width `bytes` (= pixels*3) from src, whose row 0 is the
 * input row that c->bounds are relative to; acc is scratch of `bytes`. */
static void pass_vertical(const unsigned char *src, size_t sstride, int bytes, const coeffs_t *c,
                          int n, int32_t *restrict acc, unsigned char *dst, size_t dstride)
{
    const int prec = c->prec;
    for (int i = 0; i < n; i++) {
        const int32_t *k = c->kk + (size_t)i * c->ksize;
        int ymin = c->bounds[2 * i], taps = c->bounds[2 * i + 1];
        for (int x = 0; x < bytes; x++)
            acc[x] = 1 << (prec - 1);
        for (int y = 0; y < taps; y++) {
            const unsigned char *restrict s = src + (size_t)(ymin + y) * sstride;
            int32_t ky = k[y];
            for (int x = madd_row(acc, s, ky, bytes); x < bytes; x++)
                acc[x] += s[x] * ky;
        }
        unsigned char *restrict d = dst + (size_t)i * dstride;
        for (int x = 0; x < bytes; x++)
            d[x] = clip8(acc[x], prec);
    }
}

int mm_image_resize(const unsigned char *src, int sw, int sh, size_t sstride,
                    int dw, int dh, int x0, int y0, int ww, int wh,
                    unsigned char *dst, size_t dstride, int filter, int flavor)
{
    const filter_t *f = filter_for(filter);
    if (!f || (flavor != MM_RESIZE_TORCHVISION && flavor != MM_RESIZE_PIL))
        return MM_E_UNSUPPORTED;
    if (!src || !dst || sw <= 0 || sh <= 0 || dw <= 0 || dh <= 0 || ww <= 0 || wh <= 0 ||
        x0 < 0 || y0 < 0 || x0 > dw - ww || y0 > dh - wh || sstride < (size_t)sw * 3 ||
        dstride < (size_t)ww * 3)
        return MM_E_INVALID;

    int need_h = dw != sw, need_v = dh != sh;
    coeffs_t ch = {0}, cv = {0};
    unsigned char *tmp = NULL, *row = NULL;
    int32_t *acc = NULL, *k3 = NULL;
    int rc = MM_E_NOMEM, klen = 0;

    if (!need_h && !need_v) {
        for (int y = 0; y < wh; y++)
            memcpy(dst + (size_t)y * dstride, src + (size_t)(y0 + y) * sstride + (size_t)x0 * 3,
                   (size_t)ww * 3);
        return MM_OK;
    }
    if (need_h && (rc = coeffs_make(sw, dw, x0, ww, f, flavor, &ch)) != MM_OK)
        goto out;
    if (need_v && (rc = coeffs_make(sh, dh, y0, wh, f, flavor, &cv)) != MM_OK)
        goto out;
    rc = MM_E_NOMEM;
    if (need_h) {
        if (!(k3 = weights_x3(&ch, ww, &klen)))
            goto out;
        if (!(row = malloc((size_t)sw * 3 + OVERREAD)))
            goto out;
    }

    if (need_h && !need_v) {
        pass_horizontal(src + (size_t)y0 * sstride, sstride, sh - y0, sw, wh, &ch, k3, klen, ww, row,
                        dst, dstride);
        rc = MM_OK;
        goto out;
    }

    /* Input rows the vertical pass reads, made relative to the first one. */
    int first = cv.bounds[0], last = cv.bounds[2 * (wh - 1)] + cv.bounds[2 * (wh - 1) + 1];
    for (int i = 0; i < wh; i++)
        cv.bounds[2 * i] -= first;
    if (!(acc = malloc((size_t)ww * 3 * sizeof *acc)))
        goto out;

    if (need_h) {
        size_t tstride = (size_t)ww * 3;
        if (!(tmp = malloc(tstride * (size_t)(last - first))))
            goto out;
        pass_horizontal(src + (size_t)first * sstride, sstride, sh - first, sw, last - first, &ch, k3,
                        klen, ww, row, tmp, tstride);
        pass_vertical(tmp, tstride, ww * 3, &cv, wh, acc, dst, dstride);
    } else {
        pass_vertical(src + (size_t)first * sstride + (size_t)x0 * 3, sstride, ww * 3, &cv, wh, acc,
                      dst, dstride);
    }
    rc = MM_OK;
out:
    coeffs_free(&ch);
    coeffs_free(&cv);
    free(tmp);
    free(acc);
    free(k3);
    free(row);
    return rc;
}
