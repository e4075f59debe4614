/* Weight-pack cache files (see mmembed/packcache.h). */
#include "mmembed/packcache.h"

#include "mmembed/common.h"
#include "mmembed/conf.h" /* MM_PATH_MAX */
#include "mmembed/encoder.h" /* mm_encoder_q4_keep */

#include <dirent.h>
#include <dnnl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static char cache_dir[MM_PATH_MAX];

void mm_pack_cache_set_dir(const char *dir)
{
    snprintf(cache_dir, sizeof cache_dir, "%s", dir ? dir : "");
    for (char *p = cache_dir + 1; cache_dir[0] && *p; p++) /* mkdir -p */
        if (*p == '/') {
            *p = 0;
            (void)mkdir(cache_dir, 0755);
            *p = '/';
        }
    if (cache_dir[0])
        (void)mkdir(cache_dir, 0755);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Hashes config.json's bytes and each checkpoint file's name, size and
 * mtime, in name order. */
static int hash_folder(XXH3_state_t *h, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char *names[256];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 256) {
        size_t l = strlen(de->d_name);
        if ((l > 12 && !strcmp(de->d_name + l - 12, ".safetensors")) ||
            (l > 11 && !strcmp(de->d_name + l - 11, ".index.json")) || !strcmp(de->d_name, "config.json"))
            names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, by_name);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char p[MM_PATH_MAX + 300];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        if (!names[i] || stat(p, &st) != 0) {
            rc = -1;
        } else {
            long long meta[3] = {(long long)st.st_size, (long long)st.st_mtim.tv_sec, (long long)st.st_mtim.tv_nsec};
            XXH3_64bits_update(h, names[i], strlen(names[i]) + 1);
            XXH3_64bits_update(h, meta, sizeof meta);
            if (!strcmp(names[i], "config.json")) {
                FILE *f = fopen(p, "rb");
                char buf[4096];
                size_t k;
                while (f && (k = fread(buf, 1, sizeof buf, f)) > 0)
                    XXH3_64bits_update(h, buf, k);
                if (f)
                    fclose(f);
            }
        }
        free(names[i]);
    }
    return rc;
}

int mm_pack_cache_path(const char *model_dir, const char *tag, mm_dtype_t dt, char *out, size_t cap)
{
    if (!cache_dir[0])
        return -1;
    XXH3_state_t *h = XXH3_createState();
    if (!h)
        return -1;
    XXH3_64bits_reset(h);
    const dnnl_version_t *v = dnnl_version();
    char what[256];
    int wl = snprintf(what, sizeof what, "mmembed-pack-1|%s|%s|%s|%s|dnnl %d.%d.%d %s|q4 keep %d", MM_VERSION, tag,
                      mm_dtype_name(dt), mm_nn_cpu()->isa, v->major, v->minor, v->patch, v->hash,
                      dt == MM_DT_Q4 ? mm_encoder_q4_keep() : 0);
    XXH3_64bits_update(h, what, (size_t)wl);
    /* the binary itself (size, mtime): a rebuilt mmembed may lay packs out
     * differently, so it never reads an older build's file */
    struct stat ex;
    if (stat("/proc/self/exe", &ex) == 0) {
        long long id[3] = {(long long)ex.st_size, (long long)ex.st_mtim.tv_sec, (long long)ex.st_mtim.tv_nsec};
        XXH3_64bits_update(h, id, sizeof id);
    }
    int rc = hash_folder(h, model_dir);
    unsigned long long x = (unsigned long long)XXH3_64bits_digest(h);
    XXH3_freeState(h);
    if (rc)
        return -1;
    /* "<folder name>-<dtype>-<folder path hash>-<key hash>.pack": recognisable, and the packs of one
     * folder and dtype share everything before the last dash (remove_superseded) */
    int nl;
    const char *nm = mm_path_last(model_dir, &nl);
    char real[MM_PATH_MAX];
    const char *where = realpath(model_dir, real) ? real : model_dir;
    unsigned px = (unsigned)XXH3_64bits(where, strlen(where));
    int n = snprintf(out, cap, "%s/%.*s-%s-%08x-%016llx.pack", cache_dir, nl, nm, mm_dtype_name(dt), px, x);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

void *mm_pack_cache_map(const char *path, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    void *p = MAP_FAILED;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size == size)
        p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

/* Removes the other packs of the same model folder and dtype (same name up to the last dash, another key
 * hash): superseded by a changed checkpoint or a rebuilt mmembed, they would only fill the disk. */
static void remove_superseded(const char *path)
{
    const char *slash = strrchr(path, '/'), *file = slash ? slash + 1 : path;
    const char *dash = strrchr(file, '-');
    if (!slash || !dash)
        return;
    char dir[MM_PACK_PATH_MAX];
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    size_t plen = (size_t)(dash - file) + 1; /* "<name>-<dtype>-<path hash>-" */
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l > 5 && !strcmp(de->d_name + l - 5, ".pack") && !strncmp(de->d_name, file, plen) &&
            strcmp(de->d_name, file) != 0 && strlen(de->d_name) == strlen(file)) {
            char old[MM_PACK_PATH_MAX + 256];
            snprintf(old, sizeof old, "%s/%s", dir, de->d_name);
            (void)unlink(old);
        }
    }
    if (d)
        closedir(d);
}

int mm_pack_cache_store(const char *path, const void *base, size_t size)
{
    char tmp[MM_PATH_MAX + 400];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    const char *p = base;
    size_t left = size;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            unlink(tmp);
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    remove_superseded(path);
    return 0;
}
