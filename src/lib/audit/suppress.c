/* audit/suppress.c - suppressions (--suppress FILE), the baseline (--baseline FILE) and the
 * NDJSON and CSV outputs of `ferry audit`. docs/internals/audit.md, "Suppressions and
 * baselines".
 *
 * Suppression files are YAML (JSON, being YAML's flow style, is read by the same parser):
 * one document, a mapping with "suppressions" (a list of flat mappings of scalars) and an
 * optional "version: 1". Every member is checked; an unknown member, a missing reason or
 * expiry, an expiry more than FERRY_AUDIT_SUPPRESS_MAX_DAYS after the run's clock or an unknown
 * rule id refuses the whole file with FILE:LINE. The baseline is a previous JSON report
 * (schema ferry.audit/v1); only its fingerprints, rule ids, resources and severities are kept.
 *
 * The decisions are taken once, in ferry_audit_finish (audit_suppress_apply): one status
 * record per finding (sorted by fingerprint) says which suppression, if any, applies and
 * whether the baseline knew the finding. The outputs look them up.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "audit-internal.h"
#include "basic/buf.h"
#include "basic/errbuf.h"
#include "basic/macro.h"
#include "ferry/error.h"
#include "ferry/json.h"

/* Largest suppression file, entries in a run, and value of one member. */
#define SUP_MAX_FILE ((size_t)4 * 1024 * 1024)
#define SUP_MAX_ENTRIES 10000
#define SUP_MAX_VALUE 2048
/* Nesting accepted in a baseline report: the report's own 3 levels plus evidence. */
#define BASE_MAX_DEPTH (AUDIT_JSON_MAX_DEPTH + 8)

typedef struct sup_entry {
    char *rule, *resource, *glob, *cloud, *account, *fingerprint, *reason, *owner, *expires_text;
    int64_t expires;
    const char *file; /* borrowed from sup_state.files */
    unsigned line;
    size_t order;   /* position across all files: the first matching suppression wins */
    size_t matched; /* findings it matched (also while expired) */
    bool expired;
} sup_entry;

typedef struct base_entry {
    char fp[65];
    char *rule_id, *resource;
    ferry_audit_severity severity;
    bool seen;
} base_entry;

typedef struct status_rec {
    char fp[65];
    uint8_t baseline; /* ferry_audit_baseline_state */
    sup_entry *by;    /* the suppression that applies, or NULL */
} status_rec;

typedef struct sup_state {
    char **files;
    size_t n_files;
    sup_entry **entries; /* in file order */
    size_t n_entries;
    sup_entry **by_key; /* sorted by (fingerprint or rule, exact before glob, resource) */
    char *base_file;
    base_entry *base; /* sorted by fingerprint */
    size_t n_base;
    status_rec *status; /* sorted by fingerprint */
    size_t n_status;
    size_t n_suppressed, n_new, n_unchanged, n_absent;
} sup_state;

/* ---- state --------------------------------------------------------------------------------- */

static void entry_free(sup_entry *e)
{
    if (!e)
        return;
    free(e->rule);
    free(e->resource);
    free(e->glob);
    free(e->cloud);
    free(e->account);
    free(e->fingerprint);
    free(e->reason);
    free(e->owner);
    free(e->expires_text);
    free(e);
}

void audit_suppress_release(ferry_audit *a)
{
    sup_state *s = a ? a->suppress : NULL;
    if (!s)
        return;
    for (size_t i = 0; i < s->n_entries; i++)
        entry_free(s->entries[i]);
    free(s->entries);
    free(s->by_key);
    for (size_t i = 0; i < s->n_files; i++)
        free(s->files[i]);
    free(s->files);
    for (size_t i = 0; i < s->n_base; i++) {
        free(s->base[i].rule_id);
        free(s->base[i].resource);
    }
    free(s->base);
    free(s->base_file);
    free(s->status);
    free(s);
    a->suppress = NULL;
}

static sup_state *state(ferry_audit *a)
{
    if (!a->suppress)
        a->suppress = calloc(1, sizeof(sup_state));
    return a->suppress;
}

/* ---- the suppression file ------------------------------------------------------------------ */

typedef struct yreader {
    yaml_parser_t p;
    yaml_event_t ev;
    bool have_ev;
    const char *path;
    char *errbuf;
    size_t errlen;
} yreader;

static int ynext(yreader *y)
{
    if (y->have_ev)
        yaml_event_delete(&y->ev);
    y->have_ev = false;
    if (!yaml_parser_parse(&y->p, &y->ev)) {
        if (y->p.error == YAML_MEMORY_ERROR)
            return -ENOMEM;
        return ferry_errbuf_set(
            y->errbuf, y->errlen, -FERRY_EMALFORMED, "%s:%zu: malformed YAML: %s", y->path,
            (size_t)y->p.problem_mark.line + 1, y->p.problem ? y->p.problem : "unreadable");
    }
    y->have_ev = true;
    if (y->ev.type == YAML_ALIAS_EVENT)
        return ferry_errbuf_set(y->errbuf, y->errlen, -FERRY_EMALFORMED,
                                "%s:%zu: aliases are not accepted in a suppression file", y->path,
                                (size_t)y->ev.start_mark.line + 1);
    return 0;
}

static unsigned yline(const yreader *y)
{
    return (unsigned)y->ev.start_mark.line + 1;
}

static int yfail(yreader *y, const char *fmt, ...) _printf_(2, 3);
static int yfail(yreader *y, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return ferry_errbuf_set(y->errbuf, y->errlen, -FERRY_EMALFORMED, "%s:%u: %s", y->path, yline(y),
                            what);
}

static const char *const members[] = {"rule",   "resource", "resource_glob",
                                      "cloud",  "account",  "fingerprint",
                                      "reason", "owner",    "expires"};

