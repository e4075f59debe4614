/* The executor: one process per device (docs/GPU.md, "The GPU executor").
 * It alone opens the compute backend (CUDA contexts do not survive fork,
 * and one copy of the weights per GPU is the point), puts each of its
 * models there once, and runs the model inputs that workers put in the
 * shared queue (gpuq.h) in batches across workers: the oldest request's
 * model first, every other waiting request of that model oldest first under
 * executor.max_batch_tokens, waiting at most executor.batch_delay_us for
 * more while it is busy (requests queued while its last batch ran; never
 * for a request that found it idle). Workers do everything up
 * to model inputs (parse, decode, tokenize, preprocess) and wait on their
 * slot; this file also holds their side (mm_executor_remote_encode).
 *
 * A model whose architecture has a forward on a backend (runner_new_on:
 * CLIP, BERT, Qwen3, Qwen2-VL) runs there, its weights put there once by
 * its runner; on the CPU backend ("cpu-executor", how CI runs this process
 * without a GPU) an architecture without one (USE-Lite) runs its normal
 * CPU encode in this process, so every family goes through the same queue. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "mmembed/backend.h"
#include "mmembed/embed.h"
#include "mmembed/encoder.h"
#include "mmembed/gpuq.h"
#include "mmembed/log.h"
#include "mmembed/nn.h"
#include "mmembed/serve.h"

#define IDLE_WAIT_US 200000   /* an idle executor still beats its heartbeat this often */
#define CPU_TEXT_BATCH 64     /* the CPU encode's runner: as a worker's (TEXT_CHUNK, IMG_CHUNK) */
#define CPU_IMAGE_BATCH 8

/* ---------------------------------------------------------------- the worker's side */

static const mm_sb_slot_t *self_slot;   /* the worker's scoreboard slot: its request's start */

void mm_executor_worker_init(const mm_sb_slot_t *slot)
{
    self_slot = slot;
}

int mm_executor_remote_encode(void *ctx, const mm_input_t *in, int n, float *out)
{
    const mm_exec_remote_t *r = ctx;
    const int64_t now = mm_now_us();
    const int64_t start = self_slot && self_slot->req_start_us ? self_slot->req_start_us : now;
    /* answer before the master's request_timeout kill: a worker that waits
     * on a stuck executor must still say 504 itself */
    const int64_t deadline = start + (int64_t)(r->conf->request_timeout * 0.9e6);
    return mm_gq_call(r->q, (int)getpid(), r->model, r->dim, in, n, out, deadline);
}

/* ---------------------------------------------------------------- metering */

/* What each model put on its backend: the backend's own memory calls are
 * routed through these (the ops table is copied with only the memory and
 * weight entries replaced, so every other op, present or added later, is
 * the backend's own, called with its own handle). Weights kept in place
 * (the CPU backend uses the shared pack) cost nothing here. */
typedef struct {
    mm_backend_t *be;
    const mm_backend_ops_t *orig;
    mm_backend_ops_t ops;
    int elt;                              /* bytes per dense weight a GPU keeps (f16/bf16 2, tf32 4) */
    size_t bytes;
    struct { const void *p; size_t n; } *tab;
    int n, cap;
} meter_t;

static meter_t meters[MM_MAX_MODELS];

static meter_t *meter_of(const mm_backend_t *be)
{
    for (int i = 0; i < MM_MAX_MODELS; i++)
        if (meters[i].be == be) return &meters[i];
    abort();   /* only metered backends reach these ops */
}

static void meter_add(meter_t *m, const void *p, size_t n)
{
    if (!p || !n) return;
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 256;
        void *t = realloc(m->tab, sizeof(*m->tab) * (size_t)cap);
        if (!t) return;   /* uncounted, not fatal */
        m->tab = t;
        m->cap = cap;
    }
    m->tab[m->n].p = p;
    m->tab[m->n++].n = n;
    m->bytes += n;
}

static void meter_drop(meter_t *m, const void *p)
{
    for (int i = m->n - 1; i >= 0; i--)
        if (m->tab[i].p == p) {
            m->bytes -= m->tab[i].n;
            m->tab[i] = m->tab[--m->n];
            return;
        }
}

static void *m_alloc(mm_backend_t *be, size_t bytes)
{
    meter_t *m = meter_of(be);
    void *p = m->orig->alloc(be, bytes);
    meter_add(m, p, bytes);
    return p;
}

