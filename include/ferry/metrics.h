/* ferry/metrics.h - counters, gauges and histograms in the Prometheus text format (0.0.4).
 *
 * A registry (ferry_metrics) holds metric families declared up front: a name, a help text, a
 * fixed list of label names and a cap on how many label-value combinations (series) the family
 * may ever hold. A series is found or created by its label values (ferry_metric_family_get)
 * and then updated without locks: counters and histogram buckets are atomic 64-bit integers,
 * gauges and histogram sums are atomic fixed-point integers (value * scale) that saturate
 * instead of wrapping, so an update is one or two atomic operations. The cap is the defence against unbounded label cardinality:
 * once a family holds max_series series, a new combination is refused with -FERRY_EFULL and
 * the caller decides where to count it (ferryd counts it under a pre-registered "other").
 *
 * Rendering (ferry_metrics_render) writes every family in registration order, its series in
 * creation order, with "# HELP" / "# TYPE" lines, escaped help text and label values, and for
 * a histogram the cumulative _bucket series (le bounds ascending, then "+Inf"), _sum and
 * _count; _count is the +Inf bucket by construction.
 *
 * Thread safety: every function may be called from any thread at any time, except
 * ferry_metrics_free, which must not race with anything else on the registry. Design note:
 * docs/internals/metrics.md.
 */
#ifndef FERRY_METRICS_H
#define FERRY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FERRY_METRICS_MAX_FAMILIES 256
#define FERRY_METRICS_MAX_LABELS 8
#define FERRY_METRICS_MAX_BUCKETS 32
#define FERRY_METRICS_MAX_SERIES 4096     /* per family */
#define FERRY_METRICS_MAX_NAME 128        /* metric and label names, bytes */
#define FERRY_METRICS_MAX_HELP 1024       /* bytes */
#define FERRY_METRICS_MAX_VALUE 256       /* one label value, bytes */
#define FERRY_METRICS_MAX_TEXT (8u << 20) /* rendered exposition, bytes */

typedef enum ferry_metric_type {
    FERRY_METRIC_COUNTER = 1, /* monotonic unsigned integer */
    FERRY_METRIC_GAUGE,       /* signed fixed-point value */
    FERRY_METRIC_HISTOGRAM,   /* bucket counts and a fixed-point sum */
} ferry_metric_type;

/* Declaration of one family. Every string and array is copied by ferry_metrics_add. */
typedef struct ferry_metric_desc {
    ferry_metric_type type;
    const char *name;          /* [a-zA-Z_:][a-zA-Z0-9_:]*; histogram: no _bucket/_sum/_count
                                  suffix clash is checked, pick a base name */
    const char *help;          /* one line; '\' and newlines are escaped on output */
    const char *const *labels; /* n_labels label names, [a-zA-Z_][a-zA-Z0-9_]*, not "__"-
                                  prefixed, distinct, and not "le" on a histogram */
    size_t n_labels;           /* at most FERRY_METRICS_MAX_LABELS */
    size_t max_series;         /* cap on label-value combinations, 1..FERRY_METRICS_MAX_SERIES;
                                  0 = 1 without labels, 64 with labels */
    const double *buckets;     /* histogram only: finite upper bounds, strictly increasing
                                  (+Inf is implied and must not be listed) */
    size_t n_buckets;          /* histogram: 1..FERRY_METRICS_MAX_BUCKETS */
    uint64_t scale;            /* fixed-point units per 1 for gauges and histogram sums and
                                  bounds (a power of ten, at most 10^9); 0 = 1 for a gauge,
                                  10^9 for a histogram (nanoseconds when observing seconds).
                                  Ignored for counters. */
} ferry_metric_desc;

typedef struct ferry_metrics ferry_metrics;
typedef struct ferry_metric_family ferry_metric_family;
typedef struct ferry_metric ferry_metric; /* one series: a family and its label values */

/* New empty registry in *ret (ferry_metrics_free). Returns 0 or -ENOMEM. */
int ferry_metrics_new(ferry_metrics **ret);
/* Free the registry, its families and series (every pointer they handed out). Accepts NULL. */
void ferry_metrics_free(ferry_metrics *m);

