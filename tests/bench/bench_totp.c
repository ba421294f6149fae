/* bench_totp.c - throughput of the totp module (not a test).
 *
 * usage: bench_totp [STATE_DIR] [SECONDS]
 * Prints, one line each: HOTP computations per second (liboath, the cost of one candidate),
 * and accepted verifications per second with everything they do: lock, read and parse the
 * record, three candidates, atomic durable rewrite (two fsyncs). STATE_DIR defaults to a new
 * folder under /tmp; the disk behind it decides the second figure.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "basic/mem.h"
#include "ferry/totp.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Base32 secret of the URI back to bytes (bench input only). */
static void secret_from_uri(const char *uri, unsigned char *out)
{
    const char *p = strstr(uri, "secret="), *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    unsigned long long acc = 0;
    int bits = 0;
    size_t o = 0;

    for (p += 7; *p && *p != '&'; p++) {
        acc = acc << 5 | (unsigned long long)(strchr(alpha, *p) - alpha);
        bits += 5;
        if (bits >= 8) {
            out[o++] = (unsigned char)(acc >> (bits - 8));
            bits -= 8;
        }
    }
}

int main(int argc, char **argv)
{
    char tmpl[] = "/tmp/ferry-bench-totp-XXXXXX", err[256], code[9], *uri = NULL;
    const char *dir = argc > 1 ? argv[1] : NULL;
    double secs = argc > 2 ? strtod(argv[2], NULL) : 2.0, t0, el;
    unsigned char secret[FERRY_TOTP_SECRET_LEN];
    unsigned long n = 0;
    int64_t now = 1700000010;
    ferry_totp_status st;

    if (!dir && !(dir = mkdtemp(tmpl))) {
        perror("mkdtemp");
        return 1;
    }
    if (ferry_totp_enroll(dir, "bench", NULL, true, &uri, err, sizeof(err)) < 0) {
        fprintf(stderr, "enroll: %s\n", err);
        return 1;
    }
    secret_from_uri(uri, secret);
    ferry_free_secret_str(uri);

    t0 = now_s();
    do {
        for (int i = 0; i < 1000; i++, n++)
            if (ferry_totp_hotp(secret, sizeof(secret), n, 6, code) < 0)
                return 1;
    } while ((el = now_s() - t0) < secs);
    printf("hotp (liboath, SHA-1, 6 digits): %.0f /s\n", (double)n / el);

    n = 0;
    t0 = now_s();
    do {
        /* A new time step each round, so every verification is an accepted one. */
        now += 30;
        if (ferry_totp_hotp(secret, sizeof(secret), (uint64_t)(now / 30), 6, code) < 0 ||
            ferry_totp_verify(dir, "bench", code, now, &st, NULL, err, sizeof(err)) < 0 ||
            st != FERRY_TOTP_OK) {
            fprintf(stderr, "verify: %s %s\n", err, ferry_totp_status_name(st));
            return 1;
        }
        n++;
    } while ((el = now_s() - t0) < secs);
    printf("verify accepted (lock, read, 3 candidates, durable rewrite): %.0f /s "
           "(%.1f us each)\n",
           (double)n / el, el / (double)n * 1e6);
    ferry_wipe(secret, sizeof(secret));
    if (dir == tmpl) { /* ours: remove it */
        static const char *const files[] = { "totp/bench.json", "totp/bench.lock", "totp" };
        char p[sizeof(tmpl) + 32];
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
            snprintf(p, sizeof(p), "%s/%s", tmpl, files[i]);
            (void)remove(p);
        }
        (void)remove(tmpl);
    }
    return 0;
}
