/* Text routes: POST /v1/embeddings (OpenAI's shape: strings, token ids,
 * base64 output) and POST /embed/text. */
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "mmembed/base64.h"
#include "mmembed/nn.h"


/* Options every text route takes: dimensions (Matryoshka truncation, then
 * renormalize), normalize, truncate, input_type ("query" applies the model's
 * instruction) or an explicit instruction. */
int emb_text_options(json_object *j, const entry_t *m, int *dims, int *normalize, text_opts_t *o, fail_t *f)
{
    json_object *v;
    *dims = m->info->dim;
    *o = emb_default_text_opts;
    if (json_object_object_get_ex(j, "dimensions", &v) && !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 1 ||
            json_object_get_int64(v) > m->info->dim)
            return emb_failf(f, 400, "invalid_dimensions", "dimensions must be an integer from 1 to %d for model '%s'",
                         m->info->dim, m->name);
        *dims = (int)json_object_get_int64(v);
    }
    const char *type = NULL, *instr = NULL;
    if (emb_jbool(j, "normalize", normalize, f) || emb_jbool(j, "truncate", &o->truncate, f) ||
        emb_jstr(j, "input_type", &type, f) || emb_jstr(j, "instruction", &instr, f))
        return -1;
    if (type && strcmp(type, "query") && strcmp(type, "document") && strcmp(type, "passage"))
        return emb_failf(f, 400, "invalid_parameter", "input_type must be query, document or passage");
    if (instr) o->prefix = instr;
    else if (type && !strcmp(type, "query")) o->prefix = m->instruction;
    o->prefix_len = strlen(o->prefix);
    return 0;
}

/* ---------------------------------------------------------------- the three phases */

/* An item's images: "image" (one base64 string or data: URI) and/or
 * "images" (several: a video's frames). */
static int item_images(json_object *it, json_object **one, json_object **many)
{
    *one = *many = NULL;
    json_object_object_get_ex(it, "image", one);
    json_object_object_get_ex(it, "images", many);
    return (*one != NULL) + (*many && json_object_is_type(*many, json_type_array) ? (int)json_object_array_length(*many) : 0);
}

static int items_have_images(json_object *input)
{
    json_object *one, *many;
    if (json_object_is_type(input, json_type_object)) return item_images(input, &one, &many) > 0;
    for (size_t i = 0; i < json_object_array_length(input); i++) {
        json_object *it = json_object_array_get_idx(input, i);
        if (json_object_is_type(it, json_type_object) && item_images(it, &one, &many) > 0) return 1;
    }
    return 0;
}

/* Mixed items into vecs (n, dim): a chat-prompted model (Qwen2-VL) embeds each
 * item's text and images in one sequence; other models take an item of
 * text or of one image (a text and an image together need such a model,
 * or /embed/multimodal's weighted fusion). Plain strings are text items. */
