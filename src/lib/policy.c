/* policy.c - least-privilege policy: load, index, decide, explain.
 *
 * Reading order: the data structures (struct policy, struct smap, struct issuer_ix, the set),
 * then the glob language, then loading (one document at a time into a builder, every problem
 * recorded with its line), then the index, then decide and explain, then the store.
 *
 * Strings of a policy point into the parsed JSON document, which the set keeps alive; a grant
 * borrows them and holds a reference to the set. See docs/internals/policy.md.
 */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/macro.h"
#include "ferry/error.h"
#include "ferry/json.h"
#include "ferry/policy.h"

/* ---- data structures ------------------------------------------------------------------------ */

typedef enum cmatch {
    CM_EXACT = 1,
    CM_GLOB,
    CM_ONE_OF,
} cmatch;

/* A claim value of a rule, copied out of the document when the set is packed, so matching
 * compares bytes in the set's arena instead of walking jansson values. Same equality as
 * json_equal: same type, then same bytes (string), value (integer) or truth (boolean). */
typedef enum cv_type {
    CV_STR = 1,
    CV_INT,
    CV_TRUE,
    CV_FALSE,
} cv_type;

struct cval {
    const char *s; /* CV_STR: the string (in the arena), NUL-terminated */
    size_t len;    /* CV_STR: its length */
    int64_t i;     /* CV_INT */
    cv_type t;
};

struct claim_rule {
    const char **path; /* member names from the claims object down */
    size_t n_path;
    cmatch kind;
    const struct cval *vals; /* exact: one value; one_of: n_vals; glob: one CV_STR (the
                                pattern). NULL until the set is packed. */
    size_t n_vals;
    char *display;     /* the path for messages: "repository" or "kubernetes.io/namespace" */
    const json_t *value; /* exact: string/integer/boolean; one_of: array; glob: string */
};

/* Once packed (see pack_policy), the struct opens the policy's block and is followed at once
 * by the index key: the literal prefix (glob) or the subject (exact), NUL-terminated, so a key
 * compare needs no pointer from the struct. The members every candidate check reads are the
 * last ones, next to the key; what only a grant reads comes first. */
struct policy {
    const char *id;
    unsigned line;      /* line of the policy object */
    unsigned file;      /* index into set->files */
    const char *issuer; /* borrowed from the document, also once packed */
    char *prefix;       /* glob: the literal prefix (unescaped); owned until packed */
    size_t prefix_len;
    /* grant */
    const char **scopes;
    size_t n_scopes;
    const char **audiences;
    size_t n_audiences;
    int64_t max_ttl;
    const char **secrets;
    size_t n_secrets;
    ferry_policy_aws_role *aws;
    size_t n_aws;
    ferry_policy_azure_app *azure;
    size_t n_azure;
    const char **gcp;
    size_t n_gcp;
    /* match */
    const char *subject; /* exact subject or glob pattern */
    const char **match_aud; /* the identity must carry one of these audiences */
    size_t n_match_aud;
    struct claim_rule *claims;
    size_t n_claims;
    bool subject_glob;
    bool step_up;
};

/* The index key of a packed policy (see struct policy). */
#define POL_KEY(p) ((const char *)((p) + 1))

/* Open-addressing string map to lists of policy indices or refs: issuers, policy ids, and the
 * index maps while they are built (struct cmap is their finished form). Keys are borrowed
 * (from the documents or from the arena). */
struct sm_entry {
    const char *key; /* NULL = empty slot */
    size_t len;
    uint64_t hash;
    uint32_t *ids;
    uint32_t n, cap;
    uint32_t id0; /* ids[0], kept here so a single-policy entry costs no second cache line */
};

struct smap {
    struct sm_entry *slots;
    size_t cap; /* power of two, or 0 */
    size_t n;
};

/* The finished form of an index map: 16-byte slots, four to a cache line, holding the key's
 * hash and the first policy's ref. The key itself is that policy's subject (exact map) or
 * literal prefix (prefix map), in its block, which a hit reads next anyway; a probe that
 * finds no equal hash reads nothing else. */
#define CM_EMPTY UINT32_MAX

struct cm_slot {
    uint64_t hash;
    uint32_t ref0; /* the first policy (load order), or CM_EMPTY */
    uint32_t more; /* 0: ref0 is the only policy; else lists[more - 1] policies from
                      lists[more] on (ref0 first) */
};

struct cmap {
    struct cm_slot *slots; /* load at most 1/2 */
    size_t mask;           /* slots - 1 */
    uint32_t *lists;
    uint32_t *sigs; /* prefix map: sigs[i] is the suffix signature (glob_sig) of the policy
                       lists[i], so the glob policies sharing a literal prefix that cannot
                       match a subject are skipped without reading their blocks */
};

struct issuer_ix {
    const char *issuer;
    struct smap exact_b;  /* while building: subject -> policies with that exact subject */
    struct smap prefix_b; /* while building: literal prefix of a glob -> policies */
    struct cmap exact;    /* the same, finished */
    struct cmap prefix;
    uint64_t *pfilter;  /* one bit per hash of a literal prefix (a filter in front of prefix:
                           most probed lengths have no entry, and the bit array stays in
                           cache where the map's slots would not) */
    uint64_t pfmask;    /* bits - 1 */
    uint64_t *efilter;  /* the same in front of exact: a subject no policy names (half the
                           traffic of a busy issuer, typically) costs no slot load */
    uint64_t efmask;
    uint32_t *plens;    /* distinct prefix lengths, ascending */
    size_t n_plens;
    uint32_t *all;      /* every policy of the issuer, in load order (explain) */
    size_t n_all;
};

struct ferry_policy_set {
    atomic_long refs;
    json_t **docs;
    size_t n_docs;
    char **files;
    size_t n_files;
    struct policy *pol; /* load order; once packed, every pointer points into arena */
    size_t n_pol;
    unsigned char *arena; /* one block per policy, in load order, 64-byte aligned */
    size_t arena_len;
    uint32_t *blk;        /* blk[i]: the ref of pol[i]'s block (see POL) */
    struct smap issuers; /* issuer -> one id: the index into ix */
    struct issuer_ix *ix;
    size_t n_ix, cap_ix;
};

struct ferry_policy_builder {
    json_t **docs;
    size_t n_docs, cap_docs;
    char **files;
    size_t n_files, cap_files;
    struct policy *pol;
    size_t n_pol, cap_pol;
    size_t problems; /* problems recorded through this builder */
    bool finished;
};

struct ferry_policy_problems {
    ferry_policy_problem *v;
    size_t n, cap;
    bool overflowed;
};

struct ferry_policy_store {
    pthread_mutex_t mu;
    ferry_policy_set *cur;
};

/* A policy's ref: the offset of its block in the arena divided by the block alignment, so a
 * uint32_t reaches 256 GiB and refs sort in load order like the indices. */
#define BLOCK_ALIGN 64
#define POL(s, ref) \
    ((const struct policy *)(const void *)((s)->arena + (size_t)(ref) * BLOCK_ALIGN))

/* The one step-up method a policy can require (a keyword of the policy language, not a
 * secret: compared with strcmp). */
#define STEP_UP_METHOD "totp"

static const char *const secret_backends[] = { "vault", "azure-kv", "aws-sm", "aws-kms", "gcp-sm",
                                               "file" };

/* ---- small helpers -------------------------------------------------------------------------- */

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = UINT64_C(14695981039346656037);

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

static int grow(void **v, size_t *cap, size_t need, size_t size)
{
    size_t ncap;
    void *nv;

    if (need <= *cap)
        return 0;
    ncap = *cap ? *cap : 8;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / size)
            return -ENOMEM;
        ncap *= 2;
    }
    nv = realloc(*v, ncap * size);
    if (!nv)
        return -ENOMEM;
    *v = nv;
    *cap = ncap;
    return 0;
}

/* The length of the valid UTF-8 sequence (no overlongs, surrogates or values above U+10FFFF)
 * at s, or 0 when none starts there. */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned c = *s;
    size_t n = c < 0x80 ? 1 : c >= 0xf5 ? 0 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;

    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0) ||
        (c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
        return 0;
    return n;
}

/* Copy s into out for a message: at most 64 bytes, control bytes, DEL and bytes that are not
 * UTF-8 masked as '?', shortened (with "...") only between characters, so the message stays
 * UTF-8 (it goes into JSON: explain, error responses). */
static const char *quote(char *out, size_t outlen, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, o = 0, max = outlen - 1 < 64 ? outlen - 1 : 64;
    size_t cut[3] = { 0 }; /* out lengths before the last three characters written */

    while (u && u[i]) {
        size_t n = utf8_seq(u + i);
        if (o + (n ? n : 1) > max) {
            /* does not fit: end with "..." in place of as few characters as needed */
            for (int k = 2; k >= 0 && o + 3 > max; k--)
                o = cut[k];
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        cut[0] = cut[1];
        cut[1] = cut[2];
        cut[2] = o;
        if (n == 0 || u[i] < 0x20 || u[i] == 0x7f) {
            out[o++] = '?';
            i += n ? n : 1;
        } else {
            memcpy(out + o, u + i, n);
            o += n;
            i += n;
        }
    }
    out[o] = '\0';
    return out;
}

#define Q(s) quote((char[72]){ 0 }, 72, (s))

static bool has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* ---- string map ----------------------------------------------------------------------------- */

static void smap_release(struct smap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].ids);
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

static struct sm_entry *smap_find_h(const struct smap *m, const char *key, size_t len, uint64_t h)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = (size_t)h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct sm_entry *e = &m->slots[i];
        if (!e->key)
            return NULL;
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0)
            return e;
    }
}

static int smap_rehash(struct smap *m, size_t ncap)
{
    struct sm_entry *ns = calloc(ncap, sizeof(*ns));

    if (!ns)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        struct sm_entry *e = &m->slots[i];
        size_t j;
        if (!e->key)
            continue;
        for (j = (size_t)e->hash & (ncap - 1); ns[j].key; j = (j + 1) & (ncap - 1))
            ;
        ns[j] = *e;
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 0;
}

/* Append id to key's list, creating the entry. */
static int smap_add(struct smap *m, const char *key, size_t len, uint32_t id)
{
    uint64_t h = fnv1a(key, len);
    struct sm_entry *e = smap_find_h(m, key, len, h);
    int r;

    if (!e) {
        size_t j;
        if ((m->n + 1) * 2 > m->cap) { /* load factor at most 1/2 */
            r = smap_rehash(m, m->cap ? m->cap * 2 : 16);
            if (r < 0)
                return r;
        }
        for (j = (size_t)h & (m->cap - 1); m->slots[j].key; j = (j + 1) & (m->cap - 1))
            ;
        e = &m->slots[j];
        *e = (struct sm_entry){ .key = key, .len = len, .hash = h };
        m->n++;
    }
    if (e->n == e->cap) {
        uint32_t ncap = e->cap ? e->cap * 2 : 2;
        uint32_t *v = realloc(e->ids, ncap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        e->ids = v;
        e->cap = ncap;
    }
    e->ids[e->n++] = id;
    e->id0 = e->ids[0];
    return 0;
}

/* ---- problems ------------------------------------------------------------------------------- */

FERRY_EXPORT int ferry_policy_problems_new(ferry_policy_problems **ret_problems)
{
    ferry_policy_problems *p;

    if (!ret_problems)
        return -EINVAL;
    p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    *ret_problems = p;
    return 0;
}

FERRY_EXPORT void ferry_policy_problems_free(ferry_policy_problems *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++) {
        free((char *)p->v[i].file);
        free((char *)p->v[i].reason);
    }
    free(p->v);
    free(p);
}

FERRY_EXPORT size_t ferry_policy_problems_count(const ferry_policy_problems *p)
{
    return p ? p->n : 0;
}

FERRY_EXPORT const ferry_policy_problem *ferry_policy_problems_get(const ferry_policy_problems *p,
                                                                   size_t i)
{
    return p && i < p->n ? &p->v[i] : NULL;
}

/* Record one problem. Returns 0 or -ENOMEM. Past FERRY_POLICY_PROBLEMS_MAX, one last problem
 * says so and the rest are counted as recorded but not kept. */
_printf_(4, 5) static int problem_add(ferry_policy_problems *p, const char *file, unsigned line,
                                      const char *fmt, ...)
{
    char reason[512];
    char *f, *r;
    va_list ap;

    if (!p)
        return 0;
    if (p->overflowed)
        return 0;
    if (p->n == FERRY_POLICY_PROBLEMS_MAX) {
        p->overflowed = true;
        (void)snprintf(reason, sizeof(reason), "more than %d problems; the rest are not shown",
                       FERRY_POLICY_PROBLEMS_MAX);
    } else {
        va_start(ap, fmt);
        (void)vsnprintf(reason, sizeof(reason), fmt, ap);
        va_end(ap);
    }
    if (grow((void **)&p->v, &p->cap, p->n + 1, sizeof(*p->v)) < 0)
        return -ENOMEM;
    f = strdup(file ? file : "");
    r = strdup(reason);
    if (!f || !r) {
        free(f);
        free(r);
        return -ENOMEM;
    }
    p->v[p->n++] = (ferry_policy_problem){ .file = f, .line = line, .reason = r };
    return 0;
}

/* ---- glob language -------------------------------------------------------------------------- */

static size_t utf8_len(const unsigned char *s)
{
    size_t n = *s < 0x80 ? 1 : *s >= 0xf0 ? 4 : *s >= 0xe0 ? 3 : *s >= 0xc0 ? 2 : 1;

    for (size_t i = 1; i < n; i++)
        if (!s[i])
            return i;
    return n;
}

/* Valid UTF-8 (see utf8_seq)? */
static bool utf8_valid(const unsigned char *s)
{
    for (size_t n; *s; s += n)
        if (!(n = utf8_seq(s)))
            return false;
    return true;
}

static bool glob_escapable(char c)
{
    return c && strchr("*?\\[]{}", c) != NULL;
}

