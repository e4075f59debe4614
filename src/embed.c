/* Embedding glue: the model registry (loaded once in the master before
 * fork), per-worker scratch, and the HTTP handlers of the embedding routes.
 * Request flow: body (JSON | multipart) -> inputs -> tokenize / decode +
 * preprocess -> model -> normalize -> JSON response. */
#include "mmembed/embed.h"

#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mmembed/base64.h"
#include "mmembed/cache.h"
#include "mmembed/conf.h"
#include "mmembed/encoder.h"
#include "mmembed/packcache.h"
#include "mmembed/http.h"
#include "mmembed/image.h"
#include "mmembed/log.h"
#include "mmembed/multipart.h"
#include "mmembed/nn.h"
#include "mmembed/preprocess.h"
#include "mmembed/scoreboard.h"
#include "mmembed/video.h"

#include <time.h>

#define IMG_CHUNK 8            /* images decoded and encoded per pass */
#define TEXT_CHUNK 64          /* texts tokenized and encoded per pass (a request may hold max_items) */
#define JSON_MAX_DEPTH 16
#define MAX_WEIGHT 1e6         /* multimodal text/image weights: a ratio, far from float overflow */

typedef struct {
    char name[64];
    char dir[MM_PATH_MAX];
    mm_encoder_t *enc;         /* the model: any architecture the registry knows */
    const mm_enc_info_t *info; /* = mm_encoder_info(enc) */
    const mm_preproc_t *pre;   /* its image preprocessor, NULL without vision */
    mm_enc_runner_t *run;      /* worker only */
    char dtype_want[8];        /* as configured: f32, bf16, q8, auto */
    int max_tokens;            /* truncation length: config max_tokens, else the model's */
    char instruction[512];     /* prefix for input_type "query" (config) */
    int is_default;
    int default_for;           /* MM_MOD_* bits from the config */
    const mm_conf_model_t *cm; /* its config entry (aliases); NULL for the CLI */
} entry_t;

struct mm_embed {
    const mm_conf_t *conf;
    int n;
    entry_t m[MM_MAX_MODELS];
    /* worker scratch, sized once for the largest model */
    int max_items;
    int max_tokens, max_dim, max_pix;
    int32_t *ids;              /* (TEXT_CHUNK, max_tokens) */
    const int32_t **idp;       /* (TEXT_CHUNK) */
    int *lens;                 /* (max_items): tokens per input */
    int *mlens;                /* (TEXT_CHUNK): tokens per cache miss, packed */
    int max_vecs;              /* max(max_items, max_frames) + 2 */
    float *vecs;               /* (max_vecs, max_dim) */
    float *pix;                /* (IMG_CHUNK, max_pix) */
    float *tmp;                /* (TEXT_CHUNK, max_dim): one chunk's cache misses' vectors */
    int *miss;                 /* (max_vecs) */
    mm_cache_t *cache;         /* shared by all workers; NULL = off */
    double t_decode, t_model;  /* ms spent by encode_images in this request (Server-Timing) */
    int generation;            /* config generation: part of every cache key */
};

/* ---------------------------------------------------------------- loading */

static const char *pack_cache_word(int v)
{
    return v == 1 ? "mapped" : v == 2 ? "stored" : v == -1 ? "unwritable" : "off";
}

static double ms_now(void)
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
    int rc = MM_OK;
    for (int i = 0; i < c->n_models && i < MM_MAX_PLAN && !rc; i++) {
        plan[i] = (mm_enc_plan_t){.dir = c->models[i].path, .want = c->models[i].dtype};
        if (!strcmp(plan[i].want, "auto") && (rc = mm_encoder_pack_bytes(plan[i].dir, plan[i].bytes, sub, sizeof sub)))
            rc = mm_errf(err, errlen, rc, "model '%s': %s", c->models[i].name, sub);
    }
    if (!rc && (rc = mm_encoder_plan(plan, c->n_models, c->memory_share, mm_encoder_mem_available(), sub, sizeof sub)))
        rc = mm_errf(err, errlen, rc, "%s", sub);
    if (rc) {
        mm_embed_free(e);
        return rc;
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

/* The cache key of one input: model, config generation, modality, and the
 * bytes the client sent (so a hit skips decoding and tokenizing's model
 * work). Vectors are cached raw, before normalize/dimensions, so those
 * options need not be part of the key. */
static void input_key(const mm_embed_t *e, const char *model, const char *modality, const void *p, size_t n,
                      mm_cache_key_t *k)
{
    mm_cache_key_init(k, e->cache);
    mm_cache_key_add_str(k, model);
    mm_cache_key_add_int(k, e->generation);
    mm_cache_key_add_str(k, modality);
    mm_cache_key_add_input(k, p, n);
}

int mm_embed_init_child(mm_embed_t *e, int threads, char *err, size_t errlen)
{
    e->max_items = e->conf ? e->conf->max_items : 64;
    e->max_tokens = e->max_dim = e->max_pix = 1;
    for (int i = 0; i < e->n; i++) {
        const mm_enc_info_t *in = e->m[i].info;
        e->max_tokens = MM_MAX(e->max_tokens, in->max_tokens);
        e->max_dim = MM_MAX(e->max_dim, in->dim);
        e->max_pix = MM_MAX(e->max_pix, in->channels * in->image_size * in->image_size);
        if (!(e->m[i].run = mm_encoder_runner_new(e->m[i].enc, TEXT_CHUNK, IMG_CHUNK, threads)))
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
        mm_buf_printf(b, ",\"cpu\":\"%s\",\"load_ms\":%.0f,\"pack_cache\":\"%s\","
                         "\"source_dtype\":\"%s\",\"max_tokens\":%d,\"image_size\":%d,\"default\":%s,"
                         "\"weight_bytes\":%zu,\"synthetic\":%s",
                      mm_nn_cpu()->isa, mm_encoder_load_ms(m->enc), pack_cache_word(m->info->pack_cache), m->info->dtype,
                      m->info->max_tokens,
                      m->info->image_size, m->is_default ? "true" : "false",
                      m->info->weight_bytes, synthetic ? "true" : "false");
        if (synthetic)
            mm_buf_puts(b, ",\"note\":\"synthetic random weights for trying the server: vectors are NOT semantic; "
                           "point models.path at a real CLIP folder\"");
        mm_buf_puts(b, "}");
    }
    mm_buf_puts(b, "]");
}

static entry_t *find_model(mm_embed_t *e, const char *name, int need_text, int need_vision, int want);

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
    const entry_t *m = id[0] ? find_model(e, id, 0, 0, 0) : NULL;
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
static entry_t *find_model(mm_embed_t *e, const char *name, int need_text, int need_vision, int want)
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

typedef struct {
    int status;
    char msg[MM_ERRLEN + 64];
    const char *code;
} fail_t;

static int failf(fail_t *f, int status, const char *code, const char *fmt, ...) MM_PRINTF(4, 5);
static int failf(fail_t *f, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof f->msg, fmt, ap);
    va_end(ap);
    f->status = status;
    f->code = code;
    return -1;
}

/* Per-request text options: truncate (else 422 when too long) and an
 * instruction prefix (input_type "query" or an explicit "instruction"). */
typedef struct {
    int truncate;
    const char *prefix;
    size_t prefix_len;
} text_opts_t;

static const text_opts_t default_text_opts = {1, "", 0};

/* Check what every text costs before any of them is tokenized: the
 * instruction counts against the limits like the text it is prepended to
 * (it reaches the tokenizer once per input), and the request as a whole may
 * not make the tokenizer read more than limits.max_request_text_bytes (a
 * small body with a long instruction and many inputs must not cost more
 * than that). Sizes are 64-bit with checked sums: request data never
 * drives an int offset. */
