/* tests/unit/test_exchange.c - RFC 8693 token exchange (include/ferry/exchange.h).
 *
 * Every test runs the real modules: a trust store with inline-JWKS issuers (tokens signed here
 * with ferry_jws_sign), a policy set from a buffer, a mint in a temporary state directory, an
 * audit log in a temporary file and TOTP accounts enrolled with ferry_totp_enroll.
 * Covered: a successful exchange whose token verifies with a ferry-profile trust store over
 * ferry_mint_jwks (claims and TTL), every error code with nothing issued and exactly one audit
 * record, SECURITY-TESTS C (forged, expired, unknown-issuer, typ-confused subject tokens ->
 * invalid_request; C7 replay of a one-time subject token), E7 (scope or audience outside the
 * policy -> refused, nothing signed), delegation with an actor token (act claim, nested chain,
 * actor policy), hostile parameters (duplicates, sizes, control bytes, NUL, UTF-8), audit-log
 * write failure (RLIMIT_FSIZE) -> server_error and nothing issued, and TOTP step-up (refused
 * without a code, granted with one, a replayed code refused).
 */
#include "config.h"

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "basic/macro.h"
#include "basic/mem.h"
#include "basic/utf8.h"
#include "ferry/auditlog.h"
#include "ferry/error.h"
#include "ferry/exchange.h"
#include "ferry/jose.h"
#include "ferry/mint.h"
#include "ferry/oidc.h"
#include "ferry/policy.h"
#include "ferry/totp.h"
#include "standin.h"
#include "testutil.h"

#define NOW INT64_C(1700000000)
#define IDP "https://idp.test"
#define CI "https://ci.test"
#define FERRY_ISS "https://ferry.test"
#define FERRY_AUD "ferry"
#define REG "https://registry.test"
#define OTHER "https://other.test"
#define ST_JWT FERRY_TOKEN_TYPE_JWT
#define ST_ID FERRY_TOKEN_TYPE_ID_TOKEN
#define ST_AT FERRY_TOKEN_TYPE_ACCESS_TOKEN
#define GT FERRY_GRANT_TYPE_TOKEN_EXCHANGE

static int64_t g_now = NOW;
static int64_t test_clock(void *data)
{
    (void)data;
    return g_now;
}

/* alice: read (600 s) and, after TOTP, publish (300 s), on two registries.
 * deployer (CI issuer): may act for registry reads only (120 s).
 * intruder (CI issuer): matches no policy of the IdP's audiences.
 * carol: granted two audiences (so naming none is ambiguous). nobody-*: no policy. */
#define MAXI_AUDS                                                                                  \
    "\"https://a0.test\", \"https://a1.test\", \"https://a2.test\", \"https://a3.test\", "         \
    "\"https://a4.test\", \"https://a5.test\", \"https://a6.test\", \"https://a7.test\""
static const char policies_json[] =
    "{\"version\": 1, \"policies\": ["
    " {\"id\": \"alice-read\", \"match\": {\"issuer\": \"" IDP "\", \"subject\": \"alice\"},"
    "  \"grant\": {\"scopes\": [\"models:read\", \"data:read\"], \"audiences\": [\"" REG "\"],"
    "  \"max_ttl\": 600}},"
    " {\"id\": \"alice-publish\", \"match\": {\"issuer\": \"" IDP "\", \"subject\": \"alice\"},"
    "  \"step_up\": \"totp\","
    "  \"grant\": {\"scopes\": [\"models:publish\"], \"audiences\": [\"" REG "\"],"
    "  \"max_ttl\": 300}},"
    " {\"id\": \"carol-two\", \"match\": {\"issuer\": \"" IDP "\", \"subject\": \"carol\"},"
    "  \"grant\": {\"scopes\": [\"models:read\"], \"audiences\": [\"" REG "\", \"" OTHER "\"],"
    "  \"max_ttl\": 900}},"
    " {\"id\": \"maxi-0\", \"match\": {\"issuer\": \"" IDP "\", \"subject\": \"maxi\"},"
    "  \"grant\": {\"scopes\": [\"s:1\", \"s:2\"], \"audiences\": [" MAXI_AUDS "],"
    "  \"max_ttl\": 900}},"
    " {\"id\": \"maxi-1\", \"match\": {\"issuer\": \"" IDP "\", \"subject\": \"maxi\"},"
    "  \"grant\": {\"scopes\": [\"s:1\", \"s:2\"], \"audiences\": [" MAXI_AUDS "],"
    "  \"max_ttl\": 899}},"
    " {\"id\": \"maxi-2\", \"match\": {\"issuer\": \"" IDP "\", \"subject\": \"maxi\"},"
    "  \"grant\": {\"scopes\": [\"s:1\", \"s:2\"], \"audiences\": [" MAXI_AUDS "],"
    "  \"max_ttl\": 898}},"
    " {\"id\": \"maxi-3\", \"match\": {\"issuer\": \"" IDP "\", \"subject\": \"maxi\"},"
    "  \"grant\": {\"scopes\": [\"s:1\", \"s:2\"], \"audiences\": [" MAXI_AUDS "],"
    "  \"max_ttl\": 897}},"
    " {\"id\": \"maxi-4\", \"match\": {\"issuer\": \"" IDP "\", \"subject\": \"maxi\"},"
    "  \"grant\": {\"scopes\": [\"s:1\", \"s:2\"], \"audiences\": [" MAXI_AUDS "],"
    "  \"max_ttl\": 896}},"
    " {\"id\": \"ferry-alice\", \"match\": {\"issuer\": \"" FERRY_ISS "\", \"subject\": \"alice\"},"
    "  \"grant\": {\"scopes\": [\"models:read\"], \"audiences\": [\"" REG "\"],"
    "  \"max_ttl\": 900}},"
    " {\"id\": \"ci-deployer\", \"match\": {\"issuer\": \"" CI "\", \"subject\": \"deployer\"},"
    "  \"grant\": {\"scopes\": [\"models:read\"], \"audiences\": [\"" REG "\"],"
    "  \"max_ttl\": 120}}"
    "]}";

/* ---- fixture ----------------------------------------------------------------------------------
 */

static char *g_dir, *g_log_path, *g_totp_dir;
static ferry_jwk *g_idp_key, *g_ci_key, *g_stranger_key;
static ferry_oidc *g_oidc;
static ferry_policy_store *g_store;
static ferry_mint *g_mint;
static ferry_auditlog *g_log;
static ferry_exchange *g_ex;
static unsigned g_jti_counter;
static unsigned char g_alice_secret[FERRY_TOTP_SECRET_LEN];

static ferry_jwk *gen_key(void)
{
    ferry_jwk *k = NULL;
    cr_assert_eq(ferry_jwk_generate(FERRY_ALG_ES256, &k), 0);
    return k;
}

static void add_issuer(ferry_oidc *o, const char *iss, ferry_jwk *k, const char *profile)
{
    json_t *pub = NULL, *conf;
    char err[256] = "";
    int r;

    cr_assert_eq(ferry_jwk_to_public_json(k, &pub), 0);
    conf = json_pack("{s:s, s:[s], s:[s], s:{s:[o]}, s:s}", "issuer", iss, "audiences", FERRY_AUD,
                     "algorithms", "ES256", "jwks", "keys", pub, "profile", profile);
    cr_assert_not_null(conf);
    r = ferry_oidc_add_issuer(o, conf, err, sizeof(err));
    cr_assert_eq(r, 0, "add_issuer %s: %s", iss, err);
    json_decref(conf);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

static char *path_in(const char *rel)
{
    char *p = NULL;
    cr_assert(asprintf(&p, "%s/%s", g_dir, rel) > 0);
    return p;
}

/* Strict RFC 4648 base32 decoder (the enrolment URI's secret). */
static size_t b32_decode(const char *in, size_t n, unsigned char *out)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    unsigned long long acc = 0;
    int bits = 0;
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        const char *p = strchr(alpha, in[i]);
        cr_assert(p && in[i]);
        acc = acc << 5 | (unsigned long long)(p - alpha);
        bits += 5;
        if (bits >= 8) {
            out[o++] = (unsigned char)(acc >> (bits - 8));
            bits -= 8;
        }
    }
    return o;
}

static void enroll_alice(void)
{
    char err[256] = "", *uri = NULL, *s, *e;
    int r = ferry_totp_enroll(g_totp_dir, "alice", NULL, false, &uri, err, sizeof(err));

    cr_assert_eq(r, 0, "enroll: %s", err);
    s = strstr(uri, "secret=");
    cr_assert_not_null(s);
    s += strlen("secret=");
    e = strchr(s, '&');
    cr_assert_not_null(e);
    cr_assert_eq(b32_decode(s, (size_t)(e - s), g_alice_secret), FERRY_TOTP_SECRET_LEN);
    ferry_free_secret_str(uri);
}

static void open_exchange(const ferry_exchange_options *opts)
{
    ferry_exchange_options o = opts ? *opts : (ferry_exchange_options){0};
    char err[256] = "";
    int r;

    ferry_exchange_free(g_ex);
    g_ex = NULL;
    o.clock = test_clock;
    if (!o.totp_state_dir)
        o.totp_state_dir = g_totp_dir;
    r = ferry_exchange_new(g_oidc, g_store, g_mint, g_log, &o, &g_ex, err, sizeof(err));
    cr_assert_eq(r, 0, "exchange_new: %s", err);
}

static void setup(void)
{
    ferry_oidc_options oo = {.clock = test_clock};
    ferry_mint_options mo = {0};
    ferry_auditlog_options lo = {0};
    ferry_policy_builder *b = NULL;
    ferry_policy_problems *pr = NULL;
    ferry_policy_set *set = NULL;
    ferry_jwk *sk;
    char err[512] = "", *mint_dir;
    int r;

    g_now = NOW;
    g_dir = strdup("/tmp/ferry-test-exchange.XXXXXX");
    cr_assert_not_null(g_dir);
    cr_assert_not_null(mkdtemp(g_dir));
    g_idp_key = gen_key();
    g_ci_key = gen_key();
    g_stranger_key = gen_key();

    cr_assert_eq(ferry_oidc_new(&oo, &g_oidc), 0);
    add_issuer(g_oidc, IDP, g_idp_key, "id_token");
    add_issuer(g_oidc, CI, g_ci_key, "access_token");

    cr_assert_eq(ferry_policy_problems_new(&pr), 0);
    cr_assert_eq(ferry_policy_builder_new(&b), 0);
    r = ferry_policy_builder_add_buffer(b, "test.json", policies_json, strlen(policies_json), pr);
    cr_assert_eq(r, 0, "policy: %s",
                 ferry_policy_problems_count(pr) ? ferry_policy_problems_get(pr, 0)->reason : "");
    cr_assert_eq(ferry_policy_builder_finish(b, &set, pr), 0);
    ferry_policy_builder_free(b);
    ferry_policy_problems_free(pr);
    cr_assert_eq(ferry_policy_store_new(set, &g_store), 0);
    ferry_policy_set_unref(set);

    mint_dir = path_in("mint");
    mo = (ferry_mint_options){
        .issuer = FERRY_ISS, .state_dir = mint_dir, .alg = FERRY_ALG_ES256, .clock = test_clock};
    r = ferry_mint_open(&mo, &g_mint, err, sizeof(err));
    cr_assert_eq(r, 0, "mint: %s", err);
    free(mint_dir);
    {
        json_t *jwks = NULL, *conf;
        cr_assert_eq(ferry_mint_jwks(g_mint, false, &jwks), 0);
        conf = json_pack("{s:s, s:[s], s:o, s:[s], s:s}", "issuer", FERRY_ISS, "audiences",
                         FERRY_AUD, "jwks", jwks, "algorithms", "ES256", "profile", "ferry");
        r = ferry_oidc_add_issuer(g_oidc, conf, err, sizeof(err));
        cr_assert_eq(r, 0, "add ferry issuer: %s", err);
        json_decref(conf);
    }

    g_log_path = path_in("audit.log");
    sk = ferry_mint_signing_key(g_mint, NULL);
    cr_assert_not_null(sk);
    lo = (ferry_auditlog_options){.path = g_log_path, .signing_key = sk};
    r = ferry_auditlog_open(&lo, &g_log, err, sizeof(err));
    cr_assert_eq(r, 0, "auditlog: %s", err);
    ferry_jwk_unref(sk);

    g_totp_dir = path_in("totp-state");
    cr_assert_eq(mkdir(g_totp_dir, 0700), 0);
    enroll_alice();

    open_exchange(NULL);
}

static void teardown(void)
{
    ferry_exchange_free(g_ex);
    g_ex = NULL;
    if (g_log)
        (void)ferry_auditlog_close(g_log);
    g_log = NULL;
    ferry_mint_free(g_mint);
    ferry_policy_store_free(g_store);
    ferry_oidc_free(g_oidc);
    ferry_jwk_unref(g_idp_key);
    ferry_jwk_unref(g_ci_key);
    ferry_jwk_unref(g_stranger_key);
    (void)nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(g_dir);
    free(g_log_path);
    free(g_totp_dir);
}

TestSuite(exchange, .init = setup, .fini = teardown);

/* ---- tokens and requests ------------------------------------------------------------------- */

/* A token over claims (consumed) signed by key with typ. */
static char *sign_claims(ferry_jwk *key, const char *typ, json_t *claims)
{
    char *payload = json_dumps(claims, JSON_COMPACT), *tok = NULL;

    cr_assert_not_null(payload);
    cr_assert_eq(ferry_jws_sign(key, FERRY_ALG_ES256, typ, payload, strlen(payload), &tok), 0);
    free(payload);
    json_decref(claims);
    return tok;
}

