/* tests/unit/test_json.c - ferry_json_parse() against the call it replaces,
 *
 *     json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err)        (jansson 2.14)
 *
 * The two must agree on every input: both refuse, or both accept and build the same tree. "The
 * same tree" is checked more strictly than json_equal(): the two json_dumps() texts (compact,
 * member order kept, reals with 17 significant digits, so -0.0 and every double are exact)
 * must be byte-identical, and integers must be integers on both sides.
 *
 * The deliberate differences (ferry/json.h), and how agree() allows for them:
 *   1. size limit max_len     - agree() passes no limit (SIZE_MAX); tested on its own below.
 *   2. depth limit max_depth  - agree() passes UINT_MAX; jansson's own limit (2048 values deep)
 *                               is allowed to refuse what ferry accepts (reachable only with
 *                               inputs over 4095 bytes). Tested on its own below.
 *   3. raw NUL bytes          - ferry refuses every input with a NUL byte. jansson swallows one
 *                               NUL right after a number or literal; when it accepts an input
 *                               with NUL bytes, ferry must accept the same input with the NUL
 *                               bytes removed and build the identical tree.
 *   4. error messages         - not compared; ferry's must carry "at byte N".
 *
 * Sources of inputs: (a) every file of JSONTestSuite test_parsing (the table jts_diff[] lists
 * disagreements: there are none); (b) a corpus of realistic JWS headers, JWT claims, JWKS and
 * discovery documents under deterministic mutation (bit flips, insertion and replacement of
 * every structural character and of bytes 0x00/0x7f/0x80/0xc0/0xed/0xf4/0xff, deletion,
 * truncation, duplicated members, stacked random edits); (c) unit cases for each rule, the
 * limits, the error messages and offsets, allocation failures and concurrent use. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <criterion/logging.h>
#include <criterion/options.h>
#include <jansson.h>

#include "basic/macro.h"
#include "ferry/error.h"
#include "ferry/json.h"
#include "testutil.h"

#ifndef cr_fatal
#define cr_fatal(...) cr_assert_fail(__VA_ARGS__)
#endif

/* Make the cr_log_info counts visible in the automake .log. */
ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    if (criterion_options.logging_threshold > CRITERION_INFO)
        criterion_options.logging_threshold = CRITERION_INFO;
}

#define LIT(s) s, sizeof(s) - 1

/* ---- the oracle ------------------------------------------------------------------------- */

static char *canon(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17) | JSON_ENCODE_ANY);
}

/* Printable rendering of (at most the first 160 bytes of) buf, for failure messages. */
static const char *show(const void *buf, size_t len)
{
    static __thread char out[800];
    const unsigned char *p = buf;
    size_t n = 0;

    for (size_t i = 0; i < len && i < 160 && n + 8 < sizeof(out); i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
            out[n++] = (char)p[i];
        else
            n += (size_t)snprintf(out + n, sizeof(out) - n, "\\x%02x", p[i]);
    }
    if (len > 160)
        n += (size_t)snprintf(out + n, sizeof(out) - n, "...(%zu bytes)", len);
    out[n] = '\0';
    return out;
}

/* Same tree: same dump text, and the same integer/real types everywhere (the dump already
 * tells 1 from 1.0). */
static bool same_tree(const json_t *a, const json_t *b)
{
    char *ca = canon(a), *cb = canon(b);
    bool same = ca && cb && strcmp(ca, cb) == 0 && json_equal(a, b);

    free(ca);
    free(cb);
    return same;
}

/* Run both parsers on buf. True when they agree up to the documented differences; otherwise
 * why says how they differ. Also checks ferry's own contract: ret_json untouched on failure,
 * error codes, "at byte" in every message, "" on success. */
static bool agree(const void *buf, size_t len, char *why, size_t whylen)
{
    json_error_t je;
    json_t *a = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    json_t *b = (json_t *)&je; /* sentinel: must stay untouched on failure */
    char eb[FERRY_JSON_ERR_LEN] = "x";
    int r = ferry_json_parse(buf, len, SIZE_MAX, UINT_MAX, &b, eb, sizeof(eb));
    bool has_nul = memchr(buf, 0, len) != NULL, ok = false;

    why[0] = '\0';
    if (r == 0 && (!b || b == (json_t *)&je || (!json_is_object(b) && !json_is_array(b)))) {
        snprintf(why, whylen, "ferry returned 0 without an object or array");
        b = NULL;
        goto out;
    }
    if (r != 0 && b != (json_t *)&je) {
        snprintf(why, whylen, "ferry wrote ret_json on failure");
        b = NULL;
        goto out;
    }
    if (r != 0)
        b = NULL;
    if (r == 0 && eb[0]) {
        snprintf(why, whylen, "ferry succeeded with a message: %s", eb);
        goto out;
    }
    if (r != 0 &&
        ((r != -FERRY_EMALFORMED && r != -ERANGE) || !strstr(eb, " at byte "))) {
        snprintf(why, whylen, "ferry failed with %d (%s), message '%s'", r, ferry_strerror(r), eb);
        goto out;
    }

    if (has_nul) {
        /* Difference 3. */
        if (r == 0) {
            snprintf(why, whylen, "ferry accepted a raw NUL byte");
            goto out;
        }
        if (a) {
            char *stripped = malloc(len ? len : 1);
            size_t n = 0;
            json_t *c = NULL;
            int r2;

            cr_assert_not_null(stripped);
            for (size_t i = 0; i < len; i++)
                if (((const char *)buf)[i])
                    stripped[n++] = ((const char *)buf)[i];
            r2 = ferry_json_parse(stripped, n, SIZE_MAX, UINT_MAX, &c, eb, sizeof(eb));
            if (r2 != 0)
                snprintf(why, whylen, "jansson accepted with NUL bytes, ferry refused it without "
                         "them: %s", eb);
            else if (!same_tree(a, c))
                snprintf(why, whylen, "jansson's tree with NUL bytes != ferry's without");
            else
                ok = true;
            json_decref(c);
            free(stripped);
            goto out;
        }
        ok = true;
        goto out;
    }

    if (!a && r == 0 && json_error_code(&je) == json_error_stack_overflow) {
        ok = true; /* difference 2 */
        goto out;
    }
    if (!a != (r != 0)) {
        snprintf(why, whylen, "jansson %s (%s), ferry %s (%s)", a ? "accepts" : "refuses",
                 a ? "" : je.text, r ? "refuses" : "accepts", eb);
        goto out;
    }
    if (a && !same_tree(a, b)) {
        char *ca = canon(a), *cb = canon(b);

        snprintf(why, whylen, "trees differ: jansson %.100s / ferry %.100s", ca ? ca : "?",
                 cb ? cb : "?");
        free(ca);
        free(cb);
        goto out;
    }
    ok = true;
out:
    json_decref(a);
    json_decref(b);
    return ok;
}

/* Counts agreements; reports the first few disagreements in full, then stops the test. */
struct tally {
    size_t checked, accepted_both, failures;
};

static void check(struct tally *t, const void *buf, size_t len, const char *what)
{
    char why[400];

    t->checked++;
    if (agree(buf, len, why, sizeof(why))) {
        return;
    }
    t->failures++;
    cr_expect_fail("%s: %s\n  input: %s", what, why, show(buf, len));
    if (t->failures >= 10)
        cr_assert_fail("too many disagreements");
}

