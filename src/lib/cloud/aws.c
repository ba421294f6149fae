/* lib/cloud/aws.c - AWS credentials (STS AssumeRoleWithWebIdentity, environment) and signed
 * AWS JSON 1.1 calls. See include/ferry/cloud.h and docs/internals/cloud.md.
 *
 * Design:
 * - STS speaks the Query protocol: an unsigned form POST (the web identity token is the
 *   authentication) answered with XML. No XML library: the answer is checked by a strict
 *   scanner that looks only for the four elements of <Credentials>, each exactly once, with
 *   plain character data (no '<', '&', CDATA or comments inside) of its own character set.
 *   Anything else in the document is not interpreted, but the document must be one element
 *   whose name ends in "Response".
 * - One provider holds one role (ARN, session name) and its cached credentials under a mutex;
 *   a refresh happens under that mutex, so concurrent callers cause one STS call. Copies handed
 *   out are the caller's to wipe.
 * - Errors: the remote's message text is never copied (it can echo input); only a known error
 *   type name and the HTTP status are named.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "basic/fileio.h"
#include "basic/errbuf.h"
#include "basic/buf.h"
#include "basic/clock.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/cloud.h"
#include "ferry/error.h"
#include "ferry/json.h"
#include "ferry/sigv4.h"
#include "lib/cloud/aws-profile.h"

#define AWS_REFRESH_MARGIN 300 /* seconds before expiry */
#define AWS_BACKOFF_BASE_MS 100
#define AWS_RETRY_BUDGET_MS 5000 /* waiting between the attempts of one call, at most */
#define AWS_TIMEOUT_SLACK_MS 20  /* a network failure this close to the timeout is the timeout */
#define AWS_ERROR_BODY_MAX 65536
#define AWS_STS_VERSION "2011-06-15"

#define fail(...) ferry_errbuf_set(__VA_ARGS__)

FERRY_EXPORT void ferry_aws_credentials_clear(ferry_aws_credentials *c)
{
    if (!c)
        return;
    if (c->secret_access_key) {
        ferry_wipe(c->secret_access_key, strlen(c->secret_access_key));
        free(c->secret_access_key);
    }
    if (c->session_token) {
        ferry_wipe(c->session_token, strlen(c->session_token));
        free(c->session_token);
    }
    ferry_wipe(c, sizeof(*c));
}

static int credentials_copy(const ferry_aws_credentials *src, ferry_aws_credentials *dst)
{
    ferry_aws_credentials c = {0};

    memcpy(c.access_key_id, src->access_key_id, sizeof(c.access_key_id));
    c.expiration = src->expiration;
    c.secret_access_key = strdup(src->secret_access_key);
    if (src->session_token)
        c.session_token = strdup(src->session_token);
    if (!c.secret_access_key || (src->session_token && !c.session_token)) {
        ferry_aws_credentials_clear(&c);
        return -ENOMEM;
    }
    *dst = c;
    return 0;
}

/* ---- STS XML ---------------------------------------------------------------------------- */

static const char *find_bytes(const char *hay, size_t hay_len, const char *needle)
{
    size_t n = strlen(needle);

    if (n > hay_len)
        return NULL;
    for (size_t i = 0; i + n <= hay_len; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, n) == 0)
            return hay + i;
    return NULL;
}

/* The text of <name>...</name> inside [p, p+len): exactly one occurrence, plain character
 * data. *ret_start / *ret_len on success. */
static int xml_element(const char *p, size_t len, const char *name, const char **ret_start,
                       size_t *ret_len, char *errbuf, size_t errlen)
{
    char open[64], close[64];
    const char *a, *b, *again;

    snprintf(open, sizeof(open), "<%s>", name);
    snprintf(close, sizeof(close), "</%s>", name);
    a = find_bytes(p, len, open);
    if (!a)
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "STS response: no <%s>", name);
    a += strlen(open);
    b = find_bytes(a, len - (size_t)(a - p), close);
    if (!b)
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "STS response: <%s> is not closed", name);
    again = find_bytes(b, len - (size_t)(b - p), open);
    if (again)
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "STS response: <%s> appears twice", name);
    /* A "<Name " with attributes, or a second element of the name with attributes, is refused
     * too: the only spelling accepted is the bare one. */
    char open_attr[64];
    snprintf(open_attr, sizeof(open_attr), "<%s ", name);
    if (find_bytes(p, len, open_attr))
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "STS response: <%s> with attributes is not accepted", name);
    for (const char *q = a; q < b; q++)
        if (*q == '<' || *q == '&')
            return fail(errbuf, errlen, -FERRY_EMALFORMED,
                        "STS response: <%s> holds markup or an entity", name);
    *ret_start = a;
    *ret_len = (size_t)(b - a);
    return 0;
}

