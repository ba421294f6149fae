/* ferry/oidc.h - trusted issuers, their key sets, and token validation per profile.
 *
 * A ferry_oidc holds many trusted issuers at once. A token is accepted only when its "iss"
 * equals a configured issuer byte for byte, its "alg" is in that issuer's allow-list and fits
 * the key's type and curve, the key came from that issuer's own key set, and every claim rule
 * of the issuer's profile holds. Unknown issuers cause no network traffic.
 *
 * Key sets come from discovery (<issuer>/.well-known/openid-configuration -> jwks_uri), a static
 * jwks_uri, a file or inline JSON. Remote sets are cached (Cache-Control max-age clamped to
 * [min_ttl, max_ttl]); an unknown kid triggers at most one refresh per issuer per
 * refresh_cooldown; when refreshing fails the last good set serves until expiry +
 * stale_window, after which the issuer fails closed.
 *
 * Thread-safe: every call may be made from many threads on one ferry_oidc, except
 * ferry_oidc_free. The configured issuers form an immutable, reference-counted set: a
 * verification takes a reference to the current set without a lock and decides with it, and
 * add_issuer, load_config and reload_config build a new set and publish it in one atomic step
 * (docs/internals/oidc.md, "Reload").
 */
#ifndef FERRY_OIDC_H
#define FERRY_OIDC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "ferry/jose.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ferry_profile {
    FERRY_PROFILE_ID_TOKEN = 1,  /* OpenID Connect ID token */
    FERRY_PROFILE_ACCESS_TOKEN,  /* RFC 9068 JWT access token (typ at+jwt) */
    FERRY_PROFILE_KUBERNETES,    /* Kubernetes projected service-account token */
    FERRY_PROFILE_GITHUB,        /* GitHub Actions OIDC token */
    FERRY_PROFILE_FERRY,         /* a token minted by ferry itself */
} ferry_profile;

/* Config names: "id_token", "access_token", "kubernetes", "github_actions", "ferry". */
const char *ferry_profile_name(ferry_profile p);
/* Returns 0 for an unknown name. */
ferry_profile ferry_profile_from_name(const char *name);

/* Why a token was refused. Names (ferry_reason_name) are stable and appear in CLI output and
 * logs; they never contain secrets. */
typedef enum ferry_reason {
    FERRY_REASON_OK = 0,
    FERRY_REASON_TOO_LARGE,          /* token over FERRY_JWS_MAX_LEN */
    FERRY_REASON_MALFORMED,          /* not a strict compact JWS / claims not a JSON object */
    FERRY_REASON_BAD_HEADER,         /* forbidden or malformed header member */
    FERRY_REASON_ALG_NOT_ALLOWED,    /* alg unsupported or not in the issuer's allow-list */
    FERRY_REASON_UNKNOWN_ISSUER,     /* iss missing, not a string, or not configured */
    FERRY_REASON_ISSUER_UNAVAILABLE, /* no usable key set (fetch failed past the stale window) */
    FERRY_REASON_UNKNOWN_KID,        /* no key with that kid in the issuer's set */
    FERRY_REASON_KEY_MISMATCH,       /* key type/curve/alg does not fit the token's alg */
    FERRY_REASON_BAD_SIGNATURE,
    FERRY_REASON_BAD_TYP,            /* typ wrong for the issuer's profile */
    FERRY_REASON_MISSING_CLAIM,
    FERRY_REASON_BAD_CLAIM,          /* a claim has the wrong type or an invalid value */
    FERRY_REASON_EXPIRED,
    FERRY_REASON_NOT_YET_VALID,      /* nbf in the future beyond leeway */
    FERRY_REASON_ISSUED_IN_FUTURE,   /* iat in the future beyond leeway */
    FERRY_REASON_LIFETIME_TOO_LONG,  /* exp - iat over max_lifetime */
    FERRY_REASON_BAD_AUDIENCE,
    FERRY_REASON_BAD_SUBJECT,
    FERRY_REASON_CLAIM_MISMATCH,     /* a required claim has another value */
    FERRY_REASON_REPLAYED,           /* (iss, jti) already used */
    FERRY_REASON_REPLAY_CACHE_FULL,  /* replay cache full of unexpired entries: fail closed */
    FERRY_REASON_INTERNAL,           /* out of memory or crypto library failure */
    FERRY_REASON_MAX
} ferry_reason;

