/* lib/oidc.c - trusted issuers, their key sets, and token validation per profile.
 *
 * Data structures, in reading order:
 * - struct issuer: one trusted issuer, reference-counted by the issuer sets holding it. Its
 *   configuration (and its fingerprint, which a reload compares) is immutable after creation;
 *   its key-set cache (current set, expiry, discovered jwks_uri, fetch bookkeeping) is guarded
 *   by issuer->lock. issuer->fetch_lock serialises network fetches of one issuer (single
 *   flight); a verifier that already has a usable set only try-locks it, so a slow IdP never
 *   blocks tokens whose key is known. Counters are atomics.
 * - struct issuer_set: an immutable snapshot of the configured issuers in configuration order
 *   plus a sorted index (binary search by the exact issuer bytes). Configuration calls build
 *   a new set and publish it with one atomic pointer exchange; a verification takes a
 *   reference to the current set without a lock (set_acquire) and keeps it to the end.
 * - struct ferry_oidc: the current set, the clock, the replay cache (which belongs to the
 *   store, not the set, so it survives reloads) and the store-wide counters.
 * - struct replay: (iss, jti) pairs as 128-bit salted SHA-256 digests in a chained hash table
 *   over a slab of entries, with a min-heap on expiry so that expired entries are evicted
 *   first and a full cache of live entries fails closed.
 *
 * Verification order: strict JWS parse -> claims JSON -> issuer by "iss" (no network for
 * unknown issuers) -> alg allow-list -> key by kid in that issuer's set (one refresh per
 * cooldown for an unknown kid) -> key/alg fit -> signature -> typ and claims of the profile ->
 * identity -> replay cache (last, so that a jti is used up only by an accepted token).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "basic/errbuf.h"
#include "basic/b64.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/http.h"
#include "ferry/jose.h"
#include "ferry/json.h"
#include "ferry/oidc.h"

/* Defaults and limits of the issuer configuration (documented in docs/configuration.md). */
#define DEFAULT_LEEWAY 60
#define MAX_LEEWAY 3600
#define DEFAULT_MAX_LIFETIME 86400
#define MAX_MAX_LIFETIME (366 * 86400)
#define DEFAULT_MIN_TTL 60
#define DEFAULT_MAX_TTL 86400
#define DEFAULT_DEFAULT_TTL 3600
#define DEFAULT_COOLDOWN 30
#define DEFAULT_STALE_WINDOW 3600
#define MAX_CACHE_SECONDS (30 * 86400)
#define DEFAULT_CONNECT_MS 3000
#define MAX_CONNECT_MS 60000
#define DEFAULT_TIMEOUT_MS 10000
#define MAX_TIMEOUT_MS 120000
#define DEFAULT_REPLAY_MAX 100000
#define MAX_REPLAY_MAX 10000000
#define MAX_AUDIENCES 64
#define MAX_REQUIRED_CLAIMS 64
#define MAX_NAME_LEN 1024 /* issuer and audience strings */
#define MAX_PATH_LEN 4096
#define MAX_URL_LEN 2048
#define DISCOVERY_SUFFIX "/.well-known/openid-configuration"

/* ---- names ---------------------------------------------------------------------------- */

static const char *const profile_names[] = {
    [FERRY_PROFILE_ID_TOKEN] = "id_token",     [FERRY_PROFILE_ACCESS_TOKEN] = "access_token",
    [FERRY_PROFILE_KUBERNETES] = "kubernetes", [FERRY_PROFILE_GITHUB] = "github_actions",
    [FERRY_PROFILE_FERRY] = "ferry",
};

/* Config name of a profile (static string), or NULL for an unknown value. */
FERRY_EXPORT const char *ferry_profile_name(ferry_profile p)
{
    if ((size_t)p >= ARRAY_SIZE(profile_names))
        return NULL;
    return profile_names[p];
}

/* Profile for a config name; 0 for NULL or an unknown name (exact, case-sensitive). */
FERRY_EXPORT ferry_profile ferry_profile_from_name(const char *name)
{
    if (!name)
        return 0;
    for (size_t i = 0; i < ARRAY_SIZE(profile_names); i++)
        if (profile_names[i] && strcmp(profile_names[i], name) == 0)
            return (ferry_profile)i;
    return 0;
}

static const char *const reason_names[FERRY_REASON_MAX] = {
    [FERRY_REASON_OK] = "ok",
    [FERRY_REASON_TOO_LARGE] = "too_large",
    [FERRY_REASON_MALFORMED] = "malformed",
    [FERRY_REASON_BAD_HEADER] = "bad_header",
    [FERRY_REASON_ALG_NOT_ALLOWED] = "alg_not_allowed",
    [FERRY_REASON_UNKNOWN_ISSUER] = "unknown_issuer",
    [FERRY_REASON_ISSUER_UNAVAILABLE] = "issuer_unavailable",
    [FERRY_REASON_UNKNOWN_KID] = "unknown_kid",
    [FERRY_REASON_KEY_MISMATCH] = "key_mismatch",
    [FERRY_REASON_BAD_SIGNATURE] = "bad_signature",
    [FERRY_REASON_BAD_TYP] = "bad_typ",
    [FERRY_REASON_MISSING_CLAIM] = "missing_claim",
    [FERRY_REASON_BAD_CLAIM] = "bad_claim",
    [FERRY_REASON_EXPIRED] = "expired",
    [FERRY_REASON_NOT_YET_VALID] = "not_yet_valid",
    [FERRY_REASON_ISSUED_IN_FUTURE] = "issued_in_future",
    [FERRY_REASON_LIFETIME_TOO_LONG] = "lifetime_too_long",
    [FERRY_REASON_BAD_AUDIENCE] = "bad_audience",
    [FERRY_REASON_BAD_SUBJECT] = "bad_subject",
    [FERRY_REASON_CLAIM_MISMATCH] = "claim_mismatch",
    [FERRY_REASON_REPLAYED] = "replayed",
    [FERRY_REASON_REPLAY_CACHE_FULL] = "replay_cache_full",
    [FERRY_REASON_INTERNAL] = "internal",
};

/* Stable snake_case name of a reason (static string); "unknown" for out-of-range values. */
FERRY_EXPORT const char *ferry_reason_name(ferry_reason r)
{
    if ((size_t)r >= ARRAY_SIZE(reason_names) || !reason_names[r])
        return "unknown";
    return reason_names[r];
}

/* ---- identity ------------------------------------------------------------------------- */

/* Free an identity and everything it owns. Accepts NULL. */
FERRY_EXPORT void ferry_identity_free(ferry_identity *id)
{
    if (!id)
        return;
    free(id->issuer);
    free(id->subject);
    json_decref(id->audience);
    free(id->kid);
    free(id->jti);
    json_decref(id->claims);
    free(id);
}

/* New JSON object describing id (see oidc.h). Returns 0, -EINVAL or -ENOMEM. */
FERRY_EXPORT int ferry_identity_to_json(const ferry_identity *id, json_t **ret_json)
{
    json_t *o;

    if (!id || !ret_json || !id->issuer || !id->subject)
        return -EINVAL;
    o = json_pack("{s:b, s:s, s:s, s:O?, s:s?, s:s?, s:s?, s:s?, s:I, s:I, s:I, s:O?}",
                  "verified", 1, "issuer", id->issuer, "subject", id->subject, "audience",
                  id->audience, "profile", ferry_profile_name(id->profile), "alg",
                  ferry_alg_name(id->alg), "kid", id->kid, "jti", id->jti, "exp",
                  (json_int_t)id->exp, "iat", (json_int_t)id->iat, "nbf", (json_int_t)id->nbf,
                  "claims", id->claims);
    if (!o)
        return -ENOMEM;
    *ret_json = o;
    return 0;
}

/* ---- small helpers -------------------------------------------------------------------- */

static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;

    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

static int64_t sat_sub(int64_t a, int64_t b)
{
    int64_t r;

    if (__builtin_sub_overflow(a, b, &r))
        return b < 0 ? INT64_MAX : INT64_MIN;
    return r;
}

static bool bytes_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

static bool json_string_is(const json_t *v, const char *s, size_t len)
{
    return json_is_string(v) && bytes_eq(json_string_value(v), json_string_length(v), s, len);
}

_printf_(3, 4) static int refuse(ferry_verify_result *res, ferry_reason reason, const char *fmt,
                                 ...)
{
    va_list ap;

    res->reason = reason;
    va_start(ap, fmt);
    (void)vsnprintf(res->detail, sizeof(res->detail), fmt, ap);
    va_end(ap);
    return -FERRY_EREFUSED;
}

#define cfg_error(errbuf, errlen, ...) ferry_errbuf_set(errbuf, errlen, -FERRY_ECONFIG, __VA_ARGS__)

/* ---- issuers -------------------------------------------------------------------------- */

enum key_source {
    SRC_DISCOVERY,
    SRC_JWKS_URI,
    SRC_FILE,
    SRC_INLINE,
};

static const char *const source_names[] = {
    [SRC_DISCOVERY] = "discovery",
    [SRC_JWKS_URI] = "jwks_uri",
    [SRC_FILE] = "jwks_file",
    [SRC_INLINE] = "jwks",
};

/* Monotonic counters (ferry_oidc_counters), bumped with relaxed atomic adds: nothing is
 * ordered by them, and an add on the verify path costs no lock. */
struct counters {
    atomic_uint_fast64_t accepted, refused;
    atomic_uint_fast64_t discovery_fetches, discovery_failures;
    atomic_uint_fast64_t jwks_fetches, jwks_failures;
    atomic_uint_fast64_t refresh_suppressed, stale_serves;
};

#define COUNT(c, field) atomic_fetch_add_explicit(&(c)->field, 1, memory_order_relaxed)
#define LOAD(c, field) ((uint64_t)atomic_load_explicit(&(c)->field, memory_order_relaxed))

static void counters_read(const struct counters *c, ferry_oidc_counters *out)
{
    out->accepted = LOAD(c, accepted);
    out->refused = LOAD(c, refused);
    out->discovery_fetches = LOAD(c, discovery_fetches);
    out->discovery_failures = LOAD(c, discovery_failures);
    out->jwks_fetches = LOAD(c, jwks_fetches);
    out->jwks_failures = LOAD(c, jwks_failures);
    out->refresh_suppressed = LOAD(c, refresh_suppressed);
    out->stale_serves = LOAD(c, stale_serves);
}

#define FP_LEN 32 /* SHA-256 */

struct issuer {
    /* Sets holding this issuer (struct issuer_set); freed by the last issuer_unref. An issuer
     * whose configuration a reload leaves unchanged moves into the new set as it is, with its
     * cache, counters and locks. */
    atomic_long refs;

    /* configuration: immutable after creation */
    unsigned char conf_fp[FP_LEN]; /* SHA-256 of the canonical configuration JSON */
    unsigned char file_fp[FP_LEN]; /* SHA-256 of the jwks_file's bytes; zero for others */
    char *name;
    size_t name_len;
    ferry_profile profile;
    bool alg_allowed[FERRY_ALG_MAX];
    char **audiences;
    size_t *audience_lens;
    size_t n_audiences;
    int64_t leeway;
    int64_t max_lifetime;
    json_t *required_claims; /* own deep copy, or NULL */
    bool require_azp;
    enum key_source source;
    char *conf_jwks_uri; /* SRC_JWKS_URI */
    char *discovery_url; /* SRC_DISCOVERY */
    char *ca_file;
    char *proxy;
    ferry_http_options http;
    int64_t min_ttl, max_ttl, default_ttl, cooldown, stale_window;

    /* key-set cache, guarded by lock (file and inline sets: set once at add, never changed) */
    pthread_mutex_t lock;
    pthread_mutex_t fetch_lock;
    bool locks_ready;
    ferry_jwks *jwks;      /* own reference, or NULL */
    int64_t jwks_expires;  /* store clock; the set is fresh before, stale until + window */
    char *jwks_uri;        /* from discovery */
    int64_t disc_expires;  /* store clock */
    bool attempted;        /* a fetch was attempted since creation or flush */
    int64_t last_attempt;  /* store clock of the last attempt (any reason) */
    uint64_t completed;    /* incremented when an attempt ends (whatever its outcome) */
    bool last_ok;          /* that attempt installed a set */
    bool kid_refreshed;    /* a refresh for an unknown kid happened since creation or flush */
    int64_t last_kid_refresh;
    uint64_t generation;   /* incremented whenever a fetched set is installed */
    uint64_t flushes;      /* incremented by every flush; a fetch begun before one is dropped */
    char last_error[160];  /* why the last fetch failed ("" after success) */

    /* statistics: this issuer's, and the store's totals (which outlive the issuer) */
    struct counters stats;
    struct counters *totals;
};

/* Count an event for the issuer and in the store's totals. */
#define ISSUER_COUNT(is, field)                                                              \
    do {                                                                                     \
        COUNT(&(is)->stats, field);                                                          \
        COUNT((is)->totals, field);                                                          \
    } while (0)

static bool issuer_is_remote(const struct issuer *is)
{
    return is->source == SRC_DISCOVERY || is->source == SRC_JWKS_URI;
}

