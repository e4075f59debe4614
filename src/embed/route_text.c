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

/* ---------------------------------------------------------------- /v1/embeddings */

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

/* Mixed items into e->vecs: a chat-prompted model (Qwen2-VL) embeds each
 * item's text and images in one sequence; other models take an item of
 * text or of one image (a text and an image together need such a model,
 * or /embed/multimodal's weighted fusion). Plain strings are text items. */
static int encode_items(mm_embed_t *e, entry_t *m, json_object *input, int n, const text_opts_t *o, int use_cache,
                        int *hits, long *tokens, fail_t *f)
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
        float *out = e->vecs + (size_t)i * d;
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

void mm_embed_openai(mm_embed_t *e, mm_http_req_t *r)
{
    fail_t f = {0};
    if (!emb_is_json(r->content_type)) {
        mm_http_drain(r, e->conf->max_body_bytes);
        mm_http_error(r, 415, "unsupported_media_type", "send application/json");
        return;
    }
    json_object *j = emb_read_json(e, r, &f), *input;
    const char **texts = NULL;
    size_t *lens = NULL;
    entry_t *m = NULL;
    if (!j) goto fail;
    const char *model = NULL, *fmt = NULL;
    int use_cache = 1, hits = 0;
    if (emb_jstr(j, "model", &model, &f) || emb_jstr(j, "encoding_format", &fmt, &f) || emb_jbool(j, "cache", &use_cache, &f))
        goto fail;
    int b64 = 0;
    if (fmt && strcmp(fmt, "base64") == 0) b64 = 1;
    else if (fmt && strcmp(fmt, "float") != 0) {
        emb_failf(&f, 400, "invalid_parameter", "encoding_format must be 'float' or 'base64'");
        goto fail;
    }
    if (!json_object_object_get_ex(j, "input", &input)) {
        emb_failf(&f, 400, "missing_input", "'input' is required");
        goto fail;
    }
    /* input items that are objects ({"text"}, {"image"}, both): one vector each */
    int mixed = json_object_is_type(input, json_type_object), any_image = 0;
    for (size_t i = 0; json_object_is_type(input, json_type_array) && i < json_object_array_length(input); i++)
        mixed |= json_object_is_type(json_object_array_get_idx(input, i), json_type_object);
    if (mixed) any_image = items_have_images(input);
    if (!(m = emb_pick_model_for(e, model, !any_image, any_image, any_image ? MM_MOD_IMAGE : MM_MOD_TEXT, &f)))
        goto fail;
    if (!any_image && !m->info->has_text) {
        emb_failf(&f, 422, "no_text_tower", "model '%s' cannot embed text", m->name);
        goto fail;
    }
    int dims, normalize = 1;
    text_opts_t topt;
    if (emb_text_options(j, m, &dims, &normalize, &topt, &f)) goto fail;
    /* normalize the four input shapes into either texts or id sequences */
    int n = 0, ids_mode = 0;
    long tokens = 0;
    if (mixed) {
        n = json_object_is_type(input, json_type_object) ? 1 : (int)json_object_array_length(input);
        if (n > e->max_items) {
            emb_failf(&f, 413, "too_many_inputs", "%d inputs; limits.max_items is %d", n, e->max_items);
            goto fail;
        }
        if (encode_items(e, m, input, n, &topt, use_cache, &hits, &tokens, &f)) goto fail;
        emb_set_x_cache(e, r, use_cache, hits, n);
    } else if (json_object_is_type(input, json_type_string)) {
        n = 1;
    } else if (json_object_is_type(input, json_type_array)) {
        n = (int)json_object_array_length(input);
        if (n == 0) {
            emb_failf(&f, 400, "empty_input", "'input' must not be an empty array");
            goto fail;
        }
        json_object *first = json_object_array_get_idx(input, 0);
        if (json_object_is_type(first, json_type_int)) ids_mode = 1, n = 1;       /* int[] */
        else if (json_object_is_type(first, json_type_array)) ids_mode = 2;       /* int[][] */
    } else {
        emb_failf(&f, 400, "invalid_input", "'input' must be a string, an array of strings, or token arrays");
        goto fail;
    }
    if (n > e->max_items) {
        emb_failf(&f, 413, "too_many_inputs", "%d inputs; limits.max_items is %d", n, e->max_items);
        goto fail;
    }
    if (ids_mode && !m->info->takes_ids) {
        emb_failf(&f, 400, "invalid_input",
              "model '%s' (%s) does not take token ids; send strings (token ids go to CLIP, BERT-style and "
              "Qwen3 models)", m->name, m->info->arch);
        goto fail;
    }
    if (mixed) {
        /* encoded above */
    } else if (ids_mode) {
        /* validate every sequence first, then encode TEXT_CHUNK at a time */
        for (int i = 0; i < n; i++) {
            json_object *seq = ids_mode == 1 ? input : json_object_array_get_idx(input, i);
            if (!json_object_is_type(seq, json_type_array)) {
                emb_failf(&f, 400, "invalid_input", "input[%d] must be an array of token ids", i);
                goto fail;
            }
            size_t len = json_object_array_length(seq);
            if (len == 0 || len > (size_t)m->max_tokens) {
                emb_failf(&f, 400, "invalid_input", "input[%d] has %zu tokens; model '%s' takes 1 to %d", i, len, m->name,
                      m->max_tokens);
                goto fail;
            }
            for (size_t k = 0; k < len; k++) {
                json_object *t = json_object_array_get_idx(seq, k);
                int64_t id = json_object_is_type(t, json_type_int) ? json_object_get_int64(t) : -1;
                if (id < 0 || id >= m->info->vocab_size) {
                    emb_failf(&f, 400, "invalid_input", "input[%d][%zu] is not a token id of model '%s' (0..%d)", i, k,
                          m->name, m->info->vocab_size - 1);
                    goto fail;
                }
            }
            e->lens[i] = (int)len;
            tokens += (long)len;
        }
        for (int base = 0; base < n; base += TEXT_CHUNK) {
            const int cn = MM_MIN(TEXT_CHUNK, n - base);
            for (int j = 0; j < cn; j++) {
                json_object *seq = ids_mode == 1 ? input : json_object_array_get_idx(input, base + j);
                int32_t *ids = e->ids + (size_t)j * e->max_tokens;
                for (int k = 0; k < e->lens[base + j]; k++)
                    ids[k] = (int32_t)json_object_get_int64(json_object_array_get_idx(seq, (size_t)k));
                e->idp[j] = ids;
                e->mlens[j] = e->lens[base + j];
            }
            float *dst = e->vecs + (size_t)base * m->info->dim;
            int rc = mm_encoder_encode_ids(m->run, e->idp, e->mlens, cn, dst);
            if (rc) {
                emb_failf(&f, mm_status_http(rc), NULL, "text encoder failed (%d)", rc);
                goto fail;
            }
        }
    } else {
        texts = calloc((size_t)n, sizeof *texts);
        lens = calloc((size_t)n, sizeof *lens);
        if (!texts || !lens) {
            emb_failf(&f, 500, NULL, "out of memory");
            goto fail;
        }
        for (int i = 0; i < n; i++) {
            json_object *t = json_object_is_type(input, json_type_string) ? input : json_object_array_get_idx(input, i);
            if (!json_object_is_type(t, json_type_string)) {
                emb_failf(&f, 400, "invalid_input", "input[%d] must be a string", i);
                goto fail;
            }
            texts[i] = json_object_get_string(t);
            lens[i] = (size_t)json_object_get_string_len(t);
            if (lens[i] == 0) {
                emb_failf(&f, 400, "empty_input", "input[%d] is an empty string", i);
                goto fail;
            }
        }
        if (emb_encode_texts_opts(e, m, texts, lens, n, e->vecs, &tokens, use_cache, &hits, &topt, &f)) goto fail;
        emb_set_x_cache(e, r, use_cache, hits, n);
    }
    mm_buf_t *b = &r->out;
    mm_buf_puts(b, "{\"object\":\"list\",\"data\":[");
    for (int i = 0; i < n; i++) {
        float *vec = e->vecs + (size_t)i * m->info->dim;
        if (normalize) mm_nn_l2_normalize(vec, dims);   /* truncation (dimensions) then unit length */
        mm_buf_printf(b, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":", i ? "," : "", i);
        if (b64) {
            mm_buf_puts(b, "\"");
            mm_base64_encode(b, vec, sizeof(float) * (size_t)dims);   /* x86-64: little-endian already */
            mm_buf_puts(b, "\"");
        } else {
            emb_write_vec(b, vec, dims);
        }
        mm_buf_puts(b, "}");
    }
    mm_buf_puts(b, "],\"model\":");
    mm_buf_json_str(b, m->name, strlen(m->name));
    mm_buf_printf(b, ",\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}\n", tokens, tokens);
    mm_http_respond_json(r, 200);
    json_object_put(j);
    free(texts);
    free(lens);
    return;
fail:
    json_object_put(j);
    free(texts);
    free(lens);
    emb_respond_fail(r, &f);
}

