/* ferry/exchange.h - RFC 8693 token exchange: verify -> policy -> mint, one audit record.
 *
 * A ferry_exchange ties the trust store (ferry_oidc), the policy store, the mint and the audit
 * log together. ferryd's token route form-decodes the request body into a list of
 * (name, value) pairs and hands it to ferry_exchange_token, which returns either a token
 * response (RFC 8693 §2.2.1) or an error (RFC 6749 §5.2, RFC 8693 §2.2.2) together with the
 * HTTP status to send, so the HTTP layer stays thin.
 *
 * Every decision - allowed, refused or failed - writes exactly one "token.exchange" record to
 * the audit log. A token is released only after its record was written; when the record
 * cannot be written the decision fails closed (server_error, nothing returned).
 *
 * Design note, error mapping and limits: docs/internals/exchange.md.
 *
 * Thread safety: ferry_exchange_token may be called from many threads on one ferry_exchange
 * (it only calls thread-safe functions of the modules it holds).
 */
#ifndef FERRY_EXCHANGE_H
#define FERRY_EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "ferry/auditlog.h"
#include "ferry/mint.h"
#include "ferry/oidc.h"
#include "ferry/policy.h"
#include "ferry/ratelimit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits on the request (every one refused with invalid_request unless noted) ---------- */
#define FERRY_EXCHANGE_MAX_PARAMS 64         /* form parameters, unknown ones included */
#define FERRY_EXCHANGE_MAX_BYTES (64 * 1024) /* names + values of all parameters */
#define FERRY_EXCHANGE_NAME_MAX 64           /* bytes of a parameter name */
#define FERRY_EXCHANGE_URI_MAX 128           /* grant_type and the *_token_type values */
#define FERRY_EXCHANGE_TARGET_MAX 1024       /* bytes of one audience or resource value */
#define FERRY_EXCHANGE_MAX_TARGETS 8         /* audience + resource values together */
#define FERRY_EXCHANGE_SCOPE_MAX 1024        /* bytes of scope (invalid_scope past it) */
#define FERRY_EXCHANGE_MAX_SCOPES 32         /* scope tokens (invalid_scope past it) */
#define FERRY_EXCHANGE_CLIENT_ID_MAX 256     /* bytes of client_id */
#define FERRY_EXCHANGE_TOTP_CODE_MAX 16      /* bytes of totp_code */
#define FERRY_EXCHANGE_SUBJECT_MAX 512       /* bytes of a verified sub (the audit log's) */
#define FERRY_EXCHANGE_DESCRIPTION_MAX 160   /* error_description, NUL included */
#define FERRY_EXCHANGE_REASON_MAX 320        /* internal reason, NUL included */
#define FERRY_EXCHANGE_DEFAULT_TTL 900       /* default token lifetime (s) */

/* ---- URIs ---------------------------------------------------------------------------------- */
#define FERRY_GRANT_TYPE_TOKEN_EXCHANGE "urn:ietf:params:oauth:grant-type:token-exchange"
#define FERRY_TOKEN_TYPE_JWT "urn:ietf:params:oauth:token-type:jwt"
#define FERRY_TOKEN_TYPE_ID_TOKEN "urn:ietf:params:oauth:token-type:id_token"
#define FERRY_TOKEN_TYPE_ACCESS_TOKEN "urn:ietf:params:oauth:token-type:access_token"

/* Token types accepted for subject_token / actor_token (bit set in the options).
 *   JWT: any verified profile. ID_TOKEN: issuers with profile id_token, kubernetes or
 *   github_actions. ACCESS_TOKEN: issuers with profile access_token or ferry. */
enum {
    FERRY_EXCHANGE_TYPE_JWT = 1 << 0,
    FERRY_EXCHANGE_TYPE_ID_TOKEN = 1 << 1,
    FERRY_EXCHANGE_TYPE_ACCESS_TOKEN = 1 << 2,
    FERRY_EXCHANGE_TYPE_ALL = (1 << 3) - 1,
};

/* Flags of ferry_exchange_options. */
enum {
    /* The subject token is one-time: its (iss, jti) is recorded by the trust store's replay
     * cache and a second exchange with it is refused (SECURITY-TESTS C7). A token without jti
     * is then refused. */
    FERRY_EXCHANGE_ONE_TIME_SUBJECT = 1 << 0,
    /* Delegation: do not require the actor to be granted the request by policy too; the actor
     * token must still verify. Default (flag unset): the actor's own policies must grant the
     * audiences and scopes the subject was granted. */
    FERRY_EXCHANGE_ACTOR_UNCHECKED = 1 << 1,
    /* Appending to the audit log may block for a disk sync (the log syncs every record,
     * FERRY_AUDITLOG_SYNC_ALWAYS): every decision writes a record, so a request with no_wait
     * gives up at once (-FERRY_EWOULDBLOCK, nothing done). Set it when the log is opened in
     * that mode; ferryd does. */
    FERRY_EXCHANGE_AUDIT_BLOCKS = 1 << 2,
};

