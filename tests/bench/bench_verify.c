/* tests/bench/bench_verify.c - JWT verification throughput on one core, side by side.
 *
 * For RS256 (RSA 2048), ES256 (P-256) and EdDSA (Ed25519) this program generates a key, mints
 * distinct tokens with eleven realistic claims through ferry_jws_sign, and measures for a fixed
 * time how many of them each verifier accepts.
 *
 * The tokens carry typ "JWT" and are verified under ferry's id_token profile by default, because
 * libjwt 1.10.2 refuses any typ other than "JWT" (EINVAL) and so cannot verify RFC 9068 access
 * tokens (typ "at+jwt") at all. --profile access_token mints at+jwt tokens instead and marks the
 * libjwt path unsupported.
 *
 *
 *   ferry-lib    ferry_oidc_verify against an issuer with an inline JWKS: the full decision
 *                (strict parse, issuer lookup, alg allow-list, kid lookup, signature, every
 *                claim rule of the issuer's profile, identity built and freed); no replay
 *                consumption.
 *   ferry-jose   ferry_jws_parse + ferry_jws_verify with the cached key (the jose layer only).
 *   libjwt       libjwt 1.10.2 jwt_decode(&jwt, token, pem, pemlen) with the public key PEM, as
 *                a libjwt user calls it (libjwt re-parses the PEM on every call).
 *   libjose      libjose 11: compact token split into the flattened JWS JSON object,
 *                jose_jws_ver() with the public JWK as json_t, then the payload decoded into
 *                a claims object (libjose converts the JWK to an EVP_PKEY on every call).
 *
 * Every call's result is checked; a single failure makes the run fail (exit 1), so rejections
 * can never be measured as throughput. Before timing, each path must also refuse a token with
 * a corrupted signature.
 *
 * Throughput is ops per second of this thread's user CPU time (what `openssl speed` divides
 * by, see apps/lib/apps.c app_tminterval) and, for reference, per second of wall time.
 * One machine-readable line per (alg, path) on stdout:
 *   alg=RS256 path=ferry-lib ops=N cpu_secs=X wall_secs=Y per_sec=Z per_sec_wall=W failures=0
 *
 * With --emit DIR it also writes, per alg, DIR/<alg>.jwks (public JWK Set) and DIR/<alg>.tokens
 * (--batch-count lines cycling over the distinct tokens) for timing `ferry token verify
 * --batch`, and prints one `emit ...` line naming the files and the verification parameters.
 *
 * This is a benchmark, not a test: it is built only by `make bench`.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#ifdef FERRY_BENCH_JOSE
#include <jose/jose.h>
#endif

#include "basic/macro.h"
#include "ferry/error.h"
#include "ferry/jose.h"
#include "ferry/oidc.h"

#define BENCH_ISSUER "https://idp.bench.ferry.test"
#define BENCH_AUDIENCE "https://ferry.bench.test"
#define BENCH_NOW INT64_C(1767225600) /* 2026-01-01T00:00:00Z, fixed so runs are repeatable */
#define BENCH_MAX_TOKENS 100000

typedef enum bpath {
    BPATH_FERRY_LIB,
    BPATH_FERRY_JOSE,
    BPATH_LIBJWT,
    BPATH_LIBJOSE,
    BPATH_MAX
} bpath;

static const char *const path_names[BPATH_MAX] = {
    [BPATH_FERRY_LIB] = "ferry-lib",
    [BPATH_FERRY_JOSE] = "ferry-jose",
    [BPATH_LIBJWT] = "libjwt",
    [BPATH_LIBJOSE] = "libjose",
};

typedef struct bench_alg {
    ferry_alg alg;
    const char *file_name; /* for --emit */
    jwt_alg_t jwt_alg;     /* JWT_ALG_INVAL when libjwt 1.10.2 lacks the algorithm */
    bool libjose_supports; /* libjose 11 has no EdDSA */
} bench_alg;

static const bench_alg bench_algs[] = {
    { FERRY_ALG_RS256, "rs256", JWT_ALG_RS256, true },
    { FERRY_ALG_ES256, "es256", JWT_ALG_ES256, true },
    { FERRY_ALG_EDDSA, "eddsa", JWT_ALG_INVAL, false },
};

