/* Dense layers on top of BLAS sgemm. */
#include "mmembed/nn.h"

#include <cblas.h>

void mm_nn_set_threads(int n)
{
    openblas_set_num_threads(n < 1 ? 1 : n);
}

void mm_nn_linear(float *y, int ldy, const float *x, int ldx,
                  const float *w, const float *b, int M, int K, int N)
{
    if (M <= 0 || N <= 0)
        return;
    /* W is (N, K) row-major = nn.Linear's layout, so y = x · W^T is a
     * NoTrans x Trans GEMM; OpenBLAS packs B either way, so pre-transposing
     * the weights buys nothing. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K,
                1.0f, x, ldx, w, K, 0.0f, y, ldy);
    if (b)
        for (int i = 0; i < M; i++)
            mm_nn_add(y + (size_t)i * ldy, b, (size_t)N);
}
