/* audit/core.c - the run, findings and fingerprints, detection of inputs, the rule registry
 * and the three outputs (table, JSON ferry.audit/v1, SARIF 2.1.0). docs/internals/audit.md.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

#include "audit-internal.h"
#include "basic/buf.h"
#include "basic/errbuf.h"
#include "basic/macro.h"
#include "ferry/error.h"
#include "ferry/json.h"

/* Every cloud the audit knows; a new cloud adds its file and one line here. */
static const audit_cloud *const clouds[] = {
    &audit_cloud_aws, &audit_cloud_gcp, &audit_cloud_azure,
    &audit_cloud_x,   /* X-003..X-005 (shadow.c), decided by audit_shadow_finish */
    &audit_cloud_k8s, /* after the others: X-001 reads their findings in finish */
};

/* Largest rendered report. */
#define AUDIT_RENDER_MAX ((size_t)4 * 1024 * 1024 * 1024 - 1)
/* Bytes of the findings' source names one run keeps (each distinct name once). */
#define AUDIT_SOURCES_MAX ((size_t)256 * 1024 * 1024)
/* Most findings one run keeps (each is a few hundred bytes). */
#define AUDIT_MAX_FINDINGS ((size_t)50 * 1000 * 1000)

static const char *const severity_names[] = {"info", "low", "medium", "high", "critical"};
static const char *const severity_levels[] = {"note", "note", "warning", "error", "error"};
static const char *const severity_scores[] = {"0.0", "2.0", "4.0", "7.0", "9.0"};

FERRY_EXPORT const char *ferry_audit_severity_name(ferry_audit_severity s)
{
    if ((unsigned)s > FERRY_AUDIT_CRITICAL)
        return "unknown";
    return severity_names[s];
}

FERRY_EXPORT int ferry_audit_severity_from_name(const char *name, ferry_audit_severity *ret)
{
    if (!name || !ret)
        return -EINVAL;
    for (size_t i = 0; i < ARRAY_SIZE(severity_names); i++)
        if (strcasecmp(name, severity_names[i]) == 0) {
            *ret = (ferry_audit_severity)i;
            return 0;
        }
    return -EINVAL;
}

/* ---- a cache of small blocks for jansson while a run exists -------------------------------
 * A run builds and frees one large tree per input and small ones per finding. The freed
 * blocks land in malloc's fast bins and are merged again on the next large allocation
 * (malloc_consolidate), about a fifth of the CPU time of a run over the synthetic estate of
 * docs/PERFORMANCE.md. While a run exists, jansson's freed blocks of up to 512 bytes are kept
 * on per-thread lists by size and handed out again. Each block is always one of malloc's (from
 * a list or from malloc; given back with free when the lists hold BLOCK_CACHE_MAX bytes and
 * when the last run ends), so a block may be freed by either side. Not installed under
 * AddressSanitizer (reused blocks would hide a use after free), nor when other allocation
 * functions were set with json_set_alloc_funcs. */
#if defined(__SANITIZE_ADDRESS__)
#define AUDIT_NO_BLOCK_CACHE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AUDIT_NO_BLOCK_CACHE 1
#endif
#endif

#ifndef AUDIT_NO_BLOCK_CACHE
#define BLOCK_CLASSES 33                           /* 16-byte classes, up to 512 bytes */
#define BLOCK_CACHE_MAX ((size_t)32 * 1024 * 1024) /* bytes kept per thread at most */

static __thread struct {
    void *head[BLOCK_CLASSES]; /* class k: blocks of 16k..16k+15 usable bytes */
    size_t bytes;
} block_cache;
static int block_cache_runs; /* runs alive */
static bool block_cache_installed;

static void *block_malloc(size_t n)
{
    size_t k = (n + 15) / 16; /* every block of class k has at least n bytes */
    void *p;

    if (k < BLOCK_CLASSES && (p = block_cache.head[k]) != NULL) {
        block_cache.head[k] = *(void **)p;
        block_cache.bytes -= k * 16;
        return p;
    }
    return malloc(n);
}

static void block_free(void *p)
{
    size_t usable, k;

    if (!p)
        return;
    usable = malloc_usable_size(p);
    k = usable / 16;
    if (k >= BLOCK_CLASSES || usable < sizeof(void *) ||
        block_cache.bytes + k * 16 > BLOCK_CACHE_MAX) {
        free(p);
        return;
    }
    *(void **)p = block_cache.head[k];
    block_cache.head[k] = p;
    block_cache.bytes += k * 16;
}
#endif

static void block_cache_use(void)
{
#ifndef AUDIT_NO_BLOCK_CACHE
    json_malloc_t m;
    json_free_t f;

    if (__atomic_fetch_add(&block_cache_runs, 1, __ATOMIC_SEQ_CST) > 0)
        return;
    json_get_alloc_funcs(&m, &f);
    if (m == malloc && f == free) {
        json_set_alloc_funcs(block_malloc, block_free);
        block_cache_installed = true;
    }
#endif
}

static void block_cache_unuse(void)
{
#ifndef AUDIT_NO_BLOCK_CACHE
    if (__atomic_sub_fetch(&block_cache_runs, 1, __ATOMIC_SEQ_CST) > 0)
        return;
    if (block_cache_installed)
        json_set_alloc_funcs(malloc, free);
    block_cache_installed = false;
    ferry_audit_thread_end();
#endif
}

FERRY_EXPORT void ferry_audit_thread_end(void)
{
#ifndef AUDIT_NO_BLOCK_CACHE
    for (size_t k = 0; k < BLOCK_CLASSES; k++)
        while (block_cache.head[k]) {
            void *p = block_cache.head[k];
            block_cache.head[k] = *(void **)p;
            free(p);
        }
    block_cache.bytes = 0;
#endif
}

FERRY_EXPORT int ferry_audit_new(const ferry_audit_options *opts, ferry_audit **ret)
{
    ferry_audit *a;

    if (!ret)
        return -EINVAL;
    a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    if (opts)
        a->opts = *opts;
    if (a->opts.now == 0)
        a->opts.now = (int64_t)time(NULL);
    if (a->opts.unused_days == 0)
        a->opts.unused_days = 90;
    if (a->opts.key_unused_days == 0)
        a->opts.key_unused_days = 90;
    if (a->opts.key_max_age_days == 0)
        a->opts.key_max_age_days = 90;
    if (!a->opts.grace_days_set)
        a->opts.grace_days = 7;
    if (a->opts.max_input == 0)
        a->opts.max_input = FERRY_AUDIT_DEFAULT_MAX_INPUT;
    a->spill_after = AUDIT_SPILL_AFTER;
    block_cache_use();
    a->inputs = json_array();
    audit_strset_init(&a->sources, AUDIT_SOURCES_MAX);
    if (!a->inputs) {
        free(a);
        block_cache_unuse();
        return -ENOMEM;
    }
    *ret = a;
    return 0;
}

