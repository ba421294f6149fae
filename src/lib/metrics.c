/* lib/metrics.c - counters, gauges and histograms in the Prometheus text format (see
 * include/ferry/metrics.h and docs/internals/metrics.md).
 *
 * Data: a registry holds up to FERRY_METRICS_MAX_FAMILIES family pointers; a family holds an
 * array of max_series series pointers allocated when it is declared. Both arrays only grow, and
 * an element is written completely before the count that covers it is published with a release
 * store, so readers (lookups, the renderer) scan them with one acquire load and no lock. Adding
 * a family or a series takes a mutex only to serialise the writers.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic/errbuf.h"
#include "basic/buf.h"
#include "basic/macro.h"
#include "basic/utf8.h"
#include "ferry/error.h"
#include "ferry/metrics.h"

#define DEFAULT_SERIES_WITH_LABELS 64
#define HISTOGRAM_DEFAULT_SCALE 1000000000ULL
#define MAX_SCALE_DIGITS 9

struct ferry_metric {
    ferry_metric_family *family;
    uint64_t hash;
    char **values;             /* n_labels strings, in one allocation after the struct */
    _Atomic uint64_t count;    /* counter value */
    _Atomic int64_t value;     /* gauge value or histogram sum, in units of 1/scale */
    _Atomic uint64_t bucket[]; /* histogram: n_buckets + 1 (the last is +Inf), not cumulative */
};

struct ferry_metric_family {
    ferry_metric_type type;
    char *name;
    char *help;
    char **labels;
    size_t n_labels;
    size_t max_series;
    double *bounds;         /* as declared, for the le label */
    int64_t *bounds_scaled; /* compared with observations */
    size_t n_buckets;
    uint64_t scale;
    unsigned scale_digits; /* scale = 10^scale_digits */
    pthread_mutex_t lock;  /* serialises series creation */
    ferry_metric **series; /* max_series slots */
    atomic_size_t n_series;
};

struct ferry_metrics {
    pthread_mutex_t lock; /* serialises ferry_metrics_add */
    ferry_metric_family *families[FERRY_METRICS_MAX_FAMILIES];
    atomic_size_t n_families;
};

/* ---- registry -------------------------------------------------------------------------------- */

FERRY_EXPORT int ferry_metrics_new(ferry_metrics **ret)
{
    ferry_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    pthread_mutex_init(&m->lock, NULL);
    atomic_init(&m->n_families, 0);
    *ret = m;
    return 0;
}

