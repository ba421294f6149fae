/* tests/unit/test_metrics.c - unit tests of the metrics module (include/ferry/metrics.h).
 *
 * Exact exposition text for a small registry, escaping of help text and label values,
 * histogram bucket boundaries (a value equal to a bound is counted in that bucket), fixed-point
 * gauges and sums, exact totals under concurrent updates and concurrent series creation, the
 * cardinality cap, refused declarations and label values, and the cost of one update.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#include "ferry/error.h"
#include "ferry/metrics.h"

static ferry_metrics *reg(void)
{
    ferry_metrics *m = NULL;
    cr_assert_eq(ferry_metrics_new(&m), 0);
    return m;
}

static ferry_metric_family *add(ferry_metrics *m, const ferry_metric_desc *d)
{
    ferry_metric_family *f = NULL;
    char err[256] = "";
    int r = ferry_metrics_add(m, d, &f, err, sizeof(err));
    cr_assert_eq(r, 0, "ferry_metrics_add(%s): %d %s", d->name, r, err);
    return f;
}

static ferry_metric *get(ferry_metric_family *f, const char *const *values)
{
    ferry_metric *s = NULL;
    int r = ferry_metric_family_get(f, values, &s);
    cr_assert_eq(r, 0, "ferry_metric_family_get: %d", r);
    cr_assert_not_null(s);
    return s;
}

static char *render(ferry_metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    cr_assert_eq(ferry_metrics_render(m, &text, &len), 0);
    cr_assert_not_null(text);
    cr_assert_eq(strlen(text), len);
    return text;
}

#define ASSERT_TEXT(m, want)                                                                       \
    do {                                                                                           \
        char *got_ = render(m);                                                                    \
        cr_assert_str_eq(got_, want, "rendered:\n%s\nwanted:\n%s", got_, want);                    \
        free(got_);                                                                                \
    } while (0)

Test(metrics, small_registry_renders_exactly)
{
    ferry_metrics *m = reg();
    static const char *const req_labels[] = {"endpoint", "status"};
    static const char *const ep_label[] = {"endpoint"};
    static const double bounds[] = {0.001, 0.25, 2.5};

    ferry_metric_family *req = add(m, &(ferry_metric_desc){
                                          .type = FERRY_METRIC_COUNTER,
                                          .name = "t_requests_total",
                                          .help = "Requests.",
                                          .labels = req_labels,
                                          .n_labels = 2,
                                      });
    ferry_metric_family *inflight = add(m, &(ferry_metric_desc){
                                               .type = FERRY_METRIC_GAUGE,
                                               .name = "t_in_flight",
                                               .help = "In flight.",
                                           });
    ferry_metric_family *dur = add(m, &(ferry_metric_desc){
                                          .type = FERRY_METRIC_HISTOGRAM,
                                          .name = "t_duration_seconds",
                                          .help = "Duration.",
                                          .labels = ep_label,
                                          .n_labels = 1,
                                          .buckets = bounds,
                                          .n_buckets = 3,
                                      });
    (void)add(m, &(ferry_metric_desc){
                     .type = FERRY_METRIC_COUNTER,
                     .name = "t_unused_total",
                     .help = "Never used.",
                     .labels = ep_label,
                     .n_labels = 1,
                 });

    ferry_metric *a = get(req, (const char *const[]){"/v1/token", "200"});
    ferry_metric *b = get(req, (const char *const[]){"other", "404"});
    ferry_metric_inc(a);
    ferry_metric_inc(a);
    ferry_metric_add(b, 5);
    cr_assert_eq(get(req, (const char *const[]){"/v1/token", "200"}), a, "lookup finds it");
    ferry_metric *g = get(inflight, NULL);
    ferry_metric_inc(g);
    ferry_metric_inc(g);
    ferry_metric_dec(g);
    ferry_metric *h = get(dur, (const char *const[]){"/v1/token"});
    ferry_metric_observe(h, 0.0005);
    ferry_metric_observe(h, 0.1);
    ferry_metric_observe(h, 3);
    ferry_metric_observe_scaled(h, 250000000); /* 0.25 s in ns: the bound itself */

    ASSERT_TEXT(m, "# HELP t_requests_total Requests.\n"
                   "# TYPE t_requests_total counter\n"
                   "t_requests_total{endpoint=\"/v1/token\",status=\"200\"} 2\n"
                   "t_requests_total{endpoint=\"other\",status=\"404\"} 5\n"
                   "# HELP t_in_flight In flight.\n"
                   "# TYPE t_in_flight gauge\n"
                   "t_in_flight 1\n"
                   "# HELP t_duration_seconds Duration.\n"
                   "# TYPE t_duration_seconds histogram\n"
                   "t_duration_seconds_bucket{endpoint=\"/v1/token\",le=\"0.001\"} 1\n"
                   "t_duration_seconds_bucket{endpoint=\"/v1/token\",le=\"0.25\"} 3\n"
                   "t_duration_seconds_bucket{endpoint=\"/v1/token\",le=\"2.5\"} 3\n"
                   "t_duration_seconds_bucket{endpoint=\"/v1/token\",le=\"+Inf\"} 4\n"
                   "t_duration_seconds_sum{endpoint=\"/v1/token\"} 3.3505\n"
                   "t_duration_seconds_count{endpoint=\"/v1/token\"} 4\n"
                   "# HELP t_unused_total Never used.\n"
                   "# TYPE t_unused_total counter\n");
    cr_assert_eq(ferry_metric_value(a), 2);
    cr_assert_eq(ferry_metric_value(h), 4);
    cr_assert_eq(ferry_metric_value(g), 1);
    cr_assert_eq(ferry_metric_family_size(req), 2);
    ferry_metrics_free(m);
}

