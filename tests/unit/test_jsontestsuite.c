/* tests/unit/test_jsontestsuite.c - JSONTestSuite (nst/JSONTestSuite, test_parsing/) through the
 * exact jansson call ferry uses for untrusted JSON:
 *
 *     json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err)
 *
 * y_ files must parse, n_ files must fail, i_ files must give the outcome recorded in
 * i_expected[] below (so a jansson upgrade that changes an implementation-defined answer shows
 * up here). y_ files ferry rejects on purpose are listed by name in y_policy[] with the reason;
 * any other disagreement with the file-name prefix fails the test.
 *
 * The same files are then fed to ferry's own JSON entry points (JWS protected header, JWKS
 * document) which must refuse every one of them without crashing, and the JWS header depth
 * limit (FERRY_JSON_MAX_DEPTH) is checked at its boundary. */
#include "config.h"

#include <dirent.h>
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

#define JTS_DIR "JSONTestSuite/test_parsing"
#define JTS_MAX_FILE (4u << 20)

/* Counts in the pinned copy (vectors/README.md). */
#define JTS_N_Y 95
#define JTS_N_N 188
#define JTS_N_I 35

struct named_expect {
    const char *name;
    bool accept;
    const char *reason;
};

/* y_ files that ferry's call rejects on purpose. */
static const struct named_expect y_policy[] = {
    {"y_object_duplicated_key.json", false, "JSON_REJECT_DUPLICATES (RFC 8725 3.x: ambiguity)"},
    {"y_object_duplicated_key_and_value.json", false, "JSON_REJECT_DUPLICATES, even same value"},
    {"y_object_escaped_null_in_key.json", false, "\\u0000 refused (no JSON_ALLOW_NUL)"},
    {"y_string_null_escape.json", false, "\\u0000 refused (no JSON_ALLOW_NUL)"},
    /* Without JSON_DECODE_ANY jansson only accepts an object or array at the top level. Every
     * document ferry parses (JWS header, claims, JWKS, discovery) must be an object anyway.
     * vectors/README.md lists only the four above; these eight are the same policy. */
    {"y_string_space.json", false, "top-level scalar (no JSON_DECODE_ANY)"},
    {"y_structure_lonely_false.json", false, "top-level scalar (no JSON_DECODE_ANY)"},
    {"y_structure_lonely_int.json", false, "top-level scalar (no JSON_DECODE_ANY)"},
    {"y_structure_lonely_negative_real.json", false, "top-level scalar (no JSON_DECODE_ANY)"},
    {"y_structure_lonely_null.json", false, "top-level scalar (no JSON_DECODE_ANY)"},
    {"y_structure_lonely_string.json", false, "top-level scalar (no JSON_DECODE_ANY)"},
    {"y_structure_lonely_true.json", false, "top-level scalar (no JSON_DECODE_ANY)"},
    {"y_structure_string_empty.json", false, "top-level scalar (no JSON_DECODE_ANY)"},
};

