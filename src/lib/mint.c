/* lib/mint.c - ferry's signing keys, RFC 9068 access tokens, discovery document and JWKS.
 *
 * Design (docs/internals/mint.md has the formats):
 * - The state on disk (keys.json + one PEM per private key) is only ever changed under an
 *   exclusive flock on keys/.lock, and every change starts by re-reading the state from disk,
 *   so `ferry keys rotate` and a running ferryd cannot lose each other's keys. Files are
 *   replaced atomically (temp file, fsync, rename, fsync of the directory).
 * - What a mint signs with is a "signer": an immutable, reference-counted object holding the
 *   cached private ferry_jwk, the alg and the already base64url-encoded protected header. A
 *   rotation swaps the mint's signer under a mutex; a mint in flight keeps its own reference.
 * - Claims are written straight into a stack buffer with JSON string escaping (no jansson per
 *   token), base64url-encoded once into the token buffer, and signed through the cached key,
 *   so the cost of a token is the signature plus a few microseconds.
 * - Every input is checked before anything is signed: a refused request signs nothing.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "basic/errbuf.h"
#include "basic/b64.h"
#include "basic/macro.h"
#include "basic/fileio.h"
#include "basic/mem.h"
#include "basic/utf8.h"
#include "ferry/error.h"
#include "ferry/jose.h"
#include "ferry/json.h"
#include "ferry/mint.h"

#define KEYS_DIR "keys"
#define META_NAME "keys.json"
#define LOCK_NAME ".lock"
#define PEM_MAX (64 * 1024)
#define META_DEPTH 4
#define CLAIMS_MAX FERRY_JWS_MAX_LEN /* the token limit caps the claims well below this */
#define HDR_MAX 192

enum kstate { KS_ACTIVE = 0, KS_RETIRED, KS_EXPIRED };
static const char *const kstate_names[] = {"active", "retired", "expired"};

struct mkey {
    char kid[FERRY_THUMBPRINT_LEN + 1];
    ferry_alg alg;
    enum kstate state;
    int64_t created;
    int64_t retired_at;    /* 0 while active */
    int64_t publish_until; /* recorded at retirement: retired_at + max_ttl then */
    ferry_jwk *pub;        /* public key (from keys.json); owned */
};

struct keyset {
    struct mkey *keys;
    size_t n;
};

struct signer {
    atomic_uint n_ref;
    atomic_bool used; /* a token was minted with it (set under the mint's mutex) */
    ferry_jwk *key; /* private, owned reference */
    ferry_alg alg;
    size_t sig_len;
    size_t hdr_len; /* base64url(header) + '.' */
    char hdr[HDR_MAX];
};

struct ferry_mint {
    pthread_mutex_t lock; /* guards ks and active */
    char *issuer;
    char *iss_prefix; /* {"iss":"<escaped issuer>","sub": */
    size_t iss_prefix_len;
    char *state_dir;
    ferry_alg alg;
    unsigned rsa_bits;
    int64_t max_ttl;
    ferry_clock_fn clock;
    void *clock_data;
    unsigned flags;
    struct keyset ks;
    struct signer *active;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(ferry_jwk *, ferry_jwk_unref)
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free)


#define fail(...) ferry_errbuf_set(__VA_ARGS__)

static int64_t mint_now(const ferry_mint *m)
{
    return m->clock ? m->clock(m->clock_data) : (int64_t)time(NULL);
}

static int64_t sat_add(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    return a + b;
}

/* End of a retired key's overlap: the later of what was recorded when it was retired and
 * what this mint's max_ttl implies, so a process with a longer max_ttl never loses a key its
 * tokens still need. */
static int64_t publish_until(const ferry_mint *m, const struct mkey *k)
{
    int64_t mine = sat_add(k->retired_at, m->max_ttl);

    return k->publish_until > mine ? k->publish_until : mine;
}

static bool mint_alg_ok(ferry_alg alg)
{
    return alg == FERRY_ALG_ES256 || alg == FERRY_ALG_EDDSA || alg == FERRY_ALG_RS256;
}

/* The mint alg a key can sign with (P-256 -> ES256, Ed25519 -> EdDSA, RSA -> RS256). */
static ferry_alg infer_alg(const ferry_jwk *k)
{
    static const ferry_alg order[] = {FERRY_ALG_ES256, FERRY_ALG_EDDSA, FERRY_ALG_RS256};

    for (size_t i = 0; i < ARRAY_SIZE(order); i++)
        if (ferry_jwk_allows(k, order[i]))
            return order[i];
    return FERRY_ALG_UNKNOWN;
}

/* ---- text checks and the JSON writer --------------------------------------------------- */

/* Printable ASCII (0x20..0x7e): text ferry_text_ok accepts without decoding UTF-8. */
static const bool printable_ascii[256] = {[0x20 ... 0x7e] = true};

/* A required string: non-empty, at most max bytes, text_ok. Length in *ret_len. */
static int check_str(const char *s, size_t max, size_t *ret_len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len, i = 0;

    if (!s)
        return -EINVAL;
    len = strnlen(s, max + 1);
    if (len == 0)
        return -EINVAL;
    if (len > max)
        return -FERRY_ETOOBIG;
    while (i < len && printable_ascii[p[i]])
        i++;
    if (i < len && !ferry_text_ok(p + i, len - i))
        return -EINVAL;
    *ret_len = len;
    return 0;
}

/* RFC 6749 §3.3: scope-token 1*( %x21 / %x23-5B / %x5D-7E ), separated by single spaces. */
static int check_scope(const char *s, size_t *ret_len)
{
    size_t len;
    bool prev_space = true;

    len = strnlen(s, FERRY_MINT_SCOPE_MAX + 1);
    if (len > FERRY_MINT_SCOPE_MAX)
        return -FERRY_ETOOBIG;
    if (len == 0)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ') {
            if (prev_space)
                return -EINVAL;
            prev_space = true;
        } else if (c == 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e)) {
            prev_space = false;
        } else {
            return -EINVAL;
        }
    }
    if (prev_space)
        return -EINVAL; /* trailing space */
    *ret_len = len;
    return 0;
}

struct wr {
    char *p;
    size_t n, cap;
    bool over;
};

static inline void w_raw(struct wr *w, const char *s, size_t len)
{
    if (len > w->cap - w->n) {
        w->over = true;
        return;
    }
    memcpy(w->p + w->n, s, len);
    w->n += len;
}

#define W_LIT(w, lit) w_raw((w), (lit), sizeof(lit) - 1)

/* A JSON string, by the tree's one JSON string writer (basic/utf8.h: jansson's escapes; callers
 * refuse control bytes and invalid UTF-8 already, and the writer stays correct on its own: text
 * that is not UTF-8 makes the document fail). */
static void w_str(struct wr *w, const char *s, size_t len)
{
    size_t n;

    if (w->over)
        return;
    n = ferry_json_quote(w->p + w->n, w->cap - w->n, s, len, 0);
    if (n > w->cap - w->n) /* SIZE_MAX included */
        w->over = true;
    else
        w->n += n;
}

