/* Base64 (RFC 4648, standard alphabet) for JSON image payloads and
 * encoding_format=base64 embeddings. */
#ifndef MMEMBED_BASE64_H
#define MMEMBED_BASE64_H

#include <stddef.h>

#include "mmembed/buf.h"

/* Decode src[0..len) into dst (capacity at least len / 4 * 3 + 3). Padding
 * is optional; whitespace is skipped. Returns the decoded length, or -1 on
 * an invalid character or length. */
long mm_base64_decode(const char *src, size_t len, unsigned char *dst);
/* Append the base64 of p[0..n) to b. */
void mm_base64_encode(mm_buf_t *b, const void *p, size_t n);

#endif
