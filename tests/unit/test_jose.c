/* tests/unit/test_jose.c - unit tests of the jose module (include/ferry/jose.h).
 *
 * Covers the SECURITY-TESTS rows that live at the JWS/JWK layer: A1-A7, A9, B1-B6, D6, E1,
 * E4, E8. Keys are generated fresh (ferry_jwk_generate, or OpenSSL directly for 2048-bit
 * RSA and for keys the library must refuse); hostile signatures are crafted with OpenSSL.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "basic/b64.h"
#include "ferry/error.h"
#include "ferry/jose.h"
#include "testutil.h"

/* testutil.h's TU_REQUIRE_VECTORS uses cr_fatal, which Criterion 2.4.1 defines only in
 * <criterion/new/assert.h> (that header would replace the classic cr_assert_* macros). */
#ifndef cr_fatal
#define cr_fatal(...) cr_assert_fail(__VA_ARGS__)
#endif

/* ---- helpers ------------------------------------------------------------------------ */

static char *b64(const void *p, size_t n)
{
    char *s = ferry_b64url_encode_alloc(p, n);
    cr_assert_not_null(s);
    return s;
}

/* "b64(hdr).b64(payload).b64(sig)" as a new string. */
static char *mk_token(const char *hdr, size_t hdr_len, const void *payload, size_t plen,
                      const void *sig, size_t slen)
{
    char *h = b64(hdr, hdr_len), *p = b64(payload, plen), *s = b64(sig, slen);
    size_t n = strlen(h) + strlen(p) + strlen(s) + 3;
    char *t = malloc(n);

    cr_assert_not_null(t);
    snprintf(t, n, "%s.%s.%s", h, p, s);
    free(h);
    free(p);
    free(s);
    return t;
}

/* Token with a header given as a C string, a short payload and a dummy 64-byte signature. */
static char *hdr_token(const char *hdr)
{
    static const unsigned char sig[64] = {1, 2, 3};
    return mk_token(hdr, strlen(hdr), "{}", 2, sig, sizeof(sig));
}

static int parse_rc(const char *tok)
{
    ferry_jws *jws = NULL;
    int r = ferry_jws_parse(tok, strlen(tok), &jws);

    if (r == 0)
        cr_assert_not_null(jws);
    else
        cr_assert_null(jws, "ret_jws written on failure");
    ferry_jws_free(jws);
    return r;
}

/* Parse and verify: 0 when both succeed, else the first error. */
static int parse_verify(const char *tok, size_t len, const ferry_jwk *key)
{
    ferry_jws *jws = NULL;
    int r = ferry_jws_parse(tok, len, &jws);

    if (r == 0)
        r = ferry_jws_verify(jws, key);
    ferry_jws_free(jws);
    return r;
}

static ferry_jwk *gen(ferry_alg alg)
{
    ferry_jwk *k = NULL;
    int r = ferry_jwk_generate(alg, &k);

    cr_assert_eq(r, 0, "generate %s: %s", ferry_alg_name(alg), ferry_strerror(r));
    cr_assert_not_null(k);
    return k;
}

static char *pkey_pem(EVP_PKEY *pkey, bool priv, size_t *ret_len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL, *out;
    long n;

    cr_assert_not_null(bio);
    if (priv)
        cr_assert_eq(PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL), 1);
    else
        cr_assert_eq(PEM_write_bio_PUBKEY(bio, pkey), 1);
    n = BIO_get_mem_data(bio, &data);
    cr_assert_gt(n, 0);
    out = malloc((size_t)n + 1);
    cr_assert_not_null(out);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    *ret_len = (size_t)n;
    BIO_free(bio);
    return out;
}

/* A key made by OpenSSL directly, imported through PEM (private when priv). */
static ferry_jwk *from_openssl(EVP_PKEY *pkey, bool priv)
{
    ferry_jwk *k = NULL;
    size_t len;
    char *pem = pkey_pem(pkey, priv, &len);
    int r = ferry_jwk_from_pem(pem, len, &k);

    cr_assert_eq(r, 0, "pem import: %s", ferry_strerror(r));
    free(pem);
    return k;
}

static ferry_jwk *rsa2048(void)
{
    EVP_PKEY *p = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    ferry_jwk *k;

    cr_assert_not_null(p);
    k = from_openssl(p, true);
    EVP_PKEY_free(p);
    return k;
}

static char *sign_token(const ferry_jwk *k, ferry_alg alg, const char *payload)
{
    char *tok = NULL;
    int r = ferry_jws_sign(k, alg, "JWT", payload, strlen(payload), &tok);

    cr_assert_eq(r, 0, "sign %s: %s", ferry_alg_name(alg), ferry_strerror(r));
    return tok;
}

static json_t *pub_json(const ferry_jwk *k)
{
    json_t *o = NULL;
    cr_assert_eq(ferry_jwk_to_public_json(k, &o), 0);
    return o;
}

static json_t *jparse(const char *s)
{
    json_error_t err;
    json_t *o = json_loadb(s, strlen(s), JSON_REJECT_DUPLICATES, &err);
    cr_assert_not_null(o, "bad test JSON: %s", err.text);
    return o;
}

static int import_json(const char *s, unsigned flags)
{
    json_t *o = jparse(s);
    ferry_jwk *k = NULL;
    int r = ferry_jwk_from_json(o, flags, &k);

    if (r == 0)
        cr_assert_not_null(k);
    else
        cr_assert_null(k);
    ferry_jwk_unref(k);
    json_decref(o);
    return r;
}

static int import_obj(json_t *o, unsigned flags)
{
    ferry_jwk *k = NULL;
    int r = ferry_jwk_from_json(o, flags, &k);

    ferry_jwk_unref(k);
    return r;
}

static void set_b64(json_t *o, const char *name, const void *p, size_t n)
{
    char *s = b64(p, n);
    cr_assert_eq(json_object_set_new(o, name, json_string(s)), 0);
    free(s);
}

static json_t *rsa_jwk_bn(const BIGNUM *n, const BIGNUM *e)
{
    unsigned char nb[1100], eb[16];
    int nl = BN_bn2bin(n, nb), el = BN_bn2bin(e, eb);
    json_t *o = json_pack("{s:s}", "kty", "RSA");

    cr_assert(nl > 0 && el > 0 && o);
    set_b64(o, "n", nb, (size_t)nl);
    set_b64(o, "e", eb, (size_t)el);
    return o;
}

static json_t *rsa_jwk_of(EVP_PKEY *p)
{
    BIGNUM *n = NULL, *e = NULL;
    json_t *o;

    cr_assert_eq(EVP_PKEY_get_bn_param(p, OSSL_PKEY_PARAM_RSA_N, &n), 1);
    cr_assert_eq(EVP_PKEY_get_bn_param(p, OSSL_PKEY_PARAM_RSA_E, &e), 1);
    o = rsa_jwk_bn(n, e);
    BN_free(n);
    BN_free(e);
    return o;
}

/* Raw signature with OpenSSL over SHA-x(msg), with the given padding and PSS salt length. */
static size_t ossl_sign(EVP_PKEY *pkey, const EVP_MD *md, int padding, int saltlen,
                        const void *msg, size_t msg_len, unsigned char *sig, size_t cap)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    unsigned char dg[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    size_t slen = cap;

    cr_assert_not_null(ctx);
    cr_assert_eq(EVP_Digest(msg, msg_len, dg, &dlen, md, NULL), 1);
    cr_assert_eq(EVP_PKEY_sign_init(ctx), 1);
    cr_assert_gt(EVP_PKEY_CTX_set_signature_md(ctx, md), 0);
    if (padding) {
        cr_assert_gt(EVP_PKEY_CTX_set_rsa_padding(ctx, padding), 0);
        if (padding == RSA_PKCS1_PSS_PADDING) {
            cr_assert_gt(EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, saltlen), 0);
            cr_assert_gt(EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md), 0);
        }
    }
    cr_assert_eq(EVP_PKEY_sign(ctx, sig, &slen, dg, dlen), 1);
    EVP_PKEY_CTX_free(ctx);
    return slen;
}

/* ---- algorithm names ------------------------------------------------------------------ */

Test(alg, names_exact)
{
    static const char *const good[] = {"RS256", "RS384", "RS512", "PS256", "PS384",
                                       "PS512", "ES256", "ES384", "EdDSA"};
    static const char *const bad[] = {"none", "None", "NONE", "HS256", "HS384", "HS512",
                                      "rs256", "es256", "eddsa", "EDDSA", "ES256 ", " ES256",
                                      "ES512", "ES256K", "Ed25519", "", "RS256\n", "PS256\t"};

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ferry_alg a = ferry_alg_from_name(good[i]);
        cr_assert_neq(a, FERRY_ALG_UNKNOWN, "%s", good[i]);
        cr_assert_str_eq(ferry_alg_name(a), good[i]);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(ferry_alg_from_name(bad[i]), FERRY_ALG_UNKNOWN, "'%s'", bad[i]);
    cr_assert_eq(ferry_alg_from_name(NULL), FERRY_ALG_UNKNOWN);
    cr_assert_null(ferry_alg_name(FERRY_ALG_UNKNOWN));
    cr_assert_null(ferry_alg_name(FERRY_ALG_MAX));
    cr_assert_null(ferry_alg_name((ferry_alg)-1));
}

/* ---- round trips --------------------------------------------------------------------- */

static void roundtrip(ferry_jwk *k, ferry_alg alg)
{
    char *tok = sign_token(k, alg, "{\"sub\":\"x\"}");
    ferry_jws *jws = NULL;
    json_t *pub;
    ferry_jwk *pk = NULL;

    cr_assert_eq(ferry_jws_parse(tok, strlen(tok), &jws), 0);
    cr_assert_eq(jws->alg, alg);
    cr_assert_str_eq(jws->typ, "JWT");
    cr_assert_str_eq(jws->kid, ferry_jwk_kid(k));
    cr_assert_eq(jws->payload_len, 11);
    cr_assert_str_eq((char *)jws->payload, "{\"sub\":\"x\"}");
    cr_assert_eq(ferry_jws_verify(jws, k), 0);
    /* The public half alone verifies too. */
    pub = pub_json(k);
    cr_assert_eq(ferry_jwk_from_json(pub, 0, &pk), 0);
    cr_assert_not(ferry_jwk_is_private(pk));
    cr_assert_eq(ferry_jws_verify(jws, pk), 0);
    /* The public key cannot sign. */
    cr_assert_eq(ferry_jws_sign(pk, alg, NULL, "x", 1, &(char *){NULL}), -FERRY_ENOKEY);
    ferry_jwk_unref(pk);
    json_decref(pub);
    ferry_jws_free(jws);
    free(tok);
}

Test(jws, roundtrip_every_alg, .timeout = 120)
{
    ferry_jwk *rsa = gen(FERRY_ALG_PS256);
    ferry_jwk *rsa2 = rsa2048();

    cr_assert(ferry_jwk_is_private(rsa));
    cr_assert_eq(EVP_PKEY_get_bits(ferry_jwk_evp_pkey(rsa)), 3072);
    for (ferry_alg a = FERRY_ALG_RS256; a <= FERRY_ALG_PS512; a++) {
        /* rsa declares PS256; only that alg is allowed with it. */
        if (a == FERRY_ALG_PS256)
            roundtrip(rsa, a);
        else
            cr_assert_not(ferry_jwk_allows(rsa, a));
        roundtrip(rsa2, a);
    }
    ferry_jwk_unref(rsa);
    ferry_jwk_unref(rsa2);
    for (ferry_alg a = FERRY_ALG_ES256; a <= FERRY_ALG_EDDSA; a++) {
        ferry_jwk *k = gen(a);
        cr_assert_eq(ferry_jwk_alg(k), a);
        roundtrip(k, a);
        ferry_jwk_unref(k);
    }
}

Test(jws, payload_any_bytes)
{
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    static const unsigned char bin[] = {0x00, 0xff, 0x80, '.', 0x00, 'x'};
    char *tok = NULL;
    ferry_jws *jws = NULL;

    cr_assert_eq(ferry_jws_sign(k, FERRY_ALG_ES256, NULL, bin, sizeof(bin), &tok), 0);
    cr_assert_eq(ferry_jws_parse(tok, strlen(tok), &jws), 0);
    cr_assert_eq(jws->payload_len, sizeof(bin));
    cr_assert_eq(memcmp(jws->payload, bin, sizeof(bin)), 0);
    cr_assert_eq(jws->payload[jws->payload_len], 0, "payload is NUL-terminated");
    cr_assert_null(jws->typ);
    cr_assert_eq(ferry_jws_verify(jws, k), 0);
    ferry_jws_free(jws);
    free(tok);
    /* An empty payload is a valid JWS. */
    cr_assert_eq(ferry_jws_sign(k, FERRY_ALG_ES256, NULL, NULL, 0, &tok), 0);
    cr_assert_eq(parse_verify(tok, strlen(tok), k), 0);
    free(tok);
    ferry_jwk_unref(k);
}

/* E1: header is exactly {"alg","kid","typ"} in that order, compact. */
Test(jws, sign_header_exact)
{
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    char *tok = NULL, expect[256];
    unsigned char hdr[512];
    size_t hlen;
    const char *dot;

    cr_assert_eq(ferry_jws_sign(k, FERRY_ALG_ES256, "at+jwt", "{}", 2, &tok), 0);
    dot = strchr(tok, '.');
    cr_assert_eq(ferry_b64url_decode(tok, (size_t)(dot - tok), hdr, &hlen), 0);
    hdr[hlen] = 0;
    snprintf(expect, sizeof(expect), "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"at+jwt\"}",
             ferry_jwk_kid(k));
    cr_assert_str_eq((char *)hdr, expect);
    free(tok);

    cr_assert_eq(ferry_jws_sign(k, FERRY_ALG_ES256, NULL, "{}", 2, &tok), 0);
    dot = strchr(tok, '.');
    cr_assert_eq(ferry_b64url_decode(tok, (size_t)(dot - tok), hdr, &hlen), 0);
    hdr[hlen] = 0;
    snprintf(expect, sizeof(expect), "{\"alg\":\"ES256\",\"kid\":\"%s\"}", ferry_jwk_kid(k));
    cr_assert_str_eq((char *)hdr, expect);
    free(tok);

    /* Invalid UTF-8 typ, wrong alg for the key, too-large payload. */
    cr_assert_eq(ferry_jws_sign(k, FERRY_ALG_ES256, "\xff", "{}", 2, &tok), -EINVAL);
    cr_assert_eq(ferry_jws_sign(k, FERRY_ALG_ES384, NULL, "{}", 2, &tok), -FERRY_EKEYMISMATCH);
    cr_assert_eq(ferry_jws_sign(k, FERRY_ALG_UNKNOWN, NULL, "{}", 2, &tok), -FERRY_EUNSUPPORTED);
    cr_assert_eq(ferry_jws_sign(NULL, FERRY_ALG_ES256, NULL, "{}", 2, &tok), -FERRY_ENOKEY);
    {
        size_t big = FERRY_JWS_MAX_LEN;
        char *p = calloc(1, big);
        cr_assert_eq(ferry_jws_sign(k, FERRY_ALG_ES256, NULL, p, big, &tok), -FERRY_ETOOBIG);
        /* Largest payload that still fits is accepted by our own parser. */
        free(p);
    }
    ferry_jwk_unref(k);
}

/* E4: RFC 8037 A.4 reproduced byte-for-byte (the A.1 key has no kid, so the header is
 * exactly {"alg":"EdDSA"}). */
Test(jws, rfc8037_a4_exact)
{
    static const char jwk[] = "{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                              "\"d\":\"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\","
                              "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}";
    static const char expect[] =
        "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-"
        "09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    json_t *o = jparse(jwk);
    ferry_jwk *k = NULL;
    char *tok = NULL;

    cr_assert_eq(ferry_jwk_from_json(o, 0, &k), -FERRY_EUNSUPPORTED, "private without flag");
    cr_assert_eq(ferry_jwk_from_json(o, FERRY_JWK_ALLOW_PRIVATE, &k), 0);
    cr_assert(ferry_jwk_is_private(k));
    cr_assert_null(ferry_jwk_kid(k));
    cr_assert_eq(ferry_jws_sign(k, FERRY_ALG_EDDSA, NULL, "Example of Ed25519 signing", 26, &tok),
                 0);
    cr_assert_str_eq(tok, expect);
    cr_assert_eq(parse_verify(expect, strlen(expect), k), 0);
    free(tok);
    ferry_jwk_unref(k);
    json_decref(o);
}

/* ---- A1: size limits ---------------------------------------------------------------------- */

static char *big_token(size_t len)
{
    char *t = malloc(len + 1);

    cr_assert_not_null(t);
    memset(t, 'A', len);
    t[len / 3] = '.';
    t[2 * len / 3] = '.';
    t[len] = 0;
    return t;
}

Test(parse, a1_too_big)
{
    static const size_t sizes[] = {FERRY_JWS_MAX_LEN + 1, 1u << 20, 16u << 20};

    for (size_t i = 0; i < 3; i++) {
        char *t = big_token(sizes[i]);
        ferry_jws *jws = NULL;
        cr_assert_eq(ferry_jws_parse(t, sizes[i], &jws), -FERRY_ETOOBIG, "%zu", sizes[i]);
        cr_assert_null(jws);
        free(t);
    }
    /* The size is checked before anything else: even a non-token is "too big". */
    {
        char *t = calloc(1, FERRY_JWS_MAX_LEN + 1);
        cr_assert_eq(ferry_jws_parse(t, FERRY_JWS_MAX_LEN + 1, &(ferry_jws *){NULL}),
                     -FERRY_ETOOBIG);
        free(t);
    }
}

