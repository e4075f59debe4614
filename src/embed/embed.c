/* The served models: loaded once in the master before fork (the registry
 * picks each one's architecture), per-worker scratch, the route dispatch,
 * and the command line's one-model variants. The request path lives in the
 * other files of src/embed/: body.c (JSON / multipart bodies), encode.c (the
 * chunked encode loop with the cache), respond.c (the response shape) and
 * route_*.c (one file per group of routes). */
#include "mmembed/embed.h"

#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include <time.h>

#include "mmembed/log.h"
#include "mmembed/nn.h"
#include "mmembed/packcache.h"
#include "mmembed/video.h"

/* ---------------------------------------------------------------- loading */

static const char *pack_cache_word(int v)
{
    return v == 1 ? "mapped" : v == 2 ? "stored" : v == -1 ? "unwritable" : "off";
}

double emb_ms_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int load_entry(entry_t *e, const char *name, const mm_enc_plan_t *plan, char *err, size_t errlen)
{
    char sub[MM_ERRLEN];
    const char *dir = plan->dir;
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->dir, sizeof e->dir, "%s", dir);
    snprintf(e->dtype_want, sizeof e->dtype_want, "%s", plan->want);
    int rc = mm_encoder_load_planned(plan, &e->enc, sub, sizeof sub);
    if (rc) return mm_errf(err, errlen, rc, "model '%s': %s", name, sub);
    e->info = mm_encoder_info(e->enc);
    e->pre = mm_encoder_preproc(e->enc);
    e->max_tokens = e->info->max_tokens;
    if (mm_encoder_synthetic(e->enc))
        mm_log_warn("model '%s' (%s) has SYNTHETIC weights: its vectors are not semantic", name, dir);
    return MM_OK;
}

static void free_entry(entry_t *e)
{
    mm_encoder_runner_free(e->run);
    mm_encoder_free(e->enc);
    memset(e, 0, sizeof *e);
}

