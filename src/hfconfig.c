/* The Hugging Face config reader (mmembed/hfconfig.h): one parse per file,
 * beside common.c so that every layer may read its JSON files with it,
 * typed getters, one error format. */
#include "mmembed/hfconfig.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mm_cfg_file {
    json_object *root;
    char path[PATH_MAX];
};

static int open_typed(const char *path, json_type want, mm_cfg_file_t **out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f)
        return mm_errf(err, errlen, MM_E_NOTFOUND, "%s: %s", path, strerror(errno));
    fclose(f);
    json_object *o = json_object_from_file(path);
    if (!o || !json_object_is_type(o, want)) {
        json_object_put(o);
        return mm_errf(err, errlen, MM_E_INVALID, "%s: not a JSON %s", path,
                       want == json_type_object ? "object" : "array");
    }
    mm_cfg_file_t *c = calloc(1, sizeof *c);
    if (!c) {
        json_object_put(o);
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    }
    c->root = o;
    snprintf(c->path, sizeof c->path, "%s", path);
    *out = c;
    return MM_OK;
}

int mm_cfg_open(const char *path, mm_cfg_file_t **out, char *err, size_t errlen)
{
    return open_typed(path, json_type_object, out, err, errlen);
}

int mm_cfg_parse(const char *name, const char *json, size_t len, mm_cfg_file_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!json || !len || len > INT32_MAX)
        return mm_errf(err, errlen, MM_E_INVALID, "%s: empty or too large", name);
    json_tokener *tk = json_tokener_new();
    if (!tk)
        return mm_errf(err, errlen, MM_E_NOMEM, "%s: out of memory", name);
    json_object *o = json_tokener_parse_ex(tk, json, (int)len);
    const enum json_tokener_error je = json_tokener_get_error(tk);
    json_tokener_free(tk);
    if (!o || je != json_tokener_success) {
        json_object_put(o);
        return mm_errf(err, errlen, MM_E_INVALID, "%s: not valid JSON (%s)", name,
                       je == json_tokener_success || je == json_tokener_continue ? "unexpected end"
                                                                                 : json_tokener_error_desc(je));
    }
    if (!json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return mm_errf(err, errlen, MM_E_INVALID, "%s: not a JSON object", name);
    }
    mm_cfg_file_t *c = calloc(1, sizeof *c);
    if (!c) {
        json_object_put(o);
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    }
    c->root = o;
    snprintf(c->path, sizeof c->path, "%s", name);
    *out = c;
    return MM_OK;
}

int mm_cfg_open_array(const char *path, mm_cfg_file_t **out, char *err, size_t errlen)
{
    return open_typed(path, json_type_array, out, err, errlen);
}

int mm_cfg_open_in(const char *dir, const char *name, mm_cfg_file_t **out, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
        *out = NULL;
        return mm_errf(err, errlen, MM_E_INVALID, "%s/%s: path too long", dir, name);
    }
    return mm_cfg_open(path, out, err, errlen);
}

void mm_cfg_close(mm_cfg_file_t *f)
{
    if (!f)
        return;
    json_object_put(f->root);
    free(f);
}

const char *mm_cfg_path(const mm_cfg_file_t *f)
{
    return f->path;
}

mm_cfg_t mm_cfg_root(const mm_cfg_file_t *f)
{
    mm_cfg_t c = {.o = f->root, .file = f};
    return c;
}

mm_cfg_t mm_cfg_view(const mm_cfg_t *c, json_object *o, const char *where)
{
    mm_cfg_t v = {.o = o && json_object_is_type(o, json_type_object) ? o : NULL, .file = c->file};
    /* a longer path is cut: it only names the place in errors */
    size_t n = strlen(c->where);
    memcpy(v.where, c->where, n + 1);
    if (n && n + 1 < sizeof v.where)
        v.where[n++] = '.';
    for (size_t i = 0; where[i] && n + 1 < sizeof v.where; i++)
        v.where[n++] = where[i];
    v.where[n] = 0;
    return v;
}

json_object *mm_cfg_json(const mm_cfg_t *c)
{
    return c->o;
}

/* member key, NULL when absent, null or the view is absent */
static json_object *get(const mm_cfg_t *c, const char *key)
{
    json_object *v;
    if (!c->o || !json_object_object_get_ex(c->o, key, &v) || json_object_is_type(v, json_type_null))
        return NULL;
    return v;
}

json_object *mm_cfg_get(const mm_cfg_t *c, const char *key)
{
    return get(c, key);
}

int mm_cfg_sub(const mm_cfg_t *c, const char *key, mm_cfg_t *out)
{
    *out = mm_cfg_view(c, get(c, key), key);
    return out->o != NULL;
}

