/* Qwen3: Qwen3Model decoders used as embedders (Qwen3-Embedding) from
 * Hugging Face folders. Read next to transformers' modeling_qwen3.py; the
 * forward pass follows its order.
 *
 *   x = embed_tokens[id]          (or input rows the caller made:
 *                                  mm_qwen3_forward_embeds)
 *   layer l      h = RMSNorm(x) * input_layernorm
 *                q|k|v = h Wqkv^T (+ b when attention_bias)
 *                q = RMSNorm_hd(q) * q_norm; k = RMSNorm_hd(k) * k_norm
 *                    (per head, BEFORE rotary)
 *                q, k = rotary(q, k, p)   rotate_half: pairs (i, i + hd/2),
 *                    inv_freq_i = rope_theta^(-2i/hd), p the token's
 *                    position (0..len-1 for token ids; the caller's
 *                    otherwise)
 *                a = softmax(q k^T / sqrt(hd) + causal) v, query head h
 *                    reads kv head h / (heads / kv_heads)
 *                x = x + a Wo^T
 *                h = RMSNorm(x) * post_attention_layernorm
 *                x = x + (silu(h Wg^T) * (h Wu^T)) Wd^T
 *   x = RMSNorm(x) * norm;  pooled at the last token (the EOS the caller
 *   appends, as Qwen3-Embedding does)
 *
 * Sections: config, weights, rotary, forward, load, API, encoder ops. */
#include "mmembed/qwen3.h"
#include "textcommon.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mmembed/backend.h"
#include "mmembed/common.h"
#include "mmembed/textops.h"

/* ============================================================ config */


/* mrope_section: three positive ints summing to head_dim / 2. */
static int parse_mrope(const mm_cfg_t *rs, mm_q3_config_t *c, char *err, size_t errlen)
{
    int rc = mm_cfg_ints(rs, "mrope_section", c->mrope, 3, err, errlen), sum = 0;
    if (rc == MM_E_NOTFOUND)
        return MM_OK;
    if (rc)
        return rc;
    for (int i = 0; i < 3; i++) {
        if (c->mrope[i] < 1)
            return mm_cfg_errf(rs, "mrope_section", err, errlen, MM_E_INVALID, "entries must be positive");
        sum += c->mrope[i];
    }
    if (sum != c->head_dim / 2)
        return mm_cfg_errf(rs, "mrope_section", err, errlen, MM_E_INVALID, "sums to %d, head_dim / 2 is %d", sum,
                           c->head_dim / 2);
    return MM_OK;
}

int mm_q3_parse_config(const mm_cfg_t *o, int qwen2, mm_q3_config_t *c, char *err, size_t errlen)
{
    int rc;
    double eps;
    memset(c, 0, sizeof *c);
    if ((rc = mm_tc_cfg_sizes(o, &c->vocab, &c->hidden, &c->layers, &c->heads, &c->inter, err, errlen)) ||
        (rc = mm_cfg_pos(o, "max_position_embeddings", 32768, &c->max_pos, err, errlen)) ||
        (rc = mm_cfg_pos(o, "num_key_value_heads", c->heads, &c->kv_heads, err, errlen)) ||
        (rc = mm_cfg_pos(o, "head_dim", c->hidden / c->heads, &c->head_dim, err, errlen)) ||
        (rc = mm_cfg_num(o, "rms_norm_eps", 1e-6, &eps, err, errlen)))
        return rc;
    c->eps = (float)eps;
    if (c->heads % c->kv_heads)
        return mm_cfg_errf(o, "num_attention_heads", err, errlen, MM_E_INVALID,
                           "%d not a multiple of num_key_value_heads %d", c->heads, c->kv_heads);
    if (c->head_dim % 2)
        return mm_cfg_errf(o, "head_dim", err, errlen, MM_E_INVALID, "%d is odd", c->head_dim);
    const char *act = mm_cfg_str(o, "hidden_act");
    if (act && strcmp(act, "silu"))
        return mm_cfg_errf(o, "hidden_act", err, errlen, MM_E_UNSUPPORTED, "\"%s\" not supported (silu)", act);
    if (mm_cfg_bool(o, "use_sliding_window"))
        return mm_cfg_errf(o, "use_sliding_window", err, errlen, MM_E_UNSUPPORTED, "not supported");
    c->attn_bias = qwen2 || mm_cfg_bool(o, "attention_bias");
    c->o_bias = !qwen2 && c->attn_bias;
    c->qk_norm = !qwen2;

    /* rope_theta: transformers <= 4 top-level, >= 5 under rope_parameters.
     * Only the plain rotary ("default") is implemented. */
    mm_cfg_t sets[2];
    mm_cfg_sub(o, "rope_parameters", &sets[0]);
    mm_cfg_sub(o, "rope_scaling", &sets[1]);
    if ((rc = mm_cfg_num(o, "rope_theta", 10000.0, &c->rope_theta, err, errlen)) ||
        (rc = mm_cfg_num(&sets[0], "rope_theta", c->rope_theta, &c->rope_theta, err, errlen)))
        return rc;
    for (int i = 0; i < 2; i++) {
        const char *t = mm_cfg_str(&sets[i], "rope_type");
        if (!t)
            t = mm_cfg_str(&sets[i], "type");
        /* Qwen2-VL's M-RoPE: "mrope" (transformers 4) or "default" with an
         * mrope_section (transformers 5) */
        if (t && strcmp(t, "default") && !(qwen2 && !strcmp(t, "mrope")))
            return mm_cfg_errf(&sets[i], "rope_type", err, errlen, MM_E_UNSUPPORTED, "\"%s\" not supported (default)",
                               t);
        if (qwen2 && (rc = parse_mrope(&sets[i], c, err, errlen)))
            return rc;
    }

    c->eos_id = mm_cfg_first_int(o, "eos_token_id", -1);
    if (!qwen2 && (c->eos_id < 0 || c->eos_id >= c->vocab))
        return mm_cfg_errf(o, "eos_token_id", err, errlen, MM_E_INVALID, "missing or outside the vocabulary");
    return MM_OK;
}

