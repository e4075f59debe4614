/* CLIP (Hugging Face transformers' modeling_clip.py): text and vision
 * towers, each a stack of pre-LN transformer blocks, pooled to one token and
 * projected.
 *
 * Read this file next to modeling_clip.py: CLIPTextEmbeddings /
 * CLIPVisionEmbeddings -> CLIPEncoderLayer (layer_norm1, self_attn,
 * residual, layer_norm2, mlp, residual) -> final_layer_norm /
 * post_layernorm on the pooled token -> text_projection /
 * visual_projection.
 *
 * Liberties, all exact:
 *  - q, k and v projections are fused into one (3*dim, dim) GEMM, and fc1's
 *    bias and activation run in that GEMM's epilogue;
 *  - the last block runs its attention query, output projection and MLP
 *    only for the pooled token (EOS / class), the only row anyone reads.
 * Sequences of a text batch are packed back to back (no padding): dense
 * layers see all rows at once, attention runs per (sequence, head) on the
 * nn thread pool.
 *
 * Sections: config, weights, load, run state, forward, the same forward on
 * a backend (mmembed/backend.h), public encode API. */
#include "mmembed/model.h"
#include "mmembed/encoder.h"
#include "mmembed/packcache.h"

#include "mmembed/backend.h"
#include "mmembed/common.h"
#include "mmembed/nn.h"
#include "mmembed/safetensors.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ============================================================ config == */

typedef struct {
    int dim;          /* hidden_size */
    int hidden;       /* intermediate_size (MLP width) */
    int n_layers;     /* num_hidden_layers */
    int n_heads;      /* num_attention_heads */
    int head_dim;     /* dim / n_heads */
    float eps;        /* layer_norm_eps */
    mm_act_t act;     /* hidden_act */
    /* text tower */
    int vocab;        /* vocab_size */
    int max_pos;      /* max_position_embeddings */
    int eos_id;       /* eos_token_id */
    int eos_argmax;   /* legacy configs (eos_token_id == 2): pool at argmax(ids) */
    /* vision tower */
    int image_size;   /* image_size */
    int patch;        /* patch_size */
    int channels;     /* num_channels */
    int n_patches;    /* (image_size / patch)^2 */
    int seq;          /* n_patches + 1 (class token) */
} tower_config_t;

typedef struct {
    int has_text, has_vision;
    int proj_dim;        /* projection_dim */
    tower_config_t text, vision;
} clip_config_t;

/* ============================================================ weights = */

/* Pointers into the read-only weight pack. "packed" matrices are
 * mm_nn_linear blobs in the model's compute dtype, the rest plain f32. */
typedef struct {
    const float *ln1_w, *ln1_b; /* (dim) layer_norm1 */
    const void *qkv_w;          /* (3*dim, dim) packed: q_proj | k_proj | v_proj rows */
    const float *qkv_b;         /* (3*dim) */
    const void *o_w;            /* (dim, dim) packed out_proj */
    const float *o_b;           /* (dim) */
    const float *ln2_w, *ln2_b; /* (dim) layer_norm2 */
    const void *fc1_w;          /* (hidden, dim) packed mlp.fc1 */
    const float *fc1_b;         /* (hidden) */
    const void *fc2_w;          /* (dim, hidden) packed mlp.fc2 */
    const float *fc2_b;         /* (dim) */
} layer_weights_t;

typedef struct {
    const float *tok_emb;           /* (vocab, dim) embeddings.token_embedding */
    const float *pos_emb;           /* (max_pos, dim) embeddings.position_embedding */
    layer_weights_t *layers;        /* (n_layers) encoder.layers.* */
    const float *ln_w, *ln_b;       /* (dim) final_layer_norm */
    const void *proj;               /* (proj_dim, dim) packed text_projection, no bias */
} text_weights_t;

typedef struct {
    const void *patch_w;            /* (dim, channels*patch*patch) packed patch_embedding
                                       conv, each row flattened (c, ky, kx) */
    const float *cls;               /* (dim) embeddings.class_embedding */
    const float *pos_emb;           /* (seq, dim) embeddings.position_embedding */
    const float *pre_w, *pre_b;     /* (dim) pre_layrnorm (sic) */
    layer_weights_t *layers;        /* (n_layers) encoder.layers.* */
    const float *post_w, *post_b;   /* (dim) post_layernorm */
    const void *proj;               /* (proj_dim, dim) packed visual_projection, no bias */
} vision_weights_t;

struct mm_model {
    clip_config_t cfg;
    text_weights_t tw;
    vision_weights_t vw;
    void *pack;          /* the shared read-only f32 block */
    size_t pack_bytes;
    mm_model_info_t info;
    char name[128];
    char dtype[8];
    mm_dtype_t compute;  /* of the dense layers */
    int cached;          /* pack cache: 0 off, 1 mapped, 2 written, -1 not writable */
};

/* ============================================================ config parsing */

static int cfg_int(json_object *o, const char *key, int def, int *out, const char *where,
                   char *err, size_t errlen)
{
    json_object *v;
    *out = def;
    if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return MM_OK;
    if (!json_object_is_type(v, json_type_int))
        return mm_errf(err, errlen, MM_E_INVALID, "config.json: %s.%s is not an integer", where, key);
    int64_t x = json_object_get_int64(v);
    if (x < -1000000000 || x > 1000000000)
        return mm_errf(err, errlen, MM_E_INVALID, "config.json: %s.%s out of range", where, key);
    *out = (int)x;
    return MM_OK;
}

static int cfg_positive(json_object *o, const char *key, int def, int *out, const char *where,
                        char *err, size_t errlen)
{
    int rc = cfg_int(o, key, def, out, where, err, errlen);
    if (rc == MM_OK && *out < 1)
        rc = mm_errf(err, errlen, MM_E_INVALID, "config.json: %s.%s must be positive", where, key);
    return rc;
}

static int cfg_act(json_object *o, const char *def, mm_act_t *out, const char *where,
                   char *err, size_t errlen)
{
    json_object *v;
    const char *s = def;
    if (o && json_object_object_get_ex(o, "hidden_act", &v) && json_object_is_type(v, json_type_string))
        s = json_object_get_string(v);
    if (!strcmp(s, "quick_gelu"))
        *out = MM_ACT_QUICK_GELU;
    else if (!strcmp(s, "gelu"))
        *out = MM_ACT_GELU;
    else
        return mm_errf(err, errlen, MM_E_UNSUPPORTED,
                       "config.json: %s.hidden_act \"%s\" not supported (quick_gelu, gelu)", where, s);
    return MM_OK;
}

/* Common encoder fields; defaults are transformers' CLIPTextConfig /
 * CLIPVisionConfig defaults, which older config.json files rely on. */
static int parse_tower(json_object *o, int text, tower_config_t *c, const char *where,
                       char *err, size_t errlen)
{
    int rc;
    memset(c, 0, sizeof(*c));
    if ((rc = cfg_positive(o, "hidden_size", text ? 512 : 768, &c->dim, where, err, errlen)) ||
        (rc = cfg_positive(o, "intermediate_size", text ? 2048 : 3072, &c->hidden, where, err, errlen)) ||
        (rc = cfg_positive(o, "num_hidden_layers", 12, &c->n_layers, where, err, errlen)) ||
        (rc = cfg_positive(o, "num_attention_heads", text ? 8 : 12, &c->n_heads, where, err, errlen)) ||
        (rc = cfg_act(o, "quick_gelu", &c->act, where, err, errlen)))
        return rc;
    if (c->dim % c->n_heads)
        return mm_errf(err, errlen, MM_E_INVALID, "config.json: %s.hidden_size %d not divisible by %d heads",
                       where, c->dim, c->n_heads);
    c->head_dim = c->dim / c->n_heads;
    json_object *v;
    c->eps = 1e-5f;
    if (o && json_object_object_get_ex(o, "layer_norm_eps", &v) &&
        (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)))
        c->eps = (float)json_object_get_double(v);
    if (!(c->eps > 0.0f))
        return mm_errf(err, errlen, MM_E_INVALID, "config.json: %s.layer_norm_eps must be positive", where);

    if (text) {
        if ((rc = cfg_positive(o, "vocab_size", 49408, &c->vocab, where, err, errlen)) ||
            (rc = cfg_positive(o, "max_position_embeddings", 77, &c->max_pos, where, err, errlen)) ||
            (rc = cfg_int(o, "eos_token_id", 49407, &c->eos_id, where, err, errlen)))
            return rc;
        /* modeling_clip.py: "The legacy configuration has eos_token_id == 2";
         * those checkpoints pool at the largest id, which is EOS in CLIP's
         * vocabulary. */
        c->eos_argmax = c->eos_id == 2;
    } else {
        if ((rc = cfg_positive(o, "image_size", 224, &c->image_size, where, err, errlen)) ||
            (rc = cfg_positive(o, "patch_size", 32, &c->patch, where, err, errlen)) ||
            (rc = cfg_positive(o, "num_channels", 3, &c->channels, where, err, errlen)))
            return rc;
        if (c->image_size % c->patch)
            return mm_errf(err, errlen, MM_E_INVALID, "config.json: %s.image_size %d not a multiple of patch_size %d",
                           where, c->image_size, c->patch);
        int g = c->image_size / c->patch;
        c->n_patches = g * g;
        c->seq = c->n_patches + 1;
    }
    return MM_OK;
}