static void issuer_free(struct issuer *is)
{
    if (!is)
        return;
    free(is->name);
    for (size_t i = 0; i < is->n_audiences; i++)
        free(is->audiences[i]);
    free(is->audiences);
    free(is->audience_lens);
    json_decref(is->required_claims);
    free(is->conf_jwks_uri);
    free(is->discovery_url);
    free(is->ca_file);
    free(is->proxy);
    ferry_jwks_unref(is->jwks);
    free(is->jwks_uri);
    if (is->locks_ready) {
        (void)pthread_mutex_destroy(&is->lock);
        (void)pthread_mutex_destroy(&is->fetch_lock);
    }
    free(is);
}

static struct issuer *issuer_ref(struct issuer *is)
{
    atomic_fetch_add_explicit(&is->refs, 1, memory_order_relaxed);
    return is;
}

/* Drop one reference; the last frees the issuer. Accepts NULL. */
static void issuer_unref(struct issuer *is)
{
    if (is && atomic_fetch_sub_explicit(&is->refs, 1, memory_order_acq_rel) == 1)
        issuer_free(is);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct issuer *, issuer_unref);

/* ---- replay cache --------------------------------------------------------------------- */

#define RP_NIL UINT32_MAX
#define RP_KEY_LEN 16

struct rp_entry {
    unsigned char key[RP_KEY_LEN];
    int64_t expiry; /* evicted once now >= expiry */
    uint32_t next;  /* bucket chain, or free list */
    uint32_t heap_pos;
};

struct replay {
    pthread_mutex_t lock;
    size_t max;
    struct rp_entry *e;
    uint32_t e_alloc, e_used, free_head;
    uint32_t *bucket;
    uint32_t nbucket; /* power of two, or 0 */
    uint32_t *heap;   /* entry indices, min-heap on expiry */
    uint32_t count;
    unsigned char salt[32];
};

static void rp_release(struct replay *rp)
{
    free(rp->e);
    free(rp->bucket);
    free(rp->heap);
    rp->e = NULL;
    rp->bucket = NULL;
    rp->heap = NULL;
    rp->e_alloc = rp->e_used = rp->count = rp->nbucket = 0;
    rp->free_head = RP_NIL;
}

static uint32_t rp_hash(const struct replay *rp, const unsigned char *key)
{
    uint32_t h;

    memcpy(&h, key, sizeof(h));
    return h & (rp->nbucket - 1);
}

static void rp_heap_set(struct replay *rp, uint32_t pos, uint32_t idx)
{
    rp->heap[pos] = idx;
    rp->e[idx].heap_pos = pos;
}

static void rp_sift_up(struct replay *rp, uint32_t pos)
{
    uint32_t idx = rp->heap[pos];

    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;

        if (rp->e[rp->heap[parent]].expiry <= rp->e[idx].expiry)
            break;
        rp_heap_set(rp, pos, rp->heap[parent]);
        pos = parent;
    }
    rp_heap_set(rp, pos, idx);
}

static void rp_sift_down(struct replay *rp, uint32_t pos)
{
    uint32_t idx = rp->heap[pos];

    for (;;) {
        uint32_t l = 2 * pos + 1, r = l + 1, m;

        if (l >= rp->count)
            break;
        m = l;
        if (r < rp->count && rp->e[rp->heap[r]].expiry < rp->e[rp->heap[l]].expiry)
            m = r;
        if (rp->e[idx].expiry <= rp->e[rp->heap[m]].expiry)
            break;
        rp_heap_set(rp, pos, rp->heap[m]);
        pos = m;
    }
    rp_heap_set(rp, pos, idx);
}

/* Remove the entry with the smallest expiry (the heap root). */
static void rp_pop_min(struct replay *rp)
{
    uint32_t idx = rp->heap[0];
    uint32_t *link = &rp->bucket[rp_hash(rp, rp->e[idx].key)];

    while (*link != idx)
        link = &rp->e[*link].next;
    *link = rp->e[idx].next;

    rp->count--;
    if (rp->count > 0) {
        rp_heap_set(rp, 0, rp->heap[rp->count]);
        rp_sift_down(rp, 0);
    }
    rp->e[idx].next = rp->free_head;
    rp->free_head = idx;
}

static bool rp_contains(const struct replay *rp, const unsigned char *key)
{
    if (!rp->nbucket)
        return false;
    for (uint32_t i = rp->bucket[rp_hash(rp, key)]; i != RP_NIL; i = rp->e[i].next)
        if (memcmp(rp->e[i].key, key, RP_KEY_LEN) == 0)
            return true;
    return false;
}

/* Make room for one more entry slot (below rp->max). 0 or -ENOMEM. */
static int rp_grow(struct replay *rp)
{
    size_t want = rp->e_alloc ? (size_t)rp->e_alloc * 2 : 256;
    uint32_t nb = rp->nbucket ? rp->nbucket : 256;
    struct rp_entry *ne;
    uint32_t *nh, *nbk;

    if (want > rp->max)
        want = rp->max;
    ne = reallocarray(rp->e, want, sizeof(*ne));
    if (!ne)
        return -ENOMEM;
    rp->e = ne;
    nh = reallocarray(rp->heap, want, sizeof(*nh));
    if (!nh)
        return -ENOMEM;
    rp->heap = nh;
    while (nb < want && nb < (UINT32_C(1) << 31))
        nb *= 2;
    if (nb != rp->nbucket) {
        nbk = malloc(sizeof(*nbk) * nb);
        if (!nbk)
            return -ENOMEM;
        for (uint32_t i = 0; i < nb; i++)
            nbk[i] = RP_NIL;
        free(rp->bucket);
        rp->bucket = nbk;
        rp->nbucket = nb;
        for (uint32_t h = 0; h < rp->count; h++) {
            uint32_t idx = rp->heap[h], b = rp_hash(rp, rp->e[idx].key);

            rp->e[idx].next = rp->bucket[b];
            rp->bucket[b] = idx;
        }
    }
    rp->e_alloc = (uint32_t)want;
    return 0;
}

/* Record key until expiry. Entries whose expiry has passed (<= now) are evicted first.
 * Returns 0, -FERRY_EDUPLICATE (seen before), -FERRY_EFULL or -ENOMEM. Caller holds the lock. */
static int rp_insert(struct replay *rp, const unsigned char *key, int64_t expiry, int64_t now)
{
    uint32_t idx, b;
    int r;

    while (rp->count > 0 && rp->e[rp->heap[0]].expiry <= now)
        rp_pop_min(rp);
    if (rp_contains(rp, key))
        return -FERRY_EDUPLICATE;
    if (rp->count >= rp->max)
        return -FERRY_EFULL;
    if (rp->free_head == RP_NIL && rp->e_used == rp->e_alloc) {
        r = rp_grow(rp);
        if (r < 0)
            return r;
    }
    if (rp->free_head != RP_NIL) {
        idx = rp->free_head;
        rp->free_head = rp->e[idx].next;
    } else {
        idx = rp->e_used++;
    }
    memcpy(rp->e[idx].key, key, RP_KEY_LEN);
    rp->e[idx].expiry = expiry;
    b = rp_hash(rp, key);
    rp->e[idx].next = rp->bucket[b];
    rp->bucket[b] = idx;
    rp->heap[rp->count] = idx;
    rp->e[idx].heap_pos = rp->count;
    rp->count++;
    rp_sift_up(rp, rp->count - 1);
    return 0;
}

/* 128-bit digest of (salt, iss, jti); the length prefix keeps ("ab","c") apart from ("a","bc"). */
static int rp_key(const struct replay *rp, const char *iss, size_t iss_len, const char *jti,
                  size_t jti_len, unsigned char ret[RP_KEY_LEN])
{
    unsigned char md[EVP_MAX_MD_SIZE], len_be[8];
    unsigned int md_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int r = -FERRY_ECRYPTO;

    if (!ctx)
        return -ENOMEM;
    for (int i = 0; i < 8; i++)
        len_be[i] = (unsigned char)((uint64_t)iss_len >> (56 - 8 * i));
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
        EVP_DigestUpdate(ctx, rp->salt, sizeof(rp->salt)) == 1 &&
        EVP_DigestUpdate(ctx, len_be, sizeof(len_be)) == 1 &&
        EVP_DigestUpdate(ctx, iss, iss_len) == 1 && EVP_DigestUpdate(ctx, jti, jti_len) == 1 &&
        EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len >= RP_KEY_LEN) {
        memcpy(ret, md, RP_KEY_LEN);
        r = 0;
    }
    EVP_MD_CTX_free(ctx);
    return r;
}

/* ---- the store ------------------------------------------------------------------------ */

/* An immutable snapshot of the configured issuers. A verification takes a reference to the
 * current set and uses it to the end, so a reload that replaces the set (and may remove
 * issuers) never changes or frees what a verification in progress is looking at. Each set
 * holds a reference to each of its issuers. */
struct issuer_set {
    atomic_long refs;
    struct issuer **issuers; /* configuration order */
    struct issuer **index;   /* sorted by (bytes, length) */
    size_t n;
};

struct ferry_oidc {
    ferry_clock_fn clock;
    void *clock_data;

    /* The current issuer set, never NULL. Readers (set_acquire) take a reference without a
     * lock; writers hold config_lock and publish a new set with set_publish. `entering` counts
     * readers between loading `set` and taking their reference: set_publish waits for it to
     * reach zero before it drops the old set's reference, so no reader can take a reference
     * to a set that is being freed. */
    _Atomic(struct issuer_set *) set;
    atomic_long entering;
    pthread_mutex_t config_lock; /* serialises add_issuer, load_config and reload_config */

    struct replay replay;
    size_t replay_max_default; /* what a reload without replay_cache_size goes back to */
    /* The smallest leeway of any issuer ever configured (lowered under config_lock before the
     * set holding the issuer is published). Entries are recorded until exp + their issuer's
     * leeway, so none is evicted before exp + this floor; consume_jti refuses from then on, so
     * an issuer whose leeway a reload raised cannot accept a jti whose entry is gone. */
    atomic_int_fast64_t leeway_floor;

    /* statistics (ferry_oidc_get_stats) */
    struct counters totals;
    atomic_uint_fast64_t by_reason[FERRY_REASON_MAX];
    atomic_uint_fast64_t reloads, reload_failures;
};

static int64_t store_now(const ferry_oidc *o)
{
    return o->clock ? o->clock(o->clock_data) : (int64_t)time(NULL);
}

static void set_free(struct issuer_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        issuer_unref(s->issuers[i]);
    free(s->issuers);
    free(s->index);
    free(s);
}

static void set_unref(struct issuer_set *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        set_free(s);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct issuer_set *, set_unref);

/* A new reference to the current set; release it with set_unref. Lock-free: two atomic adds
 * on `entering` and one on the set's count (see struct ferry_oidc). */
static struct issuer_set *set_acquire(ferry_oidc *o)
{
    struct issuer_set *s;

    atomic_fetch_add(&o->entering, 1);
    s = atomic_load(&o->set);
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    atomic_fetch_sub(&o->entering, 1);
    return s;
}

/* Make s (whose reference the store takes over) the current set. Caller holds config_lock.
 * A reader that loaded the old pointer did so after raising `entering` and lowers it only
 * after taking its reference; all of that is sequentially consistent, so once `entering` is
 * seen at zero after the exchange, every such reader holds its reference and dropping the
 * store's reference cannot free the set under it. Readers stay in that window for a few
 * instructions, so the wait is short; a reader preempted inside it delays only this call. */
static void set_publish(ferry_oidc *o, struct issuer_set *s)
{
    struct issuer_set *old = atomic_exchange(&o->set, s);

    while (atomic_load(&o->entering) != 0)
        (void)sched_yield();
    set_unref(old);
}

static int name_cmp(const char *a, size_t alen, const struct issuer *b)
{
    int c = memcmp(a, b->name, alen < b->name_len ? alen : b->name_len);

    if (c)
        return c;
    return (alen > b->name_len) - (alen < b->name_len);
}

