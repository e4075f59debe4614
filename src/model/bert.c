/* BERT: BertModel-shaped encoders (all-MiniLM, bge, e5, gte ...) from
 * Hugging Face folders. Read next to transformers' modeling_bert.py; the
 * forward pass follows its order.
 *
 *   embeddings   x = word[id] + token_type[0] + position[p]   (absolute, p
 *                from 0 per sequence; token types are all 0 for one text)
 *                x = LayerNorm(x)
 *   layer l      q|k|v = x Wqkv^T + b          (one GEMM, weights stacked)
 *                a = softmax(q k^T / sqrt(hd)) v   per head, all keys of
 *                    the sequence (no padding exists: see textcommon.c)
 *                x = LayerNorm(a Wo^T + bo + x)          attention.output
 *                x = LayerNorm(act(x Wi^T + bi) Wout^T + bout + x)
 *   pooling      mean over the tokens, or the first ([CLS]) token, from the
 *                sentence-transformers files (mean when there are none)
 *   (pooler.dense is not part of the sentence embedding; never loaded)
 *
 * Sections: config, weights, forward, encoder ops. */
#include "textcommon.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "mmembed/common.h"
#include "mmembed/textops.h"

/* ============================================================ config */

typedef struct {
    int vocab;        /* vocab_size */
    int hidden;       /* hidden_size */
    int layers;       /* num_hidden_layers */
    int heads;        /* num_attention_heads */
    int head_dim;     /* hidden / heads */
    int inter;        /* intermediate_size */
    int max_pos;      /* max_position_embeddings */
    int type_vocab;   /* type_vocab_size */
    float eps;        /* layer_norm_eps */
    mm_tops_act_t act;/* hidden_act */
} bert_config_t;

static int parse_config(json_object *o, bert_config_t *c, char *err, size_t errlen)
{
    int rc;
    double eps;
    if ((rc = mm_tc_cfg_sizes(o, &c->vocab, &c->hidden, &c->layers, &c->heads, &c->inter, err, errlen)) ||
        (rc = mm_tc_cfg_int(o, "max_position_embeddings", 512, &c->max_pos, err, errlen)) ||
        (rc = mm_tc_cfg_int(o, "type_vocab_size", 2, &c->type_vocab, err, errlen)) ||
        (rc = mm_tc_cfg_num(o, "layer_norm_eps", 1e-12, &eps, err, errlen)))
        return rc;
    c->eps = (float)eps;
    if (c->hidden % c->heads)
        return mm_errf(err, errlen, MM_E_INVALID, "config.json: hidden_size %d not divisible by %d heads",
                       c->hidden, c->heads);
    c->head_dim = c->hidden / c->heads;
    const char *pe = mm_tc_jstr(o, "position_embedding_type");
    if (pe && strcmp(pe, "absolute"))
        return mm_errf(err, errlen, MM_E_UNSUPPORTED,
                       "config.json: position_embedding_type \"%s\" not supported (absolute)", pe);
    const char *act = mm_tc_jstr(o, "hidden_act");
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

/* ============================================================ weights */

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
    mm_tm_t tm;          /* first: the common part; tok_emb is word_embeddings */
    bert_config_t c;
    const float *pos;    /* (max_pos, hidden) position_embeddings */
    const float *type0;  /* (hidden) token_type_embeddings row 0 */
    const float *ln_w;   /* (hidden) embeddings.LayerNorm */
    const float *ln_b;   /* (hidden) */
    bert_layer_t *l;     /* (layers) */
} bert_t;

