/* tests/unit/test_audit_azure.c - the Azure loaders and rules of the audit module
 * (src/lib/audit/azure.c, docs/internals/audit.md "Azure").
 *
 * Every AZ rule has a positive and a negative case on small inline exports; detection of each
 * loader in its CLI, ARM REST and Graph page shapes; errors name the element, the member and
 * the line; the usage rules leave one "not evaluated" note per tenant without sign-in data.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "audit-internal.h"
#include "ferry/audit.h"
#include "ferry/error.h"
#include "ferry/policy.h"

#define NOW INT64_C(1790000000) /* 2026-09-21T14:13:20Z */

#define TENANT "72f988bf-0000-4000-8000-000000000001"
#define SUB "00000000-1111-2222-3333-444444444444"
#define SUBSCOPE "/subscriptions/" SUB
#define OWNER "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
#define UAA "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"
#define RBACADMIN "f58310d9-a9f6-439a-9e8d-f62e7b41a168"
#define CONTRIB "b24988ac-6180-42a0-ab88-20f7382dd24c"
#define READER "acdd72a7-3385-48ef-bd42-f606fba81ae7"
#define MSFT "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
#define VENDOR "0dd00000-0000-4000-8000-00000000beef"

/* One service principal of `az ad sp list`. n: 1..9 (appId 1111...n, objectId aaaa...n). */
static char *sp(int n, const char *type, const char *org, const char *audience, const char *pw,
                const char *keys)
{
    char *s = NULL;
    cr_assert(asprintf(&s,
                       "{\"appId\": \"11111111-aaaa-4bbb-8ccc-00000000000%d\", \"id\": "
                       "\"aaaaaaaa-0000-4000-8000-00000000000%d\", \"displayName\": \"sp%d\", "
                       "\"servicePrincipalType\": \"%s\", \"appOwnerOrganizationId\": %s%s%s, "
                       "\"signInAudience\": %s%s%s, \"accountEnabled\": true, "
                       "\"passwordCredentials\": [%s], \"keyCredentials\": [%s]}",
                       n, n, n, type, org ? "\"" : "", org ? org : "null", org ? "\"" : "",
                       audience ? "\"" : "", audience ? audience : "null", audience ? "\"" : "",
                       pw ? pw : "", keys ? keys : "") > 0);
    return s;
}

/* A home-tenant application SP (its tenant is TENANT). */
static char *home_sp(int n, const char *pw)
{
    return sp(n, "Application", TENANT, "AzureADMyOrg", pw, NULL);
}

/* A list of elements, as a bare array or a Graph page; frees the elements. */
static char *list(bool page, int count, ...)
{
    char *out = strdup(page ? "{\"@odata.context\": \"x\", \"value\": [" : "[");
    va_list ap;
    va_start(ap, count);
    for (int i = 0; i < count; i++) {
        char *e = va_arg(ap, char *), *n = NULL;
        cr_assert(asprintf(&n, "%s%s%s", out, i ? ", " : "", e) > 0);
        free(out);
        free(e);
        out = n;
    }
    va_end(ap);
    char *n = NULL;
    cr_assert(asprintf(&n, "%s]%s", out, page ? "}" : "") > 0);
    free(out);
    return n;
}

static char *assignment(int n, const char *principal, const char *ptype, const char *role,
                        const char *scope)
{
    char *s = NULL;
    cr_assert(asprintf(&s,
                       "{\"id\": \"%s/providers/Microsoft.Authorization/roleAssignments/"
                       "e100000%d\", \"principalId\": \"%s\", \"principalType\": \"%s\", "
                       "\"roleDefinitionId\": \"" SUBSCOPE
                       "/providers/Microsoft.Authorization/roleDefinitions/%s\", \"scope\": "
                       "\"%s\"}",
                       scope, n, principal, ptype, role, scope) > 0);
    return s;
}

static char *dup(const char *s)
{
    char *d = strdup(s);
    cr_assert_not_null(d);
    return d;
}

#define OID(n) "aaaaaaaa-0000-4000-8000-00000000000" #n
#define APPID(n) "11111111-aaaa-4bbb-8ccc-00000000000" #n
#define SPRES(n) "servicePrincipals/" OID(n)

static ferry_audit *run_new(void)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    cr_assert_eq(ferry_audit_new(&o, &a), 0);
    return a;
}

/* Add each (name, text) pair (texts are freed), then finish. NULL ends the list. */
static ferry_audit *run(ferry_audit *a, ...)
{
    va_list ap;
    const char *name;
    char err[512] = "";
    if (!a)
        a = run_new();
    va_start(ap, a);
    while ((name = va_arg(ap, const char *)) != NULL) {
        char *text = va_arg(ap, char *);
        cr_assert_eq(ferry_audit_add_input(a, name, text, strlen(text), NULL, err, sizeof(err)), 0,
                     "%s: %s", name, err);
        free(text);
    }
    va_end(ap);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
    return a;
}

/* Number of findings of rule on resource (NULL: any) at severity (-1: any). */
static size_t count(ferry_audit *a, const char *rule, const char *resource, int sev)
{
    const ferry_audit_finding *fs;
    size_t n = ferry_audit_findings(a, &fs), k = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(fs[i].rule_id, rule) == 0 &&
            (!resource || strcmp(fs[i].resource, resource) == 0) &&
            (sev < 0 || (int)fs[i].severity == sev))
            k++;
    return k;
}

static const ferry_audit_finding *get(ferry_audit *a, const char *rule, const char *resource)
{
    const ferry_audit_finding *fs;
    size_t n = ferry_audit_findings(a, &fs);
    for (size_t i = 0; i < n; i++)
        if (strcmp(fs[i].rule_id, rule) == 0 && strcmp(fs[i].resource, resource) == 0)
            return &fs[i];
    return NULL;
}

/* The error of one input. */
static int fail(const char *name, const char *text, char *err, size_t errlen)
{
    ferry_audit *a = run_new();
    int r = ferry_audit_add_input(a, name, text, strlen(text), NULL, err, errlen);
    ferry_audit_free(a);
    return r;
}

/* ---- detection ------------------------------------------------------------------------------ */

Test(audit_azure, every_loader_detected_and_named)
{
    static const struct {
        const char *format, *text;
    } cases[] = {
        {"azure-sp",
         "[{\"appId\": \"x\", \"id\": \"y\", \"servicePrincipalType\": \"Application\"}]"},
        {"azure-app", "{\"value\": [{\"appId\": \"x\", \"id\": \"y\", \"signInAudience\": "
                      "\"AzureADMyOrg\"}]}"},
        {"azure-role-assignments", "[{\"id\": \"/a\", \"principalId\": \"p\", "
                                   "\"roleDefinitionId\": \"/r/x\", \"scope\": \"/\"}]"},
        {"azure-role-assignments", "{\"value\": [{\"id\": \"/a\", \"properties\": "
                                   "{\"principalId\": \"p\", \"roleDefinitionId\": \"/r/x\", "
                                   "\"scope\": \"/\"}}]}"},
        {"azure-role-definitions", "[{\"id\": \"/r/x\", \"roleName\": \"n\", \"roleType\": "
                                   "\"BuiltInRole\", \"permissions\": []}]"},
        {"azure-role-definitions", "{\"value\": [{\"id\": \"/r/x\", \"properties\": {\"roleName\": "
                                   "\"n\", \"type\": \"BuiltInRole\", \"permissions\": []}}]}"},
        {"azure-signins", "{\"value\": [{\"appId\": \"x\", \"lastSignInActivity\": null}]}"},
        {"azure-cred-signins", "{\"value\": [{\"keyId\": \"k\", \"signInActivity\": null}]}"},
        {"azure-directory-roles", "{\"value\": [{\"principalId\": \"p\", \"roleDefinitionId\": "
                                  "\"r\", \"directoryScopeId\": \"/\"}]}"},
        {"azure-app-role-assignments", "{\"value\": [{\"principalId\": \"p\", \"appRoleId\": "
                                       "\"r\", \"resourceId\": \"g\"}]}"},
        {"azure-identities", "[{\"id\": \"/subscriptions/s/rg/x\", \"clientId\": \"c\", "
                             "\"principalId\": \"p\", \"tenantId\": \"t\", \"type\": "
                             "\"Microsoft.ManagedIdentity/userAssignedIdentities\"}]"},
        {"azure-federated-creds", "[{\"id\": \"f\", \"issuer\": "
                                  "\"https://token.actions.githubusercontent.com\", \"subject\": "
                                  "\"repo:o/r:environment:prod\"}]"},
        {"azure-owners", "[{\"@odata.type\": \"#microsoft.graph.user\", \"id\": \"u\"}]"},
        {"azure-owners", "[{\"id\": \"x\", \"owners\": []}]"},
        {"azure-resources", "[{\"id\": \"/subscriptions/s/x\", \"type\": \"Microsoft.Web/sites\", "
                            "\"location\": \"westeurope\"}]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ferry_audit *a = run_new();
        char err[512] = "", *out = NULL;
        cr_assert_eq(ferry_audit_add_input(a, "in.json", cases[i].text, strlen(cases[i].text), NULL,
                                           err, sizeof(err)),
                     0, "%s: %s", cases[i].format, err);
        cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0);
        cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_JSON, &out, NULL), 0);
        json_t *doc = json_loads(out, 0, NULL);
        cr_assert_str_eq(json_string_value(json_object_get(
                             json_array_get(json_object_get(doc, "inputs"), 0), "format")),
                         cases[i].format, "case %zu", i);
        cr_assert(ferry_audit_format_known(cases[i].format));
        json_decref(doc);
        free(out);
        ferry_audit_free(a);
    }
}