static const char *json_str(json_object *o, const char *key)
{
    json_object *v;
    if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return NULL;
}

static int parse_config(const char *dir, clip_config_t *c, char *err, size_t errlen)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return mm_errf(err, errlen, MM_E_NOTFOUND, "%s: not found (not a Hugging Face model folder?)", path);
    fclose(f);
    json_object *root = json_object_from_file(path);
    if (!root || !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return mm_errf(err, errlen, MM_E_INVALID, "%s: not a JSON object", path);
    }

    const char *arch = NULL;
    json_object *a;
    if (json_object_object_get_ex(root, "architectures", &a) && json_object_is_type(a, json_type_array) &&
        json_object_array_length(a) > 0)
        arch = json_object_get_string(json_object_array_get_idx(a, 0));
    const char *mt = json_str(root, "model_type");

    memset(c, 0, sizeof(*c));
    if ((arch && !strcmp(arch, "CLIPModel")) || (!arch && mt && !strcmp(mt, "clip"))) {
        c->has_text = c->has_vision = 1;
    } else if ((arch && !strcmp(arch, "CLIPTextModelWithProjection")) ||
               (!arch && mt && !strcmp(mt, "clip_text_model"))) {
        c->has_text = 1;
    } else if ((arch && !strcmp(arch, "CLIPVisionModelWithProjection")) ||
               (!arch && mt && !strcmp(mt, "clip_vision_model"))) {
        c->has_vision = 1;
    } else {
        mm_errf(err, errlen, MM_E_UNSUPPORTED,
                "%s: unsupported architecture \"%s\" (model_type \"%s\"); supported: CLIPModel, "
                "CLIPTextModelWithProjection, CLIPVisionModelWithProjection",
                path, arch ? arch : "?", mt ? mt : "?");
        json_object_put(root);
        return MM_E_UNSUPPORTED;
    }

    int rc = MM_OK;
    json_object *tc = NULL, *vc = NULL;
    if (c->has_text && c->has_vision) {
        json_object_object_get_ex(root, "text_config", &tc);
        json_object_object_get_ex(root, "vision_config", &vc);
        rc = cfg_positive(root, "projection_dim", 512, &c->proj_dim, "config", err, errlen);
    } else {
        /* the *WithProjection configs are the tower config itself */
        tc = vc = root;
        rc = cfg_positive(root, "projection_dim", 512, &c->proj_dim, "config", err, errlen);
    }
    if (rc == MM_OK && c->has_text)
        rc = parse_tower(tc, 1, &c->text, c->has_vision ? "text_config" : "config", err, errlen);
    if (rc == MM_OK && c->has_vision)
        rc = parse_tower(vc, 0, &c->vision, c->has_text ? "vision_config" : "config", err, errlen);
    json_object_put(root);
    return rc;
}

/* ============================================================ load ===== */

#define SHAPE(...) (sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), ((const int64_t[]){__VA_ARGS__})

typedef struct {
    mm_weights_t *w;
    const mm_st_t *st;
    char *err;
    size_t errlen;
    mm_st_dtype_t dtype; /* first seen */
    int mixed;
} loader_t;

static int want(loader_t *L, const float **slot, const char *name, int ndim, const int64_t *shape)
{
    const mm_st_tensor_t *t = mm_st_find(L->st, name);
    if (t && t->dtype != MM_ST_OTHER) {
        if (L->dtype == MM_ST_OTHER)
            L->dtype = t->dtype;
        else if (L->dtype != t->dtype)
            L->mixed = 1;
    }
    return mm_weights_add(L->w, slot, L->st, name, ndim, shape, L->err, L->errlen);
}

/* A weight matrix mm_nn_linear multiplies: stored packed. The tensor is
 * checked against `shape` and read as (shape[0], rest). */
static int want_packed(loader_t *L, const void **slot, const char *name, int ndim, const int64_t *shape)
{
    const mm_st_tensor_t *t = mm_st_find(L->st, name);
    if (t && t->dtype != MM_ST_OTHER) {
        if (L->dtype == MM_ST_OTHER)
            L->dtype = t->dtype;
        else if (L->dtype != t->dtype)
            L->mixed = 1;
    }
    int64_t cols = 1;
    for (int i = 1; i < ndim; i++)
        cols *= shape[i];
    int region = mm_weights_reserve_packed(L->w, (int)shape[0], (int)cols, slot);
    if (region < 0)
        return mm_errf(L->err, L->errlen, MM_E_NOMEM, "out of memory");
    return mm_weights_fill(L->w, region, 0, L->st, name, ndim, shape, L->err, L->errlen);
}

static int load_layers(loader_t *L, const char *prefix, const tower_config_t *c, layer_weights_t *lw)
{
    char n[256];
    const int64_t D = c->dim, H = c->hidden;
    int rc;
    for (int l = 0; l < c->n_layers; l++) {
        layer_weights_t *w = &lw[l];
#define P(s) (snprintf(n, sizeof n, "%s.encoder.layers.%d.%s", prefix, l, s), n)
        if ((rc = want(L, &w->ln1_w, P("layer_norm1.weight"), SHAPE(D))) ||
            (rc = want(L, &w->ln1_b, P("layer_norm1.bias"), SHAPE(D))) ||
            (rc = want_packed(L, &w->o_w, P("self_attn.out_proj.weight"), SHAPE(D, D))) ||
            (rc = want(L, &w->o_b, P("self_attn.out_proj.bias"), SHAPE(D))) ||
            (rc = want(L, &w->ln2_w, P("layer_norm2.weight"), SHAPE(D))) ||
            (rc = want(L, &w->ln2_b, P("layer_norm2.bias"), SHAPE(D))) ||
            (rc = want_packed(L, &w->fc1_w, P("mlp.fc1.weight"), SHAPE(H, D))) ||
            (rc = want(L, &w->fc1_b, P("mlp.fc1.bias"), SHAPE(H))) ||
            (rc = want_packed(L, &w->fc2_w, P("mlp.fc2.weight"), SHAPE(D, H))) ||
            (rc = want(L, &w->fc2_b, P("mlp.fc2.bias"), SHAPE(D))))
            return rc;
        /* fused q|k|v: one GEMM instead of three */
        static const char *qkv[3] = {"q_proj", "k_proj", "v_proj"};
        int rw = mm_weights_reserve_packed(L->w, (int)(3 * D), (int)D, &w->qkv_w);
        int rb = mm_weights_reserve(L->w, (size_t)(3 * D), &w->qkv_b);
        if (rw < 0 || rb < 0)
            return mm_errf(L->err, L->errlen, MM_E_NOMEM, "out of memory");
        for (int i = 0; i < 3; i++) {
            char s[64];
            snprintf(s, sizeof s, "self_attn.%s.weight", qkv[i]);
            if ((rc = mm_weights_fill(L->w, rw, (size_t)(i * D), L->st, P(s), SHAPE(D, D), L->err, L->errlen)))
                return rc;
            snprintf(s, sizeof s, "self_attn.%s.bias", qkv[i]);
            if ((rc = mm_weights_fill(L->w, rb, (size_t)(i * D), L->st, P(s), SHAPE(D), L->err, L->errlen)))
                return rc;
        }
#undef P
    }
    return MM_OK;
}

