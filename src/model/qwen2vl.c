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

#include "mmembed/backend.h"
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

/* The weights on a backend: the decoder's (qwen3.c), then the vision
 * tower's; the rotary frequencies and the chat ids stay on the host. */
static void dev_free(mm_tm_t *tm, mm_backend_t *be)
{
    qwen2vl_t *d = (qwen2vl_t *)tm;
    mm_tc_dev_dense_free(be, d->wpatch), mm_tc_dev_dense_free(be, d->wm0), mm_tc_dev_dense_free(be, d->wm2);
    mm_tc_dev_release(be, d->lnq_w), mm_tc_dev_release(be, d->lnq_b);
    mm_tc_dev_release(be, d->bm0), mm_tc_dev_release(be, d->bm2);
    for (int l = 0; d->vl && l < d->v.depth; l++) {
        vis_layer_t *L = &d->vl[l];
        mm_tc_dev_dense_free(be, L->wqkv), mm_tc_dev_dense_free(be, L->wproj);
        mm_tc_dev_dense_free(be, L->wfc1), mm_tc_dev_dense_free(be, L->wfc2);
        const float *v[] = {L->n1_w, L->n1_b, L->bqkv, L->bproj, L->n2_w, L->n2_b, L->bfc1, L->bfc2};
        for (size_t i = 0; i < MM_ARRAY_LEN(v); i++)
            mm_tc_dev_release(be, v[i]);
    }
    free(d->vl);
    mm_q3_dev_clear(&d->lm, be);
    free(d);
}

static int dev_new(const mm_tm_t *tm, mm_backend_t *be, mm_tm_t **out)
{
    const qwen2vl_t *m = (const qwen2vl_t *)tm;
    const vis_config_t *c = &m->v;
    const size_t E = (size_t)c->embed, F = (size_t)c->mlp, M4 = 4 * E, O = (size_t)c->out;
    *out = NULL;
    qwen2vl_t *d = malloc(sizeof(*d));
    if (!d)
        return MM_E_NOMEM;
    *d = *m;
    d->wpatch = d->wm0 = d->wm2 = d->lnq_w = d->lnq_b = d->bm0 = d->bm2 = NULL;
    d->vl = NULL;
    d->lm.l = NULL;
    d->lm.norm = NULL;
    int bad = mm_q3_dev_fill(&m->lm, be, &d->lm) || !(d->vl = calloc((size_t)c->depth, sizeof(*d->vl)));
    bad = bad || mm_tc_dev_dense(be, &d->wpatch, m->wpatch) || mm_tc_dev_const(be, &d->lnq_w, m->lnq_w, E) ||
          mm_tc_dev_const(be, &d->lnq_b, m->lnq_b, E) || mm_tc_dev_dense(be, &d->wm0, m->wm0) ||
          mm_tc_dev_const(be, &d->bm0, m->bm0, M4) || mm_tc_dev_dense(be, &d->wm2, m->wm2) ||
          mm_tc_dev_const(be, &d->bm2, m->bm2, O);
    for (int l = 0; !bad && l < c->depth; l++) {
        const vis_layer_t *s = &m->vl[l];
        vis_layer_t *L = &d->vl[l];
        bad = mm_tc_dev_const(be, &L->n1_w, s->n1_w, E) || mm_tc_dev_const(be, &L->n1_b, s->n1_b, E) ||
              mm_tc_dev_dense(be, &L->wqkv, s->wqkv) || mm_tc_dev_const(be, &L->bqkv, s->bqkv, 3 * E) ||
              mm_tc_dev_dense(be, &L->wproj, s->wproj) || mm_tc_dev_const(be, &L->bproj, s->bproj, E) ||
              mm_tc_dev_const(be, &L->n2_w, s->n2_w, E) || mm_tc_dev_const(be, &L->n2_b, s->n2_b, E) ||
              mm_tc_dev_dense(be, &L->wfc1, s->wfc1) || mm_tc_dev_const(be, &L->bfc1, s->bfc1, F) ||
              mm_tc_dev_dense(be, &L->wfc2, s->wfc2) || mm_tc_dev_const(be, &L->bfc2, s->bfc2, E);
    }
    if (bad) {
        dev_free(&d->lm.tm, be);
        return MM_ERR;
    }
    *out = &d->lm.tm;
    return MM_OK;
}

