/* Video frame sampling for video embeddings: an upload held in memory →
 * a few upright RGB8 frames spread uniformly over its duration, with their
 * timestamps. The frames are then preprocessed like images by the caller.
 *
 * The bytes are read through a custom AVIOContext over the caller's buffer:
 * libavformat never sees a path or URL, may not open any other resource
 * (io_open refuses everything), and only demuxers for video containers are
 * accepted (MP4/MOV/3GP, Matroska/WebM, GIF, APNG, AVI, FLV, MPEG-TS/PS, Ogg,
 * ASF/WMV, IVF). Nothing is printed: mm_video_init() silences av_log. */
#ifndef MMEMBED_VIDEO_H
#define MMEMBED_VIDEO_H

#include <stddef.h>
#include <stdint.h>

/* Limits and knobs set by the caller (server config). A field <= 0 means
 * "no limit" / default. */
typedef struct mm_video_limits {
    long max_bytes;        /* upload size → MM_E_TOOBIG */
    double max_seconds;    /* video duration → MM_E_UNPROCESSABLE */
    long max_pixels;       /* coded width*height of any frame → MM_E_TOOBIG */
    int max_frames;        /* n_frames above this → MM_E_UNPROCESSABLE */
    double budget_seconds; /* wall-clock time for the whole call → MM_E_TIMEOUT */
    int min_edge_hint;     /* the shortest edge the caller will resize to
                            * (e.g. 224), as in mm_image_decode: frames whose
                            * shortest edge exceeds MM_VIDEO_HINT_RATIO * hint
                            * are downscaled to it (swscale bicubic, which
                            * antialiases); 0: source resolution */
    int threads;           /* decoder threads; <= 0: 1 */
} mm_video_limits_t;

/* Frames are kept at >= this multiple of min_edge_hint. Measured on a
 * 1920x1080 test pattern (sharp edges, a worst case) resized afterwards to
 * 398x224 with mm_image_resize (bicubic): mean |diff| 0.17 levels, max 19,
 * against resizing the full-size frame; 5.8x less memory per frame. */
#define MM_VIDEO_HINT_RATIO 2

/* One sampled frame, upright (rotation applied), square pixels. */
typedef struct mm_video_frame {
    unsigned char *rgb; /* (h, w, 3) RGB8, row stride w*3, owned by mm_video_t */
    int w, h;
    double time;        /* seconds from the first frame of the stream */
    int64_t pts;        /* presentation timestamp, in tb_num/tb_den units */
    int index;          /* frame number in display order (0-based) */
} mm_video_frame_t;

typedef struct mm_video {
    int n;                    /* frames returned, 1..n_frames */
    mm_video_frame_t *frames; /* (n), in time order, no two the same frame */
    double duration;          /* seconds, from the first frame's start to the
                               * last frame's end, measured on the packets */
    int n_stream_frames;      /* frames in the video stream */
    int width, height;        /* coded size of the stream (before rotation) */
    int rotation;             /* display transform applied to the stored frames: */
    int flipped;              /* mirror left-right if flipped, then rotate
                               * clockwise by rotation (0, 90, 180, 270) */
    int tb_num, tb_den;       /* stream time base */
    char format[16];          /* demuxer, e.g. "mov", "matroska", "gif" */
    char codec[16];           /* decoder, e.g. "h264", "vp9" */
} mm_video_t;

/* Silence libav* logging for the whole process (av_log level QUIET and a
 * callback that drops everything). Idempotent and thread-safe (runs once);
 * mm_video_sample calls it too, so calling it from the init chain only
 * makes it explicit. */
void mm_video_init(void);

/* Sample up to n_frames frames from the video in buf[0..len) into *out.
 *
 * Sampling rule. The frame timestamps of the best video stream are read
 * first from the packets, without decoding (so the duration is measured,
 * never guessed from a bitrate, and works for streams with no duration in
 * their header, e.g. Matroska/WebM written to a pipe). With m frames whose
 * first starts at t0 and last ends at t0 + D:
 *   - m <= n_frames: every frame is returned once (n = m, no duplicates;
 *     frames of a damaged stream that do not match the packet scan are
 *     skipped, so n can be smaller);
 *   - otherwise target times t_i = t0 + D * (i + 0.5) / n_frames,
 *     i = 0..n_frames-1, and frame i is the one on screen at t_i: the last
 *     frame with pts <= t_i (what a player shows at t_i). A frame chosen for
 *     two targets (variable frame rate, a long-held frame) is returned once,
 *     so n can be smaller than n_frames.
 * Frames are found by seeking to the keyframe before t_i (when the index
 * says it is ahead of the decoder) and decoding forward in presentation
 * order (best_effort_timestamp, so B-frames are exact); non-reference
 * frames shown before the wanted one are skipped. The cost is decoding from
 * keyframe to target: a stream with a single keyframe is decoded through
 * once (about 110 ms of CPU for 8 frames of a 10 s 640x360 H.264 clip).
 * n_frames above lim->max_frames is an error, not clamped. The frames take
 * n * w * h * 3 bytes: bound them with max_frames, max_pixels and
 * min_edge_hint.
 *
 * Damage. A truncated file is refused (MM_E_INVALID) when the demuxer
 * fails, when its index lists frames past the data, or when it declares a
 * duration in its header and all streams end more than max(1 s, 10%)
 * early. Packets the decoder rejects inside an otherwise readable file
 * are skipped, as players do; only a file with no decodable frame (or
 * 1000 decoder errors in a row) fails.
 *
 * Budget. budget_seconds is checked in the read callback, in the
 * AVIOInterruptCB (stream probing) and between frames, so a call returns
 * soon after the deadline; a single frame's decode is not interruptible
 * (max_pixels bounds it).
 *
 * Pixels: any pixel format is converted with libswscale to RGB8 (YUV matrix
 * and range from the frame's tags; untagged YUV is BT.601, as swscale and
 * PyAV do). Non-square pixels (sample aspect ratio between 1/4 and 4) are
 * stretched to square, then min_edge_hint may downscale, then the display
 * matrix (rotation by a multiple of 90 degrees, and mirroring) is applied so
 * frames come out as a browser shows them. Other angles are ignored. Alpha
 * is dropped without compositing. Interlaced video is not deinterlaced.
 *
 * lim may be NULL (no limits). Returns 0, or:
 *   MM_E_INVALID (empty, corrupt or truncated data, n_frames < 1, nothing
 *     decodable), MM_E_UNSUPPORTED (unknown container, a format that is not
 *     a video such as an image or a playlist, no decoder),
 *   MM_E_UNPROCESSABLE (no video stream, including audio-only files such as
 *     WAV/MP3/M4A; over max_seconds or max_frames),
 *   MM_E_TOOBIG (over max_bytes or max_pixels),
 *   MM_E_TIMEOUT (over budget_seconds), MM_E_NOMEM, MM_ERR,
 * with a one-line reason in err. On error *out is zeroed and owns nothing.
 * buf is only read, and not referenced after the call. Thread-safe as long
 * as each thread uses its own *out. */
int mm_video_sample(const void *buf, size_t len, int n_frames, const mm_video_limits_t *lim,
                    mm_video_t *out, char *err, size_t errlen);

/* Free the frames of v (NULL-safe) and zero it. */
void mm_video_free(mm_video_t *v);

#endif
