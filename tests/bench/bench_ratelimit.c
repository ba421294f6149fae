/* tests/bench/bench_ratelimit.c - cost of one ferry_ratelimit_check.
 *
 *   bench_ratelimit [-n CHECKS] [-k KEYS] [-t THREADS]
 *
 * Keys are client-address strings ("ipv4:10.A.B.C", about 15 bytes). Each thread checks
 * CHECKS keys round-robin over its own KEYS distinct keys (default 10,000,000 checks over 1000
 * keys) on one shared limiter (rate 1e6/s, burst 1e6, so both the allowed and the refill path
 * run; 65536 tracked keys), then a second pass with the limiter off (rate 0). Output, one line
 * per case:
 *   case=on|off threads=T keys=K checks=N ns_per_check=X checks_per_s=Y
 * where ns_per_check is wall time / checks per thread (so with T threads on T cores it shows
 * how much the threads slow each other down). Exit 1 if a check fails.
 *
 * This is a benchmark, not a test: it is built only by `make bench`.
 */
#include "config.h"

#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/error.h"
#include "ferry/ratelimit.h"

struct job {
    ferry_ratelimit *rl;
    unsigned id;
    long checks, keys;
    int failed;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *run(void *arg)
{
    struct job *j = arg;
    char(*keys)[32] = malloc((size_t)j->keys * sizeof(*keys));
    size_t *lens = malloc((size_t)j->keys * sizeof(*lens));
    if (!keys || !lens) {
        j->failed = 1;
        free(keys);
        free(lens);
        return NULL;
    }
    for (long i = 0; i < j->keys; i++)
        lens[i] = (size_t)snprintf(keys[i], sizeof(keys[i]), "ipv4:10.%u.%ld.%ld", j->id,
                                   (i >> 8) & 255, i & 255);
    for (long i = 0, k = 0; i < j->checks; i++) {
        int r = ferry_ratelimit_check(j->rl, keys[k], lens[k], NULL);
        if (r < 0 && r != -FERRY_EREFUSED)
            j->failed = 1;
        if (++k == j->keys)
            k = 0;
    }
    free(keys);
    free(lens);
    return NULL;
}

static int bench(ferry_ratelimit *rl, const char *name, unsigned threads, long checks, long keys)
{
    pthread_t t[64];
    struct job jobs[64];
    double t0 = now_s(), el;
    int failed = 0;

    for (unsigned i = 0; i < threads; i++) {
        jobs[i] = (struct job){.rl = rl, .id = i, .checks = checks, .keys = keys};
        if (pthread_create(&t[i], NULL, run, &jobs[i]) != 0)
            return 1;
    }
    for (unsigned i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        failed |= jobs[i].failed;
    }
    el = now_s() - t0;
    printf("case=%s threads=%u keys=%ld checks=%ld ns_per_check=%.1f checks_per_s=%.0f\n", name,
           threads, keys, checks, el * 1e9 / (double)checks, (double)checks * threads / el);
    return failed;
}

int main(int argc, char **argv)
{
    long checks = 10000000, keys = 1000;
    unsigned threads = 1;
    ferry_ratelimit *rl = NULL;
    int c, failed = 0;

    while ((c = getopt(argc, argv, "n:k:t:")) != -1) {
        switch (c) {
        case 'n':
            checks = strtol(optarg, NULL, 10);
            break;
        case 'k':
            keys = strtol(optarg, NULL, 10);
            break;
        case 't':
            threads = (unsigned)strtoul(optarg, NULL, 10);
            break;
        default:
            fprintf(stderr, "usage: bench_ratelimit [-n CHECKS] [-k KEYS] [-t THREADS]\n");
            return 2;
        }
    }
    if (checks < 1 || keys < 1 || keys > 65536 || threads < 1 || threads > 64) {
        fprintf(stderr, "bench_ratelimit: out of range\n");
        return 2;
    }
    ferry_ratelimit_options o = {.rate = 1e6, .burst = 1000000, .max_keys = 65536};
    if (ferry_ratelimit_new(&o, &rl) < 0) {
        fprintf(stderr, "bench_ratelimit: ferry_ratelimit_new failed\n");
        return 1;
    }
    failed |= bench(rl, "on", threads, checks, keys);
    if (ferry_ratelimit_configure(rl, 0, 0, 65536) < 0)
        failed = 1;
    failed |= bench(rl, "off", threads, checks, keys);
    ferry_ratelimit_free(rl);
    return failed ? 1 : 0;
}
