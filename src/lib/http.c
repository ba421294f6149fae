/* lib/http.c - the one outbound HTTP client of libferry, on libcurl.
 *
 * Design:
 * - Every URL, the first one and every redirect target, goes through url_parse(): a raw
 *   byte check (printable ASCII only, so no NUL/CR/LF/space can reach libcurl), an explicit
 *   "https://" or "http://" prefix, then curl's own URL parser (CURLU) so that what is checked
 *   is exactly what libcurl will connect to. Userinfo, login options and IPv6 zone ids are
 *   refused. Plain http is allowed only with allow_http_loopback and only to the literal
 *   addresses 127.0.0.1 and [::1] (after curl's normalisation, so 127.1 counts as 127.0.0.1);
 *   host names such as "localhost" are refused because their resolution is not ours to trust.
 * - libcurl never follows redirects (CURLOPT_FOLLOWLOCATION off). This module does, at most
 *   max_redirects hops, resolving Location against the current URL with CURLU. Each target
 *   must pass ferry_http_check_url() again and keep the origin (scheme, host, port) of the
 *   original request: https never downgrades to http and a redirect never moves to another
 *   host (BRIEF: "no redirects to other hosts"; SECURITY-TESTS F6). One deadline covers all
 *   hops.
 * - The body is collected in a ferry_buf whose maximum is the cap; the write callback aborts
 *   the transfer as soon as it would grow past it, and CURLOPT_MAXFILESIZE_LARGE refuses a
 *   declared Content-Length over the cap before any body byte is read. Content decoding is
 *   off, so the cap is on the bytes that came over the wire (no decompression bombs).
 * - Proxies: CURLOPT_PROXY is always set, to the configured proxy or to "" (which makes
 *   libcurl ignore http_proxy/https_proxy/ALL_PROXY), and CURLOPT_NOPROXY to "" so NO_PROXY
 *   cannot route around a configured proxy either.
 * - ca_file, when set, replaces the system trust store (CURLOPT_CAINFO, CURLOPT_CAPATH NULL):
 *   an issuer pinned to a private CA trusts only that CA.
 * - HTTP/1.1 only, TLS 1.2 or later, no cookies, no auth, no .netrc, no Expect, no
 *   Accept-Encoding. The library never prints: libcurl's verbose mode stays off.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/rand.h>

#include "basic/buf.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/http.h"

#define HTTP_DEFAULT_CONNECT_MS 3000L
#define HTTP_DEFAULT_TOTAL_MS 10000L
#define HTTP_MAX_TIMEOUT_MS (10L * 60 * 1000)
#define HTTP_DEFAULT_MAX_RESPONSE ((size_t)256 * 1024)
#define HTTP_MAX_RESPONSE_CEILING ((size_t)64 * 1024 * 1024)
#define HTTP_URL_MAX 8192
#define HTTP_HEADER_VALUE_MAX 1024       /* Content-Type, Cache-Control */
#define HTTP_HEADERS_MAX (64 * 1024)     /* all header bytes of one response */
#define HTTP_LOW_SPEED_LIMIT 64L         /* bytes/s ... */
#define HTTP_LOW_SPEED_TIME 5L           /* ... averaged over this many seconds */
#define HTTP_MAX_AGE_CEILING 2147483647L /* RFC 9111 §1.2.2: treat larger values as 2^31 */
#define HTTP_CACHE_CONTROL_MAX 4096
#define HTTP_REQUEST_HEADER_MAX 20000           /* one request header line */
#define HTTP_REQUEST_HEADERS_MAX 32             /* request headers of ferry_http_request_send */
#define HTTP_REQUEST_BODY_MAX ((size_t)1 << 20) /* request body bytes */

DEFINE_TRIVIAL_CLEANUP_FUNC(CURL *, curl_easy_cleanup)
DEFINE_TRIVIAL_CLEANUP_FUNC(CURLU *, curl_url_cleanup)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct curl_slist *, curl_slist_free_all)

static inline void curl_freep(char **p)
{
    curl_free(*p);
}
#define _cleanup_curl_free_ _cleanup_(curl_freep)

/* ---- options -------------------------------------------------------------------------- */

typedef struct http_limits {
    long connect_ms;
    long total_ms;
    size_t max_response;
    int max_redirects;
    const char *ca_file;
    const char *proxy;
    bool allow_http_loopback;
} http_limits;

static bool printable_ascii(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f)
            return false;
    }
    return true;
}

