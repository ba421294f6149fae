/* ferry/audit.c - `ferry audit`: over-permissioned and shadow service identities from cloud IAM
 * exports (docs/internals/audit.md).
 *
 * Reads and audits every input before printing anything, so an unreadable input gives one
 * error line on stderr, exit 2 and no report. Exit 1 when findings at or above --fail-on
 * remain, 0 otherwise.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/fileio.h"
#include "basic/macro.h"
#include "ferry/audit.h"
#include "ferry/error.h"
#include "ferry/ferry.h"
#include "ferry/jose.h"
#include "ferry/json.h"
#include "ferry/policy.h"

#define PROG "ferry audit"
/* Largest --known-accounts file. */
#define KNOWN_ACCOUNTS_MAX (16 * 1024 * 1024)
/* Largest ferryd configuration read for --ferryd-config (ferryd's own limit). */
#define FERRYD_CONFIG_MAX (1024 * 1024)
/* Policy problems printed before "and N more". */
#define POLICY_PROBLEMS_SHOWN 20

DEFINE_TRIVIAL_CLEANUP_FUNC(ferry_audit *, ferry_audit_free);

static void usage_audit(FILE *f)
{
    fprintf(f,
            "usage: ferry audit [OPTIONS] FILE|DIR...\n"
            "       ferry audit aws --live [--region R] [--endpoint-url URL] [OPTIONS] [FILE]\n"
            "\n"
            "Audit cloud IAM exports for over-permissioned and shadow service identities,\n"
            "with the rule catalogue of docs/internals/audit.md. Each FILE (- reads stdin) is\n"
            "recognised by its content:\n"
            "  aws-authz            aws iam get-account-authorization-details (one page, the\n"
            "                       CLI's merged output, or a JSON array of pages; pages with\n"
            "                       IsTruncated continue in the next FILE)\n"
            "  aws-credreport       the credential report CSV\n"
            "  aws-credreport-json  aws iam get-credential-report (Content base64 or decoded)\n"
            "  aws-last-accessed    aws iam get-service-last-accessed-details (OP-011): with\n"
            "                       an Arn member, an array of such, an object keyed by ARN,\n"
            "                       one object a line (NDJSON), or in a file named by the\n"
            "                       URL-encoded ARN (CloudMapper: a DIR of them; or its\n"
            "                       job-id layout: the generate-... and get-... DIRs)\n"
            "  azure-sp             az ad sp list --all (Graph servicePrincipals; $expand=owners\n"
            "                       is read too)\n"
            "  azure-app            az ad app list --all (Graph applications; an expanded\n"
            "                       federatedIdentityCredentials is read too)\n"
            "  azure-role-assignments  az role assignment list --all --include-inherited, or\n"
            "                       the ARM REST {value: [{properties: ...}]} shape\n"
            "  azure-role-definitions  az role definition list (CLI or ARM REST shape)\n"
            "  azure-signins        Graph beta reports/servicePrincipalSignInActivities\n"
            "  azure-cred-signins   Graph beta reports/appCredentialSignInActivities\n"
            "  azure-directory-roles  Graph roleManagement/directory/roleAssignments\n"
            "  azure-app-role-assignments  Graph servicePrincipals/ID/appRoleAssignments\n"
            "  azure-owners         az ad sp/app owner list (the owned object from the file\n"
            "                       name's last _part), or [{id, owners: [...]}]\n"
            "  azure-identities     az identity list\n"
            "  azure-federated-creds  az ad app / az identity federated-credential list\n"
            "  azure-resources      az resource list (identity.userAssignedIdentities)\n"
            "                       Azure lists may be bare arrays or {\"value\": [...]} pages\n"
            "  gcp-sa-list          gcloud iam service-accounts list --format=json\n"
            "  gcp-sa-keys          gcloud iam service-accounts keys list (an array per SA;\n"
            "                       several concatenated one per line)\n"
            "  gcp-iam-policy       gcloud projects/folders/organizations get-iam-policy (the\n"
            "                       project is derived from its service accounts, or named\n"
            "                       with --gcp-resource)\n"
            "  gcp-asset-iam        gcloud asset search-all-iam-policies\n"
            "  gcp-cai              gcloud asset export / list (NDJSON or a JSON array;\n"
            "                       snake_case or camelCase): IAM policies, service accounts,\n"
            "                       keys, roles, instances\n"
            "  gcp-roles            gcloud iam roles list --view=FULL / describe (custom roles\n"
            "                       with *.setIamPolicy or iam.serviceAccountKeys.create)\n"
            "  gcp-activity         gcloud policy-intelligence query-activity (last\n"
            "                       authentication of service accounts and keys)\n"
            "  gcp-insights         gcloud recommender insights list (service account usage,\n"
            "                       permissions usage, lateral movement)\n"
            "  gcp-recommendations  gcloud recommender recommendations list (role REMOVE/\n"
            "                       REPLACE)\n"
            "  gcp-instances        gcloud compute instances list --format=json\n"
            "  gcp-wif-providers    gcloud iam workload-identity-pools providers list\n"
            "  k8s-json             kubectl get serviceaccounts,secrets,roles,rolebindings,\n"
            "                       clusterroles,clusterrolebindings,pods -A -o json (a List,\n"
            "                       a typed list such as RoleList, or one object)\n"
            "  k8s-yaml             Kubernetes YAML manifests, several documents per file\n"
            "                       (kubectl apply inputs, helm template output); all\n"
            "                       Kubernetes inputs of a run are one cluster\n"
            "  k8s-audit            the API server's audit log (audit.k8s.io Events, JSON\n"
            "                       Lines): ServiceAccounts that made requests are in use\n"
            "\n"
            "  --format FORMAT         read every FILE as FORMAT (one of the above)\n"
            "  --output-format FMT     table (default), json (schema ferry.audit/v1), sarif\n"
            "                          (SARIF 2.1.0), ndjson (one finding per line, then a\n"
            "                          summary line) or csv (RFC 4180; cells starting with\n"
            "                          = + - @ tab or CR get a leading ')\n"
            "  --fail-on SEVERITY      exit 1 when a finding is at or above SEVERITY: critical,\n"
            "                          high, medium, low (default) or info; none: always 0\n"
            "  --known-accounts FILE   12-digit AWS account ids, one per line (# comments), or\n"
            "                          aws organizations list-accounts JSON: enables\n"
            "                          AWS-TR-003 (trust to unknown accounts)\n"
            "  --trusted-tenants FILE  Entra tenant ids (GUIDs), one per line (# comments):\n"
            "                          their applications are not third parties (AZ-TR-001)\n"
            "  --trusted-projects FILE GCP project ids or numbers, one per line (# comments):\n"
            "                          their service accounts are not external (GCP-SH-008)\n"
            "  --gcp-resource NAME     projects/ID, folders/N or organizations/N: what the\n"
            "                          gcp-iam-policy inputs are the policy of\n"
            "  --include-service-agents  apply the GCP OP rules to Google-managed service\n"
            "                          agents too\n"
            "  --iac-inventory FILE    terraform show -json (state or plan) or CloudFormation\n"
            "                          describe-stack-resources JSON (repeatable): AWS roles\n"
            "                          and users (AWS-SH-010) and GCP service accounts\n"
            "                          (GCP-SH-009) it does not declare are unmanaged\n"
            "  --owner-tag-keys KEYS   tag keys naming an owner, e.g. owner,team: AWS roles\n"
            "                          and users with none get AWS-SH-009\n"
            "  --cluster NAME          the Kubernetes cluster of the k8s inputs (the account\n"
            "                          of their findings); default \"cluster\"\n"
            "  --unused-days N         unused roles (AWS-SH-001); default 90\n"
            "  --key-unused-days N     unused access keys (AWS-SH-002); default 90 (cis: 45)\n"
            "  --key-max-age-days N    access keys not rotated (AWS-SH-004); default 90\n"
            "  --grace-days N          skip roles and keys younger than N days; default 7\n"
            "  --profile cis           CIS thresholds (--key-unused-days 45)\n"
            "  --now EPOCH             the clock for dated rules (seconds since 1970)\n"
            "  --max-input-size MIB    largest input file, in MiB; default 512\n"
            "  --suppress FILE         accepted findings (YAML or JSON; repeatable): entries\n"
            "                          of rule + resource (or resource_glob), or fingerprint;\n"
            "                          optional cloud, account, owner; a reason and expires\n"
            "                          (YYYY-MM-DD, at most 366 days ahead) are required.\n"
            "                          Suppressed findings leave the counts and the exit code\n"
            "                          and stay in JSON/SARIF; expired and unused entries are\n"
            "                          reported\n"
            "  --baseline FILE         a previous --output-format json report: only findings\n"
            "                          whose fingerprint it lacks (new) set the exit code\n"
            "\n"
            "Shadow identities (X-003, X-004, X-005; docs/internals/audit.md):\n"
            "  --policies DIR          ferry's policy files: the identities they grant or match\n"
            "                          are declared; other service identities with active\n"
            "                          credentials are broker-unmanaged (X-004), and static\n"
            "                          credentials where ferry federates are X-003\n"
            "  --issuer URL            the issuer ferry's tokens carry (ferryd's \"issuer\"): an\n"
            "                          undeclared identity trusting it is X-004 at medium\n"
            "  --ferryd-config FILE    take the issuer from ferryd's configuration file\n"
            "                          (its \"issuer\" member); --issuer wins\n"
            "  --usage LOG             ferry's audit log (ferryd's audit_log): policies through\n"
            "                          which no exchange was allowed in --unused-days are X-005;\n"
            "                          a log that does not verify is an input error\n"
            "  --usage-jwks FILE       public keys of the log's checkpoints (ferry keys jwks\n"
            "                          --all); without it only the hash chain is checked\n"
            "\n"
            "AWS live mode (`aws --live`): reads the account of the standard AWS credential\n"
            "chain (AWS_ACCESS_KEY_ID..., AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE,\n"
            "AWS_PROFILE) through IAM: GetAccountAuthorizationDetails, the credential report\n"
            "and service-last-accessed details of every role and user; needs iam:Get*,\n"
            "iam:List*, iam:Generate* (e.g. the SecurityAudit policy):\n"
            "  --region R              region of the credential chain (STS); IAM is global\n"
            "  --endpoint-url URL      IAM endpoint (https://host[:port], or http:// to\n"
            "                          127.0.0.1 for a local emulator)\n"
            "  -h, --help              this text\n"
            "\n"
            "Memory follows the largest input and the findings: over a large AWS estate the\n"
            "records of the accounts not being read wait in an unlinked file in $TMPDIR\n"
            "(else /tmp).\n"
            "\n"
            "Exit status: 0 no finding at or above --fail-on, 1 findings, 2 usage or input\n"
            "error (nothing is printed on stdout then).\n");
}

