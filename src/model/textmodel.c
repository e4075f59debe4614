/* Text encoders from Hugging Face folders: BertModel and Qwen3Model.
 *
 * Read the forward passes next to transformers' modeling_bert.py and
 * modeling_qwen3.py; they follow the same order.
 *
 * BERT (BertModel, post-LN encoder):
 *   embeddings   x = word[id] + token_type[0] + position[p]   (absolute, p
 *                from 0 per sequence; token types are all 0 for one text)
 *                x = LayerNorm(x)
 *   layer l      q|k|v = x Wqkv^T + b          (one GEMM, weights stacked)
 *                a = softmax(q k^T / sqrt(hd)) v   per head, all keys of
 *                    the sequence (no padding exists: see "packing")
 *                x = LayerNorm(a Wo^T + bo + x)          attention.output
 *                x = LayerNorm(act(x Wi^T + bi) Wout^T + bout + x)
 *   pooling      mean over the tokens, or the first ([CLS]) token
 *   (pooler.dense is not part of the sentence embedding; never loaded)
 *
 * Qwen3 (Qwen3Model, pre-RMSNorm decoder):
 *   x = embed_tokens[id]
 *   layer l      h = RMSNorm(x) * input_layernorm
 *                q|k|v = h Wqkv^T (+ b when attention_bias)
 *                q = RMSNorm_hd(q) * q_norm; k = RMSNorm_hd(k) * k_norm
 *                    (per head, BEFORE rotary)
 *                q, k = rotary(q, k, p)   rotate_half: pairs (i, i + hd/2),
 *                    inv_freq_i = rope_theta^(-2i/hd), positions from 0
 *                a = softmax(q k^T / sqrt(hd) + causal) v, query head h
 *                    reads kv head h / (heads / kv_heads)
 *                x = x + a Wo^T
 *                h = RMSNorm(x) * post_attention_layernorm
 *                x = x + (silu(h Wg^T) * (h Wu^T)) Wd^T
 *   x = RMSNorm(x) * norm;  pooled at the last token (the EOS the caller
 *   appends, as Qwen3-Embedding does)
 *
 * Packing: the sequences of one pass are laid back to back with no
 * padding, so every dense layer is one GEMM over all tokens and attention
 * runs per sequence. That is what HF computes for each sequence alone, and
 * it makes a vector independent of its batch (to BLAS rounding).
 *
 * Weights: every tensor the forward pass multiplies is converted to f32 and
 * stored, fused where one GEMM can do the work (q|k|v, gate|up), in one
 * memfd mapped PROT_READ | MAP_SHARED before workers fork; the token
 * embedding table keeps its checkpoint dtype (only the looked-up rows are
 * converted), which halves the largest tensor of a bf16 Qwen3. The pack is
 * laid out by walking the tensors twice with the same code: once to check
 * names and shapes and add up the size, once to convert into the memfd.
 *
 * Sections: config, pooling files, weight walk, load, forward, API. */
#include "mmembed/textmodel.h"
#include "mmembed/encoder.h"
#include "mmembed/packcache.h"

#include "mmembed/common.h"
#include "mmembed/safetensors.h"
#include "mmembed/textops.h"

#include <cblas.h>

#include "mmembed/nn.h"
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

enum { ARCH_BERT = 1, ARCH_QWEN3 };

/* Rows per feed-forward block: the FFN runs on blocks of tokens so its wide
 * intermediate buffer stays FF_BLOCK rows whatever the pass size. */
#define FF_BLOCK 512
/* Tokens per pass when the batch allows more (bounds per-runner scratch). */
#define PASS_TOKENS 4096

typedef struct {
    int arch;
    int vocab;        /* vocab_size */
    int hidden;       /* hidden_size */
    int layers;       /* num_hidden_layers */
    int heads;        /* num_attention_heads */
    int kv_heads;     /* num_key_value_heads (bert: heads) */
    int head_dim;     /* bert: hidden / heads; qwen3: head_dim */
    int inter;        /* intermediate_size */
    int max_pos;      /* max_position_embeddings */
    int type_vocab;   /* bert: type_vocab_size */
    float eps;        /* bert layer_norm_eps, qwen3 rms_norm_eps */
    double rope_theta;
    int attn_bias;    /* qwen3 attention_bias */
    int eos_id;       /* qwen3 eos_token_id, else -1 */
    mm_tops_act_t act;/* bert hidden_act */
} tm_config_t;

typedef struct {
    const float *wqkv;  /* (3 hidden, hidden) query | key | value rows */
    const float *bqkv;  /* (3 hidden) */
    const float *wo;    /* (hidden, hidden) attention.output.dense */
    const float *bo;    /* (hidden) */
    const float *ln1_w; /* (hidden) attention.output.LayerNorm */
    const float *ln1_b; /* (hidden) */
    const float *wi;    /* (inter, hidden) intermediate.dense */
    const float *bi;    /* (inter) */
    const float *wout;  /* (hidden, inter) output.dense */
    const float *bout;  /* (hidden) */
    const float *ln2_w; /* (hidden) output.LayerNorm */
    const float *ln2_b; /* (hidden) */
} bert_layer_t;

typedef struct {
    const float *pos;    /* (max_pos, hidden) position_embeddings */
    const float *type0;  /* (hidden) token_type_embeddings row 0 */
    const float *ln_w;   /* (hidden) embeddings.LayerNorm */
    const float *ln_b;   /* (hidden) */
} bert_weights_t;

typedef struct {
    const float *in_norm;   /* (hidden) input_layernorm */
    const float *wqkv;      /* ((heads + 2 kv_heads) head_dim, hidden) q | k | v rows */
    const float *bqkv;      /* ((heads + 2 kv_heads) head_dim) or NULL */
    const float *q_norm;    /* (head_dim) */
    const float *k_norm;    /* (head_dim) */
    const float *wo;        /* (hidden, heads head_dim) o_proj */
    const float *bo;        /* (hidden) or NULL */
    const float *post_norm; /* (hidden) post_attention_layernorm */
    const float *wgu;       /* (2 inter, hidden) gate | up rows */
    const float *wdown;     /* (hidden, inter) down_proj */
} qwen3_layer_t;

typedef struct {
    const float *norm;      /* (hidden) final norm */
} qwen3_weights_t;

struct mm_tm {
    mm_tm_info_t info;
    tm_config_t c;
    const void *tok_emb;     /* (vocab, hidden) in tok_dtype: word_embeddings / embed_tokens */
    mm_st_dtype_t tok_dtype;
    bert_weights_t bw;
    qwen3_weights_t qw;
    bert_layer_t *bl;        /* (layers) bert */
    qwen3_layer_t *ql;       /* (layers) qwen3 */
    float *rope_cos;         /* (max_tokens, head_dim / 2) qwen3 */
    float *rope_sin;         /* (max_tokens, head_dim / 2) qwen3 */
    void *base;              /* the shared read-only weight mapping */
    size_t bytes;
    char name[128];
    char dtype[8];
    mm_dtype_t compute;      /* of the dense layers */
};

