/* Configuration: a table of keys (name, type, where it goes, range) drives
 * parsing, validation and unknown-key detection, in php-fpm's spirit. */
#include "mmembed/conf.h"
#include "mmembed/nn.h"

#include <ctype.h>
#include <errno.h>
#include <sys/stat.h>
#include <libconfig.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mmembed/log.h"

enum { T_INT, T_BYTES, T_FLOAT, T_STR, T_BOOL, T_LOGLEVEL, T_MODE, T_PATH, T_KEYS };

typedef struct {
    const char *name;   /* dotted path */
    int type;
    size_t off;
    size_t size;        /* for strings */
    double min, max;
} key_t_;

#define K_INT(n, f, lo, hi) {n, T_INT, offsetof(mm_conf_t, f), 0, lo, hi}
#define K_BYTES(n, f, lo, hi) {n, T_BYTES, offsetof(mm_conf_t, f), 0, lo, hi}
#define K_FLT(n, f, lo, hi) {n, T_FLOAT, offsetof(mm_conf_t, f), 0, lo, hi}
#define K_STR(n, f) {n, T_STR, offsetof(mm_conf_t, f), sizeof(((mm_conf_t *)0)->f), 0, 0}
#define K_PATH(n, f) {n, T_PATH, offsetof(mm_conf_t, f), sizeof(((mm_conf_t *)0)->f), 0, 0}

static const key_t_ keys[] = {
    K_STR("listen", listen),
    K_STR("overflow_listen", overflow_listen),
    K_INT("workers", workers, 0, MM_MAX_WORKERS),
    K_INT("threads", threads, 1, 256),
    K_STR("user", user),
    K_STR("group", group),
    K_FLT("request_timeout", request_timeout, 0.1, 86400),
    K_INT("max_requests", max_requests, 0, INT_MAX),
    K_INT("queue_depth", queue_depth, 0, 64),
    K_FLT("stop_timeout", stop_timeout, 0, 3600),
    K_FLT("backoff_max", backoff_max, 0.1, 3600),
    K_FLT("heartbeat_timeout", heartbeat_timeout, 1, 3600),
    K_INT("retry_after", retry_after, 1, 3600),
    K_PATH("pid_file", pid_file),
    K_PATH("pack_cache", pack_cache),
    K_FLT("memory_share", memory_share, 0.01, 1.0),
    K_INT("jpeg_dct_scaling", jpeg_dct_scaling, 0, 64),
    {"socket_mode", T_MODE, offsetof(mm_conf_t, socket_mode), 0, 0, 0777},
    K_STR("http.listen", http_listen),
    K_INT("http.tries", http_tries, 0, 64),
    K_BYTES("limits.max_body_bytes", max_body_bytes, 1024, 1 << 30),
    K_INT("limits.max_items", max_items, 1, 8192),
    K_BYTES("limits.max_text_bytes", max_text_bytes, 16, 64 << 20),
    K_BYTES("limits.max_request_text_bytes", max_request_text_bytes, 16, 1 << 30),
    K_INT("limits.max_pixels", max_pixels, 64, 1e9),
    K_INT("limits.max_parts", max_parts, 1, 4096),
    K_INT("limits.max_frames", max_frames, 1, 1024),
    K_INT("limits.default_frames", default_frames, 1, 1024),
    K_FLT("limits.max_video_seconds", max_video_seconds, 0.1, 86400),
    K_FLT("limits.video_budget", video_budget, 0.001, 3600),
    K_FLT("limits.image_budget", image_budget, 0, 3600),
    /* documents (issue 19): pages per request, pixels per rendered page,
     * the renderer's wall-clock budget per request, PDF size, the
     * renderer's address space */
    K_INT("limits.max_pages", max_pages, 1, 4096),
    K_INT("limits.max_page_pixels", max_page_pixels, 4096, 1e9),
    K_FLT("limits.render_budget", render_budget, 0.1, 3600),
    K_BYTES("limits.max_pdf_bytes", max_pdf_bytes, 1024, 1 << 30),
    K_BYTES("limits.render_memory", render_memory, 64 << 20, 1LL << 40),
    {"sandbox", T_BOOL, offsetof(mm_conf_t, sandbox), 0, 0, 1},
    {"log.level", T_LOGLEVEL, offsetof(mm_conf_t, log_level), 0, 0, 0},
    K_PATH("log.file", log_file),
    {"auth.keys", T_KEYS, offsetof(mm_conf_t, keys), 0, 0, 0},
    K_PATH("auth.keys_file", keys_file),
    K_FLT("http.rate", http_rate, 0, 1e6),
    K_INT("http.burst", http_burst, 0, 1000000),
    K_INT("cache.size_mb", cache_mb, 0, 1 << 20),
    K_INT("executor.slots", exec_slots, 1, 1024),
    K_BYTES("executor.slot_bytes", exec_slot_bytes, 64 << 10, 1LL << 30),
    K_INT("executor.max_batch_tokens", exec_max_batch_tokens, 1, 1 << 24),
    K_INT("executor.max_batch", exec_max_batch, 1, 4096),
    K_INT("executor.batch_delay_us", exec_batch_delay_us, 0, 1000000),
};