Test(metrics, histogram_without_labels_and_empty_registry)
{
    ferry_metrics *m = reg();
    static const double bounds[] = {1, 10};
    ASSERT_TEXT(m, "");
    ferry_metric_family *f = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_HISTOGRAM,
                                        .name = "t_size_bytes",
                                        .help = "Sizes.",
                                        .buckets = bounds,
                                        .n_buckets = 2,
                                        .scale = 1,
                                    });
    ferry_metric *h = get(f, NULL);
    ferry_metric_observe(h, 0);
    ferry_metric_observe(h, 10);
    ferry_metric_observe(h, 11);
    ASSERT_TEXT(m, "# HELP t_size_bytes Sizes.\n"
                   "# TYPE t_size_bytes histogram\n"
                   "t_size_bytes_bucket{le=\"1\"} 1\n"
                   "t_size_bytes_bucket{le=\"10\"} 2\n"
                   "t_size_bytes_bucket{le=\"+Inf\"} 3\n"
                   "t_size_bytes_sum 21\n"
                   "t_size_bytes_count 3\n");
    ferry_metrics_free(m);
}

Test(metrics, escaping_of_help_and_label_values)
{
    ferry_metrics *m = reg();
    static const char *const labels[] = {"v"};
    ferry_metric_family *f = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_COUNTER,
                                        .name = "t:esc_total",
                                        .help = "Back\\slash and\nnewline \"quoted\".",
                                        .labels = labels,
                                        .n_labels = 1,
                                    });
    ferry_metric_inc(get(f, (const char *const[]){"a\\b\"c\nd"}));
    ferry_metric_inc(get(f, (const char *const[]){"caf\xc3\xa9"}));
    ferry_metric_inc(get(f, (const char *const[]){""}));
    ASSERT_TEXT(m, "# HELP t:esc_total Back\\\\slash and\\nnewline \"quoted\".\n"
                   "# TYPE t:esc_total counter\n"
                   "t:esc_total{v=\"a\\\\b\\\"c\\nd\"} 1\n"
                   "t:esc_total{v=\"caf\xc3\xa9\"} 1\n"
                   "t:esc_total{v=\"\"} 1\n");
    ferry_metrics_free(m);
}

