/* tests/unit/test_wycheproof.c - Wycheproof (C2SP/wycheproof testvectors_v1) through ferry's
 * jose layer, at three levels:
 *
 *   signature layer  ferry_jose_verify / ferry_jose_sign / ferry_ecdsa_der_to_p1363 with keys
 *                    imported by ferry_jwk_from_json (or ferry_jwk_from_pem);
 *   JWS layer        ferry_jws_parse + ferry_jws_verify on the full compact tokens;
 *   JWK-set layer    ferry_jwks_from_json on the key-set validation vectors.
 *
 * Every vector is checked against its label. Where ferry deliberately answers differently, the
 * tcId is listed in a static table below with the reason, so that a silent behaviour change
 * fails the test. Each test asserts that it checked every vector of its file (numberOfTests
 * minus the vectors it skips explicitly, each skip with a reason) and logs the counts.
 *
 * Vectors are read at run time from $FERRY_SHARED/vectors (see vectors/README.md). */
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

#define WP_DIR "wycheproof/testvectors_v1"

/* ---- small helpers ------------------------------------------------------------------- */

static json_t *wp_load(const char *file)
{
    json_t *doc = tu_load_vector_json(WP_DIR, file);

    cr_assert_not_null(doc, "cannot load " WP_DIR "/%s", file);
    return doc;
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static int jtcid(const json_t *t)
{
    return (int)json_integer_value(json_object_get(t, "tcId"));
}

static bool has_flag(const json_t *t, const char *flag)
{
    size_t i;
    json_t *f;

    json_array_foreach(json_object_get(t, "flags"), i, f)
        if (json_is_string(f) && strcmp(json_string_value(f), flag) == 0)
            return true;
    return false;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* New buffer (at least 1 byte) with the bytes of a hex string. */
static unsigned char *unhex(const char *hex, size_t *ret_len)
{
    size_t n;
    unsigned char *out;

    cr_assert_not_null(hex);
    n = strlen(hex);
    cr_assert_eq(n % 2, 0, "odd hex length: %s", hex);
    out = malloc(n / 2 + 1);
    cr_assert_not_null(out);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        cr_assert(hi >= 0 && lo >= 0, "bad hex: %s", hex);
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    *ret_len = n / 2;
    return out;
}

/* base64url of an unsigned big-endian integer given in hex: leading zero bytes stripped, then
 * left-padded with zeros to pad_to bytes when pad_to > 0 (JWK EC coordinates are fixed-size). */
static char *b64_of_hex_int(const char *hex, size_t pad_to)
{
    size_t n, off = 0;
    unsigned char *raw = unhex(hex, &n), *buf;
    char *out;

    while (off < n && raw[off] == 0)
        off++;
    n -= off;
    if (pad_to) {
        cr_assert_leq(n, pad_to);
        buf = calloc(1, pad_to);
        cr_assert_not_null(buf);
        memcpy(buf + pad_to - n, raw + off, n);
        n = pad_to;
    } else {
        buf = malloc(n + 1);
        cr_assert_not_null(buf);
        memcpy(buf, raw + off, n);
    }
    out = ferry_b64url_encode_alloc(buf, n);
    cr_assert_not_null(out);
    free(buf);
    free(raw);
    return out;
}

static char *b64_of_hex(const char *hex)
{
    size_t n;
    unsigned char *raw = unhex(hex, &n);
    char *out = ferry_b64url_encode_alloc(raw, n);

    cr_assert_not_null(out);
    free(raw);
    return out;
}

/* Decoded base64url member of a JWK, or NULL when absent/invalid. */
static unsigned char *jwk_bytes(const json_t *jwk, const char *member, size_t *ret_len)
{
    const char *s = jstr(jwk, member);
    unsigned char *out = NULL;

    if (!s || ferry_b64url_decode_alloc(s, strlen(s), &out, ret_len) < 0)
        return NULL;
    return out;
}

/* ---- what include/ferry/jose.h promises about key import -------------------------------- */

static size_t uint_bits(const unsigned char *p, size_t n)
{
    size_t i = 0;

    while (i < n && p[i] == 0)
        i++;
    if (i == n)
        return 0;
    size_t bits = (n - i) * 8;
    for (unsigned char c = p[i]; !(c & 0x80); c <<= 1)
        bits--;
    return bits;
}

static bool refuse(const char **why, const char *reason)
{
    *why = reason;
    return false;
}

/* ROCA (CVE-2017-15361) fingerprint: for every small prime p of the detector, n mod p lies in
 * the subgroup generated by 65537 mod p. Random moduli fail this test with overwhelming
 * probability; moduli from the vulnerable Infineon generator always pass it. */
static bool rsa_roca_fingerprint(const unsigned char *n, size_t len)
{
    static const unsigned primes[] = {3,   5,   7,   11,  13,  17,  19,  23,  29,  31,
                                      37,  41,  43,  47,  53,  59,  61,  67,  71,  73,
                                      79,  83,  89,  97,  101, 103, 107, 109, 113, 127,
                                      131, 137, 139, 149, 151, 157, 163, 167};

    for (size_t i = 0; i < sizeof(primes) / sizeof(primes[0]); i++) {
        unsigned p = primes[i], r = 0, g = 65537 % p, x = 1;
        bool in = false;

        for (size_t k = 0; k < len; k++)
            r = (r * 256 + n[k]) % p;
        do { /* walk the subgroup <65537 mod p> */
            if (x == r)
                in = true;
            x = x * g % p;
        } while (x != 1);
        if (x == r)
            in = true;
        if (!in)
            return false;
    }
    return true;
}

static bool alg_in(const char *alg, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(alg, *list) == 0)
            return true;
    return false;
}

/* The contract of ferry_jwk_from_json: RSA >= FERRY_RSA_MIN_BITS (<= MAX) with odd e > 1, EC
 * P-256/P-384 with full-length coordinates (the on-curve check is not modelled here: callers
 * with off-curve points say so), OKP Ed25519; no oct; use absent or "sig"; key_ops with
 * "verify" or "sign"; alg absent or fitting the key; private members only with ALLOW_PRIVATE.
 * Returns true when the import must succeed; *why says why not. */
static bool jwk_must_import(const json_t *jwk, bool allow_private, const char **why)
{
    static const char *const priv_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
    static const char *const rsa_algs[] = {"RS256", "RS384", "RS512", "PS256",
                                           "PS384", "PS512", NULL};
    static const char *const p256_algs[] = {"ES256", NULL};
    static const char *const p384_algs[] = {"ES384", NULL};
    static const char *const okp_algs[] = {"EdDSA", NULL};
    const char *const *algs;
    const char *kty = jstr(jwk, "kty"), *use = jstr(jwk, "use"), *alg = jstr(jwk, "alg");
    const json_t *ops = json_object_get(jwk, "key_ops"), *kid = json_object_get(jwk, "kid");

    *why = NULL;
    if (!json_is_object(jwk) || !kty)
        return refuse(why, "not an object with kty");
    if (strcmp(kty, "oct") == 0)
        return refuse(why, "symmetric (oct) key: no HMAC in ferry");
    if (!allow_private)
        for (size_t i = 0; i < sizeof(priv_members) / sizeof(priv_members[0]); i++)
            if (json_object_get(jwk, priv_members[i]))
                return refuse(why, "private member without FERRY_JWK_ALLOW_PRIVATE");
    if (json_object_get(jwk, "use") && (!use || strcmp(use, "sig") != 0))
        return *why = "use is not \"sig\"", false;
    if (ops) {
        bool ok = false;
        size_t i;
        json_t *op;

        if (!json_is_array(ops))
            return refuse(why, "key_ops not an array");
        json_array_foreach(ops, i, op)
            if (json_is_string(op) && (strcmp(json_string_value(op), "verify") == 0 ||
                                       strcmp(json_string_value(op), "sign") == 0))
                ok = true;
        if (!ok)
            return refuse(why, "key_ops without verify/sign");
    }
    if (kid && (!json_is_string(kid) || strlen(json_string_value(kid)) > FERRY_KID_MAX_LEN))
        return refuse(why, "bad kid");
    if (json_object_get(jwk, "alg") && !alg)
        return refuse(why, "alg not a string");

    if (strcmp(kty, "RSA") == 0) {
        size_t nl = 0, el = 0, bits;
        unsigned char *n = jwk_bytes(jwk, "n", &nl), *e = jwk_bytes(jwk, "e", &el);
        bool e_ok = e && el > 0 && (e[el - 1] & 1) && uint_bits(e, el) > 1;
        bool roca = n && rsa_roca_fingerprint(n, nl);

        bits = n ? uint_bits(n, nl) : 0;
        free(n);
        free(e);
        if (bits < FERRY_RSA_MIN_BITS || bits > FERRY_RSA_MAX_BITS)
            return refuse(why, "RSA modulus size outside policy");
        if (!e_ok)
            return refuse(why, "RSA exponent even or 1");
        /* Not in jose.h's list, but Wycheproof labels ROCA keys invalid (json_web_key tcId 7,
         * json_web_crypto tcId 46) and SECURITY-TESTS.md A8 asks for the labels. */
        if (roca)
            return refuse(why, "ROCA-vulnerable RSA modulus (CVE-2017-15361)");
        algs = rsa_algs;
    } else if (strcmp(kty, "EC") == 0) {
        const char *crv = jstr(jwk, "crv");
        size_t fl, xl = 0, yl = 0;
        unsigned char *x, *y;

        if (crv && strcmp(crv, "P-256") == 0) {
            fl = 32;
            algs = p256_algs;
        } else if (crv && strcmp(crv, "P-384") == 0) {
            fl = 48;
            algs = p384_algs;
        } else {
            return refuse(why, "EC curve not supported (P-256, P-384 only)");
        }
        x = jwk_bytes(jwk, "x", &xl);
        y = jwk_bytes(jwk, "y", &yl);
        free(x);
        free(y);
        if (!x || !y || xl != fl || yl != fl)
            return refuse(why, "EC coordinates missing or not field-sized");
    } else if (strcmp(kty, "OKP") == 0) {
        const char *crv = jstr(jwk, "crv");
        size_t xl = 0;
        unsigned char *x;

        if (!crv || strcmp(crv, "Ed25519") != 0)
            return refuse(why, "OKP curve not Ed25519");
        x = jwk_bytes(jwk, "x", &xl);
        free(x);
        if (!x || xl != 32)
            return refuse(why, "Ed25519 x not 32 bytes");
        algs = okp_algs;
    } else {
        return refuse(why, "unsupported kty");
    }
    if (alg && !alg_in(alg, algs))
        return refuse(why, "alg does not fit the key");
    return true;
}

/* Import a JWK and check the result against the contract (non-fatal: a disagreement is
 * reported and the caller goes on with whatever ferry returned). Returns the key or NULL. */
static ferry_jwk *import_checked(const json_t *jwk, unsigned flags, const char *ctx)
{
    const char *why;
    bool must = jwk_must_import(jwk, flags & FERRY_JWK_ALLOW_PRIVATE, &why);
    ferry_jwk *key = NULL;
    int r = ferry_jwk_from_json(jwk, flags, &key);

    cr_expect_eq(r == 0, key != NULL, "%s: return %d but key %p", ctx, r, (void *)key);
    if (must)
        cr_expect_eq(r, 0, "%s: key import failed: %d (%s)", ctx, r, ferry_strerror(r));
    else
        cr_expect_lt(r, 0, "%s: key imported although %s", ctx, why);
    if (r < 0) {
        ferry_jwk_unref(key);
        key = NULL;
    }
    return key;
}

/* ---- counting -------------------------------------------------------------------------- */

struct tally {
    const char *file;
    size_t total;    /* numberOfTests */
    size_t checked;  /* vectors whose outcome was asserted */
    size_t skipped;  /* explicitly skipped, reason logged */
    size_t accepted; /* ferry accepted (valid signature, token, key) */
    size_t rejected;
    size_t key_refused; /* vectors whose group key ferry refused by policy */
    size_t deviations;  /* ferry's answer differs from the label, as listed */
    const char *skip_reason;
    char notes[512];    /* tcIds worth naming in the log */
};

static void tally_init(struct tally *t, const char *file, const json_t *doc)
{
    size_t sum = 0, i;
    json_t *g;

    memset(t, 0, sizeof(*t));
    t->file = file;
    t->total = (size_t)json_integer_value(json_object_get(doc, "numberOfTests"));
    json_array_foreach(json_object_get(doc, "testGroups"), i, g)
        sum += json_array_size(json_object_get(g, "tests"));
    cr_assert_gt(t->total, 0, "%s: no numberOfTests", file);
    cr_assert_eq(sum, t->total, "%s: numberOfTests %zu but %zu tests", file, t->total, sum);
}

/* Append "<what> <tcid>" to the notes of the log line. */
static void tally_note(struct tally *t, const char *what, int tcid)
{
    size_t l = strlen(t->notes);

    if (l < sizeof(t->notes) - 16)
        snprintf(t->notes + l, sizeof(t->notes) - l, "%s%s %d", l ? ", " : "; ", what, tcid);
}

static void tally_finish(const struct tally *t)
{
    cr_assert_gt(t->checked, 0, "%s: nothing checked", t->file);
    cr_assert_eq(t->checked + t->skipped, t->total,
                 "%s: %zu checked + %zu skipped != numberOfTests %zu", t->file, t->checked,
                 t->skipped, t->total);
    cr_assert(!t->skipped || t->skip_reason, "%s: skips without a reason", t->file);
    cr_log_info("%s: %zu/%zu vectors checked (%zu accepted, %zu rejected, %zu under a refused "
                "key, %zu listed deviations), %zu skipped%s%s%s%s",
                t->file, t->checked, t->total, t->accepted, t->rejected, t->key_refused,
                t->deviations, t->skipped, t->skipped ? " (" : "",
                t->skipped ? t->skip_reason : "", t->skipped ? ")" : "", t->notes);
}

/* ---- signature layer ------------------------------------------------------------------- */

/* Vectors where ferry's answer is fixed by this table instead of the label. `accept` is what
 * ferry must do; `rc` (when non-zero) the exact code of the first failing step (parse, then key
 * import, then verify). Entries whose `accept` equals the label document a data bug. */
struct expect_override {
    int tcid;
    bool accept;
    int rc;
    const char *reason;
};

static const struct expect_override *find_override(const struct expect_override *tab, size_t n,
                                                   int tcid)
{
    for (size_t i = 0; i < n; i++)
        if (tab[i].tcid == tcid)
            return &tab[i];
    return NULL;
}

/* JWK of a signature-test group: publicKeyJwk, else keyJwk, else built from publicKey. */
static json_t *group_public_jwk(const json_t *g)
{
    const json_t *pk = json_object_get(g, "publicKey");
    const char *type, *curve;
    json_t *j;

    if ((j = json_object_get(g, "publicKeyJwk")) || (j = json_object_get(g, "keyJwk")))
        return json_incref(j);
    cr_assert(json_is_object(pk), "group without publicKey");
    type = jstr(pk, "type");
    if (json_object_get(pk, "modulus")) {
        char *n = b64_of_hex_int(jstr(pk, "modulus"), 0);
        char *e = b64_of_hex_int(jstr(pk, "publicExponent"), 0);

        j = json_pack("{s:s, s:s, s:s}", "kty", "RSA", "n", n, "e", e);
        free(n);
        free(e);
    } else if (type && strcmp(type, "EcPublicKey") == 0) {
        size_t fl;
        const char *crv;
        char *x, *y;

        curve = jstr(pk, "curve");
        cr_assert_not_null(curve);
        if (strcmp(curve, "secp256r1") == 0)
            crv = "P-256", fl = 32;
        else if (strcmp(curve, "secp384r1") == 0)
            crv = "P-384", fl = 48;
        else if (strcmp(curve, "secp521r1") == 0)
            crv = "P-521", fl = 66;
        else
            cr_assert_fail("unknown curve %s", curve);
        x = b64_of_hex_int(jstr(pk, "wx"), fl);
        y = b64_of_hex_int(jstr(pk, "wy"), fl);
        j = json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", crv, "x", x, "y", y);
        free(x);
        free(y);
    } else if (type && strcmp(type, "EDDSAPublicKey") == 0) {
        char *x = b64_of_hex(jstr(pk, "pk"));

        j = json_pack("{s:s, s:s, s:s}", "kty", "OKP", "crv", "Ed25519", "x", x);
        free(x);
    } else {
        cr_assert_fail("unknown key type %s", type);
    }
    cr_assert_not_null(j);
    return j;
}

/* An alg whose key type or curve differs from the key's: verify must say EKEYMISMATCH. */
static ferry_alg foreign_alg(const json_t *jwk)
{
    const char *kty = jstr(jwk, "kty"), *crv = jstr(jwk, "crv");

    if (strcmp(kty, "EC") == 0)
        return crv && strcmp(crv, "P-256") == 0 ? FERRY_ALG_ES384 : FERRY_ALG_ES256;
    if (strcmp(kty, "OKP") == 0)
        return FERRY_ALG_RS256;
    return FERRY_ALG_ES256;
}

enum sig_mode {
    SIG_NORMAL,   /* labels apply */
    SIG_NEGATIVE, /* the file's "valid" signatures use parameters ferry refuses: all rejected */
};

/* rsa_pss_2048_sha256_mgf1_0: labels are for salt length 0. */
static const struct expect_override pss0_overrides[] = {
    {69, true, 0,
     "\"s_len changed to 32\": salt length 32 is exactly JWA PS256, which ferry pins; "
     "invalid only under this file's sLen = 0"},
};

static void run_sig_file(const char *file, const char *alg_name, enum sig_mode mode,
                         const struct expect_override *ov, size_t n_ov)
{
    json_t *doc, *g, *t;
    struct tally ta;
    ferry_alg alg = ferry_alg_from_name(alg_name);
    size_t gi, ti, n_seen = 0;

    TU_REQUIRE_VECTORS();
    doc = wp_load(file);
    tally_init(&ta, file, doc);
    cr_assert_neq(alg, FERRY_ALG_UNKNOWN, "%s: alg %s not supported", file, alg_name);
    cr_assert_eq(ferry_jose_verify(alg, NULL, "x", 1, "x", 1), -FERRY_ENOKEY);

    json_array_foreach(json_object_get(doc, "testGroups"), gi, g) {
        json_t *jwk = group_public_jwk(g);
        char ctx[128];
        ferry_jwk *key;
        bool cross_done = false;

        snprintf(ctx, sizeof(ctx), "%s group %zu", file, gi);
        key = import_checked(jwk, 0, ctx);
        if (!key) {
            size_t n = json_array_size(json_object_get(g, "tests"));
            ta.key_refused += n;
            ta.checked += n;
            json_decref(jwk);
            continue;
        }
        json_array_foreach(json_object_get(g, "tests"), ti, t) {
            const char *result = jstr(t, "result");
            const struct expect_override *o;
            int tc = jtcid(t), r;
            size_t ml, sl;
            unsigned char *msg = unhex(jstr(t, "msg"), &ml), *sig = unhex(jstr(t, "sig"), &sl);

            r = ferry_jose_verify(alg, key, msg, ml, sig, sl);
            o = find_override(ov, n_ov, tc);
            if (o) {
                n_seen++;
                ta.deviations++;
                cr_expect_eq(r == 0, o->accept, "%s tcId %d (table: %s): got %d (%s)", file, tc,
                             o->reason, r, ferry_strerror(r));
            } else if (strcmp(result, "valid") == 0 && mode == SIG_NORMAL) {
                cr_expect_eq(r, 0, "%s tcId %d (%s): valid signature rejected: %d (%s)", file,
                             tc, jstr(t, "comment"), r, ferry_strerror(r));
                if (!cross_done) {
                    /* The same good signature under an alg of another key type. */
                    int x = ferry_jose_verify(foreign_alg(jwk), key, msg, ml, sig, sl);
                    cr_expect_eq(x, -FERRY_EKEYMISMATCH, "%s tcId %d: foreign alg gave %d", file,
                                 tc, x);
                    cross_done = true;
                }
            } else {
                /* invalid; "acceptable" (legacy encodings: ferry is strict); or, in a negative
                 * file, valid under parameters ferry pins differently. */
                cr_expect_eq(r, -FERRY_EBADSIG, "%s tcId %d (%s, %s): got %d (%s)", file, tc,
                             result, jstr(t, "comment"), r, ferry_strerror(r));
                if (strcmp(result, "acceptable") == 0)
                    tally_note(&ta, "acceptable (rejected) tcId", tc);
                if (strcmp(result, "valid") == 0)
                    ta.deviations++;
            }
            if (r == 0)
                ta.accepted++;
            else
                ta.rejected++;
            ta.checked++;
            free(msg);
            free(sig);
        }
        ferry_jwk_unref(key);
        json_decref(jwk);
    }
    cr_expect_eq(n_seen, n_ov, "%s: some override tcIds were not found", file);
    tally_finish(&ta);
    json_decref(doc);
}

Test(wycheproof_sig, ecdsa_secp256r1_sha256_p1363)
{
    run_sig_file("ecdsa_secp256r1_sha256_p1363_test.json", "ES256", SIG_NORMAL, NULL, 0);
}

Test(wycheproof_sig, ecdsa_secp384r1_sha384_p1363)
{
    run_sig_file("ecdsa_secp384r1_sha384_p1363_test.json", "ES384", SIG_NORMAL, NULL, 0);
}

Test(wycheproof_sig, ed25519)
{
    run_sig_file("ed25519_test.json", "EdDSA", SIG_NORMAL, NULL, 0);
}

Test(wycheproof_sig, rsa_signature_2048_sha256)
{
    run_sig_file("rsa_signature_2048_sha256_test.json", "RS256", SIG_NORMAL, NULL, 0);
}

Test(wycheproof_sig, rsa_signature_3072_sha256)
{
    run_sig_file("rsa_signature_3072_sha256_test.json", "RS256", SIG_NORMAL, NULL, 0);
}

Test(wycheproof_sig, rsa_signature_4096_sha256)
{
    run_sig_file("rsa_signature_4096_sha256_test.json", "RS256", SIG_NORMAL, NULL, 0);
}

Test(wycheproof_sig, rsa_signature_2048_sha384)
{
    run_sig_file("rsa_signature_2048_sha384_test.json", "RS384", SIG_NORMAL, NULL, 0);
}

Test(wycheproof_sig, rsa_signature_2048_sha512)
{
    run_sig_file("rsa_signature_2048_sha512_test.json", "RS512", SIG_NORMAL, NULL, 0);
}

Test(wycheproof_sig, rsa_pss_2048_sha256_mgf1_32)
{
    run_sig_file("rsa_pss_2048_sha256_mgf1_32_test.json", "PS256", SIG_NORMAL, NULL, 0);
}

Test(wycheproof_sig, rsa_pss_3072_sha256_mgf1_32)
{
    run_sig_file("rsa_pss_3072_sha256_mgf1_32_test.json", "PS256", SIG_NORMAL, NULL, 0);
}

Test(wycheproof_sig, rsa_pss_4096_sha384_mgf1_48)
{
    run_sig_file("rsa_pss_4096_sha384_mgf1_48_test.json", "PS384", SIG_NORMAL, NULL, 0);
}

Test(wycheproof_sig, rsa_pss_4096_sha512_mgf1_64)
{
    run_sig_file("rsa_pss_4096_sha512_mgf1_64_test.json", "PS512", SIG_NORMAL, NULL, 0);
}

/* Salt length 0 is a valid RSASSA-PSS parameter, but JWA PS256 means salt length = 32: ferry
 * pins it, so every "valid" (salt 0) signature here must be REJECTED (OpenSSL's default
 * RSA_PSS_SALTLEN_AUTO would accept them), as must the other wrong salt lengths (tcId 67, 68,
 * 70); tcId 69 (salt 32) is a correct PS256 signature and must verify. */
Test(wycheproof_sig, rsa_pss_2048_sha256_mgf1_0_is_rejected)
{
    run_sig_file("rsa_pss_2048_sha256_mgf1_0_test.json", "PS256", SIG_NEGATIVE, pss0_overrides,
                 sizeof(pss0_overrides) / sizeof(pss0_overrides[0]));
}

/* ES512 is not supported: the name is unknown and every P-521 key is refused at import. */
Test(wycheproof_sig, ecdsa_secp521r1_sha512_p1363_is_unsupported)
{
    json_t *doc, *g;
    struct tally ta;
    size_t gi;
    const char *file = "ecdsa_secp521r1_sha512_p1363_test.json";

    TU_REQUIRE_VECTORS();
    cr_assert_eq(ferry_alg_from_name("ES512"), FERRY_ALG_UNKNOWN);
    doc = wp_load(file);
    tally_init(&ta, file, doc);
    json_array_foreach(json_object_get(doc, "testGroups"), gi, g) {
        json_t *jwk = group_public_jwk(g);
        ferry_jwk *key = NULL;
        int r = ferry_jwk_from_json(jwk, 0, &key);
        size_t n = json_array_size(json_object_get(g, "tests"));

        cr_expect_eq(r, -FERRY_EUNSUPPORTED, "%s group %zu: P-521 key gave %d (%s)", file, gi, r,
                     ferry_strerror(r));
        cr_expect_null(key);
        ferry_jwk_unref(key);
        ta.key_refused += n;
        ta.rejected += n;
        ta.checked += n;
        json_decref(jwk);
    }
    tally_finish(&ta);
    json_decref(doc);
}

/* DER-encoded ECDSA (what AWS KMS Sign and Vault transit return) through the minting path's
 * converter: valid -> converts, verifies and re-encodes to the same DER; invalid -> refused by
 * the converter or by verify; any BER or otherwise non-DER encoding -> refused by the
 * converter itself. */
static void run_der_file(const char *file, const char *alg_name, size_t fl)
{
    static const char *const encoding_flags[] = {"BerEncodedSignature", "InvalidEncoding",
                                                 "InvalidTypesInSignature", "MissingZero"};
    ferry_alg alg = ferry_alg_from_name(alg_name);
    json_t *doc, *g, *t;
    struct tally ta;
    size_t gi, ti, conv_refused = 0, verify_failed = 0;

    TU_REQUIRE_VECTORS();
    doc = wp_load(file);
    tally_init(&ta, file, doc);
    json_array_foreach(json_object_get(doc, "testGroups"), gi, g) {
        json_t *jwk = group_public_jwk(g);
        char ctx[128];
        ferry_jwk *key;

        snprintf(ctx, sizeof(ctx), "%s group %zu", file, gi);
        key = import_checked(jwk, 0, ctx);
        cr_assert_not_null(key);
        json_array_foreach(json_object_get(g, "tests"), ti, t) {
            const char *result = jstr(t, "result");
            int tc = jtcid(t), rc, rv = -1;
            bool non_der = false;
            size_t ml, dl;
            unsigned char *msg = unhex(jstr(t, "msg"), &ml), *der = unhex(jstr(t, "sig"), &dl);
            unsigned char p1363[2 * 66];

            for (size_t k = 0; k < sizeof(encoding_flags) / sizeof(encoding_flags[0]); k++)
                non_der |= has_flag(t, encoding_flags[k]);
            rc = ferry_ecdsa_der_to_p1363(der, dl, fl, p1363);
            if (rc == 0)
                rv = ferry_jose_verify(alg, key, msg, ml, p1363, 2 * fl);
            if (strcmp(result, "valid") == 0) {
                unsigned char *back = NULL;
                size_t bl = 0;

                cr_expect_eq(rc, 0, "%s tcId %d: valid DER refused: %d", file, tc, rc);
                cr_expect_eq(rv, 0, "%s tcId %d: converted valid signature failed: %d", file,
                             tc, rv);
                if (rc == 0) {
                    int r2 = ferry_ecdsa_p1363_to_der(p1363, 2 * fl, &back, &bl);
                    cr_expect_eq(r2, 0);
                    cr_expect(r2 == 0 && bl == dl && memcmp(back, der, dl) == 0,
                              "%s tcId %d: P1363 -> DER does not give the original DER", file,
                              tc);
                    free(back);
                }
                ta.accepted++;
            } else {
                cr_expect_neq(result[0], 'a', "%s: no acceptable vectors expected", file);
                if (non_der)
                    cr_expect_lt(rc, 0, "%s tcId %d (%s): non-DER encoding converted", file, tc,
                                 jstr(t, "comment"));
                else
                    cr_expect(rc < 0 || rv == -FERRY_EBADSIG,
                              "%s tcId %d (%s): invalid signature accepted (conv %d, verify %d)",
                              file, tc, jstr(t, "comment"), rc, rv);
                if (rc < 0)
                    conv_refused++;
                else
                    verify_failed++;
                ta.rejected++;
            }
            ta.checked++;
            free(msg);
            free(der);
        }
        ferry_jwk_unref(key);
        json_decref(jwk);
    }
    tally_finish(&ta);
    cr_log_info("%s: invalid ones refused by the DER converter: %zu, by verify: %zu", file,
                conv_refused, verify_failed);
    json_decref(doc);
}

Test(wycheproof_sig, ecdsa_secp256r1_sha256_der)
{
    run_der_file("ecdsa_secp256r1_sha256_test.json", "ES256", 32);
}

Test(wycheproof_sig, ecdsa_secp384r1_sha384_der)
{
    run_der_file("ecdsa_secp384r1_sha384_test.json", "ES384", 48);
}

/* Deterministic RSASSA-PKCS1-v1_5 signing: ferry_jose_sign must reproduce every expected
 * signature byte for byte, with the private key imported from its JWK and from its PEM. */
Test(wycheproof_sig, rsa_pkcs1_2048_sig_gen)
{
    const char *file = "rsa_pkcs1_2048_sig_gen_test.json";
    json_t *doc, *g, *t;
    struct tally ta;
    size_t gi, ti;

    TU_REQUIRE_VECTORS();
    doc = wp_load(file);
    tally_init(&ta, file, doc);
    json_array_foreach(json_object_get(doc, "testGroups"), gi, g) {
        const char *sha = jstr(g, "sha"), *pem = jstr(g, "privateKeyPem");
        const json_t *pjwk = json_object_get(g, "privateKeyJwk");
        ferry_alg alg;
        ferry_jwk *kj = NULL, *kp = NULL, *kpub = NULL;
        json_t *pubjwk;
        char ctx[128];
        int r;

        if (strcmp(sha, "SHA-256") == 0) {
            alg = FERRY_ALG_RS256;
        } else if (strcmp(sha, "SHA-384") == 0) {
            alg = FERRY_ALG_RS384;
        } else if (strcmp(sha, "SHA-512") == 0) {
            alg = FERRY_ALG_RS512;
        } else {
            /* SHA-1 and SHA-224 have no JWA algorithm: nothing to call. */
            ta.skipped += json_array_size(json_object_get(g, "tests"));
            ta.skip_reason = "SHA-1 and SHA-224 groups: no JWA algorithm";
            continue;
        }
        snprintf(ctx, sizeof(ctx), "%s group %zu", file, gi);
        cr_assert_not_null(pjwk, "%s: no privateKeyJwk", ctx);
        kj = import_checked(pjwk, FERRY_JWK_ALLOW_PRIVATE, ctx);
        cr_assert_not_null(kj);
        cr_assert(ferry_jwk_is_private(kj));
        r = ferry_jwk_from_json(pjwk, 0, &kpub);
        cr_expect_lt(r, 0, "%s: private JWK imported without ALLOW_PRIVATE", ctx);
        ferry_jwk_unref(kpub);
        kpub = NULL;
        cr_assert_not_null(pem);
        r = ferry_jwk_from_pem(pem, strlen(pem), &kp);
        cr_assert_eq(r, 0, "%s: PEM import failed: %d (%s)", ctx, r, ferry_strerror(r));
        cr_assert(ferry_jwk_is_private(kp));
        pubjwk = group_public_jwk(g);
        kpub = import_checked(pubjwk, 0, ctx);
        cr_assert_not_null(kpub);

        json_array_foreach(json_object_get(g, "tests"), ti, t) {
            int tc = jtcid(t);
            size_t ml, sl, l1 = 0, l2 = 0;
            unsigned char *msg = unhex(jstr(t, "msg"), &ml), *want = unhex(jstr(t, "sig"), &sl);
            unsigned char *s1 = NULL, *s2 = NULL;

            r = ferry_jose_sign(alg, kj, msg, ml, &s1, &l1);
            cr_expect_eq(r, 0, "%s tcId %d: sign (JWK key) failed: %d", file, tc, r);
            cr_expect(r == 0 && l1 == sl && memcmp(s1, want, sl) == 0,
                      "%s tcId %d: JWK-key signature differs from the expected one", file, tc);
            r = ferry_jose_sign(alg, kp, msg, ml, &s2, &l2);
            cr_expect_eq(r, 0, "%s tcId %d: sign (PEM key) failed: %d", file, tc, r);
            cr_expect(r == 0 && l2 == sl && memcmp(s2, want, sl) == 0,
                      "%s tcId %d: PEM-key signature differs from the expected one", file, tc);
            r = ferry_jose_verify(alg, kpub, msg, ml, want, sl);
            cr_expect_eq(r, 0, "%s tcId %d: expected signature does not verify: %d", file, tc, r);
            if (strcmp(jstr(t, "result"), "acceptable") == 0)
                tally_note(&ta, "acceptable (reproduced) tcId", tc);
            ta.accepted++;
            ta.checked++;
            free(s1);
            free(s2);
            free(msg);
            free(want);
        }
        ferry_jwk_unref(kj);
        ferry_jwk_unref(kp);
        ferry_jwk_unref(kpub);
        json_decref(pubjwk);
    }
    tally_finish(&ta);
    json_decref(doc);
}

/* HMAC is not supported by design: HS* names are unknown and no oct key can be imported, so no
 * MAC vector can ever be accepted. Each vector's key is offered as an oct JWK. */
static void run_hmac_file(const char *file, const char *alg_name)
{
    json_t *doc, *g, *t;
    struct tally ta;
    size_t gi, ti;

    TU_REQUIRE_VECTORS();
    cr_assert_eq(ferry_alg_from_name(alg_name), FERRY_ALG_UNKNOWN, "%s accepted", alg_name);
    doc = wp_load(file);
    tally_init(&ta, file, doc);
    json_array_foreach(json_object_get(doc, "testGroups"), gi, g)
        json_array_foreach(json_object_get(g, "tests"), ti, t) {
            char *k = b64_of_hex(jstr(t, "key"));
            json_t *jwk = json_pack("{s:s, s:s, s:s, s:s}", "kty", "oct", "alg", alg_name,
                                    "use", "sig", "k", k);
            ferry_jwk *key = NULL;
            int r1, r2;

            cr_assert_not_null(jwk);
            r1 = ferry_jwk_from_json(jwk, 0, &key);
            ferry_jwk_unref(key);
            key = NULL;
            r2 = ferry_jwk_from_json(jwk, FERRY_JWK_ALLOW_PRIVATE, &key);
            ferry_jwk_unref(key);
            cr_expect(r1 < 0 && r2 < 0, "%s tcId %d: oct key imported (%d, %d)", file,
                      jtcid(t), r1, r2);
            ta.key_refused++;
            ta.rejected++;
            ta.checked++;
            json_decref(jwk);
            free(k);
        }
    tally_finish(&ta);
    json_decref(doc);
}

Test(wycheproof_sig, hmac_sha256_is_unsupported)
{
    run_hmac_file("hmac_sha256_test.json", "HS256");
}

Test(wycheproof_sig, hmac_sha384_is_unsupported)
{
    run_hmac_file("hmac_sha384_test.json", "HS384");
}

Test(wycheproof_sig, hmac_sha512_is_unsupported)
{
    run_hmac_file("hmac_sha512_test.json", "HS512");
}

/* ---- JWS layer ------------------------------------------------------------------------- */

#define HMAC_REASON "HS256: ferry supports no HMAC algorithm by design"

static const struct expect_override jws_overrides[] = {
    {1, false, -FERRY_EUNSUPPORTED, HMAC_REASON},
    {346, false, -FERRY_EKEYMISMATCH,
     "PS384 token, but the key declares \"alg\":\"PS256\": ferry binds a key to its declared alg"},
    {347, false, -FERRY_EUNSUPPORTED, "ES512 (P-521) is not supported"},
    {348, false, -FERRY_EUNSUPPORTED, HMAC_REASON},
    {350, false, -FERRY_EKEYMISMATCH,
     "PS384 token, but the key declares \"alg\":\"PS256\": ferry binds a key to its declared alg"},
    {351, false, -FERRY_EUNSUPPORTED, "ES512 (P-521) is not supported"},
    {352, false, -FERRY_EUNSUPPORTED, HMAC_REASON},
    {357, false, -FERRY_EUNSUPPORTED, HMAC_REASON},
    {358, false, -FERRY_EUNSUPPORTED, HMAC_REASON},
    {359, false, -FERRY_EUNSUPPORTED, HMAC_REASON},
    {367, false, -FERRY_EUNSUPPORTED,
     "data bug (C2SP/wycheproof#236): byte-identical to 357 but labelled invalid; refused like "
     "357 (HS256)"},
    {370, false, -FERRY_EUNSUPPORTED,
     "data bug (C2SP/wycheproof#236): byte-identical to 357 but labelled invalid; refused like "
     "357 (HS256)"},
    {372, false, -FERRY_EMALFORMED,
     "'?' inserted in the header: labelled valid for lenient decoders; ferry's strict base64url "
     "refuses it (also HS256)"},
    {373, false, 0,
     "'?' inserted in the payload: labelled valid for lenient decoders; ferry's strict base64url "
     "refuses it (also HS256)"},
    {376, false, -FERRY_EUNSUPPORTED, HMAC_REASON},
    {377, false, -FERRY_EUNSUPPORTED, HMAC_REASON},
};

/* json_web_crypto_test.json: its JWS part plus the JWE part, which the compact JWS parser
 * must refuse. */
static const struct expect_override crypto_overrides[] = {
    {1, false, -FERRY_EUNSUPPORTED, HMAC_REASON},
    {48, false, -FERRY_EUNSUPPORTED, HMAC_REASON},
    {50, false, -FERRY_EMALFORMED, "JWE (5 segments): ferry parses compact JWS only"},
    {67, false, -FERRY_EMALFORMED, "JWE (5 segments): ferry parses compact JWS only"},
};


/* The keys of a JWS test group: public JWK / key set, else the private one. */
struct group_keys {
    ferry_jwk *key;   /* single JWK groups */
    ferry_jwks *jwks; /* key-set groups */
    int import_rc;
};

static void group_keys_load(struct group_keys *gk, const json_t *g, const char *ctx)
{
    const json_t *pub = json_object_get(g, "public"), *priv = json_object_get(g, "private");
    const json_t *src = json_is_object(pub) ? pub : priv;
    unsigned flags = json_is_object(pub) ? 0 : FERRY_JWK_ALLOW_PRIVATE;
    const char *why;

    memset(gk, 0, sizeof(*gk));
    cr_assert(json_is_object(src), "%s: no key", ctx);
    if (json_object_get(src, "keys")) {
        gk->import_rc = ferry_jwks_from_json(src, &gk->jwks, NULL);
        cr_assert_eq(gk->import_rc, 0, "%s: key set refused: %d", ctx, gk->import_rc);
        return;
    }
    gk->import_rc = ferry_jwk_from_json(src, flags, &gk->key);
    if (jwk_must_import(src, flags, &why))
        cr_expect_eq(gk->import_rc, 0, "%s: key import failed: %d (%s)", ctx, gk->import_rc,
                     ferry_strerror(gk->import_rc));
    else
        cr_expect_lt(gk->import_rc, 0, "%s: key imported although %s", ctx, why);
    if (gk->import_rc < 0) {
        ferry_jwk_unref(gk->key);
        gk->key = NULL;
    }
}

static void group_keys_release(struct group_keys *gk)
{
    ferry_jwk_unref(gk->key);
    ferry_jwks_unref(gk->jwks);
}

/* Parse + verify one token: 0 when accepted, else the code of the first failing step. */
static int jws_check(const char *token, const struct group_keys *gk)
{
    ferry_jws *jws = NULL;
    const ferry_jwk *key;
    int r = ferry_jws_parse(token, strlen(token), &jws);

    if (r < 0) {
        cr_expect_null(jws);
        return r;
    }
    cr_assert_not_null(jws);
    if (gk->jwks) {
        key = jws->kid ? ferry_jwks_find(gk->jwks, jws->kid) : NULL;
        r = key ? 0 : -FERRY_ENOKEY;
    } else {
        key = gk->key;
        r = key ? 0 : gk->import_rc;
    }
    if (r == 0)
        r = ferry_jws_verify(jws, key);
    ferry_jws_free(jws);
    return r;
}

static void run_jws_file(const char *file, const struct expect_override *ov, size_t n_ov)
{
    json_t *doc, *g, *t;
    struct tally ta;
    size_t gi, ti, seen = 0;

    TU_REQUIRE_VECTORS();
    doc = wp_load(file);
    tally_init(&ta, file, doc);
    json_array_foreach(json_object_get(doc, "testGroups"), gi, g) {
        struct group_keys gk;
        char ctx[160];

        snprintf(ctx, sizeof(ctx), "%s group %zu (%s)", file, gi, jstr(g, "comment"));
        group_keys_load(&gk, g, ctx);
        json_array_foreach(json_object_get(g, "tests"), ti, t) {
            int tc = jtcid(t);
            const char *result = jstr(t, "result");
            const json_t *tok = json_object_get(t, "jws");
            const struct expect_override *o = find_override(ov, n_ov, tc);
            bool label = strcmp(result, "valid") == 0, want, got;
            char *dumped = NULL;
            int r;

            if (!tok)
                tok = json_object_get(t, "jwe");
            if (json_is_object(tok)) {
                /* JSON serialization given as an object: hand its text to the parser. */
                dumped = json_dumps(tok, JSON_COMPACT);
                cr_assert_not_null(dumped);
            } else {
                cr_assert(json_is_string(tok), "%s tcId %d: token is not a string", file, tc);
            }
            r = jws_check(dumped ? dumped : json_string_value(tok), &gk);
            free(dumped);
            got = r == 0;
            want = o ? o->accept : label;
            cr_expect_eq(got, want, "%s tcId %d (%s, labelled %s%s%s): ferry %s it (%d %s)",
                         file, tc, jstr(t, "comment"), result, o ? "; table: " : "",
                         o ? o->reason : "", got ? "accepts" : "rejects", r, ferry_strerror(r));
            if (o) {
                seen++;
                if (o->rc)
                    cr_expect_eq(r, o->rc, "%s tcId %d: expected %s, got %s", file, tc,
                                 ferry_strerror(o->rc), ferry_strerror(r));
                if (o->accept != label)
                    ta.deviations++;
            }
            if (!got && !gk.key && !gk.jwks)
                ta.key_refused++;
            if (got)
                ta.accepted++;
            else
                ta.rejected++;
            ta.checked++;
        }
        group_keys_release(&gk);
    }
    cr_expect_eq(seen, n_ov, "%s: some override tcIds were not found", file);
    tally_finish(&ta);
    json_decref(doc);
}

Test(wycheproof_jws, json_web_signature)
{
    run_jws_file("json_web_signature_test.json", jws_overrides,
                 sizeof(jws_overrides) / sizeof(jws_overrides[0]));
}

Test(wycheproof_jws, json_web_crypto)
{
    run_jws_file("json_web_crypto_test.json", crypto_overrides,
                 sizeof(crypto_overrides) / sizeof(crypto_overrides[0]));
}

/* Find a test by tcId in a loaded file. */
static const json_t *find_test(const json_t *doc, int tcid, const json_t **ret_group)
{
    size_t gi, ti;
    json_t *g, *t;

    json_array_foreach(json_object_get(doc, "testGroups"), gi, g)
        json_array_foreach(json_object_get(g, "tests"), ti, t)
            if (jtcid(t) == tcid) {
                if (ret_group)
                    *ret_group = g;
                return t;
            }
    cr_assert_fail("tcId %d not found", tcid);
    return NULL;
}

/* Copy of token with ch inserted at byte offset pos. */
static char *insert_at(const char *token, size_t pos, char ch)
{
    size_t n = strlen(token);
    char *out = malloc(n + 2);

    cr_assert_not_null(out);
    cr_assert_leq(pos, n);
    memcpy(out, token, pos);
    out[pos] = ch;
    memcpy(out + pos + 1, token + pos, n - pos + 1);
    return out;
}

/* The data facts behind the table entries for 367/370/372/373, and proof that the strict
 * decoder (not only the HMAC refusal) rejects the '?' insertions: the same insertion applied
 * to a valid ES256 token (tcId 18) must be refused as malformed. */
Test(wycheproof_jws, base64_deviations_explained)
{
    json_t *doc;
    const json_t *g18;
    const char *t357, *t18, *dot1, *dot2;
    char *m;
    struct group_keys gk;
    ferry_jws *jws = NULL;
    int r;

    TU_REQUIRE_VECTORS();
    doc = wp_load("json_web_signature_test.json");
    t357 = jstr(find_test(doc, 357, NULL), "jws");
    cr_assert_str_eq(jstr(find_test(doc, 367, NULL), "jws"), t357);
    cr_assert_str_eq(jstr(find_test(doc, 370, NULL), "jws"), t357);
    cr_assert_str_eq(jstr(find_test(doc, 367, NULL), "result"), "invalid");
    cr_assert_str_eq(jstr(find_test(doc, 357, NULL), "result"), "valid");

    /* 372: '?' before the last header character; 373: '?' at the end of the payload. */
    dot1 = strchr(t357, '.');
    dot2 = strchr(dot1 + 1, '.');
    m = insert_at(t357, (size_t)(dot1 - t357) - 1, '?');
    cr_assert_str_eq(jstr(find_test(doc, 372, NULL), "jws"), m);
    free(m);
    m = insert_at(t357, (size_t)(dot2 - t357), '?');
    cr_assert_str_eq(jstr(find_test(doc, 373, NULL), "jws"), m);
    free(m);

    t18 = jstr(find_test(doc, 18, &g18), "jws");
    group_keys_load(&gk, g18, "tcId 18 group");
    cr_assert_eq(jws_check(t18, &gk), 0, "tcId 18 (valid ES256) not accepted");
    dot1 = strchr(t18, '.');
    dot2 = strchr(dot1 + 1, '.');
    m = insert_at(t18, (size_t)(dot1 - t18) - 1, '?');
    r = ferry_jws_parse(m, strlen(m), &jws);
    cr_expect_eq(r, -FERRY_EMALFORMED, "'?' in an ES256 header: %d", r);
    ferry_jws_free(jws);
    jws = NULL;
    free(m);
    m = insert_at(t18, (size_t)(dot2 - t18), '?');
    r = ferry_jws_parse(m, strlen(m), &jws);
    cr_expect_eq(r, -FERRY_EMALFORMED, "'?' in an ES256 payload: %d", r);
    ferry_jws_free(jws);
    free(m);
    group_keys_release(&gk);
    json_decref(doc);
}

/* ---- JWK-set layer ---------------------------------------------------------------------- */

/* What each json_web_key_test vector means for ferry. Invalid key sets may be refused as a
 * whole or yield no usable key for the kid the token names; ferry never refuses a set for a
 * bad member, it drops the member (jose.h), so the precise expectation is the number of usable
 * keys, the number skipped, and whether the token's kid resolves. */
struct jwk_case {
    int tcid;
    size_t keys;    /* usable keys in the imported set */
    size_t skipped; /* members dropped */
    bool kid_found; /* the token's kid resolves to a key */
    bool accept;    /* token verifies */
    const char *meaning;
};

static const struct jwk_case jwk_cases[] = {
    {1, 1, 1, false, false,
     "mixed oct+EC set: the oct key (the HS256 token's kid) is dropped, the EC key stays"},
    {2, 0, 2, false, false, "DEVIATION (labelled valid): HS256 key set, no HMAC in ferry"},
    {3, 0, 2, false, false, "HS256 key set, modified MAC"},
    {4, 0, 2, false, false, "duplicate kid (oct keys): nothing usable (see duplicate_kid test)"},
    {5, 1, 0, true, true, "RS256 2048-bit key, valid token"},
    {6, 0, 1, false, false, "RSA key with use \"enc\" (alg RSA1_5) dropped"},
    {7, 0, 1, false, false, "ROCA-vulnerable RSA modulus (CVE-2017-15361) must be dropped"},
    {8, 0, 1, false, false, "1024-bit RSA key dropped (< FERRY_RSA_MIN_BITS)"},
    {9, 0, 1, false, false, "RSA e = 1 dropped"},
    {10, 0, 1, false, false, "short HS256 key: oct dropped"},
    {11, 0, 1, false, false, "short HS384 key: oct dropped"},
    {12, 0, 1, false, false, "short HS512 key: oct dropped"},
    {13, 0, 1, false, false, "DEVIATION (labelled valid): long HS256 key, no HMAC in ferry"},
    {14, 0, 1, false, false, "DEVIATION (labelled valid): long HS384 key, no HMAC in ferry"},
    {15, 0, 1, false, false, "DEVIATION (labelled valid): long HS512 key, no HMAC in ferry"},
    {16, 0, 1, false, false, "empty HS256 key: oct dropped"},
    {17, 0, 1, false, false, "empty HS384 key: oct dropped"},
    {18, 0, 1, false, false, "empty HS512 key: oct dropped"},
    {19, 0, 1, false, false, "alg ES521 on a P-256 key: alg does not fit, dropped"},
    {20, 0, 1, false, false, "alg ES224 (unknown) on a P-256 key: dropped"},
    {21, 0, 1, false, false, "EC key with use \"enc\" dropped"},
    {22, 0, 1, false, false, "EC point not on the curve: dropped"},
    {23, 0, 1, false, false, "P-256 coordinates labelled P-384: dropped"},
    {24, 0, 1, false, false, "EC members under kty RSA: dropped"},
    {25, 0, 1, false, false, "oct key with alg A256GCM: dropped"},
    {26, 0, 1, false, false, "oct key with alg A256KW: dropped"},
};

Test(wycheproof_jwk, json_web_key)
{
    const char *file = "json_web_key_test.json";
    json_t *doc, *g, *t;
    struct tally ta;
    size_t gi, ti, n_cases = sizeof(jwk_cases) / sizeof(jwk_cases[0]);

    TU_REQUIRE_VECTORS();
    doc = wp_load(file);
    tally_init(&ta, file, doc);
    cr_assert_eq(n_cases, ta.total, "jwk_cases[] must name every vector");
    json_array_foreach(json_object_get(doc, "testGroups"), gi, g) {
        const json_t *pub = json_object_get(g, "public"), *priv = json_object_get(g, "private");
        const json_t *src = json_is_object(pub) ? pub : priv;

        json_array_foreach(json_object_get(g, "tests"), ti, t) {
            int tc = jtcid(t), r;
            const struct jwk_case *c = NULL;
            const char *tok = jstr(t, "jws");
            ferry_jwks *set = NULL;
            ferry_jws *jws = NULL;
            ferry_jwk *key = NULL;
            size_t skipped = 99;
            bool label = strcmp(jstr(t, "result"), "valid") == 0, got = false;

            for (size_t i = 0; i < n_cases; i++)
                if (jwk_cases[i].tcid == tc)
                    c = &jwk_cases[i];
            cr_assert_not_null(c, "tcId %d missing from jwk_cases[]", tc);
            r = ferry_jwks_from_json(src, &set, &skipped);
            cr_assert_eq(r, 0, "tcId %d: key set refused as a whole: %d", tc, r);
            cr_expect_eq(ferry_jwks_count(set), c->keys, "tcId %d (%s): %zu usable keys", tc,
                         c->meaning, ferry_jwks_count(set));
            cr_expect_eq(skipped, c->skipped, "tcId %d (%s): %zu skipped", tc, c->meaning,
                         skipped);
            r = ferry_jws_parse(tok, strlen(tok), &jws);
            if (r == 0) {
                key = jws->kid ? ferry_jwks_find(set, jws->kid) : NULL;
                cr_expect_eq(key != NULL, c->kid_found, "tcId %d (%s): kid %s %s", tc,
                             c->meaning, jws->kid, key ? "resolves" : "does not resolve");
                got = key && ferry_jws_verify(jws, key) == 0;
            } else {
                cr_expect(!c->kid_found, "tcId %d: token refused by the parser: %d", tc, r);
            }
            cr_expect_eq(got, c->accept, "tcId %d (%s): token %s", tc, c->meaning,
                         got ? "accepted" : "rejected");
            if (c->accept != label)
                ta.deviations++;
            if (got)
                ta.accepted++;
            else
                ta.rejected++;
            ta.checked++;
            ferry_jws_free(jws);
            ferry_jwks_unref(set);
        }
    }
    tally_finish(&ta);
    json_decref(doc);
}

/* tcId 4 (duplicate kid) only has oct keys, which ferry drops anyway. The attack it names is
 * two keys under one kid: with asymmetric keys ferry must refuse both (jose.h), so the kid
 * resolves to nothing. Built from the EC key of tcId 19's group with a valid alg. */
Test(wycheproof_jwk, duplicate_kid_refuses_both)
{
    json_t *doc, *k1, *k2, *set_doc;
    const json_t *g;
    ferry_jwks *set = NULL;
    size_t skipped = 0;
    int r;

    TU_REQUIRE_VECTORS();
    doc = wp_load("json_web_key_test.json");
    (void)find_test(doc, 19, &g);
    k1 = json_deep_copy(json_array_get(json_object_get(json_object_get(g, "public"), "keys"), 0));
    cr_assert_not_null(k1);
    cr_assert_eq(json_object_set_new(k1, "alg", json_string("ES256")), 0);
    k2 = json_deep_copy(k1);
    /* Same kid, different (valid) key: the RFC 7515 A.3 P-256 point. */
    json_object_set_new(k2, "x", json_string("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"));
    json_object_set_new(k2, "y", json_string("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"));
    set_doc = json_pack("{s:[o]}", "keys", json_deep_copy(k1));
    cr_assert_not_null(set_doc);
    r = ferry_jwks_from_json(set_doc, &set, &skipped);
    cr_assert_eq(r, 0);
    cr_assert_eq(ferry_jwks_count(set), 1, "single EC key not usable");
    cr_assert_not_null(ferry_jwks_find(set, "kid-ec-sign"));
    ferry_jwks_unref(set);
    set = NULL;
    json_decref(set_doc);

    set_doc = json_pack("{s:[o,o]}", "keys", k1, k2);
    cr_assert_not_null(set_doc);
    r = ferry_jwks_from_json(set_doc, &set, &skipped);
    cr_assert_eq(r, 0);
    cr_expect_null(ferry_jwks_find(set, "kid-ec-sign"), "duplicate kid resolves to a key");
    cr_expect_eq(ferry_jwks_count(set), 0);
    cr_expect_eq(skipped, 2);
    ferry_jwks_unref(set);
    json_decref(set_doc);
    json_decref(doc);
}
