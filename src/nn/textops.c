/* Kernels for the text encoders; see mmembed/textops.h for the contracts.
 *
 * Reductions (norm statistics, softmax sums) accumulate in double: the
 * rows are short, the cost is nil, and it keeps us at or below PyTorch's
 * own f32 rounding so the reference comparisons measure the model, not
 * the summation order. */
#include "mmembed/textops.h"

#include "mmembed/nn.h"
#include "simd.h"

#include <math.h>

void mm_tops_rmsnorm(float *y, int ldy, const float *x, int ldx, const float *w,
                     int M, int N, float eps)
{
    for (int i = 0; i < M; i++) {
        const float *xr = x + (size_t)i * ldx;
        float *yr = y + (size_t)i * ldy;
        double s = 0;
        for (int j = 0; j < N; j++)
            s += (double)xr[j] * xr[j];
        float inv = (float)(1.0 / sqrt(s / N + (double)eps));
        for (int j = 0; j < N; j++)
            yr[j] = w[j] * (xr[j] * inv);
    }
}

void mm_tops_swiglu(float *y, int ldy, const float *gu, int ldgu, int M, int N)
{
    for (int i = 0; i < M; i++) {
        const float *g = gu + (size_t)i * ldgu, *u = g + N;
        float *yr = y + (size_t)i * ldy;
        int j = 0;
#ifdef MM_NN_AVX2
        for (; j + 8 <= N; j += 8) {
            __m256 gv = _mm256_loadu_ps(g + j);
            __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
            __m256 sg = _mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
            _mm256_storeu_ps(yr + j, _mm256_mul_ps(sg, _mm256_loadu_ps(u + j)));
        }
#endif
        for (; j < N; j++)
            yr[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
    }
}

void mm_tops_rope(float *x, int ld, int M, int heads, int hd, const float *cos,
                  const float *sin)
{
    int half = hd / 2;
    for (int p = 0; p < M; p++) {
        const float *c = cos + (size_t)p * half, *s = sin + (size_t)p * half;
        for (int h = 0; h < heads; h++) {
            float *a = x + (size_t)p * ld + (size_t)h * hd, *b = a + half;
            for (int i = 0; i < half; i++) {
                float x1 = a[i], x2 = b[i];
                a[i] = x1 * c[i] - x2 * s[i];
                b[i] = x2 * c[i] + x1 * s[i];
            }
        }
    }
}

float mm_tops_i8_quantize(signed char *q, const float *x, size_t n)
{
    float mx = 0;
    for (size_t j = 0; j < n; j++)
        mx = fmaxf(mx, fabsf(x[j]));
    const float s = mx > 0 ? mx / 127.0f : 1.0f, inv = 1.0f / s;
    for (size_t j = 0; j < n; j++)
        q[j] = (signed char)lrintf(x[j] * inv);
    return s;
}

void mm_tops_i8_row(float *y, const signed char *q, float scale, size_t n)
{
    for (size_t j = 0; j < n; j++)
        y[j] = (float)q[j] * scale;
}