/* Index position in the first n entries of index where name is or would be inserted. */
static size_t index_search(struct issuer *const *index, size_t n, const char *name, size_t len,
                           bool *ret_found)
{
    size_t lo = 0, hi = n;

    *ret_found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(name, len, index[mid]);

        if (c == 0) {
            *ret_found = true;
            return mid;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static struct issuer *set_find(const struct issuer_set *s, const char *name, size_t len)
{
    bool found;
    size_t pos = index_search(s->index, s->n, name, len, &found);

    return found ? s->index[pos] : NULL;
}

/* A new set of the first n_keep issuers of base (NULL: none) followed by add[0..n_add), each
 * given a new reference. Returns 0, -ENOMEM, or -FERRY_EDUPLICATE with *ret_dup the index in
 * add of the first issuer whose name is already taken. */
static int set_build(const struct issuer_set *base, size_t n_keep, struct issuer *const *add,
                     size_t n_add, struct issuer_set **ret, size_t *ret_dup)
{
    _cleanup_(set_unrefp) struct issuer_set *s = NULL;
    size_t total = n_keep + n_add;

    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    atomic_init(&s->refs, 1);
    s->issuers = calloc(total ? total : 1, sizeof(*s->issuers));
    s->index = calloc(total ? total : 1, sizeof(*s->index));
    if (!s->issuers || !s->index)
        return -ENOMEM;
    for (size_t i = 0; i < total; i++) {
        struct issuer *is = i < n_keep ? base->issuers[i] : add[i - n_keep];
        bool found;
        size_t pos = index_search(s->index, s->n, is->name, is->name_len, &found);

        if (found) {
            *ret_dup = i - n_keep;
            return -FERRY_EDUPLICATE;
        }
        memmove(s->index + pos + 1, s->index + pos, (s->n - pos) * sizeof(*s->index));
        s->index[pos] = is;
        s->issuers[s->n++] = issuer_ref(is);
    }
    *ret = TAKE_PTR(s);
    return 0;
}

/* New empty trust store; opts may be NULL. Returns 0, -ENOMEM or -FERRY_ECRYPTO. */
FERRY_EXPORT int ferry_oidc_new(const ferry_oidc_options *opts, ferry_oidc **ret_oidc)
{
    _cleanup_free_ ferry_oidc *o = NULL;
    struct issuer_set *empty = NULL;
    size_t none = 0;
    int r;

    if (!ret_oidc)
        return -EINVAL;
    if (opts && opts->replay_cache_max > MAX_REPLAY_MAX)
        return -EINVAL;
    o = calloc(1, sizeof(*o));
    if (!o)
        return -ENOMEM;
    if (opts) {
        o->clock = opts->clock;
        o->clock_data = opts->clock_data;
        o->replay.max = opts->replay_cache_max;
    }
    if (!o->replay.max)
        o->replay.max = DEFAULT_REPLAY_MAX;
    o->replay_max_default = o->replay.max;
    o->replay.free_head = RP_NIL;
    if (RAND_bytes(o->replay.salt, sizeof(o->replay.salt)) != 1)
        return -FERRY_ECRYPTO;
    r = set_build(NULL, 0, NULL, 0, &empty, &none);
    if (r < 0)
        return r;
    if (pthread_mutex_init(&o->replay.lock, NULL) != 0) {
        set_unref(empty);
        return -ENOMEM;
    }
    if (pthread_mutex_init(&o->config_lock, NULL) != 0) {
        (void)pthread_mutex_destroy(&o->replay.lock);
        set_unref(empty);
        return -ENOMEM;
    }
    atomic_init(&o->set, empty);
    atomic_init(&o->entering, 0);
    atomic_init(&o->leeway_floor, MAX_LEEWAY);
    *ret_oidc = TAKE_PTR(o);
    return 0;
}

/* Free the store, its issuers and cached key sets. Accepts NULL. Not concurrent with any other
 * call on the store. */
FERRY_EXPORT void ferry_oidc_free(ferry_oidc *o)
{
    if (!o)
        return;
    set_unref(atomic_load(&o->set));
    rp_release(&o->replay);
    (void)pthread_mutex_destroy(&o->replay.lock);
    (void)pthread_mutex_destroy(&o->config_lock);
    free(o);
}

/* Number of configured issuers. Thread-safe. */
FERRY_EXPORT size_t ferry_oidc_issuer_count(const ferry_oidc *o)
{
    struct issuer_set *s;
    size_t n;

    if (!o)
        return 0;
    /* The count itself is read-only; acquiring the set only moves the reference counts. */
    s = set_acquire((ferry_oidc *)o);
    n = s->n;
    set_unref(s);
    return n;
}

/* ---- configuration -------------------------------------------------------------------- */

static const char *const issuer_members[] = {
    "issuer",       "audiences",     "discovery",           "jwks_uri",   "jwks_file",
    "jwks",         "algorithms",    "profile",             "leeway",     "max_lifetime",
    "required_claims", "require_azp", "allow_http_loopback", "ca_file",    "proxy",
    "jwks_cache",   "fetch",
};
static const char *const cache_members[] = {
    "min_ttl", "max_ttl", "default_ttl", "refresh_cooldown", "stale_window",
};
static const char *const fetch_members[] = {
    "connect_timeout_ms",
    "timeout_ms",
    "max_bytes",
};

static bool name_in(const char *key, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(key, names[i]) == 0)
            return true;
    return false;
}

static int cfg_check_members(const json_t *obj, const char *ctx, const char *const *names,
                             size_t n, char *errbuf, size_t errlen)
{
    const char *key;
    json_t *val;

    json_object_foreach((json_t *)obj, key, val) {
        (void)val;
        if (!name_in(key, names, n))
            return cfg_error(errbuf, errlen, "unknown member \"%.64s\" in %s", key, ctx);
    }
    return 0;
}

/* Optional integer member in [min, max]; def when absent. */
static int cfg_int(const json_t *obj, const char *key, const char *ctx, int64_t min, int64_t max,
                   int64_t def, int64_t *ret, char *errbuf, size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    json_int_t x;

    if (!v) {
        *ret = def;
        return 0;
    }
    if (!json_is_integer(v))
        return cfg_error(errbuf, errlen, "%s%s must be an integer", ctx, key);
    x = json_integer_value(v);
    if (x < min || x > max)
        return cfg_error(errbuf, errlen, "%s%s must be between %" PRId64 " and %" PRId64, ctx,
                         key, min, max);
    *ret = x;
    return 0;
}

static int cfg_bool(const json_t *obj, const char *key, bool *ret, char *errbuf, size_t errlen)
{
    json_t *v = json_object_get(obj, key);

    if (!v) {
        *ret = false;
        return 0;
    }
    if (!json_is_boolean(v))
        return cfg_error(errbuf, errlen, "%s must be true or false", key);
    *ret = json_is_true(v);
    return 0;
}

/* Optional non-empty string member without NUL, at most maxlen bytes; new copy or NULL. */
static int cfg_string(const json_t *obj, const char *key, size_t maxlen, char **ret,
                      char *errbuf, size_t errlen)
{
    json_t *v = json_object_get(obj, key);

    *ret = NULL;
    if (!v)
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0)
        return cfg_error(errbuf, errlen, "%s must be a non-empty string", key);
    if (json_string_length(v) > maxlen || strlen(json_string_value(v)) != json_string_length(v))
        return cfg_error(errbuf, errlen, "%s is too long or contains NUL", key);
    *ret = strdup(json_string_value(v));
    return *ret ? 0 : -ENOMEM;
}

static int cfg_audiences(struct issuer *is, const json_t *conf, char *errbuf, size_t errlen)
{
    json_t *a = json_object_get(conf, "audiences"), *v;
    size_t i;

    if (!a)
        return cfg_error(errbuf, errlen, "audiences is required");
    if (!json_is_array(a) || json_array_size(a) == 0)
        return cfg_error(errbuf, errlen, "audiences must be a non-empty array of strings");
    if (json_array_size(a) > MAX_AUDIENCES)
        return cfg_error(errbuf, errlen, "audiences has more than %d entries", MAX_AUDIENCES);
    is->audiences = calloc(json_array_size(a), sizeof(*is->audiences));
    is->audience_lens = calloc(json_array_size(a), sizeof(*is->audience_lens));
    if (!is->audiences || !is->audience_lens)
        return -ENOMEM;
    json_array_foreach(a, i, v) {
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) > MAX_NAME_LEN)
            return cfg_error(errbuf, errlen, "audiences[%zu] must be a non-empty string", i);
        is->audiences[i] = malloc(json_string_length(v) + 1);
        if (!is->audiences[i])
            return -ENOMEM;
        memcpy(is->audiences[i], json_string_value(v), json_string_length(v) + 1);
        is->audience_lens[i] = json_string_length(v);
        is->n_audiences = i + 1;
    }
    return 0;
}

static int cfg_algorithms(struct issuer *is, const json_t *conf, char *errbuf, size_t errlen)
{
    json_t *a = json_object_get(conf, "algorithms"), *v;
    size_t i;

    if (!a) {
        is->alg_allowed[FERRY_ALG_RS256] = true;
        return 0;
    }
    if (!json_is_array(a) || json_array_size(a) == 0)
        return cfg_error(errbuf, errlen, "algorithms must be a non-empty array of JWA names");
    json_array_foreach(a, i, v) {
        ferry_alg alg;

        if (!json_is_string(v))
            return cfg_error(errbuf, errlen, "algorithms[%zu] must be a string", i);
        alg = ferry_alg_from_name(json_string_value(v));
        if (alg == FERRY_ALG_UNKNOWN || strlen(json_string_value(v)) != json_string_length(v))
            return cfg_error(errbuf, errlen, "algorithms[%zu]: unsupported algorithm \"%.32s\"",
                             i, json_string_value(v));
        is->alg_allowed[alg] = true;
    }
    return 0;
}

/* SHA-256 of len bytes at p into ret (FP_LEN bytes). 0 or -FERRY_ECRYPTO. */
static int fingerprint(const void *p, size_t len, unsigned char *ret)
{
    unsigned int n = 0;

    if (EVP_Digest(p, len, ret, &n, EVP_sha256(), NULL) != 1 || n != FP_LEN)
        return -FERRY_ECRYPTO;
    return 0;
}

/* Fingerprint of an issuer configuration in canonical form (compact, members sorted at every
 * level), so that a reload recognises an unchanged issuer however its file is laid out. */
static int conf_fingerprint(const json_t *conf, unsigned char *ret)
{
    char *text = json_dumps(conf, JSON_COMPACT | JSON_SORT_KEYS);
    int r;

    if (!text)
        return -ENOMEM;
    r = fingerprint(text, strlen(text), ret);
    free(text);
    return r;
}

