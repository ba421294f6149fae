/* ferryd/stats.c - ferryd's metrics and the /metrics endpoint (see stats.h). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "basic/macro.h"
#include "ferry/metrics.h"
#include "ferryd/ferryd.h"
#include "ferryd/stats.h"

/* The endpoint label: the known paths, then "other" for everything else (404s included). */
static const char *const endpoints[] = {
    "/v1/token",
    "/.well-known/openid-configuration",
    "/.well-known/jwks.json",
    "/healthz",
    "/readyz",
    "/metrics",
    "other",
};
#define N_ENDPOINTS (sizeof(endpoints) / sizeof(endpoints[0]))
static const size_t endpoint_len[N_ENDPOINTS] = {
    sizeof("/v1/token") - 1,
    sizeof("/.well-known/openid-configuration") - 1,
    sizeof("/.well-known/jwks.json") - 1,
    sizeof("/healthz") - 1,
    sizeof("/readyz") - 1,
    sizeof("/metrics") - 1,
    sizeof("other") - 1,
};
#define EP_TOKEN 0
#define EP_OTHER (N_ENDPOINTS - 1)

/* Status label: 100..599 as itself, anything else (0: libmicrohttpd answered by itself, or the
 * connection ended before an answer) as "0". */
#define STATUS_SLOTS 600

/* Outcomes: the exchange's error names (ferry_exchange_error_name) except slow_down, which the
 * token route reports as "rate_limited" (for both limiters), then "rate_limited", then "other"
 * for a label this table does not know (never created from the label itself). */
#define N_OUTCOMES (FERRY_EXCHANGE_ERROR_MAX + 1)

/* Request duration buckets, seconds: sub-millisecond to 10 s. */
static const double duration_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,    0.25,  0.5,    1,     2.5,  5,     10};

#define MAX_ISSUER_SERIES 64

struct ferryd_stats {
    ferry_metrics *reg;
    pthread_mutex_t scrape_lock; /* one refresh + render at a time: mirrored counters never
                                    step back because two scrapes crossed */

    /* per request */
    ferry_metric_family *requests; /* {endpoint, status} */
    _Atomic(ferry_metric *) request_series[N_ENDPOINTS][STATUS_SLOTS];
    ferry_metric *duration[N_ENDPOINTS];
    ferry_metric *in_flight;
    const char *outcome_name[N_OUTCOMES];
    ferry_metric *decisions[N_OUTCOMES];
    ferry_metric *dropped; /* a series refused by a family's cap */

    /* read at scrape time */
    ferry_metric *start_time, *build_info, *policies, *audit_seq, *key_age;
    ferry_metric *issuers, *cached_keys, *replay_entries, *replay_capacity;
    ferry_metric *t_jwks, *t_jwks_fail, *t_disc, *t_disc_fail, *t_suppressed, *t_stale;
    ferry_metric *verify_accepted, *verify_refused, *reloads, *reload_failures;
    ferry_metric *deferred, *deferred_refused, *deferred_waiting, *deferred_running;
    ferry_metric *sc_hits, *sc_misses, *sc_calls, *sc_errors, *sc_waits, *sc_evictions,
        *sc_expirations, *sc_entries, *sc_bytes;
    ferry_metric *refusals[FERRY_REASON_MAX];
    ferry_metric_family *i_jwks, *i_jwks_fail, *i_disc, *i_disc_fail, *i_keys, *i_state;
    ferry_metric *rl_tracked[2], *rl_max[2], *rl_refused[2], *rl_evicted[2]; /* address, identity */
};

static const char *const limiters[] = {"address", "identity"};

typedef struct family_def {
    ferry_metric_family **fam; /* where to keep the family, or NULL */
    ferry_metric **series;     /* the one series of a family without labels, or NULL */
    ferry_metric_type type;
    const char *name, *help;
    const char *labels[2];
    size_t max_series;
} family_def;

