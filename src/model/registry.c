/* Architecture registry: reads a model folder's config.json once, picks the
 * architecture from a table, resolves the compute dtype, loads the weights
 * and what turns request data into model inputs (tokenizer, image
 * preprocessor). The only place that knows which architectures exist. */
#include "mmembed/encoder.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "mmembed/common.h"
#include "mmembed/hfconfig.h"
#include "mmembed/log.h"
#include "mmembed/preprocess.h"
#include "mmembed/safetensors.h"
#include "mmembed/tokenizer.h"

/* ---------------------------------------------------------------- the table */

/* config.json "architectures"[0] or "model_type" names -> ops. USE-Lite's
 * converted folder says "architecture": "USELite" (tools/use/convert.js). */
static const struct {
    const char *names[4];        /* architectures[0] values */
    const char *model_types[4];  /* model_type values */
    const mm_encoder_ops_t *ops;
} archs[] = {
    {{"CLIPModel", "CLIPTextModelWithProjection", "CLIPVisionModelWithProjection"},
     {"clip", "clip_text_model", "clip_vision_model"}, &mm_enc_clip},
    {{"BertModel", "BertForMaskedLM", "BertForPreTraining"}, {"bert"}, &mm_enc_bert},
    {{"Qwen3Model", "Qwen3ForCausalLM"}, {"qwen3"}, &mm_enc_qwen3},
    {{"USELite"}, {NULL}, &mm_enc_use},
    {{"Qwen2VLForConditionalGeneration", "Qwen2VLModel"}, {"qwen2_vl"}, &mm_enc_qwen2vl},
};

static const mm_encoder_ops_t *pick(const mm_cfg_t *cfg, const char **arch, const char **mt)
{
    *mt = mm_cfg_str(cfg, "model_type");
    *arch = mm_cfg_str0(cfg, "architectures");
    if (!*arch)
        *arch = mm_cfg_str(cfg, "architecture");
    /* model_type first: it names the family whatever head the checkpoint
     * has, and a family of its own is not ours even when its architectures
     * list looks like one of ours (xlm-roberta saves "BertModel"-like heads) */
    for (size_t i = 0; *mt && i < MM_ARRAY_LEN(archs); i++)
        for (int k = 0; k < 4 && archs[i].model_types[k]; k++)
            if (!strcmp(*mt, archs[i].model_types[k])) return archs[i].ops;
    if (*mt)
        return NULL;
    for (size_t i = 0; *arch && i < MM_ARRAY_LEN(archs); i++)
        for (int k = 0; k < 4 && archs[i].names[k]; k++)
            if (!strcmp(*arch, archs[i].names[k])) return archs[i].ops;
    return NULL;
}

int mm_encoder_probe(const char *dir, mm_cfg_file_t **file, const mm_encoder_ops_t **ops, char *err, size_t errlen)
{
    *ops = NULL;
    int rc = mm_cfg_open_in(dir, "config.json", file, err, errlen);
    if (rc == MM_E_NOTFOUND)
        return mm_errf(err, errlen, rc, "%s/config.json: not found (not a Hugging Face model folder?)", dir);
    if (rc)
        return rc;   /* not a JSON object: the reader's message */
    const mm_cfg_t root = mm_cfg_root(*file);
    const char *arch, *mt;
    if (!(*ops = pick(&root, &arch, &mt))) {
        rc = mm_errf(err, errlen, MM_E_UNSUPPORTED,
                     "%s: unsupported architecture \"%s\" (model_type \"%s\"); supported: CLIPModel, "
                     "CLIPTextModelWithProjection, CLIPVisionModelWithProjection, BertModel, Qwen3Model, "
                     "Qwen2VLForConditionalGeneration, USE-Lite (tools/use)", mm_cfg_path(*file), arch ? arch : "?",
                     mt ? mt : "?");
        mm_cfg_close(*file);
        *file = NULL;
    }
    return rc;
}

