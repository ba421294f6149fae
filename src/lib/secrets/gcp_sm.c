/* lib/secrets/gcp_sm.c - the gcp-sm secret backend: GCP Secret Manager, with a Google access
 * token obtained from ferry's own identity. docs/internals/secrets.md ("GCP Secret Manager").
 *
 * Configuration ("gcp-sm" section), members:
 *   audience (required: //iam.googleapis.com/projects/N/locations/global/
 *             workloadIdentityPools/POOL/providers/PROVIDER), token_audience (aud of the minted
 *   token, default "https:" + audience), service_account (optional e-mail to impersonate),
 *   scope (default cloud-platform), sts_url, iamcredentials_url, secretmanager_url (service
 *   roots, for tests), allow_http_loopback, ca_file, timeout_ms, max_retry_wait_ms.
 * Unknown members are refused.
 *
 * Flow: a ferry-minted JWT (env->web_identity_token) is exchanged at GCP STS (RFC 8693 form
 * body) for a federated access token; with service_account, that token then asks IAM
 * Credentials generateAccessToken for the service account's token. The access token is cached
 * under a mutex (held across an exchange, so concurrent fetches cause one), renewed before it
 * expires, dropped and obtained once more when Secret Manager answers 401 to a cached one,
 * and wiped when dropped. Secret Manager's versions/V:access answer is decoded (strict base64)
 * and checked against its CRC32C. Google's error messages are never copied into a reason;
 * only their status word ("PERMISSION_DENIED") is.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "basic/b64.h"
#include "basic/buf.h"
#include "basic/clock.h"
#include "basic/crc32c.h"
#include "basic/errbuf.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/http.h"
#include "ferry/json.h"
#include "lib/secrets/gcp-internal.h"
#include "lib/secrets/secrets-internal.h"

#define GCP_MAX_ATTEMPTS 4 /* per call, for 429, 5xx and network failures */
#define GCP_BACKOFF_BASE_MS 100
#define GCP_WAIT_DEFAULT_MS 5000 /* what one fetch may spend waiting between retries */
#define GCP_URL_MAX 2048
#define GCP_TIMEOUT_SLACK_MS 20 /* a network failure this close to timeout_ms is the timeout */
#define GCP_DEFAULT_SCOPE "https://www.googleapis.com/auth/cloud-platform"
#define GCP_LIFETIME "3600s" /* generateAccessToken's lifetime (its default and maximum) */

#define GRANT_TOKEN_EXCHANGE "urn:ietf:params:oauth:grant-type:token-exchange"
#define TYPE_ACCESS_TOKEN "urn:ietf:params:oauth:token-type:access_token"
#define TYPE_JWT "urn:ietf:params:oauth:token-type:jwt"

typedef struct gcp_state {
    char *audience, *token_audience, *service_account, *scope;
    char *sts_url, *iam_url, *sm_url; /* roots without a trailing '/' */
    long max_wait_ms;
    ferry_http_options http;
    int (*web_identity)(void *userdata, const char *audience, char **ret_token, char *errbuf,
                        size_t errlen);
    void *web_identity_userdata;

    pthread_mutex_t lock; /* guards what follows; held across an exchange (single-flight) */
    char *token;          /* cached access token (wiped when dropped) or NULL */
    int64_t refresh_at;   /* monotonic seconds: obtain a new token from here */
} gcp_state;

#define fail(...) ferry_errbuf_set(__VA_ARGS__)

/* An access token: printable ASCII without spaces, 1..FERRY_GCP_TOKEN_MAX bytes. */
static bool token_ok(const json_t *t)
{
    const char *s;
    size_t n;

    if (!json_is_string(t))
        return false;
    s = json_string_value(t);
    n = json_string_length(t);
    if (n == 0 || n > FERRY_GCP_TOKEN_MAX || strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~')
            return false;
    return true;
}

static int parse_doc(const char *body, size_t len, const char *what, json_t **ret, char *errbuf,
                     size_t errlen)
{
    int r = ferry_json_parse(body, len, FERRY_GCP_RESPONSE_MAX, 16, ret, NULL, 0);

    if (r < 0)
        return fail(errbuf, errlen, r == -FERRY_ETOOBIG ? r : -FERRY_EMALFORMED,
                    "%s: not a JSON document%s", what,
                    r == -FERRY_ETOOBIG ? " within the limits" : "");
    if (!json_is_object(*ret)) {
        json_decref(*ret);
        *ret = NULL;
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "%s: not a JSON object", what);
    }
    return 0;
}

/* ---- parsers -------------------------------------------------------------------------------- */

static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* name must be projects/P/secrets/S/versions/N with S = ref->name, P = ref->scope or a project
 * number, N digits (= ref->version when that is a number). *ret_ver points at N. */
