/* tests/unit/test_jose_rfc.c - the worked examples of RFC 7515 (App. A), RFC 7517 (App. A, B),
 * RFC 7520 (section 4), RFC 7638 (3.1) and RFC 8037 (App. A) through ferry's jose layer.
 *
 * Supported examples must verify (and, where the algorithm is deterministic, be reproduced
 * byte for byte by ferry's signer); unsupported ones (HS256, ES512, "none", JSON
 * serialisations) must be refused with the documented error code.
 *
 * Vectors are read at run time from $FERRY_SHARED/vectors/jose-rfc-examples (latchset/jose
 * naming: .jwk key, .jwkset key set, .jwsc compact JWS, .jwsf/.jwsg flattened/general JSON
 * JWS, .thp thumbprint, .payl detached payload). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <criterion/logging.h>
#include <criterion/options.h>
#include <jansson.h>

#include "basic/b64.h"
#include "ferry/error.h"
#include "ferry/jose.h"
#include "testutil.h"

/* The per-file vector counts are logged with cr_log_info; make them visible in the automake
 * .log (tests/criterion-tap.sh runs without --verbose). */
ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    if (criterion_options.logging_threshold > CRITERION_INFO)
        criterion_options.logging_threshold = CRITERION_INFO;
}

#define RFC_DIR "jose-rfc-examples"

/* ---- helpers ------------------------------------------------------------------------- */

/* Contents of a vector file (NUL-terminated, trailing whitespace removed). */
static char *rfc_text(const char *name, size_t *ret_len)
{
    char *buf;
    size_t len;

    buf = tu_read_vector(RFC_DIR, name, 1u << 20, &len);
    cr_assert_not_null(buf, "cannot read " RFC_DIR "/%s", name);
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
        buf[--len] = '\0';
    if (ret_len)
        *ret_len = len;
    return buf;
}

static json_t *rfc_json(const char *name)
{
    json_t *j = tu_load_vector_json(RFC_DIR, name);

    cr_assert_not_null(j, "cannot load " RFC_DIR "/%s", name);
    return j;
}

