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
    FERRY_AUDIT_OUT_NDJSON, /* one JSON finding per line, then a summary line (suppress.c) */
    FERRY_AUDIT_OUT_CSV,    /* RFC 4180, formula-safe (suppress.c) */
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

/* ferry_audit_add_input in two steps, so that a program can parse the next input in another
 * thread while the run audits the current one (the CLI does; docs/internals/audit.md):
 * ferry_audit_parse checks the size, finds the format and parses a JSON input, reading only
 * the run's options (safe to call while another thread calls ferry_audit_add_parsed on the
 * same run); ferry_audit_add_parsed detects, loads and audits it, in input order, reporting
 * the refusals of either step as ferry_audit_add_input does; ferry_audit_parsed_free releases
 * the parsed document (in any thread, after ferry_audit_add_parsed returned). buf must stay
 * valid until then. ferry_audit_parse returns 0 and sets *ret (also for an input it refuses:
 * the refusal is ferry_audit_add_parsed's return), or -EINVAL / -ENOMEM. */
typedef struct ferry_audit_parsed ferry_audit_parsed;
int ferry_audit_parse(const ferry_audit *a, const char *path, const void *buf, size_t len,
                      const char *format, ferry_audit_parsed **ret);
int ferry_audit_add_parsed(ferry_audit *a, ferry_audit_parsed *p, char *errbuf, size_t errlen);
void ferry_audit_parsed_free(ferry_audit_parsed *p);
/* The calling thread's cache of small jansson blocks (kept while a run exists) is given back
 * to malloc: a thread that parsed inputs calls it before it ends. */
void ferry_audit_thread_end(void);

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

/* Receives the next len bytes (len > 0) of a report from ferry_audit_write. Returns 0, or a
 * negative errno that stops the rendering and is returned by ferry_audit_write. */
typedef int (*ferry_audit_write_fn)(const char *buf, size_t len, void *data);
/* Render the report as ferry_audit_render does (the same bytes), handing it to write piece by
 * piece, so that the text is never held whole: at most one piece (about 64 KiB) and one
 * finding's tree at a time. A failure after the first piece leaves the receiver with a cut
 * report. Returns 0, -EINVAL, -ENOMEM, or write's code. */
int ferry_audit_write(ferry_audit *a, ferry_audit_output out, ferry_audit_write_fn write,
                      void *data);

/* "critical", "high", "medium", "low", "info". */
const char *ferry_audit_severity_name(ferry_audit_severity s);
/* Parse one of the names above (case-insensitive). Returns 0 or -EINVAL. */
int ferry_audit_severity_from_name(const char *name, ferry_audit_severity *ret);

/* ---- Google Cloud (gcp.c) ---------------------------------------------------------------- */

/* Add a project (id or number) to the trusted projects (--trusted-projects): its service
 * accounts bound here are not GCP-SH-008 findings. The projects audited in the run are always
 * trusted. Returns 0, -EINVAL (not a project id/number), -ENOMEM. */
int ferry_audit_gcp_trust_project(ferry_audit *a, const char *project);
/* Apply the OP rules to Google-managed service agents too (--include-service-agents).
 * Returns 0, -EINVAL, -ENOMEM. */
int ferry_audit_gcp_include_service_agents(ferry_audit *a, bool include);
/* The resource the get-iam-policy inputs of the run are of (--gcp-resource): "projects/ID",
 * "folders/N" or "organizations/N" (or the //cloudresourcemanager.googleapis.com/ form).
 * Without it the project is derived from the policy's service-account members. Returns 0,
 * -EINVAL (not such a name), -ENOMEM. */
int ferry_audit_gcp_set_resource(ferry_audit *a, const char *resource);

/* ---- Azure (azure.c) ---------------------------------------------------------------------- */

/* Add a tenant id (GUID) to the trusted tenants (--trusted-tenants): service principals of
 * applications owned by it are not third parties for AZ-TR-001. The tenants whose service
 * principal lists the run reads, and Microsoft's first-party tenant, are always trusted.
 * Returns 0, -EINVAL (not a GUID), -ENOMEM. */
int ferry_audit_azure_trust_tenant(ferry_audit *a, const char *tenant_id);

/* ---- Kubernetes (k8s.c) ------------------------------------------------------------------- */

