/* lib/secrets/file.c - the file backend: secrets sealed with AES-256-GCM in one local store
 * file under a 32-byte key file, written atomically.
 *
 * Format (docs/internals/secrets.md has the full description; integers big-endian):
 *   header  "FERRYSEC" | u32 format = 1 | u32 flags = 0 | u64 generation | u32 count |
 *           u32 reserved = 0 | key id (8 bytes)                                   40 bytes
 *   entry   u16 name_len | name | u64 version | u64 created | u32 value_len | nonce (12) |
 *           ciphertext (value_len) | tag (16)                          count times, names
 *           strictly ascending
 *   trailer HMAC-SHA256(mac key, every byte before it)                            32 bytes
 * Each value is sealed with a fresh random nonce under the encryption key with the AAD
 *   "FERRYSEC" | u32 format | u64 generation | u16 name_len | name | u64 version | u64 created
 * so a sealed value is bound to its name, its metadata and the store generation; every write
 * increments the generation and re-seals every entry. The encryption key, the MAC key and the
 * key id are HMAC-SHA256(key file bytes, label) for three labels.
 *
 * A write: take the lock file (flock), read and authenticate the current store, build the new
 * one in memory, write it to STORE.tmp (O_EXCL, 0600; a stale one left by a crash is removed
 * first, under the lock), fsync, rename over STORE, fsync the directory. Readers take no lock:
 * they see the old file or the new one, never a mix. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "basic/errbuf.h"
#include "basic/fileio.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/secrets.h"
#include "lib/secrets/secrets-internal.h"

#define MAGIC "FERRYSEC"
#define FORMAT 1u
#define HEADER_LEN 40
#define TRAILER_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define KEY_LEN 32
#define KID_LEN 8
#define ENTRY_FIXED (2 + 8 + 8 + 4 + NONCE_LEN + TAG_LEN)
#define MAX_ENTRIES 4096
#define MAX_FILE (16u * 1024 * 1024)

void (*ferry_secrets_file_write_hook)(int step);

struct ferry_secret_store {
    char *path, *lock_path, *tmp_path, *dir_path;
    unsigned char enc[KEY_LEN], mac[KEY_LEN], kid[KID_LEN];
};

/* One entry of a read store; pointers into the image's buffer. */
struct entry {
    const char *name; /* not NUL-terminated */
    size_t name_len;
    uint64_t version;
    int64_t created;
    uint32_t len;
    const unsigned char *nonce, *ct, *tag;
};

struct image {
    unsigned char *buf;
    size_t len;
    uint64_t gen;
    size_t n;
    struct entry *e;
};

#define say(errbuf, errlen, ...) ferry_errbuf_set(errbuf, errlen, 0, __VA_ARGS__)

static void hook(int step)
{
    if (ferry_secrets_file_write_hook)
        ferry_secrets_file_write_hook(step);
}

static void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}
static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (24 - 8 * i));
}
static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (56 - 8 * i));
}
static uint16_t get_u16(const unsigned char *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}
static uint32_t get_u32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint64_t get_u64(const unsigned char *p)
{
    return ((uint64_t)get_u32(p) << 32) | get_u32(p + 4);
}

/* Byte order of two entries' names (as strcmp on the names). */
static int name_cmp(const struct entry *a, const struct entry *b)
{
    size_t m = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = memcmp(a->name, b->name, m);

    return c ? c : (a->name_len > b->name_len) - (a->name_len < b->name_len);
}

static void image_release(struct image *img)
{
    free(img->buf);
    free(img->e);
    memset(img, 0, sizeof(*img));
}

/* ---- keys ------------------------------------------------------------------------------- */

static int derive(const unsigned char *key, const char *label, unsigned char *out, size_t n)
{
    unsigned char md[32];
    unsigned int mdlen = 0;

    if (!HMAC(EVP_sha256(), key, KEY_LEN, (const unsigned char *)label, strlen(label), md,
              &mdlen) ||
        mdlen != sizeof(md))
        return -FERRY_ECRYPTO;
    memcpy(out, md, n);
    ferry_wipe(md, sizeof(md));
    return 0;
}

/* The store's encryption, MAC and key-id keys from the 32-byte store key. */
static int derive_all(ferry_secret_store *st, const unsigned char *key, char *errbuf,
                      size_t errlen)
{
    if (derive(key, "ferry-secrets v1 enc", st->enc, KEY_LEN) < 0 ||
        derive(key, "ferry-secrets v1 mac", st->mac, KEY_LEN) < 0 ||
        derive(key, "ferry-secrets v1 key-id", st->kid, KID_LEN) < 0) {
        say(errbuf, errlen, "cannot derive the store keys");
        return -FERRY_ECRYPTO;
    }
    return 0;
}

