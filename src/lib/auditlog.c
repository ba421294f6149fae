/* auditlog.c - tamper-evident audit log: hash-chained JSON lines with signed checkpoints.
 *
 * Reading order: the canonical serialiser (one function writes every record and re-creates
 * it during verification), the event checks (limits, JWT-like values), the verifier (a state
 * machine fed one line at a time, shared by ferry_auditlog_verify and the reopen path), then
 * the writer. The format is specified in docs/internals/auditlog.md; keep the two in step.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "basic/errbuf.h"
#include "basic/fileio.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "basic/utf8.h"
#include "ferry/auditlog.h"
#include "ferry/error.h"
#include "ferry/json.h"

#define HASH_LEN 32
#define HEX_LEN (2 * HASH_LEN)
/* `,"hash":"` + 64 hex + `"}`: the fixed tail of every stored line (before its newline). */
#define HASH_SUFFIX_LEN (9 + HEX_LEN + 2)
#define OPEN_TYPE "auditlog.open"
#define CHECKPOINT_TYPE "auditlog.checkpoint"
#define RESERVED_PREFIX "auditlog."
#define LOG_SUBJECT "auditlog"
/* Read buffer of the streaming verifier: any line up to the limit fits with room to spare. */
#define READ_BUF (256 * 1024)
#define DEFAULT_MAX_PROBLEMS 100
#define DEFAULT_SYNC_RECORDS 100
#define DEFAULT_SYNC_MS 1000
/* A record being built: the longest line, less its hash member and newline, fits with room. */
#define RECORD_MAX (FERRY_AUDITLOG_MAX_LINE + 128)
#define TIME_PREFIX_LEN 20 /* "YYYY-MM-DDTHH:MM:SS." */
/* An append builds its record on the stack in this many bytes (an exchange's record is about
 * 1 KiB; the stack frame stays small enough for any thread and for perf's stack copies). */
#define APPEND_STACK_BYTES 8192
/* The most that record_finish_locked adds after the head: a string escapes to at most 6 bytes
 * per byte (\u00XX), so subject and jti take at most 6 times their limits; 512 covers the
 * fixed members, prev, seq, time, the sha256 and the hash. */
#define FINISH_MAX                                                                                 \
    (512 + 6 * (FERRY_AUDITLOG_SUBJECT_MAX + FERRY_AUDITLOG_JTI_MAX) + FERRY_AUDITLOG_TYPE_MAX)
_Static_assert(APPEND_STACK_BYTES > FINISH_MAX + 1024, "room for an ordinary head");

static const char *const decision_names[FERRY_AUDITLOG_DECISION_MAX] = {
    [FERRY_AUDITLOG_ALLOW] = "allow",
    [FERRY_AUDITLOG_DENY] = "deny",
    [FERRY_AUDITLOG_ERROR] = "error",
    [FERRY_AUDITLOG_INFO] = "info",
};

FERRY_EXPORT const char *ferry_auditlog_decision_name(ferry_auditlog_decision d)
{
    return (unsigned)d < FERRY_AUDITLOG_DECISION_MAX ? decision_names[d] : NULL;
}

/* jansson's own cleanup helper (json_auto_t) is json_decrefp. */
#define _cleanup_json_ _cleanup_(json_decrefp)

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* s (a NUL-terminated string) is exactly len characters of lowercase hex. */
static bool lower_hex(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[i] == '\0';
}

/* Strict lowercase hex of exactly 2 * n characters. */
static bool hex_decode(const char *in, size_t len, unsigned char *out, size_t n)
{
    if (len != 2 * n)
        return false;
    for (size_t i = 0; i < 2 * n; i++) {
        char c = in[i];
        int v;
        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else
            return false;
        if (i % 2 == 0)
            out[i / 2] = (unsigned char)(v << 4);
        else
            out[i / 2] |= (unsigned char)v;
    }
    return true;
}

/* SHA-256, fetched from the provider store once per process instead of on every digest
 * (EVP_sha256() in EVP_DigestInit_ex/EVP_Digest makes OpenSSL 3 look the implementation up
 * each time). A failed fetch (e.g. out of memory) is not cached: the digest fails with
 * -FERRY_ECRYPTO and the next call tries again. The fetched object stays alive until exit
 * (reachable, not leaked). */
static EVP_MD *_Atomic sha256_cache;

static const EVP_MD *sha256_md(void)
{
    EVP_MD *md = atomic_load_explicit(&sha256_cache, memory_order_acquire), *expected = NULL;

    if (md)
        return md;
    md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!md)
        return NULL;
    if (!atomic_compare_exchange_strong_explicit(&sha256_cache, &expected, md, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        EVP_MD_free(md); /* another thread was first */
        md = expected;
    }
    return md;
}

/* SHA-256(prev || data). 0, -ENOMEM or -FERRY_ECRYPTO. */
static int chain_hash(const unsigned char prev[HASH_LEN], const void *data, size_t len,
                      unsigned char out[HASH_LEN])
{
    const EVP_MD *md = sha256_md();
    EVP_MD_CTX *ctx;
    unsigned int n = 0;
    int ok;

    if (!md)
        return -FERRY_ECRYPTO;
    ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -ENOMEM;
    ok = EVP_DigestInit_ex(ctx, md, NULL) == 1 && EVP_DigestUpdate(ctx, prev, HASH_LEN) == 1 &&
         EVP_DigestUpdate(ctx, data, len) == 1 && EVP_DigestFinal_ex(ctx, out, &n) == 1 &&
         n == HASH_LEN;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : -FERRY_ECRYPTO;
}

static int sha256_hex(const void *data, size_t len, char out[HEX_LEN + 1])
{
    const EVP_MD *md = sha256_md();
    unsigned char h[HASH_LEN];
    unsigned int n = 0;

    if (!md || EVP_Digest(data, len, h, &n, md, NULL) != 1 || n != HASH_LEN)
        return -FERRY_ECRYPTO;
    hex_encode(h, HASH_LEN, out);
    return 0;
}

/* ---- canonical serialisation ------------------------------------------------------------ *
 * Objects: members sorted by the bytes of their UTF-8 names, no whitespace. Strings: printable
 * ASCII as is except " and \ (\" and \\); \b \f \n \r \t for those five; every other code
 * point (controls, DEL, non-ASCII) as \uXXXX in lowercase hex, UTF-16 surrogate pairs above
 * U+FFFF. Integers in decimal; true, false, null; no reals. */

/* The canonical writer's buffer: like basic/buf.h's ferry_buf (a hard maximum, -E2BIG past it
 * with the content unchanged, always NUL-terminated) but with a fixed size: either memory the
 * caller gives (the append path writes a record into a stack buffer, no allocation) or max + 1
 * bytes allocated on the first append (-ENOMEM) and freed by cbuf_release. */
struct cbuf {
    char *data;
    size_t len, max;
    bool owned; /* data is this buffer's allocation */
};

/* An empty buffer that allocates max + 1 bytes when first appended to. */
static void cbuf_init(struct cbuf *b, size_t max)
{
    *b = (struct cbuf){.max = max, .owned = true};
}

/* An empty buffer over mem (size >= 1 bytes, borrowed): it holds at most size - 1 bytes. */
static void cbuf_init_fixed(struct cbuf *b, char *mem, size_t size)
{
    *b = (struct cbuf){.data = mem, .max = size - 1};
    mem[0] = '\0';
}

static void cbuf_release(struct cbuf *b)
{
    if (b->owned)
        free(b->data);
    b->data = NULL;
    b->len = 0;
}