void mm_conf_defaults(mm_conf_t *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->listen, sizeof c->listen, "/tmp/mmembed-%%d.sock");
    c->workers = 0; /* auto: cores / threads (mm_conf_load) */
    c->threads = 1;
    c->memory_share = 0.5; /* of the available memory, for the packs of dtype = "auto" models */
    c->request_timeout = 60;
    c->max_requests = 10000;
    c->queue_depth = 8;   /* measured: tools/bench_concurrency.py, README "Queues and batches" */
    c->stop_timeout = 10;
    c->backoff_max = 30;
    c->heartbeat_timeout = 10;
    c->retry_after = 1;
    c->cache_mb = 64;
    c->exec_slots = 32;
    c->exec_slot_bytes = 8 << 20;   /* 13 CLIP images at 224x224 in f32 */
    c->exec_max_batch_tokens = 16384;
    c->exec_max_batch = 256;
    c->exec_batch_delay_us = 2000;
    c->socket_mode = 0660;
    snprintf(c->http_listen, sizeof c->http_listen, "127.0.0.1:8080");
    c->http_tries = 3;
    c->max_body_bytes = 50 << 20;
    c->max_items = 2048;   /* OpenAI's own limit; worked through in chunks */
    c->max_text_bytes = 64 << 10;
    c->max_request_text_bytes = 8 << 20;   /* the CLIP tokenizer reads ~0.5 MB/s: ~15 s at most */
    c->max_pixels = 40000000;
    c->max_parts = 64;
    c->max_frames = 32;
    c->default_frames = 8;
    c->max_video_seconds = 600;
    c->video_budget = 10;
    c->image_budget = 5;
    c->max_pages = 32;
    c->max_page_pixels = 4000000;
    c->render_budget = 20;
    c->max_pdf_bytes = 50 << 20;
    c->render_memory = 1LL << 30;
    c->sandbox = 1;
    c->log_level = MM_LOG_INFO;
    snprintf(c->log_file, sizeof c->log_file, "-");
}

/* Resolve a relative path against the current directory. */
static int absolutize(char *p, size_t cap)
{
    if (p[0] == '/' || p[0] == '\0' || strcmp(p, "-") == 0) return 0;
    char cwd[MM_PATH_MAX], tmp[MM_PATH_MAX * 2];
    if (!getcwd(cwd, sizeof cwd)) return -1;
    const char *rel = p;
    while (rel[0] == '.' && rel[1] == '/') rel += 2;
    int n = snprintf(tmp, sizeof tmp, "%s/%s", cwd, rel);
    if (n < 0 || (size_t)n >= cap) return -1;
    memcpy(p, tmp, n + 1);
    return 0;
}

static int parse_bytes(const char *s, int64_t *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0) return -1;
    while (*end == ' ') end++;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024; end++; break;
    case 'M': mul = 1024.0 * 1024; end++; break;
    case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case '\0': break;
    default: return -1;
    }
    if (toupper((unsigned char)*end) == 'B') end++;
    if (*end) return -1;
    *out = (int64_t)(v * mul);
    return 0;
}

