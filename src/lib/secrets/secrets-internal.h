/* lib/secrets/secrets-internal.h - the backend interface inside libferry (not installed).
 *
 * One struct ferry_secret_backend_ops per backend file (src/lib/secrets/file.c, vault.c,
 * azure_kv.c, aws.c, gcp_sm.c), listed in the table in secrets.c. */
#ifndef FERRY_SECRETS_INTERNAL_H
#define FERRY_SECRETS_INTERNAL_H

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