static int load_key(ferry_secret_store *st, const char *key_path, char *errbuf, size_t errlen)
{
    unsigned char key[KEY_LEN + 1];
    struct stat sb;
    ssize_t got;
    int fd, r = 0;

    fd = open(key_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        r = -errno;
        say(errbuf, errlen, "key file %s: %s%s", key_path, strerror(-r),
            r == -ENOENT ? " (create it with `ferry secret init`)" : "");
        return r;
    }
    if (fstat(fd, &sb) < 0) {
        r = -errno;
        say(errbuf, errlen, "key file %s: %s", key_path, strerror(-r));
    } else if (!S_ISREG(sb.st_mode)) {
        r = -EPERM;
        say(errbuf, errlen, "key file %s: not a regular file", key_path);
    } else if (sb.st_uid != geteuid()) {
        r = -EPERM;
        say(errbuf, errlen, "key file %s: owned by uid %u, not by the current user (uid %u)",
            key_path, (unsigned)sb.st_uid, (unsigned)geteuid());
    } else if (sb.st_mode & 077) {
        r = -EPERM;
        say(errbuf, errlen,
            "key file %s: mode %04o gives group or others access; it must be "
            "0600 or stricter (chmod 600 %s)",
            key_path, (unsigned)(sb.st_mode & 07777), key_path);
    } else if (sb.st_size != KEY_LEN) {
        r = -FERRY_EMALFORMED;
        say(errbuf, errlen, "key file %s: must hold exactly %d bytes", key_path, KEY_LEN);
    }
    if (r == 0) {
        size_t have = 0;
        while (have < sizeof(key)) {
            got = read(fd, key + have, sizeof(key) - have);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0)
                break;
            have += (size_t)got;
        }
        if (have != KEY_LEN) {
            r = -FERRY_EMALFORMED;
            say(errbuf, errlen, "key file %s: must hold exactly %d bytes", key_path, KEY_LEN);
        }
    }
    close(fd);
    if (r == 0)
        r = derive_all(st, key, errbuf, errlen);
    ferry_wipe(key, sizeof(key));
    return r;
}

/* Create key_path: 32 random bytes, mode 0600, O_EXCL, fsynced; removed again on failure. */
static int create_key_file(const char *key_path, char *errbuf, size_t errlen)
{
    unsigned char key[KEY_LEN];
    int fd, r = 0;

    fd = open(key_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        r = -errno;
        say(errbuf, errlen, "key file %s: %s", key_path, strerror(-r));
        return r;
    }
    if (RAND_priv_bytes(key, sizeof(key)) != 1) {
        r = -FERRY_ECRYPTO;
        say(errbuf, errlen, "no random bytes for the key");
    } else if ((r = ferry_write_all(fd, key, sizeof(key))) < 0 || (fsync(fd) < 0 && (r = -errno)))
        say(errbuf, errlen, "key file %s: %s", key_path, strerror(-r));
    ferry_wipe(key, sizeof(key));
    if (close(fd) < 0 && r == 0) {
        r = -errno;
        say(errbuf, errlen, "key file %s: %s", key_path, strerror(-r));
    }
    /* The key's name must be as durable as its bytes before a store is sealed under it. */
    if (r == 0) {
        const char *slash = strrchr(key_path, '/');
        char *dir = slash == key_path ? strdup("/")
                    : slash        ? strndup(key_path, (size_t)(slash - key_path))
                                   : strdup(".");
        int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
        if (!dir)
            r = -ENOMEM;
        else if (dfd < 0 || fsync(dfd) < 0)
            r = -errno;
        if (r < 0)
            say(errbuf, errlen, "key file %s: the directory could not be synced: %s", key_path,
                strerror(-r));
        if (dfd >= 0)
            close(dfd);
        free(dir);
    }
    if (r < 0)
        (void)unlink(key_path);
    return r;
}

FERRY_EXPORT int ferry_secret_store_init_key(const char *store_path, const char *key_path,
                                             char *errbuf, size_t errlen)
{
    struct stat sb;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!store_path || !key_path)
        return -EINVAL;
    if (lstat(store_path, &sb) == 0) {
        say(errbuf, errlen, "store %s exists: a new key could not open it", store_path);
        return -EEXIST;
    }
    return create_key_file(key_path, errbuf, errlen);
}

FERRY_EXPORT void ferry_secret_store_free(ferry_secret_store *st)
{
    if (!st)
        return;
    ferry_wipe(st->enc, sizeof(st->enc));
    ferry_wipe(st->mac, sizeof(st->mac));
    free(st->path);
    free(st->lock_path);
    free(st->tmp_path);
    free(st->dir_path);
    free(st);
}