static int parse_uint(const char *opt, const char *s, unsigned long long max,
                      unsigned long long *ret)
{
    char *end = NULL;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || !end || *end || s[0] < '0' || s[0] > '9' || v > max) {
        fprintf(stderr, PROG ": %s: '%s' is not an integer in 0..%llu\n", opt, s, max);
        return -EINVAL;
    }
    *ret = v;
    return 0;
}

static int read_input(const char *path, size_t max, char **ret, size_t *ret_len)
{
    if (strcmp(path, "-") == 0)
        return ferry_cli_read_stream(stdin, max, false, ret, ret_len);
    return ferry_read_regular_file(path, max, ret, ret_len);
}

/* `aws organizations list-accounts` output ({"Accounts": [{"Id": ...}]}) or a JSON array of
 * ids or of such objects. */
static int known_accounts_json(ferry_audit *a, const char *path, const char *buf, size_t len)
{
    _cleanup_(json_decrefp) json_t *doc = NULL;
    ferry_json_locs *locs = NULL;
    json_t *list, *v;
    unsigned line = 0;
    char err[128];
    size_t i;
    int r;

    r = ferry_json_parse_located(buf, len, KNOWN_ACCOUNTS_MAX, 16, &doc, &locs, &line, err,
                                 sizeof(err));
    if (r < 0) {
        fprintf(stderr, PROG ": --known-accounts %s:%u: %s\n", path, line, err);
        return r;
    }
    list = json_is_object(doc) ? json_object_get(doc, "Accounts") : doc;
    if (!json_is_array(list)) {
        fprintf(stderr,
                PROG ": --known-accounts %s: expected {\"Accounts\": [...]} (aws organizations "
                     "list-accounts) or an array of account ids\n",
                path);
        ferry_json_locs_free(locs);
        return -EINVAL;
    }
    json_array_foreach(list, i, v)
    {
        const char *id =
            json_is_string(v) ? json_string_value(v) : json_string_value(json_object_get(v, "Id"));
        if (!id || ferry_audit_add_known_account(a, id) < 0) {
            fprintf(stderr,
                    PROG ": --known-accounts %s:%u: element %zu: expected a 12-digit account id "
                         "(a string, or an object with Id)\n",
                    path, ferry_json_locs_line_index(locs, list, i), i);
            ferry_json_locs_free(locs);
            return -EINVAL;
        }
    }
    ferry_json_locs_free(locs);
    return 0;
}

