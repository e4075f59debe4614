/* textops — the small numeric kernels the text encoders (model/bert.c, model/qwen3.c)
 * need beyond one GEMM: norms, activations, rotary embeddings and
 * attention over one packed sequence. f32, row-major, no allocation, no
 * I/O; every buffer and shape comes from the caller.
 *
 * Shapes are written (rows, cols); "W (N, K)" is the nn.Linear layout
 * (out_features, in_features). Dense layers and attention go through nn
 * (mmembed/nn.h: oneDNN). */
#ifndef MMEMBED_TEXTOPS_H
#define MMEMBED_TEXTOPS_H

#include <stddef.h>

/* y = x / sqrt(mean(x^2) + eps) * w over rows of N floats (RMSNorm as HF
 * Llama/Qwen compute it in f32). x rows at stride ldx, y at ldy; y may
 * equal x. */
void mm_tops_rmsnorm(float *y, int ldy, const float *x, int ldx, const float *w,
                     int M, int N, float eps);

/* SwiGLU over M rows: gu row i is [gate (N) | up (N)] (stride ldgu);
 * y row i (stride ldy) = silu(gate) * up. */
void mm_tops_swiglu(float *y, int ldy, const float *gu, int ldgu, int M, int N);

/* Rotary position embedding in HF's rotate_half convention, in place, on
 * `heads` heads of hd floats per row (row stride ld) for rows at positions
 * 0..M-1: for i < hd/2, (x_i, x_{i+hd/2}) -> (x_i c - x_{i+hd/2} s,
 * x_{i+hd/2} c + x_i s) with c = cos[pos*hd/2 + i], s = sin[...]. */
void mm_tops_rope(float *x, int ld, int M, int heads, int hd, const float *cos,
                  const float *sin);

/* Int8 rows, one f32 scale per row: the token-embedding tables of q4
 * packs (issue 20: "embedding tables may stay 8-bit"), every text tower's
 * (textcommon.c, clip.c through the pack builder in weights.c). Symmetric:
 * q[j] = round(x[j] / s) with s = max |x| / 127 (1 for a zero row);
 * returns s. */
float mm_tops_i8_quantize(signed char *q, const float *x, size_t n);

/* y[j] = q[j] * scale for j < n: a row of such a table in f32. */
void mm_tops_i8_row(float *y, const signed char *q, float scale, size_t n);

#endif