int mm_cfg_errf(const mm_cfg_t *c, const char *key, char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (!err || !errlen)
        return rc;
    int n = snprintf(err, errlen, "%s: %s%s%s%s", c->file ? c->file->path : "config", c->where,
                     c->where[0] && key ? "." : "", key ? key : "", c->where[0] || key ? ": " : "");
    if (n >= 0 && (size_t)n < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return rc;
}

int mm_cfg_has(const mm_cfg_t *c, const char *key)
{
    return get(c, key) != NULL;
}

static int get_int(const mm_cfg_t *c, const char *key, int def, int required, long long lo, long long hi, int *out,
                   char *err, size_t errlen)
{
    json_object *v = get(c, key);
    if (!v) {
        if (required)
            return mm_cfg_errf(c, key, err, errlen, MM_E_INVALID, "missing");
        *out = def;
        return MM_OK;
    }
    if (!json_object_is_type(v, json_type_int))
        return mm_cfg_errf(c, key, err, errlen, MM_E_INVALID, "not an integer");
    int64_t x = json_object_get_int64(v);
    if (x < lo || x > hi)
        return mm_cfg_errf(c, key, err, errlen, MM_E_INVALID, "%lld out of range [%lld, %lld]", (long long)x, lo, hi);
    *out = (int)x;
    return MM_OK;
}

int mm_cfg_int(const mm_cfg_t *c, const char *key, int def, int lo, int hi, int *out, char *err, size_t errlen)
{
    return get_int(c, key, def, 0, lo, hi, out, err, errlen);
}

int mm_cfg_size(const mm_cfg_t *c, const char *key, int *out, char *err, size_t errlen)
{
    return get_int(c, key, 0, 1, 1, 100000000, out, err, errlen);
}

int mm_cfg_pos(const mm_cfg_t *c, const char *key, int def, int *out, char *err, size_t errlen)
{
    return get_int(c, key, def, 0, 1, 100000000, out, err, errlen);
}

int mm_cfg_num(const mm_cfg_t *c, const char *key, double def, double *out, char *err, size_t errlen)
{
    json_object *v = get(c, key);
    *out = def;
    if (!v)
        return MM_OK;
    if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
        return mm_cfg_errf(c, key, err, errlen, MM_E_INVALID, "not a number");
    *out = json_object_get_double(v);
    if (!(*out > 0) || !isfinite(*out))
        return mm_cfg_errf(c, key, err, errlen, MM_E_INVALID, "must be positive");
    return MM_OK;
}

int mm_cfg_first_int(const mm_cfg_t *c, const char *key, int def)
{
    json_object *v = get(c, key);
    if (v && json_object_is_type(v, json_type_array) && json_object_array_length(v) > 0)
        v = json_object_array_get_idx(v, 0);
    if (!v || !json_object_is_type(v, json_type_int))
        return def;
    int64_t x = json_object_get_int64(v);
    return x < INT_MIN || x > INT_MAX ? def : (int)x;
}

int mm_cfg_ints(const mm_cfg_t *c, const char *key, int *out, int n, char *err, size_t errlen)
{
    json_object *a = get(c, key);
    if (!a)
        return MM_E_NOTFOUND;
    if (!json_object_is_type(a, json_type_array) || (int)json_object_array_length(a) != n)
        return mm_cfg_errf(c, key, err, errlen, MM_E_INVALID, "must list %d integers", n);
    for (int i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(a, (size_t)i);
        if (!json_object_is_type(e, json_type_int))
            return mm_cfg_errf(c, key, err, errlen, MM_E_INVALID, "must list %d integers", n);
        int64_t x = json_object_get_int64(e);
        if (x < INT_MIN || x > INT_MAX)
            return mm_cfg_errf(c, key, err, errlen, MM_E_INVALID, "entry %d out of range", i);
        out[i] = (int)x;
    }
    return MM_OK;
}

const char *mm_cfg_str(const mm_cfg_t *c, const char *key)
{
    json_object *v = get(c, key);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

int mm_cfg_bool(const mm_cfg_t *c, const char *key)
{
    json_object *v = get(c, key);
    return v && json_object_get_boolean(v);
}

const char *mm_cfg_str0(const mm_cfg_t *c, const char *key)
{
    json_object *a = get(c, key);
    if (!a || !json_object_is_type(a, json_type_array) || json_object_array_length(a) < 1)
        return NULL;
    json_object *e = json_object_array_get_idx(a, 0);
    return e && json_object_is_type(e, json_type_string) ? json_object_get_string(e) : NULL;
}