struct mm_tm_runner {
    const mm_tm_t *m;
    int max_batch;
    int cap;          /* tokens per pass */
    int ld_qkv;       /* floats per token of qkv */
    float *x;         /* (cap, hidden) residual stream */
    float *y;         /* (cap, hidden) sublayer output / normed input */
    float *qkv;       /* (cap, ld_qkv) */
    float *att;       /* (cap, heads head_dim) attention output */
    float *ff;        /* (FF_BLOCK, inter) bert / (FF_BLOCK, 2 inter) qwen3 */
    float *ff2;       /* (FF_BLOCK, inter) qwen3 swiglu output */
    float *scores;    /* (threads, MM_TOPS_QBLOCK, max_tokens): one block per pool part */
    int threads;
    int *start;       /* (max_batch + 1) first token of each sequence in the pass */
};

/* ============================================================ config */

static json_object *read_json(const char *path, int *rc, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        *rc = mm_errf(err, errlen, MM_E_NOTFOUND, "%s: %s", path, strerror(errno));
        return NULL;
    }
    fclose(f);
    json_object *o = json_object_from_file(path);
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        *rc = mm_errf(err, errlen, MM_E_INVALID, "%s: not a JSON object", path);
        return NULL;
    }
    *rc = MM_OK;
    return o;
}

static const char *jstr(json_object *o, const char *key)
{
    json_object *v;
    if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return NULL;
}

static int jbool(json_object *o, const char *key)
{
    json_object *v;
    return o && json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

/* Positive integer `key` (def when absent or null; def < 0: required). */
static int cfg_int(json_object *o, const char *key, int def, int *out, char *err, size_t errlen)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
        if (def < 0)
            return mm_errf(err, errlen, MM_E_INVALID, "config.json: %s missing", key);
        *out = def;
        return MM_OK;
    }
    if (!json_object_is_type(v, json_type_int))
        return mm_errf(err, errlen, MM_E_INVALID, "config.json: %s is not an integer", key);
    int64_t x = json_object_get_int64(v);
    if (x < 1 || x > 100000000)
        return mm_errf(err, errlen, MM_E_INVALID, "config.json: %s = %lld out of range", key,
                       (long long)x);
    *out = (int)x;
    return MM_OK;
}

static int cfg_num(json_object *o, const char *key, double def, double *out, char *err,
                   size_t errlen)
{
    json_object *v;
    *out = def;
    if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return MM_OK;
    if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
        return mm_errf(err, errlen, MM_E_INVALID, "config.json: %s is not a number", key);
    *out = json_object_get_double(v);
    if (!(*out > 0) || !isfinite(*out))
        return mm_errf(err, errlen, MM_E_INVALID, "config.json: %s must be positive", key);
    return MM_OK;
}

/* Which architecture a config describes: model_type when present (so that
 * e.g. "xlm-roberta" with a Bert-like architectures list is not taken for
 * BERT), else the first architectures entry. 0 when neither matches. */
static int detect_arch(json_object *root)
{
    const char *mt = jstr(root, "model_type");
    if (mt)
        return !strcmp(mt, "bert") ? ARCH_BERT : !strcmp(mt, "qwen3") ? ARCH_QWEN3 : 0;
    json_object *a;
    if (!json_object_object_get_ex(root, "architectures", &a) ||
        !json_object_is_type(a, json_type_array) || json_object_array_length(a) < 1)
        return 0;
    const char *s = json_object_get_string(json_object_array_get_idx(a, 0));
    static const char *bert[] = {"BertModel", "BertForMaskedLM", "BertForPreTraining"};
    static const char *qwen[] = {"Qwen3Model", "Qwen3ForCausalLM"};
    for (size_t i = 0; s && i < MM_ARRAY_LEN(bert); i++)
        if (!strcmp(s, bert[i]))
            return ARCH_BERT;
    for (size_t i = 0; s && i < MM_ARRAY_LEN(qwen); i++)
        if (!strcmp(s, qwen[i]))
            return ARCH_QWEN3;
    return 0;
}

static int parse_bert(json_object *o, tm_config_t *c, char *err, size_t errlen)
{
    int rc;
    double eps;
    if ((rc = cfg_int(o, "vocab_size", -1, &c->vocab, err, errlen)) ||
        (rc = cfg_int(o, "hidden_size", -1, &c->hidden, err, errlen)) ||
        (rc = cfg_int(o, "num_hidden_layers", -1, &c->layers, err, errlen)) ||
        (rc = cfg_int(o, "num_attention_heads", -1, &c->heads, err, errlen)) ||
        (rc = cfg_int(o, "intermediate_size", -1, &c->inter, err, errlen)) ||
        (rc = cfg_int(o, "max_position_embeddings", 512, &c->max_pos, err, errlen)) ||
        (rc = cfg_int(o, "type_vocab_size", 2, &c->type_vocab, err, errlen)) ||
        (rc = cfg_num(o, "layer_norm_eps", 1e-12, &eps, err, errlen)))
        return rc;
    c->eps = (float)eps;
    if (c->hidden % c->heads)
        return mm_errf(err, errlen, MM_E_INVALID, "config.json: hidden_size %d not divisible by %d heads",
                       c->hidden, c->heads);
    c->kv_heads = c->heads;
    c->head_dim = c->hidden / c->heads;
    c->eos_id = -1;
    const char *pe = jstr(o, "position_embedding_type");
    if (pe && strcmp(pe, "absolute"))
        return mm_errf(err, errlen, MM_E_UNSUPPORTED,
                       "config.json: position_embedding_type \"%s\" not supported (absolute)", pe);
    const char *act = jstr(o, "hidden_act");
    if (!act || !strcmp(act, "gelu"))
        c->act = MM_TOPS_GELU;
    else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh"))
        c->act = MM_TOPS_GELU_TANH;
    else if (!strcmp(act, "relu"))
        c->act = MM_TOPS_RELU;
    else if (!strcmp(act, "silu") || !strcmp(act, "swish"))
        c->act = MM_TOPS_SILU;
    else
        return mm_errf(err, errlen, MM_E_UNSUPPORTED,
                       "config.json: hidden_act \"%s\" not supported (gelu, gelu_new, relu, silu)", act);
    return MM_OK;
}

