/* tests/fuzz/fuzz_jwks.c - libFuzzer target: a hostile JWK Set through key import.
 *
 * Input bytes are a JWKS document. Properties: no crash or sanitizer report; every imported
 * key exports a public JWK with no private member, and that export re-imports to a key with
 * the same RFC 7638 thumbprint. Built and run by tests/fuzz/run.sh.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/jose.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const private_members[] = { "d", "p", "q", "dp", "dq", "qi", "k" };
    ferry_jwks *set = NULL;
    size_t skipped = 0;

    if (ferry_jwks_from_buffer(data, size, &set, &skipped) < 0)
        return 0;
    for (size_t i = 0; i < ferry_jwks_count(set); i++) {
        ferry_jwk *k = ferry_jwks_get(set, i), *again = NULL;
        char t1[FERRY_THUMBPRINT_LEN + 1], t2[FERRY_THUMBPRINT_LEN + 1];
        json_t *pub = NULL;

        if (!k || ferry_jwk_thumbprint(k, t1) < 0 || ferry_jwk_to_public_json(k, &pub) < 0)
            abort();
        for (size_t m = 0; m < sizeof(private_members) / sizeof(private_members[0]); m++)
            if (json_object_get(pub, private_members[m]))
                abort(); /* private material exported */
        if (ferry_jwk_from_json(pub, 0, &again) < 0 || ferry_jwk_thumbprint(again, t2) < 0 ||
            strcmp(t1, t2) != 0)
            abort(); /* export does not round-trip */
        ferry_jwk_unref(again);
        json_decref(pub);
    }
    ferry_jwks_unref(set);
    return 0;
}
