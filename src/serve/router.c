/* Routes: control endpoints that read the scoreboard, and dispatch of the
 * embedding endpoints to the embed layer. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "mmembed/embed.h"
#include "mmembed/gpuq.h"
#include "mmembed/http.h"
#include "mmembed/sandbox.h"
#include "mmembed/serve.h"

typedef void control_fn(mm_worker_ctx_t *ctx, mm_http_req_t *r);
static control_fn h_health, h_info, h_metrics, h_status, h_models, h_model;

/* The one route table: path, id (its counters in the scoreboard), method,
 * whether the accept thread answers it even while busy, its metrics name
 * and its handler (a control route here, or an embedding route in
 * src/embed/). A new route is one row here, its handler, and its id in
 * scoreboard.h (shared-memory counters are sized by the id count). */
typedef struct {
    const char *path;
    int route;                 /* MM_ROUTE_* */
    const char *method;
    int control;               /* cheap: answered by the accept thread even when busy */
    const char *name;          /* label in /metrics */
    control_fn *serve;         /* control routes */
    mm_embed_route_fn *embed;  /* embedding routes */
    int batch;                 /* MM_BATCH_*: queued requests of one kind run together */
} route_t;

static const route_t routes[] = {
    {"/health", MM_ROUTE_HEALTH, "GET", 1, "/health", h_health, NULL, 0},
    {"/info", MM_ROUTE_INFO, "GET", 1, "/info", h_info, NULL, 0},
    {"/metrics", MM_ROUTE_METRICS, "GET", 1, "/metrics", h_metrics, NULL, 0},
    {"/status", MM_ROUTE_STATUS, "GET", 1, "/status", h_status, NULL, 0},
    {"/v1/models", MM_ROUTE_MODELS, "GET", 1, "/v1/models", h_models, NULL, 0},
    {"/v1/embeddings", MM_ROUTE_EMBEDDINGS, "POST", 0, "/v1/embeddings", NULL, mm_embed_openai, MM_BATCH_TEXT},
    {"/embed/text", MM_ROUTE_EMBED_TEXT, "POST", 0, "/embed/text", NULL, mm_embed_text, MM_BATCH_TEXT},
    {"/embed/image", MM_ROUTE_EMBED_IMAGE, "POST", 0, "/embed/image", NULL, mm_embed_image, MM_BATCH_IMAGE},
    {"/embed/multimodal", MM_ROUTE_EMBED_MULTIMODAL, "POST", 0, "/embed/multimodal", NULL, mm_embed_multimodal, 0},
    {"/embed/video", MM_ROUTE_EMBED_VIDEO, "POST", 0, "/embed/video", NULL, mm_embed_video, 0},
    {"/embed/document", MM_ROUTE_EMBED_DOCUMENT, "POST", 0, "/embed/document", NULL, mm_embed_document, 0},
};

/* GET /v1/models/{id}: one model (or alias) in OpenAI's shape; counted with /v1/models. */
static const route_t model_route = {"/v1/models/", MM_ROUTE_MODELS, "GET", 1, "/v1/models", h_model, NULL, 0};

static const char *route_name(int route)
{
    for (size_t i = 0; i < MM_ARRAY_LEN(routes); i++)
        if (routes[i].route == route) return routes[i].name;
    return "other";
}

static const route_t *find(const char *path)
{
    for (size_t i = 0; i < MM_ARRAY_LEN(routes); i++)
        if (strcmp(routes[i].path, path) == 0) return &routes[i];
    if (strncmp(path, model_route.path, strlen(model_route.path)) == 0 && path[strlen(model_route.path)])
        return &model_route;
    return NULL;
}