#define FAIL(s, ...) do { \
        snprintf(err, errlen, "%s:%d: ", c->file, (s) ? config_setting_source_line(s) : 0); \
        size_t l_ = strlen(err); \
        snprintf(err + l_, errlen - l_, __VA_ARGS__); \
        return MM_E_INVALID; \
    } while (0)

static int add_key(mm_conf_t *c, const char *key)
{
    size_t n = strlen(key);
    if (n < 8 || n >= MM_KEY_MAX || c->n_keys >= MM_MAX_KEYS) return -1;
    for (size_t i = 0; i < n; i++)
        if (key[i] <= ' ' || key[i] > '~') return -1;
    memcpy(c->keys[c->n_keys++], key, n + 1);
    return 0;
}

static int load_keys_file(mm_conf_t *c, char *err, size_t errlen)
{
    FILE *f = fopen(c->keys_file, "r");
    if (!f) {
        snprintf(err, errlen, "%s:0: auth.keys_file %s: %s", c->file, c->keys_file, strerror(errno));
        return MM_E_INVALID;
    }
    char line[512];
    int ln = 0;
    while (fgets(line, sizeof line, f)) {
        ln++;
        char *p = line, *e;
        while (*p == ' ' || *p == '\t') p++;
        for (e = p + strlen(p); e > p && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'); e--) {
        }
        *e = '\0';
        if (!*p || *p == '#') continue;
        if (add_key(c, p) < 0) {
            fclose(f);
            snprintf(err, errlen, "%s:%d: keys are 8 to %d printable bytes, at most %d keys", c->keys_file, ln,
                     MM_KEY_MAX - 1, MM_MAX_KEYS);
            return MM_E_INVALID;
        }
    }
    fclose(f);
    return MM_OK;
}

static int set_key(const key_t_ *k, config_setting_t *s, mm_conf_t *c, char *err, size_t errlen)
{
    char *dst = (char *)c + k->off;
    int t = config_setting_type(s);
    switch (k->type) {
    case T_INT: {
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
            FAIL(s, "'%s' must be an integer", k->name);
        long long v = config_setting_get_int64(s);
        if (v < k->min || v > k->max)
            FAIL(s, "'%s' = %lld is out of range [%.0f, %.0f]", k->name, v, k->min, k->max);
        if (k->off == offsetof(mm_conf_t, max_pixels)) *(int64_t *)dst = v;
        else *(int *)dst = (int)v;
        return 0;
    }
    case T_BYTES: {
        int64_t v;
        if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) v = config_setting_get_int64(s);
        else if (t == CONFIG_TYPE_STRING) {
            if (parse_bytes(config_setting_get_string(s), &v) < 0)
                FAIL(s, "'%s' must be a size such as 1048576, \"512K\", \"50M\" or \"1G\"", k->name);
        } else FAIL(s, "'%s' must be a size (integer bytes or a string like \"50M\")", k->name);
        if (v < k->min || v > k->max)
            FAIL(s, "'%s' = %lld is out of range [%.0f, %.0f]", k->name, (long long)v, k->min, k->max);
        *(int64_t *)dst = v;
        return 0;
    }
    case T_FLOAT: {
        double v;
        if (t == CONFIG_TYPE_FLOAT) v = config_setting_get_float(s);
        else if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) v = (double)config_setting_get_int64(s);
        else FAIL(s, "'%s' must be a number", k->name);
        if (v < k->min || v > k->max)
            FAIL(s, "'%s' = %g is out of range [%g, %g]", k->name, v, k->min, k->max);
        *(double *)dst = v;
        return 0;
    }
    case T_STR:
    case T_PATH: {
        if (t != CONFIG_TYPE_STRING) FAIL(s, "'%s' must be a string", k->name);
        const char *v = config_setting_get_string(s);
        if (strlen(v) >= k->size) FAIL(s, "'%s' is too long (max %zu bytes)", k->name, k->size - 1);
        memcpy(dst, v, strlen(v) + 1);
        if (k->type == T_PATH && absolutize(dst, k->size) < 0)
            FAIL(s, "'%s': path too long", k->name);
        return 0;
    }
    case T_BOOL:
        if (t != CONFIG_TYPE_BOOL) FAIL(s, "'%s' must be true or false", k->name);
        *(int *)dst = config_setting_get_bool(s);
        return 0;
    case T_LOGLEVEL: {
        if (t != CONFIG_TYPE_STRING) FAIL(s, "'%s' must be a string", k->name);
        int lv = mm_log_level_parse(config_setting_get_string(s));
        if (lv < 0) FAIL(s, "'%s' must be one of error, warn, info, debug", k->name);
        *(int *)dst = lv;
        return 0;
    }
    case T_KEYS: {
        if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) FAIL(s, "'%s' must be an array of strings", k->name);
        for (int i = 0; i < config_setting_length(s); i++) {
            config_setting_t *e = config_setting_get_elem(s, i);
            if (config_setting_type(e) != CONFIG_TYPE_STRING) FAIL(s, "'%s' must be an array of strings", k->name);
            if (add_key(c, config_setting_get_string(e)) < 0)
                FAIL(s, "'%s'[%d]: keys are 8 to %d printable bytes, at most %d keys", k->name, i, MM_KEY_MAX - 1,
                     MM_MAX_KEYS);
        }
        return 0;
    }
    case T_MODE: {
        long v;
        if (t == CONFIG_TYPE_INT) v = config_setting_get_int(s);
        else if (t == CONFIG_TYPE_STRING) {
            char *end;
            v = strtol(config_setting_get_string(s), &end, 8);
            if (*end) FAIL(s, "'%s' must be an octal mode such as \"0660\"", k->name);
        } else FAIL(s, "'%s' must be an octal mode such as \"0660\"", k->name);
        if (v < 0 || v > 0777) FAIL(s, "'%s' out of range", k->name);
        *(int *)dst = (int)v;
        return 0;
    }
    }
    return 0;
}