Test(parse, a1_limit_is_inclusive)
{
    /* A well-formed token of exactly FERRY_JWS_MAX_LEN bytes is accepted by the parser. */
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    static const char hdr[] = "{\"alg\":\"ES256\"}";
    size_t hl = ferry_b64url_encoded_len(sizeof(hdr) - 1), sl = ferry_b64url_encoded_len(64);
    size_t pl = FERRY_JWS_MAX_LEN - hl - sl - 2;
    char *tok = malloc(FERRY_JWS_MAX_LEN + 1), *h = b64(hdr, sizeof(hdr) - 1);
    unsigned char *sig = NULL;
    size_t slen = 0, o;

    while (pl % 4 == 1)
        pl--; /* a length the strict decoder can accept */
    o = (size_t)snprintf(tok, FERRY_JWS_MAX_LEN + 1, "%s.", h);
    memset(tok + o, 'A', pl);
    o += pl;
    cr_assert_eq(ferry_jose_sign(FERRY_ALG_ES256, k, tok, o, &sig, &slen), 0);
    tok[o++] = '.';
    o += ferry_b64url_encode(sig, slen, tok + o);
    cr_assert_leq(o, FERRY_JWS_MAX_LEN);
    cr_assert_eq(parse_verify(tok, o, k), 0);
    free(sig);
    free(h);
    free(tok);
    ferry_jwk_unref(k);
}

struct parse_arg {
    const char *tok;
    size_t len;
    const ferry_jwk *key;
    int rc;
};

static void *parse_thread(void *p)
{
    struct parse_arg *a = p;
    a->rc = parse_verify(a->tok, a->len, a->key);
    return NULL;
}

static int parse_on_small_stack(const char *tok, size_t len, const ferry_jwk *key)
{
    pthread_attr_t attr;
    pthread_t th;
    struct parse_arg a = {tok, len, key, 1};

    cr_assert_eq(pthread_attr_init(&attr), 0);
    cr_assert_eq(pthread_attr_setstacksize(&attr, 256 * 1024), 0);
    cr_assert_eq(pthread_create(&th, &attr, parse_thread, &a), 0);
    cr_assert_eq(pthread_join(th, NULL), 0);
    pthread_attr_destroy(&attr);
    return a.rc;
}

/* A1: no crash on a worker thread with a small (256 KiB) stack (libjwt alloca regression). */
Test(parse, a1_small_stack_thread)
{
    char *t = big_token(16u << 20);
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    char *good = sign_token(k, FERRY_ALG_ES256, "{}");
    char hdr[FERRY_JWS_MAX_HEADER + 2];
    size_t n;

    cr_assert_eq(parse_on_small_stack(t, 16u << 20, k), -FERRY_ETOOBIG);
    cr_assert_eq(parse_on_small_stack(good, strlen(good), k), 0);
    free(t);
    /* A header of exactly the maximum decoded size parses, on the small stack too. */
    n = (size_t)snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"x\":\"");
    memset(hdr + n, 'a', FERRY_JWS_MAX_HEADER - n - 2);
    memcpy(hdr + FERRY_JWS_MAX_HEADER - 2, "\"}", 2);
    t = mk_token(hdr, FERRY_JWS_MAX_HEADER, "{}", 2, "x", 1);
    cr_assert_eq(parse_rc(t), 0);
    cr_assert_eq(parse_on_small_stack(t, strlen(t), k), -FERRY_EBADSIG);
    free(t);
    /* One byte more is refused. */
    memset(hdr + n, 'a', FERRY_JWS_MAX_HEADER + 1 - n - 2);
    memcpy(hdr + FERRY_JWS_MAX_HEADER + 1 - 2, "\"}", 2);
    t = mk_token(hdr, FERRY_JWS_MAX_HEADER + 1, "{}", 2, "x", 1);
    cr_assert_eq(parse_rc(t), -FERRY_ETOOBIG);
    free(t);
    free(good);
    ferry_jwk_unref(k);
}

/* ---- A2: shape -------------------------------------------------------------------------- */

Test(parse, a2_segments)
{
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    char *tok = sign_token(k, FERRY_ALG_ES256, "{}");
    char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    char buf[1024];
    static const char *const shapes[] = {
        "", ".", "..", "...", "a", "a.b", "a.b.c.d", "a.b.c.d.e", "eyJhbGciOiJFUzI1NiJ9..",
        ".e30.AAAA", "eyJhbGciOiJFUzI1NiJ9.e30.", "{\"payload\":\"e30\"}",
    };

    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
        cr_assert_eq(parse_rc(shapes[i]), -FERRY_EMALFORMED, "'%s'", shapes[i]);
    cr_assert_eq(ferry_jws_parse("", 0, &(ferry_jws *){NULL}), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_jws_parse(NULL, 0, &(ferry_jws *){NULL}), -EINVAL);
    cr_assert_eq(ferry_jws_parse("a.b.c", 5, NULL), -EINVAL);

    /* Trailing dot, leading dot, doubled dots, extra segment around a valid token. */
    snprintf(buf, sizeof(buf), "%s.", tok);
    cr_assert_eq(parse_rc(buf), -FERRY_EMALFORMED);
    snprintf(buf, sizeof(buf), ".%s", tok);
    cr_assert_eq(parse_rc(buf), -FERRY_EMALFORMED);
    snprintf(buf, sizeof(buf), "%s.%s", tok, d2 + 1);
    cr_assert_eq(parse_rc(buf), -FERRY_EMALFORMED);
    /* JWE shape: five segments. */
    snprintf(buf, sizeof(buf), "%.*s.AAAA.%.*s.AAAA", (int)(d2 - tok), tok,
             (int)strlen(d2 + 1), d2 + 1);
    cr_assert_eq(parse_rc(buf), -FERRY_EMALFORMED);
    /* Header without signature and payload. */
    snprintf(buf, sizeof(buf), "%.*s", (int)(d1 - tok), tok);
    cr_assert_eq(parse_rc(buf), -FERRY_EMALFORMED);
    /* Signature segment emptied. */
    snprintf(buf, sizeof(buf), "%.*s.", (int)(d2 - tok), tok);
    cr_assert_eq(parse_rc(buf), -FERRY_EMALFORMED);
    /* Embedded NUL within the given length. */
    {
        size_t n = strlen(tok);
        char *t = strdup(tok);
        t[n / 2] = '\0';
        cr_assert_eq(ferry_jws_parse(t, n, &(ferry_jws *){NULL}), -FERRY_EMALFORMED);
        free(t);
    }
    cr_assert_eq(parse_rc(tok), 0);
    free(tok);
    ferry_jwk_unref(k);
}

/* JSON serialization (RFC 7515 §7.2) is not accepted. */
Test(parse, a2_json_serialization)
{
    cr_assert_eq(parse_rc("{\"payload\":\"e30\",\"protected\":\"eyJhbGciOiJFUzI1NiJ9\","
                          "\"signature\":\"AAAA\"}"),
                 -FERRY_EMALFORMED);
}

/* ---- A3: base64url strictness in every segment ----------------------------------------- */

Test(parse, a3_base64url)
{
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    char *tok = sign_token(k, FERRY_ALG_ES256, "{\"a\":1}");
    size_t n = strlen(tok);
    size_t seg_start[3], seg_end[3];
    char buf[2048];
    static const char *const inserts[] = {"=", "==", "+", "/", " ", "\n", "\r\n", "\t", "!",
                                          "\xef\xbb\xbf", "%", "*", "\\", "\"", "\x80"};

    seg_start[0] = 0;
    seg_end[0] = (size_t)(strchr(tok, '.') - tok);
    seg_start[1] = seg_end[0] + 1;
    seg_end[1] = (size_t)(strrchr(tok, '.') - tok);
    seg_start[2] = seg_end[1] + 1;
    seg_end[2] = n;
    cr_assert_eq(parse_verify(tok, n, k), 0);

    for (size_t s = 0; s < 3; s++) {
        for (size_t i = 0; i < sizeof(inserts) / sizeof(inserts[0]); i++) {
            size_t at[3] = {seg_start[s], (seg_start[s] + seg_end[s]) / 2, seg_end[s]};
            for (size_t j = 0; j < 3; j++) {
                int m = snprintf(buf, sizeof(buf), "%.*s%s%s", (int)at[j], tok, inserts[i],
                                 tok + at[j]);
                int r = parse_verify(buf, (size_t)m, k);
                cr_assert_neq(r, 0, "segment %zu insert %zu at %zu accepted", s, i, at[j]);
            }
        }
        /* '+' and '/' instead of '-' and '_' (standard alphabet): replace one char. */
        for (size_t i = seg_start[s]; i < seg_end[s]; i++) {
            if (tok[i] == '-' || tok[i] == '_') {
                memcpy(buf, tok, n + 1);
                buf[i] = tok[i] == '-' ? '+' : '/';
                cr_assert_neq(parse_verify(buf, n, k), 0);
            }
        }
    }
    /* Leading and trailing whitespace, BOM in front of the whole token. */
    snprintf(buf, sizeof(buf), " %s", tok);
    cr_assert_eq(parse_rc(buf), -FERRY_EMALFORMED);
    snprintf(buf, sizeof(buf), "%s ", tok);
    cr_assert_eq(parse_rc(buf), -FERRY_EMALFORMED);
    snprintf(buf, sizeof(buf), "%s\n", tok);
    cr_assert_eq(parse_rc(buf), -FERRY_EMALFORMED);
    snprintf(buf, sizeof(buf), "\xef\xbb\xbf%s", tok);
    cr_assert_eq(parse_rc(buf), -FERRY_EMALFORMED);
    free(tok);
    ferry_jwk_unref(k);
}

Test(parse, a3_noncanonical_and_length)
{
    /* Header {"alg":"ES256"} is 15 bytes -> 20 chars, no partial group; use a 16-byte header
     * ({"alg":"ES256"} + space) whose encoding ends in a 2-char group with unused bits. */
    static const char hdr[] = "{\"alg\":\"ES256\" }";
    char *good = hdr_token(hdr), buf[512];
    size_t dot = (size_t)(strchr(good, '.') - good);
    const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int accepted = 0;

    cr_assert_eq(parse_rc(good), 0);
    cr_assert_eq(dot % 4, 2);
    /* Of the 16 characters that decode to the same last byte, only the canonical one (zero
     * unused bits) is accepted. */
    for (const char *c = alphabet; *c; c++) {
        strcpy(buf, good);
        buf[dot - 1] = *c;
        if (parse_rc(buf) == 0)
            accepted++;
    }
    cr_assert_eq(accepted, 1, "exactly one spelling of the last group");
    /* Length % 4 == 1 in each segment. */
    snprintf(buf, sizeof(buf), "%.*sA%s", (int)dot, good, good + dot);
    cr_assert_eq(parse_rc(buf), -FERRY_EMALFORMED);
    snprintf(buf, sizeof(buf), "%.*sAAA%s", (int)dot, good, good + dot);
    cr_assert_eq(parse_rc(buf), -FERRY_EMALFORMED);
    snprintf(buf, sizeof(buf), "%sA", good); /* sig 86 -> 87 chars: 87 % 4 == 3, decodes */
    cr_assert_eq(parse_rc(buf), 0);
    snprintf(buf, sizeof(buf), "%sAAA", good); /* 89 % 4 == 1 */
    cr_assert_eq(parse_rc(buf), -FERRY_EMALFORMED);
    {
        char *t = mk_token(hdr, sizeof(hdr) - 1, "", 0, "x", 1);
        size_t n = strlen(t);
        cr_assert_eq(parse_rc(t), 0);
        /* payload of one character */
        char *d = strchr(t, '.');
        snprintf(buf, sizeof(buf), "%.*s.A.%s", (int)(d - t), t, t + n - 2);
        cr_assert_eq(parse_rc(buf), -FERRY_EMALFORMED);
        free(t);
    }
    free(good);
}

/* ---- A4: header JSON ------------------------------------------------------------------ */

Test(parse, a4_header_json)
{
#define C(str, code) {str, sizeof(str) - 1, code}
    static const struct {
        const char *hdr;
        size_t len;
        int rc;
    } cases[] = {
        C("[]", -FERRY_EMALFORMED),
        C("[{\"alg\":\"ES256\"}]", -FERRY_EMALFORMED),
        C("\"ES256\"", -FERRY_EMALFORMED),
        C("1", -FERRY_EMALFORMED),
        C("null", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\",\"alg\":\"ES256\"}", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\",\"kid\":\"a\",\"kid\":\"b\"}", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\",\"x\":{\"a\":1,\"a\":2}}", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\",\"kid\":\"a\\u0000b\"}", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\\u0000\"}", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\",\"kid\":\"\xff\xfe\"}", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\",\"kid\":\"\xc0\xaf\"}", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\"}x", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\"}{}", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\"}\0", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES\000" "256\"}", -FERRY_EMALFORMED),
        C("\0{\"alg\":\"ES256\"}", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\",}", -FERRY_EMALFORMED),
        C("{'alg':'ES256'}", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\"", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\"} ", 0),
        C("\xef\xbb\xbf{\"alg\":\"ES256\"}", -FERRY_EMALFORMED),
        /* jansson itself stops at a NUL right after a number or literal */
        C("{\"alg\":\"ES256\",\"n\":1\0}", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\",\"n\":true\0}", -FERRY_EMALFORMED),
        C("{\"alg\":\"ES256\",\"n\":null\0}", -FERRY_EMALFORMED),
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *t = mk_token(cases[i].hdr, cases[i].len, "{}", 2, "sig", 3);
        cr_assert_eq(parse_rc(t), cases[i].rc, "case %zu", i);
        free(t);
    }
#undef C
}

static char *nested(unsigned depth)
{
    /* {"alg":"ES256","n": [[[...]]]} with `depth` levels in total (the header object is 1). */
    size_t cap = 64 + 2 * depth;
    char *s = malloc(cap);
    size_t o;

    cr_assert_not_null(s);
    o = (size_t)snprintf(s, cap, "{\"alg\":\"ES256\",\"n\":");

    for (unsigned i = 1; i < depth; i++)
        s[o++] = '[';
    for (unsigned i = 1; i < depth; i++)
        s[o++] = ']';
    s[o++] = '}';
    s[o] = 0;
    return s;
}

Test(parse, a4_depth)
{
    for (unsigned d = 2; d <= 40; d++) {
        char *h = nested(d), *t = hdr_token(h);
        int r = parse_rc(t);
        if (d <= FERRY_JSON_MAX_DEPTH)
            cr_assert_eq(r, 0, "depth %u", d);
        else
            cr_assert_eq(r, -FERRY_ETOOBIG, "depth %u", d);
        free(h);
        free(t);
    }
    /* Deep nesting up to the header size limit does not crash. */
    {
        char *h = nested(1000), *t = hdr_token(h);
        cr_assert_neq(parse_rc(t), 0);
        free(h);
        free(t);
    }
}

/* ---- A5: alg ---------------------------------------------------------------------------- */

