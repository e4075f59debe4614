/* Every matrix product of the kernels, through oneDNN's matmul primitive:
 * dense layers (mm_nn_linear, mm_nn_linear_add) in f32, bf16 or q8 (q4 runs
 * our own kernels, src/nn/q4.c, over the same blob header), and the
 * strided f32 products of attention (mm_nn_matmul_nt, mm_nn_matmul_nn).
 *
 * Weights: each dense layer is one blob (lin_hdr_t + data) packed once by
 * the master. f32 stores W (N, K) transposed, as a plain (K, N) matrix
 * (format ab): what oneDNN's f32 GEMM streams without re-laying it out
 * ((K, N) at 8 rows ran 0.19 ms against 0.37 ms for the (N, K) layout), and
 * a column range of it is again a (K, n) matrix with row stride N. bf16 and
 * q8 store the layout oneDNN's brgemm asks for (format any, matched to a
 * BA16a{64,48,32,16}b{2,4}a tag): with the 64-column tags a range of whole
 * 64-column blocks is again such a matrix, contiguous, so threads can split
 * columns there too. q8 adds one f32 scale per output channel and 128 x the
 * int8 column sums: activations are quantized per row to u8 as x/s + 128,
 * so acc - 128 colsum is the signed product, dequantized as s_row s_col.
 *
 * Primitives: made once per shape class and kept in a per-process hashed
 * table. f32 leaves M (and, for attention, every dimension and stride) as
 * DNNL_RUNTIME_DIM_VAL, so one primitive serves every batch; oneDNN 2.6's
 * brgemm takes no run-time M, so bf16/q8 run rows in chunks of at most
 * MCHUNK, keyed by the chunk's row count (padded to 16 on AMX). The memory
 * objects that bind buffers to a primitive are per thread and made again
 * only when a concrete shape changes; execution only sets data handles.
 * Scratchpads are per thread too (user mode): the library's shared one is
 * not safe for two threads running one primitive.
 *
 * Threads: oneDNN runs single-threaded (omp_set_num_threads(1) in every
 * calling thread) and the nn pool splits the work instead. Debian's libdnnl
 * uses libgomp, which is not fork-safe: a child of a process that ran an
 * OpenMP team hangs at its first parallel region, and the master forks
 * workers after packing (and tests after forwards). A one-thread OpenMP
 * never starts a team. Parts are whole column ranges or (bf16/q8, many
 * rows) whole row ranges, and a row's value does not depend on either, so
 * results are the same whatever the thread count.
 *
 * Fork: the table and the engine record the pid that made them; a process
 * that finds another pid (a forked child) starts a fresh table. */
#include "mmembed/nn.h"
#include "q4.h"

#include <dnnl.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif
#include <math.h>
#include <stdint.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PRIMS 4096 /* distinct keys per process: ~40 per f32 model, up to 64 row counts per bf16/q8 shape */
#define HASH_SLOTS 8192 /* open addressing over the table, > 2 x MAX_PRIMS */
#define RT DNNL_RUNTIME_DIM_VAL
#define NBLOCK 64 /* columns per unit of the split across threads */
#define MCHUNK 256 /* bf16/q8: most rows per primitive call (brgemm takes no run-time M in oneDNN 2.6) */
/* bf16/q8 on AMX: a call's rows are padded to a multiple of 16 (a tile's
 * rows): oneDNN 2.6's AMX brgemm runs 2.8x slower on M = 50 than on M = 64.
 * The AVX-512 kernels run any M at the same rate, so there the padding
 * would only add work (28% on ViT-B/32's 50 tokens): no rounding. */
#define MROUND (mm_nn_cpu()->amx ? 16 : 1)

enum { K_LINEAR, K_NT, K_NN, K_BLOCKED };

/* One primitive and the key it was made for (the fields up to prim; keys
 * are compared and hashed as those bytes, so they are zeroed first). */
typedef struct {
    int kind;
    int K, N, ldw, ldx, ldy;  /* K_LINEAR: the shape but M */
    int act, add, bias;
    float scale;              /* K_NT */
    int M, dt, tag;           /* K_BLOCKED: chunk rows, dtype, weights' format tag */
} pkey_t;

typedef struct {
    pkey_t k;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t amd, wmd, bmd, cmd; /* K_LINEAR: fixed weights and bias; K_BLOCKED: all four */
    size_t sbytes;                         /* its scratchpad */
} prim_t;

static struct {
    pthread_mutex_t mu;
    pid_t pid;
    dnnl_engine_t eng;
    prim_t p[MAX_PRIMS];
    int n;
    short slot[HASH_SLOTS]; /* index + 1 of the primitive hashed there; 0 = empty */
} S = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* A thread's bindings of one primitive: memory objects for the last
 * concrete shape it ran (dims[] and strides, compared before each call). */
typedef struct {
    dnnl_memory_t src, wei, bias, dst, scr;
    long shape[8];
} bind_t;

static _Thread_local struct {
    pid_t pid;
    dnnl_stream_t stream;
    void *scr;     /* the thread's scratchpad, grown to the largest asked */
    size_t scrcap;
    bind_t b[MAX_PRIMS];
} T;

/* A thread's output scratch for the bf16/q8 epilogue (grown, never shrunk). */
static _Thread_local struct {
    float *p;
    size_t cap;
} Y;

