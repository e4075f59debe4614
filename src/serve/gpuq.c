/* The shared-memory queue between workers and an executor (gpuq.h): slot
 * transitions by compare-and-swap, wake-ups by futex on shared words. */
#include "mmembed/gpuq.h"

#include <errno.h>
#include <stdlib.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mmembed/encoder.h"
#include "mmembed/scoreboard.h"   /* mm_now_us */

#define GQ_MAGIC 0x67707571u      /* "gpuq" */
#define WAIT_STEP_US 50000        /* a waiter looks again at least this often */

struct mm_gq {
    mm_gq_hdr_t *h;
    size_t bytes;
};

/* ---------------------------------------------------------------- futex */

static void fwait(uint32_t *w, uint32_t v, int64_t us)
{
    if (us <= 0) return;
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    /* shared mapping: a plain (not PRIVATE) futex, keyed by the page */
    syscall(SYS_futex, w, FUTEX_WAIT, v, &ts, NULL, 0);
}

static void fwake(uint32_t *w)
{
    syscall(SYS_futex, w, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
}

static uint32_t ld(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static int cas(uint32_t *p, uint32_t from, uint32_t to)
{
    return __atomic_compare_exchange_n(p, &from, to, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* A slot this caller holds alone (CLAIMED, DONE, FAILED, ABANDONED with
 * its worker gone) goes back FREE with no owner: a FREE slot never names a
 * pid, so a dead worker's pid cannot match a slot another worker has just
 * claimed but not yet signed (mm_gq_owner_died). */
static void give_back(mm_gq_slot_t *s)
{
    __atomic_store_n(&s->owner, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->state, MM_GQ_FREE, __ATOMIC_RELEASE);
}

/* FILLED -> FREE, by way of CLAIMED (the executor may take it meanwhile). */
static int reclaim_filled(mm_gq_slot_t *s)
{
    if (!cas(&s->state, MM_GQ_FILLED, MM_GQ_CLAIMED)) return 0;
    give_back(s);
    return 1;
}

/* ---------------------------------------------------------------- layout */

static size_t slot_stride(size_t data_bytes, int dim)
{
    size_t head = (sizeof(mm_gq_slot_t) + 63) / 64 * 64;
    size_t data = (data_bytes + 63) / 64 * 64;
    size_t out = ((size_t)MM_GQ_MAX_IN * (size_t)dim * sizeof(float) + 63) / 64 * 64;
    return head + data + out;
}

static size_t hdr_bytes(void)
{
    return (sizeof(mm_gq_hdr_t) + 4095) / 4096 * 4096;
}

mm_gq_t *mm_gq_create(int n_slots, size_t data_bytes, int dim)
{
    if (n_slots < 1 || dim < 1) return NULL;
    mm_gq_t *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    const size_t stride = slot_stride(data_bytes, dim);
    q->bytes = hdr_bytes() + stride * (size_t)n_slots;
    void *p = mmap(NULL, q->bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        free(q);
        return NULL;
    }
    q->h = p;   /* fresh anonymous pages are zero: every slot FREE */
    q->h->magic = GQ_MAGIC;
    q->h->n_slots = (uint32_t)n_slots;
    q->h->slot_stride = stride;
    q->h->data_bytes = (data_bytes + 63) / 64 * 64;
    q->h->dim = dim;
    q->h->exec_state = MM_GQ_DOWN;
    return q;
}

void mm_gq_destroy(mm_gq_t *q)
{
    if (!q) return;
    munmap(q->h, q->bytes);
    free(q);
}

mm_gq_hdr_t *mm_gq_hdr(mm_gq_t *q)
{
    return q->h;
}

mm_gq_slot_t *mm_gq_slot(mm_gq_t *q, int i)
{
    return (mm_gq_slot_t *)((char *)q->h + hdr_bytes() + q->h->slot_stride * (size_t)i);
}

unsigned char *mm_gq_data(mm_gq_t *q, mm_gq_slot_t *s)
{
    (void)q;
    return (unsigned char *)s + (sizeof(mm_gq_slot_t) + 63) / 64 * 64;
}

float *mm_gq_out(mm_gq_t *q, mm_gq_slot_t *s)
{
    return (float *)(mm_gq_data(q, s) + q->h->data_bytes);
}

/* ---------------------------------------------------------------- worker side */

mm_gq_slot_t *mm_gq_claim(mm_gq_t *q, int owner)
{
    const int n = (int)q->h->n_slots;
    /* start where this process last looked, so workers spread over the slots */
    static unsigned next;
    for (int k = 0; k < n; k++) {
        mm_gq_slot_t *s = mm_gq_slot(q, (int)((next + (unsigned)k) % (unsigned)n));
        if (ld(&s->state) == MM_GQ_FREE && cas(&s->state, MM_GQ_FREE, MM_GQ_CLAIMED)) {
            next += (unsigned)k + 1;
            s->owner = owner;
            s->n_in = s->n_seg = 0;
            s->rc = MM_OK;
            s->data_used = 0;
            s->tokens = 0;
            return s;
        }
    }
    return NULL;
}

void mm_gq_unclaim(mm_gq_t *q, mm_gq_slot_t *s)
{
    (void)q;
    if (ld(&s->state) == MM_GQ_CLAIMED) give_back(s);
}

void mm_gq_submit(mm_gq_t *q, mm_gq_slot_t *s)
{
    s->filled_us = mm_now_us();
    __atomic_store_n(&s->state, MM_GQ_FILLED, __ATOMIC_RELEASE);
    __atomic_add_fetch(&q->h->doorbell, 1, __ATOMIC_ACQ_REL);
    fwake(&q->h->doorbell);
}

int mm_gq_wait(mm_gq_t *q, mm_gq_slot_t *s, int64_t deadline_us, float *out, int dim)
{
    for (;;) {
        const uint32_t st = ld(&s->state);
        if (st == MM_GQ_DONE || st == MM_GQ_FAILED) {
            int rc = st == MM_GQ_DONE ? MM_OK : s->rc ? s->rc : MM_ERR;
            if (rc == MM_OK) memcpy(out, mm_gq_out(q, s), sizeof(float) * (size_t)s->n_in * (size_t)dim);
            if (rc == MM_E_AGAIN) __atomic_add_fetch(&q->h->rejected_down, 1, __ATOMIC_RELAXED);
            give_back(s);
            return rc;
        }
        const int64_t now = mm_now_us();
        if (st == MM_GQ_FILLED && ld(&q->h->exec_state) == MM_GQ_DOWN) {
            if (reclaim_filled(s)) {
                __atomic_add_fetch(&q->h->rejected_down, 1, __ATOMIC_RELAXED);
                return MM_E_AGAIN;
            }
            continue;   /* taken or failed meanwhile: look again */
        }
        if (now >= deadline_us) {
            if (reclaim_filled(s) || cas(&s->state, MM_GQ_TAKEN, MM_GQ_ABANDONED)) {
                __atomic_add_fetch(&q->h->timeouts, 1, __ATOMIC_RELAXED);
                return MM_E_TIMEOUT;
            }
            continue;
        }
        int64_t step = deadline_us - now;
        fwait(&s->state, st, step < WAIT_STEP_US ? step : WAIT_STEP_US);
    }
}

/* ---------------------------------------------------------------- executor side */

void mm_gq_wait_work(mm_gq_t *q, uint32_t seen, int64_t timeout_us)
{
    if (ld(&q->h->doorbell) != seen) return;
    fwait(&q->h->doorbell, seen, timeout_us);
}

int mm_gq_take(mm_gq_t *q, mm_gq_slot_t *s, uint32_t gen)
{
    (void)q;
    if (!cas(&s->state, MM_GQ_FILLED, MM_GQ_TAKEN)) return 0;
    s->gen = gen;
    return 1;
}

void mm_gq_untake(mm_gq_t *q, mm_gq_slot_t *s)
{
    (void)q;
    if (!cas(&s->state, MM_GQ_TAKEN, MM_GQ_FILLED) && ld(&s->state) == MM_GQ_ABANDONED) give_back(s);
}

void mm_gq_finish(mm_gq_t *q, mm_gq_slot_t *s, uint32_t gen, int rc)
{
    if (s->gen != gen || ld(&q->h->gen) != gen) return;   /* not ours (any more) */
    s->rc = rc;
    if (cas(&s->state, MM_GQ_TAKEN, rc == MM_OK ? MM_GQ_DONE : MM_GQ_FAILED)) {
        fwake(&s->state);
        return;
    }
    if (ld(&s->state) == MM_GQ_ABANDONED) give_back(s);   /* its worker gave up: nobody reads the answer */
}

int mm_gq_slot_valid(const mm_gq_t *q, const mm_gq_slot_t *s)
{
    const uint64_t cap = q->h->data_bytes;
    if (s->n_in < 1 || s->n_in > MM_GQ_MAX_IN || s->n_seg < 1 || s->n_seg > MM_GQ_MAX_SEG) return MM_E_INVALID;
    if (s->first[0] != 0 || s->first[s->n_in] != s->n_seg) return MM_E_INVALID;
    for (int i = 0; i < s->n_in; i++)
        if (s->first[i + 1] <= s->first[i]) return MM_E_INVALID;   /* every input has a segment */
    for (int k = 0; k < s->n_seg; k++) {
        const mm_gq_seg_t *g = &s->seg[k];
        uint64_t bytes;
        if (g->kind == MM_SEG_TEXT) {
            if (g->n_ids < 1 || g->n_ids > (1 << 20)) return MM_E_INVALID;
            bytes = (uint64_t)g->n_ids * sizeof(int32_t);
        } else if (g->kind == MM_SEG_IMAGE) {
            if (g->channels < 1 || g->channels > 4 || g->height < 1 || g->width < 1 || g->height > 65536 ||
                g->width > 65536)
                return MM_E_INVALID;
            bytes = (uint64_t)g->channels * (uint64_t)g->height * (uint64_t)g->width * sizeof(float);
        } else {
            return MM_E_INVALID;
        }
        if (g->off % 64 || g->off > cap || bytes > cap - g->off) return MM_E_INVALID;
    }
    return MM_OK;
}

/* ---------------------------------------------------------------- master side */

uint32_t mm_gq_exec_starting(mm_gq_t *q, int pid)
{
    uint32_t g = __atomic_add_fetch(&q->h->gen, 1, __ATOMIC_ACQ_REL);
    q->h->exec_pid = pid;
    q->h->starts++;
    q->h->error[0] = '\0';
    __atomic_store_n(&q->h->exec_state, MM_GQ_STARTING, __ATOMIC_RELEASE);
    return g;
}

int mm_gq_exec_died(mm_gq_t *q)
{
    __atomic_store_n(&q->h->exec_state, MM_GQ_DOWN, __ATOMIC_RELEASE);
    __atomic_add_fetch(&q->h->gen, 1, __ATOMIC_ACQ_REL);
    q->h->exec_pid = 0;
    int failed = 0;
    for (int i = 0; i < (int)q->h->n_slots; i++) {
        mm_gq_slot_t *s = mm_gq_slot(q, i);
        for (;;) {
            uint32_t st = ld(&s->state);
            if (st == MM_GQ_FILLED || st == MM_GQ_TAKEN) {
                s->rc = MM_E_AGAIN;
                if (!cas(&s->state, st, MM_GQ_FAILED)) continue;
                fwake(&s->state);
                failed++;
            } else if (st == MM_GQ_ABANDONED) {
                give_back(s);   /* only its (dead) executor could have freed it */
            }
            break;
        }
    }
    q->h->deaths++;
    q->h->failed_slots += (uint64_t)failed;
    return failed;
}

void mm_gq_owner_died(mm_gq_t *q, int pid)
{
    for (int i = 0; i < (int)q->h->n_slots; i++) {
        mm_gq_slot_t *s = mm_gq_slot(q, i);
        for (;;) {
            uint32_t st = ld(&s->state);
            if (st == MM_GQ_FREE || st == MM_GQ_ABANDONED || s->owner != pid) break;
            if (st == MM_GQ_TAKEN) {   /* the executor frees it when its batch ends */
                if (cas(&s->state, st, MM_GQ_ABANDONED)) break;
            } else if (st == MM_GQ_FILLED) {
                if (reclaim_filled(s)) break;
            } else {                   /* CLAIMED, DONE, FAILED: nobody else touches them */
                give_back(s);
                break;
            }
        }
    }
}

/* ---------------------------------------------------------------- statistics */

static void max_u64(uint64_t *p, uint64_t v)
{
    if (v > *p) *p = v;
}

void mm_gq_count_batch(mm_gq_t *q, int inputs, int slots, int workers, int64_t tokens, int64_t busy_us)
{
    mm_gq_hdr_t *h = q->h;   /* one writer: the executor */
    h->batches++;
    h->inputs += (uint64_t)inputs;
    h->tokens += (uint64_t)tokens;
    h->slots_done += (uint64_t)slots;
    h->busy_us += (uint64_t)busy_us;
    if (workers > 1) h->cross_worker_batches++;
    max_u64(&h->max_batch_inputs, (uint64_t)inputs);
    max_u64(&h->max_batch_slots, (uint64_t)slots);
    max_u64(&h->max_batch_workers, (uint64_t)workers);
    max_u64(&h->max_batch_tokens_seen, (uint64_t)tokens);
    int b = 0;
    while (b < MM_GQ_N_HIST - 1 && inputs > (1 << b)) b++;
    h->batch_hist[b]++;
}

const char *mm_gq_state_name(const mm_gq_t *q)
{
    switch (ld(&q->h->exec_state)) {
    case MM_GQ_UP: return "up";
    case MM_GQ_STARTING: return "starting";
    default: return "down";
    }
}

void mm_gq_stats_json(mm_gq_t *q, mm_buf_t *b)
{
    const mm_gq_hdr_t *h = q->h;
    int used = 0;
    for (int i = 0; i < (int)h->n_slots; i++) used += ld(&mm_gq_slot(q, i)->state) != MM_GQ_FREE;
    mm_buf_printf(b, "\"state\":\"%s\",\"pid\":%d,\"generation\":%u,\"starts\":%llu,\"deaths\":%llu,"
                     "\"slots\":%u,\"slots_in_use\":%d,\"slot_bytes\":%llu,",
                  mm_gq_state_name(q), (int)h->exec_pid, h->gen, (unsigned long long)h->starts,
                  (unsigned long long)h->deaths, h->n_slots, used, (unsigned long long)h->data_bytes);
    mm_buf_puts(b, "\"backend\":");
    mm_buf_json_str(b, h->desc, strnlen(h->desc, sizeof h->desc));
    if (h->error[0]) {
        mm_buf_puts(b, ",\"error\":");
        mm_buf_json_str(b, h->error, strnlen(h->error, sizeof h->error));
    }
    const double nb = h->batches ? (double)h->batches : 1;
    mm_buf_printf(b, ",\"batches\":{\"count\":%llu,\"inputs\":%llu,\"tokens\":%llu,\"requests\":%llu,"
                     "\"failed\":%llu,\"across_workers\":%llu,\"mean_inputs\":%.2f,\"max_inputs\":%llu,"
                     "\"max_requests\":%llu,\"max_workers\":%llu,\"max_tokens\":%llu,\"busy_seconds\":%.3f,"
                     "\"queue_wait_seconds\":%.3f,\"inputs_hist\":[",
                  (unsigned long long)h->batches, (unsigned long long)h->inputs, (unsigned long long)h->tokens,
                  (unsigned long long)h->slots_done, (unsigned long long)h->failed_batches,
                  (unsigned long long)h->cross_worker_batches, (double)h->inputs / nb,
                  (unsigned long long)h->max_batch_inputs, (unsigned long long)h->max_batch_slots,
                  (unsigned long long)h->max_batch_workers, (unsigned long long)h->max_batch_tokens_seen,
                  h->busy_us / 1e6, h->wait_us / 1e6);
    for (int i = 0; i < MM_GQ_N_HIST; i++)
        mm_buf_printf(b, "%s%llu", i ? "," : "", (unsigned long long)h->batch_hist[i]);
    mm_buf_printf(b, "]},\"rejected\":{\"queue_full\":%llu,\"executor_down\":%llu,\"timeouts\":%llu}",
                  (unsigned long long)h->rejected_full, (unsigned long long)h->rejected_down,
                  (unsigned long long)h->timeouts);
}

/* ---------------------------------------------------------------- a worker's call */

static size_t seg_bytes(const mm_segment_t *g)
{
    return g->kind == MM_SEG_TEXT ? (size_t)g->n_ids * sizeof(int32_t)
                                  : (size_t)g->channels * (size_t)g->height * (size_t)g->width * sizeof(float);
}

int mm_gq_call(mm_gq_t *q, int owner, int model, int dim, const mm_input_t *in, int n, float *out, int64_t deadline_us)
{
    mm_gq_hdr_t *h = q->h;
    for (int i = 0; i < n;) {
        if (ld(&h->exec_state) != MM_GQ_UP) {
            __atomic_add_fetch(&h->rejected_down, 1, __ATOMIC_RELAXED);
            return MM_E_AGAIN;
        }
        mm_gq_slot_t *s = mm_gq_claim(q, owner);
        if (!s) {
            __atomic_add_fetch(&h->rejected_full, 1, __ATOMIC_RELAXED);
            return MM_E_AGAIN;
        }
        unsigned char *data = mm_gq_data(q, s);
        uint64_t used = 0;
        int k = 0, ns = 0;
        int64_t tokens = 0;
        for (; i + k < n && k < MM_GQ_MAX_IN; k++) {
            const mm_input_t *x = &in[i + k];
            uint64_t need = 0;
            for (int j = 0; j < x->n_seg; j++) need += (seg_bytes(&x->seg[j]) + 63) / 64 * 64;
            if (x->n_seg < 1 || ns + x->n_seg > MM_GQ_MAX_SEG || used + need > h->data_bytes) break;
            s->first[k] = ns;
            for (int j = 0; j < x->n_seg; j++) {
                const mm_segment_t *g = &x->seg[j];
                mm_gq_seg_t *d = &s->seg[ns++];
                *d = (mm_gq_seg_t){.kind = g->kind, .off = (uint32_t)used};
                if (g->kind == MM_SEG_TEXT) {
                    d->n_ids = g->n_ids;
                    memcpy(data + used, g->ids, seg_bytes(g));
                    tokens += g->n_ids;
                } else {
                    d->channels = g->channels, d->height = g->height, d->width = g->width;
                    memcpy(data + used, g->pixels, seg_bytes(g));
                    tokens += ((int64_t)g->height * g->width + MM_GQ_IMAGE_PIXELS - 1) / MM_GQ_IMAGE_PIXELS;
                }
                used += (seg_bytes(g) + 63) / 64 * 64;
            }
        }
        if (k == 0) {   /* one input larger than a whole slot */
            mm_gq_unclaim(q, s);
            return n && in[i].n_seg < 1 ? MM_E_INVALID : MM_E_TOOBIG;
        }
        s->first[k] = ns;
        s->model = model;
        s->n_in = k;
        s->n_seg = ns;
        s->data_used = used;
        s->tokens = tokens;
        mm_gq_submit(q, s);
        int rc = mm_gq_wait(q, s, deadline_us, out + (size_t)i * (size_t)dim, dim);
        if (rc) return rc;
        i += k;
    }
    return MM_OK;
}