int mm_embed_load(const void *conf, mm_embed_t **out, char *err, size_t errlen)
{
    const mm_conf_t *c = conf;
    *out = NULL;
    mm_embed_t *e = calloc(1, sizeof *e);
    if (!e) return MM_E_NOMEM;
    e->conf = c;
    mm_video_init();
    mm_pack_cache_set_dir(c->pack_cache);
    /* the dtype of every model at once: auto's memory budget is shared */
    static mm_enc_plan_t plan[MM_MAX_PLAN];
    char sub[MM_ERRLEN];
    int prc = MM_OK;
    for (int i = 0; i < c->n_models && i < MM_MAX_PLAN && !prc; i++) {
        /* a GPU reads the f32 pack (it converts the dense layers to its own operands) */
        const int gpu = mm_conf_device_kind(c->models[i].device) == MM_DEV_GPU;
        plan[i] = (mm_enc_plan_t){.dir = c->models[i].path, .want = gpu ? "f32" : c->models[i].dtype};
        if (!strcmp(plan[i].want, "auto") && (prc = mm_encoder_pack_bytes(plan[i].dir, plan[i].bytes, sub, sizeof sub)))
            prc = mm_errf(err, errlen, prc, "model '%s': %s", c->models[i].name, sub);
    }
    if (!prc && (prc = mm_encoder_plan(plan, c->n_models, c->memory_share, mm_encoder_mem_available(), sub, sizeof sub)))
        prc = mm_errf(err, errlen, prc, "%s", sub);
    if (prc) {
        mm_embed_free(e);
        return prc;
    }
    for (int i = 0; i < c->n_models; i++) {
        int rc = load_entry(&e->m[i], c->models[i].name, &plan[i], err, errlen);
        if (rc) {
            e->n = i + 1;
            mm_embed_free(e);
            return rc;
        }
        mm_log_info("model '%s': %s, dense layers in %s (%s); weights prepared in %.0f ms%s, %zu MiB shared",
                    e->m[i].name, e->m[i].info->arch, e->m[i].info->compute, mm_encoder_dtype_reason(e->m[i].enc),
                    mm_encoder_load_ms(e->m[i].enc),
                    e->m[i].info->pack_cache == 0 ? "" : e->m[i].info->pack_cache == 1 ? " (mapped from the pack cache)" :
                    e->m[i].info->pack_cache == 2 ? " (pack cache written)" : " (pack cache NOT writable)",
                    e->m[i].info->weight_bytes >> 20);
        if (mm_conf_device_kind(c->models[i].device) == MM_DEV_GPU && !mm_encoder_has_backend(e->m[i].enc)) {
            int rc = mm_errf(err, errlen, MM_E_UNSUPPORTED, "model '%s' (%s) has no forward on a GPU yet: "
                             "device must be \"cpu\" or \"cpu-executor\"", e->m[i].name, e->m[i].info->arch);
            e->n = i + 1;
            mm_embed_free(e);
            return rc;
        }
        e->m[i].is_default = c->models[i].is_default;
        e->m[i].cm = &c->models[i];
        e->m[i].default_for = c->models[i].default_for;
        if (((e->m[i].default_for & MM_MOD_TEXT) && !e->m[i].info->has_text) ||
            ((e->m[i].default_for & (MM_MOD_IMAGE | MM_MOD_VIDEO)) && !e->m[i].info->has_vision)) {
            int rc = mm_errf(err, errlen, MM_E_INVALID, "model '%s' is default_for a modality it cannot embed",
                             e->m[i].name);
            e->n = i + 1;
            mm_embed_free(e);
            return rc;
        }
        e->m[i].max_tokens = e->m[i].info->max_tokens;
        if (c->models[i].max_tokens > 0) e->m[i].max_tokens = MM_MIN(c->models[i].max_tokens, e->m[i].info->max_tokens);
        snprintf(e->m[i].instruction, sizeof e->m[i].instruction, "%s", c->models[i].instruction);
        if (c->models[i].max_image_tokens > 0 && e->m[i].pre && e->m[i].pre->dynamic) {
            e->m[i].pre_own = *e->m[i].pre;   /* the cost lever: pixels per image */
            const long cap = (long)c->models[i].max_image_tokens * 28 * 28;
            e->m[i].pre_own.max_pixels = MM_MIN(e->m[i].pre_own.max_pixels, cap);
            e->m[i].pre_own.min_pixels = MM_MIN(e->m[i].pre_own.min_pixels, e->m[i].pre_own.max_pixels);
            e->m[i].pre = &e->m[i].pre_own;
        }
        e->n = i + 1;
    }
    *out = e;
    return MM_OK;
}

void mm_embed_free(mm_embed_t *e)
{
    if (!e) return;
    for (int i = 0; i < e->n; i++) free_entry(&e->m[i]);
    free(e->ids);
    free(e->idp);
    free(e->lens);
    free(e->mlens);
    free(e->vecs);
    free(e->pix);
    free(e->tmp);
    free(e->miss);
    free(e);
}

void mm_embed_set_cache(mm_embed_t *e, struct mm_cache *c, int generation)
{
    e->cache = c;
    e->generation = generation;
}

int mm_embed_max_dim(const mm_embed_t *e)
{
    int d = 1;
    for (int i = 0; e && i < e->n; i++) d = MM_MAX(d, e->m[i].info->dim);
    return d;
}

void mm_embed_cache_metrics(const mm_embed_t *e, mm_buf_t *b)
{
    mm_cache_stats_t s;
    mm_cache_stats(e ? e->cache : NULL, &s);
    mm_buf_printf(b, "# HELP mmembed_cache_hits_total Embedding cache hits (all workers).\n"
                     "# TYPE mmembed_cache_hits_total counter\nmmembed_cache_hits_total %llu\n"
                     "# HELP mmembed_cache_misses_total Embedding cache misses.\n"
                     "# TYPE mmembed_cache_misses_total counter\nmmembed_cache_misses_total %llu\n"
                     "# HELP mmembed_cache_inserts_total Vectors stored in the cache.\n"
                     "# TYPE mmembed_cache_inserts_total counter\nmmembed_cache_inserts_total %llu\n"
                     "# HELP mmembed_cache_evictions_total Entries evicted to make room.\n"
                     "# TYPE mmembed_cache_evictions_total counter\nmmembed_cache_evictions_total %llu\n"
                     "# HELP mmembed_cache_entries Valid entries / capacity.\n# TYPE mmembed_cache_entries gauge\n"
                     "mmembed_cache_entries{kind=\"used\"} %llu\nmmembed_cache_entries{kind=\"capacity\"} %llu\n",
                  (unsigned long long)s.hits, (unsigned long long)s.misses, (unsigned long long)s.inserts,
                  (unsigned long long)s.evictions, (unsigned long long)s.used, (unsigned long long)s.slots);
}

