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

void mm_tops_add_layernorm(float *x, int ld, const float *r, int ldr, const float *w,
                           const float *b, int M, int N, float eps)
{
    for (int i = 0; i < M; i++) {
        float *xr = x + (size_t)i * ld;
        int j = 0;
        double s = 0, v = 0;
#ifdef MM_NN_AVX2
        /* sums in double, 4 lanes x 2: the order differs from the scalar
         * loop only in how double partial sums are grouped */
        __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
        for (; j + 8 <= N; j += 8) {
            __m256 t = _mm256_loadu_ps(xr + j);
            if (r)
                t = _mm256_add_ps(t, _mm256_loadu_ps(r + (size_t)i * ldr + j));
            _mm256_storeu_ps(xr + j, t);
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(t)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(t, 1)));
        }
        double st[4];
        _mm256_storeu_pd(st, _mm256_add_pd(s0, s1));
        s = (st[0] + st[1]) + (st[2] + st[3]);
#endif
        for (; j < N; j++) {
            if (r)
                xr[j] += r[(size_t)i * ldr + j];
            s += xr[j];
        }
        const float mean = (float)(s / N);
        j = 0;
#ifdef MM_NN_AVX2
        const __m256d md = _mm256_set1_pd((double)mean);
        __m256d v0 = _mm256_setzero_pd(), v1 = _mm256_setzero_pd();
        for (; j + 8 <= N; j += 8) {
            __m256 t = _mm256_loadu_ps(xr + j);
            __m256d a = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(t)), md);
            __m256d c = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(t, 1)), md);
            v0 = _mm256_fmadd_pd(a, a, v0);
            v1 = _mm256_fmadd_pd(c, c, v1);
        }
        _mm256_storeu_pd(st, _mm256_add_pd(v0, v1));
        v = (st[0] + st[1]) + (st[2] + st[3]);
#endif
        for (; j < N; j++) {
            double d = (double)xr[j] - mean;
            v += d * d;
        }
        const float inv = (float)(1.0 / sqrt(v / N + (double)eps));
        j = 0;
#ifdef MM_NN_AVX2
        const __m256 mf = _mm256_set1_ps(mean), vi = _mm256_set1_ps(inv);
        for (; j + 8 <= N; j += 8) {
            __m256 t = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + j), mf), vi),
                                     _mm256_loadu_ps(w + j));
            _mm256_storeu_ps(xr + j, _mm256_add_ps(t, _mm256_loadu_ps(b + j)));
        }
#endif
        for (; j < N; j++)
            xr[j] = (xr[j] - mean) * inv * w[j] + b[j];
    }
}

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