/* A store handle for store_path without its keys yet. */
static int store_new(const char *store_path, ferry_secret_store **ret, char *errbuf,
                     size_t errlen)
{
    ferry_secret_store *st;
    const char *slash;

    if (strlen(store_path) > 4000) {
        say(errbuf, errlen, "store path too long");
        return -FERRY_ETOOBIG;
    }
    st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    slash = strrchr(store_path, '/');
    st->path = strdup(store_path);
    if (slash == store_path)
        st->dir_path = strdup("/");
    else
        st->dir_path = slash ? strndup(store_path, (size_t)(slash - store_path)) : strdup(".");
    if (!st->path || !st->dir_path || asprintf(&st->lock_path, "%s.lock", store_path) < 0 ||
        asprintf(&st->tmp_path, "%s.tmp", store_path) < 0) {
        ferry_secret_store_free(st);
        return -ENOMEM;
    }
    *ret = st;
    return 0;
}

FERRY_EXPORT int ferry_secret_store_open(const char *store_path, const char *key_path,
                                         ferry_secret_store **ret, char *errbuf, size_t errlen)
{
    ferry_secret_store *st = NULL;
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!store_path || !key_path || !ret || !store_path[0])
        return -EINVAL;
    r = store_new(store_path, &st, errbuf, errlen);
    if (r == 0)
        r = load_key(st, key_path, errbuf, errlen);
    if (r < 0) {
        ferry_secret_store_free(st);
        return r;
    }
    *ret = st;
    return 0;
}

/* The store at store_path under a key given in memory (a KMS-unwrapped data key). */
static int store_open_raw(const char *store_path, const unsigned char *key, size_t key_len,
                          ferry_secret_store **ret, char *errbuf, size_t errlen)
{
    ferry_secret_store *st = NULL;
    int r;

    if (key_len != KEY_LEN) {
        say(errbuf, errlen, "the unwrapped store key must be exactly %d bytes", KEY_LEN);
        return -FERRY_EMALFORMED;
    }
    r = store_new(store_path, &st, errbuf, errlen);
    if (r == 0)
        r = derive_all(st, key, errbuf, errlen);
    if (r < 0) {
        ferry_secret_store_free(st);
        return r;
    }
    *ret = st;
    return 0;
}

/* ---- reading ---------------------------------------------------------------------------- */

static void aad_of(const ferry_secret_store *st, uint64_t gen, const struct entry *e,
                   unsigned char *aad, size_t *ret_len)
{
    size_t o = 0;

    (void)st;
    memcpy(aad, MAGIC, 8);
    o = 8;
    put_u32(aad + o, FORMAT), o += 4;
    put_u64(aad + o, gen), o += 8;
    put_u16(aad + o, (uint16_t)e->name_len), o += 2;
    memcpy(aad + o, e->name, e->name_len), o += e->name_len;
    put_u64(aad + o, e->version), o += 8;
    put_u64(aad + o, (uint64_t)e->created), o += 8;
    *ret_len = o;
}

#define AAD_MAX (8 + 4 + 8 + 2 + FERRY_SECRET_NAME_MAX + 8 + 8)

static int mac_of(const ferry_secret_store *st, const unsigned char *p, size_t n,
                  unsigned char out[32])
{
    unsigned int len = 0;

    return HMAC(EVP_sha256(), st->mac, KEY_LEN, p, n, out, &len) && len == 32 ? 0 : -FERRY_ECRYPTO;
}

/* Read and authenticate the whole store into img. An absent store is empty (generation 0).
 * Nothing is used unless all of it checks out. */