/* Read and import a jwks_file; ret_fp gets the fingerprint of its bytes. */
static int read_jwks_file(const char *path, ferry_jwks **ret, size_t *ret_skipped,
                          unsigned char *ret_fp, char *errbuf, size_t errlen)
{
    _cleanup_free_ char *buf = NULL;
    struct stat st;
    size_t len = 0;
    int fd, r;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return cfg_error(errbuf, errlen, "jwks_file %.200s: cannot open: %s", path,
                         strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        r = cfg_error(errbuf, errlen, "jwks_file %.200s: not a regular file", path);
        goto out;
    }
    if (st.st_size > FERRY_JWKS_MAX_LEN) {
        r = cfg_error(errbuf, errlen, "jwks_file %.200s: larger than %d bytes", path,
                      FERRY_JWKS_MAX_LEN);
        goto out;
    }
    buf = malloc(FERRY_JWKS_MAX_LEN + 1);
    if (!buf) {
        r = -ENOMEM;
        goto out;
    }
    /* Read up to the cap + 1 so that a file growing after fstat is still caught. */
    for (;;) {
        ssize_t n = read(fd, buf + len, FERRY_JWKS_MAX_LEN + 1 - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = cfg_error(errbuf, errlen, "jwks_file %.200s: read failed: %s", path,
                          strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > FERRY_JWKS_MAX_LEN) {
            r = cfg_error(errbuf, errlen, "jwks_file %.200s: larger than %d bytes", path,
                          FERRY_JWKS_MAX_LEN);
            goto out;
        }
    }
    r = fingerprint(buf, len, ret_fp);
    if (r < 0) {
        (void)cfg_error(errbuf, errlen, "jwks_file %.200s: %s while reading it", path,
                        ferry_strerror(r));
        goto out;
    }
    r = ferry_jwks_from_buffer(buf, len, ret, ret_skipped);
    if (r == -ENOMEM || r == -FERRY_ECRYPTO) /* our failure, not the file's */
        (void)cfg_error(errbuf, errlen, "jwks_file %.200s: %s while importing the key set", path,
                        ferry_strerror(r));
    else if (r < 0)
        r = cfg_error(errbuf, errlen, "jwks_file %.200s: not a usable JWK set: %s", path,
                      ferry_strerror(r));
out:
    (void)close(fd);
    return r;
}

static int cfg_key_source(struct issuer *is, const json_t *conf, char *errbuf, size_t errlen)
{
    json_t *jd = json_object_get(conf, "discovery");
    json_t *ju = json_object_get(conf, "jwks_uri");
    json_t *jf = json_object_get(conf, "jwks_file");
    json_t *ji = json_object_get(conf, "jwks");
    _cleanup_free_ char *path = NULL;
    size_t skipped = 0;
    int n, r;

    if (jd && !json_is_boolean(jd))
        return cfg_error(errbuf, errlen, "discovery must be true or false");
    n = (jd && json_is_true(jd)) + !!ju + !!jf + !!ji;
    if (n > 1)
        return cfg_error(errbuf, errlen,
                         "more than one key source (discovery, jwks_uri, jwks_file, jwks)");
    if (n == 0 && jd)
        return cfg_error(errbuf, errlen,
                         "no key source: discovery is false and no jwks_uri, jwks_file or jwks");

    if (ju) {
        is->source = SRC_JWKS_URI;
        r = cfg_string(conf, "jwks_uri", MAX_URL_LEN, &is->conf_jwks_uri, errbuf, errlen);
        if (r < 0)
            return r;
        if (ferry_http_check_url(is->conf_jwks_uri, &is->http) < 0)
            return cfg_error(errbuf, errlen,
                             "jwks_uri refused by the URL policy (https required)");
        return 0;
    }
    if (jf) {
        is->source = SRC_FILE;
        r = cfg_string(conf, "jwks_file", MAX_PATH_LEN, &path, errbuf, errlen);
        if (r < 0)
            return r;
        r = read_jwks_file(path, &is->jwks, &skipped, is->file_fp, errbuf, errlen);
        if (r < 0)
            return r;
    } else if (ji) {
        is->source = SRC_INLINE;
        if (!json_is_object(ji))
            return cfg_error(errbuf, errlen, "jwks must be a JWK set object");
        r = ferry_jwks_from_json(ji, &is->jwks, &skipped);
        if (r == -ENOMEM || r == -FERRY_ECRYPTO) { /* our failure, not the configuration's */
            (void)cfg_error(errbuf, errlen, "jwks: %s while importing the key set",
                            ferry_strerror(r));
            return r;
        }
        if (r < 0)
            return cfg_error(errbuf, errlen, "jwks: not a usable JWK set: %s",
                             ferry_strerror(r));
    } else {
        size_t base = is->name_len;

        is->source = SRC_DISCOVERY;
        if (base > 0 && is->name[base - 1] == '/')
            base--;
        is->discovery_url = malloc(base + sizeof(DISCOVERY_SUFFIX));
        if (!is->discovery_url)
            return -ENOMEM;
        memcpy(is->discovery_url, is->name, base);
        memcpy(is->discovery_url + base, DISCOVERY_SUFFIX, sizeof(DISCOVERY_SUFFIX));
        if (ferry_http_check_url(is->discovery_url, &is->http) < 0)
            return cfg_error(errbuf, errlen,
                             "discovery URL of the issuer refused by the URL policy "
                             "(https required)");
        return 0;
    }
    if (ferry_jwks_count(is->jwks) == 0)
        return cfg_error(errbuf, errlen, "%s: key set has no usable keys (%zu refused)",
                         is->source == SRC_FILE ? "jwks_file" : "jwks", skipped);
    return 0;
}

static int cfg_http(struct issuer *is, const json_t *conf, char *errbuf, size_t errlen)
{
    json_t *f = json_object_get(conf, "fetch");
    int64_t v;
    int r;

    r = cfg_bool(conf, "allow_http_loopback", &is->http.allow_http_loopback, errbuf, errlen);
    if (r < 0)
        return r;
    r = cfg_string(conf, "ca_file", MAX_PATH_LEN, &is->ca_file, errbuf, errlen);
    if (r < 0)
        return r;
    if (is->ca_file && access(is->ca_file, R_OK) < 0)
        return cfg_error(errbuf, errlen, "ca_file: cannot read: %s", strerror(errno));
    r = cfg_string(conf, "proxy", MAX_URL_LEN, &is->proxy, errbuf, errlen);
    if (r < 0)
        return r;
    is->http.ca_file = is->ca_file;
    is->http.proxy = is->proxy;
    is->http.max_redirects = -1;
    if (f && !json_is_object(f))
        return cfg_error(errbuf, errlen, "fetch must be an object");
    if (f) {
        r = cfg_check_members(f, "fetch", fetch_members, ARRAY_SIZE(fetch_members), errbuf,
                              errlen);
        if (r < 0)
            return r;
    }
    r = cfg_int(f, "connect_timeout_ms", "fetch.", 1, MAX_CONNECT_MS, DEFAULT_CONNECT_MS, &v,
                errbuf, errlen);
    if (r < 0)
        return r;
    is->http.connect_timeout_ms = (long)v;
    r = cfg_int(f, "timeout_ms", "fetch.", 1, MAX_TIMEOUT_MS, DEFAULT_TIMEOUT_MS, &v, errbuf,
                errlen);
    if (r < 0)
        return r;
    is->http.total_timeout_ms = (long)v;
    r = cfg_int(f, "max_bytes", "fetch.", 1, FERRY_JWKS_MAX_LEN, FERRY_JWKS_MAX_LEN, &v, errbuf,
                errlen);
    if (r < 0)
        return r;
    is->http.max_response = (size_t)v;
    return 0;
}

static int cfg_cache(struct issuer *is, const json_t *conf, char *errbuf, size_t errlen)
{
    json_t *c = json_object_get(conf, "jwks_cache");
    int r;

    if (c && !json_is_object(c))
        return cfg_error(errbuf, errlen, "jwks_cache must be an object");
    if (c) {
        r = cfg_check_members(c, "jwks_cache", cache_members, ARRAY_SIZE(cache_members), errbuf,
                              errlen);
        if (r < 0)
            return r;
    }
    if ((r = cfg_int(c, "min_ttl", "jwks_cache.", 0, MAX_CACHE_SECONDS, DEFAULT_MIN_TTL,
                     &is->min_ttl, errbuf, errlen)) < 0 ||
        (r = cfg_int(c, "max_ttl", "jwks_cache.", 1, MAX_CACHE_SECONDS, DEFAULT_MAX_TTL,
                     &is->max_ttl, errbuf, errlen)) < 0 ||
        (r = cfg_int(c, "default_ttl", "jwks_cache.", 0, MAX_CACHE_SECONDS, DEFAULT_DEFAULT_TTL,
                     &is->default_ttl, errbuf, errlen)) < 0 ||
        (r = cfg_int(c, "refresh_cooldown", "jwks_cache.", 0, MAX_CACHE_SECONDS,
                     DEFAULT_COOLDOWN, &is->cooldown, errbuf, errlen)) < 0 ||
        (r = cfg_int(c, "stale_window", "jwks_cache.", 0, MAX_CACHE_SECONDS,
                     DEFAULT_STALE_WINDOW, &is->stale_window, errbuf, errlen)) < 0)
        return r;
    if (is->min_ttl > is->max_ttl)
        return cfg_error(errbuf, errlen, "jwks_cache.min_ttl is greater than max_ttl");
    return 0;
}

/* Build an issuer from its configuration object. */
static int issuer_from_json(const json_t *conf, struct issuer **ret, char *errbuf, size_t errlen)
{
    _cleanup_(issuer_unrefp) struct issuer *is = NULL;
    json_t *v;
    int64_t n;
    int r;

    if (!json_is_object(conf))
        return cfg_error(errbuf, errlen, "issuer configuration must be an object");
    r = cfg_check_members(conf, "issuer configuration", issuer_members,
                          ARRAY_SIZE(issuer_members), errbuf, errlen);
    if (r < 0)
        return r;
    is = calloc(1, sizeof(*is));
    if (!is)
        return -ENOMEM;
    atomic_init(&is->refs, 1);
    r = conf_fingerprint(conf, is->conf_fp);
    if (r < 0) {
        (void)cfg_error(errbuf, errlen, "%s while reading the configuration",
                        ferry_strerror(r));
        return r;
    }

    v = json_object_get(conf, "issuer");
    if (!v)
        return cfg_error(errbuf, errlen, "issuer is required");
    r = cfg_string(conf, "issuer", MAX_NAME_LEN, &is->name, errbuf, errlen);
    if (r < 0)
        return r;
    is->name_len = strlen(is->name);

    if ((r = cfg_audiences(is, conf, errbuf, errlen)) < 0 ||
        (r = cfg_algorithms(is, conf, errbuf, errlen)) < 0)
        return r;

    v = json_object_get(conf, "profile");
    is->profile = FERRY_PROFILE_ID_TOKEN;
    if (v) {
        if (!json_is_string(v))
            return cfg_error(errbuf, errlen, "profile must be a string");
        is->profile = ferry_profile_from_name(json_string_value(v));
        if (!is->profile || strlen(json_string_value(v)) != json_string_length(v))
            return cfg_error(errbuf, errlen,
                             "unknown profile \"%.32s\" (id_token, access_token, kubernetes, "
                             "github_actions, ferry)",
                             json_string_value(v));
    }

    if ((r = cfg_int(conf, "leeway", "", 0, MAX_LEEWAY, DEFAULT_LEEWAY, &is->leeway, errbuf,
                     errlen)) < 0 ||
        (r = cfg_int(conf, "max_lifetime", "", 1, MAX_MAX_LIFETIME, DEFAULT_MAX_LIFETIME, &n,
                     errbuf, errlen)) < 0)
        return r;
    is->max_lifetime = n;

    v = json_object_get(conf, "required_claims");
    if (v) {
        if (!json_is_object(v))
            return cfg_error(errbuf, errlen, "required_claims must be an object");
        if (json_object_size(v) > MAX_REQUIRED_CLAIMS)
            return cfg_error(errbuf, errlen, "required_claims has more than %d members",
                             MAX_REQUIRED_CLAIMS);
        is->required_claims = json_deep_copy(v);
        if (!is->required_claims)
            return -ENOMEM;
    }
    if ((r = cfg_bool(conf, "require_azp", &is->require_azp, errbuf, errlen)) < 0 ||
        (r = cfg_http(is, conf, errbuf, errlen)) < 0 ||
        (r = cfg_cache(is, conf, errbuf, errlen)) < 0 ||
        (r = cfg_key_source(is, conf, errbuf, errlen)) < 0)
        return r;

    if (pthread_mutex_init(&is->lock, NULL) != 0)
        return -ENOMEM;
    if (pthread_mutex_init(&is->fetch_lock, NULL) != 0) {
        (void)pthread_mutex_destroy(&is->lock);
        return -ENOMEM;
    }
    is->locks_ready = true;
    *ret = TAKE_PTR(is);
    return 0;
}

/* Build one issuer per entry of the array `issuers` (configuration order). On failure errbuf
 * names the entry and nothing is kept. */
static int build_issuers(ferry_oidc *o, const json_t *issuers, struct issuer ***ret,
                         size_t *ret_n, char *errbuf, size_t errlen)
{
    struct issuer **list;
    char sub[256];
    size_t n = json_array_size(issuers), i;
    json_t *v;
    int r = 0;

    list = calloc(n ? n : 1, sizeof(*list));
    if (!list) {
        (void)cfg_error(errbuf, errlen, "out of memory");
        return -ENOMEM;
    }
    json_array_foreach(issuers, i, v) {
        sub[0] = '\0';
        r = issuer_from_json(v, &list[i], sub, sizeof(sub));
        if (r == -ENOMEM && !sub[0])
            (void)snprintf(sub, sizeof(sub), "out of memory");
        if (r < 0) {
            json_t *name = json_is_object(v) ? json_object_get(v, "issuer") : NULL;

            if (json_is_string(name))
                (void)cfg_error(errbuf, errlen, "issuers[%zu] (%.100s): %s", i,
                                json_string_value(name), sub);
            else
                (void)cfg_error(errbuf, errlen, "issuers[%zu]: %s", i, sub);
            break;
        }
        list[i]->totals = &o->totals;
    }
    if (r < 0) {
        for (size_t j = 0; j < n; j++)
            issuer_unref(list[j]);
        free(list);
        return r;
    }
    *ret = list;
    *ret_n = n;
    return 0;
}

static void issuers_free(struct issuer **list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        issuer_unref(list[i]);
    free(list);
}

/* The top level shared by load_config and reload_config: the issuers array and the optional
 * replay_cache_size (0 when absent). */
static int cfg_top(const json_t *conf, const json_t **ret_issuers, int64_t *ret_rc_size,
                   char *errbuf, size_t errlen)
{
    const json_t *issuers;

    *ret_rc_size = 0;
    if (!json_is_object(conf))
        return cfg_error(errbuf, errlen, "configuration must be a JSON object");
    issuers = json_object_get(conf, "issuers");
    if (!json_is_array(issuers))
        return cfg_error(errbuf, errlen, "issuers must be an array of issuer objects");
    if (json_object_get(conf, "replay_cache_size")) {
        int r = cfg_int(conf, "replay_cache_size", "", 1, MAX_REPLAY_MAX, 0, ret_rc_size,
                        errbuf, errlen);
        if (r < 0)
            return r;
    }
    *ret_issuers = issuers;
    return 0;
}

/* Lower the store's leeway floor to the issuers' leeways. Caller holds config_lock. */
static void lower_leeway_floor(ferry_oidc *o, struct issuer *const *list, size_t n)
{
    int64_t floor = atomic_load(&o->leeway_floor);

    for (size_t i = 0; i < n; i++)
        if (list[i]->leeway < floor)
            floor = list[i]->leeway;
    atomic_store(&o->leeway_floor, floor);
}

static void set_replay_max(ferry_oidc *o, size_t max)
{
    (void)pthread_mutex_lock(&o->replay.lock);
    o->replay.max = max;
    (void)pthread_mutex_unlock(&o->replay.lock);
}

/* Add one trusted issuer (see oidc.h and docs/configuration.md). conf is borrowed.
 * Thread-safe (the issuer set is replaced as by a reload). Besides the codes listed in oidc.h,
 * -FERRY_ECRYPTO when the crypto library fails while importing the key set (out of memory
 * inside OpenSSL): like -ENOMEM, a failure of ours that says nothing about the configuration. */
FERRY_EXPORT int ferry_oidc_add_issuer(ferry_oidc *o, const json_t *conf, char *errbuf,
                                       size_t errlen)
{
    _cleanup_(issuer_unrefp) struct issuer *is = NULL;
    struct issuer_set *cur, *ns = NULL;
    size_t dup = 0;
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!o || !conf)
        return -EINVAL;
    r = issuer_from_json(conf, &is, errbuf, errlen);
    if (r == -ENOMEM)
        (void)cfg_error(errbuf, errlen, "out of memory");
    if (r < 0)
        return r;
    is->totals = &o->totals;
    (void)pthread_mutex_lock(&o->config_lock);
    cur = atomic_load(&o->set); /* kept alive by the store's reference; writers hold the lock */
    r = set_build(cur, cur->n, &is, 1, &ns, &dup);
    if (r == 0) {
        lower_leeway_floor(o, &is, 1);
        set_publish(o, ns);
    }
    (void)pthread_mutex_unlock(&o->config_lock);
    if (r == -FERRY_EDUPLICATE)
        (void)cfg_error(errbuf, errlen, "issuer \"%.200s\" is already configured", is->name);
    else if (r < 0)
        (void)cfg_error(errbuf, errlen, "out of memory");
    return r;
}

