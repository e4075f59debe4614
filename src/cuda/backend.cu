/* The CUDA backend (mmembed/backend.h): device memory, one stream, one
 * cuBLAS handle. Dense layers: the weights are converted once to f16 or
 * bf16 (or kept f32 for tf32); per call the f32 activations are rounded to
 * the same type into a scratch buffer, cuBLAS multiplies with f32
 * accumulation into the f32 output (beta = 1 for the residual add), and one
 * kernel adds the bias and applies the activation. Errors are sticky: the
 * first failure is kept and every later op is skipped. */
extern "C" {
#include "mmembed/backend.h"
#include "mmembed/common.h"
#include "mmembed/nn.h"
}
#include "backend_cuda.h"
#include "kernels.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    mm_backend_t base;
    int device;
    int kind;              /* MMK_F16, MMK_BF16, MMK_TF32 */
    cudaStream_t stream;
    cublasHandle_t blas;
    void *xh;              /* activations rounded for the GEMM, grown on demand */
    size_t xh_bytes;
    int status;            /* sticky: MM_OK until the first failure */
    char msg[256];
} cu_t;

/* A dense layer on the device: W as a column-major (N, K) matrix (the f32
 * blob's row-major (K, N) W^T), in the operand type. */
typedef struct {
    void *w;
    int N, K;
} dense_t;

static cu_t *C(mm_backend_t *be) { return (cu_t *)be; }

static void fail(cu_t *c, const char *what, const char *why)
{
    if (c->status == MM_OK) {
        c->status = MM_ERR;
        snprintf(c->msg, sizeof c->msg, "cuda:%d: %s: %s", c->device, what, why);
    }
}

/* Checks a CUDA runtime / cuBLAS result; returns nonzero on failure. */
#define CU(c, call) cu_check((c), (call), #call)
#define BL(c, call) bl_check((c), (call), #call)

static int cu_check(cu_t *c, cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return 0;
    fail(c, what, cudaGetErrorString(e));
    return 1;
}

static int bl_check(cu_t *c, cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return 0;
    fail(c, what, cublasGetStatusString(s));
    return 1;
}

/* ============================================================ memory === */

static void *cu_alloc(mm_backend_t *be, size_t bytes)
{
    void *p = NULL;
    if (C(be)->status || CU(C(be), cudaMalloc(&p, bytes ? bytes : 1)))
        return NULL;
    return p;
}

static void cu_free(mm_backend_t *be, void *p)
{
    (void)be;
    if (p)
        cudaFree(p);
}

static void *cu_host_alloc(mm_backend_t *be, size_t bytes)
{
    void *p = NULL;
    if (CU(C(be), cudaMallocHost(&p, bytes ? bytes : 1)))
        return NULL;
    return p;
}

static void cu_host_free(mm_backend_t *be, void *p)
{
    (void)be;
    if (p)
        cudaFreeHost(p);
}