/* Nesting depth of containers in a text that jansson accepted (strings skipped). */
static unsigned container_depth(const char *p, size_t n)
{
    unsigned depth = 0, max = 0;
    bool in_str = false, esc = false;

    for (size_t i = 0; i < n; i++) {
        char c = p[i];

        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                max = depth;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return max;
}

/* ---- (a) JSONTestSuite ------------------------------------------------------------------ */

#define JTS_DIR "JSONTestSuite/test_parsing"

/* Files on which ferry_json_parse and json_loadb disagree, with the reason. None: the
 * JSONTestSuite inputs contain no raw NUL after a number or literal that jansson accepts, and
 * none is deeper than jansson's limit while valid. A new entry here is a new documented
 * difference (ferry/json.h); a listed file that starts to agree fails the test. */
static const struct {
    const char *name;
    const char *reason;
} jts_diff[] = {
    {NULL, NULL},
};

static char **list_suite(size_t *ret_n)
{
    char **names = tu_list_vectors(JTS_DIR, ".json", ret_n);

    cr_assert_not_null(names, "cannot list %s", JTS_DIR);
    return names;
}

static char *read_suite(const char *name, size_t *ret_len)
{
    char *buf = tu_read_vector(JTS_DIR, name, 4u << 20, ret_len);

    cr_assert_not_null(buf, "cannot read %s/%s", JTS_DIR, name);
    return buf;
}

static const char *jts_listed(const char *name)
{
    for (size_t i = 0; jts_diff[i].name; i++)
        if (strcmp(jts_diff[i].name, name) == 0)
            return jts_diff[i].reason;
    return NULL;
}

Test(json_suite, jsontestsuite_agrees_with_jansson)
{
    size_t n_files, n_acc = 0, n_y = 0, n_n = 0, n_i = 0;
    char **names;

    TU_REQUIRE_VECTORS();
    names = list_suite(&n_files);
    cr_assert_geq(n_files, 318, "JSONTestSuite has %zu files, expected 318", n_files);
    for (size_t f = 0; f < n_files; f++) {
        const char *reason = jts_listed(names[f]);
        size_t len;
        char *buf = read_suite(names[f], &len), why[400];
        bool ok = agree(buf, len, why, sizeof(why));
        json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);

        if (reason)
            cr_expect(!ok, "%s is listed in jts_diff[] (%s) but now agrees", names[f], reason);
        else
            cr_expect(ok, "%s: %s", names[f], why);
        n_acc += j != NULL;
        n_y += names[f][0] == 'y';
        n_n += names[f][0] == 'n';
        n_i += names[f][0] == 'i';
        json_decref(j);
        free(buf);
        free(names[f]);
    }
    free(names);
    cr_log_info("JSONTestSuite: %zu files (%zu y_, %zu n_, %zu i_), %zu accepted by both, "
                "0 disagreements",
                n_files, n_y, n_n, n_i, n_acc);
}

/* With the production depth (FERRY_JSON_MAX_DEPTH = 16 in ferry/jose.h, here spelled out):
 * every file still gets jansson's answer, except that a file jansson accepts and that nests
 * deeper than 16 is refused with -FERRY_ETOOBIG (i_structure_500_nested_arrays). */
Test(json_suite, jsontestsuite_with_depth_16)
{
    size_t n_files, n_deep = 0;
    char **names;

    TU_REQUIRE_VECTORS();
    names = list_suite(&n_files);
    for (size_t f = 0; f < n_files; f++) {
        size_t len;
        char *buf = read_suite(names[f], &len);
        json_t *a = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL), *b = NULL;
        int r = ferry_json_parse(buf, len, SIZE_MAX, 16, &b, NULL, 0);

        if (a && container_depth(buf, len) > 16) {
            cr_expect_eq(r, -FERRY_ETOOBIG, "%s: deeper than 16, got %d", names[f], r);
            n_deep++;
        } else if (a) {
            cr_expect_eq(r, 0, "%s: jansson accepts, ferry %d", names[f], r);
            if (r == 0)
                cr_expect(same_tree(a, b), "%s: trees differ", names[f]);
        } else {
            cr_expect_neq(r, 0, "%s: jansson refuses, ferry accepts", names[f]);
        }
        json_decref(a);
        json_decref(b);
        free(buf);
        free(names[f]);
    }
    free(names);
    cr_expect_eq(n_deep, 1, "expected exactly i_structure_500_nested_arrays, got %zu", n_deep);
}

/* ---- (b) corpus and deterministic mutation ---------------------------------------------- */

/* Realistic JWS protected headers, JWT claims (ID tokens and access tokens of the common
 * issuers, Kubernetes and CI tokens, ferry's own), JWKS and discovery documents, plus the
 * shapes that stress a reader: escapes, surrogate pairs, raw multi-byte UTF-8 at every length
 * boundary, numbers at every boundary, empty names/strings/containers, whitespace. */
