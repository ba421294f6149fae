/* tests/unit/test_audit_gcp.c - the Google Cloud loaders and rules of the audit module.
 *
 * Every GCP rule has a positive and a negative case on small inline inputs (written with
 * single quotes, turned into JSON by q()); cross-file rules are checked in both input orders;
 * NDJSON, errors with file and line, and the knobs (--include-service-agents,
 * --trusted-projects, --gcp-resource).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "audit-internal.h"
#include "ferry/audit.h"
#include "ferry/error.h"

#define NOW INT64_C(1790000000) /* 2026-09-21 */

/* Templates of inputs filled in by snprintf are kept next to their test. */
#pragma GCC diagnostic ignored "-Wformat-nonliteral"

/* The text with ' turned into ": JSON without escaped quotes. new; free() */
static char *q(const char *s)
{
    char *t = strdup(s);
    cr_assert_not_null(t);
    for (char *p = t; *p; p++)
        if (*p == '\'')
            *p = '"';
    return t;
}

static ferry_audit *run_new(void)
{
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    cr_assert_eq(ferry_audit_new(&o, &a), 0);
    return a;
}

static int add(ferry_audit *a, const char *name, const char *text, char *err, size_t errlen)
{
    char *t = q(text);
    int r = ferry_audit_add_input(a, name, t, strlen(t), NULL, err, errlen);
    free(t);
    return r;
}

static void add_ok(ferry_audit *a, const char *text)
{
    char err[512] = "";
    cr_assert_eq(add(a, "in.json", text, err, sizeof(err)), 0, "%s", err);
}

static void finish(ferry_audit *a)
{
    char err[512] = "";
    cr_assert_eq(ferry_audit_finish(a, err, sizeof(err)), 0, "%s", err);
}

/* A run over one or two inputs, finished. */
static ferry_audit *audit2(const char *t1, const char *t2)
{
    ferry_audit *a = run_new();
    add_ok(a, t1);
    if (t2)
        add_ok(a, t2);
    finish(a);
    return a;
}

/* Number of findings of rule (on a resource containing res, when given); *ret_f the first. */
static size_t count(ferry_audit *a, const char *rule, const char *res,
                    const ferry_audit_finding **ret_f)
{
    const ferry_audit_finding *fs;
    size_t n = ferry_audit_findings(a, &fs), k = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(fs[i].rule_id, rule) == 0 && (!res || strstr(fs[i].resource, res))) {
            if (k++ == 0 && ret_f)
                *ret_f = &fs[i];
        }
    return k;
}

static const ferry_audit_finding *one(ferry_audit *a, const char *rule, const char *res)
{
    const ferry_audit_finding *f = NULL;
    cr_assert_eq(count(a, rule, res, &f), 1, "%s on %s: expected exactly one finding", rule,
                 res ? res : "*");
    return f;
}

/* A get-iam-policy output with one binding (and the project's own SA, so that the project is
 * derived as acme). */
static char *policy1(const char *role, const char *member)
{
    char *t = NULL;
    cr_assert(asprintf(&t,
                       "{'etag': 'x', 'bindings': [{'role': 'roles/logging.logWriter', "
                       "'members': ['serviceAccount:app@acme.iam.gserviceaccount.com', "
                       "'serviceAccount:log@acme.iam.gserviceaccount.com']}, "
                       "{'role': '%s', 'members': ['%s']}]}",
                       role, member) > 0);
    return t;
}

static ferry_audit *audit_binding(const char *role, const char *member)
{
    char *t = policy1(role, member);
    ferry_audit *a = audit2(t, NULL);
    free(t);
    return a;
}

#define ACME_SA(n) "serviceAccount:" n "@acme.iam.gserviceaccount.com"
#define SA_URI(n)                                                                                  \
    "//iam.googleapis.com/projects/acme/serviceAccounts/" n "@acme.iam.gserviceaccount.com"
#define PROJ "//cloudresourcemanager.googleapis.com/projects/acme"

/* ---- OP rules ---------------------------------------------------------------------------- */

Test(audit_gcp, op001_basic_role)
{
    ferry_audit *a = audit_binding("roles/owner", ACME_SA("ci"));
    const ferry_audit_finding *f = one(a, "GCP-OP-001", SA_URI("ci"));
    cr_assert_eq(f->severity, FERRY_AUDIT_HIGH);
    cr_assert_str_eq(f->cloud, "gcp");
    cr_assert_str_eq(f->account, "acme");
    cr_assert(strstr(f->evidence, "\"role\":\"roles/owner\""), "%s", f->evidence);
    ferry_audit_free(a);

    /* at the organization: critical */
    a = audit2(
        "[{'resource': '//cloudresourcemanager.googleapis.com/organizations/42', "
        "'policy': {'bindings': [{'role': 'roles/editor', 'members': ['" ACME_SA("ci") "']}]}}]",
        NULL);
    f = one(a, "GCP-OP-001", SA_URI("ci"));
    cr_assert_eq(f->severity, FERRY_AUDIT_CRITICAL);
    cr_assert_str_eq(f->account, "organizations/42");
    ferry_audit_free(a);

    /* negative: a user owner, a viewer SA */
    a = audit_binding("roles/owner", "user:alice@example.com");
    cr_assert_eq(count(a, "GCP-OP-001", NULL, NULL), 0);
    ferry_audit_free(a);
    a = audit_binding("roles/viewer", ACME_SA("ci"));
    cr_assert_eq(count(a, "GCP-OP-001", NULL, NULL), 0);
    ferry_audit_free(a);
}

Test(audit_gcp, service_agents_excluded_unless_asked)
{
    const char *agent = "serviceAccount:service-123@gcp-sa-pubsub.iam.gserviceaccount.com";
    ferry_audit *a = audit_binding("roles/owner", agent);
    cr_assert_eq(count(a, "GCP-OP-001", NULL, NULL), 0);
    ferry_audit_free(a);

    char *t = policy1("roles/owner", agent), err[256] = "";
    a = run_new();
    cr_assert_eq(ferry_audit_gcp_include_service_agents(a, true), 0);
    cr_assert_eq(add(a, "p.json", t, err, sizeof(err)), 0, "%s", err);
    finish(a);
    one(a, "GCP-OP-001", "service-123@gcp-sa-pubsub.iam.gserviceaccount.com");
    ferry_audit_free(a);
    free(t);
}

Test(audit_gcp, op002_admin_role)
{
    ferry_audit *a = audit_binding("roles/resourcemanager.projectIamAdmin", ACME_SA("ci"));
    cr_assert_eq(one(a, "GCP-OP-002", SA_URI("ci"))->severity, FERRY_AUDIT_HIGH);
    ferry_audit_free(a);
    a = audit_binding("roles/storage.admin", ACME_SA("ci"));
    one(a, "GCP-OP-002", SA_URI("ci"));
    ferry_audit_free(a);
    a = audit_binding("roles/storage.objectViewer", ACME_SA("ci"));
    cr_assert_eq(count(a, "GCP-OP-002", NULL, NULL), 0);
    ferry_audit_free(a);
    /* a predefined admin role for a user is not this rule */
    a = audit_binding("roles/iam.securityAdmin", "user:bob@example.com");
    cr_assert_eq(count(a, "GCP-OP-002", NULL, NULL), 0);
    ferry_audit_free(a);
}

