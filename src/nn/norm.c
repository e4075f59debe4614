/* Normalisations: layer norm, L2 normalize. */
#include "mmembed/nn.h"

#include <math.h>

#include "simd.h"

/* One row: t = x (+ r, stored back into xw when r), y = LayerNorm(t) * w + b
 * (biased variance, eps inside the root, like torch.nn.LayerNorm). Mean and
 * variance are summed in double (two passes: no cancellation when
 * |mean| >> std), so a row's result does not depend on its length's
 * rounding; y may equal x. */
static void ln_row(float *y, const float *x, float *xw, const float *r, const float *w, const float *b, int N,
                   float eps)
{
    int j = 0;
    double s = 0, v = 0;
#ifdef MM_NN_AVX2
    /* 4 double lanes x 2: the order differs from the scalar loop only in
     * how the double partial sums are grouped */
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    for (; j + 8 <= N; j += 8) {
        __m256 t = _mm256_loadu_ps(x + j);
        if (r) {
            t = _mm256_add_ps(t, _mm256_loadu_ps(r + j));
            _mm256_storeu_ps(xw + j, t);
        }
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(t)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(t, 1)));
    }
    double st[4];
    _mm256_storeu_pd(st, _mm256_add_pd(s0, s1));
    s = (st[0] + st[1]) + (st[2] + st[3]);
#endif
    for (; j < N; j++) {
        float t = x[j];
        if (r)
            xw[j] = t = t + r[j];
        s += t;
    }
    if (r)
        x = xw;
    const float mean = (float)(s / N);
    j = 0;
#ifdef MM_NN_AVX2
    const __m256d md = _mm256_set1_pd((double)mean);
    __m256d v0 = _mm256_setzero_pd(), v1 = _mm256_setzero_pd();
    for (; j + 8 <= N; j += 8) {
        __m256 t = _mm256_loadu_ps(x + j);
        __m256d a = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(t)), md);
        __m256d c = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(t, 1)), md);
        v0 = _mm256_fmadd_pd(a, a, v0);
        v1 = _mm256_fmadd_pd(c, c, v1);
    }
    _mm256_storeu_pd(st, _mm256_add_pd(v0, v1));
    v = (st[0] + st[1]) + (st[2] + st[3]);
#endif
    for (; j < N; j++) {
        double d = (double)x[j] - mean;
        v += d * d;
    }
    const float inv = (float)(1.0 / sqrt(v / N + (double)eps));
    j = 0;
#ifdef MM_NN_AVX2
    const __m256 mf = _mm256_set1_ps(mean), vi = _mm256_set1_ps(inv);
    for (; j + 8 <= N; j += 8) {
        __m256 t = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), mf), vi), _mm256_loadu_ps(w + j));
        _mm256_storeu_ps(y + j, _mm256_add_ps(t, _mm256_loadu_ps(b + j)));
    }
#endif
    for (; j < N; j++)
        y[j] = (x[j] - mean) * inv * w[j] + b[j];
}

typedef struct {
    float *y;
    const float *x, *r, *w, *b;
    float *xw;
    int M, N, ldy, ldx, ldr;
    float eps;
} ln_job_t;

static void layer_norm_part(void *arg, int part, int nparts)
{
    const ln_job_t *j = arg;
    int i0 = (int)((long)j->M * part / nparts), i1 = (int)((long)j->M * (part + 1) / nparts);
    for (int i = i0; i < i1; i++)
        ln_row(j->y + (size_t)i * j->ldy, j->x + (size_t)i * j->ldx, j->xw ? j->xw + (size_t)i * j->ldx : NULL,
               j->r ? j->r + (size_t)i * j->ldr : NULL, j->w, j->b, j->N, j->eps);
}

static void layer_norm_run(ln_job_t *j)
{
    if ((size_t)j->M * j->N < 65536) /* a pool wake-up costs more than it saves */
        layer_norm_part(j, 0, 1);
    else
        mm_nn_parallel(layer_norm_part, j);
}

void mm_nn_layer_norm(float *y, const float *x, const float *w, const float *b,
                      int M, int N, float eps)
{
    ln_job_t j = {.y = y, .x = x, .w = w, .b = b, .M = M, .N = N, .ldy = N, .ldx = N, .eps = eps};
    layer_norm_run(&j);
}

void mm_nn_add_layer_norm(float *x, int ld, const float *r, int ldr, const float *w, const float *b, int M, int N,
                          float eps)
{
    ln_job_t j = {.y = x, .x = x, .xw = r ? x : NULL, .r = r, .w = w, .b = b, .M = M, .N = N,
                  .ldy = ld, .ldx = ld, .ldr = ldr, .eps = eps};
    layer_norm_run(&j);
}

void mm_nn_l2_normalize(float *x, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    double norm = sqrt(s);
    if (norm < 1e-12)
        norm = 1e-12;
    float inv = (float)(1.0 / norm);
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}
