/* tests/unit/test_mint.c - ferry's token issuer: keys on disk, rotation, RFC 9068 tokens.
 *
 * SECURITY-TESTS.md section E: E1 header exactly {alg, kid, typ} and kid = RFC 7638 thumbprint
 * (RFC 7638 §3.1 and RFC 8037 A.3 keys imported as PEM), E2 round trip through ferry's own
 * verifier (profile "ferry", inline JWKS = ferry_mint_jwks), E6 lifetime and jti uniqueness
 * over 100,000 mints, E8 published JWKS and keys.json without private members. Also rotation
 * with overlap (old tokens verify until retired_at + max_ttl, then the key is gone from the
 * published set and its private file is wiped, but stays in the archive), file modes and
 * hostile state directories, PEM import, refused requests, concurrent minting during
 * rotation. (The independent verifier, joserfc, is in tests/integration/test_mint_interop.py.)
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "basic/b64.h"
#include "ferry/error.h"
#include "ferry/jose.h"
#include "ferry/json.h"
#include "ferry/mint.h"
#include "ferry/oidc.h"
#include "testutil.h"

#define ISS "https://ferry.test"
#define AUD "sts.amazonaws.com"
#define RFC_DIR "jose-rfc-examples"
#define T0 INT64_C(1700000000)

static const ferry_alg all_algs[] = {FERRY_ALG_ES256, FERRY_ALG_EDDSA, FERRY_ALG_RS256};

/* ---- helpers --------------------------------------------------------------------------- */

static int64_t test_now = T0;
static int64_t test_clock(void *data)
{
    return data ? *(int64_t *)data : test_now;
}

static char *make_dir(void)
{
    char *d = strdup("/tmp/ferry-test-mint.XXXXXX");

    cr_assert_not_null(d);
    cr_assert_not_null(mkdtemp(d));
    return d;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

static void rm_dir(char *d)
{
    if (!d)
        return;
    (void)nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(d);
}

static char *path_in(const char *dir, const char *rel)
{
    char *p = NULL;

    cr_assert(asprintf(&p, "%s/%s", dir, rel) > 0);
    return p;
}

static char *pem_path(const char *dir, const char *kid)
{
    char *p = NULL;

    cr_assert(asprintf(&p, "%s/keys/key-%s.pem", dir, kid) > 0);
    return p;
}

static int open_mint_r(const char *dir, ferry_alg alg, int64_t max_ttl, unsigned flags,
                       ferry_mint **ret, char *err, size_t errlen)
{
    ferry_mint_options o = {.issuer = ISS, .state_dir = dir, .alg = alg, .rsa_bits = 2048,
                            .max_ttl = max_ttl, .clock = test_clock, .flags = flags};

    return ferry_mint_open(&o, ret, err, errlen);
}

static ferry_mint *open_mint(const char *dir, ferry_alg alg, int64_t max_ttl)
{
    ferry_mint *m = NULL;
    char err[512] = "";
    int r = open_mint_r(dir, alg, max_ttl, 0, &m, err, sizeof(err));

    cr_assert_eq(r, 0, "ferry_mint_open: %d (%s): %s", r, ferry_strerror(r), err);
    cr_assert_not_null(m);
    return m;
}

static const char *const one_aud[] = {AUD};

static ferry_mint_request base_req(void)
{
    return (ferry_mint_request){
        .subject = "spiffe://cluster.local/ns/train/sa/job",
        .audience = one_aud,
        .n_audience = 1,
        .scope = "s3:read secrets:wandb",
        .client_id = "ferry-credential",
        .ttl = 300,
        .src_iss = "https://kubernetes.default.svc",
        .src_sub = "system:serviceaccount:train:job",
    };
}

static char *mint_ok(ferry_mint *m, const ferry_mint_request *req, char jti[23], int64_t *exp)
{
    char *tok = NULL;
    int r = ferry_mint_token(m, req, &tok, jti, exp);

    cr_assert_eq(r, 0, "ferry_mint_token: %d (%s)", r, ferry_strerror(r));
    cr_assert_not_null(tok);
    return tok;
}

/* Decoded JSON of segment i (0 header, 1 payload) of a compact token. */
static json_t *segment_json(const char *tok, int i, char **ret_raw)
{
    const char *s = tok, *e;
    unsigned char *dec = NULL;
    size_t dlen;
    json_t *j = NULL;

    for (int k = 0; k < i; k++)
        s = strchr(s, '.') + 1;
    e = strchr(s, '.');
    cr_assert_not_null(e);
    cr_assert_eq(ferry_b64url_decode_alloc(s, (size_t)(e - s), &dec, &dlen), 0);
    cr_assert_eq(ferry_json_parse(dec, dlen, 1 << 16, 16, &j, NULL, 0), 0, "segment %d: %s", i,
                 dec);
    if (ret_raw)
        *ret_raw = (char *)dec;
    else
        free(dec);
    return j;
}

/* Verify with ferry's own verifier: issuer ISS, profile "ferry", inline JWKS = the mint's
 * published set at the mint's clock; decision at `now`. Returns the reason. */
static ferry_reason verify_at(ferry_mint *m, const char *tok, int64_t now, int64_t max_lifetime,
                              ferry_identity **ret_id)
{
    json_t *jwks = NULL, *conf;
    ferry_oidc *o = NULL;
    ferry_identity *id = NULL;
    ferry_verify_result res;
    ferry_verify_options vo = {.now = now};
    char err[256] = "";
    int r;

    cr_assert_eq(ferry_mint_jwks(m, false, &jwks), 0);
    cr_assert_eq(ferry_oidc_new(NULL, &o), 0);
    conf = json_pack("{s:s, s:[s], s:O, s:[sss], s:s, s:I}", "issuer", ISS, "audiences", AUD,
                     "jwks", jwks, "algorithms", "ES256", "EdDSA", "RS256", "profile", "ferry",
                     "max_lifetime", (json_int_t)max_lifetime);
    cr_assert_not_null(conf);
    r = ferry_oidc_add_issuer(o, conf, err, sizeof(err));
    if (r < 0 && json_array_size(json_object_get(jwks, "keys")) == 0) {
        /* An empty published set is a configuration error for an inline set: no key. */
        json_decref(conf);
        json_decref(jwks);
        ferry_oidc_free(o);
        return FERRY_REASON_UNKNOWN_KID;
    }
    cr_assert_eq(r, 0, "add_issuer: %s", err);
    r = ferry_oidc_verify(o, tok, strlen(tok), &vo, &id, &res);
    if (r == 0 && ret_id)
        *ret_id = id;
    else
        ferry_identity_free(id);
    json_decref(conf);
    json_decref(jwks);
    ferry_oidc_free(o);
    return r == 0 ? FERRY_REASON_OK : res.reason;
}

static void assert_public_only(const json_t *jwks)
{
    static const char *const priv[] = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"};
    json_t *keys = json_object_get(jwks, "keys"), *k;
    size_t i;

    cr_assert(json_is_array(keys));
    json_array_foreach(keys, i, k) {
        for (size_t j = 0; j < sizeof(priv) / sizeof(priv[0]); j++)
            cr_expect_null(json_object_get(k, priv[j]), "key %zu has private member %s", i,
                           priv[j]);
        cr_expect_str_eq(json_string_value(json_object_get(k, "use")), "sig");
        cr_expect_not_null(json_object_get(k, "alg"));
        cr_expect_not_null(json_object_get(k, "kid"));
    }
}

static size_t jwks_count(ferry_mint *m, bool all)
{
    json_t *j = NULL;
    size_t n;

    cr_assert_eq(ferry_mint_jwks(m, all, &j), 0);
    n = json_array_size(json_object_get(j, "keys"));
    json_decref(j);
    return n;
}

static bool jwks_has(ferry_mint *m, bool all, const char *kid)
{
    json_t *j = NULL, *k;
    size_t i;
    bool hit = false;

    cr_assert_eq(ferry_mint_jwks(m, all, &j), 0);
    json_array_foreach(json_object_get(j, "keys"), i, k)
        if (strcmp(json_string_value(json_object_get(k, "kid")), kid) == 0)
            hit = true;
    json_decref(j);
    return hit;
}

static char *active_kid(ferry_mint *m)
{
    ferry_jwk *k = ferry_mint_signing_key(m, NULL);
    char *kid;

    cr_assert_not_null(k);
    kid = strdup(ferry_jwk_kid(k));
    ferry_jwk_unref(k);
    return kid;
}

static void write_file(const char *path, const char *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, data, len), (ssize_t)len);
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
}

static bool file_exists(const char *p)
{
    struct stat st;

    return lstat(p, &st) == 0;
}

/* PEM of a private JWK from the RFC vectors. */
static char *rfc_private_pem(const json_t *jwk, size_t *ret_len)
{
    ferry_jwk *k = NULL;
    char *pem = NULL;

    cr_assert_eq(ferry_jwk_from_json(jwk, FERRY_JWK_ALLOW_PRIVATE, &k), 0);
    cr_assert_eq(ferry_jwk_to_pem(k, &pem, ret_len), 0);
    ferry_jwk_unref(k);
    return pem;
}