/* ---- AZ-OP-001 / AZ-OP-002 ----------------------------------------------------------------- */

Test(audit_azure, op001_owner_uaa_rbac_admin_by_scope)
{
    ferry_audit *a = run(
        NULL, "sp.json",
        list(false, 4, home_sp(1, NULL), home_sp(2, NULL),
             sp(3, "ManagedIdentity", NULL, NULL, NULL, NULL), home_sp(4, NULL)),
        "ra.json",
        list(false, 4, assignment(1, OID(1), "ServicePrincipal", OWNER, SUBSCOPE),
             assignment(2, OID(2), "ServicePrincipal", RBACADMIN, SUBSCOPE "/resourceGroups/rg"),
             assignment(3, OID(3), "ServicePrincipal", UAA,
                        "/providers/Microsoft.Management/managementGroups/mg1"),
             assignment(4, OID(4), "ServicePrincipal", READER, SUBSCOPE)),
        NULL);
    cr_assert_eq(count(a, "AZ-OP-001", SPRES(1), FERRY_AUDIT_CRITICAL), 1);
    cr_assert_eq(count(a, "AZ-OP-001", SPRES(2), FERRY_AUDIT_HIGH), 1);
    cr_assert_eq(count(a, "AZ-OP-001", SPRES(3), FERRY_AUDIT_CRITICAL), 1);
    cr_assert_eq(count(a, "AZ-OP-001", SPRES(4), -1), 0); /* Reader */
    const ferry_audit_finding *f = get(a, "AZ-OP-001", SPRES(1));
    cr_assert_str_eq(f->account, SUB);
    cr_assert(strstr(f->evidence, "\"role\":\"Owner\""));
    cr_assert(strstr(f->evidence, "\"scope_level\":\"subscription\""));
    cr_assert(
        strstr(get(a, "AZ-OP-001", SPRES(3))->evidence, "\"principal_type\":\"ManagedIdentity\""));
    ferry_audit_free(a);
}

Test(audit_azure, op001_not_for_users_nor_first_party)
{
    ferry_audit *a =
        run(NULL, "sp.json",
            list(false, 2, home_sp(1, NULL),
                 sp(2, "Application", MSFT, "AzureADMultipleOrgs", NULL, NULL)),
            "ra.json",
            list(false, 2,
                 assignment(1, "99999999-0000-4000-8000-000000000009", "User", OWNER, SUBSCOPE),
                 assignment(2, OID(2), "ServicePrincipal", OWNER, SUBSCOPE)),
            NULL);
    cr_assert_eq(count(a, "AZ-OP-001", NULL, -1), 0);
    cr_assert_eq(count(a, "AZ-SH-006", NULL, -1), 0);
    ferry_audit_free(a);
}

Test(audit_azure, op001_by_cli_role_name_and_op002_contributor)
{
    /* The CLI's roleDefinitionName names the role even when the GUID is not the built-in's. */
    char *ra =
        dup("[{\"id\": \"/subscriptions/s/providers/Microsoft.Authorization/"
            "roleAssignments/1\", \"principalId\": \"" OID(
                1) "\", \"principalType\": "
                   "\"ServicePrincipal\", \"roleDefinitionId\": \"/x/roleDefinitions/"
                   "18d7d88d-0000-0000-0000-000000000000\", \"roleDefinitionName\": \"User Access "
                   "Administrator\", \"scope\": \"" SUBSCOPE "\"}]");
    ferry_audit *a =
        run(NULL, "ra.json", ra, "ra2.json",
            list(false, 2, assignment(2, OID(2), "ServicePrincipal", CONTRIB, SUBSCOPE),
                 assignment(3, OID(3), "ServicePrincipal", CONTRIB, SUBSCOPE "/resourceGroups/rg")),
            NULL);
    cr_assert_eq(count(a, "AZ-OP-001", SPRES(1), FERRY_AUDIT_CRITICAL), 1);
    cr_assert_eq(count(a, "AZ-OP-002", SPRES(2), FERRY_AUDIT_HIGH), 1);
    cr_assert_eq(count(a, "AZ-OP-002", SPRES(3), -1), 0); /* below subscription */
    ferry_audit_free(a);
}

Test(audit_azure, arm_and_cli_assignment_same_fingerprint)
{
    char *arm =
        dup("{\"value\": [{\"id\": \"" SUBSCOPE
            "/providers/Microsoft.Authorization/roleAssignments/e1000001\", "
            "\"properties\": {\"principalId\": \"" OID(
                1) "\", \"principalType\": "
                   "\"ServicePrincipal\", \"roleDefinitionId\": \"/providers/"
                   "Microsoft.Authorization/roleDefinitions/" OWNER "\", \"scope\": \"" SUBSCOPE
                   "\", \"createdOn\": \"2024-03-01T10:05:00.0000000Z\"}}]}");
    ferry_audit *a = run(NULL, "arm.json", arm, NULL);
    ferry_audit *b =
        run(NULL, "cli.json",
            list(false, 1, assignment(1, OID(1), "ServicePrincipal", OWNER, SUBSCOPE)), NULL);
    cr_assert_str_eq(get(a, "AZ-OP-001", SPRES(1))->fingerprint,
                     get(b, "AZ-OP-001", SPRES(1))->fingerprint);
    ferry_audit_free(a);
    ferry_audit_free(b);
}

/* ---- AZ-OP-003 ------------------------------------------------------------------------------ */

Test(audit_azure, op003_custom_role_wildcards)
{
    char *cli = dup(
        "[{\"id\": \"" SUBSCOPE "/providers/Microsoft.Authorization/roleDefinitions/c1\", "
        "\"roleName\": \"star\", \"roleType\": \"CustomRole\", \"assignableScopes\": [\"" SUBSCOPE
        "\"], \"permissions\": [{\"actions\": [\"*\"], \"notActions\": []}]},"
        " {\"id\": \"" SUBSCOPE "/providers/Microsoft.Authorization/roleDefinitions/c2\", "
        "\"roleName\": \"grant\", \"roleType\": \"CustomRole\", \"assignableScopes\": [\"" SUBSCOPE
        "/resourceGroups/rg\"], \"permissions\": [{\"actions\": [\"Microsoft.Compute/*/read\", "
        "\"Microsoft.Authorization/roleAssignments/write\"]}]},"
        " {\"id\": \"" SUBSCOPE "/providers/Microsoft.Authorization/roleDefinitions/c3\", "
        "\"roleName\": \"narrow\", \"roleType\": \"CustomRole\", \"assignableScopes\": [\"" SUBSCOPE
        "\"], \"permissions\": [{\"actions\": [\"Microsoft.Compute/virtualMachines/read\"]}]},"
        " {\"id\": \"/providers/Microsoft.Authorization/roleDefinitions/" CONTRIB "\", "
        "\"roleName\": \"Contributor\", \"roleType\": \"BuiltInRole\", \"assignableScopes\": "
        "[\"/\"], \"permissions\": [{\"actions\": [\"*\"]}]}]");
    char *arm = dup("{\"value\": [{\"id\": \"" SUBSCOPE
                    "/providers/Microsoft.Authorization/roleDefinitions/c4\", \"type\": "
                    "\"Microsoft.Authorization/roleDefinitions\", \"properties\": {\"roleName\": "
                    "\"armstar\", \"type\": \"CustomRole\", \"assignableScopes\": [\"" SUBSCOPE
                    "/resourceGroups/rg\"], \"permissions\": [{\"actions\": [\"*/write\"]}]}}]}");
    ferry_audit *a = run(NULL, "defs.json", cli, "arm.json", arm, NULL);
    const char *base = SUBSCOPE "/providers/Microsoft.Authorization/roleDefinitions/";
    char r[256];
    snprintf(r, sizeof(r), "%sc1", base);
    cr_assert_eq(count(a, "AZ-OP-003", r, FERRY_AUDIT_CRITICAL), 1);
    cr_assert_str_eq(get(a, "AZ-OP-003", r)->account, SUB);
    snprintf(r, sizeof(r), "%sc2", base);
    cr_assert_eq(count(a, "AZ-OP-003", r, FERRY_AUDIT_HIGH), 1);
    cr_assert(strstr(get(a, "AZ-OP-003", r)->evidence, "roleAssignments/write"));
    snprintf(r, sizeof(r), "%sc3", base);
    cr_assert_eq(count(a, "AZ-OP-003", r, -1), 0);
    snprintf(r, sizeof(r), "%sc4", base);
    cr_assert_eq(count(a, "AZ-OP-003", r, FERRY_AUDIT_HIGH), 1);
    cr_assert_eq(count(a, "AZ-OP-003", NULL, -1), 3); /* not the built-in Contributor */
    ferry_audit_free(a);
}

