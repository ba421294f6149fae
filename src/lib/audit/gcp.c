/* audit/gcp.c - Google Cloud loaders (service accounts, keys, IAM policies from get-iam-policy,
 * asset search and Cloud Asset Inventory exports, roles, activity, recommender insights and
 * recommendations, compute instances, workload identity providers) and the GCP rules of the
 * catalogue. docs/internals/audit.md ("Google Cloud") says how each rule reads the model.
 *
 * Each input is checked on its own; what needs several inputs (a disabled service account from
 * the account list bound in a policy from another file, a custom role granted in one file and
 * defined in another, whether a service account's project is part of the audited estate, usage
 * data given at all) is kept in small per-run indexes of names and flags and decided in
 * gcp_finish(). What of it grows with the estate's identities is kept per project (scope): the
 * scopes the run is not working on wait in a temporary file (spill.c).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "audit-internal.h"
#include "basic/errbuf.h"
#include "basic/macro.h"
#include "ferry/error.h"
#include "ferry/json.h"

#define CLOUD "gcp"
#define DAY 86400

static const audit_rule gcp_rules[] = {
    {"GCP-OP-001", "SA with basic role", FERRY_AUDIT_HIGH,
     "A service account is a member of roles/owner or roles/editor on an organization, folder "
     "or project: it can change almost everything there. Critical at the organization.",
     "Remove the basic role from the service account and grant the predefined roles for the "
     "services it uses (the IAM recommender's role recommendations list them)."},
    {"GCP-OP-002", "SA with admin role", FERRY_AUDIT_HIGH,
     "A service account holds a role whose id ends in Admin/admin (e.g. "
     "roles/resourcemanager.projectIamAdmin, roles/iam.securityAdmin) on an organization, "
     "folder or project, or a custom role that includes a *.setIamPolicy permission or "
     "iam.serviceAccountKeys.create.",
     "Grant the service account a role without administration permissions; keep IAM and "
     "security administration with people, through a break-glass group."},
    {"GCP-OP-003", "Default compute/App Engine SA has Editor", FERRY_AUDIT_HIGH,
     "The Compute Engine default service account (PROJECT_NUMBER-compute@developer."
     "gserviceaccount.com) or the App Engine default service account (PROJECT_ID@appspot."
     "gserviceaccount.com) holds roles/editor: every VM or app running as it can change the "
     "project. The Google APIs service agent (@cloudservices) holding Editor is reported at "
     "info level.",
     "Remove roles/editor from the default service account (or enforce the organization policy "
     "iam.automaticIamGrantsForDefaultServiceAccounts) and run workloads as dedicated service "
     "accounts with only the roles they use."},
    {"GCP-OP-004", "VM uses default SA with cloud-platform scope", FERRY_AUDIT_MEDIUM,
     "A Compute Engine instance runs as the default compute service account with the "
     "cloud-platform scope: the VM's code gets every permission of that (usually Editor) "
     "account.",
     "Stop the instance and set a dedicated service account with only the roles the VM needs "
     "(gcloud compute instances set-service-account --service-account=SA --scopes=cloud-"
     "platform)."},
    {"GCP-OP-005", "Project-wide SA impersonation grant", FERRY_AUDIT_HIGH,
     "roles/iam.serviceAccountUser, roles/iam.serviceAccountTokenCreator or "
     "roles/iam.workloadIdentityUser is bound on an organization, folder or project: the "
     "member can act as every service account below it.",
     "Remove the binding there and grant the role on the individual service accounts the "
     "member needs to use (gcloud iam service-accounts add-iam-policy-binding SA ...)."},
    {"GCP-OP-006", "Public principal bound", FERRY_AUDIT_CRITICAL,
     "allUsers or allAuthenticatedUsers (anyone, or anyone with a Google account) is bound on "
     "an organization, folder, project or service account.",
     "Remove allUsers/allAuthenticatedUsers from the policy and grant the role to the groups or "
     "service accounts that need it."},
    {"GCP-OP-007", "Excess role permissions", FERRY_AUDIT_MEDIUM,
     "The IAM recommender recommends removing or replacing a role (REMOVE_ROLE / REPLACE_ROLE), "
     "or a policy insight shows permissions of a role unused over the observation period. "
     "Needs usage data: without recommendations or policy insights one info note per project "
     "says the rule was not evaluated.",
     "Apply the role recommendation (gcloud recommender recommendations mark-claimed, then "
     "replace the role with the smaller one it proposes)."},
    {"GCP-OP-008", "Cross-project SA impersonation", FERRY_AUDIT_HIGH,
     "A service account of another project can mint tokens for this service account "
     "(roles/iam.serviceAccountTokenCreator on it), or a lateral-movement insight reports "
     "such a path.",
     "Remove the cross-project Token Creator binding, or move the workload so that it runs as "
     "a service account of its own project."},
    {"GCP-SH-001", "User-managed SA key exists", FERRY_AUDIT_MEDIUM,
     "A user-managed service account key that is not disabled and not expired exists: a "
     "long-lived private key that works from anywhere until deleted.",
     "Delete the key (gcloud iam service-accounts keys delete) and let the workload get "
     "short-lived credentials by workload identity federation or from ferry."},
    {"GCP-SH-002", "SA key older than N", FERRY_AUDIT_MEDIUM,
     "A user-managed key was created (validAfterTime) more than --key-max-age-days ago.",
     "Rotate the key now and delete the old one; better, replace it with federation."},
    {"GCP-SH-003", "SA key never expires", FERRY_AUDIT_LOW,
     "A user-managed key is valid until 9999-12-31.",
     "Replace the key with one that expires, and set the organization policy "
     "constraints/iam.serviceAccountKeyExpiryHours."},
    {"GCP-SH-004", "Unused SA key", FERRY_AUDIT_MEDIUM,
     "Activity Analyzer shows the key last authenticated more than --key-unused-days ago. "
     "Needs key activity data: without it one info note per project says the rule was not "
     "evaluated.",
     "Disable the key, wait for breakage, then delete it."},
    {"GCP-SH-005", "Unused service account", FERRY_AUDIT_MEDIUM,
     "Activity Analyzer or a service account insight shows the service account has not "
     "authenticated for --unused-days. Needs activity data or insights: without them one info "
     "note per project says the rule was not evaluated.",
     "Disable the service account (gcloud iam service-accounts disable), then delete it once "
     "nothing broke."},
    {"GCP-SH-006", "Disabled SA still bound / has keys", FERRY_AUDIT_LOW,
     "A disabled service account is still a member of IAM bindings or still has user-managed "
     "keys: enabling it again restores all of it.",
     "Remove its bindings and delete its keys, or delete the service account."},
    {"GCP-SH-007", "Binding to deleted principal", FERRY_AUDIT_MEDIUM,
     "A binding names a deleted principal (deleted:serviceAccount:...?uid=...): undeleting "
     "that principal within 30 days restores the access.",
     "Remove the deleted member from the binding (gcloud ... remove-iam-policy-binding)."},
    {"GCP-SH-008", "External SA bound", FERRY_AUDIT_MEDIUM,
     "A service account of a project that is neither audited in this run nor listed in "
     "--trusted-projects is bound on a resource.",
     "Remove the binding, or list the project in --trusted-projects after review."},
    {"GCP-SH-009", "No owner", FERRY_AUDIT_LOW,
     "A user-created service account has no description, so nothing records who owns it or "
     "what it is for; or, when --iac-inventory is given, it is not declared there "
     "(google_service_account).",
     "Set a description naming the owner and purpose (gcloud iam service-accounts update SA "
     "--description='owner: team-x; purpose: ...'), and manage the account in Terraform, or "
     "delete it if nobody claims it."},
    {"GCP-TR-001", "WIF provider without attribute condition", FERRY_AUDIT_HIGH,
     "A workload identity pool provider for a multi-tenant issuer (GitHub Actions, GitLab.com, "
     "Terraform Cloud, Buildkite) has no attributeCondition: any repository or workspace of "
     "that issuer can exchange its token in the pool.",
     "Set an attributeCondition pinning the owner (e.g. assertion.repository_owner == "
     "'my-org') on the provider (gcloud iam workload-identity-pools providers update-oidc "
     "--attribute-condition=...)."},
};

/* ---- per-run state ----------------------------------------------------------------------- */

enum {
    SA_DISABLED = 1u << 0,
    SA_KEY = 1u << 1, /* an enabled, unexpired user-managed key */
    SA_USED = 1u << 2,
    SA_UNUSED = 1u << 3,
    SA_LISTED = 1u << 4,    /* seen in an account list (so its disabled flag is known) */
    SA_FEDERATED = 1u << 5, /* a Kubernetes SA (GKE workload identity) may act as it */
};

/* One service account of the estate, as the end-of-run rules read it. */
typedef struct gcp_sa {
    const char *email, *project, *uid, *source; /* interned; uid "" when not known */
    unsigned flags;                             /* SA_* */
} gcp_sa;

/* A finding held for the end of the run (GCP-OP-002 through a custom role, GCP-SH-008, GCP-SH-005):
 * its strings interned, its evidence as compact JSON text, parsed again only to emit it. */
typedef struct gcp_pending {
    const char *email;   /* the SA (OP-002; SH-005, NULL when not known) */
    const char *role;    /* OP-002: the custom role */
    const char *project; /* SH-008: the member's project */
    const char *account, *resource, *key, *source;
    const char *ev;
} gcp_pending;

typedef struct gcp_pendings {
    gcp_pending *v;
    size_t n, alloc;
} gcp_pendings;

/* An open-addressing map from an interned string (compared by address) to a value. */
typedef struct gcp_map {
    struct gcp_slot {
        const char *key; /* NULL: free */
        const void *val;
    } * slots;
    size_t n_slots, n;
} gcp_map;

/* Most entries of one map (slots are twice that), and bytes of interned strings. */
#define GCP_MAP_MAX ((size_t)1 << 27)
#define GCP_PENDING_MAX ((size_t)1 << 26)
#define GCP_STRSET_MAX (SIZE_MAX > UINT32_MAX ? (size_t)UINT32_MAX * 4 : SIZE_MAX / 2)

typedef struct gcp_state {
    bool include_agents;
    char *resource;   /* --gcp-resource for get-iam-policy outputs, or NULL */
    json_t *trusted;  /* --trusted-projects: project ids and numbers (a set) */
    json_t *roles;    /* custom role name -> [dangerous permissions] */
    json_t *estate;   /* projects (ids and numbers) seen in any input (a set) */
    json_t *projects; /* project id -> source: the projects that get the usage notes */
    json_t *pools;    /* workload identity pool -> [issuer] */
    bool usage_sa, usage_key, usage_perm; /* usage data of each kind was given */
    /* Kept for the whole run (see "records of the scopes not worked on" below): */
    audit_strset strs;   /* uniqueIds and scope names */
    gcp_map uid_scope;   /* SA uniqueId -> the scope its uid -> email entry is in (once some
                          * records were put aside: before, every entry is in memory) */
    bool uid_scoped;     /* uid_scope is kept (records were put aside) */
    gcp_map spilled;     /* scope name -> 1: the scopes put aside at least once */
    const char **scopes; /* the same, in the order first put aside */
    size_t n_scopes, alloc_scopes;
    audit_spill spill;  /* the records of the scopes not in memory, under the scope's name */
    size_t evict_floor; /* twice the records kept at the last eviction */
    /* The records of the scopes in memory, their strings in recs: */
    audit_strset recs; /* emails, uniqueIds, projects, sources, evidence */
    gcp_sa *sas;       /* the service accounts, in the order first seen */
    size_t n_sas, alloc_sas;
    /* SA email -> (index in sas + 1, 0 for none) << 1 | 1 when a member of some binding (the
     * emails of other projects' SAs are bound without a record) */
    gcp_map sa_index;
    gcp_map uids;         /* SA uniqueId -> email */
    gcp_pendings custom;  /* bindings of SAs to custom roles, decided at the end (OP-002) */
    gcp_pendings foreign; /* SA members of projects not known yet, decided at the end (SH-008) */
    gcp_pendings unused;  /* GCP-SH-005 candidates, decided at the end (disabled ones are not) */
    json_t *sa_pools;     /* SA email -> [pool] (SA policies granting a pool's principals) */
    size_t n_sa_pools;    /* pools in sa_pools */
} gcp_state;

static gcp_state *state(ferry_audit *a)
{
    if (!a->gcp) {
        gcp_state *s = calloc(1, sizeof(gcp_state));
        if (s) {
            audit_strset_init(&s->strs, GCP_STRSET_MAX);
            audit_strset_init(&s->recs, GCP_STRSET_MAX);
            audit_spill_init(&s->spill);
        }
        a->gcp = s;
    }
    return a->gcp;
}

/* Free the records in memory (see gcp_state) and start their strings afresh. */
static void records_release(gcp_state *s)
{
    free(s->sas);
    free(s->sa_index.slots);
    free(s->uids.slots);
    free(s->custom.v);
    free(s->foreign.v);
    free(s->unused.v);
    json_decref(s->sa_pools);
    s->sas = NULL;
    s->n_sas = s->alloc_sas = 0;
    s->sa_index = s->uids = (gcp_map){.slots = NULL};
    s->custom = s->foreign = s->unused = (gcp_pendings){.v = NULL};
    s->sa_pools = NULL;
    s->n_sa_pools = 0;
    audit_strset_release(&s->recs);
}

static void gcp_release(ferry_audit *a)
{
    gcp_state *s = a->gcp;
    if (!s)
        return;
    records_release(s);
    free(s->resource);
    json_decref(s->trusted);
    json_decref(s->roles);
    json_decref(s->estate);
    json_decref(s->projects);
    json_decref(s->pools);
    free(s->uid_scope.slots);
    free(s->spilled.slots);
    free(s->scopes);
    audit_strset_release(&s->strs);
    audit_spill_release(&s->spill);
    free(s);
    a->gcp = NULL;
}