static int check_text_sizes(const mm_embed_t *e, const size_t *lens, int n, const text_opts_t *o, fail_t *f)
{
    const uint64_t max_text = (uint64_t)e->conf->max_text_bytes, max_total = (uint64_t)e->conf->max_request_text_bytes;
    if (o->prefix_len > max_text)
        return failf(f, 413, "instruction_too_long", "the instruction is %zu bytes; limits.max_text_bytes is %llu",
                     o->prefix_len, (unsigned long long)max_text);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        uint64_t one = (uint64_t)o->prefix_len + lens[i];   /* both <= SIZE_MAX / 2: no wrap */
        if (one > max_text)
            return failf(f, 413, "text_too_long", o->prefix_len ? "input %d is %llu bytes with its instruction; "
                                                                  "limits.max_text_bytes is %llu"
                                                                : "input %d is %llu bytes; limits.max_text_bytes is %llu",
                         i, (unsigned long long)one, (unsigned long long)max_text);
        total += one;
        if (total > max_total)
            return failf(f, 413, "request_too_large",
                         "the inputs%s come to more than limits.max_request_text_bytes (%llu bytes) of text",
                         o->prefix_len ? " with the instruction prepended to each" : "",
                         (unsigned long long)max_total);
    }
    return 0;
}

/* Tokenize text i of a chunk into ids (room for e->max_tokens). */
static int tokenize_one(mm_embed_t *e, entry_t *m, const char *t, size_t tl, int32_t *ids, int *len, int idx,
                        const text_opts_t *o, fail_t *f)
{
    (void)e;
    char err[MM_ERRLEN];
    int trc = mm_encoder_tokenize(m->enc, t, tl, m->max_tokens, o->truncate, ids, len, err, sizeof err);
    if (trc == MM_E_TOOBIG && !o->truncate)
        return failf(f, 422, "input_too_long", "input %d is longer than the %d tokens model '%s' takes (truncate is false)",
                     idx, m->max_tokens, m->name);
    if (trc) return failf(f, mm_status_http(trc), NULL, "input %d: %s", idx, err);
    return 0;
}

/* Tokenize and encode n texts (up to limits.max_items) into out (n, dim),
 * TEXT_CHUNK at a time, so the run state stays the size of one chunk
 * whatever n is. e->lens[i] receives each text's token count. */
static int encode_texts_opts(mm_embed_t *e, entry_t *m, const char *const *texts, const size_t *lens, int n,
                             float *out, long *tokens, int use_cache, int *hits, const text_opts_t *o, fail_t *f)
{
    if (!m->info->has_text) return failf(f, 422, "no_text_tower", "model '%s' cannot embed text", m->name);
    if (check_text_sizes(e, lens, n, o, f)) return -1;
    const int d = m->info->dim, chunk = MM_MIN(n, TEXT_CHUNK);
    int rc = 0;
    /* the texts the model sees: instruction + text, tokenized and cached as one string */
    const char **eff = calloc((size_t)MM_MAX(chunk, 1), sizeof *eff);
    size_t *efl = calloc((size_t)MM_MAX(chunk, 1), sizeof *efl);
    char *joined = NULL;
    size_t joined_cap = 0;
    if (!eff || !efl) {
        rc = failf(f, 500, NULL, "out of memory");
        goto out;
    }
    mm_cache_key_t k;
    for (int base = 0; base < n; base += TEXT_CHUNK) {
        const int cn = MM_MIN(TEXT_CHUNK, n - base);
        size_t need = 0, off = 0;
        for (int j = 0; j < cn; j++) need += o->prefix_len + lens[base + j];   /* bounded by check_text_sizes */
        if (o->prefix_len && need + 1 > joined_cap) {
            free(joined);
            joined_cap = need + 1;
            if (!(joined = malloc(joined_cap))) {
                rc = failf(f, 500, NULL, "out of memory");
                goto out;
            }
        }
        int nm = 0;
        for (int j = 0; j < cn; j++) {
            const int i = base + j;
            eff[j] = texts[i];
            efl[j] = lens[i];
            if (o->prefix_len) {
                memcpy(joined + off, o->prefix, o->prefix_len);
                memcpy(joined + off + o->prefix_len, texts[i], lens[i]);
                eff[j] = joined + off;
                efl[j] += o->prefix_len;
                off += efl[j];
            }
            int32_t *ids = e->ids + (size_t)j * e->max_tokens;
            if ((rc = tokenize_one(e, m, eff[j], efl[j], ids, &e->lens[i], i, o, f))) goto out;
            *tokens += e->lens[i];
            if (use_cache && e->cache) {
                input_key(e, m->name, "text", eff[j], efl[j], &k);
                if (mm_cache_get(e->cache, &k, out + (size_t)i * d, d) == 1) {
                    ++*hits;
                    continue;
                }
            }
            e->idp[nm] = ids;
            e->mlens[nm] = e->lens[i];
            e->miss[nm++] = j;
        }
        if (nm == 0) continue;
        int mrc = mm_encoder_encode_ids(m->run, e->idp, e->mlens, nm, e->tmp);
        if (mrc) {
            rc = failf(f, mm_status_http(mrc), NULL, "text encoder failed (%d)", mrc);
            goto out;
        }
        for (int q = 0; q < nm; q++) {
            const int j = e->miss[q], i = base + j;
            memcpy(out + (size_t)i * d, e->tmp + (size_t)q * d, sizeof(float) * (size_t)d);
            if (use_cache && e->cache) {
                input_key(e, m->name, "text", eff[j], efl[j], &k);
                mm_cache_put(e->cache, &k, out + (size_t)i * d, d);
            }
        }
    }
out:
    free(eff);
    free(efl);
    free(joined);
    return rc;
}

static int encode_texts(mm_embed_t *e, entry_t *m, const char *const *texts, const size_t *lens, int n,
                        float *out, long *tokens, int use_cache, int *hits, fail_t *f)
{
    return encode_texts_opts(e, m, texts, lens, n, out, tokens, use_cache, hits, &default_text_opts, f);
}

