/* textops — the small numeric kernels the text encoders (model/bert.c, model/qwen3.c)
 * need beyond one GEMM: norms, activations, rotary embeddings and
 * attention over one packed sequence. f32, row-major, no allocation, no
 * I/O; every buffer and shape comes from the caller.
 *
 * Shapes are written (rows, cols); "W (N, K)" is the nn.Linear layout
 * (out_features, in_features). Dense layers go through nn's oneDNN linear
 * (mmembed/nn.h); only the small GEMMs inside mm_tops_attention use
 * OpenBLAS. */
#ifndef MMEMBED_TEXTOPS_H
#define MMEMBED_TEXTOPS_H

#include <stddef.h>

/* Query rows per block in mm_tops_attention: the score scratch it needs is
 * MM_TOPS_QBLOCK x (longest sequence) floats. */
#define MM_TOPS_QBLOCK 64

/* In place, rows of N floats at stride ld: x = LayerNorm(x + r) * w + b
 * (biased variance, eps inside the root, like torch.nn.LayerNorm). r (M, N)
 * at stride ldr may be NULL (plain LayerNorm). */
void mm_tops_add_layernorm(float *x, int ld, const float *r, int ldr, const float *w,
                           const float *b, int M, int N, float eps);

/* y = x / sqrt(mean(x^2) + eps) * w over rows of N floats (RMSNorm as HF
 * Llama/Qwen compute it in f32). x rows at stride ldx, y at ldy; y may
 * equal x. */
void mm_tops_rmsnorm(float *y, int ldy, const float *x, int ldx, const float *w,
                     int M, int N, float eps);

typedef enum {
    MM_TOPS_GELU = 1,   /* 0.5 x (1 + erf(x / sqrt 2))        HF "gelu" */
    MM_TOPS_GELU_TANH,  /* tanh approximation    "gelu_new", "gelu_pytorch_tanh" */
    MM_TOPS_RELU,
    MM_TOPS_SILU,
} mm_tops_act_t;

/* In place, n floats. */
void mm_tops_act(float *x, size_t n, mm_tops_act_t act);

/* SwiGLU over M rows: gu row i is [gate (N) | up (N)] (stride ldgu);
 * y row i (stride ldy) = silu(gate) * up. */
void mm_tops_swiglu(float *y, int ldy, const float *gu, int ldgu, int M, int N);

/* Rotary position embedding in HF's rotate_half convention, in place, on
 * `heads` heads of hd floats per row (row stride ld) for rows at positions
 * 0..M-1: for i < hd/2, (x_i, x_{i+hd/2}) -> (x_i c - x_{i+hd/2} s,
 * x_{i+hd/2} c + x_i s) with c = cos[pos*hd/2 + i], s = sin[...]. */
void mm_tops_rope(float *x, int ld, int M, int heads, int hd, const float *cos,
                  const float *sin);

/* Scaled dot-product attention of ONE head over ONE sequence of L tokens:
 *   o (L, hd) = softmax(q k^T * scale + mask) v
 * q, k, v, o are (L, hd) views with row strides ldq, ldk, ldv, ldo (heads
 * of a packed QKV buffer). causal != 0 lets row i see keys 0..i only;
 * otherwise every key (the caller packs sequences, so there is no padding).
 * scores: MM_TOPS_QBLOCK * L floats of scratch. o must not alias q, k, v. */
void mm_tops_attention(float *o, int ldo, const float *q, int ldq, const float *k, int ldk,
                       const float *v, int ldv, int L, int hd, float scale, int causal,
                       float *scores);

#endif