/* A finding's account, resource and evidence are one block, NUL-separated, that starts at
 * account; its source is one of the run's interned strings (a->sources). */
static void finding_release(ferry_audit_finding *f)
{
    free((char *)f->account);
}

FERRY_EXPORT void ferry_audit_free(ferry_audit *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < ARRAY_SIZE(clouds); i++)
        if (clouds[i]->release)
            clouds[i]->release(a);
    audit_suppress_release(a);
    for (size_t i = 0; i < a->n_findings; i++)
        finding_release(&a->findings[i]);
    free(a->findings);
    free(a->seen_slots);
    audit_strset_release(&a->sources);
    for (size_t i = 0; i < a->n_known; i++)
        free(a->known_accounts[i]);
    free(a->known_accounts);
    json_decref(a->inputs);
    json_decref(a->iac);
    json_decref(a->owner_tag_keys);
    free(a);
    block_cache_unuse(); /* after the last json_decref of the run */
}

static int cmp_str_ptr(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

FERRY_EXPORT int ferry_audit_add_known_account(ferry_audit *a, const char *id)
{
    char **n;

    if (!a || !id || strlen(id) != 12 || strspn(id, "0123456789") != 12)
        return -EINVAL;
    if (audit_account_known(a, id))
        return 0;
    n = realloc(a->known_accounts, (a->n_known + 1) * sizeof(*n));
    if (!n)
        return -ENOMEM;
    a->known_accounts = n;
    n[a->n_known] = strdup(id);
    if (!n[a->n_known])
        return -ENOMEM;
    a->n_known++;
    qsort(a->known_accounts, a->n_known, sizeof(char *), cmp_str_ptr);
    return 0;
}

bool audit_account_known(const ferry_audit *a, const char *id)
{
    if (!a->n_known || !id)
        return false;
    return bsearch(&id, a->known_accounts, a->n_known, sizeof(char *), cmp_str_ptr) != NULL;
}

int64_t audit_now(const ferry_audit *a)
{
    return a->opts.now;
}

const audit_rule *audit_rule_find(const char *id)
{
    for (size_t c = 0; c < ARRAY_SIZE(clouds); c++)
        for (size_t i = 0; i < clouds[c]->n_rules; i++)
            if (strcmp(clouds[c]->rules[i].id, id) == 0)
                return &clouds[c]->rules[i];
    return NULL;
}

int audit_sha256_hex(const void *data, size_t len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return -FERRY_ECRYPTO;
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
    return 0;
}

struct dump_sink {
    ferry_buf *b;
    bool failed;
};

static int dump_sink_write(const char *buf, size_t size, void *data)
{
    struct dump_sink *d = data;
    if (ferry_buf_append(d->b, buf, size) < 0) {
        d->failed = true;
        return -1;
    }
    return 0;
}

/* Append the serialisation of j to b. jansson 2.14 ignores a failed write of an object key
 * (dump.c), so json_dumps() can return a corrupted text when memory runs out; the sink
 * remembers any failure. Returns 0 or -ENOMEM (also past b's maximum). */
static int dump_append(ferry_buf *b, const json_t *j, size_t flags)
{
    struct dump_sink d = {.b = b, .failed = false};
    size_t before = b->len;

    if (json_dump_callback(j, dump_sink_write, &d, flags) < 0 || d.failed || b->len == before)
        return -ENOMEM;
    return 0;
}

char *audit_json_dumps(const json_t *j, size_t flags)
{
    ferry_buf b;

    ferry_buf_init(&b, AUDIT_RENDER_MAX, false);
    if (dump_append(&b, j, flags) < 0) {
        ferry_buf_release(&b);
        return NULL;
    }
    return ferry_buf_steal(&b, NULL);
}

/* ---- the fingerprint set: one finding per fingerprint --------------------------------------
 * Open addressing over the findings array: a slot holds a finding's index + 1 (0 = empty),
 * probed linearly from the fingerprint's first 64 bits (a SHA-256: uniform already). Sorting
 * the findings moves them, so the table is rebuilt at the next emit after a sort. */

static uint64_t fp_hash(const char *fp)
{
    uint64_t h = 0;
    for (int i = 0; i < 16; i++) {
        char c = fp[i];
        h = h << 4 | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    return h;
}

static void seen_put(ferry_audit *a, size_t index)
{
    size_t mask = a->n_seen_slots - 1, k = (size_t)fp_hash(a->findings[index].fingerprint) & mask;
    while (a->seen_slots[k])
        k = (k + 1) & mask;
    a->seen_slots[k] = (uint32_t)(index + 1);
}

/* Make room for one more finding in the set (at most half full), rebuilding it when it grows
 * or the findings were sorted since it was built. */
static int seen_reserve(ferry_audit *a)
{
    size_t want = a->n_seen_slots ? a->n_seen_slots : 1024;
    uint32_t *slots;

    while (want / 2 < a->n_findings + 1)
        want *= 2;
    if (want == a->n_seen_slots && !a->seen_stale)
        return 0;
    if (!(slots = calloc(want, sizeof(*slots))))
        return -ENOMEM;
    free(a->seen_slots);
    a->seen_slots = slots;
    a->n_seen_slots = want;
    a->seen_stale = false;
    for (size_t i = 0; i < a->n_findings; i++)
        seen_put(a, i);
    return 0;
}

static bool seen_has(const ferry_audit *a, const char *fp)
{
    size_t mask = a->n_seen_slots - 1, k = (size_t)fp_hash(fp) & mask;
    for (; a->seen_slots[k]; k = (k + 1) & mask)
        if (memcmp(a->findings[a->seen_slots[k] - 1].fingerprint, fp, 64) == 0)
            return true;
    return false;
}

int audit_emit(ferry_audit *a, const char *rule_id, int severity, const char *cloud,
               const char *account, const char *resource, const json_t *evidence,
               const char *evidence_key, const char *source)
{
    const audit_rule *rule = audit_rule_find(rule_id);
    ferry_audit_finding f = {0};
    size_t la, lr;
    ferry_buf blk, fp;
    char *block;
    int r;

    if (!rule || !cloud)
        return -EINVAL;
    if (a->n_findings >= AUDIT_MAX_FINDINGS)
        return -FERRY_ETOOBIG;
    if (a->n_findings == a->alloc_findings) {
        size_t n = a->alloc_findings ? a->alloc_findings * 2 : 64;
        ferry_audit_finding *p = realloc(a->findings, n * sizeof(*p));
        if (!p)
            return -ENOMEM;
        a->findings = p;
        a->alloc_findings = n;
    }
    account = account ? account : "";
    resource = resource ? resource : "";
    la = strlen(account);
    lr = strlen(resource);
    /* The fingerprint: fixed tag, then each identifying part NUL-terminated, so that no two
     * different tuples hash the same bytes. Nothing volatile (dates, file names) goes in. */
    ferry_buf_init(&fp, 1024 * 1024, false);
    r = 0;
    const char *parts[] = {"ferry.audit/v1", rule->id, cloud,
                           account,          resource, evidence_key ? evidence_key : ""};
    for (size_t i = 0; i < ARRAY_SIZE(parts) && r == 0; i++)
        r = ferry_buf_append(&fp, parts[i], strlen(parts[i]) + 1);
    if (r == 0)
        r = audit_sha256_hex(fp.data, fp.len, f.fingerprint);
    ferry_buf_release(&fp);
    if (r == 0)
        r = seen_reserve(a);
    if (r < 0)
        return r == -E2BIG ? -ENOMEM : r;
    if (seen_has(a, f.fingerprint))
        return 0; /* already reported, from an earlier input */

    /* account, resource and the compact evidence in one block sized to fit. */
    ferry_buf_init(&blk, AUDIT_RENDER_MAX, false);
    r = ferry_buf_append(&blk, account, la + 1);
    if (r == 0)
        r = ferry_buf_append(&blk, resource, lr + 1);
    if (r == 0)
        r = evidence ? dump_append(&blk, evidence, JSON_COMPACT | JSON_SORT_KEYS)
                     : ferry_buf_append_str(&blk, "{}");
    if (r == 0)
        r = audit_strset_intern(&a->sources, source ? source : "", &f.source);
    if (r < 0) {
        ferry_buf_release(&blk);
        return r == -FERRY_EFULL ? r : -ENOMEM;
    }
    block = realloc(blk.data, blk.len + 1);
    if (!block)
        block = blk.data; /* keeping the slack is harmless */
    f.rule_id = rule->id;
    f.title = rule->title;
    f.severity = severity < 0 ? rule->severity : (ferry_audit_severity)severity;
    f.cloud = cloud;
    f.remediation = rule->remediation;
    f.account = block;
    f.resource = block + la + 1;
    f.evidence = block + la + 1 + lr + 1;
    a->findings[a->n_findings] = f;
    seen_put(a, a->n_findings++);
    a->sorted = false;
    return 0;
}

/* ---- input --------------------------------------------------------------------------- */

int audit_parse_json(const ferry_audit *a, const void *buf, size_t len, json_t **ret, char *errbuf,
                     size_t errlen)
{
    char msg[FERRY_JSON_ERR_LEN];
    int r =
        ferry_json_parse(buf, len, a->opts.max_input, AUDIT_JSON_MAX_DEPTH, ret, msg, sizeof(msg));
    if (r >= 0)
        return 0;
    if (r == -FERRY_ETOOBIG && len > a->opts.max_input)
        return ferry_errbuf_set(errbuf, errlen, r, "larger than the %zu-byte input limit",
                                a->opts.max_input);
    /* The parser names the byte offset; a person wants a line and a column. */
    const char *at = strstr(msg, " at byte ");
    if (at) {
        unsigned long long off = strtoull(at + 9, NULL, 10);
        const unsigned char *p = buf;
        size_t line = 1, col = 1;
        for (size_t i = 0; i < off && i < len; i++) {
            if (p[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        return ferry_errbuf_set(errbuf, errlen, r, "%zu:%zu: malformed JSON: %.*s", line, col,
                                (int)(at - msg), msg);
    }
    return ferry_errbuf_set(errbuf, errlen, r, "malformed JSON: %s", msg);
}

static bool text_looks_json(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n')
            continue;
        return buf[i] == '{' || buf[i] == '[';
    }
    return false;
}

static const audit_loader *loader_by_name(const char *name, const audit_cloud **ret_cloud)
{
    for (size_t c = 0; c < ARRAY_SIZE(clouds); c++)
        for (size_t i = 0; i < clouds[c]->n_loaders; i++)
            if (strcmp(clouds[c]->loaders[i].format, name) == 0) {
                if (ret_cloud)
                    *ret_cloud = clouds[c];
                return &clouds[c]->loaders[i];
            }
    return NULL;
}

FERRY_EXPORT bool ferry_audit_format_known(const char *name)
{
    return name && loader_by_name(name, NULL);
}

const char *audit_loader_format(size_t i)
{
    for (size_t c = 0; c < ARRAY_SIZE(clouds); c++) {
        if (i < clouds[c]->n_loaders)
            return clouds[c]->loaders[i].format;
        i -= clouds[c]->n_loaders;
    }
    return NULL;
}

/* The names of every format, comma-separated (what each looks like is in the loaders'
 * "expected" texts, printed by `ferry audit --help`). */
static int expected_list(char *out, size_t outlen)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t c = 0; c < ARRAY_SIZE(clouds); c++)
        for (size_t i = 0; i < clouds[c]->n_loaders; i++) {
            int n = snprintf(out + used, outlen - used, "%s%s", used ? ", " : "",
                             clouds[c]->loaders[i].format);
            if (n < 0 || (size_t)n >= outlen - used) {
                out[used] = '\0';
                return -E2BIG;
            }
            used += (size_t)n;
        }
    return 0;
}

void audit_error_where(ferry_audit *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(a->err_where, sizeof(a->err_where), fmt, ap);
    va_end(ap);
}

/* The line of the value a->err_where names in the JSON text buf: the text is parsed again,
 * this time recording lines (only on this error path, so a good run never pays for the line
 * table). 0 when unknown. */
static unsigned error_line(const ferry_audit *a, const void *buf, size_t len)
{
    json_t *doc = NULL, *cur;
    ferry_json_locs *locs = NULL;
    char where[sizeof(a->err_where)], *save = NULL, *comp;
    unsigned line = 0;

    if (ferry_json_parse_located(buf, len, a->opts.max_input, AUDIT_JSON_MAX_DEPTH, &doc, &locs,
                                 NULL, NULL, 0) < 0)
        return 0;
    memcpy(where, a->err_where, sizeof(where));
    cur = doc;
    for (comp = strtok_r(where, "/", &save); comp && cur; comp = strtok_r(NULL, "/", &save)) {
        if (json_is_object(cur)) {
            line = ferry_json_locs_line(locs, cur, comp);
            cur = json_object_get(cur, comp);
        } else if (json_is_array(cur)) {
            char *end = NULL;
            unsigned long i = strtoul(comp, &end, 10);
            if (!end || *end || i >= json_array_size(cur)) {
                line = 0;
                break;
            }
            line = ferry_json_locs_line_index(locs, cur, i);
            cur = json_array_get(cur, i);
        } else {
            line = 0;
            break;
        }
    }
    if (comp)
        line = 0; /* the path went past the document */
    ferry_json_locs_free(locs);
    json_decref(doc);
    return line;
}

/* NDJSON: a text that is not one JSON document but has one JSON value on each non-empty line
 * (gcloud asset export, concatenated gcloud outputs) is read as one array of those values, with
 * the limits of a document (size, depth per line). Returns -FERRY_EUNSUPPORTED, without a
 * message, when the text is not shaped so (fewer than two values, or the first non-empty line
 * is not a value by itself): the caller reports its own parse error then. A later bad line is
 * "LINE:COL: malformed JSON: reason" with the line of the file. *ret is new. */
static int audit_parse_ndjson(const ferry_audit *a, const char *buf, size_t len, json_t **ret,
                              char *errbuf, size_t errlen)
{
    json_t *arr = json_array(), *v;
    size_t line = 0, values = 0, pos = 0;
    char lwhy[400];
    int r = 0;

    if (!arr)
        return -ENOMEM;
    while (pos < len && r == 0) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - buf) : len, n = end - pos, k;
        line++;
        for (k = 0; k < n && buf[pos + k] && strchr(" \t\r", buf[pos + k]); k++)
            ;
        if (k < n) {
            r = audit_parse_json(a, buf + pos, n, &v, lwhy, sizeof(lwhy));
            if (r == -ENOMEM)
                break;
            if (r < 0 && values == 0) {
                r = -FERRY_EUNSUPPORTED;
                break;
            }
            if (r < 0) {
                /* the message is "1:COL: ..." within the line */
                const char *m = strncmp(lwhy, "1:", 2) == 0 ? lwhy + 2 : lwhy;
                r = ferry_errbuf_set(errbuf, errlen, r, "%zu:%s", line, m);
                break;
            }
            if (json_array_append_new(arr, v) < 0)
                r = -ENOMEM;
            values++;
        }
        pos = end + 1;
    }
    if (r == 0 && values < 2)
        r = -FERRY_EUNSUPPORTED;
    if (r < 0) {
        json_decref(arr);
        return r;
    }
    *ret = arr;
    return 0;
}

