/* totp.c - TOTP step-up (RFC 6238 / RFC 4226 with liboath): enrolment, one-time verification,
 * lock-out with back-off. Contract in include/ferry/totp.h; design in docs/internals/totp.md.
 *
 * Files, all inside <state_dir>/totp (0700, owned by the caller, never followed through a
 * symlink; every file opened relative to the folder's descriptor):
 *   <account>.json   the record: secret (base32) + verifier state, 0600, replaced atomically
 *   <account>.lock   empty; flock(2) on it serialises every reader and writer of the record
 *   .<account>.tmp   the next record while it is written (names starting with '.' are never
 *                    account names, so no account's files can collide with it)
 * The record is rewritten on every decided attempt (success or failure) before the result is
 * returned; when the write fails the attempt fails too.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <liboath/oath.h>
#include <openssl/rand.h>

#include "basic/errbuf.h"
#include "basic/macro.h"
#include "basic/fileio.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/json.h"
#include "ferry/totp.h"

#define TOTP_SUBDIR "totp"
/* A record is about 300 bytes; anything beyond this is not ours. */
#define RECORD_MAX 4096
/* Base32 length of the 20-byte secret (20 * 8 / 5, no padding). */
#define SECRET_B32_LEN 32
/* Largest number of lock-outs remembered; the lock period stops doubling long before. */
#define LOCKOUTS_MAX 1000
#define PERIOD_MIN 10
#define PERIOD_MAX 300
#define DIGITS_MIN 6
#define DIGITS_MAX 8
/* Record format version. */
#define RECORD_VERSION 1

/* One account's record, in memory. The secret is wiped by record_wipe(). */
typedef struct totp_record {
    unsigned char secret[FERRY_TOTP_SECRET_LEN];
    unsigned digits;
    unsigned period;
    char issuer[FERRY_TOTP_ISSUER_MAX + 1];
    int64_t created;
    int64_t last_counter; /* -1: no code accepted yet */
    unsigned failures;
    unsigned lockouts;
    int64_t locked_until;
} totp_record;

static void record_wipe(totp_record *rec)
{
    ferry_wipe(rec, sizeof(*rec));
}


#define seterr(errbuf, errlen, ...) ((void)ferry_errbuf_set(errbuf, errlen, 0, __VA_ARGS__))

/* ---- names and encodings ---------------------------------------------------------------- */

FERRY_EXPORT const char *ferry_totp_status_name(ferry_totp_status status)
{
    switch (status) {
    case FERRY_TOTP_OK:
        return "ok";
    case FERRY_TOTP_BAD_CODE:
        return "bad_code";
    case FERRY_TOTP_REPLAYED:
        return "replayed";
    case FERRY_TOTP_LOCKED:
        return "locked";
    case FERRY_TOTP_MALFORMED:
        return "malformed";
    case FERRY_TOTP_UNKNOWN_ACCOUNT:
        return "unknown_account";
    }
    return "invalid";
}

FERRY_EXPORT int ferry_totp_account_check(const char *account)
{
    size_t n;

    if (!account)
        return -EINVAL;
    n = strnlen(account, FERRY_TOTP_ACCOUNT_MAX + 1);
    if (n == 0 || n > FERRY_TOTP_ACCOUNT_MAX)
        return -EINVAL;
    /* No hidden files (and so no clash with ".<account>.tmp"), nothing that reads as an
     * option on a command line. */
    if (account[0] == '.' || account[0] == '-')
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)account[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '@' || c == '+'))
            return -EINVAL;
    }
    if (strstr(account, ".."))
        return -EINVAL;
    return 0;
}

static int issuer_check(const char *issuer)
{
    size_t n = strnlen(issuer, FERRY_TOTP_ISSUER_MAX + 1);

    if (n == 0 || n > FERRY_TOTP_ISSUER_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)issuer[i];
        /* ':' separates issuer and account in the otpauth label. */
        if (c < 0x20 || c > 0x7e || c == ':')
            return -EINVAL;
    }
    return 0;
}

static const char b32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/* RFC 4648 §6 base32 of the secret (a multiple of 5 bytes, so no padding) into out
 * (SECRET_B32_LEN + 1 bytes). */
