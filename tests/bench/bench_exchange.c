/* tests/bench/bench_exchange.c - the CPU cost of one RFC 8693 token exchange, in process.
 *
 * Sets up what ferryd sets up for tests/bench/run-exchange.sh, without the HTTP layer:
 *   - a trust store with one static issuer (profile access_token, RS256 only) whose key set is
 *     the public half of an RSA-2048 key generated here;
 *   - a policy granting that issuer's subject one audience and one scope (max_ttl 600);
 *   - a mint with a generated ES256 key in a fresh state directory (max_ttl 900);
 *   - an audit log in the same temporary directory (sync mode batch by default, as ferryd's
 *     benchmark runs it; checkpoints every 1000 records);
 *   - a per-identity rate limiter that is off (ferryd's benchmark configuration);
 *   - an exchange with default_ttl 300, max_ttl 900, subject tokens not one-time.
 * A pool of RS256 subject tokens (distinct jti each, as tests/bench/exchange_tokens.py makes
 * them) is signed before timing. Then, on one thread (pinned with --cpu), for --seconds:
 *
 *   exchange   ferry_exchange_token (audience + scope asked for) and the response body
 *              (ferry_exchange_response_write), as ferryd's token route does
 *   verify     ferry_jose_verify(RS256) of a pool token's signature alone
 *   sign       ferry_jose_sign(ES256) with the mint's key over a signing input as long as a
 *              minted token's
 *
 * Cost is per second of this thread's CPU time (CLOCK_THREAD_CPUTIME_ID: user + system, so
 * the audit log's write() and fdatasync count), so other load on the machine changes little.
 * The two signatures measured alone are subtracted from the exchange's cost: what is left is
 * the non-crypto cost of an exchange (parsing, policy, claims, audit record, allocations).
 *
 * Output: one key=value line per measurement, then a summary line:
 *   path=exchange ops=N cpu_secs=X wall_secs=Y per_cpu_sec=Z us=U
 *   path=rs256-verify ... / path=es256-sign ...
 *   summary exchange_us=U verify_us=V sign_us=S crypto_us=C non_crypto_us=N per_cpu_sec=Z
 * Every exchange must succeed; the audit log is closed and verified at the end (exit 1 on any
 * failure). Before timing, minted tokens are checked to carry distinct jtis.
 *
 * usage: bench_exchange [--seconds S | --count N] [--cpu N] [--pool N]
 *                       [--sync batch|checkpoint|always] [--dir DIR] [--loops]
 *   --count run N operations per loop (rounded up to 16) instead of S seconds: CPU time on a
 *           shared machine varies by several percent between runs, so small changes are best
 *           compared by instructions, e.g. (2000 exchanges, setup and warm-up excluded):
 *             valgrind --tool=callgrind --toggle-collect=measured_exchange \
 *                 bench_exchange --count 2000 --loops
 *   --dir   where the temporary state directory is made (default $TMPDIR or /tmp); the audit
 *           log's fdatasync cost depends on that file system
 *   --loops skip the verify/sign loops (e.g. under perf record, to profile exchanges only)
 * A benchmark, not a test: it is built only by `make bench`.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "ferry/auditlog.h"
#include "ferry/error.h"
#include "ferry/exchange.h"
#include "ferry/jose.h"
#include "ferry/mint.h"
#include "ferry/oidc.h"
#include "ferry/policy.h"
#include "ferry/ratelimit.h"

/* The names tests/bench/run-exchange.sh uses. */
#define IDP "https://idp.bench.test"
#define AUD "https://ferry.bench.test"
#define TARGET "https://api.bench.test"
#define SUBJECT "bench-client"
#define SCOPE "deploy:write"
#define ISSUER "http://127.0.0.1:8080"
#define GRANT_TYPE "urn:ietf:params:oauth:grant-type:token-exchange"
#define ACCESS_TOKEN_TYPE "urn:ietf:params:oauth:token-type:access_token"
#define WARMUP 200

static const char policy_json[] =
    "{\"version\": 1, \"policies\": [{\"id\": \"bench\","
    " \"match\": {\"issuer\": \"" IDP "\", \"subject\": \"" SUBJECT "\", \"audience\": [\"" AUD
    "\"]},"
    " \"grant\": {\"scopes\": [\"" SCOPE "\"], \"audiences\": [\"" TARGET "\"],"
    " \"max_ttl\": 600}}]}";

