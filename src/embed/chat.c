/* One-sequence inputs of chat-prompted models (Qwen2-VL: Ops-MM-embedding-v1,
 * GME): a text and its images become one prompt (mm_encoder_chat_input),
 * each image decoded at full size and resized by the model's own rule
 * (smart_resize), so the vector is the model's joint embedding of all of
 * them — not a mean of separate vectors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "mmembed/image.h"

#define MAX_CHAT_IMAGES 64   /* images (frames) in one sequence */

/* The cache key: model, generation, "chat", the instruction, the text and
 * every image's bytes, each length-prefixed (add_input), so no two inputs
 * share a key. */
static void chat_key(const mm_embed_t *e, const entry_t *m, const chat_item_t *it, const text_opts_t *o,
                     mm_cache_key_t *k)
{
    mm_cache_key_init(k, e->cache);
    mm_cache_key_add_str(k, m->name);
    mm_cache_key_add_int(k, e->generation);
    mm_cache_key_add_str(k, "chat");
    mm_cache_key_add_int(k, o->prefix_len > 0);
    mm_cache_key_add_input(k, o->prefix, o->prefix_len);
    mm_cache_key_add_input(k, it->text ? it->text : "", it->text ? it->text_len : 0);
    mm_cache_key_add_int(k, it->n_images);
    for (int i = 0; i < it->n_images; i++) {
        mm_cache_key_add_int(k, it->rgb_w ? it->rgb_w[i] : -1);
        mm_cache_key_add_int(k, it->rgb_h ? it->rgb_h[i] : -1);
        mm_cache_key_add_input(k, it->bufs[i], it->rgb_w ? (size_t)it->rgb_w[i] * it->rgb_h[i] * 3 : it->lens[i]);
    }
}

int emb_encode_chat(mm_embed_t *e, entry_t *m, const chat_item_t *it, const text_opts_t *o, float *out, long *tokens,
                    int use_cache, int *hits, int idx, fail_t *f)
{
    if (!m->info->chat)
        return emb_failf(f, 422, "not_supported", "model '%s' cannot embed text and images in one sequence", m->name);
    const int n = it->n_images;
    if (n < 0 || n > MAX_CHAT_IMAGES)
        return emb_failf(f, 413, "too_many_images", "input %d has %d images; at most %d go in one sequence", idx, n,
                         MAX_CHAT_IMAGES);
    if (n && !m->pre)
        return emb_failf(f, 422, "no_vision_tower", "model '%s' cannot embed images", m->name);
    mm_cache_key_t ck;
    if (use_cache && e->cache) {
        chat_key(e, m, it, o, &ck);
        if (mm_cache_get(e->cache, &ck, out, m->info->dim) == 1) {
            ++*hits;
            return 0;
        }
    }
    float *pix[MAX_CHAT_IMAGES] = {0};
    int hw[MAX_CHAT_IMAGES][2], visual = 0, rc = 0, nseg = 0;
    mm_segment_t seg[2 * MAX_CHAT_IMAGES + 1];
    char err[MM_ERRLEN];
    double t0 = emb_ms_now();
    for (int i = 0; i < n; i++) {
        mm_image_t img;
        if (it->rgb_w) {   /* a video frame, decoded already */
            img = (mm_image_t){.w = it->rgb_w[i], .h = it->rgb_h[i], .src_w = it->rgb_w[i], .src_h = it->rgb_h[i],
                               .rgb = (unsigned char *)it->bufs[i]};
            goto sized;
        }
        if (it->lens[i] == 0) {
            rc = emb_failf(f, 400, "empty_image", "input %d: image %d is empty", idx, i);
            goto out;
        }
        int drc = mm_image_decode(it->bufs[i], it->lens[i], 0, (long)e->conf->max_pixels, &img, err, sizeof err);
        if (drc == MM_E_TOOBIG) {
            rc = emb_failf(f, 413, "image_too_large", "input %d: image %d: %s (limits.max_pixels is %lld)", idx, i, err,
                           (long long)e->conf->max_pixels);
            goto out;
        }
        if (drc) {
            rc = emb_failf(f, mm_status_http(drc), drc == MM_E_UNSUPPORTED ? "unsupported_image"
                                                   : drc == MM_E_TIMEOUT   ? "image_budget_exceeded"
                                                                           : "invalid_image",
                           "input %d: image %d: %s", idx, i, err);
            goto out;
        }
    sized:
        /* smart_resize: sides multiples of 28, the pixel count clamped; HF
         * refuses an aspect ratio over 200 and so do we (422) */
        drc = mm_preproc_out_dims(m->pre, img.src_w, img.src_h, &hw[i][0], &hw[i][1]);
        if (drc) {
            rc = emb_failf(f, 422, "invalid_image",
                           "input %d: image %d (%dx%d): the model takes aspect ratios up to 200:1", idx, i, img.src_w,
                           img.src_h);
            if (!it->rgb_w)
                mm_image_free(&img);
            goto out;
        }
        visual += hw[i][0] / 28 * (hw[i][1] / 28);
        if (!(pix[i] = malloc(sizeof(float) * 3 * (size_t)hw[i][0] * hw[i][1]))) {
            if (!it->rgb_w)
                mm_image_free(&img);
            rc = emb_failf(f, 500, NULL, "out of memory");
            goto out;
        }
        drc = mm_preproc_run(m->pre, &img, pix[i]);
        if (!it->rgb_w)
            mm_image_free(&img);
        if (drc) {
            rc = emb_failf(f, mm_status_http(drc), "invalid_image", "input %d: image %d: preprocessing failed", idx, i);
            goto out;
        }
    }
    int32_t *ids = e->ids;   /* room for e->max_tokens >= the model's */
    int crc = mm_encoder_chat_input(m->enc, o->prefix_len ? o->prefix : NULL, o->prefix_len, it->text,
                                    it->text ? it->text_len : 0, n, visual, o->truncate, ids, m->max_tokens, seg,
                                    &nseg, err, sizeof err);
    if (crc == MM_E_TOOBIG) {
        rc = emb_failf(f, 422, "input_too_long", "input %d: %s (model '%s' takes %d tokens; its images take %d)", idx,
                       err, m->name, m->max_tokens, visual);
        goto out;
    }
    if (crc) {
        rc = emb_failf(f, mm_status_http(crc), NULL, "input %d: %s", idx, err);
        goto out;
    }
    long seq = visual;
    for (int s = 0; s < nseg; s++) {
        if (seg[s].kind == MM_SEG_TEXT) {
            seq += seg[s].n_ids;
            continue;
        }
        const int i = s / 2;
        seg[s].pixels = pix[i];
        seg[s].channels = 3;
        seg[s].height = hw[i][0];
        seg[s].width = hw[i][1];
    }
    double t1 = emb_ms_now();
    const mm_input_t in = {.seg = seg, .n_seg = nseg};
    int mrc = mm_encoder_encode(m->run, &in, 1, out);
    e->t_decode += t1 - t0;
    e->t_model += emb_ms_now() - t1;
    if (mrc) {
        rc = mrc == MM_E_AGAIN || mrc == MM_E_TIMEOUT
                 ? emb_encoder_fail(f, mrc, "the model")
                 : emb_failf(f, mm_status_http(mrc), mrc == MM_E_TOOBIG ? "input_too_long" : NULL,
                             "input %d: the model failed (%d)", idx, mrc);
        goto out;
    }
    *tokens += seq;
    if (use_cache && e->cache)
        mm_cache_put(e->cache, &ck, out, m->info->dim);
out:
    for (int i = 0; i < n; i++)
        free(pix[i]);
    return rc;
}
