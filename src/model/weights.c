/* The shared weight pack: every tensor a model's kernels read, converted to
 * f32 (dense layers to their packed blobs in the model's dtype) and fused
 * where the kernels prefer (e.g. q|k|v), in one contiguous read-only block
 * backed by a memfd, or mapped from a pack cache file.
 *
 * Why a memfd and not malloc: the master builds the pack before forking
 * workers; a MAP_SHARED mapping of one shmem object is inherited by every
 * child and stays one physical copy (each worker's Pss carries 1/N of it),
 * while a private heap copy would only share until the first write near it.
 * Sealing (F_SEAL_WRITE) and mapping PROT_READ turn any stray write from
 * any process into SIGSEGV instead of silent corruption of all workers.
 *
 * Matrices that mm_nn_linear multiplies are stored as its packed blobs
 * (mm_nn_lin_pack) in the pack's dtype: f32 transposed, or bf16 / int8 in
 * oneDNN's blocked layout, so no kernel ever re-lays them out per call.
 * A lookup table may be stored as int8 rows with a scale per row (q4
 * packs' token tables: mm_weights_add_i8rows).
 *
 * Two phases: reserve/fill only record what goes where (and check names,
 * shapes and dtypes, so a bad checkpoint fails before anything big is
 * allocated); finish sizes the memfd once and converts straight into it. */
#include "mmembed/safetensors.h"

#include "mmembed/common.h"
#include "mmembed/nn.h"
#include "mmembed/packcache.h"
#include "mmembed/textops.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ALIGN 64 /* bytes: cache line, and AVX-512 friendly */

typedef struct {
    size_t off;   /* bytes from the pack start */
    size_t n;     /* floats */
    const float **slot; /* set at finish (plain regions) */
    const void **bslot; /* set at finish (packed regions) */
    int rows, cols; /* packed regions: the (rows, cols) matrix mm_nn_linear reads; int8 tables:
                     * their shape; else 0 */
    int i8;         /* an int8 table (mm_weights_add_i8rows): its scales are the next region */
    mm_dtype_t dt;  /* packed regions: the blob's dtype (the pack's when reserved) */
} region_t;

typedef struct {
    int region;
    size_t off;   /* floats into the region */
    const mm_st_tensor_t *t;
} fill_t;

struct mm_weights {
    region_t *r;
    int nr, rcap;
    fill_t *f;
    int nf, fcap;
    size_t bytes; /* running end of the layout */
    mm_dtype_t dtype; /* of the packed regions */
};

int mm_weights_new(mm_weights_t **out)
{
    *out = calloc(1, sizeof(**out));
    return *out ? MM_OK : MM_E_NOMEM;
}

void mm_weights_set_dtype(mm_weights_t *w, mm_dtype_t dt)
{
    w->dtype = dt;
}

mm_dtype_t mm_weights_dtype(const mm_weights_t *w)
{
    return w->dtype;
}

void mm_weights_free(mm_weights_t *w)
{
    if (!w)
        return;
    free(w->r);
    free(w->f);
    free(w);
}

static int reserve_bytes(mm_weights_t *w, size_t bytes)
{
    if (w->nr == w->rcap) {
        int cap = w->rcap ? w->rcap * 2 : 256;
        region_t *r = realloc(w->r, (size_t)cap * sizeof(*r));
        if (!r)
            return MM_E_NOMEM;
        w->r = r;
        w->rcap = cap;
    }
    region_t *r = &w->r[w->nr];
    memset(r, 0, sizeof *r);
    r->off = w->bytes;
    r->n = bytes / sizeof(float);
    w->bytes += (bytes + ALIGN - 1) / ALIGN * ALIGN;
    return w->nr++;
}

int mm_weights_reserve(mm_weights_t *w, size_t n, const float **slot)
{
    int region = reserve_bytes(w, n * sizeof(float));
    if (region >= 0)
        w->r[region].slot = slot;
    return region;
}

int mm_weights_reserve_packed(mm_weights_t *w, int rows, int cols, const void **slot)
{
    int region = reserve_bytes(w, mm_nn_lin_bytes(rows, cols, w->dtype));
    if (region >= 0) {
        w->r[region].bslot = slot;
        w->r[region].rows = rows;
        w->r[region].cols = cols;
        w->r[region].dt = w->dtype;
    }
    return region;
}

