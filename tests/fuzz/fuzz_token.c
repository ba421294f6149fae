/* tests/fuzz/fuzz_token.c - libFuzzer target: a hostile token through the whole verifier.
 *
 * Input bytes are a compact token. They go through ferry_jws_parse (+ ferry_jws_verify with
 * every key of a fixed set) and through ferry_oidc_verify against an issuer with an inline
 * key set, with a fixed clock and one-time use, so the claims parser, the profile checks and
 * the replay cache are exercised too. Properties: no crash, no sanitizer report, and nothing
 * is ever accepted (no input can carry a valid signature from keys generated at start-up).
 * Built and run by tests/fuzz/run.sh.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ferry/jose.h"
#include "ferry/oidc.h"

static ferry_jwk *keys[3];
static ferry_oidc *oidc;

static int64_t fixed_clock(void *userdata)
{
    (void)userdata;
    return 1700000000;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const ferry_alg algs[] = { FERRY_ALG_ES256, FERRY_ALG_RS256, FERRY_ALG_EDDSA };
    ferry_oidc_options opts = { .replay_cache_max = 1024, .clock = fixed_clock };
    json_t *set = json_array(), *conf;
    char err[256];

    (void)argc;
    (void)argv;
    for (size_t i = 0; i < 3; i++) {
        json_t *pub = NULL;
        if (ferry_jwk_generate(algs[i], &keys[i]) < 0 ||
            ferry_jwk_to_public_json(keys[i], &pub) < 0 || json_array_append_new(set, pub) < 0)
            abort();
    }
    conf = json_pack("{s:s, s:[s], s:[s,s,s], s:s, s:{s:o}}", "issuer", "https://idp.fuzz",
                     "audiences", "ferry", "algorithms", "ES256", "RS256", "EdDSA", "profile",
                     "access_token", "jwks", "keys", set);
    if (!conf || ferry_oidc_new(&opts, &oidc) < 0 ||
        ferry_oidc_add_issuer(oidc, conf, err, sizeof(err)) < 0) {
        fprintf(stderr, "fuzz_token: setup failed: %s\n", err);
        abort();
    }
    json_decref(conf);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ferry_verify_options vo = { .consume_jti = true };
    ferry_verify_result res;
    ferry_identity *id = NULL;
    ferry_jws *jws = NULL;

    if (ferry_jws_parse((const char *)data, size, &jws) == 0) {
        for (size_t i = 0; i < 3; i++)
            if (ferry_jws_verify(jws, keys[i]) == 0)
                abort(); /* a forged signature verified */
        ferry_jws_free(jws);
    }
    if (ferry_oidc_verify(oidc, (const char *)data, size, &vo, &id, &res) == 0)
        abort(); /* a token nobody could sign was accepted */
    ferry_identity_free(id);
    return 0;
}