/* New copy of a JWK without its private members. */
static json_t *public_part(const json_t *jwk)
{
    static const char *const priv[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
    json_t *c = json_deep_copy(jwk);

    cr_assert_not_null(c);
    for (size_t i = 0; i < sizeof(priv) / sizeof(priv[0]); i++)
        (void)json_object_del(c, priv[i]);
    return c;
}

/* Import the public half of a .jwk file. */
static ferry_jwk *load_public(const char *name)
{
    json_t *full = rfc_json(name), *pub = public_part(full);
    ferry_jwk *key = NULL;
    int r = ferry_jwk_from_json(pub, 0, &key);

    cr_assert_eq(r, 0, "%s (public part): import failed: %d (%s)", name, r, ferry_strerror(r));
    cr_assert_not_null(key);
    cr_assert(!ferry_jwk_is_private(key));
    json_decref(pub);
    json_decref(full);
    return key;
}

/* Import a .jwk file with its private members. */
static ferry_jwk *load_private(const char *name)
{
    json_t *full = rfc_json(name);
    ferry_jwk *key = NULL;
    int r = ferry_jwk_from_json(full, 0, &key);

    cr_assert_lt(r, 0, "%s: private JWK imported without FERRY_JWK_ALLOW_PRIVATE", name);
    cr_assert_null(key);
    r = ferry_jwk_from_json(full, FERRY_JWK_ALLOW_PRIVATE, &key);
    cr_assert_eq(r, 0, "%s: import failed: %d (%s)", name, r, ferry_strerror(r));
    cr_assert(ferry_jwk_is_private(key));
    json_decref(full);
    return key;
}

/* Parse a .jwsc file and verify it with key; returns the verify result. */
static int verify_compact(const char *name, const ferry_jwk *key, ferry_alg want_alg)
{
    size_t len;
    char *tok = rfc_text(name, &len);
    ferry_jws *jws = NULL;
    int r = ferry_jws_parse(tok, len, &jws);

    cr_assert_eq(r, 0, "%s: parse failed: %d (%s)", name, r, ferry_strerror(r));
    cr_assert_eq(jws->alg, want_alg, "%s: alg %d", name, jws->alg);
    r = ferry_jws_verify(jws, key);
    ferry_jws_free(jws);
    free(tok);
    return r;
}

static int parse_file(const char *name)
{
    size_t len;
    char *tok = rfc_text(name, &len);
    ferry_jws *jws = NULL;
    int r = ferry_jws_parse(tok, len, &jws);

    cr_expect_eq(r == 0, jws != NULL);
    ferry_jws_free(jws);
    free(tok);
    return r;
}

/* The signature segment of a compact token, decoded (new buffer). */
static unsigned char *token_sig(const char *tok, size_t *ret_len)
{
    const char *s = strrchr(tok, '.');
    unsigned char *out = NULL;

    cr_assert_not_null(s);
    cr_assert_eq(ferry_b64url_decode_alloc(s + 1, strlen(s + 1), &out, ret_len), 0);
    return out;
}

/* Signing input ("header.payload") of a compact token, new string. */
static char *token_signing_input(const char *tok)
{
    const char *s = strrchr(tok, '.');

    cr_assert_not_null(s);
    return strndup(tok, (size_t)(s - tok));
}

/* ferry_jose_sign over the token's signing input must give exactly its signature. */
static void expect_sign_reproduces(const char *name, ferry_alg alg, const ferry_jwk *key)
{
    char *tok = rfc_text(name, NULL), *input = token_signing_input(tok);
    size_t want_len, got_len = 0;
    unsigned char *want = token_sig(tok, &want_len), *got = NULL;
    int r = ferry_jose_sign(alg, key, input, strlen(input), &got, &got_len);

    cr_assert_eq(r, 0, "%s: sign failed: %d (%s)", name, r, ferry_strerror(r));
    cr_expect_eq(got_len, want_len, "%s: signature length %zu, want %zu", name, got_len,
                 want_len);
    cr_expect(got_len == want_len && memcmp(got, want, want_len) == 0,
              "%s: ferry's signature differs from the RFC's", name);
    free(got);
    free(want);
    free(input);
    free(tok);
}

/* ---- RFC 7515 Appendix A ---------------------------------------------------------------- */

Test(rfc7515, a1_hs256_is_refused)
{
    json_t *k;
    ferry_jwk *key = NULL;

    TU_REQUIRE_VECTORS();
    cr_expect_eq(parse_file("rfc7515_A.1.jwsc"), -FERRY_EUNSUPPORTED);
    k = rfc_json("rfc7515_A.1.jwk");
    cr_expect_lt(ferry_jwk_from_json(k, FERRY_JWK_ALLOW_PRIVATE, &key), 0, "oct key imported");
    cr_expect_null(key);
    ferry_jwk_unref(key);
    json_decref(k);
}

Test(rfc7515, a2_rs256_verifies_and_is_reproduced)
{
    ferry_jwk *pub, *priv;

    TU_REQUIRE_VECTORS();
    pub = load_public("rfc7515_A.2.jwk");
    priv = load_private("rfc7515_A.2.jwk");
    cr_expect_eq(verify_compact("rfc7515_A.2.jwsc", pub, FERRY_ALG_RS256), 0);
    cr_expect_eq(verify_compact("rfc7515_A.2.jwsc", priv, FERRY_ALG_RS256), 0);
    /* The same key under another alg of its type: the signature must not verify as PS256. */
    {
        char *tok = rfc_text("rfc7515_A.2.jwsc", NULL), *in = token_signing_input(tok);
        size_t sl;
        unsigned char *sig = token_sig(tok, &sl);

        cr_expect_eq(ferry_jose_verify(FERRY_ALG_PS256, pub, in, strlen(in), sig, sl),
                     -FERRY_EBADSIG);
        cr_expect_eq(ferry_jose_verify(FERRY_ALG_RS384, pub, in, strlen(in), sig, sl),
                     -FERRY_EBADSIG);
        free(sig);
        free(in);
        free(tok);
    }
    /* RSASSA-PKCS1-v1_5 is deterministic. */
    expect_sign_reproduces("rfc7515_A.2.jwsc", FERRY_ALG_RS256, priv);
    ferry_jwk_unref(pub);
    ferry_jwk_unref(priv);
}

Test(rfc7515, a3_es256_verifies)
{
    ferry_jwk *pub, *priv;

    TU_REQUIRE_VECTORS();
    pub = load_public("rfc7515_A.3.jwk");
    priv = load_private("rfc7515_A.3.jwk");
    cr_expect_eq(verify_compact("rfc7515_A.3.jwsc", pub, FERRY_ALG_ES256), 0);
    cr_expect_eq(verify_compact("rfc7515_A.3.jwsc", priv, FERRY_ALG_ES256), 0);
    ferry_jwk_unref(pub);
    ferry_jwk_unref(priv);
}

Test(rfc7515, a4_es512_is_refused)
{
    json_t *k;
    ferry_jwk *key = NULL;
    int r;

    TU_REQUIRE_VECTORS();
    cr_expect_eq(ferry_alg_from_name("ES512"), FERRY_ALG_UNKNOWN);
    cr_expect_eq(parse_file("rfc7515_A.4.jwsc"), -FERRY_EUNSUPPORTED);
    k = rfc_json("rfc7515_A.4.jwk");
    r = ferry_jwk_from_json(k, FERRY_JWK_ALLOW_PRIVATE, &key);
    cr_expect_eq(r, -FERRY_EUNSUPPORTED, "P-521 key: %d (%s)", r, ferry_strerror(r));
    cr_expect_null(key);
    ferry_jwk_unref(key);
    json_decref(k);
}

Test(rfc7515, a5_alg_none_is_refused)
{
    char *tok, *forged;
    size_t len;
    ferry_jws *jws = NULL;
    int r;

    TU_REQUIRE_VECTORS();
    tok = rfc_text("rfc7515_A.5.jwsc", &len);
    cr_assert_eq(tok[len - 1], '.', "A.5 has an empty signature");
    r = ferry_jws_parse(tok, len, &jws);
    /* The empty signature segment is refused before the header is even looked at. */
    cr_expect_eq(r, -FERRY_EMALFORMED, "alg none: %d (%s)", r, ferry_strerror(r));
    cr_expect_null(jws);
    /* With a signature appended the "none" alg itself is what gets refused. */
    forged = malloc(len + 8);
    cr_assert_not_null(forged);
    snprintf(forged, len + 8, "%sAAAA", tok);
    r = ferry_jws_parse(forged, strlen(forged), &jws);
    cr_expect_eq(r, -FERRY_EUNSUPPORTED, "alg none with a signature: %d (%s)", r,
                 ferry_strerror(r));
    cr_expect_null(jws);
    cr_expect_eq(ferry_alg_from_name("none"), FERRY_ALG_UNKNOWN);
    free(forged);
    free(tok);
}

/* A.6 (general) and A.7 (flattened) JSON serialisations, and RFC 7520's JSON forms including
 * 4.6/4.7 (unprotected headers) and 4.8 (several signatures): the compact parser refuses all.*/
Test(rfc7515, json_serialisations_are_refused)
{
    static const char *const files[] = {
        "rfc7515_A.6.jwsg", "rfc7515_A.7.jwsf", "rfc7520_4.1.jwsf", "rfc7520_4.1.jwsg",
        "rfc7520_4.2.jwsf", "rfc7520_4.2.jwsg", "rfc7520_4.3.jwsf", "rfc7520_4.3.jwsg",
        "rfc7520_4.4.jwsf", "rfc7520_4.4.jwsg", "rfc7520_4.5.jwsf", "rfc7520_4.5.jwsg",
        "rfc7520_4.6.jwsf", "rfc7520_4.6.jwsg", "rfc7520_4.7.jwsf", "rfc7520_4.7.jwsg",
        "rfc7520_4.8.jwsg",
    };
    size_t n = 0;

    TU_REQUIRE_VECTORS();
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        int r = parse_file(files[i]);
        cr_expect_eq(r, -FERRY_EMALFORMED, "%s: %d (%s)", files[i], r, ferry_strerror(r));
        n++;
    }
    cr_log_info("%zu JSON-serialised JWS files refused by the compact parser", n);
}