int mm_weights_fill(mm_weights_t *w, int region, size_t off, const mm_st_t *st,
                    const char *name, int ndim, const int64_t *shape,
                    char *err, size_t errlen)
{
    const mm_st_tensor_t *t;
    int rc = mm_st_get(st, name, ndim, shape, &t, err, errlen);
    if (rc)
        return rc;
    if (region < 0 || region >= w->nr)
        return mm_errf(err, errlen, MM_E_INVALID, "%s: no such weight region", name);
    const region_t *r = &w->r[region];
    int fits;
    if (r->i8) {   /* the whole table */
        fits = off == 0 && t->numel == (size_t)r->rows * (size_t)r->cols;
    } else if (r->rows) { /* packed: `off` is the first row; the tensor is (rows, cols...) */
        size_t cols = t->ndim ? t->numel / (size_t)t->shape[0] : 0;
        fits = t->ndim >= 1 && cols == (size_t)r->cols && off <= (size_t)r->rows &&
               (size_t)t->shape[0] <= (size_t)r->rows - off;
    } else {
        fits = off <= r->n && t->numel <= r->n - off;
    }
    if (!fits)
        return mm_errf(err, errlen, MM_E_INVALID, "%s: does not fit its weight region", name);
    if (w->nf == w->fcap) {
        int cap = w->fcap ? w->fcap * 2 : 256;
        fill_t *f = realloc(w->f, (size_t)cap * sizeof(*f));
        if (!f)
            return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
        w->f = f;
        w->fcap = cap;
    }
    w->f[w->nf++] = (fill_t){.region = region, .off = off, .t = t};
    return MM_OK;
}

int mm_weights_add(mm_weights_t *w, const float **slot, const mm_st_t *st, const char *name,
                   int ndim, const int64_t *shape, char *err, size_t errlen)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    int region = mm_weights_reserve(w, n, slot);
    if (region < 0)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    return mm_weights_fill(w, region, 0, st, name, ndim, shape, err, errlen);
}

int mm_weights_add_i8rows(mm_weights_t *w, const void **slot, const float **scale, const mm_st_t *st,
                          const char *name, int64_t rows, int64_t cols, char *err, size_t errlen)
{
    int region = reserve_bytes(w, (size_t)rows * (size_t)cols);
    if (region < 0 || mm_weights_reserve(w, (size_t)rows, scale) < 0)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    region_t *r = &w->r[region];
    r->bslot = slot;
    r->rows = (int)rows;
    r->cols = (int)cols;
    r->i8 = 1;
    const int64_t shape[2] = {rows, cols};
    return mm_weights_fill(w, region, 0, st, name, 2, shape, err, errlen);
}

size_t mm_weights_size(const mm_weights_t *w)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t b = w->bytes ? w->bytes : 1;
    return (b + page - 1) / page * page;
}

/* Points every reserved slot into the mapping at `at`. */
static void set_slots(mm_weights_t *w, const void *at)
{
    for (int i = 0; i < w->nr; i++) {
        const unsigned char *p = (const unsigned char *)at + w->r[i].off;
        if (w->r[i].slot)
            *w->r[i].slot = (const float *)p;
        if (w->r[i].bslot)
            *w->r[i].bslot = p;
    }
}

int mm_weights_finish_cached(mm_weights_t *w, const char *label, const char *cache, void **base, size_t *bytes,
                             int *cached, char *err, size_t errlen)
{
    *cached = 0;
    if (cache && *cache) {
        size_t size = mm_weights_size(w);
        void *p = mm_pack_cache_map(cache, size);
        if (p) {
            set_slots(w, p);
            *base = p;
            *bytes = size;
            *cached = 1;
            return MM_OK;
        }
    }
    int rc = mm_weights_finish(w, label, base, bytes, err, errlen);
    if (rc == MM_OK && cache && *cache)
        *cached = mm_pack_cache_store(cache, *base, *bytes) == 0 ? 2 : -1;
    return rc;
}

/* ============================================================ block */

