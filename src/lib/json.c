/* lib/json.c - strict single-pass JSON reader building jansson values (see ferry/json.h).
 *
 * One pass over the bytes, no recursion (an explicit stack of open containers), no per-byte
 * function calls. Strings without escapes go straight from the input to json_stringn_nocheck
 * (one copy, inside jansson); strings with escapes are decoded into a small stack buffer or,
 * when longer, a heap buffer kept for the rest of the parse. Every container is attached to
 * its parent as soon as it is opened, so on any error one json_decref of the root frees
 * everything built so far.
 *
 * Equivalence with json_loadb(..., JSON_REJECT_DUPLICATES, ...) is the contract: where this
 * file makes a choice (which numbers are integers, how reals round, which UTF-8 is valid,
 * which surrogate escapes pair up), it makes jansson 2.14's choice. tests/unit/test_json.c and
 * tests/fuzz/fuzz_json.c compare the two on every input they have. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "basic/b64.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/json.h"

/* Open containers kept on the C stack before the stack array moves to the heap. */
#define STACK_INLINE 32
/* Decoded strings (with escapes) up to this size need no allocation. */
#define SCRATCH_INLINE 256
/* Number texts up to this size are converted from a stack copy. */
#define NUMBUF_INLINE 64

struct scratch {
    char *heap;
    size_t cap;
    char inline_buf[SCRATCH_INLINE];
};

struct parser {
    const unsigned char *base, *end;
    unsigned max_depth;
    char *errbuf;
    size_t errlen;

    json_t **stack;      /* open containers, borrowed; stack[0] is the root (owned by caller) */
    unsigned depth;      /* number of open containers */
    unsigned stack_cap;
    json_t *stack_inline[STACK_INLINE];

    struct scratch keybuf, valbuf;

    const unsigned char *err_at; /* where fail() was called; NULL while no error */
    struct locs_builder *locs;   /* NULL unless ferry_json_parse_located() asked for lines */
};

/* Source lines of values, recorded only by ferry_json_parse_located(). */
struct loc_entry {
    const json_t *container; /* the object or array holding the value, or the container
                                itself for its own opening line (key NULL, index SIZE_MAX) */
    char *key;               /* member name (owned), NULL for array elements */
    size_t index;            /* array index; SIZE_MAX for members and container starts */
    unsigned line;
};

struct locs_builder {
    struct loc_entry *v;
    size_t n, cap;
    const unsigned char *counted; /* newlines counted up to here */
    unsigned line;                /* line number at counted */
};

struct ferry_json_locs {
    struct loc_entry *v; /* sorted by container, then by insertion order */
    size_t n;
};

/* Bytes of a string that need no attention: printable ASCII other than '"' and '\\'. */
static const unsigned char plain[256] = {
    [0x20 ... 0x21] = 1,
    [0x23 ... 0x5b] = 1,
    [0x5d ... 0x7e] = 1,
    [0x7f] = 1,
};

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Non-zero when one of the eight bytes in x is a '"', a '\\', below 0x20 or above 0x7f
 * (exact as a yes/no answer; which byte it was is found byte by byte). */
static inline uint64_t swar_special(uint64_t x)
{
    uint64_t q = x ^ (ONES * '"'), b = x ^ (ONES * '\\');

    return (((x - ONES * 0x20) & ~x) | ((q - ONES) & ~q) | ((b - ONES) & ~b) | x) & HIGHS;
}

static inline const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static inline bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

_printf_(4, 5) static int fail(struct parser *ps, const unsigned char *at, int err,
                               const char *fmt, ...)
{
    if (ps->errbuf && ps->errlen) {
        char msg[FERRY_JSON_ERR_LEN];
        va_list ap;

        va_start(ap, fmt);
        (void)vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        (void)snprintf(ps->errbuf, ps->errlen, "%s at byte %zu", msg, (size_t)(at - ps->base));
    }
    ps->err_at = at;
    return err;
}

