/* basic/utf8.h - strict UTF-8 checks shared by the modules that take text from outside
 * (libc only). Strict means RFC 3629: no overlong forms, no surrogates (U+D800..U+DFFF), nothing
 * above U+10FFFF, no truncated sequence. */
#ifndef FERRY_BASIC_UTF8_H
#define FERRY_BASIC_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decode the sequence at s (n > 0 bytes left). Returns its length (1..4) and the code point in
 * *ret_cp, or 0 when no valid sequence starts there. */
size_t ferry_utf8_next(const unsigned char *s, size_t n, uint32_t *ret_cp);

/* All n bytes at s are strict UTF-8 (NUL bytes allowed: U+0000 is valid UTF-8). */
bool ferry_utf8_valid(const void *s, size_t n);

/* Text for identifiers, subjects and claims: strict UTF-8 without C0 controls (NUL
 * included), DEL or C1 controls (U+0080..U+009F). */
bool ferry_text_ok(const void *s, size_t n);

/* ferry_json_quote flag: non-ASCII as \uXXXX (a UTF-16 surrogate pair above U+FFFF), as
 * jansson's JSON_ENSURE_ASCII: the result is then printable ASCII only. */
#define FERRY_JSON_QUOTE_ASCII 1u

/* The one JSON string writer of the tree: s (len bytes, strict UTF-8, NUL bytes allowed) as a
 * quoted JSON string, byte for byte as jansson's json_dumps writes a string (without
 * JSON_ESCAPE_SLASH): '"' and '\' as \" and \\, \b \f \n \r \t, the other bytes below 0x20
 * as \u00XX (upper-case hex), DEL and '/' as they are, non-ASCII as it is or, with
 * FERRY_JSON_QUOTE_ASCII, escaped. Writes at most cap bytes to out (out may be NULL when cap is
 * 0; no NUL is added) and returns the length the quoted string needs, like snprintf: the output
 * is complete only when that is <= cap (else out holds a prefix of it, cut before the first
 * escape or run that did not fit). Returns SIZE_MAX when s is not strict UTF-8 (what
 * jansson's json_stringn refuses). */
size_t ferry_json_quote(char *out, size_t cap, const void *s, size_t len, unsigned flags);

#endif
