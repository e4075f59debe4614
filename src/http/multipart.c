/* multipart/form-data push parser; see include/mmembed/multipart.h.
 *
 * The body is a byte-at-a-time state machine, except where it matters: in
 * part data the parser jumps with memchr to the next byte that could begin
 * a delimiter, and hands the caller the longest slices it can.
 *
 * Delimiter matching keeps no copy of the input. Bytes that might be a
 * delimiter are "held": the first `match` bytes of the delimiter string
 * (known, so not stored) followed by tail[0..tail_len) (padding, '-', CR).
 * If the sequence turns out to be data, held bytes that came from earlier
 * chunks are emitted from delim/tail, and those from the current chunk
 * simply stay in the current slice of the input. No held byte can begin
 * another delimiter: the first byte (CR, or LF in bare-LF mode) occurs
 * nowhere else in the delimiter, padding and '-' are not it, and a held CR
 * is followed by the byte that is not LF. So a failed match only re-reads
 * the byte that broke it. */
#include "mmembed/multipart.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum {
    S_PRE_LINE,       /* preamble at a line start: matching "--boundary" */
    S_PRE_SKIP,       /* preamble: skipping to the next LF */
    S_PRE_AFTER,      /* "--boundary" seen in the preamble: padding, line end or "--" */
    S_PRE_DASH,
    S_PRE_CR,
    S_HDR_LINE_START, /* part headers */
    S_HDR_LINE,
    S_HDR_CR,
    S_HDR_END_CR,     /* CR of the blank line that ends the headers */
    S_BODY,           /* part data, maybe inside a delimiter match */
    S_BODY_AFTER,     /* whole delimiter matched: padding, line end or "--" */
    S_BODY_DASH,
    S_BODY_CR,
    S_EPILOGUE,
    S_ERROR,
};

/* ------------------------------------------------------------------ */
/* Characters and small string helpers                                 */
/* ------------------------------------------------------------------ */

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int is_alnum(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* RFC 7230 tchar */
static int is_tchar(int c)
{
    return is_alnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* RFC 2046 bchars (space allowed, but not last) */
static int is_bchar(int c)
{
    return is_alnum(c) || (c && strchr("'()+_,-./:=? ", c));
}

static int ieq(const char *s, size_t n, const char *lit)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (!lit[i] || lower((unsigned char)s[i]) != lit[i])
            return 0;
    return lit[n] == '\0';
}

static const char *skip_ows(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* Next `; name=value` parameter of a header value. On 1, name/nlen point
 * into the input and the unescaped value is in val (cut at vcap - 1 bytes
 * and NUL-terminated); *vlen is its full length, so vlen >= vcap means it
 * did not fit. Returns 0 at the end, MM_E_INVALID if malformed. */
static int next_param(const char **sp, const char **name, size_t *nlen,
                      char *val, size_t vcap, size_t *vlen)
{
    const char *s = *sp;
    size_t n = 0;

    for (;;) {
        s = skip_ows(s);
        if (!*s) {
            *sp = s;
            return 0;
        }
        if (*s != ';')
            return MM_E_INVALID;
        s = skip_ows(s + 1);
        if (*s != ';')
            break;
    }
    if (!*s) {
        *sp = s;
        return 0;
    }
    *name = s;
    while (is_tchar((unsigned char)*s))
        s++;
    *nlen = (size_t)(s - *name);
    if (!*nlen)
        return MM_E_INVALID;
    s = skip_ows(s);
    if (*s != '=')
        return MM_E_INVALID;
    s = skip_ows(s + 1);
    if (*s == '"') {
        for (s++;; s++) {
            char c = *s;
            if (!c)
                return MM_E_INVALID;
            if (c == '"') {
                s++;
                break;
            }
            if (c == '\\') {
                c = *++s;
                if (!c)
                    return MM_E_INVALID;
            }
            if (n + 1 < vcap)
                val[n] = c;
            n++;
        }
    } else {
        for (; (unsigned char)*s > ' ' && *s != 0x7f && *s != ';' && *s != '"'; s++) {
            if (n + 1 < vcap)
                val[n] = *s;
            n++;
        }
    }
    val[n < vcap ? n : vcap - 1] = '\0';
    *vlen = n;
    *sp = s;
    return 1;
}

static int check_boundary(const char *b, size_t n, char *err, size_t errlen)
{
    size_t i;
    if (n == 0)
        return mm_errf(err, errlen, MM_E_INVALID, "multipart boundary is empty");
    if (n > MM_MULTIPART_BOUNDARY_MAX)
        return mm_errf(err, errlen, MM_E_INVALID,
                       "multipart boundary is longer than %d characters", MM_MULTIPART_BOUNDARY_MAX);
    for (i = 0; i < n; i++)
        if (!is_bchar((unsigned char)b[i]))
            return mm_errf(err, errlen, MM_E_INVALID,
                           "multipart boundary holds an illegal character (0x%02x)",
                           (unsigned char)b[i]);
    if (b[n - 1] == ' ')
        return mm_errf(err, errlen, MM_E_INVALID, "multipart boundary ends with a space");
    return MM_OK;
}

static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], need, cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) { need = 1; cp = c & 0x1f; min = 0x80; }
        else if (c >= 0xe0 && c <= 0xef) { need = 2; cp = c & 0x0f; min = 0x800; }
        else if (c >= 0xf0 && c <= 0xf4) { need = 3; cp = c & 0x07; min = 0x10000; }
        else return 0;
        if (n - i <= need)
            return 0;
        for (unsigned k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += need + 1;
    }
    return 1;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = lower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