static int parse_qwen3(json_object *o, tm_config_t *c, char *err, size_t errlen)
{
    int rc;
    double eps;
    if ((rc = cfg_int(o, "vocab_size", -1, &c->vocab, err, errlen)) ||
        (rc = cfg_int(o, "hidden_size", -1, &c->hidden, err, errlen)) ||
        (rc = cfg_int(o, "num_hidden_layers", -1, &c->layers, err, errlen)) ||
        (rc = cfg_int(o, "num_attention_heads", -1, &c->heads, err, errlen)) ||
        (rc = cfg_int(o, "intermediate_size", -1, &c->inter, err, errlen)) ||
        (rc = cfg_int(o, "max_position_embeddings", 32768, &c->max_pos, err, errlen)) ||
        (rc = cfg_int(o, "num_key_value_heads", c->heads, &c->kv_heads, err, errlen)) ||
        (rc = cfg_int(o, "head_dim", c->hidden / c->heads, &c->head_dim, err, errlen)) ||
        (rc = cfg_num(o, "rms_norm_eps", 1e-6, &eps, err, errlen)))
        return rc;
    c->eps = (float)eps;
    if (c->heads % c->kv_heads)
        return mm_errf(err, errlen, MM_E_INVALID,
                       "config.json: num_attention_heads %d not a multiple of num_key_value_heads %d",
                       c->heads, c->kv_heads);
    if (c->head_dim % 2)
        return mm_errf(err, errlen, MM_E_INVALID, "config.json: head_dim %d is odd", c->head_dim);
    const char *act = jstr(o, "hidden_act");
    if (act && strcmp(act, "silu"))
        return mm_errf(err, errlen, MM_E_UNSUPPORTED, "config.json: hidden_act \"%s\" not supported (silu)", act);
    if (jbool(o, "use_sliding_window"))
        return mm_errf(err, errlen, MM_E_UNSUPPORTED, "config.json: use_sliding_window not supported");
    c->attn_bias = jbool(o, "attention_bias");

    /* rope_theta: transformers <= 4 top-level, >= 5 under rope_parameters.
     * Only the plain rotary ("default") is implemented. */
    json_object *rp = NULL, *rs = NULL;
    json_object_object_get_ex(o, "rope_parameters", &rp);
    json_object_object_get_ex(o, "rope_scaling", &rs);
    if (rp && !json_object_is_type(rp, json_type_object))
        rp = NULL;
    if (rs && !json_object_is_type(rs, json_type_object))
        rs = NULL;
    if ((rc = cfg_num(o, "rope_theta", 10000.0, &c->rope_theta, err, errlen)) ||
        (rp && (rc = cfg_num(rp, "rope_theta", c->rope_theta, &c->rope_theta, err, errlen))))
        return rc;
    json_object *sets[2] = {rp, rs};
    for (int i = 0; i < 2; i++) {
        const char *t = jstr(sets[i], "rope_type");
        if (!t)
            t = jstr(sets[i], "type");
        if (t && strcmp(t, "default"))
            return mm_errf(err, errlen, MM_E_UNSUPPORTED, "config.json: rope_type \"%s\" not supported (default)", t);
    }

    c->eos_id = -1;
    json_object *e;
    if (json_object_object_get_ex(o, "eos_token_id", &e)) {
        if (json_object_is_type(e, json_type_array) && json_object_array_length(e) > 0)
            e = json_object_array_get_idx(e, 0);
        if (json_object_is_type(e, json_type_int))
            c->eos_id = json_object_get_int(e);
    }
    if (c->eos_id < 0 || c->eos_id >= c->vocab)
        return mm_errf(err, errlen, MM_E_INVALID, "config.json: eos_token_id missing or outside the vocabulary");
    return MM_OK;
}

static int parse_config(const char *dir, tm_config_t *c, char *err, size_t errlen)
{
    char path[1024];
    int rc;
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_object *root = read_json(path, &rc, err, errlen);
    if (!root)
        return rc;
    memset(c, 0, sizeof(*c));
    c->arch = detect_arch(root);
    if (c->arch == ARCH_BERT)
        rc = parse_bert(root, c, err, errlen);
    else if (c->arch == ARCH_QWEN3)
        rc = parse_qwen3(root, c, err, errlen);
    else
        rc = mm_errf(err, errlen, MM_E_UNSUPPORTED,
                     "%s: not a BertModel or Qwen3Model (model_type \"%s\")", path,
                     jstr(root, "model_type") ? jstr(root, "model_type") : "?");
    json_object_put(root);
    return rc;
}

/* ================================================ sentence-transformers */

/* Pooling and length limit from the sentence-transformers files, when the
 * folder has them: modules.json lists the modules in order; its Pooling
 * entry names the folder whose config.json says which pooling; a module
 * that would change the vector and that we do not run (Dense, ...) is an
 * error rather than a silently different embedding. Normalize is the
 * caller's job. */
static int parse_st(const char *dir, int *pooling, int *max_seq, char *err, size_t errlen)
{
    char path[1280];
    int rc;
    *max_seq = 0;

    snprintf(path, sizeof path, "%s/sentence_bert_config.json", dir);
    if (access(path, F_OK) == 0) {
        json_object *o = read_json(path, &rc, err, errlen);
        if (!o)
            return rc;
        json_object *v;
        if (json_object_object_get_ex(o, "max_seq_length", &v) && json_object_is_type(v, json_type_int) &&
            json_object_get_int(v) > 0)
            *max_seq = json_object_get_int(v);
        json_object_put(o);
    }

    snprintf(path, sizeof path, "%s/modules.json", dir);
    if (access(path, F_OK) != 0)
        return MM_OK;
    FILE *f = fopen(path, "r");
    if (!f)
        return mm_errf(err, errlen, MM_E_NOTFOUND, "%s: %s", path, strerror(errno));
    fclose(f);
    json_object *mods = json_object_from_file(path);
    if (!mods || !json_object_is_type(mods, json_type_array)) {
        json_object_put(mods);
        return mm_errf(err, errlen, MM_E_INVALID, "%s: not a JSON array", path);
    }
    char pool_dir[512] = "";
    rc = MM_OK;
    for (size_t i = 0; i < json_object_array_length(mods) && rc == MM_OK; i++) {
        json_object *e = json_object_array_get_idx(mods, i);
        const char *type = jstr(e, "type"), *p = jstr(e, "path");
        const char *cls = type ? strrchr(type, '.') : NULL;
        cls = cls ? cls + 1 : type ? type : "";
        if (!strcmp(cls, "Pooling"))
            snprintf(pool_dir, sizeof pool_dir, "%s", p ? p : "");
        else if (strcmp(cls, "Transformer") && strcmp(cls, "Normalize"))
            rc = mm_errf(err, errlen, MM_E_UNSUPPORTED, "%s: module %s not supported", path,
                         type ? type : "?");
    }
    json_object_put(mods);
    if (rc || !pool_dir[0])
        return rc;

    snprintf(path, sizeof path, "%s/%s/config.json", dir, pool_dir);
    json_object *o = read_json(path, &rc, err, errlen);
    if (!o)
        return rc;
    int cls = jbool(o, "pooling_mode_cls_token"), mean = jbool(o, "pooling_mode_mean_tokens");
    int last = jbool(o, "pooling_mode_lasttoken");
    int other = jbool(o, "pooling_mode_max_tokens") || jbool(o, "pooling_mode_mean_sqrt_len_tokens") ||
                jbool(o, "pooling_mode_weightedmean_tokens");
    json_object_put(o);
    if (other || cls + mean + last != 1)
        return mm_errf(err, errlen, MM_E_UNSUPPORTED,
                       "%s: pooling must be exactly one of cls_token, mean_tokens, lasttoken", path);
    *pooling = cls ? MM_TM_POOL_CLS : mean ? MM_TM_POOL_MEAN : MM_TM_POOL_LAST;
    return MM_OK;
}

/* ========================================================= weight walk */

/* One walker serves both passes: with base == NULL it only checks each
 * tensor (name, dtype, shape) and adds up the layout; with base set it
 * converts each tensor to its place and sets the weight pointers. Both
 * passes call the same functions in the same order, so the layout matches. */