int mm_embed_init_child(mm_embed_t *e, int threads, char *err, size_t errlen)
{
    /* The document renderer broker first: it must be forked while this
     * process has one thread and before the sandbox (see document.h). A
     * worker without one still serves everything but /embed/document. */
    e->doc.fd = -1;
    if (e->conf) {
        char derr[MM_ERRLEN];
        if (mm_doc_renderer_start(&e->doc, NULL, derr, sizeof derr) != MM_OK)
            mm_log_warn("documents: %s; /embed/document answers 503", derr);
    }
    e->max_items = e->conf ? e->conf->max_items : 64;
    e->max_tokens = e->max_dim = e->max_pix = 1;
    for (int i = 0; i < e->n; i++) {
        const mm_enc_info_t *in = e->m[i].info;
        e->max_tokens = MM_MAX(e->max_tokens, in->max_tokens);
        e->max_dim = MM_MAX(e->max_dim, in->dim);
        e->max_pix = MM_MAX(e->max_pix, in->channels * in->image_size * in->image_size);
        e->m[i].run = e->m[i].remote ? mm_encoder_runner_remote(e->m[i].enc, e->m[i].remote, e->m[i].remote_ctx)
                                     : mm_encoder_runner_new(e->m[i].enc, TEXT_CHUNK, IMG_CHUNK, threads);
        if (!e->m[i].run)
            return mm_errf(err, errlen, MM_E_NOMEM, "model '%s': no memory for run state", e->m[i].name);
    }
    e->ids = malloc(sizeof(int32_t) * TEXT_CHUNK * (size_t)e->max_tokens);
    e->idp = malloc(sizeof(int32_t *) * TEXT_CHUNK);
    e->lens = malloc(sizeof(int) * (size_t)e->max_items);
    e->mlens = malloc(sizeof(int) * TEXT_CHUNK);
    e->max_vecs = MM_MAX(e->max_items, e->conf ? e->conf->max_frames : 0) + 2;
    e->vecs = malloc(sizeof(float) * (size_t)e->max_vecs * e->max_dim);
    e->pix = malloc(sizeof(float) * IMG_CHUNK * (size_t)e->max_pix);
    e->tmp = malloc(sizeof(float) * MM_MAX(TEXT_CHUNK, IMG_CHUNK) * (size_t)e->max_dim);
    e->miss = malloc(sizeof(int) * e->max_vecs);
    if (!e->ids || !e->idp || !e->lens || !e->mlens || !e->vecs || !e->pix || !e->tmp || !e->miss)
        return mm_errf(err, errlen, MM_E_NOMEM, "no memory for worker scratch");
    return MM_OK;
}

int mm_embed_n_models(const mm_embed_t *e)
{
    return e ? e->n : 0;
}

const char *mm_embed_model_name(const mm_embed_t *e, int i)
{
    return e->m[i].name;
}

struct mm_encoder *mm_embed_model_encoder(const mm_embed_t *e, int i)
{
    return e->m[i].enc;
}

size_t mm_embed_model_max_input_bytes(const mm_embed_t *e, int i)
{
    const entry_t *m = &e->m[i];
    size_t px = 0;
    if (m->info->has_vision && m->pre)   /* one image at the most pixels the preprocessor makes */
        px = (size_t)(m->pre->dynamic ? (size_t)m->pre->max_pixels : (size_t)m->info->image_size * m->info->image_size);
    /* a chat prompt's ids beside its image, each segment 64-aligned */
    return px * (size_t)MM_MAX(m->info->channels, 1) * sizeof(float) + (size_t)m->info->max_tokens * sizeof(int32_t) +
           4 * 64;
}

void mm_embed_set_remote(mm_embed_t *e, int i, mm_enc_remote_fn fn, void *ctx)
{
    e->m[i].remote = fn;
    e->m[i].remote_ctx = ctx;
}