/* ---- AZ-OP-004 / AZ-OP-005 ------------------------------------------------------------------ */

Test(audit_azure, op004_tier0_directory_role)
{
    char *roles = dup(
        "{\"value\": ["
        "{\"id\": \"r1\", \"principalId\": \"" OID(
            1) "\", \"roleDefinitionId\": "
               "\"62e90394-69f5-4237-9190-012177145e10\", \"directoryScopeId\": \"/\"},"
               "{\"id\": \"r2\", \"principalId\": \"" OID(
                   2) "\", \"roleDefinitionId\": "
                      "\"88d8e3e3-8f55-4a1e-953a-9b9898b8876b\", \"directoryScopeId\": \"/\"},"
                      "{\"id\": \"r3\", \"principalId\": \"99999999-0000-4000-8000-000000000009\","
                      " \"roleDefinitionId\": \"e8611ab8-c189-46e8-94e1-60213ab1f814\", "
                      "\"directoryScopeId\": \"/\"}]}");
    ferry_audit *a = run(NULL, "sp.json", list(false, 2, home_sp(1, NULL), home_sp(2, NULL)),
                         "roles.json", roles, NULL);
    cr_assert_eq(count(a, "AZ-OP-004", SPRES(1), FERRY_AUDIT_CRITICAL), 1);
    cr_assert(strstr(get(a, "AZ-OP-004", SPRES(1))->evidence, "Global Administrator"));
    cr_assert_eq(count(a, "AZ-OP-004", NULL, -1), 1); /* Directory Readers; a user */
    ferry_audit_free(a);
}

Test(audit_azure, op005_privileged_graph_permission)
{
    char *ara =
        dup("{\"value\": ["
            "{\"id\": \"x1\", \"principalId\": \"" OID(
                1) "\", \"principalType\": "
                   "\"ServicePrincipal\", \"appRoleId\": \"9e3f62cf-ca93-4989-b6ce-bf83c28f9fe8\","
                   " \"resourceId\": \"g\", \"resourceDisplayName\": \"Microsoft Graph\"},"
                   "{\"id\": \"x2\", \"principalId\": \"" OID(
                       2) "\", \"principalType\": "
                          "\"ServicePrincipal\", \"appRoleId\": "
                          "\"df021288-bdef-4463-88db-98f22de89214\","
                          " \"resourceId\": \"g\"}]}");
    ferry_audit *a = run(NULL, "ara.json", ara, NULL);
    cr_assert_eq(count(a, "AZ-OP-005", SPRES(1), FERRY_AUDIT_CRITICAL), 1);
    cr_assert(
        strstr(get(a, "AZ-OP-005", SPRES(1))->evidence, "RoleManagement.ReadWrite.Directory"));
    cr_assert_eq(count(a, "AZ-OP-005", SPRES(2), -1), 0); /* User.Read.All */
    ferry_audit_free(a);
}

/* ---- sign-ins: AZ-SH-001, AZ-OP-006, and the notes without them --------------------------- */

static char *signin(int n, const char *last, const char *client)
{
    char *s = NULL;
    cr_assert(
        asprintf(&s,
                 "{\"appId\": \"" APPID(0) "\", \"lastSignInActivity\": "
                                           "{\"lastSignInDateTime\": %s%s%s}, "
                                           "\"applicationAuthenticationClientSignInActivity\": "
                                           "{\"lastSignInDateTime\": %s%s%s}}",
                 last ? "\"" : "", last ? last : "null", last ? "\"" : "", client ? "\"" : "",
                 client ? client : "null", client ? "\"" : "") > 0);
    s[strlen("{\"appId\": \"11111111-aaaa-4bbb-8ccc-00000000000")] = (char)('0' + n);
    return s;
}

Test(audit_azure, sh001_inactive_and_op006_unused_rbac)
{
    ferry_audit *a =
        run(NULL, "sp.json", list(false, 3, home_sp(1, NULL), home_sp(2, NULL), home_sp(3, NULL)),
            "ra.json",
            list(false, 2, assignment(2, OID(2), "ServicePrincipal", READER, SUBSCOPE),
                 assignment(3, OID(3), "ServicePrincipal", READER, SUBSCOPE)),
            "signins.json",
            list(true, 3, signin(1, "2025-01-09T03:00:00Z", "2025-01-09T03:00:00Z"),
                 signin(2, "2026-09-01T00:00:00.1234567Z", "2025-02-01T00:00:00Z"),
                 signin(3, "2026-09-01T00:00:00Z", "2026-09-01T00:00:00Z")),
            NULL);
    cr_assert_eq(count(a, "AZ-SH-001", SPRES(1), FERRY_AUDIT_MEDIUM), 1);
    cr_assert_eq(count(a, "AZ-SH-001", NULL, -1), 1);
    cr_assert_eq(count(a, "AZ-OP-006", SPRES(2), FERRY_AUDIT_MEDIUM), 1);
    cr_assert_eq(count(a, "AZ-OP-006", NULL, -1), 1); /* sp3 uses its roles; sp1 is SH-001 */
    cr_assert_eq(count(a, "AZ-SH-005", "tenants/" TENANT, FERRY_AUDIT_INFO), 1);
    ferry_audit_free(a);
}

Test(audit_azure, sh001_grace_period_for_new_principals)
{
    char *young = home_sp(1, NULL), *old = home_sp(2, NULL);
    /* sp1 was created two days ago and has not signed in yet; sp2 a year ago. */
    char *y = NULL, *o = NULL;
    cr_assert(asprintf(&y, "{\"createdDateTime\": \"2026-09-19T10:00:00Z\", %s", young + 1) > 0);
    cr_assert(asprintf(&o, "{\"createdDateTime\": \"2025-09-19T10:00:00Z\", %s", old + 1) > 0);
    free(young);
    free(old);
    ferry_audit *a = run(NULL, "sp.json", list(false, 2, y, o), "signins.json",
                         list(true, 2, signin(1, NULL, NULL), signin(2, NULL, NULL)), NULL);
    cr_assert_eq(count(a, "AZ-SH-001", SPRES(1), -1), 0);
    cr_assert_eq(count(a, "AZ-SH-001", SPRES(2), FERRY_AUDIT_MEDIUM), 1);
    ferry_audit_free(a);
}

Test(audit_azure, usage_rules_not_evaluated_once_per_tenant)
{
    ferry_audit *a = run(NULL, "sp.json", list(false, 2, home_sp(1, NULL), home_sp(2, NULL)),
                         "sp2.json", list(true, 1, home_sp(3, NULL)), NULL);
    const char *rules[] = {"AZ-OP-006", "AZ-SH-001", "AZ-SH-005"};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(count(a, rules[i], NULL, -1), 1, "%s", rules[i]);
        const ferry_audit_finding *f = get(a, rules[i], "tenants/" TENANT);
        cr_assert_not_null(f);
        cr_assert_eq(f->severity, FERRY_AUDIT_INFO);
        cr_assert(strstr(f->evidence, "\"evaluated\":false"));
    }
    ferry_audit_free(a);
}

/* ---- credentials: AZ-SH-002..005 ----------------------------------------------------------- */

#define PW(id, start, end)                                                                         \
    "{\"keyId\": \"" id "\", \"startDateTime\": \"" start "\", \"endDateTime\": \"" end            \
    "\", \"hint\": \"Q~a\", \"secretText\": null}"
#define CERT(id, start, end)                                                                       \
    "{\"keyId\": \"" id "\", \"startDateTime\": \"" start "\", \"endDateTime\": \"" end            \
    "\", \"type\": \"AsymmetricX509Cert\", \"usage\": \"Verify\"}"

Test(audit_azure, sh002_secret_and_tier0_escalation)
{
    ferry_audit *a =
        run(NULL, "sp.json",
            list(false, 3, home_sp(1, PW("k1", "2026-06-01T00:00:00Z", "2027-01-01T00:00:00Z")),
                 home_sp(2, PW("k2", "2026-06-01T00:00:00Z", "2027-01-01T00:00:00Z")),
                 sp(3, "Application", TENANT, "AzureADMyOrg", NULL,
                    CERT("c3", "2026-06-01T00:00:00Z", "2027-01-01T00:00:00Z"))),
            "ra.json", list(false, 1, assignment(1, OID(1), "ServicePrincipal", OWNER, SUBSCOPE)),
            NULL);
    cr_assert_eq(count(a, "AZ-SH-002", SPRES(1), FERRY_AUDIT_CRITICAL), 1);
    cr_assert_eq(count(a, "AZ-SH-002", SPRES(2), FERRY_AUDIT_MEDIUM), 1);
    cr_assert_eq(count(a, "AZ-SH-002", SPRES(3), -1), 0); /* a certificate is not a secret */
    cr_assert(strstr(get(a, "AZ-SH-002", SPRES(2))->evidence, "\"key_ids\":[\"k2\"]"));
    cr_assert_null(strstr(get(a, "AZ-SH-002", SPRES(2))->evidence, "Q~a"));
    ferry_audit_free(a);
}

