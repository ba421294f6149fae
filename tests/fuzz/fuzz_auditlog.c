/* tests/fuzz/fuzz_auditlog.c - libFuzzer target: ferry_auditlog_verify() against edited logs.
 *
 * At start-up a real log is written with the library (ES256 checkpoints every 3 records, a
 * final checkpoint at close). Each input is an edit script applied to a copy of it: records of
 * 3 bytes (op, position, value) that overwrite, insert or delete a byte, or truncate. The
 * target then checks the property the log exists for: the untouched log verifies, and ANY
 * change to its bytes is refused (-FERRY_EREFUSED), both in strict and in live mode, with the
 * first broken line named. A crash, a sanitizer report, an accepted edit or a missing line
 * number abort. */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ferry/auditlog.h"
#include "ferry/error.h"
#include "ferry/jose.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define EDITED_MAX (64 * 1024)

static unsigned char *orig;
static size_t orig_len;
static ferry_jwks *keys;
static int fd = -1;
static char fd_path[64];

static void die(const char *why)
{
    fprintf(stderr, "fuzz_auditlog: %s\n", why);
    abort();
}

static int64_t fixed_clock(void *userdata)
{
    (void)userdata;
    return INT64_C(1700000000000000);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char dir[] = "/tmp/fuzz-auditlog-XXXXXX", path[128];
    ferry_auditlog_options o = { 0 };
    ferry_auditlog *log = NULL;
    ferry_jwk *key = NULL;
    char err[256];
    FILE *f;

    (void)argc;
    (void)argv;
    if (!mkdtemp(dir))
        die("mkdtemp");
    (void)snprintf(path, sizeof(path), "%s/audit.log", dir);
    if (ferry_jwk_generate(FERRY_ALG_ES256, &key) < 0 || ferry_jwks_from_keys(&key, 1, &keys) < 0)
        die("key");
    o.path = path;
    o.checkpoint_every = 3;
    o.sync = FERRY_AUDITLOG_SYNC_CHECKPOINT;
    o.signing_key = key;
    o.clock = fixed_clock;
    if (ferry_auditlog_open(&o, &log, err, sizeof(err)) < 0)
        die(err);
    for (int i = 0; i < 7; i++) {
        json_t *d = json_pack("{s:i, s:s}", "n", i, "scope", "models:read");
        ferry_auditlog_event ev = { .type = "token.exchange",
                                    .decision = i % 3 ? FERRY_AUDITLOG_ALLOW
                                                      : FERRY_AUDITLOG_DENY,
                                    .subject = "system:serviceaccount:ml:trainer",
                                    .details = d };

        if (!d || ferry_auditlog_append(log, &ev, NULL) < 0)
            die("append");
        json_decref(d);
    }
    if (ferry_auditlog_close(log) < 0)
        die("close");
    f = fopen(path, "rb");
    if (!f)
        die("reopen");
    orig = malloc(EDITED_MAX);
    if (!orig)
        die("malloc");
    orig_len = fread(orig, 1, EDITED_MAX, f);
    fclose(f);
    (void)unlink(path);
    (void)rmdir(dir);
    ferry_jwk_unref(key);
    fd = memfd_create("fuzz-auditlog", MFD_CLOEXEC);
    if (fd < 0)
        die("memfd_create");
    (void)snprintf(fd_path, sizeof(fd_path), "/proc/self/fd/%d", fd);
    return 0;
}

static int verify(const unsigned char *buf, size_t len, bool live, ferry_auditlog_report *rep)
{
    ferry_auditlog_verify_options vo = { .live = live };

    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, len, 0) != (ssize_t)len)
        die("memfd write");
    return ferry_auditlog_verify(fd_path, keys, &vo, rep);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char ed[EDITED_MAX];
    ferry_auditlog_report rep;
    size_t len = orig_len;
    int r;

    memcpy(ed, orig, orig_len);
    for (size_t i = 0; i + 3 <= size && len > 0; i += 3) {
        size_t pos = ((size_t)data[i + 1] << 8 | data[i + 2]) % len;
        unsigned char v = data[i + 2] ^ data[i];

        switch (data[i] % 4) {
        case 0: /* overwrite */
            ed[pos] = v;
            break;
        case 1: /* insert */
            if (len < EDITED_MAX) {
                memmove(ed + pos + 1, ed + pos, len - pos);
                ed[pos] = v;
                len++;
            }
            break;
        case 2: /* delete */
            memmove(ed + pos, ed + pos + 1, len - pos - 1);
            len--;
            break;
        default: /* truncate */
            len = pos;
            break;
        }
    }

    if (len == orig_len && memcmp(ed, orig, len) == 0) {
        if (verify(ed, len, false, &rep) != 0 || !rep.sealed)
            die("the untouched log does not verify");
        return 0;
    }
    r = verify(ed, len, false, &rep);
    if (r == -ENOMEM)
        return 0;
    if (r != -FERRY_EREFUSED)
        die(r == 0 ? "an edited log verified" : "unexpected error on an edited log");
    if (rep.first_bad_line == 0)
        die("no line named for the first problem");
    /* Live mode forgives an unsigned tail and a last line still being written (no newline yet:
     * its bytes cannot be judged), never an edit of a complete line: only when the complete
     * lines are a prefix of the original may it pass. */
    r = verify(ed, len, true, &rep);
    if (r == 0) {
        size_t whole = len;

        while (whole > 0 && ed[whole - 1] != '\n')
            whole--;
        if (whole > orig_len || memcmp(ed, orig, whole) != 0) {
            fprintf(stderr, "--- original\n%.*s--- edited\n%.*s---\n", (int)orig_len,
                    (const char *)orig, (int)len, (const char *)ed);
            die("live mode accepted an edited record");
        }
    } else if (r != -FERRY_EREFUSED && r != -ENOMEM) {
        die("unexpected error in live mode");
    }
    return 0;
}
