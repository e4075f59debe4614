/* Qwen2-VL (Qwen2VLForConditionalGeneration) used as an embedder: Ops-MM-
 * embedding-v1, GME-Qwen2-VL. Read next to transformers' modeling_qwen2_vl.py;
 * the forward pass follows its order.
 *
 * Vision tower, per image (rows = its patches in merge-block order):
 *   x = rows Wpatch^T            Conv3d (2, 14, 14), no bias: one GEMM over
 *                                rows of 1176 = (c, t, y, x)
 *   cos / sin                    2-D rotary: head_dim / 4 frequencies
 *                                (theta 10000, dim head_dim / 2) at the
 *                                patch's row, then the same at its column
 *   block        x = x + proj(attn(rope(qkv(LN1(x)))))   full attention
 *                                within the image, fused qkv with bias
 *                x = x + fc2(act(fc1(LN2(x))))            quick_gelu
 *   merger       y = mlp2(gelu(mlp0(LN_q(x) viewed (P / 4, 4 E))))
 * Language model: the Qwen2 decoder of qwen3.c (q/k/v bias, no q/k norm)
 * over the sequence of text embeddings and image rows, with M-RoPE
 * positions (get_rope_index): text tokens the same position on all three
 * axes, an image's tokens (t, h / 2, w / 2 grid) offset by where it starts,
 * text after it resuming at the largest position + 1. The vector is the
 * last token's final hidden state (after the final RMSNorm).
 *
 * Weights: the decoder's walk (qwen3.c) and the vision tower's, in one
 * shared pack; names as on the Hub (model.layers.*, visual.*) or as
 * transformers 5 keeps them (model.language_model.*, model.visual.*).
 *
 * Sections: config, weights, vision, sequence, load, encoder ops. */
#include "mmembed/qwen2vl.h"
#include "mmembed/qwen3.h"
#include "textcommon.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mmembed/common.h"
#include "mmembed/textops.h"

/* Patches per image a runner takes (4 per visual token): Ops-MM's largest
 * setting is 1280 tokens. */
#define MAX_PATCHES 16384
/* Rows per MLP block in the vision tower (bounds the fc1 scratch). */
#define VIS_FF_BLOCK 512

/* ============================================================ config */

typedef struct {
    int depth;        /* vision_config.depth: blocks */
    int embed;        /* embed_dim (E) */
    int heads;        /* num_heads */
    int head_dim;     /* E / heads */
    int mlp;          /* E * mlp_ratio */
    int out;          /* hidden_size: the merger's output (the decoder's width) */
    int channels;     /* in_channels / in_chans */
    int patch;        /* patch_size 14 */
    int temporal;     /* temporal_patch_size 2 */
    int merge;        /* spatial_merge_size 2 */
    int patch_len;    /* channels * temporal * patch * patch (1176) */
    mm_act_t act;     /* hidden_act: quick_gelu */
    float eps;        /* LayerNorm eps (1e-6, fixed in HF) */
    double theta;     /* rotary base 10000 */
} vis_config_t;

