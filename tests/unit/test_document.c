/* Unit tests for media/document.c and media/docrender.c: the parsers of
 * the renderer's output, page selection, scale choice, and the isolated
 * renderer itself on PDFs that tools/mkpdf.py generates at test time
 * (well-formed ones, and hostile ones that must end in a clear error
 * within the budget). Run from the repository root. */
#include "mmembed/common.h"
#include "mmembed/document.h"
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/mmembed-doc-XXXXXX";

static unsigned char *gen(const char *kind, size_t *len)
{
    char path[256], cmd[512];
    snprintf(path, sizeof path, "%s/%s.pdf", tmpdir, kind);
    snprintf(cmd, sizeof cmd, "python3 tools/mkpdf.py %s %s", kind, path);
    if (system(cmd) != 0) return NULL;
    return slurp(path, len);
}

/* ---------------------------------------------------------------- parsers */

static void test_pages(void)
{
    int p[16], n;
    char err[MM_ERRLEN];
    CHECK(mm_doc_parse_pages("1-5,8", 10, p, 16, &n, err, sizeof err) == MM_OK && n == 6 && p[4] == 5 && p[5] == 8,
          "1-5,8: n=%d %s", n, err);
    CHECK(mm_doc_parse_pages(" 3 , 1-2 ,3", 10, p, 16, &n, err, sizeof err) == MM_OK && n == 3 && p[0] == 3, "dups");
    CHECK(mm_doc_parse_pages(NULL, 4, p, 16, &n, err, sizeof err) == MM_OK && n == 4 && p[3] == 4, "all");
    CHECK(mm_doc_parse_pages(NULL, 10000, p, 16, &n, err, sizeof err) == MM_E_TOOBIG, "10000 pages, no spec");
    CHECK(mm_doc_parse_pages("1-100", 200, p, 16, &n, err, sizeof err) == MM_E_TOOBIG, "over max");
    CHECK(mm_doc_parse_pages("11", 10, p, 16, &n, err, sizeof err) == MM_E_INVALID, "past the end");
    CHECK(mm_doc_parse_pages("0", 10, p, 16, &n, err, sizeof err) == MM_E_INVALID, "page 0");
    CHECK(mm_doc_parse_pages("5-3", 10, p, 16, &n, err, sizeof err) == MM_E_INVALID, "reversed");
    CHECK(mm_doc_parse_pages("1;2", 10, p, 16, &n, err, sizeof err) == MM_E_INVALID, "junk");
    CHECK(mm_doc_parse_pages("1-99999999999999", 10, p, 16, &n, err, sizeof err) == MM_E_INVALID, "overflow");
    CHECK(mm_doc_parse_pages("1", 0, p, 16, &n, err, sizeof err) == MM_E_UNPROCESSABLE, "no pages");
}

static void test_scale(void)
{
    /* Letter portrait at a 448 short side: 448 x 579 */
    CHECK(mm_doc_scale_to(612, 792, 448, 4000000) == 579, "letter %d", mm_doc_scale_to(612, 792, 448, 4000000));
    CHECK(mm_doc_scale_to(792, 612, 448, 4000000) == 579, "landscape");
    /* the pixel cap wins for a long strip: 448 x 44800 would be 20M */
    int l = mm_doc_scale_to(100, 10000, 448, 4000000);
    CHECK((int64_t)l * l / 100 <= 4000000 && l > 448, "strip %d", l);
    /* max_pixels only (Qwen2-VL style): Letter at 1,003,520 px -> ~104 dpi */
    l = mm_doc_scale_to(612, 792, 0, 1003520);
    CHECK(l >= 1130 && l <= 1140, "letter at 1M px: long side %d (104 dpi = 1144)", l);
    CHECK(mm_doc_scale_to(14400, 14400, 448, 4000000) == 448, "200x200 in");
    CHECK(mm_doc_scale_to(0, -1, 448, 100) >= 1, "degenerate");
}

