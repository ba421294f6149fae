/* basic/b64.c - strict unpadded base64url, strict padded standard base64 decoding. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "basic/b64.h"

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* 0..63 for alphabet characters, 0xff for everything else. */
static const uint8_t rev[256] = {
#define X 0xff
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  62, X,  X,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, X,  X,  X,  X,  X,  X,
    X,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, X,  X,  X,  X,  63,
    X,  26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
#undef X
};

size_t ferry_b64url_encoded_len(size_t n)
{
    return (n / 3) * 4 + ((n % 3) ? (n % 3) + 1 : 0);
}

size_t ferry_b64url_encode(const void *in, size_t n, char *out)
{
    const unsigned char *p = in;
    size_t o = 0, i = 0;

    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8);
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

int ferry_b64url_decode(const char *in, size_t n, unsigned char *out, size_t *ret_len)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0, i = 0;
    uint8_t a, b, c, d;

    if (n % 4 == 1)
        return -EINVAL;
    for (; i + 4 <= n; i += 4) {
        a = rev[s[i]], b = rev[s[i + 1]], c = rev[s[i + 2]], d = rev[s[i + 3]];
        if ((a | b | c | d) & 0xc0)
            return -EINVAL;
        uint32_t v = ((uint32_t)a << 18) | ((uint32_t)b << 12) | ((uint32_t)c << 6) | d;
        out[o++] = (unsigned char)(v >> 16);
        out[o++] = (unsigned char)(v >> 8);
        out[o++] = (unsigned char)v;
    }
    if (n - i == 2) {
        a = rev[s[i]], b = rev[s[i + 1]];
        if ((a | b) & 0xc0 || (b & 0x0f))
            return -EINVAL; /* non-canonical: unused low 4 bits set */
        out[o++] = (unsigned char)((a << 2) | (b >> 4));
    } else if (n - i == 3) {
        a = rev[s[i]], b = rev[s[i + 1]], c = rev[s[i + 2]];
        if ((a | b | c) & 0xc0 || (c & 0x03))
            return -EINVAL; /* non-canonical: unused low 2 bits set */
        out[o++] = (unsigned char)((a << 2) | (b >> 4));
        out[o++] = (unsigned char)((b << 4) | (c >> 2));
    }
    *ret_len = o;
    return 0;
}

/* The value of a standard-alphabet character, 0xff for anything else ('-' and '_' too). */
static uint8_t std_val(unsigned char c)
{
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    if (c == '-' || c == '_')
        return 0xff;
    return rev[c];
}

int ferry_b64_decode(const char *in, size_t n, unsigned char *out, size_t *ret_len)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0, pad = 0;
    uint8_t v[4];

    if (n % 4 != 0)
        return -EINVAL;
    if (n > 0 && s[n - 1] == '=')
        pad = (n > 1 && s[n - 2] == '=') ? 2 : 1;
    for (size_t i = 0; i < n; i += 4) {
        size_t k = (i + 4 == n) ? 4 - pad : 4; /* data characters in this quartet */
        uint32_t w = 0;
        if (k < 2)
            return -EINVAL;
        for (size_t j = 0; j < 4; j++) {
            v[j] = j < k ? std_val(s[i + j]) : 0;
            if (v[j] & 0xc0)
                return -EINVAL; /* outside the alphabet, or '=' before the end */
            w = (w << 6) | v[j];
        }
        if ((k == 2 && (v[1] & 0x0f)) || (k == 3 && (v[2] & 0x03)))
            return -EINVAL; /* non-canonical: unused low bits set */
        out[o++] = (unsigned char)(w >> 16);
        if (k > 2)
            out[o++] = (unsigned char)(w >> 8);
        if (k > 3)
            out[o++] = (unsigned char)w;
    }
    *ret_len = o;
    return 0;
}

int ferry_b64url_decode_alloc(const char *in, size_t n, unsigned char **ret, size_t *ret_len)
{
    unsigned char *out = malloc(n / 4 * 3 + 3);
    size_t len;
    int r;

    if (!out)
        return -ENOMEM;
    r = ferry_b64url_decode(in, n, out, &len);
    if (r < 0) {
        free(out);
        return r;
    }
    out[len] = '\0';
    *ret = out;
    *ret_len = len;
    return 0;
}

char *ferry_b64url_encode_alloc(const void *in, size_t n)
{
    char *out = malloc(ferry_b64url_encoded_len(n) + 1);

    if (out)
        ferry_b64url_encode(in, n, out);
    return out;
}