const char *ferry_reason_name(ferry_reason r);

#define FERRY_VERIFY_DETAIL_MAX 256

typedef struct ferry_verify_result {
    ferry_reason reason;
    char detail[FERRY_VERIFY_DETAIL_MAX]; /* one line for operators; never token material */
} ferry_verify_result;

/* A verified identity. All members owned by the struct; free with ferry_identity_free. */
typedef struct ferry_identity {
    char *issuer;
    char *subject;
    json_t *audience;     /* array of strings */
    ferry_profile profile;
    ferry_alg alg;
    char *kid;            /* NULL when the token had none */
    char *jti;            /* NULL when the token had none */
    int64_t exp, iat, nbf; /* 0 when absent (iat/nbf) */
    json_t *claims;       /* the whole verified claims object */
} ferry_identity;

void ferry_identity_free(ferry_identity *id); /* accepts NULL */
/* {"verified":true,"issuer","subject","audience","profile","alg","kid","jti","exp","iat",
 *  "nbf","claims"} as a new object. */
int ferry_identity_to_json(const ferry_identity *id, json_t **ret_json);

typedef int64_t (*ferry_clock_fn)(void *userdata); /* seconds since the epoch */

typedef struct ferry_oidc_options {
    size_t replay_cache_max;  /* 0 = default 100000 entries */
    ferry_clock_fn clock;     /* NULL = time(NULL) */
    void *clock_data;
} ferry_oidc_options;

typedef struct ferry_oidc ferry_oidc;

/* New empty trust store. opts may be NULL. */
int ferry_oidc_new(const ferry_oidc_options *opts, ferry_oidc **ret_oidc);
void ferry_oidc_free(ferry_oidc *oidc); /* accepts NULL */

/* Add one trusted issuer from its JSON configuration (borrowed; see docs/configuration.md):
 *   issuer (string, required, exact), audiences (non-empty array, required),
 *   one key source of: discovery (bool), jwks_uri, jwks_file, jwks (inline object)
 *   [default: discovery], algorithms (default ["RS256"]), profile (default "id_token"),
 *   leeway (s, default 60), max_lifetime (s, default 86400), required_claims (object: value
 *   must equal; null = must be present), require_azp (bool), allow_http_loopback (bool),
 *   ca_file, proxy, jwks_cache {min_ttl, max_ttl, default_ttl, refresh_cooldown,
 *   stale_window}, fetch {connect_timeout_ms, timeout_ms, max_bytes}.
 * Unknown members are an error. On failure a one-line reason is written to errbuf.
 * Returns 0, -FERRY_ECONFIG, -FERRY_EDUPLICATE (issuer already configured), -ENOMEM or
 * -FERRY_ECRYPTO (OpenSSL failed while importing a key: not the configuration's fault). */
int ferry_oidc_add_issuer(ferry_oidc *oidc, const json_t *conf, char *errbuf, size_t errlen);

/* Load {"issuers":[...], "replay_cache_size": N} (other top-level members are ignored so the
 * same file can hold ferryd's configuration), adding to the issuers already configured. All
 * or nothing: on failure nothing was added and errbuf names the failing entry. */
int ferry_oidc_load_config(ferry_oidc *oidc, const json_t *conf, char *errbuf, size_t errlen);

/* Replace the whole configuration with conf (borrowed; same format as load_config) while
 * verifications run. The new configuration is built and checked completely first; on any
 * error nothing changes and errbuf names the problem ("issuers[2] (https://x): ..."). On
 * success the issuer set is replaced in one step:
 * - an issuer whose configuration is unchanged (same members and values, member order and
 *   layout aside; for jwks_file, also the same file bytes) is kept as it is: its cached key
 *   set, discovery result, fetch bookkeeping and counters carry over;
 * - a removed issuer is refused (unknown_issuer) by every verification that starts after the
 *   call; a verification already in progress finishes with the set it started with;
 * - an added or changed issuer starts empty (remote sets are fetched on demand or by
 *   ferry_oidc_prefetch; jwks_file is read anew);
 * - the replay cache is kept: an (iss, jti) consumed before the reload is refused after it.
 *   Its capacity becomes replay_cache_size, or without it the store's initial capacity
 *   (ferry_oidc_options.replay_cache_max or the default); a capacity below the entries held
 *   refuses one-time tokens (replay_cache_full) until enough entries expire.
 * Reloads are serialised with each other and with add_issuer/load_config; verification never
 * waits for them. Returns 0, -FERRY_ECONFIG, -FERRY_EDUPLICATE (an issuer listed twice),
 * -ENOMEM, -FERRY_ECRYPTO (as add_issuer) or -EINVAL (NULL argument). Successes and failures are counted in ferry_oidc_stats. */