Test(parse, a5_alg)
{
    static const struct {
        const char *hdr;
        int rc;
    } cases[] = {
        {"{\"alg\":\"none\"}", -FERRY_EUNSUPPORTED},
        {"{\"alg\":\"None\"}", -FERRY_EUNSUPPORTED},
        {"{\"alg\":\"NONE\"}", -FERRY_EUNSUPPORTED},
        {"{\"alg\":\"nOnE\"}", -FERRY_EUNSUPPORTED},
        {"{\"alg\":\"HS256\"}", -FERRY_EUNSUPPORTED},
        {"{\"alg\":\"HS384\"}", -FERRY_EUNSUPPORTED},
        {"{\"alg\":\"HS512\"}", -FERRY_EUNSUPPORTED},
        {"{\"alg\":\"es256\"}", -FERRY_EUNSUPPORTED},
        {"{\"alg\":\"ES256 \"}", -FERRY_EUNSUPPORTED},
        {"{\"alg\":\" ES256\"}", -FERRY_EUNSUPPORTED},
        {"{\"alg\":\"ES512\"}", -FERRY_EUNSUPPORTED},
        {"{\"alg\":\"\"}", -FERRY_EUNSUPPORTED},
        {"{\"alg\":\"RSA-OAEP\"}", -FERRY_EUNSUPPORTED},
        {"{}", -FERRY_EMALFORMED},
        {"{\"typ\":\"JWT\"}", -FERRY_EMALFORMED},
        {"{\"alg\":null}", -FERRY_EMALFORMED},
        {"{\"alg\":256}", -FERRY_EMALFORMED},
        {"{\"alg\":true}", -FERRY_EMALFORMED},
        {"{\"alg\":[\"ES256\"]}", -FERRY_EMALFORMED},
        {"{\"alg\":{\"name\":\"ES256\"}}", -FERRY_EMALFORMED},
        {"{\"ALG\":\"ES256\"}", -FERRY_EMALFORMED},
        {"{\"alg\":\"ES256\"}", 0},
        {"{\"alg\":\"EdDSA\"}", 0},
        {"{\"alg\":\"PS512\"}", 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *t = hdr_token(cases[i].hdr);
        cr_assert_eq(parse_rc(t), cases[i].rc, "%s", cases[i].hdr);
        free(t);
    }
}

/* A5: an alg: none token (RFC 7515 A.5) with an empty signature is refused for its shape and
 * for its alg. */
Test(parse, a5_none_token)
{
    static const char a5[] = "eyJhbGciOiJub25lIn0"
                             ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt"
                             "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ.";
    char buf[512];

    cr_assert_eq(parse_rc(a5), -FERRY_EMALFORMED);
    snprintf(buf, sizeof(buf), "%sAAAA", a5);
    cr_assert_eq(parse_rc(buf), -FERRY_EUNSUPPORTED);
}

/* ---- A6, A7: forbidden header members ------------------------------------------------ */

Test(parse, a6_a7_forbidden_members)
{
    static const char *const bad[] = {
        "\"crit\":[\"exp\"]",
        "\"crit\":[]",
        "\"crit\":null",
        "\"crit\":\"b64\"",
        "\"crit\":[\"b64\"],\"b64\":false",
        "\"b64\":false",
        "\"b64\":true",
        "\"zip\":\"DEF\"",
        "\"enc\":\"A128GCM\"",
        "\"cty\":\"JWT\"",
        "\"cty\":\"jwt\"",
        "\"cty\":\"Jwt\"",
        "\"cty\":\"application/jwt\"",
        "\"cty\":\"application/JWT\"",
        "\"jku\":\"https://127.0.0.1/jwks\"",
        "\"jku\":\"http://169.254.169.254/latest/meta-data/\"",
        "\"jwk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}",
        "\"x5u\":\"https://attacker.example/cert.pem\"",
        "\"x5c\":[\"MIIB\"]",
    };
    static const char *const bad_type[] = {
        "\"cty\":1", "\"cty\":null", "\"kid\":1", "\"kid\":null", "\"kid\":[\"a\"]", "\"kid\":\"\"",
        "\"typ\":1", "\"typ\":{}", "\"typ\":null", "\"x5t\":1", "\"x5t#S256\":[]",
    };
    static const char *const ok[] = {
        "\"cty\":\"text/plain\"", "\"typ\":\"at+jwt\"", "\"kid\":\"k1\"", "\"x5t#S2560\":1",
        "\"x5t\":\"AAAA\"", "\"x5t#S256\":\"AAAA\"",
        "\"custom\":{\"a\":[1,2,3]}", "\"typ\":\"\"",
    };
    char hdr[512];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",%s}", bad[i]);
        char *t = hdr_token(hdr);
        cr_assert_eq(parse_rc(t), -FERRY_EPOLICY, "%s", hdr);
        free(t);
        /* Order of members does not matter. */
        snprintf(hdr, sizeof(hdr), "{%s,\"alg\":\"RS256\"}", bad[i]);
        t = hdr_token(hdr);
        cr_assert_eq(parse_rc(t), -FERRY_EPOLICY, "%s", hdr);
        free(t);
    }
    for (size_t i = 0; i < sizeof(bad_type) / sizeof(bad_type[0]); i++) {
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",%s}", bad_type[i]);
        char *t = hdr_token(hdr);
        cr_assert_eq(parse_rc(t), -FERRY_EMALFORMED, "%s", hdr);
        free(t);
    }
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",%s}", ok[i]);
        char *t = hdr_token(hdr);
        cr_assert_eq(parse_rc(t), 0, "%s", hdr);
        free(t);
    }
}

Test(parse, kid_length)
{
    char hdr[FERRY_KID_MAX_LEN + 64], kid[FERRY_KID_MAX_LEN + 2];
    ferry_jws *jws = NULL;
    char *t;

    memset(kid, 'k', sizeof(kid));
    kid[FERRY_KID_MAX_LEN] = 0;
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"kid\":\"%s\"}", kid);
    t = hdr_token(hdr);
    cr_assert_eq(ferry_jws_parse(t, strlen(t), &jws), 0);
    cr_assert_str_eq(jws->kid, kid);
    ferry_jws_free(jws);
    free(t);
    kid[FERRY_KID_MAX_LEN] = 'k';
    kid[FERRY_KID_MAX_LEN + 1] = 0;
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"kid\":\"%s\"}", kid);
    t = hdr_token(hdr);
    cr_assert_eq(parse_rc(t), -FERRY_ETOOBIG);
    free(t);
}

/* ---- A9: deterministic mutation -------------------------------------------------------- */

static void mutate_all(const char *tok, const ferry_jwk *k)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";
    size_t n = strlen(tok);
    char *m = malloc(n + 2);
    size_t tried = 0;

    cr_assert_not_null(m);
    cr_assert_eq(parse_verify(tok, n, k), 0);
    /* Every single-bit flip. */
    for (size_t i = 0; i < n; i++) {
        for (unsigned b = 0; b < 8; b++) {
            memcpy(m, tok, n + 1);
            m[i] ^= (char)(1u << b);
            cr_assert_neq(parse_verify(m, n, k), 0, "bit %u of char %zu accepted", b, i);
            tried++;
        }
    }
    /* Every replacement character at every position. */
    for (size_t i = 0; i < n; i++) {
        for (const char *c = alphabet; *c; c++) {
            if (*c == tok[i])
                continue;
            memcpy(m, tok, n + 1);
            m[i] = *c;
            cr_assert_neq(parse_verify(m, n, k), 0, "'%c' at %zu accepted", *c, i);
            tried++;
        }
    }
    /* Every truncation, every deletion, and appended characters. */
    for (size_t i = 0; i < n; i++) {
        cr_assert_neq(parse_verify(tok, i, k), 0, "prefix %zu accepted", i);
        memcpy(m, tok, i);
        memcpy(m + i, tok + i + 1, n - i);
        cr_assert_neq(parse_verify(m, n - 1, k), 0, "deletion at %zu accepted", i);
        tried += 2;
    }
    for (const char *c = alphabet; *c; c++) {
        memcpy(m, tok, n);
        m[n] = *c;
        m[n + 1] = 0;
        cr_assert_neq(parse_verify(m, n + 1, k), 0, "append '%c' accepted", *c);
    }
    cr_assert_gt(tried, 10 * n);
    free(m);
}

Test(mutation, a9_es256, .timeout = 300)
{
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    char *tok = sign_token(k, FERRY_ALG_ES256, "{\"sub\":\"a\"}");

    mutate_all(tok, k);
    free(tok);
    ferry_jwk_unref(k);
}

Test(mutation, a9_rs256, .timeout = 300)
{
    ferry_jwk *k = rsa2048();
    char *tok = sign_token(k, FERRY_ALG_RS256, "{\"sub\":\"a\"}");

    mutate_all(tok, k);
    free(tok);
    ferry_jwk_unref(k);
}

Test(mutation, a9_eddsa, .timeout = 300)
{
    ferry_jwk *k = gen(FERRY_ALG_EDDSA);
    char *tok = sign_token(k, FERRY_ALG_EDDSA, "{\"sub\":\"a\"}");

    mutate_all(tok, k);
    free(tok);
    ferry_jwk_unref(k);
}

/* ---- B1: HMAC -------------------------------------------------------------------------- */

Test(binding, b1_hs256_refused)
{
    ferry_jwk *k = rsa2048();
    size_t pem_len;
    char *pem = pkey_pem(ferry_jwk_evp_pkey(k), false, &pem_len);
    json_t *pub = pub_json(k);
    char *pub_s = json_dumps(pub, JSON_COMPACT);
    static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    const char *secrets[] = {pem, pub_s, "", NULL};
    size_t secret_lens[] = {pem_len, strlen(pub_s), 0};

    /* HS256 "signed" with the RSA public key in several representations, and an empty key. */
    for (size_t i = 0; secrets[i]; i++) {
        char *h = b64(hdr, sizeof(hdr) - 1), *p = b64("{\"sub\":\"a\"}", 11);
        char si[1024];
        unsigned char mac[32];
        unsigned int mlen = 0;
        int m = snprintf(si, sizeof(si), "%s.%s", h, p);
        cr_assert_not_null(HMAC(EVP_sha256(), secrets[i], (int)secret_lens[i],
                                (unsigned char *)si, (size_t)m, mac, &mlen));
        char *s = b64(mac, mlen), tok[2048];
        snprintf(tok, sizeof(tok), "%s.%s", si, s);
        cr_assert_eq(parse_rc(tok), -FERRY_EUNSUPPORTED);
        cr_assert_eq(parse_verify(tok, strlen(tok), k), -FERRY_EUNSUPPORTED);
        free(h);
        free(p);
        free(s);
    }
    /* There is no HMAC alg in the signature layer: anything outside the enum is refused. */
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_UNKNOWN, k, "m", 1, "s", 1), -FERRY_EUNSUPPORTED);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_MAX, k, "m", 1, "s", 1), -FERRY_EUNSUPPORTED);
    cr_assert_eq(ferry_jose_verify((ferry_alg)1000, k, "m", 1, "s", 1), -FERRY_EUNSUPPORTED);
    /* An RSA JWK that declares HS256, and an oct key, are not imported. */
    json_object_set_new(pub, "alg", json_string("HS256"));
    cr_assert_eq(import_obj(pub, 0), -FERRY_EUNSUPPORTED);
    cr_assert_eq(import_json("{\"kty\":\"oct\",\"k\":\"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQ"
                             "LrNfY4ZW5pNkuDMvBw\"}",
                             0),
                 -FERRY_EUNSUPPORTED);
    cr_assert_eq(import_json("{\"kty\":\"oct\",\"k\":\"AAAA\"}", FERRY_JWK_ALLOW_PRIVATE),
                 -FERRY_EUNSUPPORTED);
    cr_assert_eq(import_json("{\"kty\":\"oct\",\"k\":\"\"}", FERRY_JWK_ALLOW_PRIVATE),
                 -FERRY_EUNSUPPORTED);
    cr_assert_eq(import_json("{\"kty\":\"oct\"}", 0), -FERRY_EUNSUPPORTED);
    free(pub_s);
    json_decref(pub);
    free(pem);
    ferry_jwk_unref(k);
}

/* ---- B2: alg/key binding ------------------------------------------------------------- */

Test(binding, b2_alg_key_mismatch, .timeout = 60)
{
    ferry_jwk *rsa = rsa2048(), *es256 = gen(FERRY_ALG_ES256), *es384 = gen(FERRY_ALG_ES384);
    ferry_jwk *ed = gen(FERRY_ALG_EDDSA), *rs256only = NULL;
    json_t *o = pub_json(rsa);
    ferry_jwk *keys[] = {rsa, es256, es384, ed};

    json_object_set_new(o, "alg", json_string("RS256"));
    cr_assert_eq(ferry_jwk_from_json(o, 0, &rs256only), 0);
    cr_assert_eq(ferry_jwk_alg(rs256only), FERRY_ALG_RS256);
    cr_assert(ferry_jwk_allows(rs256only, FERRY_ALG_RS256));
    cr_assert_not(ferry_jwk_allows(rs256only, FERRY_ALG_PS256));
    cr_assert_not(ferry_jwk_allows(rs256only, FERRY_ALG_RS384));

    /* Exactly the fitting pairs are allowed. */
    for (size_t i = 0; i < 4; i++) {
        for (ferry_alg a = FERRY_ALG_RS256; a < FERRY_ALG_MAX; a++) {
            bool expect = (i == 0 && a <= FERRY_ALG_PS512) || (i == 1 && a == FERRY_ALG_ES256) ||
                          (i == 2 && a == FERRY_ALG_ES384) || (i == 3 && a == FERRY_ALG_EDDSA);
            cr_assert_eq(ferry_jwk_allows(keys[i], a), expect, "key %zu alg %d", i, a);
            if (!expect)
                cr_assert_eq(ferry_jose_verify(a, keys[i], "m", 1, "sig", 3),
                             -FERRY_EKEYMISMATCH);
        }
        cr_assert_not(ferry_jwk_allows(keys[i], FERRY_ALG_UNKNOWN));
    }
    /* A real signature is refused under another alg, even with the same key. */
    {
        char *tok = sign_token(rsa, FERRY_ALG_RS256, "{}");
        char *ps = sign_token(rsa, FERRY_ALG_PS256, "{}");
        ferry_jws *jws = NULL;
        cr_assert_eq(parse_verify(tok, strlen(tok), rs256only), 0);
        free(tok);
        cr_assert_eq(ferry_jws_parse(ps, strlen(ps), &jws), 0);
        cr_assert_eq(ferry_jws_verify(jws, rs256only), -FERRY_EKEYMISMATCH);
        cr_assert_eq(ferry_jws_verify(jws, rsa), 0);
        cr_assert_eq(ferry_jws_verify(jws, es256), -FERRY_EKEYMISMATCH);
        /* Same bytes checked as RS256: wrong padding, refused. */
        cr_assert_eq(ferry_jose_verify(FERRY_ALG_RS256, rsa, jws->signing_input,
                                       jws->signing_input_len, jws->sig, jws->sig_len),
                     -FERRY_EBADSIG);
        cr_assert_eq(ferry_jose_verify(FERRY_ALG_PS384, rsa, jws->signing_input,
                                       jws->signing_input_len, jws->sig, jws->sig_len),
                     -FERRY_EBADSIG);
        ferry_jws_free(jws);
        free(ps);
    }
    /* ES384 with a P-256 key and ES256 with a P-384 key. */
    {
        char *t256 = sign_token(es256, FERRY_ALG_ES256, "{}");
        char *t384 = sign_token(es384, FERRY_ALG_ES384, "{}");
        cr_assert_eq(parse_verify(t256, strlen(t256), es384), -FERRY_EKEYMISMATCH);
        cr_assert_eq(parse_verify(t384, strlen(t384), es256), -FERRY_EKEYMISMATCH);
        cr_assert_eq(parse_verify(t256, strlen(t256), ed), -FERRY_EKEYMISMATCH);
        cr_assert_eq(parse_verify(t256, strlen(t256), rsa), -FERRY_EKEYMISMATCH);
        free(t256);
        free(t384);
    }
    json_decref(o);
    ferry_jwk_unref(rs256only);
    for (size_t i = 0; i < 4; i++)
        ferry_jwk_unref(keys[i]);
}

/* An even modulus cannot be a product of two large primes: refused. */
Test(jwk, rsa_even_modulus_refused)
{
    EVP_PKEY *p = EVP_RSA_gen(2048);
    BIGNUM *n = NULL, *e = NULL;
    json_t *o;

    cr_assert_not_null(p);
    cr_assert_eq(EVP_PKEY_get_bn_param(p, OSSL_PKEY_PARAM_RSA_N, &n), 1);
    cr_assert_eq(EVP_PKEY_get_bn_param(p, OSSL_PKEY_PARAM_RSA_E, &e), 1);
    o = rsa_jwk_bn(n, e);
    cr_assert_eq(import_obj(o, 0), 0, "the genuine modulus is accepted");
    json_decref(o);
    cr_assert(BN_add_word(n, 1)); /* still 2048 bits, now even */
    cr_assert_eq(BN_num_bits(n), 2048);
    o = rsa_jwk_bn(n, e);
    cr_assert_eq(import_obj(o, 0), -FERRY_EWEAKKEY, "even modulus accepted");
    json_decref(o);
    BN_free(n);
    BN_free(e);
    EVP_PKEY_free(p);
}

/* ROCA (CVE-2017-15361): a modulus that is a power of 65537 modulo the primorial of the
 * primes up to 167 (the shape every Infineon-generated modulus has) is refused; changing
 * it by one multiple of a single small prime's cofactor makes it acceptable again. */
Test(jwk, roca_fingerprint)
{
    static const unsigned primes[] = {3,  5,  7,  11, 13, 17,  19,  23,  29,  31,
                                      37, 41, 43, 47, 53, 59,  61,  67,  71,  73,
                                      79, 83, 89, 97, 101, 103, 107, 109, 113, 127,
                                      131, 137, 139, 149, 151, 157, 163, 167};
    BN_CTX *bc = BN_CTX_new();
    BIGNUM *M = BN_new(), *g = BN_new(), *a = BN_new(), *r = BN_new(), *t = BN_new();
    BIGNUM *n = BN_new(), *e = BN_new();
    json_t *o;

    cr_assert(BN_one(M) && BN_set_word(g, 65537) && BN_set_word(a, 1234567) &&
              BN_set_word(e, 65537));
    for (size_t i = 0; i < sizeof(primes) / sizeof(primes[0]); i++)
        cr_assert(BN_mul_word(M, primes[i]));
    cr_assert(BN_mod_exp(r, g, a, M, bc)); /* r = 65537^a mod M */
    /* n = r + t * M with t chosen so that n has 2048 bits and is odd (M is odd). A random t
     * of the right length gives a 2047- or 2048-bit product: draw until it is 2048. */
    for (int tries = 0;; tries++) {
        cr_assert_lt(tries, 1000);
        cr_assert(BN_rand(t, 2048 - BN_num_bits(M), BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY));
        cr_assert(BN_mul(n, t, M, bc) && BN_add(n, n, r));
        if (!BN_is_odd(n))
            cr_assert(BN_add(n, n, M));
        if (BN_num_bits(n) == 2048)
            break;
    }
    o = rsa_jwk_bn(n, e);
    cr_assert_eq(import_obj(o, 0), -FERRY_EWEAKKEY, "ROCA-shaped modulus accepted");
    json_decref(o);
    /* The same modulus moved out of the subgroup for p = 11 only (65537 generates a subgroup
     * of order 2 there) by adding multiples of M / 11, which leave every other residue as
     * it was. */
    {
        BIGNUM *c = BN_new(), *n2 = BN_new();
        int refused = 0, accepted = 0;
        cr_assert(BN_copy(c, M) && BN_div_word(c, 11) != (BN_ULONG)-1);
        for (unsigned k = 2; k < 40; k += 2) { /* even multiples keep n odd */
            cr_assert(BN_copy(n2, c) && BN_mul_word(n2, k) && BN_add(n2, n2, n));
            o = rsa_jwk_bn(n2, e);
            if (import_obj(o, 0) == 0)
                accepted++;
            else
                refused++;
            json_decref(o);
        }
        cr_assert_gt(accepted, 10, "%d accepted, %d refused", accepted, refused);
        BN_free(c);
        BN_free(n2);
    }
    BN_free(M);
    BN_free(g);
    BN_free(a);
    BN_free(r);
    BN_free(t);
    BN_free(n);
    BN_free(e);
    BN_CTX_free(bc);
}