static int hexdig(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void h_models(mm_worker_ctx_t *ctx, mm_http_req_t *r)
{
    mm_embed_models_openai(ctx->embed, &r->out);
    mm_http_respond_json(r, 200);
}

static void h_model(mm_worker_ctx_t *ctx, mm_http_req_t *r)
{
    char id[200];
    const char *p = r->path + strlen(model_route.path);
    size_t o = 0;
    for (; *p && o + 1 < sizeof id; p++) {   /* the id is URL-decoded: "org%2Fname" is "org/name" */
        if (p[0] == '%' && hexdig(p[1]) >= 0 && hexdig(p[2]) >= 0) {
            id[o++] = (char)(hexdig(p[1]) * 16 + hexdig(p[2]));
            p += 2;
        } else {
            id[o++] = *p;
        }
    }
    id[o] = '\0';
    if (mm_embed_model_openai(ctx->embed, id, &r->out) == MM_OK) {
        mm_http_respond_json(r, 200);
        return;
    }
    char names[256];
    mm_embed_model_names(ctx->embed, names, sizeof names);
    mm_http_error(r, 404, "model_not_found", "model '%.100s' is not served here; available: %s", id, names);
}

int mm_router_classify(mm_http_req_t *r)
{
    const route_t *rt = find(r->path);
    r->route = rt ? rt->route : MM_ROUTE_OTHER;
    if (!rt) return 0;
    return rt->control && (strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0);
}

/* ---------------------------------------------------------------- aggregation */

typedef struct {
    uint64_t requests, rejected;
    uint64_t rs[MM_ROUTE_COUNT][MM_SB_N_STATUS];
    uint64_t hist[MM_SB_N_BUCKETS];
    uint64_t dur_us;
    uint64_t batch_hist[MM_SB_N_BATCH_BUCKETS];
    uint64_t qwait_hist[MM_SB_N_BUCKETS];
    uint64_t qwait_us;
    int busy, idle, total, queued;
} totals_t;

static void sum(const mm_scoreboard_t *sb, totals_t *t)
{
    memset(t, 0, sizeof *t);
    t->requests = sb->gone_requests;
    t->rejected = sb->gone_rejected;
    memcpy(t->rs, sb->gone_by_route_status, sizeof t->rs);
    memcpy(t->hist, sb->gone_hist, sizeof t->hist);
    t->dur_us = sb->gone_duration_us_sum;
    memcpy(t->batch_hist, sb->gone_batch_hist, sizeof t->batch_hist);
    memcpy(t->qwait_hist, sb->gone_qwait_hist, sizeof t->qwait_hist);
    t->qwait_us = sb->gone_qwait_us_sum;
    for (int i = 0; i < MM_SB_SLOTS; i++) {
        const mm_sb_slot_t *s = &sb->slots[i];
        int st = s->state;
        if (st == MM_SLOT_FREE) continue;
        t->requests += s->requests;
        t->rejected += s->rejected_busy;
        for (int a = 0; a < MM_ROUTE_COUNT; a++)
            for (int b = 0; b < MM_SB_N_STATUS; b++) t->rs[a][b] += s->by_route_status[a][b];
        for (int b = 0; b < MM_SB_N_BUCKETS; b++) t->hist[b] += s->hist[b];
        t->dur_us += s->duration_us_sum;
        for (int b = 0; b < MM_SB_N_BATCH_BUCKETS; b++) t->batch_hist[b] += s->batch_hist[b];
        for (int b = 0; b < MM_SB_N_BUCKETS; b++) t->qwait_hist[b] += s->qwait_hist[b];
        t->qwait_us += s->qwait_us_sum;
        if (s->index >= 0) t->queued += s->queued;
        if (st == MM_SLOT_BUSY) t->busy++;
        else if (st == MM_SLOT_IDLE) t->idle++;
        if (st == MM_SLOT_BUSY || st == MM_SLOT_IDLE) t->total++;
    }
}

static int pool_ready(const mm_worker_ctx_t *ctx)
{
    totals_t t;
    sum(ctx->sb, &t);
    return ctx->sb->ready && t.total > 0;
}

/* ---------------------------------------------------------------- executors */

/* Every executor of this generation up: 1; one still on its first start
 * (loading its models, as the master does before the pool is ready): 0;
 * one down or restarting after a death or a failed start: -1. */
static int execs_up(const mm_worker_ctx_t *ctx)
{
    int st = 1;
    for (int k = 0; k < ctx->n_exec; k++) {
        const mm_gq_hdr_t *h = mm_gq_hdr(ctx->exec[k].q);
        if (h->exec_state == MM_GQ_UP) continue;
        if (h->deaths) return -1;
        st = 0;
    }
    return st;
}

/* "executors":[...] for /health (brief) and /info (with statistics). */
static void execs_json(const mm_worker_ctx_t *ctx, mm_buf_t *b, int full)
{
    const mm_conf_t *c = ctx->conf;
    mm_buf_puts(b, ",\"executors\":[");
    for (int k = 0; k < ctx->n_exec; k++) {
        const mm_exec_view_t *v = &ctx->exec[k];
        mm_gq_hdr_t *h = mm_gq_hdr(v->q);
        mm_buf_printf(b, "%s{\"device\":\"%s\",", k ? "," : "", v->device);
        if (!full) {
            mm_buf_printf(b, "\"state\":\"%s\",\"deaths\":%llu}", mm_gq_state_name(v->q), (unsigned long long)h->deaths);
            continue;
        }
        mm_gq_stats_json(v->q, b);
        mm_buf_printf(b, ",\"max_batch_tokens\":%d,\"max_batch\":%d,\"batch_delay_us\":%d,\"models\":[",
                      c->exec_max_batch_tokens, c->exec_max_batch, c->exec_batch_delay_us);
        for (int j = 0; j < v->n_models; j++) {
            const int i = v->models[j];
            const char *name = mm_embed_model_name(ctx->embed, i);
            mm_buf_printf(b, "%s{\"name\":", j ? "," : "");
            mm_buf_json_str(b, name, strlen(name));
            mm_buf_printf(b, ",\"run\":\"%s\",\"gpu_dtype\":\"%s\",\"device_bytes\":%llu}",
                          h->model_run[i][0] ? h->model_run[i] : "loading", c->models[i].gpu_dtype,
                          (unsigned long long)h->model_bytes[i]);
        }
        mm_buf_puts(b, "]}");
    }
    mm_buf_puts(b, "]");
}

static void execs_metrics(const mm_worker_ctx_t *ctx, mm_buf_t *b)
{
    if (!ctx->n_exec) return;
    static const struct {
        const char *name, *help, *type;
        size_t off;
    } m[] = {
        {"mmembed_executor_starts_total", "Executor processes started.", "counter", offsetof(mm_gq_hdr_t, starts)},
        {"mmembed_executor_deaths_total", "Executors that died (their requests in flight answered 503).", "counter",
         offsetof(mm_gq_hdr_t, deaths)},
        {"mmembed_executor_failed_requests_total", "Requests in flight failed by an executor's death.", "counter",
         offsetof(mm_gq_hdr_t, failed_slots)},
        {"mmembed_executor_rejected_full_total", "Requests answered 503 at once: no free executor slot.", "counter",
         offsetof(mm_gq_hdr_t, rejected_full)},
        {"mmembed_executor_rejected_down_total", "Requests answered 503: the executor was down or died.", "counter",
         offsetof(mm_gq_hdr_t, rejected_down)},
        {"mmembed_executor_timeouts_total", "Requests the executor did not answer before their deadline.", "counter",
         offsetof(mm_gq_hdr_t, timeouts)},
        {"mmembed_executor_batches_total", "Batches run by the executor.", "counter", offsetof(mm_gq_hdr_t, batches)},
        {"mmembed_executor_batch_inputs_total", "Inputs in those batches.", "counter", offsetof(mm_gq_hdr_t, inputs)},
        {"mmembed_executor_batch_requests_total", "Worker requests (slots) in those batches.", "counter",
         offsetof(mm_gq_hdr_t, slots_done)},
        {"mmembed_executor_cross_worker_batches_total", "Batches holding requests of more than one worker.", "counter",
         offsetof(mm_gq_hdr_t, cross_worker_batches)},
    };
    mm_buf_puts(b, "# HELP mmembed_executor_up 1 while the device's executor serves.\n# TYPE mmembed_executor_up gauge\n");
    for (int k = 0; k < ctx->n_exec; k++)
        mm_buf_printf(b, "mmembed_executor_up{device=\"%s\"} %d\n", ctx->exec[k].device,
                      mm_gq_hdr(ctx->exec[k].q)->exec_state == MM_GQ_UP);
    for (size_t i = 0; i < MM_ARRAY_LEN(m); i++) {
        mm_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", m[i].name, m[i].help, m[i].name, m[i].type);
        for (int k = 0; k < ctx->n_exec; k++) {
            const char *h = (const char *)mm_gq_hdr(ctx->exec[k].q);
            mm_buf_printf(b, "%s{device=\"%s\"} %llu\n", m[i].name, ctx->exec[k].device,
                          (unsigned long long)__atomic_load_n((const uint64_t *)(h + m[i].off), __ATOMIC_RELAXED));
        }
    }
}

/* ---------------------------------------------------------------- handlers */

static void h_health(mm_worker_ctx_t *ctx, mm_http_req_t *r)
{
    totals_t t;
    sum(ctx->sb, &t);
    /* an executor that died or cannot start is "degraded", not down: the
     * workers and the other models serve, its models answer 503 until it is
     * back (a 503 here would also be retried by nginx on another worker) */
    int pool = ctx->sb->ready && t.total > 0, ex = execs_up(ctx);
    int ok = pool && ex != 0;
    mm_buf_printf(&r->out, "{\"status\":\"%s\",\"workers\":{\"total\":%d,\"busy\":%d,\"idle\":%d}",
                  !ok ? "starting" : ex < 0 ? "degraded" : "ok", t.total, t.busy, t.idle);
    execs_json(ctx, &r->out, 0);
    mm_buf_puts(&r->out, ",\"models\":");
    mm_embed_models_json(ctx->embed, &r->out);
    mm_buf_puts(&r->out, "}\n");
    mm_http_respond_json(r, ok ? 200 : 503);
}

static void h_info(mm_worker_ctx_t *ctx, mm_http_req_t *r)
{
    const mm_conf_t *c = ctx->conf;
    mm_buf_t *b = &r->out;
    mm_buf_printf(b, "{\"name\":\"mmembed\",\"version\":\"%s\",\"models\":", MM_VERSION);
    mm_embed_models_json(ctx->embed, b);
    execs_json(ctx, b, 1);
    mm_buf_printf(b, ",\"limits\":{\"max_body_bytes\":%lld,\"max_items\":%d,\"max_text_bytes\":%lld,\"max_request_text_bytes\":%lld,"
                     "\"max_pixels\":%lld,\"max_parts\":%d,\"max_frames\":%d,\"default_frames\":%d,"
                     "\"max_video_seconds\":%g,\"video_budget_seconds\":%g,\"image_budget_seconds\":%g,"
                     "\"request_timeout_seconds\":%g,"
                     "\"max_pages\":%d,\"max_page_pixels\":%d,\"render_budget\":%g,\"max_pdf_bytes\":%lld,"
                     "\"render_memory\":%lld},"
                     "\"pool\":{\"workers\":%d,\"threads\":%d,\"queue_depth\":%d}}\n",
                  (long long)c->max_body_bytes, c->max_items, (long long)c->max_text_bytes,
                  (long long)c->max_request_text_bytes,
                  (long long)c->max_pixels, c->max_parts, c->max_frames, c->default_frames,
                  c->max_video_seconds, c->video_budget, c->image_budget, c->request_timeout,
                  c->max_pages, c->max_page_pixels, c->render_budget, (long long)c->max_pdf_bytes,
                  (long long)c->render_memory, c->workers, c->threads, c->queue_depth);
    mm_http_respond_json(r, 200);
}

static void h_metrics(mm_worker_ctx_t *ctx, mm_http_req_t *r)
{
    static const int statuses[] = MM_SB_STATUSES;
    static const double buckets[] = MM_SB_BUCKETS;
    const mm_scoreboard_t *sb = ctx->sb;
    totals_t t;
    sum(sb, &t);
    mm_buf_t *b = &r->out;
    mm_buf_puts(b, "# HELP mmembed_requests_total Requests answered by workers, by route and HTTP status.\n"
                   "# TYPE mmembed_requests_total counter\n");
    for (int a = 0; a < MM_ROUTE_COUNT; a++)
        for (int s = 0; s < MM_SB_N_STATUS; s++) {
            if (!t.rs[a][s]) continue;
            if (s < MM_SB_N_STATUS - 1)
                mm_buf_printf(b, "mmembed_requests_total{route=\"%s\",status=\"%d\"} %llu\n", route_name(a),
                              statuses[s], (unsigned long long)t.rs[a][s]);
            else
                mm_buf_printf(b, "mmembed_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                              route_name(a), (unsigned long long)t.rs[a][s]);
        }
    mm_buf_printf(b, "# HELP mmembed_busy_rejections_total Requests answered 503 because the worker was busy.\n"
                     "# TYPE mmembed_busy_rejections_total counter\nmmembed_busy_rejections_total %llu\n",
                  (unsigned long long)t.rejected);
    mm_buf_printf(b, "# HELP mmembed_worker_restarts_total Worker processes started to replace others.\n"
                     "# TYPE mmembed_worker_restarts_total counter\nmmembed_worker_restarts_total %llu\n"
                     "# HELP mmembed_worker_crashes_total Workers that died abnormally.\n"
                     "# TYPE mmembed_worker_crashes_total counter\nmmembed_worker_crashes_total %llu\n"
                     "# HELP mmembed_worker_timeouts_total Workers killed past request_timeout.\n"
                     "# TYPE mmembed_worker_timeouts_total counter\nmmembed_worker_timeouts_total %llu\n"
                     "# HELP mmembed_worker_recycles_total Workers replaced after max_requests.\n"
                     "# TYPE mmembed_worker_recycles_total counter\nmmembed_worker_recycles_total %llu\n"
                     "# HELP mmembed_worker_backoffs_total Restarts delayed because a slot crash-looped.\n"
                     "# TYPE mmembed_worker_backoffs_total counter\nmmembed_worker_backoffs_total %llu\n"
                     "# HELP mmembed_worker_wedged_total Workers replaced because their heartbeat stopped.\n"
                     "# TYPE mmembed_worker_wedged_total counter\nmmembed_worker_wedged_total %llu\n"
                     "# HELP mmembed_poison_requests_total Requests that crashed or timed out a worker (not retried).\n"
                     "# TYPE mmembed_poison_requests_total counter\nmmembed_poison_requests_total %llu\n"
                     "# HELP mmembed_poison_refused_total Retries of such requests answered at once without running.\n"
                     "# TYPE mmembed_poison_refused_total counter\nmmembed_poison_refused_total %llu\n"
                     "# HELP mmembed_workers_in_backoff Worker slots waiting out a crash-loop delay.\n"
                     "# TYPE mmembed_workers_in_backoff gauge\nmmembed_workers_in_backoff %d\n",
                  (unsigned long long)sb->restarts, (unsigned long long)sb->crashes,
                  (unsigned long long)sb->timeouts, (unsigned long long)sb->recycles,
                  (unsigned long long)sb->backoffs, (unsigned long long)sb->wedged,
                  (unsigned long long)sb->poison_marked, (unsigned long long)sb->poison_refused, sb->in_backoff);
    mm_buf_printf(b, "# HELP mmembed_workers Worker processes by state.\n# TYPE mmembed_workers gauge\n"
                     "mmembed_workers{state=\"busy\"} %d\nmmembed_workers{state=\"idle\"} %d\n"
                     "# HELP mmembed_workers_max_busy Highest number of simultaneously busy workers.\n"
                     "# TYPE mmembed_workers_max_busy gauge\nmmembed_workers_max_busy %d\n",
                  t.busy, t.idle, sb->max_busy);
    mm_buf_puts(b, "# HELP mmembed_request_duration_seconds Time from accept to response, all routes.\n"
                   "# TYPE mmembed_request_duration_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < MM_SB_N_BUCKETS; i++) {
        cum += t.hist[i];
        if (i < MM_SB_N_BUCKETS - 1)
            mm_buf_printf(b, "mmembed_request_duration_seconds_bucket{le=\"%g\"} %llu\n", buckets[i],
                          (unsigned long long)cum);
        else
            mm_buf_printf(b, "mmembed_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    mm_buf_printf(b, "mmembed_request_duration_seconds_sum %.6f\nmmembed_request_duration_seconds_count %llu\n",
                  t.dur_us / 1e6, (unsigned long long)cum);
    static const int bbuckets[] = MM_SB_BATCH_BUCKETS;
    mm_buf_printf(b, "# HELP mmembed_queue_depth Requests waiting in workers' queues (queue_depth each).\n"
                     "# TYPE mmembed_queue_depth gauge\nmmembed_queue_depth %d\n", t.queued);
    for (int i = 0; i < MM_SB_SLOTS; i++) {
        const mm_sb_slot_t *s = &sb->slots[i];
        if (s->state == MM_SLOT_FREE || s->index < 0 || s->state == MM_SLOT_BACKOFF) continue;
        mm_buf_printf(b, "mmembed_queue_depth{worker=\"%d\",pid=\"%d\"} %d\n", s->index, (int)s->pid, s->queued);
    }
    mm_buf_puts(b, "# HELP mmembed_batch_size Requests run together per pass of a worker's request thread.\n"
                   "# TYPE mmembed_batch_size histogram\n");
    uint64_t bcum = 0, breq = 0;
    for (int i = 0; i < MM_SB_N_BATCH_BUCKETS; i++) {
        bcum += t.batch_hist[i];
        if (i < MM_SB_N_BATCH_BUCKETS - 1) {
            mm_buf_printf(b, "mmembed_batch_size_bucket{le=\"%d\"} %llu\n", bbuckets[i], (unsigned long long)bcum);
        } else {
            mm_buf_printf(b, "mmembed_batch_size_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)bcum);
        }
    }
    for (int i = 0; i < MM_SB_N_BUCKETS; i++) breq += t.qwait_hist[i];   /* every request of every pass */
    mm_buf_printf(b, "mmembed_batch_size_sum %llu\nmmembed_batch_size_count %llu\n", (unsigned long long)breq,
                  (unsigned long long)bcum);
    mm_buf_puts(b, "# HELP mmembed_queue_wait_seconds Per request: from accept to the start of its pass.\n"
                   "# TYPE mmembed_queue_wait_seconds histogram\n");
    cum = 0;
    for (int i = 0; i < MM_SB_N_BUCKETS; i++) {
        cum += t.qwait_hist[i];
        if (i < MM_SB_N_BUCKETS - 1)
            mm_buf_printf(b, "mmembed_queue_wait_seconds_bucket{le=\"%g\"} %llu\n", buckets[i], (unsigned long long)cum);
        else
            mm_buf_printf(b, "mmembed_queue_wait_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    mm_buf_printf(b, "mmembed_queue_wait_seconds_sum %.6f\nmmembed_queue_wait_seconds_count %llu\n", t.qwait_us / 1e6,
                  (unsigned long long)cum);
    mm_embed_cache_metrics(ctx->embed, b);
    execs_metrics(ctx, b);
    mm_buf_printf(b, "# HELP mmembed_ready 1 once models are loaded and workers are up.\n# TYPE mmembed_ready gauge\n"
                     "mmembed_ready %d\n", pool_ready(ctx));
    mm_http_respond(r, 200, "text/plain; version=0.0.4", NULL, b->data, b->len);
}

static const char *state_name(int st)
{
    switch (st) {
    case MM_SLOT_STARTING: return "starting";
    case MM_SLOT_IDLE: return "idle";
    case MM_SLOT_BUSY: return "busy";
    case MM_SLOT_STOPPING: return "stopping";
    case MM_SLOT_BACKOFF: return "backoff";
    default: return "free";
    }
}

static void h_status(mm_worker_ctx_t *ctx, mm_http_req_t *r)
{
    const mm_scoreboard_t *sb = ctx->sb;
    totals_t t;
    sum(sb, &t);
    mm_buf_t *b = &r->out;
    int64_t now = mm_now_us(), wall = mm_wall_us();
    mm_buf_printf(b, "{\"pool\":\"mmembed\",\"start_time\":%lld,\"start_since\":%lld,\"accepted_conn\":%llu,"
                     "\"busy_rejections\":%llu,\"idle_workers\":%d,\"busy_workers\":%d,\"total_workers\":%d,"
                     "\"configured_workers\":%d,\"max_busy_reached\":%d,\"restarts\":%llu,\"crashes\":%llu,"
                     "\"timeouts\":%llu,\"recycles\":%llu,\"in_backoff\":%d,\"generation\":%d,\"queue_depth\":%d,"
                     "\"queued\":%d,\"workers\":[",
                  (long long)(sb->start_us / 1000000), (long long)((wall - sb->start_us) / 1000000),
                  (unsigned long long)t.requests, (unsigned long long)t.rejected, t.idle, t.busy, t.total,
                  sb->workers, sb->max_busy, (unsigned long long)sb->restarts, (unsigned long long)sb->crashes,
                  (unsigned long long)sb->timeouts, (unsigned long long)sb->recycles, sb->in_backoff,
                  sb->generation, ctx->conf->queue_depth, t.queued);
    int first = 1;
    for (int i = 0; i < MM_SB_SLOTS; i++) {
        const mm_sb_slot_t *s = &sb->slots[i];
        int st = s->state;
        if (st == MM_SLOT_FREE || s->index < 0) continue;   /* the overflow process is not a worker */
        int64_t rs = s->req_start_us;
        mm_buf_printf(b, "%s{\"index\":%d,\"pid\":%d,\"state\":\"%s\",\"generation\":%d,\"start_since\":%lld,"
                         "\"requests\":%llu,\"busy_rejections\":%llu,\"request_duration_ms\":%.3f,"
                         "\"last_request_ms\":%.3f,\"last_status\":%d,\"queued\":%d,\"batch\":%d,"
                         "\"last_batch\":%d",
                      first ? "" : ",", s->index, (int)s->pid, state_name(st), s->generation,
                      (long long)((wall - s->started_us) / 1000000), (unsigned long long)s->requests,
                      (unsigned long long)s->rejected_busy, rs ? (now - rs) / 1e3 : 0.0,
                      s->last_duration_us / 1e3, s->last_status, (int)s->queued, rs ? MM_MAX((int)s->batch_n, 1) : 0,
                      (int)s->last_batch);
        if (rs) {
            char m[8], u[64];
            memcpy(m, s->req_method, sizeof m);
            memcpy(u, s->req_uri, sizeof u);
            m[7] = u[63] = '\0';
            mm_buf_puts(b, ",\"request_method\":");
            mm_buf_json_str(b, m, strlen(m));
            mm_buf_puts(b, ",\"request_uri\":");
            mm_buf_json_str(b, u, strlen(u));
        }
        mm_buf_puts(b, "}");
        first = 0;
    }
    mm_buf_puts(b, "]}\n");
    mm_http_respond_json(r, 200);
}

#ifdef MM_TEST_HOOKS
/* /__test/syscall?call=ptrace|socket|execve|fork[&pid=P]: make a system call
 * the sandbox denies, so the worker dies and the master replaces it. A
 * worker other than pid P answers 503, so nginx moves on to the others. */
static int test_syscall(mm_worker_ctx_t *ctx, mm_http_req_t *r)
{
    char v[32], call[16] = "ptrace";
    mm_http_drain(r, ctx->conf->max_body_bytes);
    if (mm_http_query(r, "pid", v, sizeof v) && atol(v) != (long)getpid()) {
        mm_http_error(r, 503, "busy", "test hook: pid %d is not the target", (int)getpid());
        return 1;
    }
    mm_http_query(r, "call", call, sizeof call);
    mm_sandbox_test_denied(call);
    mm_http_error(r, 500, "sandbox_off", "system call '%s' was not denied: no sandbox", call);
    return 1;
}
#endif

#ifdef MM_TEST_HOOKS
/* Test-only routes (never in the default binary): a slow request and a crash. */
static int test_hook(mm_worker_ctx_t *ctx, mm_http_req_t *r)
{
    (void)ctx;
    char v[32];
    if (strcmp(r->path, "/__test/sleep") == 0) {
        long ms = mm_http_query(r, "ms", v, sizeof v) ? atol(v) : 100;
        /* until_queued=N: return early once N requests wait in this worker's queue */
        long until = mm_http_query(r, "until_queued", v, sizeof v) ? atol(v) : 0;
        mm_http_drain(r, ctx->conf->max_body_bytes);
        int64_t end = mm_now_us() + (int64_t)ms * 1000;
        while (mm_now_us() < end && !(until > 0 && ctx->slot->queued >= until)) usleep(2000);
        mm_buf_printf(&r->out, "{\"slept_ms\":%ld,\"pid\":%d}\n", ms, (int)getpid());
        mm_http_respond_json(r, 200);
        return 1;
    }
    if (strcmp(r->path, "/__test/crash") == 0) abort();
    if (strcmp(r->path, "/__test/syscall") == 0) return test_syscall(ctx, r);
    return 0;
}
#endif

/* Compare the presented key with every configured key in time that depends
 * only on the lengths, not on where the bytes differ. */
static int key_ok(const mm_conf_t *c, const char *key, size_t n)
{
    int ok = 0;
    for (int i = 0; i < c->n_keys; i++) {
        const char *k = c->keys[i];
        size_t kl = strlen(k);
        unsigned diff = (unsigned)(kl ^ n);
        for (size_t j = 0; j < MM_KEY_MAX - 1; j++) {
            unsigned char a = j < n ? (unsigned char)key[j] : 0, b = j < kl ? (unsigned char)k[j] : 0;
            diff |= (unsigned)(a ^ b);
        }
        ok |= diff == 0;
    }
    return ok;
}

/* Optional API keys: every route but /health needs "Authorization: Bearer KEY". */
static int authorized(mm_worker_ctx_t *ctx, mm_http_req_t *r)
{
    const mm_conf_t *c = ctx->conf;
    if (c->n_keys == 0 || r->route == MM_ROUTE_HEALTH) return 1;
    const char *a = r->auth;
    if (!a[0]) {
        mm_http_drain(r, c->max_body_bytes);
        mm_http_error(r, 401, "missing_api_key", "an API key is required: send Authorization: Bearer <key>");
        return 0;
    }
    if (strncasecmp(a, "Bearer ", 7) != 0 || strlen(a + 7) >= MM_KEY_MAX || !key_ok(c, a + 7, strlen(a + 7))) {
        mm_http_drain(r, c->max_body_bytes);
        mm_http_error(r, 403, "invalid_api_key", "the API key is not valid");
        return 0;
    }
    return 1;
}

int mm_router_batchable(const mm_http_req_t *r)
{
    const route_t *rt = find(r->path);
    return rt && strcmp(r->method, rt->method) == 0 ? rt->batch : MM_BATCH_NONE;
}

void mm_router_handle_batch(mm_worker_ctx_t *ctx, mm_http_req_t *const *rs, int n)
{
    mm_http_req_t *run[MM_SB_BATCH];
    const int kind = n ? mm_router_batchable(rs[0]) : MM_BATCH_NONE;
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (kind == MM_BATCH_NONE || mm_router_batchable(rs[i]) != kind || k == MM_SB_BATCH)
            mm_router_handle(ctx, rs[i]);   /* never: the caller checked */
        else if (authorized(ctx, rs[i])) run[k++] = rs[i];
    }
    if (k && kind == MM_BATCH_IMAGE) mm_embed_image_batch(ctx->embed, run, k);
    else if (k) mm_embed_text_batch(ctx->embed, run, k);
}

void mm_router_handle(mm_worker_ctx_t *ctx, mm_http_req_t *r)
{
    if (!authorized(ctx, r)) return;
#ifdef MM_TEST_HOOKS
    if (test_hook(ctx, r)) return;
#endif
    const route_t *rt = find(r->path);
    if (!rt) {
        mm_http_drain(r, ctx->conf->max_body_bytes);
        mm_http_error(r, 404, "not_found", "no route for %s", r->path);
        return;
    }
    int head = strcmp(r->method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0;
    r->allow = strcmp(rt->method, "GET") == 0 ? "GET, HEAD" : rt->method;
    if (strcmp(r->method, rt->method) != 0 && !head) {
        mm_http_drain(r, ctx->conf->max_body_bytes);
        mm_http_error(r, 405, "method_not_allowed", "%s does not accept %s (use %s)", rt->path, r->method, rt->method);
        return;
    }
    if (rt->serve) rt->serve(ctx, r);
    else mm_embed_handle(ctx->embed, r, rt->embed);
}