static int declare(ferryd_stats *s, const family_def *d, char *errbuf, size_t errlen)
{
    ferry_metric_family *f = NULL;
    size_t n_labels = d->labels[1] ? 2 : d->labels[0] ? 1 : 0;
    ferry_metric_desc desc = {
        .type = d->type,
        .name = d->name,
        .help = d->help,
        .labels = d->labels,
        .n_labels = n_labels,
        .max_series = d->max_series,
        .buckets = d->type == FERRY_METRIC_HISTOGRAM ? duration_buckets : NULL,
        .n_buckets = d->type == FERRY_METRIC_HISTOGRAM ? ARRAY_SIZE(duration_buckets) : 0,
    };
    int r = ferry_metrics_add(s->reg, &desc, &f, errbuf, errlen);
    if (r < 0)
        return r;
    if (d->fam)
        *d->fam = f;
    if (d->series) {
        r = ferry_metric_family_get(f, NULL, d->series);
        if (r < 0)
            snprintf(errbuf, errlen, "%s: %s", d->name, r == -ENOMEM ? "out of memory" : "series");
    }
    return r;
}

int ferryd_stats_new(ferryd_stats **ret, char *errbuf, size_t errlen)
{
    ferryd_stats *s = calloc(1, sizeof(*s));
    ferry_metric_family *duration = NULL, *decisions = NULL, *refusals = NULL, *build_info = NULL,
                        *rl_tracked = NULL, *rl_max = NULL, *rl_refused = NULL, *rl_evicted = NULL;
    int r;

    if (!s)
        return -ENOMEM;
    pthread_mutex_init(&s->scrape_lock, NULL);
    for (size_t e = 0; e < N_ENDPOINTS; e++)
        for (size_t k = 0; k < STATUS_SLOTS; k++)
            atomic_init(&s->request_series[e][k], NULL);
    r = ferry_metrics_new(&s->reg);
    if (r < 0)
        goto fail;

    const family_def defs[] = {
        {&s->requests,
         NULL,
         FERRY_METRIC_COUNTER,
         "ferryd_http_requests_total",
         "HTTP requests answered, by endpoint (known paths, else other) and status (0: answered "
         "by the HTTP library itself or not at all).",
         {"endpoint", "status"},
         N_ENDPOINTS * 32},
        {&duration,
         NULL,
         FERRY_METRIC_HISTOGRAM,
         "ferryd_http_request_duration_seconds",
         "Time from the request line to the end of the answer, by endpoint.",
         {"endpoint", NULL},
         N_ENDPOINTS},
        {NULL,
         &s->in_flight,
         FERRY_METRIC_GAUGE,
         "ferryd_http_requests_in_flight",
         "Requests started and not yet complete.",
         {NULL, NULL},
         0},
        {&decisions,
         NULL,
         FERRY_METRIC_COUNTER,
         "ferryd_exchange_decisions_total",
         "Token exchange decisions on /v1/token by outcome (ok or the RFC 6749 error code, or "
         "rate_limited).",
         {"outcome", NULL},
         N_OUTCOMES},
        {NULL,
         &s->dropped,
         FERRY_METRIC_COUNTER,
         "ferryd_metrics_series_dropped_total",
         "Updates not recorded because a metric reached its cap on label combinations.",
         {NULL, NULL},
         0},
        {NULL,
         &s->start_time,
         FERRY_METRIC_GAUGE,
         "ferryd_start_time_seconds",
         "Start time of the process since the Unix epoch in seconds.",
         {NULL, NULL},
         0},
        {&build_info,
         NULL,
         FERRY_METRIC_GAUGE,
         "ferryd_build_info",
         "Always 1; the version label names the build.",
         {"version", NULL},
         1},
        {NULL,
         &s->policies,
         FERRY_METRIC_GAUGE,
         "ferryd_policies_loaded",
         "Policies in the set now deciding.",
         {NULL, NULL},
         0},
        {NULL,
         &s->audit_seq,
         FERRY_METRIC_GAUGE,
         "ferryd_audit_log_last_seq",
         "Sequence number of the last audit record written.",
         {NULL, NULL},
         0},
        {NULL,
         &s->key_age,
         FERRY_METRIC_GAUGE,
         "ferryd_signing_key_age_seconds",
         "Age of the active signing key in seconds.",
         {NULL, NULL},
         0},
        {NULL,
         &s->issuers,
         FERRY_METRIC_GAUGE,
         "ferryd_oidc_issuers",
         "Trusted issuers configured.",
         {NULL, NULL},
         0},
        {NULL,
         &s->cached_keys,
         FERRY_METRIC_GAUGE,
         "ferryd_oidc_cached_keys",
         "Keys in the usable key sets of the configured issuers.",
         {NULL, NULL},
         0},
        {NULL,
         &s->replay_entries,
         FERRY_METRIC_GAUGE,
         "ferryd_replay_cache_entries",
         "(issuer, jti) entries held by the replay cache.",
         {NULL, NULL},
         0},
        {NULL,
         &s->replay_capacity,
         FERRY_METRIC_GAUGE,
         "ferryd_replay_cache_capacity",
         "Maximum entries of the replay cache.",
         {NULL, NULL},
         0},
        {NULL,
         &s->t_jwks,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_jwks_fetches_total",
         "Key-set fetches of all issuers (every attempt).",
         {NULL, NULL},
         0},
        {NULL,
         &s->t_jwks_fail,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_jwks_fetch_failures_total",
         "Key-set fetches of all issuers that failed.",
         {NULL, NULL},
         0},
        {NULL,
         &s->t_disc,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_discovery_fetches_total",
         "Discovery document fetches of all issuers (every attempt).",
         {NULL, NULL},
         0},
        {NULL,
         &s->t_disc_fail,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_discovery_fetch_failures_total",
         "Discovery document fetches of all issuers that failed.",
         {NULL, NULL},
         0},
        {NULL,
         &s->t_suppressed,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_refresh_suppressed_total",
         "Key-set refreshes held back by the refresh cooldown.",
         {NULL, NULL},
         0},
        {NULL,
         &s->t_stale,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_stale_serves_total",
         "Verifications served by a key set past its lifetime, inside the stale window.",
         {NULL, NULL},
         0},
        {NULL,
         &s->deferred,
         FERRY_METRIC_COUNTER,
         "ferryd_http_deferred_total",
         "Requests handed from an event thread to a worker thread because they had to wait for "
         "I/O (a key-set fetch, a TOTP step-up, an audit record synced per decision).",
         {NULL, NULL},
         0},
        {NULL,
         &s->deferred_refused,
         FERRY_METRIC_COUNTER,
         "ferryd_http_deferred_refused_total",
         "Requests that had to wait for I/O, answered 503 because the worker queue was full.",
         {NULL, NULL},
         0},
        {NULL,
         &s->deferred_waiting,
         FERRY_METRIC_GAUGE,
         "ferryd_http_deferred_waiting",
         "Deferred requests waiting for a worker thread.",
         {NULL, NULL},
         0},
        {NULL,
         &s->deferred_running,
         FERRY_METRIC_GAUGE,
         "ferryd_http_deferred_running",
         "Deferred requests a worker thread is running.",
         {NULL, NULL},
         0},
        {NULL,
         &s->sc_hits,
         FERRY_METRIC_COUNTER,
         "ferryd_secrets_cache_hits_total",
         "Secret fetches answered from the cache.",
         {NULL, NULL},
         0},
        {NULL,
         &s->sc_misses,
         FERRY_METRIC_COUNTER,
         "ferryd_secrets_cache_misses_total",
         "Secret fetches not answered from the cache (waiters of an in-flight fetch included).",
         {NULL, NULL},
         0},
        {NULL,
         &s->sc_calls,
         FERRY_METRIC_COUNTER,
         "ferryd_secrets_backend_calls_total",
         "Backend fetches started (one per reference while in flight: single-flight).",
         {NULL, NULL},
         0},
        {NULL,
         &s->sc_errors,
         FERRY_METRIC_COUNTER,
         "ferryd_secrets_backend_errors_total",
         "Backend fetches that failed.",
         {NULL, NULL},
         0},
        {NULL,
         &s->sc_waits,
         FERRY_METRIC_COUNTER,
         "ferryd_secrets_inflight_waits_total",
         "Secret fetches that waited for another request's backend call.",
         {NULL, NULL},
         0},
        {NULL,
         &s->sc_evictions,
         FERRY_METRIC_COUNTER,
         "ferryd_secrets_cache_evictions_total",
         "Cached secrets dropped (and wiped) to stay within the cache's bounds.",
         {NULL, NULL},
         0},
        {NULL,
         &s->sc_expirations,
         FERRY_METRIC_COUNTER,
         "ferryd_secrets_cache_expirations_total",
         "Cached secrets dropped (and wiped) when found past their TTL.",
         {NULL, NULL},
         0},
        {NULL,
         &s->sc_entries,
         FERRY_METRIC_GAUGE,
         "ferryd_secrets_cache_entries",
         "Secrets cached now.",
         {NULL, NULL},
         0},
        {NULL,
         &s->sc_bytes,
         FERRY_METRIC_GAUGE,
         "ferryd_secrets_cache_bytes",
         "Locked memory held by cached secrets (whole pages).",
         {NULL, NULL},
         0},
        {NULL,
         &s->verify_accepted,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_tokens_accepted_total",
         "Tokens the trust store accepted.",
         {NULL, NULL},
         0},
        {NULL,
         &s->verify_refused,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_tokens_refused_total",
         "Tokens the trust store refused.",
         {NULL, NULL},
         0},
        {&refusals,
         NULL,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_refusals_total",
         "Tokens the trust store refused, by reason.",
         {"reason", NULL},
         FERRY_REASON_MAX},
        {NULL,
         &s->reloads,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_config_reloads_total",
         "Issuer configuration reloads that took effect.",
         {NULL, NULL},
         0},
        {NULL,
         &s->reload_failures,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_config_reload_failures_total",
         "Issuer configuration reloads that failed and changed nothing.",
         {NULL, NULL},
         0},
        {&s->i_jwks,
         NULL,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_issuer_jwks_fetches_total",
         "Key-set fetches per configured issuer.",
         {"issuer", NULL},
         MAX_ISSUER_SERIES},
        {&s->i_jwks_fail,
         NULL,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_issuer_jwks_fetch_failures_total",
         "Key-set fetches that failed, per configured issuer.",
         {"issuer", NULL},
         MAX_ISSUER_SERIES},
        {&s->i_disc,
         NULL,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_issuer_discovery_fetches_total",
         "Discovery document fetches per configured issuer.",
         {"issuer", NULL},
         MAX_ISSUER_SERIES},
        {&s->i_disc_fail,
         NULL,
         FERRY_METRIC_COUNTER,
         "ferryd_oidc_issuer_discovery_fetch_failures_total",
         "Discovery document fetches that failed, per configured issuer.",
         {"issuer", NULL},
         MAX_ISSUER_SERIES},
        {&s->i_keys,
         NULL,
         FERRY_METRIC_GAUGE,
         "ferryd_oidc_issuer_cached_keys",
         "Keys in the usable key set, per configured issuer.",
         {"issuer", NULL},
         MAX_ISSUER_SERIES},
        {&s->i_state,
         NULL,
         FERRY_METRIC_GAUGE,
         "ferryd_oidc_issuer_keyset_state",
         "1 for the state the issuer's key set is in (static, unloaded, fresh, stale, failed), "
         "0 for the others.",
         {"issuer", "state"},
         MAX_ISSUER_SERIES * 5},
        {&rl_tracked,
         NULL,
         FERRY_METRIC_GAUGE,
         "ferryd_ratelimit_tracked_keys",
         "Keys (client addresses or identities) the rate limiter tracks now.",
         {"limiter", NULL},
         2},
        {&rl_max,
         NULL,
         FERRY_METRIC_GAUGE,
         "ferryd_ratelimit_max_keys",
         "Keys the rate limiter tracks at most.",
         {"limiter", NULL},
         2},
        {&rl_refused,
         NULL,
         FERRY_METRIC_COUNTER,
         "ferryd_ratelimit_refused_total",
         "Requests the rate limiter refused.",
         {"limiter", NULL},
         2},
        {&rl_evicted,
         NULL,
         FERRY_METRIC_COUNTER,
         "ferryd_ratelimit_evicted_total",
         "Partly used buckets evicted for a new key because the table was full.",
         {"limiter", NULL},
         2},
    };
    for (size_t i = 0; i < ARRAY_SIZE(defs); i++) {
        r = declare(s, &defs[i], errbuf, errlen);
        if (r < 0)
            goto fail;
    }

    /* The fixed series, so that each shows (as 0) from the start. */
    for (size_t e = 0; e < N_ENDPOINTS; e++) {
        r = ferry_metric_family_get(duration, (const char *const[]){endpoints[e]}, &s->duration[e]);
        if (r < 0)
            goto fail_series;
    }
    for (size_t o = 0, e = 0; o < N_OUTCOMES; o++, e++) {
        if (e == FERRY_EXCHANGE_SLOW_DOWN)
            e++;
        const char *name = e < FERRY_EXCHANGE_ERROR_MAX
                               ? ferry_exchange_error_name((ferry_exchange_error)e)
                           : o == N_OUTCOMES - 2 ? "rate_limited"
                                                 : "other";
        s->outcome_name[o] = name;
        r = ferry_metric_family_get(decisions, (const char *const[]){name}, &s->decisions[o]);
        if (r < 0)
            goto fail_series;
    }
    for (size_t k = 1; k < FERRY_REASON_MAX; k++) {
        r = ferry_metric_family_get(
            refusals, (const char *const[]){ferry_reason_name((ferry_reason)k)}, &s->refusals[k]);
        if (r < 0)
            goto fail_series;
    }
    for (size_t l = 0; l < 2; l++) {
        const char *const v[] = {limiters[l]};
        if ((r = ferry_metric_family_get(rl_tracked, v, &s->rl_tracked[l])) < 0 ||
            (r = ferry_metric_family_get(rl_max, v, &s->rl_max[l])) < 0 ||
            (r = ferry_metric_family_get(rl_refused, v, &s->rl_refused[l])) < 0 ||
            (r = ferry_metric_family_get(rl_evicted, v, &s->rl_evicted[l])) < 0)
            goto fail_series;
    }
    r = ferry_metric_family_get(build_info, (const char *const[]){PACKAGE_VERSION}, &s->build_info);
    if (r < 0)
        goto fail_series;
    ferry_metric_set_scaled(s->start_time, (int64_t)time(NULL));
    ferry_metric_set_scaled(s->build_info, 1);
    *ret = s;
    return 0;
fail_series:
    snprintf(errbuf, errlen, "metrics: a fixed series could not be registered: %s",
             r == -ENOMEM ? "out of memory" : "refused");
fail:
    if (r == -ENOMEM)
        snprintf(errbuf, errlen, "metrics: out of memory");
    ferryd_stats_free(s);
    return r;
}