FERRY_EXPORT int ferry_policy_glob_check(const char *pattern, char *errbuf, size_t errlen)
{
    const char *why = NULL;
    size_t len;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!pattern)
        return -EINVAL;
    len = strlen(pattern);
    if (len == 0)
        why = "empty pattern";
    else if (len > FERRY_POLICY_STRING_MAX)
        why = "pattern longer than 1024 bytes";
    else if (!utf8_valid((const unsigned char *)pattern))
        why = "pattern is not valid UTF-8";
    for (const char *p = pattern; !why && *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            why = "control character in pattern";
        else if (*p == '\\') {
            if (!p[1])
                why = "trailing backslash";
            else if (!glob_escapable(p[1]))
                why = "backslash may only escape * ? \\ [ ] { }";
            else
                p++;
        } else if (*p == '*' && p[1] == '*')
            why = "'**' is not supported (a single '*' already matches across '/')";
        else if (strchr("[]{}", *p))
            why = "brackets and braces are not supported (escape them with '\\')";
    }
    if (why) {
        if (errbuf && errlen)
            (void)snprintf(errbuf, errlen, "%s", why);
        return -FERRY_EMALFORMED;
    }
    return 0;
}

FERRY_EXPORT bool ferry_policy_glob_match(const char *pattern, const char *text)
{
    const unsigned char *p = (const unsigned char *)pattern, *t = (const unsigned char *)text;
    const unsigned char *star_p = NULL, *star_t = NULL;

    if (!pattern || !text)
        return false;
    while (*t) {
        if (*p == '*') {
            star_p = ++p;
            star_t = t;
            continue;
        }
        if (*p == '?') {
            p++;
            t += utf8_len(t);
            continue;
        }
        if (*p) {
            const unsigned char *lit = *p == '\\' ? p + 1 : p;
            if (*lit == *t) {
                p = lit + 1;
                t++;
                continue;
            }
        }
        if (!star_p)
            return false;
        /* Let the last '*' take one more character and retry after it. */
        star_t += utf8_len(star_t);
        t = star_t;
        p = star_p;
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

static bool glob_has_wildcard(const char *g)
{
    for (; *g; g++) {
        if (*g == '\\' && g[1])
            g++;
        else if (*g == '*' || *g == '?')
            return true;
    }
    return false;
}

/* The unescaped literal prefix of a checked pattern, up to its first wildcard (new string). */
static char *glob_prefix(const char *g, size_t *ret_len)
{
    char *out = malloc(strlen(g) + 1);
    size_t n = 0;

    if (!out)
        return NULL;
    for (; *g && *g != '*' && *g != '?'; g++) {
        if (*g == '\\' && g[1])
            g++;
        out[n++] = *g;
    }
    out[n] = '\0';
    *ret_len = n;
    return out;
}

/* ---- loading: one document -------------------------------------------------------------- */

/* Context of one document being read. */
struct lctx {
    ferry_policy_builder *b;
    ferry_policy_problems *pr;
    const char *file;
    ferry_json_locs *locs;
    const char *pid;  /* id of the policy being read, for messages, or NULL */
    unsigned fileidx;
    size_t problems;  /* problems in this document */
    int oom;          /* -ENOMEM once recording failed */
};

_printf_(3, 4) static void prob(struct lctx *c, unsigned line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    int r;

    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->pid)
        r = problem_add(c->pr, c->file, line, "policy \"%s\": %s", Q(c->pid), msg);
    else
        r = problem_add(c->pr, c->file, line, "%s", msg);
    if (r < 0)
        c->oom = r;
    c->problems++;
}

/* Line of member key of obj (its value), or of obj itself when unknown. */
static unsigned line_of(const struct lctx *c, const json_t *obj, const char *key)
{
    unsigned l = c->locs ? ferry_json_locs_line(c->locs, obj, key) : 0;

    if (l == 0 && key && c->locs)
        l = ferry_json_locs_line(c->locs, obj, NULL);
    return l;
}

static unsigned line_idx(const struct lctx *c, const json_t *arr, size_t i)
{
    unsigned l = c->locs ? ferry_json_locs_line_index(c->locs, arr, i) : 0;

    return l ? l : line_of(c, arr, NULL);
}

/* Report every member of obj not in allowed (NULL-terminated). Returns false when any. */
static bool check_members(struct lctx *c, const json_t *obj, const char *const *allowed,
                          const char *where)
{
    const char *key;
    json_t *v;
    bool ok = true;

    json_object_foreach((json_t *)obj, key, v) {
        size_t i;
        for (i = 0; allowed[i]; i++)
            if (strcmp(key, allowed[i]) == 0)
                break;
        if (!allowed[i]) {
            prob(c, line_of(c, obj, key), "%s: unknown member \"%s\"", where, Q(key));
            ok = false;
        }
    }
    return ok;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* A string member: absent -> *ret NULL and true (or a problem when required). Checks length
 * (1..max) and control bytes. Returns false after reporting a problem. */
static bool get_str(struct lctx *c, const json_t *obj, const char *key, const char *where,
                    bool required, size_t max, const char **ret)
{
    json_t *v = json_object_get(obj, key);
    const char *s;

    *ret = NULL;
    if (!v) {
        if (required)
            prob(c, line_of(c, obj, NULL), "%s: missing member \"%s\"", where, key);
        return !required;
    }
    if (!json_is_string(v)) {
        prob(c, line_of(c, obj, key), "%s: \"%s\" must be a string, not %s", where, key,
             type_name(v));
        return false;
    }
    s = json_string_value(v);
    if (s[0] == '\0') {
        prob(c, line_of(c, obj, key), "%s: \"%s\" is empty", where, key);
        return false;
    }
    if (json_string_length(v) > max) {
        prob(c, line_of(c, obj, key), "%s: \"%s\" is longer than %zu bytes", where, key, max);
        return false;
    }
    if (has_ctl(s)) {
        prob(c, line_of(c, obj, key), "%s: \"%s\" contains a control character", where, key);
        return false;
    }
    *ret = s;
    return true;
}

/* A non-empty array member of at most FERRY_POLICY_LIST_MAX entries. absent -> *ret NULL. */
static bool get_array(struct lctx *c, const json_t *obj, const char *key, const char *where,
                      const json_t **ret)
{
    json_t *v = json_object_get(obj, key);

    *ret = NULL;
    if (!v)
        return true;
    if (!json_is_array(v)) {
        prob(c, line_of(c, obj, key), "%s: \"%s\" must be an array, not %s", where, key,
             type_name(v));
        return false;
    }
    if (json_array_size(v) == 0) {
        prob(c, line_of(c, obj, key), "%s: \"%s\" is an empty list (leave it out instead)",
             where, key);
        return false;
    }
    if (json_array_size(v) > FERRY_POLICY_LIST_MAX) {
        prob(c, line_of(c, obj, key), "%s: \"%s\" has more than %d entries", where, key,
             FERRY_POLICY_LIST_MAX);
        return false;
    }
    *ret = v;
    return true;
}

typedef bool (*str_check_fn)(struct lctx *c, unsigned line, const char *where, const char *s);

/* An array of distinct strings, each passing check (may be NULL). New array of borrowed
 * strings in *ret (NULL when absent). Returns false after reporting problems. */
static bool get_str_list(struct lctx *c, const json_t *obj, const char *key, const char *where,
                         size_t max, str_check_fn check, const char ***ret, size_t *ret_n)
{
    const json_t *arr;
    const char **out;
    bool ok = true;
    size_t n = 0;

    *ret = NULL;
    *ret_n = 0;
    if (!get_array(c, obj, key, where, &arr))
        return false;
    if (!arr)
        return true;
    out = calloc(json_array_size(arr), sizeof(*out));
    if (!out) {
        c->oom = -ENOMEM;
        return false;
    }
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        unsigned line = line_idx(c, arr, i);
        const char *s;
        bool dup = false;

        if (!json_is_string(v)) {
            prob(c, line, "%s: \"%s\" entries must be strings, not %s", where, key,
                 type_name(v));
            ok = false;
            continue;
        }
        s = json_string_value(v);
        if (!s[0] || json_string_length(v) > max || has_ctl(s)) {
            prob(c, line, "%s: \"%s\" entry is %s", where, key,
                 !s[0] ? "empty" : has_ctl(s) ? "not printable" : "too long");
            ok = false;
            continue;
        }
        if (check && !check(c, line, where, s)) {
            ok = false;
            continue;
        }
        for (size_t j = 0; j < n; j++)
            if (strcmp(out[j], s) == 0)
                dup = true;
        if (dup) {
            prob(c, line, "%s: \"%s\" lists \"%s\" twice", where, key, Q(s));
            ok = false;
            continue;
        }
        out[n++] = s;
    }
    if (!ok) {
        free(out);
        return false;
    }
    *ret = out;
    *ret_n = n;
    return true;
}

static bool check_scope(struct lctx *c, unsigned line, const char *where, const char *s)
{
    /* RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ) */
    for (const char *p = s; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch < 0x21 || ch == 0x22 || ch == 0x5c || ch > 0x7e) {
            prob(c, line, "%s: scope \"%s\" has a character RFC 6749 does not allow in a scope "
                          "(space, '\"', '\\' or non-ASCII)", where, Q(s));
            return false;
        }
    }
    return true;
}

static bool check_secret(struct lctx *c, unsigned line, const char *where, const char *s)
{
    const char *colon = strchr(s, ':');
    char err[128];
    size_t i;

    for (i = 0; colon && i < ARRAY_SIZE(secret_backends); i++)
        if (strlen(secret_backends[i]) == (size_t)(colon - s) &&
            strncmp(s, secret_backends[i], (size_t)(colon - s)) == 0)
            break;
    if (!colon || i == ARRAY_SIZE(secret_backends)) {
        prob(c, line, "%s: secret \"%s\" must start with a backend name: vault:, azure-kv:, "
                      "aws-sm:, aws-kms:, gcp-sm: or file:", where, Q(s));
        return false;
    }
    if (ferry_policy_glob_check(colon + 1, err, sizeof(err)) < 0) {
        prob(c, line, "%s: secret \"%s\": bad pattern: %s", where, Q(s), err);
        return false;
    }
    return true;
}

static bool all_in(const char *s, size_t n, const char *set)
{
    for (size_t i = 0; i < n; i++)
        if (!s[i] || !strchr(set, s[i]))
            return false;
    return true;
}

#define LOWER_DIGIT_DASH "abcdefghijklmnopqrstuvwxyz0123456789-"
#define DIGITS "0123456789"
#define HEX "0123456789abcdefABCDEF"

/* arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME (IAM role ARNs only). */
static bool valid_role_arn(const char *s)
{
    static const char *const prefixes[] = { "arn:aws:iam::", "arn:aws-cn:iam::",
                                            "arn:aws-us-gov:iam::" };
    static const char name_chars[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+=,.@_-";
    const char *p = NULL, *last;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(prefixes) && !p; i++)
        if (strncmp(s, prefixes[i], strlen(prefixes[i])) == 0)
            p = s + strlen(prefixes[i]);
    if (!p || strlen(s) > 2048 || !all_in(p, 12, DIGITS) || strncmp(p + 12, ":role/", 6) != 0)
        return false;
    p += 18;
    last = strrchr(p, '/');
    if (last) { /* path: segments of name characters separated by '/' */
        for (const char *q = p; q < last; q++)
            if (*q != '/' && !strchr(name_chars, *q))
                return false;
        if (strstr(p, "//"))
            return false;
        p = last + 1;
    }
    return strlen(p) >= 1 && strlen(p) <= 64 && all_in(p, strlen(p), name_chars);
}

static bool valid_guid(const char *s)
{
    static const unsigned groups[] = { 8, 4, 4, 4, 12 };

    if (strlen(s) != 36)
        return false;
    for (size_t g = 0, off = 0; g < 5; off += groups[g] + 1, g++)
        if (!all_in(s + off, groups[g], HEX) || (g < 4 && s[off + groups[g]] != '-'))
            return false;
    return true;
}

/* A GCP project id or service-account name: [a-z][a-z0-9-]{4,28}[a-z0-9]. */
static bool gcp_name(const char *s, size_t n)
{
    return n >= 6 && n <= 30 && s[0] >= 'a' && s[0] <= 'z' && all_in(s, n, LOWER_DIGIT_DASH) &&
           s[n - 1] != '-';
}

/* NAME@PROJECT.iam.gserviceaccount.com, NAME@PROJECT.appspot.gserviceaccount.com... see
 * docs/policy.md for the three accepted forms. */
static bool valid_gcp_sa(const char *s)
{
    const char *at = strchr(s, '@');
    const char *dom;
    size_t ln;

    if (!at || strchr(at + 1, '@'))
        return false;
    ln = (size_t)(at - s);
    dom = at + 1;
    if (strcmp(dom, "developer.gserviceaccount.com") == 0)
        return ln > 8 && strncmp(at - 8, "-compute", 8) == 0 && all_in(s, ln - 8, DIGITS);
    if (strcmp(dom, "appspot.gserviceaccount.com") == 0)
        return gcp_name(s, ln);
    {
        static const char suffix[] = ".iam.gserviceaccount.com";
        size_t dl = strlen(dom), sl = sizeof(suffix) - 1;
        if (dl <= sl || strcmp(dom + dl - sl, suffix) != 0)
            return false;
        return gcp_name(s, ln) && gcp_name(dom, dl - sl);
    }
}

static bool get_int(struct lctx *c, const json_t *obj, const char *key, const char *where,
                    long long min, long long max, const char *range_note, int64_t *ret)
{
    json_t *v = json_object_get(obj, key);

    if (!v) {
        prob(c, line_of(c, obj, NULL), "%s: missing member \"%s\"", where, key);
        return false;
    }
    if (!json_is_integer(v)) {
        prob(c, line_of(c, obj, key), "%s: \"%s\" must be an integer (seconds), not %s", where,
             key, type_name(v));
        return false;
    }
    if (json_integer_value(v) < min || json_integer_value(v) > max) {
        prob(c, line_of(c, obj, key), "%s: \"%s\" is %lld, outside %lld..%lld%s", where, key,
             (long long)json_integer_value(v), min, max, range_note);
        return false;
    }
    *ret = json_integer_value(v);
    return true;
}

