/* lib/secrets/gcp-internal.h - the parsers of the gcp-sm backend (src/lib/secrets/gcp_sm.c),
 * shared with its unit test (tests/unit/test_secrets_gcp.c). Not installed, not exported. */
#ifndef FERRY_SECRETS_GCP_INTERNAL_H
#define FERRY_SECRETS_GCP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "ferry/secrets.h"

#define FERRY_GCP_RESPONSE_MAX (256 * 1024) /* any answer of STS, IAM Credentials or SM */
#define FERRY_GCP_TOKEN_MAX 4096            /* bytes of an access token */

/* Parse a Secret Manager AccessSecretVersionResponse body (len bytes) for ref (a parsed
 * gcp-sm reference): {"name": "projects/P/secrets/S/versions/N", "payload": {"data": base64,
 * "dataCrc32c": "decimal"}}. name must name ref's secret (the project may be answered as its
 * number) and, when ref names a number, that version; data must be strict standard base64 of
 * 1..64 KiB; dataCrc32c, when present, must match (a mismatch is -FERRY_EBADSIG and no value).
 * On success *ret is a new value (ferry_secret_value_free) whose version is N. Errors:
 * -FERRY_EMALFORMED, -FERRY_ETOOBIG, -FERRY_EBADSIG, -ENOMEM, with a reason that holds no
 * value bytes. The parsed tree's strings are wiped before it is freed. Thread-safe. */
int ferry_gcp_access_parse(const char *body, size_t len, const ferry_secret_ref *ref,
                           ferry_secret_value **ret, char *errbuf, size_t errlen);

/* Parse a GCP STS token answer {"access_token", "issued_token_type", "token_type": "Bearer",
 * "expires_in"}. *ret_token is new (wipe and free: ferry_free_secret_str), *ret_lifetime the
 * seconds it lives (1..86400). -FERRY_EMALFORMED / -FERRY_ETOOBIG / -ENOMEM with a reason. */
int ferry_gcp_sts_parse(const char *body, size_t len, char **ret_token, int64_t *ret_lifetime,
                        char *errbuf, size_t errlen);

/* Parse an IAM Credentials generateAccessToken answer {"accessToken", "expireTime" (RFC 3339,
 * UTC)} received at Unix time now. *ret_token is new (ferry_free_secret_str), *ret_lifetime
 * the seconds left (1..43200; an expireTime not after now is refused). Errors as above. */
int ferry_gcp_iam_parse(const char *body, size_t len, int64_t now, char **ret_token,
                        int64_t *ret_lifetime, char *errbuf, size_t errlen);

/* Parse an RFC 3339 UTC time "YYYY-MM-DDTHH:MM:SS[.fraction]Z" (the fraction is dropped) into
 * Unix seconds. 0 or -FERRY_EMALFORMED (shape or calendar). Pure. */
int ferry_gcp_rfc3339_parse(const char *s, size_t n, int64_t *ret);

/* The status word of a Google error body ({"error": {"code", "message", "status"}}): copies
 * error.status into ret (size n) when it is 1..40 of A-Z and '_'; for an OAuth-style STS error
 * ({"error": "invalid_grant", ...}) the error code when it is 1..40 of a-z and '_'. Never the
 * message, which can echo input. Returns 0, or -FERRY_EMALFORMED with ret "" otherwise. */
int ferry_gcp_error_status(const char *body, size_t len, char *ret, size_t n);

#endif
