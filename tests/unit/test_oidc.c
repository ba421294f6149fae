/* tests/unit/test_oidc.c - trusted issuers, key sets and claim validation (lib/oidc.c).
 *
 * Every test runs on a fixed clock (NOW) with keys generated for the test and tokens signed
 * with ferry's own signer (or hand-assembled for hostile headers and payloads). Issuers with an
 * inline JWKS cover the claim and key-binding rows of ../shared/SECURITY-TESTS.md (A, B, C);
 * the loopback IdP stand-in (tests/peers/idp_standin.py) covers discovery and JWKS fetching
 * (D). Each test names the catalogue rows it covers.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "basic/b64.h"
#include "ferry/error.h"
#include "ferry/http.h"
#include "ferry/jose.h"
#include "ferry/oidc.h"
#include "standin.h"
#include "testutil.h"

#define NOW INT64_C(1700000000)
#define ISS_A "https://a.example"
#define ISS_B "https://b.example"
#define AUD "ferry"

/* Throwaway TLS material for the stand-in, made once in the runner (see standin.h). */
ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    if (tu_certs_setup() < 0)
        fprintf(stderr, "test_oidc: could not create test certificates\n");
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    tu_certs_teardown();
}

/* ---- helpers ---------------------------------------------------------------------------- */

static int64_t g_clock = NOW;

static int64_t test_clock(void *userdata)
{
    (void)userdata;
    return g_clock;
}

static ferry_oidc *new_store(size_t replay_max)
{
    ferry_oidc_options o = {.replay_cache_max = replay_max, .clock = test_clock};
    ferry_oidc *s = NULL;

    g_clock = NOW;
    cr_assert_eq(ferry_oidc_new(&o, &s), 0);
    return s;
}

static ferry_jwk *gen(ferry_alg alg)
{
    ferry_jwk *k = NULL;

    cr_assert_eq(ferry_jwk_generate(alg, &k), 0, "generate %s", ferry_alg_name(alg));
    return k;
}

/* An RSA key of `bits` without a declared alg (so it allows every RS* and PS* alg), through
 * OpenSSL keygen and ferry's PEM import. */
static ferry_jwk *rsa_key(unsigned bits)
{
    EVP_PKEY *pk = EVP_RSA_gen(bits);
    BIO *bio = BIO_new(BIO_s_mem());
    ferry_jwk *k = NULL;
    char *pem;
    long n;

    cr_assert(pk && bio);
    cr_assert_eq(PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL), 1);
    n = BIO_get_mem_data(bio, &pem);
    cr_assert_eq(ferry_jwk_from_pem(pem, (size_t)n, &k), 0);
    BIO_free(bio);
    EVP_PKEY_free(pk);
    return k;
}

static json_t *pub_json(const ferry_jwk *k)
{
    json_t *j = NULL;

    cr_assert_eq(ferry_jwk_to_public_json(k, &j), 0);
    return j;
}

/* {"keys":[public JWKs]} of n keys. */
static json_t *jwks_of(ferry_jwk *const *keys, size_t n)
{
    json_t *arr = json_array();

    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, pub_json(keys[i]));
    return json_pack("{s:o}", "keys", arr);
}

/* An inline-JWKS issuer configuration for key k (allow-list: k's alg). */
static json_t *conf_inline(const char *iss, ferry_jwk *k)
{
    return json_pack("{s:s, s:[s], s:[s], s:o}", "issuer", iss, "audiences", AUD, "algorithms",
                     ferry_alg_name(ferry_jwk_alg(k)), "jwks", jwks_of(&k, 1));
}

static void add_ok(ferry_oidc *o, json_t *conf)
{
    char err[256] = "";
    int r = ferry_oidc_add_issuer(o, conf, err, sizeof(err));

    cr_assert_eq(r, 0, "add_issuer: %d %s", r, err);
    json_decref(conf);
}

/* Adds conf (consumed), expects failure with `want` and returns the message in err. */
static void add_fails(ferry_oidc *o, json_t *conf, int want, char *err, size_t errlen)
{
    int r;

    err[0] = '\0';
    r = ferry_oidc_add_issuer(o, conf, err, errlen);
    json_decref(conf);
    cr_assert_eq(r, want, "add_issuer returned %d (%s), want %d", r, err, want);
    cr_assert(strlen(err) > 0, "no error message");
    cr_assert_null(strchr(err, '\n'), "multi-line message: %s", err);
}

static char *b64(const void *p, size_t n)
{
    char *s = ferry_b64url_encode_alloc(p, n);

    cr_assert_not_null(s);
    return s;
}

/* header.payload.signature from raw pieces; sig == NULL signs with key under alg. */
static char *assemble(const ferry_jwk *key, ferry_alg alg, const char *header,
                      const void *payload, size_t plen, const unsigned char *sig, size_t slen)
{
    char *h = b64(header, strlen(header)), *p = b64(payload, plen), *s, *input, *tok;
    unsigned char *own = NULL;
    size_t n;

    n = strlen(h) + 1 + strlen(p) + 1;
    input = malloc(n);
    cr_assert_not_null(input);
    snprintf(input, n, "%s.%s", h, p);
    if (!sig) {
        cr_assert_eq(ferry_jose_sign(alg, key, input, strlen(input), &own, &slen), 0,
                     "sign %s", ferry_alg_name(alg));
        sig = own;
    }
    s = b64(sig, slen);
    n = strlen(input) + 1 + strlen(s) + 1;
    tok = malloc(n);
    cr_assert_not_null(tok);
    snprintf(tok, n, "%s.%s", input, s);
    free(h);
    free(p);
    free(s);
    free(input);
    free(own);
    return tok;
}

#define NOKID ""

/* A token over claims (borrowed) with header {alg, kid, typ}: kid NULL = the key's kid,
 * NOKID = no kid; typ NULL = no typ. */
static char *mint(const ferry_jwk *key, ferry_alg alg, const char *kid, const char *typ,
                  const json_t *claims)
{
    json_t *h = json_pack("{s:s}", "alg", ferry_alg_name(alg));
    char *hs, *ps, *tok;

    if (!kid)
        kid = ferry_jwk_kid(key);
    if (kid && *kid)
        json_object_set_new(h, "kid", json_string(kid));
    if (typ)
        json_object_set_new(h, "typ", json_string(typ));
    hs = json_dumps(h, JSON_COMPACT);
    ps = json_dumps(claims, JSON_COMPACT);
    cr_assert(hs && ps);
    tok = assemble(key, alg, hs, ps, strlen(ps), NULL, 0);
    free(hs);
    free(ps);
    json_decref(h);
    return tok;
}

/* The usual claims: iss, sub, aud, exp NOW+300, iat NOW-10, jti. */
static json_t *claims_for(const char *iss)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "iss", iss, "sub", "user-1", "aud", AUD,
                     "exp", (json_int_t)(NOW + 300), "iat", (json_int_t)(NOW - 10), "jti",
                     "jti-1");
}

static ferry_verify_result g_last;

/* Verify and check the result's invariants; returns the reason. */
static ferry_reason verify_opts(ferry_oidc *o, const char *tok, const ferry_verify_options *vo)
{
    ferry_identity *id = NULL;
    ferry_verify_result res;
    const char *sig;
    int r;

    memset(&res, 0x5a, sizeof(res));
    r = ferry_oidc_verify(o, tok, strlen(tok), vo, &id, &res);
    if (r == 0) {
        cr_assert_eq(res.reason, FERRY_REASON_OK);
        cr_assert_not_null(id);
        cr_assert_str_eq(res.detail, "");
    } else {
        cr_assert_eq(r, -FERRY_EREFUSED, "verify returned %d (%s)", r, res.detail);
        cr_assert_null(id);
        cr_assert_neq(res.reason, FERRY_REASON_OK);
        cr_assert(res.reason < FERRY_REASON_MAX);
        cr_assert(memchr(res.detail, '\0', sizeof(res.detail)), "detail not terminated");
        cr_assert(strlen(res.detail) > 0, "empty detail for %s", ferry_reason_name(res.reason));
        /* No token material in the detail: neither the signature nor any 12-byte run of the
         * token's text. */
        sig = strrchr(tok, '.');
        for (size_t i = 0; sig && strlen(tok) >= 12 && i + 12 <= strlen(tok); i += 4) {
            char piece[13];

            memcpy(piece, tok + i, 12);
            piece[12] = '\0';
            cr_assert_null(strstr(res.detail, piece), "detail leaks token bytes: %s",
                           res.detail);
        }
    }
    ferry_identity_free(id);
    g_last = res;
    return res.reason;
}

static ferry_reason verify(ferry_oidc *o, const char *tok)
{
    return verify_opts(o, tok, NULL);
}

#define EXPECT_REASON(o, tok, want)                                                           \
    do {                                                                                      \
        ferry_reason got_ = verify(o, tok);                                                   \
        cr_expect_eq(got_, want, "got %s, want %s (%s)", ferry_reason_name(got_),             \
                     ferry_reason_name(want), g_last.detail);                                 \
    } while (0)

#define EXPECT_REASON_OPTS(o, tok, vo, want)                                                  \
    do {                                                                                      \
        ferry_reason got_ = verify_opts(o, tok, vo);                                          \
        cr_expect_eq(got_, want, "got %s, want %s (%s)", ferry_reason_name(got_),             \
                     ferry_reason_name(want), g_last.detail);                                 \
    } while (0)

/* Sign claims (consumed) with key for issuer-default header and check the reason. */
static void expect_claims(ferry_oidc *o, const ferry_jwk *key, const char *typ, json_t *claims,
                          ferry_reason want, const char *what)
{
    char *tok = mint(key, ferry_jwk_alg(key), NULL, typ, claims);
    ferry_reason got = verify(o, tok);

    cr_expect_eq(got, want, "%s: got %s, want %s (%s)", what, ferry_reason_name(got),
                 ferry_reason_name(want), g_last.detail);
    free(tok);
    json_decref(claims);
}

/* Raw payload text (for what json_dumps cannot produce) under key's alg and kid. */
static void expect_payload(ferry_oidc *o, const ferry_jwk *key, const char *payload,
                           ferry_reason want, const char *what)
{
    char hdr[512], *tok;
    ferry_reason got;

    snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"kid\":\"%s\"}",
             ferry_alg_name(ferry_jwk_alg(key)), ferry_jwk_kid(key));
    tok = assemble(key, ferry_jwk_alg(key), hdr, payload, strlen(payload), NULL, 0);
    got = verify(o, tok);
    cr_expect_eq(got, want, "%s: got %s, want %s (%s)", what, ferry_reason_name(got),
                 ferry_reason_name(want), g_last.detail);
    free(tok);
}

/* ---- fixture: issuers A and B, each with one ES256 key in an inline JWKS ------------------ */

static ferry_oidc *g_o;
static ferry_jwk *g_ka, *g_kb;

static void setup_ab(void)
{
    g_o = new_store(0);
    g_ka = gen(FERRY_ALG_ES256);
    g_kb = gen(FERRY_ALG_ES256);
    add_ok(g_o, conf_inline(ISS_A, g_ka));
    add_ok(g_o, conf_inline(ISS_B, g_kb));
}

static void teardown_ab(void)
{
    ferry_oidc_free(g_o);
    ferry_jwk_unref(g_ka);
    ferry_jwk_unref(g_kb);
    g_o = NULL;
    g_ka = g_kb = NULL;
}

/* ---- names -------------------------------------------------------------------------------- */

Test(names, reasons_are_stable)
{
    static const char *const want[FERRY_REASON_MAX] = {
        "ok",          "too_large",         "malformed",         "bad_header",
        "alg_not_allowed", "unknown_issuer", "issuer_unavailable", "unknown_kid",
        "key_mismatch", "bad_signature",    "bad_typ",           "missing_claim",
        "bad_claim",   "expired",           "not_yet_valid",     "issued_in_future",
        "lifetime_too_long", "bad_audience", "bad_subject",      "claim_mismatch",
        "replayed",    "replay_cache_full", "internal",
    };

    for (int i = 0; i < FERRY_REASON_MAX; i++)
        cr_expect_str_eq(ferry_reason_name((ferry_reason)i), want[i], "reason %d", i);
    cr_expect_str_eq(ferry_reason_name(FERRY_REASON_MAX), "unknown");
    cr_expect_str_eq(ferry_reason_name((ferry_reason)-1), "unknown");
}

Test(names, profiles_round_trip)
{
    static const char *const names[] = {"id_token", "access_token", "kubernetes",
                                        "github_actions", "ferry"};

    for (size_t i = 0; i < 5; i++) {
        ferry_profile p = ferry_profile_from_name(names[i]);

        cr_expect_eq(p, (ferry_profile)(FERRY_PROFILE_ID_TOKEN + i));
        cr_expect_str_eq(ferry_profile_name(p), names[i]);
    }
    cr_expect_eq(ferry_profile_from_name("ID_TOKEN"), 0);
    cr_expect_eq(ferry_profile_from_name("github"), 0);
    cr_expect_eq(ferry_profile_from_name(""), 0);
    cr_expect_eq(ferry_profile_from_name(NULL), 0);
    cr_expect_null(ferry_profile_name(0));
    cr_expect_null(ferry_profile_name((ferry_profile)99));
}

/* ---- configuration ------------------------------------------------------------------------ */

Test(config, minimal_inline_issuer, .init = setup_ab, .fini = teardown_ab)
{
    cr_expect_eq(ferry_oidc_issuer_count(g_o), 2);
    cr_expect_eq(ferry_oidc_issuer_count(NULL), 0);
}

Test(config, duplicate_issuer, .init = setup_ab, .fini = teardown_ab)
{
    char err[256];

    add_fails(g_o, conf_inline(ISS_A, g_ka), -FERRY_EDUPLICATE, err, sizeof(err));
    cr_expect(strstr(err, "already configured"), "%s", err);
    /* A byte variant is another issuer (exact match). */
    add_ok(g_o, conf_inline(ISS_A "/", g_ka));
    cr_expect_eq(ferry_oidc_issuer_count(g_o), 3);
}

/* Each entry: a member to set on a valid base config (JSON text; "-name" deletes it), and a
 * word the error message must contain. */
static const struct bad_conf {
    const char *member;
    const char *value;
    const char *says;
} bad_confs[] = {
    {"jwks_url", "\"https://x\"", "jwks_url"},
    {"Issuer", "\"x\"", "Issuer"},
    {"-issuer", NULL, "issuer"},
    {"issuer", "\"\"", "issuer"},
    {"issuer", "42", "issuer"},
    {"-audiences", NULL, "audiences"},
    {"audiences", "[]", "audiences"},
    {"audiences", "\"ferry\"", "audiences"},
    {"audiences", "[1]", "audiences"},
    {"audiences", "[\"\"]", "audiences"},
    {"algorithms", "[]", "algorithms"},
    {"algorithms", "[\"HS256\"]", "HS256"},
    {"algorithms", "[\"HS512\"]", "HS512"},
    {"algorithms", "[\"none\"]", "none"},
    {"algorithms", "[\"es256\"]", "es256"},
    {"algorithms", "[\"ES256 \"]", "algorithms"},
    {"algorithms", "\"ES256\"", "algorithms"},
    {"profile", "\"oauth\"", "profile"},
    {"profile", "1", "profile"},
    {"leeway", "-1", "leeway"},
    {"leeway", "1e3", "leeway"},
    {"leeway", "\"60\"", "leeway"},
    {"leeway", "9223372036854775807", "leeway"},
    {"max_lifetime", "0", "max_lifetime"},
    {"max_lifetime", "99999999999", "max_lifetime"},
    {"required_claims", "[]", "required_claims"},
    {"require_azp", "\"yes\"", "require_azp"},
    {"allow_http_loopback", "1", "allow_http_loopback"},
    {"ca_file", "\"/nonexistent/ca.pem\"", "ca_file"},
    {"ca_file", "\"\"", "ca_file"},
    {"proxy", "false", "proxy"},
    {"jwks_cache", "[]", "jwks_cache"},
    {"jwks_cache", "{\"ttl\":5}", "ttl"},
    {"jwks_cache", "{\"min_ttl\":-5}", "min_ttl"},
    {"jwks_cache", "{\"max_ttl\":1e9}", "max_ttl"},
    {"jwks_cache", "{\"min_ttl\":100,\"max_ttl\":50}", "min_ttl"},
    {"jwks_cache", "{\"stale_window\":99999999999}", "stale_window"},
    {"jwks_cache", "{\"refresh_cooldown\":-1}", "refresh_cooldown"},
    {"fetch", "{\"max_bytes\":262145}", "max_bytes"},
    {"fetch", "{\"max_bytes\":0}", "max_bytes"},
    {"fetch", "{\"timeout_ms\":-1}", "timeout_ms"},
    {"fetch", "{\"connect_timeout_ms\":\"1\"}", "connect_timeout_ms"},
    {"fetch", "{\"retries\":1}", "retries"},
    {"discovery", "true", "key source"},
    {"jwks_uri", "\"https://a.example/jwks\"", "key source"},
    {"jwks_file", "\"/dev/null\"", "key source"},
    {"jwks", "[]", "jwks"},
    {"jwks", "{\"keys\":{}}", "jwks"},
    {"jwks", "{\"keys\":[]}", "no usable keys"},
};

Test(config, refused_with_a_one_line_reason, .init = setup_ab, .fini = teardown_ab)
{
    char err[256];

    for (size_t i = 0; i < sizeof(bad_confs) / sizeof(bad_confs[0]); i++) {
        const struct bad_conf *b = &bad_confs[i];
        json_t *c = conf_inline("https://new.example", g_ka);

        if (b->member[0] == '-') {
            json_object_del(c, b->member + 1);
        } else {
            json_t *v = json_loads(b->value, JSON_DECODE_ANY, NULL);

            cr_assert_not_null(v, "bad test value %s", b->value);
            json_object_set_new(c, b->member, v);
        }
        add_fails(g_o, c, -FERRY_ECONFIG, err, sizeof(err));
        cr_expect(strstr(err, b->says), "%s=%s: message \"%s\" does not name \"%s\"",
                  b->member, b->value ? b->value : "(deleted)", err, b->says);
    }
    cr_expect_eq(ferry_oidc_issuer_count(g_o), 2);
}

Test(config, no_key_source_and_bad_urls, .init = setup_ab, .fini = teardown_ab)
{
    char err[256];
    json_t *c;

    c = json_pack("{s:s, s:[s], s:b}", "issuer", "https://n.example", "audiences", AUD,
                  "discovery", 0);
    add_fails(g_o, c, -FERRY_ECONFIG, err, sizeof(err));
    cr_expect(strstr(err, "no key source"), "%s", err);

    /* D2: plain http refused by the http module's URL policy, for jwks_uri and discovery. */
    c = json_pack("{s:s, s:[s], s:s}", "issuer", "https://n.example", "audiences", AUD,
                  "jwks_uri", "http://n.example/jwks");
    add_fails(g_o, c, -FERRY_ECONFIG, err, sizeof(err));
    cr_expect(strstr(err, "jwks_uri"), "%s", err);
    c = json_pack("{s:s, s:[s]}", "issuer", "http://n.example", "audiences", AUD);
    add_fails(g_o, c, -FERRY_ECONFIG, err, sizeof(err));
    cr_expect(strstr(err, "discovery"), "%s", err);
    /* ... even with allow_http_loopback, for a host that is not loopback. */
    c = json_pack("{s:s, s:[s], s:s, s:b}", "issuer", "https://n.example", "audiences", AUD,
                  "jwks_uri", "http://n.example/jwks", "allow_http_loopback", 1);
    add_fails(g_o, c, -FERRY_ECONFIG, err, sizeof(err));
    /* Discovery is the default key source. */
    c = json_pack("{s:s, s:[s]}", "issuer", "https://n.example/", "audiences", AUD);
    add_ok(g_o, c);
}

Test(config, jwks_file, .init = setup_ab, .fini = teardown_ab)
{
    char path[] = "/tmp/ferry-test-oidc-XXXXXX", err[256];
    int fd = mkstemp(path);
    json_t *set = jwks_of(&g_ka, 1), *c;
    char *text = json_dumps(set, JSON_COMPACT), *big;
    size_t big_len = FERRY_JWKS_MAX_LEN + 1;
    FILE *f;

    cr_assert(fd >= 0 && text);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    c = json_pack("{s:s, s:[s], s:[s], s:s}", "issuer", "https://file.example", "audiences",
                  AUD, "algorithms", "ES256", "jwks_file", path);
    add_ok(g_o, c);

    /* A token of that issuer verifies with the key read from the file. */
    {
        json_t *cl = claims_for("https://file.example");
        char *tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, cl);

        EXPECT_REASON(g_o, tok, FERRY_REASON_OK);
        free(tok);
        json_decref(cl);
    }

    /* Over FERRY_JWKS_MAX_LEN: refused at add time (padding with whitespace keeps it JSON). */
    big = malloc(big_len);
    cr_assert_not_null(big);
    memset(big, ' ', big_len);
    memcpy(big, text, strlen(text));
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(big, 1, big_len, f), big_len);
    fclose(f);
    c = json_pack("{s:s, s:[s], s:[s], s:s}", "issuer", "https://file2.example", "audiences",
                  AUD, "algorithms", "ES256", "jwks_file", path);
    add_fails(g_o, c, -FERRY_ECONFIG, err, sizeof(err));
    cr_expect(strstr(err, "jwks_file"), "%s", err);

    unlink(path);
    c = json_pack("{s:s, s:[s], s:[s], s:s}", "issuer", "https://file3.example", "audiences",
                  AUD, "algorithms", "ES256", "jwks_file", path);
    add_fails(g_o, c, -FERRY_ECONFIG, err, sizeof(err));
    c = json_pack("{s:s, s:[s], s:[s], s:s}", "issuer", "https://file4.example", "audiences",
                  AUD, "algorithms", "ES256", "jwks_file", "/tmp");
    add_fails(g_o, c, -FERRY_ECONFIG, err, sizeof(err));
    free(big);
    free(text);
    json_decref(set);
}

Test(config, load_config_is_all_or_nothing, .init = setup_ab, .fini = teardown_ab)
{
    char err[256];
    json_t *conf;
    int r;

    conf = json_pack("{s:[o, o], s:i, s:s}", "issuers", conf_inline("https://c1.example", g_ka),
                     conf_inline("https://c2.example", g_kb), "replay_cache_size", 10,
                     "listen", "ignored by the oidc module");
    r = ferry_oidc_load_config(g_o, conf, err, sizeof(err));
    cr_expect_eq(r, 0, "%s", err);
    cr_expect_eq(ferry_oidc_issuer_count(g_o), 4);
    json_decref(conf);

    /* The second entry is bad: the first is not kept either. */
    conf = json_pack("{s:[o, {s:s}]}", "issuers", conf_inline("https://c3.example", g_ka),
                     "issuer", "https://c4.example");
    r = ferry_oidc_load_config(g_o, conf, err, sizeof(err));
    cr_expect_eq(r, -FERRY_ECONFIG);
    cr_expect(strstr(err, "issuers[1]") && strstr(err, "audiences"), "%s", err);
    cr_expect_eq(ferry_oidc_issuer_count(g_o), 4);
    json_decref(conf);

    /* A duplicate inside one file. */
    conf = json_pack("{s:[o, o]}", "issuers", conf_inline("https://c5.example", g_ka),
                     conf_inline("https://c5.example", g_ka));
    r = ferry_oidc_load_config(g_o, conf, err, sizeof(err));
    cr_expect_eq(r, -FERRY_EDUPLICATE, "%d %s", r, err);
    cr_expect_eq(ferry_oidc_issuer_count(g_o), 4);
    json_decref(conf);

    conf = json_pack("{s:[], s:s}", "issuers", "replay_cache_size", "big");
    cr_expect_eq(ferry_oidc_load_config(g_o, conf, err, sizeof(err)), -FERRY_ECONFIG);
    cr_expect(strstr(err, "replay_cache_size"), "%s", err);
    json_decref(conf);
    conf = json_pack("{s:[], s:I}", "issuers", "replay_cache_size", (json_int_t)1 << 40);
    cr_expect_eq(ferry_oidc_load_config(g_o, conf, err, sizeof(err)), -FERRY_ECONFIG);
    json_decref(conf);
    conf = json_pack("{s:{}}", "issuers");
    cr_expect_eq(ferry_oidc_load_config(g_o, conf, err, sizeof(err)), -FERRY_ECONFIG);
    json_decref(conf);
    conf = json_pack("[]");
    cr_expect_eq(ferry_oidc_load_config(g_o, conf, err, sizeof(err)), -FERRY_ECONFIG);
    json_decref(conf);
}

/* Thousands of issuers: lookup stays exact and cheap (sorted index). */
Test(config, thousands_of_issuers)
{
    ferry_oidc *o = new_store(0);
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    json_t *set = jwks_of(&k, 1);
    char iss[64];

    for (int i = 0; i < 3000; i++) {
        snprintf(iss, sizeof(iss), "https://idp%04d.example", (i * 7919) % 3000);
        add_ok(o, json_pack("{s:s, s:[s], s:[s], s:O}", "issuer", iss, "audiences", AUD,
                            "algorithms", "ES256", "jwks", set));
    }
    cr_assert_eq(ferry_oidc_issuer_count(o), 3000);
    for (int i = 0; i < 3000; i += 599) {
        json_t *c;
        char *tok;

        snprintf(iss, sizeof(iss), "https://idp%04d.example", i);
        c = claims_for(iss);
        tok = mint(k, FERRY_ALG_ES256, NULL, NULL, c);
        EXPECT_REASON(o, tok, FERRY_REASON_OK);
        free(tok);
        json_object_set_new(c, "iss", json_string("https://idp3000.example"));
        tok = mint(k, FERRY_ALG_ES256, NULL, NULL, c);
        EXPECT_REASON(o, tok, FERRY_REASON_UNKNOWN_ISSUER);
        free(tok);
        json_decref(c);
    }
    json_decref(set);
    ferry_jwk_unref(k);
    ferry_oidc_free(o);
}

/* ---- accepted tokens ---------------------------------------------------------------------- */

