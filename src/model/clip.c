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
#include "mmembed/hfconfig.h"
#include "mmembed/nn.h"
#include "mmembed/safetensors.h"
#include "mmembed/textops.h"

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
    const float *tok_emb;           /* (vocab, dim) embeddings.token_embedding; NULL when tok_i8 */
    const void *tok_i8;             /* q4 packs: the same table as int8 rows (vocab, dim), */
    const float *tok_scale;         /* (vocab) each times its scale (issue 20: tables stay 8-bit) */
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

static int cfg_act(const mm_cfg_t *o, const char *def, mm_act_t *out, char *err, size_t errlen)
{
    const char *s = mm_cfg_str(o, "hidden_act");
    if (!s)
        s = def;
    if (!strcmp(s, "quick_gelu"))
        *out = MM_ACT_QUICK_GELU;
    else if (!strcmp(s, "gelu"))
        *out = MM_ACT_GELU;
    else
        return mm_cfg_errf(o, "hidden_act", err, errlen, MM_E_UNSUPPORTED, "\"%s\" not supported (quick_gelu, gelu)",
                           s);
    return MM_OK;
}

/* Common encoder fields; defaults are transformers' CLIPTextConfig /
 * CLIPVisionConfig defaults, which older config.json files rely on. */
static int parse_tower(const mm_cfg_t *o, int text, tower_config_t *c, char *err, size_t errlen)
{
    int rc;
    double eps;
    memset(c, 0, sizeof(*c));
    if ((rc = mm_cfg_pos(o, "hidden_size", text ? 512 : 768, &c->dim, err, errlen)) ||
        (rc = mm_cfg_pos(o, "intermediate_size", text ? 2048 : 3072, &c->hidden, err, errlen)) ||
        (rc = mm_cfg_pos(o, "num_hidden_layers", 12, &c->n_layers, err, errlen)) ||
        (rc = mm_cfg_pos(o, "num_attention_heads", text ? 8 : 12, &c->n_heads, err, errlen)) ||
        (rc = cfg_act(o, "quick_gelu", &c->act, err, errlen)) ||
        (rc = mm_cfg_num(o, "layer_norm_eps", 1e-5, &eps, err, errlen)))
        return rc;
    if (c->dim % c->n_heads)
        return mm_cfg_errf(o, "hidden_size", err, errlen, MM_E_INVALID, "%d not divisible by %d heads", c->dim,
                           c->n_heads);
    c->head_dim = c->dim / c->n_heads;
    c->eps = (float)eps;

    if (text) {
        if ((rc = mm_cfg_pos(o, "vocab_size", 49408, &c->vocab, err, errlen)) ||
            (rc = mm_cfg_pos(o, "max_position_embeddings", 77, &c->max_pos, err, errlen)) ||
            (rc = mm_cfg_int(o, "eos_token_id", 49407, -1000000000, 1000000000, &c->eos_id, err, errlen)))
            return rc;
        /* modeling_clip.py: "The legacy configuration has eos_token_id == 2";
         * those checkpoints pool at the largest id, which is EOS in CLIP's
         * vocabulary. */
        c->eos_argmax = c->eos_id == 2;
    } else {
        if ((rc = mm_cfg_pos(o, "image_size", 224, &c->image_size, err, errlen)) ||
            (rc = mm_cfg_pos(o, "patch_size", 32, &c->patch, err, errlen)) ||
            (rc = mm_cfg_pos(o, "num_channels", 3, &c->channels, err, errlen)))
            return rc;
        if (c->image_size % c->patch)
            return mm_cfg_errf(o, "image_size", err, errlen, MM_E_INVALID, "%d not a multiple of patch_size %d",
                               c->image_size, c->patch);
        int g = c->image_size / c->patch;
        c->n_patches = g * g;
        c->seq = c->n_patches + 1;
    }
    return MM_OK;
}

static int parse_config(const mm_cfg_t *root, clip_config_t *c, char *err, size_t errlen)
{
    const char *arch = mm_cfg_str0(root, "architectures");
    const char *mt = mm_cfg_str(root, "model_type");

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
        return mm_cfg_errf(root, "architectures", err, errlen, MM_E_UNSUPPORTED,
                           "unsupported architecture \"%s\" (model_type \"%s\"); supported: CLIPModel, "
                           "CLIPTextModelWithProjection, CLIPVisionModelWithProjection",
                           arch ? arch : "?", mt ? mt : "?");
    }

    /* a CLIPModel nests its towers; the *WithProjection configs are the
     * tower config itself */
    mm_cfg_t tc = *root, vc = *root;
    if (c->has_text && c->has_vision) {
        mm_cfg_sub(root, "text_config", &tc);
        mm_cfg_sub(root, "vision_config", &vc);
    }
    int rc = mm_cfg_pos(root, "projection_dim", 512, &c->proj_dim, err, errlen);
    if (rc == MM_OK && c->has_text)
        rc = parse_tower(&tc, 1, &c->text, err, errlen);
    if (rc == MM_OK && c->has_vision)
        rc = parse_tower(&vc, 0, &c->vision, err, errlen);
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

