/* exchange.c - RFC 8693 token exchange: parameters -> verify -> policy -> mint -> audit.
 *
 * One call decides one exchange. The work is split in two: decide() runs the checks and, when
 * everything holds, mints a token into the decision state; record() writes the one audit
 * record of the decision. Only when that record is on disk is the token handed to the caller;
 * otherwise it is wiped and the answer becomes server_error. Design: docs/internals/exchange.md.
 */
#include "config.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "basic/macro.h"
#include "basic/mem.h"
#include "basic/utf8.h"
#include "ferry/error.h"
#include "ferry/exchange.h"
#include "ferry/totp.h"

struct ferry_exchange {
    ferry_oidc *oidc;
    ferry_policy_store *policies;
    ferry_mint *mint;
    ferry_auditlog *log;
    int64_t default_ttl, max_ttl;
    unsigned subject_types, actor_types, flags;
    char *client_id;
    char *totp_state_dir;
    char *totp_account_claim;
    ferry_clock_fn clock;
    void *clock_data;
    ferry_ratelimit *identity_limit;
};

/* Audit-log bounds on what one record lists (its details hold at most
 * FERRY_AUDITLOG_DETAILS_MEMBERS values). */
#define LOG_MAX_POLICIES 4

/* ---- errors ---------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    int status;
} error_table[FERRY_EXCHANGE_ERROR_MAX] = {
    [FERRY_EXCHANGE_OK] = {"ok", 200},
    [FERRY_EXCHANGE_INVALID_REQUEST] = {"invalid_request", 400},
    [FERRY_EXCHANGE_INVALID_CLIENT] = {"invalid_client", 401},
    [FERRY_EXCHANGE_INVALID_GRANT] = {"invalid_grant", 400},
    [FERRY_EXCHANGE_UNSUPPORTED_GRANT_TYPE] = {"unsupported_grant_type", 400},
    [FERRY_EXCHANGE_INVALID_SCOPE] = {"invalid_scope", 400},
    [FERRY_EXCHANGE_INVALID_TARGET] = {"invalid_target", 400},
    [FERRY_EXCHANGE_SERVER_ERROR] = {"server_error", 500},
    [FERRY_EXCHANGE_TEMPORARILY_UNAVAILABLE] = {"temporarily_unavailable", 503},
    [FERRY_EXCHANGE_SLOW_DOWN] = {"slow_down", 429},
};

FERRY_EXPORT const char *ferry_exchange_error_name(ferry_exchange_error e)
{
    if ((unsigned)e >= FERRY_EXCHANGE_ERROR_MAX)
        return NULL;
    return error_table[e].name;
}

FERRY_EXPORT int ferry_exchange_error_status(ferry_exchange_error e)
{
    if ((unsigned)e >= FERRY_EXCHANGE_ERROR_MAX)
        return 500;
    return error_table[e].status;
}

/* ---- text checks ----------------------------------------------------------------------------- */

/* Printable ASCII without space (tokens, URIs, codes). */
static bool ascii_ok(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f)
            return false;
    return true;
}

/* RFC 6749 §3.3 scope-token character: %x21 / %x23-5B / %x5D-7E. */
static bool scope_char(unsigned char c)
{
    return c == 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e);
}

/* RFC 8707 §2: an absolute URI (RFC 3986 scheme ":" ...) without a fragment. Characters are
 * already checked (printable ASCII). */
static bool resource_ok(const char *s, size_t len)
{
    size_t i = 0;

    if (len == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return false;
    while (i < len && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                       (s[i] >= '0' && s[i] <= '9') || s[i] == '+' || s[i] == '-' || s[i] == '.'))
        i++;
    if (i == len || s[i] != ':' || i + 1 == len)
        return false;
    return memchr(s, '#', len) == NULL;
}

/* ---- the decision state ---------------------------------------------------------------------- */

enum param_id {
    P_GRANT_TYPE,
    P_SUBJECT_TOKEN,
    P_SUBJECT_TOKEN_TYPE,
    P_ACTOR_TOKEN,
    P_ACTOR_TOKEN_TYPE,
    P_AUDIENCE,
    P_RESOURCE,
    P_SCOPE,
    P_REQUESTED_TOKEN_TYPE,
    P_CLIENT_ID,
    P_TOTP_CODE,
    P_TOTP_ACCOUNT,
    P_MAX
};

enum value_kind { V_URI, V_TOKEN, V_TARGET, V_SCOPE, V_TEXT, V_SECRET };

static const struct param_def {
    const char *name;
    size_t max;
    enum value_kind kind;
    bool multi;
} params_def[P_MAX] = {
    [P_GRANT_TYPE] = {"grant_type", FERRY_EXCHANGE_URI_MAX, V_URI, false},
    [P_SUBJECT_TOKEN] = {"subject_token", FERRY_JWS_MAX_LEN, V_TOKEN, false},
    [P_SUBJECT_TOKEN_TYPE] = {"subject_token_type", FERRY_EXCHANGE_URI_MAX, V_URI, false},
    [P_ACTOR_TOKEN] = {"actor_token", FERRY_JWS_MAX_LEN, V_TOKEN, false},
    [P_ACTOR_TOKEN_TYPE] = {"actor_token_type", FERRY_EXCHANGE_URI_MAX, V_URI, false},
    [P_AUDIENCE] = {"audience", FERRY_EXCHANGE_TARGET_MAX, V_TARGET, true},
    [P_RESOURCE] = {"resource", FERRY_EXCHANGE_TARGET_MAX, V_URI, true},
    [P_SCOPE] = {"scope", FERRY_EXCHANGE_SCOPE_MAX, V_SCOPE, false},
    [P_REQUESTED_TOKEN_TYPE] = {"requested_token_type", FERRY_EXCHANGE_URI_MAX, V_URI, false},
    [P_CLIENT_ID] = {"client_id", FERRY_EXCHANGE_CLIENT_ID_MAX, V_TEXT, false},
    [P_TOTP_CODE] = {"totp_code", FERRY_EXCHANGE_TOTP_CODE_MAX, V_SECRET, false},
    [P_TOTP_ACCOUNT] = {"totp_account", FERRY_TOTP_ACCOUNT_MAX, V_TEXT, false},
};

struct state {
    /* outcome */
    ferry_exchange_error error;
    int ret; /* 0, -FERRY_EREFUSED or the internal error */
    bool would_block; /* no_wait: gave up before anything happened (would_block()) */
    char description[FERRY_EXCHANGE_DESCRIPTION_MAX];
    char reason[FERRY_EXCHANGE_REASON_MAX];
    bool step_up_required;
    int64_t retry_after;
    /* the request, as checked: NUL-terminated copies (only of values that passed) */
    char *single[P_MAX];
    size_t single_len[P_MAX];
    char *targets[FERRY_EXCHANGE_MAX_TARGETS]; /* audiences first, then resources */
    size_t n_audience, n_resource;
    char *scopes_buf; /* scope copy cut into tokens */
    const char *scopes[FERRY_EXCHANGE_MAX_SCOPES];
    size_t n_scopes;
    bool have_subject_ref, have_actor_ref;
    ferry_auditlog_token_ref subject_ref, actor_ref;
    /* verified */
    ferry_identity *subject, *actor;
    json_t *act; /* the act claim of the new token, or NULL */
    bool step_up_done;
    ferry_policy_grant *grant, *actor_grant;
    const char *client_id; /* borrowed from the request or the exchange */
    const char *issued_type;
    int64_t ttl;
    /* minted */
    char *token;
    char *scope_str;
    char jti[FERRY_MINT_JTI_LEN + 1];
    int64_t exp;
};

