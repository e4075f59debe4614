/* model — embedding models loaded from Hugging Face folders.
 *
 * Two lifetimes, matching the server's processes:
 *   mm_model_t   loaded once in the master (config + weights converted to a
 *                read-only shared pack: f32, dense layers in the model's
 *                dtype); inherited by forked workers and
 *                never written after mm_model_load returns.
 *   mm_runner_t  one per worker: all scratch for the largest batch it
 *                accepts, allocated up front; encode calls never allocate.
 *
 * Inputs are token ids and pixel tensors: tokenizing and image
 * preprocessing live in text/ and media/. Outputs are the raw projection
 * vectors (NOT normalized; see mm_nn_l2_normalize in mmembed/nn.h).
 *
 * Supported: CLIP (config.json "architectures" CLIPModel,
 * CLIPTextModelWithProjection, CLIPVisionModelWithProjection / model_type
 * "clip", "clip_text_model", "clip_vision_model") in F32, F16 or BF16
 * safetensors, single file or sharded. */
#ifndef MMEMBED_MODEL_H
#define MMEMBED_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "mmembed/nn.h"

typedef struct mm_model mm_model_t;
typedef struct mm_runner mm_runner_t;

typedef struct {
    const char *name;   /* last path component of the model directory */
    const char *arch;   /* "clip" */
    int dim;            /* projection_dim: floats per output vector */
    int max_tokens;     /* text max_position_embeddings (0 without a text tower) */
    int vocab_size;     /* valid ids are [0, vocab_size) (0 without a text tower) */
    int image_size;     /* vision input is channels x image_size x image_size (0 without) */
    int channels;       /* vision num_channels (3) */
    int has_text, has_vision;
    const char *dtype;  /* source checkpoint dtype: "f32", "f16", "bf16" or "mixed" */
    const char *compute; /* dense layers' dtype: "f32", "bf16" or "q8" (mm_model_load_as) */
    int pack_cache;      /* 0 no pack cache, 1 pack mapped from it, 2 built and stored, -1 not stored */
} mm_model_info_t;

/* Loads the model in directory `dir`: parses config.json, maps the
 * safetensors checkpoint (model.safetensors or an index + shards), checks
 * every tensor's name, dtype and shape against the config, converts them
 * into one sealed read-only shared-memory pack and unmaps the checkpoint.
 * Call before fork() so workers share the pack. On success *out is owned by
 * the caller (mm_model_free). On failure *out is NULL, err holds one line
 * naming the file or tensor at fault, and the return is MM_E_NOTFOUND (no
 * config.json / checkpoint / tensor), MM_E_UNSUPPORTED (architecture,
 * activation or dtype), MM_E_INVALID (bad config value, mis-shaped tensor,
 * corrupt file), MM_E_NOMEM or MM_ERR. */
int mm_model_load(const char *dir, mm_model_t **out, char *err, size_t errlen);

/* mm_model_load with the dense layers packed in `dtype` (f32, bf16, q8;
 * see mm_dtype_t in mmembed/nn.h and mm_nn_resolve_dtype for what the CPU
 * supports). */
int mm_model_load_as(const char *dir, mm_dtype_t dtype, mm_model_t **out, char *err, size_t errlen);

/* Unmaps the weights and frees the model (NULL is fine). Every runner made
 * from it must be freed first. */
void mm_model_free(mm_model_t *m);

/* Static facts about the model; valid as long as the model. */
const mm_model_info_t *mm_model_info(const mm_model_t *m);

/* Size in bytes of the shared weight pack (compare with a worker's
 * Shared/Pss in /proc/<pid>/smaps_rollup). */
size_t mm_model_weight_bytes(const mm_model_t *m);

/* Makes a worker's run state: scratch for up to max_text_batch sequences of
 * max_tokens ids and max_image_batch images per forward pass (larger calls
 * are split into passes of that size). `threads` (1..64; below 1 means 1)
 * is how many threads its forward passes use, the caller's included; the
 * thread pool is process-wide and resized on entry to an encode call if
 * another runner changed it. Create runners after fork(), in the worker.
 * Returns NULL when out of memory or when a batch size is below 1 for a
 * tower the model has. */
mm_runner_t *mm_runner_new(const mm_model_t *m, int max_text_batch, int max_image_batch,
                           int threads);

/* Frees a runner (NULL is fine). */
void mm_runner_free(mm_runner_t *r);

/* ---- on a compute backend (mmembed/backend.h: cpu, cuda) ---- */

struct mm_backend;
typedef struct mm_model_dev mm_model_dev_t;

/* Copies m's weights onto backend be once (a GPU converts the dense layers
 * to its operand type; the CPU backend uses m's pack in place). A GPU needs
 * m loaded with f32 dense layers. m and be must outlive *out. Returns MM_OK,
 * or MM_ERR with err naming the backend's failure (out of device memory). */
int mm_model_dev_new(const mm_model_t *m, struct mm_backend *be, mm_model_dev_t **out, char *err,
                     size_t errlen);
void mm_model_dev_free(mm_model_dev_t *d);

/* A runner whose encode calls (mm_model_encode_text / _image, with their
 * contracts) run the forward on d's backend, for up to max_text_batch
 * sequences and max_image_batch images per pass; its scratch lives on the
 * backend. Free it (mm_runner_free) before d. NULL when out of (device)
 * memory. The encode calls return the backend's status (MM_ERR with the
 * reason in be->ops->error) when a backend op failed. */
mm_runner_t *mm_runner_new_dev(const mm_model_dev_t *d, int max_text_batch, int max_image_batch);

/* Embeds n token sequences: ids[i] holds lens[i] ids (1..max_tokens, each
 * in [0, vocab_size), including the start/end tokens the tokenizer adds).
 * Sequences are packed without padding. Writes n * dim floats to out.
 * Returns 0, MM_E_UNSUPPORTED (no text tower), MM_E_TOOBIG (a sequence
 * longer than max_tokens) or MM_E_INVALID (empty sequence, id out of
 * range, n < 0). A sequence's result is bit-identical whatever batch it
 * comes in and whatever the thread count. */
int mm_model_encode_text(mm_runner_t *r, const int32_t *const *ids, const int *lens, int n,
                         float *out);

/* Embeds n images given as normalized float pixels, image after image,
 * each channels x image_size x image_size (CHW). Writes n * dim floats.
 * Returns 0, MM_E_UNSUPPORTED (no vision tower) or MM_E_INVALID (n < 0).
 * Results are bit-identical whatever the batch and thread count. */
int mm_model_encode_image(mm_runner_t *r, const float *pixels, int n, float *out);

#endif