static int encode_items(mm_embed_t *e, entry_t *m, json_object *input, int n, const text_opts_t *o, int use_cache,
                        int *hits, long *tokens, float *vecs, fail_t *f)
{
    const int d = m->info->dim;
    int rc = 0;
    unsigned char *owned[64] = {0};
    for (int i = 0; i < n && !rc; i++) {
        json_object *it = json_object_is_type(input, json_type_object) ? input : json_object_array_get_idx(input, i);
        json_object *jt = NULL, *one, *many;
        const char *text = NULL;
        size_t tl = 0;
        if (json_object_is_type(it, json_type_string)) {
            jt = it;
        } else if (!json_object_is_type(it, json_type_object)) {
            return emb_failf(f, 400, "invalid_input", "input[%d] must be a string or an object with \"text\" and/or \"image\"", i);
        } else {
            json_object_object_get_ex(it, "text", &jt);
        }
        if (jt) {
            if (!json_object_is_type(jt, json_type_string))
                return emb_failf(f, 400, "invalid_input", "input[%d].text must be a string", i);
            text = json_object_get_string(jt);
            tl = (size_t)json_object_get_string_len(jt);
        }
        const int ni = json_object_is_type(it, json_type_object) ? item_images(it, &one, &many) : 0;
        if (ni > 64) return emb_failf(f, 413, "too_many_images", "input[%d] has %d images; at most 64", i, ni);
        if (!tl && !ni) return emb_failf(f, 400, "empty_input", "input[%d] has neither text nor an image", i);
        if (many && !json_object_is_type(many, json_type_array))
            return emb_failf(f, 400, "invalid_input", "input[%d].images must be an array", i);
        const unsigned char *bufs[64];
        size_t lens[64];
        int k = 0;
        for (int q = 0; q < ni; q++) {
            json_object *s = one && q == 0 ? one : json_object_array_get_idx(many, (size_t)(q - (one != NULL)));
            if (!json_object_is_type(s, json_type_string)) {
                rc = emb_failf(f, 400, "invalid_input", "input[%d]: an image must be a base64 string or data: URI", i);
                break;
            }
            if ((rc = emb_decode_b64_image(json_object_get_string(s), (size_t)json_object_get_string_len(s), &owned[k],
                                           &lens[k], i, f)))
                break;
            bufs[k] = owned[k];
            k++;
        }
        float *out = vecs + (size_t)i * d;
        if (!rc && m->info->chat) {
            const chat_item_t ci = {.text = text, .text_len = tl, .bufs = bufs, .lens = lens, .n_images = k};
            if (tl && emb_check_text_sizes(e, &tl, 1, o, f)) rc = -1;
            else rc = emb_encode_chat(e, m, &ci, o, out, tokens, use_cache, hits, i, f);
        } else if (!rc && tl && k) {
            rc = emb_failf(f, 422, "not_supported", "input[%d]: model '%s' cannot embed a text and an image in one "
                           "sequence (a Qwen2-VL model can; /embed/multimodal fuses two vectors)", i, m->name);
        } else if (!rc && k > 1) {
            rc = emb_failf(f, 422, "not_supported", "input[%d]: model '%s' embeds one image per input", i, m->name);
        } else if (!rc && k == 1) {
            rc = emb_encode_images(e, m, bufs, lens, 1, out, use_cache, hits, f);
        } else if (!rc) {
            const char *tx[1] = {text};
            rc = emb_encode_texts_opts(e, m, tx, &tl, 1, out, tokens, use_cache, hits, o, f);
        }
        for (int q = 0; q < k; q++) {
            free(owned[q]);
            owned[q] = NULL;
        }
    }
    return rc ? -1 : 0;
}

/* One request of a text route on its way through parse -> encode ->
 * respond. Everything it points to lives until text_job_free. */
typedef struct {
    mm_http_req_t *r;
    int openai;                /* /v1/embeddings's shape, else /embed/text's */
    json_object *j;            /* the body; texts point into it */
    const char **texts;        /* (n) */
    size_t *lens;              /* (n) */
    int32_t **ids;             /* (n) token-id sequences (ids input), else NULL */
    int *id_lens;              /* (n) */
    int *ntok;                 /* (n) tokens per input */
    float *vecs;               /* (n, dim) */
    int dims, normalize, b64;
    json_object *mixed;        /* /v1/embeddings items that are objects ({"text"}, {"image"}, both), or NULL */
    text_item_t it;            /* what the encode loop reads and fills */
} text_job_t;

static void text_job_free(text_job_t *t)
{
    json_object_put(t->j);
    if (t->ids)
        for (int i = 0; i < t->it.n; i++) free(t->ids[i]);
    free(t->ids);
    free(t->id_lens);
    free(t->texts);
    free(t->lens);
    free(t->ntok);
    free(t->vecs);
    memset(t, 0, sizeof *t);
}