/* Build every issuer of conf ({"issuers":[...], "replay_cache_size": N}) and install them in
 * one step, all or nothing; on failure errbuf names the failing entry. replace = false adds
 * them to the current issuers (load_config); replace = true makes them the whole set, issuers
 * whose configuration (and jwks_file bytes) did not change being carried over as they are,
 * with their caches and counters (reload_config). */
static int apply_config(ferry_oidc *o, const json_t *conf, bool replace, char *errbuf,
                        size_t errlen)
{
    const json_t *issuers = NULL;
    struct issuer **list = NULL;
    struct issuer_set *cur, *ns = NULL;
    size_t n = 0, dup = 0;
    int64_t rc_size = 0;
    int r;

    r = cfg_top(conf, &issuers, &rc_size, errbuf, errlen);
    if (r == 0)
        r = build_issuers(o, issuers, &list, &n, errbuf, errlen);
    if (r < 0)
        return r;

    (void)pthread_mutex_lock(&o->config_lock);
    cur = atomic_load(&o->set);
    for (size_t i = 0; replace && i < n; i++) {
        struct issuer *old = set_find(cur, list[i]->name, list[i]->name_len);

        if (old && memcmp(old->conf_fp, list[i]->conf_fp, FP_LEN) == 0 &&
            memcmp(old->file_fp, list[i]->file_fp, FP_LEN) == 0) {
            issuer_unref(list[i]);
            list[i] = issuer_ref(old);
        }
    }
    r = set_build(replace ? NULL : cur, replace ? 0 : cur->n, list, n, &ns, &dup);
    if (r == 0) {
        lower_leeway_floor(o, list, n);
        set_publish(o, ns);
        if (rc_size > 0 || replace)
            set_replay_max(o, rc_size > 0 ? (size_t)rc_size : o->replay_max_default);
    }
    (void)pthread_mutex_unlock(&o->config_lock);
    if (r == -FERRY_EDUPLICATE)
        (void)cfg_error(errbuf, errlen, "issuers[%zu] (%.100s): issuer is %s", dup,
                        list[dup]->name, replace ? "listed twice" : "already configured");
    else if (r < 0)
        (void)cfg_error(errbuf, errlen, "out of memory");
    issuers_free(list, n);
    return r;
}

/* Load {"issuers":[...], "replay_cache_size": N}, adding to the issuers already configured.
 * Thread-safe. */
FERRY_EXPORT int ferry_oidc_load_config(ferry_oidc *o, const json_t *conf, char *errbuf,
                                        size_t errlen)
{
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!o || !conf)
        return -EINVAL;
    return apply_config(o, conf, false, errbuf, errlen);
}

/* Replace the whole configuration (see oidc.h): everything is built and checked before the
 * store changes, and the new set is published in one step. */
FERRY_EXPORT int ferry_oidc_reload_config(ferry_oidc *o, const json_t *conf, char *errbuf,
                                          size_t errlen)
{
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!o || !conf)
        return -EINVAL;
    r = apply_config(o, conf, true, errbuf, errlen);
    atomic_fetch_add_explicit(r == 0 ? &o->reloads : &o->reload_failures, 1,
                              memory_order_relaxed);
    return r;
}

/* ---- key-set fetching ----------------------------------------------------------------- */

static int64_t cache_ttl(const struct issuer *is, const char *cache_control)
{
    long ma = cache_control ? ferry_http_cache_max_age(cache_control) : -1;
    int64_t ttl = ma < 0 ? is->default_ttl : (int64_t)ma;

    if (ttl < is->min_ttl)
        ttl = is->min_ttl;
    if (ttl > is->max_ttl)
        ttl = is->max_ttl;
    return ttl;
}

/* GET url with the issuer's http options; refuses non-200 answers. */
static int issuer_get(const struct issuer *is, const char *url, const char *what,
                      ferry_http_response *resp, char *err, size_t errlen)
{
    int r = ferry_http_get(url, &is->http, resp);

    if (r < 0) {
        (void)snprintf(err, errlen, "%s fetch failed: %s", what, ferry_strerror(r));
        return r;
    }
    if (resp->status != 200) {
        (void)snprintf(err, errlen, "%s fetch failed: HTTP status %ld", what, resp->status);
        ferry_http_response_release(resp);
        return -FERRY_EFETCH;
    }
    return 0;
}

/* Fetch and check the discovery document. On success *ret_uri is a new string. A document
 * naming another issuer is -FERRY_EPOLICY ("discovery issuer mismatch", OIDC Discovery §4.3). */
static int fetch_discovery(const struct issuer *is, int64_t now, char **ret_uri,
                           int64_t *ret_expires, char *err, size_t errlen)
{
    ferry_http_response resp = {0};
    json_t *doc = NULL, *iss, *uri;
    int r;

    r = issuer_get(is, is->discovery_url, "discovery", &resp, err, errlen);
    if (r < 0)
        return r;
    r = ferry_json_parse(resp.body, resp.body_len, FERRY_JWKS_MAX_LEN, FERRY_JSON_MAX_DEPTH, &doc,
                         NULL, 0);
    if (r == -ENOMEM)
        goto out;
    if (r < 0 || !json_is_object(doc)) {
        (void)snprintf(err, errlen, "discovery document is not a JSON object");
        r = -FERRY_EMALFORMED;
        goto out;
    }
    iss = json_object_get(doc, "issuer");
    if (!json_string_is(iss, is->name, is->name_len)) {
        (void)snprintf(err, errlen,
                       "discovery issuer mismatch: the document's issuer is not exactly the "
                       "configured issuer");
        r = -FERRY_EPOLICY;
        goto out;
    }
    uri = json_object_get(doc, "jwks_uri");
    if (!json_is_string(uri) || json_string_length(uri) == 0 ||
        json_string_length(uri) > MAX_URL_LEN ||
        strlen(json_string_value(uri)) != json_string_length(uri)) {
        (void)snprintf(err, errlen, "discovery document has no usable jwks_uri");
        r = -FERRY_EMALFORMED;
        goto out;
    }
    if (ferry_http_check_url(json_string_value(uri), &is->http) < 0) {
        (void)snprintf(err, errlen, "discovery jwks_uri refused by the URL policy");
        r = -FERRY_EPOLICY;
        goto out;
    }
    *ret_uri = strdup(json_string_value(uri));
    if (!*ret_uri) {
        r = -ENOMEM;
        goto out;
    }
    *ret_expires = sat_add(now, cache_ttl(is, resp.cache_control));
    r = 0;
out:
    json_decref(doc);
    ferry_http_response_release(&resp);
    return r;
}

static int fetch_jwks(const struct issuer *is, const char *uri, int64_t now, ferry_jwks **ret,
                      int64_t *ret_expires, char *err, size_t errlen)
{
    ferry_http_response resp = {0};
    int r;

    r = issuer_get(is, uri, "JWKS", &resp, err, errlen);
    if (r < 0)
        return r;
    r = ferry_jwks_from_buffer(resp.body, resp.body_len, ret, NULL);
    if (r < 0)
        (void)snprintf(err, errlen, "JWKS refused: %s", ferry_strerror(r));
    else
        *ret_expires = sat_add(now, cache_ttl(is, resp.cache_control));
    ferry_http_response_release(&resp);
    return r;
}

/* Fetch (discovery as needed, then the JWKS) and install the result. The caller holds
 * fetch_lock but not lock. On failure the last good set stays (it serves until its expiry +
 * stale_window), except after a discovery issuer mismatch, which drops it: the IdP's metadata
 * no longer names this issuer, so nothing it published earlier is trusted either. */
static int issuer_refresh(struct issuer *is, int64_t now)
{
    _cleanup_free_ char *uri = NULL, *new_disc = NULL;
    char err[sizeof(is->last_error)] = "";
    ferry_jwks *set = NULL;
    int64_t disc_exp = 0, exp = 0;
    bool mismatch = false;
    uint64_t flushes;
    int r = 0;

    (void)pthread_mutex_lock(&is->lock);
    flushes = is->flushes;
    (void)pthread_mutex_unlock(&is->lock);
    if (is->source == SRC_DISCOVERY) {
        (void)pthread_mutex_lock(&is->lock);
        if (is->jwks_uri && now < is->disc_expires) {
            uri = strdup(is->jwks_uri);
            if (!uri)
                r = -ENOMEM;
        }
        (void)pthread_mutex_unlock(&is->lock);
        if (r < 0)
            goto install;
        if (!uri) {
            r = fetch_discovery(is, now, &new_disc, &disc_exp, err, sizeof(err));
            ISSUER_COUNT(is, discovery_fetches);
            if (r < 0)
                ISSUER_COUNT(is, discovery_failures);
            if (r == -FERRY_EPOLICY) {
                mismatch = true;
                goto install;
            }
            if (r == 0) {
                uri = strdup(new_disc);
                if (!uri)
                    r = -ENOMEM;
            } else {
                /* Discovery unreachable: keep using the jwks_uri it named last time. */
                (void)pthread_mutex_lock(&is->lock);
                if (is->jwks_uri)
                    uri = strdup(is->jwks_uri);
                (void)pthread_mutex_unlock(&is->lock);
            }
            if (!uri)
                goto install;
        }
    } else {
        uri = strdup(is->conf_jwks_uri);
        if (!uri) {
            r = -ENOMEM;
            goto install;
        }
    }
    r = fetch_jwks(is, uri, now, &set, &exp, err, sizeof(err));
    ISSUER_COUNT(is, jwks_fetches);
    if (r < 0)
        ISSUER_COUNT(is, jwks_failures);

install:
    if (r == -ENOMEM && !err[0])
        (void)snprintf(err, sizeof(err), "out of memory while fetching");
    (void)pthread_mutex_lock(&is->lock);
    if (is->flushes != flushes) {
        /* Flushed while on the wire: this answer predates the flush; install nothing. */
        r = -FERRY_EFETCH;
        mismatch = false;
        free(new_disc);
        new_disc = NULL;
        ferry_jwks_unref(set);
        set = NULL;
        (void)snprintf(err, sizeof(err), "key set flushed during the fetch");
    }
    if (mismatch) {
        ferry_jwks_unref(is->jwks);
        is->jwks = NULL;
        free(is->jwks_uri);
        is->jwks_uri = NULL;
    }
    if (new_disc) {
        free(is->jwks_uri);
        is->jwks_uri = TAKE_PTR(new_disc);
        is->disc_expires = disc_exp;
    }
    is->completed++;
    is->last_ok = r == 0 && set;
    if (r == 0 && set) {
        ferry_jwks_unref(is->jwks);
        is->jwks = TAKE_PTR(set);
        is->jwks_expires = exp;
        is->generation++;
        is->last_error[0] = '\0';
    } else {
        (void)snprintf(is->last_error, sizeof(is->last_error), "%s", err);
    }
    (void)pthread_mutex_unlock(&is->lock);
    ferry_jwks_unref(set);
    return r;
}

static bool elapsed(int64_t since, int64_t now, int64_t period)
{
    return now < since || now >= sat_add(since, period); /* a clock set back counts as over */
}

/* Whether a fetch may start now; caller holds is->lock. Two limits, both refresh_cooldown:
 * - a due set (missing or past its lifetime) is fetched at most once per cooldown after the
 *   last attempt, so a failing IdP is retried at that pace and no faster;
 * - a token whose kid is not in a usable set refreshes it at most once per cooldown after the
 *   last such refresh, and not within the cooldown of a failed attempt. So a rotation is seen
 *   at once, and a flood of random kids costs one fetch per cooldown. */
static bool fetch_due(const struct issuer *is, int64_t now, bool want_refresh)
{
    bool fresh = is->jwks && now < is->jwks_expires;
    bool attempt_ok = !is->attempted || elapsed(is->last_attempt, now, is->cooldown);

    if (!fresh && attempt_ok)
        return true;
    return want_refresh && is->jwks &&
           (!is->kid_refreshed || elapsed(is->last_kid_refresh, now, is->cooldown)) &&
           (is->last_ok || attempt_ok);
}