/* Usual claims for sub at iss: aud ferry, exp now+300, iat now-10, a fresh jti. */
static json_t *claims(const char *iss, const char *sub)
{
    char jti[32];

    snprintf(jti, sizeof(jti), "jti-%u", ++g_jti_counter);
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "iss", iss, "sub", sub, "aud", FERRY_AUD,
                     "exp", (json_int_t)(g_now + 300), "iat", (json_int_t)(g_now - 10), "jti", jti);
}

static char *idp_token(const char *sub)
{
    return sign_claims(g_idp_key, "JWT", claims(IDP, sub));
}

static char *ci_token(const char *sub)
{
    json_t *c = claims(CI, sub);

    json_object_set_new(c, "client_id", json_string("ci-runner"));
    return sign_claims(g_ci_key, "at+jwt", c);
}

/* A ferry-issued token for alice (aud "ferry") signed with the mint's key, with act (consumed;
 * may be NULL). Built by hand so that malformed chains can be presented too. */
static char *ferry_token(json_t *act)
{
    json_t *c = claims(FERRY_ISS, "alice");
    ferry_jwk *k = ferry_mint_signing_key(g_mint, NULL);
    char *tok;

    json_object_set_new(c, "client_id", json_string("ferry"));
    json_object_set_new(c, "src_iss", json_string(IDP));
    json_object_set_new(c, "src_sub", json_string("alice"));
    if (act)
        json_object_set_new(c, "act", act);
    tok = sign_claims(k, "at+jwt", c);
    ferry_jwk_unref(k);
    return tok;
}

#define MAXP 80
struct req {
    ferry_exchange_param p[MAXP];
    size_t n;
};

static void add(struct req *r, const char *name, const char *value)
{
    cr_assert(r->n < MAXP);
    r->p[r->n++] = (ferry_exchange_param){name, strlen(name), value, strlen(value)};
}

static void add_len(struct req *r, const char *name, const char *value, size_t len)
{
    cr_assert(r->n < MAXP);
    r->p[r->n++] = (ferry_exchange_param){name, strlen(name), value, len};
}

/* grant_type + subject_token (+ type) */
static void base(struct req *r, const char *subject_token, const char *type)
{
    add(r, "grant_type", GT);
    add(r, "subject_token", subject_token);
    add(r, "subject_token_type", type);
}

static int run(const struct req *r, ferry_exchange_response *resp)
{
    ferry_exchange_request q = {.params = r->p, .n_params = r->n};
    return ferry_exchange_token(g_ex, &q, resp);
}

/* ---- the audit log ------------------------------------------------------------------------- */

/* The "token.exchange" records of the log, as a new JSON array. */
static json_t *exchange_records(void)
{
    size_t len = 0;
    char *buf = tu_read_file(g_log_path, 16 * 1024 * 1024, &len), *line, *save = NULL;
    json_t *out = json_array();

    cr_assert_not_null(buf);
    for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t e;
        json_t *rec = json_loadb(line, strlen(line), JSON_REJECT_DUPLICATES, &e);
        cr_assert_not_null(rec, "log line not JSON: %s", e.text);
        if (strcmp(json_string_value(json_object_get(rec, "type")), "token.exchange") == 0)
            json_array_append(out, rec);
        json_decref(rec);
    }
    free(buf);
    return out;
}

/* Exactly one more exchange record than before; returns it (new reference). */
static json_t *one_new_record(size_t before)
{
    json_t *all = exchange_records(), *rec;

    cr_assert_eq(json_array_size(all), before + 1, "records: %zu, want %zu", json_array_size(all),
                 before + 1);
    rec = json_incref(json_array_get(all, before));
    json_decref(all);
    return rec;
}

static size_t n_records(void)
{
    json_t *all = exchange_records();
    size_t n = json_array_size(all);
    json_decref(all);
    return n;
}

static const char *rec_str(const json_t *rec, const char *path1, const char *path2)
{
    const json_t *v = json_object_get(rec, path1);
    if (path2)
        v = json_object_get(v, path2);
    return json_string_value(v);
}

/* The log never holds a token's bytes. */
static void log_has_no(const char *tok)
{
    size_t len = 0;
    char *buf = tu_read_file(g_log_path, 16 * 1024 * 1024, &len);
    const char *sig = strrchr(tok, '.');

    cr_assert_not_null(buf);
    cr_assert_null(strstr(buf, tok));
    if (sig && strlen(sig + 1) >= 16) /* a real signature, not "token" of not.a.token */
        cr_assert_null(strstr(buf, sig + 1), "a token signature is in the log");
    free(buf);
}

/* A refusal: the error, nothing issued, one deny record with the error. */
/* The body ferryd sends (ferry_exchange_response_write) is byte for byte what jansson makes of
 * ferry_exchange_response_to_json's object: the object is the oracle. */
static void assert_body_matches(const ferry_exchange_response *resp)
{
    json_t *doc = NULL;
    char *want, *got = NULL;
    size_t got_len = 0;

    cr_assert_eq(ferry_exchange_response_to_json(resp, &doc), 0);
    want = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    cr_assert_not_null(want);
    cr_assert_eq(ferry_exchange_response_write(resp, &got, &got_len), 0);
    cr_assert_eq(got_len, strlen(want), "length %zu, jansson %zu:\n%s\n%s", got_len,
                 strlen(want), got, want);
    cr_assert_eq(strlen(got), got_len);
    cr_assert_str_eq(got, want);
    ferry_wipe(got, got_len);
    free(got);
    free(want);
    json_decref(doc);
}

static json_t *expect_refused(const struct req *r, ferry_exchange_error want, const char *desc_has)
{
    ferry_exchange_response resp;
    size_t before = n_records();
    json_t *rec, *body = NULL;
    int ret = run(r, &resp);

    cr_assert_eq(resp.error, want, "error %s (%s / %s), want %s",
                 ferry_exchange_error_name(resp.error), resp.error_description, resp.reason,
                 ferry_exchange_error_name(want));
    cr_assert_eq(ret, -FERRY_EREFUSED, "ret %d", ret);
    cr_assert_eq(resp.http_status, 400);
    cr_assert_null(resp.access_token);
    cr_assert_null(resp.scope);
    cr_assert_str_eq(resp.jti, "");
    if (desc_has)
        cr_assert_not_null(strstr(resp.error_description, desc_has), "description: %s",
                           resp.error_description);
    cr_assert_null(strchr(resp.reason, '\n'));
    assert_body_matches(&resp);
    cr_assert_eq(ferry_exchange_response_to_json(&resp, &body), 0);
    cr_assert_str_eq(json_string_value(json_object_get(body, "error")),
                     ferry_exchange_error_name(want));
    cr_assert_null(json_object_get(body, "access_token"));
    json_decref(body);
    rec = one_new_record(before);
    cr_assert_eq(json_integer_value(json_object_get(rec, "seq")), (json_int_t)resp.audit_seq);
    cr_assert_str_eq(rec_str(rec, "decision", NULL), "deny");
    cr_assert_str_eq(rec_str(rec, "details", "error"), ferry_exchange_error_name(want));
    cr_assert_null(json_object_get(json_object_get(rec, "details"), "granted"));
    ferry_exchange_response_release(&resp);
    return rec;
}

/* ---- success ------------------------------------------------------------------------------- */

/* Verify a minted token with a ferry-profile trust store over ferry_mint_jwks. */
static ferry_identity *verify_minted(const char *tok, const char *aud)
{
    ferry_oidc_options oo = {.clock = test_clock};
    ferry_oidc *o = NULL;
    json_t *jwks = NULL, *conf;
    ferry_identity *id = NULL;
    ferry_verify_result res;
    char err[256] = "";
    int r;

    cr_assert_eq(ferry_mint_jwks(g_mint, false, &jwks), 0);
    cr_assert_eq(ferry_oidc_new(&oo, &o), 0);
    conf = json_pack("{s:s, s:[s], s:o, s:[s], s:s}", "issuer", FERRY_ISS, "audiences", aud, "jwks",
                     jwks, "algorithms", "ES256", "profile", "ferry");
    cr_assert_eq(ferry_oidc_add_issuer(o, conf, err, sizeof(err)), 0, "%s", err);
    json_decref(conf);
    r = ferry_oidc_verify(o, tok, strlen(tok), NULL, &id, &res);
    cr_assert_eq(r, 0, "minted token refused: %s %s", ferry_reason_name(res.reason), res.detail);
    ferry_oidc_free(o);
    return id;
}

Test(exchange, success_mints_a_token_that_verifies)
{
    struct req r = {0};
    ferry_exchange_response resp;
    char *tok = idp_token("alice");
    ferry_identity *id;
    json_t *rec, *body = NULL, *d, *g;
    ferry_auditlog_token_ref ref;
    size_t before = n_records();
    int ret;

    base(&r, tok, ST_ID);
    add(&r, "audience", REG);
    add(&r, "scope", "models:read data:read");
    add(&r, "unknown_param", "ignored");
    ret = run(&r, &resp);
    cr_assert_eq(ret, 0, "%s: %s", ferry_exchange_error_name(resp.error), resp.reason);
    cr_assert_eq(resp.error, FERRY_EXCHANGE_OK);
    cr_assert_eq(resp.http_status, 200);
    cr_assert_not_null(resp.access_token);
    cr_assert_str_eq(resp.issued_token_type, ST_AT);
    cr_assert_str_eq(resp.token_type, "Bearer");
    /* TTL = min(policy 600, default 900) */
    cr_assert_eq(resp.expires_in, 600);
    cr_assert_str_eq(resp.scope, "models:read data:read");
    cr_assert_eq(strlen(resp.jti), FERRY_MINT_JTI_LEN);

    id = verify_minted(resp.access_token, REG);
    cr_assert_str_eq(id->issuer, FERRY_ISS);
    cr_assert_str_eq(id->subject, "alice");
    cr_assert_str_eq(json_string_value(json_object_get(id->claims, "src_iss")), IDP);
    cr_assert_str_eq(json_string_value(json_object_get(id->claims, "src_sub")), "alice");
    cr_assert_str_eq(json_string_value(json_object_get(id->claims, "aud")), REG);
    cr_assert_str_eq(json_string_value(json_object_get(id->claims, "scope")),
                     "models:read data:read");
    cr_assert_str_eq(json_string_value(json_object_get(id->claims, "client_id")), "ferry");
    cr_assert_str_eq(id->jti, resp.jti);
    cr_assert_eq(id->exp, NOW + 600);
    cr_assert_eq(id->iat, NOW);
    cr_assert_null(json_object_get(id->claims, "act"));
    ferry_identity_free(id);

    assert_body_matches(&resp);
    cr_assert_eq(ferry_exchange_response_to_json(&resp, &body), 0);
    cr_assert_str_eq(json_string_value(json_object_get(body, "access_token")), resp.access_token);
    cr_assert_str_eq(json_string_value(json_object_get(body, "issued_token_type")), ST_AT);
    cr_assert_str_eq(json_string_value(json_object_get(body, "token_type")), "Bearer");
    cr_assert_eq(json_integer_value(json_object_get(body, "expires_in")), 600);
    cr_assert_str_eq(json_string_value(json_object_get(body, "scope")), "models:read data:read");
    cr_assert_null(json_object_get(body, "error"));
    json_decref(body);

    /* One allow record: subject, the subject token by reference, granted values, policies. */
    rec = one_new_record(before);
    cr_assert_eq(json_integer_value(json_object_get(rec, "seq")), (json_int_t)resp.audit_seq);
    cr_assert_str_eq(rec_str(rec, "decision", NULL), "allow");
    cr_assert_str_eq(rec_str(rec, "subject", NULL), "alice");
    cr_assert_eq(ferry_auditlog_ref_token(tok, strlen(tok), &ref), 0);
    cr_assert_str_eq(rec_str(rec, "token", "sha256"), ref.sha256);
    cr_assert_str_eq(rec_str(rec, "token", "jti"), ref.jti);
    d = json_object_get(rec, "details");
    cr_assert_str_eq(rec_str(d, "issuer", NULL), IDP);
    cr_assert_str_eq(json_string_value(json_array_get(
                         json_object_get(json_object_get(d, "requested"), "audience"), 0)),
                     REG);
    cr_assert_str_eq(rec_str(json_object_get(d, "requested"), "scope", NULL),
                     "models:read data:read");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(d, "policies"), 0)),
                     "alice-read");
    cr_assert_eq(json_array_size(json_object_get(d, "policies")), 1);
    g = json_object_get(d, "granted");
    cr_assert_str_eq(rec_str(g, "jti", NULL), resp.jti);
    cr_assert_str_eq(rec_str(g, "scope", NULL), "models:read data:read");
    cr_assert_eq(json_integer_value(json_object_get(g, "ttl")), 600);
    cr_assert_eq(json_integer_value(json_object_get(g, "exp")), NOW + 600);
    cr_assert_null(json_object_get(d, "error"));
    json_decref(rec);
    log_has_no(tok);
    log_has_no(resp.access_token);

    ferry_exchange_response_release(&resp);
    cr_assert_null(resp.access_token);
    free(tok);
}

