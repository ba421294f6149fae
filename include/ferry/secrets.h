/* ferry/secrets.h - secret references, the backend interface and the sealed-file store.
 *
 * A secret is named by a reference "BACKEND:REST"; docs/internals/secrets.md is the reference.
 *
 *   vault:<mount>/<path>#<field>[?version=<N>]        Vault KV v2 (latest, or version N)
 *   azure-kv:<vault>/<name>[/<version>]               Azure Key Vault secret
 *   aws-sm:<name-or-arn>[#<json-key>][?version-id=<id>|?version-stage=<stage>]
 *                                                     AWS Secrets Manager
 *   aws-kms:file:<name>                               KMS Decrypt of the ciphertext blob stored
 *   aws-kms:b64:<base64>                              in the file backend under <name>, or
 *                                                     given inline (standard base64, padded)
 *   gcp-sm:projects/<p>/secrets/<s>/versions/<v>      GCP Secret Manager (<v>: N or latest)
 *   file:<name>                                       the sealed local file (the default)
 *
 * Every part has an allowed character set and a length limit (see ferry_secret_ref_parse);
 * '%' is refused everywhere, so no escape can smuggle a '/' or a ".." past the checks, and
 * control bytes are refused. Each secret has exactly one accepted spelling except Azure Key
 * Vault names, which are case-insensitive at Azure and are lower-cased in the canonical form.
 * Policies grant references as exact strings or globs (include/ferry/policy.h, "secrets");
 * ferry_secret_ref_granted() matches them against the canonical form only, so two spellings of
 * one secret cannot dodge a pattern.
 */
#ifndef FERRY_SECRETS_H
#define FERRY_SECRETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FERRY_SECRET_REF_MAX 1024    /* bytes of a whole reference */
#define FERRY_SECRET_PART_MAX 255    /* bytes of a mount, vault, project, field, version */
#define FERRY_SECRET_NAME_MAX 255    /* bytes of a file-backend entry name */
#define FERRY_SECRET_VALUE_MAX 65536 /* bytes of one secret value (every backend) */
#define FERRY_SECRET_VERSION_MAX 127 /* bytes of a version string in a value */

typedef enum ferry_secret_backend {
    FERRY_SECRET_VAULT = 1,
    FERRY_SECRET_AZURE_KV,
    FERRY_SECRET_AWS_SM,
    FERRY_SECRET_AWS_KMS,
    FERRY_SECRET_GCP_SM,
    FERRY_SECRET_FILE,
} ferry_secret_backend;

/* A parsed, validated reference. Unused parts are "". Per backend:
 *   vault:    scope = mount, name = path, field = field, version = N or ""
 *   azure-kv: scope = vault, name = secret name, version = 32 hex digits or "" (lower case)
 *   aws-sm:   name = name or ARN, field = JSON key or "", version = version id or "",
 *             stage = version stage or ""
 *   aws-kms:  scope = "file" or "b64", name = file entry name or base64 blob
 *   gcp-sm:   scope = project, name = secret id, version = N or "latest"
 *   file:     name = entry name
 * canonical is the one spelling matched against grants and used as a cache key. */
typedef struct ferry_secret_ref {
    ferry_secret_backend backend;
    char scope[FERRY_SECRET_PART_MAX + 1];
    char name[FERRY_SECRET_REF_MAX + 1];
    char field[FERRY_SECRET_PART_MAX + 1];
    char version[FERRY_SECRET_PART_MAX + 1];
    char stage[FERRY_SECRET_PART_MAX + 1];
    char canonical[FERRY_SECRET_REF_MAX + 1];
} ferry_secret_ref;

/* Parse and validate a reference string (NUL-terminated) into *ret (written only on success).
 * Returns 0, -EINVAL (NULL argument) or -FERRY_EMALFORMED / -FERRY_ETOOBIG with a one-line
 * reason naming the part at fault in errbuf ("vault: path: segment \"..\" is not allowed").
 * Pure function; thread-safe. */
int ferry_secret_ref_parse(const char *ref, ferry_secret_ref *ret, char *errbuf, size_t errlen);

/* Name of a backend as written in references ("azure-kv"), or NULL for an unknown id. */
const char *ferry_secret_backend_name(ferry_secret_backend backend);

/* Whether one of the n grant patterns (exact strings or policy globs, as in a policy's
 * "secrets", borrowed) grants ref. A pattern is matched with ferry_policy_glob_match() against
 * ref->canonical, and also against the canonical form without its version qualifier (a grant
 * of a secret grants its versions; a grant that names a version grants only that version).
 * azure-kv patterns are lower-cased before matching, like the canonical form. A pattern that
 * fails ferry_policy_glob_check() grants nothing. Thread-safe. */
bool ferry_secret_ref_granted(const char *const *patterns, size_t n, const ferry_secret_ref *ref);

/* Check a file-backend entry name: 1-255 bytes of A-Z a-z 0-9 . _ - / in '/'-separated
 * segments, none empty, "." or "..". Returns 0 or -FERRY_EMALFORMED with a reason. */
int ferry_secret_name_check(const char *name, char *errbuf, size_t errlen);

