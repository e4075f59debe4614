/* Every matrix product of the kernels, through oneDNN's matmul primitive:
 * dense layers (mm_nn_linear, mm_nn_linear_add: bias, activation and the
 * residual add fused as post-ops) and the strided products of attention
 * (mm_nn_matmul_nt, mm_nn_matmul_nn).
 *
 * Weights: the pack stores W (N, K) transposed, as a plain (K, N) matrix
 * (format ab). That is what oneDNN's f32 GEMM streams without re-laying it
 * out (measured with Debian's libdnnl 2.6: (K, N) at 8 rows ran 0.19 ms
 * against 0.37 ms for the (N, K) nn.Linear layout), it needs no oneDNN call
 * at pack time (the master only copies floats), and a column range of it is
 * again a (K, n) matrix with row stride N, which is how the work is split.
 * oneDNN's blocked layout (format any -> BA16a64b, brgemm kernels) does not
 * depend on M, but brgemm takes no run-time M in 2.6 (one JIT primitive,
 * ~0.3 ms to make, per token count) and was within 5-15% of this one.
 *
 * Primitives: made once per shape class with M (and, for the attention
 * products, every dimension and row stride) left as DNNL_RUNTIME_DIM_VAL,
 * so one primitive serves every batch, and kept in a per-process table. The
 * memory objects that bind buffers to a primitive are per thread and made
 * again only when a concrete shape changes (once per layer shape per
 * forward); execution only sets data handles.
 *
 * Threads: oneDNN runs single-threaded (omp_set_num_threads(1) in every
 * calling thread) and mm_nn_linear splits N over the nn pool instead.
 * Debian's libdnnl uses libgomp, which is not fork-safe: a child of a
 * process that ran an OpenMP team hangs at its first parallel region, and
 * the master forks workers after tests (and tools) have run forwards. The
 * pool restarts itself after fork; a one-thread OpenMP never starts a team.
 * Each part is a whole range of columns, so every output element is the
 * same computation whatever the thread count.
 *
 * Fork: the table and the engine record the pid that made them; a process
 * that finds another pid (a forked child) starts a fresh table. */
#include "mmembed/nn.h"

#include <dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PRIMS 1024 /* distinct (shape, post-ops) keys per process: ~40 per CLIP/USE model */
#define RT DNNL_RUNTIME_DIM_VAL
#define NBLOCK 64 /* columns per unit of the split across threads */

enum { K_LINEAR, K_NT, K_NN };

/* One primitive and the key it was made for. */
typedef struct {
    int kind;
    int K, N, ldw, ldx, ldy;  /* K_LINEAR: the shape but M */
    int act, add, bias;
    float scale;              /* K_NT */
    dnnl_primitive_t prim;
    dnnl_memory_desc_t wmd, bmd; /* K_LINEAR: fixed weights and bias */
} prim_t;

static struct {
    pthread_mutex_t mu;
    pid_t pid;
    dnnl_engine_t eng;
    prim_t p[MAX_PRIMS];
    int n;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* A thread's bindings of one primitive: memory objects for the last
 * concrete shape it ran (dims[] and strides, compared before each call). */
typedef struct {
    dnnl_memory_t src, wei, bias, dst;
    long shape[8];
} bind_t;

static _Thread_local struct {
    pid_t pid;
    dnnl_stream_t stream;
    bind_t b[MAX_PRIMS];
} T;

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

/* ============================================================ packing == */

size_t mm_nn_packed_size(int N, int K)
{
    return (size_t)N * (size_t)K;
}

void mm_nn_pack_row(float *packed, int N, int K, int n, const float *row)
{
    for (int k = 0; k < K; k++)
        packed[(size_t)k * N + n] = row[k];
}

void mm_nn_pack(float *packed, const float *w, int N, int K)
{
    for (int n = 0; n < N; n++)
        mm_nn_pack_row(packed, N, K, n, w + (size_t)n * K);
}

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
    CK(dnnl_engine_create(&S.eng, dnnl_cpu, 0));
    S.pid = me;
}