int mm_encoder_load_ops(const char *dir, const mm_encoder_ops_t *ops, mm_dtype_t dt, void **model, char *err,
                        size_t errlen)
{
    mm_cfg_file_t *f;
    *model = NULL;
    int rc = mm_cfg_open_in(dir, "config.json", &f, err, errlen);
    if (rc == MM_E_NOTFOUND)
        return mm_errf(err, errlen, rc, "%s/config.json: not found (not a Hugging Face model folder?)", dir);
    if (rc)
        return rc;
    const mm_cfg_t cfg = mm_cfg_root(f);
    rc = ops->load(dir, &cfg, dt, model, err, errlen);
    mm_cfg_close(f);
    return rc;
}

/* ---------------------------------------------------------------- the encoder */

struct mm_encoder {
    const mm_encoder_ops_t *ops;
    void *model;
    mm_enc_info_t info;
    mm_tokenizer_t *tok;       /* NULL without a text tower or when ops->tokenize */
    mm_preproc_t pre;          /* valid with a vision tower */
    int synthetic;
    char dtype_why[MM_PLAN_WHY];
    double load_ms;
};

struct mm_enc_runner {
    const mm_encoder_t *enc;
    void *r;                   /* the architecture's runner (CPU or on a backend), or NULL when remote */
    mm_enc_remote_fn remote;   /* non-NULL: encode calls this instead */
    void *remote_ctx;
};


static double ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---------------------------------------------------------------- dtype policy */

/* Bytes of one dense layer W (N, K) packed in dt: the packer's own size
 * where this CPU can pack dt; else (the policy must also run where a dtype
 * is not supported) oneDNN's blocked layouts approximated: N padded to 16,
 * K to 2 (bf16) or 4 (q8), and q8's scale and column sum per column. */
static size_t dense_bytes(size_t N, size_t K, mm_dtype_t dt)
{
    if (mm_nn_lin_supported(dt)) return mm_nn_lin_bytes((int)N, (int)K, dt);
    const size_t Np = (N + 15) / 16 * 16;
    switch (dt) {
    case MM_DT_BF16: return 64 + Np * ((K + 1) / 2 * 2) * 2;
    case MM_DT_Q8: return 64 + Np * ((K + 3) / 4 * 4) + Np * 8;
    default: return mm_nn_lin_bytes((int)N, (int)K, dt);
    }
}

int mm_encoder_q4_keep(void)
{
    const char *e = getenv("MMEMBED_Q4_KEEP");
    if (e && *e >= '0' && *e <= '9' && strlen(e) <= 3)
        return atoi(e);
    return MM_Q4_KEEP_BLOCKS;
}

mm_dtype_t mm_encoder_text_dtype(mm_dtype_t dt, int b, int n)
{
    (void)n;
    if (dt != MM_DT_Q4 || (b >= 0 && b >= mm_encoder_q4_keep()))
        return dt;
    return mm_nn_dtype_native(MM_DT_Q8) ? MM_DT_Q8 : MM_DT_F32;
}

/* Where a checkpoint tensor sits for mm_encoder_text_dtype: its block in
 * a text transformer whose vector is one token's state ("...layers.N.":
 * CLIP's text tower, Qwen3, Qwen2-VL's language model; not BERT's
 * "layer.N."), -1 for CLIP's text projection, or INT_MIN (vision towers,
 * BERT and everything else). */
static int text_block(const char *name)
{
    if (strstr(name, "vision") || strstr(name, "visual"))
        return INT_MIN;
    if (strstr(name, "text_projection"))
        return -1;
    const char *p = strstr(name, "layers.");
    return p && p[7] >= '0' && p[7] <= '9' ? atoi(p + 7) : INT_MIN;
}

