/* audit/azure.c - Azure loaders (az CLI, ARM REST and Microsoft Graph exports) and the Azure
 * rules of the catalogue. docs/internals/audit.md ("Azure") says how each rule reads the model.
 *
 * Every loader reads one list (a bare JSON array, or a Graph/ARM page {"value": [...]}, whose
 * @odata.nextLink pages are simply further inputs). Rules that need one file only run when it
 * is loaded (AZ-OP-003 custom roles, AZ-SH-003/004 credential lifetimes, AZ-SH-005 credential
 * use, AZ-TR-002 federated credentials); the rules that join files (assignments with service
 * principals, roles, owners, sign-ins) are decided in finish from small per-run indexes of
 * plain records over interned strings ("the cross-file state" below): one record per service
 * principal or application (names and flags), one per role assignment that can still give a
 * finding (the others are decided while loading), per privileged directory role or Graph
 * permission, per owner target.
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

/* ---- the cross-file state ------------------------------------------------------------------
 *
 * What finish reads, as plain records. Every string a record keeps is interned once in a
 * set of the run (audit_strset): the strings live in chunks that never move, so a record holds
 * a plain pointer, two interned strings are equal exactly when their pointers are, and the
 * indexes below are keyed by those pointers (az_map). An input's path is interned once, not
 * copied into every record. */

/* Bytes of interned text one run may hold (a guard, like AZ_INDEX_MAX). */
#define AZ_STR_BYTES_MAX ((size_t)1 << 30)
/* The most OIDC issuers the identity notes pass for one identity (the rest are not read). */
#define AZ_ISSUERS 16

/* The interned copy of s in t, or NULL when s is NULL or was never interned. */
static const char *strtab_find(const audit_strset *t, const char *str)
{
    return str ? audit_strset_find(t, str) : NULL;
}

/* A map from interned strings (by pointer) to a number or a pointer; a set is a map. */
typedef struct az_entry {
    const char *key; /* NULL: empty */
    uintptr_t val;
} az_entry;

typedef struct az_map {
    az_entry *e; /* open addressing, linear probing; cap a power of two */
    size_t cap, n;
} az_map;

static size_t ptr_hash(const char *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 31;
    x *= UINT64_C(0x9e3779b97f4a7c15);
    x ^= x >> 29;
    return (size_t)x;
}

/* The value of key (interned or NULL), or NULL when absent. Valid until the next map_put. */
static uintptr_t *map_get(const az_map *m, const char *key)
{
    if (!key || !m->cap)
        return NULL;
    for (size_t i = ptr_hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->e[i].key == key)
            return &m->e[i].val;
        if (!m->e[i].key)
            return NULL;
    }
}

/* The value of key (interned, not NULL), added as init when absent (*ret_new says which).
 * *ret is valid until the next map_put. */
static int map_put(az_map *m, const char *key, uintptr_t init, uintptr_t **ret, bool *ret_new)
{
    size_t i;
    if ((m->n + 1) * 4 > m->cap * 3) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        az_entry *e;
        if (cap > SIZE_MAX / sizeof(*e))
            return -FERRY_ETOOBIG;
        e = calloc(cap, sizeof(*e));
        if (!e)
            return -ENOMEM;
        for (size_t k = 0; k < m->cap; k++) {
            if (!m->e[k].key)
                continue;
            for (i = ptr_hash(m->e[k].key) & (cap - 1); e[i].key; i = (i + 1) & (cap - 1))
                ;
            e[i] = m->e[k];
        }
        free(m->e);
        m->e = e;
        m->cap = cap;
    }
    for (i = ptr_hash(key) & (m->cap - 1); m->e[i].key && m->e[i].key != key;
         i = (i + 1) & (m->cap - 1))
        ;
    if (ret_new)
        *ret_new = !m->e[i].key;
    if (!m->e[i].key) {
        m->e[i] = (az_entry){.key = key, .val = init};
        m->n++;
    }
    *ret = &m->e[i].val;
    return 0;
}

static void map_release(az_map *m)
{
    free(m->e);
    *m = (az_map){0};
}

/* Room for one more element of size bytes in the vector *p of *n (of *alloc) elements. */
static int vec_room(void *p, size_t *alloc, size_t n, size_t size)
{
    void **pp = p, *np;
    size_t na;
    if (n < *alloc)
        return 0;
    if (n >= AZ_INDEX_MAX)
        return -FERRY_ETOOBIG;
    na = *alloc ? *alloc * 2 : 16;
    np = realloc(*pp, na * size);
    if (!np)
        return -ENOMEM;
    *pp = np;
    *alloc = na;
    return 0;
}

/* Flags of an identity record. */
enum {
    ID_STATIC = 1u << 0,      /* an unexpired client secret (AUDIT_ID_STATIC_CRED) */
    ID_SP = 1u << 1,          /* in a service principal or identity list */
    ID_REGISTERED = 1u << 2,  /* in an application list: registered in the tenant */
    ID_FIRST_PARTY = 1u << 3, /* owned by Microsoft's tenant */
    ID_DISABLED = 1u << 4,
    ID_ACTIVITY = 1u << 5, /* in the sign-in data */
    ID_CREATED = 1u << 6,  /* created is set */
    ID_LAST = 1u << 7,     /* last is set */
    ID_CLIENT = 1u << 8,   /* client is set */
    ID_RBAC = 1u << 9,     /* holds an Azure role assignment (finish) */
    ID_PRIVILEGED = 1u << 10,
    ID_TIER0 = 1u << 11,
    ID_ENTRA = 1u << 12, /* privileged directory role or Graph permission (finish) */
};

/* One service principal, application or managed identity, by appId (client id). */
typedef struct az_ident {
    const char *app, *oid, *name, *type, *owner_org, *tenant, *source;
    const char *app_oid;         /* the application object's id (application list) */
    const char *uami;            /* the user-assigned identity's resource id, lower case */
    const char *last_text;       /* lastSignInDateTime as written, or NULL */
    const char *activity_source; /* the sign-in input */
    int64_t created, last, client;
    int64_t owners;   /* -1: no owner data */
    uint32_t issuers; /* 1 + index in az_state.issuers (shadow only), 0: none */
    uint32_t flags;   /* ID_* */
} az_ident;

