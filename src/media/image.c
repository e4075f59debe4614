/* Image decoding from memory to RGB8, matching PIL's
 * Image.open(...).convert("RGB") as Hugging Face processors use it.
 *
 * PIL behaviours reproduced here (Pillow 12 sources):
 *  - JPEG: libjpeg defaults (ISLOW IDCT, fancy upsampling); CMYK/YCCK are
 *    read as Adobe-inverted CMYK ("CMYK;I") and converted with
 *    R = 255-K - (255-K)*C/255 (Convert.c cmyk2rgb).
 *  - PNG: 16-bit samples keep the high byte ("RGB;16B", "LA;16B"), except
 *    16-bit grayscale which PIL opens as "I;16" and converts by clipping to
 *    255; palette and gray are expanded; alpha/tRNS are dropped without
 *    compositing; gamma/ICC are ignored.
 *  - WebP: the first frame on a transparent-black canvas (WebPAnimDecoder,
 *    as Pillow uses for every WebP), alpha dropped.
 *  - GIF: the first frame on a canvas of the logical screen (grown if the
 *    frame sticks out), filled with the transparency index if the frame has
 *    one, else index 0; indices map through the local palette, else the
 *    global one (black past its end), else they are gray levels.
 * Decoders are quiet: libjpeg/libpng messages go into the error buffer,
 * never to stderr, and every failure returns a status instead of exiting. */
#include "mmembed/image.h"
#include "mmembed/common.h"

#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gif_lib.h>
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <webp/decode.h>
#include <webp/demux.h>

/* ------------------------------------------------------------------ */
/* Shared helpers                                                      */
/* ------------------------------------------------------------------ */

const char *mm_image_sniff(const void *buf, size_t len)
{
    const unsigned char *b = buf;
    if (!b)
        return NULL;
    if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF)
        return "jpeg";
    if (len >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "png";
    if (len >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0))
        return "gif";
    if (len >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0)
        return "webp";
    return NULL;
}

void mm_image_free(mm_image_t *img)
{
    if (!img)
        return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

/* Dimensions from a header, checked before any pixel is decoded. */
static int check_dims(const char *fmt, long long w, long long h, long max_pixels, char *err,
                      size_t errlen)
{
    if (w <= 0 || h <= 0)
        return mm_errf(err, errlen, MM_E_INVALID, "invalid %s: empty image (%lldx%lld)", fmt, w, h);
    /* 32-bit header fields: the product may not fit in long long, so compare
     * by division (found by tests/fuzz: image-png-dims-overflow) */
    if (max_pixels > 0 && w > max_pixels / h)
        return mm_errf(err, errlen, MM_E_TOOBIG, "image too large: %lldx%lld pixels (limit %ld)", w,
                       h, max_pixels);
    /* without a caller limit, still refuse what cannot be addressed */
    if ((unsigned long long)w > (SIZE_MAX / 8) / (unsigned long long)h)
        return mm_errf(err, errlen, MM_E_TOOBIG, "image too large: %lldx%lld pixels", w, h);
    return MM_OK;
}

static unsigned char *alloc_rgb(int w, int h)
{
    return malloc((size_t)w * (size_t)h * 3);
}

/* ------------------------------------------------------------------ */
/* Decode budget                                                       */
/* ------------------------------------------------------------------ */

/* Seconds of decoding one request may spend (process-wide, from config),
 * and the deadline of the request the calling thread is serving (0: none
 * begun, so each decode gets the whole budget). */
static double budget_s = MM_IMAGE_BUDGET_DEFAULT;
static _Thread_local double req_deadline;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void mm_image_set_budget(double seconds)
{
    budget_s = seconds > 0 ? seconds : 0;
}

void mm_image_budget_begin(void)
{
    req_deadline = budget_s > 0 ? now_s() + budget_s : 0;
}

double mm_image_budget_left(void)
{
    if (budget_s <= 0) return INFINITY;
    return req_deadline > 0 ? req_deadline - now_s() : budget_s;
}

void mm_image_budget_resume(double left)
{
    req_deadline = budget_s > 0 ? now_s() + MM_MIN(left, budget_s) : 0;
}

static double decode_deadline(void)
{
    if (req_deadline > 0) return req_deadline;
    return budget_s > 0 ? now_s() + budget_s : 0;
}

static int over_deadline(double deadline)
{
    return deadline > 0 && now_s() > deadline;
}

static int budget_error(const char *fmt, char *err, size_t errlen)
{
    return mm_errf(err, errlen, MM_E_TIMEOUT, "%s decoding took longer than the %g s budget (limits.image_budget)",
                   fmt, budget_s);
}

/* ------------------------------------------------------------------ */
/* JPEG                                                                */
/* ------------------------------------------------------------------ */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    int code;                  /* status for the longjmp; 0: MM_E_INVALID */
    char msg[JMSG_LENGTH_MAX];
} jpeg_err_t;

