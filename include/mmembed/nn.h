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
    MM_ACT_GELU_TANH,   /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  ("gelu_new", "gelu_pytorch_tanh") */
    MM_ACT_RELU,
    MM_ACT_SILU,        /* x * sigmoid(x) */
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

/* ---- dense-layer weights: dtypes, packing, CPU dispatch ---- */

/* What a dense layer's weights are stored and multiplied in:
 *   MM_DT_F32   f32 weights, f32 products
 *   MM_DT_BF16  bf16 weights; activations rounded to bf16 per call, f32
 *               accumulation (oneDNN brgemm: AMX or AVX512-BF16)
 *   MM_DT_Q8    int8 weights with one f32 scale per output channel;
 *               activations quantized per call to 8 bits with one scale per
 *               row (token); int32 accumulation, dequantized in f32
 *   MM_DT_Q4    4-bit weights in groups of 64 along K, one f16 scale per
 *               group (4.25 bits a weight); activations quantized per row
 *               to 8 bits; int32 per group, f32 across groups (our own
 *               kernels: AVX512-VNNI, else AVX2; src/nn/q4.c)
 * In decreasing precision; MM_DT_COUNT counts them. */
typedef enum { MM_DT_F32 = 0, MM_DT_BF16, MM_DT_Q8, MM_DT_Q4, MM_DT_COUNT } mm_dtype_t;

const char *mm_dtype_name(mm_dtype_t dt);

/* "f32" / "bf16" / "q8" / "q4" -> 0; anything else -> -1. */
int mm_dtype_parse(const char *s, mm_dtype_t *dt);

/* What the CPU can do, read once with cpuid (and capped by the MMEMBED_CPU
 * environment variable: "avx2", "avx512", "avx512_bf16" or "amx", which
 * also caps oneDNN's kernels, so a fallback path can be forced and tested
 * on any machine). */
typedef struct {
    int avx2, avx512, avx512_bf16, avx512_vnni, amx; /* usable features */
    const char *isa;    /* best of "amx", "avx512_bf16", "avx512", "avx2", "none" */
    const char *forced; /* the MMEMBED_CPU value, or NULL */
} mm_cpu_t;

/* Detects on first call (call it before any other nn function so the cap
 * reaches oneDNN first). */
const mm_cpu_t *mm_nn_cpu(void);

/* Whether dt runs natively here: bf16 on AMX or AVX512-BF16, q8 on AMX or
 * AVX512-VNNI, q4 on AVX2 (faster with AVX512-VNNI), f32 always. A
 * capability, not a policy: which dtype a model runs is the registry's
 * choice (mm_encoder_resolve_dtype). */
int mm_nn_dtype_native(mm_dtype_t dt);

/* Packed weights of one dense layer W (N, K) (nn.Linear layout), a
 * self-describing blob: a 64-byte header (dtype, shape, layout), then
 *   f32:  W transposed, a plain row-major (K, N) matrix (what oneDNN's f32
 *         matmul streams without re-laying it out);
 *   bf16: W in oneDNN's blocked layout for its brgemm kernels;
 *   q8:   int8 W in the blocked layout, N f32 scales, N int32 column sums;
 *   q4:   4-bit codes in panels of 16 columns, f16 group scales, f32
 *         column scales (src/nn/q4.c: layout and why).
 * mm_nn_lin_bytes gives the blob's size (a multiple of 64) and
 * mm_nn_lin_pack writes it from W (N, K) f32; dst must be 64-byte aligned.
 * Packing runs oneDNN reorders single-threaded (no OpenMP team is started,
 * so the master may pack and then fork). */
size_t mm_nn_lin_bytes(int N, int K, mm_dtype_t dt);
void mm_nn_lin_pack(void *dst, const float *w, int N, int K, mm_dtype_t dt);

/* Whether oneDNN can multiply dtype dt on this CPU (as capped); packing
 * and running an unsupported dtype is a programming error (abort). */
int mm_nn_lin_supported(mm_dtype_t dt);

/* The dtype a packed blob holds. */
mm_dtype_t mm_nn_lin_dtype(const void *wp);

/* A packed blob's shape: W (*N, *K). */
void mm_nn_lin_shape(const void *wp, int *N, int *K);

/* An f32 blob's weights, W transposed: a row-major (K, N) matrix (what a
 * GPU backend uploads); NULL for any other dtype. */
