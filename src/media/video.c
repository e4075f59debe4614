/* Video frame sampling from an in-memory upload (see include/mmembed/video.h).
 *
 * Flow: probe the bytes → open the demuxer over a custom AVIOContext →
 * pick the video stream → scan its packets once without decoding (frame
 * timestamps, measured duration, limits) → rewind → for each target time,
 * seek to the keyframe before it when that is ahead of the decoder, decode
 * forward in presentation order, keep the frame on screen at the target →
 * swscale to RGB24 → apply the display matrix. */
#include "mmembed/video.h"

#include "mmembed/common.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avstring.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#define IO_BUFSIZE 65536
#define MAX_DEC_ERRORS 1000 /* consecutive decoder errors before giving up */
#define TS_NONE INT64_MIN
#define TS_SANE (INT64_C(1) << 60) /* |timestamps| beyond this are corrupt */

/* Demuxers we let parse an upload: video containers only. Everything else
 * that libavformat can probe (playlists such as hls/concat/dash that open
 * other resources, image2 pipes, raw elementary streams, devices) is refused
 * before it is opened. Names are the first component of AVInputFormat.name;
 * av_match_list compares against any component. */
static const char FORMAT_ALLOW[] = "mov,matroska,gif,apng,avi,flv,mpegts,mpeg,ogg,asf,ivf";

/* Audio-only containers: refused with "no video stream" (422) rather than
 * "unsupported format" (415), which is what the user needs to hear. */
static const char FORMAT_AUDIO[] = "wav,w64,mp3,flac,aac,ac3,eac3,dts,aiff,caf,au,amr,ape,"
                                   "wv,tta,truehd,mlp,voc,spdif,loas,mpc,mpc8,shorten,dsf";

/* ================================================================ state == */

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    double deadline; /* CLOCK_MONOTONIC seconds; 0: none */
    int timed_out;   /* sticky once the deadline passed */
} reader_t;

typedef struct {
    reader_t rd;
    mm_video_limits_t lim;
    const AVInputFormat *ifmt;
    AVIOContext *pb;
    AVFormatContext *fmt;
    AVCodecContext *dec;
    AVStream *st;
    int vidx;
    AVPacket *pkt;
    AVFrame *tmp;   /* frame being received */
    AVFrame *cand;  /* latest decoded frame with pts <= current target */
    AVFrame *ahead; /* first decoded frame with pts > current target */
    int64_t cand_pts, ahead_pts;
    int64_t pos_pts;  /* pts of the latest decoded frame; TS_NONE after a seek */
    int draining;     /* NULL packet sent, decoder being emptied */
    int64_t wanted;   /* pts of the frame the current target needs */
    int dec_errors;   /* decoder errors in a row; a decoder stuck in one fails */
    struct SwsContext *sws;
    uint8_t *tmp_rgb; /* swscale output, 64-byte aligned rows */
    size_t tmp_size;
    int64_t *pts; /* (npts) sorted unique frame timestamps from the scan */
    int npts;
    int64_t end;    /* end of the last frame, stream time base */
    int64_t period; /* typical frame duration, stream time base (>= 1) */
    int ma, mb, mc, md; /* display matrix as a signed permutation */
    char fmtname[24]; /* container, as users know it, for messages */
} vs_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int over_budget(reader_t *r)
{
    if (!r->timed_out && r->deadline > 0 && now_s() > r->deadline)
        r->timed_out = 1;
    return r->timed_out;
}

/* ======================================================== logging ====== */

static void quiet_log(void *avcl, int level, const char *fmt, va_list vl)
{
    (void)avcl;
    (void)level;
    (void)fmt;
    (void)vl;
}

static void init_once(void)
{
    av_log_set_level(AV_LOG_QUIET);
    av_log_set_callback(quiet_log);
}

void mm_video_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_once);
}

/* ======================================================= memory I/O ==== */

static int io_read(void *opaque, uint8_t *dst, int size)
{
    reader_t *r = opaque;
    if (over_budget(r))
        return AVERROR_EXIT;
    if (r->pos >= r->len)
        return AVERROR_EOF;
    size_t n = MM_MIN((size_t)size, r->len - r->pos);
    memcpy(dst, r->buf + r->pos, n);
    r->pos += n;
    return (int)n;
}

/* Positions past the end are refused (not clamped): a demuxer that wants
 * bytes the upload does not have gets an error, so a truncated file fails
 * loudly instead of decoding as a shorter one. */
static int64_t io_seek(void *opaque, int64_t offset, int whence)
{
    reader_t *r = opaque;
    int64_t base;
    switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE: return (int64_t)r->len;
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = (int64_t)r->pos; break;
    case SEEK_END: base = (int64_t)r->len; break;
    default: return AVERROR(EINVAL);
    }
    if (offset < -base || offset > (int64_t)r->len - base)
        return AVERROR(EINVAL);
    r->pos = (size_t)(base + offset);
    return (int64_t)r->pos;
}

static int io_interrupt(void *opaque)
{
    return over_budget(opaque);
}

/* The upload may not make libavformat open anything else (a playlist entry,
 * an MP4 data reference, a nested concat script): every open is refused. */