static void claim_rules_free(struct claim_rule *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].path);
        free(v[i].display);
    }
    free(v);
}

static void policy_release(struct policy *p)
{
    free(p->prefix);
    free(p->match_aud);
    claim_rules_free(p->claims, p->n_claims);
    free(p->scopes);
    free(p->audiences);
    free(p->secrets);
    free(p->aws);
    free(p->azure);
    free(p->gcp);
    memset(p, 0, sizeof(*p));
}

static bool scalar_ok(const json_t *v)
{
    return json_is_string(v) || json_is_integer(v) || json_is_boolean(v);
}

static bool parse_claim_rule(struct lctx *c, const json_t *rule, unsigned line,
                             struct claim_rule *out)
{
    static const char *const members[] = { "claim", "exact", "glob", "one_of", NULL };
    static const char *const reserved[] = { "iss", "sub", "aud" };
    const char *where = "match.claims";
    json_t *claim, *exact, *glob, *one_of;
    size_t nkinds;
    char err[128];
    bool ok = true;

    memset(out, 0, sizeof(*out));
    if (!json_is_object(rule)) {
        prob(c, line, "%s: each entry must be an object, not %s", where, type_name(rule));
        return false;
    }
    ok = check_members(c, rule, members, where);
    claim = json_object_get(rule, "claim");
    exact = json_object_get(rule, "exact");
    glob = json_object_get(rule, "glob");
    one_of = json_object_get(rule, "one_of");
    /* the claim path */
    if (!claim) {
        prob(c, line, "%s: missing member \"claim\"", where);
        return false;
    }
    if (json_is_string(claim)) {
        out->n_path = 1;
    } else if (json_is_array(claim) && json_array_size(claim) >= 1 &&
               json_array_size(claim) <= FERRY_POLICY_CLAIM_PATH_MAX) {
        out->n_path = json_array_size(claim);
    } else {
        prob(c, line_of(c, rule, "claim"),
             "%s: \"claim\" must be a claim name or an array of 1 to %d member names",
             where, FERRY_POLICY_CLAIM_PATH_MAX);
        return false;
    }
    out->path = calloc(out->n_path, sizeof(*out->path));
    if (!out->path) {
        c->oom = -ENOMEM;
        return false;
    }
    {
        size_t dl = 0;
        for (size_t i = 0; i < out->n_path; i++) {
            json_t *m = json_is_string(claim) ? claim : json_array_get(claim, i);
            if (!json_is_string(m) || !json_string_value(m)[0] ||
                json_string_length(m) > 256 || has_ctl(json_string_value(m))) {
                prob(c, line_of(c, rule, "claim"),
                     "%s: claim names must be non-empty printable strings of at most 256 bytes",
                     where);
                return false;
            }
            out->path[i] = json_string_value(m);
            dl += json_string_length(m) + 1;
        }
        out->display = malloc(dl);
        if (!out->display) {
            c->oom = -ENOMEM;
            return false;
        }
        out->display[0] = '\0';
        for (size_t i = 0, off = 0; i < out->n_path; i++) {
            off += (size_t)snprintf(out->display + off, dl - off, "%s%s", i ? "/" : "",
                                    out->path[i]);
        }
    }
    if (out->n_path == 1)
        for (size_t i = 0; i < ARRAY_SIZE(reserved); i++)
            if (strcmp(out->path[0], reserved[i]) == 0) {
                prob(c, line_of(c, rule, "claim"),
                     "%s: claim \"%s\" is matched by match.%s, not by a claim rule", where,
                     reserved[i],
                     i == 0 ? "issuer" : i == 1 ? "subject or match.subject_glob" : "audience");
                ok = false;
            }
    nkinds = !!exact + !!glob + !!one_of;
    if (nkinds != 1) {
        prob(c, line, "%s: claim \"%s\" needs exactly one of \"exact\", \"glob\" or \"one_of\"%s",
             where, Q(out->display), nkinds > 1 ? " (more than one given)" : "");
        return false;
    }
    if (exact) {
        out->kind = CM_EXACT;
        out->value = exact;
        if (!scalar_ok(exact)) {
            prob(c, line_of(c, rule, "exact"),
                 "%s: \"exact\" must be a string, an integer or a boolean, not %s", where,
                 type_name(exact));
            return false;
        }
        if (json_is_string(exact) &&
            (json_string_length(exact) > FERRY_POLICY_STRING_MAX ||
             has_ctl(json_string_value(exact)))) {
            prob(c, line_of(c, rule, "exact"), "%s: \"exact\" is too long or not printable",
                 where);
            return false;
        }
    } else if (glob) {
        out->kind = CM_GLOB;
        out->value = glob;
        if (!json_is_string(glob)) {
            prob(c, line_of(c, rule, "glob"), "%s: \"glob\" must be a string, not %s", where,
                 type_name(glob));
            return false;
        }
        if (ferry_policy_glob_check(json_string_value(glob), err, sizeof(err)) < 0) {
            prob(c, line_of(c, rule, "glob"), "%s: bad glob \"%s\": %s", where,
                 Q(json_string_value(glob)), err);
            return false;
        }
        if (!glob_has_wildcard(json_string_value(glob))) {
            prob(c, line_of(c, rule, "glob"),
                 "%s: glob \"%s\" has no wildcard; use \"exact\" instead", where,
                 Q(json_string_value(glob)));
            return false;
        }
    } else {
        out->kind = CM_ONE_OF;
        out->value = one_of;
        if (!json_is_array(one_of) || json_array_size(one_of) == 0 ||
            json_array_size(one_of) > FERRY_POLICY_LIST_MAX) {
            prob(c, line_of(c, rule, "one_of"),
                 "%s: \"one_of\" must be a non-empty array of at most %d values%s", where,
                 FERRY_POLICY_LIST_MAX,
                 json_is_array(one_of) && json_array_size(one_of) == 0
                     ? " (an empty list matches nothing)" : "");
            return false;
        }
        for (size_t i = 0; i < json_array_size(one_of); i++) {
            json_t *v = json_array_get(one_of, i);
            if (!scalar_ok(v) || (json_is_string(v) && has_ctl(json_string_value(v)))) {
                prob(c, line_idx(c, one_of, i),
                     "%s: \"one_of\" values must be strings, integers or booleans", where);
                return false;
            }
            for (size_t j = 0; j < i; j++)
                if (json_equal(v, json_array_get(one_of, j))) {
                    prob(c, line_idx(c, one_of, i), "%s: \"one_of\" lists a value twice",
                         where);
                    return false;
                }
        }
    }
    return ok;
}

static bool parse_match(struct lctx *c, const json_t *m, struct policy *p)
{
    static const char *const members[] = { "issuer", "subject", "subject_glob", "audience",
                                           "claims", NULL };
    const char *where = "match";
    const char *subj = NULL, *sglob = NULL;
    const json_t *claims = NULL;
    char err[128];
    bool ok;

    ok = check_members(c, m, members, where);
    ok &= get_str(c, m, "issuer", where, true, FERRY_POLICY_STRING_MAX, &p->issuer);
    ok &= get_str(c, m, "subject", where, false, FERRY_POLICY_STRING_MAX, &subj);
    if (json_object_get(m, "subject_glob")) {
        sglob = NULL;
        if (!json_is_string(json_object_get(m, "subject_glob"))) {
            prob(c, line_of(c, m, "subject_glob"), "%s: \"subject_glob\" must be a string, not %s",
                 where, type_name(json_object_get(m, "subject_glob")));
            ok = false;
        } else {
            const char *g = json_string_value(json_object_get(m, "subject_glob"));
            if (ferry_policy_glob_check(g, err, sizeof(err)) < 0) {
                prob(c, line_of(c, m, "subject_glob"), "%s: bad glob \"%s\": %s", where, Q(g),
                     err);
                ok = false;
            } else if (!glob_has_wildcard(g)) {
                prob(c, line_of(c, m, "subject_glob"),
                     "%s: subject_glob \"%s\" has no wildcard; use \"subject\" instead", where,
                     Q(g));
                ok = false;
            } else {
                sglob = g;
            }
        }
    }
    if (json_object_get(m, "subject") && json_object_get(m, "subject_glob")) {
        prob(c, line_of(c, m, "subject_glob"),
             "%s: \"subject\" and \"subject_glob\" are both given; use one", where);
        ok = false;
    } else if (!json_object_get(m, "subject") && !json_object_get(m, "subject_glob")) {
        prob(c, line_of(c, m, NULL),
             "%s: needs \"subject\" (exact) or \"subject_glob\" (use \"*\" for any subject)",
             where);
        ok = false;
    }
    if (subj) {
        p->subject = subj;
    } else if (sglob) {
        p->subject = sglob;
        p->subject_glob = true;
        p->prefix = glob_prefix(sglob, &p->prefix_len);
        if (!p->prefix) {
            c->oom = -ENOMEM;
            return false;
        }
    }
    ok &= get_str_list(c, m, "audience", where, FERRY_POLICY_STRING_MAX, NULL, &p->match_aud,
                       &p->n_match_aud);
    if (!json_object_get(m, "claims"))
        return ok;
    if (!get_array(c, m, "claims", where, &claims))
        return false;
    if (json_array_size(claims) > FERRY_POLICY_CLAIMS_MAX) {
        prob(c, line_of(c, m, "claims"), "%s: more than %d claim rules", where,
             FERRY_POLICY_CLAIMS_MAX);
        return false;
    }
    p->claims = calloc(json_array_size(claims), sizeof(*p->claims));
    if (!p->claims) {
        c->oom = -ENOMEM;
        return false;
    }
    for (size_t i = 0; i < json_array_size(claims); i++) {
        struct claim_rule *cr = &p->claims[p->n_claims];
        unsigned line = line_idx(c, claims, i);
        bool rok = parse_claim_rule(c, json_array_get(claims, i), line, cr);

        p->n_claims++; /* owned either way; freed with the policy */
        if (!rok) {
            ok = false;
            continue;
        }
        for (size_t j = 0; j + 1 < p->n_claims; j++) {
            if (p->claims[j].display && strcmp(p->claims[j].display, cr->display) == 0 &&
                p->claims[j].n_path == cr->n_path) {
                prob(c, line, "match.claims: claim \"%s\" has two rules; combine them into one "
                              "(\"one_of\" for alternatives)", Q(cr->display));
                ok = false;
                break;
            }
        }
    }
    return ok;
}

/* One entry (an object whose members were checked: mok) of grant.aws, grant.azure or grant.gcp,
 * the i-th of arr: validate it and append it to p's list. Returns whether it was valid. */
typedef bool (*entry_fn)(struct lctx *c, const json_t *arr, size_t i, const json_t *e, bool mok,
                         struct policy *p);

static bool aws_entry(struct lctx *c, const json_t *arr, size_t i, const json_t *e, bool mok,
                      struct policy *p)
{
    const char *arn;
    int64_t dur = 0;
    bool eok = mok;

    eok &= get_str(c, e, "role_arn", "grant.aws", true, 2048, &arn);
    if (arn && !valid_role_arn(arn)) {
        prob(c, line_of(c, e, "role_arn"),
             "grant.aws: \"%s\" is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)",
             Q(arn));
        eok = false;
    }
    eok &= get_int(c, e, "session_duration", "grant.aws", 900, 43200,
                   " seconds (AWS STS limits)", &dur);
    if (eok && p->max_ttl > 0 && dur > p->max_ttl) {
        prob(c, line_of(c, e, "session_duration"),
             "grant.aws: session_duration %lld exceeds the policy's max_ttl %lld",
             (long long)dur, (long long)p->max_ttl);
        eok = false;
    }
    for (size_t j = 0; eok && j < p->n_aws; j++)
        if (strcmp(p->aws[j].role_arn, arn) == 0) {
            prob(c, line_idx(c, arr, i), "grant.aws: role \"%s\" listed twice", Q(arn));
            eok = false;
        }
    if (eok)
        p->aws[p->n_aws++] = (ferry_policy_aws_role){ arn, dur };
    return eok;
}

static bool azure_entry(struct lctx *c, const json_t *arr, size_t i, const json_t *e, bool mok,
                        struct policy *p)
{
    static const char *const nil = "00000000-0000-0000-0000-000000000000";
    const char *t, *cl;
    bool eok = mok;

    eok &= get_str(c, e, "tenant_id", "grant.azure", true, 64, &t);
    eok &= get_str(c, e, "client_id", "grant.azure", true, 64, &cl);
    if (t && (!valid_guid(t) || strcmp(t, nil) == 0)) {
        prob(c, line_of(c, e, "tenant_id"),
             "grant.azure: tenant_id \"%s\" is not a GUID (or is the nil GUID)", Q(t));
        eok = false;
    }
    if (cl && (!valid_guid(cl) || strcmp(cl, nil) == 0)) {
        prob(c, line_of(c, e, "client_id"),
             "grant.azure: client_id \"%s\" is not a GUID (or is the nil GUID)", Q(cl));
        eok = false;
    }
    for (size_t j = 0; eok && j < p->n_azure; j++)
        if (strcasecmp(p->azure[j].tenant_id, t) == 0 &&
            strcasecmp(p->azure[j].client_id, cl) == 0) {
            prob(c, line_idx(c, arr, i), "grant.azure: application listed twice");
            eok = false;
        }
    if (eok)
        p->azure[p->n_azure++] = (ferry_policy_azure_app){ t, cl };
    return eok;
}

static bool gcp_entry(struct lctx *c, const json_t *arr, size_t i, const json_t *e, bool mok,
                      struct policy *p)
{
    const char *sa;
    bool eok = mok;