static int parse_vision(const mm_cfg_t *v, int text_hidden, vis_config_t *c, char *err, size_t errlen)
{
    int rc;
    double ratio;
    if (!v->o)
        return mm_cfg_errf(v, NULL, err, errlen, MM_E_INVALID, "missing");
    if ((rc = mm_cfg_size(v, "depth", &c->depth, err, errlen)) ||
        (rc = mm_cfg_size(v, "embed_dim", &c->embed, err, errlen)) ||
        (rc = mm_cfg_size(v, "num_heads", &c->heads, err, errlen)) ||
        (rc = mm_cfg_pos(v, "hidden_size", text_hidden, &c->out, err, errlen)) ||
        (rc = mm_cfg_pos(v, "patch_size", 14, &c->patch, err, errlen)) ||
        (rc = mm_cfg_pos(v, "temporal_patch_size", 2, &c->temporal, err, errlen)) ||
        (rc = mm_cfg_pos(v, "spatial_merge_size", 2, &c->merge, err, errlen)) ||
        (rc = mm_cfg_num(v, "mlp_ratio", 4.0, &ratio, err, errlen)))
        return rc;
    const char *ck = mm_cfg_has(v, "in_channels") ? "in_channels" : "in_chans";
    if ((rc = mm_cfg_int(v, ck, 3, 1, 4, &c->channels, err, errlen)))
        return rc;
    if (c->embed % c->heads || (c->embed / c->heads) % 4)
        return mm_cfg_errf(v, "embed_dim", err, errlen, MM_E_INVALID, "%d / num_heads %d: head_dim must be a multiple of 4",
                           c->embed, c->heads);
    if (c->out != text_hidden)
        return mm_cfg_errf(v, "hidden_size", err, errlen, MM_E_INVALID, "%d != the decoder's %d", c->out, text_hidden);
    c->head_dim = c->embed / c->heads;
    c->mlp = (int)(c->embed * ratio);
    c->patch_len = c->channels * c->temporal * c->patch * c->patch;
    c->eps = 1e-6f;
    c->theta = 10000.0;
    const char *act = mm_cfg_str(v, "hidden_act");
    if (!act || !strcmp(act, "quick_gelu"))
        c->act = MM_ACT_QUICK_GELU;
    else if (!strcmp(act, "gelu"))
        c->act = MM_ACT_GELU;
    else
        return mm_cfg_errf(v, "hidden_act", err, errlen, MM_E_UNSUPPORTED,
                           "\"%s\" not supported (quick_gelu, gelu; SwiGLU is Qwen2.5-VL)", act);
    return MM_OK;
}

/* ============================================================ weights */

typedef struct {
    const float *n1_w, *n1_b;   /* (E) norm1 */
    const float *wqkv;          /* (3E, E) attn.qkv, packed; q | k | v rows */
    const float *bqkv;          /* (3E) */
    const float *wproj;         /* (E, E) attn.proj, packed */
    const float *bproj;         /* (E) */
    const float *n2_w, *n2_b;   /* (E) norm2 */
    const float *wfc1;          /* (mlp, E) mlp.fc1, packed */
    const float *bfc1;          /* (mlp) */
    const float *wfc2;          /* (E, mlp) mlp.fc2, packed */
    const float *bfc2;          /* (E) */
} vis_layer_t;

typedef struct {
    mm_q3_t lm;                 /* first: the decoder (its mm_tm_t first) */
    vis_config_t v;
    const float *wpatch;        /* (E, patch_len) patch_embed.proj as a GEMM, packed */
    vis_layer_t *vl;            /* (depth) */
    const float *lnq_w, *lnq_b; /* (E) merger.ln_q */
    const float *wm0, *bm0;     /* (4E, 4E) packed, (4E) merger.mlp.0 */
    const float *wm2, *bm2;     /* (out, 4E) packed, (out) merger.mlp.2 */
    float *vinv;                /* (head_dim / 4) vision rotary inverse frequencies */
    mm_enc_chat_t chat;
} qwen2vl_t;

