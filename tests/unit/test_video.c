/* Unit tests for media/video.c. The videos are made at test time with the
 * ffmpeg CLI in a temporary directory (removed at the end); a case whose
 * encoder is missing is skipped, not failed. Run from the repository root. */
#include "mmembed/common.h"
#include "mmembed/video.h"
#include "check.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char dir[64];

/* ============================================================ helpers == */

/* CPU time of the process (all threads): meaningful on a loaded machine */
static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static void path_of(char *p, size_t n, const char *name)
{
    snprintf(p, n, "%s/%s", dir, name);
}

/* Run ffmpeg with `args` writing `name` in the temp dir (the args contain
 * %s for the output path, once). 0 when the file exists and is non-empty. */
static int ffmpeg(const char *name, const char *args)
{
    char out[256], fmt[2048], cmd[4096];
    path_of(out, sizeof out, name);
    snprintf(fmt, sizeof fmt, "ffmpeg -hide_banner -nostdin -loglevel error -y %s", args);
    snprintf(cmd, sizeof cmd, fmt, out);
    if (system(cmd) != 0)
        return -1;
    size_t len = 0;
    unsigned char *b = slurp(out, &len);
    free(b);
    return b && len > 0 ? 0 : -1;
}

static unsigned char *load(const char *name, size_t *len)
{
    char p[256];
    path_of(p, sizeof p, name);
    return slurp(p, len);
}

/* Mean RGB over the central half of a rectangle of the frame. */
static void mean_rgb(const mm_video_frame_t *f, int x0, int y0, int x1, int y1, double m[3])
{
    int qx = (x1 - x0) / 4, qy = (y1 - y0) / 4;
    double s[3] = {0, 0, 0};
    long n = 0;
    for (int y = y0 + qy; y < y1 - qy; y++)
        for (int x = x0 + qx; x < x1 - qx; x++, n++)
            for (int c = 0; c < 3; c++)
                s[c] += f->rgb[((size_t)y * f->w + x) * 3 + c];
    for (int c = 0; c < 3; c++)
        m[c] = n ? s[c] / n : -1;
}

static const double PALETTE[4][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 255, 255}};
static const char *PNAME[4] = {"red", "green", "blue", "white"};

/* Index of the palette colour within `tol` (max abs channel error) of m, or -1. */
static int colour_of(const double m[3], double tol)
{
    for (int k = 0; k < 4; k++) {
        double e = 0;
        for (int c = 0; c < 3; c++)
            e = fmax(e, fabs(m[c] - PALETTE[k][c]));
        if (e <= tol)
            return k;
    }
    return -1;
}

static const mm_video_limits_t NOLIM = {0};

/* The reference good file used to show that a call after an error works. */
static unsigned char *good_buf;
static size_t good_len;

static void check_next_call_works(const char *after)
{
    mm_video_t v;
    char err[MM_ERRLEN];
    int rc = mm_video_sample(good_buf, good_len, 4, &NOLIM, &v, err, sizeof err);
    CHECK(rc == 0 && v.n == 4, "call after '%s' failed: %d %s", after, rc, err);
    mm_video_free(&v);
}

/* ===================================================== colour segments == */

/* 4 segments of 1 s: red, green, blue, white at `fps`, w x h, then the
 * filters in `more` (",filter..." or ""). rgb24 first, so that encoders
 * negotiate their pixel format from RGB (odd sizes stay odd; GIF is not
 * made gray). */
static const char *segments_filter(char *b, size_t n, int w, int h, int fps, const char *more)
{
    snprintf(b, n,
             "-filter_complex \"color=0xFF0000:s=%dx%d:r=%d:d=1[a];color=0x00FF00:s=%dx%d:r=%d:d=1[b];"
             "color=0x0000FF:s=%dx%d:r=%d:d=1[c];color=0xFFFFFF:s=%dx%d:r=%d:d=1[d];"
             "[a][b][c][d]concat=n=4,format=rgb24%s[v]\" -map [v]",
             w, h, fps, w, h, fps, w, h, fps, w, h, fps, more);
    return b;
}

/* Sample n frames from a 4 s segment video and check times and colours.
 * expect_frames: frames in the stream (fps * 4). */
