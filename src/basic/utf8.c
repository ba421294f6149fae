/* basic/utf8.c - see utf8.h. */
#include "config.h"

#include <string.h>

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

size_t ferry_json_quote(char *out, size_t cap, const void *s, size_t len, unsigned flags)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = s;
    size_t o = 0, run = 0, i = 0;

#define PUT(src, n)                                                                                \
    do {                                                                                           \
        size_t n_ = (n);                                                                           \
        if (n_ && n_ <= cap && o <= cap - n_)                                                      \
            memcpy(out + o, (src), n_);                                                            \
        o += n_;                                                                                   \
    } while (0)

    PUT("\"", 1);
    while (i < len) {
        unsigned char c = p[i];
        char e[12];
        size_t en;

        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        PUT(p + run, i - run);
        if (c >= 0x80) {
            uint32_t cp;
            size_t n = ferry_utf8_next(p + i, len - i, &cp);
            if (n == 0)
                return SIZE_MAX;
            if (!(flags & FERRY_JSON_QUOTE_ASCII)) {
                PUT(p + i, n);
            } else if (cp < 0x10000) {
                e[0] = '\\', e[1] = 'u', e[2] = hex[cp >> 12], e[3] = hex[(cp >> 8) & 15],
                e[4] = hex[(cp >> 4) & 15], e[5] = hex[cp & 15];
                PUT(e, 6);
            } else {
                uint32_t v = cp - 0x10000, hi = 0xd800 | (v >> 10), lo = 0xdc00 | (v & 0x3ff);
                e[0] = '\\', e[1] = 'u', e[2] = hex[hi >> 12], e[3] = hex[(hi >> 8) & 15],
                e[4] = hex[(hi >> 4) & 15], e[5] = hex[hi & 15];
                e[6] = '\\', e[7] = 'u', e[8] = hex[lo >> 12], e[9] = hex[(lo >> 8) & 15],
                e[10] = hex[(lo >> 4) & 15], e[11] = hex[lo & 15];
                PUT(e, 12);
            }
            i += n;
            run = i;
            continue;
        }
        e[0] = '\\';
        en = 2;
        switch (c) {
        case '"':
            e[1] = '"';
            break;
        case '\\':
            e[1] = '\\';
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\f':
            e[1] = 'f';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        default:
            e[1] = 'u', e[2] = '0', e[3] = '0', e[4] = hex[c >> 4], e[5] = hex[c & 15];
            en = 6;
        }
        PUT(e, en);
        i++;
        run = i;
    }
    PUT(p + run, len - run);
    PUT("\"", 1);
#undef PUT
    return o;
}
