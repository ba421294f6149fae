/* audit/azure.c - Azure loaders (az CLI, ARM REST and Microsoft Graph exports) and the Azure
 * rules of the catalogue. docs/internals/audit.md ("Azure") says how each rule reads the model.
 *
 * Every loader reads one list (a bare JSON array, or a Graph/ARM page {"value": [...]}, whose
 * @odata.nextLink pages are simply further inputs). Rules that need one file only run when it
 * is loaded (AZ-OP-003 custom roles, AZ-SH-003/004 credential lifetimes, AZ-SH-005 credential
 * use, AZ-TR-002 federated credentials); the rules that join files (assignments with service
 * principals, roles, owners, sign-ins) are decided in finish from small per-run indexes:
 * one record per service principal or application (names and flags), one per role
 * assignment, per privileged directory role or Graph permission, per owner list.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "audit-internal.h"
#include "basic/errbuf.h"
#include "basic/macro.h"
#include "ferry/error.h"

#define CLOUD "azure"
#define DAY 86400
/* AZ-SH-003: a credential valid for longer than this is long-lived. */
#define LONG_LIVED_DAYS 365
/* AZ-SH-004: a credential ending within this many days is expiring. */
#define EXPIRING_DAYS 30
/* Most service principals, assignments, ... one run indexes (each record is a few hundred
 * bytes): a guard against an input that would make the indexes the largest thing in memory. */
#define AZ_INDEX_MAX ((size_t)4 * 1000 * 1000)

/* Longest identifiers accepted (an input error beyond): object ids, appIds, key ids and names;
 * ARM ids and scopes; federated credentials' issuers, subjects and expressions. Resources and
 * evidence keys are built from them in fixed buffers, which must never cut one short. */
#define AZ_ID_MAX 256
#define AZ_ARM_MAX 1024
#define AZ_TEXT_MAX 1024
#define RES_BUF (AZ_ARM_MAX + AZ_ID_MAX + 64)
#define KEY_BUF (2 * AZ_TEXT_MAX + 64)

/* The tenant of Microsoft's first-party applications (appOwnerOrganizationId). */
#define MICROSOFT_TENANT "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
/* The scope prefix of a management group. */
#define MG_PREFIX "/providers/Microsoft.Management/managementGroups/"

static const audit_rule az_rules[] = {
    {"AZ-OP-001", "SP/MI with Owner / UAA / RBAC-Admin", FERRY_AUDIT_CRITICAL,
     "A service principal or managed identity holds Owner, User Access Administrator or Role "
     "Based Access Control Administrator: it can grant itself or anyone any role. Critical at "
     "management-group or subscription scope, high below.",
     "Remove the role assignment (az role assignment delete --assignee PRINCIPAL --role ROLE "
     "--scope SCOPE) and assign a role with only the actions the workload uses, at the "
     "narrowest scope (resource group or resource)."},
    {"AZ-OP-002", "SP/MI with Contributor at broad scope", FERRY_AUDIT_HIGH,
     "A service principal or managed identity holds Contributor on a whole management group or "
     "subscription: it can change every resource there.",
     "Replace the assignment with a service-specific role (e.g. Storage Blob Data Contributor) "
     "on the resource groups the workload manages."},
    {"AZ-OP-003", "Custom role with wildcard", FERRY_AUDIT_HIGH,
     "A custom role's actions include \"*\", \"*/write\", Microsoft.Authorization/*/write or "
     "Microsoft.Authorization/roleAssignments/write: whoever holds it can change everything or "
     "grant access. Critical for \"*\" assignable at subscription scope or above.",
     "List the exact actions in the custom role (az role definition update) and drop the "
     "wildcards and Microsoft.Authorization writes; use built-in roles where they fit."},
    {"AZ-OP-004", "Privileged Entra directory role on SP", FERRY_AUDIT_CRITICAL,
     "A service principal holds a Tier-0 Entra directory role (Global Administrator, Privileged "
     "Role Administrator, Application Administrator, Cloud Application Administrator): anyone "
     "with its credentials controls the tenant.",
     "Remove the directory role assignment (Entra admin center > Roles and administrators) and "
     "grant the narrow Graph application permission the workload needs instead."},
    {"AZ-OP-005", "Privileged Graph app permissions", FERRY_AUDIT_CRITICAL,
     "A service principal was granted a Microsoft Graph application permission that allows "
     "taking over the tenant (RoleManagement.ReadWrite.Directory, "
     "AppRoleAssignment.ReadWrite.All, Application.ReadWrite.All, Directory.ReadWrite.All).",
     "Revoke the app role assignment (az rest --method DELETE on "
     "/servicePrincipals/ID/appRoleAssignments/ASSIGNMENT) and consent to a least-privileged "
     "permission (e.g. Application.ReadWrite.OwnedBy)."},
    {"AZ-OP-006", "Excess permissions (CIEM)", FERRY_AUDIT_MEDIUM,
     "A service principal holds Azure role assignments but has not authenticated as itself "
     "(app-only client sign-in) for --unused-days while it is otherwise active: the roles it "
     "holds are unused. Needs sign-in data: without it one info note per tenant says the rule "
     "was not evaluated.",
     "Remove the role assignments the principal does not use; supply "
     "servicePrincipalSignInActivities to evaluate."},
    {"AZ-SH-001", "Inactive service principal", FERRY_AUDIT_MEDIUM,
     "The service principal has not signed in for --unused-days (Graph beta "
     "servicePrincipalSignInActivities). Needs sign-in data: without it one info note per "
     "tenant says the rule was not evaluated.",
     "Disable the service principal (az ad sp update --id ID --set accountEnabled=false), "
     "then delete it and its application if nobody claims it."},
    {"AZ-SH-002", "Client secret on SP/app", FERRY_AUDIT_MEDIUM,
     "The application or service principal holds client secrets (passwordCredentials): a "
     "static secret that can leak. Critical when the principal is Tier-0 (privileged directory "
     "role, privileged Graph permission, Owner/UAA at subscription scope or above).",
     "Replace the secret with a federated credential (workload identity federation) or a "
     "certificate, then remove it (az ad app credential delete --id APP --key-id KEY)."},
    {"AZ-SH-003", "Long-lived credential", FERRY_AUDIT_MEDIUM,
     "A secret or certificate is valid for more than 365 days (e.g. the year-2299 expiry of "
     "old az ad sp create-for-rbac).",
     "Rotate to a credential of at most a year (az ad app credential reset --years 1), or "
     "better to a federated credential."},
    {"AZ-SH-004", "Expired / expiring credential", FERRY_AUDIT_LOW,
     "A secret or certificate has expired (cleanup) or expires within 30 days.",
     "Delete the expired credential (az ad app credential delete --id APP --key-id KEY); "
     "rotate the expiring one before it ends."},
    {"AZ-SH-005", "Unused credential", FERRY_AUDIT_MEDIUM,
     "A secret or certificate has not been used to sign in for --key-unused-days "
     "(appCredentialSignInActivities). Needs usage data: without it one info note per tenant "
     "says the rule was not evaluated.",
     "Delete the unused credential (az ad app credential delete --id APP --key-id KEY)."},
    {"AZ-SH-006", "Role assignment to deleted principal", FERRY_AUDIT_MEDIUM,
     "A role assignment names a principal of type Unknown, or a service principal that is not "
     "in the directory export: it was deleted, and the assignment lingers.",
     "Delete the role assignment (az role assignment delete --ids ASSIGNMENT_ID)."},
    {"AZ-SH-007", "Orphaned user-assigned MI", FERRY_AUDIT_LOW,
     "A user-assigned managed identity is attached to no resource in the resource export.",
     "Delete the identity (az identity delete --ids ID) and its role assignments, or attach it "
     "where it is meant to be used."},
    {"AZ-SH-008", "Ownership anomalies", FERRY_AUDIT_LOW,
     "An application's service principal has no owners (nobody answers for it: low), or a "
     "privileged service principal has owners, who can add credentials to it and act with its "
     "privileges (high).",
     "Unowned: assign an accountable owner (az ad app owner add). Privileged: remove the "
     "owners (az ad sp owner remove) and manage the principal from a privileged admin role."},
    {"AZ-TR-001", "Third-party multi-tenant SP with privileges", FERRY_AUDIT_HIGH,
     "A service principal of an application owned by another tenant (appOwnerOrganizationId "
     "not this tenant, Microsoft, or --trusted-tenants) holds Azure role assignments or "
     "privileged Entra roles or Graph permissions.",
     "Review the vendor's access: remove the role assignments it does not need, or add its "
     "tenant to --trusted-tenants after review."},
    {"AZ-TR-002", "Federated credential too broad", FERRY_AUDIT_HIGH,
     "A federated identity credential of an application or user-assigned managed identity "
     "matches a wildcard-like subject (a pattern, any pull request) or trusts an unknown "
     "issuer: tokens of workloads you do not control can be exchanged for its access.",
     "Pin the subject to one repository and environment or branch (repo:ORG/REPO:environment:"
     "NAME) and use a known issuer; delete credentials for issuers you do not run."},
};

/* Built-in Azure roles by definition GUID (the same in every tenant), with the names the CLI
 * prints (roleDefinitionName), which the AZ-OP rules accept as well. */
enum { ROLE_OTHER = 0, ROLE_OWNER, ROLE_UAA, ROLE_RBAC_ADMIN, ROLE_CONTRIBUTOR };
static const struct {
    const char *guid, *name;
    int kind;
} builtin_roles[] = {
    {"8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner", ROLE_OWNER},
    {"18d7d88d-d35e-4fb5-a5c3-7773c20a72d9", "User Access Administrator", ROLE_UAA},
    {"f58310d9-a9f6-439a-9e8d-f62e7b41a168", "Role Based Access Control Administrator",
     ROLE_RBAC_ADMIN},
    {"b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor", ROLE_CONTRIBUTOR},
};

/* Tier-0 Entra directory roles (role template ids). */
static const struct {
    const char *guid, *name;
} tier0_directory_roles[] = {
    {"62e90394-69f5-4237-9190-012177145e10", "Global Administrator"},
    {"e8611ab8-c189-46e8-94e1-60213ab1f814", "Privileged Role Administrator"},
    {"9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3", "Application Administrator"},
    {"158c047a-c907-4556-b7ef-446551a6b5f7", "Cloud Application Administrator"},
};

/* Microsoft Graph application permissions (app role ids) that let an app take over the tenant. */
static const struct {
    const char *guid, *name;
} privileged_graph_roles[] = {
    {"9e3f62cf-ca93-4989-b6ce-bf83c28f9fe8", "RoleManagement.ReadWrite.Directory"},
    {"06b708a9-e830-4db3-a914-8e69da51d44f", "AppRoleAssignment.ReadWrite.All"},
    {"1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9", "Application.ReadWrite.All"},
    {"19dbc75e-c2e2-444c-a770-ec69d8559fc7", "Directory.ReadWrite.All"},
};