static const char ROLES[] =
    "[{'name': 'projects/acme/roles/deployer', 'includedPermissions': "
    "['run.services.create', 'run.services.setIamPolicy']}, "
    "{'name': 'projects/acme/roles/reader', 'includedPermissions': ['run.services.get']}]";

Test(audit_gcp, op002_custom_role_either_order)
{
    char *pol = policy1("projects/acme/roles/deployer", ACME_SA("ci"));
    ferry_audit *a = audit2(ROLES, pol), *b = audit2(pol, ROLES);
    const ferry_audit_finding *fa = one(a, "GCP-OP-002", SA_URI("ci"));
    const ferry_audit_finding *fb = one(b, "GCP-OP-002", SA_URI("ci"));
    cr_assert(strstr(fa->evidence, "run.services.setIamPolicy"), "%s", fa->evidence);
    cr_assert_str_eq(fa->fingerprint, fb->fingerprint);
    ferry_audit_free(a);
    ferry_audit_free(b);
    free(pol);

    pol = policy1("projects/acme/roles/reader", ACME_SA("ci"));
    a = audit2(ROLES, pol);
    cr_assert_eq(count(a, "GCP-OP-002", NULL, NULL), 0);
    ferry_audit_free(a);
    free(pol);
    /* a custom role no roles input defines is not guessed at */
    pol = policy1("projects/acme/roles/deployer", ACME_SA("ci"));
    a = audit2(pol, NULL);
    cr_assert_eq(count(a, "GCP-OP-002", NULL, NULL), 0);
    ferry_audit_free(a);
    free(pol);
}

Test(audit_gcp, expired_condition_grants_nothing)
{
    const char *t =
        "{'etag': 'x', 'bindings': [{'role': 'roles/compute.admin', 'members': ['" ACME_SA(
            "ci") "'], 'condition': {'title': 't', 'expression': 'request.time < "
                  "timestamp(\\'%s\\')'}}]}";
    char buf[1024];
    /* the escaped \' become \" inside the JSON string */
    snprintf(buf, sizeof(buf), t, "2025-01-01T00:00:00Z");
    ferry_audit *a = audit2(buf, NULL);
    cr_assert_eq(count(a, "GCP-OP-002", NULL, NULL), 0);
    ferry_audit_free(a);
    snprintf(buf, sizeof(buf), t, "2030-01-01T00:00:00Z");
    a = audit2(buf, NULL);
    const ferry_audit_finding *f = one(a, "GCP-OP-002", SA_URI("ci"));
    cr_assert(strstr(f->evidence, "\"condition\""), "%s", f->evidence);
    ferry_audit_free(a);
}

Test(audit_gcp, op003_default_service_accounts)
{
    ferry_audit *a =
        audit_binding("roles/editor", "serviceAccount:123-compute@developer.gserviceaccount.com");
    const ferry_audit_finding *f = one(a, "GCP-OP-003", "123-compute@developer");
    cr_assert_eq(f->severity, FERRY_AUDIT_HIGH);
    cr_assert_str_eq(f->resource, "//iam.googleapis.com/projects/123/serviceAccounts/"
                                  "123-compute@developer.gserviceaccount.com");
    cr_assert_eq(count(a, "GCP-OP-001", NULL, NULL), 0); /* not reported twice */
    ferry_audit_free(a);

    a = audit_binding("roles/editor", "serviceAccount:acme@appspot.gserviceaccount.com");
    cr_assert_eq(one(a, "GCP-OP-003", "acme@appspot")->severity, FERRY_AUDIT_HIGH);
    ferry_audit_free(a);

    a = audit_binding("roles/editor", "serviceAccount:123@cloudservices.gserviceaccount.com");
    cr_assert_eq(one(a, "GCP-OP-003", "123@cloudservices")->severity, FERRY_AUDIT_INFO);
    ferry_audit_free(a);

    a = audit_binding("roles/viewer", "serviceAccount:123-compute@developer.gserviceaccount.com");
    cr_assert_eq(count(a, "GCP-OP-003", NULL, NULL), 0);
    ferry_audit_free(a);
}

static const char VMS[] =
    "[{'name': 'vm1', 'zone': 'https://www.googleapis.com/compute/v1/projects/acme/zones/eu-b', "
    "'selfLink': 'https://www.googleapis.com/compute/v1/projects/acme/zones/eu-b/instances/vm1', "
    "'serviceAccounts': [{'email': '123-compute@developer.gserviceaccount.com', 'scopes': "
    "['https://www.googleapis.com/auth/cloud-platform']}]}, "
    "{'name': 'vm2', 'zone': 'https://www.googleapis.com/compute/v1/projects/acme/zones/eu-b', "
    "'serviceAccounts': [{'email': '123-compute@developer.gserviceaccount.com', 'scopes': "
    "['https://www.googleapis.com/auth/devstorage.read_only']}]}, "
    "{'name': 'vm3', 'zone': 'https://www.googleapis.com/compute/v1/projects/acme/zones/eu-b', "
    "'serviceAccounts': [{'email': 'app@acme.iam.gserviceaccount.com', 'scopes': "
    "['https://www.googleapis.com/auth/cloud-platform']}]}]";

Test(audit_gcp, op004_default_sa_on_vm)
{
    ferry_audit *a = audit2(VMS, NULL);
    const ferry_audit_finding *f = one(a, "GCP-OP-004", NULL);
    cr_assert_str_eq(
        f->resource,
        "https://www.googleapis.com/compute/v1/projects/acme/zones/eu-b/instances/vm1");
    cr_assert_str_eq(f->account, "acme");
    cr_assert_eq(f->severity, FERRY_AUDIT_MEDIUM);
    ferry_audit_free(a);
}

Test(audit_gcp, op005_impersonation_at_project)
{
    ferry_audit *a = audit_binding("roles/iam.serviceAccountUser", "user:bob@example.com");
    const ferry_audit_finding *f = one(a, "GCP-OP-005", PROJ);
    cr_assert_eq(f->severity, FERRY_AUDIT_HIGH);
    cr_assert(strstr(f->evidence, "user:bob@example.com"), "%s", f->evidence);
    ferry_audit_free(a);
    /* the same role on one service account is the intended use */
    a = audit2("[{'resource': '//iam.googleapis.com/projects/acme/serviceAccounts/"
               "app@acme.iam.gserviceaccount.com', 'policy': {'bindings': [{'role': "
               "'roles/iam.serviceAccountUser', 'members': ['user:bob@example.com']}]}}]",
               NULL);
    cr_assert_eq(count(a, "GCP-OP-005", NULL, NULL), 0);
    ferry_audit_free(a);
}

Test(audit_gcp, op006_public_principal)
{
    ferry_audit *a = audit_binding("roles/viewer", "allAuthenticatedUsers");
    cr_assert_eq(one(a, "GCP-OP-006", PROJ)->severity, FERRY_AUDIT_CRITICAL);
    ferry_audit_free(a);
    /* a public bucket is another audit's business */
    a = audit2("[{'name': '//storage.googleapis.com/b', 'asset_type': "
               "'storage.googleapis.com/Bucket', 'iam_policy': {'bindings': [{'role': "
               "'roles/storage.objectViewer', 'members': ['allUsers']}]}}]",
               NULL);
    cr_assert_eq(count(a, "GCP-OP-006", NULL, NULL), 0);
    ferry_audit_free(a);
}