static int read_store(ferry_secret_store *st, struct image *img, char *errbuf, size_t errlen)
{
    unsigned char mac[32];
    struct stat sb;
    size_t o, count;
    char *buf = NULL;
    int fd, r;

    memset(img, 0, sizeof(*img));
    fd = open(st->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        r = -errno;
        say(errbuf, errlen, "store %s: %s", st->path, strerror(-r));
        return r;
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        say(errbuf, errlen, "store %s: not a regular file", st->path);
        return -FERRY_EMALFORMED;
    }
    if ((uint64_t)sb.st_size > MAX_FILE) {
        close(fd);
        say(errbuf, errlen, "store %s: larger than %u bytes", st->path, MAX_FILE);
        return -FERRY_ETOOBIG;
    }
    r = ferry_read_exact(fd, (size_t)sb.st_size, &buf);
    close(fd);
    if (r < 0) {
        say(errbuf, errlen, "store %s: %s", st->path, ferry_strerror(r));
        return r;
    }
    img->buf = (unsigned char *)buf;
    img->len = (size_t)sb.st_size;
    r = -FERRY_EMALFORMED;
    if (img->len < HEADER_LEN + TRAILER_LEN || memcmp(img->buf, MAGIC, 8) != 0) {
        say(errbuf, errlen, "store %s: not a ferry secret store (bad header or truncated)",
            st->path);
        goto fail;
    }
    if (get_u32(img->buf + 8) != FORMAT || get_u32(img->buf + 12) != 0 ||
        get_u32(img->buf + 28) != 0) {
        say(errbuf, errlen, "store %s: format %u is not supported (this ferry reads 1)", st->path,
            (unsigned)get_u32(img->buf + 8));
        r = -FERRY_EUNSUPPORTED;
        goto fail;
    }
    if (!ferry_memeq_ct(img->buf + 32, st->kid, KID_LEN)) {
        say(errbuf, errlen, "store %s: sealed with a different key", st->path);
        r = -FERRY_EBADSIG;
        goto fail;
    }
    if (mac_of(st, img->buf, img->len - TRAILER_LEN, mac) < 0) {
        r = -FERRY_ECRYPTO;
        goto fail;
    }
    if (!ferry_memeq_ct(mac, img->buf + img->len - TRAILER_LEN, TRAILER_LEN)) {
        say(errbuf, errlen,
            "store %s: integrity check failed (modified, truncated or "
            "corrupted); nothing was read from it",
            st->path);
        r = -FERRY_EBADSIG;
        goto fail;
    }
    img->gen = get_u64(img->buf + 16);
    count = get_u32(img->buf + 24);
    if (count > MAX_ENTRIES) {
        say(errbuf, errlen, "store %s: more than %d entries", st->path, MAX_ENTRIES);
        r = -FERRY_ETOOBIG;
        goto fail;
    }
    img->e = calloc(count ? count : 1, sizeof(*img->e));
    if (!img->e) {
        r = -ENOMEM;
        goto fail;
    }
    o = HEADER_LEN;
    for (size_t i = 0; i < count; i++) {
        size_t end = img->len - TRAILER_LEN;
        struct entry *e = &img->e[i];
        char name[FERRY_SECRET_NAME_MAX + 1];

        if (end - o < ENTRY_FIXED)
            goto bad_entry;
        e->name_len = get_u16(img->buf + o);
        if (e->name_len == 0 || e->name_len > FERRY_SECRET_NAME_MAX ||
            end - o < ENTRY_FIXED + e->name_len)
            goto bad_entry;
        e->name = (const char *)img->buf + o + 2;
        o += 2 + e->name_len;
        e->version = get_u64(img->buf + o);
        e->created = (int64_t)get_u64(img->buf + o + 8);
        e->len = get_u32(img->buf + o + 16);
        o += 20;
        if (e->len == 0 || e->len > FERRY_SECRET_VALUE_MAX ||
            end - o < (size_t)NONCE_LEN + e->len + TAG_LEN)
            goto bad_entry;
        e->nonce = img->buf + o;
        e->ct = e->nonce + NONCE_LEN;
        e->tag = e->ct + e->len;
        o += NONCE_LEN + e->len + TAG_LEN;
        memcpy(name, e->name, e->name_len);
        name[e->name_len] = '\0';
        if (ferry_secret_name_check(name, NULL, 0) < 0 || e->version == 0 || e->version > img->gen)
            goto bad_entry;
        if (i > 0 && name_cmp(&img->e[i - 1], e) >= 0)
            goto bad_entry;
        img->n++;
    }
    if (o != img->len - TRAILER_LEN)
        goto bad_entry;
    return 0;
bad_entry:
    say(errbuf, errlen, "store %s: malformed entry %zu; nothing was read from it", st->path,
        img->n);
    r = -FERRY_EMALFORMED;
fail:
    image_release(img);
    return r;
}

/* Decrypt entry e of img into out (e->len bytes). */
static int open_entry(ferry_secret_store *st, const struct image *img, const struct entry *e,
                      unsigned char *out, char *errbuf, size_t errlen)
{
    unsigned char aad[AAD_MAX];
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    size_t aadlen;
    int n = 0, r = -FERRY_ECRYPTO;

    if (!ctx)
        return -ENOMEM;
    aad_of(st, img->gen, e, aad, &aadlen);
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
        EVP_DecryptInit_ex(ctx, NULL, NULL, st->enc, e->nonce) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aadlen) != 1 ||
        EVP_DecryptUpdate(ctx, out, &n, e->ct, (int)e->len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)e->tag) != 1)
        goto out;
    if (EVP_DecryptFinal_ex(ctx, out + n, &n) != 1) {
        ferry_wipe(out, e->len);
        say(errbuf, errlen,
            "store %s: entry %.*s fails authentication (moved, swapped or "
            "rolled back)",
            st->path, (int)e->name_len, e->name);
        r = -FERRY_EBADSIG;
        goto out;
    }
    r = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    return r;
}