/* Ends with suffix. */
static int ends_with(const char *s, const char *suffix)
{
    const size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

int mm_encoder_pack_bytes(const char *dir, size_t bytes[MM_DT_COUNT], char *err, size_t errlen)
{
    mm_st_t *st;
    int rc = mm_st_open(dir, &st, err, errlen);
    for (int d = 0; d < MM_DT_COUNT; d++) bytes[d] = 0;
    if (rc) return rc;
    int blocks = 0;
    for (int i = 0; i < mm_st_count(st); i++)
        blocks = MM_MAX(blocks, text_block(mm_st_at(st, i)->name) + 1);
    for (int i = 0; i < mm_st_count(st); i++) {
        const mm_st_tensor_t *t = mm_st_at(st, i);
        /* a language model's head: an embedder never reads it */
        if (strstr(t->name, "lm_head.")) continue;
        /* token tables: in q4 packs int8 rows + a scale per row (every text
         * tower); else the text encoders' keeps its checkpoint dtype
         * (textcommon.c: only the looked-up rows are converted), CLIP's is
         * f32 */
        const int clip_tok = ends_with(t->name, "token_embedding.weight");
        if (clip_tok || ends_with(t->name, "embed_tokens.weight") || ends_with(t->name, "word_embeddings.weight")) {
            for (int d = 0; d < MM_DT_COUNT; d++)
                bytes[d] += d == MM_DT_Q4 && t->ndim == 2
                                ? (t->numel + 63) / 64 * 64 + ((size_t)t->shape[0] * 4 + 63) / 64 * 64
                                : ((clip_tok ? t->numel * 4 : t->nbytes) + 63) / 64 * 64;
            continue;
        }
        /* dense: matrices and convolutions (patch embeddings), not the
         * other lookup tables (positions: f32 in every pack) */
        const int table = t->ndim == 2 && strstr(t->name, "embed");
        const int dense = t->ndim >= 2 && !table && t->shape[0] > 1;
        const int b = text_block(t->name);
        for (int d = 0; d < MM_DT_COUNT; d++) {
            const mm_dtype_t dt = b == INT_MIN ? (mm_dtype_t)d : mm_encoder_text_dtype((mm_dtype_t)d, b, blocks);
            bytes[d] += dense ? dense_bytes((size_t)t->shape[0], t->numel / (size_t)t->shape[0], dt)
                              : (t->numel * 4 + 63) / 64 * 64;
        }
    }
    mm_st_close(st);
    return MM_OK;
}

size_t mm_encoder_mem_available(void)
{
    /* a documented override, for tests and for containers whose
     * /proc/meminfo shows the host's memory: bytes, or with K/M/G */
    const char *o = getenv("MMEMBED_MEM_AVAILABLE");
    if (o && *o) {
        char *end;
        double v = strtod(o, &end);
        const double unit = *end == 'K' || *end == 'k' ? 1024.0 : *end == 'M' || *end == 'm' ? 1048576.0
                          : *end == 'G' || *end == 'g' ? 1073741824.0 : 1.0;
        if (end != o && v >= 0) return (size_t)(v * unit);
        mm_log_warn("MMEMBED_MEM_AVAILABLE=%s ignored (expected bytes, or a number with K, M or G)", o);
    }
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[128];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (size_t)kb * 1024;
}

/* The dtypes auto may take here, best first: bf16 where the CPU multiplies
 * it natively, else f32; then q8 where native; then q4 (our kernels run on
 * any AVX2 CPU). Returns how many. */
static int auto_ladder(mm_dtype_t ladder[3])
{
    int n = 0;
    ladder[n++] = mm_nn_dtype_native(MM_DT_BF16) ? MM_DT_BF16 : MM_DT_F32;
    if (mm_nn_dtype_native(MM_DT_Q8)) ladder[n++] = MM_DT_Q8;
    if (mm_nn_dtype_native(MM_DT_Q4)) ladder[n++] = MM_DT_Q4;
    return n;
}

#define MIB(b) ((double)(b) / 1048576.0)

int mm_encoder_plan(mm_enc_plan_t *p, int n, double share, size_t avail, char *err, size_t errlen)
{
    const mm_cpu_t *c = mm_nn_cpu();
    const char *capped = c->forced ? " (capped by MMEMBED_CPU)" : "";
    mm_dtype_t ladder[3];
    const int nl = auto_ladder(ladder);
    int step[MM_MAX_PLAN] = {0}, any_auto = 0;
    if (n > MM_MAX_PLAN) return mm_errf(err, errlen, MM_E_INVALID, "more than %d models", MM_MAX_PLAN);
    if (share <= 0 || share > 1) share = 0.5;
    const size_t budget = (size_t)((double)avail * share);
    for (int i = 0; i < n; i++) {
        mm_enc_plan_t *m = &p[i];
        if (!strcmp(m->want, "auto")) {
            any_auto = 1;
            m->dt = ladder[0];
            continue;
        }
        mm_dtype_t dt;
        if (mm_dtype_parse(m->want, &dt))
            return mm_errf(err, errlen, MM_E_INVALID, "unknown dtype '%s' (supported: f32, bf16, q8, q4, auto)", m->want);
        if (!mm_nn_dtype_native(dt)) {
            m->dt = MM_DT_F32;
            snprintf(m->why, sizeof m->why, "%s requested, but this CPU (%s)%s has %s; running f32", m->want, c->isa,
                     capped, dt == MM_DT_BF16 ? "neither AMX nor AVX512-BF16" : dt == MM_DT_Q8
                     ? "neither AMX nor AVX512-VNNI" : "no AVX2");
        } else {
            m->dt = dt;
            snprintf(m->why, sizeof m->why, "%s as configured (CPU: %s%s)", m->want, c->isa, capped);
        }
    }
    if (!any_auto) return MM_OK;
    /* auto models step down, the one with the largest pack first, until
     * the packs of all models fit the budget (an unknown amount of memory,
     * avail 0, fits anything) */
    size_t total = 0;
    for (int i = 0; i < n; i++) total += p[i].bytes[p[i].dt];
    while (avail && total > budget) {
        int pick = -1;
        for (int i = 0; i < n; i++)
            if (!strcmp(p[i].want, "auto") && step[i] + 1 < nl &&
                (pick < 0 || p[i].bytes[p[i].dt] > p[pick].bytes[p[pick].dt]))
                pick = i;
        if (pick < 0) break;
        total -= p[pick].bytes[p[pick].dt];
        p[pick].dt = ladder[++step[pick]];
        total += p[pick].bytes[p[pick].dt];
    }
    if (avail && total > budget) {
        char sizes[512] = "";
        size_t o = 0;
        for (int i = 0; i < n && o < sizeof sizes; i++)
            o += (size_t)snprintf(sizes + o, sizeof sizes - o, "%s%s %.0f MiB in %s", i ? ", " : "", p[i].dir,
                                  MIB(p[i].bytes[p[i].dt]), mm_dtype_name(p[i].dt));
        return mm_errf(err, errlen, MM_E_TOOBIG, "the models do not fit: %.0f MiB of packs (%s) against %.0f MiB, "
                       "memory_share %.2f of %.0f MiB available; raise memory_share, add memory or serve fewer models",
                       MIB(total), sizes, MIB(budget), share, MIB(avail));
    }
    for (int i = 0; i < n; i++) {
        mm_enc_plan_t *m = &p[i];
        if (strcmp(m->want, "auto")) continue;
        const char *native = m->dt == MM_DT_BF16 ? (c->amx ? "AMX multiplies bf16 natively" : "AVX512-BF16 multiplies bf16 natively")
                           : m->dt == MM_DT_F32 ? "no native bf16 on this CPU" : "";
        if (!avail)
            snprintf(m->why, sizeof m->why, "auto: %s%s; available memory unknown", native, capped);
        else if (step[i] == 0)
            snprintf(m->why, sizeof m->why, "auto: %s%s; packs %.0f MiB (all models %.0f MiB) fit %.0f MiB "
                     "(memory_share %.2f of %.0f MiB available)", native, capped, MIB(m->bytes[m->dt]), MIB(total),
                     MIB(budget), share, MIB(avail));
        else
            snprintf(m->why, sizeof m->why, "auto: %s would take %.0f MiB, over the budget of %.0f MiB with the "
                     "other models (memory_share %.2f of %.0f MiB available); %s takes %.0f MiB (all models %.0f MiB)%s",
                     mm_dtype_name(ladder[0]), MIB(m->bytes[ladder[0]]), MIB(budget), share, MIB(avail),
                     mm_dtype_name(m->dt), MIB(m->bytes[m->dt]), MIB(total), capped);
    }
    return MM_OK;
}

static int synthetic_flag(const mm_cfg_t *cfg)
{
    const char *note = mm_cfg_str(cfg, "_note");
    return mm_cfg_bool(cfg, "mmembed_synthetic") || (note && strstr(note, "SYNTHETIC"));
}

int mm_encoder_load(const char *dir, const char *dtype, mm_encoder_t **out, char *err, size_t errlen)
{
    mm_enc_plan_t p = {.dir = dir, .want = dtype};
    int rc;
    *out = NULL;
    if (!strcmp(dtype, "auto") && (rc = mm_encoder_pack_bytes(dir, p.bytes, err, errlen))) return rc;
    if ((rc = mm_encoder_plan(&p, 1, 0.5, mm_encoder_mem_available(), err, errlen))) return rc;
    return mm_encoder_load_planned(&p, out, err, errlen);
}

int mm_encoder_load_planned(const mm_enc_plan_t *p, mm_encoder_t **out, char *err, size_t errlen)
{
    const char *dir = p->dir;
    *out = NULL;
    char path[PATH_MAX + 64];
    mm_cfg_file_t *cf;
    const mm_encoder_ops_t *ops;
    int rc = mm_encoder_probe(dir, &cf, &ops, err, errlen);
    if (rc)
        return rc;
    const mm_cfg_t cfg = mm_cfg_root(cf);
    mm_encoder_t *e = calloc(1, sizeof *e);
    if (!e) {
        mm_cfg_close(cf);
        return MM_E_NOMEM;
    }
    e->ops = ops;
    e->synthetic = synthetic_flag(&cfg);
    const double t0 = ms_now();
    mm_dtype_t dt = MM_DT_F32;
    if (ops->f32_only) {
        snprintf(e->dtype_why, sizeof e->dtype_why, "%s", strcmp(p->want, "f32") ? ops->f32_only : "f32 as configured");
    } else {
        dt = p->dt;
        snprintf(e->dtype_why, sizeof e->dtype_why, "%s", p->why);
    }
    char sub[MM_ERRLEN];
    rc = ops->load(dir, &cfg, dt, &e->model, sub, sizeof sub);
    mm_cfg_close(cf);
    if (rc) {
        free(e);
        return mm_errf(err, errlen, rc, "%s", sub);
    }
    ops->info(e->model, &e->info);
    if (e->info.has_text && !ops->tokenize) {
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        if ((rc = mm_tokenizer_load(path, &e->tok, sub, sizeof sub))) {
            mm_encoder_free(e);
            return mm_errf(err, errlen, rc, "%s", sub);
        }
    }
    if (e->info.has_vision) {
        snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
        rc = mm_preproc_load(path, &e->pre, sub, sizeof sub);
        if (rc == MM_E_NOTFOUND) {
            mm_preproc_default_clip(&e->pre, e->info.image_size);
            mm_log_warn("%s: no preprocessor_config.json; using CLIP defaults", dir);
        } else if (rc) {
            mm_encoder_free(e);
            return mm_errf(err, errlen, rc, "%s", sub);
        }
        int oh, ow;
        if (e->info.image_dynamic != e->pre.dynamic) {
            const int dyn = e->pre.dynamic;
            mm_encoder_free(e);
            return mm_errf(err, errlen, MM_E_INVALID, "%s/preprocessor_config.json: %s", dir,
                           dyn ? "a Qwen2-VL image processor for a fixed-size model"
                               : "the model sizes each image itself (Qwen2VLImageProcessor expected)");
        }
        if (e->info.image_dynamic) {
            const int ps = e->pre.patch_size, ms = e->pre.merge_size, ts = e->pre.temporal_patch_size;
            if (ps * ms != 28 || ts != 2) {
                mm_encoder_free(e);
                return mm_errf(err, errlen, MM_E_UNSUPPORTED, "%s/preprocessor_config.json: patch %d x merge %d, "
                               "temporal %d (the model reads 14 x 2, 2)", dir, ps, ms, ts);
            }
        } else if (mm_preproc_out_dims(&e->pre, 1000, 1000, &oh, &ow) || oh != e->info.image_size ||
            ow != e->info.image_size) {
            const int size = e->info.image_size;
            mm_encoder_free(e);
            return mm_errf(err, errlen, MM_E_INVALID, "preprocessor output %dx%d does not match the model's image_size %d",
                           oh, ow, size);
        }
    }
    e->load_ms = ms_now() - t0;
    *out = e;
    return MM_OK;
}

void mm_encoder_free(mm_encoder_t *e)
{
    if (!e) return;
    mm_tokenizer_free(e->tok);
    if (e->model) e->ops->free(e->model);
    free(e);
}

const mm_enc_info_t *mm_encoder_info(const mm_encoder_t *e)
{
    return &e->info;
}

const struct mm_preproc *mm_encoder_preproc(const mm_encoder_t *e)
{
    return e->info.has_vision ? &e->pre : NULL;
}

const char *mm_encoder_dtype_reason(const mm_encoder_t *e)
{
    return e->dtype_why;
}

double mm_encoder_load_ms(const mm_encoder_t *e)
{
    return e->load_ms;
}

int mm_encoder_synthetic(const mm_encoder_t *e)
{
    return e->synthetic;
}

/* ---------------------------------------------------------------- text in */

int mm_encoder_tokenize(const mm_encoder_t *e, const char *t, size_t tl, int max_tokens, int truncate, int32_t *ids,
                        int *n, char *err, size_t errlen)
{
    const mm_enc_info_t *in = &e->info;
    if (!in->has_text) return mm_errf(err, errlen, MM_E_UNSUPPORTED, "the model has no text tower");
    if (max_tokens <= 0 || max_tokens > in->max_tokens) max_tokens = in->max_tokens;
    const int cap = in->max_tokens;
    int rc, total = 0;
    if (e->ops->tokenize) {   /* the architecture's own tokenizer (USE-Lite's unigram) */
        rc = e->ops->tokenize(e->model, t, tl, ids, cap, n, &total, err, errlen);
        if (!rc && !truncate && total > max_tokens) rc = MM_E_TOOBIG;
        if (!rc && *n > max_tokens) *n = max_tokens;
        return rc;
    }
    int eos = in->append_eos_id;
    if (eos >= 0 && mm_tokenizer_eos_id(e->tok) == eos) eos = -1;   /* the tokenizer adds it already */
    const int room = max_tokens - (eos >= 0);   /* keep a place for an appended end-of-text token */
    if (eos >= 0 && truncate) {   /* no post-processor: truncation is plain cutting */
        rc = mm_tokenizer_encode(e->tok, t, tl, 0, ids, cap, n, err, errlen);
        if (rc == MM_E_TOOBIG) {   /* longer than the buffer: tokenize a prefix that surely suffices */
            size_t cut = MM_MIN(tl, (size_t)room * 64);
            while (cut > 0 && cut < tl && ((unsigned char)t[cut] & 0xC0) == 0x80) cut--;   /* whole chars */
            rc = mm_tokenizer_encode(e->tok, t, cut, 0, ids, cap, n, err, errlen);
        }
        if (!rc && *n > room) *n = room;
    } else {
        rc = mm_tokenizer_encode(e->tok, t, tl, truncate ? room : 0, ids, room, n, err, errlen);
    }
    if (!rc && eos >= 0) ids[(*n)++] = eos;
    return rc;
}

/* ---------------------------------------------------------------- running */

mm_enc_runner_t *mm_encoder_runner_new(const mm_encoder_t *e, int max_batch, int max_images, int threads)
{
    mm_enc_runner_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->enc = e;
    if (!(r->r = e->ops->runner_new(e->model, max_batch, max_images, threads))) {
        free(r);
        return NULL;
    }
    return r;
}

mm_enc_runner_t *mm_encoder_runner_new_on(const mm_encoder_t *e, struct mm_backend *be, int max_batch,
                                          int max_images)
{
    if (!e->ops->runner_new_on)
        return NULL;
    mm_enc_runner_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->enc = e;
    if (!(r->r = e->ops->runner_new_on(e->model, be, max_batch, max_images))) {
        free(r);
        return NULL;
    }
    return r;
}

void mm_encoder_runner_free(mm_enc_runner_t *r)
{
    if (!r) return;
    if (r->r) r->enc->ops->runner_free(r->r);
    free(r);
}

int mm_encoder_encode(mm_enc_runner_t *r, const mm_input_t *in, int n, float *out)
{
    if (r->remote) return r->remote(r->remote_ctx, in, n, out);
    return r->enc->ops->encode(r->enc->model, r->r, in, n, out);
}

int mm_encoder_has_backend(const mm_encoder_t *e)
{
    return e->ops->runner_new_on != NULL;
}

mm_enc_runner_t *mm_encoder_runner_remote(const mm_encoder_t *e, mm_enc_remote_fn fn, void *ctx)
{
    mm_enc_runner_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->enc = e;
    r->remote = fn;
    r->remote_ctx = ctx;
    return r;
}

#define SEG_BATCH 64   /* inputs described per call by the conveniences below */

int mm_encoder_encode_ids(mm_enc_runner_t *r, const int32_t *const *ids, const int *lens, int n, float *out)
{
    mm_segment_t seg[SEG_BATCH];
    mm_input_t in[SEG_BATCH];
    const int d = r->enc->info.dim;
    for (int base = 0; base < n; base += SEG_BATCH) {
        const int k = MM_MIN(SEG_BATCH, n - base);
        for (int i = 0; i < k; i++) {
            seg[i] = (mm_segment_t){.kind = MM_SEG_TEXT, .ids = ids[base + i], .n_ids = lens[base + i]};
            in[i] = (mm_input_t){.seg = &seg[i], .n_seg = 1};
        }
        int rc = mm_encoder_encode(r, in, k, out + (size_t)base * d);
        if (rc) return rc;
    }
    return MM_OK;
}

int mm_encoder_encode_pixels(mm_enc_runner_t *r, const float *pixels, int n, float *out)
{
    mm_segment_t seg[SEG_BATCH];
    mm_input_t in[SEG_BATCH];
    const mm_enc_info_t *info = &r->enc->info;
    if (info->image_dynamic)
        return MM_E_UNSUPPORTED;
    const size_t per = (size_t)info->channels * info->image_size * info->image_size;
    for (int base = 0; base < n; base += SEG_BATCH) {
        const int k = MM_MIN(SEG_BATCH, n - base);
        for (int i = 0; i < k; i++) {
            seg[i] = (mm_segment_t){.kind = MM_SEG_IMAGE, .pixels = pixels + (size_t)(base + i) * per,
                                    .channels = info->channels, .height = info->image_size,
                                    .width = info->image_size};
            in[i] = (mm_input_t){.seg = &seg[i], .n_seg = 1};
        }
        int rc = mm_encoder_encode(r, in, k, out + (size_t)base * info->dim);
        if (rc) return rc;
    }
    return MM_OK;
}

/* ---------------------------------------------------------------- chat input */

/* Appends s[0..n) to the prompt buffer; 0 or MM_E_TOOBIG. */
static int put(char *buf, size_t cap, size_t *len, const char *s, size_t n)
{
    if (*len + n + 1 > cap)
        return MM_E_TOOBIG;
    if (n)   /* s may be NULL for an empty text */
        memcpy(buf + *len, s, n);
    *len += n;
    buf[*len] = 0;
    return MM_OK;
}

static int put_id(const mm_encoder_t *e, char *buf, size_t cap, size_t *len, int id)
{
    const char *t = mm_tokenizer_id_token(e->tok, id);
    return t ? put(buf, cap, len, t, strlen(t)) : MM_E_INVALID;
}

/* The whole prompt is tokenized in one go, as the HF processor does (a
 * text that starts with blanks joins "user\n" in one pre-token), then split
 * into segments at each <|image_pad|> token, where an image's tokens go.
 * Only a text too long for the model is tokenized alone, truncated, and
 * joined to the rest of the prompt by ids. */
int mm_encoder_chat_input(const mm_encoder_t *e, const char *instruction, size_t ilen, const char *text, size_t len,
                          int n_images, int visual_tokens, int truncate, int32_t *ids, int cap, mm_segment_t *seg,
                          int *n_seg, char *err, size_t errlen)
{
    const mm_enc_chat_t *c = e->info.chat;
    if (!c || !e->tok)
        return mm_errf(err, errlen, MM_E_UNSUPPORTED, "the model takes no chat prompt");
    if (n_images < 0 || visual_tokens < 0)
        return mm_errf(err, errlen, MM_E_INVALID, "bad image count");
    if (!instruction) {
        instruction = c->default_instruction;
        ilen = strlen(instruction);
    }
    if (!text)
        len = 0;
    const size_t pcap = ilen + len + 256 + (size_t)n_images * 64;
    char *p = malloc(pcap);
    if (!p)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    size_t pl = 0;
    int rc = MM_OK, n = 0;
    static const char nl = '\n';
    if ((rc = put_id(e, p, pcap, &pl, c->im_start)) || (rc = put(p, pcap, &pl, "system\n", 7)) ||
        (rc = put(p, pcap, &pl, instruction, ilen)) || (rc = put_id(e, p, pcap, &pl, c->im_end)) ||
        (rc = put(p, pcap, &pl, &nl, 1)) || (rc = put_id(e, p, pcap, &pl, c->im_start)) ||
        (rc = put(p, pcap, &pl, "user\n", 5)))
        goto done;
    for (int i = 0; i < n_images; i++)
        if ((rc = put_id(e, p, pcap, &pl, c->vision_start)) || (rc = put_id(e, p, pcap, &pl, c->image_pad)) ||
            (rc = put_id(e, p, pcap, &pl, c->vision_end)))
            goto done;
    const size_t text_at = pl;
    if ((rc = put(p, pcap, &pl, text, len)) || (rc = put_id(e, p, pcap, &pl, c->im_end)) ||
        (rc = put(p, pcap, &pl, &nl, 1)) || (rc = put_id(e, p, pcap, &pl, c->im_start)) ||
        (rc = put(p, pcap, &pl, "assistant\n", 10)) || (rc = put_id(e, p, pcap, &pl, c->endoftext)))
        goto done;
    const int room = e->info.max_tokens - visual_tokens + n_images;   /* pads are replaced by the images' tokens */
    if (room < 1) {
        rc = mm_errf(err, errlen, MM_E_TOOBIG, "the images alone take %d of the model's %d tokens", visual_tokens,
                     e->info.max_tokens);
        goto done;
    }
    rc = mm_tokenizer_encode(e->tok, p, pl, 0, ids, MM_MIN(cap, room), &n, err, errlen);
    if (rc == MM_E_TOOBIG && truncate && len > 0) {
        /* prompt without the text, then the text cut to what is left */
        int nt = 0, np = 0;
        memmove(p + text_at, p + text_at + len, pl - text_at - len + 1);
        pl -= len;
        if ((rc = mm_tokenizer_encode(e->tok, p, pl, 0, ids, MM_MIN(cap, room), &np, err, errlen)))
            goto done;
        int32_t *tail = malloc(sizeof(int32_t) * (size_t)np);
        if (!tail) {
            rc = MM_E_NOMEM;
            goto done;
        }
        /* the text goes before the 6 ids after it: <|im_end|> \n <|im_start|> assistant \n <|endoftext|> */
        int after = 0;
        for (int i = np - 1; i >= 0; i--)
            if (ids[i] == c->im_end) {
                after = np - i;
                break;
            }
        memcpy(tail, ids + np - after, sizeof(int32_t) * (size_t)after);
        const int left = MM_MIN(cap, room) - np;
        if (left > 0 && (rc = mm_tokenizer_encode(e->tok, text, len, left, ids + np - after, left, &nt, err, errlen))) {
            free(tail);
            goto done;
        }
        memcpy(ids + np - after + nt, tail, sizeof(int32_t) * (size_t)after);
        free(tail);
        n = np + nt;
    } else if (rc == MM_E_TOOBIG) {
        mm_errf(err, errlen, MM_E_TOOBIG, "input longer than the model's %d tokens", e->info.max_tokens);
    }
    if (rc)
        goto done;
    /* split at the <|image_pad|> tokens: TEXT (IMAGE TEXT) per image */
    int k = 0, start = 0, w = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] != c->image_pad) {
            ids[w++] = ids[i];
            continue;
        }
        seg[k++] = (mm_segment_t){.kind = MM_SEG_TEXT, .ids = ids + start, .n_ids = w - start};
        seg[k++] = (mm_segment_t){.kind = MM_SEG_IMAGE};
        start = w;
    }
    seg[k++] = (mm_segment_t){.kind = MM_SEG_TEXT, .ids = ids + start, .n_ids = w - start};
    if (k != 2 * n_images + 1)
        rc = mm_errf(err, errlen, MM_E_INVALID, "the text contains <|image_pad|> tokens of its own");
    *n_seg = k;
done:
    free(p);
    return rc;
}