/* ---- RFC 7520 section 4 ----------------------------------------------------------------- */

/* 4.1 RS256: verifies, and ferry_jws_sign reproduces the whole token (header
 * {"alg":"RS256","kid":"bilbo.baggins@hobbiton.example"} is exactly what ferry emits). */
Test(rfc7520, s4_1_rs256)
{
    ferry_jwk *pub, *priv;
    char *tok, *mine = NULL;
    ferry_jws *jws = NULL;
    size_t len;
    int r;

    TU_REQUIRE_VECTORS();
    pub = load_public("rfc7520_4.1.jwk");
    priv = load_private("rfc7520_4.1.jwk");
    cr_expect_str_eq(ferry_jwk_kid(pub), "bilbo.baggins@hobbiton.example");
    cr_expect_eq(verify_compact("rfc7520_4.1.jwsc", pub, FERRY_ALG_RS256), 0);
    expect_sign_reproduces("rfc7520_4.1.jwsc", FERRY_ALG_RS256, priv);

    tok = rfc_text("rfc7520_4.1.jwsc", &len);
    cr_assert_eq(ferry_jws_parse(tok, len, &jws), 0);
    cr_expect_str_eq(jws->kid, "bilbo.baggins@hobbiton.example");
    r = ferry_jws_sign(priv, FERRY_ALG_RS256, NULL, jws->payload, jws->payload_len, &mine);
    cr_assert_eq(r, 0, "ferry_jws_sign: %d (%s)", r, ferry_strerror(r));
    cr_expect_str_eq(mine, tok, "ferry_jws_sign does not reproduce RFC 7520 4.1");
    free(mine);
    ferry_jws_free(jws);
    free(tok);
    ferry_jwk_unref(pub);
    ferry_jwk_unref(priv);
}