/* ============================================================ weights */


int mm_q3_walk(mm_tc_walk_t *w, mm_tm_t *tm)
{
    mm_q3_t *m = (mm_q3_t *)tm;
    const mm_q3_config_t *c = &m->c;
    int64_t H = c->hidden, F = c->inter, D = c->head_dim;
    int64_t Q = (int64_t)c->heads * D, KV = (int64_t)c->kv_heads * D;
    int rc;
    if ((rc = mm_tc_walk_table(w, tm, c->vocab, H, "embed_tokens.weight")))
        return rc;
    for (int l = 0; l < c->layers; l++) {
        mm_q3_layer_t *L = &m->l[l];
        if ((rc = mm_tc_walk_one(w, &L->in_norm, 1, H, 0, "layers.%d.input_layernorm.weight", l)))
            return rc;
        L->wqkv = mm_tc_walk_lin_begin(w);
        if ((rc = mm_tc_walk_part(w, 2, Q, H, "layers.%d.self_attn.q_proj.weight", l)) ||
            (rc = mm_tc_walk_part(w, 2, KV, H, "layers.%d.self_attn.k_proj.weight", l)) ||
            (rc = mm_tc_walk_part(w, 2, KV, H, "layers.%d.self_attn.v_proj.weight", l)) ||
            (rc = mm_tc_walk_lin_end(w, Q + 2 * KV, H)))
            return rc;
        L->bqkv = NULL;
        L->bo = NULL;
        if (c->attn_bias) {
            L->bqkv = mm_tc_walk_begin(w);
            if ((rc = mm_tc_walk_part(w, 1, Q, 0, "layers.%d.self_attn.q_proj.bias", l)) ||
                (rc = mm_tc_walk_part(w, 1, KV, 0, "layers.%d.self_attn.k_proj.bias", l)) ||
                (rc = mm_tc_walk_part(w, 1, KV, 0, "layers.%d.self_attn.v_proj.bias", l)))
                return rc;
        }
        if (c->o_bias && (rc = mm_tc_walk_one(w, &L->bo, 1, H, 0, "layers.%d.self_attn.o_proj.bias", l)))
            return rc;
        L->q_norm = L->k_norm = NULL;
        if (c->qk_norm &&
            ((rc = mm_tc_walk_one(w, &L->q_norm, 1, D, 0, "layers.%d.self_attn.q_norm.weight", l)) ||
             (rc = mm_tc_walk_one(w, &L->k_norm, 1, D, 0, "layers.%d.self_attn.k_norm.weight", l))))
            return rc;
        if ((L->wo = mm_tc_walk_lin_begin(w), 0) ||
            (rc = mm_tc_walk_part(w, 2, H, Q, "layers.%d.self_attn.o_proj.weight", l)) ||
            (rc = mm_tc_walk_lin_end(w, H, Q)) ||
            (rc = mm_tc_walk_one(w, &L->post_norm, 1, H, 0, "layers.%d.post_attention_layernorm.weight", l)))
            return rc;
        L->wgu = mm_tc_walk_lin_begin(w);
        if ((rc = mm_tc_walk_part(w, 2, F, H, "layers.%d.mlp.gate_proj.weight", l)) ||
            (rc = mm_tc_walk_part(w, 2, F, H, "layers.%d.mlp.up_proj.weight", l)) ||
            (rc = mm_tc_walk_lin_end(w, 2 * F, H)) ||
            (L->wdown = mm_tc_walk_lin_begin(w), 0) ||
            (rc = mm_tc_walk_part(w, 2, H, F, "layers.%d.mlp.down_proj.weight", l)) ||
            (rc = mm_tc_walk_lin_end(w, H, F)))
            return rc;
    }
    return mm_tc_walk_one(w, &m->norm, 1, H, 0, "norm.weight");
}