typedef struct ferry_exchange_options {
    int64_t default_ttl;            /* lifetime when the request names none; 0 = min(
                                       FERRY_EXCHANGE_DEFAULT_TTL, max_ttl) */
    int64_t max_ttl;                /* longest lifetime; 0 = FERRY_MINT_DEFAULT_TTL; at most
                                       FERRY_MINT_MAX_TTL_LIMIT */
    unsigned subject_token_types;   /* FERRY_EXCHANGE_TYPE_* bits; 0 = all */
    unsigned actor_token_types;     /* FERRY_EXCHANGE_TYPE_* bits; 0 = all */
    unsigned flags;                 /* FERRY_EXCHANGE_* flags */
    const char *client_id;          /* client_id claim when the HTTP layer authenticated no
                                       client; NULL = "ferry" (copied) */
    const char *totp_state_dir;     /* ferry_totp state directory; NULL = no step-up possible
                                       (copied) */
    const char *totp_account_claim; /* claim of the subject token naming its TOTP account;
                                       NULL = "sub" (copied) */
    ferry_clock_fn clock;           /* NULL = time(NULL); used for verification and TOTP */
    void *clock_data;
    /* Per-identity rate limit (borrowed; must outlive the exchange; NULL = none): one token
     * per exchange whose subject token verified, keyed by the verified (issuer, subject).
     * Refused: slow_down (429) with retry_after, one audit record, nothing minted, and a
     * one-time subject token is not spent (docs/internals/exchange.md). */
    ferry_ratelimit *identity_limit;
} ferry_exchange_options;

typedef struct ferry_exchange ferry_exchange;

/* New exchange over oidc, policies, mint and log (all borrowed: they must outlive the
 * exchange; none may be NULL - a decision that cannot be logged is never made). opts may be
 * NULL. Returns 0 and a new object in *ret (ferry_exchange_free), -EINVAL with a one-line
 * reason in errbuf (bad options), -ENOMEM. */
int ferry_exchange_new(ferry_oidc *oidc, ferry_policy_store *policies, ferry_mint *mint,
                       ferry_auditlog *log, const ferry_exchange_options *opts,
                       ferry_exchange **ret, char *errbuf, size_t errlen);
void ferry_exchange_free(ferry_exchange *ex); /* accepts NULL */

/* ---- errors -------------------------------------------------------------------------------- */

typedef enum ferry_exchange_error {
    FERRY_EXCHANGE_OK = 0,
    FERRY_EXCHANGE_INVALID_REQUEST,         /* 400 */
    FERRY_EXCHANGE_INVALID_CLIENT,          /* 401: client authentication (the HTTP layer's) */
    FERRY_EXCHANGE_INVALID_GRANT,           /* 400: a step-up code was refused */
    FERRY_EXCHANGE_UNSUPPORTED_GRANT_TYPE,  /* 400 */
    FERRY_EXCHANGE_INVALID_SCOPE,           /* 400 */
    FERRY_EXCHANGE_INVALID_TARGET,          /* 400 */
    FERRY_EXCHANGE_SERVER_ERROR,            /* 500 */
    FERRY_EXCHANGE_TEMPORARILY_UNAVAILABLE, /* 503 */
    FERRY_EXCHANGE_SLOW_DOWN,               /* 429: the identity's rate limit (RFC 8628 §3.5
                                               code), with retry_after */
    FERRY_EXCHANGE_ERROR_MAX
} ferry_exchange_error;

/* The RFC error code ("invalid_request", ...; "ok" for FERRY_EXCHANGE_OK), NULL out of range.
 * Static. */
const char *ferry_exchange_error_name(ferry_exchange_error e);
/* The HTTP status to answer with: 200, 400, 401, 429, 500 or 503 (500 out of range). */
int ferry_exchange_error_status(ferry_exchange_error e);

/* ---- one exchange -------------------------------------------------------------------------- */

/* One form-decoded parameter (borrowed). Names and values are byte strings of the given
 * length (they may hold NUL bytes, which are refused). A value of length 0 counts as omitted
 * (RFC 6749 §3.1); unknown names are ignored but count against the limits; a single-valued
 * parameter given twice is refused. Multi-valued: audience, resource. Known names:
 * grant_type, subject_token, subject_token_type, actor_token, actor_token_type, audience,
 * resource, scope, requested_token_type, client_id, and ferry's step-up extension totp_code
 * (6 digits) and totp_account (optional; must be the subject's own account). */
typedef struct ferry_exchange_param {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} ferry_exchange_param;