Test(exchange, ttl_is_the_smallest_of_policy_default_requested_and_max)
{
    ferry_exchange_options o = {.default_ttl = 200, .max_ttl = 1000};
    static const struct {
        int64_t requested, want;
    } cases[] = {{0, 200}, {100, 100}, {500, 500}, {5000, 600}};

    open_exchange(&o);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct req r = {0};
        ferry_exchange_response resp;
        char *tok = idp_token("alice");
        ferry_exchange_request q;

        base(&r, tok, ST_JWT);
        add(&r, "resource", REG);
        q = (ferry_exchange_request){
            .params = r.p, .n_params = r.n, .requested_ttl = cases[i].requested};
        cr_assert_eq(ferry_exchange_token(g_ex, &q, &resp), 0, "%s", resp.reason);
        cr_assert_eq(resp.expires_in, cases[i].want, "case %zu: %lld", i,
                     (long long)resp.expires_in);
        /* No scope requested: none granted, none in the token. */
        cr_assert_null(resp.scope);
        ferry_exchange_response_release(&resp);
        free(tok);
    }
    /* max_ttl below the policy's cap wins. */
    o = (ferry_exchange_options){.max_ttl = 60};
    open_exchange(&o);
    {
        struct req r = {0};
        ferry_exchange_response resp;
        char *tok = idp_token("alice");
        base(&r, tok, ST_JWT);
        cr_assert_eq(run(&r, &resp), 0, "%s", resp.reason);
        cr_assert_eq(resp.expires_in, 60);
        ferry_exchange_response_release(&resp);
        free(tok);
    }
}

Test(exchange, jwt_requested_token_type_and_authenticated_client_id)
{
    struct req r = {0};
    ferry_exchange_response resp;
    ferry_exchange_request q;
    char *tok = idp_token("alice");
    ferry_identity *id;

    base(&r, tok, ST_JWT);
    add(&r, "requested_token_type", ST_JWT);
    add(&r, "client_id", "trainer");
    q = (ferry_exchange_request){.params = r.p, .n_params = r.n, .client_id = "trainer"};
    cr_assert_eq(ferry_exchange_token(g_ex, &q, &resp), 0, "%s", resp.reason);
    cr_assert_str_eq(resp.issued_token_type, ST_JWT);
    id = verify_minted(resp.access_token, REG);
    cr_assert_str_eq(json_string_value(json_object_get(id->claims, "client_id")), "trainer");
    ferry_identity_free(id);
    ferry_exchange_response_release(&resp);
    free(tok);

    /* A client_id parameter that differs from the authenticated client is refused. */
    tok = idp_token("alice");
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    add(&r, "client_id", "someone-else");
    q = (ferry_exchange_request){.params = r.p, .n_params = r.n, .client_id = "trainer"};
    cr_assert_eq(ferry_exchange_token(g_ex, &q, &resp), -FERRY_EREFUSED);
    cr_assert_eq(resp.error, FERRY_EXCHANGE_INVALID_REQUEST);
    ferry_exchange_response_release(&resp);
    free(tok);

    /* Without an authenticated client the parameter is only logged, never trusted. */
    tok = idp_token("alice");
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    add(&r, "client_id", "claimed");
    cr_assert_eq(run(&r, &resp), 0, "%s", resp.reason);
    id = verify_minted(resp.access_token, REG);
    cr_assert_str_eq(json_string_value(json_object_get(id->claims, "client_id")), "ferry");
    ferry_identity_free(id);
    ferry_exchange_response_release(&resp);
    free(tok);
}

/* ---- request errors -------------------------------------------------------------------------- */

Test(exchange, grant_type_errors)
{
    char *tok = idp_token("alice");
    struct req r = {0};

    add(&r, "subject_token", tok);
    add(&r, "subject_token_type", ST_JWT);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "grant_type"));

    memset(&r, 0, sizeof(r));
    add(&r, "grant_type", "client_credentials");
    add(&r, "subject_token", tok);
    add(&r, "subject_token_type", ST_JWT);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_UNSUPPORTED_GRANT_TYPE, NULL));

    /* An empty value counts as omitted (RFC 6749 §3.1). */
    memset(&r, 0, sizeof(r));
    add(&r, "grant_type", "");
    add(&r, "subject_token", tok);
    add(&r, "subject_token_type", ST_JWT);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "missing grant_type"));
    free(tok);
}

Test(exchange, missing_and_unknown_token_types)
{
    char *tok = idp_token("alice");
    struct req r = {0};
    json_t *rec;

    add(&r, "grant_type", GT);
    add(&r, "subject_token_type", ST_JWT);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "missing subject_token"));

    memset(&r, 0, sizeof(r));
    add(&r, "grant_type", GT);
    add(&r, "subject_token", tok);
    rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "missing subject_token_type");
    /* Even refused at the parameters, the presented token is named by reference. */
    cr_assert_eq(strlen(rec_str(rec, "token", "sha256")), 64);
    json_decref(rec);

    memset(&r, 0, sizeof(r));
    base(&r, tok, "urn:ietf:params:oauth:token-type:saml2");
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "subject_token_type"));

    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    add(&r, "requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token");
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "requested_token_type"));

    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    add(&r, "actor_token_type", ST_JWT);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "actor_token"));

    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    add(&r, "actor_token", tok);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "actor_token_type"));

    /* An accepted-types list narrower than all: access_token only. */
    open_exchange(
        &(ferry_exchange_options){.subject_token_types = FERRY_EXCHANGE_TYPE_ACCESS_TOKEN});
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "subject_token_type"));
    free(tok);
}

Test(exchange, token_type_must_fit_the_issuer_profile)
{
    char *tok = idp_token("alice"); /* id_token profile */
    struct req r = {0};

    base(&r, tok, ST_AT);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "token type"));
    free(tok);
}

Test(exchange, duplicates_of_single_valued_parameters_are_refused)
{
    static const char *const singles[] = {
        "grant_type", "subject_token", "subject_token_type", "scope",     "requested_token_type",
        "client_id",  "actor_token",   "actor_token_type",   "totp_code", "totp_account"};
    char *tok = idp_token("alice");

    for (size_t i = 0; i < sizeof(singles) / sizeof(singles[0]); i++) {
        struct req r = {0};
        json_t *rec;
        base(&r, tok, ST_JWT);
        add(&r, singles[i], "x");
        add(&r, singles[i], "x");
        rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "more than once");
        cr_assert_not_null(strstr(rec_str(rec, "details", "reason"), singles[i]));
        json_decref(rec);
        /* an empty first occurrence does not make the second one the only one */
        memset(&r, 0, sizeof(r));
        add(&r, singles[i], "");
        base(&r, tok, ST_JWT);
        if (strcmp(singles[i], "grant_type") != 0 && strcmp(singles[i], "subject_token") != 0 &&
            strcmp(singles[i], "subject_token_type") != 0)
            add(&r, singles[i], "x");
        rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "more than once");
        json_decref(rec);
    }
    free(tok);
}

Test(exchange, hostile_parameter_values)
{
    char *tok = idp_token("alice");
    char *big = malloc(FERRY_EXCHANGE_MAX_BYTES + 2);
    struct req r = {0};

    cr_assert_not_null(big);
    memset(big, 'a', FERRY_EXCHANGE_MAX_BYTES + 1);
    big[FERRY_EXCHANGE_MAX_BYTES + 1] = '\0';

    /* A NUL inside a value (form-decoded %00): refused, not cut short. */
    base(&r, tok, ST_JWT);
    add_len(&r, "audience", REG "\0evil", strlen(REG) + 5);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "audience"));

    /* Control bytes, invalid UTF-8, overlong forms, C1 controls. */
    static const char *const bad_text[] = {"a\nb",     "a\rb",         "\x7f",     "\xc3",
                                           "\xc0\xaf", "\xed\xa0\x80", "\xc2\x85", "\xff"};
    for (size_t i = 0; i < sizeof(bad_text) / sizeof(bad_text[0]); i++) {
        memset(&r, 0, sizeof(r));
        base(&r, tok, ST_JWT);
        add(&r, "audience", bad_text[i]);
        json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "invalid characters"));
    }
    /* Valid UTF-8 in an audience is text, not an error (the policy then refuses it). */
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    add(&r, "audience", "https://r\xc3\xa9gistry.test");
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_TARGET, NULL));

    /* A space in a token. */
    memset(&r, 0, sizeof(r));
    add(&r, "grant_type", GT);
    add(&r, "subject_token", " x");
    add(&r, "subject_token_type", ST_JWT);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "subject_token"));

    /* Per-parameter limits. */
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    add_len(&r, "audience", big, FERRY_EXCHANGE_TARGET_MAX + 1);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "too long"));
    memset(&r, 0, sizeof(r));
    add(&r, "grant_type", GT);
    add_len(&r, "subject_token", big, FERRY_JWS_MAX_LEN + 1);
    add(&r, "subject_token_type", ST_JWT);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "subject_token too long"));
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    add_len(&r, "scope", big, FERRY_EXCHANGE_SCOPE_MAX + 1);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_SCOPE, "too long"));

    /* The whole request, also through unknown parameters. */
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    add_len(&r, "padding", big, FERRY_EXCHANGE_MAX_BYTES + 1);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "too large"));
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    while (r.n <= FERRY_EXCHANGE_MAX_PARAMS)
        add(&r, "x", "y");
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "too many parameters"));

    /* Too many targets. */
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    for (int i = 0; i <= FERRY_EXCHANGE_MAX_TARGETS; i++)
        add(&r, i % 2 ? "audience" : "resource", REG);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "too many audience"));

    /* A NULL value pointer with a length is the HTTP layer's bug: a server error. */
    {
        ferry_exchange_param p[] = {{"grant_type", 10, NULL, 5}};
        ferry_exchange_request q = {.params = p, .n_params = 1};
        ferry_exchange_response resp;
        cr_assert_eq(ferry_exchange_token(g_ex, &q, &resp), -EINVAL);
        cr_assert_eq(resp.error, FERRY_EXCHANGE_SERVER_ERROR);
        cr_assert_eq(resp.http_status, 500);
        cr_assert_null(resp.access_token);
        ferry_exchange_response_release(&resp);
    }
    free(big);
    free(tok);
}

Test(exchange, scope_and_resource_syntax)
{
    static const char *const bad_scopes[] = {" models:read", "models:read ", "a  b",
                                             "a\"b",         "a\\b",         "caf\xc3\xa9"};
    char *tok = idp_token("alice");
    struct req r = {0};

    for (size_t i = 0; i < sizeof(bad_scopes) / sizeof(bad_scopes[0]); i++) {
        memset(&r, 0, sizeof(r));
        base(&r, tok, ST_JWT);
        add(&r, "scope", bad_scopes[i]);
        json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_SCOPE, "scope"));
    }
    static const char *const bad_resources[] = {"registry.test", "https://r.test/#frag", "1x:y",
                                                "https:", "/path"};
    for (size_t i = 0; i < sizeof(bad_resources) / sizeof(bad_resources[0]); i++) {
        memset(&r, 0, sizeof(r));
        base(&r, tok, ST_JWT);
        add(&r, "resource", bad_resources[i]);
        json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_TARGET, "absolute URI"));
    }
    free(tok);
}

/* ---- C: bad subject tokens ------------------------------------------------------------------- */

static void expect_bad_subject(char *tok, const char *reason_has)
{
    struct req r = {0};
    json_t *rec;

    base(&r, tok, ST_JWT);
    add(&r, "audience", REG);
    rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "subject_token is invalid");
    cr_assert_not_null(strstr(rec_str(rec, "details", "reason"), reason_has), "reason: %s",
                       rec_str(rec, "details", "reason"));
    cr_assert_str_eq(rec_str(rec, "subject", NULL), "");
    log_has_no(tok);
    json_decref(rec);
    free(tok);
}

Test(exchange, forged_expired_unknown_issuer_and_confused_subject_tokens)
{
    json_t *c;

    /* signed by a key the IdP never published */
    expect_bad_subject(sign_claims(g_stranger_key, "JWT", claims(IDP, "alice")), "unknown_kid");
    /* forged: alice's signature over a payload naming carol */
    {
        char *good = idp_token("alice"), *other = idp_token("carol"), *forged;
        const char *gdot = strchr(good, '.'), *gsig = strrchr(good, '.');
        const char *odot = strchr(other, '.'), *osig = strrchr(other, '.');
        cr_assert(asprintf(&forged, "%.*s%.*s%s", (int)(gdot - good), good, (int)(osig - odot),
                           odot, gsig) > 0);
        free(good);
        free(other);
        expect_bad_subject(forged, "bad_signature");
    }
    /* expired beyond leeway */
    c = claims(IDP, "alice");
    json_object_set_new(c, "exp", json_integer(NOW - 120));
    json_object_set_new(c, "iat", json_integer(NOW - 600));
    expect_bad_subject(sign_claims(g_idp_key, "JWT", c), "expired");
    /* unknown issuer */
    expect_bad_subject(sign_claims(g_idp_key, "JWT", claims("https://evil.test", "alice")),
                       "unknown_issuer");
    /* wrong audience */
    c = claims(IDP, "alice");
    json_object_set_new(c, "aud", json_string("someone-else"));
    expect_bad_subject(sign_claims(g_idp_key, "JWT", c), "bad_audience");
    /* typ confusion: an at+jwt to an id_token issuer */
    expect_bad_subject(sign_claims(g_idp_key, "at+jwt", claims(IDP, "alice")), "bad_typ");
    /* garbage */
    expect_bad_subject(strdup("not.a.token"), "subject_token:");
}