static int alloc_inputs(text_job_t *t, int n, int ids, fail_t *f)
{
    t->ntok = calloc((size_t)n, sizeof *t->ntok);
    t->vecs = malloc(sizeof(float) * (size_t)n * t->it.m->info->dim);
    if (ids) {
        t->ids = calloc((size_t)n, sizeof *t->ids);
        t->id_lens = calloc((size_t)n, sizeof *t->id_lens);
    } else {
        t->texts = calloc((size_t)n, sizeof *t->texts);
        t->lens = calloc((size_t)n, sizeof *t->lens);
    }
    if (!t->ntok || !t->vecs || (ids ? !t->ids || !t->id_lens : !t->texts || !t->lens))
        return emb_failf(f, 500, NULL, "out of memory");
    return 0;
}

/* /v1/embeddings's four input shapes: a string, strings, int[], int[][]. */
static int openai_inputs(mm_embed_t *e, text_job_t *t, json_object *input, fail_t *f)
{
    entry_t *m = t->it.m;
    int n = 0, ids_mode = 0;
    if (json_object_is_type(input, json_type_string)) {
        n = 1;
    } else if (json_object_is_type(input, json_type_array)) {
        n = (int)json_object_array_length(input);
        if (n == 0) return emb_failf(f, 400, "empty_input", "'input' must not be an empty array");
        json_object *first = json_object_array_get_idx(input, 0);
        if (json_object_is_type(first, json_type_int)) ids_mode = 1, n = 1;       /* int[] */
        else if (json_object_is_type(first, json_type_array)) ids_mode = 2;       /* int[][] */
    } else {
        return emb_failf(f, 400, "invalid_input", "'input' must be a string, an array of strings, or token arrays");
    }
    if (n > e->max_items) return emb_failf(f, 413, "too_many_inputs", "%d inputs; limits.max_items is %d", n, e->max_items);
    if (ids_mode && !m->info->takes_ids)
        return emb_failf(f, 400, "invalid_input",
                         "model '%s' (%s) does not take token ids; send strings (token ids go to CLIP, BERT-style and "
                         "Qwen3 models)", m->name, m->info->arch);
    if (alloc_inputs(t, n, ids_mode, f)) return -1;
    t->it.n = n;
    for (int i = 0; i < n; i++) {
        if (ids_mode) {
            json_object *seq = ids_mode == 1 ? input : json_object_array_get_idx(input, i);
            if (!json_object_is_type(seq, json_type_array))
                return emb_failf(f, 400, "invalid_input", "input[%d] must be an array of token ids", i);
            size_t len = json_object_array_length(seq);
            if (len == 0 || len > (size_t)m->max_tokens)
                return emb_failf(f, 400, "invalid_input", "input[%d] has %zu tokens; model '%s' takes 1 to %d", i, len,
                                 m->name, m->max_tokens);
            if (!(t->ids[i] = malloc(sizeof(int32_t) * len))) return emb_failf(f, 500, NULL, "out of memory");
            for (size_t k = 0; k < len; k++) {
                json_object *tk = json_object_array_get_idx(seq, k);
                int64_t id = json_object_is_type(tk, json_type_int) ? json_object_get_int64(tk) : -1;
                if (id < 0 || id >= m->info->vocab_size)
                    return emb_failf(f, 400, "invalid_input", "input[%d][%zu] is not a token id of model '%s' (0..%d)",
                                     i, k, m->name, m->info->vocab_size - 1);
                t->ids[i][k] = (int32_t)id;
            }
            t->id_lens[i] = (int)len;
            continue;
        }
        json_object *s = json_object_is_type(input, json_type_string) ? input : json_object_array_get_idx(input, i);
        if (!json_object_is_type(s, json_type_string))
            return emb_failf(f, 400, "invalid_input", "input[%d] must be a string", i);
        t->texts[i] = json_object_get_string(s);
        t->lens[i] = (size_t)json_object_get_string_len(s);
        if (t->lens[i] == 0) return emb_failf(f, 400, "empty_input", "input[%d] is an empty string", i);
    }
    return 0;
}