typedef struct {
    const mm_st_t *st;
    const char *prefix;  /* "", "bert." or "model." */
    char *base;          /* where to write; NULL: sizing pass */
    const char *ro;      /* the read-only mapping of the same bytes */
    size_t off;          /* bytes laid out so far */
    size_t last;         /* where the last region began */
    mm_dtype_t dt;       /* of the dense layers' packed blobs */
    int lin;             /* inside a dense layer: parts go to tmp, packed at its end */
    float *tmp;          /* that layer's W (N, K) in f32 */
    size_t tmp_n, tmp_cap; /* floats in / room of tmp */
    unsigned dtypes;     /* bit per source dtype seen */
    char *err;
    size_t errlen;
} walk_t;

/* Starts a region (64-byte aligned); its parts follow with walk_part. */
static const float *walk_begin(walk_t *w)
{
    w->off = (w->off + 63) & ~(size_t)63;
    w->last = w->off;
    return w->ro ? (const float *)(w->ro + w->off) : NULL;
}

static int walk_get(walk_t *w, int ndim, int64_t d0, int64_t d1, const mm_st_tensor_t **t,
                    const char *fmt, va_list ap)
{
    char rel[256], name[300];
    vsnprintf(rel, sizeof rel, fmt, ap);
    snprintf(name, sizeof name, "%s%s", w->prefix, rel);
    int64_t shape[2] = {d0, d1};
    int rc = mm_st_get(w->st, name, ndim, shape, t, w->err, w->errlen);
    if (rc == MM_OK)
        w->dtypes |= 1u << (*t)->dtype;
    return rc;
}

/* Appends tensor prefix + fmt..., which must be (d0) or (d0, d1), as f32. */
static int walk_part(walk_t *w, int ndim, int64_t d0, int64_t d1, const char *fmt, ...)
    MM_PRINTF(5, 6);
static int walk_part(walk_t *w, int ndim, int64_t d0, int64_t d1, const char *fmt, ...)
{
    const mm_st_tensor_t *t;
    va_list ap;
    va_start(ap, fmt);
    int rc = walk_get(w, ndim, d0, d1, &t, fmt, ap);
    va_end(ap);
    if (rc)
        return rc;
    if (w->lin) {
        if (w->base) {
            if (w->tmp_n + t->numel > w->tmp_cap) {
                size_t cap = (w->tmp_n + t->numel) * 2;
                float *p = realloc(w->tmp, cap * sizeof(float));
                if (!p)
                    return mm_errf(w->err, w->errlen, MM_E_NOMEM, "out of memory");
                w->tmp = p;
                w->tmp_cap = cap;
            }
            mm_st_convert(t->dtype, t->data, w->tmp + w->tmp_n, t->numel);
        }
        w->tmp_n += t->numel;
        return MM_OK;
    }
    if (w->base)
        mm_st_convert(t->dtype, t->data, (float *)(w->base + w->off), t->numel);
    w->off += t->numel * sizeof(float);
    return MM_OK;
}

/* Starts a dense layer's region: its parts (W's rows, walk_part) are
 * gathered in f32 and walk_lin_end packs them into an mm_nn_linear blob in
 * the model's compute dtype, which is all the region holds. */
static const float *walk_lin_begin(walk_t *w)
{
    const float *p = walk_begin(w);
    w->lin = 1;
    w->tmp_n = 0;
    return p;
}

static int walk_lin_end(walk_t *w, int64_t N, int64_t K)
{
    w->lin = 0;
    if (w->tmp_n != (size_t)N * (size_t)K)
        return mm_errf(w->err, w->errlen, MM_E_INVALID, "dense layer of %zu weights, expected %lld x %lld",
                       w->tmp_n, (long long)N, (long long)K);
    if (w->base)
        mm_nn_lin_pack(w->base + w->last, w->tmp, (int)N, (int)K, w->dt);
    w->off = w->last + mm_nn_lin_bytes((int)N, (int)K, w->dt);
    return MM_OK;
}

/* A region of one tensor. */
static int walk_one(walk_t *w, const float **dst, int ndim, int64_t d0, int64_t d1,
                    const char *fmt, ...) MM_PRINTF(6, 7);
static int walk_one(walk_t *w, const float **dst, int ndim, int64_t d0, int64_t d1,
                    const char *fmt, ...)
{
    const mm_st_tensor_t *t;
    *dst = walk_begin(w);
    va_list ap;
    va_start(ap, fmt);
    int rc = walk_get(w, ndim, d0, d1, &t, fmt, ap);
    va_end(ap);
    if (rc)
        return rc;
    if (w->base)
        mm_st_convert(t->dtype, t->data, (float *)(w->base + w->off), t->numel);
    w->off += t->numel * sizeof(float);
    return MM_OK;
}

/* The token embedding table, copied in its checkpoint dtype. */
static int walk_table(walk_t *w, const void **dst, mm_st_dtype_t *dt, int64_t d0, int64_t d1,
                      const char *name)
{
    const mm_st_tensor_t *t;
    *dst = walk_begin(w);
    int rc;
    char full[300];
    snprintf(full, sizeof full, "%s%s", w->prefix, name);
    int64_t shape[2] = {d0, d1};
    if ((rc = mm_st_get(w->st, full, 2, shape, &t, w->err, w->errlen)))
        return rc;
    w->dtypes |= 1u << t->dtype;
    *dt = t->dtype;
    if (w->base)
        memcpy(w->base + w->off, t->data, t->nbytes);
    w->off += t->nbytes;
    return MM_OK;
}

