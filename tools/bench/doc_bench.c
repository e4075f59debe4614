/* Documents: ms per page to render (isolated poppler renderer, one
 * process per run) and to embed (preprocess + vision encoder), for PDFs
 * given on the command line, at the geometry /embed/document uses for the
 * model (short side 2 x the model's input size, limits.max_page_pixels).
 *
 *   make build/bench/doc_bench
 *   python3 tools/mkpdf.py doc20 /tmp/doc20.pdf
 *   build/bench/doc_bench models/clip-vit-b32-synthetic /tmp/doc20.pdf [threads] [reps]
 */
#include "mmembed/common.h"
#include "mmembed/document.h"
#include "mmembed/encoder.h"
#include "mmembed/preprocess.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    *len = (size_t)n;
    return p;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: doc_bench MODEL_DIR PDF... [-t threads]\n");
        return 2;
    }
    int threads = 1;
    char err[MM_ERRLEN] = "";
    mm_doc_renderer_t R;
    if (mm_doc_renderer_start(&R, NULL, err, sizeof err) != MM_OK) {
        fprintf(stderr, "renderer: %s\n", err);
        return 1;
    }
    mm_encoder_t *enc;
    if (mm_encoder_load(argv[1], getenv("MMEMBED_DTYPE") ? getenv("MMEMBED_DTYPE") : "auto", &enc, err, sizeof err)) {
        fprintf(stderr, "model: %s\n", err);
        return 1;
    }
    const mm_enc_info_t *info = mm_encoder_info(enc);
    const mm_preproc_t *pre = mm_encoder_preproc(enc);
    if (getenv("THREADS")) threads = atoi(getenv("THREADS"));
    mm_enc_runner_t *run = mm_encoder_runner_new(enc, 8, 8, threads);
    size_t per = (size_t)info->channels * info->image_size * info->image_size;
    float *pix = malloc(per * sizeof(float)), *vec = malloc((size_t)info->dim * sizeof(float));
    mm_doc_limits_t lim = {.max_pages = 64, .max_page_pixels = 4000000, .budget = 60, .max_pdf_bytes = 1 << 30,
                           .memory = 1LL << 30};
    static mm_doc_info_t di;
    printf("model %s (%s, %s, input %d), threads %d, renderer netns %s\n", argv[1], info->arch, info->compute,
           info->image_size, threads, R.netns ? "yes" : "no");
    for (int a = 2; a < argc; a++) {
        size_t len;
        unsigned char *pdf = slurp(argv[a], &len);
        if (!pdf) continue;
        mm_doc_job_t j;
        mm_doc_job_begin(&j, &R, &lim);
        double t0 = now_ms();
        if (mm_doc_info(&j, pdf, len, lim.max_pages, &di, err, sizeof err)) {
            printf("%s: %s\n", argv[a], err);
            continue;
        }
        int pages[64], scale[64], n;
        if (mm_doc_parse_pages(NULL, di.n_pages, pages, lim.max_pages, &n, err, sizeof err)) {
            printf("%s: %s\n", argv[a], err);
            continue;
        }
        for (int i = 0; i < n; i++)
            scale[i] = mm_doc_scale_to(di.w_pt[i], di.h_pt[i], 2 * info->image_size, lim.max_page_pixels);
        mm_buf_t out;
        mm_buf_init(&out);
        mm_doc_page_t pg[64];
        double t1 = now_ms();
        if (mm_doc_render(&j, pdf, len, pages, scale, n, &out, pg, err, sizeof err)) {
            printf("%s: %s\n", argv[a], err);
            continue;
        }
        double t2 = now_ms(), tpre = 0, tmod = 0;
        for (int i = 0; i < n; i++) {
            double u0 = now_ms();
            mm_preproc_from_rgb(pre, pg[i].rgb, pg[i].width, pg[i].height, (size_t)pg[i].width * 3, pix);
            double u1 = now_ms();
            mm_encoder_encode_pixels(run, pix, 1, vec);
            tpre += u1 - u0;
            tmod += now_ms() - u1;
        }
        double tot = now_ms() - t0;
        printf("%s: %d pages (%dx%d first), info %.1f ms, render %.1f ms (%.1f ms/page), preprocess %.1f ms/page, "
               "model %.1f ms/page, total %.1f ms/page = %.1f pages/s\n",
               argv[a], n, pg[0].width, pg[0].height, t1 - t0, t2 - t1, (t2 - t1) / n, tpre / n, tmod / n, tot / n,
               n / tot * 1e3);
        mm_buf_free(&out);
        free(pdf);
    }
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);   /* the broker (not yet reaped) is excluded; see below */
    mm_doc_renderer_stop(&R);
    getrusage(RUSAGE_CHILDREN, &ru);
    printf("peak RSS of the renderer processes (largest reaped descendant): %.1f MiB\n", ru.ru_maxrss / 1024.0);
    return 0;
}