static void die(const char *what, int r)
{
    fprintf(stderr, "bench_exchange: %s: %s\n", what, ferry_strerror(r));
    exit(1);
}

static void die_msg(const char *what, const char *msg)
{
    fprintf(stderr, "bench_exchange: %s: %s\n", what, msg);
    exit(1);
}

static double clock_secs(clockid_t id)
{
    struct timespec ts;

    if (clock_gettime(id, &ts) < 0)
        die("clock_gettime", -errno);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double mono_now(void)
{
    return clock_secs(CLOCK_MONOTONIC);
}

static double thread_cpu(void)
{
    return clock_secs(CLOCK_THREAD_CPUTIME_ID);
}

struct result {
    unsigned long ops;
    double cpu, wall;
};

static double us_per_op(const struct result *res)
{
    return res->ops ? 1e6 * res->cpu / (double)res->ops : 0;
}

static void report(const char *path, const struct result *res)
{
    double cpu = res->cpu > 1e-6 ? res->cpu : 1e-6;

    printf("path=%s ops=%lu cpu_secs=%.3f wall_secs=%.3f per_cpu_sec=%.0f us=%.2f\n", path,
           res->ops, res->cpu, res->wall, (double)res->ops / cpu, us_per_op(res));
    fflush(stdout);
}

/* An RSA-2048 private key (ferry_jwk_generate makes 3072-bit RSA keys; the benchmark's IdP
 * signs with 2048 bits, the size `openssl speed rsa2048` measures). */
static ferry_jwk *rsa2048_key(void)
{
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    BIO *bio = BIO_new(BIO_s_mem());
    ferry_jwk *k = NULL;
    char *pem;
    long len;
    int r;

    if (!pkey || !bio || PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1)
        die("RSA key", -FERRY_ECRYPTO);
    len = BIO_get_mem_data(bio, &pem);
    if (len <= 0)
        die("RSA key", -FERRY_ECRYPTO);
    r = ferry_jwk_from_pem(pem, (size_t)len, &k);
    if (r < 0)
        die("RSA key import", r);
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    return k;
}

static char *subject_token(ferry_jwk *key, unsigned i, int64_t now)
{
    char jti[48], *payload, *tok = NULL;
    json_t *claims;
    int r;

    snprintf(jti, sizeof(jti), "bench-%08x-%u", (unsigned)getpid(), i);
    claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s}", "iss", IDP, "sub", SUBJECT,
                       "aud", AUD, "iat", (json_int_t)(now - 5), "exp", (json_int_t)(now + 7200),
                       "client_id", SUBJECT, "jti", jti, "scope", "bench");
    payload = claims ? json_dumps(claims, JSON_COMPACT) : NULL;
    if (!payload)
        die("token claims", -ENOMEM);
    r = ferry_jws_sign(key, FERRY_ALG_RS256, "at+jwt", payload, strlen(payload), &tok);
    if (r < 0)
        die("token sign", r);
    free(payload);
    json_decref(claims);
    return tok;
}

static void rm_tree(const char *dir)
{
    char cmd[4200];

    /* Only the directory mkdtemp made for us. */
    snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_exchange: could not remove %s\n", dir);
}

struct bench {
    char dir[4096], state[4200], log_path[4200];
    ferry_jwk *idp_key;
    ferry_oidc *oidc;
    ferry_policy_store *policies;
    ferry_mint *mint;
    ferry_auditlog *log;
    ferry_ratelimit *limit;
    ferry_exchange *ex;
    char **pool;
    size_t n_pool;
};

