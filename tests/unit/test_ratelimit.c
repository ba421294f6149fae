/* tests/unit/test_ratelimit.c - token-bucket rate limits (include/ferry/ratelimit.h).
 *
 * Every test drives the limiter with an injected clock (nanoseconds), so refill and
 * Retry-After are exact. Covered: SipHash-2-4 reference vectors, burst then refusal, refill at
 * the configured rate (fractional too), the Retry-After value, independent keys, configure at
 * run time (rate, burst, off and on, larger table), the table bound with refilled buckets
 * dropped first and least-recently-used eviction when all are active, rate 0 = off, argument
 * checks, and many threads on a shared limiter (run under ASan/TSan-free builds too).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "ferry/error.h"
#include "ferry/ratelimit.h"

uint64_t ferry_ratelimit_siphash24(const unsigned char key[16], const void *data, size_t len);

#define SEC UINT64_C(1000000000)

static _Atomic uint64_t g_now;
static uint64_t test_clock(void *data)
{
    (void)data;
    return atomic_load(&g_now);
}

static ferry_ratelimit *make(double rate, unsigned burst, size_t max_keys)
{
    ferry_ratelimit_options o = {
        .rate = rate, .burst = burst, .max_keys = max_keys, .clock = test_clock};
    ferry_ratelimit *rl = NULL;
    atomic_store(&g_now, 1000 * SEC);
    cr_assert_eq(ferry_ratelimit_new(&o, &rl), 0);
    cr_assert_not_null(rl);
    return rl;
}

static int check(ferry_ratelimit *rl, const char *key, int64_t *retry)
{
    return ferry_ratelimit_check(rl, key, strlen(key), retry);
}

static void advance(double seconds)
{
    atomic_fetch_add(&g_now, (uint64_t)(seconds * 1e9 + 0.5));
}

Test(ratelimit, siphash24_reference_vectors)
{
    /* SipHash-2-4 paper, appendix: key 00..0f, messages 00 01 02 ... of length 0..15 */
    static const uint64_t want[16] = {
        UINT64_C(0x726fdb47dd0e0e31), UINT64_C(0x74f839c593dc67fd), UINT64_C(0x0d6c8009d9a94f5a),
        UINT64_C(0x85676696d7fb7e2d), UINT64_C(0xcf2794e0277187b7), UINT64_C(0x18765564cd99a68d),
        UINT64_C(0xcbc9466e58fee3ce), UINT64_C(0xab0200f58b01d137), UINT64_C(0x93f5f5799a932462),
        UINT64_C(0x9e0082df0ba9e4b0), UINT64_C(0x7a5dbbc594ddb9f3), UINT64_C(0xf4b32f46226bada7),
        UINT64_C(0x751e8fbc860ee5fb), UINT64_C(0x14ea5627c0843d90), UINT64_C(0xf723ca908e7af2ee),
        UINT64_C(0xa129ca6149be45e5),
    };
    unsigned char key[16], msg[16];
    for (unsigned i = 0; i < 16; i++)
        key[i] = msg[i] = (unsigned char)i;
    for (size_t n = 0; n < 16; n++)
        cr_assert_eq(ferry_ratelimit_siphash24(key, msg, n), want[n], "length %zu", n);
}

Test(ratelimit, burst_then_refusal)
{
    ferry_ratelimit *rl = make(1, 5, 0);
    int64_t retry = -1;
    for (int i = 0; i < 5; i++)
        cr_assert_eq(check(rl, "ipv4:192.0.2.1", &retry), 0, "request %d", i);
    cr_assert_eq(retry, -1, "retry_after is written only on refusal");
    cr_assert_eq(check(rl, "ipv4:192.0.2.1", &retry), -FERRY_EREFUSED);
    cr_assert_eq(retry, 1);
    cr_assert_eq(check(rl, "ipv4:192.0.2.1", NULL), -FERRY_EREFUSED);
    ferry_ratelimit_stats st;
    cr_assert_eq(ferry_ratelimit_get_stats(rl, &st), 0);
    cr_assert_eq(st.allowed, 5);
    cr_assert_eq(st.refused, 2);
    cr_assert_eq(st.tracked, 1);
    cr_assert_eq(st.burst, 5);
    cr_assert_float_eq(st.rate, 1.0, 1e-12);
    ferry_ratelimit_free(rl);
}