static void family_free(ferry_metric_family *f)
{
    if (!f)
        return;
    size_t n = atomic_load(&f->n_series);
    for (size_t i = 0; i < n; i++)
        free(f->series[i]);
    free(f->series);
    for (size_t i = 0; f->labels && i < f->n_labels; i++)
        free(f->labels[i]);
    free(f->labels);
    free(f->bounds);
    free(f->bounds_scaled);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

FERRY_EXPORT void ferry_metrics_free(ferry_metrics *m)
{
    if (!m)
        return;
    size_t n = atomic_load(&m->n_families);
    for (size_t i = 0; i < n; i++)
        family_free(m->families[i]);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static bool name_ok(const char *s, bool colon)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > FERRY_METRICS_MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alpha =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

#define bad(errbuf, errlen, ...) ferry_errbuf_set(errbuf, errlen, -EINVAL, __VA_ARGS__)

/* x * scale rounded, saturated to int64; NaN is the caller's to refuse. */
static int64_t to_scaled(double x, uint64_t scale)
{
    double v = x * (double)scale;
    if (v >= 9.2e18)
        return INT64_MAX;
    if (v <= -9.2e18)
        return INT64_MIN;
    /* rounded half away from zero; no libm (the library does not link it) */
    return v >= 0 ? (int64_t)(v + 0.5) : -(int64_t)(-v + 0.5);
}

static int check_desc(const ferry_metric_desc *d, uint64_t *ret_scale, unsigned *ret_digits,
                      char *errbuf, size_t errlen)
{
    const char *name = d->name;
    uint64_t scale;
    unsigned digits = 0;

    if (!name_ok(name, true))
        return bad(errbuf, errlen,
                   "metric name \"%.*s\": want [a-zA-Z_:][a-zA-Z0-9_:]*, at most "
                   "%d bytes",
                   160, name ? name : "", FERRY_METRICS_MAX_NAME);
    if (d->type != FERRY_METRIC_COUNTER && d->type != FERRY_METRIC_GAUGE &&
        d->type != FERRY_METRIC_HISTOGRAM)
        return bad(errbuf, errlen, "%s: unknown metric type %d", name, (int)d->type);
    if (!d->help || strlen(d->help) > FERRY_METRICS_MAX_HELP ||
        !ferry_utf8_valid(d->help, strlen(d->help)))
        return bad(errbuf, errlen, "%s: help text missing, not UTF-8 or over %d bytes", name,
                   FERRY_METRICS_MAX_HELP);
    if (d->n_labels > FERRY_METRICS_MAX_LABELS || (d->n_labels && !d->labels))
        return bad(errbuf, errlen, "%s: at most %d label names", name, FERRY_METRICS_MAX_LABELS);
    for (size_t i = 0; i < d->n_labels; i++) {
        const char *l = d->labels[i];
        if (!name_ok(l, false) || strncmp(l, "__", 2) == 0)
            return bad(errbuf, errlen,
                       "%s: label name \"%.*s\": want [a-zA-Z_][a-zA-Z0-9_]*, not "
                       "starting with __",
                       name, 160, l ? l : "");
        if (d->type == FERRY_METRIC_HISTOGRAM && strcmp(l, "le") == 0)
            return bad(errbuf, errlen, "%s: a histogram cannot have a label named le", name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(l, d->labels[j]) == 0)
                return bad(errbuf, errlen, "%s: label name %s twice", name, l);
    }
    if (d->max_series > FERRY_METRICS_MAX_SERIES || (d->n_labels == 0 && d->max_series > 1))
        return bad(errbuf, errlen, "%s: max_series %zu out of range (1..%d, 1 without labels)",
                   name, d->max_series, FERRY_METRICS_MAX_SERIES);

    scale = d->scale ? d->scale : d->type == FERRY_METRIC_HISTOGRAM ? HISTOGRAM_DEFAULT_SCALE : 1;
    for (uint64_t s = scale; s > 1; s /= 10, digits++)
        if (s % 10 != 0)
            return bad(errbuf, errlen, "%s: scale %" PRIu64 " is not a power of ten", name, scale);
    if (digits > MAX_SCALE_DIGITS)
        return bad(errbuf, errlen, "%s: scale over 10^%d", name, MAX_SCALE_DIGITS);

    if (d->type == FERRY_METRIC_HISTOGRAM) {
        if (d->n_buckets == 0 || d->n_buckets > FERRY_METRICS_MAX_BUCKETS || !d->buckets)
            return bad(errbuf, errlen, "%s: a histogram needs 1..%d bucket bounds", name,
                       FERRY_METRICS_MAX_BUCKETS);
        for (size_t i = 0; i < d->n_buckets; i++) {
            double b = d->buckets[i];
            if (!isfinite(b) || (b < 0 ? -b : b) * (double)scale >= 4.6e18)
                return bad(errbuf, errlen,
                           "%s: bucket bound %zu is not finite or too large "
                           "for the scale",
                           name, i);
            if (i > 0 && to_scaled(b, scale) <= to_scaled(d->buckets[i - 1], scale))
                return bad(errbuf, errlen,
                           "%s: bucket bounds must increase by at least 1/scale "
                           "(bound %zu)",
                           name, i);
        }
    } else if (d->n_buckets || d->buckets) {
        return bad(errbuf, errlen, "%s: only a histogram has buckets", name);
    }
    *ret_scale = scale;
    *ret_digits = digits;
    return 0;
}

FERRY_EXPORT int ferry_metrics_add(ferry_metrics *m, const ferry_metric_desc *desc,
                                   ferry_metric_family **ret_family, char *errbuf, size_t errlen)
{
    ferry_metric_family *f = NULL;
    uint64_t scale = 1;
    unsigned digits = 0;
    int r;

    if (!m || !desc)
        return bad(errbuf, errlen, "no registry or description");
    r = check_desc(desc, &scale, &digits, errbuf, errlen);
    if (r < 0)
        return r;

    f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    pthread_mutex_init(&f->lock, NULL);
    atomic_init(&f->n_series, 0);
    f->type = desc->type;
    f->n_labels = desc->n_labels;
    f->max_series = desc->max_series ? desc->max_series
                    : desc->n_labels ? DEFAULT_SERIES_WITH_LABELS
                                     : 1;
    f->scale = scale;
    f->scale_digits = digits;
    f->name = strdup(desc->name);
    f->help = strdup(desc->help);
    f->series = calloc(f->max_series, sizeof(*f->series));
    f->labels = calloc(desc->n_labels ? desc->n_labels : 1, sizeof(*f->labels));
    if (!f->name || !f->help || !f->series || !f->labels)
        goto oom;
    for (size_t i = 0; i < desc->n_labels; i++)
        if (!(f->labels[i] = strdup(desc->labels[i])))
            goto oom;
    if (desc->type == FERRY_METRIC_HISTOGRAM) {
        f->n_buckets = desc->n_buckets;
        f->bounds = calloc(f->n_buckets, sizeof(*f->bounds));
        f->bounds_scaled = calloc(f->n_buckets, sizeof(*f->bounds_scaled));
        if (!f->bounds || !f->bounds_scaled)
            goto oom;
        for (size_t i = 0; i < f->n_buckets; i++) {
            f->bounds[i] = desc->buckets[i];
            f->bounds_scaled[i] = to_scaled(desc->buckets[i], scale);
        }
    }

    pthread_mutex_lock(&m->lock);
    size_t n = atomic_load_explicit(&m->n_families, memory_order_relaxed);
    r = 0;
    for (size_t i = 0; i < n && r == 0; i++)
        if (strcmp(m->families[i]->name, f->name) == 0)
            r = -FERRY_EDUPLICATE;
    if (r == 0 && n == FERRY_METRICS_MAX_FAMILIES)
        r = -FERRY_EFULL;
    if (r == 0) {
        m->families[n] = f;
        atomic_store_explicit(&m->n_families, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&m->lock);
    if (r < 0) {
        if (r == -FERRY_EFULL)
            (void)bad(errbuf, errlen, "more than %d metric families", FERRY_METRICS_MAX_FAMILIES);
        else
            (void)bad(errbuf, errlen, "metric %s declared twice", f->name);
        family_free(f);
        return r;
    }
    if (ret_family)
        *ret_family = f;
    return 0;
oom:
    family_free(f);
    return -ENOMEM;
}

/* ---- series ---------------------------------------------------------------------------------- */

static uint64_t values_hash(const char *const *values, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++)
            h = (h ^ *p) * 0x100000001b3ULL;
        h = (h ^ 0xff) * 0x100000001b3ULL; /* 0xff never occurs in UTF-8: a separator */
    }
    return h;
}

static ferry_metric *find(ferry_metric_family *f, size_t n, uint64_t h, const char *const *values)
{
    for (size_t i = 0; i < n; i++) {
        ferry_metric *s = f->series[i];
        if (s->hash != h)
            continue;
        size_t k = 0;
        while (k < f->n_labels && strcmp(s->values[k], values[k]) == 0)
            k++;
        if (k == f->n_labels)
            return s;
    }
    return NULL;
}

FERRY_EXPORT int ferry_metric_family_get(ferry_metric_family *f, const char *const *values,
                                         ferry_metric **ret)
{
    size_t lens[FERRY_METRICS_MAX_LABELS], total = 0, n;
    ferry_metric *s;
    uint64_t h;

    if (!f || !ret || (f->n_labels && !values))
        return -EINVAL;
    for (size_t i = 0; i < f->n_labels; i++)
        if (!values[i])
            return -EINVAL;
    h = values_hash(values, f->n_labels);
    n = atomic_load_explicit(&f->n_series, memory_order_acquire);
    s = find(f, n, h, values);
    if (s) {
        *ret = s;
        return 0;
    }
    for (size_t i = 0; i < f->n_labels; i++) {
        lens[i] = strlen(values[i]);
        if (lens[i] > FERRY_METRICS_MAX_VALUE || !ferry_utf8_valid(values[i], lens[i]))
            return -EINVAL;
        total += lens[i] + 1;
    }

    pthread_mutex_lock(&f->lock);
    size_t n2 = atomic_load_explicit(&f->n_series, memory_order_relaxed);
    s = find(f, n2, h, values); /* another thread may have made it meanwhile */
    if (s) {
        pthread_mutex_unlock(&f->lock);
        *ret = s;
        return 0;
    }
    if (n2 == f->max_series) {
        pthread_mutex_unlock(&f->lock);
        return -FERRY_EFULL;
    }
    size_t nb = f->type == FERRY_METRIC_HISTOGRAM ? f->n_buckets + 1 : 0;
    size_t head = sizeof(*s) + nb * sizeof(s->bucket[0]);
    head = (head + _Alignof(char *) - 1) / _Alignof(char *) * _Alignof(char *);
    s = calloc(1, head + f->n_labels * sizeof(char *) + total);
    if (!s) {
        pthread_mutex_unlock(&f->lock);
        return -ENOMEM;
    }
    s->family = f;
    s->hash = h;
    s->values = (char **)((char *)s + head);
    char *p = (char *)(s->values + f->n_labels);
    for (size_t i = 0; i < f->n_labels; i++) {
        memcpy(p, values[i], lens[i] + 1);
        s->values[i] = p;
        p += lens[i] + 1;
    }
    atomic_init(&s->count, 0);
    atomic_init(&s->value, 0);
    for (size_t i = 0; i < nb; i++)
        atomic_init(&s->bucket[i], 0);
    f->series[n2] = s;
    atomic_store_explicit(&f->n_series, n2 + 1, memory_order_release);
    pthread_mutex_unlock(&f->lock);
    *ret = s;
    return 0;
}

FERRY_EXPORT size_t ferry_metric_family_size(const ferry_metric_family *f)
{
    return f ? atomic_load_explicit(&f->n_series, memory_order_acquire) : 0;
}

FERRY_EXPORT void ferry_metric_family_zero(ferry_metric_family *f)
{
    if (!f || f->type != FERRY_METRIC_GAUGE)
        return;
    size_t n = atomic_load_explicit(&f->n_series, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        atomic_store_explicit(&f->series[i]->value, 0, memory_order_relaxed);
}

/* ---- updates --------------------------------------------------------------------------------- */

/* *a += d, saturated to the int64 range (an atomic add would wrap). */
static void add_saturated(_Atomic int64_t *a, int64_t d)
{
    int64_t cur = atomic_load_explicit(a, memory_order_relaxed), next;
    do {
        if (__builtin_add_overflow(cur, d, &next))
            next = d > 0 ? INT64_MAX : INT64_MIN;
    } while (!atomic_compare_exchange_weak_explicit(a, &cur, next, memory_order_relaxed,
                                                    memory_order_relaxed));
}

FERRY_EXPORT void ferry_metric_inc(ferry_metric *s)
{
    ferry_metric_add(s, 1);
}

FERRY_EXPORT void ferry_metric_dec(ferry_metric *s)
{
    if (s && s->family->type == FERRY_METRIC_GAUGE)
        add_saturated(&s->value, -(int64_t)s->family->scale);
}

FERRY_EXPORT void ferry_metric_add(ferry_metric *s, int64_t n)
{
    if (!s)
        return;
    if (s->family->type == FERRY_METRIC_COUNTER && n >= 0)
        atomic_fetch_add_explicit(&s->count, (uint64_t)n, memory_order_relaxed);
    else if (s->family->type == FERRY_METRIC_GAUGE) {
        int64_t d;
        if (__builtin_mul_overflow(n, (int64_t)s->family->scale, &d))
            d = n > 0 ? INT64_MAX : INT64_MIN;
        add_saturated(&s->value, d);
    }
}

FERRY_EXPORT void ferry_metric_set(ferry_metric *s, double v)
{
    if (!s || isnan(v))
        return;
    if (s->family->type == FERRY_METRIC_GAUGE)
        atomic_store_explicit(&s->value, to_scaled(v, s->family->scale), memory_order_relaxed);
    else if (s->family->type == FERRY_METRIC_COUNTER && v >= 0 && v < 1.8e19 &&
             v == (double)(uint64_t)v)
        atomic_store_explicit(&s->count, (uint64_t)v, memory_order_relaxed);
}

FERRY_EXPORT void ferry_metric_set_scaled(ferry_metric *s, int64_t v)
{
    if (!s)
        return;
    if (s->family->type == FERRY_METRIC_GAUGE)
        atomic_store_explicit(&s->value, v, memory_order_relaxed);
    else if (s->family->type == FERRY_METRIC_COUNTER && v >= 0)
        atomic_store_explicit(&s->count, (uint64_t)v, memory_order_relaxed);
}

FERRY_EXPORT void ferry_metric_observe_scaled(ferry_metric *s, int64_t v)
{
    if (!s || s->family->type != FERRY_METRIC_HISTOGRAM)
        return;
    const ferry_metric_family *f = s->family;
    size_t lo = 0, hi = f->n_buckets; /* first bound >= v, or n_buckets (+Inf) */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (f->bounds_scaled[mid] >= v)
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&s->bucket[lo], 1, memory_order_relaxed);
    add_saturated(&s->value, v);
}

FERRY_EXPORT void ferry_metric_observe(ferry_metric *s, double v)
{
    if (!s || isnan(v) || s->family->type != FERRY_METRIC_HISTOGRAM)
        return;
    ferry_metric_observe_scaled(s, to_scaled(v, s->family->scale));
}

FERRY_EXPORT int64_t ferry_metric_value(const ferry_metric *s)
{
    if (!s)
        return 0;
    switch (s->family->type) {
    case FERRY_METRIC_COUNTER:
        return (int64_t)atomic_load_explicit(&s->count, memory_order_relaxed);
    case FERRY_METRIC_GAUGE:
        return atomic_load_explicit(&s->value, memory_order_relaxed);
    case FERRY_METRIC_HISTOGRAM: {
        uint64_t n = 0;
        for (size_t i = 0; i <= s->family->n_buckets; i++)
            n += atomic_load_explicit(&s->bucket[i], memory_order_relaxed);
        return (int64_t)n;
    }
    }
    return 0;
}

/* ---- rendering ------------------------------------------------------------------------------- */

static int put(ferry_buf *b, const char *s)
{
    return ferry_buf_append(b, s, strlen(s));
}

/* Escape for a HELP line (label == false: '\' and newline) or a label value (also '"'). */
static int put_escaped(ferry_buf *b, const char *s, bool label)
{
    int r = 0;
    const char *run = s;
    for (const char *p = s;; p++) {
        const char *rep = NULL;
        if (*p == '\\')
            rep = "\\\\";
        else if (*p == '\n')
            rep = "\\n";
        else if (*p == '"' && label)
            rep = "\\\"";
        else if (*p != '\0')
            continue;
        if (p > run && (r = ferry_buf_append(b, run, (size_t)(p - run))) < 0)
            return r;
        if (!rep)
            return 0;
        if ((r = put(b, rep)) < 0)
            return r;
        run = p + 1;
    }
}

static int put_u64(ferry_buf *b, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%" PRIu64, v);
    return put(b, num);
}

/* v / 10^digits as an exact decimal without trailing zeros ("1.25", "-0.5", "3"). */
static int put_fixed(ferry_buf *b, int64_t v, unsigned digits)
{
    char num[48];
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, scale = 1;
    for (unsigned i = 0; i < digits; i++)
        scale *= 10;
    int n = snprintf(num, sizeof(num), "%s%" PRIu64, v < 0 ? "-" : "", mag / scale);
    if (digits && mag % scale) {
        char frac[16];
        snprintf(frac, sizeof(frac), "%0*" PRIu64, (int)digits, mag % scale);
        size_t fl = strlen(frac);
        while (fl > 0 && frac[fl - 1] == '0')
            frac[--fl] = '\0';
        snprintf(num + n, sizeof(num) - (size_t)n, ".%s", frac);
    }
    return put(b, num);
}

/* A bound as Go's strconv.FormatFloat(v, 'g', -1, 64) writes it, which Prometheus' own clients
 * use: the fewest significant digits that read back as the same double, in plain notation
 * unless the exponent is below -4 or at least 6 ("0.0005", "2.5", "10", "5e-07", "1e+06"). */
static int put_double(ferry_buf *b, double v)
{
    char num[40];
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(num, sizeof(num), "%.*g", prec, v);
        if (strtod(num, NULL) == v)
            break;
    }
    snprintf(num, sizeof(num), "%.*g", prec > 6 ? prec : 6, v);
    return put(b, num);
}

