/* ferry/ratelimit.h - token-bucket rate limits keyed by an opaque byte string.
 *
 * A ferry_ratelimit holds one token bucket per key (a client address, an (issuer, subject)
 * pair, ...). Every bucket has the same rate (tokens added per second, fractional allowed) and
 * burst (bucket size); a check takes one token or says how many seconds remain until one is
 * there (the HTTP Retry-After value). A key never seen behaves like a full bucket, so a bucket
 * that has refilled to full is equivalent to an absent one and is dropped first.
 *
 * The table is bounded (max_keys). When it is full of buckets that are not full, a new key
 * evicts the least recently used bucket of its shard (that key then starts again with a full
 * bucket): a limiter must never refuse a client it has not seen because others filled the
 * table (fail-closed would let anyone with many addresses lock out every new client).
 *
 * Keys are hashed with SipHash-2-4 under a random per-object key, so nobody outside can aim
 * keys at one shard or one hash chain. The table is split into shards with a lock each, so
 * threads checking different keys rarely wait on one another.
 *
 * Design note, figures and limits: docs/internals/ratelimit.md.
 *
 * Thread safety: every function may be called from many threads on one object, except
 * ferry_ratelimit_free.
 */
#ifndef FERRY_RATELIMIT_H
#define FERRY_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FERRY_RATELIMIT_DEFAULT_MAX_KEYS 65536
#define FERRY_RATELIMIT_MAX_KEYS_LIMIT (16u * 1024 * 1024)
#define FERRY_RATELIMIT_RATE_MAX 1e6       /* tokens per second */
#define FERRY_RATELIMIT_BURST_MAX 1000000u /* tokens */
#define FERRY_RATELIMIT_RETRY_MAX 86400    /* longest Retry-After reported (s) */

/* A monotonic clock in nanoseconds (any origin; it must never go backwards). */
typedef uint64_t (*ferry_ratelimit_clock_fn)(void *data);

typedef struct ferry_ratelimit_options {
    double rate;     /* tokens per second, 0 = off (every check allowed, nothing tracked);
                        0 < rate <= FERRY_RATELIMIT_RATE_MAX */
    unsigned burst;  /* bucket size, 1..FERRY_RATELIMIT_BURST_MAX; 0 = max(1, ceil(rate)) */
    size_t max_keys; /* buckets tracked at most; 0 = FERRY_RATELIMIT_DEFAULT_MAX_KEYS */
    ferry_ratelimit_clock_fn clock; /* NULL = CLOCK_MONOTONIC */
    void *clock_data;
} ferry_ratelimit_options;

typedef struct ferry_ratelimit ferry_ratelimit;

/* New limiter. opts may be NULL (off, default size). Returns 0 and a new object in *ret
 * (ferry_ratelimit_free), -EINVAL (an option out of range), -ENOMEM, -FERRY_ECRYPTO (no random
 * hash key). */
int ferry_ratelimit_new(const ferry_ratelimit_options *opts, ferry_ratelimit **ret);
void ferry_ratelimit_free(ferry_ratelimit *rl); /* accepts NULL */

/* Change rate, burst and max_keys at run time (a configuration reload); clock and the hash key
 * stay. Buckets keep their tokens, capped to the new burst; rate 0 turns the limiter off and
 * forgets every bucket; a smaller max_keys drops buckets as keys arrive. All or nothing:
 * -EINVAL for a value out of range, -ENOMEM (the old settings stay). */
int ferry_ratelimit_configure(ferry_ratelimit *rl, double rate, unsigned burst, size_t max_keys);

/* Take one token from key's bucket (len bytes, borrowed; any bytes). Returns 0 when allowed;
 * -FERRY_EREFUSED when the bucket is empty, with the seconds until a token is available
 * (rounded up, at least 1, at most FERRY_RATELIMIT_RETRY_MAX) in *ret_retry_after when it is
 * not NULL; -EINVAL for a NULL rl or a NULL key with len > 0. Allowed when the limiter is off.
 * Memory for a new key is taken from a per-shard pool allocated with the table, so a check
 * never fails for lack of memory. */
int ferry_ratelimit_check(ferry_ratelimit *rl, const void *key, size_t len,
                          int64_t *ret_retry_after);

/* Give back the token a check of key took (the request it allowed did not count after all,
 * e.g. a one-time token found spent). The bucket is capped to burst; a key no longer tracked
 * is full already. Returns 0 or -EINVAL. */
int ferry_ratelimit_refund(ferry_ratelimit *rl, const void *key, size_t len);

/* Whether the limiter is on (rate > 0). */
bool ferry_ratelimit_enabled(const ferry_ratelimit *rl);

/* Number of buckets currently tracked (for metrics). 0 for NULL. */
size_t ferry_ratelimit_size(const ferry_ratelimit *rl);

typedef struct ferry_ratelimit_stats {
    size_t tracked;   /* buckets in the table */
    size_t max_keys;  /* the bound */
    uint64_t allowed; /* checks allowed while on */
    uint64_t refused; /* checks refused */
    uint64_t evicted; /* buckets that were not full, evicted for a new key (table full) */
    double rate;      /* current settings */
    unsigned burst;
} ferry_ratelimit_stats;

/* A snapshot of the counters (each shard read under its lock; the sum is not one instant).
 * Returns 0 or -EINVAL. */
int ferry_ratelimit_get_stats(const ferry_ratelimit *rl, ferry_ratelimit_stats *ret_stats);

#ifdef __cplusplus
}
#endif
#endif
