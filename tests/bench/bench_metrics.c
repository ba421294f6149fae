/* tests/bench/bench_metrics.c - cost of recording one request in the metrics module.
 *
 *   bench_metrics [-n UPDATES]
 *
 * One counter increment plus one histogram observation (ferryd's 14 latency buckets) on
 * series already looked up, UPDATES times (default 20,000,000) on one thread. Output:
 *   case=inc+observe updates=N ns_per_update=X
 * Exit 1 if the counter does not hold exactly N afterwards.
 *
 * This is a benchmark, not a test: it is built only by `make bench`.
 */
#include "config.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ferry/metrics.h"

static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                0.1,    0.25,  0.5,    1,     2.5,  5,     10};

int main(int argc, char **argv)
{
    long n = 20000000;
    ferry_metrics *m = NULL;
    ferry_metric_family *c = NULL, *h = NULL;
    ferry_metric *cs = NULL, *hs = NULL;
    struct timespec a, b;
    char err[256];
    int opt;

    while ((opt = getopt(argc, argv, "n:")) != -1) {
        if (opt != 'n' || (n = strtol(optarg, NULL, 10)) <= 0) {
            fprintf(stderr, "usage: bench_metrics [-n UPDATES]\n");
            return 2;
        }
    }
    const ferry_metric_desc cd = {.type = FERRY_METRIC_COUNTER, .name = "b_total", .help = "b"};
    const ferry_metric_desc hd = {.type = FERRY_METRIC_HISTOGRAM,
                                  .name = "b_seconds",
                                  .help = "b",
                                  .buckets = bounds,
                                  .n_buckets = sizeof(bounds) / sizeof(bounds[0])};
    if (ferry_metrics_new(&m) < 0 || ferry_metrics_add(m, &cd, &c, err, sizeof(err)) < 0 ||
        ferry_metrics_add(m, &hd, &h, err, sizeof(err)) < 0 ||
        ferry_metric_family_get(c, NULL, &cs) < 0 || ferry_metric_family_get(h, NULL, &hs) < 0) {
        fprintf(stderr, "bench_metrics: setup failed\n");
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        ferry_metric_inc(cs);
        ferry_metric_observe_scaled(hs, (int64_t)(i & 0xfffff) * 1000);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / n;
    int ok = ferry_metric_value(cs) == n;
    printf("case=inc+observe updates=%ld ns_per_update=%.1f\n", n, ns);
    ferry_metrics_free(m);
    return ok ? 0 : 1;
}