/* Everything one alg's verifiers need; built once, outside the timed loops. */
typedef struct ctx {
    const bench_alg *ba;
    ferry_jwk *jwk;        /* private key, signs the tokens; ferry-jose verifies with it */
    ferry_jwk *pub;        /* public key re-imported from its JWK, as a verifier holds it */
    json_t *pub_json;      /* public JWK (libjose) */
    char *pub_pem;         /* SPKI PEM (libjwt) */
    size_t pub_pem_len;
    ferry_oidc *oidc;      /* ferry-lib */
    char **tokens;
    size_t n_tokens;
} ctx;

static struct {
    double seconds;
    size_t n_tokens;
    size_t batch_count;
    int cpu;
    int rsa_bits;
    const char *emit_dir;
    const char *profile; /* ferry profile the issuer is configured with */
    const char *typ;     /* typ header of the minted tokens */
    bool only[ARRAY_SIZE(bench_algs)];
    bool any_only;
    bool only_path[BPATH_MAX];
    bool any_only_path;
} opt = {
    .seconds = 2.0,
    .n_tokens = 1000,
    .batch_count = 20000,
    .cpu = -1,
    .rsa_bits = 2048,
    .profile = "id_token",
    .typ = "JWT",
};

static void die(const char *what, int r) __attribute__((noreturn));
static void die(const char *what, int r)
{
    if (r)
        fprintf(stderr, "bench_verify: %s: %s\n", what, ferry_strerror(r));
    else
        fprintf(stderr, "bench_verify: %s\n", what);
    exit(2);
}

static double mono_now(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
        die("clock_gettime", -errno);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* User CPU time of the calling thread, the divisor `openssl speed` uses. */
static double thread_user_cpu(void)
{
    struct rusage ru;

    if (getrusage(RUSAGE_THREAD, &ru) < 0)
        die("getrusage", -errno);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
}

/* ---- setup ------------------------------------------------------------------------------ */

/* RSA keys from ferry_jwk_generate are 3072 bits; `openssl speed rsa2048` measures 2048, so
 * the RSA key is generated here and imported through ferry_jwk_from_pem. */
static ferry_jwk *make_rsa_key(int bits)
{
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
    BIO *bio = BIO_new(BIO_s_mem());
    ferry_jwk *jwk = NULL;
    char *pem;
    long len;
    int r;

    if (!pkey || !bio || !PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL))
        die("RSA key generation failed", 0);
    len = BIO_get_mem_data(bio, &pem);
    r = ferry_jwk_from_pem(pem, (size_t)len, &jwk);
    if (r < 0)
        die("ferry_jwk_from_pem(RSA private key)", r);
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    return jwk;
}

static char *pubkey_pem(const ferry_jwk *jwk, size_t *ret_len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *pem;
    long len;

    if (!bio || !PEM_write_bio_PUBKEY(bio, ferry_jwk_evp_pkey(jwk)))
        die("PEM_write_bio_PUBKEY", 0);
    len = BIO_get_mem_data(bio, &data);
    pem = malloc((size_t)len + 1);
    if (!pem)
        die("out of memory", -ENOMEM);
    memcpy(pem, data, (size_t)len);
    pem[len] = '\0';
    BIO_free(bio);
    *ret_len = (size_t)len;
    return pem;
}

