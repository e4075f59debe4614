/* Embedding cache in shared memory.
 *
 * The master maps it before forking the worker pool; every worker process
 * then reads and writes it concurrently without a global lock. Entries live
 * in fixed-size slots (no pointers: each process may see the mapping at its
 * own address), grouped into 8-way buckets indexed by a 128-bit hash of the
 * key, evicted by CLOCK inside the bucket. Each slot is a seqlock whose
 * writer claims it with a CAS, so a worker killed in the middle of a write
 * leaves a slot that no reader accepts and that a later writer reclaims once
 * the dead owner is gone (see the protocol comment in src/cache.c).
 *
 * What a key is. The caller describes the request as a sequence of fields
 * (model name, modality, every option that changes the vector, the inputs)
 * with mm_cache_key_*; the builder writes each field tagged and
 * length-prefixed into k->bytes, so two different field sequences can never
 * produce the same byte string. Those bytes are the FULL KEY: they are
 * stored in the slot and compared byte for byte on every lookup, so a
 * collision of the 128-bit index hash can only make two keys share a bucket,
 * never return the other key's vector.
 *
 * Inputs (image files, long texts) are too big to store, so
 * mm_cache_key_add_input puts into the full key the input's length, its
 * XXH3-128 and an independent XXH64 (different algorithm, its own seed);
 * inputs of up to 32 bytes are stored verbatim instead. The one residual
 * risk is two different inputs of the same length colliding on both hashes
 * at once (192 bits) for the same model and options. Both hashes are keyed
 * by a random secret drawn when the cache is created and never leaves the
 * server, so a client cannot craft such a pair offline either; xxHash is not
 * a cryptographic MAC, but with the secret unknown there is nothing to aim at.
 *
 * Reloads: a key remembers the cache generation at mm_cache_key_init and a
 * put whose generation is no longer current is dropped, so a vector computed
 * before mm_cache_clear is never stored after it. Workers that still run old
 * weights after the clear would store under the new generation: when old and
 * new workers overlap, add the weights' identity (config generation, file
 * size and mtime) to the key as well.
 *
 * Threads: any number of processes; inside a process, any thread may call
 * in (the slot owner is recorded by thread id). */
#ifndef MMEMBED_CACHE_H
#define MMEMBED_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "mmembed/common.h"

typedef struct mm_cache mm_cache_t;

#define MM_CACHE_WAYS 8            /* slots per bucket */
#define MM_CACHE_KEY_MAX 256       /* bytes of full key a slot holds */
#define MM_CACHE_MAX_DIM 65536     /* largest max_dim accepted by create */
#define MM_CACHE_INLINE_INPUT 32   /* inputs up to this size go into the key verbatim */

/* A key under construction, on the caller's stack. Fields are private to
 * cache.c except `len` and `bytes`, which tests and logs may read. */
typedef struct {
    uint8_t bytes[MM_CACHE_KEY_MAX]; /* the full key; zero after len */
    uint32_t len;                    /* bytes used */
    uint32_t gen;                    /* cache generation at init */
    int overflow;                    /* a field did not fit: get misses, put refuses */
    const mm_cache_t *cache;         /* NULL: disabled, every call is a cheap no-op */
} mm_cache_key_t;

typedef struct {
    uint64_t hits, misses;           /* mm_cache_get results */
    uint64_t inserts;                /* vectors published by mm_cache_put */
    uint64_t evictions;              /* valid entries overwritten to make room */
    uint64_t reclaims;               /* slots taken back from writers that died mid-write */
    uint64_t slots;                  /* capacity in entries */
    uint64_t used;                   /* valid entries of the current generation (a scan) */
    uint64_t slot_bytes;             /* bytes per slot */
    uint64_t bytes;                  /* size of the shared mapping */
    uint32_t generation;             /* bumped by mm_cache_clear */
    int max_dim;
} mm_cache_stats_t;

