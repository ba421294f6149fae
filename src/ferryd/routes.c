/* ferryd/routes.c - ferryd's endpoints: token exchange, secrets, discovery, JWKS, health. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>

#include <openssl/evp.h>

#include "basic/b64.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/json.h"
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

/* ---- GET /v1/secrets/{ref} ------------------------------------------------------------------ */

#define SECRETS_PREFIX "/v1/secrets/"
#define TOKEN_SKEW_S 60 /* nbf/iat in the future by at most this much */
#define BEARER_REALM "Bearer realm=\"ferry\""
#define BEARER_INVALID "Bearer realm=\"ferry\", error=\"invalid_token\""
#define BEARER_SCOPE "Bearer realm=\"ferry\", error=\"insufficient_scope\""
#define BEARER_REQUEST "Bearer realm=\"ferry\", error=\"invalid_request\""

/* The verified claims of a ferry access token (borrowed from payload). */
typedef struct bearer {
    json_t *payload;
    const char *sub, *src_iss, *src_sub, *jti;
} bearer;

static bool nonempty_string(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) > 0 &&
           strlen(json_string_value(v)) == json_string_length(v);
}

/* A key ferry publishes now (not one whose overlap is over). */
static bool key_published(ferry_mint *m, const char *kid)
{
    ferry_mint_key_info *keys = NULL;
    size_t n = 0;
    bool ok = false;
    if (ferry_mint_list_keys(m, &keys, &n) < 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i].kid, kid) == 0 && strcmp(keys[i].state, "expired") != 0)
            ok = true;
    free(keys);
    return ok;
}

/* Bearer tokens whose signature verified, remembered by the SHA-256 of the whole token, so that
 * a workload reading several secrets with one token pays for one ECDSA verification, not one
 * per read (a verification is about half the CPU of a cached read). A hit skips only
 * ferry_jws_verify of those exact bytes: their header names the key by its RFC 7638
 * thumbprint, so the same bytes verify under the same key for ever. Everything else is checked
 * again on every request: the key must still be one ferry publishes, and every claim (issuer,
 * audience, lifetime). Per thread (no lock), direct-mapped on the hash, VERIFIED_SLOTS entries;
 * a token is only ever entered after a full verification, so hostile tokens cannot fill it. */
#define VERIFIED_SLOTS 512
static __thread unsigned char verified[VERIFIED_SLOTS][32];
static __thread bool verified_used[VERIFIED_SLOTS];

