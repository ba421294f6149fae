/* ferry/sigv4.h - AWS Signature Version 4 (AWS4-HMAC-SHA256) request signing.
 *
 * Signs one HTTP request for an AWS service, either with an Authorization header
 * (ferry_sigv4_sign: what the aws-sm and aws-kms backends and STS use for their JSON POSTs) or
 * with query-string authentication (ferry_sigv4_presign: presigned URLs with X-Amz-Expires).
 * The request is described, not sent: the caller passes the method, the path and query exactly
 * as they will go on the wire, the headers it will send (in order, duplicates allowed) and the
 * body (or a precomputed payload hash such as "UNSIGNED-PAYLOAD"); the result says what to add
 * to the request (headers, or the final query string) and, for tests and diagnostics, every
 * intermediate stage (canonical request, string to sign, signature).
 *
 * The canonicalisation follows the two public AWS signing suites byte for byte (botocore's
 * aws4_testsuite and aws-c-auth's aws-signing-test-suite/v4); the exact rules, the limits and
 * the cases proven are in docs/internals/sigv4.md.
 *
 * Secrets: the secret access key and every derived key are wiped after use; no error text ever
 * contains the secret key or the session token. The signature is not a secret to the caller but
 * the results are wiped on ferry_sigv4_result_clear all the same.
 *
 * Thread safety: every function is reentrant; nothing is shared between calls.
 */
#ifndef FERRY_SIGV4_H
#define FERRY_SIGV4_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Limits (inputs past them are refused with -FERRY_ETOOBIG). */
#define FERRY_SIGV4_MAX_KEY_ID 128         /* access key id bytes */
#define FERRY_SIGV4_MAX_SECRET 256         /* secret access key bytes */
#define FERRY_SIGV4_MAX_TOKEN 16384        /* session token bytes */
#define FERRY_SIGV4_MAX_SCOPE_PART 64      /* region or service bytes */
#define FERRY_SIGV4_MAX_METHOD 32          /* method bytes */
#define FERRY_SIGV4_MAX_PATH 8192          /* raw path bytes */
#define FERRY_SIGV4_MAX_QUERY 16384        /* raw query bytes */
#define FERRY_SIGV4_MAX_QUERY_PARAMS 256   /* query parameters */
#define FERRY_SIGV4_MAX_HEADERS 64         /* request headers */
#define FERRY_SIGV4_MAX_HEADER_NAME 256    /* header name bytes */
#define FERRY_SIGV4_MAX_HEADER_VALUE 16384 /* header value bytes (before trimming) */
#define FERRY_SIGV4_MAX_HEADER_TOTAL 65536 /* all header names and values together */
#define FERRY_SIGV4_MAX_BODY (16u << 20)   /* body bytes hashed (16 MiB) */
#define FERRY_SIGV4_MAX_EXPIRES 604800     /* X-Amz-Expires, seconds (7 days, AWS's limit) */

/* The payload hash for a body the service does not check (S3, presigned URLs). */
#define FERRY_SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

typedef struct ferry_sigv4_credentials {
    const char *access_key_id;     /* required, [A-Za-z0-9] */
    const char *secret_access_key; /* required, printable ASCII; wiped copies only */
    const char *session_token;     /* NULL or "" for none (long-term keys); printable ASCII */
} ferry_sigv4_credentials;

typedef struct ferry_sigv4_header {
    const char *name;  /* an RFC 9110 token (no CR, LF, NUL, colon, space, non-ASCII) */
    const char *value; /* no NUL; CR/LF only as obs-fold (CR? LF followed by SP or HT), which
                          is folded to one space as the suites show */
} ferry_sigv4_header;

typedef struct ferry_sigv4_request {
    const char *method; /* "GET", "POST", ... (token characters) */
    const char *path;   /* as sent on the wire, starts with '/'; see FERRY_SIGV4_S3 */
    const char *query;  /* as sent on the wire without the '?', or NULL for none */
    const ferry_sigv4_header *headers; /* in order; duplicates allowed; must include Host */
    size_t n_headers;
    const void *body; /* the body bytes (NULL with body_len 0 for none) */
    size_t body_len;
    const char *payload_hash; /* NULL: SHA-256 of body; else used as is: 64 lowercase hex
                                 digits or "UNSIGNED-PAYLOAD" / another token of
                                 [A-Za-z0-9-] (then body is not read) */
} ferry_sigv4_request;