Test(verify, valid_token_and_identity, .init = setup_ab, .fini = teardown_ab)
{
    json_t *c = claims_for(ISS_A), *j = NULL;
    ferry_identity *id = NULL;
    ferry_verify_result res;
    char *tok;

    json_object_set_new(c, "nbf", json_integer(NOW - 20));
    json_object_set_new(c, "groups", json_pack("[s]", "admins"));
    tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    cr_assert_eq(ferry_oidc_verify(g_o, tok, strlen(tok), NULL, &id, &res), 0, "%s",
                 res.detail);
    cr_expect_eq(res.reason, FERRY_REASON_OK);
    cr_expect_str_eq(id->issuer, ISS_A);
    cr_expect_str_eq(id->subject, "user-1");
    cr_expect(json_is_array(id->audience) && json_array_size(id->audience) == 1);
    cr_expect_str_eq(json_string_value(json_array_get(id->audience, 0)), AUD);
    cr_expect_eq(id->profile, FERRY_PROFILE_ID_TOKEN);
    cr_expect_eq(id->alg, FERRY_ALG_ES256);
    cr_expect_str_eq(id->kid, ferry_jwk_kid(g_ka));
    cr_expect_str_eq(id->jti, "jti-1");
    cr_expect_eq(id->exp, NOW + 300);
    cr_expect_eq(id->iat, NOW - 10);
    cr_expect_eq(id->nbf, NOW - 20);
    cr_expect(json_equal(id->claims, c));

    cr_assert_eq(ferry_identity_to_json(id, &j), 0);
    cr_expect(json_is_true(json_object_get(j, "verified")));
    cr_expect_str_eq(json_string_value(json_object_get(j, "issuer")), ISS_A);
    cr_expect_str_eq(json_string_value(json_object_get(j, "subject")), "user-1");
    cr_expect_str_eq(json_string_value(json_object_get(j, "profile")), "id_token");
    cr_expect_str_eq(json_string_value(json_object_get(j, "alg")), "ES256");
    cr_expect_str_eq(json_string_value(json_object_get(j, "jti")), "jti-1");
    cr_expect_eq(json_integer_value(json_object_get(j, "exp")), NOW + 300);
    cr_expect_eq(json_integer_value(json_object_get(j, "nbf")), NOW - 20);
    cr_expect(json_equal(json_object_get(j, "claims"), c));
    cr_expect(json_equal(json_object_get(j, "audience"), id->audience));
    json_decref(j);
    ferry_identity_free(id);
    ferry_identity_free(NULL);

    /* Result only, no identity wanted; and not NUL-terminated input. */
    {
        size_t n = strlen(tok);
        char *copy = malloc(n);

        memcpy(copy, tok, n);
        cr_expect_eq(ferry_oidc_verify(g_o, copy, n, NULL, NULL, &res), 0);
        cr_expect_eq(res.reason, FERRY_REASON_OK);
        cr_expect_eq(ferry_oidc_verify(g_o, copy, n - 1, NULL, NULL, &res), -FERRY_EREFUSED);
        cr_expect_eq(res.reason, FERRY_REASON_MALFORMED, "%s", res.detail);
        free(copy);
    }
    /* The result is filled for bad arguments too. */
    cr_expect_eq(ferry_oidc_verify(NULL, tok, strlen(tok), NULL, NULL, &res), -EINVAL);
    cr_expect_eq(res.reason, FERRY_REASON_INTERNAL);
    free(tok);
    json_decref(c);
}

/* Valid tokens of every supported alg. */
Test(verify, every_algorithm, .timeout = 30)
{
    static const ferry_alg algs[] = {FERRY_ALG_RS256, FERRY_ALG_RS384, FERRY_ALG_RS512,
                                     FERRY_ALG_PS256, FERRY_ALG_PS384, FERRY_ALG_PS512,
                                     FERRY_ALG_ES256, FERRY_ALG_ES384, FERRY_ALG_EDDSA};
    ferry_oidc *o = new_store(0);
    ferry_jwk *rsa_gen = gen(FERRY_ALG_RS256), *rsa, *keys[4];
    json_t *c, *conf, *al = json_array();
    char *pem = NULL, *tok;
    size_t pem_len = 0;

    /* A generated RSA key carries alg RS256; its PEM round trip drops the alg so that one key
     * serves all six RSA algorithms. */
    cr_assert_eq(ferry_jwk_to_pem(rsa_gen, &pem, &pem_len), 0);
    cr_assert_eq(ferry_jwk_from_pem(pem, pem_len, &rsa), 0);
    ferry_jwk_pem_free(pem, pem_len);
    keys[0] = rsa;
    keys[1] = gen(FERRY_ALG_ES256);
    keys[2] = gen(FERRY_ALG_ES384);
    keys[3] = gen(FERRY_ALG_EDDSA);
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
        json_array_append_new(al, json_string(ferry_alg_name(algs[i])));
    conf = json_pack("{s:s, s:[s], s:o, s:o}", "issuer", ISS_A, "audiences", AUD, "algorithms",
                     al, "jwks", jwks_of(keys, 4));
    add_ok(o, conf);
    c = claims_for(ISS_A);
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        ferry_jwk *k = algs[i] <= FERRY_ALG_PS512 ? keys[0]
                       : algs[i] == FERRY_ALG_ES256 ? keys[1]
                       : algs[i] == FERRY_ALG_ES384 ? keys[2]
                                                    : keys[3];
        ferry_identity *id = NULL;
        ferry_verify_result res;

        tok = mint(k, algs[i], NULL, "JWT", c);
        cr_expect_eq(ferry_oidc_verify(o, tok, strlen(tok), NULL, &id, &res), 0, "%s: %s",
                     ferry_alg_name(algs[i]), res.detail);
        cr_expect(id && id->alg == algs[i]);
        ferry_identity_free(id);
        free(tok);
    }
    json_decref(c);
    for (int i = 0; i < 4; i++)
        ferry_jwk_unref(keys[i]);
    ferry_jwk_unref(rsa_gen);
    ferry_oidc_free(o);
}

/* A token without kid is accepted only when exactly one key of the set allows its alg. */
Test(verify, kid_optional_only_when_unambiguous)
{
    ferry_oidc *o = new_store(0);
    ferry_jwk *e1 = gen(FERRY_ALG_ES256), *e2 = gen(FERRY_ALG_ES256), *ed = gen(FERRY_ALG_EDDSA);
    ferry_jwk *ks[3] = {e1, e2, ed};
    json_t *c;
    char *tok;

    add_ok(o, json_pack("{s:s, s:[s], s:[s,s], s:o}", "issuer", ISS_A, "audiences", AUD,
                        "algorithms", "ES256", "EdDSA", "jwks", jwks_of(ks, 3)));
    c = claims_for(ISS_A);
    tok = mint(ed, FERRY_ALG_EDDSA, NOKID, NULL, c);
    EXPECT_REASON(o, tok, FERRY_REASON_OK); /* one EdDSA key */
    free(tok);
    tok = mint(e1, FERRY_ALG_ES256, NOKID, NULL, c);
    EXPECT_REASON(o, tok, FERRY_REASON_UNKNOWN_KID); /* two ES256 keys: ambiguous */
    free(tok);
    tok = mint(e1, FERRY_ALG_ES256, NULL, NULL, c);
    EXPECT_REASON(o, tok, FERRY_REASON_OK);
    free(tok);
    json_decref(c);
    ferry_jwk_unref(e1);
    ferry_jwk_unref(e2);
    ferry_jwk_unref(ed);
    ferry_oidc_free(o);
}

/* ---- A: parsing, at this layer ------------------------------------------------------------ */

Test(parse, jws_layer_refusals_map_to_reasons, .init = setup_ab, .fini = teardown_ab)
{
    json_t *c = claims_for(ISS_A);
    char *ps = json_dumps(c, JSON_COMPACT), *tok, *big;
    char hdr[256];
    const char *kid = ferry_jwk_kid(g_ka);

    /* A1 */
    big = malloc(FERRY_JWS_MAX_LEN + 2);
    memset(big, 'A', FERRY_JWS_MAX_LEN + 1);
    big[FERRY_JWS_MAX_LEN + 1] = '\0';
    big[10] = '.';
    big[20] = '.';
    EXPECT_REASON(g_o, big, FERRY_REASON_TOO_LARGE);
    free(big);
    /* A2 */
    EXPECT_REASON(g_o, "a.b", FERRY_REASON_MALFORMED);
    EXPECT_REASON(g_o, "", FERRY_REASON_MALFORMED);
    tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    {
        size_t n = strlen(tok);
        char *t2 = malloc(n + 2);

        snprintf(t2, n + 2, "%s.", tok);
        EXPECT_REASON(g_o, t2, FERRY_REASON_MALFORMED);
        snprintf(t2, n + 2, " %s", tok);
        EXPECT_REASON(g_o, t2, FERRY_REASON_MALFORMED);
        free(t2);
    }
    free(tok);
    /* A5 */
    tok = assemble(g_ka, FERRY_ALG_ES256, "{\"alg\":\"none\"}", ps, strlen(ps),
                   (const unsigned char *)"x", 1);
    EXPECT_REASON(g_o, tok, FERRY_REASON_ALG_NOT_ALLOWED);
    free(tok);
    tok = assemble(g_ka, FERRY_ALG_ES256, "{\"alg\":\"ES512\"}", ps, strlen(ps),
                   (const unsigned char *)"x", 1);
    EXPECT_REASON(g_o, tok, FERRY_REASON_ALG_NOT_ALLOWED);
    free(tok);
    tok = assemble(g_ka, FERRY_ALG_ES256, "{\"kid\":\"x\"}", ps, strlen(ps),
                   (const unsigned char *)"x", 1);
    EXPECT_REASON(g_o, tok, FERRY_REASON_MALFORMED);
    free(tok);
    /* Supported, but not in this issuer's allow-list (A allows ES256 only). */
    {
        ferry_jwk *k384 = gen(FERRY_ALG_ES384);

        tok = mint(k384, FERRY_ALG_ES384, NULL, NULL, c);
        EXPECT_REASON(g_o, tok, FERRY_REASON_ALG_NOT_ALLOWED);
        free(tok);
        ferry_jwk_unref(k384);
    }
    /* A6 / A7: forbidden header members are bad_header, with a valid signature even. */
    static const char *const extra[] = {
        "\"crit\":[\"exp\"]", "\"b64\":false", "\"cty\":\"JWT\"", "\"zip\":\"DEF\"",
        "\"jku\":\"https://127.0.0.1/jwks\"", "\"x5u\":\"https://169.254.169.254/\"",
        "\"jwk\":{\"kty\":\"EC\"}", "\"x5c\":[\"AAAA\"]",
    };
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"kid\":\"%s\",%s}", kid, extra[i]);
        tok = assemble(g_ka, FERRY_ALG_ES256, hdr, ps, strlen(ps), NULL, 0);
        EXPECT_REASON(g_o, tok, FERRY_REASON_BAD_HEADER);
        free(tok);
    }
    /* A4: header duplicates. */
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"kid\":\"%s\",\"alg\":\"ES256\"}", kid);
    tok = assemble(g_ka, FERRY_ALG_ES256, hdr, ps, strlen(ps), NULL, 0);
    EXPECT_REASON(g_o, tok, FERRY_REASON_MALFORMED);
    free(tok);
    free(ps);
    json_decref(c);
}

/* A4 for the claims: not JSON, not an object, too deep, NUL, trailing garbage. */
Test(parse, claims_payload, .init = setup_ab, .fini = teardown_ab)
{
    char deep[256];
    size_t n = 0;

    expect_payload(g_o, g_ka, "", FERRY_REASON_MALFORMED, "empty");
    expect_payload(g_o, g_ka, "foo", FERRY_REASON_MALFORMED, "not JSON");
    expect_payload(g_o, g_ka, "[\"" ISS_A "\"]", FERRY_REASON_MALFORMED, "array");
    expect_payload(g_o, g_ka, "\"" ISS_A "\"", FERRY_REASON_MALFORMED, "string");
    expect_payload(g_o, g_ka, "{\"iss\":\"" ISS_A "\"} x", FERRY_REASON_MALFORMED, "garbage");
    expect_payload(g_o, g_ka, "{\"iss\":\"" ISS_A "\",\"x\":\"\xff\"}", FERRY_REASON_MALFORMED,
                   "invalid UTF-8");
    n += (size_t)snprintf(deep + n, sizeof(deep) - n, "{\"iss\":\"" ISS_A "\",\"d\":");
    for (int i = 0; i < 16; i++)
        deep[n++] = '[';
    for (int i = 0; i < 16; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    expect_payload(g_o, g_ka, deep, FERRY_REASON_MALFORMED, "depth 17");
}

/* ---- B: algorithm and key binding ------------------------------------------------------- */

static char *hs_token(const char *alg, const void *secret, size_t slen, const char *kid,
                      const char *payload)
{
    unsigned char mac[64];
    size_t maclen = 0;
    char hdr[256], *h, *p, *tok, *s;
    size_t n;

    snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"kid\":\"%s\"}", alg, kid);
    h = b64(hdr, strlen(hdr));
    p = b64(payload, strlen(payload));
    n = strlen(h) + strlen(p) + 2;
    tok = malloc(n);
    snprintf(tok, n, "%s.%s", h, p);
    if (!EVP_Q_mac(NULL, "HMAC", NULL, alg[3] == '2'   ? "SHA256"
                                       : alg[3] == '3' ? "SHA384"
                                                       : "SHA512",
                   NULL, slen ? secret : "", slen, (unsigned char *)tok, strlen(tok), mac,
                   sizeof(mac), &maclen))
        maclen = 32; /* an empty key may be refused by OpenSSL: any bytes will do */
    s = b64(mac, maclen);
    free(tok);
    n = strlen(h) + strlen(p) + strlen(s) + 3;
    tok = malloc(n);
    snprintf(tok, n, "%s.%s.%s", h, p, s);
    free(h);
    free(p);
    free(s);
    return tok;
}

/* B1: HS* keyed with the issuer's public key in every representation, and an empty key. */
Test(keys, b1_hmac_with_public_key, .init = setup_ab, .fini = teardown_ab)
{
    static const char *const hs[] = {"HS256", "HS384", "HS512"};
    json_t *c = claims_for(ISS_A), *pj = pub_json(g_ka);
    char *ps = json_dumps(c, JSON_COMPACT), *pjs = json_dumps(pj, JSON_COMPACT);
    char *pjs_sorted = json_dumps(pj, JSON_COMPACT | JSON_SORT_KEYS), *tok, err[256];
    unsigned char *der = NULL, point[65];
    size_t point_len = 0;
    int der_len = i2d_PUBKEY(ferry_jwk_evp_pkey(g_ka), &der);
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem;
    long pem_len;
    struct {
        const void *p;
        size_t n;
    } secrets[6];

    cr_assert(der_len > 0 && bio);
    cr_assert_eq(PEM_write_bio_PUBKEY(bio, ferry_jwk_evp_pkey(g_ka)), 1);
    pem_len = BIO_get_mem_data(bio, &pem);
    cr_assert_eq(EVP_PKEY_get_octet_string_param(ferry_jwk_evp_pkey(g_ka),
                                                 OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point),
                                                 &point_len),
                 1);
    secrets[0].p = pem, secrets[0].n = (size_t)pem_len;
    secrets[1].p = der, secrets[1].n = (size_t)der_len;
    secrets[2].p = pjs, secrets[2].n = strlen(pjs);
    secrets[3].p = pjs_sorted, secrets[3].n = strlen(pjs_sorted);
    secrets[4].p = point, secrets[4].n = point_len;
    secrets[5].p = "", secrets[5].n = 0;
    for (size_t a = 0; a < 3; a++) {
        for (size_t i = 0; i < 6; i++) {
            tok = hs_token(hs[a], secrets[i].p, secrets[i].n, ferry_jwk_kid(g_ka), ps);
            EXPECT_REASON(g_o, tok, FERRY_REASON_ALG_NOT_ALLOWED);
            free(tok);
        }
    }
    /* No issuer can list HS256, so "HS256 in another issuer's allow-list" cannot happen. */
    {
        json_t *conf = conf_inline("https://hs.example", g_kb);

        json_object_set_new(conf, "algorithms", json_pack("[s,s]", "ES256", "HS256"));
        add_fails(g_o, conf, -FERRY_ECONFIG, err, sizeof(err));
    }
    BIO_free(bio);
    OPENSSL_free(der);
    free(ps);
    free(pjs);
    free(pjs_sorted);
    json_decref(pj);
    json_decref(c);
}

/* B2: alg does not fit the key named by kid. */
Test(keys, b2_alg_key_mismatch)
{
    ferry_oidc *o = new_store(0);
    ferry_jwk *rsa = rsa_key(2048), *rs256, *p256 = gen(FERRY_ALG_ES256),
              *p384 = gen(FERRY_ALG_ES384), *ks[3];
    json_t *rj = pub_json(rsa), *c = claims_for(ISS_A), *set;
    char *tok;

    /* The RSA key declares alg RS256 in the JWKS. */
    json_object_set_new(rj, "alg", json_string("RS256"));
    cr_assert_eq(ferry_jwk_from_json(rj, 0, &rs256), 0);
    ks[0] = rs256, ks[1] = p256, ks[2] = p384;
    set = jwks_of(ks, 3);
    add_ok(o, json_pack("{s:s, s:[s], s:[s,s,s,s], s:o}", "issuer", ISS_A, "audiences", AUD,
                        "algorithms", "RS256", "PS256", "ES256", "ES384", "jwks", set));
    /* RS256 on an EC kid */
    tok = mint(rsa, FERRY_ALG_RS256, ferry_jwk_kid(p256), NULL, c);
    EXPECT_REASON(o, tok, FERRY_REASON_KEY_MISMATCH);
    free(tok);
    /* PS256 on a key that declares RS256 */
    tok = mint(rsa, FERRY_ALG_PS256, ferry_jwk_kid(rs256), NULL, c);
    EXPECT_REASON(o, tok, FERRY_REASON_KEY_MISMATCH);
    free(tok);
    /* ES256 with a P-384 key, ES384 with a P-256 key */
    tok = mint(p256, FERRY_ALG_ES256, ferry_jwk_kid(p384), NULL, c);
    EXPECT_REASON(o, tok, FERRY_REASON_KEY_MISMATCH);
    free(tok);
    tok = mint(p384, FERRY_ALG_ES384, ferry_jwk_kid(p256), NULL, c);
    EXPECT_REASON(o, tok, FERRY_REASON_KEY_MISMATCH);
    free(tok);
    /* and the right pairs verify */
    tok = mint(rsa, FERRY_ALG_RS256, ferry_jwk_kid(rs256), NULL, c);
    EXPECT_REASON(o, tok, FERRY_REASON_OK);
    free(tok);
    tok = mint(p384, FERRY_ALG_ES384, NULL, NULL, c);
    EXPECT_REASON(o, tok, FERRY_REASON_OK);
    free(tok);
    json_decref(rj);
    json_decref(c);
    ferry_jwk_unref(rsa);
    ferry_jwk_unref(rs256);
    ferry_jwk_unref(p256);
    ferry_jwk_unref(p384);
    ferry_oidc_free(o);
}

static const char p256_order[] =
    "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551";

/* Replace the signature of an ES256 token with r || s given as BIGNUMs (32 bytes each). */
static char *with_sig(const char *tok, const BIGNUM *r, const BIGNUM *s)
{
    unsigned char sig[64];
    const char *dot = strrchr(tok, '.');
    char *enc, *out;
    size_t n;

    cr_assert_eq(BN_bn2binpad(r, sig, 32), 32);
    cr_assert_eq(BN_bn2binpad(s, sig + 32, 32), 32);
    enc = b64(sig, 64);
    n = (size_t)(dot - tok) + 1 + strlen(enc) + 1;
    out = malloc(n);
    snprintf(out, n, "%.*s.%s", (int)(dot - tok), tok, enc);
    free(enc);
    return out;
}

static void split_sig(const char *tok, BIGNUM **r, BIGNUM **s)
{
    unsigned char sig[64];
    size_t n = 0;
    const char *dot = strrchr(tok, '.');

    cr_assert_eq(ferry_b64url_decode(dot + 1, strlen(dot + 1), sig, &n), 0);
    cr_assert_eq(n, 64);
    *r = BN_bin2bn(sig, 32, NULL);
    *s = BN_bin2bn(sig + 32, 32, NULL);
}

/* B3: (r, n - s) is a second valid signature of the same claims. It verifies (ECDSA is
 * malleable), so one-time use rests on the jti: accepted once, then refused as a replay. */
Test(keys, b3_malleated_ecdsa_twin_is_a_replay, .init = setup_ab, .fini = teardown_ab)
{
    ferry_verify_options vo = {.consume_jti = true};
    json_t *c = claims_for(ISS_A);
    char *tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c), *twin;
    BIGNUM *r, *s, *n = NULL, *s2 = BN_new();
    BN_CTX *bc = BN_CTX_new();

    split_sig(tok, &r, &s);
    cr_assert(BN_hex2bn(&n, p256_order) > 0);
    cr_assert_eq(BN_sub(s2, n, s), 1);
    twin = with_sig(tok, r, s2);
    cr_assert_str_neq(twin, tok);

    /* Without one-time use both verify: the twin is a real signature. */
    EXPECT_REASON(g_o, twin, FERRY_REASON_OK);
    EXPECT_REASON(g_o, tok, FERRY_REASON_OK);
    /* With it: whichever comes first wins, the other is a replay. */
    EXPECT_REASON_OPTS(g_o, tok, &vo, FERRY_REASON_OK);
    EXPECT_REASON_OPTS(g_o, twin, &vo, FERRY_REASON_REPLAYED);
    EXPECT_REASON_OPTS(g_o, tok, &vo, FERRY_REASON_REPLAYED);

    free(tok);
    free(twin);
    BN_free(r);
    BN_free(s);
    BN_free(n);
    BN_free(s2);
    BN_CTX_free(bc);
    json_decref(c);
}

/* B3: r, s in {0, 1, n-1, n}, s >= n, a DER signature, wrong lengths. */
Test(keys, b3_bad_ecdsa_signatures, .init = setup_ab, .fini = teardown_ab)
{
    json_t *c = claims_for(ISS_A);
    char *tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c), *bad;
    BIGNUM *r, *s, *v[4], *big = BN_new();
    const char *dot = strrchr(tok, '.');

    split_sig(tok, &r, &s);
    v[0] = BN_new();
    BN_zero(v[0]);
    v[1] = BN_new();
    BN_one(v[1]);
    v[3] = NULL;
    cr_assert(BN_hex2bn(&v[3], p256_order) > 0);
    v[2] = BN_dup(v[3]);
    BN_sub_word(v[2], 1);
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 4; j++) {
            bad = with_sig(tok, v[i], v[j]);
            EXPECT_REASON(g_o, bad, FERRY_REASON_BAD_SIGNATURE);
            free(bad);
        }
        bad = with_sig(tok, r, v[i]);
        EXPECT_REASON(g_o, bad, FERRY_REASON_BAD_SIGNATURE);
        free(bad);
        bad = with_sig(tok, v[i], s);
        EXPECT_REASON(g_o, bad, FERRY_REASON_BAD_SIGNATURE);
        free(bad);
    }
    /* s + n still fits 32 bytes only when s < 2^256 - n: use it when it does */
    BN_add(big, s, v[3]);
    if (BN_num_bytes(big) <= 32) {
        bad = with_sig(tok, r, big);
        EXPECT_REASON(g_o, bad, FERRY_REASON_BAD_SIGNATURE);
        free(bad);
    }
    /* DER-encoded (r, s) instead of P1363, and truncated / extended P1363 */
    {
        unsigned char p1363[64], *der = NULL;
        size_t der_len = 0, n;
        char *enc;

        BN_bn2binpad(r, p1363, 32);
        BN_bn2binpad(s, p1363 + 32, 32);
        cr_assert_eq(ferry_ecdsa_p1363_to_der(p1363, 64, &der, &der_len), 0);
        bad = assemble(NULL, FERRY_ALG_ES256, "{}", "", 0, der, der_len);
        enc = strrchr(bad, '.') + 1;
        n = (size_t)(dot - tok) + 1 + strlen(enc) + 1;
        {
            char *t2 = malloc(n);

            snprintf(t2, n, "%.*s.%s", (int)(dot - tok), tok, enc);
            EXPECT_REASON(g_o, t2, FERRY_REASON_BAD_SIGNATURE);
            free(t2);
        }
        free(bad);
        free(der);
        for (size_t len = 63; len <= 65; len += 2) {
            unsigned char buf[65] = {0};
            char *t2, *e2;

            memcpy(buf, p1363, 64);
            e2 = b64(buf, len);
            n = (size_t)(dot - tok) + 1 + strlen(e2) + 1;
            t2 = malloc(n);
            snprintf(t2, n, "%.*s.%s", (int)(dot - tok), tok, e2);
            EXPECT_REASON(g_o, t2, FERRY_REASON_BAD_SIGNATURE);
            free(t2);
            free(e2);
        }
    }
    for (int i = 0; i < 4; i++)
        BN_free(v[i]);
    BN_free(big);
    BN_free(r);
    BN_free(s);
    free(tok);
    json_decref(c);
}

/* B6: key lookup failures are refusals, never a verify with a NULL key. */
Test(keys, b6_unknown_kid, .init = setup_ab, .fini = teardown_ab)
{
    json_t *c = claims_for(ISS_A);
    char *tok;

    tok = mint(g_ka, FERRY_ALG_ES256, "no-such-kid", NULL, c);
    EXPECT_REASON(g_o, tok, FERRY_REASON_UNKNOWN_KID);
    free(tok);
    tok = mint(g_ka, FERRY_ALG_ES256, NOKID, NULL, c);
    EXPECT_REASON(g_o, tok, FERRY_REASON_OK); /* the one ES256 key of A */
    free(tok);
    json_decref(c);
    /* The jose layer refuses a NULL key outright. */
    cr_expect_eq(ferry_jose_verify(FERRY_ALG_ES256, NULL, "x", 1, "x", 1), -FERRY_ENOKEY);
}

/* ---- C1 / C2: time claims ----------------------------------------------------------------- */

