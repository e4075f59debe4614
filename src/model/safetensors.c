/* safetensors checkpoints: mmap, header parsing, lookup by name.
 *
 * File layout: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]},
 *  "__metadata__": {...}}, then the data block the offsets point into.
 * A sharded checkpoint adds model.safetensors.index.json whose "weight_map"
 * names the shard of every tensor; we open every shard it mentions and
 * look tensors up in the union, so the map itself is only a file list. */
#include "mmembed/safetensors.h"

#include "mmembed/common.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__F16C__) && defined(__AVX2__)
#include <immintrin.h>
#endif

#define MAX_HEADER ((uint64_t)256 << 20) /* a 256 MiB JSON header is corrupt */

typedef struct {
    void *map;
    size_t size;
} shard_t;

struct mm_st {
    shard_t *shards;
    int nshards;
    mm_st_tensor_t *t; /* sorted by name */
    int n, cap;
    char path[512];    /* what was opened, for error messages */
};

/* ===================================================== dtypes ======== */

static const struct {
    const char *name;
    size_t size;
    mm_st_dtype_t dt;
} dtypes[] = {
    {"F32", 4, MM_ST_F32}, {"F16", 2, MM_ST_F16}, {"BF16", 2, MM_ST_BF16},
    {"F64", 8, MM_ST_OTHER}, {"I64", 8, MM_ST_OTHER}, {"U64", 8, MM_ST_OTHER},
    {"I32", 4, MM_ST_OTHER}, {"U32", 4, MM_ST_OTHER}, {"I16", 2, MM_ST_OTHER},
    {"U16", 2, MM_ST_OTHER}, {"I8", 1, MM_ST_OTHER}, {"U8", 1, MM_ST_OTHER},
    {"BOOL", 1, MM_ST_OTHER}, {"F8_E4M3", 1, MM_ST_OTHER}, {"F8_E5M2", 1, MM_ST_OTHER},
};

const char *mm_st_dtype_str(mm_st_dtype_t dt)
{
    switch (dt) {
    case MM_ST_F32: return "f32";
    case MM_ST_F16: return "f16";
    case MM_ST_BF16: return "bf16";
    default: return "other";
    }
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);          /* inf / nan */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);  /* normal */
    } else if (man == 0) {
        bits = sign;                                       /* zero */
    } else {                                               /* subnormal */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void mm_st_convert(mm_st_dtype_t dt, const void *src, float *dst, size_t n)
{
    const unsigned char *s = src;
    size_t i = 0;
    switch (dt) {
    case MM_ST_F32:
        memcpy(dst, src, n * 4);
        break;
    case MM_ST_F16:
#if defined(__F16C__) && defined(__AVX2__)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 2 * i))));
#endif
        for (; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = f16_to_f32(h);
        }
        break;
    case MM_ST_BF16:
        for (; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(dst + i, &bits, 4);
        }
        break;
    default:
        break;
    }
}

/* ===================================================== parsing ======= */

static void shape_str(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const mm_st_tensor_t *)a)->name, ((const mm_st_tensor_t *)b)->name);
}

