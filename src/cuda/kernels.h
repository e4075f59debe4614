/* Our CUDA kernels (src/cuda/kernels.cu): everything the forwards (CLIP,
 * BERT, Qwen3, Qwen2-VL) need besides the matrix products, which are
 * cuBLAS's. Every launcher queues
 * on `st` and returns the launch's status. Activations are f32. */
#ifndef MMEMBED_CUDA_KERNELS_H
#define MMEMBED_CUDA_KERNELS_H

#include <cuda_runtime.h>

/* Operand types of the dense layers. */
enum { MMK_F16 = 0, MMK_BF16 = 1, MMK_TF32 = 2 };

/* dst (M, K) dense, f16 or bf16 (kind) = x (M, K) at row stride ldx,
 * rounded to nearest even. */
cudaError_t mmk_to_half(void *dst, int kind, const float *x, int ldx, int M, int K, cudaStream_t st);

/* y (M, N) = act(y + b): b (N) may be NULL; act is an mm_act_t. */
cudaError_t mmk_bias_act(float *y, int ldy, const float *b, int M, int N, int act, cudaStream_t st);

/* mm_backend_ops_t.layer_norm: one warp per row, two-pass variance. */
cudaError_t mmk_layer_norm(float *y, const float *x, const float *w, const float *b, int M, int N, float eps,
                           cudaStream_t st);

/* mm_backend_ops_t.attention: one block per (sequence, head, 16 queries);
 * the sequence's keys and values of that head sit in shared memory (so
 * max_k * (2 * head_dim + 1) floats must fit the device's limit). */
cudaError_t mmk_attention(float *out, int ldo, const float *q, int ldq, const float *k, int ldk, const float *v,
                          int ldv, const int *qoff, const int *qlen, const int *koff, const int *klen, int n,
                          int max_q, int max_k, int heads, int head_dim, int causal, cudaStream_t st);

/* mm_backend_ops_t.gather_add. */
cudaError_t mmk_gather_add(float *y, int ldy, const float *a, int lda, const int *ia, const float *b, int ldb,
                           const int *ib, int n, int width, cudaStream_t st);

/* mm_backend_ops_t.patchify. */
cudaError_t mmk_patchify(float *dst, const float *pixels, int n, int C, int S, int P, cudaStream_t st);

/* mm_backend_ops_t.attention_gqa: flash-style, keys in tiles of 32 through
 * shared memory (any sequence length), online softmax; head_dim <= 128
 * (cudaErrorInvalidValue otherwise). Sequences have qlen == klen. */
cudaError_t mmk_attention_gqa(float *out, int ldo, const float *q, int ldq, const float *k, int ldk, const float *v,
                              int ldv, const int *qoff, const int *qlen, int n, int max_q, int heads, int kv_heads,
                              int head_dim, int causal, cudaStream_t st);

/* The rest of mm_backend_ops_t's text-model ops (backend.h has the contracts). */
cudaError_t mmk_add_layer_norm(float *x, int ld, const float *r, int ldr, const float *w, const float *b, int M, int N,
                               float eps, cudaStream_t st);
cudaError_t mmk_rms_norm(float *y, int ldy, const float *x, int ldx, const float *w, int M, int groups, int N,
                         float eps, cudaStream_t st);
cudaError_t mmk_rope(float *x, int ld, int M, int heads, int hd, const float *cos_, const float *sin_, cudaStream_t st);
cudaError_t mmk_swiglu(float *y, int ldy, const float *gu, int ldgu, int M, int N, cudaStream_t st);
cudaError_t mmk_act(float *x, size_t n, int act, cudaStream_t st);
cudaError_t mmk_add(float *y, const float *x, size_t n, cudaStream_t st);
cudaError_t mmk_add_rows(float *y, int ldy, const float *a, int lda, const int *ia, int n, int width, cudaStream_t st);
cudaError_t mmk_mean_rows(float *y, int ldy, const float *x, int ldx, const int *qoff, const int *qlen, int n,
                          int width, cudaStream_t st);

#endif
