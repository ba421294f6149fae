/* lib/secrets/vault.c - the vault secret backend: HashiCorp Vault KV version 2 over its HTTP
 * API, logged in with ferry's own identity. docs/internals/secrets.md ("Vault").
 *
 * Configuration ("vault" section), members:
 *   address (required, https://host:port; http only to loopback with allow_http_loopback),
 *   namespace, auth (required), allow_http_loopback, ca_file, timeout_ms.
 * auth is one of
 *   {"method": "jwt", "mount": "jwt", "role": R, "audience": A}      ferry-minted JWT
 *   {"method": "approle", "mount": "approle", "role_id": ID, "secret_id_file": F}
 *   {"method": "token", "token_file": F}                             development
 * Secrets (secret_id, token) are read from files only (mode 0600 or stricter), never inline.
 * Unknown members are refused.
 *
 * The Vault token is cached in the backend state under a mutex: renewed with
 * auth/token/renew-self at 2/3 of its lease when renewable, otherwise obtained again by a new
 * login; a read answered 403 with a cached token logs in again once. Values are read into
 * wiping buffers and the parsed strings wiped before the JSON tree is freed. Vault's own error
 * text is never copied into a reason.
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
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "basic/clock.h"
#include "basic/errbuf.h"
#include "basic/fileio.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/http.h"
#include "ferry/json.h"
#include "lib/secrets/secrets-internal.h"
#include "lib/secrets/vault-internal.h"

#define VAULT_RESPONSE_MAX (256 * 1024) /* a KV v2 read or a login answer */
#define VAULT_TOKEN_MAX 4096            /* bytes of a Vault token or secret_id */
#define VAULT_MAX_ATTEMPTS 3            /* per call, for 429, 5xx and network failures */
#define VAULT_BACKOFF_BASE_MS 100
#define VAULT_RETRY_BUDGET_MS 5000 /* waiting between the attempts of one call, at most */
#define VAULT_TIMEOUT_SLACK_MS 20  /* a failure this close to timeout_ms is the timeout */

enum vault_method { VAULT_AUTH_JWT = 1, VAULT_AUTH_APPROLE, VAULT_AUTH_TOKEN };

typedef struct vault_state {
    char *address; /* without a trailing '/' */
    char *ns;      /* X-Vault-Namespace or NULL */
    enum vault_method method;
    char *auth_mount, *role, *audience, *role_id, *secret_id_file, *token_file;
    ferry_http_options http;
    int (*web_identity)(void *userdata, const char *audience, char **ret_token, char *errbuf,
                        size_t errlen);
    void *web_identity_userdata;

    pthread_mutex_t lock; /* guards what follows; held across a login so logins single-flight */
    char *token;          /* cached client token (wiped when dropped) or NULL */
    int64_t refresh_at;   /* monotonic seconds: renew or log in again from here (0: never) */
    int64_t expires_at;   /* monotonic seconds: the lease ends (0: no lease) */
    bool renewable;
} vault_state;

#define fail(...) ferry_errbuf_set(__VA_ARGS__)

