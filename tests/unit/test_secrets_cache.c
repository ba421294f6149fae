/* Unit tests of the secrets cache and single-flight in ferry_secrets_fetch (a counting fake
 * backend stands in for the file backend; the clock is injected). */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ferry/error.h"
#include "ferry/secrets.h"
#include "lib/secrets/secrets-internal.h"

typedef struct fake {
    atomic_uint calls;
    unsigned delay_ms; /* each fetch takes this long */
    int fail;          /* fetch returns this error when non-zero */
    size_t len;        /* value length (0: the reference's name) */
    uint32_t ttl_hint;
} fake;

static int fake_open(const json_t *conf, const ferry_secrets_env *env, void **ret, char *e,
                     size_t n)
{
    (void)conf, (void)env, (void)ret, (void)e, (void)n;
    return -EINVAL;
}

static int fake_fetch(void *state, void *ctx, const ferry_secret_ref *ref, ferry_secret_value **ret,
                      char *errbuf, size_t errlen)
{
    fake *f = state;
    ferry_secret_value *v;
    size_t len = f->len ? f->len : strlen(ref->name);
    (void)ctx;
    atomic_fetch_add(&f->calls, 1);
    if (f->delay_ms)
        usleep(f->delay_ms * 1000);
    if (f->fail) {
        snprintf(errbuf, errlen, "backend unreachable");
        return f->fail;
    }
    cr_assert_eq(ferry_secret_value_new(len, &v), 0);
    for (size_t i = 0; i < len; i++)
        v->data[i] = f->len ? (unsigned char)('a' + i % 26) : (unsigned char)ref->name[i];
    snprintf(v->version, sizeof(v->version), "v%u", atomic_load(&f->calls));
    v->ttl_hint = f->ttl_hint;
    *ret = v;
    return 0;
}

static void fake_close(void *state)
{
    (void)state;
}

static const ferry_secret_backend_ops fake_ops = {
    .name = "file",
    .id = FERRY_SECRET_FILE,
    .open = fake_open,
    .fetch = fake_fetch,
    .close = fake_close,
};

static int64_t clock_now;
static int64_t test_clock(void *u)
{
    (void)u;
    return clock_now;
}

static ferry_secrets *make(const char *conf_json, fake *f, uint32_t ttl)
{
    ferry_secrets_env env = {.clock_ms = test_clock};
    ferry_secrets *s = NULL;
    json_t *conf = conf_json ? json_loads(conf_json, 0, NULL) : NULL;
    char err[256];
    cr_assert_eq(ferry_secrets_new(conf, &env, &s, err, sizeof(err)), 0, "%s", err);
    json_decref(conf);
    cr_assert_eq(ferry_secrets_set_backend(s, &fake_ops, f, ttl), 0);
    clock_now = 1000000;
    return s;
}

static void fetch_ok(ferry_secrets *s, const char *ref, const char *want)
{
    ferry_secret_value *v = NULL;
    char err[256];
    cr_assert_eq(ferry_secrets_fetch(s, ref, NULL, &v, err, sizeof(err)), 0, "%s: %s", ref, err);
    cr_assert_eq(v->len, strlen(want));
    cr_assert_eq(memcmp(v->data, want, v->len), 0);
    ferry_secret_value_free(v);
}