/* JWKs whose declared alg does not fit the key are not imported. */
Test(binding, b2_jwk_alg_mismatch, .timeout = 60)
{
    ferry_jwk *rsa = rsa2048(), *es256 = gen(FERRY_ALG_ES256), *es384 = gen(FERRY_ALG_ES384);
    ferry_jwk *ed = gen(FERRY_ALG_EDDSA);
    static const struct {
        int key;
        const char *alg;
        int rc;
    } cases[] = {
        {0, "ES256", -FERRY_EKEYMISMATCH}, {0, "EdDSA", -FERRY_EKEYMISMATCH},
        {0, "HS256", -FERRY_EUNSUPPORTED}, {0, "none", -FERRY_EUNSUPPORTED},
        {0, "RSA-OAEP", -FERRY_EUNSUPPORTED}, {0, "rs256", -FERRY_EUNSUPPORTED},
        {0, "PS512", 0}, {1, "ES384", -FERRY_EKEYMISMATCH}, {1, "RS256", -FERRY_EKEYMISMATCH},
        {1, "ES256", 0}, {2, "ES256", -FERRY_EKEYMISMATCH}, {2, "ES384", 0},
        {3, "ES256", -FERRY_EKEYMISMATCH}, {3, "Ed25519", -FERRY_EUNSUPPORTED},
        {3, "EdDSA", 0}, {1, "HS256", -FERRY_EUNSUPPORTED},
    };
    ferry_jwk *keys[] = {rsa, es256, es384, ed};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *o = pub_json(keys[cases[i].key]);
        json_object_set_new(o, "alg", json_string(cases[i].alg));
        cr_assert_eq(import_obj(o, 0), cases[i].rc, "case %zu", i);
        json_decref(o);
    }
    {
        json_t *o = pub_json(es256);
        json_object_set_new(o, "alg", json_integer(7));
        cr_assert_eq(import_obj(o, 0), -FERRY_EMALFORMED);
        json_decref(o);
    }
    for (size_t i = 0; i < 4; i++)
        ferry_jwk_unref(keys[i]);
}

/* ---- B3: ECDSA signature values -------------------------------------------------------- */

static void bn_to_field(const BIGNUM *bn, unsigned char *out, size_t f)
{
    cr_assert_eq(BN_bn2binpad(bn, out, (int)f), (int)f);
}

static void ecdsa_values(ferry_alg alg, const char *group_order_hex, size_t f)
{
    ferry_jwk *k = gen(alg);
    static const char msg[] = "eyJhbGciOiJFUzI1NiJ9.e30";
    unsigned char *sig = NULL, bad[2 * 48 + 2], *der = NULL;
    size_t slen = 0, der_len = 0;
    BIGNUM *n = NULL, *one = BN_new(), *nm1 = BN_new(), *s = NULL, *ms = BN_new();
    BN_CTX *bctx = BN_CTX_new();

    cr_assert(BN_hex2bn(&n, group_order_hex));
    cr_assert(BN_set_word(one, 1));
    cr_assert(BN_sub(nm1, n, one));
    cr_assert_eq(ferry_jose_sign(alg, k, msg, sizeof(msg) - 1, &sig, &slen), 0);
    cr_assert_eq(slen, 2 * f);
    cr_assert_eq(ferry_jose_verify(alg, k, msg, sizeof(msg) - 1, sig, slen), 0);

    /* r and s in {0, 1, n-1, n} and s >= n (0xff..ff), in every combination. */
    const BIGNUM *vals[5];
    BIGNUM *zero = BN_new(), *ff = BN_new();
    BN_zero(zero);
    cr_assert(BN_set_bit(ff, (int)(8 * f)) && BN_sub(ff, ff, one));
    vals[0] = zero;
    vals[1] = one;
    vals[2] = nm1;
    vals[3] = n;
    vals[4] = ff;
    for (size_t i = 0; i < 5; i++) {
        for (size_t j = 0; j < 5; j++) {
            bn_to_field(vals[i], bad, f);
            bn_to_field(vals[j], bad + f, f);
            cr_assert_eq(ferry_jose_verify(alg, k, msg, sizeof(msg) - 1, bad, 2 * f),
                         -FERRY_EBADSIG, "r=%zu s=%zu", i, j);
        }
        /* Real r with a hostile s, and a hostile r with the real s. */
        memcpy(bad, sig, 2 * f);
        bn_to_field(vals[i], bad + f, f);
        cr_assert_eq(ferry_jose_verify(alg, k, msg, sizeof(msg) - 1, bad, 2 * f),
                     -FERRY_EBADSIG);
        memcpy(bad, sig, 2 * f);
        bn_to_field(vals[i], bad, f);
        cr_assert_eq(ferry_jose_verify(alg, k, msg, sizeof(msg) - 1, bad, 2 * f),
                     -FERRY_EBADSIG);
    }
    /* s + n (still fits the field for P-256 when s is small enough; else s >= n anyway). */
    s = BN_bin2bn(sig + f, (int)f, NULL);
    cr_assert_not_null(s);
    {
        BIGNUM *sn = BN_new();
        cr_assert(BN_add(sn, s, n));
        if (BN_num_bytes(sn) <= (int)f) {
            memcpy(bad, sig, f);
            bn_to_field(sn, bad + f, f);
            cr_assert_eq(ferry_jose_verify(alg, k, msg, sizeof(msg) - 1, bad, 2 * f),
                         -FERRY_EBADSIG);
        }
        BN_free(sn);
    }
    /* DER-encoded signature and wrong lengths. */
    cr_assert_eq(ferry_ecdsa_p1363_to_der(sig, slen, &der, &der_len), 0);
    cr_assert_eq(ferry_jose_verify(alg, k, msg, sizeof(msg) - 1, der, der_len), -FERRY_EBADSIG);
    for (size_t l = 0; l <= 2 * f + 1; l++)
        if (l != 2 * f)
            cr_assert_eq(ferry_jose_verify(alg, k, msg, sizeof(msg) - 1, sig, l),
                         -FERRY_EBADSIG, "len %zu", l);
    /* Malleated (r, n - s) is also a valid ECDSA signature: it VERIFIES at this layer.
     * Refusing the second use of the same token is the oidc layer's replay cache (by iss,
     * jti), SECURITY-TESTS B3/C7; this assertion documents that the JWS layer cannot. */
    cr_assert(BN_sub(ms, n, s));
    memcpy(bad, sig, f);
    bn_to_field(ms, bad + f, f);
    cr_assert_eq(ferry_jose_verify(alg, k, msg, sizeof(msg) - 1, bad, 2 * f), 0);
    /* Wrong message. */
    cr_assert_eq(ferry_jose_verify(alg, k, msg, sizeof(msg) - 2, sig, slen), -FERRY_EBADSIG);

    free(der);
    free(sig);
    BN_free(n);
    BN_free(one);
    BN_free(nm1);
    BN_free(s);
    BN_free(ms);
    BN_free(zero);
    BN_free(ff);
    BN_CTX_free(bctx);
    ferry_jwk_unref(k);
}

Test(ecdsa, b3_p256_values)
{
    ecdsa_values(FERRY_ALG_ES256,
                 "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 32);
}

Test(ecdsa, b3_p384_values)
{
    ecdsa_values(FERRY_ALG_ES384,
                 "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77A"
                 "ECEC196ACCC52973",
                 48);
}

/* Signatures made by OpenSSL itself (DER, converted) verify: interoperability. */
Test(ecdsa, openssl_made_signature)
{
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    unsigned char der[128], p1363[64];
    static const char msg[] = "hello.world";
    size_t dl = ossl_sign(ferry_jwk_evp_pkey(k), EVP_sha256(), 0, 0, msg, sizeof(msg) - 1, der,
                          sizeof(der));

    cr_assert_eq(ferry_ecdsa_der_to_p1363(der, dl, 32, p1363), 0);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_ES256, k, msg, sizeof(msg) - 1, p1363, 64), 0);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_ES256, k, msg, sizeof(msg) - 1, der, dl),
                 -FERRY_EBADSIG);
    ferry_jwk_unref(k);
}

/* ---- DER <-> P1363 ----------------------------------------------------------------------- */

Test(ecdsa, der_to_p1363_strict)
{
    unsigned char out[96];
    static const struct {
        const char *hex;
        size_t field;
        int rc;
    } cases[] = {
        /* minimal, small values, left-padded */
        {"3006020101020102", 32, 0},
        /* leading 00 required before a high bit */
        {"3008020200ff020200ff", 32, 0},
        /* high bit without 00: negative */
        {"30060201ff020101", 32, -FERRY_EMALFORMED},
        {"3006020180020101", 32, -FERRY_EMALFORMED},
        /* non-minimal: 00 before a byte without the high bit */
        {"300702020001020101", 32, -FERRY_EMALFORMED},
        {"30070201010202007f", 32, -FERRY_EMALFORMED},
        /* zero r or s */
        {"3006020100020101", 32, -FERRY_EMALFORMED},
        {"3006020101020100", 32, -FERRY_EMALFORMED},
        /* empty integer */
        {"30050200020101", 32, -FERRY_EMALFORMED},
        /* trailing bytes after the sequence, and inside it */
        {"300602010102010100", 32, -FERRY_EMALFORMED},
        {"3009020101020101020101", 32, -FERRY_EMALFORMED},
        {"3007020101020101" "00", 32, -FERRY_EMALFORMED},
        /* truncated */
        {"30060201010201", 32, -FERRY_EMALFORMED},
        {"3006020101", 32, -FERRY_EMALFORMED},
        {"30", 32, -FERRY_EMALFORMED},
        {"", 32, -FERRY_EMALFORMED},
        /* non-minimal sequence length (long form for a short length) */
        {"308106020101020101", 32, -FERRY_EMALFORMED},
        /* long-form integer length */
        {"3007028101010201" "01", 32, -FERRY_EMALFORMED},
        /* wrong tags */
        {"3106020101020101", 32, -FERRY_EMALFORMED},
        {"3006030101020101", 32, -FERRY_EMALFORMED},
        {"3006020101040101", 32, -FERRY_EMALFORMED},
        /* indefinite length */
        {"3080020101020101" "0000", 32, -FERRY_EMALFORMED},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned char der[256];
        size_t n = strlen(cases[i].hex) / 2;
        for (size_t j = 0; j < n; j++)
            cr_assert_eq(sscanf(cases[i].hex + 2 * j, "%2hhx", &der[j]), 1);
        memset(out, 0xaa, sizeof(out));
        int r = ferry_ecdsa_der_to_p1363(der, n, cases[i].field, out);
        cr_assert_eq(r, cases[i].rc, "case %zu", i);
        if (r < 0)
            for (size_t j = 0; j < sizeof(out); j++)
                cr_assert_eq(out[j], 0xaa, "output written on failure");
    }
    /* Integers at the field width: 32 bytes with the high bit set need a 00 prefix (33 content
     * octets) and fit a 32-byte field but not a 31-byte one; 33 significant bytes never fit. */
    {
        unsigned char der[80];
        size_t o = 0;
        der[o++] = 0x30;
        der[o++] = 2 + 33 + 3;
        der[o++] = 0x02;
        der[o++] = 33;
        der[o++] = 0x00;
        der[o++] = 0x80;
        memset(der + o, 0x01, 31);
        o += 31;
        der[o++] = 0x02;
        der[o++] = 0x01;
        der[o++] = 0x01;
        cr_assert_eq(ferry_ecdsa_der_to_p1363(der, o, 32, out), 0);
        cr_assert_eq(out[0], 0x80);
        cr_assert_eq(out[63], 0x01);
        cr_assert_eq(ferry_ecdsa_der_to_p1363(der, o, 31, out), -FERRY_EMALFORMED);
        der[4] = 0x01; /* now 33 significant bytes */
        cr_assert_eq(ferry_ecdsa_der_to_p1363(der, o, 32, out), -FERRY_EMALFORMED);
        cr_assert_eq(ferry_ecdsa_der_to_p1363(der, o, 33, out), 0);
    }
    /* Left-padding: r = 1, s = 0x00ff -> 31 zero bytes then 01; 31 zeros then ff. */
    {
        static const unsigned char der[] = {0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0xff};
        unsigned char expect[64] = {0};
        expect[31] = 1;
        expect[63] = 0xff;
        cr_assert_eq(ferry_ecdsa_der_to_p1363(der, sizeof(der), 32, out), 0);
        cr_assert_eq(memcmp(out, expect, 64), 0);
    }
    cr_assert_eq(ferry_ecdsa_der_to_p1363(NULL, 8, 32, out), -EINVAL);
    cr_assert_eq(ferry_ecdsa_der_to_p1363("0", 1, 0, out), -EINVAL);
    cr_assert_eq(ferry_ecdsa_der_to_p1363("0", 1, 67, out), -EINVAL);
}

Test(ecdsa, p1363_to_der)
{
    unsigned char p[64] = {0}, back[64], *der = NULL;
    size_t dl = 0;

    /* r with leading zero bytes (31-byte r) and s with its high bit set. */
    p[1] = 0x12;
    p[31] = 0x34;
    memset(p + 32, 0xf0, 32);
    cr_assert_eq(ferry_ecdsa_p1363_to_der(p, 64, &der, &dl), 0);
    cr_assert_eq(der[0], 0x30);
    cr_assert_eq(der[2], 0x02);
    cr_assert_eq(der[3], 31, "r minimal: 31 bytes");
    cr_assert_eq(der[4], 0x12);
    cr_assert_eq(der[4 + 31], 0x02);
    cr_assert_eq(der[5 + 31], 33, "s gets a 00 prefix");
    cr_assert_eq(der[6 + 31], 0x00);
    cr_assert_eq(dl, 2 + 2 + 31 + 2 + 33);
    cr_assert_eq(ferry_ecdsa_der_to_p1363(der, dl, 32, back), 0);
    cr_assert_eq(memcmp(back, p, 64), 0);
    free(der);
    /* zero halves and odd lengths are refused */
    memset(p, 0, 32);
    cr_assert_eq(ferry_ecdsa_p1363_to_der(p, 64, &der, &dl), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_ecdsa_p1363_to_der(back, 63, &der, &dl), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_ecdsa_p1363_to_der(back, 0, &der, &dl), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_ecdsa_p1363_to_der(NULL, 64, &der, &dl), -EINVAL);
    /* P-521 sized signatures need the long-form sequence length and round-trip. */
    {
        unsigned char big[132], big_back[132];
        memset(big, 0xee, sizeof(big));
        cr_assert_eq(ferry_ecdsa_p1363_to_der(big, 132, &der, &dl), 0);
        cr_assert_eq(der[1], 0x81);
        cr_assert_eq(ferry_ecdsa_der_to_p1363(der, dl, 66, big_back), 0);
        cr_assert_eq(memcmp(big, big_back, 132), 0);
        free(der);
    }
    /* Random round trips. */
    for (int i = 0; i < 200; i++) {
        for (size_t j = 0; j < 64; j++)
            p[j] = (unsigned char)(rand() >> (j % 8));
        p[0] = (unsigned char)(i & 1 ? 0 : p[0]);
        p[1] |= 1;
        p[33] |= 1;
        cr_assert_eq(ferry_ecdsa_p1363_to_der(p, 64, &der, &dl), 0);
        cr_assert_eq(ferry_ecdsa_der_to_p1363(der, dl, 32, back), 0);
        cr_assert_eq(memcmp(back, p, 64), 0);
        free(der);
    }
}

/* ---- B4: Ed25519 and RSA signature shapes ----------------------------------------------- */