/* A token or secret_id: printable ASCII without spaces (it goes into a header or JSON). */
static bool token_chars_ok(const char *s, size_t n)
{
    if (n == 0 || n > VAULT_TOKEN_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~')
            return false;
    return true;
}

/* ---- parsers -------------------------------------------------------------------------------- */

int ferry_vault_kv2_parse(const char *body, size_t len, const char *field, ferry_secret_value **ret,
                          char *errbuf, size_t errlen)
{
    json_t *j = NULL, *data, *inner, *meta, *m, *ver;
    ferry_secret_value *v = NULL;
    char *dumped = NULL;
    const char *p;
    size_t n;
    int r;

    if (!body || !field || !ret)
        return -EINVAL;
    r = ferry_json_parse(body, len, VAULT_RESPONSE_MAX, 32, &j, NULL, 0);
    if (r < 0)
        return fail(errbuf, errlen, r == -FERRY_ETOOBIG ? r : -FERRY_EMALFORMED,
                    "KV v2 response: not a JSON document%s",
                    r == -FERRY_ETOOBIG ? " within the limits" : "");
    data = json_object_get(j, "data");
    if (!json_is_object(j) || !json_is_object(data)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "KV v2 response: no \"data\" object");
        goto out;
    }
    inner = json_object_get(data, "data");
    meta = json_object_get(data, "metadata");
    if (json_is_null(inner)) {
        /* A deleted or destroyed version answers data.data null (with its metadata). */
        r = fail(errbuf, errlen, -ENOENT, "the secret version is deleted or destroyed");
        goto out;
    }
    if (!json_is_object(inner)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "KV v2 response: data.data is not an object");
        goto out;
    }
    if (meta && !json_is_object(meta) && !json_is_null(meta)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "KV v2 response: data.metadata is not an object");
        goto out;
    }
    m = json_object_get(inner, field);
    if (!m) {
        r = fail(errbuf, errlen, -ENOENT, "the secret has no field \"%s\"", field);
        goto out;
    }
    if (json_is_null(m)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "field \"%s\" is null", field);
        goto out;
    }
    if (json_is_string(m)) {
        p = json_string_value(m);
        n = json_string_length(m);
    } else {
        dumped = json_dumps(m, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!dumped) {
            r = -ENOMEM;
            goto out;
        }
        p = dumped;
        n = strlen(dumped);
    }
    if (n > FERRY_SECRET_VALUE_MAX) {
        r = fail(errbuf, errlen, -FERRY_ETOOBIG, "field \"%s\": the value is over 64 KiB", field);
        goto out;
    }
    r = ferry_secret_value_new(n, &v);
    if (r < 0)
        goto out;
    memcpy(v->data, p, n);
    ver = meta ? json_object_get(meta, "version") : NULL;
    if (ver) {
        if (!json_is_integer(ver) || json_integer_value(ver) < 0) {
            r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                     "KV v2 response: data.metadata.version is not a version number");
            goto out;
        }
        snprintf(v->version, sizeof(v->version), "%" PRId64, (int64_t)json_integer_value(ver));
    }
    *ret = TAKE_PTR(v);
    r = 0;
out:
    if (dumped)
        ferry_free_secret_str(dumped);
    ferry_secret_value_free(v);
    ferry_json_wipe_strings(j);
    json_decref(j);
    return r;
}

int ferry_vault_auth_parse(const char *body, size_t len, char **ret_token, int64_t *ret_lease,
                           bool *ret_renewable, char *errbuf, size_t errlen)
{
    json_t *j = NULL, *auth, *tok, *lease, *ren;
    char *t;
    int r;

    if (!body || !ret_token || !ret_lease || !ret_renewable)
        return -EINVAL;
    r = ferry_json_parse(body, len, VAULT_RESPONSE_MAX, 32, &j, NULL, 0);
    if (r < 0)
        return fail(errbuf, errlen, r == -FERRY_ETOOBIG ? r : -FERRY_EMALFORMED,
                    "login response: not a JSON document%s",
                    r == -FERRY_ETOOBIG ? " within the limits" : "");
    auth = json_object_get(j, "auth");
    if (!json_is_object(j) || !json_is_object(auth)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "login response: no \"auth\" object");
        goto out;
    }
    tok = json_object_get(auth, "client_token");
    lease = json_object_get(auth, "lease_duration");
    ren = json_object_get(auth, "renewable");
    if (!json_is_string(tok) || !token_chars_ok(json_string_value(tok), json_string_length(tok)) ||
        strlen(json_string_value(tok)) != json_string_length(tok)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "login response: auth.client_token is missing or not a token");
        goto out;
    }
    if (!json_is_integer(lease) || json_integer_value(lease) < 0 ||
        json_integer_value(lease) > 10 * 365 * 86400LL) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "login response: auth.lease_duration is not a number of seconds");
        goto out;
    }
    if (ren && !json_is_boolean(ren)) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "login response: auth.renewable is not a boolean");
        goto out;
    }
    t = strdup(json_string_value(tok));
    if (!t) {
        r = -ENOMEM;
        goto out;
    }
    *ret_token = t;
    *ret_lease = (int64_t)json_integer_value(lease);
    *ret_renewable = json_is_true(ren);
    r = 0;
out:
    ferry_json_wipe_strings(j);
    json_decref(j);
    return r;
}

/* ---- configuration ------------------------------------------------------------------------ */