static void check_segments(const char *label, const char *name, int fps, int expect_w,
                           int expect_h, double tol)
{
    size_t len;
    unsigned char *buf = load(name, &len);
    if (!buf) {
        SKIP_BROKEN("%s: ffmpeg could not generate %s", label, name);
        return;
    }
    const int nf[] = {8, 1, 3, 1000};
    for (size_t k = 0; k < MM_ARRAY_LEN(nf); k++) {
        int n = nf[k];
        mm_video_t v;
        char err[MM_ERRLEN];
        double t0 = now_s() * 1e3;
        int rc = mm_video_sample(buf, len, n, &NOLIM, &v, err, sizeof err);
        double ms = now_s() * 1e3 - t0;
        CHECK(rc == 0, "%s n=%d: %d %s", label, n, rc, err);
        if (rc)
            continue;
        double period = 1.0 / fps;
        int m = 4 * fps;
        CHECK(fabs(v.duration - 4.0) < 1.5 * period, "%s: duration %.3f", label, v.duration);
        CHECK(v.n_stream_frames == m, "%s: %d frames in stream, want %d", label,
              v.n_stream_frames, m);
        int want_n = n < m ? n : m;
        CHECK(v.n == want_n, "%s n=%d: got %d frames", label, n, v.n);
        int bad_time = 0, bad_col = 0, bad_dim = 0;
        for (int i = 0; i < v.n; i++) {
            const mm_video_frame_t *f = &v.frames[i];
            /* rule: the frame on screen at the target, pts <= t < pts + period */
            double target = n < m ? 4.0 * (i + 0.5) / n : i * period;
            if (!(f->time <= target + 1e-6 && f->time > target - period - 1e-6) ||
                (n >= m && f->index != i))
                bad_time++;
            if (f->w != expect_w || f->h != expect_h)
                bad_dim++;
            double mc[3];
            mean_rgb(f, 0, 0, f->w, f->h, mc);
            int seg = (int)floor(f->time + 1e-6);
            if (colour_of(mc, tol) != seg) {
                if (bad_col++ < 3)
                    printf("  %s frame %d t=%.3f mean (%.0f %.0f %.0f), want %s\n", label, i,
                           f->time, mc[0], mc[1], mc[2], PNAME[seg < 4 ? seg : 3]);
            }
        }
        CHECK(bad_time == 0, "%s n=%d: %d frames at wrong times", label, n, bad_time);
        CHECK(bad_col == 0, "%s n=%d: %d frames with wrong colour", label, n, bad_col);
        CHECK(bad_dim == 0, "%s n=%d: %d frames not %dx%d (first %dx%d)", label, n, bad_dim,
              expect_w, expect_h, v.frames[0].w, v.frames[0].h);
        if (n == 8) {
            printf("ok   %-28s %s/%s %dx%d dur %.2f s, %d frames: t =", label, v.format,
                   v.codec, v.frames[0].w, v.frames[0].h, v.duration, v.n);
            for (int i = 0; i < v.n; i++)
                printf(" %.2f", v.frames[i].time);
            printf("  (%.1f ms)\n", ms);
        }
        mm_video_free(&v);
    }
    free(buf);
}