static int walk_vision(mm_tc_walk_t *w, qwen2vl_t *m)
{
    const vis_config_t *c = &m->v;
    const int64_t E = c->embed, F = c->mlp, M4 = 4 * (int64_t)c->embed, O = c->out;
    const int64_t kshape[5] = {E, c->channels, c->temporal, c->patch, c->patch};
    int rc;
    m->wpatch = mm_tc_walk_lin_begin(w);
    if ((rc = mm_tc_walk_part_shape(w, 5, kshape, "patch_embed.proj.weight")) ||
        (rc = mm_tc_walk_lin_end(w, E, c->patch_len)))
        return rc;
    for (int l = 0; l < c->depth; l++) {
        vis_layer_t *L = &m->vl[l];
        if ((rc = mm_tc_walk_one(w, &L->n1_w, 1, E, 0, "blocks.%d.norm1.weight", l)) ||
            (rc = mm_tc_walk_one(w, &L->n1_b, 1, E, 0, "blocks.%d.norm1.bias", l)) ||
            (L->wqkv = mm_tc_walk_lin_begin(w), 0) ||
            (rc = mm_tc_walk_part(w, 2, 3 * E, E, "blocks.%d.attn.qkv.weight", l)) ||
            (rc = mm_tc_walk_lin_end(w, 3 * E, E)) ||
            (rc = mm_tc_walk_one(w, &L->bqkv, 1, 3 * E, 0, "blocks.%d.attn.qkv.bias", l)) ||
            (L->wproj = mm_tc_walk_lin_begin(w), 0) ||
            (rc = mm_tc_walk_part(w, 2, E, E, "blocks.%d.attn.proj.weight", l)) ||
            (rc = mm_tc_walk_lin_end(w, E, E)) ||
            (rc = mm_tc_walk_one(w, &L->bproj, 1, E, 0, "blocks.%d.attn.proj.bias", l)) ||
            (rc = mm_tc_walk_one(w, &L->n2_w, 1, E, 0, "blocks.%d.norm2.weight", l)) ||
            (rc = mm_tc_walk_one(w, &L->n2_b, 1, E, 0, "blocks.%d.norm2.bias", l)) ||
            (L->wfc1 = mm_tc_walk_lin_begin(w), 0) ||
            (rc = mm_tc_walk_part(w, 2, F, E, "blocks.%d.mlp.fc1.weight", l)) ||
            (rc = mm_tc_walk_lin_end(w, F, E)) ||
            (rc = mm_tc_walk_one(w, &L->bfc1, 1, F, 0, "blocks.%d.mlp.fc1.bias", l)) ||
            (L->wfc2 = mm_tc_walk_lin_begin(w), 0) ||
            (rc = mm_tc_walk_part(w, 2, E, F, "blocks.%d.mlp.fc2.weight", l)) ||
            (rc = mm_tc_walk_lin_end(w, E, F)) ||
            (rc = mm_tc_walk_one(w, &L->bfc2, 1, E, 0, "blocks.%d.mlp.fc2.bias", l)))
            return rc;
    }
    if ((rc = mm_tc_walk_one(w, &m->lnq_w, 1, E, 0, "merger.ln_q.weight")) ||
        (rc = mm_tc_walk_one(w, &m->lnq_b, 1, E, 0, "merger.ln_q.bias")) ||
        (m->wm0 = mm_tc_walk_lin_begin(w), 0) ||
        (rc = mm_tc_walk_part(w, 2, M4, M4, "merger.mlp.0.weight")) ||
        (rc = mm_tc_walk_lin_end(w, M4, M4)) ||
        (rc = mm_tc_walk_one(w, &m->bm0, 1, M4, 0, "merger.mlp.0.bias")) ||
        (m->wm2 = mm_tc_walk_lin_begin(w), 0) ||
        (rc = mm_tc_walk_part(w, 2, O, M4, "merger.mlp.2.weight")) ||
        (rc = mm_tc_walk_lin_end(w, O, M4)) ||
        (rc = mm_tc_walk_one(w, &m->bm2, 1, O, 0, "merger.mlp.2.bias")))
        return rc;
    return MM_OK;
}

/* The decoder under the prefix mm_tc_pack found ("model." on the Hub,
 * "model.language_model." in transformers 5), the vision tower under the
 * matching one. */
static int walk(mm_tc_walk_t *w, mm_tm_t *tm)
{
    int rc = mm_q3_walk(w, tm);
    if (rc)
        return rc;
    const char *lp = w->prefix;
    w->prefix = !strcmp(lp, "model.language_model.") ? "model.visual." : "visual.";
    rc = walk_vision(w, (qwen2vl_t *)tm);
    w->prefix = lp;
    return rc;
}