/* Name the Kubernetes cluster the run's Kubernetes inputs come from: the account of their
 * findings and identities ("cluster" when not set). All Kubernetes inputs of one run are one
 * cluster. name: borrowed (copied), 1-253 printable characters without spaces. Call before
 * the inputs. Returns 0, -EINVAL, -ENOMEM. */
int ferry_audit_k8s_set_cluster(ferry_audit *a, const char *name);

/* ---- suppressions and baselines (suppress.c) ---------------------------------------------- */

/* Suppressions expire at most this many days after the run's clock (options.now). */
#define FERRY_AUDIT_SUPPRESS_MAX_DAYS 366

/* Read a suppression file (YAML, or JSON; format in docs/internals/audit.md) and add its
 * entries to the run. Call before ferry_audit_finish, which decides what they suppress; may be
 * called for several files. path: for messages and the report (borrowed, copied); buf/len:
 * the whole content (borrowed). On failure nothing of the file is kept and errbuf says
 * "FILE:LINE: what is wrong" (a missing reason or expires, an expiry more than
 * FERRY_AUDIT_SUPPRESS_MAX_DAYS ahead, an unknown member or rule id, ...).
 * Returns 0, -FERRY_EMALFORMED, -FERRY_ETOOBIG (over 4 MiB or 10,000 entries), -EINVAL,
 * -ENOMEM. */
int ferry_audit_add_suppressions(ferry_audit *a, const char *path, const void *buf, size_t len,
                                 char *errbuf, size_t errlen);

/* Use a previous report (ferry audit --output-format json, schema ferry.audit/v1) as the
 * baseline: findings whose fingerprint it holds are "unchanged" and do not count for
 * ferry_audit_count_at_least. Once per run, before ferry_audit_finish. Arguments and errors as
 * ferry_audit_add_suppressions; the size cap is options.max_input. Returns 0,
 * -FERRY_EMALFORMED (not JSON, or not a ferry.audit/v1 report), -FERRY_ETOOBIG, -EINVAL (a
 * second baseline), -ENOMEM. */
int ferry_audit_set_baseline(ferry_audit *a, const char *path, const void *buf, size_t len,
                             char *errbuf, size_t errlen);

typedef enum ferry_audit_baseline_state {
    FERRY_AUDIT_BASELINE_NONE = 0, /* no baseline given */
    FERRY_AUDIT_BASELINE_NEW,
    FERRY_AUDIT_BASELINE_UNCHANGED,
} ferry_audit_baseline_state;

/* What the suppressions and the baseline decided for one finding. Strings borrowed from the
 * run (valid until ferry_audit_free); NULL when not suppressed or not given. */
typedef struct ferry_audit_finding_state {
    bool suppressed;
    const char *reason, *owner, *expires; /* of the suppression that applies */
    const char *file;                     /* the suppression file and the entry's line */
    unsigned line;
    ferry_audit_baseline_state baseline;
} ferry_audit_finding_state;

/* Fill *ret for f (a finding of a, after ferry_audit_finish). Never fails; all-zero when
 * neither suppressions nor a baseline were given. */
void ferry_audit_finding_status(const ferry_audit *a, const ferry_audit_finding *f,
                                ferry_audit_finding_state *ret);

/* ---- shadow identities: --policies, --usage (shadow.c) ------------------------------------ */

struct ferry_policy_set;
struct ferry_jwks;

/* Compare the service identities of the inputs with the workload identities ferry's policies
 * declare (docs/internals/audit.md, "Shadow identities"): grant.aws[].role_arn,
 * grant.gcp[].service_account, grant.azure[] (client id, with its tenant) and the Kubernetes
 * service accounts a policy matches (match.subject or subject_glob "system:serviceaccount:...",
 * with its issuer). Enables. ferry_issuer (borrowed, copied; may be NULL) is the
 * issuer ferry's tokens carry (ferryd's "issuer"): an undeclared identity that trusts it is
 * X-004 at medium. set: a new reference is taken. Call before the first input.
 * Returns 0, -EINVAL (a or set NULL, inputs already added, called twice, empty issuer), -ENOMEM. */
int ferry_audit_set_policies(ferry_audit *a, struct ferry_policy_set *set,
                             const char *ferry_issuer);

