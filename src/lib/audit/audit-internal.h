/* audit/audit-internal.h - what the cloud files of the audit module share with core.c.
 *
 * A cloud (aws.c; later gcp.c, azure.c, k8s.c) provides one audit_cloud: its rule table and
 * its loaders. core.c lists the clouds in one array and does everything around them:
 * detection, findings, fingerprints, outputs. See docs/internals/audit.md.
 */
#ifndef FERRY_AUDIT_INTERNAL_H
#define FERRY_AUDIT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "basic/buf.h"
#include "basic/macro.h"
#include "ferry/audit.h"

/* Deepest JSON nesting accepted in an input (IAM exports nest about 10 levels). */
#define AUDIT_JSON_MAX_DEPTH 64

/* One rule of the catalogue. */
typedef struct audit_rule {
    const char *id;                /* "AWS-OP-001" */
    const char *title;             /* short, as in the catalogue */
    ferry_audit_severity severity; /* default severity */
    const char *help;              /* what it checks (SARIF fullDescription / help) */
    const char *remediation;       /* concrete fix, copied into each finding */
} audit_rule;

/* One input format. Exactly one of detect_json / detect_text is set. */
typedef struct audit_loader {
    const char *format;   /* name for --format and the JSON output: "aws-authz" */
    const char *expected; /* what the format looks like, for "not recognised" messages */
    bool (*detect_json)(const json_t *doc);
    bool (*detect_text)(const char *buf, size_t len);
    /* Build the model of one input and run the rules. doc: the parsed document (borrowed)
     * for JSON formats; NULL for text formats, which get buf/len (for JSON formats buf/len
     * are the raw text too). Writes "what was wrong" (without the path) to errbuf on
     * failure. Returns 0 or a negative code. */
    int (*load)(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                char *errbuf, size_t errlen);
} audit_loader;

typedef struct audit_cloud {
    const char *name; /* "aws" */
    const audit_rule *rules;
    size_t n_rules;
    const audit_loader *loaders;
    size_t n_loaders;
    /* Flush held state after the last input (NULL when the cloud holds none). */
    int (*finish)(ferry_audit *a, char *errbuf, size_t errlen);
    /* Free the cloud's per-run state (NULL when none). */
    void (*release)(ferry_audit *a);
} audit_cloud;

extern const audit_cloud audit_cloud_aws;
extern const audit_cloud audit_cloud_gcp;   /* gcp.c */
extern const audit_cloud audit_cloud_azure; /* azure.c */
extern const audit_cloud audit_cloud_k8s;   /* k8s.c */

/* A set of strings (strset.c), for the clouds' cross-file records and the findings' sources:
 * each distinct string stored once in an arena of chunks, so a pointer it returns stays valid
 * and equal for equal strings until audit_strset_release. Not thread-safe. */
typedef struct audit_strset {
    struct audit_strset_chunk *chunks; /* newest first */
    size_t used;                       /* bytes used in the newest chunk */
    const char **slots;                /* open addressing (linear probing), NULL = free */
    size_t n_slots, n;
    size_t bytes, max_bytes; /* arena bytes held, and the most allowed */
} audit_strset;
/* An empty table that holds at most max_bytes of strings. */
void audit_strset_init(audit_strset *t, size_t max_bytes);
void audit_strset_release(audit_strset *t);
/* The table's copy of s (borrowed from the table) in *ret. -ENOMEM, or -FERRY_EFULL when the
 * arena would pass its maximum. */
int audit_strset_intern(audit_strset *t, const char *s, const char **ret);
/* The table's copy of s, or NULL when s was never interned. */
const char *audit_strset_find(const audit_strset *t, const char *s);

/* Records put aside in a temporary file under a key (spill.c): a cloud keeps the cross-file
 * records of the scope it works on (an AWS account) in memory and puts the others' here, to
 * take them back when their scope comes up again or the run finishes. The file is made on the
 * first put in $TMPDIR (else /tmp), 0600, unlinked at once. Not thread-safe. */
