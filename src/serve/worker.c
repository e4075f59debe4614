/* Worker process: two threads. The accept thread takes every FastCGI
 * connection at once: control routes (/health, /metrics, /status, /info) are
 * answered right there, embedding work is queued for the request thread
 * while the queue has room (queue_depth requests besides the running ones),
 * and otherwise is answered 503 + Retry-After within microseconds, so nginx
 * moves the request to another worker (and to the overflow process only
 * when every worker's queue is full). When the request thread becomes free
 * it takes the oldest request and, if that is a text route or /embed/image,
 * every other queued request of that kind (oldest first, within the kind's
 * bytes of bodies and MM_SB_BATCH requests) and runs them as one batch
 * (mm_embed_text_batch, mm_embed_image_batch). */
#include <errno.h>
#include <fcntl.h>
#include <fcgiapp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "mmembed/embed.h"
#include "mmembed/http.h"
#include "mmembed/image.h"
#include "mmembed/log.h"
#include "mmembed/sandbox.h"
#include "mmembed/serve.h"

#define QMAX 66                  /* queue_depth (<= 64) + running + accept */
#define BATCH_BYTES (256 << 10)  /* text bodies one batch takes (the first request always goes) */
/* Image bodies one batch takes: the batch's pixel budget, as far as it can
 * be known before parsing (a body's bytes bound what its images cost to
 * decode; ~30 requests of one 640x480 JPEG in base64 JSON). The encoder
 * then runs IMG_CHUNK images a pass. */
#define IMG_BATCH_BYTES (4 << 20)

/* A request waiting for the request thread. */
typedef struct {
    FCGX_Request *f;
    int64_t accepted_us;         /* monotonic: its queue wait starts here */
    int64_t bytes;               /* its body (Content-Length): the batch budget before parsing */
    int batch;                   /* MM_BATCH_*: may run with queued requests of its kind */
    int alone;                   /* it was in a batch that killed a worker: runs by itself */
} qitem_t;

static mm_worker_ctx_t *W;
static int sig_pipe[2] = {-1, -1};
static volatile sig_atomic_t got_quit, got_term, got_reopen;

static pthread_mutex_t q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cv = PTHREAD_COND_INITIALIZER;
static qitem_t q_items[QMAX];     /* oldest first */
static int q_len;                 /* queued, not yet taken */
static int q_running;             /* 1 while the request thread works */
static int q_closing;             /* accept loop ended: drain and exit */
static FCGX_Request pool[QMAX];
static FCGX_Request *free_list[QMAX];
static int n_free;
static long served;
static pid_t master_pid;

static void on_signal(int sig)
{
    if (sig == SIGTERM || sig == SIGINT) got_term = 1;
    else if (sig == SIGUSR1) got_reopen = 1;
    else got_quit = 1;
    char c = (char)sig;
    ssize_t w = write(sig_pipe[1], &c, 1);
    (void)w;
}

static FCGX_Request *take_free(void)
{
    FCGX_Request *r = NULL;
    pthread_mutex_lock(&q_mu);
    if (n_free > 0) r = free_list[--n_free];
    pthread_mutex_unlock(&q_mu);
    return r;
}

static void give_free(FCGX_Request *r)
{
    pthread_mutex_lock(&q_mu);
    free_list[n_free++] = r;
    pthread_mutex_unlock(&q_mu);
}

static void log_request(const mm_http_req_t *r, double secs)
{
    if (r->status >= 500 && r->status != 503)
        mm_log_warn("req=%s %s %s %d %.3fms", r->request_id, r->method, r->uri, r->status, secs * 1e3);
    else
        mm_log_debug("req=%s %s %s %d %.3fms", r->request_id, r->method, r->uri, r->status, secs * 1e3);
}

static void finish(FCGX_Request *f, mm_http_req_t *r)
{
    double secs = (mm_now_us() - r->start_us) / 1e6;
    if (!r->status) mm_http_error(r, 500, NULL, "no response was produced");
    mm_sb_record(W->slot, r->route, r->status, secs);
    log_request(r, secs);
    FCGX_Finish_r(f);
}

