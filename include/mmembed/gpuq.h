/* gpuq — the shared-memory queue between workers and a device's executor
 * (docs/GPU.md, "The GPU executor").
 *
 * The master maps one queue per executor before it forks (MAP_SHARED, like
 * the scoreboard): a header and n fixed-size slots, no pointers, so every
 * process sees it at its own address. A slot carries one worker's model
 * inputs (token ids, image pixels; as segments, so a chat model's text +
 * images sequence fits) and comes back with their vectors.
 *
 * A slot's life, every step a compare-and-swap on its `state`:
 *
 *   FREE ─worker─▶ CLAIMED ─worker─▶ FILLED ─executor─▶ TAKEN ─executor─▶ DONE | FAILED ─worker─▶ FREE
 *
 *   FILLED ─worker, deadline or executor down─▶ FREE
 *   TAKEN  ─worker, deadline─▶ ABANDONED ─executor (its answer is dropped), or master─▶ FREE
 *   FILLED | TAKEN ─master, the executor died─▶ FAILED (rc MM_E_AGAIN)
 *   any state a dead worker held ─master─▶ FREE (TAKEN: ABANDONED)
 *
 * Wake-ups are futexes on shared words: a worker that fills a slot bumps
 * the header's doorbell and wakes the executor; the executor (or the master)
 * wakes the worker waiting on its slot's state. The header's generation
 * grows each time the master starts an executor; an executor finishes only
 * the slots it took under its own generation, so nothing a dead executor
 * was doing can answer a later request. */
#ifndef MMEMBED_GPUQ_H
#define MMEMBED_GPUQ_H

#include <stddef.h>
#include <stdint.h>

#include "mmembed/buf.h"
#include "mmembed/conf.h"   /* MM_MAX_MODELS */
#include "mmembed/encoder.h" /* mm_input_t */


#define MM_GQ_MAX_IN 64     /* inputs per slot (a worker's encode pass holds at most 64) */
#define MM_GQ_MAX_SEG 192   /* segments per slot (a chat input: 2 per image + 1) */
/* An image counts (height x width) / MM_GQ_IMAGE_PIXELS tokens toward
 * max_batch_tokens: a 224x224 CLIP image is 196, a patch-16 ViT's count. */
#define MM_GQ_IMAGE_PIXELS 256
#define MM_GQ_N_HIST 10     /* inputs per batch: 1 2 4 8 16 32 64 128 256 +Inf */

enum { MM_GQ_FREE, MM_GQ_CLAIMED, MM_GQ_FILLED, MM_GQ_TAKEN, MM_GQ_DONE, MM_GQ_FAILED, MM_GQ_ABANDONED };
/* the executor, as the header says it */
enum { MM_GQ_DOWN, MM_GQ_STARTING, MM_GQ_UP };

typedef struct {
    int32_t kind;                   /* MM_SEG_TEXT | MM_SEG_IMAGE (encoder.h) */
    int32_t n_ids;                  /* text: ids */
    int32_t channels, height, width;/* image: f32 pixels (channels, height, width) */
    uint32_t off;                   /* bytes into the slot's data area (64-aligned) */
} mm_gq_seg_t;

typedef struct {
    uint32_t state;                 /* MM_GQ_*: the futex word the worker waits on */
    int32_t owner;                  /* pid of the worker that claimed it */
    int32_t model;                  /* index into the served models */
    int32_t n_in, n_seg;
    int32_t rc;                     /* DONE / FAILED: MM_OK or MM_E_* */
    uint32_t gen;                   /* generation of the executor that took it */
    int32_t pad;
    int64_t filled_us;              /* mm_now_us() when FILLED: oldest first */
    int64_t tokens;                 /* batching cost (texts: ids; images: pixels / MM_GQ_IMAGE_PIXELS) */
    int32_t first[MM_GQ_MAX_IN + 1];/* input i is segments first[i] .. first[i+1]-1 */
    mm_gq_seg_t seg[MM_GQ_MAX_SEG];
    uint64_t data_used;             /* bytes of the data area in use */
    /* then the data area (hdr.data_bytes) and the output area (MM_GQ_MAX_IN x hdr.dim f32) */
} mm_gq_slot_t;

typedef struct {
    uint32_t magic;
    uint32_t n_slots;
    uint64_t slot_stride;           /* bytes from one slot to the next */
    uint64_t data_bytes;            /* data area per slot */
    int32_t dim;                    /* output floats per input, the largest model's */
    uint32_t doorbell;              /* futex word: bumped after every FILLED */
    uint32_t gen;                   /* executor generation (master bumps it on each start) */
    uint32_t exec_state;            /* MM_GQ_DOWN / STARTING / UP (master and executor) */
    int32_t exec_pid;
    int32_t pad;
    int64_t heartbeat_us;           /* executor: mm_now_us() at each turn of its loop */
    int64_t up_since_us;            /* mm_wall_us() when it came up */
    /* supervision (master) */
    uint64_t starts, deaths, failed_slots;
    /* backpressure (workers, atomic adds) */
    uint64_t rejected_full;         /* no free slot: 503 at once */
    uint64_t rejected_down;         /* executor down or died under the request: 503 */
    uint64_t timeouts;              /* no answer before the request's deadline */
    /* batching (the executor) */
    uint64_t batches, inputs, tokens, slots_done, failed_batches;
    uint64_t cross_worker_batches;  /* batches holding slots of more than one worker */
    uint64_t max_batch_inputs, max_batch_slots, max_batch_workers, max_batch_tokens_seen;
    uint64_t busy_us, wait_us;      /* running batches; slots' time from FILLED to taken */
    uint64_t batch_hist[MM_GQ_N_HIST];
    /* what the executor put on its device (written once it is up) */
    char desc[160];                 /* the backend's description */
    char model_run[MM_MAX_MODELS][16];  /* per served model: "backend", "cpu-encode", "" (not here) */
    uint64_t model_bytes[MM_MAX_MODELS];/* bytes allocated on the backend for that model */
    char error[256];                /* why the last start failed, "" */
} mm_gq_hdr_t;