static int io_open_refuse(AVFormatContext *s, AVIOContext **pb, const char *url, int flags,
                          AVDictionary **options)
{
    (void)s;
    (void)url;
    (void)flags;
    (void)options;
    *pb = NULL;
    return AVERROR(EPERM);
}

/* ========================================================= errors ====== */

/* Map a libav* error at stage `what` to a status + message. A deadline hit
 * anywhere wins, whatever error code it surfaced as. */
static int av_fail(vs_t *s, int averr, const char *what, char *err, size_t errlen)
{
    if (s->rd.timed_out || averr == AVERROR_EXIT)
        return mm_errf(err, errlen, MM_E_TIMEOUT,
                       "video decoding took longer than the %g s budget",
                       s->lim.budget_seconds);
    if (averr == AVERROR(ENOMEM))
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory decoding video");
    return mm_errf(err, errlen, MM_E_INVALID, "corrupt or truncated %s video (%s)",
                   s->fmtname, what);
}

static int timeout_fail(vs_t *s, char *err, size_t errlen)
{
    return av_fail(s, AVERROR_EXIT, "", err, errlen);
}

/* ======================================================== opening ====== */

static void close_demuxer(vs_t *s)
{
    avformat_close_input(&s->fmt); /* does not free a custom pb */
    if (s->pb) {
        av_freep(&s->pb->buffer); /* may have been reallocated by probing */
        avio_context_free(&s->pb);
    }
}

static int new_pb(vs_t *s)
{
    unsigned char *iobuf = av_malloc(IO_BUFSIZE);
    if (!iobuf)
        return MM_E_NOMEM;
    s->rd.pos = 0;
    s->pb = avio_alloc_context(iobuf, IO_BUFSIZE, 0, &s->rd, io_read, NULL, io_seek);
    if (!s->pb) {
        av_free(iobuf);
        return MM_E_NOMEM;
    }
    return 0;
}

/* Identify the container from the bytes and check it against the lists. */
static int probe(vs_t *s, char *err, size_t errlen)
{
    int rc = new_pb(s);
    if (rc)
        return mm_errf(err, errlen, rc, "out of memory");
    const AVInputFormat *ifmt = NULL;
    int score = av_probe_input_buffer2(s->pb, &ifmt, "", NULL, 0, 0);
    if (s->rd.timed_out)
        return timeout_fail(s, err, errlen);
    /* a low score is a guess from a few bytes; random data gets those */
    if (score < 0 || !ifmt || score <= AVPROBE_SCORE_RETRY)
        return mm_errf(err, errlen, MM_E_UNSUPPORTED, "unrecognized video format");
    s->ifmt = ifmt;
    if (!strcmp(ifmt->name, "mov,mp4,m4a,3gp,3g2,mj2"))
        snprintf(s->fmtname, sizeof s->fmtname, "MP4/MOV");
    else if (!strcmp(ifmt->name, "matroska,webm"))
        snprintf(s->fmtname, sizeof s->fmtname, "Matroska/WebM");
    else
        snprintf(s->fmtname, sizeof s->fmtname, "%.*s", (int)strcspn(ifmt->name, ","),
                 ifmt->name);
    if (av_match_list(ifmt->name, FORMAT_ALLOW, ',') > 0)
        return 0;
    if (av_match_list(ifmt->name, FORMAT_AUDIO, ',') > 0)
        return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "no video stream (audio-only %s file)",
                       s->fmtname);
    return mm_errf(err, errlen, MM_E_UNSUPPORTED, "unsupported format '%s' (not a video)",
                   s->fmtname);
}

/* Open the demuxer (format already probed) and read the stream headers. */
static int open_demuxer(vs_t *s, char *err, size_t errlen)
{
    if (!s->pb) {
        int rc = new_pb(s);
        if (rc)
            return mm_errf(err, errlen, rc, "out of memory");
    }
    s->fmt = avformat_alloc_context();
    if (!s->fmt)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    s->fmt->pb = s->pb;
    s->fmt->io_open = io_open_refuse;
    s->fmt->interrupt_callback.callback = io_interrupt;
    s->fmt->interrupt_callback.opaque = &s->rd;

    AVDictionary *opts = NULL;
    /* belt and braces for nested contexts that copy these lists */
    av_dict_set(&opts, "format_whitelist", FORMAT_ALLOW, 0);
    av_dict_set(&opts, "protocol_whitelist", "", 0);
    int ret = avformat_open_input(&s->fmt, "", s->ifmt, &opts);
    av_dict_free(&opts);
    if (ret < 0) /* s->fmt freed and NULLed */
        return av_fail(s, ret, "cannot read the header", err, errlen);
    ret = avformat_find_stream_info(s->fmt, NULL);
    if (ret < 0)
        return av_fail(s, ret, "cannot read the streams", err, errlen);
    return 0;
}