Test(eddsa, b4_signature_values)
{
    ferry_jwk *k = gen(FERRY_ALG_EDDSA);
    static const char msg[] = "eyJhbGciOiJFZERTQSJ9.e30";
    static const unsigned char L[32] = {
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7,
        0xa2, 0xde, 0xf9, 0xde, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
    };
    unsigned char *sig = NULL, bad[65];
    size_t slen = 0;
    unsigned carry = 0;

    cr_assert_eq(ferry_jose_sign(FERRY_ALG_EDDSA, k, msg, sizeof(msg) - 1, &sig, &slen), 0);
    cr_assert_eq(slen, 64);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_EDDSA, k, msg, sizeof(msg) - 1, sig, 64), 0);
    /* S + L: the same scalar mod L, non-canonical (RFC 8032 requires S < L). */
    memcpy(bad, sig, 64);
    for (size_t i = 0; i < 32; i++) {
        unsigned v = bad[32 + i] + L[i] + carry;
        bad[32 + i] = (unsigned char)v;
        carry = v >> 8;
    }
    cr_assert_eq(carry, 0);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_EDDSA, k, msg, sizeof(msg) - 1, bad, 64),
                 -FERRY_EBADSIG);
    /* S = L exactly, S = 2^256 - 1. */
    memcpy(bad, sig, 32);
    memcpy(bad + 32, L, 32);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_EDDSA, k, msg, sizeof(msg) - 1, bad, 64),
                 -FERRY_EBADSIG);
    memset(bad + 32, 0xff, 32);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_EDDSA, k, msg, sizeof(msg) - 1, bad, 64),
                 -FERRY_EBADSIG);
    /* All zero; R zero with the real S; truncated; extended. */
    memset(bad, 0, 64);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_EDDSA, k, msg, sizeof(msg) - 1, bad, 64),
                 -FERRY_EBADSIG);
    memcpy(bad + 32, sig + 32, 32);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_EDDSA, k, msg, sizeof(msg) - 1, bad, 64),
                 -FERRY_EBADSIG);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_EDDSA, k, msg, sizeof(msg) - 1, sig, 63),
                 -FERRY_EBADSIG);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_EDDSA, k, msg, sizeof(msg) - 1, sig, 32),
                 -FERRY_EBADSIG);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_EDDSA, k, msg, sizeof(msg) - 1, sig, 0),
                 -FERRY_EBADSIG);
    memcpy(bad, sig, 64);
    bad[64] = 0;
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_EDDSA, k, msg, sizeof(msg) - 1, bad, 65),
                 -FERRY_EBADSIG);
    /* OpenSSL's own Ed25519 signature verifies through the library. */
    {
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        unsigned char os[64];
        size_t ol = sizeof(os);
        cr_assert_eq(EVP_DigestSignInit(m, NULL, NULL, NULL, ferry_jwk_evp_pkey(k)), 1);
        cr_assert_eq(EVP_DigestSign(m, os, &ol, (const unsigned char *)msg, sizeof(msg) - 1),
                     1);
        cr_assert_eq(ferry_jose_verify(FERRY_ALG_EDDSA, k, msg, sizeof(msg) - 1, os, ol), 0);
        EVP_MD_CTX_free(m);
    }
    free(sig);
    ferry_jwk_unref(k);
}

Test(rsa, b4_signature_length)
{
    ferry_jwk *k = rsa2048();
    static const char msg[] = "eyJhbGciOiJSUzI1NiJ9.e30";
    unsigned char *sig = NULL, bad[300];
    size_t slen = 0;

    cr_assert_eq(ferry_jose_sign(FERRY_ALG_RS256, k, msg, sizeof(msg) - 1, &sig, &slen), 0);
    cr_assert_eq(slen, 256);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_RS256, k, msg, sizeof(msg) - 1, sig, slen), 0);
    /* A leading zero octet is the same integer but not the modulus length. */
    bad[0] = 0;
    memcpy(bad + 1, sig, slen);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_RS256, k, msg, sizeof(msg) - 1, bad, slen + 1),
                 -FERRY_EBADSIG);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_RS256, k, msg, sizeof(msg) - 1, sig, slen - 1),
                 -FERRY_EBADSIG);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_RS256, k, msg, sizeof(msg) - 1, sig + 1, slen - 1),
                 -FERRY_EBADSIG);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_RS256, k, msg, sizeof(msg) - 1, sig, 0),
                 -FERRY_EBADSIG);
    memset(bad, 0, 256);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_RS256, k, msg, sizeof(msg) - 1, bad, 256),
                 -FERRY_EBADSIG);
    memset(bad, 0xff, 256);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_RS256, k, msg, sizeof(msg) - 1, bad, 256),
                 -FERRY_EBADSIG);
    /* OpenSSL's own PKCS#1 v1.5 signatures verify for all three hashes. */
    {
        const EVP_MD *mds[] = {EVP_sha256(), EVP_sha384(), EVP_sha512()};
        ferry_alg as[] = {FERRY_ALG_RS256, FERRY_ALG_RS384, FERRY_ALG_RS512};
        for (int i = 0; i < 3; i++) {
            size_t l = ossl_sign(ferry_jwk_evp_pkey(k), mds[i], RSA_PKCS1_PADDING, 0, msg,
                                 sizeof(msg) - 1, bad, sizeof(bad));
            cr_assert_eq(ferry_jose_verify(as[i], k, msg, sizeof(msg) - 1, bad, l), 0);
            cr_assert_eq(ferry_jose_verify(as[(i + 1) % 3], k, msg, sizeof(msg) - 1, bad, l),
                         -FERRY_EBADSIG);
        }
    }
    free(sig);
    ferry_jwk_unref(k);
}

/* ---- B5: PSS salt length -------------------------------------------------------------- */

Test(rsa, b5_pss_salt_pinned)
{
    ferry_jwk *k = rsa2048();
    EVP_PKEY *p = ferry_jwk_evp_pkey(k);
    static const char msg[] = "eyJhbGciOiJQUzI1NiJ9.e30";
    unsigned char sig[256];
    const EVP_MD *mds[] = {EVP_sha256(), EVP_sha384(), EVP_sha512()};
    ferry_alg as[] = {FERRY_ALG_PS256, FERRY_ALG_PS384, FERRY_ALG_PS512};
    int hl[] = {32, 48, 64};

    for (int i = 0; i < 3; i++) {
        int salts[] = {0, 20, hl[i] - 1, hl[i] + 1, 100};
        size_t l = ossl_sign(p, mds[i], RSA_PKCS1_PSS_PADDING, hl[i], msg, sizeof(msg) - 1,
                             sig, sizeof(sig));
        cr_assert_eq(ferry_jose_verify(as[i], k, msg, sizeof(msg) - 1, sig, l), 0,
                     "salt = hash length accepted");
        for (size_t j = 0; j < sizeof(salts) / sizeof(salts[0]); j++) {
            l = ossl_sign(p, mds[i], RSA_PKCS1_PSS_PADDING, salts[j], msg, sizeof(msg) - 1, sig,
                          sizeof(sig));
            cr_assert_eq(ferry_jose_verify(as[i], k, msg, sizeof(msg) - 1, sig, l),
                         -FERRY_EBADSIG, "PS%d salt %d", hl[i] * 8, salts[j]);
        }
    }
    /* Our own PS256 signatures use salt = 32: OpenSSL verifies them with the salt pinned. */
    {
        unsigned char *s = NULL, dg[32];
        size_t sl = 0;
        unsigned int dl = 0;
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, p, NULL);
        cr_assert_eq(ferry_jose_sign(FERRY_ALG_PS256, k, msg, sizeof(msg) - 1, &s, &sl), 0);
        cr_assert_eq(EVP_Digest(msg, sizeof(msg) - 1, dg, &dl, EVP_sha256(), NULL), 1);
        cr_assert_eq(EVP_PKEY_verify_init(c), 1);
        cr_assert_gt(EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PSS_PADDING), 0);
        cr_assert_gt(EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()), 0);
        cr_assert_gt(EVP_PKEY_CTX_set_rsa_mgf1_md(c, EVP_sha256()), 0);
        cr_assert_gt(EVP_PKEY_CTX_set_rsa_pss_saltlen(c, 32), 0);
        cr_assert_eq(EVP_PKEY_verify(c, s, sl, dg, dl), 1);
        /* ... and not with another pinned salt length. */
        cr_assert_gt(EVP_PKEY_CTX_set_rsa_pss_saltlen(c, 20), 0);
        cr_assert_neq(EVP_PKEY_verify(c, s, sl, dg, dl), 1);
        EVP_PKEY_CTX_free(c);
        free(s);
    }
    ferry_jwk_unref(k);
}

/* ---- B6: no key ------------------------------------------------------------------------ */

Test(binding, b6_null_key)
{
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    char *tok = sign_token(k, FERRY_ALG_ES256, "{}");
    ferry_jws *jws = NULL;
    ferry_jwks *empty = NULL;
    size_t skipped = 99;

    cr_assert_eq(ferry_jws_parse(tok, strlen(tok), &jws), 0);
    for (ferry_alg a = FERRY_ALG_UNKNOWN; a <= FERRY_ALG_MAX; a++)
        cr_assert_eq(ferry_jose_verify(a, NULL, "m", 1, "s", 1), -FERRY_ENOKEY);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_ES256, NULL, NULL, 0, NULL, 0), -FERRY_ENOKEY);
    cr_assert_eq(ferry_jws_verify(jws, NULL), -FERRY_ENOKEY);
    cr_assert_eq(ferry_jws_verify(NULL, k), -EINVAL);

    cr_assert_eq(ferry_jwks_from_buffer("{\"keys\":[]}", 11, &empty, &skipped), 0);
    cr_assert_eq(skipped, 0);
    cr_assert_eq(ferry_jwks_count(empty), 0);
    cr_assert_null(ferry_jwks_find(empty, jws->kid));
    cr_assert_null(ferry_jwks_find(empty, NULL));
    cr_assert_null(ferry_jwks_get(empty, 0));
    cr_assert_eq(ferry_jws_verify(jws, ferry_jwks_find(empty, jws->kid)), -FERRY_ENOKEY);
    cr_assert_null(ferry_jwks_find(NULL, "x"));
    cr_assert_eq(ferry_jwks_count(NULL), 0);
    /* Sign with no key. */
    cr_assert_eq(ferry_jose_sign(FERRY_ALG_ES256, NULL, "m", 1, &(unsigned char *){NULL},
                                 &(size_t){0}),
                 -FERRY_ENOKEY);
    ferry_jwks_unref(empty);
    ferry_jws_free(jws);
    free(tok);
    ferry_jwk_unref(k);
}

/* ---- JWK import ----------------------------------------------------------------------- */

Test(jwk, rsa_policy, .timeout = 60)
{
    EVP_PKEY *p1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    ferry_jwk *good = rsa2048();
    json_t *o;
    BIGNUM *n = NULL, *e = BN_new();

    cr_assert_not_null(p1024);
    /* RSA-1024: weak, as JWK and as PEM. */
    o = rsa_jwk_of(p1024);
    cr_assert_eq(import_obj(o, 0), -FERRY_EWEAKKEY);
    json_decref(o);
    {
        size_t l;
        char *pem = pkey_pem(p1024, false, &l);
        ferry_jwk *k = NULL;
        cr_assert_eq(ferry_jwk_from_pem(pem, l, &k), -FERRY_EWEAKKEY);
        cr_assert_null(k);
        free(pem);
    }
    cr_assert_eq(EVP_PKEY_get_bn_param(ferry_jwk_evp_pkey(good), OSSL_PKEY_PARAM_RSA_N, &n), 1);
    /* Exponents: 1, even, 0, huge -> refused; 3 and 65537 accepted. */
    static const struct {
        unsigned long e;
        int rc;
    } es[] = {{1, -FERRY_EWEAKKEY}, {2, -FERRY_EWEAKKEY}, {65536, -FERRY_EWEAKKEY},
              {0, -FERRY_EWEAKKEY}, {3, 0}, {65537, 0}, {17, 0}};
    for (size_t i = 0; i < sizeof(es) / sizeof(es[0]); i++) {
        cr_assert(BN_set_word(e, es[i].e));
        if (es[i].e == 0) {
            o = json_pack("{s:s, s:s}", "kty", "RSA", "e", "AA");
            unsigned char nb[512];
            set_b64(o, "n", nb, (size_t)BN_bn2bin(n, nb));
        } else {
            o = rsa_jwk_bn(n, e);
        }
        cr_assert_eq(import_obj(o, 0), es[i].rc, "e=%lu", es[i].e);
        json_decref(o);
    }
    /* e wider than 64 bits */
    o = json_pack("{s:s, s:s}", "kty", "RSA", "e", "AQAAAAAAAAAAAQ");
    {
        unsigned char nb[512];
        set_b64(o, "n", nb, (size_t)BN_bn2bin(n, nb));
    }
    cr_assert_neq(import_obj(o, 0), 0);
    json_decref(o);
    /* A modulus with leading zero octets is tolerated; export is canonical. */
    {
        unsigned char nb[520] = {0};
        int l = BN_bn2bin(n, nb + 2);
        ferry_jwk *k = NULL;
        char tp1[FERRY_THUMBPRINT_LEN + 1], tp2[FERRY_THUMBPRINT_LEN + 1];
        json_t *pub;
        o = json_pack("{s:s, s:s}", "kty", "RSA", "e", "AQAB");
        set_b64(o, "n", nb, (size_t)l + 2);
        cr_assert_eq(ferry_jwk_from_json(o, 0, &k), 0);
        cr_assert_eq(ferry_jwk_thumbprint(k, tp1), 0);
        cr_assert_eq(ferry_jwk_thumbprint(good, tp2), 0);
        cr_assert_str_eq(tp1, tp2);
        pub = pub_json(k);
        json_t *gpub = pub_json(good);
        cr_assert_str_eq(json_string_value(json_object_get(pub, "n")),
                         json_string_value(json_object_get(gpub, "n")));
        json_decref(gpub);
        json_decref(pub);
        ferry_jwk_unref(k);
        json_decref(o);
    }
    /* A modulus above 8192 bits is refused without any bignum work. */
    {
        unsigned char big[1100];
        memset(big, 0xc3, sizeof(big));
        o = json_pack("{s:s, s:s}", "kty", "RSA", "e", "AQAB");
        set_b64(o, "n", big, 1030);
        cr_assert_eq(import_obj(o, 0), -FERRY_EUNSUPPORTED);
        json_decref(o);
        o = json_pack("{s:s, s:s}", "kty", "RSA", "e", "AQAB");
        set_b64(o, "n", big, 1025); /* 8200 bits */
        cr_assert_eq(import_obj(o, 0), -FERRY_EUNSUPPORTED);
        json_decref(o);
    }
    /* A modulus with a small prime factor: 3 * t, t odd with its top two bits set. */
    {
        BIGNUM *m = BN_new();
        cr_assert(BN_rand(m, 2046, BN_RAND_TOP_TWO, BN_RAND_BOTTOM_ODD) && BN_mul_word(m, 3));
        cr_assert_eq(BN_num_bits(m), 2048);
        cr_assert(BN_set_word(e, 65537));
        o = rsa_jwk_bn(m, e);
        cr_assert_eq(import_obj(o, 0), -FERRY_EWEAKKEY);
        json_decref(o);
        BN_free(m);
    }
    /* Missing or mistyped members. */
    cr_assert_eq(import_json("{\"kty\":\"RSA\",\"e\":\"AQAB\"}", 0), -FERRY_EMALFORMED);
    cr_assert_eq(import_json("{\"kty\":\"RSA\",\"n\":\"AQAB\"}", 0), -FERRY_EMALFORMED);
    cr_assert_eq(import_json("{\"kty\":\"RSA\",\"n\":1,\"e\":\"AQAB\"}", 0), -FERRY_EMALFORMED);
    cr_assert_eq(import_json("{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":65537}", 0),
                 -FERRY_EMALFORMED);
    cr_assert_eq(import_json("{\"kty\":\"RSA\",\"n\":\"AQ=B\",\"e\":\"AQAB\"}", 0),
                 -FERRY_EMALFORMED);
    cr_assert_eq(import_json("{\"kty\":\"RSA\",\"n\":\"\",\"e\":\"AQAB\"}", 0),
                 -FERRY_EMALFORMED);
    BN_free(n);
    BN_free(e);
    EVP_PKEY_free(p1024);
    ferry_jwk_unref(good);
}