/* /embed/text's "texts": an array of strings. */
static int text_inputs(mm_embed_t *e, text_job_t *t, fail_t *f)
{
    json_object *arr;
    if (!json_object_object_get_ex(t->j, "texts", &arr) || !json_object_is_type(arr, json_type_array))
        return emb_failf(f, 400, "missing_texts", "'texts' must be an array of strings");
    int n = (int)json_object_array_length(arr);
    if (n == 0) return emb_failf(f, 400, "empty_input", "'texts' is empty");
    if (n > e->max_items) return emb_failf(f, 413, "too_many_inputs", "%d texts; limits.max_items is %d", n, e->max_items);
    if (alloc_inputs(t, n, 0, f)) return -1;
    t->it.n = n;
    for (int i = 0; i < n; i++) {
        json_object *s = json_object_array_get_idx(arr, i);
        if (!json_object_is_type(s, json_type_string))
            return emb_failf(f, 400, "invalid_input", "texts[%d] must be a string", i);
        t->texts[i] = json_object_get_string(s);
        t->lens[i] = (size_t)json_object_get_string_len(s);
        if (!t->lens[i]) return emb_failf(f, 400, "empty_input", "texts[%d] is an empty string", i);
    }
    return 0;
}

/* Parse: the body, its model and options, its inputs. Returns 0, or -1
 * with f set (the request is answered with it and leaves the batch). */
static int text_parse(mm_embed_t *e, text_job_t *t, fail_t *f)
{
    mm_http_req_t *r = t->r;
    if (!emb_is_json(r->content_type)) {
        mm_http_drain(r, e->conf->max_body_bytes);
        return emb_failf(f, 415, "unsupported_media_type",
                         t->openai ? "send application/json" : "send application/json: {\"texts\": [...]}");
    }
    if (!(t->j = emb_read_json(e, r, f))) return -1;
    const char *model = NULL, *fmt = NULL;
    t->it.use_cache = 1;
    if (emb_jstr(t->j, "model", &model, f) || emb_jbool(t->j, "cache", &t->it.use_cache, f)) return -1;
    if (t->openai) {
        if (emb_jstr(t->j, "encoding_format", &fmt, f)) return -1;
        if (fmt && strcmp(fmt, "base64") == 0) t->b64 = 1;
        else if (fmt && strcmp(fmt, "float") != 0)
            return emb_failf(f, 400, "invalid_parameter", "encoding_format must be 'float' or 'base64'");
    }
    /* /v1/embeddings items that are objects ({"text"}, {"image"}, both): one vector each */
    json_object *input = NULL;
    int any_image = 0;
    if (t->openai && json_object_object_get_ex(t->j, "input", &input)) {
        int mixed = json_object_is_type(input, json_type_object);
        for (size_t i = 0; json_object_is_type(input, json_type_array) && i < json_object_array_length(input); i++)
            mixed |= json_object_is_type(json_object_array_get_idx(input, i), json_type_object);
        if (mixed) {
            t->mixed = input;
            any_image = items_have_images(input);
        }
    }
    entry_t *m = emb_pick_model_for(e, model, !any_image, any_image, any_image ? MM_MOD_IMAGE : MM_MOD_TEXT, f);
    if (!m) return -1;
    if (t->openai && !any_image && !m->info->has_text)
        return emb_failf(f, 422, "no_text_tower", "model '%s' cannot embed text", m->name);
    t->it.m = m;
    t->normalize = 1;
    if (emb_text_options(t->j, m, &t->dims, &t->normalize, &t->it.o, f)) return -1;
    if (t->mixed) {   /* encoded at once, item by item (images decoded), not packed with other requests */
        const int n = json_object_is_type(t->mixed, json_type_object) ? 1 : (int)json_object_array_length(t->mixed);
        if (n > e->max_items)
            return emb_failf(f, 413, "too_many_inputs", "%d inputs; limits.max_items is %d", n, e->max_items);
        if (alloc_inputs(t, n, 0, f)) return -1;
        t->it.n = n;
    } else if (t->openai) {
        if (!input) return emb_failf(f, 400, "missing_input", "'input' is required");
        if (openai_inputs(e, t, input, f)) return -1;
    } else if (text_inputs(e, t, f)) {
        return -1;
    }
    t->it.texts = t->texts;
    t->it.lens = t->lens;
    t->it.ids = (const int32_t *const *)t->ids;
    t->it.id_lens = t->id_lens;
    t->it.out = t->vecs;
    t->it.ntok = t->ntok;
    return 0;
}

