/* src/lib/sigv4.c - AWS Signature Version 4 (include/ferry/sigv4.h).
 *
 * One core builds the canonical request, the string to sign and the signature for both the
 * header form and the presigned (query) form; the two public entry points only differ in
 * where the authentication parameters go. The rules are the ones the two AWS suites pin down
 * (docs/internals/sigv4.md); every outside string is checked against its character set and
 * its limit before it is used.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "basic/errbuf.h"
#include "basic/buf.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/sigv4.h"

#define ALGORITHM "AWS4-HMAC-SHA256"
#define OUT_MAX (4u << 20) /* any built string; far above what the input limits allow */

#define seterr(errbuf, errlen, ...) ((void)ferry_errbuf_set(errbuf, errlen, 0, __VA_ARGS__))

/* ---- character classes ------------------------------------------------------------------ */

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* RFC 3986 unreserved: never percent-encoded. */
static bool is_unreserved(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int hexval(unsigned char c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static const char HEX_UPPER[] = "0123456789ABCDEF";
static const char HEX_LOWER[] = "0123456789abcdef";

static void hex_lower(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = HEX_LOWER[p[i] >> 4];
        out[2 * i + 1] = HEX_LOWER[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Append p[0..n) percent-encoded: everything but unreserved (and '/' when keep_slash). */
static int append_encoded(ferry_buf *b, const char *p, size_t n, bool keep_slash)
{
    char tmp[256];
    size_t k = 0;
    int r;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];

        if (k > sizeof(tmp) - 3) {
            r = ferry_buf_append(b, tmp, k);
            if (r < 0)
                return r;
            k = 0;
        }
        if (is_unreserved(c) || (keep_slash && c == '/'))
            tmp[k++] = (char)c;
        else {
            tmp[k++] = '%';
            tmp[k++] = HEX_UPPER[c >> 4];
            tmp[k++] = HEX_UPPER[c & 15];
        }
    }
    return k ? ferry_buf_append(b, tmp, k) : 0;
}

/* Decode %XX escapes of p[0..n) into a new buffer (ret_len bytes, NUL-terminated); '+' stays a
 * literal plus. -FERRY_EMALFORMED for a bad escape, -ENOMEM. */
static int percent_decode(const char *p, size_t n, char **ret, size_t *ret_len)
{
    char *out = malloc(n + 1);
    size_t k = 0;

    if (!out)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%') {
            int hi, lo;

            if (i + 2 >= n) {
                free(out);
                return -FERRY_EMALFORMED;
            }
            hi = hexval((unsigned char)p[i + 1]);
            lo = hexval((unsigned char)p[i + 2]);
            if (hi < 0 || lo < 0) {
                free(out);
                return -FERRY_EMALFORMED;
            }
            out[k++] = (char)(hi << 4 | lo);
            i += 2;
        } else
            out[k++] = p[i];
    }
    out[k] = '\0';
    *ret = out;
    *ret_len = k;
    return 0;
}

/* ---- dates ---------------------------------------------------------------------------- */

#define TIME_MAX_SECONDS 253402300799LL /* 9999-12-31T23:59:59Z */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;

    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

FERRY_EXPORT int ferry_sigv4_format_date(int64_t t, char *buf, size_t len)
{
    int64_t y;
    unsigned mo, d, secs;

    if (!buf || len < 17 || t < 0 || t > TIME_MAX_SECONDS)
        return -EINVAL;
    civil_from_days(t / 86400, &y, &mo, &d);
    secs = (unsigned)(t % 86400);
    (void)snprintf(buf, len, "%04u%02u%02uT%02u%02u%02uZ", (unsigned)y, mo, d, secs / 3600,
                   secs / 60 % 60, secs % 60);
    return 0;
}

FERRY_EXPORT int ferry_sigv4_parse_date(const char *s, int64_t *ret)
{
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned v[6] = {0};
    static const unsigned pos[6] = {0, 4, 6, 9, 11, 13}, width[6] = {4, 2, 2, 2, 2, 2};

    if (!s || !ret || strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z')
        return -FERRY_EMALFORMED;
    for (unsigned f = 0; f < 6; f++)
        for (unsigned i = 0; i < width[f]; i++) {
            unsigned char c = (unsigned char)s[pos[f] + i];
            if (!is_digit(c))
                return -FERRY_EMALFORMED;
            v[f] = v[f] * 10 + (c - '0');
        }
    if (v[0] < 1970 || v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > mdays[v[1] - 1] || v[3] > 23 ||
        v[4] > 59 || v[5] > 59)
        return -FERRY_EMALFORMED;
    if (v[1] == 2 && v[2] == 29 && !((v[0] % 4 == 0 && v[0] % 100 != 0) || v[0] % 400 == 0))
        return -FERRY_EMALFORMED;
    *ret = days_from_civil(v[0], v[1], v[2]) * 86400 + v[3] * 3600 + v[4] * 60 + v[5];
    return 0;
}

/* ---- crypto --------------------------------------------------------------------------- */

/* Fetching an algorithm walks the provider store under a lock, and HMAC's digest parameter
 * fetches SHA-256 again on every EVP_MAC_init that carries it: so SHA-256, HMAC and an HMAC
 * context with its digest set are made once per process (reachable until exit, not leaked);
 * a signing duplicates that context and re-keys it for each step of the chain. */
static EVP_MD *sha256_md;
static EVP_MAC *hmac_alg;
static EVP_MAC_CTX *hmac_template;
static pthread_once_t crypto_once = PTHREAD_ONCE_INIT;

static void crypto_init(void)
{
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };

    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (hmac_alg)
        hmac_template = EVP_MAC_CTX_new(hmac_alg);
    if (hmac_template && !EVP_MAC_CTX_set_params(hmac_template, p)) {
        EVP_MAC_CTX_free(hmac_template);
        hmac_template = NULL;
    }
}

