/* encoder — one interface over every embedding architecture.
 *
 * An architecture (src/model/clip.c, bert.c, qwen3.c, use.c, ...) exports one
 * ops table, mm_encoder_ops_t; the registry (src/model/registry.c) reads a
 * Hugging Face folder's config.json once, picks the architecture from its
 * table (architectures / model_type), resolves the compute dtype, loads the
 * weights into the shared pack, and loads what turns request data into
 * model inputs (tokenizer, image preprocessor). Nothing above this layer
 * knows which architectures exist.
 *
 * Inputs are sequences of segments — token ids, or an image's pixels at
 * the geometry the model's preprocessor chose — so a model that reads text
 * and images in one sequence fits the same call. CLIP, BERT, Qwen3 and USE
 * take one segment per input; Qwen2-VL (info.chat set) takes the segments
 * of mm_encoder_chat_input: text, images and text in one sequence, each
 * image at its own size (info.image_dynamic).
 *
 * Lifetimes as in model.h: mm_encoder_t is loaded in the master before
 * fork and never written afterwards; mm_enc_runner_t is one per worker. */
#ifndef MMEMBED_ENCODER_H
#define MMEMBED_ENCODER_H

#include <stddef.h>
#include <stdint.h>

#include "mmembed/nn.h"

struct mm_backend;
struct mm_cfg;
struct mm_cfg_file;
struct mm_preproc;

typedef struct mm_encoder mm_encoder_t;
typedef struct mm_enc_runner mm_enc_runner_t;

enum { MM_SEG_TEXT = 1, MM_SEG_IMAGE = 2 };

typedef struct {
    int kind;                  /* MM_SEG_* */
    const int32_t *ids;        /* MM_SEG_TEXT: (n_ids) token ids, special tokens included */
    int n_ids;
    const float *pixels;       /* MM_SEG_IMAGE: (channels, height, width) normalized floats */
    int channels, height, width;
} mm_segment_t;

typedef struct {
    const mm_segment_t *seg;   /* (n_seg) */
    int n_seg;
} mm_input_t;

/* A chat-prompted embedder (Qwen2-VL: Ops-MM-embedding-v1, GME): the
 * special ids its prompt is made of, and the system instruction used when
 * a request gives none. See mm_encoder_chat_input. */
typedef struct {
    int im_start, im_end, endoftext;       /* <|im_start|> <|im_end|> <|endoftext|> */
    int vision_start, vision_end, image_pad;
    const char *default_instruction;       /* "You are a helpful assistant." */
} mm_enc_chat_t;

/* Static facts about a loaded model, the same struct for every architecture. */
typedef struct {
    const char *arch;          /* "clip", "bert", "qwen3", "use-lite" */
    int dim;                   /* floats per output vector */
    int max_tokens;            /* longest text input, special tokens included (0: no text) */
    int vocab_size;            /* valid ids [0, vocab_size) (0: no text) */
    int has_text, has_vision;
    int takes_ids;             /* clients may send token ids instead of text */
    int append_eos_id;         /* -1, or an id appended after the tokenizer's output (qwen3) */
    int image_size, channels;  /* vision input geometry (0 without vision; image_size 0 when dynamic) */
    int image_dynamic;         /* 1: each image keeps its aspect, sized by mm_preproc_out_dims
                                * (Qwen2-VL smart_resize); image segments carry their own h, w */
    const mm_enc_chat_t *chat; /* non-NULL: inputs are built by mm_encoder_chat_input */
    const char *dtype;         /* checkpoint dtype: "f32", "f16", "bf16", "mixed" */
    const char *compute;       /* dense layers as run: "f32", "bf16", "q8", "q4" */
    int pack_cache;            /* 0 none, 1 mapped from the pack cache, 2 stored, -1 not stored */
    size_t weight_bytes;       /* shared read-only weights */
} mm_enc_info_t;

/* What an architecture provides. `model` and `runner` are its own types. */
typedef struct {
    const char *name;
    const char *f32_only;      /* non-NULL: runs f32 whatever dtype is asked for; says why */
    /* cfg: the root of dir/config.json, read once by the registry (views
     * and getters: mmembed/hfconfig.h); the architecture never reopens it. */
    int (*load)(const char *dir, const struct mm_cfg *cfg, mm_dtype_t dt, void **model, char *err, size_t errlen);
    void (*free)(void *model);
    void (*info)(const void *model, mm_enc_info_t *out);
    /* Optional: the architecture's own tokenizer (NULL: the folder's
     * tokenizer.json). Writes MM_MIN(cap, count) ids, *n = count clipped to
     * the model's max, *total = count before clipping. */
    int (*tokenize)(const void *model, const char *text, size_t len, int32_t *ids, int cap, int *n, int *total,
                    char *err, size_t errlen);
    void *(*runner_new)(const void *model, int max_batch, int max_images, int threads);
    /* Optional: a runner whose forward runs on a compute backend the caller
     * keeps open (mmembed/backend.h); it holds its own copy of the weights
     * there. NULL when out of (device) memory. */
    void *(*runner_new_on)(const void *model, struct mm_backend *be, int max_batch, int max_images);
    void (*runner_free)(void *runner);
    /* Encode n inputs (n <= the runner's max_batch for text, any n for
     * images) into out (n, dim), NOT normalized. Returns 0 or MM_E_*. */
    int (*encode)(const void *model, void *runner, const mm_input_t *in, int n, float *out);
} mm_encoder_ops_t;