static int load_text(loader_t *L, mm_model_t *m)
{
    const tower_config_t *c = &m->cfg.text;
    const int64_t D = c->dim;
    text_weights_t *w = &m->tw;
    int rc;
    w->layers = calloc((size_t)c->n_layers, sizeof(*w->layers));
    if (!w->layers)
        return mm_errf(L->err, L->errlen, MM_E_NOMEM, "out of memory");
    if ((rc = want(L, &w->tok_emb, "text_model.embeddings.token_embedding.weight", SHAPE(c->vocab, D))) ||
        (rc = want(L, &w->pos_emb, "text_model.embeddings.position_embedding.weight", SHAPE(c->max_pos, D))) ||
        (rc = load_layers(L, "text_model", c, w->layers)) ||
        (rc = want(L, &w->ln_w, "text_model.final_layer_norm.weight", SHAPE(D))) ||
        (rc = want(L, &w->ln_b, "text_model.final_layer_norm.bias", SHAPE(D))) ||
        (rc = want_packed(L, &w->proj, "text_projection.weight", SHAPE(m->cfg.proj_dim, D))))
        return rc;
    return MM_OK;
}

static int load_vision(loader_t *L, mm_model_t *m)
{
    const tower_config_t *c = &m->cfg.vision;
    const int64_t D = c->dim;
    vision_weights_t *w = &m->vw;
    int rc;
    w->layers = calloc((size_t)c->n_layers, sizeof(*w->layers));
    if (!w->layers)
        return mm_errf(L->err, L->errlen, MM_E_NOMEM, "out of memory");
    /* the conv kernel (dim, C, P, P) read as (dim, C*P*P) is the GEMM
     * operand for patches flattened (c, ky, kx) */
    if ((rc = want_packed(L, &w->patch_w, "vision_model.embeddings.patch_embedding.weight",
                   SHAPE(D, c->channels, c->patch, c->patch))) ||
        (rc = want(L, &w->cls, "vision_model.embeddings.class_embedding", SHAPE(D))) ||
        (rc = want(L, &w->pos_emb, "vision_model.embeddings.position_embedding.weight", SHAPE(c->seq, D))) ||
        (rc = want(L, &w->pre_w, "vision_model.pre_layrnorm.weight", SHAPE(D))) ||
        (rc = want(L, &w->pre_b, "vision_model.pre_layrnorm.bias", SHAPE(D))) ||
        (rc = load_layers(L, "vision_model", c, w->layers)) ||
        (rc = want(L, &w->post_w, "vision_model.post_layernorm.weight", SHAPE(D))) ||
        (rc = want(L, &w->post_b, "vision_model.post_layernorm.bias", SHAPE(D))) ||
        (rc = want_packed(L, &w->proj, "visual_projection.weight", SHAPE(m->cfg.proj_dim, D))))
        return rc;
    return MM_OK;
}

int mm_model_load(const char *dir, mm_model_t **out, char *err, size_t errlen)
{
    return mm_model_load_as(dir, MM_DT_F32, out, err, errlen);
}

int mm_model_load_as(const char *dir, mm_dtype_t dtype, mm_model_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!mm_nn_lin_supported(dtype))
        return mm_errf(err, errlen, MM_E_UNSUPPORTED, "%s: dtype %s is not supported on this CPU", dir,
                       mm_dtype_name(dtype));
    mm_model_t *m = calloc(1, sizeof(*m));
    mm_st_t *st = NULL;
    mm_weights_t *w = NULL;
    int rc;
    if (!m)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    if ((rc = parse_config(dir, &m->cfg, err, errlen)))
        goto fail;
    if ((rc = mm_st_open(dir, &st, err, errlen)))
        goto fail;
    if ((rc = mm_weights_new(&w))) {
        mm_errf(err, errlen, rc, "out of memory");
        goto fail;
    }
    mm_weights_set_dtype(w, dtype);
    m->compute = dtype;
    loader_t L = {.w = w, .st = st, .err = err, .errlen = errlen, .dtype = MM_ST_OTHER};
    if (m->cfg.has_text && (rc = load_text(&L, m)))
        goto fail;
    if (m->cfg.has_vision && (rc = load_vision(&L, m)))
        goto fail;

    int nl;
    const char *nm = mm_path_last(dir, &nl);
    snprintf(m->name, sizeof m->name, "%.*s", nl, nm);

    char label[160];
    snprintf(label, sizeof label, "mmembed-weights:%s", m->name);
    char cache[MM_PACK_PATH_MAX] = "";
    (void)mm_pack_cache_path(dir, "clip", dtype, cache, sizeof cache);
    if ((rc = mm_weights_finish_cached(w, label, cache, &m->pack, &m->pack_bytes, &m->cached, err, errlen)))
        goto fail;
    mm_weights_free(w);
    mm_st_close(st); /* the source mappings are no longer needed */

    snprintf(m->dtype, sizeof m->dtype, "%s", L.mixed ? "mixed" : mm_st_dtype_str(L.dtype));
    mm_model_info_t *i = &m->info;
    i->name = m->name;
    i->arch = "clip";
    i->dim = m->cfg.proj_dim;
    i->has_text = m->cfg.has_text;
    i->has_vision = m->cfg.has_vision;
    i->max_tokens = m->cfg.has_text ? m->cfg.text.max_pos : 0;
    i->vocab_size = m->cfg.has_text ? m->cfg.text.vocab : 0;
    i->image_size = m->cfg.has_vision ? m->cfg.vision.image_size : 0;
    i->channels = m->cfg.has_vision ? m->cfg.vision.channels : 0;
    i->dtype = m->dtype;
    i->compute = mm_dtype_name(m->compute);
    i->pack_cache = m->cached;
    *out = m;
    return MM_OK;

fail:
    mm_weights_free(w);
    mm_st_close(st);
    mm_model_free(m);
    return rc;
}

void mm_model_free(mm_model_t *m)
{
    if (!m)
        return;
    mm_weights_unmap(m->pack, m->pack_bytes);
    free(m->tw.layers);
    free(m->vw.layers);
    free(m);
}

const mm_model_info_t *mm_model_info(const mm_model_t *m)
{
    return &m->info;
}

size_t mm_model_weight_bytes(const mm_model_t *m)
{
    return m->pack_bytes;
}

/* ============================================================ run state */

struct mm_runner {
    const mm_model_t *m;
    int max_text, max_image;  /* sequences / images per forward pass */
    int threads;              /* nn pool size while this runner computes */
    int maxlen;               /* longest sequence (tokens) of either tower */
    /* token-row buffers, rows = max(max_text*max_pos, max_image*seq),
     * width the larger tower's */
    float *x;        /* (rows, dim) residual stream */
    float *h;        /* (rows, dim) normed input / sublayer output */
    float *qkv;      /* (rows, 3*dim) fused projections */
    float *att;      /* (rows, dim) attention output, heads side by side */
    float *mlp;      /* (rows, hidden) */
    float *scores;   /* (threads, maxlen, maxlen) one head's attention matrix per thread */
    float *patches;  /* (max_image*n_patches, channels*patch*patch) im2col */
    /* pooled-row buffers for the last block, batch = max(max_text, max_image) */
    float *pq;       /* (batch, dim) their queries */
    float *patt;     /* (batch, dim) their attention output */
    float *px;       /* (batch, dim) their residual stream */
    float *ph;       /* (batch, dim) */
    float *pmlp;     /* (batch, hidden) */
    int *off;        /* (batch) first row of each sequence */
    int *len;        /* (batch) rows of each sequence */
    int *pool;       /* (batch) pooled position within each sequence */
    const float *kv; /* last block: row 0's key in r->qkv (value = key + dim) */
    int ldkv;        /* its row stride */
    void *arena;
    struct dev_run *dev; /* a runner on a backend (mm_runner_new_dev), else NULL */
};

static void dev_run_free(struct dev_run *g);
static int dev_encode_text(mm_runner_t *r, const int32_t *const *ids, const int *lens, int n, float *out);
static int dev_encode_image(mm_runner_t *r, const float *pixels, int n, float *out);

