/* Multi-head scaled dot-product attention for one sequence. Heads are read
 * in place through row strides (a fused q|k|v buffer is never split); both
 * products (Q K^T and P V) are oneDNN matmuls (mm_nn_matmul_nt/_nn). Under
 * the causal mask row i's softmax covers its visible keys only and the
 * hidden ones are set to 0, so P V adds exact zeros for them. */
#include "mmembed/nn.h"

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
        /* S (nq, nk) = scale * Q K^T */
        mm_nn_matmul_nt(scratch, nk, q + c, ldq, k + c, ldk, nq, nk, head_dim, scale);
        for (int i = 0; i < nq; i++) {
            float *row = scratch + (size_t)i * nk;
            int n = causal ? i + shift + 1 : nk;
            n = n < 0 ? 0 : (n > nk ? nk : n);
            mm_nn_softmax(row, n);
            memset(row + n, 0, (size_t)(nk - n) * sizeof(float));
        }
        /* O (nq, head_dim) = P V */
        mm_nn_matmul_nn(out + c, ldo, scratch, nk, v + c, ldv, nq, head_dim, nk);
    }
}