/* Declare a family. *ret_family (optional) is borrowed: it lives as long as the registry.
 * Returns 0; -EINVAL with a one-line reason in errbuf (bad name, label, bucket list, scale or
 * cap); -FERRY_EDUPLICATE (a family of that name exists); -FERRY_EFULL (FERRY_METRICS_MAX_
 * FAMILIES reached); -ENOMEM. */
int ferry_metrics_add(ferry_metrics *m, const ferry_metric_desc *desc,
                      ferry_metric_family **ret_family, char *errbuf, size_t errlen);

/* The series of family f with these label values (one per label name, in declaration order;
 * NULL when the family has no labels), created on first use. *ret is borrowed (lives as long as
 * the registry); keep it to update without a lookup. Values must be strict UTF-8 of at most
 * FERRY_METRICS_MAX_VALUE bytes without NUL. Lookup takes no lock; creation takes the family's
 * mutex. Returns 0; -EINVAL (a bad value); -FERRY_EFULL (the family holds max_series series and
 * this is a new combination); -ENOMEM. */
int ferry_metric_family_get(ferry_metric_family *f, const char *const *values, ferry_metric **ret);

/* How many series the family holds now. */
size_t ferry_metric_family_size(const ferry_metric_family *f);

/* Set every series of a gauge family to 0 (nothing for other types). For gauges that mirror a
 * set of things that can shrink (per-issuer state): zero them all, then set those that still
 * exist, so a thing that went away reads 0 instead of its last value. Series are never removed
 * (their pointers stay valid for the registry's lifetime). */
void ferry_metric_family_zero(ferry_metric_family *f);

/* ---- updates: lock-free, no allocation, NULL s ignored ------------------------------------ */

/* Counter: +1. Gauge: +1. Ignored on a histogram. */
void ferry_metric_inc(ferry_metric *s);
/* Gauge: -1. Ignored on counters and histograms. */
void ferry_metric_dec(ferry_metric *s);
/* Counter: +n (n < 0 ignored: counters never go down). Gauge: +n. Ignored on a histogram. */
void ferry_metric_add(ferry_metric *s, int64_t n);
/* Gauge: set to v (rounded to 1/scale; NaN ignored, infinities saturate). Counter: set to v
 * when v is a whole number >= 0, for mirroring a count kept elsewhere (the caller keeps it
 * monotonic). Ignored on a histogram. */
void ferry_metric_set(ferry_metric *s, double v);
/* Gauge: set to v units of 1/scale (v itself when scale is 1). Counter: set to v when v >= 0
 * (mirroring, as above). Ignored on a histogram. */
void ferry_metric_set_scaled(ferry_metric *s, int64_t v);
/* Histogram: count v in the first bucket whose bound is >= v (a value equal to a bound goes
 * into that bucket; past the last bound into +Inf) and add v to the sum. NaN ignored. */
void ferry_metric_observe(ferry_metric *s, double v);
/* Histogram: the same with v already in units of 1/scale (nanoseconds with the default scale
 * when the unit is seconds): no floating point at all. */
void ferry_metric_observe_scaled(ferry_metric *s, int64_t v);

/* ---- reading ------------------------------------------------------------------------------ */

/* Counter value, gauge value in units of 1/scale, or histogram observation count. */
int64_t ferry_metric_value(const ferry_metric *s);

/* Render every family in the text exposition format 0.0.4 into a new NUL-terminated string
 * *ret_text (free()), its length in *ret_len (optional). A family without series renders its
 * HELP and TYPE lines only. Returns 0, -FERRY_ETOOBIG (over FERRY_METRICS_MAX_TEXT) or
 * -ENOMEM. Concurrent updates are allowed; each number is read once, so a histogram's buckets
 * are always cumulative and its _count equals its +Inf bucket. */
int ferry_metrics_render(ferry_metrics *m, char **ret_text, size_t *ret_len);

/* The Content-Type of the rendered text. Static. */
#define FERRY_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#ifdef __cplusplus
}
#endif
#endif