/* Decode, preprocess and encode n images (chunks of IMG_CHUNK) into out. */
static int encode_images(mm_embed_t *e, entry_t *m, const unsigned char *const *bufs, const size_t *lens, int n,
                         float *out, int use_cache, int *hits, fail_t *f)
{
    if (!m->info->has_vision) return failf(f, 422, "no_vision_tower", "model '%s' cannot embed images", m->name);
    size_t per = (size_t)m->info->channels * m->info->image_size * m->info->image_size;
    char err[MM_ERRLEN];
    int d = m->info->dim, nm = 0;
    mm_cache_key_t ck;
    for (int i = 0; i < n; i++) {
        if (use_cache && e->cache && lens[i]) {
            input_key(e, m->name, "image", bufs[i], lens[i], &ck);
            if (mm_cache_get(e->cache, &ck, out + (size_t)i * d, d) == 1) {
                ++*hits;
                continue;
            }
        }
        e->miss[nm++] = i;
    }
    for (int base = 0; base < nm; base += IMG_CHUNK) {
        int k = MM_MIN(IMG_CHUNK, nm - base);
        double t0 = ms_now();
        for (int j = 0; j < k; j++) {
            mm_image_t img;
            int i = e->miss[base + j];
            if (lens[i] == 0) return failf(f, 400, "empty_image", "image %d is empty", i);
            const int edge = mm_preproc_min_edge(m->pre), fast = e->conf->jpeg_dct_scaling;
            int rc = fast > 0 && edge > 0
                         ? mm_image_decode_keep(bufs[i], lens[i], fast * edge, (long)e->conf->max_pixels, &img, err,
                                                sizeof err)
                         : mm_image_decode(bufs[i], lens[i], edge, (long)e->conf->max_pixels, &img, err, sizeof err);
            if (rc == MM_E_TOOBIG)
                return failf(f, 413, "image_too_large", "image %d: %s (limits.max_pixels is %lld)", i, err,
                             (long long)e->conf->max_pixels);
            if (rc) return failf(f, mm_status_http(rc), rc == MM_E_UNSUPPORTED ? "unsupported_image"
                                                        : rc == MM_E_TIMEOUT   ? "image_budget_exceeded"
                                                                               : "invalid_image",
                                 "image %d: %s", i, err);
            rc = mm_preproc_run(m->pre, &img, e->pix + (size_t)j * per);
            mm_image_free(&img);
            if (rc) return failf(f, mm_status_http(rc), "invalid_image", "image %d: preprocessing failed", i);
        }
        double t1 = ms_now();
        int rc = mm_encoder_encode_pixels(m->run, e->pix, k, e->tmp);
        e->t_decode += t1 - t0;
        e->t_model += ms_now() - t1;
        if (rc) return failf(f, mm_status_http(rc), NULL, "image encoder failed (%d)", rc);
        for (int j = 0; j < k; j++) {
            int i = e->miss[base + j];
            memcpy(out + (size_t)i * d, e->tmp + (size_t)j * d, sizeof(float) * (size_t)d);
            if (use_cache && e->cache) {
                input_key(e, m->name, "image", bufs[i], lens[i], &ck);
                mm_cache_put(e->cache, &ck, out + (size_t)i * d, d);
            }
        }
    }
    return 0;
}

static void set_x_cache(mm_embed_t *e, mm_http_req_t *r, int use_cache, int hits, int n)
{
    if (use_cache && e->cache)
        snprintf(r->headers, sizeof r->headers, "X-Cache: %s\r\n", hits == n ? "hit" : "miss");
}

static void write_vec(mm_buf_t *b, const float *v, int d)
{
    mm_buf_reserve(b, (size_t)d * 14 + 2);
    mm_buf_puts(b, "[");
    for (int i = 0; i < d; i++) {
        if (i) mm_buf_append(b, ",", 1);
        mm_buf_float(b, v[i]);
    }
    mm_buf_puts(b, "]");
}

/* A vector fit to return: finite, and not all zero (it must normalize). */
static int vec_usable(const float *v, int d)
{
    double ss = 0;
    for (int i = 0; i < d; i++) {
        if (!isfinite(v[i])) return 0;
        ss += (double)v[i] * v[i];
    }
    return ss > 1e-30;
}

static void respond_fail(mm_http_req_t *r, const fail_t *f)
{
    mm_http_error(r, f->status ? f->status : 500, f->code, "%s", f->msg);
}

/* ---------------------------------------------------------------- request bodies */

static int is_json(const char *ct)
{
    return !ct[0] || strncasecmp(ct, "application/json", 16) == 0;
}

static int is_multipart(const char *ct)
{
    return strncasecmp(ct, "multipart/form-data", 19) == 0;
}

/* Parse a JSON object body. */
static json_object *read_json(mm_embed_t *e, mm_http_req_t *r, fail_t *f)
{
    char *body;
    size_t len;
    int rc = mm_http_read_body(r, e->conf->max_body_bytes, &body, &len);
    if (rc == MM_E_TOOBIG) {
        failf(f, 413, "payload_too_large", "request body is over limits.max_body_bytes (%lld)",
              (long long)e->conf->max_body_bytes);
        return NULL;
    }
    if (rc) {
        failf(f, 400, "bad_request", "could not read the request body");
        return NULL;
    }
    if (len == 0) {
        free(body);
        failf(f, 400, "empty_body", "the request body is empty; send a JSON object");
        return NULL;
    }
    json_tokener *tok = json_tokener_new_ex(JSON_MAX_DEPTH);
    json_object *j = tok ? json_tokener_parse_ex(tok, body, (int)len) : NULL;
    enum json_tokener_error jerr = tok ? json_tokener_get_error(tok) : json_tokener_error_size;
    size_t used = tok ? json_tokener_get_parse_end(tok) : 0;
    if (tok) json_tokener_free(tok);
    if (j && jerr == json_tokener_success)
        while (used < len && (body[used] == ' ' || body[used] == '\n' || body[used] == '\r' || body[used] == '\t'))
            used++;
    free(body);
    if (!j || jerr != json_tokener_success || used < len) {
        json_object_put(j);
        if (j && jerr == json_tokener_success)
            failf(f, 400, "invalid_json", "request body has trailing data after the JSON value (at byte %zu)", used);
        else
            failf(f, 400, "invalid_json", "request body is not valid JSON: %s (at byte %zu)",
                  json_tokener_error_desc(jerr == json_tokener_continue ? json_tokener_error_parse_eof : jerr), used);
        return NULL;
    }
    if (!json_object_is_type(j, json_type_object)) {
        json_object_put(j);
        failf(f, 400, "invalid_json", "request body must be a JSON object");
        return NULL;
    }
    return j;
}

/* A multipart form collected in memory: small fields and file parts. */
typedef struct {
    char name[MM_MULTIPART_FIELD_MAX];
    char filename[MM_MULTIPART_FIELD_MAX];
    char ctype[MM_MULTIPART_FIELD_MAX];
    int is_file;
    mm_buf_t data;
} part_t;

typedef struct {
    part_t *parts;
    int n, cap;
    int64_t total, max_total;
} form_t;