void ferryd_stats_free(ferryd_stats *s)
{
    if (!s)
        return;
    ferry_metrics_free(s->reg);
    pthread_mutex_destroy(&s->scrape_lock);
    free(s);
}

/* ---- per request ----------------------------------------------------------------------------- */

static size_t endpoint_index(const char *path)
{
    /* length first: most paths are then told apart without comparing a byte */
    size_t n = strlen(path);
    for (size_t e = 0; e < EP_OTHER; e++)
        if (endpoint_len[e] == n && memcmp(path, endpoints[e], n) == 0)
            return e;
    return EP_OTHER;
}

/* Index of the outcome label: the static strings the routes use are the very pointers in the
 * table, so a pointer comparison finds them; strcmp only for a label from elsewhere. The last
 * entry, "other", catches what is not in the table. */
static size_t outcome_index(const ferryd_stats *s, const char *outcome)
{
    for (size_t o = 0; o < N_OUTCOMES - 1; o++)
        if (s->outcome_name[o] == outcome)
            return o;
    for (size_t o = 0; o < N_OUTCOMES - 1; o++)
        if (strcmp(s->outcome_name[o], outcome) == 0)
            return o;
    return N_OUTCOMES - 1;
}

static ferry_metric *request_series(ferryd_stats *s, size_t ep, int status)
{
    size_t slot = status >= 100 && status < STATUS_SLOTS ? (size_t)status : 0;
    ferry_metric *m = atomic_load_explicit(&s->request_series[ep][slot], memory_order_acquire);
    if (m)
        return m;
    char num[8];
    snprintf(num, sizeof(num), "%zu", slot);
    if (ferry_metric_family_get(s->requests, (const char *const[]){endpoints[ep], num}, &m) < 0) {
        ferry_metric_inc(s->dropped);
        return NULL;
    }
    atomic_store_explicit(&s->request_series[ep][slot], m, memory_order_release);
    return m;
}