static void state_release(struct state *st)
{
    for (size_t i = 0; i < P_MAX; i++) {
        if (st->single[i])
            ferry_wipe(st->single[i], st->single_len[i]);
        free(st->single[i]);
    }
    for (size_t i = 0; i < st->n_audience + st->n_resource; i++)
        free(st->targets[i]);
    free(st->scopes_buf);
    ferry_identity_free(st->subject);
    ferry_identity_free(st->actor);
    json_decref(st->act);
    ferry_policy_grant_free(st->grant);
    ferry_policy_grant_free(st->actor_grant);
    ferry_free_secret_str(st->token);
    free(st->scope_str);
    ferry_wipe(st, sizeof(*st));
}

/* Record the outcome: e (a client error with ret -FERRY_EREFUSED, or a server error with ret
 * the internal error), a description for the client (fixed text) and a reason for operators. */
_printf_(5, 6) static int fail(struct state *st, ferry_exchange_error e, int ret,
                               const char *description, const char *fmt, ...)
{
    va_list ap;

    st->error = e;
    st->ret = ret;
    snprintf(st->description, sizeof(st->description), "%s", description);
    va_start(ap, fmt);
    vsnprintf(st->reason, sizeof(st->reason), fmt, ap);
    va_end(ap);
    return ret;
}

static int refuse(struct state *st, ferry_exchange_error e, const char *description,
                  const char *reason)
{
    return fail(st, e, -FERRY_EREFUSED, description, "%s", reason);
}

static int internal(struct state *st, int err, const char *what)
{
    ferry_exchange_error e = err == -FERRY_ENOKEY || err == -EAGAIN || err == -EBUSY
                                 ? FERRY_EXCHANGE_TEMPORARILY_UNAVAILABLE
                                 : FERRY_EXCHANGE_SERVER_ERROR;

    if (err >= 0)
        err = -EIO;
    return fail(st, e, err,
                e == FERRY_EXCHANGE_SERVER_ERROR ? "internal error"
                                                 : "service temporarily unavailable",
                "%s: %s", what, ferry_strerror(err));
}

/* A no_wait request gives up: deciding it would have to wait (fmt says for what). Called only
 * before anything with an effect happened (a jti consumed, a rate-limit token taken); the
 * caller then writes no audit record (ferry_exchange_token). */
_printf_(2, 3) static int would_block(struct state *st, const char *fmt, ...)
{
    char what[FERRY_EXCHANGE_REASON_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    st->would_block = true;
    return fail(st, FERRY_EXCHANGE_SERVER_ERROR, -FERRY_EWOULDBLOCK, "internal error",
                "would block: %s", what);
}

/* ---- step 1: parameters ---------------------------------------------------------------------- */

static int find_param(const char *name, size_t len)
{
    for (size_t i = 0; i < P_MAX; i++)
        if (strlen(params_def[i].name) == len && memcmp(params_def[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

static int read_params(struct state *st, const ferry_exchange_request *req)
{
    bool seen[P_MAX] = {false};
    size_t total = 0;
    char desc[FERRY_EXCHANGE_DESCRIPTION_MAX];

    if (req->n_params > FERRY_EXCHANGE_MAX_PARAMS)
        return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST, "too many parameters",
                      "request: too many parameters");
    if (req->n_params && !req->params)
        return internal(st, -EINVAL, "request");
    for (size_t i = 0; i < req->n_params; i++) {
        const ferry_exchange_param *p = &req->params[i];
        if ((!p->name && p->name_len) || (!p->value && p->value_len))
            return internal(st, -EINVAL, "request");
        if (p->name_len > FERRY_EXCHANGE_MAX_BYTES || p->value_len > FERRY_EXCHANGE_MAX_BYTES ||
            (total += p->name_len + p->value_len) > FERRY_EXCHANGE_MAX_BYTES)
            return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST, "request too large",
                          "request: over the size limit");
    }

    for (size_t i = 0; i < req->n_params; i++) {
        const ferry_exchange_param *p = &req->params[i];
        const struct param_def *d;
        const unsigned char *v = (const unsigned char *)p->value;
        bool ok;
        int id;
        char *copy;

        if (p->name_len > FERRY_EXCHANGE_NAME_MAX)
            continue; /* unknown: ignored (RFC 6749 §3.1), counted above */
        id = find_param(p->name, p->name_len);
        if (id < 0)
            continue; /* unknown: ignored */
        d = &params_def[id];
        /* An empty value counts as omitted (RFC 6749 §3.1), but not when deciding whether a
         * single-valued parameter came twice: "a=&a=x" is refused, not read as "a=x". */
        if (!d->multi && seen[id]) {
            snprintf(desc, sizeof(desc), "parameter %s given more than once", d->name);
            return fail(st, FERRY_EXCHANGE_INVALID_REQUEST, -FERRY_EREFUSED, desc,
                        "request: duplicate %s", d->name);
        }
        seen[id] = true;
        if (p->value_len == 0)
            continue;
        if (p->value_len > d->max) {
            snprintf(desc, sizeof(desc), "parameter %s too long", d->name);
            return fail(
                st, id == P_SCOPE ? FERRY_EXCHANGE_INVALID_SCOPE : FERRY_EXCHANGE_INVALID_REQUEST,
                -FERRY_EREFUSED, desc, "request: %s over %zu bytes", d->name, d->max);
        }
        /* text: UTF-8 without controls; tokens, URIs, codes: printable ASCII */
        ok = d->kind == V_TEXT || d->kind == V_TARGET || d->kind == V_SCOPE
                 ? ferry_text_ok(v, p->value_len)
                 : ascii_ok(v, p->value_len);
        if (!ok) {
            snprintf(desc, sizeof(desc), "parameter %s has invalid characters", d->name);
            return fail(
                st, id == P_SCOPE ? FERRY_EXCHANGE_INVALID_SCOPE : FERRY_EXCHANGE_INVALID_REQUEST,
                -FERRY_EREFUSED, desc, "request: %s not valid text", d->name);
        }
        if (d->multi && st->n_audience + st->n_resource >= FERRY_EXCHANGE_MAX_TARGETS)
            return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST,
                          "too many audience and resource values",
                          "request: too many audience/resource values");
        copy = strndup(p->value, p->value_len);
        if (!copy)
            return internal(st, -ENOMEM, "request");
        if (id == P_AUDIENCE) {
            /* audiences stay before resources: shift the resources up by one */
            memmove(&st->targets[st->n_audience + 1], &st->targets[st->n_audience],
                    st->n_resource * sizeof(st->targets[0]));
            st->targets[st->n_audience++] = copy;
        } else if (id == P_RESOURCE) {
            st->targets[st->n_audience + st->n_resource++] = copy;
        } else {
            st->single[id] = copy;
            st->single_len[id] = p->value_len;
        }
    }
    return 0;
}

/* The token type bit of a type URI, 0 when unknown. */
static unsigned type_bit(const char *uri)
{
    if (strcmp(uri, FERRY_TOKEN_TYPE_JWT) == 0)
        return FERRY_EXCHANGE_TYPE_JWT;
    if (strcmp(uri, FERRY_TOKEN_TYPE_ID_TOKEN) == 0)
        return FERRY_EXCHANGE_TYPE_ID_TOKEN;
    if (strcmp(uri, FERRY_TOKEN_TYPE_ACCESS_TOKEN) == 0)
        return FERRY_EXCHANGE_TYPE_ACCESS_TOKEN;
    return 0;
}

static int check_params(ferry_exchange *ex, struct state *st)
{
    const char *t;

    if (!st->single[P_GRANT_TYPE])
        return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST, "missing grant_type",
                      "request: no grant_type");
    if (strcmp(st->single[P_GRANT_TYPE], FERRY_GRANT_TYPE_TOKEN_EXCHANGE) != 0)
        return refuse(st, FERRY_EXCHANGE_UNSUPPORTED_GRANT_TYPE, "only token exchange is supported",
                      "request: unsupported grant_type");
    if (!st->single[P_SUBJECT_TOKEN])
        return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST, "missing subject_token",
                      "request: no subject_token");
    if (!st->single[P_SUBJECT_TOKEN_TYPE])
        return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST, "missing subject_token_type",
                      "request: no subject_token_type");
    if (!(type_bit(st->single[P_SUBJECT_TOKEN_TYPE]) & ex->subject_types))
        return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST, "unsupported subject_token_type",
                      "request: subject_token_type not accepted");
    if (st->single[P_ACTOR_TOKEN] && !st->single[P_ACTOR_TOKEN_TYPE])
        return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST, "missing actor_token_type",
                      "request: actor_token without actor_token_type");
    if (!st->single[P_ACTOR_TOKEN] && st->single[P_ACTOR_TOKEN_TYPE])
        return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST, "actor_token_type without actor_token",
                      "request: actor_token_type without actor_token");
    if (st->single[P_ACTOR_TOKEN_TYPE] &&
        !(type_bit(st->single[P_ACTOR_TOKEN_TYPE]) & ex->actor_types))
        return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST, "unsupported actor_token_type",
                      "request: actor_token_type not accepted");
    t = st->single[P_REQUESTED_TOKEN_TYPE];
    if (!t || strcmp(t, FERRY_TOKEN_TYPE_ACCESS_TOKEN) == 0)
        st->issued_type = FERRY_TOKEN_TYPE_ACCESS_TOKEN;
    else if (strcmp(t, FERRY_TOKEN_TYPE_JWT) == 0)
        st->issued_type = FERRY_TOKEN_TYPE_JWT;
    else
        return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST, "unsupported requested_token_type",
                      "request: requested_token_type not supported");
    for (size_t i = 0; i < st->n_resource; i++) {
        const char *r = st->targets[st->n_audience + i];
        if (!resource_ok(r, strlen(r)))
            return refuse(st, FERRY_EXCHANGE_INVALID_TARGET,
                          "resource must be an absolute URI without fragment",
                          "request: malformed resource");
    }
    if (st->single[P_SCOPE]) {
        /* scope = scope-token *( SP scope-token ) */
        char *s = strdup(st->single[P_SCOPE]), *p;
        if (!s)
            return internal(st, -ENOMEM, "request");
        st->scopes_buf = s;
        for (p = s;;) {
            char *tok = p;
            while (scope_char((unsigned char)*p))
                p++;
            if (p == tok || (*p != ' ' && *p != '\0'))
                return refuse(st, FERRY_EXCHANGE_INVALID_SCOPE, "malformed scope",
                              "request: malformed scope");
            if (st->n_scopes == FERRY_EXCHANGE_MAX_SCOPES)
                return refuse(st, FERRY_EXCHANGE_INVALID_SCOPE, "too many scopes",
                              "request: too many scopes");
            st->scopes[st->n_scopes++] = tok;
            if (*p == '\0')
                break;
            *p++ = '\0';
        }
    }
    if (st->single[P_TOTP_ACCOUNT] && ferry_totp_account_check(st->single[P_TOTP_ACCOUNT]) < 0)
        return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST, "malformed totp_account",
                      "request: malformed totp_account");
    return 0;
}