/* OIDC issuers of federated credentials that AZ-TR-002 knows (prefixes, lower case). */
static const char *const known_issuers[] = {
    "https://token.actions.githubusercontent.com",
    "https://gitlab.com",
    "https://app.terraform.io",
    "https://vstoken.dev.azure.com/",
    "https://login.microsoftonline.com/",
    "https://sts.windows.net/",
    "https://accounts.google.com",
    "https://oidc.prod-aks.azure.com/",
    "https://api.bitbucket.org/2.0/workspaces/",
    "https://oidc.circleci.com/org/",
    NULL,
};

typedef struct az_state {
    json_t *ids;         /* appId -> identity record (see ident()) */
    json_t *oids;        /* service principal objectId -> appId */
    json_t *homes;       /* home tenants seen (a set) */
    json_t *trusted;     /* --trusted-tenants (a set, lower case) */
    json_t *assigns;     /* [{id, principal, ptype, role, role_name, scope, source}] */
    json_t *roles;       /* role definition GUID -> name (custom roles seen) */
    json_t *dirroles;    /* privileged directory role assignments [{principal, role, name, ...}] */
    json_t *graph;       /* privileged Graph app role assignments [{principal, role, name, ...}] */
    json_t *owners;      /* owner lists: [{target, count, source}] */
    json_t *secrets;     /* objects holding client secrets [{resource, app, keys, account, ...}] */
    json_t *uamis;       /* user-assigned identity id (lower case) -> {id, name, account, source} */
    json_t *attached;    /* user-assigned identity ids some resource uses (a set, lower case) */
    json_t *tenants;     /* tenants of the run, for the "not evaluated" notes (a set) */
    json_t *fic_parents; /* application object id or identity id (lower case) -> [issuers] */
    size_t records;      /* records in the indexes, against AZ_INDEX_MAX */
    bool have_signins, have_cred_signins, have_resources, any;
    char *first_source;
} az_state;

typedef struct az_ctx {
    ferry_audit *a;
    az_state *s;
    const char *path;
    char *errbuf;
    size_t errlen;
    bool wrapped; /* the list is doc.value (a Graph / ARM page), not the document */
    json_t *list;
} az_ctx;

static az_state *state(ferry_audit *a)
{
    az_state *s = a->azure;
    if (s)
        return s;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->ids = json_object();
    s->oids = json_object();
    s->homes = json_object();
    s->trusted = json_object();
    s->assigns = json_array();
    s->roles = json_object();
    s->dirroles = json_array();
    s->graph = json_array();
    s->owners = json_array();
    s->secrets = json_array();
    s->uamis = json_object();
    s->attached = json_object();
    s->tenants = json_object();
    s->fic_parents = json_object();
    a->azure = s;
    if (!s->ids || !s->oids || !s->homes || !s->trusted || !s->assigns || !s->roles ||
        !s->dirroles || !s->graph || !s->owners || !s->secrets || !s->uamis || !s->attached ||
        !s->tenants || !s->fic_parents)
        return NULL; /* released with the run */
    return s;
}

static void az_release(ferry_audit *a)
{
    az_state *s = a->azure;
    if (!s)
        return;
    json_decref(s->ids);
    json_decref(s->oids);
    json_decref(s->homes);
    json_decref(s->trusted);
    json_decref(s->assigns);
    json_decref(s->roles);
    json_decref(s->dirroles);
    json_decref(s->graph);
    json_decref(s->owners);
    json_decref(s->secrets);
    json_decref(s->uamis);
    json_decref(s->attached);
    json_decref(s->tenants);
    json_decref(s->fic_parents);
    free(s->first_source);
    free(s);
    a->azure = NULL;
}

/* ---- small helpers --------------------------------------------------------------------- */