static char *mint_token(const ctx *c, size_t i)
{
    unsigned char rnd[9];
    char jti[64], sub[64];
    json_t *claims;
    char *payload, *token = NULL;
    int r;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        die("RAND_bytes", 0);
    (void)snprintf(jti, sizeof(jti), "%s-%zu-%02x%02x%02x%02x%02x%02x%02x%02x%02x",
                   c->ba->file_name, i, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6],
                   rnd[7], rnd[8]);
    (void)snprintf(sub, sizeof(sub), "system:serviceaccount:ml-train:trainer-%zu", i % 64);
    /* Eleven claims, the shape of a workload identity token from a cloud IdP. */
    claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:s, s:[s,s], s:s}",
                       "iss", BENCH_ISSUER,
                       "sub", sub,
                       "aud", BENCH_AUDIENCE,
                       "exp", (json_int_t)(BENCH_NOW + 3600),
                       "iat", (json_int_t)(BENCH_NOW - 60),
                       "nbf", (json_int_t)(BENCH_NOW - 60),
                       "jti", jti,
                       "scope", "datasets:read models:write registry:pull",
                       "client_id", "trainer",
                       "groups", "ml-train", "gpu-users",
                       "tenant", "acme-research");
    if (!claims)
        die("json_pack(claims)", -ENOMEM);
    payload = json_dumps(claims, JSON_COMPACT);
    if (!payload)
        die("json_dumps(claims)", -ENOMEM);
    r = ferry_jws_sign(c->jwk, c->ba->alg, opt.typ, payload, strlen(payload), &token);
    if (r < 0)
        die("ferry_jws_sign", r);
    free(payload);
    json_decref(claims);
    return token;
}

static void ctx_init(ctx *c, const bench_alg *ba)
{
    char errbuf[256] = "";
    json_t *jwks_json, *conf;
    ferry_jwks *jwks = NULL;
    int r;

    *c = (ctx){ .ba = ba };
    if (ba->alg == FERRY_ALG_RS256) {
        c->jwk = make_rsa_key(opt.rsa_bits);
    } else {
        r = ferry_jwk_generate(ba->alg, &c->jwk);
        if (r < 0)
            die("ferry_jwk_generate", r);
    }
    r = ferry_jwk_to_public_json(c->jwk, &c->pub_json);
    if (r < 0)
        die("ferry_jwk_to_public_json", r);
    r = ferry_jwk_from_json(c->pub_json, 0, &c->pub);
    if (r < 0)
        die("ferry_jwk_from_json(public)", r);
    c->pub_pem = pubkey_pem(c->pub, &c->pub_pem_len);

    r = ferry_jwks_from_keys(&c->pub, 1, &jwks);
    if (r < 0)
        die("ferry_jwks_from_keys", r);
    r = ferry_jwks_to_public_json(jwks, &jwks_json);
    if (r < 0)
        die("ferry_jwks_to_public_json", r);
    ferry_jwks_unref(jwks);

    r = ferry_oidc_new(NULL, &c->oidc);
    if (r < 0)
        die("ferry_oidc_new", r);
    conf = json_pack("{s:s, s:[s], s:o, s:[s], s:s}",
                     "issuer", BENCH_ISSUER,
                     "audiences", BENCH_AUDIENCE,
                     "jwks", jwks_json,
                     "algorithms", ferry_alg_name(ba->alg),
                     "profile", opt.profile);
    if (!conf)
        die("json_pack(issuer)", -ENOMEM);
    r = ferry_oidc_add_issuer(c->oidc, conf, errbuf, sizeof(errbuf));
    if (r < 0) {
        fprintf(stderr, "bench_verify: ferry_oidc_add_issuer: %s\n", errbuf);
        die("ferry_oidc_add_issuer", r);
    }
    json_decref(conf);

    c->n_tokens = opt.n_tokens;
    c->tokens = calloc(c->n_tokens, sizeof(*c->tokens));
    if (!c->tokens)
        die("out of memory", -ENOMEM);
    for (size_t i = 0; i < c->n_tokens; i++)
        c->tokens[i] = mint_token(c, i);
}

static void ctx_release(ctx *c)
{
    for (size_t i = 0; i < c->n_tokens; i++)
        free(c->tokens[i]);
    free(c->tokens);
    ferry_oidc_free(c->oidc);
    free(c->pub_pem);
    json_decref(c->pub_json);
    ferry_jwk_unref(c->pub);
    ferry_jwk_unref(c->jwk);
}

/* ---- the verifiers: each returns true only when the token was accepted ------------------ */