Test(jwk, ec_policy)
{
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    json_t *o = pub_json(k);
    unsigned char y[33];
    size_t yl;
    const char *ys = json_string_value(json_object_get(o, "y"));

    cr_assert_eq(import_obj(o, 0), 0);
    /* Off-curve: flip a bit of y. */
    cr_assert_eq(ferry_b64url_decode(ys, strlen(ys), y, &yl), 0);
    cr_assert_eq(yl, 32);
    y[31] ^= 1;
    {
        json_t *bad = json_deep_copy(o);
        set_b64(bad, "y", y, 32);
        cr_assert_eq(import_obj(bad, 0), -FERRY_EWEAKKEY);
        /* Coordinates of the wrong length (leading zero added, or one byte short). */
        y[31] ^= 1;
        unsigned char y33[33] = {0};
        memcpy(y33 + 1, y, 32);
        set_b64(bad, "y", y33, 33);
        cr_assert_eq(import_obj(bad, 0), -FERRY_EMALFORMED);
        set_b64(bad, "y", y, 31);
        cr_assert_eq(import_obj(bad, 0), -FERRY_EMALFORMED);
        /* The point at infinity / all-zero coordinates. */
        unsigned char z[32] = {0};
        set_b64(bad, "x", z, 32);
        set_b64(bad, "y", z, 32);
        cr_assert_eq(import_obj(bad, 0), -FERRY_EWEAKKEY);
        json_decref(bad);
    }
    /* Curves. */
    static const char *const crvs[] = {"P-521", "secp256k1", "P-256K", "p-256", "P256",
                                       "brainpoolP256r1", "Ed25519", "X25519", ""};
    for (size_t i = 0; i < sizeof(crvs) / sizeof(crvs[0]); i++) {
        json_t *bad = json_deep_copy(o);
        json_object_set_new(bad, "crv", json_string(crvs[i]));
        cr_assert_eq(import_obj(bad, 0), -FERRY_EUNSUPPORTED, "%s", crvs[i]);
        json_decref(bad);
    }
    {
        json_t *bad = json_deep_copy(o);
        json_object_del(bad, "crv");
        cr_assert_eq(import_obj(bad, 0), -FERRY_EMALFORMED);
        json_object_set_new(bad, "crv", json_integer(256));
        cr_assert_eq(import_obj(bad, 0), -FERRY_EMALFORMED);
        json_decref(bad);
        bad = json_deep_copy(o);
        json_object_del(bad, "x");
        cr_assert_eq(import_obj(bad, 0), -FERRY_EMALFORMED);
        json_decref(bad);
        /* A P-256 key presented as P-384 (coordinates of the wrong length). */
        bad = json_deep_copy(o);
        json_object_set_new(bad, "crv", json_string("P-384"));
        cr_assert_eq(import_obj(bad, 0), -FERRY_EKEYMISMATCH, "declares alg ES256");
        json_object_del(bad, "alg");
        cr_assert_eq(import_obj(bad, 0), -FERRY_EMALFORMED);
        json_decref(bad);
    }
    /* A real P-521 JWK (RFC 7520 §3.1 shape) is unsupported. */
    cr_assert_eq(
        import_json("{\"kty\":\"EC\",\"kid\":\"bilbo.baggins@hobbiton.example\",\"use\":\"sig\","
                    "\"crv\":\"P-521\",\"x\":\"AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_"
                    "oJXu9A5RkTKqjqvjyekWF-7ytDyRXYgCF5cj0Kt\",\"y\":\"AdymlHvOiLxXkEhayXQnNCvDX4h"
                    "9htZaCJN34kfmC6pV5OhQHiraVySsUdaQkAgDPrwQrJmbnX9cwlGfP-HqHZR1\"}",
                    0),
        -FERRY_EUNSUPPORTED);
    json_decref(o);
    ferry_jwk_unref(k);
}

Test(jwk, okp_policy)
{
    ferry_jwk *k = gen(FERRY_ALG_EDDSA);
    json_t *o = pub_json(k);

    cr_assert_eq(import_obj(o, 0), 0);
    static const char *const crvs[] = {"Ed448", "X25519", "X448", "ed25519", "P-256"};
    for (size_t i = 0; i < sizeof(crvs) / sizeof(crvs[0]); i++) {
        json_t *bad = json_deep_copy(o);
        json_object_set_new(bad, "crv", json_string(crvs[i]));
        cr_assert_eq(import_obj(bad, 0), -FERRY_EUNSUPPORTED, "%s", crvs[i]);
        json_decref(bad);
    }
    {
        unsigned char x[33] = {0};
        json_t *bad = json_deep_copy(o);
        set_b64(bad, "x", x, 31);
        cr_assert_eq(import_obj(bad, 0), -FERRY_EMALFORMED);
        set_b64(bad, "x", x, 33);
        cr_assert_eq(import_obj(bad, 0), -FERRY_EMALFORMED);
        json_decref(bad);
    }
    /* Private Ed25519 whose x does not belong to d is refused. */
    {
        json_t *priv = jparse("{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                              "\"d\":\"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\"}");
        json_object_set(priv, "x", json_object_get(o, "x"));
        cr_assert_eq(import_obj(priv, FERRY_JWK_ALLOW_PRIVATE), -FERRY_EWEAKKEY);
        json_decref(priv);
    }
    json_decref(o);
    ferry_jwk_unref(k);
}