typedef struct ferry_exchange_request {
    const ferry_exchange_param *params; /* borrowed */
    size_t n_params;
    /* The client the HTTP layer authenticated (borrowed), or NULL. It becomes the minted
     * token's client_id; a client_id form parameter must then equal it. Without it the
     * minted client_id is the options' client_id and a client_id parameter is only logged. */
    const char *client_id;
    /* Lifetime asked for by a trusted caller (s), 0 = the options' default_ttl. Capped by
     * max_ttl and the policy's TTL. */
    int64_t requested_ttl;
    /* Never wait (ferryd's event threads serve many connections and must not block on I/O).
     * When the decision would have to wait - the exchange has FERRY_EXCHANGE_AUDIT_BLOCKS,
     * the request carries a totp_code (the step-up reads and syncs its state file), or a
     * token's verification would fetch a key set or wait for a fetch in flight
     * (ferry_verify_options.no_wait) - ferry_exchange_token returns -FERRY_EWOULDBLOCK and
     * nothing has happened: no audit record (audit_seq 0), no token spent, no rate-limit
     * token taken, nothing minted. resp is then a placeholder (server_error, 500, reason
     * "would block: " and why) not meant to be sent: run the same request again without
     * no_wait on a thread that may block. Otherwise the decision is exactly the one made
     * without no_wait. */
    bool no_wait;
} ferry_exchange_request;

typedef struct ferry_exchange_response {
    ferry_exchange_error error; /* FERRY_EXCHANGE_OK when a token was issued */
    int http_status;            /* ferry_exchange_error_status(error) */
    /* On success: */
    char *access_token;            /* new; wiped and freed by ferry_exchange_response_release */
    const char *issued_token_type; /* static: FERRY_TOKEN_TYPE_ACCESS_TOKEN or _JWT */
    const char *token_type;        /* static: "Bearer" */
    int64_t expires_in;            /* seconds */
    char *scope;                   /* new: granted scopes, space-separated; NULL when none */
    char jti[FERRY_MINT_JTI_LEN + 1];
    /* On failure: */
    char error_description[FERRY_EXCHANGE_DESCRIPTION_MAX]; /* safe to send: names the
                                                               parameter at fault, never
                                                               token material or policy ids */
    bool step_up_required; /* the policy needs a TOTP step-up: resend with totp_code */
    int64_t retry_after;   /* seconds (TOTP lock-out, slow_down), 0 when none: Retry-After */
    /* Always: */
    char reason[FERRY_EXCHANGE_REASON_MAX]; /* one line for the server's own log (e.g.
                                               "subject_token: expired"); never sent to the
                                               client, never token material */
    uint64_t audit_seq;                     /* seq of the audit record, 0 when none was written */
} ferry_exchange_response;

/* Decide one RFC 8693 exchange. Order: parameters (limits, duplicates, text, grant_type, token
 * types, scope and resource syntax), actor token verification, subject token verification
 * (consuming its jti when one-time), the per-identity rate limit (when one is set and on, the
 * subject token is verified first without consuming and its jti consumed only once the limit
 * allowed; with no_wait too, so that a give-up never leaves a spent token), may_act,
 * delegation chain, policy on the subject (TOTP
 * step-up when a policy requires it and a code was sent), policy on the actor, mint, audit
 * record, release. resp is always filled (release it with ferry_exchange_response_release).
 * Returns 0 when a token was issued, -FERRY_EREFUSED when the client's request was refused
 * (4xx), another negative error for an internal failure (5xx: -EIO and friends when the audit
 * record could not be written, -ENOMEM, -FERRY_ENOKEY, ...), -EINVAL for NULL arguments,
 * -FERRY_EWOULDBLOCK only with req->no_wait (nothing done; see there). Thread-safe. */
int ferry_exchange_token(ferry_exchange *ex, const ferry_exchange_request *req,
                         ferry_exchange_response *resp);

/* Wipe and free what the response holds and zero it. Accepts NULL. */
void ferry_exchange_response_release(ferry_exchange_response *resp);

/* The response body as a new JSON object: on success {"access_token", "issued_token_type",
 * "token_type", "expires_in", "scope" (when any)}; otherwise {"error", "error_description"}.
 * The caller sends it with http_status, Cache-Control: no-store (RFC 6749 §5.1), and for a
 * success wipes the serialised body after sending. Returns 0, -EINVAL, -ENOMEM. */
int ferry_exchange_response_to_json(const ferry_exchange_response *resp, json_t **ret_json);

/* The same body, written straight out: byte for byte what json_dumps(JSON_COMPACT |
 * JSON_PRESERVE_ORDER) makes of ferry_exchange_response_to_json's object, in one exact
 * allocation (NUL-terminated; *ret_len excludes the NUL) with no copy left behind. The caller
 * wipes it after sending (it holds the token). Returns 0, -EINVAL (NULL argument, missing
 * member, unknown error, text that is not strict UTF-8), -ENOMEM. */
int ferry_exchange_response_write(const ferry_exchange_response *resp, char **ret_body,
                                  size_t *ret_len);

#ifdef __cplusplus
}
#endif
#endif