static bool all_alnum(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

static bool all_printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

static int two(const char *s)
{
    if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
        return -1;
    return (s[0] - '0') * 10 + (s[1] - '0');
}

/* "YYYY-MM-DDTHH:MM:SS[.fff]Z" -> Unix seconds. */
static int parse_iso8601(const char *s, size_t n, int64_t *ret)
{
    char d[17];
    size_t i;

    if (n < 20 || n > 40 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
        s[16] != ':' || s[n - 1] != 'Z')
        return -FERRY_EMALFORMED;
    i = 19;
    if (n > 20) {
        if (s[19] != '.' || n < 22)
            return -FERRY_EMALFORMED;
        for (i = 20; i < n - 1; i++)
            if (s[i] < '0' || s[i] > '9')
                return -FERRY_EMALFORMED;
    }
    if (two(s) < 0 || two(s + 2) < 0 || two(s + 5) < 0 || two(s + 8) < 0 || two(s + 11) < 0 ||
        two(s + 14) < 0 || two(s + 17) < 0)
        return -FERRY_EMALFORMED;
    /* Reuse the SigV4 date parser, which checks the calendar. */
    snprintf(d, sizeof(d), "%.4s%.2s%.2sT%.2s%.2s%.2sZ", s, s + 5, s + 8, s + 11, s + 14, s + 17);
    return ferry_sigv4_parse_date(d, ret) < 0 ? -FERRY_EMALFORMED : 0;
}

FERRY_EXPORT int ferry_aws_sts_parse(const char *xml, size_t len, ferry_aws_credentials *ret,
                                     char *errbuf, size_t errlen)
{
    ferry_aws_credentials c = {0};
    const char *creds, *v, *p, *root_end;
    size_t creds_len, vlen;
    int r;

    if (!xml || !ret)
        return -EINVAL;
    if (len > FERRY_AWS_STS_RESPONSE_MAX)
        return fail(errbuf, errlen, -FERRY_ETOOBIG, "STS response: over %d bytes",
                    FERRY_AWS_STS_RESPONSE_MAX);
    if (memchr(xml, '\0', len))
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "STS response: holds a NUL byte");
    /* The root: optional XML declaration and white space, then <XxxResponse ...>. */
    p = xml;
    while (p < xml + len && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    if ((size_t)(xml + len - p) >= 5 && memcmp(p, "<?xml", 5) == 0) {
        const char *e = find_bytes(p, (size_t)(xml + len - p), "?>");
        if (!e)
            return fail(errbuf, errlen, -FERRY_EMALFORMED, "STS response: bad XML declaration");
        p = e + 2;
        while (p < xml + len && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
            p++;
    }
    if (p >= xml + len || *p != '<')
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "STS response: not an XML document");
    root_end = p + 1;
    while (root_end < xml + len &&
           ((*root_end >= 'A' && *root_end <= 'Z') || (*root_end >= 'a' && *root_end <= 'z')))
        root_end++;
    if (root_end - (p + 1) < 8 || memcmp(root_end - 8, "Response", 8) != 0)
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "STS response: the root element is not a ...Response");
    {
        char close[80];
        size_t nl = (size_t)(root_end - (p + 1));
        const char *tail = xml + len;
        if (nl > 64)
            return fail(errbuf, errlen, -FERRY_EMALFORMED, "STS response: root name too long");
        snprintf(close, sizeof(close), "</%.*s>", (int)nl, p + 1);
        while (tail > p &&
               (tail[-1] == ' ' || tail[-1] == '\t' || tail[-1] == '\r' || tail[-1] == '\n'))
            tail--;
        if ((size_t)(tail - p) < strlen(close) ||
            memcmp(tail - strlen(close), close, strlen(close)) != 0)
            return fail(errbuf, errlen, -FERRY_EMALFORMED,
                        "STS response: truncated (the root element is not closed)");
    }
    if (find_bytes(xml, len, "<![CDATA[") || find_bytes(xml, len, "<!DOCTYPE") ||
        find_bytes(xml, len, "<!ENTITY"))
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "STS response: CDATA or a document type is not accepted");

    r = xml_element(xml, len, "Credentials", &creds, &creds_len, NULL, 0);
    if (r < 0) {
        /* Credentials contains child elements, so xml_element's markup check fails: find it
         * by hand, exactly once. */
        const char *a = find_bytes(xml, len, "<Credentials>");
        const char *b = a ? find_bytes(a, len - (size_t)(a - xml), "</Credentials>") : NULL;
        if (!a || !b)
            return fail(errbuf, errlen, -FERRY_EMALFORMED, "STS response: no <Credentials>");
        if (find_bytes(b, len - (size_t)(b - xml), "<Credentials>") ||
            find_bytes(xml, len, "<Credentials "))
            return fail(errbuf, errlen, -FERRY_EMALFORMED,
                        "STS response: <Credentials> appears twice");
        creds = a + strlen("<Credentials>");
        creds_len = (size_t)(b - creds);
    } else {
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "STS response: empty <Credentials>");
    }

    r = xml_element(creds, creds_len, "AccessKeyId", &v, &vlen, errbuf, errlen);
    if (r < 0)
        return r;
    if (vlen < 16 || vlen > 128 || !all_alnum(v, vlen))
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "STS response: AccessKeyId is not 16..128 letters and digits");
    memcpy(c.access_key_id, v, vlen);

    r = xml_element(creds, creds_len, "Expiration", &v, &vlen, errbuf, errlen);
    if (r < 0)
        goto fail;
    if (parse_iso8601(v, vlen, &c.expiration) < 0) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "STS response: Expiration is not an ISO 8601 UTC time");
        goto fail;
    }

    r = xml_element(creds, creds_len, "SecretAccessKey", &v, &vlen, errbuf, errlen);
    if (r < 0)
        goto fail;
    if (vlen < 1 || vlen > FERRY_SIGV4_MAX_SECRET || !all_printable(v, vlen)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "STS response: SecretAccessKey is not 1..%d printable bytes",
                 FERRY_SIGV4_MAX_SECRET);
        goto fail;
    }
    c.secret_access_key = strndup(v, vlen);

    r = xml_element(creds, creds_len, "SessionToken", &v, &vlen, errbuf, errlen);
    if (r < 0)
        goto fail;
    if (vlen < 1 || vlen > FERRY_AWS_TOKEN_MAX || !all_printable(v, vlen)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "STS response: SessionToken is not 1..%d printable bytes", FERRY_AWS_TOKEN_MAX);
        goto fail;
    }
    c.session_token = strndup(v, vlen);
    if (!c.secret_access_key || !c.session_token) {
        r = -ENOMEM;
        goto fail;
    }
    *ret = c;
    return 0;
