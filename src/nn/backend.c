/* The backend seam (mmembed/backend.h): mm_backend_open by device name, and
 * the CPU backend, whose every op is the nn kernel the CPU forward passes
 * call with the same arguments, so a forward over it gives their bits. */
#include "mmembed/backend.h"

#include "mmembed/common.h"
#include "mmembed/nn.h"
#include "mmembed/textops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef MM_WITH_CUDA
#include "../cuda/backend_cuda.h"
#endif

/* ============================================================ cpu ====== */

typedef struct {
    mm_backend_t base;
    int threads;
    float *scratch;    /* (threads, max_q * max_k) attention scores, grown on demand */
    size_t scratch_n;  /* floats */
    int failed;
} cpu_t;

static void *cpu_alloc(mm_backend_t *be, size_t bytes)
{
    (void)be;
    return aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
}

static void cpu_free(mm_backend_t *be, void *p)
{
    (void)be;
    free(p);
}

static void cpu_upload(mm_backend_t *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (dst != src)
        memcpy(dst, src, bytes);
}

static int cpu_sync(mm_backend_t *be)
{
    return ((cpu_t *)be)->failed ? MM_E_NOMEM : MM_OK;
}

static int cpu_download(mm_backend_t *be, void *dst, const void *src, size_t bytes)
{
    if (dst != src)
        memcpy(dst, src, bytes);
    return cpu_sync(be);
}

static const char *cpu_error(const mm_backend_t *be)
{
    return ((const cpu_t *)be)->failed ? "out of memory (attention scratch)" : "";
}

static const float *cpu_constant(mm_backend_t *be, const float *host, size_t n)
{
    (void)be, (void)n;
    return host;
}

static const void *cpu_dense(mm_backend_t *be, const void *blob)
{
    (void)be;
    return blob;
}

static void cpu_release(mm_backend_t *be, const float *p)
{
    (void)be, (void)p;
}

static void cpu_dense_free(mm_backend_t *be, const void *w)
{
    (void)be, (void)w;
}

static void cpu_linear(mm_backend_t *be, float *y, int ldy, const float *x, int ldx, const void *w,
                       const float *b, int M, int K, int N, mm_act_t act, int add)
{
    cpu_t *c = (cpu_t *)be;
    if (mm_nn_threads() != c->threads)
        mm_nn_set_threads(c->threads);
    if (add)
        mm_nn_linear_add(y, ldy, x, ldx, w, b, M, K, N);
    else
        mm_nn_linear(y, ldy, x, ldx, w, b, M, K, N, act);
}

static void cpu_layer_norm(mm_backend_t *be, float *y, const float *x, const float *w, const float *b,
                           int M, int N, float eps)
{
    (void)be;
    mm_nn_layer_norm(y, x, w, b, M, N, eps);
}

/* Grows the scores scratch to `need` floats; 0, or marks the backend failed. */
static int cpu_scratch(cpu_t *c, size_t need)
{
    if (c->failed)
        return -1;
    if (need > c->scratch_n) { /* once per new largest shape, never in steady state */
        free(c->scratch);
        c->scratch = aligned_alloc(64, (need * sizeof(float) + 63) / 64 * 64);
        c->scratch_n = c->scratch ? need : 0;
        if (!c->scratch) {
            c->failed = 1;
            return -1;
        }
    }
    return 0;
}

/* Every (sequence, head) pair is independent: spread over the nn pool,
 * one scores buffer per part. */
typedef struct {
    cpu_t *c;
    float *out;
    const float *q, *k, *v;
    int ldo, ldq, ldk, ldv, heads, hd, causal;
    const mm_seqs_t *s;
} attn_job_t;

static void attn_part(void *arg, int part, int nparts)
{
    const attn_job_t *j = arg;
    const mm_seqs_t *s = j->s;
    float *scratch = j->c->scratch + (size_t)part * s->max_q * s->max_k;
    for (int t = part; t < s->n * j->heads; t += nparts) {
        const int i = t / j->heads, c = (t % j->heads) * j->hd;
        mm_nn_attention(j->out + (size_t)s->qoff[i] * j->ldo + c, j->ldo, j->q + (size_t)s->qoff[i] * j->ldq + c,
                        j->ldq, j->k + (size_t)s->koff[i] * j->ldk + c, j->ldk,
                        j->v + (size_t)s->koff[i] * j->ldv + c, j->ldv, s->qlen[i], s->klen[i], 1, j->hd,
                        j->causal, scratch);
    }
}

static void cpu_attention(mm_backend_t *be, float *out, int ldo, const float *q, int ldq, const float *k,
                          int ldk, const float *v, int ldv, const mm_seqs_t *s, int heads, int head_dim,
                          int causal)
{
    cpu_t *c = (cpu_t *)be;
    if (cpu_scratch(c, (size_t)c->threads * s->max_q * s->max_k))
        return;
    if (mm_nn_threads() != c->threads)
        mm_nn_set_threads(c->threads);
    attn_job_t j = {.c = c, .out = out, .q = q, .k = k, .v = v, .ldo = ldo, .ldq = ldq, .ldk = ldk, .ldv = ldv,
                    .heads = heads, .hd = head_dim, .causal = causal, .s = s};
    mm_nn_parallel(attn_part, &j);
}