static const struct {
    const char *text;
    size_t len;
} corpus[] = {
#define C(s) {s, sizeof(s) - 1}
    C("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}"),
    C("{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs\"}"),
    C("{\"alg\":\"EdDSA\",\"kid\":\"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k\"}"),
    C("{\"alg\":\"PS384\",\"kid\":\"2011-04-29\",\"typ\":\"JWT\",\"cty\":\"JWT\"}"),
    C("{ \"alg\" : \"RS256\" ,\n \"typ\" :\t\"JWT\" }\r\n"),
    C("{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}"),
    C("{\"alg\":\"RS256\",\"x5t#S256\":\"bm90LWEtcmVhbC10aHVtYnByaW50\",\"crit\":[\"exp\"],"
      "\"exp\":1363284000}"),
    C("{\"iss\":\"https://idp.example.com/realms/train\",\"sub\":\"system:serviceaccount:ml:"
      "trainer-7\",\"aud\":[\"ferry\",\"https://ferry.example.com\"],\"exp\":1700003600,\"iat\":"
      "1700000000,\"nbf\":1700000000,\"jti\":\"3f1c9a2e-8b7d-4e21-9c0f-5a6b7c8d9e0f\",\"scope\":"
      "\"datasets:read models:write\",\"client_id\":\"trainer-7\",\"groups\":[\"ml\",\"gpu\"],"
      "\"tenant\":{\"id\":42,\"name\":\"research\"}}"),
    C("{\"iss\":\"https://accounts.google.com\",\"azp\":\"1234987819200.apps.googleusercontent."
      "com\",\"aud\":\"1234987819200.apps.googleusercontent.com\",\"sub\":\"10769150350006150715"
      "113082367\",\"at_hash\":\"HK6E_P6Dh8Y93mRNtsDB1Q\",\"hd\":\"example.com\",\"email\":"
      "\"jsmith@example.com\",\"email_verified\":true,\"iat\":1353601026,\"exp\":1353604926,"
      "\"nonce\":\"0394852-3190485-2490358\",\"name\":\"J\\u00f6rg M\\u00fcller\",\"picture\":"
      "\"https:\\/\\/lh3.googleusercontent.com\\/a\\/photo.jpg\",\"locale\":\"de\"}"),
    C("{\"aud\":\"api://ferry\",\"iss\":\"https://sts.windows.net/72f988bf-86f1-41af-91ab-"
      "2d7cd011db47/\",\"iat\":1700000000,\"nbf\":1700000000,\"exp\":1700004000,\"aio\":\"E2ZgY"
      "Ehhb\",\"amr\":[\"pwd\",\"mfa\"],\"appid\":\"00000000-0000-0000-0000-000000000001\","
      "\"oid\":\"b4d5e6f7-0000-1111-2222-333344445555\",\"roles\":[\"Secrets.Read\",\"Tokens."
      "Exchange\"],\"scp\":\"user_impersonation\",\"tid\":\"72f988bf-86f1-41af-91ab-2d7cd011db47"
      "\",\"upn\":\"ana@contoso.com\",\"uti\":\"AbCdEf\",\"ver\":\"1.0\",\"wids\":[\"b79fbf4d-"
      "3ef9-4689-8143-76b194e85509\"]}"),
    C("{\"jti\":\"example-id\",\"sub\":\"repo:octo-org/octo-repo:environment:prod\",\"environment"
      "\":\"prod\",\"aud\":\"https://github.com/octo-org\",\"ref\":\"refs/heads/main\",\"sha\":"
      "\"example-sha\",\"repository\":\"octo-org/octo-repo\",\"repository_owner\":\"octo-org\","
      "\"actor_id\":\"12\",\"repository_visibility\":\"private\",\"run_attempt\":\"1\","
      "\"runner_environment\":\"github-hosted\",\"iss\":\"https://token.actions.githubuserconte"
      "nt.com\",\"nbf\":1632492967,\"exp\":1632493867,\"iat\":1632493567}"),
    C("{\"aud\":[\"https://kubernetes.default.svc.cluster.local\",\"ferry\"],\"exp\":1731613413,"
      "\"iat\":1700077413,\"iss\":\"https://kubernetes.default.svc.cluster.local\",\"kubernetes."
      "io\":{\"namespace\":\"ml\",\"pod\":{\"name\":\"trainer-0\",\"uid\":\"5e1b...\"},"
      "\"serviceaccount\":{\"name\":\"trainer\",\"uid\":\"9a2c\"},\"warnafter\":1700081020},"
      "\"nbf\":1700077413,\"sub\":\"system:serviceaccount:ml:trainer\"}"),
    C("{\"sub\":\"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\",\"cognito:groups\":[\"admin\"],"
      "\"token_use\":\"access\",\"scope\":\"aws.cognito.signin.user.admin\",\"auth_time\":"
      "1562190524,\"iss\":\"https://cognito-idp.us-west-2.amazonaws.com/us-west-2_example\","
      "\"exp\":1562194124,\"iat\":1562190524,\"client_id\":\"57cbishk4j24pabc1234567890\","
      "\"username\":\"janedoe@example.com\"}"),
    C("{\"iss\":\"https://ferry.example.com\",\"sub\":\"user@example.com\",\"aud\":\"https://"
      "vault.example.com\",\"client_id\":\"ci\",\"scope\":\"secrets:read\",\"act\":{\"sub\":"
      "\"ci-runner\",\"act\":{\"sub\":\"gitlab\"}},\"exp\":1700000300,\"iat\":1700000000,"
      "\"jti\":\"5f0c1c8e7d0a4b9a8e6f1a2b3c4d5e6f\"}"),
    C("{\"exp\":1700000300,\"iat\":1700000000,\"auth_time\":1699999000,\"jti\":\"a1\",\"iss\":"
      "\"https://keycloak.example.com/realms/ml\",\"aud\":\"account\",\"sub\":\"f:1:alice\","
      "\"typ\":\"Bearer\",\"azp\":\"ferry\",\"session_state\":\"s-1\",\"acr\":\"1\","
      "\"allowed-origins\":[\"*\"],\"realm_access\":{\"roles\":[\"offline_access\",\"uma\"]},"
      "\"resource_access\":{\"account\":{\"roles\":[\"manage-account\",\"view-profile\"]}},"
      "\"preferred_username\":\"alice\",\"email_verified\":false,\"phone\":null}"),
    C("{\"name\":\"J\xc3\xb6rg\",\"city\":\"\xe6\x9d\xb1\xe4\xba\xac\",\"emoji\":\"\xf0\x9f\x98\x80"
      "\",\"mixed\":\"a\xc2\x80" "b\xdf\xbf" "c\xe0\xa0\x80" "d\xed\x9f\xbf" "e\xee\x80\x80"
      "f\xef\xbf\xbf" "g\xf0\x90\x80\x80" "h\xf4\x8f\xbf\xbf\"}"),
    C("{\"u\":\"\\u0041\\u00e9\\u20ac\\ud83d\\ude00\\uDBFF\\uDFFF\\uD800\\uDC00\\uFFFF\\u007f\","
      "\"k\\u00e9y\":1,\"\\u006b\\u0065\\u0079\":2,\"\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87\":\"v\"}"),
    C("{\"path\":\"a\\/b\\\\c\",\"q\":\"\\\"quoted\\\"\",\"ctl\":\"\\b\\f\\n\\r\\t\",\"del\":"
      "\"\x7f\",\"sp\":\" \"}"),
    C("{\"score\":0.5,\"big\":1e300,\"small\":1e-300,\"neg\":-0.0,\"negint\":-0,\"exp\":1.7e9,"
      "\"E\":2E+10,\"em\":3e-5,\"frac\":123.456e-2,\"tiny\":5e-324,\"under\":1e-400,\"max\":"
      "1.7976931348623157e308,\"third\":0.3333333333333333333333333333}"),
    C("{\"max\":9223372036854775807,\"min\":-9223372036854775808,\"zero\":0,\"nearmax\":"
      "922337203685477580,\"nearmin\":-922337203685477580,\"one\":1,\"neg\":-1}"),
    C("{\"\":\"\",\"a\":[],\"o\":{},\"s\":\"\",\"ao\":[{}],\"oa\":{\"\":[]}}"),
    C("{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":[[[[\"deep\",{\"g\":[1,[2,[3]]]}]]]]}}}}}}"),
    C("[1,2,3]"),
    C("[{\"a\":1},[],\"x\",null,true,false,-1.5e-3,{\"\":{}}]"),
    C("[0,-1,1.5,-2.5e-3,123456789012,1E2,0.1,1e22,5e-324,1.7976931348623157e308,-0,0e0,0E-0]"),
    C("\n\t{\r\n\"a\"\t:\t1 , \"b\" : [ 1 , 2 ] , \"c\" : { } , \"d\" : [ ] }\n "),
    C("  [  ]  "),
    C("{}"),
    C("{\"email_verified\":false,\"phone_number\":null,\"admin\":true,\"groups\":[]}"),
    C("{\"Alg\":\"x\",\"alg\":\"y\",\"ALG\":\"z\",\"a\":1,\"aa\":2,\"aaa\":3,\"a \":4}"),
    C("{\"cnf\":{\"jwk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8"
      "Tus9uPHvRVEU\",\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}},\"x5t#S256\":"
      "\"bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2\"}"),
    C("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r1\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"0vx7ago"
      "ebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPe"
      "bWKRXjBZCiFV4n3oknjhMstn64tZ_2W\",\"e\":\"AQAB\"},{\"kty\":\"EC\",\"kid\":\"e1\",\"crv\":"
      "\"P-256\",\"x\":\"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4\",\"y\":\"4Etl6SRW2YiLUrN5vf"
      "vVHuhp7x8PxltmWWlbbM4IFyM\"},{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_"
      "7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}"),
    C("{\"issuer\":\"https://idp.example.com\",\"authorization_endpoint\":\"https://idp.example."
      "com/auth\",\"token_endpoint\":\"https://idp.example.com/token\",\"jwks_uri\":\"https://idp"
      ".example.com/jwks\",\"response_types_supported\":[\"code\",\"id_token\",\"token id_token"
      "\"],\"subject_types_supported\":[\"public\"],\"id_token_signing_alg_values_supported\":"
      "[\"RS256\",\"ES256\"],\"claims_supported\":[\"sub\",\"iss\",\"aud\",\"exp\"],\"request_uri_"
      "parameter_supported\":false}"),
    C("{\"nbf\":1700000000,\"exp\":1700000060.5,\"iat\":1.7e9,\"auth_time\":17E8}"),
    C("{\"aud\":\"single\",\"scope\":\"openid profile email offline_access\",\"groups\":[\"a\","
      "\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\"]}"),
    C("{\"description\":\"Line one\\nLine two\\tTabbed \\\"quoted\\\" and a slash \\/ and a "
      "backslash \\\\ and unicode \\u00e9\\u4e2d\\ud83d\\ude80 repeated: Line one\\nLine two\\t"
      "Tabbed \\\"quoted\\\" and a slash \\/ and a backslash \\\\ and unicode \\u00e9\\u4e2d\\ud83d"
      "\\ude80 repeated: Line one\\nLine two\\tTabbed \\\"quoted\\\" and a slash \\/ end\",\"k\":1}"),
    C("{\"a long member name with escapes \\u0041\\u0042\\u0043 that is longer than the small "
      "stack buffer of the reader so that the decoded name goes to the heap buffer instead, "
      "and then some more text to be sure that it is well over two hundred and fifty six bytes "
      "long \\n\\t ok\":[\"v\",{\"a long member name with escapes \\u0041\":1}]}"),
    C("{\"pi\":3.141592653589793,\"e\":2.718281828459045,\"tenth\":0.1,\"big\":1.0e+308,"
      "\"ten\":10.0,\"long\":0.000000000000000000000000000000000000000000000000000000000000000"
      "00000000000000001234}"),
    C("[\"\",\"\\\"\",\"\\\\\",\"\\/\",\"\\b\",\"\\f\",\"\\n\",\"\\r\",\"\\t\",\"\\u0001\","
      "\"\\u001f\",\"\\u0020\"]"),
    C("{\"sub\":\"alice\",\"aud\":[\"a\",\"b\"],\"nested\":{\"arr\":[{\"x\":[]},{\"y\":{}}],"
      "\"n\":-12.5e+3},\"ok\":true}"),
    C("{\"alg\":\"ES384\",\"kid\":\"\\u006b\\u0069\\u0064\",\"typ\":\"dpop+jwt\",\"jwk\":{\"kty"
      "\":\"EC\",\"crv\":\"P-384\"}}"),
    C("{\"exp\":9007199254740993,\"iat\":-9007199254740993,\"r\":9007199254740993.0,\"s\":"
      "4503599627370496.5}"),
#undef C
};

/* Bytes inserted and substituted at every position. */
static const unsigned char mutation_bytes[] = {
    '"', '{', '}', '[', ']', ',', ':', '\\', ' ', '0', '1', '2', '3', '4', '5', '6', '7', '8',
    '9', 'e', 'E', '.', '+', '-', 0x00, 0x7f, 0x80, 0xc0, 0xed, 0xf4, 0xff,
};

static unsigned char *mutbuf(size_t n)
{
    unsigned char *m = malloc(n ? n : 1);

    cr_assert_not_null(m);
    return m;
}

Test(json_mutation, corpus_agrees_as_is)
{
    struct tally t = {0};

    for (size_t c = 0; c < ARRAY_SIZE(corpus); c++) {
        json_t *j = NULL;
        int r = ferry_json_parse(corpus[c].text, corpus[c].len, SIZE_MAX, 64, &j, NULL, 0);

        cr_expect_eq(r, 0, "corpus %zu refused: %d", c, r);
        json_decref(j);
        check(&t, corpus[c].text, corpus[c].len, "corpus");
    }
    cr_assert_eq(t.failures, 0);
    cr_assert_geq(ARRAY_SIZE(corpus), 40);
}

Test(json_mutation, bit_flips)
{
    struct tally t = {0};

    for (size_t c = 0; c < ARRAY_SIZE(corpus); c++) {
        size_t len = corpus[c].len;
        unsigned char *m = mutbuf(len);

        for (size_t i = 0; i < len; i++)
            for (int bit = 0; bit < 8; bit++) {
                memcpy(m, corpus[c].text, len);
                m[i] ^= (unsigned char)(1u << bit);
                check(&t, m, len, "bit flip");
            }
        free(m);
    }
    cr_log_info("bit flips: %zu mutants, all agree", t.checked);
    cr_assert_eq(t.failures, 0);
}

Test(json_mutation, insert_and_replace)
{
    struct tally t = {0};

    for (size_t c = 0; c < ARRAY_SIZE(corpus); c++) {
        const char *s = corpus[c].text;
        size_t len = corpus[c].len;
        unsigned char *m = mutbuf(len + 1);

        for (size_t i = 0; i <= len; i++)
            for (size_t k = 0; k < ARRAY_SIZE(mutation_bytes); k++) {
                /* insert before byte i */
                memcpy(m, s, i);
                m[i] = mutation_bytes[k];
                memcpy(m + i + 1, s + i, len - i);
                check(&t, m, len + 1, "insertion");
                /* replace byte i */
                if (i < len && (unsigned char)s[i] != mutation_bytes[k]) {
                    memcpy(m, s, len);
                    m[i] = mutation_bytes[k];
                    check(&t, m, len, "replacement");
                }
            }
        free(m);
    }
    cr_log_info("insertions and replacements: %zu mutants, all agree", t.checked);
    cr_assert_eq(t.failures, 0);
}

Test(json_mutation, delete_and_truncate)
{
    struct tally t = {0};

    for (size_t c = 0; c < ARRAY_SIZE(corpus); c++) {
        const char *s = corpus[c].text;
        size_t len = corpus[c].len;
        unsigned char *m = mutbuf(len);

        for (size_t i = 0; i < len; i++) {
            memcpy(m, s, i);
            memcpy(m + i, s + i + 1, len - i - 1);
            check(&t, m, len - 1, "deletion");
            /* prefix of i bytes: copied so that ASan sees the real end */
            memcpy(m, s, i);
            check(&t, m, i, "truncation");
            /* two adjacent bytes swapped */
            if (i + 1 < len) {
                memcpy(m, s, len);
                m[i] = (unsigned char)s[i + 1];
                m[i + 1] = (unsigned char)s[i];
                check(&t, m, len, "swap");
            }
        }
        free(m);
    }
    cr_log_info("deletions, truncations and swaps: %zu mutants, all agree", t.checked);
    cr_assert_eq(t.failures, 0);
}

/* Member spans [start, end) of every object at any depth of a valid text. */
struct span {
    size_t start, end;
};

static size_t member_spans(const char *s, size_t len, struct span *out, size_t max)
{
    /* per open container: is it an object, and where its current member starts */
    bool is_obj[128];
    size_t mstart[128], depth = 0, n = 0;
    bool in_str = false, esc = false;

    for (size_t i = 0; i < len; i++) {
        char c = s[i];

        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            cr_assert_lt(depth, ARRAY_SIZE(is_obj));
            is_obj[depth] = c == '{';
            mstart[depth] = i + 1;
            depth++;
        } else if (c == ',' || c == '}' || c == ']') {
            if (depth && is_obj[depth - 1] && n < max) {
                size_t a = mstart[depth - 1], b = i;

                while (a < b && strchr(" \t\r\n", s[a]))
                    a++;
                while (b > a && strchr(" \t\r\n", s[b - 1]))
                    b--;
                if (b > a)
                    out[n++] = (struct span){a, b};
            }
            if (c == ',')
                mstart[depth - 1] = i + 1;
            else
                depth--;
        }
    }
    return n;
}

/* Each member duplicated right after itself (also with its name's first character written
 * as a \u escape): both parsers must refuse every one. */
Test(json_mutation, duplicated_members)
{
    struct tally t = {0};
    size_t n_dup = 0;

    for (size_t c = 0; c < ARRAY_SIZE(corpus); c++) {
        const char *s = corpus[c].text;
        size_t len = corpus[c].len, n;
        struct span sp[256];

        n = member_spans(s, len, sp, ARRAY_SIZE(sp));
        for (size_t k = 0; k < n; k++) {
            size_t ml = sp[k].end - sp[k].start, ml2;
            unsigned char *m = mutbuf(len + 2 * ml + 8), *q;
            json_t *j = NULL;

            for (int esc = 0; esc < 2; esc++) {
                const char *mem = s + sp[k].start;

                q = m;
                memcpy(q, s, sp[k].end);
                q += sp[k].end;
                *q++ = ',';
                if (esc && ml > 2 && mem[1] != '\\' && mem[1] != '"' &&
                    (unsigned char)mem[1] < 0x80) {
                    /* "name" -> "\u00XXame" */
                    q += snprintf((char *)q, 8, "\"\\u%04x", (unsigned char)mem[1]);
                    memcpy(q, mem + 2, ml - 2);
                    q += ml - 2;
                } else if (esc) {
                    continue;
                } else {
                    memcpy(q, mem, ml);
                    q += ml;
                }
                memcpy(q, s + sp[k].end, len - sp[k].end);
                q += len - sp[k].end;
                ml2 = (size_t)(q - m);
                check(&t, m, ml2, "duplicated member");
                cr_expect_eq(ferry_json_parse(m, ml2, SIZE_MAX, 64, &j, NULL, 0),
                             -FERRY_EMALFORMED, "duplicate accepted: %s", show(m, ml2));
                n_dup++;
            }
            free(m);
        }
    }
    cr_log_info("duplicated members: %zu mutants, all refused by both", n_dup);
    cr_assert_gt(n_dup, 300);
    cr_assert_eq(t.failures, 0);
}

/* Stacked random edits from a fixed seed: 1 to 4 of flip, insert, replace, delete, splice of a
 * piece of another corpus entry, or a repeated piece of the same one. */
static uint64_t rng_state;

static uint64_t rng(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static size_t mutate(unsigned char *m, size_t len, size_t cap)
{
    size_t pos = len ? rng() % (len + 1) : 0;

    switch (rng() % 6) {
    case 0:
        if (len)
            m[pos % len] ^= (unsigned char)(1u << (rng() % 8));
        break;
    case 1:
        if (len < cap) {
            memmove(m + pos + 1, m + pos, len - pos);
            m[pos] = mutation_bytes[rng() % ARRAY_SIZE(mutation_bytes)];
            len++;
        }
        break;
    case 2:
        if (len)
            m[pos % len] = mutation_bytes[rng() % ARRAY_SIZE(mutation_bytes)];
        break;
    case 3:
        if (len && pos < len) {
            size_t n = 1 + rng() % 8;

            if (n > len - pos)
                n = len - pos;
            memmove(m + pos, m + pos + n, len - pos - n);
            len -= n;
        }
        break;
    case 4: {
        size_t c = rng() % ARRAY_SIZE(corpus), from, n;

        from = rng() % corpus[c].len;
        n = 1 + rng() % 24;
        if (n > corpus[c].len - from)
            n = corpus[c].len - from;
        if (len + n <= cap) {
            memmove(m + pos + n, m + pos, len - pos);
            memcpy(m + pos, corpus[c].text + from, n);
            len += n;
        }
        break;
    }
    default: {
        size_t from = len ? rng() % len : 0, n = 1 + rng() % 16;

        if (n > len - from)
            n = len - from;
        if (len + n <= cap && n) {
            unsigned char piece[16];

            memcpy(piece, m + from, n);
            memmove(m + pos + n, m + pos, len - pos);
            memcpy(m + pos, piece, n);
            len += n;
        }
        break;
    }
    }
    return len;
}

Test(json_mutation, stacked_random_edits)
{
    struct tally t = {0};
    const size_t per_entry = 3000;

    rng_state = UINT64_C(0x9e3779b97f4a7c15);
    for (size_t c = 0; c < ARRAY_SIZE(corpus); c++) {
        size_t cap = corpus[c].len + 128;
        unsigned char *m = mutbuf(cap), *exact;

        for (size_t k = 0; k < per_entry; k++) {
            size_t len = corpus[c].len, edits = 1 + rng() % 4;

            memcpy(m, corpus[c].text, len);
            for (size_t e = 0; e < edits; e++)
                len = mutate(m, len, cap);
            /* an exact-size copy so that ASan catches any read past the end */
            exact = mutbuf(len);
            memcpy(exact, m, len);
            check(&t, exact, len, "stacked edits");
            free(exact);
        }
        free(m);
    }
    cr_log_info("stacked random edits: %zu mutants, all agree", t.checked);
    cr_assert_eq(t.failures, 0);
}

/* ---- (c) the rules one by one ----------------------------------------------------------- */

struct rule_case {
    const char *text;
    size_t len;
    int expect; /* 0 or the error code with no limits */
};

#define OK(s) {s, sizeof(s) - 1, 0}
#define BAD(s) {s, sizeof(s) - 1, -FERRY_EMALFORMED}
#define RANGE(s) {s, sizeof(s) - 1, -ERANGE} /* well-formed number out of range */

static const struct rule_case rules[] = {
    /* top level: one object or array, only space/tab/CR/LF around it */
    OK("{}"), OK("[]"), OK(" \t\r\n{} \t\r\n"), BAD(""), BAD(" "), BAD("1"), BAD("\"s\""),
    BAD("true"), BAD("null"), BAD("{}{}"), BAD("{} []"), BAD("{},"), BAD("{}x"), BAD("\f{}"),
    BAD("{}\v"), BAD("\xef\xbb\xbf{}"), BAD("\xc2\xa0{}"), BAD("{"), BAD("}"), BAD("]"),
    BAD("[}"), BAD("{]"),
    /* objects */
    OK("{\"a\":1}"), OK("{\"\":1}"), OK("{\"a\":1,\"b\":2}"), OK("{\"a\":{\"a\":1}}"),
    BAD("{\"a\":1,}"), BAD("{,\"a\":1}"), BAD("{\"a\"}"), BAD("{\"a\":}"), BAD("{\"a\" 1}"),
    BAD("{a:1}"), BAD("{'a':1}"), BAD("{1:1}"), BAD("{null:1}"), BAD("{\"a\":1 \"b\":2}"),
    BAD("{\"a\"::1}"), BAD("{\"a\":1,,\"b\":2}"),
    /* duplicates, however spelled */
    BAD("{\"a\":1,\"a\":1}"), BAD("{\"a\":1,\"a\":2}"), BAD("{\"a\":1,\"\\u0061\":2}"),
    BAD("{\"\\u00e9\":1,\"\xc3\xa9\":2}"), BAD("{\"\":1,\"\":2}"), BAD("{\"/\":1,\"\\/\":2}"),
    BAD("{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"a\":0}"),
    OK("{\"a\":{\"a\":{\"a\":1}},\"b\":{\"a\":2}}"), OK("{\"a\":1,\"A\":2,\"a \":3}"),
    /* arrays */
    OK("[1,\"a\",true,false,null,{},[]]"), BAD("[1,]"), BAD("[,1]"), BAD("[1 2]"), BAD("[1,,2]"),
    BAD("[1:2]"), BAD("[\"a\":1]"),
    /* literals */
    OK("[true,false,null]"), BAD("[True]"), BAD("[tru]"), BAD("[truee]"), BAD("[nul]"),
    BAD("[nulll]"), BAD("[falsey]"), BAD("[true1]"), BAD("[NaN]"), BAD("[Infinity]"),
    BAD("[-Infinity]"), BAD("[undefined]"),
    /* strings: escapes */
    OK("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]"), OK("[\"\\u0041\\u00E9\\u00e9\"]"), BAD("[\"\\x41\"]"),
    BAD("[\"\\a\"]"), BAD("[\"\\'\"]"), BAD("[\"\\U0041\"]"), BAD("[\"\\u041\"]"),
    BAD("[\"\\u004G\"]"), BAD("[\"\\u\"]"), BAD("[\"\\\"]"), BAD("[\"\\"), BAD("[\"\\u00"),
    BAD("[\"\\ \"]"), BAD("[\"\\0\"]"),
    /* \u0000 */
    BAD("[\"\\u0000\"]"), BAD("[\"a\\u0000b\"]"), BAD("{\"\\u0000\":1}"), BAD("{\"a\\u0000\":1}"),
    OK("[\"\\u0001\"]"),
    /* surrogate escapes */
    OK("[\"\\ud834\\udd1e\"]"), OK("[\"\\uD800\\uDC00\"]"), OK("[\"\\uDBFF\\uDFFF\"]"),
    BAD("[\"\\ud834\"]"), BAD("[\"\\ud834x\"]"), BAD("[\"\\ud834\\n\"]"),
    BAD("[\"\\ud834\\u0041\"]"), BAD("[\"\\ud834\\ud834\"]"), BAD("[\"\\udd1e\"]"),
    BAD("[\"\\udd1e\\ud834\"]"), BAD("[\"\\uDFFF\"]"), BAD("[\"\\ud834\\udd1\"]"),
    BAD("[\"\\ud834\\"), BAD("{\"\\ud834\":1}"),
    /* strings: raw bytes */
    BAD("[\"\x01\"]"), BAD("[\"\x1f\"]"), BAD("[\"\n\"]"), BAD("[\"\t\"]"), BAD("[\"\r\"]"),
    OK("[\"\x7f\"]"), OK("[\" \"]"), BAD("[\"abc]"), BAD("[\"abc"), BAD("[\""),
    /* UTF-8: every boundary */
    OK("[\"\xc2\x80\"]"), OK("[\"\xdf\xbf\"]"), OK("[\"\xe0\xa0\x80\"]"), OK("[\"\xed\x9f\xbf\"]"),
    OK("[\"\xee\x80\x80\"]"), OK("[\"\xef\xbf\xbf\"]"), OK("[\"\xf0\x90\x80\x80\"]"),
    OK("[\"\xf4\x8f\xbf\xbf\"]"), BAD("[\"\x80\"]"), BAD("[\"\xbf\"]"), BAD("[\"\xc0\x80\"]"),
    BAD("[\"\xc1\xbf\"]"), BAD("[\"\xe0\x80\x80\"]"), BAD("[\"\xe0\x9f\xbf\"]"),
    BAD("[\"\xed\xa0\x80\"]"), BAD("[\"\xed\xbf\xbf\"]"), BAD("[\"\xf0\x80\x80\x80\"]"),
    BAD("[\"\xf0\x8f\xbf\xbf\"]"), BAD("[\"\xf4\x90\x80\x80\"]"), BAD("[\"\xf5\x80\x80\x80\"]"),
    BAD("[\"\xf8\x88\x80\x80\x80\"]"), BAD("[\"\xfe\"]"), BAD("[\"\xff\"]"), BAD("[\"\xc2\"]"),
    BAD("[\"\xc2"), BAD("[\"\xe2\x82\"]"), BAD("[\"\xf0\x9f\x98\"]"), BAD("[\"\xc2\x41\"]"),
    BAD("[\"\xe2\x28\xa1\"]"), BAD("[\xc3\xa9]"), BAD("{\"\xff\":1}"),
    /* numbers */
    OK("[0]"), OK("[-0]"), OK("[1]"), OK("[-1]"), OK("[10]"), OK("[0.0]"), OK("[-0.0]"),
    OK("[1e5]"), OK("[1E5]"), OK("[1e+5]"), OK("[1e-5]"), OK("[0e0]"), OK("[1.5e3]"),
    OK("[9223372036854775807]"), OK("[-9223372036854775808]"), OK("[1e300]"), OK("[1e-400]"),
    OK("[4.9e-324]"), OK("[2.4e-324]"), OK("[1.7976931348623157e308]"),
    OK("[9223372036854775808.0]"), OK("[9223372036854775808e0]"),
    RANGE("[9223372036854775808]"), RANGE("[-9223372036854775809]"),
    RANGE("[99999999999999999999999999]"), RANGE("[1e309]"), RANGE("[-1e309]"),
    RANGE("[1.8e308]"), BAD("[01]"), BAD("[-01]"), BAD("[00]"), BAD("[+1]"), BAD("[.5]"),
    BAD("[1.]"), BAD("[1.e5]"), BAD("[1e]"), BAD("[1e+]"), BAD("[1E-]"), BAD("[-]"),
    BAD("[--1]"), BAD("[1..2]"), BAD("[1.2.3]"), BAD("[0x10]"), BAD("[1e5.5]"), BAD("[- 1]"),
    BAD("[1_000]"), BAD("[\xd9\xa1]"), BAD("[1"), BAD("[-"), BAD("[1."), BAD("[1e"),
    /* nesting, moderate */
    OK("[[[[[[[[[[]]]]]]]]]]"), BAD("[[[[[[[[[[]]]]]]]]]"), BAD("[[[[[[[[[]]]]]]]]]]"),
    OK("{\"a\":[{\"b\":[{}]}]}"), BAD("{\"a\":[{\"b\":[{}]}]]"), BAD("{\"a\":[{\"b\":[{}]}}}"),
    /* raw NUL: refused everywhere by ferry (jansson: see nul_bytes below) */
    BAD("\0{}"), BAD("{}\0"), BAD("[\"\0\"]"), BAD("{\"a\"\0:1}"), BAD("[1\0]"),
    BAD("[true\0]"), BAD("[null\0,1]"), BAD("{\"a\":-0\0}"),
};

Test(json_rules, each_rule)
{
    struct tally t = {0};

    for (size_t i = 0; i < ARRAY_SIZE(rules); i++) {
        json_t *j = NULL;
        char eb[FERRY_JSON_ERR_LEN];
        int r = ferry_json_parse(rules[i].text, rules[i].len, SIZE_MAX, 1000, &j, eb, sizeof(eb));

        cr_expect_eq(r, rules[i].expect, "case %zu %s: expected %d, got %d (%s)", i,
                     show(rules[i].text, rules[i].len), rules[i].expect, r, eb);
        cr_expect((r == 0) == (j != NULL));
        json_decref(j);
        check(&t, rules[i].text, rules[i].len, "rule case");
    }
    cr_assert_eq(t.failures, 0);
}

/* Integers become json_integer with the exact value, everything with '.', 'e' or 'E' a
 * json_real with strtod's value; "-0" is the integer 0, "-0.0" the real -0.0. */
Test(json_rules, number_types_and_values)
{
    static const struct {
        const char *text;
        bool integer;
        json_int_t i;
        double d;
    } nums[] = {
        {"0", true, 0, 0},
        {"-0", true, 0, 0},
        {"42", true, 42, 0},
        {"-42", true, -42, 0},
        {"9223372036854775807", true, INT64_MAX, 0},
        {"-9223372036854775808", true, INT64_MIN, 0},
        {"1e5", false, 0, 1e5},
        {"1.0", false, 0, 1.0},
        {"-0.0", false, 0, -0.0},
        {"0.1", false, 0, 0.1},
        {"1e300", false, 0, 1e300},
        {"1e-400", false, 0, 0.0},
        {"4.9e-324", false, 0, 4.9e-324},
        {"1.7976931348623157e308", false, 0, 1.7976931348623157e308},
        {"9007199254740993.0", false, 0, 9007199254740992.0},
        {"0.30000000000000004", false, 0, 0.30000000000000004},
    };

    for (size_t i = 0; i < ARRAY_SIZE(nums); i++) {
        char doc[64];
        json_t *j = NULL, *v;
        int n = snprintf(doc, sizeof(doc), "[%s]", nums[i].text);

        cr_assert_eq(ferry_json_parse(doc, (size_t)n, 64, 4, &j, NULL, 0), 0, "%s", doc);
        v = json_array_get(j, 0);
        if (nums[i].integer) {
            cr_expect(json_is_integer(v), "%s not an integer", doc);
            cr_expect_eq(json_integer_value(v), nums[i].i, "%s", doc);
        } else {
            cr_expect(json_is_real(v), "%s not a real", doc);
            cr_expect(memcmp(&(double){json_real_value(v)}, &nums[i].d, sizeof(double)) == 0,
                      "%s: %.17g", doc, json_real_value(v));
        }
        json_decref(j);
    }
}

/* A number text longer than the reader's stack copy (64 bytes) takes the heap path. */
Test(json_rules, long_number_texts)
{
    char doc[700];
    size_t n = 0;
    struct tally t = {0};

    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "[0.");
    for (int i = 0; i < 300; i++)
        doc[n++] = '0';
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "1,1");
    for (int i = 0; i < 300; i++)
        doc[n++] = i % 10 + '0';
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "e-290]");
    check(&t, doc, n, "long reals");
    cr_assert_eq(t.failures, 0);
    {
        json_t *j = NULL;

        cr_assert_eq(ferry_json_parse(doc, n, n, 2, &j, NULL, 0), 0);
        cr_expect(json_is_real(json_array_get(j, 0)) && json_is_real(json_array_get(j, 1)));
        cr_expect_eq(json_real_value(json_array_get(j, 0)), 1e-301);
        json_decref(j);
    }
    /* a 300-digit integer is too big */
    n = 0;
    doc[n++] = '[';
    for (int i = 0; i < 300; i++)
        doc[n++] = '7';
    doc[n++] = ']';
    check(&t, doc, n, "long integer");
    cr_assert_eq(t.failures, 0);
}

/* Escaped strings longer than the reader's stack buffer, as values and as member names, and a
 * duplicate between two long escaped names. */
Test(json_rules, long_escaped_strings)
{
    static char doc[20000];
    struct tally t = {0};
    json_t *j = NULL;
    size_t n = 0;

    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "{\"");
    for (int i = 0; i < 500; i++)
        n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\\u00e9x");
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\":\"");
    for (int i = 0; i < 1000; i++)
        n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\\ud83d\\ude00\\n");
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\",\"k\":\"");
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\\\\");
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\"}");
    check(&t, doc, n, "long escaped");
    cr_assert_eq(ferry_json_parse(doc, n, sizeof(doc), 2, &j, NULL, 0), 0);
    cr_expect_eq(json_object_size(j), 2);
    cr_expect_eq(json_string_length(json_object_get(j, "k")), 100);
    json_decref(j);

    /* the same long name twice, once with the first 'é' raw */
    n = 0;
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "{\"");
    for (int i = 0; i < 300; i++)
        n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\\u00e9x");
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\":1,\"\xc3\xa9x");
    for (int i = 1; i < 300; i++)
        n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\\u00e9x");
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "\":2}");
    check(&t, doc, n, "long duplicate");
    cr_expect_eq(ferry_json_parse(doc, n, sizeof(doc), 2, &j, NULL, 0), -FERRY_EMALFORMED);
    cr_assert_eq(t.failures, 0);
}