Test(rfc7520, s4_2_ps384)
{
    ferry_jwk *pub;

    TU_REQUIRE_VECTORS();
    pub = load_public("rfc7520_4.2.jwk");
    cr_expect_eq(verify_compact("rfc7520_4.2.jwsc", pub, FERRY_ALG_PS384), 0);
    /* The JWK declares no alg: PS384 is allowed, ES256 is not (kty RSA). */
    cr_expect(ferry_jwk_allows(pub, FERRY_ALG_PS384));
    cr_expect(!ferry_jwk_allows(pub, FERRY_ALG_ES256));
    ferry_jwk_unref(pub);
}

Test(rfc7520, s4_3_es512_and_4_4_hs256_are_refused)
{
    json_t *k;
    ferry_jwk *key = NULL;

    TU_REQUIRE_VECTORS();
    cr_expect_eq(parse_file("rfc7520_4.3.jwsc"), -FERRY_EUNSUPPORTED);
    cr_expect_eq(parse_file("rfc7520_4.4.jwsc"), -FERRY_EUNSUPPORTED);
    k = rfc_json("rfc7520_4.3.jwk");
    cr_expect_eq(ferry_jwk_from_json(k, FERRY_JWK_ALLOW_PRIVATE, &key), -FERRY_EUNSUPPORTED);
    ferry_jwk_unref(key);
    key = NULL;
    json_decref(k);
    k = rfc_json("rfc7520_4.4.jwk");
    cr_expect_lt(ferry_jwk_from_json(k, FERRY_JWK_ALLOW_PRIVATE, &key), 0);
    ferry_jwk_unref(key);
    json_decref(k);
}

