/* The encode loop: texts (instruction, limits, tokenizer, TEXT_CHUNK at a
 * time) and images (decode, preprocess, IMG_CHUNK at a time) through the
 * shared cache and the model's encoder. */
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "mmembed/image.h"
#include "mmembed/nn.h"


/* The cache key of one input: model, config generation, modality, and the
 * bytes the client sent (so a hit skips decoding and tokenizing's model
 * work). Vectors are cached raw, before normalize/dimensions, so those
 * options need not be part of the key. */
void emb_input_key(const mm_embed_t *e, const char *model, const char *modality, const void *p, size_t n,
                      mm_cache_key_t *k)
{
    mm_cache_key_init(k, e->cache);
    mm_cache_key_add_str(k, model);
    mm_cache_key_add_int(k, e->generation);
    mm_cache_key_add_str(k, modality);
    mm_cache_key_add_input(k, p, n);
}


/* Check what every text costs before any of them is tokenized: the
 * instruction counts against the limits like the text it is prepended to
 * (it reaches the tokenizer once per input), and the request as a whole may
 * not make the tokenizer read more than limits.max_request_text_bytes (a
 * small body with a long instruction and many inputs must not cost more
 * than that). Sizes are 64-bit with checked sums: request data never
 * drives an int offset. */
int emb_check_text_sizes(const mm_embed_t *e, const size_t *lens, int n, const text_opts_t *o, fail_t *f)
{
    const uint64_t max_text = (uint64_t)e->conf->max_text_bytes, max_total = (uint64_t)e->conf->max_request_text_bytes;
    if (o->prefix_len > max_text)
        return emb_failf(f, 413, "instruction_too_long", "the instruction is %zu bytes; limits.max_text_bytes is %llu",
                     o->prefix_len, (unsigned long long)max_text);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        uint64_t one = (uint64_t)o->prefix_len + lens[i];   /* both <= SIZE_MAX / 2: no wrap */
        if (one > max_text)
            return emb_failf(f, 413, "text_too_long", o->prefix_len ? "input %d is %llu bytes with its instruction; "
                                                                  "limits.max_text_bytes is %llu"
                                                                : "input %d is %llu bytes; limits.max_text_bytes is %llu",
                         i, (unsigned long long)one, (unsigned long long)max_text);
        total += one;
        if (total > max_total)
            return emb_failf(f, 413, "request_too_large",
                         "the inputs%s come to more than limits.max_request_text_bytes (%llu bytes) of text",
                         o->prefix_len ? " with the instruction prepended to each" : "",
                         (unsigned long long)max_total);
    }
    return 0;
}

/* Tokenize text i of a chunk into ids (room for e->max_tokens). */
int emb_tokenize_one(mm_embed_t *e, entry_t *m, const char *t, size_t tl, int32_t *ids, int *len, int idx,
                        const text_opts_t *o, fail_t *f)
{
    (void)e;
    char err[MM_ERRLEN];
    int trc = mm_encoder_tokenize(m->enc, t, tl, m->max_tokens, o->truncate, ids, len, err, sizeof err);
    if (trc == MM_E_TOOBIG && !o->truncate)
        return emb_failf(f, 422, "input_too_long", "input %d is longer than the %d tokens model '%s' takes (truncate is false)",
                     idx, m->max_tokens, m->name);
    if (trc) return emb_failf(f, mm_status_http(trc), NULL, "input %d: %s", idx, err);
    return 0;
}

/* Tokenize and encode n texts (up to limits.max_items) into out (n, dim),
 * TEXT_CHUNK at a time, so the run state stays the size of one chunk
 * whatever n is. e->lens[i] receives each text's token count. */
