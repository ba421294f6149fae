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

#endif