mm_runner_t *mm_runner_new(const mm_model_t *m, int max_text_batch, int max_image_batch, int threads)
{
    const clip_config_t *c = &m->cfg;
    if ((c->has_text && max_text_batch < 1) || (c->has_vision && max_image_batch < 1))
        return NULL;
    threads = threads < 1 ? 1 : (threads > 64 ? 64 : threads);
    if (!c->has_text)
        max_text_batch = 0;
    if (!c->has_vision)
        max_image_batch = 0;

    size_t rows = 0, dim = 0, hid = 0, maxlen = 0, npatch = 0, kpatch = 0;
    if (c->has_text) {
        rows = MM_MAX(rows, (size_t)max_text_batch * c->text.max_pos);
        dim = MM_MAX(dim, (size_t)c->text.dim);
        hid = MM_MAX(hid, (size_t)c->text.hidden);
        maxlen = MM_MAX(maxlen, (size_t)c->text.max_pos);
    }
    if (c->has_vision) {
        rows = MM_MAX(rows, (size_t)max_image_batch * c->vision.seq);
        dim = MM_MAX(dim, (size_t)c->vision.dim);
        hid = MM_MAX(hid, (size_t)c->vision.hidden);
        maxlen = MM_MAX(maxlen, (size_t)c->vision.seq);
        npatch = (size_t)max_image_batch * c->vision.n_patches;
        kpatch = (size_t)c->vision.channels * c->vision.patch * c->vision.patch;
    }
    size_t batch = (size_t)MM_MAX(max_text_batch, max_image_batch);

    /* one arena, every buffer 64-byte aligned */
    const size_t A = 16; /* floats per 64 bytes */
#define FL(n) (((n) + A - 1) / A * A)
    size_t sizes[] = {
        FL(rows * dim), FL(rows * dim), FL(rows * 3 * dim), FL(rows * dim), FL(rows * hid),
        FL((size_t)threads * maxlen * maxlen), FL(npatch * kpatch),
        FL(batch * dim), FL(batch * dim), FL(batch * dim), FL(batch * dim),
        FL(batch * hid), FL(batch), FL(batch), FL(batch), /* ints are float-sized */
    };
#undef FL
    size_t total = 0;
    for (size_t i = 0; i < MM_ARRAY_LEN(sizes); i++)
        total += sizes[i];

    mm_runner_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->arena = aligned_alloc(64, MM_MAX(total, A) * sizeof(float));
    if (!r->arena) {
        free(r);
        return NULL;
    }
    float *p = r->arena;
    float **bufs[] = {&r->x, &r->h, &r->qkv, &r->att, &r->mlp, &r->scores, &r->patches,
                      &r->pq, &r->patt, &r->px, &r->ph, &r->pmlp};
    size_t i = 0;
    for (; i < MM_ARRAY_LEN(bufs); i++) {
        *bufs[i] = p;
        p += sizes[i];
    }
    r->off = (int *)p; p += sizes[i++];
    r->len = (int *)p; p += sizes[i++];
    r->pool = (int *)p;
    r->m = m;
    r->max_text = max_text_batch;
    r->max_image = max_image_batch;
    r->threads = threads;
    r->maxlen = (int)maxlen;
    mm_nn_set_threads(threads);
    return r;
}

void mm_runner_free(mm_runner_t *r)
{
    if (!r)
        return;
    dev_run_free(r->dev);
    free(r->arena);
    free(r);
}

/* ============================================================ forward == */

/* Attention of n sequences x heads, spread over the nn pool: every (sequence,
 * head) pair is independent. Full layer: queries, keys and values of each
 * sequence's rows in r->qkv (T, 3*dim), output to r->att. Pooled (last
 * layer): one query per sequence in r->pq, keys|values at r->kv (row
 * stride r->ldkv), output to r->patt. */
typedef struct {
    mm_runner_t *r;
    const tower_config_t *c;
    int n, causal, pooled;
} attn_job_t;

static void attn_part(void *arg, int part, int nparts)
{
    const attn_job_t *j = arg;
    mm_runner_t *r = j->r;
    const int D = j->c->dim, H = j->c->n_heads, hd = j->c->head_dim;
    float *scratch = r->scores + (size_t)part * r->maxlen * r->maxlen;
    for (int t = part; t < j->n * H; t += nparts) {
        const int s = t / H, c = (t % H) * hd;
        if (!j->pooled) {
            const float *q = r->qkv + (size_t)r->off[s] * 3 * D + c;
            mm_nn_attention(r->att + (size_t)r->off[s] * D + c, D, q, 3 * D, q + D, 3 * D, q + 2 * D, 3 * D,
                            r->len[s], r->len[s], 1, hd, j->causal, scratch);
        } else {
            /* a causal query at position p sees keys 0..p: pass exactly those */
            const int nk = j->causal ? r->pool[s] + 1 : r->len[s];
            const float *kv = r->kv + (size_t)r->off[s] * r->ldkv + c;
            mm_nn_attention(r->patt + (size_t)s * D + c, D, r->pq + (size_t)s * D + c, D, kv, r->ldkv,
                            kv + D, r->ldkv, 1, nk, 1, hd, 0, scratch);
        }
    }
}

/* One CLIPEncoderLayer over n packed sequences (T rows in r->x), in place. */
static void encoder_layer(mm_runner_t *r, const tower_config_t *c, const layer_weights_t *w,
                          int T, int n, int causal)
{
    const int D = c->dim, H = c->hidden;
    /* residual = x; x = self_attn(layer_norm1(x)); x += residual */
    mm_nn_layer_norm(r->h, r->x, w->ln1_w, w->ln1_b, T, D, c->eps);
    mm_nn_linear(r->qkv, 3 * D, r->h, D, w->qkv_w, w->qkv_b, T, D, 3 * D, MM_ACT_NONE);
    attn_job_t aj = {.r = r, .c = c, .n = n, .causal = causal, .pooled = 0};
    mm_nn_parallel(attn_part, &aj);
    mm_nn_linear_add(r->x, D, r->att, D, w->o_w, w->o_b, T, D, D);
    /* residual = x; x = mlp(layer_norm2(x)); x += residual */
    mm_nn_layer_norm(r->h, r->x, w->ln2_w, w->ln2_b, T, D, c->eps);
    mm_nn_linear(r->mlp, H, r->h, D, w->fc1_w, w->fc1_b, T, D, H, c->act);
    mm_nn_linear_add(r->x, D, r->mlp, H, w->fc2_w, w->fc2_b, T, H, D);
}

/* The last CLIPEncoderLayer, computed only where it is read: keys and values
 * for every row, everything else for row off[s] + pool[s] of each sequence.
 * Leaves those n rows of the layer's output in r->px (n, dim). */
static void encoder_layer_pooled(mm_runner_t *r, const tower_config_t *c, const layer_weights_t *w,
                                 int T, int n, int causal)
{
    const int D = c->dim, H = c->hidden;
    mm_nn_layer_norm(r->h, r->x, w->ln1_w, w->ln1_b, T, D, c->eps);
    /* q|k|v for all rows (k and v are read everywhere), q kept for the
     * pooled rows only: splitting the fused weight would save 1/12 of
     * this layer's products but needs a column slice of the packed W */
    mm_nn_linear(r->qkv, 3 * D, r->h, D, w->qkv_w, w->qkv_b, T, D, 3 * D, MM_ACT_NONE);
    for (int s = 0; s < n; s++)
        memcpy(r->pq + (size_t)s * D, r->qkv + (size_t)(r->off[s] + r->pool[s]) * 3 * D, (size_t)D * sizeof(float));
    r->kv = r->qkv + D;
    r->ldkv = 3 * D;
    attn_job_t aj = {.r = r, .c = c, .n = n, .causal = causal, .pooled = 1};
    mm_nn_parallel(attn_part, &aj);
    for (int s = 0; s < n; s++)
        memcpy(r->px + (size_t)s * D, r->x + (size_t)(r->off[s] + r->pool[s]) * D, (size_t)D * sizeof(float));
    mm_nn_linear_add(r->px, D, r->patt, D, w->o_w, w->o_b, n, D, D);
    mm_nn_layer_norm(r->ph, r->px, w->ln2_w, w->ln2_b, n, D, c->eps);
    mm_nn_linear(r->pmlp, H, r->ph, D, w->fc1_w, w->fc1_b, n, D, H, c->act);
    mm_nn_linear_add(r->px, D, r->pmlp, H, w->fc2_w, w->fc2_b, n, H, D);
}