void mm_q3_free(mm_tm_t *tm)
{
    mm_q3_t *m = (mm_q3_t *)tm;
    free(m->l);
    free(m->rope_cos);
    free(m->rope_sin);
}

/* ============================================================ rotary */

/* cos / sin of position p times inv_freq_i, in f32 as HF's rotary module
 * computes them: inv_freq = 1 / theta^(2i/hd), freq = p * inv_freq. */
static int build_rope(mm_q3_t *m)
{
    int half = m->c.head_dim / 2, n = m->rope_rows;
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
    m->sec = (mm_q3_sections_t){.n = 1, .len = {half}};
    if (m->c.mrope[0])   /* M-RoPE: frequencies [0, t) read the time axis, then h, then w */
        m->sec = (mm_q3_sections_t){.n = 3, .len = {m->c.mrope[0], m->c.mrope[1], m->c.mrope[2]}};
    return MM_OK;
}

/* Each token's cos / sin row (T, head_dim / 2): the frequencies of section
 * a read the table at the token's position on axis a, pos[a * T + t].
 * Qwen3 has the one axis; M-RoPE fills sec from mrope_section and passes
 * (3, T) positions, and nothing after this step changes. */
static void rope_rows(const mm_q3_t *m, const int32_t *pos, int T, float *cos, float *sin)
{
    const size_t half = (size_t)m->c.head_dim / 2;
    for (int t = 0; t < T; t++) {
        size_t i0 = 0;
        for (int a = 0; a < m->sec.n; a++) {
            const size_t src = (size_t)pos[(size_t)a * T + t] * half + i0, n = (size_t)m->sec.len[a];
            memcpy(cos + t * half + i0, m->rope_cos + src, n * sizeof(float));
            memcpy(sin + t * half + i0, m->rope_sin + src, n * sizeof(float));
            i0 += n;
        }
    }
}

/* ============================================================ forward */

/* Qwen3Model over n packed sequences on the runner's backend: r->x holds
 * the input rows and r->pos their positions; leaves the final-normed last
 * hidden state in r->x. */
void mm_q3_forward(mm_tm_runner_t *r, const int *lens, int n)
{
    const mm_q3_t *m = (const mm_q3_t *)r->m, *w = (const mm_q3_t *)r->w;
    const mm_q3_config_t *c = &m->c;
    mm_backend_t *be = r->be;
    const mm_backend_ops_t *o = be->ops;
    const int H = c->hidden, F = c->inter, D = c->head_dim, T = r->start[n];
    const int Q = c->heads * D, KV = c->kv_heads * D, ld = r->m->ld_qkv;
    float *x = r->x;
    (void)lens;

    /* Qwen3RotaryEmbedding: the same cos / sin for every layer, built on
     * the host from the tables */
    rope_rows(m, r->pos, T, r->hcos, r->hsin);
    o->upload(be, r->rope_cos, r->hcos, (size_t)T * (D / 2) * sizeof(float));
    o->upload(be, r->rope_sin, r->hsin, (size_t)T * (D / 2) * sizeof(float));
    for (int l = 0; l < c->layers; l++) {
        const mm_q3_layer_t *L = &w->l[l];
        /* Qwen3Attention */
        o->rms_norm(be, r->y, H, x, H, L->in_norm, T, 1, H, c->eps);
        o->linear(be, r->qkv, ld, r->y, H, L->wqkv, L->bqkv, T, H, ld, MM_ACT_NONE, 0);
        if (c->qk_norm) {   /* per head, before rotary */
            o->rms_norm(be, r->qkv, ld, r->qkv, ld, L->q_norm, T, c->heads, D, c->eps);
            o->rms_norm(be, r->qkv + Q, ld, r->qkv + Q, ld, L->k_norm, T, c->kv_heads, D, c->eps);
        }
        o->rope(be, r->qkv, ld, T, c->heads + c->kv_heads, D, r->rope_cos, r->rope_sin);
        o->attention_gqa(be, r->att, Q, r->qkv, ld, r->qkv + Q, ld, r->qkv + Q + KV, ld, &r->seqs, c->heads,
                         c->kv_heads, D, 1);
        o->linear(be, r->y, H, r->att, Q, L->wo, L->bo, T, Q, H, MM_ACT_NONE, 0);
        o->add(be, x, r->y, (size_t)T * H);
        /* Qwen3MLP, MM_TC_FF_BLOCK rows at a time */
        for (int t0 = 0; t0 < T; t0 += MM_TC_FF_BLOCK) {
            int nt = MM_MIN(MM_TC_FF_BLOCK, T - t0);
            float *xb = x + (size_t)t0 * H, *yb = r->y + (size_t)t0 * H;
            o->rms_norm(be, yb, H, xb, H, L->post_norm, nt, 1, H, c->eps);
            o->linear(be, r->ff, 2 * F, yb, H, L->wgu, NULL, nt, H, 2 * F, MM_ACT_NONE, 0);
            o->swiglu(be, r->ff2, F, r->ff, 2 * F, nt, F);
            o->linear(be, yb, H, r->ff2, F, L->wdown, NULL, nt, F, H, MM_ACT_NONE, 0);
            o->add(be, xb, yb, (size_t)nt * H);
        }
    }
    o->rms_norm(be, x, H, x, H, w->norm, T, 1, H, c->eps);
}