static int fail_oom(struct parser *ps, const unsigned char *at)
{
    return fail(ps, at, -ENOMEM, "out of memory");
}

/* A buffer of at least n bytes from s, or NULL when the allocation fails. */
static char *scratch_get(struct scratch *s, size_t n)
{
    if (n <= sizeof(s->inline_buf))
        return s->inline_buf;
    if (n > s->cap) {
        size_t cap = s->cap * 2 > n ? s->cap * 2 : n;
        char *h = realloc(s->heap, cap);

        if (!h)
            return NULL;
        s->heap = h;
        s->cap = cap;
    }
    return s->heap;
}

/* Length of the well-formed UTF-8 sequence starting at p (p[0] >= 0x80), or 0 when it is not
 * one: a continuation byte first, C0/C1 and F5..FF, a truncated sequence, an overlong form, a
 * surrogate (ED A0..BF) or a code point above U+10FFFF (F4 90..). jansson's utf8_check_first
 * and utf8_check_full accept exactly these. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    size_t avail = (size_t)(end - p);
    unsigned char c = p[0], lo = 0x80, hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf)
        return avail >= 2 && p[1] >= 0x80 && p[1] <= 0xbf ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
        return avail >= 3 && p[1] >= lo && p[1] <= hi && p[2] >= 0x80 && p[2] <= 0xbf ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
        return avail >= 4 && p[1] >= lo && p[1] <= hi && p[2] >= 0x80 && p[2] <= 0xbf &&
                       p[3] >= 0x80 && p[3] <= 0xbf
                   ? 4
                   : 0;
    }
    return 0;
}

/* The four hex digits at p (already checked), as a code unit. */
static inline uint32_t hex4(const unsigned char *p)
{
    return (uint32_t)(ferry_hexval(p[0]) << 12 | ferry_hexval(p[1]) << 8 |
                      ferry_hexval(p[2]) << 4 | ferry_hexval(p[3]));
}

static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Decode the escaped string body [p, q) (already checked: escapes well formed, UTF-8 valid, no
 * control bytes) into out, which has room for q - p bytes (no escape decodes to more bytes
 * than it takes in the text). Returns the decoded length, or a negative error. */
static int decode_escapes(struct parser *ps, const unsigned char *p, const unsigned char *q,
                          char *out, size_t *ret_n)
{
    size_t n = 0;

    while (p < q) {
        const unsigned char *esc;
        uint32_t cp;

        if (*p != '\\') {
            out[n++] = (char)*p++;
            continue;
        }
        esc = p;
        switch (p[1]) {
        case '"':
        case '\\':
        case '/':
            out[n++] = (char)p[1];
            p += 2;
            continue;
        case 'b':
            out[n++] = '\b';
            p += 2;
            continue;
        case 'f':
            out[n++] = '\f';
            p += 2;
            continue;
        case 'n':
            out[n++] = '\n';
            p += 2;
            continue;
        case 'r':
            out[n++] = '\r';
            p += 2;
            continue;
        case 't':
            out[n++] = '\t';
            p += 2;
            continue;
        default: /* 'u', checked by the caller */
            break;
        }
        cp = hex4(p + 2);
        p += 6;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            uint32_t lo;

            if (q - p < 6 || p[0] != '\\' || p[1] != 'u')
                return fail(ps, esc, -FERRY_EMALFORMED, "lone surrogate \\u%04X", cp);
            lo = hex4(p + 2);
            if (lo < 0xdc00 || lo > 0xdfff)
                return fail(ps, esc, -FERRY_EMALFORMED, "invalid surrogate pair \\u%04X\\u%04X",
                            cp, lo);
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            p += 6;
        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            return fail(ps, esc, -FERRY_EMALFORMED, "lone surrogate \\u%04X", cp);
        } else if (cp == 0) {
            return fail(ps, esc, -FERRY_EMALFORMED, "\\u0000 not allowed");
        }
        n += utf8_put(cp, out + n);
    }
    *ret_n = n;
    return 0;
}