/* The calling thread's converted activations (grown, never shrunk). */
static _Thread_local struct {
    void *p;
    float *sc;
    size_t cap, sccap;
} X;

static void die(const char *what, dnnl_status_t st)
{
    /* only programming errors reach here (shapes are checked by callers) */
    fprintf(stderr, "mmembed nn: oneDNN %s failed (status %d)\n", what, (int)st);
    abort();
}

#define CK(call)                                  \
    do {                                          \
        dnnl_status_t st_ = (call);               \
        if (st_ != dnnl_success)                  \
            die(#call, st_);                      \
    } while (0)

/* ============================================================ state ==== */

/* The engine and the table of this process (under S.mu). */
static void process_state(void)
{
    pid_t me = getpid();
    if (S.pid == me)
        return;
    /* a forked child: the parent's objects are only memory here; start
     * afresh rather than share JIT state made by another process */
    S.n = 0;
    memset(S.slot, 0, sizeof S.slot);
    (void)mm_nn_cpu(); /* a MMEMBED_CPU cap must reach oneDNN before its first primitive */
    /* No VTune JIT registration: at a process's first kernel it dlopens
     * libJitPI.so (77 paths searched), a file open the worker sandbox
     * forbids; nothing profiles the server's workers with VTune. */
    dnnl_set_jit_profiling_flags(DNNL_JIT_PROFILE_NONE);
    CK(dnnl_engine_create(&S.eng, dnnl_cpu, 0));
    S.pid = me;
}

/* Thread exit (a pool helper stopped by mm_nn_set_threads): its scratch,
 * stream and memory objects go with it. */
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

static void thread_exit(void *arg)
{
    (void)arg;
    mm_nn_q4_thread_free();
    if (T.pid != getpid())   /* no oneDNN objects of this process's own */
        return;
    for (int i = 0; i < MAX_PRIMS; i++) {
        dnnl_memory_t *m[5] = {&T.b[i].src, &T.b[i].wei, &T.b[i].bias, &T.b[i].dst, &T.b[i].scr};
        for (int j = 0; j < 5; j++)
            if (*m[j])
                dnnl_memory_destroy(*m[j]);
    }
    dnnl_stream_destroy(T.stream);
    free(T.scr);
    memset(&T, 0, sizeof T);
    free(Y.p);
    free(X.p);
    free(X.sc);
    memset(&Y, 0, sizeof Y);
    memset(&X, 0, sizeof X);
}

static void make_exit_key(void)
{
    if (pthread_key_create(&exit_key, thread_exit) != 0)
        die("pthread_key_create", dnnl_out_of_memory);
}

void mm_nn_thread_exit_arm(void)
{
    pthread_once(&exit_once, make_exit_key);
    pthread_setspecific(exit_key, &exit_key); /* non-NULL, so thread_exit runs */
}

/* The calling thread's stream and bindings. First thing before any oneDNN
 * call of the thread: primitives size their thread teams when made. */
static void thread_state(void)
{
    pid_t me = getpid();
    if (T.pid == me)
        return;
    memset(&T, 0, sizeof T); /* a forked child's copy names the parent's objects */
    omp_set_num_threads(1);
    pthread_mutex_lock(&S.mu);
    process_state();
    pthread_mutex_unlock(&S.mu);
    CK(dnnl_stream_create(&T.stream, S.eng, dnnl_stream_default_flags));
    T.pid = me;
    mm_nn_thread_exit_arm();
}

static void md_strided(dnnl_memory_desc_t *md, int64_t d0, int64_t d1, int64_t s0, int64_t s1)
{
    dnnl_dims_t dims = {d0, d1}, strides = {s0, s1};
    CK(dnnl_memory_desc_init_by_strides(md, 2, dims, dnnl_f32, strides));
}

/* Scratchpads are the caller's (dnnl_scratchpad_mode_user): a thread's own
 * buffer is passed on every call. oneDNN's library-managed scratchpad is
 * shared between threads unless it is built for concurrent execution, and
 * the bf16 brgemm kernels accumulate in it, so two threads running one
 * primitive would overwrite each other's partial sums. */
static dnnl_primitive_t make_prim(const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *w,
                                  const dnnl_memory_desc_t *b, const dnnl_memory_desc_t *c,
                                  dnnl_primitive_attr_t attr, size_t *scratch_bytes)
{
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t p;
    CK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    CK(dnnl_matmul_desc_init(&md, a, w, b, c));
    CK(dnnl_primitive_desc_create(&pd, &md, attr, S.eng, NULL));
    *scratch_bytes = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    CK(dnnl_primitive_create(&p, pd));
    CK(dnnl_primitive_desc_destroy(pd));
    return p;
}

static unsigned key_hash(const pkey_t *k)
{
    const unsigned char *p = (const unsigned char *)k;
    unsigned h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < sizeof *k; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static dnnl_data_type_t src_type(int dt)
{
    return dt == MM_DT_BF16 ? dnnl_bf16 : dt == MM_DT_Q8 ? dnnl_u8 : dnnl_f32;
}

static dnnl_data_type_t wei_type(int dt)
{
    return dt == MM_DT_BF16 ? dnnl_bf16 : dt == MM_DT_Q8 ? dnnl_s8 : dnnl_f32;
}

static dnnl_data_type_t acc_type(int dt)
{
    return dt == MM_DT_Q8 ? dnnl_s32 : dnnl_f32;
}

/* Makes primitive p for its key (under S.mu). */
static void make(prim_t *p)
{
    const pkey_t *k = &p->k;
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t po;
    CK(dnnl_primitive_attr_create(&attr));
    CK(dnnl_post_ops_create(&po));
    /* matmul adds the bias, then the post-ops run in order */
    if (k->add)
        CK(dnnl_post_ops_append_sum(po, 1.0f));
    if (k->act == MM_ACT_GELU)
        CK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_erf, 0.0f, 0.0f));
    else if (k->act == MM_ACT_QUICK_GELU) /* x * sigmoid(alpha x) */
        CK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_swish, 1.702f, 0.0f));
    CK(dnnl_primitive_attr_set_post_ops(attr, po));
    if (k->kind == K_LINEAR) {
        md_strided(&p->amd, RT, k->K, k->ldx, 1);
        md_strided(&p->wmd, k->K, k->N, k->ldw, 1);
        md_strided(&p->bmd, 1, k->N, k->N, 1);
        md_strided(&p->cmd, RT, k->N, k->ldy, 1);
        p->prim = make_prim(&p->amd, &p->wmd, k->bias ? &p->bmd : NULL, &p->cmd, attr, &p->sbytes);
    } else if (k->kind == K_BLOCKED) {
        /* dense src and dst: oneDNN 2.6's brgemm takes no row strides */
        dnnl_dims_t a = {k->M, k->K}, w = {k->K, k->N}, b = {1, k->N}, c = {k->M, k->N};
        CK(dnnl_memory_desc_init_by_tag(&p->amd, 2, a, src_type(k->dt), dnnl_ab));
        CK(dnnl_memory_desc_init_by_tag(&p->wmd, 2, w, wei_type(k->dt), (dnnl_format_tag_t)k->tag));
        CK(dnnl_memory_desc_init_by_tag(&p->bmd, 2, b, dnnl_f32, dnnl_ab));
        CK(dnnl_memory_desc_init_by_tag(&p->cmd, 2, c, acc_type(k->dt), dnnl_ab));
        p->prim = make_prim(&p->amd, &p->wmd, k->bias ? &p->bmd : NULL, &p->cmd, attr, &p->sbytes);
    } else {
        dnnl_memory_desc_t w;
        md_strided(&p->amd, RT, RT, RT, 1);
        if (k->kind == K_NT) /* w (N, K) read as its transpose (K, N) */
            md_strided(&w, RT, RT, 1, RT);
        else
            md_strided(&w, RT, RT, RT, 1);
        md_strided(&p->cmd, RT, RT, RT, 1);
        if (k->scale != 1.0f)
            CK(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->scale));
        p->prim = make_prim(&p->amd, &w, NULL, &p->cmd, attr, &p->sbytes);
    }
    CK(dnnl_post_ops_destroy(po));
    CK(dnnl_primitive_attr_destroy(attr));
}