static bool name_ok(const char *name, size_t n, const ferry_secret_ref *ref, const char **ret_ver)
{
    const char *p = name, *end = name + n, *slash;
    char mid[FERRY_SECRET_REF_MAX + 32]; /* "/secrets/<s>/versions/" */
    size_t ml, pl;

    if (strlen(name) != n || n < 9 || memcmp(p, "projects/", 9) != 0)
        return false;
    p += 9;
    slash = memchr(p, '/', (size_t)(end - p));
    if (!slash)
        return false;
    pl = (size_t)(slash - p);
    if (!((pl == strlen(ref->scope) && memcmp(p, ref->scope, pl) == 0) || all_digits(p, pl)))
        return false;
    p = slash;
    ml = (size_t)snprintf(mid, sizeof(mid), "/secrets/%s/versions/", ref->name);
    if (ml >= sizeof(mid) || (size_t)(end - p) < ml || memcmp(p, mid, ml) != 0)
        return false;
    p += ml;
    if (!all_digits(p, (size_t)(end - p)) || end - p > 10 || *p == '0')
        return false;
    if (strcmp(ref->version, "latest") != 0 && strcmp(p, ref->version) != 0)
        return false;
    *ret_ver = p;
    return true;
}

int ferry_gcp_access_parse(const char *body, size_t len, const ferry_secret_ref *ref,
                           ferry_secret_value **ret, char *errbuf, size_t errlen)
{
    json_t *j = NULL, *name, *payload, *data, *crc;
    ferry_secret_value *v = NULL;
    const char *ver = NULL, *b64;
    size_t n, pad, out_len = 0;
    int r;

    if (!body || !ref || !ret)
        return -EINVAL;
    r = parse_doc(body, len, "access response", &j, errbuf, errlen);
    if (r < 0)
        return r;
    name = json_object_get(j, "name");
    payload = json_object_get(j, "payload");
    if (!json_is_string(name) ||
        !name_ok(json_string_value(name), json_string_length(name), ref, &ver)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "access response: \"name\" is missing or does not name the version asked for");
        goto out;
    }
    if (!json_is_object(payload)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "access response: no \"payload\" object");
        goto out;
    }
    data = json_object_get(payload, "data");
    crc = json_object_get(payload, "dataCrc32c");
    if (!data) {
        /* proto3 JSON leaves out empty bytes: an empty value, which ferry does not serve. */
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "access response: the payload has no data (an empty value)");
        goto out;
    }
    if (!json_is_string(data)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "access response: payload.data is not a string");
        goto out;
    }
    b64 = json_string_value(data);
    n = json_string_length(data);
    pad = n >= 1 && b64[n - 1] == '=' ? (n >= 2 && b64[n - 2] == '=' ? 2 : 1) : 0;
    if (n % 4 != 0 || n / 4 * 3 <= pad) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "access response: payload.data is not strict base64 of a non-empty value");
        goto out;
    }
    if (n / 4 * 3 - pad > FERRY_SECRET_VALUE_MAX) {
        r = fail(errbuf, errlen, -FERRY_ETOOBIG, "access response: the value is over 64 KiB");
        goto out;
    }
    r = ferry_secret_value_new(n / 4 * 3 - pad, &v);
    if (r < 0)
        goto out;
    if (ferry_b64_decode(b64, n, v->data, &out_len) < 0 || out_len != v->len) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "access response: payload.data is not strict base64 of a non-empty value");
        goto out;
    }
    if (crc) {
        /* int64 in proto3 JSON is a decimal string (a number is accepted too, as by Google's
         * own parsers); CRC32C values fit in 32 bits. */
        long long want;
        char tmp[24];
        if (json_is_string(crc) && json_string_length(crc) < sizeof(tmp) &&
            all_digits(json_string_value(crc), json_string_length(crc))) {
            memcpy(tmp, json_string_value(crc), json_string_length(crc) + 1);
            r = ferry_parse_int64(tmp, &want);
        } else if (json_is_integer(crc)) {
            want = (long long)json_integer_value(crc);
            r = 0;
        } else
            r = -EINVAL;
        if (r < 0 || want < 0 || want > 0xffffffffLL) {
            r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                     "access response: payload.dataCrc32c is not a CRC32C");
            goto out;
        }
        if (ferry_crc32c(0, v->data, v->len) != (uint32_t)want) {
            r = fail(errbuf, errlen, -FERRY_EBADSIG,
                     "access response: the payload does not match its CRC32C (corrupted in "
                     "transit or storage); no value");
            goto out;
        }
    }
    snprintf(v->version, sizeof(v->version), "%s", ver);
    *ret = TAKE_PTR(v);
    r = 0;
out:
    ferry_secret_value_free(v);
    ferry_json_wipe_strings(j);
    json_decref(j);
    return r;
}