static bool token_digest(const char *tok, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    return EVP_Digest(tok, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32;
}

static bool verified_lookup(const unsigned char h[32])
{
    size_t i = ((size_t)h[0] << 8 | h[1]) % VERIFIED_SLOTS;
    return verified_used[i] && ferry_memeq_ct(verified[i], h, 32);
}

static void verified_insert(const unsigned char h[32])
{
    size_t i = ((size_t)h[0] << 8 | h[1]) % VERIFIED_SLOTS;
    memcpy(verified[i], h, 32);
    verified_used[i] = true;
}

/* Verify tok as an access token (RFC 9068, typ at+jwt) that this ferryd issued, signed with a
 * key it publishes, with ferryd's issuer URL among its audiences, within its lifetime. Returns
 * 0 and fills *b (json_decref(b->payload) after), or -1 with why (for the log only). */
static int verify_bearer(ferryd *d, const char *tok, size_t len, bearer *b, char *why,
                         size_t whylen)
{
    ferry_jws *jws = NULL;
    ferry_jwk *key = NULL;
    ferry_alg alg = FERRY_ALG_UNKNOWN;
    json_t *p = NULL, *aud, *v;
    int64_t now = (int64_t)time(NULL);
    unsigned char digest[32];
    bool aud_ok = false, have_digest;
    int r = -1;

    if (ferry_jws_parse(tok, len, &jws) < 0) {
        snprintf(why, whylen, "bearer token: not a well-formed JWS");
        goto out;
    }
    if (!jws->typ || strcasecmp(jws->typ, "at+jwt") != 0) {
        snprintf(why, whylen, "bearer token: typ is not at+jwt");
        goto out;
    }
    if (!jws->kid || ferry_mint_public_key(d->mint, jws->kid, &key, &alg) < 0 ||
        !key_published(d->mint, jws->kid)) {
        snprintf(why, whylen, "bearer token: not signed with a key ferry publishes");
        goto out;
    }
    if (alg != jws->alg) {
        snprintf(why, whylen, "bearer token: signature does not verify");
        goto out;
    }
    /* Without a digest (the crypto library failed), verify every time. */
    have_digest = token_digest(tok, len, digest);
    if (!have_digest || !verified_lookup(digest)) {
        if (ferry_jws_verify(jws, key) < 0) {
            snprintf(why, whylen, "bearer token: signature does not verify");
            goto out;
        }
        if (have_digest)
            verified_insert(digest);
    }
    if (ferry_json_parse(jws->payload, jws->payload_len, FERRY_JWS_MAX_LEN, 8, &p, NULL, 0) < 0 ||
        !json_is_object(p)) {
        snprintf(why, whylen, "bearer token: payload is not a JSON object");
        goto out;
    }
    v = json_object_get(p, "iss");
    if (!nonempty_string(v) || strcmp(json_string_value(v), d->config.issuer) != 0) {
        snprintf(why, whylen, "bearer token: issued by someone else");
        goto out;
    }
    aud = json_object_get(p, "aud");
    if (json_is_string(aud))
        aud_ok = strcmp(json_string_value(aud), d->config.issuer) == 0;
    for (size_t i = 0; json_is_array(aud) && i < json_array_size(aud); i++)
        if (json_is_string(json_array_get(aud, i)) &&
            strcmp(json_string_value(json_array_get(aud, i)), d->config.issuer) == 0)
            aud_ok = true;
    if (!aud_ok) {
        snprintf(why, whylen, "bearer token: audience is not %.200s", d->config.issuer);
        goto out;
    }
    v = json_object_get(p, "exp");
    if (!json_is_integer(v) || json_integer_value(v) <= now) {
        snprintf(why, whylen, "bearer token: expired or without exp");
        goto out;
    }
    v = json_object_get(p, "nbf");
    if (v && (!json_is_integer(v) || json_integer_value(v) > now + TOKEN_SKEW_S)) {
        snprintf(why, whylen, "bearer token: not valid yet");
        goto out;
    }
    v = json_object_get(p, "iat");
    if (v && (!json_is_integer(v) || json_integer_value(v) > now + TOKEN_SKEW_S)) {
        snprintf(why, whylen, "bearer token: issued in the future");
        goto out;
    }
    if (!nonempty_string(json_object_get(p, "sub")) ||
        !nonempty_string(json_object_get(p, "src_iss")) ||
        !nonempty_string(json_object_get(p, "src_sub"))) {
        snprintf(why, whylen, "bearer token: sub, src_iss or src_sub missing");
        goto out;
    }
    b->payload = p;
    b->sub = json_string_value(json_object_get(p, "sub"));
    b->src_iss = json_string_value(json_object_get(p, "src_iss"));
    b->src_sub = json_string_value(json_object_get(p, "src_sub"));
    v = json_object_get(p, "jti");
    b->jti = nonempty_string(v) ? json_string_value(v) : NULL;
    p = NULL;
    r = 0;
out:
    json_decref(p);
    ferry_jwk_unref(key);
    ferry_jws_free(jws);
    return r;
}

/* Whether the policy grants the token's source identity ref: the policies are decided again
 * for (src_iss, src_sub) asking for ferryd's issuer as the audience (the same audience the
 * token had to carry), and the grant's "secrets" are matched against the canonical form. A
 * policy with audience or claim conditions on the source token cannot match here (those are
 * not in the ferry token): fail closed. */
static bool secret_granted(ferryd *d, const bearer *b, const ferry_secret_ref *ref, char *why,
                           size_t whylen)
{
    ferry_policy_set *set = ferry_policy_store_get(d->policies);
    ferry_policy_grant *g = NULL;
    ferry_policy_refusal refusal;
    const char *aud[1] = {d->config.issuer};
    ferry_policy_request pr = {
        .issuer = b->src_iss,
        .subject = b->src_sub,
        .audiences = aud,
        .n_audiences = 1,
    };
    bool ok = false;

    if (!set) {
        snprintf(why, whylen, "no policies loaded");
        return false;
    }
    if (ferry_policy_decide(set, &pr, &g, &refusal) < 0) {
        snprintf(why, whylen, "policy: %.250s", refusal.reason);
    } else {
        ok = ferry_secret_ref_granted(g->secrets, g->n_secrets, ref);
        if (!ok)
            snprintf(why, whylen, "policy: %s is not among the granted secrets", ref->canonical);
    }
    ferry_policy_grant_free(g);
    ferry_policy_set_unref(set);
    return ok;
}

/* One record per decision on a reference: type secret.release, the reference, the version
 * released, the token's subject and source identity, the status; never the value. */
static int audit_release(ferryd *d, const bearer *b, const char *tok, size_t toklen,
                         const ferry_secret_ref *ref, const char *version,
                         ferry_auditlog_decision dec, int status)
{
    ferry_auditlog_token_ref tr;
    json_t *det;
    int r;

    if (!d->log)
        return 0;
    if (ferry_auditlog_ref_token_jti(tok, toklen, b->jti, b->jti ? strlen(b->jti) : 0, &tr) < 0)
        memset(&tr, 0, sizeof(tr));
    det = json_pack("{s:s, s:s, s:s, s:s, s:i}", "ref", ref->canonical, "version",
                    version ? version : "", "src_iss", b->src_iss, "src_sub", b->src_sub, "status",
                    status);
    if (!det)
        return -ENOMEM;
    ferry_auditlog_event ev = {
        .type = "secret.release",
        .decision = dec,
        .subject = b->sub,
        .token = &tr,
        .details = det,
    };
    r = ferry_auditlog_append(d->log, &ev, NULL);
    json_decref(det);
    return r;
}

/* Copy s into the log reason, cut at its size. */
static void set_reason(ferryd_response *resp, const char *s)
{
    size_t n = strnlen(s, sizeof(resp->reason) - 1);
    memcpy(resp->reason, s, n);
    resp->reason[n] = '\0';
}

static void secrets_error(ferryd_response *resp, int status, const char *error, const char *desc,
                          const char *www, const char *reason)
{
    set_json(resp, status, json_pack("{s:s, s:s}", "error", error, "error_description", desc));
    set_reason(resp, reason);
    resp->www_authenticate = www;
    resp->no_store = true;
    resp->outcome = error;
}

static bool is_b64token(const char *t, size_t n)
{
    /* RFC 6750 §2.1 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("-._~+/=", c)))
            return false;
    }
    return true;
}

static void route_secret(ferryd *d, const ferryd_request *req, ferryd_response *resp)
{
    const char *ref_s = req->path + strlen(SECRETS_PREFIX);
    ferry_secret_ref *ref = NULL;
    ferry_secret_value *v = NULL;
    bearer b = {0};
    const char *tok;
    size_t toklen;
    char err[FERRY_SECRET_REF_MAX + 320];
    int r;

    resp->no_store = true;
    if (!is_method(req, "GET")) {
        method_not_allowed(resp, "GET");
        return;
    }
    if (!d->secrets) {
        secrets_error(resp, 404, "not_found", "no secret backends", NULL, "no secret backends");
        return;
    }
    /* RFC 6750: a bearer token in exactly one Authorization header (never the query). */
    if (req->n_authorization == 0) {
        secrets_error(resp, 401, "unauthorized", "a bearer token is required", BEARER_REALM,
                      "secrets: no Authorization header");
        return;
    }
    if (req->n_authorization > 1 || req->query) {
        secrets_error(resp, 400, "invalid_request",
                      req->query ? "no query string is accepted; encode '?' as %3F"
                                 : "exactly one Authorization header is allowed",
                      BEARER_REQUEST,
                      req->query ? "secrets: query string"
                                 : "secrets: several Authorization headers");
        return;
    }
    if (strncasecmp(req->authorization, "Bearer ", 7) != 0) {
        secrets_error(resp, 401, "unauthorized", "a bearer token is required", BEARER_REALM,
                      "secrets: Authorization is not a Bearer credential");
        return;
    }
    tok = req->authorization + 7;
    while (*tok == ' ')
        tok++;
    toklen = strlen(tok);
    if (!is_b64token(tok, toklen) || toklen > FERRY_JWS_MAX_LEN ||
        verify_bearer(d, tok, toklen, &b, err, sizeof(err)) < 0) {
        if (!is_b64token(tok, toklen) || toklen > FERRY_JWS_MAX_LEN)
            snprintf(err, sizeof(err), "bearer token: not a b64token of at most %d bytes",
                     FERRY_JWS_MAX_LEN);
        secrets_error(resp, 401, "invalid_token", "the bearer token is not valid", BEARER_INVALID,
                      err);
        return;
    }
    ref = malloc(sizeof(*ref));
    if (!ref) {
        secrets_error(resp, 500, "server_error", "internal error", NULL, "out of memory");
        goto out;
    }
    r = ferry_secret_ref_parse(ref_s, ref, err, sizeof(err));
    if (r < 0) {
        char desc[FERRY_SECRET_REF_MAX + 360];
        snprintf(desc, sizeof(desc), "reference: %s", err);
        secrets_error(resp, 400, "invalid_request", desc, NULL, desc);
        goto out;
    }
    /* Every decision below is audited; when the audit log syncs each record, that is I/O. */
    if (!req->may_block && d->config.sync == FERRY_AUDITLOG_SYNC_ALWAYS) {
        resp->defer = true;
        goto out;
    }
    if (!secret_granted(d, &b, ref, err, sizeof(err))) {
        char reason[FERRY_SECRET_REF_MAX * 2 + 800];
        snprintf(reason, sizeof(reason), "secrets: denied %.100s for %.100s: %.100s",
                 ref->canonical, b.sub, err);
        if (audit_release(d, &b, tok, toklen, ref, NULL, FERRY_AUDITLOG_DENY, 403) < 0) {
            secrets_error(resp, 500, "server_error", "internal error", NULL,
                          "secrets: audit record not written");
            goto out;
        }
        secrets_error(resp, 403, "insufficient_scope",
                      "the policy does not grant this secret reference", BEARER_SCOPE, reason);
        goto out;
    }
    r = ferry_secrets_fetch_ex(d->secrets, ref->canonical,
                               req->may_block ? 0 : FERRY_SECRETS_NO_WAIT, NULL, &v, err,
                               sizeof(err));
    if (r == -FERRY_EWOULDBLOCK && !req->may_block) {
        resp->defer = true; /* not cached: the backend call (or the wait for one) on a worker */
        goto out;
    }
    if (r < 0) {
        int status = r == -ENOENT                                              ? 404
                     : r == -FERRY_EUNSUPPORTED                                ? 501
                     : (r == -ETIMEDOUT || r == -EAGAIN || r == -FERRY_EFETCH) ? 503
                                                                               : 502;
        const char *error = status == 404   ? "not_found"
                            : status == 501 ? "backend_not_configured"
                            : status == 503 ? "backend_unavailable"
                                            : "backend_error";
        const char *desc = status == 404 ? "no such secret"
                           : status == 501
                               ? "the secret backend of this reference is not configured"
                           : status == 503 ? "the secret backend is unavailable; retry later"
                                           : "the secret backend failed";
        char reason[sizeof(err) + 16];
        snprintf(reason, sizeof(reason), "secrets: %s", err);
        if (audit_release(d, &b, tok, toklen, ref, NULL, FERRY_AUDITLOG_ERROR, status) < 0)
            snprintf(reason, sizeof(reason), "secrets: audit record not written");
        secrets_error(resp, status, error, desc, NULL, reason);
        if (status == 503)
            resp->retry_after = 1;
        goto out;
    }
    /* Released only once its record is written: no record, no value. */
    if (audit_release(d, &b, tok, toklen, ref, v->version, FERRY_AUDITLOG_ALLOW, 200) < 0) {
        secrets_error(resp, 500, "server_error", "internal error", NULL,
                      "secrets: audit record not written");
        goto out;
    }
    resp->body = malloc(v->len + 1);
    if (!resp->body) {
        secrets_error(resp, 500, "server_error", "internal error", NULL, "out of memory");
        goto out;
    }
    memcpy(resp->body, v->data, v->len);
    resp->body_len = v->len;
    resp->wipe = true;
    resp->status = 200;
    resp->content_type = "application/octet-stream";
    resp->outcome = "ok";
    {
        char reason[FERRY_SECRET_REF_MAX + 600];
        snprintf(reason, sizeof(reason), "secrets: released %.150s version %.60s to %.80s",
                 ref->canonical, v->version, b.sub);
        set_reason(resp, reason);
    }
out:
    ferry_secret_value_free(v);
    free(ref);
    json_decref(b.payload);
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
    } else if (strncmp(p, SECRETS_PREFIX, strlen(SECRETS_PREFIX)) == 0) {
        route_secret(d, req, resp);
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