/* Finds or makes the primitive for key `k`; returns its index. */
static int lookup(const pkey_t *k)
{
    pthread_mutex_lock(&S.mu);
    process_state();
    unsigned h = key_hash(k) % HASH_SLOTS;
    for (;; h = (h + 1) % HASH_SLOTS) {
        int i = S.slot[h] - 1;
        if (i < 0)
            break;
        if (!memcmp(&S.p[i].k, k, sizeof *k)) {
            pthread_mutex_unlock(&S.mu);
            return i;
        }
    }
    if (S.n == MAX_PRIMS)
        die("primitive table", dnnl_out_of_memory);
    int i = S.n;
    prim_t *p = &S.p[i];
    memset(p, 0, sizeof *p);
    p->k = *k;
    make(p);
    S.slot[h] = (short)(i + 1);
    S.n++;
    pthread_mutex_unlock(&S.mu);
    return i;
}

/* (Re)creates the memory objects of binding `b` for concrete descs. */
static void rebind(bind_t *b, const long shape[8], const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *w,
                   const dnnl_memory_desc_t *bias, const dnnl_memory_desc_t *c)
{
    dnnl_memory_t *m[4] = {&b->src, &b->wei, &b->bias, &b->dst};
    const dnnl_memory_desc_t *d[4] = {a, w, bias, c};
    for (int i = 0; i < 4; i++) {
        if (*m[i])
            CK(dnnl_memory_destroy(*m[i]));
        *m[i] = NULL;
        if (d[i])
            CK(dnnl_memory_create(m[i], d[i], S.eng, DNNL_MEMORY_NONE));
    }
    memcpy(b->shape, shape, sizeof b->shape);
}

static void execute(int i, bind_t *b, const void *x, const void *w, const float *bias, void *y)
{
    const size_t sb = S.p[i].sbytes;
    dnnl_exec_arg_t args[5];
    int nargs = 0;
    if (sb) {
        if (sb > T.scrcap) {
            free(T.scr);
            T.scr = aligned_alloc(64, (sb + 63) / 64 * 64);
            if (!T.scr)
                die("scratchpad allocation", dnnl_out_of_memory);
            T.scrcap = sb;
        }
        if (!b->scr) {
            dnnl_memory_desc_t smd;
            dnnl_dims_t d = {(dnnl_dim_t)sb};
            CK(dnnl_memory_desc_init_by_tag(&smd, 1, d, dnnl_u8, dnnl_a));
            CK(dnnl_memory_create(&b->scr, &smd, S.eng, DNNL_MEMORY_NONE));
        }
        CK(dnnl_memory_set_data_handle(b->scr, T.scr));
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, b->scr};
    }
    CK(dnnl_memory_set_data_handle(b->src, (void *)x));
    CK(dnnl_memory_set_data_handle(b->wei, (void *)w));
    CK(dnnl_memory_set_data_handle(b->dst, y));
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, b->src};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, b->wei};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, b->dst};
    if (bias) {
        CK(dnnl_memory_set_data_handle(b->bias, (void *)bias));
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, b->bias};
    }
    CK(dnnl_primitive_execute(S.p[i].prim, T.stream, nargs, args));
    CK(dnnl_stream_wait(T.stream));
}