/* Notes the checkpoint dtype of tensor `name` (info's dtype: one, or mixed). */
static void seen(loader_t *L, const char *name)
{
    const mm_st_tensor_t *t = mm_st_find(L->st, name);
    if (t && t->dtype != MM_ST_OTHER) {
        if (L->dtype == MM_ST_OTHER)
            L->dtype = t->dtype;
        else if (L->dtype != t->dtype)
            L->mixed = 1;
    }
}

static int want(loader_t *L, const float **slot, const char *name, int ndim, const int64_t *shape)
{
    seen(L, name);
    return mm_weights_add(L->w, slot, L->st, name, ndim, shape, L->err, L->errlen);
}

/* A weight matrix mm_nn_linear multiplies: stored packed. The tensor is
 * checked against `shape` and read as (shape[0], rest). */
static int want_packed(loader_t *L, const void **slot, const char *name, int ndim, const int64_t *shape)
{
    seen(L, name);
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
    const mm_dtype_t dt = mm_weights_dtype(L->w);
    const int text = !strcmp(prefix, "text_model");
    int rc;
    for (int l = 0; l < c->n_layers; l++) {
        layer_weights_t *w = &lw[l];
        mm_weights_set_dtype(L->w, text ? mm_encoder_text_dtype(dt, l, c->n_layers) : dt);
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
    mm_weights_set_dtype(L->w, dt);
    return MM_OK;
}

static int load_text(loader_t *L, mm_model_t *m)
{
    const tower_config_t *c = &m->cfg.text;
    const int64_t D = c->dim;
    text_weights_t *w = &m->tw;
    const mm_dtype_t dt = mm_weights_dtype(L->w);
    int rc;
    w->layers = calloc((size_t)c->n_layers, sizeof(*w->layers));
    if (!w->layers)
        return mm_errf(L->err, L->errlen, MM_E_NOMEM, "out of memory");
    static const char tok[] = "text_model.embeddings.token_embedding.weight";
    if ((rc = dt == MM_DT_Q4 ? (seen(L, tok), mm_weights_add_i8rows(L->w, &w->tok_i8, &w->tok_scale, L->st, tok,
                                                                    c->vocab, D, L->err, L->errlen))
                             : want(L, &w->tok_emb, tok, SHAPE(c->vocab, D))) ||
        (rc = want(L, &w->pos_emb, "text_model.embeddings.position_embedding.weight", SHAPE(c->max_pos, D))) ||
        (rc = load_layers(L, "text_model", c, w->layers)) ||
        (rc = want(L, &w->ln_w, "text_model.final_layer_norm.weight", SHAPE(D))) ||
        (rc = want(L, &w->ln_b, "text_model.final_layer_norm.bias", SHAPE(D))) ||
        (mm_weights_set_dtype(L->w, mm_encoder_text_dtype(dt, -1, c->n_layers)), 0) ||
        (rc = want_packed(L, &w->proj, "text_projection.weight", SHAPE(m->cfg.proj_dim, D))))
        return rc;
    mm_weights_set_dtype(L->w, dt);
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
    void *m;
    int rc = mm_encoder_load_ops(dir, &mm_enc_clip, dtype, &m, err, errlen);
    *out = rc ? NULL : m;
    return rc;
}

/* The load behind both doors (mm_model_load_as and the encoder ops), on
 * config.json already read. */
static int load_cfg(const char *dir, const mm_cfg_t *cfg, mm_dtype_t dtype, mm_model_t **out, char *err,
                    size_t errlen)
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
    if ((rc = parse_config(cfg, &m->cfg, err, errlen)))
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
    int threads;              /* the CPU backend's pool size (mm_runner_new) */
    struct dev_run *dev;      /* the forward's state on its backend */
    mm_model_dev_t *own;      /* the weights on that backend when the runner owns them */
    mm_backend_t *own_be;     /* the backend when the runner opened it (mm_runner_new: the CPU) */
};

static void dev_run_free(struct dev_run *g);
static int dev_encode_text(mm_runner_t *r, const int32_t *const *ids, const int *lens, int n, float *out);
static int dev_encode_image(mm_runner_t *r, const float *pixels, int n, float *out);

/* The CPU runner is the backend forward on a CPU backend of its own, whose
 * "device copy" of the weights is the shared pack itself (constant and
 * dense hand back the host pointers): one forward for every device. */