/* Read the string whose opening quote is at *pp. On success *ret_s and *ret_n are its decoded
 * bytes (a slice of the input when there are no escapes, else inside buf) and *pp is past the
 * closing quote. */
static int read_string(struct parser *ps, const unsigned char **pp, struct scratch *buf,
                       const char **ret_s, size_t *ret_n)
{
    const unsigned char *start = *pp + 1, *p = start, *end = ps->end;
    bool escaped = false;
    char *out;
    size_t n = 0;
    int r;

    for (;;) {
        /* Eight bytes at a time while none of them needs attention (a '"', a '\\', a byte
         * below 0x20 or one with the high bit set), then byte by byte. */
        while (end - p >= 8) {
            uint64_t x;

            memcpy(&x, p, 8);
            if (swar_special(x))
                break;
            p += 8;
        }
        while (p < end && plain[*p])
            p++;
        if (p == end)
            return fail(ps, p, -FERRY_EMALFORMED, "unterminated string");
        if (*p == '"')
            break;
        if (*p == '\\') {
            if (end - p < 2)
                return fail(ps, p + 1, -FERRY_EMALFORMED, "unterminated string");
            switch (p[1]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                p += 2;
                break;
            case 'u':
                for (size_t i = 2; i < 6; i++)
                    if (p + i >= end || ferry_hexval(p[i]) < 0)
                        return fail(ps, p, -FERRY_EMALFORMED, "invalid \\u escape");
                p += 6;
                break;
            default:
                return fail(ps, p, -FERRY_EMALFORMED, "invalid escape");
            }
            escaped = true;
        } else if (*p < 0x20) {
            return fail(ps, p, -FERRY_EMALFORMED, "control character 0x%02x in string", *p);
        } else {
            size_t l = utf8_len(p, end);

            if (!l)
                return fail(ps, p, -FERRY_EMALFORMED, "invalid UTF-8");
            p += l;
        }
    }
    *pp = p + 1;
    if (!escaped) {
        *ret_s = (const char *)start;
        *ret_n = (size_t)(p - start);
        return 0;
    }
    out = scratch_get(buf, (size_t)(p - start));
    if (!out)
        return fail_oom(ps, start);
    r = decode_escapes(ps, start, p, out, &n);
    if (r < 0)
        return r;
    *ret_s = out;
    *ret_n = n;
    return 0;
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void)
{
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

/* The number at *pp (its first byte is '-' or a digit) as a new json_integer or json_real. */
static int read_number(struct parser *ps, const unsigned char **pp, json_t **ret)
{
    const unsigned char *start = *pp, *p = start, *end = ps->end;
    bool neg = false, overflow = false, real = false;
    uint64_t acc = 0, limit;
    json_int_t iv;
    json_t *v;

    if (*p == '-') {
        neg = true;
        p++;
    }
    limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    if (p == end || !is_digit(*p))
        return fail(ps, start, -FERRY_EMALFORMED, "invalid number");
    if (*p == '0') {
        p++;
    } else {
        do {
            unsigned d = (unsigned)(*p - '0');

            if (!overflow && acc <= (limit - d) / 10)
                acc = acc * 10 + d;
            else
                overflow = true;
            p++;
        } while (p < end && is_digit(*p));
    }
    if (p < end && *p == '.') {
        p++;
        if (p == end || !is_digit(*p))
            return fail(ps, start, -FERRY_EMALFORMED, "invalid number");
        while (p < end && is_digit(*p))
            p++;
        real = true;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !is_digit(*p))
            return fail(ps, start, -FERRY_EMALFORMED, "invalid number");
        while (p < end && is_digit(*p))
            p++;
        real = true;
    }

    if (real) {
        _cleanup_free_ char *heap = NULL;
        char stackbuf[NUMBUF_INLINE], *text = stackbuf, *tail;
        size_t n = (size_t)(p - start);
        double d;

        if (n >= sizeof(stackbuf)) {
            text = heap = malloc(n + 1);
            if (!heap)
                return fail_oom(ps, start);
        }
        memcpy(text, start, n);
        text[n] = '\0';
        /* strtod in the C locale on the text the grammar checked: the same correctly rounded
         * double jansson gets from strtod after swapping in the locale's decimal point. */
        if (pthread_once(&c_locale_once, c_locale_init) != 0 || c_locale == (locale_t)0)
            return fail_oom(ps, start);
        errno = 0;
        d = strtod_l(text, &tail, c_locale);
        if (tail != text + n)
            return fail(ps, start, -FERRY_EMALFORMED, "invalid number");
        if ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE)
            return fail(ps, start, -ERANGE, "real number overflow");
        v = json_real(d);
    } else {
        if (overflow)
            return fail(ps, start, -ERANGE, "too big %sinteger", neg ? "negative " : "");
        if (!neg)
            iv = (json_int_t)acc;
        else if (acc == 0)
            iv = 0;
        else
            iv = -(json_int_t)(acc - 1) - 1;
        v = json_integer(iv);
    }
    if (!v)
        return fail_oom(ps, start);
    *pp = p;
    *ret = v;
    return 0;
}