fail:
    ferry_aws_credentials_clear(&c);
    return r;
}

/* ---- errors ------------------------------------------------------------------------------- */

static const struct {
    const char *type;
    bool prefix;
    int code;
} aws_errors[] = {
    {"ResourceNotFoundException", false, -ENOENT},
    {"NotFoundException", false, -ENOENT},
    {"AccessDenied", true, -EACCES},
    {"UnrecognizedClientException", false, -EACCES},
    {"InvalidClientTokenId", false, -EACCES},
    {"InvalidSignatureException", false, -EACCES},
    {"SignatureDoesNotMatch", false, -EACCES},
    {"ExpiredToken", true, -EACCES},
    {"InvalidIdentityToken", true, -EACCES},
    {"IDPRejectedClaim", false, -EACCES},
    {"IncorrectKeyException", false, -EACCES},
    {"InvalidCiphertextException", false, -EACCES},
    {"KMSInvalidStateException", false, -EACCES},
    {"DisabledException", false, -EACCES},
    {"DecryptionFailure", false, -EACCES},
    {"Throttling", true, -EAGAIN},
    {"TooManyRequests", true, -EAGAIN},
    {"RequestLimitExceeded", false, -EAGAIN},
    {"LimitExceededException", false, -EAGAIN},
    {"InternalServiceError", false, -EAGAIN},
    {"InternalFailure", false, -EAGAIN},
    {"ServiceUnavailable", false, -EAGAIN},
    {"InvalidParameterException", false, -FERRY_EFETCH},
    {"InvalidRequestException", false, -FERRY_EFETCH},
    {"ValidationException", false, -FERRY_EFETCH},
};

/* The error type named in body: JSON "__type" (possibly "prefix#Name") or XML <Code>. Copies
 * at most 127 bytes of [A-Za-z0-9.:#_-] into out; "" when none. */
static void error_type(const char *body, size_t len, char *out, size_t outlen)
{
    const char *t = NULL;
    size_t tl = 0;
    json_t *j = NULL;

    out[0] = '\0';
    if (!body || !len || len > AWS_ERROR_BODY_MAX)
        return;
    if (ferry_json_parse(body, len, AWS_ERROR_BODY_MAX, 8, &j, NULL, 0) == 0) {
        json_t *ty = json_is_object(j) ? json_object_get(j, "__type") : NULL;
        if (!ty)
            ty = json_is_object(j) ? json_object_get(j, "code") : NULL;
        if (json_is_string(ty)) {
            t = json_string_value(ty);
            tl = json_string_length(ty);
        }
    } else {
        const char *a = find_bytes(body, len, "<Code>");
        const char *b = a ? find_bytes(a, len - (size_t)(a - body), "</Code>") : NULL;
        if (a && b) {
            t = a + 6;
            tl = (size_t)(b - t);
        }
    }
    if (t) {
        const char *h = memchr(t, '#', tl);
        if (h) {
            tl -= (size_t)(h + 1 - t);
            t = h + 1;
        }
        const char *colon = memchr(t, ':', tl); /* "Name:http://internal.amazon.com/..." */
        if (colon)
            tl = (size_t)(colon - t);
        if (tl < outlen && tl <= 127) {
            bool ok = true;
            for (size_t i = 0; i < tl; i++)
                if (!((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z') ||
                      (t[i] >= '0' && t[i] <= '9') || t[i] == '.' || t[i] == '_' || t[i] == '-'))
                    ok = false;
            if (ok) {
                memcpy(out, t, tl);
                out[tl] = '\0';
            }
        }
    }
    json_decref(j);
}

FERRY_EXPORT int ferry_aws_error(long status, const char *body, size_t len, char *errbuf,
                                 size_t errlen)
{
    char type[128];

    error_type(body, len, type, sizeof(type));
    for (size_t i = 0; type[0] && i < ARRAY_SIZE(aws_errors); i++) {
        size_t n = strlen(aws_errors[i].type);
        if (aws_errors[i].prefix ? strncmp(type, aws_errors[i].type, n) == 0
                                 : strcmp(type, aws_errors[i].type) == 0) {
            const char *what = aws_errors[i].code == -ENOENT   ? "not found"
                               : aws_errors[i].code == -EACCES ? "access denied"
                               : aws_errors[i].code == -EAGAIN ? "throttled or unavailable"
                                                               : "request refused";
            return fail(errbuf, errlen, aws_errors[i].code, "AWS %s: %s (HTTP %ld)", what, type,
                        status);
        }
    }
    if (status == 429 || status >= 500)
        return fail(errbuf, errlen, -EAGAIN, "AWS throttled or unavailable (HTTP %ld)", status);
    if (status == 403)
        return fail(errbuf, errlen, -EACCES, "AWS access denied (HTTP %ld)", status);
    if (status == 404)
        return fail(errbuf, errlen, -ENOENT, "AWS not found (HTTP %ld)", status);
    return fail(errbuf, errlen, -FERRY_EFETCH, "AWS error (HTTP %ld)", status);
}

/* ---- the provider --------------------------------------------------------------------------- */

struct ferry_aws_provider {
    pthread_mutex_t lock;
    char *region, *role_arn, *session_name, *sts_url, *audience, *token_file, *ca_file, *proxy;
    char *profile; /* the shared-config profile of the standard chain, or NULL (default) */
    ferry_aws_web_identity_fn web_identity;
    void *web_identity_userdata;
    uint32_t duration;
    ferry_http_options http;
    ferry_aws_credentials cached; /* access_key_id[0] == 0: none */
    int64_t obtained;
};

static bool region_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

static bool session_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n < 2 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr("_+=,.@-", s[i])))
            return false;
    return true;
}