Test(audit_azure, sh003_long_lived_and_sh004_expired_or_expiring)
{
    ferry_audit *a =
        run(NULL, "sp.json",
            list(false, 4, home_sp(1, PW("k1", "2019-05-01T00:00:00Z", "2299-12-31T00:00:00Z")),
                 home_sp(2, PW("k2", "2026-06-01T00:00:00Z", "2027-06-01T00:00:00Z")),
                 sp(3, "Application", TENANT, "AzureADMyOrg", NULL,
                    CERT("c3", "2022-01-01T00:00:00Z", "2024-01-01T00:00:00Z")),
                 home_sp(4, PW("k4", "2026-01-01T00:00:00+00:00", "2026-10-01T00:00:00+00:00"))),
            NULL);
    cr_assert_eq(count(a, "AZ-SH-003", SPRES(1), FERRY_AUDIT_MEDIUM), 1);
    cr_assert(strstr(get(a, "AZ-SH-003", SPRES(1))->evidence, "2299-12-31"));
    cr_assert_eq(count(a, "AZ-SH-003", SPRES(2), -1), 0); /* 365 days */
    cr_assert_eq(count(a, "AZ-SH-003", SPRES(3), -1), 0); /* expired: SH-004's */
    cr_assert_eq(count(a, "AZ-SH-004", SPRES(3), FERRY_AUDIT_LOW), 1);
    cr_assert(strstr(get(a, "AZ-SH-004", SPRES(3))->evidence, "\"state\":\"expired\""));
    cr_assert_eq(count(a, "AZ-SH-004", SPRES(4), FERRY_AUDIT_LOW), 1);
    cr_assert(strstr(get(a, "AZ-SH-004", SPRES(4))->evidence, "\"state\":\"expiring\""));
    cr_assert_eq(count(a, "AZ-SH-004", SPRES(1), -1), 0);
    cr_assert_eq(count(a, "AZ-SH-004", SPRES(2), -1), 0);
    ferry_audit_free(a);
}

Test(audit_azure, credentials_of_managed_identities_and_first_party_are_azures)
{
    ferry_audit *a = run(NULL, "sp.json",
                         list(false, 2,
                              sp(1, "ManagedIdentity", NULL, NULL, NULL,
                                 CERT("c1", "2022-01-01T00:00:00Z", "2024-01-01T00:00:00Z")),
                              sp(2, "Application", MSFT, "AzureADMultipleOrgs",
                                 PW("k2", "2019-05-01T00:00:00Z", "2299-12-31T00:00:00Z"), NULL)),
                         NULL);
    cr_assert_eq(count(a, "AZ-SH-002", NULL, -1), 0);
    cr_assert_eq(count(a, "AZ-SH-003", NULL, -1), 0);
    cr_assert_eq(count(a, "AZ-SH-004", NULL, -1), 0);
    ferry_audit_free(a);
}

Test(audit_azure, sh002_on_applications)
{
    char *apps = dup("[{\"appId\": \"" APPID(
        5) "\", \"id\": \"bbbbbbbb-0000-4000-8000-000000000005\","
           " \"displayName\": \"app5\", \"signInAudience\": \"AzureADMyOrg\", "
           "\"passwordCredentials\": [" PW("k5", "2026-06-01T00:00:00Z",
                                           "2026-12-01T00:00:00Z") "]}]");
    ferry_audit *a = run(NULL, "apps.json", apps, NULL);
    cr_assert_eq(count(a, "AZ-SH-002", "applications/bbbbbbbb-0000-4000-8000-000000000005",
                       FERRY_AUDIT_MEDIUM),
                 1);
    ferry_audit_free(a);
}

Test(audit_azure, sh005_unused_credential)
{
    char *cs =
        dup("{\"value\": ["
            "{\"id\": \"a\", \"keyId\": \"k1\", \"appId\": \"" APPID(
                1) "\", \"appObjectId\": "
                   "\"bbbbbbbb-0000-4000-8000-000000000001\", \"servicePrincipalObjectId\": \"" OID(
                       1) "\", "
                          "\"credentialOrigin\": \"application\", \"expirationDateTime\": "
                          "\"2027-01-01T00:00:00Z\", "
                          "\"signInActivity\": {\"lastSignInDateTime\": \"2026-01-01T00:00:00Z\"}},"
                          "{\"id\": \"b\", \"keyId\": \"k2\", \"appId\": \"" APPID(
                              2) "\", "
                                 "\"servicePrincipalObjectId\": \"" OID(
                                     2) "\", \"credentialOrigin\": \"servicePrincipal\", "
                                        "\"signInActivity\": {\"lastSignInDateTime\": "
                                        "\"2026-09-01T00:00:00Z\"}},"
                                        "{\"id\": \"c\", \"keyId\": \"k3\", \"appId\": \"" APPID(
                                            3) "\", "
                                               "\"servicePrincipalObjectId\": \"" OID(
                                                   3) "\", \"expirationDateTime\": "
                                                      "\"2025-01-01T00:00:00Z\", "
                                                      "\"signInActivity\": null}]}");
    ferry_audit *a = run(NULL, "cred.json", cs, NULL);
    cr_assert_eq(count(a, "AZ-SH-005", "applications/bbbbbbbb-0000-4000-8000-000000000001",
                       FERRY_AUDIT_MEDIUM),
                 1);
    cr_assert_eq(count(a, "AZ-SH-005", SPRES(2), -1), 0); /* used 20 days ago */
    cr_assert_eq(count(a, "AZ-SH-005", SPRES(3), -1), 0); /* expired */
    cr_assert_eq(count(a, "AZ-SH-005", NULL, FERRY_AUDIT_INFO), 0);
    ferry_audit_free(a);
}

/* ---- AZ-SH-006 ------------------------------------------------------------------------------ */

Test(audit_azure, sh006_deleted_principal)
{
    ferry_audit *a = run(NULL, "sp.json", list(false, 1, home_sp(1, NULL)), "ra.json",
                         list(false, 3,
                              assignment(1, "ffffffff-dead-4000-8000-000000000005", "Unknown",
                                         CONTRIB, SUBSCOPE "/resourceGroups/rg-old"),
                              assignment(2, OID(7), "ServicePrincipal", READER, SUBSCOPE),
                              assignment(3, OID(1), "ServicePrincipal", READER, SUBSCOPE)),
                         NULL);
    cr_assert_eq(count(a, "AZ-SH-006",
                       SUBSCOPE "/resourceGroups/rg-old/providers/Microsoft.Authorization/"
                                "roleAssignments/e1000001",
                       FERRY_AUDIT_MEDIUM),
                 1);
    cr_assert_eq(count(a, "AZ-SH-006",
                       SUBSCOPE "/providers/Microsoft.Authorization/roleAssignments/e1000002",
                       FERRY_AUDIT_MEDIUM),
                 1); /* not in the SP export */
    cr_assert_eq(count(a, "AZ-SH-006", NULL, -1), 2);
    ferry_audit_free(a);

    /* Without the directory export only principalType Unknown says "deleted". */
    a = run(NULL, "ra.json",
            list(false, 1, assignment(2, OID(7), "ServicePrincipal", READER, SUBSCOPE)), NULL);
    cr_assert_eq(count(a, "AZ-SH-006", NULL, -1), 0);
    ferry_audit_free(a);
}

/* ---- AZ-SH-007 ------------------------------------------------------------------------------ */

#define UAMI(name)                                                                                 \
    "{\"id\": \"" SUBSCOPE "/resourcegroups/rg/providers/Microsoft.ManagedIdentity/"               \
    "userAssignedIdentities/" name "\", \"name\": \"" name "\", \"clientId\": \"" APPID(           \
        8) "\", "                                                                                  \
           "\"principalId\": \"" OID(8) "\", \"tenantId\": \"" TENANT "\", \"type\": "             \
                                        "\"Microsoft.ManagedIdentity/userAssignedIdentities\", "   \
                                        "\"location\": \"westeurope\"}"