size_t mm_embed_weight_bytes(const mm_embed_t *e)
{
    size_t n = 0;
    for (int i = 0; e && i < e->n; i++) {
        n += e->m[i].info->weight_bytes;
    }
    return n;
}

void mm_embed_models_json(const mm_embed_t *e, mm_buf_t *b)
{
    mm_buf_puts(b, "[");
    for (int i = 0; e && i < e->n; i++) {
        const entry_t *m = &e->m[i];
        mm_buf_printf(b, "%s{\"name\":", i ? "," : "");
        mm_buf_json_str(b, m->name, strlen(m->name));
        mm_buf_printf(b, ",\"arch\":\"%s\",\"dims\":%d,\"modalities\":[%s%s%s],\"dtype\":\"%s\","
                         "\"dtype_requested\":\"%s\",\"dtype_reason\":",
                      m->info->arch, m->info->dim, m->info->has_text ? "\"text\"" : "",
                      m->info->has_text && m->info->has_vision ? "," : "",
                      m->info->has_vision ? "\"image\",\"video\"" : "", m->info->compute, m->dtype_want);
        const char *why = mm_encoder_dtype_reason(m->enc);
        const int synthetic = mm_encoder_synthetic(m->enc);
        mm_buf_json_str(b, why, strlen(why));
        mm_buf_printf(b, ",\"device\":\"%s\"", m->cm ? m->cm->device : "cpu");
        mm_buf_printf(b, ",\"cpu\":\"%s\",\"load_ms\":%.0f,\"pack_cache\":\"%s\","
                         "\"source_dtype\":\"%s\",\"max_tokens\":%d,\"image_size\":%d,\"default\":%s,"
                         "\"weight_bytes\":%zu,\"synthetic\":%s",
                      mm_nn_cpu()->isa, mm_encoder_load_ms(m->enc), pack_cache_word(m->info->pack_cache), m->info->dtype,
                      m->info->max_tokens,
                      m->info->image_size, m->is_default ? "true" : "false",
                      m->info->weight_bytes, synthetic ? "true" : "false");
        if (m->info->image_dynamic && m->pre)   /* Qwen2-VL: images at their own size, text and images in one sequence */
            mm_buf_printf(b, ",\"image_dynamic\":true,\"max_image_tokens\":%ld,\"fusion\":\"sequence\"",
                          m->pre->max_pixels / (28 * 28));
        if (synthetic)
            mm_buf_puts(b, ",\"note\":\"synthetic random weights for trying the server: vectors are NOT semantic; "
                           "point models.path at a real CLIP folder\"");
        mm_buf_puts(b, "}");
    }
    mm_buf_puts(b, "]");
}

entry_t *emb_find_model(mm_embed_t *e, const char *name, int need_text, int need_vision, int want);

static void model_openai(mm_buf_t *b, const entry_t *m, const char *id)
{
    mm_buf_puts(b, "{\"id\":");
    mm_buf_json_str(b, id, strlen(id));
    mm_buf_puts(b, ",\"object\":\"model\",\"created\":0,\"owned_by\":\"mmembed\",\"root\":");
    mm_buf_json_str(b, m->name, strlen(m->name));
    mm_buf_printf(b, ",\"dims\":%d}", m->info->dim);
}

/* Every name a client may send, aliases included, each as its own model
 * object whose "root" is the served model. */
void mm_embed_models_openai(const mm_embed_t *e, mm_buf_t *b)
{
    mm_buf_puts(b, "{\"object\":\"list\",\"data\":[");
    int first = 1;
    for (int i = 0; e && i < e->n; i++) {
        const entry_t *m = &e->m[i];
        for (int a = -1; a < (m->cm ? m->cm->n_aliases : 0); a++) {
            if (!first) mm_buf_puts(b, ",");
            model_openai(b, m, a < 0 ? m->name : m->cm->aliases[a]);
            first = 0;
        }
    }
    mm_buf_puts(b, "]}\n");
}

int mm_embed_model_openai(mm_embed_t *e, const char *id, mm_buf_t *b)
{
    const entry_t *m = id[0] ? emb_find_model(e, id, 0, 0, 0) : NULL;
    if (!m) return MM_E_NOTFOUND;
    model_openai(b, m, id);
    mm_buf_puts(b, "\n");
    return MM_OK;
}