/* ============================================================ packing == */

#define LIN_MAGIC 0x4e494c4du /* "MLIN" */

/* The blob header (64 bytes; offsets in bytes from the header). */
typedef struct {
    uint32_t magic;
    int32_t dtype, N, K;
    int32_t tag;    /* dnnl_format_tag_t of the weights (f32: plain (K, N), 0) */
    int32_t split;  /* 1: column ranges starting at multiples of NBLOCK are again (K, n) matrices of tag */
    uint64_t data;  /* the weights */
    uint64_t scale; /* q8: N floats; q4: the f16 group scales (q4.h) */
    uint64_t csum;  /* q8: N int32: 128 x the column sums of the int8 weights; q4: the f32 column scales */
    uint8_t pad[16];
} lin_hdr_t;

_Static_assert(sizeof(lin_hdr_t) == 64, "the blob header is one cache line");

static size_t up64(size_t n)
{
    return (n + 63) / 64 * 64;
}

/* A matmul of MCHUNK rows by weights (K, N) of dtype dt in layout "any":
 * oneDNN's choice of kernel (and of the weights' layout) for that dtype. */
static dnnl_status_t any_pd(int dt, int K, int N, dnnl_memory_desc_t *w, dnnl_primitive_desc_t *pd)
{
    thread_state();
    dnnl_memory_desc_t a, c;
    dnnl_dims_t ad = {MCHUNK, K}, wd = {K, N}, cd = {MCHUNK, N};
    CK(dnnl_memory_desc_init_by_tag(&a, 2, ad, src_type(dt), dnnl_ab));
    CK(dnnl_memory_desc_init_by_tag(w, 2, wd, wei_type(dt), dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&c, 2, cd, acc_type(dt), dnnl_ab));
    dnnl_matmul_desc_t md;
    CK(dnnl_matmul_desc_init(&md, &a, w, NULL, &c));
    return dnnl_primitive_desc_create(pd, &md, NULL, S.eng, NULL);
}

/* The blocked layout oneDNN's matmul wants for weights (K, N) of dtype dt
 * (asked with format "any" at a 64-row problem, then matched against the
 * brgemm tags), or plain ab if it is none of those. */
static dnnl_format_tag_t choose_tag(int dt, int K, int N)
{
    static const dnnl_format_tag_t bf16[] = {dnnl_BA16a64b2a, dnnl_BA16a48b2a, dnnl_BA16a32b2a, dnnl_BA16a16b2a};
    static const dnnl_format_tag_t s8[] = {dnnl_BA16a64b4a, dnnl_BA16a48b4a, dnnl_BA16a32b4a, dnnl_BA16a16b4a};
    dnnl_memory_desc_t wd_any;
    dnnl_primitive_desc_t pd;
    CK(any_pd(dt, K, N, &wd_any, &pd));
    dnnl_dims_t wd = {K, N};
    const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_format_tag_t tag = dnnl_ab;
    for (int i = 0; i < 4; i++) {
        dnnl_memory_desc_t t;
        CK(dnnl_memory_desc_init_by_tag(&t, 2, wd, wei_type(dt), dt == MM_DT_BF16 ? bf16[i] : s8[i]));
        if (dnnl_memory_desc_equal(&t, want)) {
            tag = dt == MM_DT_BF16 ? bf16[i] : s8[i];
            break;
        }
    }
    CK(dnnl_primitive_desc_destroy(pd));
    return tag;
}

int mm_nn_lin_supported(mm_dtype_t dt)
{
    if (dt == MM_DT_F32)
        return 1;
    if (dt == MM_DT_Q4) /* our kernels: AVX512-VNNI, else AVX2 (the build's baseline) */
        return mm_nn_cpu()->avx2;
    dnnl_memory_desc_t w;
    dnnl_primitive_desc_t pd;
    if (any_pd(dt, 64, 64, &w, &pd) != dnnl_success)
        return 0;
    CK(dnnl_primitive_desc_destroy(pd));
    return 1;
}

static size_t md_bytes(int dt, int K, int N, dnnl_format_tag_t tag)
{
    dnnl_memory_desc_t m;
    dnnl_dims_t d = {K, N};
    CK(dnnl_memory_desc_init_by_tag(&m, 2, d, wei_type(dt), tag));
    return dnnl_memory_desc_get_size(&m);
}

/* Bytes from the weights' start to column c0 (a multiple of NBLOCK when
 * the blob is split): the (K, c0) matrix of the same layout before it. */
static size_t col_offset(const lin_hdr_t *h, int c0)
{
    if (c0 == 0)
        return 0;
    return md_bytes(h->dtype, h->K, c0, (dnnl_format_tag_t)h->tag);
}