int ferry_gcp_sts_parse(const char *body, size_t len, char **ret_token, int64_t *ret_lifetime,
                        char *errbuf, size_t errlen)
{
    json_t *j = NULL, *tok, *type, *itype, *exp;
    char *t;
    int r;

    if (!body || !ret_token || !ret_lifetime)
        return -EINVAL;
    r = parse_doc(body, len, "STS answer", &j, errbuf, errlen);
    if (r < 0)
        return r;
    tok = json_object_get(j, "access_token");
    type = json_object_get(j, "token_type");
    itype = json_object_get(j, "issued_token_type");
    exp = json_object_get(j, "expires_in");
    if (!token_ok(tok)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "STS answer: access_token is missing or not a token");
        goto out;
    }
    if (!json_is_string(type) || strcasecmp(json_string_value(type), "Bearer") != 0) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "STS answer: token_type is not Bearer");
        goto out;
    }
    if (itype && (!json_is_string(itype) || strcmp(json_string_value(itype), TYPE_ACCESS_TOKEN))) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "STS answer: issued_token_type is not an access token");
        goto out;
    }
    if (!json_is_integer(exp) || json_integer_value(exp) < 1 || json_integer_value(exp) > 86400) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "STS answer: expires_in is not a number of seconds (1..86400)");
        goto out;
    }
    t = strdup(json_string_value(tok));
    if (!t) {
        r = -ENOMEM;
        goto out;
    }
    *ret_token = t;
    *ret_lifetime = (int64_t)json_integer_value(exp);
    r = 0;
out:
    ferry_json_wipe_strings(j);
    json_decref(j);
    return r;
}

static int two_digits(const char *s)
{
    if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
        return -1;
    return (s[0] - '0') * 10 + (s[1] - '0');
}

int ferry_gcp_rfc3339_parse(const char *s, size_t n, int64_t *ret)
{
    struct tm tm = {0}, back;
    int v[7];
    time_t t;

    if (!s || !ret || n < 20 || n > 40 || s[4] != '-' || s[7] != '-' || s[10] != 'T' ||
        s[13] != ':' || s[16] != ':' || s[n - 1] != 'Z')
        return -FERRY_EMALFORMED;
    if (n > 20 && (s[19] != '.' || !all_digits(s + 20, n - 21)))
        return -FERRY_EMALFORMED;
    v[0] = two_digits(s);
    v[1] = two_digits(s + 2);
    v[2] = two_digits(s + 5);
    v[3] = two_digits(s + 8);
    v[4] = two_digits(s + 11);
    v[5] = two_digits(s + 14);
    v[6] = two_digits(s + 17);
    for (int i = 0; i < 7; i++)
        if (v[i] < 0)
            return -FERRY_EMALFORMED;
    tm.tm_year = v[0] * 100 + v[1] - 1900;
    tm.tm_mon = v[2] - 1;
    tm.tm_mday = v[3];
    tm.tm_hour = v[4];
    tm.tm_min = v[5];
    tm.tm_sec = v[6];
    if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_hour > 23 || tm.tm_min > 59 ||
        tm.tm_sec > 59)
        return -FERRY_EMALFORMED;
    t = timegm(&tm);
    /* timegm normalises 31 April into 1 May: a round trip catches calendar errors. */
    if (t == (time_t)-1 || !gmtime_r(&t, &back) || back.tm_mday != v[3] || back.tm_mon != v[2] - 1)
        return -FERRY_EMALFORMED;
    *ret = (int64_t)t;
    return 0;
}

int ferry_gcp_iam_parse(const char *body, size_t len, int64_t now, char **ret_token,
                        int64_t *ret_lifetime, char *errbuf, size_t errlen)
{
    json_t *j = NULL, *tok, *exp;
    int64_t when;
    char *t;
    int r;

    if (!body || !ret_token || !ret_lifetime)
        return -EINVAL;
    r = parse_doc(body, len, "generateAccessToken answer", &j, errbuf, errlen);
    if (r < 0)
        return r;
    tok = json_object_get(j, "accessToken");
    exp = json_object_get(j, "expireTime");
    if (!token_ok(tok)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "generateAccessToken answer: accessToken is missing or not a token");
        goto out;
    }
    if (!json_is_string(exp) ||
        ferry_gcp_rfc3339_parse(json_string_value(exp), json_string_length(exp), &when) < 0) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "generateAccessToken answer: expireTime is not an RFC 3339 UTC time");
        goto out;
    }
    if (when <= now || when - now > 43200) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "generateAccessToken answer: expireTime is not within the next 12 hours");
        goto out;
    }
    t = strdup(json_string_value(tok));
    if (!t) {
        r = -ENOMEM;
        goto out;
    }
    *ret_token = t;
    *ret_lifetime = when - now;
    r = 0;
out:
    ferry_json_wipe_strings(j);
    json_decref(j);
    return r;
}

static bool word_ok(const char *s, bool upper)
{
    size_t n = strlen(s);

    if (n == 0 || n > 40)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == '_' || (upper ? (s[i] >= 'A' && s[i] <= 'Z') : (s[i] >= 'a' && s[i] <= 'z'))))
            return false;
    return true;
}