static const char *str_member(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* A member of an ARM resource, flat (az CLI) or under "properties" (REST). */
static json_t *arm_member(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (v && !json_is_null(v))
        return v;
    return json_object_get(json_object_get(o, "properties"), key);
}

static const char *arm_str(const json_t *o, const char *key)
{
    return json_string_value(arm_member(o, key));
}

static bool is_guid(const char *s)
{
    if (!s || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

static void lower_copy(const char *s, char *out, size_t outlen)
{
    size_t i;
    for (i = 0; s[i] && i + 1 < outlen; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[i] = '\0';
}

/* The last '/'-separated component of a role definition id, lower case. */
static void last_component(const char *id, char *out, size_t outlen)
{
    const char *p = strrchr(id, '/');
    lower_copy(p ? p + 1 : id, out, outlen);
}

static int set_add(json_t *set, const char *key)
{
    if (!key || !*key || json_object_get(set, key))
        return 0;
    return json_object_set_new(set, key, json_true()) < 0 ? -ENOMEM : 0;
}

static int counted(az_state *s)
{
    if (++s->records > AZ_INDEX_MAX)
        return -FERRY_ETOOBIG;
    return 0;
}

static int array_push(az_state *s, json_t *arr, json_t *rec)
{
    int r = counted(s);
    if (!rec)
        return -ENOMEM;
    if (r < 0) {
        json_decref(rec);
        return r;
    }
    return json_array_append_new(arr, rec) < 0 ? -ENOMEM : 0;
}

/* The list of a document: a bare array or the "value" array of a Graph / ARM page. */
static json_t *doc_list(const json_t *doc, bool *ret_wrapped)
{
    json_t *v;
    if (json_is_array(doc)) {
        if (ret_wrapped)
            *ret_wrapped = false;
        return (json_t *)doc;
    }
    v = json_object_get(doc, "value");
    if (json_is_object(doc) && json_is_array(v)) {
        if (ret_wrapped)
            *ret_wrapped = true;
        return v;
    }
    return NULL;
}

/* The first element of a document's list, for detection. */
static const json_t *first_element(const json_t *doc)
{
    json_t *l = doc_list(doc, NULL);
    json_t *e = json_array_get(l, 0);
    return json_is_object(e) ? e : NULL;
}

/* An error about element i (member: NULL or "a/b"), with its place in the file. */
static int elem_error(az_ctx *c, size_t i, const char *member, const char *what)
{
    char m[96] = "";
    if (member) {
        size_t k;
        for (k = 0; member[k] && k + 2 < sizeof(m); k++)
            m[k + 1] = member[k] == '/' ? '.' : member[k];
        m[0] = '.';
        m[k + 1] = '\0';
    }
    /* The line is that of the deepest part of the member that exists (a missing member is
     * reported at its element). */
    char where[96] = "";
    const json_t *cur = json_array_get(c->list, i);
    for (const char *p = member; p && *p && cur;) {
        size_t n = strcspn(p, "/");
        char comp[64];
        if (n >= sizeof(comp))
            break;
        memcpy(comp, p, n);
        comp[n] = '\0';
        cur = json_is_array(cur) ? json_array_get(cur, strtoul(comp, NULL, 10))
                                 : json_object_get(cur, comp);
        if (!cur)
            break;
        (void)snprintf(where + strlen(where), sizeof(where) - strlen(where), "/%s", comp);
        p += n + (p[n] == '/');
    }
    audit_error_where(c->a, "%s/%zu%s", c->wrapped ? "/value" : "", i, where);
    return ferry_errbuf_set(c->errbuf, c->errlen, -FERRY_EMALFORMED, "%s[%zu]%s: expected %s",
                            c->wrapped ? "value" : "element", i, m, what);
}

static int begin(ferry_audit *a, az_ctx *c, const char *path, json_t *doc, const char *what,
                 char *errbuf, size_t errlen)
{
    *c = (az_ctx){.a = a, .path = path, .errbuf = errbuf, .errlen = errlen};
    c->s = state(a);
    if (!c->s)
        return -ENOMEM;
    c->list = doc_list(doc, &c->wrapped);
    if (!c->list)
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "expected %s: a JSON array or a {\"value\": [...]} page", what);
    c->s->any = true;
    if (!c->s->first_source && !(c->s->first_source = strdup(path)))
        return -ENOMEM;
    return 0;
}

/* Element i of the list, which must be an object. */
static int element(az_ctx *c, size_t i, json_t **ret)
{
    json_t *e = json_array_get(c->list, i);
    if (!json_is_object(e))
        return elem_error(c, i, NULL, "an object");
    *ret = e;
    return 0;
}

/* A string member's length against its maximum (s may be NULL: nothing to check). */
static int bounded(az_ctx *c, size_t i, const char *member, const char *s, size_t max)
{
    char what[64];
    if (!s || strlen(s) <= max)
        return 0;
    (void)snprintf(what, sizeof(what), "a string of at most %zu bytes", max);
    return elem_error(c, i, member, what);
}

/* An optional string member: absent or null is NULL; another type is an error. */
static int opt_str(az_ctx *c, size_t i, const json_t *o, const char *key, const char **ret)
{
    json_t *v = json_object_get(o, key);
    *ret = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return elem_error(c, i, key, "a string or null");
    *ret = json_string_value(v);
    return 0;
}

/* A date member: NULL/absent gives have=false; a string that is not a date is an error. */
static int opt_date(az_ctx *c, size_t i, const char *member, json_t *v, int64_t *ret, bool *have)
{
    *have = false;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || audit_parse_time(json_string_value(v), ret) < 0)
        return elem_error(c, i, member, "a date (YYYY-MM-DDTHH:MM:SS[.fff]Z)");
    *have = true;
    return 0;
}

static int emit(az_ctx *c, const char *rule, int sev, const char *account, const char *resource,
                json_t *ev, const char *key, const char *source)
{
    int r;
    if (!ev)
        return -ENOMEM;
    r = audit_emit(c->a, rule, sev, CLOUD, account, resource, ev, key, source ? source : c->path);
    json_decref(ev);
    return r;
}

/* The identity record of appId, created empty when new. Borrowed from s->ids. */
static json_t *ident(az_state *s, const char *app_id, int *ret_r)
{
    json_t *rec = json_object_get(s->ids, app_id);
    *ret_r = 0;
    if (rec)
        return rec;
    if ((*ret_r = counted(s)) < 0)
        return NULL;
    rec = json_pack("{s:s, s:b, s:b, s:b, s:i, s:[]}", "app", app_id, "static", 0, "sp", 0,
                    "registered", 0, "owners", -1, "issuers");
    if (!rec || json_object_set_new(s->ids, app_id, rec) < 0) {
        *ret_r = -ENOMEM;
        return NULL;
    }
    return rec;
}

static int rec_set_str(json_t *rec, const char *key, const char *v)
{
    if (!v)
        return 0;
    return json_object_set_new(rec, key, json_string(v)) < 0 ? -ENOMEM : 0;
}

static int rec_set_bool(json_t *rec, const char *key, bool v)
{
    return json_object_set_new(rec, key, json_boolean(v)) < 0 ? -ENOMEM : 0;
}

static bool rec_bool(const json_t *rec, const char *key)
{
    return json_is_true(json_object_get(rec, key));
}

static const char *sp_resource(const char *oid, const char *app, char *out, size_t outlen)
{
    if (oid)
        (void)snprintf(out, outlen, "servicePrincipals/%s", oid);
    else
        (void)snprintf(out, outlen, "servicePrincipals(appId='%s')", app ? app : "");
    return out;
}

/* ---- service principals and applications --------------------------------------------------- */

static bool detect_sp(const json_t *doc)
{
    const json_t *e = first_element(doc);
    return e && json_object_get(e, "servicePrincipalType") && json_object_get(e, "appId");
}

static bool detect_app(const json_t *doc)
{
    const json_t *e = first_element(doc);
    return e && !json_object_get(e, "servicePrincipalType") && json_object_get(e, "appId") &&
           (json_object_get(e, "signInAudience") || json_object_get(e, "requiredResourceAccess"));
}

/* AZ-SH-003 and AZ-SH-004 for each credential of one object; notes unexpired secrets. */
static int credentials(az_ctx *c, size_t i, json_t *o, const char *kind, const char *account,
                       const char *resource, bool *ret_static, json_t *secret_keys)
{
    json_t *creds = json_object_get(o, kind), *cr;
    int64_t now = audit_now(c->a);
    size_t k;
    int r = 0;

    if (creds && !json_is_null(creds) && !json_is_array(creds))
        return elem_error(c, i, kind, "an array of credentials");
    json_array_foreach(creds, k, cr)
    {
        char member[96], key[KEY_BUF];
        int64_t start = 0, end = 0;
        bool has_start, has_end;
        const char *key_id;
        bool secret = strcmp(kind, "passwordCredentials") == 0;

        (void)snprintf(member, sizeof(member), "%s/%zu", kind, k);
        if (!json_is_object(cr))
            return elem_error(c, i, member, "a credential object");
        key_id = str_member(cr, "keyId");
        (void)snprintf(member, sizeof(member), "%s/%zu/keyId", kind, k);
        if ((r = bounded(c, i, member, key_id, AZ_ID_MAX)) < 0)
            return r;
        (void)snprintf(member, sizeof(member), "%s/%zu/startDateTime", kind, k);
        r = opt_date(c, i, member, json_object_get(cr, "startDateTime"), &start, &has_start);
        (void)snprintf(member, sizeof(member), "%s/%zu/endDateTime", kind, k);
        if (r == 0)
            r = opt_date(c, i, member, json_object_get(cr, "endDateTime"), &end, &has_end);
        if (r < 0)
            return r;
        (void)snprintf(key, sizeof(key), "%s=%s", secret ? "secret" : "certificate",
                       key_id ? key_id : "");
        if (secret) {
            if (!has_end || end > now)
                *ret_static = true;
            r = json_array_append_new(secret_keys, json_string(key_id ? key_id : "")) < 0 ? -ENOMEM
                                                                                          : 0;
        }
        /* An expired credential is AZ-SH-004's (cleanup), however long it was valid. */
        if (r == 0 && has_start && has_end && end > now &&
            end - start > (int64_t)LONG_LIVED_DAYS * DAY)
            r = emit(c, "AZ-SH-003", -1, account, resource,
                     json_pack("{s:s, s:s?, s:O, s:O, s:I}", "credential", kind, "key_id", key_id,
                               "start", json_object_get(cr, "startDateTime"), "end",
                               json_object_get(cr, "endDateTime"), "valid_days",
                               (json_int_t)((end - start) / DAY)),
                     key, NULL);
        if (r == 0 && has_end && end <= now + (int64_t)EXPIRING_DAYS * DAY)
            r = emit(c, "AZ-SH-004", -1, account, resource,
                     json_pack("{s:s, s:s?, s:O, s:s}", "credential", kind, "key_id", key_id, "end",
                               json_object_get(cr, "endDateTime"), "state",
                               end <= now ? "expired" : "expiring"),
                     key, NULL);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The home tenant of an SP list: the owner organisation of its single-tenant applications,
 * which are registered in the tenant itself. NULL when the list has none. */
static const char *home_tenant(const json_t *list)
{
    size_t i;
    json_t *e = NULL;
    json_array_foreach(list, i, e)
    {
        const char *aud = str_member(e, "signInAudience");
        const char *org = str_member(e, "appOwnerOrganizationId");
        if (aud && org && strcmp(aud, "AzureADMyOrg") == 0 && is_guid(org))
            return org;
    }
    return NULL;
}

static int owners_member(az_ctx *c, size_t i, json_t *o, const char *target)
{
    json_t *own = json_object_get(o, "owners");
    if (!own || json_is_null(own))
        return 0;
    if (!json_is_array(own))
        return elem_error(c, i, "owners", "an array of directory objects");
    return array_push(c->s, c->s->owners,
                      json_pack("{s:s, s:I, s:s}", "target", target, "count",
                                (json_int_t)json_array_size(own), "source", c->path));
}

/* Federated credentials expanded into an application ($expand=federatedIdentityCredentials). */
static int fic_list(az_ctx *c, size_t i, json_t *o, const char *parent, const char *account,
                    json_t *rec);

static int load_principals(ferry_audit *a, const char *path, const char *buf, size_t len,
                           json_t *doc, char *errbuf, size_t errlen, bool sps)
{
    az_ctx c;
    json_t *e = NULL;
    const char *home;
    int r;

    (void)buf;
    (void)len;
    r = begin(a, &c, path, doc, sps ? "az ad sp list output" : "az ad app list output", errbuf,
              errlen);
    if (r < 0)
        return r;
    home = sps ? home_tenant(c.list) : NULL;
    if (home) {
        r = set_add(c.s->homes, home);
        if (r == 0)
            r = set_add(c.s->tenants, home);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < json_array_size(c.list); i++) {
        const char *app_id, *oid, *name, *type = NULL, *org = NULL;
        char resource[RES_BUF];
        bool stat = false, managed, first_party, has_created;
        json_t *rec, *keys, *en;
        int64_t created = 0;

        r = element(&c, i, &e);
        if (r < 0)
            return r;
        app_id = str_member(e, "appId");
        oid = str_member(e, "id");
        if (!app_id)
            return elem_error(&c, i, "appId", "an appId string");
        if (!oid)
            return elem_error(&c, i, "id", "an id (object id) string");
        if ((r = bounded(&c, i, "appId", app_id, AZ_ID_MAX)) < 0 ||
            (r = bounded(&c, i, "id", oid, AZ_ID_MAX)) < 0)
            return r;
        if ((r = opt_str(&c, i, e, "displayName", &name)) < 0 ||
            (sps && (r = opt_str(&c, i, e, "servicePrincipalType", &type)) < 0) ||
            (sps && (r = opt_str(&c, i, e, "appOwnerOrganizationId", &org)) < 0))
            return r;
        en = json_object_get(e, "accountEnabled");
        if (en && !json_is_null(en) && !json_is_boolean(en))
            return elem_error(&c, i, "accountEnabled", "true or false");
        r = opt_date(&c, i, "createdDateTime", json_object_get(e, "createdDateTime"), &created,
                     &has_created);
        if (r < 0)
            return r;
        managed = type && strcmp(type, "ManagedIdentity") == 0;
        first_party = org && strcasecmp(org, MICROSOFT_TENANT) == 0;
        rec = ident(c.s, app_id, &r);
        if (!rec)
            return r;
        /* The SP's or its application's creation, whichever is known (for the grace period). */
        if (has_created && !json_object_get(rec, "created") &&
            json_object_set_new(rec, "created", json_integer(created)) < 0)
            return -ENOMEM;
        if (sps) {
            if (json_object_set_new(c.s->oids, oid, json_string(app_id)) < 0)
                return -ENOMEM;
            if ((r = rec_set_str(rec, "oid", oid)) < 0 ||
                (r = rec_set_str(rec, "name", name)) < 0 ||
                (r = rec_set_str(rec, "type", type)) < 0 ||
                (r = rec_set_str(rec, "owner_org", org)) < 0 ||
                (r = rec_set_str(rec, "tenant", home)) < 0 ||
                (r = rec_set_str(rec, "source", path)) < 0 ||
                (r = rec_set_bool(rec, "sp", true)) < 0 ||
                (r = rec_set_bool(rec, "first_party", first_party)) < 0 ||
                (r = rec_set_bool(rec, "disabled", json_is_false(en))) < 0)
                return r;
            sp_resource(oid, app_id, resource, sizeof(resource));
        } else {
            if ((r = rec_set_str(rec, "app_oid", oid)) < 0 ||
                (r = rec_set_bool(rec, "registered", true)) < 0 ||
                (!json_object_get(rec, "name") && (r = rec_set_str(rec, "name", name)) < 0) ||
                (!json_object_get(rec, "source") && (r = rec_set_str(rec, "source", path)) < 0))
                return r;
            (void)snprintf(resource, sizeof(resource), "applications/%s", oid);
        }
        /* Managed identities' certificates are Azure's, and first-party apps' credentials
         * Microsoft's: nothing for the tenant to clean up. */
        if (managed || first_party)
            continue;
        keys = json_array();
        if (!keys)
            return -ENOMEM;
        r = credentials(&c, i, e, "passwordCredentials", home ? home : "", resource, &stat, keys);
        if (r == 0)
            r = credentials(&c, i, e, "keyCredentials", home ? home : "", resource, &stat, keys);
        if (r == 0 && json_array_size(keys) > 0)
            r = array_push(c.s, c.s->secrets,
                           json_pack("{s:s, s:s, s:O, s:s, s:s}", "resource", resource, "app",
                                     app_id, "keys", keys, "account", home ? home : "", "source",
                                     path));
        json_decref(keys);
        if (r == 0 && stat)
            r = rec_set_bool(rec, "static", true);
        if (r == 0)
            r = owners_member(&c, i, e, sps ? oid : app_id);
        if (r == 0 && !sps)
            r = fic_list(&c, i, e, resource, "", rec);
        if (r < 0)
            return r;
    }
    return 0;
}

static int load_sp(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                   char *errbuf, size_t errlen)
{
    return load_principals(a, path, buf, len, doc, errbuf, errlen, true);
}

static int load_app(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                    char *errbuf, size_t errlen)
{
    return load_principals(a, path, buf, len, doc, errbuf, errlen, false);
}

/* ---- role definitions (AZ-OP-003) ------------------------------------------------------------ */

static bool detect_role_definitions(const json_t *doc)
{
    const json_t *e = first_element(doc);
    return e && arm_member(e, "permissions") &&
           (arm_member(e, "roleName") || arm_member(e, "roleType"));
}

/* How bad an action of a custom role is: 2 "*", 1 another wildcard write or an authorization
 * write, 0 none. */
static int action_level(const char *act)
{
    if (strcmp(act, "*") == 0)
        return 2;
    if (strcasecmp(act, "*/write") == 0 || strcasecmp(act, "Microsoft.Authorization/*") == 0 ||
        strcasecmp(act, "Microsoft.Authorization/*/write") == 0 ||
        strcasecmp(act, "Microsoft.Authorization/roleAssignments/write") == 0 ||
        strcasecmp(act, "Microsoft.Authorization/roleAssignments/*") == 0 ||
        strcasecmp(act, "Microsoft.Authorization/roleDefinitions/write") == 0)
        return 1;
    return 0;
}

/* The scope level: 2 management group or tenant root, 1 subscription, 0 below. */
static int scope_level(const char *scope)
{
    const char *p;
    if (strcmp(scope, "/") == 0 || strncasecmp(scope, MG_PREFIX, strlen(MG_PREFIX)) == 0)
        return 2;
    if (strncasecmp(scope, "/subscriptions/", 15) == 0) {
        p = strchr(scope + 15, '/');
        return !p || p[1] == '\0' ? 1 : 0;
    }
    return 0;
}

static const char *const scope_names[] = {"below-subscription", "subscription", "management-group"};

/* The account of a scope: its subscription id, the management group's name, or "". */
static void scope_account(const char *scope, char *out, size_t outlen)
{
    const char *p;
    size_t n;
    out[0] = '\0';
    if (strncasecmp(scope, "/subscriptions/", 15) == 0)
        p = scope + 15;
    else if (strncasecmp(scope, MG_PREFIX, strlen(MG_PREFIX)) == 0)
        p = scope + strlen(MG_PREFIX);
    else
        return;
    n = strcspn(p, "/");
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

static int load_role_definitions(ferry_audit *a, const char *path, const char *buf, size_t len,
                                 json_t *doc, char *errbuf, size_t errlen)
{
    az_ctx c;
    json_t *e = NULL;
    int r;

    (void)buf;
    (void)len;
    r = begin(a, &c, path, doc, "az role definition list output", errbuf, errlen);
    if (r < 0)
        return r;
    for (size_t i = 0; i < json_array_size(c.list); i++) {
        const char *id, *name, *type;
        json_t *perms, *p, *scopes, *hits;
        char guid[64], account[RES_BUF] = "";
        int worst = 0, widest = 0;
        size_t k, m;

        r = element(&c, i, &e);
        if (r < 0)
            return r;
        id = str_member(e, "id");
        name = arm_str(e, "roleName");
        type = arm_str(e, "roleType");
        if (!type) /* ARM: properties.type ("type" outside is the resource type) */
            type = str_member(json_object_get(e, "properties"), "type");
        if (!id)
            return elem_error(&c, i, "id", "a role definition id string");
        if ((r = bounded(&c, i, "id", id, AZ_ARM_MAX)) < 0)
            return r;
        if (!name)
            return elem_error(&c, i,
                              json_object_get(e, "properties") ? "properties/roleName" : "roleName",
                              "a roleName string");
        last_component(id, guid, sizeof(guid));
        if ((r = counted(c.s)) < 0)
            return r;
        if (json_object_set_new(c.s->roles, guid, json_string(name)) < 0)
            return -ENOMEM;
        if (!type || strcasecmp(type, "CustomRole") != 0)
            continue;
        perms = arm_member(e, "permissions");
        scopes = arm_member(e, "assignableScopes");
        if (perms && !json_is_array(perms))
            return elem_error(
                &c, i, json_object_get(e, "permissions") ? "permissions" : "properties/permissions",
                "an array of {actions: [...]} objects");
        hits = json_array();
        if (!hits)
            return -ENOMEM;
        json_array_foreach(perms, k, p)
        {
            json_t *acts = json_object_get(p, "actions"), *act;
            if (!json_is_object(p) || (acts && !json_is_null(acts) && !json_is_array(acts))) {
                json_decref(hits);
                return elem_error(&c, i, "permissions", "an array of {actions: [...]} objects");
            }
            json_array_foreach(acts, m, act)
            {
                int lvl = json_is_string(act) ? action_level(json_string_value(act)) : 0;
                if (lvl == 0)
                    continue;
                worst = lvl > worst ? lvl : worst;
                if (json_array_append(hits, act) < 0) {
                    json_decref(hits);
                    return -ENOMEM;
                }
            }
        }
        json_array_foreach(scopes, k, p)
        {
            const char *sc = json_string_value(p);
            int lvl = sc ? scope_level(sc) + 1 : 0;
            if (lvl > widest) {
                widest = lvl;
                scope_account(sc, account, sizeof(account));
            }
        }
        if (!account[0])
            scope_account(id, account, sizeof(account));
        if (worst > 0) {
            int sev = worst == 2 && widest >= 2 ? FERRY_AUDIT_CRITICAL : FERRY_AUDIT_HIGH;
            r = emit(&c, "AZ-OP-003", sev, account, id,
                     json_pack("{s:s, s:O, s:O*}", "role_name", name, "actions", hits,
                               "assignable_scopes", scopes),
                     "wildcard", NULL);
        }
        json_decref(hits);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- role assignments ----------------------------------------------------------------------- */

static bool detect_role_assignments(const json_t *doc)
{
    const json_t *e = first_element(doc);
    return e && arm_member(e, "roleDefinitionId") && arm_member(e, "principalId") &&
           !json_object_get(e, "directoryScopeId");
}

static int load_role_assignments(ferry_audit *a, const char *path, const char *buf, size_t len,
                                 json_t *doc, char *errbuf, size_t errlen)
{
    az_ctx c;
    json_t *e = NULL;
    int r;

    (void)buf;
    (void)len;
    r = begin(a, &c, path, doc, "az role assignment list output", errbuf, errlen);
    if (r < 0)
        return r;
    for (size_t i = 0; i < json_array_size(c.list); i++) {
        const char *id, *role, *principal, *ptype, *scope, *rname;
        bool arm;

        r = element(&c, i, &e);
        if (r < 0)
            return r;
        arm = !json_object_get(e, "roleDefinitionId") && json_object_get(e, "properties");
        id = str_member(e, "id");
        role = arm_str(e, "roleDefinitionId");
        principal = arm_str(e, "principalId");
        ptype = arm_str(e, "principalType");
        scope = arm_str(e, "scope");
        rname = str_member(e, "roleDefinitionName");
        if (!id)
            return elem_error(&c, i, "id", "a role assignment id string");
        if (!role)
            return elem_error(&c, i, arm ? "properties/roleDefinitionId" : "roleDefinitionId",
                              "a roleDefinitionId string");
        if (!principal)
            return elem_error(&c, i, arm ? "properties/principalId" : "principalId",
                              "a principalId string");
        if (!scope)
            return elem_error(&c, i, arm ? "properties/scope" : "scope", "a scope string");
        if ((r = bounded(&c, i, "id", id, AZ_ARM_MAX)) < 0 ||
            (r = bounded(&c, i, arm ? "properties/scope" : "scope", scope, AZ_ARM_MAX)) < 0 ||
            (r = bounded(&c, i, arm ? "properties/roleDefinitionId" : "roleDefinitionId", role,
                         AZ_ARM_MAX)) < 0 ||
            (r = bounded(&c, i, arm ? "properties/principalId" : "principalId", principal,
                         AZ_ID_MAX)) < 0)
            return r;
        r = array_push(c.s, c.s->assigns,
                       json_pack("{s:s, s:s, s:s?, s:s, s:s?, s:s, s:s}", "id", id, "principal",
                                 principal, "ptype", ptype, "role", role, "role_name", rname,
                                 "scope", scope, "source", path));
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- Graph: directory roles and app role assignments -------------------------------------- */

static bool detect_directory_roles(const json_t *doc)
{
    const json_t *e = first_element(doc);
    return e && json_object_get(e, "principalId") && json_object_get(e, "roleDefinitionId") &&
           json_object_get(e, "directoryScopeId");
}

static int load_directory_roles(ferry_audit *a, const char *path, const char *buf, size_t len,
                                json_t *doc, char *errbuf, size_t errlen)
{
    az_ctx c;
    json_t *e = NULL;
    int r;

    (void)buf;
    (void)len;
    r = begin(a, &c, path, doc, "Graph /roleManagement/directory/roleAssignments", errbuf, errlen);
    if (r < 0)
        return r;
    for (size_t i = 0; i < json_array_size(c.list); i++) {
        const char *id, *principal, *role, *ptype;
        char guid[64];

        r = element(&c, i, &e);
        if (r < 0)
            return r;
        if ((r = opt_str(&c, i, e, "id", &id)) < 0)
            return r;
        principal = str_member(e, "principalId");
        role = str_member(e, "roleDefinitionId");
        if (!principal)
            return elem_error(&c, i, "principalId", "a principalId string");
        if (!role)
            return elem_error(&c, i, "roleDefinitionId", "a roleDefinitionId string");
        if ((r = bounded(&c, i, "principalId", principal, AZ_ID_MAX)) < 0)
            return r;
        /* With $expand=principal the principal's type is known without the SP list. */
        ptype = str_member(json_object_get(e, "principal"), "@odata.type");
        lower_copy(role, guid, sizeof(guid));
        for (size_t k = 0; k < ARRAY_SIZE(tier0_directory_roles); k++) {
            if (strcmp(guid, tier0_directory_roles[k].guid) != 0)
                continue;
            r = array_push(c.s, c.s->dirroles,
                           json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:O?, s:s}", "principal",
                                     principal, "role", guid, "name", tier0_directory_roles[k].name,
                                     "id", id, "ptype", ptype, "scope",
                                     json_object_get(e, "directoryScopeId"), "source", path));
            if (r < 0)
                return r;
        }
    }
    return 0;
}

static bool detect_app_role_assignments(const json_t *doc)
{
    const json_t *e = first_element(doc);
    return e && json_object_get(e, "appRoleId") && json_object_get(e, "resourceId") &&
           json_object_get(e, "principalId");
}

static int load_app_role_assignments(ferry_audit *a, const char *path, const char *buf, size_t len,
                                     json_t *doc, char *errbuf, size_t errlen)
{
    az_ctx c;
    json_t *e = NULL;
    int r;

    (void)buf;
    (void)len;
    r = begin(a, &c, path, doc, "Graph /servicePrincipals/ID/appRoleAssignments", errbuf, errlen);
    if (r < 0)
        return r;
    for (size_t i = 0; i < json_array_size(c.list); i++) {
        const char *id, *principal, *role, *ptype, *res;
        char guid[64];

        r = element(&c, i, &e);
        if (r < 0)
            return r;
        principal = str_member(e, "principalId");
        role = str_member(e, "appRoleId");
        if (!principal)
            return elem_error(&c, i, "principalId", "a principalId string");
        if (!role)
            return elem_error(&c, i, "appRoleId", "an appRoleId string");
        if ((r = bounded(&c, i, "principalId", principal, AZ_ID_MAX)) < 0)
            return r;
        if ((r = opt_str(&c, i, e, "id", &id)) < 0 ||
            (r = opt_str(&c, i, e, "principalType", &ptype)) < 0 ||
            (r = opt_str(&c, i, e, "resourceDisplayName", &res)) < 0)
            return r;
        if (ptype && strcmp(ptype, "ServicePrincipal") != 0)
            continue;
        lower_copy(role, guid, sizeof(guid));
        for (size_t k = 0; k < ARRAY_SIZE(privileged_graph_roles); k++) {
            if (strcmp(guid, privileged_graph_roles[k].guid) != 0)
                continue;
            r = array_push(c.s, c.s->graph,
                           json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:s}", "principal", principal,
                                     "role", guid, "name", privileged_graph_roles[k].name, "id", id,
                                     "resource", res, "source", path));
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/* ---- sign-in activity (AZ-SH-001, AZ-OP-006, AZ-SH-005) ------------------------------------ */

static bool detect_signins(const json_t *doc)
{
    const json_t *e = first_element(doc);
    return e && json_object_get(e, "appId") && json_object_get(e, "lastSignInActivity") &&
           !json_object_get(e, "keyId");
}

/* The lastSignInDateTime of member key of e: have=false when null or absent. */
static int activity_date(az_ctx *c, size_t i, json_t *e, const char *key, int64_t *ret, bool *have)
{
    json_t *act = json_object_get(e, key);
    char member[96];
    *have = false;
    if (!act || json_is_null(act))
        return 0;
    if (!json_is_object(act))
        return elem_error(c, i, key, "an object with lastSignInDateTime");
    (void)snprintf(member, sizeof(member), "%s/lastSignInDateTime", key);
    return opt_date(c, i, member, json_object_get(act, "lastSignInDateTime"), ret, have);
}

static int load_signins(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                        char *errbuf, size_t errlen)
{
    az_ctx c;
    json_t *e = NULL;
    int r;

    (void)buf;
    (void)len;
    r = begin(a, &c, path, doc, "Graph beta servicePrincipalSignInActivities", errbuf, errlen);
    if (r < 0)
        return r;
    c.s->have_signins = true;
    for (size_t i = 0; i < json_array_size(c.list); i++) {
        const char *app_id;
        int64_t last = 0, client = 0;
        bool have_last, have_client;
        json_t *rec;

        r = element(&c, i, &e);
        if (r < 0)
            return r;
        app_id = str_member(e, "appId");
        if (!app_id)
            return elem_error(&c, i, "appId", "an appId string");
        if ((r = bounded(&c, i, "appId", app_id, AZ_ID_MAX)) < 0)
            return r;
        if ((r = activity_date(&c, i, e, "lastSignInActivity", &last, &have_last)) < 0 ||
            (r = activity_date(&c, i, e, "applicationAuthenticationClientSignInActivity", &client,
                               &have_client)) < 0)
            return r;
        rec = ident(c.s, app_id, &r);
        if (!rec)
            return r;
        if (json_object_set_new(rec, "last", have_last ? json_integer(last) : json_null()) < 0 ||
            json_object_set(rec, "last_text",
                            have_last ? json_object_get(json_object_get(e, "lastSignInActivity"),
                                                        "lastSignInDateTime")
                                      : json_null()) < 0 ||
            json_object_set_new(rec, "client", have_client ? json_integer(client) : json_null()) <
                0 ||
            rec_set_bool(rec, "activity", true) < 0 ||
            rec_set_str(rec, "activity_source", path) < 0)
            return -ENOMEM;
    }
    return 0;
}

static bool detect_cred_signins(const json_t *doc)
{
    const json_t *e = first_element(doc);
    return e && json_object_get(e, "keyId") && json_object_get(e, "signInActivity");
}

static int load_cred_signins(ferry_audit *a, const char *path, const char *buf, size_t len,
                             json_t *doc, char *errbuf, size_t errlen)
{
    az_ctx c;
    json_t *e = NULL;
    int r;

    (void)buf;
    (void)len;
    r = begin(a, &c, path, doc, "Graph beta appCredentialSignInActivities", errbuf, errlen);
    if (r < 0)
        return r;
    c.s->have_cred_signins = true;
    for (size_t i = 0; i < json_array_size(c.list); i++) {
        const char *key_id, *app_id, *sp_oid, *app_oid, *origin;
        int64_t last = 0, exp = 0, created = 0;
        bool have_last, have_exp, have_created;
        char resource[RES_BUF], key[KEY_BUF];
        int64_t now = audit_now(a), limit = (int64_t)a->opts.key_unused_days * DAY;

        r = element(&c, i, &e);
        if (r < 0)
            return r;
        key_id = str_member(e, "keyId");
        if (!key_id)
            return elem_error(&c, i, "keyId", "a keyId string");
        if ((r = opt_str(&c, i, e, "appId", &app_id)) < 0 ||
            (r = opt_str(&c, i, e, "servicePrincipalObjectId", &sp_oid)) < 0 ||
            (r = opt_str(&c, i, e, "appObjectId", &app_oid)) < 0 ||
            (r = opt_str(&c, i, e, "credentialOrigin", &origin)) < 0 ||
            (r = bounded(&c, i, "keyId", key_id, AZ_ID_MAX)) < 0 ||
            (r = bounded(&c, i, "appId", app_id, AZ_ID_MAX)) < 0 ||
            (r = bounded(&c, i, "servicePrincipalObjectId", sp_oid, AZ_ID_MAX)) < 0 ||
            (r = bounded(&c, i, "appObjectId", app_oid, AZ_ID_MAX)) < 0 ||
            (r = activity_date(&c, i, e, "signInActivity", &last, &have_last)) < 0 ||
            (r = opt_date(&c, i, "expirationDateTime", json_object_get(e, "expirationDateTime"),
                          &exp, &have_exp)) < 0 ||
            (r = opt_date(&c, i, "createdDateTime", json_object_get(e, "createdDateTime"), &created,
                          &have_created)) < 0)
            return r;
        if (have_exp && exp <= now)
            continue; /* expired: AZ-SH-004's business */
        if (have_last ? now - last <= limit
                      : have_created && now - created <= (int64_t)a->opts.grace_days * DAY)
            continue;
        if (origin && strcasecmp(origin, "application") == 0 && app_oid)
            (void)snprintf(resource, sizeof(resource), "applications/%s", app_oid);
        else
            sp_resource(sp_oid, app_id, resource, sizeof(resource));
        (void)snprintf(key, sizeof(key), "credential=%s", key_id);
        r = emit(&c, "AZ-SH-005", -1, "", resource,
                 json_pack("{s:s, s:s?, s:s?, s:O?, s:i}", "key_id", key_id, "app_id", app_id,
                           "origin", origin, "last_sign_in",
                           have_last ? json_object_get(json_object_get(e, "signInActivity"),
                                                       "lastSignInDateTime")
                                     : NULL,
                           "unused_days", (int)a->opts.key_unused_days),
                 key, NULL);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- owners ------------------------------------------------------------------------------------
 */

static bool directory_object(const json_t *e)
{
    const char *t = str_member(e, "@odata.type");
    return t && strncmp(t, "#microsoft.graph.", 17) == 0 && json_object_get(e, "id");
}

static bool detect_owners(const json_t *doc)
{
    const json_t *e = first_element(doc);
    if (!e)
        return false;
    if (directory_object(e))
        return true;
    /* A bundle: [{"id": OBJECT, "owners": [...]}] */
    return json_object_get(e, "id") && json_is_array(json_object_get(e, "owners")) &&
           !json_object_get(e, "appId");
}

/* The object a bare owner list (az ad sp owner list --id X) belongs to, from its file name:
 * the part after the last '_' of the name without directory and extension
 * ("sp_owner_list_ci-terraform.json" -> "ci-terraform"), matched later against object ids,
 * appIds and display names. */
static void owner_target(const char *path, char *out, size_t outlen)
{
    const char *base = strrchr(path, '/'), *u, *dot;
    size_t n;
    base = base ? base + 1 : path;
    u = strrchr(base, '_');
    if (u && u[1])
        base = u + 1;
    dot = strrchr(base, '.');
    n = dot && dot > base ? (size_t)(dot - base) : strlen(base);
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, base, n);
    out[n] = '\0';
}

static int load_owners(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                       char *errbuf, size_t errlen)
{
    az_ctx c;
    json_t *e = NULL;
    int r;
    bool bundle;
    char target[256];

    (void)buf;
    (void)len;
    r = begin(a, &c, path, doc, "az ad sp/app owner list output", errbuf, errlen);
    if (r < 0)
        return r;
    e = json_array_get(c.list, 0);
    bundle = json_is_object(e) && json_is_array(json_object_get(e, "owners"));
    if (!bundle) {
        for (size_t i = 0; i < json_array_size(c.list); i++) {
            r = element(&c, i, &e);
            if (r < 0)
                return r;
            if (!str_member(e, "id"))
                return elem_error(&c, i, "id", "a directory object with an id string");
        }
        owner_target(path, target, sizeof(target));
        return array_push(c.s, c.s->owners,
                          json_pack("{s:s, s:I, s:s}", "target", target, "count",
                                    (json_int_t)json_array_size(c.list), "source", path));
    }
    for (size_t i = 0; i < json_array_size(c.list); i++) {
        const char *id;
        r = element(&c, i, &e);
        if (r < 0)
            return r;
        id = str_member(e, "id");
        if (!id)
            return elem_error(&c, i, "id", "the owned object's id string");
        if (!json_is_array(json_object_get(e, "owners")))
            return elem_error(&c, i, "owners", "an array of directory objects");
        r = owners_member(&c, i, e, id);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- managed identities and resources (AZ-SH-007) ------------------------------------------ */

static bool detect_identities(const json_t *doc)
{
    const json_t *e = first_element(doc);
    const char *t = e ? str_member(e, "type") : NULL;
    return e && arm_member(e, "clientId") && arm_member(e, "principalId") && t &&
           strcasecmp(t, "Microsoft.ManagedIdentity/userAssignedIdentities") == 0;
}

static int load_identities(ferry_audit *a, const char *path, const char *buf, size_t len,
                           json_t *doc, char *errbuf, size_t errlen)
{
    az_ctx c;
    json_t *e = NULL;
    int r;

    (void)buf;
    (void)len;
    r = begin(a, &c, path, doc, "az identity list output", errbuf, errlen);
    if (r < 0)
        return r;
    for (size_t i = 0; i < json_array_size(c.list); i++) {
        const char *id, *client, *oid, *tenant, *name;
        char lid[RES_BUF], account[RES_BUF];
        json_t *rec;

        r = element(&c, i, &e);
        if (r < 0)
            return r;
        id = str_member(e, "id");
        client = arm_str(e, "clientId");
        oid = arm_str(e, "principalId");
        tenant = arm_str(e, "tenantId");
        name = str_member(e, "name");
        if (!id)
            return elem_error(&c, i, "id", "the identity's resource id string");
        if (!client)
            return elem_error(&c, i, "clientId", "a clientId string");
        if (!oid)
            return elem_error(&c, i, "principalId", "a principalId string");
        if ((r = bounded(&c, i, "id", id, AZ_ARM_MAX)) < 0 ||
            (r = bounded(&c, i, "clientId", client, AZ_ID_MAX)) < 0 ||
            (r = bounded(&c, i, "principalId", oid, AZ_ID_MAX)) < 0)
            return r;
        /* The identities of a subscription live in its own tenant. */
        if (tenant && ((r = set_add(c.s->tenants, tenant)) < 0 ||
                       (is_guid(tenant) && (r = set_add(c.s->homes, tenant)) < 0)))
            return r;
        lower_copy(id, lid, sizeof(lid));
        scope_account(id, account, sizeof(account));
        if ((r = counted(c.s)) < 0 ||
            json_object_set_new(c.s->uamis, lid,
                                json_pack("{s:s, s:s?, s:s, s:s}", "id", id, "name", name,
                                          "account", account, "source", path)) < 0 ||
            (rec = ident(c.s, client, &r)) == NULL)
            return r < 0 ? r : -ENOMEM;
        if (json_object_set_new(c.s->oids, oid, json_string(client)) < 0)
            return -ENOMEM;
        if ((r = rec_set_str(rec, "uami", lid)) < 0 || (r = rec_set_str(rec, "oid", oid)) < 0 ||
            (r = rec_set_str(rec, "name", name)) < 0 ||
            (r = rec_set_str(rec, "type", "ManagedIdentity")) < 0 ||
            (r = rec_set_str(rec, "tenant", tenant)) < 0 ||
            (!json_object_get(rec, "source") && (r = rec_set_str(rec, "source", path)) < 0) ||
            (r = rec_set_bool(rec, "sp", true)) < 0)
            return r;
    }
    return 0;
}

static bool detect_resources(const json_t *doc)
{
    const json_t *e = first_element(doc);
    const char *id = e ? str_member(e, "id") : NULL;
    return e && id && strncasecmp(id, "/subscriptions/", 15) == 0 && str_member(e, "type") &&
           json_object_get(e, "location") && !arm_member(e, "clientId") &&
           !json_object_get(e, "permissions") && !json_object_get(e, "roleDefinitionId");
}

static int load_resources(ferry_audit *a, const char *path, const char *buf, size_t len,
                          json_t *doc, char *errbuf, size_t errlen)
{
    az_ctx c;
    json_t *e = NULL;
    int r;

    (void)buf;
    (void)len;
    r = begin(a, &c, path, doc, "az resource list output", errbuf, errlen);
    if (r < 0)
        return r;
    c.s->have_resources = true;
    for (size_t i = 0; i < json_array_size(c.list); i++) {
        json_t *ident_o, *uai, *v;
        const char *k;
        r = element(&c, i, &e);
        if (r < 0)
            return r;
        ident_o = json_object_get(e, "identity");
        if (!ident_o || json_is_null(ident_o))
            continue;
        if (!json_is_object(ident_o))
            return elem_error(&c, i, "identity", "an identity object");
        uai = json_object_get(ident_o, "userAssignedIdentities");
        if (uai && !json_is_null(uai) && !json_is_object(uai))
            return elem_error(&c, i, "identity/userAssignedIdentities",
                              "an object keyed by identity resource id");
        json_object_foreach(uai, k, v)
        {
            char lid[RES_BUF];
            (void)v;
            if ((r = bounded(&c, i, "identity/userAssignedIdentities", k, AZ_ARM_MAX)) < 0)
                return r;
            lower_copy(k, lid, sizeof(lid));
            if ((r = counted(c.s)) < 0 || (r = set_add(c.s->attached, lid)) < 0)
                return r;
        }
    }
    return 0;
}

/* ---- federated credentials (AZ-TR-002) ------------------------------------------------------ */

static bool detect_fics(const json_t *doc)
{
    const json_t *e = first_element(doc);
    return e && arm_member(e, "issuer") && arm_member(e, "subject") && !json_object_get(e, "appId");
}

static bool issuer_known(const char *iss)
{
    char l[AZ_TEXT_MAX + 1];
    lower_copy(iss, l, sizeof(l));
    for (size_t i = 0; known_issuers[i]; i++)
        if (strncmp(l, known_issuers[i], strlen(known_issuers[i])) == 0)
            return true;
    /* AKS clusters' per-cluster issuers: https://REGION.oic.prod-aks.azure.com/TENANT/ID/ */
    if (strncmp(l, "https://", 8) == 0 && strstr(l, ".oic.prod-aks.azure.com/"))
        return true;
    /* EKS clusters: https://oidc.eks.REGION.amazonaws.com/id/ID */
    if (strncmp(l, "https://oidc.eks.", 17) == 0 && strstr(l, ".amazonaws.com/id/"))
        return true;
    /* GKE clusters: https://container.googleapis.com/v1/projects/P/locations/L/clusters/C */
    return strncmp(l, "https://container.googleapis.com/v1/projects/", 44) == 0;
}

/* Why a subject is too broad, or NULL. */
static const char *subject_problem(const char *sub, const char *expr)
{
    if (expr && strchr(expr, '*'))
        return "claims-matching expression with a wildcard";
    if (!sub)
        return expr ? NULL : "no subject";
    if (strchr(sub, '*'))
        return "wildcard in subject";
    if (strncmp(sub, "repo:", 5) == 0 && strlen(sub) > 13 &&
        strcmp(sub + strlen(sub) - 13, ":pull_request") == 0)
        return "any pull request of the repository";
    if (strncmp(sub, "repo:", 5) == 0 && !strchr(sub + 5, ':'))
        return "a whole repository (no ref, environment or event)";
    return NULL;
}

static int one_fic(az_ctx *c, size_t i, json_t *f, const char *member, const char *parent,
                   const char *account, json_t *rec)
{
    const char *iss = arm_str(f, "issuer"), *sub = arm_str(f, "subject"), *id, *name;
    const char *expr =
        json_string_value(json_object_get(arm_member(f, "claimsMatchingExpression"), "value"));
    const char *why;
    char resource[RES_BUF], key[KEY_BUF], m[128];
    int r = 0;

    if (!iss) {
        (void)snprintf(m, sizeof(m), "%s%sissuer", member, member[0] ? "/" : "");
        return elem_error(c, i, m, "an issuer string");
    }
    id = str_member(f, "id");
    name = str_member(f, "name");
    (void)snprintf(m, sizeof(m), "%s%sissuer", member, member[0] ? "/" : "");
    if ((r = bounded(c, i, m, iss, AZ_TEXT_MAX)) < 0)
        return r;
    (void)snprintf(m, sizeof(m), "%s%ssubject", member, member[0] ? "/" : "");
    if ((r = bounded(c, i, m, sub, AZ_TEXT_MAX)) < 0)
        return r;
    (void)snprintf(m, sizeof(m), "%s%sid", member, member[0] ? "/" : "");
    if ((r = bounded(c, i, m, id, AZ_ARM_MAX)) < 0)
        return r;
    (void)snprintf(m, sizeof(m), "%s%sname", member, member[0] ? "/" : "");
    if ((r = bounded(c, i, m, name, AZ_ID_MAX)) < 0 ||
        (r = bounded(c, i, member[0] ? member : "claimsMatchingExpression", expr, AZ_TEXT_MAX)) < 0)
        return r;
    if (rec && json_array_append_new(json_object_get(rec, "issuers"), json_string(iss)) < 0)
        return -ENOMEM;
    if (id && id[0] == '/')
        (void)snprintf(resource, sizeof(resource), "%s", id); /* ARM id of a UAMI credential */
    else
        (void)snprintf(resource, sizeof(resource), "%s%sfederatedIdentityCredentials/%s",
                       parent ? parent : "", parent ? "/" : "",
                       id     ? id
                       : name ? name
                              : "");
    why = subject_problem(sub, expr);
    (void)snprintf(key, sizeof(key), "issuer=%s;subject=%s", iss, sub ? sub : expr ? expr : "");
    if (why || !issuer_known(iss))
        r = emit(c, "AZ-TR-002", -1, account, resource,
                 json_pack("{s:s, s:s?, s:s?, s:s?, s:s}", "issuer", iss, "subject", sub,
                           "claims_matching_expression", expr, "name", name, "problem",
                           why ? why : "unknown issuer"),
                 key, NULL);
    return r;
}

static int fic_list(az_ctx *c, size_t i, json_t *o, const char *parent, const char *account,
                    json_t *rec)
{
    json_t *l = json_object_get(o, "federatedIdentityCredentials"), *f;
    size_t k;
    if (!l || json_is_null(l))
        return 0;
    if (!json_is_array(l))
        return elem_error(c, i, "federatedIdentityCredentials", "an array");
    json_array_foreach(l, k, f)
    {
        char m[64];
        int r;
        (void)snprintf(m, sizeof(m), "federatedIdentityCredentials/%zu", k);
        if (!json_is_object(f))
            return elem_error(c, i, m, "an object");
        r = one_fic(c, i, f, m, parent, account, rec);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The application object id a Graph page's @odata.context names:
 * ".../$metadata#applications('OBJECTID')/federatedIdentityCredentials". */
static bool context_parent(const json_t *doc, char *out, size_t outlen)
{
    const char *ctx = str_member(doc, "@odata.context"), *p, *q;
    if (!ctx || !(p = strstr(ctx, "applications('")))
        return false;
    p += 14;
    q = strchr(p, '\'');
    if (!q || (size_t)(q - p) >= outlen || q == p)
        return false;
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = '\0';
    return true;
}

static int load_fics(ferry_audit *a, const char *path, const char *buf, size_t len, json_t *doc,
                     char *errbuf, size_t errlen)
{
    az_ctx c;
    json_t *e = NULL;
    char oid[AZ_ID_MAX + 1], parent[AZ_ID_MAX + 32];
    bool has_parent;
    int r;

    (void)buf;
    (void)len;
    r = begin(a, &c, path, doc, "az ad app / az identity federated-credential list output", errbuf,
              errlen);
    if (r < 0)
        return r;
    has_parent = context_parent(doc, oid, sizeof(oid));
    if (has_parent)
        (void)snprintf(parent, sizeof(parent), "applications/%s", oid);
    for (size_t i = 0; i < json_array_size(c.list); i++) {
        const char *id, *iss;
        char account[RES_BUF] = "", owner[RES_BUF] = "";
        json_t *issuers;
        r = element(&c, i, &e);
        if (r < 0)
            return r;
        id = str_member(e, "id");
        if (id && id[0] == '/') {
            /* A UAMI's credential: its identity is the id up to /federatedIdentityCredentials. */
            char *cut;
            scope_account(id, account, sizeof(account));
            lower_copy(id, owner, sizeof(owner));
            cut = strstr(owner, "/federatedidentitycredentials/");
            if (cut)
                *cut = '\0';
        } else if (has_parent) {
            lower_copy(oid, owner, sizeof(owner));
        }
        r = one_fic(&c, i, e, "", has_parent ? parent : NULL, account, NULL);
        if (r < 0)
            return r;
        /* The issuers, for the identity notes once the owner's record is known. */
        iss = arm_str(e, "issuer");
        if (!owner[0])
            continue;
        issuers = json_object_get(c.s->fic_parents, owner);
        if (!issuers) {
            if ((r = counted(c.s)) < 0)
                return r;
            if (json_object_set_new(c.s->fic_parents, owner, json_array()) < 0)
                return -ENOMEM;
            issuers = json_object_get(c.s->fic_parents, owner);
        }
        if (json_array_append_new(issuers, json_string(iss)) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* ---- decisions at the end of the run -------------------------------------------------------- */

/* The identity record of a service principal object id, or NULL. */
static json_t *by_oid(az_state *s, const char *oid)
{
    const char *app = json_string_value(json_object_get(s->oids, oid));
    return app ? json_object_get(s->ids, app) : NULL;
}

static bool third_party(const az_state *s, const json_t *rec)
{
    const char *org = str_member(rec, "owner_org"), *type = str_member(rec, "type");
    char l[64];
    if (!org || !is_guid(org) || (type && strcmp(type, "ManagedIdentity") == 0))
        return false;
    if (rec_bool(rec, "first_party") || rec_bool(rec, "registered"))
        return false;
    lower_copy(org, l, sizeof(l));
    return !json_object_get(s->homes, org) && !json_object_get(s->homes, l) &&
           !json_object_get(s->trusted, l);
}

static int role_kind(az_state *s, const char *role_id, const char *cli_name, char *guid,
                     size_t guidlen, const char **ret_name)
{
    last_component(role_id, guid, guidlen);
    *ret_name = cli_name;
    for (size_t k = 0; k < ARRAY_SIZE(builtin_roles); k++)
        if (strcmp(guid, builtin_roles[k].guid) == 0 ||
            (cli_name && strcmp(cli_name, builtin_roles[k].name) == 0)) {
            *ret_name = builtin_roles[k].name;
            return builtin_roles[k].kind;
        }
    if (!*ret_name)
        *ret_name = json_string_value(json_object_get(s->roles, guid));
    return ROLE_OTHER;
}

static int mark(json_t *rec, const char *key)
{
    return rec ? rec_set_bool(rec, key, true) : 0;
}

static int assignment_rules(az_ctx *c)
{
    az_state *s = c->s;
    json_t *as;
    size_t i;
    int r = 0;
    bool have_sps = json_object_size(s->oids) > 0;

    json_array_foreach(s->assigns, i, as)
    {
        const char *id = str_member(as, "id"), *principal = str_member(as, "principal");
        const char *ptype = str_member(as, "ptype"), *scope = str_member(as, "scope");
        const char *src = str_member(as, "source"), *rname;
        json_t *rec = by_oid(s, principal);
        char guid[64], account[RES_BUF], resource[RES_BUF], key[KEY_BUF];
        int kind = role_kind(s, str_member(as, "role"), str_member(as, "role_name"), guid,
                             sizeof(guid), &rname);
        int lvl = scope_level(scope);
        bool sp = ptype ? strcmp(ptype, "ServicePrincipal") == 0 : rec != NULL;

        scope_account(scope, account, sizeof(account));
        (void)snprintf(key, sizeof(key), "role=%s;scope=%s", guid, scope);
        lower_copy(key, key, sizeof(key));
        if ((ptype && strcmp(ptype, "Unknown") == 0) || (sp && have_sps && !rec)) {
            r = emit(c, "AZ-SH-006", -1, account, id,
                     json_pack("{s:s, s:s?, s:s, s:s?, s:s}", "principal_id", principal,
                               "principal_type", ptype, "role_id", guid, "role", rname, "scope",
                               scope),
                     "deleted-principal", src);
            if (r < 0)
                return r;
            continue;
        }
        if (!sp || (rec && rec_bool(rec, "first_party")))
            continue;
        if ((r = mark(rec, "rbac")) < 0)
            return r;
        sp_resource(principal, NULL, resource, sizeof(resource));
        json_t *ev = json_pack(
            "{s:s, s:s?, s:s, s:s, s:s, s:s, s:s?, s:s?}", "role_id", guid, "role", rname, "scope",
            scope, "scope_level", scope_names[lvl], "assignment", id, "principal_type",
            rec && str_member(rec, "type") ? str_member(rec, "type") : "ServicePrincipal", "app_id",
            rec ? str_member(rec, "app") : NULL, "display_name",
            rec ? str_member(rec, "name") : NULL);
        if (!ev)
            return -ENOMEM;
        if (kind == ROLE_OWNER || kind == ROLE_UAA || kind == ROLE_RBAC_ADMIN) {
            r = mark(rec, "privileged");
            if (r == 0 && lvl >= 1)
                r = mark(rec, "tier0");
            if (r == 0)
                r = emit(c, "AZ-OP-001", lvl >= 1 ? FERRY_AUDIT_CRITICAL : FERRY_AUDIT_HIGH,
                         account, resource, json_incref(ev), key, src);
        } else if (kind == ROLE_CONTRIBUTOR && lvl >= 1) {
            r = emit(c, "AZ-OP-002", -1, account, resource, json_incref(ev), key, src);
        }
        json_decref(ev);
        if (r < 0)
            return r;
    }
    return 0;
}

static int graph_rules(az_ctx *c, json_t *list, const char *rule)
{
    az_state *s = c->s;
    json_t *g;
    size_t i;
    int r;

    json_array_foreach(list, i, g)
    {
        const char *principal = str_member(g, "principal"), *ptype = str_member(g, "ptype");
        json_t *rec = by_oid(s, principal);
        char resource[RES_BUF], key[KEY_BUF];
        bool is_sp = rec || (ptype && strcmp(ptype, "#microsoft.graph.servicePrincipal") == 0) ||
                     strcmp(rule, "AZ-OP-005") == 0;
        if (!is_sp || (rec && rec_bool(rec, "first_party")))
            continue;
        if ((r = mark(rec, "privileged")) < 0 || (r = mark(rec, "tier0")) < 0 ||
            (r = mark(rec, "entra")) < 0)
            return r;
        sp_resource(principal, NULL, resource, sizeof(resource));
        (void)snprintf(key, sizeof(key), "role=%s", str_member(g, "role"));
        r = emit(c, rule, -1, rec ? str_member(rec, "tenant") : "", resource,
                 json_pack("{s:s, s:s, s:s?, s:s?, s:s?, s:s?}", "role", str_member(g, "name"),
                           "role_id", str_member(g, "role"), "assignment", str_member(g, "id"),
                           "resource", str_member(g, "resource"), "app_id",
                           rec ? str_member(rec, "app") : NULL, "display_name",
                           rec ? str_member(rec, "name") : NULL),
                 key, str_member(g, "source"));
        if (r < 0)
            return r;
    }
    return 0;
}

/* Owner counts onto the identity records, matching object id, appId or display name. */
static int resolve_owners(az_state *s)
{
    json_t *o;
    size_t i;
    json_array_foreach(s->owners, i, o)
    {
        const char *t = str_member(o, "target"), *k;
        json_int_t n = json_integer_value(json_object_get(o, "count"));
        json_t *rec = by_oid(s, t), *v;
        if (!rec)
            rec = json_object_get(s->ids, t);
        if (!rec)
            json_object_foreach(s->ids, k, v)
            {
                const char *ao = str_member(v, "app_oid"), *nm = str_member(v, "name");
                if ((ao && strcasecmp(ao, t) == 0) || (nm && strcmp(nm, t) == 0)) {
                    rec = v;
                    break;
                }
            }
        if (!rec)
            continue; /* an owner list of an object no input describes */
        json_int_t cur = json_integer_value(json_object_get(rec, "owners"));
        if (json_object_set_new(rec, "owners", json_integer((cur < 0 ? 0 : cur) + n)) < 0)
            return -ENOMEM;
    }
    return 0;
}

static int principal_rules(az_ctx *c)
{
    az_state *s = c->s;
    ferry_audit *a = c->a;
    int64_t now = audit_now(a), unused = (int64_t)a->opts.unused_days * DAY;
    const char *app;
    json_t *rec;
    int r;

    json_object_foreach(s->ids, app, rec)
    {
        const char *oid = str_member(rec, "oid"), *tenant = str_member(rec, "tenant");
        const char *type = str_member(rec, "type"), *src = str_member(rec, "source");
        char resource[RES_BUF];
        bool managed = type && strcmp(type, "ManagedIdentity") == 0;
        bool first = rec_bool(rec, "first_party"), third = third_party(s, rec);
        json_int_t owners = json_integer_value(json_object_get(rec, "owners"));

        if (first)
            continue;
        sp_resource(oid, app, resource, sizeof(resource));
        if (!tenant)
            tenant = "";
        if (third && (rec_bool(rec, "rbac") || rec_bool(rec, "entra"))) {
            r = emit(c, "AZ-TR-001", -1, tenant, resource,
                     json_pack("{s:s, s:s?, s:s, s:b, s:b}", "app_id", app, "display_name",
                               str_member(rec, "name"), "app_owner_tenant",
                               str_member(rec, "owner_org"), "azure_rbac", rec_bool(rec, "rbac"),
                               "entra_privileged", rec_bool(rec, "entra")),
                     "third-party", src);
            if (r < 0)
                return r;
        }
        if (rec_bool(rec, "sp") && !managed && !third && owners >= 0) {
            bool priv = rec_bool(rec, "privileged");
            if (priv ? owners > 0 : owners == 0) {
                r = emit(
                    c, "AZ-SH-008", priv ? FERRY_AUDIT_HIGH : FERRY_AUDIT_LOW, tenant, resource,
                    json_pack("{s:s, s:s?, s:I, s:b, s:s}", "app_id", app, "display_name",
                              str_member(rec, "name"), "owners", owners, "privileged", priv,
                              "problem", priv ? "privileged principal with owners" : "no owners"),
                    priv ? "privileged-owned" : "unowned", src);
                if (r < 0)
                    return r;
            }
        }
        if (rec_bool(rec, "activity") && !rec_bool(rec, "disabled")) {
            json_t *last = json_object_get(rec, "last"), *client = json_object_get(rec, "client");
            const char *asrc = str_member(rec, "activity_source");
            json_t *created = json_object_get(rec, "created");
            bool young = json_is_integer(created) &&
                         now - json_integer_value(created) < (int64_t)a->opts.grace_days * DAY;
            bool inactive =
                !young && (!json_is_integer(last) || now - json_integer_value(last) > unused);
            if (inactive) {
                r = emit(c, "AZ-SH-001", -1, tenant, resource,
                         json_pack("{s:s, s:s?, s:O?, s:i}", "app_id", app, "display_name",
                                   str_member(rec, "name"), "last_sign_in",
                                   json_object_get(rec, "last_text"), "unused_days",
                                   (int)a->opts.unused_days),
                         "inactive", asrc);
            } else if (!young && rec_bool(rec, "rbac") &&
                       (!json_is_integer(client) || now - json_integer_value(client) > unused)) {
                r = emit(c, "AZ-OP-006", -1, tenant, resource,
                         json_pack("{s:s, s:s?, s:s, s:i}", "app_id", app, "display_name",
                                   str_member(rec, "name"), "unused",
                                   "Azure role assignments (no app-only sign-in)", "unused_days",
                                   (int)a->opts.unused_days),
                         "unused-rbac", asrc);
            } else {
                r = 0;
            }
            if (r < 0)
                return r;
        }
    }
    return 0;
}

static int secret_rules(az_ctx *c)
{
    az_state *s = c->s;
    json_t *sec;
    size_t i;
    int r;
    json_array_foreach(s->secrets, i, sec)
    {
        json_t *rec = json_object_get(s->ids, str_member(sec, "app"));
        bool tier0 = rec && rec_bool(rec, "tier0");
        r = emit(c, "AZ-SH-002", tier0 ? FERRY_AUDIT_CRITICAL : -1, str_member(sec, "account"),
                 str_member(sec, "resource"),
                 json_pack("{s:s, s:O, s:I, s:b}", "app_id", str_member(sec, "app"), "key_ids",
                           json_object_get(sec, "keys"), "count",
                           (json_int_t)json_array_size(json_object_get(sec, "keys")), "tier0",
                           tier0),
                 "client-secret", str_member(sec, "source"));
        if (r < 0)
            return r;
    }
    return 0;
}

/* AZ-SH-002 is "client secret present": the keys array above holds only passwordCredentials. */

static int uami_rules(az_ctx *c)
{
    az_state *s = c->s;
    const char *lid;
    json_t *u;
    int r;
    if (!s->have_resources)
        return 0;
    json_object_foreach(s->uamis, lid, u)
    {
        if (json_object_get(s->attached, lid))
            continue;
        r = emit(c, "AZ-SH-007", -1, str_member(u, "account"), str_member(u, "id"),
                 json_pack("{s:s?, s:s}", "name", str_member(u, "name"), "attached_to", "nothing"),
                 "orphaned", str_member(u, "source"));
        if (r < 0)
            return r;
    }
    return 0;
}

static int not_evaluated(az_ctx *c)
{
    az_state *s = c->s;
    static const struct {
        const char *rule, *reason;
        bool signins;
    } notes[] = {
        {"AZ-OP-006", "no servicePrincipalSignInActivities input", true},
        {"AZ-SH-001", "no servicePrincipalSignInActivities input", true},
        {"AZ-SH-005", "no appCredentialSignInActivities input", false},
    };
    json_t *tenants = json_object_size(s->tenants) ? s->tenants : NULL;
    const char *t;
    json_t *v;
    int r;

    for (size_t n = 0; n < ARRAY_SIZE(notes); n++) {
        if (notes[n].signins ? s->have_signins : s->have_cred_signins)
            continue;
        if (!tenants) {
            r = emit(c, notes[n].rule, FERRY_AUDIT_INFO, "", "tenants/unknown",
                     json_pack("{s:b, s:s}", "evaluated", 0, "reason", notes[n].reason),
                     "not-evaluated", s->first_source);
            if (r < 0)
                return r;
            continue;
        }
        json_object_foreach(tenants, t, v)
        {
            char resource[RES_BUF];
            (void)v;
            (void)snprintf(resource, sizeof(resource), "tenants/%s", t);
            r = emit(c, notes[n].rule, FERRY_AUDIT_INFO, t, resource,
                     json_pack("{s:b, s:s}", "evaluated", 0, "reason", notes[n].reason),
                     "not-evaluated", s->first_source);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

static int identity_notes(az_ctx *c)
{
    az_state *s = c->s;
    ferry_audit *a = c->a;
    int64_t now = audit_now(a), unused = (int64_t)a->opts.unused_days * DAY;
    const char *app;
    json_t *rec;
    int r;

    json_object_foreach(s->ids, app, rec)
    {
        const char *iss[17] = {NULL};
        json_t *issuers = json_object_get(rec, "issuers"), *v;
        audit_identity id = {.cloud = CLOUD, .id = app};
        size_t k, n = 0;

        if (!rec_bool(rec, "sp") && !rec_bool(rec, "registered"))
            continue; /* only seen in sign-in data */
        id.account = str_member(rec, "tenant") ? str_member(rec, "tenant") : "";
        id.alias = str_member(rec, "oid");
        id.source = str_member(rec, "source");
        if (rec_bool(rec, "static"))
            id.flags |= AUDIT_ID_STATIC_CRED;
        if (rec_bool(rec, "first_party"))
            id.flags |= AUDIT_ID_MANAGED;
        if (rec_bool(rec, "disabled"))
            id.flags |= AUDIT_ID_DISABLED;
        if (rec_bool(rec, "activity")) {
            json_t *last = json_object_get(rec, "last");
            id.flags |= json_is_integer(last) && now - json_integer_value(last) <= unused
                            ? AUDIT_ID_USED
                            : AUDIT_ID_UNUSED;
        }
        for (int pass = 0; pass < 3; pass++) {
            const char *owner = pass == 1 ? str_member(rec, "app_oid") : str_member(rec, "uami");
            char l[RES_BUF];
            if (pass > 0) {
                if (!owner)
                    continue;
                lower_copy(owner, l, sizeof(l));
                issuers = json_object_get(s->fic_parents, l);
            }
            json_array_foreach(issuers, k, v)
            {
                if (n + 1 < ARRAY_SIZE(iss) && json_string_value(v))
                    iss[n++] = json_string_value(v);
            }
        }
        if (n)
            id.flags |= AUDIT_ID_FEDERATED;
        id.issuers = n ? iss : NULL;
        r = audit_identity_note(a, &id);
        if (r < 0)
            return r;
    }
    return 0;
}

static int az_finish(ferry_audit *a, char *errbuf, size_t errlen)
{
    az_ctx c = {.a = a, .s = a->azure, .errbuf = errbuf, .errlen = errlen, .path = ""};
    int r;
    if (!c.s || !c.s->any)
        return 0;
    r = resolve_owners(c.s);
    if (r == 0)
        r = assignment_rules(&c);
    if (r == 0)
        r = graph_rules(&c, c.s->dirroles, "AZ-OP-004");
    if (r == 0)
        r = graph_rules(&c, c.s->graph, "AZ-OP-005");
    if (r == 0)
        r = principal_rules(&c);
    if (r == 0)
        r = secret_rules(&c);
    if (r == 0)
        r = uami_rules(&c);
    if (r == 0)
        r = not_evaluated(&c);
    if (r == 0)
        r = identity_notes(&c);
    /* Decided once: a second finish must not repeat the decisions. */
    if (r == 0)
        c.s->any = false;
    if (r < 0 && r != -ENOMEM)
        r = ferry_errbuf_set(errbuf, errlen, r, "azure: %s", ferry_strerror(r));
    return r;
}

/* ---- trusted tenants ---------------------------------------------------------------------- */

FERRY_EXPORT int ferry_audit_azure_trust_tenant(ferry_audit *a, const char *tenant_id)
{
    az_state *s;
    char l[64];
    if (!a || !is_guid(tenant_id))
        return -EINVAL;
    s = state(a);
    if (!s)
        return -ENOMEM;
    lower_copy(tenant_id, l, sizeof(l));
    return set_add(s->trusted, l);
}

static const audit_loader az_loaders[] = {
    {"azure-sp", "az ad sp list: servicePrincipalType + appId", detect_sp, NULL, load_sp},
    {"azure-app", "az ad app list: signInAudience + appId", detect_app, NULL, load_app},
    {"azure-role-assignments", "az role assignment list / ARM: roleDefinitionId + principalId",
     detect_role_assignments, NULL, load_role_assignments},
    {"azure-role-definitions", "az role definition list / ARM: permissions + roleName",
     detect_role_definitions, NULL, load_role_definitions},
    {"azure-signins", "Graph servicePrincipalSignInActivities: lastSignInActivity", detect_signins,
     NULL, load_signins},
    {"azure-cred-signins", "Graph appCredentialSignInActivities: keyId + signInActivity",
     detect_cred_signins, NULL, load_cred_signins},
    {"azure-directory-roles", "Graph directory roleAssignments: directoryScopeId",
     detect_directory_roles, NULL, load_directory_roles},
    {"azure-app-role-assignments", "Graph appRoleAssignments: appRoleId + resourceId",
     detect_app_role_assignments, NULL, load_app_role_assignments},
    {"azure-identities", "az identity list: clientId + principalId", detect_identities, NULL,
     load_identities},
    {"azure-federated-creds", "federated-credential list: issuer + subject", detect_fics, NULL,
     load_fics},
    {"azure-owners", "az ad sp/app owner list: @odata.type + id", detect_owners, NULL, load_owners},
    {"azure-resources", "az resource list: id + type + location (identity)", detect_resources, NULL,
     load_resources},
};

const audit_cloud audit_cloud_azure = {
    .name = CLOUD,
    .rules = az_rules,
    .n_rules = ARRAY_SIZE(az_rules),
    .loaders = az_loaders,
    .n_loaders = ARRAY_SIZE(az_loaders),
    .finish = az_finish,
    .release = az_release,
};