static const char RECS[] =
    "[{'name': 'projects/99/locations/global/recommenders/google.iam.policy.Recommender/"
    "recommendations/r1', 'recommenderSubtype': 'REMOVE_ROLE', 'stateInfo': {'state': "
    "'ACTIVE'}, 'content': {'overview': {'member': '" ACME_SA(
        "ci") "', 'removedRole': 'roles/editor', 'resource': '" PROJ "'}}}, "
              "{'name': 'projects/99/locations/global/recommenders/x/recommendations/r2', "
              "'recommenderSubtype': 'REPLACE_ROLE', 'stateInfo': {'state': 'DISMISSED'}, "
              "'content': {'overview': {'member': 'user:bob@example.com', 'removedRole': "
              "'roles/editor', 'resource': '" PROJ "'}}}]";

Test(audit_gcp, op007_recommendations_and_not_evaluated)
{
    char *pol = policy1("roles/viewer", ACME_SA("ci"));
    ferry_audit *a = audit2(pol, RECS);
    const ferry_audit_finding *f = one(a, "GCP-OP-007", NULL);
    cr_assert_str_eq(f->resource, SA_URI("ci"));
    cr_assert_eq(f->severity, FERRY_AUDIT_MEDIUM);
    ferry_audit_free(a);

    /* without usage data: one info note per project and usage rule */
    a = audit2(pol, NULL);
    f = one(a, "GCP-OP-007", NULL);
    cr_assert_eq(f->severity, FERRY_AUDIT_INFO);
    cr_assert_str_eq(f->resource, PROJ);
    cr_assert(strstr(f->evidence, "\"evaluated\":false"), "%s", f->evidence);
    cr_assert_eq(one(a, "GCP-SH-004", NULL)->severity, FERRY_AUDIT_INFO);
    cr_assert_eq(one(a, "GCP-SH-005", NULL)->severity, FERRY_AUDIT_INFO);
    cr_assert_eq(ferry_audit_count_at_least(a, FERRY_AUDIT_LOW), 0);
    ferry_audit_free(a);
    free(pol);
}

Test(audit_gcp, op007_permissions_insight)
{
    ferry_audit *a = audit2(
        "[{'name': 'projects/99/locations/global/insightTypes/google.iam.policy.Insight/"
        "insights/i1', 'insightSubtype': 'PERMISSIONS_USAGE', 'content': {'member': '" ACME_SA(
            "ci") "', 'role': 'roles/editor', 'exercisedPermissions': [{'permission': 'a.b'}], "
                  "'currentTotalPermissionsCount': '3000'}}, "
                  "{'name': 'projects/99/x/insights/i2', 'insightSubtype': 'PERMISSIONS_USAGE', "
                  "'content': {'member': 'user:a@b.c', 'role': 'roles/viewer', "
                  "'exercisedPermissions': [{'permission': 'a.b'}], "
                  "'currentTotalPermissionsCount': 1}}]",
        NULL);
    one(a, "GCP-OP-007", SA_URI("ci"));
    cr_assert_eq(count(a, "GCP-OP-007", "a@b.c", NULL), 0);
    ferry_audit_free(a);
}

Test(audit_gcp, op008_cross_project_token_creator)
{
    ferry_audit *a =
        audit2("[{'resource': '//iam.googleapis.com/projects/acme/serviceAccounts/"
               "app@acme.iam.gserviceaccount.com', 'policy': {'bindings': [{'role': "
               "'roles/iam.serviceAccountTokenCreator', 'members': "
               "['serviceAccount:ci@tools-prj.iam.gserviceaccount.com', '" ACME_SA("job") "']}]}}]",
               NULL);
    const ferry_audit_finding *f = one(a, "GCP-OP-008", SA_URI("app"));
    cr_assert(strstr(f->evidence, "ci@tools-prj"), "%s", f->evidence);
    cr_assert_eq(f->severity, FERRY_AUDIT_HIGH);
    ferry_audit_free(a);

    a = audit2(
        "[{'name': 'projects/99/locations/global/insightTypes/"
        "google.iam.policy.LateralMovementInsight/insights/l1', 'insightSubtype': "
        "'CROSS_PROJECT_SERVICE_ACCOUNT_IMPERSONATION', 'content': {'targetServiceAccounts': "
        "['app@acme.iam.gserviceaccount.com'], 'impersonator': {'serviceAccount': "
        "'ci@tools-prj.iam.gserviceaccount.com'}}}]",
        NULL);
    one(a, "GCP-OP-008", SA_URI("app"));
    ferry_audit_free(a);
}

/* ---- keys -------------------------------------------------------------------------------- */

#define KEY(id, type, after, before, extra)                                                        \
    "{'name': 'projects/acme/serviceAccounts/app@acme.iam.gserviceaccount.com/keys/" id            \
    "', 'keyType': '" type "', 'validAfterTime': '" after "', 'validBeforeTime': '" before         \
    "'" extra "}"

Test(audit_gcp, sh001_003_keys)
{
    ferry_audit *a = audit2(
        "[" KEY("old", "USER_MANAGED", "2023-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "") ", " KEY(
            "young", "USER_MANAGED", "2026-09-01T00:00:00Z", "2027-09-01T00:00:00Z",
            "") ", " KEY("sys", "SYSTEM_MANAGED", "2020-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                         "") ", " KEY("off", "USER_MANAGED", "2020-01-01T00:00:00Z",
                                      "9999-12-31T23:59:59Z",
                                      ", 'disabled': true") ", " KEY("expired", "USER_MANAGED",
                                                                     "2020-01-01T00:00:00Z",
                                                                     "2021-01-01T00:00:00Z",
                                                                     "") "]",
        NULL);
    cr_assert_eq(count(a, "GCP-SH-001", NULL, NULL), 2);
    cr_assert_eq(one(a, "GCP-SH-001", "/keys/old")->severity, FERRY_AUDIT_MEDIUM);
    one(a, "GCP-SH-001", "/keys/young");
    one(a, "GCP-SH-002", "/keys/old");
    cr_assert_eq(count(a, "GCP-SH-002", NULL, NULL), 1);
    cr_assert_eq(one(a, "GCP-SH-003", "/keys/old")->severity, FERRY_AUDIT_LOW);
    cr_assert_eq(count(a, "GCP-SH-003", NULL, NULL), 1);
    cr_assert_str_eq(one(a, "GCP-SH-001", "/keys/old")->resource,
                     "//iam.googleapis.com/projects/acme/serviceAccounts/"
                     "app@acme.iam.gserviceaccount.com/keys/old");
    ferry_audit_free(a);
}

