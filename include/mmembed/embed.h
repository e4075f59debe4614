/* The glue between HTTP and models: the model registry (loaded once in the
 * master, shared read-only by workers) and the embedding route handlers. */
#ifndef MMEMBED_EMBED_H
#define MMEMBED_EMBED_H

#include "mmembed/buf.h"
#include "mmembed/common.h"
#include "mmembed/encoder.h"   /* mm_enc_remote_fn */

struct mm_http_req;
struct mm_encoder;
typedef struct mm_embed mm_embed_t;

/* Master, before fork: load and prepare every configured model. The conf
 * must outlive the registry. */
int mm_embed_load(const void *conf /* const mm_conf_t* */, mm_embed_t **out, char *err, size_t errlen);
void mm_embed_free(mm_embed_t *e);
/* Worker, after fork: allocate per-worker scratch and set threads. */
int mm_embed_init_child(mm_embed_t *e, int threads, char *err, size_t errlen);

/* ---- models run by an executor (device != "cpu"; docs/GPU.md) ---- */
int mm_embed_n_models(const mm_embed_t *e);
const char *mm_embed_model_name(const mm_embed_t *e, int i);
struct mm_encoder *mm_embed_model_encoder(const mm_embed_t *e, int i);
/* Master, before fork: model i's encode calls in the workers go to fn(ctx,
 * inputs, n, out) (mm_enc_remote_fn, encoder.h) instead of a
 * runner of their own: mm_embed_init_child makes a remote runner for it. */
void mm_embed_set_remote(mm_embed_t *e, int i, mm_enc_remote_fn fn, void *ctx);
/* Bytes of model i's largest single input as an executor slot carries it
 * (its largest image at f32, a prompt's ids beside it). */
size_t mm_embed_model_max_input_bytes(const mm_embed_t *e, int i);
/* An embedding route's handler; the router's route table names one per
 * route (src/serve/router.c), so a route is added there and here only. */
typedef void mm_embed_route_fn(mm_embed_t *e, struct mm_http_req *r);
mm_embed_route_fn mm_embed_openai;      /* POST /v1/embeddings */
mm_embed_route_fn mm_embed_text;        /* POST /embed/text */
mm_embed_route_fn mm_embed_image;       /* POST /embed/image */
mm_embed_route_fn mm_embed_multimodal;  /* POST /embed/multimodal */
mm_embed_route_fn mm_embed_video;       /* POST /embed/video */
mm_embed_route_fn mm_embed_document;    /* POST /embed/document */
/* Requests of the text routes (/v1/embeddings, /embed/text, told apart by
 * r->route) answered together: each is parsed with its own options, the
 * inputs of all are encoded packed per model (emb_encode_text_items), and
 * each is answered; one request's error answers that request only. The
 * worker's request thread hands it every such request it took in one pass;
 * mm_embed_openai / mm_embed_text are this with n = 1. */
void mm_embed_text_batch(mm_embed_t *e, struct mm_http_req *const *rs, int n);
/* Requests of /embed/image answered together: each is parsed (multipart or
 * JSON base64) with its own options and limits, the images of all are
 * decoded (each request on its own image budget) and encoded in shared
 * passes per model (emb_encode_image_items), and each is answered; one
 * request's bad image answers that request only. mm_embed_image is this
 * with n = 1. */
void mm_embed_image_batch(mm_embed_t *e, struct mm_http_req *const *rs, int n);
/* Run an embedding route's handler: a 404 JSON answer when no model is
 * configured (or fn is NULL), else fn. */
void mm_embed_handle(mm_embed_t *e, struct mm_http_req *r, mm_embed_route_fn *fn);
/* Append the models as a JSON array for /info and /health. */
void mm_embed_models_json(const mm_embed_t *e, mm_buf_t *b);
/* The models in OpenAI's GET /v1/models shape. */
void mm_embed_models_openai(const mm_embed_t *e, mm_buf_t *b);
/* One model in GET /v1/models/{id} shape (id may be an alias) appended to
 * b; MM_E_NOTFOUND if no model has that name. */
int mm_embed_model_openai(mm_embed_t *e, const char *id, mm_buf_t *b);
/* The names clients may use (models and aliases), comma separated. */
void mm_embed_model_names(const mm_embed_t *e, char *out, size_t cap);
/* Total bytes of prepared weights (shared by all workers). */
size_t mm_embed_weight_bytes(const mm_embed_t *e);

struct mm_cache;
/* Attach the shared embedding cache (NULL = off) and the config generation
 * that keys its entries (master, before fork). */
void mm_embed_set_cache(mm_embed_t *e, struct mm_cache *c, int generation);
/* Largest output dimension of the loaded models (sizes the cache). */
int mm_embed_max_dim(const mm_embed_t *e);
/* Append the cache counters to a Prometheus text body. */
void mm_embed_cache_metrics(const mm_embed_t *e, mm_buf_t *b);

/* Command-line embedding without a server: load the model folder `dir`,
 * embed nt texts then ni image files, append {"model","data":[...]} JSON to
 * out. Returns MM_OK or an error with a message in err. */
int mm_embed_cli(const char *dir, const char *const *texts, int nt, const char *const *images, int ni,
                 int normalize, mm_buf_t *out, char *err, size_t errlen);

/* Command-line tokenization through the model's own path (any model folder
 * with a text tower: tokenizer.json or USE-Lite's vocabulary): appends
 * {"ids":[...],"tokens":n} to out. */
int mm_embed_tokenize_cli(const char *dir, const char *text, mm_buf_t *out, char *err, size_t errlen);

#endif