static const mm_tc_arch_t arch_qwen2vl = {.name = "qwen2vl", .forward = mm_q3_forward, .free = qwen2vl_free,
                                          .dev_new = dev_new, .dev_free = dev_free, .takes_embeds = 1};

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

/* A worker's run state: the decoder's runner (its backend, its scratch:
 * the sequence's input rows go straight into lm->x) and the vision
 * tower's scratch on the same backend. */
typedef struct {
    mm_tm_runner_t *lm;
    int vcap;          /* patches per image */
    int tcap;          /* tokens per sequence (the decoder's max_tokens) */
    /* backend memory */
    float *rows;       /* (vcap, patch_len) */
    float *vx;         /* (vcap, E) residual stream */
    float *vy;         /* (vcap, E) normed input / sublayer output */
    float *vqkv;       /* (vcap, 3E) */
    float *vatt;       /* (vcap, E) */
    float *vff;        /* (VIS_FF_BLOCK, mlp) */
    float *vcos;       /* (vcap, head_dim / 2) */
    float *vsin;
    int *vints;        /* qoff, qlen of the one image */
    /* host memory (the same buffers on a backend of host memory) */
    float *hrows, *hcos, *hsin;
    int *hints;
} runner_t;

/* Qwen2VisionTransformerPretrainedModel on one image of gh x gw patches
 * (r->hrows filled): writes its gh gw / 4 merged rows (out wide) to y, in
 * backend memory. */
static void vision_forward(const qwen2vl_t *m, runner_t *r, int gh, int gw, float *y)
{
    const qwen2vl_t *w = (const qwen2vl_t *)r->lm->w;
    mm_backend_t *be = r->lm->be;
    const mm_backend_ops_t *o = be->ops;
    const vis_config_t *c = &m->v;
    const int E = c->embed, F = c->mlp, P = gh * gw, S = c->merge, q = c->head_dim / 4, half = c->head_dim / 2;
    float *x = r->vx;
    o->upload(be, r->rows, r->hrows, (size_t)P * c->patch_len * sizeof(float));
    o->linear(be, x, E, r->rows, c->patch_len, w->wpatch, NULL, P, c->patch_len, E, MM_ACT_NONE, 0);

    /* rot_pos_emb: (row, column) of each patch in merge-block order */
    for (int i = 0; i < P; i++) {
        const int blk = i / (S * S), in = i % (S * S), bw = gw / S;
        const int hp = (blk / bw) * S + in / S, wp = (blk % bw) * S + in % S;
        float *cs = r->hcos + (size_t)i * half, *sn = r->hsin + (size_t)i * half;
        for (int k = 0; k < q; k++) {
            const float fh = (float)hp * m->vinv[k], fw = (float)wp * m->vinv[k];
            cs[k] = (float)cos((double)fh);
            sn[k] = (float)sin((double)fh);
            cs[q + k] = (float)cos((double)fw);
            sn[q + k] = (float)sin((double)fw);
        }
    }
    o->upload(be, r->vcos, r->hcos, (size_t)P * half * sizeof(float));
    o->upload(be, r->vsin, r->hsin, (size_t)P * half * sizeof(float));
    r->hints[0] = 0;
    r->hints[1] = P;
    o->upload(be, r->vints, r->hints, 2 * sizeof(int));
    const mm_seqs_t one = {.qoff = r->vints, .qlen = r->vints + 1, .koff = r->vints, .klen = r->vints + 1, .n = 1,
                           .max_q = P, .max_k = P};
    for (int l = 0; l < c->depth; l++) {
        const vis_layer_t *L = &w->vl[l];
        /* VisionAttention: full attention within the image */
        o->layer_norm(be, r->vy, x, L->n1_w, L->n1_b, P, E, c->eps);
        o->linear(be, r->vqkv, 3 * E, r->vy, E, L->wqkv, L->bqkv, P, E, 3 * E, MM_ACT_NONE, 0);
        o->rope(be, r->vqkv, 3 * E, P, 2 * c->heads, c->head_dim, r->vcos, r->vsin);   /* q and k heads */
        o->attention_gqa(be, r->vatt, E, r->vqkv, 3 * E, r->vqkv + E, 3 * E, r->vqkv + 2 * E, 3 * E, &one, c->heads,
                         c->heads, c->head_dim, 0);
        o->linear(be, x, E, r->vatt, E, L->wproj, L->bproj, P, E, E, MM_ACT_NONE, 1);
        /* VisionMlp, VIS_FF_BLOCK rows at a time */
        o->layer_norm(be, r->vy, x, L->n2_w, L->n2_b, P, E, c->eps);
        for (int t0 = 0; t0 < P; t0 += VIS_FF_BLOCK) {
            const int nt = MM_MIN(VIS_FF_BLOCK, P - t0);
            o->linear(be, r->vff, F, r->vy + (size_t)t0 * E, E, L->wfc1, L->bfc1, nt, E, F, c->act, 0);
            o->linear(be, x + (size_t)t0 * E, E, r->vff, F, L->wfc2, L->bfc2, nt, F, E, MM_ACT_NONE, 1);
        }
    }
    /* PatchMerger: the S*S consecutive rows of a block are one row of 4E */
    const int n = P / (S * S), W = E * S * S;
    o->layer_norm(be, r->vy, x, w->lnq_w, w->lnq_b, P, E, c->eps);
    o->linear(be, r->vqkv, W, r->vy, W, w->wm0, w->bm0, n, W, W, MM_ACT_GELU, 0);
    o->linear(be, y, c->out, r->vqkv, W, w->wm2, w->bm2, n, W, c->out, MM_ACT_NONE, 0);
}