/* Difference 3: raw NUL bytes. jansson 2.14 accepts one right after a number or literal;
 * ferry_json_parse refuses all of them. */
Test(json_rules, nul_bytes)
{
    static const struct {
        const char *text;
        size_t len;
        bool jansson;
    } cases[] = {
        {LIT("[1\0]"), true},        {LIT("[true\0]"), true},     {LIT("[1.5e3\0,2]"), true},
        {LIT("{\"a\":null\0}"), true}, {LIT("[1\0\0]"), false},   {LIT("[\"\0\"]"), false},
        {LIT("{\"a\"\0:1}"), false}, {LIT("\0[1]"), false},       {LIT("[1]\0"), false},
        {LIT("[\0]"), false},        {LIT("[1,\0 2]"), false},
    };
    struct tally t = {0};

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        json_t *a = json_loadb(cases[i].text, cases[i].len, JSON_REJECT_DUPLICATES, NULL), *b;

        cr_expect_eq(a != NULL, cases[i].jansson, "jansson on %s changed: %s",
                     show(cases[i].text, cases[i].len), a ? "accepts" : "refuses");
        json_decref(a);
        cr_expect_eq(ferry_json_parse(cases[i].text, cases[i].len, 64, 4, &b, NULL, 0),
                     -FERRY_EMALFORMED, "%s", show(cases[i].text, cases[i].len));
        check(&t, cases[i].text, cases[i].len, "NUL");
    }
    cr_assert_eq(t.failures, 0);
}

