/* tests/bench/bench_mint.c - token minting throughput on one core.
 *
 * For ES256 (P-256), RS256 (RSA 2048, the size `openssl speed rsa2048` signs with) and EdDSA
 * (Ed25519) this program opens a mint on a fresh temporary state directory (the key is
 * generated there, as on a first start of ferryd) and measures for a fixed time:
 *
 *   ferry-mint   ferry_mint_token with a realistic request (sub, one audience, scope,
 *                client_id, src_iss, src_sub; ttl 900): input checks, claims written into a
 *                buffer, 128-bit jti from RAND_bytes, base64url, signature with the cached key.
 *   jose-sign    ferry_jose_sign over a signing input of the same length with the same key:
 *                the signature alone, so ferry-mint / jose-sign is the mint's own overhead.
 *
 * Before timing, the tokens of a warm-up round are verified with ferry's own verifier
 * (ferry_oidc, profile "ferry", inline JWKS = ferry_mint_jwks) and their jti checked for
 * uniqueness; any failure makes the run fail (exit 1).
 *
 * Throughput is ops per second of this thread's user CPU time (what `openssl speed` divides
 * by) and per second of wall time. One line per (alg, path) on stdout:
 *   alg=ES256 path=ferry-mint ops=N cpu_secs=X wall_secs=Y per_sec=Z per_sec_wall=W
 *
 * usage: bench_mint [--seconds S] [--cpu N] [--alg ES256|RS256|EdDSA]...
 * A benchmark, not a test: it is built only by `make bench` (tests/bench/run-mint.sh).
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
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "ferry/error.h"
#include "ferry/jose.h"
#include "ferry/mint.h"
#include "ferry/oidc.h"

#define ISSUER "https://ferry.bench.test"
#define AUDIENCE "sts.amazonaws.com"
#define WARMUP 200

static void die(const char *what, int r)
{
    fprintf(stderr, "bench_mint: %s: %s\n", what, ferry_strerror(r));
    exit(1);
}

static double mono_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_user_cpu(void)
{
    struct rusage ru;

    if (getrusage(RUSAGE_THREAD, &ru) < 0)
        die("getrusage", -errno);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
}

static void report(const char *alg, const char *path, unsigned long ops, double cpu, double wall)
{
    printf("alg=%s path=%s ops=%lu cpu_secs=%.3f wall_secs=%.3f per_sec=%.0f per_sec_wall=%.0f\n",
           alg, path, ops, cpu, wall, ops / (cpu > 0.001 ? cpu : 0.001),
           ops / (wall > 0.001 ? wall : 0.001));
    fflush(stdout);
}

static void rm_state(const char *dir)
{
    char cmd[512];

    /* Only the directory mkdtemp made for us. */
    snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_mint: could not remove %s\n", dir);
}