static void w_i64(struct wr *w, int64_t v)
{
    char t[24], o[24];
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t n = 0, k = 0;

    do {
        t[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        o[k++] = '-';
    while (n)
        o[k++] = t[--n];
    w_raw(w, o, k);
}

/* RFC 8693 §4.1 actor: {"sub", "iss"?, "client_id"?, "act"?}, validated and written in one
 * pass (before anything is signed). */
static int w_act(struct wr *w, const json_t *act, unsigned depth)
{
    static const char *const str_members[] = {"sub", "iss", "client_id"};
    static const size_t str_max[] = {FERRY_MINT_SUBJECT_MAX, FERRY_MINT_SUBJECT_MAX,
                                     FERRY_MINT_CLIENT_ID_MAX};
    const char *key;
    json_t *v;
    size_t known = 0, len;
    int r;

    if (depth > FERRY_MINT_ACT_MAX_DEPTH)
        return -FERRY_ETOOBIG;
    if (!json_is_object(act))
        return -EINVAL;
    json_object_foreach((json_t *)act, key, v) {
        bool ok = strcmp(key, "act") == 0;
        for (size_t i = 0; i < ARRAY_SIZE(str_members); i++)
            ok = ok || strcmp(key, str_members[i]) == 0;
        if (!ok)
            return -EINVAL;
        known++;
    }
    W_LIT(w, "{");
    for (size_t i = 0; i < ARRAY_SIZE(str_members); i++) {
        v = json_object_get(act, str_members[i]);
        if (!v) {
            if (i == 0)
                return -EINVAL; /* sub is required */
            continue;
        }
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
            return -EINVAL;
        r = check_str(json_string_value(v), str_max[i], &len);
        if (r < 0)
            return r;
        if (i > 0)
            W_LIT(w, ",");
        w_str(w, str_members[i], strlen(str_members[i]));
        W_LIT(w, ":");
        w_str(w, json_string_value(v), len);
    }
    v = json_object_get(act, "act");
    if (v) {
        W_LIT(w, ",\"act\":");
        r = w_act(w, v, depth + 1);
        if (r < 0)
            return r;
    }
    W_LIT(w, "}");
    return 0;
}

/* ---- jti: random bytes drawn from a per-thread pool ------------------------------------------ *
 * One RAND_bytes call per token costs more than the 16 bytes it returns (OpenSSL 3 takes the
 * DRBG's lock, checks for a fork with getpid() and re-keys its AES-CTR state per call). A
 * thread instead fills JTI_POOL_BYTES from RAND_bytes at once and hands out JTI_RAND_LEN bytes
 * per token; each slice is wiped from the pool as it is taken, so the pool only ever holds bytes
 * no token has used. The bytes are the DRBG's either way: uniqueness and unpredictability are
 * RAND_bytes's.
 * Fork: a child must never hand out bytes its parent also holds. A pthread_atfork child handler
 * bumps jti_fork_gen; a pool filled in another generation is wiped and refilled before use
 * (the forking thread's copy in the child included). A process that forks without the atfork
 * handlers (a raw clone(2) or _Fork()) and then mints in the child is not covered.
 * Thread exit: a pthread key destructor wipes and frees the thread's pool; the pool of the thread
 * that calls exit() is wiped by a library destructor. */
#define JTI_RAND_LEN 16
#define JTI_POOL_BYTES 512
_Static_assert(JTI_POOL_BYTES % JTI_RAND_LEN == 0, "the pool holds whole slices");

struct jti_pool {
    unsigned char bytes[JTI_POOL_BYTES];
    size_t next;  /* offset of the first unused byte; JTI_POOL_BYTES = empty */
    unsigned gen; /* jti_fork_gen when filled */
};

static pthread_once_t jti_once = PTHREAD_ONCE_INIT;
static pthread_key_t jti_key;
static bool jti_key_ok;
static atomic_uint jti_fork_gen;
static _Thread_local struct jti_pool *jti_tls;

static void jti_pool_free(void *p)
{
    struct jti_pool *pool = p;

    if (!pool)
        return;
    ferry_wipe(pool, sizeof(*pool));
    free(pool);
    if (jti_tls == pool)
        jti_tls = NULL;
}

static void jti_atfork_child(void)
{
    atomic_fetch_add_explicit(&jti_fork_gen, 1, memory_order_relaxed);
}

static void jti_init(void)
{
    /* Without the fork handler a child could reuse its parent's bytes: then no pool at all. */
    if (pthread_atfork(NULL, NULL, jti_atfork_child) != 0)
        return;
    jti_key_ok = pthread_key_create(&jti_key, jti_pool_free) == 0;
}

/* The calling thread's pool, wiped at library unload or process exit. */
__attribute__((destructor)) static void jti_exit(void)
{
    struct jti_pool *pool = jti_tls;

    if (pool)
        ferry_wipe(pool->bytes, sizeof(pool->bytes));
}

/* JTI_RAND_LEN fresh random bytes into out. 0 or -FERRY_ECRYPTO. */
static int jti_random(unsigned char out[JTI_RAND_LEN])
{
    struct jti_pool *pool = jti_tls;
    unsigned gen;

    if (!pool) {
        (void)pthread_once(&jti_once, jti_init);
        if (!jti_key_ok)
            goto direct;
        pool = malloc(sizeof(*pool));
        if (!pool)
            goto direct;
        pool->next = JTI_POOL_BYTES;
        pool->gen = 0;
        if (pthread_setspecific(jti_key, pool) != 0) {
            free(pool);
            goto direct;
        }
        jti_tls = pool;
    }
    gen = atomic_load_explicit(&jti_fork_gen, memory_order_relaxed);
    if (pool->gen != gen || pool->next > JTI_POOL_BYTES - JTI_RAND_LEN) {
        if (RAND_bytes(pool->bytes, JTI_POOL_BYTES) != 1) {
            ferry_wipe(pool->bytes, sizeof(pool->bytes));
            pool->next = JTI_POOL_BYTES;
            ERR_clear_error();
            return -FERRY_ECRYPTO;
        }
        pool->next = 0;
        pool->gen = gen;
    }
    memcpy(out, pool->bytes + pool->next, JTI_RAND_LEN);
    ferry_wipe(pool->bytes + pool->next, JTI_RAND_LEN);
    pool->next += JTI_RAND_LEN;
    return 0;

direct:
    if (RAND_bytes(out, JTI_RAND_LEN) != 1) {
        ERR_clear_error();
        return -FERRY_ECRYPTO;
    }
    return 0;
}

/* ---- signers ------------------------------------------------------------------------------ */

static void signer_unref(struct signer *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->n_ref, 1, memory_order_acq_rel) != 1)
        return;
    ferry_jwk_unref(s->key);
    free(s);
}

static struct signer *signer_ref(struct signer *s)
{
    if (s)
        atomic_fetch_add_explicit(&s->n_ref, 1, memory_order_relaxed);
    return s;
}

static int signer_new(ferry_jwk *key, ferry_alg alg, struct signer **ret)
{
    char json[HDR_MAX];
    struct signer *s;
    int n, sz;

    n = snprintf(json, sizeof(json), "{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"at+jwt\"}",
                 ferry_alg_name(alg), ferry_jwk_kid(key));
    if (n < 0 || (size_t)n >= sizeof(json) ||
        ferry_b64url_encoded_len((size_t)n) + 2 > HDR_MAX)
        return -FERRY_ETOOBIG;
    sz = EVP_PKEY_get_size(ferry_jwk_evp_pkey(key));
    if (sz <= 0)
        return -FERRY_ECRYPTO;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    atomic_init(&s->n_ref, 1);
    atomic_init(&s->used, false);
    s->key = ferry_jwk_ref(key);
    s->alg = alg;
    /* ECDSA: EVP_PKEY_get_size is the DER maximum; the JWS signature is r||s. */
    s->sig_len = alg == FERRY_ALG_ES256 ? 64 : alg == FERRY_ALG_EDDSA ? 64 : (size_t)sz;
    s->hdr_len = ferry_b64url_encode(json, (size_t)n, s->hdr);
    s->hdr[s->hdr_len++] = '.';
    s->hdr[s->hdr_len] = '\0';
    *ret = s;
    return 0;
}

/* ---- key sets ------------------------------------------------------------------------------- */

/* In the published set at now: the active key, and a retired key until publish_until(). A key
 * another process (with a shorter max_ttl) already marked "expired" counts too while this
 * process's own overlap lasts: its private file is gone, but the tokens this process signed
 * with it live that long. */
static bool is_published(const ferry_mint *m, const struct mkey *k, int64_t now)
{
    return k->state == KS_ACTIVE || now < publish_until(m, k);
}

static void keyset_release(struct keyset *ks)
{
    for (size_t i = 0; i < ks->n; i++)
        ferry_jwk_unref(ks->keys[i].pub);
    free(ks->keys);
    ks->keys = NULL;
    ks->n = 0;
}

static struct mkey *keyset_find(const struct keyset *ks, const char *kid)
{
    for (size_t i = 0; i < ks->n; i++)
        if (strcmp(ks->keys[i].kid, kid) == 0)
            return &ks->keys[i];
    return NULL;
}

static struct mkey *keyset_active(const struct keyset *ks)
{
    for (size_t i = 0; i < ks->n; i++)
        if (ks->keys[i].state == KS_ACTIVE)
            return &ks->keys[i];
    return NULL;
}