/* A usable key set of a remote issuer (fetching it when due), as a new reference; *ret_stale
 * says whether it is past its lifetime (served inside the stale window).
 * want_refresh: the current set lacks the key the token names. Fetches are single-flight per
 * issuer and limited by fetch_due; a verifier whose kid is in a usable set never waits for
 * another thread's fetch. *suppressions is raised by the refreshes refresh_cooldown held
 * back; the caller counts them (refresh_suppressed) once the verification did not give up.
 * no_wait: never fetch and never wait for fetch_lock. Where a fetch would run here or one is
 * in flight (fetch_lock held by another thread) and this token would wait for it, return
 * -FERRY_EWOULDBLOCK before changing anything (no attempt recorded, no cooldown started); a
 * usable set with no fetch due, or a cooldown that holds back the fetch, decides as without
 * it. */
static int issuer_keyset(ferry_oidc *o, struct issuer *is, bool want_refresh, bool no_wait,
                         ferry_jwks **ret, bool *ret_fetched, bool *ret_stale,
                         unsigned *suppressions, ferry_verify_result *res)
{
    int64_t now = store_now(o);
    ferry_jwks *set = NULL;
    char why[sizeof(is->last_error)];
    bool usable, due, want, changed, suppressed, locked = false;
    int64_t expires = 0;
    uint64_t gen, completed;

    *ret_fetched = false;
    *ret_stale = false;
    if (!issuer_is_remote(is)) {
        *ret = ferry_jwks_ref(is->jwks);
        return 0;
    }

    (void)pthread_mutex_lock(&is->lock);
    usable = is->jwks && now < sat_add(is->jwks_expires, is->stale_window);
    /* A fetch is wanted for a missing or expired set, or a kid the set lacks. */
    want = want_refresh || !is->jwks || now >= is->jwks_expires;
    due = fetch_due(is, now, want_refresh);
    gen = is->generation;
    completed = is->completed;
    if (usable) {
        set = ferry_jwks_ref(is->jwks);
        expires = is->jwks_expires;
    }
    (void)pthread_mutex_unlock(&is->lock);
    suppressed = usable && want && !due;

    /* Without a usable set, or when the set lacks the token's kid, wait even when no fetch is
     * due: one may be on the wire (the cooldown counts from its start), and its set is what
     * this token needs. During a rotation, a burst of tokens with the new kid all wait for the
     * one refresh instead of being refused while it runs. In no_wait mode such a token only
     * try-locks: a held fetch_lock is a fetch in flight, which it would wait for. */
    if ((!usable || want_refresh) && !no_wait) {
        locked = pthread_mutex_lock(&is->fetch_lock) == 0;
    } else if (!usable || want_refresh) {
        locked = pthread_mutex_trylock(&is->fetch_lock) == 0;
        if (!locked) {
            ferry_jwks_unref(set);
            res->reason = FERRY_REASON_INTERNAL;
            (void)snprintf(res->detail, sizeof(res->detail),
                           "would wait for the key-set fetch in flight");
            return -FERRY_EWOULDBLOCK;
        }
    } else if (due) {
        locked = pthread_mutex_trylock(&is->fetch_lock) == 0;
    }
    if (locked) {
        /* Another thread may have fetched while this one waited: a set installed since the
         * snapshot is looked at first (it may hold the kid); otherwise decide again. An
         * attempt that ended while this one waited (the one in flight) is not repeated
         * unless a flush came after it: `now` may have been read before that attempt began,
         * and fetch_due would take it for a clock set back. */
        (void)pthread_mutex_lock(&is->lock);
        changed = is->generation != gen;
        due = !changed && (is->completed == completed || !is->attempted) &&
              fetch_due(is, now, want_refresh);
        if (due && no_wait) {
            /* This thread would fetch: give up before recording the attempt, so that the
             * retry on a thread that may block finds the fetch still due. */
            (void)pthread_mutex_unlock(&is->lock);
            (void)pthread_mutex_unlock(&is->fetch_lock);
            ferry_jwks_unref(set);
            res->reason = FERRY_REASON_INTERNAL;
            (void)snprintf(res->detail, sizeof(res->detail), "would wait for a key-set fetch");
            return -FERRY_EWOULDBLOCK;
        }
        if (want && !changed && !due && !suppressed)
            (*suppressions)++; /* the cooldown of another's attempt */
        if (due) {
            is->attempted = true;
            is->last_attempt = now;
            if (want_refresh && is->jwks) {
                is->kid_refreshed = true;
                is->last_kid_refresh = now;
            }
        }
        (void)pthread_mutex_unlock(&is->lock);
        if (due)
            (void)issuer_refresh(is, now);
        (void)pthread_mutex_unlock(&is->fetch_lock);
        *ret_fetched = due || changed;

        ferry_jwks_unref(set);
        set = NULL;
        (void)pthread_mutex_lock(&is->lock);
        usable = is->jwks && now < sat_add(is->jwks_expires, is->stale_window);
        if (usable) {
            set = ferry_jwks_ref(is->jwks);
            expires = is->jwks_expires;
        }
        (void)pthread_mutex_unlock(&is->lock);
    }
    if (suppressed)
        (*suppressions)++;
    if (!set) {
        (void)pthread_mutex_lock(&is->lock);
        (void)snprintf(why, sizeof(why), "%s",
                       is->last_error[0] ? is->last_error
                       : is->jwks        ? "key set expired past the stale window"
                                         : "key set not loaded (refresh cooldown)");
        (void)pthread_mutex_unlock(&is->lock);
        return refuse(res, FERRY_REASON_ISSUER_UNAVAILABLE, "no usable key set: %s", why);
    }
    *ret_stale = now >= expires;
    *ret = set;
    return 0;
}

/* Load every remote issuer's key set now unless it is fresh (ignores the refresh cooldown).
 * Works on the issuer set current at the call. */
FERRY_EXPORT int ferry_oidc_prefetch(ferry_oidc *o, char *errbuf, size_t errlen)
{
    _cleanup_(set_unrefp) struct issuer_set *set = NULL;
    int first = 0;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!o)
        return -EINVAL;
    set = set_acquire(o);
    for (size_t i = 0; i < set->n; i++) {
        struct issuer *is = set->issuers[i];
        int64_t now = store_now(o);
        bool fresh;
        int r = 0;

        if (!issuer_is_remote(is))
            continue;
        (void)pthread_mutex_lock(&is->fetch_lock);
        (void)pthread_mutex_lock(&is->lock);
        fresh = is->jwks && now < is->jwks_expires;
        if (!fresh) {
            is->attempted = true;
            is->last_attempt = now;
        }
        (void)pthread_mutex_unlock(&is->lock);
        if (!fresh)
            r = issuer_refresh(is, now);
        (void)pthread_mutex_unlock(&is->fetch_lock);
        if (r < 0 && first == 0) {
            first = r;
            (void)pthread_mutex_lock(&is->lock);
            if (errbuf && errlen)
                (void)snprintf(errbuf, errlen, "issuer %.200s: %s", is->name, is->last_error);
            (void)pthread_mutex_unlock(&is->lock);
        }
    }
    return first;
}

static void issuer_flush(struct issuer *is)
{
    if (!issuer_is_remote(is))
        return;
    (void)pthread_mutex_lock(&is->lock);
    ferry_jwks_unref(is->jwks);
    is->jwks = NULL;
    free(is->jwks_uri);
    is->jwks_uri = NULL;
    is->attempted = false;
    is->kid_refreshed = false;
    is->last_error[0] = '\0';
    is->flushes++;
    (void)pthread_mutex_unlock(&is->lock);
}

/* Drop cached remote key sets (and discovery results) of one issuer or of all (NULL). */
FERRY_EXPORT void ferry_oidc_flush(ferry_oidc *o, const char *issuer)
{
    struct issuer_set *set;
    struct issuer *is;

    if (!o)
        return;
    set = set_acquire(o);
    if (!issuer) {
        for (size_t i = 0; i < set->n; i++)
            issuer_flush(set->issuers[i]);
    } else {
        is = set_find(set, issuer, strlen(issuer));
        if (is)
            issuer_flush(is);
    }
    set_unref(set);
}

/* ---- statistics ----------------------------------------------------------------------- */

static const char *const keyset_state_names[] = {
    [FERRY_KEYSET_STATIC] = "static", [FERRY_KEYSET_UNLOADED] = "unloaded",
    [FERRY_KEYSET_FRESH] = "fresh",   [FERRY_KEYSET_STALE] = "stale",
    [FERRY_KEYSET_FAILED] = "failed",
};

/* Stable name of a key-set state (static string); "unknown" for other values. */
FERRY_EXPORT const char *ferry_keyset_state_name(ferry_keyset_state st)
{
    if ((size_t)st >= ARRAY_SIZE(keyset_state_names) || !keyset_state_names[st])
        return "unknown";
    return keyset_state_names[st];
}

/* The cache state of one issuer at now; last_error is copied into err (errlen bytes). */
static void issuer_info(struct issuer *is, int64_t now, ferry_oidc_issuer_info *info, char *err,
                        size_t errlen)
{
    memset(info, 0, sizeof(*info));
    info->issuer = is->name;
    info->profile = is->profile;
    info->source = source_names[is->source];
    info->last_error = err;
    err[0] = '\0';
    counters_read(&is->stats, &info->counters);
    if (!issuer_is_remote(is)) {
        info->state = FERRY_KEYSET_STATIC;
        info->keys = ferry_jwks_count(is->jwks);
        return;
    }
    (void)pthread_mutex_lock(&is->lock);
    if (is->jwks && now < sat_add(is->jwks_expires, is->stale_window)) {
        info->state = now < is->jwks_expires ? FERRY_KEYSET_FRESH : FERRY_KEYSET_STALE;
        info->keys = ferry_jwks_count(is->jwks);
        info->expires_in = sat_sub(is->jwks_expires, now);
        info->usable_for = sat_sub(sat_add(is->jwks_expires, is->stale_window), now);
    } else if (is->attempted && !is->last_ok) {
        info->state = FERRY_KEYSET_FAILED;
    } else {
        info->state = FERRY_KEYSET_UNLOADED;
    }
    (void)snprintf(err, errlen, "%s", is->last_error);
    (void)pthread_mutex_unlock(&is->lock);
}

/* Fill *ret_stats (see oidc.h). Thread-safe; takes each issuer's cache lock and the replay
 * lock briefly, one at a time. */
FERRY_EXPORT int ferry_oidc_get_stats(ferry_oidc *o, ferry_oidc_stats *ret_stats)
{
    _cleanup_(set_unrefp) struct issuer_set *set = NULL;
    ferry_oidc_stats st;
    int64_t now;

    if (!o || !ret_stats)
        return -EINVAL;
    memset(&st, 0, sizeof(st));
    now = store_now(o);
    set = set_acquire(o);
    st.issuers = set->n;
    for (size_t i = 0; i < set->n; i++) {
        struct issuer *is = set->issuers[i];

        if (issuer_is_remote(is)) {
            (void)pthread_mutex_lock(&is->lock);
            if (is->jwks && now < sat_add(is->jwks_expires, is->stale_window))
                st.cached_keys += ferry_jwks_count(is->jwks);
            (void)pthread_mutex_unlock(&is->lock);
        } else {
            st.cached_keys += ferry_jwks_count(is->jwks);
        }
    }
    (void)pthread_mutex_lock(&o->replay.lock);
    st.replay_entries = o->replay.count;
    st.replay_capacity = o->replay.max;
    (void)pthread_mutex_unlock(&o->replay.lock);
    st.config_reloads = (uint64_t)atomic_load_explicit(&o->reloads, memory_order_relaxed);
    st.config_reload_failures =
        (uint64_t)atomic_load_explicit(&o->reload_failures, memory_order_relaxed);
    counters_read(&o->totals, &st.totals);
    for (size_t i = 1; i < FERRY_REASON_MAX; i++)
        st.refused_by_reason[i] =
            (uint64_t)atomic_load_explicit(&o->by_reason[i], memory_order_relaxed);
    *ret_stats = st;
    return 0;
}

/* Call fn for every configured issuer (see oidc.h). */
FERRY_EXPORT int ferry_oidc_foreach_issuer(ferry_oidc *o, ferry_oidc_issuer_fn fn, void *userdata)
{
    _cleanup_(set_unrefp) struct issuer_set *set = NULL;
    char err[sizeof(((struct issuer *)0)->last_error)];
    ferry_oidc_issuer_info info;
    int64_t now;
    int r = 0;

    if (!o || !fn)
        return -EINVAL;
    now = store_now(o);
    set = set_acquire(o);
    for (size_t i = 0; i < set->n && r == 0; i++) {
        issuer_info(set->issuers[i], now, &info, err, sizeof(err));
        r = fn(&info, userdata);
    }
    return r;
}

/* ---- claims --------------------------------------------------------------------------- */

/* A NumericDate claim: 1 when present (value in *ret), 0 when absent, or a refusal. Only
 * non-negative JSON integers are accepted (reals such as 1e300 and 1.5 are not). */