static int on_begin(mm_multipart_t *p, const mm_multipart_part_t *part)
{
    form_t *fm = p->user;
    if (fm->n == fm->cap) return mm_multipart_fail(p, MM_E_TOOBIG, "too many parts");
    part_t *x = &fm->parts[fm->n++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", part->name);
    snprintf(x->filename, sizeof x->filename, "%s", part->filename);
    snprintf(x->ctype, sizeof x->ctype, "%s", part->content_type);
    x->is_file = part->has_filename || strncasecmp(part->content_type, "text/plain", 10) != 0;
    return 0;
}

static int on_data(mm_multipart_t *p, const char *d, size_t n)
{
    form_t *fm = p->user;
    fm->total += (int64_t)n;
    if (fm->total > fm->max_total)
        return mm_multipart_fail(p, MM_E_TOOBIG, "form data is over limits.max_body_bytes");
    part_t *x = &fm->parts[fm->n - 1];
    mm_buf_append(&x->data, d, n);
    return x->data.oom ? mm_multipart_fail(p, MM_E_NOMEM, "out of memory") : 0;
}

static void form_free(form_t *fm)
{
    for (int i = 0; i < fm->n; i++) mm_buf_free(&fm->parts[i].data);
    free(fm->parts);
    memset(fm, 0, sizeof *fm);
}

static int read_form(mm_embed_t *e, mm_http_req_t *r, form_t *fm, fail_t *f)
{
    char boundary[MM_MULTIPART_BOUNDARY_MAX + 1], err[MM_ERRLEN];
    memset(fm, 0, sizeof *fm);
    int rc = mm_multipart_boundary(r->content_type, boundary, sizeof boundary, err, sizeof err);
    if (rc) {
        mm_http_drain(r, e->conf->max_body_bytes);
        return failf(f, mm_status_http(rc), NULL, "%s", err);
    }
    fm->cap = e->conf->max_parts;
    fm->parts = calloc((size_t)fm->cap, sizeof *fm->parts);
    fm->max_total = e->conf->max_body_bytes;
    if (!fm->parts) return failf(f, 500, NULL, "out of memory");
    mm_multipart_t *mp = malloc(sizeof *mp);
    char *chunk = malloc(65536);
    if (!mp || !chunk) {
        free(mp);
        free(chunk);
        return failf(f, 500, NULL, "out of memory");
    }
    mm_multipart_opts_t opts = {.max_parts = (size_t)e->conf->max_parts, .max_header_bytes = 8192,
                                .max_part_bytes = (uint64_t)e->conf->max_body_bytes};
    mm_multipart_callbacks_t cb = {.on_part_begin = on_begin, .on_data = on_data};
    mm_multipart_init(mp, boundary, &opts, &cb, fm);
    long got;
    rc = 0;
    while ((got = mm_http_read(r, chunk, 65536)) > 0)
        if ((rc = mm_multipart_feed(mp, chunk, (size_t)got)) != 0) break;
    if (rc == 0) rc = mm_multipart_finish(mp);
    if (rc) {
        failf(f, mm_status_http(rc), rc == MM_E_TOOBIG ? "payload_too_large" : "invalid_multipart", "multipart: %s",
              mm_multipart_error(mp));
        mm_http_drain(r, e->conf->max_body_bytes);
    }
    free(mp);
    free(chunk);
    return rc ? -1 : 0;
}

static const part_t *form_field(const form_t *fm, const char *name)
{
    for (int i = 0; i < fm->n; i++)
        if (!fm->parts[i].is_file && strcmp(fm->parts[i].name, name) == 0) return &fm->parts[i];
    return NULL;
}

/* "true"/"false"/"1"/"0" form values and JSON booleans. */
static int parse_bool(const char *s, int *out)
{
    if (!strcasecmp(s, "true") || !strcmp(s, "1") || !strcasecmp(s, "on") || !strcasecmp(s, "yes")) *out = 1;
    else if (!strcasecmp(s, "false") || !strcmp(s, "0") || !strcasecmp(s, "off") || !strcasecmp(s, "no")) *out = 0;
    else return -1;
    return 0;
}

static int jbool(json_object *j, const char *key, int *out, fail_t *f)
{
    json_object *v;
    if (!json_object_object_get_ex(j, key, &v) || json_object_is_type(v, json_type_null)) return 0;
    if (!json_object_is_type(v, json_type_boolean)) return failf(f, 400, "invalid_parameter", "'%s' must be a boolean", key);
    *out = json_object_get_boolean(v);
    return 0;
}

static int jstr(json_object *j, const char *key, const char **out, fail_t *f)
{
    json_object *v;
    *out = NULL;
    if (!json_object_object_get_ex(j, key, &v) || json_object_is_type(v, json_type_null)) return 0;
    if (!json_object_is_type(v, json_type_string)) return failf(f, 400, "invalid_parameter", "'%s' must be a string", key);
    *out = json_object_get_string(v);
    return 0;
}

static entry_t *pick_model_for(mm_embed_t *e, const char *name, int need_text, int need_vision, int want, fail_t *f)
{
    entry_t *m = find_model(e, name, need_text, need_vision, want);
    if (!m) {
        char names[256];
        mm_embed_model_names(e, names, sizeof names);
        failf(f, 404, "model_not_found", "model '%.100s' is not served here; available: %s", name ? name : "", names);
    }
    return m;
}

/* Decode a base64 string or data: URI into a malloc'd buffer. */
static int decode_b64_image(const char *s, size_t len, unsigned char **out, size_t *olen, int idx, fail_t *f)
{
    if (len > 5 && strncmp(s, "data:", 5) == 0) {
        const char *comma = memchr(s, ',', len);
        if (!comma || !memmem(s, (size_t)(comma - s), ";base64", 7))
            return failf(f, 400, "invalid_image", "images[%d]: a data: URI must be base64 encoded", idx);
        len -= (size_t)(comma + 1 - s);
        s = comma + 1;
    } else if (len > 8 && (strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0)) {
        return failf(f, 400, "remote_images_disabled",
                     "images[%d]: image URLs are not fetched; send the bytes inline (base64 or multipart)", idx);
    }
    unsigned char *b = malloc(len / 4 * 3 + 4);
    if (!b) return failf(f, 500, NULL, "out of memory");
    long n = mm_base64_decode(s, len, b);
    if (n < 0) {
        free(b);
        return failf(f, 400, "invalid_base64", "images[%d] is not valid base64", idx);
    }
    *out = b;
    *olen = (size_t)n;
    return 0;
}

/* ---------------------------------------------------------------- responses */

static void begin_data(mm_buf_t *b, const entry_t *m, int dim)
{
    mm_buf_puts(b, "{\"model\":");
    mm_buf_json_str(b, m->name, strlen(m->name));
    mm_buf_printf(b, ",\"dim\":%d,\"data\":[", dim);
}

/* Options every text route takes: dimensions (Matryoshka truncation, then
 * renormalize), normalize, truncate, input_type ("query" applies the model's
 * instruction) or an explicit instruction. */
static int text_options(json_object *j, const entry_t *m, int *dims, int *normalize, text_opts_t *o, fail_t *f)
{
    json_object *v;
    *dims = m->info->dim;
    *o = default_text_opts;
    if (json_object_object_get_ex(j, "dimensions", &v) && !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 1 ||
            json_object_get_int64(v) > m->info->dim)
            return failf(f, 400, "invalid_dimensions", "dimensions must be an integer from 1 to %d for model '%s'",
                         m->info->dim, m->name);
        *dims = (int)json_object_get_int64(v);
    }
    const char *type = NULL, *instr = NULL;
    if (jbool(j, "normalize", normalize, f) || jbool(j, "truncate", &o->truncate, f) ||
        jstr(j, "input_type", &type, f) || jstr(j, "instruction", &instr, f))
        return -1;
    if (type && strcmp(type, "query") && strcmp(type, "document") && strcmp(type, "passage"))
        return failf(f, 400, "invalid_parameter", "input_type must be query, document or passage");
    if (instr) o->prefix = instr;
    else if (type && !strcmp(type, "query")) o->prefix = m->instruction;
    o->prefix_len = strlen(o->prefix);
    return 0;
}

/* ---------------------------------------------------------------- /v1/embeddings */