static bool crypto_ready(void)
{
    return pthread_once(&crypto_once, crypto_init) == 0 && sha256_md && hmac_template;
}

static int sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned mdlen = 0;

    if (!crypto_ready() || !EVP_Digest(p, n, md, &mdlen, sha256_md, NULL) || mdlen != 32)
        return -FERRY_ECRYPTO;
    hex_lower(md, 32, out);
    return 0;
}

static int hmac(EVP_MAC_CTX *ctx, const void *key, size_t klen, const void *msg, size_t mlen,
                unsigned char out[32])
{
    size_t outlen = 0;

    if (!EVP_MAC_init(ctx, key, klen, NULL) || !EVP_MAC_update(ctx, msg, mlen) ||
        !EVP_MAC_final(ctx, out, &outlen, 32) || outlen != 32)
        return -FERRY_ECRYPTO;
    return 0;
}

/* signature = HMAC(kSigning, sts) with kSigning derived from the secret; every key wiped (the
 * context's own copy of the last key with it, by EVP_MAC_CTX_free). */
static int derive_and_sign(const char *secret, const char *date8, const char *region,
                           const char *service, const char *sts, size_t sts_len, char out[65])
{
    unsigned char ksecret[4 + FERRY_SIGV4_MAX_SECRET], k1[32], k2[32];
    unsigned char sig[32];
    size_t slen = strlen(secret);
    EVP_MAC_CTX *ctx;
    int r;

    if (!crypto_ready() || !(ctx = EVP_MAC_CTX_dup(hmac_template)))
        return -FERRY_ECRYPTO;
    memcpy(ksecret, "AWS4", 4);
    memcpy(ksecret + 4, secret, slen);
    r = hmac(ctx, ksecret, 4 + slen, date8, 8, k1);
    if (r >= 0)
        r = hmac(ctx, k1, 32, region, strlen(region), k2);
    if (r >= 0)
        r = hmac(ctx, k2, 32, service, strlen(service), k1);
    if (r >= 0)
        r = hmac(ctx, k1, 32, "aws4_request", 12, k2);
    if (r >= 0)
        r = hmac(ctx, k2, 32, sts, sts_len, sig);
    if (r >= 0)
        hex_lower(sig, 32, out);
    EVP_MAC_CTX_free(ctx);
    ferry_wipe(ksecret, sizeof(ksecret));
    ferry_wipe(k1, sizeof(k1));
    ferry_wipe(k2, sizeof(k2));
    ferry_wipe(sig, sizeof(sig));
    return r;
}

/* ---- input checks --------------------------------------------------------------------- */

/* Each check returns 0 or a negative code with the reason set; the reason names the field and
 * never quotes a secret. */

static int check_scope_part(const char *what, const char *s, char *errbuf, size_t errlen)
{
    size_t n;

    if (!s) {
        seterr(errbuf, errlen, "sigv4: %s is missing", what);
        return -EINVAL;
    }
    n = strnlen(s, FERRY_SIGV4_MAX_SCOPE_PART + 1);
    if (n == 0 || n > FERRY_SIGV4_MAX_SCOPE_PART) {
        seterr(errbuf, errlen, "sigv4: %s must be 1 to %d bytes", what, FERRY_SIGV4_MAX_SCOPE_PART);
        return n ? -FERRY_ETOOBIG : -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || is_digit(c) || c == '-')) {
            seterr(errbuf, errlen, "sigv4: %s has a byte 0x%02x outside [a-z0-9-]", what, c);
            return -EINVAL;
        }
    }
    return 0;
}

static int check_creds(const ferry_sigv4_credentials *c, char *errbuf, size_t errlen)
{
    size_t n;

    if (!c->access_key_id || !c->secret_access_key) {
        seterr(errbuf, errlen, "sigv4: the access key id or the secret access key is missing");
        return -EINVAL;
    }
    n = strnlen(c->access_key_id, FERRY_SIGV4_MAX_KEY_ID + 1);
    if (n == 0 || n > FERRY_SIGV4_MAX_KEY_ID) {
        seterr(errbuf, errlen, "sigv4: the access key id must be 1 to %d bytes",
               FERRY_SIGV4_MAX_KEY_ID);
        return n ? -FERRY_ETOOBIG : -EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        if (!is_alpha((unsigned char)c->access_key_id[i]) &&
            !is_digit((unsigned char)c->access_key_id[i])) {
            seterr(errbuf, errlen, "sigv4: the access key id has a byte outside [A-Za-z0-9]");
            return -EINVAL;
        }
    n = strnlen(c->secret_access_key, FERRY_SIGV4_MAX_SECRET + 1);
    if (n == 0 || n > FERRY_SIGV4_MAX_SECRET) {
        seterr(errbuf, errlen, "sigv4: the secret access key must be 1 to %d bytes",
               FERRY_SIGV4_MAX_SECRET);
        return n ? -FERRY_ETOOBIG : -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)c->secret_access_key[i];
        if (ch < 0x21 || ch > 0x7e) {
            seterr(errbuf, errlen,
                   "sigv4: the secret access key has a byte outside printable ASCII");
            return -EINVAL;
        }
    }
    if (c->session_token) {
        n = strnlen(c->session_token, FERRY_SIGV4_MAX_TOKEN + 1);
        if (n > FERRY_SIGV4_MAX_TOKEN) {
            seterr(errbuf, errlen, "sigv4: the session token is longer than %d bytes",
                   FERRY_SIGV4_MAX_TOKEN);
            return -FERRY_ETOOBIG;
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)c->session_token[i];
            if (ch < 0x21 || ch > 0x7e) {
                seterr(errbuf, errlen,
                       "sigv4: the session token has a byte outside printable ASCII");
                return -EINVAL;
            }
        }
    }
    return 0;
}

