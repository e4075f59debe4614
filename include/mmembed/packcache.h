/* packcache — the converted weight pack of a model kept in a file, so a
 * restart maps it instead of reading, converting and repacking the
 * checkpoint (bf16/q8 reorders included).
 *
 * A cache file is named by a hash of everything the pack's bytes depend
 * on: mmembed's version and binary (size, mtime), the dtype, the CPU
 * features oneDNN packs for and its version, config.json and each
 * checkpoint file's name, size and modification time. Any change gives another name, so a stale file is
 * never read (old files are left for the operator to remove). It is written
 * to a temporary name and renamed, so a reader never sees half of one, and
 * it is mapped PROT_READ | MAP_SHARED: one page-cache copy shared by the
 * master, every worker and the next run, and a stray write faults. */
#ifndef MMEMBED_PACKCACHE_H
#define MMEMBED_PACKCACHE_H

#include <stddef.h>

#include "mmembed/nn.h"

#define MM_PACK_PATH_MAX 1400 /* room for a cache file path */

/* Sets the directory cache files go to (created if missing, one level);
 * NULL or "" turns caching off (the default). Call before loading models. */
void mm_pack_cache_set_dir(const char *dir);

/* The cache file path for the model in model_dir packed as dt, into out;
 * returns 0, or -1 when caching is off or the folder cannot be read. */
int mm_pack_cache_path(const char *model_dir, const char *tag, mm_dtype_t dt, char *out, size_t cap);

/* Maps path if it holds exactly `size` bytes; NULL otherwise. */
void *mm_pack_cache_map(const char *path, size_t size);

/* Stores size bytes at base as path (temporary file + rename), then
 * removes the superseded packs of the same model folder name and dtype.
 * Returns 0 or -1 (the caller goes on without a cache). */
int mm_pack_cache_store(const char *path, const void *base, size_t size);

#endif