static void test_parse_info(void)
{
    static mm_doc_info_t info;
    char err[MM_ERRLEN];
    const char *t = "Title: x\nPages:           3\nEncrypted:       no\n"
                    "Page    1 size:  612 x 792 pts (letter)\nPage    1 rot:   0\n"
                    "Page    2 size:  595.276 x 841.89 pts (A4)\nPage    2 rot:   90\n"
                    "Page    3 size:  1 x 2 pts\n";
    CHECK(mm_doc_parse_info(t, strlen(t), &info, err, sizeof err) == MM_OK, "%s", err);
    CHECK(info.n_pages == 3 && info.n_sizes == 3, "pages %d sizes %d", info.n_pages, info.n_sizes);
    CHECK(info.w_pt[1] > 841 && info.h_pt[1] < 596, "rot 90 swaps: %g x %g", info.w_pt[1], info.h_pt[1]);
    const char *bad = "Page 99999999999 size: 1e308 x nan pts\nPage 0 size: 1 x 1\n";
    CHECK(mm_doc_parse_info(bad, strlen(bad), &info, err, sizeof err) == MM_E_UNPROCESSABLE, "no page count");
    const char *gap = "Pages: 5\nPage 1 size: 10 x 10\nPage 3 size: 10 x 10\n";
    CHECK(mm_doc_parse_info(gap, strlen(gap), &info, err, sizeof err) == MM_OK && info.n_sizes == 1, "gap %d",
          info.n_sizes);
}

static void test_parse_ppm(void)
{
    uint8_t buf[64] = "P6\n# c\n2 1\n255\n";
    size_t h = strlen((char *)buf), used;
    memset(buf + h, 7, 6);
    int w, hh;
    const uint8_t *px;
    char err[MM_ERRLEN];
    CHECK(mm_doc_parse_ppm(buf, h + 6, 100, &w, &hh, &px, &used, err, sizeof err) == MM_OK && w == 2 && hh == 1 &&
              used == h + 6 && px == buf + h, "ppm: %s", err);
    CHECK(mm_doc_parse_ppm(buf, h + 5, 100, &w, &hh, &px, &used, err, sizeof err) == MM_E_UNPROCESSABLE, "short");
    CHECK(mm_doc_parse_ppm(buf, h + 6, 1, &w, &hh, &px, &used, err, sizeof err) == MM_E_UNPROCESSABLE, "pixels");
    const char *big = "P6 999999999 999999999 255\n";
    CHECK(mm_doc_parse_ppm((const uint8_t *)big, strlen(big), (int64_t)1 << 62, &w, &hh, &px, &used, err,
                           sizeof err) == MM_E_UNPROCESSABLE, "huge header, no data");
    const char *p5 = "P5 1 1 255\n\1";
    CHECK(mm_doc_parse_ppm((const uint8_t *)p5, strlen(p5), 100, &w, &hh, &px, &used, err, sizeof err) ==
              MM_E_UNPROCESSABLE, "P5");
}

/* ---------------------------------------------------------------- the renderer */

static mm_doc_renderer_t R;
static const mm_doc_limits_t LIM = {.max_pages = 32, .max_page_pixels = 4000000, .budget = 10,
                                    .max_pdf_bytes = 50 << 20, .memory = 1024LL << 20};