static bool verify_ferry_lib(const ctx *c, const char *token)
{
    const ferry_verify_options vo = { .now = BENCH_NOW, .consume_jti = false };
    ferry_identity *id = NULL;
    ferry_verify_result res;
    bool ok;

    ok = ferry_oidc_verify(c->oidc, token, strlen(token), &vo, &id, &res) == 0 && id &&
         res.reason == FERRY_REASON_OK;
    ferry_identity_free(id);
    return ok;
}

static bool verify_ferry_jose(const ctx *c, const char *token)
{
    ferry_jws *jws = NULL;
    bool ok;

    ok = ferry_jws_parse(token, strlen(token), &jws) == 0 && ferry_jws_verify(jws, c->pub) == 0;
    ferry_jws_free(jws);
    return ok;
}

static bool verify_libjwt(const ctx *c, const char *token)
{
    jwt_t *jwt = NULL;
    bool ok;

    ok = jwt_decode(&jwt, token, (const unsigned char *)c->pub_pem, (int)c->pub_pem_len) == 0 &&
         jwt && jwt_get_alg(jwt) == c->ba->jwt_alg;
    jwt_free(jwt);
    return ok;
}

#ifdef FERRY_BENCH_JOSE
static bool verify_libjose(const ctx *c, const char *token)
{
    const char *d1 = strchr(token, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    json_t *jws, *claims = NULL;
    bool ok = false;

    if (!d2)
        return false;
    jws = json_pack("{s:s%, s:s%, s:s}", "protected", token, (size_t)(d1 - token), "payload",
                    d1 + 1, (size_t)(d2 - d1 - 1), "signature", d2 + 1);
    if (!jws)
        return false;
    if (jose_jws_ver(NULL, jws, NULL, c->pub_json, false)) {
        claims = jose_b64_dec_load(json_object_get(jws, "payload"));
        ok = json_is_object(claims);
    }
    json_decref(claims);
    json_decref(jws);
    return ok;
}
#endif

static bool path_supported(const ctx *c, bpath p)
{
    switch (p) {
    case BPATH_LIBJWT:
        /* libjwt 1.10.2: no EdDSA, and any typ but "JWT" is refused. */
        return c->ba->jwt_alg != JWT_ALG_INVAL && strcmp(opt.typ, "JWT") == 0;
    case BPATH_LIBJOSE:
#ifdef FERRY_BENCH_JOSE
        return c->ba->libjose_supports;
#else
        return false;
#endif
    default:
        return true;
    }
}

static bool verify(const ctx *c, bpath p, const char *token)
{
    switch (p) {
    case BPATH_FERRY_LIB:
        return verify_ferry_lib(c, token);
    case BPATH_FERRY_JOSE:
        return verify_ferry_jose(c, token);
    case BPATH_LIBJWT:
        return verify_libjwt(c, token);
    case BPATH_LIBJOSE:
#ifdef FERRY_BENCH_JOSE
        return verify_libjose(c, token);
#else
        return false;
#endif
    default:
        return false;
    }
}

/* A copy of token with one signature character changed (still valid base64url, so the
 * refusal must come from the signature check, not from the parser). */
static char *corrupt_signature(const char *token)
{
    char *t = strdup(token);
    char *sig;

    if (!t)
        die("out of memory", -ENOMEM);
    sig = strrchr(t, '.');
    if (!sig || !sig[1] || !sig[2])
        die("token without a signature", 0);
    sig[2] = sig[2] == 'A' ? 'B' : 'A';
    return t;
}

/* ---- measurement ------------------------------------------------------------------------ */

static bool run_path(const ctx *c, bpath p)
{
    const char *alg = ferry_alg_name(c->ba->alg);
    uint64_t ops = 0, failures = 0;
    double w0, wall, cpu0, cpu;
    char *bad;
    size_t i = 0;

    if (!path_supported(c, p)) {
        printf("alg=%s path=%s status=unsupported\n", alg, path_names[p]);
        return true;
    }

    /* The path must refuse a forged token, or its throughput means nothing. */
    bad = corrupt_signature(c->tokens[0]);
    if (verify(c, p, bad)) {
        printf("alg=%s path=%s status=error reason=accepted-corrupted-signature\n", alg,
               path_names[p]);
        free(bad);
        return false;
    }
    free(bad);

    /* Warm-up: fault in code and data, let the CPU clock settle. */
    for (size_t k = 0; k < 32; k++)
        if (!verify(c, p, c->tokens[k % c->n_tokens]))
            failures++;

    w0 = mono_now();
    cpu0 = thread_user_cpu();
    for (;;) {
        for (int k = 0; k < 16; k++) {
            if (!verify(c, p, c->tokens[i]))
                failures++;
            ops++;
            if (++i == c->n_tokens)
                i = 0;
        }
        if (mono_now() - w0 >= opt.seconds)
            break;
    }
    cpu = thread_user_cpu() - cpu0;
    wall = mono_now() - w0;

    printf("alg=%s path=%s ops=%" PRIu64 " cpu_secs=%.3f wall_secs=%.3f per_sec=%.0f "
           "per_sec_wall=%.0f failures=%" PRIu64 "%s\n",
           alg, path_names[p], ops, cpu, wall, cpu > 0 ? (double)ops / cpu : 0.0,
           (double)ops / wall, failures, failures ? " status=error" : "");
    (void)fflush(stdout);
    return failures == 0;
}

static void emit(const ctx *c)
{
    char path_jwks[4096], path_tokens[4096];
    json_t *set;
    FILE *f;
    ferry_jwks *jwks = NULL;
    int r;

    (void)snprintf(path_jwks, sizeof(path_jwks), "%s/%s.jwks", opt.emit_dir, c->ba->file_name);
    (void)snprintf(path_tokens, sizeof(path_tokens), "%s/%s.tokens", opt.emit_dir,
                   c->ba->file_name);
    r = ferry_jwks_from_keys(&c->pub, 1, &jwks);
    if (r < 0)
        die("ferry_jwks_from_keys", r);
    r = ferry_jwks_to_public_json(jwks, &set);
    if (r < 0)
        die("ferry_jwks_to_public_json", r);
    if (json_dump_file(set, path_jwks, JSON_COMPACT) < 0)
        die("cannot write the JWKS file", 0);
    json_decref(set);
    ferry_jwks_unref(jwks);

    f = fopen(path_tokens, "we");
    if (!f)
        die("cannot write the tokens file", -errno);
    for (size_t i = 0; i < opt.batch_count; i++)
        if (fprintf(f, "%s\n", c->tokens[i % c->n_tokens]) < 0)
            die("cannot write the tokens file", -EIO);
    if (fclose(f) != 0)
        die("cannot write the tokens file", -errno);
    printf("emit alg=%s jwks=%s tokens=%s count=%zu distinct=%zu issuer=%s audience=%s "
           "now=%" PRId64 " profile=%s\n",
           ferry_alg_name(c->ba->alg), path_jwks, path_tokens, opt.batch_count,
           opt.n_tokens < opt.batch_count ? opt.n_tokens : opt.batch_count, BENCH_ISSUER,
           BENCH_AUDIENCE, BENCH_NOW, opt.profile);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_verify [OPTIONS]\n"
            "  --seconds S       time per (alg, path) measurement (default 2)\n"
            "  --tokens N        distinct tokens per alg (default 1000)\n"
            "  --alg A           RS256, ES256 or EdDSA; repeatable (default all three)\n"
            "  --path P          ferry-lib, ferry-jose, libjwt or libjose; repeatable\n"
            "                    (default all)\n"
            "  --cpu N           pin this process to CPU N\n"
            "  --rsa-bits B      RSA modulus size for RS256 (default 2048)\n"
            "  --profile P       id_token (typ JWT, default) or access_token (typ at+jwt)\n"
            "  --emit DIR        write DIR/<alg>.jwks and DIR/<alg>.tokens for --batch\n"
            "  --batch-count M   lines per tokens file (default 20000)\n");
}