Test(claims, c1_exp, .init = setup_ab, .fini = teardown_ab)
{
    static const struct {
        const char *json;
        ferry_reason want;
    } cases[] = {
        {"1699999000", FERRY_REASON_EXPIRED},        /* 1000 s ago */
        {"1699999940", FERRY_REASON_EXPIRED},        /* exactly leeway ago */
        {"1699999941", FERRY_REASON_OK},             /* inside the leeway */
        {"0", FERRY_REASON_EXPIRED},
        {"-1", FERRY_REASON_BAD_CLAIM},
        {"-9223372036854775808", FERRY_REASON_BAD_CLAIM},
        {"\"1700000300\"", FERRY_REASON_BAD_CLAIM},
        {"null", FERRY_REASON_BAD_CLAIM},
        {"true", FERRY_REASON_BAD_CLAIM},
        {"[1700000300]", FERRY_REASON_BAD_CLAIM},
        {"1700000300.0", FERRY_REASON_BAD_CLAIM},
        {"1700000300.5", FERRY_REASON_BAD_CLAIM},
        {"1e300", FERRY_REASON_BAD_CLAIM},
        {"9.3e18", FERRY_REASON_BAD_CLAIM},
        {"1e400", FERRY_REASON_BAD_CLAIM},
        {"9300000000000000000", FERRY_REASON_BAD_CLAIM},    /* integer beyond int64 */
        {"18446744073709551616", FERRY_REASON_BAD_CLAIM},
        {"9223372036854775807", FERRY_REASON_LIFETIME_TOO_LONG}, /* INT64_MAX */
        {"9223372036854775750", FERRY_REASON_LIFETIME_TOO_LONG}, /* + leeway would overflow */
        {"1700086301", FERRY_REASON_LIFETIME_TOO_LONG},       /* iat + 86401 */
        {"1700086300", FERRY_REASON_OK},                      /* iat + 86400 */
    };
    char payload[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(payload, sizeof(payload),
                 "{\"iss\":\"" ISS_A "\",\"sub\":\"u\",\"aud\":\"" AUD "\",\"iat\":%" PRId64
                 ",\"exp\":%s}",
                 NOW - 100, cases[i].json);
        expect_payload(g_o, g_ka, payload, cases[i].want, cases[i].json);
    }
    /* missing */
    snprintf(payload, sizeof(payload),
             "{\"iss\":\"" ISS_A "\",\"sub\":\"u\",\"aud\":\"" AUD "\",\"iat\":%" PRId64 "}",
             NOW - 10);
    expect_payload(g_o, g_ka, payload, FERRY_REASON_MISSING_CLAIM, "exp missing");

    /* The detail says exactly what was wrong. */
    {
        json_t *c = claims_for(ISS_A);

        json_object_set_new(c, "exp", json_integer(1699999000));
        expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_EXPIRED, "exp past");
        cr_expect_str_eq(g_last.detail,
                         "exp 1699999000 is 1000 s before now 1700000000 (leeway 60 s)");
    }
}

/* Extreme clocks: no overflow in now + leeway or exp - now (UBSan watches). */
Test(claims, c1_extreme_clock, .init = setup_ab, .fini = teardown_ab)
{
    ferry_verify_options vo = {.now = INT64_MAX - 1000};
    json_t *c = claims_for(ISS_A);
    char *tok;

    json_object_set_new(c, "exp", json_integer(INT64_MAX));
    json_object_set_new(c, "iat", json_integer(INT64_MAX - 1100));
    json_object_set_new(c, "nbf", json_integer(INT64_MAX - 1000));
    tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    EXPECT_REASON_OPTS(g_o, tok, &vo, FERRY_REASON_OK); /* exp + leeway saturates */
    vo.now = INT64_MAX; /* exp + leeway (saturated) <= now */
    EXPECT_REASON_OPTS(g_o, tok, &vo, FERRY_REASON_EXPIRED);
    vo.now = INT64_MIN;
    EXPECT_REASON_OPTS(g_o, tok, &vo, FERRY_REASON_NOT_YET_VALID);
    vo.now = -1;
    EXPECT_REASON_OPTS(g_o, tok, &vo, FERRY_REASON_NOT_YET_VALID);
    free(tok);
    json_decref(c);
}

Test(claims, c2_nbf_iat, .init = setup_ab, .fini = teardown_ab)
{
    json_t *c;

    c = claims_for(ISS_A);
    json_object_set_new(c, "nbf", json_integer(NOW + 61));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_NOT_YET_VALID, "nbf beyond leeway");
    cr_expect_str_eq(g_last.detail,
                     "nbf 1700000061 is 61 s after now 1700000000 (leeway 60 s)");
    c = claims_for(ISS_A);
    json_object_set_new(c, "nbf", json_integer(NOW + 60));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_OK, "nbf within leeway");
    c = claims_for(ISS_A);
    json_object_set_new(c, "nbf", json_string("1700000000"));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_BAD_CLAIM, "nbf string");
    c = claims_for(ISS_A);
    json_object_set_new(c, "nbf", json_real(1.0));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_BAD_CLAIM, "nbf real");
    c = claims_for(ISS_A);
    json_object_set_new(c, "iat", json_integer(NOW + 61));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_ISSUED_IN_FUTURE, "iat in the future");
    c = claims_for(ISS_A);
    json_object_set_new(c, "iat", json_integer(NOW + 60));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_OK, "iat within leeway");
    c = claims_for(ISS_A);
    json_object_del(c, "iat");
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_MISSING_CLAIM, "iat missing (ID token)");
    c = claims_for(ISS_A);
    json_object_set_new(c, "iat", json_integer(-5));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_BAD_CLAIM, "iat negative");
    c = claims_for(ISS_A);
    json_object_set_new(c, "iat", json_integer(0)); /* exp - iat far over max_lifetime */
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_LIFETIME_TOO_LONG, "iat 0");
    c = claims_for(ISS_A);
    json_object_set_new(c, "iat", json_integer(NOW + 30));
    json_object_set_new(c, "exp", json_integer(NOW + 20));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_BAD_CLAIM, "exp before iat");
}

/* A custom leeway and max_lifetime. */
Test(claims, leeway_and_lifetime_from_config, .init = setup_ab, .fini = teardown_ab)
{
    json_t *conf = conf_inline("https://l.example", g_ka), *c;

    json_object_set_new(conf, "leeway", json_integer(0));
    json_object_set_new(conf, "max_lifetime", json_integer(600));
    add_ok(g_o, conf);
    c = claims_for("https://l.example");
    json_object_set_new(c, "exp", json_integer(NOW));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_EXPIRED, "leeway 0, exp = now");
    c = claims_for("https://l.example");
    json_object_set_new(c, "exp", json_integer(NOW + 1));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_OK, "leeway 0, exp = now + 1");
    c = claims_for("https://l.example");
    json_object_set_new(c, "iat", json_integer(NOW + 1));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_ISSUED_IN_FUTURE, "leeway 0, iat + 1");
    c = claims_for("https://l.example");
    json_object_set_new(c, "exp", json_integer(NOW - 10 + 601));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_LIFETIME_TOO_LONG, "lifetime 601");
    cr_expect_str_eq(g_last.detail, "exp - iat is 601 s, over max_lifetime 600 s");
}

/* ---- C3: issuer ----------------------------------------------------------------------------- */

Test(claims, c3_issuer_bytes, .init = setup_ab, .fini = teardown_ab)
{
    static const char *const variants[] = {
        ISS_A "/", "https://A.example", "HTTPS://a.example", "https://a.example ",
        " https://a.example", "https://\xd0\xb0.example", /* Cyrillic a */
        "https://a.example.", "https://a.exampl", "https://a.example/x", "",
    };
    json_t *c;

    for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
        c = claims_for(ISS_A);
        json_object_set_new(c, "iss", json_string(variants[i]));
        expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_UNKNOWN_ISSUER, variants[i]);
    }
    /* Non-string and missing iss */
    c = claims_for(ISS_A);
    json_object_set_new(c, "iss", json_integer(1));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_UNKNOWN_ISSUER, "iss number");
    c = claims_for(ISS_A);
    json_object_set_new(c, "iss", json_pack("[s]", ISS_A));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_UNKNOWN_ISSUER, "iss array");
    c = claims_for(ISS_A);
    json_object_set_new(c, "iss", json_null());
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_UNKNOWN_ISSUER, "iss null");
    c = claims_for(ISS_A);
    json_object_del(c, "iss");
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_UNKNOWN_ISSUER, "iss missing");
    /* An embedded NUL never reaches the lookup: the parser refuses \u0000. */
    expect_payload(g_o, g_ka,
                   "{\"iss\":\"https://a.example\\u0000\",\"sub\":\"u\",\"aud\":\"ferry\","
                   "\"exp\":1700000300,\"iat\":1699999990}",
                   FERRY_REASON_MALFORMED, "iss with NUL");
    expect_payload(g_o, g_ka,
                   "{\"iss\":\"https://a.example\",\"sub\":\"u\",\"aud\":\"ferry\","
                   "\"exp\":1700000300,\"iat\":1699999990}",
                   FERRY_REASON_OK, "control");
}

/* ---- C4: audience --------------------------------------------------------------------------- */

Test(claims, c4_audience, .init = setup_ab, .fini = teardown_ab)
{
    static const char *const bad[] = {
        "[]", "\"\"", "1", "{}", "null", "true", "[1]", "[\"ferry\", 1]", "\"other\"",
        "[\"other\"]", "\"Ferry\"", "\"FERRY\"", "\" ferry\"", "\"ferry \"", "\"ferry/\"",
        "[[\"ferry\"]]", "\"ferr\"",
    };
    json_t *c;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = claims_for(ISS_A);
        json_object_set_new(c, "aud", json_loads(bad[i], JSON_DECODE_ANY, NULL));
        expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_BAD_AUDIENCE, bad[i]);
    }
    c = claims_for(ISS_A);
    json_object_del(c, "aud");
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_BAD_AUDIENCE, "aud absent");
    c = claims_for(ISS_A);
    json_object_set_new(c, "aud", json_pack("[s,s]", "other", AUD));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_OK, "aud array containing us");
    c = claims_for(ISS_A);
    json_object_set_new(c, "aud", json_pack("[s]", AUD));
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_OK, "aud [us]");
}

Test(claims, c4_require_azp_and_requested_audience, .init = setup_ab, .fini = teardown_ab)
{
    json_t *conf = conf_inline("https://azp.example", g_ka), *c;
    ferry_verify_options vo = {0};
    char *tok;

    json_object_set_new(conf, "require_azp", json_true());
    json_object_set_new(conf, "audiences", json_pack("[s,s]", AUD, "ferry-admin"));
    add_ok(g_o, conf);
    c = claims_for("https://azp.example");
    json_object_set_new(c, "aud", json_pack("[s,s]", AUD, "other"));
    expect_claims(g_o, g_ka, NULL, json_incref(c), FERRY_REASON_BAD_AUDIENCE,
                  "two audiences, no azp");
    json_object_set_new(c, "azp", json_integer(5));
    expect_claims(g_o, g_ka, NULL, json_incref(c), FERRY_REASON_BAD_CLAIM, "azp not a string");
    json_object_set_new(c, "azp", json_string("client-1"));
    expect_claims(g_o, g_ka, NULL, json_incref(c), FERRY_REASON_OK, "two audiences, azp");
    json_object_del(c, "azp");
    json_object_set_new(c, "aud", json_string(AUD));
    expect_claims(g_o, g_ka, NULL, json_incref(c), FERRY_REASON_OK, "one audience, no azp");

    /* opts->audience: must be one of the issuer's and must be in the token. */
    json_object_set_new(c, "aud", json_pack("[s,s]", AUD, "ferry-admin"));
    json_object_set_new(c, "azp", json_string("client-1"));
    tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    vo.audience = "ferry-admin";
    EXPECT_REASON_OPTS(g_o, tok, &vo, FERRY_REASON_OK);
    vo.audience = "other";
    EXPECT_REASON_OPTS(g_o, tok, &vo, FERRY_REASON_BAD_AUDIENCE);
    free(tok);
    json_object_set_new(c, "aud", json_string(AUD));
    tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    vo.audience = "ferry-admin";
    EXPECT_REASON_OPTS(g_o, tok, &vo, FERRY_REASON_BAD_AUDIENCE);
    vo.audience = AUD;
    EXPECT_REASON_OPTS(g_o, tok, &vo, FERRY_REASON_OK);
    free(tok);
    json_decref(c);
}

/* ---- C5: subject -------------------------------------------------------------------------- */

Test(claims, c5_subject, .init = setup_ab, .fini = teardown_ab)
{
    static const char *const bad[] = {"\"\"", "1", "null", "[\"u\"]", "{}", "false"};
    json_t *c;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = claims_for(ISS_A);
        json_object_set_new(c, "sub", json_loads(bad[i], JSON_DECODE_ANY, NULL));
        expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_BAD_SUBJECT, bad[i]);
    }
    c = claims_for(ISS_A);
    json_object_del(c, "sub");
    expect_claims(g_o, g_ka, NULL, c, FERRY_REASON_MISSING_CLAIM, "sub missing");

    /* Duplicate claim names are refused by the parser (last-wins would be exploitable). */
    expect_payload(g_o, g_ka,
                   "{\"iss\":\"" ISS_A "\",\"sub\":\"u\",\"sub\":\"admin\",\"aud\":\"ferry\","
                   "\"exp\":1700000300,\"iat\":1699999990}",
                   FERRY_REASON_MALFORMED, "duplicate sub");
    expect_payload(g_o, g_ka,
                   "{\"iss\":\"" ISS_B "\",\"iss\":\"" ISS_A "\",\"sub\":\"u\",\"aud\":\"ferry\","
                   "\"exp\":1700000300,\"iat\":1699999990}",
                   FERRY_REASON_MALFORMED, "duplicate iss");
    expect_payload(g_o, g_ka,
                   "{\"iss\":\"" ISS_A "\",\"sub\":\"u\",\"aud\":\"ferry\",\"exp\":1,"
                   "\"exp\":1700000300,\"iat\":1699999990}",
                   FERRY_REASON_MALFORMED, "duplicate exp");
}

/* ---- C6: typ per profile ------------------------------------------------------------------ */

static json_t *at_claims(const char *iss)
{
    json_t *c = claims_for(iss);

    json_object_set_new(c, "client_id", json_string("client-1"));
    return c;
}

Test(claims, c6_typ_confusion, .init = setup_ab, .fini = teardown_ab)
{
    static const struct {
        const char *typ; /* NULL = absent */
        ferry_reason id_token, access_token;
    } cases[] = {
        {NULL, FERRY_REASON_OK, FERRY_REASON_BAD_TYP},
        {"JWT", FERRY_REASON_OK, FERRY_REASON_BAD_TYP},
        {"jwt", FERRY_REASON_OK, FERRY_REASON_BAD_TYP},
        {"application/jwt", FERRY_REASON_OK, FERRY_REASON_BAD_TYP},
        {"Application/JWT", FERRY_REASON_OK, FERRY_REASON_BAD_TYP},
        {"at+jwt", FERRY_REASON_BAD_TYP, FERRY_REASON_OK},
        {"AT+JWT", FERRY_REASON_BAD_TYP, FERRY_REASON_OK},
        {"application/at+jwt", FERRY_REASON_BAD_TYP, FERRY_REASON_OK},
        {"dpop+jwt", FERRY_REASON_BAD_TYP, FERRY_REASON_BAD_TYP},
        {"application/dpop+jwt", FERRY_REASON_BAD_TYP, FERRY_REASON_BAD_TYP},
        {"JOSE", FERRY_REASON_BAD_TYP, FERRY_REASON_BAD_TYP},
        {"", FERRY_REASON_BAD_TYP, FERRY_REASON_BAD_TYP},
        {"application/", FERRY_REASON_BAD_TYP, FERRY_REASON_BAD_TYP},
        {"JWT ", FERRY_REASON_BAD_TYP, FERRY_REASON_BAD_TYP},
        {"at+jwt\t", FERRY_REASON_BAD_TYP, FERRY_REASON_BAD_TYP},
        {"logout+jwt", FERRY_REASON_BAD_TYP, FERRY_REASON_BAD_TYP},
    };
    json_t *conf = conf_inline("https://at.example", g_ka);

    json_object_set_new(conf, "profile", json_string("access_token"));
    add_ok(g_o, conf);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *what = cases[i].typ ? cases[i].typ : "(none)";

        expect_claims(g_o, g_ka, cases[i].typ, at_claims(ISS_A), cases[i].id_token, what);
        expect_claims(g_o, g_ka, cases[i].typ, at_claims("https://at.example"),
                      cases[i].access_token, what);
    }
    /* A non-string typ is refused by the JWS layer. */
    {
        char hdr[256], *ps, *tok;
        json_t *c = claims_for(ISS_A);

        snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":1}",
                 ferry_jwk_kid(g_ka));
        ps = json_dumps(c, JSON_COMPACT);
        tok = assemble(g_ka, FERRY_ALG_ES256, hdr, ps, strlen(ps), NULL, 0);
        EXPECT_REASON(g_o, tok, FERRY_REASON_MALFORMED);
        free(tok);
        free(ps);
        json_decref(c);
    }
}

/* ---- profiles ----------------------------------------------------------------------------- */

Test(profiles, access_token_rfc9068, .init = setup_ab, .fini = teardown_ab)
{
    json_t *conf = conf_inline("https://at.example", g_ka), *c;
    static const char *const required[] = {"exp", "iat", "jti", "client_id"};

    json_object_set_new(conf, "profile", json_string("access_token"));
    add_ok(g_o, conf);
    expect_claims(g_o, g_ka, "at+jwt", at_claims("https://at.example"), FERRY_REASON_OK, "ok");
    for (size_t i = 0; i < 4; i++) {
        c = at_claims("https://at.example");
        json_object_del(c, required[i]);
        expect_claims(g_o, g_ka, "at+jwt", c, FERRY_REASON_MISSING_CLAIM, required[i]);
    }
    c = at_claims("https://at.example");
    json_object_del(c, "sub");
    expect_claims(g_o, g_ka, "at+jwt", c, FERRY_REASON_MISSING_CLAIM, "sub");
    c = at_claims("https://at.example");
    json_object_del(c, "aud");
    expect_claims(g_o, g_ka, "at+jwt", c, FERRY_REASON_BAD_AUDIENCE, "aud");
    c = at_claims("https://at.example");
    json_object_set_new(c, "client_id", json_integer(7));
    expect_claims(g_o, g_ka, "at+jwt", c, FERRY_REASON_BAD_CLAIM, "client_id number");
    c = at_claims("https://at.example");
    json_object_set_new(c, "jti", json_string(""));
    expect_claims(g_o, g_ka, "at+jwt", c, FERRY_REASON_BAD_CLAIM, "jti empty");
}

Test(profiles, kubernetes_service_account, .init = setup_ab, .fini = teardown_ab)
{
    static const char *const bad_subs[] = {
        "system:serviceaccount:ns",        "system:serviceaccount::name",
        "system:serviceaccount:ns:",       "system:serviceaccount:ns:a:b",
        "system:serviceaccounts:ns:name",  "System:serviceaccount:ns:name",
        "system:serviceaccount:",          "user-1",
    };
    json_t *conf = conf_inline("https://k8s.example", g_ka), *c, *k8s;

    json_object_set_new(conf, "profile", json_string("kubernetes"));
    add_ok(g_o, conf);
    c = claims_for("https://k8s.example");
    json_object_set_new(c, "sub", json_string("system:serviceaccount:train:runner"));
    expect_claims(g_o, g_ka, NULL, json_incref(c), FERRY_REASON_MISSING_CLAIM,
                  "no kubernetes.io");
    k8s = json_pack("{s:s, s:{s:s, s:s}, s:{s:s, s:s}}", "namespace", "train", "serviceaccount",
                    "name", "runner", "uid", "u-1", "pod", "name", "p", "uid", "u-2");
    json_object_set_new(c, "kubernetes.io", json_deep_copy(k8s));
    expect_claims(g_o, g_ka, "JWT", json_incref(c), FERRY_REASON_OK, "agreeing kubernetes.io");
    expect_claims(g_o, g_ka, "at+jwt", json_incref(c), FERRY_REASON_BAD_TYP, "at+jwt");

    json_object_set_new(json_object_get(c, "kubernetes.io"), "namespace", json_string("prod"));
    expect_claims(g_o, g_ka, NULL, json_incref(c), FERRY_REASON_BAD_SUBJECT, "namespace");
    json_object_set_new(c, "kubernetes.io", json_deep_copy(k8s));
    json_object_set_new(json_object_get(json_object_get(c, "kubernetes.io"), "serviceaccount"),
                        "name", json_string("admin"));
    expect_claims(g_o, g_ka, NULL, json_incref(c), FERRY_REASON_BAD_SUBJECT, "sa name");
    json_object_set_new(c, "kubernetes.io", json_string("train"));
    expect_claims(g_o, g_ka, NULL, json_incref(c), FERRY_REASON_BAD_CLAIM, "not an object");
    json_object_set_new(c, "kubernetes.io", json_object());
    expect_claims(g_o, g_ka, NULL, json_incref(c), FERRY_REASON_BAD_SUBJECT, "empty object");
    json_object_del(c, "kubernetes.io");
    for (size_t i = 0; i < sizeof(bad_subs) / sizeof(bad_subs[0]); i++) {
        json_object_set_new(c, "sub", json_string(bad_subs[i]));
        expect_claims(g_o, g_ka, NULL, json_incref(c), FERRY_REASON_BAD_SUBJECT, bad_subs[i]);
    }
    json_object_set_new(c, "sub", json_string("system:serviceaccount:train:runner"));
    json_object_del(c, "iat");
    expect_claims(g_o, g_ka, NULL, json_incref(c), FERRY_REASON_MISSING_CLAIM, "iat");
    json_decref(k8s);
    json_decref(c);
}

Test(profiles, github_actions, .init = setup_ab, .fini = teardown_ab)
{
    static const char *const required[] = {"repository", "ref", "repository_owner", "jti",
                                           "iat"};
    json_t *conf = conf_inline("https://token.actions.githubusercontent.com", g_ka), *c;

    json_object_set_new(conf, "profile", json_string("github_actions"));
    add_ok(g_o, conf);
    c = claims_for("https://token.actions.githubusercontent.com");
    json_object_set_new(c, "sub", json_string("repo:octo/train:ref:refs/heads/main"));
    json_object_set_new(c, "repository", json_string("octo/train"));
    json_object_set_new(c, "repository_owner", json_string("octo"));
    json_object_set_new(c, "ref", json_string("refs/heads/main"));
    expect_claims(g_o, g_ka, "JWT", json_incref(c), FERRY_REASON_OK, "ok");
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        json_t *c2 = json_deep_copy(c);

        json_object_del(c2, required[i]);
        expect_claims(g_o, g_ka, NULL, c2, FERRY_REASON_MISSING_CLAIM, required[i]);
    }
    json_object_set_new(c, "repository", json_pack("[s]", "octo/train"));
    expect_claims(g_o, g_ka, NULL, json_incref(c), FERRY_REASON_BAD_CLAIM, "repository array");
    json_decref(c);
}

/* ferry's own tokens: at+jwt with client_id, jti, src_iss; and each side refuses the other's
 * tokens (C6: ferry-minted typ presented upstream and the other way round). */
Test(profiles, ferry_minted, .init = setup_ab, .fini = teardown_ab)
{
    json_t *conf = conf_inline("https://ferry.example", g_kb), *c;

    json_object_set_new(conf, "profile", json_string("ferry"));
    add_ok(g_o, conf);
    c = at_claims("https://ferry.example");
    json_object_set_new(c, "src_iss", json_string(ISS_A));
    expect_claims(g_o, g_kb, "at+jwt", json_incref(c), FERRY_REASON_OK, "ok");
    expect_claims(g_o, g_kb, "JWT", json_incref(c), FERRY_REASON_BAD_TYP, "typ JWT");
    expect_claims(g_o, g_kb, NULL, json_incref(c), FERRY_REASON_BAD_TYP, "no typ");
    json_object_del(c, "src_iss");
    expect_claims(g_o, g_kb, "at+jwt", json_incref(c), FERRY_REASON_MISSING_CLAIM, "src_iss");
    /* a token signed with upstream issuer A's key, claiming to be ferry's */
    json_object_set_new(c, "src_iss", json_string(ISS_A));
    expect_claims(g_o, g_ka, "at+jwt", json_incref(c), FERRY_REASON_UNKNOWN_KID,
                  "A's key for the ferry issuer");
    {
        char *tok = mint(g_ka, FERRY_ALG_ES256, NOKID, "at+jwt", c);

        EXPECT_REASON(g_o, tok, FERRY_REASON_BAD_SIGNATURE);
        free(tok);
    }
    json_decref(c);
    /* a ferry token (at+jwt) at an upstream id_token issuer */
    c = at_claims(ISS_B);
    json_object_set_new(c, "src_iss", json_string(ISS_A));
    expect_claims(g_o, g_kb, "at+jwt", c, FERRY_REASON_BAD_TYP, "at+jwt at id_token issuer");
}

Test(profiles, required_claims, .init = setup_ab, .fini = teardown_ab)
{
    json_t *conf = conf_inline("https://rc.example", g_ka), *c;

    json_object_set_new(conf, "required_claims",
                        json_pack("{s:s, s:b, s:[s], s:n, s:i}", "tid", "tenant-1",
                                  "email_verified", 1, "groups", "ml", "nonce", "level", 2));
    add_ok(g_o, conf);
    c = claims_for("https://rc.example");
    json_object_set_new(c, "tid", json_string("tenant-1"));
    json_object_set_new(c, "email_verified", json_true());
    json_object_set_new(c, "groups", json_pack("[s]", "ml"));
    json_object_set_new(c, "nonce", json_string("anything"));
    json_object_set_new(c, "level", json_integer(2));
    expect_claims(g_o, g_ka, NULL, json_incref(c), FERRY_REASON_OK, "all present");

    static const struct {
        const char *name, *value; /* value NULL: delete */
        ferry_reason want;
    } cases[] = {
        {"tid", "\"tenant-2\"", FERRY_REASON_CLAIM_MISMATCH},
        {"tid", "\"Tenant-1\"", FERRY_REASON_CLAIM_MISMATCH},
        {"tid", "[\"tenant-1\"]", FERRY_REASON_CLAIM_MISMATCH},
        {"tid", NULL, FERRY_REASON_MISSING_CLAIM},
        {"email_verified", "\"true\"", FERRY_REASON_CLAIM_MISMATCH},
        {"email_verified", "false", FERRY_REASON_CLAIM_MISMATCH},
        {"groups", "[\"ml\",\"admin\"]", FERRY_REASON_CLAIM_MISMATCH},
        {"groups", "\"ml\"", FERRY_REASON_CLAIM_MISMATCH},
        {"nonce", NULL, FERRY_REASON_MISSING_CLAIM},
        {"nonce", "null", FERRY_REASON_OK}, /* present (as null) is enough */
        {"level", "2.0", FERRY_REASON_CLAIM_MISMATCH},
        {"level", "\"2\"", FERRY_REASON_CLAIM_MISMATCH},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *c2 = json_deep_copy(c);

        if (cases[i].value)
            json_object_set_new(c2, cases[i].name,
                                json_loads(cases[i].value, JSON_DECODE_ANY, NULL));
        else
            json_object_del(c2, cases[i].name);
        expect_claims(g_o, g_ka, NULL, c2, cases[i].want, cases[i].name);
    }
    json_decref(c);
}