/* Header field values: visible ASCII, SP and HTAB. */
static bool printable_ascii_or_space(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c >= 0x7f)
            return false;
    }
    return true;
}

static int limits_from(const ferry_http_options *opts, http_limits *ret)
{
    http_limits l = {
        .connect_ms = HTTP_DEFAULT_CONNECT_MS,
        .total_ms = HTTP_DEFAULT_TOTAL_MS,
        .max_response = HTTP_DEFAULT_MAX_RESPONSE,
        .max_redirects = FERRY_HTTP_MAX_REDIRECTS,
    };

    if (opts) {
        if (opts->connect_timeout_ms < 0 || opts->connect_timeout_ms > HTTP_MAX_TIMEOUT_MS ||
            opts->total_timeout_ms < 0 || opts->total_timeout_ms > HTTP_MAX_TIMEOUT_MS ||
            opts->max_response > HTTP_MAX_RESPONSE_CEILING || opts->max_redirects < -1 ||
            opts->max_redirects > FERRY_HTTP_MAX_REDIRECTS)
            return -FERRY_ECONFIG;
        if (opts->connect_timeout_ms)
            l.connect_ms = opts->connect_timeout_ms;
        if (opts->total_timeout_ms)
            l.total_ms = opts->total_timeout_ms;
        if (opts->max_response)
            l.max_response = opts->max_response;
        if (opts->max_redirects >= 0)
            l.max_redirects = opts->max_redirects;
        l.ca_file = opts->ca_file;
        l.allow_http_loopback = opts->allow_http_loopback;
        if (opts->proxy) {
            size_t n = strnlen(opts->proxy, HTTP_URL_MAX + 1);
            /* An explicit proxy is configuration: http:// or https:// only, no odd bytes. An
             * empty string would silently mean "no proxy", so it is refused too. */
            if (n == 0 || n > HTTP_URL_MAX || !printable_ascii(opts->proxy, n) ||
                (strncasecmp(opts->proxy, "http://", 7) != 0 &&
                 strncasecmp(opts->proxy, "https://", 8) != 0))
                return -FERRY_ECONFIG;
            l.proxy = opts->proxy;
        }
    }
    if (l.connect_ms > l.total_ms)
        l.connect_ms = l.total_ms;
    *ret = l;
    return 0;
}

/* ---- URL policy ----------------------------------------------------------------------- */

/* The parts of an already parsed URL: scheme, no userinfo, no zone id, loopback for http. */
static int url_check_parts(CURLU *u, bool allow_http_loopback)
{
    _cleanup_curl_free_ char *scheme = NULL, *host = NULL, *user = NULL, *password = NULL,
                             *options = NULL, *zone = NULL;
    CURLUcode rc;

    rc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    if (rc == CURLUE_OUT_OF_MEMORY)
        return -ENOMEM;
    if (rc != CURLUE_OK)
        return -FERRY_EPOLICY;

    /* Any userinfo at all, even an empty one ("https://@host/"), is refused: credentials never
     * travel in URLs, and "@" is the classic way to disguise the real host. */
    if (curl_url_get(u, CURLUPART_USER, &user, 0) != CURLUE_NO_USER ||
        curl_url_get(u, CURLUPART_PASSWORD, &password, 0) != CURLUE_NO_PASSWORD ||
        curl_url_get(u, CURLUPART_OPTIONS, &options, 0) != CURLUE_NO_OPTIONS ||
        curl_url_get(u, CURLUPART_ZONEID, &zone, 0) != CURLUE_NO_ZONEID)
        return -FERRY_EPOLICY;

    rc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    if (rc == CURLUE_OUT_OF_MEMORY)
        return -ENOMEM;
    if (rc != CURLUE_OK || !host[0])
        return -FERRY_EPOLICY;

    if (strcmp(scheme, "https") == 0)
        return 0;
    if (strcmp(scheme, "http") == 0 && allow_http_loopback &&
        (strcmp(host, "127.0.0.1") == 0 || strcmp(host, "[::1]") == 0))
        return 0;
    return -FERRY_EPOLICY;
}