    eok &= get_str(c, e, "service_account", "grant.gcp", true, 256, &sa);
    if (sa && !valid_gcp_sa(sa)) {
        prob(c, line_of(c, e, "service_account"),
             "grant.gcp: \"%s\" is not a service account e-mail "
             "(NAME@PROJECT.iam.gserviceaccount.com)", Q(sa));
        eok = false;
    }
    for (size_t j = 0; eok && j < p->n_gcp; j++)
        if (strcmp(p->gcp[j], sa) == 0) {
            prob(c, line_idx(c, arr, i), "grant.gcp: \"%s\" listed twice", Q(sa));
            eok = false;
        }
    if (eok)
        p->gcp[p->n_gcp++] = sa;
    return eok;
}

/* grant.KEY (where names it: "grant.aws"): an optional array of objects with the given
 * members, each checked and appended by fn to *v (allocated here, entries of size bytes). */
static bool parse_entries(struct lctx *c, const json_t *g, const char *key, const char *where,
                          const char *const *members, size_t size, void **v, entry_fn fn,
                          struct policy *p)
{
    const json_t *arr;
    bool ok = true;

    if (!get_array(c, g, key, "grant", &arr))
        return false;
    if (!arr)
        return true;
    *v = calloc(json_array_size(arr), size);
    if (!*v) {
        c->oom = -ENOMEM;
        return false;
    }
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *e = json_array_get(arr, i);

        if (!json_is_object(e)) {
            prob(c, line_idx(c, arr, i), "%s: entries must be objects, not %s", where,
                 type_name(e));
            ok = false;
            continue;
        }
        ok &= fn(c, arr, i, e, check_members(c, e, members, where), p);
    }
    return ok;
}

static bool parse_grant(struct lctx *c, const json_t *g, struct policy *p)
{
    static const char *const members[] = { "scopes", "audiences", "max_ttl", "secrets", "aws",
                                           "azure", "gcp", NULL };
    static const char *const am[] = { "role_arn", "session_duration", NULL };
    static const char *const zm[] = { "tenant_id", "client_id", NULL };
    static const char *const gm[] = { "service_account", NULL };
    const char *where = "grant";
    bool ok;

    ok = check_members(c, g, members, where);
    ok &= get_str_list(c, g, "scopes", where, 256, check_scope, &p->scopes, &p->n_scopes);
    ok &= get_str_list(c, g, "audiences", where, FERRY_POLICY_STRING_MAX, NULL, &p->audiences,
                       &p->n_audiences);
    ok &= get_int(c, g, "max_ttl", where, 1, FERRY_POLICY_TTL_MAX,
                  " seconds (the global maximum is 12 h)", &p->max_ttl);
    ok &= get_str_list(c, g, "secrets", where, FERRY_POLICY_STRING_MAX, check_secret,
                       &p->secrets, &p->n_secrets);
    ok &= parse_entries(c, g, "aws", "grant.aws", am, sizeof(*p->aws), (void **)&p->aws,
                        aws_entry, p);
    if (c->oom)
        return false;
    ok &= parse_entries(c, g, "azure", "grant.azure", zm, sizeof(*p->azure),
                        (void **)&p->azure, azure_entry, p);
    if (c->oom)
        return false;
    ok &= parse_entries(c, g, "gcp", "grant.gcp", gm, sizeof(*p->gcp), (void **)&p->gcp,
                        gcp_entry, p);
    if (c->oom)
        return false;

    if (ok && !p->n_scopes && !p->n_audiences && !p->n_secrets && !p->n_aws && !p->n_azure &&
        !p->n_gcp) {
        prob(c, line_of(c, g, NULL), "grant: grants nothing (no scopes, audiences, secrets or "
                                     "cloud roles)");
        ok = false;
    }
    return ok;
}

static bool valid_id(const char *s)
{
    static const char chars[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
    size_t n = strlen(s);

    return n >= 1 && n <= FERRY_POLICY_ID_MAX && isalnum((unsigned char)s[0]) &&
           all_in(s, n, chars);
}

/* The required object member key of the policy obj (at line), read by parse. */
static bool parse_section(struct lctx *c, const json_t *obj, const char *key, unsigned line,
                          bool (*parse)(struct lctx *, const json_t *, struct policy *),
                          struct policy *p)
{
    const json_t *v = json_object_get(obj, key);

    if (!json_is_object(v)) {
        prob(c, v ? line_of(c, obj, key) : line, "\"%s\" %s", key,
             v ? "must be an object" : "is missing");
        return false;
    }
    return parse(c, v, p);
}

static bool parse_policy(struct lctx *c, const json_t *obj, unsigned line, struct policy *p)
{
    static const char *const members[] = { "id", "description", "match", "grant", "step_up",
                                           NULL };
    const char *where = "policy";
    const char *desc, *step;
    bool ok;

    memset(p, 0, sizeof(*p));
    p->line = line;
    p->file = c->fileidx;
    c->pid = NULL;
    if (!json_is_object(obj)) {
        prob(c, line, "policies: each entry must be an object, not %s", type_name(obj));
        return false;
    }
    ok = get_str(c, obj, "id", where, true, FERRY_POLICY_ID_MAX, &p->id);
    if (p->id && !valid_id(p->id)) {
        prob(c, line_of(c, obj, "id"),
             "policy id \"%s\" must be 1 to 128 letters, digits, '.', '_' or '-', starting "
             "with a letter or digit", Q(p->id));
        ok = false;
        p->id = NULL;
    }
    c->pid = p->id;
    ok &= check_members(c, obj, members, where);
    ok &= get_str(c, obj, "description", where, false, FERRY_POLICY_STRING_MAX, &desc);
    ok &= get_str(c, obj, "step_up", where, false, 16, &step);
    if (step) {
        if (strcmp(step, STEP_UP_METHOD) == 0) {
            p->step_up = true;
        } else {
            prob(c, line_of(c, obj, "step_up"),
                 "step_up \"%s\" is not supported (the only step-up is \"totp\")", Q(step));
            ok = false;
        }
    }
    ok &= parse_section(c, obj, "match", line, parse_match, p);
    ok &= parse_section(c, obj, "grant", line, parse_grant, p);
    c->pid = NULL;
    return ok;
}

/* ---- the builder ---------------------------------------------------------------------------- */

FERRY_EXPORT int ferry_policy_builder_new(ferry_policy_builder **ret_builder)
{
    ferry_policy_builder *b;

    if (!ret_builder)
        return -EINVAL;
    b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    *ret_builder = b;
    return 0;
}

/* The parsed documents and the file names of a builder or a set. */
static void docs_files_free(json_t **docs, size_t n_docs, char **files, size_t n_files)
{
    for (size_t i = 0; i < n_docs; i++)
        json_decref(docs[i]);
    free(docs);
    for (size_t i = 0; i < n_files; i++)
        free(files[i]);
    free(files);
}

FERRY_EXPORT void ferry_policy_builder_free(ferry_policy_builder *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n_pol; i++)
        policy_release(&b->pol[i]);
    free(b->pol);
    docs_files_free(b->docs, b->n_docs, b->files, b->n_files);
    free(b);
}

/* Record a problem counted against the builder. */
_printf_(5, 6) static int bprob(ferry_policy_builder *b, ferry_policy_problems *pr,
                                const char *file, unsigned line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    b->problems++;
    return problem_add(pr, file, line, "%s", msg);
}

static int add_document(ferry_policy_builder *b, const char *name, const void *buf, size_t len,
                        ferry_policy_problems *pr)
{
    static const char *const members[] = { "$schema", "version", "description", "policies",
                                           NULL };
    struct lctx c = { .b = b, .pr = pr, .file = name };
    json_t *doc = NULL, *v;
    const json_t *pols;
    char err[FERRY_JSON_ERR_LEN];
    unsigned eline = 0;
    const char *desc;
    int r;

    if (!b || !name || (!buf && len) || !pr)
        return -EINVAL;
    if (b->finished)
        return -EINVAL;
    if (b->n_files >= FERRY_POLICY_FILES_MAX) {
        r = bprob(b, pr, name, 0, "more than %d policy files", FERRY_POLICY_FILES_MAX);
        return r < 0 ? r : -FERRY_EFULL;
    }
    if (grow((void **)&b->files, &b->cap_files, b->n_files + 1, sizeof(*b->files)) < 0 ||
        grow((void **)&b->docs, &b->cap_docs, b->n_docs + 1, sizeof(*b->docs)) < 0)
        return -ENOMEM;
    b->files[b->n_files] = strdup(name);
    if (!b->files[b->n_files])
        return -ENOMEM;
    c.fileidx = (unsigned)b->n_files++;

    r = ferry_json_parse_located(buf, len, FERRY_POLICY_FILE_MAX, FERRY_POLICY_JSON_DEPTH, &doc,
                                 &c.locs, &eline, err, sizeof(err));
    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        if (r == -FERRY_ETOOBIG && len > FERRY_POLICY_FILE_MAX)
            r = bprob(b, pr, name, 0, "file larger than %d bytes", FERRY_POLICY_FILE_MAX);
        else if (r == -FERRY_ETOOBIG)
            r = bprob(b, pr, name, eline, "nested deeper than %d levels (%s)",
                      FERRY_POLICY_JSON_DEPTH, err);
        else
            r = bprob(b, pr, name, eline, "not valid JSON: %s", err);
        return r < 0 ? r : -FERRY_ECONFIG;
    }
    b->docs[b->n_docs++] = doc; /* kept: policies point into it */

    if (!json_is_object(doc)) {
        prob(&c, 1, "the file must hold a JSON object {\"version\": 1, \"policies\": [...]}");
        goto out;
    }
    check_members(&c, doc, members, "file");
    (void)get_str(&c, doc, "description", "file", false, FERRY_POLICY_STRING_MAX, &desc);
    (void)get_str(&c, doc, "$schema", "file", false, FERRY_POLICY_STRING_MAX, &desc);
    v = json_object_get(doc, "version");
    if (!v)
        prob(&c, line_of(&c, doc, NULL), "missing member \"version\" (must be 1)");
    else if (!json_is_integer(v) || json_integer_value(v) != 1)
        prob(&c, line_of(&c, doc, "version"), "\"version\" must be the integer 1");
    pols = json_object_get(doc, "policies");
    if (!pols) {
        prob(&c, line_of(&c, doc, NULL), "missing member \"policies\"");
        goto out;
    }
    if (!json_is_array(pols)) {
        prob(&c, line_of(&c, doc, "policies"), "\"policies\" must be an array, not %s",
             type_name(pols));
        goto out;
    }
    if (json_array_size(pols) == 0) {
        prob(&c, line_of(&c, doc, "policies"), "\"policies\" is empty");
        goto out;
    }
    if (json_array_size(pols) > FERRY_POLICY_PER_FILE_MAX) {
        prob(&c, line_of(&c, doc, "policies"), "more than %d policies in one file",
             FERRY_POLICY_PER_FILE_MAX);
        goto out;
    }
    if (b->n_pol + json_array_size(pols) > FERRY_POLICY_TOTAL_MAX) {
        prob(&c, line_of(&c, doc, "policies"), "more than %d policies in all",
             FERRY_POLICY_TOTAL_MAX);
        goto out;
    }
    if (grow((void **)&b->pol, &b->cap_pol, b->n_pol + json_array_size(pols),
             sizeof(*b->pol)) < 0) {
        c.oom = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < json_array_size(pols) && !c.oom; i++) {
        struct policy *p = &b->pol[b->n_pol];
        unsigned line = line_idx(&c, pols, i);

        if (parse_policy(&c, json_array_get(pols, i), line, p)) {
            /* the same id twice in one file is found here; across files in finish */
            bool dup = false;
            for (size_t j = 0; j < b->n_pol; j++)
                if (b->pol[j].file == c.fileidx && strcmp(b->pol[j].id, p->id) == 0) {
                    prob(&c, line, "duplicate policy id \"%s\" (first at line %u)", Q(p->id),
                         b->pol[j].line);
                    dup = true;
                    break;
                }
            if (dup)
                policy_release(p);
            else
                b->n_pol++;
        } else {
            policy_release(p);
        }
    }
out:
    ferry_json_locs_free(c.locs);
    b->problems += c.problems;
    if (c.oom)
        return c.oom;
    return c.problems ? -FERRY_ECONFIG : 0;
}

FERRY_EXPORT int ferry_policy_builder_add_buffer(ferry_policy_builder *b, const char *name,
                                                 const void *buf, size_t len,
                                                 ferry_policy_problems *problems)
{
    return add_document(b, name, buf, len, problems);
}

/* Read a regular file opened as fd (taken: closed here) into a new buffer, at most max bytes.
 * Returns 0, -FERRY_ETOOBIG, -FERRY_EMALFORMED (not a regular file), -errno. */
static int read_fd_capped(int fd, size_t max, char **ret, size_t *ret_len)
{
    struct stat st;
    char *buf = NULL;
    size_t len = 0;
    int r = 0;

    if (fstat(fd, &st) < 0) {
        r = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = -FERRY_EMALFORMED;
        goto out;
    }
    if ((uintmax_t)st.st_size > max) {
        r = -FERRY_ETOOBIG;
        goto out;
    }
    {
        size_t cap = (size_t)st.st_size + 1; /* st_size <= max here */

        buf = malloc(cap);
        if (!buf) {
            r = -ENOMEM;
            goto out;
        }
        for (;;) {
            ssize_t n;

            if (len == cap) { /* the file grew while we read it */
                char *nb;
                if (cap > max) {
                    r = -FERRY_ETOOBIG;
                    break;
                }
                cap = cap > max / 2 ? max + 1 : cap * 2;
                nb = realloc(buf, cap);
                if (!nb) {
                    r = -ENOMEM;
                    break;
                }
                buf = nb;
            }
            n = read(fd, buf + len, cap - len);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                r = -errno;
                break;
            }
            if (n == 0)
                break;
            len += (size_t)n;
        }
    }
    if (r == 0 && len > max)
        r = -FERRY_ETOOBIG;