/* ---- limits ----------------------------------------------------------------------------- */

static char *nested(unsigned levels, bool objects, const char *inner, size_t *ret_len)
{
    size_t il = strlen(inner), cap = (size_t)levels * 8 + il + 1, n = 0;
    char *b = malloc(cap);

    cr_assert_not_null(b);
    for (unsigned i = 0; i < levels; i++) {
        if (objects && i > 0)
            n += (size_t)snprintf(b + n, cap - n, "{\"k\":");
        else
            b[n++] = i == 0 && objects ? '{' : '[';
        if (objects && i == 0)
            n += (size_t)snprintf(b + n, cap - n, "\"k\":");
    }
    memcpy(b + n, inner, il);
    n += il;
    for (unsigned i = 0; i < levels; i++)
        b[n++] = objects ? '}' : ']';
    b[n] = '\0';
    *ret_len = n;
    return b;
}

static int parse_depth(unsigned levels, bool objects, const char *inner, unsigned max_depth)
{
    size_t len;
    char *b = nested(levels, objects, inner, &len), eb[FERRY_JSON_ERR_LEN];
    json_t *j = NULL;
    int r = ferry_json_parse(b, len, SIZE_MAX, max_depth, &j, eb, sizeof(eb));

    if (r == -FERRY_ETOOBIG)
        cr_expect(strstr(eb, "nesting deeper than"), "%s", eb);
    cr_expect((r == 0) == (j != NULL));
    json_decref(j);
    free(b);
    return r;
}