mm_runner_t *mm_runner_new(const mm_model_t *m, int max_text_batch, int max_image_batch, int threads)
{
    char err[MM_ERRLEN];
    mm_backend_t *be;
    mm_model_dev_t *d;
    threads = threads < 1 ? 1 : (threads > 64 ? 64 : threads);
    if (mm_backend_open("cpu", threads, NULL, &be, err, sizeof err))
        return NULL;
    if (mm_model_dev_new(m, be, &d, err, sizeof err)) {
        mm_backend_close(be);
        return NULL;
    }
    mm_runner_t *r = mm_runner_new_dev(d, max_text_batch, max_image_batch);
    if (!r) {
        mm_model_dev_free(d);
        mm_backend_close(be);
        return NULL;
    }
    r->own = d;
    r->own_be = be;
    r->threads = threads;
    mm_nn_set_threads(threads);
    return r;
}

void mm_runner_free(mm_runner_t *r)
{
    if (!r)
        return;
    dev_run_free(r->dev);
    mm_model_dev_free(r->own);
    mm_backend_close(r->own_be);
    free(r);
}

/* ============================================================ forward == */

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
        be->ops->release(be, d->tw.tok_emb), be->ops->release(be, d->tw.pos_emb);   /* tok_i8: the pack's */
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

/* The token table on be: f32 as the pack holds it; a q4 pack's int8 rows
 * in place where be has gather_add_i8 (host memory), else dequantized
 * into an f32 constant, the same rows gather_add_i8 would give. */
static int dev_tokens(mm_backend_t *be, const tower_config_t *t, const text_weights_t *s, text_weights_t *w)
{
    const size_t V = (size_t)t->vocab, D = (size_t)t->dim;
    if (!s->tok_i8) {
        w->tok_emb = be->ops->constant(be, s->tok_emb, V * D);
        return w->tok_emb ? MM_OK : MM_E_NOMEM;
    }
    if (be->ops->gather_add_i8) {
        w->tok_i8 = s->tok_i8;
        w->tok_scale = s->tok_scale;
        return MM_OK;
    }
    float *f = malloc(V * D * sizeof(float));
    if (!f)
        return MM_E_NOMEM;
    for (size_t i = 0; i < V; i++)
        mm_tops_i8_row(f + i * D, (const signed char *)s->tok_i8 + i * D, s->tok_scale[i], D);
    w->tok_emb = be->ops->constant(be, f, V * D);   /* a copy: f may go */
    free(f);
    return w->tok_emb ? MM_OK : MM_E_NOMEM;
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
        if (!(w->layers = calloc((size_t)t->n_layers, sizeof(*w->layers))) || dev_tokens(be, t, s, w) ||
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
    if (be->host_memory)   /* the host writes the text block in place: its upload is free */
        g->th = g->ti;

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
    be->ops->upload(be, g->ti.ia, g->th.ia, g->n_text_ints * sizeof(int));
    /* CLIPTextEmbeddings: token + absolute position */
    if (w->tok_i8)
        be->ops->gather_add_i8(be, g->x, c->dim, w->tok_i8, w->tok_scale, c->dim, g->ti.ia, w->pos_emb, c->dim,
                               g->ti.ib, T, c->dim);
    else
        be->ops->gather_add(be, g->x, c->dim, w->tok_emb, c->dim, g->ti.ia, w->pos_emb, c->dim, g->ti.ib, T,
                            c->dim);
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
    const float *px = pixels;   /* backend memory is host memory: read the caller's pixels in place */
    if (!be->host_memory) {
        be->ops->upload(be, g->pix, pixels, (size_t)n * C * S * S * sizeof(float));
        px = g->pix;
    }
    be->ops->patchify(be, g->patches, px, n, C, S, c->patch);
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
    return dev_encode_text(r, ids, lens, n, out);
}

int mm_model_encode_image(mm_runner_t *r, const float *pixels, int n, float *out)
{
    const clip_config_t *c = &r->m->cfg;
    if (!c->has_vision)
        return MM_E_UNSUPPORTED;
    if (n < 0)
        return MM_E_INVALID;
    return dev_encode_image(r, pixels, n, out);
}

/* ---------------------------------------------------------------- encoder interface */

static int clip_load(const char *dir, const mm_cfg_t *cfg, mm_dtype_t dt, void **model, char *err, size_t errlen)
{
    mm_model_t *m;
    int rc = load_cfg(dir, cfg, dt, &m, err, errlen);
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

/* A runner on be with its own copy of the weights there. */
static void *clip_runner_new_on(const void *model, mm_backend_t *be, int max_batch, int max_images)
{
    char err[MM_ERRLEN];
    mm_model_dev_t *d;
    if (mm_model_dev_new(model, be, &d, err, sizeof err))
        return NULL;
    mm_runner_t *r = mm_runner_new_dev(d, max_batch, max_images);
    if (!r) {
        mm_model_dev_free(d);
        return NULL;
    }
    r->own = d;
    return r;
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

const mm_encoder_ops_t mm_enc_clip = {
    .name = "clip", .load = clip_load, .free = clip_free, .info = clip_info, .runner_new = clip_runner_new,
    .runner_new_on = clip_runner_new_on, .runner_free = clip_runner_free, .encode = clip_encode,
};
