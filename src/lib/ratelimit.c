/* ratelimit.c - token buckets in a bounded, sharded hash table keyed by SipHash-2-4.
 *
 * Data structures: a ferry_ratelimit holds a power-of-two number of shards. A key's 64-bit
 * SipHash (random key per object) picks the shard (low bits) and the chain inside it (high
 * bits), and is the bucket's identity: two keys with the same 64-bit hash share a bucket
 * (probability about n^2 / 2^65 for n keys, and not something an outsider can aim at without
 * the hash key). Each shard has its own mutex, a pool of entries allocated up front (indices,
 * not pointers, so the pool can grow with realloc), a chained hash table, and an LRU list.
 *
 * A bucket is (tokens, last): tokens at time last. It is refilled lazily when touched:
 * tokens = min(burst, tokens + (now - last) * rate). A bucket that has refilled to full is the
 * same as no bucket, so each check drops the shard's least recently used bucket when it has
 * refilled, and a new key first reuses such a bucket; only when none is full is the least
 * recently used bucket evicted (counted in stats.evicted). Design: docs/internals/ratelimit.md.
 */
#include "config.h"
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/ratelimit.h"

#define NIL UINT32_MAX
#define MAX_SHARDS 64
#define MIN_PER_SHARD 64 /* fewer shards for small tables, so max_keys is the exact bound */
#define LRU_SCAN 8       /* refilled buckets looked for at the LRU end before evicting */
/* Tolerance for floating-point sums of refills: a billionth of a token. */
#define EPS 1e-9

struct entry {
    uint64_t hash;
    uint64_t last_ns;
    double tokens;
    uint32_t next;               /* hash chain, or the free list */
    uint32_t lru_prev, lru_next; /* toward the most / least recently used */
};

struct shard {
    pthread_mutex_t lock;
    struct entry *pool;
    uint32_t pool_len; /* entries allocated */
    uint32_t cap;      /* entries usable (<= pool_len) */
    uint32_t count;
    uint32_t hw;        /* entries [hw, pool_len) were never used */
    uint32_t free_head; /* entries used before and dropped */
    uint32_t *heads;    /* chain heads, n_heads a power of two */
    uint32_t head_mask;
    uint32_t lru_head, lru_tail; /* most recently used, least recently used */
    double rate;
    double burst;
    uint64_t allowed, refused, evicted;
} __attribute__((aligned(64)));

struct ferry_ratelimit {
    struct shard *shards;
    unsigned n_shards;
    unsigned shard_bits;
    atomic_bool enabled;
    pthread_mutex_t config_lock; /* serialises ferry_ratelimit_configure */
    size_t max_keys;
    ferry_ratelimit_clock_fn clock;
    void *clock_data;
    unsigned char sipkey[16];
};