Test(exchange, one_time_subject_token_is_not_accepted_twice)
{
    char *tok = idp_token("alice");
    struct req r = {0};
    ferry_exchange_response resp;
    json_t *rec;

    open_exchange(&(ferry_exchange_options){.flags = FERRY_EXCHANGE_ONE_TIME_SUBJECT});
    base(&r, tok, ST_JWT);
    cr_assert_eq(run(&r, &resp), 0, "%s", resp.reason);
    ferry_exchange_response_release(&resp);
    rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "subject_token is invalid");
    cr_assert_not_null(strstr(rec_str(rec, "details", "reason"), "replayed"));
    json_decref(rec);
    free(tok);

    /* Without the flag the same token may be exchanged again. */
    open_exchange(NULL);
    tok = idp_token("alice");
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    cr_assert_eq(run(&r, &resp), 0, "%s", resp.reason);
    ferry_exchange_response_release(&resp);
    cr_assert_eq(run(&r, &resp), 0, "%s", resp.reason);
    ferry_exchange_response_release(&resp);
    free(tok);
}

/* ---- E7 and the policy refusals ------------------------------------------------------------- */

Test(exchange, e7_scope_or_audience_outside_the_policy_is_refused)
{
    char *tok = idp_token("alice");
    struct req r = {0};
    json_t *rec;

    base(&r, tok, ST_JWT);
    add(&r, "scope", "models:read admin");
    rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_SCOPE, "scope");
    /* the refusal names the policy for operators, not for the client */
    cr_assert_not_null(strstr(rec_str(rec, "details", "reason"), "invalid_scope"));
    json_decref(rec);

    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    add(&r, "audience", REG);
    add(&r, "audience", "https://bank.test");
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_TARGET, NULL));

    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    add(&r, "resource", "https://bank.test/api");
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_TARGET, NULL));
    free(tok);
}

Test(exchange, no_matching_policy_is_invalid_target)
{
    char *tok = idp_token("nobody");
    struct req r = {0};
    json_t *rec;

    base(&r, tok, ST_JWT);
    add(&r, "audience", REG);
    rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_TARGET, "no token can be issued");
    cr_assert_str_eq(rec_str(rec, "subject", NULL), "nobody");
    cr_assert_not_null(strstr(rec_str(rec, "details", "reason"), "access_denied"));
    json_decref(rec);
    free(tok);
}

Test(exchange, several_granted_audiences_need_one_named)
{
    char *tok = idp_token("carol");
    struct req r = {0};
    ferry_exchange_response resp;

    base(&r, tok, ST_JWT);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_TARGET, NULL));
    add(&r, "audience", OTHER);
    cr_assert_eq(run(&r, &resp), 0, "%s", resp.reason);
    ferry_exchange_response_release(&resp);
    free(tok);
}

/* ---- delegation ------------------------------------------------------------------------------ */

Test(exchange, actor_token_puts_an_act_claim_in_the_token)
{
    char *sub = idp_token("alice"), *act = ci_token("deployer");
    struct req r = {0};
    ferry_exchange_response resp;
    ferry_identity *id;
    json_t *a, *rec;
    size_t before = n_records();

    base(&r, sub, ST_ID);
    add(&r, "actor_token", act);
    add(&r, "actor_token_type", ST_AT);
    add(&r, "scope", "models:read");
    cr_assert_eq(run(&r, &resp), 0, "%s", resp.reason);
    /* min(subject policy 600, actor policy 120) */
    cr_assert_eq(resp.expires_in, 120);
    id = verify_minted(resp.access_token, REG);
    cr_assert_str_eq(id->subject, "alice");
    a = json_object_get(id->claims, "act");
    cr_assert(json_is_object(a));
    cr_assert_str_eq(json_string_value(json_object_get(a, "sub")), "deployer");
    cr_assert_str_eq(json_string_value(json_object_get(a, "iss")), CI);
    cr_assert_null(json_object_get(a, "act"));
    rec = one_new_record(before);
    cr_assert_str_eq(rec_str(json_object_get(rec, "details"), "actor", "sub"), "deployer");
    cr_assert_str_eq(json_string_value(json_array_get(
                         json_object_get(json_object_get(rec, "details"), "actor_policies"), 0)),
                     "ci-deployer");
    json_decref(rec);
    log_has_no(act);

    ferry_identity_free(id);
    ferry_exchange_response_release(&resp);
    free(sub);
    free(act);
}

Test(exchange, a_delegation_chain_is_nested_under_the_new_actor)
{
    json_t *prior = json_pack("{s:s, s:s}", "sub", "scheduler", "iss", "https://sched.test");
    char *sub = ferry_token(prior), *act = ci_token("deployer");
    struct req r = {0};
    ferry_exchange_response resp;
    ferry_identity *id;
    json_t *a, *inner;

    base(&r, sub, ST_AT);
    add(&r, "actor_token", act);
    add(&r, "actor_token_type", ST_JWT);
    cr_assert_eq(run(&r, &resp), 0, "%s", resp.reason);
    id = verify_minted(resp.access_token, REG);
    a = json_object_get(id->claims, "act");
    cr_assert_str_eq(json_string_value(json_object_get(a, "sub")), "deployer");
    cr_assert_str_eq(json_string_value(json_object_get(a, "iss")), CI);
    inner = json_object_get(a, "act");
    cr_assert_str_eq(json_string_value(json_object_get(inner, "sub")), "scheduler");
    cr_assert_str_eq(json_string_value(json_object_get(inner, "iss")), "https://sched.test");
    cr_assert_null(json_object_get(inner, "act"));
    /* src_iss is the subject token's issuer (ferry itself here) */
    cr_assert_str_eq(json_string_value(json_object_get(id->claims, "src_iss")), FERRY_ISS);
    ferry_identity_free(id);
    ferry_exchange_response_release(&resp);
    free(sub);

    /* Without an actor the subject's chain is carried over unchanged. */
    prior = json_pack("{s:s, s:s}", "sub", "scheduler", "iss", "https://sched.test");
    sub = ferry_token(prior);
    memset(&r, 0, sizeof(r));
    base(&r, sub, ST_AT);
    cr_assert_eq(run(&r, &resp), 0, "%s", resp.reason);
    id = verify_minted(resp.access_token, REG);
    a = json_object_get(id->claims, "act");
    cr_assert_str_eq(json_string_value(json_object_get(a, "sub")), "scheduler");
    cr_assert_null(json_object_get(a, "act"));
    ferry_identity_free(id);
    ferry_exchange_response_release(&resp);
    free(sub);

    /* A chain already FERRY_MINT_ACT_MAX_DEPTH deep cannot take one more actor. */
    prior = NULL;
    for (int i = 0; i < FERRY_MINT_ACT_MAX_DEPTH; i++) {
        json_t *o = json_pack("{s:s}", "sub", "hop");
        if (prior)
            json_object_set_new(o, "act", prior);
        prior = o;
    }
    sub = ferry_token(json_incref(prior));
    memset(&r, 0, sizeof(r));
    base(&r, sub, ST_AT);
    add(&r, "actor_token", act);
    add(&r, "actor_token_type", ST_AT);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "delegation chain"));
    free(sub);
    /* ... but is carried as it is without a new actor */
    sub = ferry_token(prior);
    memset(&r, 0, sizeof(r));
    base(&r, sub, ST_AT);
    cr_assert_eq(run(&r, &resp), 0, "%s", resp.reason);
    ferry_exchange_response_release(&resp);
    free(sub);

    /* Malformed chains: not an object, no sub, non-string iss. */
    json_t *bad[] = {json_string("scheduler"), json_pack("{s:s}", "iss", "https://x.test"),
                     json_pack("{s:s, s:i}", "sub", "s", "iss", 5)};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sub = ferry_token(bad[i]);
        memset(&r, 0, sizeof(r));
        base(&r, sub, ST_AT);
        json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "delegation chain"));
        free(sub);
    }
    free(act);
}

Test(exchange, the_actor_must_verify_and_be_allowed)
{
    char *sub = idp_token("alice"), *act;
    struct req r = {0};
    json_t *rec;
    ferry_exchange_response resp;

    /* forged actor token: refused, and a one-time subject token is not used up */
    open_exchange(&(ferry_exchange_options){.flags = FERRY_EXCHANGE_ONE_TIME_SUBJECT});
    act = sign_claims(g_stranger_key, "at+jwt", claims(CI, "deployer"));
    base(&r, sub, ST_JWT);
    add(&r, "actor_token", act);
    add(&r, "actor_token_type", ST_JWT);
    rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "actor_token is invalid");
    cr_assert_not_null(strstr(rec_str(rec, "details", "reason"), "actor_token"));
    json_decref(rec);
    free(act);
    /* ... the subject token was not used up by the refused actor */
    memset(&r, 0, sizeof(r));
    base(&r, sub, ST_JWT);
    cr_assert_eq(run(&r, &resp), 0, "%s", resp.reason);
    ferry_exchange_response_release(&resp);
    open_exchange(NULL);

    /* an actor no policy lets act for the request */
    act = ci_token("intruder");
    memset(&r, 0, sizeof(r));
    base(&r, sub, ST_JWT);
    add(&r, "actor_token", act);
    add(&r, "actor_token_type", ST_JWT);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "not allowed to act"));

    /* a scope the subject may have but the actor may not */
    free(act);
    act = ci_token("deployer");
    memset(&r, 0, sizeof(r));
    base(&r, sub, ST_JWT);
    add(&r, "actor_token", act);
    add(&r, "actor_token_type", ST_JWT);
    add(&r, "scope", "data:read");
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "not allowed to act"));

    /* ACTOR_UNCHECKED: a verified actor suffices; the subject's TTL applies */
    open_exchange(&(ferry_exchange_options){.flags = FERRY_EXCHANGE_ACTOR_UNCHECKED});
    cr_assert_eq(run(&r, &resp), 0, "%s", resp.reason);
    cr_assert_eq(resp.expires_in, 600);
    ferry_exchange_response_release(&resp);
    free(act);
    free(sub);
}

/* ---- fail closed on the audit log ---------------------------------------------------------- */

Test(exchange, audit_log_write_failure_issues_nothing)
{
    char *tok = idp_token("alice");
    struct req r = {0};
    ferry_exchange_response resp;
    struct rlimit rl, saved;
    struct stat st;
    json_t *body = NULL;
    size_t before = n_records();
    int ret;

    base(&r, tok, ST_JWT);
    add(&r, "scope", "models:read");
    cr_assert_eq(stat(g_log_path, &st), 0);
    signal(SIGXFSZ, SIG_IGN);
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    rl = saved;
    rl.rlim_cur = (rlim_t)st.st_size + 50;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    ret = run(&r, &resp);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    cr_assert_eq(ret, -EFBIG, "ret %d (%s)", ret, resp.reason);
    cr_assert_eq(resp.error, FERRY_EXCHANGE_SERVER_ERROR);
    cr_assert_eq(resp.http_status, 500);
    cr_assert_null(resp.access_token);
    cr_assert_null(resp.scope);
    cr_assert_str_eq(resp.jti, "");
    cr_assert_eq(resp.audit_seq, 0);
    cr_assert_not_null(strstr(resp.reason, "audit log"));
    assert_body_matches(&resp);
    cr_assert_eq(ferry_exchange_response_to_json(&resp, &body), 0);
    cr_assert_str_eq(json_string_value(json_object_get(body, "error")), "server_error");
    cr_assert_null(json_object_get(body, "access_token"));
    json_decref(body);
    ferry_exchange_response_release(&resp);

    /* The log is poisoned: refusals fail closed too (server error, not the 4xx). */
    memset(&r, 0, sizeof(r));
    add(&r, "grant_type", "password");
    ret = run(&r, &resp);
    cr_assert_eq(ret, -EBADFD);
    cr_assert_eq(resp.error, FERRY_EXCHANGE_SERVER_ERROR);
    ferry_exchange_response_release(&resp);
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    cr_assert_eq(run(&r, &resp), -EBADFD);
    cr_assert_null(resp.access_token);
    ferry_exchange_response_release(&resp);
    cr_assert_eq(n_records(), before);
    free(tok);
}

/* ---- step-up --------------------------------------------------------------------------------- */

static void code_at(int64_t t, char out[9])
{
    cr_assert_eq(ferry_totp_hotp(g_alice_secret, FERRY_TOTP_SECRET_LEN,
                                 (uint64_t)(t / FERRY_TOTP_PERIOD), FERRY_TOTP_DIGITS, out),
                 0);
}