Test(metrics, bucket_boundaries)
{
    ferry_metrics *m = reg();
    static const double bounds[] = {0.0005, 0.001, 0.005, 10};
    ferry_metric_family *f = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_HISTOGRAM,
                                        .name = "t_latency_seconds",
                                        .help = "x",
                                        .buckets = bounds,
                                        .n_buckets = 4,
                                    });
    ferry_metric *h = get(f, NULL);
    ferry_metric_observe(h, -1);            /* below the first bound: first bucket */
    ferry_metric_observe(h, 0.0005);        /* equal: that bucket */
    ferry_metric_observe_scaled(h, 500001); /* 1 ns above: the next */
    ferry_metric_observe(h, 0.001);         /* equal */
    ferry_metric_observe(h, 0.005);         /* equal */
    ferry_metric_observe(h, 10);            /* equal to the last bound */
    ferry_metric_observe(h, 10.000000001);  /* past the last: +Inf only */
    ferry_metric_observe(h, 1.0 / 0.0);     /* +Inf: +Inf bucket, sum saturates */
    ferry_metric_observe(h, 0.0 / 0.0);     /* NaN: ignored */
    char *t = render(m);
    cr_assert(strstr(t, "t_latency_seconds_bucket{le=\"0.0005\"} 2\n"), "%s", t);
    cr_assert(strstr(t, "t_latency_seconds_bucket{le=\"0.001\"} 4\n"), "%s", t);
    cr_assert(strstr(t, "t_latency_seconds_bucket{le=\"0.005\"} 5\n"), "%s", t);
    cr_assert(strstr(t, "t_latency_seconds_bucket{le=\"10\"} 6\n"), "%s", t);
    cr_assert(strstr(t, "t_latency_seconds_bucket{le=\"+Inf\"} 8\n"), "%s", t);
    cr_assert(strstr(t, "t_latency_seconds_count 8\n"), "%s", t);
    free(t);
    ferry_metrics_free(m);
}

Test(metrics, fixed_point_gauges_and_counter_mirroring)
{
    ferry_metrics *m = reg();
    ferry_metric_family *g = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_GAUGE,
                                        .name = "t_ratio",
                                        .help = "x",
                                        .scale = 1000,
                                    });
    ferry_metric_family *c = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_COUNTER,
                                        .name = "t_mirrored_total",
                                        .help = "x",
                                    });
    ferry_metric *gs = get(g, NULL), *cs = get(c, NULL);

    ferry_metric_set(gs, -1.2345); /* rounds to -1.235 (scale 1000) */
    ASSERT_TEXT(m, "# HELP t_ratio x\n# TYPE t_ratio gauge\nt_ratio -1.235\n"
                   "# HELP t_mirrored_total x\n# TYPE t_mirrored_total counter\n"
                   "t_mirrored_total 0\n");
    ferry_metric_set(gs, 0.5);
    ferry_metric_add(gs, 2);
    ferry_metric_set(cs, 41);
    ferry_metric_add(cs, -5); /* a counter never goes down */
    ferry_metric_inc(cs);
    ferry_metric_set(cs, 1.5);   /* not a whole number: ignored */
    ferry_metric_observe(cs, 3); /* not a histogram: ignored */
    ASSERT_TEXT(m, "# HELP t_ratio x\n# TYPE t_ratio gauge\nt_ratio 2.5\n"
                   "# HELP t_mirrored_total x\n# TYPE t_mirrored_total counter\n"
                   "t_mirrored_total 42\n");
    ferry_metric_set_scaled(gs, -7);
    ferry_metric_set(gs, 0.0 / 0.0); /* NaN: ignored */
    char *t = render(m);
    cr_assert(strstr(t, "\nt_ratio -0.007\n"), "%s", t);
    free(t);
    ferry_metric_set(gs, 1e300); /* saturates, never wraps */
    cr_assert_eq(ferry_metric_value(gs), INT64_MAX);
    ferry_metric_inc(NULL); /* NULL is ignored everywhere */
    ferry_metric_observe(NULL, 1);
    cr_assert_eq(ferry_metric_value(NULL), 0);
    ferry_metrics_free(m);
}