static void test_segments(void)
{
    char f[1024], a[2048];
    segments_filter(f, sizeof f, 320, 240, 25, "");
    /* H.264 with B-frames and short GOPs, so the sampler seeks */
    snprintf(a, sizeof a,
             "%s -c:v libx264 -preset veryfast -bf 2 -g 12 -pix_fmt yuv420p %%s", f);
    ffmpeg("seg.mp4", a);
    check_segments("mp4/h264 bf2 gop12", "seg.mp4", 25, 320, 240, 40);
    snprintf(a, sizeof a, "%s -c:v libx264 -preset veryfast -bf 3 -pix_fmt yuv420p %%s", f);
    ffmpeg("seg1gop.mp4", a);
    check_segments("mp4/h264 one GOP", "seg1gop.mp4", 25, 320, 240, 40);
    snprintf(a, sizeof a,
             "%s -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -g 20 -b:v 500k %%s", f);
    ffmpeg("seg.webm", a);
    check_segments("webm/vp9", "seg.webm", 25, 320, 240, 40);
    snprintf(a, sizeof a, "%s -c:v libx264 -preset veryfast -bf 2 -g 10 %%s", f);
    ffmpeg("seg.mkv", a);
    check_segments("mkv/h264 bf2", "seg.mkv", 25, 320, 240, 40);
    snprintf(a, sizeof a, "%s -c:v mjpeg -q:v 3 %%s", f);
    ffmpeg("seg.mov", a);
    check_segments("mov/mjpeg (yuvj)", "seg.mov", 25, 320, 240, 40);
    segments_filter(f, sizeof f, 160, 120, 10, "");
    snprintf(a, sizeof a, "%s %%s", f);
    ffmpeg("seg.gif", a);
    check_segments("gif", "seg.gif", 10, 160, 120, 8);

    /* no duration in the header: Matroska/WebM written to a pipe */
    segments_filter(f, sizeof f, 320, 240, 25, "");
    snprintf(a, sizeof a, "%s -c:v libx264 -preset veryfast -bf 2 -g 12 -f matroska pipe:1 > %%s",
             f);
    ffmpeg("pipe.mkv", a);
    check_segments("mkv piped (no duration)", "pipe.mkv", 25, 320, 240, 40);
    snprintf(a, sizeof a,
             "%s -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -g 20 -f webm -live 1 pipe:1 > %%s",
             f);
    ffmpeg("live.webm", a);
    check_segments("webm live (no duration)", "live.webm", 25, 320, 240, 40);

    /* odd size, 4:4:4, 10-bit, VP9 odd size */
    segments_filter(f, sizeof f, 321, 179, 25, "");
    snprintf(a, sizeof a, "%s -c:v libx264 -preset veryfast -pix_fmt yuv444p %%s", f);
    ffmpeg("odd444.mp4", a);
    check_segments("mp4 321x179 yuv444p", "odd444.mp4", 25, 321, 179, 40);
    snprintf(a, sizeof a, "%s -c:v libvpx-vp9 -deadline realtime -cpu-used 8 %%s", f);
    ffmpeg("odd.webm", a);
    check_segments("webm/vp9 321x179", "odd.webm", 25, 321, 179, 40);
    segments_filter(f, sizeof f, 320, 240, 25, "");
    snprintf(a, sizeof a, "%s -c:v libx264 -preset veryfast -pix_fmt yuv420p10le %%s", f);
    ffmpeg("10bit.mp4", a);
    check_segments("mp4 h264 10-bit", "10bit.mp4", 25, 320, 240, 40);
    snprintf(a, sizeof a, "%s -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -pix_fmt yuv420p10le %%s",
             f);
    ffmpeg("10bit.webm", a);
    check_segments("webm vp9 10-bit", "10bit.webm", 25, 320, 240, 40);
    /* non-square pixels: SAR 2:1 shows twice as wide */
    segments_filter(f, sizeof f, 320, 240, 25, ",setsar=2");
    snprintf(a, sizeof a, "%s -c:v libx264 -preset veryfast %%s", f);
    ffmpeg("sar2.mp4", a);
    check_segments("mp4 SAR 2:1", "sar2.mp4", 25, 640, 240, 40);
}

/* ====================================================== exact frames == */

/* 50 frames at 25 fps, each a flat gray with luma 20 + 4 * frame number,
 * losslessly coded: the pixels name the frame, so any off-by-one in seeking
 * or B-frame reordering shows. */
static void check_exact(const char *label, const char *name)
{
    size_t len;
    unsigned char *buf = load(name, &len);
    if (!buf) {
        SKIP_BROKEN("%s: ffmpeg could not generate %s", label, name);
        return;
    }
    const int m = 50, nf[] = {7, 13, 49, 50, 64};
    for (size_t k = 0; k < MM_ARRAY_LEN(nf); k++) {
        int n = nf[k];
        mm_video_t v;
        char err[MM_ERRLEN];
        int rc = mm_video_sample(buf, len, n, &NOLIM, &v, err, sizeof err);
        CHECK(rc == 0, "%s n=%d: %d %s", label, n, rc, err);
        if (rc)
            continue;
        CHECK(v.n == (n < m ? n : m), "%s n=%d: %d frames", label, n, v.n);
        int bad = 0;
        for (int i = 0; i < v.n; i++) {
            const mm_video_frame_t *f = &v.frames[i];
            /* the frame on screen at t_i = 2 s * (i + 0.5) / n */
            int want = n < m ? (int)floor((i + 0.5) * m / n) : i;
            double c[3];
            mean_rgb(f, 0, 0, f->w, f->h, c);
            double luma = (c[0] + c[1] + c[2]) / 3 * 219.0 / 255.0 + 16;
            int shown = (int)lround((luma - 20) / 4);
            if (f->index != want || shown != want || fabs(f->time - want / 25.0) > 1e-3) {
                if (bad++ < 3)
                    printf("  %s n=%d frame %d: index %d, pixels say %d (luma %.1f), t %.3f; "
                           "want %d\n",
                           label, n, i, f->index, shown, luma, f->time, want);
            }
        }
        CHECK(bad == 0, "%s n=%d: %d wrong frames", label, n, bad);
        if (n == 7)
            printf("%s %-32s n=7 frames", bad ? "BAD " : "ok  ", label);
        if (n == 7)
            for (int i = 0; i < v.n; i++)
                printf(" %d", v.frames[i].index);
        if (n == 7)
            printf("\n");
        mm_video_free(&v);
    }
    free(buf);
}