/* 4.5 is a detached-content JWS: compact form with an empty payload segment. ferry has no
 * detached-payload API. What it does:
 *  - the RFC token itself is HS256 and refused for that reason;
 *  - an empty payload is well-formed (Wycheproof has valid empty-payload tokens), so the same
 *    shape built from 4.1 (RS256) parses with payload_len 0 - and then fails to verify,
 *    because the signature covers the detached payload that ferry never sees. */
Test(rfc7520, s4_5_detached_payload)
{
    char *t45, *t41, *payl, *detached, *b64payl;
    const char *d1, *d2;
    ferry_jwk *pub;
    ferry_jws *jws = NULL;
    size_t l45, l41, lp;
    int r;

    TU_REQUIRE_VECTORS();
    t45 = rfc_text("rfc7520_4.5.jwsc", &l45);
    cr_assert_not_null(strstr(t45, ".."), "4.5 has an empty payload segment");
    cr_expect_eq(ferry_jws_parse(t45, l45, &jws), -FERRY_EUNSUPPORTED);
    cr_expect_null(jws);

    /* 4.1 with its payload detached. The .payl file is that payload (same text as 4.1). */
    t41 = rfc_text("rfc7520_4.1.jwsc", &l41);
    payl = rfc_text("rfc7520_4.5.payl", &lp);
    d1 = strchr(t41, '.');
    d2 = strchr(d1 + 1, '.');
    b64payl = ferry_b64url_encode_alloc(payl, strlen(payl));
    cr_assert_not_null(b64payl);
    cr_expect_eq(strlen(b64payl), (size_t)(d2 - d1 - 1));
    cr_expect(strncmp(b64payl, d1 + 1, (size_t)(d2 - d1 - 1)) == 0,
              "4.5.payl is not the 4.1 payload");
    detached = malloc(l41 + 1);
    cr_assert_not_null(detached);
    snprintf(detached, l41 + 1, "%.*s.%s", (int)(d1 - t41), t41, d2);
    cr_assert_not_null(strstr(detached, ".."));
    r = ferry_jws_parse(detached, strlen(detached), &jws);
    cr_assert_eq(r, 0, "compact JWS with an empty payload refused: %d (%s)", r,
                 ferry_strerror(r));
    cr_expect_eq(jws->payload_len, 0);
    pub = load_public("rfc7520_4.1.jwk");
    cr_expect_eq(ferry_jws_verify(jws, pub), -FERRY_EBADSIG,
                 "a detached-payload JWS verified without its payload");
    ferry_jws_free(jws);
    ferry_jwk_unref(pub);
    free(detached);
    free(b64payl);
    free(payl);
    free(t41);
    free(t45);
}

/* ---- RFC 7517 Appendix A and B ----------------------------------------------------------- */

/* A.1: public keys. The EC key is "use":"enc" (dropped), the RSA key (alg RS256, kid
 * 2011-04-29) is usable. */
Test(rfc7517, a1_public_key_set)
{
    json_t *doc;
    ferry_jwks *set = NULL;
    size_t skipped = 99;
    ferry_jwk *k;

    TU_REQUIRE_VECTORS();
    doc = rfc_json("rfc7517_A.1.jwkset");
    cr_assert_eq(ferry_jwks_from_json(doc, &set, &skipped), 0);
    cr_expect_eq(ferry_jwks_count(set), 1);
    cr_expect_eq(skipped, 1);
    cr_expect_null(ferry_jwks_find(set, "1"), "EC key with use enc is usable");
    k = ferry_jwks_find(set, "2011-04-29");
    cr_assert_not_null(k);
    cr_expect_eq(ferry_jwk_alg(k), FERRY_ALG_RS256);
    cr_expect(ferry_jwk_allows(k, FERRY_ALG_RS256));
    cr_expect(!ferry_jwk_allows(k, FERRY_ALG_PS256), "key declared RS256 allows PS256");
    cr_expect(!ferry_jwk_is_private(k));
    ferry_jwks_unref(set);
    json_decref(doc);
}