static int set_error(mm_multipart_t *p, int code, const char *fmt, ...) MM_PRINTF(3, 4);

static int set_error(mm_multipart_t *p, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
    p->status = code;
    p->state = S_ERROR;
    return code;
}

/* A callback returned rc: keep its message if it set one. */
static int callback_failed(mm_multipart_t *p, int rc, const char *which)
{
    if (!p->err[0])
        snprintf(p->err, sizeof p->err, "multipart %s callback stopped the parser (status %d)",
                 which, rc);
    p->status = rc;
    p->state = S_ERROR;
    return rc;
}

int mm_multipart_fail(mm_multipart_t *p, int code, const char *fmt, ...)
{
    va_list ap;
    if (p->err[0])
        return code;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
    return code;
}

const char *mm_multipart_error(const mm_multipart_t *p)
{
    return p->status ? p->err : "";
}

/* ------------------------------------------------------------------ */
/* Content-Type of the request                                         */
/* ------------------------------------------------------------------ */

int mm_multipart_boundary(const char *ct, char *out, size_t cap, char *err, size_t errlen)
{
    const char *s, *type, *sub, *name;
    size_t tn, sn, nlen, vlen;
    char val[MM_MULTIPART_BOUNDARY_MAX + 2];
    int found = 0, rc;

    if (!ct)
        return mm_errf(err, errlen, MM_E_UNSUPPORTED,
                       "Content-Type must be multipart/form-data (none given)");
    s = skip_ows(ct);
    type = s;
    while (is_tchar((unsigned char)*s))
        s++;
    tn = (size_t)(s - type);
    sub = *s == '/' ? ++s : s;
    while (is_tchar((unsigned char)*s))
        s++;
    sn = (size_t)(s - sub);
    if (!ieq(type, tn, "multipart") || !ieq(sub, sn, "form-data"))
        return mm_errf(err, errlen, MM_E_UNSUPPORTED,
                       "Content-Type must be multipart/form-data (got \"%.64s\")", ct);

    while ((rc = next_param(&s, &name, &nlen, val, sizeof val, &vlen)) == 1) {
        if (!ieq(name, nlen, "boundary"))
            continue;
        if (found)
            return mm_errf(err, errlen, MM_E_INVALID, "Content-Type has two boundary parameters");
        found = 1;
        if (vlen > MM_MULTIPART_BOUNDARY_MAX)
            return mm_errf(err, errlen, MM_E_INVALID,
                           "multipart boundary is longer than %d characters",
                           MM_MULTIPART_BOUNDARY_MAX);
        if ((rc = check_boundary(val, vlen, err, errlen)))
            return rc;
        if (vlen + 1 > cap)
            return mm_errf(err, errlen, MM_ERR, "boundary buffer too small");
        memcpy(out, val, vlen + 1);
    }
    if (rc < 0)
        return mm_errf(err, errlen, MM_E_INVALID, "malformed Content-Type parameters");
    if (!found)
        return mm_errf(err, errlen, MM_E_INVALID, "Content-Type has no boundary parameter");
    return MM_OK;
}

/* ------------------------------------------------------------------ */
/* Part headers                                                        */
/* ------------------------------------------------------------------ */

/* Copy an RFC 5987 ext-value (charset'lang'pct-encoded) into the filename.
 * Returns 1 if used, 0 if the charset is one we do not decode, or an
 * error. */