static void test_exact_frames(void)
{
    const char *src = "-f lavfi -i \"color=black:s=96x64:r=25:d=2,format=yuv420p,"
                      "geq=lum='20+4*N':cb=128:cr=128\"";
    char a[1024];
    snprintf(a, sizeof a, "%s -c:v libx264 -qp 0 -bf 3 -b-pyramid normal -g 7 %%s", src);
    ffmpeg("exact.mp4", a);
    check_exact("mp4 h264 lossless bf3 g7", "exact.mp4");
    snprintf(a, sizeof a, "%s -c:v libx264 -qp 0 -bf 3 -g 50 -x264-params open-gop=1 %%s", src);
    ffmpeg("exact.mkv", a);
    check_exact("mkv h264 lossless open-gop", "exact.mkv");
    snprintf(a, sizeof a, "%s -c:v libvpx-vp9 -lossless 1 -g 9 -deadline realtime %%s", src);
    ffmpeg("exact.webm", a);
    check_exact("webm vp9 lossless g9", "exact.webm");
    snprintf(a, sizeof a, "%s -c:v libx264 -qp 0 -bf 2 -g 5 -f mpegts %%s", src);
    ffmpeg("exact.ts", a);
    check_exact("mpegts h264 lossless", "exact.ts");
    snprintf(a, sizeof a, "%s -c:v libx264 -qp 0 -bf 2 -g 6 -f matroska pipe:1 > %%s", src);
    ffmpeg("exactpipe.mkv", a);
    check_exact("mkv piped h264 lossless g6", "exactpipe.mkv");
    snprintf(a, sizeof a, "%s -c:v libx264 -qp 0 -bf 2 -g 6 %%s", src);
    ffmpeg("exact.avi", a);
    check_exact("avi h264 lossless bf2 (no pts)", "exact.avi");
    snprintf(a, sizeof a, "%s -c:v libx264 -qp 0 -bf 2 -g 6 %%s", src);
    ffmpeg("exact.flv", a);
    check_exact("flv h264 lossless bf2", "exact.flv");

    /* variable frame rate: frame 0 held 2 s, then 10 frames of 0.1 s.
     * Five of eight targets fall on frame 0; it is returned once. */
    if (ffmpeg("vfr.mkv", "-f lavfi -i \"color=black:s=96x64:r=10:d=1.1,format=yuv420p,"
                          "geq=lum='20+4*N':cb=128:cr=128,setpts='if(eq(N,0),0,(N+19)/(10*TB))'\" "
                          "-fps_mode passthrough -c:v libx264 -qp 0 %s") == 0) {
        size_t len;
        unsigned char *buf = load("vfr.mkv", &len);
        mm_video_t v;
        char err[MM_ERRLEN];
        int rc = mm_video_sample(buf, len, 8, &NOLIM, &v, err, sizeof err);
        CHECK(rc == 0, "vfr: %d %s", rc, err);
        if (rc == 0) {
            int inc = 1;
            for (int i = 1; i < v.n; i++)
                inc &= v.frames[i].time > v.frames[i - 1].time;
            CHECK(inc && v.n < 8 && v.frames[0].index == 0 && v.n_stream_frames == 11,
                  "vfr: %d frames, %d in stream, increasing %d", v.n, v.n_stream_frames, inc);
            printf("%s vfr mkv (2 s still + 10 x 0.1 s), dur %.2f s, 8 asked, %d returned: t =",
                   inc && v.n < 8 ? "ok  " : "BAD ", v.duration, v.n);
            for (int i = 0; i < v.n; i++)
                printf(" %.2f", v.frames[i].time);
            printf("\n");
            mm_video_free(&v);
        }
        free(buf);
    }
}

/* ========================================================== rotation == */

static void put_be32(unsigned char *p, int32_t v)
{
    uint32_t u = (uint32_t)v;
    p[0] = (unsigned char)(u >> 24), p[1] = (unsigned char)(u >> 16);
    p[2] = (unsigned char)(u >> 8), p[3] = (unsigned char)u;
}

/* Overwrite the display matrix of the first track of an MP4 (tkhd box) with
 * (a b; c d). Done by hand so the test does not depend on what a given
 * ffmpeg CLI version makes of "rotate" / -display_rotation. */
static int patch_tkhd(unsigned char *b, size_t len, int a, int bb, int c, int d, int w, int h)
{
    unsigned char *moov = memmem(b, len, "moov", 4);
    if (!moov)
        return -1;
    unsigned char *t = memmem(moov, len - (size_t)(moov - b), "tkhd", 4);
    if (!t || (size_t)(t - b) + 100 > len)
        return -1;
    unsigned char *m = t + 4 + (t[4] == 1 ? 52 : 40);
    int32_t v[9] = {a * 65536, bb * 65536, 0, c * 65536, d * 65536, 0, 0, 0, 1 << 30};
    /* translation keeping the picture in the positive quadrant */
    v[6] = (a < 0 ? w : 0) * 65536 + (c < 0 ? h : 0) * 65536;
    v[7] = (bb < 0 ? w : 0) * 65536 + (d < 0 ? h : 0) * 65536;
    for (int i = 0; i < 9; i++)
        put_be32(m + 4 * i, v[i]);
    return 0;
}