static void h_openai(mm_embed_t *e, mm_http_req_t *r)
{
    fail_t f = {0};
    if (!is_json(r->content_type)) {
        mm_http_drain(r, e->conf->max_body_bytes);
        mm_http_error(r, 415, "unsupported_media_type", "send application/json");
        return;
    }
    json_object *j = read_json(e, r, &f), *input;
    const char **texts = NULL;
    size_t *lens = NULL;
    entry_t *m = NULL;
    if (!j) goto fail;
    const char *model = NULL, *fmt = NULL;
    int use_cache = 1, hits = 0;
    if (jstr(j, "model", &model, &f) || jstr(j, "encoding_format", &fmt, &f) || jbool(j, "cache", &use_cache, &f))
        goto fail;
    int b64 = 0;
    if (fmt && strcmp(fmt, "base64") == 0) b64 = 1;
    else if (fmt && strcmp(fmt, "float") != 0) {
        failf(&f, 400, "invalid_parameter", "encoding_format must be 'float' or 'base64'");
        goto fail;
    }
    if (!(m = pick_model_for(e, model, 1, 0, MM_MOD_TEXT, &f))) goto fail;
    if (!m->info->has_text) {
        failf(&f, 422, "no_text_tower", "model '%s' cannot embed text", m->name);
        goto fail;
    }
    int dims, normalize = 1;
    text_opts_t topt;
    if (text_options(j, m, &dims, &normalize, &topt, &f)) goto fail;
    if (!json_object_object_get_ex(j, "input", &input)) {
        failf(&f, 400, "missing_input", "'input' is required");
        goto fail;
    }
    /* normalize the four input shapes into either texts or id sequences */
    int n = 0, ids_mode = 0;
    long tokens = 0;
    if (json_object_is_type(input, json_type_string)) {
        n = 1;
    } else if (json_object_is_type(input, json_type_array)) {
        n = (int)json_object_array_length(input);
        if (n == 0) {
            failf(&f, 400, "empty_input", "'input' must not be an empty array");
            goto fail;
        }
        json_object *first = json_object_array_get_idx(input, 0);
        if (json_object_is_type(first, json_type_int)) ids_mode = 1, n = 1;       /* int[] */
        else if (json_object_is_type(first, json_type_array)) ids_mode = 2;       /* int[][] */
    } else {
        failf(&f, 400, "invalid_input", "'input' must be a string, an array of strings, or token arrays");
        goto fail;
    }
    if (n > e->max_items) {
        failf(&f, 413, "too_many_inputs", "%d inputs; limits.max_items is %d", n, e->max_items);
        goto fail;
    }
    if (ids_mode && !m->info->takes_ids) {
        failf(&f, 400, "invalid_input",
              "model '%s' (%s) does not take token ids; send strings (token ids go to CLIP, BERT-style and "
              "Qwen3 models)", m->name, m->info->arch);
        goto fail;
    }
    if (ids_mode) {
        /* validate every sequence first, then encode TEXT_CHUNK at a time */
        for (int i = 0; i < n; i++) {
            json_object *seq = ids_mode == 1 ? input : json_object_array_get_idx(input, i);
            if (!json_object_is_type(seq, json_type_array)) {
                failf(&f, 400, "invalid_input", "input[%d] must be an array of token ids", i);
                goto fail;
            }
            size_t len = json_object_array_length(seq);
            if (len == 0 || len > (size_t)m->max_tokens) {
                failf(&f, 400, "invalid_input", "input[%d] has %zu tokens; model '%s' takes 1 to %d", i, len, m->name,
                      m->max_tokens);
                goto fail;
            }
            for (size_t k = 0; k < len; k++) {
                json_object *t = json_object_array_get_idx(seq, k);
                int64_t id = json_object_is_type(t, json_type_int) ? json_object_get_int64(t) : -1;
                if (id < 0 || id >= m->info->vocab_size) {
                    failf(&f, 400, "invalid_input", "input[%d][%zu] is not a token id of model '%s' (0..%d)", i, k,
                          m->name, m->info->vocab_size - 1);
                    goto fail;
                }
            }
            e->lens[i] = (int)len;
            tokens += (long)len;
        }
        for (int base = 0; base < n; base += TEXT_CHUNK) {
            const int cn = MM_MIN(TEXT_CHUNK, n - base);
            for (int j = 0; j < cn; j++) {
                json_object *seq = ids_mode == 1 ? input : json_object_array_get_idx(input, base + j);
                int32_t *ids = e->ids + (size_t)j * e->max_tokens;
                for (int k = 0; k < e->lens[base + j]; k++)
                    ids[k] = (int32_t)json_object_get_int64(json_object_array_get_idx(seq, (size_t)k));
                e->idp[j] = ids;
                e->mlens[j] = e->lens[base + j];
            }
            float *dst = e->vecs + (size_t)base * m->info->dim;
            int rc = mm_encoder_encode_ids(m->run, e->idp, e->mlens, cn, dst);
            if (rc) {
                failf(&f, mm_status_http(rc), NULL, "text encoder failed (%d)", rc);
                goto fail;
            }
        }
    } else {
        texts = calloc((size_t)n, sizeof *texts);
        lens = calloc((size_t)n, sizeof *lens);
        if (!texts || !lens) {
            failf(&f, 500, NULL, "out of memory");
            goto fail;
        }
        for (int i = 0; i < n; i++) {
            json_object *t = json_object_is_type(input, json_type_string) ? input : json_object_array_get_idx(input, i);
            if (!json_object_is_type(t, json_type_string)) {
                failf(&f, 400, "invalid_input", "input[%d] must be a string", i);
                goto fail;
            }
            texts[i] = json_object_get_string(t);
            lens[i] = (size_t)json_object_get_string_len(t);
            if (lens[i] == 0) {
                failf(&f, 400, "empty_input", "input[%d] is an empty string", i);
                goto fail;
            }
        }
        if (encode_texts_opts(e, m, texts, lens, n, e->vecs, &tokens, use_cache, &hits, &topt, &f)) goto fail;
        set_x_cache(e, r, use_cache, hits, n);
    }
    mm_buf_t *b = &r->out;
    mm_buf_puts(b, "{\"object\":\"list\",\"data\":[");
    for (int i = 0; i < n; i++) {
        float *vec = e->vecs + (size_t)i * m->info->dim;
        if (normalize) mm_nn_l2_normalize(vec, dims);   /* truncation (dimensions) then unit length */
        mm_buf_printf(b, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":", i ? "," : "", i);
        if (b64) {
            mm_buf_puts(b, "\"");
            mm_base64_encode(b, vec, sizeof(float) * (size_t)dims);   /* x86-64: little-endian already */
            mm_buf_puts(b, "\"");
        } else {
            write_vec(b, vec, dims);
        }
        mm_buf_puts(b, "}");
    }
    mm_buf_puts(b, "],\"model\":");
    mm_buf_json_str(b, m->name, strlen(m->name));
    mm_buf_printf(b, ",\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}\n", tokens, tokens);
    mm_http_respond_json(r, 200);
    json_object_put(j);
    free(texts);
    free(lens);
    return;
fail:
    json_object_put(j);
    free(texts);
    free(lens);
    respond_fail(r, &f);
}

/* ---------------------------------------------------------------- /embed/text */