static int set_ext_filename(mm_multipart_t *p, const char *v, size_t n)
{
    const char *q1 = memchr(v, '\'', n), *q2;
    char *out = p->part.filename;
    size_t o = 0, i;
    int latin1;

    q2 = q1 ? memchr(q1 + 1, '\'', n - (size_t)(q1 + 1 - v)) : NULL;
    if (!q2)
        return set_error(p, MM_E_INVALID, "part %u: malformed filename* (want charset'lang'value)",
                         p->part.index);
    if (ieq(v, (size_t)(q1 - v), "utf-8"))
        latin1 = 0;
    else if (ieq(v, (size_t)(q1 - v), "iso-8859-1"))
        latin1 = 1;
    else
        return 0;
    for (i = (size_t)(q2 + 1 - v); i < n; i++) {
        int c = (unsigned char)v[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexval((unsigned char)v[i + 1]) : -1;
            int lo = hi >= 0 ? hexval((unsigned char)v[i + 2]) : -1;
            if (lo < 0)
                return set_error(p, MM_E_INVALID, "part %u: bad percent escape in filename*",
                                 p->part.index);
            c = hi * 16 + lo;
            i += 2;
        }
        if (c == 0)
            return set_error(p, MM_E_INVALID, "part %u: NUL in filename*", p->part.index);
        if (o + (latin1 && c >= 0x80 ? 2 : 1) >= MM_MULTIPART_FIELD_MAX)
            return set_error(p, MM_E_TOOBIG, "part %u: filename longer than %d bytes",
                             p->part.index, MM_MULTIPART_FIELD_MAX - 1);
        if (latin1 && c >= 0x80) {
            out[o++] = (char)(0xc0 | (c >> 6));
            out[o++] = (char)(0x80 | (c & 0x3f));
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    if (!valid_utf8((const unsigned char *)out, o))
        return set_error(p, MM_E_INVALID, "part %u: filename* is not valid UTF-8", p->part.index);
    return 1;
}

static int copy_field(mm_multipart_t *p, char *dst, const char *src, size_t n, const char *what)
{
    if (n >= MM_MULTIPART_FIELD_MAX)
        return set_error(p, MM_E_TOOBIG, "part %u: %s longer than %d bytes", p->part.index, what,
                         MM_MULTIPART_FIELD_MAX - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
    return MM_OK;
}

static int parse_disposition(mm_multipart_t *p, const char *v)
{
    const char *s = v, *name;
    size_t tn, nlen, vlen;
    char val[MM_MULTIPART_LINE_MAX + 1];
    int rc, seen_name = 0, seen_fn = 0, seen_ext = 0, have_ext = 0;

    while (is_tchar((unsigned char)*s))
        s++;
    tn = (size_t)(s - v);
    if (!ieq(v, tn, "form-data"))
        return set_error(p, MM_E_INVALID, "part %u: Content-Disposition is \"%.*s\", not form-data",
                         p->part.index, (int)MM_MIN(tn, 32), v);
    while ((rc = next_param(&s, &name, &nlen, val, sizeof val, &vlen)) == 1) {
        int *seen = ieq(name, nlen, "name")      ? &seen_name
                  : ieq(name, nlen, "filename")  ? &seen_fn
                  : ieq(name, nlen, "filename*") ? &seen_ext
                  : NULL;
        if (!seen)
            continue;
        /* Two values for one parameter would let a filter in front of us
         * and this parser disagree on which field this is. */
        if (*seen)
            return set_error(p, MM_E_INVALID, "part %u: Content-Disposition repeats \"%.*s\"",
                             p->part.index, (int)nlen, name);
        *seen = 1;
        if (seen == &seen_name) {
            if ((rc = copy_field(p, p->part.name, val, vlen, "name")))
                return rc;
        } else if (seen == &seen_ext) {
            if ((rc = set_ext_filename(p, val, vlen)) < 0)
                return rc;
            have_ext = rc;
        } else if (!have_ext) {
            if ((rc = copy_field(p, p->part.filename, val, vlen, "filename")))
                return rc;
        }
        if (seen != &seen_name)
            p->part.has_filename = 1;
    }
    if (rc < 0)
        return set_error(p, MM_E_INVALID, "part %u: malformed Content-Disposition parameters",
                         p->part.index);
    return MM_OK;
}

/* Process the complete header line in p->line. */
static int process_header(mm_multipart_t *p)
{
    char *line = p->line, *colon, *v, *e;
    size_t n;

    line[p->line_len] = '\0';
    colon = memchr(line, ':', p->line_len);
    if (!colon)
        return set_error(p, MM_E_INVALID, "part %u: header line without ':'", p->part.index);
    n = (size_t)(colon - line);
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)line[i]))
            return set_error(p, MM_E_INVALID, "part %u: bad header name", p->part.index);
    if (!n)
        return set_error(p, MM_E_INVALID, "part %u: empty header name", p->part.index);
    v = (char *)skip_ows(colon + 1);
    e = line + p->line_len;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *e = '\0';

    if (ieq(line, n, "content-disposition")) {
        if (p->seen_cd)
            return set_error(p, MM_E_INVALID, "part %u: two Content-Disposition headers",
                             p->part.index);
        p->seen_cd = 1;
        return parse_disposition(p, v);
    }
    if (ieq(line, n, "content-type")) {
        if (p->seen_ct)
            return set_error(p, MM_E_INVALID, "part %u: two Content-Type headers", p->part.index);
        p->seen_ct = 1;
        if (e == v)
            return set_error(p, MM_E_INVALID, "part %u: empty Content-Type", p->part.index);
        return copy_field(p, p->part.content_type, v, (size_t)(e - v), "Content-Type");
    }
    return MM_OK;
}

