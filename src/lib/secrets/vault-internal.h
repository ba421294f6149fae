/* lib/secrets/vault-internal.h - the vault backend's response parsers, for its unit tests
 * (tests/unit/test_secrets_vault.c). Not installed; hidden in libferry.so. */
#ifndef FERRY_VAULT_INTERNAL_H
#define FERRY_VAULT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/secrets.h"

/* Parse a KV v2 read answer (body, len bytes; at most 256 KiB): the value of
 * data.data.<field> (a string byte for byte; a number, boolean, object or array as its compact
 * JSON text; null refused) with data.metadata.version as its version. *ret is a new value
 * (ferry_secret_value_free). Returns 0, -ENOENT (no such field, or the version is deleted),
 * -FERRY_EMALFORMED, -FERRY_ETOOBIG (value over 64 KiB) or -ENOMEM; the reason never holds a
 * value. Thread-safe. */
int ferry_vault_kv2_parse(const char *body, size_t len, const char *field, ferry_secret_value **ret,
                          char *errbuf, size_t errlen);

/* Parse a login or renew-self answer: auth.client_token (printable ASCII, no spaces, at most
 * 4096 bytes) as a new string in *ret_token (the caller wipes and frees it),
 * auth.lease_duration in seconds (0: no expiry) and auth.renewable. Returns 0,
 * -FERRY_EMALFORMED, -FERRY_ETOOBIG or -ENOMEM; outputs written only on success. */
int ferry_vault_auth_parse(const char *body, size_t len, char **ret_token, int64_t *ret_lease,
                           bool *ret_renewable, char *errbuf, size_t errlen);

#endif