static void h_text(mm_embed_t *e, mm_http_req_t *r)
{
    fail_t f = {0};
    if (!is_json(r->content_type)) {
        mm_http_drain(r, e->conf->max_body_bytes);
        mm_http_error(r, 415, "unsupported_media_type", "send application/json: {\"texts\": [...]}");
        return;
    }
    const char **texts = NULL;
    size_t *lens = NULL;
    json_object *j = read_json(e, r, &f), *arr;
    if (!j) goto fail;
    const char *model = NULL;
    int normalize = 1, use_cache = 1, hits = 0, dims;
    text_opts_t topt;
    if (jstr(j, "model", &model, &f) || jbool(j, "cache", &use_cache, &f)) goto fail;
    entry_t *m = pick_model_for(e, model, 1, 0, MM_MOD_TEXT, &f);
    if (!m || text_options(j, m, &dims, &normalize, &topt, &f)) goto fail;
    if (!json_object_object_get_ex(j, "texts", &arr) || !json_object_is_type(arr, json_type_array)) {
        failf(&f, 400, "missing_texts", "'texts' must be an array of strings");
        goto fail;
    }
    int n = (int)json_object_array_length(arr);
    if (n == 0) {
        failf(&f, 400, "empty_input", "'texts' is empty");
        goto fail;
    }
    if (n > e->max_items) {
        failf(&f, 413, "too_many_inputs", "%d texts; limits.max_items is %d", n, e->max_items);
        goto fail;
    }
    texts = calloc((size_t)n, sizeof *texts);
    lens = calloc((size_t)n, sizeof *lens);
    if (!texts || !lens) {
        failf(&f, 500, NULL, "out of memory");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        json_object *t = json_object_array_get_idx(arr, i);
        if (!json_object_is_type(t, json_type_string)) {
            failf(&f, 400, "invalid_input", "texts[%d] must be a string", i);
            goto fail;
        }
        texts[i] = json_object_get_string(t);
        lens[i] = (size_t)json_object_get_string_len(t);
        if (!lens[i]) {
            failf(&f, 400, "empty_input", "texts[%d] is an empty string", i);
            goto fail;
        }
    }
    long tokens = 0;
    if (encode_texts_opts(e, m, texts, lens, n, e->vecs, &tokens, use_cache, &hits, &topt, &f)) goto fail;
    set_x_cache(e, r, use_cache, hits, n);
    begin_data(&r->out, m, dims);
    for (int i = 0; i < n; i++) {
        float *vec = e->vecs + (size_t)i * m->info->dim;
        if (normalize) mm_nn_l2_normalize(vec, dims);
        mm_buf_printf(&r->out, "%s{\"index\":%d,\"tokens\":%d,\"embedding\":", i ? "," : "", i, e->lens[i]);
        write_vec(&r->out, vec, dims);
        mm_buf_puts(&r->out, "}");
    }
    mm_buf_printf(&r->out, "],\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}\n", tokens, tokens);
    mm_http_respond_json(r, 200);
    json_object_put(j);
    free(texts);
    free(lens);
    return;
fail:
    json_object_put(j);
    free(texts);
    free(lens);
    respond_fail(r, &f);
}

/* ---------------------------------------------------------------- /embed/image, /embed/multimodal */

typedef struct {
    const char *model;
    int normalize, return_parts, use_cache;
    double wt, wi;
    int n;                          /* images */
    const unsigned char **bufs;
    size_t *lens;
    const char **names;             /* filenames (multipart) or NULL */
    unsigned char **owned;          /* decoded base64 buffers */
    const char *text;               /* multimodal */
    size_t text_len;
    json_object *json;
    form_t form;
} media_req_t;

static void media_free(media_req_t *q)
{
    for (int i = 0; q->owned && i < q->n; i++) free(q->owned[i]);
    free(q->owned);
    free(q->bufs);
    free(q->lens);
    free(q->names);
    json_object_put(q->json);
    form_free(&q->form);
}

static int alloc_images(media_req_t *q, int n, fail_t *f)
{
    q->bufs = calloc((size_t)n + 1, sizeof *q->bufs);
    q->lens = calloc((size_t)n + 1, sizeof *q->lens);
    q->names = calloc((size_t)n + 1, sizeof *q->names);
    q->owned = calloc((size_t)n + 1, sizeof *q->owned);
    if (!q->bufs || !q->lens || !q->names || !q->owned) return failf(f, 500, NULL, "out of memory");
    return 0;
}

static int form_number(const form_t *fm, const char *name, double *out, fail_t *f)
{
    const part_t *p = form_field(fm, name);
    if (!p) return 0;
    char *end;
    double v = strtod(p->data.data ? p->data.data : "", &end);
    if (!p->data.len || *end || !isfinite(v) || v < 0 || v > MAX_WEIGHT)
        return failf(f, 400, "invalid_parameter", "field '%s' must be a number from 0 to %g", name, MAX_WEIGHT);
    *out = v;
    return 0;
}

/* Collect model/normalize/images (and text for multimodal) from JSON or a form. */
static int read_media(mm_embed_t *e, mm_http_req_t *r, media_req_t *q, int multimodal, fail_t *f)
{
    memset(q, 0, sizeof *q);
    q->normalize = 1;
    q->use_cache = 1;
    q->wt = q->wi = 0.5;
    if (is_multipart(r->content_type)) {
        if (read_form(e, r, &q->form, f)) return -1;
        form_t *fm = &q->form;
        int files = 0;
        for (int i = 0; i < fm->n; i++) files += fm->parts[i].is_file;
        if (alloc_images(q, files, f)) return -1;
        for (int i = 0; i < fm->n; i++)
            if (fm->parts[i].is_file) {
                q->bufs[q->n] = (const unsigned char *)fm->parts[i].data.data;
                q->lens[q->n] = fm->parts[i].data.len;
                q->names[q->n] = fm->parts[i].filename;
                q->n++;
            }
        const part_t *p;
        if ((p = form_field(fm, "model")) && p->data.len) q->model = p->data.data;
        if ((p = form_field(fm, "normalize")) && parse_bool(p->data.data ? p->data.data : "", &q->normalize))
            return failf(f, 400, "invalid_parameter", "field 'normalize' must be true or false");
        if ((p = form_field(fm, "return_parts")) && parse_bool(p->data.data ? p->data.data : "", &q->return_parts))
            return failf(f, 400, "invalid_parameter", "field 'return_parts' must be true or false");
        if ((p = form_field(fm, "cache")) && parse_bool(p->data.data ? p->data.data : "", &q->use_cache))
            return failf(f, 400, "invalid_parameter", "field 'cache' must be true or false");
        if (form_number(fm, "text_weight", &q->wt, f) || form_number(fm, "image_weight", &q->wi, f)) return -1;
        if (multimodal && (p = form_field(fm, "text"))) {
            q->text = p->data.data ? p->data.data : "";
            q->text_len = p->data.len;
        }
        return 0;
    }
    if (!is_json(r->content_type)) {
        mm_http_drain(r, e->conf->max_body_bytes);
        return failf(f, 415, "unsupported_media_type",
                     "send multipart/form-data with file parts, or application/json with base64 images");
    }
    if (!(q->json = read_json(e, r, f))) return -1;
    json_object *j = q->json, *arr, *v;
    if (jstr(j, "model", &q->model, f) || jbool(j, "normalize", &q->normalize, f) ||
        jbool(j, "return_parts", &q->return_parts, f) || jbool(j, "cache", &q->use_cache, f))
        return -1;
    const char *key = multimodal ? "image" : "images";
    if (!json_object_object_get_ex(j, key, &arr))
        return failf(f, 400, "missing_images", multimodal ? "'image' (base64) is required" : "'images' is required");
    int single = json_object_is_type(arr, json_type_string);
    if (!single && !json_object_is_type(arr, json_type_array))
        return failf(f, 400, "invalid_input", "'%s' must be %s", key,
                     multimodal ? "a base64 string" : "an array of base64 strings or data: URIs");
    int n = single ? 1 : (int)json_object_array_length(arr);
    if (n > e->max_items) return failf(f, 413, "too_many_inputs", "%d images; limits.max_items is %d", n, e->max_items);
    if (alloc_images(q, n, f)) return -1;
    for (int i = 0; i < n; i++) {
        json_object *s = single ? arr : json_object_array_get_idx(arr, i);
        if (!json_object_is_type(s, json_type_string))
            return failf(f, 400, "invalid_input", "images[%d] must be a base64 string", i);
        if (decode_b64_image(json_object_get_string(s), (size_t)json_object_get_string_len(s), &q->owned[i],
                             &q->lens[i], i, f))
            return -1;
        q->bufs[i] = q->owned[i];
        q->n = i + 1;
    }
    if (multimodal) {
        if (json_object_object_get_ex(j, "text", &v)) {
            if (!json_object_is_type(v, json_type_string)) return failf(f, 400, "invalid_input", "'text' must be a string");
            q->text = json_object_get_string(v);
            q->text_len = (size_t)json_object_get_string_len(v);
        }
        for (int k = 0; k < 2; k++) {
            const char *name = k ? "image_weight" : "text_weight";
            if (!json_object_object_get_ex(j, name, &v)) continue;
            double w = json_object_get_double(v);
            if (!(json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)) || !isfinite(w) ||
                w < 0 || w > MAX_WEIGHT)
                return failf(f, 400, "invalid_parameter", "'%s' must be a number from 0 to %g", name, MAX_WEIGHT);
            *(k ? &q->wi : &q->wt) = w;
        }
    }
    return 0;
}

