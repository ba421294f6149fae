/* audit/spill.c - records put aside in a temporary file under a key (audit-internal.h).
 *
 * A cloud keeps the cross-file records of the scope it is working on (an AWS account) in
 * memory and puts the others here, as one opaque segment per key and eviction; touching a key
 * again takes its segments back in the order they were put. The file is created on the first
 * put, in $TMPDIR (else /tmp), mode 0600 and unlinked at once (O_TMPFILE where the file system
 * has it), so nothing is left behind whatever ends the run. Segments are appended; once the
 * bytes of those taken back pass AUDIT_SPILL_COMPACT and twice the live ones, the live ones are
 * copied to a new file (spill_compact), so the file stays within three times what it holds
 * (and AUDIT_SPILL_MAX) whatever the order of puts and takes. The index (key -> segments) is a
 * few dozen bytes per key and per live segment.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit-internal.h"
#include "basic/errbuf.h"
#include "basic/fileio.h"
#include "ferry/error.h"

/* Dead bytes (segments taken back) before the file is compacted. */
#ifndef AUDIT_SPILL_COMPACT /* -DAUDIT_SPILL_COMPACT=0 compacts whenever most bytes are dead */
#define AUDIT_SPILL_COMPACT ((uint64_t)64 << 20)
#endif

/* The most the file may hold, and the largest segment. */
#define AUDIT_SPILL_MAX ((uint64_t)64 << 30)
#define AUDIT_SPILL_SEGMENT_MAX ((size_t)1 << 30)

struct audit_spill_seg {
    uint64_t off;
    uint32_t len;
    uint32_t next; /* the key's next segment, or the next free entry: index + 1, 0 none */
};

struct audit_spill_key {
    const char *key;      /* interned in keys; NULL = free slot */
    uint32_t first, last; /* segments: index + 1, 0 none */
};

void audit_spill_init(audit_spill *sp)
{
    *sp = (audit_spill){.fd = -1, .compact_at = AUDIT_SPILL_COMPACT};
    audit_strset_init(&sp->keys, (size_t)1 << 30);
}

void audit_spill_release(audit_spill *sp)
{
    if (!sp)
        return;
    if (sp->fd >= 0)
        (void)close(sp->fd);
    free(sp->segs);
    free(sp->slots);
    audit_strset_release(&sp->keys);
    audit_spill_init(sp);
}

/* Say what failed with the file (for the caller's error message) and return r. */
static int spill_failed(audit_spill *sp, const char *what, int r)
{
    (void)snprintf(sp->why, sizeof(sp->why), "%s the temporary file of audit records in %.120s: %s",
                   what, sp->dir ? sp->dir : "?", ferry_strerror(r));
    return r;
}

static int spill_open(audit_spill *sp)
{
    const char *dir = secure_getenv("TMPDIR");
    char *path = NULL;
    int fd;

    if (!dir || !*dir)
        dir = "/tmp";
    sp->dir = dir;
#ifdef O_TMPFILE
    fd = open(dir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        sp->fd = fd;
        return 0;
    }
#endif
    if (asprintf(&path, "%s/ferry-audit-XXXXXX", dir) < 0)
        return -ENOMEM;
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        free(path);
        return spill_failed(sp, "creating", -e);
    }
    (void)unlink(path);
    free(path);
    sp->fd = fd;
    return 0;
}

static size_t key_slot(const struct audit_spill_key *slots, size_t n_slots, const char *key)
{
    size_t mask = n_slots - 1, i = (size_t)(((uintptr_t)key * 0x9e3779b97f4a7c15ULL) >> 17) & mask;
    while (slots[i].key && slots[i].key != key)
        i = (i + 1) & mask;
    return i;
}

static struct audit_spill_key *key_find(const audit_spill *sp, const char *key)
{
    const char *k = sp->n_keys ? audit_strset_find(&sp->keys, key) : NULL;
    struct audit_spill_key *e;

    if (!k)
        return NULL;
    e = &sp->slots[key_slot(sp->slots, sp->n_slots, k)];
    return e->key ? e : NULL;
}