int emb_encode_texts_opts(mm_embed_t *e, entry_t *m, const char *const *texts, const size_t *lens, int n,
                             float *out, long *tokens, int use_cache, int *hits, const text_opts_t *o, fail_t *f)
{
    if (!m->info->has_text) return emb_failf(f, 422, "no_text_tower", "model '%s' cannot embed text", m->name);
    if (emb_check_text_sizes(e, lens, n, o, f)) return -1;
    if (m->info->chat) {   /* the instruction is the system prompt, not a prefix: one prompt per text */
        const int d = m->info->dim;
        for (int i = 0; i < n; i++) {
            const chat_item_t it = {.text = texts[i], .text_len = lens[i]};
            long before = *tokens;
            if (emb_encode_chat(e, m, &it, o, out + (size_t)i * d, tokens, use_cache, hits, i, f)) return -1;
            e->lens[i] = (int)(*tokens - before);
        }
        return 0;
    }
    const int d = m->info->dim, chunk = MM_MIN(n, TEXT_CHUNK);
    int rc = 0;
    /* the texts the model sees: instruction + text, tokenized and cached as one string */
    const char **eff = calloc((size_t)MM_MAX(chunk, 1), sizeof *eff);
    size_t *efl = calloc((size_t)MM_MAX(chunk, 1), sizeof *efl);
    char *joined = NULL;
    size_t joined_cap = 0;
    if (!eff || !efl) {
        rc = emb_failf(f, 500, NULL, "out of memory");
        goto out;
    }
    mm_cache_key_t k;
    for (int base = 0; base < n; base += TEXT_CHUNK) {
        const int cn = MM_MIN(TEXT_CHUNK, n - base);
        size_t need = 0, off = 0;
        for (int j = 0; j < cn; j++) need += o->prefix_len + lens[base + j];   /* bounded by emb_check_text_sizes */
        if (o->prefix_len && need + 1 > joined_cap) {
            free(joined);
            joined_cap = need + 1;
            if (!(joined = malloc(joined_cap))) {
                rc = emb_failf(f, 500, NULL, "out of memory");
                goto out;
            }
        }
        int nm = 0;
        for (int j = 0; j < cn; j++) {
            const int i = base + j;
            eff[j] = texts[i];
            efl[j] = lens[i];
            if (o->prefix_len) {
                memcpy(joined + off, o->prefix, o->prefix_len);
                memcpy(joined + off + o->prefix_len, texts[i], lens[i]);
                eff[j] = joined + off;
                efl[j] += o->prefix_len;
                off += efl[j];
            }
            int32_t *ids = e->ids + (size_t)j * e->max_tokens;
            if ((rc = emb_tokenize_one(e, m, eff[j], efl[j], ids, &e->lens[i], i, o, f))) goto out;
            *tokens += e->lens[i];
            if (use_cache && e->cache) {
                emb_input_key(e, m->name, "text", eff[j], efl[j], &k);
                if (mm_cache_get(e->cache, &k, out + (size_t)i * d, d) == 1) {
                    ++*hits;
                    continue;
                }
            }
            e->idp[nm] = ids;
            e->mlens[nm] = e->lens[i];
            e->miss[nm++] = j;
        }
        if (nm == 0) continue;
        int mrc = mm_encoder_encode_ids(m->run, e->idp, e->mlens, nm, e->tmp);
        if (mrc) {
            rc = emb_failf(f, mm_status_http(mrc), NULL, "text encoder failed (%d)", mrc);
            goto out;
        }
        for (int q = 0; q < nm; q++) {
            const int j = e->miss[q], i = base + j;
            memcpy(out + (size_t)i * d, e->tmp + (size_t)q * d, sizeof(float) * (size_t)d);
            if (use_cache && e->cache) {
                emb_input_key(e, m->name, "text", eff[j], efl[j], &k);
                mm_cache_put(e->cache, &k, out + (size_t)i * d, d);
            }
        }
    }
out:
    free(eff);
    free(efl);
    free(joined);
    return rc;
}

int emb_encode_texts(mm_embed_t *e, entry_t *m, const char *const *texts, const size_t *lens, int n,
                        float *out, long *tokens, int use_cache, int *hits, fail_t *f)
{
    return emb_encode_texts_opts(e, m, texts, lens, n, out, tokens, use_cache, hits, &emb_default_text_opts, f);
}