static void layout(lin_hdr_t *h, int N, int K, mm_dtype_t dt)
{
    memset(h, 0, sizeof *h);
    h->magic = LIN_MAGIC;
    h->dtype = (int32_t)dt;
    h->N = N;
    h->K = K;
    h->data = sizeof *h;
    if (dt == MM_DT_Q4) { /* our own kernels' layout (q4.c) */
        mm_q4_layout_t l;
        mm_nn_q4_layout(N, K, sizeof *h, &l);
        h->data = l.data, h->scale = l.gscale, h->csum = l.cscale;
        h->split = 1;
        return;
    }
    if (dt == MM_DT_F32) {
        h->split = 1;
        h->scale = h->csum = h->data + up64((size_t)N * K * sizeof(float));
        return;
    }
    h->tag = (int32_t)choose_tag(dt, K, N);
    h->split = (h->tag == dnnl_BA16a64b2a || h->tag == dnnl_BA16a64b4a) && N % NBLOCK == 0;
    h->scale = h->data + up64(md_bytes(dt, K, N, (dnnl_format_tag_t)h->tag));
    h->csum = h->scale + (dt == MM_DT_Q8 ? up64((size_t)N * sizeof(float)) : 0);
}

size_t mm_nn_lin_bytes(int N, int K, mm_dtype_t dt)
{
    lin_hdr_t h;
    layout(&h, N, K, dt);
    if (dt == MM_DT_Q4) {
        mm_q4_layout_t l;
        mm_nn_q4_layout(N, K, sizeof h, &l);
        return l.end;
    }
    return h.csum + (dt == MM_DT_Q8 ? up64((size_t)N * sizeof(int32_t)) : 0);
}

mm_dtype_t mm_nn_lin_dtype(const void *wp)
{
    return (mm_dtype_t)((const lin_hdr_t *)wp)->dtype;
}

void mm_nn_lin_shape(const void *wp, int *N, int *K)
{
    const lin_hdr_t *h = wp;
    *N = h->N;
    *K = h->K;
}

const float *mm_nn_lin_f32(const void *wp)
{
    const lin_hdr_t *h = wp;
    return h->dtype == MM_DT_F32 ? (const float *)((const char *)wp + h->data) : NULL;
}

/* dst (layout of h) = src, a (K, N) matrix given as W (N, K) (format ba). */
static void reorder(const lin_hdr_t *h, void *dst, const void *src, dnnl_data_type_t st)
{
    dnnl_memory_desc_t smd, dmd;
    dnnl_dims_t d = {h->K, h->N};
    CK(dnnl_memory_desc_init_by_tag(&smd, 2, d, st, dnnl_ba));
    CK(dnnl_memory_desc_init_by_tag(&dmd, 2, d, wei_type(h->dtype), (dnnl_format_tag_t)h->tag));
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t p;
    dnnl_memory_t ms, md;
    CK(dnnl_reorder_primitive_desc_create(&pd, &smd, S.eng, &dmd, S.eng, NULL));
    CK(dnnl_primitive_create(&p, pd));
    CK(dnnl_memory_create(&ms, &smd, S.eng, (void *)src));
    CK(dnnl_memory_create(&md, &dmd, S.eng, dst));
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md}};
    CK(dnnl_primitive_execute(p, T.stream, 2, args));
    CK(dnnl_stream_wait(T.stream));
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(md);
    dnnl_primitive_destroy(p);
    dnnl_primitive_desc_destroy(pd);
}

void mm_nn_lin_pack(void *dst, const float *w, int N, int K, mm_dtype_t dt)
{
    lin_hdr_t *h = dst;
    layout(h, N, K, dt);
    char *data = (char *)dst + h->data;
    if (dt == MM_DT_F32) { /* transposed in 32 x 32 tiles (a plain loop misses the cache on every write) */
        float *p = (float *)data;
        for (int n0 = 0; n0 < N; n0 += 32)
            for (int k0 = 0; k0 < K; k0 += 32)
                for (int n = n0; n < N && n < n0 + 32; n++)
                    for (int k = k0; k < K && k < k0 + 32; k++)
                        p[(size_t)k * N + n] = w[(size_t)n * K + k];
        return;
    }
    if (dt == MM_DT_BF16) {
        reorder(h, data, w, dnnl_f32); /* rounds to nearest even */
        return;
    }
    if (dt == MM_DT_Q4) {
        mm_q4_layout_t l;
        mm_nn_q4_layout(N, K, sizeof *h, &l);
        mm_nn_q4_pack(dst, &l, w, N, K);
        return;
    }
    /* q8: per output channel n, scale = max |W[n, :]| / 127, W / scale rounded */
    int8_t *q = malloc((size_t)N * K);
    if (!q)
        die("packing allocation", dnnl_out_of_memory);
    float *sc = (float *)((char *)dst + h->scale);
    int32_t *cs = (int32_t *)((char *)dst + h->csum);
    for (int n = 0; n < N; n++) {
        const float *row = w + (size_t)n * K;
        float amax = 0.0f;
        for (int k = 0; k < K; k++)
            amax = fmaxf(amax, fabsf(row[k]));
        const float s = amax > 0.0f ? amax / 127.0f : 1.0f;
        int32_t sum = 0;
        for (int k = 0; k < K; k++) {
            int v = (int)lrintf(row[k] / s);
            v = v > 127 ? 127 : v < -127 ? -127 : v;
            q[(size_t)n * K + k] = (int8_t)v;
            sum += v;
        }
        sc[n] = s;
        cs[n] = 128 * sum;
    }
    reorder(h, data, q, dnnl_s8);
    free(q);
}