/* The line of an NDJSON input that a->err_where ("/N/...") points into: the N-th (0-based)
 * non-empty line. 0 when unknown. */
static unsigned ndjson_error_line(const ferry_audit *a, const char *buf, size_t len)
{
    char *end = NULL;
    unsigned long want = strtoul(a->err_where + 1, &end, 10);
    size_t pos = 0, line = 0, values = 0;

    if (a->err_where[0] != '/' || end == a->err_where + 1)
        return 0;
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t e = nl ? (size_t)(nl - buf) : len, k;
        line++;
        for (k = pos; k < e && buf[k] && strchr(" \t\r", buf[k]); k++)
            ;
        if (k < e && values++ == want)
            return line <= UINT_MAX ? (unsigned)line : 0;
        pos = e + 1;
    }
    return 0;
}

/* An input parsed ahead of being audited (ferry_audit_parse). */
struct ferry_audit_parsed {
    char *path;
    const char *buf; /* borrowed from the caller until ferry_audit_parsed_free */
    size_t len;
    const audit_loader *loader; /* named by --format, or a text loader that claimed it */
    json_t *doc;                /* the parsed document of a JSON input, or NULL */
    bool ndjson;                /* doc is the array of an NDJSON text's lines */
    int r;                      /* < 0: the input is refused, err says why */
    char err[1024];
};