static struct gcp_slot *map_slot(const struct gcp_slot *slots, size_t n_slots, const char *key)
{
    size_t mask = n_slots - 1, i = (size_t)(((uintptr_t)key * 0x9e3779b97f4a7c15ULL) >> 17) & mask;
    while (slots[i].key && slots[i].key != key)
        i = (i + 1) & mask;
    return (struct gcp_slot *)&slots[i];
}

/* The value of key (interned in t, or not: then it is in no map of t's strings), or NULL. */
static const void *map_get(const audit_strset *t, const gcp_map *m, const char *key)
{
    const char *k = m->n ? audit_strset_find(t, key) : NULL;
    return k ? map_slot(m->slots, m->n_slots, k)->val : NULL;
}

/* Set key (interned) to val (not NULL). */
static int map_put(gcp_map *m, const char *key, const void *val)
{
    struct gcp_slot *slot;

    if ((m->n + 1) * 2 > m->n_slots) {
        size_t n = m->n_slots ? m->n_slots * 2 : 256;
        struct gcp_slot *grown;
        if (n / 2 > GCP_MAP_MAX)
            return -FERRY_EFULL;
        grown = calloc(n, sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        for (size_t i = 0; i < m->n_slots; i++)
            if (m->slots[i].key)
                *map_slot(grown, n, m->slots[i].key) = m->slots[i];
        free(m->slots);
        m->slots = grown;
        m->n_slots = n;
    }
    slot = map_slot(m->slots, m->n_slots, key);
    if (!slot->key)
        m->n++;
    slot->key = key;
    slot->val = val;
    return 0;
}

/* An index member of the state, created on first use. */
static json_t *index_of(json_t **slot, bool array)
{
    if (!*slot)
        *slot = array ? json_array() : json_object();
    return *slot;
}

static int set_add(json_t **slot, const char *key)
{
    json_t *set = index_of(slot, false);
    if (!set)
        return -ENOMEM;
    if (json_object_get(set, key))
        return 0;
    return json_object_set_new(set, key, json_true()) < 0 ? -ENOMEM : 0;
}

/* asprintf() that leaves *ret NULL when it fails (glibc leaves it undefined), so that cleanup
 * attributes stay safe. Returns the length or -1. */
static int str_printf(char **ret, const char *fmt, ...) _printf_(2, 3);
static int str_printf(char **ret, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(ret, fmt, ap);
    va_end(ap);
    if (n < 0)
        *ret = NULL;
    return n;
}

/* ---- public knobs ------------------------------------------------------------------------ */

static bool valid_project(const char *p)
{
    size_t n = p ? strlen(p) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)p[i]) && !isdigit((unsigned char)p[i]) && p[i] != '-' &&
            p[i] != ':' && p[i] != '.')
            return false;
    return true;
}

FERRY_EXPORT int ferry_audit_gcp_trust_project(ferry_audit *a, const char *project)
{
    gcp_state *s;
    if (!a || !valid_project(project))
        return -EINVAL;
    s = state(a);
    if (!s)
        return -ENOMEM;
    return set_add(&s->trusted, project);
}

FERRY_EXPORT int ferry_audit_gcp_include_service_agents(ferry_audit *a, bool include)
{
    gcp_state *s;
    if (!a)
        return -EINVAL;
    s = state(a);
    if (!s)
        return -ENOMEM;
    s->include_agents = include;
    return 0;
}

static const char crm_prefix[] = "//cloudresourcemanager.googleapis.com/";

FERRY_EXPORT int ferry_audit_gcp_set_resource(ferry_audit *a, const char *resource)
{
    const char *r = resource;
    gcp_state *s;
    char *copy;

    if (!a || !r)
        return -EINVAL;
    if (strncmp(r, crm_prefix, strlen(crm_prefix)) == 0)
        r += strlen(crm_prefix);
    const char *slash = strchr(r, '/');
    if (!slash || !valid_project(slash + 1) ||
        !((slash - r == 8 && strncmp(r, "projects", 8) == 0) ||
          (slash - r == 7 && strncmp(r, "folders", 7) == 0) ||
          (slash - r == 13 && strncmp(r, "organizations", 13) == 0)))
        return -EINVAL;
    s = state(a);
    if (!s)
        return -ENOMEM;
    if (str_printf(&copy, "%s%s", crm_prefix, r) < 0)
        return -ENOMEM;
    free(s->resource);
    s->resource = copy;
    return 0;
}

/* ---- names ------------------------------------------------------------------------------- */