/* Thread exit (a pool helper stopped by mm_nn_set_threads): its stream
 * and memory objects go with it. */
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

static void thread_exit(void *arg)
{
    (void)arg;
    if (T.pid != getpid())
        return;
    for (int i = 0; i < MAX_PRIMS; i++) {
        dnnl_memory_t *m[4] = {&T.b[i].src, &T.b[i].wei, &T.b[i].bias, &T.b[i].dst};
        for (int j = 0; j < 4; j++)
            if (*m[j])
                dnnl_memory_destroy(*m[j]);
    }
    dnnl_stream_destroy(T.stream);
    memset(&T, 0, sizeof T);
}

static void make_exit_key(void)
{
    if (pthread_key_create(&exit_key, thread_exit) != 0)
        die("pthread_key_create", dnnl_out_of_memory);
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
    pthread_once(&exit_once, make_exit_key);
    pthread_setspecific(exit_key, &T); /* non-NULL, so thread_exit runs */
}

static void md_strided(dnnl_memory_desc_t *md, int64_t d0, int64_t d1, int64_t s0, int64_t s1)
{
    dnnl_dims_t dims = {d0, d1}, strides = {s0, s1};
    CK(dnnl_memory_desc_init_by_strides(md, 2, dims, dnnl_f32, strides));
}

static dnnl_primitive_t make_prim(const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *w,
                                  const dnnl_memory_desc_t *b, const dnnl_memory_desc_t *c,
                                  dnnl_primitive_attr_t attr)
{
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t p;
    CK(dnnl_matmul_desc_init(&md, a, w, b, c));
    CK(dnnl_primitive_desc_create(&pd, &md, attr, S.eng, NULL));
    CK(dnnl_primitive_create(&p, pd));
    CK(dnnl_primitive_desc_destroy(pd));
    return p;
}

/* Finds or makes the primitive for key `k`; returns its index. */
static int lookup(const prim_t *k)
{
    pthread_mutex_lock(&S.mu);
    process_state();
    int i = 0;
    for (; i < S.n; i++) {
        const prim_t *p = &S.p[i];
        if (p->kind == k->kind && p->K == k->K && p->N == k->N && p->ldw == k->ldw && p->ldx == k->ldx &&
            p->ldy == k->ldy && p->act == k->act && p->add == k->add && p->bias == k->bias &&
            p->scale == k->scale)
            break;
    }
    if (i < S.n) {
        pthread_mutex_unlock(&S.mu);
        return i;
    }
    if (S.n == MAX_PRIMS)
        die("primitive table", dnnl_out_of_memory);
    prim_t *p = &S.p[i];
    *p = *k;
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t po;
    CK(dnnl_primitive_attr_create(&attr));
    CK(dnnl_post_ops_create(&po));
    dnnl_memory_desc_t a, c;
    if (k->kind == K_LINEAR) {
        md_strided(&a, RT, k->K, k->ldx, 1);
        md_strided(&p->wmd, k->K, k->N, k->ldw, 1);
        md_strided(&p->bmd, 1, k->N, k->N, 1);
        md_strided(&c, RT, k->N, k->ldy, 1);
        /* matmul adds the bias, then the post-ops run in order */
        if (k->add)
            CK(dnnl_post_ops_append_sum(po, 1.0f));
        if (k->act == MM_ACT_GELU)
            CK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_erf, 0.0f, 0.0f));
        else if (k->act == MM_ACT_QUICK_GELU) /* x * sigmoid(alpha x) */
            CK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_swish, 1.702f, 0.0f));
        CK(dnnl_primitive_attr_set_post_ops(attr, po));
        p->prim = make_prim(&a, &p->wmd, k->bias ? &p->bmd : NULL, &c, attr);
    } else {
        dnnl_memory_desc_t w;
        md_strided(&a, RT, RT, RT, 1);
        if (k->kind == K_NT) /* w (N, K) read as its transpose (K, N) */
            md_strided(&w, RT, RT, 1, RT);
        else
            md_strided(&w, RT, RT, RT, 1);
        md_strided(&c, RT, RT, RT, 1);
        if (k->scale != 1.0f)
            CK(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->scale));
        p->prim = make_prim(&a, &w, NULL, &c, attr);
    }
    CK(dnnl_post_ops_destroy(po));
    CK(dnnl_primitive_attr_destroy(attr));
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