/* Choose the video stream and open its decoder. */
static int open_decoder(vs_t *s, mm_video_t *out, char *err, size_t errlen)
{
    const AVCodec *codec = NULL;
    int idx = av_find_best_stream(s->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (idx == AVERROR_DECODER_NOT_FOUND) {
        for (unsigned i = 0; i < s->fmt->nb_streams; i++)
            if (s->fmt->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_VIDEO)
                return mm_errf(err, errlen, MM_E_UNSUPPORTED, "no decoder for video codec '%s'",
                               avcodec_get_name(s->fmt->streams[i]->codecpar->codec_id));
    }
    if (s->fmt->nb_streams == 0) /* e.g. an MP4 cut inside its moov */
        return mm_errf(err, errlen, MM_E_INVALID, "corrupt or truncated %s video (no streams)",
                       s->fmtname);
    if (idx < 0 || (s->fmt->streams[idx]->disposition & AV_DISPOSITION_ATTACHED_PIC))
        return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "no video stream");
    s->vidx = idx;
    s->st = s->fmt->streams[idx];

    const AVCodecParameters *par = s->st->codecpar;
    out->width = par->width;
    out->height = par->height;
    out->tb_num = s->st->time_base.num;
    out->tb_den = s->st->time_base.den;
    snprintf(out->codec, sizeof out->codec, "%s", avcodec_get_name(par->codec_id));
    snprintf(out->format, sizeof out->format, "%.*s", (int)strcspn(s->ifmt->name, ","),
             s->ifmt->name);
    if (s->lim.max_pixels > 0 && (long)par->width * par->height > s->lim.max_pixels)
        return mm_errf(err, errlen, MM_E_TOOBIG, "video is %dx%d, over the limit of %ld pixels",
                       par->width, par->height, s->lim.max_pixels);

    s->dec = avcodec_alloc_context3(codec);
    if (!s->dec)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    int ret = avcodec_parameters_to_context(s->dec, par);
    if (ret < 0)
        return av_fail(s, ret, "bad codec parameters", err, errlen);
    s->dec->pkt_timebase = s->st->time_base;
    s->dec->thread_count = s->lim.threads > 0 ? s->lim.threads : 1;
    if (s->lim.max_pixels > 0) /* the decoder refuses larger frames itself */
        s->dec->max_pixels = s->lim.max_pixels;
    ret = avcodec_open2(s->dec, codec, NULL);
    if (ret < 0) {
        if (s->rd.timed_out || ret == AVERROR(ENOMEM))
            return av_fail(s, ret, "", err, errlen);
        return mm_errf(err, errlen, MM_E_UNSUPPORTED, "cannot decode video codec '%s'",
                       out->codec);
    }
    return 0;
}

/* ================================================== display matrix ==== */

/* Reduce the stream's display matrix to a signed permutation (rotation by
 * a multiple of 90 degrees, possibly mirrored). Anything else (no matrix,
 * other angles, shears) leaves frames as stored. With (a b; c d) the upper
 * 2x2 of the matrix, a source pixel (x, y) is displayed at
 * (a*x + c*y, b*x + d*y) up to a translation (libavutil/display.h; y points
 * down, so a=0 b=1 c=-1 d=0 is a quarter turn clockwise). */
static void read_display_matrix(vs_t *s, mm_video_t *out)
{
    s->ma = 1, s->mb = 0, s->mc = 0, s->md = 1;
    const int32_t *m = NULL;
#if LIBAVCODEC_VERSION_INT >= AV_VERSION_INT(60, 29, 100)
    const AVPacketSideData *sd = av_packet_side_data_get(
        s->st->codecpar->coded_side_data, s->st->codecpar->nb_coded_side_data,
        AV_PKT_DATA_DISPLAYMATRIX);
    if (sd && sd->size >= 9 * sizeof(int32_t))
        m = (const int32_t *)sd->data;
#else
    size_t size = 0;
    const uint8_t *sd = av_stream_get_side_data(s->st, AV_PKT_DATA_DISPLAYMATRIX, &size);
    if (sd && size >= 9 * sizeof(int32_t))
        m = (const int32_t *)sd;
#endif
    if (!m)
        return;
    double v[4] = {m[0], m[1], m[3], m[4]}, big = 0;
    int q[4];
    for (int i = 0; i < 4; i++)
        big = fmax(big, fabs(v[i]));
    if (big <= 0)
        return;
    for (int i = 0; i < 4; i++)
        q[i] = v[i] > 0.9 * big ? 1 : v[i] < -0.9 * big ? -1 : fabs(v[i]) < 0.1 * big ? 0 : 9;
    for (int i = 0; i < 4; i++)
        if (q[i] == 9)
            return;
    if (abs(q[0]) + abs(q[2]) != 1 || abs(q[1]) + abs(q[3]) != 1 || q[0] * q[3] - q[1] * q[2] == 0)
        return;
    s->ma = q[0], s->mb = q[1], s->mc = q[2], s->md = q[3];
    /* As "mirror left-right (if flipped), then rotate clockwise": the
     * rotation is where the x axis goes, (1,0) 0, (0,1) 90, (-1,0) 180,
     * (0,-1) 270, taken before the mirror. */
    out->flipped = s->ma * s->md - s->mb * s->mc < 0;
    int xa = out->flipped ? -s->ma : s->ma, xb = out->flipped ? -s->mb : s->mb;
    out->rotation = xa == 1 ? 0 : xb == 1 ? 90 : xa == -1 ? 180 : 270;
}