enum {
    /* S3 rules for the path: no normalisation and no second encoding; the path must already
     * be percent-encoded (unreserved, '/', %XX) and is used as is. */
    FERRY_SIGV4_S3 = 1u << 0,
    /* Keep "." / ".." segments and repeated slashes (still encoded once more). The suites'
     * "-unnormalized" cases; every real service but S3 normalises. */
    FERRY_SIGV4_NO_NORMALIZE = 1u << 1,
    /* Header mode: add and sign X-Amz-Content-Sha256 with the payload hash (S3; aws-c-auth's
     * sign_body). */
    FERRY_SIGV4_CONTENT_SHA256 = 1u << 2,
    /* Add the session token after signing instead of signing it (some services; the suites'
     * post-sts-header-after / omit_session_token). */
    FERRY_SIGV4_TOKEN_UNSIGNED = 1u << 3,
};

typedef struct ferry_sigv4_params {
    const char *region;  /* e.g. "us-east-1": [a-z0-9-] */
    const char *service; /* e.g. "secretsmanager", "kms", "sts": [a-z0-9-] */
    int64_t time;        /* signing time, Unix seconds (UTC), 1970..9999 */
    unsigned flags;      /* FERRY_SIGV4_* */
    unsigned expires;    /* presign only: X-Amz-Expires, 1..FERRY_SIGV4_MAX_EXPIRES */
} ferry_sigv4_params;

/* A header the caller must add to the request, in the order given. */
typedef struct ferry_sigv4_out_header {
    char *name;
    char *value;
} ferry_sigv4_out_header;

/* Every string is new (malloc'd, NUL-terminated); ferry_sigv4_result_clear frees them. */
typedef struct ferry_sigv4_result {
    char *amz_date;          /* "20150830T123600Z" */
    char *payload_hash;      /* hex SHA-256 of the body, or the payload_hash given */
    char *canonical_request; /* for tests and diagnostics */
    char *string_to_sign;
    char *signature;      /* 64 lowercase hex digits */
    char *signed_headers; /* "host;x-amz-date" */
    /* ferry_sigv4_sign only: */
    char *authorization;                 /* value of the Authorization header */
    ferry_sigv4_out_header *add_headers; /* X-Amz-Date (unless the request had it),
                                            X-Amz-Content-Sha256, X-Amz-Security-Token (signed
                                            or not), Authorization: add all, in this order */
    size_t n_add_headers;
    /* ferry_sigv4_presign only: */
    char *canonical_query; /* the query part of the canonical request */
    char *query;           /* the final query string to send (no '?'): the request's query
                              as given, then X-Amz-Algorithm, -Credential, -Date,
                              -SignedHeaders, -Expires, -Security-Token, -Signature */
} ferry_sigv4_result;

/* Sign request with an Authorization header. Returns 0 and fills *ret (which need not be
 * initialised; it is zeroed first), or a negative code with a one-line reason in errbuf
 * (which may be NULL): -EINVAL (NULL argument, bad flags, a value out of its character set
 * such as a header name with CR/LF/NUL/colon, a path not starting with '/', a request that
 * already carries Authorization or both a session token and an X-Amz-Security-Token header,
 * an X-Amz-Date header that is not the signing time), -FERRY_EMALFORMED (a bad percent-escape,
 * obs-fold, or S3 path byte), -FERRY_ETOOBIG (a limit above), -ENOMEM, -FERRY_ECRYPTO. */
int ferry_sigv4_sign(const ferry_sigv4_credentials *creds, const ferry_sigv4_request *req,
                     const ferry_sigv4_params *params, ferry_sigv4_result *ret, char *errbuf,
                     size_t errlen);

/* Presign request (query-string authentication, X-Amz-Expires = params->expires). The request
 * must not already carry any X-Amz-* authentication parameter in its query. Results: everything
 * but authorization and add_headers. Errors as ferry_sigv4_sign. */
int ferry_sigv4_presign(const ferry_sigv4_credentials *creds, const ferry_sigv4_request *req,
                        const ferry_sigv4_params *params, ferry_sigv4_result *ret, char *errbuf,
                        size_t errlen);

/* Wipe and free every string of r and zero it. Accepts NULL and a zeroed result. */
void ferry_sigv4_result_clear(ferry_sigv4_result *r);

/* Format t (Unix seconds) as the 16-byte X-Amz-Date "YYYYMMDDTHHMMSSZ" into buf (at least 17
 * bytes). Returns 0 or -EINVAL (t outside 1970..9999, buf too small). */
int ferry_sigv4_format_date(int64_t t, char *buf, size_t len);

/* Parse an X-Amz-Date ("YYYYMMDDTHHMMSSZ", a valid calendar time) into Unix seconds.
 * Returns 0 or -FERRY_EMALFORMED. */
int ferry_sigv4_parse_date(const char *s, int64_t *ret);

#ifdef __cplusplus
}
#endif
#endif