static void setup(struct bench *b, const char *base, ferry_auditlog_sync_mode sync, size_t pool)
{
    ferry_policy_builder *pb = NULL;
    ferry_policy_problems *pr = NULL;
    ferry_policy_set *set = NULL;
    json_t *pub = NULL, *conf;
    ferry_jwk *sk;
    char err[512] = "";
    int64_t now = (int64_t)time(NULL);
    int r;

    snprintf(b->dir, sizeof(b->dir), "%s/ferry-bench-exchange.XXXXXX", base);
    if (!mkdtemp(b->dir))
        die("mkdtemp", -errno);
    snprintf(b->state, sizeof(b->state), "%s/state", b->dir);
    snprintf(b->log_path, sizeof(b->log_path), "%s/audit.log", b->dir);

    b->idp_key = rsa2048_key();
    if ((r = ferry_oidc_new(NULL, &b->oidc)) < 0 ||
        (r = ferry_jwk_to_public_json(b->idp_key, &pub)))
        die("trust store", r);
    json_object_set_new(pub, "alg", json_string("RS256"));
    conf = json_pack("{s:s, s:[s], s:[s], s:s, s:{s:[o]}}", "issuer", IDP, "audiences", AUD,
                     "algorithms", "RS256", "profile", "access_token", "jwks", "keys", pub);
    if (!conf)
        die("issuer", -ENOMEM);
    if ((r = ferry_oidc_add_issuer(b->oidc, conf, err, sizeof(err))) < 0)
        die_msg("issuer", err);
    json_decref(conf);

    if ((r = ferry_policy_problems_new(&pr)) < 0 || (r = ferry_policy_builder_new(&pb)) < 0)
        die("policy", r);
    r = ferry_policy_builder_add_buffer(pb, "bench.json", policy_json, strlen(policy_json), pr);
    if (r == 0)
        r = ferry_policy_builder_finish(pb, &set, pr);
    if (r < 0)
        die_msg("policy", ferry_policy_problems_count(pr) ? ferry_policy_problems_get(pr, 0)->reason
                                                          : ferry_strerror(r));
    ferry_policy_builder_free(pb);
    ferry_policy_problems_free(pr);
    if ((r = ferry_policy_store_new(set, &b->policies)) < 0)
        die("policy store", r);
    ferry_policy_set_unref(set);

    ferry_mint_options mo = {
        .issuer = ISSUER, .state_dir = b->state, .alg = FERRY_ALG_ES256, .max_ttl = 900};
    if ((r = ferry_mint_open(&mo, &b->mint, err, sizeof(err))) < 0)
        die_msg("mint", err);

    sk = ferry_mint_signing_key(b->mint, NULL);
    if (!sk)
        die("signing key", -FERRY_ENOKEY);
    ferry_auditlog_options lo = {.path = b->log_path, .sync = sync, .signing_key = sk};
    if ((r = ferry_auditlog_open(&lo, &b->log, err, sizeof(err))) < 0)
        die_msg("audit log", err);
    ferry_jwk_unref(sk);

    if ((r = ferry_ratelimit_new(NULL, &b->limit)) < 0)
        die("rate limiter", r);
    ferry_exchange_options eo = {.default_ttl = 300, .max_ttl = 900, .identity_limit = b->limit};
    if ((r = ferry_exchange_new(b->oidc, b->policies, b->mint, b->log, &eo, &b->ex, err,
                                sizeof(err))) < 0)
        die_msg("exchange", err);

    b->pool = calloc(pool, sizeof(*b->pool));
    if (!b->pool)
        die("pool", -ENOMEM);
    for (size_t i = 0; i < pool; i++)
        b->pool[i] = subject_token(b->idp_key, (unsigned)i, now);
    b->n_pool = pool;
}

static void teardown(struct bench *b)
{
    ferry_auditlog_report rep;
    ferry_jwks *keys = NULL;
    json_t *all = NULL;
    int r;

    ferry_exchange_free(b->ex);
    if ((r = ferry_auditlog_close(b->log)) < 0)
        die("audit log close", r);
    /* The log the run wrote must verify (chain, checkpoints, final seal). */
    if ((r = ferry_mint_jwks(b->mint, true, &all)) < 0 ||
        (r = ferry_jwks_from_json(all, &keys, NULL)) < 0)
        die("jwks", r);
    r = ferry_auditlog_verify(b->log_path, keys, NULL, &rep);
    if (r < 0) {
        fprintf(stderr, "bench_exchange: audit log: line %llu: %s\n",
                (unsigned long long)rep.first_bad_line, rep.first_bad_reason);
        exit(1);
    }
    printf("audit_log records=%llu checkpoints=%llu\n", (unsigned long long)rep.records,
           (unsigned long long)rep.checkpoints);
    json_decref(all);
    ferry_jwks_unref(keys);
    ferry_ratelimit_free(b->limit);
    ferry_mint_free(b->mint);
    ferry_policy_store_free(b->policies);
    ferry_oidc_free(b->oidc);
    for (size_t i = 0; i < b->n_pool; i++)
        free(b->pool[i]);
    free(b->pool);
    ferry_jwk_unref(b->idp_key);
    rm_tree(b->dir);
}

/* One exchange as ferryd's token route makes it: the form's parameters, the exchange, the
 * response body. jti (optional) gets the minted token's jti. */
