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

int emb_encoder_fail(fail_t *f, int rc, const char *what)
{
    /* from a model's executor (docs/GPU.md): its queue is full or it is restarting */
    if (rc == MM_E_AGAIN)
        return emb_failf(f, 503, "executor_unavailable", "the model's executor is busy or restarting; retry shortly");
    if (rc == MM_E_TIMEOUT)
        return emb_failf(f, 504, "executor_timeout", "the model's executor did not answer within request_timeout");
    return emb_failf(f, mm_status_http(rc), NULL, "%s failed (%d)", what, rc);
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

/* ---------------------------------------------------------------- texts, packed across requests */

/* The encoder pass being filled: which item and input each row is, and
 * each row's cache key. Rows of one item are contiguous and the current
 * item's are last, so a failing item takes its rows back by shrinking np. */
typedef struct {
    int np;                          /* rows */
    long tokens;                     /* their tokens */
    text_item_t *item[TEXT_CHUNK];
    int input[TEXT_CHUNK];
    mm_cache_key_t key[TEXT_CHUNK];  /* when the item uses the cache */
} pass_t;

/* Run the pass through the encoder and hand each row's vector back. */
static void flush_pass(mm_embed_t *e, entry_t *m, pass_t *p)
{
    if (p->np == 0) return;
    const int d = m->info->dim;
    int mrc = mm_encoder_encode_ids(m->run, e->idp, e->mlens, p->np, e->tmp);
    for (int q = 0; q < p->np; q++) {
        text_item_t *it = p->item[q];
        if (it->failed) continue;
        if (mrc) {
            it->failed = 1;
            emb_encoder_fail(&it->f, mrc, "text encoder");
            continue;
        }
        float *dst = it->out + (size_t)p->input[q] * d;
        memcpy(dst, e->tmp + (size_t)q * d, sizeof(float) * (size_t)d);
        if (it->use_cache && e->cache) mm_cache_put(e->cache, &p->key[q], dst, d);
    }
    p->np = 0;
    p->tokens = 0;
}

/* Tokenize (or copy) one item's inputs into the pass, flushing it when
 * full. On a failure the item's rows still in the pass are taken back. */
static void add_item(mm_embed_t *e, entry_t *m, text_item_t *it, pass_t *p, char **buf, size_t *cap)
{
    const int d = m->info->dim;
    if (!it->ids && emb_check_text_sizes(e, it->lens, it->n, &it->o, &it->f)) {
        it->failed = 1;
        return;
    }
    const int cache = it->use_cache && e->cache && !it->ids;   /* token ids are not cached */
    int start = p->np;                     /* this item's rows in the current pass start here */
    long start_tokens = p->tokens;
    for (int i = 0; i < it->n; i++) {
        const int j = p->np;
        int32_t *ids = e->ids + (size_t)j * e->max_tokens;
        const char *eff = NULL;
        size_t efl = 0;
        if (it->ids) {
            memcpy(ids, it->ids[i], sizeof(int32_t) * (size_t)it->id_lens[i]);
            it->ntok[i] = it->id_lens[i];
        } else {
            /* the text the model sees: instruction + text, tokenized and cached as one string */
            eff = it->texts[i];
            efl = it->lens[i];
            if (it->o.prefix_len) {
                efl += it->o.prefix_len;   /* bounded by emb_check_text_sizes */
                if (efl > *cap) {
                    free(*buf);
                    *cap = efl;
                    if (!(*buf = malloc(*cap))) {
                        *cap = 0;
                        emb_failf(&it->f, 500, NULL, "out of memory");
                        goto fail;
                    }
                }
                memcpy(*buf, it->o.prefix, it->o.prefix_len);
                memcpy(*buf + it->o.prefix_len, it->texts[i], it->lens[i]);
                eff = *buf;
            }
            if (emb_tokenize_one(e, m, eff, efl, ids, &it->ntok[i], i, &it->o, &it->f)) goto fail;
        }
        it->tokens += it->ntok[i];
        if (cache) {
            emb_input_key(e, m->name, "text", eff, efl, &p->key[j]);
            if (mm_cache_get(e->cache, &p->key[j], it->out + (size_t)i * d, d) == 1) {
                it->hits++;
                continue;
            }
        }
        e->idp[j] = ids;
        e->mlens[j] = it->ntok[i];
        p->item[j] = it;
        p->input[j] = i;
        p->tokens += it->ntok[i];
        p->np++;
        if (p->np == TEXT_CHUNK || p->tokens >= TEXT_CHUNK_TOKENS) {
            flush_pass(e, m, p);
            if (it->failed) return;
            start = 0;
            start_tokens = 0;
        }
    }
    return;
fail:
    it->failed = 1;
    p->np = start;   /* its rows since the last flush leave the pass */
    p->tokens = start_tokens;
}

/* A chat-prompted model (Qwen2-VL) builds each text's whole prompt around
 * it, so its texts go one by one through emb_encode_chat (with the cache). */
static void chat_texts(mm_embed_t *e, entry_t *m, text_item_t *it)
{
    if (emb_check_text_sizes(e, it->lens, it->n, &it->o, &it->f)) {
        it->failed = 1;
        return;
    }
    for (int i = 0; i < it->n; i++) {
        const chat_item_t ci = {.text = it->texts[i], .text_len = it->lens[i]};
        long before = it->tokens;
        if (emb_encode_chat(e, m, &ci, &it->o, it->out + (size_t)i * m->info->dim, &it->tokens, it->use_cache,
                            &it->hits, i, &it->f)) {
            it->failed = 1;
            return;
        }
        it->ntok[i] = (int)(it->tokens - before);
    }
}

void emb_encode_text_items(mm_embed_t *e, text_item_t *const *items, int n)
{
    pass_t *p = malloc(sizeof *p);
    char *buf = NULL;
    size_t cap = 0;
    for (int i = 0; i < n; i++)
        if (!p && !items[i]->failed) {
            items[i]->failed = 1;
            emb_failf(&items[i]->f, 500, NULL, "out of memory");
        }
    for (int g = 0; p && g < n; g++) {   /* one group per model, in order of first appearance */
        entry_t *m = items[g]->m;
        int seen = 0;
        for (int k = 0; k < g && !seen; k++) seen = items[k]->m == m;
        if (seen) continue;
        p->np = 0;
        p->tokens = 0;
        for (int i = g; i < n; i++) {
            text_item_t *it = items[i];
            if (it->m != m || it->failed) continue;
            if (!m->info->has_text) {
                it->failed = 1;
                emb_failf(&it->f, 422, "no_text_tower", "model '%s' cannot embed text", m->name);
                continue;
            }
            if (m->info->chat && !it->ids) {   /* the instruction is the system prompt: one prompt per text */
                chat_texts(e, m, it);
                continue;
            }
            add_item(e, m, it, p, &buf, &cap);
        }
        flush_pass(e, m, p);
    }
    free(buf);
    free(p);
}

int emb_encode_texts_opts(mm_embed_t *e, entry_t *m, const char *const *texts, const size_t *lens, int n,
                             float *out, long *tokens, int use_cache, int *hits, const text_opts_t *o, fail_t *f)
{
    text_item_t it = {.m = m, .n = n, .texts = texts, .lens = lens, .o = *o, .use_cache = use_cache, .out = out,
                      .ntok = e->lens};
    text_item_t *one = &it;
    emb_encode_text_items(e, &one, 1);
    *tokens += it.tokens;
    *hits += it.hits;
    if (it.failed) {
        *f = it.f;
        return -1;
    }
    return 0;
}
int emb_encode_texts(mm_embed_t *e, entry_t *m, const char *const *texts, const size_t *lens, int n,
                        float *out, long *tokens, int use_cache, int *hits, fail_t *f)
{
    return emb_encode_texts_opts(e, m, texts, lens, n, out, tokens, use_cache, hits, &emb_default_text_opts, f);
}

/* ---------------------------------------------------------------- images, packed across requests */

/* The image pass being filled: e->pix row q holds image input[q] of
 * item[q]. Rows of one item are contiguous and the current item's are
 * last, so a failing item takes its rows back by shrinking np. */
typedef struct {
    int np;
    image_item_t *item[IMG_CHUNK];
    int input[IMG_CHUNK];
} img_pass_t;

static void flush_images(mm_embed_t *e, entry_t *m, img_pass_t *p)
{
    if (p->np == 0) return;
    const int d = m->info->dim;
    double t0 = emb_ms_now();
    int rc = mm_encoder_encode_pixels(m->run, e->pix, p->np, e->tmp);
    double share = (emb_ms_now() - t0) / p->np;
    mm_cache_key_t ck;
    for (int q = 0; q < p->np; q++) {
        image_item_t *it = p->item[q];
        const int i = p->input[q];
        it->t_model += share;
        if (it->failed) continue;
        if (rc) {
            it->failed = 1;
            emb_encoder_fail(&it->f, rc, "image encoder");
            continue;
        }
        memcpy(it->out + (size_t)i * d, e->tmp + (size_t)q * d, sizeof(float) * (size_t)d);
        if (it->use_cache && e->cache) {
            emb_input_key(e, m->name, "image", it->bufs[i], it->lens[i], &ck);
            mm_cache_put(e->cache, &ck, it->out + (size_t)i * d, d);
        }
    }
    p->np = 0;
}

/* Decode and preprocess image i of it into the next row (its own budget). */
static int decode_row(mm_embed_t *e, entry_t *m, image_item_t *it, int i, float *pix)
{
    char err[MM_ERRLEN];
    mm_image_t img;
    fail_t *f = &it->f;
    if (it->lens[i] == 0) return emb_failf(f, 400, "empty_image", "image %d is empty", i);
    const int edge = mm_preproc_min_edge(m->pre), fast = e->conf->jpeg_dct_scaling;
    double t0 = emb_ms_now();
    mm_image_budget_resume(it->budget_left);
    int rc = fast > 0 && edge > 0
                 ? mm_image_decode_keep(it->bufs[i], it->lens[i], fast * edge, (long)e->conf->max_pixels, &img, err,
                                        sizeof err)
                 : mm_image_decode(it->bufs[i], it->lens[i], edge, (long)e->conf->max_pixels, &img, err, sizeof err);
    it->budget_left = mm_image_budget_left();
    if (rc == MM_E_TOOBIG)
        return emb_failf(f, 413, "image_too_large", "image %d: %s (limits.max_pixels is %lld)", i, err,
                         (long long)e->conf->max_pixels);
    if (rc) return emb_failf(f, mm_status_http(rc), rc == MM_E_UNSUPPORTED ? "unsupported_image"
                                                    : rc == MM_E_TIMEOUT   ? "image_budget_exceeded"
                                                                           : "invalid_image",
                             "image %d: %s", i, err);
    rc = mm_preproc_run(m->pre, &img, pix);
    mm_image_free(&img);
    it->t_decode += emb_ms_now() - t0;
    if (rc) return emb_failf(f, mm_status_http(rc), "invalid_image", "image %d: preprocessing failed", i);
    return 0;
}

/* Cache lookups, then each miss into the pass, flushing it when full. */
static void add_images(mm_embed_t *e, entry_t *m, image_item_t *it, img_pass_t *p)
{
    const int d = m->info->dim;
    const size_t per = (size_t)m->info->channels * m->info->image_size * m->info->image_size;
    int nm = 0;
    mm_cache_key_t ck;
    for (int i = 0; i < it->n; i++) {
        if (it->use_cache && e->cache && it->lens[i]) {
            emb_input_key(e, m->name, "image", it->bufs[i], it->lens[i], &ck);
            if (mm_cache_get(e->cache, &ck, it->out + (size_t)i * d, d) == 1) {
                it->hits++;
                continue;
            }
        }
        e->miss[nm++] = i;   /* max_vecs >= max_items >= n */
    }
    int start = p->np;
    for (int k = 0; k < nm; k++) {
        const int i = e->miss[k];
        if (decode_row(e, m, it, i, e->pix + (size_t)p->np * per)) {
            it->failed = 1;
            p->np = start;   /* its rows since the last flush leave the pass */
            return;
        }
        p->item[p->np] = it;
        p->input[p->np] = i;
        if (++p->np == IMG_CHUNK) {
            flush_images(e, m, p);
            if (it->failed) return;
            start = 0;
        }
    }
}

/* A chat-prompted model: each image its own prompt, at its own size. */
static void chat_images(mm_embed_t *e, entry_t *m, image_item_t *it)
{
    const double d0 = e->t_decode, m0 = e->t_model;
    long tokens = 0;
    mm_image_budget_resume(it->budget_left);
    for (int i = 0; i < it->n && !it->failed; i++) {
        const chat_item_t ci = {.bufs = &it->bufs[i], .lens = &it->lens[i], .n_images = 1};
        if (emb_encode_chat(e, m, &ci, &emb_default_text_opts, it->out + (size_t)i * m->info->dim, &tokens,
                            it->use_cache, &it->hits, i, &it->f))
            it->failed = 1;
    }
    it->budget_left = mm_image_budget_left();
    it->t_decode += e->t_decode - d0;
    it->t_model += e->t_model - m0;
    e->t_decode = d0;
    e->t_model = m0;
}

void emb_encode_image_items(mm_embed_t *e, image_item_t *const *items, int n)
{
    img_pass_t p;
    for (int g = 0; g < n; g++) {   /* one group per model, in order of first appearance */
        entry_t *m = items[g]->m;
        int seen = 0;
        for (int k = 0; k < g && !seen; k++) seen = items[k]->m == m;
        if (seen) continue;
        p.np = 0;
        for (int i = g; i < n; i++) {
            image_item_t *it = items[i];
            if (it->m != m || it->failed) continue;
            if (!m->info->has_vision) {
                it->failed = 1;
                emb_failf(&it->f, 422, "no_vision_tower", "model '%s' cannot embed images", m->name);
            } else if (m->info->chat) {
                chat_images(e, m, it);
            } else {
                add_images(e, m, it, &p);
            }
        }
        flush_images(e, m, &p);
    }
}

int emb_encode_images(mm_embed_t *e, entry_t *m, const unsigned char *const *bufs, const size_t *lens, int n,
                      float *out, int use_cache, int *hits, fail_t *f)
{
    image_item_t it = {.m = m, .n = n, .bufs = bufs, .lens = lens, .use_cache = use_cache, .out = out,
                       .budget_left = mm_image_budget_left()};
    image_item_t *one = &it;
    emb_encode_image_items(e, &one, 1);
    mm_image_budget_resume(it.budget_left);
    *hits += it.hits;
    e->t_decode += it.t_decode;
    e->t_model += it.t_model;
    if (it.failed) {
        *f = it.f;
        return -1;
    }
    return 0;
}