static void m_free(mm_backend_t *be, void *p)
{
    meter_t *m = meter_of(be);
    meter_drop(m, p);
    m->orig->free(be, p);
}

static const float *m_constant(mm_backend_t *be, const float *host, size_t n)
{
    meter_t *m = meter_of(be);
    const float *p = m->orig->constant(be, host, n);
    if (p != host) meter_add(m, p, n * sizeof(float));
    return p;
}

static void m_release(mm_backend_t *be, const float *p)
{
    meter_t *m = meter_of(be);
    meter_drop(m, p);
    m->orig->release(be, p);
}

static const void *m_dense(mm_backend_t *be, const void *blob)
{
    meter_t *m = meter_of(be);
    const void *w = m->orig->dense(be, blob);
    if (w && w != blob) {
        int N, K;
        mm_nn_lin_shape(blob, &N, &K);
        meter_add(m, w, (size_t)N * (size_t)K * (size_t)m->elt);
    }
    return w;
}

static void m_dense_free(mm_backend_t *be, const void *w)
{
    meter_t *m = meter_of(be);
    meter_drop(m, w);
    m->orig->dense_free(be, w);
}

static void meter_attach(meter_t *m, mm_backend_t *be, const char *gpu_dtype)
{
    m->be = be;
    m->orig = be->ops;
    m->ops = *be->ops;
    m->ops.alloc = m_alloc;
    m->ops.free = m_free;
    m->ops.constant = m_constant;
    m->ops.release = m_release;
    m->ops.dense = m_dense;
    m->ops.dense_free = m_dense_free;
    m->elt = gpu_dtype && !strcmp(gpu_dtype, "tf32") ? 4 : 2;
    be->ops = &m->ops;
}

/* ---------------------------------------------------------------- state */

typedef struct {
    int model;                 /* served-model index */
    int dim;
    mm_backend_t *be;          /* NULL when the CPU encode runs it */
    mm_enc_runner_t *run;
    int chunk;                 /* inputs per encode call (the runner's batch) */
} xmodel_t;

static volatile sig_atomic_t got_stop;
static mm_exec_ctx_t *X;
static mm_gq_t *Q;
static xmodel_t xm[MM_MAX_MODELS];
static int n_xm;
static uint32_t gen;

/* one batch's bookkeeping, sized at start */
static mm_gq_slot_t **taken;    /* (n_slots) the batch's slots, oldest first */
/* (n_slots) their descriptors as taken: a worker writes its slot only while
 * it is its own, but one that misbehaves must not change what was checked */
static mm_gq_slot_t *snap;
static int32_t *idbuf;          /* the batch's token ids, copied out of the slots (checked, then used) */
static size_t idbuf_cap;        /* ints */
static mm_input_t *ins;         /* (max_batch) */
static mm_segment_t *segs;      /* (max_batch * MM_GQ_MAX_SEG) */
static float *outv;             /* (max_batch, max dim) */
static float *stage;            /* single-image inputs laid out one after another */
static size_t stage_cap;        /* floats */
static mm_backend_t *stage_be;  /* on a GPU: the stage is its pinned host memory (uploads go straight) */
static int64_t batch_end;       /* mm_now_us() when the last batch's compute ended */

static void on_stop(int sig)
{
    (void)sig;
    got_stop = 1;
}

static xmodel_t *xmodel(int model)
{
    for (int i = 0; i < n_xm; i++)
        if (xm[i].model == model) return &xm[i];
    return NULL;
}

static void fail_start(const char *fmt, const char *a, const char *b)
{
    mm_gq_hdr_t *h = mm_gq_hdr(Q);
    snprintf(h->error, sizeof h->error, fmt, a, b);
    mm_log_error("%s", h->error);
    _exit(2);
}