/* ferry_metric_family_zero: every series of a gauge family reads 0; other types untouched. */
Test(metrics, zero_a_gauge_family)
{
    ferry_metrics *m = reg();
    ferry_metric_family *g = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_GAUGE,
                                        .name = "t_state",
                                        .help = "x",
                                        .labels = (const char *const[]){"issuer"},
                                        .n_labels = 1,
                                    });
    ferry_metric_family *c = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_COUNTER,
                                        .name = "t_total",
                                        .help = "x",
                                    });
    ferry_metric *a = get(g, (const char *const[]){"a"}), *b = get(g, (const char *const[]){"b"});
    ferry_metric *cs = get(c, NULL);

    ferry_metric_set(a, 1);
    ferry_metric_set(b, 3);
    ferry_metric_inc(cs);
    ferry_metric_family_zero(g);
    ferry_metric_family_zero(c);
    ferry_metric_family_zero(NULL);
    ferry_metric_set(b, 1); /* b still exists, a went away */
    ASSERT_TEXT(m, "# HELP t_state x\n# TYPE t_state gauge\nt_state{issuer=\"a\"} 0\n"
                   "t_state{issuer=\"b\"} 1\n"
                   "# HELP t_total x\n# TYPE t_total counter\nt_total 1\n");
    ferry_metrics_free(m);
}

/* Fixed-point values saturate instead of wrapping: a gauge add whose n * scale does not fit,
 * and a histogram sum that an infinite (or huge) observation would carry past INT64_MAX. */
Test(metrics, fixed_point_saturates)
{
    ferry_metrics *m = reg();
    static const double bounds[] = {1};
    ferry_metric_family *g = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_GAUGE,
                                        .name = "t_big",
                                        .help = "x",
                                        .scale = 1000,
                                    });
    ferry_metric_family *h = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_HISTOGRAM,
                                        .name = "t_seconds",
                                        .help = "x",
                                        .buckets = bounds,
                                        .n_buckets = 1,
                                    });
    ferry_metric *gs = get(g, NULL), *hs = get(h, NULL);

    ferry_metric_add(gs, INT64_MAX / 10); /* n * scale is past INT64_MAX */
    cr_expect_eq(ferry_metric_value(gs), INT64_MAX);
    ferry_metric_inc(gs);
    cr_expect_eq(ferry_metric_value(gs), INT64_MAX);
    ferry_metric_set_scaled(gs, 0);
    ferry_metric_add(gs, INT64_MIN / 10);
    cr_expect_eq(ferry_metric_value(gs), INT64_MIN);
    ferry_metric_dec(gs);
    cr_expect_eq(ferry_metric_value(gs), INT64_MIN);

    ferry_metric_observe(hs, 2);         /* 2 s */
    ferry_metric_observe(hs, 1.0 / 0.0); /* +Inf: the sum saturates */
    char *t = render(m);
    cr_expect(strstr(t, "\nt_seconds_sum 9223372036.854775807\n"), "%s", t);
    free(t);
    ferry_metric_observe(hs, -1.0 / 0.0); /* and -Inf saturates the other way from there */
    ferry_metric_observe(hs, -1.0 / 0.0);
    t = render(m);
    cr_expect(strstr(t, "\nt_seconds_sum -9223372036.854775808\n"), "%s", t);
    cr_expect(strstr(t, "\nt_seconds_count 4\n"), "%s", t);
    free(t);
    ferry_metrics_free(m);
}

