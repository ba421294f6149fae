/* tests/fuzz/fuzz_secret_store.c - libFuzzer target: the sealed-file store's reader
 * (ferry_secret_store_list / _get) against edited stores.
 *
 * At start-up a real store is written with the library (a key file, three entries, one of
 * them rewritten and one removed, so the file has history). Each input is an edit script
 * applied to a copy of the store file, as in fuzz_auditlog.c: records of 3 bytes (op, position,
 * value) that overwrite, insert or delete a byte, or truncate. The property checked is the one
 * the store's MAC exists for: the untouched store lists and reads back exactly what was put,
 * and ANY change to its bytes is refused by both list and get, never read as some other value.
 * A crash, a sanitizer report or an accepted edit abort. */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferry/error.h"
#include "ferry/secrets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define EDITED_MAX (64 * 1024)

static const char *const names[] = {"team-a/db", "team-a/api", "team-b/token"};
static const char *const values[] = {"first value", "a rewritten value\n", "\x01\x02\x00\xff"};
static const size_t value_lens[] = {11, 18, 4};

static unsigned char *orig;
static size_t orig_len;
static char store_path[128];
static ferry_secret_store *st;

static void die(const char *why)
{
    fprintf(stderr, "fuzz_secret_store: %s\n", why);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static char dir[] = "/tmp/fuzz-secret-store-XXXXXX";
    char key_path[128], err[256];
    FILE *f;

    (void)argc;
    (void)argv;
    if (!mkdtemp(dir))
        die("mkdtemp");
    (void)snprintf(store_path, sizeof(store_path), "%s/secrets.store", dir);
    (void)snprintf(key_path, sizeof(key_path), "%s/secrets.key", dir);
    if (ferry_secret_store_init_key(store_path, key_path, err, sizeof(err)) < 0 ||
        ferry_secret_store_open(store_path, key_path, &st, err, sizeof(err)) < 0)
        die(err);
    if (ferry_secret_store_put(st, names[0], values[0], value_lens[0], NULL, err,
                               sizeof(err)) < 0 ||
        ferry_secret_store_put(st, names[1], "old", 3, NULL, err, sizeof(err)) < 0 ||
        ferry_secret_store_put(st, "gone", "x", 1, NULL, err, sizeof(err)) < 0 ||
        ferry_secret_store_put(st, names[1], values[1], value_lens[1], NULL, err,
                               sizeof(err)) < 0 ||
        ferry_secret_store_put(st, names[2], values[2], value_lens[2], NULL, err,
                               sizeof(err)) < 0 ||
        ferry_secret_store_rm(st, "gone", err, sizeof(err)) < 0)
        die(err);
    f = fopen(store_path, "rb");
    if (!f)
        die("reopen");
    orig = malloc(EDITED_MAX);
    if (!orig)
        die("malloc");
    orig_len = fread(orig, 1, EDITED_MAX, f);
    fclose(f);
    if (orig_len == 0 || orig_len == EDITED_MAX)
        die("unexpected store size");
    return 0;
}

static void write_store(const unsigned char *buf, size_t len)
{
    FILE *f = fopen(store_path, "wb");

    if (!f || (len && fwrite(buf, 1, len, f) != len) || fclose(f) != 0)
        die("store write");
}

/* 0 when list and every get give exactly the original entries; else the first error. */
static int read_all(void)
{
    ferry_secret_entry_info *e = NULL;
    size_t n = 0;
    char err[256];
    int r = ferry_secret_store_list(st, &e, &n, err, sizeof(err));

    if (r < 0)
        return r;
    free(e);
    if (n != 3)
        return 1;
    for (size_t i = 0; i < 3; i++) {
        ferry_secret_value *v = NULL;
        r = ferry_secret_store_get(st, names[i], &v, err, sizeof(err));
        if (r < 0)
            return r;
        bool same = v->len == value_lens[i] && memcmp(v->data, values[i], v->len) == 0;
        ferry_secret_value_free(v);
        if (!same)
            return 2;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char ed[EDITED_MAX];
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
    write_store(ed, len);
    r = read_all();
    if (len == orig_len && memcmp(ed, orig, len) == 0) {
        if (r != 0)
            die("the untouched store does not read back");
        return 0;
    }
    /* An empty file is an empty store: list gives 0 entries (read_all says 1), get -ENOENT. */
    if (r == 0 || r == 2)
        die(r == 0 ? "an edited store read back as the original" : "an edited store gave "
                                                                      "another value");
    if (r == 1 && len != 0) {
        /* Some other entry count was accepted from an edited, non-empty file. */
        die("an edited store listed other entries");
    }
    return 0;
}