/* Public JWK of a key as published: jose's public export plus our alg and use. */
static int mkey_public_json(const struct mkey *k, json_t **ret)
{
    json_t *o = NULL;
    int r;

    r = ferry_jwk_to_public_json(k->pub, &o);
    if (r < 0)
        return r;
    if (json_object_set_new(o, "kid", json_string(k->kid)) != 0 ||
        json_object_set_new(o, "alg", json_string(ferry_alg_name(k->alg))) != 0 ||
        json_object_set_new(o, "use", json_string("sig")) != 0) {
        json_decref(o);
        return -ENOMEM;
    }
    *ret = o;
    return 0;
}

/* ---- the state directory -------------------------------------------------------------------- */

/* A directory we keep keys in: ours (or root's, for the state directory itself), not
 * writable by group or others. */
static int check_dir(int fd, const char *what, bool allow_root, char *errbuf, size_t errlen)
{
    struct stat st;

    if (fstat(fd, &st) < 0)
        return fail(errbuf, errlen, -errno, "%s: cannot stat: %s", what, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "%s: not a directory", what);
    if (st.st_uid != geteuid() && !(allow_root && st.st_uid == 0))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "%s: owned by uid %u, not by this user",
                    what, (unsigned)st.st_uid);
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        return fail(errbuf, errlen, -FERRY_ECONFIG,
                    "%s: group- or world-writable (mode %04o); chmod 0700 it", what,
                    (unsigned)(st.st_mode & 07777));
    return 0;
}

/* Open (creating when missing and create is set, 0700) the state directory and its keys/
 * subdirectory. Without create a missing one is -ENOENT. */
static int open_keys_dir(const char *state_dir, bool create, int *ret_fd, char *errbuf,
                         size_t errlen)
{
    _cleanup_close_ int sfd = -1, kfd = -1;
    char what[64];
    int r;

    if (create && mkdir(state_dir, 0700) < 0 && errno != EEXIST)
        return fail(errbuf, errlen, -errno, "state directory %s: cannot create: %s", state_dir,
                    strerror(errno));
    /* The state directory itself may be a symlink (systemd DynamicUser); nothing inside. */
    sfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sfd < 0 && errno == ENOENT)
        return fail(errbuf, errlen, -ENOENT, "state directory %s does not exist", state_dir);
    if (sfd < 0)
        return fail(errbuf, errlen, -errno, "state directory %s: cannot open: %s", state_dir,
                    strerror(errno));
    (void)snprintf(what, sizeof(what), "state directory");
    r = check_dir(sfd, what, true, errbuf, errlen);
    if (r < 0)
        return r;
    if (create && mkdirat(sfd, KEYS_DIR, 0700) < 0 && errno != EEXIST)
        return fail(errbuf, errlen, -errno, "%s/" KEYS_DIR ": cannot create: %s", state_dir,
                    strerror(errno));
    kfd = openat(sfd, KEYS_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (kfd < 0 && errno == ENOENT)
        return fail(errbuf, errlen, -ENOENT, "%s/" KEYS_DIR " does not exist (no key store)",
                    state_dir);
    if (kfd < 0)
        return fail(errbuf, errlen, errno == ENOTDIR || errno == ELOOP ? -FERRY_ECONFIG : -errno,
                    "%s/" KEYS_DIR ": cannot open (a symlink or not a directory?): %s",
                    state_dir, strerror(errno));
    r = check_dir(kfd, "state directory's " KEYS_DIR "/", false, errbuf, errlen);
    if (r < 0)
        return r;
    *ret_fd = kfd;
    kfd = -1;
    return 0;
}

/* Read a regular file in dfd (no symlink) of at most max bytes. Private files must be ours
 * and mode 0600 or stricter; others ours and not group/world-writable. A missing file gives
 * -ENOENT without a message. The buffer is NUL-terminated; free with ferry_wipe + free. */
static int read_at(int dfd, const char *name, size_t max, bool priv, char **ret, size_t *ret_len,
                   char *errbuf, size_t errlen)
{
    _cleanup_close_ int fd = -1;
    struct stat st;
    char *buf;
    int r;

    fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT)
            return -ENOENT;
        return fail(errbuf, errlen, errno == ELOOP ? -FERRY_ECONFIG : -errno,
                    "keys/%s: cannot open: %s", name,
                    errno == ELOOP ? "is a symlink" : strerror(errno));
    }
    if (fstat(fd, &st) < 0)
        return fail(errbuf, errlen, -errno, "keys/%s: cannot stat: %s", name, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "keys/%s: not a regular file", name);
    if (st.st_uid != geteuid())
        return fail(errbuf, errlen, -FERRY_ECONFIG, "keys/%s: owned by uid %u, not by this user",
                    name, (unsigned)st.st_uid);
    if (priv && (st.st_mode & 077))
        return fail(errbuf, errlen, -FERRY_ECONFIG,
                    "keys/%s: private key accessible by group or others (mode %04o); "
                    "chmod 0600 it",
                    name, (unsigned)(st.st_mode & 07777));
    if (!priv && (st.st_mode & (S_IWGRP | S_IWOTH)))
        return fail(errbuf, errlen, -FERRY_ECONFIG, "keys/%s: group- or world-writable", name);
    if (st.st_size < 0 || (uint64_t)st.st_size > max)
        return fail(errbuf, errlen, -FERRY_ETOOBIG, "keys/%s: larger than %zu bytes", name, max);
    r = ferry_read_exact(fd, (size_t)st.st_size, &buf);
    if (r < 0)
        return r == -ENOMEM ? r : fail(errbuf, errlen, r, "keys/%s: read failed: %s", name,
                                       strerror(-r));
    *ret = buf;
    *ret_len = (size_t)st.st_size;
    return 0;
}

static int fsync_dir(int dfd)
{
    return fsync(dfd) < 0 ? -errno : 0;
}

/* Replace dfd/name atomically with data (mode 0600): name.tmp, fsync, rename, fsync dir. */
static int write_atomic(int dfd, const char *name, const void *data, size_t len, char *errbuf,
                        size_t errlen)
{
    char tmp[128];
    int fd, r;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", name) >= sizeof(tmp))
        return -ENAMETOOLONG;
    if (unlinkat(dfd, tmp, 0) < 0 && errno != ENOENT)
        return fail(errbuf, errlen, -errno, "keys/%s: cannot remove: %s", tmp, strerror(errno));
    fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return fail(errbuf, errlen, -errno, "keys/%s: cannot create: %s", tmp, strerror(errno));
    r = ferry_write_all(fd, data, len);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && renameat(dfd, tmp, dfd, name) < 0)
        r = -errno;
    if (r < 0) {
        (void)unlinkat(dfd, tmp, 0);
        return fail(errbuf, errlen, r, "keys/%s: cannot write: %s", name, strerror(-r));
    }
    r = fsync_dir(dfd);
    if (r < 0)
        return fail(errbuf, errlen, r, "keys/: fsync failed: %s", strerror(-r));
    return 0;
}

/* Overwrite a private key file with zeros, then remove it. ENOENT is not an error (already
 * gone). On copy-on-write or flash storage the overwrite is best effort; the unlink is not. */
static int wipe_file(int dfd, const char *name, char *errbuf, size_t errlen)
{
    static const char zeros[4096];
    _cleanup_close_ int fd = -1;
    struct stat st;

    fd = openat(dfd, name, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT)
        return 0;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        off_t left = st.st_size;
        while (left > 0) {
            size_t chunk = left > (off_t)sizeof(zeros) ? sizeof(zeros) : (size_t)left;
            ssize_t n = write(fd, zeros, chunk);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            left -= n;
        }
        (void)fsync(fd);
    }
    if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
        return fail(errbuf, errlen, -errno, "keys/%s: cannot remove: %s", name, strerror(errno));
    (void)fsync_dir(dfd);
    return 0;
}

/* keys/key-<kid>.pem: the prefix keeps a kid starting with '-' from looking like an option
 * to whoever handles the file in a shell. */
#define PEM_NAME_LEN (FERRY_THUMBPRINT_LEN + 12)
static void pem_name(const char *kid, char out[PEM_NAME_LEN])
{
    (void)snprintf(out, PEM_NAME_LEN, "key-%s.pem", kid);
}

