/* audit/strset.c - a set of strings for the audit's cross-file records (audit-internal.h):
 * each distinct string stored once in chunks that never move, found through an open-addressing
 * table of pointers, so that equal strings are one pointer and a record holds 8 bytes a name.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "audit-internal.h"
#include "ferry/error.h"

/* Strings are packed into chunks of this size (a longer one gets a chunk of its own). */
#define STRSET_CHUNK (64 * 1024)

struct audit_strset_chunk {
    struct audit_strset_chunk *next;
    size_t size;
    char data[];
};

void audit_strset_init(audit_strset *t, size_t max_bytes)
{
    *t = (audit_strset){.max_bytes = max_bytes};
}

void audit_strset_release(audit_strset *t)
{
    struct audit_strset_chunk *ch, *next;

    if (!t)
        return;
    for (ch = t->chunks; ch; ch = next) {
        next = ch->next;
        free(ch);
    }
    free(t->slots);
    audit_strset_init(t, t->max_bytes);
}

/* FNV-1a, 64 bits. */
static uint64_t strset_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

static size_t strset_slot(const audit_strset *t, const char *s)
{
    size_t mask = t->n_slots - 1, i = (size_t)strset_hash(s) & mask;
    while (t->slots[i] && strcmp(t->slots[i], s) != 0)
        i = (i + 1) & mask;
    return i;
}

const char *audit_strset_find(const audit_strset *t, const char *s)
{
    return t->n_slots ? t->slots[strset_slot(t, s)] : NULL;
}

/* Double the slots (kept at most half full). */
static int strset_grow(audit_strset *t)
{
    audit_strset old = *t;
    size_t n = t->n_slots ? t->n_slots * 2 : 256;

    t->slots = calloc(n, sizeof(*t->slots));
    if (!t->slots) {
        t->slots = old.slots;
        return -ENOMEM;
    }
    t->n_slots = n;
    for (size_t i = 0; i < old.n_slots; i++)
        if (old.slots[i])
            t->slots[strset_slot(t, old.slots[i])] = old.slots[i];
    free(old.slots);
    return 0;
}

int audit_strset_intern(audit_strset *t, const char *s, const char **ret)
{
    size_t len = strlen(s) + 1, i;
    char *copy;

    if (t->n_slots && t->slots[i = strset_slot(t, s)]) {
        *ret = t->slots[i];
        return 0;
    }
    if ((t->n + 1) * 2 > t->n_slots && strset_grow(t) < 0)
        return -ENOMEM;
    if (!t->chunks || t->chunks->size - t->used < len) {
        size_t size = len > STRSET_CHUNK ? len : STRSET_CHUNK;
        struct audit_strset_chunk *ch;
        if (size > t->max_bytes || t->bytes > t->max_bytes - size)
            return -FERRY_EFULL;
        ch = malloc(sizeof(*ch) + size);
        if (!ch)
            return -ENOMEM;
        ch->size = size;
        t->bytes += size;
        if (t->chunks && size > STRSET_CHUNK) {
            /* a long string's own chunk goes behind the one being filled */
            ch->next = t->chunks->next;
            t->chunks->next = ch;
            copy = ch->data;
            goto store;
        }
        ch->next = t->chunks;
        t->chunks = ch;
        t->used = 0;
    }
    copy = t->chunks->data + t->used;
    t->used += len;
store:
    memcpy(copy, s, len);
    t->slots[strset_slot(t, s)] = copy;
    t->n++;
    *ret = copy;
    return 0;
}