FERRY_EXPORT int ferry_audit_parse(const ferry_audit *a, const char *path, const void *buf,
                                   size_t len, const char *format, ferry_audit_parsed **ret)
{
    const audit_loader *loader = NULL;
    ferry_audit_parsed *p;
    char why[512];
    int r;

    if (!a || !path || (!buf && len) || !ret)
        return -EINVAL;
    p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->path = strdup(path);
    if (!p->path) {
        free(p);
        return -ENOMEM;
    }
    p->buf = buf;
    p->len = len;
    *ret = p;
    if (len > a->opts.max_input) {
        p->r =
            ferry_errbuf_set(p->err, sizeof(p->err), -FERRY_ETOOBIG,
                             "%s: larger than the %zu-byte input limit", path, a->opts.max_input);
        return 0;
    }
    if (format) {
        loader = loader_by_name(format, NULL);
        if (!loader) {
            p->r = ferry_errbuf_set(p->err, sizeof(p->err), -EINVAL, "%s: unknown format '%s'",
                                    path, format);
            return 0;
        }
    }
    if ((!loader || loader->detect_json) && (loader || text_looks_json(buf, len))) {
        r = audit_parse_json(a, buf, len, &p->doc, why, sizeof(why));
        /* Not one JSON document: a text loader may still claim it (NDJSON). */
        for (size_t c = 0; r < 0 && r != -ENOMEM && !loader && c < ARRAY_SIZE(clouds); c++)
            for (size_t i = 0; i < clouds[c]->n_loaders && !loader; i++)
                if (clouds[c]->loaders[i].detect_text &&
                    clouds[c]->loaders[i].detect_text(buf, len))
                    loader = &clouds[c]->loaders[i];
        /* Nor one value per line claimed by a text loader: NDJSON (docs/internals/audit.md). */
        if (r < 0 && r != -ENOMEM && !(loader && !loader->detect_json)) {
            char nwhy[sizeof(why)];
            int rn = audit_parse_ndjson(a, buf, len, &p->doc, nwhy, sizeof(nwhy));
            if (rn != -FERRY_EUNSUPPORTED) { /* it is NDJSON: its own result and message */
                r = rn;
                memcpy(why, nwhy, sizeof(why));
                p->ndjson = rn == 0;
            }
        }
        if (r < 0 && !(loader && !loader->detect_json)) {
            p->r = ferry_errbuf_set(p->err, sizeof(p->err), r, "%s:%s", path, why);
            return 0;
        }
    }
    p->loader = loader;
    return 0;
}

