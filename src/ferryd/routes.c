/* ferryd/routes.c - ferryd's endpoints: token exchange, discovery, JWKS, health. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>

#include "basic/b64.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferryd/ferryd.h"
#include "ferryd/log.h"

#define JSON_TYPE "application/json"
#define PREFETCH_RETRY_S 5

/* Decode src[0..n) into dst (at most n bytes). Returns the decoded length or -EINVAL. */
static ssize_t form_unescape(const char *src, size_t n, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (c == '+') {
            dst[o++] = ' ';
        } else if (c == '%') {
            int hi, lo;
            if (i + 2 >= n)
                return -EINVAL;
            hi = ferry_hexval(src[i + 1]);
            lo = ferry_hexval(src[i + 2]);
            if (hi < 0 || lo < 0)
                return -EINVAL;
            dst[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            dst[o++] = c;
        }
    }
    return (ssize_t)o;
}

int ferryd_form_decode(const char *body, size_t len, ferry_exchange_param **ret_params,
                       size_t *ret_n, char **ret_buf)
{
    ferry_exchange_param *params = NULL;
    size_t n = 0, cap = 0, out = 0;
    char *buf;

    *ret_params = NULL;
    *ret_n = 0;
    *ret_buf = NULL;
    /* Each pair needs 2 bytes of output at most for its NULs. */
    buf = malloc(len * 2 + 2);
    if (!buf)
        return -ENOMEM;
    if (len == 0) {
        *ret_buf = buf;
        return 0;
    }
    for (size_t start = 0; start <= len;) {
        const char *pair = body + start;
        const char *amp = memchr(pair, '&', len - start);
        size_t plen = amp ? (size_t)(amp - pair) : len - start;
        const char *eq = memchr(pair, '=', plen);
        ssize_t nl, vl;

        if (plen == 0 || !eq || eq == pair)
            goto bad;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            ferry_exchange_param *np = realloc(params, nc * sizeof(*np));
            if (!np) {
                ferry_wipe(buf, len * 2 + 2);
                free(buf);
                free(params);
                return -ENOMEM;
            }
            params = np;
            cap = nc;
        }
        nl = form_unescape(pair, (size_t)(eq - pair), buf + out);
        if (nl < 0)
            goto bad;
        params[n].name = buf + out;
        params[n].name_len = (size_t)nl;
        out += (size_t)nl;
        buf[out++] = '\0';
        vl = form_unescape(eq + 1, plen - (size_t)(eq - pair) - 1, buf + out);
        if (vl < 0)
            goto bad;
        params[n].value = buf + out;
        params[n].value_len = (size_t)vl;
        out += (size_t)vl;
        buf[out++] = '\0';
        n++;
        if (!amp)
            break;
        start += plen + 1;
        if (start == len)
            goto bad; /* trailing '&' */
    }
    *ret_params = params;
    *ret_n = n;
    *ret_buf = buf;
    return 0;
bad:
    ferry_wipe(buf, len * 2 + 2);
    free(buf);
    free(params);
    return -EINVAL;
}

static void set_json(ferryd_response *resp, int status, json_t *doc)
{
    resp->status = status;
    resp->content_type = JSON_TYPE;
    resp->body = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc);
    if (!resp->body) {
        resp->status = 500;
        resp->body = strdup("{\"error\":\"server_error\"}");
    }
    resp->body_len = resp->body ? strlen(resp->body) : 0;
}

static void set_error(ferryd_response *resp, int status, const char *error, const char *desc,
                      const char *reason)
{
    set_json(resp, status, json_pack("{s:s, s:s}", "error", error, "error_description", desc));
    snprintf(resp->reason, sizeof(resp->reason), "%s", reason);
}

static void set_text(ferryd_response *resp, int status, const char *text)
{
    resp->status = status;
    resp->content_type = "text/plain; charset=utf-8";
    resp->body = strdup(text);
    resp->body_len = resp->body ? strlen(resp->body) : 0;
}