Test(metrics, cardinality_cap)
{
    ferry_metrics *m = reg();
    static const char *const labels[] = {"k"};
    ferry_metric_family *f = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_COUNTER,
                                        .name = "t_capped_total",
                                        .help = "x",
                                        .labels = labels,
                                        .n_labels = 1,
                                        .max_series = 3,
                                    });
    ferry_metric *s = NULL;
    get(f, (const char *const[]){"a"});
    get(f, (const char *const[]){"b"});
    get(f, (const char *const[]){"c"});
    cr_assert_eq(ferry_metric_family_get(f, (const char *const[]){"d"}, &s), -FERRY_EFULL);
    cr_assert_null(s, "nothing written on failure");
    cr_assert_eq(ferry_metric_family_size(f), 3);
    ferry_metric_inc(get(f, (const char *const[]){"b"})); /* existing ones still work */
    char *t = render(m);
    cr_assert_null(strstr(t, "\"d\""), "%s", t);
    cr_assert(strstr(t, "t_capped_total{k=\"b\"} 1\n"), "%s", t);
    free(t);

    /* 1000 distinct values against the default cap of 64 */
    ferry_metric_family *d = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_GAUGE,
                                        .name = "t_default_cap",
                                        .help = "x",
                                        .labels = labels,
                                        .n_labels = 1,
                                    });
    int full = 0;
    for (int i = 0; i < 1000; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        if (ferry_metric_family_get(d, (const char *const[]){v}, &s) == -FERRY_EFULL)
            full++;
    }
    cr_assert_eq(full, 1000 - 64);
    cr_assert_eq(ferry_metric_family_size(d), 64);
    ferry_metrics_free(m);
}

Test(metrics, bad_label_values_are_refused)
{
    ferry_metrics *m = reg();
    static const char *const labels[] = {"a", "b"};
    ferry_metric_family *f = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_COUNTER,
                                        .name = "t_total",
                                        .help = "x",
                                        .labels = labels,
                                        .n_labels = 2,
                                    });
    ferry_metric *s = NULL;
    char big[FERRY_METRICS_MAX_VALUE + 2];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cr_assert_eq(ferry_metric_family_get(f, (const char *const[]){"ok", "\xff"}, &s), -EINVAL);
    cr_assert_eq(ferry_metric_family_get(f, (const char *const[]){"\xc0\xaf", "x"}, &s), -EINVAL);
    cr_assert_eq(ferry_metric_family_get(f, (const char *const[]){"ok", big}, &s), -EINVAL);
    cr_assert_eq(ferry_metric_family_get(f, (const char *const[]){"ok", NULL}, &s), -EINVAL);
    cr_assert_eq(ferry_metric_family_get(f, NULL, &s), -EINVAL);
    big[FERRY_METRICS_MAX_VALUE] = '\0'; /* exactly the limit is fine */
    cr_assert_eq(ferry_metric_family_get(f, (const char *const[]){"ok", big}, &s), 0);
    cr_assert_eq(ferry_metric_family_size(f), 1);
    ferry_metrics_free(m);
}

static int try_add(ferry_metrics *m, const ferry_metric_desc *d, char *err, size_t errlen)
{
    err[0] = '\0';
    return ferry_metrics_add(m, d, NULL, err, errlen);
}