/* The scalar value at *pp (p < end) as a new json_t. */
static int read_scalar(struct parser *ps, const unsigned char **pp, json_t **ret)
{
    const unsigned char *p = *pp;
    size_t avail = (size_t)(ps->end - p);
    const char *s;
    size_t n = 0;
    json_t *v;
    int r;

    switch (*p) {
    case '"':
        r = read_string(ps, pp, &ps->valbuf, &s, &n);
        if (r < 0)
            return r;
        v = json_stringn_nocheck(s, n);
        if (!v)
            return fail_oom(ps, p);
        *ret = v;
        return 0;
    case 't':
        if (avail >= 4 && memcmp(p, "true", 4) == 0) {
            *pp = p + 4;
            *ret = json_true();
            return 0;
        }
        break;
    case 'f':
        if (avail >= 5 && memcmp(p, "false", 5) == 0) {
            *pp = p + 5;
            *ret = json_false();
            return 0;
        }
        break;
    case 'n':
        if (avail >= 4 && memcmp(p, "null", 4) == 0) {
            *pp = p + 4;
            *ret = json_null();
            return 0;
        }
        break;
    case '-':
    case '0' ... '9':
        return read_number(ps, pp, ret);
    default:
        break;
    }
    return fail(ps, p, -FERRY_EMALFORMED, "invalid value");
}

/* Read a member name and its ':' for object obj, starting at *pp (whitespace skipped). The
 * name stays valid until the next name is read. */
static int read_name(struct parser *ps, const unsigned char **pp, json_t *obj,
                     const char **ret_key, size_t *ret_klen)
{
    const unsigned char *p = *pp, *at = p;
    int r;

    if (p == ps->end || *p != '"')
        return fail(ps, p, -FERRY_EMALFORMED, "string or '}' expected");
    r = read_string(ps, &p, &ps->keybuf, ret_key, ret_klen);
    if (r < 0)
        return r;
    if (json_object_getn(obj, *ret_key, *ret_klen))
        return fail(ps, at, -FERRY_EMALFORMED, "duplicate object key");
    p = skip_ws(p, ps->end);
    if (p == ps->end || *p != ':')
        return fail(ps, p, -FERRY_EMALFORMED, "':' expected");
    *pp = skip_ws(p + 1, ps->end);
    return 0;
}

/* The line of byte at: newlines are counted forward from the last call (the parser only moves
 * forward), so recording costs O(input) over the whole parse. */
static unsigned locs_line_at(struct locs_builder *lb, const unsigned char *at)
{
    const unsigned char *p = lb->counted;

    while (p < at) {
        const unsigned char *nl = memchr(p, '\n', (size_t)(at - p));

        if (!nl)
            break;
        lb->line++;
        p = nl + 1;
    }
    lb->counted = at;
    return lb->line;
}

