/* safetensors — read-only access to Hugging Face checkpoints, and the shared
 * f32 weight pack that model loaders build from them.
 *
 * Used by the model loaders in src/model/ only; the layers above see models
 * through mmembed/model.h.
 *
 * Checkpoint (src/model/safetensors.c, prefix mm_st_): one model.safetensors
 * or a sharded set listed by model.safetensors.index.json, every file
 * mmapped read-only; tensors are looked up by their Hugging Face name and
 * checked against the shape the model config implies.
 *
 * Weight pack (src/model/weights.c, prefix mm_weights_): one contiguous
 * block of f32 in a sealed memfd, mapped read-only. It is built once in the
 * master before workers fork, so every worker shares the same physical pages.
 */
#ifndef MMEMBED_SAFETENSORS_H
#define MMEMBED_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "mmembed/nn.h"

/* ===================================================== checkpoint ==== */

/* Element types the kernels can consume (converted to f32 at load). Every
 * other safetensors dtype (I64 position_ids buffers, F64, F8, ...) is listed
 * as MM_ST_OTHER: harmless until a model asks for such a tensor. */
typedef enum { MM_ST_OTHER = 0, MM_ST_F32, MM_ST_F16, MM_ST_BF16 } mm_st_dtype_t;

#define MM_ST_MAXDIM 8

typedef struct {
    const char *name;        /* HF name, e.g. "text_model.final_layer_norm.weight" */
    const char *dtype_name;  /* as in the header: "F32", "BF16", "I64", ... */
    mm_st_dtype_t dtype;
    int ndim;                /* 0 for a scalar */
    int64_t shape[MM_ST_MAXDIM];
    size_t numel;
    const void *data;        /* numel elements in the read-only mapping; not aligned */
    size_t nbytes;
} mm_st_tensor_t;

typedef struct mm_st mm_st_t;

/* Opens a checkpoint. `path` is a model directory (model.safetensors, else
 * model.safetensors.index.json and the shards it names), a .safetensors
 * file, or an index .json file. Headers are validated (offsets inside the
 * file, sizes matching dtype and shape, no duplicate names across shards).
 * On success *out owns the mappings until mm_st_close. On failure returns
 * MM_E_NOTFOUND (no checkpoint), MM_E_INVALID (corrupt file) or MM_E_NOMEM
 * with a one-line reason in err. */
int mm_st_open(const char *path, mm_st_t **out, char *err, size_t errlen);

/* Unmaps every file and frees the handle (NULL is fine). Tensor pointers
 * obtained from it become invalid. */
void mm_st_close(mm_st_t *st);

/* Number of tensors and the i-th one in name order (0 <= i < count). */
int mm_st_count(const mm_st_t *st);
const mm_st_tensor_t *mm_st_at(const mm_st_t *st, int i);

/* The tensor called `name`, or NULL. */
const mm_st_tensor_t *mm_st_find(const mm_st_t *st, const char *name);

/* Looks up `name` and checks it: present (else MM_E_NOTFOUND), of a
 * convertible dtype (else MM_E_UNSUPPORTED), and of exactly `ndim` dims
 * equal to `shape` (else MM_E_INVALID). Every error text names the tensor,
 * e.g. "text_model.embeddings.token_embedding.weight: shape [49408, 32] in
 * the checkpoint, config implies [49408, 64]". */
int mm_st_get(const mm_st_t *st, const char *name, int ndim, const int64_t *shape,
              const mm_st_tensor_t **out, char *err, size_t errlen);

/* Converts n elements of dtype dt at src (any alignment) to f32 at dst.
 * dt must not be MM_ST_OTHER. */
void mm_st_convert(mm_st_dtype_t dt, const void *src, float *dst, size_t n);

/* Short lower-case name for model info: "f32", "f16", "bf16" or "other". */
const char *mm_st_dtype_str(mm_st_dtype_t dt);

/* ==================================================== weight pack ==== */

typedef struct mm_weights mm_weights_t;

/* Starts an empty pack builder. Returns 0 or MM_E_NOMEM. */
int mm_weights_new(mm_weights_t **out);

/* Reserves n floats (64-byte aligned, zero unless filled). *slot receives
 * their address when mm_weights_finish succeeds, so `slot` must stay valid
 * until then. Returns the region id (>= 0) or MM_E_NOMEM. */
int mm_weights_reserve(mm_weights_t *w, size_t n, const float **slot);

/* The dtype packed regions are stored and multiplied in (default f32); set
 * before reserving them. */