/* A.2: the same keys with private members. A key set never carries private keys into ferry
 * (ferry_jwks_from_json imports public keys only); one by one with FERRY_JWK_ALLOW_PRIVATE the
 * RSA key imports and has the same thumbprint as its A.1 public form. */
Test(rfc7517, a2_private_key_set)
{
    json_t *doc, *pubdoc;
    ferry_jwks *set = NULL, *pubset = NULL;
    ferry_jwk *ec = NULL, *rsa = NULL;
    size_t skipped = 99;
    char tp1[FERRY_THUMBPRINT_LEN + 1], tp2[FERRY_THUMBPRINT_LEN + 1];

    TU_REQUIRE_VECTORS();
    doc = rfc_json("rfc7517_A.2.jwkset");
    cr_assert_eq(ferry_jwks_from_json(doc, &set, &skipped), 0);
    cr_expect_eq(ferry_jwks_count(set), 0, "private keys imported through a key set");
    cr_expect_eq(skipped, 2);

    cr_expect_lt(ferry_jwk_from_json(json_array_get(json_object_get(doc, "keys"), 0),
                                     FERRY_JWK_ALLOW_PRIVATE, &ec),
                 0, "EC key with use enc imported");
    ferry_jwk_unref(ec);
    cr_assert_eq(ferry_jwk_from_json(json_array_get(json_object_get(doc, "keys"), 1),
                                     FERRY_JWK_ALLOW_PRIVATE, &rsa),
                 0);
    cr_expect(ferry_jwk_is_private(rsa));
    cr_expect_str_eq(ferry_jwk_kid(rsa), "2011-04-29");

    pubdoc = rfc_json("rfc7517_A.1.jwkset");
    cr_assert_eq(ferry_jwks_from_json(pubdoc, &pubset, NULL), 0);
    cr_assert_eq(ferry_jwk_thumbprint(rsa, tp1), 0);
    cr_assert_eq(ferry_jwk_thumbprint(ferry_jwks_find(pubset, "2011-04-29"), tp2), 0);
    cr_expect_str_eq(tp1, tp2);

    ferry_jwk_unref(rsa);
    ferry_jwks_unref(set);
    ferry_jwks_unref(pubset);
    json_decref(pubdoc);
    json_decref(doc);
}

/* A.3: symmetric keys only: nothing usable. */
Test(rfc7517, a3_symmetric_key_set)
{
    json_t *doc;
    ferry_jwks *set = NULL;
    size_t skipped = 99;

    TU_REQUIRE_VECTORS();
    doc = rfc_json("rfc7517_A.3.jwkset");
    cr_assert_eq(ferry_jwks_from_json(doc, &set, &skipped), 0);
    cr_expect_eq(ferry_jwks_count(set), 0);
    cr_expect_eq(skipped, 2);
    ferry_jwks_unref(set);
    json_decref(doc);
}

/* ---- RFC 7638 3.1 -------------------------------------------------------------------- */