static int date_claim(const json_t *claims, const char *name, int64_t *ret,
                      ferry_verify_result *res)
{
    json_t *v = json_object_get(claims, name);

    if (!v)
        return 0;
    if (json_is_real(v))
        return refuse(res, FERRY_REASON_BAD_CLAIM, "%s is not an integer NumericDate", name);
    if (!json_is_integer(v))
        return refuse(res, FERRY_REASON_BAD_CLAIM, "%s is not a number", name);
    if (json_integer_value(v) < 0)
        return refuse(res, FERRY_REASON_BAD_CLAIM, "%s is negative", name);
    *ret = json_integer_value(v);
    return 1;
}

/* A string claim: 1 when present (non-empty string), 0 when absent and optional, or a
 * refusal (MISSING_CLAIM when required and absent, `bad` when of the wrong type or empty). */
static int string_claim(const json_t *claims, const char *name, bool required, ferry_reason bad,
                        const json_t **ret, ferry_verify_result *res)
{
    json_t *v = json_object_get(claims, name);

    *ret = NULL;
    if (!v) {
        if (required)
            return refuse(res, FERRY_REASON_MISSING_CLAIM, "%s is missing", name);
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0)
        return refuse(res, bad, "%s is not a non-empty string", name);
    *ret = v;
    return 1;
}

static int check_typ(const struct issuer *is, const char *typ, ferry_verify_result *res)
{
    bool at = is->profile == FERRY_PROFILE_ACCESS_TOKEN || is->profile == FERRY_PROFILE_FERRY;
    const char *t = typ;

    /* RFC 9068 §4 / RFC 7515 §4.1.9: the "application/" prefix may be omitted. */
    if (t && strncasecmp(t, "application/", 12) == 0)
        t += 12;
    if (at) {
        if (!t || strcasecmp(t, "at+jwt") != 0)
            return refuse(res, FERRY_REASON_BAD_TYP, "typ must be at+jwt for a %s issuer",
                          ferry_profile_name(is->profile));
    } else if (t && strcasecmp(t, "jwt") != 0) {
        return refuse(res, FERRY_REASON_BAD_TYP, "typ must be absent or JWT for a %s issuer",
                      ferry_profile_name(is->profile));
    }
    return 0;
}

static bool issuer_has_audience(const struct issuer *is, const char *a, size_t len)
{
    for (size_t i = 0; i < is->n_audiences; i++)
        if (bytes_eq(is->audiences[i], is->audience_lens[i], a, len))
            return true;
    return false;
}

static int check_audience(const struct issuer *is, const json_t *claims, const char *want,
                          ferry_verify_result *res)
{
    json_t *aud = json_object_get(claims, "aud"), *v, *azp;
    size_t n, i, want_len = want ? strlen(want) : 0;
    bool hit = false;

    if (want && !issuer_has_audience(is, want, want_len))
        return refuse(res, FERRY_REASON_BAD_AUDIENCE,
                      "the requested audience is not configured for this issuer");
    if (!aud)
        return refuse(res, FERRY_REASON_BAD_AUDIENCE, "aud is missing");
    if (json_is_string(aud)) {
        n = 1;
        hit = want ? json_string_is(aud, want, want_len)
                   : issuer_has_audience(is, json_string_value(aud), json_string_length(aud));
    } else if (json_is_array(aud)) {
        n = json_array_size(aud);
        if (n == 0)
            return refuse(res, FERRY_REASON_BAD_AUDIENCE, "aud is an empty array");
        json_array_foreach(aud, i, v) {
            if (!json_is_string(v))
                return refuse(res, FERRY_REASON_BAD_AUDIENCE, "aud[%zu] is not a string", i);
            if (want ? json_string_is(v, want, want_len)
                     : issuer_has_audience(is, json_string_value(v), json_string_length(v)))
                hit = true;
        }
    } else {
        return refuse(res, FERRY_REASON_BAD_AUDIENCE, "aud is neither a string nor an array");
    }
    if (!hit)
        return refuse(res, FERRY_REASON_BAD_AUDIENCE,
                      want ? "aud does not contain the requested audience"
                           : "aud does not contain an audience configured for this issuer");
    azp = json_object_get(claims, "azp");
    if (azp && (!json_is_string(azp) || json_string_length(azp) == 0))
        return refuse(res, FERRY_REASON_BAD_CLAIM, "azp is not a non-empty string");
    if (is->require_azp && n > 1 && !azp)
        return refuse(res, FERRY_REASON_BAD_AUDIENCE,
                      "aud has %zu audiences but azp is missing", n);
    return 0;
}

/* sub "system:serviceaccount:<namespace>:<name>", and a kubernetes.io claim agreeing with it. */
static int check_kubernetes(const json_t *claims, const json_t *sub, ferry_verify_result *res)
{
    static const char prefix[] = "system:serviceaccount:";
    const char *s = json_string_value(sub), *ns, *colon, *name;
    size_t len = json_string_length(sub), ns_len, name_len;
    json_t *k8s, *v, *sa;

    if (len <= sizeof(prefix) - 1 || memcmp(s, prefix, sizeof(prefix) - 1) != 0)
        return refuse(res, FERRY_REASON_BAD_SUBJECT,
                      "sub is not system:serviceaccount:<namespace>:<name>");
    ns = s + sizeof(prefix) - 1;
    colon = memchr(ns, ':', len - (sizeof(prefix) - 1));
    if (!colon || colon == ns)
        return refuse(res, FERRY_REASON_BAD_SUBJECT,
                      "sub is not system:serviceaccount:<namespace>:<name>");
    ns_len = (size_t)(colon - ns);
    name = colon + 1;
    name_len = len - (size_t)(name - s);
    if (name_len == 0 || memchr(name, ':', name_len))
        return refuse(res, FERRY_REASON_BAD_SUBJECT,
                      "sub is not system:serviceaccount:<namespace>:<name>");

    /* Projected service-account tokens (the only kind with an exp) always carry it. */
    k8s = json_object_get(claims, "kubernetes.io");
    if (!k8s)
        return refuse(res, FERRY_REASON_MISSING_CLAIM, "kubernetes.io claim missing");
    if (!json_is_object(k8s))
        return refuse(res, FERRY_REASON_BAD_CLAIM, "kubernetes.io is not an object");
    v = json_object_get(k8s, "namespace");
    if (!json_string_is(v, ns, ns_len))
        return refuse(res, FERRY_REASON_BAD_SUBJECT,
                      "kubernetes.io.namespace does not match the namespace in sub");
    sa = json_object_get(k8s, "serviceaccount");
    v = json_is_object(sa) ? json_object_get(sa, "name") : NULL;
    if (!json_string_is(v, name, name_len))
        return refuse(res, FERRY_REASON_BAD_SUBJECT,
                      "kubernetes.io.serviceaccount.name does not match the name in sub");
    return 0;
}

static int check_profile_claims(const struct issuer *is, const json_t *claims,
                                const json_t *sub, ferry_verify_result *res)
{
    static const char *const at_claims[] = {"client_id", "jti"};
    static const char *const ferry_claims[] = {"client_id", "jti", "src_iss"};
    static const char *const gh_claims[] = {"repository", "ref", "repository_owner", "jti"};
    const char *const *names = NULL;
    const json_t *v;
    size_t n = 0;
    int r;

    switch (is->profile) {
    case FERRY_PROFILE_ACCESS_TOKEN:
        names = at_claims;
        n = ARRAY_SIZE(at_claims);
        break;
    case FERRY_PROFILE_FERRY:
        names = ferry_claims;
        n = ARRAY_SIZE(ferry_claims);
        break;
    case FERRY_PROFILE_GITHUB:
        names = gh_claims;
        n = ARRAY_SIZE(gh_claims);
        break;
    case FERRY_PROFILE_KUBERNETES:
        return check_kubernetes(claims, sub, res);
    default:
        break;
    }
    for (size_t i = 0; i < n; i++) {
        r = string_claim(claims, names[i], true, FERRY_REASON_BAD_CLAIM, &v, res);
        if (r < 0)
            return r;
    }
    return 0;
}

static int check_required_claims(const struct issuer *is, const json_t *claims,
                                 ferry_verify_result *res)
{
    const char *key;
    json_t *want;

    if (!is->required_claims)
        return 0;
    json_object_foreach(is->required_claims, key, want) {
        json_t *have = json_object_get(claims, key);

        if (!have)
            return refuse(res, FERRY_REASON_MISSING_CLAIM, "required claim %.64s is missing",
                          key);
        if (!json_is_null(want) && !json_equal(have, want))
            return refuse(res, FERRY_REASON_CLAIM_MISMATCH,
                          "claim %.64s does not have the required value", key);
    }
    return 0;
}

struct checked {
    int64_t exp, iat, nbf;
    const json_t *sub, *jti;
};

/* Every claim rule of the issuer's profile, evaluated at `now`. */
static int check_claims(const struct issuer *is, const ferry_jws *jws, const json_t *claims,
                        int64_t now, const ferry_verify_options *opts, struct checked *c,
                        ferry_verify_result *res)
{
    int64_t lw = is->leeway, lifetime;
    int has_nbf, has_iat, r;

    r = check_typ(is, jws->typ, res);
    if (r < 0)
        return r;

    r = date_claim(claims, "exp", &c->exp, res);
    if (r < 0)
        return r;
    if (r == 0)
        return refuse(res, FERRY_REASON_MISSING_CLAIM, "exp is missing");
    has_nbf = date_claim(claims, "nbf", &c->nbf, res);
    if (has_nbf < 0)
        return has_nbf;
    has_iat = date_claim(claims, "iat", &c->iat, res);
    if (has_iat < 0)
        return has_iat;
    if (has_iat == 0)
        return refuse(res, FERRY_REASON_MISSING_CLAIM, "iat is missing (required by the %s "
                      "profile)", ferry_profile_name(is->profile));

    if (sat_add(c->exp, lw) <= now)
        return refuse(res, FERRY_REASON_EXPIRED,
                      "exp %" PRId64 " is %" PRId64 " s before now %" PRId64
                      " (leeway %" PRId64 " s)",
                      c->exp, sat_sub(now, c->exp), now, lw);
    if (has_nbf && c->nbf > sat_add(now, lw))
        return refuse(res, FERRY_REASON_NOT_YET_VALID,
                      "nbf %" PRId64 " is %" PRId64 " s after now %" PRId64
                      " (leeway %" PRId64 " s)",
                      c->nbf, sat_sub(c->nbf, now), now, lw);
    if (c->iat > sat_add(now, lw))
        return refuse(res, FERRY_REASON_ISSUED_IN_FUTURE,
                      "iat %" PRId64 " is %" PRId64 " s after now %" PRId64
                      " (leeway %" PRId64 " s)",
                      c->iat, sat_sub(c->iat, now), now, lw);
    if (c->exp < c->iat)
        return refuse(res, FERRY_REASON_BAD_CLAIM, "exp %" PRId64 " is before iat %" PRId64,
                      c->exp, c->iat);
    lifetime = sat_sub(c->exp, c->iat);
    if (lifetime > is->max_lifetime)
        return refuse(res, FERRY_REASON_LIFETIME_TOO_LONG,
                      "exp - iat is %" PRId64 " s, over max_lifetime %" PRId64 " s", lifetime,
                      is->max_lifetime);

    r = check_audience(is, claims, opts ? opts->audience : NULL, res);
    if (r < 0)
        return r;
    r = string_claim(claims, "sub", true, FERRY_REASON_BAD_SUBJECT, &c->sub, res);
    if (r < 0)
        return r;
    r = string_claim(claims, "jti", opts && opts->consume_jti, FERRY_REASON_BAD_CLAIM, &c->jti,
                     res);
    if (r < 0)
        return r;
    r = check_profile_claims(is, claims, c->sub, res);
    if (r < 0)
        return r;
    return check_required_claims(is, claims, res);
}

/* ---- verification --------------------------------------------------------------------- */

static int parse_claims(const ferry_jws *jws, json_t **ret, ferry_verify_result *res)
{
    char err[FERRY_JSON_ERR_LEN];
    json_t *claims = NULL;
    int r;

    r = ferry_json_parse(jws->payload, jws->payload_len, FERRY_JWS_MAX_LEN, FERRY_JSON_MAX_DEPTH,
                         &claims, err, sizeof(err));
    switch (r) {
    case 0:
        break;
    case -ENOMEM:
        res->reason = FERRY_REASON_INTERNAL;
        (void)snprintf(res->detail, sizeof(res->detail), "out of memory");
        return r;
    case -ERANGE:
        return refuse(res, FERRY_REASON_BAD_CLAIM, "claims contain a number out of range (%s)",
                      err);
    case -FERRY_ETOOBIG:
        return refuse(res, FERRY_REASON_MALFORMED, "claims nested deeper than %d (%s)",
                      FERRY_JSON_MAX_DEPTH, err);
    default:
        return refuse(res, FERRY_REASON_MALFORMED, "claims are not valid JSON: %s", err);
    }
    if (!json_is_object(claims)) {
        json_decref(claims);
        return refuse(res, FERRY_REASON_MALFORMED, "claims are not a JSON object");
    }
    *ret = claims;
    return 0;
}

