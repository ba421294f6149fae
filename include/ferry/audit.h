/* ferry/audit.h - `ferry audit`: findings over cloud IAM exports (docs/internals/audit.md).
 *
 * A run (ferry_audit) takes input files one at a time: each is detected (or given a format),
 * loaded into a per-file model, checked by the rules of its cloud, and freed; only the
 * findings and small indexes stay. The findings are then rendered as a terminal table, JSON
 * ("schema": "ferry.audit/v1") or SARIF 2.1.0. Rule IDs, severities and remediations are
 * those of the rule catalogue (AUDIT-RULES.md).
 *
 * A ferry_audit is not thread-safe; separate runs are independent.
 */
#ifndef FERRY_AUDIT_H
#define FERRY_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ferry_audit_severity {
    FERRY_AUDIT_INFO = 0,
    FERRY_AUDIT_LOW,
    FERRY_AUDIT_MEDIUM,
    FERRY_AUDIT_HIGH,
    FERRY_AUDIT_CRITICAL,
} ferry_audit_severity;

typedef enum ferry_audit_output {
    FERRY_AUDIT_OUT_TABLE = 0,
    FERRY_AUDIT_OUT_JSON,
    FERRY_AUDIT_OUT_SARIF,
} ferry_audit_output;

/* Default cap on one input file (bytes). */
#define FERRY_AUDIT_DEFAULT_MAX_INPUT ((size_t)512 * 1024 * 1024)

/* Knobs of a run; zero members take the catalogue's defaults (see each). */
typedef struct ferry_audit_options {
    int64_t now;               /* clock for dated rules, epoch seconds; 0 = time(NULL) */
    unsigned unused_days;      /* AWS-SH-001; default 90 */
    unsigned key_unused_days;  /* AWS-SH-002; default 90 */
    unsigned key_max_age_days; /* AWS-SH-004; default 90 */
    unsigned grace_days;       /* skip principals/keys younger than this; default 7 */
    bool grace_days_set;       /* grace_days was given (so that 0 means 0) */
    size_t max_input;          /* largest input file; default FERRY_AUDIT_DEFAULT_MAX_INPUT */
} ferry_audit_options;

typedef struct ferry_audit ferry_audit;

/* One finding; its strings are borrowed from the run (valid until ferry_audit_free). */
typedef struct ferry_audit_finding {
    const char *rule_id; /* catalogue ID, e.g. "AWS-OP-001" */
    const char *title;   /* the rule's title */
    ferry_audit_severity severity;
    const char *cloud;       /* "aws", ... */
    const char *account;     /* account / project / subscription; "" when unknown */
    const char *resource;    /* ARN or URI of the principal or policy */
    const char *evidence;    /* compact JSON object: what triggered the rule */
    const char *remediation; /* concrete fix */
    const char *source;      /* the input file it came from */
    char fingerprint[65];    /* lowercase hex SHA-256 (docs/internals/audit.md) */
} ferry_audit_finding;

/* Create a run. opts: borrowed, may be NULL (all defaults). *ret is new (ferry_audit_free).
 * Returns 0 or -ENOMEM, -EINVAL (ret NULL). */
int ferry_audit_new(const ferry_audit_options *opts, ferry_audit **ret);
/* Free a run and its findings. Accepts NULL. */
void ferry_audit_free(ferry_audit *a);

/* Add a 12-digit AWS account id to the known accounts (AWS-TR-003 runs only once at least one
 * was added). Returns 0, -EINVAL (not 12 digits), -ENOMEM. */
int ferry_audit_add_known_account(ferry_audit *a, const char *account_id);

/* Load one input and run the rules of its cloud over it, appending findings.
 * path: a name for messages and the findings' source (borrowed, copied).
 * buf/len: the whole content (borrowed; need not be NUL-terminated).
 * format: a loader name ("aws-authz", "aws-credreport") or NULL to detect by content.
 * On failure a message naming the file, the position when known and what was expected is
 * written to errbuf ("acct.json:3:17: malformed JSON: ..."), and the run must be considered
 * spoiled (findings of that input may be partially added): report nothing from it.
 * Returns 0, -FERRY_EMALFORMED (not parseable / wrong shape), -FERRY_EUNSUPPORTED (format not
 * recognised), -FERRY_ETOOBIG (over max_input or a structural limit), -EINVAL, -ENOMEM. */
int ferry_audit_add_input(ferry_audit *a, const char *path, const void *buf, size_t len,
                          const char *format, char *errbuf, size_t errlen);

/* Finish loading: process pages held for a multi-page export. Call once after the last
 * ferry_audit_add_input. Same returns as ferry_audit_add_input. */
int ferry_audit_finish(ferry_audit *a, char *errbuf, size_t errlen);

/* True when name is a loader ferry_audit_add_input accepts as format. */
bool ferry_audit_format_known(const char *name);

/* Findings, sorted (severity descending, rule id, resource, fingerprint) at the first call
 * after loading. Returns the count; *ret_findings (optional) borrows the array, valid until the
 * next ferry_audit_add_input / ferry_audit_finish / ferry_audit_free (the strings of each
 * finding stay valid until ferry_audit_free). Call after ferry_audit_finish: the cross-account
 * trust rules are decided there. */
size_t ferry_audit_findings(ferry_audit *a, const ferry_audit_finding **ret_findings);
/* Number of findings at or above min. */
size_t ferry_audit_count_at_least(ferry_audit *a, ferry_audit_severity min);

/* Render the report. *ret is a new NUL-terminated string (free()); *ret_len its length
 * (optional). Returns 0, -EINVAL, -ENOMEM. */
int ferry_audit_render(ferry_audit *a, ferry_audit_output out, char **ret, size_t *ret_len);

/* "critical", "high", "medium", "low", "info". */
const char *ferry_audit_severity_name(ferry_audit_severity s);
/* Parse one of the names above (case-insensitive). Returns 0 or -EINVAL. */
int ferry_audit_severity_from_name(const char *name, ferry_audit_severity *ret);

/* ---- Google Cloud (gcp.c) ---------------------------------------------------------------- */

/* ---- Azure (azure.c) ---------------------------------------------------------------------- */

/* ---- Kubernetes (k8s.c) ------------------------------------------------------------------- */

/* ---- suppressions and baselines (suppress.c) ---------------------------------------------- */

/* ---- shadow identities: --policies, --usage (shadow.c) ------------------------------------ */

/* ---- AWS live mode (aws_live.c) ------------------------------------------------------------ */

#ifdef __cplusplus
}
#endif
#endif