static bool is_method(const ferryd_request *req, const char *m)
{
    return strcmp(req->method, m) == 0;
}

static void method_not_allowed(ferryd_response *resp, const char *allow)
{
    set_error(resp, 405, "invalid_request", "method not allowed", "method not allowed");
    resp->allow = allow;
}

/* application/x-www-form-urlencoded, optionally with parameters (";charset=UTF-8"). */
static bool is_form(const char *ct)
{
    static const char want[] = "application/x-www-form-urlencoded";
    size_t n = sizeof(want) - 1;
    if (!ct || strncasecmp(ct, want, n) != 0)
        return false;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

static void route_token(ferryd *d, const ferryd_request *req, ferryd_response *resp)
{
    ferry_exchange_param *params = NULL;
    size_t n = 0;
    char *buf = NULL;
    ferry_exchange_response er = {0};
    int r;

    resp->no_store = true;
    if (!is_method(req, "POST")) {
        method_not_allowed(resp, "POST");
        return;
    }
    /* A request refused before the exchange runs is a decision too (metrics). */
    resp->outcome = "invalid_request";
    if (req->query) {
        set_error(resp, 400, "invalid_request",
                  "parameters must be sent in the request body, not the query",
                  "query string on the token endpoint");
        return;
    }
    if (req->n_authorization > 0) {
        /* No client authentication is configured: the subject token travels in the form body
         * only (RFC 8693 §2.1), so a credential in a header is refused, never ignored. */
        set_error(resp, 400, "invalid_request",
                  "this token endpoint takes no Authorization header; send the subject token "
                  "in the form body",
                  req->n_authorization > 1 ? "several Authorization headers"
                                           : "Authorization header on the token endpoint");
        return;
    }
    if (req->n_content_type > 1) {
        set_error(resp, 400, "invalid_request", "exactly one Content-Type header is allowed",
                  "several Content-Type headers");
        return;
    }
    if (!is_form(req->content_type)) {
        set_error(resp, 400, "invalid_request",
                  "Content-Type must be application/x-www-form-urlencoded", "wrong content type");
        return;
    }
    r = ferryd_form_decode(req->body, req->body_len, &params, &n, &buf);
    if (r == -EINVAL) {
        set_error(resp, 400, "invalid_request", "malformed form body", "malformed form body");
        return;
    }
    if (r < 0) {
        set_error(resp, 500, "server_error", "internal error", "out of memory decoding form");
        resp->outcome = "server_error";
        return;
    }
    /* On an event thread the exchange must not wait (a key-set fetch, a TOTP state file, an
     * audit record synced to disk): it then gives up with nothing done, and the request runs
     * again on a worker thread. */
    ferry_exchange_request ereq = {.params = params, .n_params = n, .no_wait = !req->may_block};
    r = ferry_exchange_token(d->exchange, &ereq, &er);
    ferry_wipe(buf, req->body_len * 2 + 2);
    free(buf);
    free(params);
    if (r == -FERRY_EWOULDBLOCK) {
        ferry_exchange_response_release(&er);
        resp->defer = true;
        return;
    }
    /* Written straight into one exact allocation (no jansson object, no dump buffer growing
     * copies of the token); send_response wipes it after sending. */
    if (ferry_exchange_response_write(&er, &resp->body, &resp->body_len) < 0) {
        ferry_exchange_response_release(&er);
        set_error(resp, 500, "server_error", "internal error", "response could not be built");
        return;
    }
    resp->status = er.http_status;
    resp->content_type = JSON_TYPE;
    resp->wipe = true;
    resp->retry_after = er.retry_after;
    resp->outcome = er.error == FERRY_EXCHANGE_SLOW_DOWN ? "rate_limited"
                                                         : ferry_exchange_error_name(er.error);
    snprintf(resp->reason, sizeof(resp->reason), "%.280s%s%s", er.reason,
             er.jti[0] && r == 0 ? " jti=" : "", r == 0 ? er.jti : "");
    ferry_exchange_response_release(&er);
}

static void route_document(ferryd *d, const ferryd_request *req, ferryd_response *resp, bool jwks)
{
    if (!is_method(req, "GET") && !is_method(req, "HEAD")) {
        method_not_allowed(resp, "GET, HEAD");
        return;
    }
    pthread_mutex_lock(&d->lock);
    const char *src = jwks ? d->jwks : d->discovery;
    resp->body = src ? strdup(src) : NULL;
    pthread_mutex_unlock(&d->lock);
    if (!resp->body) {
        set_error(resp, 503, "temporarily_unavailable", "document not available",
                  jwks ? "no JWKS document" : "no discovery document");
        return;
    }
    resp->status = 200;
    resp->content_type = JSON_TYPE;
    resp->body_len = strlen(resp->body);
}

static long long mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec;
}