/* ---- headers -------------------------------------------------------------------------- */

typedef struct chdr {
    char *name;  /* lowercase */
    char *value; /* trimmed, whitespace runs collapsed */
    size_t order;
} chdr;

static int chdr_cmp(const void *a, const void *b)
{
    const chdr *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Check one header; write its canonical form into *out (new strings). */
static int canon_header(const char *name, const char *value, size_t order, chdr *out, size_t *total,
                        char *errbuf, size_t errlen)
{
    size_t nl, vl, k = 0;
    bool space = false;

    if (!name || !value) {
        seterr(errbuf, errlen, "sigv4: header %zu has a NULL name or value", order);
        return -EINVAL;
    }
    nl = strnlen(name, FERRY_SIGV4_MAX_HEADER_NAME + 1);
    if (nl == 0) {
        seterr(errbuf, errlen, "sigv4: header %zu has an empty name", order);
        return -EINVAL;
    }
    if (nl > FERRY_SIGV4_MAX_HEADER_NAME) {
        seterr(errbuf, errlen, "sigv4: header %zu: name longer than %d bytes", order,
               FERRY_SIGV4_MAX_HEADER_NAME);
        return -FERRY_ETOOBIG;
    }
    for (size_t i = 0; i < nl; i++)
        if (!is_tchar((unsigned char)name[i])) {
            seterr(errbuf, errlen,
                   "sigv4: header %zu: name has byte 0x%02x, which is not a token character", order,
                   (unsigned char)name[i]);
            return -EINVAL;
        }
    vl = strnlen(value, FERRY_SIGV4_MAX_HEADER_VALUE + 1);
    if (vl > FERRY_SIGV4_MAX_HEADER_VALUE) {
        seterr(errbuf, errlen, "sigv4: header %.*s: value longer than %d bytes", (int)nl, name,
               FERRY_SIGV4_MAX_HEADER_VALUE);
        return -FERRY_ETOOBIG;
    }
    *total += nl + vl;
    if (*total > FERRY_SIGV4_MAX_HEADER_TOTAL) {
        seterr(errbuf, errlen, "sigv4: headers longer than %d bytes together",
               FERRY_SIGV4_MAX_HEADER_TOTAL);
        return -FERRY_ETOOBIG;
    }
    out->name = malloc(nl + 1);
    out->value = calloc(vl + 1, 1); /* zeroed: always terminated, even after an error */
    if (!out->name || !out->value)
        return -ENOMEM;
    for (size_t i = 0; i < nl; i++) {
        char c = name[i];
        out->name[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    out->name[nl] = '\0';
    out->order = order;
    for (size_t i = 0; i < vl; i++) {
        unsigned char c = (unsigned char)value[i];
        bool ws = c == ' ' || c == '\t';

        if (c == '\r' || c == '\n') {
            /* obs-fold only: [CR] LF followed by SP or HT */
            size_t j = i + (c == '\r');
            if (value[j] != '\n' || (value[j + 1] != ' ' && value[j + 1] != '\t')) {
                seterr(errbuf, errlen,
                       "sigv4: header %.*s: value has CR or LF outside a line folding", (int)nl,
                       name);
                return -FERRY_EMALFORMED;
            }
            i = j;
            ws = true;
        } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
            seterr(errbuf, errlen, "sigv4: header %.*s: value has control byte 0x%02x", (int)nl,
                   name, c);
            return -EINVAL;
        }
        if (ws) {
            space = k > 0;
            continue;
        }
        if (space) {
            out->value[k++] = ' ';
            space = false;
        }
        out->value[k++] = (char)c;
    }
    out->value[k] = '\0';
    return 0;
}

/* ---- path and query ------------------------------------------------------------------- */

static int canon_path(const char *path, unsigned flags, ferry_buf *out, char *errbuf, size_t errlen)
{
    size_t n;

    if (!path) {
        seterr(errbuf, errlen, "sigv4: the path is missing");
        return -EINVAL;
    }
    n = strnlen(path, FERRY_SIGV4_MAX_PATH + 1);
    if (n > FERRY_SIGV4_MAX_PATH) {
        seterr(errbuf, errlen, "sigv4: path longer than %d bytes", FERRY_SIGV4_MAX_PATH);
        return -FERRY_ETOOBIG;
    }
    if (n == 0 || path[0] != '/') {
        seterr(errbuf, errlen, "sigv4: the path must start with '/'");
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c < 0x20 || c == 0x7f || c == '?' || c == '#') {
            seterr(errbuf, errlen, "sigv4: path byte %zu is 0x%02x (control, '?' or '#')", i, c);
            return -EINVAL;
        }
    }
    if (flags & FERRY_SIGV4_S3) {
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)path[i];
            if (c == '%' && i + 2 < n && hexval((unsigned char)path[i + 1]) >= 0 &&
                hexval((unsigned char)path[i + 2]) >= 0)
                i += 2;
            else if (!is_unreserved(c) && c != '/') {
                seterr(errbuf, errlen,
                       "sigv4: S3 path byte %zu (0x%02x) is neither unreserved, '/' nor a "
                       "percent-escape",
                       i, c);
                return -FERRY_EMALFORMED;
            }
        }
        return ferry_buf_append(out, path, n);
    }
    if (flags & FERRY_SIGV4_NO_NORMALIZE)
        return append_encoded(out, path, n, true);

    /* Normalise: drop empty and "." segments, ".." removes the previous one; a trailing slash
     * stays. Segment boundaries are kept as offsets into path. */
    size_t *seg = malloc(sizeof(*seg) * (n / 2 + 2)), *len = malloc(sizeof(*len) * (n / 2 + 2));
    size_t ns = 0;
    int r = 0;

    if (!seg || !len) {
        free(seg);
        free(len);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n;) {
        size_t j = i;

        while (j < n && path[j] != '/')
            j++;
        if (j - i == 0 || (j - i == 1 && path[i] == '.')) {
            /* skip */
        } else if (j - i == 2 && path[i] == '.' && path[i + 1] == '.') {
            if (ns)
                ns--;
        } else {
            seg[ns] = i;
            len[ns++] = j - i;
        }
        i = j + 1;
    }
    for (size_t s = 0; s < ns && r >= 0; s++) {
        r = ferry_buf_append(out, "/", 1);
        if (r >= 0)
            r = append_encoded(out, path + seg[s], len[s], false);
    }
    if (r >= 0 && (ns == 0 || path[n - 1] == '/'))
        r = ferry_buf_append(out, "/", 1);
    free(seg);
    free(len);
    return r;
}

