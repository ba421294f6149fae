/* tests/unit/auditlog_writer.c - test-only program: writes an audit log with the library so
 * tests/integration/test_cli_log.py can verify and tamper with it (not installed).
 *
 * usage: auditlog_writer --log PATH --key PEM --jwks-out FILE [--count N]
 *                        [--checkpoint-every K] [--sync always|batch|checkpoint]
 *                        [--threads T] [--no-close] [--verify-jwks FILE]
 * --key: the signing key, loaded when the file exists, else an ES256 key is generated and
 * saved there (0600). --verify-jwks: public keys of earlier signers (verify_keys), so that
 * reopening a log started with another key verifies its checkpoints too. --jwks-out gets the
 * public JWKS. --no-close leaves the log unsealed (the process ends without the final
 * checkpoint, as after a crash). Prints the last seq written and the time taken on stdout.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ferry/auditlog.h"
#include "ferry/error.h"
#include "ferry/jose.h"

struct job {
    ferry_auditlog *log;
    ferry_jwk *key;
    unsigned from, count;
    int rc;
};

static void *writer(void *arg)
{
    struct job *j = arg;

    for (unsigned i = j->from; i < j->from + j->count; i++) {
        char subject[128], jti[32], claims[64];
        char *tok = NULL;
        ferry_auditlog_token_ref ref;
        /* Varied content: escapes, controls, DEL, non-ASCII and a character above U+FFFF. */
        json_t *details =
            json_pack("{s:i, s:s, s:b, s:n, s:[i,s], s:{s:s, s:s}}", "i", (json_int_t)i, "path",
                      i % 3 ? "/v1/token" : "/v1/secret/\"quoted\"\\", "ok", (int)(i % 2), "none",
                      "list", (json_int_t) - (json_int_t)i, "two", "nested", "b", "ctl\001\177\t\n",
                      "a", "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80");
        ferry_auditlog_event ev = {
            .type = i % 2 ? "token.exchange" : "secret.read",
            .decision = (ferry_auditlog_decision)(i % 4),
            .subject = subject,
            .token = &ref,
            .details = details,
        };
        snprintf(subject, sizeof(subject), "system:serviceaccount:ml:trainer-%u", i);
        snprintf(jti, sizeof(jti), "jti-%u", i);
        snprintf(claims, sizeof(claims), "{\"jti\":\"%s\",\"sub\":\"x\"}", jti);
        if (!details ||
            ferry_jws_sign(j->key, FERRY_ALG_ES256, "JWT", claims, strlen(claims), &tok) < 0 ||
            ferry_auditlog_ref_token(tok, strlen(tok), &ref) < 0) {
            j->rc = -ENOMEM;
        } else {
            j->rc = ferry_auditlog_append(j->log, &ev, NULL);
        }
        free(tok);
        json_decref(details);
        if (j->rc < 0)
            break;
    }
    return NULL;
}