/* ========================================================= scanning ==== */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int push_pts(vs_t *s, int *cap, int64_t t)
{
    if (s->npts == *cap) {
        int ncap = *cap ? *cap * 2 : 256;
        int64_t *p = realloc(s->pts, (size_t)ncap * sizeof *p);
        if (!p)
            return MM_E_NOMEM;
        s->pts = p;
        *cap = ncap;
    }
    s->pts[s->npts++] = t;
    return 0;
}

/* A file cut short often demuxes without error, as a shorter video. Two
 * signs give it away: (1) the index (MP4 sample table, Matroska cues)
 * lists video frames after the last one read; (2) the container states
 * its duration in the header (not estimated from the bitrate) and every
 * stream ends more than max(1 s, 10%) before it. Tolerances are generous:
 * better a truncated upload read as shorter than a valid one refused. */
static int check_complete(vs_t *s, int64_t vmax, int64_t all_end, char *err, size_t errlen)
{
    int nidx = avformat_index_get_entries_count(s->st);
    const AVIndexEntry *e = nidx > 0 ? avformat_index_get_entry(s->st, nidx - 1) : NULL;
    if (e && vmax != TS_NONE && e->timestamp > vmax)
        return mm_errf(err, errlen, MM_E_INVALID,
                       "truncated %s video: frames listed in its index are missing",
                       s->fmtname);
    const AVFormatContext *f = s->fmt;
    if (f->duration_estimation_method == AVFMT_DURATION_FROM_STREAM && f->duration > 0 &&
        all_end != TS_NONE) {
        int64_t start = f->start_time != AV_NOPTS_VALUE ? f->start_time : 0;
        double declared = (double)f->duration / AV_TIME_BASE;
        double missing = (double)(start + f->duration - all_end) / AV_TIME_BASE;
        if (missing > fmax(1.0, 0.1 * declared))
            return mm_errf(err, errlen, MM_E_INVALID,
                           "truncated %s video: it declares %.2f s but its data ends at %.2f s",
                           s->fmtname, declared, declared - missing);
    }
    return 0;
}

/* Read every packet of the video stream once, without decoding: the frame
 * timestamps (pts, else dts), the end of the last frame and the duration
 * limit. Demuxer errors here mean a corrupt or truncated file. */
static int scan_packets(vs_t *s, mm_video_t *out, char *err, size_t errlen)
{
    AVRational tb = s->st->time_base;
    int cap = 0, again = 0;
    int64_t tmin = INT64_MAX, end = TS_NONE, last = TS_NONE, max_ticks = INT64_MAX;
    int64_t vmax = TS_NONE;     /* largest pts or dts of the video stream */
    int64_t all_end = TS_NONE;  /* end of the last packet of any stream, AV_TIME_BASE */
    if (s->lim.max_seconds > 0 && s->lim.max_seconds / av_q2d(tb) < 1e18)
        max_ticks = (int64_t)(s->lim.max_seconds / av_q2d(tb));

    for (;;) {
        if (over_budget(&s->rd))
            return timeout_fail(s, err, errlen);
        int ret = av_read_frame(s->fmt, s->pkt);
        if (ret == AVERROR_EOF)
            break;
        if (ret == AVERROR(EAGAIN) && ++again < 1000)
            continue;
        if (ret < 0)
            return av_fail(s, ret, "cannot read a packet", err, errlen);
        const AVPacket *p = s->pkt;
        int64_t pt = p->pts != AV_NOPTS_VALUE ? p->pts : p->dts;
        if (pt != AV_NOPTS_VALUE && pt > -TS_SANE && pt < TS_SANE && p->duration < TS_SANE &&
            (unsigned)p->stream_index < s->fmt->nb_streams) {
            AVRational ptb = s->fmt->streams[p->stream_index]->time_base;
            int64_t e = av_rescale_q(pt + MM_MAX(p->duration, 0), ptb, AV_TIME_BASE_Q);
            all_end = MM_MAX(all_end, e);
        }
        if (p->stream_index != s->vidx) {
            av_packet_unref(s->pkt);
            continue;
        }
        if (p->pts != AV_NOPTS_VALUE)
            vmax = MM_MAX(vmax, p->pts);
        if (p->dts != AV_NOPTS_VALUE)
            vmax = MM_MAX(vmax, p->dts);
        if (p->flags & AV_PKT_FLAG_DISCARD) { /* before an MP4 edit list start */
            av_packet_unref(s->pkt);
            continue;
        }
        int64_t t = s->pkt->pts != AV_NOPTS_VALUE ? s->pkt->pts : s->pkt->dts;
        if (t == AV_NOPTS_VALUE)
            t = last == TS_NONE ? 0 : last + 1;
        int64_t dur = s->pkt->duration > 0 ? s->pkt->duration : 0;
        av_packet_unref(s->pkt);
        if (t < -TS_SANE || t > TS_SANE || dur > TS_SANE)
            return mm_errf(err, errlen, MM_E_INVALID, "corrupt %s video (bad timestamps)",
                           s->fmtname);
        last = t;
        tmin = MM_MIN(tmin, t);
        if (end == TS_NONE || t + dur > end)
            end = t + dur;
        if (end - tmin > max_ticks)
            return mm_errf(err, errlen, MM_E_UNPROCESSABLE,
                           "video is longer than the limit of %g s", s->lim.max_seconds);
        if (push_pts(s, &cap, t))
            return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    }
    if (s->rd.timed_out)
        return timeout_fail(s, err, errlen);
    if (s->npts == 0)
        return mm_errf(err, errlen, MM_E_INVALID, "the video stream has no frames");
    int rc = check_complete(s, vmax, all_end, err, errlen);
    if (rc)
        return rc;

    qsort(s->pts, (size_t)s->npts, sizeof *s->pts, cmp_i64);
    int m = 1;
    for (int i = 1; i < s->npts; i++)
        if (s->pts[i] != s->pts[m - 1])
            s->pts[m++] = s->pts[i];
    s->npts = m;

    /* typical frame duration: the frame rate the demuxer saw, else the
     * median gap between frames */
    AVRational fr = s->st->avg_frame_rate.num > 0 ? s->st->avg_frame_rate : s->st->r_frame_rate;
    s->period = 0;
    if (fr.num > 0 && fr.den > 0)
        s->period = av_rescale_q(1, av_inv_q(fr), tb);
    if (s->period <= 0 && m > 1) {
        int64_t *gap = malloc((size_t)(m - 1) * sizeof *gap);
        if (!gap)
            return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
        for (int i = 0; i + 1 < m; i++)
            gap[i] = s->pts[i + 1] - s->pts[i];
        qsort(gap, (size_t)(m - 1), sizeof *gap, cmp_i64);
        s->period = gap[(m - 1) / 2];
        free(gap);
    }
    if (s->period <= 0)
        s->period = 1;
    if (end <= s->pts[m - 1]) /* packets carried no durations */
        end = s->pts[m - 1] + s->period;
    s->end = end;

    out->n_stream_frames = m;
    out->duration = (double)(end - s->pts[0]) * av_q2d(tb);
    if (s->lim.max_seconds > 0 && out->duration > s->lim.max_seconds)
        return mm_errf(err, errlen, MM_E_UNPROCESSABLE,
                       "video is %.1f s long, over the limit of %g s", out->duration,
                       s->lim.max_seconds);
    return 0;
}