static bool arn_ok(const char *s)
{
    size_t n = strlen(s);

    return n >= 20 && n <= FERRY_AWS_ARN_MAX && strncmp(s, "arn:", 4) == 0 && all_printable(s, n);
}

/* Endpoint: "https://host[:port]" (or http to loopback with allow_http_loopback), with no
 * path, query or fragment other than a lone "/". */
static int endpoint_check(const char *url, const ferry_http_options *o, char *errbuf, size_t errlen,
                          const char *what)
{
    const char *h;

    if (!url || strlen(url) > 512)
        return fail(errbuf, errlen, -FERRY_ECONFIG, "%s: missing or too long", what);
    h = strstr(url, "://");
    if (!h || strpbrk(h + 3, "?#@") || (strchr(h + 3, '/') && strcmp(strchr(h + 3, '/'), "/")))
        return fail(errbuf, errlen, -FERRY_ECONFIG,
                    "%s: must be scheme://host[:port] with no path, query or user", what);
    if (ferry_http_check_url(url, o) < 0)
        return fail(errbuf, errlen, -FERRY_ECONFIG,
                    "%s: refused (https only; http only to 127.0.0.1/[::1] with "
                    "allow_http_loopback)",
                    what);
    return 0;
}

static char *strdup_opt(const char *s, bool *nomem)
{
    char *d;

    if (!s)
        return NULL;
    d = strdup(s);
    if (!d)
        *nomem = true;
    return d;
}

FERRY_EXPORT void ferry_aws_provider_free(ferry_aws_provider *p)
{
    if (!p)
        return;
    ferry_aws_credentials_clear(&p->cached);
    pthread_mutex_destroy(&p->lock);
    free(p->region);
    free(p->role_arn);
    free(p->session_name);
    free(p->sts_url);
    free(p->audience);
    free(p->token_file);
    free(p->ca_file);
    free(p->proxy);
    free(p->profile);
    free(p);
}

/* Without a configured role: the rest of the standard AWS chain, decided once. Environment
 * keys (read again on each call); else a web identity from AWS_ROLE_ARN and
 * AWS_WEB_IDENTITY_TOKEN_FILE (EKS IRSA), or from the profile's role_arn and
 * web_identity_token_file, assumed with STS; else the profile's static keys (read again on
 * each call). A profile file that is there but malformed is an error now. */
static int chain_setup(ferry_aws_provider *p, char *errbuf, size_t errlen)
{
    const char *env_role = secure_getenv("AWS_ROLE_ARN");
    const char *env_file = secure_getenv("AWS_WEB_IDENTITY_TOKEN_FILE");
    const char *env_sess = secure_getenv("AWS_ROLE_SESSION_NAME");
    const char *id = secure_getenv("AWS_ACCESS_KEY_ID");
    ferry_aws_profile prof = {0};
    char why[384];
    bool nomem = false;
    int r;

    if (id && *id)
        return 0;
    if (env_role && *env_role && env_file && *env_file) {
        if (!arn_ok(env_role))
            return fail(errbuf, errlen, -FERRY_ECONFIG, "AWS_ROLE_ARN: not an ARN (arn:...)");
        p->role_arn = strdup_opt(env_role, &nomem);
        p->token_file = strdup_opt(env_file, &nomem);
        if (env_sess && *env_sess && session_name_ok(env_sess)) {
            free(p->session_name);
            p->session_name = strdup_opt(env_sess, &nomem);
        }
        p->web_identity = NULL; /* the role trusts that token's issuer, not ferry */
        return nomem ? -ENOMEM : 0;
    }
    r = ferry_aws_profile_load(p->profile, &prof, why, sizeof(why));
    if (r == -ENOENT) /* nothing anywhere: ferry_aws_provider_get says so, naming each */
        return 0;
    if (r < 0)
        return fail(errbuf, errlen, r, "%s", why);
    if (!prof.creds.access_key_id[0] && prof.role_arn && prof.web_identity_token_file) {
        if (!arn_ok(prof.role_arn))
            r = fail(errbuf, errlen, -FERRY_ECONFIG, "AWS profile %s: role_arn: not an ARN",
                     prof.name);
        p->role_arn = strdup_opt(prof.role_arn, &nomem);
        p->token_file = strdup_opt(prof.web_identity_token_file, &nomem);
        if (prof.role_session_name && session_name_ok(prof.role_session_name)) {
            free(p->session_name);
            p->session_name = strdup_opt(prof.role_session_name, &nomem);
        }
        p->web_identity = NULL;
    }
    ferry_aws_profile_clear(&prof);
    return nomem ? -ENOMEM : r;
}