static inline int cbuf_append(struct cbuf *b, const void *p, size_t n)
{
    if (n > b->max - b->len)
        return -E2BIG;
    if (!b->data && !(b->data = malloc(b->max + 1)))
        return -ENOMEM;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static int cbuf_append_str(struct cbuf *b, const char *s)
{
    return cbuf_append(b, s, strlen(s));
}

/* "s" for a string known to need no escape (hex, a time, a checked event type, a constant). */
static int cbuf_quoted(struct cbuf *b, const char *s, size_t n)
{
    if (n > SIZE_MAX - 2 || n + 2 > b->max - b->len)
        return -E2BIG;
    if (!b->data && !(b->data = malloc(b->max + 1)))
        return -ENOMEM;
    b->data[b->len] = '"';
    memcpy(b->data + b->len + 1, s, n);
    b->data[b->len + 1 + n] = '"';
    b->len += n + 2;
    b->data[b->len] = '\0';
    return 0;
}

static int put_u16(struct cbuf *b, uint32_t u)
{
    static const char digits[] = "0123456789abcdef";
    char esc[6] = {
        '\\',          'u', digits[(u >> 12) & 15], digits[(u >> 8) & 15], digits[(u >> 4) & 15],
        digits[u & 15]};

    return cbuf_append(b, esc, sizeof(esc));
}

/* Bytes written as they are: printable ASCII but " and \\ (a table: every string of every
 * record goes through canon_string). */
static const bool canon_plain[256] = {
    [0x20 ... 0x21] = true, /* 0x22 " */
    [0x23 ... 0x5b] = true, /* 0x5c \\ */
    [0x5d ... 0x7e] = true,
};

/* Append s (n bytes of UTF-8) as a canonical JSON string. -FERRY_EMALFORMED for bad UTF-8. */
static int canon_string(struct cbuf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0;
    int r;

    /* Most strings need no escape at all: then one copy between quotes. */
    while (i < n && canon_plain[p[i]])
        i++;
    if (i == n)
        return cbuf_quoted(b, s, n);
    run = i;
    if ((r = cbuf_append(b, "\"", 1)) < 0)
        return r;
    while (i < n) {
        uint32_t cp;
        size_t len;
        const char *short_esc = NULL;

        if (canon_plain[p[i]]) {
            i++;
            run++;
            continue;
        }
        if (run > 0 && (r = cbuf_append(b, p + i - run, run)) < 0)
            return r;
        run = 0;
        len = ferry_utf8_next(p + i, n - i, &cp);
        if (len == 0)
            return -FERRY_EMALFORMED;
        i += len;
        switch (cp) {
        case '"':
            short_esc = "\\\"";
            break;
        case '\\':
            short_esc = "\\\\";
            break;
        case '\b':
            short_esc = "\\b";
            break;
        case '\f':
            short_esc = "\\f";
            break;
        case '\n':
            short_esc = "\\n";
            break;
        case '\r':
            short_esc = "\\r";
            break;
        case '\t':
            short_esc = "\\t";
            break;
        default:
            break;
        }
        if (short_esc)
            r = cbuf_append(b, short_esc, 2);
        else if (cp < 0x10000)
            r = put_u16(b, cp);
        else if ((r = put_u16(b, 0xd800 + ((cp - 0x10000) >> 10))) == 0)
            r = put_u16(b, 0xdc00 + ((cp - 0x10000) & 0x3ff));
        if (r < 0)
            return r;
    }
    if (run > 0 && (r = cbuf_append(b, p + i - run, run)) < 0)
        return r;
    return cbuf_append(b, "\"", 1);
}

static int canon_cstr(struct cbuf *b, const char *s)
{
    return canon_string(b, s, strlen(s));
}

static int canon_int(struct cbuf *b, long long v)
{
    char num[24], *p = num + sizeof(num);
    /* The magnitude as unsigned, so that LLONG_MIN does not overflow. */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return cbuf_append(b, p, (size_t)(num + sizeof(num) - p));
}

/* `"name":` for a member name known to be plain ASCII that needs no escape (one of this
 * file's constants); a leading comma unless first. Inlined, so that the length of the constant
 * is known when compiling. */
__attribute__((always_inline)) static inline int canon_name(struct cbuf *b, const char *name,
                                                            bool *first)
{
    char out[32];
    size_t n = strlen(name), o = 0;

    if (n > sizeof(out) - 4)
        return -EINVAL; /* not one of the constants: a bug */
    if (!*first)
        out[o++] = ',';
    *first = false;
    out[o++] = '"';
    memcpy(out + o, name, n);
    o += n;
    out[o++] = '"';
    out[o++] = ':';
    return cbuf_append(b, out, o);
}

static bool looks_like_jws(const char *s, size_t n);

/* Serialisation context. validate: apply the event limits to what a caller gave (writer);
 * otherwise only the structure rules (verifier re-creating a parsed record). */
struct canon {
    struct cbuf *b;
    bool validate;
    unsigned members;
    const char *err; /* static reason of a refusal */
};

/* A member of an object being serialised; sorted by name. */
struct member {
    const char *key;
    const json_t *value;
};

static int member_cmp(const void *a, const void *b)
{
    return strcmp(((const struct member *)a)->key, ((const struct member *)b)->key);
}

static int canon_value(struct canon *c, const json_t *v, unsigned depth);

/* Objects of up to this many members are sorted on the stack (no allocation). */
#define STACK_MEMBERS 16

static int canon_object(struct canon *c, const json_t *obj, unsigned depth)
{
    size_t n = json_object_size(obj), i = 0;
    struct member stack[STACK_MEMBERS];
    _cleanup_free_ struct member *heap = NULL;
    struct member *m = stack;
    const char *k;
    json_t *val;
    int r;

    if (n > STACK_MEMBERS) {
        m = heap = calloc(n, sizeof(*heap));
        if (!heap)
            return -ENOMEM;
    }
    json_object_foreach((json_t *)obj, k, val)
    {
        if (c->validate) {
            size_t kl = json_object_iter_key_len(json_object_key_to_iter(k));
            if (kl != strlen(k) || kl == 0 || kl > FERRY_AUDITLOG_KEY_MAX) {
                c->err = "a details member name is empty, too long or holds a NUL";
                return -FERRY_ETOOBIG;
            }
            if (looks_like_jws(k, kl)) {
                c->err = "a details member name looks like a token (JWS/JWT)";
                return -FERRY_EPOLICY;
            }
        }
        if (i < n)
            m[i++] = (struct member){k, val};
    }
    if (i != n)
        return -EINVAL;
    if (n > STACK_MEMBERS) {
        qsort(m, n, sizeof(*m), member_cmp);
    } else {
        /* Insertion sort: for the few members of a record's objects it costs less than qsort's
         * merge sort with a call per comparison; both are stable, so the order is the same. */
        for (size_t j = 1; j < n; j++) {
            struct member t = m[j];
            size_t h = j;
            while (h > 0 && strcmp(m[h - 1].key, t.key) > 0) {
                m[h] = m[h - 1];
                h--;
            }
            m[h] = t;
        }
    }
    if ((r = cbuf_append(c->b, "{", 1)) < 0)
        return r;
    for (i = 0; i < n; i++) {
        if (i > 0 && (r = cbuf_append(c->b, ",", 1)) < 0)
            return r;
        if ((r = canon_cstr(c->b, m[i].key)) < 0) {
            c->err = "a member name is not valid UTF-8";
            return r;
        }
        if ((r = cbuf_append(c->b, ":", 1)) < 0)
            return r;
        if ((r = canon_value(c, m[i].value, depth + 1)) < 0)
            return r;
    }
    return cbuf_append(c->b, "}", 1);
}

static int canon_value(struct canon *c, const json_t *v, unsigned depth)
{
    int r;

    if (c->validate && ++c->members > FERRY_AUDITLOG_DETAILS_MEMBERS) {
        c->err = "details hold too many values";
        return -FERRY_ETOOBIG;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY:
        if (c->validate && depth > FERRY_AUDITLOG_DETAILS_DEPTH) {
            c->err = "details are nested too deeply";
            return -FERRY_ETOOBIG;
        }
        if (json_is_object(v))
            return canon_object(c, v, depth);
        if ((r = cbuf_append(c->b, "[", 1)) < 0)
            return r;
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i > 0 && (r = cbuf_append(c->b, ",", 1)) < 0)
                return r;
            if ((r = canon_value(c, json_array_get(v, i), depth + 1)) < 0)
                return r;
        }
        return cbuf_append(c->b, "]", 1);
    case JSON_STRING: {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (c->validate && n > FERRY_AUDITLOG_STRING_MAX) {
            c->err = "a details string is too long";
            return -FERRY_ETOOBIG;
        }
        if (c->validate && looks_like_jws(s, n)) {
            c->err = "a details value looks like a token (JWS/JWT)";
            return -FERRY_EPOLICY;
        }
        r = canon_string(c->b, s, n);
        if (r == -FERRY_EMALFORMED)
            c->err = "a string is not valid UTF-8";
        return r;
    }
    case JSON_INTEGER:
        return canon_int(c->b, (long long)json_integer_value(v));
    case JSON_TRUE:
        return cbuf_append(c->b, "true", 4);
    case JSON_FALSE:
        return cbuf_append(c->b, "false", 5);
    case JSON_NULL:
        return cbuf_append(c->b, "null", 4);
    case JSON_REAL:
    default:
        c->err = "real numbers are not allowed (no canonical form)";
        return -FERRY_EMALFORMED;
    }
}

/* ---- event checks ----------------------------------------------------------------------- */

/* Bytes of a compact JWS: the base64url alphabet and the dot (a table: looks_like_jws runs
 * over every string of every record). */
static const bool jws_byte[256] = {
    ['A' ... 'Z'] = true, ['a' ... 'z'] = true, ['0' ... '9'] = true,
    ['-'] = true,         ['_'] = true,         ['.'] = true,
};

/* True when s holds something shaped like a compact JWS/JWT or JWE: a run of base64url
 * characters and dots with at least two dots, at least 24 characters long, whose first segment
 * (10+ characters) starts like base64url of a JSON object ("ey", "ew"), or whose first three
 * segments are each 16+ characters. Hostnames and version strings do not match. */