static int load_models(config_setting_t *list, mm_conf_t *c, char *err, size_t errlen)
{
    if (config_setting_type(list) != CONFIG_TYPE_LIST && config_setting_type(list) != CONFIG_TYPE_ARRAY)
        FAIL(list, "'models' must be a list: ( { name = \"...\"; path = \"...\"; } )");
    int n = config_setting_length(list);
    if (n > MM_MAX_MODELS) FAIL(list, "at most %d models", MM_MAX_MODELS);
    int defaults = 0;
    for (int i = 0; i < n; i++) {
        config_setting_t *g = config_setting_get_elem(list, i);
        if (config_setting_type(g) != CONFIG_TYPE_GROUP)
            FAIL(g, "each model must be a group { name = ...; path = ...; }");
        mm_conf_model_t *m = &c->models[i];
        memset(m, 0, sizeof *m);
        snprintf(m->dtype, sizeof m->dtype, "f32");
        snprintf(m->device, sizeof m->device, "cpu");
        snprintf(m->gpu_dtype, sizeof m->gpu_dtype, "f16");
        for (int j = 0; j < config_setting_length(g); j++) {
            config_setting_t *s = config_setting_get_elem(g, j);
            const char *k = config_setting_name(s);
            int t = config_setting_type(s);
            if (strcmp(k, "name") == 0 || strcmp(k, "path") == 0 || strcmp(k, "dtype") == 0) {
                if (t != CONFIG_TYPE_STRING) FAIL(s, "models[%d].%s must be a string", i, k);
                const char *v = config_setting_get_string(s);
                char *dst = k[0] == 'n' ? m->name : k[0] == 'p' ? m->path : m->dtype;
                size_t cap = k[0] == 'n' ? sizeof m->name : k[0] == 'p' ? sizeof m->path : sizeof m->dtype;
                if (strlen(v) >= cap) FAIL(s, "models[%d].%s is too long", i, k);
                memcpy(dst, v, strlen(v) + 1);
            } else if (strcmp(k, "max_tokens") == 0) {
                if (t != CONFIG_TYPE_INT || config_setting_get_int(s) < 1 || config_setting_get_int(s) > 1 << 20)
                    FAIL(s, "models[%d].max_tokens must be a positive integer", i);
                m->max_tokens = config_setting_get_int(s);
            } else if (strcmp(k, "max_image_tokens") == 0) {
                if (t != CONFIG_TYPE_INT || config_setting_get_int(s) < 4 || config_setting_get_int(s) > 16384)
                    FAIL(s, "models[%d].max_image_tokens must be an integer from 4 to 16384", i);
                m->max_image_tokens = config_setting_get_int(s);
            } else if (strcmp(k, "instruction") == 0) {
                if (t != CONFIG_TYPE_STRING) FAIL(s, "models[%d].instruction must be a string", i);
                if (strlen(config_setting_get_string(s)) >= sizeof m->instruction)
                    FAIL(s, "models[%d].instruction is too long", i);
                snprintf(m->instruction, sizeof m->instruction, "%s", config_setting_get_string(s));
            } else if (strcmp(k, "default_for") == 0) {
                if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
                    FAIL(s, "models[%d].default_for must be a list such as [\"text\", \"image\"]", i);
                for (int e = 0; e < config_setting_length(s); e++) {
                    const char *v = config_setting_get_string_elem(s, e);
                    int bit = !v ? 0 : !strcmp(v, "text") ? MM_MOD_TEXT : !strcmp(v, "image") ? MM_MOD_IMAGE
                                   : !strcmp(v, "video") ? MM_MOD_VIDEO : 0;
                    if (!bit) FAIL(s, "models[%d].default_for: each entry is \"text\", \"image\" or \"video\"", i);
                    for (int j = 0; j < i; j++)
                        if (c->models[j].default_for & bit)
                            FAIL(s, "models[%d].default_for: '%s' already has a default model ('%s')", i, v,
                                 c->models[j].name);
                    m->default_for |= bit;
                }
            } else if (strcmp(k, "aliases") == 0) {
                if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
                    FAIL(s, "models[%d].aliases must be a list such as [\"text-embedding-3-small\"]", i);
                if (config_setting_length(s) > MM_MAX_ALIASES) FAIL(s, "models[%d]: at most %d aliases", i, MM_MAX_ALIASES);
                for (int e = 0; e < config_setting_length(s); e++) {
                    const char *v = config_setting_get_string_elem(s, e);
                    if (!v || !v[0] || strlen(v) >= sizeof m->aliases[0])
                        FAIL(s, "models[%d].aliases: each entry is a non-empty string under %zu bytes", i,
                             sizeof m->aliases[0]);
                    snprintf(m->aliases[m->n_aliases++], sizeof m->aliases[0], "%s", v);
                }
            } else if (strcmp(k, "device") == 0 || strcmp(k, "gpu_dtype") == 0) {
                const int dev = k[0] == 'd';
                char *dst = dev ? m->device : m->gpu_dtype;
                size_t cap = dev ? sizeof m->device : sizeof m->gpu_dtype;
                if (t != CONFIG_TYPE_STRING || strlen(config_setting_get_string(s)) >= cap)
                    FAIL(s, "models[%d].%s must be a short string", i, k);
                snprintf(dst, cap, "%s", config_setting_get_string(s));
            } else if (strcmp(k, "default") == 0) {
                if (t != CONFIG_TYPE_BOOL) FAIL(s, "models[%d].default must be true or false", i);
                m->is_default = config_setting_get_bool(s);
            } else {
                FAIL(s, "unknown key 'models[%d].%s' (expected name, path, dtype, default, default_for, max_tokens, max_image_tokens, instruction, aliases, device, gpu_dtype)", i, k);
            }
        }
        if (!m->name[0]) FAIL(g, "models[%d] needs a name", i);
        for (const char *p = m->name; *p; p++)
            if (!isalnum((unsigned char)*p) && !strchr("-_./:", *p))
                FAIL(g, "models[%d].name '%s' may only hold letters, digits and -_./:", i, m->name);
        if (!m->path[0]) FAIL(g, "models[%d] ('%s') needs a path", i, m->name);
        mm_dtype_t dt;
        if (strcmp(m->dtype, "auto") != 0 && mm_dtype_parse(m->dtype, &dt) != 0)
            FAIL(g, "models[%d].dtype '%s' is not supported (supported: f32, bf16, q8, q4, auto)", i, m->dtype);
        if (mm_conf_device_kind(m->device) < 0)
            FAIL(g, "models[%d].device '%s' is not supported (supported: cpu, cuda, cuda:N, cpu-executor)", i, m->device);
        if (strcmp(m->gpu_dtype, "f16") && strcmp(m->gpu_dtype, "bf16") && strcmp(m->gpu_dtype, "tf32"))
            FAIL(g, "models[%d].gpu_dtype '%s' is not supported (supported: f16, bf16, tf32)", i, m->gpu_dtype);
        if (absolutize(m->path, sizeof m->path) < 0) FAIL(g, "models[%d].path too long", i);
        struct stat st;
        if (stat(m->path, &st) < 0 || !S_ISDIR(st.st_mode))
            FAIL(g, "models[%d] ('%s'): %s is not a model folder (%s)", i, m->name, m->path,
                 stat(m->path, &st) < 0 ? strerror(errno) : "not a directory");
        /* names and aliases share one namespace: each picks exactly one model */
        for (int a = -1; a < m->n_aliases; a++) {
            const char *nm = a < 0 ? m->name : m->aliases[a];
            for (int b = a + 1; b < m->n_aliases; b++)
                if (strcmp(nm, m->aliases[b]) == 0) FAIL(g, "models[%d]: '%s' is listed twice", i, nm);
            for (int j = 0; j < i; j++) {
                if (strcmp(c->models[j].name, nm) == 0) FAIL(g, "duplicate model name '%s'", nm);
                for (int b = 0; b < c->models[j].n_aliases; b++)
                    if (strcmp(c->models[j].aliases[b], nm) == 0)
                        FAIL(g, "models[%d]: '%s' is already an alias of model '%s'", i, nm, c->models[j].name);
            }
        }
        defaults += m->is_default;
        c->n_models = i + 1;
    }
    if (defaults > 1) FAIL(list, "only one model may be the default");
    if (n > 0 && defaults == 0) c->models[0].is_default = 1;
    return 0;
}