/* Outcomes of every i_ file with jansson 2.14 and the flags above. */
static const struct named_expect i_expected[] = {
    {"i_number_double_huge_neg_exp.json", true, "underflows to 0.0"},
    {"i_number_huge_exp.json", false, "real number overflow"},
    {"i_number_neg_int_huge_exp.json", false, "real number overflow"},
    {"i_number_pos_double_huge_exp.json", false, "real number overflow"},
    {"i_number_real_neg_overflow.json", false, "real number overflow"},
    {"i_number_real_pos_overflow.json", false, "real number overflow"},
    {"i_number_real_underflow.json", true, "underflows to 0.0"},
    {"i_number_too_big_neg_int.json", false, "integer beyond json_int_t"},
    {"i_number_too_big_pos_int.json", false, "integer beyond json_int_t"},
    {"i_number_very_big_negative_int.json", false, "integer beyond json_int_t"},
    {"i_object_key_lone_2nd_surrogate.json", false, "lone surrogate escape"},
    {"i_string_1st_surrogate_but_2nd_missing.json", false, "lone surrogate escape"},
    {"i_string_1st_valid_surrogate_2nd_invalid.json", false, "bad surrogate pair"},
    {"i_string_UTF-16LE_with_BOM.json", false, "not UTF-8"},
    {"i_string_UTF-8_invalid_sequence.json", false, "invalid UTF-8"},
    {"i_string_UTF8_surrogate_U+D800.json", false, "UTF-8 encoded surrogate"},
    {"i_string_incomplete_surrogate_and_escape_valid.json", false, "lone surrogate escape"},
    {"i_string_incomplete_surrogate_pair.json", false, "lone surrogate escape"},
    {"i_string_incomplete_surrogates_escape_valid.json", false, "lone surrogate escapes"},
    {"i_string_invalid_lonely_surrogate.json", false, "lone surrogate escape"},
    {"i_string_invalid_surrogate.json", false, "lone surrogate escape"},
    {"i_string_invalid_utf-8.json", false, "invalid UTF-8"},
    {"i_string_inverted_surrogates_U+1D11E.json", false, "inverted surrogates"},
    {"i_string_iso_latin_1.json", false, "not UTF-8"},
    {"i_string_lone_second_surrogate.json", false, "lone surrogate escape"},
    {"i_string_lone_utf8_continuation_byte.json", false, "invalid UTF-8"},
    {"i_string_not_in_unicode_range.json", false, "beyond U+10FFFF"},
    {"i_string_overlong_sequence_2_bytes.json", false, "overlong UTF-8"},
    {"i_string_overlong_sequence_6_bytes.json", false, "overlong UTF-8"},
    {"i_string_overlong_sequence_6_bytes_null.json", false, "overlong UTF-8"},
    {"i_string_truncated-utf-8.json", false, "truncated UTF-8"},
    {"i_string_utf16BE_no_BOM.json", false, "not UTF-8"},
    {"i_string_utf16LE_no_BOM.json", false, "not UTF-8"},
    {"i_structure_500_nested_arrays.json", true,
     "jansson's own depth limit is 2048: ferry must apply FERRY_JSON_MAX_DEPTH itself"},
    {"i_structure_UTF-8_BOM_empty_object.json", false, "BOM refused"},
};

static const struct named_expect *find_named(const struct named_expect *t, size_t n,
                                             const char *name, size_t *ret_idx)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) {
            *ret_idx = i;
            return &t[i];
        }
    return NULL;
}

/* The one call under test. */
static bool ferry_json_accepts(const char *buf, size_t len, json_error_t *err)
{
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, err);
    bool ok = j != NULL;

    json_decref(j);
    return ok;
}

/* Sorted list of the .json files in the suite. */
static char **list_files(size_t *ret_n)
{
    char **names = tu_list_vectors(JTS_DIR, ".json", ret_n);

    cr_assert_not_null(names, "cannot list %s", JTS_DIR);
    return names;
}

static char *read_suite_file(const char *name, size_t *ret_len)
{
    char *buf = tu_read_vector(JTS_DIR, name, JTS_MAX_FILE, ret_len);

    cr_assert_not_null(buf, "cannot read %s/%s", JTS_DIR, name);
    return buf;
}

static void free_list(char **names, size_t n)
{
    tu_free_list(names, n);
}

