/* Growable byte buffer for building responses (request lifetime). */
#ifndef MMEMBED_BUF_H
#define MMEMBED_BUF_H

#include <stddef.h>

#include "mmembed/common.h"

typedef struct {
    char *data;
    size_t len, cap;
    int oom;            /* sticky: an append failed */
} mm_buf_t;

void mm_buf_init(mm_buf_t *b);
void mm_buf_free(mm_buf_t *b);
void mm_buf_reset(mm_buf_t *b);          /* len = 0, keeps capacity */
int mm_buf_reserve(mm_buf_t *b, size_t extra);
void mm_buf_append(mm_buf_t *b, const void *p, size_t n);
void mm_buf_puts(mm_buf_t *b, const char *s);
void mm_buf_printf(mm_buf_t *b, const char *fmt, ...) MM_PRINTF(2, 3);
/* Append s[0..n) as a JSON string literal with quotes and escapes. */
/* Append s as a JSON string literal: escapes quotes, backslashes and control
 * characters; invalid UTF-8 bytes become U+FFFD so the result is always
 * valid JSON whatever a request sent. */
void mm_buf_json_str(mm_buf_t *b, const char *s, size_t n);
/* Append a float the shortest way that reads back to the same float32. */
void mm_buf_float(mm_buf_t *b, float v);

#endif