/* Parse and check an absolute URL. On success *ret_u is a new CURLU (curl_url_cleanup). */
static int url_parse(const char *url, bool allow_http_loopback, CURLU **ret_u)
{
    _cleanup_(curl_url_cleanupp) CURLU *u = NULL;
    size_t len, prefix;
    CURLUcode rc;
    int r;

    if (!url)
        return -EINVAL;
    len = strnlen(url, HTTP_URL_MAX + 1);
    if (len == 0 || len > HTTP_URL_MAX || !printable_ascii(url, len))
        return -FERRY_EPOLICY;
    /* curl's parser is lenient about "https:/host" and "https:///host"; ferry is not. */
    if (strncasecmp(url, "https://", 8) == 0)
        prefix = 8;
    else if (strncasecmp(url, "http://", 7) == 0)
        prefix = 7;
    else
        return -FERRY_EPOLICY;
    if (url[prefix] == '/' || url[prefix] == '\0')
        return -FERRY_EPOLICY;

    u = curl_url();
    if (!u)
        return -ENOMEM;
    rc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (rc == CURLUE_OUT_OF_MEMORY)
        return -ENOMEM;
    if (rc != CURLUE_OK)
        return -FERRY_EPOLICY;
    r = url_check_parts(u, allow_http_loopback);
    if (r < 0)
        return r;
    *ret_u = TAKE_PTR(u);
    return 0;
}

/* Check url against the module's rules without fetching: absolute http(s) URL of printable
 * ASCII (at most 8 KiB), no userinfo or zone id, https always, http only with
 * opts->allow_http_loopback and only to 127.0.0.1 or [::1]. opts may be NULL (defaults).
 * Returns 0, -FERRY_EPOLICY, -EINVAL (url NULL) or -ENOMEM. Thread-safe. */
FERRY_EXPORT int ferry_http_check_url(const char *url, const ferry_http_options *opts)
{
    _cleanup_(curl_url_cleanupp) CURLU *u = NULL;

    return url_parse(url, opts && opts->allow_http_loopback, &u);
}

/* Same scheme, host (case-insensitively) and port, default ports made explicit. */
static int same_origin(CURLU *a, CURLU *b)
{
    static const CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT};

    for (size_t i = 0; i < ARRAY_SIZE(parts); i++) {
        _cleanup_curl_free_ char *x = NULL, *y = NULL;
        CURLUcode ra = curl_url_get(a, parts[i], &x, CURLU_DEFAULT_PORT);
        CURLUcode rb = curl_url_get(b, parts[i], &y, CURLU_DEFAULT_PORT);

        if (ra == CURLUE_OUT_OF_MEMORY || rb == CURLUE_OUT_OF_MEMORY)
            return -ENOMEM;
        if (ra != CURLUE_OK || rb != CURLUE_OK || strcasecmp(x, y) != 0)
            return -FERRY_EPOLICY;
    }
    return 0;
}

/* Resolve location against the URL in cur, check the result like a new request and require
 * the origin of cur. On success *ret_url is the new absolute URL (curl_free) and *ret_u its
 * parsed form. */
static int redirect_target(CURLU *cur, const char *location, bool allow_http_loopback,
                           char **ret_url, CURLU **ret_u)
{
    _cleanup_(curl_url_cleanupp) CURLU *next = NULL, *checked = NULL;
    _cleanup_curl_free_ char *url = NULL;
    size_t len = strnlen(location, HTTP_URL_MAX + 1);
    CURLUcode rc;
    int r;

    if (len == 0 || len > HTTP_URL_MAX || !printable_ascii(location, len))
        return -FERRY_EPOLICY;
    next = curl_url_dup(cur);
    if (!next)
        return -ENOMEM;
    /* Setting a relative URL on a handle resolves it against the handle's URL (RFC 3986 §5);
     * no CURLU_ALLOW_SPACE, no default or guessed scheme. */
    rc = curl_url_set(next, CURLUPART_URL, location, 0);
    if (rc == CURLUE_OUT_OF_MEMORY)
        return -ENOMEM;
    if (rc != CURLUE_OK)
        return -FERRY_EPOLICY;
    rc = curl_url_get(next, CURLUPART_URL, &url, 0);
    if (rc == CURLUE_OUT_OF_MEMORY)
        return -ENOMEM;
    if (rc != CURLUE_OK)
        return -FERRY_EPOLICY;
    /* The resolved URL must pass exactly the check a configured URL passes. */
    r = url_parse(url, allow_http_loopback, &checked);
    if (r < 0)
        return r;
    r = same_origin(cur, checked);
    if (r < 0)
        return r;
    *ret_url = TAKE_PTR(url);
    *ret_u = TAKE_PTR(checked);
    return 0;
}

/* Retry-After (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date, as seconds from now
 * (a date in the past is 0), capped at FERRY_HTTP_RETRY_AFTER_MAX; -1 when absent or not
 * one of the two forms. */