/* 320x180 quadrants: TL red, TR blue, BL green, BR white. Expected
 * quadrants as displayed, checked by geometry and against what the ffmpeg
 * CLI (autorotate) shows for the same file. */
static void test_rotation(void)
{
    static const struct {
        const char *name;
        int a, b, c, d; /* display matrix */
        int rot, flip, w, h;
        int quad[4]; /* TL TR BL BR as PALETTE indices */
    } cases[] = {
        {"identity", 1, 0, 0, 1, 0, 0, 320, 180, {0, 2, 1, 3}},
        {"90 cw", 0, 1, -1, 0, 90, 0, 180, 320, {1, 0, 3, 2}},
        {"180", -1, 0, 0, -1, 180, 0, 320, 180, {3, 1, 2, 0}},
        {"270 cw", 0, -1, 1, 0, 270, 0, 180, 320, {2, 3, 0, 1}},
        {"mirror", -1, 0, 0, 1, 0, 1, 320, 180, {2, 0, 3, 1}},
        {"transpose", 0, 1, 1, 0, 270, 1, 180, 320, {0, 1, 2, 3}},
    };
    if (ffmpeg("quad.mp4", "-f lavfi -i \"color=0xFF0000:s=320x180:r=25:d=1,"
                           "drawbox=x=160:y=0:w=160:h=90:c=0x0000FF:t=fill,"
                           "drawbox=x=0:y=90:w=160:h=90:c=0x00FF00:t=fill,"
                           "drawbox=x=160:y=90:w=160:h=90:c=0xFFFFFF:t=fill,format=rgb24\" "
                           "-c:v libx264 -preset veryfast -pix_fmt yuv420p %s")) {
        SKIP_BROKEN("rotation: ffmpeg could not generate the rotated videos");
        return;
    }
    size_t len;
    unsigned char *base = load("quad.mp4", &len);
    unsigned char *buf = malloc(len);
    for (size_t k = 0; k < MM_ARRAY_LEN(cases); k++) {
        memcpy(buf, base, len);
        if (patch_tkhd(buf, len, cases[k].a, cases[k].b, cases[k].c, cases[k].d, 320, 180)) {
            CHECK(0, "no tkhd in quad.mp4");
            break;
        }
        mm_video_t v;
        char err[MM_ERRLEN];
        int rc = mm_video_sample(buf, len, 1, &NOLIM, &v, err, sizeof err);
        CHECK(rc == 0, "%s: %d %s", cases[k].name, rc, err);
        if (rc)
            continue;
        const mm_video_frame_t *f = &v.frames[0];
        CHECK(v.rotation == cases[k].rot && v.flipped == cases[k].flip,
              "%s: reported rotation %d flip %d, want %d %d", cases[k].name, v.rotation,
              v.flipped, cases[k].rot, cases[k].flip);
        CHECK(f->w == cases[k].w && f->h == cases[k].h, "%s: %dx%d, want %dx%d", cases[k].name,
              f->w, f->h, cases[k].w, cases[k].h);
        int got[4], ok = 1;
        for (int q = 0; q < 4; q++) {
            double m[3];
            int x0 = (q % 2) * f->w / 2, y0 = (q / 2) * f->h / 2;
            mean_rgb(f, x0, y0, x0 + f->w / 2, y0 + f->h / 2, m);
            got[q] = colour_of(m, 40);
            ok &= got[q] == cases[k].quad[q];
        }
        CHECK(ok, "%s: quadrants %d %d %d %d, want %d %d %d %d", cases[k].name, got[0], got[1],
              got[2], got[3], cases[k].quad[0], cases[k].quad[1], cases[k].quad[2],
              cases[k].quad[3]);

        /* the ffmpeg CLI's autorotated first frame, as a player shows it */
        char in[256], cmd[1024], rawp[256];
        path_of(in, sizeof in, "quadrot.mp4");
        path_of(rawp, sizeof rawp, "quadrot.rgb");
        FILE *fo = fopen(in, "wb");
        fwrite(buf, 1, len, fo);
        fclose(fo);
        snprintf(cmd, sizeof cmd,
                 "ffmpeg -hide_banner -nostdin -loglevel error -y -i %s -frames:v 1 "
                 "-pix_fmt rgb24 -f rawvideo %s",
                 in, rawp);
        size_t rlen = 0;
        unsigned char *ref = system(cmd) == 0 ? slurp(rawp, &rlen) : NULL;
        double mad = -1;
        if (ref && rlen == (size_t)f->w * f->h * 3) {
            double sum = 0;
            for (size_t i = 0; i < rlen; i++)
                sum += abs((int)ref[i] - (int)f->rgb[i]);
            mad = sum / rlen;
        }
        /* 3 levels: same decoded YUV, swscale flags differ at chroma edges */
        CHECK(mad >= 0 && mad < 3, "%s: mean abs diff to ffmpeg autorotate %.2f (ref %zu bytes)",
              cases[k].name, mad, rlen);
        free(ref);
        printf("%s %-10s -> %dx%d rot %3d flip %d, TL/TR/BL/BR = %s/%s/%s/%s, vs ffmpeg CLI "
               "mean |diff| %.2f\n",
               ok ? "ok  " : "BAD ", cases[k].name, f->w, f->h, v.rotation, v.flipped,
               got[0] >= 0 ? PNAME[got[0]] : "?", got[1] >= 0 ? PNAME[got[1]] : "?",
               got[2] >= 0 ? PNAME[got[2]] : "?", got[3] >= 0 ? PNAME[got[3]] : "?", mad);
        mm_video_free(&v);
    }
    free(buf);
    free(base);
}