Test(jsontestsuite, test_parsing_with_ferry_flags)
{
    bool seen_policy[sizeof(y_policy) / sizeof(y_policy[0])] = {false};
    bool seen_i[sizeof(i_expected) / sizeof(i_expected[0])] = {false};
    size_t n_files, n_y = 0, n_n = 0, n_i = 0, n_dev = 0, i_acc = 0;
    char **names;

    TU_REQUIRE_VECTORS();
    names = list_files(&n_files);

    for (size_t f = 0; f < n_files; f++) {
        const char *name = names[f];
        const struct named_expect *ex;
        json_error_t err;
        size_t len, idx;
        char *buf = read_suite_file(name, &len);
        bool got = ferry_json_accepts(buf, len, &err);

        switch (name[0]) {
        case 'y':
            n_y++;
            ex = find_named(y_policy, sizeof(y_policy) / sizeof(y_policy[0]), name, &idx);
            if (ex) {
                seen_policy[idx] = true;
                n_dev++;
                cr_expect_eq(got, ex->accept, "%s: expected policy %s (%s), got %s", name,
                             ex->accept ? "accept" : "reject", ex->reason,
                             got ? "accept" : "reject");
            } else {
                cr_expect(got, "%s: y_ file rejected: %s (line %d col %d)", name, err.text,
                          err.line, err.column);
            }
            break;
        case 'n':
            n_n++;
            cr_expect(!got, "%s: n_ file accepted", name);
            break;
        case 'i':
            n_i++;
            ex = find_named(i_expected, sizeof(i_expected) / sizeof(i_expected[0]), name, &idx);
            cr_expect_not_null(ex, "%s: i_ file missing from i_expected[]", name);
            if (ex) {
                seen_i[idx] = true;
                cr_expect_eq(got, ex->accept, "%s: jansson now %s it (table: %s, %s)", name,
                             got ? "accepts" : "rejects", ex->accept ? "accept" : "reject",
                             ex->reason);
            }
            i_acc += got;
            break;
        default:
            cr_expect_fail("unexpected file %s", name);
        }
        free(buf);
    }

    for (size_t i = 0; i < sizeof(y_policy) / sizeof(y_policy[0]); i++)
        cr_expect(seen_policy[i], "y_policy[] names a missing file: %s", y_policy[i].name);
    for (size_t i = 0; i < sizeof(i_expected) / sizeof(i_expected[0]); i++)
        cr_expect(seen_i[i], "i_expected[] names a missing file: %s", i_expected[i].name);

    cr_expect_eq(n_y, JTS_N_Y);
    cr_expect_eq(n_n, JTS_N_N);
    cr_expect_eq(n_i, JTS_N_I);
    cr_assert_eq(n_y + n_n + n_i, n_files);
    cr_log_info("JSONTestSuite: %zu files checked (%zu y_, %zu n_, %zu i_: %zu accepted); "
                "%zu y_ rejected by policy",
                n_files, n_y, n_n, n_i, i_acc, n_dev);
    free_list(names, n_files);
}

/* "123" followed by a NUL byte. json_loadb is given the explicit length, so the NUL is part
 * of the input and the file is refused (as it must be; with the NUL-terminated json_loads it
 * would read "123"). */
Test(jsontestsuite, explicit_length_sees_trailing_nul)
{
    json_error_t err;
    size_t len;
    char *buf;

    TU_REQUIRE_VECTORS();
    buf = read_suite_file("n_multidigit_number_then_00.json", &len);
    cr_assert_eq(len, 4);
    cr_assert_eq(buf[3], '\0');
    cr_expect(!ferry_json_accepts(buf, len, &err));
    free(buf);
}

/* Recorded jansson 2.14 quirk (like the i_ table): one NUL byte right after a number or a
 * literal is swallowed by the lexer (it "ungets" the NUL, which its stream buffer then treats
 * as the end of the cached character), so these inputs parse although they contain a raw NUL.
 * Anything that must refuse NUL bytes (the JWS protected header, see jws_header_raw_nul) has
 * to check for them itself before calling jansson. If this test starts failing, jansson fixed
 * the quirk: update the comment, keep the header check. */
