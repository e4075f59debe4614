/* backend — where tensors live and the ops a forward pass queues on them,
 * behind one table of function pointers (in the spirit of ggml's
 * ggml_backend_i), so a model's forward reads the same on every device.
 *
 *   cpu   src/nn/backend.c: host memory; every op is the nn kernel the
 *         CPU forward calls (oneDNN dense layers on the packed blobs, the
 *         nn attention per sequence and head on the thread pool), so a
 *         forward over this backend gives the CPU path's bits.
 *   cuda  src/cuda/ (built with `make GPU=1`): device memory, one stream;
 *         dense layers through cuBLAS (f16 or bf16 operands with f32
 *         accumulation, or tf32), our kernels for the rest. Activations stay
 *         f32 between ops.
 *
 * Memory: `alloc` gives backend memory (device memory on a GPU) that ops
 * read and write; pointer arithmetic on it is fine (float offsets), but the
 * host may only touch it through upload / download. Weights enter once
 * through `constant` (plain f32 tensors) and `dense` (a layer packed by
 * mm_nn_lin_pack); on the CPU both hand back the host memory itself.
 *
 * Ordering and errors: ops are queued in call order and may run after the
 * call returns; `download` waits for everything queued before it. Ops
 * return nothing: the first failure is kept (sticky) and reported by the
 * next `download` or `sync` (negative MM_E_*; `error` says why), after
 * which the backend stays failed. Host memory passed to `upload` must stay
 * unchanged until the next download or sync returns (it may be copied
 * asynchronously from pinned `host_alloc` memory).
 *
 * A backend is used by one thread at a time. */
#ifndef MMEMBED_BACKEND_H
#define MMEMBED_BACKEND_H

#include <stddef.h>

#include "mmembed/nn.h"      /* mm_act_t */

typedef struct mm_backend mm_backend_t;

/* Packed sequences for attention, every array in backend memory, n
 * entries: sequence s has queries at rows qoff[s] .. qoff[s]+qlen[s]-1 and
 * keys/values at rows koff[s] .. koff[s]+klen[s]-1. max_q / max_k bound
 * qlen / klen (the host knows them; a GPU sizes its launch by them). */
typedef struct {
    const int *qoff, *qlen, *koff, *klen;
    int n, max_q, max_k;
} mm_seqs_t;

