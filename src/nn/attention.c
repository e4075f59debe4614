/* Multi-head scaled dot-product attention for one sequence. Heads are read
 * in place through row strides (a fused q|k|v buffer is never split), and
 * the causal mask is applied by not computing what it hides: row i of
 * Q K^T stops at its last visible key and P V sums only over those. */
#include "mmembed/nn.h"

#include <math.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

static const int32_t tail_mask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* o (d) = sum_{j < n} p[j] * v_j, v_j = v + j*ldv */
static void pv_row(float *o, const float *p, int n, const float *v, int ldv, int d)
{
    int c = 0;
    for (; c + 32 <= d; c += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int j = 0; j < n; j++) {
            const float *vj = v + (size_t)j * ldv + c;
            __m256 pj = _mm256_broadcast_ss(p + j);
            a0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj), a0);
            a1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8), a1);
            a2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 16), a2);
            a3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 24), a3);
        }
        _mm256_storeu_ps(o + c, a0);
        _mm256_storeu_ps(o + c + 8, a1);
        _mm256_storeu_ps(o + c + 16, a2);
        _mm256_storeu_ps(o + c + 24, a3);
    }
    for (; c < d; c += 8) {
        __m256i m = _mm256_loadu_si256((const __m256i *)(tail_mask + (d - c >= 8 ? 0 : 8 - (d - c))));
        __m256 a = _mm256_setzero_ps();
        for (int j = 0; j < n; j++)
            a = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), _mm256_maskload_ps(v + (size_t)j * ldv + c, m), a);
        _mm256_maskstore_ps(o + c, m, a);
    }
}

#else

static void pv_row(float *o, const float *p, int n, const float *v, int ldv, int d)
{
    for (int c = 0; c < d; c++)
        o[c] = 0.0f;
    for (int j = 0; j < n; j++)
        for (int c = 0; c < d; c++)
            o[c] += p[j] * v[(size_t)j * ldv + c];
}

#endif

void mm_nn_attention(float *out, int ldo, const float *q, int ldq,
                     const float *k, int ldk, const float *v, int ldv,
                     int nq, int nk, int heads, int head_dim, int causal,
                     float *scratch)
{
    const float scale = 1.0f / sqrtf((float)head_dim);
    const int shift = nk - nq; /* causal: query i sits at position i + shift */

    for (int h = 0; h < heads; h++) {
        const size_t c = (size_t)h * head_dim;
        /* S = scale * Q K^T, four query rows at a time; under the causal
         * mask a block needs keys up to its last row's position only */
        for (int i = 0; i < nq; i += 4) {
            int R = nq - i < 4 ? nq - i : 4;
            int n = causal ? i + R + shift : nk;
            n = n < 0 ? 0 : (n > nk ? nk : n);
            mm_nn_matmul_nt(scratch + (size_t)i * nk, nk, q + (size_t)i * ldq + c, ldq,
                            k + c, ldk, R, n, head_dim, scale);
        }
        for (int i = 0; i < nq; i++) {
            float *row = scratch + (size_t)i * nk;
            int n = causal ? i + shift + 1 : nk;
            n = n < 0 ? 0 : (n > nk ? nk : n);
            mm_nn_softmax(row, n);
            pv_row(out + (size_t)i * ldo + c, row, n, v + c, ldv, head_dim);
        }
    }
}