Test(audit_gcp, keys_ndjson_of_arrays)
{
    /* two per-SA lists concatenated one a line, as a loop over gcloud prints them */
    const char *t = "[" KEY("k1", "USER_MANAGED", "2026-09-01T00:00:00Z", "2027-01-01T00:00:00Z",
                            "") "]\n\n[" KEY("k2", "USER_MANAGED", "2026-09-01T00:00:00Z",
                                             "2027-01-01T00:00:00Z", "") "]\n";
    ferry_audit *a = audit2(t, NULL);
    cr_assert_eq(count(a, "GCP-SH-001", NULL, NULL), 2);
    ferry_audit_free(a);
}

Test(audit_gcp, sh004_unused_key)
{
    const char *t = "[{'activityType': 'serviceAccountKeyLastAuthentication', 'fullResourceName': "
                    "'//iam.googleapis.com/projects/acme/serviceAccounts/"
                    "app@acme.iam.gserviceaccount.com/keys/%s', 'activity': "
                    "{'lastAuthenticatedTime': '%s'}}]";
    char buf[1024];
    snprintf(buf, sizeof(buf), t, "k1", "2024-02-11T08:00:00Z");
    ferry_audit *a = audit2(buf, NULL);
    const ferry_audit_finding *f = one(a, "GCP-SH-004", "/keys/k1");
    cr_assert_eq(f->severity, FERRY_AUDIT_MEDIUM);
    cr_assert_eq(count(a, "GCP-SH-004", NULL, NULL), 1); /* no "not evaluated" note */
    ferry_audit_free(a);
    snprintf(buf, sizeof(buf), t, "k1", "2026-09-01T08:00:00Z");
    a = audit2(buf, NULL);
    cr_assert_eq(count(a, "GCP-SH-004", NULL, NULL), 0);
    ferry_audit_free(a);
}

Test(audit_gcp, sh005_unused_service_account)
{
    const char *t = "[{'activityType': 'serviceAccountLastAuthentication', 'fullResourceName': "
                    "'//iam.googleapis.com/projects/acme/serviceAccounts/"
                    "app@acme.iam.gserviceaccount.com', 'activity': "
                    "{'lastAuthenticatedTime': '%s'}}]";
    char buf[1024];
    snprintf(buf, sizeof(buf), t, "2025-11-02T08:00:00Z");
    ferry_audit *a = audit2(buf, NULL);
    const ferry_audit_finding *f = one(a, "GCP-SH-005", SA_URI("app"));
    cr_assert_str_eq(f->account, "acme");
    ferry_audit_free(a);
    snprintf(buf, sizeof(buf), t, "2026-09-01T08:00:00Z");
    a = audit2(buf, NULL);
    cr_assert_eq(count(a, "GCP-SH-005", NULL, NULL), 0);
    ferry_audit_free(a);
    /* a disabled account is not reported as unused, whichever input comes first */
    snprintf(buf, sizeof(buf), t, "2025-11-02T08:00:00Z");
    a = audit2(buf, "[{'email': 'app@acme.iam.gserviceaccount.com', 'uniqueId': '3', "
                    "'oauth2ClientId': '3', 'projectId': 'acme', 'disabled': true}]");
    cr_assert_eq(count(a, "GCP-SH-005", NULL, NULL), 0);
    ferry_audit_free(a);
    /* an inactive-SA insight says the same, under the same fingerprint */
    snprintf(buf, sizeof(buf), t, "2025-11-02T08:00:00Z");
    a = audit2(buf, "[{'name': 'projects/99/locations/global/insightTypes/"
                    "google.iam.serviceAccount.Insight/insights/x', 'insightSubtype': "
                    "'SERVICE_ACCOUNT_USAGE', 'content': {'email': "
                    "'app@acme.iam.gserviceaccount.com'}, 'stateInfo': {'state': 'ACTIVE'}}]");
    cr_assert_eq(count(a, "GCP-SH-005", NULL, NULL), 1);
    ferry_audit_free(a);
}

/* ---- service accounts -------------------------------------------------------------------- */

static const char SAS[] =
    "[{'email': 'old@acme.iam.gserviceaccount.com', 'uniqueId': '1', 'oauth2ClientId': '1', "
    "'projectId': 'acme', 'disabled': true, 'description': 'owner: data team'}, "
    "{'email': 'idle@acme.iam.gserviceaccount.com', 'uniqueId': '2', 'oauth2ClientId': '2', "
    "'projectId': 'acme', 'disabled': true}, "
    "{'email': 'app@acme.iam.gserviceaccount.com', 'uniqueId': '3', 'oauth2ClientId': '3', "
    "'projectId': 'acme', 'description': 'owner: web team'}, "
    "{'email': 'nodesc@acme.iam.gserviceaccount.com', 'uniqueId': '4', 'oauth2ClientId': '4', "
    "'projectId': 'acme', 'displayName': 'x'}]";

Test(audit_gcp, sh006_disabled_still_bound_either_order)
{
    char *pol = policy1("roles/viewer", ACME_SA("old"));
    ferry_audit *a = audit2(SAS, pol), *b = audit2(pol, SAS);
    const ferry_audit_finding *f = one(a, "GCP-SH-006", NULL);
    cr_assert_str_eq(f->resource, SA_URI("old"));
    cr_assert_eq(f->severity, FERRY_AUDIT_LOW);
    cr_assert_str_eq(f->fingerprint, one(b, "GCP-SH-006", NULL)->fingerprint);
    ferry_audit_free(a);
    ferry_audit_free(b);
    free(pol);
    /* disabled and unbound, no keys: nothing; a key makes it one */
    a = audit2(SAS, NULL);
    cr_assert_eq(count(a, "GCP-SH-006", NULL, NULL), 0);
    ferry_audit_free(a);
    a = audit2(SAS, "[{'name': 'projects/acme/serviceAccounts/idle@acme.iam.gserviceaccount.com/"
                    "keys/k', 'keyType': 'USER_MANAGED', 'validAfterTime': "
                    "'2026-09-01T00:00:00Z'}]");
    one(a, "GCP-SH-006", "idle@acme");
    ferry_audit_free(a);
}

Test(audit_gcp, sh009_no_description)
{
    ferry_audit *a = audit2(SAS, NULL);
    const ferry_audit_finding *f = one(a, "GCP-SH-009", NULL);
    cr_assert_str_eq(f->resource, SA_URI("nodesc"));
    cr_assert_eq(f->severity, FERRY_AUDIT_LOW);
    ferry_audit_free(a);
}

/* ---- bindings of other kinds ------------------------------------------------------------- */

Test(audit_gcp, sh007_deleted_member)
{
    ferry_audit *a = audit_binding(
        "roles/storage.admin", "deleted:serviceAccount:gone@acme.iam.gserviceaccount.com?uid=7");
    const ferry_audit_finding *f = one(a, "GCP-SH-007", PROJ);
    cr_assert(strstr(f->evidence, "deleted:serviceAccount:gone@"), "%s", f->evidence);
    cr_assert_eq(count(a, "GCP-OP-002", NULL, NULL), 0);
    ferry_audit_free(a);
    a = audit_binding("roles/storage.admin", "user:alive@example.com");
    cr_assert_eq(count(a, "GCP-SH-007", NULL, NULL), 0);
    ferry_audit_free(a);
}