/* ============================================================ on a backend */

void mm_q3_dev_clear(mm_q3_t *d, mm_backend_t *be)
{
    for (int l = 0; d->l && l < d->c.layers; l++) {
        mm_q3_layer_t *L = &d->l[l];
        mm_tc_dev_dense_free(be, L->wqkv), mm_tc_dev_dense_free(be, L->wo);
        mm_tc_dev_dense_free(be, L->wgu), mm_tc_dev_dense_free(be, L->wdown);
        const float *v[] = {L->in_norm, L->bqkv, L->q_norm, L->k_norm, L->bo, L->post_norm};
        for (size_t i = 0; i < MM_ARRAY_LEN(v); i++)
            mm_tc_dev_release(be, v[i]);
    }
    mm_tc_dev_release(be, d->norm);
    free(d->l);
    d->l = NULL;
    d->norm = NULL;
}

/* d starts as a copy of *m; its weight pointers become be's. The rotary
 * tables stay the host's (rope_rows reads them on the host). */
int mm_q3_dev_fill(const mm_q3_t *m, mm_backend_t *be, mm_q3_t *d)
{
    const mm_q3_config_t *c = &m->c;
    const size_t H = (size_t)c->hidden, D = (size_t)c->head_dim;
    const size_t QKV = (size_t)(c->heads + 2 * c->kv_heads) * D;
    d->norm = NULL;
    if (!(d->l = calloc((size_t)c->layers, sizeof(*d->l))))
        return MM_E_NOMEM;
    int bad = mm_tc_dev_const(be, &d->norm, m->norm, H);
    for (int l = 0; !bad && l < c->layers; l++) {
        const mm_q3_layer_t *s = &m->l[l];
        mm_q3_layer_t *L = &d->l[l];
        bad = mm_tc_dev_const(be, &L->in_norm, s->in_norm, H) || mm_tc_dev_dense(be, &L->wqkv, s->wqkv) ||
              mm_tc_dev_const(be, &L->bqkv, s->bqkv, QKV) || mm_tc_dev_const(be, &L->q_norm, s->q_norm, D) ||
              mm_tc_dev_const(be, &L->k_norm, s->k_norm, D) || mm_tc_dev_dense(be, &L->wo, s->wo) ||
              mm_tc_dev_const(be, &L->bo, s->bo, H) || mm_tc_dev_const(be, &L->post_norm, s->post_norm, H) ||
              mm_tc_dev_dense(be, &L->wgu, s->wgu) || mm_tc_dev_dense(be, &L->wdown, s->wdown);
    }
    if (bad) {
        mm_q3_dev_clear(d, be);
        return MM_ERR;
    }
    return MM_OK;
}

static void dev_free(mm_tm_t *tm, mm_backend_t *be)
{
    mm_q3_dev_clear((mm_q3_t *)tm, be);
    free(tm);
}

static int dev_new(const mm_tm_t *tm, mm_backend_t *be, mm_tm_t **out)
{
    *out = NULL;
    mm_q3_t *d = malloc(sizeof(*d));
    if (!d)
        return MM_E_NOMEM;
    *d = *(const mm_q3_t *)tm;
    int rc = mm_q3_dev_fill((const mm_q3_t *)tm, be, d);
    if (rc) {
        free(d);
        return rc;
    }
    *out = &d->tm;
    return MM_OK;
}