static bool looks_like_jws(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    const char *dot;
    size_t i = 0;

    /* Most strings are shorter than a run can be or hold fewer than two dots (memchr is
     * vectorised): they cannot match, and the byte scan below is skipped. */
    if (n < 24 || !(dot = memchr(s, '.', n)) || !memchr(dot + 1, '.', n - (size_t)(dot + 1 - s)))
        return false;

    while (i < n) {
        size_t start, seg[3] = {0, 0, 0}, nseg = 0, cur = 0;

        while (i < n && !jws_byte[p[i]])
            i++;
        start = i;
        while (i < n && jws_byte[p[i]]) {
            if (p[i] == '.') {
                if (nseg < 3)
                    seg[nseg] = cur;
                nseg++;
                cur = 0;
            } else {
                cur++;
            }
            i++;
        }
        if (nseg < 3)
            seg[nseg] = cur;
        if (nseg < 2 || i - start < 24)
            continue;
        if (seg[0] >= 10 && p[start] == 'e' && (p[start + 1] == 'y' || p[start + 1] == 'w'))
            return true;
        if (seg[0] >= 16 && seg[1] >= 16 && seg[2] >= 16)
            return true;
    }
    return false;
}

static bool valid_type(const char *t)
{
    size_t n = strlen(t);

    if (n == 0 || n > FERRY_AUDITLOG_TYPE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return true;
}

/* A caller's short string (subject, jti): length, UTF-8, no NUL, not token-shaped. */
static int check_text(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);

    if (n > max)
        return -FERRY_ETOOBIG;
    if (!ferry_utf8_valid(s, n))
        return -FERRY_EMALFORMED;
    if (looks_like_jws(s, n))
        return -FERRY_EPOLICY;
    return 0;
}

/* The jti of a reference when the log would accept it (no NUL, length, UTF-8, not
 * token-shaped), else "" (unknown). */
static void ref_set_jti(ferry_auditlog_token_ref *ref, const char *jti, size_t jti_len)
{
    ref->jti[0] = '\0';
    if (jti && jti_len <= FERRY_AUDITLOG_JTI_MAX && strnlen(jti, jti_len) == jti_len &&
        check_text(jti, jti_len) == 0) {
        memcpy(ref->jti, jti, jti_len);
        ref->jti[jti_len] = '\0';
    }
}

FERRY_EXPORT int ferry_auditlog_ref_token_jti(const char *token, size_t len, const char *jti,
                                              size_t jti_len, ferry_auditlog_token_ref *ret)
{
    ferry_auditlog_token_ref ref = {.jti = ""};
    int r;

    if ((!token && len) || !ret)
        return -EINVAL;
    r = sha256_hex(token ? token : "", len, ref.sha256);
    if (r < 0)
        return r;
    ref_set_jti(&ref, jti, jti_len);
    *ret = ref;
    return 0;
}

FERRY_EXPORT int ferry_auditlog_ref_token(const char *token, size_t len,
                                          ferry_auditlog_token_ref *ret)
{
    ferry_jws *jws = NULL;
    json_t *claims = NULL, *jti = NULL;
    int r;

    if ((!token && len) || !ret)
        return -EINVAL;
    if (ferry_jws_parse(token ? token : "", len, &jws) == 0 &&
        ferry_json_parse(jws->payload, jws->payload_len, FERRY_JWS_MAX_LEN, FERRY_JSON_MAX_DEPTH,
                         &claims, NULL, 0) == 0 &&
        json_is_object(claims))
        jti = json_object_get(claims, "jti");
    r = ferry_auditlog_ref_token_jti(token, len, json_string_value(jti), json_string_length(jti),
                                     ret);
    json_decref(claims);
    ferry_jws_free(jws);
    return r;
}

/* ---- record helpers shared by writer and verifier ---------------------------------------- */

/* The signed checkpoint payload: {"final":F,"first":A,"head":"H","last":B,"seq":S,"time":T}.
 * head commits to every earlier record; seq and time (with the fixed decision and subject and
 * no details or token) commit to the checkpoint record itself, which no later checkpoint
 * covers when it is the final one. */
static int checkpoint_payload(struct cbuf *b, bool final, uint64_t first, const char *head_hex,
                              uint64_t last, uint64_t seq, const char *time_str)
{
    bool f = true;
    int r;

    if ((r = cbuf_append(b, "{", 1)) < 0 || (r = canon_name(b, "final", &f)) < 0 ||
        (r = cbuf_append_str(b, final ? "true" : "false")) < 0 ||
        (r = canon_name(b, "first", &f)) < 0 || (r = canon_int(b, (long long)first)) < 0 ||
        (r = canon_name(b, "head", &f)) < 0 || (r = canon_cstr(b, head_hex)) < 0 ||
        (r = canon_name(b, "last", &f)) < 0 || (r = canon_int(b, (long long)last)) < 0 ||
        (r = canon_name(b, "seq", &f)) < 0 || (r = canon_int(b, (long long)seq)) < 0 ||
        (r = canon_name(b, "time", &f)) < 0 || (r = canon_cstr(b, time_str)) < 0)
        return r;
    return cbuf_append(b, "}", 1);
}

/* "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" from seconds since the epoch and microseconds (0..999999). */
static int format_time(int64_t secs, int64_t frac, char out[32])
{
    struct tm tm;
    time_t t;

    t = (time_t)secs;
    if (!gmtime_r(&t, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900)
        return -ERANGE;
    /* Every field is in range here (gmtime_r, year checked), so the text is 27 bytes. */
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%06d", (tm.tm_year + 1900) % 10000,
             (tm.tm_mon + 1) % 100, tm.tm_mday % 100, tm.tm_hour % 100, tm.tm_min % 100,
             tm.tm_sec % 100, (int)(frac % 1000000));
    out[26] = 'Z';
    out[27] = '\0';
    return 0;
}

static bool valid_time(const char *s, size_t n)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";

    if (n != sizeof(shape) - 1)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return false;
    }
    return true;
}

/* Keep a reason to one line of printable ASCII: attacker-controlled text (a kid) goes in it. */
static void sanitize_into(char *out, size_t outlen, const char *in, size_t max)
{
    size_t o = 0;

    for (size_t i = 0; in[i] && o + 1 < outlen && i < max; i++) {
        unsigned char c = (unsigned char)in[i];
        out[o++] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char)c : '?';
    }
    out[o] = '\0';
}

/* ---- verification ------------------------------------------------------------------------ */

enum vmode { VMODE_STRICT, VMODE_LIVE, VMODE_OPEN };

struct vstate {
    enum vmode mode;
    const ferry_jwks *keys; /* may be NULL */
    const ferry_jwk *own;   /* open: the signing key, also accepted */
    bool skip_unknown_kid;  /* open without verify_keys: unknown kids are not verified */
    const ferry_auditlog_verify_options *opts;
    ferry_auditlog_report *rep;
    unsigned max_problems, reported;

    uint64_t line;
    uint64_t expect_seq;          /* next seq expected */
    uint64_t prev_seq;            /* seq of the previous record, 0 when none */
    unsigned char prev[HASH_LEN]; /* hash of the previous record (genesis: zeros) */
    bool prev_known;
    uint64_t cp_first; /* "first" of the next checkpoint */
    bool after_final;  /* the previous record is a final checkpoint */
    bool last_line_bad;
    uint64_t unsigned_first_line, unsigned_first_seq;
    /* partial last line */
    size_t partial_len;
    char partial_sha[HEX_LEN + 1];
    struct cbuf scratch; /* canonical re-serialisation of one line */
};

static void vstate_init(struct vstate *v, enum vmode mode, const ferry_jwks *keys,
                        const ferry_auditlog_verify_options *opts, ferry_auditlog_report *rep)
{
    memset(v, 0, sizeof(*v));
    memset(rep, 0, sizeof(*rep));
    v->mode = mode;
    v->keys = keys;
    v->opts = opts;
    v->rep = rep;
    v->max_problems = opts && opts->max_problems ? opts->max_problems : DEFAULT_MAX_PROBLEMS;
    v->skip_unknown_kid = opts && opts->skip_unknown_kid;
    v->expect_seq = 1;
    v->prev_known = true;
    v->cp_first = 1;
    cbuf_init(&v->scratch, FERRY_AUDITLOG_MAX_LINE);
}

_printf_(5, 6) static void vreport(struct vstate *v, uint64_t line, uint64_t seq, bool warning,
                                   const char *fmt, ...)
{
    char reason[FERRY_AUDITLOG_REASON_LEN];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (warning) {
        v->rep->warnings++;
    } else {
        if (v->rep->problems++ == 0) {
            v->rep->first_bad_line = line;
            v->rep->first_bad_seq = seq;
            memcpy(v->rep->first_bad_reason, reason, sizeof(reason));
        }
        if (line == v->line)
            v->last_line_bad = true;
    }
    if (v->opts && v->opts->on_problem && v->reported < v->max_problems) {
        ferry_auditlog_problem p = {.line = line, .seq = seq, .reason = reason, .warning = warning};
        v->reported++;
        v->opts->on_problem(v->opts->userdata, &p);
    }
}