FERRY_EXPORT int ferry_aws_provider_new(const ferry_aws_config *cfg, ferry_aws_provider **ret,
                                        char *errbuf, size_t errlen)
{
    ferry_aws_provider *p;
    bool nomem = false;
    char url[128];
    int r;

    if (!cfg || !ret)
        return -EINVAL;
    if (!region_ok(cfg->region))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "region: must be 1..64 of [a-z0-9-]");
    if (cfg->role_arn && !arn_ok(cfg->role_arn))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "role_arn: not an ARN (arn:...)");
    if (cfg->session_name && !session_name_ok(cfg->session_name))
        return fail(errbuf, errlen, -FERRY_ECONFIG,
                    "session_name: must be 2..64 of [A-Za-z0-9_+=,.@-]");
    if (cfg->duration_seconds && (cfg->duration_seconds < 900 || cfg->duration_seconds > 43200))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "duration_seconds: must be 900..43200");
    if (cfg->audience && (strlen(cfg->audience) < 1 || strlen(cfg->audience) > 255 ||
                          !all_printable(cfg->audience, strlen(cfg->audience))))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "audience: 1..255 printable bytes");
    if (cfg->role_arn && !cfg->web_identity && !cfg->web_identity_token_file)
        return fail(errbuf, errlen, -FERRY_ECONFIG,
                    "role_arn needs a web identity: ferry's mint or web_identity_token_file");
    snprintf(url, sizeof(url), "https://sts.%s.amazonaws.com", cfg->region);
    if (cfg->role_arn) {
        r = endpoint_check(cfg->sts_endpoint ? cfg->sts_endpoint : url, &cfg->http, errbuf, errlen,
                           "sts_endpoint");
        if (r < 0)
            return r;
    }
    p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return -ENOMEM;
    }
    p->region = strdup_opt(cfg->region, &nomem);
    p->role_arn = strdup_opt(cfg->role_arn, &nomem);
    p->session_name = strdup_opt(cfg->session_name ? cfg->session_name : "ferry", &nomem);
    p->sts_url = strdup_opt(cfg->sts_endpoint ? cfg->sts_endpoint : url, &nomem);
    p->audience = strdup_opt(cfg->audience ? cfg->audience : "sts.amazonaws.com", &nomem);
    p->token_file = strdup_opt(cfg->web_identity_token_file, &nomem);
    p->ca_file = strdup_opt(cfg->http.ca_file, &nomem);
    p->proxy = strdup_opt(cfg->http.proxy, &nomem);
    p->web_identity = cfg->web_identity;
    p->web_identity_userdata = cfg->web_identity_userdata;
    p->duration = cfg->duration_seconds ? cfg->duration_seconds : 3600;
    p->http = cfg->http;
    p->http.ca_file = p->ca_file;
    p->http.proxy = p->proxy;
    p->profile = strdup_opt(cfg->profile, &nomem);
    if (nomem) {
        ferry_aws_provider_free(p);
        return -ENOMEM;
    }
    if (!cfg->role_arn) {
        r = chain_setup(p, errbuf, errlen);
        if (r == 0 && p->role_arn)
            r = endpoint_check(p->sts_url, &p->http, errbuf, errlen, "sts_endpoint");
        if (r < 0) {
            ferry_aws_provider_free(p);
            return r;
        }
    }
    *ret = p;
    return 0;
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static int read_token_file(const char *path, char **ret, char *errbuf, size_t errlen)
{
    char *text = NULL;
    size_t n = 0;
    int r;

    r = ferry_read_regular_file(path, FERRY_AWS_TOKEN_MAX, &text, &n);
    if (r == -EFBIG)
        return fail(errbuf, errlen, -FERRY_ETOOBIG, "web_identity_token_file: over %d bytes",
                    FERRY_AWS_TOKEN_MAX);
    if (r < 0)
        return fail(errbuf, errlen, r, "web_identity_token_file: cannot read: %s",
                    ferry_strerror(r));
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        text[--n] = '\0';
    if (n == 0 || !all_printable(text, n)) {
        ferry_wipe(text, n);
        free(text);
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "web_identity_token_file: not one printable token");
    }
    *ret = text;
    return 0;
}

/* The reason of a request that got no usable HTTP answer, for what ("STS", a service), sent
 * at t0 (ferry_mono_ms) under opts. A network failure at the total timeout is that timeout
 * (-ETIMEDOUT): the HTTP client reports both as -FERRY_EFETCH. */
static int transport_error(int r, const char *what, const ferry_http_options *opts, int64_t t0,
                           char *errbuf, size_t errlen)
{
    long timeout_ms = opts->total_timeout_ms ? opts->total_timeout_ms : 10000;

    if (r == -FERRY_ETOOBIG)
        return fail(errbuf, errlen, r, "%s: response over %zu bytes", what, opts->max_response);
    if (r == -FERRY_EPOLICY)
        return fail(errbuf, errlen, r,
                    "%s: answered a redirect, which is not followed (or the URL was refused)",
                    what);
    if (r == -FERRY_EFETCH && ferry_mono_ms() - t0 >= timeout_ms - AWS_TIMEOUT_SLACK_MS)
        return fail(errbuf, errlen, -ETIMEDOUT, "%s: no answer within %ld ms", what, timeout_ms);
    if (r == -FERRY_EFETCH)
        return fail(errbuf, errlen, r,
                    "%s: no complete answer (connection failed or the body was cut short)", what);
    return fail(errbuf, errlen, r, "%s: request failed (%s)", what, ferry_strerror(r));
}

/* After the attempt-th failed try (its reason in errbuf), pause before the next one by the
 * one retry rule (ferry_http_retry_pause: jittered backoff or AWS's Retry-After when longer,
 * within *budget_ms). false when no retry follows: the attempts are used up (the reason says
 * so) or the pause is past the budget (the reason is replaced, naming the Retry-After). */
static bool retry_pause(const ferry_http_response *resp, int attempt, long *budget_ms, char *errbuf,
                        size_t errlen)
{
    size_t l = errbuf && errlen ? strlen(errbuf) : 0;

    if (attempt + 1 >= FERRY_AWS_MAX_ATTEMPTS) {
        if (l + 1 < errlen)
            snprintf(errbuf + l, errlen - l, ", after %d attempts", FERRY_AWS_MAX_ATTEMPTS);
        return false;
    }
    if (ferry_http_retry_pause(resp, attempt, AWS_BACKOFF_BASE_MS, budget_ms) == 0)
        return true;
    if (resp && resp->retry_after > 0 && l + 1 < errlen)
        snprintf(errbuf + l, errlen - l,
                 "; asked to retry after %ld s, past the %d s retry budget: not retried",
                 resp->retry_after, AWS_RETRY_BUDGET_MS / 1000);
    else if (l + 1 < errlen)
        snprintf(errbuf + l, errlen - l, ", retry budget spent after %d attempts", attempt + 1);
    return false;
}