static void b32_encode_secret(const unsigned char *in, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < FERRY_TOTP_SECRET_LEN; i += 5) {
        uint64_t v = 0;
        for (size_t k = 0; k < 5; k++)
            v = v << 8 | in[i + k];
        for (int k = 7; k >= 0; k--)
            out[o++] = b32_alphabet[(v >> (5 * k)) & 31];
        ferry_wipe(&v, sizeof(v));
    }
    out[o] = '\0';
}

/* Strict inverse: exactly SECRET_B32_LEN characters of the upper-case alphabet. Each
 * character is mapped with masks rather than branches, so the time taken does not depend on
 * the secret's value. 0 or -EINVAL. */
static int b32_decode_secret(const char *in, size_t n, unsigned char *out)
{
    unsigned char tmp[FERRY_TOTP_SECRET_LEN];
    unsigned bad = 0;

    if (n != SECRET_B32_LEN)
        return -EINVAL;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = 0;
        for (size_t k = 0; k < 8; k++) {
            unsigned c = (unsigned char)in[i + k];
            unsigned a = c - 'A', b = c - '2';
            unsigned in_a = a < 26, in_b = b < 6;
            unsigned d = (a & -in_a) | ((b + 26) & -in_b);
            bad |= !(in_a | in_b);
            v = v << 5 | (d & 31);
        }
        for (size_t k = 0; k < 5; k++)
            tmp[i / 8 * 5 + k] = (unsigned char)(v >> (8 * (4 - k)));
        ferry_wipe(&v, sizeof(v));
    }
    if (!bad)
        memcpy(out, tmp, sizeof(tmp));
    ferry_wipe(tmp, sizeof(tmp));
    return bad ? -EINVAL : 0;
}

/* Percent-encode s (RFC 3986: everything but unreserved) into out of outlen bytes.
 * 0 or -ENAMETOOLONG. */