static void vault_close(void *state)
{
    vault_state *st = state;

    if (!st)
        return;
    ferry_free_secret_str(st->token);
    pthread_mutex_destroy(&st->lock);
    free(st->address);
    free(st->ns);
    free(st->auth_mount);
    free(st->role);
    free(st->audience);
    free(st->role_id);
    free(st->secret_id_file);
    free(st->token_file);
    free((char *)st->http.ca_file);
    free(st);
}

/* A copied string member of 1..max bytes of printable ASCII, optionally restricted to the
 * letters, digits and extra; *ret stays NULL when absent. */
static int conf_str(const json_t *obj, const char *name, size_t max, const char *extra, char **ret,
                    char *errbuf, size_t errlen)
{
    json_t *v = json_object_get(obj, name);
    const char *s;
    size_t n;

    *ret = NULL;
    if (!v)
        return 0;
    if (!json_is_string(v) || (n = json_string_length(v)) == 0 || n > max)
        return fail(errbuf, errlen, -FERRY_ECONFIG, "%s: must be a string of 1..%zu bytes", name,
                    max);
    s = json_string_value(v);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = extra ? ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                           (c >= '0' && c <= '9') || strchr(extra, c))
                        : (c > ' ' && c <= '~');
        if (!ok || c == '\0')
            return fail(errbuf, errlen, -FERRY_ECONFIG, "%s: character %zu is not allowed", name,
                        i + 1);
    }
    *ret = strdup(s);
    return *ret ? 0 : -ENOMEM;
}

