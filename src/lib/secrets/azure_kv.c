/* lib/secrets/azure_kv.c - the azure-kv secret backend: Azure Key Vault secrets (REST
 * api-version 7.4+), read with an Entra ID access token obtained by workload identity
 * federation: a ferry-minted JWT is the client assertion of a client_credentials grant at the
 * Entra ID v2 token endpoint. docs/internals/secrets.md ("Azure Key Vault").
 *
 * Configuration ("azure-kv" section), members:
 *   tenant_id, client_id (required, GUIDs), authority_host (https://login.microsoftonline.com),
 *   audience of the assertion (api://AzureADTokenExchange), vault_url (a template holding
 *   "{vault}" once; https://{vault}.vault.azure.net), api_version (7.4), allow_http_loopback,
 *   ca_file, timeout_ms, max_retry_wait_ms (waiting for retries per fetch, 5000),
 *   verify_challenge_resource (true). Unknown members are refused. There is no client secret
 *   option: the only credential is the workload identity.
 *
 * The access token is cached under a mutex (held across a token request, so requests
 * single-flight), renewed a tenth of its lifetime (at most 5 minutes) before it expires, and
 * wiped when dropped. A 401 carrying a Bearer challenge is followed once, as the official
 * client does, only for the configured authority host and tenant, and (unless configured off)
 * a resource in the vault's parent domain. Neither Key Vault's nor Entra ID's error text ever
 * reaches a reason; only their short error codes do.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "basic/buf.h"
#include "basic/clock.h"
#include "basic/errbuf.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/http.h"
#include "ferry/json.h"
#include "lib/secrets/azure-internal.h"
#include "lib/secrets/secrets-internal.h"

#define AZ_RESPONSE_MAX (256 * 1024) /* a SecretBundle or a token answer */
#define AZ_TOKEN_MAX 16384           /* bytes of an access token */
#define AZ_MAX_ATTEMPTS 4            /* per request, for 429, 5xx and network failures */
#define AZ_BACKOFF_BASE_MS 100
#define AZ_URL_MAX 2048
#define AZ_SCOPE_MAX FERRY_AZURE_PARAM_MAX
#define AZ_DEFAULT_AUTHORITY "https://login.microsoftonline.com"
#define AZ_DEFAULT_AUDIENCE "api://AzureADTokenExchange"
#define AZ_DEFAULT_VAULT_URL "https://{vault}.vault.azure.net"
#define AZ_DEFAULT_SCOPE "https://vault.azure.net/.default"
#define AZ_DEFAULT_API "7.4"
#define AZ_DEFAULT_MAX_WAIT_MS 5000
#define AZ_TIMEOUT_SLACK_MS 20 /* a network failure this close to timeout_ms is the timeout */

typedef struct az_state {
    char *tenant, *client_id; /* lower case */
    char *authority;          /* authority host, no trailing '/' */
    char *audience, *vault_url, *api_version;
    bool verify_resource;
    long max_retry_wait_ms;
    ferry_http_options http;
    int (*web_identity)(void *userdata, const char *audience, char **ret_token, char *errbuf,
                        size_t errlen);
    void *web_identity_userdata;

    pthread_mutex_t lock;         /* guards what follows; held across a token request */
    char *token;                  /* cached access token (wiped when dropped) or NULL */
    char scope[AZ_SCOPE_MAX + 1]; /* the scope tokens are asked for (a challenge sets it) */
    int64_t refresh_at;           /* monotonic seconds: get a new token from here */
} az_state;

#define fail(...) ferry_errbuf_set(__VA_ARGS__)

static bool printable_nospace(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~')
            return false;
    return true;
}

/* Append the reason's tail ", after N attempts" etc. without overflowing errbuf. */
static void errbuf_append(char *errbuf, size_t errlen, const char *tail)
{
    size_t l = errbuf && errlen ? strlen(errbuf) : 0;

    if (errbuf && l + 1 < errlen)
        snprintf(errbuf + l, errlen - l, "%s", tail);
}

/* ---- parsers -------------------------------------------------------------------------------- */

static bool code_ok(const json_t *v)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);

    if (!s || n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalpha((unsigned char)s[i]) && s[i] != '_')
            return false;
    return true;
}

void ferry_azure_error_code(const char *body, size_t len, char *ret, size_t retlen)
{
    json_t *j = NULL, *e, *c, *inner;

    if (!ret || retlen == 0)
        return;
    ret[0] = '\0';
    if (!body || ferry_json_parse(body, len, AZ_RESPONSE_MAX, 16, &j, NULL, 0) < 0)
        return;
    e = json_object_get(j, "error");
    if (json_is_string(e)) {
        if (code_ok(e))
            snprintf(ret, retlen, "%s", json_string_value(e));
    } else if (json_is_object(e)) {
        c = json_object_get(e, "code");
        inner = json_object_get(json_object_get(e, "innererror"), "code");
        if (code_ok(c))
            snprintf(ret, retlen, "%s%s%s", json_string_value(c), code_ok(inner) ? "/" : "",
                     code_ok(inner) ? json_string_value(inner) : "");
    }
    ferry_json_wipe_strings(j);
    json_decref(j);
}