Test(secrets_cache, hit_miss_and_expiry)
{
    fake f = {0};
    ferry_secrets *s = make(NULL, &f, 300);
    ferry_secrets_stats st;

    fetch_ok(s, "file:team-a/db", "team-a/db");
    fetch_ok(s, "file:team-a/db", "team-a/db");
    cr_assert_eq(atomic_load(&f.calls), 1);
    clock_now += 299999;
    fetch_ok(s, "file:team-a/db", "team-a/db");
    cr_assert_eq(atomic_load(&f.calls), 1);
    clock_now += 1; /* 300 s after the fetch: expired */
    fetch_ok(s, "file:team-a/db", "team-a/db");
    cr_assert_eq(atomic_load(&f.calls), 2);
    ferry_secrets_get_stats(s, &st);
    cr_assert_eq(st.hits, 2);
    cr_assert_eq(st.misses, 2);
    cr_assert_eq(st.backend_calls, 2);
    cr_assert_eq(st.expirations, 1);
    cr_assert_eq(st.entries, 1);
    cr_assert_gt(st.bytes, 0);

    /* The backend's hint shortens the TTL. */
    f.ttl_hint = 10;
    fetch_ok(s, "file:b", "b");
    clock_now += 9999;
    fetch_ok(s, "file:b", "b");
    cr_assert_eq(atomic_load(&f.calls), 3);
    clock_now += 1;
    fetch_ok(s, "file:b", "b");
    cr_assert_eq(atomic_load(&f.calls), 4);
    ferry_secrets_free(s);
}

Test(secrets_cache, ttl_zero_never_caches)
{
    fake f = {0};
    ferry_secrets *s = make(NULL, &f, 0);
    ferry_secrets_stats st;
    for (int i = 0; i < 3; i++)
        fetch_ok(s, "file:x", "x");
    cr_assert_eq(atomic_load(&f.calls), 3);
    ferry_secrets_get_stats(s, &st);
    cr_assert_eq(st.entries, 0);
    cr_assert_eq(st.hits, 0);
    ferry_secrets_free(s);
}

Test(secrets_cache, copies_are_the_callers)
{
    fake f = {0};
    ferry_secrets *s = make(NULL, &f, 300);
    ferry_secret_value *a = NULL, *b = NULL;
    char err[256];

    cr_assert_eq(ferry_secrets_fetch(s, "file:abc", NULL, &a, err, sizeof(err)), 0);
    cr_assert_eq(ferry_secrets_fetch(s, "file:abc", NULL, &b, err, sizeof(err)), 0);
    cr_assert_neq(a->data, b->data);
    cr_assert_str_eq(a->version, "v1");
    cr_assert_str_eq(b->version, "v1");
    memset(a->data, 'Z', a->len);
    ferry_secret_value_free(a);
    cr_assert_eq(memcmp(b->data, "abc", 3), 0);
    ferry_secret_value_free(b);
    fetch_ok(s, "file:abc", "abc");
    cr_assert_eq(atomic_load(&f.calls), 1);
    ferry_secrets_free(s);
}

Test(secrets_cache, eviction_by_count_is_lru)
{
    fake f = {0};
    ferry_secrets *s = make("{\"cache\":{\"max_entries\":2}}", &f, 300);
    ferry_secrets_stats st;

    fetch_ok(s, "file:a", "a");
    fetch_ok(s, "file:b", "b");
    fetch_ok(s, "file:a", "a"); /* a is now the most recent */
    fetch_ok(s, "file:c", "c"); /* evicts b */
    cr_assert_eq(atomic_load(&f.calls), 3);
    fetch_ok(s, "file:a", "a");
    cr_assert_eq(atomic_load(&f.calls), 3);
    fetch_ok(s, "file:b", "b"); /* fetched again, evicts c */
    cr_assert_eq(atomic_load(&f.calls), 4);
    ferry_secrets_get_stats(s, &st);
    cr_assert_eq(st.evictions, 2);
    cr_assert_eq(st.entries, 2);
    cr_assert_eq(st.max_entries, 2);
    ferry_secrets_free(s);
}