static const ferry_jwk *vfind_key(const struct vstate *v, const char *kid)
{
    ferry_jwk *k = v->keys ? ferry_jwks_find(v->keys, kid) : NULL;

    if (k)
        return k;
    if (v->own && ferry_jwk_kid(v->own) && strcmp(ferry_jwk_kid(v->own), kid) == 0)
        return v->own;
    return NULL;
}

static bool member_is_uint(const json_t *v, uint64_t *ret)
{
    if (!json_is_integer(v) || json_integer_value(v) < 1)
        return false;
    *ret = (uint64_t)json_integer_value(v);
    return true;
}

/* An allocation or crypto-library failure is an error of the verifier, never a finding. */
static bool internal_error(int r)
{
    return r == -ENOMEM || r == -FERRY_ECRYPTO;
}

/* Check a checkpoint record; NULL when it verifies, else a reason in why. *ret_err is set to
 * -ENOMEM or -FERRY_ECRYPTO (and NULL returned) when the check itself could not be done. */
static const char *check_checkpoint(struct vstate *v, const json_t *rec, const json_t *cp,
                                    uint64_t seq, const char *prev_hex, bool *ret_final, char *why,
                                    size_t whylen, int *ret_err)
{
    const char *keys[] = {"final", "first", "head", "jws", "kid", "last"};
    json_t *final = json_object_get(cp, "final"), *jws_j = json_object_get(cp, "jws");
    json_t *kid_j = json_object_get(cp, "kid");
    const char *head = json_string_value(json_object_get(cp, "head"));
    const char *kid = json_string_value(kid_j);
    uint64_t first = 0, last = 0;
    const ferry_jwk *key;
    ferry_jws *jws = NULL;
    struct cbuf payload;
    char safe_kid[72];
    const char *res = NULL;
    int r;

    /* The writer's fixed shape: nothing in a checkpoint record is left unsigned. */
    if (strcmp(json_string_value(json_object_get(rec, "decision")), "info") != 0 ||
        strcmp(json_string_value(json_object_get(rec, "subject")), LOG_SUBJECT) != 0 ||
        json_object_get(rec, "details") || json_object_get(rec, "token"))
        return "checkpoint record must have decision info, subject auditlog and no details or "
               "token";
    if (!json_is_object(cp) || json_object_size(cp) != ARRAY_SIZE(keys))
        return "checkpoint member is not an object of exactly final, first, head, jws, kid, last";
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
        if (!json_object_get(cp, keys[i]))
            return "checkpoint member is not an object of exactly final, first, head, jws, kid, "
                   "last";
    if (!json_is_boolean(final) || !member_is_uint(json_object_get(cp, "first"), &first) ||
        !member_is_uint(json_object_get(cp, "last"), &last) || !head || !kid ||
        !json_is_string(jws_j) || json_string_length(kid_j) == 0 ||
        json_string_length(kid_j) > FERRY_KID_MAX_LEN || strlen(kid) != json_string_length(kid_j))
        return "checkpoint member has a value of the wrong type";
    *ret_final = json_is_true(final);
    sanitize_into(safe_kid, sizeof(safe_kid), kid, 64);
    if (first != v->cp_first) {
        snprintf(why, whylen,
                 "checkpoint range starts at seq %" PRIu64 ", expected %" PRIu64
                 " (the previous checkpoint)",
                 first, v->cp_first);
        return why;
    }
    if (last + 1 != seq) {
        snprintf(why, whylen, "checkpoint range ends at seq %" PRIu64 ", expected %" PRIu64, last,
                 seq - 1);
        return why;
    }
    if (strcmp(head, prev_hex) != 0)
        return "checkpoint head is not the hash of the previous record";
    r = ferry_jws_parse(json_string_value(jws_j), json_string_length(jws_j), &jws);
    if (internal_error(r)) {
        *ret_err = r;
        return NULL;
    }
    if (r < 0)
        return "checkpoint signature is not a valid compact JWS";
    if (!jws->kid || strcmp(jws->kid, kid) != 0)
        res = "checkpoint signature names a different kid than the record";
    else if (!jws->typ || strcmp(jws->typ, FERRY_AUDITLOG_CHECKPOINT_TYP) != 0)
        res = "checkpoint signature has the wrong typ";
    if (res)
        goto out;
    key = vfind_key(v, kid);
    if (!key && !v->skip_unknown_kid) {
        snprintf(why, whylen, "checkpoint signed by unknown key '%s'", safe_kid);
        res = why;
        goto out;
    }
    if (key && (r = ferry_jws_verify(jws, key)) < 0) {
        if (internal_error(r)) {
            *ret_err = r;
            goto out;
        }
        snprintf(why, whylen, "checkpoint signature does not verify with key '%s' (%s)", safe_kid,
                 ferry_strerror(r));
        res = why;
        goto out;
    }
    cbuf_init(&payload, 512);
    r = checkpoint_payload(&payload, *ret_final, first, head, last, seq,
                           json_string_value(json_object_get(rec, "time")));
    if (r < 0)
        *ret_err = -ENOMEM;
    else if (payload.len != jws->payload_len || memcmp(payload.data, jws->payload, payload.len))
        res = "checkpoint signature covers a different range, head, final flag or time than "
              "the record (chain rewritten?)";
    cbuf_release(&payload);
out:
    ferry_jws_free(jws);
    return res;
}

/* The previous record's link is unknown after an unreadable line. */
static void vlost(struct vstate *v)
{
    v->prev_known = false;
    v->expect_seq++;
    v->prev_seq = 0;
    v->after_final = false;
}

static void vtoo_long(struct vstate *v)
{
    v->line++;
    v->rep->lines++;
    vreport(v, v->line, 0, false, "line is longer than %d bytes", FERRY_AUDITLOG_MAX_LINE - 1);
    vlost(v);
}

/* Verify one line (without its newline). Problems are reported, never returned; the return
 * value is 0, -ENOMEM, -FERRY_ECRYPTO or what opts->on_record returned. */