/* ---- SipHash-2-4 (Aumasson, Bernstein), 64-bit output ------------------------------------- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t load64_le(const unsigned char *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
           (uint64_t)p[7] << 56;
}

/* Exposed to the unit test (reference vectors); not exported from the shared library. */
uint64_t ferry_ratelimit_siphash24(const unsigned char key[16], const void *data, size_t len);
uint64_t ferry_ratelimit_siphash24(const unsigned char key[16], const void *data, size_t len)
{
    const unsigned char *in = data;
    uint64_t k0 = load64_le(key), k1 = load64_le(key + 8);
    uint64_t v0 = UINT64_C(0x736f6d6570736575) ^ k0;
    uint64_t v1 = UINT64_C(0x646f72616e646f6d) ^ k1;
    uint64_t v2 = UINT64_C(0x6c7967656e657261) ^ k0;
    uint64_t v3 = UINT64_C(0x7465646279746573) ^ k1;
    uint64_t b = (uint64_t)len << 56, m;
    size_t i, full = len - (len % 8);

    for (i = 0; i < full; i += 8) {
        m = load64_le(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t j = 0; j < len % 8; j++)
        b |= (uint64_t)in[i + j] << (8 * j);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- clock ----------------------------------------------------------------------------------- */

static uint64_t mono_ns(void *data)
{
    struct timespec ts;
    (void)data;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

/* ---- one shard (caller holds its lock) ------------------------------------------------------ */

static void lru_unlink(struct shard *s, uint32_t i)
{
    struct entry *e = &s->pool[i];
    if (e->lru_prev != NIL)
        s->pool[e->lru_prev].lru_next = e->lru_next;
    else
        s->lru_head = e->lru_next;
    if (e->lru_next != NIL)
        s->pool[e->lru_next].lru_prev = e->lru_prev;
    else
        s->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NIL;
}

static void lru_push_front(struct shard *s, uint32_t i)
{
    struct entry *e = &s->pool[i];
    e->lru_prev = NIL;
    e->lru_next = s->lru_head;
    if (s->lru_head != NIL)
        s->pool[s->lru_head].lru_prev = i;
    s->lru_head = i;
    if (s->lru_tail == NIL)
        s->lru_tail = i;
}

static uint32_t chain_of(const struct shard *s, uint64_t hash, unsigned shard_bits)
{
    return (uint32_t)(hash >> shard_bits) & s->head_mask;
}

/* Remove entry i from its chain, the LRU list and the table; back to the free list. */
static void drop(struct shard *s, uint32_t i, unsigned shard_bits)
{
    uint32_t *pp = &s->heads[chain_of(s, s->pool[i].hash, shard_bits)];
    while (*pp != NIL && *pp != i)
        pp = &s->pool[*pp].next;
    if (*pp == i)
        *pp = s->pool[i].next;
    lru_unlink(s, i);
    s->pool[i].next = s->free_head;
    s->free_head = i;
    s->count--;
}

/* Tokens of bucket e at now, capped to burst (not stored). */
static double refill(const struct shard *s, const struct entry *e, uint64_t now)
{
    double t = e->tokens;
    if (now > e->last_ns)
        t += (double)(now - e->last_ns) / 1e9 * s->rate;
    return t < s->burst ? t : s->burst;
}

static bool is_full(const struct shard *s, const struct entry *e, uint64_t now)
{
    return refill(s, e, now) >= s->burst - EPS;
}

static void clear_shard(struct shard *s)
{
    s->count = 0;
    s->lru_head = s->lru_tail = NIL;
    for (uint32_t i = 0; i <= s->head_mask; i++)
        s->heads[i] = NIL;
    s->free_head = NIL;
    s->hw = 0;
}

/* A free entry for a new key: the free list while under cap, else a refilled bucket near the
 * LRU end, else the least recently used one (evicted). */
static uint32_t take_entry(struct shard *s, uint64_t now, unsigned shard_bits)
{
    uint32_t i;

    while (s->count >= s->cap && s->count > 0) {
        unsigned scanned = 0;
        uint32_t victim = s->lru_tail;
        for (i = s->lru_tail; i != NIL && scanned < LRU_SCAN; i = s->pool[i].lru_prev, scanned++)
            if (is_full(s, &s->pool[i], now)) {
                victim = i;
                break;
            }
        if (i == NIL || scanned == LRU_SCAN)
            s->evicted++;
        drop(s, victim, shard_bits);
    }
    if (s->free_head != NIL) {
        i = s->free_head;
        s->free_head = s->pool[i].next;
    } else if (s->hw < s->pool_len) {
        i = s->hw++;
    } else {
        return NIL; /* cannot happen: count < cap <= pool_len */
    }
    s->count++;
    return i;
}

/* ---- public ---------------------------------------------------------------------------------- */

static int check_settings(double rate, unsigned burst, size_t max_keys)
{
    if (!(rate >= 0 && rate <= FERRY_RATELIMIT_RATE_MAX) || burst > FERRY_RATELIMIT_BURST_MAX ||
        max_keys > FERRY_RATELIMIT_MAX_KEYS_LIMIT)
        return -EINVAL;
    return 0;
}

/* ceil(x) for 0 <= x < 2^62 (no libm). */
static int64_t ceil_pos(double x)
{
    int64_t n = (int64_t)x;
    return (double)n < x ? n + 1 : n;
}

static double burst_of(double rate, unsigned burst)
{
    if (burst)
        return burst;
    int64_t b = ceil_pos(rate);
    return b < 1 ? 1 : (double)b;
}

static uint32_t pow2_at_least(uint32_t n)
{
    uint32_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

/* Grow shard s's pool and chain heads to hold cap entries (never shrunk; s->cap unchanged). */
static int shard_grow(struct shard *s, uint32_t cap, unsigned shard_bits)
{
    if (cap > s->pool_len) {
        struct entry *np = realloc(s->pool, (size_t)cap * sizeof(*np));
        uint32_t n_heads = pow2_at_least(cap);
        uint32_t *nh;
        if (!np)
            return -ENOMEM;
        s->pool = np;
        nh = malloc((size_t)n_heads * sizeof(*nh));
        if (!nh)
            return -ENOMEM; /* the pool is larger, nothing else changed */
        for (uint32_t i = 0; i < n_heads; i++)
            nh[i] = NIL;
        /* entries from hw up are free without being touched (no page is used before a key) */
        s->pool_len = cap;
        /* rehash the live entries (walk the LRU list) */
        free(s->heads);
        s->heads = nh;
        s->head_mask = n_heads - 1;
        for (uint32_t i = s->lru_head; i != NIL; i = s->pool[i].lru_next) {
            uint32_t c = chain_of(s, s->pool[i].hash, shard_bits);
            s->pool[i].next = nh[c];
            nh[c] = i;
        }
    }
    return 0;
}

static uint32_t per_shard(const ferry_ratelimit *rl, size_t max_keys)
{
    size_t c = max_keys / rl->n_shards;
    return c ? (uint32_t)c : 1;
}

FERRY_EXPORT int ferry_ratelimit_new(const ferry_ratelimit_options *opts, ferry_ratelimit **ret)
{
    ferry_ratelimit_options o = opts ? *opts : (ferry_ratelimit_options){0};
    ferry_ratelimit *rl;
    uint32_t cap;
    int r;

    if (!ret)
        return -EINVAL;
    if (o.max_keys == 0)
        o.max_keys = FERRY_RATELIMIT_DEFAULT_MAX_KEYS;
    if (check_settings(o.rate, o.burst, o.max_keys) < 0)
        return -EINVAL;
    rl = calloc(1, sizeof(*rl));
    if (!rl)
        return -ENOMEM;
    rl->n_shards = 1;
    while (rl->n_shards < MAX_SHARDS && o.max_keys / (rl->n_shards * 2) >= MIN_PER_SHARD)
        rl->n_shards *= 2;
    while ((1u << rl->shard_bits) < rl->n_shards)
        rl->shard_bits++;
    rl->max_keys = o.max_keys;
    rl->clock = o.clock ? o.clock : mono_ns;
    rl->clock_data = o.clock_data;
    if (RAND_bytes(rl->sipkey, sizeof(rl->sipkey)) != 1) {
        free(rl);
        return -FERRY_ECRYPTO;
    }
    if (pthread_mutex_init(&rl->config_lock, NULL) != 0) {
        ferry_wipe(rl->sipkey, sizeof(rl->sipkey));
        free(rl);
        return -ENOMEM;
    }
    rl->shards = aligned_alloc(64, rl->n_shards * sizeof(struct shard));
    if (!rl->shards) {
        (void)pthread_mutex_destroy(&rl->config_lock);
        ferry_wipe(rl->sipkey, sizeof(rl->sipkey));
        free(rl);
        return -ENOMEM;
    }
    cap = per_shard(rl, o.max_keys);
    for (unsigned i = 0; i < rl->n_shards; i++) {
        struct shard *s = &rl->shards[i];
        *s = (struct shard){
            .free_head = NIL,
            .lru_head = NIL,
            .lru_tail = NIL,
            .rate = o.rate,
            .burst = burst_of(o.rate, o.burst),
        };
        if (pthread_mutex_init(&s->lock, NULL) != 0) {
            rl->n_shards = i; /* free only what was set up */
            ferry_ratelimit_free(rl);
            return -ENOMEM;
        }
        /* The pool is only reserved: untouched pages of a large calloc'd array stay unused. */
        r = shard_grow(s, cap, rl->shard_bits);
        if (r < 0) {
            rl->n_shards = i + 1;
            ferry_ratelimit_free(rl);
            return r;
        }
        s->cap = cap;
    }
    atomic_store(&rl->enabled, o.rate > 0);
    *ret = rl;
    return 0;
}

FERRY_EXPORT void ferry_ratelimit_free(ferry_ratelimit *rl)
{
    if (!rl)
        return;
    for (unsigned i = 0; i < rl->n_shards; i++) {
        free(rl->shards[i].pool);
        free(rl->shards[i].heads);
        (void)pthread_mutex_destroy(&rl->shards[i].lock);
    }
    free(rl->shards);
    (void)pthread_mutex_destroy(&rl->config_lock);
    ferry_wipe(rl->sipkey, sizeof(rl->sipkey));
    free(rl);
}

FERRY_EXPORT int ferry_ratelimit_configure(ferry_ratelimit *rl, double rate, unsigned burst,
                                           size_t max_keys)
{
    uint32_t cap;
    int r = 0;

    if (!rl)
        return -EINVAL;
    if (max_keys == 0)
        max_keys = FERRY_RATELIMIT_DEFAULT_MAX_KEYS;
    if (check_settings(rate, burst, max_keys) < 0)
        return -EINVAL;
    cap = per_shard(rl, max_keys);
    (void)pthread_mutex_lock(&rl->config_lock);
    /* Grow every pool first, so that a failure leaves the old settings in force. */
    for (unsigned i = 0; i < rl->n_shards && r == 0; i++) {
        struct shard *s = &rl->shards[i];
        (void)pthread_mutex_lock(&s->lock);
        r = shard_grow(s, cap, rl->shard_bits);
        (void)pthread_mutex_unlock(&s->lock);
    }
    if (r < 0) {
        (void)pthread_mutex_unlock(&rl->config_lock);
        return r;
    }
    if (rate == 0)
        atomic_store(&rl->enabled, false);
    uint64_t now = rl->clock(rl->clock_data);
    for (unsigned i = 0; i < rl->n_shards; i++) {
        struct shard *s = &rl->shards[i];
        double nb = burst_of(rate, burst);
        (void)pthread_mutex_lock(&s->lock);
        if (rate == 0) {
            clear_shard(s);
        } else {
            /* Settle every bucket at the old rate up to now, then cap it to the new burst. */
            for (uint32_t j = s->lru_head; j != NIL; j = s->pool[j].lru_next) {
                struct entry *e = &s->pool[j];
                double t = s->rate > 0 ? refill(s, e, now) : s->burst;
                e->tokens = t < nb ? t : nb;
                e->last_ns = now > e->last_ns ? now : e->last_ns;
            }
        }
        s->rate = rate;
        s->burst = nb;
        s->cap = cap;
        (void)pthread_mutex_unlock(&s->lock);
    }
    rl->max_keys = max_keys;
    if (rate > 0)
        atomic_store(&rl->enabled, true);
    (void)pthread_mutex_unlock(&rl->config_lock);
    return 0;
}

/* The shard of a key, and the key's hash in *ret_hash. */
static struct shard *shard_of(ferry_ratelimit *rl, const void *key, size_t len,
                              uint64_t *ret_hash)
{
    *ret_hash = ferry_ratelimit_siphash24(rl->sipkey, key ? key : "", len);
    return &rl->shards[*ret_hash & (rl->n_shards - 1)];
}

/* The entry holding hash in its chain, or NIL; caller holds s->lock. */
static uint32_t find(const struct shard *s, uint64_t hash, unsigned bits)
{
    uint32_t i;

    for (i = s->heads[chain_of(s, hash, bits)]; i != NIL; i = s->pool[i].next)
        if (s->pool[i].hash == hash)
            break;
    return i;
}

FERRY_EXPORT int ferry_ratelimit_check(ferry_ratelimit *rl, const void *key, size_t len,
                                       int64_t *ret_retry_after)
{
    uint64_t hash, now;
    struct shard *s;
    uint32_t i;
    double t;
    int r;

    if (!rl || (!key && len > 0))
        return -EINVAL;
    if (!atomic_load_explicit(&rl->enabled, memory_order_relaxed))
        return 0;
    s = shard_of(rl, key, len, &hash);
    now = rl->clock(rl->clock_data);

    (void)pthread_mutex_lock(&s->lock);
    if (s->rate <= 0) {
        /* turned off by a concurrent configure */
        (void)pthread_mutex_unlock(&s->lock);
        return 0;
    }
    i = find(s, hash, rl->shard_bits);
    if (i == NIL) {
        i = take_entry(s, now, rl->shard_bits);
        if (i == NIL) {
            (void)pthread_mutex_unlock(&s->lock);
            return 0; /* unreachable: cap >= 1 */
        }
        uint32_t c = chain_of(s, hash, rl->shard_bits);
        s->pool[i] = (struct entry){
            .hash = hash,
            .last_ns = now,
            .tokens = s->burst,
            .next = s->heads[c],
            .lru_prev = NIL,
            .lru_next = NIL,
        };
        s->heads[c] = i;
        lru_push_front(s, i);
    } else {
        lru_unlink(s, i);
        lru_push_front(s, i);
    }
    t = refill(s, &s->pool[i], now);
    if (now > s->pool[i].last_ns)
        s->pool[i].last_ns = now;
    if (t >= 1.0 - EPS) {
        s->pool[i].tokens = t > 1.0 ? t - 1.0 : 0;
        s->allowed++;
        r = 0;
    } else {
        double wait = (1.0 - t) / s->rate;
        int64_t secs =
            wait >= FERRY_RATELIMIT_RETRY_MAX ? FERRY_RATELIMIT_RETRY_MAX : ceil_pos(wait);
        s->pool[i].tokens = t;
        s->refused++;
        if (secs < 1)
            secs = 1;
        if (ret_retry_after)
            *ret_retry_after = secs;
        r = -FERRY_EREFUSED;
    }
    /* Housekeeping: the least recently used bucket, once refilled, is as good as absent. */
    if (s->lru_tail != NIL && s->lru_tail != i && is_full(s, &s->pool[s->lru_tail], now))
        drop(s, s->lru_tail, rl->shard_bits);
    (void)pthread_mutex_unlock(&s->lock);
    return r;
}

FERRY_EXPORT int ferry_ratelimit_refund(ferry_ratelimit *rl, const void *key, size_t len)
{
    uint64_t hash, now;
    struct shard *s;
    uint32_t i;

    if (!rl || (!key && len > 0))
        return -EINVAL;
    if (!atomic_load_explicit(&rl->enabled, memory_order_relaxed))
        return 0;
    s = shard_of(rl, key, len, &hash);
    now = rl->clock(rl->clock_data);
    (void)pthread_mutex_lock(&s->lock);
    i = find(s, hash, rl->shard_bits);
    if (i != NIL && s->rate > 0) {
        double t = refill(s, &s->pool[i], now) + 1.0;
        s->pool[i].tokens = t < s->burst ? t : s->burst;
        if (now > s->pool[i].last_ns)
            s->pool[i].last_ns = now;
        if (s->allowed)
            s->allowed--;
    }
    (void)pthread_mutex_unlock(&s->lock);
    return 0;
}

FERRY_EXPORT bool ferry_ratelimit_enabled(const ferry_ratelimit *rl)
{
    return rl && atomic_load(&rl->enabled);
}

FERRY_EXPORT int ferry_ratelimit_get_stats(const ferry_ratelimit *rl,
                                           ferry_ratelimit_stats *ret_stats)
{
    ferry_ratelimit_stats st = {0};

    if (!rl || !ret_stats)
        return -EINVAL;
    for (unsigned i = 0; i < rl->n_shards; i++) {
        struct shard *s = &rl->shards[i];
        (void)pthread_mutex_lock(&s->lock);
        st.tracked += s->count;
        st.allowed += s->allowed;
        st.refused += s->refused;
        st.evicted += s->evicted;
        st.max_keys += s->cap;
        if (i == 0) {
            st.rate = s->rate;
            st.burst = (unsigned)s->burst;
        }
        (void)pthread_mutex_unlock(&s->lock);
    }
    *ret_stats = st;
    return 0;
}

FERRY_EXPORT size_t ferry_ratelimit_size(const ferry_ratelimit *rl)
{
    ferry_ratelimit_stats st;
    if (!rl || ferry_ratelimit_get_stats(rl, &st) < 0)
        return 0;
    return st.tracked;
}
