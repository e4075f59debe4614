/* Normalisations: layer norm, L2 normalize. */
#include "mmembed/nn.h"

#include <math.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static void layer_norm_row(float *y, const float *x, const float *w, const float *b,
                           int n, float eps)
{
    int j;
    __m256 acc = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n; j += 8)
        acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + j));
    float sum = hsum8(acc);
    for (; j < n; j++)
        sum += x[j];
    float mean = sum / (float)n;

    /* two-pass variance: no cancellation when |mean| >> std */
    __m256 vm = _mm256_set1_ps(mean);
    acc = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n; j += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + j), vm);
        acc = _mm256_fmadd_ps(d, d, acc);
    }
    float var = hsum8(acc);
    for (; j < n; j++)
        var += (x[j] - mean) * (x[j] - mean);
    float rstd = 1.0f / sqrtf(var / (float)n + eps);

    __m256 vr = _mm256_set1_ps(rstd);
    for (j = 0; j + 8 <= n; j += 8) {
        __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm), vr);
        _mm256_storeu_ps(y + j, _mm256_fmadd_ps(d, _mm256_loadu_ps(w + j), _mm256_loadu_ps(b + j)));
    }
    for (; j < n; j++)
        y[j] = (x[j] - mean) * rstd * w[j] + b[j];
}

#else

static void layer_norm_row(float *y, const float *x, const float *w, const float *b,
                           int n, float eps)
{
    float sum = 0.0f, var = 0.0f;
    for (int j = 0; j < n; j++)
        sum += x[j];
    float mean = sum / (float)n;
    for (int j = 0; j < n; j++)
        var += (x[j] - mean) * (x[j] - mean);
    float rstd = 1.0f / sqrtf(var / (float)n + eps);
    for (int j = 0; j < n; j++)
        y[j] = (x[j] - mean) * rstd * w[j] + b[j];
}

#endif

typedef struct {
    float *y;
    const float *x, *w, *b;
    int M, N;
    float eps;
} ln_job_t;

static void layer_norm_part(void *arg, int part, int nparts)
{
    const ln_job_t *j = arg;
    int i0 = (int)((long)j->M * part / nparts), i1 = (int)((long)j->M * (part + 1) / nparts);
    for (int i = i0; i < i1; i++)
        layer_norm_row(j->y + (size_t)i * j->N, j->x + (size_t)i * j->N, j->w, j->b, j->N, j->eps);
}

void mm_nn_layer_norm(float *y, const float *x, const float *w, const float *b,
                      int M, int N, float eps)
{
    ln_job_t j = {.y = y, .x = x, .w = w, .b = b, .M = M, .N = N, .eps = eps};
    if ((size_t)M * N < 65536) /* a pool wake-up costs more than it saves */
        layer_norm_part(&j, 0, 1);
    else
        mm_nn_parallel(layer_norm_part, &j);
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