/* A boundary line was completed: begin the next part's headers. */
static int start_part(mm_multipart_t *p)
{
    if (p->opt.max_parts && p->nparts >= p->opt.max_parts)
        return set_error(p, MM_E_TOOBIG, "too many parts (max_parts is %zu)", p->opt.max_parts);
    memset(&p->part, 0, sizeof p->part);
    p->part.index = p->nparts++;
    memcpy(p->part.content_type, "text/plain", sizeof "text/plain");
    p->hdr_bytes = 0;
    p->line_len = 0;
    p->hdr_pending = 0;
    p->seen_cd = p->seen_ct = 0;
    p->state = S_HDR_LINE_START;
    return MM_OK;
}

static int headers_done(mm_multipart_t *p)
{
    int rc;
    if (!p->seen_cd)
        return set_error(p, MM_E_INVALID, "part %u has no Content-Disposition header",
                         p->part.index);
    if (!p->part.name[0])
        return set_error(p, MM_E_INVALID, "part %u has no Content-Disposition name",
                         p->part.index);
    p->match = p->tail_len = 0;
    p->state = S_BODY;
    if (p->cb.on_part_begin && (rc = p->cb.on_part_begin(p, &p->part)))
        return callback_failed(p, rc, "on_part_begin");
    return MM_OK;
}

/* ------------------------------------------------------------------ */
/* Part data                                                           */
/* ------------------------------------------------------------------ */

static int emit(mm_multipart_t *p, const char *d, size_t n)
{
    int rc;
    if (!n)
        return MM_OK;
    if (p->opt.max_part_bytes && p->part.size + n > p->opt.max_part_bytes)
        return set_error(p, MM_E_TOOBIG, "part %u (\"%.64s\") is larger than max_part_bytes (%llu)",
                         p->part.index, p->part.name, (unsigned long long)p->opt.max_part_bytes);
    p->part.size += n;
    if (p->cb.on_data && (rc = p->cb.on_data(p, d, n)))
        return callback_failed(p, rc, "on_data");
    return MM_OK;
}

/* The held bytes are data after all. *hic counts those that came from the
 * current chunk: they are still in the caller's slice, so only the older
 * ones are emitted here, from delim and tail. */
static int release(mm_multipart_t *p, size_t *hic)
{
    const char *d = p->crlf ? p->delim : p->delim + 1;
    size_t n = p->match + p->tail_len - *hic;
    size_t a = MM_MIN(n, p->match);
    int rc;

    if ((rc = emit(p, d, a)) || (rc = emit(p, p->tail, n - a)))
        return rc;
    p->match = p->tail_len = 0;
    *hic = 0;
    return MM_OK;
}

static int part_end(mm_multipart_t *p)
{
    int rc;
    if (p->cb.on_part_end && (rc = p->cb.on_part_end(p, &p->part)))
        return callback_failed(p, rc, "on_part_end");
    return MM_OK;
}

/* ------------------------------------------------------------------ */
/* The state machine                                                   */
/* ------------------------------------------------------------------ */