Test(ratelimit, refill_follows_the_rate)
{
    ferry_ratelimit *rl = make(10, 10, 0); /* one token per 100 ms */
    for (int i = 0; i < 10; i++)
        cr_assert_eq(check(rl, "k", NULL), 0);
    cr_assert_eq(check(rl, "k", NULL), -FERRY_EREFUSED);
    advance(0.099);
    cr_assert_eq(check(rl, "k", NULL), -FERRY_EREFUSED, "not yet a whole token");
    advance(0.002);
    cr_assert_eq(check(rl, "k", NULL), 0, "one token after 100 ms");
    cr_assert_eq(check(rl, "k", NULL), -FERRY_EREFUSED);
    advance(0.5);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(check(rl, "k", NULL), 0, "five tokens after 500 ms (%d)", i);
    cr_assert_eq(check(rl, "k", NULL), -FERRY_EREFUSED);
    /* A long pause refills only up to the burst. */
    advance(3600);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(check(rl, "k", NULL), 0);
    cr_assert_eq(check(rl, "k", NULL), -FERRY_EREFUSED);
    ferry_ratelimit_free(rl);
}

Test(ratelimit, fractional_rate_and_retry_after)
{
    ferry_ratelimit *rl = make(0.25, 2, 0); /* one token per 4 s */
    int64_t retry = 0;
    cr_assert_eq(check(rl, "uid:1000", &retry), 0);
    cr_assert_eq(check(rl, "uid:1000", &retry), 0);
    cr_assert_eq(check(rl, "uid:1000", &retry), -FERRY_EREFUSED);
    cr_assert_eq(retry, 4);
    advance(1.5);
    cr_assert_eq(check(rl, "uid:1000", &retry), -FERRY_EREFUSED);
    cr_assert_eq(retry, 3, "2.5 s left, rounded up");
    advance(2.4);
    cr_assert_eq(check(rl, "uid:1000", &retry), -FERRY_EREFUSED);
    cr_assert_eq(retry, 1, "0.1 s left is reported as 1 s, never 0");
    advance(0.1);
    cr_assert_eq(check(rl, "uid:1000", &retry), 0);
    ferry_ratelimit_free(rl);

    /* A very slow rate reports at most FERRY_RATELIMIT_RETRY_MAX. */
    rl = make(1e-9, 1, 0);
    cr_assert_eq(check(rl, "x", &retry), 0);
    cr_assert_eq(check(rl, "x", &retry), -FERRY_EREFUSED);
    cr_assert_eq(retry, FERRY_RATELIMIT_RETRY_MAX);
    ferry_ratelimit_free(rl);
}

Test(ratelimit, refund_gives_one_token_back)
{
    ferry_ratelimit *rl = make(1, 2, 0);
    int64_t retry = 0;
    cr_assert_eq(check(rl, "k", NULL), 0);
    cr_assert_eq(check(rl, "k", NULL), 0);
    cr_assert_eq(check(rl, "k", &retry), -FERRY_EREFUSED);
    cr_assert_eq(ferry_ratelimit_refund(rl, "k", 1), 0);
    cr_assert_eq(check(rl, "k", NULL), 0, "the refunded token");
    cr_assert_eq(check(rl, "k", NULL), -FERRY_EREFUSED);
    /* never above the burst, and an unknown key stays full */
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ferry_ratelimit_refund(rl, "k", 1), 0);
    cr_assert_eq(check(rl, "k", NULL), 0);
    cr_assert_eq(check(rl, "k", NULL), 0);
    cr_assert_eq(check(rl, "k", NULL), -FERRY_EREFUSED);
    cr_assert_eq(ferry_ratelimit_refund(rl, "unknown", 7), 0);
    cr_assert_eq(check(rl, "unknown", NULL), 0);
    cr_assert_eq(check(rl, "unknown", NULL), 0);
    cr_assert_eq(check(rl, "unknown", NULL), -FERRY_EREFUSED);
    cr_assert_eq(ferry_ratelimit_refund(NULL, "k", 1), -EINVAL);
    cr_assert_eq(ferry_ratelimit_refund(rl, NULL, 1), -EINVAL);
    ferry_ratelimit_free(rl);
}