/* ---- C7: replay --------------------------------------------------------------------------- */

Test(replay, c7_second_use_refused, .init = setup_ab, .fini = teardown_ab)
{
    ferry_verify_options once = {.consume_jti = true};
    json_t *c = claims_for(ISS_A);
    char *tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c), *tok_b;

    EXPECT_REASON(g_o, tok, FERRY_REASON_OK);
    EXPECT_REASON(g_o, tok, FERRY_REASON_OK); /* not one-time: reusable */
    EXPECT_REASON_OPTS(g_o, tok, &once, FERRY_REASON_OK);
    EXPECT_REASON_OPTS(g_o, tok, &once, FERRY_REASON_REPLAYED);
    EXPECT_REASON_OPTS(g_o, tok, &once, FERRY_REASON_REPLAYED);
    /* The same jti from another issuer is another pair. */
    json_object_set_new(c, "iss", json_string(ISS_B));
    tok_b = mint(g_kb, FERRY_ALG_ES256, NULL, NULL, c);
    EXPECT_REASON_OPTS(g_o, tok_b, &once, FERRY_REASON_OK);
    EXPECT_REASON_OPTS(g_o, tok_b, &once, FERRY_REASON_REPLAYED);
    free(tok_b);
    free(tok);
    /* One-time use requires a jti. */
    json_object_set_new(c, "iss", json_string(ISS_A));
    json_object_del(c, "jti");
    tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    EXPECT_REASON(g_o, tok, FERRY_REASON_OK);
    EXPECT_REASON_OPTS(g_o, tok, &once, FERRY_REASON_MISSING_CLAIM);
    free(tok);
    json_object_set_new(c, "jti", json_integer(5));
    tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    EXPECT_REASON_OPTS(g_o, tok, &once, FERRY_REASON_BAD_CLAIM);
    free(tok);
    /* A refused token does not burn its jti. */
    json_object_set_new(c, "jti", json_string("jti-2"));
    json_object_set_new(c, "aud", json_string("other"));
    tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    EXPECT_REASON_OPTS(g_o, tok, &once, FERRY_REASON_BAD_AUDIENCE);
    free(tok);
    json_object_set_new(c, "aud", json_string(AUD));
    tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    EXPECT_REASON_OPTS(g_o, tok, &once, FERRY_REASON_OK);
    free(tok);
    json_decref(c);
}

/* ferry_oidc_consume spends a token verified without consume_jti, with the same effect. */
Test(replay, c7_consume_after_verification, .init = setup_ab, .fini = teardown_ab)
{
    ferry_verify_options once = {.consume_jti = true};
    ferry_verify_result res;
    ferry_identity *id = NULL;
    json_t *c = claims_for(ISS_A);
    char *tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);

    cr_assert_eq(ferry_oidc_verify(g_o, tok, strlen(tok), NULL, &id, &res), 0);
    cr_expect_eq(ferry_oidc_consume(g_o, id, 0, &res), 0);
    cr_expect_eq(res.reason, FERRY_REASON_OK);
    cr_expect_eq(ferry_oidc_consume(g_o, id, 0, &res), -FERRY_EREFUSED);
    cr_expect_eq(res.reason, FERRY_REASON_REPLAYED);
    EXPECT_REASON_OPTS(g_o, tok, &once, FERRY_REASON_REPLAYED);
    EXPECT_REASON(g_o, tok, FERRY_REASON_OK); /* still valid where not one-time */
    ferry_identity_free(id);
    id = NULL;
    free(tok);

    /* Consumed by verification first: consume refuses it too. */
    json_object_set_new(c, "jti", json_string("jti-consume-2"));
    tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    cr_assert_eq(ferry_oidc_verify(g_o, tok, strlen(tok), &once, &id, &res), 0);
    cr_expect_eq(ferry_oidc_consume(g_o, id, 0, &res), -FERRY_EREFUSED);
    cr_expect_eq(res.reason, FERRY_REASON_REPLAYED);
    ferry_identity_free(id);
    id = NULL;
    free(tok);

    /* No jti: nothing to spend, refused like consume_jti. */
    json_object_del(c, "jti");
    tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    cr_assert_eq(ferry_oidc_verify(g_o, tok, strlen(tok), NULL, &id, &res), 0);
    cr_expect_eq(ferry_oidc_consume(g_o, id, 0, &res), -FERRY_EREFUSED);
    cr_expect_eq(res.reason, FERRY_REASON_MISSING_CLAIM);
    ferry_identity_free(id);
    free(tok);
    json_decref(c);
    cr_expect_eq(ferry_oidc_consume(NULL, NULL, 0, &res), -EINVAL);
}

/* The cache is bounded, evicts by exp (+ leeway) and fails closed when full of live entries. */
Test(replay, c7_bounded_cache_evicts_by_exp)
{
    ferry_oidc *o = new_store(3);
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    ferry_verify_options once = {.consume_jti = true, .now = NOW};
    json_t *c = claims_for(ISS_A);
    char *tok[5], jti[16];

    add_ok(o, conf_inline(ISS_A, k));
    for (int i = 0; i < 5; i++) {
        snprintf(jti, sizeof(jti), "j%d", i);
        json_object_set_new(c, "jti", json_string(jti));
        json_object_set_new(c, "exp", json_integer(NOW + 100 * (i + 1)));
        tok[i] = mint(k, FERRY_ALG_ES256, NULL, NULL, c);
    }
    EXPECT_REASON_OPTS(o, tok[2], &once, FERRY_REASON_OK); /* exp +300 */
    EXPECT_REASON_OPTS(o, tok[0], &once, FERRY_REASON_OK); /* exp +100 */
    EXPECT_REASON_OPTS(o, tok[1], &once, FERRY_REASON_OK); /* exp +200 */
    EXPECT_REASON_OPTS(o, tok[3], &once, FERRY_REASON_REPLAY_CACHE_FULL);
    EXPECT_REASON_OPTS(o, tok[3], &once, FERRY_REASON_REPLAY_CACHE_FULL);
    /* tok[0] (exp +100) is still remembered while exp + leeway has not passed */
    once.now = NOW + 159;
    EXPECT_REASON_OPTS(o, tok[0], &once, FERRY_REASON_REPLAYED);
    EXPECT_REASON_OPTS(o, tok[3], &once, FERRY_REASON_REPLAY_CACHE_FULL);
    /* at exp + leeway the token is expired and its entry can go */
    once.now = NOW + 160;
    EXPECT_REASON_OPTS(o, tok[0], &once, FERRY_REASON_EXPIRED);
    EXPECT_REASON_OPTS(o, tok[3], &once, FERRY_REASON_OK);
    EXPECT_REASON_OPTS(o, tok[4], &once, FERRY_REASON_REPLAY_CACHE_FULL);
    EXPECT_REASON_OPTS(o, tok[1], &once, FERRY_REASON_REPLAYED);
    EXPECT_REASON_OPTS(o, tok[2], &once, FERRY_REASON_REPLAYED);
    EXPECT_REASON_OPTS(o, tok[3], &once, FERRY_REASON_REPLAYED);
    once.now = NOW + 260;
    EXPECT_REASON_OPTS(o, tok[4], &once, FERRY_REASON_OK);
    EXPECT_REASON_OPTS(o, tok[2], &once, FERRY_REASON_REPLAYED);
    for (int i = 0; i < 5; i++)
        free(tok[i]);
    json_decref(c);
    ferry_jwk_unref(k);
    ferry_oidc_free(o);
}

/* Many entries with mixed expiries: growth, heap order and eviction stay exact. */
Test(replay, c7_many_entries, .timeout = 30)
{
    enum { N = 3000 };
    ferry_oidc *o = new_store(N);
    ferry_jwk *k = gen(FERRY_ALG_ES256);
    ferry_verify_options once = {.consume_jti = true, .now = NOW};
    json_t *c = claims_for(ISS_A);
    char **tok = calloc(N, sizeof(*tok)), jti[16];
    int64_t exps[N];

    add_ok(o, conf_inline(ISS_A, k));
    for (int i = 0; i < N; i++) {
        snprintf(jti, sizeof(jti), "m%d", i);
        exps[i] = NOW + 61 + (i * 7919) % 1000; /* a permutation-ish spread of expiries */
        json_object_set_new(c, "jti", json_string(jti));
        json_object_set_new(c, "exp", json_integer(exps[i]));
        tok[i] = mint(k, FERRY_ALG_ES256, NULL, NULL, c);
        EXPECT_REASON_OPTS(o, tok[i], &once, FERRY_REASON_OK);
    }
    EXPECT_REASON_OPTS(o, tok[17], &once, FERRY_REASON_REPLAYED);
    /* Half-way through time, exactly the entries with exp + 60 <= now are gone. */
    once.now = NOW + 61 + 500 + 60;
    for (int i = 0; i < N; i++) {
        ferry_reason want = exps[i] + 60 <= once.now ? FERRY_REASON_EXPIRED
                                                     : FERRY_REASON_REPLAYED;
        ferry_reason got = verify_opts(o, tok[i], &once);

        if (got != want)
            cr_assert_fail("token %d: got %s want %s", i, ferry_reason_name(got),
                           ferry_reason_name(want));
    }
    for (int i = 0; i < N; i++)
        free(tok[i]);
    free(tok);
    json_decref(c);
    ferry_jwk_unref(k);
    ferry_oidc_free(o);
}

/* ---- C8: cross-issuer keys ---------------------------------------------------------------- */

Test(keys, c8_cross_issuer, .init = setup_ab, .fini = teardown_ab)
{
    json_t *c = claims_for(ISS_A), *bj, *set;
    char *tok;

    /* B's key and kid, iss A: the kid exists only in B's set. */
    tok = mint(g_kb, FERRY_ALG_ES256, NULL, NULL, c);
    EXPECT_REASON(g_o, tok, FERRY_REASON_UNKNOWN_KID);
    free(tok);
    /* No kid: A's single key is chosen, B's signature does not verify with it. */
    tok = mint(g_kb, FERRY_ALG_ES256, NOKID, NULL, c);
    EXPECT_REASON(g_o, tok, FERRY_REASON_BAD_SIGNATURE);
    free(tok);

    /* Issuer C publishes B's key under A's kid: a token for A with that kid, signed by B's
     * key, looks the kid up in A's set only and fails the signature. */
    bj = pub_json(g_kb);
    json_object_set_new(bj, "kid", json_string(ferry_jwk_kid(g_ka)));
    set = json_pack("{s:[o]}", "keys", bj);
    add_ok(g_o, json_pack("{s:s, s:[s], s:[s], s:o}", "issuer", "https://c.example",
                          "audiences", AUD, "algorithms", "ES256", "jwks", set));
    tok = mint(g_kb, FERRY_ALG_ES256, ferry_jwk_kid(g_ka), NULL, c);
    EXPECT_REASON(g_o, tok, FERRY_REASON_BAD_SIGNATURE);
    free(tok);
    json_object_set_new(c, "iss", json_string("https://c.example"));
    tok = mint(g_kb, FERRY_ALG_ES256, ferry_jwk_kid(g_ka), NULL, c);
    EXPECT_REASON(g_o, tok, FERRY_REASON_OK);
    free(tok);
    json_decref(c);
}

/* ---- D6: key policy at ingest, through an inline JWKS ------------------------------------ */

static char *bn_param_b64(EVP_PKEY *pk, const char *name)
{
    BIGNUM *bn = NULL;
    unsigned char buf[1024];
    int n;

    cr_assert_eq(EVP_PKEY_get_bn_param(pk, name, &bn), 1);
    n = BN_bn2bin(bn, buf);
    BN_free(bn);
    return b64(buf, (size_t)n);
}

Test(keys, d6_bad_keys_refused_at_ingest)
{
    ferry_oidc *o = new_store(0);
    ferry_jwk *good = gen(FERRY_ALG_ES256), *dup1 = gen(FERRY_ALG_ES256),
              *dup2 = gen(FERRY_ALG_ES256), *enc = gen(FERRY_ALG_ES256);
    EVP_PKEY *r1024 = EVP_RSA_gen(1024);
    char *n1024 = bn_param_b64(r1024, OSSL_PKEY_PARAM_RSA_N), *tok, err[256];
    json_t *keys = json_array(), *j, *c = claims_for(ISS_A), *many;

    json_array_append_new(keys, pub_json(good));
    json_array_append_new(keys, json_pack("{s:s, s:s, s:s, s:s}", "kty", "RSA", "kid", "rsa1024",
                                          "n", n1024, "e", "AQAB"));
    json_array_append_new(keys, json_pack("{s:s, s:s, s:s, s:s}", "kty", "RSA", "kid", "e1",
                                          "n", n1024, "e", "AQ"));
    j = pub_json(dup1); /* off-curve: flip a bit of y */
    {
        char *y = strdup(json_string_value(json_object_get(j, "y")));

        y[5] = y[5] == 'A' ? 'B' : 'A';
        json_object_set_new(j, "y", json_string(y));
        json_object_set_new(j, "kid", json_string("offcurve"));
        free(y);
    }
    json_array_append_new(keys, j);
    json_array_append_new(keys, json_pack("{s:s, s:s, s:s}", "kty", "oct", "kid", "oct",
                                          "k", "c2VjcmV0"));
    j = pub_json(enc);
    json_object_set_new(j, "use", json_string("enc"));
    json_array_append_new(keys, j);
    j = pub_json(dup1);
    json_object_set_new(j, "kid", json_string("dup"));
    json_array_append_new(keys, j);
    j = pub_json(dup2);
    json_object_set_new(j, "kid", json_string("dup"));
    json_array_append_new(keys, j);
    json_array_append_new(keys, json_pack("{s:s, s:s}", "kty", "XYZ", "kid", "xyz"));
    add_ok(o, json_pack("{s:s, s:[s], s:[s,s], s:{s:o}}", "issuer", ISS_A, "audiences", AUD,
                        "algorithms", "ES256", "RS256", "jwks", "keys", keys));

    tok = mint(good, FERRY_ALG_ES256, NULL, NULL, c);
    EXPECT_REASON(o, tok, FERRY_REASON_OK);
    free(tok);
    tok = mint(enc, FERRY_ALG_ES256, NULL, NULL, c);
    EXPECT_REASON(o, tok, FERRY_REASON_UNKNOWN_KID); /* use:enc refused */
    free(tok);
    tok = mint(dup1, FERRY_ALG_ES256, "dup", NULL, c);
    EXPECT_REASON(o, tok, FERRY_REASON_UNKNOWN_KID); /* both duplicates refused */
    free(tok);
    tok = mint(dup2, FERRY_ALG_ES256, "dup", NULL, c);
    EXPECT_REASON(o, tok, FERRY_REASON_UNKNOWN_KID);
    free(tok);
    tok = mint(dup1, FERRY_ALG_ES256, "offcurve", NULL, c);
    EXPECT_REASON(o, tok, FERRY_REASON_UNKNOWN_KID);
    free(tok);

    /* More than FERRY_JWKS_MAX_KEYS keys: the whole set is refused. */
    many = json_array();
    for (int i = 0; i <= FERRY_JWKS_MAX_KEYS; i++) {
        j = pub_json(good);
        json_object_set_new(j, "kid", json_sprintf("k%d", i));
        json_array_append_new(many, j);
    }
    add_fails(o,
              json_pack("{s:s, s:[s], s:[s], s:{s:o}}", "issuer", ISS_B, "audiences", AUD,
                        "algorithms", "ES256", "jwks", "keys", many),
              -FERRY_ECONFIG, err, sizeof(err));
    /* Only bad keys: nothing usable, refused. */
    add_fails(o,
              json_pack("{s:s, s:[s], s:[s], s:{s:[{s:s, s:s, s:s}]}}", "issuer", ISS_B,
                        "audiences", AUD, "algorithms", "ES256", "jwks", "keys", "kty", "oct",
                        "kid", "o", "k", "c2VjcmV0"),
              -FERRY_ECONFIG, err, sizeof(err));
    cr_expect(strstr(err, "no usable keys"), "%s", err);

    free(n1024);
    EVP_PKEY_free(r1024);
    json_decref(c);
    ferry_jwk_unref(good);
    ferry_jwk_unref(dup1);
    ferry_jwk_unref(dup2);
    ferry_jwk_unref(enc);
    ferry_oidc_free(o);
}

/* Inline and file key sets survive a flush; flushing unknown names is harmless. */
Test(keys, flush_keeps_static_sets, .init = setup_ab, .fini = teardown_ab)
{
    json_t *c = claims_for(ISS_A);
    char *tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    char err[128];

    ferry_oidc_flush(g_o, ISS_A);
    ferry_oidc_flush(g_o, "https://nobody.example");
    ferry_oidc_flush(g_o, NULL);
    ferry_oidc_flush(NULL, NULL);
    EXPECT_REASON(g_o, tok, FERRY_REASON_OK);
    cr_expect_eq(ferry_oidc_prefetch(g_o, err, sizeof(err)), 0);
    free(tok);
    json_decref(c);
}

/* ---- D: discovery and JWKS fetching against the loopback IdP stand-in ------------------- */

#define DISCOVERY "/.well-known/openid-configuration"

static struct {
    tu_standin *s;
    char dir[64];
    char *jwks_path;
    char *base; /* the stand-in's issuer: https://127.0.0.1:PORT */
    char *ca;
    ferry_jwk *k1, *k2;
    ferry_oidc *o;
} F;

/* Publish keys as the stand-in's JWKS (atomic rename, the stand-in re-reads per request). */
static void publish(ferry_jwk *const *keys, size_t n)
{
    char tmp[128];
    json_t *set = jwks_of(keys, n);
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s/jwks.tmp", F.dir);
    f = fopen(tmp, "w");
    cr_assert_not_null(f);
    cr_assert_eq(json_dumpf(set, f, JSON_COMPACT), 0);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(rename(tmp, F.jwks_path), 0);
    json_decref(set);
}

static void start_standin(const char *tls)
{
    F.s = tu_standin_start(tls, "--jwks", F.jwks_path, NULL);
    cr_assert_not_null(F.s, "could not start tests/peers/idp_standin.py");
    F.base = tu_standin_url(F.s, "");
    cr_assert_not_null(F.base);
}

static void fetch_setup(void)
{
    cr_assert_eq(ferry_http_global_init(), 0);
    snprintf(F.dir, sizeof(F.dir), "/tmp/ferry-oidc-XXXXXX");
    cr_assert_not_null(mkdtemp(F.dir));
    F.jwks_path = malloc(strlen(F.dir) + 16);
    snprintf(F.jwks_path, strlen(F.dir) + 16, "%s/jwks.json", F.dir);
    F.k1 = gen(FERRY_ALG_ES256);
    F.k2 = gen(FERRY_ALG_ES256);
    publish(&F.k1, 1);
    F.ca = tu_cert_path("ca.pem");
    cr_assert_not_null(F.ca, "no test certificates");
    start_standin("good");
    F.o = new_store(0);
}

static void fetch_teardown(void)
{
    char p[128];

    tu_standin_stop(F.s);
    ferry_oidc_free(F.o);
    ferry_jwk_unref(F.k1);
    ferry_jwk_unref(F.k2);
    unlink(F.jwks_path);
    snprintf(p, sizeof(p), "%s/jwks.tmp", F.dir);
    unlink(p);
    rmdir(F.dir);
    free(F.jwks_path);
    free(F.base);
    free(F.ca);
    memset(&F, 0, sizeof(F));
}

/* A discovery issuer at the stand-in with short, test-friendly cache settings:
 * TTL 300 s without Cache-Control (clamped to [60, 600]), cooldown 30 s, stale window
 * 1000 s, 1 s connect / 2 s total timeouts. */
static json_t *remote_conf(const char *iss)
{
    return json_pack("{s:s, s:[s], s:[s], s:s, s:{s:i, s:i, s:i, s:i, s:i}, s:{s:i, s:i}}",
                     "issuer", iss, "audiences", AUD, "algorithms", "ES256", "ca_file", F.ca,
                     "jwks_cache", "min_ttl", 60, "max_ttl", 600, "default_ttl", 300,
                     "refresh_cooldown", 30, "stale_window", 1000, "fetch",
                     "connect_timeout_ms", 1000, "timeout_ms", 2000);
}

static char *remote_token(const ferry_jwk *k, const char *kid)
{
    json_t *c = claims_for(F.base);
    char *tok;

    /* Tokens live long enough for the clock moves of these tests. */
    json_object_set_new(c, "iat", json_integer(g_clock - 10));
    json_object_set_new(c, "exp", json_integer(g_clock + 3000));
    json_object_set_new(c, "nbf", json_integer(NOW - 10));
    tok = mint(k, FERRY_ALG_ES256, kid, NULL, c);
    json_decref(c);
    return tok;
}

/* Verify a fresh token for key k at the current store clock. */
static ferry_reason remote_verify(const ferry_jwk *k, const char *kid)
{
    char *tok = remote_token(k, kid);
    ferry_verify_options vo = {.now = g_clock};
    ferry_reason r = verify_opts(F.o, tok, &vo);

    free(tok);
    return r;
}

#define EXPECT_REMOTE(k, kid, want)                                                           \
    do {                                                                                      \
        ferry_reason got_ = remote_verify(k, kid);                                            \
        cr_expect_eq(got_, want, "got %s, want %s (%s)", ferry_reason_name(got_),             \
                     ferry_reason_name(want), g_last.detail);                                 \
    } while (0)

static long count(const char *path)
{
    long n = tu_standin_count(F.s, path);

    cr_assert(n >= 0, "stand-in stats unavailable");
    return n;
}

Test(fetch, discovery_then_jwks_cached, .init = fetch_setup, .fini = fetch_teardown)
{
    add_ok(F.o, remote_conf(F.base));
    cr_expect_eq(count(DISCOVERY), 0, "nothing fetched at add time");
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_expect_eq(count(DISCOVERY), 1);
    cr_expect_eq(count("/jwks"), 1);
    for (int i = 0; i < 5; i++)
        EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    g_clock += 299; /* TTL 300 s: still fresh */
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_expect_eq(count(DISCOVERY), 1);
    cr_expect_eq(count("/jwks"), 1);
    g_clock += 2; /* both documents are due */
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_expect_eq(count(DISCOVERY), 2);
    cr_expect_eq(count("/jwks"), 2);
}

/* A static jwks_uri: no discovery at all; and a trailing slash on the issuer is kept exact. */
Test(fetch, static_jwks_uri, .init = fetch_setup, .fini = fetch_teardown)
{
    json_t *conf = remote_conf(F.base);
    char *uri = tu_standin_url(F.s, "/jwks");
    char err[256];

    json_object_set_new(conf, "jwks_uri", json_string(uri));
    add_ok(F.o, conf);
    cr_expect_eq(ferry_oidc_prefetch(F.o, err, sizeof(err)), 0, "%s", err);
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_expect_eq(count(DISCOVERY), 0);
    cr_expect_eq(count("/jwks"), 1);
    free(uri);
}

/* C3: an unknown issuer (any byte variant of a configured one) causes no traffic at all. */
Test(fetch, c3_unknown_issuer_no_traffic, .init = fetch_setup, .fini = fetch_teardown)
{
    const char *port = strrchr(F.base, ':');
    char v[6][128];
    ferry_verify_options vo = {.now = g_clock};

    add_ok(F.o, remote_conf(F.base));
    snprintf(v[0], sizeof(v[0]), "%s/", F.base);
    snprintf(v[1], sizeof(v[1]), "HTTPS://127.0.0.1%s", port);
    snprintf(v[2], sizeof(v[2]), "https://localhost%s", port);
    snprintf(v[3], sizeof(v[3]), "https://127.0.0.1:%d", tu_standin_port(F.s) + 1);
    snprintf(v[4], sizeof(v[4]), "%s/.well-known/openid-configuration", F.base);
    snprintf(v[5], sizeof(v[5]), "http://127.0.0.1%s", port);
    for (int i = 0; i < 6; i++) {
        json_t *c = claims_for(v[i]);
        char *tok = mint(F.k1, FERRY_ALG_ES256, NULL, NULL, c);

        EXPECT_REASON_OPTS(F.o, tok, &vo, FERRY_REASON_UNKNOWN_ISSUER);
        free(tok);
        json_decref(c);
    }
    cr_expect_eq(tu_standin_connections(F.s), 0, "an unknown issuer caused a connection");
    cr_expect_eq(count(DISCOVERY), 0);
    /* The control: the configured issuer does fetch. */
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_expect_eq(count(DISCOVERY), 1);
}

static void expect_unavailable(const char *says)
{
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_ISSUER_UNAVAILABLE);
    cr_expect(strstr(g_last.detail, says), "detail \"%s\" lacks \"%s\"", g_last.detail, says);
}

/* D1: the discovery document names another issuer: metadata refused, keys never fetched,
 * every token of the issuer refused, prefetch reports it. */
