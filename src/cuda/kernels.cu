/* CUDA kernels of the backend (kernels.h): conversions, the dense layers'
 * epilogue, layer norm, attention over packed sequences, row gathers and
 * im2col. Plain f32 arithmetic, in the order of the nn CPU kernels where
 * that is cheap (two-pass variance, max-subtracted softmax). */
#include "kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#define ACT_NONE 0       /* mm_act_t, mmembed/nn.h */
#define ACT_QUICK_GELU 1
#define ACT_GELU 2
#define ACT_GELU_TANH 3
#define ACT_RELU 4
#define ACT_SILU 5

/* Grid-stride launches: enough blocks to fill the GPU, no more. */
static unsigned blocks_for(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : (b > 4096 ? 4096 : b));
}

/* ============================================================ elementwise */

template <typename T> __device__ T from_f32(float x);
template <> __device__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <typename T>
__global__ void to_half_kernel(T *dst, const float *x, int ldx, int M, int K)
{
    const size_t n = (size_t)M * K;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / K, c = i - r * K;
        dst[i] = from_f32<T>(x[r * ldx + c]);
    }
}

cudaError_t mmk_to_half(void *dst, int kind, const float *x, int ldx, int M, int K, cudaStream_t st)
{
    const size_t n = (size_t)M * K;
    if (kind == MMK_BF16)
        to_half_kernel<<<blocks_for(n, 256), 256, 0, st>>>((__nv_bfloat16 *)dst, x, ldx, M, K);
    else
        to_half_kernel<<<blocks_for(n, 256), 256, 0, st>>>((__half *)dst, x, ldx, M, K);
    return cudaGetLastError();
}

__device__ __forceinline__ float act_f(float x, int act)
{
    switch (act) {
    case ACT_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
    case ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case ACT_GELU_TANH: return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case ACT_RELU: return x > 0.0f ? x : 0.0f;
    case ACT_SILU: return x / (1.0f + expf(-x));
    default: return x;
    }
}

__global__ void bias_act_kernel(float *y, int ldy, const float *b, int M, int N, int act)
{
    const size_t n = (size_t)M * N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / N, c = i - r * N;
        float *p = y + r * ldy + c;
        *p = act_f(*p + (b ? b[c] : 0.0f), act);
    }
}

cudaError_t mmk_bias_act(float *y, int ldy, const float *b, int M, int N, int act, cudaStream_t st)
{
    const size_t n = (size_t)M * N;
    bias_act_kernel<<<blocks_for(n, 256), 256, 0, st>>>(y, ldy, b, M, N, act);
    return cudaGetLastError();
}

__global__ void gather_add_kernel(float *y, int ldy, const float *a, int lda, const int *ia, const float *b,
                                  int ldb, const int *ib, int n, int width)
{
    const size_t total = (size_t)n * width;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / width, c = i - r * width;
        float v = a[(size_t)ia[r] * lda + c];
        if (b)
            v += b[(size_t)ib[r] * ldb + c];
        y[r * ldy + c] = v;
    }
}

cudaError_t mmk_gather_add(float *y, int ldy, const float *a, int lda, const int *ia, const float *b, int ldb,
                           const int *ib, int n, int width, cudaStream_t st)
{
    const size_t total = (size_t)n * width;
    gather_add_kernel<<<blocks_for(total, 256), 256, 0, st>>>(y, ldy, a, lda, ia, b, ldb, ib, n, width);
    return cudaGetLastError();
}

__global__ void patchify_kernel(float *dst, const float *pixels, int n, int C, int S, int P)
{
    const int G = S / P, PP = P * P;
    const size_t K = (size_t)C * PP, total = (size_t)n * G * G * K;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / K;
        const int e = (int)(i - r * K);
        const int b = (int)(r / ((size_t)G * G)), g = (int)(r % ((size_t)G * G)), gy = g / G, gx = g % G;
        const int ch = e / PP, rem = e % PP, ky = rem / P, kx = rem % P;
        dst[i] = pixels[(size_t)b * C * S * S + ((size_t)ch * S + (size_t)gy * P + ky) * S + (size_t)gx * P + kx];
    }
}

cudaError_t mmk_patchify(float *dst, const float *pixels, int n, int C, int S, int P, cudaStream_t st)
{
    const size_t total = (size_t)n * C * S * S;
    patchify_kernel<<<blocks_for(total, 256), 256, 0, st>>>(dst, pixels, n, C, S, P);
    return cudaGetLastError();
}