const float *mm_nn_lin_f32(const void *wp);

/* y (M, N) = act(x (M, K) · W^T + b), W packed (above) in any dtype, b (N)
 * or NULL. ldx / ldy are row strides in floats (>= K, >= N); y must not
 * alias x. f32: one oneDNN matmul with bias and activation fused. bf16/q8:
 * x is converted once per call, rows run in chunks of at most 64 through
 * primitives made once per (shape, chunk rows), then bias, activation and
 * the residual add are applied in f32 (or fused when the output is dense
 * and unsplit). Threads split the columns, so a result does not depend on
 * the thread count. oneDNN picks its blocking by M, so a row's result may
 * differ with M (batching) in the last bits (relative ~1e-7 in f32), not
 * more. Parallel (the pool); not to be called from inside an mm_nn_parallel
 * task. */
void mm_nn_linear(float *y, int ldy, const float *x, int ldx, const void *wp, const float *b,
                  int M, int K, int N, mm_act_t act);

/* y (M, N) += x (M, K) · W^T + b: the residual connection fused into the
 * matmul (a sum post-op, saving a pass over y). Same contract otherwise;
 * no activation. */
void mm_nn_linear_add(float *y, int ldy, const float *x, int ldx, const void *wp, const float *b,
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

/* y[j] = act(acc[j] + b[j]) (+ y[j] when add) for one row of n floats; b
 * may be NULL; acc may equal y only without add. The epilogue of the bf16
 * and q8 dense layers. */
void mm_nn_bias_act_row(float *y, const float *acc, const float *b, int n, mm_act_t act, int add);

/* In place, elementwise: x[i] = act(x[i]) for n floats. */
void mm_nn_act(float *x, size_t n, mm_act_t act);

/* y[i] += x[i] for n floats (residual connection). */
void mm_nn_add(float *y, const float *x, size_t n);

/* Layer norm over the last dimension: for each of M rows of N floats,
 * y = (x - mean) / sqrt(var + eps) * w + b (biased variance, like PyTorch).
 * y may equal x (in place). */
void mm_nn_layer_norm(float *y, const float *x, const float *w, const float *b,
                      int M, int N, float eps);

/* In place, rows of N floats at stride ld: x = LayerNorm(x + r) * w + b
 * (a residual add and the norm in one pass, x keeping the norm's output).
 * r (M, N) at stride ldr may be NULL (a plain LayerNorm in place). Both
 * layer norms are one kernel: mean and variance summed in double. */
void mm_nn_add_layer_norm(float *x, int ld, const float *r, int ldr, const float *w, const float *b, int M, int N,
                          float eps);

/* In place numerically stable softmax of the first n floats of x. */
void mm_nn_softmax(float *x, int n);

/* Query rows per block in the attention kernels: their score scratch is
 * MM_NN_ATT_QBLOCK x nk floats (or nq x nk when nq is smaller). */
#define MM_NN_ATT_QBLOCK 64

/* Scaled dot-product attention of ONE head over ONE sequence:
 *   out (nq, head_dim) = softmax(q k^T * scale [+ mask]) v
 *   q (nq, head_dim) row stride ldq; k, v (nk, head_dim) strides ldk, ldv;
 *   out row stride ldo, must not alias q, k or v.
 * With causal != 0 the queries are the LAST nq positions of the sequence:
 * query i sees keys j <= i + (nk - nq) (nq == nk is the usual
 * lower-triangular mask, nq == 1 sees every key). scratch holds
 * min(nq, MM_NN_ATT_QBLOCK) * nk floats. Single-threaded: callers run
 * (sequence, head) units on the nn pool. */
void mm_nn_attention_head(float *out, int ldo, const float *q, int ldq, const float *k, int ldk, const float *v,
                          int ldv, int nq, int nk, int head_dim, float scale, int causal, float *scratch);

/* The same for `heads` heads side by side (rows of heads*head_dim), scale
 * 1/sqrt(head_dim). */
void mm_nn_attention(float *out, int ldo, const float *q, int ldq,
                     const float *k, int ldk, const float *v, int ldv,
                     int nq, int nk, int heads, int head_dim, int causal,
                     float *scratch);

/* x (n) /= max(||x||_2, 1e-12), like torch.nn.functional.normalize.
 * Accumulates in double so long vectors stay exact to f32 rounding. */
void mm_nn_l2_normalize(float *x, int n);

#endif