/* ---- secret values ---------------------------------------------------------------------- */

/* A fetched secret. data is len bytes followed by a NUL (not counted), in pages of their own
 * that are mlock'ed when the process may lock memory (locked says whether it worked) and
 * excluded from core dumps; version is the backend's version string ("" when it has none);
 * ttl_hint is the backend's cache hint in seconds (0: none). Free with
 * ferry_secret_value_free(), which wipes the bytes. */
typedef struct ferry_secret_value {
    unsigned char *data;
    size_t len;
    char version[FERRY_SECRET_VERSION_MAX + 1];
    uint32_t ttl_hint;
    bool locked;
    size_t map_len; /* private: size of the mapping */
} ferry_secret_value;

/* A new value of len bytes (0 <= len <= FERRY_SECRET_VALUE_MAX), zeroed, for a backend to fill.
 * Returns 0, -FERRY_ETOOBIG or -ENOMEM; *ret written only on success. */
int ferry_secret_value_new(size_t len, ferry_secret_value **ret);
/* Wipe, unlock and free a value. Accepts NULL. */
void ferry_secret_value_free(ferry_secret_value *v);

/* ---- the configured backends -------------------------------------------------------------- */

typedef struct ferry_secrets ferry_secrets;

/* What the embedding program lends the backends (borrowed; must outlive the ferry_secrets).
 * Later sessions add here what the HTTP backends need from the program (the ferry mint for
 * their identity token, the HTTP client options). */
typedef struct ferry_secrets_env {
    const char *state_dir; /* default directory of the file store (NULL: file needs "store" and
                              "key" in its configuration section) */
    /* The workload identity of the cloud backends (aws-sm, aws-kms): returns a new
     * ferry-minted token for audience in *ret_token (the caller wipes and frees it), or a
     * negative code with a reason. NULL: those backends read "web_identity_token_file" from
     * their configuration instead, or use environment credentials. Called from any thread. */
    int (*web_identity_token)(void *userdata, const char *audience, char **ret_token,
                              char *errbuf, size_t errlen);
    void *web_identity_userdata;
    /* The cache's clock: monotonic milliseconds (tests inject one). NULL: CLOCK_MONOTONIC. */
    int64_t (*clock_ms)(void *userdata);
    void *clock_userdata;
} ferry_secrets_env;

/* Create the backends from conf, ferryd's "secrets" section: an object whose members are
 * backend names, each with that backend's configuration object, e.g.
 *   {"file": {"store": "/var/lib/ferry/secrets.store", "key": "/var/lib/ferry/secrets.key"}}
 * Each backend section may also hold "cache_ttl": seconds its values stay cached (0..86400,
 * default 300; 0 = never cached); the backend's own ttl_hint may shorten it. A member "cache"
 * (not a backend) bounds the cache: {"max_entries": 1..1000000 (default 1024), "max_bytes":
 * 4096..2^30 (default 4 MiB, counted in whole locked pages)}.
 * conf may be NULL (no section): then only the file backend is configured, with its defaults
 * under env->state_dir, when that is set. An unknown member, a backend this build does not
 * have yet, or a bad section is refused with -FERRY_ECONFIG / -FERRY_EUNSUPPORTED and a reason
 * naming it. Returns 0 or a negative code; *ret written only on success (free with
 * ferry_secrets_free). conf and env are borrowed. */
int ferry_secrets_new(const json_t *conf, const ferry_secrets_env *env, ferry_secrets **ret,
                      char *errbuf, size_t errlen);
void ferry_secrets_free(ferry_secrets *s); /* accepts NULL */

/* Fetch the secret ref names (a reference string; parsed and canonicalised here). This does
 * not check grants: the caller checks ferry_secret_ref_granted() first. ctx is the caller's
 * per-request context, handed unchanged to the backend (NULL for the file backend). On success
 * *ret is a new value of the caller's own (ferry_secret_value_free). Returns 0,
 * -FERRY_EMALFORMED (bad reference), -FERRY_EUNSUPPORTED (backend not configured or not
 * available yet), -ENOENT (no such secret) or the backend's error; errbuf says which, never
 * with any part of a value. Thread-safe.
 *
 * Values are cached by canonical reference (bounded, least recently used evicted first, TTL
 * per backend; the cache's copies are in locked pages and wiped when they go). Single-flight:
 * while one backend call for a reference is running, other callers of that reference wait for
 * its result and share it, success or failure; failures are never cached. */
int ferry_secrets_fetch(ferry_secrets *s, const char *ref, void *ctx, ferry_secret_value **ret,
                        char *errbuf, size_t errlen);

/* flags of ferry_secrets_fetch_ex */
#define FERRY_SECRETS_NO_WAIT 1u /* a cached value or -FERRY_EWOULDBLOCK: no backend call and
                                    no waiting for another caller's */

/* ferry_secrets_fetch with flags (0 or FERRY_SECRETS_NO_WAIT, for an event thread). */
int ferry_secrets_fetch_ex(ferry_secrets *s, const char *ref, unsigned flags, void *ctx,
                           ferry_secret_value **ret, char *errbuf, size_t errlen);

