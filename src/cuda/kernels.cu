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
    if (act == ACT_QUICK_GELU)
        return x / (1.0f + expf(-1.702f * x));
    if (act == ACT_GELU)
        return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    return x;
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

__global__ void layer_norm_kernel(float *y, const float *x, const float *w, const float *b, int M, int N, float eps)
{
    const int row = blockIdx.x * LN_ROWS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= M)
        return;
    const float *xr = x + (size_t)row * N;
    float *yr = y + (size_t)row * N;
    float s = 0.0f;
    for (int j = lane; j < N; j += 32)
        s += xr[j];
    const float mean = warp_sum(s) / (float)N;
    float v = 0.0f;
    for (int j = lane; j < N; j += 32) {
        const float d = xr[j] - mean;
        v += d * d;
    }
    const float rstd = 1.0f / sqrtf(warp_sum(v) / (float)N + eps);
    for (int j = lane; j < N; j += 32)
        yr[j] = (xr[j] - mean) * rstd * w[j] + b[j];
}

cudaError_t mmk_layer_norm(float *y, const float *x, const float *w, const float *b, int M, int N, float eps,
                           cudaStream_t st)
{
    if (M < 1)
        return cudaSuccess;
    layer_norm_kernel<<<(M + LN_ROWS - 1) / LN_ROWS, 32 * LN_ROWS, 0, st>>>(y, x, w, b, M, N, eps);
    return cudaGetLastError();
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