/* ===================================================== errors/limits == */

static void expect_error(const char *label, const void *buf, size_t len, int n,
                         const mm_video_limits_t *lim, int want)
{
    mm_video_t v;
    char err[MM_ERRLEN];
    memset(&v, 0x5a, sizeof v);
    double t0 = now_s() * 1e3;
    int rc = mm_video_sample(buf, len, n, lim, &v, err, sizeof err);
    double ms = now_s() * 1e3 - t0;
    CHECK(rc == want, "%s: got %d (%s), want %d", label, rc, err, want);
    CHECK(rc == 0 || (v.n == 0 && v.frames == NULL), "%s: output not zeroed on error", label);
    CHECK(rc == 0 || (err[0] && !strchr(err, '\n')), "%s: bad message '%s'", label, err);
    printf("%s %-30s -> %d (HTTP %d) \"%s\" (%.1f ms)\n", rc == want ? "ok  " : "BAD ", label,
           rc, mm_status_http(rc), err, ms);
    if (rc == 0)
        mm_video_free(&v);
    check_next_call_works(label);
}

static void test_errors(void)
{
    char a[2048];
    size_t len;

    unsigned char rnd[20000];
    uint64_t x = 0x1234567887654321ull;
    for (size_t i = 0; i < sizeof rnd; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        rnd[i] = (unsigned char)(x >> 32);
    }
    expect_error("random bytes", rnd, sizeof rnd, 4, &NOLIM, MM_E_UNSUPPORTED);
    expect_error("empty", rnd, 0, 4, &NOLIM, MM_E_INVALID);
    expect_error("n_frames 0", good_buf, good_len, 0, &NOLIM, MM_E_INVALID);

    static const char m3u8[] = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\n"
                               "file:///etc/passwd\n#EXT-X-ENDLIST\n";
    expect_error("hls playlist", m3u8, sizeof m3u8 - 1, 4, &NOLIM, MM_E_UNSUPPORTED);
    static const char concat[] = "ffconcat version 1.0\nfile /etc/passwd\n";
    expect_error("ffconcat script", concat, sizeof concat - 1, 4, &NOLIM, MM_E_UNSUPPORTED);

    /* MP4 with moov at the end, cut in half: no index */
    snprintf(a, sizeof a, "-f lavfi -i testsrc2=s=320x240:r=25:d=4 -c:v libx264 -preset veryfast %%s");
    if (ffmpeg("tail.mp4", a) == 0) {
        unsigned char *b = load("tail.mp4", &len);
        expect_error("mp4 (moov at end) cut in half", b, len / 2, 4, &NOLIM, MM_E_INVALID);
        free(b);
    }
    /* faststart MP4 cut in half: index present, samples missing */
    snprintf(a, sizeof a, "-f lavfi -i testsrc2=s=320x240:r=25:d=4 -c:v libx264 -preset veryfast "
                          "-movflags +faststart %%s");
    if (ffmpeg("fast.mp4", a) == 0) {
        unsigned char *b = load("fast.mp4", &len);
        expect_error("faststart mp4 cut in half", b, len / 2, 4, &NOLIM, MM_E_INVALID);
        expect_error("mp4 first 100 bytes", b, 100, 4, &NOLIM, MM_E_INVALID);
        /* corrupt the middle: still decodes (damaged packets are skipped) */
        unsigned char *c = malloc(len);
        memcpy(c, b, len);
        for (size_t i = len / 2; i < len / 2 + 2000 && i < len; i++)
            c[i] ^= 0xA5;
        mm_video_t v;
        char err[MM_ERRLEN];
        int rc = mm_video_sample(c, len, 8, &NOLIM, &v, err, sizeof err);
        printf("info mp4 with 2000 bytes garbled  -> %d \"%s\" (%d frames)\n", rc, err,
               rc == 0 ? v.n : 0);
        CHECK(rc == 0 || rc == MM_E_INVALID, "garbled mp4: %d %s", rc, err);
        mm_video_free(&v);
        free(c);
        free(b);
    }
    if (ffmpeg("cut.webm", "-f lavfi -i testsrc2=s=320x240:r=25:d=4 -c:v libvpx-vp9 "
                           "-deadline realtime -cpu-used 8 %s") == 0) {
        unsigned char *b = load("cut.webm", &len);
        expect_error("webm cut in half", b, len / 2, 4, &NOLIM, MM_E_INVALID);
        free(b);
    }

    if (ffmpeg("sine.m4a", "-f lavfi -i sine=d=2 -c:a aac %s") == 0) {
        unsigned char *b = load("sine.m4a", &len);
        expect_error("audio-only m4a", b, len, 4, &NOLIM, MM_E_UNPROCESSABLE);
        free(b);
    }
    if (ffmpeg("sine.wav", "-f lavfi -i sine=d=2 %s") == 0) {
        unsigned char *b = load("sine.wav", &len);
        expect_error("audio-only wav", b, len, 4, &NOLIM, MM_E_UNPROCESSABLE);
        free(b);
    }
    if (ffmpeg("still.png", "-f lavfi -i color=red:s=64x64 -frames:v 1 %s") == 0) {
        unsigned char *b = load("still.png", &len);
        expect_error("png image", b, len, 4, &NOLIM, MM_E_UNSUPPORTED);
        free(b);
    }

    mm_video_limits_t lim = {0};
    lim.max_bytes = (long)good_len - 1;
    expect_error("over max_bytes", good_buf, good_len, 4, &lim, MM_E_TOOBIG);
    lim = NOLIM;
    lim.max_seconds = 3.5;
    expect_error("over max_seconds (4 s > 3.5)", good_buf, good_len, 4, &lim,
                 MM_E_UNPROCESSABLE);
    lim.max_seconds = 4.0;
    expect_error("at max_seconds (4 s = 4)", good_buf, good_len, 4, &lim, MM_OK);
    lim = NOLIM;
    lim.max_pixels = 320 * 240 - 1;
    expect_error("over max_pixels", good_buf, good_len, 4, &lim, MM_E_TOOBIG);
    lim = NOLIM;
    lim.max_frames = 16;
    expect_error("over max_frames", good_buf, good_len, 17, &lim, MM_E_UNPROCESSABLE);
    lim = NOLIM;
    lim.budget_seconds = 0.001;
    unsigned char *b = load("long.mp4", &len);
    if (b) {
        expect_error("1 ms budget on 10 s clip", b, len, 8, &lim, MM_E_TIMEOUT);
        free(b);
    }
    /* a budget that runs out while decoding (60 s, 10 s GOPs): the call
     * returns soon after the deadline and frees what it decoded so far */
    if (ffmpeg("60s.mp4", "-f lavfi -i testsrc2=s=320x240:r=25:d=60 -c:v libx264 -preset ultrafast "
                          "%s") == 0) {
        b = load("60s.mp4", &len);
        lim.budget_seconds = 0.040;
        double c0 = cpu_ms();
        expect_error("40 ms budget on 60 s clip", b, len, 8, &lim, MM_E_TIMEOUT);
        /* CPU time, not wall time: other processes on the machine cannot
         * stretch it. Two calls under a 40 ms wall budget use at most ~80 ms
         * of CPU plus container probing; decoding the eight 10 s GOPs in full
         * (no budget) takes seconds. */
        double cms = cpu_ms() - c0;
        CHECK(cms < 500, "40 ms budget: the calls used %.0f ms of CPU (the budget did not stop decoding)", cms);
        free(b);
    }
}