/* Principal types of a kept role assignment (other types are decided at load: nothing). */
enum { PT_NONE = 0, PT_SP, PT_UNKNOWN };

/* A role assignment that may still produce a finding. Its strings are interned, but for the
 * id of a pending one: its own copy, freed with it. */
typedef struct az_assign {
    const char *id, *principal, *guid, *cli_name, *scope, *source;
    size_t seq; /* load order: held and pending are merged by it in finish */
    uint8_t ptype;
} az_assign;

/* A privileged directory role (AZ-OP-004) or Graph permission (AZ-OP-005) assignment. */
typedef struct az_grant {
    const char *principal, *id, *resource, *source;
    uint8_t role;  /* index in tier0_directory_roles / privileged_graph_roles */
    bool ptype_sp; /* $expand=principal says #microsoft.graph.servicePrincipal */
} az_grant;

/* An object holding client secrets (AZ-SH-002). */
typedef struct az_secret {
    const char *app, *oid, *account, *source;
    size_t keys, n_keys; /* key ids: az_state.keyv[keys .. keys + n_keys) */
    bool application;    /* applications/OID, else servicePrincipals/OID */
} az_secret;

/* A user-assigned managed identity no resource is known to use (AZ-SH-007). */
typedef struct az_uami {
    const char *lid; /* lower case id; NULL once a resource uses it (dropped) */
    const char *id, *name, *account, *source;
} az_uami;

/* The OIDC issuers of one identity's federated credentials, as far as the notes read. */
typedef struct az_issuers {
    const char *v[AZ_ISSUERS];
    size_t n;
} az_issuers;

typedef struct az_state {
    audit_strset str;
    az_ident *ids; /* in order of first sight (the order of the principal findings) */
    size_t n_ids, alloc_ids;
    az_map by_app;             /* appId -> index in ids */
    az_map oids;               /* service principal objectId -> index in ids << 1 | OID_RBAC */
    az_map homes;              /* home tenants seen (a set) */
    az_map trusted;            /* --trusted-tenants (a set, lower case) */
    az_map tenants;            /* tenants of the run (a set) ... */
    const char **tenant_order; /* ... in order of first sight, for the "not evaluated" notes */
    size_t n_tenants, alloc_tenants;
    az_assign *held; /* assignments of privileged roles, and to principals of type Unknown */
    size_t n_held, alloc_held;
    az_assign *pending; /* other assignments to principals not (yet) in an SP list */
    size_t n_pending, alloc_pending;
    size_t assign_seq;
    az_map roles; /* role definition GUID -> name (interned) */
    az_grant *dirroles, *graph;
    size_t n_dirroles, alloc_dirroles, n_graph, alloc_graph;
    az_map owners; /* owner list target -> owners counted over all its lists */
    az_secret *secrets;
    size_t n_secrets, alloc_secrets;
    const char **keyv; /* key ids of the secrets */
    size_t n_keyv, alloc_keyv;
    az_uami *uamis; /* in order of first sight */
    size_t n_uamis, alloc_uamis, dead_uamis;
    az_map uami_index; /* lower case id -> index in uamis */
    az_map attached;   /* user-assigned identity ids some resource uses (a set, lower case) */
    az_issuers *issuers;
    size_t n_issuers, alloc_issuers;
    az_map fic_parents; /* application object id or identity id (lower case) -> 1 + issuers */
    size_t records;     /* records in the indexes, against AZ_INDEX_MAX */
    bool have_signins, have_cred_signins, have_resources, any;
    const char *first_source;
} az_state;

/* An objectId some dropped assignment grants an Azure role to (ID_RBAC in finish). */
#define OID_RBAC ((uintptr_t)1)

typedef struct az_ctx {
    ferry_audit *a;
    az_state *s;
    const char *path;
    const char *src; /* path, interned */
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
    if (s)
        audit_strset_init(&s->str, AZ_STR_BYTES_MAX);
    a->azure = s;
    return s;
}

static void az_release(ferry_audit *a)
{
    az_state *s = a->azure;
    if (!s)
        return;
    audit_strset_release(&s->str);
    free(s->ids);
    map_release(&s->by_app);
    map_release(&s->oids);
    map_release(&s->homes);
    map_release(&s->trusted);
    map_release(&s->tenants);
    free(s->tenant_order);
    free(s->held);
    for (size_t i = 0; i < s->n_pending; i++)
        free((char *)s->pending[i].id);
    free(s->pending);
    map_release(&s->roles);
    free(s->dirroles);
    free(s->graph);
    map_release(&s->owners);
    free(s->secrets);
    free(s->keyv);
    free(s->uamis);
    map_release(&s->uami_index);
    map_release(&s->attached);
    free(s->issuers);
    map_release(&s->fic_parents);
    free(s);
    a->azure = NULL;
}