static int walk_bert(walk_t *w, mm_tm_t *m)
{
    const tm_config_t *c = &m->c;
    int64_t H = c->hidden, F = c->inter;
    int rc;
    if ((rc = walk_table(w, &m->tok_emb, &m->tok_dtype, c->vocab, H, "embeddings.word_embeddings.weight")) ||
        (rc = walk_one(w, &m->bw.pos, 2, c->max_pos, H, "embeddings.position_embeddings.weight")))
        return rc;
    /* only row 0 of token_type_embeddings is read: one region of H floats */
    const mm_st_tensor_t *t;
    char name[300];
    snprintf(name, sizeof name, "%sembeddings.token_type_embeddings.weight", w->prefix);
    int64_t tshape[2] = {c->type_vocab, H};
    if ((rc = mm_st_get(w->st, name, 2, tshape, &t, w->err, w->errlen)))
        return rc;
    m->bw.type0 = walk_begin(w);
    if (w->base)
        mm_st_convert(t->dtype, t->data, (float *)(w->base + w->off), (size_t)H);
    w->off += (size_t)H * sizeof(float);
    if ((rc = walk_one(w, &m->bw.ln_w, 1, H, 0, "embeddings.LayerNorm.weight")) ||
        (rc = walk_one(w, &m->bw.ln_b, 1, H, 0, "embeddings.LayerNorm.bias")))
        return rc;
    for (int l = 0; l < c->layers; l++) {
        bert_layer_t *L = &m->bl[l];
        L->wqkv = walk_lin_begin(w);
        if ((rc = walk_part(w, 2, H, H, "encoder.layer.%d.attention.self.query.weight", l)) ||
            (rc = walk_part(w, 2, H, H, "encoder.layer.%d.attention.self.key.weight", l)) ||
            (rc = walk_part(w, 2, H, H, "encoder.layer.%d.attention.self.value.weight", l)) ||
            (rc = walk_lin_end(w, 3 * H, H)))
            return rc;
        L->bqkv = walk_begin(w);
        if ((rc = walk_part(w, 1, H, 0, "encoder.layer.%d.attention.self.query.bias", l)) ||
            (rc = walk_part(w, 1, H, 0, "encoder.layer.%d.attention.self.key.bias", l)) ||
            (rc = walk_part(w, 1, H, 0, "encoder.layer.%d.attention.self.value.bias", l)) ||
            (L->wo = walk_lin_begin(w), 0) ||
            (rc = walk_part(w, 2, H, H, "encoder.layer.%d.attention.output.dense.weight", l)) ||
            (rc = walk_lin_end(w, H, H)) ||
            (rc = walk_one(w, &L->bo, 1, H, 0, "encoder.layer.%d.attention.output.dense.bias", l)) ||
            (rc = walk_one(w, &L->ln1_w, 1, H, 0, "encoder.layer.%d.attention.output.LayerNorm.weight", l)) ||
            (rc = walk_one(w, &L->ln1_b, 1, H, 0, "encoder.layer.%d.attention.output.LayerNorm.bias", l)) ||
            (L->wi = walk_lin_begin(w), 0) ||
            (rc = walk_part(w, 2, F, H, "encoder.layer.%d.intermediate.dense.weight", l)) ||
            (rc = walk_lin_end(w, F, H)) ||
            (rc = walk_one(w, &L->bi, 1, F, 0, "encoder.layer.%d.intermediate.dense.bias", l)) ||
            (L->wout = walk_lin_begin(w), 0) ||
            (rc = walk_part(w, 2, H, F, "encoder.layer.%d.output.dense.weight", l)) ||
            (rc = walk_lin_end(w, H, F)) ||
            (rc = walk_one(w, &L->bout, 1, H, 0, "encoder.layer.%d.output.dense.bias", l)) ||
            (rc = walk_one(w, &L->ln2_w, 1, H, 0, "encoder.layer.%d.output.LayerNorm.weight", l)) ||
            (rc = walk_one(w, &L->ln2_b, 1, H, 0, "encoder.layer.%d.output.LayerNorm.bias", l)))
            return rc;
    }
    return MM_OK;
}

static int walk_qwen3(walk_t *w, mm_tm_t *m)
{
    const tm_config_t *c = &m->c;
    int64_t H = c->hidden, F = c->inter, D = c->head_dim;
    int64_t Q = (int64_t)c->heads * D, KV = (int64_t)c->kv_heads * D;
    int rc;
    if ((rc = walk_table(w, &m->tok_emb, &m->tok_dtype, c->vocab, H, "embed_tokens.weight")))
        return rc;
    for (int l = 0; l < c->layers; l++) {
        qwen3_layer_t *L = &m->ql[l];
        if ((rc = walk_one(w, &L->in_norm, 1, H, 0, "layers.%d.input_layernorm.weight", l)))
            return rc;
        L->wqkv = walk_lin_begin(w);
        if ((rc = walk_part(w, 2, Q, H, "layers.%d.self_attn.q_proj.weight", l)) ||
            (rc = walk_part(w, 2, KV, H, "layers.%d.self_attn.k_proj.weight", l)) ||
            (rc = walk_part(w, 2, KV, H, "layers.%d.self_attn.v_proj.weight", l)) ||
            (rc = walk_lin_end(w, Q + 2 * KV, H)))
            return rc;
        L->bqkv = NULL;
        L->bo = NULL;
        if (c->attn_bias) {
            L->bqkv = walk_begin(w);
            if ((rc = walk_part(w, 1, Q, 0, "layers.%d.self_attn.q_proj.bias", l)) ||
                (rc = walk_part(w, 1, KV, 0, "layers.%d.self_attn.k_proj.bias", l)) ||
                (rc = walk_part(w, 1, KV, 0, "layers.%d.self_attn.v_proj.bias", l)) ||
                (rc = walk_one(w, &L->bo, 1, H, 0, "layers.%d.self_attn.o_proj.bias", l)))
                return rc;
        }
        if ((rc = walk_one(w, &L->q_norm, 1, D, 0, "layers.%d.self_attn.q_norm.weight", l)) ||
            (rc = walk_one(w, &L->k_norm, 1, D, 0, "layers.%d.self_attn.k_norm.weight", l)) ||
            (L->wo = walk_lin_begin(w), 0) ||
            (rc = walk_part(w, 2, H, Q, "layers.%d.self_attn.o_proj.weight", l)) ||
            (rc = walk_lin_end(w, H, Q)) ||
            (rc = walk_one(w, &L->post_norm, 1, H, 0, "layers.%d.post_attention_layernorm.weight", l)))
            return rc;
        L->wgu = walk_lin_begin(w);
        if ((rc = walk_part(w, 2, F, H, "layers.%d.mlp.gate_proj.weight", l)) ||
            (rc = walk_part(w, 2, F, H, "layers.%d.mlp.up_proj.weight", l)) ||
            (rc = walk_lin_end(w, 2 * F, H)) ||
            (L->wdown = walk_lin_begin(w), 0) ||
            (rc = walk_part(w, 2, H, F, "layers.%d.mlp.down_proj.weight", l)) ||
            (rc = walk_lin_end(w, H, F)))
            return rc;
    }
    return walk_one(w, &m->qw.norm, 1, H, 0, "norm.weight");
}

/* ================================================================ load */

/* The checkpoint's prefix: bare (BertModel / Qwen3Model saves) or that of
 * the *For* wrappers. */
static const char *find_prefix(const mm_st_t *st, const char *probe)
{
    static const char *prefixes[] = {"", "bert.", "model."};
    char name[256];
    for (size_t i = 0; i < MM_ARRAY_LEN(prefixes); i++) {
        snprintf(name, sizeof name, "%s%s", prefixes[i], probe);
        if (mm_st_find(st, name))
            return prefixes[i];
    }
    return "";
}

static int walk_all(walk_t *w, mm_tm_t *m)
{
    return m->c.arch == ARCH_BERT ? walk_bert(w, m) : walk_qwen3(w, m);
}