/* ---- keys.json ---------------------------------------------------------------------------- */

static bool kid_ok(const char *s, size_t len)
{
    if (len != FERRY_THUMBPRINT_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

static int meta_int(const json_t *o, const char *name, bool required, int64_t *ret, size_t idx,
                    char *errbuf, size_t errlen)
{
    json_t *v = json_object_get(o, name);

    if (!v) {
        if (required)
            return fail(errbuf, errlen, -FERRY_EMALFORMED, "keys/" META_NAME ": keys[%zu]: %s "
                        "is missing", idx, name);
        *ret = 0;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "keys/" META_NAME ": keys[%zu]: %s is not a non-negative integer", idx, name);
    *ret = json_integer_value(v);
    return 0;
}

static int meta_parse_key(const json_t *o, size_t idx, struct mkey *k, char *errbuf,
                          size_t errlen)
{
    static const char *const members[] = {"kid", "alg", "state", "created",
                                          "retired_at", "publish_until", "jwk"};
    char tp[FERRY_THUMBPRINT_LEN + 1];
    const char *key, *s;
    json_t *v, *jwk;
    int r;

    if (!json_is_object(o))
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "keys/" META_NAME ": keys[%zu] is not an object", idx);
    json_object_foreach((json_t *)o, key, v) {
        bool known = false;
        for (size_t i = 0; i < ARRAY_SIZE(members); i++)
            known = known || strcmp(key, members[i]) == 0;
        if (!known)
            return fail(errbuf, errlen, -FERRY_EMALFORMED,
                        "keys/" META_NAME ": keys[%zu]: unknown member \"%.32s\"", idx, key);
    }
    v = json_object_get(o, "kid");
    if (!json_is_string(v) || !kid_ok(json_string_value(v), json_string_length(v)))
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "keys/" META_NAME ": keys[%zu]: kid is not an RFC 7638 thumbprint", idx);
    memcpy(k->kid, json_string_value(v), FERRY_THUMBPRINT_LEN + 1);
    v = json_object_get(o, "alg");
    k->alg = json_is_string(v) ? ferry_alg_from_name(json_string_value(v)) : FERRY_ALG_UNKNOWN;
    if (!mint_alg_ok(k->alg))
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "keys/" META_NAME ": keys[%zu]: alg is not ES256, EdDSA or RS256", idx);
    v = json_object_get(o, "state");
    s = json_string_value(v);
    if (!s)
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "keys/" META_NAME ": keys[%zu]: state is missing", idx);
    if (strcmp(s, "active") == 0)
        k->state = KS_ACTIVE;
    else if (strcmp(s, "retired") == 0)
        k->state = KS_RETIRED;
    else if (strcmp(s, "expired") == 0)
        k->state = KS_EXPIRED;
    else
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "keys/" META_NAME ": keys[%zu]: state is not active, retired or expired",
                    idx);
    r = meta_int(o, "created", true, &k->created, idx, errbuf, errlen);
    if (r < 0)
        return r;
    r = meta_int(o, "retired_at", k->state != KS_ACTIVE, &k->retired_at, idx, errbuf, errlen);
    if (r < 0)
        return r;
    r = meta_int(o, "publish_until", k->state != KS_ACTIVE, &k->publish_until, idx, errbuf,
                 errlen);
    if (r < 0)
        return r;
    if (k->state == KS_ACTIVE && (k->retired_at || k->publish_until))
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "keys/" META_NAME ": keys[%zu]: an active key has retired_at", idx);
    if (k->state != KS_ACTIVE && (k->retired_at < k->created || k->publish_until < k->retired_at))
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "keys/" META_NAME ": keys[%zu]: times out of order", idx);
    jwk = json_object_get(o, "jwk");
    if (!json_is_object(jwk))
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "keys/" META_NAME ": keys[%zu]: jwk is missing", idx);
    /* Public members only: a private member here is refused by the import. */
    r = ferry_jwk_from_json(jwk, 0, &k->pub);
    if (r < 0)
        return fail(errbuf, errlen, r == -ENOMEM ? r : -FERRY_EMALFORMED,
                    "keys/" META_NAME ": keys[%zu]: jwk refused: %s", idx, ferry_strerror(r));
    r = ferry_jwk_thumbprint(k->pub, tp);
    if (r < 0)
        return fail(errbuf, errlen, r, "keys/" META_NAME ": keys[%zu]: thumbprint failed", idx);
    if (strcmp(tp, k->kid) != 0 || (ferry_jwk_kid(k->pub) && strcmp(ferry_jwk_kid(k->pub),
                                                                     k->kid) != 0))
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "keys/" META_NAME ": keys[%zu]: kid is not the thumbprint of its jwk", idx);
    if (!ferry_jwk_allows(k->pub, k->alg))
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "keys/" META_NAME ": keys[%zu]: jwk does not fit alg %s", idx,
                    ferry_alg_name(k->alg));
    return 0;
}

static int meta_parse(const char *buf, size_t len, struct keyset *ret, char *errbuf,
                      size_t errlen)
{
    _cleanup_(json_decrefp) json_t *doc = NULL;
    struct keyset ks = {0};
    char jerr[FERRY_JSON_ERR_LEN];
    const char *key;
    json_t *v, *keys;
    size_t n_active = 0;
    int r;

    r = ferry_json_parse(buf, len, FERRY_MINT_META_MAX, META_DEPTH, &doc, jerr, sizeof(jerr));
    if (r < 0)
        return fail(errbuf, errlen, r == -ENOMEM || r == -FERRY_ETOOBIG ? r : -FERRY_EMALFORMED,
                    "keys/" META_NAME ": not valid JSON: %s", jerr);
    if (!json_is_object(doc))
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "keys/" META_NAME ": not an object");
    json_object_foreach(doc, key, v) {
        if (strcmp(key, "version") != 0 && strcmp(key, "keys") != 0)
            return fail(errbuf, errlen, -FERRY_EMALFORMED,
                        "keys/" META_NAME ": unknown member \"%.32s\"", key);
    }
    v = json_object_get(doc, "version");
    if (!json_is_integer(v) || json_integer_value(v) != 1)
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "keys/" META_NAME ": version is not 1");
    keys = json_object_get(doc, "keys");
    if (!json_is_array(keys))
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "keys/" META_NAME ": keys is not an array");
    if (json_array_size(keys) > FERRY_MINT_MAX_KEYS)
        return fail(errbuf, errlen, -FERRY_ETOOBIG, "keys/" META_NAME ": more than %d keys",
                    FERRY_MINT_MAX_KEYS);
    if (json_array_size(keys) > 0) {
        ks.keys = calloc(json_array_size(keys), sizeof(*ks.keys));
        if (!ks.keys)
            return -ENOMEM;
    }
    for (size_t i = 0; i < json_array_size(keys); i++) {
        struct mkey *k = &ks.keys[ks.n];
        r = meta_parse_key(json_array_get(keys, i), i, k, errbuf, errlen);
        if (k->pub)
            ks.n++;
        if (r < 0)
            goto fail;
        for (size_t j = 0; j + 1 < ks.n; j++)
            if (strcmp(ks.keys[j].kid, k->kid) == 0) {
                r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                         "keys/" META_NAME ": keys[%zu]: kid listed twice", i);
                goto fail;
            }
        if (k->state == KS_ACTIVE)
            n_active++;
    }
    if (ks.n > 0 && n_active != 1) {
        r = fail(errbuf, errlen, -FERRY_EMALFORMED,
                 "keys/" META_NAME ": %zu active keys (exactly one expected)", n_active);
        goto fail;
    }
    *ret = ks;
    return 0;
fail:
    keyset_release(&ks);
    return r;
}