static void qwen2vl_free(mm_tm_t *tm)
{
    qwen2vl_t *m = (qwen2vl_t *)tm;
    free(m->vl);
    free(m->vinv);
    mm_q3_free(tm);
}

static const mm_tc_arch_t arch_qwen2vl = {.name = "qwen2vl", .forward = mm_q3_forward, .free = qwen2vl_free};

/* ============================================================ vision */

int mm_qwen2vl_patchify(const float *chw, int C, int h, int w, int P, int T, int S, float *rows)
{
    if (P < 1 || S < 1 || T < 1 || h % (P * S) || w % (P * S) || h <= 0 || w <= 0)
        return -1;
    const int gh = h / P, gw = w / P, bw = gw / S;
    int r = 0;
    for (int by = 0; by < gh / S; by++)
        for (int bx = 0; bx < bw; bx++)
            for (int my = 0; my < S; my++)
                for (int mx = 0; mx < S; mx++, r++) {
                    float *o = rows + (size_t)r * C * T * P * P;
                    const int y0 = (by * S + my) * P, x0 = (bx * S + mx) * P;
                    for (int c = 0; c < C; c++)
                        for (int t = 0; t < T; t++)   /* one image: every frame the same */
                            for (int y = 0; y < P; y++, o += P)
                                memcpy(o, chw + ((size_t)c * h + y0 + y) * w + x0, (size_t)P * sizeof(float));
                }
    return r;
}

typedef struct {
    mm_tm_runner_t *lm;
    int threads;
    int vcap;          /* patches per image */
    int tcap;          /* tokens per sequence (the decoder's max_tokens) */
    float *rows;       /* (vcap, patch_len) */
    float *vx;         /* (vcap, E) residual stream */
    float *vy;         /* (vcap, E) normed input / sublayer output */
    float *vqkv;       /* (vcap, 3E) */
    float *vatt;       /* (vcap, E) */
    float *vff;        /* (VIS_FF_BLOCK, mlp) */
    float *vcos;       /* (vcap, head_dim / 2) */
    float *vsin;
    float *scores;     /* (threads, MM_TOPS_QBLOCK, vcap) */
    float *x;          /* (tcap, hidden) the sequence's input rows */
    int32_t *pos;      /* (3, tcap) its M-RoPE positions */
} runner_t;

typedef struct {
    runner_t *r;
    const vis_config_t *c;
    int P;
} vattn_t;

/* Heads of one image are the units of work; each part has its own scores. */
static void vattn_part(void *arg, int part, int nparts)
{
    const vattn_t *j = arg;
    const int E = j->c->embed, D = j->c->head_dim;
    float *scores = j->r->scores + (size_t)(part % j->r->threads) * MM_TOPS_QBLOCK * j->r->vcap;
    for (int h = part; h < j->c->heads; h += nparts) {
        const float *q = j->r->vqkv + h * D;
        mm_tops_attention(j->r->vatt + h * D, E, q, 3 * E, q + E, 3 * E, q + 2 * E, 3 * E, j->P, D,
                          1.0f / sqrtf((float)D), 0, scores);
    }
}

/* Qwen2VisionTransformerPretrainedModel on one image of gh x gw patches
 * (r->rows filled): writes its gh gw / 4 merged rows (out wide) to y. */