Test(audit_gcp, sh008_external_service_account)
{
    char *pol = policy1("roles/bigquery.dataViewer",
                        "serviceAccount:vendor@other-prj.iam.gserviceaccount.com");
    char err[256] = "";
    ferry_audit *a = audit2(pol, NULL);
    const ferry_audit_finding *f = one(a, "GCP-SH-008", PROJ);
    cr_assert(strstr(f->evidence, "\"member_project\":\"other-prj\""), "%s", f->evidence);
    ferry_audit_free(a);

    /* two external SAs in one binding are two findings */
    a = audit2(
        "{'etag': 'x', 'bindings': [{'role': 'roles/viewer', 'members': ['" ACME_SA(
            "a") "', '" ACME_SA("b") "', 'serviceAccount:v1@ext-one.iam.gserviceaccount.com', "
                                     "'serviceAccount:v2@ext-two.iam.gserviceaccount.com']}]}",
        NULL);
    cr_assert_eq(count(a, "GCP-SH-008", PROJ, NULL), 2);
    ferry_audit_free(a);

    /* trusted */
    a = run_new();
    cr_assert_eq(ferry_audit_gcp_trust_project(a, "other-prj"), 0);
    cr_assert_eq(ferry_audit_gcp_trust_project(a, "Bad Name"), -EINVAL);
    cr_assert_eq(add(a, "p.json", pol, err, sizeof(err)), 0, "%s", err);
    finish(a);
    cr_assert_eq(count(a, "GCP-SH-008", NULL, NULL), 0);
    ferry_audit_free(a);

    /* audited in the same run (its account list comes later): part of the estate */
    a = audit2(pol, "[{'email': 'vendor@other-prj.iam.gserviceaccount.com', 'uniqueId': '9', "
                    "'oauth2ClientId': '9', 'projectId': 'other-prj', 'description': 'd'}]");
    cr_assert_eq(count(a, "GCP-SH-008", NULL, NULL), 0);
    ferry_audit_free(a);
    free(pol);
}

/* ---- workload identity federation -------------------------------------------------------- */

Test(audit_gcp, tr001_wif_provider_without_condition)
{
    ferry_audit *a = audit2(
        "[{'name': 'projects/99/locations/global/workloadIdentityPools/ci/providers/gh', "
        "'state': 'ACTIVE', 'oidc': {'issuerUri': 'https://token.actions.githubusercontent.com'}, "
        "'attributeMapping': {'google.subject': 'assertion.sub'}}, "
        "{'name': 'projects/99/locations/global/workloadIdentityPools/ci/providers/gh2', "
        "'oidc': {'issuerUri': 'https://token.actions.githubusercontent.com'}, "
        "'attributeCondition': 'assertion.repository_owner == \\'acme\\''}, "
        "{'name': 'projects/99/locations/global/workloadIdentityPools/ci/providers/corp', "
        "'oidc': {'issuerUri': 'https://idp.acme.example'}}]",
        NULL);
    const ferry_audit_finding *f = one(a, "GCP-TR-001", NULL);
    cr_assert_str_eq(f->resource, "//iam.googleapis.com/projects/99/locations/global/"
                                  "workloadIdentityPools/ci/providers/gh");
    cr_assert_eq(f->severity, FERRY_AUDIT_HIGH);
    cr_assert_str_eq(f->account, "99");
    ferry_audit_free(a);
}

/* ---- inputs: CAI, NDJSON, errors --------------------------------------------------------- */

Test(audit_gcp, cai_ndjson_export)
{
    const char *t =
        "{'name': '//cloudresourcemanager.googleapis.com/projects/acme', 'asset_type': "
        "'cloudresourcemanager.googleapis.com/Project', 'iam_policy': {'bindings': [{'role': "
        "'roles/owner', 'members': ['" ACME_SA(
            "ci") "']}]}}\n"
                  "{'name': '//iam.googleapis.com/projects/acme/serviceAccounts/1', 'asset_type': "
                  "'iam.googleapis.com/ServiceAccount', 'resource': {'data': {'email': "
                  "'ci@acme.iam.gserviceaccount.com', 'uniqueId': '1', 'disabled': true}}}\n"
                  "{'name': '//container.googleapis.com/projects/acme/zones/z/clusters/c', "
                  "'asset_type': 'container.googleapis.com/Cluster', 'resource': {'data': {}}}\n";
    ferry_audit *a = audit2(t, NULL);
    one(a, "GCP-OP-001", SA_URI("ci"));
    one(a, "GCP-SH-006", SA_URI("ci"));
    ferry_audit_free(a);
}

static void expect_error(const char *text, int code, const char *msg)
{
    ferry_audit *a = run_new();
    char err[512] = "";
    cr_assert_eq(add(a, "in.json", text, err, sizeof(err)), code, "%s", err);
    cr_assert(strstr(err, msg) != NULL, "'%s' lacks '%s'", err, msg);
    ferry_audit_free(a);
}

Test(audit_gcp, errors_name_file_line_and_expectation)
{
    expect_error("{'etag': 'x', 'bindings': [\n{'role': 'roles/owner',\n 'members': 7}]}",
                 -FERRY_EMALFORMED, "in.json:3: bindings/0: members: expected an array");
    expect_error("{'etag': 'x', 'bindings': [\n{'members': []}]}", -FERRY_EMALFORMED,
                 "in.json:2: bindings/0: expected a role string");
    expect_error("[{'email': 'a@b.iam.gserviceaccount.com', 'uniqueId': '1', 'oauth2ClientId': "
                 "'1'},\n 7]",
                 -FERRY_EMALFORMED, "in.json:2: [1]: expected an object");
    expect_error("[{'keyType': 'USER_MANAGED', 'validAfterTime': '2020-01-01T00:00:00Z',\n "
                 "'name': 'nope'}]",
                 -FERRY_EMALFORMED, "in.json:2: 0: expected a key name");
    expect_error("[{'keyType': 'USER_MANAGED', 'name': "
                 "'projects/p/serviceAccounts/a@p.iam.gserviceaccount.com/keys/k',\n "
                 "'validAfterTime': 'yesterday'}]",
                 -FERRY_EMALFORMED, "in.json:2: 0: validAfterTime: expected a timestamp");
    /* truncated */
    expect_error("{'etag': 'x', 'bindings': [\n{'role': 'roles/own", -FERRY_EMALFORMED,
                 "in.json:2:");
    /* NDJSON: a bad line after good ones names its line; a bad element too */
    expect_error("{'asset_type': 'x', 'name': 'n'}\n{'asset_type': 'x', 'name': 'n'}\n{'asset_",
                 -FERRY_EMALFORMED, "in.json:3:");
    expect_error("{'asset_type': 'x', 'name': 'n'}\n\n{'asset_type': 7, 'name': 'n'}\n",
                 -FERRY_EMALFORMED, "in.json:3: 1: expected an asset with name and asset_type");
    /* get-iam-policy with no project SA and no --gcp-resource */
    expect_error("{'etag': 'x', 'bindings': [{'role': 'roles/owner', 'members': "
                 "['user:a@b.c']}]}",
                 -FERRY_EMALFORMED, "--gcp-resource projects/ID");
}