/* ============================================================ sequence */

/* One input: its rows (text embeddings, the vision tower's merged rows)
 * into the decoder runner's x and its M-RoPE positions (get_rope_index)
 * into lm->pos, then one decoder pass. */
static int encode_one(const qwen2vl_t *m, runner_t *r, const mm_input_t *in, float *out)
{
    const vis_config_t *c = &m->v;
    mm_tm_runner_t *lm = r->lm;
    mm_backend_t *be = lm->be;
    const int H = m->lm.c.hidden, unit = c->patch * c->merge, cap = lm->cap;
    int32_t *pos = lm->pos;   /* written at stride cap, closed up to (3, T) before the pass */
    int T = 0, cur = 0, rc;
    for (int s = 0; s < in->n_seg; s++) {
        const mm_segment_t *g = &in->seg[s];
        if (g->kind == MM_SEG_TEXT) {
            if (g->n_ids < 0 || T + g->n_ids > r->tcap)
                return MM_E_TOOBIG;
            if ((rc = mm_qwen3_embed_ids(&m->lm.tm, g->ids, g->n_ids, lm->hx + (size_t)T * H)))
                return rc;
            be->ops->upload(be, lm->x + (size_t)T * H, lm->hx + (size_t)T * H, (size_t)g->n_ids * H * sizeof(float));
            for (int i = 0; i < g->n_ids; i++, T++, cur++)
                pos[T] = pos[cap + T] = pos[2 * cap + T] = cur;
        } else if (g->kind == MM_SEG_IMAGE) {
            if (!g->pixels || g->channels != c->channels || g->height <= 0 || g->width <= 0 ||
                g->height % unit || g->width % unit)
                return MM_E_INVALID;
            const int gh = g->height / c->patch, gw = g->width / c->patch, P = gh * gw;
            const int th = gh / c->merge, tw = gw / c->merge, n = th * tw;
            if (P > r->vcap || T + n > r->tcap)
                return MM_E_TOOBIG;
            /* the host staging of the previous image of this input may still
             * be on its way up (uploads are asynchronous on a GPU) */
            if (!be->host_memory && T > 0)
                be->ops->sync(be);
            mm_qwen2vl_patchify(g->pixels, c->channels, g->height, g->width, c->patch, c->temporal, c->merge,
                                r->hrows);
            vision_forward(m, r, gh, gw, lm->x + (size_t)T * H);
            for (int k = 0; k < n; k++, T++) {   /* (t, h, w) = (0, k / tw, k % tw) + cur */
                pos[T] = cur;
                pos[cap + T] = cur + k / tw;
                pos[2 * cap + T] = cur + k % tw;
            }
            cur += MM_MAX(th, tw);   /* the largest position + 1 */
        } else {
            return MM_E_INVALID;
        }
    }
    if (T < 1)
        return MM_E_INVALID;
    /* the decoder reads positions as (3, T): close up the axes */
    memmove(pos + T, pos + cap, (size_t)T * sizeof(int32_t));
    memmove(pos + 2 * T, pos + 2 * cap, (size_t)T * sizeof(int32_t));
    for (int t = 0; t < 3 * T; t++)
        if (pos[t] < 0 || pos[t] >= m->lm.rope_rows)
            return MM_E_INVALID;
    lm->start[0] = 0;
    lm->start[1] = T;
    return mm_tc_pass(lm, &T, 1, out);
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
    if (r->lm) {
        mm_backend_t *be = r->lm->be;
        float *bufs[] = {r->rows, r->vx, r->vy, r->vqkv, r->vatt, r->vff, r->vcos, r->vsin};
        for (size_t i = 0; i < MM_ARRAY_LEN(bufs); i++)
            be->ops->free(be, bufs[i]);
        be->ops->free(be, r->vints);
        if (!be->host_memory) {
            be->ops->host_free(be, r->hrows);
            be->ops->host_free(be, r->hcos);
            be->ops->host_free(be, r->hsin);
            be->ops->host_free(be, r->hints);
        }
        mm_tm_runner_free(r->lm);
    }
    free(r);
}