/* Intern str (NULL gives NULL): *ret is the run's copy, valid until the state is freed. */
static int intern(az_state *s, const char *str, const char **ret)
{
    *ret = NULL;
    return str ? audit_strset_intern(&s->str, str, ret) : 0;
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

/* Add key (NULL or "" adds nothing) to a set; *ret_new (may be NULL) says it was not there. */
static int set_add_new(az_state *s, az_map *set, const char *key, bool *ret_new)
{
    const char *k;
    uintptr_t *v;
    int r;
    if (ret_new)
        *ret_new = false;
    if (!key || !*key)
        return 0;
    if ((r = intern(s, key, &k)) < 0)
        return r;
    return map_put(set, k, 1, &v, ret_new);
}

static int set_add(az_state *s, az_map *set, const char *key)
{
    return set_add_new(s, set, key, NULL);
}

/* key (not interned: looked up) is in the set. */
static bool set_has(const az_state *s, const az_map *set, const char *key)
{
    return map_get(set, strtab_find(&s->str, key)) != NULL;
}

/* A tenant of the run, for the "not evaluated" notes in order of first sight. */
static int tenant_add(az_state *s, const char *tenant)
{
    bool added;
    int r = set_add_new(s, &s->tenants, tenant, &added);
    if (r < 0 || !added)
        return r;
    if ((r = vec_room(&s->tenant_order, &s->alloc_tenants, s->n_tenants,
                      sizeof(*s->tenant_order))) < 0)
        return r;
    s->tenant_order[s->n_tenants++] = strtab_find(&s->str, tenant);
    return 0;
}

static int counted(az_state *s)
{
    if (++s->records > AZ_INDEX_MAX)
        return -FERRY_ETOOBIG;
    return 0;
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
    int r;
    *c = (az_ctx){.a = a, .path = path, .errbuf = errbuf, .errlen = errlen};
    c->s = state(a);
    if (!c->s)
        return -ENOMEM;
    c->list = doc_list(doc, &c->wrapped);
    if (!c->list)
        return ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                                "expected %s: a JSON array or a {\"value\": [...]} page", what);
    c->s->any = true;
    r = intern(c->s, path, &c->src);
    if (r == 0 && !c->s->first_source)
        c->s->first_source = c->src;
    return r;
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

/* The index in s->ids of the record of app_id (interned), created empty when new. */
static int ident(az_state *s, const char *app_id, size_t *ret)
{
    uintptr_t *v;
    bool added;
    int r;

    if ((r = vec_room(&s->ids, &s->alloc_ids, s->n_ids, sizeof(*s->ids))) < 0 ||
        (r = map_put(&s->by_app, app_id, s->n_ids, &v, &added)) < 0)
        return r;
    if (added) {
        if ((r = counted(s)) < 0)
            return r;
        s->ids[s->n_ids++] = (az_ident){.app = app_id, .owners = -1};
    }
    *ret = *v;
    return 0;
}

static void set_flag(az_ident *rec, uint32_t flag, bool on)
{
    if (on)
        rec->flags |= flag;
    else
        rec->flags &= ~flag;
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
                       const char *resource, bool *ret_static)
{
    az_state *s = c->s;
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
            r = vec_room(&s->keyv, &s->alloc_keyv, s->n_keyv, sizeof(*s->keyv));
            if (r == 0)
                r = intern(s, key_id ? key_id : "", &s->keyv[s->n_keyv]);
            if (r == 0)
                s->n_keyv++;
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

/* n owners of target (an object id, appId or display name, matched in finish): the counts
 * of all lists of one target add up. */
static int owners_add(az_state *s, const char *target, size_t n)
{
    const char *k;
    uintptr_t *v;
    bool added;
    int r = intern(s, target, &k);
    if (r == 0)
        r = map_put(&s->owners, k, 0, &v, &added);
    if (r == 0 && added)
        r = counted(s);
    if (r == 0)
        *v += n;
    return r;
}

static int owners_member(az_ctx *c, size_t i, json_t *o, const char *target)
{
    json_t *own = json_object_get(o, "owners");
    if (!own || json_is_null(own))
        return 0;
    if (!json_is_array(own))
        return elem_error(c, i, "owners", "an array of directory objects");
    return owners_add(c->s, target, json_array_size(own));
}

/* Federated credentials expanded into an application ($expand=federatedIdentityCredentials). */
static int fic_list(az_ctx *c, size_t i, json_t *o, const char *parent, const char *account,
                    az_ident *rec);

/* An object holding client secrets: the key ids from keyv[keys] on (AZ-SH-002 in finish). */
static int secret_add(az_state *s, const char *app, const char *oid, const char *account,
                      const char *source, bool application, size_t keys)
{
    int r = vec_room(&s->secrets, &s->alloc_secrets, s->n_secrets, sizeof(*s->secrets));
    if (r == 0)
        r = counted(s);
    if (r < 0)
        return r;
    s->secrets[s->n_secrets++] = (az_secret){.app = app,
                                             .oid = oid,
                                             .account = account,
                                             .source = source,
                                             .keys = keys,
                                             .n_keys = s->n_keyv - keys,
                                             .application = application};
    return 0;
}

static void settle_pending(az_state *s);

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
        r = set_add(c.s, &c.s->homes, home);
        if (r == 0)
            r = tenant_add(c.s, home);
        if (r == 0)
            r = intern(c.s, home, &home);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < json_array_size(c.list); i++) {
        const char *app_id, *oid, *name, *type = NULL, *org = NULL;
        char resource[RES_BUF];
        bool stat = false, managed, first_party, has_created;
        json_t *en;
        az_ident *rec;
        size_t idx, keys;
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
        if ((r = intern(c.s, app_id, &app_id)) < 0 || (r = intern(c.s, oid, &oid)) < 0 ||
            (r = intern(c.s, name, &name)) < 0 || (r = intern(c.s, type, &type)) < 0 ||
            (r = intern(c.s, org, &org)) < 0 || (r = ident(c.s, app_id, &idx)) < 0)
            return r;
        rec = &c.s->ids[idx];
        /* The SP's or its application's creation, whichever is known (for the grace period). */
        if (has_created && !(rec->flags & ID_CREATED)) {
            rec->created = created;
            rec->flags |= ID_CREATED;
        }
        if (sps) {
            uintptr_t *v;
            if ((r = map_put(&c.s->oids, oid, 0, &v, NULL)) < 0)
                return r;
            *v = (uintptr_t)idx << 1 | (*v & OID_RBAC);
            rec->oid = oid;
            rec->name = name ? name : rec->name;
            rec->type = type ? type : rec->type;
            rec->owner_org = org ? org : rec->owner_org;
            rec->tenant = home ? home : rec->tenant;
            rec->source = c.src;
            rec->flags |= ID_SP;
            set_flag(rec, ID_FIRST_PARTY, first_party);
            set_flag(rec, ID_DISABLED, json_is_false(en));
            sp_resource(oid, app_id, resource, sizeof(resource));
        } else {
            rec->app_oid = oid;
            rec->flags |= ID_REGISTERED;
            rec->name = rec->name ? rec->name : name;
            rec->source = rec->source ? rec->source : c.src;
            (void)snprintf(resource, sizeof(resource), "applications/%s", oid);
        }
        /* Managed identities' certificates are Azure's, and first-party apps' credentials
         * Microsoft's: nothing for the tenant to clean up. */
        if (managed || first_party)
            continue;
        keys = c.s->n_keyv;
        r = credentials(&c, i, e, "passwordCredentials", home ? home : "", resource, &stat);
        if (r == 0)
            r = credentials(&c, i, e, "keyCredentials", home ? home : "", resource, &stat);
        if (r == 0 && c.s->n_keyv > keys)
            r = secret_add(c.s, app_id, oid, home, c.src, !sps, keys);
        if (r == 0 && stat)
            c.s->ids[idx].flags |= ID_STATIC;
        if (r == 0)
            r = owners_member(&c, i, e, sps ? oid : app_id);
        if (r == 0 && !sps)
            r = fic_list(&c, i, e, resource, "", &c.s->ids[idx]);
        if (r < 0)
            return r;
    }
    /* Assignments held until their principal was known may be decided now. */
    if (sps)
        settle_pending(c.s);
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

/* The name of a role definition, by the last component of its id (lower case). */
static int role_add(az_state *s, const char *guid, const char *name)
{
    const char *g, *n;
    uintptr_t *v;
    bool added;
    int r;
    if ((r = intern(s, guid, &g)) < 0 || (r = intern(s, name, &n)) < 0 ||
        (r = map_put(&s->roles, g, 0, &v, &added)) < 0 || (added && (r = counted(s)) < 0))
        return r;
    *v = (uintptr_t)n;
    return 0;
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
        if ((r = role_add(c.s, guid, name)) < 0)
            return r;
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

/* The kind of a role by its definition GUID or the name the CLI prints; *ret_name is the
 * built-in role's name, else cli_name (may be NULL). */
static int builtin_kind(const char *guid, const char *cli_name, const char **ret_name)
{
    *ret_name = cli_name;
    for (size_t k = 0; k < ARRAY_SIZE(builtin_roles); k++)
        if (strcmp(guid, builtin_roles[k].guid) == 0 ||
            (cli_name && strcmp(cli_name, builtin_roles[k].name) == 0)) {
            *ret_name = builtin_roles[k].name;
            return builtin_roles[k].kind;
        }
    return ROLE_OTHER;
}

static bool privileged_kind(int kind)
{
    return kind == ROLE_OWNER || kind == ROLE_UAA || kind == ROLE_RBAC_ADMIN;
}

/* One role assignment. What finish would make of it is decided here when this input says
 * enough: a user's or a group's assignment is nothing to any rule, and an assignment of a
 * role that is neither privileged nor Contributor at broad scope, to a principal already in
 * an SP list, only tells that the principal holds an Azure role (OID_RBAC). The others are
 * kept: privileged ones (AZ-OP-001/002) and those to deleted principals (AZ-SH-006) in held;
 * the rest in pending, until their principal turns up (settle_pending) or the run ends. */
static int assign_add(az_ctx *c, const char *id, const char *principal, const char *ptype,
                      const char *role, const char *cli_name, const char *scope)
{
    az_state *s = c->s;
    char guid[64];
    const char *name;
    az_assign as = {.source = c->src};
    az_assign **vec;
    size_t *n, *alloc;
    bool held;
    int r;

    if (!ptype)
        as.ptype = PT_NONE;
    else if (strcmp(ptype, "ServicePrincipal") == 0)
        as.ptype = PT_SP;
    else if (strcmp(ptype, "Unknown") == 0)
        as.ptype = PT_UNKNOWN;
    else
        return 0;
    last_component(role, guid, sizeof(guid));
    r = builtin_kind(guid, cli_name, &name);
    held = as.ptype == PT_UNKNOWN || privileged_kind(r) ||
           (r == ROLE_CONTRIBUTOR && scope_level(scope) >= 1);
    if (!held) {
        uintptr_t *v = map_get(&s->oids, strtab_find(&s->str, principal));
        if (v) {
            *v |= OID_RBAC;
            return 0;
        }
    }
    vec = held ? &s->held : &s->pending;
    n = held ? &s->n_held : &s->n_pending;
    alloc = held ? &s->alloc_held : &s->alloc_pending;
    if ((r = vec_room(vec, alloc, *n, sizeof(**vec))) < 0 || (r = counted(s)) < 0 ||
        (r = intern(s, principal, &as.principal)) < 0 || (r = intern(s, guid, &as.guid)) < 0 ||
        (r = intern(s, cli_name, &as.cli_name)) < 0 || (r = intern(s, scope, &as.scope)) < 0)
        return r;
    /* Most pending assignments are settled a few inputs on: their id, unique, is not interned
     * for good but copied, and freed with the record. */
    if (held)
        r = intern(s, id, &as.id);
    else if (!(as.id = strdup(id)))
        r = -ENOMEM;
    if (r < 0)
        return r;
    as.seq = s->assign_seq++;
    (*vec)[(*n)++] = as;
    return 0;
}

/* Decide the pending assignments whose principal an SP or identity list has named since:
 * the principal holds an Azure role, and that is all finish would read of them. */
static void settle_pending(az_state *s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n_pending; i++) {
        uintptr_t *v = map_get(&s->oids, s->pending[i].principal);
        if (v) {
            *v |= OID_RBAC;
            s->records--;
            free((char *)s->pending[i].id);
            continue;
        }
        s->pending[k++] = s->pending[i];
    }
    s->n_pending = k;
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
        r = assign_add(&c, id, principal, ptype, role, rname, scope);
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

/* A privileged directory role or Graph permission assignment (strings not yet interned). */
static int grant_add(az_ctx *c, az_grant **vec, size_t *n, size_t *alloc, az_grant g)
{
    az_state *s = c->s;
    int r;
    g.source = c->src;
    if ((r = vec_room(vec, alloc, *n, sizeof(**vec))) < 0 || (r = counted(s)) < 0 ||
        (r = intern(s, g.principal, &g.principal)) < 0 || (r = intern(s, g.id, &g.id)) < 0 ||
        (r = intern(s, g.resource, &g.resource)) < 0)
        return r;
    (*vec)[(*n)++] = g;
    return 0;
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
            r = grant_add(&c, &c.s->dirroles, &c.s->n_dirroles, &c.s->alloc_dirroles,
                          (az_grant){.principal = principal,
                                     .id = id,
                                     .role = (uint8_t)k,
                                     .ptype_sp = ptype && strcmp(ptype, "#microsoft.graph."
                                                                        "servicePrincipal") == 0});
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
            r = grant_add(
                &c, &c.s->graph, &c.s->n_graph, &c.s->alloc_graph,
                (az_grant){.principal = principal, .id = id, .resource = res, .role = (uint8_t)k});
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
        const char *last_text;
        az_ident *rec;
        size_t idx;

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
        if ((r = intern(c.s, app_id, &app_id)) < 0 ||
            (r = intern(c.s,
                        have_last
                            ? json_string_value(json_object_get(
                                  json_object_get(e, "lastSignInActivity"), "lastSignInDateTime"))
                            : NULL,
                        &last_text)) < 0 ||
            (r = ident(c.s, app_id, &idx)) < 0)
            return r;
        rec = &c.s->ids[idx];
        rec->last = have_last ? last : 0;
        rec->last_text = last_text;
        rec->client = have_client ? client : 0;
        set_flag(rec, ID_LAST, have_last);
        set_flag(rec, ID_CLIENT, have_client);
        rec->flags |= ID_ACTIVITY;
        rec->activity_source = c.src;
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
        return owners_add(c.s, target, json_array_size(c.list));
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

/* A user-assigned identity (strings not yet interned), unless a resource is known to use it:
 * then it can never be orphaned, and nothing is kept. */
static int uami_add(az_ctx *c, const char *lid, const char *id, const char *name,
                    const char *account)
{
    az_state *s = c->s;
    az_uami u = {.source = c->src};
    uintptr_t *v;
    int r;

    if (set_has(s, &s->attached, lid))
        return 0;
    if ((r = vec_room(&s->uamis, &s->alloc_uamis, s->n_uamis, sizeof(*s->uamis))) < 0 ||
        (r = intern(s, lid, &u.lid)) < 0 || (r = intern(s, id, &u.id)) < 0 ||
        (r = intern(s, name, &u.name)) < 0 || (r = intern(s, account, &u.account)) < 0 ||
        (r = map_put(&s->uami_index, u.lid, UINTPTR_MAX, &v, NULL)) < 0)
        return r;
    if (*v == UINTPTR_MAX) { /* new: in order of first sight */
        if ((r = counted(s)) < 0)
            return r;
        *v = s->n_uamis++;
    }
    s->uamis[*v] = u; /* a later list's record replaces an earlier one in place */
    return 0;
}

/* A resource uses the user-assigned identity lid (lower case): it is not orphaned. */
static int attach(az_state *s, const char *lid)
{
    uintptr_t *v;
    bool added;
    int r = set_add_new(s, &s->attached, lid, &added);
    if (r < 0 || !added)
        return r;
    if ((r = counted(s)) < 0)
        return r;
    v = map_get(&s->uami_index, strtab_find(&s->str, lid));
    if (v && *v != UINTPTR_MAX) {
        s->uamis[*v].lid = NULL;
        *v = UINTPTR_MAX;
        s->dead_uamis++;
        s->records--;
    }
    return 0;
}

/* Close the gaps attach() left in uamis (order kept). */
static void compact_uamis(az_state *s)
{
    size_t k = 0;
    if (!s->dead_uamis)
        return;
    for (size_t i = 0; i < s->n_uamis; i++) {
        if (!s->uamis[i].lid)
            continue;
        s->uamis[k] = s->uamis[i];
        *map_get(&s->uami_index, s->uamis[k].lid) = k;
        k++;
    }
    s->n_uamis = k;
    s->dead_uamis = 0;
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
        const char *id, *client, *oid, *tenant, *name, *ilid;
        char lid[RES_BUF], account[RES_BUF];
        az_ident *rec;
        uintptr_t *v;
        size_t idx;

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
        if (tenant && ((r = tenant_add(c.s, tenant)) < 0 ||
                       (is_guid(tenant) && (r = set_add(c.s, &c.s->homes, tenant)) < 0)))
            return r;
        lower_copy(id, lid, sizeof(lid));
        scope_account(id, account, sizeof(account));
        if ((r = uami_add(&c, lid, id, name, account)) < 0 ||
            (r = intern(c.s, client, &client)) < 0 || (r = intern(c.s, oid, &oid)) < 0 ||
            (r = intern(c.s, name, &name)) < 0 || (r = intern(c.s, tenant, &tenant)) < 0 ||
            (r = intern(c.s, lid, &ilid)) < 0 || (r = ident(c.s, client, &idx)) < 0 ||
            (r = map_put(&c.s->oids, oid, 0, &v, NULL)) < 0)
            return r;
        *v = (uintptr_t)idx << 1 | (*v & OID_RBAC);
        rec = &c.s->ids[idx];
        rec->uami = ilid;
        rec->oid = oid;
        rec->name = name ? name : rec->name;
        rec->type = "ManagedIdentity";
        rec->tenant = tenant ? tenant : rec->tenant;
        rec->source = rec->source ? rec->source : c.src;
        rec->flags |= ID_SP;
    }
    settle_pending(c.s);
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
            if ((r = attach(c.s, lid)) < 0)
                return r;
        }
    }
    compact_uamis(c.s);
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

/* Append iss to the issuer list *ref (1 + index in s->issuers; 0: none yet, made here). Only
 * the first AZ_ISSUERS are kept: the identity notes read no more. */
static int issuer_push(az_state *s, uintptr_t *ref, const char *iss)
{
    az_issuers *l;
    int r;
    if (!*ref) {
        if ((r = vec_room(&s->issuers, &s->alloc_issuers, s->n_issuers, sizeof(*s->issuers))) < 0 ||
            (r = counted(s)) < 0)
            return r;
        s->issuers[s->n_issuers++] = (az_issuers){.n = 0};
        *ref = s->n_issuers;
    }
    l = &s->issuers[*ref - 1];
    if (l->n >= AZ_ISSUERS)
        return 0;
    r = intern(s, iss, &l->v[l->n]);
    if (r == 0)
        l->n++;
    return r;
}

static int one_fic(az_ctx *c, size_t i, json_t *f, const char *member, const char *parent,
                   const char *account, az_ident *rec)
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
    /* The issuers are for the shadow-identity notes, which only --policies reads (set before
     * the first input; audit_identity_note keeps nothing without them). */
    if (rec && c->a->shadow) {
        uintptr_t ref = rec->issuers;
        r = issuer_push(c->s, &ref, iss);
        rec->issuers = (uint32_t)ref;
        if (r < 0)
            return r;
    }
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
                    az_ident *rec)
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
        const char *id, *iss, *iowner;
        char account[RES_BUF] = "", owner[RES_BUF] = "";
        uintptr_t *ref, list;
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
        /* The issuers, for the identity notes once the owner's record is known (as above,
         * only with --policies). */
        iss = arm_str(e, "issuer");
        if (!owner[0] || !a->shadow)
            continue;
        if ((r = intern(c.s, owner, &iowner)) < 0 ||
            (r = map_put(&c.s->fic_parents, iowner, 0, &ref, NULL)) < 0)
            return r;
        list = *ref;
        r = issuer_push(c.s, &list, iss);
        *map_get(&c.s->fic_parents, iowner) = list;
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- decisions at the end of the run -------------------------------------------------------- */