/* One AssumeRoleWithWebIdentity, with retries. Called with p->lock held. */
static int sts_fetch(ferry_aws_provider *p, ferry_aws_credentials *ret, char *errbuf, size_t errlen)
{
    char *token = NULL;
    char dur[16];
    ferry_buf form;
    int r;

    if (p->web_identity)
        r = p->web_identity(p->web_identity_userdata, p->audience, &token, errbuf, errlen);
    else
        r = read_token_file(p->token_file, &token, errbuf, errlen);
    if (r < 0)
        return r;
    if (!token || !*token || strlen(token) > FERRY_AWS_TOKEN_MAX) {
        if (token) {
            ferry_wipe(token, strlen(token));
            free(token);
        }
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "web identity token: empty or too long");
    }
    snprintf(dur, sizeof(dur), "%u", p->duration);
    ferry_buf_init(&form, 3 * FERRY_AWS_TOKEN_MAX + 8192, true);
    r = ferry_buf_append_form(&form, "Action", "AssumeRoleWithWebIdentity");
    if (r >= 0)
        r = ferry_buf_append_form(&form, "Version", AWS_STS_VERSION);
    if (r >= 0)
        r = ferry_buf_append_form(&form, "RoleArn", p->role_arn);
    if (r >= 0)
        r = ferry_buf_append_form(&form, "RoleSessionName", p->session_name);
    if (r >= 0)
        r = ferry_buf_append_form(&form, "DurationSeconds", dur);
    if (r >= 0)
        r = ferry_buf_append_form(&form, "WebIdentityToken", token);
    ferry_wipe(token, strlen(token));
    free(token);
    if (r < 0) {
        ferry_buf_release(&form);
        return r == -E2BIG ? -FERRY_ETOOBIG : r;
    }

    static const char *const headers[] = {
        "Content-Type: application/x-www-form-urlencoded; charset=utf-8",
        "Accept: text/xml",
    };
    ferry_http_request req = {
        .method = "POST",
        .url = p->sts_url,
        .headers = headers,
        .n_headers = ARRAY_SIZE(headers),
        .body = form.data,
        .body_len = form.len,
        .sensitive = true,
    };
    ferry_http_options o = p->http;
    o.max_response = FERRY_AWS_STS_RESPONSE_MAX;
    o.max_redirects = 0;

    long budget_ms = AWS_RETRY_BUDGET_MS;
    for (int attempt = 0;; attempt++) {
        ferry_http_response resp = {0};

        int64_t t0 = ferry_mono_ms();
        r = ferry_http_request_send(&req, &o, &resp);
        bool network = r == -FERRY_EFETCH, answered = r >= 0;
        if (r < 0)
            r = transport_error(r, "STS", &o, t0, errbuf, errlen);
        else if (resp.status == 200) {
            if (!ferry_http_media_type_is(resp.content_type, "text/xml") &&
                !ferry_http_media_type_is(resp.content_type, "application/xml"))
                r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                         "STS AssumeRoleWithWebIdentity: answer is not text/xml");
            else
                r = ferry_aws_sts_parse(resp.body, resp.body_len, ret, errbuf, errlen);
        } else {
            char why[160];
            r = ferry_aws_error(resp.status, resp.body, resp.body_len, why, sizeof(why));
            (void)fail(errbuf, errlen, r, "STS AssumeRoleWithWebIdentity: %s", why);
        }
        if ((r != -EAGAIN && !network) ||
            !retry_pause(answered ? &resp : NULL, attempt, &budget_ms, errbuf, errlen)) {
            ferry_http_response_release(&resp);
            break;
        }
        ferry_http_response_release(&resp);
    }
    ferry_buf_release(&form);
    return r;
}

static int env_credentials(ferry_aws_credentials *ret, char *errbuf, size_t errlen)
{
    const char *id = secure_getenv("AWS_ACCESS_KEY_ID");
    const char *key = secure_getenv("AWS_SECRET_ACCESS_KEY");
    const char *tok = secure_getenv("AWS_SESSION_TOKEN");
    ferry_aws_credentials c = {0};

    if (!id || !key || !*id || !*key)
        return fail(errbuf, errlen, -FERRY_ECONFIG,
                    "AWS credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not both "
                    "set");
    if (strlen(id) < 16 || strlen(id) > 128 || !all_alnum(id, strlen(id)))
        return fail(errbuf, errlen, -FERRY_ECONFIG,
                    "AWS_ACCESS_KEY_ID: not 16..128 letters and digits");
    if (strlen(key) > FERRY_SIGV4_MAX_SECRET || !all_printable(key, strlen(key)))
        return fail(errbuf, errlen, -FERRY_ECONFIG,
                    "AWS_SECRET_ACCESS_KEY: not printable or too long");
    if (tok && *tok && (strlen(tok) > FERRY_AWS_TOKEN_MAX || !all_printable(tok, strlen(tok))))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "AWS_SESSION_TOKEN: not printable or too long");
    memcpy(c.access_key_id, id, strlen(id));
    c.secret_access_key = strdup(key);
    if (tok && *tok)
        c.session_token = strdup(tok);
    if (!c.secret_access_key || (tok && *tok && !c.session_token)) {
        ferry_aws_credentials_clear(&c);
        return -ENOMEM;
    }
    *ret = c;
    return 0;
}

/* Static keys: the environment's, else the profile's (both read again on each call, so a
 * rotated key is picked up). */
