/* Image decoding (JPEG, PNG, WebP, GIF → 8-bit RGB) and resampling that is
 * bit-exact with what Hugging Face image processors use. Decoding works on a
 * memory buffer only: a request never names a file. The pixels match what
 * Hugging Face gets from `PIL.Image.open(f).convert("RGB")`. */
#ifndef MMEMBED_IMAGE_H
#define MMEMBED_IMAGE_H

#include <stddef.h>

/* A decoded image. `rgb` is (h, w, 3) RGB8, row stride w*3, owned by the
 * struct (free with mm_image_free). src_w/src_h are the dimensions stored in
 * the file; they differ from w/h only when the JPEG decoder used DCT scaling
 * (see mm_image_decode), and the preprocessor sizes its output from them so
 * that scaling never changes the output geometry. */
typedef struct mm_image {
    int w, h;            /* decoded pixels */
    int src_w, src_h;    /* pixels in the file */
    unsigned char *rgb;  /* (h, w, 3) */
} mm_image_t;

/* PIL resampling filter codes (Image.Resampling), as found in
 * preprocessor_config.json "resample". NEAREST is not supported. */
enum {
    MM_RESAMPLE_NEAREST = 0,
    MM_RESAMPLE_LANCZOS = 1,
    MM_RESAMPLE_BILINEAR = 2,
    MM_RESAMPLE_BICUBIC = 3,
    MM_RESAMPLE_BOX = 4,
    MM_RESAMPLE_HAMMING = 5,
};

/* Format from the magic bytes: "jpeg", "png", "webp", "gif", or NULL when
 * unknown (or buf too short to tell). Never looks past the first 12 bytes. */
const char *mm_image_sniff(const void *buf, size_t len);

/* Decode buf[0..len) into *out (RGB8), always at full size. The format is
 * sniffed from magic bytes.
 * min_edge_hint: the resize target (mm_preproc_min_edge) or 0; advisory
 *   only, the result does not depend on it (see mm_image_decode_scaled).
 * max_pixels: limit on width*height read from the header before any pixel is
 *   decoded (<= 0: no limit other than what fits in memory).
 * Animated GIF/WebP: the first frame. Alpha is dropped without compositing,
 * as PIL's convert("RGB") does. EXIF orientation is not applied (neither
 * does Hugging Face).
 * Returns 0, MM_E_INVALID (empty, truncated or corrupt data),
 * MM_E_UNSUPPORTED (unknown format), MM_E_TOOBIG (over max_pixels),
 * MM_E_UNPROCESSABLE (a JPEG with more than MM_IMAGE_MAX_SCANS scans),
 * MM_E_TIMEOUT (over the decode budget, see mm_image_set_budget) or
 * MM_E_NOMEM, with a one-line reason in err. Nothing is printed. *out is
 * overwritten (pixels it held are not freed); on success the caller owns
 * out->rgb (mm_image_free), on error *out is zeroed and owns nothing. */
int mm_image_decode(const void *buf, size_t len, int min_edge_hint, long max_pixels,
                    mm_image_t *out, char *err, size_t errlen);

/* As mm_image_decode, but a JPEG whose shortest edge is at least
 * 2 * MM_IMAGE_DCT_MIN_RATIO * min_edge is decoded with libjpeg DCT scaling
 * (1/2, 1/4 or 1/8, keeping the decoded shortest edge >= MM_IMAGE_DCT_MIN_RATIO
 * * min_edge); out->src_w/src_h keep the file's size so preprocessing keeps
 * its geometry. This is an approximation, not HF-exact: against a full
 * decode no ratio up to 13x stayed within the 2e-2 tolerance on the fixture
 * content (sharp edges keep a 2-3 level error, max 0.03-0.044, mean ~0.001
 * at ratio >= 8), and the Huffman decoding that dominates a JPEG's cost is
 * not reduced (2000x1500 at 1/4: 9 ms instead of 11 ms). For callers that
 * trade exactness for speed on huge photos. */
int mm_image_decode_scaled(const void *buf, size_t len, int min_edge, long max_pixels,
                           mm_image_t *out, char *err, size_t errlen);

/* The same with the floor given directly: a JPEG is decoded at the
 * smallest of 1/8, 1/4, 1/2 that keeps its shortest edge >= keep_edge (the
 * server's `jpeg_dct_scaling` = keep_edge / resize target). */