Test(jwk, common_members)
{
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    json_t *o = pub_json(k);
    static const struct {
        const char *member;
        const char *json;
        int rc;
    } cases[] = {
        {"use", "\"sig\"", 0},
        {"use", "\"enc\"", -FERRY_EUNSUPPORTED},
        {"use", "\"SIG\"", -FERRY_EUNSUPPORTED},
        {"use", "[\"sig\"]", -FERRY_EMALFORMED},
        {"use", "null", -FERRY_EMALFORMED},
        {"key_ops", "[\"verify\"]", 0},
        {"key_ops", "[\"sign\",\"verify\"]", 0},
        {"key_ops", "[\"encrypt\"]", -FERRY_EUNSUPPORTED},
        {"key_ops", "[]", -FERRY_EUNSUPPORTED},
        {"key_ops", "[\"verify\",\"verify\"]", -FERRY_EMALFORMED},
        {"key_ops", "[\"verify\",1]", -FERRY_EMALFORMED},
        {"key_ops", "\"verify\"", -FERRY_EMALFORMED},
        {"kid", "\"k1\"", 0},
        {"kid", "1", -FERRY_EMALFORMED},
        {"kid", "\"\"", -FERRY_EMALFORMED},
        {"kid", "null", -FERRY_EMALFORMED},
        {"kty", "\"ec\"", -FERRY_EUNSUPPORTED},
        {"kty", "\"foo\"", -FERRY_EUNSUPPORTED},
        {"kty", "1", -FERRY_EMALFORMED},
        {"kty", "null", -FERRY_EMALFORMED},
        {"x", "123", -FERRY_EMALFORMED},
        {"x", "\"a b\"", -FERRY_EMALFORMED},
        {"d", "\"AAAA\"", -FERRY_EUNSUPPORTED},
        {"p", "\"AAAA\"", -FERRY_EUNSUPPORTED},
        {"k", "\"AAAA\"", -FERRY_EUNSUPPORTED},
        {"x5c", "[\"MIIB\"]", 0},
        {"ext", "true", 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_error_t err;
        json_t *c = json_deep_copy(o);
        json_t *v = json_loadb(cases[i].json, strlen(cases[i].json), JSON_DECODE_ANY, &err);
        cr_assert_not_null(v);
        json_object_set_new(c, cases[i].member, v);
        cr_assert_eq(import_obj(c, 0), cases[i].rc, "%s: %s", cases[i].member, cases[i].json);
        json_decref(c);
    }
    /* kid length limit */
    {
        char kid[FERRY_KID_MAX_LEN + 2];
        json_t *c = json_deep_copy(o);
        memset(kid, 'a', sizeof(kid));
        kid[FERRY_KID_MAX_LEN] = 0;
        json_object_set_new(c, "kid", json_string(kid));
        cr_assert_eq(import_obj(c, 0), 0);
        kid[FERRY_KID_MAX_LEN] = 'a';
        kid[FERRY_KID_MAX_LEN + 1] = 0;
        json_object_set_new(c, "kid", json_string(kid));
        cr_assert_eq(import_obj(c, 0), -FERRY_ETOOBIG);
        /* A kid with an embedded NUL (a json_t built by a caller, not parsed) would be
         * stored truncated and found under another kid: refused. */
        json_object_set_new(c, "kid", json_stringn("k1\0evil", 7));
        cr_assert_eq(import_obj(c, 0), -FERRY_EMALFORMED);
        json_decref(c);
    }
    /* Not an object, NULL, bad flags. */
    {
        json_t *a = json_array();
        ferry_jwk *x = NULL;
        cr_assert_eq(ferry_jwk_from_json(a, 0, &x), -FERRY_EMALFORMED);
        cr_assert_eq(ferry_jwk_from_json(NULL, 0, &x), -EINVAL);
        cr_assert_eq(ferry_jwk_from_json(o, 0x100, &x), -EINVAL);
        cr_assert_eq(ferry_jwk_from_json(o, 0, NULL), -EINVAL);
        json_decref(a);
    }
    json_decref(o);
    ferry_jwk_unref(k);
}

/* Private JWKs: accepted with the flag, consistency checked, exported public only. */
Test(jwk, private_members)
{
    EVP_PKEY *p = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    BIGNUM *x = NULL, *y = NULL, *d = NULL;
    unsigned char buf[32];
    json_t *o = json_pack("{s:s, s:s}", "kty", "EC", "crv", "P-256");
    ferry_jwk *k = NULL;

    cr_assert_eq(EVP_PKEY_get_bn_param(p, OSSL_PKEY_PARAM_EC_PUB_X, &x), 1);
    cr_assert_eq(EVP_PKEY_get_bn_param(p, OSSL_PKEY_PARAM_EC_PUB_Y, &y), 1);
    cr_assert_eq(EVP_PKEY_get_bn_param(p, OSSL_PKEY_PARAM_PRIV_KEY, &d), 1);
    bn_to_field(x, buf, 32);
    set_b64(o, "x", buf, 32);
    bn_to_field(y, buf, 32);
    set_b64(o, "y", buf, 32);
    bn_to_field(d, buf, 32);
    set_b64(o, "d", buf, 32);
    cr_assert_eq(ferry_jwk_from_json(o, 0, &k), -FERRY_EUNSUPPORTED);
    cr_assert_eq(ferry_jwk_from_json(o, FERRY_JWK_ALLOW_PRIVATE, &k), 0);
    cr_assert(ferry_jwk_is_private(k));
    {
        char *tok = sign_token(k, FERRY_ALG_ES256, "{}");
        ferry_jwk *pk = from_openssl(p, false);
        cr_assert_eq(parse_verify(tok, strlen(tok), pk), 0, "signature from the imported d");
        ferry_jwk_unref(pk);
        free(tok);
    }
    ferry_jwk_unref(k);
    /* d that does not belong to (x, y). */
    buf[5] ^= 0x40;
    set_b64(o, "d", buf, 32);
    cr_assert_eq(import_obj(o, FERRY_JWK_ALLOW_PRIVATE), -FERRY_EWEAKKEY);
    /* d of the wrong length. */
    set_b64(o, "d", buf, 31);
    cr_assert_eq(import_obj(o, FERRY_JWK_ALLOW_PRIVATE), -FERRY_EMALFORMED);
    json_decref(o);
    BN_free(x);
    BN_free(y);
    BN_free(d);
    EVP_PKEY_free(p);
}

/* RSA private JWK round trip through PEM, and refusal of incomplete / multi-prime keys. */
Test(jwk, rsa_private_jwk, .timeout = 60)
{
    static const char *const names[] = {"d", "p", "q", "dp", "dq", "qi"};
    static const char *const params[] = {
        OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
        OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
    };
    EVP_PKEY *p = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    json_t *o = rsa_jwk_of(p);
    ferry_jwk *k = NULL;

    for (size_t i = 0; i < 6; i++) {
        BIGNUM *bn = NULL;
        unsigned char b[300];
        cr_assert_eq(EVP_PKEY_get_bn_param(p, params[i], &bn), 1);
        set_b64(o, names[i], b, (size_t)BN_bn2bin(bn, b));
        BN_clear_free(bn);
    }
    cr_assert_eq(ferry_jwk_from_json(o, FERRY_JWK_ALLOW_PRIVATE, &k), 0);
    cr_assert(ferry_jwk_is_private(k));
    {
        json_t *pub = pub_json(k);
        for (size_t i = 0; i < 6; i++)
            cr_assert_null(json_object_get(pub, names[i]));
        json_decref(pub);
    }
    ferry_jwk_unref(k);
    /* Wrong CRT value -> consistency self-test fails. */
    {
        json_t *bad = json_deep_copy(o);
        const char *qi = json_string_value(json_object_get(o, "qi"));
        char *m = strdup(qi);
        m[3] = m[3] == 'A' ? 'B' : 'A';
        json_object_set_new(bad, "qi", json_string(m));
        cr_assert_eq(import_obj(bad, FERRY_JWK_ALLOW_PRIVATE), -FERRY_EWEAKKEY);
        free(m);
        json_decref(bad);
    }
    /* d without CRT members, and multi-prime "oth". */
    {
        json_t *bad = json_deep_copy(o);
        json_object_del(bad, "qi");
        cr_assert_eq(import_obj(bad, FERRY_JWK_ALLOW_PRIVATE), -FERRY_EUNSUPPORTED);
        json_decref(bad);
        bad = json_deep_copy(o);
        json_object_set_new(bad, "oth", json_array());
        cr_assert_eq(import_obj(bad, FERRY_JWK_ALLOW_PRIVATE), -FERRY_EUNSUPPORTED);
        json_decref(bad);
    }
    json_decref(o);
    EVP_PKEY_free(p);
}

/* ---- thumbprints, export ----------------------------------------------------------- */

Test(jwk, thumbprint_rfc7638)
{
    static const char jwk[] =
        "{\"kty\":\"RSA\",\"n\":\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86z"
        "wu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5"
        "w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpb"
        "ISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8aw"
        "apJzKnqDKgw\",\"e\":\"AQAB\",\"alg\":\"RS256\",\"kid\":\"2011-04-29\"}";
    json_t *o = jparse(jwk);
    ferry_jwk *k = NULL;
    char tp[FERRY_THUMBPRINT_LEN + 1];

    cr_assert_eq(ferry_jwk_from_json(o, 0, &k), 0);
    cr_assert_str_eq(ferry_jwk_kid(k), "2011-04-29");
    cr_assert_eq(ferry_jwk_alg(k), FERRY_ALG_RS256);
    cr_assert_eq(ferry_jwk_thumbprint(k, tp), 0);
    cr_assert_str_eq(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    cr_assert_eq(strlen(tp), FERRY_THUMBPRINT_LEN);
    ferry_jwk_unref(k);
    json_decref(o);
}

Test(jwk, thumbprint_rfc8037)
{
    json_t *o = jparse("{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                       "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}");
    ferry_jwk *k = NULL;
    char tp[FERRY_THUMBPRINT_LEN + 1];

    cr_assert_eq(ferry_jwk_from_json(o, 0, &k), 0);
    cr_assert_eq(ferry_jwk_thumbprint(k, tp), 0);
    cr_assert_str_eq(tp, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    ferry_jwk_unref(k);
    json_decref(o);
}

/* The same values read from the shared RFC example files. */
Test(jwk, thumbprint_vectors)
{
    static const char *const pairs[][2] = {
        {"jose-rfc-examples/rfc7638_3.1.jwk", "jose-rfc-examples/rfc7638_3.1.thp"},
        {"jose-rfc-examples/rfc8037_A.2.jwk", "jose-rfc-examples/rfc8037_A.3.thp"},
        {"jose-rfc-examples/rfc8037_A.1.jwk", "jose-rfc-examples/rfc8037_A.3.thp"},
    };

    TU_REQUIRE_VECTORS();
    for (size_t i = 0; i < 3; i++) {
        char *jp = tu_vector_path(pairs[i][0]), *tpp = tu_vector_path(pairs[i][1]);
        json_t *o = tu_load_json(jp);
        size_t len = 0;
        char *expect = tu_read_file(tpp, 1024, &len);
        ferry_jwk *k = NULL;
        char tp[FERRY_THUMBPRINT_LEN + 1];

        cr_assert_not_null(o, "%s", jp);
        cr_assert_not_null(expect, "%s", tpp);
        while (len && (expect[len - 1] == '\n' || expect[len - 1] == '\r'))
            expect[--len] = 0;
        cr_assert_eq(ferry_jwk_from_json(o, FERRY_JWK_ALLOW_PRIVATE, &k), 0);
        cr_assert_eq(ferry_jwk_thumbprint(k, tp), 0);
        cr_assert_str_eq(tp, expect);
        ferry_jwk_unref(k);
        json_decref(o);
        free(expect);
        free(jp);
        free(tpp);
    }
}

/* E8: public export of every key type never contains private members. */
Test(jwk, public_export_no_private, .timeout = 60)
{
    static const char *const priv[] = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"};
    ferry_alg as[] = {FERRY_ALG_RS256, FERRY_ALG_ES256, FERRY_ALG_ES384, FERRY_ALG_EDDSA};
    ferry_jwk *keys[4];
    ferry_jwks *set = NULL;
    json_t *doc = NULL;

    for (size_t i = 0; i < 4; i++) {
        json_t *o;
        keys[i] = gen(as[i]);
        cr_assert(ferry_jwk_is_private(keys[i]));
        o = pub_json(keys[i]);
        for (size_t j = 0; j < sizeof(priv) / sizeof(priv[0]); j++)
            cr_assert_null(json_object_get(o, priv[j]), "%s in %s", priv[j],
                           ferry_alg_name(as[i]));
        cr_assert_str_eq(json_string_value(json_object_get(o, "use")), "sig");
        cr_assert_str_eq(json_string_value(json_object_get(o, "alg")), ferry_alg_name(as[i]));
        cr_assert_str_eq(json_string_value(json_object_get(o, "kid")), ferry_jwk_kid(keys[i]));
        json_decref(o);
    }
    cr_assert_eq(ferry_jwks_from_keys(keys, 4, &set), 0);
    cr_assert_eq(ferry_jwks_to_public_json(set, &doc), 0);
    {
        /* Serialize and re-read the document as a verifier would. */
        char *s = json_dumps(doc, JSON_COMPACT);
        ferry_jwks *back = NULL;
        size_t skipped = 9;
        cr_assert_not_null(s);
        for (size_t j = 0; j < sizeof(priv) / sizeof(priv[0]); j++) {
            char needle[16];
            snprintf(needle, sizeof(needle), "\"%s\":", priv[j]);
            cr_assert_null(strstr(s, needle), "%s in %s", needle, s);
        }
        cr_assert_eq(ferry_jwks_from_buffer(s, strlen(s), &back, &skipped), 0);
        cr_assert_eq(skipped, 0);
        cr_assert_eq(ferry_jwks_count(back), 4);
        for (size_t i = 0; i < 4; i++) {
            ferry_jwk *pk = ferry_jwks_find(back, ferry_jwk_kid(keys[i]));
            char *tok = sign_token(keys[i], as[i], "{}");
            cr_assert_not_null(pk);
            cr_assert_not(ferry_jwk_is_private(pk));
            cr_assert_eq(parse_verify(tok, strlen(tok), pk), 0);
            free(tok);
        }
        ferry_jwks_unref(back);
        free(s);
    }
    json_decref(doc);
    ferry_jwks_unref(set);
    for (size_t i = 0; i < 4; i++)
        ferry_jwk_unref(keys[i]);
}

/* ---- PEM ------------------------------------------------------------------------------- */

Test(pem, import_export, .timeout = 60)
{
    ferry_alg as[] = {FERRY_ALG_ES256, FERRY_ALG_ES384, FERRY_ALG_EDDSA, FERRY_ALG_RS256};

    for (size_t i = 0; i < 4; i++) {
        ferry_jwk *k = i == 3 ? rsa2048() : gen(as[i]), *k2 = NULL, *pub = NULL;
        char *pem = NULL, *ppem = NULL, tp[FERRY_THUMBPRINT_LEN + 1];
        size_t len = 0, plen = 0;

        cr_assert_eq(ferry_jwk_to_pem(k, &pem, &len), 0);
        cr_assert_eq(strlen(pem), len);
        cr_assert_not_null(strstr(pem, "-----BEGIN PRIVATE KEY-----"), "PKCS#8: %s", pem);
        cr_assert_eq(ferry_jwk_from_pem(pem, len, &k2), 0);
        cr_assert(ferry_jwk_is_private(k2));
        cr_assert_eq(ferry_jwk_thumbprint(k, tp), 0);
        cr_assert_str_eq(ferry_jwk_kid(k2), tp, "kid = thumbprint");
        cr_assert_eq(ferry_jwk_alg(k2), FERRY_ALG_UNKNOWN);
        /* Public PEM from the public-only key. */
        json_t *o = pub_json(k);
        cr_assert_eq(ferry_jwk_from_json(o, 0, &pub), 0);
        cr_assert_eq(ferry_jwk_to_pem(pub, &ppem, &plen), 0);
        cr_assert_not_null(strstr(ppem, "-----BEGIN PUBLIC KEY-----"));
        cr_assert_null(strstr(ppem, "PRIVATE"));
        ferry_jwk *pub2 = NULL;
        cr_assert_eq(ferry_jwk_from_pem(ppem, plen, &pub2), 0);
        cr_assert_not(ferry_jwk_is_private(pub2));
        cr_assert_str_eq(ferry_jwk_kid(pub2), tp);
        {
            ferry_alg a = i == 3 ? FERRY_ALG_RS256 : as[i];
            char *tok = sign_token(k2, a, "{}");
            cr_assert_eq(parse_verify(tok, strlen(tok), pub2), 0);
            free(tok);
        }
        ferry_jwk_pem_free(pem, len);
        ferry_jwk_pem_free(ppem, plen);
        ferry_jwk_pem_free(NULL, 0);
        json_decref(o);
        ferry_jwk_unref(pub2);
        ferry_jwk_unref(pub);
        ferry_jwk_unref(k2);
        ferry_jwk_unref(k);
    }
}

Test(pem, refused)
{
    ferry_jwk *k = NULL;
    size_t len;
    char *pem;

    cr_assert_eq(ferry_jwk_from_pem("garbage", 7, &k), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_jwk_from_pem("", 0, &k), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_jwk_from_pem(NULL, 0, &k), -EINVAL);
    {
        static const char bad[] = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        cr_assert_eq(ferry_jwk_from_pem(bad, sizeof(bad) - 1, &k), -FERRY_EMALFORMED);
    }
    /* Unsupported key types and curves. */
    {
        EVP_PKEY *ps[] = {EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521"),
                          EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1"),
                          EVP_PKEY_Q_keygen(NULL, NULL, "X25519"),
                          EVP_PKEY_Q_keygen(NULL, NULL, "ED448")};
        for (size_t i = 0; i < 4; i++) {
            cr_assert_not_null(ps[i]);
            pem = pkey_pem(ps[i], true, &len);
            cr_assert_eq(ferry_jwk_from_pem(pem, len, &k), -FERRY_EUNSUPPORTED, "key %zu", i);
            cr_assert_null(k);
            free(pem);
            EVP_PKEY_free(ps[i]);
        }
    }
    /* Encrypted PEM: refused, no passphrase prompt. */
    {
        EVP_PKEY *p = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        BIO *bio = BIO_new(BIO_s_mem());
        char *data;
        cr_assert_eq(PEM_write_bio_PrivateKey(bio, p, EVP_aes_128_cbc(),
                                              (unsigned char *)"secret", 6, NULL, NULL),
                     1);
        long n = BIO_get_mem_data(bio, &data);
        cr_assert_neq(ferry_jwk_from_pem(data, (size_t)n, &k), 0);
        cr_assert_null(k);
        BIO_free(bio);
        EVP_PKEY_free(p);
    }
    /* Oversized input. */
    {
        char *big = calloc(1, 1 << 20);
        cr_assert_eq(ferry_jwk_from_pem(big, 1 << 20, &k), -FERRY_ETOOBIG);
        free(big);
    }
}

/* ---- generation ------------------------------------------------------------------------- */

Test(jwk, generate, .timeout = 60)
{
    struct {
        ferry_alg alg;
        const char *type;
        int bits;
    } cases[] = {
        {FERRY_ALG_ES256, "EC", 256},
        {FERRY_ALG_ES384, "EC", 384},
        {FERRY_ALG_EDDSA, "ED25519", 256},
        {FERRY_ALG_RS384, "RSA", 3072},
    };

    for (size_t i = 0; i < 4; i++) {
        ferry_jwk *k = gen(cases[i].alg), *k2 = gen(cases[i].alg);
        char tp[FERRY_THUMBPRINT_LEN + 1];
        EVP_PKEY *p = ferry_jwk_evp_pkey(k);
        cr_assert(EVP_PKEY_is_a(p, cases[i].type));
        cr_assert_eq(EVP_PKEY_get_bits(p), cases[i].bits);
        cr_assert_eq(ferry_jwk_alg(k), cases[i].alg);
        cr_assert(ferry_jwk_allows(k, cases[i].alg));
        cr_assert_eq(ferry_jwk_thumbprint(k, tp), 0);
        cr_assert_str_eq(ferry_jwk_kid(k), tp);
        cr_assert_str_neq(ferry_jwk_kid(k), ferry_jwk_kid(k2), "fresh keys");
        cr_assert_eq(ferry_jwk_ref(k), k);
        ferry_jwk_unref(k);
        ferry_jwk_unref(k);
        ferry_jwk_unref(k2);
    }
    cr_assert_eq(ferry_jwk_generate(FERRY_ALG_UNKNOWN, &(ferry_jwk *){NULL}),
                 -FERRY_EUNSUPPORTED);
    cr_assert_eq(ferry_jwk_generate(FERRY_ALG_MAX, &(ferry_jwk *){NULL}), -FERRY_EUNSUPPORTED);
    cr_assert_eq(ferry_jwk_generate(FERRY_ALG_ES256, NULL), -EINVAL);
    ferry_jwk_unref(NULL);
    cr_assert_null(ferry_jwk_ref(NULL));
    cr_assert_null(ferry_jwk_kid(NULL));
    cr_assert_not(ferry_jwk_is_private(NULL));
    cr_assert_null(ferry_jwk_evp_pkey(NULL));
    cr_assert_not(ferry_jwk_allows(NULL, FERRY_ALG_ES256));
}

/* ---- JWKS --------------------------------------------------------------------------------- */

static json_t *key_with_kid(const ferry_jwk *k, const char *kid)
{
    json_t *o = pub_json(k);
    json_object_set_new(o, "kid", json_string(kid));
    return o;
}

/* D6: one document with every kind of bad key next to good ones. */
Test(jwks, d6_mixed, .timeout = 60)
{
    ferry_jwk *es = gen(FERRY_ALG_ES256), *ed = gen(FERRY_ALG_EDDSA), *rsa = rsa2048();
    EVP_PKEY *p1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    json_t *keys = json_array(), *doc, *o;
    ferry_jwks *set = NULL;
    size_t skipped = 0;
    unsigned char y[32];

    json_array_append_new(keys, key_with_kid(es, "good-es"));
    json_array_append_new(keys, key_with_kid(ed, "good-ed"));
    json_array_append_new(keys, key_with_kid(rsa, "good-rsa"));
    o = rsa_jwk_of(p1024);
    json_object_set_new(o, "kid", json_string("rsa1024"));
    json_array_append_new(keys, o);
    o = key_with_kid(rsa, "e1");
    json_object_set_new(o, "e", json_string("AQ"));
    json_array_append_new(keys, o);
    o = key_with_kid(es, "offcurve");
    memset(y, 0x11, sizeof(y));
    set_b64(o, "y", y, 32);
    json_array_append_new(keys, o);
    json_array_append_new(keys, jparse("{\"kty\":\"oct\",\"kid\":\"oct\",\"k\":\"c2VjcmV0\"}"));
    o = key_with_kid(es, "enc");
    json_object_set_new(o, "use", json_string("enc"));
    json_array_append_new(keys, o);
    json_array_append_new(keys, key_with_kid(es, "dup"));
    json_array_append_new(keys, key_with_kid(ed, "dup"));
    json_array_append_new(keys, jparse("{\"kty\":\"foo\",\"kid\":\"foo\"}"));
    json_array_append_new(keys, jparse("{\"kty\":\"EC\",\"kid\":\"p521\",\"crv\":\"P-521\","
                                       "\"x\":\"AA\",\"y\":\"AA\"}"));
    json_array_append_new(keys, json_string("not an object"));
    json_array_append_new(keys, json_null());
    doc = json_pack("{s:o}", "keys", keys);

    cr_assert_eq(ferry_jwks_from_json(doc, &set, &skipped), 0);
    cr_assert_eq(ferry_jwks_count(set), 3);
    cr_assert_eq(skipped, 11);
    cr_assert_not_null(ferry_jwks_find(set, "good-es"));
    cr_assert_not_null(ferry_jwks_find(set, "good-ed"));
    cr_assert_not_null(ferry_jwks_find(set, "good-rsa"));
    static const char *const gone[] = {"rsa1024", "e1", "offcurve", "oct", "enc", "dup", "foo",
                                       "p521", "GOOD-ES", "good-es ", ""};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
        cr_assert_null(ferry_jwks_find(set, gone[i]), "%s", gone[i]);
    /* Keys found are the ones imported, usable for verification. */
    {
        char *tok = sign_token(es, FERRY_ALG_ES256, "{}");
        cr_assert_eq(parse_verify(tok, strlen(tok), ferry_jwks_find(set, "good-es")), 0);
        cr_assert_eq(parse_verify(tok, strlen(tok), ferry_jwks_find(set, "dup")),
                     -FERRY_ENOKEY);
        free(tok);
    }
    /* ret_skipped is optional. */
    ferry_jwks_unref(set);
    set = NULL;
    cr_assert_eq(ferry_jwks_from_json(doc, &set, NULL), 0);
    cr_assert_eq(ferry_jwks_count(set), 3);
    cr_assert_eq(ferry_jwks_ref(set), set);
    ferry_jwks_unref(set);
    ferry_jwks_unref(set);
    json_decref(doc);
    EVP_PKEY_free(p1024);
    ferry_jwk_unref(es);
    ferry_jwk_unref(ed);
    ferry_jwk_unref(rsa);
}

Test(jwks, shape_and_limits)
{
    ferry_jwk *es = gen(FERRY_ALG_ES256);
    ferry_jwks *set = NULL;
    size_t skipped = 77;
    json_t *keys = json_array(), *doc;
    char kid[16];

    /* Exactly FERRY_JWKS_MAX_KEYS is fine, one more is too big. */
    for (int i = 0; i < FERRY_JWKS_MAX_KEYS; i++) {
        snprintf(kid, sizeof(kid), "k%d", i);
        json_array_append_new(keys, key_with_kid(es, kid));
    }
    doc = json_pack("{s:O}", "keys", keys);
    cr_assert_eq(ferry_jwks_from_json(doc, &set, &skipped), 0);
    cr_assert_eq(ferry_jwks_count(set), FERRY_JWKS_MAX_KEYS);
    cr_assert_eq(skipped, 0);
    cr_assert_not_null(ferry_jwks_get(set, FERRY_JWKS_MAX_KEYS - 1));
    cr_assert_null(ferry_jwks_get(set, FERRY_JWKS_MAX_KEYS));
    ferry_jwks_unref(set);
    set = NULL;
    json_array_append_new(keys, key_with_kid(es, "one-too-many"));
    skipped = 77;
    cr_assert_eq(ferry_jwks_from_json(doc, &set, &skipped), -FERRY_ETOOBIG);
    cr_assert_null(set);
    cr_assert_eq(skipped, 77, "not written on failure");
    {
        char *s = json_dumps(doc, JSON_COMPACT);
        cr_assert_eq(ferry_jwks_from_buffer(s, strlen(s), &set, NULL), -FERRY_ETOOBIG);
        free(s);
    }
    json_decref(doc);
    json_decref(keys);

    /* Wrong shapes. */
    static const char *const bad[] = {
        "[]", "{}", "{\"keys\":{}}", "{\"keys\":null}", "{\"keys\":\"x\"}", "{\"Keys\":[]}",
        "{\"keys\":[],\"keys\":[]}", "{\"keys\":[]", "{\"keys\":[]}x", "", "null",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(ferry_jwks_from_buffer(bad[i], strlen(bad[i]), &set, NULL),
                     -FERRY_EMALFORMED, "%s", bad[i]);
    cr_assert_null(set);
    /* Size cap before parsing, and depth. */
    {
        size_t n = FERRY_JWKS_MAX_LEN + 1;
        char *big = malloc(n);
        memset(big, ' ', n);
        memcpy(big, "{\"keys\":[]}", 11);
        cr_assert_eq(ferry_jwks_from_buffer(big, n, &set, NULL), -FERRY_ETOOBIG);
        cr_assert_eq(ferry_jwks_from_buffer(big, n - 1, &set, NULL), 0);
        ferry_jwks_unref(set);
        set = NULL;
        free(big);
    }
    {
        char deep[256];
        int o = snprintf(deep, sizeof(deep), "{\"keys\":[],\"x\":");
        for (int i = 0; i < 30; i++)
            deep[o++] = '[';
        for (int i = 0; i < 30; i++)
            deep[o++] = ']';
        deep[o++] = '}';
        cr_assert_eq(ferry_jwks_from_buffer(deep, (size_t)o, &set, NULL), -FERRY_ETOOBIG);
    }
    cr_assert_eq(ferry_jwks_from_buffer(NULL, 0, &set, NULL), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_jwks_from_buffer("{\"keys\":[],\"n\":1\0}", 17, &set, NULL),
                 -FERRY_EMALFORMED);
    cr_assert_eq(ferry_jwks_from_buffer("{\"keys\":[]}\0", 12, &set, NULL), -FERRY_EMALFORMED);
    cr_assert_eq(ferry_jwks_from_json(NULL, &set, NULL), -EINVAL);
    ferry_jwks_unref(NULL);
    cr_assert_null(ferry_jwks_ref(NULL));
    ferry_jwk_unref(es);
}

Test(jwks, from_keys)
{
    ferry_jwk *a = gen(FERRY_ALG_ES256), *b = gen(FERRY_ALG_EDDSA), *c = NULL;
    ferry_jwks *set = NULL;
    json_t *o = key_with_kid(a, ferry_jwk_kid(b));

    cr_assert_eq(ferry_jwk_from_json(o, 0, &c), 0);
    {
        ferry_jwk *ks[] = {a, b};
        cr_assert_eq(ferry_jwks_from_keys(ks, 2, &set), 0);
        cr_assert_eq(ferry_jwks_count(set), 2);
        cr_assert_eq(ferry_jwks_get(set, 0), a);
        cr_assert_eq(ferry_jwks_find(set, ferry_jwk_kid(b)), b);
    }
    {
        ferry_jwk *ks[] = {a, b, c};
        ferry_jwks *s2 = NULL;
        cr_assert_eq(ferry_jwks_from_keys(ks, 3, &s2), -FERRY_EDUPLICATE);
        cr_assert_null(s2);
        ferry_jwk *ks2[] = {a, NULL};
        cr_assert_eq(ferry_jwks_from_keys(ks2, 2, &s2), -EINVAL);
        cr_assert_eq(ferry_jwks_from_keys(NULL, 0, &s2), 0);
        cr_assert_eq(ferry_jwks_count(s2), 0);
        ferry_jwks_unref(s2);
    }
    /* The set holds its own references. */
    ferry_jwk_unref(a);
    ferry_jwk_unref(b);
    {
        char *tok = sign_token(ferry_jwks_get(set, 0), FERRY_ALG_ES256, "{}");
        cr_assert_eq(parse_verify(tok, strlen(tok), ferry_jwks_get(set, 0)), 0);
        free(tok);
    }
    json_decref(o);
    ferry_jwk_unref(c);
    ferry_jwks_unref(set);
}

/* ---- concurrency: one key shared by several threads ------------------------------------ */

struct thr_arg {
    const ferry_jwk *key;
    ferry_alg alg;
    const char *good;
    const char *bad;
};

static void *verify_loop(void *p)
{
    struct thr_arg *a = p;
    intptr_t fails = 0;

    for (int i = 0; i < 300; i++) {
        char *tok = NULL;
        if (parse_verify(a->good, strlen(a->good), a->key) != 0)
            fails++;
        if (parse_verify(a->bad, strlen(a->bad), a->key) != -FERRY_EBADSIG)
            fails++;
        /* Signing with the same shared key at the same time. */
        if (i % 10 == 0) {
            if (ferry_jws_sign(a->key, a->alg, NULL, "{}", 2, &tok) != 0 ||
                parse_verify(tok, strlen(tok), a->key) != 0)
                fails++;
            free(tok);
        }
    }
    return (void *)fails;
}

Test(jws, shared_key_threads, .timeout = 120)
{
    ferry_jwk *ks[] = {gen(FERRY_ALG_ES256), rsa2048()};
    ferry_alg as[] = {FERRY_ALG_ES256, FERRY_ALG_PS256};

    for (size_t k = 0; k < 2; k++) {
        char *good = sign_token(ks[k], as[k], "{\"n\":1}");
        char *bad = strdup(good);
        size_t n = strlen(bad);
        pthread_t th[4];
        struct thr_arg arg = {ks[k], as[k], good, bad};

        bad[n - 3] = bad[n - 3] == 'A' ? 'B' : 'A';
        for (int i = 0; i < 4; i++)
            cr_assert_eq(pthread_create(&th[i], NULL, verify_loop, &arg), 0);
        for (int i = 0; i < 4; i++) {
            void *r;
            cr_assert_eq(pthread_join(th[i], &r), 0);
            cr_assert_eq((intptr_t)r, 0);
        }
        free(good);
        free(bad);
        ferry_jwk_unref(ks[k]);
    }
}

/* ---- argument checks ----------------------------------------------------------------- */

Test(jose, arguments)
{
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    unsigned char *sig = NULL;
    size_t sl = 0;
    char tp[FERRY_THUMBPRINT_LEN + 1];

    cr_assert_eq(ferry_jose_verify(FERRY_ALG_ES256, k, NULL, 5, "s", 1), -EINVAL);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_ES256, k, "m", 1, NULL, 64), -EINVAL);
    cr_assert_eq(ferry_jose_sign(FERRY_ALG_ES256, k, NULL, 5, &sig, &sl), -EINVAL);
    cr_assert_eq(ferry_jose_sign(FERRY_ALG_ES256, k, "m", 1, NULL, &sl), -EINVAL);
    /* Empty message is fine. */
    cr_assert_eq(ferry_jose_sign(FERRY_ALG_ES256, k, NULL, 0, &sig, &sl), 0);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_ES256, k, NULL, 0, sig, sl), 0);
    cr_assert_eq(ferry_jose_verify(FERRY_ALG_ES256, k, "", 0, sig, sl), 0);
    free(sig);
    cr_assert_eq(ferry_jwk_thumbprint(NULL, tp), -EINVAL);
    cr_assert_eq(ferry_jwk_to_public_json(NULL, &(json_t *){NULL}), -EINVAL);
    cr_assert_eq(ferry_jwk_to_pem(NULL, &(char *){NULL}, NULL), -EINVAL);
    cr_assert_eq(ferry_jws_sign(k, FERRY_ALG_ES256, NULL, NULL, 3, &(char *){NULL}), -EINVAL);
    ferry_jws_free(NULL);
    ferry_jwk_unref(k);
}