Test(exchange, step_up_with_totp)
{
    char *tok = idp_token("alice"), code[9];
    struct req r = {0};
    ferry_exchange_response resp;
    ferry_identity *id;
    json_t *rec;
    size_t before;

    /* Without a code: refused, with the hint. */
    base(&r, tok, ST_JWT);
    add(&r, "scope", "models:publish");
    rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "step-up required");
    cr_assert_not_null(strstr(rec_str(rec, "details", "reason"), "step_up_required"));
    json_decref(rec);
    cr_assert_eq(run(&r, &resp), -FERRY_EREFUSED);
    cr_assert(resp.step_up_required);
    ferry_exchange_response_release(&resp);

    /* A wrong code: invalid_grant. */
    code_at(g_now, code);
    code[0] = code[0] == '9' ? '0' : (char)(code[0] + 1);
    add(&r, "totp_code", code);
    rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_GRANT, "not accepted");
    cr_assert_not_null(strstr(rec_str(rec, "details", "reason"), "bad_code"));
    log_has_no(code);
    json_decref(rec);

    /* The right code: granted, scope publish, TTL of the step-up policy (300). */
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    add(&r, "scope", "models:publish models:read");
    code_at(g_now, code);
    add(&r, "totp_code", code);
    add(&r, "totp_account", "alice");
    before = n_records();
    cr_assert_eq(run(&r, &resp), 0, "%s: %s", ferry_exchange_error_name(resp.error), resp.reason);
    cr_assert_eq(resp.expires_in, 300);
    cr_assert_str_eq(resp.scope, "models:publish models:read");
    id = verify_minted(resp.access_token, REG);
    cr_assert_str_eq(json_string_value(json_object_get(id->claims, "scope")),
                     "models:publish models:read");
    ferry_identity_free(id);
    ferry_exchange_response_release(&resp);
    rec = one_new_record(before);
    cr_assert(json_is_true(json_object_get(json_object_get(rec, "details"), "step_up")));
    json_decref(rec);
    log_has_no(code);

    /* The same code again: a replay. */
    rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_GRANT, "not accepted");
    cr_assert_not_null(strstr(rec_str(rec, "details", "reason"), "replayed"));
    json_decref(rec);

    /* Another account than the subject's: refused before any code is looked at. */
    g_now += FERRY_TOTP_PERIOD;
    free(tok);
    tok = idp_token("alice");
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_JWT);
    add(&r, "scope", "models:publish");
    code_at(g_now, code);
    add(&r, "totp_code", code);
    add(&r, "totp_account", "bob");
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "totp_account"));
    /* ... so the code is still good for alice */
    r.n--;
    cr_assert_eq(run(&r, &resp), 0, "%s", resp.reason);
    ferry_exchange_response_release(&resp);

    /* No TOTP store configured: step-up impossible. */
    {
        ferry_exchange *ex = NULL;
        ferry_exchange_options o = {.clock = test_clock};
        ferry_exchange_request q = {.params = r.p, .n_params = r.n};
        cr_assert_eq(ferry_exchange_new(g_oidc, g_store, g_mint, g_log, &o, &ex, NULL, 0), 0);
        cr_assert_eq(ferry_exchange_token(ex, &q, &resp), -FERRY_EREFUSED);
        cr_assert_eq(resp.error, FERRY_EXCHANGE_INVALID_REQUEST);
        cr_assert_not_null(strstr(resp.error_description, "not available"));
        ferry_exchange_response_release(&resp);
        ferry_exchange_free(ex);
    }
    free(tok);
}

/* ---- API ------------------------------------------------------------------------------------- */

Test(exchange, error_names_and_statuses)
{
    static const struct {
        ferry_exchange_error e;
        const char *name;
        int status;
    } t[] = {
        {FERRY_EXCHANGE_OK, "ok", 200},
        {FERRY_EXCHANGE_INVALID_REQUEST, "invalid_request", 400},
        {FERRY_EXCHANGE_INVALID_CLIENT, "invalid_client", 401},
        {FERRY_EXCHANGE_INVALID_GRANT, "invalid_grant", 400},
        {FERRY_EXCHANGE_UNSUPPORTED_GRANT_TYPE, "unsupported_grant_type", 400},
        {FERRY_EXCHANGE_INVALID_SCOPE, "invalid_scope", 400},
        {FERRY_EXCHANGE_INVALID_TARGET, "invalid_target", 400},
        {FERRY_EXCHANGE_SERVER_ERROR, "server_error", 500},
        {FERRY_EXCHANGE_TEMPORARILY_UNAVAILABLE, "temporarily_unavailable", 503},
        {FERRY_EXCHANGE_SLOW_DOWN, "slow_down", 429},
    };

    cr_assert_eq(sizeof(t) / sizeof(t[0]), FERRY_EXCHANGE_ERROR_MAX);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        cr_assert_str_eq(ferry_exchange_error_name(t[i].e), t[i].name);
        cr_assert_eq(ferry_exchange_error_status(t[i].e), t[i].status);
    }
    cr_assert_null(ferry_exchange_error_name(FERRY_EXCHANGE_ERROR_MAX));
    cr_assert_eq(ferry_exchange_error_status(FERRY_EXCHANGE_ERROR_MAX), 500);
}

Test(exchange, options_and_arguments_refused)
{
    ferry_exchange *ex = NULL;
    char err[256];
    ferry_exchange_response resp;
    static const ferry_exchange_options bad[] = {
        {.max_ttl = -1},
        {.max_ttl = FERRY_MINT_MAX_TTL_LIMIT + 1},
        {.max_ttl = 100, .default_ttl = 101},
        {.subject_token_types = 1u << 5},
        {.flags = 1u << 7},
        {.client_id = ""},
        {.client_id = "a\nb"},
        {.totp_account_claim = ""},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_assert_eq(
            ferry_exchange_new(g_oidc, g_store, g_mint, g_log, &bad[i], &ex, err, sizeof(err)),
            -EINVAL, "case %zu", i);
        cr_assert(err[0] != '\0');
        cr_assert_null(ex);
    }
    cr_assert_eq(ferry_exchange_new(g_oidc, g_store, g_mint, NULL, NULL, &ex, err, sizeof(err)),
                 -EINVAL, "an exchange without an audit log");
    cr_assert_eq(ferry_exchange_token(g_ex, NULL, &resp), -EINVAL);
    cr_assert_eq(resp.error, FERRY_EXCHANGE_SERVER_ERROR);
    ferry_exchange_response_release(&resp);
    cr_assert_eq(ferry_exchange_token(g_ex, NULL, NULL), -EINVAL);
    ferry_exchange_free(NULL);
    ferry_exchange_response_release(NULL);
}

Test(exchange, a_maximal_request_fits_in_one_record)
{
    static const char *const auds[] = {"https://a0.test", "https://a1.test", "https://a2.test",
                                       "https://a3.test", "https://a4.test", "https://a5.test",
                                       "https://a6.test", "https://a7.test"};
    char *sub = idp_token("maxi"), *act = ci_token("deployer");
    struct req r = {0};
    ferry_exchange_response resp;
    ferry_identity *id;
    json_t *rec, *d;
    size_t before = n_records();

    open_exchange(&(ferry_exchange_options){.flags = FERRY_EXCHANGE_ACTOR_UNCHECKED});
    base(&r, sub, ST_JWT);
    add(&r, "actor_token", act);
    add(&r, "actor_token_type", ST_JWT);
    add(&r, "scope", "s:1 s:2 s:1");
    add(&r, "client_id", "some-client");
    add(&r, "totp_code", "123456"); /* not needed: ignored */
    cr_assert_eq(sizeof(auds) / sizeof(auds[0]), FERRY_EXCHANGE_MAX_TARGETS);
    for (int i = 0; i < FERRY_EXCHANGE_MAX_TARGETS; i++)
        add(&r, i < 4 ? "audience" : "resource", auds[i]);
    cr_assert_eq(run(&r, &resp), 0, "%s", resp.reason);
    cr_assert_eq(resp.expires_in, 896); /* the smallest cap of the five contributors */
    cr_assert_str_eq(resp.scope, "s:1 s:2");
    id = verify_minted(resp.access_token, "https://a0.test");
    cr_assert_eq(json_array_size(json_object_get(id->claims, "aud")), 8);
    ferry_identity_free(id);
    rec = one_new_record(before);
    d = json_object_get(rec, "details");
    cr_assert_eq(json_array_size(json_object_get(d, "policies")), 4);
    cr_assert(json_is_true(json_object_get(d, "policies_truncated")));
    cr_assert_eq(json_array_size(json_object_get(json_object_get(d, "granted"), "audience")), 8);
    cr_assert_eq(json_array_size(json_object_get(json_object_get(d, "requested"), "resource")), 4);
    cr_assert_null(json_object_get(d, "step_up"));
    cr_assert_str_eq(rec_str(d, "client_id_param", NULL), "some-client");
    json_decref(rec);
    ferry_exchange_response_release(&resp);
    free(sub);
    free(act);
}

/* A refused request whose values the log will not hold (a JWT-shaped audience) still leaves one
 * record, a minimal one. */
Test(exchange, a_refusal_the_log_cannot_hold_leaves_a_minimal_record)
{
    char *tok = idp_token("alice");
    struct req r = {0};
    json_t *rec, *d;

    base(&r, tok, ST_JWT);
    add(&r, "audience", tok);
    rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_TARGET, NULL);
    d = json_object_get(rec, "details");
    cr_assert_str_eq(rec_str(d, "reason", NULL), "details refused by the audit log");
    cr_assert_null(json_object_get(d, "requested"));
    cr_assert_str_eq(rec_str(rec, "subject", NULL), "");
    json_decref(rec);
    log_has_no(tok);
    free(tok);
}

/* ---- G5: allocation-failure torture ---------------------------------------------------------- */

#define FERRY_ALLOCFAIL_NTH 1
#include "allocfail.h"

#ifdef HAVE_ALLOC_INJECTION
/* Fail the Nth allocation of one exchange (verify + policy + mint + record), N = 0, 1, ... until
 * a run sees no failure: never a crash or a leak (ASan/LSan); a failed run issues nothing and
 * answers 5xx or a refusal; every issued token has its allow record. */
Test(exchange, g5_allocation_failures_fail_closed)
{
    char *sub = idp_token("alice"), *act = ci_token("deployer");
    struct req r = {0};
    json_t *issued = json_array(), *all;
    long n;
    size_t found = 0;

    base(&r, sub, ST_JWT);
    add(&r, "actor_token", act);
    add(&r, "actor_token_type", ST_JWT);
    add(&r, "audience", REG);
    add(&r, "scope", "models:read");
    for (n = 0; n < 200000; n++) {
        ferry_exchange_response resp;
        bool hit;
        int ret;

        inject_arm(n);
        ret = run(&r, &resp);
        hit = inject_disarm();
        if (ret == 0) {
            cr_assert_eq(resp.error, FERRY_EXCHANGE_OK);
            cr_assert_not_null(resp.access_token);
            json_array_append_new(issued, json_string(resp.jti));
        } else {
            cr_assert_null(resp.access_token, "allocation %ld: a token with an error", n);
            cr_assert_neq(resp.error, FERRY_EXCHANGE_OK);
            cr_assert(resp.http_status == 400 || resp.http_status == 500 || resp.http_status == 503,
                      "allocation %ld: status %d", n, resp.http_status);
            cr_assert(hit, "allocation %ld: failed without an injected failure: %s", n,
                      resp.reason);
        }
        ferry_exchange_response_release(&resp);
        if (!hit)
            break;
    }
    cr_assert_lt(n, 200000, "the exchange never completed");
    cr_assert_gt(n, 50, "suspiciously few allocations: %ld", n);
    /* Every issued token is on record. */
    all = exchange_records();
    for (size_t i = 0; i < json_array_size(issued); i++) {
        const char *jti = json_string_value(json_array_get(issued, i));
        for (size_t j = 0; j < json_array_size(all); j++) {
            const json_t *g =
                json_object_get(json_object_get(json_array_get(all, j), "details"), "granted");
            if (g && strcmp(json_string_value(json_object_get(g, "jti")), jti) == 0) {
                found++;
                break;
            }
        }
    }
    cr_assert_eq(found, json_array_size(issued));
    cr_assert_geq(found, 1);
    json_decref(all);
    json_decref(issued);
    free(sub);
    free(act);
}
#endif

/* ---- threads --------------------------------------------------------------------------------- */

#define THREADS 4
#define PER_THREAD 40

struct worker {
    char *tokens[PER_THREAD];
    char jtis[PER_THREAD][FERRY_MINT_JTI_LEN + 1];
    int failures;
};

static void *work(void *arg)
{
    struct worker *w = arg;

    for (int i = 0; i < PER_THREAD; i++) {
        ferry_exchange_param p[] = {
            {"grant_type", strlen("grant_type"), GT, strlen(GT)},
            {"subject_token", strlen("subject_token"), w->tokens[i], strlen(w->tokens[i])},
            {"subject_token_type", strlen("subject_token_type"), ST_JWT, strlen(ST_JWT)},
            {"scope", 5, "models:read", 11},
        };
        ferry_exchange_request q = {.params = p, .n_params = 4};
        ferry_exchange_response resp;

        if (ferry_exchange_token(g_ex, &q, &resp) != 0 || !resp.access_token)
            w->failures++;
        else
            memcpy(w->jtis[i], resp.jti, sizeof(w->jtis[i]));
        ferry_exchange_response_release(&resp);
        /* the same one-time token again: always refused, whichever thread raced */
        if (ferry_exchange_token(g_ex, &q, &resp) != -FERRY_EREFUSED)
            w->failures++;
        ferry_exchange_response_release(&resp);
    }
    return NULL;
}

Test(exchange, concurrent_exchanges_each_get_one_record)
{
    static struct worker w[THREADS];
    pthread_t t[THREADS];
    size_t before = n_records();
    json_t *all;

    open_exchange(&(ferry_exchange_options){.flags = FERRY_EXCHANGE_ONE_TIME_SUBJECT});
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < PER_THREAD; j++)
            w[i].tokens[j] = idp_token("alice");
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, work, &w[i]), 0);
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < THREADS; i++) {
        cr_assert_eq(w[i].failures, 0, "thread %d: %d failures", i, w[i].failures);
        for (int j = 0; j < PER_THREAD; j++)
            free(w[i].tokens[j]);
    }
    all = exchange_records();
    cr_assert_eq(json_array_size(all), before + 2 * THREADS * PER_THREAD);
    /* every jti distinct, and each has its allow record */
    for (int i = 0; i < THREADS * PER_THREAD; i++) {
        const char *a = w[i / PER_THREAD].jtis[i % PER_THREAD];
        size_t hits = 0;
        for (int j = i + 1; j < THREADS * PER_THREAD; j++)
            cr_assert_str_neq(a, w[j / PER_THREAD].jtis[j % PER_THREAD]);
        for (size_t k = before; k < json_array_size(all); k++) {
            const char *g =
                rec_str(json_object_get(json_array_get(all, k), "details"), "granted", "jti");
            hits += g && strcmp(g, a) == 0;
        }
        cr_assert_eq(hits, 1);
    }
    json_decref(all);
}