FERRY_EXPORT void ferry_audit_parsed_free(ferry_audit_parsed *p)
{
    if (!p)
        return;
    json_decref(p->doc);
    free(p->path);
    free(p);
}

FERRY_EXPORT int ferry_audit_add_parsed(ferry_audit *a, ferry_audit_parsed *p, char *errbuf,
                                        size_t errlen)
{
    const audit_loader *loader;
    const char *path;
    json_t *doc, *rec;
    char why[512];
    int r;

    if (!a || !p)
        return -EINVAL;
    if (p->r < 0)
        return ferry_errbuf_set(errbuf, errlen, p->r, "%s", p->err);
    loader = p->loader;
    doc = p->doc;
    path = p->path;
    if (!loader) {
        for (size_t c = 0; c < ARRAY_SIZE(clouds) && !loader; c++)
            for (size_t i = 0; i < clouds[c]->n_loaders && !loader; i++) {
                const audit_loader *l = &clouds[c]->loaders[i];
                if (doc ? (l->detect_json && l->detect_json(doc))
                        : (l->detect_text && l->detect_text(p->buf, p->len)))
                    loader = l;
            }
        if (!loader) {
            char exp[800];
            bool cut = expected_list(exp, sizeof(exp)) < 0;
            return ferry_errbuf_set(errbuf, errlen, -FERRY_EUNSUPPORTED,
                                    "%s: not a recognised export; expected one of: %s%s "
                                    "(ferry audit --help says what each looks like; or name "
                                    "one with --format)",
                                    path, exp, cut ? ", ..." : "");
        }
    }
    why[0] = '\0';
    a->err_where[0] = '\0';
    r = loader->load(a, path, p->buf, p->len, doc, why, sizeof(why));
    if (r < 0 && !why[0] && a->spill_why[0])
        (void)snprintf(why, sizeof(why), "%s", a->spill_why);
    if (r < 0) {
        unsigned line = !doc || !a->err_where[0] ? 0
                        : p->ndjson              ? ndjson_error_line(a, p->buf, p->len)
                                                 : error_line(a, p->buf, p->len);
        if (line)
            return ferry_errbuf_set(errbuf, errlen, r, "%s:%u: %s", path, line,
                                    why[0] ? why : ferry_strerror(r));
        /* A text loader that knows the position starts with "LINE:COL: " (k8s.c's YAML). */
        size_t digits = strspn(why, "0123456789");
        if (digits && why[digits] == ':' && why[digits + 1] >= '0' && why[digits + 1] <= '9')
            return ferry_errbuf_set(errbuf, errlen, r, "%s:%s", path, why);
        return ferry_errbuf_set(errbuf, errlen, r, "%s: %s", path,
                                why[0] ? why : ferry_strerror(r));
    }
    rec = json_pack("{s:s, s:s}", "path", path, "format", loader->format);
    if (!rec || json_array_append_new(a->inputs, rec) < 0)
        return -ENOMEM;
    return 0;
}

FERRY_EXPORT int ferry_audit_add_input(ferry_audit *a, const char *path, const void *buf,
                                       size_t len, const char *format, char *errbuf, size_t errlen)
{
    ferry_audit_parsed *p = NULL;
    int r = ferry_audit_parse(a, path, buf, len, format, &p);

    if (r < 0)
        return r;
    r = ferry_audit_add_parsed(a, p, errbuf, errlen);
    ferry_audit_parsed_free(p);
    return r;
}

FERRY_EXPORT int ferry_audit_finish(ferry_audit *a, char *errbuf, size_t errlen)
{
    if (!a)
        return -EINVAL;
    for (size_t c = 0; c < ARRAY_SIZE(clouds); c++)
        if (clouds[c]->finish) {
            int r = clouds[c]->finish(a, errbuf, errlen);
            if (r < 0)
                return r;
        }
    /* After every cloud's finish: identities noted there are merged first. */
    int rs = audit_shadow_finish(a, errbuf, errlen);
    if (rs < 0)
        return rs;
    /* Last: suppressions and the baseline see every finding, the shadow ones included. */
    rs = audit_suppress_apply(a);
    if (rs < 0)
        return ferry_errbuf_set(errbuf, errlen, rs, "%s", ferry_strerror(rs));
    return 0;
}

/* ---- dates ----------------------------------------------------------------------------- */

static bool digits(const char *s, int n, int *ret)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *ret = v;
    return true;
}

int audit_parse_time(const char *s, int64_t *ret)
{
    int y, mo, d, h = 0, mi = 0, se = 0, oh = 0, om = 0, sign = 0;
    struct tm tm = {0};
    time_t t;

    if (!s || !ret || strlen(s) < 10)
        return -EINVAL;
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d))
        return -EINVAL;
    s += 10;
    if (*s == 'T' || *s == 't' || *s == ' ') {
        if (!digits(s + 1, 2, &h) || s[3] != ':' || !digits(s + 4, 2, &mi) || s[6] != ':' ||
            !digits(s + 7, 2, &se))
            return -EINVAL;
        s += 9;
        if (*s == '.') {
            s++;
            if (*s < '0' || *s > '9')
                return -EINVAL;
            while (*s >= '0' && *s <= '9')
                s++;
        }
        if (*s == 'Z' || *s == 'z') {
            s++;
        } else if (*s == '+' || *s == '-') {
            sign = *s == '-' ? -1 : 1;
            if (!digits(s + 1, 2, &oh))
                return -EINVAL;
            s += 3;
            if (*s == ':')
                s++;
            if (!digits(s, 2, &om))
                return -EINVAL;
            s += 2;
        }
    }
    if (*s != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60 ||
        oh > 23 || om > 59 || y < 1970)
        return -EINVAL;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    t = timegm(&tm);
    if (t == (time_t)-1)
        return -EINVAL;
    *ret = (int64_t)t - (int64_t)sign * (oh * 3600 + om * 60);
    return 0;
}