/* Opens the backend for each model and puts its weights there. */
static void load_models(void)
{
    const mm_conf_t *c = X->conf;
    const int gpu = mm_conf_device_kind(X->device) == MM_DEV_GPU;
    const char *bename = gpu ? X->device : "cpu";
    mm_gq_hdr_t *h = mm_gq_hdr(Q);
    char err[MM_ERRLEN];
    for (int k = 0; k < X->n_models; k++) {
        const int i = X->models[k];
        const mm_conf_model_t *cm = &c->models[i];
        mm_encoder_t *enc = mm_embed_model_encoder(X->embed, i);
        xmodel_t *m = &xm[n_xm++];
        m->model = i;
        m->dim = mm_encoder_info(enc)->dim;
        const double t0 = mm_now_us();
        if (mm_encoder_has_backend(enc)) {
            if (mm_backend_open(bename, c->threads, gpu ? cm->gpu_dtype : NULL, &m->be, err, sizeof err))
                fail_start("cannot open the backend: %s%s", err, "");
            meter_attach(&meters[k], m->be, gpu ? cm->gpu_dtype : NULL);
            /* a GPU takes whole batches; the CPU backend the passes a worker runs. The
             * runner puts the model's weights on the backend (once: one runner per model) */
            m->chunk = gpu ? c->exec_max_batch : CPU_TEXT_BATCH;
            if (!(m->run = mm_encoder_runner_new_on(enc, m->be, m->chunk, gpu ? c->exec_max_batch : CPU_IMAGE_BATCH)))
                fail_start("model '%s': no %s memory for its weights and run state", cm->name, gpu ? "device" : "");
            snprintf(h->model_run[i], sizeof h->model_run[i], "backend");
            if (gpu && !stage_be) stage_be = m->be;
            h->model_bytes[i] = meters[k].bytes;
            snprintf(h->desc, sizeof h->desc, "%s", m->be->desc);
        } else if (!gpu) {   /* no backend forward yet: the CPU encode, in this process */
            m->chunk = CPU_TEXT_BATCH;
            if (!(m->run = mm_encoder_runner_new(enc, CPU_TEXT_BATCH, CPU_IMAGE_BATCH, c->threads)))
                fail_start("model '%s': no memory for its run state%s", cm->name, "");
            snprintf(h->model_run[i], sizeof h->model_run[i], "cpu-encode");
            if (!h->desc[0]) snprintf(h->desc, sizeof h->desc, "cpu (%d threads, the models' CPU encode)", c->threads);
        } else {
            fail_start("model '%s' has no forward on a GPU%s", cm->name, "");
        }
        mm_log_info("model '%s' on %s (%s), %zu MiB there, ready in %.0f ms", cm->name,
                    m->be ? m->be->desc : "the CPU encode", h->model_run[i], (size_t)(h->model_bytes[i] >> 20),
                    (mm_now_us() - t0) / 1e3);
    }
}

/* ---------------------------------------------------------------- batching */

/* Takes FILLED slots of `model` (-1: the oldest slot's model) oldest
 * first into taken[*nt..], within the token budget and max_batch inputs
 * (the first one always goes). A slot whose contents are malformed fails
 * at once. Returns how many were taken. */
static int collect(int *model, int *nt, int64_t *tokens, int *inputs)
{
    const mm_conf_t *c = X->conf;
    mm_gq_hdr_t *h = mm_gq_hdr(Q);
    const int n = (int)h->n_slots;
    mm_gq_slot_t *cand[n];
    int nc = 0;
    for (int i = 0; i < n; i++) {
        mm_gq_slot_t *s = mm_gq_slot(Q, i);
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != MM_GQ_FILLED) continue;
        if (*model >= 0 && s->model != *model) continue;
        int j = nc++;   /* insertion by fill time, oldest first */
        while (j > 0 && cand[j - 1]->filled_us > s->filled_us) cand[j] = cand[j - 1], j--;
        cand[j] = s;
    }
    int got = 0;
    for (int k = 0; k < nc; k++) {
        mm_gq_slot_t *s = cand[k];
        if (*model < 0) *model = s->model;
        if (s->model != *model) continue;
        if (*nt > 0 && (*tokens + s->tokens > c->exec_max_batch_tokens || *inputs + s->n_in > c->exec_max_batch))
            continue;   /* left for the next batch, where it is the oldest */
        if (!mm_gq_take(Q, s, gen)) continue;   /* its worker gave up meanwhile */
        /* from here on only the private copy is read; what was read before
         * the take may belong to an earlier fill (the worker gave up and
         * filled the slot again): check the copy */
        mm_gq_slot_t *d = &snap[*nt];
        memcpy(d, s, sizeof *d);
        if (d->model != *model || (*nt > 0 && (*tokens + d->tokens > c->exec_max_batch_tokens ||
                                               *inputs + d->n_in > c->exec_max_batch))) {
            mm_gq_untake(Q, s);
            continue;
        }
        if (mm_gq_slot_valid(Q, d) != MM_OK || !xmodel(d->model)) {
            mm_log_warn("malformed request from worker pid %d refused", (int)d->owner);
            mm_gq_finish(Q, s, gen, MM_E_INVALID);
            continue;
        }
        h->wait_us += (uint64_t)(mm_now_us() - d->filled_us);
        taken[(*nt)++] = s;
        *tokens += d->tokens;
        *inputs += d->n_in;
        got++;
    }
    return got;
}

