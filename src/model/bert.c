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

#include <stdlib.h>
#include <string.h>

#include "mmembed/backend.h"
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

static int parse_config(const mm_cfg_t *o, bert_config_t *c, char *err, size_t errlen)
{
    int rc;
    double eps;
    if ((rc = mm_tc_cfg_sizes(o, &c->vocab, &c->hidden, &c->layers, &c->heads, &c->inter, err, errlen)) ||
        (rc = mm_cfg_pos(o, "max_position_embeddings", 512, &c->max_pos, err, errlen)) ||
        (rc = mm_cfg_pos(o, "type_vocab_size", 2, &c->type_vocab, err, errlen)) ||
        (rc = mm_cfg_num(o, "layer_norm_eps", 1e-12, &eps, err, errlen)))
        return rc;
    c->eps = (float)eps;
    if (c->hidden % c->heads)
        return mm_cfg_errf(o, "hidden_size", err, errlen, MM_E_INVALID, "%d not divisible by %d heads", c->hidden,
                           c->heads);
    c->head_dim = c->hidden / c->heads;
    const char *pe = mm_cfg_str(o, "position_embedding_type");
    if (pe && strcmp(pe, "absolute"))
        return mm_cfg_errf(o, "position_embedding_type", err, errlen, MM_E_UNSUPPORTED,
                           "\"%s\" not supported (absolute)", pe);
    const char *act = mm_cfg_str(o, "hidden_act");
    if (!act || !strcmp(act, "gelu"))
        c->act = MM_TOPS_GELU;
    else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh"))
        c->act = MM_TOPS_GELU_TANH;
    else if (!strcmp(act, "relu"))
        c->act = MM_TOPS_RELU;
    else if (!strcmp(act, "silu") || !strcmp(act, "swish"))
        c->act = MM_TOPS_SILU;
    else
        return mm_cfg_errf(o, "hidden_act", err, errlen, MM_E_UNSUPPORTED,
                           "\"%s\" not supported (gelu, gelu_new, relu, silu)", act);
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

/* BertModel over n packed sequences on the runner's backend: r->x holds
 * the word embedding rows and r->dpos the positions; leaves the last
 * hidden state in r->x. */
static void forward(mm_tm_runner_t *r, const int *lens, int n)
{
    const bert_t *m = (const bert_t *)r->w;
    const bert_config_t *c = &m->c;
    mm_backend_t *be = r->be;
    const mm_backend_ops_t *o = be->ops;
    const int H = c->hidden, F = c->inter, D = c->head_dim, T = r->start[n];
    float *x = r->x;
    (void)lens;

    /* BertEmbeddings: (word + token_type[0]) + position[p], then LayerNorm */
    o->add_rows(be, x, H, m->type0, H, NULL, T, H);
    o->add_rows(be, x, H, m->pos, H, r->dpos, T, H);
    o->add_layer_norm(be, x, H, NULL, 0, m->ln_w, m->ln_b, T, H, c->eps);

    for (int l = 0; l < c->layers; l++) {
        const bert_layer_t *L = &m->l[l];
        /* BertSelfAttention */
        o->linear(be, r->qkv, 3 * H, x, H, L->wqkv, L->bqkv, T, H, 3 * H, MM_ACT_NONE, 0);
        o->attention_gqa(be, r->att, H, r->qkv, 3 * H, r->qkv + H, 3 * H, r->qkv + 2 * H, 3 * H, &r->seqs, c->heads,
                         c->heads, D, 0);
        /* BertSelfOutput: LayerNorm(dense(a) + x) */
        o->linear(be, r->y, H, r->att, H, L->wo, L->bo, T, H, H, MM_ACT_NONE, 0);
        o->add_layer_norm(be, x, H, r->y, H, L->ln1_w, L->ln1_b, T, H, c->eps);
        /* BertIntermediate + BertOutput, MM_TC_FF_BLOCK rows at a time */
        for (int t0 = 0; t0 < T; t0 += MM_TC_FF_BLOCK) {
            int nt = MM_MIN(MM_TC_FF_BLOCK, T - t0);
            float *xb = x + (size_t)t0 * H, *yb = r->y + (size_t)t0 * H;
            /* exact-erf GELU fused into the product; other activations apart */
            const int fused = c->act == MM_TOPS_GELU;
            o->linear(be, r->ff, F, xb, H, L->wi, L->bi, nt, H, F, fused ? MM_ACT_GELU : MM_ACT_NONE, 0);
            if (!fused)
                o->act(be, r->ff, (size_t)nt * F, c->act);
            o->linear(be, yb, H, r->ff, F, L->wout, L->bout, nt, F, H, MM_ACT_NONE, 0);
            o->add_layer_norm(be, xb, H, yb, H, L->ln2_w, L->ln2_b, nt, H, c->eps);
        }
    }
}

/* The weights on a backend: a copy of the struct, its pointers be's. */
static void dev_free(mm_tm_t *tm, mm_backend_t *be)
{
    bert_t *d = (bert_t *)tm;
    mm_tc_dev_release(be, d->pos), mm_tc_dev_release(be, d->type0);
    mm_tc_dev_release(be, d->ln_w), mm_tc_dev_release(be, d->ln_b);
    for (int l = 0; d->l && l < d->c.layers; l++) {
        bert_layer_t *L = &d->l[l];
        mm_tc_dev_dense_free(be, L->wqkv), mm_tc_dev_dense_free(be, L->wo);
        mm_tc_dev_dense_free(be, L->wi), mm_tc_dev_dense_free(be, L->wout);
        const float *v[] = {L->bqkv, L->bo, L->ln1_w, L->ln1_b, L->bi, L->bout, L->ln2_w, L->ln2_b};
        for (size_t i = 0; i < MM_ARRAY_LEN(v); i++)
            mm_tc_dev_release(be, v[i]);
    }
    free(d->l);
    free(d);
}

static int dev_new(const mm_tm_t *tm, mm_backend_t *be, mm_tm_t **out)
{
    const bert_t *m = (const bert_t *)tm;
    const bert_config_t *c = &m->c;
    const size_t H = (size_t)c->hidden, F = (size_t)c->inter;
    *out = NULL;
    bert_t *d = malloc(sizeof(*d));
    if (!d)
        return MM_E_NOMEM;
    *d = *m;
    d->pos = d->type0 = d->ln_w = d->ln_b = NULL;
    if (!(d->l = calloc((size_t)c->layers, sizeof(*d->l)))) {
        free(d);
        return MM_E_NOMEM;
    }
    int bad = mm_tc_dev_const(be, &d->pos, m->pos, (size_t)c->max_pos * H) ||
              mm_tc_dev_const(be, &d->type0, m->type0, H) || mm_tc_dev_const(be, &d->ln_w, m->ln_w, H) ||
              mm_tc_dev_const(be, &d->ln_b, m->ln_b, H);
    for (int l = 0; !bad && l < c->layers; l++) {
        const bert_layer_t *s = &m->l[l];
        bert_layer_t *L = &d->l[l];
        bad = mm_tc_dev_dense(be, &L->wqkv, s->wqkv) || mm_tc_dev_const(be, &L->bqkv, s->bqkv, 3 * H) ||
              mm_tc_dev_dense(be, &L->wo, s->wo) || mm_tc_dev_const(be, &L->bo, s->bo, H) ||
              mm_tc_dev_const(be, &L->ln1_w, s->ln1_w, H) || mm_tc_dev_const(be, &L->ln1_b, s->ln1_b, H) ||
              mm_tc_dev_dense(be, &L->wi, s->wi) || mm_tc_dev_const(be, &L->bi, s->bi, F) ||
              mm_tc_dev_dense(be, &L->wout, s->wout) || mm_tc_dev_const(be, &L->bout, s->bout, H) ||
              mm_tc_dev_const(be, &L->ln2_w, s->ln2_w, H) || mm_tc_dev_const(be, &L->ln2_b, s->ln2_b, H);
    }
    if (bad) {
        dev_free(&d->tm, be);
        return MM_ERR;
    }
    *out = &d->tm;
    return MM_OK;
}

const mm_tc_arch_t mm_tc_bert = {.name = "bert", .forward = forward, .free = bert_free, .dev_new = dev_new,
                                 .dev_free = dev_free};

/* ============================================================ load */

/* mm_enc_bert.load; see mm_tm_load_as (textmodel.h) for the contract.
 * dir's config.json describes a BertModel (the registry or mm_tm_load_as chose
 * this file by it). *out is an mm_tm_t. */
static int load(const char *dir, const mm_cfg_t *cfg, mm_dtype_t dtype, void **out, char *err, size_t errlen)
{
    *out = NULL;
    bert_t *m = calloc(1, sizeof(*m));
    if (!m)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    int rc, max_seq = 0;
    if ((rc = mm_tc_init(&m->tm, &mm_tc_bert, dir, dtype, err, errlen)))
        goto fail;
    rc = parse_config(cfg, &m->c, err, errlen);
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
    .runner_new = mm_tc_enc_runner_new, .runner_new_on = mm_tc_enc_runner_new_on,
    .runner_free = mm_tc_enc_runner_free, .encode = mm_tc_enc_encode,
};