/* Respond: normalize / truncate each vector and write the route's shape. */
static void text_respond(mm_embed_t *e, text_job_t *t)
{
    mm_http_req_t *r = t->r;
    const entry_t *m = t->it.m;
    mm_buf_t *b = &r->out;
    const int n = t->it.n;
    if (!t->ids) emb_set_x_cache(e, r, t->it.use_cache, t->it.hits, n);
    if (t->openai) mm_buf_puts(b, "{\"object\":\"list\",\"data\":[");
    else emb_begin_data(b, m, t->dims);
    for (int i = 0; i < n; i++) {
        float *vec = t->vecs + (size_t)i * m->info->dim;
        if (t->normalize) mm_nn_l2_normalize(vec, t->dims);   /* truncation (dimensions) then unit length */
        if (t->openai) mm_buf_printf(b, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":", i ? "," : "", i);
        else mm_buf_printf(b, "%s{\"index\":%d,\"tokens\":%d,\"embedding\":", i ? "," : "", i, t->ntok[i]);
        if (t->b64) {
            mm_buf_puts(b, "\"");
            mm_base64_encode(b, vec, sizeof(float) * (size_t)t->dims);   /* x86-64: little-endian already */
            mm_buf_puts(b, "\"");
        } else {
            emb_write_vec(b, vec, t->dims);
        }
        mm_buf_puts(b, "}");
    }
    if (t->openai) {
        mm_buf_puts(b, "],\"model\":");
        mm_buf_json_str(b, m->name, strlen(m->name));
        mm_buf_printf(b, ",\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}\n", t->it.tokens, t->it.tokens);
    } else {
        mm_buf_printf(b, "],\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}\n", t->it.tokens, t->it.tokens);
    }
    mm_http_respond_json(r, 200);
}

/* ---------------------------------------------------------------- batches */

void mm_embed_text_batch(mm_embed_t *e, mm_http_req_t *const *rs, int n)
{
    text_job_t *jobs = calloc((size_t)MM_MAX(n, 1), sizeof *jobs);
    text_item_t **items = calloc((size_t)MM_MAX(n, 1), sizeof *items);
    int k = 0;
    for (int i = 0; i < n; i++) {
        fail_t f = {0};
        if (emb_batch_refuse(e, rs[i], jobs && items)) continue;
        text_job_t *t = &jobs[k];
        t->r = rs[i];
        t->openai = rs[i]->route == MM_ROUTE_EMBEDDINGS;
        if (text_parse(e, t, &f)) {
            emb_respond_fail(rs[i], &f);
            text_job_free(t);
            continue;
        }
        if (t->mixed)
            t->it.failed = encode_items(e, t->it.m, t->mixed, t->it.n, &t->it.o, t->it.use_cache, &t->it.hits,
                                        &t->it.tokens, t->vecs, &t->it.f) != 0;
        k++;
    }
    int ni = 0;
    for (int i = 0; i < k; i++)
        if (!jobs[i].mixed) items[ni++] = &jobs[i].it;
    if (ni) emb_encode_text_items(e, items, ni);
    for (int i = 0; i < k; i++) {
        if (jobs[i].it.failed) emb_respond_fail(jobs[i].r, &jobs[i].it.f);
        else text_respond(e, &jobs[i]);
        text_job_free(&jobs[i]);
    }
    free(items);
    free(jobs);
}

/* ---------------------------------------------------------------- one request */

void mm_embed_openai(mm_embed_t *e, mm_http_req_t *r)
{
    mm_embed_text_batch(e, &r, 1);
}

void mm_embed_text(mm_embed_t *e, mm_http_req_t *r)
{
    mm_embed_text_batch(e, &r, 1);
}
