/* document — PDF pages to RGB pixels and page text, through an isolated
 * renderer.
 *
 * PDF parsers are a large attack surface, so no PDF byte is parsed in a
 * worker. Each worker forks, before it enters its seccomp sandbox (which
 * forbids fork and execve), one small *renderer broker* process
 * (src/media/docrender.c) and keeps a socketpair to it. Per job the broker
 * puts the PDF into a sealed memfd and starts one of poppler's programs
 * (pdfinfo, pdftoppm, pdftotext; GPL, run as separate programs) in a
 * child with an empty environment, stdin = the memfd, stdout/stderr =
 * pipes, every other descriptor closed, a new session, no network (a new
 * network namespace where the kernel allows it, and a seccomp filter that
 * denies socket, ptrace, fork, a second execve and every call that writes
 * or creates a file), rlimits (CPU seconds, address space, file size 0,
 * no core), and a wall-clock deadline after which the broker kills the
 * child's process group. The program's output comes back through the
 * broker as frames; this module parses it (pdfinfo's text, pdftoppm's PPM
 * stream, pdftotext's form-feed separated pages). Neither the broker nor
 * the renderer ever sees a path, URL or string from the request: jobs
 * carry numbers and the PDF bytes only.
 *
 * Layering: media/ knows nothing about models; callers pass the pixel
 * geometry they want (mm_doc_scale_to). */
#ifndef MMEMBED_DOCUMENT_H
#define MMEMBED_DOCUMENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mmembed/buf.h"

/* Limits of one request's rendering (limits.* in the config). */
typedef struct {
    int max_pages;            /* pages per request */
    int64_t max_page_pixels;  /* one rendered page */
    double budget;            /* wall-clock seconds for all renderer runs of a request */
    int64_t max_pdf_bytes;    /* the document */
    int64_t memory;           /* address-space limit of the renderer process, bytes */
} mm_doc_limits_t;

/* The worker's end of its renderer broker. fd < 0: none (not started, or
 * it died: the worker cannot start another inside its sandbox). */
typedef struct {
    int fd;
    pid_t pid;
    int netns;                /* 1: renderers get a private network namespace */
} mm_doc_renderer_t;

/* Start the broker: fork (call before the process has threads and before
 * the sandbox), the child closes every descriptor but its end of the
 * socketpair and stderr (for the log), dies with its parent
 * (PR_SET_PDEATHSIG) and serves jobs until the socket closes. tools_dir
 * holds pdfinfo/pdftoppm/pdftotext ("" = /usr/bin); they must exist.
 * Returns MM_OK, or MM_E_UNSUPPORTED (poppler's programs missing; err says
 * which) or MM_ERR. */
int mm_doc_renderer_start(mm_doc_renderer_t *r, const char *tools_dir, char *err, size_t errlen);
/* Close the socket (the broker exits and kills a running job) and reap. */
void mm_doc_renderer_stop(mm_doc_renderer_t *r);

/* What pdfinfo says about a document. */
enum { MM_DOC_MAX_PAGES = 4096 };   /* upper bound of limits.max_pages */
typedef struct {
    int n_pages;              /* in the document */
    int n_sizes;              /* pages 1..n_sizes have w_pt/h_pt below */
    float w_pt[MM_DOC_MAX_PAGES], h_pt[MM_DOC_MAX_PAGES];   /* (n_sizes) page size in points, as displayed */
} mm_doc_info_t;

/* One job's clock: every renderer run of a request draws on one budget. */
typedef struct {
    mm_doc_renderer_t *r;
    const mm_doc_limits_t *lim;
    int64_t deadline_us;      /* mm_now_us() clock */
    double render_ms;         /* time spent in renderer runs so far */
} mm_doc_job_t;

void mm_doc_job_begin(mm_doc_job_t *j, mm_doc_renderer_t *r, const mm_doc_limits_t *lim);

/* Is this a PDF at all? ("%PDF-" within the first 1024 bytes, as readers
 * accept.) MM_OK, else MM_E_UNSUPPORTED (415) with the reason. */
int mm_doc_sniff(const void *pdf, size_t len, char *err, size_t errlen);

/* Page count and the sizes of pages 1..last_page (clipped to the
 * document). MM_E_UNPROCESSABLE: encrypted (err says so), unreadable, no
 * pages; MM_E_TIMEOUT: over the budget; MM_E_TOOBIG: over max_pdf_bytes. */
