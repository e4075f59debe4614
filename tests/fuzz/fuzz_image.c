/* libFuzzer harness: image decoding (src/media/image.c: JPEG, PNG, WebP,
 * GIF through libjpeg, libpng, libwebp, giflib) and CLIP preprocessing
 * (src/media/preprocess.c, resize.c) of whatever decodes.
 *
 * max_pixels is 4 MP, as a server would set it, so decompression bombs
 * must be refused from the header (MM_E_TOOBIG) instead of allocating.
 * A decoded image must be consistent (sizes, a pixel buffer whose every
 * byte ASan lets us read) and must preprocess to finite values in the
 * normalized range. JPEGs are decoded a second time with DCT scaling. The
 * preprocessing backend (torchvision or PIL arithmetic) and the model input
 * size (224 or 32) are picked from a hash of the input. */
#include "mmembed/common.h"
#include "mmembed/image.h"
#include "mmembed/preprocess.h"

#include "fuzz.h"

#include <string.h>

#define MAX_PIXELS 4000000L
/* CLIP ViT-B's input. Most inputs use a small model size instead: the code
 * paths are the same and a run is ~30x faster (224 costs ~6 ms under ASan
 * even for a 24x16 image). */
#define IMAGE_SIZE 224
#define SMALL_SIZE 32

static void check_preproc(const mm_image_t *img, int size, int backend)
{
    mm_preproc_t p;
    mm_preproc_default_clip(&p, size);
    p.backend = backend;
    int oh, ow;
    int rc = mm_preproc_out_dims(&p, img->src_w, img->src_h, &oh, &ow);
    FUZZ_CHECK(rc == 0 && oh == size && ow == size, "out dims rc %d %dx%d", rc, ow, oh);
    size_t n = (size_t)3 * (size_t)oh * (size_t)ow;
    float *out = malloc(n * sizeof *out);
    FUZZ_CHECK(out, "out of memory");
    rc = mm_preproc_run(&p, img, out);
    FUZZ_CHECK(rc == 0, "preprocessing a %dx%d image (file %dx%d) failed: %d", img->w, img->h, img->src_w,
               img->src_h, rc);
    /* rescale+normalize maps [0, 255] into [-mean/std, (1-mean)/std] */
    size_t plane = (size_t)oh * (size_t)ow;
    for (int c = 0; c < 3; c++) {
        float lo = (0.0f - p.mean[c]) / p.std[c] - 1e-3f, hi = (1.0f - p.mean[c]) / p.std[c] + 1e-3f;
        for (size_t i = c * plane; i < (c + 1) * plane; i++)
            FUZZ_CHECK(out[i] >= lo && out[i] <= hi, "value %g at %zu out of [%g, %g]", (double)out[i], i,
                       (double)lo, (double)hi);  /* false for NaN too */
    }
    free(out);
}

static void decode_one(const uint8_t *data, size_t size, int hint, int out_size, int backend)
{
    mm_image_t img;
    char err[MM_ERRLEN] = "";
    int rc = mm_image_decode(data, size, hint, MAX_PIXELS, &img, err, sizeof err);
    if (rc) {
        FUZZ_CHECK(rc == MM_E_INVALID || rc == MM_E_UNSUPPORTED || rc == MM_E_TOOBIG || rc == MM_E_NOMEM ||
                       rc == MM_E_UNPROCESSABLE || rc == MM_E_TIMEOUT, /* JPEG scan limit, decode budget */
                   "unexpected status %d (%s)", rc, err);
        FUZZ_CHECK(err[0], "status %d without a reason", rc);
        FUZZ_CHECK(!img.rgb && !img.w && !img.h, "failed decode left an image behind");
        return;
    }
    FUZZ_CHECK(img.rgb && img.w > 0 && img.h > 0, "decoded %dx%d, rgb %p", img.w, img.h, (void *)img.rgb);
    FUZZ_CHECK(img.src_w > 0 && img.src_h > 0 && (long)img.src_w * img.src_h <= MAX_PIXELS,
               "file size %dx%d over the limit", img.src_w, img.src_h);
    FUZZ_CHECK(hint > 0 || (img.w == img.src_w && img.h == img.src_h), "scaled %dx%d -> %dx%d without a hint",
               img.src_w, img.src_h, img.w, img.h);
    FUZZ_CHECK(img.w <= img.src_w && img.h <= img.src_h, "decoded %dx%d larger than the file's %dx%d", img.w,
               img.h, img.src_w, img.src_h);
    volatile uint64_t h = fuzz_fnv(FUZZ_FNV_INIT, img.rgb, (size_t)img.w * (size_t)img.h * 3);
    (void)h;
    check_preproc(&img, out_size, backend);
    mm_image_free(&img);
    FUZZ_CHECK(!img.rgb, "mm_image_free left a pointer");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *fmt = mm_image_sniff(data, size);
    uint64_t h = fuzz_fnv(FUZZ_FNV_INIT, data, size);
    int backend = h & 1 ? MM_PREPROC_PIL : MM_PREPROC_TORCHVISION;
    int out_size = (h >> 1) % 8 == 0 ? IMAGE_SIZE : SMALL_SIZE;
    decode_one(data, size, 0, out_size, backend);
    /* hint 1: any JPEG at least 16 pixels on its short edge is DCT-scaled */
    if (fmt && !strcmp(fmt, "jpeg")) decode_one(data, size, 1, out_size, backend);
    return 0;
}
