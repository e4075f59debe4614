/* Shared-memory scoreboard: a header written by the master plus fixed
 * per-worker slots, each written only by the worker that owns it (and its
 * counters only through atomic adds). No pointers: every process maps it at
 * its own address. */
#ifndef MMEMBED_SCOREBOARD_H
#define MMEMBED_SCOREBOARD_H

#include <stdint.h>
#include <sys/types.h>

#include "mmembed/common.h"
#include "mmembed/http.h" /* MM_ROUTE_* */

#define MM_SB_SLOTS 512          /* 2x max workers: old + new during reload */


/* HTTP statuses counted one by one; anything else falls into "other". */
#define MM_SB_STATUSES {200, 400, 401, 403, 404, 405, 408, 413, 415, 422, 429, 500, 503, 504}
enum { MM_SB_N_STATUS = 15 };    /* the list above + other */

/* Latency histogram upper bounds (seconds) for /metrics. */
#define MM_SB_BUCKETS {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
enum { MM_SB_N_BUCKETS = 15 };   /* the list above + Inf */

/* Poison marks: requests that crashed a worker or ran past request_timeout,
 * by fingerprint (nginx's $request_id, the same on every upstream retry of
 * one client request), so a retry is answered at once instead of run again. */
#define MM_SB_FP 40
#define MM_SB_POISON 128
enum { MM_POISON_TIMEOUT = 0 };      /* else the signal number that killed the worker */
/* Added to the cause when the request was one of a batch that died: any
 * member may be the culprit, so none is refused; a retry runs alone, and
 * if it kills a worker alone its mark becomes a real one. */
#define MM_POISON_SUSPECT 0x10000

/* Requests one pass of the request thread may run together (a batch). */
#define MM_SB_BATCH 32
/* Batch size histogram upper bounds for /metrics. */
#define MM_SB_BATCH_BUCKETS {1, 2, 4, 8, 16, 32}
enum { MM_SB_N_BATCH_BUCKETS = 7 };  /* the list above + Inf */

typedef struct {
    volatile uint32_t seq;           /* 0 while being written; else the mark's number + 1 */
    volatile int32_t cause;          /* MM_POISON_TIMEOUT or a signal number */
    char fp[MM_SB_FP];
} mm_sb_poison_t;

/* BACKOFF: a stand-in answering 503 on a crash-looping slot's socket. */
enum { MM_SLOT_FREE = 0, MM_SLOT_STARTING, MM_SLOT_IDLE, MM_SLOT_BUSY, MM_SLOT_STOPPING, MM_SLOT_BACKOFF };

typedef struct {
    /* written by the master */
    volatile int32_t state;          /* MM_SLOT_*; workers move IDLE<->BUSY */
    volatile int32_t index;          /* worker number in the pool */
    volatile int32_t generation;     /* config generation it was started with */
    volatile pid_t pid;
    volatile int64_t started_us;     /* process start, wall clock */
    /* written by the worker */
    volatile int64_t heartbeat_us;   /* monotonic; the accept loop refreshes it at least every second */
    volatile int64_t req_start_us;   /* monotonic start of the running request, 0 if none */
    char req_fp[MM_SB_FP];           /* the running request's attempt id (nginx $request_id) */
    volatile int32_t batch_n;        /* requests running together (batch_fp[0] = req_fp); 0 or 1: one */
    char batch_fp[MM_SB_BATCH][MM_SB_FP];
    volatile int32_t queued;         /* requests waiting in this worker's queue */
    volatile int32_t last_batch;     /* size of the last batch run */
    volatile int32_t req_route;
    char req_method[8];
    char req_uri[64];
    volatile int32_t last_status;
    volatile int64_t last_duration_us;
    uint64_t requests;               /* finished by this process */
    uint64_t rejected_busy;          /* 503s it answered because it was busy */
    uint64_t by_route_status[MM_ROUTE_COUNT][MM_SB_N_STATUS];
    uint64_t hist[MM_SB_N_BUCKETS];  /* request duration, all routes */
    uint64_t duration_us_sum;        /* request time, microseconds */
    uint64_t batch_hist[MM_SB_N_BATCH_BUCKETS];   /* passes of the request thread by batch size */
    uint64_t qwait_hist[MM_SB_N_BUCKETS];         /* per request: accepted -> its pass starts */
    uint64_t qwait_us_sum;
} mm_sb_slot_t;

