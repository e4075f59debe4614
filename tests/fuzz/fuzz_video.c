/* libFuzzer harness: video demux and decode (src/media/video.c, libavformat
 * + libavcodec + libswscale over an in-memory AVIOContext).
 *
 * The input is the upload. mm_video_sample runs with server-like limits and
 * a wall-clock budget of BUDGET_S; libFuzzer's -timeout (10 s in the
 * Makefile) turns a budget that is not enforced into a finding. How many
 * frames to sample and whether to downscale come from a hash of the input.
 * A success must hold consistent frames (sizes within the pixel limit,
 * strictly increasing times and frame numbers, every RGB byte readable);
 * a failure must carry one of the documented statuses, a reason, and
 * leave *out empty. */
#include "mmembed/common.h"
#include "mmembed/video.h"

#include "fuzz.h"

#include <math.h>
#include <string.h>

#define BUDGET_S 1.0
#define MAX_PIXELS (1024L * 1024L)  /* smaller than a server's: keeps each run quick */
#define MAX_FRAMES 16

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    mm_video_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t h = fuzz_fnv(FUZZ_FNV_INIT, data, size);
    mm_video_limits_t lim = {
        .max_bytes = 8L << 20,
        .max_seconds = 3600,
        .max_pixels = MAX_PIXELS,
        .max_frames = MAX_FRAMES,
        .budget_seconds = BUDGET_S,
        .min_edge_hint = (h & 1) ? 16 : 0,
        .threads = 1,
    };
    int n_frames = 1 + (int)((h >> 1) % 8);
    mm_video_t v;
    char err[MM_ERRLEN] = "";
    int rc = mm_video_sample(data, size, n_frames, &lim, &v, err, sizeof err);
    if (rc) {
        FUZZ_CHECK(rc == MM_E_INVALID || rc == MM_E_UNSUPPORTED || rc == MM_E_UNPROCESSABLE ||
                       rc == MM_E_TOOBIG || rc == MM_E_TIMEOUT || rc == MM_E_NOMEM || rc == MM_ERR,
                   "unexpected status %d (%s)", rc, err);
        FUZZ_CHECK(err[0], "status %d without a reason", rc);
        FUZZ_CHECK(!v.frames && !v.n, "failed call left %d frames", v.n);
        return 0;
    }
    FUZZ_CHECK(v.n >= 1 && v.n <= n_frames && v.frames, "%d frames for %d asked", v.n, n_frames);
    FUZZ_CHECK(v.rotation == 0 || v.rotation == 90 || v.rotation == 180 || v.rotation == 270, "rotation %d",
               v.rotation);
    FUZZ_CHECK(v.width > 0 && v.height > 0 && (long)v.width * v.height <= MAX_PIXELS, "stream %dx%d",
               v.width, v.height);
    FUZZ_CHECK(v.n_stream_frames >= v.n, "%d frames returned from a stream of %d", v.n, v.n_stream_frames);
    FUZZ_CHECK(memchr(v.format, 0, sizeof v.format) && memchr(v.codec, 0, sizeof v.codec),
               "format/codec not terminated");
    for (int i = 0; i < v.n; i++) {
        const mm_video_frame_t *f = &v.frames[i];
        FUZZ_CHECK(f->rgb && f->w > 0 && f->h > 0, "frame %d: %dx%d rgb %p", i, f->w, f->h, (void *)f->rgb);
        /* square pixels may stretch one axis (aspect ratio up to 4) */
        FUZZ_CHECK((long)f->w * f->h <= 4 * MAX_PIXELS, "frame %d: %dx%d", i, f->w, f->h);
        FUZZ_CHECK(isfinite(f->time), "frame %d: time %g", i, f->time);
        FUZZ_CHECK(f->index >= 0 && f->index < v.n_stream_frames, "frame %d: index %d of %d", i, f->index,
                   v.n_stream_frames);
        if (i) {
            FUZZ_CHECK(f->index > v.frames[i - 1].index, "frame %d: index %d after %d", i, f->index,
                       v.frames[i - 1].index);
            FUZZ_CHECK(f->time >= v.frames[i - 1].time, "frame %d: time %g after %g", i, f->time,
                       v.frames[i - 1].time);
        }
        if (lim.min_edge_hint > 0) {
            int keep = lim.min_edge_hint * MM_VIDEO_HINT_RATIO, edge = MM_MIN(f->w, f->h);
            FUZZ_CHECK(edge <= keep || edge <= MM_MIN(v.width, v.height), "frame %d: %dx%d not downscaled to %d", i,
                       f->w, f->h, keep);
        }
        volatile uint64_t sum = fuzz_fnv(FUZZ_FNV_INIT, f->rgb, (size_t)f->w * (size_t)f->h * 3);
        (void)sum;
    }
    mm_video_free(&v);
    FUZZ_CHECK(!v.frames && !v.n, "mm_video_free left frames");
    return 0;
}