/* ======================================================== decoding ==== */

static void reset_decoder_state(vs_t *s)
{
    avcodec_flush_buffers(s->dec);
    s->draining = 0;
    av_frame_unref(s->cand);
    av_frame_unref(s->ahead);
    s->cand_pts = s->ahead_pts = s->pos_pts = TS_NONE;
}

/* Back to the start after the scan: seek, or reopen where seeking fails. */
static int rewind_input(vs_t *s, char *err, size_t errlen)
{
    int ret = av_seek_frame(s->fmt, s->vidx, s->pts[0], AVSEEK_FLAG_BACKWARD);
    if (ret < 0) {
        if (s->rd.timed_out)
            return timeout_fail(s, err, errlen);
        close_demuxer(s);
        int rc = open_demuxer(s, err, errlen);
        if (rc)
            return rc;
        if ((unsigned)s->vidx >= s->fmt->nb_streams)
            return mm_errf(err, errlen, MM_E_INVALID, "video stream vanished on reopening");
        s->st = s->fmt->streams[s->vidx];
    }
    for (unsigned i = 0; i < s->fmt->nb_streams; i++)
        if ((int)i != s->vidx)
            s->fmt->streams[i]->discard = AVDISCARD_ALL; /* demuxer skips them */
    reset_decoder_state(s);
    return 0;
}

/* Seek so that decoding resumes at the keyframe at or before ts. On
 * failure nothing changed and the caller decodes forward from where it is. */
static int seek_to(vs_t *s, int64_t ts)
{
    if (av_seek_frame(s->fmt, s->vidx, ts, AVSEEK_FLAG_BACKWARD) < 0)
        return -1;
    reset_decoder_state(s);
    return 0;
}

