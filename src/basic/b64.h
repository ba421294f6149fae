/* basic/b64.h - strict unpadded base64url (RFC 4648 §5, RFC 7515 §2), strict padded standard
 * base64 decoding (RFC 4648 §4) and hex digits (libc only). */
#ifndef FERRY_BASIC_B64_H
#define FERRY_BASIC_B64_H

#include <stddef.h>

/* Encoded length (no padding, no NUL) of n input bytes. */
size_t ferry_b64url_encoded_len(size_t n);

/* Encode n bytes into out, which must hold ferry_b64url_encoded_len(n) + 1 bytes; the result
 * is NUL-terminated. Returns the encoded length. */
size_t ferry_b64url_encode(const void *in, size_t n, char *out);

/* Decode exactly n characters of strict base64url: alphabet A-Z a-z 0-9 - _ only (no '=',
 * '+', '/', whitespace), n % 4 != 1, and unused trailing bits zero (canonical). out must hold
 * n * 3 / 4 bytes. Returns 0 and the decoded length in *ret_len, or -EINVAL. */
int ferry_b64url_decode(const char *in, size_t n, unsigned char *out, size_t *ret_len);

/* Same, into a new malloc'd buffer (NUL-terminated for convenience). -EINVAL or -ENOMEM. */
int ferry_b64url_decode_alloc(const char *in, size_t n, unsigned char **ret, size_t *ret_len);

/* Decode exactly n characters of strict standard base64 (RFC 4648 §4, padded): alphabet A-Z
 * a-z 0-9 + / only, n % 4 == 0, '=' only as the last one or two characters, and unused
 * trailing bits zero (canonical). out must hold n / 4 * 3 bytes. Returns 0 and the decoded
 * length in *ret_len, or -EINVAL. */
int ferry_b64_decode(const char *in, size_t n, unsigned char *out, size_t *ret_len);

/* Encode into a new malloc'd NUL-terminated string, or NULL on allocation failure. */
char *ferry_b64url_encode_alloc(const void *in, size_t n);

/* The value of one hex digit (0-9, a-f, A-F), or -1 for any other byte. */
static inline int ferry_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
