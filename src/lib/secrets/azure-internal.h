/* lib/secrets/azure-internal.h - the azure-kv backend's parsers and checks, for its unit tests
 * (tests/unit/test_secrets_azure.c). Not installed; hidden in libferry.so. */
#ifndef FERRY_AZURE_INTERNAL_H
#define FERRY_AZURE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/secrets.h"

#define FERRY_AZURE_CHALLENGE_MAX 4096 /* bytes of a WWW-Authenticate value we look at */
#define FERRY_AZURE_PARAM_MAX 512      /* bytes of one challenge parameter */

/* The Bearer challenge of a Key Vault 401: the authority (authorization= or
 * authorization_uri=) and the resource= or scope= it names ("" when absent). */
typedef struct ferry_azure_challenge {
    char authority[FERRY_AZURE_PARAM_MAX + 1];
    char resource[FERRY_AZURE_PARAM_MAX + 1];
    char scope[FERRY_AZURE_PARAM_MAX + 1];
} ferry_azure_challenge;

/* Parse a WWW-Authenticate value (NUL-terminated, borrowed) for its Bearer challenge: the
 * scheme "Bearer" (any case) then comma-separated name=value parameters, values quoted
 * (no backslash escapes) or tokens; a later challenge of another scheme ends it. Parameters
 * are printable ASCII of at most FERRY_AZURE_PARAM_MAX bytes. Returns 0, or
 * -FERRY_EMALFORMED with a reason (no Bearer challenge, no authority, a bad parameter);
 * *ret written only on success. Pure; thread-safe. */
int ferry_azure_challenge_parse(const char *header, ferry_azure_challenge *ret, char *errbuf,
                                size_t errlen);

/* Decide whether ferry may follow ch and for which scope. The authority must be
 * authority_host (scheme, host and port, compared without case) followed by "/" and tenant
 * (without case) and nothing else but an optional "/": a client assertion is never sent to a
 * host or tenant named by the vault. The resource (or scope) must be an https URL; when
 * verify_resource, its host must be a parent domain of vault_host ("vault.azure.net" for
 * "x.vault.azure.net", the official client's challenge resource verification). The scope is
 * the resource + "/.default", or the scope as given. Writes it to ret_scope (scope_len bytes)
 * on success. Returns 0 or -FERRY_EPOLICY with a reason naming what did not match. */
int ferry_azure_challenge_scope(const ferry_azure_challenge *ch, const char *authority_host,
                                const char *tenant, const char *vault_host, bool verify_resource,
                                char *ret_scope, size_t scope_len, char *errbuf, size_t errlen);

/* Parse an Entra ID v2 token answer: access_token (printable ASCII without spaces, at most
 * 16 KiB) as a new string in *ret_token (the caller wipes and frees it), token_type "Bearer"
 * (any case), expires_in a number of seconds 1..86400 (an integer, or a decimal string as
 * older endpoints send). Returns 0, -FERRY_EMALFORMED, -FERRY_ETOOBIG or -ENOMEM; outputs
 * written only on success; the reason never holds the token. Thread-safe. */
int ferry_azure_token_parse(const char *body, size_t len, char **ret_token, int64_t *ret_expires_in,
                            char *errbuf, size_t errlen);

/* Parse a Key Vault SecretBundle (Get Secret answer) for the secret name (lower case) and the
 * version asked for ("" = latest), at wall-clock time now (Unix seconds): value (a string of at
 * most 64 KiB) becomes the new value *ret (ferry_secret_value_free); its version is the last
 * segment of id, which must end in "/secrets/<name>/<version>" (the version asked for, when
 * one was). attributes.enabled false, exp at or before now, or nbf after now are refused
 * (-EACCES); with exp, ttl_hint is the seconds left. Returns 0, -EACCES, -FERRY_EMALFORMED,
 * -FERRY_ETOOBIG or -ENOMEM; the reason never holds a value. Thread-safe. */
int ferry_azure_secret_parse(const char *body, size_t len, const char *name, const char *version,
                             int64_t now, ferry_secret_value **ret, char *errbuf, size_t errlen);

/* The error code of a KeyVaultError {"error": {"code": C, "innererror": {"code": I}}} or of an
 * Entra error {"error": C}: "C" or "C/I" when each is 1..64 of [A-Za-z_] (anything else is
 * dropped: the remote's text may echo input), else "". Never the message. Writes ret
 * (retlen bytes, NUL-terminated) always. */
void ferry_azure_error_code(const char *body, size_t len, char *ret, size_t retlen);

#endif