/* One header entry -> st->t[st->n++]. `data`/`dlen` is the shard's data block. */
static int parse_entry(mm_st_t *st, const char *file, const char *name, json_object *v,
                       const unsigned char *data, uint64_t dlen, char *err, size_t errlen)
{
    json_object *jd, *js, *jo;
    if (!json_object_is_type(v, json_type_object) ||
        !json_object_object_get_ex(v, "dtype", &jd) || !json_object_is_type(jd, json_type_string) ||
        !json_object_object_get_ex(v, "shape", &js) || !json_object_is_type(js, json_type_array) ||
        !json_object_object_get_ex(v, "data_offsets", &jo) || !json_object_is_type(jo, json_type_array) ||
        json_object_array_length(jo) != 2)
        return mm_errf(err, errlen, MM_E_INVALID, "%s: tensor %s: malformed header entry", file, name);

    if (st->n == st->cap) {
        int cap = st->cap ? st->cap * 2 : 256;
        mm_st_tensor_t *t = realloc(st->t, (size_t)cap * sizeof(*t));
        if (!t)
            return mm_errf(err, errlen, MM_E_NOMEM, "out of memory reading %s", file);
        st->t = t;
        st->cap = cap;
    }
    mm_st_tensor_t *t = &st->t[st->n];
    memset(t, 0, sizeof(*t));

    const char *dname = json_object_get_string(jd);
    size_t esize = 0;
    t->dtype_name = NULL;
    for (size_t i = 0; i < MM_ARRAY_LEN(dtypes); i++)
        if (!strcmp(dname, dtypes[i].name)) {
            t->dtype_name = dtypes[i].name; /* static storage */
            t->dtype = dtypes[i].dt;
            esize = dtypes[i].size;
        }
    if (!t->dtype_name)
        return mm_errf(err, errlen, MM_E_INVALID, "%s: tensor %s: unknown dtype \"%s\"", file, name, dname);

    size_t nd = json_object_array_length(js);
    if (nd > MM_ST_MAXDIM)
        return mm_errf(err, errlen, MM_E_INVALID, "%s: tensor %s: %zu dims (max %d)", file, name, nd, MM_ST_MAXDIM);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_object *d = json_object_array_get_idx(js, i);
        int64_t x = json_object_get_int64(d);
        if (!json_object_is_type(d, json_type_int) || x < 0 || x > ((int64_t)1 << 40) ||
            (x && numel > (((uint64_t)1 << 40) / (uint64_t)x)))
            return mm_errf(err, errlen, MM_E_INVALID, "%s: tensor %s: bad shape", file, name);
        t->shape[i] = x;
        numel *= (uint64_t)x;
    }
    json_object *jb = json_object_array_get_idx(jo, 0), *je = json_object_array_get_idx(jo, 1);
    int64_t b = json_object_get_int64(jb), e = json_object_get_int64(je);
    if (!json_object_is_type(jb, json_type_int) || !json_object_is_type(je, json_type_int) ||
        b < 0 || e < b || (uint64_t)e > dlen)
        return mm_errf(err, errlen, MM_E_INVALID,
                       "%s: tensor %s: data_offsets [%lld, %lld] outside the %llu-byte data block",
                       file, name, (long long)b, (long long)e, (unsigned long long)dlen);
    if ((uint64_t)(e - b) != numel * esize)
        return mm_errf(err, errlen, MM_E_INVALID,
                       "%s: tensor %s: %lld bytes for %llu elements of %s", file, name,
                       (long long)(e - b), (unsigned long long)numel, dname);
    t->numel = (size_t)numel;
    t->nbytes = (size_t)(e - b);
    t->data = data + b;
    t->name = strdup(name);
    if (!t->name)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory reading %s", file);
    st->n++;
    return MM_OK;
}

/* Maps one .safetensors file and appends its tensors. */
static int open_shard(mm_st_t *st, const char *file, char *err, size_t errlen)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mm_errf(err, errlen, errno == ENOENT ? MM_E_NOTFOUND : MM_ERR, "%s: %s", file, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size < 8) {
        close(fd);
        return mm_errf(err, errlen, MM_E_INVALID, "%s: not a safetensors file (too short)", file);
    }
    size_t size = (size_t)sb.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return mm_errf(err, errlen, MM_ERR, "%s: mmap: %s", file, strerror(errno));
    shard_t *sh = realloc(st->shards, (size_t)(st->nshards + 1) * sizeof(*sh));
    if (!sh) {
        munmap(map, size);
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory reading %s", file);
    }
    st->shards = sh;
    sh[st->nshards].map = map;
    sh[st->nshards].size = size;
    st->nshards++;

    const unsigned char *p = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | p[i];
    if (hlen < 2 || hlen > MAX_HEADER || hlen > size - 8)
        return mm_errf(err, errlen, MM_E_INVALID, "%s: bad header length %llu (file is %zu bytes)",
                       file, (unsigned long long)hlen, size);

    json_tokener *tok = json_tokener_new();
    if (!tok)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory reading %s", file);
    json_object *root = json_tokener_parse_ex(tok, (const char *)p + 8, (int)hlen);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (!root || jerr != json_tokener_success || !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return mm_errf(err, errlen, MM_E_INVALID, "%s: header is not a JSON object", file);
    }
    int rc = MM_OK;
    json_object_iter it;
    json_object_object_foreachC(root, it) {
        if (!strcmp(it.key, "__metadata__"))
            continue;
        rc = parse_entry(st, file, it.key, it.val, p + 8 + hlen, size - 8 - hlen, err, errlen);
        if (rc)
            break;
    }
    json_object_put(root);
    return rc;
}

