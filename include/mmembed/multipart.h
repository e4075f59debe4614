/* multipart/form-data push parser (RFC 7578 on top of RFC 2046).
 *
 * Fed in chunks of any size (down to one byte) straight from the request
 * body stream. It never allocates: all state lives in a caller-owned
 * mm_multipart_t with fixed-size buffers, part bodies reach the caller as
 * (ptr, len) slices through callbacks, and the first error is sticky.
 *
 *   char b[MM_MULTIPART_BOUNDARY_MAX + 1], err[MM_ERRLEN];
 *   mm_multipart_t mp;
 *   if (mm_multipart_boundary(content_type, b, sizeof b, err, sizeof err)) ...
 *   mm_multipart_init(&mp, b, &opts, &cb, ctx);
 *   while (read chunk) if ((rc = mm_multipart_feed(&mp, buf, n))) break;
 *   if (!rc) rc = mm_multipart_finish(&mp);
 *   if (rc) reply(mm_status_http(rc), mm_multipart_error(&mp));
 *
 * What the parser accepts:
 *  - a preamble before the first boundary and an epilogue after the close
 *    delimiter, both ignored; the first "--boundary" may start the body;
 *  - transport padding (spaces/tabs) after a boundary line;
 *  - bare-LF line endings: the ending of the first boundary line (CRLF or
 *    LF) fixes whether later delimiters are CRLF--boundary or LF--boundary,
 *    so a lone LF--boundary inside a CRLF body stays data; header lines may
 *    end in either;
 *  - a delimiter-looking sequence not followed by padding + line end or by
 *    "--" is part data;
 *  - obsolete folded header lines (joined with a space).
 * Every part must carry Content-Disposition: form-data with a name; a part
 * without one is an error (MM_E_INVALID), not skipped, so a client learns
 * that a field went missing instead of getting a puzzling "field required".
 * A body holding only the close delimiter (an empty form) is valid and has
 * zero parts; a body with no boundary at all is "no parts" (MM_E_INVALID). */
#ifndef MMEMBED_MULTIPART_H
#define MMEMBED_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#include "mmembed/common.h"

#define MM_MULTIPART_BOUNDARY_MAX 70   /* RFC 2046 limit */
#define MM_MULTIPART_FIELD_MAX 256     /* name/filename/content_type buffers, with NUL */
#define MM_MULTIPART_LINE_MAX 2048     /* one part header line (folded lines joined) */
#define MM_MULTIPART_PAD_MAX 32        /* transport padding after a delimiter */

typedef struct mm_multipart mm_multipart_t;

/* The part being parsed; valid from on_part_begin to on_part_end. Strings
 * are NUL-terminated bytes as sent (percent escapes in filename* decoded,
 * backslash escapes in quoted strings removed; nothing else, so a filename
 * may hold path separators). */
typedef struct mm_multipart_part {
    unsigned index;                          /* 0-based part number */
    char name[MM_MULTIPART_FIELD_MAX];       /* Content-Disposition name */
    char filename[MM_MULTIPART_FIELD_MAX];   /* filename* (RFC 5987) wins over filename */
    char content_type[MM_MULTIPART_FIELD_MAX]; /* full value; "text/plain" if absent */
    int has_filename;                        /* a filename parameter was present (maybe "") */
    uint64_t size;                           /* body bytes delivered so far */
} mm_multipart_part_t;

/* Callbacks; any may be NULL. Return 0 to go on; any other value stops the
 * parser, which then returns that value from this and every later call
 * (use a negative MM_E_* code, ideally via mm_multipart_fail to set the
 * message). `data` points into the caller's chunk or into the parser and
 * is valid only during the call; one part's body may arrive in many
 * slices, including empty parts arriving in none. */
typedef struct mm_multipart_callbacks {
    int (*on_part_begin)(mm_multipart_t *p, const mm_multipart_part_t *part);
    int (*on_data)(mm_multipart_t *p, const char *data, size_t len);
    int (*on_part_end)(mm_multipart_t *p, const mm_multipart_part_t *part);
} mm_multipart_callbacks_t;

/* Limits, each checked while streaming; 0 = unlimited. Going over one
 * fails with MM_E_TOOBIG and a message naming it. */