static int64_t parse_num(const char *s, int64_t min, int64_t max)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "bench_verify: bad number '%s'\n", s);
        exit(2);
    }
    return v;
}

static void parse_args(int argc, char **argv)
{
    enum { O_SECONDS = 256, O_TOKENS, O_ALG, O_CPU, O_RSA_BITS, O_EMIT, O_BATCH_COUNT,
           O_PROFILE, O_PATH };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "seconds", required_argument, NULL, O_SECONDS },
        { "tokens", required_argument, NULL, O_TOKENS },
        { "alg", required_argument, NULL, O_ALG },
        { "cpu", required_argument, NULL, O_CPU },
        { "rsa-bits", required_argument, NULL, O_RSA_BITS },
        { "emit", required_argument, NULL, O_EMIT },
        { "batch-count", required_argument, NULL, O_BATCH_COUNT },
        { "profile", required_argument, NULL, O_PROFILE },
        { "path", required_argument, NULL, O_PATH },
        {},
    };
    int c;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) >= 0) {
        switch (c) {
        case 'h':
            usage(stdout);
            exit(0);
        case O_SECONDS: {
            char *end;
            errno = 0;
            opt.seconds = strtod(optarg, &end);
            if (errno || *end || !(opt.seconds > 0.0 && opt.seconds <= 600.0))
                die("bad --seconds", 0);
            break;
        }
        case O_TOKENS:
            opt.n_tokens = (size_t)parse_num(optarg, 32, BENCH_MAX_TOKENS);
            break;
        case O_ALG: {
            bool found = false;
            for (size_t i = 0; i < ARRAY_SIZE(bench_algs); i++)
                if (strcmp(optarg, ferry_alg_name(bench_algs[i].alg)) == 0) {
                    opt.only[i] = found = opt.any_only = true;
                }
            if (!found)
                die("--alg must be RS256, ES256 or EdDSA", 0);
            break;
        }
        case O_PATH: {
            bool found = false;
            for (bpath p = 0; p < BPATH_MAX; p++)
                if (strcmp(optarg, path_names[p]) == 0)
                    opt.only_path[p] = found = opt.any_only_path = true;
            if (!found)
                die("--path must be ferry-lib, ferry-jose, libjwt or libjose", 0);
            break;
        }
        case O_CPU:
            opt.cpu = (int)parse_num(optarg, 0, CPU_SETSIZE - 1);
            break;
        case O_RSA_BITS:
            opt.rsa_bits = (int)parse_num(optarg, 2048, 8192);
            break;
        case O_EMIT:
            opt.emit_dir = optarg;
            break;
        case O_PROFILE:
            if (strcmp(optarg, "id_token") == 0)
                opt.typ = "JWT";
            else if (strcmp(optarg, "access_token") == 0)
                opt.typ = "at+jwt";
            else
                die("--profile must be id_token or access_token", 0);
            opt.profile = optarg;
            break;
        case O_BATCH_COUNT:
            opt.batch_count = (size_t)parse_num(optarg, 1, 10000000);
            break;
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind != argc) {
        usage(stderr);
        exit(2);
    }
}

int main(int argc, char **argv)
{
    bool ok = true;

    parse_args(argc, argv);
    if (opt.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(opt.cpu, &set);
        if (sched_setaffinity(0, sizeof(set), &set) < 0)
            die("sched_setaffinity", -errno);
    }
    printf("bench seconds=%.2f tokens=%zu rsa_bits=%d cpu=%d profile=%s typ=%s openssl=\"%s\" "
           "libjose=%s\n",
           opt.seconds, opt.n_tokens, opt.rsa_bits, opt.cpu, opt.profile, opt.typ,
           OpenSSL_version(OPENSSL_VERSION),
#ifdef FERRY_BENCH_JOSE
           "yes"
#else
           "no"
#endif
    );

    for (size_t a = 0; a < ARRAY_SIZE(bench_algs); a++) {
        ctx c;

        if (opt.any_only && !opt.only[a])
            continue;
        ctx_init(&c, &bench_algs[a]);
        if (opt.emit_dir)
            emit(&c);
        for (bpath p = 0; p < BPATH_MAX; p++)
            if (!opt.any_only_path || opt.only_path[p])
                ok = run_path(&c, p) && ok;
        ctx_release(&c);
    }
    return ok ? 0 : 1;
}