static void one_exchange(struct bench *b, const char *tok, char jti[FERRY_MINT_JTI_LEN + 1])
{
    const ferry_exchange_param p[] = {
        {"grant_type", 10, GRANT_TYPE, sizeof(GRANT_TYPE) - 1},
        {"subject_token_type", 18, ACCESS_TOKEN_TYPE, sizeof(ACCESS_TOKEN_TYPE) - 1},
        {"subject_token", 13, tok, strlen(tok)},
        {"audience", 8, TARGET, sizeof(TARGET) - 1},
        {"scope", 5, SCOPE, sizeof(SCOPE) - 1},
    };
    const ferry_exchange_request req = {.params = p, .n_params = sizeof(p) / sizeof(p[0])};
    ferry_exchange_response resp;
    char *body = NULL;
    size_t body_len;
    int r;

    memset(&resp, 0, sizeof(resp));
    r = ferry_exchange_token(b->ex, &req, &resp);
    if (r < 0 || resp.error != FERRY_EXCHANGE_OK) {
        fprintf(stderr, "bench_exchange: exchange refused (%d): %s: %s\n", r,
                ferry_exchange_error_name(resp.error), resp.error_description);
        exit(1);
    }
    if ((r = ferry_exchange_response_write(&resp, &body, &body_len)) < 0)
        die("response", r);
    if (jti)
        memcpy(jti, resp.jti, FERRY_MINT_JTI_LEN + 1);
    explicit_bzero(body, body_len);
    free(body);
    ferry_exchange_response_release(&resp);
}

/* The exchanges of the timed loop only (not the warm-up's): the function valgrind's
 * --toggle-collect names. */
__attribute__((noinline)) static void measured_exchange(struct bench *b, const char *tok)
{
    one_exchange(b, tok, NULL);
}