typedef struct mm_multipart_opts {
    size_t max_parts;         /* parts in the body */
    size_t max_header_bytes;  /* header block of one part, line endings included */
    uint64_t max_part_bytes;  /* body of one part */
} mm_multipart_opts_t;

/* Caller-owned parser state (about 3.3 KiB). Fields below `user` and
 * `part` are private. */
struct mm_multipart {
    void *user;                 /* caller's context for the callbacks */
    mm_multipart_part_t part;   /* the current part */

    mm_multipart_callbacks_t cb;
    mm_multipart_opts_t opt;
    int status;                 /* sticky: 0 or the first error */
    int state;
    int crlf;                   /* delimiters are CRLF--boundary (else LF--boundary) */
    int closed;                 /* close delimiter seen */
    int hdr_pending;            /* line[] holds a complete, unprocessed header */
    int seen_cd;                /* this part had a Content-Disposition */
    int seen_ct;
    unsigned nparts;            /* parts begun */
    size_t match;               /* delimiter bytes matched, not yet known to be data */
    size_t tail_len;            /* bytes held after a matched delimiter */
    size_t line_len;
    size_t hdr_bytes;           /* header bytes of the current part */
    uint64_t offset;            /* body bytes consumed before the current chunk */
    size_t delim_len;           /* strlen(delim) */
    char delim[4 + MM_MULTIPART_BOUNDARY_MAX + 1]; /* "\r\n--" boundary */
    char tail[MM_MULTIPART_PAD_MAX + 2];
    char line[MM_MULTIPART_LINE_MAX + 1];
    char err[MM_ERRLEN];
};

/* Extract the boundary parameter from a Content-Type header value such as
 * `multipart/form-data; charset=utf-8; boundary="abc def"`. Parameter names
 * are case-insensitive and the value may be a token or a quoted string.
 * Writes the NUL-terminated boundary to out[0..cap) (cap must be at least
 * MM_MULTIPART_BOUNDARY_MAX + 1 for every valid boundary to fit). Returns
 * 0; MM_E_UNSUPPORTED if the media type is not multipart/form-data;
 * MM_E_INVALID if the header is malformed or the boundary is missing,
 * duplicated, empty, longer than 70 bytes, ends in a space or holds a
 * byte RFC 2046 does not allow; MM_ERR if cap is too small. A message goes
 * to err[0..errlen) (err may be NULL). */
int mm_multipart_boundary(const char *content_type, char *out, size_t cap,
                          char *err, size_t errlen);

/* Prepare `p` to parse a body with the given boundary (as returned by
 * mm_multipart_boundary, without the leading "--"). `opts` may be NULL (no
 * limits), `cb` may be NULL (parse and check only); both are copied.
 * `user` is stored in p->user. Returns 0, or MM_E_INVALID for a bad
 * boundary (the message is in mm_multipart_error). */
int mm_multipart_init(mm_multipart_t *p, const char *boundary,
                      const mm_multipart_opts_t *opts,
                      const mm_multipart_callbacks_t *cb, void *user);

/* Parse the next `len` bytes of the body; any chunking gives the same
 * callbacks except for how part bodies are sliced. Returns 0, or the
 * sticky error: MM_E_INVALID (malformed), MM_E_TOOBIG (a limit), or a
 * callback's non-zero return. Bytes after the close delimiter are ignored. */
int mm_multipart_feed(mm_multipart_t *p, const char *data, size_t len);

/* Call at the end of the body. Returns 0 only if the close delimiter was
 * seen; otherwise MM_E_INVALID ("truncated multipart body" or "no parts")
 * or the sticky error from before. */
int mm_multipart_finish(mm_multipart_t *p);

/* The one-line reason for the sticky error ("" while there is none). The
 * string lives in `p`. */
const char *mm_multipart_error(const mm_multipart_t *p);

/* For callbacks: record `code` with a message (unless an error is already
 * recorded) and return `code`, e.g.
 *   return mm_multipart_fail(p, MM_E_UNSUPPORTED, "field %s: ...", part->name); */
int mm_multipart_fail(mm_multipart_t *p, int code, const char *fmt, ...) MM_PRINTF(3, 4);

#endif