/* Sizes, fills and maps the shared weight block (see the file comment). */
static int build_pack(mm_tm_t *m, const char *dir, const mm_st_t *st, char *err, size_t errlen)
{
    walk_t w = {.st = st, .err = err, .errlen = errlen, .dt = m->compute};
    w.prefix = find_prefix(st, m->c.arch == ARCH_BERT ? "embeddings.word_embeddings.weight"
                                                      : "embed_tokens.weight");
    int rc = walk_all(&w, m);
    if (rc)
        return rc;
    size_t size = (w.off + 4095) & ~(size_t)4095;

    /* a pack cache file of this size: the walk only sets the pointers */
    char cache[MM_PACK_PATH_MAX] = "";
    if (mm_pack_cache_path(dir, m->c.arch == ARCH_BERT ? "bert" : "qwen3", m->compute, cache, sizeof cache) == 0) {
        char *p = mm_pack_cache_map(cache, size);
        if (p) {
            w.ro = p;
            w.off = 0;
            if ((rc = walk_all(&w, m))) {
                munmap(p, size);
                return rc;
            }
            m->base = p;
            m->bytes = size;
            m->info.pack_cache = 1;
            goto dtype;
        }
    }

    int fd = memfd_create("mmembed-textmodel", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return mm_errf(err, errlen, MM_ERR, "memfd_create: %s", strerror(errno));
    /* fallocate: running out of shmem is an error here, not a SIGBUS later */
    if (ftruncate(fd, (off_t)size) < 0 || posix_fallocate(fd, 0, (off_t)size) != 0) {
        close(fd);
        return mm_errf(err, errlen, MM_E_NOMEM, "weights of %zu bytes: out of shared memory", size);
    }
    /* Both views of the one memfd: the walk writes through rw and hands
     * out pointers into ro, the mapping that stays. */
    char *ro = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    char *rw = ro == MAP_FAILED ? MAP_FAILED : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (rw == MAP_FAILED) {
        int e = errno;
        if (ro != MAP_FAILED)
            munmap(ro, size);
        close(fd);
        return mm_errf(err, errlen, MM_E_NOMEM, "weights of %zu bytes: mmap: %s", size, strerror(e));
    }
    w.base = rw;
    w.ro = ro;
    w.off = 0;
    rc = walk_all(&w, m);
    free(w.tmp);
    munmap(rw, size);
    /* Future-write seal: no process can map the block writable again or
     * write() to it; the read-only mapping stays valid. */
    (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE);
    close(fd);
    if (rc) {
        munmap(ro, size);
        return rc;
    }
    m->base = ro;
    m->bytes = size;
    if (cache[0])
        m->info.pack_cache = mm_pack_cache_store(cache, ro, size) == 0 ? 2 : -1;

dtype:;
    unsigned d = w.dtypes & ~(1u << MM_ST_OTHER);
    const char *ds = d == (1u << MM_ST_F32) ? "f32" : d == (1u << MM_ST_F16) ? "f16"
                   : d == (1u << MM_ST_BF16) ? "bf16" : "mixed";
    snprintf(m->dtype, sizeof m->dtype, "%s", ds);
    return MM_OK;
}

/* cos / sin of position p times inv_freq_i, in f32 as HF's rotary module
 * computes them: inv_freq = 1 / theta^(2i/hd), freq = p * inv_freq. */
static int build_rope(mm_tm_t *m)
{
    int half = m->c.head_dim / 2, n = m->info.max_tokens;
    m->rope_cos = malloc((size_t)n * half * sizeof(float));
    m->rope_sin = malloc((size_t)n * half * sizeof(float));
    if (!m->rope_cos || !m->rope_sin)
        return MM_E_NOMEM;
    for (int i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)m->c.head_dim;
        float inv = 1.0f / powf((float)m->c.rope_theta, e);
        for (int p = 0; p < n; p++) {
            float f = (float)p * inv;
            m->rope_cos[(size_t)p * half + i] = (float)cos((double)f);
            m->rope_sin[(size_t)p * half + i] = (float)sin((double)f);
        }
    }
    return MM_OK;
}

int mm_tm_is_supported(const char *dir)
{
    char path[1024];
    int rc;
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_object *root = read_json(path, &rc, NULL, 0);
    if (!root)
        return 0;
    int a = detect_arch(root);
    json_object_put(root);
    return a != 0;
}

int mm_tm_load(const char *dir, mm_tm_t **out, char *err, size_t errlen)
{
    return mm_tm_load_as(dir, MM_DT_F32, out, err, errlen);
}

int mm_tm_load_as(const char *dir, mm_dtype_t dtype, mm_tm_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!mm_nn_lin_supported(dtype))
        return mm_errf(err, errlen, MM_E_UNSUPPORTED, "%s: dtype %s is not supported on this CPU", dir,
                       mm_dtype_name(dtype));
    mm_tm_t *m = calloc(1, sizeof(*m));
    if (!m)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    m->compute = dtype;
    mm_st_t *st = NULL;
    int rc, max_seq = 0;
    if ((rc = parse_config(dir, &m->c, err, errlen)))
        goto fail;
    const tm_config_t *c = &m->c;
    m->info.pooling = c->arch == ARCH_BERT ? MM_TM_POOL_MEAN : MM_TM_POOL_LAST;
    if ((rc = parse_st(dir, &m->info.pooling, &max_seq, err, errlen)))
        goto fail;

    if (c->arch == ARCH_BERT)
        m->bl = calloc((size_t)c->layers, sizeof(*m->bl));
    else
        m->ql = calloc((size_t)c->layers, sizeof(*m->ql));
    if (!m->bl && !m->ql) {
        rc = mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = mm_st_open(dir, &st, err, errlen)) || (rc = build_pack(m, dir, st, err, errlen)))
        goto fail;
    mm_st_close(st);
    st = NULL;

    int nl;
    const char *nm = mm_path_last(dir, &nl);
    snprintf(m->name, sizeof m->name, "%.*s", nl, nm);

    mm_tm_info_t *in = &m->info;
    in->name = m->name;
    in->arch = c->arch == ARCH_BERT ? "bert" : "qwen3";
    in->dim = c->hidden;
    in->max_tokens = MM_MIN(c->max_pos, MM_TM_MAX_TOKENS);
    if (max_seq > 0)
        in->max_tokens = MM_MIN(in->max_tokens, max_seq);
    in->vocab_size = c->vocab;
    in->append_eos_id = c->arch == ARCH_QWEN3 ? c->eos_id : -1;
    in->layers = c->layers;
    in->heads = c->heads;
    in->dtype = m->dtype;
    in->compute = mm_dtype_name(m->compute);
    if (c->arch == ARCH_QWEN3 && build_rope(m)) {
        rc = mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
        goto fail;
    }
    *out = m;
    return MM_OK;
fail:
    mm_st_close(st);
    mm_tm_free(m);
    return rc;
}

void mm_tm_free(mm_tm_t *m)
{
    if (!m)
        return;
    if (m->base)
        munmap(m->base, m->bytes);
    free(m->bl);
    free(m->ql);
    free(m->rope_cos);
    free(m->rope_sin);
    free(m);
}

const mm_tm_info_t *mm_tm_info(const mm_tm_t *m)
{
    return &m->info;
}

size_t mm_tm_weight_bytes(const mm_tm_t *m)
{
    return m->bytes;
}

int mm_tm_set_pooling(mm_tm_t *m, int pooling)
{
    if (pooling != MM_TM_POOL_MEAN && pooling != MM_TM_POOL_CLS && pooling != MM_TM_POOL_LAST)
        return MM_E_INVALID;
    m->info.pooling = pooling;
    return MM_OK;
}

/* ============================================================= forward */

/* x (T, hidden) = token embedding rows, converted from the table's dtype. */
static void embed_tokens(const mm_tm_t *m, const int32_t *const *ids, const int *lens, int n,
                         float *x)
{
    size_t H = (size_t)m->c.hidden;
    size_t esize = m->tok_dtype == MM_ST_F32 ? 4 : 2;
    const unsigned char *tab = m->tok_emb;
    for (int s = 0; s < n; s++)
        for (int p = 0; p < lens[s]; p++, x += H)
            mm_st_convert(m->tok_dtype, tab + (size_t)ids[s][p] * H * esize, x, H);
}