static int meta_write(int dfd, const struct keyset *ks, char *errbuf, size_t errlen)
{
    _cleanup_(json_decrefp) json_t *doc = NULL, *arr = NULL;
    _cleanup_free_ char *text = NULL;
    int r;

    arr = json_array();
    if (!arr)
        return -ENOMEM;
    for (size_t i = 0; i < ks->n; i++) {
        const struct mkey *k = &ks->keys[i];
        json_t *jwk = NULL, *o;
        r = mkey_public_json(k, &jwk);
        if (r < 0)
            return r;
        o = json_pack("{s:s, s:s, s:s, s:I, s:o}", "kid", k->kid, "alg", ferry_alg_name(k->alg),
                      "state", kstate_names[k->state], "created", (json_int_t)k->created, "jwk",
                      jwk);
        if (!o)
            return -ENOMEM;
        if (k->state != KS_ACTIVE &&
            (json_object_set_new(o, "retired_at", json_integer(k->retired_at)) != 0 ||
             json_object_set_new(o, "publish_until", json_integer(k->publish_until)) != 0)) {
            json_decref(o);
            return -ENOMEM;
        }
        if (json_array_append_new(arr, o) != 0)
            return -ENOMEM;
    }
    doc = json_pack("{s:i, s:O}", "version", 1, "keys", arr);
    if (!doc)
        return -ENOMEM;
    text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text)
        return -ENOMEM;
    if (strlen(text) + 1 > FERRY_MINT_META_MAX)
        return fail(errbuf, errlen, -FERRY_ETOOBIG, "keys/" META_NAME " would exceed its limit");
    return write_atomic(dfd, META_NAME, text, strlen(text), errbuf, errlen);
}

/* ---- private keys ---------------------------------------------------------------------------- */

/* Load keys/<kid>.pem and check it is the private half of k. */
static int load_private(int dfd, const struct mkey *k, ferry_jwk **ret, char *errbuf,
                        size_t errlen)
{
    _cleanup_(ferry_jwk_unrefp) ferry_jwk *key = NULL;
    char name[PEM_NAME_LEN], tp[FERRY_THUMBPRINT_LEN + 1];
    char *pem = NULL;
    size_t len = 0;
    int r;

    pem_name(k->kid, name);
    r = read_at(dfd, name, PEM_MAX, true, &pem, &len, errbuf, errlen);
    if (r == -ENOENT)
        return fail(errbuf, errlen, -FERRY_ECONFIG, "keys/%s: private key of the active key "
                    "is missing", name);
    if (r < 0)
        return r;
    r = ferry_jwk_from_pem(pem, len, &key);
    ferry_wipe(pem, len);
    free(pem);
    if (r < 0)
        return fail(errbuf, errlen, r == -ENOMEM ? r : -FERRY_EMALFORMED,
                    "keys/%s: not a usable private key: %s", name, ferry_strerror(r));
    if (!ferry_jwk_is_private(key))
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "keys/%s: holds no private key", name);
    r = ferry_jwk_thumbprint(key, tp);
    if (r < 0)
        return fail(errbuf, errlen, r, "keys/%s: thumbprint failed", name);
    if (strcmp(tp, k->kid) != 0)
        return fail(errbuf, errlen, -FERRY_EMALFORMED,
                    "keys/%s: the private key does not match its kid", name);
    if (!ferry_jwk_allows(key, k->alg))
        return fail(errbuf, errlen, -FERRY_EMALFORMED, "keys/%s: key does not fit alg %s", name,
                    ferry_alg_name(k->alg));
    *ret = TAKE_PTR(key);
    return 0;
}

/* A retired key's private file, when present, must pass the same ownership and mode checks. */
static int check_private_file(int dfd, const struct mkey *k, char *errbuf, size_t errlen)
{
    char name[PEM_NAME_LEN];
    char *pem = NULL;
    size_t len = 0;
    int r;

    pem_name(k->kid, name);
    r = read_at(dfd, name, PEM_MAX, true, &pem, &len, errbuf, errlen);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    ferry_wipe(pem, len);
    free(pem);
    return 0;
}

static int generate_key(const ferry_mint *m, ferry_alg alg, ferry_jwk **ret, char *errbuf,
                        size_t errlen)
{
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
    _cleanup_(BIO_freep) BIO *bio = NULL;
    char *data = NULL;
    long n;
    int r;

    if (alg != FERRY_ALG_RS256 || m->rsa_bits == 0 || m->rsa_bits == 3072) {
        r = ferry_jwk_generate(alg, ret);
        return r < 0 ? fail(errbuf, errlen, r, "cannot generate a %s key: %s",
                            ferry_alg_name(alg), ferry_strerror(r))
                     : 0;
    }
    /* Another RSA size: generate, then import through the one key policy of the jose layer
     * (PEM in wiped secure memory). */
    pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)m->rsa_bits);
    bio = BIO_new(BIO_s_secmem());
    if (!pkey || !bio ||
        PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
        (n = BIO_get_mem_data(bio, &data)) <= 0) {
        ERR_clear_error();
        return fail(errbuf, errlen, -FERRY_ECRYPTO, "cannot generate an RSA-%u key",
                    m->rsa_bits);
    }
    r = ferry_jwk_from_pem(data, (size_t)n, ret);
    if (r < 0)
        return fail(errbuf, errlen, r, "cannot import the generated RSA key: %s",
                    ferry_strerror(r));
    return 0;
}

/* ---- synchronising with the state directory --------------------------------------------- */

/* Called under the exclusive lock right after sync_state swapped the signer. When old_sig
 * minted tokens, it did so until now (this process's own rotation, or another process's it had not seen yet): every
 * token it made has iat <= now (ferry_mint_token reads the clock before it takes the signer),
 * so when its key is no longer active, keep that key published until now + max_ttl - in
 * keys.json too, so every process publishes it. */
static int extend_stale_signer(ferry_mint *m, int dfd, const struct signer *old_sig,
                               char *errbuf, size_t errlen)
{
    int64_t until = sat_add(mint_now(m), m->max_ttl);
    bool extended = false;
    struct mkey *k;

    /* used was set under m->lock by every mint that took old_sig before the swap. */
    if (!old_sig || !atomic_load_explicit(&old_sig->used, memory_order_relaxed))
        return 0;
    pthread_mutex_lock(&m->lock);
    k = keyset_find(&m->ks, ferry_jwk_kid(old_sig->key));
    if (k && k->state != KS_ACTIVE && k->publish_until < until) {
        k->publish_until = until;
        if (k->state == KS_EXPIRED) /* expired by a shorter max_ttl elsewhere: back */
            k->state = KS_RETIRED;
        extended = true;
    }
    pthread_mutex_unlock(&m->lock);
    /* Only sync_state (serialised by the flock) changes m->ks, so reading it here is safe. */
    return extended ? meta_write(dfd, &m->ks, errbuf, errlen) : 0;
}

/* Under the exclusive lock: read the state from disk; when newkey is given (borrowed), make it
 * the active key and retire the current one; when the state is empty and generate is set,
 * generate a first key; retire keys whose overlap has passed; write what changed; wipe the
 * private files of expired keys; then install the result in m. */