typedef struct audit_spill {
    int fd;        /* -1 until the first put */
    uint64_t size; /* bytes written */
    uint64_t live; /* bytes of the segments not taken back yet */
    /* Copy the live segments to a new file when the dead bytes pass this and twice the live
     * ones (AUDIT_SPILL_COMPACT; tests lower it), so the file stays within three times what it
     * holds whatever the order of puts and takes. */
    uint64_t compact_at;
    audit_strset keys;
    struct audit_spill_seg *segs; /* every segment, chained per key and into a free list */
    size_t n_segs, alloc_segs;
    uint32_t free_seg;             /* first free entry of segs: index + 1, 0 none */
    struct audit_spill_key *slots; /* open addressing by interned key */
    size_t n_slots, n_keys;
    const char *dir; /* where the file is (the environment's string) */
    char why[256];   /* what failed with the file, for the error message ("" none) */
} audit_spill;
void audit_spill_init(audit_spill *sp);
void audit_spill_release(audit_spill *sp); /* closes (and so deletes) the file */
/* Put len bytes aside as one segment under key. Returns 0, -errno of the file (ENOSPC...),
 * -ENOMEM or -FERRY_EFULL (64 GiB in all, 1 GiB a segment). A failure of the file also says
 * what failed in why. */
int audit_spill_put(audit_spill *sp, const char *key, const void *data, size_t len);
/* r, with the text of what failed with the file in errbuf when that is why r failed. */
int audit_spill_error(const audit_spill *sp, int r, char *errbuf, size_t errlen);
/* Something is put aside under key. */
bool audit_spill_holds(const audit_spill *sp, const char *key);
/* Hand each segment of key to fn (data valid during the call), in the order put, and forget
 * them (all of them, even when fn or a read fails; what fn puts under key is kept). Returns 0,
 * fn's negative code, -EIO / -errno of the file or -ENOMEM. */
int audit_spill_take(audit_spill *sp, const char *key,
                     int (*fn)(void *userdata, const char *data, size_t len), void *userdata);
/* What a segment is made of: fixed-size fields as their bytes (ferry_buf_append) and strings
 * as audit_rec_put_str writes them (length, bytes, NUL; NULL has a length of its own). */
int audit_rec_put_str(struct ferry_buf *b, const char *s);
typedef struct audit_rec_reader {
    const char *p;
    size_t left;
} audit_rec_reader;
/* Read n bytes into out; a string (a pointer into the segment, or NULL). -EIO when the
 * segment is shorter or a string is not what audit_rec_put_str wrote. */
int audit_rec_get(audit_rec_reader *rd, void *out, size_t n);
int audit_rec_get_str(audit_rec_reader *rd, const char **ret);

struct ferry_audit {
    ferry_audit_options opts;
    ferry_audit_finding *findings;
    size_t n_findings, alloc_findings;
    bool sorted;
    char **known_accounts; /* sorted after each add */
    size_t n_known;
    json_t *inputs; /* [{path, format}] */
    /* The fingerprints emitted, one finding per fingerprint (core.c: an open-addressing
     * table of finding indexes + 1; stale after the findings are sorted). */
    uint32_t *seen_slots;
    size_t n_seen_slots;
    bool seen_stale;
    audit_strset sources; /* the findings' sources, one copy per distinct string */
    void *aws;            /* aws.c's per-run state (page merging, policy cache) */
    void *gcp;            /* gcp.c's per-run state */
    void *azure;          /* azure.c's per-run state */
    void *k8s;            /* k8s.c's per-run state */
    void *shadow;         /* shadow.c: declared identities (--policies), usage (--usage) */
    void *suppress;       /* suppress.c: suppressions (--suppress) and baseline (--baseline) */
    /* Where in the current input's JSON a loader error is, as "/member/index/..." (empty when
     * unknown); core.c turns it into a line number. */
    char err_where[256];
    json_t *iac;            /* iac.c: identity keys of the IaC inventories, or NULL (none given) */
    json_t *owner_tag_keys; /* iac.c: lower-case tag keys naming an owner (a set), or NULL */
    /* Cross-file records a cloud keeps in memory before it puts those of the scopes it is not
     * working on in its audit_spill (AUDIT_SPILL_AFTER; unit tests lower it). */
    size_t spill_after;
    /* What failed with a temporary file where the code that failed had no error buffer (the
     * shadow identities' notes): core.c's message for the input then ("" none). */
    char spill_why[256];
};

#ifndef AUDIT_SPILL_AFTER /* -DAUDIT_SPILL_AFTER=1 runs every test with records put aside */
#define AUDIT_SPILL_AFTER ((size_t)1 << 16)
#endif

