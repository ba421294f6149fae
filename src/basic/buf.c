/* basic/buf.c - bounded growable buffer. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "basic/buf.h"
#include "basic/mem.h"

void ferry_buf_init(ferry_buf *b, size_t max, bool secret)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->max = max;
    b->secret = secret;
}

void ferry_buf_release(ferry_buf *b)
{
    if (b->data && b->secret)
        ferry_wipe(b->data, b->alloc);
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
}

void ferry_buf_clear(ferry_buf *b)
{
    if (!b->data)
        return;
    if (b->secret)
        ferry_wipe(b->data, b->len);
    b->len = 0;
    b->data[0] = '\0';
}

int ferry_buf_append(ferry_buf *b, const void *p, size_t n)
{
    if (n > b->max || b->len > b->max - n)
        return -E2BIG;
    if (b->len + n == SIZE_MAX)
        return -ENOMEM; /* no room for the NUL in size_t (only reachable with max SIZE_MAX) */
    if (b->len + n + 1 > b->alloc) {
        size_t want = b->alloc ? b->alloc : 256;
        char *nd;

        while (want < b->len + n + 1)
            want = want > SIZE_MAX / 2 ? b->len + n + 1 : want * 2;
        /* Never more than max + 1, written so that max = SIZE_MAX does not wrap to 0. */
        if (want - 1 > b->max)
            want = b->max + 1;
        if (b->secret) {
            /* realloc could leave a copy of the secret behind in freed memory. */
            nd = malloc(want);
            if (!nd)
                return -ENOMEM;
            if (b->data) {
                memcpy(nd, b->data, b->len);
                ferry_wipe(b->data, b->alloc);
                free(b->data);
            }
        } else {
            nd = realloc(b->data, want);
            if (!nd)
                return -ENOMEM;
        }
        b->data = nd;
        b->alloc = want;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int ferry_buf_append_str(ferry_buf *b, const char *s)
{
    return ferry_buf_append(b, s, strlen(s));
}

char *ferry_buf_steal(ferry_buf *b, size_t *ret_len)
{
    char *d = b->data;

    if (ret_len)
        *ret_len = b->len;
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    return d;
}

int ferry_buf_append_form(ferry_buf *b, const char *name, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    int r;

    if (b->len > 0 && (r = ferry_buf_append(b, "&", 1)) < 0)
        return r;
    if ((r = ferry_buf_append_str(b, name)) < 0 || (r = ferry_buf_append(b, "=", 1)) < 0)
        return r;
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        bool plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                     (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~';
        char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
        if ((r = ferry_buf_append(b, plain ? (const char *)p : e, plain ? 1 : 3)) < 0)
            return r;
    }
    return 0;
}