int ferry_oidc_reload_config(ferry_oidc *oidc, const json_t *conf, char *errbuf,
                             size_t errlen);

size_t ferry_oidc_issuer_count(const ferry_oidc *oidc);

/* Load every issuer's key set now (discovery and fetch as needed). Returns 0 when all are
 * usable, otherwise the first error with the issuer named in errbuf. */
int ferry_oidc_prefetch(ferry_oidc *oidc, char *errbuf, size_t errlen);

/* Drop the cached key set of one issuer (or all when issuer is NULL); the next token fetches
 * anew. Inline/file key sets are kept. */
void ferry_oidc_flush(ferry_oidc *oidc, const char *issuer);

typedef struct ferry_verify_options {
    int64_t now;          /* fixed clock for this decision; 0 = the store's clock */
    bool consume_jti;     /* one-time use: require jti, record (iss, jti) until exp, refuse
                             a second use; refused as EXPIRED past exp + the smallest leeway
                             any issuer of the store has had */
    const char *audience; /* when non-NULL, the token must contain exactly this audience
                             (which must also be one of the issuer's) */
    bool no_wait;         /* never wait (for an event thread serving many connections): where
                             the decision needs a key-set or discovery fetch this call would
                             run (set missing or due, or a refresh for an unknown kid), or one
                             in flight on another thread it would wait for, return
                             -FERRY_EWOULDBLOCK at once, with ret_result INTERNAL ("would wait
                             for a key-set fetch"). Nothing has happened then: no counter moved,
                             no jti consumed, no fetch attempt recorded (its cooldown has not
                             started). Verify again without no_wait on a thread that may
                             block. A usable set with no fetch due, static key sets, and a
                             refresh held back by the cooldown decide as without it. */
} ferry_verify_options;

/* Consume the (iss, jti) of an identity that ferry_oidc_verify accepted without consume_jti,
 * with the same effect as consume_jti would have had: the pair is recorded until exp + the
 * issuer's leeway, and a second consumption is refused. For a caller that must look at the
 * verified identity before deciding to spend the token (ferryd's per-identity rate limit).
 * now = 0: the store's clock. Returns 0; -FERRY_EREFUSED with ret_result filled
 * (MISSING_CLAIM: no jti; UNKNOWN_ISSUER: the issuer was removed by a reload since;
 * EXPIRED: past exp + the smallest leeway any issuer of the store has had; REPLAYED;
 * REPLAY_CACHE_FULL); -ENOMEM or -FERRY_ECRYPTO (nothing recorded); -EINVAL. */
int ferry_oidc_consume(ferry_oidc *oidc, const ferry_identity *id, int64_t now,
                       ferry_verify_result *ret_result);

/* ---- statistics (for /metrics) ----------------------------------------------------------
 *
 * Counters only grow (they are never reset, also not by a reload) and are read with relaxed
 * atomic loads: each value is exact, but a snapshot taken while verifications run is not one
 * instant across fields. Both calls are thread-safe, also concurrently with
 * ferry_oidc_verify and ferry_oidc_reload_config, and never block verification. */

typedef struct ferry_oidc_counters {
    uint64_t accepted;           /* ferry_oidc_verify returned 0 */
    uint64_t refused;            /* it returned anything else (refusals and internal errors) */
    uint64_t discovery_fetches;  /* discovery documents requested (every attempt) */
    uint64_t discovery_failures; /* ... of which failed (network, status, document refused) */
    uint64_t jwks_fetches;       /* key-set requests (every attempt: the refreshes) */
    uint64_t jwks_failures;      /* ... of which failed (network, status, set refused) */
    uint64_t refresh_suppressed; /* a fetch was wanted (set missing or past its lifetime, or
                                    unknown kid) but refresh_cooldown held it back */
    uint64_t stale_serves;       /* verifications served by a set past its lifetime (inside
                                    the stale window) */
} ferry_oidc_counters;

