/* basic/utf8.c - see utf8.h. */
#include "config.h"

#include "basic/utf8.h"

size_t ferry_utf8_next(const unsigned char *s, size_t n, uint32_t *ret_cp)
{
    uint32_t cp;
    size_t len;

    if (n == 0)
        return 0;
    if (s[0] < 0x80) {
        *ret_cp = s[0];
        return 1;
    }
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    *ret_cp = cp;
    return len;
}

bool ferry_utf8_valid(const void *s, size_t n)
{
    const unsigned char *p = s;
    uint32_t cp;

    for (size_t i = 0; i < n;) {
        size_t len = ferry_utf8_next(p + i, n - i, &cp);

        if (len == 0)
            return false;
        i += len;
    }
    return true;
}

bool ferry_text_ok(const void *s, size_t n)
{
    const unsigned char *p = s;
    uint32_t cp;

    for (size_t i = 0; i < n;) {
        size_t len = ferry_utf8_next(p + i, n - i, &cp);

        if (len == 0 || cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
            return false;
        i += len;
    }
    return true;
}