/* The batch's inputs as the encoder reads them, from the checked copies of
 * the slots' descriptors. Token ids are copied out of the slots (the model
 * checks them, then indexes with them); an input that is one image is
 * copied into the stage, one after another, so a fixed-geometry model runs
 * the images of every slot in one pass (other pixels are read in place:
 * they are only values). Returns 0 or MM_E_NOMEM. */
static int build_inputs(int nt, int *n_in)
{
    size_t need = 0, nids = 0;
    for (int t = 0; t < nt; t++)
        for (int i = 0; i < snap[t].n_in; i++) {
            const mm_gq_seg_t *g = &snap[t].seg[snap[t].first[i]];
            if (snap[t].first[i + 1] - snap[t].first[i] == 1 && g->kind == MM_SEG_IMAGE)
                need += (size_t)g->channels * g->height * g->width;
        }
    for (int t = 0; t < nt; t++)
        for (int j = 0; j < snap[t].n_seg; j++)
            if (snap[t].seg[j].kind == MM_SEG_TEXT) nids += (size_t)snap[t].seg[j].n_ids;
    if (nids > idbuf_cap) {
        free(idbuf);
        idbuf_cap = 0;
        if (!(idbuf = malloc(nids * sizeof(int32_t)))) return MM_E_NOMEM;
        idbuf_cap = nids;
    }
    if (need > stage_cap) {
        if (stage_be) stage_be->ops->host_free(stage_be, stage);
        else free(stage);
        stage_cap = 0;
        stage = stage_be ? stage_be->ops->host_alloc(stage_be, need * sizeof(float)) : malloc(need * sizeof(float));
        if (!stage) return MM_E_NOMEM;
        stage_cap = need;
    }
    int k = 0, ns = 0;
    size_t at = 0, ia = 0;
    for (int t = 0; t < nt; t++) {
        const mm_gq_slot_t *s = &snap[t];
        const unsigned char *data = mm_gq_data(Q, taken[t]);
        for (int i = 0; i < s->n_in; i++) {
            const int f = s->first[i], l = s->first[i + 1];
            ins[k] = (mm_input_t){.seg = &segs[ns], .n_seg = l - f};
            for (int j = f; j < l; j++) {
                const mm_gq_seg_t *g = &s->seg[j];
                mm_segment_t *d = &segs[ns++];
                if (g->kind == MM_SEG_TEXT) {
                    memcpy(idbuf + ia, data + g->off, (size_t)g->n_ids * sizeof(int32_t));
                    *d = (mm_segment_t){.kind = MM_SEG_TEXT, .ids = idbuf + ia, .n_ids = g->n_ids};
                    ia += (size_t)g->n_ids;
                    continue;
                }
                const float *px = (const float *)(data + g->off);
                const size_t per = (size_t)g->channels * g->height * g->width;
                if (l - f == 1) {
                    memcpy(stage + at, px, per * sizeof(float));
                    px = stage + at;
                    at += per;
                }
                *d = (mm_segment_t){.kind = MM_SEG_IMAGE, .pixels = px, .channels = g->channels,
                                    .height = g->height, .width = g->width};
            }
            k++;
        }
    }
    *n_in = k;
    return MM_OK;
}

static void run_batch(int model, int nt, int64_t tokens)
{
    xmodel_t *m = xmodel(model);
    const int64_t t0 = mm_now_us();
    int n = 0;
    int rc = build_inputs(nt, &n);
    for (int i = 0; !rc && i < n; i += m->chunk)
        rc = mm_encoder_encode(m->run, ins + i, MM_MIN(m->chunk, n - i), outv + (size_t)i * m->dim);
    if (rc) mm_log_error("a batch of %d inputs of model '%s' failed (%d)%s%s", n, X->conf->models[model].name, rc,
                         m->be ? ": " : "", m->be ? m->be->ops->error(m->be) : "");
    int row = 0, owners[64], n_owners = 0;
    for (int t = 0; t < nt; t++) {
        const mm_gq_slot_t *s = &snap[t];
        if (!rc) memcpy(mm_gq_out(Q, taken[t]), outv + (size_t)row * m->dim, sizeof(float) * (size_t)s->n_in * m->dim);
        row += s->n_in;
        int seen = 0;
        for (int o = 0; o < n_owners && !seen; o++) seen = owners[o] == s->owner;
        if (!seen && n_owners < 64) owners[n_owners++] = s->owner;
    }
    /* counted before anyone is answered: a client that reads /info after
     * its answer sees its batch */
    mm_gq_hdr_t *h = mm_gq_hdr(Q);
    if (rc) h->failed_batches++;
    batch_end = mm_now_us();   /* before any answer: a request its answer prompts finds us idle */
    mm_gq_count_batch(Q, n, nt, n_owners, tokens, batch_end - t0);
    for (int t = 0; t < nt; t++) mm_gq_finish(Q, taken[t], gen, rc);
}

