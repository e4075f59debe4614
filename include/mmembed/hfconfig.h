/* hfconfig — one reader for Hugging Face JSON config files (config.json and
 * its siblings: the sentence-transformers files, a Pooling folder's
 * config.json), with typed getters whose errors all read
 *
 *     <file>: <where>.<key>: <what is wrong>
 *
 * e.g. "/srv/m/config.json: text_config.hidden_size: not an integer".
 *
 * The registry (src/model/registry.c) reads a model folder's config.json
 * once and hands each architecture's load a view of its root; an
 * architecture takes sub-object views (text_config, vision_config, ...)
 * with mm_cfg_sub and never opens the file again.
 *
 * A view is a small value (no allocation); it stays valid while the file
 * it came from (mm_cfg_file_t) is open. */
#ifndef MMEMBED_HFCONFIG_H
#define MMEMBED_HFCONFIG_H

#include <stddef.h>

#include "mmembed/common.h"

struct json_object;

/* An open JSON file: its path (for errors) and its parsed root. */
typedef struct mm_cfg_file mm_cfg_file_t;

/* A view of one JSON object inside a file: o NULL is an absent object
 * (every getter then answers "absent": the default, or an error when the
 * key is required). where is its dotted path from the root ("" at the
 * root, "text_config", "rope_scaling"). */
typedef struct mm_cfg {
    struct json_object *o;
    const mm_cfg_file_t *file;
    char where[64];
} mm_cfg_t;

/* Reads path, which must hold a JSON object. Returns MM_OK and *out, or
 * MM_E_NOTFOUND (missing or unreadable: "path: No such file or directory")
 * or MM_E_INVALID ("path: not a JSON object"), with err set. */
int mm_cfg_open(const char *path, mm_cfg_file_t **out, char *err, size_t errlen);
/* The same from len bytes of JSON text in memory; name stands for the
 * file in errors ("preprocessor config"). MM_E_INVALID: not valid JSON
 * (json-c's reason), or not an object. */
int mm_cfg_parse(const char *name, const char *json, size_t len, mm_cfg_file_t **out, char *err, size_t errlen);
/* The same for a file that holds a JSON array (modules.json). */
int mm_cfg_open_array(const char *path, mm_cfg_file_t **out, char *err, size_t errlen);
/* dir/name (mm_cfg_open's contract). */
int mm_cfg_open_in(const char *dir, const char *name, mm_cfg_file_t **out, char *err, size_t errlen);
void mm_cfg_close(mm_cfg_file_t *f);
const char *mm_cfg_path(const mm_cfg_file_t *f);

/* The root object of f as a view. */
mm_cfg_t mm_cfg_root(const mm_cfg_file_t *f);

/* A view of member `key` of c when it is an object (else an absent view
 * whose where still names it, so defaults apply). Returns 1 when present. */
int mm_cfg_sub(const mm_cfg_t *c, const char *key, mm_cfg_t *out);

/* "file: where.key: " + fmt into err; returns rc. key may be NULL (the
 * view itself is at fault). */
int mm_cfg_errf(const mm_cfg_t *c, const char *key, char *err, size_t errlen, int rc, const char *fmt, ...)
    MM_PRINTF(6, 7);

/* Whether key is present and not null. */
int mm_cfg_has(const mm_cfg_t *c, const char *key);

/* Integer key in [lo, hi] into *out; absent or null: def, or with
 * required an error. Returns MM_OK or MM_E_INVALID ("not an integer",
 * "missing", "N out of range [lo, hi]"). */
int mm_cfg_int(const mm_cfg_t *c, const char *key, int def, int lo, int hi, int *out, char *err, size_t errlen);
/* Required positive integer (up to 1e8): the sizes every config gives. */
int mm_cfg_size(const mm_cfg_t *c, const char *key, int *out, char *err, size_t errlen);
/* Positive integer (up to 1e8), def when absent. */
int mm_cfg_pos(const mm_cfg_t *c, const char *key, int def, int *out, char *err, size_t errlen);
/* Positive finite number into *out, def when absent or null. */
int mm_cfg_num(const mm_cfg_t *c, const char *key, double def, double *out, char *err, size_t errlen);
/* An integer, or the first element of an array of integers (eos_token_id
 * may be either); def when absent or of another type. */
int mm_cfg_first_int(const mm_cfg_t *c, const char *key, int def);
/* Exactly n integers of an array into out[]: MM_E_INVALID otherwise;
 * MM_E_NOTFOUND (err untouched) when absent. */
int mm_cfg_ints(const mm_cfg_t *c, const char *key, int *out, int n, char *err, size_t errlen);

/* String member, NULL when absent or of another type. */
const char *mm_cfg_str(const mm_cfg_t *c, const char *key);
/* Boolean member (JSON truthiness), 0 when absent. */
int mm_cfg_bool(const mm_cfg_t *c, const char *key);
/* The first element of an array-of-strings member, NULL when absent. */
const char *mm_cfg_str0(const mm_cfg_t *c, const char *key);

/* Member key when present and not null, else NULL: for values of more
 * than one shape (a size given as a number or as {height, width}). */
struct json_object *mm_cfg_get(const mm_cfg_t *c, const char *key);

/* The parsed object itself, for what the getters do not cover (arrays of
 * objects: USE-Lite's layers, sentence-transformers' modules.json). */
struct json_object *mm_cfg_json(const mm_cfg_t *c);
/* A view of an object that lives inside c (an array element): where says
 * what it is ("layers[2]"). */
mm_cfg_t mm_cfg_view(const mm_cfg_t *c, struct json_object *o, const char *where);

#endif