static int walk(mm_tc_walk_t *w, mm_tm_t *tm)
{
    bert_t *m = (bert_t *)tm;
    const bert_config_t *c = &m->c;
    int64_t H = c->hidden, F = c->inter;
    int rc;
    /* only row 0 of token_type_embeddings is read: one region of H floats */
    if ((rc = mm_tc_walk_table(w, tm, c->vocab, H, "embeddings.word_embeddings.weight")) ||
        (rc = mm_tc_walk_one(w, &m->pos, 2, c->max_pos, H, "embeddings.position_embeddings.weight")) ||
        (rc = mm_tc_walk_row0(w, &m->type0, c->type_vocab, H, "embeddings.token_type_embeddings.weight")) ||
        (rc = mm_tc_walk_one(w, &m->ln_w, 1, H, 0, "embeddings.LayerNorm.weight")) ||
        (rc = mm_tc_walk_one(w, &m->ln_b, 1, H, 0, "embeddings.LayerNorm.bias")))
        return rc;
    for (int l = 0; l < c->layers; l++) {
        bert_layer_t *L = &m->l[l];
        L->wqkv = mm_tc_walk_lin_begin(w);
        if ((rc = mm_tc_walk_part(w, 2, H, H, "encoder.layer.%d.attention.self.query.weight", l)) ||
            (rc = mm_tc_walk_part(w, 2, H, H, "encoder.layer.%d.attention.self.key.weight", l)) ||
            (rc = mm_tc_walk_part(w, 2, H, H, "encoder.layer.%d.attention.self.value.weight", l)) ||
            (rc = mm_tc_walk_lin_end(w, 3 * H, H)))
            return rc;
        L->bqkv = mm_tc_walk_begin(w);
        if ((rc = mm_tc_walk_part(w, 1, H, 0, "encoder.layer.%d.attention.self.query.bias", l)) ||
            (rc = mm_tc_walk_part(w, 1, H, 0, "encoder.layer.%d.attention.self.key.bias", l)) ||
            (rc = mm_tc_walk_part(w, 1, H, 0, "encoder.layer.%d.attention.self.value.bias", l)) ||
            (L->wo = mm_tc_walk_lin_begin(w), 0) ||
            (rc = mm_tc_walk_part(w, 2, H, H, "encoder.layer.%d.attention.output.dense.weight", l)) ||
            (rc = mm_tc_walk_lin_end(w, H, H)) ||
            (rc = mm_tc_walk_one(w, &L->bo, 1, H, 0, "encoder.layer.%d.attention.output.dense.bias", l)) ||
            (rc = mm_tc_walk_one(w, &L->ln1_w, 1, H, 0, "encoder.layer.%d.attention.output.LayerNorm.weight", l)) ||
            (rc = mm_tc_walk_one(w, &L->ln1_b, 1, H, 0, "encoder.layer.%d.attention.output.LayerNorm.bias", l)) ||
            (L->wi = mm_tc_walk_lin_begin(w), 0) ||
            (rc = mm_tc_walk_part(w, 2, F, H, "encoder.layer.%d.intermediate.dense.weight", l)) ||
            (rc = mm_tc_walk_lin_end(w, F, H)) ||
            (rc = mm_tc_walk_one(w, &L->bi, 1, F, 0, "encoder.layer.%d.intermediate.dense.bias", l)) ||
            (L->wout = mm_tc_walk_lin_begin(w), 0) ||
            (rc = mm_tc_walk_part(w, 2, H, F, "encoder.layer.%d.output.dense.weight", l)) ||
            (rc = mm_tc_walk_lin_end(w, H, F)) ||
            (rc = mm_tc_walk_one(w, &L->bout, 1, H, 0, "encoder.layer.%d.output.dense.bias", l)) ||
            (rc = mm_tc_walk_one(w, &L->ln2_w, 1, H, 0, "encoder.layer.%d.output.LayerNorm.weight", l)) ||
            (rc = mm_tc_walk_one(w, &L->ln2_b, 1, H, 0, "encoder.layer.%d.output.LayerNorm.bias", l)))
            return rc;
    }
    return MM_OK;
}

static void bert_free(mm_tm_t *tm)
{
    free(((bert_t *)tm)->l);
}

/* ============================================================ forward */

/* BertModel over n packed sequences: r->x holds the word embedding rows
 * and r->pos the positions; leaves the last hidden state in r->x. */
