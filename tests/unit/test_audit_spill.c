/* tests/unit/test_audit_spill.c - the audit's temporary file of records (src/lib/audit/spill.c).
 *
 * Segments come back per key in the order they were put and are forgotten once taken; what a
 * taker puts back under its key is kept for later; the file is in $TMPDIR and never visible
 * there; a directory that cannot hold it fails the put with a message naming it; the record
 * reader refuses a segment it did not write.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "audit-internal.h"
#include "basic/buf.h"
#include "ferry/error.h"

typedef struct took {
    char text[256];
    audit_spill *sp; /* put "again" under the key while taking, when set */
    const char *key;
} took;

static int collect(void *userdata, const char *data, size_t len)
{
    took *t = userdata;
    size_t n = strlen(t->text);
    cr_assert_lt(n + len + 1, sizeof(t->text));
    memcpy(t->text + n, data, len);
    t->text[n + len] = '|';
    t->text[n + len + 1] = '\0';
    if (t->sp)
        return audit_spill_put(t->sp, t->key, "again", 5);
    return 0;
}

static int fail_on_b(void *userdata, const char *data, size_t len)
{
    (void)userdata;
    return len == 1 && data[0] == 'b' ? -EBADMSG : 0;
}

static char *scratch_dir(void)
{
    char *d = strdup("/tmp/ferry-spill-test-XXXXXX");
    cr_assert_not_null(d);
    cr_assert_not_null(mkdtemp(d));
    return d;
}

static size_t entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;
    cr_assert_not_null(d);
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

Test(audit_spill, segments_come_back_per_key_in_order_and_once)
{
    audit_spill sp;
    took t = {.text = ""};
    char *dir = scratch_dir();

    cr_assert_eq(setenv("TMPDIR", dir, 1), 0);
    audit_spill_init(&sp);
    cr_assert_not(audit_spill_holds(&sp, "111122223333"));
    cr_assert_eq(audit_spill_put(&sp, "111122223333", "first", 5), 0);
    cr_assert_eq(audit_spill_put(&sp, "444455556666", "other", 5), 0);
    cr_assert_eq(audit_spill_put(&sp, "111122223333", "second", 6), 0);
    cr_assert_eq(audit_spill_put(&sp, "111122223333", "", 0), 0, "an empty segment is nothing");
    cr_assert_eq(entries(dir), 0, "the file is not visible in TMPDIR");
    cr_assert(audit_spill_holds(&sp, "111122223333"));
    cr_assert_eq(sp.size, 16);

    cr_assert_eq(audit_spill_take(&sp, "111122223333", collect, &t), 0);
    cr_assert_str_eq(t.text, "first|second|");
    cr_assert_not(audit_spill_holds(&sp, "111122223333"), "taken segments are forgotten");
    t.text[0] = '\0';
    cr_assert_eq(audit_spill_take(&sp, "111122223333", collect, &t), 0);
    cr_assert_str_eq(t.text, "");
    cr_assert_eq(audit_spill_take(&sp, "never-put", collect, &t), 0);
    cr_assert_str_eq(t.text, "");

    /* what the taker puts under the key is kept for the next take, not handed over again */
    t = (took){.text = "", .sp = &sp, .key = "444455556666"};
    cr_assert_eq(audit_spill_take(&sp, "444455556666", collect, &t), 0);
    cr_assert_str_eq(t.text, "other|");
    cr_assert(audit_spill_holds(&sp, "444455556666"));
    t = (took){.text = ""};
    cr_assert_eq(audit_spill_take(&sp, "444455556666", collect, &t), 0);
    cr_assert_str_eq(t.text, "again|");

    /* the entries of taken segments are reused */
    size_t n_segs = sp.n_segs;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(audit_spill_put(&sp, "k", "x", 1), 0);
    cr_assert_eq(sp.n_segs, n_segs, "%zu entries after reuse, %zu before", sp.n_segs, n_segs);

    /* a failing taker: its code comes back, and every segment of the key is forgotten */
    cr_assert_eq(audit_spill_put(&sp, "f", "a", 1), 0);
    cr_assert_eq(audit_spill_put(&sp, "f", "b", 1), 0);
    cr_assert_eq(audit_spill_put(&sp, "f", "c", 1), 0);
    cr_assert_eq(audit_spill_take(&sp, "f", fail_on_b, NULL), -EBADMSG);
    cr_assert_not(audit_spill_holds(&sp, "f"));
    audit_spill_release(&sp);
    cr_assert_eq(entries(dir), 0);
    cr_assert_eq(rmdir(dir), 0);
    free(dir);
}

/* Taking back leaves dead bytes; past compact_at and twice the live bytes, the live segments
 * move to a new file, with their order and content. */