/* ---- findings and outputs ---------------------------------------------------------------- */

static int cmp_finding(const void *x, const void *y)
{
    const ferry_audit_finding *p = x, *q = y;
    int c;
    if (p->severity != q->severity)
        return p->severity > q->severity ? -1 : 1;
    if ((c = strcmp(p->rule_id, q->rule_id)) != 0)
        return c;
    if ((c = strcmp(p->resource, q->resource)) != 0)
        return c;
    return strcmp(p->fingerprint, q->fingerprint);
}

FERRY_EXPORT size_t ferry_audit_findings(ferry_audit *a, const ferry_audit_finding **ret)
{
    if (!a)
        return 0;
    if (!a->sorted && a->n_findings) {
        qsort(a->findings, a->n_findings, sizeof(*a->findings), cmp_finding);
        a->seen_stale = true; /* the set holds indexes */
    }
    a->sorted = true;
    if (ret)
        *ret = a->findings;
    return a->n_findings;
}

FERRY_EXPORT size_t ferry_audit_count_at_least(ferry_audit *a, ferry_audit_severity min)
{
    size_t n = 0;
    if (!a)
        return 0;
    for (size_t i = 0; i < a->n_findings; i++)
        n += a->findings[i].severity >= min && audit_counts_for_exit(a, &a->findings[i]);
    return n;
}

static void counts(const ferry_audit *a, size_t out[5])
{
    memset(out, 0, 5 * sizeof(size_t));
    for (size_t i = 0; i < a->n_findings; i++)
        if (!audit_suppressed(a, &a->findings[i]))
            out[a->findings[i].severity]++;
}

int audit_vec_room(void *p, size_t *alloc, size_t n, size_t size, size_t first, size_t max)
{
    void **pp = p, *np;
    size_t na;

    if (n < *alloc)
        return 0;
    na = *alloc ? *alloc * 2 : first;
    if (na > max || na > SIZE_MAX / size)
        return -FERRY_EFULL;
    if (!(np = realloc(*pp, na * size)))
        return -ENOMEM;
    *pp = np;
    *alloc = na;
    return 0;
}

json_t *audit_json_reparse(const char *text)
{
    json_t *j = NULL;
    /* Evidence wraps subtrees of an input, so it may nest a little deeper than one. */
    if (ferry_json_parse(text, strlen(text), SIZE_MAX, AUDIT_JSON_MAX_DEPTH + 8, &j, NULL, 0) < 0)
        return NULL;
    return j;
}

static json_t *evidence_json(const ferry_audit_finding *f)
{
    return audit_json_reparse(f->evidence);
}