static void on_started(void *userdata)
{
    ferryd_stats *s = userdata;
    ferry_metric_inc(s->in_flight);
}

static void on_finished(void *userdata, const ferryd_request_done *done)
{
    ferryd_stats *s = userdata;
    size_t ep = endpoint_index(done->path);

    /* The request counter last: a scraper that sees a request counted also sees its decision
     * and its duration (x86-64 keeps store order; elsewhere it is a matter of nanoseconds). */
    if (ep == EP_TOKEN && done->outcome)
        ferry_metric_inc(s->decisions[outcome_index(s, done->outcome)]);
    ferry_metric_observe_scaled(s->duration[ep], done->duration_ns);
    ferry_metric_inc(request_series(s, ep, done->status));
    ferry_metric_dec(s->in_flight);
}

ferryd_observer ferryd_stats_observer(ferryd_stats *s)
{
    return (ferryd_observer){.started = on_started, .finished = on_finished, .userdata = s};
}

/* ---- scrape ---------------------------------------------------------------------------------- */

static void set_issuer(ferryd_stats *s, ferry_metric_family *f, const char *const *values,
                       uint64_t v)
{
    ferry_metric *m = NULL;
    if (ferry_metric_family_get(f, values, &m) < 0) {
        ferry_metric_inc(s->dropped);
        return;
    }
    ferry_metric_set_scaled(m, (int64_t)v);
}