static void vision_forward(const qwen2vl_t *m, runner_t *r, int gh, int gw, float *y)
{
    const vis_config_t *c = &m->v;
    const int E = c->embed, F = c->mlp, P = gh * gw, S = c->merge, q = c->head_dim / 4, half = c->head_dim / 2;
    float *x = r->vx;
    mm_nn_linear(x, E, r->rows, c->patch_len, m->wpatch, NULL, P, c->patch_len, E, MM_ACT_NONE);

    /* rot_pos_emb: (row, column) of each patch in merge-block order */
    for (int i = 0; i < P; i++) {
        const int blk = i / (S * S), in = i % (S * S), bw = gw / S;
        const int hp = (blk / bw) * S + in / S, wp = (blk % bw) * S + in % S;
        float *cs = r->vcos + (size_t)i * half, *sn = r->vsin + (size_t)i * half;
        for (int k = 0; k < q; k++) {
            const float fh = (float)hp * m->vinv[k], fw = (float)wp * m->vinv[k];
            cs[k] = (float)cos((double)fh);
            sn[k] = (float)sin((double)fh);
            cs[q + k] = (float)cos((double)fw);
            sn[q + k] = (float)sin((double)fw);
        }
    }
    for (int l = 0; l < c->depth; l++) {
        const vis_layer_t *L = &m->vl[l];
        /* VisionAttention */
        mm_nn_layer_norm(r->vy, x, L->n1_w, L->n1_b, P, E, c->eps);
        mm_nn_linear(r->vqkv, 3 * E, r->vy, E, L->wqkv, L->bqkv, P, E, 3 * E, MM_ACT_NONE);
        mm_tops_rope(r->vqkv, 3 * E, P, 2 * c->heads, c->head_dim, r->vcos, r->vsin);   /* q and k heads */
        vattn_t aj = {.r = r, .c = c, .P = P};
        mm_nn_parallel(vattn_part, &aj);
        mm_nn_linear_add(x, E, r->vatt, E, L->wproj, L->bproj, P, E, E);
        /* VisionMlp, VIS_FF_BLOCK rows at a time */
        mm_nn_layer_norm(r->vy, x, L->n2_w, L->n2_b, P, E, c->eps);
        for (int t0 = 0; t0 < P; t0 += VIS_FF_BLOCK) {
            const int nt = MM_MIN(VIS_FF_BLOCK, P - t0);
            mm_nn_linear(r->vff, F, r->vy + (size_t)t0 * E, E, L->wfc1, L->bfc1, nt, E, F, c->act);
            mm_nn_linear_add(x + (size_t)t0 * E, E, r->vff, F, L->wfc2, L->bfc2, nt, F, E);
        }
    }
    /* PatchMerger: the S*S consecutive rows of a block are one row of 4E */
    const int n = P / (S * S), W = E * S * S;
    mm_nn_layer_norm(r->vy, x, m->lnq_w, m->lnq_b, P, E, c->eps);
    mm_nn_linear(r->vqkv, W, r->vy, W, m->wm0, m->bm0, n, W, W, MM_ACT_GELU);
    mm_nn_linear(y, c->out, r->vqkv, W, m->wm2, m->bm2, n, W, c->out, MM_ACT_NONE);
}

/* ============================================================ sequence */

/* One input: its rows and M-RoPE positions (get_rope_index), then the
 * decoder. */