Test(rfc7638, s3_1_thumbprint)
{
    ferry_jwk *key = NULL;
    json_t *k;
    char *want, tp[FERRY_THUMBPRINT_LEN + 1];

    TU_REQUIRE_VECTORS();
    k = rfc_json("rfc7638_3.1.jwk");
    want = rfc_text("rfc7638_3.1.thp", NULL);
    cr_assert_str_eq(want, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    cr_assert_eq(ferry_jwk_from_json(k, 0, &key), 0);
    cr_assert_eq(ferry_jwk_thumbprint(key, tp), 0);
    cr_expect_str_eq(tp, want);
    /* The JWK's own kid is kept, not replaced by the thumbprint. */
    cr_expect_str_eq(ferry_jwk_kid(key), "2011-04-29");
    ferry_jwk_unref(key);
    free(want);
    json_decref(k);
}

/* ---- RFC 8037 Appendix A ---------------------------------------------------------------- */

Test(rfc8037, a1_a3_keys_and_thumbprint)
{
    ferry_jwk *priv, *pub;
    char *want, tp[FERRY_THUMBPRINT_LEN + 1];
    json_t *exported = NULL;

    TU_REQUIRE_VECTORS();
    want = rfc_text("rfc8037_A.3.thp", NULL);
    cr_assert_str_eq(want, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    priv = load_private("rfc8037_A.1.jwk");
    pub = load_public("rfc8037_A.2.jwk");
    cr_assert_eq(ferry_jwk_thumbprint(pub, tp), 0);
    cr_expect_str_eq(tp, want);
    cr_assert_eq(ferry_jwk_thumbprint(priv, tp), 0);
    cr_expect_str_eq(tp, want);
    /* A.1's public half is A.2. */
    cr_assert_eq(ferry_jwk_to_public_json(priv, &exported), 0);
    cr_expect_str_eq(json_string_value(json_object_get(exported, "x")),
                     "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
    cr_expect_null(json_object_get(exported, "d"), "private member exported");
    cr_expect(ferry_jwk_allows(pub, FERRY_ALG_EDDSA));
    /* ferry uses the RFC 8037 name "EdDSA"; the fully-specified RFC 9864 name "Ed25519" is
     * not accepted as an alg. */
    cr_expect_eq(ferry_alg_from_name("EdDSA"), FERRY_ALG_EDDSA);
    cr_expect_eq(ferry_alg_from_name("Ed25519"), FERRY_ALG_UNKNOWN);
    json_decref(exported);
    ferry_jwk_unref(priv);
    ferry_jwk_unref(pub);
    free(want);
}

/* A.4: Ed25519 is deterministic, so the RFC's JWS must come out byte for byte, both from
 * ferry_jose_sign over the exact signing input and from ferry_jws_sign (the A.1 key has no
 * kid, so ferry's header is exactly {"alg":"EdDSA"}). It verifies with the A.2 key. */
Test(rfc8037, a4_eddsa_reproduced_and_verified)
{
    static const char payload[] = "Example of Ed25519 signing";
    ferry_jwk *priv, *pub;
    char *tok, *mine = NULL;
    ferry_jws *jws = NULL;
    size_t len;
    int r;

    TU_REQUIRE_VECTORS();
    priv = load_private("rfc8037_A.1.jwk");
    pub = load_public("rfc8037_A.2.jwk");
    tok = rfc_text("rfc8037_A.4.jwsc", &len);

    expect_sign_reproduces("rfc8037_A.4.jwsc", FERRY_ALG_EDDSA, priv);
    cr_assert_eq(ferry_jws_parse(tok, len, &jws), 0);
    cr_expect_eq(jws->alg, FERRY_ALG_EDDSA);
    cr_expect_eq(jws->payload_len, sizeof(payload) - 1);
    cr_expect(memcmp(jws->payload, payload, sizeof(payload) - 1) == 0);
    cr_expect_eq(ferry_jws_verify(jws, pub), 0);
    cr_expect_eq(ferry_jws_verify(jws, priv), 0);

    cr_expect_null(ferry_jwk_kid(priv), "a JWK without kid got one");
    r = ferry_jws_sign(priv, FERRY_ALG_EDDSA, NULL, payload, sizeof(payload) - 1, &mine);
    cr_assert_eq(r, 0, "ferry_jws_sign: %d (%s)", r, ferry_strerror(r));
    cr_expect_str_eq(mine, tok, "ferry_jws_sign does not reproduce RFC 8037 A.4");

    /* One bit of the signature flipped: refused. */
    {
        unsigned char bad[64];

        cr_assert_eq(jws->sig_len, sizeof(bad));
        memcpy(bad, jws->sig, sizeof(bad));
        bad[0] ^= 1;
        cr_expect_eq(ferry_jose_verify(FERRY_ALG_EDDSA, pub, jws->signing_input,
                                       jws->signing_input_len, bad, sizeof(bad)),
                     -FERRY_EBADSIG);
    }

    free(mine);
    ferry_jws_free(jws);
    free(tok);
    ferry_jwk_unref(priv);
    ferry_jwk_unref(pub);
}