/* One pass of BERT over n packed sequences; leaves the last hidden state
 * in r->x. */
/* Self-attention of n packed sequences, every (sequence, head) pair a unit
 * of work for the pool (parts take units round robin; each part has its own
 * scores block). GQA: head h reads key/value head h / group. */
typedef struct {
    mm_tm_runner_t *r;
    const int *lens;
    int n, heads, group, D, ldq, ldo, koff, voff, causal;
    float scale;
} attn_job_t;

static void attn_part(void *arg, int part, int nparts)
{
    const attn_job_t *j = arg;
    mm_tm_runner_t *r = j->r;
    float *scores = r->scores + (size_t)(part % r->threads) * MM_TOPS_QBLOCK * r->m->info.max_tokens;
    for (int u = part; u < j->n * j->heads; u += nparts) {
        const int s = u / j->heads, h = u % j->heads, kvh = h / j->group;
        const float *q = r->qkv + (size_t)r->start[s] * j->ldq;
        mm_tops_attention(r->att + (size_t)r->start[s] * j->ldo + h * j->D, j->ldo, q + h * j->D, j->ldq,
                          q + j->koff + kvh * j->D, j->ldq, q + j->voff + kvh * j->D, j->ldq, j->lens[s], j->D,
                          j->scale, j->causal, scores);
    }
}

static void bert_forward(mm_tm_runner_t *r, const int32_t *const *ids, const int *lens, int n)
{
    const mm_tm_t *m = r->m;
    const tm_config_t *c = &m->c;
    const int H = c->hidden, F = c->inter, D = c->head_dim, T = r->start[n];
    const float scale = 1.0f / sqrtf((float)D);
    float *x = r->x;

    embed_tokens(m, ids, lens, n, x);
    for (int s = 0; s < n; s++)
        for (int p = 0; p < lens[s]; p++) {
            float *xr = x + (size_t)(r->start[s] + p) * H;
            const float *pos = m->bw.pos + (size_t)p * H;
            for (int j = 0; j < H; j++)
                xr[j] = xr[j] + m->bw.type0[j] + pos[j];
        }
    mm_tops_add_layernorm(x, H, NULL, 0, m->bw.ln_w, m->bw.ln_b, T, H, c->eps);

    for (int l = 0; l < c->layers; l++) {
        const bert_layer_t *L = &m->bl[l];
        /* BertSelfAttention */
        mm_nn_linear(r->qkv, 3 * H, x, H, L->wqkv, L->bqkv, T, H, 3 * H, MM_ACT_NONE);
        attn_job_t aj = {.r = r, .lens = lens, .n = n, .heads = c->heads, .group = 1, .D = D, .ldq = 3 * H,
                         .ldo = H, .koff = H, .voff = 2 * H, .causal = 0, .scale = scale};
        mm_nn_parallel(attn_part, &aj);
        /* BertSelfOutput: LayerNorm(dense(a) + x) */
        mm_nn_linear(r->y, H, r->att, H, L->wo, L->bo, T, H, H, MM_ACT_NONE);
        mm_tops_add_layernorm(x, H, r->y, H, L->ln1_w, L->ln1_b, T, H, c->eps);
        /* BertIntermediate + BertOutput, FF_BLOCK rows at a time */
        for (int t0 = 0; t0 < T; t0 += FF_BLOCK) {
            int nt = MM_MIN(FF_BLOCK, T - t0);
            float *xb = x + (size_t)t0 * H, *yb = r->y + (size_t)t0 * H;
            /* exact-erf GELU fused into the product; other activations apart */
            const int fused = c->act == MM_TOPS_GELU;
            mm_nn_linear(r->ff, F, xb, H, L->wi, L->bi, nt, H, F, fused ? MM_ACT_GELU : MM_ACT_NONE);
            if (!fused)
                mm_tops_act(r->ff, (size_t)nt * F, c->act);
            mm_nn_linear(yb, H, r->ff, F, L->wout, L->bout, nt, F, H, MM_ACT_NONE);
            mm_tops_add_layernorm(xb, H, yb, H, L->ln2_w, L->ln2_b, nt, H, c->eps);
        }
    }
}

/* One pass of Qwen3 over n packed sequences; leaves the final-normed last
 * hidden state in r->x. */
static void qwen3_forward(mm_tm_runner_t *r, const int32_t *const *ids, const int *lens, int n)
{
    const mm_tm_t *m = r->m;
    const tm_config_t *c = &m->c;
    const int H = c->hidden, F = c->inter, D = c->head_dim, T = r->start[n];
    const int Q = c->heads * D, KV = c->kv_heads * D, ld = r->ld_qkv;
    const int group = c->heads / c->kv_heads;
    const float scale = 1.0f / sqrtf((float)D);
    float *x = r->x;

    embed_tokens(m, ids, lens, n, x);
    for (int l = 0; l < c->layers; l++) {
        const qwen3_layer_t *L = &m->ql[l];
        /* Qwen3Attention */
        mm_tops_rmsnorm(r->y, H, x, H, L->in_norm, T, H, c->eps);
        mm_nn_linear(r->qkv, ld, r->y, H, L->wqkv, L->bqkv, T, H, ld, MM_ACT_NONE);
        for (int t = 0; t < T; t++) {
            float *row = r->qkv + (size_t)t * ld;
            mm_tops_rmsnorm(row, D, row, D, L->q_norm, c->heads, D, c->eps);
            mm_tops_rmsnorm(row + Q, D, row + Q, D, L->k_norm, c->kv_heads, D, c->eps);
        }
        for (int s = 0; s < n; s++)
            mm_tops_rope(r->qkv + (size_t)r->start[s] * ld, ld, lens[s], c->heads + c->kv_heads, D, m->rope_cos,
                         m->rope_sin);
        attn_job_t aj = {.r = r, .lens = lens, .n = n, .heads = c->heads, .group = group, .D = D, .ldq = ld,
                         .ldo = Q, .koff = Q, .voff = Q + KV, .causal = 1, .scale = scale};
        mm_nn_parallel(attn_part, &aj);
        mm_nn_linear(r->y, H, r->att, Q, L->wo, L->bo, T, Q, H, MM_ACT_NONE);
        for (size_t i = 0; i < (size_t)T * H; i++)
            x[i] += r->y[i];
        /* Qwen3MLP, FF_BLOCK rows at a time */
        for (int t0 = 0; t0 < T; t0 += FF_BLOCK) {
            int nt = MM_MIN(FF_BLOCK, T - t0);
            float *xb = x + (size_t)t0 * H, *yb = r->y + (size_t)t0 * H;
            mm_tops_rmsnorm(yb, H, xb, H, L->post_norm, nt, H, c->eps);
            mm_nn_linear(r->ff, 2 * F, yb, H, L->wgu, NULL, nt, H, 2 * F, MM_ACT_NONE);
            mm_tops_swiglu(r->ff2, F, r->ff, 2 * F, nt, F);
            mm_nn_linear(yb, H, r->ff2, F, L->wdown, NULL, nt, F, H, MM_ACT_NONE);
            for (size_t i = 0; i < (size_t)nt * H; i++)
                xb[i] += yb[i];
        }
    }
    mm_tops_rmsnorm(x, H, x, H, m->qw.norm, T, H, c->eps);
}

