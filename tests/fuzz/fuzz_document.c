/* libFuzzer harness: the worker's parsers of what the PDF renderer sends
 * back (src/media/document.c). The renderer runs poppler on hostile PDFs,
 * so its output is hostile too (a renderer taken over could write
 * anything); these parsers are what stands between it and the worker.
 *
 * Input: 4 header bytes, then the body.
 *   h[0..1]  n_pages for mm_doc_parse_pages (little endian; 0xffff: 1 << 30,
 *            what src/embed/route_document.c passes before pdfinfo ran)
 *   h[2]     max_out for mm_doc_parse_pages: 1 + h[2] % 128
 *   h[3]     max_pixels for mm_doc_parse_ppm: 1 << (h[3] % 32), or
 *            INT64_MAX when h[3] >= 224
 * The body goes through all three parsers (each gets an exact-size heap
 * copy, so ASan sees a read past the end):
 *  1. mm_doc_parse_info as pdfinfo's text: a success has n_pages >= 0,
 *     0 <= n_sizes <= min(n_pages, MM_DOC_MAX_PAGES), finite positive
 *     sizes for pages 1..n_sizes, and mm_doc_scale_to of each in
 *     [1, 65536];
 *  2. mm_doc_parse_ppm as pdftoppm's stream, image after image the way
 *     mm_doc_render walks it: a success has w, h >= 1, w * h <= max_pixels,
 *     the pixels inside the body and used == header + w * h * 3; every
 *     pixel is read;
 *  3. mm_doc_parse_pages with the body up to its first NUL as the spec: a
 *     success writes 0 < n <= max_out distinct pages in [1, n_pages] (all
 *     of 1..n_pages for an empty spec); a failure is MM_E_INVALID,
 *     MM_E_TOOBIG or MM_E_UNPROCESSABLE with a message.
 * Every failure must come with a NUL-terminated, non-empty message. */
#include "mmembed/common.h"
#include "mmembed/document.h"

#include "fuzz.h"

#include <math.h>
#include <string.h>

static void check_err(int rc, const char *err, const char *what)
{
    FUZZ_CHECK(rc < 0, "%s: status %d", what, rc);
    FUZZ_CHECK(memchr(err, '\0', MM_ERRLEN) && err[0], "%s failed (%d) without a message", what, rc);
}

static void fuzz_info(const uint8_t *p, size_t n)
{
    static mm_doc_info_t info;   /* 32 KiB */
    char err[MM_ERRLEN] = "";
    char *t = fuzz_dup(p, n);
    FUZZ_CHECK(t, "out of memory");
    int rc = mm_doc_parse_info(t, n, &info, err, sizeof err);
    if (rc != MM_OK) {
        FUZZ_CHECK(rc == MM_E_UNPROCESSABLE, "parse_info: status %d", rc);
        check_err(rc, err, "parse_info");
    } else {
        FUZZ_CHECK(info.n_pages >= 0, "n_pages %d", info.n_pages);
        FUZZ_CHECK(info.n_sizes >= 0 && info.n_sizes <= info.n_pages && info.n_sizes <= MM_DOC_MAX_PAGES,
                   "n_sizes %d of %d pages", info.n_sizes, info.n_pages);
        for (int i = 0; i < info.n_sizes; i++) {
            float w = info.w_pt[i], h = info.h_pt[i];
            FUZZ_CHECK(isfinite(w) && isfinite(h) && w > 0 && h > 0, "page %d is %g x %g pt", i + 1, w, h);
            int s = mm_doc_scale_to(w, h, 448, 4000000);
            FUZZ_CHECK(s >= 1 && s <= 65536, "page %d (%g x %g pt) scales to %d", i + 1, w, h, s);
        }
    }
    free(t);
}

static void fuzz_ppm(const uint8_t *p, size_t n, int64_t max_pixels)
{
    uint8_t *b = fuzz_dup(p, n);
    FUZZ_CHECK(b, "out of memory");
    size_t pos = 0;
    unsigned sum = 0;
    for (int img = 0; img < 64 && pos < n; img++) {
        char err[MM_ERRLEN] = "";
        int w = -1, h = -1;
        const uint8_t *rgb = NULL;
        size_t used = 0;
        int rc = mm_doc_parse_ppm(b + pos, n - pos, max_pixels, &w, &h, &rgb, &used, err, sizeof err);
        if (rc != MM_OK) {
            FUZZ_CHECK(rc == MM_E_UNPROCESSABLE, "parse_ppm: status %d", rc);
            check_err(rc, err, "parse_ppm");
            break;
        }
        FUZZ_CHECK(w >= 1 && h >= 1 && (int64_t)w * h <= max_pixels, "%dx%d, max_pixels %lld", w, h,
                   (long long)max_pixels);
        size_t px = (size_t)w * (size_t)h * 3;
        FUZZ_CHECK(used <= n - pos && used > px && rgb == b + pos + (used - px), "image at %zu: used %zu of %zu, %zu "
                   "pixel bytes at +%td", pos, used, n - pos, px, rgb - (b + pos));
        for (size_t k = 0; k < px; k++) sum += rgb[k];   /* ASan: every pixel is inside the body */
        pos += used;
    }
    (void)sum;
    free(b);
}

static void fuzz_pages(const uint8_t *p, size_t n, int n_pages, int max_out)
{
    size_t l = 0;
    while (l < n && p[l]) l++;
    char *spec = malloc(l + 1);
    FUZZ_CHECK(spec, "out of memory");
    memcpy(spec, p, l);
    spec[l] = '\0';
    int *out = malloc(sizeof(int) * (size_t)max_out), cnt = -1;
    FUZZ_CHECK(out, "out of memory");
    char err[MM_ERRLEN] = "";
    int rc = mm_doc_parse_pages(spec, n_pages, out, max_out, &cnt, err, sizeof err);
    if (rc != MM_OK) {
        FUZZ_CHECK(rc == MM_E_INVALID || rc == MM_E_TOOBIG || rc == MM_E_UNPROCESSABLE, "parse_pages: status %d", rc);
        check_err(rc, err, "parse_pages");
        FUZZ_CHECK(cnt >= 0 && cnt <= max_out, "a failure left n = %d", cnt);
    } else {
        FUZZ_CHECK(cnt >= 1 && cnt <= max_out, "n = %d of at most %d", cnt, max_out);
        for (int i = 0; i < cnt; i++) {
            FUZZ_CHECK(out[i] >= 1 && out[i] <= n_pages, "page %d of %d", out[i], n_pages);
            for (int j = 0; j < i; j++) FUZZ_CHECK(out[i] != out[j], "page %d twice", out[i]);
            if (!l) FUZZ_CHECK(out[i] == i + 1, "empty spec: page %d at %d", out[i], i);
        }
        FUZZ_CHECK(l || cnt == n_pages, "empty spec gave %d of %d pages", cnt, n_pages);
    }
    free(out);
    free(spec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    int n_pages = data[0] | data[1] << 8;
    if (n_pages == 0xffff) n_pages = 1 << 30;
    int max_out = 1 + data[2] % 128;
    int64_t max_pixels = data[3] >= 224 ? INT64_MAX : (int64_t)1 << (data[3] % 32);
    const uint8_t *body = data + 4;
    size_t n = size - 4;
    fuzz_info(body, n);
    fuzz_ppm(body, n, max_pixels);
    fuzz_pages(body, n, n_pages, max_out);
    return 0;
}