static int vline(struct vstate *v, const char *line, size_t len)
{
    static const char *const allowed[] = {"checkpoint", "decision", "details", "hash",  "prev",
                                          "seq",        "subject",  "time",    "token", "type"};
    _cleanup_json_ json_t *rec = NULL;
    char perr[FERRY_JSON_ERR_LEN], why[FERRY_AUDITLOG_REASON_LEN];
    unsigned char stored_hash[HASH_LEN], stored_prev[HASH_LEN], computed[HASH_LEN];
    const char *type, *dec, *prev_hex, *hash_hex, *k, *bad;
    struct canon c = {.b = &v->scratch};
    json_t *m, *tok, *cp;
    uint64_t seq = 0, ln;
    bool is_cp, final = false, known_dec = false;
    int r;

    ln = ++v->line;
    v->rep->lines++;
    v->last_line_bad = false;
    if (len > FERRY_AUDITLOG_MAX_LINE - 1) {
        v->line--;
        v->rep->lines--;
        vtoo_long(v);
        return 0;
    }
    r = ferry_json_parse(line, len, FERRY_AUDITLOG_MAX_LINE, FERRY_AUDITLOG_DETAILS_DEPTH + 2, &rec,
                         perr, sizeof(perr));
    if (r == -ENOMEM)
        return r;
    if (r < 0 || !json_is_object(rec)) {
        vreport(v, ln, 0, false, "not a JSON record (%s)", r < 0 ? perr : "not an object");
        vlost(v);
        return 0;
    }
    if (json_integer_value(json_object_get(rec, "seq")) > 0)
        seq = (uint64_t)json_integer_value(json_object_get(rec, "seq"));
    json_object_foreach(rec, k, m)
    {
        bool ok = false;
        for (size_t i = 0; i < ARRAY_SIZE(allowed); i++)
            ok = ok || strcmp(k, allowed[i]) == 0;
        if (!ok) {
            char safe[40];
            sanitize_into(safe, sizeof(safe), k, 32);
            vreport(v, ln, seq, false, "unknown member '%s'", safe);
            vlost(v);
            return 0;
        }
    }
    type = json_string_value(json_object_get(rec, "type"));
    dec = json_string_value(json_object_get(rec, "decision"));
    prev_hex = json_string_value(json_object_get(rec, "prev"));
    hash_hex = json_string_value(json_object_get(rec, "hash"));
    tok = json_object_get(rec, "token");
    cp = json_object_get(rec, "checkpoint");
    for (int i = 0; dec && i < FERRY_AUDITLOG_DECISION_MAX; i++)
        known_dec = known_dec || strcmp(dec, decision_names[i]) == 0;
    bad = NULL;
    if (seq == 0)
        bad = "seq is missing or not a positive integer";
    else if (!type || !valid_type(type))
        bad = "type is missing or invalid";
    else if (!known_dec)
        bad = "decision is missing or not one of allow, deny, error, info";
    else if (!json_is_string(json_object_get(rec, "subject")))
        bad = "subject is missing or not a string";
    else if (!valid_time(json_string_value(json_object_get(rec, "time")) ?: "",
                         json_string_length(json_object_get(rec, "time"))))
        bad = "time is missing or not YYYY-MM-DDTHH:MM:SS.uuuuuuZ";
    else if (!prev_hex || !hex_decode(prev_hex, strlen(prev_hex), stored_prev, HASH_LEN))
        bad = "prev is missing or not 64 lowercase hex digits";
    else if (!hash_hex || !hex_decode(hash_hex, strlen(hash_hex), stored_hash, HASH_LEN))
        bad = "hash is missing or not 64 lowercase hex digits";
    else if ((m = json_object_get(rec, "details")) && !json_is_object(m))
        bad = "details is not an object";
    else if (tok &&
             (!json_is_object(tok) || json_object_size(tok) == 0 ||
              json_object_size(tok) !=
                  (size_t) !!json_object_get(tok, "jti") + !!json_object_get(tok, "sha256") ||
              (json_object_get(tok, "jti") && !json_is_string(json_object_get(tok, "jti"))) ||
              (json_object_get(tok, "sha256") &&
               !hex_decode(json_string_value(json_object_get(tok, "sha256")) ?: "",
                           json_string_length(json_object_get(tok, "sha256")), computed,
                           HASH_LEN))))
        bad = "token is not an object of jti and/or sha256 (64 hex digits)";
    is_cp = type && strcmp(type, CHECKPOINT_TYPE) == 0;
    if (!bad && is_cp != (cp != NULL))
        bad = is_cp ? "checkpoint record without a checkpoint member"
                    : "checkpoint member in a record that is not a checkpoint";
    if (bad) {
        vreport(v, ln, seq, false, "%s", bad);
        vlost(v);
        return 0;
    }
    /* Canonical form: the line must be exactly the canonical bytes of the record without
     * "hash", with `,"hash":"..."` inserted before the closing brace. */
    v->scratch.len = 0;
    json_object_del(rec, "hash");
    r = canon_value(&c, rec, 1);
    if (r == -ENOMEM)
        return r;
    if (r < 0 || len != v->scratch.len - 1 + HASH_SUFFIX_LEN ||
        memcmp(line, v->scratch.data, v->scratch.len - 1) != 0 ||
        memcmp(line + v->scratch.len - 1, ",\"hash\":\"", 9) != 0 ||
        memcmp(line + len - 2, "\"}", 2) != 0) {
        vreport(v, ln, seq, false, "record is not in canonical form (or hash is not last)");
        v->expect_seq = seq + 1;
        memcpy(v->prev, stored_hash, HASH_LEN);
        v->prev_known = true;
        v->prev_seq = seq;
        v->after_final = false;
        return 0;
    }
    /* The chain. */
    bad = NULL;
    if (seq != v->expect_seq) {
        if (v->prev_seq && seq == v->prev_seq)
            vreport(v, ln, seq, false,
                    "seq %" PRIu64 " repeats the previous record's seq (a record was inserted "
                    "or duplicated before this line)",
                    seq);
        else if (seq > v->expect_seq)
            vreport(v, ln, seq, false,
                    "seq %" PRIu64 " where %" PRIu64 " was expected: %" PRIu64
                    " record(s) missing before this line (deleted or reordered)",
                    seq, v->expect_seq, seq - v->expect_seq);
        else
            vreport(v, ln, seq, false,
                    "seq %" PRIu64 " where %" PRIu64 " was expected: records out of order", seq,
                    v->expect_seq);
        /* A record from earlier in the chain (moved down): skip it and keep expecting what
         * came before it, so a swap of two records is two problems, not a cascade. A repeated
         * seq replaces the previous record; a jump forward restarts the chain there. */
        if (seq < v->prev_seq)
            return 0;
        bad = "";
    } else if (v->prev_known && !ferry_memeq_ct(v->prev, stored_prev, HASH_LEN)) {
        if (seq == 1)
            vreport(v, ln, seq, false, "prev of the first record is not 64 zeros");
        else
            vreport(v, ln, seq, false,
                    "prev does not match the hash of the previous record (line %" PRIu64
                    " was edited, replaced or inserted)",
                    ln - 1);
        bad = "";
    } else {
        r = chain_hash(stored_prev, v->scratch.data, v->scratch.len, computed);
        if (r < 0)
            return r;
        if (!ferry_memeq_ct(computed, stored_hash, HASH_LEN)) {
            vreport(v, ln, seq, false, "hash does not match the record (record edited)");
            bad = "";
        }
    }
    if (!bad && v->after_final && strcmp(type, OPEN_TYPE) != 0) {
        vreport(v, ln, seq, false,
                "record after the final checkpoint does not start a new session (%s)", OPEN_TYPE);
        bad = "";
    }
    if (!bad && is_cp) {
        int err = 0;
        bad = check_checkpoint(v, rec, cp, seq, prev_hex, &final, why, sizeof(why), &err);
        if (err < 0)
            return err;
        if (bad)
            vreport(v, ln, seq, false, "%s", bad);
    }
    /* Go on from this record whatever happened, so one edit is one problem. */
    v->expect_seq = seq + 1;
    memcpy(v->prev, stored_hash, HASH_LEN);
    v->prev_known = true;
    v->prev_seq = seq;
    v->after_final = false;
    if (v->rep->first_seq == 0)
        v->rep->first_seq = seq;
    v->rep->last_seq = seq;
    v->rep->sealed = false;
    /* A checkpoint bounds the next range even when it failed: one bad checkpoint is one
     * problem, not one per later checkpoint. */
    if (is_cp)
        v->cp_first = seq;
    if (bad)
        return 0;
    v->rep->records++;
    if (is_cp) {
        v->rep->checkpoints++;
        v->rep->last_checkpoint_seq = seq;
        v->rep->last_checkpoint_final = final;
        v->rep->unsigned_records = 0;
        v->after_final = final;
        v->rep->sealed = final;
    } else {
        if (v->rep->unsigned_records++ == 0) {
            v->unsigned_first_line = ln;
            v->unsigned_first_seq = seq;
        }
        if (v->opts && v->opts->on_record)
            return v->opts->on_record(v->opts->userdata, rec);
    }
    return 0;
}

/* Read fd to its end, feeding complete lines to vline; a last line without newline is left in
 * v->partial_len / partial_sha. Returns 0, -errno or -ENOMEM. */
static int vscan(struct vstate *v, int fd)
{
    _cleanup_free_ char *buf = malloc(READ_BUF);
    size_t have = 0;
    bool skipping = false;
    int r;

    if (!buf)
        return -ENOMEM;
    for (;;) {
        ssize_t n = read(fd, buf + have, READ_BUF - have);
        size_t start = 0;
        char *nl;

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        have += (size_t)n;
        while ((nl = memchr(buf + start, '\n', have - start))) {
            size_t len = (size_t)(nl - (buf + start));
            if (skipping)
                skipping = false;
            else if ((r = vline(v, buf + start, len)) < 0)
                return r;
            start += len + 1;
        }
        if (!skipping && have - start > FERRY_AUDITLOG_MAX_LINE) {
            vtoo_long(v);
            skipping = true;
        }
        if (skipping) {
            have = 0;
        } else {
            memmove(buf, buf + start, have - start);
            have -= start;
        }
    }
    if (have > 0 && !skipping) {
        v->partial_len = have;
        r = sha256_hex(buf, have, v->partial_sha);
        if (r < 0)
            return r;
    }
    return 0;
}

/* End-of-file rules of verify (strict and live). */
static void vfinish(struct vstate *v)
{
    ferry_auditlog_report *rep = v->rep;

    if (v->partial_len > 0) {
        rep->lines++;
        v->line++;
        vreport(v, v->line, 0, v->mode == VMODE_LIVE,
                "incomplete last line (%zu bytes without newline): %s", v->partial_len,
                v->mode == VMODE_LIVE ? "being written, or cut mid-record; not verified"
                                      : "the file was cut in the middle of a record");
    }
    if (rep->lines == 0) {
        vreport(v, 1, 0, false, "empty log: no records");
        return;
    }
    if (v->opts && rep->last_seq < v->opts->min_last_seq)
        vreport(v, v->line, rep->last_seq, false,
                "log ends at seq %" PRIu64 ", before seq %" PRIu64
                " which it must reach (records removed from the end)",
                rep->last_seq, v->opts->min_last_seq);
    if (v->mode == VMODE_STRICT) {
        if (!rep->sealed && !v->last_line_bad && v->partial_len == 0)
            vreport(v, v->line, rep->last_seq, false,
                    "log is not sealed: the last record is not a final checkpoint (records "
                    "removed from the end, or still being written: use --live)");
        else if (!rep->sealed && v->partial_len > 0 && !v->last_line_bad)
            vreport(v, v->line, 0, false,
                    "log is not sealed: it does not end with a final checkpoint");
        return;
    }
    if (rep->last_checkpoint_seq == 0) {
        vreport(v, v->line, rep->last_seq, false,
                "no verified checkpoint: nothing in this log is signed yet");
        return;
    }
    if (rep->unsigned_records > 0)
        vreport(v, v->unsigned_first_line, v->unsigned_first_seq, true,
                "%" PRIu64 " record(s) after the last checkpoint (seq %" PRIu64 "..%" PRIu64
                ") are not signed yet",
                rep->unsigned_records, v->unsigned_first_seq, rep->last_seq);
}

