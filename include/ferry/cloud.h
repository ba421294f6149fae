/* ferry/cloud.h - credentials for the clouds ferry's backends call, obtained with ferry's own
 * identity (docs/internals/cloud.md).
 *
 * AWS: STS AssumeRoleWithWebIdentity with a ferry-minted token (or a token file), cached per
 * provider (one role ARN and session name) and refreshed before expiry; or, with no role, the
 * rest of the standard chain: the environment variables AWS_ACCESS_KEY_ID /
 * AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN; a web identity from AWS_ROLE_ARN and
 * AWS_WEB_IDENTITY_TOKEN_FILE (EKS IRSA); the shared config and credentials files' profile
 * (static keys, or role_arn with web_identity_token_file; lib/cloud/aws-profile.h). The secret key and session token live in wiped memory and never appear in
 * an error text. Signed AWS JSON 1.1 calls (Secrets Manager, KMS) go through
 * ferry_aws_json_call, which signs with ferry's SigV4 (ferry/sigv4.h), retries throttling,
 * 5xx and network failures a bounded number of times by ferry_http_retry_pause (jittered
 * backoff, or the server's Retry-After when longer, within a per-call waiting budget; a
 * Retry-After past the budget fails at once), and maps AWS's error "__type" to a code.
 *
 * Azure (Entra ID workload identity federation) and GCP (STS token exchange) tokens are
 * obtained inside their secret backends for now (src/lib/secrets/azure_kv.c, gcp_sm.c).
 */
#ifndef FERRY_CLOUD_H
#define FERRY_CLOUD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/http.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FERRY_AWS_STS_RESPONSE_MAX 65536 /* bytes of an STS response */
#define FERRY_AWS_TOKEN_MAX 16384        /* bytes of a web identity token or session token */
#define FERRY_AWS_ARN_MAX 2048
#define FERRY_AWS_MAX_ATTEMPTS 3 /* tries of one call (throttling, 5xx, network) */

/* A set of AWS credentials. secret_access_key and session_token are malloc'd and wiped by
 * ferry_aws_credentials_clear; session_token is NULL for long-term keys. expiration is Unix
 * seconds, 0 for credentials without one (environment). */
typedef struct ferry_aws_credentials {
    char access_key_id[129];
    char *secret_access_key;
    char *session_token;
    int64_t expiration;
} ferry_aws_credentials;

/* Wipe and free the secret members and zero c. Accepts NULL. */
void ferry_aws_credentials_clear(ferry_aws_credentials *c);

/* Parse the body of a successful STS AssumeRoleWithWebIdentity (or AssumeRole) response: the
 * XML document must be one <...Response> holding exactly one <Credentials> with exactly one
 * each of AccessKeyId ([A-Za-z0-9], 16..128), SecretAccessKey (printable, 1..256),
 * SessionToken (printable, 1..FERRY_AWS_TOKEN_MAX) and Expiration (ISO 8601 UTC). No entity,
 * CDATA, comment or processing instruction inside those elements. Returns 0 and fills *ret
 * (clear it), or -FERRY_EMALFORMED / -FERRY_ETOOBIG with a reason naming the element (never
 * its content). */
int ferry_aws_sts_parse(const char *xml, size_t len, ferry_aws_credentials *ret, char *errbuf,
                        size_t errlen);

/* Map an AWS error response (JSON 1.1 "__type", or a Query-protocol XML <Code>) with HTTP
 * status to a code: ResourceNotFoundException / NotFoundException -> -ENOENT;
 * AccessDenied*, UnrecognizedClient, InvalidClientTokenId, ExpiredToken*, InvalidIdentityToken,
 * IncorrectKey, InvalidCiphertext, KMSInvalidState, DisabledException -> -EACCES;
 * Throttling*, TooManyRequests*, RequestLimitExceeded, LimitExceeded -> -EAGAIN;
 * other 5xx -> -EAGAIN too (retryable); anything else -> -FERRY_EFETCH. errbuf gets "AWS
 * <type> (HTTP <status>)" when the type is one of the known names above, else only the
 * status: the remote's own message is never copied. */
int ferry_aws_error(long status, const char *body, size_t len, char *errbuf, size_t errlen);

/* Produces a web identity token for audience (a ferry-minted JWT) as a new string the caller
 * wipes and frees. Returns 0 or a negative code with a reason. */