/* {a="x",b="y"[,le="..."]} - nothing at all when there are no labels and no le. */
static int put_labels(ferry_buf *b, const ferry_metric *s, const char *le_text)
{
    const ferry_metric_family *f = s->family;
    int r = 0;
    if (f->n_labels == 0 && !le_text)
        return 0;
    if ((r = put(b, "{")) < 0)
        return r;
    for (size_t i = 0; i < f->n_labels; i++) {
        if ((i && (r = put(b, ",")) < 0) || (r = put(b, f->labels[i])) < 0 ||
            (r = put(b, "=\"")) < 0 || (r = put_escaped(b, s->values[i], true)) < 0 ||
            (r = put(b, "\"")) < 0)
            return r;
    }
    if (le_text) {
        if ((f->n_labels && (r = put(b, ",")) < 0) || (r = put(b, "le=\"")) < 0 ||
            (r = put(b, le_text)) < 0 || (r = put(b, "\"")) < 0)
            return r;
    }
    return put(b, "}");
}

static int put_sample_start(ferry_buf *b, const ferry_metric *s, const char *suffix,
                            const char *le_text)
{
    int r;
    if ((r = put(b, s->family->name)) < 0 || (r = put(b, suffix)) < 0 ||
        (r = put_labels(b, s, le_text)) < 0)
        return r;
    return put(b, " ");
}

