/* nn — pure numeric kernels (f32, row-major). No allocation, no I/O, no
 * knowledge of models: callers pass every buffer and every shape.
 *
 * Shapes are written (rows, cols); "W (N, K)" means N rows of K floats,
 * the PyTorch nn.Linear layout (out_features, in_features).
 * Kernels are single-threaded except mm_nn_linear / the GEMMs inside
 * mm_nn_attention, which run on OpenBLAS's threads (mm_nn_set_threads). */
#ifndef MMEMBED_NN_H
#define MMEMBED_NN_H

#include <stddef.h>

/* Activation functions understood by mm_nn_bias_act. */
typedef enum {
    MM_ACT_NONE = 0,
    MM_ACT_QUICK_GELU,  /* x * sigmoid(1.702 x)  (CLIP's "quick_gelu") */
    MM_ACT_GELU,        /* 0.5 x (1 + erf(x / sqrt 2))  (HF "gelu", exact erf) */
} mm_act_t;

/* Sets the number of BLAS threads used by the GEMMs (process-wide: OpenBLAS
 * keeps one pool per process). n < 1 is treated as 1. */
void mm_nn_set_threads(int n);

/* y (M, N) = x (M, K) · W^T + b, with W (N, K) in nn.Linear layout and b (N)
 * or NULL. ldx / ldy are the row strides of x and y in floats (>= K, >= N).
 * y must not alias x or W. */
void mm_nn_linear(float *y, int ldy, const float *x, int ldx,
                  const float *w, const float *b, int M, int K, int N);

/* y (M, N) = act(y + b) row by row; b (N) may be NULL. */
void mm_nn_bias_act(float *y, const float *b, int M, int N, mm_act_t act);

/* In place, elementwise: x[i] = act(x[i]) for n floats. */
void mm_nn_act(float *x, size_t n, mm_act_t act);

/* y[i] += x[i] for n floats (residual connection). */
void mm_nn_add(float *y, const float *x, size_t n);

/* Layer norm over the last dimension: for each of M rows of N floats,
 * y = (x - mean) / sqrt(var + eps) * w + b (biased variance, like PyTorch).
 * y may equal x (in place). */
void mm_nn_layer_norm(float *y, const float *x, const float *w, const float *b,
                      int M, int N, float eps);

/* In place numerically stable softmax of the first n floats of x. */
void mm_nn_softmax(float *x, int n);

/* Multi-head scaled dot-product attention over ONE sequence.
 *   q   (nq, heads*head_dim), row stride ldq
 *   k,v (nk, heads*head_dim), row strides ldk, ldv
 *   out (nq, heads*head_dim), row stride ldo; must not alias q, k or v
 * Scores are scaled by 1/sqrt(head_dim). With causal != 0 the queries are
 * the LAST nq positions of the sequence: query i sees keys
 * j <= i + (nk - nq) (so nq == nk is the usual lower-triangular mask and
 * nq == 1 sees every key). scratch holds nq*nk floats. */
void mm_nn_attention(float *out, int ldo, const float *q, int ldq,
                     const float *k, int ldk, const float *v, int ldv,
                     int nq, int nk, int heads, int head_dim, int causal,
                     float *scratch);

/* x (n) /= max(||x||_2, 1e-12), like torch.nn.functional.normalize.
 * Accumulates in double so long vectors stay exact to f32 rounding. */
void mm_nn_l2_normalize(float *x, int n);

#endif