static void h_image(mm_embed_t *e, mm_http_req_t *r)
{
    fail_t f = {0};
    media_req_t q;
    entry_t *m;
    if (read_media(e, r, &q, 0, &f) || !(m = pick_model_for(e, q.model, 0, 1, MM_MOD_IMAGE, &f))) goto fail;
    if (q.n == 0) {
        failf(&f, 400, "missing_images", "no image was sent (multipart file parts or JSON 'images')");
        goto fail;
    }
    if (q.n > e->max_items) {
        failf(&f, 413, "too_many_inputs", "%d images; limits.max_items is %d", q.n, e->max_items);
        goto fail;
    }
    int hits = 0;
    e->t_decode = e->t_model = 0;
    if (encode_images(e, m, q.bufs, q.lens, q.n, e->vecs, q.use_cache, &hits, &f)) goto fail;
    set_x_cache(e, r, q.use_cache, hits, q.n);
    size_t hl = strlen(r->headers); /* decode + preprocess and model time, for clients and benchmarks */
    snprintf(r->headers + hl, sizeof r->headers - hl, "Server-Timing: decode;dur=%.2f, model;dur=%.2f\r\n",
             e->t_decode, e->t_model);
    begin_data(&r->out, m, m->info->dim);
    for (int i = 0; i < q.n; i++) {
        float *vec = e->vecs + (size_t)i * m->info->dim;
        if (q.normalize) mm_nn_l2_normalize(vec, m->info->dim);
        mm_buf_printf(&r->out, "%s{\"index\":%d,", i ? "," : "", i);
        if (q.names[i]) {
            mm_buf_puts(&r->out, "\"filename\":");
            mm_buf_json_str(&r->out, q.names[i], strlen(q.names[i]));
            mm_buf_puts(&r->out, ",");
        }
        mm_buf_puts(&r->out, "\"embedding\":");
        write_vec(&r->out, vec, m->info->dim);
        mm_buf_puts(&r->out, "}");
    }
    mm_buf_puts(&r->out, "]}\n");
    mm_http_respond_json(r, 200);
    media_free(&q);
    return;
fail:
    media_free(&q);
    respond_fail(r, &f);
}

static void h_multimodal(mm_embed_t *e, mm_http_req_t *r)
{
    fail_t f = {0};
    media_req_t q;
    entry_t *m;
    if (read_media(e, r, &q, 1, &f) || !(m = pick_model_for(e, q.model, 1, 1, 0, &f))) goto fail;
    if (!q.text || !q.text_len) {
        failf(&f, 400, "missing_text", "a non-empty 'text' is required");
        goto fail;
    }
    if (q.n != 1) {
        failf(&f, 400, "missing_image", q.n ? "send exactly one image" : "an 'image' is required");
        goto fail;
    }
    if (q.wt + q.wi <= 0) {
        failf(&f, 400, "invalid_parameter", "text_weight + image_weight must be positive");
        goto fail;
    }
    int d = m->info->dim;
    float *tv = e->vecs, *iv = e->vecs + d, *fv = e->vecs + 2 * (size_t)d;
    long tokens = 0;
    const char *texts[1] = {q.text};
    size_t tl[1] = {q.text_len};
    int hits = 0;
    if (encode_texts(e, m, texts, tl, 1, tv, &tokens, q.use_cache, &hits, &f) ||
        encode_images(e, m, q.bufs, q.lens, 1, iv, q.use_cache, &hits, &f))
        goto fail;
    set_x_cache(e, r, q.use_cache, hits, 2);
    mm_nn_l2_normalize(tv, d);
    mm_nn_l2_normalize(iv, d);
    for (int i = 0; i < d; i++) fv[i] = (float)(q.wt * tv[i] + q.wi * iv[i]);
    if (!vec_usable(fv, d)) {
        failf(&f, 422, "degenerate_embedding",
              "the weighted text and image vectors cancel out (a zero or non-finite vector); change the weights");
        goto fail;
    }
    if (q.normalize) mm_nn_l2_normalize(fv, d);
    /* the same list shape as every other route: one item, its parts inside */
    mm_buf_t *b = &r->out;
    begin_data(b, m, d);
    mm_buf_puts(b, "{\"index\":0,\"object\":\"embedding\",\"embedding\":");
    write_vec(b, fv, d);
    if (q.return_parts) {
        mm_buf_puts(b, ",\"text_embedding\":");
        write_vec(b, tv, d);
        mm_buf_puts(b, ",\"image_embedding\":");
        write_vec(b, iv, d);
    }
    mm_buf_printf(b, "}],\"weights\":{\"text\":%g,\"image\":%g},\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}\n",
                  q.wt, q.wi, tokens, tokens);
    mm_http_respond_json(r, 200);
    media_free(&q);
    return;
fail:
    media_free(&q);
    respond_fail(r, &f);
}

/* ---------------------------------------------------------------- /embed/video */

enum { POOL_MEAN, POOL_MAX, POOL_FIRST };

static int form_int(const form_t *fm, const char *name, int *out, fail_t *f)
{
    const part_t *p = form_field(fm, name);
    if (!p) return 0;
    char *end;
    long v = strtol(p->data.data ? p->data.data : "", &end, 10);
    if (!p->data.len || *end || v < 1 || v > 100000)
        return failf(f, 400, "invalid_parameter", "field '%s' must be a positive integer", name);
    *out = (int)v;
    return 0;
}