/* Decode, preprocess and encode n images (chunks of IMG_CHUNK) into out. */
int emb_encode_images(mm_embed_t *e, entry_t *m, const unsigned char *const *bufs, const size_t *lens, int n,
                         float *out, int use_cache, int *hits, fail_t *f)
{
    if (!m->info->has_vision) return emb_failf(f, 422, "no_vision_tower", "model '%s' cannot embed images", m->name);
    if (m->info->chat) {   /* each image its own prompt, at its own size */
        long tokens = 0;
        for (int i = 0; i < n; i++) {
            const chat_item_t it = {.bufs = &bufs[i], .lens = &lens[i], .n_images = 1};
            if (emb_encode_chat(e, m, &it, &emb_default_text_opts, out + (size_t)i * m->info->dim, &tokens, use_cache,
                                hits, i, f))
                return -1;
        }
        return 0;
    }
    size_t per = (size_t)m->info->channels * m->info->image_size * m->info->image_size;
    char err[MM_ERRLEN];
    int d = m->info->dim, nm = 0;
    mm_cache_key_t ck;
    for (int i = 0; i < n; i++) {
        if (use_cache && e->cache && lens[i]) {
            emb_input_key(e, m->name, "image", bufs[i], lens[i], &ck);
            if (mm_cache_get(e->cache, &ck, out + (size_t)i * d, d) == 1) {
                ++*hits;
                continue;
            }
        }
        e->miss[nm++] = i;
    }
    for (int base = 0; base < nm; base += IMG_CHUNK) {
        int k = MM_MIN(IMG_CHUNK, nm - base);
        double t0 = emb_ms_now();
        for (int j = 0; j < k; j++) {
            mm_image_t img;
            int i = e->miss[base + j];
            if (lens[i] == 0) return emb_failf(f, 400, "empty_image", "image %d is empty", i);
            const int edge = mm_preproc_min_edge(m->pre), fast = e->conf->jpeg_dct_scaling;
            int rc = fast > 0 && edge > 0
                         ? mm_image_decode_keep(bufs[i], lens[i], fast * edge, (long)e->conf->max_pixels, &img, err,
                                                sizeof err)
                         : mm_image_decode(bufs[i], lens[i], edge, (long)e->conf->max_pixels, &img, err, sizeof err);
            if (rc == MM_E_TOOBIG)
                return emb_failf(f, 413, "image_too_large", "image %d: %s (limits.max_pixels is %lld)", i, err,
                             (long long)e->conf->max_pixels);
            if (rc) return emb_failf(f, mm_status_http(rc), rc == MM_E_UNSUPPORTED ? "unsupported_image"
                                                        : rc == MM_E_TIMEOUT   ? "image_budget_exceeded"
                                                                               : "invalid_image",
                                 "image %d: %s", i, err);
            rc = mm_preproc_run(m->pre, &img, e->pix + (size_t)j * per);
            mm_image_free(&img);
            if (rc) return emb_failf(f, mm_status_http(rc), "invalid_image", "image %d: preprocessing failed", i);
        }
        double t1 = emb_ms_now();
        int rc = mm_encoder_encode_pixels(m->run, e->pix, k, e->tmp);
        e->t_decode += t1 - t0;
        e->t_model += emb_ms_now() - t1;
        if (rc) return emb_failf(f, mm_status_http(rc), NULL, "image encoder failed (%d)", rc);
        for (int j = 0; j < k; j++) {
            int i = e->miss[base + j];
            memcpy(out + (size_t)i * d, e->tmp + (size_t)j * d, sizeof(float) * (size_t)d);
            if (use_cache && e->cache) {
                emb_input_key(e, m->name, "image", bufs[i], lens[i], &ck);
                mm_cache_put(e->cache, &ck, out + (size_t)i * d, d);
            }
        }
    }
    return 0;
}