int ferry_azure_token_parse(const char *body, size_t len, char **ret_token, int64_t *ret_expires_in,
                            char *errbuf, size_t errlen)
{
    json_t *j = NULL, *tok, *type, *exp;
    long long secs = -1;
    char *t;
    int r;

    if (!body || !ret_token || !ret_expires_in)
        return -EINVAL;
    r = ferry_json_parse(body, len, AZ_RESPONSE_MAX, 16, &j, NULL, 0);
    if (r < 0)
        return fail(errbuf, errlen, r == -FERRY_ETOOBIG ? r : -FERRY_EMALFORMED,
                    "token answer: not a JSON document%s",
                    r == -FERRY_ETOOBIG ? " within the limits" : "");
    tok = json_object_get(j, "access_token");
    type = json_object_get(j, "token_type");
    exp = json_object_get(j, "expires_in");
    if (!json_is_object(j) || !json_is_string(tok) || json_string_length(tok) == 0 ||
        json_string_length(tok) > AZ_TOKEN_MAX ||
        !printable_nospace(json_string_value(tok), json_string_length(tok))) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "token answer: access_token is missing or not a token");
        goto out;
    }
    if (!json_is_string(type) || strcasecmp(json_string_value(type), "Bearer") != 0) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "token answer: token_type is not Bearer");
        goto out;
    }
    if (json_is_integer(exp))
        secs = json_integer_value(exp);
    else if (json_is_string(exp) && ferry_parse_int64(json_string_value(exp), &secs) < 0)
        secs = -1;
    if (secs < 1 || secs > 86400) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "token answer: expires_in is not a number of seconds 1..86400");
        goto out;
    }
    t = strdup(json_string_value(tok));
    if (!t) {
        r = -ENOMEM;
        goto out;
    }
    *ret_token = t;
    *ret_expires_in = secs;
    r = 0;
out:
    ferry_json_wipe_strings(j);
    json_decref(j);
    return r;
}

/* An optional integer attribute (Unix seconds); false when present but not one. */
static bool attr_time(const json_t *attrs, const char *name, bool *present, int64_t *ret)
{
    const json_t *v = json_object_get(attrs, name);

    *present = v != NULL && !json_is_null(v);
    if (!*present)
        return true;
    if (!json_is_integer(v))
        return false;
    *ret = (int64_t)json_integer_value(v);
    return true;
}

int ferry_azure_secret_parse(const char *body, size_t len, const char *name, const char *version,
                             int64_t now, ferry_secret_value **ret, char *errbuf, size_t errlen)
{
    json_t *j = NULL, *val, *id, *attrs, *en;
    ferry_secret_value *v = NULL;
    const char *ids, *ver, *p;
    size_t n, vlen, nlen;
    int64_t exp = 0, nbf = 0;
    bool has_exp, has_nbf;
    int r;

    if (!body || !name || !version || !ret)
        return -EINVAL;
    r = ferry_json_parse(body, len, AZ_RESPONSE_MAX, 16, &j, NULL, 0);
    if (r < 0)
        return fail(errbuf, errlen, r == -FERRY_ETOOBIG ? r : -FERRY_EMALFORMED,
                    "SecretBundle: not a JSON document%s",
                    r == -FERRY_ETOOBIG ? " within the limits" : "");
    val = json_object_get(j, "value");
    id = json_object_get(j, "id");
    attrs = json_object_get(j, "attributes");
    if (!json_is_object(j) || !json_is_string(val)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "SecretBundle: no string \"value\"");
        goto out;
    }
    if (!json_is_string(id) || json_string_length(id) > AZ_URL_MAX) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "SecretBundle: no string \"id\"");
        goto out;
    }
    /* id: https://<vault>.vault.azure.net/secrets/<name>/<version> */
    ids = json_string_value(id);
    n = json_string_length(id);
    p = memrchr(ids, '/', n);
    ver = p ? p + 1 : NULL;
    vlen = ver ? n - (size_t)(ver - ids) : 0;
    nlen = strlen(name);
    if (!ver || vlen == 0 || vlen > FERRY_SECRET_VERSION_MAX || !printable_nospace(ver, vlen) ||
        strchr(ver, '?') || (size_t)(p - ids) < nlen + 9 ||
        strncasecmp(p - nlen - 9, "/secrets/", 9) != 0 || strncasecmp(p - nlen, name, nlen) != 0) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "SecretBundle: id does not end in /secrets/%s/<version>", name);
        goto out;
    }
    for (size_t i = 0; i < vlen; i++)
        if (!isalnum((unsigned char)ver[i])) {
            r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                     "SecretBundle: the version in id is not alphanumeric");
            goto out;
        }
    if (version[0] && (strlen(version) != vlen || strncasecmp(version, ver, vlen) != 0)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "SecretBundle: id names another version than the one asked for");
        goto out;
    }
    if (attrs && !json_is_object(attrs)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "SecretBundle: attributes is not an object");
        goto out;
    }
    en = json_object_get(attrs, "enabled");
    if (en && !json_is_boolean(en)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "SecretBundle: attributes.enabled is not a boolean");
        goto out;
    }
    if (!attr_time(attrs, "exp", &has_exp, &exp) || !attr_time(attrs, "nbf", &has_nbf, &nbf)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "SecretBundle: attributes.exp or nbf is not a number of seconds");
        goto out;
    }
    if (json_is_false(en)) {
        r = fail(errbuf, errlen, -EACCES, "the secret is disabled (attributes.enabled false)");
        goto out;
    }
    if (has_exp && exp <= now) {
        r = fail(errbuf, errlen, -EACCES, "the secret has expired (attributes.exp is past)");
        goto out;
    }
    if (has_nbf && nbf > now) {
        r = fail(errbuf, errlen, -EACCES, "the secret is not valid yet (attributes.nbf is ahead)");
        goto out;
    }
    n = json_string_length(val);
    if (n > FERRY_SECRET_VALUE_MAX) {
        r = fail(errbuf, errlen, -FERRY_ETOOBIG, "SecretBundle: the value is over 64 KiB");
        goto out;
    }
    r = ferry_secret_value_new(n, &v);
    if (r < 0)
        goto out;
    memcpy(v->data, json_string_value(val), n);
    memcpy(v->version, ver, vlen);
    v->version[vlen] = '\0';
    if (has_exp)
        v->ttl_hint = exp - now > UINT32_MAX ? UINT32_MAX : (uint32_t)(exp - now);
    *ret = TAKE_PTR(v);
    r = 0;