static int vault_open(const json_t *conf, const ferry_secrets_env *env, void **ret_state,
                      char *errbuf, size_t errlen)
{
    static const char *const top[] = {"address", "namespace",           "auth",
                                      "ca_file", "allow_http_loopback", "timeout_ms"};
    static const char *const jwt_m[] = {"method", "mount", "role", "audience"};
    static const char *const approle_m[] = {"method", "mount", "role_id", "secret_id_file"};
    static const char *const token_m[] = {"method", "token_file"};
    vault_state *st;
    const json_t *auth;
    json_t *v;
    char *method = NULL, *ca = NULL;
    size_t alen;
    int r;

    if (!conf || !json_is_object(conf))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "needs a configuration (address, auth)");
    r = ferry_secrets_conf_members(conf, top, ARRAY_SIZE(top), "", errbuf, errlen);
    if (r < 0)
        return r;
    st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        free(st);
        return -ENOMEM;
    }
    if ((r = conf_str(conf, "address", 2048, NULL, &st->address, errbuf, errlen)) < 0 ||
        (r = conf_str(conf, "namespace", 255, "_-./", &st->ns, errbuf, errlen)) < 0 ||
        (r = conf_str(conf, "ca_file", 4096, NULL, &ca, errbuf, errlen)) < 0)
        goto fail;
    st->http.ca_file = ca;
    if (!st->address) {
        r = fail(errbuf, errlen, -FERRY_ECONFIG, "address: required (https://vault:8200)");
        goto fail;
    }
    alen = strlen(st->address);
    while (alen > 0 && st->address[alen - 1] == '/')
        st->address[--alen] = '\0';
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
    st->http.max_redirects = 0;
    st->http.max_response = VAULT_RESPONSE_MAX;
    if (alen == 0 || strpbrk(st->address, "?#") ||
        ferry_http_check_url(st->address, &st->http) < 0) {
        r = fail(errbuf, errlen, -FERRY_ECONFIG,
                 "address: refused (https://host[:port] only; http only to 127.0.0.1/[::1] "
                 "with allow_http_loopback)");
        goto fail;
    }

    auth = json_object_get(conf, "auth");
    if (!json_is_object(auth)) {
        r = fail(errbuf, errlen, -FERRY_ECONFIG,
                 "auth: required, an object with \"method\" jwt, approle or token");
        goto fail;
    }
    if ((r = conf_str(auth, "method", 16, NULL, &method, errbuf, errlen)) < 0)
        goto fail;
    if (method && strcmp(method, "jwt") == 0) {
        st->method = VAULT_AUTH_JWT;
        if ((r = ferry_secrets_conf_members(auth, jwt_m, ARRAY_SIZE(jwt_m), "auth: ", errbuf,
                                            errlen)) < 0 ||
            (r = conf_str(auth, "mount", 255, "_-./", &st->auth_mount, errbuf, errlen)) < 0 ||
            (r = conf_str(auth, "role", 255, "_-.@", &st->role, errbuf, errlen)) < 0 ||
            (r = conf_str(auth, "audience", 1024, NULL, &st->audience, errbuf, errlen)) < 0)
            goto fail;
        if (!st->role || !st->audience) {
            r = fail(errbuf, errlen, -FERRY_ECONFIG, "auth: jwt needs \"role\" and \"audience\"");
            goto fail;
        }
        if (!env || !env->web_identity_token) {
            r = fail(errbuf, errlen, -FERRY_ECONFIG,
                     "auth: jwt needs ferry's identity to mint the token (an \"identity\" "
                     "section)");
            goto fail;
        }
        st->web_identity = env->web_identity_token;
        st->web_identity_userdata = env->web_identity_userdata;
    } else if (method && strcmp(method, "approle") == 0) {
        st->method = VAULT_AUTH_APPROLE;
        if ((r = ferry_secrets_conf_members(auth, approle_m, ARRAY_SIZE(approle_m),
                                            "auth: ", errbuf, errlen)) < 0 ||
            (r = conf_str(auth, "mount", 255, "_-./", &st->auth_mount, errbuf, errlen)) < 0 ||
            (r = conf_str(auth, "role_id", 255, "_-.", &st->role_id, errbuf, errlen)) < 0 ||
            (r = conf_str(auth, "secret_id_file", 4096, NULL, &st->secret_id_file, errbuf,
                          errlen)) < 0)
            goto fail;
        if (!st->role_id || !st->secret_id_file) {
            r = fail(errbuf, errlen, -FERRY_ECONFIG,
                     "auth: approle needs \"role_id\" and \"secret_id_file\"");
            goto fail;
        }
    } else if (method && strcmp(method, "token") == 0) {
        st->method = VAULT_AUTH_TOKEN;
        if ((r = ferry_secrets_conf_members(auth, token_m, ARRAY_SIZE(token_m), "auth: ", errbuf,
                                            errlen)) < 0 ||
            (r = conf_str(auth, "token_file", 4096, NULL, &st->token_file, errbuf, errlen)) < 0)
            goto fail;
        if (!st->token_file) {
            r = fail(errbuf, errlen, -FERRY_ECONFIG, "auth: token needs \"token_file\"");
            goto fail;
        }
    } else {
        r = fail(errbuf, errlen, -FERRY_ECONFIG, "auth: method must be jwt, approle or token");
        goto fail;
    }
    if (!st->auth_mount && st->method != VAULT_AUTH_TOKEN) {
        st->auth_mount = strdup(st->method == VAULT_AUTH_JWT ? "jwt" : "approle");
        if (!st->auth_mount) {
            r = -ENOMEM;
            goto fail;
        }
    }
    if (st->auth_mount && (strstr(st->auth_mount, "..") || st->auth_mount[0] == '/')) {
        r = fail(errbuf, errlen, -FERRY_ECONFIG, "auth: mount: not a mount path");
        goto fail;
    }
    free(method);
    *ret_state = st;
    return 0;
fail:
    free(method);
    vault_close(st);
    return r;
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

/* Read a secret file (secret_id, token): a regular file of mode 0600 or stricter, one token
 * with optional trailing newline. *ret is new (wipe and free). */
static int read_secret_file(const char *path, const char *what, char **ret, char *errbuf,
                            size_t errlen)
{
    struct stat sb;
    char *text = NULL;
    size_t n = 0;
    int r;

    if (stat(path, &sb) < 0) {
        r = -errno;
        return fail(errbuf, errlen, r, "auth: %s: cannot read the file (%s)", what,
                    ferry_strerror(r));
    }
    if (sb.st_mode & 077)
        return fail(errbuf, errlen, -EPERM,
                    "auth: %s: the file must not be readable by group or others (mode 0600)", what);
    r = ferry_read_regular_file(path, VAULT_TOKEN_MAX + 2, &text, &n);
    if (r < 0)
        return fail(errbuf, errlen, r, "auth: %s: cannot read the file (%s)", what,
                    ferry_strerror(r));
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        text[--n] = '\0';
    if (!token_chars_ok(text, n) || strlen(text) != n) {
        ferry_wipe(text, n);
        free(text);
        return fail(errbuf, errlen, -FERRY_ECONFIG,
                    "auth: %s: the file must hold one token of printable characters", what);
    }
    *ret = text;
    return 0;
}

