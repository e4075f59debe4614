/* Shared status codes and small helpers used by every module. */
#ifndef MMEMBED_COMMON_H
#define MMEMBED_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Status codes: 0 ok, negative errors. Each error maps to one HTTP status
 * (mm_status_http) so a module deep in the stack can say what went wrong
 * without knowing about HTTP. */
enum {
    MM_OK = 0,
    MM_ERR = -1,          /* internal error (500) */
    MM_E_INVALID = -2,    /* malformed input (400) */
    MM_E_NOTFOUND = -3,   /* unknown model/route/tensor (404) */
    MM_E_TOOBIG = -4,     /* over a size limit (413) */
    MM_E_UNSUPPORTED = -5,/* unsupported media/content type (415) */
    MM_E_UNPROCESSABLE = -6, /* well-formed but unusable (422) */
    MM_E_NOMEM = -7,      /* out of memory (500) */
    MM_E_AGAIN = -8,      /* busy, try later (503) */
    MM_E_TIMEOUT = -9,    /* budget exceeded (422 for media, 504 otherwise) */
};

#define MM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MM_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MM_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Error text buffer passed down by loaders and parsers: callee writes a
 * one-line, user-facing reason into err[0..errlen). */
#define MM_ERRLEN 256

#if defined(__GNUC__)
#define MM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MM_PRINTF(a, b)
#endif

/* snprintf into an error buffer (NULL-safe); returns `code` for one-line
 * `return mm_errf(err, errlen, MM_E_INVALID, "...")`. */
int mm_errf(char *err, size_t errlen, int code, const char *fmt, ...) MM_PRINTF(4, 5);

/* HTTP status for a status code (MM_OK → 200). */
int mm_status_http(int code);

/* The last component of path, trailing slashes ignored ("/a/b/" -> "b"):
 * returns where it starts, *len its length (not NUL-terminated). */
const char *mm_path_last(const char *path, int *len);

/* Microseconds: monotonic (deadlines, durations) and wall clock. */
int64_t mm_now_us(void);
int64_t mm_wall_us(void);

/* The release, for /info, logs, --version and the pack cache key. */
#define MM_VERSION "0.1.0"

#endif