/* ===================================================== hint + timing == */

static void time_file(const char *label, const char *name, int threads)
{
    size_t len;
    unsigned char *buf = load(name, &len);
    if (!buf)
        return;
    mm_video_limits_t lim = {0};
    lim.threads = threads;
    double best = 1e9, sum = 0, cbest = 1e9;
    const int reps = 5;
    for (int r = 0; r < reps; r++) {
        mm_video_t v;
        char err[MM_ERRLEN];
        double t0 = now_s() * 1e3, c0 = cpu_ms();
        int rc = mm_video_sample(buf, len, 8, &lim, &v, err, sizeof err);
        double ms = now_s() * 1e3 - t0;
        cbest = fmin(cbest, cpu_ms() - c0);
        CHECK(rc == 0 && v.n == 8, "timing %s: %d %s", label, rc, err);
        mm_video_free(&v);
        best = fmin(best, ms);
        sum += ms;
    }
    printf("time %-40s %d thread(s): wall best %.1f ms, mean %.1f ms; CPU best %.1f ms\n",
           label, threads, best, sum / reps, cbest);
    free(buf);
}

static void test_hint_and_timing(void)
{
    size_t len;
    unsigned char *buf = load("long.mp4", &len);
    if (!buf) {
        SKIP_BROKEN("timing: ffmpeg could not generate the long videos");
        return;
    }
    mm_video_t v;
    char err[MM_ERRLEN];
    mm_video_limits_t lim = {0};
    lim.min_edge_hint = 50; /* kept at >= 2 * 50 */
    int rc = mm_video_sample(buf, len, 8, &lim, &v, err, sizeof err);
    CHECK(rc == 0 && v.n == 8 && v.frames[0].w == 178 && v.frames[0].h == 100,
          "min_edge_hint 50: %d %s %dx%d", rc, err, rc ? 0 : v.frames[0].w,
          rc ? 0 : v.frames[0].h);
    if (rc == 0)
        printf("ok   min_edge_hint=50 on 640x360    -> %dx%d\n", v.frames[0].w, v.frames[0].h);
    mm_video_free(&v);

    printf("ok   10 s 640x360 h264, 8 frames: t =");
    lim = NOLIM;
    rc = mm_video_sample(buf, len, 8, &lim, &v, err, sizeof err);
    CHECK(rc == 0 && v.n == 8, "10 s clip: %d %s", rc, err);
    for (int i = 0; rc == 0 && i < v.n; i++)
        printf(" %.3f", v.frames[i].time);
    printf("\n");
    mm_video_free(&v);
    time_file("10 s 640x360 h264, one GOP (keyint 250)", "long.mp4", 1);
    time_file("10 s 640x360 h264, one GOP (keyint 250)", "long.mp4", 4);
    time_file("10 s 640x360 h264, 2 s GOPs", "long2s.mp4", 1);
    time_file("10 s 640x360 vp9, 2 s GOPs", "long2s.webm", 1);
    free(buf);
}