/* Where a report goes (core.c): appended to b, and handed to write in pieces of about 64 KiB
 * when write is set (ferry_audit_write); with write NULL everything stays in b
 * (ferry_audit_render). Renderers append to b and call audit_out_spill after each finding. */
typedef struct audit_out {
    struct ferry_buf b;
    ferry_audit_write_fn write;
    void *data;
    size_t spilled; /* bytes already handed to write */
} audit_out;

/* Hand b's content to write when it holds a piece's worth (everything when all) and empty it.
 * A no-op without write. Returns 0 or write's negative code. */
int audit_out_spill(audit_out *o, bool all);

/* Record where in the current input's JSON document the error a loader is about to return
 * lies: components joined with '/', array indexes in decimal ("/RoleDetailList/3"). */
void audit_error_where(ferry_audit *a, const char *fmt, ...) _printf_(2, 3);

/* The rule with this id in any cloud, or NULL. */
const audit_rule *audit_rule_find(const char *id);

/* Append a finding of rule_id (which must be in a rule table), unless one with the same
 * fingerprint is already there (the same account in two inputs). severity < 0 takes the rule's
 * default. account/resource/source: borrowed strings (copied; NULL = ""). evidence: borrowed
 * JSON object, serialised compactly with sorted keys. evidence_key: the stable part that
 * distinguishes findings of one rule on one resource (docs/internals/audit.md). Returns 0,
 * -EINVAL (unknown rule), -ENOMEM. */
int audit_emit(ferry_audit *a, const char *rule_id, int severity, const char *cloud,
               const char *account, const char *resource, const json_t *evidence,
               const char *evidence_key, const char *source);

/* json_dumps() that fails (NULL) instead of returning a damaged text when memory runs out.
 * The result is new (free()). */
char *audit_json_dumps(const json_t *j, size_t flags);

/* Room for one more element of size bytes in the array *p that holds n (== *alloc when full):
 * the capacity doubles from first, never past max elements (nor SIZE_MAX bytes). 0, -ENOMEM,
 * or -FERRY_EFULL at the maximum. */
int audit_vec_room(void *p, size_t *alloc, size_t n, size_t size, size_t first, size_t max);

/* The tree of a text audit_json_dumps made (kept evidence, statements, rules), new; NULL only
 * when memory ran out. ferry_json_parse underneath: jansson's own parser can drop a character
 * of a string when an allocation fails, and return the damaged tree. */
json_t *audit_json_reparse(const char *text);

/* Parse a JSON text of an input under the run's size cap and AUDIT_JSON_MAX_DEPTH. On a
 * syntax error errbuf gets "LINE:COL: malformed JSON: reason" (no path). *ret is new. */
int audit_parse_json(const ferry_audit *a, const void *buf, size_t len, json_t **ret, char *errbuf,
                     size_t errlen);

/* Parse a timestamp in the forms the exports use: "YYYY-MM-DD[T ]HH:MM:SS[.fff](Z|±HH:MM|
 * ±HHMM)" (no zone = UTC) or a bare "YYYY-MM-DD". Returns 0 or -EINVAL. */
int audit_parse_time(const char *s, int64_t *ret_epoch);

/* Lowercase hex SHA-256 of len bytes. Returns 0 or -FERRY_ECRYPTO. */
int audit_sha256_hex(const void *data, size_t len, char out[65]);

/* How many policy documents the AWS rules analysed, and how many analyses they took from
 * the cache instead (tests). */
void audit_aws_cache_stats(const ferry_audit *a, size_t *ret_analysed, size_t *ret_reused);
/* AWS's cross-file records in memory (grants, usage data, trusts) and the bytes put in its
 * temporary file (tests). */
size_t audit_aws_records(const ferry_audit *a, uint64_t *ret_spilled);

/* GCP's cross-file records in memory (SA records and index entries, uniqueId entries, held
 * OP-002/SH-008/SH-005 candidates, SA -> pool entries) and the bytes put in its temporary file
 * (tests). */
size_t audit_gcp_records(const ferry_audit *a, uint64_t *ret_spilled);

/* ---- AWS policy evaluation shared by aws.c and aws_graph.c ---------------------------- */

/* Some statement of docs (an array of policy documents) allows action on resource and none
 * denies it; statements with a Condition count on neither side. */
bool audit_aws_allowed(const json_t *docs, const char *action, const char *resource);
/* Some unconditional Allow statement of docs covers action, on whatever resource. */
bool audit_aws_action_allowed(const json_t *docs, const char *action);
/* The IAM action pattern (glob, case-insensitive) matches action. */
bool audit_aws_glob_action(const char *pattern, const char *action);