/* Append a sealed entry (plaintext p, e->len bytes) for generation gen to b. */
static int seal_entry(const ferry_secret_store *st, uint64_t gen, const struct entry *e,
                      const unsigned char *p, unsigned char *b, size_t *o)
{
    unsigned char aad[AAD_MAX], *nonce, *ct;
    EVP_CIPHER_CTX *ctx;
    size_t aadlen;
    int n = 0, r = -FERRY_ECRYPTO;

    put_u16(b + *o, (uint16_t)e->name_len);
    memcpy(b + *o + 2, e->name, e->name_len);
    *o += 2 + e->name_len;
    put_u64(b + *o, e->version);
    put_u64(b + *o + 8, (uint64_t)e->created);
    put_u32(b + *o + 16, e->len);
    *o += 20;
    nonce = b + *o;
    ct = nonce + NONCE_LEN;
    if (RAND_bytes(nonce, NONCE_LEN) != 1)
        return -FERRY_ECRYPTO;
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return -ENOMEM;
    aad_of(st, gen, e, aad, &aadlen);
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1 &&
        EVP_EncryptInit_ex(ctx, NULL, NULL, st->enc, nonce) == 1 &&
        EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aadlen) == 1 &&
        EVP_EncryptUpdate(ctx, ct, &n, p, (int)e->len) == 1 &&
        EVP_EncryptFinal_ex(ctx, ct + n, &n) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, ct + e->len) == 1) {
        *o += NONCE_LEN + e->len + TAG_LEN;
        r = 0;
    }
    EVP_CIPHER_CTX_free(ctx);
    return r;
}

static ssize_t find(const struct image *img, const char *name)
{
    size_t n = strlen(name);

    for (size_t i = 0; i < img->n; i++)
        if (img->e[i].name_len == n && memcmp(img->e[i].name, name, n) == 0)
            return (ssize_t)i;
    return -1;
}

static int check_name(const char *name, char *errbuf, size_t errlen)
{
    char why[160];

    if (ferry_secret_name_check(name, why, sizeof(why)) < 0) {
        say(errbuf, errlen, "entry %s", why);
        return -FERRY_EMALFORMED;
    }
    return 0;
}

FERRY_EXPORT int ferry_secret_store_get(ferry_secret_store *st, const char *name,
                                        ferry_secret_value **ret, char *errbuf, size_t errlen)
{
    struct image img;
    ferry_secret_value *v = NULL;
    ssize_t i;
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!st || !name || !ret)
        return -EINVAL;
    if ((r = check_name(name, errbuf, errlen)) < 0)
        return r;
    if ((r = read_store(st, &img, errbuf, errlen)) < 0)
        return r;
    i = find(&img, name);
    if (i < 0) {
        say(errbuf, errlen, "no secret named %s in %s", name, st->path);
        r = -ENOENT;
    } else if ((r = ferry_secret_value_new(img.e[i].len, &v)) == 0 &&
               (r = open_entry(st, &img, &img.e[i], v->data, errbuf, errlen)) == 0) {
        (void)snprintf(v->version, sizeof(v->version), "%llu",
                       (unsigned long long)img.e[i].version);
        *ret = TAKE_PTR(v);
    }
    ferry_secret_value_free(v);
    image_release(&img);
    return r;
}

FERRY_EXPORT int ferry_secret_store_list(ferry_secret_store *st, ferry_secret_entry_info **ret,
                                         size_t *ret_n, char *errbuf, size_t errlen)
{
    ferry_secret_entry_info *out = NULL;
    struct image img;
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!st || !ret || !ret_n)
        return -EINVAL;
    if ((r = read_store(st, &img, errbuf, errlen)) < 0)
        return r;
    if (img.n && !(out = calloc(img.n, sizeof(*out)))) {
        image_release(&img);
        return -ENOMEM;
    }
    for (size_t i = 0; i < img.n; i++) {
        memcpy(out[i].name, img.e[i].name, img.e[i].name_len);
        out[i].version = img.e[i].version;
        out[i].created = img.e[i].created;
    }
    *ret_n = img.n;
    *ret = out;
    image_release(&img);
    return 0;
}

/* ---- writing ---------------------------------------------------------------------------- */

/* Replace the store with buf (len bytes) atomically; the caller holds the lock. */
static int atomic_replace(ferry_secret_store *st, const unsigned char *buf, size_t len,
                          char *errbuf, size_t errlen)
{
    const char *what = "create";
    int fd, dfd, r = 0;

    /* Only the lock holder writes the temporary file: one left here is from a writer that
     * died, and is garbage. */
    if (unlink(st->tmp_path) < 0 && errno != ENOENT) {
        r = -errno;
        what = "remove stale";
        goto fail;
    }
    fd = open(st->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        r = -errno;
        goto fail;
    }
    hook(FERRY_SECRET_STEP_TEMP_CREATED);
    what = "write";
    r = ferry_write_all(fd, buf, len / 2);
    if (r == 0) {
        hook(FERRY_SECRET_STEP_PARTIAL_WRITE);
        r = ferry_write_all(fd, buf + len / 2, len - len / 2);
    }
    if (r == 0) {
        hook(FERRY_SECRET_STEP_WRITTEN);
        what = "fsync";
        if (fsync(fd) < 0)
            r = -errno;
    }
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r < 0)
        goto fail_unlink;
    hook(FERRY_SECRET_STEP_FSYNCED);
    what = "rename";
    if (rename(st->tmp_path, st->path) < 0) {
        r = -errno;
        goto fail_unlink;
    }
    hook(FERRY_SECRET_STEP_RENAMED);
    /* Make the rename itself durable. The new store is in place whatever happens now. */
    dfd = open(st->dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) < 0) {
        r = -errno;
        say(errbuf, errlen, "store %s: written, but the directory %s could not be synced: %s",
            st->path, st->dir_path, strerror(-r));
    }
    if (dfd >= 0)
        close(dfd);
    if (r == 0)
        hook(FERRY_SECRET_STEP_DIR_FSYNCED);
    return r;