Test(audit_azure, sh007_orphaned_uami)
{
    const char *used = SUBSCOPE "/resourcegroups/rg/providers/Microsoft.ManagedIdentity/"
                                "userAssignedIdentities/id-used";
    char *res = NULL;
    cr_assert(asprintf(&res,
                       "[{\"id\": \"" SUBSCOPE
                       "/resourceGroups/rg/providers/Microsoft.Web/sites/w\","
                       " \"type\": \"Microsoft.Web/sites\", \"location\": \"westeurope\", "
                       "\"identity\": {\"type\": \"UserAssigned\", \"userAssignedIdentities\": "
                       "{\"%s\": {}}}}]",
                       "/subscriptions/" SUB "/resourceGroups/rg/providers/"
                       "Microsoft.ManagedIdentity/userAssignedIdentities/id-used") > 0);
    char *ids = dup("[" UAMI("id-used") ", " UAMI("id-orphan") "]");
    ferry_audit *a = run(NULL, "ids.json", ids, "res.json", res, NULL);
    cr_assert_eq(count(a, "AZ-SH-007",
                       SUBSCOPE "/resourcegroups/rg/providers/Microsoft.ManagedIdentity/"
                                "userAssignedIdentities/id-orphan",
                       FERRY_AUDIT_LOW),
                 1);
    cr_assert_eq(count(a, "AZ-SH-007", used, -1), 0);
    ferry_audit_free(a);

    /* Without resource data nothing can be called orphaned. */
    a = run(NULL, "ids.json", dup("[" UAMI("id-orphan") "]"), NULL);
    cr_assert_eq(count(a, "AZ-SH-007", NULL, -1), 0);
    ferry_audit_free(a);
}

/* ---- AZ-SH-008 ------------------------------------------------------------------------------ */

Test(audit_azure, sh008_unowned_and_privileged_with_owners)
{
    char *owners = dup("[{\"id\": \"" OID(
        1) "\", \"owners\": []},"
           " {\"id\": \"" OID(2) "\", \"owners\": [{\"@odata.type\": "
                                 "\"#microsoft.graph.user\", \"id\": \"u1\"}]},"
                                 " {\"id\": \"" OID(3) "\", \"owners\": [{\"id\": \"u1\"}]}]");
    ferry_audit *a =
        run(NULL, "sp.json",
            list(false, 4, home_sp(1, NULL), home_sp(2, NULL), home_sp(3, NULL), home_sp(4, NULL)),
            "ra.json", list(false, 1, assignment(2, OID(2), "ServicePrincipal", OWNER, SUBSCOPE)),
            "owners.json", owners, NULL);
    cr_assert_eq(count(a, "AZ-SH-008", SPRES(1), FERRY_AUDIT_LOW), 1);
    cr_assert_eq(count(a, "AZ-SH-008", SPRES(2), FERRY_AUDIT_HIGH), 1);
    cr_assert_eq(count(a, "AZ-SH-008", SPRES(3), -1), 0); /* owned, not privileged */
    cr_assert_eq(count(a, "AZ-SH-008", SPRES(4), -1), 0); /* no owner data */
    ferry_audit_free(a);
}

Test(audit_azure, sh008_owner_list_named_by_file)
{
    char *owners = dup("[{\"@odata.type\": \"#microsoft.graph.user\", \"id\": \"u1\", "
                       "\"userPrincipalName\": \"alice@example.com\"}]");
    ferry_audit *a = run(NULL, "sp.json", list(false, 1, home_sp(1, NULL)), "ra.json",
                         list(false, 1, assignment(1, OID(1), "ServicePrincipal", UAA, SUBSCOPE)),
                         "dir/az_ad_sp_owner_list_sp1.json", owners, NULL);
    cr_assert_eq(count(a, "AZ-SH-008", SPRES(1), FERRY_AUDIT_HIGH), 1);
    ferry_audit_free(a);
}

/* ---- AZ-TR-001 ------------------------------------------------------------------------------ */

Test(audit_azure, tr001_third_party_with_privileges)
{
    ferry_audit *a = run(NULL, "sp.json",
                         list(false, 4, home_sp(1, NULL),
                              sp(2, "Application", VENDOR, "AzureADMultipleOrgs", NULL, NULL),
                              sp(3, "Application", VENDOR, "AzureADMultipleOrgs", NULL, NULL),
                              sp(4, "Application", TENANT, "AzureADMultipleOrgs", NULL, NULL)),
                         "ra.json",
                         list(false, 3, assignment(1, OID(1), "ServicePrincipal", READER, SUBSCOPE),
                              assignment(2, OID(2), "ServicePrincipal", READER, SUBSCOPE),
                              assignment(4, OID(4), "ServicePrincipal", READER, SUBSCOPE)),
                         NULL);
    cr_assert_eq(count(a, "AZ-TR-001", SPRES(2), FERRY_AUDIT_HIGH), 1);
    cr_assert(strstr(get(a, "AZ-TR-001", SPRES(2))->evidence, VENDOR));
    cr_assert_eq(count(a, "AZ-TR-001", NULL, -1), 1); /* sp3 holds nothing; sp1, sp4 are ours */
    ferry_audit_free(a);

    /* A trusted vendor is not a third party. */
    a = run_new();
    cr_assert_eq(ferry_audit_azure_trust_tenant(a, "0DD00000-0000-4000-8000-00000000BEEF"), 0);
    cr_assert_eq(ferry_audit_azure_trust_tenant(a, "not-a-guid"), -EINVAL);
    a = run(a, "sp.json",
            list(false, 2, home_sp(1, NULL),
                 sp(2, "Application", VENDOR, "AzureADMultipleOrgs", NULL, NULL)),
            "ra.json", list(false, 1, assignment(2, OID(2), "ServicePrincipal", READER, SUBSCOPE)),
            NULL);
    cr_assert_eq(count(a, "AZ-TR-001", NULL, -1), 0);
    ferry_audit_free(a);
}

Test(audit_azure, tr001_entra_privileges_count_too)
{
    char *ara = dup("{\"value\": [{\"id\": \"x1\", \"principalId\": \"" OID(
        2) "\", "
           "\"principalType\": \"ServicePrincipal\", \"appRoleId\": "
           "\"06b708a9-e830-4db3-a914-8e69da51d44f\", \"resourceId\": \"g\"}]}");
    ferry_audit *a = run(NULL, "sp.json",
                         list(false, 2, home_sp(1, NULL),
                              sp(2, "Application", VENDOR, "AzureADMultipleOrgs", NULL, NULL)),
                         "ara.json", ara, NULL);
    cr_assert_eq(count(a, "AZ-TR-001", SPRES(2), FERRY_AUDIT_HIGH), 1);
    cr_assert_eq(count(a, "AZ-OP-005", SPRES(2), FERRY_AUDIT_CRITICAL), 1);
    ferry_audit_free(a);
}

/* ---- AZ-TR-002 ------------------------------------------------------------------------------ */

Test(audit_azure, tr002_federated_credentials)
{
    char *fics =
        dup("{\"@odata.context\": \"https://graph.microsoft.com/v1.0/$metadata#applications("
            "'bbbbbbbb-0000-4000-8000-000000000001')/federatedIdentityCredentials\", \"value\": ["
            "{\"id\": \"f1\", \"name\": \"prs\", \"issuer\": "
            "\"https://token.actions.githubusercontent.com\", \"subject\": "
            "\"repo:org/app:pull_request\","
            " \"audiences\": [\"api://AzureADTokenExchange\"]},"
            "{\"id\": \"f2\", \"name\": \"prod\", \"issuer\": "
            "\"https://token.actions.githubusercontent.com\", \"subject\": "
            "\"repo:org/app:environment:prod\", \"audiences\": [\"api://AzureADTokenExchange\"]},"
            "{\"id\": \"f3\", \"name\": \"odd\", \"issuer\": \"https://issuer.example.net\", "
            "\"subject\": \"svc\", \"audiences\": [\"api://AzureADTokenExchange\"]},"
            "{\"id\": \"f4\", \"name\": \"flex\", \"issuer\": "
            "\"https://token.actions.githubusercontent.com\", \"claimsMatchingExpression\": "
            "{\"value\": \"claims['sub'] matches 'repo:org/*'\", \"languageVersion\": 1}}]}");
    char *uami = dup("[{\"id\": \"" SUBSCOPE "/resourceGroups/rg/providers/"
                     "Microsoft.ManagedIdentity/userAssignedIdentities/id1/"
                     "federatedIdentityCredentials/aks\", \"name\": \"aks\", \"issuer\": "
                     "\"https://westeurope.oic.prod-aks.azure.com/" TENANT "/abc/\", "
                     "\"subject\": \"system:serviceaccount:ns:sa\", \"audiences\": "
                     "[\"api://AzureADTokenExchange\"]}]");
    ferry_audit *a = run(NULL, "fic.json", fics, "uami-fic.json", uami, NULL);
    const char *p = "applications/bbbbbbbb-0000-4000-8000-000000000001/"
                    "federatedIdentityCredentials/";
    char r[256];
    snprintf(r, sizeof(r), "%sf1", p);
    cr_assert_eq(count(a, "AZ-TR-002", r, FERRY_AUDIT_HIGH), 1);
    cr_assert(strstr(get(a, "AZ-TR-002", r)->evidence, "any pull request"));
    snprintf(r, sizeof(r), "%sf2", p);
    cr_assert_eq(count(a, "AZ-TR-002", r, -1), 0);
    snprintf(r, sizeof(r), "%sf3", p);
    cr_assert_eq(count(a, "AZ-TR-002", r, FERRY_AUDIT_HIGH), 1);
    cr_assert(strstr(get(a, "AZ-TR-002", r)->evidence, "unknown issuer"));
    snprintf(r, sizeof(r), "%sf4", p);
    cr_assert_eq(count(a, "AZ-TR-002", r, FERRY_AUDIT_HIGH), 1);
    cr_assert_eq(count(a, "AZ-TR-002", NULL, -1), 3); /* the AKS credential is pinned */
    ferry_audit_free(a);
}