#define LIT(s) s, sizeof(s) - 1
Test(jsontestsuite, jansson_swallows_nul_after_token)
{
    json_error_t err;

    cr_expect(ferry_json_accepts(LIT("[123\0]"), &err));
    cr_expect(ferry_json_accepts(LIT("[true\0]"), &err));
    cr_expect(ferry_json_accepts(LIT("{\"a\":1\0}"), &err));
    cr_expect(ferry_json_accepts(LIT("{\"alg\":\"ES256\",\"n\":1\0}"), &err));
    /* ... but not anywhere else. */
    cr_expect(!ferry_json_accepts(LIT("[1\0\0]"), &err));
    cr_expect(!ferry_json_accepts(LIT("{\"a\":1}\0"), &err));
    cr_expect(!ferry_json_accepts(LIT("{\"a\"\0:1}"), &err));
    cr_expect(!ferry_json_accepts(LIT("[\"a\0\"]"), &err));
    cr_expect(!ferry_json_accepts(LIT("\0[1]"), &err));
}

/* Build a compact JWS "b64(header).Zm9v.b64(64 bytes)" for a header given as raw bytes. The
 * signature is garbage: these tests only exercise ferry_jws_parse. */
static char *token_with_header(const void *hdr, size_t hdr_len)
{
    static const unsigned char sig[64] = {1};
    char *h = ferry_b64url_encode_alloc(hdr, hdr_len);
    char *s = ferry_b64url_encode_alloc(sig, sizeof(sig));
    size_t n;
    char *tok;

    cr_assert(h && s);
    n = strlen(h) + strlen(s) + 8;
    tok = malloc(n);
    cr_assert_not_null(tok);
    snprintf(tok, n, "%s.Zm9v.%s", h, s);
    free(h);
    free(s);
    return tok;
}

static bool is_refusal(int r)
{
    return r == -FERRY_EMALFORMED || r == -FERRY_ETOOBIG || r == -FERRY_EUNSUPPORTED;
}

/* Every suite file as a JWS protected header and as a JWKS document: none of them is a valid
 * header (no supported "alg") or key set, so all must be refused with a ferry error code - and
 * nothing may crash or leak (run under ASan). */
Test(jsontestsuite, ferry_entry_points_refuse_every_file)
{
    size_t n_files, n_checked = 0;
    char **names;

    TU_REQUIRE_VECTORS();
    names = list_files(&n_files);
    for (size_t f = 0; f < n_files; f++) {
        size_t len;
        char *buf = read_suite_file(names[f], &len);
        ferry_jws *jws = NULL;
        ferry_jwks *jwks = NULL;
        size_t skipped = 0;
        int r;

        if (len <= FERRY_JWS_MAX_HEADER) {
            char *tok = token_with_header(buf, len);
            r = ferry_jws_parse(tok, strlen(tok), &jws);
            cr_expect(is_refusal(r), "%s as JWS header: got %d (%s)", names[f], r,
                      ferry_strerror(r));
            cr_expect_null(jws);
            ferry_jws_free(jws);
            free(tok);
        }
        r = ferry_jwks_from_buffer(buf, len, &jwks, &skipped);
        if (names[f][0] == 'n') {
            cr_expect(r == -FERRY_EMALFORMED || r == -FERRY_ETOOBIG,
                      "%s as JWKS: got %d (%s)", names[f], r, ferry_strerror(r));
        } else {
            cr_expect(r < 0, "%s as JWKS: accepted", names[f]);
        }
        ferry_jwks_unref(jwks);
        n_checked++;
        free(buf);
    }
    cr_assert_gt(n_checked, 0);
    cr_log_info("JSONTestSuite through ferry_jws_parse/ferry_jwks_from_buffer: %zu refused",
                n_checked);
    free_list(names, n_files);
}

/* {"alg":"ES256","x":[[...[0]...]]} with `arrays` nested arrays: nesting depth arrays + 1
 * counting the header object itself. */
static char *nested_header(size_t arrays, size_t *ret_len)
{
    size_t cap = 64 + 2 * arrays, n = 0;
    char *h = malloc(cap);

    cr_assert_not_null(h);
    n += (size_t)snprintf(h + n, cap - n, "{\"alg\":\"ES256\",\"x\":");
    for (size_t i = 0; i < arrays; i++)
        h[n++] = '[';
    h[n++] = '0';
    for (size_t i = 0; i < arrays; i++)
        h[n++] = ']';
    h[n++] = '}';
    h[n] = '\0';
    *ret_len = n;
    return h;
}