/* ---------------------------------------------------------------- main */

void mm_executor_main(mm_exec_ctx_t *x)
{
    X = x;
    Q = x->q;
    char role[40];
    snprintf(role, sizeof role, "executor %s", x->device);
    mm_log_set_role(role);
    const pid_t master = getppid();
    prctl(PR_SET_PDEATHSIG, SIGKILL);   /* never outlive the master: it owns the queue */
    if (getppid() != master) _exit(0);
    prctl(PR_SET_NAME, "mmembed-exec", 0, 0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    /* the master says when to stop (SIGTERM, once no worker needs it); a
     * terminal's Ctrl-C or Ctrl-\ reaches the whole process group, and the
     * master's stop then takes its course */
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);

    mm_gq_hdr_t *h = mm_gq_hdr(Q);
    gen = __atomic_load_n(&h->gen, __ATOMIC_ACQUIRE);
    const mm_conf_t *c = x->conf;
    int max_dim = 1;
    load_models();
    for (int i = 0; i < n_xm; i++) max_dim = MM_MAX(max_dim, xm[i].dim);
    /* a batch holds at most max_batch inputs, or one slot's (the first always goes) */
    const size_t cap = (size_t)MM_MAX(c->exec_max_batch, MM_GQ_MAX_IN);
    taken = malloc(sizeof(*taken) * h->n_slots);
    snap = malloc(sizeof(*snap) * h->n_slots);
    ins = malloc(sizeof(*ins) * cap);
    segs = malloc(sizeof(*segs) * cap * MM_GQ_MAX_SEG);   /* every slot holds an input */
    outv = malloc(sizeof(float) * cap * (size_t)max_dim);
    if (!taken || !snap || !ins || !segs || !outv) fail_start("no memory for batch state%s%s", "", "");
    h->up_since_us = mm_wall_us();
    h->heartbeat_us = mm_now_us();
    uint32_t starting = MM_GQ_STARTING;
    if (!__atomic_compare_exchange_n(&h->exec_state, &starting, MM_GQ_UP, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        _exit(0);   /* the master gave up on this start */
    mm_log_info("up (generation %u): %d model(s), %u slots, max_batch_tokens %d, batch_delay_us %d", gen, n_xm, h->n_slots, c->exec_max_batch_tokens, c->exec_batch_delay_us);

    while (!got_stop && getppid() == master) {
        h->heartbeat_us = mm_now_us();
        uint32_t bell = __atomic_load_n(&h->doorbell, __ATOMIC_ACQUIRE);
        int model = -1, nt = 0, inputs = 0;
        int64_t tokens = 0;
        if (!collect(&model, &nt, &tokens, &inputs)) {
            mm_gq_wait_work(Q, bell, IDLE_WAIT_US);
            continue;
        }
        /* busy — the oldest request queued while the last batch ran, so
         * requests arrive faster than batches end — give the other workers
         * a bounded moment to join; a request that found the executor idle
         * (filled after the last batch ended) starts at once */
        if (snap[0].filled_us < batch_end && c->exec_batch_delay_us > 0) {
            const int64_t until = mm_now_us() + c->exec_batch_delay_us;
            for (int64_t now = mm_now_us(); now < until && tokens < c->exec_max_batch_tokens &&
                                            inputs < c->exec_max_batch && !got_stop;
                 now = mm_now_us()) {
                bell = __atomic_load_n(&h->doorbell, __ATOMIC_ACQUIRE);
                if (!collect(&model, &nt, &tokens, &inputs)) mm_gq_wait_work(Q, bell, until - now);
            }
        }
        run_batch(model, nt, tokens);
    }
    mm_log_info("stopping");
    for (int i = 0; i < n_xm; i++) {
        mm_encoder_runner_free(xm[i].run);
        mm_backend_close(xm[i].be);
    }
    _exit(0);
}