/* ============================================================ linear === */

typedef struct {
    float *y;
    const float *x, *b;
    const lin_hdr_t *h;
    int ldy, ldx, M, K, N;
    mm_act_t act;
    int add;
    const void *xs;     /* bf16/q8: x converted, dense (M, K) */
    const float *xsc;   /* q8: per-row scales of xs */
    int rowsplit;       /* bf16/q8: threads take row chunks, not column blocks */
} linear_job_t;

/* f32: columns [c0, c1) of y: a (K, c1 - c0) slice of the packed W, row
 * stride N. */
static void linear_cols_f32(const linear_job_t *j, int c0, int c1)
{
    pkey_t key = {.kind = K_LINEAR, .K = j->K, .N = c1 - c0, .ldw = j->N, .ldx = j->ldx, .ldy = j->ldy,
                 .act = j->act, .add = j->add, .bias = j->b != NULL, .scale = 1.0f};
    int i = lookup(&key);
    bind_t *b = &T.b[i];
    const long shape[8] = {j->M};
    if (!b->src || memcmp(shape, b->shape, sizeof shape)) {
        dnnl_memory_desc_t a, c;
        md_strided(&a, j->M, j->K, j->ldx, 1);
        md_strided(&c, j->M, c1 - c0, j->ldy, 1);
        rebind(b, shape, &a, &S.p[i].wmd, &S.p[i].bmd, &c);
    }
    const float *w = (const float *)((const char *)j->h + j->h->data);
    execute(i, b, j->x, w + c0, j->b ? j->b + c0 : NULL, j->y + c0);
}

/* One row of n floats to bf16, rounded to nearest even (inputs finite). */
static void row_to_bf16(uint16_t *o, const float *x, int n)
{
    int k = 0;
#ifdef __AVX2__
    const __m256i one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7fff);
    for (; k + 16 <= n; k += 16) {
        __m256i a = _mm256_castps_si256(_mm256_loadu_ps(x + k));
        __m256i b = _mm256_castps_si256(_mm256_loadu_ps(x + k + 8));
        a = _mm256_srli_epi32(_mm256_add_epi32(a, _mm256_add_epi32(half, _mm256_and_si256(_mm256_srli_epi32(a, 16), one))), 16);
        b = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(half, _mm256_and_si256(_mm256_srli_epi32(b, 16), one))), 16);
        /* packus works per 128-bit lane: a0-3 b0-3 | a4-7 b4-7 -> reorder the quadwords */
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
        _mm256_storeu_si256((__m256i *)(o + k), p);
    }
#endif
    for (; k < n; k++) {
        uint32_t u;
        memcpy(&u, &x[k], 4);
        o[k] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
}

/* One row of n floats to u8: q = round(x / s) + 128 with s = max|x| / 127
 * (so q is in [1, 255]); returns s. */
static float row_to_u8(uint8_t *o, const float *x, int n)
{
    int k = 0;
    float amax = 0.0f;
#ifdef __AVX2__
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (; k + 8 <= n; k += 8)
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)));
    float t[8];
    _mm256_storeu_ps(t, m);
    for (int i = 0; i < 8; i++)
        amax = t[i] > amax ? t[i] : amax;
#endif
    for (; k < n; k++) {
        float v = x[k] < 0 ? -x[k] : x[k];
        amax = v > amax ? v : amax;
    }
    const float s = amax > 0.0f ? amax / 127.0f : 1.0f, inv = 1.0f / s;
    k = 0;
#ifdef __AVX2__
    const __m256 vi = _mm256_set1_ps(inv), off = _mm256_set1_ps(128.5f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (; k + 32 <= n; k += 32) {
        __m256i q[4];
        for (int i = 0; i < 4; i++) /* x / s in [-127, 127]: + 128.5, truncated = rounded */
            q[i] = _mm256_cvttps_epi32(_mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8 * i), vi, off));
        __m256i w = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(o + k), _mm256_permutevar8x32_epi32(w, order));
    }
#endif
    for (; k < n; k++)
        o[k] = (uint8_t)(int)(x[k] * inv + 128.5f);
    return s;
}

/* q8 accumulators to f32 in place: a = sx * sw * (acc - 128 colsum). */
static void dequant_row(float *a, float sx, const float *sw, const int32_t *csum, int n)
{
    int32_t *ai = (int32_t *)a;
    int c = 0;
#ifdef __AVX2__
    const __m256 vs = _mm256_set1_ps(sx);
    for (; c + 8 <= n; c += 8) {
        __m256i v = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(ai + c)),
                                     _mm256_loadu_si256((const __m256i *)(csum + c)));
        _mm256_storeu_ps(a + c, _mm256_mul_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(sw + c)), _mm256_cvtepi32_ps(v)));
    }
#endif
    for (; c < n; c++) {
        int32_t v = ai[c] - csum[c];
        a[c] = sx * sw[c] * (float)v;
    }
}


static float *scratch(size_t n)
{
    if (n > Y.cap) {
        free(Y.p);
        Y.p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
        if (!Y.p)
            die("scratch allocation", dnnl_out_of_memory);
        Y.cap = n;
    }
    return Y.p;
}