/* ---- step 2: tokens -------------------------------------------------------------------------- */

static bool profile_fits(unsigned type, ferry_profile p)
{
    switch (type) {
    case FERRY_EXCHANGE_TYPE_JWT:
        return true;
    case FERRY_EXCHANGE_TYPE_ID_TOKEN:
        return p == FERRY_PROFILE_ID_TOKEN || p == FERRY_PROFILE_KUBERNETES ||
               p == FERRY_PROFILE_GITHUB;
    case FERRY_EXCHANGE_TYPE_ACCESS_TOKEN:
        return p == FERRY_PROFILE_ACCESS_TOKEN || p == FERRY_PROFILE_FERRY;
    default:
        return false;
    }
}

/* The answer to a token the trust store refused: 503 when it could not decide (issuer
 * unavailable, replay cache full), 500 for its internal failure, otherwise invalid_request. */
static int token_refused(struct state *st, const char *name, const ferry_verify_result *res)
{
    char desc[FERRY_EXCHANGE_DESCRIPTION_MAX];

    if (res->reason == FERRY_REASON_ISSUER_UNAVAILABLE ||
        res->reason == FERRY_REASON_REPLAY_CACHE_FULL)
        return fail(st, FERRY_EXCHANGE_TEMPORARILY_UNAVAILABLE, -EAGAIN,
                    "service temporarily unavailable", "%s: %s: %s", name,
                    ferry_reason_name(res->reason), res->detail);
    if (res->reason == FERRY_REASON_INTERNAL)
        return fail(st, FERRY_EXCHANGE_SERVER_ERROR, -EIO, "internal error", "%s: %s: %s", name,
                    ferry_reason_name(res->reason), res->detail);
    /* G3: one answer for every reason; the reason goes to the log only. */
    snprintf(desc, sizeof(desc), "%s is invalid", name);
    return fail(st, FERRY_EXCHANGE_INVALID_REQUEST, -FERRY_EREFUSED, desc, "%s: %s: %s", name,
                ferry_reason_name(res->reason), res->detail);
}

/* Verify the token of parameter which (P_SUBJECT_TOKEN or P_ACTOR_TOKEN), consuming its jti
 * (one-time use) when consume is set. no_wait: give up (would_block) where the trust store
 * would wait for a key-set fetch; it then did nothing. */
static int verify_token(ferry_exchange *ex, struct state *st, int which, int64_t now,
                        bool consume, bool no_wait, ferry_identity **ret_id)
{
    const char *name = params_def[which].name;
    ferry_verify_options vo = {
        .now = now,
        .consume_jti = consume,
        .no_wait = no_wait,
    };
    ferry_verify_result res = {.reason = FERRY_REASON_INTERNAL};
    ferry_identity *id = NULL;
    char desc[FERRY_EXCHANGE_DESCRIPTION_MAX];
    int r;

    r = ferry_oidc_verify(ex->oidc, st->single[which], st->single_len[which], &vo, &id, &res);
    if (r == -FERRY_EWOULDBLOCK && no_wait)
        return would_block(st, "%s: %s", name, res.detail);
    if (r == -FERRY_EREFUSED)
        return token_refused(st, name, &res);
    if (r < 0)
        return internal(st, r, name);
    if (!profile_fits(
            type_bit(
                st->single[which == P_SUBJECT_TOKEN ? P_SUBJECT_TOKEN_TYPE : P_ACTOR_TOKEN_TYPE]),
            id->profile)) {
        ferry_profile prof = id->profile;
        ferry_identity_free(id);
        snprintf(desc, sizeof(desc), "%s does not match its token type", name);
        return fail(st, FERRY_EXCHANGE_INVALID_REQUEST, -FERRY_EREFUSED, desc,
                    "%s: profile %s does not fit the token type", name, ferry_profile_name(prof));
    }
    if (strlen(id->subject) > FERRY_EXCHANGE_SUBJECT_MAX ||
        !ferry_text_ok((const unsigned char *)id->subject, strlen(id->subject))) {
        ferry_identity_free(id);
        snprintf(desc, sizeof(desc), "%s subject is not usable", name);
        return fail(st, FERRY_EXCHANGE_INVALID_REQUEST, -FERRY_EREFUSED, desc,
                    "%s: sub too long or not printable text", name);
    }
    *ret_id = id;
    return 0;
}