static void test_render_text3(void)
{
    size_t len;
    unsigned char *pdf = gen("text3", &len);
    if (!pdf) {
        SKIP_BROKEN("tools/mkpdf.py text3 failed");
        return;
    }
    static mm_doc_info_t info;
    char err[MM_ERRLEN] = "";
    mm_doc_job_t j;
    mm_doc_job_begin(&j, &R, &LIM);
    double t0 = now_s();
    CHECK(mm_doc_info(&j, pdf, len, 32, &info, err, sizeof err) == MM_OK, "info: %s", err);
    CHECK(info.n_pages == 3 && info.n_sizes == 3, "pages %d sizes %d", info.n_pages, info.n_sizes);
    int pages[3] = {1, 2, 3}, scale[3];
    for (int i = 0; i < 3; i++) scale[i] = mm_doc_scale_to(info.w_pt[i], info.h_pt[i], 448, LIM.max_page_pixels);
    mm_buf_t out;
    mm_buf_init(&out);
    mm_doc_page_t pg[3];
    CHECK(mm_doc_render(&j, pdf, len, pages, scale, 3, &out, pg, err, sizeof err) == MM_OK, "render: %s", err);
    double t1 = now_s();
    printf("text3: info + render of 3 pages at a 448 short side: %.1f ms\n", (t1 - t0) * 1e3);
    CHECK(pg[0].width == 448 && pg[0].height == 579, "letter portrait %dx%d", pg[0].width, pg[0].height);
    CHECK(pg[1].width > pg[1].height && pg[1].height == 448, "A4 landscape %dx%d", pg[1].width, pg[1].height);
    CHECK(pg[2].width == 448 && pg[2].page == 3, "A4 portrait %dx%d", pg[2].width, pg[2].height);
    /* page 2 has a red block (0.8 0.1 0.1) in its lower left area */
    int red = 0;
    for (int y = 0; y < pg[1].height; y++)
        for (int x = 0; x < pg[1].width; x++) {
            const uint8_t *p = pg[1].rgb + ((size_t)y * pg[1].width + x) * 3;
            red += p[0] > 180 && p[1] < 60 && p[2] < 60;
        }
    CHECK(red > 1000, "red pixels on page 2: %d", red);
    /* pages 1 and 3 only: two runs */
    int sel[2] = {1, 3}, ssel[2] = {scale[0], scale[2]};
    CHECK(mm_doc_render(&j, pdf, len, sel, ssel, 2, &out, pg, err, sizeof err) == MM_OK && pg[1].page == 3 &&
              pg[1].width == 448, "1,3: %s", err);
    const char *texts[3];
    size_t lens[3];
    CHECK(mm_doc_text(&j, pdf, len, pages, 3, &out, texts, lens, err, sizeof err) == MM_OK, "text: %s", err);
    CHECK(lens[0] > 10 && memmem(texts[0], lens[0], "The cat sat on the mat.", 23), "page 1 text: %.*s", (int)lens[0],
          texts[0]);
    CHECK(memmem(texts[1], lens[1], "Figure 1", 8) && !memmem(texts[1], lens[1], "Appendix", 8), "page 2 text");
    CHECK(memmem(texts[2], lens[2], "Appendix", 8) != NULL, "page 3 text");
    printf("text3: render_ms %.1f\n", j.render_ms);
    mm_buf_free(&out);
    free(pdf);
}

/* A hostile document: expect the status, within the budget + 2 s. */
static void hostile(const char *kind, int want, const char *want_text, double budget)
{
    size_t len;
    unsigned char *pdf = gen(kind, &len);
    if (!pdf) {
        SKIP_BROKEN("tools/mkpdf.py %s failed", kind);
        return;
    }
    mm_doc_limits_t lim = LIM;
    lim.budget = budget;
    static mm_doc_info_t info;
    char err[MM_ERRLEN] = "";
    mm_doc_job_t j;
    mm_doc_job_begin(&j, &R, &lim);
    double t0 = now_s();
    int rc = mm_doc_info(&j, pdf, len, 32, &info, err, sizeof err);
    mm_buf_t out;
    mm_buf_init(&out);
    if (rc == MM_OK) {
        int pages[32], n, scale[32];
        rc = mm_doc_parse_pages(NULL, info.n_pages, pages, lim.max_pages, &n, err, sizeof err);
        for (int i = 0; rc == MM_OK && i < n; i++)
            scale[i] = mm_doc_scale_to(i < info.n_sizes ? info.w_pt[i] : 612, i < info.n_sizes ? info.h_pt[i] : 792,
                                       448, lim.max_page_pixels);
        mm_doc_page_t pg[32];
        if (rc == MM_OK) rc = mm_doc_render(&j, pdf, len, pages, scale, n, &out, pg, err, sizeof err);
    }
    double dt = now_s() - t0;
    CHECK(rc == want && (!want_text || strstr(err, want_text)), "%s: rc %d (want %d): %s", kind, rc, want, err);
    CHECK(dt < budget + 2, "%s took %.2fs (budget %gs)", kind, dt, budget);
    printf("%-10s -> %d in %6.1f ms: %s\n", kind, rc, dt * 1e3, rc ? err : "ok");
    CHECK(R.fd >= 0, "%s: the renderer is still there", kind);
    mm_buf_free(&out);
    free(pdf);
}