static long http_retry_after(const char *v, time_t now)
{
    if (!v || !*v)
        return -1;
    if (v[0] >= '0' && v[0] <= '9') {
        long secs = 0;
        for (const char *p = v; *p; p++) {
            if (*p < '0' || *p > '9')
                return -1;
            if (secs < FERRY_HTTP_RETRY_AFTER_MAX)
                secs = secs * 10 + (*p - '0');
        }
        return secs < FERRY_HTTP_RETRY_AFTER_MAX ? secs : FERRY_HTTP_RETRY_AFTER_MAX;
    }
    time_t when = curl_getdate(v, NULL);
    if (when == (time_t)-1)
        return -1;
    if (when <= now)
        return 0;
    return when - now < FERRY_HTTP_RETRY_AFTER_MAX ? (long)(when - now)
                                                   : FERRY_HTTP_RETRY_AFTER_MAX;
}

/* ---- one transfer --------------------------------------------------------------------- */

typedef struct http_transfer {
    ferry_buf body;
    size_t header_bytes;
    bool too_big; /* body or headers over their cap */
    bool nomem;
    bool secret;       /* body buffer wipes what it frees (ferry_buf secret mode) */
    bool bad_location; /* Location repeated, too long or not printable */
    bool bad_ctype;
    bool bad_cache_control;
    bool bad_retry_after;
    bool bad_www_auth;
    char *content_type;
    char *cache_control;
    char *location;
    char *retry_after;
    char *www_auth;
} http_transfer;

/* Forget the headers of a response (a new status line, or a reset). */
static void transfer_forget_headers(http_transfer *t)
{
    free(t->content_type);
    free(t->cache_control);
    free(t->location);
    free(t->retry_after);
    free(t->www_auth);
    t->content_type = t->cache_control = t->location = t->retry_after = t->www_auth = NULL;
    t->bad_location = t->bad_ctype = t->bad_cache_control = false;
    t->bad_retry_after = t->bad_www_auth = false;
}

static void transfer_reset(http_transfer *t, size_t max_response)
{
    ferry_buf_release(&t->body);
    ferry_buf_init(&t->body, max_response, t->secret);
    t->header_bytes = 0;
    t->too_big = t->nomem = false;
    transfer_forget_headers(t);
}

static void transfer_release(http_transfer *t)
{
    transfer_reset(t, 0);
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    http_transfer *t = userdata;
    size_t n = size * nmemb; /* curl guarantees size == 1 */
    int r = ferry_buf_append(&t->body, ptr, n);

    if (r == -E2BIG)
        t->too_big = true;
    else if (r < 0)
        t->nomem = true;
    return r < 0 ? 0 : n;
}

/* Store a header value (already trimmed) in *slot; a repeated header is joined with ", " when
 * joinable (a list-valued field such as Cache-Control), otherwise marked bad. */
static void header_store(http_transfer *t, char **slot, bool *bad, const char *v, size_t len,
                         size_t max, bool joinable)
{
    size_t old = *slot ? strlen(*slot) : 0;
    size_t need = old + (old ? 2 : 0) + len;
    char *n;

    if (*bad)
        return;
    if ((*slot && !joinable) || need > max || !printable_ascii_or_space(v, len)) {
        *bad = true;
        return;
    }
    n = realloc(*slot, need + 1);
    if (!n) {
        t->nomem = true;
        return;
    }
    if (old)
        memcpy(n + old, ", ", 2);
    memcpy(n + need - len, v, len);
    n[need] = '\0';
    *slot = n;
}

static bool header_is(const char *line, size_t len, const char *name, size_t *ret_value)
{
    size_t n = strlen(name);

    if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0)
        return false;
    *ret_value = n + 1;
    return true;
}