static void forward(mm_tm_runner_t *r, const int *lens, int n)
{
    const bert_t *m = (const bert_t *)r->m;
    const bert_config_t *c = &m->c;
    const int H = c->hidden, F = c->inter, D = c->head_dim, T = r->start[n];
    float *x = r->x;

    /* BertEmbeddings */
    for (int t = 0; t < T; t++) {
        float *xr = x + (size_t)t * H;
        const float *pos = m->pos + (size_t)r->pos[t] * H;
        for (int j = 0; j < H; j++)
            xr[j] = xr[j] + m->type0[j] + pos[j];
    }
    mm_tops_add_layernorm(x, H, NULL, 0, m->ln_w, m->ln_b, T, H, c->eps);

    for (int l = 0; l < c->layers; l++) {
        const bert_layer_t *L = &m->l[l];
        /* BertSelfAttention */
        mm_nn_linear(r->qkv, 3 * H, x, H, L->wqkv, L->bqkv, T, H, 3 * H, MM_ACT_NONE);
        mm_tc_attention(r, lens, n, c->heads, 1, D, H, 2 * H, 0);
        /* BertSelfOutput: LayerNorm(dense(a) + x) */
        mm_nn_linear(r->y, H, r->att, H, L->wo, L->bo, T, H, H, MM_ACT_NONE);
        mm_tops_add_layernorm(x, H, r->y, H, L->ln1_w, L->ln1_b, T, H, c->eps);
        /* BertIntermediate + BertOutput, MM_TC_FF_BLOCK rows at a time */
        for (int t0 = 0; t0 < T; t0 += MM_TC_FF_BLOCK) {
            int nt = MM_MIN(MM_TC_FF_BLOCK, T - t0);
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

const mm_tc_arch_t mm_tc_bert = {.name = "bert", .forward = forward, .free = bert_free};

/* ============================================================ load */

/* mm_enc_bert.load; see mm_tm_load_as (textmodel.h) for the contract.
 * dir's config.json describes a BertModel (the registry or mm_tm_load_as chose
 * this file by it). *out is an mm_tm_t. */
static int load(const char *dir, mm_dtype_t dtype, void **out, char *err, size_t errlen)
{
    *out = NULL;
    bert_t *m = calloc(1, sizeof(*m));
    if (!m)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    int rc, max_seq = 0;
    json_object *cfg = NULL;
    if ((rc = mm_tc_init(&m->tm, &mm_tc_bert, dir, dtype, err, errlen)) ||
        !(cfg = mm_tc_config_read(dir, &rc, err, errlen)))
        goto fail;
    rc = parse_config(cfg, &m->c, err, errlen);
    json_object_put(cfg);
    m->tm.info.pooling = MM_TM_POOL_MEAN;
    if (rc || (rc = mm_tc_st_files(dir, &m->tm.info.pooling, &max_seq, err, errlen)))
        goto fail;
    const bert_config_t *c = &m->c;
    m->tm.vocab = c->vocab;
    m->tm.hidden = c->hidden;
    m->tm.ld_qkv = 3 * c->hidden;
    m->tm.att_width = c->hidden;
    m->tm.ff_width = c->inter;
    if (!(m->l = calloc((size_t)c->layers, sizeof(*m->l)))) {
        rc = mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = mm_tc_pack(&m->tm, dir, "embeddings.word_embeddings.weight", walk, err, errlen)))
        goto fail;
    mm_tc_finish(&m->tm, c->max_pos, max_seq, c->layers, c->heads, -1);
    *out = &m->tm;   /* == m: mm_tm_t comes first */
    return MM_OK;
fail:
    mm_tm_free(&m->tm);
    return rc;
}

/* ============================================================ encoder ops */

const mm_encoder_ops_t mm_enc_bert = {
    .name = "bert", .load = load, .free = mm_tc_enc_free, .info = mm_tc_enc_info,
    .runner_new = mm_tc_enc_runner_new, .runner_free = mm_tc_enc_runner_free, .encode = mm_tc_enc_encode,
};