fail_unlink:
    (void)unlink(st->tmp_path);
fail:
    say(errbuf, errlen, "store %s: %s %s: %s", st->path, what, st->tmp_path, strerror(-r));
    return r;
}

/* The one write path: under the lock, read the store, drop entry name (rm) or set it to value
 * (put), re-seal everything at generation + 1 and replace the file. */
/* Rewrite the store under its lock: read it with st's keys, then write every entry (but
 * name's when remove; with name's new value otherwise), sealed and MACed with to's keys (st's
 * own, or a new key's for a rekey), atomically. name NULL: no entry changes (a rekey). */
static int rewrite(ferry_secret_store *st, const ferry_secret_store *to, const char *name,
                   const void *value, size_t vlen, bool remove, uint64_t *ret_version,
                   char *errbuf, size_t errlen)
{
    ferry_secret_value *scratch = NULL;
    unsigned char *out = NULL, mac[32];
    struct image img = {0};
    struct entry ne = {0};
    size_t o, total, n_out;
    uint64_t gen;
    ssize_t at;
    bool inserted = false;
    int lfd, r;

    lfd = open(st->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lfd < 0) {
        r = -errno;
        say(errbuf, errlen, "lock file %s: %s", st->lock_path, strerror(-r));
        return r;
    }
    while ((r = flock(lfd, LOCK_EX)) < 0 && errno == EINTR)
        ;
    if (r < 0) {
        r = -errno;
        say(errbuf, errlen, "lock file %s: %s", st->lock_path, strerror(-r));
        goto out;
    }
    if ((r = read_store(st, &img, errbuf, errlen)) < 0)
        goto out;
    at = name ? find(&img, name) : -1;
    if (name && remove && at < 0) {
        say(errbuf, errlen, "no secret named %s in %s", name, st->path);
        r = -ENOENT;
        goto out;
    }
    bool add = name && !remove;
    n_out = img.n - (at >= 0) + add;
    if (n_out > MAX_ENTRIES) {
        say(errbuf, errlen, "store %s: full (%d entries)", st->path, MAX_ENTRIES);
        r = -FERRY_ETOOBIG;
        goto out;
    }
    gen = img.gen + 1;
    ne.name = name;
    ne.name_len = name ? strlen(name) : 0;
    ne.version = gen;
    ne.created = (int64_t)time(NULL);
    ne.len = (uint32_t)vlen;
    total = HEADER_LEN + TRAILER_LEN;
    for (size_t i = 0; i < img.n; i++)
        if ((ssize_t)i != at)
            total += ENTRY_FIXED + img.e[i].name_len + img.e[i].len;
    if (add)
        total += ENTRY_FIXED + ne.name_len + vlen;
    if (total > MAX_FILE) {
        say(errbuf, errlen, "store %s: would exceed %u bytes", st->path, MAX_FILE);
        r = -FERRY_ETOOBIG;
        goto out;
    }
    if (!(out = malloc(total)) || ferry_secret_value_new(FERRY_SECRET_VALUE_MAX, &scratch) < 0) {
        r = -ENOMEM;
        goto out;
    }
    memcpy(out, MAGIC, 8);
    put_u32(out + 8, FORMAT);
    put_u32(out + 12, 0);
    put_u64(out + 16, gen);
    put_u32(out + 24, (uint32_t)n_out);
    put_u32(out + 28, 0);
    memcpy(out + 32, to->kid, KID_LEN);
    o = HEADER_LEN;
    for (size_t i = 0; i <= img.n; i++) {
        const struct entry *e = i < img.n ? &img.e[i] : NULL;
        /* The new entry goes before the first old name that sorts after it. */
        if (add && !inserted && (!e || (ssize_t)i == at || name_cmp(e, &ne) > 0)) {
            if ((r = seal_entry(to, gen, &ne, value, out, &o)) < 0)
                goto out;
            inserted = true;
        }
        if (!e || (ssize_t)i == at)
            continue;
        if ((r = open_entry(st, &img, e, scratch->data, errbuf, errlen)) < 0)
            goto out;
        r = seal_entry(to, gen, e, scratch->data, out, &o);
        ferry_wipe(scratch->data, e->len);
        if (r < 0)
            goto out;
    }
    if ((r = mac_of(to, out, o, mac)) < 0)
        goto out;
    memcpy(out + o, mac, TRAILER_LEN);
    o += TRAILER_LEN;
    if (o != total) {
        r = -EINVAL;
        goto out;
    }
    r = atomic_replace(st, out, o, errbuf, errlen);
    if (r == 0 && ret_version)
        *ret_version = gen;
out:
    if (r < 0 && r != -ENOENT && errbuf && errlen && !errbuf[0])
        say(errbuf, errlen, "store %s: %s", st->path, ferry_strerror(r));
    free(out);
    ferry_secret_value_free(scratch);
    image_release(&img);
    close(lfd); /* releases the lock */
    return r;
}

