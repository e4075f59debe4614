/* textcommon — what the text encoders (bert.c, qwen3.c, qwen2vl.c's
 * decoder) share, private to src/model: the model and runner structs behind
 * include/mmembed/textmodel.h, the config sizes, the sentence-transformers
 * files, the weight walk that lays out the shared pack, and the pieces of a
 * forward pass that do not depend on the architecture (token lookup, the
 * pass and its loop, pooling, the runner on its backend).
 *
 * An architecture file allocates a struct whose FIRST member is mm_tm_t,
 * fills mm_tm_t's dims (hidden, ld_qkv, ...) so that the common runner can
 * size its scratch, and supplies an mm_tc_arch_t (its forward pass as ops
 * on the runner's backend, what to free, and its weights' copy onto another
 * backend). Everything else here is the same for all of them. */
#ifndef MMEMBED_TEXTCOMMON_H
#define MMEMBED_TEXTCOMMON_H

#include <stddef.h>
#include <stdint.h>

#include "mmembed/backend.h"
#include "mmembed/common.h"
#include "mmembed/encoder.h"
#include "mmembed/hfconfig.h"
#include "mmembed/nn.h"
#include "mmembed/safetensors.h"
#include "mmembed/textmodel.h"


/* Rows per feed-forward block: the FFN runs on blocks of tokens so its wide
 * intermediate buffer stays FF_BLOCK rows whatever the pass size. */
#define MM_TC_FF_BLOCK 512
/* Tokens per pass when the batch allows more (bounds per-runner scratch). */
#define MM_TC_PASS_TOKENS 4096

/* ---------------------------------------------------------------- the structs */

typedef struct {
    const char *name;   /* "bert" | "qwen3": info.arch and the pack cache tag */
    /* One pass over n packed sequences on r->be: the input rows r->x
     * (start[n], hidden) and positions (r->pos on the host, r->dpos on the
     * backend) already hold; leaves the last hidden state in r->x. Reads
     * the weights from r->w, the config from r->m. */
    void (*forward)(mm_tm_runner_t *r, const int *lens, int n);
    /* Frees what the architecture allocated beside mm_tm_t (not the struct). */
    void (*free)(mm_tm_t *m);
    /* A copy of the model struct whose weight pointers are be's copies
     * (mm_backend_ops_t constant / dense): what a runner on be reads.
     * Returns 0, or MM_E_NOMEM / MM_ERR (be's error says why). */
    int (*dev_new)(const mm_tm_t *m, struct mm_backend *be, mm_tm_t **out);
    /* Frees such a copy (its backend weights, its arrays, itself). */
    void (*dev_free)(mm_tm_t *w, struct mm_backend *be);
    int takes_embeds;   /* the decoder reads caller-made rows (mm_qwen3_forward_embeds) */
} mm_tc_arch_t;

/* The part of every text model the common code reads. An architecture's
 * model struct starts with it. */
struct mm_tm {
    const mm_tc_arch_t *arch;
    mm_tm_info_t info;
    int vocab;               /* valid ids [0, vocab) */
    int hidden;              /* floats per token in the residual stream */
    int ld_qkv;              /* floats per token of the fused q|k|v product */
    int att_width;           /* floats per token of the attention output (heads head_dim) */
    int ff_width;            /* floats per row of the runner's ff block */
    int ff2_width;           /* floats per row of its ff2 block (0: none) */
    int rope_half;           /* > 0: the runner keeps (cap, rope_half) cos / sin rows */
    int pos_axes;            /* position ids per token: 1, or 3 with M-RoPE (0 counts as 1) */
    const void *tok_emb;     /* (vocab, hidden) in tok_dtype: word_embeddings / embed_tokens */
    mm_st_dtype_t tok_dtype;
    void *base;              /* the shared read-only weight mapping */
    size_t bytes;
    char name[128];
    char dtype[8];
    mm_dtype_t compute;      /* of the dense layers */
};

/* A worker's scratch, sized once from the model's dims, on a backend
 * (mmembed/backend.h): the forward passes queue their ops there. The
 * default runner opens a CPU backend of its own and reads the shared pack
 * in place (w == m); a runner on a given backend reads a copy of the
 * weights there (arch->dev_new). */