/* The identity record of a service principal object id (interned or NULL), or NULL. */
static az_ident *by_oid(az_state *s, const char *oid)
{
    uintptr_t *v = map_get(&s->oids, oid);
    return v ? &s->ids[*v >> 1] : NULL;
}

static bool third_party(const az_state *s, const az_ident *rec)
{
    const char *org = rec->owner_org;
    char l[64];
    if (!org || !is_guid(org) || (rec->type && strcmp(rec->type, "ManagedIdentity") == 0))
        return false;
    if (rec->flags & (ID_FIRST_PARTY | ID_REGISTERED))
        return false;
    lower_copy(org, l, sizeof(l));
    return !map_get(&s->homes, org) && !set_has(s, &s->homes, l) && !set_has(s, &s->trusted, l);
}

/* The kind of an assignment's role, and its name: the built-in one, the CLI's, or the name of
 * a role definition seen in the run (NULL when none). */
static int role_kind(const az_state *s, const az_assign *as, const char **ret_name)
{
    int kind = builtin_kind(as->guid, as->cli_name, ret_name);
    uintptr_t *v;
    if (!*ret_name && (v = map_get(&s->roles, as->guid)))
        *ret_name = (const char *)*v;
    return kind;
}

static int assignment_rules(az_ctx *c)
{
    az_state *s = c->s;
    size_t h = 0, p = 0;
    int r = 0;
    bool have_sps = s->oids.n > 0;

    /* The principals of the assignments decided while loading hold an Azure role. */
    for (size_t i = 0; i < s->oids.cap; i++) {
        const az_entry *e = &s->oids.e[i];
        if (e->key && (e->val & OID_RBAC) && !(s->ids[e->val >> 1].flags & ID_FIRST_PARTY))
            s->ids[e->val >> 1].flags |= ID_RBAC;
    }
    /* The kept ones in the order they were loaded, which decides which of two inputs naming
     * one assignment its finding comes from. */
    while (h < s->n_held || p < s->n_pending) {
        const az_assign *as =
            p == s->n_pending || (h < s->n_held && s->held[h].seq < s->pending[p].seq)
                ? &s->held[h++]
                : &s->pending[p++];
        const char *ptype = as->ptype == PT_SP        ? "ServicePrincipal"
                            : as->ptype == PT_UNKNOWN ? "Unknown"
                                                      : NULL;
        const char *rname;
        az_ident *rec = by_oid(s, as->principal);
        char account[RES_BUF], resource[RES_BUF], key[KEY_BUF];
        int kind = role_kind(s, as, &rname);
        int lvl = scope_level(as->scope);
        bool sp = ptype ? as->ptype == PT_SP : rec != NULL;
        json_t *ev;

        scope_account(as->scope, account, sizeof(account));
        (void)snprintf(key, sizeof(key), "role=%s;scope=%s", as->guid, as->scope);
        lower_copy(key, key, sizeof(key));
        if (as->ptype == PT_UNKNOWN || (sp && have_sps && !rec)) {
            r = emit(c, "AZ-SH-006", -1, account, as->id,
                     json_pack("{s:s, s:s?, s:s, s:s?, s:s}", "principal_id", as->principal,
                               "principal_type", ptype, "role_id", as->guid, "role", rname, "scope",
                               as->scope),
                     "deleted-principal", as->source);
            if (r < 0)
                return r;
            continue;
        }
        if (!sp || (rec && (rec->flags & ID_FIRST_PARTY)))
            continue;
        if (rec)
            rec->flags |= ID_RBAC;
        sp_resource(as->principal, NULL, resource, sizeof(resource));
        ev = json_pack("{s:s, s:s?, s:s, s:s, s:s, s:s, s:s?, s:s?}", "role_id", as->guid, "role",
                       rname, "scope", as->scope, "scope_level", scope_names[lvl], "assignment",
                       as->id, "principal_type", rec && rec->type ? rec->type : "ServicePrincipal",
                       "app_id", rec ? rec->app : NULL, "display_name", rec ? rec->name : NULL);
        if (!ev)
            return -ENOMEM;
        if (privileged_kind(kind)) {
            if (rec)
                rec->flags |= ID_PRIVILEGED | (lvl >= 1 ? ID_TIER0 : 0);
            r = emit(c, "AZ-OP-001", lvl >= 1 ? FERRY_AUDIT_CRITICAL : FERRY_AUDIT_HIGH, account,
                     resource, json_incref(ev), key, as->source);
        } else if (kind == ROLE_CONTRIBUTOR && lvl >= 1) {
            r = emit(c, "AZ-OP-002", -1, account, resource, json_incref(ev), key, as->source);
        }
        json_decref(ev);
        if (r < 0)
            return r;
    }
    return 0;
}