/* bf16/q8: columns [c0, c1) of rows [r0, r1), in chunks of at most MCHUNK
 * rows, each run as a multiple of MROUND rows (the converted activations
 * carry zero rows up to that). When those columns are whole rows of a dense
 * y (bf16) and the chunk needs no padding, the primitive writes y with the
 * bias and the residual add fused; otherwise it writes a dense scratch
 * (oneDNN 2.6's brgemm takes no output row stride) and the epilogue adds
 * them in f32 for the real rows. Both do the same f32 additions in the same
 * order, and the activation is always ours, so which path a row takes (it
 * depends on the thread split) never changes its value. */
static void blocked_range(const linear_job_t *j, int c0, int c1, int r0, int r1)
{
    const lin_hdr_t *h = j->h;
    const int n = c1 - c0, dt = h->dtype;
    const int direct = dt == MM_DT_BF16 && n == j->N && j->ldy == j->N;
    const size_t esz = dt == MM_DT_BF16 ? 2 : 1;
    const char *w = (const char *)h + h->data + col_offset(h, c0);
    const float *wsc = dt == MM_DT_Q8 ? (const float *)((const char *)h + h->scale) + c0 : NULL;
    const int32_t *csum = dt == MM_DT_Q8 ? (const int32_t *)((const char *)h + h->csum) + c0 : NULL;
    const float *bias = j->b ? j->b + c0 : NULL;
    float *acc = scratch((size_t)MCHUNK * (size_t)n);
    for (int m0 = r0; m0 < r1; m0 += MCHUNK) {
        const int mround = MROUND;
        const int mc = r1 - m0 < MCHUNK ? r1 - m0 : MCHUNK, mp = (mc + mround - 1) / mround * mround;
        const int fused = direct && mp == mc;
        pkey_t key = {.kind = K_BLOCKED, .K = j->K, .N = n, .M = mp, .dt = dt, .tag = h->tag,
                      .add = fused && j->add, .bias = fused && j->b};
        int i = lookup(&key);
        bind_t *b = &T.b[i];
        if (!b->src) {
            const long shape[8] = {0};
            rebind(b, shape, &S.p[i].amd, &S.p[i].wmd, &S.p[i].bmd, &S.p[i].cmd);
        }
        const char *xs = (const char *)j->xs + (size_t)m0 * (size_t)j->K * esz;
        float *yrow = j->y + (size_t)m0 * (size_t)j->ldy + c0;
        if (fused) {
            execute(i, b, xs, w, bias, yrow);
            if (j->act != MM_ACT_NONE)
                for (int r = 0; r < mc; r++)
                    mm_nn_bias_act_row(yrow + (size_t)r * j->ldy, yrow + (size_t)r * j->ldy, NULL, n, j->act, 0);
            continue;
        }
        execute(i, b, xs, w, NULL, acc);
        for (int r = 0; r < mc; r++) {
            float *a = acc + (size_t)r * n;
            if (dt == MM_DT_Q8)
                dequant_row(a, j->xsc[m0 + r], wsc, csum, n);
            mm_nn_bias_act_row(yrow + (size_t)r * j->ldy, a, bias, n, j->act, j->add);
        }
    }
}

/* A part of a bf16/q8 product: a share of the rows (in MROUND units) when
 * every thread gets at least ROWSPLIT_MIN of them (each part streams all of
 * W), else column blocks (each streams its slice of W for every row). A
 * row's value depends on neither: brgemm reduces K the same way for every
 * row whatever the call's row count. */
#define ROWSPLIT_MIN 64

static void blocked_part(void *arg, int part, int nparts)
{
    const linear_job_t *j = arg;
    thread_state();
    if (j->rowsplit) {
        const int mround = MROUND, units = (j->M + mround - 1) / mround;
        const int a = (int)((long)units * part / nparts) * mround, b = (int)((long)units * (part + 1) / nparts) * mround;
        if (a < b)
            blocked_range(j, 0, j->N, a, b < j->M ? b : j->M);
        return;
    }
    const int blocks = (j->N + NBLOCK - 1) / NBLOCK;
    const int b0 = (int)((long)blocks * part / nparts), b1 = (int)((long)blocks * (part + 1) / nparts);
    const int c1 = b1 * NBLOCK < j->N ? b1 * NBLOCK : j->N;
    if (b0 * NBLOCK < c1)
        blocked_range(j, b0 * NBLOCK, c1, 0, j->M);
}

static void linear_cols(const linear_job_t *j, int c0, int c1)
{
    if (c0 >= c1)
        return;
    thread_state();
    linear_cols_f32(j, c0, c1);
}

static void linear_part(void *arg, int part, int nparts)
{
    const linear_job_t *j = arg;
    const int blocks = (j->N + NBLOCK - 1) / NBLOCK;
    const int b0 = (int)((long)blocks * part / nparts), b1 = (int)((long)blocks * (part + 1) / nparts);
    const int c1 = b1 * NBLOCK < j->N ? b1 * NBLOCK : j->N;
    linear_cols(j, b0 * NBLOCK, c1);
}


/* Rounds x (M, K, row stride ldx) to bf16, or quantizes it to u8 with one
 * scale per row (q = round(x / s) + 128, s = max|x| / 127), into X. */