int mm_pack_block_open(mm_pack_block_t *b, const char *label, size_t size, char *err, size_t errlen)
{
    b->fd = -1;
    b->rw = NULL;
    b->size = size;
    int fd = memfd_create(label, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return mm_errf(err, errlen, MM_ERR, "memfd_create: %s", strerror(errno));
    if (ftruncate(fd, (off_t)size) < 0) {
        int e = errno;
        close(fd);
        return mm_errf(err, errlen, e == ENOSPC ? MM_E_NOMEM : MM_ERR, "weight pack of %zu bytes: %s", size,
                       strerror(e));
    }
    /* Touching shmem pages can SIGBUS if tmpfs runs out; ftruncate does not
     * reserve them. Preallocate so that failure is an error code here. */
    if (posix_fallocate(fd, 0, (off_t)size) != 0) {
        close(fd);
        return mm_errf(err, errlen, MM_E_NOMEM, "weight pack of %zu bytes: out of shared memory", size);
    }
    unsigned char *rw = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (rw == MAP_FAILED) {
        int e = errno;
        close(fd);
        return mm_errf(err, errlen, MM_E_NOMEM, "weight pack of %zu bytes: mmap: %s", size, strerror(e));
    }
    b->fd = fd;
    b->rw = rw;
    return MM_OK;
}

int mm_pack_block_seal(mm_pack_block_t *b, void **ro_out, char *err, size_t errlen)
{
    munmap(b->rw, b->size);
    b->rw = NULL;
    /* No writable mapping is left, so F_SEAL_WRITE is accepted. Sealing is
     * defence in depth; a kernel without it still gets the PROT_READ map. */
    (void)fcntl(b->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    void *ro = mmap(NULL, b->size, PROT_READ, MAP_SHARED, b->fd, 0);
    if (ro == MAP_FAILED) /* kernels before 6.7 refuse shared maps of write-sealed memfds */
        ro = mmap(NULL, b->size, PROT_READ, MAP_PRIVATE, b->fd, 0);
    int e = errno;
    close(b->fd);
    b->fd = -1;
    if (ro == MAP_FAILED)
        return mm_errf(err, errlen, MM_ERR, "weight pack: read-only mmap: %s", strerror(e));
    *ro_out = ro;
    return MM_OK;
}

void mm_pack_block_abort(mm_pack_block_t *b)
{
    if (b->rw)
        munmap(b->rw, b->size);
    if (b->fd >= 0)
        close(b->fd);
    b->rw = NULL;
    b->fd = -1;
}

/* ============================================================ finish */

int mm_weights_finish(mm_weights_t *w, const char *label, void **base, size_t *bytes,
                      char *err, size_t errlen)
{
    size_t size = mm_weights_size(w);
    *base = NULL;
    *bytes = 0;
    mm_pack_block_t b;
    int rc = mm_pack_block_open(&b, label, size, err, errlen);
    if (rc)
        return rc;
    unsigned char *rw = b.rw;
    /* plain regions straight in; int8 tables a row at a time; each packed
     * matrix assembled in f32 (N, K) from its fills, then packed into its
     * blob */
    size_t most = 0;
    for (int i = 0; i < w->nr; i++)
        most = MM_MAX(most, (size_t)(w->r[i].i8 ? 1 : w->r[i].rows) * (size_t)w->r[i].cols);
    float *mat = most ? malloc(most * sizeof(float)) : NULL;
    if (most && !mat) {
        mm_pack_block_abort(&b);
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    }
    for (int i = 0; i < w->nf; i++) {
        const fill_t *f = &w->f[i];
        const region_t *r = &w->r[f->region];
        if (!r->rows) {
            mm_st_convert(f->t->dtype, f->t->data, (float *)(rw + r->off) + f->off, f->t->numel);
        } else if (r->i8) {
            const size_t cols = (size_t)r->cols, esize = f->t->nbytes / f->t->numel;
            signed char *q = (signed char *)(rw + r->off);
            float *scale = (float *)(rw + r[1].off);
            for (size_t row = 0; row < (size_t)r->rows; row++) {
                mm_st_convert(f->t->dtype, (const unsigned char *)f->t->data + row * cols * esize, mat, cols);
                scale[row] = mm_tops_i8_quantize(q + row * cols, mat, cols);
            }
        }
    }
    for (int ri = 0; ri < w->nr; ri++) {
        const region_t *r = &w->r[ri];
        if (!r->rows || r->i8)
            continue;
        memset(mat, 0, (size_t)r->rows * (size_t)r->cols * sizeof(float));
        for (int i = 0; i < w->nf; i++)
            if (w->f[i].region == ri)
                mm_st_convert(w->f[i].t->dtype, w->f[i].t->data, mat + w->f[i].off * (size_t)r->cols,
                              w->f[i].t->numel);
        mm_nn_lin_pack(rw + r->off, mat, r->rows, r->cols, r->dt);
    }
    free(mat);
    void *ro;
    if ((rc = mm_pack_block_seal(&b, &ro, err, errlen)))
        return rc;
    set_slots(w, ro);
    *base = ro;
    *bytes = size;
    return MM_OK;
}

void mm_weights_unmap(void *base, size_t bytes)
{
    if (base)
        munmap(base, bytes);
}