/* ============================================================ layer norm */

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#define LN_ROWS 8 /* rows (warps) per block */

/* Layer norm, a warp per row, with or without a residual: with r, t = x + r
 * is written into y first (each lane its own columns, which it alone reads
 * back), then the two-pass statistics of t; y may equal x. The one kernel
 * behind both backend ops (layer_norm, add_layer_norm), as on the CPU. */
__global__ void layer_norm_kernel(float *y, int ldy, const float *x, int ldx, const float *r, int ldr, const float *w,
                                  const float *b, int M, int N, float eps)
{
    const int row = blockIdx.x * LN_ROWS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= M)
        return;
    const float *xr = x + (size_t)row * ldx;
    float *yr = y + (size_t)row * ldy;
    float s = 0.0f;
    for (int j = lane; j < N; j += 32) {
        float t = xr[j];
        if (r)
            yr[j] = t = t + r[(size_t)row * ldr + j];
        s += t;
    }
    const float *tr = r ? yr : xr;
    const float mean = warp_sum(s) / (float)N;
    float v = 0.0f;
    for (int j = lane; j < N; j += 32) {
        const float d = tr[j] - mean;
        v += d * d;
    }
    const float rstd = 1.0f / sqrtf(warp_sum(v) / (float)N + eps);
    for (int j = lane; j < N; j += 32)
        yr[j] = (tr[j] - mean) * rstd * w[j] + b[j];
}

static cudaError_t layer_norm_launch(float *y, int ldy, const float *x, int ldx, const float *r, int ldr,
                                     const float *w, const float *b, int M, int N, float eps, cudaStream_t st)
{
    if (M < 1)
        return cudaSuccess;
    layer_norm_kernel<<<(M + LN_ROWS - 1) / LN_ROWS, 32 * LN_ROWS, 0, st>>>(y, ldy, x, ldx, r, ldr, w, b, M, N, eps);
    return cudaGetLastError();
}

cudaError_t mmk_layer_norm(float *y, const float *x, const float *w, const float *b, int M, int N, float eps,
                           cudaStream_t st)
{
    return layer_norm_launch(y, N, x, N, NULL, 0, w, b, M, N, eps, st);
}

cudaError_t mmk_add_layer_norm(float *x, int ld, const float *r, int ldr, const float *w, const float *b, int M, int N,
                               float eps, cudaStream_t st)
{
    return layer_norm_launch(x, ld, x, ld, r, ldr, w, b, M, N, eps, st);
}

/* ============================================================ attention */

#define AW 4  /* warps per block */
#define AQ 16 /* queries per block */

/* Block (sequence s, head h, queries AQ*blockIdx.y ..): K and V of (s, h)
 * into shared memory (K rows padded to head_dim + 1 floats so lanes that
 * read different keys hit different banks), then one warp per query: lane
 * j scores keys j, j+32, ..; softmax over the warp; lane d sums dims d,
 * d+32, .. of P V. */
__global__ void attention_kernel(float *out, int ldo, const float *q, int ldq, const float *k, int ldk,
                                 const float *v, int ldv, const int *qoff, const int *qlen, const int *koff,
                                 const int *klen, int heads, int hd, int max_k, int causal, float scale)
{
    extern __shared__ float sm[];
    const int s = blockIdx.x / heads, h = blockIdx.x % heads;
    const int nq = qlen[s], nk = klen[s], q0 = blockIdx.y * AQ;
    if (q0 >= nq)
        return;
    float *Ks = sm, *Vs = Ks + (size_t)max_k * (hd + 1), *qs = Vs + (size_t)max_k * hd, *ps = qs + AW * hd;
    const int ko = koff[s], c = h * hd;
    for (int idx = threadIdx.x; idx < nk * hd; idx += blockDim.x) {
        const int j = idx / hd, d = idx - j * hd;
        Ks[j * (hd + 1) + d] = k[(size_t)(ko + j) * ldk + c + d];
        Vs[j * hd + d] = v[(size_t)(ko + j) * ldv + c + d];
    }
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *qw = qs + warp * hd, *pw = ps + (size_t)warp * max_k;
    const int qend = min(q0 + AQ, nq);
    for (int i = q0 + warp; i < qend; i += AW) {
        const size_t qrow = (size_t)(qoff[s] + i);
        for (int d = lane; d < hd; d += 32)
            qw[d] = q[qrow * ldq + c + d];
        __syncwarp();
        const int nvis = causal ? min(nk, i + nk - nq + 1) : nk;
        float m = -INFINITY;
        for (int j = lane; j < nvis; j += 32) {
            const float *kr = Ks + j * (hd + 1);
            float acc = 0.0f;
            for (int d = 0; d < hd; d++)
                acc = fmaf(qw[d], kr[d], acc);
            acc *= scale;
            pw[j] = acc;
            m = fmaxf(m, acc);
        }
        m = warp_max(m);
        float sum = 0.0f;
        for (int j = lane; j < nvis; j += 32) {
            const float e = expf(pw[j] - m);
            pw[j] = e;
            sum += e;
        }
        sum = warp_sum(sum);
        __syncwarp();
        const float inv = 1.0f / sum;
        for (int d = lane; d < hd; d += 32) {
            float acc = 0.0f;
            for (int j = 0; j < nvis; j++)
                acc = fmaf(pw[j], Vs[j * hd + d], acc);
            out[qrow * ldo + c + d] = acc * inv;
        }
        __syncwarp();
    }
}