/* ---------------------------------------------------------------- registry */

/* The dtype policy. A model's dense layers run in the dtype configured
 * ("f32", "bf16", "q8", "q4"), or f32 where the CPU cannot run that one
 * natively; "auto" takes the best the CPU runs natively — bf16 (AMX or
 * AVX512-BF16; else f32), then q8 (AVX512-VNNI or AMX), then q4 (AVX2) —
 * whose packs, with those of every other configured model, fit
 * memory_share of the available memory, stepping the largest auto model
 * down first. */
#define MM_PLAN_WHY 320
#define MM_MAX_PLAN 64
typedef struct {
    const char *dir;                /* model folder */
    const char *want;               /* configured dtype name, or "auto" */
    size_t bytes[MM_DT_COUNT];      /* pack size per dtype (mm_encoder_pack_bytes; needed for auto) */
    mm_dtype_t dt;                  /* out: what runs */
    char why[MM_PLAN_WHY];          /* out: one line, for /info's dtype_reason */
} mm_enc_plan_t;

/* The dtype of one dense layer of a text transformer whose vector is one
 * token's state (CLIP's text tower: the end token; Qwen3 and Qwen2-VL's
 * language model: the last token) in a model packed in dt: block b of n,
 * or b = -1 for CLIP's text projection. q4 keeps the first
 * MM_Q4_KEEP_BLOCKS blocks, whatever the depth, and the text projection in
 * q8: the 4-bit error of an early block passes through every later one (on
 * the ViT-B/32 shape the first text block alone holds a third of q4's
 * cosine loss, the last one none), so they are where a mix of types
 * spends its bytes, as llama.cpp's Q4_K_M gives its first layers more
 * bits (f32 where the CPU has no native q8, e.g. AVX2 only: an int8
 * blob is never packed for a CPU that cannot multiply it). Two keep the
 * dense bytes <= 0.55 of q8's on the Qwen2-VL-2B shape (28 blocks); a
 * tower of two blocks or fewer is then q8 throughout. Vision towers and
 * BERT (mean pooling averages the error over the tokens) stay q4: their
 * vectors meet 0.99 without. Any other dt is returned as is; n is the
 * depth (unused by the rule). */
#define MM_Q4_KEEP_BLOCKS 2
/* The number of leading text blocks q4 keeps in q8: MMEMBED_Q4_KEEP (0 to
 * 999; 0 puts every text block in 4 bits, as llama-quantize's --pure,
 * the projection staying q8) when set, else MM_Q4_KEEP_BLOCKS. Part of the
 * pack cache's key. */
int mm_encoder_q4_keep(void);
mm_dtype_t mm_encoder_text_dtype(mm_dtype_t dt, int b, int n);

/* Estimated bytes of dir's shared pack in each dtype, from its checkpoint
 * headers (dense matrices as packed, q4 with the q8 layers of
 * mm_encoder_text_dtype, everything else counted in f32).
 * Returns 0, or the mm_st_open error with err set. */
int mm_encoder_pack_bytes(const char *dir, size_t bytes[MM_DT_COUNT], char *err, size_t errlen);

/* MemAvailable from /proc/meminfo in bytes (0 if unknown), or the
 * MMEMBED_MEM_AVAILABLE environment variable (bytes, or with a K, M or G
 * suffix) when set: tests force each branch of the policy with it. */
size_t mm_encoder_mem_available(void);

/* Resolves p[0..n) together for a budget of share (0 < share <= 1; else
 * 0.5) x avail bytes (avail 0: unknown, auto takes the best native dtype).
 * Returns 0; MM_E_INVALID for an unknown dtype name; MM_E_TOOBIG, with err
 * naming every model's size, when the auto models cannot fit even in q4. */
int mm_encoder_plan(mm_enc_plan_t *p, int n, double share, size_t avail, char *err, size_t errlen);

/* Reads dir/config.json (once) and picks its architecture from the table
 * (model_type first, then architectures[0] / architecture). Returns MM_OK
 * with *file (the caller closes it) and *ops, or MM_E_NOTFOUND /
 * MM_E_INVALID (no readable config.json) / MM_E_UNSUPPORTED (no
 * architecture of ours), err set. */
int mm_encoder_probe(const char *dir, struct mm_cfg_file **file, const mm_encoder_ops_t **ops, char *err,
                     size_t errlen);

/* Reads dir/config.json once and loads the folder with ops (ops->load's
 * contract): the architectures' own entry points (mm_model_load_as,
 * mm_use_load) go through it, so no architecture opens config.json. */
int mm_encoder_load_ops(const char *dir, const mm_encoder_ops_t *ops, mm_dtype_t dt, void **model, char *err,
                        size_t errlen);