FERRY_EXPORT int ferry_auditlog_verify(const char *path, const ferry_jwks *keys,
                                       const ferry_auditlog_verify_options *opts,
                                       ferry_auditlog_report *report)
{
    struct vstate v;
    int fd, r;

    if (!report)
        return -EINVAL;
    vstate_init(&v, opts && opts->live ? VMODE_LIVE : VMODE_STRICT, keys, opts, report);
    if (!path) {
        cbuf_release(&v.scratch);
        return -EINVAL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        cbuf_release(&v.scratch);
        return -errno;
    }
    r = vscan(&v, fd);
    close(fd);
    if (r == 0)
        vfinish(&v);
    cbuf_release(&v.scratch);
    if (r < 0)
        return r;
    return report->problems ? -FERRY_EREFUSED : 0;
}

/* ---- the writer --------------------------------------------------------------------------- */

struct ferry_auditlog {
    pthread_mutex_t lock;
    int fd;
    ferry_jwk *key;
    ferry_alg alg;
    ferry_jwks *verify_keys;
    unsigned checkpoint_every;
    ferry_auditlog_sync_mode sync;
    unsigned sync_every_records, sync_interval_ms;
    int64_t (*clock)(void *userdata);
    void *clock_userdata;

    uint64_t seq;                 /* last seq written, 0 for none */
    unsigned char head[HASH_LEN]; /* hash of that record (genesis: zeros) */
    uint64_t cp_first;            /* "first" of the next checkpoint */
    uint64_t since_cp;            /* records since the last checkpoint */
    uint64_t unsynced;            /* records written since the last sync */
    int64_t last_sync_us;
    off_t size;   /* bytes of complete, written records */
    int poisoned; /* the error that stopped the log, or 0 */
    /* record_time_locked's cache: "YYYY-MM-DDTHH:MM:SS." of time_secs */
    bool time_cached;
    int64_t time_secs;
    char time_prefix[TIME_PREFIX_LEN];
};