/* Index of the last scanned timestamp <= t (0 when t precedes them all). */
static int frame_number(const vs_t *s, int64_t t)
{
    int lo = 0, hi = s->npts - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->pts[mid] <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static int64_t frame_ts(vs_t *s, const AVFrame *f)
{
    int64_t t = f->best_effort_timestamp;
    if (t == AV_NOPTS_VALUE)
        t = f->pts;
    if (t == AV_NOPTS_VALUE)
        t = s->pos_pts == TS_NONE ? s->pts[0] : s->pos_pts + s->period;
    return t;
}

/* Next frame in presentation order into s->tmp.
 * Returns 0 (frame), 1 (end of stream) or a status (<0) with err set.
 * Packets the decoder rejects are skipped and counted, as players do. */
static int decode_next(vs_t *s, char *err, size_t errlen)
{
    int again = 0;
    for (;;) {
        if (over_budget(&s->rd))
            return timeout_fail(s, err, errlen);
        int ret = avcodec_receive_frame(s->dec, s->tmp);
        if (ret == 0) {
            s->dec_errors = 0;
            if (s->lim.max_pixels > 0 &&
                (long)s->tmp->width * s->tmp->height > s->lim.max_pixels)
                return mm_errf(err, errlen, MM_E_TOOBIG,
                               "video frame is %dx%d, over the limit of %ld pixels",
                               s->tmp->width, s->tmp->height, s->lim.max_pixels);
            return 0;
        }
        if (ret == AVERROR_EOF)
            return 1;
        if (ret != AVERROR(EAGAIN)) {
            if (ret == AVERROR(ENOMEM) || ++s->dec_errors > MAX_DEC_ERRORS)
                return av_fail(s, ret, "the decoder keeps failing", err, errlen);
            continue;
        }
        if (s->draining)
            return 1;
        ret = av_read_frame(s->fmt, s->pkt);
        if (ret == AVERROR_EOF) {
            s->draining = 1;
            avcodec_send_packet(s->dec, NULL);
            continue;
        }
        if (ret == AVERROR(EAGAIN) && ++again < 1000)
            continue;
        if (ret < 0)
            return av_fail(s, ret, "cannot read a packet", err, errlen);
        if (s->pkt->stream_index == s->vidx) {
            /* Frames shown before the one we want are only decoded as
             * references: non-reference ones (most B-frames) are skipped. */
            int64_t pp = s->pkt->pts;
            s->dec->skip_frame = s->wanted != TS_NONE && pp != AV_NOPTS_VALUE && pp < s->wanted
                                     ? AVDISCARD_NONREF
                                     : AVDISCARD_DEFAULT;
            ret = avcodec_send_packet(s->dec, s->pkt);
            if (ret < 0 && ret != AVERROR(EAGAIN)) {
                if (ret == AVERROR(ENOMEM) || s->rd.timed_out || ++s->dec_errors > MAX_DEC_ERRORS) {
                    av_packet_unref(s->pkt);
                    return av_fail(s, ret, "the decoder keeps failing", err, errlen);
                }
            }
        }
        av_packet_unref(s->pkt);
    }
}

/* Decode forward until s->cand is the frame on screen at target t (last
 * pts <= t) and s->ahead the one after it, or the stream ends. */
static int advance_to(vs_t *s, int64_t t, char *err, size_t errlen)
{
    if (s->ahead_pts != TS_NONE) {
        if (s->ahead_pts > t)
            return 0;
        av_frame_unref(s->cand);
        av_frame_move_ref(s->cand, s->ahead);
        s->cand_pts = s->ahead_pts;
        s->ahead_pts = TS_NONE;
    }
    for (;;) {
        int rc = decode_next(s, err, errlen);
        if (rc < 0)
            return rc;
        if (rc == 1)
            return 0;
        int64_t pts = frame_ts(s, s->tmp);
        s->pos_pts = pts;
        if (pts <= t) {
            av_frame_unref(s->cand);
            av_frame_move_ref(s->cand, s->tmp);
            s->cand_pts = pts;
        } else {
            av_frame_move_ref(s->ahead, s->tmp);
            s->ahead_pts = pts;
            return 0;
        }
    }
}

/* Position the decoder for target t and decode to it. Seeks only when the
 * index knows a keyframe at or before t that lies ahead of the decoder;
 * otherwise decoding forward is cheaper (or the only way: no index). */
static int find_frame(vs_t *s, int64_t t, char *err, size_t errlen)
{
    if (s->ahead_pts != TS_NONE && s->ahead_pts > t)
        return 0;
    int k = frame_number(s, t);
    s->wanted = s->pts[k] <= t ? s->pts[k] : TS_NONE;
    /* copy the entry now: reading or seeking may grow (move) the index */
    const AVIndexEntry *e =
        avformat_index_get_entry_from_timestamp(s->st, t, AVSEEK_FLAG_BACKWARD);
    int64_t ets = e ? e->timestamp : TS_NONE;
    int64_t here = s->pos_pts != TS_NONE ? s->pos_pts : s->pts[0];
    int64_t key = TS_NONE;
    if (ets != TS_NONE && ets > here && seek_to(s, t) == 0)
        key = ets;
    int rc = advance_to(s, t, err, errlen);
    if (rc)
        return rc;
    /* Index timestamps may be dts: the keyframe found can show after t
     * (B-frame delay), leaving t's frame in the previous GOP. Go one
     * keyframe further back, once. */
    if (key != TS_NONE && s->cand_pts == TS_NONE && s->ahead_pts != TS_NONE &&
        s->ahead_pts > s->pts[0] && seek_to(s, key - 1) == 0)
        rc = advance_to(s, t, err, errlen);
    return rc;
}

/* ======================================================= conversion ==== */

static int sws_colorspace(enum AVColorSpace cs)
{
    switch (cs) {
    case AVCOL_SPC_BT709: return SWS_CS_ITU709;
    case AVCOL_SPC_FCC: return SWS_CS_FCC;
    case AVCOL_SPC_SMPTE240M: return SWS_CS_SMPTE240M;
    case AVCOL_SPC_BT2020_NCL:
    case AVCOL_SPC_BT2020_CL: return SWS_CS_BT2020;
    default: return SWS_CS_ITU601; /* BT470BG, SMPTE170M, unspecified */
    }
}

static int is_jpeg_range_format(enum AVPixelFormat f)
{
    return f == AV_PIX_FMT_YUVJ420P || f == AV_PIX_FMT_YUVJ422P || f == AV_PIX_FMT_YUVJ444P ||
           f == AV_PIX_FMT_YUVJ440P || f == AV_PIX_FMT_YUVJ411P;
}

/* Output size before rotation: square pixels, then the min-edge hint. */
static void output_size(vs_t *s, const AVFrame *f, int use_sar, int *ow, int *oh)
{
    double w = f->width, h = f->height;
    AVRational sar = av_guess_sample_aspect_ratio(s->fmt, s->st, (AVFrame *)f);
    if (use_sar && sar.num > 0 && sar.den > 0) {
        double r = av_q2d(sar);
        if (r >= 0.25 && r <= 4 && fabs(r - 1) > 1e-3) {
            if (r > 1)
                w *= r; /* stretch, never squeeze: no detail is thrown away */
            else
                h /= r;
        }
    }
    double shortest = fmin(w, h), keep = (double)s->lim.min_edge_hint * MM_VIDEO_HINT_RATIO;
    if (keep > 0 && shortest > keep) {
        double k = keep / shortest;
        w *= k;
        h *= k;
    }
    *ow = MM_MAX(1, (int)lround(w));
    *oh = MM_MAX(1, (int)lround(h));
}

/* Convert f to upright RGB8 into a new frame of out. */
static int emit(vs_t *s, const AVFrame *f, int64_t pts, mm_video_t *out, char *err,
                size_t errlen)
{
    /* A damaged stream can decode frames whose timestamps the packet scan
     * never saw; two of them may map to one frame number. Never return the
     * same frame twice (found by tests/fuzz: video-duplicate-frame-index). */
    if (out->n > 0 && frame_number(s, pts) <= out->frames[out->n - 1].index)
        return 0;
    /* a container that does not say its size (0x0 in the header; found by
     * tests/fuzz: video-zero-size-header) gets the decoded frames' */
    if (out->width <= 0 || out->height <= 0) {
        out->width = f->width;
        out->height = f->height;
    }
    int w, h;
    output_size(s, f, 1, &w, &h);
    if (s->lim.max_pixels > 0 && (long)w * h > s->lim.max_pixels)
        output_size(s, f, 0, &w, &h);

    s->sws = sws_getCachedContext(s->sws, f->width, f->height, f->format, w, h,
                                  AV_PIX_FMT_RGB24,
                                  SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, NULL,
                                  NULL, NULL);
    if (!s->sws)
        return mm_errf(err, errlen, MM_E_UNSUPPORTED, "cannot convert pixel format '%s'",
                       av_get_pix_fmt_name(f->format) ? av_get_pix_fmt_name(f->format) : "?");
    const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(f->format);
    if (desc && !(desc->flags & (AV_PIX_FMT_FLAG_RGB | AV_PIX_FMT_FLAG_PAL)) &&
        desc->nb_components >= 3) {
        int full = f->color_range == AVCOL_RANGE_JPEG || is_jpeg_range_format(f->format);
        sws_setColorspaceDetails(s->sws, sws_getCoefficients(sws_colorspace(f->colorspace)),
                                 full, sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16,
                                 1 << 16);
    }

    /* swscale writes into padded, aligned rows; the result is then copied
     * (and rotated) into the tight buffer the caller gets */
    int stride = FFALIGN(w * 3, 64);
    size_t need = (size_t)stride * (size_t)(h + 1);
    if (need > s->tmp_size) {
        av_freep(&s->tmp_rgb);
        s->tmp_rgb = av_malloc(need);
        if (!s->tmp_rgb) {
            s->tmp_size = 0;
            return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
        }
        s->tmp_size = need;
    }
    uint8_t *dst[4] = {s->tmp_rgb, NULL, NULL, NULL};
    int dstride[4] = {stride, 0, 0, 0};
    if (sws_scale(s->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dst,
                  dstride) != h)
        return mm_errf(err, errlen, MM_ERR, "pixel conversion failed");

    int a = s->ma, b = s->mb, c = s->mc, d = s->md;
    int W = abs(a) * w + abs(c) * h, H = abs(b) * w + abs(d) * h;
    unsigned char *rgb = malloc((size_t)W * (size_t)H * 3);
    if (!rgb)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    int offx = (a < 0 ? w - 1 : 0) + (c < 0 ? h - 1 : 0);
    int offy = (b < 0 ? w - 1 : 0) + (d < 0 ? h - 1 : 0);
    ptrdiff_t step = ((ptrdiff_t)b * W + a) * 3; /* dst move per source x */
    for (int y = 0; y < h; y++) {
        const uint8_t *sp = s->tmp_rgb + (size_t)y * stride;
        if (a == 1 && d == 1) {
            memcpy(rgb + (size_t)y * W * 3, sp, (size_t)w * 3);
            continue;
        }
        ptrdiff_t di = ((ptrdiff_t)(d * y + offy) * W + (c * y + offx)) * 3;
        for (int x = 0; x < w; x++, sp += 3, di += step) {
            rgb[di] = sp[0];
            rgb[di + 1] = sp[1];
            rgb[di + 2] = sp[2];
        }
    }

    mm_video_frame_t *fr = &out->frames[out->n++];
    fr->rgb = rgb;
    fr->w = W;
    fr->h = H;
    fr->pts = pts;
    fr->time = (double)(pts - s->pts[0]) * av_q2d(s->st->time_base);
    fr->index = frame_number(s, pts);
    return 0;
}

/* ========================================================== sampling == */

/* Target times (see the rule in video.h), increasing, in stream time base. */
static int64_t *make_targets(vs_t *s, int n_frames, int *nt)
{
    int m = s->npts;
    int n = MM_MIN(m, n_frames);
    int64_t *t = malloc((size_t)n * sizeof *t);
    if (!t)
        return NULL;
    if (m <= n_frames) {
        memcpy(t, s->pts, (size_t)m * sizeof *t);
    } else {
        double t0 = (double)s->pts[0], dur = (double)(s->end - s->pts[0]);
        for (int i = 0; i < n; i++)
            t[i] = (int64_t)floor(t0 + dur * (i + 0.5) / n);
    }
    *nt = n;
    return t;
}

static int sample(vs_t *s, int n_frames, mm_video_t *out, char *err, size_t errlen)
{
    int nt = 0;
    int64_t *targets = make_targets(s, n_frames, &nt);
    if (!targets)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    out->frames = calloc((size_t)nt, sizeof *out->frames);
    if (!out->frames) {
        free(targets);
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
    }
    int rc = 0;
    int64_t last_emitted = TS_NONE;
    for (int i = 0; i < nt && rc == 0; i++) {
        rc = find_frame(s, targets[i], err, errlen);
        if (rc)
            break;
        /* the frame on screen at t; before the first decodable frame, the
         * first one after t */
        AVFrame *f = s->cand_pts != TS_NONE ? s->cand : s->ahead_pts != TS_NONE ? s->ahead : NULL;
        int64_t pts = s->cand_pts != TS_NONE ? s->cand_pts : s->ahead_pts;
        if (!f || (last_emitted != TS_NONE && pts <= last_emitted))
            continue;
        rc = emit(s, f, pts, out, err, errlen);
        last_emitted = pts;
        if (rc == 0 && over_budget(&s->rd))
            rc = timeout_fail(s, err, errlen);
    }
    free(targets);
    if (rc == 0 && out->n == 0)
        rc = mm_errf(err, errlen, MM_E_INVALID, "no frame of the video could be decoded");
    return rc;
}

/* ============================================================ entry == */

static void cleanup(vs_t *s)
{
    sws_freeContext(s->sws);
    av_freep(&s->tmp_rgb);
    av_frame_free(&s->tmp);
    av_frame_free(&s->cand);
    av_frame_free(&s->ahead);
    av_packet_free(&s->pkt);
    avcodec_free_context(&s->dec);
    close_demuxer(s);
    free(s->pts);
}

int mm_video_sample(const void *buf, size_t len, int n_frames, const mm_video_limits_t *lim,
                    mm_video_t *out, char *err, size_t errlen)
{
    mm_video_init();
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return mm_errf(err, errlen, MM_ERR, "no output");
    memset(out, 0, sizeof *out);
    if (!buf || len == 0)
        return mm_errf(err, errlen, MM_E_INVALID, "video is empty");
    if (n_frames < 1)
        return mm_errf(err, errlen, MM_E_INVALID, "number of frames must be at least 1");

    vs_t s;
    memset(&s, 0, sizeof s);
    if (lim)
        s.lim = *lim;
    if (s.lim.max_frames > 0 && n_frames > s.lim.max_frames)
        return mm_errf(err, errlen, MM_E_UNPROCESSABLE, "%d frames requested, over the limit of %d",
                       n_frames, s.lim.max_frames);
    if (s.lim.max_bytes > 0 && len > (size_t)s.lim.max_bytes)
        return mm_errf(err, errlen, MM_E_TOOBIG, "video is %zu bytes, over the limit of %ld",
                       len, s.lim.max_bytes);
    s.rd.buf = buf;
    s.rd.len = len;
    if (s.lim.budget_seconds > 0)
        s.rd.deadline = now_s() + s.lim.budget_seconds;
    s.cand_pts = s.ahead_pts = s.pos_pts = s.wanted = TS_NONE;

    int rc;
    s.pkt = av_packet_alloc();
    s.tmp = av_frame_alloc();
    s.cand = av_frame_alloc();
    s.ahead = av_frame_alloc();
    if (!s.pkt || !s.tmp || !s.cand || !s.ahead) {
        rc = mm_errf(err, errlen, MM_E_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = probe(&s, err, errlen)) || (rc = open_demuxer(&s, err, errlen)) ||
        (rc = open_decoder(&s, out, err, errlen)))
        goto done;
    read_display_matrix(&s, out);
    if ((rc = scan_packets(&s, out, err, errlen)) || (rc = rewind_input(&s, err, errlen)) ||
        (rc = sample(&s, n_frames, out, err, errlen)))
        goto done;
    if (s.rd.timed_out)
        rc = timeout_fail(&s, err, errlen);

done:
    cleanup(&s);
    if (rc)
        mm_video_free(out);
    return rc;
}

void mm_video_free(mm_video_t *v)
{
    if (!v)
        return;
    for (int i = 0; i < v->n; i++)
        free(v->frames[i].rgb);
    free(v->frames);
    memset(v, 0, sizeof *v);
}