static size_t header_cb(char *line, size_t size, size_t nitems, void *userdata)
{
    http_transfer *t = userdata;
    size_t n = size * nitems, len = n, v;

    t->header_bytes += n;
    if (t->header_bytes > HTTP_HEADERS_MAX) {
        t->too_big = true;
        return 0;
    }
    /* A status line starts a new response (an interim 1xx); forget what came before. */
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        transfer_forget_headers(t);
        return n;
    }
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;

    char **slot;
    bool *bad, joinable;
    size_t max;
    if (header_is(line, len, "Content-Type", &v)) {
        slot = &t->content_type, bad = &t->bad_ctype, max = HTTP_HEADER_VALUE_MAX;
        joinable = false;
    } else if (header_is(line, len, "Cache-Control", &v)) {
        slot = &t->cache_control, bad = &t->bad_cache_control, max = HTTP_HEADER_VALUE_MAX;
        joinable = true;
    } else if (header_is(line, len, "Location", &v)) {
        slot = &t->location, bad = &t->bad_location, max = HTTP_URL_MAX;
        joinable = false;
    } else if (header_is(line, len, "Retry-After", &v)) {
        slot = &t->retry_after, bad = &t->bad_retry_after, max = HTTP_HEADER_VALUE_MAX;
        joinable = false;
    } else if (header_is(line, len, "WWW-Authenticate", &v)) {
        slot = &t->www_auth, bad = &t->bad_www_auth, max = HTTP_HEADER_VALUE_MAX;
        joinable = true;
    } else
        return n;

    while (v < len && (line[v] == ' ' || line[v] == '\t'))
        v++;
    while (len > v && (line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    header_store(t, slot, bad, line + v, len - v, max, joinable);
    return t->nomem ? 0 : n;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int curl_error(CURLcode cr, const http_transfer *t)
{
    if (t->too_big)
        return -FERRY_ETOOBIG;
    if (t->nomem)
        return -ENOMEM;
    switch (cr) {
    case CURLE_OK:
        return 0;
    case CURLE_FILESIZE_EXCEEDED:
        return -FERRY_ETOOBIG;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    case CURLE_UNSUPPORTED_PROTOCOL:
        return -FERRY_EPOLICY;
    default:
        return -FERRY_EFETCH;
    }
}

static bool is_redirect(long status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/* Options that stay the same on every hop. Any failure fails the request closed. */
static int easy_setup(CURL *h, const http_limits *l, bool https, struct curl_slist *headers,
                      http_transfer *t)
{
    const char *proto = https ? "https" : "http";
    CURLcode c = CURLE_OK;

#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (c == CURLE_OK)                                                                         \
            c = curl_easy_setopt(h, opt, val);                                                     \
    } while (0)

    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_VERBOSE, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
    SET(CURLOPT_PROTOCOLS_STR, proto);
    SET(CURLOPT_REDIR_PROTOCOLS_STR, proto);
#else
    SET(CURLOPT_PROTOCOLS, https ? (long)CURLPROTO_HTTPS : (long)CURLPROTO_HTTP);
    SET(CURLOPT_REDIR_PROTOCOLS, https ? (long)CURLPROTO_HTTPS : (long)CURLPROTO_HTTP);
#endif
    (void)proto;
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_MAXREDIRS, 0L);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (l->ca_file) {
        SET(CURLOPT_CAINFO, l->ca_file);
        SET(CURLOPT_CAPATH, (char *)NULL);
    }
    SET(CURLOPT_PROXY, l->proxy ? l->proxy : "");
    SET(CURLOPT_NOPROXY, "");
    SET(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SET(CURLOPT_HTTPGET, 1L);
    SET(CURLOPT_HTTPHEADER, headers);
    SET(CURLOPT_USERAGENT, "ferry/" PACKAGE_VERSION);
    SET(CURLOPT_NETRC, (long)CURL_NETRC_IGNORED);
    SET(CURLOPT_HTTP_CONTENT_DECODING, 0L);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)l->max_response);
    SET(CURLOPT_LOW_SPEED_LIMIT, HTTP_LOW_SPEED_LIMIT);
    SET(CURLOPT_LOW_SPEED_TIME, HTTP_LOW_SPEED_TIME);
    SET(CURLOPT_WRITEFUNCTION, write_cb);
    SET(CURLOPT_WRITEDATA, t);
    SET(CURLOPT_HEADERFUNCTION, header_cb);
    SET(CURLOPT_HEADERDATA, t);
#undef SET
    if (c == CURLE_OUT_OF_MEMORY)
        return -ENOMEM;
    return c == CURLE_OK ? 0 : -FERRY_EFETCH;
}

static char *strdup_or_null(const char *s, bool *nomem)
{
    char *d;

    if (!s)
        return NULL;
    d = strdup(s);
    if (!d)
        *nomem = true;
    return d;
}

/* GET url, following at most max_redirects same-origin redirects, all within one total
 * timeout. opts may be NULL (defaults). On success (any final HTTP status; a redirect with a
 * Location is followed or refused, never returned) fills *ret_resp (release with
 * ferry_http_response_release); body is never NULL.
 * Returns 0, -FERRY_EPOLICY (URL, redirect or redirect count refused), -FERRY_ETOOBIG (body
 * or headers over their caps), -FERRY_EFETCH (network, TLS, timeout), -FERRY_ECONFIG (invalid
 * options), -EINVAL or -ENOMEM. Thread-safe; never prints. */