/* Send one request with retries for 429, 5xx and network failures (VAULT_MAX_ATTEMPTS tries;
 * the pauses follow ferry_http_retry_pause: jittered backoff, or Vault's Retry-After when
 * longer, within VAULT_RETRY_BUDGET_MS; a Retry-After past it fails at once). token (borrowed,
 * may be NULL) goes into X-Vault-Token. On success *ret is the final response (any other
 * status). */
static int vault_send(vault_state *st, const char *method, const char *url, const char *token,
                      const char *body, size_t body_len, ferry_http_response *ret, char *errbuf,
                      size_t errlen, const char *what)
{
    char *tok_hdr = NULL, ns_hdr[300];
    const char *hdrs[3];
    size_t nh = 0;
    long budget_ms = VAULT_RETRY_BUDGET_MS;
    long timeout_ms = st->http.total_timeout_ms ? st->http.total_timeout_ms : 10000;
    int r;

    if (token) {
        size_t n = strlen(token) + sizeof("X-Vault-Token: ");
        tok_hdr = malloc(n);
        if (!tok_hdr)
            return -ENOMEM;
        snprintf(tok_hdr, n, "X-Vault-Token: %s", token);
        hdrs[nh++] = tok_hdr;
    }
    if (st->ns) {
        snprintf(ns_hdr, sizeof(ns_hdr), "X-Vault-Namespace: %s", st->ns);
        hdrs[nh++] = ns_hdr;
    }
    if (body)
        hdrs[nh++] = "Content-Type: application/json";
    ferry_http_request req = {
        .method = method,
        .url = url,
        .headers = hdrs,
        .n_headers = nh,
        .body = body,
        .body_len = body_len,
        .sensitive = true,
    };
    for (int attempt = 0;; attempt++) {
        ferry_http_response resp = {0};
        bool have_resp = false;
        int64_t t0 = ferry_mono_ms();
        int p;

        r = ferry_http_request_send(&req, &st->http, &resp);
        if (r == -FERRY_ETOOBIG) {
            r = fail(errbuf, errlen, r, "%s: response over %d bytes", what, VAULT_RESPONSE_MAX);
            break;
        }
        if (r == -FERRY_EPOLICY) {
            r = fail(errbuf, errlen, r,
                     "%s: Vault answered a redirect, which is not followed (or the URL was "
                     "refused)",
                     what);
            break;
        }
        if (r == -FERRY_EFETCH && ferry_mono_ms() - t0 >= timeout_ms - VAULT_TIMEOUT_SLACK_MS)
            /* The client reports a timeout as any network failure; the clock tells them apart. */
            r = fail(errbuf, errlen, -ETIMEDOUT, "%s: Vault did not answer within %ld ms", what,
                     timeout_ms);
        else if (r < 0)
            r = fail(errbuf, errlen, r,
                     "%s: no complete answer from Vault (connection failed or the body was cut "
                     "short)",
                     what);
        else if (resp.status == 429 || (resp.status >= 500 && resp.status <= 599)) {
            r = fail(errbuf, errlen, -EAGAIN, "%s: Vault answered HTTP %ld (%s)", what, resp.status,
                     resp.status == 429 ? "throttled" : "server error");
            have_resp = true;
        } else {
            *ret = resp;
            r = 0;
            break;
        }
        if (attempt + 1 >= VAULT_MAX_ATTEMPTS) {
            size_t l = errbuf && errlen ? strlen(errbuf) : 0;
            if (l + 1 < errlen)
                snprintf(errbuf + l, errlen - l, ", after %d attempts", VAULT_MAX_ATTEMPTS);
            ferry_http_response_release(&resp);
            break;
        }
        /* Vault's word on when to come back is honoured, within this call's budget. */
        p = ferry_http_retry_pause(have_resp ? &resp : NULL, attempt, VAULT_BACKOFF_BASE_MS,
                                   &budget_ms);
        if (p == -EAGAIN) {
            if (have_resp && resp.retry_after > 0)
                r = fail(errbuf, errlen, -EAGAIN,
                         "%s: Vault answered HTTP %ld (%s) and asks to retry after %ld s, past "
                         "the %d s retry budget; not retried",
                         what, resp.status, resp.status == 429 ? "throttled" : "server error",
                         resp.retry_after, VAULT_RETRY_BUDGET_MS / 1000);
            else {
                size_t l = errbuf && errlen ? strlen(errbuf) : 0;
                if (l + 1 < errlen)
                    snprintf(errbuf + l, errlen - l, ", retry budget spent after %d attempts",
                             attempt + 1);
            }
            ferry_http_response_release(&resp);
            break;
        }
        ferry_http_response_release(&resp);
    }
    if (tok_hdr)
        ferry_free_secret_str(tok_hdr);
    return r;
}