Test(audit_gcp, gcp_resource_names_the_policy)
{
    ferry_audit *a = run_new();
    char err[256] = "";
    cr_assert_eq(ferry_audit_gcp_set_resource(a, "folders/77"), 0);
    cr_assert_eq(ferry_audit_gcp_set_resource(a, "buckets/77"), -EINVAL);
    cr_assert_eq(add(a, "p.json",
                     "{'etag': 'x', 'bindings': [{'role': 'roles/owner', 'members': ['" ACME_SA(
                         "ci") "']}]}",
                     err, sizeof(err)),
                 0, "%s", err);
    finish(a);
    const ferry_audit_finding *f = one(a, "GCP-OP-001", SA_URI("ci"));
    cr_assert_str_eq(f->account, "folders/77");
    cr_assert_eq(f->severity, FERRY_AUDIT_HIGH);
    ferry_audit_free(a);
}

Test(audit_gcp, formats_known_and_detected)
{
    const char *names[] = {"gcp-sa-list",   "gcp-sa-keys",      "gcp-iam-policy",
                           "gcp-asset-iam", "gcp-cai",          "gcp-roles",
                           "gcp-activity",  "gcp-insights",     "gcp-recommendations",
                           "gcp-instances", "gcp-wif-providers"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        cr_assert(ferry_audit_format_known(names[i]), "%s", names[i]);
    ferry_audit *a = audit2(VMS, ROLES);
    const ferry_audit_finding *fs;
    (void)ferry_audit_findings(a, &fs);
    (void)fs;
    ferry_audit_free(a);
}

/* ---- allocation failures ------------------------------------------------------------------- *
 * As in test_audit.c: the Nth allocation of the process fails, for N = 0, 1, ... until a whole
 * run (every GCP loader, the end-of-run rules, the JSON report) completes without an injected
 * failure; each run either fails with -ENOMEM (-FERRY_ECRYPTO when the digest could not
 * allocate) or prints exactly the report of an undisturbed run. */
#define FERRY_ALLOCFAIL_NTH 1
#include "allocfail.h"
#include "audit-oom.h"
#ifdef HAVE_ALLOC_INJECTION
static uint64_t oom_spilled; /* the bytes the last oom_run_at put aside */

/* spill_after: a->spill_after of the run (SIZE_MAX: the default). */
static int oom_run_at(size_t spill_after, char **ret_json)
{
    static const char *const inputs[] = {
        SAS,
        ROLES,
        VMS,
        RECS,
        "{'etag': 'x', 'bindings': [{'role': 'roles/editor', 'members': ['" ACME_SA(
            "old") "', '" ACME_SA("app") "', "
                                         "'serviceAccount:123-compute@developer.gserviceaccount."
                                         "com', "
                                         "'serviceAccount:vendor@other.iam.gserviceaccount.com', "
                                         "'serviceAccount:gone@third.iam.gserviceaccount.com']}, "
                                         "{'role': 'projects/acme/roles/deployer', 'members': "
                                         "['" ACME_SA(
                                             "app") "']}, "
                                                    "{'role': 'roles/iam.serviceAccountUser', "
                                                    "'members': ['allUsers', "
                                                    "'user:bob@example.com', "
                                                    "'deleted:user:x@example.com?uid=1']}]}",
        "[" KEY("k1", "USER_MANAGED", "2020-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                "") "]\n[" KEY("k2", "USER_MANAGED", "2026-09-01T00:00:00Z", "2027-01-01T00:00:00Z",
                               "") "]\n",
        "[{'activityType': 'serviceAccountLastAuthentication', 'fullResourceName': "
        "'//iam.googleapis.com/projects/acme/serviceAccounts/app@acme.iam.gserviceaccount.com', "
        "'activity': {'lastAuthenticatedTime': '2025-01-01T00:00:00Z'}}]",
        "[{'resource': '//iam.googleapis.com/projects/acme/serviceAccounts/"
        "app@acme.iam.gserviceaccount.com', 'policy': {'bindings': [{'role': "
        "'roles/iam.workloadIdentityUser', 'members': ['principalSet://iam.googleapis.com/"
        "projects/99/locations/global/workloadIdentityPools/ci/attribute.repository/a/b']}]}}]",
        "[{'name': 'projects/99/locations/global/workloadIdentityPools/ci/providers/gh', "
        "'oidc': {'issuerUri': 'https://token.actions.githubusercontent.com'}}]",
    };
    ferry_audit_options o = {.now = NOW};
    ferry_audit *a = NULL;
    char err[256];
    int r = ferry_audit_new(&o, &a);

    if (r == 0 && spill_after != SIZE_MAX)
        a->spill_after = spill_after;
    if (r == 0)
        r = ferry_audit_gcp_trust_project(a, "third");
    for (size_t i = 0; r == 0 && i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        char *t = strdup(inputs[i]);
        if (!t) {
            r = -ENOMEM;
            break;
        }
        for (char *p = t; *p; p++)
            if (*p == '\'')
                *p = '"';
        r = ferry_audit_add_input(a, "in.json", t, strlen(t), NULL, err, sizeof(err));
        free(t);
    }
    if (a)
        (void)audit_gcp_records(a, &oom_spilled);
    return audit_oom_finish(a, r, ret_json);
}

static int oom_run(char **ret_json)
{
    return oom_run_at(SIZE_MAX, ret_json);
}

Test(audit_gcp, allocation_failures_fail_or_change_nothing)
{
    char *ref = NULL;

    cr_assert_eq(oom_run(&ref), 0);
    static const char *const rules[] = {"GCP-OP-001", "GCP-OP-002", "GCP-OP-003", "GCP-OP-004",
                                        "GCP-OP-005", "GCP-OP-006", "GCP-OP-007", "GCP-SH-001",
                                        "GCP-SH-003", "GCP-SH-005", "GCP-SH-006", "GCP-SH-007",
                                        "GCP-SH-008", "GCP-SH-009", "GCP-TR-001"};
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        cr_assert(strstr(ref, rules[i]), "the reference run covers %s: %s", rules[i], ref);
    AUDIT_OOM_SWEEP(400000, ref, oom_run(&out));
    free(ref);
}

/* The same with every touch of another project putting the others' records aside: a failure
 * of the eviction or of taking records back fails the run, never quiets it. */
Test(audit_gcp, allocation_failures_with_records_put_aside)
{
    char *ref = NULL, *ref0 = NULL;

    cr_assert_eq(oom_run(&ref), 0);
    cr_assert_eq(oom_run_at(0, &ref0), 0);
    cr_assert_gt(oom_spilled, 0);
    cr_assert_str_eq(ref0, ref);
    AUDIT_OOM_SWEEP(400000, ref, oom_run_at(0, &out));
    free(ref);
    free(ref0);
}
#endif

Test(audit_gcp, cai_service_account_policy_by_unique_id)
{
    /* CAI names a service account (and its IAM policy) by uniqueId */
    ferry_audit *a =
        audit2("[{'name': '//iam.googleapis.com/projects/acme/serviceAccounts/777', 'asset_type': "
               "'iam.googleapis.com/ServiceAccount', 'resource': {'data': {'email': "
               "'app@acme.iam.gserviceaccount.com', 'uniqueId': '777', 'description': 'd'}}}, "
               "{'name': '//iam.googleapis.com/projects/acme/serviceAccounts/777', 'asset_type': "
               "'iam.googleapis.com/ServiceAccount', 'iam_policy': {'bindings': [{'role': "
               "'roles/iam.serviceAccountTokenCreator', 'members': "
               "['serviceAccount:ci@tools-prj.iam.gserviceaccount.com']}]}}]",
               NULL);
    one(a, "GCP-OP-008", SA_URI("app"));
    ferry_audit_free(a);
}

Test(audit_gcp, string_or_array_variants)
{
    /* one binding object instead of an array, one member string, one scope string */
    ferry_audit *a = audit2("{'etag': 'x', 'bindings': {'role': 'roles/owner', 'members': "
                            "'serviceAccount:ci@acme.iam.gserviceaccount.com'}}",
                            "[{'name': 'vm', 'zone': 'https://www.googleapis.com/compute/v1/"
                            "projects/acme/zones/z', 'serviceAccounts': [{'email': "
                            "'1-compute@developer.gserviceaccount.com', 'scopes': "
                            "'https://www.googleapis.com/auth/cloud-platform'}]}]");
    one(a, "GCP-OP-001", SA_URI("ci"));
    one(a, "GCP-OP-004", "/instances/vm");
    ferry_audit_free(a);
}

/* ---- records of the projects not worked on, in the temporary file ------------------------- *
 * Three projects whose inputs name each other's service accounts (bindings, a custom role
 * defined after its use, a CAI policy naming an SA by uniqueId whose email names another scope
 * than its project, keys, activity, insights): whatever the order of the inputs and however
 * early the records are put aside, the report is the same bytes. */
static const char *const SPILL_INPUTS[] = {
    /* p1: its SAs (one disabled, bound from p2), a custom role granted to p2's SA */
    "[{'email': 'a@p1.iam.gserviceaccount.com', 'uniqueId': '101', 'oauth2ClientId': '101', "
    "'projectId': 'p1', 'description': 'd'}, "
    "{'email': 'off@p1.iam.gserviceaccount.com', 'uniqueId': '102', 'oauth2ClientId': '102', "
    "'projectId': 'p1', 'disabled': true}]",
    "{'etag': 'x', 'bindings': [{'role': 'roles/viewer', 'members': "
    "['serviceAccount:a@p1.iam.gserviceaccount.com']}, {'role': 'projects/p1/roles/deployer', "
    "'members': ['serviceAccount:b@p2.iam.gserviceaccount.com', "
    "'serviceAccount:ext@outside.iam.gserviceaccount.com']}]}",
    /* p2: its SAs (one disabled, with a key), a policy binding p1's disabled SA */
    "[{'email': 'b@p2.iam.gserviceaccount.com', 'uniqueId': '201', 'oauth2ClientId': '201', "
    "'projectId': 'p2', 'description': 'd'}, "
    "{'email': 'gone@p2.iam.gserviceaccount.com', 'uniqueId': '202', 'oauth2ClientId': '202', "
    "'projectId': 'p2', 'disabled': true}]",
    "{'etag': 'x', 'bindings': [{'role': 'roles/editor', 'members': "
    "['serviceAccount:b@p2.iam.gserviceaccount.com', "
    "'serviceAccount:off@p1.iam.gserviceaccount.com', "
    "'serviceAccount:333-compute@developer.gserviceaccount.com', "
    "'serviceAccount:ext@outside.iam.gserviceaccount.com']}]}",
    "[{'name': 'projects/p2/serviceAccounts/gone@p2.iam.gserviceaccount.com/keys/k2', "
    "'keyType': 'USER_MANAGED', 'validAfterTime': '2026-09-01T00:00:00Z'}]",
    /* p3: the default compute SA listed under the project id (its email names the number),
     * its CAI policy by uniqueId granting p1's SA and a pool */
    "[{'email': '333-compute@developer.gserviceaccount.com', 'uniqueId': '301', "
    "'oauth2ClientId': '301', 'projectId': 'p3', 'disabled': true}, "
    "{'email': 'c@p3.iam.gserviceaccount.com', 'uniqueId': '302', 'oauth2ClientId': '302', "
    "'projectId': 'p3'}]",
    "[{'name': '//iam.googleapis.com/projects/p3/serviceAccounts/301', 'asset_type': "
    "'iam.googleapis.com/ServiceAccount', 'iam_policy': {'bindings': [{'role': "
    "'roles/iam.serviceAccountTokenCreator', 'members': "
    "['serviceAccount:a@p1.iam.gserviceaccount.com']}, {'role': "
    "'roles/iam.workloadIdentityUser', 'members': ['principalSet://iam.googleapis.com/"
    "projects/333/locations/global/workloadIdentityPools/ci/attribute.repository/a/b']}]}}]",
    "[{'activityType': 'serviceAccountLastAuthentication', 'fullResourceName': "
    "'//iam.googleapis.com/projects/p3/serviceAccounts/c@p3.iam.gserviceaccount.com', "
    "'activity': {'lastAuthenticatedTime': '2025-01-01T00:00:00Z'}}, "
    "{'activityType': 'serviceAccountLastAuthentication', 'fullResourceName': "
    "'//iam.googleapis.com/projects/p2/serviceAccounts/gone@p2.iam.gserviceaccount.com', "
    "'activity': {'lastAuthenticatedTime': '2025-01-01T00:00:00Z'}}]",
    "[{'name': 'projects/333/locations/global/insightTypes/google.iam.serviceAccount.Insight/"
    "insights/x', 'insightSubtype': 'SERVICE_ACCOUNT_USAGE', 'content': {'email': "
    "'c@p3.iam.gserviceaccount.com'}, 'stateInfo': {'state': 'ACTIVE'}}]",
    /* the custom role, defined after its use (first in the reversed order) */
    "[{'name': 'projects/p1/roles/deployer', 'includedPermissions': "
    "['resourcemanager.projects.setIamPolicy']}]",
    /* the same custom grant again from another file (the first file's source wins) */
    "{'etag': 'y', 'bindings': [{'role': 'projects/p1/roles/deployer', 'members': "
    "['serviceAccount:b@p2.iam.gserviceaccount.com', "
    "'serviceAccount:a@p1.iam.gserviceaccount.com']}]}",
};
#define N_SPILL (sizeof(SPILL_INPUTS) / sizeof(SPILL_INPUTS[0]))

/* The JSON report of the inputs in order (indexes into SPILL_INPUTS, each its own file), with
 * the records put aside past spill_after (SIZE_MAX: the run's default); the records in memory
 * after the last input and the bytes put aside in *ret_held / *ret_spilled. new; free() */
static char *spill_run(const size_t *order, size_t spill_after, size_t *ret_held,
                       uint64_t *ret_spilled)
{
    ferry_audit *a = run_new();
    char err[512] = "", name[32], *out = NULL;

    if (spill_after != SIZE_MAX)
        a->spill_after = spill_after;
    cr_assert_eq(ferry_audit_gcp_set_resource(a, "projects/p2"), 0);
    for (size_t i = 0; i < N_SPILL; i++) {
        size_t k = order[i];
        /* get-iam-policy outputs name their project: p1's first, p2's second, p1's again */
        cr_assert_eq(ferry_audit_gcp_set_resource(a, k == 3 ? "projects/p2" : "projects/p1"), 0);
        snprintf(name, sizeof(name), "in%zu.json", k);
        cr_assert_eq(add(a, name, SPILL_INPUTS[k], err, sizeof(err)), 0, "%s: %s", name, err);
    }
    *ret_held = audit_gcp_records(a, ret_spilled);
    finish(a);
    cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_JSON, &out, NULL), 0);
    ferry_audit_free(a);
    return out;
}