/* Read ferry's own audit log (ferryd's audit_log, docs/internals/auditlog.md) for X-005: the
 * policies through which no token exchange was allowed within --unused-days. The log is
 * verified while it is read (ferry_auditlog_verify, live: the tail after the last checkpoint
 * counts); keys (borrowed, may be NULL) verify the checkpoint signatures, without them only
 * the chain and the checkpoints' shape are checked. Needs ferry_audit_set_policies first.
 * Returns 0; -FERRY_EREFUSED when the log does not verify (errbuf: "PATH: not a valid ferry
 * audit log: line N (seq S): reason"); -EINVAL; -errno when it cannot be read; -ENOMEM. */
int ferry_audit_add_usage(ferry_audit *a, const char *path, const struct ferry_jwks *keys,
                          char *errbuf, size_t errlen);

/* ---- AWS live mode (aws_live.c) ------------------------------------------------------------ */

/* Where and how `ferry audit aws --live` reads IAM. Zero members take the defaults. */
typedef struct ferry_audit_aws_live_options {
    const char *region;       /* region of the credential chain (STS for web identity);
                               * NULL = $AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1. IAM is
                               * global: its calls are always signed for us-east-1 */
    const char *endpoint_url; /* IAM endpoint "https://host[:port]"; NULL =
                               * https://iam.amazonaws.com. http:// is accepted to 127.0.0.1 /
                               * [::1] only (a local emulator) */
    unsigned max_pages;       /* GetAccountAuthorizationDetails pages; 0 = 1000 */
    unsigned report_wait_s;   /* wait for the credential report; 0 = 120 */
    unsigned usage_wait_s;    /* wait for all service-last-accessed jobs; 0 = 600 */
    unsigned usage_jobs;      /* jobs outstanding at once; 0 = 8 */
    unsigned max_principals;  /* roles and users given a service-last-accessed job; 0 = 10000 */
} ferry_audit_aws_live_options;

/* Read the account the standard AWS credential chain names (environment keys, web identity
 * with STS at $AWS_ENDPOINT_URL_STS when set, the shared config profile: ferry/cloud.h)
 * through IAM's Query API, signed with SigV4:
 * GetAccountAuthorizationDetails (every page), the credential report (generated, then fetched)
 * and service-last-accessed details for every role and user. Each answer goes through the
 * same loaders as the exports (aws-authz, aws-credreport-json, aws-last-accessed), so the same
 * rules run; call ferry_audit_finish afterwards as for files. When the endpoint does not
 * implement service-last-accessed, AWS-OP-011 is the info note "not evaluated". opts: borrowed,
 * may be NULL. On failure errbuf names the call and what went wrong (never a secret, never the
 * remote's message) and the run is spoiled. Returns 0, -FERRY_ECONFIG (no credentials, bad
 * endpoint), -EACCES (refused), -EAGAIN (throttled past the retries), -ETIMEDOUT,
 * -FERRY_EFETCH, -FERRY_EMALFORMED, -FERRY_ETOOBIG, -ENOMEM. Not thread-safe (one run). */
int ferry_audit_aws_live(ferry_audit *a, const ferry_audit_aws_live_options *opts, char *errbuf,
                         size_t errlen);

/* ---- IaC inventory and owner tags (iac.c) ------------------------------------------------ */

/* Add an infrastructure-as-code inventory: `terraform show -json` (state or plan) or
 * CloudFormation describe-stack-resources / list-stack-resources JSON. Once one is added,
 * AWS roles and users (AWS-SH-010) and Google service accounts (GCP-SH-009) it does not
 * declare are reported as unmanaged. Call before the inputs. Returns 0, -FERRY_EMALFORMED,
 * -FERRY_ETOOBIG, -EINVAL, -ENOMEM, with a message naming path in errbuf. */
int ferry_audit_add_iac_inventory(ferry_audit *a, const char *path, const void *buf, size_t len,
                                  char *errbuf, size_t errlen);
/* Tag keys (comma-separated, case-insensitive, e.g. "owner,team") whose presence with a
 * non-empty value names an owner: AWS roles and users without one get AWS-SH-009. Without
 * this call AWS-SH-009 does not run. Returns 0, -EINVAL (empty or control characters),
 * -ENOMEM. */
int ferry_audit_set_owner_tag_keys(ferry_audit *a, const char *keys);

#ifdef __cplusplus
}
#endif
#endif