static void test_hostile(void)
{
    hostile("html", MM_E_UNSUPPORTED, "not a PDF", 5);
    hostile("truncated", MM_E_UNPROCESSABLE, "could not be read", 5);
    hostile("encrypted", MM_E_UNPROCESSABLE, "encrypted", 5);
    hostile("zeropages", MM_E_UNPROCESSABLE, "no pages", 5);
    hostile("many", MM_E_TOOBIG, "10000 pages", 5);
    hostile("huge", MM_OK, NULL, 5);          /* 200 x 200 in, rendered at 448 x 448 */
    hostile("nested", MM_OK, NULL, 5);        /* poppler's own depth limit */
    hostile("badxref", MM_OK, NULL, 5);       /* poppler reconstructs the xref */
    hostile("slow", MM_E_TIMEOUT, "render_budget", 1);
    hostile("notext", MM_OK, NULL, 5);
}

/* The address-space limit: a renderer that needs more than it is given
 * fails cleanly (and the broker carries on). */
static void test_memory_limit(void)
{
    size_t len;
    unsigned char *pdf = gen("text3", &len);
    if (!pdf) return;
    mm_doc_limits_t lim = LIM;
    lim.memory = 40 << 20;    /* enough to start, not for a 4000-pixel page (~36 MB) */
    lim.max_page_pixels = 20000000;
    char err[MM_ERRLEN] = "";
    mm_doc_job_t j;
    mm_doc_job_begin(&j, &R, &lim);
    int pages[1] = {1}, scale[1] = {4000};
    mm_doc_page_t pg[1];
    mm_buf_t out;
    mm_buf_init(&out);
    int rc = mm_doc_render(&j, pdf, len, pages, scale, 1, &out, pg, err, sizeof err);
    CHECK(rc == MM_E_UNPROCESSABLE, "40 MiB address space: rc %d %s", rc, err);
    printf("40 MiB address space, 4000-pixel page -> %d: %s (%dx%d, %zu bytes)\n", rc, err, pg[0].width, pg[0].height, out.len);
    lim.memory = LIM.memory;
    mm_doc_job_begin(&j, &R, &lim);
    CHECK(mm_doc_render(&j, pdf, len, pages, scale, 1, &out, pg, err, sizeof err) == MM_OK && pg[0].height == 4000,
          "1 GiB: %s", err);
    mm_buf_free(&out);
    free(pdf);
}

/* A broker that dies mid-job: the caller gets MM_ERR at once, not a hang. */
static void test_broker_death(void)
{
    mm_doc_renderer_t r2;
    char err[MM_ERRLEN] = "";
    if (mm_doc_renderer_start(&r2, NULL, err, sizeof err) != MM_OK) return;
    kill(r2.pid, SIGKILL);
    waitpid(r2.pid, NULL, 0);
    r2.pid = -1;
    static mm_doc_info_t info;
    size_t len;
    unsigned char *pdf = gen("text3", &len);
    if (!pdf) return;
    mm_doc_job_t j;
    mm_doc_job_begin(&j, &r2, &LIM);
    double t0 = now_s();
    int rc = mm_doc_info(&j, pdf, len, 3, &info, err, sizeof err);
    CHECK(rc == MM_ERR && now_s() - t0 < 1 && r2.fd < 0, "dead broker: rc %d %s", rc, err);
    CHECK(mm_doc_info(&j, pdf, len, 3, &info, err, sizeof err) == MM_ERR && strstr(err, "unavailable"), "%s", err);
    mm_doc_renderer_stop(&r2);
    free(pdf);
}