Test(audit_gcp, records_put_aside_change_nothing)
{
    static const size_t orders[][N_SPILL] = {
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
        {10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0},
        {9, 3, 6, 0, 8, 2, 5, 1, 10, 4, 7},
        {7, 1, 4, 10, 2, 8, 0, 6, 3, 9, 5},
    };
    static const char *const expect[] = {
        "GCP-OP-002", "GCP-SH-006",  "GCP-SH-008",
        "GCP-OP-008", "GCP-SH-005",  "GCP-OP-003",
        "off@p1.iam", "gone@p2.iam", "333-compute@developer",
        "in10.json",
    };
    for (size_t o = 0; o < sizeof(orders) / sizeof(orders[0]); o++) {
        size_t held_all, held_default, held0, held3;
        uint64_t spilled_all, spilled_default, spilled0, spilled3;
        /* everything in memory, the run's default (AUDIT_SPILL_AFTER), 0 and 3 */
        char *ref = spill_run(orders[o], (size_t)1 << 40, &held_all, &spilled_all);
        char *rd = spill_run(orders[o], SIZE_MAX, &held_default, &spilled_default);
        char *r0 = spill_run(orders[o], 0, &held0, &spilled0);
        char *r3 = spill_run(orders[o], 3, &held3, &spilled3);

        for (size_t i = 0; o == 0 && i < sizeof(expect) / sizeof(expect[0]); i++)
            cr_assert(strstr(ref, expect[i]), "the run covers %s: %s", expect[i], ref);
        cr_assert_str_eq(rd, ref, "order %zu, default spill_after", o);
        cr_assert_str_eq(r0, ref, "order %zu, spill_after 0", o);
        cr_assert_str_eq(r3, ref, "order %zu, spill_after 3", o);
        /* put aside, and only about the last project's records in memory */
        cr_assert_eq(spilled_all, 0);
        cr_assert_geq(held_all, 26, "held %zu", held_all);
        cr_assert_gt(spilled0, 0);
        cr_assert_gt(spilled3, 0);
        /* p1's scope, the last one touched in most orders, holds 9 records (2 SAs, 2 uniqueIds,
         * 4 custom-role and 1 SH-008 candidates); the state takes up to twice what stayed at
         * the last eviction before the next one */
        cr_assert_leq(held0, 11, "order %zu: %zu records in memory", o, held0);
        cr_assert_leq(held3, 11, "order %zu: %zu records in memory", o, held3);
        free(ref);
        free(rd);
        free(r0);
        free(r3);
    }
}