/* ---- 503, actor types, lock-out ------------------------------------------------------------ */

Test(exchange, an_unreachable_issuer_is_temporarily_unavailable)
{
    char err[256] = "", *tok;
    struct req r = {0};
    ferry_exchange_response resp;
    size_t before = n_records();
    json_t *conf, *rec;
    ferry_jwk *k = gen_key();
    int ret;

    /* a closed loopback port: the key set cannot be fetched and nothing is cached */
    conf = json_pack("{s:s, s:[s], s:[s], s:s, s:b, s:{s:i, s:i}}", "issuer", "http://127.0.0.1:1",
                     "audiences", FERRY_AUD, "algorithms", "ES256", "jwks_uri",
                     "http://127.0.0.1:1/jwks", "allow_http_loopback", 1, "fetch",
                     "connect_timeout_ms", 500, "timeout_ms", 1000);
    cr_assert_eq(ferry_oidc_add_issuer(g_oidc, conf, err, sizeof(err)), 0, "%s", err);
    json_decref(conf);
    tok = sign_claims(k, "JWT", claims("http://127.0.0.1:1", "alice"));
    base(&r, tok, ST_JWT);
    ret = run(&r, &resp);
    cr_assert_lt(ret, 0);
    cr_assert_neq(ret, -FERRY_EREFUSED, "a fault of ours is not the client's: %s", resp.reason);
    cr_assert_eq(resp.error, FERRY_EXCHANGE_TEMPORARILY_UNAVAILABLE, "%s: %s",
                 ferry_exchange_error_name(resp.error), resp.reason);
    cr_assert_eq(resp.http_status, 503);
    cr_assert_null(resp.access_token);
    cr_assert_not_null(strstr(resp.reason, "issuer_unavailable"), "%s", resp.reason);
    ferry_exchange_response_release(&resp);
    rec = one_new_record(before);
    cr_assert_str_eq(rec_str(rec, "decision", NULL), "error");
    cr_assert_str_eq(rec_str(rec, "details", "error"), "temporarily_unavailable");
    json_decref(rec);
    ferry_jwk_unref(k);
    free(tok);
}

Test(exchange, actor_token_types)
{
    char *sub = idp_token("alice"), *act = ci_token("deployer");
    struct req r = {0};

    base(&r, sub, ST_JWT);
    add(&r, "actor_token", act);
    add(&r, "actor_token_type", "urn:example:unknown");
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "actor_token_type"));
    /* the CI issuer has the access_token profile: not an id_token */
    r.n--;
    add(&r, "actor_token_type", ST_ID);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "actor_token does not match"));
    /* narrowed accepted set */
    open_exchange(&(ferry_exchange_options){.actor_token_types = FERRY_EXCHANGE_TYPE_JWT});
    r.n--;
    add(&r, "actor_token_type", ST_AT);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "actor_token_type"));
    free(sub);
    free(act);
}

Test(exchange, totp_lock_out_gives_retry_after)
{
    char *tok = idp_token("alice"), code[9], wrong[9];
    struct req r = {0};
    ferry_exchange_response resp;
    int64_t retry = 0;

    code_at(g_now, code);
    memcpy(wrong, code, sizeof(wrong));
    wrong[5] = wrong[5] == '9' ? '0' : (char)(wrong[5] + 1);
    base(&r, tok, ST_JWT);
    add(&r, "scope", "models:publish");
    add(&r, "totp_code", wrong);
    for (int i = 0; i < FERRY_TOTP_MAX_FAILURES; i++) {
        cr_assert_eq(run(&r, &resp), -FERRY_EREFUSED);
        cr_assert_eq(resp.error, FERRY_EXCHANGE_INVALID_GRANT);
        retry = resp.retry_after;
        ferry_exchange_response_release(&resp);
    }
    cr_assert_eq(retry, FERRY_TOTP_LOCK_BASE, "the last failure locks: %lld", (long long)retry);
    /* locked: even the right code is refused, with the time left */
    r.n--;
    add(&r, "totp_code", code);
    cr_assert_eq(run(&r, &resp), -FERRY_EREFUSED);
    cr_assert_eq(resp.error, FERRY_EXCHANGE_INVALID_GRANT);
    cr_assert_gt(resp.retry_after, 0);
    cr_assert_not_null(strstr(resp.reason, "locked"), "%s", resp.reason);
    ferry_exchange_response_release(&resp);
    free(tok);
}

Test(exchange, may_act_in_the_subject_token_names_the_allowed_actor)
{
    char *act = ci_token("deployer"), *sub;
    struct req r = {0};
    ferry_exchange_response resp;
    json_t *c;
    static const struct {
        const char *may_act; /* JSON */
        const char *refused; /* description of the refusal, NULL: granted */
    } cases[] = {
        {"{\"sub\":\"deployer\",\"iss\":\"" CI "\"}", NULL},
        {"{\"sub\":\"deployer\"}", NULL},
        {"{\"iss\":\"" CI "\"}", NULL},
        {"{\"sub\":\"someone-else\"}", "not allowed to act"},
        {"{\"sub\":\"deployer\",\"iss\":\"" IDP "\"}", "not allowed to act"},
        {"{\"sub\":\"deployer \"}", "not allowed to act"},
        {"{}", "may_act is malformed"},
        {"{\"sub\":7}", "may_act is malformed"},
        {"\"deployer\"", "may_act is malformed"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_error_t e;
        c = claims(IDP, "alice");
        cr_assert_eq(
            json_object_set_new(c, "may_act", json_loads(cases[i].may_act, JSON_DECODE_ANY, &e)),
            0);
        sub = sign_claims(g_idp_key, "JWT", c);
        memset(&r, 0, sizeof(r));
        base(&r, sub, ST_JWT);
        add(&r, "actor_token", act);
        add(&r, "actor_token_type", ST_JWT);
        add(&r, "scope", "models:read");
        if (!cases[i].refused) {
            cr_assert_eq(run(&r, &resp), 0, "case %zu: %s", i, resp.reason);
            ferry_exchange_response_release(&resp);
        } else {
            json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, cases[i].refused));
        }
        /* without an actor, may_act does not matter */
        r.n -= 3;
        add(&r, "scope", "models:read");
        cr_assert_eq(run(&r, &resp), 0, "case %zu without actor: %s", i, resp.reason);
        ferry_exchange_response_release(&resp);
        free(sub);
    }
    free(act);
}

/* ---- per-identity rate limit ------------------------------------------------------------- */

static uint64_t g_rl_ns = UINT64_C(1000000000000);
static uint64_t rl_clock(void *data)
{
    (void)data;
    return g_rl_ns;
}

static ferry_ratelimit *identity_limiter(double rate, unsigned burst)
{
    ferry_ratelimit_options o = {.rate = rate, .burst = burst, .clock = rl_clock};
    ferry_ratelimit *rl = NULL;
    cr_assert_eq(ferry_ratelimit_new(&o, &rl), 0);
    return rl;
}

/* Exchange a fresh token of sub for a registry read; returns the ret and fills resp. */
static int read_as(const char *sub, const char *tok_in, ferry_exchange_response *resp)
{
    char *tok = tok_in ? NULL : idp_token(sub);
    struct req r = {0};
    int ret;

    base(&r, tok_in ? tok_in : tok, ST_JWT);
    add(&r, "audience", REG);
    add(&r, "scope", "models:read");
    ret = run(&r, resp);
    free(tok);
    return ret;
}

/* A slow_down refusal: 429, retry_after, nothing issued, one deny record naming the subject. */
static void expect_slow_down(const char *sub, const char *tok, int64_t retry)
{
    ferry_exchange_response resp;
    size_t before = n_records();
    json_t *rec, *body = NULL;

    cr_assert_eq(read_as(sub, tok, &resp), -FERRY_EREFUSED);
    cr_assert_eq(resp.error, FERRY_EXCHANGE_SLOW_DOWN, "%s: %s",
                 ferry_exchange_error_name(resp.error), resp.reason);
    cr_assert_eq(resp.http_status, 429);
    cr_assert_eq(resp.retry_after, retry);
    cr_assert_null(resp.access_token);
    cr_assert_str_eq(resp.jti, "");
    cr_assert_not_null(strstr(resp.error_description, "retry after"));
    cr_assert_not_null(strstr(resp.reason, "per-identity"));
    assert_body_matches(&resp);
    cr_assert_eq(ferry_exchange_response_to_json(&resp, &body), 0);
    cr_assert_str_eq(json_string_value(json_object_get(body, "error")), "slow_down");
    cr_assert_null(json_object_get(body, "access_token"));
    json_decref(body);
    rec = one_new_record(before);
    cr_assert_str_eq(rec_str(rec, "decision", NULL), "deny");
    cr_assert_str_eq(rec_str(rec, "subject", NULL), sub);
    cr_assert_str_eq(rec_str(rec, "details", "error"), "slow_down");
    cr_assert_str_eq(rec_str(rec, "details", "rate_limited"), "per_identity");
    cr_assert_str_eq(rec_str(rec, "details", "issuer"), IDP);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(rec, "details"),
                                                    "retry_after")),
                 retry);
    cr_assert_null(json_object_get(json_object_get(rec, "details"), "granted"));
    json_decref(rec);
    ferry_exchange_response_release(&resp);
}

static void expect_ok(const char *sub, const char *tok)
{
    ferry_exchange_response resp;
    cr_assert_eq(read_as(sub, tok, &resp), 0, "%s: %s", ferry_exchange_error_name(resp.error),
                 resp.reason);
    cr_assert_not_null(resp.access_token);
    ferry_exchange_response_release(&resp);
}

Test(exchange, per_identity_limit_refuses_with_slow_down)
{
    ferry_ratelimit *rl = identity_limiter(0.5, 2); /* one exchange per 2 s after 2 */
    ferry_exchange_response resp;
    struct req r = {0};
    char *forged;

    open_exchange(&(ferry_exchange_options){.identity_limit = rl});
    expect_ok("alice", NULL);
    expect_ok("alice", NULL);
    expect_slow_down("alice", NULL, 2);
    /* another subject has its own budget; so does the same sub of another issuer (the key
     * is the verified (issuer, subject) pair) */
    expect_ok("carol", NULL);
    {
        char *tok = ci_token("alice");
        base(&r, tok, ST_JWT);
        add(&r, "audience", REG);
        (void)run(&r, &resp);
        cr_assert_neq(resp.error, FERRY_EXCHANGE_SLOW_DOWN, "CI's alice is not IdP's alice");
        ferry_exchange_response_release(&resp);
        free(tok);
    }
    /* A token that does not verify never reaches the limit (and takes nothing from it). */
    forged = sign_claims(g_stranger_key, "JWT", claims(IDP, "carol"));
    memset(&r, 0, sizeof(r));
    base(&r, forged, ST_JWT);
    add(&r, "audience", REG);
    cr_assert_eq(run(&r, &resp), -FERRY_EREFUSED);
    cr_assert_eq(resp.error, FERRY_EXCHANGE_INVALID_REQUEST);
    ferry_exchange_response_release(&resp);
    free(forged);
    expect_ok("carol", NULL); /* carol's second token: still within her burst */

    g_rl_ns += UINT64_C(1000000000);
    expect_slow_down("alice", NULL, 1);
    g_rl_ns += UINT64_C(1000000000);
    expect_ok("alice", NULL);

    /* Off at run time (SIGHUP with rate 0): no limit. */
    cr_assert_eq(ferry_ratelimit_configure(rl, 0, 0, 0), 0);
    for (int i = 0; i < 5; i++)
        expect_ok("alice", NULL);
    ferry_exchange_free(g_ex);
    g_ex = NULL;
    ferry_ratelimit_free(rl);
}

Test(exchange, a_one_time_token_refused_for_rate_is_not_spent)
{
    ferry_ratelimit *rl = identity_limiter(1, 1);
    char *a = idp_token("alice"), *b = idp_token("alice");
    json_t *rec;
    struct req r = {0};

    open_exchange(&(ferry_exchange_options){.flags = FERRY_EXCHANGE_ONE_TIME_SUBJECT,
                                            .identity_limit = rl});
    expect_ok("alice", a);
    expect_slow_down("alice", b, 1);
    g_rl_ns += UINT64_C(1000000000);
    /* b was verified but not consumed: it works once the limit allows, and only once. */
    expect_ok("alice", b);
    g_rl_ns += UINT64_C(1000000000);
    base(&r, b, ST_JWT);
    add(&r, "audience", REG);
    add(&r, "scope", "models:read");
    rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "subject_token is invalid");
    cr_assert_not_null(strstr(rec_str(rec, "details", "reason"), "replayed"));
    json_decref(rec);
    /* Replaying the spent token did not cost alice her token: a fresh one works at once. */
    expect_ok("alice", NULL);
    g_rl_ns += UINT64_C(1000000000);
    /* and a was spent by its own exchange */
    memset(&r, 0, sizeof(r));
    g_rl_ns += UINT64_C(1000000000);
    base(&r, a, ST_JWT);
    add(&r, "audience", REG);
    rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "subject_token is invalid");
    json_decref(rec);
    free(a);
    free(b);

    /* A one-time token without jti is still refused (the consuming verification runs). */
    {
        json_t *c = claims(IDP, "carol");
        json_object_del(c, "jti");
        char *nojti = sign_claims(g_idp_key, "JWT", c);
        memset(&r, 0, sizeof(r));
        base(&r, nojti, ST_JWT);
        add(&r, "audience", REG);
        rec = expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "subject_token is invalid");
        json_decref(rec);
        free(nojti);
    }
    ferry_exchange_free(g_ex);
    g_ex = NULL;
    ferry_ratelimit_free(rl);
}