static void cpu_gather_add(mm_backend_t *be, float *y, int ldy, const float *a, int lda, const int *ia,
                           const float *b, int ldb, const int *ib, int n, int width)
{
    (void)be;
    for (int r = 0; r < n; r++) {
        float *row = y + (size_t)r * ldy;
        memcpy(row, a + (size_t)ia[r] * lda, (size_t)width * sizeof(float));
        if (b)
            mm_nn_add(row, b + (size_t)ib[r] * ldb, (size_t)width);
    }
}

static void cpu_gather_add_i8(mm_backend_t *be, float *y, int ldy, const signed char *a, const float *scale,
                              int lda, const int *ia, const float *b, int ldb, const int *ib, int n, int width)
{
    (void)be;
    for (int r = 0; r < n; r++) {
        float *row = y + (size_t)r * ldy;
        mm_tops_i8_row(row, a + (size_t)ia[r] * lda, scale[ia[r]], (size_t)width);
        if (b)
            mm_nn_add(row, b + (size_t)ib[r] * ldb, (size_t)width);
    }
}

static void cpu_patchify(mm_backend_t *be, float *dst, const float *pixels, int n, int C, int S, int P)
{
    (void)be;
    const int G = S / P;
    const size_t K = (size_t)C * P * P;
    for (int b = 0; b < n; b++) {
        const float *img = pixels + (size_t)b * C * S * S;
        for (int gy = 0; gy < G; gy++)
            for (int gx = 0; gx < G; gx++) {
                float *row = dst + ((size_t)b * G * G + (size_t)gy * G + gx) * K;
                for (int ch = 0; ch < C; ch++)
                    for (int ky = 0; ky < P; ky++)
                        memcpy(row + ((size_t)ch * P + ky) * P,
                               img + ((size_t)ch * S + (size_t)gy * P + ky) * S + (size_t)gx * P,
                               (size_t)P * sizeof(float));
            }
    }
}

/* attention_gqa: (sequence, head) units round robin over the pool, each
 * part with its own MM_NN_ATT_QBLOCK x max_k scores block (nn's one
 * attention kernel, which never holds a whole score matrix). */
typedef struct {
    cpu_t *c;
    float *out;
    const float *q, *k, *v;
    int ldo, ldq, ldk, ldv, heads, group, hd, causal;
    float scale;
    const mm_seqs_t *s;
} gqa_job_t;

static void gqa_part(void *arg, int part, int nparts)
{
    const gqa_job_t *j = arg;
    const mm_seqs_t *s = j->s;
    float *scores = j->c->scratch + (size_t)part * MM_NN_ATT_QBLOCK * s->max_k;
    for (int u = part; u < s->n * j->heads; u += nparts) {
        const int i = u / j->heads, h = u % j->heads, kvh = h / j->group;
        const size_t q0 = (size_t)s->qoff[i], k0 = (size_t)s->koff[i];
        mm_nn_attention_head(j->out + q0 * j->ldo + h * j->hd, j->ldo, j->q + q0 * j->ldq + h * j->hd, j->ldq,
                             j->k + k0 * j->ldk + kvh * j->hd, j->ldk, j->v + k0 * j->ldv + kvh * j->hd, j->ldv,
                             s->qlen[i], s->klen[i], j->hd, j->scale, j->causal, scores);
    }
}

static void cpu_attention_gqa(mm_backend_t *be, float *out, int ldo, const float *q, int ldq, const float *k,
                              int ldk, const float *v, int ldv, const mm_seqs_t *s, int heads, int kv_heads,
                              int head_dim, int causal)
{
    cpu_t *c = (cpu_t *)be;
    if (cpu_scratch(c, (size_t)c->threads * MM_NN_ATT_QBLOCK * s->max_k))
        return;
    if (mm_nn_threads() != c->threads)
        mm_nn_set_threads(c->threads);
    gqa_job_t j = {.c = c, .out = out, .q = q, .k = k, .v = v, .ldo = ldo, .ldq = ldq, .ldk = ldk, .ldv = ldv,
                   .heads = heads, .group = heads / kv_heads, .hd = head_dim, .causal = causal,
                   .scale = 1.0f / sqrtf((float)head_dim), .s = s};
    mm_nn_parallel(gqa_part, &j);
}

static void cpu_add_layer_norm(mm_backend_t *be, float *x, int ld, const float *r, int ldr, const float *w,
                               const float *b, int M, int N, float eps)
{
    (void)be;
    mm_nn_add_layer_norm(x, ld, r, ldr, w, b, M, N, eps);
}