typedef struct ferry_oidc_stats {
    size_t issuers;         /* configured now */
    size_t cached_keys;     /* keys in the usable sets of the configured issuers */
    size_t replay_entries;  /* (iss, jti) entries held (expired ones until evicted) */
    size_t replay_capacity; /* the cache's maximum */
    uint64_t config_reloads;         /* ferry_oidc_reload_config calls that succeeded */
    uint64_t config_reload_failures; /* ... that changed nothing because they failed */
    /* Every issuer ever configured (removed ones included, so totals never go down), plus, in
     * accepted and refused, tokens whose issuer was never found (malformed, unknown_issuer). */
    ferry_oidc_counters totals;
    uint64_t refused_by_reason[FERRY_REASON_MAX]; /* index: ferry_reason; [0] stays 0 */
} ferry_oidc_stats;

/* Fill *ret_stats. Returns 0 or -EINVAL (NULL argument). */
int ferry_oidc_get_stats(ferry_oidc *oidc, ferry_oidc_stats *ret_stats);

/* The state of an issuer's key set. */
typedef enum ferry_keyset_state {
    FERRY_KEYSET_STATIC = 1, /* jwks_file or inline jwks: read with the configuration */
    FERRY_KEYSET_UNLOADED,   /* remote, no usable set and no failed attempt: the next token
                                fetches it (after start, a reload adding it, a flush, or an
                                idle spell past the stale window) */
    FERRY_KEYSET_FRESH,      /* remote, within its lifetime */
    FERRY_KEYSET_STALE,      /* remote, past its lifetime, served inside the stale window */
    FERRY_KEYSET_FAILED,     /* remote, no usable set and the last fetch failed: the issuer
                                fails closed (issuer_unavailable) */
} ferry_keyset_state;

/* "static", "unloaded", "fresh", "stale", "failed"; "unknown" for other values. */
const char *ferry_keyset_state_name(ferry_keyset_state s);

/* One configured issuer, as handed to a ferry_oidc_foreach_issuer callback. The strings are
 * borrowed and valid only during the callback. */
typedef struct ferry_oidc_issuer_info {
    const char *issuer;     /* exact issuer string */
    ferry_profile profile;
    const char *source;     /* "discovery", "jwks_uri", "jwks_file" or "jwks" */
    ferry_keyset_state state;
    size_t keys;            /* keys in the usable set (0: none, or past the window) */
    int64_t expires_in;     /* FRESH, STALE: seconds until the set's lifetime ends (negative
                               when past it); otherwise 0 */
    int64_t usable_for;     /* FRESH, STALE: seconds until expiry + stale_window, when the
                               issuer fails closed unless a refresh succeeds; otherwise 0 */
    const char *last_error; /* why the last fetch failed; "" when it succeeded or none ran */
    ferry_oidc_counters counters; /* this issuer's (accepted, refused: tokens naming it) */
} ferry_oidc_issuer_info;

/* Return non-zero to stop the iteration; that value is then returned by foreach. */
typedef int (*ferry_oidc_issuer_fn)(const ferry_oidc_issuer_info *info, void *userdata);

/* Call fn for every configured issuer, in configuration order, with the store clock's now.
 * Iterates one snapshot of the issuer set: a reload meanwhile (also one made by fn) does not
 * affect it. No lock is held while fn runs. Returns 0, fn's non-zero value, or -EINVAL. */
int ferry_oidc_foreach_issuer(ferry_oidc *oidc, ferry_oidc_issuer_fn fn, void *userdata);

/* Verify a compact JWS token (len bytes; not necessarily NUL-terminated). opts may be NULL.
 * Returns 0 and a new identity in *ret_identity when accepted; -FERRY_EREFUSED with
 * *ret_result filled when refused; -FERRY_EWOULDBLOCK only with opts->no_wait (see there:
 * nothing happened, try again without it); another negative error (with reason INTERNAL) on
 * internal failure. ret_result is always filled when non-NULL. */
int ferry_oidc_verify(ferry_oidc *oidc, const char *token, size_t len,
                      const ferry_verify_options *opts, ferry_identity **ret_identity,
                      ferry_verify_result *ret_result);

#ifdef __cplusplus
}
#endif
#endif