static const key_t_ *find_key(const char *path)
{
    for (size_t i = 0; i < MM_ARRAY_LEN(keys); i++)
        if (strcmp(keys[i].name, path) == 0) return &keys[i];
    return NULL;
}

/* Walk every setting so that unknown keys are reported, not ignored. */
static int walk(config_setting_t *grp, const char *prefix, mm_conf_t *c, char *err, size_t errlen)
{
    for (int i = 0; i < config_setting_length(grp); i++) {
        config_setting_t *s = config_setting_get_elem(grp, i);
        const char *name = config_setting_name(s);
        char path[128];
        snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", name ? name : "?");
        if (!prefix[0] && name && strcmp(name, "models") == 0) {
            int rc = load_models(s, c, err, errlen);
            if (rc) return rc;
            continue;
        }
        if (config_setting_type(s) == CONFIG_TYPE_GROUP) {
            int known = 0;
            size_t pl = strlen(path);
            for (size_t k = 0; k < MM_ARRAY_LEN(keys); k++)
                if (strncmp(keys[k].name, path, pl) == 0 && keys[k].name[pl] == '.') known = 1;
            if (!known) FAIL(s, "unknown section '%s'", path);
            int rc = walk(s, path, c, err, errlen);
            if (rc) return rc;
            continue;
        }
        const key_t_ *k = find_key(path);
        if (!k) FAIL(s, "unknown key '%s'", path);
        int rc = set_key(k, s, c, err, errlen);
        if (rc) return rc;
    }
    return 0;
}