/* A copy of an RFC 8693 act claim keeping sub, iss and client_id (strings) and a nested act,
 * at most max_depth levels. NULL when malformed or too deep. */
static json_t *copy_act(const json_t *act, unsigned max_depth)
{
    json_t *out, *v;
    static const char *const keep[] = {"sub", "iss", "client_id"};

    if (!json_is_object(act) || max_depth == 0)
        return NULL;
    v = json_object_get(act, "sub");
    if (!json_is_string(v) || json_string_length(v) == 0)
        return NULL;
    out = json_object();
    if (!out)
        return NULL;
    for (size_t i = 0; i < ARRAY_SIZE(keep); i++) {
        v = json_object_get(act, keep[i]);
        if (!v)
            continue;
        if (!json_is_string(v) || json_object_set(out, keep[i], v) < 0) {
            json_decref(out);
            return NULL;
        }
    }
    v = json_object_get(act, "act");
    if (v) {
        json_t *inner = copy_act(v, max_depth - 1);
        if (!inner || json_object_set_new(out, "act", inner) < 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* RFC 8693 §4.4: a subject token carrying "may_act" names who may act for it. When present,
 * the actor's sub and iss must equal each member the claim gives (at least one of them). */
static int check_may_act(struct state *st)
{
    const json_t *may = json_object_get(st->subject->claims, "may_act");
    const json_t *sub, *iss;

    if (!may || !st->actor)
        return 0;
    sub = json_object_get(may, "sub");
    iss = json_object_get(may, "iss");
    if (!json_is_object(may) || (!sub && !iss) || (sub && !json_is_string(sub)) ||
        (iss && !json_is_string(iss)))
        return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST, "subject_token may_act is malformed",
                      "subject_token: may_act is not an object with string sub or iss");
    if ((sub && strcmp(json_string_value(sub), st->actor->subject) != 0) ||
        (iss && strcmp(json_string_value(iss), st->actor->issuer) != 0))
        return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST,
                      "actor_token is not allowed to act for subject_token",
                      "actor_token: not named by the subject token's may_act");
    return 0;
}

/* The act claim of the new token: the actor on top of the subject token's own chain. */
static int build_act(struct state *st)
{
    const json_t *prior = json_object_get(st->subject->claims, "act");
    json_t *chain = NULL, *act;

    if (prior) {
        chain = copy_act(prior, FERRY_MINT_ACT_MAX_DEPTH - (st->actor ? 1 : 0));
        if (!chain)
            return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST,
                          "subject_token delegation chain is malformed or too long",
                          "subject_token: act claim malformed or deeper than allowed");
    }
    if (!st->actor) {
        st->act = chain;
        return 0;
    }
    act = json_pack("{s:s, s:s}", "sub", st->actor->subject, "iss", st->actor->issuer);
    if (!act || (chain && json_object_set_new(act, "act", chain) < 0)) {
        json_decref(act);
        return internal(st, -ENOMEM, "act");
    }
    st->act = act;
    return 0;
}

/* ---- step 3: policy -------------------------------------------------------------------------- */

static int policy_refused(struct state *st, const ferry_policy_refusal *ref, bool actor)
{
    if (actor)
        return fail(st, FERRY_EXCHANGE_INVALID_REQUEST, -FERRY_EREFUSED,
                    "actor_token is not allowed to act for this request", "actor policy: %s: %s",
                    ferry_policy_error_name(ref->error), ref->reason);
    switch (ref->error) {
    case FERRY_POLICY_INVALID_SCOPE:
        return fail(st, FERRY_EXCHANGE_INVALID_SCOPE, -FERRY_EREFUSED,
                    "a requested scope is not granted", "policy: invalid_scope: %s", ref->reason);
    case FERRY_POLICY_INVALID_TARGET:
        return fail(st, FERRY_EXCHANGE_INVALID_TARGET, -FERRY_EREFUSED,
                    "a requested audience or resource is not granted, or none was named",
                    "policy: invalid_target: %s", ref->reason);
    case FERRY_POLICY_STEP_UP_REQUIRED:
        st->step_up_required = true;
        return fail(st, FERRY_EXCHANGE_INVALID_REQUEST, -FERRY_EREFUSED,
                    "step-up required: resend with totp_code", "policy: step_up_required: %s",
                    ref->reason);
    case FERRY_POLICY_ACCESS_DENIED:
    default:
        /* RFC 8693 §2.2.2: unwilling to issue a token for the targets -> invalid_target. */
        return fail(st, FERRY_EXCHANGE_INVALID_TARGET, -FERRY_EREFUSED,
                    "no token can be issued for this subject and target",
                    "policy: access_denied: %s", ref->reason);
    }
}

static int decide_policy(const ferry_policy_set *set, const ferry_identity *id,
                         const char *const *auds, size_t n_auds, const char *const *scopes,
                         size_t n_scopes, bool step_up, ferry_policy_grant **ret,
                         ferry_policy_refusal *ref)
{
    ferry_policy_request pr = {
        .issuer = id->issuer,
        .subject = id->subject,
        .audience = id->audience,
        .claims = id->claims,
        .audiences = auds,
        .n_audiences = n_auds,
        .scopes = scopes,
        .n_scopes = n_scopes,
        .step_up_totp = step_up,
    };

    if (!set) {
        ref->error = FERRY_POLICY_ACCESS_DENIED;
        snprintf(ref->reason, sizeof(ref->reason), "no policy set loaded");
        return -FERRY_EREFUSED;
    }
    return ferry_policy_decide(set, &pr, ret, ref);
}

/* The TOTP account of the subject: the string claim totp_account_claim. */
static int step_up(ferry_exchange *ex, struct state *st, int64_t now)
{
    const json_t *v = json_object_get(st->subject->claims, ex->totp_account_claim);
    const char *account = json_string_value(v);
    ferry_totp_status status = FERRY_TOTP_MALFORMED;
    int64_t retry = 0;
    char err[256] = "";
    int r;

    if (!ex->totp_state_dir)
        return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST, "step-up is not available",
                      "totp: no TOTP state directory configured");
    if (!account || ferry_totp_account_check(account) < 0)
        return refuse(st, FERRY_EXCHANGE_INVALID_GRANT, "no step-up account for this subject",
                      "totp: the subject token has no usable account claim");
    if (st->single[P_TOTP_ACCOUNT] && strcmp(st->single[P_TOTP_ACCOUNT], account) != 0)
        return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST,
                      "totp_account is not the subject's account",
                      "totp: totp_account differs from the subject's account");
    r = ferry_totp_verify(ex->totp_state_dir, account, st->single[P_TOTP_CODE], now, &status,
                          &retry, err, sizeof(err));
    if (r < 0)
        return fail(st, FERRY_EXCHANGE_SERVER_ERROR, r, "internal error", "totp: %s",
                    err[0] ? err : ferry_strerror(r));
    if (status != FERRY_TOTP_OK) {
        st->retry_after = retry;
        return fail(st, FERRY_EXCHANGE_INVALID_GRANT, -FERRY_EREFUSED,
                    "the step-up code was not accepted", "totp: %s",
                    ferry_totp_status_name(status));
    }
    st->step_up_done = true;
    return 0;
}