Test(ratelimit, keys_are_independent_and_binary)
{
    ferry_ratelimit *rl = make(1, 2, 0);
    const char a[] = {'a', 0, 'b'}, b[] = {'a', 0, 'c'};
    cr_assert_eq(ferry_ratelimit_check(rl, a, sizeof(a), NULL), 0);
    cr_assert_eq(ferry_ratelimit_check(rl, a, sizeof(a), NULL), 0);
    cr_assert_eq(ferry_ratelimit_check(rl, a, sizeof(a), NULL), -FERRY_EREFUSED);
    /* a key differing after a NUL byte, a prefix, and the empty key each have their own */
    cr_assert_eq(ferry_ratelimit_check(rl, b, sizeof(b), NULL), 0);
    cr_assert_eq(ferry_ratelimit_check(rl, a, 1, NULL), 0);
    cr_assert_eq(ferry_ratelimit_check(rl, NULL, 0, NULL), 0);
    cr_assert_eq(ferry_ratelimit_check(rl, "", 0, NULL), 0);
    cr_assert_eq(ferry_ratelimit_check(rl, "", 0, NULL), -FERRY_EREFUSED, "NULL,0 == \"\",0");
    for (int i = 0; i < 100; i++) {
        char k[32];
        snprintf(k, sizeof(k), "ipv6:2001:db8::%x", i);
        cr_assert_eq(check(rl, k, NULL), 0);
    }
    cr_assert_eq(ferry_ratelimit_check(rl, a, sizeof(a), NULL), -FERRY_EREFUSED,
                 "others' traffic does not refill a");
    ferry_ratelimit_free(rl);
}

Test(ratelimit, configure_at_run_time)
{
    ferry_ratelimit *rl = make(1, 3, 0);
    int64_t retry = 0;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(check(rl, "k", NULL), 0);
    cr_assert_eq(check(rl, "k", &retry), -FERRY_EREFUSED);

    /* A higher rate refills faster from now on; the empty bucket stays empty. */
    cr_assert_eq(ferry_ratelimit_configure(rl, 100, 3, 0), 0);
    cr_assert_eq(check(rl, "k", &retry), -FERRY_EREFUSED);
    advance(0.011);
    cr_assert_eq(check(rl, "k", NULL), 0);

    /* A smaller burst caps existing buckets. */
    advance(10);
    cr_assert_eq(ferry_ratelimit_configure(rl, 1, 1, 0), 0);
    cr_assert_eq(check(rl, "k", NULL), 0);
    cr_assert_eq(check(rl, "k", &retry), -FERRY_EREFUSED);
    cr_assert_eq(retry, 1);
    cr_assert_eq(check(rl, "new", NULL), 0);
    cr_assert_eq(check(rl, "new", NULL), -FERRY_EREFUSED, "new keys get the new burst");

    /* Off: everything allowed and nothing tracked; on again: fresh buckets. */
    cr_assert_eq(ferry_ratelimit_configure(rl, 0, 0, 0), 0);
    cr_assert(!ferry_ratelimit_enabled(rl));
    cr_assert_eq(ferry_ratelimit_size(rl), 0);
    for (int i = 0; i < 50; i++)
        cr_assert_eq(check(rl, "k", NULL), 0);
    cr_assert_eq(ferry_ratelimit_size(rl), 0);
    cr_assert_eq(ferry_ratelimit_configure(rl, 2, 0, 0), 0); /* burst 0 = ceil(rate) */
    cr_assert(ferry_ratelimit_enabled(rl));
    cr_assert_eq(check(rl, "k", NULL), 0);
    cr_assert_eq(check(rl, "k", NULL), 0);
    cr_assert_eq(check(rl, "k", &retry), -FERRY_EREFUSED);
    cr_assert_eq(retry, 1);

    /* Values out of range change nothing. */
    cr_assert_eq(ferry_ratelimit_configure(rl, -1, 1, 0), -EINVAL);
    cr_assert_eq(ferry_ratelimit_configure(rl, 0.0 / 0.0, 1, 0), -EINVAL);
    cr_assert_eq(ferry_ratelimit_configure(rl, 2e6, 1, 0), -EINVAL);
    cr_assert_eq(ferry_ratelimit_configure(rl, 1, FERRY_RATELIMIT_BURST_MAX + 1, 0), -EINVAL);
    cr_assert_eq(ferry_ratelimit_configure(rl, 1, 1, FERRY_RATELIMIT_MAX_KEYS_LIMIT + 1), -EINVAL);
    cr_assert_eq(ferry_ratelimit_configure(NULL, 1, 1, 0), -EINVAL);
    ferry_ratelimit_stats st;
    cr_assert_eq(ferry_ratelimit_get_stats(rl, &st), 0);
    cr_assert_float_eq(st.rate, 2.0, 1e-12);
    cr_assert_eq(st.burst, 2);
    ferry_ratelimit_free(rl);
}