out:
    close(fd);
    if (r < 0) {
        free(buf);
        return r;
    }
    *ret = buf;
    *ret_len = len;
    return 0;
}

static int add_fd(ferry_policy_builder *b, const char *name, int fd, int open_errno,
                  ferry_policy_problems *pr)
{
    _cleanup_free_ char *buf = NULL;
    size_t len = 0;
    int r;

    if (fd < 0) {
        r = open_errno == ELOOP ? bprob(b, pr, name, 0, "is a symbolic link (not followed)")
                                : bprob(b, pr, name, 0, "cannot open: %s", strerror(open_errno));
        return r < 0 ? r : -FERRY_ECONFIG;
    }
    r = read_fd_capped(fd, FERRY_POLICY_FILE_MAX, &buf, &len);
    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        r = r == -FERRY_ETOOBIG ? bprob(b, pr, name, 0, "file larger than %d bytes",
                                        FERRY_POLICY_FILE_MAX)
            : r == -FERRY_EMALFORMED ? bprob(b, pr, name, 0, "not a regular file")
                                     : bprob(b, pr, name, 0, "cannot read: %s", strerror(-r));
        return r < 0 ? r : -FERRY_ECONFIG;
    }
    return add_document(b, name, buf, len, pr);
}

FERRY_EXPORT int ferry_policy_builder_add_file(ferry_policy_builder *b, const char *path,
                                               ferry_policy_problems *problems)
{
    int fd;

    if (!b || !path || !problems || b->finished)
        return -EINVAL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    return add_fd(b, path, fd, errno, problems);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool wanted_name(const char *n)
{
    size_t l = strlen(n);

    return n[0] != '.' && l > 5 && strcmp(n + l - 5, ".json") == 0 &&
           !(l >= 12 && strcmp(n + l - 12, ".schema.json") == 0);
}

FERRY_EXPORT int ferry_policy_builder_add_dir(ferry_policy_builder *b, const char *dir,
                                              ferry_policy_problems *problems)
{
    DIR *d;
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int r = 0, ret = 0;

    if (!b || !dir || !problems || b->finished)
        return -EINVAL;
    d = opendir(dir);
    if (!d) {
        r = -errno;
        b->problems++;
        if (problem_add(problems, dir, 0, "cannot open directory: %s", strerror(-r)) < 0)
            return -ENOMEM;
        return r;
    }
    errno = 0;
    while ((de = readdir(d))) {
        if (!wanted_name(de->d_name))
            continue;
        if (n >= FERRY_POLICY_FILES_MAX) {
            r = bprob(b, problems, dir, 0, "more than %d policy files",
                      FERRY_POLICY_FILES_MAX);
            ret = r < 0 ? r : -FERRY_EFULL;
            goto out;
        }
        if (grow((void **)&names, &cap, n + 1, sizeof(*names)) < 0 ||
            !(names[n] = strdup(de->d_name))) {
            ret = -ENOMEM;
            goto out;
        }
        n++;
    }
    if (errno) {
        r = -errno;
        ret = bprob(b, problems, dir, 0, "cannot read directory: %s", strerror(-r)) < 0 ? -ENOMEM
                                                                                       : r;
        goto out;
    }
    if (n > 1)
        qsort(names, n, sizeof(*names), cmp_str);
    for (size_t i = 0; i < n; i++) {
        size_t pl = strlen(dir) + strlen(names[i]) + 2;
        _cleanup_free_ char *path = malloc(pl);
        int fd;

        if (!path) {
            ret = -ENOMEM;
            goto out;
        }
        (void)snprintf(path, pl, "%s%s%s", dir,
                       dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/", names[i]);
        fd = openat(dirfd(d), names[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
        r = add_fd(b, path, fd, errno, problems);
        if (r == -ENOMEM || r == -FERRY_EFULL) {
            ret = r;
            goto out;
        }
        if (r < 0 && ret == 0)
            ret = r;
    }
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return ret;
}

/* ---- the set and its index ------------------------------------------------------------------ */

/* ---- packing: one contiguous block per policy ------------------------------------------- */

/* Once the set is complete, each policy is copied into one block of the set's arena: the
 * struct itself, then what matching reads (subject, literal prefix, audiences, claim rules
 * with their values), then what a grant reads (scopes, audiences, id, secrets, cloud roles),
 * then what only messages read. A candidate check so touches a few adjacent cache lines
 * instead of a dozen scattered heap blocks and jansson values. Two passes of the same code:
 * the first (base NULL) only measures. */
struct packer {
    unsigned char *base; /* NULL: measure */
    size_t off;
};

static void *pk_alloc(struct packer *k, size_t n, size_t align)
{
    void *p;

    k->off = (k->off + align - 1) & ~(align - 1);
    p = k->base ? k->base + k->off : NULL;
    k->off += n;
    return p;
}

static char *pk_str(struct packer *k, const char *s, size_t len)
{
    char *p = pk_alloc(k, len + 1, 1);

    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

static const char **pk_strs(struct packer *k, const char *const *v, size_t n)
{
    const char **out = n ? pk_alloc(k, n * sizeof(*out), _Alignof(const char *)) : NULL;

    for (size_t i = 0; i < n; i++) {
        const char *c = pk_str(k, v[i], strlen(v[i]));
        if (out)
            out[i] = c;
    }
    return out;
}

static void pk_cval(struct packer *k, const json_t *v, struct cval *out)
{
    struct cval c = { 0 };

    if (json_is_string(v)) {
        c.t = CV_STR;
        c.len = json_string_length(v);
        c.s = pk_str(k, json_string_value(v), c.len);
    } else if (json_is_integer(v)) {
        c.t = CV_INT;
        c.i = json_integer_value(v);
    } else {
        c.t = json_is_true(v) ? CV_TRUE : CV_FALSE; /* scalar_ok: a boolean */
    }
    if (out)
        *out = c;
}

/* Lay out p at k (aligned to BLOCK_ALIGN); when writing, the block's struct is p with every
 * pointer (but issuer and the claim values' jansson originals) into the block. */
static void pack_policy(struct packer *k, const struct policy *p)
{
    struct policy *q = pk_alloc(k, sizeof(*q), BLOCK_ALIGN);
    struct claim_rule *cr;
    const char *subject, *prefix, **match_aud;

    if (q)
        *q = *p;
    /* matching: the key first (POL_KEY) */
    prefix = p->prefix ? pk_str(k, p->prefix, p->prefix_len) : NULL;
    subject = pk_str(k, p->subject, strlen(p->subject));
    match_aud = pk_strs(k, p->match_aud, p->n_match_aud);
    cr = p->n_claims ? pk_alloc(k, p->n_claims * sizeof(*cr), _Alignof(struct claim_rule)) : NULL;
    for (size_t i = 0; i < p->n_claims; i++) {
        const struct claim_rule *o = &p->claims[i];
        const char **path = pk_strs(k, o->path, o->n_path);
        size_t nv = o->kind == CM_ONE_OF ? json_array_size(o->value) : 1;
        struct cval *vals = pk_alloc(k, nv * sizeof(*vals), _Alignof(struct cval));

        for (size_t j = 0; j < nv; j++)
            pk_cval(k, o->kind == CM_ONE_OF ? json_array_get(o->value, j) : o->value,
                    vals ? &vals[j] : NULL);
        if (cr) {
            cr[i] = *o;
            cr[i].path = path;
            cr[i].vals = vals;
            cr[i].n_vals = nv;
        }
    }
    if (q) {
        q->subject = subject;
        q->prefix = (char *)prefix;
        q->match_aud = match_aud;
        q->claims = cr;
    }
    /* granting */
    {
        const char **scopes = pk_strs(k, p->scopes, p->n_scopes);
        const char **audiences = pk_strs(k, p->audiences, p->n_audiences);
        const char *id = pk_str(k, p->id, strlen(p->id));
        const char **secrets = pk_strs(k, p->secrets, p->n_secrets);
        const char **gcp = pk_strs(k, p->gcp, p->n_gcp);
        ferry_policy_aws_role *aws =
            p->n_aws ? pk_alloc(k, p->n_aws * sizeof(*aws), _Alignof(ferry_policy_aws_role))
                     : NULL;
        ferry_policy_azure_app *azure =
            p->n_azure
                ? pk_alloc(k, p->n_azure * sizeof(*azure), _Alignof(ferry_policy_azure_app))
                : NULL;

        for (size_t i = 0; i < p->n_aws; i++) {
            const char *arn = pk_str(k, p->aws[i].role_arn, strlen(p->aws[i].role_arn));
            if (aws)
                aws[i] = (ferry_policy_aws_role){ arn, p->aws[i].session_duration };
        }
        for (size_t i = 0; i < p->n_azure; i++) {
            const char *t = pk_str(k, p->azure[i].tenant_id, strlen(p->azure[i].tenant_id));
            const char *c = pk_str(k, p->azure[i].client_id, strlen(p->azure[i].client_id));
            if (azure)
                azure[i] = (ferry_policy_azure_app){ t, c };
        }
        if (q) {
            q->scopes = scopes;
            q->audiences = audiences;
            q->id = id;
            q->secrets = secrets;
            q->gcp = gcp;
            q->aws = aws;
            q->azure = azure;
        }
    }
    /* messages only */
    for (size_t i = 0; i < p->n_claims; i++) {
        char *d = pk_str(k, p->claims[i].display, strlen(p->claims[i].display));
        if (cr)
            cr[i].display = d;
    }
}

/* Pack every policy of s into s->arena and point s->pol at the copies (the heap arrays of the
 * parse are freed). Returns 0, -ENOMEM or -FERRY_ETOOBIG (refs would overflow). */
static int pack_set(ferry_policy_set *s)
{
    struct packer k = { 0 };

    for (size_t i = 0; i < s->n_pol; i++)
        pack_policy(&k, &s->pol[i]);
    if (k.off / BLOCK_ALIGN >= CM_EMPTY)
        return -FERRY_ETOOBIG;
    s->arena_len = (k.off + BLOCK_ALIGN - 1) & ~(size_t)(BLOCK_ALIGN - 1);
    s->blk = calloc(s->n_pol ? s->n_pol : 1, sizeof(*s->blk));
    s->arena = aligned_alloc(BLOCK_ALIGN, s->arena_len ? s->arena_len : BLOCK_ALIGN);
    if (!s->blk || !s->arena) {
        free(s->blk);
        free(s->arena);
        s->blk = NULL;
        s->arena = NULL; /* the policies are still the parse's: set_free releases them */
        return -ENOMEM;
    }
    k = (struct packer){ .base = s->arena };
    for (size_t i = 0; i < s->n_pol; i++) {
        k.off = (k.off + BLOCK_ALIGN - 1) & ~(size_t)(BLOCK_ALIGN - 1);
        s->blk[i] = (uint32_t)(k.off / BLOCK_ALIGN);
        pack_policy(&k, &s->pol[i]);
        policy_release(&s->pol[i]);
        s->pol[i] = *POL(s, s->blk[i]);
    }
    return 0;
}

static void set_free(ferry_policy_set *s)
{
    for (size_t i = 0; i < s->n_ix; i++) {
        smap_release(&s->ix[i].exact_b);
        smap_release(&s->ix[i].prefix_b);
        free(s->ix[i].exact.slots);
        free(s->ix[i].exact.lists);
        free(s->ix[i].prefix.slots);
        free(s->ix[i].prefix.lists);
        free(s->ix[i].prefix.sigs);
        free(s->ix[i].pfilter);
        free(s->ix[i].efilter);
        free(s->ix[i].plens);
        free(s->ix[i].all);
    }
    free(s->ix);
    smap_release(&s->issuers);
    for (size_t i = 0; !s->arena && i < s->n_pol; i++) /* packed: all in the arena */
        policy_release(&s->pol[i]);
    free(s->pol);
    free(s->arena);
    free(s->blk);
    docs_files_free(s->docs, s->n_docs, s->files, s->n_files);
    free(s);
}

FERRY_EXPORT ferry_policy_set *ferry_policy_set_ref(ferry_policy_set *set)
{
    if (set)
        atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
    return set;
}

FERRY_EXPORT void ferry_policy_set_unref(ferry_policy_set *set)
{
    if (set && atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) == 1)
        set_free(set);
}

FERRY_EXPORT size_t ferry_policy_set_count(const ferry_policy_set *set)
{
    return set ? set->n_pol : 0;
}

FERRY_EXPORT int ferry_policy_set_get(const ferry_policy_set *set, size_t i,
                                      ferry_policy_info *ret_info)
{
    const struct policy *p;

    if (!set || !ret_info || i >= set->n_pol)
        return -EINVAL;
    p = &set->pol[i];
    *ret_info = (ferry_policy_info){
        .id = p->id,
        .file = set->files[p->file],
        .line = p->line,
        .issuer = p->issuer,
        .subject = p->subject,
        .subject_glob = p->subject_glob,
        .secrets = p->secrets,
        .n_secrets = p->n_secrets,
        .aws = p->aws,
        .n_aws = p->n_aws,
        .azure = p->azure,
        .n_azure = p->n_azure,
        .gcp = p->gcp,
        .n_gcp = p->n_gcp,
    };
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* A bit filter over the keys of m: 16 bits per key (at least 512), one bit set per key from
 * bits of its hash other than the slot index. Returns 0 or -ENOMEM. */
static int filter_make(const struct smap *m, uint64_t **ret_bits, uint64_t *ret_mask)
{
    size_t bits = 512;

    while (bits < m->n * 16)
        bits *= 2;
    *ret_bits = calloc(bits / 64, sizeof(uint64_t));
    if (!*ret_bits)
        return -ENOMEM;
    *ret_mask = bits - 1;
    for (size_t j = 0; j < m->cap; j++) {
        uint64_t h = m->slots[j].hash >> 20;
        if (m->slots[j].key)
            (*ret_bits)[(h & *ret_mask) / 64] |= UINT64_C(1) << (h & 63);
    }
    return 0;
}

static bool filter_has(const uint64_t *bits, uint64_t mask, uint64_t h)
{
    h >>= 20;
    return (bits[(h & mask) / 64] >> (h & 63)) & 1;
}

/* A glob's suffix signature: 0 when the text after its last wildcard is empty or longer than
 * 255 bytes, else that text's length (unescaped) in the top byte and 24 bits of its FNV-1a
 * below. Any subject the glob matches ends with that text (a literal matches one byte, and the
 * match ends where the subject does), so a subject whose tail does not give the same signature
 * cannot match. */
static uint32_t sig_of(const char *s, size_t n)
{
    return (uint32_t)n << 24 | (uint32_t)(fnv1a(s, n) & 0xffffff);
}

static uint32_t glob_sig(const char *g)
{
    char lit[255]; /* the length must fit the signature's top byte */
    size_t n = 0;

    for (; *g; g++) {
        if (*g == '*' || *g == '?') {
            n = 0;
            continue;
        }
        if (*g == '\\' && g[1])
            g++;
        if (n == sizeof(lit))
            return 0; /* too long to bother: the candidate is checked in full */
        lit[n++] = *g;
    }
    return n ? sig_of(lit, n) : 0;
}

/* Can a subject of length slen match a policy with signature sig? */
static bool sig_allows(uint32_t sig, const char *subject, size_t slen)
{
    size_t n = sig >> 24;

    return !sig || (slen >= n && sig_of(subject + slen - n, n) == sig);
}

/* Make the finished form of m (whose ids are refs). Returns 0 or -ENOMEM. */
static int cmap_from_smap(const ferry_policy_set *s, struct cmap *c, const struct smap *m,
                          bool prefix)
{
    size_t cap = 16, n_lists = 0, pos = 0;

    while (cap < m->n * 2)
        cap *= 2;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].n > 1)
            n_lists += 1 + m->slots[i].n;
    c->slots = malloc(cap * sizeof(*c->slots));
    c->lists = n_lists ? malloc(n_lists * sizeof(*c->lists)) : NULL;
    c->sigs = n_lists && prefix ? calloc(n_lists, sizeof(*c->sigs)) : NULL;
    if (!c->slots || (n_lists && !c->lists) || (n_lists && prefix && !c->sigs))
        return -ENOMEM; /* set_free frees what was allocated */
    c->mask = cap - 1;
    for (size_t i = 0; i < cap; i++)
        c->slots[i] = (struct cm_slot){ .ref0 = CM_EMPTY };
    for (size_t i = 0; i < m->cap; i++) {
        const struct sm_entry *e = &m->slots[i];
        size_t j;

        if (!e->key)
            continue;
        for (j = (size_t)e->hash & c->mask; c->slots[j].ref0 != CM_EMPTY; j = (j + 1) & c->mask)
            ;
        c->slots[j] = (struct cm_slot){ .hash = e->hash, .ref0 = e->ids[0] };
        if (e->n > 1) {
            c->lists[pos] = e->n;
            memcpy(&c->lists[pos + 1], e->ids, e->n * sizeof(*e->ids));
            for (uint32_t k = 0; prefix && k < e->n; k++)
                c->sigs[pos + 1 + k] = glob_sig(POL(s, e->ids[k])->subject);
            c->slots[j].more = (uint32_t)(pos + 1);
            pos += 1 + e->n;
        }
    }
    return 0;
}

static int build_index(ferry_policy_set *s)
{
    int r;

    for (size_t i = 0; i < s->n_pol; i++) {
        struct policy *p = &s->pol[i];
        size_t il = strlen(p->issuer);
        struct sm_entry *e = smap_find_h(&s->issuers, p->issuer, il, fnv1a(p->issuer, il));
        struct issuer_ix *ix;

        if (!e) {
            if (grow((void **)&s->ix, &s->cap_ix, s->n_ix + 1, sizeof(*s->ix)) < 0)
                return -ENOMEM;
            ix = &s->ix[s->n_ix];
            memset(ix, 0, sizeof(*ix));
            ix->issuer = p->issuer;
            r = smap_add(&s->issuers, p->issuer, il, (uint32_t)s->n_ix);
            if (r < 0)
                return r;
            s->n_ix++;
        } else {
            ix = &s->ix[e->ids[0]];
        }
        {
            uint32_t *v = realloc(ix->all, (ix->n_all + 1) * sizeof(*v));
            if (!v)
                return -ENOMEM;
            ix->all = v;
            ix->all[ix->n_all++] = (uint32_t)i;
        }
        if (!p->subject_glob) {
            r = smap_add(&ix->exact_b, p->subject, strlen(p->subject), s->blk[i]);
        } else {
            if (!smap_find_h(&ix->prefix_b, p->prefix, p->prefix_len,
                             fnv1a(p->prefix, p->prefix_len))) {
                uint32_t *v = realloc(ix->plens, (ix->n_plens + 1) * sizeof(*v));
                bool seen = false;
                if (!v)
                    return -ENOMEM;
                ix->plens = v;
                for (size_t j = 0; j < ix->n_plens; j++)
                    seen |= ix->plens[j] == p->prefix_len;
                if (!seen)
                    ix->plens[ix->n_plens++] = (uint32_t)p->prefix_len;
            }
            r = smap_add(&ix->prefix_b, p->prefix, p->prefix_len, s->blk[i]);
        }
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < s->n_ix; i++) {
        struct issuer_ix *ix = &s->ix[i];

        if (ix->n_plens > 1)
            qsort(ix->plens, ix->n_plens, sizeof(uint32_t), cmp_u32);
        r = filter_make(&ix->prefix_b, &ix->pfilter, &ix->pfmask);
        if (r < 0)
            return r;
        r = filter_make(&ix->exact_b, &ix->efilter, &ix->efmask);
        if (r < 0)
            return r;
        r = cmap_from_smap(s, &ix->exact, &ix->exact_b, false);
        if (r < 0)
            return r;
        r = cmap_from_smap(s, &ix->prefix, &ix->prefix_b, true);
        if (r < 0)
            return r;
        smap_release(&ix->exact_b);
        smap_release(&ix->prefix_b);
    }
    return 0;
}

FERRY_EXPORT int ferry_policy_builder_finish(ferry_policy_builder *b, ferry_policy_set **ret_set,
                                             ferry_policy_problems *problems)
{
    ferry_policy_set *s = NULL;
    struct smap ids = { 0 };
    int r = 0;

    if (!b || !ret_set || b->finished)
        return -EINVAL;
    b->finished = true;
    /* duplicate ids across files (within a file they were refused while reading) */
    for (size_t i = 0; i < b->n_pol; i++) {
        const struct policy *p = &b->pol[i];
        size_t len = strlen(p->id);
        struct sm_entry *e = smap_find_h(&ids, p->id, len, fnv1a(p->id, len));

        if (e) {
            const struct policy *first = &b->pol[e->ids[0]];
            r = bprob(b, problems, b->files[p->file], p->line,
                      "policy \"%s\": duplicate policy id (first in %s:%u)", Q(p->id),
                      b->files[first->file], first->line);
            if (r < 0)
                goto out;
            continue;
        }
        r = smap_add(&ids, p->id, len, (uint32_t)i);
        if (r < 0)
            goto out;
    }
    if (b->problems) {
        r = -FERRY_ECONFIG;
        goto out;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        r = -ENOMEM;
        goto out;
    }
    atomic_init(&s->refs, 1);
    /* move everything from the builder */
    s->docs = TAKE_PTR(b->docs);
    s->n_docs = b->n_docs;
    b->n_docs = 0;
    s->files = TAKE_PTR(b->files);
    s->n_files = b->n_files;
    b->n_files = 0;
    s->pol = TAKE_PTR(b->pol);
    s->n_pol = b->n_pol;
    b->n_pol = 0;
    r = pack_set(s);
    if (r < 0)
        goto out;
    r = build_index(s);
    if (r < 0)
        goto out;
    *ret_set = TAKE_PTR(s);
out:
    smap_release(&ids);
    if (s)
        set_free(s);
    return r;
}

/* add (add_dir or add_file) src, then finish. A problem recorded while adding still goes on to
 * finish, which reports the set's other problems too and returns -FERRY_ECONFIG. */
static int load_with(int (*add)(ferry_policy_builder *, const char *, ferry_policy_problems *),
                     const char *src, ferry_policy_set **ret_set, ferry_policy_problems *problems)
{
    ferry_policy_problems *own = NULL;
    ferry_policy_builder *b = NULL;
    int r;

    if (!src || !ret_set)
        return -EINVAL;
    if (!problems) {
        r = ferry_policy_problems_new(&own);
        if (r < 0)
            return r;
        problems = own;
    }
    r = ferry_policy_builder_new(&b);
    if (r < 0)
        goto out;
    r = add(b, src, problems);
    if (r < 0 && r != -FERRY_ECONFIG && r != -FERRY_EFULL)
        goto out; /* -ENOMEM, or a directory that cannot be read */
    r = ferry_policy_builder_finish(b, ret_set, problems);
out:
    ferry_policy_builder_free(b);
    ferry_policy_problems_free(own);
    return r;
}

FERRY_EXPORT int ferry_policy_load_dir(const char *dir, ferry_policy_set **ret_set,
                                       ferry_policy_problems *problems)
{
    return load_with(ferry_policy_builder_add_dir, dir, ret_set, problems);
}

FERRY_EXPORT int ferry_policy_load_file(const char *path, ferry_policy_set **ret_set,
                                        ferry_policy_problems *problems)
{
    return load_with(ferry_policy_builder_add_file, path, ret_set, problems);
}

/* ---- matching ------------------------------------------------------------------------------- */

typedef enum fail_kind {
    FAIL_NONE = 0,
    FAIL_ISSUER,
    FAIL_SUBJECT,
    FAIL_AUDIENCE,
    FAIL_CLAIM,
} fail_kind;

static const char *const fail_names[] = { "", "issuer", "subject", "audience", "claim" };

static const json_t *claim_lookup(const json_t *claims, const struct claim_rule *cr)
{
    const json_t *v = claims;

    for (size_t i = 0; i < cr->n_path && v; i++)
        v = json_is_object(v) ? json_object_get(v, cr->path[i]) : NULL;
    return v;
}

/* json_equal(v, the value c was copied from), without touching the policy's document. */
static bool cval_equal(const struct cval *c, const json_t *v)
{
    switch (c->t) {
    case CV_STR:
        return json_is_string(v) && json_string_length(v) == c->len &&
               memcmp(json_string_value(v), c->s, c->len) == 0;
    case CV_INT:
        return json_is_integer(v) && json_integer_value(v) == c->i;
    case CV_TRUE:
        return json_is_true(v);
    case CV_FALSE:
        return json_is_false(v);
    }
    return false;
}

static bool scalar_matches(const struct claim_rule *cr, const json_t *v)
{
    switch (cr->kind) {
    case CM_EXACT:
        return cval_equal(&cr->vals[0], v);
    case CM_GLOB: /* the whole value: a NUL inside would end it early for the matcher */
        return json_is_string(v) &&
               !memchr(json_string_value(v), '\0', json_string_length(v)) &&
               ferry_policy_glob_match(cr->vals[0].s, json_string_value(v));
    case CM_ONE_OF:
        for (size_t i = 0; i < cr->n_vals; i++)
            if (cval_equal(&cr->vals[i], v))
                return true;
        return false;
    }
    return false;
}

/* A claim holds when its value matches, or, for an array claim (e.g. "groups"), when one of
 * its elements does. */
static bool claim_holds(const struct claim_rule *cr, const json_t *v)
{
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (scalar_matches(cr, json_array_get(v, i)))
                return true;
        return false;
    }
    return scalar_matches(cr, v);
}

/* Is a (a JSON string, whole: a NUL inside does not end it) equal to want? */
static bool json_str_is(const json_t *a, const char *want)
{
    return json_is_string(a) && strcmp(json_string_value(a), want) == 0 &&
           json_string_length(a) == strlen(want);
}

static bool identity_has_audience(const json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return json_str_is(aud, want);
    for (size_t i = 0; i < json_array_size(aud); i++)
        if (json_str_is(json_array_get(aud, i), want))
            return true;
    return false;
}

/* Does p match the identity? On failure, detail (when non-NULL) says why in one line.
 * indexed: p came from the index for this issuer and subject, so the issuer and an exact
 * subject are already known to be equal. */
static fail_kind policy_match(const struct policy *p, const ferry_policy_request *req,
                              bool indexed, char *detail, size_t dlen)
{
    if (!indexed && strcmp(p->issuer, req->issuer) != 0) {
        if (detail)
            (void)snprintf(detail, dlen, "issuer is \"%s\"", Q(p->issuer));
        return FAIL_ISSUER;
    }
    if (p->subject_glob ? !ferry_policy_glob_match(p->subject, req->subject)
                        : !indexed && strcmp(p->subject, req->subject) != 0) {
        if (detail)
            (void)snprintf(detail, dlen, "subject does not %s \"%s\"",
                           p->subject_glob ? "match the glob" : "equal", Q(p->subject));
        return FAIL_SUBJECT;
    }
    if (p->n_match_aud) {
        bool any = false;
        for (size_t i = 0; i < p->n_match_aud && !any; i++)
            any = identity_has_audience(req->audience, p->match_aud[i]);
        if (!any) {
            if (detail)
                (void)snprintf(detail, dlen, "token audience contains none of the %zu "
                                             "audiences of the policy (first \"%s\")",
                               p->n_match_aud, Q(p->match_aud[0]));
            return FAIL_AUDIENCE;
        }
    }
    for (size_t i = 0; i < p->n_claims; i++) {
        const struct claim_rule *cr = &p->claims[i];
        const json_t *v = claim_lookup(req->claims, cr);

        if (!v || !claim_holds(cr, v)) {
            if (detail) {
                if (!v)
                    (void)snprintf(detail, dlen, "claim \"%s\" is missing", Q(cr->display));
                else
                    (void)snprintf(detail, dlen, "claim \"%s\" does not %s", Q(cr->display),
                                   cr->kind == CM_EXACT ? "equal the required value"
                                   : cr->kind == CM_GLOB ? "match the glob"
                                                         : "equal any of the listed values");
            }
            return FAIL_CLAIM;
        }
    }
    return FAIL_NONE;
}

/* ---- deciding ------------------------------------------------------------------------------- */

static bool list_has(const char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

/* Can the policies ids[0..n) (refs, see POL) together grant req? On success *ret_aud is the
 * audience chosen when none was requested (NULL when none is granted either). */
static ferry_policy_error evaluate(const ferry_policy_set *s, const uint32_t *ids, size_t n,
                                   const ferry_policy_request *req, const char **ret_aud,
                                   char *reason, size_t rlen)
{
    const char *first = NULL;

    *ret_aud = NULL;
    for (size_t i = 0; i < req->n_scopes; i++) {
        bool found = false;
        for (size_t j = 0; j < n && !found; j++)
            found = list_has(POL(s, ids[j])->scopes, POL(s, ids[j])->n_scopes, req->scopes[i]);
        if (!found) {
            (void)snprintf(reason, rlen, "scope \"%s\" is not granted by any matching policy",
                           Q(req->scopes[i]));
            return FERRY_POLICY_INVALID_SCOPE;
        }
    }
    for (size_t i = 0; i < req->n_audiences; i++) {
        bool found = false;
        for (size_t j = 0; j < n && !found; j++)
            found = list_has(POL(s, ids[j])->audiences, POL(s, ids[j])->n_audiences,
                             req->audiences[i]);
        if (!found) {
            (void)snprintf(reason, rlen,
                           "audience \"%s\" is not granted by any matching policy",
                           Q(req->audiences[i]));
            return FERRY_POLICY_INVALID_TARGET;
        }
    }
    if (req->n_audiences)
        return FERRY_POLICY_GRANTED;
    for (size_t j = 0; j < n; j++) {
        const struct policy *p = POL(s, ids[j]);
        for (size_t k = 0; k < p->n_audiences; k++) {
            if (!first) {
                first = p->audiences[k];
            } else if (strcmp(first, p->audiences[k]) != 0) {
                (void)snprintf(reason, rlen,
                               "no audience requested and several are granted (\"%s\", "
                               "\"%s\"...); request one",
                               Q(first), Q(p->audiences[k]));
                return FERRY_POLICY_INVALID_TARGET;
            }
        }
    }
    *ret_aud = first;
    return FERRY_POLICY_GRANTED;
}

static bool contributes(const struct policy *p, const ferry_policy_request *req, const char *aud)
{
    if (p->n_secrets || p->n_aws || p->n_azure || p->n_gcp)
        return true;
    for (size_t i = 0; i < req->n_scopes; i++)
        if (list_has(p->scopes, p->n_scopes, req->scopes[i]))
            return true;
    for (size_t i = 0; i < req->n_audiences; i++)
        if (list_has(p->audiences, p->n_audiences, req->audiences[i]))
            return true;
    return aud && list_has(p->audiences, p->n_audiences, aud);
}

#define ALIGN_UP(x) (((x) + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1))

/* Build the grant from the matching policies ids[0..n) (refs). */
static int build_grant(const ferry_policy_set *s, const uint32_t *ids, size_t n,
                       const ferry_policy_request *req, const char *aud,
                       ferry_policy_grant **ret)
{
    size_t n_sec = 0, n_aws = 0, n_az = 0, n_gcp = 0, n_contrib = 0;
    size_t o_pol, o_sc, o_aud, o_sec, o_aws, o_az, o_gcp, total;
    ferry_policy_grant *g;
    unsigned char *base;
    bool any_contrib = false;

    for (size_t j = 0; j < n; j++) {
        const struct policy *p = POL(s, ids[j]);
        n_sec += p->n_secrets;
        n_aws += p->n_aws;
        n_az += p->n_azure;
        n_gcp += p->n_gcp;
        if (contributes(p, req, aud))
            any_contrib = true;
    }
    o_pol = ALIGN_UP(sizeof(*g));
    o_sc = ALIGN_UP(o_pol + n * sizeof(char *));
    o_aud = ALIGN_UP(o_sc + req->n_scopes * sizeof(char *));
    o_sec = ALIGN_UP(o_aud + (req->n_audiences ? req->n_audiences : 1) * sizeof(char *));
    o_aws = ALIGN_UP(o_sec + n_sec * sizeof(char *));
    o_az = ALIGN_UP(o_aws + n_aws * sizeof(ferry_policy_aws_role));
    o_gcp = ALIGN_UP(o_az + n_az * sizeof(ferry_policy_azure_app));
    total = o_gcp + n_gcp * sizeof(char *);
    base = calloc(1, total);
    if (!base)
        return -ENOMEM;
    g = (ferry_policy_grant *)base;
    g->policies = (const char **)(base + o_pol);
    g->scopes = (const char **)(base + o_sc);
    g->audiences = (const char **)(base + o_aud);
    g->secrets = (const char **)(base + o_sec);
    g->aws = (ferry_policy_aws_role *)(base + o_aws);
    g->azure = (ferry_policy_azure_app *)(base + o_az);
    g->gcp = (const char **)(base + o_gcp);
    g->ttl = INT64_MAX;

    for (size_t j = 0; j < n; j++) {
        const struct policy *p = POL(s, ids[j]);

        /* with no contributor at all, every matching policy counts (TTL and ids) */
        if (any_contrib && !contributes(p, req, aud))
            continue;
        n_contrib++;
        g->policies[g->n_policies++] = p->id;
        if (p->max_ttl < g->ttl)
            g->ttl = p->max_ttl;
        if (p->step_up)
            g->step_up = true;
        for (size_t k = 0; k < p->n_secrets; k++)
            if (!list_has(g->secrets, g->n_secrets, p->secrets[k]))
                g->secrets[g->n_secrets++] = p->secrets[k];
        for (size_t k = 0; k < p->n_aws; k++) {
            size_t m;
            for (m = 0; m < g->n_aws; m++)
                if (strcmp(g->aws[m].role_arn, p->aws[k].role_arn) == 0)
                    break;
            if (m == g->n_aws)
                g->aws[g->n_aws++] = p->aws[k];
            else if (p->aws[k].session_duration < g->aws[m].session_duration)
                g->aws[m].session_duration = p->aws[k].session_duration;
        }
        for (size_t k = 0; k < p->n_azure; k++) {
            size_t m;
            for (m = 0; m < g->n_azure; m++)
                if (strcasecmp(g->azure[m].tenant_id, p->azure[k].tenant_id) == 0 &&
                    strcasecmp(g->azure[m].client_id, p->azure[k].client_id) == 0)
                    break;
            if (m == g->n_azure)
                g->azure[g->n_azure++] = p->azure[k];
        }
        for (size_t k = 0; k < p->n_gcp; k++)
            if (!list_has(g->gcp, g->n_gcp, p->gcp[k]))
                g->gcp[g->n_gcp++] = p->gcp[k];
    }
    /* Nothing in a grant outlives its TTL: a role granted by a policy with a longer cap than
     * another contributor's gets the grant's TTL as its session (below AWS's 900 s floor
     * when the TTL is: the credential request then fails closed rather than outliving it). */
    for (size_t m = 0; m < g->n_aws; m++)
        if (g->aws[m].session_duration > g->ttl)
            g->aws[m].session_duration = g->ttl;
    for (size_t i = 0; i < req->n_scopes; i++)
        if (!list_has(g->scopes, g->n_scopes, req->scopes[i]))
            g->scopes[g->n_scopes++] = req->scopes[i];
    for (size_t i = 0; i < req->n_audiences; i++)
        if (!list_has(g->audiences, g->n_audiences, req->audiences[i]))
            g->audiences[g->n_audiences++] = req->audiences[i];
    if (!req->n_audiences && aud)
        g->audiences[g->n_audiences++] = aud;
    /* The requested strings are the caller's: point at the set's copies instead, so the
     * grant outlives the request. */
    for (size_t i = 0; i < g->n_scopes; i++)
        for (size_t j = 0; j < n; j++) {
            const struct policy *p = POL(s, ids[j]);
            size_t k;
            for (k = 0; k < p->n_scopes && strcmp(p->scopes[k], g->scopes[i]) != 0; k++)
                ;
            if (k < p->n_scopes) {
                g->scopes[i] = p->scopes[k];
                break;
            }
        }
    for (size_t i = 0; i < g->n_audiences; i++)
        for (size_t j = 0; j < n; j++) {
            const struct policy *p = POL(s, ids[j]);
            size_t k;
            for (k = 0; k < p->n_audiences && strcmp(p->audiences[k], g->audiences[i]) != 0;
                 k++)
                ;
            if (k < p->n_audiences) {
                g->audiences[i] = p->audiences[k];
                break;
            }
        }
    (void)n_contrib;
    g->set_ = ferry_policy_set_ref((ferry_policy_set *)s);
    *ret = g;
    return 0;
}

FERRY_EXPORT void ferry_policy_grant_free(ferry_policy_grant *g)
{
    if (!g)
        return;
    ferry_policy_set_unref(g->set_);
    free(g);
}

static const struct issuer_ix *find_issuer(const ferry_policy_set *s, const char *issuer)
{
    size_t len = strlen(issuer);
    const struct sm_entry *e = smap_find_h(&s->issuers, issuer, len, fnv1a(issuer, len));

    return e ? &s->ix[e->ids[0]] : NULL;
}

struct idlist {
    uint32_t *v;
    size_t n, cap;
    uint32_t inl[64];
};

static void idlist_init(struct idlist *l)
{
    l->v = l->inl;
    l->n = 0;
    l->cap = ARRAY_SIZE(l->inl);
}

static void idlist_release(struct idlist *l)
{
    if (l->v != l->inl)
        free(l->v);
}

static int idlist_append(struct idlist *l, const uint32_t *ids, size_t n)
{
    if (l->n + n > l->cap) {
        size_t ncap = l->cap;
        uint32_t *v;
        while (ncap < l->n + n)
            ncap *= 2;
        v = malloc(ncap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        memcpy(v, l->v, l->n * sizeof(*v));
        idlist_release(l);
        l->v = v;
        l->cap = ncap;
    }
    memcpy(l->v + l->n, ids, n * sizeof(*ids));
    l->n += n;
    return 0;
}

/* The slot of c for key[0..len) (no NUL inside), whose hash is h. */
static const struct cm_slot *cmap_find(const ferry_policy_set *s, const struct cmap *c,
                                       const char *key, size_t len, uint64_t h)
{
    for (size_t i = (size_t)h & c->mask;; i = (i + 1) & c->mask) {
        const struct cm_slot *e = &c->slots[i];
        const char *k;

        if (e->ref0 == CM_EMPTY)
            return NULL;
        if (e->hash != h)
            continue;
        k = POL_KEY(POL(s, e->ref0));
        if (strncmp(k, key, len) == 0 && k[len] == '\0')
            return e;
    }
}

/* Append the policies of e to out; from a prefix map, only those whose suffix signature
 * allows subject[0..slen). */
static int cand_append(const struct cmap *c, const struct cm_slot *e, const char *subject,
                       size_t slen, struct idlist *out)
{
    int r = 0;

    if (!e->more)
        return idlist_append(out, &e->ref0, 1);
    if (!c->sigs)
        return idlist_append(out, &c->lists[e->more], c->lists[e->more - 1]);
    for (uint32_t k = 0; k < c->lists[e->more - 1] && r == 0; k++)
        if (sig_allows(c->sigs[e->more + k], subject, slen))
            r = idlist_append(out, &c->lists[e->more + k], 1);
    return r;
}

/* Sort refs into load order: insertion sort for the few of a typical decision (each list
 * appended is sorted already), qsort beyond. */
static void refs_sort(uint32_t *v, size_t n)
{
    if (n > 32) {
        qsort(v, n, sizeof(*v), cmp_u32);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        uint32_t x = v[i];
        size_t j = i;
        for (; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

/* The candidates of an issuer for a subject: policies with that exact subject, and glob
 * policies whose literal prefix is a prefix of the subject. Sorted by load order. */
static int candidates(const ferry_policy_set *s, const struct issuer_ix *ix, const char *subject,
                      struct idlist *out)
{
    size_t slen = strlen(subject), pos = 0;
    uint64_t h = UINT64_C(14695981039346656037);
    const struct cm_slot *e;
    size_t lists = 0;
    int r;

    /* One pass of FNV-1a over the subject: the hash of each probed prefix on the way, the
     * subject's own at the end. */
    for (size_t i = 0; i < ix->n_plens && ix->plens[i] <= slen; i++) {
        size_t l = ix->plens[i];
        for (; pos < l; pos++) {
            h ^= (unsigned char)subject[pos];
            h *= UINT64_C(1099511628211);
        }
        if (!filter_has(ix->pfilter, ix->pfmask, h))
            continue;
        e = cmap_find(s, &ix->prefix, subject, l, h);
        if (e) {
            r = cand_append(&ix->prefix, e, subject, slen, out);
            if (r < 0)
                return r;
            lists++;
        }
    }
    for (; pos < slen; pos++) {
        h ^= (unsigned char)subject[pos];
        h *= UINT64_C(1099511628211);
    }
    e = filter_has(ix->efilter, ix->efmask, h) ? cmap_find(s, &ix->exact, subject, slen, h)
                                                : NULL;
    if (e) {
        r = cand_append(&ix->exact, e, subject, slen, out);
        if (r < 0)
            return r;
        lists++;
    }
    if (lists > 1)
        refs_sort(out->v, out->n);
    return 0;
}

static bool request_valid(const ferry_policy_request *req)
{
    if (!req || !req->issuer || !req->subject || (req->n_scopes && !req->scopes) ||
        (req->n_audiences && !req->audiences))
        return false;
    for (size_t i = 0; i < req->n_scopes; i++)
        if (!req->scopes[i])
            return false;
    for (size_t i = 0; i < req->n_audiences; i++)
        if (!req->audiences[i])
            return false;
    return true;
}

FERRY_EXPORT const char *ferry_policy_error_name(ferry_policy_error e)
{
    static const char *const names[] = { "granted", "access_denied", "invalid_scope",
                                         "invalid_target", "step_up_required" };

    return (unsigned)e < ARRAY_SIZE(names) ? names[e] : "unknown";
}

/* The decision proper; on refusal *ret_err and reason are set and 0 is returned with *ret_grant
 * NULL. Negative only for -ENOMEM. */
static int decide(const ferry_policy_set *s, const ferry_policy_request *req,
                  ferry_policy_grant **ret_grant, ferry_policy_error *ret_err, char *reason,
                  size_t rlen)
{
    const struct issuer_ix *ix;
    struct idlist cand, matched, gated;
    ferry_policy_error err = FERRY_POLICY_ACCESS_DENIED;
    const char *aud = NULL;
    int r;

    *ret_grant = NULL;
    idlist_init(&cand);
    idlist_init(&matched);
    idlist_init(&gated);
    if (req->n_scopes > FERRY_POLICY_LIST_MAX || req->n_audiences > FERRY_POLICY_LIST_MAX) {
        err = req->n_scopes > FERRY_POLICY_LIST_MAX ? FERRY_POLICY_INVALID_SCOPE
                                                    : FERRY_POLICY_INVALID_TARGET;
        (void)snprintf(reason, rlen, "more than %d %s requested", FERRY_POLICY_LIST_MAX,
                       err == FERRY_POLICY_INVALID_SCOPE ? "scopes" : "audiences");
        r = 0;
        goto out;
    }
    ix = s ? find_issuer(s, req->issuer) : NULL;
    if (!ix) {
        (void)snprintf(reason, rlen, "no policy for issuer \"%s\"", Q(req->issuer));
        r = 0;
        goto out;
    }
    r = candidates(s, ix, req->subject, &cand);
    if (r < 0)
        goto out;
    for (size_t i = 0; i < cand.n; i++) {
        const struct policy *p = POL(s, cand.v[i]);
        if (policy_match(p, req, true, NULL, 0) != FAIL_NONE)
            continue;
        r = idlist_append(p->step_up && !req->step_up_totp ? &gated : &matched, &cand.v[i], 1);
        if (r < 0)
            goto out;
    }
    if (matched.n == 0 && gated.n == 0) {
        (void)snprintf(reason, rlen, "no policy matches this identity (%zu candidate%s for "
                                     "the issuer and subject)", cand.n, cand.n == 1 ? "" : "s");
        goto out;
    }
    if (matched.n > 0) {
        err = evaluate(s, matched.v, matched.n, req, &aud, reason, rlen);
        if (err == FERRY_POLICY_GRANTED) {
            r = build_grant(s, matched.v, matched.n, req, aud, ret_grant);
            goto out;
        }
    }
    if (gated.n > 0) {
        /* Would the step-up-gated policies make it a grant? Then say step-up is what's missing. */
        char tmp[FERRY_POLICY_REASON_MAX];
        const char *aud2;
        ferry_policy_error e2;

        r = idlist_append(&matched, gated.v, gated.n);
        if (r < 0)
            goto out;
        qsort(matched.v, matched.n, sizeof(uint32_t), cmp_u32);
        e2 = evaluate(s, matched.v, matched.n, req, &aud2, tmp, sizeof(tmp));
        if (e2 == FERRY_POLICY_GRANTED) {
            err = FERRY_POLICY_STEP_UP_REQUIRED;
            (void)snprintf(reason, rlen, "policy \"%s\" grants this only after a TOTP step-up",
                           Q(POL(s, gated.v[0])->id));
        } else if (matched.n == gated.n) {
            err = e2; /* nothing but gated policies matched, and they would not grant it */
            (void)snprintf(reason, rlen, "%s", tmp);
        }
    }
out:
    idlist_release(&cand);
    idlist_release(&matched);
    idlist_release(&gated);
    *ret_err = *ret_grant ? FERRY_POLICY_GRANTED : err;
    return r;
}

FERRY_EXPORT int ferry_policy_decide(const ferry_policy_set *set, const ferry_policy_request *req,
                                     ferry_policy_grant **ret_grant,
                                     ferry_policy_refusal *ret_refusal)
{
    ferry_policy_grant *g = NULL;
    ferry_policy_error err;
    char reason[FERRY_POLICY_REASON_MAX] = "";
    int r;

    if (ret_refusal) {
        ret_refusal->error = FERRY_POLICY_ACCESS_DENIED;
        (void)snprintf(ret_refusal->reason, sizeof(ret_refusal->reason), "invalid request");
    }
    if (!ret_grant || !request_valid(req))
        return -EINVAL;
    r = decide(set, req, &g, &err, reason, sizeof(reason));
    if (r < 0) {
        if (ret_refusal)
            (void)snprintf(ret_refusal->reason, sizeof(ret_refusal->reason), "out of memory");
        return r;
    }
    if (ret_refusal) {
        ret_refusal->error = err;
        (void)snprintf(ret_refusal->reason, sizeof(ret_refusal->reason), "%s", g ? "" : reason);
    }
    if (!g)
        return -FERRY_EREFUSED;
    *ret_grant = g;
    return 0;
}

/* ---- JSON views ----------------------------------------------------------------------------- */

static json_t *str_array(const char *const *v, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_string(v[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *aws_array(const ferry_policy_aws_role *v, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_pack("{s:s, s:I}", "role_arn", v[i].role_arn,
                                               "session_duration",
                                               (json_int_t)v[i].session_duration)) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *azure_array(const ferry_policy_azure_app *v, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_pack("{s:s, s:s}", "tenant_id", v[i].tenant_id,
                                               "client_id", v[i].client_id)) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *gcp_array(const char *const *v, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_pack("{s:s}", "service_account", v[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

FERRY_EXPORT int ferry_policy_grant_to_json(const ferry_policy_grant *g, json_t **ret_json)
{
    json_t *j;

    if (!g || !ret_json)
        return -EINVAL;
    j = json_pack("{s:o*, s:o*, s:o*, s:I, s:o*, s:o*, s:o*, s:o*, s:b}",
                  "policies", str_array(g->policies, g->n_policies),
                  "scopes", str_array(g->scopes, g->n_scopes),
                  "audiences", str_array(g->audiences, g->n_audiences),
                  "ttl", (json_int_t)g->ttl,
                  "secrets", str_array(g->secrets, g->n_secrets),
                  "aws", aws_array(g->aws, g->n_aws),
                  "azure", azure_array(g->azure, g->n_azure),
                  "gcp", gcp_array(g->gcp, g->n_gcp),
                  "step_up", g->step_up);
    /* o* drops NULL members silently: a missing member means an allocation failed */
    if (!j || json_object_size(j) != 9) {
        json_decref(j);
        return -ENOMEM;
    }
    *ret_json = j;
    return 0;
}

/* What policy p grants, as the operator wrote it. */
static json_t *policy_grants_json(const struct policy *p)
{
    json_t *j = json_pack("{s:I}", "max_ttl", (json_int_t)p->max_ttl);
    bool ok = j != NULL;

    if (ok && p->n_scopes)
        ok = json_object_set_new(j, "scopes", str_array(p->scopes, p->n_scopes)) == 0;
    if (ok && p->n_audiences)
        ok = json_object_set_new(j, "audiences", str_array(p->audiences, p->n_audiences)) == 0;
    if (ok && p->n_secrets)
        ok = json_object_set_new(j, "secrets", str_array(p->secrets, p->n_secrets)) == 0;
    if (ok && p->n_aws)
        ok = json_object_set_new(j, "aws", aws_array(p->aws, p->n_aws)) == 0;
    if (ok && p->n_azure)
        ok = json_object_set_new(j, "azure", azure_array(p->azure, p->n_azure)) == 0;
    if (ok && p->n_gcp)
        ok = json_object_set_new(j, "gcp", gcp_array(p->gcp, p->n_gcp)) == 0;
    if (!ok) {
        json_decref(j);
        return NULL;
    }
    return j;
}

#define EXPLAIN_MAX_POLICIES 1000
#define EXPLAIN_MAX_ISSUERS 50

static int explain_policy(const ferry_policy_set *s, const struct policy *p,
                          const ferry_policy_request *req, const ferry_policy_grant *g,
                          json_t *considered)
{
    char detail[FERRY_POLICY_REASON_MAX];
    fail_kind f = policy_match(p, req, false, detail, sizeof(detail));
    json_t *e = json_pack("{s:s, s:s, s:I, s:b}", "id", p->id, "file", s->files[p->file],
                          "line", (json_int_t)p->line, "matched", f == FAIL_NONE);
    bool ok = e != NULL;

    if (ok && f != FAIL_NONE) {
        ok = json_object_set_new(e, "failed", json_string(fail_names[f])) == 0 &&
             json_object_set_new(e, "detail", json_string(detail)) == 0;
    } else if (ok) {
        bool contributed = false;
        for (size_t i = 0; g && i < g->n_policies; i++)
            contributed |= g->policies[i] == p->id;
        ok = json_object_set_new(e, "grants", policy_grants_json(p)) == 0 &&
             json_object_set_new(e, "contributed", json_boolean(contributed)) == 0;
        if (ok && p->step_up) {
            ok = json_object_set_new(e, "step_up", json_string("totp")) == 0;
            if (ok && !req->step_up_totp)
                ok = json_object_set_new(e, "matched", json_false()) == 0 &&
                     json_object_set_new(e, "failed", json_string("step_up")) == 0 &&
                     json_object_set_new(e, "detail",
                                         json_string("matches, but requires a TOTP step-up "
                                                     "that this request did not do")) == 0;
        }
    }
    if (!ok || json_array_append_new(considered, e) < 0) {
        if (ok)
            return -ENOMEM;
        json_decref(e);
        return -ENOMEM;
    }
    return 0;
}

FERRY_EXPORT int ferry_policy_explain(const ferry_policy_set *set, const ferry_policy_request *req,
                                      json_t **ret_json)
{
    ferry_policy_grant *g = NULL;
    ferry_policy_refusal ref;
    const struct issuer_ix *ix;
    json_t *out = NULL, *considered = NULL;
    int r;

    if (!ret_json || !request_valid(req))
        return -EINVAL;
    r = ferry_policy_decide(set, req, &g, &ref);
    if (r < 0 && r != -FERRY_EREFUSED)
        return r;
    out = json_pack("{s:s}", "decision", ferry_policy_error_name(ref.error));
    considered = json_array();
    if (!out || !considered)
        goto oom;
    if (g) {
        json_t *gj;
        if (ferry_policy_grant_to_json(g, &gj) < 0 || json_object_set_new(out, "grant", gj) < 0)
            goto oom;
    } else if (json_object_set_new(out, "reason", json_string(ref.reason)) < 0) {
        goto oom;
    }
    ix = set ? find_issuer(set, req->issuer) : NULL;
    if (json_object_set_new(out, "issuer_policies", json_integer(ix ? (json_int_t)ix->n_all : 0)) <
        0)
        goto oom;
    if (ix) {
        for (size_t i = 0; i < ix->n_all && i < EXPLAIN_MAX_POLICIES; i++)
            if (explain_policy(set, &set->pol[ix->all[i]], req, g, considered) < 0)
                goto oom;
        if (ix->n_all > EXPLAIN_MAX_POLICIES &&
            json_object_set_new(out, "considered_truncated", json_true()) < 0)
            goto oom;
    } else {
        json_t *known = json_array();
        if (!known || json_object_set_new(out, "known_issuers", known) < 0)
            goto oom;
        for (size_t i = 0; set && i < set->n_ix && i < EXPLAIN_MAX_ISSUERS; i++)
            if (json_array_append_new(known, json_string(set->ix[i].issuer)) < 0)
                goto oom;
    }
    if (json_object_set_new(out, "considered", considered) < 0) {
        considered = NULL;
        goto oom;
    }
    ferry_policy_grant_free(g);
    *ret_json = out;
    return 0;
oom:
    ferry_policy_grant_free(g);
    json_decref(considered);
    json_decref(out);
    return -ENOMEM;
}

/* ---- the store ------------------------------------------------------------------------------ */

FERRY_EXPORT int ferry_policy_store_new(ferry_policy_set *set, ferry_policy_store **ret_store)
{
    ferry_policy_store *s;

    if (!ret_store)
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        return -ENOMEM;
    }
    s->cur = ferry_policy_set_ref(set);
    *ret_store = s;
    return 0;
}

FERRY_EXPORT void ferry_policy_store_free(ferry_policy_store *s)
{
    if (!s)
        return;
    ferry_policy_set_unref(s->cur);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

FERRY_EXPORT ferry_policy_set *ferry_policy_store_get(ferry_policy_store *s)
{
    ferry_policy_set *set;

    if (!s)
        return NULL;
    /* The reference is taken under the lock: a swap cannot free the set in between. */
    pthread_mutex_lock(&s->mu);
    set = ferry_policy_set_ref(s->cur);
    pthread_mutex_unlock(&s->mu);
    return set;
}

FERRY_EXPORT void ferry_policy_store_swap(ferry_policy_store *s, ferry_policy_set *set)
{
    ferry_policy_set *old;

    if (!s)
        return;
    ferry_policy_set_ref(set);
    pthread_mutex_lock(&s->mu);
    old = s->cur;
    s->cur = set;
    pthread_mutex_unlock(&s->mu);
    ferry_policy_set_unref(old); /* outside the lock: freeing a large set takes a while */
}

FERRY_EXPORT int ferry_policy_store_reload(ferry_policy_store *s, const char *dir,
                                           ferry_policy_problems *problems)
{
    ferry_policy_set *set = NULL;
    int r;

    if (!s || !dir)
        return -EINVAL;
    r = ferry_policy_load_dir(dir, &set, problems);
    if (r < 0)
        return r;
    ferry_policy_store_swap(s, set);
    ferry_policy_set_unref(set);
    return 0;
}