static int on_issuer(const ferry_oidc_issuer_info *info, void *userdata)
{
    ferryd_stats *s = userdata;
    const char *const iss[] = {info->issuer};
    set_issuer(s, s->i_jwks, iss, info->counters.jwks_fetches);
    set_issuer(s, s->i_jwks_fail, iss, info->counters.jwks_failures);
    set_issuer(s, s->i_disc, iss, info->counters.discovery_fetches);
    set_issuer(s, s->i_disc_fail, iss, info->counters.discovery_failures);
    set_issuer(s, s->i_keys, iss, info->keys);
    for (int st = FERRY_KEYSET_STATIC; st <= FERRY_KEYSET_FAILED; st++)
        set_issuer(
            s, s->i_state,
            (const char *const[]){info->issuer, ferry_keyset_state_name((ferry_keyset_state)st)},
            info->state == (ferry_keyset_state)st);
    return 0;
}

static void refresh(ferryd_stats *s, ferryd *d)
{
    ferry_oidc_stats os;

    if (d->oidc && ferry_oidc_get_stats(d->oidc, &os) == 0) {
        ferry_metric_set_scaled(s->issuers, (int64_t)os.issuers);
        ferry_metric_set_scaled(s->cached_keys, (int64_t)os.cached_keys);
        ferry_metric_set_scaled(s->replay_entries, (int64_t)os.replay_entries);
        ferry_metric_set_scaled(s->replay_capacity, (int64_t)os.replay_capacity);
        ferry_metric_set_scaled(s->t_jwks, (int64_t)os.totals.jwks_fetches);
        ferry_metric_set_scaled(s->t_jwks_fail, (int64_t)os.totals.jwks_failures);
        ferry_metric_set_scaled(s->t_disc, (int64_t)os.totals.discovery_fetches);
        ferry_metric_set_scaled(s->t_disc_fail, (int64_t)os.totals.discovery_failures);
        ferry_metric_set_scaled(s->t_suppressed, (int64_t)os.totals.refresh_suppressed);
        ferry_metric_set_scaled(s->t_stale, (int64_t)os.totals.stale_serves);
        ferry_metric_set_scaled(s->verify_accepted, (int64_t)os.totals.accepted);
        ferry_metric_set_scaled(s->verify_refused, (int64_t)os.totals.refused);
        ferry_metric_set_scaled(s->reloads, (int64_t)os.config_reloads);
        ferry_metric_set_scaled(s->reload_failures, (int64_t)os.config_reload_failures);
        for (size_t k = 1; k < FERRY_REASON_MAX; k++)
            ferry_metric_set_scaled(s->refusals[k], (int64_t)os.refused_by_reason[k]);
        /* An issuer removed by a reload keeps its series (counters stay as they were), but
         * its key count and state read 0, so an alert on state="failed" stops firing. */
        ferry_metric_family_zero(s->i_keys);
        ferry_metric_family_zero(s->i_state);
        (void)ferry_oidc_foreach_issuer(d->oidc, on_issuer, s);
    }
    if (d->policies) {
        ferry_policy_set *set = ferry_policy_store_get(d->policies);
        ferry_metric_set_scaled(s->policies, set ? (int64_t)ferry_policy_set_count(set) : 0);
        ferry_policy_set_unref(set);
    }
    for (size_t l = 0; l < 2; l++) {
        ferry_ratelimit_stats rs;
        if (ferry_ratelimit_get_stats(l == 0 ? d->per_address : d->per_identity, &rs) == 0) {
            ferry_metric_set_scaled(s->rl_tracked[l], (int64_t)rs.tracked);
            ferry_metric_set_scaled(s->rl_max[l], (int64_t)rs.max_keys);
            ferry_metric_set_scaled(s->rl_refused[l], (int64_t)rs.refused);
            ferry_metric_set_scaled(s->rl_evicted[l], (int64_t)rs.evicted);
        }
    }
    {
        ferryd_httpd_stats hs;
        ferryd_httpd_get_stats(atomic_load(&d->httpd), &hs);
        ferry_metric_set_scaled(s->deferred, (int64_t)hs.deferred);
        ferry_metric_set_scaled(s->deferred_refused, (int64_t)hs.deferred_refused);
        ferry_metric_set_scaled(s->deferred_waiting, (int64_t)hs.waiting);
        ferry_metric_set_scaled(s->deferred_running, (int64_t)hs.running);
    }
    if (d->secrets) {
        ferry_secrets_stats ss;
        ferry_secrets_get_stats(d->secrets, &ss);
        ferry_metric_set_scaled(s->sc_hits, (int64_t)ss.hits);
        ferry_metric_set_scaled(s->sc_misses, (int64_t)ss.misses);
        ferry_metric_set_scaled(s->sc_calls, (int64_t)ss.backend_calls);
        ferry_metric_set_scaled(s->sc_errors, (int64_t)ss.backend_errors);
        ferry_metric_set_scaled(s->sc_waits, (int64_t)ss.inflight_waits);
        ferry_metric_set_scaled(s->sc_evictions, (int64_t)ss.evictions);
        ferry_metric_set_scaled(s->sc_expirations, (int64_t)ss.expirations);
        ferry_metric_set_scaled(s->sc_entries, (int64_t)ss.entries);
        ferry_metric_set_scaled(s->sc_bytes, (int64_t)ss.bytes);
    }
    if (d->log)
        ferry_metric_set_scaled(s->audit_seq, (int64_t)ferry_auditlog_last_seq(d->log));
    if (d->mint) {
        ferry_mint_key_info *keys = NULL;
        size_t n = 0;
        if (ferry_mint_list_keys(d->mint, &keys, &n) == 0) {
            for (size_t i = 0; i < n; i++)
                if (strcmp(keys[i].state, "active") == 0)
                    ferry_metric_set_scaled(s->key_age, (int64_t)time(NULL) - keys[i].created);
            free(keys);
        }
    }
}