int ferry_gcp_error_status(const char *body, size_t len, char *ret, size_t n)
{
    json_t *j = NULL, *e, *st;
    const char *w = NULL;
    int r = -FERRY_EMALFORMED;

    if (!ret || n == 0)
        return -EINVAL;
    ret[0] = '\0';
    if (!body || ferry_json_parse(body, len, FERRY_GCP_RESPONSE_MAX, 16, &j, NULL, 0) < 0)
        return r;
    e = json_object_get(j, "error");
    if (json_is_object(e)) {
        st = json_object_get(e, "status");
        if (json_is_string(st) && word_ok(json_string_value(st), true))
            w = json_string_value(st);
    } else if (json_is_string(e) && word_ok(json_string_value(e), false))
        w = json_string_value(e);
    if (w && strlen(w) < n) {
        memcpy(ret, w, strlen(w) + 1);
        r = 0;
    }
    ferry_json_wipe_strings(j);
    json_decref(j);
    return r;
}

/* ---- configuration ------------------------------------------------------------------------ */

static void gcp_close(void *state)
{
    gcp_state *st = state;

    if (!st)
        return;
    ferry_free_secret_str(st->token);
    pthread_mutex_destroy(&st->lock);
    free(st->audience);
    free(st->token_audience);
    free(st->service_account);
    free(st->scope);
    free(st->sts_url);
    free(st->iam_url);
    free(st->sm_url);
    free((char *)st->http.ca_file);
    free(st);
}

/* A copied string member of 1..max printable ASCII bytes (spaces only when spaces); *ret stays
 * NULL when absent. */
static int conf_str(const json_t *conf, const char *name, size_t max, bool spaces, char **ret,
                    char *errbuf, size_t errlen)
{
    json_t *v = json_object_get(conf, name);
    const char *s;
    size_t n;

    *ret = NULL;
    if (!v)
        return 0;
    if (!json_is_string(v) || (n = json_string_length(v)) == 0 || n > max)
        return fail(errbuf, errlen, -FERRY_ECONFIG, "%s: must be a string of 1..%zu bytes", name,
                    max);
    s = json_string_value(v);
    for (size_t i = 0; i < n; i++)
        if (!((s[i] > ' ' && s[i] <= '~') || (spaces && s[i] == ' ')))
            return fail(errbuf, errlen, -FERRY_ECONFIG, "%s: character %zu is not allowed", name,
                        i + 1);
    *ret = strdup(s);
    return *ret ? 0 : -ENOMEM;
}

/* A service root (scheme://host[:port], optionally a path prefix), or def when absent. */
static int conf_url(const json_t *conf, const char *name, const char *def, gcp_state *st,
                    char **ret, char *errbuf, size_t errlen)
{
    size_t n;
    int r;

    r = conf_str(conf, name, GCP_URL_MAX, false, ret, errbuf, errlen);
    if (r < 0)
        return r;
    if (!*ret && !(*ret = strdup(def)))
        return -ENOMEM;
    n = strlen(*ret);
    while (n > 0 && (*ret)[n - 1] == '/')
        (*ret)[--n] = '\0';
    if (n == 0 || strpbrk(*ret, "?#") || ferry_http_check_url(*ret, &st->http) < 0)
        return fail(errbuf, errlen, -FERRY_ECONFIG,
                    "%s: refused (https://host[:port] only; http only to 127.0.0.1/[::1] with "
                    "allow_http_loopback)",
                    name);
    return 0;
}

/* A lower-case id of 1..63 of a-z 0-9 '-' ending at '/' or the end; returns its length or 0. */
static size_t id_len(const char *s)
{
    size_t i = 0;

    while (s[i] && s[i] != '/' && i < 64) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return 0;
        i++;
    }
    return i > 0 && i < 64 ? i : 0;
}

/* //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/P */
static bool audience_ok(const char *a)
{
    static const char pre[] = "//iam.googleapis.com/projects/";
    static const char mid[] = "/locations/global/workloadIdentityPools/";
    const char *p = a;
    size_t n = 0, k;

    if (strncmp(p, pre, strlen(pre)) != 0)
        return false;
    p += strlen(pre);
    while (p[n] >= '0' && p[n] <= '9')
        n++;
    if (n == 0 || n > 20)
        return false;
    p += n;
    if (strncmp(p, mid, strlen(mid)) != 0)
        return false;
    p += strlen(mid);
    if (!(k = id_len(p)))
        return false;
    p += k;
    if (strncmp(p, "/providers/", 11) != 0)
        return false;
    p += 11;
    if (!(k = id_len(p)))
        return false;
    return p[k] == '\0';
}

/* name@domain of a-z 0-9 . _ - (service accounts are lower case). */
static bool email_ok(const char *e)
{
    const char *at = strchr(e, '@');

    if (!at || at == e || strchr(at + 1, '@') || !at[1] || !strchr(at + 1, '.'))
        return false;
    for (const char *p = e; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("._-@", *p)))
            return false;
    return true;
}