/* Runs the blocks over the packed rows, then norm + projection of the
 * pooled rows into out (n, proj_dim). */
static void encoder_head(mm_runner_t *r, const tower_config_t *c, const layer_weights_t *layers,
                         const float *ln_w, const float *ln_b, const float *proj,
                         int T, int n, int causal, float *out)
{
    for (int l = 0; l < c->n_layers - 1; l++)
        encoder_layer(r, c, &layers[l], T, n, causal);
    encoder_layer_pooled(r, c, &layers[c->n_layers - 1], T, n, causal);
    mm_nn_layer_norm(r->ph, r->px, ln_w, ln_b, n, c->dim, c->eps);
    mm_nn_linear(out, r->m->cfg.proj_dim, r->ph, c->dim, proj, NULL, n, c->dim, r->m->cfg.proj_dim, MM_ACT_NONE);
}

/* The row a text sequence is pooled at (CLIPTextTransformer.forward): the
 * first eos_id, or with eos_argmax (legacy configs) the largest id; 0 when
 * there is no eos_id. Shared by the CPU and the backend paths. */
static int pooled_pos(const tower_config_t *c, const int32_t *ids, int len)
{
    int p = 0;
    if (c->eos_argmax) {
        for (int i = 1; i < len; i++)
            if (ids[i] > ids[p])
                p = i;
    } else {
        for (int i = 0; i < len; i++)
            if (ids[i] == c->eos_id) {
                p = i;
                break;
            }
    }
    return p;
}

/* CLIPTextTransformer on n (<= max_text) validated sequences. */
static void text_forward(mm_runner_t *r, const int32_t *const *ids, const int *lens, int n, float *out)
{
    const tower_config_t *c = &r->m->cfg.text;
    const text_weights_t *w = &r->m->tw;
    const int D = c->dim;
    int T = 0;
    for (int s = 0; s < n; s++) {
        r->off[s] = T;
        r->len[s] = lens[s];
        T += lens[s];
        r->pool[s] = pooled_pos(c, ids[s], lens[s]);
        /* CLIPTextEmbeddings: token + absolute position */
        for (int i = 0; i < lens[s]; i++) {
            float *x = r->x + (size_t)(r->off[s] + i) * D;
            memcpy(x, w->tok_emb + (size_t)ids[s][i] * D, (size_t)D * sizeof(float));
            mm_nn_add(x, w->pos_emb + (size_t)i * D, (size_t)D);
        }
    }
    encoder_head(r, c, w->layers, w->ln_w, w->ln_b, w->proj, T, n, 1, out);
}

/* CLIPVisionTransformer on n (<= max_image) images. */
static void vision_forward(mm_runner_t *r, const float *pixels, int n, float *out)
{
    const tower_config_t *c = &r->m->cfg.vision;
    const vision_weights_t *w = &r->m->vw;
    const int D = c->dim, S = c->image_size, P = c->patch, G = S / P, C = c->channels;
    const size_t K = (size_t)C * P * P;

    /* im2col: patch (gy, gx) of image b -> row b*G*G + gy*G + gx, (c, ky, kx) */
    for (int b = 0; b < n; b++) {
        const float *img = pixels + (size_t)b * C * S * S;
        for (int gy = 0; gy < G; gy++)
            for (int gx = 0; gx < G; gx++) {
                float *row = r->patches + ((size_t)b * G * G + (size_t)gy * G + gx) * K;
                for (int ch = 0; ch < C; ch++)
                    for (int ky = 0; ky < P; ky++)
                        memcpy(row + ((size_t)ch * P + ky) * P,
                               img + ((size_t)ch * S + (size_t)gy * P + ky) * S + (size_t)gx * P,
                               (size_t)P * sizeof(float));
            }
    }
    /* patch_embedding (stride-P conv, no bias) as one GEMM */
    mm_nn_linear(r->h, D, r->patches, (int)K, w->patch_w, NULL, n * c->n_patches, (int)K, D, MM_ACT_NONE);

    /* CLIPVisionEmbeddings: [class, patches] + position */
    for (int b = 0; b < n; b++) {
        r->off[b] = b * c->seq;
        r->len[b] = c->seq;
        r->pool[b] = 0; /* the class token */
        float *x = r->x + (size_t)b * c->seq * D;
        memcpy(x, w->cls, (size_t)D * sizeof(float));
        memcpy(x + D, r->h + (size_t)b * c->n_patches * D, (size_t)c->n_patches * D * sizeof(float));
        mm_nn_add(x, w->pos_emb, (size_t)c->seq * D);
    }
    const int T = n * c->seq;
    mm_nn_layer_norm(r->x, r->x, w->pre_w, w->pre_b, T, D, c->eps);
    encoder_head(r, c, w->layers, w->post_w, w->post_b, w->proj, T, n, 0, out);
}

/* ============================================================ on a backend */

/* The same forward as above, op for op, queued on a backend
 * (mmembed/backend.h): on the CPU backend it computes the bits of the
 * forward above (tests/unit/test_backend.c holds it to that), on a GPU the
 * same steps run as cuBLAS products and our kernels. The weights structs
 * are the host ones, their pointers in backend memory. */

struct mm_model_dev {
    const mm_model_t *m;
    mm_backend_t *be;
    text_weights_t tw;
    vision_weights_t vw;
};

/* Backend copies of one tower's blocks (src -> dst, n_layers each). */
static int dev_layers(mm_backend_t *be, const tower_config_t *c, const layer_weights_t *src, layer_weights_t *dst)
{
    const size_t D = (size_t)c->dim, H = (size_t)c->hidden;
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights_t *s = &src[l];
        layer_weights_t *d = &dst[l];
#define CONST(f, n) (!(d->f = be->ops->constant(be, s->f, (n))))
#define DENSE(f) (!(d->f = be->ops->dense(be, s->f)))
        if (CONST(ln1_w, D) || CONST(ln1_b, D) || DENSE(qkv_w) || CONST(qkv_b, 3 * D) || DENSE(o_w) ||
            CONST(o_b, D) || CONST(ln2_w, D) || CONST(ln2_b, D) || DENSE(fc1_w) || CONST(fc1_b, H) ||
            DENSE(fc2_w) || CONST(fc2_b, D))
            return MM_ERR;
#undef CONST
#undef DENSE
    }
    return MM_OK;
}

static void dev_layers_free(mm_backend_t *be, const tower_config_t *c, layer_weights_t *lw)
{
    if (!lw)
        return;
    for (int l = 0; l < c->n_layers; l++) {
        layer_weights_t *w = &lw[l];
        be->ops->release(be, w->ln1_w), be->ops->release(be, w->ln1_b), be->ops->release(be, w->qkv_b);
        be->ops->release(be, w->o_b), be->ops->release(be, w->ln2_w), be->ops->release(be, w->ln2_b);
        be->ops->release(be, w->fc1_b), be->ops->release(be, w->fc2_b);
        be->ops->dense_free(be, w->qkv_w), be->ops->dense_free(be, w->o_w);
        be->ops->dense_free(be, w->fc1_w), be->ops->dense_free(be, w->fc2_w);
    }
    free(lw);
}

void mm_model_dev_free(mm_model_dev_t *d)
{
    if (!d)
        return;
    mm_backend_t *be = d->be;
    const clip_config_t *c = &d->m->cfg;
    if (c->has_text) {
        dev_layers_free(be, &c->text, d->tw.layers);
        be->ops->release(be, d->tw.tok_emb), be->ops->release(be, d->tw.pos_emb);
        be->ops->release(be, d->tw.ln_w), be->ops->release(be, d->tw.ln_b);
        be->ops->dense_free(be, d->tw.proj);
    }
    if (c->has_vision) {
        dev_layers_free(be, &c->vision, d->vw.layers);
        be->ops->dense_free(be, d->vw.patch_w);
        be->ops->release(be, d->vw.cls), be->ops->release(be, d->vw.pos_emb);
        be->ops->release(be, d->vw.pre_w), be->ops->release(be, d->vw.pre_b);
        be->ops->release(be, d->vw.post_w), be->ops->release(be, d->vw.post_b);
        be->ops->dense_free(be, d->vw.proj);
    }
    free(d);
}