typedef int (*ferry_aws_web_identity_fn)(void *userdata, const char *audience, char **ret_token,
                                         char *errbuf, size_t errlen);

typedef struct ferry_aws_config {
    const char *region;       /* required, [a-z0-9-] */
    const char *role_arn;     /* NULL: the rest of the standard chain (below) */
    const char *session_name; /* RoleSessionName, [\w+=,.@-]{2,64}; NULL = "ferry" */
    const char *sts_endpoint; /* NULL = https://sts.<region>.amazonaws.com */
    const char *audience;     /* audience of the web identity token; NULL = "sts.amazonaws.com" */
    const char *web_identity_token_file; /* read for each STS call when web_identity is NULL */
    ferry_aws_web_identity_fn web_identity;
    void *web_identity_userdata;
    uint32_t duration_seconds; /* DurationSeconds, 900..43200; 0 = 3600 */
    const char *profile;       /* the shared config profile of the chain; NULL = $AWS_PROFILE
                                  or "default" */
    ferry_http_options http;   /* for STS (and copied for the caller's calls) */
} ferry_aws_config;

typedef struct ferry_aws_provider ferry_aws_provider;

/* A credential provider for cfg (strings copied; the callback and its userdata borrowed).
 * Returns 0, -FERRY_ECONFIG with a reason, or -ENOMEM. */
int ferry_aws_provider_new(const ferry_aws_config *cfg, ferry_aws_provider **ret, char *errbuf,
                           size_t errlen);
void ferry_aws_provider_free(ferry_aws_provider *p); /* accepts NULL; wipes the cache */

/* Current credentials as a copy in *ret (ferry_aws_credentials_clear it). From the cache when
 * they are valid for longer than the refresh margin (5 minutes, or half their lifetime when
 * that is shorter); else fetched anew from STS under the provider's lock, so concurrent
 * callers make one STS call. Thread-safe. Returns 0, -EACCES (STS refused the identity),
 * -EAGAIN (throttled), -FERRY_EFETCH, -FERRY_EMALFORMED, -FERRY_ECONFIG (no credentials in
 * the environment) with a reason. */
int ferry_aws_provider_get(ferry_aws_provider *p, ferry_aws_credentials *ret, char *errbuf,
                           size_t errlen);

/* Forget the cached credentials (after AWS refused them). Thread-safe. */
void ferry_aws_provider_invalidate(ferry_aws_provider *p);

/* A signed AWS JSON 1.1 POST: endpoint ("https://host[:port]", NULL =
 * https://<service>.<region>.amazonaws.com), X-Amz-Target target, body (JSON). Throttling,
 * 5xx and network failures are retried up to FERRY_AWS_MAX_ATTEMPTS by the rule above;
 * credentials AWS refused are dropped once and fetched again. On HTTP 200 with an
 * application/x-amz-json-1.1 (or application/json) content type, *ret is the response (its
 * body wiped on release); any other answer is mapped with ferry_aws_error. max_response caps
 * the body. Returns 0 or a negative code with a reason. */
int ferry_aws_json_call(ferry_aws_provider *p, const char *endpoint, const char *service,
                        const char *target, const char *body, size_t body_len, size_t max_response,
                        ferry_http_response *ret, char *errbuf, size_t errlen);

/* A signed AWS Query-protocol POST (IAM, STS): form is the application/x-www-form-urlencoded
 * body (Action=...&Version=...&...), signed for region (NULL = the provider's; IAM is global:
 * "us-east-1") and service; endpoint as ferry_aws_json_call (NULL =
 * https://<service>.<region>.amazonaws.com). action names the call in reasons. Retries and
 * credential refresh as ferry_aws_json_call. On HTTP 200 with a text/xml or application/xml
 * content type, returns 0 and *ret is the answer. On an HTTP error answer (after the retries)
 * returns the ferry_aws_error code and *ret holds that last answer too, so that the caller can
 * look at its status; release *ret in every case (it is zeroed first). */
int ferry_aws_query_call(ferry_aws_provider *p, const char *endpoint, const char *region,
                         const char *service, const char *action, const char *form,
                         size_t form_len, size_t max_response, ferry_http_response *ret,
                         char *errbuf, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