/* AWS-OP-006 (aws_graph.c): the escalation graph of one account's principals. */
typedef struct aws_graph aws_graph;
int audit_aws_graph_new(aws_graph **ret);
void audit_aws_graph_free(aws_graph *g);
/* Add a user (role false) or role with its documents and trust policy (held, not copied).
 * admin: full admin or admin-equivalent. Returns 0, -ENOMEM, -FERRY_ETOOBIG. */
int audit_aws_graph_add(aws_graph *g, bool role, const char *arn, const char *account, json_t *docs,
                        json_t *trust, bool admin);
/* Build the edges and emit AWS-OP-006 for each non-admin principal with a path to an admin
 * one. Returns 0 or a negative code. */
int audit_aws_graph_run(aws_graph *g, ferry_audit *a, const char *path);

/* ---- IaC inventory and owner tags (iac.c) ------------------------------------------------ */

/* An inventory was given (AWS-SH-010 and GCP-SH-009's unmanaged half run only then). */
bool audit_iac_loaded(const ferry_audit *a);
/* The inventory declares this role (role true) or user, by ARN or by name in its account. */
bool audit_iac_manages_aws(const ferry_audit *a, const char *arn, const char *account, bool role,
                           const char *name);
/* The inventory declares this Google service account. */
bool audit_iac_manages_gcp(const ferry_audit *a, const char *email);
/* tags ([{Key, Value}]) hold a non-empty value under one of the owner tag keys. */
bool audit_owner_tagged(const ferry_audit *a, const json_t *tags);

/* True when account_id was added with ferry_audit_add_known_account. */
bool audit_account_known(const ferry_audit *a, const char *account_id);
/* The run's clock (options.now or the time the run was created). */
int64_t audit_now(const ferry_audit *a);

/* ---- Kubernetes (k8s.c) ------------------------------------------------------------------- */

/* k8s.c's string table: each distinct string stored once, named by a nonzero uint32_t id.
 * Exposed for the unit test. _new: max_bytes (2..UINT32_MAX) bounds the arena. _intern: the id
 * of str, added when new (str must not point into the table); 0, -ENOMEM, -FERRY_ETOOBIG.
 * _find: the id of str, 0 when absent. _str: the string of an id (NULL for 0), good until the
 * next _intern. Not thread-safe. */
typedef struct audit_strtab audit_strtab;
int audit_k8s_strtab_new(size_t max_bytes, audit_strtab **ret);
void audit_k8s_strtab_free(audit_strtab *t);
int audit_k8s_intern(audit_strtab *t, const char *str, uint32_t *ret_id);
uint32_t audit_k8s_strtab_find(const audit_strtab *t, const char *str);
const char *audit_k8s_str(const audit_strtab *t, uint32_t id);
size_t audit_k8s_strtab_bytes(const audit_strtab *t);
/* Bytes of the Kubernetes cross-file records of a run; the numbers of bindings and
 * ServiceAccounts they hold in *ret_bindings / *ret_sas (either may be NULL). */
size_t audit_k8s_state_bytes(const ferry_audit *a, size_t *ret_bindings, size_t *ret_sas);

/* ---- service identities, for the shadow-identity rules (shadow.c) -------------------------
 *
 * Every cloud loader reports each service identity it sees (one call per identity per input;
 * calls for the same cloud/account/id merge their flags and issuers). shadow.c compares them
 * with the identities ferry's policies declare (--policies) once the run finishes. Without
 * --policies the call returns 0 at once and keeps nothing. */
enum {
    AUDIT_ID_STATIC_CRED = 1u << 0, /* holds an active long-lived credential: active AWS access
                                     * key, enabled user-managed GCP key, unexpired Azure client
                                     * secret, Kubernetes legacy token secret */
    AUDIT_ID_FEDERATED = 1u << 1,   /* can obtain credentials by federation or assumption: AWS
                                     * role, GCP SA bound for WIF/impersonation, Azure federated
                                     * credential, Kubernetes SA */
    AUDIT_ID_USED = 1u << 2,        /* evidence of use within --unused-days */
    AUDIT_ID_UNUSED = 1u << 3,      /* evidence of no use within --unused-days */
    AUDIT_ID_DISABLED = 1u << 4,    /* disabled in the cloud */
    AUDIT_ID_MANAGED = 1u << 5,     /* cloud-managed (service-linked role, service agent,
                                     * first-party Microsoft SP, system: SA): never shadow */
    AUDIT_ID_HUMAN = 1u << 6,       /* a person's account (AWS user with a console password) */
};