void mm_embed_model_names(const mm_embed_t *e, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; e && i < e->n && o + 1 < cap; i++) {
        const entry_t *m = &e->m[i];
        for (int a = -1; a < (m->cm ? m->cm->n_aliases : 0) && o + 1 < cap; a++) {
            int k = snprintf(out + o, cap - o, "%s%s", o ? ", " : "", a < 0 ? m->name : m->cm->aliases[a]);
            if (k < 0) break;
            o += (size_t)k;
        }
    }
    if (o >= cap) out[cap - 1] = '\0';
}

/* ---------------------------------------------------------------- core operations */

/* Requests that name no model get the model configured as default_for
 * their modality, else the default model if it has the modalities they
 * need, else the first model that has them. */
entry_t *emb_find_model(mm_embed_t *e, const char *name, int need_text, int need_vision, int want)
{
    if (!name || !name[0]) {
        for (int i = 0; want && i < e->n; i++)
            if (e->m[i].default_for & want) return &e->m[i];
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < e->n; i++) {
                const mm_enc_info_t *in = e->m[i].info;
                if ((pass == 0 && !e->m[i].is_default) || (need_text && !in->has_text) ||
                    (need_vision && !in->has_vision))
                    continue;
                return &e->m[i];
            }
        for (int i = 0; i < e->n; i++)
            if (e->m[i].is_default) return &e->m[i];
        return e->n ? &e->m[0] : NULL;
    }
    for (int i = 0; i < e->n; i++)
        if (strcmp(e->m[i].name, name) == 0) return &e->m[i];
    for (int i = 0; i < e->n; i++)
        for (int a = 0; e->m[i].cm && a < e->m[i].cm->n_aliases; a++)
            if (strcmp(e->m[i].cm->aliases[a], name) == 0) return &e->m[i];
    return NULL;
}

entry_t *emb_pick_model_for(mm_embed_t *e, const char *name, int need_text, int need_vision, int want, fail_t *f)
{
    entry_t *m = emb_find_model(e, name, need_text, need_vision, want);
    if (!m) {
        char names[256];
        mm_embed_model_names(e, names, sizeof names);
        emb_failf(f, 404, "model_not_found", "model '%.100s' is not served here; available: %s", name ? name : "", names);
    }
    return m;
}

/* ---------------------------------------------------------------- dispatch */

void mm_embed_handle(mm_embed_t *e, mm_http_req_t *r, mm_embed_route_fn *fn)
{
    if (e->n == 0 || !fn) {
        mm_http_drain(r, e->conf->max_body_bytes);
        if (e->n == 0) mm_http_error(r, 404, "model_not_found", "no embedding model is configured on this server");
        else mm_http_error(r, 404, "not_found", "no handler for %s", r->path);
        return;
    }
    fn(e, r);
}

/* ---------------------------------------------------------------- CLI helpers */

/* A one-model registry for the command line, as a worker would hold it. */
static int cli_open(const char *dir, int items, mm_embed_t **out, char *err, size_t errlen)
{
    static mm_conf_t conf;
    mm_conf_defaults(&conf);
    conf.max_items = MM_MAX(items, 1);
    mm_embed_t *e = calloc(1, sizeof *e);
    *out = e;
    if (!e) return MM_E_NOMEM;
    e->conf = &conf;
    const char *slash = strrchr(dir, '/');
    const char *name = slash && slash[1] ? slash + 1 : dir;
    const char *dt = getenv("MMEMBED_DTYPE"); /* the CLI's dtype (f32, bf16, q8, q4, auto) */
    static mm_enc_plan_t plan;
    char sub[MM_ERRLEN];
    plan = (mm_enc_plan_t){.dir = dir, .want = dt && *dt ? dt : "f32"};
    int rc = !strcmp(plan.want, "auto") ? mm_encoder_pack_bytes(dir, plan.bytes, sub, sizeof sub) : MM_OK;
    if (!rc) rc = mm_encoder_plan(&plan, 1, conf.memory_share, mm_encoder_mem_available(), sub, sizeof sub);
    rc = rc ? mm_errf(err, errlen, rc, "%s", sub) : load_entry(&e->m[0], name, &plan, err, errlen);
    if (rc == MM_OK) {
        e->n = 1;
        rc = mm_embed_init_child(e, 1, err, errlen);
    }
    return rc;
}