static bool is_tchar(unsigned char c);

static bool request_header_ok(const char *hdr)
{
    const char *colon = hdr ? strchr(hdr, ':') : NULL;
    size_t len;

    if (!colon || colon == hdr)
        return false;
    len = strlen(hdr);
    if (len > HTTP_REQUEST_HEADER_MAX || !printable_ascii_or_space(hdr, len))
        return false;
    for (const char *p = hdr; p < colon; p++)
        if (!is_tchar((unsigned char)*p))
            return false;
    /* Headers this module owns. */
    if ((size_t)(colon - hdr) == 6 && strncasecmp(hdr, "Expect", 6) == 0)
        return false;
    if ((size_t)(colon - hdr) == 14 && strncasecmp(hdr, "Content-Length", 14) == 0)
        return false;
    if ((size_t)(colon - hdr) == 17 && strncasecmp(hdr, "Transfer-Encoding", 17) == 0)
        return false;
    return true;
}

static int http_do(const ferry_http_request *req, const ferry_http_options *opts,
                   ferry_http_response *ret_resp)
{
    const char *url = req->url;
    bool post = strcmp(req->method, "POST") == 0;
    _cleanup_(curl_easy_cleanupp) CURL *h = NULL;
    _cleanup_(curl_url_cleanupp) CURLU *cur = NULL;
    _cleanup_(curl_slist_free_allp) struct curl_slist *headers = NULL;
    _cleanup_(transfer_release) http_transfer t = {0};
    _cleanup_curl_free_ char *cur_url = NULL;
    _cleanup_curl_free_ char *scheme = NULL;
    ferry_http_response resp = {0};
    http_limits l;
    int64_t deadline;
    long status = 0;
    int r, hops;
    bool nomem = false;

    if (!url || !ret_resp)
        return -EINVAL;
    r = limits_from(opts, &l);
    if (r < 0)
        return r;
    r = ferry_http_global_init();
    if (r < 0)
        return r;
    r = url_parse(url, l.allow_http_loopback, &cur);
    if (r < 0)
        return r;
    if (curl_url_get(cur, CURLUPART_URL, &cur_url, 0) != CURLUE_OK ||
        curl_url_get(cur, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
        return -ENOMEM;

    struct curl_slist *tmp = NULL;
    bool has_accept = false;
    for (size_t i = 0; i < req->n_headers; i++) {
        if (strncasecmp(req->headers[i], "Accept:", 7) == 0)
            has_accept = true;
        tmp = curl_slist_append(headers, req->headers[i]);
        if (!tmp)
            return -ENOMEM;
        headers = tmp;
    }
    if (!has_accept) {
        tmp = curl_slist_append(headers, "Accept: application/json");
        if (!tmp)
            return -ENOMEM;
        headers = tmp;
    }
    /* An empty value removes a header curl would add on its own. */
    tmp = curl_slist_append(headers, "Expect:");
    if (!tmp)
        return -ENOMEM;
    headers = tmp;

    h = curl_easy_init();
    if (!h)
        return -ENOMEM;
    t.secret = req->sensitive;
    ferry_buf_init(&t.body, l.max_response, t.secret);
    r = easy_setup(h, &l, strcmp(scheme, "https") == 0, headers, &t);
    if (r < 0)
        return r;
    if (post) {
        /* The body is sent from the caller's buffer (no copy); an empty body is sent as
         * Content-Length: 0. libcurl never follows a redirect here (this module refuses one
         * for a POST below), so the body goes to exactly the URL checked. */
        if (curl_easy_setopt(h, CURLOPT_POST, 1L) != CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body_len ? req->body : "") != CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len) != CURLE_OK)
            return -ENOMEM;
    }

    deadline = now_ms() + l.total_ms;
    for (hops = 0;; hops++) {
        int64_t left = deadline - now_ms();
        CURLcode cr;

        if (left <= 0)
            return -FERRY_EFETCH;
        transfer_reset(&t, l.max_response);
        if (curl_easy_setopt(h, CURLOPT_URL, cur_url) != CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)left) != CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                             (long)(left < l.connect_ms ? left : l.connect_ms)) != CURLE_OK)
            return -ENOMEM;
        cr = curl_easy_perform(h);
        r = curl_error(cr, &t);
        if (r < 0)
            return r;
        if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
            return -FERRY_EFETCH;
        if (!is_redirect(status))
            break;
        if (t.bad_location)
            return -FERRY_EPOLICY;
        if (!t.location)
            break; /* a 3xx without a target is an answer like any other */
        if (post || hops >= l.max_redirects)
            return -FERRY_EPOLICY;

        _cleanup_(curl_url_cleanupp) CURLU *next = NULL;
        char *next_url = NULL;
        r = redirect_target(cur, t.location, l.allow_http_loopback, &next_url, &next);
        if (r < 0)
            return r;
        curl_free(cur_url);
        cur_url = next_url;
        curl_url_cleanup(cur);
        cur = TAKE_PTR(next);
    }

    resp.status = status;
    resp.body = ferry_buf_steal(&t.body, &resp.body_len);
    if (!resp.body)
        resp.body = strdup_or_null("", &nomem);
    resp.sensitive = t.secret;
    resp.content_type = t.bad_ctype ? NULL : strdup_or_null(t.content_type, &nomem);
    resp.cache_control = t.bad_cache_control ? NULL : strdup_or_null(t.cache_control, &nomem);
    resp.www_authenticate = t.bad_www_auth ? NULL : strdup_or_null(t.www_auth, &nomem);
    resp.retry_after = t.bad_retry_after ? -1 : http_retry_after(t.retry_after, time(NULL));
    resp.final_url = strdup_or_null(cur_url, &nomem);
    resp.redirects = hops;
    if (nomem) {
        ferry_http_response_release(&resp);
        return -ENOMEM;
    }
    *ret_resp = resp;
    return 0;
}