static char *rfc_text(const char *name)
{
    size_t len;
    char *buf = tu_read_vector(RFC_DIR, name, 1 << 20, &len);

    cr_assert_not_null(buf, "cannot read %s", name);
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
        buf[--len] = '\0';
    return buf;
}

/* ---- E1: header and kid ---------------------------------------------------------------- */

Test(mint, e1_header_is_exactly_alg_kid_typ)
{
    for (size_t a = 0; a < 3; a++) {
        char *dir = make_dir(), *raw = NULL, *tok, *want = NULL;
        ferry_mint *m = open_mint(dir, all_algs[a], 600);
        ferry_mint_request req = base_req();
        ferry_jwk *key = ferry_mint_signing_key(m, NULL);
        char tp[FERRY_THUMBPRINT_LEN + 1];
        json_t *h;

        cr_assert_eq(ferry_jwk_thumbprint(key, tp), 0);
        tok = mint_ok(m, &req, NULL, NULL);
        h = segment_json(tok, 0, &raw);
        cr_assert(asprintf(&want, "{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"at+jwt\"}",
                           ferry_alg_name(all_algs[a]), tp) > 0);
        cr_expect_str_eq(raw, want, "header bytes differ");
        cr_expect_eq(json_object_size(h), 3, "header has %zu members", json_object_size(h));
        cr_expect_str_eq(json_string_value(json_object_get(h, "kid")), tp);
        cr_expect_str_eq(ferry_jwk_kid(key), tp);
        free(want);
        free(raw);
        free(tok);
        json_decref(h);
        ferry_jwk_unref(key);
        ferry_mint_free(m);
        rm_dir(dir);
    }
}

/* RFC 8037 A.1 (Ed25519) and the RFC 7517 A.2 RSA key (whose public half is the RFC 7638 §3.1
 * example) imported as PEM: kid is exactly the RFC's thumbprint, in the token header, the
 * JWKS and keys.json. */
