/* Private to src/embed/: the served-model registry, per-worker scratch,
 * and what the route files share (request bodies, the encode loop, the
 * response writer). Not part of the public API (include/mmembed/embed.h). */
#ifndef MMEMBED_EMBED_INTERNAL_H
#define MMEMBED_EMBED_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mmembed/buf.h"
#include "mmembed/cache.h"
#include "mmembed/common.h"
#include "mmembed/conf.h"
#include "mmembed/document.h"
#include "mmembed/embed.h"
#include "mmembed/encoder.h"
#include "mmembed/http.h"
#include "mmembed/multipart.h"
#include "mmembed/preprocess.h"

struct json_object;

#define IMG_CHUNK 8            /* images decoded and encoded per pass */
#define TEXT_CHUNK 64          /* texts tokenized and encoded per pass (a request may hold max_items) */
#define TEXT_CHUNK_TOKENS 8192 /* ... and at most this many tokens per pass (a batch's token budget) */
#define JSON_MAX_DEPTH 16
#define MAX_WEIGHT 1e6         /* multimodal text/image weights: a ratio, far from float overflow */

typedef struct {
    char name[64];
    char dir[MM_PATH_MAX];
    mm_encoder_t *enc;         /* the model: any architecture the registry knows */
    const mm_enc_info_t *info; /* = mm_encoder_info(enc) */
    const mm_preproc_t *pre;   /* its image preprocessor, NULL without vision (&pre_own when capped) */
    mm_preproc_t pre_own;      /* the registry's, max_pixels capped by the config's max_image_tokens */
    mm_enc_runner_t *run;      /* worker only (remote: encodes on the model's executor) */
    mm_enc_remote_fn remote;   /* set by the master for a model with device != "cpu" */
    void *remote_ctx;
    char dtype_want[8];        /* as configured: f32, bf16, q8, auto */
    int max_tokens;            /* truncation length: config max_tokens, else the model's */
    char instruction[512];     /* prefix for input_type "query" (config) */
    int is_default;
    int default_for;           /* MM_MOD_* bits from the config */
    const mm_conf_model_t *cm; /* its config entry (aliases); NULL for the CLI */
} entry_t;

struct mm_embed {
    const mm_conf_t *conf;
    int n;
    entry_t m[MM_MAX_MODELS];
    /* worker scratch, sized once for the largest model */
    int max_items;
    int max_tokens, max_dim, max_pix;
    int32_t *ids;              /* (TEXT_CHUNK, max_tokens) */
    const int32_t **idp;       /* (TEXT_CHUNK) */
    int *lens;                 /* (max_items): tokens per input */
    int *mlens;                /* (TEXT_CHUNK): tokens per cache miss, packed */
    int max_vecs;              /* max(max_items, max_frames) + 2 */
    float *vecs;               /* (max_vecs, max_dim) */
    float *pix;                /* (IMG_CHUNK, max_pix) */
    float *tmp;                /* (TEXT_CHUNK, max_dim): one chunk's cache misses' vectors */
    int *miss;                 /* (max_vecs) */
    mm_cache_t *cache;         /* shared by all workers; NULL = off */
    double t_decode, t_model;  /* ms spent by emb_encode_images in this request (Server-Timing) */
    int generation;            /* config generation: part of every cache key */
    mm_doc_renderer_t doc;     /* worker only: its isolated PDF renderer (fd < 0: none) */
};

/* ---------------------------------------------------------------- errors */

/* What went wrong with a request: the HTTP status, a code and a message. */
typedef struct {
    int status;
    char msg[MM_ERRLEN + 64];
    const char *code;
} fail_t;


/* Fill f and return -1 (for `return emb_failf(...)`). */
int emb_failf(fail_t *f, int status, const char *code, const char *fmt, ...) MM_PRINTF(4, 5);
/* An encoder call's failure rc as f (503 when the model's executor is full
 * or restarting, 504 when it did not answer in time); returns -1. */
int emb_encoder_fail(fail_t *f, int rc, const char *what);

/* Per-request text options: truncate (else 422 when too long) and an
 * instruction prefix (input_type "query" or an explicit "instruction"). */
typedef struct {
    int truncate;
    const char *prefix;
    size_t prefix_len;
} text_opts_t;

extern const text_opts_t emb_default_text_opts;