cudaError_t mmk_attention(float *out, int ldo, const float *q, int ldq, const float *k, int ldk, const float *v,
                          int ldv, const int *qoff, const int *qlen, const int *koff, const int *klen, int n,
                          int max_q, int max_k, int heads, int head_dim, int causal, cudaStream_t st)
{
    if (n < 1 || max_q < 1)
        return cudaSuccess;
    const size_t smem = ((size_t)max_k * (2 * head_dim + 1) + AW * head_dim + (size_t)AW * max_k) * sizeof(float);
    static size_t smem_set = 48 * 1024; /* what a launch gets without opting in */
    if (smem > smem_set) {
        cudaError_t e = cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e != cudaSuccess)
            return e;
        smem_set = smem;
    }
    dim3 grid((unsigned)(n * heads), (unsigned)((max_q + AQ - 1) / AQ));
    attention_kernel<<<grid, 32 * AW, smem, st>>>(out, ldo, q, ldq, k, ldk, v, ldv, qoff, qlen, koff, klen, heads,
                                                  head_dim, max_k, causal, 1.0f / sqrtf((float)head_dim));
    return cudaGetLastError();
}

/* ============================================================ text models */

/* attention_gqa: flash-style. Block (sequence s, head h, GQ_W * GQ_Q
 * queries): keys and values stream through shared memory in tiles of GQ_K
 * rows (so any sequence length fits); each warp keeps GQ_Q queries' running
 * max, sum and output (head_dim / 32 floats per lane) and rescales them per
 * tile (online softmax). Query head h reads key/value head h / group. */
#define GQ_W 4    /* warps per block */
#define GQ_Q 4    /* queries per warp */
#define GQ_K 32   /* keys per tile: one per lane */
#define GQ_D 4    /* head_dim / 32, at most (head_dim <= 128) */