/* Nothing a renderer does can leave a file behind: the filter refuses
 * every call that creates one (checked by exec'ing a shell as the tool:
 * tools_dir points at a directory whose "pdfinfo" is a script). */
static void test_isolation(void)
{
    char dir[300], script[400], marker[400];
    snprintf(dir, sizeof dir, "%s/fake", tmpdir);
    mkdir(dir, 0755);
    snprintf(marker, sizeof marker, "%s/written", tmpdir);
    const char *names[] = {"pdfinfo", "pdftoppm", "pdftotext"};
    for (int i = 0; i < 3; i++) {
        snprintf(script, sizeof script, "%s/%s", dir, names[i]);
        FILE *f = fopen(script, "w");
        if (!f) return;
        /* a Python "renderer" that tries what an exploited one would:
         * read the environment, write a file, open sockets, fork, exec */
        fprintf(f, "#!/usr/bin/python3 -S\n"
                   "import os, socket\n"
                   "print('ENV=%%r' %% open('/proc/self/environ', 'rb').read())\n"
                   "def t(name, fn):\n"
                   "    try:\n"
                   "        fn(); print(name, 'ALLOWED')\n"
                   "    except OSError as e:\n"
                   "        print(name, 'denied', e.errno)\n"
                   "t('write', lambda: open('%s', 'w'))\n"
                   "t('tcp', lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))\n"
                   "t('unix', lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))\n"
                   "t('mkdir', lambda: os.mkdir('%s.d'))\n"
                   "t('fork', lambda: os.fork() or os._exit(0))\n"
                   "t('exec', lambda: os.execv('/bin/true', ['true']))\n"
                   "print('Pages: 1')\n", marker, marker);
        fclose(f);
        chmod(script, 0755);
    }
    mm_doc_renderer_t r2;
    char err[MM_ERRLEN] = "";
    CHECK(mm_doc_renderer_start(&r2, dir, err, sizeof err) == MM_OK, "fake tools: %s", err);
    mm_doc_run_t run = {.tool = MM_DOC_TOOL_INFO, .first = 1, .last = 1, .seconds = 5, .memory = 512 << 20,
                        .max_out = 65536};
    mm_doc_result_t res;
    mm_buf_t out;
    mm_buf_init(&out);
    const char pdf[] = "%PDF-1.4\n";
    int rc = mm_doc_run(&r2, &run, pdf, sizeof pdf - 1, &out, &res, err, sizeof err);
    mm_buf_append(&out, "", 1);
    CHECK(rc == MM_OK, "run: %s", err);
    CHECK(out.data && strstr(out.data, "Pages: 1") && !strstr(out.data, "ALLOWED"), "the fake tool got out: %s",
          out.data ? out.data : "");
    CHECK(out.data && strstr(out.data, "ENV=b''\n"), "environment not empty: %s", out.data ? out.data : "");
    CHECK(access(marker, F_OK) != 0, "a file was written");
    printf("fake tool said:\n%s[stderr: %s] end %d code %d\n", out.data ? out.data : "(nothing)\n", res.stderr_text,
           res.end, res.code);
    printf("private network namespace: %s\n", r2.netns ? "yes" : "no (the filter still denies sockets)");
    mm_buf_free(&out);
    mm_doc_renderer_stop(&r2);
}

static void cleanup(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);   /* as in a worker: a dead broker is an error, not a signal */
    test_pages();
    test_scale();
    test_parse_info();
    test_parse_ppm();
    if (!mkdtemp(tmpdir)) {
        SKIP_BROKEN("mkdtemp: %s", strerror(errno));
        return check_summary("test_document");
    }
    char err[MM_ERRLEN] = "";
    int rc = mm_doc_renderer_start(&R, NULL, err, sizeof err);
    if (rc != MM_OK) {
        SKIP_BROKEN("renderer: %s", err);
    } else {
        test_render_text3();
        test_hostile();
        test_memory_limit();
        test_broker_death();
        test_isolation();
        mm_doc_renderer_stop(&R);
    }
    cleanup();
    return check_summary("test_document");
}
