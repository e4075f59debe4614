/* The worker <-> executor slot queue (src/serve/gpuq.c): the state machine
 * (claim, fill, take, finish, release), backpressure when full, deadlines,
 * an executor's death and generations, a worker's death, validation of
 * what a worker wrote, and several processes at once through futexes. The
 * executor side here is a loop over the queue's own calls that answers each
 * input with a function of its data, so every answer can be checked. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "mmembed/encoder.h"
#include "mmembed/gpuq.h"
#include "mmembed/scoreboard.h"

#define DIM 4

/* What the stand-in executor answers for one input: (sum of ids or
 * pixels, number of segments, first value, model). */
static void answer(const mm_gq_t *q, mm_gq_slot_t *s, int i, float *v)
{
    const unsigned char *data = mm_gq_data((mm_gq_t *)q, s);
    double sum = 0, first = 0;
    for (int k = s->first[i]; k < s->first[i + 1]; k++) {
        const mm_gq_seg_t *g = &s->seg[k];
        if (g->kind == MM_SEG_TEXT) {
            const int32_t *ids = (const int32_t *)(data + g->off);
            for (int j = 0; j < g->n_ids; j++) sum += ids[j];
            if (k == s->first[i]) first = ids[0];
        } else {
            const float *px = (const float *)(data + g->off);
            for (long j = 0; j < (long)g->channels * g->height * g->width; j++) sum += px[j];
            if (k == s->first[i]) first = px[0];
        }
    }
    v[0] = (float)sum, v[1] = (float)(s->first[i + 1] - s->first[i]), v[2] = (float)first, v[3] = (float)s->model;
}

/* One pass of the stand-in executor: take every FILLED slot, answer, finish. */
static int serve_once(mm_gq_t *q, uint32_t gen)
{
    int served = 0;
    for (int i = 0; i < (int)mm_gq_hdr(q)->n_slots; i++) {
        mm_gq_slot_t *s = mm_gq_slot(q, i);
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != MM_GQ_FILLED || !mm_gq_take(q, s, gen)) continue;
        int rc = mm_gq_slot_valid(q, s);
        for (int k = 0; !rc && k < s->n_in; k++) answer(q, s, k, mm_gq_out(q, s) + (size_t)k * DIM);
        mm_gq_finish(q, s, gen, rc);
        served++;
    }
    return served;
}

static pid_t start_executor(mm_gq_t *q)
{
    uint32_t gen = mm_gq_exec_starting(q, 0);
    __atomic_store_n(&mm_gq_hdr(q)->exec_state, MM_GQ_UP, __ATOMIC_RELEASE);
    pid_t pid = fork();
    if (pid == 0) {
        for (;;) {
            uint32_t bell = __atomic_load_n(&mm_gq_hdr(q)->doorbell, __ATOMIC_ACQUIRE);
            if (!serve_once(q, gen)) mm_gq_wait_work(q, bell, 100000);
        }
    }
    mm_gq_hdr(q)->exec_pid = pid;
    return pid;
}

static void stop_executor(mm_gq_t *q, pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    mm_gq_exec_died(q);
}

static int all_free(mm_gq_t *q)
{
    for (int i = 0; i < (int)mm_gq_hdr(q)->n_slots; i++)
        if (mm_gq_slot(q, i)->state != MM_GQ_FREE) return 0;
    return 1;
}

/* n text inputs: input i holds ids base+i, base+i+1, ... (i % 5 + 1 of them) */
static void text_inputs(int n, int base, int32_t *ids, mm_segment_t *seg, mm_input_t *in)
{
    for (int i = 0; i < n; i++) {
        int len = i % 5 + 1;
        for (int j = 0; j < len; j++) ids[i * 8 + j] = base + i + j;
        seg[i] = (mm_segment_t){.kind = MM_SEG_TEXT, .ids = &ids[i * 8], .n_ids = len};
        in[i] = (mm_input_t){.seg = &seg[i], .n_seg = 1};
    }
}

static int text_ok(int n, int base, const float *out, int model)
{
    for (int i = 0; i < n; i++) {
        int len = i % 5 + 1;
        double sum = 0;
        for (int j = 0; j < len; j++) sum += base + i + j;
        const float *v = out + (size_t)i * DIM;
        if (v[0] != (float)sum || v[1] != 1 || v[2] != (float)(base + i) || v[3] != (float)model) return 0;
    }
    return 1;
}