static const char *str_member(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* A member that snake_case CAI exports and camelCase API outputs spell differently. */
static json_t *member2(const json_t *o, const char *snake, const char *camel)
{
    json_t *v = json_object_get(o, snake);
    return v ? v : json_object_get(o, camel);
}

static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

/* n bytes of s into out when they fit, else "" (a name cut short would be another name). */
static void fit(char *out, size_t outlen, const char *s, size_t n)
{
    if (n >= outlen)
        n = 0;
    memcpy(out, s, n);
    out[n] = '\0';
}

/* Google-managed service agents, as the catalogue lists them. */
static bool service_agent(const char *email)
{
    const char *at = strchr(email, '@');
    if (!at)
        return false;
    const char *dom = at + 1;
    size_t local = (size_t)(at - email);
    if (local > 8 && strncmp(email, "service-", 8) == 0 && all_digits(email + 8, local - 8))
        return true;
    if (strcasecmp(dom, "cloudservices.gserviceaccount.com") == 0)
        return true;
    if (strncasecmp(dom, "gcp-sa-", 7) == 0)
        return true;
    if (strstr(dom, "-robot.iam.gserviceaccount.com"))
        return true;
    return false;
}

static bool cloudservices_agent(const char *email)
{
    return ends_with(email, "@cloudservices.gserviceaccount.com");
}

/* The Compute Engine or App Engine default service account. */
static bool default_sa(const char *email)
{
    const char *at = strchr(email, '@');
    if (!at)
        return false;
    if (strcasecmp(at, "@developer.gserviceaccount.com") == 0)
        return at - email > 8 && strncmp(at - 8, "-compute", 8) == 0 &&
               all_digits(email, (size_t)(at - email) - 8);
    return strcasecmp(at, "@appspot.gserviceaccount.com") == 0 && at > email;
}

static bool default_compute_sa(const char *email)
{
    return default_sa(email) && ends_with(email, "@developer.gserviceaccount.com");
}

/* The project (id, or number for the default compute SA and service agents) an SA email
 * belongs to, from the email alone; "" when the email does not say. */
static void email_project(const char *email, char *out, size_t outlen)
{
    const char *at = strchr(email, '@');
    size_t local;
    out[0] = '\0';
    if (!at)
        return;
    local = (size_t)(at - email);
    if (local > 8 && strncmp(email, "service-", 8) == 0 && all_digits(email + 8, local - 8)) {
        (void)snprintf(out, outlen, "%.*s", (int)(local - 8), email + 8);
    } else if (ends_with(at, ".iam.gserviceaccount.com") && !service_agent(email)) {
        size_t n = strlen(at + 1) - strlen(".iam.gserviceaccount.com");
        (void)snprintf(out, outlen, "%.*s", (int)n, at + 1);
    } else if (strcasecmp(at, "@appspot.gserviceaccount.com") == 0) {
        (void)snprintf(out, outlen, "%.*s", (int)local, email);
    } else if (default_compute_sa(email)) {
        (void)snprintf(out, outlen, "%.*s", (int)(local - 8), email);
    } else if (all_digits(email, local)) {
        (void)snprintf(out, outlen, "%.*s", (int)local, email); /* NUM@cloudservices... */
    }
    if (!valid_project(out))
        out[0] = '\0';
}

/* The resource a finding about an SA names: its full resource name, from the email alone (so
 * that it does not depend on which other inputs were given). */
static int sa_uri(const char *email, char **ret)
{
    char p[80];
    email_project(email, p, sizeof(p));
    return str_printf(ret, "//iam.googleapis.com/projects/%s/serviceAccounts/%s", p[0] ? p : "-",
                      email) < 0
               ? -ENOMEM
               : 0;
}

static bool plausible_email(const char *s)
{
    const char *at = s ? strchr(s, '@') : NULL;
    return at && at > s && at[1] && strlen(s) < 256 && !strchr(at + 1, '@') &&
           !strpbrk(s, " /\t\r\n");
}

typedef enum { LVL_ORG, LVL_FOLDER, LVL_PROJECT, LVL_SA, LVL_OTHER } gcp_level;

static const char *const level_names[] = {"organization", "folder", "project", "service account",
                                          "resource"};

/* The level of a policy's resource and the account (project id/number, "folders/N",
 * "organizations/N") findings on it belong to. project_hint: the asset's "project" member
 * ("projects/NUM") for other resources. */
static gcp_level resource_level(const char *res, const char *project_hint, char *acct,
                                size_t acctlen)
{
    const char *p;
    acct[0] = '\0';
    if (strncmp(res, crm_prefix, strlen(crm_prefix)) == 0) {
        const char *r = res + strlen(crm_prefix);
        if (strncmp(r, "projects/", 9) == 0) {
            fit(acct, acctlen, r + 9, strlen(r + 9));
            return LVL_PROJECT;
        }
        if (strncmp(r, "folders/", 8) == 0) {
            fit(acct, acctlen, r, strlen(r));
            return LVL_FOLDER;
        }
        if (strncmp(r, "organizations/", 14) == 0) {
            fit(acct, acctlen, r, strlen(r));
            return LVL_ORG;
        }
    }
    p = strstr(res, "/projects/");
    if (p) {
        p += 10;
        fit(acct, acctlen, p, strcspn(p, "/"));
    } else if (project_hint && strncmp(project_hint, "projects/", 9) == 0) {
        fit(acct, acctlen, project_hint + 9, strlen(project_hint + 9));
    }
    if (strncmp(res, "//iam.googleapis.com/projects/", 30) == 0 &&
        strstr(res, "/serviceAccounts/") && !strstr(res, "/keys/"))
        return LVL_SA;
    return LVL_OTHER;
}

/* where + suffix into out, cut to fit (a path for error messages). */
static void where_join(char *out, size_t outlen, const char *where, const char *suffix)
{
    size_t n = strlen(where), m = strlen(suffix);
    if (n > outlen - 1)
        n = outlen - 1;
    if (m > outlen - 1 - n)
        m = outlen - 1 - n;
    memcpy(out, where, n);
    memcpy(out + n, suffix, m);
    out[n + m] = '\0';
}

/* ---- contexts and emission --------------------------------------------------------------- */

typedef struct gcp_ctx {
    ferry_audit *a;
    gcp_state *s;
    const char *path;
    char *errbuf;
    size_t errlen;
} gcp_ctx;

/* Hold p (its strings borrowed: they are interned) with ev (stolen; NULL: out of memory) for
 * the end of the run, from this input. */
static int pending_add(gcp_ctx *c, gcp_pendings *list, gcp_pending p, json_t *ev)
{
    audit_strset *t = &c->s->recs;
    const char **fields[] = {&p.email, &p.role, &p.project, &p.account, &p.resource, &p.key};
    char *text = ev ? audit_json_dumps(ev, JSON_COMPACT) : NULL;
    int r = text ? 0 : -ENOMEM;

    json_decref(ev);
    if (r == 0)
        r = audit_vec_room(&list->v, &list->alloc, list->n, sizeof(*list->v), 64, GCP_PENDING_MAX);
    for (size_t i = 0; r == 0 && i < ARRAY_SIZE(fields); i++)
        if (*fields[i])
            r = audit_strset_intern(t, *fields[i], fields[i]);
    if (r == 0)
        r = audit_strset_intern(t, c->path, &p.source);
    if (r == 0)
        r = audit_strset_intern(t, text, &p.ev);
    free(text);
    if (r == 0)
        list->v[list->n++] = p;
    return r;
}

/* The evidence of a held finding, as a new tree (NULL: out of memory). It is the text
 * audit_json_dumps made of a tree, so it parses back to the same (with ferry's parser:
 * jansson's drops characters when memory runs out). */
static json_t *pending_evidence(const gcp_pending *p)
{
    return audit_json_reparse(p->ev);
}

/* Emit a finding; ev is stolen. */
static int emit(gcp_ctx *c, const char *rule, int sev, const char *account, const char *resource,
                json_t *ev, const char *key)
{
    int r;
    if (!ev)
        return -ENOMEM;
    r = audit_emit(c->a, rule, sev, CLOUD, account, resource, ev, key, c->path);
    json_decref(ev);
    return r;
}

/* An input error: what was expected, after the place in the document (the caller records it
 * with audit_error_where, or bad() does). Returns -FERRY_EMALFORMED. */
static int failv(gcp_ctx *c, const char *fmt, va_list ap) _printf_(2, 0);
static int failv(gcp_ctx *c, const char *fmt, va_list ap)
{
    char msg[512];
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    return ferry_errbuf_set(c->errbuf, c->errlen, -FERRY_EMALFORMED, "%s", msg);
}

static int fail(gcp_ctx *c, const char *fmt, ...) _printf_(2, 3);
static int fail(gcp_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = failv(c, fmt, ap);
    va_end(ap);
    return r;
}

/* Record where/key as the place of an error when o has that member, else where itself (a
 * missing member has no line of its own; its object has). */
static void where_member(gcp_ctx *c, const char *where, const json_t *o, const char *key)
{
    if (json_object_get(o, key))
        audit_error_where(c->a, "%s/%s", where, key);
    else
        audit_error_where(c->a, "%s", where);
}

static int bad(gcp_ctx *c, const char *where, const char *fmt, ...) _printf_(3, 4);
static int bad(gcp_ctx *c, const char *where, const char *fmt, ...)
{
    va_list ap;
    audit_error_where(c->a, "%s", where);
    va_start(ap, fmt);
    int r = failv(c, fmt, ap);
    va_end(ap);
    return r;
}

/* The SA record of the index (its scope in memory), or NULL. Good until the next sa_record
 * or gcp_resident. */
static gcp_sa *sa_find(const gcp_state *s, const char *email)
{
    uintptr_t i = (uintptr_t)map_get(&s->recs, &s->sa_index, email) >> 1;
    return i ? &s->sas[i - 1] : NULL;
}

/* email (its scope in memory) is a member of some binding. */
static bool sa_bound(const gcp_state *s, const char *email)
{
    return (uintptr_t)map_get(&s->recs, &s->sa_index, email) & 1;
}

/* ---- records of the scopes not worked on, in the temporary file --------------------------
 *
 * What grows with the estate's identities is kept per scope: an SA's record, index entry
 * (bound or not), uniqueId -> email entry and SA -> pools entries are in the scope of the
 * project its email names (email_project: NAME@PROJECT.iam..., PROJECT@appspot..., the number
 * of NUMBER-compute@developer... and of the service agents; "" when the email names none), a
 * function of the email alone, so that every lookup by email finds its scope whatever other
 * inputs said of the SA's project. The OP-002 and SH-008 candidates are in the scope of the
 * policy's account, SH-005's in the SA's (the policy's account without an SA). The state holds
 * the scopes the run is working on; when it holds more than a->spill_after records (or twice
 * what stayed the last time) every other scope's go to s->spill, as one segment under the
 * scope's name, the record strings are started afresh and the current scope's taken back.
 * Touching a scope again (gcp_resident) takes its segments back, in order, before anything is
 * looked up or added. A uniqueId names no project: from the first eviction on, uid_scope says
 * which scope holds its uid -> email entry (the one per-SA entry kept for the whole run, about
 * 60 bytes; before, every entry is in memory). */

/* The scope of the records of an SA, from its email alone. */
static void email_scope(const char *email, char out[80])
{
    email_project(email, out, 80);
}

/* uid's entry (uid -> email) is in email's scope. */
static int uid_scope_put(gcp_state *s, const char *uid, const char *email)
{
    const char *k, *sc;
    char es[80];
    int r;

    email_scope(email, es);
    if ((r = audit_strset_intern(&s->strs, uid, &k)) < 0 ||
        (r = audit_strset_intern(&s->strs, es, &sc)) < 0)
        return r;
    return map_put(&s->uid_scope, k, sc);
}

static size_t records_held(const gcp_state *s)
{
    return s->sa_index.n + s->uids.n + s->custom.n + s->foreign.n + s->unused.n + s->n_sa_pools;
}

static int rec_put_pending(ferry_buf *b, char tag, const gcp_pending *p)
{
    const char *f[] = {p->email,    p->role, p->project, p->account,
                       p->resource, p->key,  p->source,  p->ev};
    int r = ferry_buf_append(b, &tag, 1);
    for (size_t i = 0; r == 0 && i < ARRAY_SIZE(f); i++)
        r = audit_rec_put_str(b, f[i]);
    return r;
}

static int rec_put_sa(ferry_buf *b, const gcp_sa *sa, bool bound)
{
    uint32_t flags = sa->flags | (bound ? 1u << 31 : 0);
    int r = ferry_buf_append(b, "S", 1);
    if (r == 0)
        r = audit_rec_put_str(b, sa->email);
    if (r == 0)
        r = audit_rec_put_str(b, sa->project);
    if (r == 0)
        r = audit_rec_put_str(b, sa->uid);
    if (r == 0)
        r = audit_rec_put_str(b, sa->source);
    return r == 0 ? ferry_buf_append(b, &flags, sizeof(flags)) : r;
}

/* A tag and two strings: 'B' an email bound without a record, 'I' uid -> email, 'P' SA ->
 * pool. */
static int rec_put_pair(ferry_buf *b, char tag, const char *x, const char *y)
{
    int r = ferry_buf_append(b, &tag, 1);
    if (r == 0)
        r = audit_rec_put_str(b, x);
    return r == 0 ? audit_rec_put_str(b, y) : r;
}

static int pending_keep(gcp_state *s, gcp_pendings *list, const gcp_pending *e)
{
    gcp_pending p = *e;
    const char **fields[] = {&p.email,    &p.role, &p.project, &p.account,
                             &p.resource, &p.key,  &p.source,  &p.ev};
    int r = audit_vec_room(&list->v, &list->alloc, list->n, sizeof(*list->v), 64, GCP_PENDING_MAX);
    for (size_t i = 0; r == 0 && i < ARRAY_SIZE(fields); i++)
        if (*fields[i])
            r = audit_strset_intern(&s->recs, *fields[i], fields[i]);
    if (r < 0)
        return r;
    if (!p.account || !p.source || !p.ev)
        return -EIO;
    list->v[list->n++] = p;
    return 0;
}

static int sa_pool_add(gcp_state *s, const char *email, const char *pool)
{
    json_t *idx = index_of(&s->sa_pools, false), *list;
    if (!idx)
        return -ENOMEM;
    list = json_object_get(idx, email);
    if (!list) {
        list = json_array();
        if (!list || json_object_set_new(idx, email, list) < 0)
            return -ENOMEM;
    }
    if (json_array_append_new(list, json_string(pool)) < 0)
        return -ENOMEM;
    s->n_sa_pools++;
    return 0;
}

static bool same_scope(const char *x, const char *y)
{
    return x && y && strcmp(x, y) == 0;
}

typedef struct unspill_ctx {
    gcp_state *s;
    const char *scope;
} unspill_ctx;

/* A segment of a scope's records, back into the state. -EIO when it is not one gcp_evict
 * wrote. */
static int gcp_unspill(void *userdata, const char *data, size_t len)
{
    unspill_ctx *u = userdata;
    gcp_state *s = u->s;
    audit_rec_reader rd = {data, len};
    int r = 0;

    while (rd.left && r == 0) {
        char tag;
        const char *x = NULL, *y = NULL;
        if ((r = audit_rec_get(&rd, &tag, 1)) < 0)
            break;
        if (tag == 'C' || tag == 'F' || tag == 'U') {
            gcp_pending p;
            const char **f[] = {&p.email,    &p.role, &p.project, &p.account,
                                &p.resource, &p.key,  &p.source,  &p.ev};
            for (size_t i = 0; r == 0 && i < ARRAY_SIZE(f); i++)
                r = audit_rec_get_str(&rd, f[i]);
            if (r == 0)
                r = pending_keep(s,
                                 tag == 'C'   ? &s->custom
                                 : tag == 'F' ? &s->foreign
                                              : &s->unused,
                                 &p);
        } else if (tag == 'S') {
            gcp_sa rec = {.flags = 0};
            uint32_t flags;
            r = audit_rec_get_str(&rd, &rec.email);
            if (r == 0)
                r = audit_rec_get_str(&rd, &rec.project);
            if (r == 0)
                r = audit_rec_get_str(&rd, &rec.uid);
            if (r == 0)
                r = audit_rec_get_str(&rd, &rec.source);
            if (r == 0)
                r = audit_rec_get(&rd, &flags, sizeof(flags));
            if (r == 0 && (!rec.email || !rec.project || !rec.uid || !rec.source))
                r = -EIO;
            if (r == 0)
                r = audit_vec_room(&s->sas, &s->alloc_sas, s->n_sas, sizeof(*s->sas), 256,
                                   GCP_MAP_MAX);
            if (r == 0 && (r = audit_strset_intern(&s->recs, rec.email, &rec.email)) == 0 &&
                (r = audit_strset_intern(&s->recs, rec.project, &rec.project)) == 0 &&
                (r = audit_strset_intern(&s->recs, rec.uid, &rec.uid)) == 0 &&
                (r = audit_strset_intern(&s->recs, rec.source, &rec.source)) == 0) {
                rec.flags = flags & ~(1u << 31);
                r = map_put(&s->sa_index, rec.email,
                            (const void *)((s->n_sas + 1) << 1 | (flags >> 31)));
                if (r == 0)
                    s->sas[s->n_sas++] = rec;
            }
        } else if (tag == 'B' || tag == 'I' || tag == 'P') {
            r = audit_rec_get_str(&rd, &x);
            if (r == 0)
                r = audit_rec_get_str(&rd, &y);
            if (r == 0 && (!x || (tag != 'B' && !y)))
                r = -EIO;
            if (r < 0)
                break;
            if (tag == 'P') {
                r = sa_pool_add(s, x, y);
                continue;
            }
            /* a uid given to an SA of another scope since: that entry is the one */
            if (tag == 'I' && !same_scope(map_get(&s->strs, &s->uid_scope, x), u->scope))
                continue;
            if ((r = audit_strset_intern(&s->recs, x, &x)) < 0)
                break;
            if (tag == 'B')
                r = map_put(&s->sa_index, x,
                            (const void *)((uintptr_t)map_get(&s->recs, &s->sa_index, x) | 1));
            else if ((r = audit_strset_intern(&s->recs, y, &y)) == 0)
                r = map_put(&s->uids, x, y);
        } else {
            r = -EIO;
        }
    }
    return r;
}

/* The group of scope (interned in strs) in the eviction's buffers, added when new. */
static int evict_group(gcp_map *gm, ferry_buf **groups, size_t *n, size_t *alloc, const char *scope,
                       ferry_buf **ret)
{
    uintptr_t i = gm->n ? (uintptr_t)map_slot(gm->slots, gm->n_slots, scope)->val : 0;
    int r;

    if (!i) {
        if ((r = audit_vec_room(groups, alloc, *n, sizeof(**groups), 16, GCP_MAP_MAX)) < 0)
            return r;
        ferry_buf_init(&(*groups)[*n], (size_t)1 << 30, false);
        i = ++*n;
        if ((r = map_put(gm, scope, (const void *)i)) < 0)
            return r;
    }
    *ret = &(*groups)[i - 1];
    return 0;
}

/* The buffer of the scope named sc, through evict_group. */
static int evict_buf(gcp_state *s, gcp_map *gm, ferry_buf **groups, size_t *n, size_t *alloc,
                     const char *sc, ferry_buf **ret)
{
    const char *k;
    int r = audit_strset_intern(&s->strs, sc, &k);
    return r < 0 ? r : evict_group(gm, groups, n, alloc, k, ret);
}

/* Put every scope's records but keep's (all of them when keep is NULL) in the temporary file,
 * start the record strings afresh and take keep's back. */
static int gcp_evict(gcp_state *s, const char *keep)
{
    gcp_map gm = {.slots = NULL};
    ferry_buf *groups = NULL, *b, mine;
    size_t n = 0, alloc = 0;
    char sc[80];
    int r = 0;

    ferry_buf_init(&mine, (size_t)1 << 30, false);
    for (size_t i = 0; i < s->n_sas && r == 0; i++) {
        email_scope(s->sas[i].email, sc);
        r = evict_buf(s, &gm, &groups, &n, &alloc, sc, &b);
        if (r == 0)
            r = rec_put_sa(b, &s->sas[i], sa_bound(s, s->sas[i].email));
    }
    for (size_t i = 0; i < s->sa_index.n_slots && r == 0; i++) {
        const struct gcp_slot *e = &s->sa_index.slots[i];
        if (!e->key || (uintptr_t)e->val >> 1)
            continue;
        email_scope(e->key, sc);
        r = evict_buf(s, &gm, &groups, &n, &alloc, sc, &b);
        if (r == 0)
            r = rec_put_pair(b, 'B', e->key, NULL);
    }
    /* from the first eviction on uid_scope is kept: filled with what is in memory now */
    for (size_t i = 0; i < s->uids.n_slots && r == 0; i++) {
        const struct gcp_slot *e = &s->uids.slots[i];
        if (!e->key)
            continue;
        email_scope(e->val, sc);
        r = s->uid_scoped ? 0 : uid_scope_put(s, e->key, e->val);
        if (r == 0)
            r = evict_buf(s, &gm, &groups, &n, &alloc, sc, &b);
        if (r == 0)
            r = rec_put_pair(b, 'I', e->key, e->val);
    }
    const struct {
        char tag;
        const gcp_pendings *list;
    } lists[] = {{'C', &s->custom}, {'F', &s->foreign}, {'U', &s->unused}};
    for (size_t l = 0; l < ARRAY_SIZE(lists) && r == 0; l++)
        for (size_t i = 0; i < lists[l].list->n && r == 0; i++) {
            const gcp_pending *p = &lists[l].list->v[i];
            if (lists[l].tag == 'U' && p->email)
                email_scope(p->email, sc);
            r = evict_buf(s, &gm, &groups, &n, &alloc,
                          lists[l].tag == 'U' && p->email ? sc : p->account, &b);
            if (r == 0)
                r = rec_put_pending(b, lists[l].tag, p);
        }
    const char *email;
    json_t *list, *pool;
    json_object_foreach(s->sa_pools, email, list)
    {
        size_t j;
        email_scope(email, sc);
        json_array_foreach(list, j, pool)
        {
            if (r == 0)
                r = evict_buf(s, &gm, &groups, &n, &alloc, sc, &b);
            if (r == 0)
                r = rec_put_pair(b, 'P', email, json_string_value(pool));
        }
    }
    for (size_t i = 0; i < gm.n_slots && r == 0; i++) {
        const char *scope = gm.slots[i].key;
        ferry_buf *g;
        if (!scope)
            continue;
        g = &groups[(uintptr_t)gm.slots[i].val - 1];
        if (keep && strcmp(scope, keep) == 0) {
            r = ferry_buf_append(&mine, g->data, g->len);
            continue;
        }
        if (!map_get(&s->strs, &s->spilled, scope)) {
            r = audit_vec_room(&s->scopes, &s->alloc_scopes, s->n_scopes, sizeof(*s->scopes), 16,
                               GCP_MAP_MAX);
            if (r == 0)
                r = map_put(&s->spilled, scope, (const void *)1);
            if (r < 0)
                break;
            s->scopes[s->n_scopes++] = scope;
        }
        r = audit_spill_put(&s->spill, scope, g->data, g->len);
    }
    if (r == 0) {
        s->uid_scoped = true;
        records_release(s);
        if (mine.len) {
            unspill_ctx u = {s, keep};
            r = gcp_unspill(&u, mine.data, mine.len);
        }
        s->evict_floor = 2 * records_held(s);
    }
    for (size_t i = 0; i < n; i++)
        ferry_buf_release(&groups[i]);
    free(groups);
    free(gm.slots);
    ferry_buf_release(&mine);
    return r;
}

/* Make scope's records the ones in memory (see above): the others' put aside when the state
 * holds too many, then what was put aside of scope taken back. */
static int gcp_resident(gcp_ctx *c, const char *scope)
{
    gcp_state *s = c->s;
    size_t at = s->evict_floor > c->a->spill_after ? s->evict_floor : c->a->spill_after;
    int r = 0;

    if (records_held(s) > at)
        r = gcp_evict(s, scope);
    if (r == 0 && audit_spill_holds(&s->spill, scope)) {
        unspill_ctx u = {s, scope};
        r = audit_spill_take(&s->spill, scope, gcp_unspill, &u);
    }
    return audit_spill_error(&s->spill, r, c->errbuf, c->errlen);
}

size_t audit_gcp_records(const ferry_audit *a, uint64_t *ret_spilled)
{
    const gcp_state *s = a->gcp;
    *ret_spilled = s ? s->spill.size : 0;
    return s ? records_held(s) : 0;
}

/* The SA record of the index, created on first sight (its project the one the email names,
 * its source this input), in *ret: good until the next sa_record. */
static int sa_record(gcp_ctx *c, const char *email, gcp_sa **ret)
{
    gcp_state *s = c->s;
    uintptr_t v;
    gcp_sa rec = {.flags = 0};
    char p[80];
    int r;

    email_scope(email, p);
    if ((r = gcp_resident(c, p)) < 0)
        return r;
    v = (uintptr_t)map_get(&s->recs, &s->sa_index, email);
    if (v >> 1) {
        *ret = &s->sas[(v >> 1) - 1];
        return 0;
    }
    if ((r = audit_vec_room(&s->sas, &s->alloc_sas, s->n_sas, sizeof(*s->sas), 256, GCP_MAP_MAX)) <
        0)
        return r;
    if ((r = audit_strset_intern(&s->recs, email, &rec.email)) < 0 ||
        (r = audit_strset_intern(&s->recs, p, &rec.project)) < 0 ||
        (r = audit_strset_intern(&s->recs, "", &rec.uid)) < 0 ||
        (r = audit_strset_intern(&s->recs, c->path, &rec.source)) < 0 ||
        (r = map_put(&s->sa_index, rec.email, (const void *)((s->n_sas + 1) << 1 | (v & 1)))) < 0)
        return r;
    s->sas[s->n_sas] = rec;
    *ret = &s->sas[s->n_sas++];
    return 0;
}

static int sa_flag(gcp_ctx *c, const char *email, unsigned flags)
{
    gcp_sa *rec;
    int r = sa_record(c, email, &rec);
    if (r == 0)
        rec->flags |= flags;
    return r;
}

static int note_project(gcp_ctx *c, const char *project)
{
    json_t *p;
    if (!project[0])
        return 0;
    if (set_add(&c->s->estate, project) < 0 || !(p = index_of(&c->s->projects, false)))
        return -ENOMEM;
    if (json_object_get(p, project))
        return 0;
    return json_object_set_new(p, project, json_string(c->path)) < 0 ? -ENOMEM : 0;
}

/* ---- the elements of a list input --------------------------------------------------------
 *
 * A list input is a JSON array of objects (gcloud --format=json), one object (describe), or,
 * after core.c's NDJSON reading, an array of such arrays (concatenated per-SA key lists). */

typedef int (*element_fn)(gcp_ctx *c, json_t *e, const char *where);

static int each_element(gcp_ctx *c, json_t *doc, element_fn fn, const char *expected)
{
    char where[48];
    size_t i, j;
    json_t *e, *f;
    int r;

    if (json_is_object(doc))
        return fn(c, doc, "");
    if (!json_is_array(doc))
        return bad(c, "", "expected %s (a JSON array of objects)", expected);
    json_array_foreach(doc, i, e)
    {
        if (json_is_array(e)) {
            json_array_foreach(e, j, f)
            {
                (void)snprintf(where, sizeof(where), "/%zu/%zu", i, j);
                if (!json_is_object(f)) {
                    audit_error_where(c->a, "%s", where);
                    return ferry_errbuf_set(c->errbuf, c->errlen, -FERRY_EMALFORMED,
                                            "[%zu][%zu]: expected an object of %s", i, j, expected);
                }
                if ((r = fn(c, f, where)) < 0)
                    return r;
            }
            continue;
        }
        (void)snprintf(where, sizeof(where), "/%zu", i);
        if (!json_is_object(e)) {
            audit_error_where(c->a, "%s", where);
            return ferry_errbuf_set(c->errbuf, c->errlen, -FERRY_EMALFORMED,
                                    "[%zu]: expected an object of %s", i, expected);
        }
        if ((r = fn(c, e, where)) < 0)
            return r;
    }
    return 0;
}

/* The first object of a list input (for detection). */
static const json_t *first_object(const json_t *doc)
{
    if (json_is_object(doc))
        return doc;
    const json_t *e = json_array_get(doc, 0);
    if (json_is_array(e))
        e = json_array_get(e, 0);
    return json_is_object(e) ? e : NULL;
}

/* ---- service accounts -------------------------------------------------------------------- */

static int service_account(gcp_ctx *c, json_t *sa, const char *where, const char *project_hint)
{
    const char *email = str_member(sa, "email"), *uid = str_member(sa, "uniqueId");
    const char *proj = str_member(sa, "projectId"), *desc = str_member(sa, "description");
    gcp_sa *rec;
    char p[80];
    int r;

    if (!plausible_email(email)) {
        where_member(c, where, sa, "email");
        return fail(c, "%s: expected the service account's email string",
                    where[0] ? where + 1 : "service account");
    }
    if ((r = sa_record(c, email, &rec)) < 0)
        return r;
    if (proj && valid_project(proj))
        (void)snprintf(p, sizeof(p), "%s", proj);
    else if (project_hint)
        (void)snprintf(p, sizeof(p), "%s", project_hint);
    else
        email_project(email, p, sizeof(p));
    if ((r = audit_strset_intern(&c->s->recs, p, &rec->project)) < 0 ||
        (uid && (r = audit_strset_intern(&c->s->recs, uid, &rec->uid)) < 0))
        return r;
    /* the uid -> email entry is in the SA's scope; uid_scope says which that is */
    if (uid && uid[0] &&
        ((r = map_put(&c->s->uids, rec->uid, rec->email)) < 0 ||
         (c->s->uid_scoped && (r = uid_scope_put(c->s, rec->uid, rec->email)) < 0)))
        return r;
    bool disabled = json_is_true(json_object_get(sa, "disabled"));
    if ((r = sa_flag(c, email, SA_LISTED | (disabled ? SA_DISABLED : 0))) < 0)
        return r;
    if ((r = note_project(c, p)) < 0)
        return r;
    /* GCP-SH-009, the owner half: a user-created, enabled account with no description. */
    if (!disabled && !service_agent(email) && !default_sa(email) && (!desc || !desc[0])) {
        _cleanup_free_ char *uri = NULL;
        if (sa_uri(email, &uri) < 0)
            return -ENOMEM;
        json_t *ev = json_pack("{s:s, s:n, s:s?}", "email", email, "description", "displayName",
                               str_member(sa, "displayName"));
        if ((r = emit(c, "GCP-SH-009", -1, p, uri, ev, "no-description")) < 0)
            return r;
    }
    /* GCP-SH-009, the unmanaged half: not declared in the IaC inventory (--iac-inventory). */
    if (!disabled && !service_agent(email) && !default_sa(email) && audit_iac_loaded(c->a) &&
        !audit_iac_manages_gcp(c->a, email)) {
        _cleanup_free_ char *uri = NULL;
        if (sa_uri(email, &uri) < 0)
            return -ENOMEM;
        json_t *ev = json_pack("{s:s, s:b}", "email", email, "in_iac_inventory", 0);
        if ((r = emit(c, "GCP-SH-009", -1, p, uri, ev, "unmanaged")) < 0)
            return r;
    }
    return 0;
}

static int sa_list_element(gcp_ctx *c, json_t *e, const char *where)
{
    return service_account(c, e, where, NULL);
}

static bool detect_sa_list(const json_t *doc)
{
    const json_t *e = first_object(doc);
    return e && json_is_string(json_object_get(e, "email")) &&
           json_is_string(json_object_get(e, "uniqueId")) &&
           (json_object_get(e, "oauth2ClientId") || json_object_get(e, "projectId"));
}

static int load_sa_list(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                        char *errbuf, size_t errlen)
{
    gcp_ctx c = {.a = a, .s = state(a), .path = path, .errbuf = errbuf, .errlen = errlen};
    (void)buf;
    (void)len;
    if (!c.s)
        return -ENOMEM;
    return each_element(&c, doc, sa_list_element, "gcloud iam service-accounts list");
}

/* ---- keys -------------------------------------------------------------------------------- */

/* "projects/P/serviceAccounts/EMAIL/keys/ID" (optionally "//iam.googleapis.com/" before) ->
 * P and EMAIL. */
static bool key_name(const char *name, char *proj, size_t projlen, char *email, size_t emaillen)
{
    const char *n = name;
    if (strncmp(n, "//iam.googleapis.com/", 21) == 0)
        n += 21;
    if (strncmp(n, "projects/", 9) != 0)
        return false;
    n += 9;
    size_t pl = strcspn(n, "/");
    if (strncmp(n + pl, "/serviceAccounts/", 17) != 0)
        return false;
    const char *e = n + pl + 17;
    size_t el = strcspn(e, "/");
    if (strncmp(e + el, "/keys/", 6) != 0 || !e[el + 6] || el >= emaillen || pl >= projlen)
        return false;
    (void)snprintf(proj, projlen, "%.*s", (int)pl, n);
    (void)snprintf(email, emaillen, "%.*s", (int)el, e);
    return true;
}

static int sa_key(gcp_ctx *c, json_t *k, const char *name, const char *where)
{
    const char *type = str_member(k, "keyType"), *after = str_member(k, "validAfterTime");
    const char *before = str_member(k, "validBeforeTime");
    char proj[80], email[256], p2[80];
    int64_t now = audit_now(c->a), t_after = 0, t_before = 0;
    _cleanup_free_ char *res = NULL;
    int r;

    if (!name || !key_name(name, proj, sizeof(proj), email, sizeof(email)) ||
        !plausible_email(email)) {
        where_member(c, where, k, "name");
        return fail(c,
                    "%s: expected a key name "
                    "'projects/PROJECT/serviceAccounts/EMAIL/keys/KEY_ID'",
                    where[0] ? where + 1 : "key");
    }
    if (after && audit_parse_time(after, &t_after) < 0) {
        where_member(c, where, k, "validAfterTime");
        return fail(c, "%s: validAfterTime: expected a timestamp", where[0] ? where + 1 : "key");
    }
    if (before && audit_parse_time(before, &t_before) < 0) {
        where_member(c, where, k, "validBeforeTime");
        return fail(c, "%s: validBeforeTime: expected a timestamp", where[0] ? where + 1 : "key");
    }
    if (strcmp(proj, "-") == 0 || !valid_project(proj)) {
        email_project(email, p2, sizeof(p2));
        (void)snprintf(proj, sizeof(proj), "%s", p2);
    }
    gcp_sa *rec;
    if ((r = sa_record(c, email, &rec)) < 0 || (r = note_project(c, proj)) < 0)
        return r;
    /* Some CAI exports omit keyType; gcloud always names it. A key without one is taken as
     * user-managed: reporting a system-managed key is the lesser error than missing a
     * user-managed one (documented). */
    if (type && strcmp(type, "USER_MANAGED") != 0)
        return 0;
    if (json_is_true(json_object_get(k, "disabled")))
        return 0;
    if (before && t_before <= now)
        return 0; /* expired: authenticates nothing */
    if ((r = sa_flag(c, email, SA_KEY)) < 0)
        return r;
    if (str_printf(&res, "//iam.googleapis.com/%s",
                   strncmp(name, "//iam.googleapis.com/", 21) == 0 ? name + 21 : name) < 0)
        return -ENOMEM;
    json_t *base = json_pack("{s:s, s:s, s:s?, s:s?, s:s?}", "service_account", email, "key", name,
                             "keyType", type, "validAfterTime", after, "validBeforeTime", before);
    if (!base)
        return -ENOMEM;
    r = emit(c, "GCP-SH-001", -1, proj, res, json_deep_copy(base), "user-managed");
    if (r == 0 && after && now - t_after > (int64_t)c->a->opts.key_max_age_days * DAY) {
        json_t *ev = json_deep_copy(base);
        if (ev && json_object_set_new(ev, "age_days", json_integer((now - t_after) / DAY)) < 0) {
            json_decref(ev);
            ev = NULL;
        }
        r = emit(c, "GCP-SH-002", -1, proj, res, ev, "age");
    }
    if (r == 0 && before && strncmp(before, "9999-12-31", 10) == 0)
        r = emit(c, "GCP-SH-003", -1, proj, res, json_deep_copy(base), "never-expires");
    json_decref(base);
    return r;
}

static int key_element(gcp_ctx *c, json_t *e, const char *where)
{
    return sa_key(c, e, str_member(e, "name"), where);
}

static bool detect_keys(const json_t *doc)
{
    const json_t *e = first_object(doc);
    return e && json_object_get(e, "validAfterTime") &&
           (json_object_get(e, "keyType") || json_object_get(e, "keyAlgorithm")) &&
           !json_object_get(e, "asset_type") && !json_object_get(e, "assetType");
}

static int load_keys(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                     char *errbuf, size_t errlen)
{
    gcp_ctx c = {.a = a, .s = state(a), .path = path, .errbuf = errbuf, .errlen = errlen};
    (void)buf;
    (void)len;
    if (!c.s)
        return -ENOMEM;
    return each_element(&c, doc, key_element, "gcloud iam service-accounts keys list");
}

/* ---- IAM policies ------------------------------------------------------------------------ */

static const char *const basic_roles[] = {"roles/owner", "roles/editor", NULL};
static const char *const impersonation_roles[] = {"roles/iam.serviceAccountUser",
                                                  "roles/iam.serviceAccountTokenCreator",
                                                  "roles/iam.workloadIdentityUser", NULL};

static bool in_list(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (strcmp(s, list[i]) == 0)
            return true;
    return false;
}

static bool custom_role(const char *role)
{
    return (strncmp(role, "projects/", 9) == 0 || strncmp(role, "organizations/", 14) == 0) &&
           strstr(role, "/roles/");
}

/* A predefined role whose id ends in Admin/admin. */
static bool admin_role(const char *role)
{
    if (strncmp(role, "roles/", 6) != 0)
        return false;
    const char *id = strrchr(role, '.');
    id = id ? id + 1 : role + 6;
    return ends_with(id, "admin");
}

/* A condition of the exact form request.time < timestamp("T") whose T has passed: the binding
 * grants nothing any more. Any other expression counts as possibly true. */
static bool condition_expired(const json_t *cond, int64_t now)
{
    const char *e = str_member(cond, "expression");
    char ts[64];
    int64_t t;
    if (!e)
        return false;
    e += strspn(e, " \t\r\n");
    if (strncmp(e, "request.time", 12) != 0)
        return false;
    e += 12;
    e += strspn(e, " \t");
    if (*e != '<')
        return false;
    e++;
    if (*e == '=')
        e++;
    e += strspn(e, " \t");
    if (strncmp(e, "timestamp(\"", 11) != 0)
        return false;
    e += 11;
    size_t n = strcspn(e, "\"");
    if (n == 0 || n >= sizeof(ts) || strncmp(e + n, "\")", 2) != 0)
        return false;
    memcpy(ts, e, n);
    ts[n] = '\0';
    e += n + 2;
    e += strspn(e, " \t\r\n");
    return *e == '\0' && audit_parse_time(ts, &t) == 0 && t <= now;
}

typedef struct gcp_policy {
    const char *resource; /* full resource name */
    gcp_level level;
    char account[160];
    const char *sa_email; /* the SA a service-account policy is on, or NULL */
} gcp_policy;

static json_t *binding_evidence(const gcp_policy *pol, const char *role, const char *member,
                                const json_t *cond)
{
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s}", "resource", pol->resource, "level",
                           level_names[pol->level], "role", role, "member", member);
    if (ev && cond && json_is_object(cond) &&
        json_object_set_new(ev, "condition",
                            json_pack("{s:s?, s:s?}", "title", str_member(cond, "title"),
                                      "expression", str_member(cond, "expression"))) < 0) {
        json_decref(ev);
        return NULL;
    }
    return ev;
}