Test(ratelimit, table_is_bounded_and_refilled_buckets_go_first)
{
    ferry_ratelimit *rl = make(1, 2, 4);
    ferry_ratelimit_stats st;
    char k[16];

    /* Four active (not full) buckets fill the table. */
    for (int i = 0; i < 4; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        cr_assert_eq(check(rl, k, NULL), 0);
    }
    cr_assert_eq(ferry_ratelimit_size(rl), 4);
    /* k0 and k1 use their last token: empty. */
    cr_assert_eq(check(rl, "k0", NULL), 0);
    cr_assert_eq(check(rl, "k0", NULL), -FERRY_EREFUSED);
    cr_assert_eq(check(rl, "k1", NULL), 0);
    cr_assert_eq(check(rl, "k1", NULL), -FERRY_EREFUSED);

    /* A fifth key evicts the least recently used active bucket (k2), never refuses. */
    cr_assert_eq(check(rl, "k4", NULL), 0);
    cr_assert_eq(ferry_ratelimit_size(rl), 4);
    cr_assert_eq(ferry_ratelimit_get_stats(rl, &st), 0);
    cr_assert_eq(st.evicted, 1);
    cr_assert_eq(st.max_keys, 4);
    /* The recently used empty buckets were kept: still refused. */
    cr_assert_eq(check(rl, "k0", NULL), -FERRY_EREFUSED);
    cr_assert_eq(check(rl, "k1", NULL), -FERRY_EREFUSED);

    /* After 2 s every bucket is full again: equivalent to absent, dropped without counting an
     * eviction, and the table shrinks as checks go by. */
    advance(2);
    for (int i = 5; i < 9; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        cr_assert_eq(check(rl, k, NULL), 0);
    }
    cr_assert_eq(ferry_ratelimit_get_stats(rl, &st), 0);
    cr_assert_eq(st.evicted, 1, "refilled buckets are not counted as evictions");
    cr_assert_leq(st.tracked, 4);
    ferry_ratelimit_free(rl);
}

Test(ratelimit, a_larger_table_at_run_time_keeps_buckets)
{
    ferry_ratelimit *rl = make(1, 1, 4);
    char k[16];
    for (int i = 0; i < 4; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        cr_assert_eq(check(rl, k, NULL), 0);
    }
    cr_assert_eq(ferry_ratelimit_configure(rl, 1, 1, 64), 0);
    for (int i = 4; i < 60; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        cr_assert_eq(check(rl, k, NULL), 0);
    }
    cr_assert_eq(ferry_ratelimit_size(rl), 60);
    for (int i = 0; i < 60; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        cr_assert_eq(check(rl, k, NULL), -FERRY_EREFUSED, "%s kept its empty bucket", k);
    }
    ferry_ratelimit_stats st;
    cr_assert_eq(ferry_ratelimit_get_stats(rl, &st), 0);
    cr_assert_eq(st.evicted, 0);
    /* Smaller again: the bound applies as keys arrive. */
    cr_assert_eq(ferry_ratelimit_configure(rl, 1, 1, 8), 0);
    cr_assert_eq(check(rl, "fresh", NULL), 0);
    cr_assert_leq(ferry_ratelimit_size(rl), 8);
    ferry_ratelimit_free(rl);
}

Test(ratelimit, a_big_table_is_sharded_and_bounded)
{
    ferry_ratelimit *rl = make(1, 1, 4096);
    ferry_ratelimit_stats st;
    char k[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof(k), "ipv4:10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        cr_assert_eq(check(rl, k, NULL), 0);
    }
    cr_assert_eq(ferry_ratelimit_get_stats(rl, &st), 0);
    cr_assert_leq(st.tracked, 4096);
    cr_assert_geq(st.tracked, 4000, "the shards fill evenly (keyed hash)");
    cr_assert_eq(st.max_keys, 4096);
    cr_assert_eq(st.allowed, 20000);
    cr_assert_geq(st.evicted, 20000 - 4096);
    /* The most recent keys are still tracked (LRU evicts the oldest). */
    cr_assert_eq(check(rl, "ipv4:10.0.78.31", NULL), -FERRY_EREFUSED); /* i = 19999 */
    ferry_ratelimit_free(rl);
}