static int gcp_open(const json_t *conf, const ferry_secrets_env *env, void **ret_state,
                    char *errbuf, size_t errlen)
{
    static const char *const members[] = {
        "audience", "token_audience",     "service_account",   "scope",
        "sts_url",  "iamcredentials_url", "secretmanager_url", "allow_http_loopback",
        "ca_file",  "timeout_ms",         "max_retry_wait_ms"};
    gcp_state *st;
    const char *key;
    json_t *v;
    char *ca = NULL;
    int r;

    if (!conf || !json_is_object(conf))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "needs a configuration (audience)");
    json_object_foreach((json_t *)conf, key, v)
    {
        size_t i;
        for (i = 0; i < ARRAY_SIZE(members); i++)
            if (strcmp(key, members[i]) == 0)
                break;
        if (i == ARRAY_SIZE(members))
            return fail(errbuf, errlen, -FERRY_ECONFIG, "unknown member \"%.64s\"", key);
    }
    st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        free(st);
        return -ENOMEM;
    }
    v = json_object_get(conf, "allow_http_loopback");
    if (v && !json_is_boolean(v)) {
        r = fail(errbuf, errlen, -FERRY_ECONFIG, "allow_http_loopback: must be a boolean");
        goto fail;
    }
    st->http.allow_http_loopback = json_is_true(v);
    v = json_object_get(conf, "timeout_ms");
    if (v &&
        (!json_is_integer(v) || json_integer_value(v) < 100 || json_integer_value(v) > 600000)) {
        r = fail(errbuf, errlen, -FERRY_ECONFIG, "timeout_ms: an integer 100..600000");
        goto fail;
    }
    st->http.total_timeout_ms = v ? (long)json_integer_value(v) : 0;
    v = json_object_get(conf, "max_retry_wait_ms");
    if (v && (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 60000)) {
        r = fail(errbuf, errlen, -FERRY_ECONFIG, "max_retry_wait_ms: an integer 0..60000");
        goto fail;
    }
    st->max_wait_ms = v ? (long)json_integer_value(v) : GCP_WAIT_DEFAULT_MS;
    st->http.max_redirects = 0;
    st->http.max_response = FERRY_GCP_RESPONSE_MAX;
    if ((r = conf_str(conf, "ca_file", 4096, false, &ca, errbuf, errlen)) < 0)
        goto fail;
    st->http.ca_file = ca;
    if ((r = conf_str(conf, "audience", 512, false, &st->audience, errbuf, errlen)) < 0 ||
        (r = conf_str(conf, "token_audience", 1024, false, &st->token_audience, errbuf, errlen)) <
            0 ||
        (r = conf_str(conf, "service_account", 254, false, &st->service_account, errbuf, errlen)) <
            0 ||
        (r = conf_str(conf, "scope", 1024, true, &st->scope, errbuf, errlen)) < 0)
        goto fail;
    if (!st->audience || !audience_ok(st->audience)) {
        r = fail(errbuf, errlen, -FERRY_ECONFIG,
                 "audience: required, //iam.googleapis.com/projects/<number>/locations/global/"
                 "workloadIdentityPools/<pool>/providers/<provider>");
        goto fail;
    }
    if (!st->token_audience) {
        size_t n = strlen(st->audience) + sizeof("https:");
        st->token_audience = malloc(n);
        if (!st->token_audience) {
            r = -ENOMEM;
            goto fail;
        }
        snprintf(st->token_audience, n, "https:%s", st->audience);
    }
    if (st->service_account && !email_ok(st->service_account)) {
        r = fail(errbuf, errlen, -FERRY_ECONFIG,
                 "service_account: not a service account e-mail (name@project.iam."
                 "gserviceaccount.com)");
        goto fail;
    }
    if (!st->scope && !(st->scope = strdup(GCP_DEFAULT_SCOPE))) {
        r = -ENOMEM;
        goto fail;
    }
    if (st->scope[0] == ' ' || st->scope[strlen(st->scope) - 1] == ' ' || strstr(st->scope, "  ")) {
        r = fail(errbuf, errlen, -FERRY_ECONFIG, "scope: scopes separated by single spaces");
        goto fail;
    }
    if ((r = conf_url(conf, "sts_url", "https://sts.googleapis.com", st, &st->sts_url, errbuf,
                      errlen)) < 0 ||
        (r = conf_url(conf, "iamcredentials_url", "https://iamcredentials.googleapis.com", st,
                      &st->iam_url, errbuf, errlen)) < 0 ||
        (r = conf_url(conf, "secretmanager_url", "https://secretmanager.googleapis.com", st,
                      &st->sm_url, errbuf, errlen)) < 0)
        goto fail;
    if (!env || !env->web_identity_token) {
        r = fail(errbuf, errlen, -FERRY_ECONFIG,
                 "needs ferry's identity to mint the token GCP STS exchanges (an \"identity\" "
                 "section)");
        goto fail;
    }
    st->web_identity = env->web_identity_token;
    st->web_identity_userdata = env->web_identity_userdata;
    *ret_state = st;
    return 0;
fail:
    gcp_close(st);
    return r;
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