static int render_histogram(ferry_buf *b, const ferry_metric *s)
{
    const ferry_metric_family *f = s->family;
    uint64_t cum = 0;
    int r;

    for (size_t i = 0; i <= f->n_buckets; i++) {
        char le[40];
        cum += atomic_load_explicit(&s->bucket[i], memory_order_relaxed);
        if (i < f->n_buckets) {
            ferry_buf t;
            ferry_buf_init(&t, sizeof(le) - 1, false);
            r = put_double(&t, f->bounds[i]);
            snprintf(le, sizeof(le), "%s", r == 0 && t.data ? t.data : "0");
            ferry_buf_release(&t);
            if (r < 0)
                return r;
        } else {
            snprintf(le, sizeof(le), "+Inf");
        }
        if ((r = put_sample_start(b, s, "_bucket", le)) < 0 || (r = put_u64(b, cum)) < 0 ||
            (r = put(b, "\n")) < 0)
            return r;
    }
    if ((r = put_sample_start(b, s, "_sum", NULL)) < 0 ||
        (r = put_fixed(b, atomic_load_explicit(&s->value, memory_order_relaxed), f->scale_digits)) <
            0 ||
        (r = put(b, "\n")) < 0 || (r = put_sample_start(b, s, "_count", NULL)) < 0 ||
        (r = put_u64(b, cum)) < 0)
        return r;
    return put(b, "\n");
}

