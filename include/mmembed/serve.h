/* The server: master (config, sockets, models, supervision) and workers
 * (FastCGI accept loop, busy rejection, routing). */
#ifndef MMEMBED_SERVE_H
#define MMEMBED_SERVE_H

#include "mmembed/conf.h"
#include "mmembed/encoder.h"   /* mm_input_t */
#include "mmembed/scoreboard.h"

struct mm_embed;
struct mm_http_req;
struct mm_gq;

/* An executor as the workers see it: its queue and device. */
typedef struct {
    struct mm_gq *q;
    char device[16];
    int models[MM_MAX_MODELS];   /* served-model indices it runs */
    int n_models;
} mm_exec_view_t;

/* What a worker process needs; built by the master before fork. */
typedef struct {
    const mm_conf_t *conf;
    mm_scoreboard_t *sb;
    mm_sb_slot_t *slot;
    struct mm_embed *embed;
    int listen_fd;
    int index;              /* worker number */
    const mm_exec_view_t *exec;   /* (n_exec) the executors of its generation */
    int n_exec;
} mm_worker_ctx_t;

/* ---- executors (src/serve/executor.c; docs/GPU.md) ---- */

/* What an executor process needs; built by the master before fork. */
typedef struct {
    const mm_conf_t *conf;
    struct mm_embed *embed;
    struct mm_gq *q;
    char device[16];             /* "cuda:0", "cpu-executor" */
    int models[MM_MAX_MODELS];   /* served-model indices on this device */
    int n_models;
} mm_exec_ctx_t;

/* Executor main loop: opens the backend, puts its models there, serves the
 * queue until SIGTERM or the master's death (never returns). A
 * start that fails writes why into the queue header and exits 2. */
void mm_executor_main(mm_exec_ctx_t *x) __attribute__((noreturn));

/* A worker's handle on one model of an executor: the ctx of
 * mm_executor_remote_encode (encoder.h's mm_enc_remote_fn). */
typedef struct {
    struct mm_gq *q;
    int model, dim;
    const mm_conf_t *conf;
} mm_exec_remote_t;
/* Puts n inputs in the model's executor queue and waits for their vectors,
 * until 90% of request_timeout after the running request started. */
int mm_executor_remote_encode(void *ctx, const mm_input_t *in, int n, float *out);
/* A worker names its scoreboard slot (its request's start time) once. */
void mm_executor_worker_init(const mm_sb_slot_t *slot);

/* Run the master: `conf_path` is re-read on SIGHUP. Returns the exit code. */
int mm_master_run(const char *conf_path, int daemonize);

/* Worker main loop (never returns; exits the process). */
void mm_worker_main(mm_worker_ctx_t *ctx) __attribute__((noreturn));

/* Stand-in for a crash-looping slot while it waits out its back-off: it
 * answers every request on the slot's socket with 503 + Retry-After at once
 * (no model work), so nginx moves on instead of waiting or seeing a refused
 * connection. Exits on SIGQUIT/SIGTERM or when the master dies. */
void mm_worker_standin(mm_worker_ctx_t *ctx) __attribute__((noreturn));

/* Router: classify a request (fills r->route); returns 1 if it is a cheap
 * control route the accept thread may answer even while busy. */
int mm_router_classify(struct mm_http_req *r);
/* Answer a request completely (any route). */
void mm_router_handle(mm_worker_ctx_t *ctx, struct mm_http_req *r);
/* Batch kinds: queued requests of one kind run together. */
enum { MM_BATCH_NONE, MM_BATCH_TEXT, MM_BATCH_IMAGE };
/* The batch kind of r's route when its queued requests run together (the
 * text routes, /embed/image; their method), else MM_BATCH_NONE. */
int mm_router_batchable(const struct mm_http_req *r);
/* Answer n batchable requests of one kind together (each authorized on its own). */
void mm_router_handle_batch(mm_worker_ctx_t *ctx, struct mm_http_req *const *rs, int n);

#endif