static void h_video(mm_embed_t *e, mm_http_req_t *r)
{
    fail_t f = {0};
    form_t fm;
    mm_video_t v;
    memset(&v, 0, sizeof v);
    memset(&fm, 0, sizeof fm);
    entry_t *m = NULL;
    if (!is_multipart(r->content_type)) {
        mm_http_drain(r, e->conf->max_body_bytes);
        mm_http_error(r, 415, "unsupported_media_type", "send multipart/form-data with a video file part");
        return;
    }
    if (read_form(e, r, &fm, &f)) goto fail;
    const part_t *file = NULL, *p;
    for (int i = 0; i < fm.n; i++)
        if (fm.parts[i].is_file) {
            if (file) {
                failf(&f, 400, "too_many_videos", "send exactly one video file per request");
                goto fail;
            }
            file = &fm.parts[i];
        }
    if (!file) {
        failf(&f, 400, "missing_video", "no video file part was sent");
        goto fail;
    }
    if (!file->data.len) {
        failf(&f, 400, "empty_video", "the video file is empty");
        goto fail;
    }
    int normalize = 1, return_frames = 0, pooling = POOL_MEAN, frames = e->conf->default_frames;
    if ((p = form_field(&fm, "normalize")) && parse_bool(p->data.data ? p->data.data : "", &normalize)) {
        failf(&f, 400, "invalid_parameter", "field 'normalize' must be true or false");
        goto fail;
    }
    if ((p = form_field(&fm, "return_frames")) && parse_bool(p->data.data ? p->data.data : "", &return_frames)) {
        failf(&f, 400, "invalid_parameter", "field 'return_frames' must be true or false");
        goto fail;
    }
    if ((p = form_field(&fm, "pooling"))) {
        const char *pv = p->data.data ? p->data.data : "";
        if (!strcmp(pv, "mean")) pooling = POOL_MEAN;
        else if (!strcmp(pv, "max")) pooling = POOL_MAX;
        else if (!strcmp(pv, "first")) pooling = POOL_FIRST;
        else {
            failf(&f, 400, "invalid_parameter", "field 'pooling' must be mean, max or first");
            goto fail;
        }
    }
    if (form_int(&fm, "max_frames", &frames, &f)) goto fail;
    if (frames > e->conf->max_frames) {
        failf(&f, 422, "too_many_frames", "max_frames %d is over limits.max_frames (%d)", frames, e->conf->max_frames);
        goto fail;
    }
    if (!(m = pick_model_for(e, (p = form_field(&fm, "model")) && p->data.len ? p->data.data : NULL, 0, 1, MM_MOD_VIDEO, &f)))
        goto fail;
    if (!m->info->has_vision) {
        failf(&f, 422, "no_vision_tower", "model '%s' cannot embed video", m->name);
        goto fail;
    }
    mm_video_limits_t lim = {.max_bytes = (long)e->conf->max_body_bytes, .max_seconds = e->conf->max_video_seconds,
                             .max_pixels = (long)e->conf->max_pixels, .max_frames = e->conf->max_frames,
                             .budget_seconds = e->conf->video_budget,
                             .min_edge_hint = mm_preproc_min_edge(m->pre), .threads = 1};
    char err[MM_ERRLEN];
    int64_t t0 = mm_now_us();
    int rc = mm_video_sample(file->data.data, file->data.len, frames, &lim, &v, err, sizeof err);
    if (rc) {
        const char *code = rc == MM_E_TIMEOUT ? "video_budget_exceeded" : rc == MM_E_UNSUPPORTED ? "unsupported_video"
                         : rc == MM_E_TOOBIG ? "video_too_large" : rc == MM_E_UNPROCESSABLE ? "unprocessable_video"
                         : "invalid_video";
        failf(&f, mm_status_http(rc), code, "video: %s", err);
        goto fail;
    }
    int64_t t1 = mm_now_us();
    int d = m->info->dim;
    size_t per = (size_t)m->info->channels * m->info->image_size * m->info->image_size;
    for (int base = 0; base < v.n; base += IMG_CHUNK) {
        int k = MM_MIN(IMG_CHUNK, v.n - base);
        for (int j = 0; j < k; j++) {
            const mm_video_frame_t *fr = &v.frames[base + j];
            if (mm_preproc_from_rgb(m->pre, fr->rgb, fr->w, fr->h, (size_t)fr->w * 3, e->pix + (size_t)j * per)) {
                failf(&f, 500, NULL, "frame %d: preprocessing failed", base + j);
                goto fail;
            }
        }
        if ((rc = mm_encoder_encode_pixels(m->run, e->pix, k, e->vecs + (size_t)base * d))) {
            failf(&f, mm_status_http(rc), NULL, "image encoder failed (%d)", rc);
            goto fail;
        }
    }
    float *pooled = e->vecs + (size_t)v.n * d;
    for (int i = 0; i < v.n; i++)
        if (normalize) mm_nn_l2_normalize(e->vecs + (size_t)i * d, d);
    for (int k = 0; k < d; k++) {
        float acc = e->vecs[k];
        for (int i = 1; i < v.n && pooling != POOL_FIRST; i++) {
            float x = e->vecs[(size_t)i * d + k];
            acc = pooling == POOL_MAX ? (x > acc ? x : acc) : acc + x;
        }
        pooled[k] = pooling == POOL_MEAN ? acc / (float)v.n : acc;
    }
    if (normalize) mm_nn_l2_normalize(pooled, d);
    int64_t t2 = mm_now_us();
    static const char *pool_names[] = {"mean", "max", "first"};
    mm_buf_t *b = &r->out;
    mm_buf_puts(b, "{\"model\":");
    mm_buf_json_str(b, m->name, strlen(m->name));
    mm_buf_printf(b, ",\"dim\":%d,\"pooling\":\"%s\",\"data\":[{\"index\":0,\"object\":\"embedding\",\"embedding\":",
                  d, pool_names[pooling]);
    write_vec(b, pooled, d);
    mm_buf_puts(b, "}],\"frames\":[");
    for (int i = 0; i < v.n; i++)
        mm_buf_printf(b, "%s{\"index\":%d,\"time\":%.6f}", i ? "," : "", v.frames[i].index, v.frames[i].time);
    mm_buf_puts(b, "]");
    if (return_frames) {
        mm_buf_puts(b, ",\"frame_embeddings\":[");
        for (int i = 0; i < v.n; i++) {
            if (i) mm_buf_puts(b, ",");
            write_vec(b, e->vecs + (size_t)i * d, d);
        }
        mm_buf_puts(b, "]");
    }
    mm_buf_puts(b, ",\"video\":{\"format\":");
    mm_buf_json_str(b, v.format, strlen(v.format));
    mm_buf_puts(b, ",\"codec\":");
    mm_buf_json_str(b, v.codec, strlen(v.codec));
    mm_buf_printf(b, ",\"duration\":%.6f,\"width\":%d,\"height\":%d,\"rotation\":%d,\"frames_in_stream\":%d},"
                     "\"timing_ms\":{\"decode\":%.1f,\"model\":%.1f}}\n",
                  v.duration, v.width, v.height, v.rotation, v.n_stream_frames, (t1 - t0) / 1e3, (t2 - t1) / 1e3);
    mm_http_respond_json(r, 200);
    mm_video_free(&v);
    form_free(&fm);
    return;
fail:
    mm_video_free(&v);
    form_free(&fm);
    respond_fail(r, &f);
}

/* ---------------------------------------------------------------- dispatch */

void mm_embed_handle(mm_embed_t *e, mm_http_req_t *r)
{
    if (e->n == 0) {
        mm_http_drain(r, e->conf->max_body_bytes);
        mm_http_error(r, 404, "model_not_found", "no embedding model is configured on this server");
        return;
    }
    switch (r->route) {
    case MM_ROUTE_EMBEDDINGS: h_openai(e, r); return;
    case MM_ROUTE_EMBED_TEXT: h_text(e, r); return;
    case MM_ROUTE_EMBED_IMAGE: h_image(e, r); return;
    case MM_ROUTE_EMBED_MULTIMODAL: h_multimodal(e, r); return;
    case MM_ROUTE_EMBED_VIDEO: h_video(e, r); return;
    default:
        mm_http_drain(r, e->conf->max_body_bytes);
        mm_http_error(r, 404, "not_found", "no handler for %s", r->path);
        return;
    }
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
        if (tokenize_one(e, &e->m[0], text, strlen(text), ids, &n, 0, &default_text_opts, &f)) {
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
    if (rc == MM_OK && nt && encode_texts(e, m, texts, tlen, nt, e->vecs, &tokens, 0, &hits, &f))
        rc = mm_errf(err, errlen, MM_E_INVALID, "%s", f.msg);
    if (rc == MM_OK && ni &&
        encode_images(e, m, (const unsigned char *const *)bufs, blen, ni, e->vecs + (size_t)nt * m->info->dim, 0, &hits,
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
            write_vec(out, v, m->info->dim);
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