static int sync_state(ferry_mint *m, ferry_jwk *newkey, ferry_alg new_alg, bool generate,
                      char *errbuf, size_t errlen)
{
    _cleanup_close_ int dfd = -1, lfd = -1;
    _cleanup_(ferry_jwk_unrefp) ferry_jwk *gen = NULL, *active_priv = NULL;
    struct keyset ks = {0}, old_ks;
    struct signer *sig = NULL, *old_sig;
    char tp[FERRY_THUMBPRINT_LEN + 1] = "", name[PEM_NAME_LEN];
    int64_t now = mint_now(m);
    bool dirty = false, ro = m->flags & FERRY_MINT_READ_ONLY;
    size_t published = 0;
    struct mkey *a;
    char *buf = NULL;
    size_t len = 0;
    int r;

    if (ro && newkey)
        return fail(errbuf, errlen, -EROFS, "the key store was opened read-only");
    if (ro)
        generate = false;
    r = open_keys_dir(m->state_dir, !ro, &dfd, errbuf, errlen);
    if (r < 0)
        return r;
    /* A reader takes the lock shared when it exists (files are replaced atomically, so one
     * that never saw a writer reads a consistent state without it) and never creates it. */
    lfd = ro ? openat(dfd, LOCK_NAME, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY)
             : openat(dfd, LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY,
                      0600);
    if (lfd < 0 && !(ro && errno == ENOENT))
        return fail(errbuf, errlen, -errno, "keys/" LOCK_NAME ": cannot open: %s",
                    strerror(errno));
    while (lfd >= 0 && flock(lfd, ro ? LOCK_SH : LOCK_EX) < 0)
        if (errno != EINTR)
            return fail(errbuf, errlen, -errno, "keys/" LOCK_NAME ": cannot lock: %s",
                        strerror(errno));

    r = read_at(dfd, META_NAME, FERRY_MINT_META_MAX, false, &buf, &len, errbuf, errlen);
    if (r < 0 && r != -ENOENT)
        return r;
    if (r == 0) {
        r = meta_parse(buf, len, &ks, errbuf, errlen);
        free(buf);
        if (r < 0)
            return r;
    }

    if (!newkey && ks.n == 0 && generate) {
        r = generate_key(m, m->alg, &gen, errbuf, errlen);
        if (r < 0)
            goto out;
        newkey = gen;
        new_alg = m->alg;
    }
    if (newkey && ks.n > 0 && (m->flags & FERRY_MINT_INIT_ONLY)) {
        r = fail(errbuf, errlen, -EEXIST, "the key store already holds keys");
        goto out;
    }
    if (newkey) {
        struct mkey *k, *grown;
        json_t *pj = NULL;

        r = ferry_jwk_thumbprint(newkey, tp);
        if (r < 0) {
            r = fail(errbuf, errlen, r, "thumbprint of the new key failed");
            goto out;
        }
        if (keyset_find(&ks, tp)) {
            r = fail(errbuf, errlen, -FERRY_EDUPLICATE, "key %s was used before; a retired "
                     "key cannot become active again", tp);
            goto out;
        }
        if (ks.n >= FERRY_MINT_MAX_KEYS) {
            r = fail(errbuf, errlen, -FERRY_EFULL, "keys/" META_NAME " already holds %d keys",
                     FERRY_MINT_MAX_KEYS);
            goto out;
        }
        grown = realloc(ks.keys, (ks.n + 1) * sizeof(*ks.keys));
        if (!grown) {
            r = -ENOMEM;
            goto out;
        }
        ks.keys = grown;
        a = keyset_active(&ks);
        if (a) {
            a->state = KS_RETIRED;
            a->retired_at = now > a->created ? now : a->created;
            a->publish_until = sat_add(a->retired_at, m->max_ttl);
        }
        k = &ks.keys[ks.n];
        memset(k, 0, sizeof(*k));
        memcpy(k->kid, tp, sizeof(tp));
        k->alg = new_alg;
        k->state = KS_ACTIVE;
        k->created = now > 0 ? now : 0;
        /* The public half as its own key object: keys.json never holds private members. */
        r = ferry_jwk_to_public_json(newkey, &pj);
        if (r == 0) {
            r = ferry_jwk_from_json(pj, 0, &k->pub);
            json_decref(pj);
        }
        if (r < 0)
            goto out;
        ks.n++;
        dirty = true;
    }

    for (size_t i = 0; i < ks.n; i++) {
        struct mkey *k = &ks.keys[i];
        if (k->state == KS_RETIRED && now >= publish_until(m, k)) {
            k->state = KS_EXPIRED;
            dirty = true;
        }
        if (is_published(m, k, now))
            published++;
    }
    if (newkey && published > FERRY_JWKS_MAX_KEYS) {
        r = fail(errbuf, errlen, -FERRY_EFULL, "%zu keys would be published (at most %d): "
                 "wait for retired keys to expire", published, FERRY_JWKS_MAX_KEYS);
        goto out;
    }

    a = keyset_active(&ks);
    if (a && newkey && strcmp(a->kid, tp) == 0)
        active_priv = ferry_jwk_ref(newkey);
    else if (a && ro) {
        r = check_private_file(dfd, a, errbuf, errlen); /* checked, not loaded */
        if (r < 0)
            goto out;
    } else if (a) {
        r = load_private(dfd, a, &active_priv, errbuf, errlen);
        if (r < 0)
            goto out;
    }
    for (size_t i = 0; i < ks.n; i++)
        if (ks.keys[i].state == KS_RETIRED) {
            r = check_private_file(dfd, &ks.keys[i], errbuf, errlen);
            if (r < 0)
                goto out;
        }

    if (newkey) {
        char *pem = NULL;
        size_t pem_len = 0;

        r = ferry_jwk_to_pem(newkey, &pem, &pem_len);
        if (r < 0) {
            r = fail(errbuf, errlen, r, "cannot encode the new key: %s", ferry_strerror(r));
            goto out;
        }
        pem_name(tp, name);
        r = write_atomic(dfd, name, pem, pem_len, errbuf, errlen);
        ferry_jwk_pem_free(pem, pem_len);
        if (r < 0)
            goto out;
    }
    if (dirty && !ro) {
        r = meta_write(dfd, &ks, errbuf, errlen);
        if (r < 0)
            goto out;
    }
    /* After keys.json says "expired": a crash in between leaves a file the next sync wipes. */
    for (size_t i = 0; i < ks.n && !ro; i++)
        if (ks.keys[i].state == KS_EXPIRED) {
            pem_name(ks.keys[i].kid, name);
            r = wipe_file(dfd, name, errbuf, errlen);
            if (r < 0)
                goto out;
        }

    if (active_priv) {
        r = signer_new(active_priv, a->alg, &sig);
        if (r < 0)
            goto out;
    }
    pthread_mutex_lock(&m->lock);
    old_ks = m->ks;
    m->ks = ks;
    old_sig = m->active;
    m->active = sig;
    pthread_mutex_unlock(&m->lock);
    ks = old_ks;
    r = ro ? 0 : extend_stale_signer(m, dfd, old_sig, errbuf, errlen);
    signer_unref(old_sig);
out:
    keyset_release(&ks);
    return r;
}

/* ---- public API ----------------------------------------------------------------------------- */

static int check_issuer(const char *iss, char *errbuf, size_t errlen)
{
    static const char *const loopback[] = {"127.0.0.1", "[::1]", "localhost"};
    size_t len = strnlen(iss, FERRY_MINT_ISSUER_MAX + 1);
    const char *host;

    if (len == 0 || len > FERRY_MINT_ISSUER_MAX)
        return fail(errbuf, errlen, -EINVAL, "issuer: empty or longer than %d bytes",
                    FERRY_MINT_ISSUER_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)iss[i];
        if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#' || c == '"' || c == '\\')
            return fail(errbuf, errlen, -EINVAL, "issuer: byte %zu is not allowed (spaces, "
                        "controls, non-ASCII, '?', '#', '\"', '\\')", i);
    }
    if (strncmp(iss, "https://", 8) == 0) {
        host = iss + 8;
    } else if (strncmp(iss, "http://", 7) == 0) {
        bool ok = false;
        host = iss + 7;
        for (size_t i = 0; i < ARRAY_SIZE(loopback); i++) {
            size_t n = strlen(loopback[i]);
            if (strncmp(host, loopback[i], n) == 0 &&
                (host[n] == '\0' || host[n] == ':' || host[n] == '/'))
                ok = true;
        }
        if (!ok)
            return fail(errbuf, errlen, -EINVAL,
                        "issuer: http:// is allowed only for 127.0.0.1, [::1] and localhost");
    } else {
        return fail(errbuf, errlen, -EINVAL, "issuer: must be an https:// URL");
    }
    if (*host == '\0' || *host == '/' || *host == ':' || *host == '@')
        return fail(errbuf, errlen, -EINVAL, "issuer: no host");
    if (iss[len - 1] == '/')
        return fail(errbuf, errlen, -EINVAL, "issuer: must not end with '/'");
    return 0;
}