typedef struct {
    /* master-written */
    int64_t start_us;                /* pool start (wall clock) */
    volatile int32_t generation;
    volatile int32_t workers;        /* configured pool size */
    volatile int32_t ready;          /* models loaded, pool up */
    uint64_t restarts;               /* worker processes started to replace others */
    uint64_t crashes;                /* workers that died abnormally */
    uint64_t timeouts;               /* workers killed past request_timeout */
    uint64_t recycles;               /* workers that exited after max_requests */
    uint64_t backoffs;               /* restarts delayed because a slot crash-looped */
    volatile int32_t in_backoff;     /* slots currently waiting to restart */
    volatile int32_t max_busy;       /* highest simultaneous busy count seen */
    uint64_t wedged;                 /* workers replaced because their heartbeat stopped */
    uint64_t poison_marked;          /* requests marked after killing a worker (atomic adds) */
    uint64_t poison_refused;         /* retries of marked requests answered at once (atomic adds) */
    uint32_t poison_next;            /* next mark number (atomic) */
    mm_sb_poison_t poison[MM_SB_POISON];
    /* counters of processes that exited: their slots are reused, the totals are kept */
    uint64_t gone_requests;
    uint64_t gone_rejected;
    uint64_t gone_by_route_status[MM_ROUTE_COUNT][MM_SB_N_STATUS];
    uint64_t gone_hist[MM_SB_N_BUCKETS];
    uint64_t gone_duration_us_sum;
    uint64_t gone_batch_hist[MM_SB_N_BATCH_BUCKETS];
    uint64_t gone_qwait_hist[MM_SB_N_BUCKETS];
    uint64_t gone_qwait_us_sum;
    mm_sb_slot_t slots[MM_SB_SLOTS];
} mm_scoreboard_t;

/* Map a fresh zeroed scoreboard shared with future children. */
mm_scoreboard_t *mm_sb_create(void);
/* Index of a status code in by_route_status's second dimension. */
int mm_sb_status_index(int status);
/* Bucket index for a duration in seconds. */
int mm_sb_bucket(double seconds);
/* Record a finished request in `slot` (called by the owning worker). */
void mm_sb_record(mm_sb_slot_t *slot, int route, int status, double seconds);
/* Record one pass of the request thread: n requests run together, each
 * having waited waits_s[i] seconds in the queue (owning worker). */
void mm_sb_record_batch(mm_sb_slot_t *slot, int n, const double *waits_s);
/* Fold a dead process's counters into the header totals, then free the slot
 * (master only). */
void mm_sb_retire(mm_scoreboard_t *sb, mm_sb_slot_t *slot);
/* Mark a request as poison (cause: MM_POISON_TIMEOUT or a signal number).
 * Async-signal-safe: a crashing worker calls it from its fault handler, so
 * the mark exists before its socket closes and nginx retries elsewhere. A
 * fingerprint already marked is not marked twice. Returns 1 if it added a
 * mark. */
int mm_sb_poison_mark(mm_scoreboard_t *sb, const char *fp, int cause);
/* The cause of fp's mark, or -1 if fp ("" never) is not marked. A real
 * mark wins over a suspect one (cause | MM_POISON_SUSPECT). */
int mm_sb_poison_find(const mm_scoreboard_t *sb, const char *fp);
/* Mark what slot s is running when it dies of `cause`: its one request for
 * real, or every member of a batch as a suspect. Async-signal-safe (the
 * worker's fault handler) and used by the master (timeouts, faults).
 * Returns the number of marks added. */
int mm_sb_poison_mark_running(mm_scoreboard_t *sb, const mm_sb_slot_t *s, int cause);

#endif