static int render_family(ferry_buf *b, const ferry_metric_family *f)
{
    static const char *const type_name[] = {
        [FERRY_METRIC_COUNTER] = "counter",
        [FERRY_METRIC_GAUGE] = "gauge",
        [FERRY_METRIC_HISTOGRAM] = "histogram",
    };
    size_t n = atomic_load_explicit(&f->n_series, memory_order_acquire);
    int r;

    if ((r = put(b, "# HELP ")) < 0 || (r = put(b, f->name)) < 0 || (r = put(b, " ")) < 0 ||
        (r = put_escaped(b, f->help, false)) < 0 || (r = put(b, "\n# TYPE ")) < 0 ||
        (r = put(b, f->name)) < 0 || (r = put(b, " ")) < 0 ||
        (r = put(b, type_name[f->type])) < 0 || (r = put(b, "\n")) < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        const ferry_metric *s = f->series[i];
        switch (f->type) {
        case FERRY_METRIC_COUNTER:
            if ((r = put_sample_start(b, s, "", NULL)) < 0 ||
                (r = put_u64(b, atomic_load_explicit(&s->count, memory_order_relaxed))) < 0)
                return r;
            break;
        case FERRY_METRIC_GAUGE:
            if ((r = put_sample_start(b, s, "", NULL)) < 0 ||
                (r = put_fixed(b, atomic_load_explicit(&s->value, memory_order_relaxed),
                               f->scale_digits)) < 0)
                return r;
            break;
        case FERRY_METRIC_HISTOGRAM:
            if ((r = render_histogram(b, s)) < 0)
                return r;
            continue;
        }
        if ((r = put(b, "\n")) < 0)
            return r;
    }
    return 0;
}

FERRY_EXPORT int ferry_metrics_render(ferry_metrics *m, char **ret_text, size_t *ret_len)
{
    ferry_buf b;
    size_t n, len = 0;
    char *text;
    int r = 0;

    if (!m || !ret_text)
        return -EINVAL;
    ferry_buf_init(&b, FERRY_METRICS_MAX_TEXT, false);
    n = atomic_load_explicit(&m->n_families, memory_order_acquire);
    for (size_t i = 0; i < n && r == 0; i++)
        r = render_family(&b, m->families[i]);
    if (r == 0 && !b.data)
        r = ferry_buf_append(&b, "", 0); /* an empty registry renders "" */
    if (r < 0) {
        ferry_buf_release(&b);
        return r == -E2BIG ? -FERRY_ETOOBIG : r;
    }
    text = ferry_buf_steal(&b, &len);
    *ret_text = text;
    if (ret_len)
        *ret_len = len;
    return 0;
}