int ferryd_stats_render(ferryd_stats *s, ferryd *d, char **ret_text, size_t *ret_len)
{
    int r;
    if (!s || !d)
        return -EINVAL;
    pthread_mutex_lock(&s->scrape_lock);
    refresh(s, d);
    r = ferry_metrics_render(s->reg, ret_text, ret_len);
    pthread_mutex_unlock(&s->scrape_lock);
    return r;
}

static void answer(ferryd_response *resp, int status, const char *text, const char *reason)
{
    resp->status = status;
    resp->content_type = "text/plain; charset=utf-8";
    resp->body = strdup(text);
    resp->body_len = resp->body ? strlen(resp->body) : 0;
    snprintf(resp->reason, sizeof(resp->reason), "%s", reason);
}

void ferryd_route_metrics(ferryd *d, const ferryd_request *req, ferryd_response *resp)
{
    char *text = NULL;
    size_t len = 0;
    int r;

    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        answer(resp, 405, "method not allowed\n", "method not allowed");
        resp->allow = "GET, HEAD";
        return;
    }
    if (!d->stats) {
        answer(resp, 503, "metrics not available\n", "no metrics registry");
        return;
    }
    r = ferryd_stats_render(d->stats, d, &text, &len);
    if (r < 0) {
        answer(resp, 500, "metrics could not be rendered\n", "metrics render failed");
        return;
    }
    resp->status = 200;
    resp->content_type = FERRY_METRICS_CONTENT_TYPE;
    resp->body = text;
    resp->body_len = len;
}