typedef struct qparam {
    char *name;  /* encoded */
    char *value; /* encoded */
} qparam;

static int qparam_cmp(const void *a, const void *b)
{
    const qparam *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static void qparams_free(qparam *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(q[i].name);
        free(q[i].value);
    }
    free(q);
}

static int encode_new(const char *p, size_t n, char **ret)
{
    ferry_buf b;
    int r;

    ferry_buf_init(&b, OUT_MAX, false);
    r = append_encoded(&b, p, n, false);
    if (r < 0) {
        ferry_buf_release(&b);
        return r;
    }
    *ret = ferry_buf_steal(&b, NULL);
    if (!*ret)
        *ret = strdup("");
    return *ret ? 0 : -ENOMEM;
}

static int qparam_add(qparam *q, size_t *nq, const char *name, size_t nlen, const char *value,
                      size_t vlen)
{
    int r;

    if (*nq >= FERRY_SIGV4_MAX_QUERY_PARAMS + 8)
        return -FERRY_ETOOBIG;
    r = encode_new(name, nlen, &q[*nq].name);
    if (r < 0)
        return r;
    r = encode_new(value, vlen, &q[*nq].value);
    if (r < 0) {
        free(q[*nq].name);
        return r;
    }
    (*nq)++;
    return 0;
}

static const char *const AUTH_PARAMS[] = {
    "X-Amz-Algorithm",     "X-Amz-Credential",     "X-Amz-Date",      "X-Amz-Expires",
    "X-Amz-SignedHeaders", "X-Amz-Security-Token", "X-Amz-Signature",
};

/* Parse the raw query into decoded-then-encoded parameters (q has room for
 * FERRY_SIGV4_MAX_QUERY_PARAMS + 8). */
static int parse_query(const char *query, bool presign, qparam *q, size_t *nq, char *errbuf,
                       size_t errlen)
{
    size_t n;

    if (!query)
        return 0;
    n = strnlen(query, FERRY_SIGV4_MAX_QUERY + 1);
    if (n > FERRY_SIGV4_MAX_QUERY) {
        seterr(errbuf, errlen, "sigv4: query longer than %d bytes", FERRY_SIGV4_MAX_QUERY);
        return -FERRY_ETOOBIG;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)query[i];
        if (c <= 0x20 || c == 0x7f || c == '#') {
            seterr(errbuf, errlen, "sigv4: query byte %zu is 0x%02x (control, space or '#')", i, c);
            return -EINVAL;
        }
    }
    for (size_t i = 0; i < n;) {
        size_t j = i, eq;
        char *dn = NULL, *dv = NULL;
        size_t dnl, dvl;
        int r;

        while (j < n && query[j] != '&')
            j++;
        if (j == i) {
            i = j + 1;
            continue;
        }
        if (*nq >= FERRY_SIGV4_MAX_QUERY_PARAMS) {
            seterr(errbuf, errlen, "sigv4: more than %d query parameters",
                   FERRY_SIGV4_MAX_QUERY_PARAMS);
            return -FERRY_ETOOBIG;
        }
        for (eq = i; eq < j && query[eq] != '='; eq++)
            ;
        r = percent_decode(query + i, eq - i, &dn, &dnl);
        if (r >= 0)
            r = percent_decode(eq < j ? query + eq + 1 : "", eq < j ? j - eq - 1 : 0, &dv, &dvl);
        if (r == -FERRY_EMALFORMED)
            seterr(errbuf, errlen, "sigv4: query parameter %zu has a bad percent-escape", *nq);
        if (r >= 0 && presign)
            for (size_t a = 0; a < ARRAY_SIZE(AUTH_PARAMS); a++)
                if (strlen(AUTH_PARAMS[a]) == dnl && memcmp(AUTH_PARAMS[a], dn, dnl) == 0) {
                    seterr(errbuf, errlen, "sigv4: the query already has %s", AUTH_PARAMS[a]);
                    r = -EINVAL;
                }
        if (r >= 0)
            r = qparam_add(q, nq, dn, dnl, dv, dvl);
        free(dn);
        free(dv);
        if (r < 0)
            return r;
        i = j + 1;
    }
    return 0;
}