Test(metrics, bad_declarations_are_refused)
{
    ferry_metrics *m = reg();
    char err[256];
    static const double inc[] = {1, 2}, dec[] = {2, 1}, same[] = {1, 1.0000000001};
    static const double inf[] = {1, 1.0 / 0.0};
    static const char *const le[] = {"le"}, *const dunder[] = {"__x"}, *const twice[] = {"a", "a"},
                             *const dash[] = {"a-b"};
    ferry_metric_desc ok = {.type = FERRY_METRIC_COUNTER, .name = "t_ok_total", .help = "x"};

    cr_assert_eq(try_add(m, &ok, err, sizeof(err)), 0);
    cr_assert_eq(try_add(m, &ok, err, sizeof(err)), -FERRY_EDUPLICATE);
    cr_assert(strstr(err, "t_ok_total"), "%s", err);

    struct {
        ferry_metric_desc d;
        const char *why;
    } cases[] = {
        {{.type = FERRY_METRIC_COUNTER, .name = "1abc", .help = "x"}, "metric name"},
        {{.type = FERRY_METRIC_COUNTER, .name = "a b", .help = "x"}, "metric name"},
        {{.type = FERRY_METRIC_COUNTER, .name = "", .help = "x"}, "metric name"},
        {{.type = FERRY_METRIC_COUNTER, .name = NULL, .help = "x"}, "metric name"},
        {{.type = 9, .name = "t_a", .help = "x"}, "type"},
        {{.type = FERRY_METRIC_COUNTER, .name = "t_a", .help = NULL}, "help"},
        {{.type = FERRY_METRIC_COUNTER, .name = "t_a", .help = "\xff"}, "help"},
        {{.type = FERRY_METRIC_COUNTER, .name = "t_a", .help = "x", .labels = dash, .n_labels = 1},
         "label name"},
        {{.type = FERRY_METRIC_COUNTER,
          .name = "t_a",
          .help = "x",
          .labels = dunder,
          .n_labels = 1},
         "label name"},
        {{.type = FERRY_METRIC_COUNTER, .name = "t_a", .help = "x", .labels = twice, .n_labels = 2},
         "twice"},
        {{.type = FERRY_METRIC_HISTOGRAM,
          .name = "t_a",
          .help = "x",
          .labels = le,
          .n_labels = 1,
          .buckets = inc,
          .n_buckets = 2},
         "le"},
        {{.type = FERRY_METRIC_HISTOGRAM, .name = "t_a", .help = "x"}, "bucket"},
        {{.type = FERRY_METRIC_HISTOGRAM,
          .name = "t_a",
          .help = "x",
          .buckets = dec,
          .n_buckets = 2},
         "increase"},
        {{.type = FERRY_METRIC_HISTOGRAM,
          .name = "t_a",
          .help = "x",
          .buckets = same,
          .n_buckets = 2},
         "increase"},
        {{.type = FERRY_METRIC_HISTOGRAM,
          .name = "t_a",
          .help = "x",
          .buckets = inf,
          .n_buckets = 2},
         "finite"},
        {{.type = FERRY_METRIC_HISTOGRAM,
          .name = "t_a",
          .help = "x",
          .buckets = inc,
          .n_buckets = FERRY_METRICS_MAX_BUCKETS + 1},
         "bucket"},
        {{.type = FERRY_METRIC_GAUGE, .name = "t_a", .help = "x", .buckets = inc, .n_buckets = 2},
         "only a histogram"},
        {{.type = FERRY_METRIC_GAUGE, .name = "t_a", .help = "x", .scale = 12}, "power of ten"},
        {{.type = FERRY_METRIC_GAUGE, .name = "t_a", .help = "x", .scale = 10000000000ULL},
         "scale"},
        {{.type = FERRY_METRIC_GAUGE, .name = "t_a", .help = "x", .max_series = 2}, "max_series"},
        {{.type = FERRY_METRIC_GAUGE,
          .name = "t_a",
          .help = "x",
          .labels = twice,
          .n_labels = 1,
          .max_series = FERRY_METRICS_MAX_SERIES + 1},
         "max_series"},
        {{.type = FERRY_METRIC_GAUGE,
          .name = "t_a",
          .help = "x",
          .labels = twice,
          .n_labels = FERRY_METRICS_MAX_LABELS + 1},
         "label"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int r = try_add(m, &cases[i].d, err, sizeof(err));
        cr_assert_eq(r, -EINVAL, "case %zu (%s): %d", i, cases[i].why, r);
        cr_assert(strstr(err, cases[i].why), "case %zu: reason \"%s\" lacks \"%s\"", i, err,
                  cases[i].why);
    }
    ASSERT_TEXT(m, "# HELP t_ok_total x\n# TYPE t_ok_total counter\n");

    /* the family table is bounded too */
    ferry_metrics *many = reg();
    int r = 0;
    for (int i = 0; i <= FERRY_METRICS_MAX_FAMILIES && r == 0; i++) {
        char name[32];
        snprintf(name, sizeof(name), "t_%d", i);
        r = try_add(many,
                    &(ferry_metric_desc){.type = FERRY_METRIC_GAUGE, .name = name, .help = "x"},
                    err, sizeof(err));
        if (i < FERRY_METRICS_MAX_FAMILIES)
            cr_assert_eq(r, 0);
    }
    cr_assert_eq(r, -FERRY_EFULL);
    ferry_metrics_free(many);
    ferry_metrics_free(m);
}

/* ---- concurrency ------------------------------------------------------------------------- */

#define THREADS 8
#define PER_THREAD 100000

typedef struct worker {
    ferry_metric_family *counter, *hist, *labelled;
    ferry_metric *c, *h;
    int id;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        ferry_metric_inc(w->c);
        ferry_metric_observe_scaled(w->h, (i % 4) * 1000); /* 0, 1, 2, 3 us */
        if (i % 1000 == 0) {
            /* every thread also creates and looks up the same 16 series concurrently */
            char v[8];
            ferry_metric *s = NULL;
            snprintf(v, sizeof(v), "%d", (i / 1000) % 16);
            cr_assert_eq(ferry_metric_family_get(w->labelled, (const char *const[]){v}, &s), 0);
            ferry_metric_inc(s);
        }
    }
    return NULL;
}