static int apply_policy(ferry_exchange *ex, struct state *st, int64_t now)
{
    ferry_policy_set *set = ferry_policy_store_get(ex->policies);
    ferry_policy_refusal ref = {0};
    const char *const *auds = (const char *const *)st->targets;
    size_t n_auds = st->n_audience + st->n_resource;
    int r;

    r = decide_policy(set, st->subject, auds, n_auds, st->scopes, st->n_scopes, false, &st->grant,
                      &ref);
    if (r == -FERRY_EREFUSED && ref.error == FERRY_POLICY_STEP_UP_REQUIRED &&
        st->single[P_TOTP_CODE]) {
        r = step_up(ex, st, now);
        if (r < 0)
            goto out;
        r = decide_policy(set, st->subject, auds, n_auds, st->scopes, st->n_scopes, true,
                          &st->grant, &ref);
    }
    if (r == -FERRY_EREFUSED) {
        r = policy_refused(st, &ref, false);
        goto out;
    }
    if (r < 0) {
        r = internal(st, r, "policy");
        goto out;
    }
    if (st->grant->n_audiences == 0) {
        r = refuse(st, FERRY_EXCHANGE_INVALID_TARGET, "name an audience or resource",
                   "policy: the grant names no audience");
        goto out;
    }
    if (st->grant->n_audiences > FERRY_MINT_MAX_AUDIENCES) {
        r = internal(st, -FERRY_ETOOBIG, "policy");
        goto out;
    }
    if (st->actor && !(ex->flags & FERRY_EXCHANGE_ACTOR_UNCHECKED)) {
        r = decide_policy(set, st->actor, st->grant->audiences, st->grant->n_audiences,
                          st->grant->scopes, st->grant->n_scopes, false, &st->actor_grant, &ref);
        if (r == -FERRY_EREFUSED) {
            r = policy_refused(st, &ref, true);
            goto out;
        }
        if (r < 0) {
            r = internal(st, r, "actor policy");
            goto out;
        }
    }
    r = 0;
out:
    ferry_policy_set_unref(set);
    return r;
}

/* ---- step 4: mint ---------------------------------------------------------------------------- */

static char *join_scopes(const char **scopes, size_t n)
{
    size_t len = 0, o = 0;
    char *s;

    if (n == 0)
        return NULL;
    for (size_t i = 0; i < n; i++)
        len += strlen(scopes[i]) + 1;
    s = malloc(len);
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(scopes[i]);
        if (i)
            s[o++] = ' ';
        memcpy(s + o, scopes[i], l);
        o += l;
    }
    s[o] = '\0';
    return s;
}

static int mint(ferry_exchange *ex, struct state *st, int64_t requested_ttl)
{
    ferry_mint_request mr;
    int64_t ttl = requested_ttl > 0 ? requested_ttl : ex->default_ttl;
    int r;

    if (ttl > ex->max_ttl)
        ttl = ex->max_ttl;
    if (st->grant->ttl > 0 && st->grant->ttl < ttl)
        ttl = st->grant->ttl;
    if (st->actor_grant && st->actor_grant->ttl > 0 && st->actor_grant->ttl < ttl)
        ttl = st->actor_grant->ttl;
    st->ttl = ttl;
    if (st->grant->n_scopes) {
        st->scope_str = join_scopes(st->grant->scopes, st->grant->n_scopes);
        if (!st->scope_str)
            return internal(st, -ENOMEM, "mint");
    }
    mr = (ferry_mint_request){
        .subject = st->subject->subject,
        .audience = st->grant->audiences,
        .n_audience = st->grant->n_audiences,
        .scope = st->scope_str,
        .client_id = st->client_id,
        .ttl = ttl,
        .src_iss = st->subject->issuer,
        .src_sub = st->subject->subject,
        .act = st->act,
    };
    r = ferry_mint_token(ex->mint, &mr, &st->token, st->jti, &st->exp);
    if (r == -EINVAL || r == -FERRY_ETOOBIG)
        return fail(st, FERRY_EXCHANGE_INVALID_REQUEST, -FERRY_EREFUSED,
                    "the token's identity cannot be carried into a ferry token",
                    "mint: %s (a claim of the verified token is out of the mint's limits)",
                    ferry_strerror(r));
    if (r < 0)
        return internal(st, r, "mint");
    return 0;
}

/* ---- the decision ---------------------------------------------------------------------------- */

/* The per-identity rate limit, keyed by the verified (issuer, subject): the issuer's length
 * (4 bytes, big-endian), the issuer, the subject - unambiguous whatever bytes they hold.
 * refund: give back the token an earlier check took (st unchanged). */
/* Spend the verified subject token (one-time use) after the fact; see ferry_oidc_consume. */
static int consume_subject(ferry_exchange *ex, struct state *st, int64_t now)
{
    const char *name = params_def[P_SUBJECT_TOKEN].name;
    ferry_verify_result res = {.reason = FERRY_REASON_INTERNAL};
    int r = ferry_oidc_consume(ex->oidc, st->subject, now, &res);

    if (r == -FERRY_EREFUSED)
        return token_refused(st, name, &res);
    if (r < 0)
        return internal(st, r, name);
    return 0;
}

static int check_identity_limit(ferry_exchange *ex, struct state *st, bool refund)
{
    size_t il = strlen(st->subject->issuer), sl = strlen(st->subject->subject);
    char desc[FERRY_EXCHANGE_DESCRIPTION_MAX];
    int64_t retry = 0;
    unsigned char *key;
    int r;

    /* A refund leaves st alone whatever happens: it must not replace the decision it follows. */
    if (il > UINT32_MAX || sl > SIZE_MAX - il - 4)
        return refund ? -E2BIG : internal(st, -E2BIG, "rate limit");
    key = malloc(4 + il + sl);
    if (!key)
        return refund ? -ENOMEM : internal(st, -ENOMEM, "rate limit");
    key[0] = (unsigned char)(il >> 24);
    key[1] = (unsigned char)(il >> 16);
    key[2] = (unsigned char)(il >> 8);
    key[3] = (unsigned char)il;
    memcpy(key + 4, st->subject->issuer, il);
    memcpy(key + 4 + il, st->subject->subject, sl);
    if (refund) {
        r = ferry_ratelimit_refund(ex->identity_limit, key, 4 + il + sl);
        free(key);
        return r;
    }
    r = ferry_ratelimit_check(ex->identity_limit, key, 4 + il + sl, &retry);
    free(key);
    if (r == 0)
        return 0;
    if (r != -FERRY_EREFUSED)
        return internal(st, r, "rate limit");
    st->retry_after = retry;
    snprintf(desc, sizeof(desc), "too many requests for this subject; retry after %lld seconds",
             (long long)retry);
    return fail(st, FERRY_EXCHANGE_SLOW_DOWN, -FERRY_EREFUSED, desc,
                "rate limited: per-identity limit (retry after %lld s)", (long long)retry);
}