typedef struct {
    const char *name; /* "cpu", "cuda" */
    void (*close)(mm_backend_t *be);

    /* ---- memory ---- */
    void *(*alloc)(mm_backend_t *be, size_t bytes);          /* NULL when out of memory */
    void (*free)(mm_backend_t *be, void *p);                  /* NULL is fine */
    void *(*host_alloc)(mm_backend_t *be, size_t bytes);     /* host memory fastest to upload from */
    void (*host_free)(mm_backend_t *be, void *p);
    void (*upload)(mm_backend_t *be, void *dst, const void *src, size_t bytes);
    int (*download)(mm_backend_t *be, void *dst, const void *src, size_t bytes); /* waits; status */
    int (*sync)(mm_backend_t *be);                                               /* waits; status */
    const char *(*error)(const mm_backend_t *be);  /* the sticky error's text, "" when none */

    /* ---- weights (process lifetime) ---- */
    /* A read-only f32 tensor: the backend's copy, or host itself on the CPU. */
    const float *(*constant)(mm_backend_t *be, const float *host, size_t n);
    /* A dense layer W (N, K) packed by mm_nn_lin_pack, as the handle that
     * `linear` takes. GPUs read f32 blobs only (MM_DT_F32). NULL on failure. */
    const void *(*dense)(mm_backend_t *be, const void *blob);
    /* Free what constant / dense returned (no-ops on the CPU); NULL is fine. */
    void (*release)(mm_backend_t *be, const float *p);
    void (*dense_free)(mm_backend_t *be, const void *w);

    /* ---- ops (all pointers in backend memory, row strides in floats) ---- */
    /* y (M, N) = act(x (M, K) W^T + b), or with add: y += x W^T + b (act
     * NONE). b (N) may be NULL; y must not alias x. */
    void (*linear)(mm_backend_t *be, float *y, int ldy, const float *x, int ldx, const void *w,
                   const float *b, int M, int K, int N, mm_act_t act, int add);
    /* y (M, N) = layer_norm(x) * w + b over each row; y may equal x. */
    void (*layer_norm)(mm_backend_t *be, float *y, const float *x, const float *w, const float *b,
                       int M, int N, float eps);
    /* Scaled dot-product attention of `heads` heads of head_dim each over
     * packed sequences (no padding); q, k, v, out are (rows, heads*head_dim)
     * at strides ldq, ldk, ldv, ldo; out rows follow the query rows. With
     * causal, query i of a sequence sees keys j <= i + klen - qlen. */
    void (*attention)(mm_backend_t *be, float *out, int ldo, const float *q, int ldq, const float *k,
                      int ldk, const float *v, int ldv, const mm_seqs_t *s, int heads, int head_dim,
                      int causal);
    /* y[r] = a[ia[r]] (+ b[ib[r]] when b) for rows r < n, each `width`
     * floats: embedding lookups with positions, gathering pooled rows.
     * ia, ib in backend memory. */
    void (*gather_add)(mm_backend_t *be, float *y, int ldy, const float *a, int lda, const int *ia,
                       const float *b, int ldb, const int *ib, int n, int width);
    /* im2col of n CHW images (channels, size, size) into patches of
     * patch x patch: row b*G*G + gy*G + gx (G = size / patch) holds that
     * patch flattened (c, ky, kx), the layout of a conv weight read as a
     * dense layer. */
    void (*patchify)(mm_backend_t *be, float *dst, const float *pixels, int n, int channels, int size,
                     int patch);

    /* ---- the ops BERT, Qwen3 and Qwen2-VL add (bert.c, qwen3.c, qwen2vl.c) ---- */
    /* Attention with grouped key/value heads, queries in blocks (no
     * (queries x keys) scratch: any sequence length): query head h reads
     * key/value head h / (heads / kv_heads); every sequence has qlen ==
     * klen (full self-attention over its rows); causal: query i sees keys
     * j <= i. Scores scaled by 1 / sqrt(head_dim). */
    void (*attention_gqa)(mm_backend_t *be, float *out, int ldo, const float *q, int ldq, const float *k,
                          int ldk, const float *v, int ldv, const mm_seqs_t *s, int heads, int kv_heads,
                          int head_dim, int causal);
    /* In place, rows of N at stride ld: x = LayerNorm(x + r) * w + b (r
     * (M, N) at stride ldr, or NULL: plain LayerNorm). BERT's post-LN. */
    void (*add_layer_norm)(mm_backend_t *be, float *x, int ld, const float *r, int ldr, const float *w,
                           const float *b, int M, int N, float eps);
    /* RMSNorm: y = x / sqrt(mean(x^2) + eps) * w over each of `groups`
     * consecutive runs of N floats of each of M rows (row strides ldx, ldy;
     * groups > 1: one norm per head, Qwen3's q_norm / k_norm); y may
     * equal x. */
    void (*rms_norm)(mm_backend_t *be, float *y, int ldy, const float *x, int ldx, const float *w, int M,
                     int groups, int N, float eps);
    /* Rotary positions (rotate_half), in place on the first `heads` heads of
     * head_dim floats of each of M rows (stride ld): row t uses cos / sin
     * row t (M, head_dim / 2) — the caller builds those rows (1-D, M-RoPE
     * or 2-D vision positions alike). */
    void (*rope)(mm_backend_t *be, float *x, int ld, int M, int heads, int head_dim, const float *cos,
                 const float *sin);
    /* y (M, N) = silu(gu[:, 0:N]) * gu[:, N:2N] (SwiGLU; strides ldy, ldgu). */
    void (*swiglu)(mm_backend_t *be, float *y, int ldy, const float *gu, int ldgu, int M, int N);
    /* x[i] = act(x[i]) for n floats; act is an mm_act_t (mmembed/nn.h). */
    void (*act)(mm_backend_t *be, float *x, size_t n, int act);
    /* y[i] += x[i] for n floats (a residual connection). */
    void (*add)(mm_backend_t *be, float *y, const float *x, size_t n);
    /* y[r] += a[ia[r]] for rows r < n of `width` floats (ia NULL: a's row 0
     * for every r, a broadcast bias); ia in backend memory. */
    void (*add_rows)(mm_backend_t *be, float *y, int ldy, const float *a, int lda, const int *ia, int n,
                     int width);
    /* y[s] (width) = mean of x's rows qoff[s] .. qoff[s] + qlen[s] - 1,
     * accumulated in double, for s < n (mean pooling). */
    void (*mean_rows)(mm_backend_t *be, float *y, int ldy, const float *x, int ldx, const mm_seqs_t *s,
                      int width);

    /* ---- q4 packs (clip.c) ---- */
    /* gather_add from an int8 table: y[r] = a[ia[r]] * scale[ia[r]] (+
     * b[ib[r]] when b), a's rows int8 at stride lda bytes, one f32 scale a
     * row (mm_tops_i8_row's bits: the token tables of q4 packs, which stay
     * 8-bit). a and scale are the pack's host memory, so only host-memory
     * backends have this op; it is NULL on the others (CUDA), whose
     * `constant` takes f32: callers upload such a table dequantized and
     * gather_add from it, which gives the same bits. */
    void (*gather_add_i8)(mm_backend_t *be, float *y, int ldy, const signed char *a, const float *scale, int lda,
                          const int *ia, const float *b, int ldb, const int *ib, int n, int width);
} mm_backend_ops_t;

struct mm_backend {
    const mm_backend_ops_t *ops;
    int host_memory;  /* 1: backend memory is host memory (the CPU): the host may fill it in place, and
                       * upload from a buffer to itself is free */
    char desc[160]; /* for logs: "cpu (8 threads)", "cuda:0 NVIDIA H100 80GB HBM3, f16" */
};

/* Opens a backend by device name: "cpu", "cuda" or "cuda:N". `threads` is
 * the CPU backend's nn pool size; `dtype` the GPU's dense-layer operands,
 * "f16" (default when NULL), "bf16" or "tf32". Returns MM_OK and *out, or
 * MM_E_UNSUPPORTED (a GPU in a build without `make GPU=1`, an unknown name
 * or dtype), MM_E_NOTFOUND (no such GPU), MM_ERR (driver or library
 * failure), with err set. */
int mm_backend_open(const char *device, int threads, const char *dtype, mm_backend_t **out, char *err,
                    size_t errlen);

/* Closes a backend (NULL is fine); free everything allocated on it first. */
void mm_backend_close(mm_backend_t *be);

#endif