/* Map a cache of at most `bytes` bytes (MAP_SHARED|MAP_ANONYMOUS) holding
 * vectors of up to `max_dim` floats; call in the master before fork so every
 * worker inherits it. bytes == 0 disables the cache: *out = NULL, which
 * every other call accepts as "disabled" (gets miss, puts do nothing).
 * Returns MM_OK, MM_E_INVALID (max_dim out of 1..MM_CACHE_MAX_DIM, or bytes
 * too small for one bucket of MM_CACHE_WAYS slots), MM_E_NOMEM (mmap) or
 * MM_ERR (no random secret); err says why. */
int mm_cache_create(mm_cache_t **out, size_t bytes, int max_dim, char *err, size_t errlen);

/* Unmap this process's view (NULL is fine). Other processes keep theirs. */
void mm_cache_destroy(mm_cache_t *c);

/* Start a key for cache `c` (NULL: disabled; the key functions then do
 * nothing). Records the current generation and uses the cache's secret for
 * input hashes, so a key belongs to one cache. */
void mm_cache_key_init(mm_cache_key_t *k, const mm_cache_t *c);

/* Append one field, verbatim (tag, 32-bit length, bytes). For short things
 * that define the output: model name, modality, option values. Returns
 * MM_OK, or MM_E_TOOBIG when the key would pass MM_CACHE_KEY_MAX bytes (the
 * key is then marked unusable). */
int mm_cache_key_add(mm_cache_key_t *k, const void *p, size_t n);
int mm_cache_key_add_str(mm_cache_key_t *k, const char *s);   /* NUL-terminated */
int mm_cache_key_add_int(mm_cache_key_t *k, int64_t v);

/* Append an input of any size: its length and two independent keyed hashes
 * (33 bytes in the key), or the bytes themselves when n <=
 * MM_CACHE_INLINE_INPUT. Hash what the client sent (the encoded image, the
 * UTF-8 text), so a hit skips decoding too. Same returns as add. */
int mm_cache_key_add_input(mm_cache_key_t *k, const void *p, size_t n);

/* Look a key up. On a hit copies the `dim` floats, bit for bit as they were
 * put, into out[0..dim) and returns 1; returns 0 on a miss (no entry, an
 * entry of another dim, another generation, or one being rewritten right
 * now), after which out's contents are unspecified. Never blocks. Returns
 * MM_E_INVALID for dim < 1 or a key built for another cache; a disabled
 * cache or an overflowed key is a miss (a disabled cache counts nothing). */
int mm_cache_get(mm_cache_t *c, const mm_cache_key_t *k, float *out, int dim);

/* Store v[0..dim) under k, best effort: if the key is already there, or
 * every slot of its bucket is being written right now, or the key's
 * generation is no longer current, nothing is stored and MM_OK is still
 * returned. A disabled cache returns MM_OK. Returns MM_E_TOOBIG for dim >
 * max_dim, MM_E_INVALID for dim < 1, an overflowed key or a key built for
 * another cache. Never blocks (one kill(tid, 0) probe when a slot was left
 * half-written). */
int mm_cache_put(mm_cache_t *c, const mm_cache_key_t *k, const float *v, int dim);

/* Make every entry a miss (model change, reload) by bumping the generation;
 * O(1). Slots of older generations are reused before anything is evicted. */
void mm_cache_clear(mm_cache_t *c);

/* Counters and sizes for /metrics; `used` scans the slot headers (about
 * 3 us per thousand slots: 90 us for a 64 MB cache of 512-d slots). A
 * disabled cache gives all zeros. */
void mm_cache_stats(const mm_cache_t *c, mm_cache_stats_t *s);

#ifdef MM_TEST_HOOKS
/* Test-only. put_pause_us > 0: put sleeps that long after writing a slot's
 * data and before publishing it; < 0: put SIGKILLs its own process there.
 * weak_hash != 0: the index hash keeps one bit, so unrelated keys share
 * buckets and stored hashes and only the full key tells them apart. */
extern volatile int mm_cache_test_put_pause_us;
extern volatile int mm_cache_test_weak_hash;
#endif

#endif
