/* q4 dense layers (src/nn only): group-wise 4-bit weights, our own kernels
 * behind mm_nn_linear (oneDNN 2.6 has no int4 weights). matmul.c owns the
 * blob header and calls these for blobs of dtype MM_DT_Q4. */
#ifndef MMEMBED_NN_Q4_H
#define MMEMBED_NN_Q4_H

#include <stddef.h>

#include "mmembed/nn.h"

#define MM_Q4_GROUP 64 /* weights per scale, along K */
#define MM_Q4_COLS 16  /* output columns per panel (one zmm of int32) */

/* The q4 part of a blob: where its three arrays start (byte offsets from
 * the blob's start, each 64-byte aligned) and the blob's total size. */
typedef struct {
    size_t data;   /* (Np/16, G, 8, 64) u8: two 4-bit codes per byte (below) */
    size_t gscale; /* (Np/16, G, 16) s8: group step / column scale */
    size_t cscale; /* (Np) f32: column scale */
    size_t end;
} mm_q4_layout_t;

/* Offsets for W (N, K) after a header of hdr bytes. */
void mm_nn_q4_layout(int N, int K, size_t hdr, mm_q4_layout_t *l);

/* Quantizes W (N, K) f32 into the arrays of blob (laid out by l). */
void mm_nn_q4_pack(void *blob, const mm_q4_layout_t *l, const float *w, int N, int K);

/* y (M, N) = act(x (M, K) . W^T + b) (+ y with add), W the q4 arrays of
 * blob; the mm_nn_linear contract (threads through mm_nn_parallel). */
void mm_nn_q4_linear(float *y, int ldy, const float *x, int ldx, const void *blob, const mm_q4_layout_t *l,
                     const float *b, int M, int K, int N, mm_act_t act, int add);

/* Frees the calling thread's q4 scratch (matmul.c's thread-exit hook). */
void mm_nn_q4_thread_free(void);
/* matmul.c: make sure the calling thread's nn scratch (oneDNN bindings,
 * q4 scratch) is freed when it exits (a pool helper stopped by
 * mm_nn_set_threads). Cheap to call again. */
void mm_nn_thread_exit_arm(void);

#endif