static void update_max_busy(void)
{
    int busy = 0;
    for (int i = 0; i < MM_SB_SLOTS; i++)
        if (W->sb->slots[i].state == MM_SLOT_BUSY) busy++;
    int cur = W->sb->max_busy;
    while (busy > cur && !__atomic_compare_exchange_n(&W->sb->max_busy, &cur, busy, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

/* ---------------------------------------------------------------- request thread */

/* Take the next pass under q_mu: the oldest request, and with a batchable
 * request every other queued request of its kind that fits the batch
 * (oldest first; a big one left behind is at the head for the next pass). */
static int take_pass(qitem_t *take)
{
    int n = 0;
    take[n++] = q_items[0];
    int64_t bytes = MM_MAX(take[0].bytes, 0);
    const int64_t budget = take[0].batch == MM_BATCH_IMAGE ? IMG_BATCH_BYTES : BATCH_BYTES;
    int keep = 0;
    for (int i = 1; i < q_len; i++) {
        qitem_t *q = &q_items[i];
        int64_t b = MM_MAX(q->bytes, 0);
        if (take[0].batch && !take[0].alone && q->batch == take[0].batch && !q->alone && n < MM_SB_BATCH &&
            bytes + b <= budget) {
            take[n++] = *q;
            bytes += b;
        } else {
            q_items[keep++] = *q;
        }
    }
    q_len = keep;
    W->slot->queued = q_len;
    return n;
}

/* What the master needs while the pass runs: its requests' attempt ids
 * (poison marks when it dies or runs past request_timeout) and its start. */
static void publish_pass(mm_http_req_t *const *rs, int n, int64_t start)
{
    mm_sb_slot_t *s = W->slot;
    s->batch_n = 0;
    for (int i = 0; i < n; i++) snprintf(s->batch_fp[i], sizeof s->batch_fp[i], "%s", rs[i]->attempt_id);
    s->req_route = rs[0]->route;
    snprintf(s->req_method, sizeof s->req_method, "%s", rs[0]->method);
    snprintf(s->req_uri, sizeof s->req_uri, "%s", rs[0]->uri);
    snprintf(s->req_fp, sizeof s->req_fp, "%s", rs[0]->attempt_id);
    __atomic_store_n(&s->batch_n, n, __ATOMIC_RELEASE);
    s->req_start_us = start;
    __atomic_store_n(&s->state, MM_SLOT_BUSY, __ATOMIC_RELEASE);
}

static void *request_thread(void *arg)
{
    (void)arg;
    static mm_http_req_t reqs[MM_SB_BATCH];
    mm_http_req_t *rs[MM_SB_BATCH];
    qitem_t take[MM_SB_BATCH];
    double waits[MM_SB_BATCH];
    for (int i = 0; i < MM_SB_BATCH; i++) {
        mm_buf_init(&reqs[i].out);
        rs[i] = &reqs[i];
    }
    for (;;) {
        pthread_mutex_lock(&q_mu);
        while (q_len == 0 && !q_closing) pthread_cond_wait(&q_cv, &q_mu);
        if (q_len == 0 && q_closing) {
            pthread_mutex_unlock(&q_mu);
            break;
        }
        int n = take_pass(take);
        q_running = 1;
        pthread_mutex_unlock(&q_mu);

        int64_t start = mm_now_us();
        for (int i = 0; i < n; i++) {
            mm_http_req_init(rs[i], take[i].f);
            rs[i]->start_us = take[i].accepted_us;   /* durations count from accept, queue wait included */
            mm_router_classify(rs[i]);
            waits[i] = (start - take[i].accepted_us) / 1e6;
        }
        publish_pass(rs, n, start);
        update_max_busy();
        mm_sb_record_batch(W->slot, n, waits);

        mm_image_budget_begin();   /* limits.image_budget counts per request */
        if (take[0].batch && !take[0].alone) mm_router_handle_batch(W, rs, n);
        else mm_router_handle(W, rs[0]);
        /* Free for the next request before the replies leave: a client that
         * sends its next request as soon as it has its answer must not
         * find the worker still "busy". */
        pthread_mutex_lock(&q_mu);
        q_running = 0;
        pthread_mutex_unlock(&q_mu);
        W->slot->req_start_us = 0;
        W->slot->batch_n = 0;
        __atomic_store_n(&W->slot->state, MM_SLOT_IDLE, __ATOMIC_RELEASE);
        for (int i = 0; i < n; i++) {
            finish(take[i].f, rs[i]);
            mm_http_req_release(rs[i]);
            give_free(take[i].f);
        }
        pthread_mutex_lock(&q_mu);
        served += n;
        if (W->conf->max_requests && served >= W->conf->max_requests) {
            got_quit = 1;   /* recycle: stop accepting, finish what is queued */
            ssize_t wr = write(sig_pipe[1], "r", 1);
            (void)wr;
        }
        pthread_mutex_unlock(&q_mu);
    }
    for (int i = 0; i < MM_SB_BATCH; i++) mm_buf_free(&reqs[i].out);
    return NULL;
}

/* ---------------------------------------------------------------- accept thread */

static void reject_busy(FCGX_Request *f, mm_http_req_t *r)
{
    mm_http_drain(r, W->conf->max_body_bytes);
    mm_http_error(r, 503, "busy", "worker %d is busy; retry shortly", W->index);
    __atomic_add_fetch(&W->slot->rejected_busy, 1, __ATOMIC_RELAXED);
    finish(f, r);
}

/* A retry of a request that crashed a worker or ran past request_timeout
 * is answered at once (422: clients do not retry it) instead of being run,
 * so one bad request costs one worker attempt, not one per worker. */
static int refuse_poison(FCGX_Request *f, mm_http_req_t *r, int *alone)
{
    int cause = mm_sb_poison_find(W->sb, r->attempt_id);
    if (cause < 0) return 0;
    if (cause & MM_POISON_SUSPECT) {   /* its batch died: it runs again, by itself */
        if (alone) *alone = 1;
        mm_log_info("req=%s %s %s was in a batch that %s; it runs alone", r->request_id, r->method, r->uri,
                    (cause & ~MM_POISON_SUSPECT) == MM_POISON_TIMEOUT ? "ran past request_timeout" : "crashed a worker");
        return 0;
    }
    mm_http_drain(r, W->conf->max_body_bytes);
    if (cause == MM_POISON_TIMEOUT)
        mm_http_error(r, 422, "request_timeout",
                      "this request ran past request_timeout (%gs) and was stopped; it is not run again "
                      "(send fewer or smaller inputs)", W->conf->request_timeout);
    else
        mm_http_error(r, 422, "request_crashed_worker",
                      "this request crashed a worker (signal %d, %s) and is not run again; the server logged it "
                      "as request %s", cause, sigabbrev_np(cause) ? sigabbrev_np(cause) : "?", r->request_id);
    __atomic_add_fetch(&W->sb->poison_refused, 1, __ATOMIC_RELAXED);
    mm_log_warn("req=%s %s %s refused: it %s on an earlier attempt", r->request_id, r->method, r->uri,
                cause == MM_POISON_TIMEOUT ? "ran past request_timeout" : "crashed a worker");
    finish(f, r);
    return 1;
}

static void accept_loop(void)
{
    mm_http_req_t r;
    memset(&r, 0, sizeof r);
    mm_buf_init(&r.out);
    struct pollfd pfd[2] = {{.fd = W->listen_fd, .events = POLLIN}, {.fd = sig_pipe[0], .events = POLLIN}};
    while (!got_quit && !got_term) {
        W->slot->heartbeat_us = mm_now_us();   /* the master replaces a worker whose heartbeat stops */
        int n = poll(pfd, 2, 1000);
        if (n < 0 && errno != EINTR) break;
        if (got_quit || got_term) break;
        if (got_reopen) {
            got_reopen = 0;
            mm_log_reopen();
        }
        if (getppid() != master_pid) {  /* master gone */
            mm_log_warn("master died; exiting");
            break;
        }
        if (n <= 0 || !(pfd[0].revents & POLLIN)) {
            if (pfd[1].revents & POLLIN) {
                char tmp[16];
                ssize_t rd = read(sig_pipe[0], tmp, sizeof tmp);
                (void)rd;
            }
            continue;
        }
        FCGX_Request *f = take_free();
        if (!f) continue;          /* cannot happen: the pool outnumbers the queue */
        if (FCGX_Accept_r(f) < 0) {
            give_free(f);
            continue;
        }
        mm_http_req_init(&r, f);
        r.start_us = mm_now_us();
        if (mm_router_classify(&r)) {
            mm_router_handle(W, &r);
            finish(f, &r);
            mm_http_req_release(&r);
            give_free(f);
            continue;
        }
        int alone = 0;
        if (refuse_poison(f, &r, &alone)) {
            mm_http_req_release(&r);
            give_free(f);
            continue;
        }
        qitem_t it = {.f = f, .accepted_us = r.start_us, .bytes = r.content_length, .batch = mm_router_batchable(&r),
                      .alone = alone};
        pthread_mutex_lock(&q_mu);
        int room = q_len + q_running <= W->conf->queue_depth;
        if (room) {
            q_items[q_len++] = it;
            W->slot->queued = q_len;
            pthread_cond_signal(&q_cv);
        }
        pthread_mutex_unlock(&q_mu);
        if (!room) {
            reject_busy(f, &r);
            mm_http_req_release(&r);
            give_free(f);
        }
    }
    mm_buf_free(&r.out);
}

/* ---------------------------------------------------------------- crash marking */

static const int crash_sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGSYS, SIGTRAP};
static struct sigaction crash_prev[NSIG];

/* The request running when the process dies (a fault, a denied system
 * call) is marked as poison first: async-signal-safe work only. */
static void mark_running(int sig)
{
    if (W && W->slot->req_start_us) mm_sb_poison_mark_running(W->sb, W->slot, sig);
}

/* A fault marks the running request, then hands the signal to whoever
 * handled it before (ASan's reporter) or to the default action. */
static void on_crash(int sig, siginfo_t *si, void *uc)
{
    mark_running(sig);
    const struct sigaction *p = &crash_prev[sig];
    if ((p->sa_flags & SA_SIGINFO) && p->sa_sigaction) p->sa_sigaction(sig, si, uc);
    else if (!(p->sa_flags & SA_SIGINFO) && p->sa_handler != SIG_DFL && p->sa_handler != SIG_IGN) p->sa_handler(sig);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_crash_marking(void)
{
    mm_sandbox_on_deny(mark_running);   /* a denied system call ends the worker like a fault */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_crash;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < MM_ARRAY_LEN(crash_sigs); i++) sigaction(crash_sigs[i], &sa, &crash_prev[crash_sigs[i]]);
}

static void setup_process(mm_worker_ctx_t *ctx, const char *role_fmt)
{
    W = ctx;
    mm_executor_worker_init(ctx->slot);   /* executor calls wait until its request's deadline */
    char role[48];
    snprintf(role, sizeof role, role_fmt, ctx->index);
    mm_log_set_role(role);
    master_pid = getppid();
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != master_pid) _exit(0);
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) _exit(70);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    mm_http_set_retry_after(ctx->conf->retry_after);
    mm_image_set_budget(ctx->conf->image_budget);
    FCGX_Init();
}