/* ---------------------------------------------------------------- models (embed.c) */

entry_t *emb_find_model(mm_embed_t *e, const char *name, int need_text, int need_vision, int want);
/* emb_find_model, or a 404 naming the served models. */
entry_t *emb_pick_model_for(mm_embed_t *e, const char *name, int need_text, int need_vision, int want, fail_t *f);
double emb_ms_now(void);

/* ---------------------------------------------------------------- the encode loop (encode.c) */

void emb_input_key(const mm_embed_t *e, const char *model, const char *modality, const void *p, size_t n,
               mm_cache_key_t *k);
int emb_check_text_sizes(const mm_embed_t *e, const size_t *lens, int n, const text_opts_t *o, fail_t *f);
int emb_tokenize_one(mm_embed_t *e, entry_t *m, const char *t, size_t tl, int32_t *ids, int *len, int idx,
                 const text_opts_t *o, fail_t *f);
/* Tokenize and encode n texts into out (n, dim), TEXT_CHUNK at a time,
 * through the cache; e->lens[i] gets each text's token count. */
int emb_encode_texts_opts(mm_embed_t *e, entry_t *m, const char *const *texts, const size_t *lens, int n, float *out,
                      long *tokens, int use_cache, int *hits, const text_opts_t *o, fail_t *f);
int emb_encode_texts(mm_embed_t *e, entry_t *m, const char *const *texts, const size_t *lens, int n, float *out,
                 long *tokens, int use_cache, int *hits, fail_t *f);

/* One request's texts in a packed batch: what the encode loop reads (its
 * model, its inputs as strings or token ids, its own options and cache
 * choice) and what it fills (vectors, token counts, or a failure). */
typedef struct {
    entry_t *m;
    int n;
    const char *const *texts;  /* (n) strings, or NULL when ids is set */
    const size_t *lens;        /* (n) their bytes */
    const int32_t *const *ids; /* (n) token-id sequences (already checked), or NULL */
    const int *id_lens;        /* (n) */
    text_opts_t o;
    int use_cache;
    float *out;                /* (n, m->info->dim), the caller's */
    int *ntok;                 /* (n) tokens per input, the caller's */
    long tokens;               /* sum of ntok */
    int hits;                  /* inputs answered by the cache */
    int failed;                /* f holds why; the other items are unaffected */
    fail_t f;
} text_item_t;

/* Encode the inputs of n requests together: per model (in order of first
 * appearance), every item's inputs oldest first, tokenized with the item's
 * own options, cache hits skipped, the misses of several items packed into
 * one encoder pass of up to TEXT_CHUNK inputs / TEXT_CHUNK_TOKENS tokens.
 * A failure (limits, tokenizing, the encoder) fails the items it concerns
 * only. A vector does not depend on its pass-mates (the encoders run each
 * sequence's attention on its own; see tests). */
void emb_encode_text_items(mm_embed_t *e, text_item_t *const *items, int n);
/* One request's images in a batch: what the encode loop reads (its model,
 * encoded files, cache choice, what is left of its decode budget) and what
 * it fills (vectors, hits, times, or a failure). */
typedef struct {
    entry_t *m;
    int n;
    const unsigned char *const *bufs;  /* (n) encoded files */
    const size_t *lens;                /* (n) */
    int use_cache;
    float *out;                        /* (n, m->info->dim), the caller's */
    double budget_left;                /* s of limits.image_budget left (mm_image_budget_left); updated */
    int hits;                          /* images answered by the cache */
    double t_decode, t_model;          /* ms: its decodes; its share (by rows) of the passes it was in */
    int failed;                        /* f holds why; the other items are unaffected */
    fail_t f;
} image_item_t;

/* Encode the images of n requests together: per model (in order of first
 * appearance), every item's images oldest first, cache hits skipped, each
 * miss decoded and preprocessed with its item's budget into one encoder
 * pass of up to IMG_CHUNK images (misses of several items share a pass).
 * A failure (a bad image, the budget, the encoder) fails the items it
 * concerns only. Chat models (Qwen2-VL) read each image at its own size
 * in a prompt of its own: their items go image by image through
 * emb_encode_chat, unbatched. */