/* ============================================================== main == */

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/mmvideo.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    mm_video_init();

    char f[1024], a[2048];
    segments_filter(f, sizeof f, 320, 240, 25, "");
    snprintf(a, sizeof a, "%s -c:v libx264 -preset veryfast -bf 2 -g 12 %%s", f);
    if (ffmpeg("good.mp4", a) || !(good_buf = load("good.mp4", &good_len))) {
        printf("cannot generate test videos with ffmpeg (libx264 needed)\n");
        return 1;
    }
    /* 10 s 640x360 H.264, default GOP (x264: keyint 250) */
    ffmpeg("long.mp4", "-f lavfi -i testsrc2=s=640x360:r=25:d=10 -c:v libx264 -preset medium "
                       "-pix_fmt yuv420p %s");
    ffmpeg("long2s.mp4", "-f lavfi -i testsrc2=s=640x360:r=25:d=10 -c:v libx264 -preset medium "
                         "-g 50 -pix_fmt yuv420p %s");
    ffmpeg("long2s.webm", "-f lavfi -i testsrc2=s=640x360:r=25:d=10 -c:v libvpx-vp9 "
                          "-deadline realtime -cpu-used 8 -g 50 %s");

    test_segments();
    test_exact_frames();
    test_rotation();
    /* libav* must print nothing, whatever the input: capture fd 2 */
    fflush(stderr);
    char errpath[256];
    path_of(errpath, sizeof errpath, "stderr.txt");
    int saved = dup(2);
    FILE *ef = fopen(errpath, "w");
    dup2(fileno(ef), 2);
    test_errors();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(ef);
    size_t elen = 0;
    unsigned char *etext = slurp(errpath, &elen);
    CHECK(elen == 0, "%zu bytes on stderr during the error cases: %.*s", elen,
          (int)(elen < 200 ? elen : 200), etext ? (char *)etext : "");
    free(etext);
    test_hint_and_timing();

    free(good_buf);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        printf("could not remove %s\n", dir);
    return check_summary("test_video");
}