#ifdef HAVE_ALLOC_INJECTION
static uint64_t refusals(void)
{
    ferry_oidc_stats st;
    uint64_t n = 0;

    cr_assert_eq(ferry_oidc_get_stats(g_oidc, &st), 0);
    for (size_t i = 0; i < FERRY_REASON_MAX; i++)
        n += st.refused_by_reason[i];
    return n;
}

/* A one-time token that verifies but cannot be spent (here: no jti) is refused by the trust
 * store after the identity's token was taken, and that token is given back. When giving it back
 * cannot allocate, the answer and the record must still be the trust store's refusal: the
 * refund must never overwrite the decision (the record would show a refused token as an
 * internal error of the rate limit). Every allocation of the request fails in turn. */
Test(exchange, a_refused_one_time_token_stays_refused_when_the_refund_cannot_allocate)
{
    ferry_ratelimit *rl = identity_limiter(1000, 1000);
    json_t *c = claims(IDP, "alice");
    char *tok;
    bool seen = false;
    long n;

    json_object_del(c, "jti");
    tok = sign_claims(g_idp_key, "JWT", c);
    open_exchange(&(ferry_exchange_options){.flags = FERRY_EXCHANGE_ONE_TIME_SUBJECT,
                                            .identity_limit = rl});
    for (n = 0; n < 100000; n++) {
        ferry_exchange_response resp;
        uint64_t before;
        bool hit;

        g_rl_ns += UINT64_C(1000000000); /* a full bucket each time */
        /* one run without a failure first, so that caches a failure dropped are warm again
         * and the Nth allocation is the same one each time */
        (void)read_as("alice", tok, &resp);
        ferry_exchange_response_release(&resp);
        before = refusals();
        inject_arm(n);
        (void)read_as("alice", tok, &resp);
        hit = inject_disarm();
        cr_assert_null(resp.access_token, "allocation %ld: a token was issued", n);
        cr_assert_neq(resp.error, FERRY_EXCHANGE_OK);
        if (refusals() > before) {
            seen = true;
            cr_assert_null(strstr(resp.reason, "rate limit"),
                           "allocation %ld: the refused token was answered %s (%s)", n,
                           ferry_exchange_error_name(resp.error), resp.reason);
        }
        ferry_exchange_response_release(&resp);
        if (!hit)
            break;
    }
    cr_assert_lt(n, 100000);
    cr_assert(seen);
    ferry_exchange_free(g_ex);
    g_ex = NULL;
    ferry_ratelimit_free(rl);
    free(tok);
}
#endif

/* ---- the response body writer against jansson ------------------------------------------- */

static const char *const odd_texts[] = {
    "",
    "plain",
    "a \"quoted\" word",
    "back\\slash and \\\" both",
    "slash / stays",
    "tab\there, newline\nthere, cr\r, bs\b, ff\f",
    "\x01\x02\x03\x04\x05\x06\x07\x0b\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b"
    "\x1c\x1d\x1e\x1f end",
    "DEL \x7f stays",
    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91 \xef\xbf\xbf \xc2\x80 \xf4\x8f\xbf\xbf",
    "\"",
    "\\",
    "\x1f",
    "\xe2\x80\xa8 line separator stays",
};

static void fill(ferry_exchange_response *r, ferry_exchange_error e, const char *text)
{
    memset(r, 0, sizeof(*r));
    r->error = e;
    snprintf(r->error_description, sizeof(r->error_description), "%s", text);
}

Test(exchange_body, every_error_and_description_matches_jansson)
{
    ferry_exchange_response r;
    unsigned n = 0;

    for (int e = FERRY_EXCHANGE_OK + 1; e < FERRY_EXCHANGE_ERROR_MAX; e++) {
        for (size_t i = 0; i < ARRAY_SIZE(odd_texts); i++) {
            fill(&r, (ferry_exchange_error)e, odd_texts[i]);
            assert_body_matches(&r);
            n++;
        }
    }
    cr_assert_eq(n, (FERRY_EXCHANGE_ERROR_MAX - 1) * ARRAY_SIZE(odd_texts));

    /* a description that fills the whole field */
    fill(&r, FERRY_EXCHANGE_INVALID_REQUEST, "");
    memset(r.error_description, '"', sizeof(r.error_description) - 1);
    assert_body_matches(&r);
}

Test(exchange_body, success_with_and_without_scope_matches_jansson)
{
    static const int64_t ttls[] = {0, 1, 9, 10, 600, 86400, INT64_MAX, -1, INT64_MIN};
    ferry_exchange_response r;
    char *tok = strdup("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln-_w");

    cr_assert_not_null(tok);
    for (size_t t = 0; t < ARRAY_SIZE(ttls); t++) {
        for (int with_scope = 0; with_scope < 2; with_scope++) {
            for (size_t i = 0; i < ARRAY_SIZE(odd_texts); i++) {
                memset(&r, 0, sizeof(r));
                r.error = FERRY_EXCHANGE_OK;
                r.access_token = i == 0 ? tok : (char *)odd_texts[i];
                r.issued_token_type = i % 2 ? FERRY_TOKEN_TYPE_JWT : FERRY_TOKEN_TYPE_ACCESS_TOKEN;
                r.token_type = "Bearer";
                r.expires_in = ttls[t];
                r.scope = with_scope ? (char *)odd_texts[(i + 3) % ARRAY_SIZE(odd_texts)] : NULL;
                /* a description left over is not sent on success */
                snprintf(r.error_description, sizeof(r.error_description), "x\"y");
                assert_body_matches(&r);
            }
        }
    }
    free(tok);
}

/* Random descriptions of every kind of code point: many bodies, each compared. */
Test(exchange_body, random_text_matches_jansson)
{
    uint64_t x = 0x9e3779b97f4a7c15u;
    ferry_exchange_response r;

    for (int round = 0; round < 3000; round++) {
        char text[FERRY_EXCHANGE_DESCRIPTION_MAX];
        size_t n = 0;

        fill(&r, (ferry_exchange_error)(1 + round % (FERRY_EXCHANGE_ERROR_MAX - 1)), "");
        for (;;) {
            uint32_t cp;
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            switch (x % 4) {
            case 0: cp = (uint32_t)(x >> 8) % 0x80; break;
            case 1: cp = 0x80 + (uint32_t)(x >> 8) % 0x780; break;
            case 2: cp = 0x800 + (uint32_t)(x >> 8) % 0xf800; break;
            default: cp = 0x10000 + (uint32_t)(x >> 8) % 0x100000; break;
            }
            if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff))
                continue;
            size_t need = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
            if (n + need >= sizeof(text) || (x >> 40) % 97 == 0)
                break;
            if (need == 1) {
                text[n++] = (char)cp;
            } else if (need == 2) {
                text[n++] = (char)(0xc0 | cp >> 6);
                text[n++] = (char)(0x80 | (cp & 0x3f));
            } else if (need == 3) {
                text[n++] = (char)(0xe0 | cp >> 12);
                text[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                text[n++] = (char)(0x80 | (cp & 0x3f));
            } else {
                text[n++] = (char)(0xf0 | cp >> 18);
                text[n++] = (char)(0x80 | ((cp >> 12) & 0x3f));
                text[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                text[n++] = (char)(0x80 | (cp & 0x3f));
            }
        }
        text[n] = '\0';
        cr_assert(ferry_utf8_valid(text, n));
        memcpy(r.error_description, text, n + 1);
        assert_body_matches(&r);
    }
}

Test(exchange_body, refusals)
{
    ferry_exchange_response r;
    char *body = (char *)"untouched";
    size_t len = 7;
    json_t *doc = NULL;

    fill(&r, FERRY_EXCHANGE_INVALID_REQUEST, "x");
    cr_assert_eq(ferry_exchange_response_write(NULL, &body, &len), -EINVAL);
    cr_assert_eq(ferry_exchange_response_write(&r, NULL, &len), -EINVAL);
    cr_assert_eq(ferry_exchange_response_write(&r, &body, NULL), -EINVAL);

    /* an error out of range */
    fill(&r, FERRY_EXCHANGE_ERROR_MAX, "x");
    cr_assert_eq(ferry_exchange_response_write(&r, &body, &len), -EINVAL);
    cr_assert_lt(ferry_exchange_response_to_json(&r, &doc), 0);

    /* success without its members */
    memset(&r, 0, sizeof(r));
    cr_assert_eq(ferry_exchange_response_write(&r, &body, &len), -EINVAL);
    r.access_token = (char *)"t";
    cr_assert_eq(ferry_exchange_response_write(&r, &body, &len), -EINVAL);

    /* text that is not strict UTF-8: refused, as jansson refuses to hold it */
    static const char *const bad[] = {"\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                      "ok \xff", "\x80"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        fill(&r, FERRY_EXCHANGE_INVALID_SCOPE, bad[i]);
        cr_assert_eq(ferry_exchange_response_write(&r, &body, &len), -EINVAL, "%zu", i);
        cr_assert_lt(ferry_exchange_response_to_json(&r, &doc), 0, "%zu", i);
        memset(&r, 0, sizeof(r));
        r.access_token = (char *)"t";
        r.issued_token_type = FERRY_TOKEN_TYPE_JWT;
        r.scope = (char *)bad[i];
        cr_assert_eq(ferry_exchange_response_write(&r, &body, &len), -EINVAL, "%zu", i);
        cr_assert_lt(ferry_exchange_response_to_json(&r, &doc), 0, "%zu", i);
    }
    cr_assert_str_eq(body, "untouched");
    cr_assert_eq(len, 7);
}

/* ferry_json_quote itself: the ASCII-only form against jansson's JSON_ENSURE_ASCII (NUL bytes
 * included), and snprintf-like truncation. */
Test(exchange_body, json_quote_ascii_and_truncation)
{
    static const char with_nul[] = "a\0b\xf0\x9f\x94\x91";
    char out[256];

    for (size_t i = 0; i < ARRAY_SIZE(odd_texts) + 1; i++) {
        const char *s = i < ARRAY_SIZE(odd_texts) ? odd_texts[i] : with_nul;
        size_t len = i < ARRAY_SIZE(odd_texts) ? strlen(s) : sizeof(with_nul) - 1;
        for (unsigned flags = 0; flags < 2; flags++) {
            json_t *js = json_stringn(s, len);
            cr_assert_not_null(js);
            char *want = json_dumps(js, JSON_ENCODE_ANY | JSON_COMPACT |
                                            (flags ? JSON_ENSURE_ASCII : 0));
            size_t n = ferry_json_quote(out, sizeof(out), s, len, flags);
            cr_assert_eq(n, strlen(want), "%zu/%u", i, flags);
            cr_assert_eq(memcmp(out, want, n), 0, "%zu/%u: %.*s vs %s", i, flags, (int)n, out,
                         want);
            if (flags) /* ASCII, no control byte below 0x20 (DEL stays, as in jansson) */
                for (size_t k = 0; k < n; k++)
                    cr_assert(out[k] >= 0x20 && out[k] <= 0x7f, "%zu: byte %zu", i, k);
            /* every shorter room: the same length, what is written is a prefix of the whole
             * (whole escapes only), and nothing is written past cap (0xff is never in UTF-8) */
            for (size_t cap = 0; cap < n; cap++) {
                memset(out, 0xff, sizeof(out));
                cr_assert_eq(ferry_json_quote(out, cap, s, len, flags), n);
                size_t w = 0;
                while (w < cap && out[w] != '\xff')
                    w++;
                cr_assert_eq(memcmp(out, want, w), 0, "%zu/%u cap %zu", i, flags, cap);
                for (size_t k = w; k < sizeof(out); k++)
                    cr_assert_eq(out[k], '\xff', "%zu/%u cap %zu: byte %zu", i, flags, cap, k);
            }
            free(want);
            json_decref(js);
        }
    }
    cr_assert_eq(ferry_json_quote(NULL, 0, "x\xc3", 2, 0), SIZE_MAX);
    cr_assert_eq(ferry_json_quote(NULL, 0, "x", 1, 0), 3);
}

/* ---- no_wait: ferryd's event threads never wait -------------------------------------------- */

static int run_on(ferry_exchange *ex, const struct req *r, bool no_wait,
                  ferry_exchange_response *resp)
{
    ferry_exchange_request q = {.params = r->p, .n_params = r->n, .no_wait = no_wait};
    return ferry_exchange_token(ex, &q, resp);
}

/* A no_wait request on ex gives up: -FERRY_EWOULDBLOCK, a server_error placeholder naming why
 * (why_has), no audit record, nothing issued. */
static void expect_would_block(ferry_exchange *ex, const struct req *r, const char *why_has)
{
    ferry_exchange_response resp;
    size_t before = n_records();
    int ret = run_on(ex, r, true, &resp);

    cr_assert_eq(ret, -FERRY_EWOULDBLOCK, "ret %d: %s: %s", ret,
                 ferry_exchange_error_name(resp.error), resp.reason);
    cr_assert_eq(resp.error, FERRY_EXCHANGE_SERVER_ERROR);
    cr_assert_eq(resp.http_status, 500);
    cr_assert_eq(resp.audit_seq, 0);
    cr_assert_null(resp.access_token);
    cr_assert_null(resp.scope);
    cr_assert_str_eq(resp.jti, "");
    cr_assert_eq(strncmp(resp.reason, "would block", 11), 0, "reason: %s", resp.reason);
    cr_assert_not_null(strstr(resp.reason, why_has), "reason: %s", resp.reason);
    cr_assert_not(resp.step_up_required);
    cr_assert_eq(resp.retry_after, 0);
    ferry_exchange_response_release(&resp);
    cr_assert_eq(n_records(), before, "a give-up wrote an audit record");
}