static void convert_src(linear_job_t *j)
{
    const int dt = j->h->dtype;
    const int mround = MROUND, Mp = (j->M + mround - 1) / mround * mround;
    const size_t esz = dt == MM_DT_BF16 ? 2 : 1, n = (size_t)Mp * (size_t)j->K;
    if (n * esz > X.cap) {
        free(X.p);
        X.p = aligned_alloc(64, (n * esz + 63) / 64 * 64);
        if (!X.p)
            die("scratch allocation", dnnl_out_of_memory);
        X.cap = n * esz;
    }
    /* padding rows: zero (bf16 0, u8 128); their products are never read */
    memset((char *)X.p + (size_t)j->M * j->K * esz, dt == MM_DT_BF16 ? 0 : 128, (size_t)(Mp - j->M) * j->K * esz);
    if (dt == MM_DT_BF16) {
        for (int m = 0; m < j->M; m++)
            row_to_bf16((uint16_t *)X.p + (size_t)m * j->K, j->x + (size_t)m * j->ldx, j->K);
    } else {
        if ((size_t)j->M > X.sccap) {
            free(X.sc);
            X.sc = malloc((size_t)j->M * sizeof(float));
            if (!X.sc)
                die("scratch allocation", dnnl_out_of_memory);
            X.sccap = (size_t)j->M;
        }
        for (int m = 0; m < j->M; m++)
            X.sc[m] = row_to_u8((uint8_t *)X.p + (size_t)m * j->K, j->x + (size_t)m * j->ldx, j->K);
        j->xsc = X.sc;
    }
    j->xs = X.p;
}

static void linear_run(linear_job_t *j)
{
    if (j->M <= 0 || j->N <= 0)
        return;
    if (j->h->magic != LIN_MAGIC || j->h->N != j->N || j->h->K != j->K)
        die("linear: weights packed for another shape", dnnl_invalid_arguments);
    if (j->h->dtype == MM_DT_Q4) {
        mm_q4_layout_t l;
        mm_nn_q4_layout(j->N, j->K, sizeof *j->h, &l);
        mm_nn_q4_linear(j->y, j->ldy, j->x, j->ldx, j->h, &l, j->b, j->M, j->K, j->N, j->act, j->add);
        return;
    }
    const int small = (double)j->M * j->N * j->K < 5e5; /* a pool wake-up would cost more */
    if (j->h->dtype == MM_DT_F32) {
        if (small || j->N <= NBLOCK)
            linear_cols(j, 0, j->N);
        else
            mm_nn_parallel(linear_part, (void *)j);
        return;
    }
    convert_src(j);
    const int P = mm_nn_threads(), colsplit = j->h->split && j->N > NBLOCK;
    j->rowsplit = j->M >= P * ROWSPLIT_MIN || !colsplit;
    if (small || P == 1 || (!colsplit && j->M < 2 * 16)) {
        thread_state();
        blocked_range(j, 0, j->N, 0, j->M);
        return;
    }
    mm_nn_parallel(blocked_part, (void *)j);
}

void mm_nn_linear(float *y, int ldy, const float *x, int ldx, const void *wp, const float *b,
                  int M, int K, int N, mm_act_t act)
{
    linear_job_t j = {.y = y, .x = x, .h = wp, .b = b, .ldy = ldy, .ldx = ldx,
                      .M = M, .K = K, .N = N, .act = act};
    linear_run(&j);
}

void mm_nn_linear_add(float *y, int ldy, const float *x, int ldx, const void *wp, const float *b,
                      int M, int K, int N)
{
    linear_job_t j = {.y = y, .x = x, .h = wp, .b = b, .ldy = ldy, .ldx = ldx,
                      .M = M, .K = K, .N = N, .act = MM_ACT_NONE, .add = 1};
    linear_run(&j);
}

/* ============================================================ strided == */

/* c (M, N) = scale * x (M, K) · op(w), op(w) = w^T for w (N, K) (NT) or w
 * itself for w (K, N) (NN); every dimension and stride is a run-time one. */
static void strided(int kind, float *c, int ldc, const float *x, int ldx, const float *w, int ldw,
                    int M, int N, int K, float scale)
{
    if (M <= 0 || N <= 0)
        return;
    pkey_t key = {.kind = kind, .scale = scale};
    thread_state();
    int i = lookup(&key);
    bind_t *b = &T.b[i];
    const long shape[8] = {M, N, K, ldc, ldx, ldw};
    if (!b->src || memcmp(shape, b->shape, sizeof shape)) {
        dnnl_memory_desc_t a, wm, cm;
        md_strided(&a, M, K, ldx, 1);
        if (kind == K_NT)
            md_strided(&wm, K, N, 1, ldw);
        else
            md_strided(&wm, K, N, ldw, 1);
        md_strided(&cm, M, N, ldc, 1);
        rebind(b, shape, &a, &wm, NULL, &cm);
    }
    execute(i, b, x, w, NULL, c);
}

void mm_nn_matmul_nt(float *c, int ldc, const float *x, int ldx, const float *w, int ldw,
                     int M, int N, int K, float scale)
{
    strided(K_NT, c, ldc, x, ldx, w, ldw, M, N, K, scale);
}

void mm_nn_matmul_nn(float *c, int ldc, const float *x, int ldx, const float *w, int ldw,
                     int M, int N, int K)
{
    strided(K_NN, c, ldc, x, ldx, w, ldw, M, N, K, 1.0f);
}
