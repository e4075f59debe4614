/* nn — pure numeric kernels (f32, row-major). No allocation, no I/O, no
 * knowledge of models: callers pass every buffer and every shape.
 *
 * Shapes are written (rows, cols); "W (N, K)" means N rows of K floats,
 * the PyTorch nn.Linear layout (out_features, in_features). Every matrix
 * product runs on oneDNN's matmul primitive (src/nn/matmul.c), dense
 * layers on weights laid out once at load (see mm_nn_linear).
 * mm_nn_linear, mm_nn_layer_norm, mm_nn_bias_act, mm_nn_act and mm_nn_add
 * use the process's threads (mm_nn_set_threads) when the operands are big
 * enough to pay for it; splitting never changes a result. The others are
 * single-threaded. */
#ifndef MMEMBED_NN_H
#define MMEMBED_NN_H

#include <stddef.h>

/* Activation functions (mm_nn_bias_act, mm_nn_act, mm_nn_linear). */
typedef enum {
    MM_ACT_NONE = 0,
    MM_ACT_QUICK_GELU,  /* x * sigmoid(1.702 x)  (CLIP's "quick_gelu") */
    MM_ACT_GELU,        /* 0.5 x (1 + erf(x / sqrt 2))  (HF "gelu", exact erf) */
} mm_act_t;

/* ---- threads (process-wide) ---- */

/* Sets the number of threads the kernels use, the caller included (n < 1
 * means 1). Helpers are (re)started lazily, so calling this before fork()
 * and using the kernels in the child is fine. */
void mm_nn_set_threads(int n);

/* The count last set by mm_nn_set_threads (1 by default). */
int mm_nn_threads(void);

/* Runs fn(ctx, part, nparts) for every part in [0, nparts), nparts =
 * mm_nn_threads(), part 0 on the calling thread, and returns when all have
 * finished. Called from inside fn (directly or through a parallel kernel)
 * it runs fn(ctx, 0, 1) inline. One calling thread at a time. */
typedef void (*mm_nn_task_fn)(void *ctx, int part, int nparts);
void mm_nn_parallel(mm_nn_task_fn fn, void *ctx);

/* ---- kernels ---- */

/* Packed weights: W (N, K) in nn.Linear layout stored transposed, as a
 * plain row-major (K, N) matrix: the layout oneDNN's f32 matmul reads
 * without re-laying it out per call. mm_nn_packed_size gives its length in
 * floats; mm_nn_pack_row writes row n (K floats) of W into it (column n);
 * mm_nn_pack packs a whole matrix. Packing calls no oneDNN (the master
 * packs before forking workers). */
size_t mm_nn_packed_size(int N, int K);
void mm_nn_pack_row(float *packed, int N, int K, int n, const float *row);
void mm_nn_pack(float *packed, const float *w, int N, int K);

/* y (M, N) = act(x (M, K) · W^T + b), W packed (above), b (N) or NULL.
 * ldx / ldy are row strides in floats (>= K, >= N); y must not alias x.
 * One oneDNN matmul with bias and activation fused; threads split the
 * columns, so a result does not depend on the thread count. oneDNN picks
 * its blocking by M, so a row's result may differ with M (batching) in the
 * last bits (relative ~1e-7), not more. Parallel (the pool); not to be
 * called from inside an mm_nn_parallel task. */
void mm_nn_linear(float *y, int ldy, const float *x, int ldx, const float *wp, const float *b,
                  int M, int K, int N, mm_act_t act);

/* y (M, N) += x (M, K) · W^T + b: the residual connection fused into the
 * matmul (a sum post-op, saving a pass over y). Same contract otherwise;
 * no activation. */
void mm_nn_linear_add(float *y, int ldy, const float *x, int ldx, const float *wp, const float *b,
                      int M, int K, int N);

/* c (M, N) = scale * x (M, K) · w (N, K)^T, row strides ldc, ldx, ldw,
 * neither packed (attention scores; the USE model's plain weights). One
 * oneDNN matmul in the calling thread; safe to call from pool tasks. */
void mm_nn_matmul_nt(float *c, int ldc, const float *x, int ldx, const float *w, int ldw,
                     int M, int N, int K, float scale);

/* c (M, N) = x (M, K) · w (K, N), row strides ldc, ldx, ldw (attention's
 * P V). Same contract as mm_nn_matmul_nt. */
void mm_nn_matmul_nn(float *c, int ldc, const float *x, int ldx, const float *w, int ldw,
                     int M, int N, int K);

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
 * nq == 1 sees every key). scratch holds nq*nk floats. Single-threaded;
 * heads are independent, so callers may run disjoint head ranges (offset
 * q, k, v and out by h*head_dim, heads = 1) on different threads. */
void mm_nn_attention(float *out, int ldo, const float *q, int ldq,
                     const float *k, int ldk, const float *v, int ldv,
                     int nq, int nk, int heads, int head_dim, int causal,
                     float *scratch);

/* x (n) /= max(||x||_2, 1e-12), like torch.nn.functional.normalize.
 * Accumulates in double so long vectors stay exact to f32 rounding. */
void mm_nn_l2_normalize(float *x, int n);

#endif