/* Static issuers never make an exchange wait: with no_wait every decision is the one made
 * without it, with its one audit record (grants, refusals, one-time subjects, actors). */
Test(exchange, no_wait_decides_as_without_it)
{
    char *tok = idp_token("alice"), *act = ci_token("deployer");
    char *forged = sign_claims(g_stranger_key, "JWT", claims(IDP, "alice"));
    ferry_exchange_response resp;
    struct req r = {0};
    ferry_identity *id;
    size_t before;
    json_t *rec;

    open_exchange(&(ferry_exchange_options){.flags = FERRY_EXCHANGE_ONE_TIME_SUBJECT});
    base(&r, tok, ST_ID);
    add(&r, "audience", REG);
    add(&r, "scope", "models:read");
    before = n_records();
    cr_assert_eq(run_on(g_ex, &r, true, &resp), 0, "%s: %s",
                 ferry_exchange_error_name(resp.error), resp.reason);
    cr_assert_eq(resp.http_status, 200);
    cr_assert_eq(resp.expires_in, 600);
    cr_assert_str_eq(resp.scope, "models:read");
    cr_assert_neq(resp.audit_seq, 0);
    id = verify_minted(resp.access_token, REG);
    cr_assert_str_eq(id->subject, "alice");
    ferry_identity_free(id);
    rec = one_new_record(before);
    cr_assert_str_eq(rec_str(rec, "decision", NULL), "allow");
    cr_assert_eq(json_integer_value(json_object_get(rec, "seq")), (json_int_t)resp.audit_seq);
    json_decref(rec);
    ferry_exchange_response_release(&resp);

    /* The one-time subject was spent by the no_wait exchange: a replay either way. */
    before = n_records();
    cr_assert_eq(run_on(g_ex, &r, true, &resp), -FERRY_EREFUSED);
    cr_assert_eq(resp.error, FERRY_EXCHANGE_INVALID_REQUEST);
    cr_assert_not_null(strstr(resp.reason, "replayed"), "%s", resp.reason);
    ferry_exchange_response_release(&resp);
    rec = one_new_record(before);
    cr_assert_str_eq(rec_str(rec, "decision", NULL), "deny");
    json_decref(rec);
    json_decref(expect_refused(&r, FERRY_EXCHANGE_INVALID_REQUEST, "subject_token is invalid"));

    /* A forged subject: refused and recorded, as without no_wait. */
    memset(&r, 0, sizeof(r));
    base(&r, forged, ST_JWT);
    before = n_records();
    cr_assert_eq(run_on(g_ex, &r, true, &resp), -FERRY_EREFUSED);
    cr_assert_eq(resp.error, FERRY_EXCHANGE_INVALID_REQUEST);
    cr_assert_not_null(strstr(resp.reason, "subject_token: unknown_kid"), "%s", resp.reason);
    ferry_exchange_response_release(&resp);
    json_decref(one_new_record(before));

    /* With an actor. */
    free(tok);
    tok = idp_token("alice");
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_ID);
    add(&r, "actor_token", act);
    add(&r, "actor_token_type", ST_AT);
    add(&r, "scope", "models:read");
    cr_assert_eq(run_on(g_ex, &r, true, &resp), 0, "%s", resp.reason);
    cr_assert_eq(resp.expires_in, 120);
    ferry_exchange_response_release(&resp);
    free(forged);
    free(act);
    free(tok);
}

/* A totp_code means file I/O with a sync: no_wait gives up before anything is verified, and
 * the code and the one-time subject token are still good for the blocking retry. */
Test(exchange, no_wait_gives_up_for_a_totp_code)
{
    char *tok = idp_token("alice"), code[9];
    struct req r = {0};
    ferry_exchange_response resp;
    ferry_oidc_stats st0, st1;
    json_t *rec;
    size_t before;

    open_exchange(&(ferry_exchange_options){.flags = FERRY_EXCHANGE_ONE_TIME_SUBJECT});
    base(&r, tok, ST_JWT);
    add(&r, "scope", "models:publish models:read");
    code_at(g_now, code);
    add(&r, "totp_code", code);
    cr_assert_eq(ferry_oidc_get_stats(g_oidc, &st0), 0);
    expect_would_block(g_ex, &r, "totp_code");
    cr_assert_eq(ferry_oidc_get_stats(g_oidc, &st1), 0);
    cr_assert_eq(st1.totals.accepted + st1.totals.refused, st0.totals.accepted + st0.totals.refused,
                 "the subject token was verified");
    cr_assert_eq(st1.replay_entries, st0.replay_entries);

    before = n_records();
    cr_assert_eq(run_on(g_ex, &r, false, &resp), 0, "%s: %s",
                 ferry_exchange_error_name(resp.error), resp.reason);
    cr_assert_eq(resp.expires_in, 300);
    cr_assert_str_eq(resp.scope, "models:publish models:read");
    ferry_exchange_response_release(&resp);
    rec = one_new_record(before);
    cr_assert(json_is_true(json_object_get(json_object_get(rec, "details"), "step_up")));
    json_decref(rec);
    log_has_no(code);
    /* A malformed request with a code is refused as such, without giving up. */
    memset(&r, 0, sizeof(r));
    add(&r, "grant_type", "password");
    add(&r, "totp_code", code);
    before = n_records();
    cr_assert_eq(run_on(g_ex, &r, true, &resp), -FERRY_EREFUSED);
    cr_assert_eq(resp.error, FERRY_EXCHANGE_UNSUPPORTED_GRANT_TYPE);
    ferry_exchange_response_release(&resp);
    json_decref(one_new_record(before));
    free(tok);
}

/* An audit log that syncs every record (FERRY_EXCHANGE_AUDIT_BLOCKS): every no_wait request
 * gives up at once, even one that would be refused; without no_wait nothing changes. */
Test(exchange, no_wait_gives_up_when_the_audit_log_syncs)
{
    char *tok = idp_token("alice");
    struct req r = {0}, bad = {0};
    ferry_exchange_response resp;
    size_t before;

    open_exchange(&(ferry_exchange_options){
        .flags = FERRY_EXCHANGE_AUDIT_BLOCKS | FERRY_EXCHANGE_ONE_TIME_SUBJECT});
    base(&r, tok, ST_JWT);
    add(&r, "audience", REG);
    expect_would_block(g_ex, &r, "audit log");
    add(&bad, "grant_type", "password");
    expect_would_block(g_ex, &bad, "audit log");
    before = n_records();
    cr_assert_eq(run_on(g_ex, &r, false, &resp), 0, "%s", resp.reason);
    cr_assert_neq(resp.audit_seq, 0);
    ferry_exchange_response_release(&resp);
    json_decref(one_new_record(before));
    json_decref(expect_refused(&bad, FERRY_EXCHANGE_UNSUPPORTED_GRANT_TYPE, NULL));
    free(tok);
}

/* A trust store over the plain-http stand-in at base: the issuers named in remote (IDP, CI)
 * get their key set from base/jwks, the others are inline. */
static ferry_oidc *store_with_remote(const char *base_url, bool idp_remote, bool ci_remote)
{
    ferry_oidc_options oo = {.clock = test_clock};
    ferry_oidc *o = NULL;
    char uri[256], err[256] = "";

    cr_assert_eq(ferry_oidc_new(&oo, &o), 0);
    snprintf(uri, sizeof(uri), "%s/jwks", base_url);
    for (int i = 0; i < 2; i++) {
        bool remote = i == 0 ? idp_remote : ci_remote;
        const char *iss = i == 0 ? IDP : CI;
        json_t *conf;

        if (!remote) {
            add_issuer(o, iss, i == 0 ? g_idp_key : g_ci_key, i == 0 ? "id_token" : "access_token");
            continue;
        }
        conf = json_pack("{s:s, s:[s], s:[s], s:s, s:b, s:s, s:{s:i, s:i}}", "issuer", iss,
                         "audiences", FERRY_AUD, "algorithms", "ES256", "jwks_uri", uri,
                         "allow_http_loopback", 1, "profile",
                         i == 0 ? "id_token" : "access_token", "fetch", "connect_timeout_ms",
                         1000, "timeout_ms", 2000);
        cr_assert_eq(ferry_oidc_add_issuer(o, conf, err, sizeof(err)), 0, "%s", err);
        json_decref(conf);
    }
    return o;
}

/* A subject or actor token whose issuer's key set is not loaded yet: no_wait gives up before
 * anything happened - the one-time subject token is not spent, the per-identity limit (burst
 * 1) keeps its token, no record - and the blocking retry with the same token is granted. */
Test(exchange, no_wait_gives_up_for_an_unloaded_issuer, .timeout = 30)
{
    ferry_ratelimit *rl = identity_limiter(0.001, 1);
    char *jwks_path = path_in("idp-jwks.json"), *base_url, *tok, *act;
    ferry_jwk *keys[2] = {g_idp_key, g_ci_key};
    ferry_exchange_options eo = {.flags = FERRY_EXCHANGE_ONE_TIME_SUBJECT,
                                 .identity_limit = rl,
                                 .clock = test_clock};
    ferry_exchange *ex = NULL;
    ferry_exchange_response resp;
    ferry_oidc *o;
    tu_standin *sv;
    struct req r = {0};
    json_t *set = json_pack("{s:[]}", "keys");
    size_t before;

    for (int i = 0; i < 2; i++) {
        json_t *pub = NULL;
        cr_assert_eq(ferry_jwk_to_public_json(keys[i], &pub), 0);
        json_array_append_new(json_object_get(set, "keys"), pub);
    }
    cr_assert_eq(json_dump_file(set, jwks_path, JSON_COMPACT), 0);
    json_decref(set);
    sv = tu_standin_start(NULL, "--jwks", jwks_path, NULL);
    cr_assert_not_null(sv, "could not start tests/peers/idp_standin.py");
    base_url = tu_standin_url(sv, "");

    /* The subject's issuer is remote. */
    o = store_with_remote(base_url, true, false);
    cr_assert_eq(ferry_exchange_new(o, g_store, g_mint, g_log, &eo, &ex, NULL, 0), 0);
    tok = idp_token("alice");
    base(&r, tok, ST_JWT);
    add(&r, "audience", REG);
    add(&r, "scope", "models:read");
    for (int i = 0; i < 3; i++)
        expect_would_block(ex, &r, "subject_token");
    cr_assert_eq(tu_standin_count(sv, "/jwks"), 0);
    before = n_records();
    cr_assert_eq(run_on(ex, &r, false, &resp), 0, "%s: %s",
                 ferry_exchange_error_name(resp.error), resp.reason);
    ferry_exchange_response_release(&resp);
    json_decref(one_new_record(before));
    cr_assert_eq(tu_standin_count(sv, "/jwks"), 1);
    /* Now loaded, no_wait decides: alice's one token went to the blocking exchange... */
    act = idp_token("alice");
    {
        struct req r2 = {0};

        base(&r2, act, ST_JWT);
        add(&r2, "audience", REG);
        before = n_records();
        cr_assert_eq(run_on(ex, &r2, true, &resp), -FERRY_EREFUSED);
        cr_assert_eq(resp.error, FERRY_EXCHANGE_SLOW_DOWN, "%s", resp.reason);
        ferry_exchange_response_release(&resp);
        json_decref(one_new_record(before));
        /* ... and the subject token was spent by it (a replay costs alice nothing). */
        g_rl_ns += UINT64_C(1000000000000);
        before = n_records();
        cr_assert_eq(run_on(ex, &r, true, &resp), -FERRY_EREFUSED);
        cr_assert_not_null(strstr(resp.reason, "replayed"), "%s", resp.reason);
        ferry_exchange_response_release(&resp);
        json_decref(one_new_record(before));
        cr_assert_eq(run_on(ex, &r2, true, &resp), 0, "%s", resp.reason);
        ferry_exchange_response_release(&resp);
    }
    free(act);
    ferry_exchange_free(ex);
    ex = NULL;
    ferry_oidc_free(o);

    /* The actor's issuer is remote: the verified subject is not spent either (carol has her
     * own budget in the limiter). */
    o = store_with_remote(base_url, false, true);
    cr_assert_eq(ferry_exchange_new(o, g_store, g_mint, g_log, &eo, &ex, NULL, 0), 0);
    free(tok);
    tok = idp_token("alice");
    act = ci_token("deployer");
    g_rl_ns += UINT64_C(2000000000000); /* alice's budget back */
    memset(&r, 0, sizeof(r));
    base(&r, tok, ST_ID);
    add(&r, "actor_token", act);
    add(&r, "actor_token_type", ST_AT);
    add(&r, "scope", "models:read");
    expect_would_block(ex, &r, "actor_token");
    cr_assert_eq(tu_standin_count(sv, "/jwks"), 1);
    cr_assert_eq(run_on(ex, &r, false, &resp), 0, "%s: %s",
                 ferry_exchange_error_name(resp.error), resp.reason);
    cr_assert_eq(resp.expires_in, 120);
    ferry_exchange_response_release(&resp);
    cr_assert_eq(tu_standin_count(sv, "/jwks"), 2);
    ferry_exchange_free(ex);
    ferry_oidc_free(o);

    tu_standin_stop(sv);
    unlink(jwks_path);
    free(jwks_path);
    free(base_url);
    free(act);
    free(tok);
    ferry_ratelimit_free(rl);
}