/* libjpeg calls the progress monitor once per iMCU row of every scan it
 * reads and of the output pass, so a hostile file (a progressive JPEG
 * whose scans are repeated thousands of times: each one is a full pass
 * over the coefficients) is stopped within a row of its limit. This is
 * what djpeg -maxscans does, with a clock added. */
typedef struct {
    struct jpeg_progress_mgr pub;
    jpeg_err_t *err;
    double deadline;           /* CLOCK_MONOTONIC seconds; 0: none */
} jpeg_budget_t;

static void jpeg_on_progress(j_common_ptr c)
{
    jpeg_budget_t *b = (jpeg_budget_t *)c->progress;
    int scan = ((j_decompress_ptr)c)->input_scan_number;
    if (scan > MM_IMAGE_MAX_SCANS) {
        b->err->code = MM_E_UNPROCESSABLE;
        snprintf(b->err->msg, sizeof b->err->msg, "JPEG has more than %d scans", MM_IMAGE_MAX_SCANS);
        longjmp(b->err->jb, 1);
    }
    if (over_deadline(b->deadline)) {
        b->err->code = MM_E_TIMEOUT;
        budget_error("JPEG", b->err->msg, sizeof b->err->msg);
        longjmp(b->err->jb, 1);
    }
}

static void jpeg_on_error(j_common_ptr c)
{
    jpeg_err_t *e = (jpeg_err_t *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

/* libjpeg reports a truncated stream as a warning and pads with gray; PIL
 * refuses truncated files, so that one warning is an error here. Other
 * warnings (extraneous bytes, ...) are ignored, as PIL ignores them. */
static void jpeg_on_message(j_common_ptr c, int level)
{
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) {
        jpeg_err_t *e = (jpeg_err_t *)c->err;
        snprintf(e->msg, sizeof e->msg, "truncated data");
        longjmp(e->jb, 1);
    }
}

static void jpeg_on_output(j_common_ptr c)
{
    (void)c; /* never print */
}

/* PIL: CMYK;I unpack (invert), then cmyk2rgb with MULDIV255 rounding. The
 * two inversions cancel: with c, k as stored, R = k - round(k*(255-c)/255). */
static void cmyk_row_to_rgb(const unsigned char *in, unsigned char *out, int w)
{
    for (int x = 0; x < w; x++, in += 4, out += 3) {
        int nk = in[3];
        for (int i = 0; i < 3; i++) {
            int t = (255 - in[i]) * nk + 128;
            int v = nk - (((t >> 8) + t) >> 8);
            out[i] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

static int decode_jpeg(const unsigned char *buf, size_t len, int hint, long max_pixels,
                       mm_image_t *out, char *err, size_t errlen)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_err_t jerr;
    jpeg_budget_t budget;
    unsigned char *volatile pix = NULL;
    unsigned char *volatile row = NULL;
    int rc;

    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = jpeg_on_error;
    jerr.pub.emit_message = jpeg_on_message;
    jerr.pub.output_message = jpeg_on_output;
    jerr.code = 0;
    jerr.msg[0] = 0;
    if (setjmp(jerr.jb)) {
        if (jerr.code)
            rc = mm_errf(err, errlen, jerr.code, "%s", jerr.msg);
        else
            rc = mm_errf(err, errlen, MM_E_INVALID, "invalid JPEG: %s", jerr.msg);
        goto fail;
    }
    jpeg_create_decompress(&cinfo);
    memset(&budget, 0, sizeof budget);
    budget.pub.progress_monitor = jpeg_on_progress;
    budget.err = &jerr;
    budget.deadline = decode_deadline();
    cinfo.progress = &budget.pub;
    jpeg_mem_src(&cinfo, buf, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);

    rc = check_dims("JPEG", cinfo.image_width, cinfo.image_height, max_pixels, err, errlen);
    if (rc != MM_OK)
        goto fail;
    int cmyk = 0;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        cinfo.out_color_space = JCS_RGB;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        cinfo.out_color_space = JCS_CMYK;
        cmyk = 1;
        break;
    default:
        rc = mm_errf(err, errlen, MM_E_UNSUPPORTED, "unsupported JPEG color space (%d components)",
                     cinfo.num_components);
        goto fail;
    }

    /* mm_image_decode_scaled / _keep only: decode at 1/8, 1/4 or 1/2 (the
     * smallest) while the shortest edge stays >= hint (approximate). */
    if (hint > 0) {
        long se = MM_MIN((long)cinfo.image_width, (long)cinfo.image_height);
        for (int d = 8; d >= 2; d /= 2) {
            if ((se + d - 1) / d >= (long)hint) {
                cinfo.scale_num = 1;
                cinfo.scale_denom = (unsigned)d;
                break;
            }
        }
    }
    jpeg_start_decompress(&cinfo);
    int w = (int)cinfo.output_width, h = (int)cinfo.output_height;
    if ((int)cinfo.output_components != (cmyk ? 4 : 3)) {
        rc = mm_errf(err, errlen, MM_E_INVALID, "invalid JPEG: unexpected component count");
        goto fail;
    }
    if (!(pix = alloc_rgb(w, h)) || (cmyk && !(row = malloc((size_t)w * 4)))) {
        rc = mm_errf(err, errlen, MM_E_NOMEM, "out of memory decoding %dx%d JPEG", w, h);
        goto fail;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        unsigned char *dst = pix + (size_t)cinfo.output_scanline * w * 3;
        JSAMPROW r = cmyk ? row : dst;
        if (jpeg_read_scanlines(&cinfo, &r, 1) != 1) {
            rc = mm_errf(err, errlen, MM_E_INVALID, "invalid JPEG: truncated data");
            goto fail;
        }
        if (cmyk)
            cmyk_row_to_rgb(row, dst, w);
    }
    /* no jpeg_finish_decompress: bytes after the last scanline don't matter */
    out->w = w;
    out->h = h;
    out->src_w = (int)cinfo.image_width;
    out->src_h = (int)cinfo.image_height;
    out->rgb = pix;
    pix = NULL;
    rc = MM_OK;
fail:
    jpeg_destroy_decompress(&cinfo);
    free(row);
    free(pix);
    return rc;
}

/* ------------------------------------------------------------------ */
/* PNG                                                                 */
/* ------------------------------------------------------------------ */

typedef struct {
    const unsigned char *buf;
    size_t len, pos;
    double deadline;     /* CLOCK_MONOTONIC seconds; 0: none */
    int timed_out;
    char msg[128];
} png_src_t;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_src_t *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void png_read_mem(png_structp png, png_bytep dst, png_size_t n)
{
    png_src_t *s = png_get_io_ptr(png);
    /* libpng reads as it inflates, so this runs every few kilobytes of
     * input; the inflated output itself is bounded by max_pixels */
    if (over_deadline(s->deadline)) {
        s->timed_out = 1;
        png_error(png, "over budget");
    }
    if (n > s->len - s->pos)
        png_error(png, "truncated data");
    memcpy(dst, s->buf + s->pos, n);
    s->pos += n;
}

static int decode_png(const unsigned char *buf, size_t len, long max_pixels, mm_image_t *out,
                      char *err, size_t errlen)
{
    /* IHDR is always first: check the size before libpng reads any chunk */
    if (len >= 24 && memcmp(buf + 12, "IHDR", 4) == 0) {
        long long w = (long long)buf[16] << 24 | buf[17] << 16 | buf[18] << 8 | buf[19];
        long long h = (long long)buf[20] << 24 | buf[21] << 16 | buf[22] << 8 | buf[23];
        int rc = check_dims("PNG", w, h, max_pixels, err, errlen);
        if (rc != MM_OK)
            return rc;
    }
    png_src_t src = {buf, len, 0, decode_deadline(), 0, ""};
    png_structp png;
    png_infop info = NULL;
    unsigned char *volatile pix = NULL;
    unsigned char *volatile gray16 = NULL;
    png_bytep *volatile rows = NULL;
    int rc;

    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    if (!png || !(info = png_create_info_struct(png))) {
        png_destroy_read_struct(&png, NULL, NULL);
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory creating PNG decoder");
    }
    if (setjmp(png_jmpbuf(png))) {
        rc = src.timed_out ? budget_error("PNG", err, errlen)
                           : mm_errf(err, errlen, MM_E_INVALID, "invalid PNG: %s", src.msg);
        goto fail;
    }
    png_set_read_fn(png, &src, png_read_mem);
    /* Skip every ancillary chunk but tRNS (num_chunks -1: libpng's list of
     * the known ones): the pixels never depend on them, and compressed
     * text/ICC chunks (zTXt, iTXt, iCCP) would otherwise each be inflated,
     * up to 1000 of them of up to 8 MB each, a decompression bomb that
     * max_pixels does not bound. Their CRCs are still read past. */
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
    png_read_info(png, info);

    png_uint_32 w, h;
    int depth, ctype, ilace;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, &ilace, NULL, NULL);
    rc = check_dims("PNG", w, h, max_pixels, err, errlen);
    if (rc != MM_OK)
        goto fail;

    /* PIL opens 16-bit gray as "I;16" and clips to 255 on convert("RGB");
     * every other 16-bit layout keeps the high byte. */
    int is_gray16 = depth == 16 && ctype == PNG_COLOR_TYPE_GRAY;
    if (depth == 16 && !is_gray16)
        png_set_strip_16(png);
    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (!is_gray16 && (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA))
        png_set_gray_to_rgb(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    size_t rowbytes = png_get_rowbytes(png, info);
    size_t want = (size_t)w * (is_gray16 ? 2 : 3);
    if (rowbytes != want) {
        rc = mm_errf(err, errlen, MM_E_INVALID, "invalid PNG: unexpected row size");
        goto fail;
    }
    pix = alloc_rgb((int)w, (int)h);
    if (is_gray16)
        gray16 = malloc(want * h);
    rows = malloc(h * sizeof *rows);
    if (!pix || !rows || (is_gray16 && !gray16)) {
        rc = mm_errf(err, errlen, MM_E_NOMEM, "out of memory decoding %ux%u PNG", (unsigned)w,
                     (unsigned)h);
        goto fail;
    }
    for (png_uint_32 y = 0; y < h; y++)
        rows[y] = (is_gray16 ? gray16 : pix) + y * want;
    png_read_image(png, rows);

    if (is_gray16) {
        size_t n = (size_t)w * h;
        for (size_t i = 0; i < n; i++) {
            const unsigned char *s = gray16 + 2 * i; /* big-endian */
            unsigned char v = s[0] ? 255 : s[1];
            pix[3 * i] = pix[3 * i + 1] = pix[3 * i + 2] = v;
        }
    }
    out->w = out->src_w = (int)w;
    out->h = out->src_h = (int)h;
    out->rgb = pix;
    pix = NULL;
    rc = MM_OK;
fail:
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    free(gray16);
    free(pix);
    return rc;
}

/* ------------------------------------------------------------------ */
/* WebP                                                                */
/* ------------------------------------------------------------------ */

static int decode_webp(const unsigned char *buf, size_t len, long max_pixels, mm_image_t *out,
                       char *err, size_t errlen)
{
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(buf, len, &f);
    if (st == VP8_STATUS_NOT_ENOUGH_DATA)
        return mm_errf(err, errlen, MM_E_INVALID, "invalid WebP: truncated data");
    if (st != VP8_STATUS_OK)
        return mm_errf(err, errlen, MM_E_INVALID, "invalid WebP (status %d)", (int)st);
    int rc = check_dims("WebP", f.width, f.height, max_pixels, err, errlen);
    if (rc != MM_OK)
        return rc;

    int w = f.width, h = f.height;
    unsigned char *pix = alloc_rgb(w, h);
    if (!pix)
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory decoding %dx%d WebP", w, h);

    if (!f.has_animation) {
        if (!WebPDecodeRGBInto(buf, len, pix, (size_t)w * h * 3, w * 3)) {
            free(pix);
            return mm_errf(err, errlen, MM_E_INVALID, "invalid WebP: corrupt or truncated data");
        }
    } else {
        WebPData data = {buf, len};
        WebPAnimDecoderOptions opt;
        WebPAnimInfo ai;
        uint8_t *frame;
        int ts;
        if (!WebPAnimDecoderOptionsInit(&opt)) {
            free(pix);
            return mm_errf(err, errlen, MM_ERR, "WebP decoder version mismatch");
        }
        opt.color_mode = MODE_RGBA;
        opt.use_threads = 0;
        WebPAnimDecoder *dec = WebPAnimDecoderNew(&data, &opt);
        if (!dec || !WebPAnimDecoderGetInfo(dec, &ai) || (int)ai.canvas_width != w ||
            (int)ai.canvas_height != h || !WebPAnimDecoderGetNext(dec, &frame, &ts)) {
            WebPAnimDecoderDelete(dec);
            free(pix);
            return mm_errf(err, errlen, MM_E_INVALID, "invalid animated WebP: corrupt or truncated data");
        }
        size_t n = (size_t)w * h;
        for (size_t i = 0; i < n; i++) {
            pix[3 * i] = frame[4 * i];
            pix[3 * i + 1] = frame[4 * i + 1];
            pix[3 * i + 2] = frame[4 * i + 2];
        }
        WebPAnimDecoderDelete(dec);
    }
    out->w = out->src_w = w;
    out->h = out->src_h = h;
    out->rgb = pix;
    return MM_OK;
}

/* ------------------------------------------------------------------ */
/* GIF                                                                 */
/* ------------------------------------------------------------------ */

typedef struct {
    const unsigned char *buf;
    size_t len, pos;
    double deadline;     /* CLOCK_MONOTONIC seconds; 0: none */
    int timed_out;
} gif_src_t;

static int gif_read(GifFileType *g, GifByteType *dst, int n)
{
    gif_src_t *s = g->UserData;
    /* giflib reads a sub-block (<= 255 bytes) at a time: a read that
     * returns short makes the call in progress fail */
    if (over_deadline(s->deadline)) {
        s->timed_out = 1;
        return 0;
    }
    size_t k = n > 0 ? (size_t)n : 0;
    if (k > s->len - s->pos)
        k = s->len - s->pos;
    memcpy(dst, s->buf + s->pos, k);
    s->pos += k;
    return (int)k;
}

static int gif_fail(GifFileType *g, int code, const char *what, char *err, size_t errlen)
{
    if (((gif_src_t *)g->UserData)->timed_out)
        return budget_error("GIF", err, errlen);
    const char *why = GifErrorString(g->Error);
    return mm_errf(err, errlen, code, "invalid GIF: %s%s%s", what, why ? ": " : "", why ? why : "");
}

static int decode_gif(const unsigned char *buf, size_t len, long max_pixels, mm_image_t *out,
                      char *err, size_t errlen)
{
    gif_src_t src = {buf, len, 0, decode_deadline(), 0};
    int gerr = 0, rc, trans = -1;
    unsigned char *idx = NULL, *pix = NULL;
    GifFileType *g = DGifOpen(&src, gif_read, &gerr);
    if (!g) {
        const char *why = GifErrorString(gerr);
        return mm_errf(err, errlen, gerr == D_GIF_ERR_NOT_ENOUGH_MEM ? MM_E_NOMEM : MM_E_INVALID,
                       "invalid GIF: %s", why ? why : "cannot read header");
    }

    /* Skip to the first image descriptor, remembering the transparency
     * index of the graphic control extension that precedes it. */
    for (;;) {
        GifRecordType rt;
        if (DGifGetRecordType(g, &rt) == GIF_ERROR) {
            rc = gif_fail(g, MM_E_INVALID, "bad record", err, errlen);
            goto out;
        }
        if (rt == IMAGE_DESC_RECORD_TYPE)
            break;
        if (rt == TERMINATE_RECORD_TYPE) {
            rc = mm_errf(err, errlen, MM_E_INVALID, "invalid GIF: no image");
            goto out;
        }
        if (rt != EXTENSION_RECORD_TYPE)
            continue;
        int code;
        GifByteType *ext;
        if (DGifGetExtension(g, &code, &ext) == GIF_ERROR) {
            rc = gif_fail(g, MM_E_INVALID, "bad extension", err, errlen);
            goto out;
        }
        if (code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4 && (ext[1] & 1))
            trans = ext[4];
        while (ext) {
            if (DGifGetExtensionNext(g, &ext) == GIF_ERROR) {
                rc = gif_fail(g, MM_E_INVALID, "bad extension", err, errlen);
                goto out;
            }
        }
    }
    if (DGifGetImageDesc(g) == GIF_ERROR) {
        rc = gif_fail(g, MM_E_INVALID, "bad image descriptor", err, errlen);
        goto out;
    }

    const GifImageDesc *d = &g->Image;
    long long fx = d->Left, fy = d->Top, fw = d->Width, fh = d->Height;
    long long cw = MM_MAX((long long)g->SWidth, fx + fw), ch = MM_MAX((long long)g->SHeight, fy + fh);
    if ((rc = check_dims("GIF", cw, ch, max_pixels, err, errlen)) != MM_OK)
        goto out;
    if (fw <= 0 || fh <= 0) {
        rc = mm_errf(err, errlen, MM_E_INVALID, "invalid GIF: empty frame");
        goto out;
    }

    idx = malloc((size_t)(cw * ch));
    pix = alloc_rgb((int)cw, (int)ch);
    if (!idx || !pix) {
        rc = mm_errf(err, errlen, MM_E_NOMEM, "out of memory decoding %lldx%lld GIF", cw, ch);
        goto out;
    }
    memset(idx, trans >= 0 ? trans : 0, (size_t)(cw * ch));
    static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
    int passes = d->Interlace ? 4 : 1;
    for (int p = 0; p < passes; p++) {
        int y0 = d->Interlace ? start[p] : 0, dy = d->Interlace ? step[p] : 1;
        for (long long y = y0; y < fh; y += dy) {
            if (DGifGetLine(g, idx + (size_t)((fy + y) * cw + fx), (int)fw) == GIF_ERROR) {
                rc = gif_fail(g, MM_E_INVALID, "truncated or corrupt image data", err, errlen);
                goto out;
            }
        }
    }

    /* PIL: without any palette the frame is mode "L" (index = gray); with
     * one, entries past its end are black (Pillow's palettes start zeroed) */
    unsigned char pal[256][3];
    const ColorMapObject *cm = d->ColorMap ? d->ColorMap : g->SColorMap;
    for (int i = 0; i < 256; i++)
        pal[i][0] = pal[i][1] = pal[i][2] = cm ? 0 : (unsigned char)i;
    if (cm) {
        int n = MM_MIN(cm->ColorCount, 256);
        for (int i = 0; i < n; i++) {
            pal[i][0] = cm->Colors[i].Red;
            pal[i][1] = cm->Colors[i].Green;
            pal[i][2] = cm->Colors[i].Blue;
        }
    }
    size_t n = (size_t)(cw * ch);
    for (size_t i = 0; i < n; i++)
        memcpy(pix + 3 * i, pal[idx[i]], 3);

    out->w = out->src_w = (int)cw;
    out->h = out->src_h = (int)ch;
    out->rgb = pix;
    pix = NULL;
    rc = MM_OK;
out:
    DGifCloseFile(g, &gerr);
    free(idx);
    free(pix);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Entry point                                                         */
/* ------------------------------------------------------------------ */

static int decode(const void *buf, size_t len, int dct_edge, long max_pixels, mm_image_t *out,
                  char *err, size_t errlen)
{
    if (!out)
        return mm_errf(err, errlen, MM_E_INVALID, "no output image");
    memset(out, 0, sizeof *out);
    if (!buf || len == 0)
        return mm_errf(err, errlen, MM_E_INVALID, "empty image");
    const char *fmt = mm_image_sniff(buf, len);
    if (!fmt)
        return mm_errf(err, errlen, MM_E_UNSUPPORTED, "unsupported image format");

    int rc;
    switch (fmt[0]) {
    case 'j': rc = decode_jpeg(buf, len, dct_edge, max_pixels, out, err, errlen); break;
    case 'p': rc = decode_png(buf, len, max_pixels, out, err, errlen); break;
    case 'w': rc = decode_webp(buf, len, max_pixels, out, err, errlen); break;
    default: rc = decode_gif(buf, len, max_pixels, out, err, errlen); break;
    }
    if (rc != MM_OK)
        memset(out, 0, sizeof *out);
    return rc;
}

int mm_image_decode(const void *buf, size_t len, int min_edge_hint, long max_pixels,
                    mm_image_t *out, char *err, size_t errlen)
{
    (void)min_edge_hint; /* exact decoding never scales */
    return decode(buf, len, 0, max_pixels, out, err, errlen);
}

int mm_image_decode_scaled(const void *buf, size_t len, int min_edge, long max_pixels,
                           mm_image_t *out, char *err, size_t errlen)
{
    return decode(buf, len, min_edge > 0 ? MM_IMAGE_DCT_MIN_RATIO * min_edge : 0, max_pixels, out, err, errlen);
}

int mm_image_decode_keep(const void *buf, size_t len, int keep_edge, long max_pixels,
                         mm_image_t *out, char *err, size_t errlen)
{
    return decode(buf, len, keep_edge > 0 ? keep_edge : 0, max_pixels, out, err, errlen);
}

/* ------------------------------------------------------------------ */
/* PNG encoding (document page images and thumbnails)                  */
/* ------------------------------------------------------------------ */

typedef struct {
    unsigned char *data;
    size_t len, cap;
    int oom;
    char msg[128];
} png_sink_t;

static void png_write_mem(png_structp png, png_bytep src, png_size_t n)
{
    png_sink_t *s = png_get_io_ptr(png);
    if (n > s->cap - s->len) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap - s->len < n) {
            if (cap > ((size_t)-1) / 2) {
                s->oom = 1;
                png_error(png, "out of memory");
            }
            cap *= 2;
        }
        unsigned char *d = realloc(s->data, cap);
        if (!d) {
            s->oom = 1;
            png_error(png, "out of memory");
        }
        s->data = d;
        s->cap = cap;
    }
    memcpy(s->data + s->len, src, n);
    s->len += n;
}

static void png_flush_mem(png_structp png) { (void)png; }

static void png_sink_error(png_structp png, png_const_charp msg)
{
    png_sink_t *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

int mm_image_encode_png(const unsigned char *rgb, int w, int h, size_t stride, int level, unsigned char **out,
                        size_t *outlen, char *err, size_t errlen)
{
    *out = NULL;
    *outlen = 0;
    if (!rgb || w < 1 || h < 1 || stride < (size_t)w * 3)
        return mm_errf(err, errlen, MM_E_INVALID, "PNG encoder: bad image geometry %dx%d", w, h);
    png_sink_t sink = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, png_sink_error, png_on_warning);
    png_infop info = NULL;
    if (!png || !(info = png_create_info_struct(png))) {
        png_destroy_write_struct(&png, NULL);
        return mm_errf(err, errlen, MM_E_NOMEM, "out of memory creating PNG encoder");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(sink.data);
        return sink.oom ? mm_errf(err, errlen, MM_E_NOMEM, "out of memory encoding a %dx%d PNG", w, h)
                        : mm_errf(err, errlen, MM_ERR, "PNG encoder: %s", sink.msg);
    }
    png_set_write_fn(png, &sink, png_write_mem, png_flush_mem);
    png_set_compression_level(png, level < 0 ? 6 : level > 9 ? 9 : level);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(rgb + (size_t)y * stride));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *out = sink.data;
    *outlen = sink.len;
    return MM_OK;
}
