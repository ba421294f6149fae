/* basic/mem.c - secret-safe memory helpers. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "basic/mem.h"

bool ferry_memeq_ct(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = 0;

    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    return d == 0;
}

void ferry_wipe(void *p, size_t n)
{
    if (p && n)
        explicit_bzero(p, n);
}

void ferry_free_secret_str(char *s)
{
    if (!s)
        return;
    ferry_wipe(s, strlen(s));
    free(s);
}

int ferry_parse_int64(const char *s, long long *ret)
{
    char *end = NULL;
    long long v;

    if (!s || !*s)
        return -EINVAL;
    if (!(*s == '-' || (*s >= '0' && *s <= '9')))
        return -EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (errno != 0 || !end || *end != '\0' || end == s)
        return -EINVAL;
    *ret = v;
    return 0;
}