FERRY_EXPORT int ferry_http_get(const char *url, const ferry_http_options *opts,
                                ferry_http_response *ret_resp)
{
    ferry_http_request req = {.method = "GET", .url = url};

    if (!url || !ret_resp)
        return -EINVAL;
    return http_do(&req, opts, ret_resp);
}

/* GET or POST with the caller's headers and body; see ferry/http.h. */
FERRY_EXPORT int ferry_http_request_send(const ferry_http_request *req,
                                         const ferry_http_options *opts,
                                         ferry_http_response *ret_resp)
{
    if (!req || !req->url || !req->method || !ret_resp || (req->n_headers && !req->headers) ||
        (req->body_len && !req->body))
        return -EINVAL;
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "POST") != 0)
        return -EINVAL;
    if (strcmp(req->method, "GET") == 0 && req->body_len)
        return -EINVAL;
    if (req->n_headers > HTTP_REQUEST_HEADERS_MAX || req->body_len > HTTP_REQUEST_BODY_MAX)
        return -FERRY_ETOOBIG;
    for (size_t i = 0; i < req->n_headers; i++)
        if (!request_header_ok(req->headers[i]))
            return -EINVAL;
    return http_do(req, opts, ret_resp);
}

/* Free the members of resp and zero it; accepts NULL and an already released response. */
FERRY_EXPORT void ferry_http_response_release(ferry_http_response *resp)
{
    if (!resp)
        return;
    if (resp->body && resp->sensitive)
        ferry_wipe(resp->body, resp->body_len);
    free(resp->body);
    free(resp->content_type);
    free(resp->cache_control);
    free(resp->www_authenticate);
    free(resp->final_url);
    *resp = (ferry_http_response){0};
}

/* ---- global init ---------------------------------------------------------------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_result;

static void global_init_once(void)
{
    global_result = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -FERRY_ECRYPTO;
}

/* Initialise libcurl (and through it the TLS library) once per process. Idempotent and
 * safe to call from several threads (pthread_once); ferry_http_get calls it too. Returns 0
 * or -FERRY_ECRYPTO. libcurl is never deinitialised: other users in the process may share
 * it. */
FERRY_EXPORT int ferry_http_global_init(void)
{
    if (pthread_once(&global_once, global_init_once) != 0)
        return -FERRY_ECRYPTO;
    return global_result;
}