out:
    ferry_secret_value_free(v);
    ferry_json_wipe_strings(j);
    json_decref(j);
    return r;
}

/* ---- the 401 challenge ----------------------------------------------------------------------- */

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

static bool tchar(char c)
{
    return isalnum((unsigned char)c) || (c && strchr("!#$%&'*+-.^_`|~/:", c));
}

int ferry_azure_challenge_parse(const char *header, ferry_azure_challenge *ret, char *errbuf,
                                size_t errlen)
{
    ferry_azure_challenge ch;
    const char *p;

    if (!header || !ret)
        return -EINVAL;
    if (strnlen(header, FERRY_AZURE_CHALLENGE_MAX + 1) > FERRY_AZURE_CHALLENGE_MAX)
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "challenge: WWW-Authenticate too long");
    memset(&ch, 0, sizeof(ch));
    p = skip_ws(header);
    if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t'))
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "challenge: not a Bearer challenge");
    p += 6;
    for (;;) {
        const char *name, *val;
        size_t nlen, vlen;
        char *dst = NULL;

        p = skip_ws(p);
        while (*p == ',')
            p = skip_ws(p + 1);
        if (!*p)
            break;
        name = p;
        while (isalnum((unsigned char)*p) || *p == '_' || *p == '-')
            p++;
        nlen = (size_t)(p - name);
        p = skip_ws(p);
        if (nlen == 0)
            return fail(errbuf, errlen, -FERRY_EMALFORMED, "challenge: a parameter has no name");
        if (*p != '=') {
            /* A name without '=' starts the next challenge (another scheme): done. */
            break;
        }
        p = skip_ws(p + 1);
        if (*p == '"') {
            val = ++p;
            while (*p && *p != '"') {
                if (*p == '\\' || *p < ' ' || *p > '~')
                    return fail(errbuf, errlen, -FERRY_EMALFORMED,
                                "challenge: a quoted value holds an escape or a control byte");
                p++;
            }
            if (*p != '"')
                return fail(errbuf, errlen, -FERRY_EMALFORMED, "challenge: unterminated quote");
            vlen = (size_t)(p - val);
            p++;
        } else {
            val = p;
            while (tchar(*p))
                p++;
            vlen = (size_t)(p - val);
        }
        p = skip_ws(p);
        if (*p && *p != ',')
            return fail(errbuf, errlen, -FERRY_EMALFORMED, "challenge: junk after a parameter");
        if (vlen > FERRY_AZURE_PARAM_MAX)
            return fail(errbuf, errlen, -FERRY_EMALFORMED, "challenge: a parameter is too long");
        if ((nlen == 13 && strncasecmp(name, "authorization", 13) == 0) ||
            (nlen == 17 && strncasecmp(name, "authorization_uri", 17) == 0))
            dst = ch.authority;
        else if (nlen == 8 && strncasecmp(name, "resource", 8) == 0)
            dst = ch.resource;
        else if (nlen == 5 && strncasecmp(name, "scope", 5) == 0)
            dst = ch.scope;
        if (dst) {
            if (dst[0])
                return fail(errbuf, errlen, -FERRY_EMALFORMED,
                            "challenge: a parameter is given twice");
            memcpy(dst, val, vlen);
            dst[vlen] = '\0';
        }
    }
    if (!ch.authority[0])
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "challenge: no authorization parameter");
    if (!ch.resource[0] && !ch.scope[0])
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "challenge: no resource or scope");
    *ret = ch;
    return 0;
}