int mm_conf_load(const char *path, mm_conf_t *c, char *err, size_t errlen)
{
    mm_conf_defaults(c);
    snprintf(c->file, sizeof c->file, "%s", path);
    absolutize(c->file, sizeof c->file);
    config_t cfg;
    config_init(&cfg);
    if (!config_read_file(&cfg, path)) {
        if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
            snprintf(err, errlen, "%s:0: cannot read file", path);
        else
            snprintf(err, errlen, "%s:%d: %s", path, config_error_line(&cfg), config_error_text(&cfg));
        config_destroy(&cfg);
        return MM_E_INVALID;
    }
    int rc = walk(config_root_setting(&cfg), "", c, err, errlen);
    config_setting_t *root = config_root_setting(&cfg);
    config_destroy(&cfg);
    (void)root;
    if (rc) return rc;

    if (c->keys_file[0] && (rc = load_keys_file(c, err, errlen)) != MM_OK) return rc;
    /* workers = 0: as many as fit the cores at `threads` each, so the pool
     * never oversubscribes the CPU by default */
    if (c->workers == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = (int)MM_MAX(1, MM_MIN((cores > 0 ? cores : 1) / c->threads, MM_MAX_WORKERS));
    }
    /* cross-key checks */
    if (c->default_frames > c->max_frames) {
        snprintf(err, errlen, "%s:0: limits.default_frames (%d) exceeds limits.max_frames (%d)",
                 c->file, c->default_frames, c->max_frames);
        return MM_E_INVALID;
    }
    char addr[MM_PATH_MAX];
    if (strchr(c->listen, '/')) {
        if (!strstr(c->listen, "%d") && c->workers > 1) {
            snprintf(err, errlen, "%s:0: 'listen' is a unix path: it needs %%d for the worker number", c->file);
            return MM_E_INVALID;
        }
        const char *p = c->listen;
        int pct = 0;
        for (; *p; p++)
            if (*p == '%') {
                if (p[1] == 'd') pct++, p++;
                else if (p[1] == '%') p++;
                else { snprintf(err, errlen, "%s:0: 'listen': only %%d may appear", c->file); return MM_E_INVALID; }
            }
        if (pct > 1) { snprintf(err, errlen, "%s:0: 'listen': %%d may appear once", c->file); return MM_E_INVALID; }
        absolutize(c->listen, sizeof c->listen);
        mm_conf_worker_addr(c, c->workers - 1, addr, sizeof addr);
        if (strlen(addr) >= 108) {
            snprintf(err, errlen, "%s:0: 'listen': unix socket path too long (%zu bytes, max 107)", c->file, strlen(addr));
            return MM_E_INVALID;
        }
    } else {
        const char *colon = strrchr(c->listen, ':');
        char *end;
        long port = colon ? strtol(colon + 1, &end, 10) : -1;
        if (!colon || *end || port < 1 || port + c->workers - 1 > 65535) {
            snprintf(err, errlen, "%s:0: 'listen' must be a unix path with %%d or host:port (port + workers - 1 <= 65535)", c->file);
            return MM_E_INVALID;
        }
    }
    return MM_OK;
}