/* Difference 2: max_depth counts containers, the top level is 1. */
Test(json_limits, depth)
{
    for (int objects = 0; objects < 2; objects++) {
        cr_expect_eq(parse_depth(16, objects, "1", 16), 0);
        cr_expect_eq(parse_depth(16, objects, "[]", 16), -FERRY_ETOOBIG);
        cr_expect_eq(parse_depth(16, objects, "{}", 16), -FERRY_ETOOBIG);
        cr_expect_eq(parse_depth(17, objects, "1", 16), -FERRY_ETOOBIG);
        cr_expect_eq(parse_depth(1, objects, "1", 1), 0);
        cr_expect_eq(parse_depth(1, objects, "[]", 1), -FERRY_ETOOBIG);
        cr_expect_eq(parse_depth(1, objects, "1", 0), -FERRY_ETOOBIG);
        /* past the inline stack (32) and its first doublings */
        cr_expect_eq(parse_depth(300, objects, "\"x\"", 300), 0);
        cr_expect_eq(parse_depth(301, objects, "\"x\"", 300), -FERRY_ETOOBIG);
        /* the limit is checked before the deeper text is read: the error wins over syntax */
        cr_expect_eq(parse_depth(17, objects, "garbage", 16), -FERRY_ETOOBIG);
        cr_expect_eq(parse_depth(16, objects, "garbage", 16), -FERRY_EMALFORMED);
    }
    /* an empty container at the limit is fine; siblings do not add up */
    cr_expect_eq(parse_depth(2, false, "[],[],{}", 3), 0);
}