int mm_image_decode_keep(const void *buf, size_t len, int keep_edge, long max_pixels,
                         mm_image_t *out, char *err, size_t errlen);

/* Decode budget. Pixels are bounded by max_pixels, but not the work per
 * pixel: a progressive JPEG may repeat its scans thousands of times (each
 * a full pass over the image; 600 scans of a 551 KB photo took 14.6 s
 * instead of 0.58 s). So a JPEG may have at most MM_IMAGE_MAX_SCANS scans
 * (typical encoders write 2-12; libjpeg-turbo's djpeg offers -maxscans,
 * nvImageCodec defaults to 256) and decoding has a wall-clock budget,
 * checked once per row of every JPEG scan (libjpeg's progress monitor) and
 * every few kilobytes of PNG or GIF input. WebP has no hook; it decodes
 * one frame in one pass bounded by max_pixels. */
#define MM_IMAGE_MAX_SCANS 100
#define MM_IMAGE_BUDGET_DEFAULT 5.0   /* seconds (limits.image_budget) */

/* Set the budget, in seconds, of the process (config, before serving);
 * <= 0: no time limit. */
void mm_image_set_budget(double seconds);

/* Start a request on the calling thread: every decode on this thread until
 * the next call shares one budget, so a request of many images costs at
 * most the budget, not the budget per image. A thread that never calls it
 * gives each decode the whole budget. */
void mm_image_budget_begin(void);

/* For a thread that interleaves the decodes of several requests (a batch
 * of /embed/image requests): the seconds the current request has left
 * (INFINITY with no budget; negative once over it), and resuming a
 * request with what it had left, so each request's decodes, and nothing
 * else, count against its own budget. */
double mm_image_budget_left(void);
void mm_image_budget_resume(double left);

/* Release the pixels of img (NULL-safe) and zero it. */
void mm_image_free(mm_image_t *img);

/* mm_image_decode_scaled keeps the DCT-scaled shortest edge >= this
 * multiple of min_edge (errors measured in tests/unit/test_image.c). */
#define MM_IMAGE_DCT_MIN_RATIO 8

/* Integer arithmetic of mm_image_resize. Same filter geometry; they differ
 * in the last bit of rounding in ~1% of pixels. */
enum {
    /* torch interpolate(antialias=True) on uint8, as torchvision's resize
     * runs it: the transformers v5 default (torchvision backend) */
    MM_RESIZE_TORCHVISION = 0,
    /* Pillow's Image.resize: transformers' PIL backend and v4 "slow"
     * image processors */
    MM_RESIZE_PIL = 1,
};

/* Resample a window of an RGB8 image, antialiased (separable convolution,
 * support widened by the downscale factor, horizontal pass then vertical,
 * fixed-point weights, clip to uint8 after each pass), bit-exact with the
 * implementation `flavor` names (MM_RESIZE_*).
 * The virtual output is dw x dh; only the window [x0, x0+ww) x [y0, y0+wh)
 * of it is computed and written to dst (row stride dstride bytes), so a
 * resize followed by a crop costs only the cropped pixels. Pixels are
 * identical to the full resize followed by the crop.
 * filter: MM_RESAMPLE_* (not NEAREST). Allocates its scratch buffers and
 * frees them before returning. Returns 0, MM_E_INVALID (bad sizes/window),
 * MM_E_UNSUPPORTED (filter or flavor) or MM_E_NOMEM. */
int mm_image_resize(const unsigned char *src, int sw, int sh, size_t sstride,
                    int dw, int dh, int x0, int y0, int ww, int wh,
                    unsigned char *dst, size_t dstride, int filter, int flavor);

/* Encode an RGB8 image (h rows of stride bytes, w*3 used) as an 8-bit RGB
 * PNG, losslessly: decoding it gives the same pixels back. level: zlib
 * 0-9 (-1: 6). *out is malloc'd (the caller frees it), *outlen its size.
 * Returns 0, MM_E_INVALID (bad geometry), MM_E_NOMEM or MM_ERR. */
int mm_image_encode_png(const unsigned char *rgb, int w, int h, size_t stride, int level, unsigned char **out,
                        size_t *outlen, char *err, size_t errlen);

#endif