/* AZ-OP-004 (directory: the directory roles) or AZ-OP-005 (the Graph permissions). */
static int graph_rules(az_ctx *c, const az_grant *list, size_t n, bool directory)
{
    az_state *s = c->s;
    int r;

    for (size_t i = 0; i < n; i++) {
        const az_grant *g = &list[i];
        az_ident *rec = by_oid(s, g->principal);
        const char *guid =
            directory ? tier0_directory_roles[g->role].guid : privileged_graph_roles[g->role].guid;
        const char *name =
            directory ? tier0_directory_roles[g->role].name : privileged_graph_roles[g->role].name;
        char resource[RES_BUF], key[KEY_BUF];
        bool is_sp = rec || g->ptype_sp || !directory;
        if (!is_sp || (rec && (rec->flags & ID_FIRST_PARTY)))
            continue;
        if (rec)
            rec->flags |= ID_PRIVILEGED | ID_TIER0 | ID_ENTRA;
        sp_resource(g->principal, NULL, resource, sizeof(resource));
        (void)snprintf(key, sizeof(key), "role=%s", guid);
        r = emit(c, directory ? "AZ-OP-004" : "AZ-OP-005", -1, rec ? rec->tenant : "", resource,
                 json_pack("{s:s, s:s, s:s?, s:s?, s:s?, s:s?}", "role", name, "role_id", guid,
                           "assignment", g->id, "resource", g->resource, "app_id",
                           rec ? rec->app : NULL, "display_name", rec ? rec->name : NULL),
                 key, g->source);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Owner counts onto the identity records, matching object id, appId or display name. */
static void resolve_owners(az_state *s)
{
    for (size_t i = 0; i < s->owners.cap; i++) {
        const char *t = s->owners.e[i].key;
        az_ident *rec;
        uintptr_t *v;
        if (!t)
            continue;
        rec = by_oid(s, t);
        if (!rec && (v = map_get(&s->by_app, t)))
            rec = &s->ids[*v];
        for (size_t k = 0; !rec && k < s->n_ids; k++) {
            const char *ao = s->ids[k].app_oid, *nm = s->ids[k].name;
            if ((ao && strcasecmp(ao, t) == 0) || (nm && strcmp(nm, t) == 0))
                rec = &s->ids[k];
        }
        if (!rec)
            continue; /* an owner list of an object no input describes */
        rec->owners = (rec->owners < 0 ? 0 : rec->owners) + (int64_t)s->owners.e[i].val;
    }
}

static int principal_rules(az_ctx *c)
{
    az_state *s = c->s;
    ferry_audit *a = c->a;
    int64_t now = audit_now(a), unused = (int64_t)a->opts.unused_days * DAY;
    int r;

    for (size_t i = 0; i < s->n_ids; i++) {
        const az_ident *rec = &s->ids[i];
        const char *tenant = rec->tenant ? rec->tenant : "", *src = rec->source;
        char resource[RES_BUF];
        bool managed = rec->type && strcmp(rec->type, "ManagedIdentity") == 0;
        bool third = third_party(s, rec), rbac = rec->flags & ID_RBAC;

        if (rec->flags & ID_FIRST_PARTY)
            continue;
        sp_resource(rec->oid, rec->app, resource, sizeof(resource));
        if (third && (rbac || (rec->flags & ID_ENTRA))) {
            r = emit(c, "AZ-TR-001", -1, tenant, resource,
                     json_pack("{s:s, s:s?, s:s, s:b, s:b}", "app_id", rec->app, "display_name",
                               rec->name, "app_owner_tenant", rec->owner_org, "azure_rbac", rbac,
                               "entra_privileged", (rec->flags & ID_ENTRA) != 0),
                     "third-party", src);
            if (r < 0)
                return r;
        }
        if ((rec->flags & ID_SP) && !managed && !third && rec->owners >= 0) {
            bool priv = rec->flags & ID_PRIVILEGED;
            if (priv ? rec->owners > 0 : rec->owners == 0) {
                r = emit(
                    c, "AZ-SH-008", priv ? FERRY_AUDIT_HIGH : FERRY_AUDIT_LOW, tenant, resource,
                    json_pack("{s:s, s:s?, s:I, s:b, s:s}", "app_id", rec->app, "display_name",
                              rec->name, "owners", (json_int_t)rec->owners, "privileged", priv,
                              "problem", priv ? "privileged principal with owners" : "no owners"),
                    priv ? "privileged-owned" : "unowned", src);
                if (r < 0)
                    return r;
            }
        }
        if ((rec->flags & ID_ACTIVITY) && !(rec->flags & ID_DISABLED)) {
            const char *asrc = rec->activity_source;
            bool young =
                (rec->flags & ID_CREATED) && now - rec->created < (int64_t)a->opts.grace_days * DAY;
            bool inactive = !young && (!(rec->flags & ID_LAST) || now - rec->last > unused);
            if (inactive) {
                r = emit(c, "AZ-SH-001", -1, tenant, resource,
                         json_pack("{s:s, s:s?, s:s?, s:i}", "app_id", rec->app, "display_name",
                                   rec->name, "last_sign_in", rec->last_text, "unused_days",
                                   (int)a->opts.unused_days),
                         "inactive", asrc);
            } else if (!young && rbac &&
                       (!(rec->flags & ID_CLIENT) || now - rec->client > unused)) {
                r = emit(c, "AZ-OP-006", -1, tenant, resource,
                         json_pack("{s:s, s:s?, s:s, s:i}", "app_id", rec->app, "display_name",
                                   rec->name, "unused",
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

/* AZ-SH-002 is "client secret present": the key ids are of passwordCredentials only. */
static int secret_rules(az_ctx *c)
{
    az_state *s = c->s;
    int r;
    for (size_t i = 0; i < s->n_secrets; i++) {
        const az_secret *sec = &s->secrets[i];
        uintptr_t *v = map_get(&s->by_app, sec->app);
        bool tier0 = v && (s->ids[*v].flags & ID_TIER0);
        char resource[RES_BUF];
        json_t *keys = json_array();

        for (size_t k = 0; keys && k < sec->n_keys; k++)
            if (json_array_append_new(keys, json_string(s->keyv[sec->keys + k])) < 0) {
                json_decref(keys);
                keys = NULL;
            }
        if (!keys)
            return -ENOMEM;
        (void)snprintf(resource, sizeof(resource), "%s/%s",
                       sec->application ? "applications" : "servicePrincipals", sec->oid);
        r = emit(c, "AZ-SH-002", tier0 ? FERRY_AUDIT_CRITICAL : -1, sec->account, resource,
                 json_pack("{s:s, s:O, s:I, s:b}", "app_id", sec->app, "key_ids", keys, "count",
                           (json_int_t)sec->n_keys, "tier0", tier0),
                 "client-secret", sec->source);
        json_decref(keys);
        if (r < 0)
            return r;
    }
    return 0;
}

static int uami_rules(az_ctx *c)
{
    az_state *s = c->s;
    int r;
    if (!s->have_resources)
        return 0;
    for (size_t i = 0; i < s->n_uamis; i++) {
        const az_uami *u = &s->uamis[i];
        if (!u->lid || map_get(&s->attached, u->lid))
            continue;
        r = emit(c, "AZ-SH-007", -1, u->account, u->id,
                 json_pack("{s:s?, s:s}", "name", u->name, "attached_to", "nothing"), "orphaned",
                 u->source);
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
    int r;

    for (size_t n = 0; n < ARRAY_SIZE(notes); n++) {
        if (notes[n].signins ? s->have_signins : s->have_cred_signins)
            continue;
        if (!s->n_tenants) {
            r = emit(c, notes[n].rule, FERRY_AUDIT_INFO, "", "tenants/unknown",
                     json_pack("{s:b, s:s}", "evaluated", 0, "reason", notes[n].reason),
                     "not-evaluated", s->first_source);
            if (r < 0)
                return r;
            continue;
        }
        for (size_t k = 0; k < s->n_tenants; k++) {
            const char *t = s->tenant_order[k];
            char resource[RES_BUF];
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

/* The issuer list named by the lower case form of owner (an application object id or a
 * user-assigned identity id), or NULL. */
static const az_issuers *fic_issuers(const az_state *s, const char *owner)
{
    char l[RES_BUF];
    uintptr_t *v;
    if (!owner)
        return NULL;
    lower_copy(owner, l, sizeof(l));
    v = map_get(&s->fic_parents, strtab_find(&s->str, l));
    return v && *v ? &s->issuers[*v - 1] : NULL;
}

static int identity_notes(az_ctx *c)
{
    az_state *s = c->s;
    ferry_audit *a = c->a;
    int64_t now = audit_now(a), unused = (int64_t)a->opts.unused_days * DAY;
    int r;

    for (size_t i = 0; i < s->n_ids; i++) {
        const az_ident *rec = &s->ids[i];
        const char *iss[AZ_ISSUERS + 1] = {NULL};
        const az_issuers *lists[3] = {
            rec->issuers ? &s->issuers[rec->issuers - 1] : NULL,
            fic_issuers(s, rec->app_oid),
            fic_issuers(s, rec->uami),
        };
        audit_identity id = {.cloud = CLOUD, .id = rec->app};
        size_t n = 0;

        if (!(rec->flags & (ID_SP | ID_REGISTERED)))
            continue; /* only seen in sign-in data */
        id.account = rec->tenant ? rec->tenant : "";
        id.alias = rec->oid;
        id.source = rec->source;
        if (rec->flags & ID_STATIC)
            id.flags |= AUDIT_ID_STATIC_CRED;
        if (rec->flags & ID_FIRST_PARTY)
            id.flags |= AUDIT_ID_MANAGED;
        if (rec->flags & ID_DISABLED)
            id.flags |= AUDIT_ID_DISABLED;
        if (rec->flags & ID_ACTIVITY)
            id.flags |= (rec->flags & ID_LAST) && now - rec->last <= unused ? AUDIT_ID_USED
                                                                            : AUDIT_ID_UNUSED;
        for (size_t pass = 0; pass < ARRAY_SIZE(lists); pass++)
            for (size_t k = 0; lists[pass] && k < lists[pass]->n && n < AZ_ISSUERS; k++)
                iss[n++] = lists[pass]->v[k];
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
    resolve_owners(c.s);
    r = assignment_rules(&c);
    if (r == 0)
        r = graph_rules(&c, c.s->dirroles, c.s->n_dirroles, true);
    if (r == 0)
        r = graph_rules(&c, c.s->graph, c.s->n_graph, false);
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
    return set_add(s, &s->trusted, l);
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