Test(ratelimit, rate_zero_is_off)
{
    ferry_ratelimit *rl = make(0, 0, 0);
    cr_assert(!ferry_ratelimit_enabled(rl));
    for (int i = 0; i < 10000; i++)
        cr_assert_eq(check(rl, "k", NULL), 0);
    cr_assert_eq(ferry_ratelimit_size(rl), 0);
    ferry_ratelimit_free(rl);

    /* NULL options: off too. */
    cr_assert_eq(ferry_ratelimit_new(NULL, &rl), 0);
    cr_assert_eq(ferry_ratelimit_check(rl, "k", 1, NULL), 0);
    ferry_ratelimit_free(rl);
}

Test(ratelimit, arguments_are_checked)
{
    ferry_ratelimit *rl = NULL;
    ferry_ratelimit_options o = {.rate = -0.5};
    ferry_ratelimit_stats st;
    cr_assert_eq(ferry_ratelimit_new(&o, &rl), -EINVAL);
    o = (ferry_ratelimit_options){.rate = 1, .burst = FERRY_RATELIMIT_BURST_MAX + 1};
    cr_assert_eq(ferry_ratelimit_new(&o, &rl), -EINVAL);
    o = (ferry_ratelimit_options){.rate = 1, .max_keys = FERRY_RATELIMIT_MAX_KEYS_LIMIT + 1};
    cr_assert_eq(ferry_ratelimit_new(&o, &rl), -EINVAL);
    cr_assert_eq(ferry_ratelimit_new(NULL, NULL), -EINVAL);
    cr_assert_null(rl);
    cr_assert_eq(ferry_ratelimit_check(NULL, "k", 1, NULL), -EINVAL);
    rl = make(1, 1, 0);
    cr_assert_eq(ferry_ratelimit_check(rl, NULL, 1, NULL), -EINVAL);
    cr_assert_eq(ferry_ratelimit_get_stats(rl, NULL), -EINVAL);
    cr_assert_eq(ferry_ratelimit_get_stats(NULL, &st), -EINVAL);
    cr_assert_eq(ferry_ratelimit_size(NULL), 0);
    cr_assert(!ferry_ratelimit_enabled(NULL));
    ferry_ratelimit_free(rl);
    ferry_ratelimit_free(NULL);
}

/* ---- threads ------------------------------------------------------------------------------- */

#define THREADS 8
#define PER_THREAD 20000

struct work {
    ferry_ratelimit *rl;
    int id;
    unsigned allowed_shared;
};

static void *worker(void *arg)
{
    struct work *w = arg;
    char k[32];
    for (int i = 0; i < PER_THREAD; i++) {
        /* one key shared by all threads, and keys of their own */
        if (ferry_ratelimit_check(w->rl, "shared", 6, NULL) == 0)
            w->allowed_shared++;
        snprintf(k, sizeof(k), "t%d-%d", w->id, i % 500);
        (void)ferry_ratelimit_check(w->rl, k, strlen(k), NULL);
        if (i % 5000 == 0 && w->id == 0)
            (void)ferry_ratelimit_configure(w->rl, 1, 1000, 2048);
    }
    return NULL;
}

Test(ratelimit, many_threads_share_one_limiter)
{
    /* The clock stands still, so the shared key gets exactly its burst across all threads. */
    ferry_ratelimit *rl = make(1, 1000, 2048);
    pthread_t t[THREADS];
    struct work w[THREADS];
    unsigned total = 0;
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct work){.rl = rl, .id = i};
        cr_assert_eq(pthread_create(&t[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        total += w[i].allowed_shared;
    }
    cr_assert_eq(total, 1000, "exactly the burst, got %u", total);
    ferry_ratelimit_stats st;
    cr_assert_eq(ferry_ratelimit_get_stats(rl, &st), 0);
    cr_assert_eq(st.allowed + st.refused, (uint64_t)THREADS * PER_THREAD * 2);
    cr_assert_leq(st.tracked, 2048);
    ferry_ratelimit_free(rl);
}