json_t *audit_finding_json(const ferry_audit *a, const ferry_audit_finding *f)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:s}", "fingerprint",
                          f->fingerprint, "rule_id", f->rule_id, "title", f->title, "severity",
                          ferry_audit_severity_name(f->severity), "cloud", f->cloud, "account",
                          f->account, "resource", f->resource, "evidence", evidence_json(f),
                          "remediation", f->remediation, "source", f->source);
    if (o && audit_suppress_decorate_json(a, f, o) < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The report document with an empty findings array in its place (render_json_text writes the
 * findings there), or without it (with_findings false: the NDJSON summary line). */
static int render_json(ferry_audit *a, bool with_findings, json_t **ret)
{
    size_t c[5];
    json_t *doc, *arr = json_array();

    if (!arr)
        return -ENOMEM;
    (void)ferry_audit_findings(a, NULL); /* sorted */
    counts(a, c);
    doc = json_pack("{s:s, s:{s:s, s:s}, s:O, s:{s:I, s:I, s:I, s:I, s:I, s:I}, s:o}", "schema",
                    "ferry.audit/v1", "tool", "name", "ferry", "version", PACKAGE_VERSION, "inputs",
                    a->inputs, "summary", "critical", (json_int_t)c[4], "high", (json_int_t)c[3],
                    "medium", (json_int_t)c[2], "low", (json_int_t)c[1], "info", (json_int_t)c[0],
                    "total", (json_int_t)(c[0] + c[1] + c[2] + c[3] + c[4]), "findings", arr);
    if (!doc)
        return -ENOMEM;
    if (audit_suppress_report_json(a, doc, json_object_get(doc, "summary")) < 0) {
        json_decref(doc);
        return -ENOMEM;
    }
    if (!with_findings)
        (void)json_object_del(doc, "findings");
    *ret = doc;
    return 0;
}

static json_t *sarif_rules(json_t **ret_index)
{
    json_t *rules = json_array(), *index = json_object();
    size_t k = 0;

    if (!rules || !index)
        goto fail;
    for (size_t c = 0; c < ARRAY_SIZE(clouds); c++)
        for (size_t i = 0; i < clouds[c]->n_rules; i++, k++) {
            const audit_rule *r = &clouds[c]->rules[i];
            char help[2048];
            (void)snprintf(help, sizeof(help), "%s\n\nRemediation: %s", r->help, r->remediation);
            json_t *o = json_pack(
                "{s:s, s:s, s:{s:s}, s:{s:s}, s:{s:s}, s:{s:s}, s:{s:s, s:s, s:[s,s]}}", "id",
                r->id, "name", r->id, "shortDescription", "text", r->title, "fullDescription",
                "text", r->help, "help", "text", help, "defaultConfiguration", "level",
                severity_levels[r->severity], "properties", "security-severity",
                severity_scores[r->severity], "severity", severity_names[r->severity], "tags",
                "security", clouds[c]->name);
            if (!o || json_array_append_new(rules, o) < 0 ||
                json_object_set_new(index, r->id, json_integer((json_int_t)k)) < 0)
                goto fail;
        }
    *ret_index = index;
    return rules;
fail:
    json_decref(rules);
    json_decref(index);
    return NULL;
}

/* One SARIF result for f; index maps rule ids to their position in the driver's rules. */
static json_t *sarif_result(ferry_audit *a, const ferry_audit_finding *f, const json_t *index)
{
    char msg[1024];
    json_t *o;

    (void)snprintf(msg, sizeof(msg), "%s: %s (%s)", f->title, f->resource,
                   f->account[0] ? f->account : "unknown account");
    o = json_pack("{s:s, s:O, s:s, s:{s:s}, s:[{s:{s:{s:s}}, s:[{s:s, s:s}]}], s:{s:s}, "
                  "s:{s:s, s:s, s:s, s:s, s:o}}",
                  "ruleId", f->rule_id, "ruleIndex", json_object_get(index, f->rule_id), "level",
                  severity_levels[f->severity], "message", "text", msg, "locations",
                  "physicalLocation", "artifactLocation", "uri", f->source, "logicalLocations",
                  "fullyQualifiedName", f->resource, "kind", "resource", "partialFingerprints",
                  "ferry/v1", f->fingerprint, "properties", "security-severity",
                  severity_scores[f->severity], "severity", severity_names[f->severity], "cloud",
                  f->cloud, "account", f->account, "evidence", evidence_json(f));
    if (o && audit_suppress_decorate_sarif(a, f, o) < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The SARIF log with an empty results array in its place (write_document fills it), and the
 * index of its rules (rule id -> position). */
static int render_sarif(ferry_audit *a, json_t **ret, json_t **ret_index)
{
    json_t *index = NULL, *rules = sarif_rules(&index), *doc;

    if (!rules)
        return -ENOMEM;
    doc = json_pack("{s:s, s:s, s:[{s:{s:{s:s, s:s, s:s, s:o}}, s:[], s:s}]}", "$schema",
                    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/os/schemas/"
                    "sarif-schema-2.1.0.json",
                    "version", "2.1.0", "runs", "tool", "driver", "name", "ferry", "version",
                    PACKAGE_VERSION, "informationUri", "https://github.com/ferry-broker/ferry",
                    "rules", rules, "results", "columnKind", "unicodeCodePoints");
    if (!doc ||
        audit_suppress_report_sarif(a, json_array_get(json_object_get(doc, "runs"), 0)) < 0) {
        json_decref(doc);
        json_decref(index);
        return -ENOMEM;
    }
    *ret = doc;
    *ret_index = index;
    return 0;
}

/* ---- where a report goes ------------------------------------------------------------------ */

/* Pieces handed to the writer: about this many bytes at a time. */
#define AUDIT_OUT_CHUNK ((size_t)64 * 1024)

int audit_out_spill(audit_out *o, bool all)
{
    int r;

    if (!o->write || o->b.len == 0 || (!all && o->b.len < AUDIT_OUT_CHUNK))
        return 0;
    r = o->write(o->b.data, o->b.len, o->data);
    o->spilled += o->b.len;
    ferry_buf_clear(&o->b);
    return r < 0 ? r : 0;
}

/* Append s to the table, at most max bytes (cut on a UTF-8 character boundary, with an
 * ellipsis), with control characters shown as '?': resource names and evidence come from the
 * input and must not drive the terminal. */
static int table_append(ferry_buf *b, const char *s, size_t max)
{
    size_t n = strlen(s);
    bool cut = n > max;
    int r = 0;

    if (cut) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    for (size_t i = 0; i < n && r == 0; i++) {
        unsigned char ch = (unsigned char)s[i];
        char out = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
        r = ferry_buf_append(b, &out, 1);
    }
    if (r == 0 && cut)
        r = ferry_buf_append_str(b, "…");
    return r;
}

static int render_table(ferry_audit *a, audit_out *o)
{
    const ferry_audit_finding *fs;
    size_t n = ferry_audit_findings(a, &fs), c[5];
    ferry_buf *b = &o->b;
    char line[4096];
    int r = 0;

    counts(a, c);
    for (int s = FERRY_AUDIT_CRITICAL; s >= FERRY_AUDIT_INFO && r == 0; s--) {
        if (!c[s])
            continue;
        char up[16];
        size_t k;
        for (k = 0; severity_names[s][k] && k < sizeof(up) - 1; k++)
            up[k] = (char)toupper((unsigned char)severity_names[s][k]);
        up[k] = '\0';
        (void)snprintf(line, sizeof(line), "%s%s (%zu)\n", o->spilled + b->len ? "\n" : "", up,
                       c[s]);
        r = ferry_buf_append_str(b, line);
        for (size_t i = 0; i < n && r == 0; i++) {
            const ferry_audit_finding *f = &fs[i];
            if ((int)f->severity != s || audit_suppressed(a, f))
                continue; /* suppressed: counted below, listed in JSON and SARIF */
            (void)snprintf(line, sizeof(line), "  %-11s ", f->rule_id);
            r = ferry_buf_append_str(b, line);
            if (r == 0)
                r = table_append(b, f->resource, 2048);
            if (r == 0)
                r = ferry_buf_append_str(b, "\n              ");
            if (r == 0)
                r = ferry_buf_append_str(b, f->title);
            if (r == 0)
                r = ferry_buf_append_str(b, audit_suppress_table_tag(a, f));
            if (r == 0 && f->account[0]) {
                r = ferry_buf_append_str(b, " — account ");
                if (r == 0)
                    r = table_append(b, f->account, 64);
            }
            /* Evidence can be long (a whole statement); the JSON output has all of it. */
            if (r == 0)
                r = ferry_buf_append_str(b, "\n              evidence: ");
            if (r == 0)
                r = table_append(b, f->evidence, 300);
            if (r == 0)
                r = ferry_buf_append_str(b, "\n              fix: ");
            if (r == 0)
                r = ferry_buf_append_str(b, f->remediation);
            if (r == 0)
                r = ferry_buf_append_str(b, "\n");
            if (r == 0)
                r = audit_out_spill(o, false);
        }
    }
    if (r == 0) {
        size_t shown = c[0] + c[1] + c[2] + c[3] + c[4];
        (void)snprintf(line, sizeof(line),
                       "%s%zu finding%s: %zu critical, %zu high, %zu medium, %zu low, %zu info "
                       "(%zu input%s)\n",
                       shown ? "\n" : "", shown, shown == 1 ? "" : "s", c[4], c[3], c[2], c[1],
                       c[0], json_array_size(a->inputs),
                       json_array_size(a->inputs) == 1 ? "" : "s");
        r = ferry_buf_append_str(b, line);
    }
    if (r == 0)
        r = audit_suppress_report_table(a, b);
    return r;
}

/* A dump sink that appends to b and indents every line after the first by pad: a finding dumped
 * alone comes out as jansson writes it inside the whole report. */
struct indent_sink {
    ferry_buf *b;
    const char *pad;
    size_t padlen;
    bool failed;
};

static int indent_sink_write(const char *buf, size_t size, void *data)
{
    struct indent_sink *d = data;
    const char *p = buf, *end = buf + size, *nl;

    while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if (ferry_buf_append(d->b, p, (size_t)(nl + 1 - p)) < 0 ||
            ferry_buf_append(d->b, d->pad, d->padlen) < 0)
            goto fail;
        p = nl + 1;
    }
    if (p < end && ferry_buf_append(d->b, p, (size_t)(end - p)) < 0)
        goto fail;
    return 0;
fail:
    d->failed = true;
    return -1;
}

/* A JSON document written element by element: doc is dumped (JSON_INDENT(2) |
 * JSON_PRESERVE_ORDER) with the empty array member `member` ("\n<indent>\"name\": []", which
 * occurs once: strings never hold a raw newline), and the array's n elements are built one at
 * a time (element(a, i, ctx), new), dumped in its place with pad (the member's indent + 2)
 * before each line and freed, so that the report is never held as a tree of every finding nor
 * as a whole text. The bytes are the ones dumping the whole tree would give. */
static int write_document(ferry_audit *a, audit_out *o, const json_t *doc, const char *member,
                          const char *pad, size_t n,
                          json_t *(*element)(ferry_audit *a, size_t i, void *ctx), void *ctx)
{
    size_t padlen = strlen(pad);
    char *skel, *at;
    int r;

    skel = audit_json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!skel)
        return -ENOMEM;
    at = strstr(skel, member);
    if (!at || strstr(at + 1, member) || padlen < 2) {
        free(skel);
        return -EINVAL; /* cannot happen: the callers' documents have the member once */
    }
    at += strlen(member) - 2; /* at the "[]" */
    r = ferry_buf_append(&o->b, skel, (size_t)(at - skel));
    for (size_t i = 0; i < n && r == 0; i++) {
        struct indent_sink d = {.b = &o->b, .pad = pad, .padlen = padlen, .failed = false};
        json_t *e = element(a, i, ctx);
        r = !e ? -ENOMEM : ferry_buf_append_str(&o->b, i ? ",\n" : "[\n");
        if (r == 0)
            r = ferry_buf_append(&o->b, pad, padlen);
        if (r == 0 && (json_dump_callback(e, indent_sink_write, &d,
                                          JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0 ||
                       d.failed))
            r = -ENOMEM;
        json_decref(e);
        if (r == 0)
            r = audit_out_spill(o, false);
    }
    if (r == 0 && n) /* "\n", the member's indent, "]" */
        r = ferry_buf_append_str(&o->b, "\n");
    if (r == 0 && n)
        r = ferry_buf_append(&o->b, pad, padlen - 2);
    if (r == 0 && n)
        r = ferry_buf_append_str(&o->b, "]");
    if (r == 0)
        r = ferry_buf_append_str(&o->b, n ? at + 2 : at);
    free(skel);
    return r == -E2BIG ? -ENOMEM : r; /* as audit_json_dumps() fails past AUDIT_RENDER_MAX */
}

static json_t *json_element(ferry_audit *a, size_t i, void *ctx)
{
    return audit_finding_json(a, &((const ferry_audit_finding *)ctx)[i]);
}

struct sarif_ctx {
    const ferry_audit_finding *fs;
    json_t *index;
};

static json_t *sarif_element(ferry_audit *a, size_t i, void *ctx)
{
    struct sarif_ctx *c = ctx;
    return sarif_result(a, &c->fs[i], c->index);
}

static int render_out(ferry_audit *a, ferry_audit_output out, audit_out *o)
{
    const ferry_audit_finding *fs;
    size_t n;
    json_t *doc = NULL;
    int r;

    switch (out) {
    case FERRY_AUDIT_OUT_TABLE:
        return render_table(a, o);
    case FERRY_AUDIT_OUT_CSV:
        return audit_render_csv(a, o);
    case FERRY_AUDIT_OUT_NDJSON:
        r = render_json(a, false, &doc); /* the summary line */
        if (r == 0)
            r = audit_render_ndjson(a, doc, o);
        json_decref(doc);
        return r;
    case FERRY_AUDIT_OUT_JSON:
        n = ferry_audit_findings(a, &fs);
        r = render_json(a, true, &doc);
        if (r == 0)
            r = write_document(a, o, doc, "\n  \"findings\": []", "    ", n, json_element,
                               (void *)fs);
        json_decref(doc);
        return r;
    case FERRY_AUDIT_OUT_SARIF: {
        struct sarif_ctx c = {.index = NULL};
        n = ferry_audit_findings(a, &c.fs);
        r = render_sarif(a, &doc, &c.index);
        if (r == 0)
            r = write_document(a, o, doc, "\n      \"results\": []", "        ", n, sarif_element,
                               &c);
        json_decref(c.index);
        json_decref(doc);
        return r;
    }
    }
    return -EINVAL;
}

FERRY_EXPORT int ferry_audit_render(ferry_audit *a, ferry_audit_output out, char **ret,
                                    size_t *ret_len)
{
    audit_out o = {.write = NULL};
    size_t len = 0;
    int r;

    if (!a || !ret)
        return -EINVAL;
    ferry_buf_init(&o.b, AUDIT_RENDER_MAX, false);
    r = render_out(a, out, &o);
    if (r == 0 && !o.b.data)
        r = ferry_buf_append(&o.b, "", 0); /* an empty report is still a string */
    if (r < 0) {
        ferry_buf_release(&o.b);
        return r;
    }
    *ret = ferry_buf_steal(&o.b, &len);
    if (ret_len)
        *ret_len = len;
    return 0;
}

FERRY_EXPORT int ferry_audit_write(ferry_audit *a, ferry_audit_output out,
                                   ferry_audit_write_fn write, void *data)
{
    audit_out o = {.write = write, .data = data};
    int r;

    if (!a || !write)
        return -EINVAL;
    ferry_buf_init(&o.b, AUDIT_RENDER_MAX, false);
    r = render_out(a, out, &o);
    if (r == 0)
        r = audit_out_spill(&o, true);
    ferry_buf_release(&o.b);
    return r;
}