static int pct_encode(const char *s, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                    (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
        if (o + (keep ? 1 : 3) >= outlen)
            return -ENAMETOOLONG;
        if (keep) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return 0;
}

/* Copy at most 32 bytes of a hostile string for an error message, '?' for anything that is
 * not printable ASCII. */
static void sanitize(const char *s, char *out, size_t outlen)
{
    size_t o = 0;

    for (; *s && o + 1 < outlen && o < 32; s++)
        out[o++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
    out[o] = '\0';
}

/* ---- HOTP ------------------------------------------------------------------------------- */

static pthread_once_t oath_once = PTHREAD_ONCE_INIT;
static int oath_init_rc;

static void oath_init_once(void)
{
    oath_init_rc = oath_init();
}

FERRY_EXPORT int ferry_totp_hotp(const void *secret, size_t secret_len, uint64_t counter,
                                 unsigned digits, char *out)
{
    char otp[DIGITS_MAX + 1];
    int r;

    if (!secret || secret_len == 0 || !out || digits < DIGITS_MIN || digits > DIGITS_MAX)
        return -EINVAL;
    (void)pthread_once(&oath_once, oath_init_once);
    if (oath_init_rc != OATH_OK)
        return -FERRY_ECRYPTO;
    /* liboath's HOTP is HMAC-SHA-1 with RFC 4226 dynamic truncation. */
    r = oath_hotp_generate(secret, secret_len, counter, digits, false,
                           OATH_HOTP_DYNAMIC_TRUNCATION, otp);
    if (r != OATH_OK || strnlen(otp, sizeof(otp)) != digits) {
        ferry_wipe(otp, sizeof(otp));
        return -FERRY_ECRYPTO;
    }
    memcpy(out, otp, digits + 1);
    ferry_wipe(otp, sizeof(otp));
    return 0;
}

/* ---- the state folder and files ------------------------------------------------------- */

/* Descriptor-relative file names of one account. */
typedef struct names {
    char record[FERRY_TOTP_ACCOUNT_MAX + 8];
    char lock[FERRY_TOTP_ACCOUNT_MAX + 8];
    char tmp[FERRY_TOTP_ACCOUNT_MAX + 8];
} names;

static void names_init(names *nm, const char *account)
{
    (void)snprintf(nm->record, sizeof(nm->record), "%s.json", account);
    (void)snprintf(nm->lock, sizeof(nm->lock), "%s.lock", account);
    (void)snprintf(nm->tmp, sizeof(nm->tmp), ".%s.tmp", account);
}

/* The caller's own, private object: owned by the effective uid, nothing for group/other. */
static int check_private(const struct stat *st, const char *what, const char *name,
                         char *errbuf, size_t errlen)
{
    if (st->st_uid != geteuid()) {
        seterr(errbuf, errlen, "totp: %s %s is owned by uid %u, not by this process (uid %u)",
               what, name, (unsigned)st->st_uid, (unsigned)geteuid());
        return -EPERM;
    }
    if (st->st_mode & 077) {
        seterr(errbuf, errlen, "totp: %s %s has mode %04o: group/other must have no access",
               what, name, (unsigned)(st->st_mode & 07777));
        return -EPERM;
    }
    return 0;
}

/* Open <state_dir>/totp as a directory descriptor (creating it 0700 when create). Returns the
 * descriptor, -ENOENT when it does not exist (and !create), -EPERM when it is not a private
 * directory, or -errno. */
static int open_totp_dir(const char *state_dir, bool create, char *errbuf, size_t errlen)
{
    _cleanup_close_ int sfd = -1;
    _cleanup_close_ int dfd = -1;
    struct stat st;
    int r;

    sfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sfd < 0) {
        r = -errno;
        seterr(errbuf, errlen, "totp: cannot open state directory %s: %s", state_dir,
               strerror(-r));
        return r;
    }
    if (create && mkdirat(sfd, TOTP_SUBDIR, 0700) < 0 && errno != EEXIST) {
        r = -errno;
        seterr(errbuf, errlen, "totp: cannot create %s/" TOTP_SUBDIR ": %s", state_dir,
               strerror(-r));
        return r;
    }
    dfd = openat(sfd, TOTP_SUBDIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        r = -errno;
        if (r == -ELOOP || r == -ENOTDIR) {
            seterr(errbuf, errlen, "totp: %s/" TOTP_SUBDIR " is not a directory (or a symlink)",
                   state_dir);
            return -EPERM;
        }
        seterr(errbuf, errlen, "totp: cannot open %s/" TOTP_SUBDIR ": %s", state_dir,
               strerror(-r));
        return r;
    }
    if (fstat(dfd, &st) < 0) {
        r = -errno;
        seterr(errbuf, errlen, "totp: cannot stat %s/" TOTP_SUBDIR ": %s", state_dir,
               strerror(-r));
        return r;
    }
    r = check_private(&st, "state folder", TOTP_SUBDIR, errbuf, errlen);
    if (r < 0)
        return r;
    r = dfd;
    dfd = -1;
    return r;
}

/* Open name in dfd without following a symlink or blocking on a FIFO, and check it is a
 * private regular file of ours (what names it in messages). Returns the descriptor, -ENOENT
 * without a message, -EPERM or -errno; *ret_st gets its status. */
static int open_private(int dfd, const char *name, int flags, const char *what,
                        struct stat *ret_st, char *errbuf, size_t errlen)
{
    _cleanup_close_ int fd = -1;
    int r;

    fd = openat(dfd, name, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = -errno;
        if (r == -ENOENT)
            return r;
        seterr(errbuf, errlen, "totp: cannot open %s %s: %s", what, name,
               r == -ELOOP ? "is a symlink" : strerror(-r));
        return r == -ELOOP ? -EPERM : r;
    }
    if (fstat(fd, ret_st) < 0) {
        r = -errno;
        seterr(errbuf, errlen, "totp: cannot stat %s: %s", name, strerror(-r));
        return r;
    }
    if (!S_ISREG(ret_st->st_mode)) {
        seterr(errbuf, errlen, "totp: %s %s is not a regular file", what, name);
        return -EPERM;
    }
    r = check_private(ret_st, what, name, errbuf, errlen);
    if (r < 0)
        return r;
    r = fd;
    fd = -1;
    return r;
}

/* Open (creating when create) and flock the account's lock file with op (LOCK_EX/LOCK_SH).
 * Returns the descriptor (closing it releases the lock) or -errno / -EPERM. */
static int lock_account(int dfd, const names *nm, bool create, int op, char *errbuf,
                        size_t errlen)
{
    _cleanup_close_ int fd = -1;
    struct stat st;
    int r;

    fd = open_private(dfd, nm->lock, O_RDWR | (create ? O_CREAT : 0), "lock file", &st, errbuf,
                      errlen);
    if (fd < 0) {
        if (fd == -ENOENT)
            seterr(errbuf, errlen, "totp: cannot open lock file %s: %s", nm->lock,
                   strerror(ENOENT));
        return fd;
    }
    while (flock(fd, op) < 0) {
        if (errno == EINTR)
            continue;
        r = -errno;
        seterr(errbuf, errlen, "totp: cannot lock %s: %s", nm->lock, strerror(-r));
        return r;
    }
    r = fd;
    fd = -1;
    return r;
}

/* Does the record exist (as anything)? 1, 0 or -errno. */
static int record_exists(int dfd, const names *nm)
{
    struct stat st;

    if (fstatat(dfd, nm->record, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return 1;
    return errno == ENOENT ? 0 : -errno;
}

static int get_int(json_t *v, int64_t min, int64_t max, int64_t *ret)
{
    json_int_t i;

    if (!json_is_integer(v))
        return -FERRY_EMALFORMED;
    i = json_integer_value(v);
    if (i < min || i > max)
        return -FERRY_EMALFORMED;
    *ret = (int64_t)i;
    return 0;
}

/* Fill rec from the parsed record j. Every member is required, none other is allowed.
 * Wipes the secret's base32 text inside j. */
static int record_from_json(json_t *j, totp_record *rec, const char *name, char *errbuf,
                            size_t errlen)
{
    static const char *const members[] = {
        "version", "algorithm", "digits",   "period",   "issuer",       "secret",
        "created", "last_counter", "failures", "lockouts", "locked_until",
    };
    unsigned seen = 0;
    const char *key;
    json_t *v;
    int64_t i = 0;
    int r = 0;

    if (!json_is_object(j)) {
        seterr(errbuf, errlen, "totp: %s: not a JSON object", name);
        return -FERRY_EMALFORMED;
    }
    json_object_foreach(j, key, v) {
        size_t m;
        char safe[40];

        for (m = 0; m < ARRAY_SIZE(members); m++)
            if (strcmp(key, members[m]) == 0)
                break;
        if (m == ARRAY_SIZE(members)) {
            sanitize(key, safe, sizeof(safe));
            seterr(errbuf, errlen, "totp: %s: unknown member \"%s\"", name, safe);
            r = -FERRY_EMALFORMED;
            goto out;
        }
        seen |= 1u << m;
        switch (m) {
        case 0:
            r = get_int(v, RECORD_VERSION, RECORD_VERSION, &i);
            break;
        case 1:
            r = json_is_string(v) && strcmp(json_string_value(v), "SHA1") == 0
                        ? 0
                        : -FERRY_EMALFORMED;
            break;
        case 2:
            r = get_int(v, DIGITS_MIN, DIGITS_MAX, &i);
            rec->digits = (unsigned)i;
            break;
        case 3:
            r = get_int(v, PERIOD_MIN, PERIOD_MAX, &i);
            rec->period = (unsigned)i;
            break;
        case 4:
            r = json_is_string(v) && json_string_length(v) <= FERRY_TOTP_ISSUER_MAX &&
                        strlen(json_string_value(v)) == json_string_length(v) &&
                        issuer_check(json_string_value(v)) == 0
                    ? 0
                    : -FERRY_EMALFORMED;
            if (r == 0)
                memcpy(rec->issuer, json_string_value(v), json_string_length(v) + 1);
            break;
        case 5:
            r = json_is_string(v) ? b32_decode_secret(json_string_value(v),
                                                      json_string_length(v), rec->secret)
                                  : -EINVAL;
            if (json_is_string(v))
                ferry_wipe((char *)json_string_value(v), json_string_length(v));
            r = r < 0 ? -FERRY_EMALFORMED : 0;
            break;
        case 6:
            r = get_int(v, 0, INT64_MAX, &rec->created);
            break;
        case 7:
            r = get_int(v, -1, INT64_MAX, &rec->last_counter);
            break;
        case 8:
            r = get_int(v, 0, FERRY_TOTP_MAX_FAILURES, &i);
            rec->failures = (unsigned)i;
            break;
        case 9:
            r = get_int(v, 0, LOCKOUTS_MAX, &i);
            rec->lockouts = (unsigned)i;
            break;
        case 10:
            r = get_int(v, 0, INT64_MAX, &rec->locked_until);
            break;
        }
        if (r < 0) {
            seterr(errbuf, errlen, "totp: %s: member \"%s\" has a bad type or value", name,
                   key);
            goto out;
        }
    }
    if (seen != (1u << ARRAY_SIZE(members)) - 1) {
        for (size_t m = 0; m < ARRAY_SIZE(members); m++)
            if (!(seen & (1u << m))) {
                seterr(errbuf, errlen, "totp: %s: member \"%s\" is missing", name,
                       members[m]);
                break;
            }
        r = -FERRY_EMALFORMED;
    }
out:
    /* The secret may sit in j if the loop stopped before reaching it. */
    v = json_object_get(j, "secret");
    if (json_is_string(v))
        ferry_wipe((char *)json_string_value(v), json_string_length(v));
    return r;
}

/* Read and check the account's record. Returns 0, -ENOENT, -EPERM, -FERRY_ETOOBIG,
 * -FERRY_EMALFORMED or -errno. rec is wiped on failure. */
static int record_read(int dfd, const names *nm, totp_record *rec, char *errbuf, size_t errlen)
{
    _cleanup_close_ int fd = -1;
    char buf[RECORD_MAX + 1], jerr[FERRY_JSON_ERR_LEN];
    json_t *j = NULL;
    struct stat st;
    size_t len = 0;
    int r;

    fd = open_private(dfd, nm->record, O_RDONLY, "record", &st, errbuf, errlen);
    if (fd < 0)
        return fd;
    if (st.st_size > RECORD_MAX) {
        seterr(errbuf, errlen, "totp: %s is larger than %d bytes", nm->record, RECORD_MAX);
        return -FERRY_ETOOBIG;
    }
    /* Read one byte more than allowed so a file that grew after fstat is caught too. */
    while (len < sizeof(buf)) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            seterr(errbuf, errlen, "totp: cannot read %s: %s", nm->record, strerror(-r));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len > RECORD_MAX) {
        seterr(errbuf, errlen, "totp: %s is larger than %d bytes", nm->record, RECORD_MAX);
        r = -FERRY_ETOOBIG;
        goto out;
    }
    /* Depth 1: the record is one flat object. */
    r = ferry_json_parse(buf, len, RECORD_MAX, 1, &j, jerr, sizeof(jerr));
    if (r < 0) {
        seterr(errbuf, errlen, "totp: %s is not valid JSON: %s", nm->record, jerr);
        r = r == -ENOMEM ? r : -FERRY_EMALFORMED;
        goto out;
    }
    r = record_from_json(j, rec, nm->record, errbuf, errlen);
out:
    json_decref(j);
    ferry_wipe(buf, sizeof(buf));
    if (r < 0)
        record_wipe(rec);
    return r;
}

/* Replace the account's record with rec, atomically and durably: temp file (0600), fsync,
 * rename over the record, fsync of the folder. The caller holds the account lock. */
static int record_write(int dfd, const names *nm, const totp_record *rec, char *errbuf,
                        size_t errlen)
{
    char text[512], b32[SECRET_B32_LEN + 1], issuer[2 * FERRY_TOTP_ISSUER_MAX + 1];
    const char *step = "write";
    size_t o = 0;
    int fd = -1, n, r;

    /* issuer_check allows '"' and '\\', which JSON must escape. */
    for (const char *s = rec->issuer; *s; s++) {
        if (*s == '"' || *s == '\\')
            issuer[o++] = '\\';
        issuer[o++] = *s;
    }
    issuer[o] = '\0';
    b32_encode_secret(rec->secret, b32);
    n = snprintf(text, sizeof(text),
                 "{\"version\": %d, \"algorithm\": \"SHA1\", \"digits\": %u, \"period\": %u, "
                 "\"issuer\": \"%s\", \"secret\": \"%s\", \"created\": %" PRId64 ", "
                 "\"last_counter\": %" PRId64 ", \"failures\": %u, \"lockouts\": %u, "
                 "\"locked_until\": %" PRId64 "}\n",
                 RECORD_VERSION, rec->digits, rec->period, issuer, b32, rec->created,
                 rec->last_counter, rec->failures, rec->lockouts, rec->locked_until);
    ferry_wipe(b32, sizeof(b32));
    if (n < 0 || (size_t)n >= sizeof(text)) {
        r = -ENAMETOOLONG;
        goto fail;
    }

    step = "create";
    fd = openat(dfd, nm->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = -errno;
        goto fail;
    }
    /* A leftover temp file keeps its old mode through O_CREAT: set it. */
    step = "chmod";
    if (fchmod(fd, 0600) < 0) {
        r = -errno;
        goto fail;
    }
    step = "write";
    r = ferry_write_all(fd, text, (size_t)n);
    if (r < 0)
        goto fail;
    step = "fsync";
    if (fsync(fd) < 0) {
        r = -errno;
        goto fail;
    }
    step = "close";
    r = close(fd);
    fd = -1;
    if (r < 0) {
        r = -errno;
        goto fail;
    }
    step = "rename";
    if (renameat(dfd, nm->tmp, dfd, nm->record) < 0) {
        r = -errno;
        goto fail;
    }
    /* The rename itself must survive a crash before the caller acts on the decision. */
    step = "fsync folder of";
    if (fsync(dfd) < 0) {
        r = -errno;
        seterr(errbuf, errlen, "totp: cannot %s %s: %s", step, nm->record, strerror(-r));
        ferry_wipe(text, sizeof(text));
        return r;
    }
    ferry_wipe(text, sizeof(text));
    return 0;

fail:
    if (fd >= 0)
        (void)close(fd);
    /* Ours under the lock; unlink never follows a symlink and fails on a directory. */
    (void)unlinkat(dfd, nm->tmp, 0);
    ferry_wipe(text, sizeof(text));
    seterr(errbuf, errlen, "totp: cannot %s %s: %s", step, nm->tmp, strerror(-r));
    return r < 0 ? r : -EIO;
}

/* ---- enrolment -------------------------------------------------------------------------- */

FERRY_EXPORT int ferry_totp_enroll(const char *state_dir, const char *account,
                                   const char *issuer, bool force, char **ret_uri,
                                   char *errbuf, size_t errlen)
{
    _cleanup_close_ int dfd = -1;
    _cleanup_close_ int lfd = -1;
    totp_record rec = { .digits = FERRY_TOTP_DIGITS, .period = FERRY_TOTP_PERIOD,
                        .last_counter = -1 };
    char b32[SECRET_B32_LEN + 1], e_account[3 * FERRY_TOTP_ACCOUNT_MAX + 1],
        e_issuer[3 * FERRY_TOTP_ISSUER_MAX + 1];
    char *uri = NULL;
    names nm;
    int r, n;
    size_t ulen;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!issuer)
        issuer = FERRY_TOTP_DEFAULT_ISSUER;
    if (!state_dir || !ret_uri) {
        seterr(errbuf, errlen, "totp: missing state directory or result pointer");
        return -EINVAL;
    }
    if (ferry_totp_account_check(account) < 0) {
        seterr(errbuf, errlen,
               "totp: invalid account name (1-%d of A-Z a-z 0-9 . _ - @ +, not starting with "
               "'.' or '-', no \"..\")",
               FERRY_TOTP_ACCOUNT_MAX);
        return -EINVAL;
    }
    if (issuer_check(issuer) < 0) {
        seterr(errbuf, errlen, "totp: invalid issuer (1-%d printable ASCII characters, no ':')",
               FERRY_TOTP_ISSUER_MAX);
        return -EINVAL;
    }
    names_init(&nm, account);

    dfd = open_totp_dir(state_dir, true, errbuf, errlen);
    if (dfd < 0)
        return dfd;
    lfd = lock_account(dfd, &nm, true, LOCK_EX, errbuf, errlen);
    if (lfd < 0)
        return lfd;
    if (!force) {
        r = record_exists(dfd, &nm);
        if (r != 0) {
            if (r > 0)
                seterr(errbuf, errlen,
                       "totp: account %s is already enrolled (re-enrol with force)", account);
            else
                seterr(errbuf, errlen, "totp: cannot stat %s: %s", nm.record, strerror(-r));
            return r > 0 ? -EEXIST : r;
        }
    }

    if (RAND_bytes(rec.secret, sizeof(rec.secret)) != 1) {
        seterr(errbuf, errlen, "totp: the random generator failed");
        r = -FERRY_ECRYPTO;
        goto out;
    }
    memcpy(rec.issuer, issuer, strlen(issuer) + 1);
    rec.created = (int64_t)time(NULL);

    /* The URI first: once the record is on disk the caller must be able to get it. */
    if (pct_encode(account, e_account, sizeof(e_account)) < 0 ||
        pct_encode(issuer, e_issuer, sizeof(e_issuer)) < 0) {
        r = -EINVAL; /* cannot happen with the checks above */
        goto out;
    }
    b32_encode_secret(rec.secret, b32);
    ulen = strlen(e_account) + 2 * strlen(e_issuer) + SECRET_B32_LEN + 128;
    uri = malloc(ulen);
    if (!uri) {
        r = -ENOMEM;
        goto out;
    }
    n = snprintf(uri, ulen,
                 "otpauth://totp/%s:%s?secret=%s&issuer=%s&algorithm=SHA1&digits=%u&period=%u",
                 e_issuer, e_account, b32, e_issuer, rec.digits, rec.period);
    if (n < 0 || (size_t)n >= ulen) {
        r = -ENAMETOOLONG;
        goto out;
    }
    r = record_write(dfd, &nm, &rec, errbuf, errlen);
    if (r < 0)
        goto out;
    *ret_uri = TAKE_PTR(uri);
out:
    if (uri)
        ferry_free_secret_str(uri);
    ferry_wipe(b32, sizeof(b32));
    record_wipe(&rec);
    return r;
}

/* ---- verification ----------------------------------------------------------------------- */

/* Exactly digits ASCII digits. Runs over the whole (bounded) input whatever it holds. */
static bool code_well_formed(const char *code, unsigned digits)
{
    size_t n;
    unsigned bad = 0;

    if (!code)
        return false;
    n = strnlen(code, digits + 1);
    if (n != digits)
        return false;
    for (size_t i = 0; i < n; i++)
        bad |= (unsigned)((unsigned char)code[i] - '0') > 9;
    return bad == 0;
}

/* Record one refused attempt at now; returns the seconds of a lock-out it started, or 0. */
static int64_t count_failure(totp_record *rec, int64_t now)
{
    int64_t dur;

    rec->failures++;
    if (rec->failures < FERRY_TOTP_MAX_FAILURES)
        return 0;
    rec->failures = 0;
    if (rec->lockouts < LOCKOUTS_MAX)
        rec->lockouts++;
    dur = FERRY_TOTP_LOCK_BASE;
    for (unsigned i = 1; i < rec->lockouts && dur < FERRY_TOTP_LOCK_MAX; i++)
        dur *= 2;
    if (dur > FERRY_TOTP_LOCK_MAX)
        dur = FERRY_TOTP_LOCK_MAX;
    rec->locked_until = now > INT64_MAX - dur ? INT64_MAX : now + dur;
    return dur;
}

FERRY_EXPORT int ferry_totp_verify(const char *state_dir, const char *account, const char *code,
                                   int64_t now, ferry_totp_status *ret_status,
                                   int64_t *ret_retry_after, char *errbuf, size_t errlen)
{
    _cleanup_close_ int dfd = -1;
    _cleanup_close_ int lfd = -1;
    totp_record rec = { 0 };
    ferry_totp_status status;
    int64_t retry = 0, found = -1, t;
    names nm;
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!state_dir || !ret_status || now < 0) {
        seterr(errbuf, errlen, "totp: missing state directory or result pointer, or time < 0");
        return -EINVAL;
    }
    if (ferry_totp_account_check(account) < 0) {
        seterr(errbuf, errlen, "totp: invalid account name");
        return -EINVAL;
    }
    names_init(&nm, account);

    dfd = open_totp_dir(state_dir, false, errbuf, errlen);
    if (dfd == -ENOENT) {
        status = FERRY_TOTP_UNKNOWN_ACCOUNT;
        goto done;
    }
    if (dfd < 0)
        return dfd;
    /* Only accounts that exist get a lock file: probing names must not create files. */
    r = record_exists(dfd, &nm);
    if (r < 0) {
        seterr(errbuf, errlen, "totp: cannot stat %s: %s", nm.record, strerror(-r));
        return r;
    }
    if (r == 0) {
        status = FERRY_TOTP_UNKNOWN_ACCOUNT;
        goto done;
    }
    lfd = lock_account(dfd, &nm, true, LOCK_EX, errbuf, errlen);
    if (lfd < 0)
        return lfd;
    r = record_read(dfd, &nm, &rec, errbuf, errlen);
    if (r == -ENOENT) { /* removed since record_exists */
        status = FERRY_TOTP_UNKNOWN_ACCOUNT;
        goto done;
    }
    if (r < 0)
        return r;

    if (now < rec.locked_until) {
        /* Locked: the code is not looked at and nothing changes. */
        status = FERRY_TOTP_LOCKED;
        retry = rec.locked_until - now;
        goto out;
    }

    if (!code_well_formed(code, rec.digits)) {
        status = FERRY_TOTP_MALFORMED;
    } else {
        /* Compute every candidate and compare each in constant time; remember the highest
         * matching time step without branching on the comparisons. */
        t = now / rec.period;
        for (int64_t c = t - FERRY_TOTP_WINDOW; c <= t + FERRY_TOTP_WINDOW; c++) {
            char cand[DIGITS_MAX + 1];
            int64_t mask;

            if (c < 0)
                continue;
            r = ferry_totp_hotp(rec.secret, sizeof(rec.secret), (uint64_t)c, rec.digits, cand);
            if (r < 0) {
                ferry_wipe(cand, sizeof(cand));
                seterr(errbuf, errlen, "totp: computing the expected code failed");
                goto out;
            }
            mask = -(int64_t)ferry_memeq_ct(cand, code, rec.digits);
            found = (found & ~mask) | (c & mask);
            ferry_wipe(cand, sizeof(cand));
        }
        if (found > rec.last_counter)
            status = FERRY_TOTP_OK;
        else if (found >= 0)
            status = FERRY_TOTP_REPLAYED;
        else
            status = FERRY_TOTP_BAD_CODE;
    }

    if (status == FERRY_TOTP_OK) {
        rec.last_counter = found;
        rec.failures = 0;
        rec.lockouts = 0;
        rec.locked_until = 0;
    } else {
        retry = count_failure(&rec, now);
    }
    /* Persist before answering; a decision that is not on disk is not given. */
    r = record_write(dfd, &nm, &rec, errbuf, errlen);
    if (r < 0)
        goto out;
out:
    record_wipe(&rec);
    if (r < 0)
        return r;
done:
    *ret_status = status;
    if (ret_retry_after)
        *ret_retry_after = retry;
    return 0;
}