/* Beyond jansson's 2048: jansson refuses, ferry (no recursion) goes as deep as it is allowed. */
Test(json_limits, deeper_than_jansson)
{
    size_t len;
    char *b = nested(100000, false, "0", &len);
    json_t *j = NULL;

    cr_expect_null(json_loadb(b, len, JSON_REJECT_DUPLICATES, NULL));
    cr_expect_eq(ferry_json_parse(b, len, SIZE_MAX, 100000, &j, NULL, 0), 0);
    cr_expect(json_is_array(j));
    json_decref(j);
    cr_expect_eq(ferry_json_parse(b, len, SIZE_MAX, 99999, &j, NULL, 0), -FERRY_ETOOBIG);
    /* 2047 arrays around a scalar: the deepest jansson accepts */
    free(b);
    b = nested(2047, false, "0", &len);
    {
        struct tally t = {0};

        check(&t, b, len, "2047 deep");
        cr_assert_eq(t.failures, 0);
    }
    free(b);
}

/* Difference 1: the size limit is checked first, whatever the content. */
Test(json_limits, size)
{
    char eb[FERRY_JSON_ERR_LEN];
    json_t *j = NULL;

    cr_expect_eq(ferry_json_parse(LIT("{\"a\":1}"), 7, 16, &j, NULL, 0), 0);
    json_decref(j);
    j = NULL;
    cr_expect_eq(ferry_json_parse(LIT("{\"a\":1}"), 6, 16, &j, eb, sizeof(eb)), -FERRY_ETOOBIG);
    cr_expect_null(j);
    cr_expect_str_eq(eb, "input of 7 bytes exceeds 6 at byte 0");
    cr_expect_eq(ferry_json_parse(LIT("garbage"), 6, 16, &j, NULL, 0), -FERRY_ETOOBIG);
    cr_expect_eq(ferry_json_parse(LIT("garbage"), 7, 16, &j, NULL, 0), -FERRY_EMALFORMED);
    cr_expect_eq(ferry_json_parse("", 0, 0, 16, &j, NULL, 0), -FERRY_EMALFORMED);
    cr_expect_eq(ferry_json_parse(LIT("[]"), 1, 16, &j, NULL, 0), -FERRY_ETOOBIG);
}

/* ---- API contract and messages ---------------------------------------------------------- */

Test(json_api, arguments)
{
    json_t *j = (json_t *)0x1;
    char eb[FERRY_JSON_ERR_LEN] = "x";

    cr_expect_eq(ferry_json_parse(LIT("{}"), 64, 4, NULL, eb, sizeof(eb)), -EINVAL);
    cr_expect_eq(ferry_json_parse(NULL, 1, 64, 4, &j, eb, sizeof(eb)), -EINVAL);
    cr_expect_eq(j, (json_t *)0x1);
    cr_expect_eq(ferry_json_parse(NULL, 0, 64, 4, &j, eb, sizeof(eb)), -FERRY_EMALFORMED);
    cr_expect_eq(j, (json_t *)0x1, "ret_json written on failure");
    cr_expect_str_eq(eb, "'{' or '[' expected at byte 0");
    /* success clears the message; NULL/0 error buffers are fine */
    cr_expect_eq(ferry_json_parse(LIT("{}"), 64, 4, &j, eb, sizeof(eb)), 0);
    cr_expect_str_eq(eb, "");
    json_decref(j);
    cr_expect_eq(ferry_json_parse(LIT("[x]"), 64, 4, &j, NULL, 0), -FERRY_EMALFORMED);
    cr_expect_eq(ferry_json_parse(LIT("[x]"), 64, 4, &j, eb, 0), -FERRY_EMALFORMED);
    /* a short buffer gets a truncated, terminated message */
    memset(eb, 'Z', sizeof(eb));
    cr_expect_eq(ferry_json_parse(LIT("[x]"), 64, 4, &j, eb, 6), -FERRY_EMALFORMED);
    cr_expect_eq(strlen(eb), 5);
    cr_expect_eq(eb[6], 'Z');
    /* the input need not be NUL-terminated: only len bytes are read */
    {
        char *exact = malloc(2);

        cr_assert_not_null(exact);
        memcpy(exact, "[]", 2);
        cr_expect_eq(ferry_json_parse(exact, 2, 64, 4, &j, NULL, 0), 0);
        json_decref(j);
        memcpy(exact, "[1", 2);
        cr_expect_eq(ferry_json_parse(exact, 2, 64, 4, &j, NULL, 0), -FERRY_EMALFORMED);
        free(exact);
    }
}

Test(json_api, messages_carry_the_offset)
{
    static const struct {
        const char *text;
        size_t len;
        unsigned max_depth;
        const char *msg;
    } cases[] = {
        {LIT("{\"a\":1,\"a\":2}"), 4, "duplicate object key at byte 7"},
        {LIT("[1,]"), 4, "invalid value at byte 3"},
        {LIT("{\"a\" 1}"), 4, "':' expected at byte 5"},
        {LIT("[\"\x01\"]"), 4, "control character 0x01 in string at byte 2"},
        {LIT("[\"ab\xc0\x80\"]"), 4, "invalid UTF-8 at byte 4"},
        {LIT("[\"\\ud800\"]"), 4, "lone surrogate \\uD800 at byte 2"},
        {LIT("[\"x\\ud800\\u0041\"]"), 4, "invalid surrogate pair \\uD800\\u0041 at byte 3"},
        {LIT("[\"\\udc00\"]"), 4, "lone surrogate \\uDC00 at byte 2"},
        {LIT("[1] x"), 4, "end of input expected at byte 4"},
        {LIT("[123456789012345678901234567890]"), 4, "too big integer at byte 1"},
        {LIT("[-123456789012345678901234567890]"), 4, "too big negative integer at byte 1"},
        {LIT("[0, 1e400]"), 4, "real number overflow at byte 4"},
        {LIT("  3"), 4, "'{' or '[' expected at byte 2"},
        {LIT("[[1]]"), 1, "nesting deeper than 1 at byte 1"},
        {LIT("{\"a\":1"), 4, "premature end of input at byte 6"},
        {LIT("[\"abc"), 4, "unterminated string at byte 5"},
        {LIT("[\"\\x\"]"), 4, "invalid escape at byte 2"},
        {LIT("[\"\\u12\"]"), 4, "invalid \\u escape at byte 2"},
        {LIT("[\"\\u0000\"]"), 4, "\\u0000 not allowed at byte 2"},
        {LIT("{1:2}"), 4, "string or '}' expected at byte 1"},
        {LIT("[1 2]"), 4, "',' or ']' expected at byte 3"},
        {LIT("{\"a\":1 \"b\"}"), 4, "',' or '}' expected at byte 7"},
        {LIT("[-]"), 4, "invalid number at byte 1"},
        {LIT("[1\0]"), 4, "',' or ']' expected at byte 2"},
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char eb[FERRY_JSON_ERR_LEN];
        json_t *j = NULL;
        int r = ferry_json_parse(cases[i].text, cases[i].len, 1024, cases[i].max_depth, &j, eb,
                                 sizeof(eb));

        cr_expect_lt(r, 0, "%s accepted", show(cases[i].text, cases[i].len));
        cr_expect_str_eq(eb, cases[i].msg, "%s", show(cases[i].text, cases[i].len));
        /* Numbers out of range are -ERANGE, everything else here is not. */
        cr_expect_eq(r == -ERANGE, strstr(cases[i].msg, "too big") != NULL ||
                                       strstr(cases[i].msg, "overflow") != NULL,
                     "%s: %d", show(cases[i].text, cases[i].len), r);
    }
}