/* Past this point the process can make only the system calls of
 * src/serve/sandbox.c's list (sandbox = true, the default). A worker that
 * cannot enter it does not serve. */
static void enter_sandbox(const mm_worker_ctx_t *ctx)
{
    if (!ctx->conf->sandbox) return;
    char err[MM_ERRLEN] = "";
    int rc = mm_sandbox_enter(err, sizeof err);
    if (rc == MM_E_UNSUPPORTED) {
        mm_log_info("%s", err);
    } else if (rc != MM_OK) {
        mm_log_error("%s (sandbox = false runs workers without it)", err);
        _exit(74);
    }
}

void mm_worker_standin(mm_worker_ctx_t *ctx)
{
    setup_process(ctx, ctx->index < 0 ? "overflow" : "standin %d");
    enter_sandbox(ctx);
    FCGX_Request f;
    FCGX_InitRequest(&f, ctx->listen_fd, FCGI_FAIL_ACCEPT_ON_INTR);
    mm_http_req_t r;
    memset(&r, 0, sizeof r);
    mm_buf_init(&r.out);
    __atomic_store_n(&ctx->slot->state, MM_SLOT_BACKOFF, __ATOMIC_RELEASE);
    struct pollfd pfd[2] = {{.fd = ctx->listen_fd, .events = POLLIN}, {.fd = sig_pipe[0], .events = POLLIN}};
    while (!got_quit && !got_term) {
        ctx->slot->heartbeat_us = mm_now_us();
        int n = poll(pfd, 2, 1000);
        if (got_quit || got_term || getppid() != master_pid) break;
        if (n <= 0 || !(pfd[0].revents & POLLIN)) continue;
        if (FCGX_Accept_r(&f) < 0) continue;
        mm_http_req_init(&r, &f);
        r.start_us = mm_now_us();
        mm_router_classify(&r);
        if (refuse_poison(&f, &r, NULL)) continue;
        mm_http_drain(&r, ctx->conf->max_body_bytes);
        if (ctx->index < 0) mm_http_error(&r, 503, "busy", "all workers are busy; retry shortly");
        else mm_http_error(&r, 503, "busy", "worker %d is restarting; retry shortly", ctx->index);
        __atomic_add_fetch(&ctx->slot->rejected_busy, 1, __ATOMIC_RELAXED);
        finish(&f, &r);
    }
    _exit(0);
}