static void append_reason(char *errbuf, size_t errlen, const char *fmt, ...) _printf_(3, 4);
static void append_reason(char *errbuf, size_t errlen, const char *fmt, ...)
{
    size_t l = errbuf && errlen ? strlen(errbuf) : 0;
    va_list ap;

    if (l + 1 >= errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(errbuf + l, errlen - l, fmt, ap);
    va_end(ap);
}

/* Send req, retrying 429, 5xx and network failures at most GCP_MAX_ATTEMPTS times, each pause
 * charged to *budget_ms (ferry_http_retry_pause). On success *ret is the final response (any
 * other status; the caller releases it). */
static int gcp_send(gcp_state *st, const ferry_http_request *req, long *budget_ms,
                    ferry_http_response *ret, char *errbuf, size_t errlen, const char *what)
{
    long timeout_ms = st->http.total_timeout_ms ? st->http.total_timeout_ms : 10000;
    int r;

    for (int attempt = 0;; attempt++) {
        ferry_http_response resp = {0};
        bool have = false;
        int64_t t0 = ferry_mono_ms();

        r = ferry_http_request_send(req, &st->http, &resp);
        if (r == -FERRY_ETOOBIG)
            return fail(errbuf, errlen, r, "%s: answer over %d bytes", what,
                        FERRY_GCP_RESPONSE_MAX);
        if (r == -FERRY_EPOLICY)
            return fail(errbuf, errlen, r, "%s: refused by the HTTP rules (redirect?)", what);
        if (r == -FERRY_EFETCH && ferry_mono_ms() - t0 >= timeout_ms - GCP_TIMEOUT_SLACK_MS)
            /* The client reports a timeout as any network failure; the clock tells them apart. */
            r = fail(errbuf, errlen, -ETIMEDOUT, "%s: no answer within %ld ms", what, timeout_ms);
        else if (r < 0)
            r = fail(errbuf, errlen, r, "%s: request failed (%s)", what, ferry_strerror(r));
        else if (resp.status == 429 || resp.status == 500 || resp.status == 502 ||
                 resp.status == 503 || resp.status == 504) {
            have = true;
            r = fail(errbuf, errlen, -EAGAIN, "%s: %s (%ld)", what,
                     resp.status == 429 ? "throttled" : "server error", resp.status);
        } else {
            *ret = resp;
            return 0;
        }
        if (attempt + 1 >= GCP_MAX_ATTEMPTS) {
            append_reason(errbuf, errlen, ", after %d attempts", GCP_MAX_ATTEMPTS);
            ferry_http_response_release(&resp);
            return r;
        }
        if (ferry_http_retry_pause(have ? &resp : NULL, attempt, GCP_BACKOFF_BASE_MS, budget_ms) <
            0) {
            if (have && resp.retry_after > 0)
                append_reason(errbuf, errlen, ", retry after %ld s", resp.retry_after);
            append_reason(errbuf, errlen, "; not retried: past the %ld ms a fetch may wait",
                          st->max_wait_ms);
            ferry_http_response_release(&resp);
            return r;
        }
        ferry_http_response_release(&resp);
    }
}

/* The status word of resp's Google error body, or "no error status" (never its message). */
static const char *status_word(const ferry_http_response *resp, char *buf, size_t n)
{
    if (!ferry_http_media_type_is(resp->content_type, "application/json") ||
        ferry_gcp_error_status(resp->body, resp->body_len, buf, n) < 0)
        snprintf(buf, n, "no error status");
    return buf;
}

static char *bearer_header(const char *token)
{
    size_t n = strlen(token) + sizeof("Authorization: Bearer ");
    char *h = malloc(n);

    if (h)
        snprintf(h, n, "Authorization: Bearer %s", token);
    return h;
}

/* STS token exchange of a freshly minted ferry token: the federated access token. */
static int sts_exchange(gcp_state *st, long *budget_ms, char **ret_token, int64_t *ret_life,
                        char *errbuf, size_t errlen)
{
    static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded"};
    ferry_http_response resp = {0};
    ferry_buf body;
    char url[GCP_URL_MAX + 16], why[256] = "", word[48];
    char *jwt = NULL;
    int r;

    r = st->web_identity(st->web_identity_userdata, st->token_audience, &jwt, why, sizeof(why));
    if (r < 0)
        return fail(errbuf, errlen, r, "STS token exchange: minting ferry's token: %s",
                    why[0] ? why : ferry_strerror(r));
    ferry_buf_init(&body, 64 * 1024, true);
    if ((r = ferry_buf_append_form(&body, "grant_type", GRANT_TOKEN_EXCHANGE)) < 0 ||
        (r = ferry_buf_append_form(&body, "audience", st->audience)) < 0 ||
        (r = ferry_buf_append_form(&body, "scope", st->scope)) < 0 ||
        (r = ferry_buf_append_form(&body, "requested_token_type", TYPE_ACCESS_TOKEN)) < 0 ||
        (r = ferry_buf_append_form(&body, "subject_token", jwt)) < 0 ||
        (r = ferry_buf_append_form(&body, "subject_token_type", TYPE_JWT)) < 0) {
        ferry_free_secret_str(jwt);
        ferry_buf_release(&body);
        return r == -E2BIG ? fail(errbuf, errlen, -FERRY_ETOOBIG,
                                  "STS token exchange: the minted token is too large")
                           : r;
    }
    ferry_free_secret_str(jwt);
    snprintf(url, sizeof(url), "%s/v1/token", st->sts_url);
    ferry_http_request req = {.method = "POST",
                              .url = url,
                              .headers = hdrs,
                              .n_headers = ARRAY_SIZE(hdrs),
                              .body = body.data,
                              .body_len = body.len,
                              .sensitive = true};
    r = gcp_send(st, &req, budget_ms, &resp, errbuf, errlen, "STS token exchange");
    ferry_buf_release(&body);
    if (r < 0)
        return r;
    if (resp.status == 400 || resp.status == 401 || resp.status == 403)
        r = fail(errbuf, errlen, -EACCES, "STS token exchange: refused (HTTP %ld, %s)", resp.status,
                 status_word(&resp, word, sizeof(word)));
    else if (resp.status != 200)
        r = fail(errbuf, errlen, -FERRY_EFETCH, "STS token exchange: unexpected HTTP status %ld",
                 resp.status);
    else if (!ferry_http_media_type_is(resp.content_type, "application/json"))
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "STS token exchange: the answer is not application/json");
    else {
        r = ferry_gcp_sts_parse(resp.body, resp.body_len, ret_token, ret_life, why, sizeof(why));
        if (r < 0)
            r = fail(errbuf, errlen, r, "STS token exchange: %s", why);
    }
    ferry_http_response_release(&resp);
    return r;
}