static int map_parse_error(int r, const char *token, size_t len, ferry_verify_result *res)
{
    switch (r) {
    case -FERRY_ETOOBIG:
        if (len > FERRY_JWS_MAX_LEN)
            return refuse(res, FERRY_REASON_TOO_LARGE, "token is %zu bytes, over %d", len,
                          FERRY_JWS_MAX_LEN);
        return refuse(res, FERRY_REASON_BAD_HEADER,
                      "header too large, too deep or kid too long");
    case -FERRY_EPOLICY:
        return refuse(res, FERRY_REASON_BAD_HEADER,
                      "header has a forbidden member (crit, b64, zip, enc, jku, jwk, x5u, "
                      "x5c) or cty JWT");
    case -FERRY_EUNSUPPORTED:
        return refuse(res, FERRY_REASON_ALG_NOT_ALLOWED, "alg is not a supported algorithm");
    case -FERRY_EMALFORMED:
    case -EINVAL:
        return refuse(res, FERRY_REASON_MALFORMED, "not a strict compact JWS");
    default:
        res->reason = FERRY_REASON_INTERNAL;
        (void)snprintf(res->detail, sizeof(res->detail), "JWS parse failed: %s",
                       ferry_strerror(r));
        return r;
    }
}

/* The key for this token: by kid, or the only key allowing alg when the token has no kid. */
static const ferry_jwk *select_key(const ferry_jwks *set, const ferry_jws *jws,
                                   size_t *ret_candidates)
{
    const ferry_jwk *found = NULL;
    size_t n = 0;

    *ret_candidates = 0;
    if (!set)
        return NULL;
    if (jws->kid)
        return ferry_jwks_find(set, jws->kid);
    for (size_t i = 0; i < ferry_jwks_count(set); i++) {
        const ferry_jwk *k = ferry_jwks_get(set, i);

        if (k && ferry_jwk_allows(k, jws->alg)) {
            found = k;
            n++;
        }
    }
    *ret_candidates = n;
    return n == 1 ? found : NULL;
}

static char *strndup_json(const json_t *v)
{
    return v ? strndup(json_string_value(v), json_string_length(v)) : NULL;
}

static int build_identity(const struct issuer *is, const ferry_jws *jws, json_t *claims,
                          const struct checked *c, ferry_identity **ret)
{
    ferry_identity *id = calloc(1, sizeof(*id));
    json_t *aud = json_object_get(claims, "aud");

    if (!id)
        return -ENOMEM;
    id->issuer = strdup(is->name);
    id->subject = strndup_json(c->sub);
    id->audience = json_is_string(aud) ? json_pack("[O]", aud) : json_deep_copy(aud);
    id->profile = is->profile;
    id->alg = jws->alg;
    id->kid = jws->kid ? strdup(jws->kid) : NULL;
    id->jti = strndup_json(c->jti);
    id->exp = c->exp;
    id->iat = c->iat;
    id->nbf = c->nbf;
    id->claims = json_incref(claims);
    if (!id->issuer || !id->subject || !id->audience || (jws->kid && !id->kid) ||
        (c->jti && !id->jti)) {
        ferry_identity_free(id);
        return -ENOMEM;
    }
    *ret = id;
    return 0;
}

/* Record (iss, jti) of an otherwise accepted token until exp + leeway. The look-up and the
 * insertion happen under one hold of the replay lock, so of two concurrent verifications of
 * one token exactly one gets 0; the other is refused as REPLAYED. Returns 0, -FERRY_EREFUSED
 * (REPLAYED, REPLAY_CACHE_FULL) or -ENOMEM / -FERRY_ECRYPTO, and then nothing was recorded. */
static int consume_jti(ferry_oidc *o, const struct issuer *is, const struct checked *c,
                       int64_t now, ferry_verify_result *res)
{
    unsigned char k[RP_KEY_LEN];
    int64_t floor = atomic_load(&o->leeway_floor);
    int r;

    /* Past exp + the smallest leeway ever configured, an entry recorded for this jti under an
     * earlier configuration may already be evicted: refuse rather than record it anew. */
    if (sat_add(c->exp, floor) <= now)
        return refuse(res, FERRY_REASON_EXPIRED,
                      "exp %" PRId64 " is %" PRId64 " s before now %" PRId64
                      " (leeway for a one-time use: %" PRId64 " s)",
                      c->exp, sat_sub(now, c->exp), now, floor);
    r = rp_key(&o->replay, is->name, is->name_len, json_string_value(c->jti),
               json_string_length(c->jti), k);
    if (r < 0)
        return r;
    (void)pthread_mutex_lock(&o->replay.lock);
    r = rp_insert(&o->replay, k, sat_add(c->exp, is->leeway), now);
    (void)pthread_mutex_unlock(&o->replay.lock);
    if (r == -FERRY_EDUPLICATE)
        return refuse(res, FERRY_REASON_REPLAYED, "jti already used for this issuer");
    if (r == -FERRY_EFULL)
        return refuse(res, FERRY_REASON_REPLAY_CACHE_FULL,
                      "replay cache full (%zu unexpired entries)", o->replay.max);
    return r;
}

/* Consume the jti of an identity verified earlier without consume_jti (see oidc.h). The
 * issuer's leeway comes from the current set, so an issuer removed since is refused. */
FERRY_EXPORT int ferry_oidc_consume(ferry_oidc *o, const ferry_identity *id, int64_t now,
                                    ferry_verify_result *ret_result)
{
    ferry_verify_result res = {.reason = FERRY_REASON_OK};
    _cleanup_(set_unrefp) struct issuer_set *issuers = NULL;
    const struct issuer *is;
    struct checked c = {0};
    int r;

    if (!o || !id || !id->issuer || !id->claims) {
        r = -EINVAL;
        goto out;
    }
    if (!now)
        now = store_now(o);
    issuers = set_acquire(o);
    is = set_find(issuers, id->issuer, strlen(id->issuer));
    if (!is) {
        r = refuse(&res, FERRY_REASON_UNKNOWN_ISSUER, "issuer no longer configured");
        goto out;
    }
    r = string_claim(id->claims, "jti", true, FERRY_REASON_BAD_CLAIM, &c.jti, &res);
    if (r < 0)
        goto out;
    c.exp = id->exp;
    r = consume_jti(o, is, &c, now, &res);

out:
    if (r < 0 && r != -FERRY_EREFUSED) {
        res.reason = FERRY_REASON_INTERNAL;
        (void)snprintf(res.detail, sizeof(res.detail), "internal error: %s", ferry_strerror(r));
    }
    if (o && r == -FERRY_EREFUSED && (size_t)res.reason < FERRY_REASON_MAX)
        atomic_fetch_add_explicit(&o->by_reason[res.reason], 1, memory_order_relaxed);
    if (ret_result)
        *ret_result = res;
    return r;
}

/* Verify one token (see oidc.h). Thread-safe. */
FERRY_EXPORT int ferry_oidc_verify(ferry_oidc *o, const char *token, size_t len,
                                   const ferry_verify_options *opts,
                                   ferry_identity **ret_identity, ferry_verify_result *ret_result)
{
    ferry_verify_result res = {.reason = FERRY_REASON_OK};
    ferry_jws *jws = NULL;
    json_t *claims = NULL, *iss;
    ferry_jwks *set = NULL;
    ferry_identity *id = NULL;
    struct issuer_set *issuers = NULL;
    struct issuer *is = NULL;
    const ferry_jwk *key;
    struct checked c = {0};
    size_t candidates = 0;
    bool fetched = false, stale = false;
    bool no_wait = opts && opts->no_wait, gave_up;
    unsigned suppressions = 0;
    int64_t now;
    int r;

    if (!o || (!token && len)) {
        r = -EINVAL;
        goto out;
    }
    now = opts && opts->now ? opts->now : store_now(o);

    r = ferry_jws_parse(token ? token : "", len, &jws);
    if (r < 0) {
        r = map_parse_error(r, token ? token : "", len, &res);
        goto out;
    }
    r = parse_claims(jws, &claims, &res);
    if (r < 0)
        goto out;

    /* The unverified iss only picks the issuer; everything after is that issuer's rules. */
    iss = json_object_get(claims, "iss");
    if (!json_is_string(iss)) {
        r = refuse(&res, FERRY_REASON_UNKNOWN_ISSUER, "iss is missing or not a string");
        goto out;
    }
    /* The issuer set current now serves this whole decision, whatever a reload does
     * meanwhile; its reference keeps the issuer (and its configuration) alive. */
    issuers = set_acquire(o);
    is = set_find(issuers, json_string_value(iss), json_string_length(iss));
    if (!is) {
        r = refuse(&res, FERRY_REASON_UNKNOWN_ISSUER, "iss is not a configured issuer");
        goto out;
    }
    if (jws->alg <= FERRY_ALG_UNKNOWN || jws->alg >= FERRY_ALG_MAX ||
        !is->alg_allowed[jws->alg]) {
        r = refuse(&res, FERRY_REASON_ALG_NOT_ALLOWED, "alg %s is not allowed for this issuer",
                   ferry_alg_name(jws->alg) ? ferry_alg_name(jws->alg) : "(unknown)");
        goto out;
    }

    r = issuer_keyset(o, is, false, no_wait, &set, &fetched, &stale, &suppressions, &res);
    if (r < 0)
        goto out;
    key = select_key(set, jws, &candidates);
    /* Not in the set: one refresh, unless the set was fetched for this very token. */
    if (!key && issuer_is_remote(is) && !fetched) {
        ferry_jwks_unref(set);
        set = NULL;
        r = issuer_keyset(o, is, true, no_wait, &set, &fetched, &stale, &suppressions, &res);
        if (r < 0)
            goto out;
        key = select_key(set, jws, &candidates);
    }
    if (!key) {
        if (jws->kid)
            r = refuse(&res, FERRY_REASON_UNKNOWN_KID, "kid not found in the issuer's key set");
        else
            r = refuse(&res, FERRY_REASON_UNKNOWN_KID,
                       "token has no kid and %zu keys of the issuer allow %s", candidates,
                       ferry_alg_name(jws->alg));
        goto out;
    }
    if (stale)
        ISSUER_COUNT(is, stale_serves);
    if (!ferry_jwk_allows(key, jws->alg)) {
        r = refuse(&res, FERRY_REASON_KEY_MISMATCH, "the key named by kid does not allow %s",
                   ferry_alg_name(jws->alg));
        goto out;
    }
    r = ferry_jws_verify(jws, key);
    if (r == -ENOMEM) {
        res.reason = FERRY_REASON_INTERNAL;
        (void)snprintf(res.detail, sizeof(res.detail), "out of memory");
        goto out;
    }
    if (r == -FERRY_EKEYMISMATCH) {
        r = refuse(&res, FERRY_REASON_KEY_MISMATCH, "the key does not allow %s",
                   ferry_alg_name(jws->alg));
        goto out;
    }
    if (r == -FERRY_EBADSIG) {
        r = refuse(&res, FERRY_REASON_BAD_SIGNATURE, "signature does not verify");
        goto out;
    }
    if (r < 0) {
        res.reason = FERRY_REASON_INTERNAL;
        (void)snprintf(res.detail, sizeof(res.detail), "signature check failed: %s",
                       ferry_strerror(r));
        goto out;
    }

    r = check_claims(is, jws, claims, now, opts, &c, &res);
    if (r < 0)
        goto out;

    /* The identity is built before the jti is consumed, and nothing that can fail comes after
     * the consumption: a token's jti is used up only when the token is accepted, so a holder
     * whose verification failed on our side (out of memory) can retry. */
    r = build_identity(is, jws, claims, &c, &id);
    if (r < 0)
        goto out;
    if (opts && opts->consume_jti)
        r = consume_jti(o, is, &c, now, &res);

out:
    /* issuer_keyset gave up (no_wait) before anything was decided: nothing is counted and
     * nothing consumed, so the caller's retry on a thread that may block starts afresh. */
    gave_up = no_wait && r == -FERRY_EWOULDBLOCK; /* res as issuer_keyset set it */
    if (r == 0) {
        res.reason = FERRY_REASON_OK;
        res.detail[0] = '\0';
    } else if (!gave_up && r != -FERRY_EREFUSED && res.reason == FERRY_REASON_OK) {
        res.reason = FERRY_REASON_INTERNAL;
        (void)snprintf(res.detail, sizeof(res.detail), "internal error: %s", ferry_strerror(r));
    } else if (!gave_up && r != -FERRY_EREFUSED) {
        res.reason = FERRY_REASON_INTERNAL;
    }
    if (o && !gave_up) {
        if (r == 0) {
            COUNT(&o->totals, accepted);
        } else {
            COUNT(&o->totals, refused);
            if ((size_t)res.reason < FERRY_REASON_MAX)
                atomic_fetch_add_explicit(&o->by_reason[res.reason], 1, memory_order_relaxed);
        }
        if (is && r == 0)
            COUNT(&is->stats, accepted);
        else if (is)
            COUNT(&is->stats, refused);
        for (unsigned i = 0; is && i < suppressions; i++)
            ISSUER_COUNT(is, refresh_suppressed);
    }
    if (ret_result)
        *ret_result = res;
    if (r == 0 && ret_identity)
        *ret_identity = TAKE_PTR(id);
    ferry_identity_free(id);
    ferry_jwks_unref(set);
    set_unref(issuers);
    json_decref(claims);
    ferry_jws_free(jws);
    return r;
}