/* ---- errors --------------------------------------------------------------------------------- */

Test(audit_azure, errors_name_element_member_and_line)
{
    char err[512];
    cr_assert_eq(fail("sp.json",
                      "[\n{\"appId\": \"a\", \"id\": \"o\", \"servicePrincipalType\": \"x\"},\n"
                      "  {\"id\": \"o2\", \"servicePrincipalType\": \"x\"}\n]",
                      err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert_str_eq(err, "sp.json:3: element[1].appId: expected an appId string", "%s", err);

    cr_assert_eq(
        fail("ra.json",
             "{\"value\": [\n {\"id\": \"/a\", \"properties\": {\"principalId\": "
             "\"p\", \"roleDefinitionId\": \"/r\", \"scope\": \"/\"}},\n {\"id\": "
             "\"/b\", \"properties\": {\"roleDefinitionId\": \"/r\", \"scope\": \"/\"}}\n]}",
             err, sizeof(err)),
        -FERRY_EMALFORMED);
    cr_assert(strstr(err, "ra.json:3: value[1].properties.principalId: expected a principalId "
                          "string"),
              "%s", err);

    cr_assert_eq(fail("sp.json",
                      "[{\"appId\": \"a\", \"id\": \"o\", \"servicePrincipalType\": \"A\",\n"
                      " \"passwordCredentials\": [{\"keyId\": \"k\",\n"
                      " \"endDateTime\": \"someday\"}]}]",
                      err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert(strstr(err, "sp.json:3: element[0].passwordCredentials.0.endDateTime: expected a "
                          "date"),
              "%s", err);

    cr_assert_eq(fail("defs.json",
                      "[{\"id\": \"/r/x\", \"roleName\": \"n\", \"roleType\": \"CustomRole\", "
                      "\"permissions\": [\"*\"]}]",
                      err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert(strstr(err, "permissions: expected an array of {actions"), "%s", err);

    /* A second element of another type in a list detected by its first. */
    cr_assert_eq(fail("sig.json",
                      "{\"value\": [{\"appId\": \"a\", \"lastSignInActivity\": null},"
                      " [1]]}",
                      err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert(strstr(err, "value[1]: expected an object"), "%s", err);

    /* Truncated JSON: the parser's position. */
    cr_assert_eq(fail("sp.json", "[{\"appId\": \"a\", \"id\": \"o\",\n \"servicePrincipalType\"",
                      err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert(strncmp(err, "sp.json:2:", 10) == 0, "%s", err);

    /* --format with a document that is not a list. */
    ferry_audit *a = run_new();
    cr_assert_eq(ferry_audit_add_input(a, "x.json", "{\"a\": 1}", 8, "azure-sp", err, sizeof(err)),
                 -FERRY_EMALFORMED);
    cr_assert(strstr(err, "x.json: expected az ad sp list output"), "%s", err);
    ferry_audit_free(a);
}

Test(audit_azure, identifiers_longer_than_the_limits_are_errors)
{
    /* Resources and fingerprints are built from identifiers: a cut one could merge two
     * principals, so an overlong one is refused rather than truncated. */
    char long_id[400], *text = NULL, err[512];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    cr_assert(asprintf(&text,
                       "[{\"appId\": \"x\", \"id\": \"%s\", \"servicePrincipalType\": "
                       "\"Application\"}]",
                       long_id) > 0);
    cr_assert_eq(fail("sp.json", text, err, sizeof(err)), -FERRY_EMALFORMED);
    cr_assert(strstr(err, "element[0].id: expected a string of at most 256 bytes"), "%s", err);
    free(text);
}

Test(audit_azure, empty_page_with_format_is_fine)
{
    ferry_audit *a = run_new();
    char err[256];
    cr_assert_eq(ferry_audit_add_input(a, "o.json", "[]", 2, "azure-owners", err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0);
    ferry_audit_free(a);
}

/* ---- the cross-file state (azure.c: interned strings, records decided at load) --------------- */

/* s, then the printf-formatted text: the result is new and s freed. */
static char *append(char *s, const char *fmt, ...) _printf_(2, 3);
static char *append(char *s, const char *fmt, ...)
{
    char *t = NULL, *n = NULL;
    va_list ap;
    va_start(ap, fmt);
    cr_assert(vasprintf(&t, fmt, ap) > 0);
    va_end(ap);
    cr_assert(asprintf(&n, "%s%s", s ? s : "", t) > 0);
    free(s);
    free(t);
    return n;
}

/* Thousands of principals: the run's string table grows through several slot arrays and arena
 * chunks, and every record still reads back its own strings (no two ids merged, none lost). */
Test(audit_azure, state_many_principals_keep_their_own_strings)
{
    enum { N = 3000 };
    char *sps = NULL, *ras = NULL, res[128], want[256];
    const ferry_audit_finding *f;
    ferry_audit *a;

    for (int n = 0; n < N; n++) {
        sps = append(sps,
                     "%s{\"appId\": \"21111111-aaaa-4bbb-8ccc-%012d\", \"id\": "
                     "\"2aaaaaaa-0000-4000-8000-%012d\", \"displayName\": \"sp-%d\", "
                     "\"servicePrincipalType\": \"Application\", \"appOwnerOrganizationId\": "
                     "\"" TENANT "\", \"signInAudience\": \"AzureADMyOrg\", "
                     "\"passwordCredentials\": [" PW("k-%d", "2026-06-01T00:00:00Z",
                                                     "2027-01-01T00:00:00Z") "]}",
                     n ? ", " : "[", n, n, n, n);
        ras = append(ras,
                     "%s{\"id\": \"" SUBSCOPE "/resourceGroups/rg-%d/providers/"
                     "Microsoft.Authorization/roleAssignments/e%d\", \"principalId\": "
                     "\"2aaaaaaa-0000-4000-8000-%012d\", \"principalType\": \"ServicePrincipal\", "
                     "\"roleDefinitionId\": \"/x/%s\", \"scope\": \"" SUBSCOPE
                     "/resourceGroups/rg-%d\"}",
                     n ? ", " : "[", n, n, n, n % 2 ? OWNER : READER, n);
    }
    sps = append(sps, "]");
    ras = append(ras, "]");
    /* The assignments first: the Reader ones wait for the SP list, which settles them. */
    a = run(NULL, "ra.json", ras, "sp.json", sps, NULL);
    cr_assert_eq(count(a, "AZ-OP-001", NULL, FERRY_AUDIT_HIGH), N / 2);
    cr_assert_eq(count(a, "AZ-SH-002", NULL, FERRY_AUDIT_MEDIUM), N);
    cr_assert_eq(count(a, "AZ-SH-006", NULL, -1), 0);
    for (int n = 0; n < N; n += 7) {
        (void)snprintf(res, sizeof(res), "servicePrincipals/2aaaaaaa-0000-4000-8000-%012d", n);
        f = get(a, "AZ-SH-002", res);
        cr_assert_not_null(f, "%s", res);
        (void)snprintf(want, sizeof(want),
                       "\"app_id\":\"21111111-aaaa-4bbb-8ccc-%012d\",\"count\":1,"
                       "\"key_ids\":[\"k-%d\"]",
                       n, n);
        cr_assert(strstr(f->evidence, want), "%s", f->evidence);
        cr_assert_str_eq(f->source, "sp.json");
        f = get(a, "AZ-OP-001", res);
        if (n % 2 == 0) {
            cr_assert_null(f);
            continue;
        }
        cr_assert_not_null(f, "%s", res);
        (void)snprintf(want, sizeof(want), "\"display_name\":\"sp-%d\"", n);
        cr_assert(strstr(f->evidence, want), "%s", f->evidence);
        (void)snprintf(want, sizeof(want), "roleAssignments/e%d\"", n);
        cr_assert(strstr(f->evidence, want), "%s", f->evidence);
        cr_assert_str_eq(f->source, "ra.json");
    }
    ferry_audit_free(a);
}

/* An input's path is interned once, even when longer than a chunk of the table. */
Test(audit_azure, state_long_input_path_is_the_source)
{
    size_t n = 40000;
    char *path = malloc(n + 1);
    ferry_audit *a;

    cr_assert_not_null(path);
    memset(path, 'd', n);
    memcpy(path + n - 8, "/sp.json", 9);
    a = run(NULL, path,
            list(false, 1, home_sp(1, PW("k1", "2026-06-01T00:00:00Z", "2027-01-01T00:00:00Z"))),
            "ra.json", list(false, 1, assignment(1, OID(1), "ServicePrincipal", OWNER, SUBSCOPE)),
            NULL);
    cr_assert_str_eq(get(a, "AZ-SH-002", SPRES(1))->source, path);
    cr_assert_str_eq(get(a, "AZ-OP-001", SPRES(1))->source, "ra.json");
    ferry_audit_free(a);
    free(path);
}

/* Assignments loaded before the SP list: the Reader one of the vendor's SP is settled when the
 * list names its principal (it still makes the SP's Azure role count for AZ-TR-001), the one of
 * a principal the list lacks stays, and is AZ-SH-006 at the end; a user's is nothing. */
Test(audit_azure, state_assignments_before_the_sp_list)
{
    ferry_audit *a = run(NULL, "ra.json",
                         list(false, 3, assignment(2, OID(2), "ServicePrincipal", READER, SUBSCOPE),
                              assignment(7, OID(7), "ServicePrincipal", READER, SUBSCOPE),
                              assignment(8, OID(8), "User", OWNER, SUBSCOPE)),
                         "sp.json",
                         list(false, 2, home_sp(1, NULL),
                              sp(2, "Application", VENDOR, "AzureADMultipleOrgs", NULL, NULL)),
                         NULL);
    cr_assert_eq(count(a, "AZ-TR-001", SPRES(2), FERRY_AUDIT_HIGH), 1);
    cr_assert_eq(count(a, "AZ-SH-006",
                       SUBSCOPE "/providers/Microsoft.Authorization/roleAssignments/e1000007", -1),
                 1);
    cr_assert_eq(count(a, "AZ-SH-006", NULL, -1), 1);
    cr_assert_eq(count(a, "AZ-OP-001", NULL, -1), 0);
    ferry_audit_free(a);
}

/* One assignment of a deleted principal in two inputs, once of a role only its id names (kept
 * for AZ-SH-006 alone) and once named Owner by the CLI (kept as privileged): the finding is
 * the first input's, whichever way it was kept. */
#define DELETED_RA(name)                                                                           \
    "[{\"id\": \"" SUBSCOPE "/providers/Microsoft.Authorization/roleAssignments/e9\", "            \
    "\"principalId\": \"" OID(                                                                     \
        7) "\", \"principalType\": \"ServicePrincipal\", "                                         \
           "\"roleDefinitionId\": \"/x/dddddddd-0000-4000-8000-000000000001\", \"scope\": "        \
           "\"" SUBSCOPE "\"" name "}]"

Test(audit_azure, state_one_assignment_in_two_inputs_first_input_wins)
{
    const char *res = SUBSCOPE "/providers/Microsoft.Authorization/roleAssignments/e9";
    ferry_audit *a =
        run(NULL, "sp.json", list(false, 1, home_sp(1, NULL)), "ra1.json", dup(DELETED_RA("")),
            "ra2.json", dup(DELETED_RA(", \"roleDefinitionName\": \"Owner\"")), NULL);
    cr_assert_eq(count(a, "AZ-SH-006", NULL, -1), 1);
    cr_assert_str_eq(get(a, "AZ-SH-006", res)->source, "ra1.json");
    cr_assert(strstr(get(a, "AZ-SH-006", res)->evidence, "\"role\":null"));
    ferry_audit_free(a);

    a = run(NULL, "sp.json", list(false, 1, home_sp(1, NULL)), "ra2.json",
            dup(DELETED_RA(", \"roleDefinitionName\": \"Owner\"")), "ra1.json", dup(DELETED_RA("")),
            NULL);
    cr_assert_eq(count(a, "AZ-SH-006", NULL, -1), 1);
    cr_assert_str_eq(get(a, "AZ-SH-006", res)->source, "ra2.json");
    cr_assert(strstr(get(a, "AZ-SH-006", res)->evidence, "\"role\":\"Owner\""));
    ferry_audit_free(a);
}

/* ---- allocation failures ------------------------------------------------------------------- *
 * As in test_audit.c: the Nth allocation of the process fails (allocfail.h), for N = 0, 1, ...
 * over a whole run through every Azure loader and the decisions of finish. Each run fails with
 * -ENOMEM (-FERRY_ECRYPTO when OpenSSL's digest could not allocate) or prints exactly the
 * report of the undisturbed run. */
#define FERRY_ALLOCFAIL_NTH 1
#include "allocfail.h"
#include "audit-oom.h"
#ifdef HAVE_ALLOC_INJECTION
static const char *const OOM_INPUTS[][2] = {
    {"sp.json",
     "[{\"appId\": \"" APPID(1) "\", \"id\": \"" OID(
         1) "\", \"displayName\": \"ci\", "
            "\"servicePrincipalType\": \"Application\", "
            "\"appOwnerOrganizationId\": \"" TENANT "\", "
            "\"signInAudience\": \"AzureADMyOrg\", "
            "\"passwordCredentials\": [" PW(
                "k1", "2019-05-01T00:00:00Z",
                "2299-12-31T00:00:00Z") "], \"keyCredentials\": "
                                        "[" CERT(
                                            "c1",
                                            "2022-01-01T00:00:"
                                            "00Z",
                                            "2024-01-01T00:00:"
                                            "00Z") "]},"
                                                   " {\"appId\": "
                                                   "\"" APPID(2) "\", \"id\": \"" OID(
                                                       2) "\", "
                                                          "\"serv"
                                                          "icePri"
                                                          "ncipal"
                                                          "Type\""
                                                          ": "
                                                          "\"Appl"
                                                          "icatio"
                                                          "n\", "
                                                          "\"appO"
                                                          "wnerOr"
                                                          "ganiza"
                                                          "tionId"
                                                          "\": "
                                                          "\"" VENDOR "\", "
                                                          "\"sign"
                                                          "InAudi"
                                                          "ence\""
                                                          ": "
                                                          "\"Azur"
                                                          "eADMul"
                                                          "tipleO"
                                                          "rgs\"}"
                                                          ","
                                                          " {"
                                                          "\"appI"
                                                          "d\": "
                                                          "\"" APPID(3) "\", \"id\": \"" OID(
                                                              3) "\", \"servicePrincipalType\": "
                                                                 "\"ManagedIdentity\", "
                                                                 "\"accountEnabled\": "
                                                                 "false}]"},
    {"ra.json", "{\"value\": [{\"id\": \"/a1\", \"properties\": {\"principalId\": \"" OID(
                    1) "\", \"principalType\": \"ServicePrincipal\", \"roleDefinitionId\": "
                       "\"/x/" OWNER "\", \"scope\": \"" SUBSCOPE "\"}},"
                       "{\"id\": \"/a2\", \"properties\": {\"principalId\": \"" OID(
                           2) "\", \"principalType\": \"ServicePrincipal\", "
                              "\"roleDefinitionId\": "
                              "\"/x/" CONTRIB "\", \"scope\": \"" SUBSCOPE "\"}},"
                              "{\"id\": \"/a3\", \"properties\": {\"principalId\": \"f\", "
                              "\"principalType\": "
                              "\"Unknown\", \"roleDefinitionId\": \"/x/" READER
                              "\", \"scope\": \"" SUBSCOPE "\"}}]}"},
    {"defs.json",
     "[{\"id\": \"" SUBSCOPE "/providers/Microsoft.Authorization/roleDefinitions/c1\", "
     "\"roleName\": \"star\", \"roleType\": \"CustomRole\", "
     "\"assignableScopes\": "
     "[\"" SUBSCOPE "\"], \"permissions\": [{\"actions\": [\"*\"]}]}]"},
    {"signins.json",
     "{\"value\": [{\"appId\": \"" APPID(1) "\", \"lastSignInActivity\": {\"lastSignInDateTime\": "
                                            "\"2025-01-01T00:00:00Z\"}}]}"},
    {"cred.json", "{\"value\": [{\"keyId\": \"k1\", \"appId\": \"" APPID(
                      1) "\", \"servicePrincipalObjectId\": \"" OID(1) "\", "
                                                                       "\"signInActivity\": "
                                                                       "{\"lastSignInDateTime"
                                                                       "\": "
                                                                       "\"2025-01-01T00:00:"
                                                                       "00Z\"}}]}"},
    {"roles.json", "{\"value\": [{\"id\": \"r\", \"principalId\": \"" OID(
                       2) "\", \"roleDefinitionId\": \"62e90394-69f5-4237-9190-012177145e10\", "
                          "\"directoryScopeId\": \"/\"}]}"},
    {"ara.json", "{\"value\": [{\"id\": \"g\", \"principalId\": \"" OID(
                     1) "\", \"appRoleId\": \"9e3f62cf-ca93-4989-b6ce-bf83c28f9fe8\", "
                        "\"resourceId\": \"x\"}]}"},
    {"owners.json", "[{\"id\": \"" OID(1) "\", \"owners\": [{\"id\": \"u\"}]}]"},
    {"ids.json", "[" UAMI("id-orphan") "]"},
    {"res.json", "[{\"id\": \"" SUBSCOPE "/r/w\", \"type\": \"Microsoft.Web/sites\", \"location\": "
                 "\"x\", \"identity\": {\"userAssignedIdentities\": {\"/other\": {}}}}]"},
    {"fic.json", "[{\"id\": \"" SUBSCOPE "/resourceGroups/rg/providers/"
                 "Microsoft.ManagedIdentity/userAssignedIdentities/id-orphan/"
                 "federatedIdentityCredentials/f\", \"issuer\": \"https://x.example\", "
                 "\"subject\": \"repo:a/b:pull_request\"}]"},
};

static int oom_run(char **ret_json)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    char err[256];
    int r = ferry_audit_new(&o, &a);

    if (r == 0)
        r = ferry_audit_azure_trust_tenant(a, "00000000-0000-4000-8000-000000000000");
    for (size_t i = 0; r == 0 && i < sizeof(OOM_INPUTS) / sizeof(OOM_INPUTS[0]); i++)
        r = ferry_audit_add_input(a, OOM_INPUTS[i][0], OOM_INPUTS[i][1], strlen(OOM_INPUTS[i][1]),
                                  NULL, err, sizeof(err));
    return audit_oom_finish(a, r, ret_json);
}

Test(audit_azure, allocation_failures_fail_or_change_nothing)
{
    char *ref = NULL;

    cr_assert_eq(oom_run(&ref), 0);
    const char *rules[] = {"AZ-OP-001", "AZ-OP-002", "AZ-OP-003", "AZ-OP-004", "AZ-OP-005",
                           "AZ-SH-001", "AZ-SH-002", "AZ-SH-003", "AZ-SH-004", "AZ-SH-005",
                           "AZ-SH-006", "AZ-SH-007", "AZ-SH-008", "AZ-TR-001", "AZ-TR-002"};
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        cr_assert(strstr(ref, rules[i]), "the reference run has %s: %s", rules[i], ref);
    AUDIT_OOM_SWEEP(400000, ref, oom_run(&out));
    free(ref);
}
/* The same over the paths the inputs above do not take: assignments waiting for the SP list
 * that settles them (or does not), identities dropped because a resource uses them (before
 * and after their list), and, with --policies, the federated credentials' issuers kept for the
 * identity notes. */
#define FERRY_ISSUER "https://ferry.example.com"
static const char OOM_POLICIES[] =
    "{\"version\": 1, \"policies\": [{\"id\": \"p\", \"match\": {\"issuer\": \"" FERRY_ISSUER
    "\", \"subject\": \"x\"}, \"grant\": {\"max_ttl\": 900, \"azure\": [{\"tenant_id\": "
    "\"" TENANT "\", \"client_id\": \"" APPID(5) "\"}]}}]}";
#define UAMI_ID(name)                                                                              \
    SUBSCOPE "/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/" name
#define USES(name)                                                                                 \
    "[{\"id\": \"" SUBSCOPE "/r/w\", \"type\": \"Microsoft.Web/sites\", \"location\": \"x\", "     \
    "\"identity\": {\"userAssignedIdentities\": {\"" UAMI_ID(name) "\": {}}}}]"
static char *oom2_inputs[9][2];

/* X-004 findings on id in a JSON report that say it trusts ferry's issuer. */
static int trusting_ferry(const char *report, const char *id)
{
    json_t *doc = json_loads(report, 0, NULL), *f;
    size_t i;
    int n = 0;
    cr_assert_not_null(doc);
    json_array_foreach(json_object_get(doc, "findings"), i, f)
    {
        const char *rule = json_string_value(json_object_get(f, "rule_id"));
        const char *res = json_string_value(json_object_get(f, "resource"));
        if (rule && res && strcmp(rule, "X-004") == 0 && strcmp(res, id) == 0 &&
            json_is_true(json_object_get(json_object_get(f, "evidence"), "trusts_ferry_issuer")))
            n++;
    }
    json_decref(doc);
    return n;
}
static ferry_policy_set *oom2_policies;

static int oom2_run(char **ret_json)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    char err[256];
    int r = ferry_audit_new(&o, &a);

    if (r == 0)
        r = ferry_audit_set_policies(a, oom2_policies, FERRY_ISSUER);
    for (size_t i = 0; r == 0 && i < sizeof(oom2_inputs) / sizeof(oom2_inputs[0]); i++)
        r = ferry_audit_add_input(a, oom2_inputs[i][0], oom2_inputs[i][1],
                                  strlen(oom2_inputs[i][1]), NULL, err, sizeof(err));
    return audit_oom_finish(a, r, ret_json);
}

Test(audit_azure, allocation_failures_of_settled_and_dropped_records)
{
    ferry_policy_builder *b = NULL;
    ferry_policy_problems *pr = NULL;
    char *ref = NULL,
         *inputs[][2] = {
             {"ra.json", list(false, 3, assignment(1, OID(1), "ServicePrincipal", READER, SUBSCOPE),
                              assignment(9, OID(9), "ServicePrincipal", READER, SUBSCOPE),
                              assignment(2, OID(2), "User", OWNER, SUBSCOPE))},
             {"res0.json", dup(USES("id-b"))},
             {"ids.json",
              dup("[" UAMI("id-a") ", " UAMI("id-b") ", " UAMI("id-c") ", " UAMI("id-d") "]")},
             {"res1.json", dup(USES("id-c"))},
             {"sp.json",
              list(false, 2, home_sp(1, PW("k1", "2026-06-01T00:00:00Z", "2027-01-01T00:00:00Z")),
                   home_sp(3, NULL))},
             {"app.json",
              dup("[{\"appId\": \"" APPID(
                  3) "\", \"id\": \"cccccccc-0000-4000-8000-000000000003\", "
                     "\"signInAudience\": \"AzureADMyOrg\", \"federatedIdentityCredentials\": "
                     "[{\"id\": \"f0\", \"issuer\": \"" FERRY_ISSUER "\", \"subject\": \"x\"}]}, "
                     "{\"appId\": \"" APPID(
                         4) "\", \"id\": \"cccccccc-0000-4000-8000-000000000004\", "
                            "\"signInAudience\": \"AzureADMyOrg\"}]")},
             {"appfic.json",
              dup("{\"@odata.context\": \"https://graph.microsoft.com/v1.0/$metadata#"
                  "applications('CCCCCCCC-0000-4000-8000-000000000004')/"
                  "federatedIdentityCredentials\", \"value\": [{\"id\": \"f1\", "
                  "\"issuer\": \"" FERRY_ISSUER "\", "
                  "\"subject\": \"repo:a/b:pull_request\"}]}")},
             {"uamific.json",
              dup("[{\"id\": \"" UAMI_ID(
                  "id-a") "/federatedIdentityCredentials/f\", "
                          "\"issuer\": \"https://x.example\", \"subject\": \"repo:a/b\"}]")},
             {"signins.json", dup("{\"value\": [{\"appId\": \"" APPID(
                                  1) "\", \"lastSignInActivity\": "
                                     "{\"lastSignInDateTime\": \"2025-01-01T00:00:00Z\"}}]}")},
         };

    cr_assert_eq(sizeof(inputs), sizeof(oom2_inputs));
    memcpy(oom2_inputs, inputs, sizeof(inputs));
    cr_assert_eq(ferry_policy_problems_new(&pr), 0);
    cr_assert_eq(ferry_policy_builder_new(&b), 0);
    cr_assert_eq(
        ferry_policy_builder_add_buffer(b, "p.json", OOM_POLICIES, strlen(OOM_POLICIES), pr), 0);
    cr_assert_eq(ferry_policy_builder_finish(b, &oom2_policies, pr), 0);
    ferry_policy_builder_free(b);
    ferry_policy_problems_free(pr);

    cr_assert_eq(oom2_run(&ref), 0);
    cr_assert(strstr(ref, "\"AZ-SH-006\""), "%s", ref); /* OID(9): no SP */
    cr_assert(strstr(ref, UAMI_ID("id-a") "\""), "%s", ref);
    cr_assert(strstr(ref, UAMI_ID("id-d") "\""), "%s", ref);
    cr_assert_null(strstr(ref, UAMI_ID("id-b") "\""), "%s", ref);
    cr_assert_null(strstr(ref, UAMI_ID("id-c") "\""), "%s", ref);
    /* Undeclared applications trusting ferry's issuer: by a credential expanded into the
     * application, and by one of a Graph page naming the application (in upper case). */
    cr_assert_eq(trusting_ferry(ref, APPID(3)), 1, "%s", ref);
    cr_assert_eq(trusting_ferry(ref, APPID(4)), 1, "%s", ref);
    AUDIT_OOM_SWEEP(400000, ref, oom2_run(&out));
    free(ref);
    for (size_t i = 0; i < sizeof(oom2_inputs) / sizeof(oom2_inputs[0]); i++)
        free(oom2_inputs[i][1]);
    ferry_policy_set_unref(oom2_policies);
}
#endif