int mm_model_dev_new(const mm_model_t *m, mm_backend_t *be, mm_model_dev_t **out, char *err, size_t errlen)
{
    *out = NULL;
    const clip_config_t *c = &m->cfg;
    mm_model_dev_t *d = calloc(1, sizeof(*d));
    if (!d)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    d->m = m;
    d->be = be;
    int rc = MM_OK;
    if (c->has_text) {
        const tower_config_t *t = &c->text;
        const text_weights_t *s = &m->tw;
        text_weights_t *w = &d->tw;
        if (!(w->layers = calloc((size_t)t->n_layers, sizeof(*w->layers))) ||
            !(w->tok_emb = be->ops->constant(be, s->tok_emb, (size_t)t->vocab * t->dim)) ||
            !(w->pos_emb = be->ops->constant(be, s->pos_emb, (size_t)t->max_pos * t->dim)) ||
            dev_layers(be, t, s->layers, w->layers) ||
            !(w->ln_w = be->ops->constant(be, s->ln_w, (size_t)t->dim)) ||
            !(w->ln_b = be->ops->constant(be, s->ln_b, (size_t)t->dim)) || !(w->proj = be->ops->dense(be, s->proj)))
            rc = MM_ERR;
    }
    if (rc == MM_OK && c->has_vision) {
        const tower_config_t *v = &c->vision;
        const vision_weights_t *s = &m->vw;
        vision_weights_t *w = &d->vw;
        if (!(w->layers = calloc((size_t)v->n_layers, sizeof(*w->layers))) ||
            !(w->patch_w = be->ops->dense(be, s->patch_w)) ||
            !(w->cls = be->ops->constant(be, s->cls, (size_t)v->dim)) ||
            !(w->pos_emb = be->ops->constant(be, s->pos_emb, (size_t)v->seq * v->dim)) ||
            !(w->pre_w = be->ops->constant(be, s->pre_w, (size_t)v->dim)) ||
            !(w->pre_b = be->ops->constant(be, s->pre_b, (size_t)v->dim)) || dev_layers(be, v, s->layers, w->layers) ||
            !(w->post_w = be->ops->constant(be, s->post_w, (size_t)v->dim)) ||
            !(w->post_b = be->ops->constant(be, s->post_b, (size_t)v->dim)) || !(w->proj = be->ops->dense(be, s->proj)))
            rc = MM_ERR;
    }
    if (rc == MM_OK)
        rc = be->ops->sync(be);
    if (rc) {
        const char *why = be->ops->error(be);
        mm_errf(err, errlen, MM_ERR, "%s: weights onto %s: %s", m->name, be->desc, *why ? why : "out of memory");
        mm_model_dev_free(d);
        return MM_ERR;
    }
    *out = d;
    return MM_OK;
}

/* Per-runner state on the backend. Index arrays (ints, backend memory),
 * each tower laid out as: ia (rows) ib (rows), then per sequence off, len,
 * pooled-query offset (s), pooled-query count (1), pooled key count, pooled
 * row (off + pool). The text block is written per batch through a host
 * staging copy; the vision block depends only on the geometry and is
 * written once. */
enum { I_OFF, I_LEN, I_PQOFF, I_PQLEN, I_PKLEN, I_PROW, I_COUNT };

typedef struct {
    int *ia, *ib, *seq[I_COUNT];
} dev_index_t;

struct dev_run {
    const mm_model_dev_t *d;
    mm_backend_t *be;
    /* (rows, width) like the host runner's buffers, in backend memory */
    float *x, *h, *qkv, *att, *mlp;
    float *pix;      /* (max_image, channels*size*size) uploaded pixels */
    float *patches;  /* (max_image*n_patches, channels*patch*patch) */
    float *vt;       /* (1 + max_image*n_patches, dim): class embedding, then patch embeddings */
    float *pq, *patt, *px, *ph, *pmlp; /* (batch, dim | hidden) pooled rows of the last block */
    float *out;      /* (batch, proj_dim) */
    int *ints;       /* backend: text index block, then vision's */
    int *host;       /* host staging of the text block */
    size_t n_text_ints;
    dev_index_t ti, vi, th; /* text and vision (backend), text (host) */
};

static void dev_run_free(struct dev_run *r)
{
    if (!r)
        return;
    mm_backend_t *be = r->be;
    float *bufs[] = {r->x, r->h, r->qkv, r->att, r->mlp, r->pix, r->patches, r->vt,
                     r->pq, r->patt, r->px, r->ph, r->pmlp, r->out};
    for (size_t i = 0; i < MM_ARRAY_LEN(bufs); i++)
        be->ops->free(be, bufs[i]);
    be->ops->free(be, r->ints);
    be->ops->host_free(be, r->host);
    free(r);
}

/* Points an index layout at base for `rows` token rows, `batch` sequences;
 * returns the ints it spans. */
static size_t index_at(dev_index_t *x, int *base, size_t rows, size_t batch)
{
    x->ia = base;
    x->ib = base + rows;
    for (int i = 0; i < I_COUNT; i++)
        x->seq[i] = base + 2 * rows + (size_t)i * batch;
    return 2 * rows + I_COUNT * batch;
}

mm_runner_t *mm_runner_new_dev(const mm_model_dev_t *d, int max_text_batch, int max_image_batch)
{
    const clip_config_t *c = &d->m->cfg;
    mm_backend_t *be = d->be;
    if ((c->has_text && max_text_batch < 1) || (c->has_vision && max_image_batch < 1))
        return NULL;
    if (!c->has_text)
        max_text_batch = 0;
    if (!c->has_vision)
        max_image_batch = 0;
    size_t trows = (size_t)max_text_batch * (c->has_text ? c->text.max_pos : 0);
    size_t vrows = (size_t)max_image_batch * (c->has_vision ? c->vision.seq : 0);
    size_t rows = MM_MAX(trows, vrows), dim = 0, hid = 0, npatch = 0, kpatch = 0, npix = 0;
    if (c->has_text) {
        dim = MM_MAX(dim, (size_t)c->text.dim);
        hid = MM_MAX(hid, (size_t)c->text.hidden);
    }
    if (c->has_vision) {
        const tower_config_t *v = &c->vision;
        dim = MM_MAX(dim, (size_t)v->dim);
        hid = MM_MAX(hid, (size_t)v->hidden);
        npatch = (size_t)max_image_batch * v->n_patches;
        kpatch = (size_t)v->channels * v->patch * v->patch;
        npix = (size_t)max_image_batch * v->channels * v->image_size * v->image_size;
    }
    size_t batch = (size_t)MM_MAX(max_text_batch, max_image_batch);

    mm_runner_t *r = calloc(1, sizeof(*r));
    struct dev_run *g = calloc(1, sizeof(*g));
    if (!r || !g) {
        free(r);
        free(g);
        return NULL;
    }
    r->m = d->m;
    r->max_text = max_text_batch;
    r->max_image = max_image_batch;
    r->threads = 1;
    r->dev = g;
    g->d = d;
    g->be = be;
#define A(f, n) (!(g->f = be->ops->alloc(be, (size_t)(n) * sizeof(float))))
    int bad = A(x, rows * dim) || A(h, rows * dim) || A(qkv, rows * 3 * dim) || A(att, rows * dim) ||
              A(mlp, rows * hid) || A(pix, npix) || A(patches, npatch * kpatch) || A(vt, (1 + npatch) * dim) ||
              A(pq, batch * dim) || A(patt, batch * dim) || A(px, batch * dim) || A(ph, batch * dim) ||
              A(pmlp, batch * hid) || A(out, batch * c->proj_dim);
#undef A
    g->n_text_ints = 2 * trows + I_COUNT * (size_t)max_text_batch;
    size_t n_vision_ints = 2 * vrows + I_COUNT * (size_t)max_image_batch;
    if (!bad && (!(g->ints = be->ops->alloc(be, (g->n_text_ints + n_vision_ints) * sizeof(int))) ||
                 !(g->host = be->ops->host_alloc(be, MM_MAX(g->n_text_ints, n_vision_ints) * sizeof(int)))))
        bad = 1;
    if (bad) {
        mm_runner_free(r);
        return NULL;
    }
    index_at(&g->ti, g->ints, trows, (size_t)max_text_batch);
    index_at(&g->vi, g->ints + g->n_text_ints, vrows, (size_t)max_image_batch);
    index_at(&g->th, g->host, trows, (size_t)max_text_batch);

    if (c->has_vision) { /* the vision indices, once: they depend only on the geometry */
        const tower_config_t *v = &c->vision;
        dev_index_t h;
        index_at(&h, g->host, vrows, (size_t)max_image_batch);
        for (int b = 0; b < max_image_batch; b++) {
            const int o = b * v->seq;
            for (int i = 0; i < v->seq; i++) {
                h.ia[o + i] = i == 0 ? 0 : 1 + b * v->n_patches + i - 1; /* row of vt */
                h.ib[o + i] = i;                                          /* position */
            }
            h.seq[I_OFF][b] = o, h.seq[I_LEN][b] = v->seq;
            h.seq[I_PQOFF][b] = b, h.seq[I_PQLEN][b] = 1, h.seq[I_PKLEN][b] = v->seq;
            h.seq[I_PROW][b] = o; /* the class token */
        }
        be->ops->upload(be, g->vi.ia, g->host, n_vision_ints * sizeof(int));
        be->ops->upload(be, g->vt, d->m->vw.cls, (size_t)v->dim * sizeof(float)); /* row 0: class embedding */
        if (be->ops->sync(be)) {
            mm_runner_free(r);
            return NULL;
        }
    }
    return r;
}