/* Loads p->dir with the plan's dtype and reason (mm_encoder_load's
 * contract otherwise). */
int mm_encoder_load_planned(const mm_enc_plan_t *p, mm_encoder_t **out, char *err, size_t errlen);

/* Loads the model folder `dir` with the dense layers in `dtype` ("f32",
 * "bf16", "q8", "q4" or "auto": the policy above for this model alone,
 * memory_share 0.5). On failure err names the file, key or tensor at
 * fault. */
int mm_encoder_load(const char *dir, const char *dtype, mm_encoder_t **out, char *err, size_t errlen);
void mm_encoder_free(mm_encoder_t *e);

const mm_enc_info_t *mm_encoder_info(const mm_encoder_t *e);
/* The image preprocessor (valid with a vision tower, else NULL). */
const struct mm_preproc *mm_encoder_preproc(const mm_encoder_t *e);
/* Why the dense layers run in info->compute (config, CPU, memory). */
const char *mm_encoder_dtype_reason(const mm_encoder_t *e);
double mm_encoder_load_ms(const mm_encoder_t *e);
/* 1 when config.json says the weights are synthetic (not trained). */
int mm_encoder_synthetic(const mm_encoder_t *e);

/* Turns text into the ids the model reads: the tokenizer, then truncation
 * to max_tokens (<= info->max_tokens) keeping room for append_eos_id, which
 * is appended. With truncate 0 a longer text is MM_E_TOOBIG. ids has room
 * for info->max_tokens. */
int mm_encoder_tokenize(const mm_encoder_t *e, const char *text, size_t len, int max_tokens, int truncate,
                        int32_t *ids, int *n, char *err, size_t errlen);

/* For a model with info->chat: one input of `text` (len bytes; NULL or
 * empty for none) and n_images images in ONE sequence, the way Ops-MM-
 * embedding-v1 builds it:
 *   <|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n
 *   (<|vision_start|><|image_pad|><|vision_end|>) per image {text}<|im_end|>\n
 *   <|im_start|>assistant\n<|endoftext|>
 * instruction (ilen bytes) NULL: info->chat->default_instruction. The text pieces are
 * written to ids (cap ids) and seg[0 .. 2 n_images] is filled: TEXT, then
 * IMAGE, TEXT per image; the caller sets each IMAGE segment's pixels and
 * size. Each image stands for `visual_tokens / n_images` tokens on average:
 * visual_tokens (all images) counts toward max_tokens, and with truncate
 * the text is cut to fit; without, a longer input is MM_E_TOOBIG. *n_seg
 * is 2 n_images + 1. Returns 0, MM_E_TOOBIG, MM_E_UNSUPPORTED (not a chat
 * model) or a tokenizer error. */
int mm_encoder_chat_input(const mm_encoder_t *e, const char *instruction, size_t ilen, const char *text, size_t len,
                          int n_images, int visual_tokens, int truncate, int32_t *ids, int cap, mm_segment_t *seg,
                          int *n_seg, char *err, size_t errlen);

/* A worker's run state for passes of up to max_batch texts and max_images
 * images. NULL when out of memory. */
mm_enc_runner_t *mm_encoder_runner_new(const mm_encoder_t *e, int max_batch, int max_images, int threads);
/* The same on a compute backend (runner_new_on): NULL when the
 * architecture has none or out of (device) memory. be stays the caller's
 * and must outlive the runner. */
mm_enc_runner_t *mm_encoder_runner_new_on(const mm_encoder_t *e, struct mm_backend *be, int max_batch,
                                          int max_images);
void mm_encoder_runner_free(mm_enc_runner_t *r);
int mm_encoder_encode(mm_enc_runner_t *r, const mm_input_t *in, int n, float *out);
/* Conveniences over mm_encoder_encode: n token sequences, or n images laid
 * out one after another at the model's geometry (fixed-geometry models:
 * MM_E_UNSUPPORTED when info->image_dynamic). */
int mm_encoder_encode_ids(mm_enc_runner_t *r, const int32_t *const *ids, const int *lens, int n, float *out);
int mm_encoder_encode_pixels(mm_enc_runner_t *r, const float *pixels, int n, float *out);

/* ---------------------------------------------------------------- on a backend, or elsewhere */

/* 1 when e's architecture has a forward on a compute backend (runner_new_on). */
int mm_encoder_has_backend(const mm_encoder_t *e);

/* A runner whose encode is done elsewhere: fn(ctx, in, n, out) with
 * mm_encoder_encode's contract (a worker hands its model inputs to a GPU
 * executor this way; src/serve/executor.c). NULL when out of memory. */
typedef int (*mm_enc_remote_fn)(void *ctx, const mm_input_t *in, int n, float *out);
mm_enc_runner_t *mm_encoder_runner_remote(const mm_encoder_t *e, mm_enc_remote_fn fn, void *ctx);

/* The architectures (each defined in its own file). */
extern const mm_encoder_ops_t mm_enc_clip, mm_enc_bert, mm_enc_qwen3, mm_enc_use, mm_enc_qwen2vl;

#endif