/* ---- allocation failures ---------------------------------------------------------------- */

static size_t alloc_fail_at, alloc_count;
static long alloc_live;

static void *failing_malloc(size_t n)
{
    void *p;

    if (++alloc_count == alloc_fail_at)
        return NULL;
    p = malloc(n);
    if (p)
        alloc_live++;
    return p;
}

static void counting_free(void *p)
{
    if (p)
        alloc_live--;
    free(p);
}

/* Fail the Nth jansson allocation for every N: -ENOMEM each time, nothing leaked, and the
 * message says so; past the last allocation the parse succeeds. */
Test(json_api, allocation_failures)
{
    const char *doc = corpus[7].text;
    size_t len = corpus[7].len, n;
    json_malloc_t om;
    json_free_t of;

    json_get_alloc_funcs(&om, &of);
    json_set_alloc_funcs(failing_malloc, counting_free);
    for (n = 1; n < 1000; n++) {
        char eb[FERRY_JSON_ERR_LEN];
        json_t *j = NULL;
        int r;

        alloc_count = 0;
        alloc_fail_at = n;
        r = ferry_json_parse(doc, len, SIZE_MAX, 16, &j, eb, sizeof(eb));
        if (r == 0) {
            cr_expect_gt(alloc_count, 20);
            json_decref(j);
            cr_expect_eq(alloc_live, 0, "leak after success");
            break;
        }
        cr_expect_eq(r, -ENOMEM, "allocation %zu failed: got %d (%s)", n, r, eb);
        cr_expect(strstr(eb, "out of memory"), "%s", eb);
        cr_expect_null(j);
        cr_expect_eq(alloc_live, 0, "leak after failing allocation %zu: %ld live", n, alloc_live);
    }
    json_set_alloc_funcs(om, of);
    cr_assert_lt(n, 1000);
    cr_log_info("allocation failures: %zu failure points, each -ENOMEM without leaks", n - 1);
}

/* ---- concurrency ------------------------------------------------------------------------ */

static void *parse_many(void *arg)
{
    const char *expect = arg;
    uintptr_t bad = 0;

    for (int i = 0; i < 2000; i++) {
        json_t *j = NULL;
        char *c;

        if (ferry_json_parse(corpus[18].text, corpus[18].len, 4096, 16, &j, NULL, 0) != 0) {
            bad++;
            continue;
        }
        c = canon(j);
        bad += !c || strcmp(c, expect) != 0;
        free(c);
        json_decref(j);
    }
    return (void *)bad;
}

/* Four threads parse reals (first use of the C locale included) and strings at once. */
Test(json_api, concurrent_use)
{
    json_t *ref = json_loadb(corpus[18].text, corpus[18].len, JSON_REJECT_DUPLICATES, NULL);
    char *expect = canon(ref);
    pthread_t th[4];

    cr_assert_not_null(expect);
    for (size_t i = 0; i < ARRAY_SIZE(th); i++)
        cr_assert_eq(pthread_create(&th[i], NULL, parse_many, expect), 0);
    for (size_t i = 0; i < ARRAY_SIZE(th); i++) {
        void *bad;

        cr_assert_eq(pthread_join(th[i], &bad), 0);
        cr_expect_eq((uintptr_t)bad, 0, "thread %zu: %zu wrong parses", i, (size_t)(uintptr_t)bad);
    }
    free(expect);
    json_decref(ref);
}

/* ---- located parse: source lines for configuration and policy errors ----------------------- */

Test(json_located, lines_of_members_elements_and_containers)
{
    static const char text[] = "{\n"
                               "  \"a\": 1,\n"
                               "  \"b\": {\n"
                               "    \"c\": [10,\n"
                               "          20],\n"
                               "    \"d\": \"x\"\n"
                               "  },\n"
                               "\n"
                               "  \"e\": null\n"
                               "}\n";
    ferry_json_locs *locs = NULL;
    json_t *j = NULL, *plain = NULL, *b, *c;
    unsigned eline = 99;

    cr_assert_eq(ferry_json_parse_located(text, sizeof(text) - 1, 4096, 8, &j, &locs, &eline,
                                          NULL, 0), 0);
    cr_assert_eq(eline, 0);
    cr_assert_eq(ferry_json_parse(text, sizeof(text) - 1, 4096, 8, &plain, NULL, 0), 0);
    cr_assert(json_equal(j, plain), "same tree as ferry_json_parse");
    b = json_object_get(j, "b");
    c = json_object_get(b, "c");
    cr_assert_eq(ferry_json_locs_line(locs, j, NULL), 1);
    cr_assert_eq(ferry_json_locs_line(locs, j, "a"), 2);
    cr_assert_eq(ferry_json_locs_line(locs, j, "b"), 3);
    cr_assert_eq(ferry_json_locs_line(locs, b, NULL), 3);
    cr_assert_eq(ferry_json_locs_line(locs, b, "c"), 4);
    cr_assert_eq(ferry_json_locs_line_index(locs, c, 0), 4);
    cr_assert_eq(ferry_json_locs_line_index(locs, c, 1), 5);
    cr_assert_eq(ferry_json_locs_line(locs, b, "d"), 6);
    cr_assert_eq(ferry_json_locs_line(locs, j, "e"), 9);
    /* unknown names, indexes and containers */
    cr_assert_eq(ferry_json_locs_line(locs, j, "c"), 0);
    cr_assert_eq(ferry_json_locs_line_index(locs, c, 2), 0);
    cr_assert_eq(ferry_json_locs_line(locs, plain, "a"), 0);
    cr_assert_eq(ferry_json_locs_line(NULL, j, "a"), 0);
    ferry_json_locs_free(locs);
    json_decref(j);
    json_decref(plain);
}

Test(json_located, many_members_found_after_sorting)
{
    char *text = malloc(200000);
    size_t len = 0;
    ferry_json_locs *locs = NULL;
    json_t *j = NULL;

    cr_assert_not_null(text);
    len += (size_t)snprintf(text + len, 200000 - len, "[\n");
    for (int i = 0; i < 2000; i++)
        len += (size_t)snprintf(text + len, 200000 - len, "%s{\"k%d\": %d,\n\"z\": [%d]}\n",
                                i ? "," : "", i, i, i);
    len += (size_t)snprintf(text + len, 200000 - len, "]");
    cr_assert_eq(ferry_json_parse_located(text, len, 200000, 4, &j, &locs, NULL, NULL, 0), 0);
    for (size_t i = 0; i < 2000; i++) {
        json_t *o = json_array_get(j, i);
        char key[16];

        (void)snprintf(key, sizeof(key), "k%zu", i);
        cr_assert_eq(ferry_json_locs_line_index(locs, j, i), 2 + 2 * i);
        cr_assert_eq(ferry_json_locs_line(locs, o, key), 2 + 2 * i);
        cr_assert_eq(ferry_json_locs_line(locs, o, "z"), 3 + 2 * i);
        cr_assert_eq(ferry_json_locs_line_index(locs, json_object_get(o, "z"), 0), 3 + 2 * i);
    }
    ferry_json_locs_free(locs);
    json_decref(j);
    free(text);
}

Test(json_located, error_line_and_nothing_returned)
{
    static const char dup[] = "{\n\"a\": 1,\n\n\"a\": 2}";
    static const char deep[] = "[\n[\n[\n[1]]]]";
    ferry_json_locs *locs = NULL;
    json_t *j = NULL;
    unsigned line = 0;
    char err[FERRY_JSON_ERR_LEN];

    cr_assert_eq(ferry_json_parse_located(dup, sizeof(dup) - 1, 4096, 8, &j, &locs, &line, err,
                                          sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert_eq(line, 4, "duplicate reported on line %u", line);
    cr_assert_not_null(strstr(err, "duplicate"));
    cr_assert_null(j);
    cr_assert_null(locs);
    cr_assert_eq(ferry_json_parse_located(deep, sizeof(deep) - 1, 4096, 3, &j, &locs, &line,
                                          NULL, 0),
                 -FERRY_ETOOBIG);
    cr_assert_eq(line, 4);
    cr_assert_eq(ferry_json_parse_located("{}", 2, 1, 3, &j, &locs, &line, NULL, 0),
                 -FERRY_ETOOBIG);
    cr_assert_eq(line, 1);
    cr_assert_eq(ferry_json_parse_located("{}", 2, 10, 3, &j, NULL, &line, NULL, 0), -EINVAL);
}