/* encoder_layer on the backend: n packed sequences, T rows in g->x. */
static void dev_layer(struct dev_run *g, const tower_config_t *c, const layer_weights_t *w, int T,
                      const mm_seqs_t *full, int causal)
{
    mm_backend_t *be = g->be;
    const mm_backend_ops_t *o = be->ops;
    const int D = c->dim, H = c->hidden;
    o->layer_norm(be, g->h, g->x, w->ln1_w, w->ln1_b, T, D, c->eps);
    o->linear(be, g->qkv, 3 * D, g->h, D, w->qkv_w, w->qkv_b, T, D, 3 * D, MM_ACT_NONE, 0);
    o->attention(be, g->att, D, g->qkv, 3 * D, g->qkv + D, 3 * D, g->qkv + 2 * D, 3 * D, full, c->n_heads,
                 c->head_dim, causal);
    o->linear(be, g->x, D, g->att, D, w->o_w, w->o_b, T, D, D, MM_ACT_NONE, 1);
    o->layer_norm(be, g->h, g->x, w->ln2_w, w->ln2_b, T, D, c->eps);
    o->linear(be, g->mlp, H, g->h, D, w->fc1_w, w->fc1_b, T, D, H, c->act, 0);
    o->linear(be, g->x, D, g->mlp, H, w->fc2_w, w->fc2_b, T, H, D, MM_ACT_NONE, 1);
}

/* encoder_layer_pooled on the backend: leaves the n pooled rows in g->px. */
static void dev_layer_pooled(struct dev_run *g, const tower_config_t *c, const layer_weights_t *w, int T, int n,
                             const mm_seqs_t *pooled, const int *prow)
{
    mm_backend_t *be = g->be;
    const mm_backend_ops_t *o = be->ops;
    const int D = c->dim, H = c->hidden;
    o->layer_norm(be, g->h, g->x, w->ln1_w, w->ln1_b, T, D, c->eps);
    o->linear(be, g->qkv, 3 * D, g->h, D, w->qkv_w, w->qkv_b, T, D, 3 * D, MM_ACT_NONE, 0);
    o->gather_add(be, g->pq, D, g->qkv, 3 * D, prow, NULL, 0, NULL, n, D);
    o->attention(be, g->patt, D, g->pq, D, g->qkv + D, 3 * D, g->qkv + 2 * D, 3 * D, pooled, c->n_heads,
                 c->head_dim, 0);
    o->gather_add(be, g->px, D, g->x, D, prow, NULL, 0, NULL, n, D);
    o->linear(be, g->px, D, g->patt, D, w->o_w, w->o_b, n, D, D, MM_ACT_NONE, 1);
    o->layer_norm(be, g->ph, g->px, w->ln2_w, w->ln2_b, n, D, c->eps);
    o->linear(be, g->pmlp, H, g->ph, D, w->fc1_w, w->fc1_b, n, D, H, c->act, 0);
    o->linear(be, g->px, D, g->pmlp, H, w->fc2_w, w->fc2_b, n, H, D, MM_ACT_NONE, 1);
}

/* encoder_head on the backend, then the n projected rows downloaded to out. */
static int dev_head(struct dev_run *g, const tower_config_t *c, const layer_weights_t *layers, const float *ln_w,
                    const float *ln_b, const void *proj, int T, int n, const dev_index_t *ix, int max_len, int causal,
                    float *out)
{
    mm_backend_t *be = g->be;
    const int P = g->d->m->cfg.proj_dim;
    const mm_seqs_t full = {.qoff = ix->seq[I_OFF], .qlen = ix->seq[I_LEN], .koff = ix->seq[I_OFF],
                            .klen = ix->seq[I_LEN], .n = n, .max_q = max_len, .max_k = max_len};
    const mm_seqs_t pooled = {.qoff = ix->seq[I_PQOFF], .qlen = ix->seq[I_PQLEN], .koff = ix->seq[I_OFF],
                              .klen = ix->seq[I_PKLEN], .n = n, .max_q = 1, .max_k = max_len};
    for (int l = 0; l < c->n_layers - 1; l++)
        dev_layer(g, c, &layers[l], T, &full, causal);
    dev_layer_pooled(g, c, &layers[c->n_layers - 1], T, n, &pooled, ix->seq[I_PROW]);
    be->ops->layer_norm(be, g->ph, g->px, ln_w, ln_b, n, c->dim, c->eps);
    be->ops->linear(be, g->out, P, g->ph, c->dim, proj, NULL, n, c->dim, P, MM_ACT_NONE, 0);
    return be->ops->download(be, out, g->out, (size_t)n * P * sizeof(float));
}

/* text_forward on the backend (n <= max_text validated sequences). */
static int dev_text_forward(mm_runner_t *r, const int32_t *const *ids, const int *lens, int n, float *out)
{
    struct dev_run *g = r->dev;
    const tower_config_t *c = &r->m->cfg.text;
    const text_weights_t *w = &g->d->tw;
    const dev_index_t *h = &g->th;
    int T = 0, max_len = 1;
    for (int s = 0; s < n; s++) {
        const int p = pooled_pos(c, ids[s], lens[s]);
        h->seq[I_OFF][s] = T, h->seq[I_LEN][s] = lens[s];
        h->seq[I_PQOFF][s] = s, h->seq[I_PQLEN][s] = 1, h->seq[I_PKLEN][s] = p + 1; /* causal: keys 0..p */
        h->seq[I_PROW][s] = T + p;
        for (int i = 0; i < lens[s]; i++) {
            h->ia[T + i] = ids[s][i];
            h->ib[T + i] = i;
        }
        T += lens[s];
        max_len = MM_MAX(max_len, lens[s]);
    }
    mm_backend_t *be = g->be;
    be->ops->upload(be, g->ints, g->host, g->n_text_ints * sizeof(int));
    /* CLIPTextEmbeddings: token + absolute position */
    be->ops->gather_add(be, g->x, c->dim, w->tok_emb, c->dim, g->ti.ia, w->pos_emb, c->dim, g->ti.ib, T, c->dim);
    return dev_head(g, c, w->layers, w->ln_w, w->ln_b, w->proj, T, n, &g->ti, max_len, 1, out);
}