static int decide(ferry_exchange *ex, const ferry_exchange_request *req, struct state *st)
{
    int64_t now = ex->clock ? ex->clock(ex->clock_data) : (int64_t)time(NULL);
    bool one_time, limited, defer;
    int r;

    r = read_params(st, req);
    if (r < 0)
        return r;
    /* The presented tokens are named in the record whatever happens next (take_refs). */
    r = check_params(ex, st);
    if (r < 0)
        return r;
    if (req->client_id) {
        if (st->single[P_CLIENT_ID] && strcmp(st->single[P_CLIENT_ID], req->client_id) != 0)
            return refuse(st, FERRY_EXCHANGE_INVALID_REQUEST,
                          "client_id differs from the authenticated client",
                          "request: client_id differs from the authenticated client");
        st->client_id = req->client_id;
    } else {
        st->client_id = ex->client_id;
    }
    /* The step-up reads and syncs the TOTP state file: a no_wait request carrying a code
     * gives up before any verification (which could spend or count something). */
    if (req->no_wait && st->single[P_TOTP_CODE])
        return would_block(st, "totp_code: the step-up writes its state file");
    /* The actor first: a refused actor must not use up a one-time subject token. */
    if (st->single[P_ACTOR_TOKEN]) {
        r = verify_token(ex, st, P_ACTOR_TOKEN, now, false, req->no_wait, &st->actor);
        if (r < 0)
            return r;
    }
    one_time = ex->flags & FERRY_EXCHANGE_ONE_TIME_SUBJECT;
    limited = ex->identity_limit && ferry_ratelimit_enabled(ex->identity_limit);
    /* With a per-identity limit the subject is known only after verification, so a one-time
     * token is verified without being spent, the limit is checked, and only then is its jti
     * consumed (ferry_oidc_consume, atomic like consume_jti): a client refused for rate
     * keeps its token and retries with it after Retry-After. A no_wait request defers the
     * consumption the same way, so that a verification giving up never leaves a spent jti;
     * after the subject's verification nothing gives up any more. */
    defer = one_time && (limited || req->no_wait);
    r = verify_token(ex, st, P_SUBJECT_TOKEN, now, one_time && !defer, req->no_wait,
                     &st->subject);
    if (r < 0)
        return r;
    if (limited) {
        r = check_identity_limit(ex, st, false);
        if (r < 0)
            return r;
    }
    if (defer) {
        r = consume_subject(ex, st, now);
        if (r < 0) {
            /* A spent (replayed) token costs its identity nothing: otherwise whoever holds a
             * copy of a used token could drain its owner's budget by replaying it. */
            if (limited)
                (void)check_identity_limit(ex, st, true);
            return r;
        }
    }
    r = check_may_act(st);
    if (r < 0)
        return r;
    r = build_act(st);
    if (r < 0)
        return r;
    r = apply_policy(ex, st, now);
    if (r < 0)
        return r;
    return mint(ex, st, req->requested_ttl);
}

/* ---- the audit record ------------------------------------------------------------------------ */

static int add_str(json_t *o, const char *k, const char *v)
{
    return v ? json_object_set_new(o, k, json_string(v)) : 0;
}

