/* ferry/mint.h - ferry's signing keys, RFC 9068 access tokens, discovery document and JWKS.
 *
 * A ferry_mint owns the signing keys kept in a state directory (see docs/internals/mint.md):
 *
 *   <state_dir>/keys/            0700, owned by the process's user
 *   <state_dir>/keys/keys.json   metadata and the public JWK of every key ever used (0600)
 *   <state_dir>/keys/<kid>.pem   PKCS#8 private key of the active and retired keys (0600)
 *   <state_dir>/keys/.lock       flock(2) serialising writers (ferryd and `ferry keys`)
 *
 * Keys are generated on first use (ES256 by default; EdDSA and RS256 selectable) or imported
 * from an operator's PEM. kid = RFC 7638 thumbprint. Keys are parsed once and cached; minting
 * never parses a PEM or JWK.
 *
 * Rotation makes a new active key and retires the old one. A retired key stays in the
 * published JWKS until the last token it can have signed has expired (retired_at + max_ttl);
 * then it leaves the published set and its private key file is wiped and removed. Its public
 * key stays in keys.json for good (the "all keys ever" set that verifies old audit-log
 * checkpoints).
 *
 * Thread safety: ferry_mint_token, ferry_mint_jwks, ferry_mint_discovery,
 * ferry_mint_signing_key and ferry_mint_public_key may be called from many threads at once,
 * also concurrently with ferry_mint_rotate, ferry_mint_import_pem, ferry_mint_prune and
 * ferry_mint_reload: a mint in flight keeps the key it started with alive (reference counted).
 * ferry_mint_free must not race with anything.
 */
#ifndef FERRY_MINT_H
#define FERRY_MINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "ferry/jose.h"
#include "ferry/oidc.h" /* ferry_clock_fn */