/* Traditional ("RSA PRIVATE KEY", "EC PRIVATE KEY", PKCS#1 "RSA PUBLIC KEY") PEM forms. */
static char *pem_type_specific(EVP_PKEY *p, int selection, size_t *ret_len)
{
    OSSL_ENCODER_CTX *ectx =
        OSSL_ENCODER_CTX_new_for_pkey(p, selection, "PEM", "type-specific", NULL);
    unsigned char *out = NULL;
    size_t len = 0;

    cr_assert_not_null(ectx);
    cr_assert_eq(OSSL_ENCODER_to_data(ectx, &out, &len), 1);
    OSSL_ENCODER_CTX_free(ectx);
    *ret_len = len;
    return (char *)out;
}

Test(pem, traditional_forms, .timeout = 60)
{
    EVP_PKEY *ps[] = {EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048),
                      EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")};
    static const char *const priv_hdr[] = {"RSA PRIVATE KEY", "EC PRIVATE KEY"};

    for (size_t i = 0; i < 2; i++) {
        size_t len;
        char *pem = pem_type_specific(ps[i], EVP_PKEY_KEYPAIR, &len);
        ferry_jwk *k = NULL;
        cr_assert_not_null(strstr(pem, priv_hdr[i]), "%s", pem);
        cr_assert_eq(ferry_jwk_from_pem(pem, len, &k), 0, "%s", priv_hdr[i]);
        cr_assert(ferry_jwk_is_private(k));
        ferry_jwk_unref(k);
        OPENSSL_free(pem);
    }
    {
        size_t len;
        char *pem = pem_type_specific(ps[0], EVP_PKEY_PUBLIC_KEY, &len);
        ferry_jwk *k = NULL;
        cr_assert_not_null(strstr(pem, "RSA PUBLIC KEY"), "%s", pem);
        cr_assert_eq(ferry_jwk_from_pem(pem, len, &k), 0);
        cr_assert_not(ferry_jwk_is_private(k));
        ferry_jwk_unref(k);
        OPENSSL_free(pem);
    }
    EVP_PKEY_free(ps[0]);
    EVP_PKEY_free(ps[1]);
}

/* ---- allocation-failure injection ----------------------------------------------------------
 *
 * malloc, calloc and realloc are replaced in this test program (glibc supports replacing
 * them; under ASan the replacements forward to ASan's interceptors). They must be visible:
 * the build compiles with -fvisibility=hidden. While armed, the Nth
 * allocation of the process fails, whoever makes it (the library, jansson or OpenSSL). Each
 * operation is run with N = 0, 1, 2, ... until it completes without an injected failure.
 * Checked: no crash or sanitizer report, every failure is an error return, and a bad token
 * or bad key is never accepted because an allocation failed. */
#define FERRY_ALLOCFAIL_NTH 1
#include "allocfail.h"
#ifdef HAVE_ALLOC_INJECTION
#include <malloc.h>

/* free is replaced too, to look for secrets left in memory that is given back: while
 * freed_secret_scan is set, every freed block is searched for freed_secret. */
static unsigned char freed_secret[32];
static _Atomic int freed_secret_scan;
static _Atomic int freed_secret_hits;

__attribute__((visibility("default"))) void free(void *p)
{
    if (p && freed_secret_scan) {
        const unsigned char *b = p;
        size_t n = malloc_usable_size(p);

        for (size_t i = 0; i + sizeof(freed_secret) <= n; i++)
            if (memcmp(b + i, freed_secret, sizeof(freed_secret)) == 0)
                freed_secret_hits++;
    }
    REAL_FREE(p);
}

/* Run op with failures at 0..; it must return 0 (or ok_rc) when nothing failed, and an error
 * (never 0 when must_fail) when something did. Returns the number of injected runs. */
static long torture(int (*op)(void *), void *arg, bool must_fail, int ok_rc)
{
    long n;

    for (n = 0; n < 100000; n++) {
        int r;
        bool hit;
        inject_arm(n);
        r = op(arg);
        hit = inject_disarm();
        if (!hit) {
            cr_assert_eq(r, ok_rc, "run without failure returned %d", r);
            return n;
        }
        if (must_fail)
            cr_assert_neq(r, 0, "accepted after allocation %ld failed", n);
        cr_assert(r <= 0, "positive return %d", r);
    }
    cr_assert_fail("operation never completed");
    return n;
}
#endif

/* Importing a private Ed25519 JWK must not leave d in memory given back to the allocator (the
 * parameter block handed to EVP_PKEY_fromdata holds a copy of it). */
Test(jwk, okp_private_not_left_in_freed_memory)
{
#ifndef HAVE_ALLOC_INJECTION
    cr_skip_test("free replacement needs glibc");
#else
    static const char d_b64[] = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    size_t dlen = 0;
    ferry_jwk *k = NULL;
    json_t *o;

    cr_assert_eq(ferry_b64url_decode(d_b64, strlen(d_b64), freed_secret, &dlen), 0);
    cr_assert_eq(dlen, 32);
    o = jparse("{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
               "\"d\":\"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\","
               "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}");
    freed_secret_scan = 1;
    cr_assert_eq(ferry_jwk_from_json(o, FERRY_JWK_ALLOW_PRIVATE, &k), 0);
    cr_assert(ferry_jwk_is_private(k));
    ferry_jwk_unref(k);
    freed_secret_scan = 0;
    json_decref(o);
    cr_assert_eq(freed_secret_hits, 0, "d found in %d freed blocks", (int)freed_secret_hits);
    /* The same for a P-256 key (d goes through a secure BIGNUM parameter). */
    {
        EVP_PKEY *p = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        BIGNUM *x = NULL, *y = NULL, *d = NULL;
        unsigned char buf[32];

        o = json_pack("{s:s, s:s}", "kty", "EC", "crv", "P-256");
        cr_assert_eq(EVP_PKEY_get_bn_param(p, OSSL_PKEY_PARAM_EC_PUB_X, &x), 1);
        cr_assert_eq(EVP_PKEY_get_bn_param(p, OSSL_PKEY_PARAM_EC_PUB_Y, &y), 1);
        cr_assert_eq(EVP_PKEY_get_bn_param(p, OSSL_PKEY_PARAM_PRIV_KEY, &d), 1);
        bn_to_field(x, buf, 32);
        set_b64(o, "x", buf, 32);
        bn_to_field(y, buf, 32);
        set_b64(o, "y", buf, 32);
        bn_to_field(d, freed_secret, 32);
        set_b64(o, "d", freed_secret, 32);
        freed_secret_scan = 1;
        cr_assert_eq(ferry_jwk_from_json(o, FERRY_JWK_ALLOW_PRIVATE, &k), 0);
        ferry_jwk_unref(k);
        freed_secret_scan = 0;
        cr_assert_eq(freed_secret_hits, 0, "EC d found in %d freed blocks",
                     (int)freed_secret_hits);
        json_decref(o);
        BN_free(x);
        BN_free(y);
        BN_clear_free(d);
        EVP_PKEY_free(p);
    }
#endif
}

struct torture_ctx {
    const char *tok;
    ferry_jwk *key;
    ferry_alg alg;
    const char *json;
};

static int op_parse_verify(void *p)
{
    struct torture_ctx *c = p;
    return parse_verify(c->tok, strlen(c->tok), c->key);
}

static int op_sign(void *p)
{
    struct torture_ctx *c = p;
    char *tok = NULL;
    int r = ferry_jws_sign(c->key, c->alg, "JWT", "{\"a\":1}", 7, &tok);

    if (r == 0) {
        /* The token must be complete and its header exactly what was asked for: jansson's
         * json_dumps has been seen to drop a member name when an allocation fails inside it
         * and still return a string. Checked without allocating. */
        char want[256], got[256];
        const char *dot;
        size_t glen = 0;
        int wl;

        cr_assert_not_null(tok);
        cr_assert_eq(strlen(tok), strcspn(tok, " "));
        wl = snprintf(want, sizeof(want), "{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"JWT\"}",
                      ferry_alg_name(c->alg), ferry_jwk_kid(c->key));
        cr_assert(wl > 0 && (size_t)wl < sizeof(want));
        dot = strchr(tok, '.');
        cr_assert_not_null(dot);
        cr_assert_leq(ferry_b64url_encoded_len((size_t)wl), sizeof(got));
        cr_assert_eq(ferry_b64url_decode(tok, (size_t)(dot - tok), (unsigned char *)got, &glen),
                     0, "header is not base64url");
        cr_assert(glen == (size_t)wl && memcmp(got, want, glen) == 0,
                  "signed a malformed header: %.*s", (int)glen, got);
    } else {
        cr_assert_null(tok);
    }
    free(tok);
    return r;
}

static int op_jwks(void *p)
{
    struct torture_ctx *c = p;
    ferry_jwks *set = NULL;
    size_t skipped = 0;
    int r = ferry_jwks_from_buffer(c->json, strlen(c->json), &set, &skipped);

    if (r == 0) {
        /* Under memory pressure a key may be skipped, never an extra one accepted. */
        cr_assert_leq(ferry_jwks_count(set), 3);
        cr_assert_null(ferry_jwks_find(set, "dup"));
        cr_assert_null(ferry_jwks_find(set, "weak"));
        r = ferry_jwks_count(set) == 3 && skipped == 3 ? 0 : -EAGAIN; /* degraded */
    } else {
        cr_assert_null(set);
    }
    ferry_jwks_unref(set);
    return r;
}

static int op_export(void *p)
{
    struct torture_ctx *c = p;
    json_t *o = NULL;
    char *pem = NULL, tp[FERRY_THUMBPRINT_LEN + 1];
    size_t len = 0;
    int r = ferry_jwk_to_public_json(c->key, &o);

    if (r == 0)
        r = ferry_jwk_to_pem(c->key, &pem, &len);
    if (r == 0)
        r = ferry_jwk_thumbprint(c->key, tp);
    json_decref(o);
    ferry_jwk_pem_free(pem, len);
    return r;
}

static int op_pem_import(void *p)
{
    struct torture_ctx *c = p;
    ferry_jwk *k = NULL;
    int r = ferry_jwk_from_pem(c->json, strlen(c->json), &k);

    ferry_jwk_unref(k);
    return r;
}

Test(alloc, failure_injection, .timeout = 300)
{
#ifndef HAVE_ALLOC_INJECTION
    cr_skip_test("allocation injection needs glibc");
#else
    ferry_alg as[] = {FERRY_ALG_ES256, FERRY_ALG_EDDSA, FERRY_ALG_RS256};

    for (size_t i = 0; i < 3; i++) {
        ferry_jwk *k = i == 2 ? rsa2048() : gen(as[i]);
        char *tok = sign_token(k, as[i], "{\"sub\":\"a\"}");
        char *bad = strdup(tok);
        struct torture_ctx c = {tok, k, as[i], NULL};
        size_t n = strlen(bad);

        bad[n - 2] = bad[n - 2] == 'A' ? 'B' : 'A';
        /* Warm up OpenSSL's lazy initialisation, the digest cache and the key's context
         * cache, so that failures hit the per-call path. */
        cr_assert_eq(op_parse_verify(&c), 0);
        cr_assert_gt(torture(op_parse_verify, &c, false, 0), 3);
        c.tok = bad;
        torture(op_parse_verify, &c, true, -FERRY_EBADSIG);
        torture(op_sign, &c, false, 0);
        torture(op_export, &c, false, 0);
        if (as[i] != FERRY_ALG_RS256) { /* RSA: pairwise check per run is too slow */
            char *pem = NULL;
            size_t len = 0;
            cr_assert_eq(ferry_jwk_to_pem(k, &pem, &len), 0);
            c.json = pem;
            torture(op_pem_import, &c, false, 0);
            ferry_jwk_pem_free(pem, len);
        }
        free(bad);
        free(tok);
        ferry_jwk_unref(k);
    }
    {
        /* A key set with good, weak and duplicate-kid keys. */
        ferry_jwk *es = gen(FERRY_ALG_ES256), *ed = gen(FERRY_ALG_EDDSA), *rsa = rsa2048();
        EVP_PKEY *p1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
        json_t *keys = json_array(), *o;
        json_array_append_new(keys, pub_json(es));
        json_array_append_new(keys, pub_json(ed));
        json_array_append_new(keys, pub_json(rsa));
        o = rsa_jwk_of(p1024);
        json_object_set_new(o, "kid", json_string("weak"));
        json_array_append_new(keys, o);
        json_array_append_new(keys, key_with_kid(es, "dup"));
        json_array_append_new(keys, key_with_kid(ed, "dup"));
        o = json_pack("{s:o}", "keys", keys);
        char *s = json_dumps(o, JSON_COMPACT);
        struct torture_ctx c = {NULL, NULL, FERRY_ALG_UNKNOWN, s};
        torture(op_jwks, &c, false, 0);
        free(s);
        json_decref(o);
        EVP_PKEY_free(p1024);
        ferry_jwk_unref(es);
        ferry_jwk_unref(ed);
        ferry_jwk_unref(rsa);
    }
#endif
}