/* ---- Cache-Control -------------------------------------------------------------------- */

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Parse delta-seconds (RFC 9111 §1.2.2): one or more digits, clamped to 2^31 - 1. */
static long delta_seconds(const char *s, size_t len)
{
    long v = 0;

    if (len == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (v > (HTTP_MAX_AGE_CEILING - (s[i] - '0')) / 10)
            v = HTTP_MAX_AGE_CEILING;
        else
            v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Lifetime in seconds from a Cache-Control value (RFC 9111 §5.2): 0 when "no-store" or
 * "no-cache" is present, else the value of "max-age" (clamped to 2^31 - 1), else -1. Also -1
 * for NULL, a value over 4 KiB, any syntax error (bad token, unterminated quoted string,
 * max-age without a decimal value) and for max-age given twice, so garbage never yields a
 * lifetime. Directive names are case-insensitive; quoted values are accepted. Thread-safe. */
FERRY_EXPORT bool ferry_http_media_type_is(const char *content_type, const char *media_type)
{
    size_t n;

    if (!content_type || !media_type)
        return false;
    n = strcspn(content_type, ";");
    while (n && (content_type[n - 1] == ' ' || content_type[n - 1] == '\t'))
        n--;
    return n == strlen(media_type) && strncasecmp(content_type, media_type, n) == 0;
}

FERRY_EXPORT long ferry_http_cache_max_age(const char *cache_control)
{
    const char *p, *end;
    size_t len;
    long max_age = -1;
    bool no_store = false;

    if (!cache_control)
        return -1;
    len = strnlen(cache_control, HTTP_CACHE_CONTROL_MAX + 1);
    if (len > HTTP_CACHE_CONTROL_MAX)
        return -1;
    p = cache_control;
    end = p + len;

    for (;;) {
        const char *name, *val = NULL;
        char qval[24];
        size_t name_len, val_len = 0;
        bool overlong = false;

        while (p < end && (is_ows(*p) || *p == ','))
            p++;
        if (p == end)
            break;
        name = p;
        while (p < end && is_tchar((unsigned char)*p))
            p++;
        name_len = (size_t)(p - name);
        if (name_len == 0)
            return -1;
        if (p < end && *p == '=') {
            p++;
            if (p < end && *p == '"') {
                /* quoted-string: qdtext or "\" quoted-pair; the unescaped value is kept only
                 * as far as delta-seconds could need it. */
                bool closed = false;
                size_t n = 0;

                for (p++; p < end; p++) {
                    unsigned char c = (unsigned char)*p;
                    if (c == '"') {
                        closed = true;
                        p++;
                        break;
                    }
                    if (c == '\\') {
                        if (++p == end)
                            break;
                        c = (unsigned char)*p;
                    }
                    if ((c < 0x20 && c != '\t') || c == 0x7f)
                        return -1;
                    if (n < sizeof(qval))
                        qval[n] = (char)c;
                    n++;
                }
                if (!closed)
                    return -1;
                val = qval;
                val_len = n;
                overlong = n > sizeof(qval); /* no sane delta-seconds is that long */
            } else {
                val = p;
                while (p < end && is_tchar((unsigned char)*p))
                    p++;
                val_len = (size_t)(p - val);
                if (val_len == 0)
                    return -1;
            }
        }
        while (p < end && is_ows(*p))
            p++;
        if (p < end && *p != ',')
            return -1;

        if ((name_len == 8 && strncasecmp(name, "no-store", 8) == 0) ||
            (name_len == 8 && strncasecmp(name, "no-cache", 8) == 0)) {
            no_store = true;
        } else if (name_len == 7 && strncasecmp(name, "max-age", 7) == 0) {
            long v = val && !overlong ? delta_seconds(val, val_len) : -1;
            if (v < 0 || max_age >= 0)
                return -1;
            max_age = v;
        }
    }
    return no_store ? 0 : max_age;
}

/* The jittered pause before retry attempt+1, in milliseconds (see ferry_http_backoff). */
static long backoff_ms(int attempt, unsigned base_ms)
{
    uint32_t rnd = 0;
    long ms = (long)base_ms << (attempt < 0 ? 0 : attempt > 16 ? 16 : attempt);

    if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
        rnd = (uint32_t)time(NULL);
    return ms / 2 + (long)(rnd % (uint32_t)(ms / 2 + 1));
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

FERRY_EXPORT void ferry_http_backoff(int attempt, unsigned base_ms)
{
    sleep_ms(backoff_ms(attempt, base_ms));
}

FERRY_EXPORT int ferry_http_retry_pause(const ferry_http_response *resp, int attempt,
                                        unsigned base_ms, long *budget_ms)
{
    long ms = backoff_ms(attempt, base_ms);

    if (!budget_ms)
        return -EINVAL;
    if (resp && resp->retry_after > 0 && resp->retry_after * 1000L > ms)
        ms = resp->retry_after * 1000L;
    if (ms > *budget_ms)
        return -EAGAIN;
    sleep_ms(ms);
    *budget_ms -= ms;
    return 0;
}