static void bench_alg(ferry_alg alg, double seconds)
{
    static const char *const aud[] = {AUDIENCE};
    const ferry_mint_request req = {
        .subject = "spiffe://cluster.local/ns/train/sa/llm-finetune",
        .audience = aud,
        .n_audience = 1,
        .scope = "s3:read secrets:wandb",
        .client_id = "ferry-credential",
        .ttl = 900,
        .src_iss = "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71",
        .src_sub = "system:serviceaccount:train:llm-finetune",
    };
    char dir[] = "/tmp/ferry-bench-mint.XXXXXX", err[512] = "", jti[FERRY_MINT_JTI_LEN + 1];
    char prev_jti[FERRY_MINT_JTI_LEN + 1] = "";
    const char *name = ferry_alg_name(alg);
    ferry_mint_options mo = {.issuer = ISSUER, .state_dir = dir, .alg = alg, .rsa_bits = 2048,
                             .max_ttl = 3600};
    ferry_mint *m = NULL;
    ferry_oidc *oidc = NULL;
    ferry_alg salg;
    ferry_jwk *key;
    json_t *jwks = NULL, *conf;
    char *tok = NULL, *signing_input;
    unsigned long ops;
    double c0, w0;
    size_t si_len;
    int r;

    if (!mkdtemp(dir))
        die("mkdtemp", -errno);
    r = ferry_mint_open(&mo, &m, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "bench_mint: %s\n", err);
        exit(1);
    }

    /* Warm-up: every token must verify with ferry's own verifier; jti must differ. */
    if ((r = ferry_mint_jwks(m, false, &jwks)) < 0 || (r = ferry_oidc_new(NULL, &oidc)) < 0)
        die("setup", r);
    conf = json_pack("{s:s, s:[s], s:O, s:[s], s:s, s:i}", "issuer", ISSUER, "audiences",
                     AUDIENCE, "jwks", jwks, "algorithms", name, "profile", "ferry",
                     "max_lifetime", 3600);
    if (!conf || (r = ferry_oidc_add_issuer(oidc, conf, err, sizeof(err))) < 0)
        die(err[0] ? err : "add_issuer", r ? r : -ENOMEM);
    for (int i = 0; i < WARMUP; i++) {
        ferry_identity *id = NULL;
        ferry_verify_result res;
        r = ferry_mint_token(m, &req, &tok, jti, NULL);
        if (r < 0)
            die("mint", r);
        if (strcmp(jti, prev_jti) == 0)
            die("jti repeated", -EINVAL);
        memcpy(prev_jti, jti, sizeof(jti));
        r = ferry_oidc_verify(oidc, tok, strlen(tok), NULL, &id, &res);
        if (r < 0) {
            fprintf(stderr, "bench_mint: %s token refused: %s (%s)\n", name,
                    ferry_reason_name(res.reason), res.detail);
            exit(1);
        }
        ferry_identity_free(id);
        if (i < WARMUP - 1)
            free(tok);
    }
    /* The signing input of a real token, for the jose-sign baseline. */
    si_len = (size_t)(strrchr(tok, '.') - tok);
    signing_input = strndup(tok, si_len);
    free(tok);
    json_decref(conf);
    json_decref(jwks);
    ferry_oidc_free(oidc);

    ops = 0;
    w0 = mono_now();
    c0 = thread_user_cpu();
    do {
        for (int i = 0; i < 16; i++) {
            r = ferry_mint_token(m, &req, &tok, NULL, NULL);
            if (r < 0)
                die("mint", r);
            free(tok);
        }
        ops += 16;
    } while (mono_now() - w0 < seconds);
    report(name, "ferry-mint", ops, thread_user_cpu() - c0, mono_now() - w0);

    key = ferry_mint_signing_key(m, &salg);
    if (!key || salg != alg)
        die("signing key", -FERRY_ENOKEY);
    ops = 0;
    w0 = mono_now();
    c0 = thread_user_cpu();
    do {
        for (int i = 0; i < 16; i++) {
            unsigned char *sig = NULL;
            size_t sig_len;
            r = ferry_jose_sign(alg, key, signing_input, si_len, &sig, &sig_len);
            if (r < 0)
                die("sign", r);
            free(sig);
        }
        ops += 16;
    } while (mono_now() - w0 < seconds);
    report(name, "jose-sign", ops, thread_user_cpu() - c0, mono_now() - w0);

    ferry_jwk_unref(key);
    free(signing_input);
    ferry_mint_free(m);
    rm_state(dir);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"seconds", required_argument, NULL, 's'},
        {"cpu", required_argument, NULL, 'c'},
        {"alg", required_argument, NULL, 'a'},
        {NULL, 0, NULL, 0},
    };
    ferry_alg algs[3] = {FERRY_ALG_ES256, FERRY_ALG_RS256, FERRY_ALG_EDDSA};
    size_t n_algs = 3, n_given = 0;
    double seconds = 2;
    int c;

    while ((c = getopt_long(argc, argv, "s:c:a:", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            seconds = strtod(optarg, NULL);
            if (!(seconds > 0 && seconds < 3600)) {
                fprintf(stderr, "bench_mint: bad --seconds\n");
                return 2;
            }
            break;
        case 'c': {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET((int)strtol(optarg, NULL, 10), &set);
            if (sched_setaffinity(0, sizeof(set), &set) < 0) {
                perror("bench_mint: sched_setaffinity");
                return 2;
            }
            break;
        }
        case 'a':
            if (n_given == 3) {
                fprintf(stderr, "bench_mint: at most three --alg\n");
                return 2;
            }
            algs[n_given] = ferry_alg_from_name(optarg);
            if (algs[n_given] != FERRY_ALG_ES256 && algs[n_given] != FERRY_ALG_RS256 &&
                algs[n_given] != FERRY_ALG_EDDSA) {
                fprintf(stderr, "bench_mint: --alg ES256, RS256 or EdDSA\n");
                return 2;
            }
            n_given++;
            break;
        default:
            fprintf(stderr, "usage: bench_mint [--seconds S] [--cpu N] [--alg ALG]...\n");
            return 2;
        }
    }
    if (n_given)
        n_algs = n_given;
    for (size_t i = 0; i < n_algs; i++)
        bench_alg(algs[i], seconds);
    return 0;
}