static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static bool is_hex64(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (size_t i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool only_wildcards(const char *s)
{
    return s[strspn(s, "*?")] == '\0';
}

/* Check one complete entry (all members read); line: its first line. */
static int entry_check(yreader *y, sup_entry *e, const ferry_audit *a, unsigned line)
{
#define FAIL(...) ferry_errbuf_set(y->errbuf, y->errlen, -FERRY_EMALFORMED, __VA_ARGS__)
    if (!e->reason)
        return FAIL("%s:%u: suppression without a reason (say why the finding is accepted)",
                    y->path, line);
    if (!e->expires_text)
        return FAIL("%s:%u: suppression without expires (a date, at most %d days ahead)", y->path,
                    line, FERRY_AUDIT_SUPPRESS_MAX_DAYS);
    if (e->fingerprint) {
        if (e->resource || e->glob)
            return FAIL("%s:%u: fingerprint names one finding: give it without resource or "
                        "resource_glob",
                        y->path, line);
    } else if (!e->rule || (!e->resource && !e->glob)) {
        return FAIL("%s:%u: suppression needs rule and resource (or resource_glob), or a "
                    "fingerprint",
                    y->path, line);
    }
    if (e->resource && e->glob)
        return FAIL("%s:%u: resource and resource_glob exclude each other", y->path, line);
    if (audit_parse_time(e->expires_text, &e->expires) < 0)
        return FAIL("%s:%u: expires: '%.40s' is not a date (YYYY-MM-DD or an RFC 3339 time)",
                    y->path, line, e->expires_text);
    if (e->expires > audit_now(a) + (int64_t)FERRY_AUDIT_SUPPRESS_MAX_DAYS * 86400)
        return FAIL("%s:%u: expires %.40s is more than %d days after the run's clock: "
                    "suppressions are reviewed at least once a year",
                    y->path, line, e->expires_text, FERRY_AUDIT_SUPPRESS_MAX_DAYS);
    e->line = line;
    return 0;
#undef FAIL
}

/* Read one value into *field after its key (y->ev is the key event). */
static int member_value(yreader *y, const ferry_audit *a, const char *key, char **field)
{
    const char *v;
    size_t len;
    int r = ynext(y);

    if (r < 0)
        return r;
    if (y->ev.type != YAML_SCALAR_EVENT)
        return yfail(y, "%s: expected a single value (text), not a list or mapping", key);
    v = (const char *)y->ev.data.scalar.value;
    len = y->ev.data.scalar.length;
    if (len > SUP_MAX_VALUE)
        return yfail(y, "%s: longer than 2048 bytes", key);
    if (strlen(v) != len)
        return yfail(y, "%s: NUL byte in the value", key);
    /* Block scalars (| and >) end with a line feed; anything else below 0x20 is refused, as
     * reasons and resources are printed on terminals. */
    while (len && (v[len - 1] == '\n' || v[len - 1] == ' '))
        len--;
    while (len && (*v == ' ')) {
        v++;
        len--;
    }
    *field = strndup(v, len);
    if (!*field)
        return -ENOMEM;
    if (has_control(*field))
        return yfail(y, "%s: control characters are not accepted", key);
    if (!**field)
        return yfail(y, "%s: empty value", key);
    if (strcmp(key, "rule") == 0 && !audit_rule_find(*field))
        return yfail(y,
                     "rule: unknown rule id '%.40s' (expected an id of the catalogue, e.g. "
                     "AWS-OP-001)",
                     *field);
    if (strcmp(key, "cloud") == 0 && strcmp(*field, "aws") && strcmp(*field, "gcp") &&
        strcmp(*field, "azure") && strcmp(*field, "k8s") && strcmp(*field, "ferry"))
        return yfail(y, "cloud: expected aws, gcp, azure, k8s or ferry");
    if (strcmp(key, "fingerprint") == 0 && !is_hex64(*field))
        return yfail(y, "fingerprint: expected 64 lowercase hex digits (a finding's fingerprint)");
    if (strcmp(key, "resource_glob") == 0 && only_wildcards(*field))
        return yfail(y, "resource_glob: '%.40s' matches every resource; name the resources",
                     *field);
    (void)a;
    return 0;
}

static int read_entry(yreader *y, const ferry_audit *a, sup_entry **ret)
{
    sup_entry *e = calloc(1, sizeof(*e));
    unsigned line = yline(y);
    int r;

    if (!e)
        return -ENOMEM;
    for (;;) {
        r = ynext(y);
        if (r < 0)
            goto fail;
        if (y->ev.type == YAML_MAPPING_END_EVENT)
            break;
        if (y->ev.type != YAML_SCALAR_EVENT) {
            r = yfail(y, "expected a member name (rule, resource, reason, expires, ...)");
            goto fail;
        }
        char key[32];
        size_t k;
        char **fields[] = {&e->rule,        &e->resource, &e->glob,  &e->cloud,       &e->account,
                           &e->fingerprint, &e->reason,   &e->owner, &e->expires_text};
        (void)snprintf(key, sizeof(key), "%s", (const char *)y->ev.data.scalar.value);
        for (k = 0; k < ARRAY_SIZE(members); k++)
            if (strcmp(key, members[k]) == 0 && y->ev.data.scalar.length == strlen(members[k]))
                break;
        if (k == ARRAY_SIZE(members)) {
            r = yfail(y,
                      "unknown member '%.31s' (expected rule, resource, resource_glob, cloud, "
                      "account, fingerprint, reason, owner, expires)",
                      has_control(key) ? "?" : key);
            goto fail;
        }
        if (*fields[k]) {
            r = yfail(y, "member '%s' given twice", members[k]);
            goto fail;
        }
        r = member_value(y, a, members[k], fields[k]);
        if (r < 0)
            goto fail;
    }
    r = entry_check(y, e, a, line);
    if (r < 0)
        goto fail;
    *ret = e;
    return 0;
fail:
    entry_free(e);
    return r;
}

/* Read the whole document into a fresh list of entries (*ret_entries, *ret_n). */
static int read_suppressions(yreader *y, const ferry_audit *a, sup_entry ***ret_entries,
                             size_t *ret_n, size_t room)
{
    sup_entry **list = NULL;
    size_t n = 0;
    bool seen_list = false, seen_version = false;
    int r;

    if ((r = ynext(y)) < 0) /* stream start */
        goto out;
    if ((r = ynext(y)) < 0)
        goto out;
    if (y->ev.type != YAML_DOCUMENT_START_EVENT) {
        r = ferry_errbuf_set(y->errbuf, y->errlen, -FERRY_EMALFORMED,
                             "%s: empty; expected a mapping with a suppressions list", y->path);
        goto out;
    }
    if ((r = ynext(y)) < 0)
        goto out;
    if (y->ev.type != YAML_MAPPING_START_EVENT) {
        r = yfail(y, "expected a mapping with a suppressions list");
        goto out;
    }
    for (;;) {
        if ((r = ynext(y)) < 0)
            goto out;
        if (y->ev.type == YAML_MAPPING_END_EVENT)
            break;
        if (y->ev.type == YAML_SCALAR_EVENT &&
            strcmp((const char *)y->ev.data.scalar.value, "version") == 0 && !seen_version) {
            seen_version = true;
            if ((r = ynext(y)) < 0)
                goto out;
            if (y->ev.type != YAML_SCALAR_EVENT ||
                strcmp((const char *)y->ev.data.scalar.value, "1") != 0) {
                r = yfail(y, "version: expected 1");
                goto out;
            }
            continue;
        }
        if (y->ev.type != YAML_SCALAR_EVENT ||
            strcmp((const char *)y->ev.data.scalar.value, "suppressions") != 0 || seen_list) {
            r = yfail(y, "expected the members suppressions and version (each once)");
            goto out;
        }
        seen_list = true;
        if ((r = ynext(y)) < 0)
            goto out;
        if (y->ev.type != YAML_SEQUENCE_START_EVENT) {
            r = yfail(y, "suppressions: expected a list");
            goto out;
        }
        for (;;) {
            sup_entry *e = NULL, **nl;
            if ((r = ynext(y)) < 0)
                goto out;
            if (y->ev.type == YAML_SEQUENCE_END_EVENT)
                break;
            if (y->ev.type != YAML_MAPPING_START_EVENT) {
                r = yfail(y, "suppressions: each element is a mapping (rule, resource, reason, "
                             "expires, ...)");
                goto out;
            }
            if (n >= room) {
                r = ferry_errbuf_set(y->errbuf, y->errlen, -FERRY_ETOOBIG,
                                     "%s:%u: more than %d suppressions in the run", y->path,
                                     yline(y), SUP_MAX_ENTRIES);
                goto out;
            }
            r = read_entry(y, a, &e);
            if (r < 0)
                goto out;
            nl = realloc(list, (n + 1) * sizeof(*nl));
            if (!nl) {
                entry_free(e);
                r = -ENOMEM;
                goto out;
            }
            list = nl;
            list[n++] = e;
        }
    }
    if (!seen_list) {
        r = yfail(y, "no suppressions list");
        goto out;
    }
    if ((r = ynext(y)) < 0) /* document end */
        goto out;
    if ((r = ynext(y)) < 0)
        goto out;
    if (y->ev.type != YAML_STREAM_END_EVENT) {
        r = yfail(y, "a second document; a suppression file holds one");
        goto out;
    }
    *ret_entries = list;
    *ret_n = n;
    list = NULL;
    n = 0;
    r = 0;
out:
    for (size_t i = 0; i < n; i++)
        entry_free(list[i]);
    free(list);
    return r;
}

static int cmp_key(const sup_entry *x, const char *key, bool glob, const char *res)
{
    const char *xk = x->fingerprint ? x->fingerprint : x->rule;
    int c = strcmp(xk, key);
    if (c)
        return c;
    if ((x->glob != NULL) != glob)
        return x->glob ? 1 : -1;
    if (!res)
        return 0;
    return strcmp(x->resource ? x->resource : x->glob ? x->glob : "", res);
}

static int cmp_entry(const void *p, const void *q)
{
    const sup_entry *x = *(sup_entry *const *)p, *y = *(sup_entry *const *)q;
    int c = cmp_key(x, y->fingerprint ? y->fingerprint : y->rule, y->glob != NULL,
                    y->resource ? y->resource
                    : y->glob   ? y->glob
                                : "");
    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

FERRY_EXPORT int ferry_audit_add_suppressions(ferry_audit *a, const char *path, const void *buf,
                                              size_t len, char *errbuf, size_t errlen)
{
    yreader y = {.path = path, .errbuf = errbuf, .errlen = errlen};
    sup_entry **list = NULL, **all = NULL, **keys = NULL;
    char **files = NULL, *file = NULL;
    size_t n = 0;
    sup_state *s;
    int r;

    if (!a || !path || (!buf && len))
        return -EINVAL;
    if (len > SUP_MAX_FILE)
        return ferry_errbuf_set(errbuf, errlen, -FERRY_ETOOBIG,
                                "%s: larger than the %zu-byte limit of a suppression file", path,
                                SUP_MAX_FILE);
    s = state(a);
    if (!s)
        return -ENOMEM;
    if (!yaml_parser_initialize(&y.p))
        return -ENOMEM;
    yaml_parser_set_input_string(&y.p, buf ? buf : (const void *)"", len);
    r = read_suppressions(&y, a, &list, &n, SUP_MAX_ENTRIES - s->n_entries);
    if (y.have_ev)
        yaml_event_delete(&y.ev);
    yaml_parser_delete(&y.p);
    if (r < 0)
        return r;
    file = strdup(path);
    files = realloc(s->files, (s->n_files + 1) * sizeof(*files));
    if (files)
        s->files = files;
    all = realloc(s->entries, (s->n_entries + n + 1) * sizeof(*all));
    if (all)
        s->entries = all;
    keys = realloc(s->by_key, (s->n_entries + n + 1) * sizeof(*keys));
    if (keys)
        s->by_key = keys;
    if (!file || !files || !all || !keys) {
        free(file);
        for (size_t i = 0; i < n; i++)
            entry_free(list[i]);
        free(list);
        return -ENOMEM;
    }
    s->files[s->n_files++] = file;
    for (size_t i = 0; i < n; i++) {
        list[i]->file = file;
        list[i]->order = s->n_entries;
        s->entries[s->n_entries] = list[i];
        s->by_key[s->n_entries++] = list[i];
    }
    free(list);
    qsort(s->by_key, s->n_entries, sizeof(*s->by_key), cmp_entry);
    return 0;
}

/* ---- the baseline -------------------------------------------------------------------------- */

static int cmp_base(const void *p, const void *q)
{
    return strcmp(((const base_entry *)p)->fp, ((const base_entry *)q)->fp);
}

/* FILE:LINE: prefix for a baseline error at findings[i] (member key, or the element). */
static int base_fail(const ferry_audit *a, const char *path, const void *buf, size_t len,
                     const char *key, size_t index, int code, const char *what, char *errbuf,
                     size_t errlen)
{
    json_t *doc = NULL;
    ferry_json_locs *locs = NULL;
    unsigned line = 0;

    /* Lines are only recorded on this error path, by parsing the text again. */
    if (ferry_json_parse_located(buf, len, a->opts.max_input, BASE_MAX_DEPTH, &doc, &locs, NULL,
                                 NULL, 0) == 0) {
        json_t *list = json_object_get(doc, "findings");
        if (key && index == SIZE_MAX)
            line = ferry_json_locs_line(locs, doc, key);
        else if (json_is_array(list) && index < json_array_size(list))
            line = key && json_is_object(json_array_get(list, index))
                       ? ferry_json_locs_line(locs, json_array_get(list, index), key)
                       : ferry_json_locs_line_index(locs, list, index);
        if (!line)
            line = ferry_json_locs_line(locs, doc, NULL);
    }
    ferry_json_locs_free(locs);
    json_decref(doc);
    if (index != SIZE_MAX)
        return ferry_errbuf_set(errbuf, errlen, code, "%s:%u: findings[%zu]: %s", path, line, index,
                                what);
    return ferry_errbuf_set(errbuf, errlen, code, "%s:%u: %s", path, line, what);
}

FERRY_EXPORT int ferry_audit_set_baseline(ferry_audit *a, const char *path, const void *buf,
                                          size_t len, char *errbuf, size_t errlen)
{
    json_t *doc = NULL, *list, *f;
    base_entry *base = NULL;
    size_t i, n = 0;
    char why[FERRY_JSON_ERR_LEN + 64];
    sup_state *s;
    int r;

    if (!a || !path || (!buf && len))
        return -EINVAL;
    s = state(a);
    if (!s)
        return -ENOMEM;
    if (s->base_file)
        return ferry_errbuf_set(errbuf, errlen, -EINVAL, "%s: only one baseline per run", path);
    if (len > a->opts.max_input)
        return ferry_errbuf_set(errbuf, errlen, -FERRY_ETOOBIG,
                                "%s: larger than the %zu-byte input limit", path,
                                a->opts.max_input);
    r = audit_parse_json(a, buf, len, &doc, why, sizeof(why));
    if (r == -FERRY_ETOOBIG) {
        /* A report nests a few levels above the evidence taken from the inputs. */
        r = ferry_json_parse(buf, len, a->opts.max_input, BASE_MAX_DEPTH, &doc, NULL, 0);
        if (r == -FERRY_ETOOBIG)
            return ferry_errbuf_set(errbuf, errlen, r, "%s: nested deeper than %d levels", path,
                                    BASE_MAX_DEPTH);
    }
    if (r < 0)
        return ferry_errbuf_set(errbuf, errlen, r, "%s:%s", path, why);
    if (!json_is_object(doc) || !json_is_string(json_object_get(doc, "schema")) ||
        strcmp(json_string_value(json_object_get(doc, "schema")), "ferry.audit/v1") != 0) {
        bool obj = json_is_object(doc);
        json_decref(doc);
        return base_fail(a, path, buf, len, obj ? "schema" : NULL, SIZE_MAX, -FERRY_EMALFORMED,
                         "not a ferry audit report: expected an object with \"schema\": "
                         "\"ferry.audit/v1\" (ferry audit --output-format json)",
                         errbuf, errlen);
    }
    list = json_object_get(doc, "findings");
    if (!json_is_array(list)) {
        json_decref(doc);
        return base_fail(a, path, buf, len, "findings", SIZE_MAX, -FERRY_EMALFORMED,
                         "findings: expected an array", errbuf, errlen);
    }
    n = json_array_size(list);
    base = n ? calloc(n, sizeof(*base)) : NULL;
    if (n && !base) {
        json_decref(doc);
        return -ENOMEM;
    }
    json_array_foreach(list, i, f)
    {
        const char *fp = json_string_value(json_object_get(f, "fingerprint"));
        const char *rule = json_string_value(json_object_get(f, "rule_id"));
        const char *res = json_string_value(json_object_get(f, "resource"));
        const char *sev = json_string_value(json_object_get(f, "severity"));
        const char *bad = !json_is_object(f)     ? NULL
                          : !fp || !is_hex64(fp) ? "fingerprint"
                          : !rule                ? "rule_id"
                          : !res                 ? "resource"
                          : !sev || ferry_audit_severity_from_name(sev, &base[i].severity) < 0
                              ? "severity"
                              : "";
        if (!bad || *bad) {
            char what[160];
            (void)snprintf(what, sizeof(what), "%s%s", !bad ? "expected a finding object" : bad,
                           !bad                              ? ""
                           : strcmp(bad, "fingerprint") == 0 ? ": expected 64 lowercase hex digits"
                           : strcmp(bad, "severity") == 0
                               ? ": expected critical, high, medium, low or info"
                               : ": expected a string");
            for (size_t k = 0; k < i; k++) {
                free(base[k].rule_id);
                free(base[k].resource);
            }
            free(base);
            json_decref(doc);
            return base_fail(a, path, buf, len, bad, i, -FERRY_EMALFORMED, what, errbuf, errlen);
        }
        memcpy(base[i].fp, fp, 65);
        base[i].rule_id = strdup(rule);
        base[i].resource = strdup(res);
        if (!base[i].rule_id || !base[i].resource) {
            for (size_t k = 0; k <= i; k++) {
                free(base[k].rule_id);
                free(base[k].resource);
            }
            free(base);
            json_decref(doc);
            return -ENOMEM;
        }
    }
    json_decref(doc);
    s->base_file = strdup(path);
    if (!s->base_file) {
        for (size_t k = 0; k < n; k++) {
            free(base[k].rule_id);
            free(base[k].resource);
        }
        free(base);
        return -ENOMEM;
    }
    if (n)
        qsort(base, n, sizeof(*base), cmp_base);
    s->base = base;
    s->n_base = n;
    return 0;
}

/* ---- decisions ----------------------------------------------------------------------------- */

static bool entry_matches(const sup_entry *e, const ferry_audit_finding *f)
{
    if (e->fingerprint && strcmp(e->fingerprint, f->fingerprint) != 0)
        return false;
    if (e->rule && strcmp(e->rule, f->rule_id) != 0)
        return false;
    if (e->resource && strcmp(e->resource, f->resource) != 0)
        return false;
    if (e->glob && fnmatch(e->glob, f->resource, 0) != 0)
        return false;
    if (e->cloud && strcmp(e->cloud, f->cloud) != 0)
        return false;
    if (e->account && strcmp(e->account, f->account) != 0)
        return false;
    return true;
}

/* First index in by_key whose key part compares >= (key, glob, res). */
static size_t lower_bound(const sup_state *s, const char *key, bool glob, const char *res)
{
    size_t lo = 0, hi = s->n_entries;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_key(s->by_key[mid], key, glob, res) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Visit the entries that may match f, in order; remember the first unexpired match. */
static void match_range(const sup_state *s, const ferry_audit_finding *f, const char *key,
                        bool glob, const char *res, sup_entry **best)
{
    for (size_t i = lower_bound(s, key, glob, res); i < s->n_entries; i++) {
        sup_entry *e = s->by_key[i];
        if (cmp_key(e, key, glob, res) != 0)
            break;
        if (!entry_matches(e, f))
            continue;
        e->matched++;
        if (!e->expired && (!*best || e->order < (*best)->order))
            *best = e;
    }
}

static int cmp_status(const void *p, const void *q)
{
    return strcmp(((const status_rec *)p)->fp, ((const status_rec *)q)->fp);
}

int audit_suppress_apply(ferry_audit *a)
{
    sup_state *s = a->suppress;
    status_rec *st;

    if (!s)
        return 0;
    free(s->status);
    s->status = NULL;
    s->n_status = 0;
    s->n_suppressed = s->n_new = s->n_unchanged = s->n_absent = 0;
    for (size_t i = 0; i < s->n_entries; i++) {
        s->entries[i]->matched = 0;
        s->entries[i]->expired = s->entries[i]->expires <= audit_now(a);
    }
    for (size_t i = 0; i < s->n_base; i++)
        s->base[i].seen = false;
    if (!a->n_findings)
        goto absent;
    st = calloc(a->n_findings, sizeof(*st));
    if (!st)
        return -ENOMEM;
    for (size_t i = 0; i < a->n_findings; i++) {
        const ferry_audit_finding *f = &a->findings[i];
        sup_entry *best = NULL;
        memcpy(st[i].fp, f->fingerprint, 65);
        if (s->n_entries) {
            match_range(s, f, f->fingerprint, false, NULL, &best);
            match_range(s, f, f->rule_id, false, f->resource, &best);
            match_range(s, f, f->rule_id, true, NULL, &best);
        }
        st[i].by = best;
        s->n_suppressed += best != NULL;
        if (s->base_file) {
            base_entry key, *b;
            memcpy(key.fp, f->fingerprint, 65);
            b = s->n_base ? bsearch(&key, s->base, s->n_base, sizeof(*s->base), cmp_base) : NULL;
            st[i].baseline = b ? FERRY_AUDIT_BASELINE_UNCHANGED : FERRY_AUDIT_BASELINE_NEW;
            if (b)
                b->seen = true;
            if (!best)
                *(b ? &s->n_unchanged : &s->n_new) += 1;
        }
    }
    qsort(st, a->n_findings, sizeof(*st), cmp_status);
    s->status = st;
    s->n_status = a->n_findings;
absent:
    for (size_t i = 0; i < s->n_base; i++)
        /* A fingerprint twice in the baseline is one finding. */
        s->n_absent += !s->base[i].seen && (i == 0 || strcmp(s->base[i].fp, s->base[i - 1].fp));
    return 0;
}

static const status_rec *status_of(const ferry_audit *a, const ferry_audit_finding *f)
{
    const sup_state *s = a->suppress;
    status_rec key;
    if (!s || !s->n_status)
        return NULL;
    memcpy(key.fp, f->fingerprint, 65);
    return bsearch(&key, s->status, s->n_status, sizeof(*s->status), cmp_status);
}

FERRY_EXPORT void ferry_audit_finding_status(const ferry_audit *a, const ferry_audit_finding *f,
                                             ferry_audit_finding_state *ret)
{
    const status_rec *st;
    if (!ret)
        return;
    memset(ret, 0, sizeof(*ret));
    if (!a || !f || !(st = status_of(a, f)))
        return;
    ret->baseline = (ferry_audit_baseline_state)st->baseline;
    if (st->by) {
        ret->suppressed = true;
        ret->reason = st->by->reason;
        ret->owner = st->by->owner;
        ret->expires = st->by->expires_text;
        ret->file = st->by->file;
        ret->line = st->by->line;
    }
}

bool audit_suppressed(const ferry_audit *a, const ferry_audit_finding *f)
{
    const status_rec *st = status_of(a, f);
    return st && st->by;
}

bool audit_counts_for_exit(const ferry_audit *a, const ferry_audit_finding *f)
{
    const status_rec *st = status_of(a, f);
    return !st || (!st->by && st->baseline != FERRY_AUDIT_BASELINE_UNCHANGED);
}

/* ---- outputs: JSON and SARIF members ------------------------------------------------------- */

static const char *baseline_name(unsigned b)
{
    return b == FERRY_AUDIT_BASELINE_NEW ? "new" : "unchanged";
}

int audit_suppress_decorate_json(const ferry_audit *a, const ferry_audit_finding *f, json_t *o)
{
    const status_rec *st = status_of(a, f);
    if (!st)
        return 0;
    if (st->by) {
        json_t *s =
            json_pack("{s:s, s:s, s:s, s:I}", "reason", st->by->reason, "expires",
                      st->by->expires_text, "file", st->by->file, "line", (json_int_t)st->by->line);
        if (!s || (st->by->owner && json_object_set_new(s, "owner", json_string(st->by->owner)))) {
            json_decref(s);
            return -ENOMEM;
        }
        if (json_object_set_new(o, "suppressed", s) < 0)
            return -ENOMEM;
    }
    if (st->baseline &&
        json_object_set_new(o, "baseline", json_string(baseline_name(st->baseline))) < 0)
        return -ENOMEM;
    return 0;
}

int audit_suppress_decorate_sarif(const ferry_audit *a, const ferry_audit_finding *f, json_t *o)
{
    const status_rec *st = status_of(a, f);
    if (!st)
        return 0;
    if (st->by) {
        json_t *p = json_pack("{s:s}", "expires", st->by->expires_text);
        if (!p || (st->by->owner && json_object_set_new(p, "owner", json_string(st->by->owner)))) {
            json_decref(p);
            return -ENOMEM;
        }
        /* "o" steals p, also when the pack fails. */
        json_t *s =
            json_pack("[{s:s, s:s, s:s, s:{s:{s:{s:s}, s:{s:I}}}, s:o}]", "kind", "external",
                      "status", "accepted", "justification", st->by->reason, "location",
                      "physicalLocation", "artifactLocation", "uri", st->by->file, "region",
                      "startLine", (json_int_t)st->by->line, "properties", p);
        if (!s || json_object_set_new(o, "suppressions", s) < 0)
            return -ENOMEM;
    }
    if (st->baseline &&
        json_object_set_new(o, "baselineState", json_string(baseline_name(st->baseline))) < 0)
        return -ENOMEM;
    return 0;
}

static json_t *entry_json(const sup_entry *e)
{
    json_t *o = json_pack("{s:s, s:I, s:s, s:s, s:I}", "file", e->file, "line", (json_int_t)e->line,
                          "reason", e->reason, "expires", e->expires_text, "matched",
                          (json_int_t)e->matched);
    const char *opt[][2] = {{"rule_id", e->rule},       {"resource", e->resource},
                            {"resource_glob", e->glob}, {"fingerprint", e->fingerprint},
                            {"cloud", e->cloud},        {"account", e->account},
                            {"owner", e->owner}};
    for (size_t i = 0; o && i < ARRAY_SIZE(opt); i++)
        if (opt[i][1] && json_object_set_new(o, opt[i][0], json_string(opt[i][1])) < 0) {
            json_decref(o);
            o = NULL;
        }
    return o;
}

static bool entry_unused(const sup_entry *e)
{
    return !e->expired && e->matched == 0;
}

int audit_suppress_report_json(const ferry_audit *a, json_t *doc, json_t *summary)
{
    const sup_state *s = a->suppress;
    json_t *exp, *unused, *o;

    if (!s)
        return 0;
    if (s->n_files || s->base_file)
        if (json_object_set_new(summary, "suppressed", json_integer((json_int_t)s->n_suppressed)))
            return -ENOMEM;
    if (s->n_files) {
        json_t *files = json_array();
        exp = json_array();
        unused = json_array();
        o = json_pack("{s:o, s:I, s:I, s:o, s:o}", "files", files, "entries",
                      (json_int_t)s->n_entries, "suppressed", (json_int_t)s->n_suppressed,
                      "expired", exp, "unused", unused);
        if (!o || json_object_set_new(doc, "suppressions", o) < 0)
            return -ENOMEM;
        for (size_t i = 0; i < s->n_files; i++)
            if (json_array_append_new(files, json_string(s->files[i])) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < s->n_entries; i++) {
            const sup_entry *e = s->entries[i];
            if ((e->expired || entry_unused(e)) &&
                json_array_append_new(e->expired ? exp : unused, entry_json(e)) < 0)
                return -ENOMEM;
        }
    }
    if (s->base_file) {
        json_t *absent = json_array();
        o = json_pack("{s:s, s:I, s:I, s:I, s:o}", "file", s->base_file, "new",
                      (json_int_t)s->n_new, "unchanged", (json_int_t)s->n_unchanged, "absent",
                      (json_int_t)s->n_absent, "absent_findings", absent);
        if (!o || json_object_set_new(doc, "baseline", o) < 0)
            return -ENOMEM;
        for (size_t i = 0; i < s->n_base; i++) {
            const base_entry *b = &s->base[i];
            if (b->seen || (i && strcmp(b->fp, s->base[i - 1].fp) == 0))
                continue;
            if (json_array_append_new(absent, json_pack("{s:s, s:s, s:s, s:s}", "fingerprint",
                                                        b->fp, "rule_id", b->rule_id, "severity",
                                                        ferry_audit_severity_name(b->severity),
                                                        "resource", b->resource)) < 0)
                return -ENOMEM;
        }
    }
    return 0;
}

static json_t *notification(const char *id, const char *level, const char *text, const sup_entry *e)
{
    return json_pack("{s:{s:s}, s:s, s:{s:s}, s:[{s:{s:{s:s}, s:{s:I}}}]}", "descriptor", "id", id,
                     "level", level, "message", "text", text, "locations", "physicalLocation",
                     "artifactLocation", "uri", e->file, "region", "startLine",
                     (json_int_t)e->line);
}

static void entry_describe(const sup_entry *e, char *out, size_t outlen)
{
    (void)snprintf(out, outlen, "%s%s%s%s", e->fingerprint ? "fingerprint " : e->rule,
                   e->fingerprint ? e->fingerprint : " ",
                   e->fingerprint ? ""
                   : e->resource  ? e->resource
                                  : e->glob,
                   e->glob ? " (glob)" : "");
}

int audit_suppress_report_sarif(const ferry_audit *a, json_t *run)
{
    const sup_state *s = a->suppress;
    json_t *notes, *inv, *props;

    if (!s)
        return 0;
    if (s->n_files) {
        notes = json_array();
        inv = json_pack("[{s:b, s:o}]", "executionSuccessful", 1, "toolExecutionNotifications",
                        notes);
        if (!inv || json_object_set_new(run, "invocations", inv) < 0)
            return -ENOMEM;
        for (size_t i = 0; i < s->n_entries; i++) {
            const sup_entry *e = s->entries[i];
            char what[1024], text[1400];
            if (!e->expired && !entry_unused(e))
                continue;
            entry_describe(e, what, sizeof(what));
            if (e->expired)
                (void)snprintf(text, sizeof(text),
                               "suppression of %s expired on %s (owner %s); it suppresses "
                               "nothing and matched %zu finding%s",
                               what, e->expires_text, e->owner ? e->owner : "not named", e->matched,
                               e->matched == 1 ? "" : "s");
            else
                (void)snprintf(text, sizeof(text),
                               "suppression of %s matched no finding; remove it", what);
            if (json_array_append_new(notes,
                                      notification(e->expired ? "ferry/suppression-expired"
                                                              : "ferry/suppression-unused",
                                                   e->expired ? "warning" : "note", text, e)) < 0)
                return -ENOMEM;
        }
    }
    props = json_pack("{s:I}", "suppressed", (json_int_t)s->n_suppressed);
    if (!props)
        return -ENOMEM;
    if (s->base_file &&
        json_object_set_new(props, "baseline",
                            json_pack("{s:s, s:I, s:I, s:I}", "file", s->base_file, "new",
                                      (json_int_t)s->n_new, "unchanged", (json_int_t)s->n_unchanged,
                                      "absent", (json_int_t)s->n_absent)) < 0) {
        json_decref(props);
        return -ENOMEM;
    }
    if (json_object_set_new(run, "properties", props) < 0)
        return -ENOMEM;
    return 0;
}

/* ---- outputs: table ------------------------------------------------------------------------ */

/* Control characters never reach the terminal: the values come from files. */
static int append_clean(ferry_buf *b, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        char c = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
        r = ferry_buf_append(b, &c, 1);
    }
    return r;
}

const char *audit_suppress_table_tag(const ferry_audit *a, const ferry_audit_finding *f)
{
    const status_rec *st = status_of(a, f);
    if (!st || !st->baseline)
        return "";
    return st->baseline == FERRY_AUDIT_BASELINE_NEW ? " [new]" : " [unchanged]";
}

int audit_suppress_report_table(const ferry_audit *a, ferry_buf *b)
{
    const sup_state *s = a->suppress;
    char line[512];
    int r = 0;

    if (!s)
        return 0;
    if (s->n_files) {
        (void)snprintf(line, sizeof(line), "%zu finding%s suppressed (%zu suppression%s read)\n",
                       s->n_suppressed, s->n_suppressed == 1 ? "" : "s", s->n_entries,
                       s->n_entries == 1 ? "" : "s");
        r = ferry_buf_append_str(b, line);
        for (size_t i = 0; i < s->n_entries && r == 0; i++) {
            const sup_entry *e = s->entries[i];
            char what[1024];
            if (!e->expired && !entry_unused(e))
                continue;
            entry_describe(e, what, sizeof(what));
            r = ferry_buf_append_str(b, e->expired ? "  expired suppression "
                                                   : "  unused suppression ");
            if (r == 0)
                r = append_clean(b, e->file, 512);
            if (r == 0) {
                (void)snprintf(line, sizeof(line), ":%u: ", e->line);
                r = ferry_buf_append_str(b, line);
            }
            if (r == 0)
                r = append_clean(b, what, sizeof(what));
            if (r == 0 && e->expired) {
                (void)snprintf(line, sizeof(line),
                               " — expired %.40s, owner %.200s; matched %zu finding%s, reported "
                               "above",
                               e->expires_text, e->owner ? e->owner : "not named", e->matched,
                               e->matched == 1 ? "" : "s");
                r = append_clean(b, line, sizeof(line));
            } else if (r == 0) {
                r = ferry_buf_append_str(b, " — matched no finding");
            }
            if (r == 0)
                r = ferry_buf_append_str(b, "\n");
        }
    }
    if (s->base_file && r == 0) {
        (void)snprintf(line, sizeof(line), "baseline ");
        r = ferry_buf_append_str(b, line);
        if (r == 0)
            r = append_clean(b, s->base_file, 512);
        if (r == 0) {
            (void)snprintf(line, sizeof(line),
                           ": %zu new, %zu unchanged, %zu absent (fixed since the baseline)\n",
                           s->n_new, s->n_unchanged, s->n_absent);
            r = ferry_buf_append_str(b, line);
        }
    }
    return r;
}

/* ---- outputs: NDJSON and CSV --------------------------------------------------------------- */

int audit_render_ndjson(ferry_audit *a, json_t *tail, audit_out *o)
{
    const ferry_audit_finding *fs;
    size_t n = ferry_audit_findings(a, &fs);
    ferry_buf *b = &o->b;
    int r = 0;

    for (size_t i = 0; i < n && r == 0; i++) {
        json_t *fj = audit_finding_json(a, &fs[i]);
        json_t *rec = json_pack("{s:s}", "record", "finding");
        char *line;
        if (!fj || !rec || json_object_update(rec, fj) < 0) {
            json_decref(fj);
            json_decref(rec);
            return -ENOMEM;
        }
        json_decref(fj);
        line = audit_json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(rec);
        if (!line)
            return -ENOMEM;
        r = ferry_buf_append_str(b, line);
        free(line);
        if (r == 0)
            r = ferry_buf_append_str(b, "\n");
        if (r == 0)
            r = audit_out_spill(o, false);
    }
    if (r == 0) {
        /* The last line: the report without its findings. */
        json_t *rec = json_pack("{s:s}", "record", "summary");
        char *line;
        if (!rec || json_object_update(rec, tail) < 0) {
            json_decref(rec);
            return -ENOMEM;
        }
        line = audit_json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(rec);
        if (!line)
            return -ENOMEM;
        r = ferry_buf_append_str(b, line);
        free(line);
    }
    return r;
}

/* One CSV field, RFC 4180: always quoted, quotes doubled. A value that a spreadsheet would
 * take as a formula (first character = + - @, tab or CR) gets a leading apostrophe. */
static int csv_field(ferry_buf *b, const char *s, bool last)
{
    int r = ferry_buf_append_str(b, "\"");
    if (r == 0 && s && strchr("=+-@\t\r", s[0]) && s[0])
        r = ferry_buf_append_str(b, "'");
    for (const char *p = s ? s : ""; *p && r == 0; p++)
        r = ferry_buf_append(b, *p == '"' ? "\"\"" : p, *p == '"' ? 2 : 1);
    if (r == 0)
        r = ferry_buf_append_str(b, last ? "\"\r\n" : "\",");
    return r;
}

#define CSV_COLUMNS 17
static const char *const csv_header[CSV_COLUMNS] = {"record",
                                                    "fingerprint",
                                                    "rule_id",
                                                    "severity",
                                                    "cloud",
                                                    "account",
                                                    "resource",
                                                    "title",
                                                    "source",
                                                    "baseline",
                                                    "suppressed",
                                                    "suppression_reason",
                                                    "suppression_owner",
                                                    "suppression_expires",
                                                    "suppression_location",
                                                    "remediation",
                                                    "evidence"};

static int csv_row(ferry_buf *b, const char *const *v)
{
    int r = 0;
    for (size_t i = 0; i < CSV_COLUMNS && r == 0; i++)
        r = csv_field(b, v[i], i == CSV_COLUMNS - 1);
    return r;
}

int audit_render_csv(ferry_audit *a, audit_out *o)
{
    const ferry_audit_finding *fs;
    size_t n = ferry_audit_findings(a, &fs);
    const sup_state *s = a->suppress;
    ferry_buf *b = &o->b;
    char loc[600];
    int r = csv_row(b, csv_header);

    for (size_t i = 0; i < n && r == 0; i++) {
        const ferry_audit_finding *f = &fs[i];
        const status_rec *st = status_of(a, f);
        const sup_entry *e = st ? st->by : NULL;
        if (e)
            (void)snprintf(loc, sizeof(loc), "%s:%u", e->file, e->line);
        const char *v[CSV_COLUMNS] = {"finding",
                                      f->fingerprint,
                                      f->rule_id,
                                      ferry_audit_severity_name(f->severity),
                                      f->cloud,
                                      f->account,
                                      f->resource,
                                      f->title,
                                      f->source,
                                      st && st->baseline ? baseline_name(st->baseline) : "",
                                      e ? "yes" : "no",
                                      e ? e->reason : "",
                                      e && e->owner ? e->owner : "",
                                      e ? e->expires_text : "",
                                      e ? loc : "",
                                      f->remediation,
                                      f->evidence};
        r = csv_row(b, v);
        if (r == 0)
            r = audit_out_spill(o, false);
    }
    for (size_t i = 0; s && i < s->n_entries && r == 0; i++) {
        const sup_entry *e = s->entries[i];
        if (!e->expired && !entry_unused(e))
            continue;
        (void)snprintf(loc, sizeof(loc), "%s:%u", e->file, e->line);
        const char *v[CSV_COLUMNS] = {e->expired ? "expired-suppression" : "unused-suppression",
                                      e->fingerprint ? e->fingerprint : "",
                                      e->rule ? e->rule : "",
                                      "",
                                      e->cloud ? e->cloud : "",
                                      e->account ? e->account : "",
                                      e->resource ? e->resource
                                      : e->glob   ? e->glob
                                                  : "",
                                      "",
                                      "",
                                      "",
                                      "no",
                                      e->reason,
                                      e->owner ? e->owner : "",
                                      e->expires_text,
                                      loc,
                                      "",
                                      ""};
        r = csv_row(b, v);
    }
    for (size_t i = 0; s && i < s->n_base && r == 0; i++) {
        const base_entry *be = &s->base[i];
        if (be->seen || (i && strcmp(be->fp, s->base[i - 1].fp) == 0))
            continue;
        const char *v[CSV_COLUMNS] = {"absent",
                                      be->fp,
                                      be->rule_id,
                                      ferry_audit_severity_name(be->severity),
                                      "",
                                      "",
                                      be->resource,
                                      "",
                                      s->base_file,
                                      "absent",
                                      "no",
                                      "",
                                      "",
                                      "",
                                      "",
                                      "",
                                      ""};
        r = csv_row(b, v);
    }
    return r;
}