static void drop_token(vault_state *st)
{
    ferry_free_secret_str(st->token);
    st->token = NULL;
    st->refresh_at = st->expires_at = 0;
    st->renewable = false;
}

/* Install a token with its lease: refresh at 2/3 of the lease. Takes token. */
static void set_token(vault_state *st, char *token, int64_t lease, bool renewable)
{
    int64_t now = ferry_mono_s();

    drop_token(st);
    st->token = token;
    st->renewable = renewable;
    if (lease > 0) {
        st->expires_at = now + lease;
        st->refresh_at = now + (lease * 2) / 3;
    }
}

/* POST an auth body to url and install the token it answers. Called with the lock held. */
static int auth_call(vault_state *st, const char *url, const char *token, const char *body,
                     char *errbuf, size_t errlen, const char *what)
{
    ferry_http_response resp = {0};
    char *tok = NULL;
    int64_t lease = 0;
    bool renewable = false;
    int r;

    r = vault_send(st, "POST", url, token, body, strlen(body), &resp, errbuf, errlen, what);
    if (r < 0)
        return r;
    if (resp.status == 400 || resp.status == 401 || resp.status == 403)
        r = fail(errbuf, errlen, -EACCES, "%s: refused by Vault (HTTP %ld)", what, resp.status);
    else if (resp.status == 404)
        r = fail(errbuf, errlen, -EACCES, "%s: Vault has no such auth mount or role (HTTP 404)",
                 what);
    else if (resp.status != 200)
        r = fail(errbuf, errlen, -FERRY_EFETCH, "%s: unexpected HTTP status %ld", what,
                 resp.status);
    else if (!ferry_http_media_type_is(resp.content_type, "application/json"))
        r = fail(errbuf, errlen, -FERRY_EMALFORMED, "%s: answer is not application/json", what);
    else {
        char why[200] = "";
        r = ferry_vault_auth_parse(resp.body, resp.body_len, &tok, &lease, &renewable, why,
                                   sizeof(why));
        if (r < 0)
            r = fail(errbuf, errlen, r, "%s: %s", what, why);
        else if (token && lease <= 0) {
            /* A renewal that answers no lease for a token that had one (at its max TTL, or
             * a confused server) must not turn it into a token that never expires here. */
            ferry_free_secret_str(tok);
            r = fail(errbuf, errlen, -FERRY_EMALFORMED, "%s: answered no lease", what);
        } else
            set_token(st, tok, lease, renewable);
    }
    ferry_http_response_release(&resp);
    return r;
}

static int login(vault_state *st, char *errbuf, size_t errlen)
{
    char url[2600], *secret = NULL, *body = NULL;
    json_t *req = NULL;
    int r;

    if (st->method == VAULT_AUTH_TOKEN) {
        r = read_secret_file(st->token_file, "token_file", &secret, errbuf, errlen);
        if (r < 0)
            return r;
        set_token(st, secret, 0, false);
        return 0;
    }
    snprintf(url, sizeof(url), "%s/v1/auth/%s/login", st->address, st->auth_mount);
    if (st->method == VAULT_AUTH_JWT) {
        char why[256] = "";
        r = st->web_identity(st->web_identity_userdata, st->audience, &secret, why, sizeof(why));
        if (r < 0)
            return fail(errbuf, errlen, r, "jwt login: %s", why[0] ? why : ferry_strerror(r));
        req = json_pack("{s:s,s:s}", "role", st->role, "jwt", secret);
    } else {
        r = read_secret_file(st->secret_id_file, "secret_id_file", &secret, errbuf, errlen);
        if (r < 0)
            return r;
        req = json_pack("{s:s,s:s}", "role_id", st->role_id, "secret_id", secret);
    }
    body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    ferry_json_wipe_strings(req);
    json_decref(req);
    ferry_free_secret_str(secret);
    if (!body)
        return -ENOMEM;
    r = auth_call(st, url, NULL, body, errbuf, errlen,
                  st->method == VAULT_AUTH_JWT ? "jwt login" : "approle login");
    ferry_free_secret_str(body);
    return r;
}