Test(mint, e1_kid_is_rfc7638_thumbprint_of_rfc_keys)
{
    json_t *ed, *set, *rsa = NULL, *k;
    char *want_ed, *want_rsa, *dir = make_dir(), *pem, *tok, *kid;
    size_t pem_len, i;
    ferry_mint *m = NULL;
    char err[512] = "";
    json_t *h;

    TU_REQUIRE_VECTORS();
    want_ed = rfc_text("rfc8037_A.3.thp");
    want_rsa = rfc_text("rfc7638_3.1.thp");
    cr_assert_str_eq(want_ed, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    cr_assert_str_eq(want_rsa, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    ed = tu_load_vector_json(RFC_DIR, "rfc8037_A.1.jwk");
    set = tu_load_vector_json(RFC_DIR, "rfc7517_A.2.jwkset");
    cr_assert(ed && set);
    json_array_foreach(json_object_get(set, "keys"), i, k)
        if (strcmp(json_string_value(json_object_get(k, "kty")), "RSA") == 0)
            rsa = k;
    cr_assert_not_null(rsa);

    cr_assert_eq(open_mint_r(dir, FERRY_ALG_UNKNOWN, 600, FERRY_MINT_NO_GENERATE, &m, err,
                             sizeof(err)), 0, "%s", err);
    pem = rfc_private_pem(ed, &pem_len);
    cr_assert_eq(ferry_mint_import_pem(m, pem, pem_len, FERRY_ALG_UNKNOWN, err, sizeof(err)), 0,
                 "%s", err);
    ferry_jwk_pem_free(pem, pem_len);
    kid = active_kid(m);
    cr_expect_str_eq(kid, want_ed);
    free(kid);
    {
        ferry_mint_request req = base_req();
        tok = mint_ok(m, &req, NULL, NULL);
        h = segment_json(tok, 0, NULL);
        cr_expect_str_eq(json_string_value(json_object_get(h, "kid")), want_ed);
        cr_expect_str_eq(json_string_value(json_object_get(h, "alg")), "EdDSA");
        json_decref(h);
        free(tok);
    }

    pem = rfc_private_pem(rsa, &pem_len);
    cr_assert_eq(ferry_mint_import_pem(m, pem, pem_len, FERRY_ALG_RS256, err, sizeof(err)), 0,
                 "%s", err);
    ferry_jwk_pem_free(pem, pem_len);
    kid = active_kid(m);
    cr_expect_str_eq(kid, want_rsa);
    free(kid);
    cr_expect(jwks_has(m, false, want_rsa));
    cr_expect(jwks_has(m, false, want_ed), "the retired key is still published");
    ferry_mint_free(m);

    /* keys.json, re-read by a fresh open, agrees (its kids are re-checked on load). */
    m = open_mint(dir, FERRY_ALG_ES256, 600);
    kid = active_kid(m);
    cr_expect_str_eq(kid, want_rsa);
    free(kid);
    ferry_mint_free(m);
    free(want_ed);
    free(want_rsa);
    json_decref(ed);
    json_decref(set);
    rm_dir(dir);
}

/* ---- E2: round trip through ferry's verifier -------------------------------------------- */

Test(mint, e2_round_trip_all_algs_with_ferry_verifier)
{
    for (size_t a = 0; a < 3; a++) {
        static const char *const auds[] = {AUD, "vault"};
        char *dir = make_dir(), *tok, jti[FERRY_MINT_JTI_LEN + 1];
        ferry_mint *m = open_mint(dir, all_algs[a], 900);
        ferry_mint_request req = base_req();
        ferry_identity *id = NULL;
        json_t *act = json_pack("{s:s, s:s, s:{s:s}}", "sub", "ferryd", "iss", ISS, "act",
                                "sub", "ci-runner");
        int64_t exp;
        ferry_reason why;

        req.audience = auds;
        req.n_audience = 2;
        req.act = act;
        test_now = T0;
        tok = mint_ok(m, &req, jti, &exp);
        why = verify_at(m, tok, T0 + 10, 900, &id);
        cr_assert_eq(why, FERRY_REASON_OK, "%s: %s", ferry_alg_name(all_algs[a]),
                     ferry_reason_name(why));
        cr_expect_str_eq(id->issuer, ISS);
        cr_expect_str_eq(id->subject, req.subject);
        cr_expect_str_eq(id->jti, jti);
        cr_expect_eq(id->exp, exp);
        cr_expect_eq(id->alg, all_algs[a]);
        cr_expect_eq(json_array_size(id->audience), 2);
        cr_expect_str_eq(json_string_value(json_object_get(id->claims, "client_id")),
                         "ferry-credential");
        cr_expect_str_eq(json_string_value(json_object_get(id->claims, "scope")),
                         "s3:read secrets:wandb");
        cr_expect_str_eq(json_string_value(json_object_get(id->claims, "src_iss")),
                         req.src_iss);
        cr_expect_str_eq(json_string_value(json_object_get(id->claims, "src_sub")),
                         req.src_sub);
        cr_expect(json_equal(json_object_get(id->claims, "act"), act), "act changed");
        ferry_identity_free(id);
        /* A flipped payload byte breaks it. */
        {
            char *dot = strchr(tok, '.') + 5;
            *dot = *dot == 'A' ? 'B' : 'A';
            cr_expect_neq(verify_at(m, tok, T0 + 10, 900, NULL), FERRY_REASON_OK);
        }
        json_decref(act);
        free(tok);
        ferry_mint_free(m);
        rm_dir(dir);
    }
}

/* Strings that need escaping come out exactly as given. */
Test(mint, e2_claims_escaping_round_trips)
{
    static const char *const auds[] = {"aud \"quoted\"", "back\\slash", "caf\xc3\xa9"};
    char *dir = make_dir(), *tok;
    ferry_mint *m = open_mint(dir, FERRY_ALG_ES256, 600);
    ferry_mint_request req = base_req();
    json_t *claims;

    req.subject = "user \"x\" \\ \xf0\x9f\x9a\x80 </script>";
    req.audience = auds;
    req.n_audience = 3;
    req.scope = NULL;
    tok = mint_ok(m, &req, NULL, NULL);
    claims = segment_json(tok, 1, NULL);
    cr_expect_str_eq(json_string_value(json_object_get(claims, "sub")), req.subject);
    for (size_t i = 0; i < 3; i++)
        cr_expect_str_eq(json_string_value(json_array_get(json_object_get(claims, "aud"), i)),
                         auds[i]);
    cr_expect_null(json_object_get(claims, "scope"), "no scope requested, none written");
    cr_expect_null(json_object_get(claims, "act"));
    json_decref(claims);
    free(tok);
    ferry_mint_free(m);
    rm_dir(dir);
}

/* ---- E6: lifetime and jti --------------------------------------------------------------- */

Test(mint, e6_lifetime_capped_and_clock_injected)
{
    char *dir = make_dir(), *tok;
    ferry_mint *m = open_mint(dir, FERRY_ALG_ES256, 600);
    ferry_mint_request req = base_req();
    json_t *c;
    int64_t exp;

    test_now = T0 + 12345;
    req.ttl = 100000; /* more than max_ttl: capped */
    tok = mint_ok(m, &req, NULL, &exp);
    c = segment_json(tok, 1, NULL);
    cr_expect_eq(json_integer_value(json_object_get(c, "iat")), T0 + 12345);
    cr_expect_eq(json_integer_value(json_object_get(c, "nbf")), T0 + 12345);
    cr_expect_eq(json_integer_value(json_object_get(c, "exp")), T0 + 12345 + 600);
    cr_expect_eq(exp, T0 + 12345 + 600);
    json_decref(c);
    free(tok);

    req.ttl = 42;
    tok = mint_ok(m, &req, NULL, &exp);
    c = segment_json(tok, 1, NULL);
    cr_expect_eq(json_integer_value(json_object_get(c, "exp")) -
                     json_integer_value(json_object_get(c, "iat")), 42);
    json_decref(c);
    free(tok);
    /* Verifier's max_lifetime equal to max_ttl accepts; one second less refuses. */
    req.ttl = 600;
    tok = mint_ok(m, &req, NULL, NULL);
    cr_expect_eq(verify_at(m, tok, T0 + 12346, 600, NULL), FERRY_REASON_OK);
    cr_expect_eq(verify_at(m, tok, T0 + 12346, 599, NULL), FERRY_REASON_LIFETIME_TOO_LONG);
    free(tok);
    test_now = T0;
    ferry_mint_free(m);
    rm_dir(dir);
}

static int cmp_jti(const void *a, const void *b)
{
    return memcmp(a, b, FERRY_MINT_JTI_LEN + 1);
}

Test(mint, e6_jti_128_bit_unique_over_100000, .timeout = 120)
{
    enum { N = 100000 };
    char *dir = make_dir(), (*jtis)[FERRY_MINT_JTI_LEN + 1] = calloc(N, FERRY_MINT_JTI_LEN + 1);
    ferry_mint *m = open_mint(dir, FERRY_ALG_ES256, 600);
    ferry_mint_request req = base_req();

    cr_assert_not_null(jtis);
    for (size_t i = 0; i < N; i++) {
        char *tok = NULL;
        cr_assert_eq(ferry_mint_token(m, &req, &tok, jtis[i], NULL), 0);
        if (i % 10000 == 0) {
            json_t *c = segment_json(tok, 1, NULL);
            unsigned char raw[32];
            size_t rl;
            cr_expect_str_eq(json_string_value(json_object_get(c, "jti")), jtis[i]);
            cr_expect_eq(strlen(jtis[i]), FERRY_MINT_JTI_LEN);
            cr_expect_eq(ferry_b64url_decode(jtis[i], FERRY_MINT_JTI_LEN, raw, &rl), 0);
            cr_expect_eq(rl, 16, "jti is not 128 bits");
            json_decref(c);
        }
        free(tok);
    }
    qsort(jtis, N, sizeof(jtis[0]), cmp_jti);
    for (size_t i = 1; i < N; i++)
        cr_assert_neq(cmp_jti(jtis[i - 1], jtis[i]), 0, "jti repeated: %s", jtis[i]);
    free(jtis);
    ferry_mint_free(m);
    rm_dir(dir);
}

/* The jti's random bytes come from a per-thread pool (32 jtis per RAND_bytes call). A child
 * of fork() must not hand out the bytes its parent still holds: the child's jtis must be none
 * of the parent's next ones (more than a pool's worth), nor repeat among themselves. */
Test(mint, jti_after_fork_is_not_the_parents_next)
{
    enum { PARENT_NEXT = 40, CHILD_N = 3 };
    char *dir = make_dir(), jti[FERRY_MINT_JTI_LEN + 1];
    char parent_next[PARENT_NEXT][FERRY_MINT_JTI_LEN + 1];
    char child[CHILD_N][FERRY_MINT_JTI_LEN + 1];
    ferry_mint *m = open_mint(dir, FERRY_ALG_ES256, 600);
    ferry_mint_request req = base_req();
    int fds[2], status = 0;
    ssize_t got = 0;
    pid_t pid;

    free(mint_ok(m, &req, jti, NULL)); /* this thread's pool is filled now */
    cr_assert_eq(pipe(fds), 0);
    pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        char buf[CHILD_N][FERRY_MINT_JTI_LEN + 1];
        for (int i = 0; i < CHILD_N; i++) {
            char *tok = NULL;
            if (ferry_mint_token(m, &req, &tok, buf[i], NULL) != 0)
                _exit(1);
            free(tok);
        }
        _exit(write(fds[1], buf, sizeof(buf)) == (ssize_t)sizeof(buf) ? 0 : 2);
    }
    close(fds[1]);
    for (int i = 0; i < PARENT_NEXT; i++)
        free(mint_ok(m, &req, parent_next[i], NULL));
    while (got < (ssize_t)sizeof(child)) {
        ssize_t n = read(fds[0], (char *)child + got, sizeof(child) - (size_t)got);
        cr_assert_gt(n, 0, "the child sent %zd of %zu bytes", got, sizeof(child));
        got += n;
    }
    close(fds[0]);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed: %d", status);
    for (int c = 0; c < CHILD_N; c++) {
        cr_assert_eq(strlen(child[c]), FERRY_MINT_JTI_LEN);
        cr_assert_str_neq(child[c], jti);
        for (int p = 0; p < PARENT_NEXT; p++)
            cr_assert_str_neq(child[c], parent_next[p], "child jti %d = parent's next jti %d",
                              c, p);
        for (int o = 0; o < c; o++)
            cr_assert_str_neq(child[c], child[o]);
    }
    ferry_mint_free(m);
    rm_dir(dir);
}

/* Threads draw from their own pools: no jti repeats across threads, and each pool is freed when
 * its thread exits (the sanitizer build fails on a leaked pool). */
enum { JTI_THREADS = 6, JTI_PER_THREAD = 70 };
struct jti_thread {
    ferry_mint *m;
    char jtis[JTI_PER_THREAD][FERRY_MINT_JTI_LEN + 1];
    int r;
};

static void *jti_thread_main(void *arg)
{
    struct jti_thread *t = arg;
    ferry_mint_request req = base_req();

    for (int i = 0; i < JTI_PER_THREAD && t->r == 0; i++) {
        char *tok = NULL;
        t->r = ferry_mint_token(t->m, &req, &tok, t->jtis[i], NULL);
        free(tok);
    }
    return NULL;
}

Test(mint, jti_unique_across_threads_and_pools_freed)
{
    char *dir = make_dir();
    ferry_mint *m = open_mint(dir, FERRY_ALG_ES256, 600);
    struct jti_thread *t = calloc(JTI_THREADS, sizeof(*t));
    pthread_t th[JTI_THREADS];
    char(*all)[FERRY_MINT_JTI_LEN + 1] = calloc(JTI_THREADS * JTI_PER_THREAD, sizeof(*all));
    size_t n = 0;

    cr_assert_not_null(t);
    cr_assert_not_null(all);
    for (int i = 0; i < JTI_THREADS; i++) {
        t[i].m = m;
        cr_assert_eq(pthread_create(&th[i], NULL, jti_thread_main, &t[i]), 0);
    }
    for (int i = 0; i < JTI_THREADS; i++) {
        cr_assert_eq(pthread_join(th[i], NULL), 0);
        cr_assert_eq(t[i].r, 0, "thread %d: %s", i, ferry_strerror(t[i].r));
        for (int j = 0; j < JTI_PER_THREAD; j++) {
            cr_assert_eq(strlen(t[i].jtis[j]), FERRY_MINT_JTI_LEN);
            memcpy(all[n++], t[i].jtis[j], FERRY_MINT_JTI_LEN + 1);
        }
    }
    qsort(all, n, sizeof(all[0]), cmp_jti);
    for (size_t i = 1; i < n; i++)
        cr_assert_neq(cmp_jti(all[i - 1], all[i]), 0, "jti repeated: %s", all[i]);
    free(all);
    free(t);
    ferry_mint_free(m);
    rm_dir(dir);
}

/* ---- E8: public members only -------------------------------------------------------------- */

Test(mint, e8_jwks_and_keys_json_hold_no_private_members)
{
    char *dir = make_dir(), *meta, *p;
    ferry_mint *m = open_mint(dir, FERRY_ALG_RS256, 600);
    char err[512];
    json_t *j = NULL, *disc = NULL;
    ferry_jwks *parsed = NULL;
    size_t skipped = 99, len;

    cr_assert_eq(ferry_mint_rotate(m, FERRY_ALG_ES256, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_mint_rotate(m, FERRY_ALG_EDDSA, err, sizeof(err)), 0, "%s", err);
    for (int all = 0; all < 2; all++) {
        char *text;
        cr_assert_eq(ferry_mint_jwks(m, all, &j), 0);
        assert_public_only(j);
        cr_expect_eq(json_array_size(json_object_get(j, "keys")), 3);
        /* Parsed back as a verifier would (served bytes): every key usable. */
        text = json_dumps(j, JSON_COMPACT);
        cr_assert_eq(ferry_jwks_from_buffer(text, strlen(text), &parsed, &skipped), 0);
        cr_expect_eq(skipped, 0);
        cr_expect_eq(ferry_jwks_count(parsed), 3);
        for (size_t i = 0; i < 3; i++)
            cr_expect(!ferry_jwk_is_private(ferry_jwks_get(parsed, i)));
        ferry_jwks_unref(parsed);
        free(text);
        json_decref(j);
    }
    p = path_in(dir, "keys/keys.json");
    meta = tu_read_file(p, 1 << 20, &len);
    cr_assert_not_null(meta);
    cr_expect_null(strstr(meta, "\"d\""), "keys.json holds a \"d\" member");
    cr_expect_null(strstr(meta, "\"qi\""));
    cr_expect_null(strstr(meta, "PRIVATE"));
    free(meta);
    free(p);
    cr_assert_eq(ferry_mint_discovery(m, &disc), 0);
    cr_expect_str_eq(json_string_value(json_object_get(disc, "issuer")), ISS);
    cr_expect_str_eq(json_string_value(json_object_get(disc, "jwks_uri")),
                     ISS "/.well-known/jwks.json");
    cr_expect_str_eq(json_string_value(json_object_get(disc, "token_endpoint")),
                     ISS "/v1/token");
    cr_expect_str_eq(json_string_value(json_array_get(json_object_get(disc,
                                                                      "grant_types_supported"),
                                                      0)),
                     "urn:ietf:params:oauth:grant-type:token-exchange");
    cr_expect_eq(json_array_size(json_object_get(disc, "id_token_signing_alg_values_supported")),
                 3);
    cr_expect(json_is_array(json_object_get(disc, "response_types_supported")));
    cr_expect(json_is_array(json_object_get(disc, "subject_types_supported")));
    json_decref(disc);
    ferry_mint_free(m);
    rm_dir(dir);
}

/* ---- rotation ------------------------------------------------------------------------------- */

Test(mint, rotation_overlap_then_expiry_and_archive)
{
    char *dir = make_dir(), *old_kid, *new_kid, *old_tok, *new_tok, *old_pem, err[512];
    ferry_mint *m;
    ferry_mint_request req = base_req();
    ferry_mint_key_info *info = NULL;
    ferry_jwk *pub = NULL;
    ferry_jws *jws = NULL;
    ferry_alg alg;
    size_t n;
    json_t *h;

    test_now = T0;
    m = open_mint(dir, FERRY_ALG_ES256, 600);
    old_kid = active_kid(m);
    old_pem = pem_path(dir, old_kid);
    req.ttl = 600;
    test_now = T0 + 100;
    old_tok = mint_ok(m, &req, NULL, NULL); /* exp = T0 + 700 */

    test_now = T0 + 200; /* rotate: retired_at = T0 + 200, published until T0 + 800 */
    cr_assert_eq(ferry_mint_rotate(m, FERRY_ALG_UNKNOWN, err, sizeof(err)), 0, "%s", err);
    new_kid = active_kid(m);
    cr_expect_str_neq(old_kid, new_kid);
    new_tok = mint_ok(m, &req, NULL, NULL);
    h = segment_json(new_tok, 0, NULL);
    cr_expect_str_eq(json_string_value(json_object_get(h, "kid")), new_kid,
                     "the new key signs after rotate");
    json_decref(h);
    cr_expect(file_exists(old_pem), "retired private key kept during the overlap");

    /* During the overlap both keys are published and both tokens verify. */
    test_now = T0 + 699;
    cr_expect_eq(jwks_count(m, false), 2);
    cr_expect_eq(verify_at(m, old_tok, T0 + 699, 600, NULL), FERRY_REASON_OK);
    cr_expect_eq(verify_at(m, new_tok, T0 + 699, 600, NULL), FERRY_REASON_OK);
    test_now = T0 + 799;
    cr_expect(jwks_has(m, false, old_kid), "retired key left before retired_at + max_ttl");

    /* At retired_at + max_ttl it leaves the published set, and no longer verifies. */
    test_now = T0 + 800;
    cr_expect(!jwks_has(m, false, old_kid), "retired key still published after overlap");
    cr_expect(jwks_has(m, false, new_kid));
    cr_expect_eq(verify_at(m, old_tok, T0 + 650, 600, NULL), FERRY_REASON_UNKNOWN_KID);
    cr_assert_eq(ferry_mint_prune(m, err, sizeof(err)), 0, "%s", err);
    cr_expect(!file_exists(old_pem), "expired private key not removed");

    /* The archive keeps its public half: the old token's signature still checks against it. */
    cr_expect(jwks_has(m, true, old_kid));
    cr_assert_eq(ferry_mint_public_key(m, old_kid, &pub, &alg), 0);
    cr_expect_eq(alg, FERRY_ALG_ES256);
    cr_expect(!ferry_jwk_is_private(pub));
    cr_assert_eq(ferry_jws_parse(old_tok, strlen(old_tok), &jws), 0);
    cr_expect_eq(ferry_jws_verify(jws, pub), 0);
    cr_assert_eq(ferry_mint_list_keys(m, &info, &n), 0);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(info[0].kid, old_kid);
    cr_expect_str_eq(info[0].state, "expired");
    cr_expect_eq(info[0].retired_at, T0 + 200);
    cr_expect_eq(info[0].publish_until, T0 + 800);
    cr_expect_str_eq(info[1].state, "active");
    cr_expect_eq(ferry_mint_public_key(m, "nope", &pub, NULL), -FERRY_ENOKEY);
    free(info);
    ferry_jws_free(jws);
    ferry_jwk_unref(pub);
    ferry_mint_free(m);

    /* Persisted: a fresh open sees the same state. */
    m = open_mint(dir, FERRY_ALG_ES256, 600);
    free(old_kid);
    old_kid = active_kid(m);
    cr_expect_str_eq(old_kid, new_kid);
    cr_expect_eq(jwks_count(m, true), 2);
    cr_expect_eq(jwks_count(m, false), 1);
    ferry_mint_free(m);
    test_now = T0;
    free(old_kid);
    free(new_kid);
    free(old_tok);
    free(new_tok);
    free(old_pem);
    rm_dir(dir);
}

/* A second process (another ferry_mint on the same directory) rotates: the first keeps
 * signing with what it loaded until it reloads, and the rotation is never lost. */
Test(mint, rotation_by_another_process_is_seen_after_reload)
{
    char *dir = make_dir(), *k1, *k2, *k3, err[512];
    ferry_mint *a = open_mint(dir, FERRY_ALG_ES256, 600), *b = open_mint(dir, FERRY_ALG_ES256, 600);

    k1 = active_kid(a);
    cr_assert_eq(ferry_mint_rotate(b, FERRY_ALG_EDDSA, err, sizeof(err)), 0, "%s", err);
    k2 = active_kid(b);
    cr_expect_str_neq(k1, k2);
    k3 = active_kid(a);
    cr_expect_str_eq(k3, k1, "a switched keys without reloading");
    free(k3);
    cr_assert_eq(ferry_mint_reload(a, err, sizeof(err)), 0, "%s", err);
    k3 = active_kid(a);
    cr_expect_str_eq(k3, k2);
    free(k3);
    /* a rotates on top of b's rotation: three keys, none lost. */
    cr_assert_eq(ferry_mint_rotate(a, FERRY_ALG_UNKNOWN, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(jwks_count(a, true), 3);
    free(k1);
    free(k2);
    ferry_mint_free(a);
    ferry_mint_free(b);
    rm_dir(dir);
}

struct mt {
    ferry_mint *m;
    char *tokens[300];
    int failures;
};

static void *mint_thread(void *arg)
{
    struct mt *t = arg;
    ferry_mint_request req = base_req();

    for (size_t i = 0; i < 300; i++)
        if (ferry_mint_token(t->m, &req, &t->tokens[i], NULL, NULL) < 0)
            t->failures++;
    return NULL;
}

Test(mint, concurrent_mints_during_rotation, .timeout = 120)
{
    char *dir = make_dir(), err[512];
    ferry_mint *m = open_mint(dir, FERRY_ALG_ES256, 600);
    struct mt t[4];
    pthread_t th[4];
    json_t *all = NULL;
    ferry_jwks *set = NULL;

    for (int i = 0; i < 4; i++) {
        memset(&t[i], 0, sizeof(t[i]));
        t[i].m = m;
        cr_assert_eq(pthread_create(&th[i], NULL, mint_thread, &t[i]), 0);
    }
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ferry_mint_rotate(m, i == 1 ? FERRY_ALG_EDDSA : FERRY_ALG_ES256, err,
                                       sizeof(err)), 0, "%s", err);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(ferry_mint_jwks(m, true, &all), 0);
    cr_assert_eq(ferry_jwks_from_json(all, &set, NULL), 0);
    cr_expect_eq(ferry_jwks_count(set), 4);
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(t[i].failures, 0);
        for (size_t j = 0; j < 300; j++) {
            ferry_jws *jws = NULL;
            if (!t[i].tokens[j])
                continue;
            cr_assert_eq(ferry_jws_parse(t[i].tokens[j], strlen(t[i].tokens[j]), &jws), 0);
            cr_expect_eq(ferry_jws_verify(jws, ferry_jwks_find(set, jws->kid)), 0);
            ferry_jws_free(jws);
            free(t[i].tokens[j]);
        }
    }
    ferry_jwks_unref(set);
    json_decref(all);
    ferry_mint_free(m);
    rm_dir(dir);
}

/* ---- files on disk and hostile state directories ----------------------------------------- */

static mode_t mode_of(const char *p)
{
    struct stat st;

    cr_assert_eq(lstat(p, &st), 0, "%s", p);
    return st.st_mode & 07777;
}

Test(mint, files_are_0600_and_dirs_0700)
{
    char *dir = make_dir(), *state, *p, *kid;
    ferry_mint *m;

    state = path_in(dir, "state"); /* created by open */
    m = open_mint(state, FERRY_ALG_ES256, 600);
    kid = active_kid(m);
    cr_expect_eq(mode_of(state), 0700);
    p = path_in(state, "keys");
    cr_expect_eq(mode_of(p), 0700);
    free(p);
    p = pem_path(state, kid);
    cr_expect_eq(mode_of(p), 0600);
    free(p);
    p = path_in(state, "keys/keys.json");
    cr_expect_eq(mode_of(p), 0600);
    free(p);
    p = path_in(state, "keys/keys.json.tmp");
    cr_expect(!file_exists(p), "temporary file left behind");
    free(p);
    free(kid);
    ferry_mint_free(m);
    free(state);
    rm_dir(dir);
}

/* Open must fail with the given code and a message containing `needle`; nothing is created
 * or signed. */
static void expect_open_fails(const char *dir, int want, const char *needle)
{
    ferry_mint *m = NULL;
    char err[512] = "";
    int r = open_mint_r(dir, FERRY_ALG_ES256, 600, 0, &m, err, sizeof(err));

    cr_expect_eq(r, want, "open: got %d (%s), want %d; message: %s", r, ferry_strerror(r), want,
                 err);
    cr_expect_null(m);
    cr_expect(strstr(err, needle) != NULL, "message \"%s\" does not mention \"%s\"", err,
              needle);
    ferry_mint_free(m);
}

Test(mint, hostile_modes_owners_and_symlinks_refused)
{
    char *dir = make_dir(), *kid, *keys, *pem, *meta, *link;
    ferry_mint *m = open_mint(dir, FERRY_ALG_ES256, 600);

    kid = active_kid(m);
    ferry_mint_free(m);
    keys = path_in(dir, "keys");
    pem = pem_path(dir, kid);
    meta = path_in(dir, "keys/keys.json");

    cr_assert_eq(chmod(dir, 0777), 0);
    expect_open_fails(dir, -FERRY_ECONFIG, "world-writable");
    cr_assert_eq(chmod(dir, 0700), 0);
    cr_assert_eq(chmod(keys, 0770), 0);
    expect_open_fails(dir, -FERRY_ECONFIG, "keys/");
    cr_assert_eq(chmod(keys, 0700), 0);
    cr_assert_eq(chmod(pem, 0644), 0);
    expect_open_fails(dir, -FERRY_ECONFIG, "private key accessible");
    cr_assert_eq(chmod(pem, 0640), 0);
    expect_open_fails(dir, -FERRY_ECONFIG, "chmod 0600");
    cr_assert_eq(chmod(pem, 0600), 0);
    cr_assert_eq(chmod(meta, 0666), 0);
    expect_open_fails(dir, -FERRY_ECONFIG, "keys.json");
    cr_assert_eq(chmod(meta, 0600), 0);
    if (geteuid() == 0) {
        cr_assert_eq(chown(pem, 65534, 65534), 0);
        expect_open_fails(dir, -FERRY_ECONFIG, "owned by uid 65534");
        cr_assert_eq(chown(pem, 0, 0), 0);
    }
    /* keys.json as a symlink (to a copy of itself) is refused. */
    link = path_in(dir, "elsewhere.json");
    cr_assert_eq(rename(meta, link), 0);
    cr_assert_eq(symlink(link, meta), 0);
    expect_open_fails(dir, -FERRY_ECONFIG, "symlink");
    cr_assert_eq(unlink(meta), 0);
    cr_assert_eq(rename(link, meta), 0);
    /* The private key missing. */
    cr_assert_eq(rename(pem, link), 0);
    expect_open_fails(dir, -FERRY_ECONFIG, "missing");
    cr_assert_eq(rename(link, pem), 0);
    /* Everything restored: opens again. */
    m = open_mint(dir, FERRY_ALG_ES256, 600);
    ferry_mint_free(m);
    free(link);
    free(kid);
    free(keys);
    free(pem);
    free(meta);
    rm_dir(dir);
}

Test(mint, keys_dir_symlink_refused)
{
    char *dir = make_dir(), *other = make_dir(), *keys = path_in(dir, "keys");

    cr_assert_eq(symlink(other, keys), 0);
    expect_open_fails(dir, -FERRY_ECONFIG, "keys");
    free(keys);
    rm_dir(dir);
    rm_dir(other);
}

/* keys.json variants built from a valid one. */
Test(mint, hostile_keys_json_refused)
{
    char *dir = make_dir(), *meta_path, *orig, *kid;
    ferry_mint *m = open_mint(dir, FERRY_ALG_ES256, 600);
    size_t len;
    json_t *good, *bad, *k0;
    struct {
        const char *what, *needle;
        int want;
    } cases[] = {
        {"not json", "not valid JSON", -FERRY_EMALFORMED},
        {"unknown top member", "unknown member", -FERRY_EMALFORMED},
        {"unknown key member", "unknown member", -FERRY_EMALFORMED},
        {"version 2", "version", -FERRY_EMALFORMED},
        {"kid not thumbprint", "kid", -FERRY_EMALFORMED},
        {"private member in jwk", "jwk refused", -FERRY_EMALFORMED},
        {"alg HS256", "alg", -FERRY_EMALFORMED},
        {"two actives", "active keys", -FERRY_EMALFORMED},
        {"duplicate kid", "twice", -FERRY_EMALFORMED},
        {"active with retired_at", "retired_at", -FERRY_EMALFORMED},
        {"state bogus", "state", -FERRY_EMALFORMED},
        {"jwk of another key", "thumbprint", -FERRY_EMALFORMED},
    };

    kid = active_kid(m);
    ferry_mint_free(m);
    meta_path = path_in(dir, "keys/keys.json");
    orig = tu_read_file(meta_path, 1 << 20, &len);
    cr_assert_not_null(orig);
    cr_assert_eq(ferry_json_parse(orig, len, 1 << 20, 8, &good, NULL, 0), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *text;
        bad = json_deep_copy(good);
        k0 = json_array_get(json_object_get(bad, "keys"), 0);
        switch (i) {
        case 0: break;
        case 1: json_object_set_new(bad, "extra", json_true()); break;
        case 2: json_object_set_new(k0, "comment", json_string("x")); break;
        case 3: json_object_set_new(bad, "version", json_integer(2)); break;
        case 4: json_object_set_new(k0, "kid", json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")); break;
        case 5: json_object_set_new(json_object_get(k0, "jwk"), "d",
                                    json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")); break;
        case 6: json_object_set_new(k0, "alg", json_string("HS256")); break;
        case 7:
        case 8: {
            json_t *k1 = json_deep_copy(k0);
            if (i == 7) {
                /* Another key, also active. */
                ferry_jwk *g = NULL;
                json_t *pj = NULL;
                char tp[FERRY_THUMBPRINT_LEN + 1];
                cr_assert_eq(ferry_jwk_generate(FERRY_ALG_ES256, &g), 0);
                cr_assert_eq(ferry_jwk_to_public_json(g, &pj), 0);
                cr_assert_eq(ferry_jwk_thumbprint(g, tp), 0);
                json_object_set_new(k1, "jwk", pj);
                json_object_set_new(k1, "kid", json_string(tp));
                ferry_jwk_unref(g);
            }
            json_array_append_new(json_object_get(bad, "keys"), k1);
            break;
        }
        case 9: json_object_set_new(k0, "retired_at", json_integer(T0)); break;
        case 10: json_object_set_new(k0, "state", json_string("paused")); break;
        case 11: {
            ferry_jwk *g = NULL;
            json_t *pj = NULL;
            cr_assert_eq(ferry_jwk_generate(FERRY_ALG_ES256, &g), 0);
            cr_assert_eq(ferry_jwk_to_public_json(g, &pj), 0);
            json_object_del(pj, "kid");
            json_object_set_new(k0, "jwk", pj);
            ferry_jwk_unref(g);
            break;
        }
        }
        text = i == 0 ? strdup("{\"version\":1,\"keys\":[") : json_dumps(bad, JSON_COMPACT);
        write_file(meta_path, text, strlen(text), 0600);
        expect_open_fails(dir, cases[i].want, cases[i].needle);
        free(text);
        json_decref(bad);
    }
    /* Over the size limit: refused before parsing. */
    {
        size_t big = FERRY_MINT_META_MAX + 1;
        char *text = malloc(big);
        memset(text, ' ', big);
        text[0] = '{';
        text[big - 1] = '}';
        write_file(meta_path, text, big, 0600);
        expect_open_fails(dir, -FERRY_ETOOBIG, "larger than");
        free(text);
    }
    write_file(meta_path, orig, len, 0600);
    m = open_mint(dir, FERRY_ALG_ES256, 600);
    {
        char *k = active_kid(m);
        cr_expect_str_eq(k, kid);
        free(k);
    }
    ferry_mint_free(m);
    json_decref(good);
    free(orig);
    free(kid);
    free(meta_path);
    rm_dir(dir);
}

/* A private key file that is not the key keys.json names. */
Test(mint, private_key_swapped_refused)
{
    char *dir = make_dir(), *kid, *pem_file, *pem = NULL;
    ferry_mint *m = open_mint(dir, FERRY_ALG_ES256, 600);
    ferry_jwk *other = NULL;
    size_t len;

    kid = active_kid(m);
    ferry_mint_free(m);
    pem_file = pem_path(dir, kid);
    cr_assert_eq(ferry_jwk_generate(FERRY_ALG_ES256, &other), 0);
    cr_assert_eq(ferry_jwk_to_pem(other, &pem, &len), 0);
    write_file(pem_file, pem, len, 0600);
    expect_open_fails(dir, -FERRY_EMALFORMED, "does not match");
    write_file(pem_file, "garbage", 7, 0600);
    expect_open_fails(dir, -FERRY_EMALFORMED, "not a usable private key");
    ferry_jwk_pem_free(pem, len);
    ferry_jwk_unref(other);
    free(pem_file);
    free(kid);
    rm_dir(dir);
}

/* ---- PEM import -------------------------------------------------------------------------- */

Test(mint, import_pem_each_alg_and_refusals)
{
    char *dir = make_dir(), err[512];
    ferry_mint *m = NULL;
    ferry_mint_request req = base_req();

    cr_assert_eq(open_mint_r(dir, FERRY_ALG_ES256, 600, FERRY_MINT_NO_GENERATE, &m, err,
                             sizeof(err)), 0, "%s", err);
    {
        char *tok = NULL;
        cr_expect_eq(ferry_mint_token(m, &req, &tok, NULL, NULL), -FERRY_ENOKEY);
        cr_expect_null(tok);
        cr_expect_null(ferry_mint_signing_key(m, NULL));
        cr_expect_eq(jwks_count(m, true), 0);
    }
    for (size_t a = 0; a < 3; a++) {
        ferry_jwk *k = NULL;
        char *pem = NULL, *tok, *kid;
        size_t len;
        ferry_alg salg;
        ferry_jwk *sk;

        cr_assert_eq(ferry_jwk_generate(all_algs[a], &k), 0);
        cr_assert_eq(ferry_jwk_to_pem(k, &pem, &len), 0);
        cr_assert_eq(ferry_mint_import_pem(m, pem, len, FERRY_ALG_UNKNOWN, err, sizeof(err)), 0,
                     "%s", err);
        kid = active_kid(m);
        cr_expect_str_eq(kid, ferry_jwk_kid(k));
        sk = ferry_mint_signing_key(m, &salg);
        cr_expect_eq(salg, all_algs[a]);
        ferry_jwk_unref(sk);
        tok = mint_ok(m, &req, NULL, NULL);
        cr_expect_eq(verify_at(m, tok, T0 + 1, 600, NULL), FERRY_REASON_OK);
        /* The same key again: refused, it was used before. */
        cr_expect_eq(ferry_mint_import_pem(m, pem, len, FERRY_ALG_UNKNOWN, err, sizeof(err)),
                     -FERRY_EDUPLICATE);
        free(tok);
        free(kid);
        ferry_jwk_pem_free(pem, len);
        ferry_jwk_unref(k);
    }
    {
        ferry_jwk *k = NULL, *pub = NULL;
        char *pem = NULL;
        size_t len;
        json_t *pj = NULL;

        /* Alg that does not fit the key. */
        cr_assert_eq(ferry_jwk_generate(FERRY_ALG_ES256, &k), 0);
        cr_assert_eq(ferry_jwk_to_pem(k, &pem, &len), 0);
        cr_expect_eq(ferry_mint_import_pem(m, pem, len, FERRY_ALG_RS256, err, sizeof(err)),
                     -FERRY_EKEYMISMATCH);
        ferry_jwk_pem_free(pem, len);
        /* A public key cannot sign. */
        cr_assert_eq(ferry_jwk_to_public_json(k, &pj), 0);
        cr_assert_eq(ferry_jwk_from_json(pj, 0, &pub), 0);
        cr_assert_eq(ferry_jwk_to_pem(pub, &pem, &len), 0);
        cr_expect_eq(ferry_mint_import_pem(m, pem, len, FERRY_ALG_UNKNOWN, err, sizeof(err)),
                     -FERRY_ENOKEY);
        ferry_jwk_pem_free(pem, len);
        ferry_jwk_unref(k);
        ferry_jwk_unref(pub);
        json_decref(pj);
        /* P-384 is not one of ferry's minting algs. */
        cr_assert_eq(ferry_jwk_generate(FERRY_ALG_ES384, &k), 0);
        cr_assert_eq(ferry_jwk_to_pem(k, &pem, &len), 0);
        cr_expect_eq(ferry_mint_import_pem(m, pem, len, FERRY_ALG_UNKNOWN, err, sizeof(err)),
                     -FERRY_EUNSUPPORTED);
        ferry_jwk_pem_free(pem, len);
        ferry_jwk_unref(k);
        cr_expect_lt(ferry_mint_import_pem(m, "-----BEGIN", 10, FERRY_ALG_UNKNOWN, err,
                                           sizeof(err)), 0);
    }
    cr_expect_eq(jwks_count(m, true), 3, "refused imports added keys");
    ferry_mint_free(m);
    rm_dir(dir);
}

/* ---- refused requests: nothing signed ------------------------------------------------------ */

Test(mint, bad_requests_refused_nothing_signed)
{
    char *dir = make_dir(), long_str[FERRY_MINT_SUBJECT_MAX + 2];
    ferry_mint *m = open_mint(dir, FERRY_ALG_ES256, 600);
    static const char *const empty_aud[] = {""};
    static const char *const bad_aud[] = {AUD, "a\x01"};
    const char *many_aud[FERRY_MINT_MAX_AUDIENCES + 1];
    json_t *act_nosub = json_pack("{s:s}", "iss", ISS);
    json_t *act_extra = json_pack("{s:s, s:i}", "sub", "x", "exp", 1);
    json_t *act_num = json_pack("{s:i}", "sub", 1);
    json_t *act_deep = json_pack("{s:s}", "sub", "l5"), *act_arr = json_array();
    struct {
        const char *what;
        ferry_mint_request req;
        int want;
    } cases[20];
    size_t n = 0;

    memset(long_str, 'a', sizeof(long_str) - 1);
    long_str[sizeof(long_str) - 1] = '\0';
    for (size_t i = 0; i <= FERRY_MINT_MAX_AUDIENCES; i++)
        many_aud[i] = AUD;
    for (int d = 4; d >= 1; d--)
        act_deep = json_pack("{s:s, s:o}", "sub", "lvl", "act", act_deep);
#define CASE(w, field, value, code)                                                            \
    do {                                                                                       \
        cases[n].what = w;                                                                     \
        cases[n].req = base_req();                                                             \
        cases[n].req.field = value;                                                            \
        cases[n].want = code;                                                                  \
        n++;                                                                                   \
    } while (0)
    CASE("empty sub", subject, "", -EINVAL);
    CASE("NULL sub", subject, NULL, -EINVAL);
    CASE("ttl 0", ttl, 0, -EINVAL);
    CASE("ttl -5", ttl, -5, -EINVAL);
    CASE("no audience", n_audience, 0, -EINVAL);
    CASE("empty audience", audience, empty_aud, -EINVAL);
    CASE("invalid UTF-8", subject, "caf\xc3\x28", -EINVAL);
    CASE("overlong UTF-8", subject, "\xc0\xaf", -EINVAL);
    CASE("control char", client_id, "a\nb", -EINVAL);
    CASE("DEL", subject, "a\x7f", -EINVAL);
    CASE("C1 control", subject, "a\xc2\x85", -EINVAL);
    CASE("UTF-8 surrogate", subject, "\xed\xa0\x80", -EINVAL);
    CASE("above U+10FFFF", subject, "\xf4\x90\x80\x80", -EINVAL);
    CASE("too long", src_sub, long_str, -FERRY_ETOOBIG);
    CASE("bad scope", scope, "a  b", -EINVAL);
    CASE("scope with quote", scope, "a\"b", -EINVAL);
    CASE("act without sub", act, act_nosub, -EINVAL);
    CASE("act with exp", act, act_extra, -EINVAL);
    CASE("act too deep", act, act_deep, -FERRY_ETOOBIG);
    CASE("act not object", act, act_arr, -EINVAL);
#undef CASE
    for (size_t i = 0; i < n; i++) {
        char *tok = NULL, jti[FERRY_MINT_JTI_LEN + 1] = "unchanged";
        int64_t exp = -1;
        int r = ferry_mint_token(m, &cases[i].req, &tok, jti, &exp);
        cr_expect_eq(r, cases[i].want, "%s: got %d (%s)", cases[i].what, r, ferry_strerror(r));
        cr_expect_null(tok, "%s: a token was produced", cases[i].what);
        cr_expect_str_eq(jti, "unchanged");
        cr_expect_eq(exp, -1);
    }
    {
        ferry_mint_request r1 = base_req(), r2 = base_req(), r3 = base_req();
        char *tok = NULL;
        r1.audience = bad_aud;
        r1.n_audience = 2;
        cr_expect_eq(ferry_mint_token(m, &r1, &tok, NULL, NULL), -EINVAL);
        r2.audience = many_aud;
        r2.n_audience = FERRY_MINT_MAX_AUDIENCES + 1;
        cr_expect_eq(ferry_mint_token(m, &r2, &tok, NULL, NULL), -FERRY_ETOOBIG);
        r3.act = act_num;
        cr_expect_eq(ferry_mint_token(m, &r3, &tok, NULL, NULL), -EINVAL);
        r3 = base_req();
        r3.client_id = NULL;
        cr_expect_eq(ferry_mint_token(m, &r3, &tok, NULL, NULL), -EINVAL);
        r3 = base_req();
        r3.src_iss = "";
        cr_expect_eq(ferry_mint_token(m, &r3, &tok, NULL, NULL), -EINVAL);
        cr_expect_null(tok);
    }
    json_decref(act_nosub);
    json_decref(act_extra);
    json_decref(act_num);
    json_decref(act_deep);
    json_decref(act_arr);
    ferry_mint_free(m);
    rm_dir(dir);
}

Test(mint, options_refused)
{
    char *dir = make_dir(), err[512];
    ferry_mint *m = NULL;
    static const char *const bad_iss[] = {"http://ferry.example", "https://ferry.test/",
                                          "ftp://x", "https://", "https://a b",
                                          "https://x?q=1", "https://x#f"};

    for (size_t i = 0; i < sizeof(bad_iss) / sizeof(bad_iss[0]); i++) {
        ferry_mint_options o = {.issuer = bad_iss[i], .state_dir = dir};
        cr_expect_eq(ferry_mint_open(&o, &m, err, sizeof(err)), -EINVAL, "%s", bad_iss[i]);
        cr_expect(strstr(err, "issuer") != NULL, "%s", err);
    }
    {
        ferry_mint_options o = {.issuer = "http://127.0.0.1:8080", .state_dir = dir,
                                .max_ttl = FERRY_MINT_MAX_TTL_LIMIT + 1};
        cr_expect_eq(ferry_mint_open(&o, &m, err, sizeof(err)), -EINVAL);
        o.max_ttl = 0;
        o.alg = FERRY_ALG_PS256;
        cr_expect_eq(ferry_mint_open(&o, &m, err, sizeof(err)), -FERRY_EUNSUPPORTED);
        o.alg = FERRY_ALG_RS256;
        o.rsa_bits = 1024;
        cr_expect_eq(ferry_mint_open(&o, &m, err, sizeof(err)), -EINVAL);
        o.state_dir = NULL;
        o.rsa_bits = 0;
        cr_expect_eq(ferry_mint_open(&o, &m, err, sizeof(err)), -EINVAL);
    }
    cr_expect_null(m);
    rm_dir(dir);
}

/* The audit log signs checkpoints with the active key: signatures verify with the published
 * public key, and rotate hands out the new one. */
Test(mint, signing_key_for_other_signers)
{
    char *dir = make_dir(), err[512];
    ferry_mint *m = open_mint(dir, FERRY_ALG_EDDSA, 600);
    ferry_jwk *k, *pub = NULL;
    ferry_alg alg = FERRY_ALG_UNKNOWN;
    unsigned char *sig = NULL;
    size_t sig_len;
    char *k1;

    k = ferry_mint_signing_key(m, &alg);
    cr_assert_not_null(k);
    cr_expect(ferry_jwk_is_private(k));
    cr_expect_eq(alg, FERRY_ALG_EDDSA);
    cr_assert_eq(ferry_jose_sign(alg, k, "checkpoint", 10, &sig, &sig_len), 0);
    cr_assert_eq(ferry_mint_public_key(m, ferry_jwk_kid(k), &pub, NULL), 0);
    cr_expect_eq(ferry_jose_verify(alg, pub, "checkpoint", 10, sig, sig_len), 0);
    k1 = strdup(ferry_jwk_kid(k));
    cr_assert_eq(ferry_mint_rotate(m, FERRY_ALG_ES256, err, sizeof(err)), 0, "%s", err);
    /* The old reference stays usable after rotation. */
    free(sig);
    cr_assert_eq(ferry_jose_sign(FERRY_ALG_EDDSA, k, "x", 1, &sig, &sig_len), 0);
    ferry_jwk_unref(k);
    k = ferry_mint_signing_key(m, &alg);
    cr_expect_eq(alg, FERRY_ALG_ES256);
    cr_expect_str_neq(ferry_jwk_kid(k), k1);
    free(k1);
    free(sig);
    ferry_jwk_unref(k);
    ferry_jwk_unref(pub);
    ferry_mint_free(m);
    rm_dir(dir);
}

/* An expired key whose private file survived (crash between the keys.json update and the
 * wipe) is wiped at the next open. */
Test(mint, leftover_private_key_of_expired_key_is_wiped)
{
    char *dir = make_dir(), *old, *old_pem, *copy, err[512], *data;
    ferry_mint *m;
    size_t len;

    test_now = T0;
    m = open_mint(dir, FERRY_ALG_ES256, 60);
    old = active_kid(m);
    old_pem = pem_path(dir, old);
    data = tu_read_file(old_pem, 1 << 16, &len);
    cr_assert_not_null(data);
    cr_assert_eq(ferry_mint_rotate(m, FERRY_ALG_UNKNOWN, err, sizeof(err)), 0, "%s", err);
    ferry_mint_free(m);
    test_now = T0 + 61;
    m = open_mint(dir, FERRY_ALG_ES256, 60);
    cr_expect(!file_exists(old_pem));
    ferry_mint_free(m);
    copy = old_pem;
    write_file(copy, data, len, 0600);
    m = open_mint(dir, FERRY_ALG_ES256, 60);
    cr_expect(!file_exists(old_pem), "leftover private key of an expired key not wiped");
    ferry_mint_free(m);
    test_now = T0;
    free(data);
    free(old);
    free(old_pem);
    rm_dir(dir);
}

/* FERRY_MINT_READ_ONLY (`ferry keys jwks | list | discovery`): creates, prunes and wipes
 * nothing, and cannot sign or rotate. */
Test(mint, read_only_open_changes_nothing)
{
    char *dir = make_dir(), *missing = path_in(dir, "missing"), *old_kid, *old_pem, *meta;
    char *lock = path_in(dir, "keys/.lock"), err[512] = "", *tok = NULL;
    ferry_mint *m, *ro = NULL;
    ferry_mint_request req = base_req();
    struct stat before, after;
    json_t *jwks = NULL;

    /* A missing store: -ENOENT, and nothing is created. */
    cr_expect_eq(open_mint_r(missing, FERRY_ALG_ES256, 600, FERRY_MINT_READ_ONLY, &ro, err,
                             sizeof(err)),
                 -ENOENT);
    cr_expect_null(ro);
    cr_expect(strstr(err, "does not exist") != NULL, "%s", err);
    cr_expect(!file_exists(missing), "a read-only open created the state directory");
    cr_assert_eq(mkdir(missing, 0700), 0);
    cr_expect_eq(open_mint_r(missing, FERRY_ALG_ES256, 600, FERRY_MINT_READ_ONLY, &ro, err,
                             sizeof(err)),
                 -ENOENT);
    meta = path_in(missing, "keys");
    cr_expect(!file_exists(meta), "a read-only open created keys/");
    free(meta);

    /* A retired key past its overlap: left out of the JWKS, but keys.json and its private
     * file are untouched, and no lock file appears. */
    test_now = T0;
    m = open_mint(dir, FERRY_ALG_ES256, 600);
    old_kid = active_kid(m);
    old_pem = pem_path(dir, old_kid);
    test_now = T0 + 10;
    cr_assert_eq(ferry_mint_rotate(m, FERRY_ALG_UNKNOWN, err, sizeof(err)), 0, "%s", err);
    ferry_mint_free(m);
    cr_assert_eq(unlink(lock), 0);
    meta = path_in(dir, "keys/keys.json");
    cr_assert_eq(stat(meta, &before), 0);
    test_now = T0 + 10 + 600;
    cr_assert_eq(open_mint_r(dir, FERRY_ALG_ES256, 600, FERRY_MINT_READ_ONLY, &ro, err,
                             sizeof(err)),
                 0, "%s", err);
    cr_expect_eq(jwks_count(ro, false), 1);
    cr_expect(!jwks_has(ro, false, old_kid));
    cr_expect_eq(jwks_count(ro, true), 2);
    cr_assert_eq(ferry_mint_jwks(ro, false, &jwks), 0);
    assert_public_only(jwks);
    json_decref(jwks);
    cr_expect_eq(ferry_mint_reload(ro, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(stat(meta, &after), 0);
    cr_expect(before.st_ino == after.st_ino && before.st_mtime == after.st_mtime,
              "a read-only open rewrote keys.json");
    cr_expect(file_exists(old_pem), "a read-only open wiped a private key file");
    cr_expect(!file_exists(lock), "a read-only open created the lock file");

    /* It cannot sign or change the store. */
    cr_expect_null(ferry_mint_signing_key(ro, NULL));
    cr_expect_eq(ferry_mint_token(ro, &req, &tok, NULL, NULL), -FERRY_ENOKEY);
    cr_expect_null(tok);
    cr_expect_eq(ferry_mint_rotate(ro, FERRY_ALG_UNKNOWN, err, sizeof(err)), -EROFS);
    cr_expect_eq(ferry_mint_import_pem(ro, "x", 1, FERRY_ALG_UNKNOWN, err, sizeof(err)),
                 -EROFS);
    ferry_mint_free(ro);

    /* The next writer prunes. */
    m = open_mint(dir, FERRY_ALG_ES256, 600);
    cr_expect(!file_exists(old_pem), "the writer did not wipe the expired key");
    ferry_mint_free(m);
    free(old_kid);
    free(old_pem);
    free(meta);
    free(lock);
    free(missing);
    rm_dir(dir);
}

/* ferryd runs with a longer max_ttl than `ferry keys rotate` was given. The rotating process
 * records a short overlap; a later writer with that short max_ttl marks the key "expired" on
 * disk. ferryd must still publish it for its own max_ttl after it reloads: its tokens live
 * that long (the rule is now < max(publish_until, retired_at + max_ttl of this process)). */
Test(mint, longer_max_ttl_keeps_key_marked_expired_by_shorter_one)
{
    char *dir = make_dir(), *old_kid, *tok, err[512];
    ferry_mint *ferryd, *cli;
    ferry_mint_request req = base_req();

    test_now = T0; /* an earlier ferryd signs with the first key, then stops */
    ferryd = open_mint(dir, FERRY_ALG_ES256, 7200);
    old_kid = active_kid(ferryd);
    req.ttl = 7200;
    tok = mint_ok(ferryd, &req, NULL, NULL); /* exp = T0 + 7200 */
    ferry_mint_free(ferryd);

    test_now = T0 + 10;
    cli = open_mint(dir, FERRY_ALG_ES256, 600);
    cr_assert_eq(ferry_mint_rotate(cli, FERRY_ALG_UNKNOWN, err, sizeof(err)), 0, "%s", err);
    ferry_mint_free(cli);
    test_now = T0 + 20; /* ferryd starts again: the old key is published by its max_ttl */
    ferryd = open_mint(dir, FERRY_ALG_ES256, 7200);
    cr_expect(jwks_has(ferryd, false, old_kid));

    /* Past the CLI's overlap: the next CLI run marks the old key expired on disk. */
    test_now = T0 + 700;
    cli = open_mint(dir, FERRY_ALG_ES256, 600);
    cr_expect(!jwks_has(cli, false, old_kid));
    ferry_mint_free(cli);

    cr_assert_eq(ferry_mint_reload(ferryd, err, sizeof(err)), 0, "%s", err);
    cr_expect(jwks_has(ferryd, false, old_kid),
              "ferryd dropped a key its own tokens still need after another process expired it");
    cr_expect_eq(verify_at(ferryd, tok, T0 + 700, 7200, NULL), FERRY_REASON_OK);
    test_now = T0 + 10 + 7200;
    cr_expect(!jwks_has(ferryd, false, old_kid), "published past retired_at + max_ttl");

    free(tok);
    free(old_kid);
    ferry_mint_free(ferryd);
    rm_dir(dir);
}

/* A process that keeps signing with a key another process retired (until it reloads) makes
 * tokens that live past retired_at + max_ttl; its reload must keep the key published until
 * the last of them has expired, on disk too (so every other process publishes it). */
Test(mint, stale_signer_tokens_stay_verifiable_after_reload)
{
    char *dir = make_dir(), *old_kid, *tok, *p, err[512];
    ferry_mint *a, *b, *c;
    ferry_mint_request req = base_req();
    json_t *h;

    test_now = T0;
    a = open_mint(dir, FERRY_ALG_ES256, 600);
    old_kid = active_kid(a);
    b = open_mint(dir, FERRY_ALG_ES256, 600);
    test_now = T0 + 10; /* b rotates: the old key is published until T0 + 610 */
    cr_assert_eq(ferry_mint_rotate(b, FERRY_ALG_UNKNOWN, err, sizeof(err)), 0, "%s", err);
    ferry_mint_free(b);

    test_now = T0 + 300; /* a has not reloaded yet: it still signs with the old key */
    req.ttl = 600;
    tok = mint_ok(a, &req, NULL, NULL); /* exp = T0 + 900 */
    h = segment_json(tok, 0, NULL);
    cr_expect_str_eq(json_string_value(json_object_get(h, "kid")), old_kid);
    json_decref(h);
    cr_assert_eq(ferry_mint_reload(a, err, sizeof(err)), 0, "%s", err);
    p = active_kid(a);
    cr_expect_str_neq(p, old_kid, "a switched to the new key on reload");
    free(p);

    test_now = T0 + 899;
    cr_expect(jwks_has(a, false, old_kid), "the stale signer's key left before its last token");
    cr_expect_eq(verify_at(a, tok, T0 + 899, 600, NULL), FERRY_REASON_OK);
    c = open_mint(dir, FERRY_ALG_ES256, 600); /* and every other process agrees */
    cr_expect(jwks_has(c, false, old_kid), "keys.json does not carry the longer overlap");
    ferry_mint_free(c);
    test_now = T0 + 900;
    cr_expect(!jwks_has(a, false, old_kid));

    free(tok);
    free(old_kid);
    ferry_mint_free(a);
    rm_dir(dir);
}

/* Discovery's claims_supported names only claims the mint can put in a token: every one of
 * them appears in a token with every optional claim (scope, act). */
Test(mint, discovery_claims_supported_are_claims_the_mint_emits)
{
    char *dir = make_dir(), *tok;
    ferry_mint *m;
    ferry_mint_request req = base_req();
    json_t *disc = NULL, *claims, *v;
    size_t i;

    test_now = T0;
    m = open_mint(dir, FERRY_ALG_ES256, 600);
    req.act = json_pack("{s:s}", "sub", "ferry-exchange");
    cr_assert_not_null(req.act);
    tok = mint_ok(m, &req, NULL, NULL);
    claims = segment_json(tok, 1, NULL);
    cr_assert_eq(ferry_mint_discovery(m, &disc), 0);
    cr_assert(json_array_size(json_object_get(disc, "claims_supported")) > 0);
    json_array_foreach(json_object_get(disc, "claims_supported"), i, v)
        cr_expect_not_null(json_object_get(claims, json_string_value(v)),
                           "claims_supported names \"%s\", which no minted token carries",
                           json_string_value(v));
    json_decref(disc);
    json_decref(claims);
    json_decref((json_t *)req.act);
    free(tok);
    ferry_mint_free(m);
    rm_dir(dir);
}

/* `ferry keys init` checks for an empty store under the lock: when a key appeared after it
 * opened the store (another init, a ferryd's first start), it adds nothing. */
Test(mint, init_only_refuses_a_store_that_gained_a_key)
{
    char *dir = make_dir(), *kid, err[512] = "";
    ferry_mint *init = NULL, *other, *check;

    test_now = T0;
    cr_assert_eq(open_mint_r(dir, FERRY_ALG_ES256, 600,
                             FERRY_MINT_NO_GENERATE | FERRY_MINT_INIT_ONLY, &init, err,
                             sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(jwks_count(init, true), 0);
    other = open_mint(dir, FERRY_ALG_ES256, 600); /* generates the first key */
    kid = active_kid(other);
    cr_expect_eq(ferry_mint_rotate(init, FERRY_ALG_UNKNOWN, err, sizeof(err)), -EEXIST);
    check = open_mint(dir, FERRY_ALG_ES256, 600);
    cr_expect_eq(jwks_count(check, true), 1, "init added a key to an initialised store");
    cr_expect(jwks_has(check, false, kid));
    ferry_mint_free(check);
    ferry_mint_free(other);
    ferry_mint_free(init);

    /* On an empty store it adds the first key. */
    rm_dir(dir);
    dir = make_dir();
    cr_assert_eq(open_mint_r(dir, FERRY_ALG_ES256, 600,
                             FERRY_MINT_NO_GENERATE | FERRY_MINT_INIT_ONLY, &init, err,
                             sizeof(err)),
                 0, "%s", err);
    cr_expect_eq(ferry_mint_rotate(init, FERRY_ALG_UNKNOWN, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(jwks_count(init, true), 1);
    ferry_mint_free(init);
    free(kid);
    rm_dir(dir);
}