Test(metrics, concurrent_updates_give_exact_totals)
{
    ferry_metrics *m = reg();
    static const char *const labels[] = {"k"};
    static const double bounds[] = {0.0000005, 0.0000015, 0.0000025};
    ferry_metric_family *c = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_COUNTER,
                                        .name = "t_total",
                                        .help = "x",
                                    });
    ferry_metric_family *h = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_HISTOGRAM,
                                        .name = "t_seconds",
                                        .help = "x",
                                        .buckets = bounds,
                                        .n_buckets = 3,
                                    });
    ferry_metric_family *l = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_COUNTER,
                                        .name = "t_labelled_total",
                                        .help = "x",
                                        .labels = labels,
                                        .n_labels = 1,
                                        .max_series = 16,
                                    });
    pthread_t t[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){.counter = c, .hist = h, .labelled = l, .id = i};
        w[i].c = get(c, NULL);
        w[i].h = get(h, NULL);
        cr_assert_eq(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    /* render while they run: must always be well-formed and cumulative */
    for (int k = 0; k < 20; k++) {
        char *text = render(m);
        cr_assert(strstr(text, "# TYPE t_seconds histogram\n"));
        free(text);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);

    const long long total = (long long)THREADS * PER_THREAD;
    cr_assert_eq(ferry_metric_value(get(c, NULL)), total);
    cr_assert_eq(ferry_metric_value(get(h, NULL)), total);
    cr_assert_eq(ferry_metric_family_size(l), 16, "no series created twice");
    long long labelled = 0;
    for (int k = 0; k < 16; k++) {
        char v[8];
        snprintf(v, sizeof(v), "%d", k);
        labelled += ferry_metric_value(get(l, (const char *const[]){v}));
    }
    cr_assert_eq(labelled, (long long)THREADS * (PER_THREAD / 1000));

    char *text = render(m), want[256];
    /* per thread: 25000 each of 0, 1, 2, 3 us; sum = 8 * 25000 * 6 us = 1.2 s */
    snprintf(want, sizeof(want),
             "t_seconds_bucket{le=\"5e-07\"} %lld\nt_seconds_bucket{le=\"1.5e-06\"} %lld\n"
             "t_seconds_bucket{le=\"2.5e-06\"} %lld\nt_seconds_bucket{le=\"+Inf\"} %lld\n"
             "t_seconds_sum 1.2\nt_seconds_count %lld\n",
             total / 4, total / 2, total * 3 / 4, total, total);
    cr_assert(strstr(text, want), "%s\nwanted:\n%s", text, want);
    free(text);
    ferry_metrics_free(m);
}

/* The cost of recording one request as ferryd does: a counter increment and a histogram
 * observation on series already looked up. Reported, and bounded loosely so that a lock or a
 * lookup sneaking into the path is caught even in a sanitizer build. */