Test(fetch, d1_discovery_issuer_mismatch, .init = fetch_setup, .fini = fetch_teardown)
{
    char doc[512], err[256];
    const char *port = strrchr(F.base, ':');

    add_ok(F.o, remote_conf(F.base));

    /* trailing slash */
    cr_assert_eq(tu_standin_fault(F.s, DISCOVERY, "wrong-issuer"), 0);
    expect_unavailable("discovery issuer mismatch");
    cr_expect_neq(ferry_oidc_prefetch(F.o, err, sizeof(err)), 0);
    cr_expect(strstr(err, "discovery issuer mismatch") && strstr(err, F.base), "%s", err);
    cr_expect_eq(count("/jwks"), 0);

    /* case */
    cr_assert_eq(tu_standin_fault(F.s, DISCOVERY, NULL), 0);
    snprintf(doc, sizeof(doc), "{\"discovery\":{\"issuer\":\"HTTPS://127.0.0.1%s\"}}", port);
    cr_assert_eq(tu_standin_control(F.s, doc), 0);
    g_clock += 31;
    expect_unavailable("discovery issuer mismatch");

    /* a multi-tenant template */
    snprintf(doc, sizeof(doc), "{\"discovery\":{\"issuer\":\"%s/{tenantid}/v2.0\"}}", F.base);
    cr_assert_eq(tu_standin_control(F.s, doc), 0);
    g_clock += 31;
    expect_unavailable("discovery issuer mismatch");
    /* missing */
    cr_assert_eq(tu_standin_control(F.s, "{\"discovery\":{\"issuer\":null}}"), 0);
    g_clock += 31;
    expect_unavailable("discovery issuer mismatch");
    cr_expect_eq(count("/jwks"), 0, "keys fetched despite refused metadata");
    cr_expect_eq(count(DISCOVERY), 5);

    /* Once the IdP is fixed, the next attempt (after the cooldown) succeeds. */
    snprintf(doc, sizeof(doc), "{\"discovery\":{\"issuer\":\"%s\"}}", F.base);
    cr_assert_eq(tu_standin_control(F.s, doc), 0);
    g_clock += 10;
    expect_unavailable("discovery issuer mismatch"); /* cooldown: no new attempt */
    cr_expect_eq(count(DISCOVERY), 5);
    g_clock += 21;
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);

    /* A mismatch on a later refresh drops the keys at once (fail closed). */
    cr_assert_eq(tu_standin_fault(F.s, DISCOVERY, "wrong-issuer"), 0);
    g_clock += 301;
    expect_unavailable("discovery issuer mismatch");
}

/* D1: an issuer configured with a template or a tenant path whose document names the
 * template. */
Test(fetch, d1_tenant_template, .init = fetch_setup, .fini = fetch_teardown)
{
    char iss[256], body[512], path[256], *jwks = tu_standin_url(F.s, "/jwks");
    ferry_verify_options vo = {.now = g_clock};
    json_t *c;
    char *tok;

    snprintf(iss, sizeof(iss), "%s/tenant-1/v2.0", F.base);
    snprintf(path, sizeof(path), "/tenant-1/v2.0" DISCOVERY);
    snprintf(body, sizeof(body), "body:{\"issuer\":\"%s/{tenantid}/v2.0\",\"jwks_uri\":\"%s\"}",
             F.base, jwks);
    cr_assert_eq(tu_standin_fault(F.s, path, body), 0);
    add_ok(F.o, remote_conf(iss));
    c = claims_for(iss);
    tok = mint(F.k1, FERRY_ALG_ES256, NULL, NULL, c);
    EXPECT_REASON_OPTS(F.o, tok, &vo, FERRY_REASON_ISSUER_UNAVAILABLE);
    cr_expect(strstr(g_last.detail, "discovery issuer mismatch"), "%s", g_last.detail);
    cr_expect_eq(count(path), 1);
    cr_expect_eq(count("/jwks"), 0);
    /* The same document with the tenant filled in is accepted. */
    snprintf(body, sizeof(body), "body:{\"issuer\":\"%s\",\"jwks_uri\":\"%s\"}", iss, jwks);
    cr_assert_eq(tu_standin_fault(F.s, path, body), 0);
    ferry_oidc_flush(F.o, iss);
    EXPECT_REASON_OPTS(F.o, tok, &vo, FERRY_REASON_OK);
    free(tok);
    free(jwks);
    json_decref(c);
}

/* D2: jwks_uri over http, redirects to http, too many redirects, bad certificates. */
Test(fetch, d2_insecure_jwks_refused, .init = fetch_setup, .fini = fetch_teardown)
{
    char doc[512], loc[256];
    const char *port = strrchr(F.base, ':');

    add_ok(F.o, remote_conf(F.base));
    snprintf(doc, sizeof(doc), "{\"discovery\":{\"jwks_uri\":\"http://127.0.0.1%s/jwks\"}}",
             port);
    cr_assert_eq(tu_standin_control(F.s, doc), 0);
    expect_unavailable("jwks_uri refused");
    cr_expect_eq(count("/jwks"), 0);

    snprintf(doc, sizeof(doc), "{\"discovery\":{\"jwks_uri\":\"%s/jwks\"}}", F.base);
    cr_assert_eq(tu_standin_control(F.s, doc), 0);
    snprintf(loc, sizeof(loc), "redirect:http://127.0.0.1%s/jwks", port);
    cr_assert_eq(tu_standin_fault(F.s, "/jwks", loc), 0);
    g_clock += 31;
    expect_unavailable("JWKS fetch failed");
    cr_expect_eq(count("/jwks"), 1);

    cr_assert_eq(tu_standin_fault(F.s, "/jwks", "chain:4:/jwks2"), 0);
    cr_assert_eq(tu_standin_fault(F.s, "/jwks2", "file:/dev/null"), 0);
    g_clock += 31;
    expect_unavailable("JWKS fetch failed");
    cr_expect_eq(count("/jwks2"), 0);
}

Test(fetch, d2_bad_certificates, .init = fetch_setup, .fini = fetch_teardown)
{
    static const char *const certs[] = {"wronghost", "expired", "untrusted"};

    for (size_t i = 0; i < 3; i++) {
        tu_standin_stop(F.s);
        free(F.base);
        ferry_oidc_free(F.o);
        F.o = new_store(0);
        start_standin(certs[i]);
        add_ok(F.o, remote_conf(F.base));
        expect_unavailable("discovery fetch failed");
        cr_expect_eq(count(DISCOVERY), 0, "%s: request got through", certs[i]);
    }
}

/* D3: every kind of broken JWKS answer keeps the last good set while it is within
 * expiry + stale_window; after that the issuer fails closed; a recovered IdP is used again. */
Test(fetch, d3_last_known_good, .init = fetch_setup, .fini = fetch_teardown, .timeout = 60)
{
    static const char *const faults[] = {
        "oversize",           /* 300 KiB chunked, no Content-Length */
        "status:500",         "invalid-json", "keys-not-array",
        "length:1000000",     /* claims 1 MB, sends one byte and stalls: timeout */
        "stall:5",            /* nothing at all: timeout */
        "slowloris:64",       /* 1 byte per second */
        "close",
    };
    char err[256];
    long n;

    add_ok(F.o, remote_conf(F.base));
    cr_assert_eq(ferry_oidc_prefetch(F.o, err, sizeof(err)), 0, "%s", err);
    n = count("/jwks");
    cr_assert_eq(n, 1);
    g_clock += 300; /* the set is now stale: every verify may try a refresh (cooldown 30 s) */
    for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
        cr_assert_eq(tu_standin_fault(F.s, "/jwks", faults[i]), 0);
        g_clock += 31;
        EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
        cr_expect_eq(count("/jwks"), ++n, "%s: no refresh attempted", faults[i]);
        EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK); /* within the cooldown: no new attempt */
        cr_expect_eq(count("/jwks"), n);
        /* An unknown kid does not get a fetch within the cooldown either. */
        EXPECT_REMOTE(F.k2, NULL, FERRY_REASON_UNKNOWN_KID);
        cr_expect_eq(count("/jwks"), n);
    }
    /* expiry + stale_window: fail closed */
    g_clock = NOW + 300 + 1000;
    expect_unavailable("no usable key set");
    /* the IdP recovers: used again once the cooldown allows an attempt */
    cr_assert_eq(tu_standin_fault(F.s, "/jwks", NULL), 0);
    g_clock += 31;
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
}

/* D3/B6: never any set (IdP down from the start): refused, one attempt per cooldown. */
Test(fetch, b6_unreachable_from_the_start, .init = fetch_setup, .fini = fetch_teardown)
{
    add_ok(F.o, remote_conf(F.base));
    cr_assert_eq(tu_standin_fault(F.s, "/jwks", "status:503"), 0);
    for (int i = 0; i < 20; i++)
        expect_unavailable("HTTP status 503");
    cr_expect_eq(count("/jwks"), 1);
    /* an empty key set is a set: tokens are refused by kid */
    cr_assert_eq(tu_standin_fault(F.s, "/jwks", "body:{\"keys\":[]}"), 0);
    g_clock += 30;
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_UNKNOWN_KID); /* fetched, then one kid refresh */
    EXPECT_REMOTE(F.k1, NOKID, FERRY_REASON_UNKNOWN_KID);
    EXPECT_REMOTE(F.k2, NULL, FERRY_REASON_UNKNOWN_KID);
    cr_expect_eq(count("/jwks"), 3);
}

/* Cache-Control max-age is honoured within [min_ttl, max_ttl]. */
Test(fetch, cache_control_ttl, .init = fetch_setup, .fini = fetch_teardown)
{
    static const struct {
        const char *cc;
        int ttl;
    } cases[] = {
        {"{\"Cache-Control\":\"public, max-age=100\"}", 100},
        {"{\"Cache-Control\":\"max-age=5\"}", 60},
        {"{\"Cache-Control\":\"max-age=99999\"}", 600},
        {"{\"Cache-Control\":\"no-store\"}", 60},
        {"{\"Cache-Control\":null}", 300},
    };
    json_t *conf = remote_conf(F.base);
    char *uri = tu_standin_url(F.s, "/jwks"), doc[256];

    json_object_set_new(conf, "jwks_uri", json_string(uri));
    add_ok(F.o, conf);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long n;

        snprintf(doc, sizeof(doc), "{\"headers\":{\"/jwks\":%s}}", cases[i].cc);
        cr_assert_eq(tu_standin_control(F.s, doc), 0);
        ferry_oidc_flush(F.o, NULL);
        EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
        n = count("/jwks");
        g_clock += cases[i].ttl - 1;
        EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
        cr_expect_eq(count("/jwks"), n, "%s: refetched before %d s", cases[i].cc,
                     cases[i].ttl);
        g_clock += 1;
        EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
        cr_expect_eq(count("/jwks"), n + 1, "%s: not refetched at %d s", cases[i].cc,
                     cases[i].ttl);
    }
    free(uri);
}

/* D4: 1,000 tokens with random kids within one cooldown window: at most one JWKS fetch, and
 * a valid token keeps verifying throughout (from several threads at once). */
struct d4_arg {
    int id;
    int ok, unknown, other;
};

static void *d4_worker(void *p)
{
    struct d4_arg *a = p;
    ferry_verify_options vo = {.now = g_clock};

    for (int i = 0; i < 250; i++) {
        char kid[40];
        unsigned char rnd[12];
        char *tok;
        ferry_verify_result res;
        int r;

        for (size_t j = 0; j < sizeof(rnd); j++)
            rnd[j] = (unsigned char)(rand() & 0xff);
        ferry_b64url_encode(rnd, sizeof(rnd), kid);
        tok = remote_token(F.k1, i % 25 == 0 ? NULL : kid);
        r = ferry_oidc_verify(F.o, tok, strlen(tok), &vo, NULL, &res);
        if (r == 0)
            a->ok++;
        else if (res.reason == FERRY_REASON_UNKNOWN_KID)
            a->unknown++;
        else
            a->other++;
        free(tok);
    }
    return NULL;
}