/* IAM Credentials generateAccessToken for st->service_account with the federated token. */
static int impersonate(gcp_state *st, const char *federated, long *budget_ms, char **ret_token,
                       int64_t *ret_life, char *errbuf, size_t errlen)
{
    ferry_http_response resp = {0};
    json_t *req_j = NULL, *scopes;
    char url[GCP_URL_MAX + 400], why[256] = "", word[48], *auth = NULL, *body = NULL;
    const char *hdrs[2];
    int r;

    scopes = json_array();
    if (!scopes)
        return -ENOMEM;
    for (const char *p = st->scope; *p;) {
        const char *sp = strchr(p, ' ');
        size_t n = sp ? (size_t)(sp - p) : strlen(p);
        if (json_array_append_new(scopes, json_stringn(p, n)) < 0) {
            json_decref(scopes);
            return -ENOMEM;
        }
        p += n + (sp ? 1 : 0);
    }
    req_j = json_pack("{s:o,s:s}", "scope", scopes, "lifetime", GCP_LIFETIME);
    body = req_j ? json_dumps(req_j, JSON_COMPACT) : NULL;
    json_decref(req_j);
    auth = bearer_header(federated);
    if (!body || !auth) {
        r = -ENOMEM;
        goto out;
    }
    snprintf(url, sizeof(url), "%s/v1/projects/-/serviceAccounts/%s:generateAccessToken",
             st->iam_url, st->service_account);
    hdrs[0] = auth;
    hdrs[1] = "Content-Type: application/json";
    ferry_http_request req = {.method = "POST",
                              .url = url,
                              .headers = hdrs,
                              .n_headers = 2,
                              .body = body,
                              .body_len = strlen(body),
                              .sensitive = true};
    r = gcp_send(st, &req, budget_ms, &resp, errbuf, errlen, "generateAccessToken");
    if (r < 0)
        goto out;
    if (resp.status == 401 || resp.status == 403)
        r = fail(errbuf, errlen, -EACCES,
                 "generateAccessToken: refused (HTTP %ld, %s; does the pool's principal have "
                 "roles/iam.workloadIdentityUser on %s?)",
                 resp.status, status_word(&resp, word, sizeof(word)), st->service_account);
    else if (resp.status == 404)
        r = fail(errbuf, errlen, -EACCES, "generateAccessToken: no service account %s (%s)",
                 st->service_account, status_word(&resp, word, sizeof(word)));
    else if (resp.status != 200)
        r = fail(errbuf, errlen, -FERRY_EFETCH,
                 "generateAccessToken: unexpected HTTP status %ld (%s)", resp.status,
                 status_word(&resp, word, sizeof(word)));
    else if (!ferry_http_media_type_is(resp.content_type, "application/json"))
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "generateAccessToken: the answer is not application/json");
    else {
        r = ferry_gcp_iam_parse(resp.body, resp.body_len, (int64_t)time(NULL), ret_token, ret_life,
                                why, sizeof(why));
        if (r < 0)
            r = fail(errbuf, errlen, r, "generateAccessToken: %s", why);
    }
out:
    ferry_http_response_release(&resp);
    free(body);
    ferry_free_secret_str(auth);
    return r;
}

static void drop_token(gcp_state *st)
{
    ferry_free_secret_str(st->token);
    st->token = NULL;
    st->refresh_at = 0;
}

/* A copy of a usable access token in *ret (wipe and free): the cached one, or a new one when
 * there is none, it is within its last fifth (at most 5 minutes) of life, or force. *ret_fresh
 * says whether it was obtained for this call. */