__global__ void attention_gqa_kernel(float *out, int ldo, const float *q, int ldq, const float *k, int ldk,
                                     const float *v, int ldv, const int *qoff, const int *qlen, int heads, int group,
                                     int hd, int causal, float scale)
{
    __shared__ float Ks[GQ_K][GQ_D * 32 + 1];
    __shared__ float Vs[GQ_K][GQ_D * 32];
    __shared__ float Qs[GQ_W][GQ_Q][GQ_D * 32];
    const int s = blockIdx.x / heads, h = blockIdx.x % heads, kvh = h / group;
    const int n = qlen[s], o0 = qoff[s], qb = blockIdx.y * GQ_W * GQ_Q;
    if (qb >= n)
        return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int qw = qb + warp * GQ_Q;   /* this warp's first query */
    for (int i = 0; i < GQ_Q; i++)
        for (int d = lane; d < hd; d += 32)
            Qs[warp][i][d] = qw + i < n ? q[(size_t)(o0 + qw + i) * ldq + h * hd + d] * scale : 0.0f;
    float m[GQ_Q], l[GQ_Q], acc[GQ_Q][GQ_D];
#pragma unroll
    for (int i = 0; i < GQ_Q; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
#pragma unroll
        for (int dd = 0; dd < GQ_D; dd++)
            acc[i][dd] = 0.0f;
    }
    const int qlast = min(n, qb + GQ_W * GQ_Q) - 1, kend = causal ? qlast + 1 : n;
    for (int j0 = 0; j0 < kend; j0 += GQ_K) {
        __syncthreads();   /* the previous tile is consumed (and Qs written, the first time) */
        for (int idx = threadIdx.x; idx < GQ_K * hd; idx += blockDim.x) {
            const int jj = idx / hd, d = idx - jj * hd, key = j0 + jj;
            const size_t row = (size_t)(o0 + key);
            Ks[jj][d] = key < n ? k[row * ldk + kvh * hd + d] : 0.0f;
            Vs[jj][d] = key < n ? v[row * ldv + kvh * hd + d] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < GQ_Q; i++) {
            const int qi = qw + i, key = j0 + lane;
            if (qi >= n)   /* warp-uniform */
                continue;
            const bool vis = key < n && (!causal || key <= qi);
            float sc = -INFINITY;
            if (vis) {
                float dot = 0.0f;
                for (int d = 0; d < hd; d++)
                    dot = fmaf(Qs[warp][i][d], Ks[lane][d], dot);
                sc = dot;
            }
            const float tm = warp_max(sc);
            if (tm == -INFINITY)   /* no key of this tile is visible to qi (warp-uniform) */
                continue;
            const float mn = fmaxf(m[i], tm), alpha = expf(m[i] - mn), p = vis ? expf(sc - mn) : 0.0f;
            l[i] = l[i] * alpha + warp_sum(p);
#pragma unroll
            for (int dd = 0; dd < GQ_D; dd++)
                acc[i][dd] *= alpha;
            for (int jj = 0; jj < GQ_K; jj++) {
                const float pj = __shfl_sync(0xffffffffu, p, jj);
#pragma unroll
                for (int dd = 0; dd < GQ_D; dd++) {
                    const int d = lane + 32 * dd;
                    if (d < hd)
                        acc[i][dd] = fmaf(pj, Vs[jj][d], acc[i][dd]);
                }
            }
            m[i] = mn;
        }
    }
#pragma unroll
    for (int i = 0; i < GQ_Q; i++) {
        const int qi = qw + i;
        if (qi >= n)
            continue;
        const float inv = 1.0f / l[i];
#pragma unroll
        for (int dd = 0; dd < GQ_D; dd++) {
            const int d = lane + 32 * dd;
            if (d < hd)
                out[(size_t)(o0 + qi) * ldo + h * hd + d] = acc[i][dd] * inv;
        }
    }
}

cudaError_t mmk_attention_gqa(float *out, int ldo, const float *q, int ldq, const float *k, int ldk, const float *v,
                              int ldv, const int *qoff, const int *qlen, int n, int max_q, int heads, int kv_heads,
                              int head_dim, int causal, cudaStream_t st)
{
    if (n < 1 || max_q < 1)
        return cudaSuccess;
    if (head_dim > GQ_D * 32 || kv_heads < 1 || heads % kv_heads)
        return cudaErrorInvalidValue;
    dim3 grid((unsigned)(n * heads), (unsigned)((max_q + GQ_W * GQ_Q - 1) / (GQ_W * GQ_Q)));
    attention_gqa_kernel<<<grid, 32 * GQ_W, 0, st>>>(out, ldo, q, ldq, k, ldk, v, ldv, qoff, qlen, heads,
                                                     heads / kv_heads, head_dim, causal,
                                                     1.0f / sqrtf((float)head_dim));
    return cudaGetLastError();
}

/* rms_norm: a warp per (row, group). */
__global__ void rms_norm_kernel(float *y, int ldy, const float *x, int ldx, const float *w, int M, int groups, int N,
                                float eps)
{
    const int unit = blockIdx.x * LN_ROWS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (unit >= M * groups)
        return;
    const int row = unit / groups, g = unit - row * groups;
    const float *xr = x + (size_t)row * ldx + (size_t)g * N;
    float *yr = y + (size_t)row * ldy + (size_t)g * N;
    float ss = 0.0f;
    for (int j = lane; j < N; j += 32)
        ss += xr[j] * xr[j];
    const float inv = 1.0f / sqrtf(warp_sum(ss) / (float)N + eps);
    for (int j = lane; j < N; j += 32)
        yr[j] = xr[j] * inv * w[j];
}

cudaError_t mmk_rms_norm(float *y, int ldy, const float *x, int ldx, const float *w, int M, int groups, int N,
                         float eps, cudaStream_t st)
{
    const int units = M * groups;
    if (units < 1)
        return cudaSuccess;
    rms_norm_kernel<<<(units + LN_ROWS - 1) / LN_ROWS, 32 * LN_ROWS, 0, st>>>(y, ldy, x, ldx, w, M, groups, N, eps);
    return cudaGetLastError();
}