/* Read an --OPTION FILE of ids (16 MiB at most, no NUL byte). */
static int read_list_file(const char *opt, const char *path, char **ret, size_t *ret_len)
{
    int r = read_input(path, KNOWN_ACCOUNTS_MAX, ret, ret_len);
    if (r < 0) {
        fprintf(stderr, PROG ": %s %s: %s\n", opt, path,
                r == -EFBIG || r == -FERRY_ETOOBIG ? "larger than 16 MiB" : ferry_strerror(r));
        return r;
    }
    if (memchr(*ret, '\0', *ret_len)) {
        fprintf(stderr, PROG ": %s %s: NUL byte in the file\n", opt, path);
        return -EINVAL;
    }
    return 0;
}

/* The ids of buf (the text of --OPTION FILE), one per line, blank lines and # comments
 * skipped, each given to add; an id add refuses is named with its line ("expected WHAT"). */
static int add_id_lines(ferry_audit *a, const char *opt, const char *path, char *buf,
                        int (*add)(ferry_audit *, const char *), const char *what)
{
    char *line, *next = buf;
    size_t lineno = 0;

    while ((line = strsep(&next, "\n")) != NULL) {
        char *end;
        int r;
        lineno++;
        line += strspn(line, " \t\r");
        end = line + strcspn(line, "#");
        while (end > line && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
            end--;
        *end = '\0';
        if (!*line)
            continue;
        r = add(a, line);
        if (r < 0) {
            fprintf(stderr, PROG ": %s %s:%zu: expected %s, got '%.40s'\n", opt, path, lineno, what,
                    line);
            return r;
        }
    }
    return 0;
}

static int load_known_accounts(ferry_audit *a, const char *path)
{
    _cleanup_free_ char *buf = NULL;
    size_t len = 0;
    int r = read_list_file("--known-accounts", path, &buf, &len);

    if (r < 0)
        return r;
    if (buf[strspn(buf, " \t\r\n")] == '{' || buf[strspn(buf, " \t\r\n")] == '[')
        return known_accounts_json(a, path, buf, len);
    return add_id_lines(a, "--known-accounts", path, buf, ferry_audit_add_known_account,
                        "a 12-digit account id");
}

/* The "issuer" member of ferryd's configuration file (docs/configuration.md). *ret is new. */
static int ferryd_issuer(const char *path, char **ret)
{
    _cleanup_(json_decrefp) json_t *doc = NULL;
    _cleanup_free_ char *buf = NULL;
    ferry_json_locs *locs = NULL;
    const char *iss;
    unsigned line = 0;
    size_t len = 0;
    char err[128];
    int r;

    r = ferry_read_regular_file(path, FERRYD_CONFIG_MAX, &buf, &len);
    if (r < 0) {
        fprintf(stderr, PROG ": --ferryd-config %s: %s\n", path,
                r == -EFBIG || r == -EINVAL ? "not a regular file of at most 1 MiB"
                                            : ferry_strerror(r));
        return r;
    }
    r = ferry_json_parse_located(buf, len, FERRYD_CONFIG_MAX, 16, &doc, &locs, &line, err,
                                 sizeof(err));
    ferry_json_locs_free(locs);
    if (r < 0) {
        fprintf(stderr, PROG ": --ferryd-config %s:%u: %s\n", path, line, err);
        return r;
    }
    iss = json_string_value(json_object_get(doc, "issuer"));
    if (!json_is_object(doc) || !iss || !*iss) {
        /* ferryd derives a loopback issuer from its listen address; an audit must be told. */
        fprintf(stderr,
                PROG ": --ferryd-config %s: no \"issuer\" string in the configuration; give "
                     "--issuer URL\n",
                path);
        return -EINVAL;
    }
    *ret = strdup(iss);
    return *ret ? 0 : -ENOMEM;
}

static void print_policy_problems(const ferry_policy_problems *pr)
{
    size_t n = ferry_policy_problems_count(pr);

    for (size_t i = 0; i < n && i < POLICY_PROBLEMS_SHOWN; i++) {
        const ferry_policy_problem *p = ferry_policy_problems_get(pr, i);
        if (p->line)
            fprintf(stderr, PROG ": --policies %s:%u: %s\n", p->file, p->line, p->reason);
        else
            fprintf(stderr, PROG ": --policies %s: %s\n", p->file, p->reason);
    }
    if (n > POLICY_PROBLEMS_SHOWN)
        fprintf(stderr, PROG ": --policies: and %zu more problem(s) (ferry policy lint)\n",
                n - POLICY_PROBLEMS_SHOWN);
}

/* --policies, --issuer / --ferryd-config, --usage / --usage-jwks. Prints its own errors. */
static int shadow_setup(ferry_audit *a, const char *dir, const char *issuer,
                        const char *ferryd_config, const char *usage, const char *usage_jwks)
{
    _cleanup_free_ char *cfg_issuer = NULL, *jbuf = NULL;
    ferry_policy_problems *pr = NULL;
    ferry_policy_set *set = NULL;
    ferry_jwks *keys = NULL;
    char err[1024];
    size_t jlen = 0, skipped = 0;
    int r;

    if (!issuer && ferryd_config) {
        r = ferryd_issuer(ferryd_config, &cfg_issuer);
        if (r < 0)
            return r;
        issuer = cfg_issuer;
    }
    r = ferry_policy_problems_new(&pr);
    if (r == 0)
        r = ferry_policy_load_dir(dir, &set, pr);
    if (r < 0) {
        print_policy_problems(pr);
        fprintf(stderr, PROG ": --policies %s: the policies do not load (%s)\n", dir,
                ferry_strerror(r));
        ferry_policy_problems_free(pr);
        return r;
    }
    ferry_policy_problems_free(pr);
    r = ferry_audit_set_policies(a, set, issuer);
    ferry_policy_set_unref(set);
    if (r < 0) {
        fprintf(stderr, PROG ": --policies %s: %s\n", dir, ferry_strerror(r));
        return r;
    }
    if (!usage)
        return 0;
    if (usage_jwks) {
        r = ferry_read_regular_file(usage_jwks, FERRY_JWKS_MAX_LEN, &jbuf, &jlen);
        if (r == 0)
            r = ferry_jwks_from_buffer(jbuf, jlen, &keys, &skipped);
        if (r == 0 && ferry_jwks_count(keys) == 0)
            r = -FERRY_ENOKEY;
        if (r < 0) {
            fprintf(stderr, PROG ": --usage-jwks %s: not a usable JWK Set (%s)\n", usage_jwks,
                    ferry_strerror(r));
            ferry_jwks_unref(keys);
            return r;
        }
    }
    err[0] = '\0';
    r = ferry_audit_add_usage(a, usage, keys, err, sizeof(err));
    ferry_jwks_unref(keys);
    if (r < 0 && err[0])
        fprintf(stderr, PROG ": --usage %s\n", err);
    else if (r < 0)
        fprintf(stderr, PROG ": --usage %s: %s\n", usage, ferry_strerror(r));
    return r;
}

/* --suppress files (4 MiB each) and the --baseline report (up to the input limit), read before
 * any input so that a bad one stops the run at once. */
static int load_suppressions(ferry_audit *a, const char *const *paths, size_t n,
                             const char *baseline, size_t max_input)
{
    char err[1024];
    int r;

    for (size_t i = 0; i <= n; i++) {
        _cleanup_free_ char *buf = NULL;
        const char *path = i < n ? paths[i] : baseline;
        const char *opt = i < n ? "--suppress" : "--baseline";
        size_t len = 0;

        if (!path)
            break;
        r = read_input(
            path, i < n ? 4 * 1024 * 1024 : (max_input ? max_input : FERRY_AUDIT_DEFAULT_MAX_INPUT),
            &buf, &len);
        if (r < 0) {
            fprintf(stderr, PROG ": %s %s: %s\n", opt, path,
                    r == -EFBIG || r == -FERRY_ETOOBIG ? "too large"
                    : r == -EINVAL                     ? "not a regular file"
                                                       : ferry_strerror(r));
            return r;
        }
        r = i < n ? ferry_audit_add_suppressions(a, path, buf, len, err, sizeof(err))
                  : ferry_audit_set_baseline(a, path, buf, len, err, sizeof(err));
        if (r < 0) {
            fprintf(stderr, PROG ": %s %s\n", opt, err);
            return r;
        }
    }
    return 0;
}

/* --trusted-tenants: Entra tenant ids, one per line, # comments. */
static int load_trusted_tenants(ferry_audit *a, const char *path)
{
    _cleanup_free_ char *buf = NULL;
    size_t len = 0;
    int r = read_list_file("--trusted-tenants", path, &buf, &len);

    return r < 0 ? r
                 : add_id_lines(a, "--trusted-tenants", path, buf, ferry_audit_azure_trust_tenant,
                                "a tenant id (GUID)");
}

static int trust_project(ferry_audit *a, const char *id)
{
    return ferry_audit_gcp_trust_project(a, strncmp(id, "projects/", 9) == 0 ? id + 9 : id);
}

/* --trusted-projects: GCP project ids or numbers (optionally "projects/"), one per line,
 * # comments. */
static int load_trusted_projects(ferry_audit *a, const char *path)
{
    _cleanup_free_ char *buf = NULL;
    size_t len = 0;
    int r = read_list_file("--trusted-projects", path, &buf, &len);

    return r < 0 ? r
                 : add_id_lines(a, "--trusted-projects", path, buf, trust_project,
                                "a project id or number");
}

/* ---- aws --live, and directories of inputs ---------------------------------------------- */

static int audit_aws_live(ferry_audit *a, const ferry_audit_aws_live_options *o)
{
    char err[1024] = "";
    int r;

    if (isatty(STDERR_FILENO))
        fprintf(stderr, PROG ": reading IAM (%s)...",
                o->endpoint_url ? o->endpoint_url : "iam.amazonaws.com");
    r = ferry_audit_aws_live(a, o, err, sizeof(err));
    if (isatty(STDERR_FILENO))
        fputs("\r\033[K", stderr);
    if (r < 0)
        fprintf(stderr, PROG ": aws --live: %s\n", err[0] ? err : ferry_strerror(r));
    return r;
}

static bool is_directory(const char *path)
{
    struct stat st;
    return strcmp(path, "-") != 0 && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int regular_entry(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

static void print_read_error(const char *path, int r)
{
    fprintf(stderr, PROG ": %s: %s\n", path,
            r == -EFBIG || r == -FERRY_ETOOBIG
                ? "larger than the input size limit (--max-input-size)"
            : r == -EINVAL ? "not a regular file"
                           : ferry_strerror(r));
}

/* Append s (taken) to the NULL-terminated list. Returns 0 or -ENOMEM (s freed). */
static int list_push(char ***list, size_t *used, size_t *alloc, char *s)
{
    if (*used + 2 > *alloc) {
        size_t na = *alloc ? *alloc * 2 : 16;
        char **nl = reallocarray(*list, na, sizeof(*nl));
        if (!nl) {
            free(s);
            return -ENOMEM;
        }
        *list = nl;
        *alloc = na;
    }
    (*list)[(*used)++] = s;
    (*list)[*used] = NULL;
    return 0;
}

/* The inputs named on the command line, a directory standing for each of its files (not
 * hidden, not recursing) in name order, as CloudMapper saves one
 * get-service-last-accessed-details per principal in a file named by the URL-encoded ARN.
 * *ret: a new NULL-terminated array of new strings. Prints its own errors. */
static int expand_inputs(char **args, int n, char ***ret, size_t *ret_n)
{
    char **list = NULL, *path;
    size_t used = 0, alloc = 0;
    int r = 0;

    for (int i = 0; i < n && r == 0; i++) {
        struct dirent **names = NULL;
        const char *dir = args[i];
        size_t before = used;
        int k;

        if (!is_directory(dir)) {
            r = (path = strdup(dir)) ? list_push(&list, &used, &alloc, path) : -ENOMEM;
            continue;
        }
        k = scandir(dir, &names, regular_entry, alphasort);
        if (k < 0) {
            r = -errno;
            fprintf(stderr, PROG ": %s: %s\n", dir, strerror(errno));
            break;
        }
        for (int j = 0; j < k; j++) {
            if (r == 0 && asprintf(&path, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/",
                                   names[j]->d_name) < 0)
                r = -ENOMEM;
            else if (r == 0 && is_directory(path))
                free(path); /* not recursing */
            else if (r == 0)
                r = list_push(&list, &used, &alloc, path);
            free(names[j]);
        }
        free(names);
        if (r == 0 && used == before) {
            fprintf(stderr, PROG ": %s: an empty directory\n", dir);
            r = -ENOENT;
        }
    }
    if (r < 0) {
        if (r == -ENOMEM)
            fprintf(stderr, PROG ": %s\n", ferry_strerror(r));
        for (size_t i = 0; i < used; i++)
            free(list[i]);
        free(list);
        return r;
    }
    *ret = list;
    *ret_n = used;
    return 0;
}

/* ---- reading and parsing the next input while the current one is audited -----------------
 * A reader thread reads and parses input i + 1 (ferry_audit_parse: the JSON parse, about half
 * of a run's time) while this thread audits input i (ferry_audit_add_parsed), and frees each
 * parsed input after it was audited. At most two parsed inputs exist at once (the one being
 * audited and the next), so memory stays bounded by the largest inputs, not the estate. */

typedef struct input_item {
    struct input_item *next; /* on the freeing list */
    char *buf;
    size_t len;
    int read_r; /* < 0: reading failed */
    ferry_audit_parsed *parsed;
} input_item;

typedef struct input_pipe {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ferry_audit *a;
    char **paths;
    size_t n;
    const char *format;
    size_t max;
    input_item *ready; /* the next input, parsed, or NULL */
    input_item *done;  /* audited inputs to free */
    bool stop;         /* the auditing side is finished (or gave up) */
} input_pipe;

static void item_free(input_item *it)
{
    if (!it)
        return;
    ferry_audit_parsed_free(it->parsed);
    free(it->buf);
    free(it);
}

/* Read and parse input i (NULL when out of memory). */
static input_item *item_make(input_pipe *pp, size_t i)
{
    input_item *it = calloc(1, sizeof(*it));
    if (!it)
        return NULL;
    it->read_r = read_input(pp->paths[i], pp->max, &it->buf, &it->len);
    if (it->read_r == 0 &&
        ferry_audit_parse(pp->a, pp->paths[i], it->buf, it->len, pp->format, &it->parsed) < 0)
        it->read_r = -ENOMEM;
    return it;
}

static void free_done(input_pipe *pp)
{
    input_item *list;
    pthread_mutex_lock(&pp->lock);
    list = pp->done;
    pp->done = NULL;
    pthread_mutex_unlock(&pp->lock);
    while (list) {
        input_item *next = list->next;
        item_free(list);
        list = next;
    }
}

static void *reader_main(void *arg)
{
    input_pipe *pp = arg;

    for (size_t i = 0; i < pp->n; i++) {
        input_item *it;
        bool stop;
        free_done(pp);
        it = item_make(pp, i);
        pthread_mutex_lock(&pp->lock);
        while (pp->ready && !pp->stop)
            pthread_cond_wait(&pp->cond, &pp->lock);
        stop = pp->stop;
        if (!stop) {
            pp->ready = it ? it : (input_item *)-1; /* out of memory */
            pthread_cond_broadcast(&pp->cond);
        }
        pthread_mutex_unlock(&pp->lock);
        if (stop) {
            item_free(it);
            break;
        }
    }
    /* Free what is audited until the auditing side is finished. */
    pthread_mutex_lock(&pp->lock);
    while (!pp->stop || pp->done) {
        if (pp->done) {
            pthread_mutex_unlock(&pp->lock);
            free_done(pp);
            pthread_mutex_lock(&pp->lock);
            continue;
        }
        pthread_cond_wait(&pp->cond, &pp->lock);
    }
    pthread_mutex_unlock(&pp->lock);
    ferry_audit_thread_end();
    return NULL;
}

/* Audit every input in order. Prints its own errors; returns 0 or a negative code. */
static int audit_inputs(ferry_audit *a, char **paths, size_t n, const char *format, size_t max)
{
    input_pipe pp = {.a = a, .paths = paths, .n = n, .format = format, .max = max};
    bool progress = n > 1 && isatty(STDERR_FILENO), threaded;
    pthread_t reader;
    char err[1024];
    int r = 0;

    pthread_mutex_init(&pp.lock, NULL);
    pthread_cond_init(&pp.cond, NULL);
    threaded = n > 1 && pthread_create(&reader, NULL, reader_main, &pp) == 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        input_item *it;
        if (threaded) {
            pthread_mutex_lock(&pp.lock);
            while (!pp.ready)
                pthread_cond_wait(&pp.cond, &pp.lock);
            it = pp.ready;
            pp.ready = NULL;
            pthread_cond_broadcast(&pp.cond);
            pthread_mutex_unlock(&pp.lock);
            if (it == (input_item *)-1)
                it = NULL;
        } else {
            it = item_make(&pp, i);
        }
        if (progress)
            fprintf(stderr, "\r\033[K" PROG ": [%zu/%zu] %.60s", i + 1, n, paths[i]);
        if (!it)
            r = -ENOMEM;
        else if (it->read_r < 0)
            r = it->read_r;
        else
            r = ferry_audit_add_parsed(a, it->parsed, err, sizeof(err));
        if (progress && (r < 0 || i + 1 == n))
            fputs("\r\033[K", stderr);
        if (r < 0 && it && it->read_r < 0 && it->read_r != -ENOMEM)
            print_read_error(paths[i], r);
        else if (r < 0 && (!it || it->read_r == -ENOMEM))
            fprintf(stderr, PROG ": %s: %s\n", paths[i], ferry_strerror(r));
        else if (r < 0)
            fprintf(stderr, PROG ": %s\n", err);
        if (threaded && it) {
            pthread_mutex_lock(&pp.lock);
            it->next = pp.done;
            pp.done = it;
            pthread_cond_broadcast(&pp.cond);
            pthread_mutex_unlock(&pp.lock);
        } else {
            item_free(it);
        }
    }
    if (threaded) {
        pthread_mutex_lock(&pp.lock);
        pp.stop = true;
        pthread_cond_broadcast(&pp.cond);
        pthread_mutex_unlock(&pp.lock);
        pthread_join(reader, NULL);
        if (pp.ready && pp.ready != (input_item *)-1)
            item_free(pp.ready);
    }
    pthread_cond_destroy(&pp.cond);
    pthread_mutex_destroy(&pp.lock);
    return r;
}

/* ferry_audit_write's receiver: the report goes to stdout as it is rendered. */
static int write_stdout(const char *buf, size_t len, void *data)
{
    (void)data;
    if (fwrite(buf, 1, len, stdout) != len)
        return -(errno ? errno : EIO);
    return 0;
}

int ferry_cmd_audit(int argc, char **argv)
{
    enum {
        O_FORMAT = 256,
        O_OUTFMT,
        O_FAILON,
        O_KNOWN,
        O_UNUSED,
        O_KEYUNUSED,
        O_KEYAGE,
        O_GRACE,
        O_PROFILE,
        O_NOW,
        O_MAXIN,
        O_TRUSTED_TENANTS,
        O_POLICIES,
        O_ISSUER,
        O_FERRYD_CONFIG,
        O_USAGE,
        O_USAGE_JWKS,
        O_SUPPRESS,
        O_BASELINE,
        O_CLUSTER,
        O_LIVE,
        O_REGION,
        O_ENDPOINT_URL,
        O_TRUSTED_PROJECTS,
        O_GCP_RESOURCE,
        O_INCLUDE_AGENTS,
        O_IAC,
        O_OWNER_TAGS,
    };
    static const struct option longopts[] = {
        {"format", required_argument, NULL, O_FORMAT},
        {"output-format", required_argument, NULL, O_OUTFMT},
        {"fail-on", required_argument, NULL, O_FAILON},
        {"known-accounts", required_argument, NULL, O_KNOWN},
        {"unused-days", required_argument, NULL, O_UNUSED},
        {"key-unused-days", required_argument, NULL, O_KEYUNUSED},
        {"key-max-age-days", required_argument, NULL, O_KEYAGE},
        {"grace-days", required_argument, NULL, O_GRACE},
        {"profile", required_argument, NULL, O_PROFILE},
        {"now", required_argument, NULL, O_NOW},
        {"max-input-size", required_argument, NULL, O_MAXIN},
        {"trusted-tenants", required_argument, NULL, O_TRUSTED_TENANTS},
        {"policies", required_argument, NULL, O_POLICIES},
        {"issuer", required_argument, NULL, O_ISSUER},
        {"ferryd-config", required_argument, NULL, O_FERRYD_CONFIG},
        {"usage", required_argument, NULL, O_USAGE},
        {"usage-jwks", required_argument, NULL, O_USAGE_JWKS},
        {"suppress", required_argument, NULL, O_SUPPRESS},
        {"baseline", required_argument, NULL, O_BASELINE},
        {"cluster", required_argument, NULL, O_CLUSTER},
        {"live", no_argument, NULL, O_LIVE},
        {"region", required_argument, NULL, O_REGION},
        {"endpoint-url", required_argument, NULL, O_ENDPOINT_URL},
        {"trusted-projects", required_argument, NULL, O_TRUSTED_PROJECTS},
        {"gcp-resource", required_argument, NULL, O_GCP_RESOURCE},
        {"include-service-agents", no_argument, NULL, O_INCLUDE_AGENTS},
        {"iac-inventory", required_argument, NULL, O_IAC},
        {"owner-tag-keys", required_argument, NULL, O_OWNER_TAGS},
        {"help", no_argument, NULL, 'h'},
        {},
    };
    _cleanup_(ferry_audit_freep) ferry_audit *a = NULL;
    ferry_audit_options opts = {0};
    ferry_audit_output out = FERRY_AUDIT_OUT_TABLE;
    ferry_audit_severity fail_on = FERRY_AUDIT_LOW;
    bool fail_never = false, cis = false, key_unused_set = false;
    const char *format = NULL, *known = NULL, *trusted_tenants = NULL;
    const char *trusted_projects = NULL, *gcp_resource = NULL;
    bool include_agents = false;
    const char *policies = NULL, *issuer = NULL, *ferryd_config = NULL, *usage = NULL;
    const char *usage_jwks = NULL;
    const char *suppress[16], *baseline = NULL;
    size_t n_suppress = 0;
    const char *cluster = NULL, *iac[16], *owner_tags = NULL;
    size_t n_iac = 0;
    ferry_audit_aws_live_options live_opts = {0};
    bool live = false;
    unsigned long long v;
    char err[1024];
    int c, r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_FORMAT:
            if (!ferry_audit_format_known(optarg)) {
                fprintf(stderr,
                        PROG ": --format: unknown format '%s' (see the formats of "
                             "ferry audit --help)\n",
                        optarg);
                return FERRY_EXIT_USAGE;
            }
            format = optarg;
            break;
        case O_OUTFMT:
            if (strcmp(optarg, "table") == 0)
                out = FERRY_AUDIT_OUT_TABLE;
            else if (strcmp(optarg, "json") == 0)
                out = FERRY_AUDIT_OUT_JSON;
            else if (strcmp(optarg, "sarif") == 0)
                out = FERRY_AUDIT_OUT_SARIF;
            else if (strcmp(optarg, "ndjson") == 0)
                out = FERRY_AUDIT_OUT_NDJSON;
            else if (strcmp(optarg, "csv") == 0)
                out = FERRY_AUDIT_OUT_CSV;
            else {
                fprintf(stderr,
                        PROG ": --output-format: '%s' is not table, json, sarif, ndjson or csv\n",
                        optarg);
                return FERRY_EXIT_USAGE;
            }
            break;
        case O_FAILON:
            if (strcmp(optarg, "none") == 0) {
                fail_never = true;
            } else if (ferry_audit_severity_from_name(optarg, &fail_on) < 0) {
                fprintf(stderr,
                        PROG ": --fail-on: '%s' is not critical, high, medium, low, info or "
                             "none\n",
                        optarg);
                return FERRY_EXIT_USAGE;
            } else {
                fail_never = false;
            }
            break;
        case O_KNOWN:
            known = optarg;
            break;
        case O_UNUSED:
        case O_KEYUNUSED:
        case O_KEYAGE:
        case O_GRACE:
            if (parse_uint(longopts[c - O_FORMAT].name, optarg, 36500, &v) < 0)
                return FERRY_EXIT_USAGE;
            if (c != O_GRACE && v == 0) {
                fprintf(stderr, PROG ": --%s: must be at least 1\n", longopts[c - O_FORMAT].name);
                return FERRY_EXIT_USAGE;
            }
            if (c == O_UNUSED)
                opts.unused_days = (unsigned)v;
            else if (c == O_KEYUNUSED) {
                opts.key_unused_days = (unsigned)v;
                key_unused_set = true;
            } else if (c == O_KEYAGE)
                opts.key_max_age_days = (unsigned)v;
            else {
                opts.grace_days = (unsigned)v;
                opts.grace_days_set = true;
            }
            break;
        case O_PROFILE:
            if (strcmp(optarg, "cis") != 0) {
                fprintf(stderr, PROG ": --profile: '%s' is not a known profile (cis)\n", optarg);
                return FERRY_EXIT_USAGE;
            }
            cis = true;
            break;
        case O_NOW:
            if (parse_uint("--now", optarg, (unsigned long long)INT64_MAX / 2, &v) < 0 || v == 0)
                return FERRY_EXIT_USAGE;
            opts.now = (int64_t)v;
            break;
        case O_MAXIN:
            if (parse_uint("--max-input-size", optarg, 16384, &v) < 0 || v == 0)
                return FERRY_EXIT_USAGE;
            opts.max_input = (size_t)v * 1024 * 1024;
            break;
        case O_POLICIES:
            policies = optarg;
            break;
        case O_ISSUER:
            issuer = optarg;
            break;
        case O_FERRYD_CONFIG:
            ferryd_config = optarg;
            break;
        case O_USAGE:
            usage = optarg;
            break;
        case O_USAGE_JWKS:
            usage_jwks = optarg;
            break;
        case O_SUPPRESS:
            if (n_suppress == ARRAY_SIZE(suppress)) {
                fprintf(stderr, PROG ": --suppress: at most %zu files\n", ARRAY_SIZE(suppress));
                return FERRY_EXIT_USAGE;
            }
            suppress[n_suppress++] = optarg;
            break;
        case O_BASELINE:
            if (baseline) {
                fprintf(stderr, PROG ": --baseline: given twice\n");
                return FERRY_EXIT_USAGE;
            }
            baseline = optarg;
            break;
        case O_TRUSTED_TENANTS:
            trusted_tenants = optarg;
            break;
        case O_TRUSTED_PROJECTS:
            trusted_projects = optarg;
            break;
        case O_GCP_RESOURCE:
            gcp_resource = optarg;
            break;
        case O_INCLUDE_AGENTS:
            include_agents = true;
            break;
        case O_CLUSTER:
            cluster = optarg;
            break;
        case O_IAC:
            if (n_iac == ARRAY_SIZE(iac)) {
                fprintf(stderr, PROG ": --iac-inventory: at most %zu files\n", ARRAY_SIZE(iac));
                return FERRY_EXIT_USAGE;
            }
            iac[n_iac++] = optarg;
            break;
        case O_OWNER_TAGS:
            owner_tags = optarg;
            break;
        case O_LIVE:
            live = true;
            break;
        case O_REGION:
            live_opts.region = optarg;
            break;
        case O_ENDPOINT_URL:
            live_opts.endpoint_url = optarg;
            break;
        case 'h':
            usage_audit(stdout);
            return FERRY_EXIT_OK;
        default:
            usage_audit(stderr);
            return FERRY_EXIT_USAGE;
        }
    }
    if (cis && !key_unused_set)
        opts.key_unused_days = 45;
    if (live && (optind >= argc || strcmp(argv[optind], "aws") != 0)) {
        fprintf(stderr, PROG ": --live: only `ferry audit aws --live` is known\n");
        return FERRY_EXIT_USAGE;
    }
    if (!live && (live_opts.region || live_opts.endpoint_url)) {
        fprintf(stderr, PROG ": --region and --endpoint-url need `aws --live`\n");
        return FERRY_EXIT_USAGE;
    }
    if (live)
        optind++; /* "aws"; further FILEs are audited with the live data */
    if (optind >= argc && !live) {
        fprintf(stderr, PROG ": expected at least one input FILE\n");
        usage_audit(stderr);
        return FERRY_EXIT_USAGE;
    }
    r = ferry_audit_new(&opts, &a);
    if (r < 0) {
        fprintf(stderr, PROG ": %s\n", ferry_strerror(r));
        return FERRY_EXIT_USAGE;
    }
    if (cluster && ferry_audit_k8s_set_cluster(a, cluster) < 0) {
        fprintf(stderr, PROG ": --cluster: expected 1-253 printable characters without spaces\n");
        return FERRY_EXIT_USAGE;
    }
    if (known && load_known_accounts(a, known) < 0)
        return FERRY_EXIT_USAGE;
    if (owner_tags && ferry_audit_set_owner_tag_keys(a, owner_tags) < 0) {
        fprintf(stderr, PROG ": --owner-tag-keys: expected tag keys separated by commas\n");
        return FERRY_EXIT_USAGE;
    }
    for (size_t i = 0; i < n_iac; i++) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        r = read_input(iac[i], opts.max_input ? opts.max_input : FERRY_AUDIT_DEFAULT_MAX_INPUT,
                       &buf, &len);
        if (r < 0) {
            fprintf(stderr, PROG ": --iac-inventory %s: %s\n", iac[i], ferry_strerror(r));
            return FERRY_EXIT_USAGE;
        }
        r = ferry_audit_add_iac_inventory(a, iac[i], buf, len, err, sizeof(err));
        if (r < 0) {
            fprintf(stderr, PROG ": --iac-inventory %s\n", err);
            return FERRY_EXIT_USAGE;
        }
    }
    if (trusted_tenants && load_trusted_tenants(a, trusted_tenants) < 0)
        return FERRY_EXIT_USAGE;
    if (trusted_projects && load_trusted_projects(a, trusted_projects) < 0)
        return FERRY_EXIT_USAGE;
    if (gcp_resource && ferry_audit_gcp_set_resource(a, gcp_resource) < 0) {
        fprintf(stderr, PROG ": --gcp-resource: expected projects/ID, folders/N or "
                             "organizations/N\n");
        return FERRY_EXIT_USAGE;
    }
    if (include_agents && ferry_audit_gcp_include_service_agents(a, true) < 0) {
        fprintf(stderr, PROG ": %s\n", ferry_strerror(-ENOMEM));
        return FERRY_EXIT_USAGE;
    }
    if (load_suppressions(a, suppress, n_suppress, baseline, opts.max_input) < 0)
        return FERRY_EXIT_USAGE;
    if (!policies && (issuer || ferryd_config || usage || usage_jwks)) {
        fprintf(stderr, PROG ": --issuer, --ferryd-config, --usage and --usage-jwks need "
                             "--policies DIR\n");
        return FERRY_EXIT_USAGE;
    }
    if (usage_jwks && !usage) {
        fprintf(stderr, PROG ": --usage-jwks needs --usage LOG\n");
        return FERRY_EXIT_USAGE;
    }
    if (policies && shadow_setup(a, policies, issuer, ferryd_config, usage, usage_jwks) < 0)
        return FERRY_EXIT_USAGE;
    if (live && audit_aws_live(a, &live_opts) < 0)
        return FERRY_EXIT_USAGE;
    {
        char **paths = NULL;
        size_t n = 0;
        r = expand_inputs(argv + optind, argc - optind, &paths, &n);
        if (r == 0) {
            r = audit_inputs(a, paths, n, format,
                             opts.max_input ? opts.max_input : FERRY_AUDIT_DEFAULT_MAX_INPUT);
            for (size_t i = 0; i < n; i++)
                free(paths[i]);
            free(paths);
        }
        if (r < 0)
            return FERRY_EXIT_USAGE;
    }
    r = ferry_audit_finish(a, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return FERRY_EXIT_USAGE;
    }
    /* Streamed: the report is never held whole (a large estate's runs to gigabytes). */
    errno = 0;
    r = ferry_audit_write(a, out, write_stdout, NULL);
    if (r == 0 && ((out != FERRY_AUDIT_OUT_TABLE && out != FERRY_AUDIT_OUT_CSV &&
                    fputc('\n', stdout) == EOF) ||
                   fflush(stdout) != 0))
        r = -(errno ? errno : EIO);
    if (r < 0) {
        fprintf(stderr, PROG ": writing the report: %s\n", ferry_strerror(r));
        return FERRY_EXIT_USAGE;
    }
    if (!fail_never && ferry_audit_count_at_least(a, fail_on) > 0)
        return FERRY_EXIT_REFUSED;
    return FERRY_EXIT_OK;
}