static int locs_record(struct parser *ps, const unsigned char *at, const json_t *container,
                       const char *key, size_t klen, size_t index)
{
    struct locs_builder *lb = ps->locs;
    struct loc_entry *e;

    if (lb->n == lb->cap) {
        size_t cap = lb->cap ? lb->cap * 2 : 64;
        struct loc_entry *v = cap < SIZE_MAX / sizeof(*v) ? realloc(lb->v, cap * sizeof(*v))
                                                          : NULL;

        if (!v)
            return fail_oom(ps, at);
        lb->v = v;
        lb->cap = cap;
    }
    e = &lb->v[lb->n];
    e->key = NULL;
    if (key) {
        e->key = strndup(key, klen);
        if (!e->key)
            return fail_oom(ps, at);
    }
    e->container = container;
    e->index = index;
    e->line = locs_line_at(lb, at);
    lb->n++;
    return 0;
}

/* Attach v (stolen) to the innermost open container, under key when it is an object. */
static int attach(struct parser *ps, const unsigned char *at, const char *key, size_t klen,
                  json_t *v)
{
    json_t *top = ps->stack[ps->depth - 1];
    int r;

    if (json_is_object(top))
        r = json_object_setn_new_nocheck(top, key, klen, v);
    else
        r = json_array_append_new(top, v);
    if (r < 0)
        return fail_oom(ps, at);
    if (ps->locs) {
        bool member = json_is_object(top);

        r = locs_record(ps, at, top, member ? key : NULL, klen,
                        member ? SIZE_MAX : json_array_size(top) - 1);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Open a new object or array at p: create it, attach it to its parent (if any) and push it. */
static int open_container(struct parser *ps, const unsigned char *p, const char *key,
                          size_t klen)
{
    json_t *c;
    int r;

    if (ps->depth >= ps->max_depth)
        return fail(ps, p, -FERRY_ETOOBIG, "nesting deeper than %u", ps->max_depth);
    if (ps->depth == ps->stack_cap) {
        unsigned cap = ps->stack_cap <= UINT_MAX / 2 ? ps->stack_cap * 2 : UINT_MAX;
        json_t **s;

        if (ps->stack == ps->stack_inline) {
            s = malloc(cap * sizeof(*s));
            if (s)
                memcpy(s, ps->stack, ps->depth * sizeof(*s));
        } else {
            s = realloc(ps->stack, cap * sizeof(*s));
        }
        if (!s)
            return fail_oom(ps, p);
        ps->stack = s;
        ps->stack_cap = cap;
    }
    c = *p == '{' ? json_object() : json_array();
    if (!c)
        return fail_oom(ps, p);
    if (ps->depth > 0) {
        /* The parent takes the reference; the stack borrows it while the parent lives. */
        r = attach(ps, p, key, klen, c);
        if (r < 0)
            return r;
    }
    ps->stack[ps->depth++] = c;
    if (ps->locs) {
        /* The container's own line (the root's too: it is on the stack, freed on error). */
        r = locs_record(ps, p, c, NULL, 0, SIZE_MAX);
        if (r < 0)
            return r;
    }
    return 0;
}

static int parse(struct parser *ps)
{
    const unsigned char *p = skip_ws(ps->base, ps->end), *end = ps->end;
    const char *key = NULL;
    size_t klen = 0;
    int r;

    if (p == end || (*p != '{' && *p != '['))
        return fail(ps, p, -FERRY_EMALFORMED, "'{' or '[' expected");

    for (;;) {
        /* p: the first byte of a value (whitespace skipped) or end */
        if (p == end)
            return fail(ps, p, -FERRY_EMALFORMED, "premature end of input");
        if (*p == '{' || *p == '[') {
            unsigned char closer = *p == '{' ? '}' : ']';

            r = open_container(ps, p, key, klen);
            if (r < 0)
                return r;
            p = skip_ws(p + 1, end);
            if (p == end || *p != closer) {
                if (closer == '}') {
                    r = read_name(ps, &p, ps->stack[ps->depth - 1], &key, &klen);
                    if (r < 0)
                        return r;
                }
                continue;
            }
            p++;
            ps->depth--;
        } else {
            const unsigned char *at = p;
            json_t *v = NULL;

            r = read_scalar(ps, &p, &v);
            if (r < 0)
                return r;
            r = attach(ps, at, key, klen, v);
            if (r < 0)
                return r;
        }

        /* after a value: a ',' or the closing byte of each container it ends */
        for (;;) {
            json_t *top;

            if (ps->depth == 0) {
                p = skip_ws(p, end);
                if (p != end)
                    return fail(ps, p, -FERRY_EMALFORMED, "end of input expected");
                return 0;
            }
            top = ps->stack[ps->depth - 1];
            p = skip_ws(p, end);
            if (p == end)
                return fail(ps, p, -FERRY_EMALFORMED, "premature end of input");
            if (*p == ',') {
                p = skip_ws(p + 1, end);
                if (json_is_object(top)) {
                    r = read_name(ps, &p, top, &key, &klen);
                    if (r < 0)
                        return r;
                }
                break;
            }
            if (*p != (json_is_object(top) ? '}' : ']'))
                return fail(ps, p, -FERRY_EMALFORMED, json_is_object(top)
                                                          ? "',' or '}' expected"
                                                          : "',' or ']' expected");
            p++;
            ps->depth--;
        }
    }
}

static int parse_common(const void *buf, size_t len, size_t max_len, unsigned max_depth,
                        json_t **ret_json, struct locs_builder *locs, size_t *ret_err_offset,
                        char *errbuf, size_t errlen)
{
    struct parser ps; /* not zeroed as a whole: the inline buffers need no initialisation */
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!ret_json || (!buf && len))
        return -EINVAL;
    ps.base = buf ? buf : (const void *)"";
    ps.end = ps.base + len;
    ps.max_depth = max_depth;
    ps.errbuf = errbuf;
    ps.errlen = errlen;
    ps.err_at = NULL;
    ps.locs = locs;
    if (len > max_len)
        return fail(&ps, ps.base, -FERRY_ETOOBIG, "input of %zu bytes exceeds %zu", len,
                    max_len);
    ps.stack = ps.stack_inline;
    ps.stack_cap = STACK_INLINE;
    ps.stack_inline[0] = NULL;
    ps.depth = 0;
    ps.keybuf.heap = ps.valbuf.heap = NULL;
    ps.keybuf.cap = ps.valbuf.cap = 0;

    r = parse(&ps);
    if (r == 0)
        *ret_json = ps.stack[0];
    else
        json_decref(ps.stack[0]); /* NULL when nothing was built */
    if (r < 0 && ret_err_offset)
        *ret_err_offset = ps.err_at ? (size_t)(ps.err_at - ps.base) : 0;

    if (ps.stack != ps.stack_inline)
        free(ps.stack);
    free(ps.keybuf.heap);
    free(ps.valbuf.heap);
    return r;
}

FERRY_EXPORT int ferry_json_parse(const void *buf, size_t len, size_t max_len, unsigned max_depth,
                                  json_t **ret_json, char *errbuf, size_t errlen)
{
    return parse_common(buf, len, max_len, max_depth, ret_json, NULL, NULL, errbuf, errlen);
}

static void locs_entries_free(struct loc_entry *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].key);
    free(v);
}