/* ---- the core ------------------------------------------------------------------------- */

static int check_payload_hash(const char *h, char *errbuf, size_t errlen)
{
    size_t n = strnlen(h, 65);

    if (n == 0 || n > 64) {
        seterr(errbuf, errlen, "sigv4: the payload hash must be 1 to 64 bytes");
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (!is_alpha(c) && !is_digit(c) && c != '-') {
            seterr(errbuf, errlen, "sigv4: the payload hash has a byte outside [A-Za-z0-9-]");
            return -EINVAL;
        }
    }
    return 0;
}

static int add_out_header(ferry_sigv4_result *res, const char *name, const char *value)
{
    ferry_sigv4_out_header *h = &res->add_headers[res->n_add_headers];

    h->name = strdup(name);
    h->value = strdup(value);
    if (!h->name || !h->value) {
        free(h->name);
        free(h->value);
        h->name = h->value = NULL;
        return -ENOMEM;
    }
    res->n_add_headers++;
    return 0;
}

static char *dup_buf(ferry_buf *b)
{
    char *s = ferry_buf_steal(b, NULL);
    return s ? s : strdup("");
}

static int sign_core(const ferry_sigv4_credentials *creds, const ferry_sigv4_request *req,
                     const ferry_sigv4_params *params, bool presign, ferry_sigv4_result *res,
                     char *errbuf, size_t errlen)
{
    char amz_date[17], date8[9], payload[65], sts_hash[65], sig[65], expires[16];
    chdr *hd = NULL;
    size_t nh = 0, total = 0, nq = 0;
    qparam *q = NULL;
    ferry_buf creq, sts, sh, cq, scope, tmp;
    bool have_host = false, have_date = false;
    const char *token;
    int r;

    ferry_buf_init(&creq, OUT_MAX, false);
    ferry_buf_init(&sts, OUT_MAX, false);
    ferry_buf_init(&sh, OUT_MAX, false);
    ferry_buf_init(&cq, OUT_MAX, false);
    ferry_buf_init(&scope, OUT_MAX, false);
    ferry_buf_init(&tmp, OUT_MAX, false);

    if (!creds || !req || !params) {
        seterr(errbuf, errlen, "sigv4: NULL credentials, request or parameters");
        r = -EINVAL;
        goto out;
    }
    if (params->flags & ~(unsigned)(FERRY_SIGV4_S3 | FERRY_SIGV4_NO_NORMALIZE |
                                    FERRY_SIGV4_CONTENT_SHA256 | FERRY_SIGV4_TOKEN_UNSIGNED)) {
        seterr(errbuf, errlen, "sigv4: unknown flags 0x%x", params->flags);
        r = -EINVAL;
        goto out;
    }
    if (presign && (params->flags & FERRY_SIGV4_CONTENT_SHA256)) {
        seterr(errbuf, errlen,
               "sigv4: X-Amz-Content-Sha256 is a header; a presigned request "
               "has none");
        r = -EINVAL;
        goto out;
    }
    if (presign && (params->expires < 1 || params->expires > FERRY_SIGV4_MAX_EXPIRES)) {
        seterr(errbuf, errlen, "sigv4: expires must be 1 to %d seconds", FERRY_SIGV4_MAX_EXPIRES);
        r = -EINVAL;
        goto out;
    }
    r = check_creds(creds, errbuf, errlen);
    if (r >= 0)
        r = check_scope_part("region", params->region, errbuf, errlen);
    if (r >= 0)
        r = check_scope_part("service", params->service, errbuf, errlen);
    if (r < 0)
        goto out;
    token = creds->session_token && creds->session_token[0] ? creds->session_token : NULL;
    if (ferry_sigv4_format_date(params->time, amz_date, sizeof(amz_date)) < 0) {
        seterr(errbuf, errlen, "sigv4: signing time %lld is outside 1970..9999",
               (long long)params->time);
        r = -EINVAL;
        goto out;
    }
    memcpy(date8, amz_date, 8);
    date8[8] = '\0';

    /* method */
    {
        size_t ml;
        if (!req->method || !(ml = strnlen(req->method, FERRY_SIGV4_MAX_METHOD + 1))) {
            seterr(errbuf, errlen, "sigv4: the method is missing");
            r = -EINVAL;
            goto out;
        }
        if (ml > FERRY_SIGV4_MAX_METHOD) {
            seterr(errbuf, errlen, "sigv4: method longer than %d bytes", FERRY_SIGV4_MAX_METHOD);
            r = -FERRY_ETOOBIG;
            goto out;
        }
        for (size_t i = 0; i < ml; i++)
            if (!is_tchar((unsigned char)req->method[i])) {
                seterr(errbuf, errlen,
                       "sigv4: the method has a byte that is not a token "
                       "character");
                r = -EINVAL;
                goto out;
            }
    }

    /* payload hash */
    if (req->payload_hash) {
        r = check_payload_hash(req->payload_hash, errbuf, errlen);
        if (r < 0)
            goto out;
        memcpy(payload, req->payload_hash, strlen(req->payload_hash) + 1);
    } else {
        if (!req->body && req->body_len) {
            seterr(errbuf, errlen, "sigv4: NULL body with a length");
            r = -EINVAL;
            goto out;
        }
        if (req->body_len > FERRY_SIGV4_MAX_BODY) {
            seterr(errbuf, errlen, "sigv4: body longer than %u bytes", FERRY_SIGV4_MAX_BODY);
            r = -FERRY_ETOOBIG;
            goto out;
        }
        r = sha256_hex(req->body ? req->body : "", req->body_len, payload);
        if (r < 0) {
            seterr(errbuf, errlen, "sigv4: SHA-256 failed");
            goto out;
        }
    }

    /* headers: the request's, then the ones the signer adds and signs */
    if (req->n_headers > FERRY_SIGV4_MAX_HEADERS || (req->n_headers && !req->headers)) {
        if (req->n_headers > FERRY_SIGV4_MAX_HEADERS)
            seterr(errbuf, errlen, "sigv4: more than %d headers", FERRY_SIGV4_MAX_HEADERS);
        else
            seterr(errbuf, errlen, "sigv4: NULL headers with a count");
        r = req->n_headers > FERRY_SIGV4_MAX_HEADERS ? -FERRY_ETOOBIG : -EINVAL;
        goto out;
    }
    hd = calloc(req->n_headers + 3, sizeof(*hd));
    if (!hd) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        r = canon_header(req->headers[i].name, req->headers[i].value, i, &hd[nh++], &total, errbuf,
                         errlen);
        if (r == -ENOMEM)
            seterr(errbuf, errlen, "sigv4: out of memory");
        if (r < 0)
            goto out;
        const char *nm = hd[nh - 1].name;
        if (strcmp(nm, "host") == 0)
            have_host = true;
        else if (strcmp(nm, "authorization") == 0) {
            seterr(errbuf, errlen, "sigv4: the request already has an Authorization header");
            r = -EINVAL;
            goto out;
        } else if (strcmp(nm, "x-amz-security-token") == 0 && token) {
            seterr(errbuf, errlen,
                   "sigv4: both a session token and an X-Amz-Security-Token "
                   "header");
            r = -EINVAL;
            goto out;
        } else if (strcmp(nm, "x-amz-content-sha256") == 0 &&
                   (params->flags & FERRY_SIGV4_CONTENT_SHA256)) {
            seterr(errbuf, errlen, "sigv4: the request already has X-Amz-Content-Sha256");
            r = -EINVAL;
            goto out;
        } else if (strcmp(nm, "x-amz-date") == 0 && !presign) {
            if (strcmp(hd[nh - 1].value, amz_date) != 0) {
                seterr(errbuf, errlen,
                       "sigv4: the X-Amz-Date header is not the signing time "
                       "%s",
                       amz_date);
                r = -EINVAL;
                goto out;
            }
            have_date = true;
        }
    }
    if (!have_host) {
        seterr(errbuf, errlen, "sigv4: the request has no Host header");
        r = -EINVAL;
        goto out;
    }
    if (!presign) {
        res->add_headers = calloc(4, sizeof(*res->add_headers));
        if (!res->add_headers) {
            r = -ENOMEM;
            goto out;
        }
        struct {
            bool on, sign;
            const char *name, *value;
        } extra[] = {
            {!have_date, true, "X-Amz-Date", amz_date},
            {(params->flags & FERRY_SIGV4_CONTENT_SHA256) != 0, true, "X-Amz-Content-Sha256",
             payload},
            {token != NULL, !(params->flags & FERRY_SIGV4_TOKEN_UNSIGNED), "X-Amz-Security-Token",
             token},
        };
        for (size_t i = 0; i < ARRAY_SIZE(extra); i++) {
            if (!extra[i].on)
                continue;
            r = add_out_header(res, extra[i].name, extra[i].value);
            if (r >= 0 && extra[i].sign)
                r = canon_header(extra[i].name, extra[i].value, req->n_headers + i, &hd[nh++],
                                 &total, errbuf, errlen);
            if (r < 0)
                goto out;
        }
    }
    qsort(hd, nh, sizeof(*hd), chdr_cmp);

    /* signed headers */
    for (size_t i = 0; i < nh && r >= 0; i++)
        if (i == 0 || strcmp(hd[i].name, hd[i - 1].name) != 0) {
            if (i > 0)
                r = ferry_buf_append(&sh, ";", 1);
            if (r >= 0)
                r = ferry_buf_append_str(&sh, hd[i].name);
        }
    if (r >= 0)
        r = ferry_buf_append(&scope, date8, 8);
    if (r >= 0)
        r = ferry_buf_append(&scope, "/", 1);
    if (r >= 0)
        r = ferry_buf_append_str(&scope, params->region);
    if (r >= 0)
        r = ferry_buf_append(&scope, "/", 1);
    if (r >= 0)
        r = ferry_buf_append_str(&scope, params->service);
    if (r >= 0)
        r = ferry_buf_append_str(&scope, "/aws4_request");
    if (r < 0)
        goto nomem;

    /* canonical query */
    q = calloc(FERRY_SIGV4_MAX_QUERY_PARAMS + 8, sizeof(*q));
    if (!q)
        goto nomem;
    r = parse_query(req->query, presign, q, &nq, errbuf, errlen);
    if (r < 0)
        goto out;
    if (presign) {
        (void)snprintf(expires, sizeof(expires), "%u", params->expires);
        r = ferry_buf_append_str(&tmp, creds->access_key_id);
        if (r >= 0)
            r = ferry_buf_append(&tmp, "/", 1);
        if (r >= 0)
            r = ferry_buf_append(&tmp, scope.data, scope.len);
        if (r < 0)
            goto nomem;
        const char *auth[][2] = {
            {"X-Amz-Algorithm", ALGORITHM},   {"X-Amz-Credential", tmp.data},
            {"X-Amz-Date", amz_date},         {"X-Amz-Expires", expires},
            {"X-Amz-SignedHeaders", sh.data}, {"X-Amz-Security-Token", token},
        };
        for (size_t i = 0; i < ARRAY_SIZE(auth) && r >= 0; i++) {
            if (!auth[i][1] || (i == 5 && (params->flags & FERRY_SIGV4_TOKEN_UNSIGNED)))
                continue;
            r = qparam_add(q, &nq, auth[i][0], strlen(auth[i][0]), auth[i][1], strlen(auth[i][1]));
        }
        if (r < 0)
            goto nomem;
    }
    qsort(q, nq, sizeof(*q), qparam_cmp);
    for (size_t i = 0; i < nq && r >= 0; i++) {
        if (i > 0)
            r = ferry_buf_append(&cq, "&", 1);
        if (r >= 0)
            r = ferry_buf_append_str(&cq, q[i].name);
        if (r >= 0)
            r = ferry_buf_append(&cq, "=", 1);
        if (r >= 0)
            r = ferry_buf_append_str(&cq, q[i].value);
    }
    if (r < 0)
        goto nomem;

    /* canonical request */
    r = ferry_buf_append_str(&creq, req->method);
    if (r >= 0)
        r = ferry_buf_append(&creq, "\n", 1);
    if (r >= 0) {
        r = canon_path(req->path, params->flags, &creq, errbuf, errlen);
        if (r < 0 && r != -ENOMEM && r != -E2BIG)
            goto out;
    }
    if (r >= 0)
        r = ferry_buf_append(&creq, "\n", 1);
    if (r >= 0 && cq.len)
        r = ferry_buf_append(&creq, cq.data, cq.len);
    if (r >= 0)
        r = ferry_buf_append(&creq, "\n", 1);
    for (size_t i = 0; i < nh && r >= 0; i++) {
        bool same = i > 0 && strcmp(hd[i].name, hd[i - 1].name) == 0;
        if (same)
            r = ferry_buf_append(&creq, ",", 1);
        else {
            if (i > 0)
                r = ferry_buf_append(&creq, "\n", 1);
            if (r >= 0)
                r = ferry_buf_append_str(&creq, hd[i].name);
            if (r >= 0)
                r = ferry_buf_append(&creq, ":", 1);
        }
        if (r >= 0)
            r = ferry_buf_append_str(&creq, hd[i].value);
    }
    if (r >= 0)
        r = ferry_buf_append(&creq, "\n\n", 2);
    if (r >= 0)
        r = ferry_buf_append(&creq, sh.data, sh.len);
    if (r >= 0)
        r = ferry_buf_append(&creq, "\n", 1);
    if (r >= 0)
        r = ferry_buf_append_str(&creq, payload);
    if (r < 0)
        goto nomem;

    /* string to sign, signature */
    r = sha256_hex(creq.data, creq.len, sts_hash);
    if (r < 0) {
        seterr(errbuf, errlen, "sigv4: SHA-256 failed");
        goto out;
    }
    r = ferry_buf_append_str(&sts, ALGORITHM "\n");
    if (r >= 0)
        r = ferry_buf_append(&sts, amz_date, 16);
    if (r >= 0)
        r = ferry_buf_append(&sts, "\n", 1);
    if (r >= 0)
        r = ferry_buf_append(&sts, scope.data, scope.len);
    if (r >= 0)
        r = ferry_buf_append(&sts, "\n", 1);
    if (r >= 0)
        r = ferry_buf_append(&sts, sts_hash, 64);
    if (r < 0)
        goto nomem;
    r = derive_and_sign(creds->secret_access_key, date8, params->region, params->service, sts.data,
                        sts.len, sig);
    if (r < 0) {
        seterr(errbuf, errlen, "sigv4: HMAC-SHA256 failed");
        goto out;
    }

    /* results */
    if (!(res->amz_date = strdup(amz_date)) || !(res->payload_hash = strdup(payload)) ||
        !(res->signature = strdup(sig)) || !(res->signed_headers = strdup(sh.data)) ||
        !(res->canonical_request = dup_buf(&creq)) || !(res->string_to_sign = dup_buf(&sts)))
        goto nomem;
    ferry_buf_release(&tmp);
    if (presign) {
        if (!(res->canonical_query = dup_buf(&cq)))
            goto nomem;
        /* The request's query as given, then the parameters in the order the suites show. */
        size_t ql = req->query ? strlen(req->query) : 0;
        r = ql ? ferry_buf_append(&tmp, req->query, ql) : 0;
        if (r >= 0 && ql && req->query[ql - 1] != '&')
            r = ferry_buf_append(&tmp, "&", 1);
        const char *order[][2] = {
            {"X-Amz-Algorithm", ALGORITHM}, {"X-Amz-Credential", NULL},
            {"X-Amz-Date", amz_date},       {"X-Amz-SignedHeaders", sh.data},
            {"X-Amz-Expires", expires},     {"X-Amz-Security-Token", token},
            {"X-Amz-Signature", sig},
        };
        for (size_t i = 0; i < ARRAY_SIZE(order) && r >= 0; i++) {
            if (i == 5 && !token)
                continue;
            r = ferry_buf_append_str(&tmp, order[i][0]);
            if (r >= 0)
                r = ferry_buf_append(&tmp, "=", 1);
            if (r < 0)
                break;
            if (i == 1) {
                r = append_encoded(&tmp, creds->access_key_id, strlen(creds->access_key_id), false);
                if (r >= 0)
                    r = append_encoded(&tmp, "/", 1, false);
                if (r >= 0)
                    r = append_encoded(&tmp, scope.data, scope.len, false);
            } else
                r = append_encoded(&tmp, order[i][1], strlen(order[i][1]), false);
            if (r >= 0 && i + 1 < ARRAY_SIZE(order))
                r = ferry_buf_append(&tmp, "&", 1);
        }
        if (r < 0 || !(res->query = dup_buf(&tmp)))
            goto nomem;
    } else {
        r = ferry_buf_append_str(&tmp, ALGORITHM " Credential=");
        if (r >= 0)
            r = ferry_buf_append_str(&tmp, creds->access_key_id);
        if (r >= 0)
            r = ferry_buf_append(&tmp, "/", 1);
        if (r >= 0)
            r = ferry_buf_append(&tmp, scope.data, scope.len);
        if (r >= 0)
            r = ferry_buf_append_str(&tmp, ", SignedHeaders=");
        if (r >= 0)
            r = ferry_buf_append(&tmp, sh.data, sh.len);
        if (r >= 0)
            r = ferry_buf_append_str(&tmp, ", Signature=");
        if (r >= 0)
            r = ferry_buf_append(&tmp, sig, 64);
        if (r < 0 || !(res->authorization = dup_buf(&tmp)))
            goto nomem;
        r = add_out_header(res, "Authorization", res->authorization);
        if (r < 0)
            goto nomem;
    }
    r = 0;
    goto out;