typedef struct audit_identity {
    const char *cloud;   /* "aws", "gcp", "azure", "k8s" */
    const char *account; /* account id, project id, tenant id, cluster name ("" unknown) */
    const char *id;      /* canonical: AWS ARN; GCP SA email; Azure SP appId;
                          * Kubernetes "system:serviceaccount:NS:NAME" */
    const char *alias;   /* another name a policy may use (Azure objectId, GCP uniqueId), or NULL */
    unsigned flags;      /* AUDIT_ID_* */
    const char *const *issuers; /* OIDC issuers it trusts by federation, as written in the
                                 * export (URL, host or provider ARN); NULL-terminated or NULL */
    const char *source;         /* the input file */
} audit_identity;

/* Note one identity (strings borrowed, copied when kept). Returns 0 or -ENOMEM (also -EINVAL
 * for an unknown cloud or an empty id, -FERRY_ETOOBIG past SHADOW_* limits in shadow.c). */
int audit_identity_note(ferry_audit *a, const audit_identity *id);
/* The identities held in memory for the shadow rules and the bytes put in the temporary file
 * (tests). */
size_t audit_shadow_held(const ferry_audit *a, uint64_t *ret_spilled);

/* The cross-cloud rules, X-005 (shadow.c; no loaders). */
extern const audit_cloud audit_cloud_x;
/* Decide the shadow-identity rules; core.c calls it after every cloud's finish. */
int audit_shadow_finish(ferry_audit *a, char *errbuf, size_t errlen);

/* ---- suppressions, baseline, NDJSON and CSV (suppress.c) ----------------------------------- */

struct ferry_buf;

/* The object of one finding in the JSON and NDJSON reports, with its suppressed/baseline
 * members (core.c). New reference, NULL when memory runs out. */
json_t *audit_finding_json(const ferry_audit *a, const ferry_audit_finding *f);
/* The format name of the i-th loader over all clouds, NULL past the last (fuzz target). */
const char *audit_loader_format(size_t i);
/* Decide what the suppressions suppress and what the baseline knows (ferry_audit_finish).
 * Returns 0 or -ENOMEM. */
int audit_suppress_apply(ferry_audit *a);
void audit_suppress_release(ferry_audit *a); /* ferry_audit_free */
/* f is suppressed (left out of the counts and the exit code, shown in JSON and SARIF). */
bool audit_suppressed(const ferry_audit *a, const ferry_audit_finding *f);
/* f counts for the exit code: not suppressed and not unchanged since the baseline. */
bool audit_counts_for_exit(const ferry_audit *a, const ferry_audit_finding *f);
/* Add "suppressed"/"baseline" to a finding's JSON object o, and suppressions/baselineState
 * to a SARIF result. Returns 0 or -ENOMEM. */
int audit_suppress_decorate_json(const ferry_audit *a, const ferry_audit_finding *f, json_t *o);
int audit_suppress_decorate_sarif(const ferry_audit *a, const ferry_audit_finding *f, json_t *o);
/* The report sections: "suppressions" and "baseline" in the JSON document (and
 * summary.suppressed); invocations (expired/unused notifications) and properties in the SARIF
 * run; lines after the table's summary. Return 0 or -ENOMEM / -E2BIG. */
int audit_suppress_report_json(const ferry_audit *a, json_t *doc, json_t *summary);
int audit_suppress_report_sarif(const ferry_audit *a, json_t *run);
int audit_suppress_report_table(const ferry_audit *a, struct ferry_buf *b);
/* " [new]" or " [unchanged]" after a finding's title in the table; "" without a baseline. */
const char *audit_suppress_table_tag(const ferry_audit *a, const ferry_audit_finding *f);
/* NDJSON: one line per finding, then the JSON report doc without findings as the last line.
 * CSV: header, one row per finding, then expired/unused suppressions and absent baseline
 * findings. Return 0 or -ENOMEM / -E2BIG. */
int audit_render_ndjson(ferry_audit *a, json_t *doc, audit_out *o);
int audit_render_csv(ferry_audit *a, audit_out *o);

#endif