bool audit_spill_holds(const audit_spill *sp, const char *key)
{
    const struct audit_spill_key *e = key_find(sp, key);
    return e && e->first;
}

/* The entry of key, added when new. */
static int key_get(audit_spill *sp, const char *key, struct audit_spill_key **ret)
{
    const char *k;
    size_t at;
    int r;

    if ((*ret = key_find(sp, key)))
        return 0;
    if ((r = audit_strset_intern(&sp->keys, key, &k)) < 0)
        return r;
    if ((sp->n_keys + 1) * 2 > sp->n_slots) {
        size_t n = sp->n_slots ? sp->n_slots * 2 : 64;
        struct audit_spill_key *slots = calloc(n, sizeof(*slots));
        if (!slots)
            return -ENOMEM;
        for (size_t i = 0; i < sp->n_slots; i++)
            if (sp->slots[i].key)
                slots[key_slot(slots, n, sp->slots[i].key)] = sp->slots[i];
        free(sp->slots);
        sp->slots = slots;
        sp->n_slots = n;
    }
    at = key_slot(sp->slots, sp->n_slots, k);
    sp->slots[at] = (struct audit_spill_key){.key = k};
    sp->n_keys++;
    *ret = &sp->slots[at];
    return 0;
}

static int read_all(int fd, void *data, size_t len, uint64_t off)
{
    char *p = data;
    while (len) {
        ssize_t k = pread(fd, p, len, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0) /* the file is shorter than what was written to it */
            return -EIO;
        p += k;
        len -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

/* Copy the live segments to a new file and drop the old one (its dead bytes with it). */
static int spill_compact(audit_spill *sp)
{
    int old = sp->fd, r;
    uint64_t *offs = calloc(sp->n_segs ? sp->n_segs : 1, sizeof(*offs)), end = 0;
    char *buf = NULL;
    size_t alloc = 0;

    if (!offs)
        return -ENOMEM;
    sp->fd = -1;
    r = spill_open(sp);
    for (size_t i = 0; i < sp->n_slots && r == 0; i++) {
        uint32_t at = sp->slots[i].key ? sp->slots[i].first : 0;
        for (; at && r == 0; at = sp->segs[at - 1].next) {
            const struct audit_spill_seg *s = &sp->segs[at - 1];
            if (s->len > alloc) {
                char *p = realloc(buf, s->len);
                if (!p) {
                    r = -ENOMEM;
                    break;
                }
                buf = p;
                alloc = s->len;
            }
            if ((r = read_all(old, buf, s->len, s->off)) < 0)
                (void)spill_failed(sp, "reading", r);
            else if ((r = ferry_write_all(sp->fd, buf, s->len)) < 0)
                (void)spill_failed(sp, "writing to", r);
            offs[at - 1] = end;
            end += s->len;
        }
    }
    if (r == 0) {
        for (size_t i = 0; i < sp->n_slots; i++)
            for (uint32_t at = sp->slots[i].key ? sp->slots[i].first : 0; at;
                 at = sp->segs[at - 1].next)
                sp->segs[at - 1].off = offs[at - 1];
        (void)close(old);
        sp->size = end;
    } else {
        if (sp->fd >= 0)
            (void)close(sp->fd);
        sp->fd = old;
    }
    free(offs);
    free(buf);
    return r;
}

int audit_spill_put(audit_spill *sp, const char *key, const void *data, size_t len)
{
    struct audit_spill_key *e;
    uint32_t at;
    int r;

    if (len == 0)
        return 0;
    if (sp->fd < 0 && (r = spill_open(sp)) < 0)
        return r;
    if (sp->size - sp->live >= sp->compact_at && sp->size - sp->live > 2 * sp->live &&
        (r = spill_compact(sp)) < 0)
        return r;
    if (len > AUDIT_SPILL_SEGMENT_MAX || sp->size + len > AUDIT_SPILL_MAX)
        return spill_failed(sp, "growing", -FERRY_EFULL);
    if ((r = key_get(sp, key, &e)) < 0)
        return r;
    if (sp->free_seg) {
        at = sp->free_seg - 1;
        sp->free_seg = sp->segs[at].next;
    } else {
        if (sp->n_segs >= UINT32_MAX - 1)
            return -FERRY_EFULL;
        if ((r = audit_vec_room(&sp->segs, &sp->alloc_segs, sp->n_segs, sizeof(*sp->segs), 64,
                                UINT32_MAX - 1)) < 0) {
            return r;
        }
        at = (uint32_t)sp->n_segs++;
    }
    /* appended: the file's offset is its end (reads use pread, which leaves it alone) */
    r = ferry_write_all(sp->fd, data, len);
    if (r < 0) {
        (void)lseek(sp->fd, (off_t)sp->size, SEEK_SET); /* past a part written */
        sp->segs[at].next = sp->free_seg;
        sp->free_seg = at + 1;
        return spill_failed(sp, "writing to", r);
    }
    sp->segs[at] = (struct audit_spill_seg){.off = sp->size, .len = (uint32_t)len};
    sp->size += len;
    sp->live += len;
    if (e->last)
        sp->segs[e->last - 1].next = at + 1;
    else
        e->first = at + 1;
    e->last = at + 1;
    return 0;
}

int audit_spill_take(audit_spill *sp, const char *key,
                     int (*fn)(void *userdata, const char *data, size_t len), void *userdata)
{
    struct audit_spill_key *e = key_find(sp, key);
    uint32_t next;
    char *buf = NULL;
    size_t alloc = 0;
    int r = 0;

    if (!e)
        return 0;
    /* The chain is detached first: what fn puts under key again starts a new one. */
    next = e->first;
    e->first = e->last = 0;
    while (next) {
        uint32_t at = next - 1;
        struct audit_spill_seg s = sp->segs[at];
        next = s.next;
        sp->segs[at].next = sp->free_seg; /* forgotten, read or not */
        sp->free_seg = at + 1;
        sp->live -= s.len;
        if (r < 0)
            continue;
        if (s.len > alloc) {
            char *p = realloc(buf, s.len);
            if (!p) {
                r = -ENOMEM;
                continue;
            }
            buf = p;
            alloc = s.len;
        }
        r = read_all(sp->fd, buf, s.len, s.off);
        if (r < 0)
            (void)spill_failed(sp, "reading", r);
        else
            r = fn(userdata, buf, s.len);
    }
    free(buf);
    return r;
}

int audit_spill_error(const audit_spill *sp, int r, char *errbuf, size_t errlen)
{
    if (r < 0 && sp->why[0])
        return ferry_errbuf_set(errbuf, errlen, r, "%s", sp->why);
    return r;
}

/* ---- records: what the segments are made of ------------------------------------------------ */

int audit_rec_put_str(ferry_buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    uint32_t len = (uint32_t)n;
    int r;

    if (!s)
        len = UINT32_MAX; /* NULL */
    else if (n >= UINT32_MAX)
        return -FERRY_ETOOBIG;
    if ((r = ferry_buf_append(b, &len, sizeof(len))) < 0)
        return r;
    return s ? ferry_buf_append(b, s, n + 1) : 0;
}

int audit_rec_get(audit_rec_reader *rd, void *out, size_t n)
{
    if (rd->left < n)
        return -EIO;
    memcpy(out, rd->p, n);
    rd->p += n;
    rd->left -= n;
    return 0;
}

int audit_rec_get_str(audit_rec_reader *rd, const char **ret)
{
    uint32_t len;
    int r = audit_rec_get(rd, &len, sizeof(len));

    if (r < 0)
        return r;
    if (len == UINT32_MAX) {
        *ret = NULL;
        return 0;
    }
    if (rd->left <= len || rd->p[len] != '\0' || memchr(rd->p, '\0', len))
        return -EIO;
    *ret = rd->p;
    rd->p += (size_t)len + 1;
    rd->left -= (size_t)len + 1;
    return 0;
}