int mm_embed_tokenize_cli(const char *dir, const char *text, mm_buf_t *out, char *err, size_t errlen)
{
    mm_embed_t *e;
    int rc = cli_open(dir, 1, &e, err, errlen);
    if (rc == MM_OK && !e->m[0].info->has_text)
        rc = mm_errf(err, errlen, MM_E_INVALID, "model '%s' has no text tower", e->m[0].name);
    if (rc == MM_OK) {
        fail_t f = {0};
        int n = 0;
        int32_t *ids = e->ids;
        if (emb_tokenize_one(e, &e->m[0], text, strlen(text), ids, &n, 0, &emb_default_text_opts, &f)) {
            rc = mm_errf(err, errlen, MM_E_INVALID, "%s", f.msg);
        } else {   /* exactly the ids the server feeds the model (truncation and end token included) */
            mm_buf_puts(out, "{\"ids\":[");
            for (int i = 0; i < n; i++) mm_buf_printf(out, "%s%d", i ? "," : "", ids[i]);
            mm_buf_printf(out, "],\"tokens\":%d}\n", n);
        }
    }
    mm_embed_free(e);
    return rc;
}

int mm_embed_cli(const char *dir, const char *const *texts, int nt, const char *const *images, int ni,
                 int normalize, mm_buf_t *out, char *err, size_t errlen)
{
    mm_embed_t *e;
    int rc = cli_open(dir, nt + ni, &e, err, errlen);
    if (!e) return MM_E_NOMEM;
    unsigned char **bufs = calloc((size_t)ni + 1, sizeof *bufs);
    size_t *blen = calloc((size_t)ni + 1, sizeof *blen);
    size_t *tlen = calloc((size_t)nt + 1, sizeof *tlen);
    fail_t f = {0};
    entry_t *m = &e->m[0];
    for (int i = 0; rc == MM_OK && i < ni; i++) {
        FILE *fp = fopen(images[i], "rb");
        if (!fp) {
            rc = mm_errf(err, errlen, MM_E_NOTFOUND, "cannot open %s", images[i]);
            break;
        }
        mm_buf_t b;
        mm_buf_init(&b);
        char tmp[65536];
        size_t k;
        while ((k = fread(tmp, 1, sizeof tmp, fp)) > 0) mm_buf_append(&b, tmp, k);
        fclose(fp);
        bufs[i] = (unsigned char *)b.data;
        blen[i] = b.len;
    }
    for (int i = 0; i < nt; i++) tlen[i] = strlen(texts[i]);
    long tokens = 0;
    int hits = 0;
    if (rc == MM_OK && nt && emb_encode_texts(e, m, texts, tlen, nt, e->vecs, &tokens, 0, &hits, &f))
        rc = mm_errf(err, errlen, MM_E_INVALID, "%s", f.msg);
    if (rc == MM_OK && ni &&
        emb_encode_images(e, m, (const unsigned char *const *)bufs, blen, ni, e->vecs + (size_t)nt * m->info->dim, 0, &hits,
                      &f))
        rc = mm_errf(err, errlen, MM_E_INVALID, "%s", f.msg);
    if (rc == MM_OK) {
        mm_buf_puts(out, "{\"model\":");
        mm_buf_json_str(out, m->name, strlen(m->name));
        mm_buf_puts(out, ",\"data\":[");
        for (int i = 0; i < nt + ni; i++) {
            float *v = e->vecs + (size_t)i * m->info->dim;
            if (normalize) mm_nn_l2_normalize(v, m->info->dim);
            mm_buf_printf(out, "%s{\"index\":%d,\"embedding\":", i ? "," : "", i);
            emb_write_vec(out, v, m->info->dim);
            mm_buf_puts(out, "}");
        }
        mm_buf_puts(out, "]}\n");
    }
    for (int i = 0; i < ni; i++) free(bufs[i]);
    free(bufs);
    free(blen);
    free(tlen);
    mm_embed_free(e);
    return rc;
}