nomem:
    if (r == -E2BIG) {
        seterr(errbuf, errlen, "sigv4: the canonical request is longer than %u bytes", OUT_MAX);
        r = -FERRY_ETOOBIG;
    } else {
        seterr(errbuf, errlen, "sigv4: out of memory");
        r = -ENOMEM;
    }
out:
    if (r < 0 && errbuf && errlen && !errbuf[0])
        seterr(errbuf, errlen, "sigv4: %s", ferry_strerror(r));
    ferry_wipe(sig, sizeof(sig));
    for (size_t i = 0; hd && i < nh; i++) {
        free(hd[i].name);
        if (hd[i].value)
            ferry_wipe(hd[i].value, strlen(hd[i].value)); /* may hold the session token */
        free(hd[i].value);
    }
    free(hd);
    if (q)
        qparams_free(q, nq);
    ferry_buf_release(&creq);
    ferry_buf_release(&sts);
    ferry_buf_release(&sh);
    ferry_buf_release(&cq);
    ferry_buf_release(&scope);
    ferry_buf_release(&tmp);
    return r;
}

FERRY_EXPORT void ferry_sigv4_result_clear(ferry_sigv4_result *r)
{
    if (!r)
        return;
    char **s[] = {&r->amz_date,       &r->payload_hash,    &r->canonical_request,
                  &r->string_to_sign, &r->signature,       &r->signed_headers,
                  &r->authorization,  &r->canonical_query, &r->query};
    for (size_t i = 0; i < ARRAY_SIZE(s); i++)
        ferry_free_secret_str(*s[i]);
    for (size_t i = 0; r->add_headers && i < r->n_add_headers; i++) {
        free(r->add_headers[i].name);
        ferry_free_secret_str(r->add_headers[i].value);
    }
    free(r->add_headers);
    memset(r, 0, sizeof(*r));
}

static int sign_entry(const ferry_sigv4_credentials *creds, const ferry_sigv4_request *req,
                      const ferry_sigv4_params *params, bool presign, ferry_sigv4_result *ret,
                      char *errbuf, size_t errlen)
{
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!ret) {
        seterr(errbuf, errlen, "sigv4: NULL result");
        return -EINVAL;
    }
    memset(ret, 0, sizeof(*ret));
    r = sign_core(creds, req, params, presign, ret, errbuf, errlen);
    if (r < 0)
        ferry_sigv4_result_clear(ret);
    return r;
}

FERRY_EXPORT int ferry_sigv4_sign(const ferry_sigv4_credentials *creds,
                                  const ferry_sigv4_request *req, const ferry_sigv4_params *params,
                                  ferry_sigv4_result *ret, char *errbuf, size_t errlen)
{
    return sign_entry(creds, req, params, false, ret, errbuf, errlen);
}

FERRY_EXPORT int ferry_sigv4_presign(const ferry_sigv4_credentials *creds,
                                     const ferry_sigv4_request *req,
                                     const ferry_sigv4_params *params, ferry_sigv4_result *ret,
                                     char *errbuf, size_t errlen)
{
    return sign_entry(creds, req, params, true, ret, errbuf, errlen);
}