/* The cache's counters since ferry_secrets_new. */
typedef struct ferry_secrets_stats {
    uint64_t hits;           /* answered from the cache */
    uint64_t misses;         /* not cached (each waiter of a flight counts too) */
    uint64_t backend_calls;  /* backend fetches started */
    uint64_t backend_errors; /* of which failed */
    uint64_t inflight_waits; /* callers that waited for another caller's backend call */
    uint64_t evictions;      /* entries dropped to stay within the bounds */
    uint64_t expirations;    /* entries dropped when found expired */
    size_t entries, bytes;   /* cached now (bytes: locked pages) */
    size_t max_entries, max_bytes;
} ferry_secrets_stats;

/* A consistent snapshot of the counters; all 0 for NULL s. Thread-safe. */
void ferry_secrets_get_stats(ferry_secrets *s, ferry_secrets_stats *out);

/* ---- the sealed-file store (the file backend; also used by `ferry secret`) --------------- */

typedef struct ferry_secret_store ferry_secret_store;

/* Entry metadata as listed (no value). */
typedef struct ferry_secret_entry_info {
    char name[FERRY_SECRET_NAME_MAX + 1];
    uint64_t version; /* the store generation at which the entry was last written */
    int64_t created;  /* Unix time of that write */
} ferry_secret_entry_info;

/* Create the key file key_path: 32 random bytes, mode 0600, O_EXCL (an existing file is
 * refused with -EEXIST). Refused with -EEXIST too when store_path already exists (its key
 * would be lost). Returns 0 or -errno / -FERRY_ECRYPTO with a reason. */
int ferry_secret_store_init_key(const char *store_path, const char *key_path, char *errbuf,
                                size_t errlen);

/* Open the store at store_path (it need not exist yet: an absent store is empty) with the key
 * in key_path, which must be a regular file of exactly 32 bytes, owned by the effective user,
 * with no group or other permission bits; otherwise -EPERM / -FERRY_EMALFORMED / -errno with a
 * reason. The store file itself is read by each operation. *ret is new (free with
 * ferry_secret_store_free). */
int ferry_secret_store_open(const char *store_path, const char *key_path, ferry_secret_store **ret,
                            char *errbuf, size_t errlen);
void ferry_secret_store_free(ferry_secret_store *st); /* accepts NULL; wipes the key */

/* The store of s's file backend (borrowed: valid until ferry_secrets_free(s)), for `ferry
 * secret put | list | rm --config`. When the backend's key is KMS-wrapped ("key_kms_file":
 * the data key encrypted by AWS KMS with the encryption context purpose=ferry-secret-store),
 * the first call unwraps it through s's aws-kms backend. Returns 0, -FERRY_EUNSUPPORTED (no
 * file backend), -FERRY_ECONFIG (a wrapped key but no aws-kms section) or the unwrap's error,
 * with a reason. Thread-safe. */
int ferry_secrets_file_store(ferry_secrets *s, ferry_secret_store **ret, char *errbuf,
                             size_t errlen);

/* Store value (len bytes, 1..FERRY_SECRET_VALUE_MAX, borrowed) under name, replacing any
 * earlier value. Atomic and crash-safe: the new store is written to a temporary file, fsync'ed
 * and renamed over the old one; writers serialise on a lock file. *ret_version (optional) is
 * the entry's new version. Returns 0, -FERRY_EMALFORMED (bad name or store), -FERRY_ETOOBIG,
 * -FERRY_EBADSIG (store modified or sealed with another key) or -errno. */
int ferry_secret_store_put(ferry_secret_store *st, const char *name, const void *value, size_t len,
                           uint64_t *ret_version, char *errbuf, size_t errlen);
/* The value of name as a new locked value (version = decimal entry version). -ENOENT when
 * absent; other errors as put. */
int ferry_secret_store_get(ferry_secret_store *st, const char *name, ferry_secret_value **ret,
                           char *errbuf, size_t errlen);
/* Remove name (-ENOENT when absent); atomic like put. */
int ferry_secret_store_rm(ferry_secret_store *st, const char *name, char *errbuf, size_t errlen);
/* Re-seal the whole store under a new key: new_key_path is created first (32 random bytes,
 * mode 0600, O_EXCL: an existing file is refused with -EEXIST, fsynced), then every entry is
 * decrypted with st's key and sealed again with the new one in one atomic write, under the
 * writers' lock. On success st uses the new key and the old key file no longer opens the store
 * (the caller retires it); on failure the store is untouched and the new key file removed. A
 * crash after the store's rename leaves it sealed under new_key_path. For the nonce budget of
 * AES-GCM with random nonces (docs/internals/secrets.md) and for key compromise. Returns 0 or
 * what put and ferry_secret_store_init_key return, with a reason. */
int ferry_secret_store_rekey(ferry_secret_store *st, const char *new_key_path, char *errbuf,
                             size_t errlen);
/* The entries, sorted by name, as a new array (free()) of *ret_n infos (NULL when empty). The
 * whole store is authenticated first. */
int ferry_secret_store_list(ferry_secret_store *st, ferry_secret_entry_info **ret, size_t *ret_n,
                            char *errbuf, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