void mm_weights_set_dtype(mm_weights_t *w, mm_dtype_t dt);
mm_dtype_t mm_weights_dtype(const mm_weights_t *w);

/* Reserves a (rows, cols) matrix W as an mm_nn_linear blob in the pack's
 * dtype (mm_nn_lin_bytes; unfilled rows are zero). Returns the region id or
 * MM_E_NOMEM. */
int mm_weights_reserve_packed(mm_weights_t *w, int rows, int cols, const void **slot);

/* Schedules tensor `name` (checked as by mm_st_get) to be converted to f32
 * into `region`: for a plain region at float offset `off` — e.g. biases of
 * q, k and v side by side; for a packed region as rows off.. of the matrix,
 * the tensor read as (shape[0], product of the other dims) — e.g. the q, k
 * and v weights stacked into one fused matrix, or a conv kernel as its
 * im2col GEMM operand. Nothing is copied until mm_weights_finish; `st` must
 * stay open until then. Returns 0 or the mm_st_get error (MM_E_INVALID also
 * when the tensor does not fit the region). */
int mm_weights_fill(mm_weights_t *w, int region, size_t off, const mm_st_t *st,
                    const char *name, int ndim, const int64_t *shape,
                    char *err, size_t errlen);

/* mm_weights_reserve of exactly the tensor's size + mm_weights_fill (plain
 * layout). */
int mm_weights_add(mm_weights_t *w, const float **slot, const mm_st_t *st, const char *name,
                   int ndim, const int64_t *shape, char *err, size_t errlen);

/* A lookup table (rows, cols) as int8 rows, then one f32 scale per row
 * (mm_tops_i8_quantize, mmembed/textops.h): two regions, each 64-byte
 * aligned; *slot receives the rows, *scale the scales. The token tables of
 * q4 packs. Returns 0 or the mm_weights_add errors. */
int mm_weights_add_i8rows(mm_weights_t *w, const void **slot, const float **scale, const mm_st_t *st,
                          const char *name, int64_t rows, int64_t cols, char *err, size_t errlen);

/* Total bytes the pack will occupy (page-rounded), known before finish. */
size_t mm_weights_size(const mm_weights_t *w);

/* Builds the pack: creates a memfd named `label`, converts every scheduled
 * tensor into it, seals it (no write, grow or shrink) and maps it
 * PROT_READ | MAP_SHARED; the writable mapping and the fd are gone when
 * this returns, so a stray write faults. Sets every reserved slot, and
 * *base / *bytes for mm_weights_unmap. The builder still needs
 * mm_weights_free. Returns 0, MM_E_NOMEM or MM_ERR with a reason in err. */
int mm_weights_finish(mm_weights_t *w, const char *label, void **base, size_t *bytes,
                      char *err, size_t errlen);

/* mm_weights_finish through a pack cache file (mmembed/packcache.h): with
 * `cache` set, maps that file when it holds this layout's size (*cached =
 * 1), else builds the pack and stores it there (*cached = 2, or -1 when the
 * file could not be written); *cached = 0 without a cache path. */
int mm_weights_finish_cached(mm_weights_t *w, const char *label, const char *cache, void **base, size_t *bytes,
                             int *cached, char *err, size_t errlen);

/* The shared block under every pack (this builder's and the text encoders'
 * walk in textcommon.c): a memfd of `size` bytes named `label` (shown in
 * /proc/PID/maps as memfd:LABEL; "mmembed-weights:..." is what
 * tools/pss_report.py looks for), preallocated (out of shared memory is an
 * error here, not a SIGBUS later) and mapped writable at `rw` for filling. */
typedef struct {
    int fd;
    unsigned char *rw;
    size_t size;
} mm_pack_block_t;
int mm_pack_block_open(mm_pack_block_t *b, const char *label, size_t size, char *err, size_t errlen);
/* Unmaps the writable view, seals the memfd (no write, grow or shrink) and
 * maps it PROT_READ (MAP_SHARED; MAP_PRIVATE on kernels that refuse a
 * shared map of a write-sealed memfd): a stray write from any process then
 * faults. *ro is the mapping that stays. */
int mm_pack_block_seal(mm_pack_block_t *b, void **ro, char *err, size_t errlen);
/* Drops an unsealed block (after a failed fill). */
void mm_pack_block_abort(mm_pack_block_t *b);

/* Frees the builder (not the pack). NULL is fine. */
void mm_weights_free(mm_weights_t *w);

/* Unmaps a finished pack (base NULL is fine). */
void mm_weights_unmap(void *base, size_t bytes);

#endif