/* Order by container address, then by position in the text (entries of one container were
 * recorded in text order; the line breaks ties between equal containers stably enough because
 * index and key order follow the text, but qsort is not stable, so compare lines then keys). */
static int loc_cmp(const void *a, const void *b)
{
    const struct loc_entry *x = a, *y = b;

    if (x->container != y->container)
        return (uintptr_t)x->container < (uintptr_t)y->container ? -1 : 1;
    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    if (!x->key || !y->key)
        return !x->key ? (y->key ? -1 : 0) : 1;
    return strcmp(x->key, y->key);
}

FERRY_EXPORT int ferry_json_parse_located(const void *buf, size_t len, size_t max_len,
                                          unsigned max_depth, json_t **ret_json,
                                          ferry_json_locs **ret_locs, unsigned *ret_err_line,
                                          char *errbuf, size_t errlen)
{
    struct locs_builder lb = { .v = NULL, .n = 0, .cap = 0, .line = 1 };
    ferry_json_locs *locs;
    size_t err_off = 0;
    json_t *json = NULL;
    int r;

    if (ret_err_line)
        *ret_err_line = 0;
    if (!ret_locs)
        return -EINVAL;
    lb.counted = buf ? buf : (const void *)"";
    r = parse_common(buf, len, max_len, max_depth, &json, &lb, &err_off, errbuf, errlen);
    if (r < 0) {
        if (ret_err_line && r != -EINVAL) {
            const unsigned char *b = buf;
            unsigned line = 1;

            for (size_t i = 0; b && i < err_off && i < len; i++)
                line += b[i] == '\n';
            *ret_err_line = line;
        }
        locs_entries_free(lb.v, lb.n);
        return r;
    }
    locs = malloc(sizeof(*locs));
    if (!locs) {
        locs_entries_free(lb.v, lb.n);
        json_decref(json);
        return -ENOMEM;
    }
    if (lb.n > 1)
        qsort(lb.v, lb.n, sizeof(*lb.v), loc_cmp);
    locs->v = lb.v;
    locs->n = lb.n;
    *ret_locs = locs;
    *ret_json = json;
    return 0;
}