Test(secrets_cache, eviction_by_bytes)
{
    fake f = {.len = 100};
    long page = sysconf(_SC_PAGESIZE);
    char conf[128];
    ferry_secrets *s;
    ferry_secrets_stats st;
    ferry_secret_value *v = NULL;
    char err[256];

    snprintf(conf, sizeof(conf), "{\"cache\":{\"max_bytes\":%ld}}", 2 * page);
    s = make(conf, &f, 300);
    for (int i = 0; i < 3; i++) {
        char ref[32];
        snprintf(ref, sizeof(ref), "file:k%d", i);
        cr_assert_eq(ferry_secrets_fetch(s, ref, NULL, &v, err, sizeof(err)), 0);
        ferry_secret_value_free(v);
    }
    ferry_secrets_get_stats(s, &st);
    cr_assert_eq(st.entries, 2);
    cr_assert_eq(st.bytes, (size_t)(2 * page));
    cr_assert_eq(st.evictions, 1);
    /* A value larger than the whole cache is returned but not cached (nothing evicted). */
    f.len = (size_t)(2 * page) + 1;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(ferry_secrets_fetch(s, "file:big", NULL, &v, err, sizeof(err)), 0);
        cr_assert_eq(v->len, f.len);
        ferry_secret_value_free(v);
    }
    cr_assert_eq(atomic_load(&f.calls), 5);
    ferry_secrets_get_stats(s, &st);
    cr_assert_eq(st.entries, 2);
    cr_assert_eq(st.evictions, 1);
    ferry_secrets_free(s);
}

typedef struct worker {
    ferry_secrets *s;
    pthread_barrier_t *bar;
    int rc;
    char err[256];
    bool value_ok;
} worker;

static void *run_worker(void *p)
{
    worker *w = p;
    ferry_secret_value *v = NULL;
    pthread_barrier_wait(w->bar);
    w->rc = ferry_secrets_fetch(w->s, "file:team-a/stampede", NULL, &v, w->err, sizeof(w->err));
    w->value_ok = v && v->len == 15 && memcmp(v->data, "team-a/stampede", 15) == 0;
    ferry_secret_value_free(v);
    return NULL;
}

static void stampede(ferry_secrets *s, worker *w, size_t n)
{
    pthread_t t[64];
    pthread_barrier_t bar;
    cr_assert_leq(n, 64);
    pthread_barrier_init(&bar, NULL, (unsigned)n);
    for (size_t i = 0; i < n; i++) {
        w[i] = (worker){.s = s, .bar = &bar};
        cr_assert_eq(pthread_create(&t[i], NULL, run_worker, &w[i]), 0);
    }
    for (size_t i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&bar);
}

Test(secrets_cache, single_flight_64_threads_one_call)
{
    fake f = {.delay_ms = 300};
    ferry_secrets *s = make(NULL, &f, 300);
    ferry_secrets_stats st;
    worker w[64];

    stampede(s, w, 64);
    for (size_t i = 0; i < 64; i++) {
        cr_assert_eq(w[i].rc, 0, "%zu: %s", i, w[i].err);
        cr_assert(w[i].value_ok, "%zu", i);
    }
    cr_assert_eq(atomic_load(&f.calls), 1);
    ferry_secrets_get_stats(s, &st);
    cr_assert_eq(st.backend_calls, 1);
    cr_assert_eq(st.inflight_waits + st.hits, 63);
    cr_assert_gt(st.inflight_waits, 0);
    ferry_secrets_free(s);
}

Test(secrets_cache, single_flight_shares_a_failure_and_does_not_cache_it)
{
    fake f = {.delay_ms = 300, .fail = -EIO};
    ferry_secrets *s = make(NULL, &f, 300);
    ferry_secrets_stats st;
    worker w[32];

    stampede(s, w, 32);
    for (size_t i = 0; i < 32; i++) {
        cr_assert_eq(w[i].rc, -EIO);
        cr_assert(strstr(w[i].err, "file:team-a/stampede: backend unreachable"), "%s", w[i].err);
        cr_assert_not(w[i].value_ok);
    }
    cr_assert_eq(atomic_load(&f.calls), 1);
    /* Not cached: the next caller asks the backend again, and gets the value once it works. */
    f.fail = 0;
    f.delay_ms = 0;
    fetch_ok(s, "file:team-a/stampede", "team-a/stampede");
    cr_assert_eq(atomic_load(&f.calls), 2);
    ferry_secrets_get_stats(s, &st);
    cr_assert_eq(st.backend_errors, 1);
    cr_assert_eq(st.backend_calls, 2);
    ferry_secrets_free(s);
}