/* A uniqueId given to an SA of one project, then to one of another: a CAI policy by that uid
 * is on the later SA however the records were put aside in between (with spill_after 2, pa's
 * records go aside for pc's, and are taken back beside pb's by the policy: the uid's entry
 * from pa must not replace pb's). */
Test(audit_gcp, unique_id_given_again_in_another_project)
{
    static const char *const inputs[] = {
        "[{'email': 'x@pa.iam.gserviceaccount.com', 'uniqueId': '555', 'oauth2ClientId': '1', "
        "'projectId': 'pa', 'description': 'd'}, "
        "{'email': 'x2@pa.iam.gserviceaccount.com', 'uniqueId': '556', 'oauth2ClientId': '3', "
        "'projectId': 'pa', 'description': 'd'}, "
        "{'email': 'x3@pa.iam.gserviceaccount.com', 'uniqueId': '557', 'oauth2ClientId': '4', "
        "'projectId': 'pa', 'description': 'd'}]",
        "[{'email': 'c1@pc.iam.gserviceaccount.com', 'uniqueId': '31', 'oauth2ClientId': '31', "
        "'description': 'd'}, {'email': 'c2@pc.iam.gserviceaccount.com', 'uniqueId': '32', "
        "'oauth2ClientId': '32', 'description': 'd'}, {'email': 'c3@pc.iam.gserviceaccount.com', "
        "'uniqueId': '33', 'oauth2ClientId': '33', 'description': 'd'}, "
        "{'email': 'c4@pc.iam.gserviceaccount.com', 'uniqueId': '34', 'oauth2ClientId': '34', "
        "'description': 'd'}]",
        "[{'email': 'y@pb.iam.gserviceaccount.com', 'uniqueId': '555', 'oauth2ClientId': '2', "
        "'projectId': 'pb', 'description': 'd'}]",
        "{'etag': 'x', 'bindings': [{'role': 'roles/viewer', 'members': "
        "['serviceAccount:x@pa.iam.gserviceaccount.com', "
        "'serviceAccount:y@pb.iam.gserviceaccount.com', "
        "'serviceAccount:x@pa.iam.gserviceaccount.com']}]}",
        "[{'name': '//iam.googleapis.com/projects/pb/serviceAccounts/555', 'asset_type': "
        "'iam.googleapis.com/ServiceAccount', 'iam_policy': {'bindings': [{'role': "
        "'roles/iam.serviceAccountTokenCreator', 'members': "
        "['serviceAccount:ci@tools.iam.gserviceaccount.com']}]}}]",
    };
    char *ref = NULL;

    for (size_t after = 0; after <= 8; after++) {
        ferry_audit *a = run_new();
        char err[512] = "", *out = NULL;
        a->spill_after = after == 8 ? (size_t)1 << 40 : after;
        cr_assert_eq(ferry_audit_gcp_set_resource(a, "projects/pa"), 0);
        for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++)
            cr_assert_eq(add(a, "in.json", inputs[i], err, sizeof(err)), 0, "%s", err);
        finish(a);
        one(a, "GCP-OP-008", "y@pb.iam");
        cr_assert_eq(count(a, "GCP-OP-008", "x@pa.iam", NULL), 0);
        cr_assert_eq(ferry_audit_render(a, FERRY_AUDIT_OUT_JSON, &out, NULL), 0);
        if (ref)
            cr_assert_str_eq(out, ref, "spill_after %zu", after);
        free(ref);
        ref = out;
        ferry_audit_free(a);
    }
    free(ref);
}

/* A temporary file that cannot be made fails the run, naming its directory. */
Test(audit_gcp, temporary_file_error_names_its_directory)
{
    ferry_audit *a = run_new();
    char err[512] = "";
    int r = 0;

    cr_assert_eq(setenv("TMPDIR", "/nonexistent-ferry-audit-dir", 1), 0);
    a->spill_after = 0;
    cr_assert_eq(ferry_audit_gcp_set_resource(a, "projects/p1"), 0);
    for (size_t i = 0; r == 0 && i < N_SPILL; i++)
        r = add(a, "in.json", SPILL_INPUTS[i], err, sizeof(err));
    cr_assert_lt(r, 0);
    cr_assert(strstr(err, "temporary file of audit records in /nonexistent-ferry-audit-dir"), "%s",
              err);
    ferry_audit_free(a);
}