/* ---- inspection ------------------------------------------------------------------------- */

FERRY_EXPORT int ferry_totp_inspect(const char *state_dir, const char *account, int64_t now,
                                    ferry_totp_info *ret_info, char *errbuf, size_t errlen)
{
    _cleanup_close_ int dfd = -1;
    _cleanup_close_ int lfd = -1;
    totp_record rec = { 0 };
    ferry_totp_info info = { 0 };
    names nm;
    int r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!state_dir || !ret_info) {
        seterr(errbuf, errlen, "totp: missing state directory or result pointer");
        return -EINVAL;
    }
    if (ferry_totp_account_check(account) < 0) {
        seterr(errbuf, errlen, "totp: invalid account name");
        return -EINVAL;
    }
    names_init(&nm, account);
    dfd = open_totp_dir(state_dir, false, errbuf, errlen);
    if (dfd == -ENOENT)
        goto unknown;
    if (dfd < 0)
        return dfd;
    r = record_exists(dfd, &nm);
    if (r == 0)
        goto unknown;
    if (r < 0) {
        seterr(errbuf, errlen, "totp: cannot stat %s: %s", nm.record, strerror(-r));
        return r;
    }
    /* Read-only: never create the lock file. Without one (restored from a backup, say) no
     * writer has run since, and the record is replaced atomically, so it reads whole. */
    lfd = lock_account(dfd, &nm, false, LOCK_SH, errbuf, errlen);
    if (lfd < 0 && lfd != -ENOENT)
        return lfd;
    if (lfd == -ENOENT && errbuf && errlen)
        errbuf[0] = '\0';
    r = record_read(dfd, &nm, &rec, errbuf, errlen);
    if (r == -ENOENT)
        goto unknown;
    if (r < 0)
        return r;
    memcpy(info.issuer, rec.issuer, sizeof(info.issuer));
    info.created = rec.created;
    info.last_counter = rec.last_counter;
    info.failures = rec.failures;
    info.lockouts = rec.lockouts;
    info.locked_until = rec.locked_until;
    info.retry_after = now < rec.locked_until ? rec.locked_until - now : 0;
    record_wipe(&rec);
    *ret_info = info;
    return 0;

unknown:
    seterr(errbuf, errlen, "totp: account %s is not enrolled", account);
    return -ENOENT;
}