/* Scratch is address space: a pass touches the rows it uses. be NULL: the
 * decoder runner's own CPU backend. */
static void *runner_make(const void *model, mm_backend_t *be, int max_batch, int threads)
{
    const qwen2vl_t *m = model;
    const vis_config_t *c = &m->v;
    runner_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->tcap = m->lm.tm.info.max_tokens;
    r->vcap = MM_MIN(MAX_PATCHES, 4 * r->tcap);
    const size_t V = (size_t)r->vcap, E = (size_t)c->embed, half = (size_t)c->head_dim / 2;
    max_batch = max_batch < 1 ? 1 : max_batch;
    r->lm = be ? mm_tm_runner_new_on(&m->lm.tm, be, max_batch) : mm_tm_runner_new(&m->lm.tm, max_batch, threads);
    if (!r->lm) {
        free(r);
        return NULL;
    }
    be = r->lm->be;
#define A(f, n) (!(r->f = be->ops->alloc(be, (size_t)(n) * sizeof(float))))
    int bad = A(rows, V * c->patch_len) || A(vx, V * E) || A(vy, V * E) || A(vqkv, V * 3 * E) || A(vatt, V * E) ||
              A(vff, (size_t)VIS_FF_BLOCK * c->mlp) || A(vcos, V * half) || A(vsin, V * half) ||
              !(r->vints = be->ops->alloc(be, 2 * sizeof(int)));
#undef A
    if (!bad && be->host_memory) {
        r->hrows = r->rows, r->hcos = r->vcos, r->hsin = r->vsin, r->hints = r->vints;
    } else if (!bad) {
        bad = !(r->hrows = be->ops->host_alloc(be, V * c->patch_len * sizeof(float))) ||
              !(r->hcos = be->ops->host_alloc(be, V * half * sizeof(float))) ||
              !(r->hsin = be->ops->host_alloc(be, V * half * sizeof(float))) ||
              !(r->hints = be->ops->host_alloc(be, 2 * sizeof(int)));
    }
    if (bad) {
        runner_free(r);
        return NULL;
    }
    return r;
}

static void *runner_new(const void *model, int max_batch, int max_images, int threads)
{
    (void)max_images;
    return runner_make(model, NULL, max_batch, threads);
}

static void *runner_new_on(const void *model, mm_backend_t *be, int max_batch, int max_images)
{
    (void)max_images;
    return runner_make(model, be, max_batch, 1);
}

static int encode(const void *model, void *runner, const mm_input_t *in, int n, float *out)
{
    const qwen2vl_t *m = model;
    runner_t *r = runner;
    for (int i = 0; i < n; i++) {
        int rc = encode_one(m, r, &in[i], out + (size_t)i * m->lm.c.hidden);
        if (rc)
            return rc;
    }
    return MM_OK;
}

const mm_encoder_ops_t mm_enc_qwen2vl = {
    .name = "qwen2vl", .load = load, .free = mm_tc_enc_free, .info = info,
    .runner_new = runner_new, .runner_new_on = runner_new_on, .runner_free = runner_free, .encode = encode,
};