/* Opens every shard named by an index file. */
static int open_index(mm_st_t *st, const char *index, char *err, size_t errlen)
{
    json_object *root = json_object_from_file(index);
    json_object *wm;
    if (!root || !json_object_object_get_ex(root, "weight_map", &wm) ||
        !json_object_is_type(wm, json_type_object)) {
        json_object_put(root);
        return mm_errf(err, errlen, MM_E_INVALID, "%s: no \"weight_map\" object", index);
    }
    char dir[512];
    snprintf(dir, sizeof dir, "%s", index);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[1] = 0;
    else
        dir[0] = 0;

    /* distinct file names, in first-seen order */
    const char *files[256];
    int nfiles = 0, rc = MM_OK;
    json_object_iter it;
    json_object_object_foreachC(wm, it) {
        const char *f = json_object_get_string(it.val);
        if (!json_object_is_type(it.val, json_type_string) || !*f || f[0] == '/' || strstr(f, "..")) {
            rc = mm_errf(err, errlen, MM_E_INVALID, "%s: bad shard name for %s", index, it.key);
            break;
        }
        int seen = 0;
        for (int i = 0; i < nfiles && !seen; i++)
            seen = !strcmp(files[i], f);
        if (seen)
            continue;
        if (nfiles == (int)MM_ARRAY_LEN(files)) {
            rc = mm_errf(err, errlen, MM_E_INVALID, "%s: more than %d shards", index, nfiles);
            break;
        }
        files[nfiles++] = f;
    }
    for (int i = 0; i < nfiles && rc == MM_OK; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s%s", dir, files[i]);
        rc = open_shard(st, path, err, errlen);
    }
    json_object_put(root);
    if (rc == MM_OK && nfiles == 0)
        rc = mm_errf(err, errlen, MM_E_INVALID, "%s: empty weight_map", index);
    return rc;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* ===================================================== public ======== */

int mm_st_open(const char *path, mm_st_t **out, char *err, size_t errlen)
{
    *out = NULL;
    mm_st_t *st = calloc(1, sizeof(*st));
    if (!st)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    snprintf(st->path, sizeof st->path, "%s", path);

    int rc;
    struct stat sb;
    if (stat(path, &sb) < 0) {
        rc = mm_errf(err, errlen, MM_E_NOTFOUND, "%s: %s", path, strerror(errno));
    } else if (S_ISDIR(sb.st_mode)) {
        char p1[1024], p2[1024];
        snprintf(p1, sizeof p1, "%s/model.safetensors", path);
        snprintf(p2, sizeof p2, "%s/model.safetensors.index.json", path);
        if (access(p1, F_OK) == 0)
            rc = open_shard(st, p1, err, errlen);
        else if (access(p2, F_OK) == 0)
            rc = open_index(st, p2, err, errlen);
        else
            rc = mm_errf(err, errlen, MM_E_NOTFOUND,
                         "%s: no model.safetensors or model.safetensors.index.json", path);
    } else if (ends_with(path, ".json")) {
        rc = open_index(st, path, err, errlen);
    } else {
        rc = open_shard(st, path, err, errlen);
    }
    if (rc == MM_OK && st->n > 1) {
        qsort(st->t, (size_t)st->n, sizeof(*st->t), cmp_tensor);
        for (int i = 1; i < st->n; i++)
            if (!strcmp(st->t[i - 1].name, st->t[i].name)) {
                rc = mm_errf(err, errlen, MM_E_INVALID, "%s: tensor %s appears twice", path, st->t[i].name);
                break;
            }
    }
    if (rc) {
        mm_st_close(st);
        return rc;
    }
    *out = st;
    return MM_OK;
}

void mm_st_close(mm_st_t *st)
{
    if (!st)
        return;
    for (int i = 0; i < st->n; i++)
        free((char *)st->t[i].name);
    free(st->t);
    for (int i = 0; i < st->nshards; i++)
        munmap(st->shards[i].map, st->shards[i].size);
    free(st->shards);
    free(st);
}

int mm_st_count(const mm_st_t *st)
{
    return st->n;
}

const mm_st_tensor_t *mm_st_at(const mm_st_t *st, int i)
{
    return i >= 0 && i < st->n ? &st->t[i] : NULL;
}

const mm_st_tensor_t *mm_st_find(const mm_st_t *st, const char *name)
{
    mm_st_tensor_t key = {.name = name};
    return st->n ? bsearch(&key, st->t, (size_t)st->n, sizeof(*st->t), cmp_tensor) : NULL;
}

int mm_st_get(const mm_st_t *st, const char *name, int ndim, const int64_t *shape,
              const mm_st_tensor_t **out, char *err, size_t errlen)
{
    const mm_st_tensor_t *t = mm_st_find(st, name);
    *out = NULL;
    if (!t)
        return mm_errf(err, errlen, MM_E_NOTFOUND, "%s: tensor not found in checkpoint %s", name, st->path);
    if (t->dtype == MM_ST_OTHER)
        return mm_errf(err, errlen, MM_E_UNSUPPORTED, "%s: dtype %s not supported (F32, F16, BF16 are)",
                       name, t->dtype_name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char a[128], b[128];
        shape_str(a, sizeof a, t->ndim, t->shape);
        shape_str(b, sizeof b, ndim, shape);
        return mm_errf(err, errlen, MM_E_INVALID, "%s: shape %s in the checkpoint, config implies %s",
                       name, a, b);
    }
    *out = t;
    return MM_OK;
}