static ferry_jwk *load_or_make_key(const char *path)
{
    ferry_jwk *key = NULL;
    char buf[16384];
    FILE *f = fopen(path, "rbe");

    if (f) {
        size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        if (ferry_jwk_from_pem(buf, n, &key) < 0)
            return NULL;
        return key;
    }
    char *pem = NULL;
    size_t len = 0;
    int fd;
    if (ferry_jwk_generate(FERRY_ALG_ES256, &key) < 0 || ferry_jwk_to_pem(key, &pem, &len) < 0)
        return NULL;
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, pem, len) != (ssize_t)len) {
        ferry_jwk_pem_free(pem, len);
        ferry_jwk_unref(key);
        return NULL;
    }
    close(fd);
    ferry_jwk_pem_free(pem, len);
    return key;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"log", required_argument, NULL, 'l'},
        {"key", required_argument, NULL, 'k'},
        {"jwks-out", required_argument, NULL, 'j'},
        {"count", required_argument, NULL, 'n'},
        {"checkpoint-every", required_argument, NULL, 'c'},
        {"sync", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 't'},
        {"no-close", no_argument, NULL, 'x'},
        {"verify-jwks", required_argument, NULL, 'v'},
        {},
    };
    const char *log_path = NULL, *key_path = NULL, *jwks_path = NULL, *verify_path = NULL;
    ferry_jwks *verify_keys = NULL;
    unsigned count = 10, every = 0, threads = 1;
    ferry_auditlog_sync_mode mode = FERRY_AUDITLOG_SYNC_ALWAYS;
    bool no_close = false;
    ferry_auditlog *log = NULL;
    ferry_jwk *key;
    char err[512];
    struct timespec t0, t1;
    int c, r;

    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            log_path = optarg;
            break;
        case 'k':
            key_path = optarg;
            break;
        case 'j':
            jwks_path = optarg;
            break;
        case 'n':
            count = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'c':
            every = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 't':
            threads = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'x':
            no_close = true;
            break;
        case 'v':
            verify_path = optarg;
            break;
        case 's':
            if (strcmp(optarg, "always") == 0)
                mode = FERRY_AUDITLOG_SYNC_ALWAYS;
            else if (strcmp(optarg, "batch") == 0)
                mode = FERRY_AUDITLOG_SYNC_BATCH;
            else if (strcmp(optarg, "checkpoint") == 0)
                mode = FERRY_AUDITLOG_SYNC_CHECKPOINT;
            else
                return 2;
            break;
        default:
            return 2;
        }
    }
    if (!log_path || !key_path || threads == 0 || threads > 64) {
        fprintf(stderr, "usage: auditlog_writer --log PATH --key PEM [--jwks-out FILE] ...\n");
        return 2;
    }
    key = load_or_make_key(key_path);
    if (!key) {
        fprintf(stderr, "auditlog_writer: cannot load or create the key %s\n", key_path);
        return 2;
    }
    if (jwks_path) {
        ferry_jwks *set = NULL;
        json_t *doc = NULL;
        if (ferry_jwks_from_keys(&key, 1, &set) < 0 || ferry_jwks_to_public_json(set, &doc) < 0 ||
            json_dump_file(doc, jwks_path, JSON_COMPACT) < 0) {
            fprintf(stderr, "auditlog_writer: cannot write %s\n", jwks_path);
            return 2;
        }
        json_decref(doc);
        ferry_jwks_unref(set);
    }
    if (verify_path) {
        static char doc[FERRY_JWKS_MAX_LEN];
        FILE *f = fopen(verify_path, "rbe");
        size_t n = f ? fread(doc, 1, sizeof(doc), f) : 0;
        if (f)
            fclose(f);
        if (!f || ferry_jwks_from_buffer(doc, n, &verify_keys, NULL) < 0) {
            fprintf(stderr, "auditlog_writer: cannot load %s\n", verify_path);
            ferry_jwk_unref(key);
            return 2;
        }
    }
    ferry_auditlog_options o = {.path = log_path,
                                .checkpoint_every = every,
                                .sync = mode,
                                .signing_key = key,
                                .verify_keys = verify_keys};
    r = ferry_auditlog_open(&o, &log, err, sizeof(err));
    ferry_jwks_unref(verify_keys); /* the log keeps its own reference */
    if (r < 0) {
        fprintf(stderr, "auditlog_writer: %s (%s)\n", err, ferry_strerror(r));
        ferry_jwk_unref(key);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    {
        pthread_t tid[64];
        struct job jobs[64];
        unsigned per = count / threads;
        for (unsigned t = 0; t < threads; t++) {
            jobs[t] = (struct job){.log = log,
                                   .key = key,
                                   .from = t * per,
                                   .count = t == threads - 1 ? count - t * per : per};
            if (pthread_create(&tid[t], NULL, writer, &jobs[t]) != 0)
                return 1;
        }
        r = 0;
        for (unsigned t = 0; t < threads; t++) {
            pthread_join(tid[t], NULL);
            if (jobs[t].rc < 0)
                r = jobs[t].rc;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (r < 0) {
        fprintf(stderr, "auditlog_writer: append failed: %s\n", ferry_strerror(r));
        return 1;
    }
    printf("last_seq %" PRIu64 "\n", ferry_auditlog_last_seq(log));
    printf("seconds %.3f\n", (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    fflush(stdout);
    if (no_close)
        _exit(0); /* as after a crash: no final checkpoint */
    r = ferry_auditlog_close(log);
    ferry_jwk_unref(key);
    if (r < 0) {
        fprintf(stderr, "auditlog_writer: close failed: %s\n", ferry_strerror(r));
        return 1;
    }
    return 0;
}
