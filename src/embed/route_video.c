/* POST /embed/video: frames sampled from one video, pooled. */
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "mmembed/nn.h"
#include "mmembed/video.h"

/* ---------------------------------------------------------------- /embed/video */

enum { POOL_MEAN, POOL_MAX, POOL_FIRST };

void mm_embed_video(mm_embed_t *e, mm_http_req_t *r)
{
    fail_t f = {0};
    form_t fm;
    mm_video_t v;
    memset(&v, 0, sizeof v);
    memset(&fm, 0, sizeof fm);
    entry_t *m = NULL;
    if (!emb_is_multipart(r->content_type)) {
        mm_http_drain(r, e->conf->max_body_bytes);
        mm_http_error(r, 415, "unsupported_media_type", "send multipart/form-data with a video file part");
        return;
    }
    if (emb_read_form(e, r, &fm, &f)) goto fail;
    const part_t *file = NULL, *p;
    for (int i = 0; i < fm.n; i++)
        if (fm.parts[i].is_file) {
            if (file) {
                emb_failf(&f, 400, "too_many_videos", "send exactly one video file per request");
                goto fail;
            }
            file = &fm.parts[i];
        }
    if (!file) {
        emb_failf(&f, 400, "missing_video", "no video file part was sent");
        goto fail;
    }
    if (!file->data.len) {
        emb_failf(&f, 400, "empty_video", "the video file is empty");
        goto fail;
    }
    int normalize = 1, return_frames = 0, pooling = POOL_MEAN, frames = e->conf->default_frames;
    if (emb_form_bool(&fm, "normalize", &normalize, &f) || emb_form_bool(&fm, "return_frames", &return_frames, &f))
        goto fail;
    if ((p = emb_form_field(&fm, "pooling"))) {
        const char *pv = p->data.data ? p->data.data : "";
        if (!strcmp(pv, "mean")) pooling = POOL_MEAN;
        else if (!strcmp(pv, "max")) pooling = POOL_MAX;
        else if (!strcmp(pv, "first")) pooling = POOL_FIRST;
        else {
            emb_failf(&f, 400, "invalid_parameter", "field 'pooling' must be mean, max or first");
            goto fail;
        }
    }
    if (emb_form_int(&fm, "max_frames", &frames, &f)) goto fail;
    if (frames > e->conf->max_frames) {
        emb_failf(&f, 422, "too_many_frames", "max_frames %d is over limits.max_frames (%d)", frames, e->conf->max_frames);
        goto fail;
    }
    if (!(m = emb_pick_model_for(e, (p = emb_form_field(&fm, "model")) && p->data.len ? p->data.data : NULL, 0, 1, MM_MOD_VIDEO, &f)))
        goto fail;
    if (!m->info->has_vision) {
        emb_failf(&f, 422, "no_vision_tower", "model '%s' cannot embed video", m->name);
        goto fail;
    }
    mm_video_limits_t lim = {.max_bytes = (long)e->conf->max_body_bytes, .max_seconds = e->conf->max_video_seconds,
                             .max_pixels = (long)e->conf->max_pixels, .max_frames = e->conf->max_frames,
                             .budget_seconds = e->conf->video_budget,
                             .min_edge_hint = mm_preproc_min_edge(m->pre), .threads = 1};
    char err[MM_ERRLEN];
    int64_t t0 = mm_now_us();
    int rc = mm_video_sample(file->data.data, file->data.len, frames, &lim, &v, err, sizeof err);
    if (rc) {
        const char *code = rc == MM_E_TIMEOUT ? "video_budget_exceeded" : rc == MM_E_UNSUPPORTED ? "unsupported_video"
                         : rc == MM_E_TOOBIG ? "video_too_large" : rc == MM_E_UNPROCESSABLE ? "unprocessable_video"
                         : "invalid_video";
        emb_failf(&f, mm_status_http(rc), code, "video: %s", err);
        goto fail;
    }
    int64_t t1 = mm_now_us();
    int d = m->info->dim;
    size_t per = (size_t)m->info->channels * m->info->image_size * m->info->image_size;
    float *pooled = e->vecs + (size_t)v.n * d;
    /* a chat-prompted model (Qwen2-VL) reads the frames as several images
     * of ONE input (pooling "sequence"), unless a pooling over per-frame
     * vectors is asked for */
    const int sequence = m->info->chat && !emb_form_field(&fm, "pooling");
    if (m->info->chat) {
        const unsigned char *fb[v.n];
        int fw[v.n], fh[v.n];
        long tokens = 0;
        int hits = 0;
        for (int i = 0; i < v.n; i++) {
            fb[i] = v.frames[i].rgb;
            fw[i] = v.frames[i].w;
            fh[i] = v.frames[i].h;
        }
        const chat_item_t all = {.bufs = fb, .n_images = v.n, .rgb_w = fw, .rgb_h = fh};
        if (sequence && emb_encode_chat(e, m, &all, &emb_default_text_opts, pooled, &tokens, 0, &hits, 0, &f)) goto fail;
        for (int i = 0; i < v.n && (!sequence || return_frames); i++) {
            const chat_item_t one = {.bufs = &fb[i], .n_images = 1, .rgb_w = &fw[i], .rgb_h = &fh[i]};
            if (emb_encode_chat(e, m, &one, &emb_default_text_opts, e->vecs + (size_t)i * d, &tokens, 0, &hits, i, &f))
                goto fail;
        }
    }
    for (int base = 0; base < v.n && !m->info->chat; base += IMG_CHUNK) {
        int k = MM_MIN(IMG_CHUNK, v.n - base);
        for (int j = 0; j < k; j++) {
            const mm_video_frame_t *fr = &v.frames[base + j];
            if (mm_preproc_from_rgb(m->pre, fr->rgb, fr->w, fr->h, (size_t)fr->w * 3, e->pix + (size_t)j * per)) {
                emb_failf(&f, 500, NULL, "frame %d: preprocessing failed", base + j);
                goto fail;
            }
        }
        if ((rc = mm_encoder_encode_pixels(m->run, e->pix, k, e->vecs + (size_t)base * d))) {
            emb_encoder_fail(&f, rc, "image encoder");
            goto fail;
        }
    }
    for (int i = 0; i < v.n; i++)
        if (normalize) mm_nn_l2_normalize(e->vecs + (size_t)i * d, d);
    for (int k = 0; k < d && !sequence; k++) {
        float acc = e->vecs[k];
        for (int i = 1; i < v.n && pooling != POOL_FIRST; i++) {
            float x = e->vecs[(size_t)i * d + k];
            acc = pooling == POOL_MAX ? (x > acc ? x : acc) : acc + x;
        }
        pooled[k] = pooling == POOL_MEAN ? acc / (float)v.n : acc;
    }
    if (normalize) mm_nn_l2_normalize(pooled, d);
    int64_t t2 = mm_now_us();
    static const char *pool_names[] = {"mean", "max", "first", "sequence"};
    if (sequence) pooling = 3;
    mm_buf_t *b = &r->out;
    mm_buf_puts(b, "{\"model\":");
    mm_buf_json_str(b, m->name, strlen(m->name));
    mm_buf_printf(b, ",\"dim\":%d,\"pooling\":\"%s\",\"data\":[{\"index\":0,\"object\":\"embedding\",\"embedding\":",
                  d, pool_names[pooling]);
    emb_write_vec(b, pooled, d);
    mm_buf_puts(b, "}],\"frames\":[");
    for (int i = 0; i < v.n; i++)
        mm_buf_printf(b, "%s{\"index\":%d,\"time\":%.6f}", i ? "," : "", v.frames[i].index, v.frames[i].time);
    mm_buf_puts(b, "]");
    if (return_frames) {
        mm_buf_puts(b, ",\"frame_embeddings\":[");
        for (int i = 0; i < v.n; i++) {
            if (i) mm_buf_puts(b, ",");
            emb_write_vec(b, e->vecs + (size_t)i * d, d);
        }
        mm_buf_puts(b, "]");
    }
    mm_buf_puts(b, ",\"video\":{\"format\":");
    mm_buf_json_str(b, v.format, strlen(v.format));
    mm_buf_puts(b, ",\"codec\":");
    mm_buf_json_str(b, v.codec, strlen(v.codec));
    mm_buf_printf(b, ",\"duration\":%.6f,\"width\":%d,\"height\":%d,\"rotation\":%d,\"frames_in_stream\":%d},"
                     "\"timing_ms\":{\"decode\":%.1f,\"model\":%.1f}}\n",
                  v.duration, v.width, v.height, v.rotation, v.n_stream_frames, (t1 - t0) / 1e3, (t2 - t1) / 1e3);
    mm_http_respond_json(r, 200);
    mm_video_free(&v);
    emb_form_free(&fm);
    return;
fail:
    mm_video_free(&v);
    emb_form_free(&fm);
    emb_respond_fail(r, &f);
}