void emb_encode_image_items(mm_embed_t *e, image_item_t *const *items, int n);
/* Decode, preprocess and encode n images (IMG_CHUNK at a time) into out:
 * one item of emb_encode_image_items, on the thread's current budget;
 * adds to e->t_decode / e->t_model. */
int emb_encode_images(mm_embed_t *e, entry_t *m, const unsigned char *const *bufs, const size_t *lens, int n,
                  float *out, int use_cache, int *hits, fail_t *f);

/* ---------------------------------------------------------------- one-sequence inputs (chat.c) */

/* One input of a chat-prompted model (info->chat: Qwen2-VL): a text and
 * any number of images (encoded files) in ONE sequence. */
typedef struct {
    const char *text;                   /* NULL or "" for none */
    size_t text_len;
    const unsigned char *const *bufs;   /* (n_images) encoded files, or with rgb_w: RGB8 frames */
    const size_t *lens;
    int n_images;
    const int *rgb_w, *rgb_h;           /* non-NULL: bufs[i] is (rgb_h[i], rgb_w[i], 3) decoded pixels */
} chat_item_t;

/* Decodes and preprocesses the item's images, builds the model's prompt
 * with the request's instruction (o->prefix; none: the model's default) and
 * encodes it into out (dim), through the cache. *tokens grows by the
 * sequence's length; idx names the input in errors. */
int emb_encode_chat(mm_embed_t *e, entry_t *m, const chat_item_t *it, const text_opts_t *o, float *out, long *tokens,
                    int use_cache, int *hits, int idx, fail_t *f);

/* ---------------------------------------------------------------- request bodies (body.c) */

/* A multipart form collected in memory: small fields and file parts. */
typedef struct {
    char name[MM_MULTIPART_FIELD_MAX];
    char filename[MM_MULTIPART_FIELD_MAX];
    char ctype[MM_MULTIPART_FIELD_MAX];
    int is_file;
    mm_buf_t data;
} part_t;

typedef struct {
    part_t *parts;
    int n, cap;
    int64_t total, max_total;
} form_t;

int emb_is_json(const char *ct);
int emb_is_multipart(const char *ct);
/* The body as a JSON object (413 / 400 with a reason otherwise). */
struct json_object *emb_read_json(mm_embed_t *e, mm_http_req_t *r, fail_t *f);
/* The body as a multipart form held in memory (limits.max_parts, max_body_bytes). */
int emb_read_form(mm_embed_t *e, mm_http_req_t *r, form_t *fm, fail_t *f);
void emb_form_free(form_t *fm);
const part_t *emb_form_field(const form_t *fm, const char *name);
/* Form fields (absent: *out unchanged, 0; present but malformed: 400, -1). */
int emb_form_bool(const form_t *fm, const char *name, int *out, fail_t *f);
int emb_form_number(const form_t *fm, const char *name, double *out, fail_t *f);
int emb_form_int(const form_t *fm, const char *name, int *out, fail_t *f);
int emb_parse_bool(const char *s, int *out);
int emb_jbool(struct json_object *j, const char *key, int *out, fail_t *f);
int emb_jstr(struct json_object *j, const char *key, const char **out, fail_t *f);
/* A base64 string or data: URI into a malloc'd buffer. */
int emb_decode_b64_image(const char *s, size_t len, unsigned char **out, size_t *olen, int idx, fail_t *f);

/* ---------------------------------------------------------------- responses (respond.c) */

void emb_set_x_cache(mm_embed_t *e, mm_http_req_t *r, int use_cache, int hits, int n);
void emb_write_vec(mm_buf_t *b, const float *v, int d);
int emb_vec_usable(const float *v, int d);
void emb_respond_fail(mm_http_req_t *r, const fail_t *f);
/* Answers a request that cannot join a batch — no model configured (404),
 * or no memory for the batch's bookkeeping (500) — and returns 1; else 0. */
int emb_batch_refuse(mm_embed_t *e, mm_http_req_t *r, int have_memory);
/* {"model":...,"dim":...,"data":[  — the list shape every route answers in. */
void emb_begin_data(mm_buf_t *b, const entry_t *m, int dim);

/* ---------------------------------------------------------------- routes (route_*.c) */

int emb_text_options(struct json_object *j, const entry_t *m, int *dims, int *normalize, text_opts_t *o, fail_t *f);
/* the handlers themselves are public (mmembed/embed.h): the router names them */

#endif
