/* lib/secrets/aws-internal.h - parsers of the aws-sm and aws-kms backends, exposed to the unit
 * tests (tests/unit/test_cloud_aws.c) through libferry-internal; not exported. */
#ifndef FERRY_SECRETS_AWS_INTERNAL_H
#define FERRY_SECRETS_AWS_INTERNAL_H

#include <stddef.h>

#include "ferry/secrets.h"

/* Largest response body accepted from Secrets Manager or KMS. */
#define FERRY_AWS_SECRET_RESPONSE_MAX (256 * 1024)

/* Decode strict standard base64 (RFC 4648 §4: A-Z a-z 0-9 + /, padded to a multiple of 4,
 * canonical) of n bytes into a new value. -FERRY_EMALFORMED, -FERRY_ETOOBIG, -ENOMEM. */
int ferry_aws_b64_value(const char *in, size_t n, ferry_secret_value **ret);

/* A GetSecretValue response body: exactly one of SecretString (a string) and SecretBinary
 * (standard base64), VersionId (optional string). With field non-empty, SecretString must be a
 * JSON object and field one of its string members, which becomes the value. The value and the
 * version go into a new *ret. Errors name the member, never a value. */
int ferry_aws_sm_parse(const char *body, size_t len, const char *field, ferry_secret_value **ret,
                       char *errbuf, size_t errlen);

/* A KMS Decrypt response body: Plaintext (standard base64, 1..FERRY_SECRET_VALUE_MAX bytes
 * decoded), KeyId (optional string, becomes the version). */
int ferry_aws_kms_parse(const char *body, size_t len, ferry_secret_value **ret, char *errbuf,
                        size_t errlen);

#endif