FERRY_EXPORT int ferry_mint_open(const ferry_mint_options *opts, ferry_mint **ret, char *errbuf,
                                 size_t errlen)
{
    ferry_mint *m;
    struct wr w;
    size_t iss_len;
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!opts || !ret)
        return -EINVAL;
    if (!opts->state_dir || !*opts->state_dir)
        return fail(errbuf, errlen, -EINVAL, "no state directory given");
    if (opts->issuer) {
        r = check_issuer(opts->issuer, errbuf, errlen);
        if (r < 0)
            return r;
    }
    if (opts->alg != FERRY_ALG_UNKNOWN && !mint_alg_ok(opts->alg))
        return fail(errbuf, errlen, -FERRY_EUNSUPPORTED,
                    "alg %s: ferry mints with ES256, EdDSA or RS256",
                    ferry_alg_name(opts->alg) ? ferry_alg_name(opts->alg) : "?");
    if (opts->rsa_bits && (opts->rsa_bits < FERRY_RSA_MIN_BITS ||
                           opts->rsa_bits > FERRY_RSA_MAX_BITS || opts->rsa_bits % 8))
        return fail(errbuf, errlen, -EINVAL, "RSA size %u: must be a multiple of 8 in %d..%d",
                    opts->rsa_bits, FERRY_RSA_MIN_BITS, FERRY_RSA_MAX_BITS);
    if (opts->max_ttl < 0 || opts->max_ttl > FERRY_MINT_MAX_TTL_LIMIT)
        return fail(errbuf, errlen, -EINVAL, "max_ttl %lld: must be 1..%d seconds",
                    (long long)opts->max_ttl, FERRY_MINT_MAX_TTL_LIMIT);

    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return -ENOMEM;
    }
    m->alg = opts->alg == FERRY_ALG_UNKNOWN ? FERRY_ALG_ES256 : opts->alg;
    m->rsa_bits = opts->rsa_bits;
    m->max_ttl = opts->max_ttl ? opts->max_ttl : FERRY_MINT_DEFAULT_TTL;
    m->clock = opts->clock;
    m->clock_data = opts->clock_data;
    m->flags = opts->flags;
    m->state_dir = strdup(opts->state_dir);
    if (!m->state_dir) {
        r = -ENOMEM;
        goto fail;
    }
    if (opts->issuer) {
        m->issuer = strdup(opts->issuer);
        iss_len = strlen(opts->issuer);
        m->iss_prefix = malloc(2 * iss_len + 32);
        if (!m->issuer || !m->iss_prefix) {
            r = -ENOMEM;
            goto fail;
        }
        w = (struct wr){m->iss_prefix, 0, 2 * iss_len + 31, false};
        W_LIT(&w, "{\"iss\":");
        w_str(&w, opts->issuer, iss_len);
        W_LIT(&w, ",\"sub\":");
        m->iss_prefix[w.n] = '\0';
        m->iss_prefix_len = w.n;
    }
    r = sync_state(m, NULL, FERRY_ALG_UNKNOWN, !(opts->flags & FERRY_MINT_NO_GENERATE), errbuf,
                   errlen);
    if (r < 0)
        goto fail;
    *ret = m;
    return 0;
fail:
    ferry_mint_free(m);
    return r;
}

FERRY_EXPORT void ferry_mint_free(ferry_mint *m)
{
    if (!m)
        return;
    keyset_release(&m->ks);
    signer_unref(m->active);
    pthread_mutex_destroy(&m->lock);
    free(m->issuer);
    free(m->iss_prefix);
    free(m->state_dir);
    free(m);
}

FERRY_EXPORT int ferry_mint_rotate(ferry_mint *m, ferry_alg alg, char *errbuf, size_t errlen)
{
    _cleanup_(ferry_jwk_unrefp) ferry_jwk *key = NULL;
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!m)
        return -EINVAL;
    if (alg == FERRY_ALG_UNKNOWN)
        alg = m->alg;
    if (!mint_alg_ok(alg))
        return fail(errbuf, errlen, -FERRY_EUNSUPPORTED,
                    "ferry mints with ES256, EdDSA or RS256");
    if (m->flags & FERRY_MINT_READ_ONLY)
        return fail(errbuf, errlen, -EROFS, "the key store was opened read-only");
    r = generate_key(m, alg, &key, errbuf, errlen);
    if (r < 0)
        return r;
    return sync_state(m, key, alg, false, errbuf, errlen);
}

FERRY_EXPORT int ferry_mint_import_pem(ferry_mint *m, const void *pem, size_t len, ferry_alg alg,
                                       char *errbuf, size_t errlen)
{
    _cleanup_(ferry_jwk_unrefp) ferry_jwk *key = NULL;
    ferry_alg fit;
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!m || !pem)
        return -EINVAL;
    if (m->flags & FERRY_MINT_READ_ONLY)
        return fail(errbuf, errlen, -EROFS, "the key store was opened read-only");
    r = ferry_jwk_from_pem(pem, len, &key);
    if (r < 0)
        return fail(errbuf, errlen, r, "PEM key refused: %s", ferry_strerror(r));
    if (!ferry_jwk_is_private(key))
        return fail(errbuf, errlen, -FERRY_ENOKEY, "the PEM holds a public key; a private key "
                    "is needed to sign");
    fit = infer_alg(key);
    if (fit == FERRY_ALG_UNKNOWN)
        return fail(errbuf, errlen, -FERRY_EUNSUPPORTED, "the PEM key is neither P-256, "
                    "Ed25519 nor RSA");
    if (alg != FERRY_ALG_UNKNOWN && alg != fit)
        return fail(errbuf, errlen, -FERRY_EKEYMISMATCH, "the PEM key does not fit alg %s "
                    "(it is a %s key)", ferry_alg_name(alg) ? ferry_alg_name(alg) : "?",
                    ferry_alg_name(fit));
    return sync_state(m, key, fit, false, errbuf, errlen);
}

FERRY_EXPORT int ferry_mint_prune(ferry_mint *m, char *errbuf, size_t errlen)
{
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!m)
        return -EINVAL;
    return sync_state(m, NULL, FERRY_ALG_UNKNOWN, false, errbuf, errlen);
}

FERRY_EXPORT int ferry_mint_reload(ferry_mint *m, char *errbuf, size_t errlen)
{
    return ferry_mint_prune(m, errbuf, errlen);
}