void mm_worker_main(mm_worker_ctx_t *ctx)
{
    setup_process(ctx, "worker %d");
    for (int i = 0; i < QMAX; i++) {
        FCGX_InitRequest(&pool[i], ctx->listen_fd, FCGI_FAIL_ACCEPT_ON_INTR);
        free_list[n_free++] = &pool[i];
    }
#ifdef MM_TEST_HOOKS
    /* test build only: make this worker crash at start while a file exists */
    const char *crash = getenv("MMEMBED_TEST_CRASH_FILE");
    if (crash && access(crash, F_OK) == 0) abort();
#endif
    install_crash_marking();
    char err[MM_ERRLEN] = "";
    if (mm_embed_init_child(ctx->embed, ctx->conf->threads, err, sizeof err) != MM_OK) {
        mm_log_error("worker init failed: %s", err);
        _exit(71);
    }
    enter_sandbox(ctx);
    /* the request thread must not take process signals (but SIGSYS, the
     * sandbox's, is its own: blocked, the kernel would kill unlogged) */
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, SIGSYS);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_t tid;
    if (pthread_create(&tid, NULL, request_thread, NULL) != 0) _exit(72);
    pthread_sigmask(SIG_UNBLOCK, &all, NULL);

    ctx->slot->pid = getpid();
    ctx->slot->heartbeat_us = mm_now_us();
    __atomic_store_n(&ctx->slot->state, MM_SLOT_IDLE, __ATOMIC_RELEASE);
    mm_log_debug("worker ready on fd %d", ctx->listen_fd);

    accept_loop();
    if (got_term) _exit(0);
    __atomic_store_n(&ctx->slot->state, MM_SLOT_STOPPING, __ATOMIC_RELEASE);
    pthread_mutex_lock(&q_mu);
    q_closing = 1;
    pthread_cond_signal(&q_cv);
    pthread_mutex_unlock(&q_mu);
    /* a SIGTERM while draining still ends the process at once */
    while (pthread_tryjoin_np(tid, NULL) != 0) {
        if (got_term) _exit(0);
        usleep(2000);
    }
    _exit(0);
}