static void cu_upload(mm_backend_t *be, void *dst, const void *src, size_t bytes)
{
    cu_t *c = C(be);
    if (!c->status && bytes)
        CU(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
}

static int cu_sync(mm_backend_t *be)
{
    cu_t *c = C(be);
    if (!c->status)
        CU(c, cudaStreamSynchronize(c->stream));
    return c->status;
}

static int cu_download(mm_backend_t *be, void *dst, const void *src, size_t bytes)
{
    cu_t *c = C(be);
    if (!c->status && bytes)
        CU(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    return cu_sync(be);
}

static const char *cu_error(const mm_backend_t *be)
{
    return ((const cu_t *)be)->msg;
}

/* ============================================================ weights == */

static const float *cu_constant(mm_backend_t *be, const float *host, size_t n)
{
    cu_t *c = C(be);
    float *p = (float *)cu_alloc(be, n * sizeof(float));
    if (!p || CU(c, cudaMemcpy(p, host, n * sizeof(float), cudaMemcpyHostToDevice))) {
        cu_free(be, p);
        return NULL;
    }
    return p;
}

static const void *cu_dense(mm_backend_t *be, const void *blob)
{
    cu_t *c = C(be);
    const float *wt = mm_nn_lin_f32(blob);
    if (!wt) {
        fail(c, "dense", "weights must be packed f32 (load the model with dtype f32)");
        return NULL;
    }
    dense_t *d = (dense_t *)calloc(1, sizeof(*d));
    if (!d) {
        fail(c, "dense", "out of host memory");
        return NULL;
    }
    mm_nn_lin_shape(blob, &d->N, &d->K);
    const size_t n = (size_t)d->N * d->K;
    float *f = (float *)cu_constant(be, wt, n);
    if (!f) {
        free(d);
        return NULL;
    }
    if (c->kind == MMK_TF32) {
        d->w = f;
        return d;
    }
    d->w = cu_alloc(be, n * 2);
    if (!d->w || CU(c, mmk_to_half(d->w, c->kind, f, (int)n, 1, (int)n, c->stream)) ||
        CU(c, cudaStreamSynchronize(c->stream))) {
        cu_free(be, d->w);
        cu_free(be, f);
        free(d);
        return NULL;
    }
    cu_free(be, f);
    return d;
}

static void cu_release(mm_backend_t *be, const float *p)
{
    cu_free(be, (void *)p);
}

static void cu_dense_free(mm_backend_t *be, const void *w)
{
    dense_t *d = (dense_t *)w;
    if (!d)
        return;
    cu_free(be, d->w);
    free(d);
}

/* ============================================================ ops ====== */

static void cu_linear(mm_backend_t *be, float *y, int ldy, const float *x, int ldx, const void *w, const float *b,
                      int M, int K, int N, mm_act_t act, int add)
{
    cu_t *c = C(be);
    const dense_t *d = (const dense_t *)w;
    if (c->status || M < 1)
        return;
    if (d->N != N || d->K != K) {
        fail(c, "linear", "shape does not match the weights");
        return;
    }
    const void *xin = x;
    int ldin = ldx;
    cudaDataType_t t = CUDA_R_32F;
    cublasComputeType_t ct = CUBLAS_COMPUTE_32F_FAST_TF32;
    if (c->kind != MMK_TF32) {
        const size_t need = (size_t)M * K * 2;
        if (need > c->xh_bytes) { /* grows to the largest layer once, then stays */
            cu_free(be, c->xh);
            c->xh_bytes = 0;
            if (!(c->xh = cu_alloc(be, need)))
                return;
            c->xh_bytes = need;
        }
        if (CU(c, mmk_to_half(c->xh, c->kind, x, ldx, M, K, c->stream)))
            return;
        xin = c->xh;
        ldin = K;
        t = c->kind == MMK_BF16 ? CUDA_R_16BF : CUDA_R_16F;
        ct = CUBLAS_COMPUTE_32F;
    }
    /* column-major: y^T (N, M) = W (N, K) . x^T (K, M) */
    const float alpha = 1.0f, beta = add ? 1.0f : 0.0f;
    if (BL(c, cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, N, M, K, &alpha, d->w, t, N, xin, t, ldin, &beta, y,
                           CUDA_R_32F, ldy, ct, CUBLAS_GEMM_DEFAULT)))
        return;
    if (b || act != MM_ACT_NONE)
        CU(c, mmk_bias_act(y, ldy, b, M, N, (int)act, c->stream));
}

static void cu_layer_norm(mm_backend_t *be, float *y, const float *x, const float *w, const float *b, int M, int N,
                          float eps)
{
    cu_t *c = C(be);
    if (!c->status)
        CU(c, mmk_layer_norm(y, x, w, b, M, N, eps, c->stream));
}

static void cu_attention(mm_backend_t *be, float *out, int ldo, const float *q, int ldq, const float *k, int ldk,
                         const float *v, int ldv, const mm_seqs_t *s, int heads, int head_dim, int causal)
{
    cu_t *c = C(be);
    if (!c->status)
        CU(c, mmk_attention(out, ldo, q, ldq, k, ldk, v, ldv, s->qoff, s->qlen, s->koff, s->klen, s->n, s->max_q,
                            s->max_k, heads, head_dim, causal, c->stream));
}

static void cu_gather_add(mm_backend_t *be, float *y, int ldy, const float *a, int lda, const int *ia,
                          const float *b, int ldb, const int *ib, int n, int width)
{
    cu_t *c = C(be);
    if (!c->status && n > 0)
        CU(c, mmk_gather_add(y, ldy, a, lda, ia, b, ldb, ib, n, width, c->stream));
}

static void cu_patchify(mm_backend_t *be, float *dst, const float *pixels, int n, int C_, int S, int P)
{
    cu_t *c = C(be);
    if (!c->status && n > 0)
        CU(c, mmk_patchify(dst, pixels, n, C_, S, P, c->stream));
}

static void cu_attention_gqa(mm_backend_t *be, float *out, int ldo, const float *q, int ldq, const float *k, int ldk,
                             const float *v, int ldv, const mm_seqs_t *s, int heads, int kv_heads, int head_dim,
                             int causal)
{
    cu_t *c = C(be);
    if (!c->status)
        CU(c, mmk_attention_gqa(out, ldo, q, ldq, k, ldk, v, ldv, s->qoff, s->qlen, s->n, s->max_q, heads, kv_heads,
                                head_dim, causal, c->stream));
}

static void cu_add_layer_norm(mm_backend_t *be, float *x, int ld, const float *r, int ldr, const float *w,
                              const float *b, int M, int N, float eps)
{
    cu_t *c = C(be);
    if (!c->status)
        CU(c, mmk_add_layer_norm(x, ld, r, ldr, w, b, M, N, eps, c->stream));
}

static void cu_rms_norm(mm_backend_t *be, float *y, int ldy, const float *x, int ldx, const float *w, int M,
                        int groups, int N, float eps)
{
    cu_t *c = C(be);
    if (!c->status)
        CU(c, mmk_rms_norm(y, ldy, x, ldx, w, M, groups, N, eps, c->stream));
}

static void cu_rope(mm_backend_t *be, float *x, int ld, int M, int heads, int hd, const float *cos_,
                    const float *sin_)
{
    cu_t *c = C(be);
    if (!c->status)
        CU(c, mmk_rope(x, ld, M, heads, hd, cos_, sin_, c->stream));
}

static void cu_swiglu(mm_backend_t *be, float *y, int ldy, const float *gu, int ldgu, int M, int N)
{
    cu_t *c = C(be);
    if (!c->status)
        CU(c, mmk_swiglu(y, ldy, gu, ldgu, M, N, c->stream));
}

static void cu_act(mm_backend_t *be, float *x, size_t n, int act)
{
    cu_t *c = C(be);
    if (!c->status)
        CU(c, mmk_act(x, n, act, c->stream));
}

static void cu_add(mm_backend_t *be, float *y, const float *x, size_t n)
{
    cu_t *c = C(be);
    if (!c->status)
        CU(c, mmk_add(y, x, n, c->stream));
}

static void cu_add_rows(mm_backend_t *be, float *y, int ldy, const float *a, int lda, const int *ia, int n,
                        int width)
{
    cu_t *c = C(be);
    if (!c->status)
        CU(c, mmk_add_rows(y, ldy, a, lda, ia, n, width, c->stream));
}

static void cu_mean_rows(mm_backend_t *be, float *y, int ldy, const float *x, int ldx, const mm_seqs_t *s, int width)
{
    cu_t *c = C(be);
    if (!c->status)
        CU(c, mmk_mean_rows(y, ldy, x, ldx, s->qoff, s->qlen, s->n, width, c->stream));
}

static void cu_close(mm_backend_t *be)
{
    cu_t *c = C(be);
    cudaStreamSynchronize(c->stream);
    cu_free(be, c->xh);
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    free(c);
}

static const mm_backend_ops_t cu_ops = {
    /* .name */ "cuda",          /* .close */ cu_close,
    /* .alloc */ cu_alloc,       /* .free */ cu_free,
    /* .host_alloc */ cu_host_alloc, /* .host_free */ cu_host_free,
    /* .upload */ cu_upload,     /* .download */ cu_download,
    /* .sync */ cu_sync,         /* .error */ cu_error,
    /* .constant */ cu_constant, /* .dense */ cu_dense,
    /* .release */ cu_release,   /* .dense_free */ cu_dense_free,
    /* .linear */ cu_linear,
    /* .layer_norm */ cu_layer_norm, /* .attention */ cu_attention,
    /* .gather_add */ cu_gather_add, /* .patchify */ cu_patchify,
    /* .attention_gqa */ cu_attention_gqa, /* .add_layer_norm */ cu_add_layer_norm,
    /* .rms_norm */ cu_rms_norm,  /* .rope */ cu_rope,
    /* .swiglu */ cu_swiglu,      /* .act */ cu_act,
    /* .add */ cu_add,            /* .add_rows */ cu_add_rows,
    /* .mean_rows */ cu_mean_rows,
    /* .gather_add_i8 */ NULL,   /* int8 tables are uploaded dequantized (backend.h) */
};

/* ============================================================ open ===== */

extern "C" int mm_cuda_open(int device, const char *dtype, mm_backend_t **out, char *err, size_t errlen)
{
    *out = NULL;
    int kind;
    if (!strcmp(dtype, "f16"))
        kind = MMK_F16;
    else if (!strcmp(dtype, "bf16"))
        kind = MMK_BF16;
    else if (!strcmp(dtype, "tf32"))
        kind = MMK_TF32;
    else
        return mm_errf(err, errlen, MM_E_UNSUPPORTED, "cuda dtype \"%s\": expected f16, bf16 or tf32", dtype);
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess)
        return mm_errf(err, errlen, MM_E_NOTFOUND, "cuda: %s", cudaGetErrorString(e));
    if (device >= count)
        return mm_errf(err, errlen, MM_E_NOTFOUND, "cuda:%d: only %d GPU(s)", device, count);
    cudaDeviceProp prop;
    if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess)
        return mm_errf(err, errlen, MM_ERR, "cuda:%d: %s", device, cudaGetErrorString(e));
    cu_t *c = (cu_t *)calloc(1, sizeof(*c));
    if (!c)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    c->base.ops = &cu_ops;
    c->device = device;
    c->kind = kind;
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        free(c);
        return mm_errf(err, errlen, MM_ERR, "cuda:%d: stream: %s", device, cudaGetErrorString(e));
    }
    cublasStatus_t s = cublasCreate(&c->blas);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasSetStream(c->blas, c->stream);
    /* Split-K partial sums stay f32 (never reduced in f16/bf16). For
     * diagnosis MMEMBED_CUBLAS_MATH=pedantic asks for cuBLAS's reference
     * arithmetic, =default for its plain default. */
    const char *mm = getenv("MMEMBED_CUBLAS_MATH");
    cublasMath_t math = (cublasMath_t)(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
    if (mm && !strcmp(mm, "pedantic"))
        math = CUBLAS_PEDANTIC_MATH;
    else if (mm && !strcmp(mm, "default"))
        math = CUBLAS_DEFAULT_MATH;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasSetMathMode(c->blas, math);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cudaStreamDestroy(c->stream);
        free(c);
        return mm_errf(err, errlen, MM_ERR, "cuda:%d: cublas: %s", device, cublasGetStatusString(s));
    }
    snprintf(c->base.desc, sizeof c->base.desc, "cuda:%d %.80s (sm_%d%d, %.0f GiB), %.8s", device, prop.name,
             prop.major, prop.minor, (double)prop.totalGlobalMem / (1 << 30), dtype);
    *out = &c->base;
    return MM_OK;
}