Test(metrics, many_updates_exact)
{
    ferry_metrics *m = reg();
    static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,    0.25,  0.5,    1,     2.5,  5,     10};
    ferry_metric_family *c = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_COUNTER,
                                        .name = "t_total",
                                        .help = "x",
                                    });
    ferry_metric_family *h = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_HISTOGRAM,
                                        .name = "t_seconds",
                                        .help = "x",
                                        .buckets = bounds,
                                        .n_buckets = 14,
                                    });
    ferry_metric *cs = get(c, NULL), *hs = get(h, NULL);
    const int n = 200000;
    char *text = NULL;
    size_t len = 0;

    /* Speed is measured by tests/bench/bench_metrics (make bench), not here. */
    for (int i = 0; i < n; i++) {
        ferry_metric_inc(cs);
        ferry_metric_observe_scaled(hs, (int64_t)(i & 0xfffff) * 1000);
    }
    cr_assert_eq(ferry_metric_value(cs), n);
    cr_assert_eq(ferry_metrics_render(m, &text, &len), 0);
    cr_expect(strstr(text, "t_seconds_count 200000\n"), "%s", text);
    cr_expect(strstr(text, "t_seconds_bucket{le=\"+Inf\"} 200000\n"), "%s", text);
    free(text);
    ferry_metrics_free(m);
}

/* The cap holds exactly when many threads create distinct series at once. */
typedef struct creator {
    ferry_metric_family *f;
    int id, created, full;
} creator;

static void *create_many(void *arg)
{
    creator *c = arg;
    for (int i = 0; i < 100; i++) {
        char v[16];
        ferry_metric *s = NULL;
        snprintf(v, sizeof(v), "%d-%d", c->id, i);
        int r = ferry_metric_family_get(c->f, (const char *const[]){v}, &s);
        if (r == 0) {
            c->created++;
            ferry_metric_inc(s);
        } else if (r == -FERRY_EFULL) {
            c->full++;
        }
    }
    return NULL;
}

Test(metrics, cap_is_exact_under_concurrent_creation)
{
    ferry_metrics *m = reg();
    static const char *const labels[] = {"k"};
    ferry_metric_family *f = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_COUNTER,
                                        .name = "t_total",
                                        .help = "x",
                                        .labels = labels,
                                        .n_labels = 1,
                                        .max_series = 50,
                                    });
    pthread_t t[THREADS];
    creator c[THREADS];
    int created = 0, full = 0;
    for (int i = 0; i < THREADS; i++) {
        c[i] = (creator){.f = f, .id = i};
        cr_assert_eq(pthread_create(&t[i], NULL, create_many, &c[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        created += c[i].created;
        full += c[i].full;
    }
    cr_assert_eq(created, 50);
    cr_assert_eq(full, THREADS * 100 - 50);
    cr_assert_eq(ferry_metric_family_size(f), 50);
    char *text = render(m);
    size_t lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 2 + 50, "HELP, TYPE and 50 samples");
    free(text);
    ferry_metrics_free(m);
}

/* The rendered text is bounded: past FERRY_METRICS_MAX_TEXT the render fails cleanly. */
Test(metrics, render_is_bounded)
{
    ferry_metrics *m = reg();
    static const char *const labels[] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    ferry_metric_family *f = add(m, &(ferry_metric_desc){
                                        .type = FERRY_METRIC_GAUGE,
                                        .name = "t_big",
                                        .help = "x",
                                        .labels = labels,
                                        .n_labels = 8,
                                        .max_series = FERRY_METRICS_MAX_SERIES,
                                    });
    char v[FERRY_METRICS_MAX_VALUE + 1];
    memset(v, 'v', FERRY_METRICS_MAX_VALUE);
    v[FERRY_METRICS_MAX_VALUE] = '\0';
    char *text = NULL;
    for (int i = 0; i < FERRY_METRICS_MAX_SERIES; i++) {
        char first[FERRY_METRICS_MAX_VALUE + 1];
        snprintf(first, sizeof(first), "%d%s", i, v + 8);
        const char *const vals[] = {first, v, v, v, v, v, v, v};
        get(f, vals);
        if (i == 10) {
            cr_assert_eq(ferry_metrics_render(m, &text, NULL), 0, "small is fine");
            free(text);
            text = NULL;
        }
    }
    /* 4096 series x 8 values x 256 bytes: over 8 MiB */
    cr_assert_eq(ferry_metrics_render(m, &text, NULL), -FERRY_ETOOBIG);
    cr_assert_null(text, "nothing handed out on failure");
    ferry_metrics_free(m);
}