Test(fetch, d4_random_kids_one_fetch_per_cooldown, .init = fetch_setup,
     .fini = fetch_teardown, .timeout = 60)
{
    struct d4_arg args[4];
    pthread_t th[4];
    char err[256];
    int ok = 0, unknown = 0, other = 0;

    add_ok(F.o, remote_conf(F.base));
    cr_assert_eq(ferry_oidc_prefetch(F.o, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(count("/jwks"), 1);
    srand(42);
    for (int round = 0; round < 2; round++) {
        ok = unknown = other = 0;
        for (int i = 0; i < 4; i++) {
            args[i] = (struct d4_arg){.id = i};
            cr_assert_eq(pthread_create(&th[i], NULL, d4_worker, &args[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            ok += args[i].ok;
            unknown += args[i].unknown;
            other += args[i].other;
        }
        cr_expect_eq(ok, 40, "valid tokens refused during the flood");
        cr_expect_eq(unknown, 960);
        cr_expect_eq(other, 0);
        cr_expect_eq(count("/jwks"), 2 + round, "round %d: %ld JWKS fetches for 1000 unknown "
                     "kids", round, count("/jwks") - 1 - round);
        cr_expect_eq(count(DISCOVERY), 1);
        g_clock += 29; /* within the cooldown of the refresh: no fetch at all */
        EXPECT_REMOTE(F.k1, "random-kid", FERRY_REASON_UNKNOWN_KID);
        cr_expect_eq(count("/jwks"), 2 + round);
        g_clock += 1; /* the next window allows the next refresh */
    }
}

/* D5: rotation. A new kid is accepted after one refresh, at once; further unknown kids wait
 * for the cooldown; a removed kid is refused after the TTL, or at once after a flush. */
Test(fetch, d5_rotation, .init = fetch_setup, .fini = fetch_teardown)
{
    ferry_jwk *k3 = gen(FERRY_ALG_ES256), *keys[3] = {F.k1, F.k2, k3};
    long n;

    add_ok(F.o, remote_conf(F.base));
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    n = count("/jwks");
    cr_expect_eq(n, 1);
    publish(keys, 2);
    g_clock += 1;
    EXPECT_REMOTE(F.k2, NULL, FERRY_REASON_OK); /* one refresh */
    cr_expect_eq(count("/jwks"), n + 1);
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    /* the next new kid within the cooldown of that refresh: refused, no fetch */
    publish(keys, 3);
    g_clock += 29;
    EXPECT_REMOTE(k3, NULL, FERRY_REASON_UNKNOWN_KID);
    cr_expect_eq(count("/jwks"), n + 1);
    g_clock += 1;
    EXPECT_REMOTE(k3, NULL, FERRY_REASON_OK);
    cr_expect_eq(count("/jwks"), n + 2);

    /* kid1 removed: still served until the TTL of the set (300 s) passes */
    publish(keys + 1, 2);
    g_clock += 299;
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_expect_eq(count("/jwks"), n + 2);
    g_clock += 1;
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_UNKNOWN_KID);
    cr_expect_eq(count("/jwks"), n + 3);
    EXPECT_REMOTE(F.k2, NULL, FERRY_REASON_OK);

    /* back to kid1 only, then an admin flush: kid2 refused immediately */
    publish(keys, 1);
    g_clock += 1;
    EXPECT_REMOTE(F.k2, NULL, FERRY_REASON_OK);
    ferry_oidc_flush(F.o, F.base);
    EXPECT_REMOTE(F.k2, NULL, FERRY_REASON_UNKNOWN_KID);
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_expect_eq(count("/jwks"), n + 4);
    /* discovery: the first, its TTL (300 s) passing, and the flush */
    cr_expect_eq(count(DISCOVERY), 3, "flush also drops the discovery result");
    ferry_jwk_unref(k3);
}

/* A failing discovery refresh keeps the jwks_uri it named before. */
Test(fetch, discovery_outage_keeps_jwks_uri, .init = fetch_setup, .fini = fetch_teardown)
{
    add_ok(F.o, remote_conf(F.base));
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_assert_eq(tu_standin_fault(F.s, DISCOVERY, "status:500"), 0);
    publish(&F.k2, 1);
    g_clock += 301;
    EXPECT_REMOTE(F.k2, NULL, FERRY_REASON_OK);
    cr_expect_eq(count(DISCOVERY), 2);
    cr_expect_eq(count("/jwks"), 2);
}

/* Plain http only with allow_http_loopback (tests). */
Test(fetch, http_loopback_only_when_allowed, .init = fetch_setup, .fini = fetch_teardown)
{
    json_t *conf;
    char err[256];

    tu_standin_stop(F.s);
    free(F.base);
    start_standin(NULL);
    conf = remote_conf(F.base);
    add_fails(F.o, conf, -FERRY_ECONFIG, err, sizeof(err));
    conf = remote_conf(F.base);
    json_object_set_new(conf, "allow_http_loopback", json_true());
    add_ok(F.o, conf);
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
}

/* D7: proxy variables in the environment are not used; only a configured proxy is. */
Test(fetch, d7_environment_proxy_ignored, .init = fetch_setup, .fini = fetch_teardown)
{
    tu_standin *proxy = tu_standin_start(NULL, "--proxy", NULL);
    char *purl;
    json_t *conf;

    cr_assert_not_null(proxy);
    purl = tu_standin_url(proxy, "");
    setenv("https_proxy", purl, 1);
    setenv("HTTPS_PROXY", purl, 1);
    setenv("ALL_PROXY", purl, 1);
    add_ok(F.o, remote_conf(F.base));
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_expect_eq(tu_standin_connections(proxy), 0, "environment proxy used");

    /* A configured proxy is used. */
    ferry_oidc_free(F.o);
    F.o = new_store(0);
    conf = remote_conf(F.base);
    json_object_set_new(conf, "proxy", json_string(purl));
    add_ok(F.o, conf);
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_expect(tu_standin_count(proxy, "CONNECT") >= 1, "configured proxy not used");
    free(purl);
    tu_standin_stop(proxy);
}

/* fetch.max_bytes caps the answer (here below the size of the JWKS). */
Test(fetch, max_bytes_caps_the_answer, .init = fetch_setup, .fini = fetch_teardown)
{
    json_t *conf = remote_conf(F.base);

    json_object_set_new(json_object_get(conf, "fetch"), "max_bytes", json_integer(64));
    json_object_set_new(conf, "jwks_uri", json_sprintf("%s/jwks", F.base));
    add_ok(F.o, conf);
    expect_unavailable("JWKS fetch failed");
    cr_expect_eq(count("/jwks"), 1);
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *slow_refresh_worker(void *p)
{
    ferry_reason *r = p;

    *r = remote_verify(F.k1, NULL);
    return NULL;
}

/* A slow refresh holds up only the thread doing it and tokens that need its answer:
 * verifications whose kid is in the current set go on meanwhile; a token with a kid the set
 * lacks waits for the refresh in flight (during a rotation its key is in that answer) and
 * causes no fetch of its own. */
Test(fetch, slow_refresh_does_not_block_verification, .init = fetch_setup,
     .fini = fetch_teardown, .timeout = 30)
{
    ferry_reason slow = FERRY_REASON_INTERNAL;
    pthread_t th;
    char err[256];
    int64_t t0, t1;

    add_ok(F.o, remote_conf(F.base));
    cr_assert_eq(ferry_oidc_prefetch(F.o, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(tu_standin_fault(F.s, "/jwks", "delay:1.5"), 0);
    g_clock += 301; /* stale: the next token refreshes */
    t0 = mono_ms();
    cr_assert_eq(pthread_create(&th, NULL, slow_refresh_worker, &slow), 0);
    while (count("/jwks") < 2 && mono_ms() - t0 < 5000)
        usleep(10000);
    cr_assert_eq(count("/jwks"), 2, "the refresh did not start");
    t1 = mono_ms();
    for (int i = 0; i < 20; i++)
        EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_expect(mono_ms() - t1 < 1000, "verifications waited %" PRId64 " ms for the refresh",
              mono_ms() - t1);
    EXPECT_REMOTE(F.k2, NULL, FERRY_REASON_UNKNOWN_KID);
    cr_expect(mono_ms() - t0 >= 1400, "the unknown kid did not wait for the refresh");
    cr_expect_eq(count("/jwks"), 2, "the unknown kid caused a fetch of its own");
    pthread_join(th, NULL);
    cr_expect(mono_ms() - t0 >= 1400, "the refresh was not slow");
    cr_expect_eq(slow, FERRY_REASON_OK);
    cr_expect_eq(count("/jwks"), 2);
}

/* A clock per thread: a thread that read the clock a moment before another did. 0: g_clock. */
static __thread int64_t tl_now;

static int64_t tl_clock(void *userdata)
{
    (void)userdata;
    return tl_now ? tl_now : g_clock;
}

struct kid_arg {
    int64_t now;
    const char *kid;
    ferry_reason r;
};

static void *kid_worker(void *p)
{
    struct kid_arg *a = p;

    tl_now = a->now;
    a->r = remote_verify(F.k1, a->kid);
    return NULL;
}

/* A token with a kid the set lacks waits for the refresh in flight; when that refresh fails,
 * the waiter must not start a fetch of its own because its clock reading (taken before it
 * blocked) is older than the attempt it waited for: a reading before the last attempt is not
 * "a clock set back", and the cooldown still holds. Otherwise every such waiter repeats the
 * fetch, each one holding all the others for up to the fetch timeout. */
Test(fetch, d4_waiter_does_not_repeat_the_failed_refresh, .init = fetch_setup,
     .fini = fetch_teardown, .timeout = 30)
{
    ferry_oidc_options oo = {.clock = tl_clock};
    struct kid_arg first = {.now = NOW + 100, .kid = "rotated-1", .r = FERRY_REASON_INTERNAL};
    pthread_t th;
    char err[256];
    int64_t t0;

    ferry_oidc_free(F.o);
    F.o = NULL;
    cr_assert_eq(ferry_oidc_new(&oo, &F.o), 0);
    add_ok(F.o, remote_conf(F.base));
    cr_assert_eq(ferry_oidc_prefetch(F.o, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(count("/jwks"), 1);
    cr_assert_eq(tu_standin_fault(F.s, "/jwks", "delay:1.5:status:500"), 0);
    g_clock = NOW + 100;
    t0 = mono_ms();
    cr_assert_eq(pthread_create(&th, NULL, kid_worker, &first), 0);
    while (count("/jwks") < 2 && mono_ms() - t0 < 5000)
        usleep(10000);
    cr_assert_eq(count("/jwks"), 2, "the kid refresh did not start");
    /* This thread read the clock just before the other thread did, then reached the fetch
     * lock after the other's attempt had begun. */
    tl_now = NOW + 99;
    EXPECT_REMOTE(F.k1, "rotated-2", FERRY_REASON_UNKNOWN_KID);
    tl_now = 0;
    pthread_join(th, NULL);
    cr_expect_eq(first.r, FERRY_REASON_UNKNOWN_KID);
    cr_expect_eq(count("/jwks"), 2, "%ld JWKS fetches within one cooldown",
                 count("/jwks") - 1);
}

/* Cold start (no set yet): a token arriving while another thread's first fetch is on the wire
 * waits for that fetch and uses its set, instead of being refused as issuer_unavailable
 * because the cooldown counts from the attempt in progress. One fetch in all. */
Test(fetch, cold_start_waits_for_the_fetch_in_flight, .init = fetch_setup,
     .fini = fetch_teardown, .timeout = 30)
{
    ferry_reason first = FERRY_REASON_INTERNAL;
    pthread_t th;
    int64_t t0;

    add_ok(F.o, remote_conf(F.base));
    cr_assert_eq(tu_standin_fault(F.s, "/jwks", "delay:1"), 0);
    t0 = mono_ms();
    cr_assert_eq(pthread_create(&th, NULL, slow_refresh_worker, &first), 0);
    while (count("/jwks") < 1 && mono_ms() - t0 < 5000)
        usleep(10000);
    cr_assert_eq(count("/jwks"), 1, "the first fetch did not start");
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    pthread_join(th, NULL);
    cr_expect_eq(first, FERRY_REASON_OK);
    cr_expect_eq(count("/jwks"), 1);
    cr_expect_eq(count(DISCOVERY), 1);
}

/* An admin flush while a refresh is on the wire: the answer of that fetch was asked for before
 * the flush and must not be installed after it (D5: a removed kid is refused immediately
 * after a flush). Here the in-flight answer still carries kid1, which the IdP has removed. */
Test(fetch, d5_flush_discards_the_fetch_in_flight, .init = fetch_setup,
     .fini = fetch_teardown, .timeout = 30)
{
    ferry_reason slow = FERRY_REASON_INTERNAL;
    char old[128], mode[192], err[256];
    pthread_t th;
    int64_t t0;

    add_ok(F.o, remote_conf(F.base));
    cr_assert_eq(ferry_oidc_prefetch(F.o, err, sizeof(err)), 0, "%s", err);
    /* keep a copy of the set with kid1, then remove kid1 at the IdP */
    snprintf(old, sizeof(old), "%s/old.json", F.dir);
    cr_assert_eq(link(F.jwks_path, old), 0);
    publish(&F.k2, 1);
    snprintf(mode, sizeof(mode), "delay:1:file:%s", old);
    cr_assert_eq(tu_standin_fault(F.s, "/jwks", mode), 0);
    g_clock += 301; /* stale: the next token refreshes */
    t0 = mono_ms();
    cr_assert_eq(pthread_create(&th, NULL, slow_refresh_worker, &slow), 0);
    while (count("/jwks") < 2 && mono_ms() - t0 < 5000)
        usleep(10000);
    cr_assert_eq(count("/jwks"), 2, "the refresh did not start");
    ferry_oidc_flush(F.o, F.base);
    cr_assert_eq(tu_standin_fault(F.s, "/jwks", NULL), 0);
    pthread_join(th, NULL);
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_UNKNOWN_KID);
    EXPECT_REMOTE(F.k2, NULL, FERRY_REASON_OK);
    unlink(old);
}

/* A7: keys named inside a token are never fetched: jku / x5u at the stand-in get no
 * connection, even for a configured remote issuer. */
Test(fetch, a7_token_named_keys_never_fetched, .init = fetch_setup, .fini = fetch_teardown)
{
    static const char *const members[] = {"jku", "x5u"};
    json_t *c;
    char hdr[512], *ps, *tok, *url = tu_standin_url(F.s, "/jwks");

    add_ok(F.o, remote_conf(F.base));
    c = claims_for(F.base);
    ps = json_dumps(c, JSON_COMPACT);
    for (size_t i = 0; i < 2; i++) {
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"kid\":\"%s\",\"%s\":\"%s\"}",
                 ferry_jwk_kid(F.k1), members[i], url);
        tok = assemble(F.k1, FERRY_ALG_ES256, hdr, ps, strlen(ps), NULL, 0);
        EXPECT_REASON(F.o, tok, FERRY_REASON_BAD_HEADER);
        free(tok);
    }
    cr_expect_eq(tu_standin_connections(F.s), 0, "a token-named URL was contacted");
    free(ps);
    free(url);
    json_decref(c);
}

/* ---- C7: one-time use under concurrency ------------------------------------------------------ */

struct race {
    ferry_oidc *o;
    const char *tok;
    pthread_barrier_t *go;
    ferry_reason got;
    int r;
};

static void *race_worker(void *p)
{
    struct race *w = p;
    ferry_verify_options once = {.consume_jti = true};
    ferry_verify_result res;

    (void)pthread_barrier_wait(w->go);
    w->r = ferry_oidc_verify(w->o, w->tok, strlen(w->tok), &once, NULL, &res);
    w->got = res.reason;
    return NULL;
}

/* Many threads present one token for one-time use at the same moment: exactly one wins, every
 * other one is told REPLAYED (the look-up and the insertion are one step under the lock). */
Test(replay, c7_concurrent_use_accepted_once, .init = setup_ab, .fini = teardown_ab)
{
    enum { THREADS = 8, ROUNDS = 20 };
    json_t *c = claims_for(ISS_A);

    for (int round = 0; round < ROUNDS; round++) {
        pthread_t th[THREADS];
        struct race w[THREADS];
        pthread_barrier_t go;
        char jti[32], *tok;
        int ok = 0;

        snprintf(jti, sizeof(jti), "race-%d", round);
        json_object_set_new(c, "jti", json_string(jti));
        tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
        cr_assert_eq(pthread_barrier_init(&go, NULL, THREADS), 0);
        for (int i = 0; i < THREADS; i++) {
            w[i] = (struct race){.o = g_o, .tok = tok, .go = &go};
            cr_assert_eq(pthread_create(&th[i], NULL, race_worker, &w[i]), 0);
        }
        for (int i = 0; i < THREADS; i++) {
            pthread_join(th[i], NULL);
            if (w[i].r == 0) {
                ok++;
                cr_expect_eq(w[i].got, FERRY_REASON_OK);
            } else {
                cr_expect_eq(w[i].r, -FERRY_EREFUSED);
                cr_expect_eq(w[i].got, FERRY_REASON_REPLAYED, "got %s",
                             ferry_reason_name(w[i].got));
            }
        }
        cr_assert_eq(ok, 1, "round %d: %d threads accepted one one-time token", round, ok);
        (void)pthread_barrier_destroy(&go);
        free(tok);
    }
    json_decref(c);
}

/* ---- allocation-failure injection (STYLE.md rule 24, SECURITY-TESTS G5) ----------------------
 *
 * As in test_jose.c, malloc, calloc and realloc are replaced in this program (glibc supports
 * replacing them; under ASan the replacements forward to ASan's interceptors), and so are
 * reallocarray, strdup and strndup, which ASan would otherwise serve without going through
 * malloc. jansson allocates through malloc and OpenSSL through CRYPTO_malloc -> malloc, so every
 * allocation of a verification is seen. The replacements must be visible: the build compiles
 * with -fvisibility=hidden.
 *
 * While armed, the Nth counted allocation of the arming thread fails (other threads, such as
 * Criterion's, are never failed, so that runs are reproducible). Each operation is run with
 * N = 0, 1, 2, ... until a run completes without reaching the failure. Checked for every N: no
 * crash and no sanitizer report (leaks included, see tests/criterion-tap.sh); an acceptance only
 * with a complete, correct identity; otherwise the reason INTERNAL with a negative return other
 * than -FERRY_EREFUSED, never a reason that blames the token or the configuration; a one-time
 * token's jti is consumed exactly when the token is accepted; and afterwards the store still
 * accepts the same tokens. */
#include "allocfail.h"
#ifdef HAVE_ALLOC_INJECTION

static _Thread_local bool inj_armed;
static _Thread_local long inj_at;        /* index of the counted allocation that fails */
static _Thread_local long inj_count;     /* counted allocations since arming */
static _Thread_local size_t inj_calloc;  /* 0: count every allocation; else only calloc of
                                            exactly this many bytes */
static _Thread_local bool inj_hit;

static bool inject_now(bool is_calloc, size_t size)
{
    if (!inj_armed)
        return false;
    if (inj_calloc && (!is_calloc || size != inj_calloc))
        return false;
    if (inj_count++ != inj_at)
        return false;
    inj_hit = true;
    return true;
}

__attribute__((visibility("default"))) void *malloc(size_t n)
{
    return inject_now(false, n) ? NULL : REAL_MALLOC(n);
}

__attribute__((visibility("default"))) void *calloc(size_t n, size_t m)
{
    size_t total;

    if (__builtin_mul_overflow(n, m, &total))
        return REAL_CALLOC(n, m); /* fails on its own */
    return inject_now(true, total) ? NULL : REAL_CALLOC(n, m);
}

__attribute__((visibility("default"))) void *realloc(void *p, size_t n)
{
    return inject_now(false, n) ? NULL : REAL_REALLOC(p, n);
}

__attribute__((visibility("default"))) void *reallocarray(void *p, size_t n, size_t m)
{
    size_t total;

    if (__builtin_mul_overflow(n, m, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, total);
}

static char *copy_string(const char *s, size_t len)
{
    char *p = malloc(len + 1);

    if (!p)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

__attribute__((visibility("default"))) char *strndup(const char *s, size_t n)
{
    return copy_string(s, strnlen(s, n));
}

__attribute__((visibility("default"))) char *strdup(const char *s)
{
    return copy_string(s, strlen(s));
}

/* Arm: the counted allocation number `at` fails (only callocs of calloc_size bytes are counted
 * when calloc_size is not 0). */
static void inject_arm(long at, size_t calloc_size)
{
    inj_hit = false;
    inj_count = 0;
    inj_at = at;
    inj_calloc = calloc_size;
    inj_armed = true;
}

/* Disarm; whether an allocation was failed. */
static bool inject_disarm(void)
{
    inj_armed = false;
    return inj_hit;
}

/* Counted allocations since arming (with `at` out of reach, a dry run counts them). */
static long inject_counted(void)
{
    return inj_count;
}

#define OOM_MAX_RUNS 2000

enum oom_kind {
    OOM_VERIFY,      /* a valid token, reusable */
    OOM_VERIFY_ONCE, /* a valid token with consume_jti (fresh jti per run) */
    OOM_VERIFY_BAD,  /* a token whose signature does not verify */
    OOM_ADD_ISSUER,  /* ferry_oidc_add_issuer of an inline-JWKS configuration */
};

struct oom_ctx {
    enum oom_kind kind;
    ferry_oidc *o;          /* the store that every verification run uses */
    ferry_oidc *fresh;      /* OOM_ADD_ISSUER: a new empty store per run */
    json_t *conf;           /* inline-JWKS issuer configuration */
    const ferry_jwk *key;   /* signs tok */
    json_t *claims;         /* claims of tok */
    char *tok;
    char *good[2];          /* valid RS256 and ES256 tokens of the issuer (reusable) */
    long serial;            /* makes the jti of OOM_VERIFY_ONCE unique */
    long n;                 /* the allocation that fails in this run */
    /* results of the run */
    ferry_identity *id;
    ferry_verify_result res;
    char err[256];
};

#define OOM_ISS "https://oom.example"

/* Outcome of a verification (without injection for the retries): reason, with the usual
 * invariants of an accepted or a refused token. */
static ferry_reason oom_verify_plain(ferry_oidc *o, const char *tok, bool once)
{
    ferry_verify_options vo = {.consume_jti = once};

    return verify_opts(o, tok, &vo);
}

/* The identity of an accepted run is complete and matches the token. */
static void oom_check_identity(const struct oom_ctx *c)
{
    const ferry_identity *id = c->id;
    json_t *jti = json_object_get(c->claims, "jti");

    cr_assert_not_null(id, "accepted without an identity");
    cr_assert_eq(c->res.reason, FERRY_REASON_OK);
    cr_assert_str_eq(c->res.detail, "");
    cr_assert(id->issuer && strcmp(id->issuer, OOM_ISS) == 0);
    cr_assert(id->subject && strcmp(id->subject, "user-1") == 0);
    cr_assert(json_is_array(id->audience) && json_array_size(id->audience) == 1);
    cr_assert_str_eq(json_string_value(json_array_get(id->audience, 0)), AUD);
    cr_assert_eq(id->alg, ferry_jwk_alg(c->key));
    cr_assert(id->kid && strcmp(id->kid, ferry_jwk_kid(c->key)) == 0);
    cr_assert(id->jti && strcmp(id->jti, json_string_value(jti)) == 0);
    cr_assert_eq(id->exp, NOW + 300);
    cr_assert_eq(id->iat, NOW - 10);
    cr_assert(json_equal(id->claims, c->claims), "identity claims differ from the token's");
}

/* Allocation failures inside OpenSSL's signature check used to be reported as bad_signature.
 * jose.c now reads OpenSSL's error queue (ossl_failure), so this stays 0: strict. */
#define JOSE_OOM_BLAMES_SIGNATURE 0
static long oom_blamed_signature;

/* Known defect: with some allocations failing during ferry_oidc_add_issuer (inline key set),
 * OpenSSL refuses a key during import or its public-key check with an error reason other than
 * ERR_R_MALLOC_FAILURE, so jose.c (ossl_key_failure) takes it for a weak key and
 * ferry_jwks_from_json skips it (-FERRY_EWEAKKEY, seen 5 times in this loop). The add then
 * succeeds with that key missing and its tokens are refused as unknown_kid: closed, but wrong.
 * Counted here instead of failing, and the count must not be 0: once it is fixed this test
 * says so, and setting this to 0 makes the check strict. */
#define JOSE_OOM_DROPS_KEY 1
static long oom_dropped_key;

/* A failed run: our failure, reported as such, with nothing handed out. */
static void oom_check_internal(const struct oom_ctx *c, int r, bool hit)
{
    cr_assert(hit, "%s without an injected failure: %d %s", ferry_reason_name(c->res.reason),
              r, c->res.detail);
    cr_assert_lt(r, 0);
    cr_assert_null(c->id, "identity handed out on failure");
    if (JOSE_OOM_BLAMES_SIGNATURE && r == -FERRY_EREFUSED &&
        c->res.reason == FERRY_REASON_BAD_SIGNATURE) {
        oom_blamed_signature++;
        return;
    }
    cr_assert_neq(r, -FERRY_EREFUSED,
                  "%s, kind %d: allocation %ld failed and the token was blamed: %s (%s)",
                  ferry_alg_name(ferry_jwk_alg(c->key)), c->kind, c->n,
                  ferry_reason_name(c->res.reason), c->res.detail);
    cr_assert_eq(c->res.reason, FERRY_REASON_INTERNAL, "allocation %ld: got %s (%s)", c->n,
                 ferry_reason_name(c->res.reason), c->res.detail);
    cr_assert(memchr(c->res.detail, '\0', sizeof(c->res.detail)) && c->res.detail[0]);
}

static void oom_prepare(struct oom_ctx *c)
{
    char jti[32];

    c->id = NULL;
    memset(&c->res, 0x5a, sizeof(c->res));
    c->err[0] = '\0';
    switch (c->kind) {
    case OOM_VERIFY_ONCE:
        snprintf(jti, sizeof(jti), "oom-%08ld", c->serial++);
        json_object_set_new(c->claims, "jti", json_string(jti));
        free(c->tok);
        c->tok = mint(c->key, ferry_jwk_alg(c->key), NULL, NULL, c->claims);
        break;
    case OOM_ADD_ISSUER:
        ferry_oidc_free(c->fresh);
        c->fresh = new_store(0);
        break;
    default:
        break;
    }
}

/* The operation itself: nothing but library calls while the injection is armed. */
static int oom_run(struct oom_ctx *c)
{
    ferry_verify_options once = {.consume_jti = true};

    switch (c->kind) {
    case OOM_ADD_ISSUER:
        return ferry_oidc_add_issuer(c->fresh, c->conf, c->err, sizeof(c->err));
    case OOM_VERIFY_ONCE:
        return ferry_oidc_verify(c->o, c->tok, strlen(c->tok), &once, &c->id, &c->res);
    default:
        return ferry_oidc_verify(c->o, c->tok, strlen(c->tok), NULL, &c->id, &c->res);
    }
}

static void oom_check(struct oom_ctx *c, int r, bool hit)
{
    switch (c->kind) {
    case OOM_VERIFY:
        if (r == 0)
            oom_check_identity(c);
        else
            oom_check_internal(c, r, hit);
        break;
    case OOM_VERIFY_BAD:
        cr_assert_neq(r, 0, "a bad signature was accepted");
        cr_assert_null(c->id);
        if (r == -FERRY_EREFUSED)
            cr_assert_eq(c->res.reason, FERRY_REASON_BAD_SIGNATURE, "got %s (%s)",
                         ferry_reason_name(c->res.reason), c->res.detail);
        else
            oom_check_internal(c, r, hit);
        break;
    case OOM_VERIFY_ONCE:
        /* The jti is used up exactly when the token was accepted. */
        if (r == 0) {
            oom_check_identity(c);
        } else {
            oom_check_internal(c, r, hit);
            cr_assert_eq(oom_verify_plain(c->o, c->tok, true), FERRY_REASON_OK,
                         "the retry after an internal failure was refused: %s (%s)",
                         ferry_reason_name(g_last.reason), g_last.detail);
        }
        cr_assert_eq(oom_verify_plain(c->o, c->tok, true), FERRY_REASON_REPLAYED, "got %s",
                     ferry_reason_name(g_last.reason));
        break;
    case OOM_ADD_ISSUER:
        if (r == 0) {
            cr_assert_eq(ferry_oidc_issuer_count(c->fresh), 1);
        } else {
            cr_assert(hit, "add_issuer failed without an injected failure: %d %s", r, c->err);
            /* -FERRY_ECRYPTO: OpenSSL failed (to allocate) while importing a key. Never
             * -FERRY_ECONFIG, which would blame the configuration. */
            cr_assert(r == -ENOMEM || r == -FERRY_ECRYPTO,
                      "allocation %ld failed and add_issuer returned %d (%s)", c->n, r, c->err);
            cr_assert(c->err[0] && !strchr(c->err, '\n'), "bad message: \"%s\"", c->err);
            cr_assert_eq(ferry_oidc_issuer_count(c->fresh), 0, "a failed add left an issuer");
            /* Nothing half-done stays behind: the same configuration adds now. */
            cr_assert_eq(ferry_oidc_add_issuer(c->fresh, c->conf, c->err, sizeof(c->err)), 0,
                         "%s", c->err);
        }
        /* No key was dropped on the way: both tokens verify. */
        for (int i = 0; i < 2; i++) {
            ferry_reason got = oom_verify_plain(c->fresh, c->good[i], false);

            if (JOSE_OOM_DROPS_KEY && hit && r == 0 && got == FERRY_REASON_UNKNOWN_KID) {
                oom_dropped_key++;
                continue;
            }
            cr_assert_eq(got, FERRY_REASON_OK,
                         "token %d after add_issuer with allocation %ld failing (r %d): %s (%s)",
                         i, c->n, r, ferry_reason_name(got), g_last.detail);
        }
        break;
    }
    ferry_identity_free(c->id);
    c->id = NULL;
}

/* Run the operation with its Nth allocation failing, N = 0, 1, ..., until a run completes
 * without reaching the failure; returns that N (the number of allocations of the operation). */
static long torture(struct oom_ctx *c)
{
    for (long n = 0; n < OOM_MAX_RUNS; n++) {
        bool hit;
        int r;

        oom_prepare(c);
        c->n = n;
        inject_arm(n, 0);
        r = oom_run(c);
        hit = inject_disarm();
        oom_check(c, r, hit);
        if (!hit)
            return n;
    }
    cr_assert_fail("operation %d still allocating after %d injected failures", c->kind,
                   OOM_MAX_RUNS);
    return -1;
}

/* A valid token of key over claims for the OOM issuer (claims borrowed). */
static char *oom_token(const ferry_jwk *key, json_t *claims)
{
    return mint(key, ferry_jwk_alg(key), NULL, NULL, claims);
}

/* One issuer with an RS256 and an ES256 key in its inline JWKS. */
static json_t *oom_conf(ferry_jwk *rs, ferry_jwk *es)
{
    ferry_jwk *ks[2] = {rs, es};

    return json_pack("{s:s, s:[s], s:[s,s], s:o}", "issuer", OOM_ISS, "audiences", AUD,
                     "algorithms", "RS256", "ES256", "jwks", jwks_of(ks, 2));
}

#endif /* __GLIBC__ */

/* G5: every allocation of verify (RS256, ES256, one-time use, bad signature) and of add_issuer
 * fails once, in turn. */
Test(alloc, failure_injection, .timeout = 120)
{
#ifndef HAVE_ALLOC_INJECTION
    cr_skip_test("allocation injection needs glibc");
#else
    ferry_jwk *rs = gen(FERRY_ALG_RS256), *es = gen(FERRY_ALG_ES256), *keys[2] = {rs, es};
    struct oom_ctx c = {.conf = oom_conf(rs, es), .claims = claims_for(OOM_ISS)};
    long n;

    c.o = new_store(0);
    add_ok(c.o, json_incref(c.conf));
    for (int i = 0; i < 2; i++)
        c.good[i] = oom_token(keys[i], c.claims);

    for (int i = 0; i < 2; i++) {
        /* Warm up OpenSSL's lazy initialisation and the key's caches, so that failures hit
         * the per-call path. */
        c.key = keys[i];
        c.tok = strdup(c.good[i]);
        c.kind = OOM_VERIFY;
        cr_assert_eq(oom_verify_plain(c.o, c.tok, false), FERRY_REASON_OK);
        n = torture(&c);
        cr_assert_gt(n, 5, "%s verify made only %ld allocations",
                     ferry_alg_name(ferry_jwk_alg(c.key)), n);

        c.kind = OOM_VERIFY_BAD;
        c.tok[strlen(c.tok) - 2] = c.tok[strlen(c.tok) - 2] == 'A' ? 'B' : 'A';
        cr_assert_eq(oom_verify_plain(c.o, c.tok, false), FERRY_REASON_BAD_SIGNATURE);
        torture(&c);

        c.kind = OOM_VERIFY_ONCE;
        torture(&c);
        free(c.tok);
        c.tok = NULL;
        json_object_set_new(c.claims, "jti", json_string("jti-1"));
    }

    /* add_issuer: each run starts from an empty store (oom_prepare) */
    c.kind = OOM_ADD_ISSUER;
    n = torture(&c);
    cr_assert_gt(n, 20, "add_issuer made only %ld allocations", n);

    /* Nothing corrupted: the store and the keys that saw all the failed verifications still
     * accept the same tokens and refuse the bad one, and one-time use still works. */
    for (int i = 0; i < 2; i++) {
        char *once, *bad = strdup(c.good[i]);

        cr_assert_eq(oom_verify_plain(c.o, c.good[i], false), FERRY_REASON_OK, "%s",
                     g_last.detail);
        bad[strlen(bad) - 2] = bad[strlen(bad) - 2] == 'A' ? 'B' : 'A';
        cr_assert_eq(oom_verify_plain(c.o, bad, false), FERRY_REASON_BAD_SIGNATURE);
        json_object_set_new(c.claims, "jti", json_string(i ? "final-1" : "final-0"));
        once = oom_token(keys[i], c.claims);
        cr_assert_eq(oom_verify_plain(c.o, once, true), FERRY_REASON_OK, "%s", g_last.detail);
        cr_assert_eq(oom_verify_plain(c.o, once, true), FERRY_REASON_REPLAYED);
        free(once);
        free(bad);
    }

    /* The known jose.c defects still show (see above); when one is fixed, switch it off. */
#if JOSE_OOM_BLAMES_SIGNATURE
    cr_expect_gt(oom_blamed_signature, 0,
                 "no valid token was refused as bad_signature for lack of memory: if lib/jose.c "
                 "now reports such failures as such, set JOSE_OOM_BLAMES_SIGNATURE to 0");
#endif
#if JOSE_OOM_DROPS_KEY
    cr_expect_gt(oom_dropped_key, 0,
                 "no key was dropped from a key set for lack of memory: if lib/jose.c now "
                 "aborts the import instead, set JOSE_OOM_DROPS_KEY to 0");
#endif

    for (int i = 0; i < 2; i++)
        free(c.good[i]);
    json_decref(c.claims);
    json_decref(c.conf);
    ferry_oidc_free(c.fresh);
    ferry_oidc_free(c.o);
    ferry_jwk_unref(rs);
    ferry_jwk_unref(es);
#endif
}

/* A one-time token whose verification fails on our side after every check passed (the
 * identity cannot be allocated) keeps its jti: the holder's retry is accepted, once. */
Test(alloc, jti_not_consumed_when_the_identity_fails, .init = setup_ab, .fini = teardown_ab)
{
#ifndef HAVE_ALLOC_INJECTION
    cr_skip_test("allocation injection needs glibc");
#else
    ferry_verify_options once = {.consume_jti = true};
    ferry_verify_result res;
    ferry_identity *id = NULL;
    json_t *c = claims_for(ISS_A);
    char *tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c), *other;
    long n_id;
    int r;

    /* The identity is one calloc of sizeof(ferry_identity), made after every check. A dry run
     * (a reusable verification of another token of the same shape) counts those callocs; the
     * last one is the identity's. */
    json_object_set_new(c, "jti", json_string("jti-2"));
    other = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    cr_assert_eq(verify(g_o, other), FERRY_REASON_OK); /* warm up */
    inject_arm(LONG_MAX, sizeof(ferry_identity));
    r = ferry_oidc_verify(g_o, other, strlen(other), NULL, &id, &res);
    cr_assert_not(inject_disarm());
    n_id = inject_counted();
    cr_assert_eq(r, 0, "%s", res.detail);
    cr_assert_gt(n_id, 0, "no calloc of the identity seen");
    ferry_identity_free(id);
    id = NULL;

    inject_arm(n_id - 1, sizeof(ferry_identity));
    r = ferry_oidc_verify(g_o, tok, strlen(tok), &once, &id, &res);
    cr_assert(inject_disarm(), "the identity's calloc was not reached");
    cr_assert_lt(r, 0);
    cr_assert_neq(r, -FERRY_EREFUSED);
    cr_assert_eq(res.reason, FERRY_REASON_INTERNAL, "got %s (%s)", ferry_reason_name(res.reason),
                 res.detail);
    cr_assert_null(id);

    /* Not consumed: the retry is accepted, once. */
    EXPECT_REASON_OPTS(g_o, tok, &once, FERRY_REASON_OK);
    EXPECT_REASON_OPTS(g_o, tok, &once, FERRY_REASON_REPLAYED);
    free(other);
    free(tok);
    json_decref(c);
#endif
}

/* ---- statistics (ferry_oidc_get_stats, ferry_oidc_foreach_issuer) ------------------------- */

#define MAX_INFO 8

/* A copy of what foreach handed out (the strings are only valid during the callback). */
struct info_copy {
    char issuer[128];
    char source[16];
    char last_error[200];
    ferry_oidc_issuer_info info;
};

struct info_list {
    size_t n;
    int stop_after; /* return 7 after this many calls; 0: never stop */
    struct info_copy e[MAX_INFO];
};

static int collect_info(const ferry_oidc_issuer_info *info, void *userdata)
{
    struct info_list *l = userdata;
    struct info_copy *c;

    cr_assert_lt(l->n, MAX_INFO);
    cr_assert_not_null(info->issuer);
    cr_assert_not_null(info->source);
    cr_assert_not_null(info->last_error);
    c = &l->e[l->n++];
    snprintf(c->issuer, sizeof(c->issuer), "%s", info->issuer);
    snprintf(c->source, sizeof(c->source), "%s", info->source);
    snprintf(c->last_error, sizeof(c->last_error), "%s", info->last_error);
    c->info = *info;
    c->info.issuer = c->info.source = c->info.last_error = NULL;
    return l->stop_after && (int)l->n == l->stop_after ? 7 : 0;
}

static struct info_list list_issuers(ferry_oidc *o)
{
    struct info_list l = {0};

    cr_assert_eq(ferry_oidc_foreach_issuer(o, collect_info, &l), 0);
    return l;
}

static ferry_oidc_stats get_stats(ferry_oidc *o)
{
    ferry_oidc_stats st;

    memset(&st, 0x5a, sizeof(st));
    cr_assert_eq(ferry_oidc_get_stats(o, &st), 0);
    return st;
}

Test(stats, names_and_arguments)
{
    ferry_oidc_stats st;

    cr_expect_str_eq(ferry_keyset_state_name(FERRY_KEYSET_STATIC), "static");
    cr_expect_str_eq(ferry_keyset_state_name(FERRY_KEYSET_UNLOADED), "unloaded");
    cr_expect_str_eq(ferry_keyset_state_name(FERRY_KEYSET_FRESH), "fresh");
    cr_expect_str_eq(ferry_keyset_state_name(FERRY_KEYSET_STALE), "stale");
    cr_expect_str_eq(ferry_keyset_state_name(FERRY_KEYSET_FAILED), "failed");
    cr_expect_str_eq(ferry_keyset_state_name(0), "unknown");
    cr_expect_str_eq(ferry_keyset_state_name((ferry_keyset_state)99), "unknown");
    cr_expect_eq(ferry_oidc_get_stats(NULL, &st), -EINVAL);
    cr_expect_eq(ferry_oidc_foreach_issuer(NULL, collect_info, NULL), -EINVAL);
}

/* Inline issuers: counts of issuers, keys and replay entries; accepted and refused tokens per
 * issuer, in the totals and by reason; foreach in configuration order, and its early stop. */
Test(stats, verifications_counted, .init = setup_ab, .fini = teardown_ab)
{
    ferry_verify_options once = {.consume_jti = true};
    ferry_oidc_stats st = get_stats(g_o);
    struct info_list l;
    json_t *c = claims_for(ISS_A);
    char *ta = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c), *forged, *tc;

    cr_expect_eq(st.issuers, 2);
    cr_expect_eq(st.cached_keys, 2);
    cr_expect_eq(st.replay_entries, 0);
    cr_expect_eq(st.replay_capacity, 100000);
    cr_expect_eq(st.config_reloads, 0);
    cr_expect_eq(st.config_reload_failures, 0);
    cr_expect_eq(st.totals.accepted, 0);
    cr_expect_eq(st.totals.refused, 0);
    for (size_t i = 0; i < FERRY_REASON_MAX; i++)
        cr_expect_eq(st.refused_by_reason[i], 0);

    EXPECT_REASON(g_o, ta, FERRY_REASON_OK);
    EXPECT_REASON_OPTS(g_o, ta, &once, FERRY_REASON_OK);
    EXPECT_REASON_OPTS(g_o, ta, &once, FERRY_REASON_REPLAYED);
    forged = mint(g_kb, FERRY_ALG_ES256, ferry_jwk_kid(g_ka), NULL, c); /* A's kid, B's key */
    EXPECT_REASON(g_o, forged, FERRY_REASON_BAD_SIGNATURE);
    json_object_set_new(c, "iss", json_string("https://c.example"));
    tc = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    EXPECT_REASON(g_o, tc, FERRY_REASON_UNKNOWN_ISSUER);
    EXPECT_REASON(g_o, "not.a.token", FERRY_REASON_MALFORMED);

    st = get_stats(g_o);
    cr_expect_eq(st.totals.accepted, 2);
    cr_expect_eq(st.totals.refused, 4);
    cr_expect_eq(st.refused_by_reason[FERRY_REASON_REPLAYED], 1);
    cr_expect_eq(st.refused_by_reason[FERRY_REASON_BAD_SIGNATURE], 1);
    cr_expect_eq(st.refused_by_reason[FERRY_REASON_UNKNOWN_ISSUER], 1);
    cr_expect_eq(st.refused_by_reason[FERRY_REASON_MALFORMED], 1);
    cr_expect_eq(st.refused_by_reason[FERRY_REASON_OK], 0);
    cr_expect_eq(st.replay_entries, 1);
    cr_expect_eq(st.totals.jwks_fetches, 0);
    cr_expect_eq(st.totals.stale_serves, 0);

    l = list_issuers(g_o);
    cr_assert_eq(l.n, 2);
    cr_expect_str_eq(l.e[0].issuer, ISS_A);
    cr_expect_str_eq(l.e[1].issuer, ISS_B);
    for (size_t i = 0; i < 2; i++) {
        cr_expect_str_eq(l.e[i].source, "jwks");
        cr_expect_str_eq(l.e[i].last_error, "");
        cr_expect_eq(l.e[i].info.state, FERRY_KEYSET_STATIC);
        cr_expect_eq(l.e[i].info.profile, FERRY_PROFILE_ID_TOKEN);
        cr_expect_eq(l.e[i].info.keys, 1);
        cr_expect_eq(l.e[i].info.expires_in, 0);
        cr_expect_eq(l.e[i].info.counters.jwks_fetches, 0);
    }
    cr_expect_eq(l.e[0].info.counters.accepted, 2);
    cr_expect_eq(l.e[0].info.counters.refused, 2, "replayed and forged count for A");
    cr_expect_eq(l.e[1].info.counters.accepted, 0);
    cr_expect_eq(l.e[1].info.counters.refused, 0);

    l = (struct info_list){.stop_after = 1};
    cr_expect_eq(ferry_oidc_foreach_issuer(g_o, collect_info, &l), 7);
    cr_expect_eq(l.n, 1);
    free(ta);
    free(forged);
    free(tc);
    json_decref(c);
}

static ferry_oidc_issuer_info one_info(char *last_error, size_t len)
{
    struct info_list l = list_issuers(F.o);

    cr_assert_eq(l.n, 1);
    cr_expect_str_eq(l.e[0].issuer, F.base);
    if (last_error)
        snprintf(last_error, len, "%s", l.e[0].last_error);
    return l.e[0].info;
}

/* Fetches against the stand-in: successes, failures, the cooldown holding refreshes back, a
 * stale set serving, and failing closed; the store's totals agree with the one issuer's. */
Test(stats, fetches_counted, .init = fetch_setup, .fini = fetch_teardown, .timeout = 60)
{
    ferry_oidc_issuer_info in;
    ferry_oidc_stats st;
    char err[200];

    add_ok(F.o, remote_conf(F.base));
    in = one_info(err, sizeof(err));
    cr_expect_eq(in.state, FERRY_KEYSET_UNLOADED);
    cr_expect_str_eq(err, "");
    cr_expect_eq(in.keys, 0);
    cr_expect_eq(get_stats(F.o).cached_keys, 0);

    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    in = one_info(err, sizeof(err));
    cr_expect_eq(in.state, FERRY_KEYSET_FRESH);
    cr_expect_eq(in.keys, 1);
    cr_expect_eq(in.expires_in, 300);
    cr_expect_eq(in.usable_for, 1300);
    cr_expect_eq(in.counters.discovery_fetches, 1);
    cr_expect_eq(in.counters.jwks_fetches, 1);
    cr_expect_eq(in.counters.discovery_failures + in.counters.jwks_failures, 0);
    cr_expect_eq(in.counters.accepted, 1);
    cr_expect_eq(get_stats(F.o).cached_keys, 1);

    /* An unknown kid: one refresh (success), then the cooldown holds the next one back. */
    publish((ferry_jwk *[]){F.k1, F.k2}, 2);
    g_clock += 10;
    EXPECT_REMOTE(F.k2, NULL, FERRY_REASON_OK);
    EXPECT_REMOTE(F.k1, "kid-x", FERRY_REASON_UNKNOWN_KID);
    in = one_info(NULL, 0);
    cr_expect_eq(in.keys, 2);
    cr_expect_eq(in.counters.jwks_fetches, 2);
    cr_expect_eq(in.counters.discovery_fetches, 1);
    cr_expect_eq(in.counters.refresh_suppressed, 1);
    cr_expect_eq(in.counters.refused, 1);
    cr_expect_eq(in.expires_in, 300);

    /* Past the lifetime with the IdP failing: one attempt per cooldown, the stale set
     * serves, and every verification in between is held back by the cooldown. */
    cr_assert_eq(tu_standin_fault(F.s, "/jwks", "status:500"), 0);
    cr_assert_eq(tu_standin_fault(F.s, DISCOVERY, "status:503"), 0);
    g_clock += 301;
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    in = one_info(err, sizeof(err));
    cr_expect_eq(in.state, FERRY_KEYSET_STALE);
    cr_expect_eq(in.expires_in, -1);
    cr_expect_eq(in.usable_for, 999);
    cr_expect(strstr(err, "HTTP status 500"), "last_error: %s", err);
    cr_expect_eq(in.counters.discovery_fetches, 2);
    cr_expect_eq(in.counters.discovery_failures, 1);
    cr_expect_eq(in.counters.jwks_fetches, 3, "the last jwks_uri is used when discovery fails");
    cr_expect_eq(in.counters.jwks_failures, 1);
    cr_expect_eq(in.counters.stale_serves, 1);
    cr_expect_eq(in.counters.refresh_suppressed, 1);
    for (int i = 0; i < 3; i++)
        EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    in = one_info(NULL, 0);
    cr_expect_eq(in.counters.jwks_fetches, 3);
    cr_expect_eq(in.counters.stale_serves, 4);
    cr_expect_eq(in.counters.refresh_suppressed, 4);
    cr_expect_eq(in.counters.accepted, 6);

    /* Past expiry + stale window: fails closed after the next failed attempt. */
    g_clock += 1000;
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_ISSUER_UNAVAILABLE);
    in = one_info(err, sizeof(err));
    cr_expect_eq(in.state, FERRY_KEYSET_FAILED);
    cr_expect_eq(in.keys, 0);
    cr_expect_eq(in.expires_in, 0);
    cr_expect_eq(in.counters.jwks_fetches, 4);
    cr_expect_eq(in.counters.jwks_failures, 2);
    cr_expect_eq(in.counters.discovery_failures, 2);
    cr_expect_eq(in.counters.refused, 2);
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_ISSUER_UNAVAILABLE);
    in = one_info(NULL, 0);
    cr_expect_eq(in.counters.jwks_fetches, 4, "the cooldown holds a failing IdP back");
    cr_expect_eq(in.counters.refresh_suppressed, 5);

    /* The totals are this issuer's counters plus nothing else. */
    st = get_stats(F.o);
    cr_expect_eq(st.totals.accepted, in.counters.accepted);
    cr_expect_eq(st.totals.refused, in.counters.refused);
    cr_expect_eq(st.totals.discovery_fetches, in.counters.discovery_fetches);
    cr_expect_eq(st.totals.discovery_failures, in.counters.discovery_failures);
    cr_expect_eq(st.totals.jwks_fetches, in.counters.jwks_fetches);
    cr_expect_eq(st.totals.jwks_failures, in.counters.jwks_failures);
    cr_expect_eq(st.totals.refresh_suppressed, in.counters.refresh_suppressed);
    cr_expect_eq(st.totals.stale_serves, in.counters.stale_serves);
    cr_expect_eq(st.refused_by_reason[FERRY_REASON_ISSUER_UNAVAILABLE], 2);
    cr_expect_eq(st.refused_by_reason[FERRY_REASON_UNKNOWN_KID], 1);
    cr_expect_eq(st.cached_keys, 0);
    /* What the stand-in saw agrees with the counters. */
    cr_expect_eq(count("/jwks"), (long)in.counters.jwks_fetches);
    cr_expect_eq(count(DISCOVERY), (long)in.counters.discovery_fetches);

    /* The IdP recovers: fresh again after the cooldown. */
    cr_assert_eq(tu_standin_fault(F.s, "/jwks", NULL), 0);
    cr_assert_eq(tu_standin_fault(F.s, DISCOVERY, NULL), 0);
    g_clock += 30;
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    in = one_info(err, sizeof(err));
    cr_expect_eq(in.state, FERRY_KEYSET_FRESH);
    cr_expect_str_eq(err, "");
    cr_expect_eq(in.counters.jwks_fetches, 5);
    cr_expect_eq(in.counters.jwks_failures, 2);
}

/* ---- reload (ferry_oidc_reload_config) ------------------------------------------------------ */

#define ISS_C "https://c.example"

static int reload(ferry_oidc *o, json_t *conf, char *err, size_t errlen)
{
    int r;

    err[0] = '\0';
    r = ferry_oidc_reload_config(o, conf, err, errlen);
    json_decref(conf);
    return r;
}

static void reload_ok(ferry_oidc *o, json_t *conf)
{
    char err[256];
    int r = reload(o, conf, err, sizeof(err));

    cr_assert_eq(r, 0, "reload: %d %s", r, err);
}

/* A token of iss signed by k (kid of k), with the given jti. */
static char *token_for(const char *iss, const ferry_jwk *k, const char *jti)
{
    json_t *c = claims_for(iss);
    char *tok;

    json_object_set_new(c, "jti", json_string(jti));
    tok = mint(k, ferry_jwk_alg(k), NULL, NULL, c);
    json_decref(c);
    return tok;
}

/* A good reload replaces the issuer set; bad ones (each a different mistake) change nothing
 * and say what was wrong in one line; the statistics count both. */
Test(reload, good_then_bad_keeps_the_old, .init = setup_ab, .fini = teardown_ab)
{
    ferry_jwk *kc = gen(FERRY_ALG_ES256);
    char *ta = token_for(ISS_A, g_ka, "a"), *tb = token_for(ISS_B, g_kb, "b");
    char *tc = token_for(ISS_C, kc, "c"), err[256];
    ferry_oidc_stats st;
    struct {
        json_t *conf;
        int want;
        const char *says;
    } bad[] = {
        {json_pack("[]"), -FERRY_ECONFIG, "JSON object"},
        {json_pack("{s:{}}", "issuers"), -FERRY_ECONFIG, "issuers"},
        {json_pack("{s:[o, {s:s, s:[s], s:[s], s:o}]}", "issuers", conf_inline(ISS_A, g_ka),
                   "issuer", ISS_B, "audiences", AUD, "algorithms", "HS256", "jwks",
                   jwks_of(&g_kb, 1)),
         -FERRY_ECONFIG, "issuers[1] (" ISS_B "): algorithms[0]"},
        {json_pack("{s:[o, o]}", "issuers", conf_inline(ISS_A, g_ka), conf_inline(ISS_A, g_kb)),
         -FERRY_EDUPLICATE, "issuers[1] (" ISS_A "): issuer is listed twice"},
        {json_pack("{s:[o], s:i}", "issuers", conf_inline(ISS_B, g_kb), "replay_cache_size", 0),
         -FERRY_ECONFIG, "replay_cache_size"},
        {json_pack("{s:[o, {s:s, s:[s], s:[s], s:s}]}", "issuers", conf_inline(ISS_B, g_kb),
                   "issuer", "https://file.example", "audiences", AUD, "algorithms", "ES256",
                   "jwks_file", "/nonexistent/ferry-jwks.json"),
         -FERRY_ECONFIG, "issuers[1] (https://file.example): jwks_file"},
        {json_pack("{s:[o, {s:s, s:[s], s:b}]}", "issuers", conf_inline(ISS_B, g_kb), "issuer",
                   "https://x.example", "audiences", AUD, "unknown_member", 1),
         -FERRY_ECONFIG, "unknown member"},
    };

    EXPECT_REASON(g_o, ta, FERRY_REASON_OK);
    EXPECT_REASON(g_o, tb, FERRY_REASON_OK);
    EXPECT_REASON(g_o, tc, FERRY_REASON_UNKNOWN_ISSUER);

    /* {A, C}: B is gone at once, C is new. */
    reload_ok(g_o, json_pack("{s:[o, o]}", "issuers", conf_inline(ISS_A, g_ka),
                             conf_inline(ISS_C, kc)));
    cr_expect_eq(ferry_oidc_issuer_count(g_o), 2);
    EXPECT_REASON(g_o, ta, FERRY_REASON_OK);
    EXPECT_REASON(g_o, tb, FERRY_REASON_UNKNOWN_ISSUER);
    EXPECT_REASON(g_o, tc, FERRY_REASON_OK);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r = reload(g_o, bad[i].conf, err, sizeof(err));

        cr_expect_eq(r, bad[i].want, "case %zu: %d (%s)", i, r, err);
        cr_expect(strstr(err, bad[i].says), "case %zu: \"%s\" lacks \"%s\"", i, err,
                  bad[i].says);
        cr_expect_null(strchr(err, '\n'), "case %zu: multi-line message", i);
        /* Nothing changed. */
        cr_expect_eq(ferry_oidc_issuer_count(g_o), 2);
        EXPECT_REASON(g_o, ta, FERRY_REASON_OK);
        EXPECT_REASON(g_o, tb, FERRY_REASON_UNKNOWN_ISSUER);
        EXPECT_REASON(g_o, tc, FERRY_REASON_OK);
    }
    cr_expect_eq(ferry_oidc_reload_config(g_o, NULL, err, sizeof(err)), -EINVAL);
    cr_expect_eq(ferry_oidc_reload_config(NULL, NULL, err, sizeof(err)), -EINVAL);

    st = get_stats(g_o);
    cr_expect_eq(st.config_reloads, 1);
    cr_expect_eq(st.config_reload_failures, sizeof(bad) / sizeof(bad[0]));
    cr_expect_eq(st.issuers, 2);

    /* An empty list is a valid configuration: every issuer is refused. */
    reload_ok(g_o, json_pack("{s:[]}", "issuers"));
    cr_expect_eq(ferry_oidc_issuer_count(g_o), 0);
    EXPECT_REASON(g_o, ta, FERRY_REASON_UNKNOWN_ISSUER);
    free(ta);
    free(tb);
    free(tc);
    ferry_jwk_unref(kc);
}

/* Security property: the replay cache outlives reloads. A jti used before a reload is refused
 * after it, whether the issuer stayed unchanged, changed, or was removed and added again. */
Test(reload, replay_cache_survives, .init = setup_ab, .fini = teardown_ab)
{
    ferry_verify_options once = {.consume_jti = true};
    char *t1 = token_for(ISS_A, g_ka, "once-1"), *t2 = token_for(ISS_A, g_ka, "once-2");
    char *t3 = token_for(ISS_A, g_ka, "once-3");
    json_t *changed;
    ferry_oidc_stats st;

    EXPECT_REASON_OPTS(g_o, t1, &once, FERRY_REASON_OK);
    EXPECT_REASON_OPTS(g_o, t2, &once, FERRY_REASON_OK);

    /* unchanged A */
    reload_ok(g_o, json_pack("{s:[o, o]}", "issuers", conf_inline(ISS_A, g_ka),
                             conf_inline(ISS_B, g_kb)));
    EXPECT_REASON_OPTS(g_o, t1, &once, FERRY_REASON_REPLAYED);
    st = get_stats(g_o);
    cr_expect_eq(st.replay_entries, 2);
    cr_expect_eq(st.replay_capacity, 100000);

    /* changed A (a new issuer object), and a new capacity */
    changed = conf_inline(ISS_A, g_ka);
    json_object_set_new(changed, "leeway", json_integer(30));
    reload_ok(g_o, json_pack("{s:[o], s:i}", "issuers", changed, "replay_cache_size", 50));
    EXPECT_REASON_OPTS(g_o, t1, &once, FERRY_REASON_REPLAYED);
    EXPECT_REASON_OPTS(g_o, t2, &once, FERRY_REASON_REPLAYED);
    st = get_stats(g_o);
    cr_expect_eq(st.replay_capacity, 50);
    cr_expect_eq(st.replay_entries, 2);

    /* removed, then added again: still used up; without replay_cache_size the store's
     * initial capacity comes back */
    reload_ok(g_o, json_pack("{s:[o]}", "issuers", conf_inline(ISS_B, g_kb)));
    EXPECT_REASON_OPTS(g_o, t1, &once, FERRY_REASON_UNKNOWN_ISSUER);
    reload_ok(g_o, json_pack("{s:[o]}", "issuers", conf_inline(ISS_A, g_ka)));
    EXPECT_REASON_OPTS(g_o, t1, &once, FERRY_REASON_REPLAYED);
    EXPECT_REASON_OPTS(g_o, t2, &once, FERRY_REASON_REPLAYED);
    EXPECT_REASON_OPTS(g_o, t3, &once, FERRY_REASON_OK);
    EXPECT_REASON_OPTS(g_o, t3, &once, FERRY_REASON_REPLAYED);
    st = get_stats(g_o);
    cr_expect_eq(st.replay_capacity, 100000);
    cr_expect_eq(st.replay_entries, 3);

    /* A capacity below the entries held: one-time tokens fail closed, none is let through. */
    reload_ok(g_o, json_pack("{s:[o], s:i}", "issuers", conf_inline(ISS_A, g_ka),
                             "replay_cache_size", 2));
    EXPECT_REASON_OPTS(g_o, t1, &once, FERRY_REASON_REPLAYED);
    {
        char *t4 = token_for(ISS_A, g_ka, "once-4");

        EXPECT_REASON_OPTS(g_o, t4, &once, FERRY_REASON_REPLAY_CACHE_FULL);
        free(t4);
    }
    free(t1);
    free(t2);
    free(t3);
}

/* Security property: a reload that raises an issuer's leeway does not re-open replay. A jti
 * consumed under leeway 60 is recorded until exp + 60; with the new leeway of 600 the token is
 * still valid at exp + 100, when its entry has expired (and is evicted by the very insertion
 * that checks it), so consuming it again must be refused. */
Test(reload, raised_leeway_does_not_reopen_replay, .init = setup_ab, .fini = teardown_ab)
{
    ferry_verify_options once = {.consume_jti = true};
    char *t1 = token_for(ISS_A, g_ka, "lw-1"), *t2 = token_for(ISS_A, g_ka, "lw-2");
    ferry_verify_result res;
    ferry_identity *id = NULL;
    json_t *raised;

    EXPECT_REASON_OPTS(g_o, t1, &once, FERRY_REASON_OK); /* exp NOW + 300: recorded to + 360 */
    EXPECT_REASON_OPTS(g_o, t2, &once, FERRY_REASON_OK);
    raised = conf_inline(ISS_A, g_ka);
    json_object_set_new(raised, "leeway", json_integer(600));
    reload_ok(g_o, json_pack("{s:[o, o]}", "issuers", raised, conf_inline(ISS_B, g_kb)));
    g_clock = NOW + 400;
    EXPECT_REASON(g_o, t1, FERRY_REASON_OK); /* valid under the new leeway where not one-time */
    EXPECT_REASON_OPTS(g_o, t1, &once, FERRY_REASON_EXPIRED);
    /* the same through ferry_oidc_consume after a verification without consumption */
    cr_assert_eq(ferry_oidc_verify(g_o, t2, strlen(t2), NULL, &id, &res), 0);
    cr_expect_eq(ferry_oidc_consume(g_o, id, 0, &res), -FERRY_EREFUSED);
    cr_expect_eq(res.reason, FERRY_REASON_EXPIRED, "%s", ferry_reason_name(res.reason));
    ferry_identity_free(id);
    free(t1);
    free(t2);
}

/* jwks_file: the same path with the same bytes is unchanged; new bytes under the same path
 * are a changed issuer, read anew by the reload. */
Test(reload, jwks_file_read_anew, .init = setup_ab, .fini = teardown_ab)
{
    char path[] = "/tmp/ferry-test-oidc-XXXXXX";
    int fd = mkstemp(path);
    ferry_jwk *keys[2] = {g_ka, g_kb};
    char *ta = token_for("https://file.example", g_ka, "a");
    char *tb = token_for("https://file.example", g_kb, "b");
    json_t *c;
    FILE *f;

    cr_assert(fd >= 0);
    close(fd);
    for (int round = 0; round < 2; round++) {
        json_t *set = jwks_of(keys + round, 1);

        f = fopen(path, "w");
        cr_assert_not_null(f);
        cr_assert_eq(json_dumpf(set, f, JSON_COMPACT), 0);
        cr_assert_eq(fclose(f), 0);
        json_decref(set);
        c = json_pack("{s:s, s:[s], s:[s], s:s}", "issuer", "https://file.example", "audiences",
                      AUD, "algorithms", "ES256", "jwks_file", path);
        reload_ok(g_o, json_pack("{s:[o]}", "issuers", c));
        EXPECT_REASON(g_o, ta, round == 0 ? FERRY_REASON_OK : FERRY_REASON_UNKNOWN_KID);
        EXPECT_REASON(g_o, tb, round == 1 ? FERRY_REASON_OK : FERRY_REASON_UNKNOWN_KID);
        /* the same bytes again: unchanged, the counters carry over */
        c = json_pack("{s:s, s:[s], s:[s], s:s}", "issuer", "https://file.example", "audiences",
                      AUD, "algorithms", "ES256", "jwks_file", path);
        reload_ok(g_o, json_pack("{s:[o]}", "issuers", c));
        {
            struct info_list l = list_issuers(g_o);

            cr_assert_eq(l.n, 1);
            cr_expect_str_eq(l.e[0].source, "jwks_file");
            cr_expect_eq(l.e[0].info.counters.accepted, 1, "round %d", round);
            cr_expect_eq(l.e[0].info.counters.refused, 1, "round %d", round);
        }
    }
    unlink(path);
    free(ta);
    free(tb);
}

/* The same members in another order. */
static json_t *reversed(json_t *obj)
{
    json_t *out = json_object();
    const char **keys = calloc(json_object_size(obj), sizeof(*keys));
    const char *k;
    json_t *v;
    size_t n = 0;

    cr_assert(out && keys);
    json_object_foreach(obj, k, v) keys[n++] = k;
    while (n-- > 0)
        json_object_set(out, keys[n], json_object_get(obj, keys[n]));
    free(keys);
    json_decref(obj);
    return out;
}

/* A remote issuer whose configuration did not change keeps its cached key set (no fetch at
 * the stand-in) and its counters; a changed one starts empty and fetches again; a removed one
 * is refused without traffic. The store's totals keep counting across all of it. */
Test(reload, unchanged_issuer_keeps_its_cache, .init = fetch_setup, .fini = fetch_teardown)
{
    ferry_jwk *kc = gen(FERRY_ALG_ES256);
    char *tc = token_for(ISS_C, kc, "c");
    struct info_list l;
    json_t *changed;

    add_ok(F.o, remote_conf(F.base));
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_expect_eq(count(DISCOVERY), 1);
    cr_expect_eq(count("/jwks"), 1);

    /* unchanged (members reordered), plus a new inline issuer */
    reload_ok(F.o, json_pack("{s:[o, o]}", "issuers", reversed(remote_conf(F.base)),
                             conf_inline(ISS_C, kc)));
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    EXPECT_REASON(F.o, tc, FERRY_REASON_OK);
    cr_expect_eq(count(DISCOVERY), 1, "an unchanged issuer fetched its discovery again");
    cr_expect_eq(count("/jwks"), 1, "an unchanged issuer fetched its key set again");
    l = list_issuers(F.o);
    cr_assert_eq(l.n, 2);
    cr_expect_str_eq(l.e[0].issuer, F.base);
    cr_expect_eq(l.e[0].info.state, FERRY_KEYSET_FRESH);
    cr_expect_eq(l.e[0].info.counters.accepted, 2);
    cr_expect_eq(l.e[0].info.counters.jwks_fetches, 1);
    cr_expect_str_eq(l.e[1].issuer, ISS_C);

    /* changed (another refresh cooldown): a new issuer, empty until the next token */
    changed = remote_conf(F.base);
    json_object_set_new(json_object_get(changed, "jwks_cache"), "refresh_cooldown",
                        json_integer(20));
    reload_ok(F.o, json_pack("{s:[o, o]}", "issuers", changed, conf_inline(ISS_C, kc)));
    l = list_issuers(F.o);
    cr_assert_eq(l.n, 2);
    cr_expect_eq(l.e[0].info.state, FERRY_KEYSET_UNLOADED);
    cr_expect_eq(l.e[0].info.counters.accepted, 0);
    cr_expect_eq(l.e[1].info.counters.accepted, 1, "C is unchanged");
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_expect_eq(count(DISCOVERY), 2);
    cr_expect_eq(count("/jwks"), 2);

    /* removed: refused at once, no traffic, and prefetch and flush leave it alone */
    reload_ok(F.o, json_pack("{s:[o]}", "issuers", conf_inline(ISS_C, kc)));
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_UNKNOWN_ISSUER);
    ferry_oidc_flush(F.o, F.base);
    ferry_oidc_flush(F.o, NULL);
    {
        char err[256];

        cr_expect_eq(ferry_oidc_prefetch(F.o, err, sizeof(err)), 0, "%s", err);
    }
    cr_expect_eq(count(DISCOVERY), 2);
    cr_expect_eq(count("/jwks"), 2);
    {
        ferry_oidc_stats st = get_stats(F.o);

        cr_expect_eq(st.issuers, 1);
        cr_expect_eq(st.cached_keys, 1);
        cr_expect_eq(st.totals.jwks_fetches, 2, "totals count removed issuers' fetches");
        cr_expect_eq(st.totals.accepted, 4);
        cr_expect_eq(st.totals.refused, 1);
        cr_expect_eq(st.config_reloads, 3);
    }
    free(tc);
    ferry_jwk_unref(kc);
}

/* Reloads in a loop while several threads verify: an issuer present in every configuration is
 * never refused (also while its configuration changes), one that comes and goes is either
 * accepted or unknown, and each one-time token is accepted exactly once across all threads
 * and all reloads. Run under ASan, this also shows that no set or issuer is freed while a
 * verification uses it. */
#define RL_THREADS 4
#define RL_ONCE 120

static struct {
    ferry_oidc *o;
    char *ta, *tb, *tc, *once[RL_ONCE];
    atomic_int once_ok[RL_ONCE];
    atomic_int running;
    atomic_long bad;
    char why[600];
    pthread_mutex_t why_lock;
} RL;

static void rl_bad(const char *what, const ferry_verify_result *res)
{
    if (atomic_fetch_add(&RL.bad, 1) == 0) {
        pthread_mutex_lock(&RL.why_lock);
        snprintf(RL.why, sizeof(RL.why), "%s: %s (%s)", what, ferry_reason_name(res->reason),
                 res->detail);
        pthread_mutex_unlock(&RL.why_lock);
    }
}

static ferry_reason rl_verify(const char *tok, bool once, ferry_verify_result *res)
{
    ferry_verify_options vo = {.consume_jti = once};
    ferry_identity *id = NULL;
    int r = ferry_oidc_verify(RL.o, tok, strlen(tok), &vo, &id, res);

    if ((r == 0) != (id != NULL) || (r != 0 && r != -FERRY_EREFUSED))
        rl_bad("inconsistent result", res);
    ferry_identity_free(id);
    return res->reason;
}

static void *rl_worker(void *p)
{
    int t = (int)(intptr_t)p;
    ferry_verify_result res;

    for (int n = 0; n < RL_ONCE; n++) {
        int i = (n + t * (RL_ONCE / RL_THREADS)) % RL_ONCE;
        ferry_reason got;

        if (rl_verify(RL.ta, false, &res) != FERRY_REASON_OK)
            rl_bad("A (always configured)", &res);
        if (rl_verify(RL.tc, false, &res) != FERRY_REASON_OK)
            rl_bad("C (always configured, changing)", &res);
        got = rl_verify(RL.tb, false, &res);
        if (got != FERRY_REASON_OK && got != FERRY_REASON_UNKNOWN_ISSUER)
            rl_bad("B (coming and going)", &res);
        got = rl_verify(RL.once[i], true, &res);
        if (got == FERRY_REASON_OK)
            atomic_fetch_add(&RL.once_ok[i], 1);
        else if (got != FERRY_REASON_REPLAYED)
            rl_bad("one-time token", &res);
    }
    atomic_fetch_sub(&RL.running, 1);
    return NULL;
}

static int rl_count(const ferry_oidc_issuer_info *info, void *userdata)
{
    (void)info;
    ++*(size_t *)userdata;
    return 0;
}

Test(reload, concurrent_with_verification, .init = setup_ab, .fini = teardown_ab,
     .timeout = 120)
{
    ferry_jwk *kc = gen(FERRY_ALG_ES256);
    pthread_t th[RL_THREADS];
    long reloads = 0;
    char name[32];

    memset(&RL, 0, sizeof(RL));
    pthread_mutex_init(&RL.why_lock, NULL);
    RL.o = g_o;
    RL.ta = token_for(ISS_A, g_ka, "a");
    RL.tb = token_for(ISS_B, g_kb, "b");
    RL.tc = token_for(ISS_C, kc, "c");
    for (int i = 0; i < RL_ONCE; i++) {
        snprintf(name, sizeof(name), "once-%d", i);
        RL.once[i] = token_for(ISS_A, g_ka, name);
        atomic_init(&RL.once_ok[i], 0);
    }
    reload_ok(g_o, json_pack("{s:[o, o]}", "issuers", conf_inline(ISS_A, g_ka),
                             conf_inline(ISS_C, kc)));
    atomic_init(&RL.running, RL_THREADS);
    for (int i = 0; i < RL_THREADS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, rl_worker, (void *)(intptr_t)i), 0);
    while (atomic_load(&RL.running) > 0 || reloads < 50) {
        json_t *c = conf_inline(ISS_C, kc), *list;
        ferry_oidc_stats st;
        size_t n = 0;

        json_object_set_new(c, "leeway", json_integer(reloads % 2 ? 30 : 60));
        list = reloads % 3 ? json_pack("[o, o, o]", conf_inline(ISS_A, g_ka), c,
                                       conf_inline(ISS_B, g_kb))
                           : json_pack("[o, o]", c, conf_inline(ISS_A, g_ka));
        if (reloads % 2)
            reload_ok(g_o, json_pack("{s:o, s:i}", "issuers", list, "replay_cache_size",
                                     1000 + (int)reloads % 7));
        else
            reload_ok(g_o, json_pack("{s:o}", "issuers", list));
        reloads++;
        cr_assert_eq(ferry_oidc_get_stats(g_o, &st), 0);
        cr_assert(st.issuers == 2 || st.issuers == 3);
        cr_assert_eq(ferry_oidc_foreach_issuer(g_o, rl_count, &n), 0);
        cr_assert(n == 2 || n == 3);
        if (reloads % 10 == 0) {
            /* A failed reload in the middle changes nothing. */
            char err[128];

            cr_assert_eq(reload(g_o, json_pack("{s:[{}]}", "issuers"), err, sizeof(err)),
                         -FERRY_ECONFIG);
        }
    }
    for (int i = 0; i < RL_THREADS; i++)
        pthread_join(th[i], NULL);

    cr_expect_eq(atomic_load(&RL.bad), 0, "%ld unexpected outcomes, first: %s",
                 atomic_load(&RL.bad), RL.why);
    for (int i = 0; i < RL_ONCE; i++)
        cr_expect_eq(atomic_load(&RL.once_ok[i]), 1, "one-time token %d accepted %d times", i,
                     atomic_load(&RL.once_ok[i]));
    cr_expect_geq(reloads, 50);
    {
        ferry_oidc_stats st = get_stats(g_o);

        cr_expect_eq(st.config_reloads, (uint64_t)reloads + 1);
        cr_expect_eq(st.config_reload_failures, (uint64_t)reloads / 10);
        cr_expect_eq(st.totals.accepted + st.totals.refused,
                     (uint64_t)RL_THREADS * RL_ONCE * 4);
        cr_expect_eq(st.replay_entries, RL_ONCE);
    }
    fprintf(stderr, "reload/concurrent_with_verification: %ld reloads during %d verifications\n",
            reloads, RL_THREADS * RL_ONCE * 4);
    for (int i = 0; i < RL_ONCE; i++)
        free(RL.once[i]);
    free(RL.ta);
    free(RL.tb);
    free(RL.tc);
    pthread_mutex_destroy(&RL.why_lock);
    ferry_jwk_unref(kc);
}

/* G5 for reload: every allocation of a reload fails once, in turn. A failed reload reports our
 * failure (never a configuration error) and changes nothing: the old issuers are served, the
 * new one is unknown, a consumed jti stays consumed. A reload that succeeded despite the
 * failure (a failure absorbed on the way) installed the complete new configuration. */
Test(alloc, reload_failure_injection, .init = setup_ab, .fini = teardown_ab, .timeout = 120)
{
#ifndef HAVE_ALLOC_INJECTION
    cr_skip_test("allocation injection needs glibc");
#else
    ferry_jwk *rs = gen(FERRY_ALG_RS256), *es = gen(FERRY_ALG_ES256), *keys[2] = {rs, es};
    ferry_verify_options once = {.consume_jti = true};
    json_t *claims = claims_for(OOM_ISS), *newconf, *oldconf;
    char *ta = token_for(ISS_A, g_ka, "a"), *tb = token_for(ISS_B, g_kb, "b"), *tn[2];
    char *used = token_for(ISS_A, g_ka, "used"), err[256];
    long failures = 0, n;

    for (int i = 0; i < 2; i++)
        tn[i] = oom_token(keys[i], claims);
    oldconf = json_pack("{s:[o, o]}", "issuers", conf_inline(ISS_A, g_ka),
                        conf_inline(ISS_B, g_kb));
    newconf = json_pack("{s:[o, o], s:i}", "issuers", conf_inline(ISS_A, g_ka),
                        oom_conf(rs, es), "replay_cache_size", 500);
    reload_ok(g_o, json_incref(oldconf));
    EXPECT_REASON_OPTS(g_o, used, &once, FERRY_REASON_OK);
    /* warm up OpenSSL's lazy initialisation */
    reload_ok(g_o, json_incref(newconf));
    reload_ok(g_o, json_incref(oldconf));

    for (n = 0; n < OOM_MAX_RUNS; n++) {
        bool hit;
        int r;

        err[0] = '\0';
        inject_arm(n, 0);
        r = ferry_oidc_reload_config(g_o, newconf, err, sizeof(err));
        hit = inject_disarm();
        if (r < 0) {
            failures++;
            cr_assert(hit, "reload failed without an injected failure: %d %s", r, err);
            /* jose's defect (see JOSE_OOM_DROPS_KEY): a key dropped for lack of memory can
             * leave a one-key set empty, which the configuration check then refuses. */
            if (JOSE_OOM_DROPS_KEY && r == -FERRY_ECONFIG && strstr(err, "no usable keys"))
                oom_dropped_key++;
            else
                cr_assert(r == -ENOMEM || r == -FERRY_ECRYPTO,
                          "allocation %ld failed and reload returned %d (%s)", n, r, err);
            cr_assert(err[0] && !strchr(err, '\n'), "bad message: \"%s\"", err);
            cr_assert_eq(ferry_oidc_issuer_count(g_o), 2);
            cr_assert_eq(verify(g_o, tb), FERRY_REASON_OK, "old issuer lost: %s", g_last.detail);
            cr_assert_eq(verify(g_o, tn[0]), FERRY_REASON_UNKNOWN_ISSUER);
            cr_assert_eq(get_stats(g_o).replay_capacity, 100000);
        } else {
            cr_assert_eq(ferry_oidc_issuer_count(g_o), 2);
            cr_assert_eq(verify(g_o, tb), FERRY_REASON_UNKNOWN_ISSUER);
            for (int i = 0; i < 2; i++) {
                ferry_reason got = verify(g_o, tn[i]);

                if (JOSE_OOM_DROPS_KEY && hit && got == FERRY_REASON_UNKNOWN_KID) {
                    oom_dropped_key++;
                    continue;
                }
                cr_assert_eq(got, FERRY_REASON_OK, "new issuer, token %d, allocation %ld: %s",
                             i, n, g_last.detail);
            }
            cr_assert_eq(get_stats(g_o).replay_capacity, 500);
        }
        cr_assert_eq(verify(g_o, ta), FERRY_REASON_OK);
        cr_assert_eq(verify_opts(g_o, used, &once), FERRY_REASON_REPLAYED);
        if (r == 0)
            reload_ok(g_o, json_incref(oldconf));
        if (!hit)
            break;
    }
    cr_assert_lt(n, OOM_MAX_RUNS, "reload still allocating after %d injected failures",
                 OOM_MAX_RUNS);
    cr_assert_gt(failures, 20, "reload made only %ld allocations", failures);
    cr_expect_eq(get_stats(g_o).config_reload_failures, (uint64_t)failures);
    for (int i = 0; i < 2; i++)
        free(tn[i]);
    free(ta);
    free(tb);
    free(used);
    json_decref(claims);
    json_decref(newconf);
    json_decref(oldconf);
    ferry_jwk_unref(rs);
    ferry_jwk_unref(es);
#endif
}

/* ---- no_wait: an event thread never waits for a key-set fetch ----------------------------- */

/* Verify tok at the store clock with no_wait (and consume_jti when once); returns what
 * ferry_oidc_verify returned. A give-up must say so (INTERNAL, "would wait ...") and hand out
 * no identity; any other answer is an ordinary decision. */
static int nw_verify(ferry_oidc *o, const char *tok, bool once, ferry_verify_result *res)
{
    ferry_verify_options vo = {.now = g_clock, .consume_jti = once, .no_wait = true};
    ferry_identity *id = NULL;
    int r;

    memset(res, 0x5a, sizeof(*res));
    r = ferry_oidc_verify(o, tok, strlen(tok), &vo, &id, res);
    if (r == -FERRY_EWOULDBLOCK) {
        cr_assert_null(id);
        cr_assert_eq(res->reason, FERRY_REASON_INTERNAL);
        cr_assert(memchr(res->detail, '\0', sizeof(res->detail)), "detail not terminated");
        cr_assert(strstr(res->detail, "would wait"), "detail: %s", res->detail);
    } else if (r == 0) {
        cr_assert_not_null(id);
        cr_assert_eq(res->reason, FERRY_REASON_OK);
    } else {
        cr_assert_eq(r, -FERRY_EREFUSED, "verify returned %d (%s)", r, res->detail);
        cr_assert_null(id);
        cr_assert_neq(res->reason, FERRY_REASON_OK);
    }
    ferry_identity_free(id);
    return r;
}

/* A fresh remote token for k (kid as remote_token), verified with no_wait. */
static int nw_remote(const ferry_jwk *k, const char *kid, ferry_verify_result *res)
{
    char *tok = remote_token(k, kid);
    int r = nw_verify(F.o, tok, false, res);

    free(tok);
    return r;
}

#define EXPECT_NW(k, kid, want_r, want_reason)                                                \
    do {                                                                                      \
        ferry_verify_result res_;                                                             \
        int r_ = nw_remote(k, kid, &res_);                                                    \
        cr_expect_eq(r_, want_r, "no_wait returned %d (%s: %s), want %d", r_,                 \
                     ferry_reason_name(res_.reason), res_.detail, want_r);                    \
        if (r_ == want_r && r_ != -FERRY_EWOULDBLOCK)                                         \
            cr_expect_eq(res_.reason, want_reason, "got %s, want %s (%s)",                    \
                         ferry_reason_name(res_.reason), ferry_reason_name(want_reason),      \
                         res_.detail);                                                        \
    } while (0)

static void expect_same_stats(const ferry_oidc_stats *a, const ferry_oidc_stats *b)
{
    cr_expect_eq(memcmp(&a->totals, &b->totals, sizeof(a->totals)), 0, "totals changed");
    cr_expect_eq(memcmp(a->refused_by_reason, b->refused_by_reason,
                        sizeof(a->refused_by_reason)),
                 0, "refused_by_reason changed");
    cr_expect_eq(a->replay_entries, b->replay_entries, "replay cache changed");
    cr_expect_eq(a->cached_keys, b->cached_keys);
}

/* Static key sets (inline, file) never wait: no_wait decides exactly as without it, and its
 * decisions are counted like any other. */
Test(no_wait, static_issuer_decides, .init = setup_ab, .fini = teardown_ab)
{
    json_t *c = claims_for(ISS_A);
    char *tok = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c), *bad;
    ferry_oidc_stats before = get_stats(g_o), after;
    ferry_verify_result res;

    cr_expect_eq(nw_verify(g_o, tok, false, &res), 0);
    cr_expect_eq(nw_verify(g_o, tok, true, &res), 0);
    cr_expect_eq(nw_verify(g_o, tok, true, &res), -FERRY_EREFUSED);
    cr_expect_eq(res.reason, FERRY_REASON_REPLAYED);
    json_object_set_new(c, "aud", json_string("other"));
    bad = mint(g_ka, FERRY_ALG_ES256, NULL, NULL, c);
    cr_expect_eq(nw_verify(g_o, bad, false, &res), -FERRY_EREFUSED);
    cr_expect_eq(res.reason, FERRY_REASON_BAD_AUDIENCE);
    /* an unknown kid in a static set: refused at once, nothing to wait for */
    free(bad);
    bad = mint(g_ka, FERRY_ALG_ES256, "no-such-kid", NULL, c);
    cr_expect_eq(nw_verify(g_o, bad, false, &res), -FERRY_EREFUSED);
    cr_expect_eq(res.reason, FERRY_REASON_UNKNOWN_KID);
    after = get_stats(g_o);
    cr_expect_eq(after.totals.accepted, before.totals.accepted + 2);
    cr_expect_eq(after.totals.refused, before.totals.refused + 3);
    cr_expect_eq(after.replay_entries, before.replay_entries + 1);
    free(bad);
    free(tok);
    json_decref(c);
}

/* A remote issuer whose set is not loaded yet: no_wait gives up before fetching, and nothing
 * moved - no request at the IdP, no counter, the state still "unloaded" (no attempt recorded,
 * so no cooldown started). The blocking retry then fetches and accepts. */
Test(no_wait, unloaded_set_gives_up_without_side_effects, .init = fetch_setup,
     .fini = fetch_teardown)
{
    ferry_oidc_stats before, after;
    ferry_oidc_issuer_info in0, in;

    add_ok(F.o, remote_conf(F.base));
    before = get_stats(F.o);
    in0 = one_info(NULL, 0);
    for (int i = 0; i < 3; i++) {
        EXPECT_NW(F.k1, NULL, -FERRY_EWOULDBLOCK, FERRY_REASON_INTERNAL);
        EXPECT_NW(F.k2, "some-kid", -FERRY_EWOULDBLOCK, FERRY_REASON_INTERNAL);
    }
    after = get_stats(F.o);
    expect_same_stats(&before, &after);
    in = one_info(NULL, 0);
    cr_expect_eq(in.state, FERRY_KEYSET_UNLOADED);
    cr_expect_eq(memcmp(&in.counters, &in0.counters, sizeof(in.counters)), 0,
                 "the issuer's counters changed");
    cr_expect_eq(count(DISCOVERY), 0);
    cr_expect_eq(count("/jwks"), 0);

    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_expect_eq(count(DISCOVERY), 1);
    cr_expect_eq(count("/jwks"), 1);
    in = one_info(NULL, 0);
    cr_expect_eq(in.counters.accepted, 1);
    cr_expect_eq(in.counters.refused, 0);
    /* loaded now: no_wait decides */
    EXPECT_NW(F.k1, NULL, 0, FERRY_REASON_OK);
    cr_expect_eq(count("/jwks"), 1);
}

/* A one-time token whose no_wait verification gave up is not spent: the blocking retry
 * accepts and consumes it, and from then on it is a replay, also for no_wait. */
Test(no_wait, one_time_token_not_spent, .init = fetch_setup, .fini = fetch_teardown)
{
    ferry_verify_options once = {.consume_jti = true};
    ferry_verify_result res;
    char *tok;

    add_ok(F.o, remote_conf(F.base));
    tok = remote_token(F.k1, NULL);
    cr_expect_eq(nw_verify(F.o, tok, true, &res), -FERRY_EWOULDBLOCK);
    cr_expect_eq(get_stats(F.o).replay_entries, 0);
    once.now = g_clock;
    EXPECT_REASON_OPTS(F.o, tok, &once, FERRY_REASON_OK);
    cr_expect_eq(get_stats(F.o).replay_entries, 1);
    cr_expect_eq(nw_verify(F.o, tok, true, &res), -FERRY_EREFUSED);
    cr_expect_eq(res.reason, FERRY_REASON_REPLAYED);
    EXPECT_REASON_OPTS(F.o, tok, &once, FERRY_REASON_REPLAYED);
    free(tok);
}

/* Precise, not over-eager: a kid in a usable set (fresh, or stale with the refresh held back
 * by the cooldown) verifies, and an unknown kid whose refresh the cooldown holds back is
 * refused as unknown_kid - only a fetch this call would run gives up. */
Test(no_wait, gives_up_only_for_a_fetch, .init = fetch_setup, .fini = fetch_teardown)
{
    ferry_oidc_issuer_info in0, in;
    char err[256];

    add_ok(F.o, remote_conf(F.base));
    cr_assert_eq(ferry_oidc_prefetch(F.o, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(count("/jwks"), 1);
    EXPECT_NW(F.k1, NULL, 0, FERRY_REASON_OK); /* fresh */

    /* An unknown kid with a refresh due: this call would fetch. */
    in0 = one_info(NULL, 0);
    EXPECT_NW(F.k2, NULL, -FERRY_EWOULDBLOCK, FERRY_REASON_INTERNAL);
    in = one_info(NULL, 0);
    cr_expect_eq(memcmp(&in.counters, &in0.counters, sizeof(in.counters)), 0);
    cr_expect_eq(count("/jwks"), 1);
    /* The blocking retry refreshes (the IdP does not know the kid either)... */
    EXPECT_REMOTE(F.k2, NULL, FERRY_REASON_UNKNOWN_KID);
    cr_expect_eq(count("/jwks"), 2);
    /* ... and within the cooldown no fetch is due and none in flight: refused, not given up,
     * and counted like a blocking refusal (held back by the cooldown). */
    g_clock += 5;
    in0 = one_info(NULL, 0);
    EXPECT_NW(F.k2, NULL, -FERRY_EREFUSED, FERRY_REASON_UNKNOWN_KID);
    EXPECT_NW(F.k1, "rotated", -FERRY_EREFUSED, FERRY_REASON_UNKNOWN_KID);
    in = one_info(NULL, 0);
    cr_expect_eq(in.counters.refused, in0.counters.refused + 2);
    cr_expect_eq(in.counters.refresh_suppressed, in0.counters.refresh_suppressed + 2);
    cr_expect_eq(count("/jwks"), 2);
    EXPECT_NW(F.k1, NULL, 0, FERRY_REASON_OK);

    /* Past the lifetime the refresh is due: no_wait gives up, even for a known kid. */
    g_clock += 301;
    EXPECT_NW(F.k1, NULL, -FERRY_EWOULDBLOCK, FERRY_REASON_INTERNAL);
    cr_expect_eq(one_info(NULL, 0).state, FERRY_KEYSET_STALE);
    /* The blocking retry's refresh fails; the stale set serves, and until the cooldown ends
     * no fetch is due: no_wait serves the stale set as well. */
    cr_assert_eq(tu_standin_fault(F.s, "/jwks", "status:500"), 0);
    cr_assert_eq(tu_standin_fault(F.s, DISCOVERY, "status:500"), 0);
    EXPECT_REMOTE(F.k1, NULL, FERRY_REASON_OK);
    cr_expect_eq(count("/jwks"), 3);
    in0 = one_info(NULL, 0);
    EXPECT_NW(F.k1, NULL, 0, FERRY_REASON_OK);
    in = one_info(NULL, 0);
    cr_expect_eq(in.counters.stale_serves, in0.counters.stale_serves + 1);
    cr_expect_eq(count("/jwks"), 3);
    /* Cooldown over: due again. */
    g_clock += 30;
    EXPECT_NW(F.k1, NULL, -FERRY_EWOULDBLOCK, FERRY_REASON_INTERNAL);
    cr_expect_eq(count("/jwks"), 3);
}

/* A fetch in flight on another thread: a no_wait token that would wait for it (no usable set,
 * or a kid the set lacks) gives up at once; one whose kid is in the usable set goes on. */
Test(no_wait, fetch_in_flight_not_waited_for, .init = fetch_setup, .fini = fetch_teardown,
     .timeout = 30)
{
    ferry_reason first = FERRY_REASON_INTERNAL;
    pthread_t th;
    int64_t t0, t1;

    add_ok(F.o, remote_conf(F.base));
    cr_assert_eq(tu_standin_fault(F.s, "/jwks", "delay:1.5"), 0);
    t0 = mono_ms();
    cr_assert_eq(pthread_create(&th, NULL, slow_refresh_worker, &first), 0);
    while (count("/jwks") < 1 && mono_ms() - t0 < 5000)
        usleep(10000);
    cr_assert_eq(count("/jwks"), 1, "the first fetch did not start");
    t1 = mono_ms();
    EXPECT_NW(F.k1, NULL, -FERRY_EWOULDBLOCK, FERRY_REASON_INTERNAL);
    cr_expect(mono_ms() - t1 < 700, "no_wait waited %" PRId64 " ms", mono_ms() - t1);
    pthread_join(th, NULL);
    cr_expect(mono_ms() - t0 >= 1400, "the fetch was not slow");
    cr_expect_eq(first, FERRY_REASON_OK);
    EXPECT_NW(F.k1, NULL, 0, FERRY_REASON_OK);

    /* A stale set being refreshed slowly: the known kid is served from it, the unknown kid
     * would wait for the refresh and gives up. */
    first = FERRY_REASON_INTERNAL;
    g_clock += 301;
    t0 = mono_ms();
    cr_assert_eq(pthread_create(&th, NULL, slow_refresh_worker, &first), 0);
    while (count("/jwks") < 2 && mono_ms() - t0 < 5000)
        usleep(10000);
    cr_assert_eq(count("/jwks"), 2, "the refresh did not start");
    t1 = mono_ms();
    EXPECT_NW(F.k1, NULL, 0, FERRY_REASON_OK);
    EXPECT_NW(F.k2, NULL, -FERRY_EWOULDBLOCK, FERRY_REASON_INTERNAL);
    cr_expect(mono_ms() - t1 < 700, "no_wait waited %" PRId64 " ms", mono_ms() - t1);
    pthread_join(th, NULL);
    cr_expect_eq(first, FERRY_REASON_OK);
    cr_expect_eq(count("/jwks"), 2);
}
