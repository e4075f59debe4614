/* Multi-head scaled dot-product attention for one sequence: two GEMMs per
 * head (S = Q K^T, O = P V) reading the heads in place through row strides,
 * so the fused QKV buffer never has to be split or transposed. */
#include "mmembed/nn.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void mm_nn_attention(float *out, int ldo, const float *q, int ldq,
                     const float *k, int ldk, const float *v, int ldv,
                     int nq, int nk, int heads, int head_dim, int causal,
                     float *scratch)
{
    const float scale = 1.0f / sqrtf((float)head_dim);
    const int shift = nk - nq; /* causal: query i sits at position i + shift */

    for (int h = 0; h < heads; h++) {
        const size_t c = (size_t)h * head_dim;
        float *s = scratch; /* (nq, nk) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, head_dim,
                    scale, q + c, ldq, k + c, ldk, 0.0f, s, nk);
        for (int i = 0; i < nq; i++) {
            float *row = s + (size_t)i * nk;
            int n = nk;
            if (causal) {
                n = i + shift + 1;
                n = n < 0 ? 0 : (n > nk ? nk : n);
                /* masked keys get probability exactly 0, as softmax(-inf) */
                memset(row + n, 0, (size_t)(nk - n) * sizeof(float));
            }
            mm_nn_softmax(row, n);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, head_dim, nk,
                    1.0f, s, nk, v + c, ldv, 0.0f, out + c, ldo);
    }
}