struct mm_tm_runner {
    const mm_tm_t *m;     /* the model: config, host tables (token embeddings, rotary) */
    const mm_tm_t *w;     /* the same struct with weight pointers where be reads them */
    mm_tm_t *wdev;        /* that copy when owned (NULL when w == m) */
    struct mm_backend *be;
    int own_be;           /* be opened by the runner */
    int max_batch;
    int cap;              /* tokens per pass */
    /* backend memory */
    float *x;         /* (cap, hidden) residual stream */
    float *y;         /* (cap, hidden) sublayer output / normed input */
    float *qkv;       /* (cap, ld_qkv) */
    float *att;       /* (cap, att_width) attention output */
    float *ff;        /* (MM_TC_FF_BLOCK, ff_width) */
    float *ff2;       /* (MM_TC_FF_BLOCK, ff2_width) or NULL */
    float *rope_cos;  /* (cap, rope_half) each token's rotary cos row, or NULL */
    float *rope_sin;  /* (cap, rope_half) */
    float *out;       /* (max_batch, hidden) pooled rows */
    int *ints;        /* qoff | qlen | pooled row (max_batch each), then positions (pos_axes, cap) */
    const int *dpos;  /* ints' positions: pos[a * T + t] of this pass, on the backend */
    mm_seqs_t seqs;   /* the pass's sequences (pointers into ints) */
    /* host memory (the same buffers as their backend twins when be->host_memory) */
    float *hx;        /* (cap, hidden) input rows, uploaded to x */
    float *hcos;      /* (cap, rope_half) rotary rows, uploaded to rope_cos */
    float *hsin;      /* (cap, rope_half) */
    int *hints;       /* ints on the host */
    int32_t *pos;     /* (pos_axes, cap) each token's position in the pass, axis after axis
                       * (rows of this pass's T tokens: pos[a * T + t]); inside hints */
    int *start;       /* (max_batch + 1) first token of each sequence in the pass */
};

/* ---------------------------------------------------------------- config.json */

/* The sizes every transformer config gives, all required: vocab_size,
 * hidden_size, num_hidden_layers, num_attention_heads, intermediate_size. */
int mm_tc_cfg_sizes(const mm_cfg_t *o, int *vocab, int *hidden, int *layers, int *heads, int *inter, char *err,
                    size_t errlen);

/* Pooling and length limit from the sentence-transformers files when dir
 * has them (modules.json -> Pooling config, sentence_bert_config.json);
 * leaves *pooling alone otherwise; *max_seq 0 when not given. */
int mm_tc_st_files(const char *dir, int *pooling, int *max_seq, char *err, size_t errlen);

/* ---------------------------------------------------------------- weight walk */

/* One walker serves both passes over the checkpoint: with base == NULL it
 * only checks each tensor (name, dtype, shape) and adds up the layout; with
 * base set it converts each tensor to its place. Both passes call the same
 * functions in the same order, so the layout matches. */
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
} mm_tc_walk_t;

/* An architecture's whole walk: sets its weight pointers from w. */
typedef int (*mm_tc_walk_fn)(mm_tc_walk_t *w, mm_tm_t *m);

/* Starts a region (64-byte aligned) of f32 parts; returns where it will be
 * in the read-only mapping (NULL in the sizing pass). */
const float *mm_tc_walk_begin(mm_tc_walk_t *w);
/* Appends tensor prefix + fmt..., which must be (d0) or (d0, d1), as f32. */
int mm_tc_walk_part(mm_tc_walk_t *w, int ndim, int64_t d0, int64_t d1, const char *fmt, ...) MM_PRINTF(5, 6);
/* mm_tc_walk_part for a tensor of any rank (a conv kernel read as its
 * GEMM operand): prefix + name, shape[ndim]. */
int mm_tc_walk_part_shape(mm_tc_walk_t *w, int ndim, const int64_t *shape, const char *name);
/* A region of one tensor, converted to f32; *dst points at it. */
int mm_tc_walk_one(mm_tc_walk_t *w, const float **dst, int ndim, int64_t d0, int64_t d1, const char *fmt, ...)
    MM_PRINTF(6, 7);
/* A dense layer (N, K): begin, then its row blocks with mm_tc_walk_part,
 * then end, which packs them into an mm_nn_linear blob in w->dt. */