static int token_get(gcp_state *st, bool force, long *budget_ms, char **ret, bool *ret_fresh,
                     char *errbuf, size_t errlen)
{
    char *fed = NULL, *tok = NULL;
    int64_t life = 0, now = ferry_mono_s();
    bool fresh = false;
    int r = 0;

    pthread_mutex_lock(&st->lock);
    if (st->token && (force || now >= st->refresh_at))
        drop_token(st);
    if (!st->token) {
        fresh = true;
        r = sts_exchange(st, budget_ms, &fed, &life, errbuf, errlen);
        if (r == 0 && st->service_account) {
            r = impersonate(st, fed, budget_ms, &tok, &life, errbuf, errlen);
            ferry_free_secret_str(fed);
        } else
            tok = fed;
        if (r == 0) {
            int64_t margin = life / 5 < 300 ? life / 5 : 300;
            st->token = tok;
            st->refresh_at = ferry_mono_s() + life - margin;
        }
    }
    if (r == 0) {
        *ret = strdup(st->token);
        if (!*ret)
            r = -ENOMEM;
        *ret_fresh = fresh;
    }
    pthread_mutex_unlock(&st->lock);
    return r;
}

/* The reference parser allows only [a-z0-9-] (or digits) in projects, [A-Za-z0-9_-] in secret
 * ids and digits or "latest" in versions: nothing needs escaping in the URL. */
static int gcp_fetch(void *state, void *ctx, const ferry_secret_ref *ref, ferry_secret_value **ret,
                     char *errbuf, size_t errlen)
{
    gcp_state *st = state;
    char *url = NULL, *token = NULL, *auth = NULL, word[48], why[300];
    long budget = st->max_wait_ms;
    bool fresh = false;
    size_t ulen;
    int r;

    (void)ctx;
    ulen = strlen(st->sm_url) + strlen(ref->scope) + strlen(ref->name) + strlen(ref->version) + 64;
    url = malloc(ulen);
    if (!url)
        return -ENOMEM;
    snprintf(url, ulen, "%s/v1/projects/%s/secrets/%s/versions/%s:access", st->sm_url, ref->scope,
             ref->name, ref->version);
    for (int again = 0;; again++) {
        ferry_http_response resp = {0};
        const char *hdrs[1];

        r = token_get(st, again > 0, &budget, &token, &fresh, errbuf, errlen);
        if (r < 0)
            break;
        auth = bearer_header(token);
        ferry_free_secret_str(token);
        token = NULL;
        if (!auth) {
            r = -ENOMEM;
            break;
        }
        hdrs[0] = auth;
        ferry_http_request req = {
            .method = "GET", .url = url, .headers = hdrs, .n_headers = 1, .sensitive = true};
        r = gcp_send(st, &req, &budget, &resp, errbuf, errlen, "Secret Manager access");
        ferry_free_secret_str(auth);
        auth = NULL;
        if (r < 0)
            break;
        if (resp.status == 200) {
            if (!ferry_http_media_type_is(resp.content_type, "application/json"))
                r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                         "%s: the answer is not application/json", ref->canonical);
            else {
                why[0] = '\0';
                r = ferry_gcp_access_parse(resp.body, resp.body_len, ref, ret, why, sizeof(why));
                if (r < 0)
                    r = fail(errbuf, errlen, r, "%s: %s", ref->canonical, why);
            }
        } else if (resp.status == 401 && !fresh && again == 0) {
            /* The cached token may have been revoked or outlived its lifetime: once more. */
            ferry_http_response_release(&resp);
            continue;
        } else if (resp.status == 404) {
            r = fail(errbuf, errlen, -ENOENT, "%s: not found (%s)", ref->canonical,
                     status_word(&resp, word, sizeof(word)));
        } else if (resp.status == 401 || resp.status == 403) {
            r = fail(errbuf, errlen, -EACCES,
                     "%s: permission denied (HTTP %ld, %s; the principal needs "
                     "roles/secretmanager.secretAccessor on the secret)",
                     ref->canonical, resp.status, status_word(&resp, word, sizeof(word)));
        } else if (resp.status == 400 &&
                   strcmp(status_word(&resp, word, sizeof(word)), "FAILED_PRECONDITION") == 0) {
            r = fail(errbuf, errlen, -ENOENT,
                     "%s: the version is disabled or destroyed (FAILED_PRECONDITION)",
                     ref->canonical);
        } else {
            r = fail(errbuf, errlen, -FERRY_EFETCH, "%s: unexpected HTTP status %ld (%s)",
                     ref->canonical, resp.status, status_word(&resp, word, sizeof(word)));
        }
        ferry_http_response_release(&resp);
        break;
    }
    free(url);
    return r;
}

const ferry_secret_backend_ops ferry_secrets_gcp_sm_backend = {
    .name = "gcp-sm",
    .id = FERRY_SECRET_GCP_SM,
    .open = gcp_open,
    .fetch = gcp_fetch,
    .close = gcp_close,
};