static int static_credentials(ferry_aws_provider *p, ferry_aws_credentials *ret, char *errbuf,
                              size_t errlen)
{
    const char *id = secure_getenv("AWS_ACCESS_KEY_ID");
    ferry_aws_profile prof = {0};
    char why[384];
    int r;

    if (id && *id)
        return env_credentials(ret, errbuf, errlen);
    r = ferry_aws_profile_load(p->profile, &prof, why, sizeof(why));
    if (r == 0 && !prof.creds.access_key_id[0])
        r = fail(why, sizeof(why), -ENOENT, "AWS profile %s: holds no static keys", prof.name);
    if (r < 0) {
        ferry_aws_profile_clear(&prof);
        return fail(errbuf, errlen, r == -ENOENT ? -FERRY_ECONFIG : r,
                    "AWS credentials: no role_arn configured, AWS_ACCESS_KEY_ID and "
                    "AWS_ROLE_ARN / AWS_WEB_IDENTITY_TOKEN_FILE not set, and %s",
                    why);
    }
    *ret = prof.creds;
    prof.creds = (ferry_aws_credentials){0};
    ferry_aws_profile_clear(&prof);
    return 0;
}

static bool cache_fresh(const ferry_aws_provider *p, int64_t now)
{
    int64_t life, margin;

    if (!p->cached.access_key_id[0])
        return false;
    life = p->cached.expiration - p->obtained;
    margin = life / 2 < AWS_REFRESH_MARGIN ? life / 2 : AWS_REFRESH_MARGIN;
    return now < p->cached.expiration - margin;
}

FERRY_EXPORT int ferry_aws_provider_get(ferry_aws_provider *p, ferry_aws_credentials *ret,
                                        char *errbuf, size_t errlen)
{
    int r;

    if (!p || !ret)
        return -EINVAL;
    if (!p->role_arn)
        return static_credentials(p, ret, errbuf, errlen);
    pthread_mutex_lock(&p->lock);
    if (!cache_fresh(p, now_s())) {
        ferry_aws_credentials fresh = {0};
        int64_t t0 = now_s();

        r = sts_fetch(p, &fresh, errbuf, errlen);
        if (r < 0) {
            pthread_mutex_unlock(&p->lock);
            return r;
        }
        if (fresh.expiration <= t0) {
            ferry_aws_credentials_clear(&fresh);
            pthread_mutex_unlock(&p->lock);
            return fail(errbuf, errlen, -FERRY_EMALFORMED,
                        "STS response: credentials already expired");
        }
        ferry_aws_credentials_clear(&p->cached);
        p->cached = fresh;
        p->obtained = t0;
    }
    r = credentials_copy(&p->cached, ret);
    pthread_mutex_unlock(&p->lock);
    return r;
}

FERRY_EXPORT void ferry_aws_provider_invalidate(ferry_aws_provider *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    ferry_aws_credentials_clear(&p->cached);
    pthread_mutex_unlock(&p->lock);
}

/* ---- signed JSON 1.1 calls --------------------------------------------------------------- */

/* "GetSecretValue" of "secretsmanager.GetSecretValue": the operation, for reasons. */
static const char *target_op(const char *target)
{
    const char *dot = strrchr(target, '.');

    return dot ? dot + 1 : target;
}

/* One signed POST of body (content type ctype; X-Amz-Target target unless NULL), signed for
 * region and service. */
static int signed_post(const char *region, const ferry_aws_credentials *c, const char *url,
                       const char *host, const char *service, const char *ctype, const char *target,
                       const char *body, size_t body_len, const ferry_http_options *o,
                       ferry_http_response *resp, char *errbuf, size_t errlen)
{
    char target_h[160], ctype_h[128];
    const ferry_sigv4_header sh[] = {
        {"Host", host},
        {"Content-Type", ctype},
        {"X-Amz-Target", target},
    };
    ferry_sigv4_credentials sc = {c->access_key_id, c->secret_access_key, c->session_token};
    ferry_sigv4_request sr = {.method = "POST",
                              .path = "/",
                              .headers = sh,
                              .n_headers = target ? ARRAY_SIZE(sh) : ARRAY_SIZE(sh) - 1,
                              .body = body,
                              .body_len = body_len};
    ferry_sigv4_params sp = {.region = region, .service = service, .time = now_s()};
    ferry_sigv4_result res = {0};
    const char *lines[16];
    char *alloc[8] = {0};
    size_t n = 0, na = 0;
    char host_h[320];
    int r;

    r = ferry_sigv4_sign(&sc, &sr, &sp, &res, errbuf, errlen);
    if (r < 0)
        return r;
    snprintf(host_h, sizeof(host_h), "Host: %s", host);
    snprintf(ctype_h, sizeof(ctype_h), "Content-Type: %s", ctype);
    lines[n++] = host_h;
    lines[n++] = ctype_h;
    if (target) {
        snprintf(target_h, sizeof(target_h), "X-Amz-Target: %s", target);
        lines[n++] = target_h;
    }
    for (size_t i = 0; i < res.n_add_headers && na < ARRAY_SIZE(alloc); i++) {
        size_t l = strlen(res.add_headers[i].name) + strlen(res.add_headers[i].value) + 3;
        char *line = malloc(l);
        if (!line) {
            r = -ENOMEM;
            goto out;
        }
        snprintf(line, l, "%s: %s", res.add_headers[i].name, res.add_headers[i].value);
        alloc[na++] = line;
        lines[n++] = line;
    }
    {
        ferry_http_request req = {.method = "POST",
                                  .url = url,
                                  .headers = lines,
                                  .n_headers = n,
                                  .body = body,
                                  .body_len = body_len,
                                  .sensitive = true};
        r = ferry_http_request_send(&req, o, resp);
    }
out:
    for (size_t i = 0; i < na; i++) {
        ferry_wipe(alloc[i], strlen(alloc[i]));
        free(alloc[i]);
    }
    ferry_sigv4_result_clear(&res);
    return r;
}

