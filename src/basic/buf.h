/* basic/buf.h - growable byte buffer with a hard maximum fixed at creation (libc only).
 *
 * A ferry_buf never grows beyond its max; an append that would is refused with -E2BIG and
 * leaves the buffer unchanged. The content is always NUL-terminated (the NUL is not counted
 * and not limited by max).
 */
#ifndef FERRY_BASIC_BUF_H
#define FERRY_BASIC_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ferry_buf {
    char *data;   /* NULL until the first append */
    size_t len;
    size_t alloc;
    size_t max;
    bool secret;  /* wipe on growth and release */
} ferry_buf;

/* Embedded initialisation; no allocation happens until the first append. */
void ferry_buf_init(ferry_buf *b, size_t max, bool secret);
/* Free the content (wiping it when secret) and reset to empty. */
void ferry_buf_release(ferry_buf *b);
/* Empty the buffer but keep its allocation for the next appends (the old content wiped first
 * when secret). */
void ferry_buf_clear(ferry_buf *b);
/* Append n bytes. 0, -E2BIG (over max) or -ENOMEM. */
int ferry_buf_append(ferry_buf *b, const void *p, size_t n);
int ferry_buf_append_str(ferry_buf *b, const char *s);
/* Append one application/x-www-form-urlencoded pair "name=value" (after a '&' when b is not
 * empty): name as given (the caller's constant), every byte of value but RFC 3986 unreserved
 * ones (A-Z a-z 0-9 - . _ ~) percent-encoded. Returns 0 or what ferry_buf_append returns. */
int ferry_buf_append_form(ferry_buf *b, const char *name, const char *value);
/* Hand the content to the caller (malloc'd, NUL-terminated, or NULL when empty and never
 * allocated) and reset the buffer. */
char *ferry_buf_steal(ferry_buf *b, size_t *ret_len);

#endif