typedef struct mm_gq mm_gq_t;

/* Maps a queue of n_slots slots, each with data_bytes of input and room
 * for MM_GQ_MAX_IN vectors of dim floats. NULL when out of memory. Memory
 * is touched only as slots are used (anonymous shared pages). */
mm_gq_t *mm_gq_create(int n_slots, size_t data_bytes, int dim);
void mm_gq_destroy(mm_gq_t *q);

mm_gq_hdr_t *mm_gq_hdr(mm_gq_t *q);
mm_gq_slot_t *mm_gq_slot(mm_gq_t *q, int i);
unsigned char *mm_gq_data(mm_gq_t *q, mm_gq_slot_t *s);
float *mm_gq_out(mm_gq_t *q, mm_gq_slot_t *s);

/* ---- worker side ---- */

/* A FREE slot, now CLAIMED by owner (pid); NULL when none is free. */
mm_gq_slot_t *mm_gq_claim(mm_gq_t *q, int owner);
/* CLAIMED -> FILLED (filled_us stamped), then the executor is woken. */
void mm_gq_submit(mm_gq_t *q, mm_gq_slot_t *s);
/* Waits until s is DONE or FAILED, or deadline_us (mm_now_us clock)
 * passes, or the executor is down with s not yet taken. Returns MM_OK
 * (DONE: the slot's n_in vectors of dim floats copied to out), the slot's
 * rc (FAILED), MM_E_AGAIN (the executor is down) or MM_E_TIMEOUT; in every
 * case s is no longer the caller's afterwards (freed, or left ABANDONED
 * for the executor to free). */
int mm_gq_wait(mm_gq_t *q, mm_gq_slot_t *s, int64_t deadline_us, float *out, int dim);
/* CLAIMED -> FREE (a fill that could not be completed). */
void mm_gq_unclaim(mm_gq_t *q, mm_gq_slot_t *s);

/* What a worker calls: encodes n inputs of served model `model` (dim
 * floats each) on the executor, into out (n, dim). Fills as many inputs as
 * fit into one slot, submits it and waits (until deadline_us), then the
 * next slot's worth. Returns MM_OK; MM_E_AGAIN (no free slot, or the
 * executor is down or died: answer 503 + Retry-After), MM_E_TIMEOUT,
 * MM_E_TOOBIG (one input larger than a slot), or what the executor's
 * encode returned. */
int mm_gq_call(mm_gq_t *q, int owner, int model, int dim, const mm_input_t *in, int n, float *out,
               int64_t deadline_us);

/* ---- executor side ---- */

/* Waits until the doorbell moves past `seen` or timeout_us passes. */
void mm_gq_wait_work(mm_gq_t *q, uint32_t seen, int64_t timeout_us);
/* FILLED -> TAKEN under generation gen; 0 when the slot was reclaimed. */
int mm_gq_take(mm_gq_t *q, mm_gq_slot_t *s, uint32_t gen);
/* TAKEN -> FILLED again (it does not fit the batch after all), or an
 * ABANDONED slot freed. */
void mm_gq_untake(mm_gq_t *q, mm_gq_slot_t *s);
/* TAKEN -> DONE (rc MM_OK) or FAILED (rc), waking its worker; an
 * ABANDONED slot, or one failed by the master, is freed or left alone.
 * Only under the generation the slot was taken with. */
void mm_gq_finish(mm_gq_t *q, mm_gq_slot_t *s, uint32_t gen, int rc);
/* Checks what a worker wrote (segment kinds, sizes, offsets inside the
 * data area, input count): MM_OK or MM_E_INVALID. */
int mm_gq_slot_valid(const mm_gq_t *q, const mm_gq_slot_t *s);

/* ---- master side ---- */

/* A new executor is starting: bumps the generation, state STARTING. Returns
 * the new generation. */
uint32_t mm_gq_exec_starting(mm_gq_t *q, int pid);
/* The executor died: state DOWN, the generation bumped (its answers are
 * dropped), every FILLED or TAKEN slot FAILED with MM_E_AGAIN and woken,
 * ABANDONED slots freed. Returns how many requests were failed. */
int mm_gq_exec_died(mm_gq_t *q);
/* Worker pid died: the slots it held are freed (TAKEN ones ABANDONED). */
void mm_gq_owner_died(mm_gq_t *q, int pid);

/* Counts one batch in the header's statistics. */
void mm_gq_count_batch(mm_gq_t *q, int inputs, int slots, int workers, int64_t tokens, int64_t busy_us);

/* The queue as JSON for /info: executor state, device, slots in use,
 * batching settings are the caller's; statistics here. */
void mm_gq_stats_json(mm_gq_t *q, mm_buf_t *b);
/* "up", "starting" or "down" */
const char *mm_gq_state_name(const mm_gq_t *q);

#endif
