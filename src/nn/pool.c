/* A small persistent thread pool for the nn kernels: mm_nn_parallel runs
 * parts 0..n-1 of one closure on the caller and the helpers and returns
 * when all are done.
 *
 * Parts are claimed from an atomic counter rather than owned by a thread:
 * if a helper is slow to wake (another process holds its core), the caller
 * runs that part itself instead of waiting for it. Dispatch is a
 * generation counter: helpers spin briefly on it, then sleep on a condition
 * variable, so back-to-back kernels (a forward pass issues ~100) do not pay
 * a futex wake each, while an idle worker uses no CPU.
 * The pool belongs to one process: after fork() the helpers are gone, so a
 * child that sees a different pid starts its own. */
#include "mmembed/nn.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define MAX_THREADS 64
#define SPIN 4000 /* pause iterations (~20-200 us) before sleeping */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    pthread_t th[MAX_THREADS];
    int nthreads;          /* including the caller; 1 = no helpers */
    int wanted;            /* what mm_nn_set_threads asked for */
    pid_t pid;             /* process that owns the helpers */
    atomic_uint gen;       /* bumped once per job */
    atomic_int next;       /* next part to claim */
    atomic_int finished;   /* parts completed */
    atomic_int stop;
    atomic_int nparts;
    mm_nn_task_fn fn;      /* written before `next` is reset, read after a claim */
    void *ctx;
} P = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .go = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
    .nthreads = 1,
    .wanted = 1,
};

static unsigned start_gen; /* written before pthread_create, read by the new helper */

static _Thread_local int in_task; /* inside fn: nested mm_nn_parallel runs inline */

/* Claims and runs parts of the current job until none are left. */
static void run_parts(void)
{
    int p, n = atomic_load(&P.nparts);
    in_task = 1;
    while ((p = atomic_fetch_add(&P.next, 1)) < n) {
        P.fn(P.ctx, p, n);
        if (atomic_fetch_add(&P.finished, 1) + 1 == n) {
            pthread_mutex_lock(&P.mu);
            pthread_cond_signal(&P.done);
            pthread_mutex_unlock(&P.mu);
        }
    }
    in_task = 0;
}

static void *helper(void *arg)
{
    (void)arg;
    /* the generation at creation time: reading P.gen here instead could
     * already see the first job's bump and miss that job */
    unsigned seen = start_gen;
    for (;;) {
        for (int i = 0; i < SPIN && atomic_load(&P.gen) == seen && !atomic_load(&P.stop); i++)
            cpu_relax();
        if (atomic_load(&P.gen) == seen && !atomic_load(&P.stop)) {
            pthread_mutex_lock(&P.mu);
            while (atomic_load(&P.gen) == seen && !atomic_load(&P.stop))
                pthread_cond_wait(&P.go, &P.mu);
            pthread_mutex_unlock(&P.mu);
        }
        if (atomic_load(&P.stop))
            return NULL;
        seen = atomic_load(&P.gen);
        run_parts();
    }
}

static void stop_helpers(void)
{
    if (P.nthreads > 1 && P.pid == getpid()) {
        pthread_mutex_lock(&P.mu);
        atomic_store(&P.stop, 1);
        pthread_cond_broadcast(&P.go);
        pthread_mutex_unlock(&P.mu);
        for (int i = 1; i < P.nthreads; i++)
            pthread_join(P.th[i], NULL);
    }
    P.nthreads = 1;
    atomic_store(&P.stop, 0);
}

/* (Re)starts helpers so that P.nthreads == P.wanted in this process. */
static void ensure_pool(void)
{
    pid_t me = getpid();
    if (P.pid == me && P.nthreads == P.wanted)
        return;
    if (P.pid != me) {
        /* inherited across fork: the helpers do not exist here, and the
         * locks may have been copied in any state */
        pthread_mutex_init(&P.mu, NULL);
        pthread_cond_init(&P.go, NULL);
        pthread_cond_init(&P.done, NULL);
        P.nthreads = 1;
    } else {
        stop_helpers();
    }
    P.pid = me;
    start_gen = atomic_load(&P.gen);
    int n = 1;
    for (; n < P.wanted; n++) {
        if (pthread_create(&P.th[n], NULL, helper, (void *)(intptr_t)n) != 0)
            break;
    }
    P.nthreads = n;
}

void mm_nn_set_threads(int n)
{
    P.wanted = n < 1 ? 1 : (n > MAX_THREADS ? MAX_THREADS : n);
    ensure_pool();
}

int mm_nn_threads(void)
{
    return P.wanted;
}

void mm_nn_parallel(mm_nn_task_fn fn, void *ctx)
{
    if (in_task) { /* a kernel called from inside a task: already parallel */
        fn(ctx, 0, 1);
        return;
    }
    ensure_pool();
    if (P.nthreads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    /* publish the job: fn/ctx/nparts and `finished` before `next` opens it */
    P.fn = fn;
    P.ctx = ctx;
    atomic_store(&P.nparts, P.nthreads);
    atomic_store(&P.finished, 0);
    atomic_store(&P.next, 0);
    pthread_mutex_lock(&P.mu);
    atomic_fetch_add(&P.gen, 1);
    pthread_cond_broadcast(&P.go);
    pthread_mutex_unlock(&P.mu);
    run_parts();
    const int n = P.nthreads;
    for (int i = 0; i < SPIN && atomic_load(&P.finished) < n; i++)
        cpu_relax();
    if (atomic_load(&P.finished) < n) {
        pthread_mutex_lock(&P.mu);
        while (atomic_load(&P.finished) < n)
            pthread_cond_wait(&P.done, &P.mu);
        pthread_mutex_unlock(&P.mu);
    }
}