FERRY_EXPORT int ferry_secret_store_put(ferry_secret_store *st, const char *name, const void *value,
                                        size_t len, uint64_t *ret_version, char *errbuf,
                                        size_t errlen)
{
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!st || !name || (!value && len))
        return -EINVAL;
    if ((r = check_name(name, errbuf, errlen)) < 0)
        return r;
    if (len == 0) {
        say(errbuf, errlen, "empty value");
        return -FERRY_EMALFORMED;
    }
    if (len > FERRY_SECRET_VALUE_MAX) {
        say(errbuf, errlen, "value larger than %d bytes", FERRY_SECRET_VALUE_MAX);
        return -FERRY_ETOOBIG;
    }
    return rewrite(st, st, name, value, len, false, ret_version, errbuf, errlen);
}

FERRY_EXPORT int ferry_secret_store_rm(ferry_secret_store *st, const char *name, char *errbuf,
                                       size_t errlen)
{
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!st || !name)
        return -EINVAL;
    if ((r = check_name(name, errbuf, errlen)) < 0)
        return r;
    return rewrite(st, st, name, NULL, 0, true, NULL, errbuf, errlen);
}

FERRY_EXPORT int ferry_secret_store_rekey(ferry_secret_store *st, const char *new_key_path,
                                          char *errbuf, size_t errlen)
{
    ferry_secret_store *to = NULL;
    struct stat sb;
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!st || !new_key_path)
        return -EINVAL;
    if (lstat(st->path, &sb) < 0) {
        r = -errno;
        say(errbuf, errlen, "store %s: %s (nothing to re-seal)", st->path, strerror(-r));
        return r;
    }
    /* The new key exists (fsynced) before any store that needs it. */
    r = create_key_file(new_key_path, errbuf, errlen);
    if (r < 0)
        return r;
    r = store_new(st->path, &to, errbuf, errlen);
    if (r == 0)
        r = load_key(to, new_key_path, errbuf, errlen);
    if (r == 0)
        r = rewrite(st, to, NULL, NULL, 0, false, NULL, errbuf, errlen);
    if (r == 0) {
        /* From now on st seals and opens with the new key. */
        memcpy(st->enc, to->enc, sizeof(st->enc));
        memcpy(st->mac, to->mac, sizeof(st->mac));
        memcpy(st->kid, to->kid, sizeof(st->kid));
    } else {
        /* The store was not replaced (the write is atomic): the new key is of no use. */
        (void)unlink(new_key_path);
    }
    ferry_secret_store_free(to);
    return r;
}

/* ---- the backend ------------------------------------------------------------------------ */

/* The backend's state: the store, or (with a KMS-wrapped key) what opens it on first use. */
typedef struct file_state {
    pthread_mutex_t lock; /* guards st while it is NULL */
    ferry_secret_store *st;
    char *store_path;
    char *kms_blob; /* the wrapped data key, standard base64, or NULL */
    ferry_secrets *owner;
} file_state;

static void file_close(void *state)
{
    file_state *fs = state;

    if (!fs)
        return;
    ferry_secret_store_free(fs->st);
    free(fs->store_path);
    free(fs->kms_blob);
    pthread_mutex_destroy(&fs->lock);
    free(fs);
}

/* Read the wrapped key file: standard base64 text as `aws kms encrypt --query CiphertextBlob
 * --output text` prints it (surrounding white space ignored), at most 8 KiB. */
static int read_kms_blob(const char *path, char **ret, char *errbuf, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0, a = 0;
    int r = ferry_read_regular_file(path, 8192, &buf, &len);

    if (r < 0) {
        say(errbuf, errlen, "key_kms_file %s: %s", path,
            r == -EFBIG ? "larger than 8 KiB" : strerror(-r));
        return r == -EFBIG ? -FERRY_ETOOBIG : r;
    }
    while (a < len && strchr(" \t\r\n", buf[a]))
        a++;
    while (len > a && strchr(" \t\r\n", buf[len - 1]))
        len--;
    bool ok = len > a && (len - a) % 4 == 0;
    for (size_t i = a; ok && i < len; i++)
        ok = (buf[i] >= 'A' && buf[i] <= 'Z') || (buf[i] >= 'a' && buf[i] <= 'z') ||
             (buf[i] >= '0' && buf[i] <= '9') || buf[i] == '+' || buf[i] == '/' ||
             (buf[i] == '=' && i + 2 >= len);
    if (!ok) {
        free(buf);
        say(errbuf, errlen, "key_kms_file %s: not one standard base64 ciphertext blob", path);
        return -FERRY_EMALFORMED;
    }
    memmove(buf, buf + a, len - a);
    buf[len - a] = '\0';
    *ret = buf;
    return 0;
}