static void route_ready(ferryd *d, const ferryd_request *req, ferryd_response *resp)
{
    ferry_jwk *k = ferry_mint_signing_key(d->mint, NULL);
    ferry_policy_set *set = ferry_policy_store_get(d->policies);
    bool keys = k != NULL, policies = set != NULL;
    ferry_jwk_unref(k);
    ferry_policy_set_unref(set);

    if (!atomic_load(&d->issuers_ready)) {
        long long now = mono_s(), last = atomic_load(&d->last_prefetch);
        if (now - last >= PREFETCH_RETRY_S && !req->may_block) {
            resp->defer = true; /* the fetch waits for the network: not on an event thread */
            return;
        }
        if (now - last >= PREFETCH_RETRY_S &&
            atomic_compare_exchange_strong(&d->last_prefetch, &last, now)) {
            char err[256];
            if (ferry_oidc_prefetch(d->oidc, err, sizeof(err)) == 0)
                atomic_store(&d->issuers_ready, true);
            else
                ferryd_log("warning", "readyz: issuer keys not loaded: %s", err);
        }
    }
    bool issuers = atomic_load(&d->issuers_ready);
    if (keys && policies && issuers) {
        set_text(resp, 200, "ready\n");
        return;
    }
    set_json(resp, 503,
             json_pack("{s:s, s:b, s:b, s:b}", "status", "not ready", "keys", keys, "policies",
                       policies, "issuers", issuers));
    snprintf(resp->reason, sizeof(resp->reason), "not ready");
}

/* The per-address limiter's key for a client: "ipv6:" addresses are folded to their /64
 * (one host or site owns a whole /64, so per-address would otherwise mean per-whatever-it-
 * likes); everything else ("ipv4:A.B.C.D", "uid:N", "unknown") is used as it is. */
static size_t address_key(const char *client, char *buf, size_t buflen)
{
    struct in6_addr a;
    char text[INET6_ADDRSTRLEN];
    size_t n = strlen(client);

    if (strncmp(client, "ipv6:", 5) == 0 && n - 5 < sizeof(text)) {
        memcpy(text, client + 5, n - 5 + 1);
        if (inet_pton(AF_INET6, text, &a) == 1 && buflen >= 5 + 8) {
            memcpy(buf, "ipv6/", 5);
            memcpy(buf + 5, a.s6_addr, 8);
            return 5 + 8;
        }
    }
    if (n > buflen)
        n = buflen;
    memcpy(buf, client, n);
    return n;
}

/* Checked before anything of the request is parsed (no body decoding, no crypto). Returns true
 * when the request may go on; otherwise resp holds the 429. */
static bool address_allowed(ferryd *d, const ferryd_request *req, ferryd_response *resp)
{
    char key[128];
    int64_t retry = 0;
    size_t n;
    char desc[96];
    int r;

    if (!d->per_address)
        return true;
    n = address_key(req->client ? req->client : "unknown", key, sizeof(key));
    r = ferry_ratelimit_check(d->per_address, key, n, &retry);
    if (r == 0)
        return true;
    if (r != -FERRY_EREFUSED)
        return true; /* only -EINVAL, which cannot happen here: never a reason to refuse */
    snprintf(desc, sizeof(desc), "too many requests; retry after %lld seconds", (long long)retry);
    set_error(resp, 429, "slow_down", desc, "rate limited: per-address limit");
    resp->no_store = true;
    resp->retry_after = retry;
    resp->outcome = "rate_limited";
    snprintf(resp->reason, sizeof(resp->reason), "rate limited: per-address limit for %.100s",
             req->client ? req->client : "unknown");
    return false;
}

