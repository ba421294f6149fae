/* ferry/json.h - strict, bounded, single-pass JSON reader that builds jansson values.
 *
 * ferry_json_parse() accepts exactly what json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err)
 * of jansson 2.14 accepts and returns a tree that json_equal() finds equal to jansson's, about
 * four times faster (it reads the buffer directly instead of through jansson's per-character
 * stream). It is meant for hostile input: JWS headers, JWT claims, JWKS and discovery
 * documents.
 *
 * What is accepted (RFC 8259, restricted as jansson restricts it with the flags above):
 *   - one object or array (a top-level scalar is refused, as without JSON_DECODE_ANY),
 *     surrounded only by space, tab, CR and LF;
 *   - objects whose member names are all different (a duplicate name is refused, even with the
 *     same value); member order is kept as in the text;
 *   - strings of valid UTF-8 (no overlong forms, no UTF-8 encoded surrogates, nothing above
 *     U+10FFFF), no raw byte below 0x20, escapes \" \\ \/ \b \f \n \r \t and \uXXXX where a
 *     high surrogate must be followed by a \u low surrogate and a lone low surrogate is refused;
 *     \u0000 is refused in names and values (jansson without JSON_ALLOW_NUL);
 *   - numbers per the RFC grammar: without fraction or exponent a json_integer, refused when it
 *     does not fit int64 (jansson: "too big integer"); with either a json_real, rounded by
 *     strtod in the C locale, refused when it overflows to infinity (underflow gives 0 or a
 *     subnormal, as in jansson); "-0" is the integer 0.
 *
 * Deliberate differences from json_loadb(..., JSON_REJECT_DUPLICATES, ...), each tested in
 * tests/unit/test_json.c:
 *   1. len > max_len is refused with -FERRY_ETOOBIG before anything is read (jansson has no
 *      size limit).
 *   2. Containers nested deeper than max_depth are refused with -FERRY_ETOOBIG; the top-level
 *      object or array is level 1. jansson counts every value, scalars included, and refuses
 *      past 2048; ferry_json_parse has no limit of its own and does not recurse, so any
 *      max_depth is safe.
 *   3. A raw NUL byte is refused everywhere. jansson 2.14 swallows one NUL byte directly after
 *      a number or a literal (its lexer "ungets" the NUL, which its stream buffer then takes for
 *      the end of the buffered character), so it accepts e.g. "[1\0]".
 *   4. Error messages differ in wording; they carry the byte offset instead of line/column.
 */
#ifndef FERRY_JSON_H
#define FERRY_JSON_H

#include <stddef.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Size of an error buffer that always holds the whole message. */
#define FERRY_JSON_ERR_LEN 96

/* Parse exactly len bytes of JSON text at buf (no NUL terminator needed; a NUL byte inside
 * the len bytes is an error) into a new jansson value, under the rules above.
 *
 * buf: borrowed, len bytes, may be NULL only when len is 0.
 * max_len: inputs longer than this are refused before parsing.
 * max_depth: the deepest container nesting accepted (1 = one object or array, no container
 *   inside it).
 * ret_json: on success a new reference to an object or array (json_decref() it); written only
 *   on success.
 * errbuf/errlen: optional (NULL/0); on failure a short NUL-terminated message naming the
 *   problem and its byte offset, e.g. "duplicate object key at byte 17"; on success "".
 *
 * Returns 0, -EINVAL (ret_json NULL, or buf NULL with len > 0), -FERRY_ETOOBIG (len > max_len
 * or nesting deeper than max_depth), -ERANGE (a well-formed number outside int64 or double
 * range: callers such as the claim checker report it apart from malformed text),
 * -FERRY_EMALFORMED (anything else json_loadb refuses, and the differences above) or -ENOMEM. Thread-safe; the tree returned is not shared. */
int ferry_json_parse(const void *buf, size_t len, size_t max_len, unsigned max_depth,
                     json_t **ret_json, char *errbuf, size_t errlen);

/* Source lines of the values of one parsed document, for error messages about configuration
 * and policy files ("policies/ci.json:12: unknown member \"scopez\""). */
typedef struct ferry_json_locs ferry_json_locs;

/* As ferry_json_parse(), and also record the line (1-based, counting LF) where each value
 * starts. On success *ret_locs is new (free with ferry_json_locs_free(); it refers to the
 * returned tree by address, so use it only while that tree is alive and unmodified). On a
 * parse error, *ret_err_line (when non-NULL) is the line of the offending byte, 0 for errors
 * without a position (-EINVAL). Memory: about 40 bytes plus the member name per value. */
int ferry_json_parse_located(const void *buf, size_t len, size_t max_len, unsigned max_depth,
                             json_t **ret_json, ferry_json_locs **ret_locs,
                             unsigned *ret_err_line, char *errbuf, size_t errlen);

/* The line where the member key of object container starts (its value's first byte), or
 * with key NULL the line of container's own opening bracket. 0 when unknown (not from this
 * parse, or added later). */
unsigned ferry_json_locs_line(const ferry_json_locs *locs, const json_t *container,
                              const char *key);
/* The line of element index of array (0 when unknown). */
unsigned ferry_json_locs_line_index(const ferry_json_locs *locs, const json_t *array,
                                    size_t index);
void ferry_json_locs_free(ferry_json_locs *locs); /* accepts NULL */

/* Wipe the bytes of every string in the tree j (values, not member names), at most 64 levels
 * deep, before it is freed: for parsed documents that held secrets. Accepts NULL. */
void ferry_json_wipe_strings(json_t *j);

#ifdef __cplusplus
}
#endif
#endif