static int file_open(const json_t *conf, const ferry_secrets_env *env, void **ret_state,
                     char *errbuf, size_t errlen)
{
    const char *store = NULL, *key = NULL, *kms = NULL, *k;
    char *dkey = NULL;
    file_state *fs;
    json_t *v;
    int r;

    json_object_foreach((json_t *)conf, k, v)
    {
        if (strcmp(k, "store") != 0 && strcmp(k, "key") != 0 && strcmp(k, "key_kms_file") != 0) {
            say(errbuf, errlen, "unknown member \"%.64s\" (expected store, key, key_kms_file)",
                k);
            return -FERRY_ECONFIG;
        }
        if (!json_is_string(v) || !json_string_value(v)[0]) {
            say(errbuf, errlen, "%s: must be a non-empty path", k);
            return -FERRY_ECONFIG;
        }
        if (strcmp(k, "store") == 0)
            store = json_string_value(v);
        else if (strcmp(k, "key") == 0)
            key = json_string_value(v);
        else
            kms = json_string_value(v);
    }
    if (key && kms) {
        say(errbuf, errlen, "key and key_kms_file exclude each other");
        return -FERRY_ECONFIG;
    }
    if ((!store || (!key && !kms)) && !(env && env->state_dir)) {
        say(errbuf, errlen, "needs \"store\" and \"key\" (no state directory to default to)");
        return -FERRY_ECONFIG;
    }
    fs = calloc(1, sizeof(*fs));
    if (!fs)
        return -ENOMEM;
    pthread_mutex_init(&fs->lock, NULL);
    if ((store && !(fs->store_path = strdup(store))) ||
        (!store && asprintf(&fs->store_path, "%s/secrets.store", env->state_dir) < 0)) {
        fs->store_path = NULL;
        file_close(fs);
        return -ENOMEM;
    }
    if (kms) {
        /* Unwrapped through the aws-kms backend on first use (file_attach, file_store). */
        r = read_kms_blob(kms, &fs->kms_blob, errbuf, errlen);
    } else {
        if (!key && asprintf(&dkey, "%s/secrets.key", env->state_dir) < 0)
            dkey = NULL, r = -ENOMEM;
        else
            r = ferry_secret_store_open(fs->store_path, key ? key : dkey, &fs->st, errbuf,
                                        errlen);
        free(dkey);
    }
    if (r < 0) {
        file_close(fs);
        return r;
    }
    *ret_state = fs;
    return 0;
}

static void file_attach(void *state, ferry_secrets *owner)
{
    ((file_state *)state)->owner = owner;
}

int ferry_secrets_file_store_of(void *state, ferry_secret_store **ret, char *errbuf,
                                size_t errlen)
{
    file_state *fs = state;
    ferry_secret_value *key = NULL;
    void *kms;
    char why[512];
    int r = 0;

    pthread_mutex_lock(&fs->lock);
    if (!fs->st) {
        kms = fs->owner ? ferry_secrets_backend_state(fs->owner, FERRY_SECRET_AWS_KMS) : NULL;
        if (!kms)
            r = ferry_errbuf_set(errbuf, errlen, -FERRY_ECONFIG,
                                 "store key: key_kms_file needs an \"aws-kms\" section");
        else if ((r = ferry_secrets_aws_kms_unwrap(kms, fs->kms_blob, FERRY_STORE_KMS_CONTEXT_KEY,
                                                   FERRY_STORE_KMS_CONTEXT_VALUE, &key, why,
                                                   sizeof(why))) < 0)
            (void)ferry_errbuf_set(errbuf, errlen, r, "store key: KMS Decrypt: %s", why);
        else
            r = store_open_raw(fs->store_path, key->data, key->len, &fs->st, errbuf, errlen);
        ferry_secret_value_free(key);
    }
    *ret = fs->st;
    pthread_mutex_unlock(&fs->lock);
    return r;
}

static int file_fetch(void *state, void *ctx, const ferry_secret_ref *ref, ferry_secret_value **ret,
                      char *errbuf, size_t errlen)
{
    ferry_secret_store *st;
    int r;

    (void)ctx;
    if (ref->backend != FERRY_SECRET_FILE)
        return -EINVAL;
    r = ferry_secrets_file_store_of(state, &st, errbuf, errlen);
    return r < 0 ? r : ferry_secret_store_get(st, ref->name, ret, errbuf, errlen);
}

const ferry_secret_backend_ops ferry_secrets_file_backend = {
    .name = "file",
    .id = FERRY_SECRET_FILE,
    .open = file_open,
    .fetch = file_fetch,
    .close = file_close,
    .attach = file_attach,
};