int mm_conf_worker_addr(const mm_conf_t *c, int i, char *out, size_t cap)
{
    if (strchr(c->listen, '/')) {
        const char *p = strstr(c->listen, "%d");
        if (!p) snprintf(out, cap, "%s", c->listen);
        else snprintf(out, cap, "%.*s%d%s", (int)(p - c->listen), c->listen, i, p + 2);
        return 1;
    }
    const char *colon = strrchr(c->listen, ':');
    long port = strtol(colon + 1, NULL, 10);
    snprintf(out, cap, "%.*s:%ld", (int)(colon - c->listen), c->listen, port + i);
    return 0;
}

int mm_conf_overflow_addr(const mm_conf_t *c, char *out, size_t cap)
{
    if (strcmp(c->overflow_listen, "off") == 0) return -1;
    if (c->overflow_listen[0]) {
        snprintf(out, cap, "%s", c->overflow_listen);
        return strchr(out, '/') ? 1 : 0;
    }
    const char *p = strstr(c->listen, "%d");
    if (!strchr(c->listen, '/') || !p) return -1;
    snprintf(out, cap, "%.*soverflow%s", (int)(p - c->listen), c->listen, p + 2);
    return 1;
}

int mm_conf_device_kind(const char *d)
{
    if (!strcmp(d, "cpu")) return MM_DEV_WORKER;
    if (!strcmp(d, "cpu-executor")) return MM_DEV_CPU_EXECUTOR;
    if (!strcmp(d, "cuda")) return MM_DEV_GPU;
    if (!strncmp(d, "cuda:", 5) && d[5] >= '0' && d[5] <= '9') {
        char *end;
        long n = strtol(d + 5, &end, 10);
        if (!*end && n >= 0 && n < 64) return MM_DEV_GPU;
    }
    return -1;
}

int mm_conf_default_model(const mm_conf_t *c)
{
    for (int i = 0; i < c->n_models; i++)
        if (c->models[i].is_default) return i;
    return c->n_models ? 0 : -1;
}