/* The host of an https URL (between "https://" and the next ':' '/' or end), lower-cased into
 * out; false when url is not https or the host is empty or too long. */
static bool https_host(const char *url, char *out, size_t outlen)
{
    const char *h, *e;
    size_t n;

    if (strncasecmp(url, "https://", 8) != 0)
        return false;
    h = url + 8;
    e = h + strcspn(h, ":/?#");
    n = (size_t)(e - h);
    if (n == 0 || n >= outlen || memchr(h, '@', n))
        return false;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)h[i]);
    out[n] = '\0';
    return true;
}

int ferry_azure_challenge_scope(const ferry_azure_challenge *ch, const char *authority_host,
                                const char *tenant, const char *vault_host, bool verify_resource,
                                char *ret_scope, size_t scope_len, char *errbuf, size_t errlen)
{
    size_t alen, tlen, rlen, vlen;
    const char *rest, *res;
    char host[256];

    if (!ch || !authority_host || !tenant || !vault_host || !ret_scope)
        return -EINVAL;
    alen = strlen(authority_host);
    tlen = strlen(tenant);
    rest = ch->authority + alen;
    if (strncasecmp(ch->authority, authority_host, alen) != 0 || rest[0] != '/' ||
        strncasecmp(rest + 1, tenant, tlen) != 0 ||
        !(rest[1 + tlen] == '\0' || (rest[1 + tlen] == '/' && rest[2 + tlen] == '\0'))) {
        bool same_host = strncasecmp(ch->authority, authority_host, alen) == 0 && rest[0] == '/';
        return fail(errbuf, errlen, -FERRY_EPOLICY,
                    "challenge: the authority is not %s (refused: ferry sends its assertion only "
                    "to the configured authority host and tenant)",
                    same_host ? "the configured tenant" : "the configured authority host");
    }
    res = ch->resource[0] ? ch->resource : ch->scope;
    if (!https_host(res, host, sizeof(host)) || !printable_nospace(res, strlen(res)))
        return fail(errbuf, errlen, -FERRY_EPOLICY, "challenge: the %s is not an https URL",
                    ch->resource[0] ? "resource" : "scope");
    rlen = strlen(host);
    vlen = strlen(vault_host);
    if (verify_resource && !(vlen > rlen + 1 && vault_host[vlen - rlen - 1] == '.' &&
                             strcasecmp(vault_host + vlen - rlen, host) == 0))
        return fail(errbuf, errlen, -FERRY_EPOLICY,
                    "challenge: the resource's domain \"%.100s\" does not match the vault's host "
                    "(challenge resource verification)",
                    host);
    if (ch->resource[0]) {
        size_t n = strlen(ch->resource);
        while (n > 0 && ch->resource[n - 1] == '/')
            n--;
        if (n + sizeof("/.default") > scope_len)
            return fail(errbuf, errlen, -FERRY_EPOLICY, "challenge: the resource is too long");
        snprintf(ret_scope, scope_len, "%.*s/.default", (int)n, ch->resource);
    } else {
        if (strlen(ch->scope) >= scope_len)
            return fail(errbuf, errlen, -FERRY_EPOLICY, "challenge: the scope is too long");
        snprintf(ret_scope, scope_len, "%s", ch->scope);
    }
    return 0;
}

/* ---- configuration ------------------------------------------------------------------------ */

static void az_close(void *state)
{
    az_state *st = state;

    if (!st)
        return;
    ferry_free_secret_str(st->token);
    pthread_mutex_destroy(&st->lock);
    free(st->tenant);
    free(st->client_id);
    free(st->authority);
    free(st->audience);
    free(st->vault_url);
    free(st->api_version);
    free((char *)st->http.ca_file);
    free(st);
}

static bool guid_ok(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
    }
    return true;
}

/* A string member copied into *ret (NULL when absent, then def is copied when given): 1..max
 * bytes of printable ASCII without spaces. */
static int conf_string(const json_t *conf, const char *name, size_t max, const char *def,
                       char **ret, char *errbuf, size_t errlen)
{
    const json_t *v = json_object_get(conf, name);
    const char *s = def;

    if (v) {
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max ||
            !printable_nospace(json_string_value(v), json_string_length(v)))
            return fail(errbuf, errlen, -FERRY_ECONFIG,
                        "%s: must be a string of 1..%zu printable characters without spaces", name,
                        max);
        s = json_string_value(v);
    }
    *ret = s ? strdup(s) : NULL;
    return s && !*ret ? -ENOMEM : 0;
}