Test(audit_spill, the_file_is_compacted_when_mostly_dead)
{
    audit_spill sp;
    took t = {.text = ""};
    char big[300];

    cr_assert_eq(setenv("TMPDIR", "/tmp", 1), 0);
    memset(big, 'x', sizeof(big));
    audit_spill_init(&sp);
    sp.compact_at = 100;
    cr_assert_eq(audit_spill_put(&sp, "dead", big, sizeof(big)), 0);
    cr_assert_eq(audit_spill_put(&sp, "k", "one", 3), 0);
    cr_assert_eq(audit_spill_put(&sp, "other", "z", 1), 0);
    cr_assert_eq(audit_spill_put(&sp, "k", "two", 3), 0);
    cr_assert_eq(sp.size, 307);
    cr_assert_eq(audit_spill_take(&sp, "dead", fail_on_b, NULL), 0);
    cr_assert_eq(sp.live, 7);
    /* 300 dead bytes, 7 live: the next put compacts first */
    cr_assert_eq(audit_spill_put(&sp, "k", "three", 5), 0);
    cr_assert_eq(sp.size, 12, "%llu bytes: the dead ones are gone", (unsigned long long)sp.size);
    t.text[0] = '\0';
    cr_assert_eq(audit_spill_take(&sp, "k", collect, &t), 0);
    cr_assert_str_eq(t.text, "one|two|three|");
    t.text[0] = '\0';
    cr_assert_eq(audit_spill_take(&sp, "other", collect, &t), 0);
    cr_assert_str_eq(t.text, "z|");
    cr_assert_eq(sp.live, 0);
    /* below compact_at nothing moves */
    sp.compact_at = 1000;
    cr_assert_eq(audit_spill_put(&sp, "k", "four", 4), 0);
    cr_assert_eq(sp.size, 16);
    audit_spill_release(&sp);
}

Test(audit_spill, a_directory_that_cannot_hold_the_file_fails_the_put)
{
    audit_spill sp;

    cr_assert_eq(setenv("TMPDIR", "/nonexistent/ferry-spill", 1), 0);
    audit_spill_init(&sp);
    cr_assert_eq(audit_spill_put(&sp, "k", "data", 4), -ENOENT);
    cr_assert(strstr(sp.why, "temporary file") && strstr(sp.why, "/nonexistent/ferry-spill"), "%s",
              sp.why);
    cr_assert_not(audit_spill_holds(&sp, "k"));
    char err[300] = "";
    cr_assert_eq(audit_spill_error(&sp, -ENOENT, err, sizeof(err)), -ENOENT);
    cr_assert_str_eq(err, sp.why);
    audit_spill_release(&sp);
    err[0] = '\0';
    cr_assert_eq(audit_spill_error(&sp, -ENOMEM, err, sizeof(err)), -ENOMEM);
    cr_assert_str_eq(err, "", "not the file's failure: nothing said");
}

Test(audit_spill, records_round_trip_and_foreign_bytes_are_refused)
{
    ferry_buf b;
    audit_rec_reader rd;
    const char *s1, *s2, *s3;
    int64_t v = -42, w = 0;

    ferry_buf_init(&b, 4096, false);
    cr_assert_eq(audit_rec_put_str(&b, "arn:aws:iam::1:role/x"), 0);
    cr_assert_eq(audit_rec_put_str(&b, NULL), 0);
    cr_assert_eq(audit_rec_put_str(&b, ""), 0);
    cr_assert_eq(ferry_buf_append(&b, &v, sizeof(v)), 0);
    rd = (audit_rec_reader){b.data, b.len};
    cr_assert_eq(audit_rec_get_str(&rd, &s1), 0);
    cr_assert_eq(audit_rec_get_str(&rd, &s2), 0);
    cr_assert_eq(audit_rec_get_str(&rd, &s3), 0);
    cr_assert_eq(audit_rec_get(&rd, &w, sizeof(w)), 0);
    cr_assert_str_eq(s1, "arn:aws:iam::1:role/x");
    cr_assert_null(s2);
    cr_assert_str_eq(s3, "");
    cr_assert_eq(w, -42);
    cr_assert_eq(rd.left, 0);
    cr_assert_eq(audit_rec_get(&rd, &w, 1), -EIO, "past the end");

    /* cut anywhere inside the first string: refused */
    for (size_t cut = 0; cut < 4 + 22; cut++) {
        rd = (audit_rec_reader){b.data, cut};
        cr_assert_eq(audit_rec_get_str(&rd, &s1), -EIO, "cut at %zu", cut);
    }
    /* a NUL inside, or none at the end */
    b.data[6] = '\0';
    rd = (audit_rec_reader){b.data, b.len};
    cr_assert_eq(audit_rec_get_str(&rd, &s1), -EIO);
    b.data[6] = 'x';
    b.data[4 + 21] = 'y';
    rd = (audit_rec_reader){b.data, b.len};
    cr_assert_eq(audit_rec_get_str(&rd, &s1), -EIO);
    ferry_buf_release(&b);
}
