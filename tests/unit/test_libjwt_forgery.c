/* tests/unit/test_libjwt_forgery.c - why libjwt 1.10.2 never decides validity in ferry.
 *
 * Each test forges a token the classic ways (RFC 8725 §2.1, §3.1) and shows, side by side,
 * that libjwt 1.10.2 (Debian 12) ACCEPTS it while ferry's verifier REFUSES it:
 *   - HS256 keyed with the issuer's RSA public key (PEM bytes used as the HMAC secret);
 *   - the same with the algorithm name in lower case ("hs256");
 *   - a token checked with a NULL key (libjwt skips signature verification entirely).
 * If a libjwt upgrade stops accepting a forgery, the libjwt assertion fails: that is wanted,
 * so that this file (and the brief) are revisited rather than silently going stale.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>

#include "basic/b64.h"
#include "ferry/error.h"
#include "ferry/jose.h"
#include "ferry/oidc.h"

#define ISSUER "https://idp.example.test"
#define NOW 1700000000

static char *pubpem;
static size_t pubpem_len;
static ferry_oidc *oidc;

/* An RSA-2048 issuer whose public key is published both as PEM (for libjwt) and as a JWKS
 * (for ferry), trusted by ferry for RS256 only. */
static void setup(void)
{
    EVP_PKEY *pkey = EVP_RSA_gen(2048);
    BIO *bio = BIO_new(BIO_s_mem());
    ferry_jwk *jwk = NULL;
    json_t *pub = NULL, *conf;
    char err[256] = "";
    char *p;
    long n;

    cr_assert_not_null(pkey);
    cr_assert_not_null(bio);
    cr_assert_eq(PEM_write_bio_PUBKEY(bio, pkey), 1);
    n = BIO_get_mem_data(bio, &p);
    cr_assert_gt(n, 0);
    pubpem = strndup(p, (size_t)n);
    pubpem_len = (size_t)n;
    BIO_free(bio);
    EVP_PKEY_free(pkey);

    cr_assert_eq(ferry_jwk_from_pem(pubpem, pubpem_len, &jwk), 0);
    cr_assert_eq(ferry_jwk_to_public_json(jwk, &pub), 0);
    ferry_jwk_unref(jwk);
    conf = json_pack("{s:s, s:[s], s:[s], s:{s:[o]}}", "issuer", ISSUER, "audiences", "ferry",
                     "algorithms", "RS256", "jwks", "keys", pub);
    cr_assert_not_null(conf);
    cr_assert_eq(ferry_oidc_new(NULL, &oidc), 0);
    cr_assert_eq(ferry_oidc_add_issuer(oidc, conf, err, sizeof(err)), 0, "config: %s", err);
    json_decref(conf);
}

static void teardown(void)
{
    ferry_oidc_free(oidc);
    oidc = NULL;
    free(pubpem);
    pubpem = NULL;
}

/* header.payload.HMAC-SHA256(secret, header.payload), all base64url. New string. */
static char *forge_hs256(const char *alg_name, const void *secret, size_t secret_len)
{
    char header[128], payload[256], *h, *p, *tok;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t n;

    snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg_name);
    snprintf(payload, sizeof(payload),
             "{\"iss\":\"%s\",\"sub\":\"system:serviceaccount:kube-system:admin\","
             "\"aud\":\"ferry\",\"iat\":%d,\"exp\":%d}",
             ISSUER, NOW, NOW + 600);
    h = ferry_b64url_encode_alloc(header, strlen(header));
    p = ferry_b64url_encode_alloc(payload, strlen(payload));
    cr_assert(h && p);
    n = strlen(h) + strlen(p) + 2 + 64;
    tok = malloc(n);
    cr_assert_not_null(tok);
    snprintf(tok, n, "%s.%s", h, p);
    cr_assert_not_null(HMAC(EVP_sha256(), secret, (int)secret_len, (unsigned char *)tok,
                            strlen(tok), mac, &maclen));
    size_t off = strlen(tok);
    tok[off++] = '.';
    ferry_b64url_encode(mac, maclen, tok + off);
    free(h);
    free(p);
    return tok;
}

static void assert_ferry_refuses(const char *tok, ferry_reason want)
{
    ferry_verify_options vo = { .now = NOW };
    ferry_verify_result res;
    ferry_identity *id = NULL;
    int r = ferry_oidc_verify(oidc, tok, strlen(tok), &vo, &id, &res);

    cr_assert_eq(r, -FERRY_EREFUSED, "ferry accepted a forged token (r=%d)", r);
    cr_assert_null(id);
    cr_assert_eq(res.reason, want, "reason %s, expected %s", ferry_reason_name(res.reason),
                 ferry_reason_name(want));
}

TestSuite(libjwt_forgery, .init = setup, .fini = teardown);

Test(libjwt_forgery, hs256_keyed_with_rsa_public_key)
{
    char *tok = forge_hs256("HS256", pubpem, pubpem_len);
    jwt_t *jwt = NULL;

    /* libjwt 1.10.2 takes the PEM as an HMAC secret because the token says HS256. */
    cr_expect_eq(jwt_decode(&jwt, tok, (const unsigned char *)pubpem, (int)pubpem_len), 0,
                 "libjwt 1.10.2 no longer accepts the HS256/public-key forgery: revisit");
    if (jwt)
        cr_expect_str_eq(jwt_get_grant(jwt, "sub"), "system:serviceaccount:kube-system:admin");
    jwt_free(jwt);

    /* ferry: HS* is not a supported algorithm at the JWS layer, whatever the key. */
    ferry_jws *jws = NULL;
    cr_assert_eq(ferry_jws_parse(tok, strlen(tok), &jws), -FERRY_EUNSUPPORTED);
    cr_assert_null(jws);
    assert_ferry_refuses(tok, FERRY_REASON_ALG_NOT_ALLOWED);
    free(tok);
}

Test(libjwt_forgery, alg_name_in_any_case)
{
    char *tok = forge_hs256("hs256", pubpem, pubpem_len);
    jwt_t *jwt = NULL;

    cr_expect_eq(jwt_decode(&jwt, tok, (const unsigned char *)pubpem, (int)pubpem_len), 0,
                 "libjwt 1.10.2 no longer accepts a lower-case alg: revisit");
    jwt_free(jwt);
    assert_ferry_refuses(tok, FERRY_REASON_ALG_NOT_ALLOWED);
    free(tok);
}

Test(libjwt_forgery, null_key_skips_verification)
{
    /* A token that claims RS256 but carries a signature of zeros. */
    char *tok = forge_hs256("RS256", "x", 1);
    char *dot = strrchr(tok, '.');
    unsigned char zeros[256] = { 0 };
    size_t n = (size_t)(dot - tok) + 1;
    char *forged = malloc(n + ferry_b64url_encoded_len(sizeof(zeros)) + 1);
    jwt_t *jwt = NULL;

    cr_assert_not_null(forged);
    memcpy(forged, tok, n);
    ferry_b64url_encode(zeros, sizeof(zeros), forged + n);

    cr_expect_eq(jwt_decode(&jwt, forged, NULL, 0), 0,
                 "libjwt 1.10.2 no longer accepts any token with a NULL key: revisit");
    jwt_free(jwt);

    /* ferry never reaches a verify call without a key, and this signature is wrong. */
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_RS256, NULL, "a", 1, zeros, sizeof(zeros)),
                 -FERRY_ENOKEY);
    assert_ferry_refuses(forged, FERRY_REASON_BAD_SIGNATURE);
    free(forged);
    free(tok);
}