/* rope: a thread per (row, head, frequency) pair of values. */
__global__ void rope_kernel(float *x, int ld, int M, int heads, int hd, const float *cos_, const float *sin_)
{
    const int half = hd / 2;
    const size_t total = (size_t)M * heads * half;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / ((size_t)heads * half);
        const int rem = (int)(i - t * heads * half), hh = rem / half, f = rem - hh * half;
        float *p = x + t * ld + (size_t)hh * hd;
        const float c = cos_[t * half + f], s = sin_[t * half + f], a = p[f], b = p[f + half];
        p[f] = a * c - b * s;
        p[f + half] = b * c + a * s;
    }
}

cudaError_t mmk_rope(float *x, int ld, int M, int heads, int hd, const float *cos_, const float *sin_, cudaStream_t st)
{
    const size_t total = (size_t)M * heads * (hd / 2);
    if (!total)
        return cudaSuccess;
    rope_kernel<<<blocks_for(total, 256), 256, 0, st>>>(x, ld, M, heads, hd, cos_, sin_);
    return cudaGetLastError();
}

__device__ __forceinline__ float silu_f(float x)
{
    return x / (1.0f + expf(-x));
}

__global__ void swiglu_kernel(float *y, int ldy, const float *gu, int ldgu, int M, int N)
{
    const size_t total = (size_t)M * N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / N, c = i - r * N;
        const float *g = gu + r * ldgu;
        y[r * ldy + c] = silu_f(g[c]) * g[N + c];
    }
}

cudaError_t mmk_swiglu(float *y, int ldy, const float *gu, int ldgu, int M, int N, cudaStream_t st)
{
    const size_t total = (size_t)M * N;
    if (!total)
        return cudaSuccess;
    swiglu_kernel<<<blocks_for(total, 256), 256, 0, st>>>(y, ldy, gu, ldgu, M, N);
    return cudaGetLastError();
}

__global__ void act_kernel(float *x, size_t n, int act)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = act_f(x[i], act);
}

cudaError_t mmk_act(float *x, size_t n, int act, cudaStream_t st)
{
    if (!n)
        return cudaSuccess;
    act_kernel<<<blocks_for(n, 256), 256, 0, st>>>(x, n, act);
    return cudaGetLastError();
}

__global__ void add_kernel(float *y, const float *x, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

cudaError_t mmk_add(float *y, const float *x, size_t n, cudaStream_t st)
{
    if (!n)
        return cudaSuccess;
    add_kernel<<<blocks_for(n, 256), 256, 0, st>>>(y, x, n);
    return cudaGetLastError();
}

__global__ void add_rows_kernel(float *y, int ldy, const float *a, int lda, const int *ia, int n, int width)
{
    const size_t total = (size_t)n * width;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / width, c = i - r * width;
        y[r * ldy + c] += a[(ia ? (size_t)ia[r] * lda : 0) + c];
    }
}

cudaError_t mmk_add_rows(float *y, int ldy, const float *a, int lda, const int *ia, int n, int width, cudaStream_t st)
{
    const size_t total = (size_t)n * width;
    if (!total)
        return cudaSuccess;
    add_rows_kernel<<<blocks_for(total, 256), 256, 0, st>>>(y, ldy, a, lda, ia, n, width);
    return cudaGetLastError();
}

/* mean_rows: a block per sequence, a thread per column (coalesced rows). */
__global__ void mean_rows_kernel(float *y, int ldy, const float *x, int ldx, const int *qoff, const int *qlen,
                                 int width)
{
    const int s = blockIdx.x, n = qlen[s];
    const float *xs = x + (size_t)qoff[s] * ldx;
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        double acc = 0.0;
        for (int p = 0; p < n; p++)
            acc += xs[(size_t)p * ldx + j];
        y[(size_t)s * ldy + j] = (float)(acc / n);
    }
}

cudaError_t mmk_mean_rows(float *y, int ldy, const float *x, int ldx, const int *qoff, const int *qlen, int n,
                          int width, cudaStream_t st)
{
    if (n < 1)
        return cudaSuccess;
    mean_rows_kernel<<<n, 256, 0, st>>>(y, ldy, x, ldx, qoff, qlen, width);
    return cudaGetLastError();
}