static int cmp_jti(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void warm_up(struct bench *b)
{
    static char jtis[WARMUP][FERRY_MINT_JTI_LEN + 1];

    for (size_t i = 0; i < WARMUP; i++)
        one_exchange(b, b->pool[i % b->n_pool], jtis[i]);
    qsort(jtis, WARMUP, sizeof(jtis[0]), cmp_jti);
    for (size_t i = 1; i < WARMUP; i++)
        if (strcmp(jtis[i - 1], jtis[i]) == 0)
            die_msg("warm-up", "two minted tokens share a jti");
}

/* --count: a fixed number of operations per loop instead of a time (for valgrind's callgrind,
 * whose instruction counts do not depend on the machine's load). */
static unsigned long g_count;

#define TIMED(res, seconds, body)                                                                  \
    do {                                                                                           \
        double w0_ = mono_now(), c0_ = thread_cpu();                                               \
        (res).ops = 0;                                                                             \
        do {                                                                                       \
            for (int k_ = 0; k_ < 16; k_++) {                                                      \
                body;                                                                              \
            }                                                                                      \
            (res).ops += 16;                                                                       \
        } while (g_count ? (res).ops < g_count : mono_now() - w0_ < (seconds));                    \
        (res).cpu = thread_cpu() - c0_;                                                            \
        (res).wall = mono_now() - w0_;                                                             \
    } while (0)

static void run(struct bench *b, double seconds, bool exchanges_only)
{
    struct result ex, ver = {0}, sig = {0};
    ferry_jws *jws = NULL;
    ferry_jwk *key;
    size_t next = 0, si_len;
    char *minted = NULL;
    int r;

    warm_up(b);
    TIMED(ex, seconds, {
        measured_exchange(b, b->pool[next]);
        if (++next == b->n_pool)
            next = 0;
    });
    report("exchange", &ex);
    if (exchanges_only)
        return;

    /* The RS256 verification of a subject token, alone. */
    if ((r = ferry_jws_parse(b->pool[0], strlen(b->pool[0]), &jws)) < 0)
        die("parse", r);
    TIMED(ver, seconds / 2, {
        r = ferry_jose_verify(FERRY_ALG_RS256, b->idp_key, jws->signing_input,
                              jws->signing_input_len, jws->sig, jws->sig_len);
        if (r < 0)
            die("verify", r);
    });
    report("rs256-verify", &ver);
    ferry_jws_free(jws);

    /* The ES256 signature of a minted token's signing input, alone. */
    {
        ferry_exchange_param p[] = {
            {"grant_type", 10, GRANT_TYPE, sizeof(GRANT_TYPE) - 1},
            {"subject_token_type", 18, ACCESS_TOKEN_TYPE, sizeof(ACCESS_TOKEN_TYPE) - 1},
            {"subject_token", 13, b->pool[0], strlen(b->pool[0])},
            {"audience", 8, TARGET, sizeof(TARGET) - 1},
            {"scope", 5, SCOPE, sizeof(SCOPE) - 1},
        };
        ferry_exchange_request req = {.params = p, .n_params = 5};
        ferry_exchange_response resp;

        memset(&resp, 0, sizeof(resp));
        if ((r = ferry_exchange_token(b->ex, &req, &resp)) < 0 || !resp.access_token)
            die("exchange", r < 0 ? r : -EINVAL);
        minted = strdup(resp.access_token);
        ferry_exchange_response_release(&resp);
        if (!minted)
            die("strdup", -ENOMEM);
    }
    si_len = (size_t)(strrchr(minted, '.') - minted);
    key = ferry_mint_signing_key(b->mint, NULL);
    if (!key)
        die("signing key", -FERRY_ENOKEY);
    TIMED(sig, seconds / 2, {
        unsigned char *s = NULL;
        size_t s_len;
        r = ferry_jose_sign(FERRY_ALG_ES256, key, minted, si_len, &s, &s_len);
        if (r < 0)
            die("sign", r);
        free(s);
    });
    report("es256-sign", &sig);
    ferry_jwk_unref(key);
    free(minted);

    printf("summary exchange_us=%.2f verify_us=%.2f sign_us=%.2f crypto_us=%.2f "
           "non_crypto_us=%.2f per_cpu_sec=%.0f\n",
           us_per_op(&ex), us_per_op(&ver), us_per_op(&sig), us_per_op(&ver) + us_per_op(&sig),
           us_per_op(&ex) - us_per_op(&ver) - us_per_op(&sig),
           ex.cpu > 0 ? (double)ex.ops / ex.cpu : 0);
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_exchange [--seconds S | --count N] [--cpu N] [--pool N] "
                    "[--sync batch|checkpoint|always] [--dir DIR] [--loops]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"seconds", required_argument, NULL, 's'}, {"cpu", required_argument, NULL, 'c'},
        {"pool", required_argument, NULL, 'p'},    {"sync", required_argument, NULL, 'y'},
        {"dir", required_argument, NULL, 'd'},     {"loops", no_argument, NULL, 'l'},
        {"count", required_argument, NULL, 'n'},   {NULL, 0, NULL, 0},
    };
    ferry_auditlog_sync_mode sync = FERRY_AUDITLOG_SYNC_BATCH;
    const char *base = secure_getenv("TMPDIR");
    struct bench b = {0};
    double seconds = 5;
    bool exchanges_only = false;
    long pool = 1000;
    char *end;
    int c;

    while ((c = getopt_long(argc, argv, "s:c:p:y:d:ln:", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            seconds = strtod(optarg, &end);
            if (*end || !(seconds > 0 && seconds < 3600))
                usage();
            break;
        case 'c': {
            cpu_set_t set;
            long cpu = strtol(optarg, &end, 10);
            if (*end || cpu < 0 || cpu >= CPU_SETSIZE)
                usage();
            CPU_ZERO(&set);
            CPU_SET((int)cpu, &set);
            if (sched_setaffinity(0, sizeof(set), &set) < 0) {
                perror("bench_exchange: sched_setaffinity");
                return 2;
            }
            break;
        }
        case 'p':
            pool = strtol(optarg, &end, 10);
            if (*end || pool < 1 || pool > 1000000)
                usage();
            break;
        case 'y':
            if (strcmp(optarg, "batch") == 0)
                sync = FERRY_AUDITLOG_SYNC_BATCH;
            else if (strcmp(optarg, "checkpoint") == 0)
                sync = FERRY_AUDITLOG_SYNC_CHECKPOINT;
            else if (strcmp(optarg, "always") == 0)
                sync = FERRY_AUDITLOG_SYNC_ALWAYS;
            else
                usage();
            break;
        case 'd':
            base = optarg;
            break;
        case 'l':
            exchanges_only = true;
            break;
        case 'n': {
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 100000000)
                usage();
            g_count = (unsigned long)n;
            break;
        }
        default:
            usage();
        }
    }
    if (optind != argc)
        usage();
    if (!base || !*base)
        base = "/tmp";
    setup(&b, base, sync, (size_t)pool);
    run(&b, seconds, exchanges_only);
    teardown(&b);
    return 0;
}