/* The first entry of container, or NULL. */
static const struct loc_entry *locs_find(const ferry_json_locs *locs, const json_t *container,
                                         size_t index, const char *key)
{
    size_t lo = 0, hi;

    if (!locs || !container)
        return NULL;
    hi = locs->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct loc_entry probe = { .container = container, .key = (char *)key, .index = index };

        if (loc_cmp(&locs->v[mid], &probe) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < locs->n && locs->v[lo].container == container && locs->v[lo].index == index &&
        (key ? locs->v[lo].key && strcmp(locs->v[lo].key, key) == 0 : !locs->v[lo].key))
        return &locs->v[lo];
    return NULL;
}

FERRY_EXPORT unsigned ferry_json_locs_line(const ferry_json_locs *locs, const json_t *container,
                                           const char *key)
{
    const struct loc_entry *e = locs_find(locs, container, SIZE_MAX, key);

    return e ? e->line : 0;
}

FERRY_EXPORT unsigned ferry_json_locs_line_index(const ferry_json_locs *locs,
                                                 const json_t *array, size_t index)
{
    const struct loc_entry *e;

    if (index == SIZE_MAX)
        return 0;
    e = locs_find(locs, array, index, NULL);
    return e ? e->line : 0;
}

FERRY_EXPORT void ferry_json_locs_free(ferry_json_locs *locs)
{
    if (!locs)
        return;
    locs_entries_free(locs->v, locs->n);
    free(locs);
}

static void wipe_strings(json_t *j, unsigned depth)
{
    const char *k;
    json_t *v;
    size_t i;

    if (!j || depth > 64)
        return;
    if (json_is_string(j))
        ferry_wipe((char *)json_string_value(j), json_string_length(j));
    else if (json_is_object(j)) {
        json_object_foreach(j, k, v) wipe_strings(v, depth + 1);
    } else if (json_is_array(j)) {
        json_array_foreach(j, i, v) wipe_strings(v, depth + 1);
    }
}

FERRY_EXPORT void ferry_json_wipe_strings(json_t *j)
{
    wipe_strings(j, 0);
}