static int parse_nested(size_t arrays)
{
    size_t len;
    char *h = nested_header(arrays, &len);
    char *tok = token_with_header(h, len);
    ferry_jws *jws = NULL;
    int r = ferry_jws_parse(tok, strlen(tok), &jws);

    cr_expect((r == 0) == (jws != NULL));
    ferry_jws_free(jws);
    free(tok);
    free(h);
    return r;
}

/* ferry's header parser stops at FERRY_JSON_MAX_DEPTH nesting levels (the header object is
 * level 1), well below jansson's own limit of 2048. */
Test(jsontestsuite, jws_header_depth_limit)
{
    int r;

    cr_expect_eq(parse_nested(1), 0, "shallow header refused");
    r = parse_nested(FERRY_JSON_MAX_DEPTH - 1);
    cr_expect_eq(r, 0, "depth %d refused: %d (%s)", FERRY_JSON_MAX_DEPTH, r, ferry_strerror(r));
    r = parse_nested(FERRY_JSON_MAX_DEPTH);
    cr_expect(r == -FERRY_ETOOBIG || r == -FERRY_EMALFORMED, "depth %d accepted: %d",
              FERRY_JSON_MAX_DEPTH + 1, r);
    r = parse_nested(2 * FERRY_JSON_MAX_DEPTH);
    cr_expect(r == -FERRY_ETOOBIG || r == -FERRY_EMALFORMED, "depth %d accepted: %d",
              2 * FERRY_JSON_MAX_DEPTH + 1, r);
}

/* jansson accepts i_structure_500_nested_arrays; inside a JWS header ferry must not. */
Test(jsontestsuite, jws_header_500_nested_arrays)
{
    size_t len, hl;
    char *buf, *h, *tok;
    ferry_jws *jws = NULL;
    int r;

    TU_REQUIRE_VECTORS();
    buf = read_suite_file("i_structure_500_nested_arrays.json", &len);
    hl = len + 32;
    h = malloc(hl);
    cr_assert_not_null(h);
    hl = (size_t)snprintf(h, hl, "{\"alg\":\"ES256\",\"x\":%.*s}", (int)len, buf);
    tok = token_with_header(h, hl);
    r = ferry_jws_parse(tok, strlen(tok), &jws);
    cr_expect(r == -FERRY_ETOOBIG || r == -FERRY_EMALFORMED,
              "500 nested arrays in a header accepted: %d", r);
    ferry_jws_free(jws);
    free(tok);
    free(h);
    free(buf);
}

static int parse_header_bytes(const char *h, size_t len)
{
    char *tok = token_with_header(h, len);
    ferry_jws *jws = NULL;
    int r = ferry_jws_parse(tok, strlen(tok), &jws);

    ferry_jws_free(jws);
    free(tok);
    return r;
}

/* A raw NUL in the protected header is refused even where jansson would swallow it (see
 * jansson_swallows_nul_after_token). */
Test(jsontestsuite, jws_header_raw_nul)
{
    int r;

    cr_expect_eq(parse_header_bytes(LIT("{\"alg\":\"ES256\",\"n\":1}")), 0);
    r = parse_header_bytes(LIT("{\"alg\":\"ES256\",\"n\":1\0}"));
    cr_expect_eq(r, -FERRY_EMALFORMED, "NUL after a number in the header: %d (%s)", r,
                 ferry_strerror(r));
    r = parse_header_bytes(LIT("{\"alg\":\"ES256\",\"n\":true\0}"));
    cr_expect_eq(r, -FERRY_EMALFORMED, "NUL after a literal in the header: %d (%s)", r,
                 ferry_strerror(r));
    r = parse_header_bytes(LIT("{\"alg\":\"ES256\"}\0"));
    cr_expect_eq(r, -FERRY_EMALFORMED, "trailing NUL after the header: %d", r);
}