FERRY_EXPORT int ferry_mint_token(ferry_mint *m, const ferry_mint_request *req, char **ret_token,
                                  char ret_jti[FERRY_MINT_JTI_LEN + 1], int64_t *ret_exp)
{
    char claims[CLAIMS_MAX], jti[FERRY_MINT_JTI_LEN + 1];
    size_t sub_len, cid_len, si_len, ss_len, scope_len = 0, tlen, o, sig_len = 0;
    size_t aud_len[FERRY_MINT_MAX_AUDIENCES];
    struct wr w = {claims, 0, sizeof(claims), false};
    unsigned char rnd[JTI_RAND_LEN], *sig = NULL;
    struct signer *s;
    int64_t now, ttl, exp;
    char *tok = NULL;
    int r;

    if (!m || !req || !ret_token || !m->issuer)
        return -EINVAL;
    /* Everything is checked before anything is signed. */
    if ((r = check_str(req->subject, FERRY_MINT_SUBJECT_MAX, &sub_len)) < 0 ||
        (r = check_str(req->client_id, FERRY_MINT_CLIENT_ID_MAX, &cid_len)) < 0 ||
        (r = check_str(req->src_iss, FERRY_MINT_SUBJECT_MAX, &si_len)) < 0 ||
        (r = check_str(req->src_sub, FERRY_MINT_SUBJECT_MAX, &ss_len)) < 0 ||
        (req->scope && (r = check_scope(req->scope, &scope_len)) < 0))
        return r;
    if (!req->audience || req->n_audience == 0)
        return -EINVAL;
    if (req->n_audience > FERRY_MINT_MAX_AUDIENCES)
        return -FERRY_ETOOBIG;
    for (size_t i = 0; i < req->n_audience; i++) {
        r = check_str(req->audience[i], FERRY_MINT_SUBJECT_MAX, &aud_len[i]);
        if (r < 0)
            return r;
    }
    if (req->ttl <= 0)
        return -EINVAL;
    /* The clock is read before the signer is taken: sync_state relies on every token of a
     * signer it swapped out having iat <= the time after the swap (extend_stale_signer). */
    now = mint_now(m);
    if (now <= 0)
        return -ERANGE;
    ttl = req->ttl < m->max_ttl ? req->ttl : m->max_ttl;
    if (now > INT64_MAX - ttl)
        return -ERANGE;
    exp = now + ttl;
    if ((r = jti_random(rnd)) < 0)
        return r;
    ferry_b64url_encode(rnd, sizeof(rnd), jti);
    ferry_wipe(rnd, sizeof(rnd));

    w_raw(&w, m->iss_prefix, m->iss_prefix_len);
    w_str(&w, req->subject, sub_len);
    W_LIT(&w, ",\"aud\":");
    if (req->n_audience == 1) {
        w_str(&w, req->audience[0], aud_len[0]);
    } else {
        W_LIT(&w, "[");
        for (size_t i = 0; i < req->n_audience; i++) {
            if (i)
                W_LIT(&w, ",");
            w_str(&w, req->audience[i], aud_len[i]);
        }
        W_LIT(&w, "]");
    }
    W_LIT(&w, ",\"exp\":");
    w_i64(&w, exp);
    W_LIT(&w, ",\"iat\":");
    w_i64(&w, now);
    W_LIT(&w, ",\"nbf\":");
    w_i64(&w, now);
    W_LIT(&w, ",\"jti\":\"");
    w_raw(&w, jti, FERRY_MINT_JTI_LEN);
    W_LIT(&w, "\",\"client_id\":");
    w_str(&w, req->client_id, cid_len);
    if (req->scope) {
        W_LIT(&w, ",\"scope\":");
        w_str(&w, req->scope, scope_len);
    }
    W_LIT(&w, ",\"src_iss\":");
    w_str(&w, req->src_iss, si_len);
    W_LIT(&w, ",\"src_sub\":");
    w_str(&w, req->src_sub, ss_len);
    if (req->act) {
        W_LIT(&w, ",\"act\":");
        r = w_act(&w, req->act, 1);
        if (r < 0)
            return r;
    }
    W_LIT(&w, "}");
    if (w.over)
        return -FERRY_ETOOBIG;

    pthread_mutex_lock(&m->lock);
    s = signer_ref(m->active);
    if (s && !atomic_load_explicit(&s->used, memory_order_relaxed))
        atomic_store_explicit(&s->used, true, memory_order_relaxed);
    pthread_mutex_unlock(&m->lock);
    if (!s)
        return -FERRY_ENOKEY;
    tlen = s->hdr_len + ferry_b64url_encoded_len(w.n) + 1 + ferry_b64url_encoded_len(s->sig_len);
    if (tlen > FERRY_JWS_MAX_LEN) {
        r = -FERRY_ETOOBIG;
        goto out;
    }
    tok = malloc(tlen + 1);
    if (!tok) {
        r = -ENOMEM;
        goto out;
    }
    memcpy(tok, s->hdr, s->hdr_len);
    o = s->hdr_len;
    o += ferry_b64url_encode(claims, w.n, tok + o);
    r = ferry_jose_sign(s->alg, s->key, tok, o, &sig, &sig_len);
    if (r == 0 && sig_len != s->sig_len)
        r = -FERRY_ECRYPTO;
    if (r < 0)
        goto out;
    tok[o++] = '.';
    ferry_b64url_encode(sig, sig_len, tok + o);
    *ret_token = TAKE_PTR(tok);
    if (ret_jti)
        memcpy(ret_jti, jti, sizeof(jti));
    if (ret_exp)
        *ret_exp = exp;
out:
    free(sig);
    free(tok);
    signer_unref(s);
    return r;
}


FERRY_EXPORT int ferry_mint_jwks(ferry_mint *m, bool all, json_t **ret)
{
    _cleanup_(json_decrefp) json_t *arr = NULL;
    json_t *doc;
    int64_t now;
    int r = 0;

    if (!m || !ret)
        return -EINVAL;
    now = mint_now(m);
    arr = json_array();
    if (!arr)
        return -ENOMEM;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->ks.n && r == 0; i++) {
        json_t *k = NULL;
        if (!all && !is_published(m, &m->ks.keys[i], now))
            continue;
        r = mkey_public_json(&m->ks.keys[i], &k);
        if (r == 0 && json_array_append_new(arr, k) != 0)
            r = -ENOMEM;
    }
    pthread_mutex_unlock(&m->lock);
    if (r < 0)
        return r;
    doc = json_pack("{s:O}", "keys", arr);
    if (!doc)
        return -ENOMEM;
    *ret = doc;
    return 0;
}

FERRY_EXPORT int ferry_mint_discovery(ferry_mint *m, json_t **ret)
{
    _cleanup_(json_decrefp) json_t *algs = NULL, *doc = NULL;
    _cleanup_free_ char *jwks_uri = NULL, *token_ep = NULL;
    bool seen[FERRY_ALG_MAX] = {false};
    int64_t now;

    if (!m || !ret || !m->issuer)
        return -EINVAL;
    if (asprintf(&jwks_uri, "%s/.well-known/jwks.json", m->issuer) < 0) {
        jwks_uri = NULL;
        return -ENOMEM;
    }
    if (asprintf(&token_ep, "%s/v1/token", m->issuer) < 0) {
        token_ep = NULL;
        return -ENOMEM;
    }
    now = mint_now(m);
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->ks.n; i++)
        if (is_published(m, &m->ks.keys[i], now))
            seen[m->ks.keys[i].alg] = true;
    pthread_mutex_unlock(&m->lock);
    algs = json_array();
    if (!algs)
        return -ENOMEM;
    for (int a = 0; a < FERRY_ALG_MAX; a++)
        if (seen[a] && json_array_append_new(algs, json_string(ferry_alg_name((ferry_alg)a))))
            return -ENOMEM;
    if (json_array_size(algs) == 0 &&
        json_array_append_new(algs, json_string(ferry_alg_name(m->alg))) != 0)
        return -ENOMEM;
    doc = json_pack("{s:s, s:s, s:s, s:O, s:[s], s:[s], s:[s], s:[s], s:[ssssssssssss]}",
                    "issuer", m->issuer, "jwks_uri", jwks_uri, "token_endpoint", token_ep,
                    "id_token_signing_alg_values_supported", algs, "grant_types_supported",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                    "response_types_supported", "id_token", "subject_types_supported",
                    "public", "token_endpoint_auth_methods_supported", "none",
                    "claims_supported", "iss", "sub", "aud", "exp", "iat", "nbf", "jti",
                    "client_id", "scope", "src_iss", "src_sub", "act");
    if (!doc)
        return -ENOMEM;
    *ret = TAKE_PTR(doc);
    return 0;
}

FERRY_EXPORT ferry_jwk *ferry_mint_signing_key(ferry_mint *m, ferry_alg *ret_alg)
{
    ferry_jwk *k = NULL;

    if (!m)
        return NULL;
    pthread_mutex_lock(&m->lock);
    if (m->active) {
        k = ferry_jwk_ref(m->active->key);
        if (ret_alg)
            *ret_alg = m->active->alg;
    }
    pthread_mutex_unlock(&m->lock);
    return k;
}

FERRY_EXPORT int ferry_mint_public_key(ferry_mint *m, const char *kid, ferry_jwk **ret_key,
                                       ferry_alg *ret_alg)
{
    struct mkey *k;
    int r = -FERRY_ENOKEY;

    if (!m || !kid || !ret_key)
        return -EINVAL;
    pthread_mutex_lock(&m->lock);
    k = keyset_find(&m->ks, kid);
    if (k) {
        *ret_key = ferry_jwk_ref(k->pub);
        if (ret_alg)
            *ret_alg = k->alg;
        r = 0;
    }
    pthread_mutex_unlock(&m->lock);
    return r;
}

FERRY_EXPORT int ferry_mint_list_keys(ferry_mint *m, ferry_mint_key_info **ret, size_t *ret_n)
{
    ferry_mint_key_info *out;
    size_t n;

    if (!m || !ret || !ret_n)
        return -EINVAL;
    pthread_mutex_lock(&m->lock);
    n = m->ks.n;
    out = calloc(n ? n : 1, sizeof(*out));
    if (out)
        for (size_t i = 0; i < n; i++) {
            const struct mkey *k = &m->ks.keys[i];
            memcpy(out[i].kid, k->kid, sizeof(k->kid));
            out[i].alg = k->alg;
            out[i].state = kstate_names[k->state];
            out[i].created = k->created;
            out[i].retired_at = k->retired_at;
            out[i].publish_until = k->state == KS_ACTIVE ? 0 : publish_until(m, k);
        }
    pthread_mutex_unlock(&m->lock);
    if (!out)
        return -ENOMEM;
    *ret = out;
    *ret_n = n;
    return 0;
}