static int key_join(char **ret, const char *x, const char *y)
{
    return str_printf(ret, "%s\n%s", x, y) < 0 ? -ENOMEM : 0;
}

/* A binding's member that is a service account. */
static int sa_member(gcp_ctx *c, const gcp_policy *pol, const char *role, const char *member,
                     const char *email, const json_t *cond, bool active)
{
    bool hierarchy = pol->level <= LVL_PROJECT, agent = service_agent(email);
    bool op = !agent || c->s->include_agents;
    _cleanup_free_ char *uri = NULL, *key = NULL;
    char proj[80];
    int r;

    const char *bound;
    gcp_sa *rec;

    /* the mark goes to the member's scope (another project's, often) */
    email_scope(email, proj);
    if ((r = gcp_resident(c, proj)) < 0 ||
        (r = audit_strset_intern(&c->s->recs, email, &bound)) < 0 ||
        (r = map_put(&c->s->sa_index, bound,
                     (const void *)((uintptr_t)map_get(&c->s->recs, &c->s->sa_index, bound) | 1))) <
            0)
        return r;
    /* The project's own service accounts are identities of the audited estate even when no
     * account list was given (for the shadow-identity comparison). */
    email_project(email, proj, sizeof(proj));
    if (proj[0] && strcmp(proj, pol->account) == 0 && (r = sa_record(c, email, &rec)) < 0)
        return r;
    if (!active)
        return 0;
    if (sa_uri(email, &uri) < 0 || key_join(&key, pol->resource, role) < 0)
        return -ENOMEM;
    if (hierarchy && strcmp(role, "roles/editor") == 0 &&
        (default_sa(email) || cloudservices_agent(email))) {
        /* GCP-OP-003 (instead of OP-001 for the same grant); the Google APIs service agent
         * is the catalogue's exception to the service-agent exclusion, at info. */
        r = emit(c, "GCP-OP-003", cloudservices_agent(email) ? FERRY_AUDIT_INFO : -1, pol->account,
                 uri, binding_evidence(pol, role, member, cond), key);
        if (r < 0)
            return r;
    } else if (hierarchy && op && in_list(role, basic_roles)) {
        r = emit(c, "GCP-OP-001", pol->level == LVL_ORG ? FERRY_AUDIT_CRITICAL : -1, pol->account,
                 uri, binding_evidence(pol, role, member, cond), key);
        if (r < 0)
            return r;
    }
    if (hierarchy && op && admin_role(role)) {
        r = emit(c, "GCP-OP-002", -1, pol->account, uri, binding_evidence(pol, role, member, cond),
                 key);
        if (r < 0)
            return r;
    }
    if (hierarchy && op && custom_role(role)) {
        gcp_pending p = {.email = email, .role = role, .account = pol->account, .key = key};
        if ((r = gcp_resident(c, pol->account)) < 0 ||
            (r = pending_add(c, &c->s->custom, p, binding_evidence(pol, role, member, cond))) < 0)
            return r;
    }
    /* GCP-OP-008: another project's SA can mint tokens for this SA. */
    if (pol->level == LVL_SA && op && pol->sa_email &&
        strcmp(role, "roles/iam.serviceAccountTokenCreator") == 0) {
        char target[80];
        email_project(email, proj, sizeof(proj));
        email_project(pol->sa_email, target, sizeof(target));
        if (proj[0] && strcmp(proj, target) != 0 && strcmp(proj, pol->account) != 0) {
            _cleanup_free_ char *turi = NULL;
            if (sa_uri(pol->sa_email, &turi) < 0)
                return -ENOMEM;
            r = emit(c, "GCP-OP-008", -1, pol->account, turi,
                     binding_evidence(pol, role, member, cond), member);
            if (r < 0)
                return r;
        }
    }
    /* GCP-SH-008 candidates: an SA whose project id the email names (not a number: numbers and
     * ids cannot be compared without a map the exports do not give) and that is not the
     * policy's own project; decided at the end against the estate and --trusted-projects. */
    if (!agent && !default_compute_sa(email)) {
        email_project(email, proj, sizeof(proj));
        if (proj[0] && !all_digits(proj, strlen(proj)) && strcmp(proj, pol->account) != 0) {
            /* reported on the policy: the member tells the findings apart */
            _cleanup_free_ char *mkey = NULL;
            if (key_join(&mkey, member, role) < 0)
                return -ENOMEM;
            gcp_pending p = {
                .project = proj, .account = pol->account, .resource = pol->resource, .key = mkey};
            r = gcp_resident(c, pol->account);
            if (r == 0)
                r = pending_add(c, &c->s->foreign, p, binding_evidence(pol, role, member, cond));
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/* "principalSet://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/..."
 * -> "projects/N/locations/global/workloadIdentityPools/P". */
static bool member_pool(const char *member, char *out, size_t outlen)
{
    const char *p = NULL;
    if (strncmp(member, "principalSet://iam.googleapis.com/", 34) == 0)
        p = member + 34;
    else if (strncmp(member, "principal://iam.googleapis.com/", 31) == 0)
        p = member + 31;
    if (!p)
        return false;
    const char *w = strstr(p, "/workloadIdentityPools/");
    if (!w)
        return false;
    w += 23;
    size_t n = (size_t)(w - p) + strcspn(w, "/");
    if (n >= outlen)
        return false;
    (void)snprintf(out, outlen, "%.*s", (int)n, p);
    return true;
}

static int binding(gcp_ctx *c, const gcp_policy *pol, json_t *b, const char *where)
{
    const char *role = str_member(b, "role");
    json_t *members = json_object_get(b, "members"), *m, *cond = json_object_get(b, "condition");
    size_t i;
    int r;

    if (!role) {
        where_member(c, where, b, "role");
        return ferry_errbuf_set(c->errbuf, c->errlen, -FERRY_EMALFORMED,
                                "%s: expected a role string", where + 1);
    }
    if (members && !json_is_array(members)) {
        where_member(c, where, b, "members");
        return ferry_errbuf_set(c->errbuf, c->errlen, -FERRY_EMALFORMED,
                                "%s: members: expected an array of strings", where + 1);
    }
    bool active = !cond || !condition_expired(cond, audit_now(c->a));
    bool hierarchy = pol->level <= LVL_PROJECT;
    json_array_foreach(members, i, m)
    {
        const char *member = json_string_value(m);
        if (!member) {
            audit_error_where(c->a, "%s/members/%zu", where, i);
            return ferry_errbuf_set(c->errbuf, c->errlen, -FERRY_EMALFORMED,
                                    "%s: members[%zu]: expected a string", where + 1, i);
        }
        _cleanup_free_ char *key = NULL;
        if (key_join(&key, member, role) < 0)
            return -ENOMEM;
        if (strncmp(member, "deleted:", 8) == 0) {
            r = emit(c, "GCP-SH-007", -1, pol->account, pol->resource,
                     binding_evidence(pol, role, member, cond), key);
            if (r < 0)
                return r;
            continue;
        }
        if (active &&
            (strcmp(member, "allUsers") == 0 || strcmp(member, "allAuthenticatedUsers") == 0)) {
            if (hierarchy || pol->level == LVL_SA) {
                r = emit(c, "GCP-OP-006", -1, pol->account, pol->resource,
                         binding_evidence(pol, role, member, cond), key);
                if (r < 0)
                    return r;
            }
            continue;
        }
        const char *email = strncmp(member, "serviceAccount:", 15) == 0 ? member + 15 : NULL;
        if (active && hierarchy && in_list(role, impersonation_roles) &&
            (!email || !service_agent(email) || c->s->include_agents)) {
            r = emit(c, "GCP-OP-005", -1, pol->account, pol->resource,
                     binding_evidence(pol, role, member, cond), key);
            if (r < 0)
                return r;
        }
        if (email && plausible_email(email)) {
            r = sa_member(c, pol, role, member, email, cond, active);
            if (r < 0)
                return r;
        }
        /* GKE workload identity: a Kubernetes service account may act as this one. */
        if (active && pol->level == LVL_SA && pol->sa_email && email &&
            strstr(email, ".svc.id.goog[") && strcmp(role, "roles/iam.workloadIdentityUser") == 0 &&
            (r = sa_flag(c, pol->sa_email, SA_FEDERATED)) < 0)
            return r;
        char pool[512];
        if (active && pol->level == LVL_SA && pol->sa_email &&
            member_pool(member, pool, sizeof(pool)) &&
            (strcmp(role, "roles/iam.workloadIdentityUser") == 0 ||
             strcmp(role, "roles/iam.serviceAccountTokenCreator") == 0)) {
            char sc[80];
            email_scope(pol->sa_email, sc);
            if ((r = gcp_resident(c, sc)) < 0 || (r = sa_pool_add(c->s, pol->sa_email, pool)) < 0)
                return r;
        }
    }
    return 0;
}

/* The catalogue's tolerance: a policy's bindings may be one object, a binding's members one
 * string; both become one-element arrays in place (the document is this input's own). */
static int normalise_policy(json_t *p)
{
    json_t *bindings = json_object_get(p, "bindings"), *b, *arr;
    size_t i;
    if (json_is_object(bindings)) {
        arr = json_array();
        if (!arr || json_array_append(arr, bindings) < 0 ||
            json_object_set_new(p, "bindings", arr) < 0) {
            json_decref(arr);
            return -ENOMEM;
        }
        bindings = arr;
    }
    json_array_foreach(bindings, i, b)
    {
        json_t *m = json_object_get(b, "members");
        if (!json_is_string(m))
            continue;
        arr = json_array();
        if (!arr || json_array_append(arr, m) < 0 || json_object_set_new(b, "members", arr) < 0) {
            json_decref(arr);
            return -ENOMEM;
        }
    }
    return 0;
}

/* One policy ({bindings: [...]}) of resource res. where: its place in the document. */
static int policy(gcp_ctx *c, json_t *p, const char *res, const char *project_hint,
                  const char *where)
{
    gcp_policy pol = {.resource = res};
    json_t *bindings, *b;
    char w[160];
    size_t i;
    int r;

    if (!json_is_object(p)) {
        audit_error_where(c->a, "%s", where);
        return ferry_errbuf_set(c->errbuf, c->errlen, -FERRY_EMALFORMED,
                                "%s: expected an IAM policy object with bindings",
                                where[0] ? where + 1 : "policy");
    }
    if ((r = normalise_policy(p)) < 0)
        return r;
    bindings = json_object_get(p, "bindings");
    if (bindings && !json_is_array(bindings) && !json_is_null(bindings)) {
        where_member(c, where, p, "bindings");
        return ferry_errbuf_set(c->errbuf, c->errlen, -FERRY_EMALFORMED,
                                "%sbindings: expected an array", where[0] ? where + 1 : "");
    }
    pol.level = resource_level(res, project_hint, pol.account, sizeof(pol.account));
    _cleanup_free_ char *email = NULL;
    if (pol.level == LVL_SA) {
        const char *e = strstr(res, "/serviceAccounts/") + 17;
        email = strndup(e, strcspn(e, "/"));
        if (!email)
            return -ENOMEM;
        /* CAI names SAs by uniqueId: the account list (or an SA asset before) says which */
        if (!plausible_email(email)) {
            const char *sc = map_get(&c->s->strs, &c->s->uid_scope, email), *known = NULL;
            /* (no scope: nothing was put aside, or the uid is not known) */
            if (sc && (r = gcp_resident(c, sc)) < 0)
                return r;
            known = map_get(&c->s->recs, &c->s->uids, email);
            free(email);
            email = NULL;
            /* a copy: the records' strings do not outlive the next eviction */
            if (known && !(email = strdup(known)))
                return -ENOMEM;
        }
        pol.sa_email = email;
    }
    if (pol.level == LVL_PROJECT || pol.level == LVL_SA)
        if ((r = note_project(c, pol.account)) < 0)
            return r;
    json_array_foreach(bindings, i, b)
    {
        char idx[40];
        (void)snprintf(idx, sizeof(idx), "/bindings/%zu", i);
        where_join(w, sizeof(w), where, idx);
        if (!json_is_object(b)) {
            audit_error_where(c->a, "%s", w);
            return ferry_errbuf_set(c->errbuf, c->errlen, -FERRY_EMALFORMED,
                                    "%s: expected a binding object", w + 1);
        }
        if ((r = binding(c, &pol, b, w)) < 0)
            return r;
    }
    return 0;
}

/* The shape of a policy's bindings, checked before anything is derived from them, with the
 * errors binding() gives. */
static int check_bindings(gcp_ctx *c, json_t *bindings)
{
    json_t *b, *m;
    size_t i, j;
    json_array_foreach(bindings, i, b)
    {
        json_t *members = json_object_get(b, "members");
        if (!json_is_object(b)) {
            audit_error_where(c->a, "/bindings/%zu", i);
            return fail(c, "bindings/%zu: expected a binding object", i);
        }
        if (!json_is_string(json_object_get(b, "role"))) {
            audit_error_where(c->a, "/bindings/%zu%s", i,
                              json_object_get(b, "role") ? "/role" : "");
            return fail(c, "bindings/%zu: expected a role string", i);
        }
        if (members && !json_is_array(members)) {
            audit_error_where(c->a, "/bindings/%zu/members", i);
            return fail(c, "bindings/%zu: members: expected an array of strings", i);
        }
        json_array_foreach(members, j, m)
        {
            if (json_is_string(m))
                continue;
            audit_error_where(c->a, "/bindings/%zu/members/%zu", i, j);
            return fail(c, "bindings/%zu: members[%zu]: expected a string", i, j);
        }
    }
    return 0;
}

static bool detect_iam_policy(const json_t *doc)
{
    json_t *b = json_is_object(doc) ? json_object_get(doc, "bindings") : NULL;
    return (json_is_array(b) || json_is_object(b)) &&
           (json_object_get(doc, "etag") || json_object_get(doc, "version"));
}

/* get-iam-policy prints no resource name. Unless --gcp-resource names it, the project is the
 * one most project-owned service accounts among the members belong to (SA@ID.iam..., ID@appspot;
 * ties give no answer), else the one project number the default and agent accounts share. */
static int derive_project(json_t *doc, char *out, size_t outlen)
{
    json_t *ids = json_object(), *nums = json_object(), *b, *m, *v;
    size_t i, j;
    const char *k, *best = NULL;
    json_int_t top = 0;
    bool tie = false;

    out[0] = '\0';
    if (!ids || !nums) {
        json_decref(ids);
        json_decref(nums);
        return -ENOMEM;
    }
    json_array_foreach(json_object_get(doc, "bindings"), i, b)
        json_array_foreach(json_object_get(b, "members"), j, m)
    {
        const char *s = json_string_value(m);
        char p[80];
        if (!s || strncmp(s, "serviceAccount:", 15) != 0)
            continue;
        email_project(s + 15, p, sizeof(p));
        if (!p[0])
            continue;
        json_t *set = all_digits(p, strlen(p)) ? nums : ids;
        json_int_t n = json_integer_value(json_object_get(set, p)) + 1;
        if (json_object_set_new(set, p, json_integer(n)) < 0) {
            json_decref(ids);
            json_decref(nums);
            return -ENOMEM;
        }
    }
    json_object_foreach(ids, k, v)
    {
        json_int_t n = json_integer_value(v);
        if (n > top) {
            top = n;
            best = k;
            tie = false;
        } else if (n == top) {
            tie = true;
        }
    }
    if (best && !tie)
        (void)snprintf(out, outlen, "%s", best);
    else if (!best && json_object_size(nums) == 1)
        (void)snprintf(out, outlen, "%s", json_object_iter_key(json_object_iter(nums)));
    json_decref(ids);
    json_decref(nums);
    return 0;
}

static int load_iam_policy(ferry_audit *a, const char *path, const char *buf, size_t len,
                           json_t *doc, char *errbuf, size_t errlen)
{
    gcp_ctx c = {.a = a, .s = state(a), .path = path, .errbuf = errbuf, .errlen = errlen};
    _cleanup_free_ char *res = NULL;
    char proj[80];
    (void)buf;
    (void)len;

    if (!c.s)
        return -ENOMEM;
    if (json_is_object(doc) && normalise_policy(doc) < 0)
        return -ENOMEM;
    if (!json_is_object(doc) || !json_is_array(json_object_get(doc, "bindings")))
        return bad(&c, "", "%s",
                   "expected the output of gcloud projects get-iam-policy: an object with a "
                   "bindings array");
    int r = check_bindings(&c, json_object_get(doc, "bindings"));
    if (r < 0)
        return r;
    if (c.s->resource) {
        res = strdup(c.s->resource);
    } else {
        if (derive_project(doc, proj, sizeof(proj)) < 0)
            return -ENOMEM;
        if (!proj[0])
            return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                    "cannot tell which project this get-iam-policy output is "
                                    "of (no project service account among its members); name "
                                    "it with --gcp-resource projects/ID");
        if (str_printf(&res, "%sprojects/%s", crm_prefix, proj) < 0)
            res = NULL;
    }
    if (!res)
        return -ENOMEM;
    return policy(&c, doc, res, NULL, "");
}

/* gcloud asset search-all-iam-policies: [{resource, assetType, project, policy}] (or the API's
 * {results: [...]}). */
static int search_element(gcp_ctx *c, json_t *e, const char *where)
{
    const char *res = str_member(e, "resource");
    json_t *pol = json_object_get(e, "policy");
    char w[96];
    if (!res) {
        where_member(c, where, e, "resource");
        return fail(c, "%s: expected a resource string", where[0] ? where + 1 : "result");
    }
    if (!pol || json_is_null(pol))
        return 0;
    where_join(w, sizeof(w), where, "/policy");
    return policy(c, pol, res, str_member(e, "project"), w);
}

static json_t *search_results(const json_t *doc)
{
    if (json_is_object(doc) && json_is_array(json_object_get(doc, "results")))
        return json_object_get(doc, "results");
    return (json_t *)doc;
}

static bool detect_asset_iam(const json_t *doc)
{
    const json_t *e = first_object(search_results(doc));
    return e && json_is_string(json_object_get(e, "resource")) &&
           json_is_object(json_object_get(e, "policy"));
}

static int load_asset_iam(ferry_audit *a, const char *path, const char *buf, size_t len,
                          json_t *doc, char *errbuf, size_t errlen)
{
    gcp_ctx c = {.a = a, .s = state(a), .path = path, .errbuf = errbuf, .errlen = errlen};
    (void)buf;
    (void)len;
    if (!c.s)
        return -ENOMEM;
    if (json_is_object(doc) && json_object_get(doc, "results")) {
        json_t *res = json_object_get(doc, "results");
        if (!json_is_array(res))
            return bad(&c, "/results", "%s", "results: expected an array");
        /* Indexes are relative to results: errors name the element without a line. */
        return each_element(&c, res, search_element, "gcloud asset search-all-iam-policies");
    }
    return each_element(&c, doc, search_element, "gcloud asset search-all-iam-policies");
}

/* ---- roles ------------------------------------------------------------------------------- */

/* The dangerous permissions of a role (OP-002): *.setIamPolicy, iam.serviceAccountKeys.create. */
static int role_definition(gcp_ctx *c, json_t *role, const char *name, const char *where)
{
    json_t *perms = json_object_get(role, "includedPermissions"), *p, *hits;
    size_t i;

    if (!name) {
        where_member(c, where, role, "name");
        return fail(c, "%s: expected the role's name string", where[0] ? where + 1 : "role");
    }
    if (perms && !json_is_array(perms)) {
        where_member(c, where, role, "includedPermissions");
        return fail(c, "%s: includedPermissions: expected an array of strings",
                    where[0] ? where + 1 : "role");
    }
    if (!custom_role(name))
        return 0; /* predefined roles are judged by their id */
    hits = json_array();
    if (!hits)
        return -ENOMEM;
    json_array_foreach(perms, i, p)
    {
        const char *s = json_string_value(p);
        if (s && (ends_with(s, ".setIamPolicy") || strcmp(s, "iam.serviceAccountKeys.create") == 0))
            if (json_array_append(hits, p) < 0) {
                json_decref(hits);
                return -ENOMEM;
            }
    }
    json_t *idx = index_of(&c->s->roles, false);
    if (!idx) {
        json_decref(hits);
        return -ENOMEM;
    }
    if (json_object_set_new(idx, name, hits) < 0)
        return -ENOMEM;
    return 0;
}

static int role_element(gcp_ctx *c, json_t *e, const char *where)
{
    return role_definition(c, e, str_member(e, "name"), where);
}

static bool detect_roles(const json_t *doc)
{
    const json_t *e = first_object(doc);
    return e && json_is_array(json_object_get(e, "includedPermissions")) &&
           !json_object_get(e, "asset_type") && !json_object_get(e, "assetType");
}

static int load_roles(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                      char *errbuf, size_t errlen)
{
    gcp_ctx c = {.a = a, .s = state(a), .path = path, .errbuf = errbuf, .errlen = errlen};
    (void)buf;
    (void)len;
    if (!c.s)
        return -ENOMEM;
    return each_element(&c, doc, role_element, "gcloud iam roles list/describe");
}

/* ---- compute instances ------------------------------------------------------------------- */

static int instance(gcp_ctx *c, json_t *vm, const char *name, const char *where)
{
    json_t *sas = json_object_get(vm, "serviceAccounts"), *sa, *scope;
    const char *self = str_member(vm, "selfLink"), *zone = str_member(vm, "zone");
    const char *vmname = str_member(vm, "name");
    _cleanup_free_ char *res = NULL;
    char proj[80] = "";
    size_t i, j;
    int r;

    if (sas && !json_is_array(sas)) {
        where_member(c, where, vm, "serviceAccounts");
        return fail(c, "%s: serviceAccounts: expected an array", where[0] ? where + 1 : "VM");
    }
    if (name) {
        res = strdup(name);
    } else if (self && strstr(self, "/projects/")) {
        res = strdup(self);
    } else if (zone && vmname && strstr(zone, "/projects/")) {
        const char *z = strstr(zone, "/projects/");
        if (str_printf(&res, "//compute.googleapis.com%s/instances/%s", z, vmname) < 0)
            res = NULL;
    } else {
        where_member(c, where, vm, "selfLink");
        return fail(c, "%s: expected a selfLink or zone and name strings",
                    where[0] ? where + 1 : "VM");
    }
    if (!res)
        return -ENOMEM;
    const char *pp = strstr(res, "/projects/");
    if (pp)
        fit(proj, sizeof(proj), pp + 10, strcspn(pp + 10, "/"));
    json_array_foreach(sas, i, sa)
    {
        const char *email = str_member(sa, "email");
        if (!email || !default_compute_sa(email))
            continue;
        /* scopes: an array, or one string */
        json_t *scopes = json_object_get(sa, "scopes");
        size_t ns = json_is_array(scopes) ? json_array_size(scopes) : json_is_string(scopes);
        for (j = 0; j < ns; j++) {
            scope = json_is_array(scopes) ? json_array_get(scopes, j) : scopes;
            const char *s = json_string_value(scope);
            if (s && strcmp(s, "https://www.googleapis.com/auth/cloud-platform") == 0) {
                r = emit(c, "GCP-OP-004", -1, proj, res,
                         json_pack("{s:s, s:s}", "service_account", email, "scope", s), email);
                if (r < 0)
                    return r;
            }
        }
    }
    return 0;
}

static int instance_element(gcp_ctx *c, json_t *e, const char *where)
{
    return instance(c, e, NULL, where);
}

static bool detect_instances(const json_t *doc)
{
    const json_t *e = first_object(doc);
    const char *kind = e ? str_member(e, "kind") : NULL;
    return e && ((kind && strcmp(kind, "compute#instance") == 0) ||
                 (json_is_array(json_object_get(e, "serviceAccounts")) &&
                  (json_object_get(e, "machineType") || json_object_get(e, "zone"))));
}

static int load_instances(ferry_audit *a, const char *path, const char *buf, size_t len,
                          json_t *doc, char *errbuf, size_t errlen)
{
    gcp_ctx c = {.a = a, .s = state(a), .path = path, .errbuf = errbuf, .errlen = errlen};
    (void)buf;
    (void)len;
    if (!c.s)
        return -ENOMEM;
    return each_element(&c, doc, instance_element, "gcloud compute instances list");
}

/* ---- workload identity providers (GCP-TR-001) ------------------------------------------- */

static const char *const multi_tenant_issuers[] = {"https://token.actions.githubusercontent.com",
                                                   "https://gitlab.com", "https://app.terraform.io",
                                                   "https://agent.buildkite.com", NULL};

static int provider_element(gcp_ctx *c, json_t *e, const char *where)
{
    const char *name = str_member(e, "name"), *cond = str_member(e, "attributeCondition");
    json_t *oidc = json_object_get(e, "oidc");
    const char *issuer = str_member(oidc, "issuerUri"), *st = str_member(e, "state");
    char pool[512], proj[80];
    int r;

    if (!name || !strstr(name, "/workloadIdentityPools/") || !strstr(name, "/providers/")) {
        where_member(c, where, e, "name");
        return fail(c,
                    "%s: expected a provider name 'projects/N/locations/global/"
                    "workloadIdentityPools/POOL/providers/ID'",
                    where[0] ? where + 1 : "provider");
    }
    if ((st && strcmp(st, "DELETED") == 0) || json_is_true(json_object_get(e, "disabled")))
        return 0;
    const char *pe = strstr(name, "/providers/");
    fit(pool, sizeof(pool), name, (size_t)(pe - name));
    proj[0] = '\0';
    if (strncmp(name, "projects/", 9) == 0)
        fit(proj, sizeof(proj), name + 9, strcspn(name + 9, "/"));
    if (issuer && pool[0]) {
        json_t *idx = index_of(&c->s->pools, false), *list;
        if (!idx)
            return -ENOMEM;
        list = json_object_get(idx, pool);
        if (!list && (!(list = json_array()) || json_object_set_new(idx, pool, list) < 0))
            return -ENOMEM;
        if (json_array_append_new(list, json_string(issuer)) < 0)
            return -ENOMEM;
    }
    if (issuer && in_list(issuer, multi_tenant_issuers) && (!cond || !cond[strspn(cond, " ")])) {
        _cleanup_free_ char *res = NULL;
        if (str_printf(&res, "//iam.googleapis.com/%s", name) < 0)
            return -ENOMEM;
        r = emit(c, "GCP-TR-001", -1, proj, res,
                 json_pack("{s:s, s:s, s:n}", "provider", name, "issuerUri", issuer,
                           "attributeCondition"),
                 "no-condition");
        if (r < 0)
            return r;
    }
    return 0;
}

static bool detect_providers(const json_t *doc)
{
    const json_t *e = first_object(doc);
    const char *name = e ? str_member(e, "name") : NULL;
    return name && strstr(name, "/workloadIdentityPools/") && strstr(name, "/providers/");
}

static int load_providers(ferry_audit *a, const char *path, const char *buf, size_t len,
                          json_t *doc, char *errbuf, size_t errlen)
{
    gcp_ctx c = {.a = a, .s = state(a), .path = path, .errbuf = errbuf, .errlen = errlen};
    (void)buf;
    (void)len;
    if (!c.s)
        return -ENOMEM;
    return each_element(&c, doc, provider_element,
                        "gcloud iam workload-identity-pools providers list");
}

/* ---- usage: activity, insights, recommendations ----------------------------------------- */

/* "//iam.googleapis.com/projects/P/serviceAccounts/EMAIL[/keys/K]" -> P, EMAIL. */
static bool sa_resource(const char *res, char *proj, size_t projlen, char *email, size_t emaillen)
{
    const char *n = res;
    if (strncmp(n, "//iam.googleapis.com/", 21) == 0)
        n += 21;
    if (strncmp(n, "projects/", 9) != 0)
        return false;
    n += 9;
    size_t pl = strcspn(n, "/");
    if (strncmp(n + pl, "/serviceAccounts/", 17) != 0 || pl >= projlen)
        return false;
    const char *e = n + pl + 17;
    size_t el = strcspn(e, "/");
    if (el >= emaillen)
        return false;
    (void)snprintf(proj, projlen, "%.*s", (int)pl, n);
    (void)snprintf(email, emaillen, "%.*s", (int)el, e);
    return true;
}

/* GCP-SH-005 candidate (ev stolen), decided at the end of the run: a disabled account is not
 * reported, whichever input says it is disabled. email may be NULL (not known). */
static int unused_sa(gcp_ctx *c, const char *email, const char *account, const char *uri,
                     json_t *ev)
{
    gcp_pending p = {.email = email, .account = account, .resource = uri};
    char sc[80];
    int r;

    if (email)
        email_scope(email, sc);
    if ((r = gcp_resident(c, email ? sc : account)) < 0) {
        json_decref(ev);
        return r;
    }
    return pending_add(c, &c->s->unused, p, ev);
}

static int activity_element(gcp_ctx *c, json_t *e, const char *where)
{
    const char *type = str_member(e, "activityType"), *res = str_member(e, "fullResourceName");
    json_t *act = json_object_get(e, "activity");
    const char *last = str_member(act, "lastAuthenticatedTime");
    char proj[80], email[256];
    int64_t t = 0, now = audit_now(c->a);
    bool key;
    int r;

    if (!type) {
        where_member(c, where, e, "activityType");
        return fail(c, "%s: expected an activityType string", where[0] ? where + 1 : "activity");
    }
    if (strcmp(type, "serviceAccountLastAuthentication") == 0)
        key = false;
    else if (strcmp(type, "serviceAccountKeyLastAuthentication") == 0)
        key = true;
    else
        return 0; /* other activity types carry no last-use */
    if (key)
        c->s->usage_key = true;
    else
        c->s->usage_sa = true;
    if (!res || !sa_resource(res, proj, sizeof(proj), email, sizeof(email))) {
        where_member(c, where, e, "fullResourceName");
        return fail(c,
                    "%s: expected a fullResourceName "
                    "'//iam.googleapis.com/projects/P/serviceAccounts/SA...'",
                    where[0] ? where + 1 : "activity");
    }
    if (!last || audit_parse_time(last, &t) < 0) {
        audit_error_where(c->a, "%s/activity/lastAuthenticatedTime", where);
        return fail(c, "%s: activity.lastAuthenticatedTime: expected a timestamp",
                    where[0] ? where + 1 : "activity");
    }
    bool unused =
        now - t > (int64_t)(key ? c->a->opts.key_unused_days : c->a->opts.unused_days) * DAY;
    if (plausible_email(email) && !key)
        if ((r = sa_flag(c, email, unused ? SA_UNUSED : SA_USED)) < 0)
            return r;
    if ((r = note_project(c, proj)) < 0)
        return r;
    if (!unused)
        return 0;
    json_t *ev = json_pack("{s:s, s:s, s:I}", "lastAuthenticatedTime", last, "activityType", type,
                           "days", (json_int_t)((now - t) / DAY));
    if (key)
        return emit(c, "GCP-SH-004", -1, proj, res, ev, "unused");
    _cleanup_free_ char *uri = NULL;
    char ep[80] = "";
    if (plausible_email(email) ? sa_uri(email, &uri) < 0 : !(uri = strdup(res))) {
        json_decref(ev);
        return -ENOMEM;
    }
    if (plausible_email(email))
        email_project(email, ep, sizeof(ep));
    return unused_sa(c, plausible_email(email) ? email : NULL, ep[0] ? ep : proj, uri, ev);
}

static bool detect_activity(const json_t *doc)
{
    const json_t *e = first_object(doc);
    return e && json_is_string(json_object_get(e, "activityType"));
}

static int load_activity(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                         char *errbuf, size_t errlen)
{
    gcp_ctx c = {.a = a, .s = state(a), .path = path, .errbuf = errbuf, .errlen = errlen};
    (void)buf;
    (void)len;
    if (!c.s)
        return -ENOMEM;
    return each_element(&c, doc, activity_element, "gcloud policy-intelligence query-activity");
}

/* "projects/NUM/locations/..." -> NUM */
static void name_project(const char *name, char *out, size_t outlen)
{
    out[0] = '\0';
    if (name && strncmp(name, "projects/", 9) == 0)
        fit(out, outlen, name + 9, strcspn(name + 9, "/"));
}

static bool state_active(const json_t *e)
{
    const char *st = str_member(json_object_get(e, "stateInfo"), "state");
    return !st || strcmp(st, "ACTIVE") == 0;
}

/* The resource a finding about a member names: the SA's full name, or the member itself. */
static int member_resource(const char *member, char **ret)
{
    if (strncmp(member, "serviceAccount:", 15) == 0 && plausible_email(member + 15))
        return sa_uri(member + 15, ret);
    *ret = strdup(member);
    return *ret ? 0 : -ENOMEM;
}

static int insight_element(gcp_ctx *c, json_t *e, const char *where)
{
    const char *sub = str_member(e, "insightSubtype"), *name = str_member(e, "name");
    json_t *content = json_object_get(e, "content");
    char proj[80];
    int r;

    if (!sub) {
        where_member(c, where, e, "insightSubtype");
        return fail(c, "%s: expected an insightSubtype string", where[0] ? where + 1 : "insight");
    }
    name_project(name, proj, sizeof(proj));
    bool sa_insight = strcmp(sub, "SERVICE_ACCOUNT_USAGE") == 0 ||
                      (name && strstr(name, "google.iam.serviceAccount.Insight"));
    bool perm_insight = strcmp(sub, "PERMISSIONS_USAGE") == 0;
    bool lateral = (name && strstr(name, "LateralMovementInsight")) ||
                   strstr(sub, "CROSS_PROJECT") || strstr(sub, "LATERAL");
    if (sa_insight)
        c->s->usage_sa = true;
    if (perm_insight)
        c->s->usage_perm = true;
    if (!state_active(e))
        return 0;
    if (sa_insight) {
        const char *email = str_member(content, "email");
        if (!plausible_email(email)) {
            audit_error_where(c->a, "%s/content/email", where);
            return fail(c, "%s: content.email: expected the service account's email",
                        where[0] ? where + 1 : "insight");
        }
        _cleanup_free_ char *uri = NULL;
        char ep[80];
        if ((r = sa_flag(c, email, SA_UNUSED)) < 0 || sa_uri(email, &uri) < 0)
            return r < 0 ? r : -ENOMEM;
        /* the account the activity input names it under, whatever project form the insight
         * uses (its name has the project number) */
        email_project(email, ep, sizeof(ep));
        return unused_sa(c, email, ep[0] ? ep : proj, uri,
                         json_pack("{s:s, s:s?, s:s?}", "insight", sub, "lastAuthenticatedTime",
                                   str_member(content, "lastAuthenticatedTime"), "description",
                                   str_member(e, "description")));
    }
    if (perm_insight) {
        const char *member = str_member(content, "member"), *role = str_member(content, "role");
        json_t *used = json_object_get(content, "exercisedPermissions");
        /* Google APIs write int64 values as JSON strings */
        json_t *tv = json_object_get(content, "currentTotalPermissionsCount");
        json_int_t total = json_is_string(tv) ? (json_int_t)strtoll(json_string_value(tv), NULL, 10)
                                              : json_integer_value(tv);
        if (!member || !role)
            return 0;
        if (total <= 0 || (json_int_t)json_array_size(used) >= total)
            return 0;
        _cleanup_free_ char *res = NULL, *key = NULL;
        if (member_resource(member, &res) < 0 || key_join(&key, role, "insight") < 0)
            return -ENOMEM;
        return emit(c, "GCP-OP-007", -1, proj, res,
                    json_pack("{s:s, s:s, s:s, s:I, s:I}", "insight", sub, "member", member, "role",
                              role, "exercised", (json_int_t)json_array_size(used), "total", total),
                    key);
    }
    if (lateral) {
        json_t *targets = json_object_get(content, "targetServiceAccounts"), *t;
        const char *imp = str_member(json_object_get(content, "impersonator"), "serviceAccount");
        size_t i;
        json_array_foreach(targets, i, t)
        {
            const char *email = json_string_value(t);
            _cleanup_free_ char *uri = NULL;
            if (!plausible_email(email))
                continue;
            if (sa_uri(email, &uri) < 0)
                return -ENOMEM;
            r = emit(c, "GCP-OP-008", -1, proj, uri,
                     json_pack("{s:s, s:s?}", "insight", sub, "impersonator", imp),
                     imp ? imp : "insight");
            if (r < 0)
                return r;
        }
    }
    return 0;
}

static bool detect_insights(const json_t *doc)
{
    const json_t *e = first_object(doc);
    return e && json_is_string(json_object_get(e, "insightSubtype"));
}

static int load_insights(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                         char *errbuf, size_t errlen)
{
    gcp_ctx c = {.a = a, .s = state(a), .path = path, .errbuf = errbuf, .errlen = errlen};
    (void)buf;
    (void)len;
    if (!c.s)
        return -ENOMEM;
    return each_element(&c, doc, insight_element, "gcloud recommender insights list");
}

static int recommendation_element(gcp_ctx *c, json_t *e, const char *where)
{
    const char *sub = str_member(e, "recommenderSubtype"), *name = str_member(e, "name");
    json_t *ov = json_object_get(json_object_get(e, "content"), "overview");
    char proj[80];

    if (!sub) {
        where_member(c, where, e, "recommenderSubtype");
        return fail(c, "%s: expected a recommenderSubtype string",
                    where[0] ? where + 1 : "recommendation");
    }
    if (strcmp(sub, "REMOVE_ROLE") != 0 && strncmp(sub, "REPLACE_ROLE", 12) != 0)
        return 0;
    c->s->usage_perm = true;
    if (!state_active(e))
        return 0;
    const char *member = str_member(ov, "member"), *role = str_member(ov, "removedRole");
    const char *res = str_member(ov, "resource");
    if (!member || !role) {
        audit_error_where(c->a, "%s/content/overview", where);
        return fail(c, "%s: content.overview: expected member and removedRole strings",
                    where[0] ? where + 1 : "recommendation");
    }
    name_project(name, proj, sizeof(proj));
    _cleanup_free_ char *fres = NULL, *key = NULL;
    if (member_resource(member, &fres) < 0 || key_join(&key, res ? res : "", role) < 0)
        return -ENOMEM;
    return emit(c, "GCP-OP-007", -1, proj, fres,
                json_pack("{s:s, s:s, s:s, s:s?, s:O?}", "recommendation", sub, "member", member,
                          "removedRole", role, "resource", res, "addedRoles",
                          json_object_get(ov, "addedRoles")),
                key);
}

static bool detect_recommendations(const json_t *doc)
{
    const json_t *e = first_object(doc);
    return e && json_is_string(json_object_get(e, "recommenderSubtype"));
}

static int load_recommendations(ferry_audit *a, const char *path, const char *buf, size_t len,
                                json_t *doc, char *errbuf, size_t errlen)
{
    gcp_ctx c = {.a = a, .s = state(a), .path = path, .errbuf = errbuf, .errlen = errlen};
    (void)buf;
    (void)len;
    if (!c.s)
        return -ENOMEM;
    return each_element(&c, doc, recommendation_element, "gcloud recommender recommendations list");
}

/* ---- Cloud Asset Inventory export ------------------------------------------------------- */

static int cai_element(gcp_ctx *c, json_t *e, const char *where)
{
    const char *type = json_string_value(member2(e, "asset_type", "assetType"));
    const char *name = str_member(e, "name");
    json_t *pol = member2(e, "iam_policy", "iamPolicy");
    json_t *data = json_object_get(json_object_get(e, "resource"), "data");
    char w[96];
    int r;

    if (!type || !name) {
        audit_error_where(c->a, "%s/%s", where, type ? "name" : "asset_type");
        return fail(c, "%s: expected an asset with name and asset_type strings",
                    where[0] ? where + 1 : "asset");
    }
    if (pol && !json_is_null(pol)) {
        where_join(w, sizeof(w), where,
                   json_object_get(e, "iam_policy") ? "/iam_policy" : "/iamPolicy");
        if ((r = policy(c, pol, name, NULL, w)) < 0)
            return r;
    }
    if (!json_is_object(data))
        return 0;
    where_join(w, sizeof(w), where, "/resource/data");
    if (strcmp(type, "iam.googleapis.com/ServiceAccount") == 0) {
        char proj[80] = "", email[256];
        if (sa_resource(name, proj, sizeof(proj), email, sizeof(email)) &&
            !all_digits(proj, strlen(proj)) && valid_project(proj))
            return service_account(c, data, w, str_member(data, "projectId") ? NULL : proj);
        return service_account(c, data, w, NULL);
    }
    if (strcmp(type, "iam.googleapis.com/ServiceAccountKey") == 0)
        return sa_key(c, data, name, w);
    if (strcmp(type, "iam.googleapis.com/Role") == 0)
        return role_definition(c, data, str_member(data, "name"), w);
    if (strcmp(type, "compute.googleapis.com/Instance") == 0)
        return instance(c, data, name, w);
    return 0; /* other assets carry nothing the GCP rules read */
}

static bool detect_cai(const json_t *doc)
{
    const json_t *e = first_object(doc);
    return e && json_is_string(member2(e, "asset_type", "assetType")) &&
           json_is_string(json_object_get(e, "name"));
}

static int load_cai(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                    char *errbuf, size_t errlen)
{
    gcp_ctx c = {.a = a, .s = state(a), .path = path, .errbuf = errbuf, .errlen = errlen};
    (void)buf;
    (void)len;
    if (!c.s)
        return -ENOMEM;
    return each_element(&c, doc, cai_element, "gcloud asset export (Cloud Asset Inventory)");
}

/* ---- the end of the run ------------------------------------------------------------------ */

static int custom_role_rules(gcp_ctx *c)
{
    json_t *hits;
    int r;

    for (size_t i = 0; i < c->s->custom.n; i++) {
        const gcp_pending *p = &c->s->custom.v[i];
        hits = json_object_get(c->s->roles, p->role);
        if (!json_array_size(hits))
            continue;
        _cleanup_free_ char *uri = NULL;
        json_t *ev = pending_evidence(p);
        if (sa_uri(p->email, &uri) < 0 || !ev || json_object_set(ev, "permissions", hits) < 0) {
            json_decref(ev);
            return -ENOMEM;
        }
        c->path = p->source;
        r = emit(c, "GCP-OP-002", -1, p->account, uri, ev, p->key);
        if (r < 0)
            return r;
    }
    return 0;
}

static int foreign_rules(gcp_ctx *c)
{
    int r;

    for (size_t i = 0; i < c->s->foreign.n; i++) {
        const gcp_pending *p = &c->s->foreign.v[i];
        const char *proj = p->project;
        if (json_object_get(c->s->estate, proj) || json_object_get(c->s->trusted, proj))
            continue;
        json_t *ev = pending_evidence(p);
        if (!ev || json_object_set_new(ev, "member_project", json_string(proj)) < 0) {
            json_decref(ev);
            return -ENOMEM;
        }
        c->path = p->source;
        r = emit(c, "GCP-SH-008", -1, p->account, p->resource, ev, p->key);
        if (r < 0)
            return r;
    }
    return 0;
}

static int not_evaluated(gcp_ctx *c, const char *rule, const char *project, const char *reason)
{
    _cleanup_free_ char *res = NULL;
    if (str_printf(&res, "%sprojects/%s", crm_prefix, project) < 0)
        return -ENOMEM;
    return emit(c, rule, FERRY_AUDIT_INFO, project, res,
                json_pack("{s:b, s:s}", "evaluated", 0, "reason", reason), "not-evaluated");
}

static int identity_notes(gcp_ctx *c)
{
    int r;

    for (size_t k = 0; k < c->s->n_sas; k++) {
        const gcp_sa *rec = &c->s->sas[k];
        const char *email = rec->email, *uid = rec->uid;
        unsigned f = rec->flags, flags = 0;
        json_t *pools = json_object_get(c->s->sa_pools, email), *pool, *iss;
        const char *issuers[17];
        size_t n = 0, i, j;

        if (f & SA_KEY)
            flags |= AUDIT_ID_STATIC_CRED;
        if (f & SA_DISABLED)
            flags |= AUDIT_ID_DISABLED;
        if (f & SA_USED)
            flags |= AUDIT_ID_USED;
        else if (f & SA_UNUSED)
            flags |= AUDIT_ID_UNUSED;
        if (service_agent(email))
            flags |= AUDIT_ID_MANAGED;
        if (f & SA_FEDERATED)
            flags |= AUDIT_ID_FEDERATED;
        json_array_foreach(pools, i, pool)
        {
            flags |= AUDIT_ID_FEDERATED;
            json_array_foreach(json_object_get(c->s->pools, json_string_value(pool)), j,
                               iss) if (n < ARRAY_SIZE(issuers) - 1) issuers[n++] =
                json_string_value(iss);
        }
        issuers[n] = NULL;
        audit_identity id = {
            .cloud = CLOUD,
            .account = rec->project,
            .id = email,
            .alias = uid && uid[0] ? uid : NULL,
            .flags = flags,
            .issuers = n ? issuers : NULL,
            .source = rec->source,
        };
        if ((r = audit_identity_note(c->a, &id)) < 0)
            return r;
    }
    return 0;
}

/* The end-of-run rules over the records in memory (a scope's, or all of them when nothing was
 * put aside). */
static int decide_records(gcp_ctx *c)
{
    gcp_state *s = c->s;
    int r;

    if ((r = custom_role_rules(c)) < 0 || (r = foreign_rules(c)) < 0)
        return r;
    /* GCP-SH-006: disabled, and still bound or holding user-managed keys. */
    for (size_t k = 0; k < s->n_sas; k++) {
        const gcp_sa *rec = &s->sas[k];
        const char *email = rec->email;
        unsigned f = rec->flags;
        bool is_bound = sa_bound(s, email);
        if (!(f & SA_DISABLED) || (!is_bound && !(f & SA_KEY)))
            continue;
        _cleanup_free_ char *uri = NULL;
        if (sa_uri(email, &uri) < 0)
            return -ENOMEM;
        c->path = rec->source;
        r = emit(c, "GCP-SH-006", -1, rec->project, uri,
                 json_pack("{s:b, s:b, s:b}", "disabled", 1, "bound", is_bound, "user_managed_keys",
                           (f & SA_KEY) != 0),
                 "disabled");
        if (r < 0)
            return r;
    }
    /* GCP-SH-005: unused, unless disabled. */
    for (size_t i = 0; i < s->unused.n; i++) {
        const gcp_pending *p = &s->unused.v[i];
        const gcp_sa *sa = p->email ? sa_find(s, p->email) : NULL;
        if (sa && (sa->flags & SA_DISABLED))
            continue;
        c->path = p->source;
        r = emit(c, "GCP-SH-005", -1, p->account, p->resource, pending_evidence(p), "unused");
        if (r < 0)
            return r;
    }
    return identity_notes(c);
}

/* Decide every scope's records, one scope in memory at a time when some were put aside. */
static int finish_records(gcp_ctx *c)
{
    gcp_state *s = c->s;
    int r;

    if (!s->n_scopes)
        return decide_records(c);
    if ((r = gcp_evict(s, NULL)) < 0)
        return r;
    for (size_t i = 0; i < s->n_scopes; i++) {
        unspill_ctx u = {s, s->scopes[i]};
        r = audit_spill_take(&s->spill, s->scopes[i], gcp_unspill, &u);
        if (r == 0)
            r = decide_records(c);
        records_release(s);
        if (r < 0)
            return r;
    }
    return 0;
}

static int gcp_finish(ferry_audit *a, char *errbuf, size_t errlen)
{
    gcp_state *s = a->gcp;
    gcp_ctx c = {.a = a, .s = s, .errbuf = errbuf, .errlen = errlen};
    const char *proj;
    json_t *src;
    int r;

    if (!s)
        return 0;
    if ((r = finish_records(&c)) < 0)
        return audit_spill_error(&s->spill, r, errbuf, errlen);
    /* Usage rules without usage data: one note per project and rule. */
    json_object_foreach(s->projects, proj, src)
    {
        c.path = json_string_value(src);
        if (!s->usage_perm &&
            (r = not_evaluated(&c, "GCP-OP-007", proj,
                               "no role recommendations or policy insights input")) < 0)
            return r;
        if (!s->usage_key && (r = not_evaluated(&c, "GCP-SH-004", proj,
                                                "no key activity (query-activity) input")) < 0)
            return r;
        if (!s->usage_sa &&
            (r = not_evaluated(&c, "GCP-SH-005", proj,
                               "no service account activity or insights input")) < 0)
            return r;
    }
    return 0;
}

static const audit_loader gcp_loaders[] = {
    {"gcp-sa-list", "gcloud iam service-accounts list: email + uniqueId + oauth2ClientId",
     detect_sa_list, NULL, load_sa_list},
    {"gcp-sa-keys", "gcloud iam service-accounts keys list: keyType + validAfterTime", detect_keys,
     NULL, load_keys},
    {"gcp-iam-policy", "gcloud projects get-iam-policy: bindings + etag", detect_iam_policy, NULL,
     load_iam_policy},
    {"gcp-asset-iam", "gcloud asset search-all-iam-policies: resource + policy.bindings",
     detect_asset_iam, NULL, load_asset_iam},
    {"gcp-cai", "gcloud asset export (NDJSON): asset_type + name + resource/iam_policy", detect_cai,
     NULL, load_cai},
    {"gcp-roles", "gcloud iam roles list/describe: includedPermissions", detect_roles, NULL,
     load_roles},
    {"gcp-activity", "gcloud policy-intelligence query-activity: activityType", detect_activity,
     NULL, load_activity},
    {"gcp-insights", "gcloud recommender insights list: insightSubtype", detect_insights, NULL,
     load_insights},
    {"gcp-recommendations", "gcloud recommender recommendations list: recommenderSubtype",
     detect_recommendations, NULL, load_recommendations},
    {"gcp-instances", "gcloud compute instances list: serviceAccounts[].scopes", detect_instances,
     NULL, load_instances},
    {"gcp-wif-providers", "gcloud iam workload-identity-pools providers list: name .../providers/",
     detect_providers, NULL, load_providers},
};

const audit_cloud audit_cloud_gcp = {
    .name = CLOUD,
    .rules = gcp_rules,
    .n_rules = ARRAY_SIZE(gcp_rules),
    .loaders = gcp_loaders,
    .n_loaders = ARRAY_SIZE(gcp_loaders),
    .finish = gcp_finish,
    .release = gcp_release,
};