/* A copy of a usable token in *ret (wipe and free): the cached one, renewed or replaced when
 * past 2/3 of its lease; force drops the cached one first. *ret_fresh says whether it was just
 * obtained. */
static int token_get(vault_state *st, bool force, char **ret, bool *ret_fresh, char *errbuf,
                     size_t errlen)
{
    int64_t now = ferry_mono_s();
    bool fresh = false;
    int r = 0;

    pthread_mutex_lock(&st->lock);
    if (force)
        drop_token(st);
    if (st->token && st->refresh_at && now >= st->refresh_at) {
        bool renewed = false;
        if (st->renewable && now < st->expires_at) {
            char url[2600], why[256];
            char *old = strdup(st->token);
            snprintf(url, sizeof(url), "%s/v1/auth/token/renew-self", st->address);
            if (old && auth_call(st, url, old, "{}", why, sizeof(why), "token renewal") == 0)
                renewed = true;
            ferry_free_secret_str(old);
        }
        if (!renewed)
            drop_token(st);
    }
    if (!st->token) {
        r = login(st, errbuf, errlen);
        fresh = true;
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

/* Percent-encoding is not needed: the reference parser allows only [A-Za-z0-9._-/@+=] in
 * paths and [A-Za-z0-9._-] in mounts (docs/internals/secrets.md). */
static int vault_fetch(void *state, void *ctx, const ferry_secret_ref *ref,
                       ferry_secret_value **ret, char *errbuf, size_t errlen)
{
    vault_state *st = state;
    char *url = NULL, *token = NULL;
    size_t ulen;
    bool fresh = false;
    int r;

    (void)ctx;
    ulen = strlen(st->address) + strlen(ref->scope) + strlen(ref->name) + strlen(ref->version) + 32;
    url = malloc(ulen);
    if (!url)
        return -ENOMEM;
    snprintf(url, ulen, "%s/v1/%s/data/%s%s%s", st->address, ref->scope, ref->name,
             ref->version[0] ? "?version=" : "", ref->version);
    for (int relogin = 0;; relogin++) {
        ferry_http_response resp = {0};

        r = token_get(st, relogin > 0, &token, &fresh, errbuf, errlen);
        if (r < 0)
            break;
        r = vault_send(st, "GET", url, token, NULL, 0, &resp, errbuf, errlen, "KV v2 read");
        ferry_free_secret_str(token);
        token = NULL;
        if (r < 0)
            break;
        if (resp.status == 200) {
            if (!ferry_http_media_type_is(resp.content_type, "application/json"))
                r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                         "KV v2 read: answer is not application/json");
            else {
                char why[300] = "";
                r = ferry_vault_kv2_parse(resp.body, resp.body_len, ref->field, ret, why,
                                          sizeof(why));
                if (r < 0)
                    r = fail(errbuf, errlen, r, "%s: %s", ref->canonical, why);
            }
        } else if (resp.status == 404) {
            r = fail(errbuf, errlen, -ENOENT, "%s: not found (Vault answered 404)", ref->canonical);
        } else if (resp.status == 403 && !fresh && relogin == 0) {
            /* The cached token may have expired or been revoked: log in again once. */
            ferry_http_response_release(&resp);
            continue;
        } else if (resp.status == 403 || resp.status == 401) {
            r = fail(errbuf, errlen, -EACCES,
                     "%s: permission denied (Vault answered %ld; the policy of the token does "
                     "not allow this read)",
                     ref->canonical, resp.status);
        } else {
            r = fail(errbuf, errlen, -FERRY_EFETCH, "%s: unexpected HTTP status %ld",
                     ref->canonical, resp.status);
        }
        ferry_http_response_release(&resp);
        break;
    }
    free(url);
    return r;
}

const ferry_secret_backend_ops ferry_secrets_vault_backend = {
    .name = "vault",
    .id = FERRY_SECRET_VAULT,
    .open = vault_open,
    .fetch = vault_fetch,
    .close = vault_close,
};