int ferryd_apply_rate_limits(ferryd *d, char *errbuf, size_t errlen)
{
    struct {
        const char *name;
        ferry_ratelimit **rl;
        const ferryd_rate_limit *cfg;
    } lims[] = {
        {"rate_limits.per_address", &d->per_address, &d->config.per_address},
        {"rate_limits.per_identity", &d->per_identity, &d->config.per_identity},
    };
    int r;

    for (size_t i = 0; i < ARRAY_SIZE(lims); i++) {
        if (!*lims[i].rl) {
            ferry_ratelimit_options o = {
                .rate = lims[i].cfg->rate,
                .burst = lims[i].cfg->burst,
                .max_keys = d->config.max_tracked,
            };
            r = ferry_ratelimit_new(&o, lims[i].rl);
        } else {
            r = ferry_ratelimit_configure(*lims[i].rl, lims[i].cfg->rate, lims[i].cfg->burst,
                                          d->config.max_tracked);
        }
        if (r < 0) {
            snprintf(errbuf, errlen, "%s: %s", lims[i].name, ferry_strerror(r));
            return r;
        }
    }
    return 0;
}

void ferryd_route(void *userdata, const ferryd_request *req, ferryd_response *resp)
{
    ferryd *d = userdata;
    const char *p = req->path;

    /* Probes and metrics are never limited: an orchestrator must always see the state. The
     * limit is checked once, on the headers_only call (before the body is read) when the server
     * makes one. */
    if (strcmp(p, "/healthz") != 0 && strcmp(p, "/readyz") != 0 && strcmp(p, "/metrics") != 0 &&
        !req->admitted && !address_allowed(d, req, resp))
        return;
    if (req->headers_only)
        return; /* status 0: the request goes on */
    if (strcmp(p, "/v1/token") == 0) {
        route_token(d, req, resp);
    } else if (strcmp(p, "/.well-known/openid-configuration") == 0) {
        route_document(d, req, resp, false);
    } else if (strcmp(p, "/.well-known/jwks.json") == 0) {
        route_document(d, req, resp, true);
    } else if (strcmp(p, "/healthz") == 0) {
        if (!is_method(req, "GET") && !is_method(req, "HEAD"))
            method_not_allowed(resp, "GET, HEAD");
        else
            set_text(resp, 200, "ok\n");
    } else if (strcmp(p, "/readyz") == 0) {
        if (!is_method(req, "GET") && !is_method(req, "HEAD"))
            method_not_allowed(resp, "GET, HEAD");
        else
            route_ready(d, req, resp);
    } else if (strcmp(p, "/metrics") == 0) {
        ferryd_route_metrics(d, req, resp);
    } else {
        set_error(resp, 404, "not_found", "no such endpoint", "no such endpoint");
    }
}

int ferryd_refresh_documents(ferryd *d)
{
    json_t *disc = NULL, *jwks = NULL;
    char *ds = NULL, *js = NULL;
    int r;

    r = ferry_mint_discovery(d->mint, &disc);
    if (r < 0)
        return r;
    r = ferry_mint_jwks(d->mint, false, &jwks);
    if (r < 0) {
        json_decref(disc);
        return r;
    }
    ds = json_dumps(disc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    js = json_dumps(jwks, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(disc);
    json_decref(jwks);
    if (!ds || !js) {
        free(ds);
        free(js);
        return -ENOMEM;
    }
    pthread_mutex_lock(&d->lock);
    free(d->discovery);
    free(d->jwks);
    d->discovery = ds;
    d->jwks = js;
    pthread_mutex_unlock(&d->lock);
    return 0;
}