const mm_tc_arch_t mm_tc_qwen3 = {.name = "qwen3", .forward = mm_q3_forward, .free = mm_q3_free,
                                  .dev_new = dev_new, .dev_free = dev_free, .takes_embeds = 1};

/* ============================================================ load */

int mm_q3_setup(mm_q3_t *m, char *err, size_t errlen)
{
    const mm_q3_config_t *c = &m->c;
    m->tm.vocab = c->vocab;
    m->tm.hidden = c->hidden;
    m->tm.ld_qkv = (c->heads + 2 * c->kv_heads) * c->head_dim;
    m->tm.att_width = c->heads * c->head_dim;
    m->tm.ff_width = 2 * c->inter;
    m->tm.ff2_width = c->inter;
    m->tm.rope_half = c->head_dim / 2;
    m->tm.pos_axes = c->mrope[0] ? 3 : 1;
    if (!(m->l = calloc((size_t)c->layers, sizeof(*m->l))))
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    return MM_OK;
}

int mm_q3_finish(mm_q3_t *m, int max_seq, char *err, size_t errlen)
{
    const mm_q3_config_t *c = &m->c;
    mm_tc_finish(&m->tm, c->max_pos, max_seq, c->layers, c->heads, c->eos_id);
    m->rope_rows = m->tm.info.max_tokens;
    if (build_rope(m))
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    return MM_OK;
}

/* mm_enc_qwen3.load; see mm_tm_load_as (textmodel.h) for the contract.
 * dir's config.json describes a Qwen3Model (the registry or mm_tm_load_as chose
 * this file by it). *out is an mm_tm_t. */
static int load(const char *dir, const mm_cfg_t *cfg, mm_dtype_t dtype, void **out, char *err, size_t errlen)
{
    *out = NULL;
    mm_q3_t *m = calloc(1, sizeof(*m));
    if (!m)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    int rc, max_seq = 0;
    if ((rc = mm_tc_init(&m->tm, &mm_tc_qwen3, dir, dtype, err, errlen)))
        goto fail;
    rc = mm_q3_parse_config(cfg, 0, &m->c, err, errlen);
    m->tm.info.pooling = MM_TM_POOL_LAST;
    if (rc || (rc = mm_tc_st_files(dir, &m->tm.info.pooling, &max_seq, err, errlen)) ||
        (rc = mm_q3_setup(m, err, errlen)) ||
        (rc = mm_tc_pack(&m->tm, dir, "embed_tokens.weight", mm_q3_walk, err, errlen)) ||
        (rc = mm_q3_finish(m, max_seq, err, errlen)))
        goto fail;
    *out = &m->tm;   /* == m: mm_tm_t comes first */
    return MM_OK;
fail:
    mm_tm_free(&m->tm);
    return rc;
}

/* ============================================================ API */

int mm_qwen3_embed_ids(const mm_tm_t *m, const int32_t *ids, int n, float *x)
{
    if (!m->arch->takes_embeds)
        return MM_E_UNSUPPORTED;
    for (int t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= m->vocab)
            return MM_E_INVALID;
    if (n > 0)
        mm_tc_embed(m, &ids, &n, 1, x);
    return MM_OK;
}

int mm_qwen3_forward_embeds(mm_tm_runner_t *r, const float *x, const int32_t *pos, const int *lens, int n,
                            float *out)
{
    const mm_q3_t *m = (const mm_q3_t *)r->m;
    if (!r->m->arch->takes_embeds)
        return MM_E_UNSUPPORTED;
    int rc = mm_tc_check_lens(&m->tm, lens, n);
    if (rc)
        return rc;
    size_t T = 0;
    for (int s = 0; s < n; s++)
        T += (size_t)lens[s];
    for (size_t t = 0; t < T * (size_t)m->sec.n; t++)
        if (pos[t] < 0 || pos[t] >= m->rope_rows)
            return MM_E_INVALID;
    const mm_tc_src_t src = {.x = x, .pos = pos};
    return mm_tc_run(r, &src, lens, n, out);
}

/* ============================================================ encoder ops */

const mm_encoder_ops_t mm_enc_qwen3 = {
    .name = "qwen3", .load = load, .free = mm_tc_enc_free, .info = mm_tc_enc_info,
    .runner_new = mm_tc_enc_runner_new, .runner_new_on = mm_tc_enc_runner_new_on,
    .runner_free = mm_tc_enc_runner_free, .encode = mm_tc_enc_encode,
};