static void test_state_machine(void)
{
    mm_gq_t *q = mm_gq_create(3, 4096, DIM);
    CHECK(q, "create");
    mm_gq_hdr_t *h = mm_gq_hdr(q);
    CHECK(h->n_slots == 3 && h->exec_state == MM_GQ_DOWN, "fresh queue: 3 slots, executor down");

    /* full: the fourth claim finds nothing */
    mm_gq_slot_t *s[4];
    for (int i = 0; i < 4; i++) s[i] = mm_gq_claim(q, 100 + i);
    CHECK(s[0] && s[1] && s[2] && !s[3], "three claims succeed, the fourth finds the queue full");
    CHECK(s[0] != s[1] && s[1] != s[2] && s[0] != s[2], "distinct slots");
    for (int i = 0; i < 3; i++) mm_gq_unclaim(q, s[i]);
    CHECK(all_free(q), "unclaimed slots are FREE again");

    /* executor down: a call is refused at once */
    int32_t ids[64 * 8];
    mm_segment_t seg[64];
    mm_input_t in[64];
    float out[64 * DIM];
    text_inputs(4, 10, ids, seg, in);
    int64_t t0 = mm_now_us();
    CHECK(mm_gq_call(q, getpid(), 0, DIM, in, 4, out, mm_now_us() + 5000000) == MM_E_AGAIN,
          "executor down: MM_E_AGAIN");
    CHECK(mm_now_us() - t0 < 1000000, "refused without waiting for the deadline");
    CHECK(h->rejected_down == 1 && all_free(q), "counted as executor_down; no slot held");

    /* up, but nobody takes: the deadline frees the FILLED slot */
    uint32_t gen = mm_gq_exec_starting(q, 0);
    h->exec_state = MM_GQ_UP;
    CHECK(gen == 1 && h->starts == 1, "first start: generation 1");
    CHECK(mm_gq_call(q, getpid(), 0, DIM, in, 4, out, mm_now_us() + 30000) == MM_E_TIMEOUT,
          "no answer before the deadline: MM_E_TIMEOUT");
    CHECK(h->timeouts == 1 && all_free(q), "timed-out FILLED slot freed by its worker");

    /* TAKEN past the deadline: ABANDONED; the executor's late finish frees it */
    mm_gq_slot_t *a = mm_gq_claim(q, getpid());
    a->n_in = 1, a->n_seg = 1, a->first[0] = 0, a->first[1] = 1;
    a->seg[0] = (mm_gq_seg_t){.kind = MM_SEG_TEXT, .n_ids = 1};
    mm_gq_submit(q, a);
    CHECK(h->doorbell == 2, "each submit rings the doorbell (%u)", h->doorbell);
    CHECK(mm_gq_take(q, a, gen) && a->state == MM_GQ_TAKEN, "executor takes a FILLED slot");
    CHECK(!mm_gq_take(q, a, gen), "a slot is taken once");
    CHECK(mm_gq_wait(q, a, mm_now_us() + 20000, out, DIM) == MM_E_TIMEOUT && a->state == MM_GQ_ABANDONED,
          "taken but unanswered by the deadline: ABANDONED");
    mm_gq_finish(q, a, gen, MM_OK);
    CHECK(a->state == MM_GQ_FREE, "the executor's answer to an abandoned slot frees it");

    /* taken, then given back (it did not fit the batch): FILLED again, its worker still waiting */
    a = mm_gq_claim(q, getpid());
    mm_gq_submit(q, a);
    CHECK(mm_gq_take(q, a, gen), "taken");
    mm_gq_untake(q, a);
    CHECK(a->state == MM_GQ_FILLED && mm_gq_take(q, a, gen), "untaken: FILLED, and taken again later");
    CHECK(mm_gq_wait(q, a, mm_now_us() + 10000, out, DIM) == MM_E_TIMEOUT && a->state == MM_GQ_ABANDONED, "abandoned");
    mm_gq_untake(q, a);
    CHECK(a->state == MM_GQ_FREE, "an abandoned slot given back is freed");

    /* a dead executor's generation: its late answer is discarded */
    a = mm_gq_claim(q, getpid());
    a->n_in = 1, a->n_seg = 1, a->first[0] = 0, a->first[1] = 1;
    a->seg[0] = (mm_gq_seg_t){.kind = MM_SEG_TEXT, .n_ids = 1};
    mm_gq_submit(q, a);
    mm_gq_slot_t *b = mm_gq_claim(q, getpid());
    b->n_in = 1;
    mm_gq_submit(q, b);
    CHECK(mm_gq_take(q, a, gen), "taken by generation %u", gen);
    CHECK(mm_gq_exec_died(q) == 2, "executor death fails the TAKEN and the FILLED slot");
    CHECK(h->exec_state == MM_GQ_DOWN && h->gen == gen + 1 && h->deaths == 1, "down, generation bumped");
    CHECK(a->state == MM_GQ_FAILED && a->rc == MM_E_AGAIN && b->state == MM_GQ_FAILED, "both FAILED with MM_E_AGAIN");
    mm_gq_finish(q, a, gen, MM_OK);
    CHECK(a->state == MM_GQ_FAILED, "the old generation's finish changes nothing");
    CHECK(mm_gq_wait(q, a, mm_now_us() + 1000000, out, DIM) == MM_E_AGAIN && a->state == MM_GQ_FREE,
          "its worker gets MM_E_AGAIN (503) at once and frees the slot");
    CHECK(mm_gq_wait(q, b, mm_now_us() + 1000000, out, DIM) == MM_E_AGAIN, "the FILLED one too");
    CHECK(all_free(q), "all free after the death");

    /* a worker's death frees what it held; TAKEN becomes ABANDONED */
    uint32_t g2 = mm_gq_exec_starting(q, 0);
    h->exec_state = MM_GQ_UP;
    CHECK(g2 == gen + 2, "a restart is a new generation (%u)", g2);
    mm_gq_slot_t *c = mm_gq_claim(q, 4242), *d = mm_gq_claim(q, 4242), *e = mm_gq_claim(q, 777);
    mm_gq_submit(q, d);
    mm_gq_take(q, d, g2);
    mm_gq_owner_died(q, 4242);
    CHECK(c->state == MM_GQ_FREE && d->state == MM_GQ_ABANDONED && e->state == MM_GQ_CLAIMED,
          "dead worker's CLAIMED slot freed, TAKEN abandoned, another worker's untouched");
    mm_gq_finish(q, d, g2, MM_OK);
    CHECK(d->state == MM_GQ_FREE, "abandoned slot freed when its batch ends");
    mm_gq_unclaim(q, e);
    CHECK(c->owner == 0 && d->owner == 0 && e->owner == 0, "a FREE slot names no owner");
    /* a slot worker 4343 used and gave back, claimed by another worker that
     * has not signed it yet when 4343 dies: not freed under it */
    mm_gq_slot_t *f = mm_gq_claim(q, 4343);
    mm_gq_unclaim(q, f);
    uint32_t fr = MM_GQ_FREE;
    CHECK(__atomic_compare_exchange_n(&f->state, &fr, MM_GQ_CLAIMED, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE), "claimed");
    mm_gq_owner_died(q, 4343);
    CHECK(f->state == MM_GQ_CLAIMED, "another worker's fresh claim survives the death of the slot's last user");
    mm_gq_unclaim(q, f);

    /* validation of what a worker wrote */
    mm_gq_slot_t *v = mm_gq_claim(q, getpid());
    v->n_in = 1, v->n_seg = 1, v->first[0] = 0, v->first[1] = 1;
    v->seg[0] = (mm_gq_seg_t){.kind = MM_SEG_TEXT, .n_ids = 4, .off = 0};
    CHECK(mm_gq_slot_valid(q, v) == MM_OK, "a well-formed slot is valid");
    v->seg[0].off = 4096;
    CHECK(mm_gq_slot_valid(q, v) == MM_E_INVALID, "data past the area is refused");
    v->seg[0].off = 4032, v->seg[0].n_ids = 17;
    CHECK(mm_gq_slot_valid(q, v) == MM_E_INVALID, "a segment running past the area is refused");
    v->seg[0] = (mm_gq_seg_t){.kind = MM_SEG_IMAGE, .channels = 3, .height = 1 << 20, .width = 1};
    CHECK(mm_gq_slot_valid(q, v) == MM_E_INVALID, "absurd image geometry is refused");
    v->seg[0] = (mm_gq_seg_t){.kind = 7, .n_ids = 1};
    CHECK(mm_gq_slot_valid(q, v) == MM_E_INVALID, "an unknown segment kind is refused");
    v->seg[0] = (mm_gq_seg_t){.kind = MM_SEG_TEXT, .n_ids = 1};
    v->first[1] = 0;
    CHECK(mm_gq_slot_valid(q, v) == MM_E_INVALID, "an input without segments is refused");
    v->first[1] = 1, v->n_in = MM_GQ_MAX_IN + 1;
    CHECK(mm_gq_slot_valid(q, v) == MM_E_INVALID, "too many inputs are refused");
    mm_gq_unclaim(q, v);
    mm_gq_destroy(q);
}