const float *mm_tc_walk_lin_begin(mm_tc_walk_t *w);
int mm_tc_walk_lin_end(mm_tc_walk_t *w, int64_t N, int64_t K);
/* The token embedding table (d0, d1), copied in its checkpoint dtype into
 * m->tok_emb / m->tok_dtype. */
int mm_tc_walk_table(mm_tc_walk_t *w, mm_tm_t *m, int64_t d0, int64_t d1, const char *name);
/* The first d1 floats of row 0 of a (d0, d1) tensor, as f32. */
int mm_tc_walk_row0(mm_tc_walk_t *w, const float **dst, int64_t d0, int64_t d1, const char *name);

/* Opens dir's checkpoint, finds its name prefix ("", "bert.", "model.") by
 * the tensor `probe`, and lays the weights out with `walk` into one sealed
 * read-only memfd (or maps them from the pack cache), setting m->base,
 * bytes, dtype and info.pack_cache. Returns 0 or MM_E_*, err set. */
int mm_tc_pack(mm_tm_t *m, const char *dir, const char *probe, mm_tc_walk_fn walk, char *err, size_t errlen);

/* ---------------------------------------------------------------- load */

/* Before an architecture's load: m zeroed by the caller; sets arch, compute
 * and name; MM_E_UNSUPPORTED when the CPU cannot run `dtype`. */
int mm_tc_init(mm_tm_t *m, const mm_tc_arch_t *arch, const char *dir, mm_dtype_t dtype, char *err,
               size_t errlen);
/* After the pack: info (arch, dim, max_tokens from max_pos and the
 * sentence-transformers max_seq, vocab, dtypes, layers, heads). */
void mm_tc_finish(mm_tm_t *m, int max_pos, int max_seq, int layers, int heads, int append_eos_id);

/* The architectures' forward passes (bert.c, qwen3.c); their loaders are
 * the load of mm_enc_bert / mm_enc_qwen3 (encoder.h). */
extern const mm_tc_arch_t mm_tc_bert, mm_tc_qwen3;

/* ---------------------------------------------------------------- the Qwen decoder */

/* qwen3.c's decoder stack, shared with qwen2vl.c (whose language model is
 * a Qwen2 decoder: q/k/v bias, no q/k norm, M-RoPE). A model struct starts
 * with mm_q3_t, which starts with mm_tm_t. */

typedef struct {
    int vocab;        /* vocab_size */
    int hidden;       /* hidden_size */
    int layers;       /* num_hidden_layers */
    int heads;        /* num_attention_heads */
    int kv_heads;     /* num_key_value_heads */
    int head_dim;     /* head_dim (default hidden / heads) */
    int inter;        /* intermediate_size */
    int max_pos;      /* max_position_embeddings */
    float eps;        /* rms_norm_eps */
    double rope_theta;
    int attn_bias;    /* q/k/v projections have a bias (attention_bias; always in Qwen2) */
    int o_bias;       /* o_proj has one (Qwen3 with attention_bias; never in Qwen2) */
    int qk_norm;      /* RMSNorm of q and k per head before rotary (Qwen3, not Qwen2) */
    int mrope[3];     /* Qwen2-VL mrope_section (t, h, w), or all 0 */
    int eos_id;       /* eos_token_id (-1 when the config has none: Qwen2-VL) */
} mm_q3_config_t;

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
} mm_q3_layer_t;

/* Rotary sections: which position axis each run of rotary frequencies
 * reads. Qwen3 has one axis over all head_dim / 2 frequencies; M-RoPE
 * (Qwen2-VL's mrope_section) has three (time, height, width). */
typedef struct {
    int n;                  /* axes: 1, or 3 with M-RoPE */
    int len[3];             /* frequencies per axis, summing to head_dim / 2 */
} mm_q3_sections_t;

typedef struct {
    mm_tm_t tm;             /* first: the common part; tok_emb is embed_tokens */
    mm_q3_config_t c;
    mm_q3_layer_t *l;       /* (layers) */
    const float *norm;      /* (hidden) final norm */
    mm_q3_sections_t sec;
    int rope_rows;          /* positions the tables cover: [0, rope_rows) */
    float *rope_cos;        /* (rope_rows, head_dim / 2) cos(p inv_freq_i) */
    float *rope_sin;        /* (rope_rows, head_dim / 2) */
} mm_q3_t;