int mm_multipart_init(mm_multipart_t *p, const char *boundary, const mm_multipart_opts_t *opts,
                      const mm_multipart_callbacks_t *cb, void *user)
{
    size_t n = boundary ? strlen(boundary) : 0;
    int rc;

    memset(p, 0, sizeof *p);
    p->user = user;
    if (opts)
        p->opt = *opts;
    if (cb)
        p->cb = *cb;
    if ((rc = check_boundary(boundary ? boundary : "", n, p->err, sizeof p->err))) {
        p->status = rc;
        p->state = S_ERROR;
        return rc;
    }
    memcpy(p->delim, "\r\n--", 4);
    memcpy(p->delim + 4, boundary, n + 1);
    p->delim_len = n + 4;
    p->state = S_PRE_LINE;
    return MM_OK;
}

#define IS_BODY(s) ((s) >= S_BODY && (s) <= S_BODY_CR)

int mm_multipart_feed(mm_multipart_t *p, const char *data, size_t len)
{
    const char *q = data, *end = data + len, *mark = data;
    const char *db = p->delim + 2;            /* "--boundary" */
    size_t dbl = p->delim_len - 2;
    const char *d = p->crlf ? p->delim : p->delim + 1;
    size_t dl = p->crlf ? p->delim_len : p->delim_len - 1;
    size_t hic = 0;                           /* held bytes from this chunk */
    int rc, c;

#define POS() ((unsigned long long)(p->offset + (uint64_t)(q - data)))
#define HDR_BYTES(k)                                                                        \
    do {                                                                                    \
        p->hdr_bytes += (k);                                                                \
        if (p->opt.max_header_bytes && p->hdr_bytes > p->opt.max_header_bytes)              \
            return set_error(p, MM_E_TOOBIG, "part %u: headers larger than max_header_bytes (%zu)", \
                             p->part.index, p->opt.max_header_bytes);                       \
    } while (0)

    if (p->status)
        return p->status;
    if (!len)
        return MM_OK;

    while (q < end) {
        c = (unsigned char)*q;
        switch (p->state) {

        /* ---- preamble and first boundary ---- */
        case S_PRE_LINE:
            if (c != (unsigned char)db[p->match]) {
                p->match = 0;
                p->state = S_PRE_SKIP; /* re-read c there: it may be the LF */
                break;
            }
            q++;
            if (++p->match == dbl) {
                p->match = 0;
                p->tail_len = 0;
                p->state = S_PRE_AFTER;
            }
            break;
        case S_PRE_SKIP: {
            const char *lf = memchr(q, '\n', (size_t)(end - q));
            if (!lf) {
                q = end;
                break;
            }
            q = lf + 1;
            p->state = S_PRE_LINE;
            break;
        }
        case S_PRE_AFTER:
            if (c == ' ' || c == '\t') {
                p->tail_len = 1; /* only "padding seen" matters here */
                q++;
            } else if (c == '-' && !p->tail_len) {
                q++;
                p->state = S_PRE_DASH;
            } else if (c == '\r') {
                q++;
                p->state = S_PRE_CR;
            } else if (c == '\n') {
                q++;
                p->crlf = 0;
                d = p->delim + 1;
                dl = p->delim_len - 1;
                if ((rc = start_part(p)))
                    return rc;
            } else {
                p->state = S_PRE_SKIP;
            }
            break;
        case S_PRE_DASH:
            if (c == '-') {
                q++;
                p->closed = 1;
                p->state = S_EPILOGUE;
            } else {
                p->state = S_PRE_SKIP;
            }
            break;
        case S_PRE_CR:
            if (c == '\n') {
                q++;
                p->crlf = 1;
                d = p->delim;
                dl = p->delim_len;
                if ((rc = start_part(p)))
                    return rc;
            } else {
                p->state = S_PRE_SKIP;
            }
            break;

        /* ---- part headers ---- */
        case S_HDR_LINE_START:
            if (c == ' ' || c == '\t') {
                /* obs-fold: the line continues the previous header */
                if (!p->hdr_pending)
                    return set_error(p, MM_E_INVALID,
                                     "part %u: header starts with whitespace at byte %llu",
                                     p->part.index, POS());
                p->hdr_pending = 0;
                c = ' ';
                p->state = S_HDR_LINE;
                goto hdr_byte;
            }
            if (p->hdr_pending) {
                p->hdr_pending = 0;
                if ((rc = process_header(p)))
                    return rc;
                p->line_len = 0;
            }
            if (c == '\r') {
                HDR_BYTES(1);
                q++;
                p->state = S_HDR_END_CR;
            } else if (c == '\n') {
                HDR_BYTES(1);
                q++;
                if ((rc = headers_done(p)))
                    return rc;
                mark = q;
                hic = 0;
            } else {
                p->state = S_HDR_LINE;
            }
            break;
        case S_HDR_LINE:
            if (c == '\r' || c == '\n') {
                HDR_BYTES(1);
                q++;
                if (c == '\r') {
                    p->state = S_HDR_CR;
                } else {
                    p->hdr_pending = 1;
                    p->state = S_HDR_LINE_START;
                }
                break;
            }
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return set_error(p, MM_E_INVALID,
                                 "part %u: control character 0x%02x in header at byte %llu",
                                 p->part.index, c, POS());
        hdr_byte:
            HDR_BYTES(1);
            if (p->line_len == MM_MULTIPART_LINE_MAX)
                return set_error(p, MM_E_TOOBIG, "part %u: header line longer than %d bytes",
                                 p->part.index, MM_MULTIPART_LINE_MAX);
            p->line[p->line_len++] = (char)c;
            q++;
            break;
        case S_HDR_CR:
            if (c != '\n')
                return set_error(p, MM_E_INVALID, "part %u: CR without LF in header at byte %llu",
                                 p->part.index, POS());
            HDR_BYTES(1);
            q++;
            p->hdr_pending = 1;
            p->state = S_HDR_LINE_START;
            break;
        case S_HDR_END_CR:
            if (c != '\n')
                return set_error(p, MM_E_INVALID, "part %u: CR without LF after headers at byte %llu",
                                 p->part.index, POS());
            HDR_BYTES(1);
            q++;
            if ((rc = headers_done(p)))
                return rc;
            mark = q;
            hic = 0;
            break;

        /* ---- part data ---- */
        case S_BODY:
            if (p->match == 0) {
                const char *f = memchr(q, d[0], (size_t)(end - q));
                if (!f) {
                    q = end;
                    break;
                }
                q = f + 1;
                p->match = 1;
                hic = 1;
            }
            while (q < end && p->match < dl && *q == d[p->match]) {
                q++;
                p->match++;
                hic++;
            }
            if (p->match == dl)
                p->state = S_BODY_AFTER;
            else if (q < end && (rc = release(p, &hic))) /* mismatch: re-read *q */
                return rc;
            break;
        case S_BODY_AFTER:
            if ((c == ' ' || c == '\t') && p->tail_len < MM_MULTIPART_PAD_MAX) {
                p->tail[p->tail_len++] = (char)c;
            } else if (c == '-' && !p->tail_len) {
                p->tail[p->tail_len++] = (char)c;
                p->state = S_BODY_DASH;
            } else if (c == '\r') {
                p->tail[p->tail_len++] = (char)c;
                p->state = S_BODY_CR;
            } else if (c == '\n') {
                goto delimiter;
            } else {
                if ((rc = release(p, &hic)))
                    return rc;
                p->state = S_BODY;
                break;
            }
            q++;
            hic++;
            break;
        case S_BODY_DASH:
            if (c == '-')
                goto delimiter;
            if ((rc = release(p, &hic)))
                return rc;
            p->state = S_BODY;
            break;
        case S_BODY_CR:
            if (c == '\n')
                goto delimiter;
            if ((rc = release(p, &hic)))
                return rc;
            p->state = S_BODY;
            break;
        delimiter: {
            int close = p->state == S_BODY_DASH;
            q++;
            hic++;
            if ((rc = emit(p, mark, (size_t)(q - hic - mark))))
                return rc;
            p->match = p->tail_len = 0;
            hic = 0;
            if ((rc = part_end(p)))
                return rc;
            if (close) {
                p->closed = 1;
                p->state = S_EPILOGUE;
            } else if ((rc = start_part(p))) {
                return rc;
            }
            break;
        }

        case S_EPILOGUE:
            q = end;
            break;
        default:
            return p->status ? p->status : set_error(p, MM_ERR, "multipart parser in a bad state");
        }
    }

    if (IS_BODY(p->state) && (rc = emit(p, mark, (size_t)(end - hic - mark))))
        return rc;
    p->offset += len;
    return MM_OK;
#undef POS
#undef HDR_BYTES
}

int mm_multipart_finish(mm_multipart_t *p)
{
    if (p->status)
        return p->status;
    if (p->closed)
        return MM_OK;
    if (p->state <= S_PRE_CR)
        return set_error(p, MM_E_INVALID, "no parts: multipart boundary not found in the body");
    return set_error(p, MM_E_INVALID, "truncated multipart body (close delimiter missing)");
}