#ifdef __cplusplus
extern "C" {
#endif

/* Limits. */
#define FERRY_MINT_DEFAULT_TTL     3600          /* default max_ttl (s) */
#define FERRY_MINT_MAX_TTL_LIMIT   86400         /* largest max_ttl accepted (s) */
#define FERRY_MINT_JTI_LEN         22            /* base64url of 16 random bytes */
#define FERRY_MINT_MAX_KEYS        1000          /* keys remembered in keys.json */
#define FERRY_MINT_META_MAX        (2 * 1024 * 1024) /* bytes of keys.json */
#define FERRY_MINT_ISSUER_MAX      512
#define FERRY_MINT_SUBJECT_MAX     1024          /* sub, src_sub, src_iss, each aud, act.sub */
#define FERRY_MINT_CLIENT_ID_MAX   256
#define FERRY_MINT_SCOPE_MAX       2048
#define FERRY_MINT_MAX_AUDIENCES   16
#define FERRY_MINT_ACT_MAX_DEPTH   4             /* nested "act" objects */

/* Flags of ferry_mint_options. */
enum {
    /* Do not generate a key when the state directory holds none: the mint opens empty and
     * ferry_mint_token fails with -FERRY_ENOKEY until ferry_mint_import_pem or
     * ferry_mint_rotate adds one (`ferry keys init --import`). */
    FERRY_MINT_NO_GENERATE = 1 << 0,
    /* Open the store for reading only (`ferry keys jwks | list | discovery`): nothing is
     * created or changed - no directory, lock file or key, no pruning (expired keys are left
     * out of the published set but their files stay for a writer to wipe). A missing state
     * directory or keys/ is -ENOENT. The private keys are checked (owner, mode) but not
     * loaded: ferry_mint_token fails with -FERRY_ENOKEY and ferry_mint_signing_key returns
     * NULL; ferry_mint_rotate and ferry_mint_import_pem fail with -EROFS. Implies
     * FERRY_MINT_NO_GENERATE. */
    FERRY_MINT_READ_ONLY = 1 << 1,
    /* `ferry keys init`: ferry_mint_rotate and ferry_mint_import_pem add the first key only;
     * when the store already holds a key - checked under the store's lock, so a concurrent
     * init or a ferryd generating its first key is seen - they fail with -EEXIST. */
    FERRY_MINT_INIT_ONLY = 1 << 2,
};

typedef struct ferry_mint_options {
    const char *issuer;    /* "iss" of minted tokens: https://host[:port][/path], no query,
                              fragment or trailing '/'; http:// only for 127.0.0.1, [::1] and
                              localhost. NULL is allowed when the mint only manages keys
                              (then ferry_mint_token and ferry_mint_discovery fail -EINVAL). */
    const char *state_dir; /* required; created 0700 when missing (unless READ_ONLY) */
    ferry_alg alg;         /* alg of a generated key: FERRY_ALG_ES256 (also for UNKNOWN),
                              FERRY_ALG_EDDSA or FERRY_ALG_RS256 */
    unsigned rsa_bits;     /* RSA size of a generated RS256 key; 0 = 3072; 2048..8192 */
    int64_t max_ttl;       /* longest token lifetime in seconds; 0 = FERRY_MINT_DEFAULT_TTL;
                              at most FERRY_MINT_MAX_TTL_LIMIT */
    ferry_clock_fn clock;  /* NULL = time(NULL) */
    void *clock_data;
    unsigned flags;        /* FERRY_MINT_* */
} ferry_mint_options;

typedef struct ferry_mint ferry_mint;

/* Open the key store in opts->state_dir: validate the directory (owner, modes, no symlinks
 * inside), load keys.json and the active private key, remove private keys whose overlap has
 * passed (ferry_mint_prune), and generate a first key when there is none (unless
 * FERRY_MINT_NO_GENERATE). The state directory is hostile input: a group/world-writable
 * directory, a private key readable by group/others or not owned by this user, a symlink,
 * malformed or oversized keys.json, unknown members, a kid that is not the key's thumbprint
 * are all refused with a one-line reason in errbuf.
 * Returns 0 and a new mint in *ret (ferry_mint_free), -EINVAL (options), -FERRY_ECONFIG
 * (state directory refused), -FERRY_EMALFORMED / -FERRY_ETOOBIG (keys.json), -errno, -ENOMEM
 * or -FERRY_ECRYPTO. */
int ferry_mint_open(const ferry_mint_options *opts, ferry_mint **ret, char *errbuf,
                    size_t errlen);
void ferry_mint_free(ferry_mint *m); /* accepts NULL */

/* Make a new key the active one and retire the current one (if any). rotate generates it
 * (alg: FERRY_ALG_UNKNOWN = the mint's alg); import_pem takes the operator's PEM private key
 * (pem: borrowed, len bytes; P-256 -> ES256, Ed25519 -> EdDSA, RSA >= 2048 -> RS256; alg
 * UNKNOWN infers it, another value must fit the key). Importing a key that was ever used
 * before is refused (-FERRY_EDUPLICATE). Both re-read the state from disk under the lock
 * first, so rotations by another process are kept. Refused with -FERRY_EFULL when the
 * published set would exceed FERRY_JWKS_MAX_KEYS keys or keys.json FERRY_MINT_MAX_KEYS. */
int ferry_mint_rotate(ferry_mint *m, ferry_alg alg, char *errbuf, size_t errlen);
int ferry_mint_import_pem(ferry_mint *m, const void *pem, size_t len, ferry_alg alg,
                          char *errbuf, size_t errlen);

/* Retired keys whose overlap (retired_at + max_ttl, at least the value recorded at retirement)
 * has passed: state "expired", private key file overwritten and removed. Also done by open,
 * rotate and reload. */
int ferry_mint_prune(ferry_mint *m, char *errbuf, size_t errlen);

/* Re-read the state directory (another process may have rotated) and prune. ferryd calls this
 * on SIGHUP and periodically; until then it signs with the key it loaded. */
int ferry_mint_reload(ferry_mint *m, char *errbuf, size_t errlen);

typedef struct ferry_mint_request {
    const char *subject;             /* sub, required */
    const char *const *audience;     /* aud: n_audience (1..FERRY_MINT_MAX_AUDIENCES) strings;
                                        one is written as a string, more as an array */
    size_t n_audience;
    const char *scope;               /* space-separated RFC 6749 scope tokens, or NULL */
    const char *client_id;           /* required (RFC 9068) */
    int64_t ttl;                     /* requested lifetime (s) > 0; capped at max_ttl */
    const char *src_iss, *src_sub;   /* the verified source identity, both required */
    const json_t *act;               /* RFC 8693 actor, or NULL: an object with "sub"
                                        (required), optional "iss", "client_id" strings and an
                                        optional nested "act" (same rules, at most
                                        FERRY_MINT_ACT_MAX_DEPTH levels); nothing else */
} ferry_mint_request;

/* Mint an RFC 9068 access token signed with the active key. Header exactly
 * {"alg","kid","typ":"at+jwt"}; claims iss, sub, aud, exp, iat, nbf, jti, client_id, scope
 * (when given), src_iss, src_sub, act (when given). iat = nbf = the mint's clock; exp = iat +
 * min(ttl, max_ttl). jti: 128 bits from RAND_bytes (drawn 512 bytes at a time into a per-thread
 * pool that is wiped as it is used, refilled after fork() and freed at thread exit), base64url.
 * Every string must be non-empty valid UTF-8 without control characters and within its limit;
 * otherwise nothing is signed and -EINVAL is returned (-FERRY_ETOOBIG for the limits,
 * -FERRY_ENOKEY without an active key).
 * On success: *ret_token a new string (free()), ret_jti (FERRY_MINT_JTI_LEN + 1 bytes) and
 * *ret_exp when non-NULL. Thread-safe. */
int ferry_mint_token(ferry_mint *m, const ferry_mint_request *req, char **ret_token,
                     char ret_jti[FERRY_MINT_JTI_LEN + 1], int64_t *ret_exp);

/* The JWK Set as a new object {"keys":[...]}, public members only (kty, crv/x/y or n/e, kid,
 * alg, use). all = false: what is published (the active key and retired keys still in their
 * overlap, at the mint's clock); all = true: every key ever used, for verifying old audit-log
 * checkpoints (may exceed FERRY_JWKS_MAX_KEYS). */
int ferry_mint_jwks(ferry_mint *m, bool all, json_t **ret);

/* OpenID Connect discovery document for the issuer as a new object: issuer, jwks_uri
 * (<issuer>/.well-known/jwks.json), token_endpoint (<issuer>/v1/token),
 * grant_types_supported (token exchange), response_types_supported, subject_types_supported,
 * id_token_signing_alg_values_supported (algs of the published keys), claims_supported. */
int ferry_mint_discovery(ferry_mint *m, json_t **ret);

/* The active private key (new reference, ferry_jwk_unref) and its alg in *ret_alg (optional),
 * for signing other things with ferry_jose_sign (the audit log's checkpoints). NULL when the
 * mint has no active key. Thread-safe. */
ferry_jwk *ferry_mint_signing_key(ferry_mint *m, ferry_alg *ret_alg);

/* Public key of any key ever used, by kid (archive included). New reference in *ret_key,
 * its alg in *ret_alg (optional). -FERRY_ENOKEY when unknown. */
int ferry_mint_public_key(ferry_mint *m, const char *kid, ferry_jwk **ret_key,
                          ferry_alg *ret_alg);

/* One key of the store, as listed by ferry_mint_list_keys. */
typedef struct ferry_mint_key_info {
    char kid[FERRY_THUMBPRINT_LEN + 1];
    ferry_alg alg;
    const char *state;   /* static: "active", "retired" or "expired" */
    int64_t created;
    int64_t retired_at;  /* 0 for the active key */
    int64_t publish_until; /* retired: end of overlap; 0 for the active key */
} ferry_mint_key_info;

/* Copy of the key list (oldest first) in a new array (free()), count in *ret_n. */
int ferry_mint_list_keys(ferry_mint *m, ferry_mint_key_info **ret, size_t *ret_n);

#ifdef __cplusplus
}
#endif
#endif