/* Reads the decoder's config from o (Qwen3's config.json, or Qwen2-VL's
 * text config: qwen2 != 0 switches to Qwen2's attention — q/k/v bias, no
 * q/k norm — and reads mrope_section from rope_scaling / rope_parameters). */
int mm_q3_parse_config(const mm_cfg_t *o, int qwen2, mm_q3_config_t *c, char *err, size_t errlen);
/* After the config: the mm_tm_t dims and the layer array. */
int mm_q3_setup(mm_q3_t *m, char *err, size_t errlen);
/* The decoder's part of a weight walk (names relative to the walk's prefix). */
int mm_q3_walk(mm_tc_walk_t *w, mm_tm_t *tm);
/* After the pack: info (mm_tc_finish) and the rotary tables. */
int mm_q3_finish(mm_q3_t *m, int max_seq, char *err, size_t errlen);
/* The architecture's forward (mm_tc_arch_t.forward), what it frees, and
 * its weights on a backend (dev_new / dev_free: the decoder's part). */
void mm_q3_forward(mm_tm_runner_t *r, const int *lens, int n);
void mm_q3_free(mm_tm_t *tm);
int mm_q3_dev_fill(const mm_q3_t *m, struct mm_backend *be, mm_q3_t *d);
void mm_q3_dev_clear(mm_q3_t *d, struct mm_backend *be);

/* ---------------------------------------------------------------- forward pieces */

/* x (sum lens, hidden) = token embedding rows, converted from the table's dtype. */
void mm_tc_embed(const mm_tm_t *m, const int32_t *const *ids, const int *lens, int n, float *x);

/* Where a pass's input rows come from: token ids (looked up, positions
 * 0..len-1 per sequence), or rows and positions the caller made. */
typedef struct {
    const int32_t *const *ids;  /* (n) sequences of lens[s] ids, or NULL */
    const float *x;             /* (sum lens, hidden) input rows when ids is NULL */
    const int32_t *pos;         /* (pos_axes, sum lens) their positions, axis after axis */
} mm_tc_src_t;

/* Runs passes over n sequences, each pass as many whole sequences as fit in
 * the scratch: fills r->x and r->pos from src, runs the architecture's
 * forward, pools by info.pooling into out (n, hidden). Inputs already
 * checked; never allocates. Returns 0 or the backend's error. */
int mm_tc_run(mm_tm_runner_t *r, const mm_tc_src_t *src, const int *lens, int n, float *out);

/* One pass whose input rows the caller already put in r->x (backend
 * memory, start[n] <= cap rows) and positions in r->pos (host, (pos_axes,
 * T)): the forward, pooling, and the pooled rows downloaded to out (n,
 * hidden). n <= max_batch. Returns 0 or the backend's error. */
int mm_tc_pass(mm_tm_runner_t *r, const int *lens, int n, float *out);

/* A runner on be (NULL: a CPU backend of its own with `threads` threads),
 * reading the weights in place (copy 0) or through arch->dev_new (copy 1). */
mm_tm_runner_t *mm_tc_runner_new(const mm_tm_t *m, struct mm_backend *be, int copy, int max_batch, int threads);

/* The dev_new / dev_free helpers of the architectures: *dst = be's copy of
 * the f32 tensor src (n floats) or of the dense layer src; they return
 * nonzero on failure, NULL src stays NULL. */
int mm_tc_dev_const(struct mm_backend *be, const float **dst, const float *src, size_t n);
int mm_tc_dev_dense(struct mm_backend *be, const float **dst, const float *src);
void mm_tc_dev_release(struct mm_backend *be, const float *p);
void mm_tc_dev_dense_free(struct mm_backend *be, const float *p);

/* Checks n and lens against the model: 0, MM_E_INVALID or MM_E_TOOBIG. */
int mm_tc_check_lens(const mm_tm_t *m, const int *lens, int n);

/* The encoder ops every text architecture shares (all but load; textmodel.c). */
void mm_tc_enc_free(void *model);
void mm_tc_enc_info(const void *model, mm_enc_info_t *out);
void *mm_tc_enc_runner_new(const void *model, int max_batch, int max_images, int threads);
void *mm_tc_enc_runner_new_on(const void *model, struct mm_backend *be, int max_batch, int max_images);
void mm_tc_enc_runner_free(void *runner);
int mm_tc_enc_encode(const void *model, void *runner, const mm_input_t *in, int n, float *out);

#endif