static void test_roundtrip(void)
{
    /* 4 slots of 1 KiB: 150 texts and a chat-shaped input take several slots */
    mm_gq_t *q = mm_gq_create(4, 1024, DIM);
    pid_t ex = start_executor(q);
    int32_t ids[150 * 8];
    mm_segment_t seg[150];
    mm_input_t in[150];
    static float out[150 * DIM];
    text_inputs(150, 7, ids, seg, in);
    int rc = mm_gq_call(q, getpid(), 3, DIM, in, 150, out, mm_now_us() + 10000000);
    CHECK(rc == MM_OK, "150 texts through the queue (%d)", rc);
    CHECK(text_ok(150, 7, out, 3), "every answer belongs to its input, in order, for model 3");

    /* text + image + text in one input, as a chat model's prompt */
    float px[2 * 4 * 4];
    for (int i = 0; i < 32; i++) px[i] = 0.5f * (float)i;
    int32_t t1[3] = {1, 2, 3}, t2[2] = {100, 200};
    mm_segment_t cs[3] = {{.kind = MM_SEG_TEXT, .ids = t1, .n_ids = 3},
                          {.kind = MM_SEG_IMAGE, .pixels = px, .channels = 2, .height = 4, .width = 4},
                          {.kind = MM_SEG_TEXT, .ids = t2, .n_ids = 2}};
    mm_input_t ci = {.seg = cs, .n_seg = 3};
    rc = mm_gq_call(q, getpid(), 1, DIM, &ci, 1, out, mm_now_us() + 10000000);
    CHECK(rc == MM_OK && out[0] == 6 + 248 + 300 && out[1] == 3 && out[2] == 1 && out[3] == 1,
          "a text+image+text input arrives whole (%d: %g %g %g %g)", rc, out[0], out[1], out[2], out[3]);

    /* an input larger than a slot */
    static float big[3 * 32 * 32];
    mm_segment_t bs = {.kind = MM_SEG_IMAGE, .pixels = big, .channels = 3, .height = 32, .width = 32};
    mm_input_t bi = {.seg = &bs, .n_seg = 1};
    CHECK(mm_gq_call(q, getpid(), 0, DIM, &bi, 1, out, mm_now_us() + 1000000) == MM_E_TOOBIG,
          "an input that fits no slot: MM_E_TOOBIG");
    CHECK(all_free(q), "nothing left held");

    /* several worker processes at once, each checking its own answers */
    enum { PROCS = 4, CALLS = 200 };
    pid_t kids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        if ((kids[p] = fork()) == 0) {
            int bad = 0;
            for (int c = 0; c < CALLS; c++) {
                int n = 1 + (c * 7 + p) % 20, base = p * 100000 + c * 50;
                text_inputs(n, base, ids, seg, in);
                int r = mm_gq_call(q, getpid(), p, DIM, in, n, out, mm_now_us() + 10000000);
                if (r == MM_E_AGAIN) { c--; usleep(100); continue; }   /* full: retry, as nginx would */
                if (r || !text_ok(n, base, out, p)) bad++;
            }
            _exit(bad ? 1 : 0);
        }
    }
    int ok = 1;
    for (int p = 0; p < PROCS; p++) {
        int st;
        waitpid(kids[p], &st, 0);
        ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    CHECK(ok, "%d processes x %d calls: every answer right", PROCS, CALLS);
    CHECK(all_free(q), "all slots free afterwards");

    /* the executor dies while a worker waits: MM_E_AGAIN, no hang */
    stop_executor(q, ex);
    mm_gq_exec_starting(q, 0);
    mm_gq_hdr(q)->exec_state = MM_GQ_UP;   /* "up" but nobody serves: the death below answers */
    pid_t waiter = fork();
    if (waiter == 0) {
        text_inputs(2, 1, ids, seg, in);
        int r = mm_gq_call(q, getpid(), 0, DIM, in, 2, out, mm_now_us() + 20000000);
        _exit(r == MM_E_AGAIN ? 0 : 1);
    }
    usleep(100000);
    int64_t t0 = mm_now_us();
    mm_gq_exec_died(q);
    int st;
    waitpid(waiter, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a waiting worker gets MM_E_AGAIN when the executor dies");
    CHECK(mm_now_us() - t0 < 2000000, "woken at once, not at its deadline");
    CHECK(all_free(q), "its slot freed");

    /* and a restarted executor serves again */
    ex = start_executor(q);
    text_inputs(5, 42, ids, seg, in);
    CHECK(mm_gq_call(q, getpid(), 2, DIM, in, 5, out, mm_now_us() + 10000000) == MM_OK && text_ok(5, 42, out, 2),
          "after a restart the queue serves again");
    stop_executor(q, ex);
    mm_gq_destroy(q);
}

int main(void)
{
    test_state_machine();
    test_roundtrip();
    return check_summary("test_gpuq");
}