/* The one signed-call loop of the JSON 1.1 and Query protocols: sign for region/service,
 * POST body as ctype (with X-Amz-Target target unless NULL), retry throttling, 5xx and network
 * failures by the retry rule, drop refused role credentials once. xml: the answer must be XML
 * (Query), else JSON. op names the operation in reasons. keep_error: on an HTTP error answer,
 * leave it in *ret too (the caller releases it). */
static int aws_signed_call(ferry_aws_provider *p, const char *endpoint, const char *region,
                           const char *service, const char *ctype, const char *target,
                           const char *op, const char *body, size_t body_len, size_t max_response,
                           bool xml, bool keep_error, ferry_http_response *ret, char *errbuf,
                           size_t errlen)
{
    char url[600], host[300];
    const char *h, *slash;
    bool retried_auth = false;
    int r;

    if (endpoint)
        snprintf(url, sizeof(url), "%s", endpoint);
    else
        snprintf(url, sizeof(url), "https://%s.%s.amazonaws.com/", service, region);
    r = endpoint_check(url, &p->http, errbuf, errlen, service);
    if (r < 0)
        return r;
    h = strstr(url, "://") + 3;
    slash = strchr(h, '/');
    snprintf(host, sizeof(host), "%.*s", (int)(slash ? (size_t)(slash - h) : strlen(h)), h);
    if (!slash && strlen(url) + 2 <= sizeof(url))
        strncat(url, "/", 2);

    ferry_http_options o = p->http;
    long budget_ms = AWS_RETRY_BUDGET_MS;
    o.max_response = max_response;
    o.max_redirects = 0;
    for (int attempt = 0;; attempt++) {
        ferry_aws_credentials c = {0};
        ferry_http_response resp = {0};

        r = ferry_aws_provider_get(p, &c, errbuf, errlen);
        if (r < 0)
            return r;
        int64_t t0 = ferry_mono_ms();
        r = signed_post(region, &c, url, host, service, ctype, target, body, body_len, &o, &resp,
                        errbuf, errlen);
        ferry_aws_credentials_clear(&c);
        bool network = r == -FERRY_EFETCH, answered = r >= 0;
        if (r < 0)
            r = transport_error(r, service, &o, t0, errbuf, errlen);
        else if (resp.status == 200) {
            /* moto_server answers Secrets Manager with text/html; a plain-http endpoint exists
             * only with allow_http_loopback (tests), so only there is text/html let through
             * (the body must still be JSON). Any other type is refused everywhere. */
            bool moto_html = strncmp(url, "http://", 7) == 0 && resp.content_type &&
                             strncasecmp(resp.content_type, "text/html", 9) == 0;
            bool ok =
                xml ? ferry_http_media_type_is(resp.content_type, "text/xml") ||
                          ferry_http_media_type_is(resp.content_type, "application/xml")
                    : ferry_http_media_type_is(resp.content_type, "application/x-amz-json-1.1") ||
                          ferry_http_media_type_is(resp.content_type,
                                                   "application/x-amz-json-1.0") ||
                          ferry_http_media_type_is(resp.content_type, "application/json") ||
                          moto_html;
            if (!ok) {
                ferry_http_response_release(&resp);
                return fail(errbuf, errlen, -FERRY_EMALFORMED, "%s %s: answer is not %s", service,
                            op, xml ? "XML" : "application/x-amz-json-1.1");
            }
            *ret = resp;
            return 0;
        } else {
            char why[160];
            r = ferry_aws_error(resp.status, resp.body, resp.body_len, why, sizeof(why));
            (void)fail(errbuf, errlen, r, "%s %s: %s", service, op, why);
        }
        if (r == -EACCES && !retried_auth && p->role_arn) {
            /* Credentials may have been revoked early: fetch fresh ones once. */
            ferry_http_response_release(&resp);
            retried_auth = true;
            ferry_aws_provider_invalidate(p);
            continue;
        }
        if ((r != -EAGAIN && !network) ||
            !retry_pause(answered ? &resp : NULL, attempt, &budget_ms, errbuf, errlen)) {
            if (keep_error && answered)
                *ret = resp;
            else
                ferry_http_response_release(&resp);
            return r;
        }
        ferry_http_response_release(&resp);
    }
}

FERRY_EXPORT int ferry_aws_json_call(ferry_aws_provider *p, const char *endpoint,
                                     const char *service, const char *target, const char *body,
                                     size_t body_len, size_t max_response, ferry_http_response *ret,
                                     char *errbuf, size_t errlen)
{
    if (!p || !service || !target || !body || !ret || strlen(target) > 128 || !region_ok(service))
        return -EINVAL;
    return aws_signed_call(p, endpoint, p->region, service, "application/x-amz-json-1.1", target,
                           target_op(target), body, body_len, max_response, false, false, ret,
                           errbuf, errlen);
}

FERRY_EXPORT int ferry_aws_query_call(ferry_aws_provider *p, const char *endpoint,
                                      const char *region, const char *service, const char *action,
                                      const char *form, size_t form_len, size_t max_response,
                                      ferry_http_response *ret, char *errbuf, size_t errlen)
{
    if (!p || !service || !action || !form || !ret || strlen(action) > 128 || !region_ok(service) ||
        (region && !region_ok(region)))
        return -EINVAL;
    *ret = (ferry_http_response){0};
    return aws_signed_call(p, endpoint, region ? region : p->region, service,
                           "application/x-www-form-urlencoded; charset=utf-8", NULL, action, form,
                           form_len, max_response, true, true, ret, errbuf, errlen);
}