static json_t *str_array(const char *const *v, size_t n, size_t max)
{
    json_t *a = json_array();

    for (size_t i = 0; a && i < n && i < max; i++)
        if (json_array_append_new(a, json_string(v[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static int add_policies(json_t *d, const char *key, const ferry_policy_grant *g)
{
    json_t *a;

    if (!g)
        return 0;
    a = str_array(g->policies, g->n_policies, LOG_MAX_POLICIES);
    if (!a || json_object_set_new(d, key, a) < 0)
        return -ENOMEM;
    if (g->n_policies > LOG_MAX_POLICIES &&
        json_object_set_new(d, "policies_truncated", json_true()) < 0)
        return -ENOMEM;
    return 0;
}

/* The details of the record: only checked values, never token material. */
static json_t *details_of(const struct state *st, bool minimal)
{
    json_t *d = json_object(), *req = NULL, *a;
    int r = 0;

    if (!d)
        return NULL;
    if (st->error != FERRY_EXCHANGE_OK) {
        r |= add_str(d, "error", ferry_exchange_error_name(st->error));
        r |= add_str(d, "reason", minimal ? "details refused by the audit log" : st->reason);
    }
    if (st->error == FERRY_EXCHANGE_SLOW_DOWN) {
        r |= add_str(d, "rate_limited", "per_identity");
        r |= json_object_set_new(d, "retry_after", json_integer(st->retry_after));
    }
    if (minimal)
        goto out;
    if (st->subject)
        r |= add_str(d, "issuer", st->subject->issuer);
    r |= add_str(d, "subject_token_type", st->single[P_SUBJECT_TOKEN_TYPE]);
    if (st->actor) {
        a = json_pack("{s:s, s:s}", "iss", st->actor->issuer, "sub", st->actor->subject);
        r |= a ? json_object_set_new(d, "actor", a) : -1;
    }
    if (st->have_actor_ref) {
        a = json_pack("{s:s, s:s}", "jti", st->actor_ref.jti, "sha256", st->actor_ref.sha256);
        r |= a ? json_object_set_new(d, "actor_token", a) : -1;
    }
    r |= add_str(d, "client_id", st->client_id);
    r |= add_str(d, "client_id_param", st->single[P_CLIENT_ID]);
    req = json_object();
    if (!req)
        goto fail;
    if (st->n_audience) {
        a = str_array((const char *const *)st->targets, st->n_audience, SIZE_MAX);
        r |= a ? json_object_set_new(req, "audience", a) : -1;
    }
    if (st->n_resource) {
        a = str_array((const char *const *)st->targets + st->n_audience, st->n_resource, SIZE_MAX);
        r |= a ? json_object_set_new(req, "resource", a) : -1;
    }
    r |= add_str(req, "scope", st->single[P_SCOPE]);
    if (st->single[P_TOTP_CODE])
        r |= json_object_set_new(req, "step_up", json_string("totp"));
    r |= json_object_set_new(d, "requested", req);
    if (st->step_up_done)
        r |= json_object_set_new(d, "step_up", json_true());
    r |= add_policies(d, "policies", st->grant) < 0 ? -1 : 0;
    r |= add_policies(d, "actor_policies", st->actor_grant) < 0 ? -1 : 0;
    if (st->error == FERRY_EXCHANGE_OK && st->token) {
        json_t *g = json_object();
        if (!g)
            goto fail;
        a = str_array(st->grant->audiences, st->grant->n_audiences, SIZE_MAX);
        r |= a ? json_object_set_new(g, "audience", a) : -1;
        r |= add_str(g, "scope", st->scope_str);
        r |= json_object_set_new(g, "ttl", json_integer(st->ttl));
        r |= json_object_set_new(g, "exp", json_integer(st->exp));
        r |= add_str(g, "jti", st->jti);
        r |= add_str(g, "token_type", st->issued_type);
        r |= json_object_set_new(d, "granted", g);
    }
out:
    if (r == 0)
        return d;
fail:
    json_decref(d);
    return NULL;
}

/* Name a presented token for the record (jti + SHA-256 only). A verified token's jti is read
 * from the claims its verification parsed; a token that was refused or never reached
 * verification is parsed for it (ferry_auditlog_ref_token). */
static bool take_ref(const char *tok, size_t len, const ferry_identity *id,
                     ferry_auditlog_token_ref *ref)
{
    const json_t *jti;

    if (!tok)
        return false;
    if (!id)
        return ferry_auditlog_ref_token(tok, len, ref) == 0;
    jti = json_object_get(id->claims, "jti");
    return ferry_auditlog_ref_token_jti(tok, len, json_string_value(jti), json_string_length(jti),
                                        ref) == 0;
}

static void take_refs(struct state *st)
{
    st->have_subject_ref = take_ref(st->single[P_SUBJECT_TOKEN], st->single_len[P_SUBJECT_TOKEN],
                                    st->subject, &st->subject_ref);
    st->have_actor_ref = take_ref(st->single[P_ACTOR_TOKEN], st->single_len[P_ACTOR_TOKEN],
                                  st->actor, &st->actor_ref);
}

static int record(ferry_exchange *ex, struct state *st, uint64_t *ret_seq)
{
    ferry_auditlog_event ev = {
        .type = "token.exchange",
        .decision = st->error == FERRY_EXCHANGE_OK ? FERRY_AUDITLOG_ALLOW
                    : st->ret == -FERRY_EREFUSED   ? FERRY_AUDITLOG_DENY
                                                   : FERRY_AUDITLOG_ERROR,
        .subject = st->subject ? st->subject->subject : "",
    };
    json_t *d;
    int r;

    take_refs(st);
    ev.token = st->have_subject_ref ? &st->subject_ref : NULL;
    d = details_of(st, false);
    if (!d)
        return -ENOMEM;
    ev.details = d;
    r = ferry_auditlog_append(ex->log, &ev, ret_seq);
    json_decref(d);
    if (r == -EINVAL || r == -FERRY_ETOOBIG || r == -FERRY_EMALFORMED || r == -FERRY_EPOLICY) {
        /* The log refused this event's contents (it stays usable). An allow is never issued
         * without its full record; a refusal is still recorded, with what is safe to keep. */
        if (ev.decision == FERRY_AUDITLOG_ALLOW)
            return r;
        d = details_of(st, true);
        if (!d)
            return -ENOMEM;
        ev.details = d;
        ev.subject = "";
        r = ferry_auditlog_append(ex->log, &ev, ret_seq);
        json_decref(d);
    }
    return r;
}

/* ---- public entry points --------------------------------------------------------------------- */

FERRY_EXPORT int ferry_exchange_token(ferry_exchange *ex, const ferry_exchange_request *req,
                                      ferry_exchange_response *resp)
{
    struct state st = {.error = FERRY_EXCHANGE_OK, .issued_type = FERRY_TOKEN_TYPE_ACCESS_TOKEN};
    uint64_t seq = 0;
    int r, rl;

    if (!resp)
        return -EINVAL;
    memset(resp, 0, sizeof(*resp));
    if (!ex || !req) {
        resp->error = FERRY_EXCHANGE_SERVER_ERROR;
        resp->http_status = 500;
        snprintf(resp->error_description, sizeof(resp->error_description), "internal error");
        snprintf(resp->reason, sizeof(resp->reason), "exchange: NULL argument");
        return -EINVAL;
    }
    /* Every decision appends a record; when that append syncs, a no_wait request gives up
     * before anything else. */
    if (req->no_wait && (ex->flags & FERRY_EXCHANGE_AUDIT_BLOCKS))
        r = would_block(&st, "the audit log syncs every record");
    else
        r = decide(ex, req, &st);
    if (st.would_block) {
        /* Nothing happened: no record, nothing spent. A placeholder answer, not to be sent. */
        resp->error = FERRY_EXCHANGE_SERVER_ERROR;
        resp->http_status = ferry_exchange_error_status(FERRY_EXCHANGE_SERVER_ERROR);
        snprintf(resp->error_description, sizeof(resp->error_description), "%s",
                 st.description);
        snprintf(resp->reason, sizeof(resp->reason), "%s", st.reason);
        state_release(&st);
        return -FERRY_EWOULDBLOCK;
    }
    rl = record(ex, &st, &seq);
    if (rl < 0) {
        /* Fail closed: a decision that is not on record has no effect. */
        ferry_free_secret_str(st.token);
        st.token = NULL;
        st.step_up_required = false;
        st.retry_after = 0;
        fail(&st, FERRY_EXCHANGE_SERVER_ERROR, rl, "internal error",
             "audit log: %s (decision not recorded; nothing issued)", ferry_strerror(rl));
        r = rl;
        seq = 0;
    }

    resp->error = st.error;
    resp->http_status = ferry_exchange_error_status(st.error);
    resp->audit_seq = seq;
    snprintf(resp->reason, sizeof(resp->reason), "%s",
             st.error == FERRY_EXCHANGE_OK ? "granted" : st.reason);
    if (st.error == FERRY_EXCHANGE_OK) {
        resp->access_token = TAKE_PTR(st.token);
        resp->issued_token_type = st.issued_type;
        resp->token_type = "Bearer";
        resp->expires_in = st.ttl;
        resp->scope = TAKE_PTR(st.scope_str);
        memcpy(resp->jti, st.jti, sizeof(resp->jti));
        r = 0;
    } else {
        snprintf(resp->error_description, sizeof(resp->error_description), "%s", st.description);
        resp->step_up_required = st.step_up_required;
        resp->retry_after = st.retry_after;
        if (r >= 0)
            r = st.ret < 0 ? st.ret : -EIO;
    }
    state_release(&st);
    return r;
}

FERRY_EXPORT void ferry_exchange_response_release(ferry_exchange_response *resp)
{
    if (!resp)
        return;
    ferry_free_secret_str(resp->access_token);
    free(resp->scope);
    ferry_wipe(resp, sizeof(*resp));
}

FERRY_EXPORT int ferry_exchange_response_to_json(const ferry_exchange_response *resp,
                                                 json_t **ret_json)
{
    json_t *j;

    if (!resp || !ret_json)
        return -EINVAL;
    if (resp->error == FERRY_EXCHANGE_OK) {
        if (!resp->access_token || !resp->issued_token_type)
            return -EINVAL;
        j = json_pack("{s:s, s:s, s:s, s:I}", "access_token", resp->access_token,
                      "issued_token_type", resp->issued_token_type, "token_type", "Bearer",
                      "expires_in", (json_int_t)resp->expires_in);
        if (j && resp->scope && json_object_set_new(j, "scope", json_string(resp->scope)) < 0) {
            json_decref(j);
            j = NULL;
        }
    } else {
        const char *name = ferry_exchange_error_name(resp->error);
        if (!name)
            return -EINVAL;
        j = json_pack("{s:s}", "error", name);
        if (j && resp->error_description[0] &&
            json_object_set_new(j, "error_description", json_string(resp->error_description)) < 0) {
            json_decref(j);
            j = NULL;
        }
    }
    if (!j)
        return -ENOMEM;
    *ret_json = j;
    return 0;
}

/* The body writer: appends to out (cap bytes, nothing written past it) and counts what the
 * whole body needs, so one pass measures and a second one writes into an exact allocation (the
 * body holds a token: no growth, no stray copies). */
struct body_wr {
    char *out;
    size_t cap, n;
    bool bad; /* text that is not strict UTF-8 */
};

static void bw_raw(struct body_wr *w, const char *s, size_t len)
{
    if (len && len <= w->cap && w->n <= w->cap - len)
        memcpy(w->out + w->n, s, len);
    w->n += len;
}

#define BW_LIT(w, lit) bw_raw((w), (lit), sizeof(lit) - 1)

static void bw_str(struct body_wr *w, const char *s)
{
    size_t room = w->n < w->cap ? w->cap - w->n : 0;
    size_t n = ferry_json_quote(room ? w->out + w->n : NULL, room, s, strlen(s), 0);

    if (n == SIZE_MAX)
        w->bad = true;
    else
        w->n += n;
}

static void bw_i64(struct body_wr *w, int64_t v)
{
    char t[24];
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t k = sizeof(t);

    do {
        t[--k] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        t[--k] = '-';
    bw_raw(w, t + k, sizeof(t) - k);
}

/* The members and their order are those of ferry_exchange_response_to_json. */
static void body_write(const ferry_exchange_response *resp, struct body_wr *w)
{
    if (resp->error == FERRY_EXCHANGE_OK) {
        BW_LIT(w, "{\"access_token\":");
        bw_str(w, resp->access_token);
        BW_LIT(w, ",\"issued_token_type\":");
        bw_str(w, resp->issued_token_type);
        BW_LIT(w, ",\"token_type\":\"Bearer\",\"expires_in\":");
        bw_i64(w, resp->expires_in);
        if (resp->scope) {
            BW_LIT(w, ",\"scope\":");
            bw_str(w, resp->scope);
        }
    } else {
        BW_LIT(w, "{\"error\":");
        bw_str(w, ferry_exchange_error_name(resp->error));
        if (resp->error_description[0]) {
            BW_LIT(w, ",\"error_description\":");
            bw_str(w, resp->error_description);
        }
    }
    BW_LIT(w, "}");
}

FERRY_EXPORT int ferry_exchange_response_write(const ferry_exchange_response *resp, char **ret_body,
                                               size_t *ret_len)
{
    struct body_wr w = {0};
    char *body;

    if (!resp || !ret_body || !ret_len)
        return -EINVAL;
    if (resp->error == FERRY_EXCHANGE_OK ? !resp->access_token || !resp->issued_token_type
                                         : !ferry_exchange_error_name(resp->error))
        return -EINVAL;
    if (memchr(resp->error_description, '\0', sizeof(resp->error_description)) == NULL)
        return -EINVAL; /* not a C string */
    body_write(resp, &w);
    if (w.bad)
        return -EINVAL;
    body = malloc(w.n + 1);
    if (!body)
        return -ENOMEM;
    w = (struct body_wr){.out = body, .cap = w.n};
    body_write(resp, &w);
    if (w.bad || w.n != w.cap) { /* cannot happen: the response did not change */
        ferry_wipe(body, w.cap);
        free(body);
        return -EIO;
    }
    body[w.n] = '\0';
    *ret_body = body;
    *ret_len = w.n;
    return 0;
}

FERRY_EXPORT int ferry_exchange_new(ferry_oidc *oidc, ferry_policy_store *policies,
                                    ferry_mint *mint, ferry_auditlog *log,
                                    const ferry_exchange_options *opts, ferry_exchange **ret,
                                    char *errbuf, size_t errlen)
{
    ferry_exchange_options o = opts ? *opts : (ferry_exchange_options){0};
    ferry_exchange *ex;

#define BAD(...)                                                                                   \
    do {                                                                                           \
        if (errbuf && errlen)                                                                      \
            snprintf(errbuf, errlen, __VA_ARGS__);                                                 \
        return -EINVAL;                                                                            \
    } while (0)

    if (!ret)
        BAD("no result pointer");
    if (!oidc || !policies || !mint || !log)
        BAD("the trust store, policy store, mint and audit log are all required");
    if (o.max_ttl == 0)
        o.max_ttl = FERRY_MINT_DEFAULT_TTL;
    if (o.max_ttl < 0 || o.max_ttl > FERRY_MINT_MAX_TTL_LIMIT)
        BAD("max_ttl must be 1..%d seconds", FERRY_MINT_MAX_TTL_LIMIT);
    if (o.default_ttl == 0)
        o.default_ttl =
            o.max_ttl < FERRY_EXCHANGE_DEFAULT_TTL ? o.max_ttl : FERRY_EXCHANGE_DEFAULT_TTL;
    if (o.default_ttl < 0 || o.default_ttl > o.max_ttl)
        BAD("default_ttl must be 1..max_ttl (%lld) seconds", (long long)o.max_ttl);
    if (o.subject_token_types & ~(unsigned)FERRY_EXCHANGE_TYPE_ALL ||
        o.actor_token_types & ~(unsigned)FERRY_EXCHANGE_TYPE_ALL)
        BAD("unknown token type bits");
    if (o.flags & ~(unsigned)(FERRY_EXCHANGE_ONE_TIME_SUBJECT | FERRY_EXCHANGE_ACTOR_UNCHECKED |
                              FERRY_EXCHANGE_AUDIT_BLOCKS))
        BAD("unknown flags");
    if (o.client_id && (o.client_id[0] == '\0' || strlen(o.client_id) > FERRY_MINT_CLIENT_ID_MAX ||
                        !ferry_text_ok((const unsigned char *)o.client_id, strlen(o.client_id))))
        BAD("client_id must be 1..%d bytes of printable text", FERRY_MINT_CLIENT_ID_MAX);
    if (o.totp_account_claim && o.totp_account_claim[0] == '\0')
        BAD("totp_account_claim is empty");
    if (o.totp_state_dir && o.totp_state_dir[0] == '\0')
        BAD("totp_state_dir is empty");
#undef BAD

    ex = calloc(1, sizeof(*ex));
    if (!ex)
        return -ENOMEM;
    ex->oidc = oidc;
    ex->policies = policies;
    ex->mint = mint;
    ex->log = log;
    ex->default_ttl = o.default_ttl;
    ex->max_ttl = o.max_ttl;
    ex->subject_types = o.subject_token_types ? o.subject_token_types : FERRY_EXCHANGE_TYPE_ALL;
    ex->actor_types = o.actor_token_types ? o.actor_token_types : FERRY_EXCHANGE_TYPE_ALL;
    ex->flags = o.flags;
    ex->clock = o.clock;
    ex->clock_data = o.clock_data;
    ex->identity_limit = o.identity_limit;
    ex->client_id = strdup(o.client_id ? o.client_id : "ferry");
    ex->totp_account_claim = strdup(o.totp_account_claim ? o.totp_account_claim : "sub");
    ex->totp_state_dir = o.totp_state_dir ? strdup(o.totp_state_dir) : NULL;
    if (!ex->client_id || !ex->totp_account_claim || (o.totp_state_dir && !ex->totp_state_dir)) {
        ferry_exchange_free(ex);
        return -ENOMEM;
    }
    *ret = ex;
    return 0;
}

FERRY_EXPORT void ferry_exchange_free(ferry_exchange *ex)
{
    if (!ex)
        return;
    free(ex->client_id);
    free(ex->totp_state_dir);
    free(ex->totp_account_claim);
    free(ex);
}