static int64_t realtime_us(void *userdata)
{
    struct timespec ts;

    (void)userdata;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#define errf(errbuf, errlen, ...) ((void)ferry_errbuf_set(errbuf, errlen, 0, __VA_ARGS__))

/* Pick the signature algorithm of a key: its declared alg, else the first that fits. */
static ferry_alg key_alg(const ferry_jwk *key)
{
    static const ferry_alg order[] = {FERRY_ALG_ES256, FERRY_ALG_ES384, FERRY_ALG_EDDSA,
                                      FERRY_ALG_RS256};

    if (ferry_jwk_alg(key) != FERRY_ALG_UNKNOWN)
        return ferry_jwk_alg(key);
    for (size_t i = 0; i < ARRAY_SIZE(order); i++)
        if (ferry_jwk_allows(key, order[i]))
            return order[i];
    return FERRY_ALG_UNKNOWN;
}

static int check_signing_key(const ferry_jwk *key)
{
    if (!key || !ferry_jwk_is_private(key) || !ferry_jwk_kid(key) ||
        key_alg(key) == FERRY_ALG_UNKNOWN)
        return -FERRY_ENOKEY;
    return 0;
}

/* Stop the log after a failed write or sync: cut back what this record may have left (best
 * effort; reopen refuses a partial line anyway) and refuse everything until reopened. */
static int poison(ferry_auditlog *log, int err)
{
    if (ftruncate(log->fd, log->size) == 0)
        (void)fdatasync(log->fd);
    log->poisoned = err;
    return err;
}

static bool want_sync(ferry_auditlog *log, bool is_checkpoint, int64_t now)
{
    if (is_checkpoint || log->sync == FERRY_AUDITLOG_SYNC_ALWAYS)
        return true;
    if (log->sync == FERRY_AUDITLOG_SYNC_BATCH)
        return log->unsynced + 1 >= log->sync_every_records ||
               now - log->last_sync_us >= (int64_t)log->sync_interval_ms * 1000;
    return false;
}

/* Hash, write and (per policy) sync one canonical record (its bytes end with '}'). Called with
 * the lock held. */
static int write_record_locked(ferry_auditlog *log, struct cbuf *canon, bool is_checkpoint,
                               int64_t now)
{
    unsigned char h[HASH_LEN];
    char hex[HEX_LEN + 1];
    int r;

    r = chain_hash(log->head, canon->data, canon->len, h);
    if (r < 0)
        return r;
    hex_encode(h, HASH_LEN, hex);
    canon->len--; /* drop '}' and append the hash member */
    if ((r = cbuf_append(canon, ",\"hash\":\"", 9)) < 0 ||
        (r = cbuf_append(canon, hex, HEX_LEN)) < 0 || (r = cbuf_append(canon, "\"}\n", 3)) < 0)
        return r == -E2BIG ? -FERRY_ETOOBIG : r;
    if (canon->len > FERRY_AUDITLOG_MAX_LINE)
        return -FERRY_ETOOBIG;
    r = ferry_write_all(log->fd, canon->data, canon->len);
    if (r < 0)
        return poison(log, r);
    if (want_sync(log, is_checkpoint, now)) {
        if (fdatasync(log->fd) < 0)
            return poison(log, -errno);
        log->unsynced = 0;
        log->last_sync_us = now;
    } else {
        log->unsynced++;
    }
    log->size += (off_t)canon->len;
    log->seq++;
    memcpy(log->head, h, HASH_LEN);
    log->since_cp++;
    return 0;
}

/* The record time of now (microseconds), as format_time writes it. The date and time of day
 * are formatted once per second (gmtime_r and snprintf cost more than the rest of the record's
 * fixed members); called with the lock held (the cache is the log's). */
static int record_time_locked(ferry_auditlog *log, int64_t now, char out[32])
{
    int64_t secs = now / 1000000, frac = now % 1000000;
    char full[32];
    int r;

    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    if (!log->time_cached || secs != log->time_secs) {
        if ((r = format_time(secs, 0, full)) < 0)
            return r;
        memcpy(log->time_prefix, full, TIME_PREFIX_LEN);
        log->time_secs = secs;
        log->time_cached = true;
    }
    memcpy(out, log->time_prefix, TIME_PREFIX_LEN);
    for (int i = TIME_PREFIX_LEN + 5; i >= TIME_PREFIX_LEN; i--) {
        out[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    out[TIME_PREFIX_LEN + 6] = 'Z';
    out[TIME_PREFIX_LEN + 7] = '\0';
    return 0;
}

/* The canonical bytes of a record come in sorted member order: checkpoint, decision, details,
 * prev, seq, subject, time, token, type (then "hash", added by write_record_locked). The part up
 * to details depends only on the event, so it is written before the lock is taken; the rest
 * needs the chain head, seq and time. */

/* Start a record in b: `{` [`"checkpoint":` cp_canon `,`] `"decision":"d"` [`,"details":`
 * details]. cp_canon is canonical JSON already (or NULL). details (or NULL) is serialised
 * canonically here; validate applies the event limits to it (a caller's details), otherwise
 * only the structure rules (the log's own). */
static int record_head(struct cbuf *b, const char *cp_canon, ferry_auditlog_decision d,
                       const json_t *details, bool validate)
{
    struct canon c = {.b = b, .validate = validate};
    bool f = true;
    int r;

    if (details && !json_is_object(details))
        return -EINVAL;
    if ((r = cbuf_append(b, "{", 1)) < 0)
        return r;
    if (cp_canon &&
        ((r = canon_name(b, "checkpoint", &f)) < 0 || (r = cbuf_append_str(b, cp_canon)) < 0))
        return r;
    if ((r = canon_name(b, "decision", &f)) < 0 ||
        (r = cbuf_quoted(b, decision_names[d], strlen(decision_names[d]))) < 0)
        return r;
    if (details &&
        ((r = canon_name(b, "details", &f)) < 0 || (r = canon_value(&c, details, 1)) < 0))
        return r;
    return 0;
}

/* Finish a record started by record_head and write it, with the lock held: prev and seq from
 * the log, subject, the time of now, token and type. subject and the token's jti are escaped;
 * type, the token's sha256 (checked lowercase hex), prev and the time need no escape. */
static int record_finish_locked(ferry_auditlog *log, struct cbuf *b, bool is_checkpoint,
                                const char *subject, const ferry_auditlog_token_ref *tok,
                                const char *type, int64_t now)
{
    char prev_hex[HEX_LEN + 1], ts[32];
    bool f = false; /* decision came first */
    int r;

    if (log->poisoned)
        return -EBADFD;
    r = record_time_locked(log, now, ts);
    if (r < 0)
        return r;
    hex_encode(log->head, HASH_LEN, prev_hex);
    if ((r = canon_name(b, "prev", &f)) < 0 || (r = cbuf_quoted(b, prev_hex, HEX_LEN)) < 0 ||
        (r = canon_name(b, "seq", &f)) < 0 || (r = canon_int(b, (long long)(log->seq + 1))) < 0 ||
        (r = canon_name(b, "subject", &f)) < 0 || (r = canon_cstr(b, subject)) < 0 ||
        (r = canon_name(b, "time", &f)) < 0 || (r = cbuf_quoted(b, ts, strlen(ts))) < 0)
        goto out;
    if (tok && (tok->jti[0] || tok->sha256[0])) {
        bool tf = true;
        if ((r = canon_name(b, "token", &f)) < 0 || (r = cbuf_append(b, "{", 1)) < 0)
            goto out;
        if (tok->jti[0] &&
            ((r = canon_name(b, "jti", &tf)) < 0 || (r = canon_cstr(b, tok->jti)) < 0))
            goto out;
        if (tok->sha256[0] && ((r = canon_name(b, "sha256", &tf)) < 0 ||
                               (r = cbuf_quoted(b, tok->sha256, strlen(tok->sha256))) < 0))
            goto out;
        if ((r = cbuf_append(b, "}", 1)) < 0)
            goto out;
    }
    if ((r = canon_name(b, "type", &f)) < 0 || (r = cbuf_quoted(b, type, strlen(type))) < 0 ||
        (r = cbuf_append(b, "}", 1)) < 0)
        goto out;
    r = write_record_locked(log, b, is_checkpoint, now);
out:
    return r == -E2BIG ? -FERRY_ETOOBIG : r;
}

/* Never write a checkpoint that would not verify: parse the fresh JWS strictly and verify it
 * with the key. This catches a signing fault; one was seen when an allocation failed inside
 * ferry_jws_sign's header serialisation (jansson dropped a member name and the call still
 * returned 0). Costs one verification per checkpoint. */
static int check_own_signature(const ferry_jwk *key, const char *jws, const struct cbuf *payload)
{
    ferry_jws *parsed = NULL;
    int r = ferry_jws_parse(jws, strlen(jws), &parsed);

    if (r == 0)
        r = ferry_jws_verify(parsed, key);
    if (r == 0 && (parsed->payload_len != payload->len ||
                   memcmp(parsed->payload, payload->data, payload->len) != 0))
        r = -FERRY_ECRYPTO;
    ferry_jws_free(parsed);
    return r == 0 || r == -ENOMEM ? r : -FERRY_ECRYPTO;
}

static int checkpoint_locked(ferry_auditlog *log, bool final)
{
    struct cbuf payload, cp, rec;
    char head_hex[HEX_LEN + 1], ts[32];
    _cleanup_free_ char *jws = NULL;
    uint64_t seq = log->seq + 1, last = log->seq, first = log->cp_first;
    int64_t now;
    bool f = true;
    int r;

    if (log->poisoned)
        return -EBADFD;
    now = log->clock(log->clock_userdata);
    r = record_time_locked(log, now, ts);
    if (r < 0)
        return r;
    hex_encode(log->head, HASH_LEN, head_hex);
    cbuf_init(&payload, 1024);
    cbuf_init(&cp, FERRY_AUDITLOG_MAX_LINE);
    cbuf_init(&rec, RECORD_MAX);
    r = checkpoint_payload(&payload, final, first, head_hex, last, seq, ts);
    if (r == 0) {
        r = ferry_jws_sign(log->key, log->alg, FERRY_AUDITLOG_CHECKPOINT_TYP, payload.data,
                           payload.len, &jws);
        /* ferry_jws_sign says -EINVAL when it cannot add the typ header: with this constant
         * typ that can only be an allocation failure. */
        if (r == -EINVAL)
            r = -ENOMEM;
    }
    if (r == 0)
        r = check_own_signature(log->key, jws, &payload);
    if (r == 0 &&
        ((r = cbuf_append(&cp, "{", 1)) < 0 || (r = canon_name(&cp, "final", &f)) < 0 ||
         (r = cbuf_append_str(&cp, final ? "true" : "false")) < 0 ||
         (r = canon_name(&cp, "first", &f)) < 0 || (r = canon_int(&cp, (long long)first)) < 0 ||
         (r = canon_name(&cp, "head", &f)) < 0 || (r = canon_cstr(&cp, head_hex)) < 0 ||
         (r = canon_name(&cp, "jws", &f)) < 0 || (r = canon_cstr(&cp, jws)) < 0 ||
         (r = canon_name(&cp, "kid", &f)) < 0 ||
         (r = canon_cstr(&cp, ferry_jwk_kid(log->key))) < 0 ||
         (r = canon_name(&cp, "last", &f)) < 0 || (r = canon_int(&cp, (long long)last)) < 0 ||
         (r = cbuf_append(&cp, "}", 1)) < 0))
        r = r == -E2BIG ? -FERRY_ETOOBIG : r;
    if (r == 0) {
        r = record_head(&rec, cp.data, FERRY_AUDITLOG_INFO, NULL, false);
        if (r == -E2BIG)
            r = -FERRY_ETOOBIG;
    }
    if (r == 0)
        r = record_finish_locked(log, &rec, true, LOG_SUBJECT, NULL, CHECKPOINT_TYPE, now);
    if (r == 0) {
        log->cp_first = seq;
        log->since_cp = 0;
    }
    cbuf_release(&payload);
    cbuf_release(&cp);
    cbuf_release(&rec);
    return r;
}

/* Validate an event's members other than details (record_head validates those as it writes
 * them). */
static int check_event(const ferry_auditlog_event *ev)
{
    int r;

    if (!ev || !ev->type || !ev->subject || (unsigned)ev->decision >= FERRY_AUDITLOG_DECISION_MAX)
        return -EINVAL;
    if (!valid_type(ev->type) || strncmp(ev->type, RESERVED_PREFIX, strlen(RESERVED_PREFIX)) == 0)
        return -EINVAL;
    if ((r = check_text(ev->subject, FERRY_AUDITLOG_SUBJECT_MAX)) < 0)
        return r;
    if (ev->token) {
        if (strnlen(ev->token->jti, sizeof(ev->token->jti)) == sizeof(ev->token->jti) ||
            strnlen(ev->token->sha256, sizeof(ev->token->sha256)) == sizeof(ev->token->sha256))
            return -FERRY_ETOOBIG;
        if ((r = check_text(ev->token->jti, FERRY_AUDITLOG_JTI_MAX)) < 0)
            return r;
        /* Lowercase hex of a SHA-256: record_finish_locked writes it without escaping. */
        if (ev->token->sha256[0] && !lower_hex(ev->token->sha256, HEX_LEN))
            return -FERRY_EMALFORMED;
    }
    return 0;
}

FERRY_EXPORT int ferry_auditlog_append(ferry_auditlog *log, const ferry_auditlog_event *ev,
                                       uint64_t *ret_seq)
{
    /* The record is written into this stack buffer, its head before the lock is taken. A head
     * that leaves less than FINISH_MAX free (so that the rest might not fit) is written again
     * into a heap buffer of the full size: records that long are rare. */
    char mem[APPEND_STACK_BYTES];
    struct cbuf sb, heap = {0}, *b = &sb;
    uint64_t seq = 0;
    int r;

    if (!log)
        return -EINVAL;
    r = check_event(ev);
    if (r < 0)
        return r;
    cbuf_init_fixed(&sb, mem, sizeof(mem));
    r = record_head(&sb, NULL, ev->decision, ev->details, true);
    if (r == -E2BIG || (r == 0 && sb.max - sb.len < FINISH_MAX)) {
        cbuf_init(&heap, RECORD_MAX);
        b = &heap;
        r = record_head(b, NULL, ev->decision, ev->details, true);
    }
    if (r < 0) {
        cbuf_release(&heap);
        return r == -E2BIG ? -FERRY_ETOOBIG : r;
    }
    pthread_mutex_lock(&log->lock);
    r = record_finish_locked(log, b, false, ev->subject, ev->token, ev->type,
                             log->clock(log->clock_userdata));
    seq = log->seq;
    if (r == 0 && log->since_cp >= log->checkpoint_every)
        r = checkpoint_locked(log, false);
    pthread_mutex_unlock(&log->lock);
    cbuf_release(&heap);
    if (r == 0 && ret_seq)
        *ret_seq = seq;
    return r;
}

FERRY_EXPORT int ferry_auditlog_checkpoint(ferry_auditlog *log)
{
    int r;

    if (!log)
        return -EINVAL;
    pthread_mutex_lock(&log->lock);
    r = checkpoint_locked(log, false);
    pthread_mutex_unlock(&log->lock);
    return r;
}

FERRY_EXPORT int ferry_auditlog_flush(ferry_auditlog *log)
{
    int r = 0;

    if (!log)
        return -EINVAL;
    pthread_mutex_lock(&log->lock);
    if (log->poisoned)
        r = -EBADFD;
    else if (fdatasync(log->fd) < 0)
        r = poison(log, -errno);
    else
        log->unsynced = 0;
    pthread_mutex_unlock(&log->lock);
    return r;
}

FERRY_EXPORT int ferry_auditlog_set_signing_key(ferry_auditlog *log, ferry_jwk *key)
{
    if (!log)
        return -EINVAL;
    if (check_signing_key(key) < 0)
        return -FERRY_ENOKEY;
    pthread_mutex_lock(&log->lock);
    ferry_jwk_unref(log->key);
    log->key = ferry_jwk_ref(key);
    log->alg = key_alg(key);
    pthread_mutex_unlock(&log->lock);
    return 0;
}

FERRY_EXPORT uint64_t ferry_auditlog_last_seq(ferry_auditlog *log)
{
    uint64_t s;

    if (!log)
        return 0;
    pthread_mutex_lock(&log->lock);
    s = log->seq;
    pthread_mutex_unlock(&log->lock);
    return s;
}

static void log_free(ferry_auditlog *log)
{
    if (!log)
        return;
    if (log->fd >= 0)
        close(log->fd); /* releases the flock */
    ferry_jwk_unref(log->key);
    ferry_jwks_unref(log->verify_keys);
    pthread_mutex_destroy(&log->lock);
    free(log);
}

FERRY_EXPORT int ferry_auditlog_close(ferry_auditlog *log)
{
    int r;

    if (!log)
        return 0;
    pthread_mutex_lock(&log->lock);
    r = checkpoint_locked(log, true);
    pthread_mutex_unlock(&log->lock);
    log_free(log);
    return r;
}

/* fsync the directory that holds path, so that a file just created there survives a crash:
 * without it an acknowledged (synced) record can vanish with the file's name. */
static int sync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    _cleanup_free_ char *dir = NULL;
    int fd, r = 0;

    if (!slash)
        dir = strdup(".");
    else
        dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
    if (!dir)
        return -ENOMEM;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        r = -errno;
    close(fd);
    return r;
}

/* Read and verify an existing log; set the chain state from its end. */
static int resume(ferry_auditlog *log, const char *path, bool repair, json_t *open_details,
                  char *errbuf, size_t errlen)
{
    ferry_auditlog_report rep;
    struct vstate v;
    const char *previous;
    int r;

    vstate_init(&v, VMODE_OPEN, log->verify_keys, NULL, &rep);
    v.own = log->key;
    v.skip_unknown_kid = log->verify_keys == NULL;
    if (lseek(log->fd, 0, SEEK_SET) < 0) {
        r = -errno;
        goto out;
    }
    r = vscan(&v, log->fd);
    if (r < 0) {
        errf(errbuf, errlen, "audit log %s: cannot read it: %s", path, ferry_strerror(r));
        goto out;
    }
    if (rep.problems > 0) {
        errf(errbuf, errlen,
             "audit log %s: line %" PRIu64 " (seq %" PRIu64 "): %s; refusing "
             "to append to a broken log",
             path, rep.first_bad_line, rep.first_bad_seq, rep.first_bad_reason);
        r = strstr(rep.first_bad_reason, "signature") ? -FERRY_EBADSIG : -FERRY_EMALFORMED;
        goto out;
    }
    log->size = lseek(log->fd, 0, SEEK_END);
    if (log->size < 0) {
        r = -errno;
        goto out;
    }
    if (v.partial_len > 0) {
        if (!repair) {
            errf(errbuf, errlen,
                 "audit log %s: line %" PRIu64 " is incomplete (%zu bytes "
                 "without newline: a crash or failed write); refusing to append (repair_tail "
                 "cuts it off)",
                 path, v.line + 1, v.partial_len);
            r = -FERRY_EMALFORMED;
            goto out;
        }
        log->size -= (off_t)v.partial_len;
        if (ftruncate(log->fd, log->size) < 0 || fdatasync(log->fd) < 0) {
            r = -errno;
            errf(errbuf, errlen, "audit log %s: cannot cut the incomplete last line: %s", path,
                 ferry_strerror(r));
            goto out;
        }
        if (json_object_set_new(open_details, "repaired_tail_bytes",
                                json_integer((json_int_t)v.partial_len)) < 0 ||
            json_object_set_new(open_details, "repaired_tail_sha256", json_string(v.partial_sha)) <
                0) {
            r = -ENOMEM;
            goto out;
        }
    }
    log->seq = rep.last_seq;
    if (rep.last_seq > 0)
        memcpy(log->head, v.prev, HASH_LEN);
    log->cp_first = v.cp_first;
    log->since_cp = rep.unsigned_records;
    previous = rep.lines == 0 || rep.last_seq == 0 ? "none" : rep.sealed ? "sealed" : "unsealed";
    if (json_object_set_new(open_details, "previous", json_string(previous)) < 0)
        r = -ENOMEM;
out:
    cbuf_release(&v.scratch);
    return r;
}

FERRY_EXPORT int ferry_auditlog_open(const ferry_auditlog_options *opts, ferry_auditlog **ret_log,
                                     char *errbuf, size_t errlen)
{
    ferry_auditlog *log = NULL;
    _cleanup_json_ json_t *details = NULL;
    struct stat st;
    bool created = false;
    int r;

    errf(errbuf, errlen, "%s", "");
    if (!opts || !opts->path || !ret_log || (unsigned)opts->sync >= FERRY_AUDITLOG_SYNC_MAX ||
        opts->checkpoint_every > FERRY_AUDITLOG_MAX_CHECKPOINT_EVERY) {
        errf(errbuf, errlen, "audit log: invalid options");
        return -EINVAL;
    }
    if (check_signing_key(opts->signing_key) < 0) {
        errf(errbuf, errlen, "audit log: a private signing key with a kid is required");
        return -FERRY_ENOKEY;
    }
    log = calloc(1, sizeof(*log));
    details = json_object();
    if (!log || !details) {
        free(log);
        return -ENOMEM;
    }
    pthread_mutex_init(&log->lock, NULL);
    log->key = ferry_jwk_ref(opts->signing_key);
    log->alg = key_alg(opts->signing_key);
    log->verify_keys = opts->verify_keys ? ferry_jwks_ref((ferry_jwks *)opts->verify_keys) : NULL;
    log->checkpoint_every =
        opts->checkpoint_every ? opts->checkpoint_every : FERRY_AUDITLOG_DEFAULT_CHECKPOINT_EVERY;
    log->sync = opts->sync;
    log->sync_every_records = opts->sync_every_records ?: DEFAULT_SYNC_RECORDS;
    log->sync_interval_ms = opts->sync_interval_ms ?: DEFAULT_SYNC_MS;
    log->clock = opts->clock ? opts->clock : realtime_us;
    log->clock_userdata = opts->clock_userdata;
    log->cp_first = 1;
    log->fd = open(opts->path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
    if (log->fd >= 0)
        created = true;
    else if (errno == EEXIST)
        log->fd = open(opts->path, O_RDWR | O_APPEND | O_CLOEXEC | O_NOCTTY);
    if (log->fd < 0) {
        r = -errno;
        errf(errbuf, errlen, "audit log %s: cannot open: %s", opts->path, ferry_strerror(r));
        goto fail;
    }
    if (fstat(log->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        r = -EINVAL;
        errf(errbuf, errlen, "audit log %s: not a regular file", opts->path);
        goto fail;
    }
    if (flock(log->fd, LOCK_EX | LOCK_NB) < 0) {
        r = errno == EWOULDBLOCK ? -EBUSY : -errno;
        errf(errbuf, errlen, "audit log %s: %s", opts->path,
             r == -EBUSY ? "in use by another writer" : ferry_strerror(r));
        goto fail;
    }
    if (created && (r = sync_parent_dir(opts->path)) < 0) {
        errf(errbuf, errlen, "audit log %s: cannot sync its directory: %s", opts->path,
             ferry_strerror(r));
        goto fail;
    }
    r = resume(log, opts->path, opts->repair_tail, details, errbuf, errlen);
    if (r < 0)
        goto fail;
    log->last_sync_us = log->clock(log->clock_userdata);
    {
        struct cbuf b;
        cbuf_init(&b, RECORD_MAX);
        r = record_head(&b, NULL, FERRY_AUDITLOG_INFO, details, false);
        if (r == -E2BIG)
            r = -FERRY_ETOOBIG;
        if (r == 0)
            r = record_finish_locked(log, &b, false, LOG_SUBJECT, NULL, OPEN_TYPE,
                                     log->clock(log->clock_userdata));
        cbuf_release(&b);
    }
    if (r == 0 && log->since_cp >= log->checkpoint_every)
        r = checkpoint_locked(log, false);
    if (r < 0) {
        errf(errbuf, errlen, "audit log %s: cannot write: %s", opts->path, ferry_strerror(r));
        goto fail;
    }
    *ret_log = log;
    return 0;
fail:
    log_free(log);
    return r;
}