/* vision_forward on the backend (n <= max_image images). */
static int dev_vision_forward(mm_runner_t *r, const float *pixels, int n, float *out)
{
    struct dev_run *g = r->dev;
    const tower_config_t *c = &r->m->cfg.vision;
    const vision_weights_t *w = &g->d->vw;
    mm_backend_t *be = g->be;
    const int D = c->dim, S = c->image_size, C = c->channels, K = C * c->patch * c->patch;
    be->ops->upload(be, g->pix, pixels, (size_t)n * C * S * S * sizeof(float));
    be->ops->patchify(be, g->patches, g->pix, n, C, S, c->patch);
    /* patch_embedding as one GEMM, into the rows after the class embedding */
    be->ops->linear(be, g->vt + D, D, g->patches, K, w->patch_w, NULL, n * c->n_patches, K, D, MM_ACT_NONE, 0);
    /* CLIPVisionEmbeddings: [class, patches] + position */
    const int T = n * c->seq;
    be->ops->gather_add(be, g->x, D, g->vt, D, g->vi.ia, w->pos_emb, D, g->vi.ib, T, D);
    be->ops->layer_norm(be, g->x, g->x, w->pre_w, w->pre_b, T, D, c->eps);
    return dev_head(g, c, w->layers, w->post_w, w->post_b, w->proj, T, n, &g->vi, c->seq, 0, out);
}

static int dev_encode_text(mm_runner_t *r, const int32_t *const *ids, const int *lens, int n, float *out)
{
    const int P = r->m->cfg.proj_dim;
    for (int s = 0; s < n; s += r->max_text) {
        int k = MM_MIN(r->max_text, n - s), rc = dev_text_forward(r, ids + s, lens + s, k, out + (size_t)s * P);
        if (rc)
            return rc;
    }
    return MM_OK;
}

static int dev_encode_image(mm_runner_t *r, const float *pixels, int n, float *out)
{
    const tower_config_t *v = &r->m->cfg.vision;
    const size_t per = (size_t)v->channels * v->image_size * v->image_size;
    const int P = r->m->cfg.proj_dim;
    for (int s = 0; s < n; s += r->max_image) {
        int k = MM_MIN(r->max_image, n - s), rc = dev_vision_forward(r, pixels + s * per, k, out + (size_t)s * P);
        if (rc)
            return rc;
    }
    return MM_OK;
}

/* ============================================================ encode API */

int mm_model_encode_text(mm_runner_t *r, const int32_t *const *ids, const int *lens, int n, float *out)
{
    const clip_config_t *c = &r->m->cfg;
    if (!c->has_text)
        return MM_E_UNSUPPORTED;
    if (n < 0)
        return MM_E_INVALID;
    for (int s = 0; s < n; s++) {
        if (lens[s] < 1)
            return MM_E_INVALID;
        if (lens[s] > c->text.max_pos)
            return MM_E_TOOBIG;
        for (int i = 0; i < lens[s]; i++)
            if (ids[s][i] < 0 || ids[s][i] >= c->text.vocab)
                return MM_E_INVALID;
    }
    if (r->dev)
        return dev_encode_text(r, ids, lens, n, out);
    if (mm_nn_threads() != r->threads)
        mm_nn_set_threads(r->threads);
    for (int s = 0; s < n; s += r->max_text) {
        int k = MM_MIN(r->max_text, n - s);
        text_forward(r, ids + s, lens + s, k, out + (size_t)s * c->proj_dim);
    }
    return MM_OK;
}

int mm_model_encode_image(mm_runner_t *r, const float *pixels, int n, float *out)
{
    const clip_config_t *c = &r->m->cfg;
    if (!c->has_vision)
        return MM_E_UNSUPPORTED;
    if (n < 0)
        return MM_E_INVALID;
    const size_t per = (size_t)c->vision.channels * c->vision.image_size * c->vision.image_size;
    if (r->dev)
        return dev_encode_image(r, pixels, n, out);
    if (mm_nn_threads() != r->threads)
        mm_nn_set_threads(r->threads);
    for (int s = 0; s < n; s += r->max_image) {
        int k = MM_MIN(r->max_image, n - s);
        vision_forward(r, pixels + (size_t)s * per, k, out + (size_t)s * c->proj_dim);
    }
    return MM_OK;
}

/* ---------------------------------------------------------------- encoder interface */

static int clip_load(const char *dir, mm_dtype_t dt, void **model, char *err, size_t errlen)
{
    mm_model_t *m;
    int rc = mm_model_load_as(dir, dt, &m, err, errlen);
    *model = rc ? NULL : m;
    return rc;
}

static void clip_free(void *model)
{
    mm_model_free(model);
}

static void clip_info(const void *model, mm_enc_info_t *o)
{
    const mm_model_info_t *mi = mm_model_info(model);
    *o = (mm_enc_info_t){.arch = mi->arch, .dim = mi->dim, .max_tokens = mi->max_tokens,
                         .vocab_size = mi->vocab_size, .has_text = mi->has_text, .has_vision = mi->has_vision,
                         .takes_ids = mi->has_text, .append_eos_id = -1, .image_size = mi->image_size,
                         .channels = mi->channels, .dtype = mi->dtype, .compute = mi->compute,
                         .pack_cache = mi->pack_cache, .weight_bytes = mm_model_weight_bytes(model)};
}

static void *clip_runner_new(const void *model, int max_batch, int max_images, int threads)
{
    return mm_runner_new(model, max_batch, max_images, threads);
}

static void clip_runner_free(void *r)
{
    mm_runner_free(r);
}

/* Runs of text inputs go to the text tower, runs of images (contiguous in
 * memory, as callers lay them out) to the vision tower. */
static int clip_encode(const void *model, void *runner, const mm_input_t *in, int n, float *out)
{
    const mm_model_info_t *mi = mm_model_info(model);
    const size_t per = (size_t)mi->channels * mi->image_size * mi->image_size;
    const int32_t *ids[64];
    int lens[64];
    for (int i = 0; i < n;) {
        if (in[i].n_seg != 1) return MM_E_UNSUPPORTED;   /* one segment per input */
        const mm_segment_t *s = in[i].seg;
        int k = 1, rc;
        if (s->kind == MM_SEG_TEXT) {
            ids[0] = s->ids;
            lens[0] = s->n_ids;
            while (i + k < n && k < 64 && in[i + k].n_seg == 1 && in[i + k].seg->kind == MM_SEG_TEXT) {
                ids[k] = in[i + k].seg->ids;
                lens[k] = in[i + k].seg->n_ids;
                k++;
            }
            rc = mm_model_encode_text(runner, ids, lens, k, out + (size_t)i * mi->dim);
        } else if (s->kind == MM_SEG_IMAGE) {
            if (s->channels != mi->channels || s->height != mi->image_size || s->width != mi->image_size)
                return MM_E_INVALID;
            while (i + k < n && in[i + k].n_seg == 1 && in[i + k].seg->kind == MM_SEG_IMAGE &&
                   in[i + k].seg->pixels == s->pixels + (size_t)k * per && in[i + k].seg->height == s->height &&
                   in[i + k].seg->width == s->width && in[i + k].seg->channels == s->channels)
                k++;
            rc = mm_model_encode_image(runner, s->pixels, k, out + (size_t)i * mi->dim);
        } else {
            return MM_E_INVALID;
        }
        if (rc) return rc;
        i += k;
    }
    return MM_OK;
}

/* The encoder interface's backend hooks: the section "on a backend" above. */
static int clip_dev_new(const void *model, mm_backend_t *be, void **dev, char *err, size_t errlen)
{
    mm_model_dev_t *d = NULL;
    int rc = mm_model_dev_new(model, be, &d, err, errlen);
    *dev = d;
    return rc;
}

static void clip_dev_free(void *dev)
{
    mm_model_dev_free(dev);
}

static void *clip_dev_runner_new(const void *dev, int max_batch, int max_images)
{
    return mm_runner_new_dev(dev, max_batch, max_images);
}

const mm_encoder_ops_t mm_enc_clip = {
    .name = "clip", .load = clip_load, .free = clip_free, .info = clip_info, .runner_new = clip_runner_new,
    .runner_free = clip_runner_free, .encode = clip_encode,
    .dev_new = clip_dev_new, .dev_free = clip_dev_free, .dev_runner_new = clip_dev_runner_new,
};