static void execute(int i, bind_t *b, const float *x, const float *w, const float *bias, float *y)
{
    CK(dnnl_memory_set_data_handle(b->src, (void *)x));
    CK(dnnl_memory_set_data_handle(b->wei, (void *)w));
    CK(dnnl_memory_set_data_handle(b->dst, y));
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, b->src}, {DNNL_ARG_WEIGHTS, b->wei}, {DNNL_ARG_DST, b->dst}};
    int nargs = 3;
    if (bias) {
        CK(dnnl_memory_set_data_handle(b->bias, (void *)bias));
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, b->bias};
    }
    CK(dnnl_primitive_execute(S.p[i].prim, T.stream, nargs, args));
    CK(dnnl_stream_wait(T.stream));
}

/* ============================================================ linear === */

typedef struct {
    float *y;
    const float *x, *wp, *b;
    int ldy, ldx, M, K, N;
    mm_act_t act;
    int add;
} linear_job_t;

/* Columns [c0, c1) of y: a (K, c1 - c0) slice of the packed W, row stride N. */
static void linear_cols(const linear_job_t *j, int c0, int c1)
{
    if (c0 >= c1)
        return;
    prim_t key = {.kind = K_LINEAR, .K = j->K, .N = c1 - c0, .ldw = j->N, .ldx = j->ldx, .ldy = j->ldy,
                  .act = j->act, .add = j->add, .bias = j->b != NULL, .scale = 1.0f};
    thread_state();
    int i = lookup(&key);
    bind_t *b = &T.b[i];
    const long shape[8] = {j->M};
    if (!b->src || memcmp(shape, b->shape, sizeof shape)) {
        dnnl_memory_desc_t a, c;
        md_strided(&a, j->M, j->K, j->ldx, 1);
        md_strided(&c, j->M, c1 - c0, j->ldy, 1);
        rebind(b, shape, &a, &S.p[i].wmd, &S.p[i].bmd, &c);
    }
    execute(i, b, j->x, j->wp + c0, j->b ? j->b + c0 : NULL, j->y + c0);
}

static void linear_part(void *arg, int part, int nparts)
{
    const linear_job_t *j = arg;
    const int blocks = (j->N + NBLOCK - 1) / NBLOCK;
    const int b0 = (int)((long)blocks * part / nparts), b1 = (int)((long)blocks * (part + 1) / nparts);
    const int c1 = b1 * NBLOCK < j->N ? b1 * NBLOCK : j->N;
    linear_cols(j, b0 * NBLOCK, c1);
}

static void linear_run(const linear_job_t *j)
{
    if (j->M <= 0 || j->N <= 0)
        return;
    if ((double)j->M * j->N * j->K < 5e5 || j->N <= NBLOCK) /* a pool wake-up would cost more */
        linear_cols(j, 0, j->N);
    else
        mm_nn_parallel(linear_part, (void *)j);
}

void mm_nn_linear(float *y, int ldy, const float *x, int ldx, const float *wp, const float *b,
                  int M, int K, int N, mm_act_t act)
{
    linear_job_t j = {.y = y, .x = x, .wp = wp, .b = b, .ldy = ldy, .ldx = ldx,
                      .M = M, .K = K, .N = N, .act = act};
    linear_run(&j);
}

void mm_nn_linear_add(float *y, int ldy, const float *x, int ldx, const float *wp, const float *b,
                      int M, int K, int N)
{
    linear_job_t j = {.y = y, .x = x, .wp = wp, .b = b, .ldy = ldy, .ldx = ldx,
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
    prim_t key = {.kind = kind, .scale = scale};
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