int mm_doc_info(mm_doc_job_t *j, const void *pdf, size_t len, int last_page, mm_doc_info_t *info, char *err,
                size_t errlen);

/* Parse a page selection ("1-5,8", 1-based, ascending or not, no
 * duplicates kept) against n_pages. NULL or "" selects every page. Writes
 * at most max_out pages; more is MM_E_TOOBIG (413), a page past the end
 * or a malformed spec MM_E_INVALID (400). *n = pages written. */
int mm_doc_parse_pages(const char *spec, int n_pages, int *out, int max_out, int *n, char *err, size_t errlen);

/* The long side in pixels at which a page of w × h points has its short
 * side at min_short pixels (0: no minimum) and at most max_pixels pixels
 * in all; at least 1. */
int mm_doc_scale_to(double w_pt, double h_pt, int min_short, int64_t max_pixels);

/* A rendered page: packed RGB8 rows, pointing into the job's output
 * buffer (valid until that buffer is reset). */
typedef struct {
    int page;                 /* 1-based */
    int width, height;
    const uint8_t *rgb;       /* (height, width, 3) */
} mm_doc_page_t;

/* Render pages[0..n) with pdftoppm, page pages[i] with its long side at
 * scale_to[i] pixels. Consecutive pages with the same scale share one
 * renderer run. out receives the PPM output (reset first); pages_out[i]
 * points into it. */
int mm_doc_render(mm_doc_job_t *j, const void *pdf, size_t len, const int *pages, const int *scale_to, int n,
                  mm_buf_t *out, mm_doc_page_t *pages_out, char *err, size_t errlen);

/* The text layer of pages[0..n) (pdftotext, UTF-8, reading order).
 * texts[i]/lens[i] point into out (reset first), not NUL-terminated. */
int mm_doc_text(mm_doc_job_t *j, const void *pdf, size_t len, const int *pages, int n, mm_buf_t *out,
                const char **texts, size_t *lens, char *err, size_t errlen);

/* ---------------------------------------------------------------- parsers (exposed for tests and fuzzing) */

/* pdfinfo's output → info. MM_E_UNPROCESSABLE when it has no page count. */
int mm_doc_parse_info(const char *text, size_t len, mm_doc_info_t *info, char *err, size_t errlen);
/* One binary PPM (P6, maxval 255) at p[0..len): its size and pixels;
 * *used = bytes it takes. At most max_pixels pixels. MM_E_UNPROCESSABLE
 * for anything else or a short image. */
int mm_doc_parse_ppm(const uint8_t *p, size_t len, int64_t max_pixels, int *w, int *h, const uint8_t **rgb,
                     size_t *used, char *err, size_t errlen);

/* ---------------------------------------------------------------- the broker protocol (docrender.c) */

enum { MM_DOC_TOOL_INFO = 1, MM_DOC_TOOL_PPM = 2, MM_DOC_TOOL_TEXT = 3 };
enum { MM_DOC_END_EXIT = 0, MM_DOC_END_SIGNAL = 1, MM_DOC_END_TIMEOUT = 2, MM_DOC_END_OUTPUT = 3,
       MM_DOC_END_SPAWN = 4 };

typedef struct {
    int tool;                 /* MM_DOC_TOOL_* */
    int first, last;          /* pages (1-based) */
    int scale_to;             /* MM_DOC_TOOL_PPM: long side in pixels */
    double seconds;           /* wall-clock budget of this run */
    int64_t memory;           /* RLIMIT_AS */
    int64_t max_out;          /* stdout bytes; more kills the run */
} mm_doc_run_t;

typedef struct {
    int end;                  /* MM_DOC_END_* */
    int code;                 /* exit status or signal */
    char stderr_text[512];    /* the start of the program's stderr, NUL-terminated */
} mm_doc_result_t;

/* Run one program on pdf through the broker; stdout into out (appended).
 * MM_OK when the run ended (res says how); MM_ERR when the broker is gone
 * or does not answer (r->fd is closed then). */
int mm_doc_run(mm_doc_renderer_t *r, const mm_doc_run_t *run, const void *pdf, size_t len, mm_buf_t *out,
               mm_doc_result_t *res, char *err, size_t errlen);

#endif