static int encode_one(const qwen2vl_t *m, runner_t *r, const mm_input_t *in, float *out)
{
    const vis_config_t *c = &m->v;
    const int H = m->lm.c.hidden, unit = c->patch * c->merge;
    int T = 0, cur = 0, rc;
    for (int s = 0; s < in->n_seg; s++) {
        const mm_segment_t *g = &in->seg[s];
        if (g->kind == MM_SEG_TEXT) {
            if (g->n_ids < 0 || T + g->n_ids > r->tcap)
                return MM_E_TOOBIG;
            if ((rc = mm_qwen3_embed_ids(&m->lm.tm, g->ids, g->n_ids, r->x + (size_t)T * H)))
                return rc;
            for (int i = 0; i < g->n_ids; i++, T++, cur++)
                r->pos[T] = r->pos[r->tcap + T] = r->pos[2 * r->tcap + T] = cur;
        } else if (g->kind == MM_SEG_IMAGE) {
            if (!g->pixels || g->channels != c->channels || g->height <= 0 || g->width <= 0 ||
                g->height % unit || g->width % unit)
                return MM_E_INVALID;
            const int gh = g->height / c->patch, gw = g->width / c->patch, P = gh * gw;
            const int th = gh / c->merge, tw = gw / c->merge, n = th * tw;
            if (P > r->vcap || T + n > r->tcap)
                return MM_E_TOOBIG;
            mm_qwen2vl_patchify(g->pixels, c->channels, g->height, g->width, c->patch, c->temporal, c->merge,
                                r->rows);
            vision_forward(m, r, gh, gw, r->x + (size_t)T * H);
            for (int k = 0; k < n; k++, T++) {   /* (t, h, w) = (0, k / tw, k % tw) + cur */
                r->pos[T] = cur;
                r->pos[r->tcap + T] = cur + k / tw;
                r->pos[2 * r->tcap + T] = cur + k % tw;
            }
            cur += MM_MAX(th, tw);   /* the largest position + 1 */
        } else {
            return MM_E_INVALID;
        }
    }
    if (T < 1)
        return MM_E_INVALID;
    /* the decoder reads positions as (3, T): close up the axes */
    memmove(r->pos + T, r->pos + r->tcap, (size_t)T * sizeof(int32_t));
    memmove(r->pos + 2 * T, r->pos + 2 * r->tcap, (size_t)T * sizeof(int32_t));
    return mm_qwen3_forward_embeds(r->lm, r->x, r->pos, &T, 1, out);
}

/* ============================================================ load */

static int load(const char *dir, const mm_cfg_t *cfg, mm_dtype_t dtype, void **out, char *err, size_t errlen)
{
    *out = NULL;
    qwen2vl_t *m = calloc(1, sizeof(*m));
    if (!m)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    int rc;
    mm_cfg_t tc, vc;
    if ((rc = mm_tc_init(&m->lm.tm, &arch_qwen2vl, dir, dtype, err, errlen)))
        goto fail;
    /* transformers 5 nests the decoder's keys in text_config; the Hub's
     * configs have them at the top */
    const int nested = mm_cfg_sub(cfg, "text_config", &tc);
    if (!nested)
        tc = *cfg;
    mm_cfg_sub(cfg, "vision_config", &vc);
    if ((rc = mm_q3_parse_config(&tc, 1, &m->lm.c, err, errlen)))
        goto fail;
    if (!m->lm.c.mrope[0] && nested) {   /* rope keys at the top of a nested config */
        mm_q3_config_t top;
        if (mm_q3_parse_config(cfg, 1, &top, NULL, 0) == MM_OK)
            memcpy(m->lm.c.mrope, top.mrope, sizeof top.mrope);
    }
    if (!m->lm.c.mrope[0]) {
        rc = mm_cfg_errf(cfg, "rope_scaling", err, errlen, MM_E_INVALID, "no mrope_section (rope_scaling / rope_parameters)");
        goto fail;
    }
    if ((rc = parse_vision(&vc, m->lm.c.hidden, &m->v, err, errlen)))
        goto fail;
    m->chat = (mm_enc_chat_t){
        .im_start = 151644, .im_end = 151645, .endoftext = 151643,
        .vision_start = mm_cfg_first_int(cfg, "vision_start_token_id", 151652),
        .vision_end = mm_cfg_first_int(cfg, "vision_end_token_id", 151653),
        .image_pad = mm_cfg_first_int(cfg, "image_token_id", 151655), .default_instruction = "You are a helpful assistant.",
    };
    m->lm.tm.info.pooling = MM_TM_POOL_LAST;
    if ((rc = mm_q3_setup(&m->lm, err, errlen)))
        goto fail;
    if (!(m->vl = calloc((size_t)m->v.depth, sizeof(*m->vl))) || !(m->vinv = malloc(sizeof(float) * m->v.head_dim / 4))) {
        rc = mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = mm_tc_pack(&m->lm.tm, dir, "embed_tokens.weight", walk, err, errlen)) ||
        (rc = mm_q3_finish(&m->lm, 0, err, errlen)))
        goto fail;
    m->lm.tm.info.append_eos_id = -1;   /* the chat prompt ends in <|endoftext|> already */
    /* VisionRotaryEmbedding(head_dim / 2): inv_freq = 1 / theta^(2k / dim), f32 */
    for (int k = 0; k < m->v.head_dim / 4; k++) {
        const float dim = (float)(m->v.head_dim / 2);
        m->vinv[k] = 1.0f / powf((float)m->v.theta, (float)(2 * k) / dim);
    }
    *out = m;
    return MM_OK;