/* out (n, hidden) from r->x by the model's pooling. */
static void pool(const mm_tm_runner_t *r, const int *lens, int n, float *out)
{
    const int H = r->m->c.hidden;
    for (int s = 0; s < n; s++) {
        const float *x = r->x + (size_t)r->start[s] * H;
        float *o = out + (size_t)s * H;
        switch (r->m->info.pooling) {
        case MM_TM_POOL_CLS:
            memcpy(o, x, (size_t)H * sizeof(float));
            break;
        case MM_TM_POOL_LAST:
            memcpy(o, x + (size_t)(lens[s] - 1) * H, (size_t)H * sizeof(float));
            break;
        default:
            for (int j = 0; j < H; j++) {
                double acc = 0;
                for (int p = 0; p < lens[s]; p++)
                    acc += x[(size_t)p * H + j];
                o[j] = (float)(acc / lens[s]);
            }
        }
    }
}

/* ================================================================= API */

mm_tm_runner_t *mm_tm_runner_new(const mm_tm_t *m, int max_batch, int threads)
{
    if (max_batch < 1)
        return NULL;
    const tm_config_t *c = &m->c;
    mm_tm_runner_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    int mt = m->info.max_tokens;
    r->m = m;
    r->max_batch = max_batch;
    long cap = (long)max_batch * mt;
    r->cap = (int)MM_MAX((long)mt, MM_MIN(cap, (long)PASS_TOKENS));
    r->ld_qkv = (c->heads + 2 * c->kv_heads) * c->head_dim;
    size_t T = (size_t)r->cap, H = (size_t)c->hidden, Q = (size_t)c->heads * c->head_dim;
    size_t ffw = c->arch == ARCH_QWEN3 ? 2 * (size_t)c->inter : (size_t)c->inter;
    r->x = malloc(T * H * sizeof(float));
    r->y = malloc(T * H * sizeof(float));
    r->qkv = malloc(T * r->ld_qkv * sizeof(float));
    r->att = malloc(T * Q * sizeof(float));
    r->ff = malloc(FF_BLOCK * ffw * sizeof(float));
    r->ff2 = c->arch == ARCH_QWEN3 ? malloc(FF_BLOCK * (size_t)c->inter * sizeof(float)) : NULL;
    r->threads = threads < 1 ? 1 : threads;
    r->scores = malloc((size_t)r->threads * MM_TOPS_QBLOCK * mt * sizeof(float));
    r->start = malloc(((size_t)max_batch + 1) * sizeof(int));
    if (!r->x || !r->y || !r->qkv || !r->att || !r->ff || (c->arch == ARCH_QWEN3 && !r->ff2) ||
        !r->scores || !r->start) {
        mm_tm_runner_free(r);
        return NULL;
    }
    /* attention's OpenBLAS products run one per pool part (sequence x head),
     * so OpenBLAS itself stays single-threaded */
    openblas_set_num_threads(1);
    if (threads >= 1)
        mm_nn_set_threads(threads);
    return r;
}

void mm_tm_runner_free(mm_tm_runner_t *r)
{
    if (!r)
        return;
    free(r->x);
    free(r->y);
    free(r->qkv);
    free(r->att);
    free(r->ff);
    free(r->ff2);
    free(r->scores);
    free(r->start);
    free(r);
}

int mm_tm_encode(mm_tm_runner_t *r, const int32_t *const *ids, const int *lens, int n, float *out)
{
    const mm_tm_t *m = r->m;
    if (n < 0)
        return MM_E_INVALID;
    for (int s = 0; s < n; s++) {
        if (lens[s] < 1)
            return MM_E_INVALID;
        if (lens[s] > m->info.max_tokens)
            return MM_E_TOOBIG;
        for (int p = 0; p < lens[s]; p++)
            if (ids[s][p] < 0 || ids[s][p] >= m->c.vocab)
                return MM_E_INVALID;
    }
    /* the pool is process-wide: another runner may have resized it (and
     * attention needs one scores block per part) */
    if (mm_nn_threads() != r->threads)
        mm_nn_set_threads(r->threads);
    /* passes: as many whole sequences as fit in the scratch */
    for (int s0 = 0; s0 < n;) {
        int k = 0, t = 0;
        r->start[0] = 0;
        while (s0 + k < n && k < r->max_batch && t + lens[s0 + k] <= r->cap) {
            t += lens[s0 + k];
            r->start[++k] = t;
        }
        if (m->c.arch == ARCH_BERT)
            bert_forward(r, ids + s0, lens + s0, k);
        else
            qwen3_forward(r, ids + s0, lens + s0, k);
        pool(r, lens + s0, k, out + (size_t)s0 * m->c.hidden);
        s0 += k;
    }
    return MM_OK;
}

/* ---------------------------------------------------------------- encoder interface */

static int tm_load(const char *dir, mm_dtype_t dt, void **model, char *err, size_t errlen)
{
    mm_tm_t *m;
    int rc = mm_tm_load_as(dir, dt, &m, err, errlen);
    *model = rc ? NULL : m;
    return rc;
}

static void tm_free(void *model)
{
    mm_tm_free(model);
}

static void tm_info(const void *model, mm_enc_info_t *o)
{
    const mm_tm_info_t *ti = mm_tm_info(model);
    *o = (mm_enc_info_t){.arch = ti->arch, .dim = ti->dim, .max_tokens = ti->max_tokens,
                         .vocab_size = ti->vocab_size, .has_text = 1, .takes_ids = 1,
                         .append_eos_id = ti->append_eos_id, .dtype = ti->dtype, .compute = ti->compute,
                         .pack_cache = ti->pack_cache, .weight_bytes = mm_tm_weight_bytes(model)};
}

static void *tm_runner_new(const void *model, int max_batch, int max_images, int threads)
{
    (void)max_images;
    return mm_tm_runner_new(model, max_batch, threads);
}

static void tm_runner_free(void *r)
{
    mm_tm_runner_free(r);
}

static int tm_encode(const void *model, void *runner, const mm_input_t *in, int n, float *out)
{
    const int32_t *ids[64];
    int lens[64];
    const int d = mm_tm_info(model)->dim;
    for (int base = 0; base < n; base += 64) {
        const int k = MM_MIN(64, n - base);
        for (int i = 0; i < k; i++) {
            const mm_input_t *x = &in[base + i];
            if (x->n_seg != 1 || x->seg->kind != MM_SEG_TEXT) return MM_E_UNSUPPORTED;   /* text only */
            ids[i] = x->seg->ids;
            lens[i] = x->seg->n_ids;
        }
        int rc = mm_tm_encode(runner, ids, lens, k, out + (size_t)base * d);
        if (rc) return rc;
    }
    return MM_OK;
}

const mm_encoder_ops_t mm_enc_textmodel = {
    .name = "textmodel", .load = tm_load, .free = tm_free, .info = tm_info, .runner_new = tm_runner_new,
    .runner_free = tm_runner_free, .encode = tm_encode,
};