static void cpu_rms_norm(mm_backend_t *be, float *y, int ldy, const float *x, int ldx, const float *w, int M,
                         int groups, int N, float eps)
{
    (void)be;
    if (groups == 1) {
        mm_tops_rmsnorm(y, ldy, x, ldx, w, M, N, eps);
        return;
    }
    for (int t = 0; t < M; t++)   /* a row's groups are rows of N at stride N */
        mm_tops_rmsnorm(y + (size_t)t * ldy, N, x + (size_t)t * ldx, N, w, groups, N, eps);
}

static void cpu_rope(mm_backend_t *be, float *x, int ld, int M, int heads, int hd, const float *cos,
                     const float *sin)
{
    (void)be;
    mm_tops_rope(x, ld, M, heads, hd, cos, sin);
}

static void cpu_swiglu(mm_backend_t *be, float *y, int ldy, const float *gu, int ldgu, int M, int N)
{
    (void)be;
    mm_tops_swiglu(y, ldy, gu, ldgu, M, N);
}

static void cpu_act(mm_backend_t *be, float *x, size_t n, int act)
{
    (void)be;
    mm_nn_act(x, n, (mm_act_t)act);
}

static void cpu_add(mm_backend_t *be, float *y, const float *x, size_t n)
{
    (void)be;
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

static void cpu_add_rows(mm_backend_t *be, float *y, int ldy, const float *a, int lda, const int *ia, int n,
                         int width)
{
    (void)be;
    for (int r = 0; r < n; r++) {
        float *yr = y + (size_t)r * ldy;
        const float *ar = a + (ia ? (size_t)ia[r] * lda : 0);
        for (int j = 0; j < width; j++)
            yr[j] += ar[j];
    }
}

static void cpu_mean_rows(mm_backend_t *be, float *y, int ldy, const float *x, int ldx, const mm_seqs_t *s,
                          int width)
{
    (void)be;
    for (int i = 0; i < s->n; i++) {
        const float *xs = x + (size_t)s->qoff[i] * ldx;
        float *o = y + (size_t)i * ldy;
        for (int j = 0; j < width; j++) {
            double acc = 0;
            for (int p = 0; p < s->qlen[i]; p++)
                acc += xs[(size_t)p * ldx + j];
            o[j] = (float)(acc / s->qlen[i]);
        }
    }
}

static void cpu_close(mm_backend_t *be)
{
    cpu_t *c = (cpu_t *)be;
    free(c->scratch);
    free(c);
}

static const mm_backend_ops_t cpu_ops = {
    .name = "cpu", .close = cpu_close,
    .alloc = cpu_alloc, .free = cpu_free, .host_alloc = cpu_alloc, .host_free = cpu_free,
    .upload = cpu_upload, .download = cpu_download, .sync = cpu_sync, .error = cpu_error,
    .constant = cpu_constant, .dense = cpu_dense, .release = cpu_release, .dense_free = cpu_dense_free,
    .linear = cpu_linear, .layer_norm = cpu_layer_norm, .attention = cpu_attention,
    .gather_add = cpu_gather_add, .patchify = cpu_patchify,
    .attention_gqa = cpu_attention_gqa, .add_layer_norm = cpu_add_layer_norm, .rms_norm = cpu_rms_norm,
    .rope = cpu_rope, .swiglu = cpu_swiglu, .act = cpu_act, .add = cpu_add, .add_rows = cpu_add_rows,
    .mean_rows = cpu_mean_rows, .gather_add_i8 = cpu_gather_add_i8,
};

/* ============================================================ open ===== */

int mm_backend_open(const char *device, int threads, const char *dtype, mm_backend_t **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    if (!strcmp(device, "cpu")) {
        cpu_t *c = calloc(1, sizeof(*c));
        if (!c)
            return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
        c->base.ops = &cpu_ops;
        c->base.host_memory = 1;
        c->threads = threads < 1 ? 1 : (threads > 64 ? 64 : threads);
        snprintf(c->base.desc, sizeof c->base.desc, "cpu (%d threads)", c->threads);
        *out = &c->base;
        return MM_OK;
    }
    if (!strncmp(device, "cuda", 4) && (device[4] == '\0' || device[4] == ':')) {
        int dev = 0;
        if (device[4] == ':') {
            char *end;
            long v = strtol(device + 5, &end, 10);
            if (end == device + 5 || *end || v < 0 || v > 255)
                return mm_errf(err, errlen, MM_E_UNSUPPORTED, "device \"%s\": expected cuda:N", device);
            dev = (int)v;
        }
#ifdef MM_WITH_CUDA
        return mm_cuda_open(dev, dtype ? dtype : "f16", out, err, errlen);
#else
        (void)dev, (void)dtype;
        return mm_errf(err, errlen, MM_E_UNSUPPORTED,
                       "device \"%s\": this build has no CUDA backend (build with `make GPU=1`)", device);
#endif
    }
    return mm_errf(err, errlen, MM_E_UNSUPPORTED, "device \"%s\": expected cpu, cuda or cuda:N", device);
}

void mm_backend_close(mm_backend_t *be)
{
    if (be)
        be->ops->close(be);
}