fail:
    mm_tm_free(&m->lm.tm);
    return rc;
}

/* ============================================================ encoder ops */

static void info(const void *model, mm_enc_info_t *o)
{
    const qwen2vl_t *m = model;
    mm_tc_enc_info(model, o);
    o->arch = "qwen2vl";
    o->has_vision = 1;
    o->channels = m->v.channels;
    o->image_size = 0;
    o->image_dynamic = 1;
    o->append_eos_id = -1;
    o->chat = &m->chat;
}

static void runner_free(void *p)
{
    runner_t *r = p;
    if (!r)
        return;
    mm_tm_runner_free(r->lm);
    free(r->rows);
    free(r->vx);
    free(r->vy);
    free(r->vqkv);
    free(r->vatt);
    free(r->vff);
    free(r->vcos);
    free(r->vsin);
    free(r->scores);
    free(r->x);
    free(r->pos);
    free(r);
}

/* Scratch is malloc'd address space: a pass touches the rows it uses. */
static void *runner_new(const void *model, int max_batch, int max_images, int threads)
{
    const qwen2vl_t *m = model;
    const vis_config_t *c = &m->v;
    (void)max_images;
    runner_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->threads = threads < 1 ? 1 : threads;
    r->tcap = m->lm.tm.info.max_tokens;
    r->vcap = MM_MIN(MAX_PATCHES, 4 * r->tcap);
    const size_t V = (size_t)r->vcap, E = (size_t)c->embed;
    r->lm = mm_tm_runner_new(&m->lm.tm, max_batch < 1 ? 1 : max_batch, threads);
    r->rows = malloc(V * c->patch_len * sizeof(float));
    r->vx = malloc(V * E * sizeof(float));
    r->vy = malloc(V * E * sizeof(float));
    r->vqkv = malloc(V * 3 * E * sizeof(float));
    r->vatt = malloc(V * E * sizeof(float));
    r->vff = malloc((size_t)VIS_FF_BLOCK * c->mlp * sizeof(float));
    r->vcos = malloc(V * c->head_dim / 2 * sizeof(float));
    r->vsin = malloc(V * c->head_dim / 2 * sizeof(float));
    r->scores = malloc((size_t)r->threads * MM_TOPS_QBLOCK * V * sizeof(float));
    r->x = malloc((size_t)r->tcap * m->lm.c.hidden * sizeof(float));
    r->pos = malloc(3 * (size_t)r->tcap * sizeof(int32_t));
    if (!r->lm || !r->rows || !r->vx || !r->vy || !r->vqkv || !r->vatt || !r->vff || !r->vcos || !r->vsin ||
        !r->scores || !r->x || !r->pos) {
        runner_free(r);
        return NULL;
    }
    return r;
}

static int encode(const void *model, void *runner, const mm_input_t *in, int n, float *out)
{
    const qwen2vl_t *m = model;
    runner_t *r = runner;
    if (mm_nn_threads() != r->threads)
        mm_nn_set_threads(r->threads);
    for (int i = 0; i < n; i++) {
        int rc = encode_one(m, r, &in[i], out + (size_t)i * m->lm.c.hidden);
        if (rc)
            return rc;
    }
    return MM_OK;
}

const mm_encoder_ops_t mm_enc_qwen2vl = {
    .name = "qwen2vl", .load = load, .free = mm_tc_enc_free, .info = info,
    .runner_new = runner_new, .runner_free = runner_free, .encode = encode,
};
