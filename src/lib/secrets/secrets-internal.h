/* lib/secrets/secrets-internal.h - the backend interface inside libferry (not installed).
 *
 * One struct ferry_secret_backend_ops per backend file (src/lib/secrets/file.c, vault.c,
 * azure_kv.c, aws.c, gcp_sm.c), listed in the table in secrets.c. */
#ifndef FERRY_SECRETS_INTERNAL_H
#define FERRY_SECRETS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

#include "ferry/secrets.h"

typedef struct ferry_secret_backend_ops {
    const char *name; /* as in references and in the configuration ("file") */
    ferry_secret_backend id;
    /* Open the backend from its configuration section conf (borrowed; may be NULL when the
     * backend is configured by default) and env. *ret_state is the backend's own state. Must
     * refuse unknown members. Returns 0 or a negative code with a reason in errbuf. */
    int (*open)(const json_t *conf, const ferry_secrets_env *env, void **ret_state, char *errbuf,
                size_t errlen);
    /* Fetch ref (already parsed and of this backend) into a new value (ferry_secret_value_new
     * then fill data, version, ttl_hint). ctx is the caller's opaque per-request context. May
     * be called from several threads at once. The reason in errbuf never holds any value bytes
     * nor the remote's raw error text. */
    int (*fetch)(void *state, void *ctx, const ferry_secret_ref *ref, ferry_secret_value **ret,
                 char *errbuf, size_t errlen);
    void (*close)(void *state); /* accepts NULL */
    /* Optional: called once all backends are open, with the ferry_secrets they belong to, so
     * a backend can fetch through another one (aws-kms reads its ciphertext blobs from the
     * file backend). NULL: not needed. */
    void (*attach)(void *state, ferry_secrets *owner);
} ferry_secret_backend_ops;

extern const ferry_secret_backend_ops ferry_secrets_file_backend;
extern const ferry_secret_backend_ops ferry_secrets_aws_sm_backend;  /* aws.c */
extern const ferry_secret_backend_ops ferry_secrets_aws_kms_backend; /* aws.c */
extern const ferry_secret_backend_ops ferry_secrets_vault_backend;   /* vault.c */
extern const ferry_secret_backend_ops ferry_secrets_azure_kv_backend; /* azure_kv.c */
extern const ferry_secret_backend_ops ferry_secrets_gcp_sm_backend;   /* gcp_sm.c */

/* Helpers of the backends' open(), over their configuration section (borrowed):
 * members_check refuses a member not among the n names ("unknown member \"X\"", prefixed by
 * where); conf_int takes an optional integer lo..hi (def when absent); conf_bool an optional
 * boolean (def when absent). Each returns 0 or -FERRY_ECONFIG with a reason naming the
 * member. */
int ferry_secrets_conf_members(const json_t *conf, const char *const *names, size_t n,
                               const char *where, char *errbuf, size_t errlen);
int ferry_secrets_conf_int(const json_t *conf, const char *name, long lo, long hi, long def,
                           long *ret, char *errbuf, size_t errlen);
int ferry_secrets_conf_bool(const json_t *conf, const char *name, bool def, bool *ret,
                            char *errbuf, size_t errlen);

/* The state of s's backend id when it is configured, else NULL (for one backend that works
 * through another: the file backend's KMS-wrapped key is unwrapped by aws-kms). */
void *ferry_secrets_backend_state(ferry_secrets *s, ferry_secret_backend id);

/* The file backend's store (file.c), opened on first use when its key is KMS-wrapped
 * ("key_kms_file"): one KMS Decrypt through the owner's aws-kms backend, with the encryption
 * context below, and the unwrapped key wiped once the store keys are derived from it. A failed
 * unwrap is retried by the next call. Thread-safe. */
int ferry_secrets_file_store_of(void *state, ferry_secret_store **ret, char *errbuf,
                                size_t errlen);

/* The encryption context a wrapped store key must have been encrypted with (`aws kms encrypt
 * --encryption-context purpose=ferry-secret-store`): KMS refuses to decrypt it without, so an
 * "aws-kms:" reference a policy grants to a workload cannot unwrap the store's key. */
#define FERRY_STORE_KMS_CONTEXT_KEY "purpose"
#define FERRY_STORE_KMS_CONTEXT_VALUE "ferry-secret-store"

/* KMS Decrypt of the standard base64 blob b64 with EncryptionContext {ctx_key: ctx_value}
 * through an aws-kms backend state (aws.c). A new value of the plaintext, or an error with a
 * reason. */
int ferry_secrets_aws_kms_unwrap(void *kms_state, const char *b64, const char *ctx_key,
                                 const char *ctx_value, ferry_secret_value **ret, char *errbuf,
                                 size_t errlen);

/* Test hook of the file store's write sequence (tests/unit/test_secrets.c): when set, called
 * after each step of an atomic write with the step number below, so a test can kill the
 * process there. Not exported from libferry.so (hidden visibility); reachable only by programs
 * linked with libferry-internal. */
enum {
    FERRY_SECRET_STEP_TEMP_CREATED = 1,
    FERRY_SECRET_STEP_PARTIAL_WRITE,
    FERRY_SECRET_STEP_WRITTEN,
    FERRY_SECRET_STEP_FSYNCED,
    FERRY_SECRET_STEP_RENAMED,
    FERRY_SECRET_STEP_DIR_FSYNCED,
};
extern void (*ferry_secrets_file_write_hook)(int step);

/* Test hook (tests/unit/test_secrets_cache.c): make ops (with its state, owned from now on)
 * the backend of ops->id in s, closing the one configured, with cache_ttl seconds. Not
 * exported from libferry.so. Returns 0 or -EINVAL. */
int ferry_secrets_set_backend(ferry_secrets *s, const ferry_secret_backend_ops *ops, void *state,
                              uint32_t cache_ttl);

#endif