typedef struct slow_arg {
    ferry_secrets *s;
    int rc;
} slow_arg;

static void *slow_fetch(void *p)
{
    slow_arg *a = p;
    ferry_secret_value *v = NULL;
    char err[256];
    a->rc = ferry_secrets_fetch(a->s, "file:slow", NULL, &v, err, sizeof(err));
    ferry_secret_value_free(v);
    return NULL;
}

Test(secrets_cache, no_wait_never_calls_the_backend)
{
    fake f = {0};
    ferry_secrets *s = make(NULL, &f, 300);
    ferry_secret_value *v = NULL;
    ferry_secrets_stats st;
    slow_arg a = {.s = s};
    pthread_t t;
    char err[256];

    cr_assert_eq(
        ferry_secrets_fetch_ex(s, "file:x", FERRY_SECRETS_NO_WAIT, NULL, &v, err, sizeof(err)),
        -FERRY_EWOULDBLOCK);
    cr_assert_null(v);
    cr_assert_eq(atomic_load(&f.calls), 0);
    fetch_ok(s, "file:x", "x");
    cr_assert_eq(
        ferry_secrets_fetch_ex(s, "file:x", FERRY_SECRETS_NO_WAIT, NULL, &v, err, sizeof(err)), 0,
        "%s", err);
    cr_assert_eq(memcmp(v->data, "x", 1), 0);
    ferry_secret_value_free(v);
    v = NULL;
    cr_assert_eq(atomic_load(&f.calls), 1);
    /* Errors that need no I/O come back as they are. */
    cr_assert_eq(
        ferry_secrets_fetch_ex(s, "file:../x", FERRY_SECRETS_NO_WAIT, NULL, &v, err, sizeof(err)),
        -FERRY_EMALFORMED);
    cr_assert_eq(ferry_secrets_fetch_ex(s, "file:x", 2, NULL, &v, err, sizeof(err)), -EINVAL);
    /* While another caller's fetch is in flight, a no-wait caller does not wait for it. */
    f.delay_ms = 300;
    cr_assert_eq(pthread_create(&t, NULL, slow_fetch, &a), 0);
    usleep(100 * 1000);
    cr_assert_eq(
        ferry_secrets_fetch_ex(s, "file:slow", FERRY_SECRETS_NO_WAIT, NULL, &v, err, sizeof(err)),
        -FERRY_EWOULDBLOCK);
    pthread_join(t, NULL);
    cr_assert_eq(a.rc, 0);
    cr_assert_eq(atomic_load(&f.calls), 2);
    ferry_secrets_get_stats(s, &st);
    cr_assert_eq(st.hits, 1);
    ferry_secrets_free(s);
}

Test(secrets_cache, configuration_is_checked)
{
    static const struct {
        const char *json;
        const char *reason;
    } bad[] = {
        {"{\"cache\":[]}", "cache: must be an object"},
        {"{\"cache\":{\"size\":1}}", "cache: unknown member \"size\""},
        {"{\"cache\":{\"max_entries\":0}}", "cache.max_entries must be an integer"},
        {"{\"cache\":{\"max_bytes\":\"1M\"}}", "cache.max_bytes must be an integer"},
        {"{\"file\":{\"store\":\"/x\",\"key\":\"/y\",\"cache_ttl\":-1}}",
         "file.cache_ttl must be an integer from 0 to 86400"},
        {"{\"file\":{\"store\":\"/x\",\"key\":\"/y\",\"cache_ttl\":86401}}", "file.cache_ttl"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *conf = json_loads(bad[i].json, 0, NULL);
        ferry_secrets *s = NULL;
        char err[256];
        cr_assert_not_null(conf);
        cr_assert_eq(ferry_secrets_new(conf, NULL, &s, err, sizeof(err)), -FERRY_ECONFIG, "%s",
                     bad[i].json);
        cr_assert(strstr(err, bad[i].reason), "%s: %s", bad[i].json, err);
        cr_assert_null(s);
        json_decref(conf);
    }
}