/* The vault's base URL: the template with {vault} replaced, no trailing '/'. */
static int vault_base(const az_state *st, const char *vault, char *out, size_t outlen)
{
    const char *at = strstr(st->vault_url, "{vault}");
    int n;

    if (!at)
        return -EINVAL;
    n = snprintf(out, outlen, "%.*s%s%s", (int)(at - st->vault_url), st->vault_url, vault,
                 at + strlen("{vault}"));
    return n < 0 || (size_t)n >= outlen ? -FERRY_ETOOBIG : 0;
}

static int az_open(const json_t *conf, const ferry_secrets_env *env, void **ret_state, char *errbuf,
                   size_t errlen)
{
    static const char *const known[] = {
        "tenant_id",  "client_id",         "authority_host",           "audience",
        "vault_url",  "api_version",       "allow_http_loopback",      "ca_file",
        "timeout_ms", "max_retry_wait_ms", "verify_challenge_resource"};
    const char *key;
    json_t *v;
    az_state *st;
    char *ca = NULL, probe[AZ_URL_MAX + 64];
    long timeout = 0;
    size_t n;
    int r;

    if (!conf || !json_is_object(conf))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "needs a configuration (tenant_id, client_id)");
    json_object_foreach((json_t *)conf, key, v)
    {
        size_t i;
        for (i = 0; i < ARRAY_SIZE(known); i++)
            if (strcmp(key, known[i]) == 0)
                break;
        if (i == ARRAY_SIZE(known))
            return fail(errbuf, errlen, -FERRY_ECONFIG, "unknown member \"%.64s\"%s", key,
                        strstr(key, "secret") ? " (azure-kv has no client secret: it signs in "
                                                "with ferry's workload identity only)"
                                              : "");
    }
    st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        free(st);
        return -ENOMEM;
    }
    snprintf(st->scope, sizeof(st->scope), "%s", AZ_DEFAULT_SCOPE);
    if ((r = conf_string(conf, "tenant_id", 36, NULL, &st->tenant, errbuf, errlen)) < 0 ||
        (r = conf_string(conf, "client_id", 36, NULL, &st->client_id, errbuf, errlen)) < 0 ||
        (r = conf_string(conf, "authority_host", 512, AZ_DEFAULT_AUTHORITY, &st->authority, errbuf,
                         errlen)) < 0 ||
        (r = conf_string(conf, "audience", 512, AZ_DEFAULT_AUDIENCE, &st->audience, errbuf,
                         errlen)) < 0 ||
        (r = conf_string(conf, "vault_url", 1024, AZ_DEFAULT_VAULT_URL, &st->vault_url, errbuf,
                         errlen)) < 0 ||
        (r = conf_string(conf, "api_version", 32, AZ_DEFAULT_API, &st->api_version, errbuf,
                         errlen)) < 0 ||
        (r = conf_string(conf, "ca_file", 4096, NULL, &ca, errbuf, errlen)) < 0)
        goto fail;
    st->http.ca_file = ca;
    if (!st->tenant || !guid_ok(st->tenant) || !st->client_id || !guid_ok(st->client_id)) {
        r = fail(errbuf, errlen, -FERRY_ECONFIG,
                 "%s: required, a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                 !st->tenant || !guid_ok(st->tenant) ? "tenant_id" : "client_id");
        goto fail;
    }
    for (char *p = st->tenant; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    for (char *p = st->client_id; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    for (const char *p = st->api_version; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-') {
            r = fail(errbuf, errlen, -FERRY_ECONFIG,
                     "api_version: letters, digits, '.' and '-' only (e.g. 7.4)");
            goto fail;
        }
    if ((r = ferry_secrets_conf_bool(conf, "allow_http_loopback", false,
                                     &st->http.allow_http_loopback, errbuf, errlen)) < 0 ||
        (r = ferry_secrets_conf_bool(conf, "verify_challenge_resource", true, &st->verify_resource,
                                     errbuf, errlen)) < 0 ||
        (r = ferry_secrets_conf_int(conf, "timeout_ms", 100, 600000, 0, &timeout, errbuf, errlen)) <
            0 ||
        (r = ferry_secrets_conf_int(conf, "max_retry_wait_ms", 0, 60000, AZ_DEFAULT_MAX_WAIT_MS,
                                    &st->max_retry_wait_ms, errbuf, errlen)) < 0)
        goto fail;
    st->http.total_timeout_ms = timeout;
    st->http.max_redirects = 0;
    st->http.max_response = AZ_RESPONSE_MAX;

    n = strlen(st->authority);
    while (n > 0 && st->authority[n - 1] == '/')
        st->authority[--n] = '\0';
    if (n == 0 || strpbrk(st->authority, "?#@") ||
        strchr(st->authority + strcspn(st->authority, ":") + 3, '/') ||
        ferry_http_check_url(st->authority, &st->http) < 0) {
        r = fail(errbuf, errlen, -FERRY_ECONFIG,
                 "authority_host: refused (https://host[:port] without a path; http only to "
                 "127.0.0.1/[::1] with allow_http_loopback)");
        goto fail;
    }
    n = strlen(st->vault_url);
    while (n > 0 && st->vault_url[n - 1] == '/')
        st->vault_url[--n] = '\0';
    {
        const char *at = strstr(st->vault_url, "{vault}");
        if (!at || strstr(at + 1, "{vault}") || strpbrk(st->vault_url, "?#@") ||
            vault_base(st, "probe-vault", probe, sizeof(probe)) < 0 ||
            ferry_http_check_url(probe, &st->http) < 0) {
            r = fail(errbuf, errlen, -FERRY_ECONFIG,
                     "vault_url: refused (an https URL holding \"{vault}\" once, e.g. "
                     "https://{vault}.vault.azure.net; http only to 127.0.0.1/[::1] with "
                     "allow_http_loopback)");
            goto fail;
        }
    }
    if (!env || !env->web_identity_token) {
        r = fail(errbuf, errlen, -FERRY_ECONFIG,
                 "needs ferry's identity to mint the client assertion (an \"identity\" "
                 "section)");
        goto fail;
    }
    st->web_identity = env->web_identity_token;
    st->web_identity_userdata = env->web_identity_userdata;
    *ret_state = st;
    return 0;
fail:
    az_close(st);
    return r;
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

/* Send req with retries for 429, 5xx and network failures, pausing with ferry_http_retry_pause
 * charged to *budget_ms. On success *ret is the final response (any other status). */
static int az_send(az_state *st, const ferry_http_request *req, long *budget_ms,
                   ferry_http_response *ret, char *errbuf, size_t errlen, const char *what)
{
    long timeout_ms = st->http.total_timeout_ms ? st->http.total_timeout_ms : 10000;
    int r;

    for (int attempt = 0;; attempt++) {
        ferry_http_response resp = {0};
        long status = 0, retry_after = -1;
        bool have_resp = false;
        int64_t t0 = ferry_mono_ms();
        int p;

        r = ferry_http_request_send(req, &st->http, &resp);
        if (r == -FERRY_ETOOBIG)
            return fail(errbuf, errlen, r, "%s: answer over %d bytes", what, AZ_RESPONSE_MAX);
        if (r == -FERRY_EPOLICY)
            return fail(errbuf, errlen, r, "%s: refused by the HTTP rules (redirect?)", what);
        if (r == 0 && resp.status != 429 && (resp.status < 500 || resp.status > 599)) {
            *ret = resp;
            return 0;
        }
        if (r == -FERRY_EFETCH && ferry_mono_ms() - t0 >= timeout_ms - AZ_TIMEOUT_SLACK_MS) {
            /* The HTTP client reports a timeout as any network failure: a failure at the
             * total timeout is the timeout. */
            r = fail(errbuf, errlen, -ETIMEDOUT, "%s: no answer within %ld ms", what, timeout_ms);
        } else if (r < 0) {
            r = fail(errbuf, errlen, r, "%s: request failed (%s)", what, ferry_strerror(r));
        } else {
            have_resp = true;
            status = resp.status;
            retry_after = resp.retry_after;
            r = fail(errbuf, errlen, -EAGAIN, "%s: %s (%ld)", what,
                     status == 429 ? "throttled" : "server error", status);
        }
        if (attempt + 1 >= AZ_MAX_ATTEMPTS) {
            char tail[48];
            snprintf(tail, sizeof(tail), ", after %d attempts", AZ_MAX_ATTEMPTS);
            errbuf_append(errbuf, errlen, tail);
            ferry_http_response_release(&resp);
            return r;
        }
        p = ferry_http_retry_pause(have_resp ? &resp : NULL, attempt, AZ_BACKOFF_BASE_MS,
                                   budget_ms);
        ferry_http_response_release(&resp);
        if (p < 0) {
            if (retry_after >= 0)
                return fail(errbuf, errlen, -EAGAIN,
                            "%s: %s (%ld), retry after %ld s: longer than this fetch may wait "
                            "(max_retry_wait_ms %ld)",
                            what, status == 429 ? "throttled" : "unavailable", status, retry_after,
                            st->max_retry_wait_ms);
            errbuf_append(errbuf, errlen, "; no time left to retry (max_retry_wait_ms)");
            return r;
        }
    }
}

static void drop_token(az_state *st)
{
    ferry_free_secret_str(st->token);
    st->token = NULL;
    st->refresh_at = 0;
}

/* Obtain a new access token for st->scope with a fresh client assertion. Lock held. */
static int token_request(az_state *st, long *budget_ms, char *errbuf, size_t errlen)
{
    static const char what[] = "Entra ID token request";
    char url[AZ_URL_MAX], why[256] = "", code[160];
    char *assertion = NULL, *body = NULL, *tok = NULL;
    const char *hdrs[] = {"Content-Type: application/x-www-form-urlencoded"};
    ferry_http_response resp = {0};
    ferry_buf form;
    int64_t expires_in = 0, margin;
    size_t blen = 0;
    int r;

    snprintf(url, sizeof(url), "%s/%s/oauth2/v2.0/token", st->authority, st->tenant);
    r = st->web_identity(st->web_identity_userdata, st->audience, &assertion, why, sizeof(why));
    if (r < 0)
        return fail(errbuf, errlen, r, "%s: the client assertion: %s", what,
                    why[0] ? why : ferry_strerror(r));
    ferry_buf_init(&form, 64 * 1024, true);
    if ((r = ferry_buf_append_form(&form, "grant_type", "client_credentials")) < 0 ||
        (r = ferry_buf_append_form(&form, "client_id", st->client_id)) < 0 ||
        (r = ferry_buf_append_form(&form, "scope", st->scope)) < 0 ||
        (r = ferry_buf_append_form(&form, "client_assertion_type",
                                   "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")) < 0 ||
        (r = ferry_buf_append_form(&form, "client_assertion", assertion)) < 0) {
        r = fail(errbuf, errlen, r == -E2BIG ? -FERRY_ETOOBIG : r, "%s: the form body does not fit",
                 what);
        goto out;
    }
    body = ferry_buf_steal(&form, &blen);
    ferry_http_request req = {
        .method = "POST",
        .url = url,
        .headers = hdrs,
        .n_headers = ARRAY_SIZE(hdrs),
        .body = body,
        .body_len = blen,
        .sensitive = true,
    };
    r = az_send(st, &req, budget_ms, &resp, errbuf, errlen, what);
    if (r < 0)
        goto out;
    ferry_azure_error_code(resp.body, resp.body_len, code, sizeof(code));
    if (resp.status == 400 || resp.status == 401 || resp.status == 403) {
        r = fail(errbuf, errlen, -EACCES, "%s: refused by Entra ID (HTTP %ld%s%s)", what,
                 resp.status, code[0] ? ", " : "", code);
    } else if (resp.status != 200) {
        r = fail(errbuf, errlen, -FERRY_EFETCH, "%s: unexpected HTTP status %ld%s%s", what,
                 resp.status, code[0] ? ", " : "", code);
    } else if (!ferry_http_media_type_is(resp.content_type, "application/json")) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "%s: answer is not application/json", what);
    } else {
        r = ferry_azure_token_parse(resp.body, resp.body_len, &tok, &expires_in, why, sizeof(why));
        if (r < 0) {
            r = fail(errbuf, errlen, r, "%s: %s", what, why);
        } else {
            drop_token(st);
            st->token = TAKE_PTR(tok);
            margin = expires_in / 10 > 300 ? 300 : expires_in / 10;
            st->refresh_at = ferry_mono_s() + expires_in - margin;
        }
    }
out:
    ferry_http_response_release(&resp);
    ferry_buf_release(&form);
    ferry_free_secret_str(body);
    ferry_free_secret_str(assertion);
    return r;
}

/* A copy of a usable access token in *ret (wipe and free) and the scope it is for: the cached
 * one, or a new one when none, past its refresh time, or force. *ret_fresh says whether it
 * was just obtained. */
static int token_get(az_state *st, bool force, long *budget_ms, char **ret, char *ret_scope,
                     bool *ret_fresh, char *errbuf, size_t errlen)
{
    bool fresh = false;
    int r = 0;

    pthread_mutex_lock(&st->lock);
    if (force || (st->token && ferry_mono_s() >= st->refresh_at))
        drop_token(st);
    if (!st->token) {
        r = token_request(st, budget_ms, errbuf, errlen);
        fresh = true;
    }
    if (r == 0) {
        *ret = strdup(st->token);
        if (!*ret)
            r = -ENOMEM;
        memcpy(ret_scope, st->scope, sizeof(st->scope));
        *ret_fresh = fresh;
    }
    pthread_mutex_unlock(&st->lock);
    return r;
}

/* Follow a 401's challenge: decide the scope (refusing a foreign authority, tenant or
 * resource) and whether a new token can help. Returns 0 to retry with a new token. */
static int follow_challenge(az_state *st, const ferry_http_response *resp, const char *vault_url,
                            const char *used_scope, bool fresh, const char *what, char *errbuf,
                            size_t errlen)
{
    ferry_azure_challenge ch;
    char why[300] = "", scope[AZ_SCOPE_MAX + 1], host[256];
    int r;

    if (!resp->www_authenticate)
        return fail(errbuf, errlen, -EACCES,
                    "%s: Key Vault answered 401 without a Bearer challenge", what);
    if (!https_host(vault_url, host, sizeof(host)))
        snprintf(host, sizeof(host), "127.0.0.1"); /* http to loopback (tests) */
    r = ferry_azure_challenge_parse(resp->www_authenticate, &ch, why, sizeof(why));
    if (r == 0)
        r = ferry_azure_challenge_scope(&ch, st->authority, st->tenant, host, st->verify_resource,
                                        scope, sizeof(scope), why, sizeof(why));
    if (r < 0)
        return fail(errbuf, errlen, r == -FERRY_EPOLICY ? -EACCES : r, "%s: 401: %s", what, why);
    if (fresh && strcmp(scope, used_scope) == 0)
        return fail(errbuf, errlen, -EACCES,
                    "%s: Key Vault refused a new access token (401; is the federated credential "
                    "or the token's resource right?)",
                    what);
    pthread_mutex_lock(&st->lock);
    snprintf(st->scope, sizeof(st->scope), "%s", scope);
    pthread_mutex_unlock(&st->lock);
    return 0;
}

static int az_fetch(void *state, void *ctx, const ferry_secret_ref *ref, ferry_secret_value **ret,
                    char *errbuf, size_t errlen)
{
    static const char what[] = "Key Vault read";
    az_state *st = state;
    char base[AZ_URL_MAX], url[AZ_URL_MAX + 512], scope[AZ_SCOPE_MAX + 1], code[160] = "";
    char *token = NULL, *auth = NULL;
    long budget = st->max_retry_wait_ms;
    bool fresh = false, force = false;
    int r, n;

    (void)ctx;
    if (vault_base(st, ref->scope, base, sizeof(base)) < 0)
        return fail(errbuf, errlen, -FERRY_ETOOBIG, "the vault URL is too long");
    /* The reference parser allows only [a-z0-9-] in vault and secret names and hex digits in
     * versions: nothing to percent-encode. */
    n = snprintf(url, sizeof(url), "%s/secrets/%.127s%s%.32s?api-version=%s", base, ref->name,
                 ref->version[0] ? "/" : "", ref->version, st->api_version);
    if (n < 0 || (size_t)n >= sizeof(url))
        return fail(errbuf, errlen, -FERRY_ETOOBIG, "the vault URL is too long");
    for (int challenges = 0;; challenges++) {
        ferry_http_response resp = {0};
        const char *hdrs[1];
        size_t alen;

        r = token_get(st, force, &budget, &token, scope, &fresh, errbuf, errlen);
        if (r < 0)
            break;
        alen = strlen(token) + sizeof("Authorization: Bearer ");
        auth = malloc(alen);
        if (!auth) {
            r = -ENOMEM;
            break;
        }
        snprintf(auth, alen, "Authorization: Bearer %s", token);
        ferry_free_secret_str(token);
        token = NULL;
        hdrs[0] = auth;
        ferry_http_request req = {
            .method = "GET",
            .url = url,
            .headers = hdrs,
            .n_headers = 1,
            .sensitive = true,
        };
        r = az_send(st, &req, &budget, &resp, errbuf, errlen, what);
        ferry_free_secret_str(auth);
        auth = NULL;
        if (r < 0)
            break;
        /* The error code of a refusal (never parsed out of a 200, which holds the value). */
        if (resp.status != 200)
            ferry_azure_error_code(resp.body, resp.body_len, code, sizeof(code));
        if (resp.status == 200) {
            if (!ferry_http_media_type_is(resp.content_type, "application/json")) {
                r = fail(errbuf, errlen, -FERRY_EMALFORMED, "%s: answer is not application/json",
                         what);
            } else {
                char why[300] = "";
                r = ferry_azure_secret_parse(resp.body, resp.body_len, ref->name, ref->version,
                                             (int64_t)time(NULL), ret, why, sizeof(why));
                if (r < 0)
                    r = fail(errbuf, errlen, r, "%s: %s", what, why);
            }
        } else if (resp.status == 401 && challenges == 0) {
            r = follow_challenge(st, &resp, base, scope, fresh, what, errbuf, errlen);
            ferry_http_response_release(&resp);
            if (r < 0)
                break;
            force = true;
            continue;
        } else if (resp.status == 401) {
            r = fail(errbuf, errlen, -EACCES, "%s: Key Vault refused a new access token (401)",
                     what);
        } else if (resp.status == 404) {
            r = fail(errbuf, errlen, -ENOENT, "not found (Key Vault answered 404%s%s)",
                     code[0] ? ", " : "", code);
        } else if (resp.status == 403 && strcmp(code, "Forbidden/SecretDisabled") == 0) {
            r = fail(errbuf, errlen, -EACCES, "the secret is disabled (Key Vault answered 403, %s)",
                     code);
        } else if (resp.status == 403) {
            r = fail(errbuf, errlen, -EACCES, "permission denied (Key Vault answered 403%s%s)",
                     code[0] ? ", " : "", code);
        } else {
            r = fail(errbuf, errlen, -FERRY_EFETCH, "%s: unexpected HTTP status %ld%s%s", what,
                     resp.status, code[0] ? ", " : "", code);
        }
        ferry_http_response_release(&resp);
        break;
    }
    ferry_free_secret_str(token);
    ferry_free_secret_str(auth);
    return r;
}

const ferry_secret_backend_ops ferry_secrets_azure_kv_backend = {
    .name = "azure-kv",
    .id = FERRY_SECRET_AZURE_KV,
    .open = az_open,
    .fetch = az_fetch,
    .close = az_close,
};