/* ---------------------------------------------------------------- /embed/text */

void mm_embed_text(mm_embed_t *e, mm_http_req_t *r)
{
    fail_t f = {0};
    if (!emb_is_json(r->content_type)) {
        mm_http_drain(r, e->conf->max_body_bytes);
        mm_http_error(r, 415, "unsupported_media_type", "send application/json: {\"texts\": [...]}");
        return;
    }
    const char **texts = NULL;
    size_t *lens = NULL;
    json_object *j = emb_read_json(e, r, &f), *arr;
    if (!j) goto fail;
    const char *model = NULL;
    int normalize = 1, use_cache = 1, hits = 0, dims;
    text_opts_t topt;
    if (emb_jstr(j, "model", &model, &f) || emb_jbool(j, "cache", &use_cache, &f)) goto fail;
    entry_t *m = emb_pick_model_for(e, model, 1, 0, MM_MOD_TEXT, &f);
    if (!m || emb_text_options(j, m, &dims, &normalize, &topt, &f)) goto fail;
    if (!json_object_object_get_ex(j, "texts", &arr) || !json_object_is_type(arr, json_type_array)) {
        emb_failf(&f, 400, "missing_texts", "'texts' must be an array of strings");
        goto fail;
    }
    int n = (int)json_object_array_length(arr);
    if (n == 0) {
        emb_failf(&f, 400, "empty_input", "'texts' is empty");
        goto fail;
    }
    if (n > e->max_items) {
        emb_failf(&f, 413, "too_many_inputs", "%d texts; limits.max_items is %d", n, e->max_items);
        goto fail;
    }
    texts = calloc((size_t)n, sizeof *texts);
    lens = calloc((size_t)n, sizeof *lens);
    if (!texts || !lens) {
        emb_failf(&f, 500, NULL, "out of memory");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        json_object *t = json_object_array_get_idx(arr, i);
        if (!json_object_is_type(t, json_type_string)) {
            emb_failf(&f, 400, "invalid_input", "texts[%d] must be a string", i);
            goto fail;
        }
        texts[i] = json_object_get_string(t);
        lens[i] = (size_t)json_object_get_string_len(t);
        if (!lens[i]) {
            emb_failf(&f, 400, "empty_input", "texts[%d] is an empty string", i);
            goto fail;
        }
    }
    long tokens = 0;
    if (emb_encode_texts_opts(e, m, texts, lens, n, e->vecs, &tokens, use_cache, &hits, &topt, &f)) goto fail;
    emb_set_x_cache(e, r, use_cache, hits, n);
    emb_begin_data(&r->out, m, dims);
    for (int i = 0; i < n; i++) {
        float *vec = e->vecs + (size_t)i * m->info->dim;
        if (normalize) mm_nn_l2_normalize(vec, dims);
        mm_buf_printf(&r->out, "%s{\"index\":%d,\"tokens\":%d,\"embedding\":", i ? "," : "", i, e->lens[i]);
        emb_write_vec(&r->out, vec, dims);
        mm_buf_puts(&r->out, "}");
    }
    mm_buf_printf(&r->out, "],\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}\n", tokens, tokens);
    mm_http_respond_json(r, 200);
    json_object_put(j);
    free(texts);
    free(lens);
    return;
fail:
    json_object_put(j);
    free(texts);
    free(lens);
    emb_respond_fail(r, &f);
}

